//! OpenTelemetry traces: OTLP export and the W3C trace context a command's events carry.
//!
//! One trace follows a command across processes: the HTTP request's span (continuing the
//! caller's `traceparent`), its store write, and — through the `traceparent` stored in
//! each event, so in the outbox and on every bus — the publish and the projection of
//! those events, as children of the write. Export is configured the standard way
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, OTLP/HTTP
//! protobuf; `OTEL_SERVICE_NAME`; `OTEL_TRACES_SAMPLER`); without an endpoint no span is
//! made at all and the hot path pays one relaxed atomic load ([`enabled`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry::{Context, KeyValue, global};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// True when spans are exported: callers skip building spans (and decoding the trace
/// context of events) otherwise.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The exporting pipeline; flushes what is buffered when shut down.
#[derive(Debug, Default)]
pub struct Traces {
    provider: Option<SdkTracerProvider>,
}

impl Traces {
    /// Sends the spans still buffered and stops the exporter (blocking; call it outside
    /// the async runtime, as the process exits).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            ENABLED.store(false, Ordering::Relaxed);
            if let Err(e) = provider.force_flush() {
                tracing::warn!(error = %e, "could not send the last spans");
            }
            let _ = provider.shutdown();
        }
    }
}

/// Whether the environment asks for OTLP export.
fn export_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|var| std::env::var(var).is_ok_and(|v| !v.trim().is_empty()))
        && !std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Builds the OTLP pipeline when the environment configures one: the tracer for the
/// `tracing` layer, and the handle that flushes it. `default_service` names the process
/// (`stockflow-command-api`, ...) unless `OTEL_SERVICE_NAME` or
/// `OTEL_RESOURCE_ATTRIBUTES` does. Must run before the async runtime starts (the
/// blocking HTTP client refuses to be built inside it).
pub fn pipeline(
    default_service: &str,
) -> Result<Option<(opentelemetry_sdk::trace::Tracer, Traces)>, String> {
    // The propagator also serves extraction when export is off (a no-op then).
    global::set_text_map_propagator(TraceContextPropagator::new());
    if !export_configured() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| format!("cannot set up OTLP export: {e}"))?;
    let named_by_env = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let mut resource = Resource::builder();
    if !named_by_env {
        resource = resource.with_service_name(default_service.to_string());
    }
    // The pod (or host) name tells which replica published or projected an event.
    if let Ok(host) = std::env::var("HOSTNAME") {
        resource = resource.with_attribute(KeyValue::new("service.instance.id", host));
    }
    let provider = SdkTracerProvider::builder()
        .with_resource(resource.build())
        .with_batch_exporter(exporter)
        .build();
    let tracer = provider.tracer("stockflow");
    global::set_tracer_provider(provider.clone());
    ENABLED.store(true, Ordering::Relaxed);
    Ok(Some((
        tracer,
        Traces {
            provider: Some(provider),
        },
    )))
}

/// Makes `span` a child of the W3C `traceparent` (with `tracestate`, if any) found by
/// `get`; a missing or malformed one leaves the span a root. Call it before the span is
/// entered.
pub fn continue_from<'a>(span: &tracing::Span, get: impl Fn(&str) -> Option<&'a str>) {
    let mut carrier = HashMap::new();
    for field in ["traceparent", "tracestate"] {
        if let Some(value) = get(field) {
            carrier.insert(field.to_string(), value.to_string());
        }
    }
    if carrier.is_empty() {
        return;
    }
    let parent: Context = global::get_text_map_propagator(|p| p.extract(&carrier));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// Makes `span` a child of a stored `traceparent`.
pub fn continue_traceparent(span: &tracing::Span, traceparent: &str) {
    continue_from(span, |field| {
        (field == "traceparent").then_some(traceparent)
    });
}

/// The `traceparent` naming `span`, to store with what it causes; `None` when the span
/// is not exported.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    global::get_text_map_propagator(|p| p.inject_context(&context, &mut carrier));
    carrier.remove("traceparent")
}

/// Records `span`'s trace id in its `trace_id` field, so every log line inside it names
/// the trace.
pub fn record_trace_id(span: &tracing::Span) {
    let id = span.context().span().span_context().trace_id();
    if id != TraceId::INVALID {
        span.record("trace_id", tracing::field::display(id));
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    const CALLER: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    /// Runs `f` under a subscriber with an OpenTelemetry layer that exports nowhere.
    fn traced<T>(f: impl FnOnce() -> T) -> T {
        global::set_text_map_propagator(TraceContextPropagator::new());
        let provider = SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), f)
    }

    #[test]
    fn a_span_continues_the_callers_trace_and_names_itself() {
        let stored = traced(|| {
            let span = tracing::info_span!("request", trace_id = tracing::field::Empty);
            continue_traceparent(&span, CALLER);
            record_trace_id(&span);
            traceparent_of(&span)
        })
        .expect("an exported span has a traceparent");
        let parts: Vec<&str> = stored.split('-').collect();
        assert_eq!(parts.len(), 4, "{stored}");
        assert_eq!(parts[1], "0af7651916cd43dd8448eb211c80319c", "same trace");
        assert_ne!(
            parts[2], "b7ad6b7169203331",
            "its own span id, not the caller's"
        );
    }

    #[test]
    fn a_malformed_traceparent_starts_a_new_trace() {
        let stored = traced(|| {
            let span = tracing::info_span!("request");
            continue_traceparent(&span, "00-not-a-trace-01");
            traceparent_of(&span)
        })
        .expect("a root span is still exported");
        assert!(!stored.contains("0af7651916cd43dd8448eb211c80319c"));
    }

    #[test]
    fn without_a_layer_there_is_nothing_to_store() {
        let span = tracing::info_span!("x");
        continue_traceparent(&span, CALLER);
        assert_eq!(traceparent_of(&span), None);
    }
}
