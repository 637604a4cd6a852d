//! Webhook delivery: the `webhooks` role's worker. One task per event-log partition this
//! replica holds a lease on (group `webhooks:<log>`, like the projectors), so two replicas
//! never deliver the same partition; within a partition every subscription advances
//! through the log from its own cursor ([`advance`]), and replays of dead letters asked
//! for through the API are delivered here too — never in a request's path.
//!
//! Delivery is at least once: the cursor moves after the receiver's 2xx, so a crash in
//! between redelivers with the same `webhook-id`, on which receivers deduplicate.

mod advance;
pub mod deliver;

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use stockflow_bus::EventLog;
use stockflow_domain::webhook::{RetryPolicy, Secret, SubscriptionState};
use stockflow_storage::ports::WebhookStore;
use tokio_util::sync::CancellationToken;

use super::backoff;
use super::leases::{Owned, run_owned_partitions};
use advance::{Target, advance};

/// Webhook worker settings.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Retries, dead letters and the disable rule.
    pub retry: RetryPolicy,
    /// The most one delivery may take.
    pub request_timeout: Duration,
    /// Pause between rounds of a partition with nothing to do.
    pub idle_poll: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(10),
            idle_poll: Duration::from_millis(200),
        }
    }
}

/// The lease group of the webhook workers of `log`.
pub fn lease_group(log: &dyn EventLog) -> String {
    format!("webhooks:{}", log.identity())
}

/// What every round needs.
pub(crate) struct Context {
    log: Arc<dyn EventLog>,
    /// The log's identity: cursors are kept per log, so a new topic starts afresh.
    log_id: String,
    store: Arc<dyn WebhookStore>,
    client: reqwest::Client,
    retry: RetryPolicy,
    /// The clock, Unix ms (the domain reads none).
    now: fn() -> i64,
    /// Randomness for the retry jitter.
    random: fn() -> u64,
}

fn random_u64() -> u64 {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    let mut bytes = [0u8; 8];
    // A failed draw only makes the jitter deterministic (the delay's floor still holds).
    let _ = SystemRandom::new().fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

/// Runs one delivery task per partition in `owned` until `shutdown`.
pub async fn run(
    log: Arc<dyn EventLog>,
    store: Arc<dyn WebhookStore>,
    config: WebhookConfig,
    owned: Owned,
    shutdown: CancellationToken,
) {
    let client = match deliver::client(config.request_timeout) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client; webhooks are not delivered");
            return;
        }
    };
    let ctx = Arc::new(Context {
        log: log.clone(),
        log_id: log.identity(),
        store,
        client,
        retry: config.retry,
        now: stockflow_storage::now_ms,
        random: random_u64,
    });
    let partitions = log.partitions();
    run_owned_partitions(
        owned,
        partitions,
        &shutdown,
        "delivering webhooks of",
        |partition, revoked| {
            tokio::spawn(run_partition(
                ctx.clone(),
                config.idle_poll,
                partition,
                shutdown.clone(),
                revoked,
            ))
        },
    )
    .await;
    tracing::info!("webhook delivery stopped");
}

/// Delivers one partition until `shutdown` or until its lease is `revoked`.
async fn run_partition(
    ctx: Arc<Context>,
    idle_poll: Duration,
    partition: u32,
    shutdown: CancellationToken,
    revoked: CancellationToken,
) {
    tracing::info!(partition, "delivering webhooks of a partition");
    let mut failures = 0u32;
    loop {
        if shutdown.is_cancelled() || revoked.is_cancelled() {
            return;
        }
        let pause = match round(&ctx, partition).await {
            Ok(true) => {
                failures = 0;
                continue;
            }
            Ok(false) => {
                failures = 0;
                idle_poll
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(partition, error = %e, "webhook round failed; retrying");
                backoff(failures).max(idle_poll)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.cancelled() => return,
            _ = revoked.cancelled() => return,
        }
    }
}

/// One round over every enabled subscription (concurrently: a slow receiver delays only
/// its own subscription's round), then the replays asked for. True when anything moved.
async fn round(ctx: &Context, partition: u32) -> Result<bool, super::WorkerError> {
    let targets: Vec<Target> = ctx
        .store
        .subscriptions()
        .await?
        .into_iter()
        .filter(|s| s.state == SubscriptionState::Enabled)
        .filter_map(Target::of)
        .collect();
    let mut moved = false;
    for outcome in join_all(targets.iter().map(|t| advance(ctx, t, partition))).await {
        moved |= outcome?;
    }
    moved |= replay(ctx, partition, &targets).await?;
    Ok(moved)
}

/// Delivers the dead letters of `partition` whose replay was asked for, once each: a
/// letter that fails again stays a dead letter with its new error.
async fn replay(
    ctx: &Context,
    partition: u32,
    targets: &[Target],
) -> Result<bool, super::WorkerError> {
    let letters = ctx.store.replays(partition, 32).await?;
    let mut moved = false;
    for letter in letters {
        // Only enabled subscriptions deliver; a disabled one keeps its replay queued.
        let Some(target) = targets
            .iter()
            .find(|t| t.stored.id == letter.subscription_id)
        else {
            continue;
        };
        let secret: &Secret = &target.secret;
        let msg_id =
            stockflow_domain::webhook::webhook_id(&letter.subscription_id, &letter.event_id);
        let now = (ctx.now)();
        let outcome = deliver::post(
            &ctx.client,
            &target.stored.url,
            secret,
            &msg_id,
            now,
            &letter.body,
        )
        .await;
        let label = if outcome.is_ok() {
            "replayed"
        } else {
            "replay_failed"
        };
        metrics::counter!("stockflow_webhook_deliveries_total", "outcome" => label).increment(1);
        ctx.store.replayed(letter.id, outcome, now).await?;
        moved = true;
    }
    Ok(moved)
}
