//! CloudEvents 1.0 on the bus in the Kafka protocol binding's binary content mode: the
//! record value stays the event's JSON (what our projectors read), and the context
//! attributes travel as `ce_*` record headers beside it, with `content-type` for
//! `datacontenttype`. The attributes themselves are the domain's
//! ([`stockflow_domain::cloudevent`]); this module only spells them as headers.
//!
//! The embedded log stores them beside each record as Kafka does. Where a bus keeps no
//! headers (Fluvio 0.50) they are dropped, and the payload still carries the id, type, key
//! and time.

use std::time::{Duration, UNIX_EPOCH};

use stockflow_domain::BusEvent;
use stockflow_domain::cloudevent::{DATA_CONTENT_TYPE, SPEC_VERSION};

/// `specversion`.
pub const SPECVERSION: &str = "ce_specversion";
/// `id`.
pub const ID: &str = "ce_id";
/// `source`.
pub const SOURCE: &str = "ce_source";
/// `type`.
pub const TYPE: &str = "ce_type";
/// `subject`.
pub const SUBJECT: &str = "ce_subject";
/// `time`.
pub const TIME: &str = "ce_time";
/// `datacontenttype`: the binding maps it to the plain `content-type` header.
pub const CONTENT_TYPE: &str = "content-type";
/// The distributed tracing extension's `traceparent`.
pub const CE_TRACEPARENT: &str = "ce_traceparent";
/// The plain W3C header OpenTelemetry's Kafka instrumentation reads.
pub const TRACEPARENT: &str = "traceparent";

/// The headers every event carries, in the order they are written.
pub const REQUIRED: [&str; 7] = [SPECVERSION, ID, SOURCE, TYPE, SUBJECT, TIME, CONTENT_TYPE];

/// The record headers of `event`: its CloudEvents attributes and, when a traced request
/// caused it, its trace context (under both names).
pub fn of(event: &BusEvent) -> Vec<(String, String)> {
    let ce = event.cloud_event();
    let mut headers = vec![
        (SPECVERSION.to_string(), SPEC_VERSION.to_string()),
        (ID.to_string(), ce.id.to_string()),
        (SOURCE.to_string(), ce.source),
        (TYPE.to_string(), ce.event_type.as_str().to_string()),
        (SUBJECT.to_string(), ce.subject),
        (TIME.to_string(), rfc3339(ce.time_ms)),
        (CONTENT_TYPE.to_string(), DATA_CONTENT_TYPE.to_string()),
    ];
    if let Some(traceparent) = event.trace_context() {
        headers.push((CE_TRACEPARENT.to_string(), traceparent.to_string()));
        headers.push((TRACEPARENT.to_string(), traceparent.to_string()));
    }
    headers
}

/// RFC 3339 in UTC with milliseconds, the precision events are decided at. A time before
/// the epoch (never written by us) is shown as the epoch rather than refused: the header
/// is informative, the payload keeps the exact value.
pub(crate) fn rfc3339(ms: i64) -> String {
    let since_epoch = Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(UNIX_EPOCH + since_epoch).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(trace: Option<&str>) -> BusEvent {
        let json = serde_json::json!({
            "stream": "stock", "event_id": "SKU-1/dc/2", "type": "reservation_confirmed",
            "region": "north", "sku": "SKU-1", "location": "dc", "version": 2,
            "on_hand": 3, "reserved": 0, "reservation_id": "order-1", "reason": null,
            "reference": null, "idempotency_key": null, "occurred_at_ms": 1_764_000_000_123_i64,
            "trace_context": trace,
        });
        serde_json::from_value(json).expect("a stock event")
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn every_attribute_is_a_header() {
        let headers = of(&event(None));
        let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, REQUIRED, "no trace headers without a trace");
        assert_eq!(header(&headers, SPECVERSION), Some("1.0"));
        assert_eq!(header(&headers, ID), Some("SKU-1/dc/2"));
        assert_eq!(header(&headers, SOURCE), Some("/stockflow/regions/north"));
        assert_eq!(
            header(&headers, TYPE),
            Some("dev.stockflow.reservation.confirmed.v1")
        );
        assert_eq!(header(&headers, SUBJECT), Some("SKU-1/dc"));
        assert_eq!(header(&headers, TIME), Some("2025-11-24T16:00:00.123Z"));
        assert_eq!(header(&headers, CONTENT_TYPE), Some("application/json"));
    }

    #[test]
    fn the_trace_context_travels_under_both_names() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let headers = of(&event(Some(tp)));
        assert_eq!(header(&headers, CE_TRACEPARENT), Some(tp));
        assert_eq!(header(&headers, TRACEPARENT), Some(tp));
    }
}
