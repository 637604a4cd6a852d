//! One step of a partition's projector: fetch from the expected offset, keep what
//! continues exactly from it, decode, apply with the offset in one write, and send what can
//! never apply to the dead-letter queue.

use std::time::Duration;

use stockflow_bus::{EventLog, LogRecord};
use stockflow_domain::BusEvent;
use stockflow_storage::now_ms;
use stockflow_storage::ports::{Batch, DeadLetter, ReadStore};
use tracing::field::Empty;

use super::ProjectorConfig;
use crate::events::structured;
use crate::workers::{WorkerError, backoff};
use stockflow_telemetry::traces;

/// What one step of a partition's projector did.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing new at the expected offset.
    Idle,
    /// Processed up to (excluding) this offset.
    Advanced(u64),
    /// The record at the expected offset is missing although later ones exist (a client
    /// that skipped it, or a log that lost it): re-read; if it never comes, the partition
    /// is stalled and `stockflow_projection_gap_seconds` says for how long.
    Gap,
}

/// Keeps the records that continue exactly from `next`; reports whether offsets were
/// missing.
pub(super) fn contiguous(records: Vec<LogRecord>, next: u64) -> (Vec<LogRecord>, bool) {
    let mut out = Vec::with_capacity(records.len());
    let mut expected = next;
    let mut gap = false;
    for record in records {
        if record.offset < expected {
            continue; // Redelivered; already handled.
        }
        if record.offset > expected {
            gap = true;
            break;
        }
        expected += 1;
        out.push(record);
    }
    (out, gap)
}

/// The first offset `log` still holds in `partition` (0 if the log cannot say now: a
/// fetch from there finds the first record, or reports the gap).
pub(super) async fn first_held(log: &dyn EventLog, partition: u32) -> u64 {
    match log.start_offset(partition).await {
        Ok(offset) => offset,
        Err(e) => {
            tracing::warn!(partition, error = %e, "cannot read the log's start offset; reading from 0");
            0
        }
    }
}

/// Fetches from `next` (waiting up to `wait` for a record) and projects what continues
/// from it.
pub async fn step(
    log: &dyn EventLog,
    read: &dyn ReadStore,
    config: &ProjectorConfig,
    partition: u32,
    next: u64,
    wait: Duration,
) -> Result<Step, WorkerError> {
    let fetched = log.fetch(partition, next, config.max_bytes, wait).await?;
    if fetched.is_empty() {
        return Ok(Step::Idle);
    }
    let (records, gap) = contiguous(fetched, next);
    if gap {
        metrics::counter!("stockflow_consumer_offset_gaps_total").increment(1);
        tracing::warn!(
            partition,
            expected = next + records.len() as u64,
            "offset gap in fetch; re-reading from the first missing offset"
        );
    }
    if records.is_empty() {
        return Ok(if gap { Step::Gap } else { Step::Idle });
    }
    let last = records[records.len() - 1].offset;
    let mut decoded: Vec<Result<BusEvent, String>> = records
        .iter()
        .map(|r| structured::event_of(&r.value).map_err(|e| e.to_string()))
        .collect();
    // Live until the step returns: each ends once its event is projected (or dead-lettered).
    let spans = traces::enabled().then(|| projection_spans(&records, &decoded, config, partition));
    let span_of = |index: usize| spans.as_ref().and_then(|s| s[index].as_ref());
    // Fast path: the whole batch in one transaction.
    if decoded.iter().all(Result::is_ok) {
        let events: Vec<BusEvent> = decoded.into_iter().filter_map(Result::ok).collect();
        let batch = Batch {
            consumer: &config.consumer,
            replica: &config.replica,
            partition,
            first_offset: records[0].offset,
            events: &events,
        };
        if read.project(batch).await.is_ok() {
            observe(config, &events);
            return Ok(Step::Advanced(last + 1));
        }
        decoded = events.into_iter().map(Ok).collect();
    }
    // Slow path: record by record, so one poison record cannot stall the partition.
    for (index, (record, event)) in records.iter().zip(decoded).enumerate() {
        let next_offset = record.offset + 1;
        let error = match event {
            Err(e) => format!("cannot decode event: {e}"),
            Ok(event) => {
                let mut last_error = String::new();
                let mut applied = false;
                for attempt in 1..=config.max_attempts {
                    let batch = Batch {
                        consumer: &config.consumer,
                        replica: &config.replica,
                        partition,
                        first_offset: record.offset,
                        events: std::slice::from_ref(&event),
                    };
                    match read.project(batch).await {
                        Ok(()) => {
                            applied = true;
                            break;
                        }
                        // The store is failing (full disk, I/O error, an overloaded or
                        // failing cluster): not this record's fault, so retry the whole
                        // step later instead of dead-lettering good events. Only data
                        // that can never apply goes to the dead-letter queue.
                        Err(e) if !e.rejects_the_input() => return Err(e.into()),
                        Err(e) => {
                            last_error = e.to_string();
                            if attempt < config.max_attempts {
                                tokio::time::sleep(backoff(attempt)).await;
                            }
                        }
                    }
                }
                if applied {
                    observe(config, std::slice::from_ref(&event));
                    continue;
                }
                last_error
            }
        };
        tracing::error!(partition, offset = record.offset, %error, "sending record to the dead-letter queue");
        if let Some(span) = span_of(index) {
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_description", error.as_str());
        }
        read.dead_letter(
            DeadLetter {
                id: 0,
                consumer: config.consumer.clone(),
                partition,
                offset: record.offset,
                key: record.key.clone(),
                payload: String::from_utf8_lossy(&record.value).into_owned(),
                error,
                attempts: config.max_attempts,
                failed_at_ms: now_ms(),
            },
            next_offset,
        )
        .await?;
        metrics::counter!("stockflow_dead_letters_total").increment(1);
    }
    Ok(Step::Advanced(last + 1))
}

/// One span per traced event, each a child of the store write that caused it (the
/// `traceparent` the event carries): the trace shows when, and by which replica (the
/// process's `service.instance.id`), the read models caught up.
fn projection_spans(
    records: &[LogRecord],
    decoded: &[Result<BusEvent, String>],
    config: &ProjectorConfig,
    partition: u32,
) -> Vec<Option<tracing::Span>> {
    records
        .iter()
        .zip(decoded)
        .map(|(record, event)| {
            let traceparent = event.as_ref().ok()?.trace_context()?;
            let span = tracing::info_span!(
                parent: None,
                "project event",
                otel.kind = "consumer",
                consumer = %config.consumer,
                partition,
                offset = record.offset,
                otel.status_code = Empty,
                otel.status_description = Empty,
            );
            traces::continue_traceparent(&span, traceparent);
            Some(span)
        })
        .collect()
}

/// Counts what a committed write projected, and hands it to the edge purge.
fn observe(config: &ProjectorConfig, events: &[BusEvent]) {
    if let Some(queue) = &config.edge_purge {
        queue.applied(events);
    }
    let now = now_ms();
    for event in events {
        metrics::histogram!("stockflow_projection_lag_seconds")
            .record((now - event.occurred_at_ms()).max(0) as f64 / 1000.0);
    }
    metrics::counter!("stockflow_events_projected_total").increment(events.len() as u64);
}
