//! The server span of each request when traces are exported: named by method and route
//! template, continuing the caller's W3C `traceparent`, and naming its trace in every log
//! line inside it.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use tracing::field::Empty;

use stockflow_telemetry::traces;

/// Wraps the request in a server span; a pass-through when traces are off.
pub(super) async fn server_span(req: Request, next: Next) -> Response {
    if !traces::enabled() {
        return next.run(req).await;
    }
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let method = req.method().as_str().to_string();
    let name = match &route {
        Some(route) => format!("{method} {route}"),
        None => method.clone(),
    };
    let span = tracing::info_span!(
        "http request",
        otel.name = %name,
        otel.kind = "server",
        http.request.method = %method,
        http.route = route.as_deref().unwrap_or("unmatched"),
        http.response.status_code = Empty,
        otel.status_code = Empty,
        trace_id = Empty,
    );
    let headers = req.headers();
    traces::continue_from(&span, |field| {
        headers.get(field).and_then(|v| v.to_str().ok())
    });
    traces::record_trace_id(&span);
    let response = next.run(req).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    // Server spans are errors on 5xx only: a 409 is the API doing its job.
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response
}
