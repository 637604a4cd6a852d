//! The outbox publisher: moves committed outbox entries to the event log, at least once.
//!
//! Append first, mark second. A crash between the two re-publishes the batch on restart;
//! the duplicates carry the same event ids and versions, so projectors ignore them. Each
//! replica publishes only the outbox shards it holds leases on ([`super::leases`]).
//!
//! Each record carries its event's CloudEvents attributes as headers
//! ([`crate::events::headers`]); the value is the outbox payload, unchanged. On a bus that
//! keeps no headers (Fluvio) the value is the payload itself or, when asked for, the
//! structured CloudEvent around it ([`crate::events::structured`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use stockflow_bus::{EventLog, NewRecord};
use stockflow_domain::BusEvent;
use stockflow_storage::now_ms;
use stockflow_storage::ports::{Outbox, OutboxEntry};
use tokio_util::sync::CancellationToken;
use tracing::field::Empty;

use super::leases::Owned;
use super::{WorkerError, backoff};
use crate::events::{headers, structured};
use stockflow_telemetry::traces;

/// Publisher settings.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// Entries per append.
    pub batch: usize,
    /// Poll interval when nothing signals new entries.
    pub idle_poll: Duration,
    /// Pause after a short batch so the next append carries more entries.
    pub coalesce: Duration,
    /// On a bus whose records keep no headers, write each event as a structured
    /// CloudEvent instead of its bare JSON (`--fluvio-cloudevents structured`). Off unless
    /// asked for: a reader older than this build takes only the bare JSON.
    pub structured_events: bool,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        Self {
            batch: 1000,
            idle_poll: Duration::from_millis(200),
            coalesce: Duration::from_millis(2),
            structured_events: false,
        }
    }
}

/// Publishes the shards in `owned` until `shutdown`, then drains what is already
/// committed in them.
pub async fn run(
    outbox: Arc<dyn Outbox>,
    log: Arc<dyn EventLog>,
    config: PublisherConfig,
    mut owned: Owned,
    shutdown: CancellationToken,
) {
    let mut tick = outbox.subscribe();
    let mut failures = 0u32;
    loop {
        tick.borrow_and_update();
        let shards = owned.borrow_and_update().clone();
        match publish_batch(&*outbox, &*log, &shards, &config).await {
            Ok(0) => {
                failures = 0;
                if shutdown.is_cancelled() {
                    break;
                }
                tokio::select! {
                    _ = tick.changed() => {}
                    Ok(()) = owned.changed() => {}
                    _ = tokio::time::sleep(config.idle_poll) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
            Ok(n) => {
                failures = 0;
                // Under load, wait a moment so each append (one fsync) carries a batch.
                if n < config.batch / 4 && !config.coalesce.is_zero() {
                    tokio::time::sleep(config.coalesce).await;
                }
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, failures, "publishing failed; will retry");
                if shutdown.is_cancelled() && failures > 5 {
                    break;
                }
                tokio::time::sleep(backoff(failures)).await;
            }
        }
    }
    tracing::info!("publisher stopped");
}

/// Each entry's event, read back from its payload for the record headers. An entry that
/// does not decode (none is written so) is still published, without headers: the
/// projector, which reads the same payload, decides what becomes of it.
fn decode(entries: &[OutboxEntry]) -> Vec<Option<BusEvent>> {
    entries
        .iter()
        .map(|entry| {
            let event = serde_json::from_slice::<BusEvent>(&entry.payload);
            if let Err(e) = &event {
                tracing::warn!(
                    sku = %entry.key,
                    error = %e,
                    "an outbox entry is not an event; published without CloudEvents headers"
                );
            }
            event.ok()
        })
        .collect()
}

/// How events are written on this bus, for consumers that are not ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// The payload, with the CloudEvents attributes and the trace context OpenTelemetry's
    /// Kafka instrumentation reads as headers.
    Headers,
    /// The structured CloudEvent around the payload.
    Structured,
    /// The payload alone.
    Bare,
}

impl Form {
    /// The record of an entry with `payload`, whose event is `event` (none if it did not
    /// decode: then the payload goes as it is).
    fn record(self, key: String, payload: Vec<u8>, event: Option<&BusEvent>) -> NewRecord {
        match (self, event) {
            (Form::Headers, Some(event)) => {
                let mut record = NewRecord::new(key, payload);
                record.headers = headers::of(event);
                record
            }
            (Form::Structured, Some(event)) => match structured::encode(event, &payload) {
                Ok(value) => NewRecord::new(key, value),
                Err(e) => {
                    tracing::warn!(sku = %key, error = %e, "published without its CloudEvents envelope");
                    NewRecord::new(key, payload)
                }
            },
            _ => NewRecord::new(key, payload),
        }
    }
}

/// The `traceparent` stored in each entry's event (the store write that committed it).
fn causes(events: &[Option<BusEvent>]) -> Vec<Option<String>> {
    events
        .iter()
        .map(|event| event.as_ref()?.trace_context().map(str::to_string))
        .collect()
}

/// One span per traced entry, each a child of the store write that committed it, so the
/// trace shows when it reached the bus.
fn publish_spans(entries: &[OutboxEntry], causes: &[Option<String>]) -> Vec<Option<tracing::Span>> {
    entries
        .iter()
        .zip(causes)
        .map(|(entry, traceparent)| {
            let traceparent = traceparent.as_ref()?;
            let span = tracing::info_span!(
                parent: None,
                "publish event",
                otel.kind = "producer",
                sku = %entry.key,
                partition = Empty,
                offset = Empty,
            );
            traces::continue_traceparent(&span, traceparent);
            Some(span)
        })
        .collect()
}

/// Publishes one batch of the entries in `shards`; returns how many entries moved.
pub async fn publish_batch(
    outbox: &dyn Outbox,
    log: &dyn EventLog,
    shards: &BTreeSet<u32>,
    config: &PublisherConfig,
) -> Result<usize, WorkerError> {
    let batch = config.batch;
    if shards.is_empty() {
        return Ok(0);
    }
    let entries = outbox.pending_in(shards, batch).await?;
    if entries.is_empty() {
        metrics::gauge!("stockflow_outbox_backlog").set(0.0);
        metrics::gauge!("stockflow_outbox_oldest_age_seconds").set(0.0);
        return Ok(0);
    }
    // The oldest entry waiting in this publisher's shards: what a stuck bus makes grow.
    if let Some(oldest) = entries.iter().map(|e| e.created_at_ms).min() {
        metrics::gauge!("stockflow_outbox_oldest_age_seconds")
            .set((now_ms() - oldest).max(0) as f64 / 1000.0);
    }
    let count = entries.len();
    let form = if log.keeps_headers() {
        Form::Headers
    } else if config.structured_events {
        Form::Structured
    } else {
        Form::Bare
    };
    // Decoded only where something reads them: CloudEvents attributes, or tracing.
    let events = if form != Form::Bare || traces::enabled() {
        decode(&entries)
    } else {
        vec![None; count]
    };
    let causes = causes(&events);
    let spans = traces::enabled().then(|| publish_spans(&entries, &causes));
    let mut ids = Vec::with_capacity(count);
    let mut created_at_ms = Vec::with_capacity(count);
    // Payloads move into the append; only ids and commit times stay behind.
    let records = entries
        .into_iter()
        .zip(events)
        .map(|(e, event)| {
            ids.push(e.id);
            created_at_ms.push(e.created_at_ms);
            form.record(e.key, e.payload, event.as_ref())
        })
        .collect();
    let placed = log.append(records).await?;
    outbox.mark_published(&ids).await?;
    // The spans end here, once the entries are on the bus and off the outbox.
    for (span, (partition, offset)) in spans.iter().flatten().zip(placed) {
        if let Some(span) = span {
            span.record("partition", partition);
            span.record("offset", offset);
        }
    }
    let now = now_ms();
    for created in created_at_ms {
        metrics::histogram!("stockflow_publish_delay_seconds")
            .record((now - created).max(0) as f64 / 1000.0);
    }
    metrics::counter!("stockflow_events_published_total").increment(count as u64);
    // What this publisher saw: 0 once caught up, else at least a full batch still waiting.
    let backlog = if count < batch { 0 } else { count };
    metrics::gauge!("stockflow_outbox_backlog").set(backlog as f64);
    Ok(count)
}

#[cfg(test)]
mod tests;
