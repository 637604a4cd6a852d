//! Metrics set-up: the process-wide Prometheus recorder and its buckets. (Logs and traces
//! are set up by `stockflow-telemetry`.)

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets of the group sizes (commands per transaction or per coalesced batch), so their
/// percentiles aggregate across replicas (summaries would not).
const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("stockflow_write_batch_size".into()),
                        SIZE_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("stockflow_coalesced_group_size".into()),
                        SIZE_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("stockflow_projection_group_batches".into()),
                        SIZE_BUCKETS,
                    )
                });
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                Err(e) => {
                    tracing::warn!(error = %e, "histogram buckets rejected; using defaults");
                    PrometheusBuilder::new().build_recorder()
                }
            };
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            describe();
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .ok();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "stockflow_commands_total",
        "Commands by type and outcome (applied, replayed, or the refusal code)."
    );
    describe_histogram!(
        "stockflow_command_duration_seconds",
        Unit::Seconds,
        "Command latency, queueing and durable commit included."
    );
    describe_gauge!(
        "stockflow_outbox_backlog",
        "Outbox entries not yet published to the event log."
    );
    describe_histogram!(
        "stockflow_projection_lag_seconds",
        Unit::Seconds,
        "Time from a change's commit to its projection into the read models."
    );
    describe_histogram!(
        "stockflow_publish_delay_seconds",
        Unit::Seconds,
        "Time from a change's commit to its append to the event log."
    );
    describe_counter!(
        "stockflow_events_published_total",
        "Events appended to the event log."
    );
    describe_counter!(
        "stockflow_events_projected_total",
        "Events applied by projectors (duplicates included)."
    );
    describe_counter!(
        "stockflow_dead_letters_total",
        "Records sent to the dead-letter queue."
    );
    describe_counter!(
        "stockflow_consumer_offset_gaps_total",
        "Fetches that skipped offsets and were re-read."
    );
    describe_histogram!(
        "stockflow_write_batch_size",
        "Commands committed per write transaction (group commit)."
    );
    describe_histogram!(
        "stockflow_projection_group_batches",
        "Partitions' batches applied per read-model transaction (embedded group commit)."
    );
    describe_histogram!(
        "stockflow_write_batch_seconds",
        Unit::Seconds,
        "Duration of one group-commit transaction, fsync included."
    );
    describe_counter!(
        "stockflow_http_requests_total",
        "HTTP requests by method, route and status."
    );
    describe_histogram!(
        "stockflow_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency by route."
    );
    describe_counter!(
        "stockflow_reservations_expired_total",
        "Reservations expired by the expiry worker."
    );
    describe_gauge!(
        "stockflow_expiry_leader",
        "1 on the replica that expires reservations (the expiry lease holder), 0 on the others."
    );
}
