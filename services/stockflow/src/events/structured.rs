//! CloudEvents 1.0 in structured content mode, for a bus whose records carry no headers
//! (Fluvio: its record format has a header count and no header data). The record value
//! is the JSON event format: the context attributes beside `data`, which is the event's
//! JSON exactly as the outbox holds it. Readers take both this and the plain payload, so a
//! topic may hold either (see [`event_of`]).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use stockflow_domain::BusEvent;
use stockflow_domain::cloudevent::{DATA_CONTENT_TYPE, SPEC_VERSION};

use super::headers::rfc3339;

/// How a structured record begins: `specversion` is written first, so a reader tells the
/// two forms apart without parsing twice (an event's own JSON begins with `"stream"`).
const STRUCTURED_PREFIX: &[u8] = b"{\"specversion\":";

#[derive(Serialize)]
struct Structured<'a> {
    specversion: &'static str,
    id: &'a str,
    source: String,
    #[serde(rename = "type")]
    event_type: &'static str,
    subject: String,
    time: String,
    datacontenttype: &'static str,
    /// The distributed tracing extension, when a traced request caused the change.
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<&'a str>,
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct Data {
    data: BusEvent,
}

/// The structured-mode record value of `event`, whose JSON is `payload`. Fails only if
/// `payload` is not JSON (it always is: `event` was read from it).
pub fn encode(event: &BusEvent, payload: &[u8]) -> serde_json::Result<Vec<u8>> {
    let data: &RawValue = serde_json::from_slice(payload)?;
    let ce = event.cloud_event();
    serde_json::to_vec(&Structured {
        specversion: SPEC_VERSION,
        id: ce.id,
        source: ce.source,
        event_type: ce.event_type.as_str(),
        subject: ce.subject,
        time: rfc3339(ce.time_ms),
        datacontenttype: DATA_CONTENT_TYPE,
        traceparent: event.trace_context(),
        data,
    })
}

/// The event a record value holds: a structured CloudEvent's `data`, or the event's JSON
/// itself (what Kafka, the embedded log and older records hold). Our own encoding is
/// recognised by its first bytes; a structured event that something else re-serialized
/// (other member order, whitespace) is still read, after the bare parse fails.
pub fn event_of(value: &[u8]) -> serde_json::Result<BusEvent> {
    if value.starts_with(STRUCTURED_PREFIX) {
        return serde_json::from_slice::<Data>(value).map(|d| d.data);
    }
    serde_json::from_slice(value).or_else(|bare| {
        serde_json::from_slice::<Data>(value)
            .map(|d| d.data)
            .map_err(|_| bare)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stock_payload(trace: Option<&str>) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "stream": "stock", "event_id": "SKU-1/dc/2", "type": "reservation_confirmed",
            "region": "north", "sku": "SKU-1", "location": "dc", "version": 2,
            "on_hand": 3, "reserved": 0, "reservation_id": "order-1", "reason": null,
            "reference": null, "idempotency_key": null, "occurred_at_ms": 1_764_000_000_123_i64,
            "trace_context": trace,
        }))
        .expect("JSON")
    }

    fn catalog_payload() -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "stream": "catalog", "event_id": "SKU-1/catalog/1", "sku": "SKU-1",
            "name": "Shoe", "attributes": {"color": "blue"}, "version": 1,
            "occurred_at_ms": 1_764_000_000_000_i64
        }))
        .expect("JSON")
    }

    fn structured(payload: &[u8]) -> (BusEvent, Vec<u8>) {
        let event: BusEvent = serde_json::from_slice(payload).expect("an event");
        let value = encode(&event, payload).expect("encoded");
        (event, value)
    }

    /// The CNCF SDK (not our code) reads each record as a CloudEvent with the attributes
    /// binary mode puts in headers, and its data is the event's JSON.
    #[test]
    fn the_cloudevents_sdk_reads_a_structured_record() {
        let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        for (payload, ce_type, subject, source, traced) in [
            (
                stock_payload(Some(trace)),
                "dev.stockflow.reservation.confirmed.v1",
                "SKU-1/dc",
                "/stockflow/regions/north",
                true,
            ),
            (
                catalog_payload(),
                "dev.stockflow.catalog.changed.v1",
                "SKU-1",
                "/stockflow/catalog",
                false,
            ),
        ] {
            let (event, value) = structured(&payload);
            let read: cloudevents::Event =
                serde_json::from_slice(&value).expect("a CloudEvent to the SDK");
            use cloudevents::AttributesReader;
            assert_eq!(read.specversion().as_str(), "1.0");
            assert_eq!(read.id(), event.event_id());
            assert_eq!(read.ty(), ce_type);
            assert_eq!(read.subject(), Some(subject));
            assert_eq!(read.source().as_str(), source);
            assert_eq!(read.datacontenttype(), Some("application/json"));
            let time = read.time().expect("a time").timestamp_millis();
            assert_eq!(time, event.occurred_at_ms());
            assert_eq!(
                read.extension("traceparent").map(ToString::to_string),
                traced.then(|| trace.to_string())
            );
            let Some(cloudevents::Data::Json(data)) = read.data() else {
                panic!("JSON data: {:?}", read.data());
            };
            let original: serde_json::Value = serde_json::from_slice(&payload).expect("JSON");
            assert_eq!(data, &original);
        }
    }

    #[test]
    fn readers_take_either_form_and_get_the_same_event() {
        for payload in [stock_payload(None), catalog_payload()] {
            let (event, value) = structured(&payload);
            assert!(value.starts_with(STRUCTURED_PREFIX));
            assert_eq!(event_of(&value).expect("structured"), event);
            assert_eq!(event_of(&payload).expect("plain"), event);
        }
        assert!(event_of(b"{\"specversion\":\"1.0\",\"id\":\"x\"}").is_err());
        assert!(event_of(b"not an event").is_err());
    }

    /// A structured event re-serialized by another tool (members reordered, pretty-printed)
    /// is still read; a value that is neither form keeps the bare parse's error.
    #[test]
    fn a_re_serialized_structured_event_is_still_read() {
        let (event, value) = structured(&stock_payload(None));
        let parsed: serde_json::Value = serde_json::from_slice(&value).expect("JSON");
        let mut reordered = serde_json::Map::new();
        reordered.insert("data".into(), parsed["data"].clone());
        for (name, attribute) in parsed.as_object().expect("an object") {
            reordered.insert(name.clone(), attribute.clone());
        }
        let pretty = serde_json::to_vec_pretty(&reordered).expect("JSON");
        assert!(!pretty.starts_with(STRUCTURED_PREFIX));
        assert_eq!(event_of(&pretty).expect("read"), event);
        let error = event_of(b"{\"stream\":\"stock\"}").expect_err("not an event");
        assert!(error.to_string().contains("missing field"), "{error}");
    }
}
