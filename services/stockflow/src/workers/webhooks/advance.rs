//! One round of one subscription in one partition: from its cursor, skip what it does not
//! want, deliver what it does in log order, and stop at the first failure — which holds
//! back the rest of the partition for this subscription until the event is delivered or
//! dead-lettered. That hold is what keeps one SKU's events in order: a SKU lives in one
//! partition.

use stockflow_domain::BusEvent;
use stockflow_domain::webhook::{
    AfterFailure, SUBSCRIPTION_DISABLED_TYPE, Secret, SubscriptionSpec, webhook_id,
};
use stockflow_storage::ports::{Cursor, Subscription, WebhookDeadLetter};

use super::{Context, deliver};
use crate::events::structured;
use crate::workers::WorkerError;

/// Most bytes of log read per subscription per round.
const FETCH_BYTES: usize = 256 * 1024;
/// Most deliveries per subscription per round, so one busy subscription does not keep a
/// partition's round (and its replays) waiting.
const MAX_PER_ROUND: usize = 100;

/// A subscription as the worker uses it: parsed once per round.
pub(super) struct Target {
    pub stored: Subscription,
    pub spec: SubscriptionSpec,
    pub secret: Secret,
}

impl Target {
    /// Parses a stored subscription; `None` (with a log line) when it no longer parses,
    /// e.g. a type a newer version wrote.
    pub fn of(stored: Subscription) -> Option<Self> {
        let spec = SubscriptionSpec::parse(&stored.url, &stored.types, stored.filter.clone());
        let secret = Secret::parse(&stored.secret);
        match (spec, secret) {
            (Ok(spec), Ok(secret)) => Some(Self {
                stored,
                spec,
                secret,
            }),
            (Err(e), _) => {
                tracing::warn!(subscription = %stored.id, error = %e, "skipping a subscription that does not parse");
                None
            }
            (_, Err(e)) => {
                tracing::warn!(subscription = %stored.id, error = %e, "skipping a subscription whose secret does not parse");
                None
            }
        }
    }
}

/// Runs one round; true when it did something (so the partition loops again at once).
pub(super) async fn advance(
    ctx: &Context,
    target: &Target,
    partition: u32,
) -> Result<bool, WorkerError> {
    let id = target.stored.id.as_str();
    let mut cursor = match ctx.store.cursor(id, &ctx.log_id, partition).await? {
        Some(c) => c,
        // New: read the partition from its first record held; records appended before the
        // subscription was created are skipped below by their time.
        None => Cursor {
            next_offset: ctx.log.start_offset(partition).await?,
            ..Cursor::default()
        },
    };
    if cursor.retry_at_ms > (ctx.now)() {
        return Ok(false);
    }
    let records = ctx
        .log
        .fetch(
            partition,
            cursor.next_offset,
            FETCH_BYTES,
            std::time::Duration::ZERO,
        )
        .await?;
    let mut moved = false;
    let mut delivered = 0usize;
    for record in records {
        if record.offset != cursor.next_offset {
            // Retention may have removed what the cursor points at; anything else is a
            // skipped offset (a client dropping records), re-read next round.
            if cursor.next_offset < ctx.log.start_offset(partition).await? {
                cursor.next_offset = record.offset;
            } else {
                tracing::debug!(
                    partition,
                    expected = cursor.next_offset,
                    got = record.offset,
                    "gap in the log; re-reading"
                );
                break;
            }
        }
        let next = record.offset + 1;
        let event = match structured::event_of(&record.value) {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(partition, offset = record.offset, error = %e, "skipping a record that is not an event");
                cursor = Cursor {
                    next_offset: next,
                    ..Cursor::default()
                };
                moved = true;
                continue;
            }
        };
        if record.timestamp_ms < target.stored.created_at_ms || !target.spec.wants(&event) {
            cursor = Cursor {
                next_offset: next,
                ..Cursor::default()
            };
            moved = true;
            continue;
        }
        if delivered >= MAX_PER_ROUND {
            break;
        }
        let body = deliver::body(&event);
        let msg_id = webhook_id(id, event.event_id());
        let now = (ctx.now)();
        match deliver::post(
            &ctx.client,
            &target.stored.url,
            &target.secret,
            &msg_id,
            now,
            &body,
        )
        .await
        {
            Ok(()) => {
                metrics::counter!("stockflow_webhook_deliveries_total", "outcome" => "delivered")
                    .increment(1);
                cursor = Cursor {
                    next_offset: next,
                    ..Cursor::default()
                };
                ctx.store
                    .save_cursor(id, &ctx.log_id, partition, &cursor, true)
                    .await?;
                moved = false;
                delivered += 1;
            }
            Err(error) => {
                metrics::counter!("stockflow_webhook_deliveries_total", "outcome" => "failed")
                    .increment(1);
                let attempts = cursor.attempts.saturating_add(1);
                let first = cursor.first_attempt_ms.unwrap_or(now);
                match ctx
                    .retry
                    .after_failure(first, now, attempts, (ctx.random)())
                {
                    AfterFailure::RetryAt(at) => {
                        tracing::debug!(subscription = id, partition, offset = record.offset, attempts, error = %error, "delivery failed; will retry");
                        cursor = Cursor {
                            next_offset: record.offset,
                            attempts,
                            first_attempt_ms: Some(first),
                            retry_at_ms: at,
                            last_error: Some(error),
                        };
                        ctx.store
                            .save_cursor(id, &ctx.log_id, partition, &cursor, false)
                            .await?;
                    }
                    AfterFailure::DeadLetter => {
                        dead_letter(
                            ctx,
                            target,
                            partition,
                            record.offset,
                            &event,
                            body,
                            attempts,
                            error,
                            now,
                        )
                        .await?;
                    }
                }
                return Ok(true);
            }
        }
    }
    if moved {
        ctx.store
            .save_cursor(id, &ctx.log_id, partition, &cursor, false)
            .await?;
    }
    Ok(moved || delivered > 0)
}

/// Gives up on the event at `offset`, moves past it, and disables the subscription when
/// the rule says so.
#[allow(clippy::too_many_arguments)]
async fn dead_letter(
    ctx: &Context,
    target: &Target,
    partition: u32,
    offset: u64,
    event: &BusEvent,
    body: String,
    attempts: u32,
    error: String,
    now: i64,
) -> Result<(), WorkerError> {
    let id = target.stored.id.as_str();
    let letter = WebhookDeadLetter {
        id: 0,
        subscription_id: id.to_string(),
        partition,
        offset,
        event_id: event.event_id().to_string(),
        event_type: event.event_type().as_str().to_string(),
        body,
        attempts,
        last_error: error.clone(),
        failed_at_ms: now,
        replay_requested: false,
    };
    let past = Cursor {
        next_offset: offset + 1,
        ..Cursor::default()
    };
    let count = ctx.store.dead_letter(&letter, &ctx.log_id, &past).await?;
    metrics::counter!("stockflow_webhook_dead_letters_total").increment(1);
    tracing::warn!(subscription = id, partition, offset, attempts, error = %error, "webhook delivery dead-lettered after its retry window");
    if ctx.retry.should_disable(count) {
        let reason = format!(
            "{count} consecutive deliveries failed for their whole retry window ({:?}); last error: {error}",
            ctx.retry.window
        );
        if ctx
            .store
            .disable(id, SUBSCRIPTION_DISABLED_TYPE, &reason, now)
            .await?
        {
            metrics::counter!("stockflow_webhook_subscriptions_disabled_total").increment(1);
            tracing::error!(subscription = id, url = %target.stored.url, %reason, "webhook subscription disabled");
        }
    }
    Ok(())
}
