//! One delivery: the body (the event as a CloudEvents 1.0 structured-mode JSON document),
//! the Standard Webhooks headers, and the POST. The body of an event is built once and
//! kept with a dead letter, so a replay sends exactly what the failed attempts sent.

use std::time::{Duration, Instant};

use serde_json::json;
use stockflow_domain::BusEvent;
use stockflow_domain::cloudevent::{DATA_CONTENT_TYPE, SPEC_VERSION};
use stockflow_domain::webhook::{Secret, sign};

/// The media type of a delivery: one CloudEvent in structured mode.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";
/// Most bytes of a receiver's answer quoted in a failure.
const ERROR_QUOTE: usize = 200;

/// The body delivered for `event`.
pub fn body(event: &BusEvent) -> String {
    let ce = event.cloud_event();
    json!({
        "specversion": SPEC_VERSION,
        "id": ce.id,
        "source": ce.source,
        "type": ce.event_type.as_str(),
        "subject": ce.subject,
        "time": crate::events::headers::rfc3339(ce.time_ms),
        "datacontenttype": DATA_CONTENT_TYPE,
        "data": event,
    })
    .to_string()
}

/// POSTs `body` to `url` signed with `secret` as message `msg_id` at `now_ms`. `Ok` on any
/// 2xx; otherwise why not, short enough to store.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    secret: &Secret,
    msg_id: &str,
    now_ms: i64,
    body: &str,
) -> Result<(), String> {
    let timestamp = now_ms.div_euclid(1000);
    let signature = sign(secret, msg_id, timestamp, body.as_bytes());
    let started = Instant::now();
    let sent = client
        .post(url)
        .header("content-type", CONTENT_TYPE)
        .header("webhook-id", msg_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body.to_string())
        .send()
        .await;
    metrics::histogram!("stockflow_webhook_delivery_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    match sent {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            let quoted: String = text.chars().take(ERROR_QUOTE).collect();
            Err(format!("HTTP {status}: {quoted}"))
        }
        // The error's chain says what failed (refused, timed out, TLS).
        Err(e) => Err(error_chain(&e)),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The client every delivery goes through: a per-request deadline, and no redirects (a
/// receiver that moved must be re-subscribed; following one would send signed events to
/// wherever a `Location` header points).
pub fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("stockflow-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
}
