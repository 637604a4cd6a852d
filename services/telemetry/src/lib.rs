//! Logs and OpenTelemetry traces, set up the same way by both binaries (`stockflow` and
//! the operator): `RUST_LOG`-filtered logs as text or JSON, and — where the standard
//! `OTEL_*` variables ask for it — spans exported over OTLP. [`traces`] holds the W3C
//! trace context helpers the platform uses to carry one trace across processes.

pub mod traces;

use tracing::Level;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

pub use traces::Traces;

/// Installs the tracing subscriber: `RUST_LOG` filters the logs (default `info`),
/// `--log-format json` for machines, compact text for people; where the environment
/// configures OTLP export ([`traces`]), stockflow's spans are exported whatever
/// `RUST_LOG` says. The returned handle flushes the exporter at exit.
pub fn init_tracing(json: bool, service: &str) -> Traces {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs: Box<dyn Layer<Registry> + Send + Sync> = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_filter(filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .compact()
            .with_filter(filter)
            .boxed()
    };
    let (spans, handle) = match traces::pipeline(service) {
        Ok(Some((tracer, handle))) => (Some(tracer), handle),
        Ok(None) => (None, Traces::default()),
        Err(e) => {
            eprintln!("warning: {e}; traces are not exported");
            (None, Traces::default())
        }
    };
    let spans = spans.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(filter_fn(|meta| {
                meta.target().starts_with("stockflow") && *meta.level() <= Level::INFO
            }))
    });
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init();
    handle
}
