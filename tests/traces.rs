//! One trace from the HTTP command to the read model, across processes: a command API, a
//! publisher and a projector over Cassandra and Kafka export OTLP/HTTP to a receiver in
//! this test, which decodes the real protobuf (`ExportTraceServiceRequest`). A reservation
//! sent with a caller's `traceparent` yields spans from all three processes in the
//! caller's trace, each linked to its parent: request → store write → publish, and
//! store write → projection.
//!
//! Needs `STOCKFLOW_CQL_NODES` and `STOCKFLOW_KAFKA_BROKERS` (the test command sets both);
//! fails without them.

// A test: a failed call is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::json;
use stockflow_bus::EventLog;
use stockflow_bus::kafka::{KafkaConfig, KafkaEventLog};
use stockflow_e2e::{RoleProcess, migrate_keyspace, put_warehouse, required, stockflow_output};

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A span as the receiver got it, ids in hex.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    instance: Option<String>,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: Vec<(String, String)>,
}

impl Received {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn text_of(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(display)
}

fn display(value: &AnyValue) -> String {
    match value {
        AnyValue::StringValue(s) => s.clone(),
        AnyValue::IntValue(i) => i.to_string(),
        AnyValue::BoolValue(b) => b.to_string(),
        AnyValue::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    }
}

type Spans = Arc<Mutex<Vec<Received>>>;

/// `POST /v1/traces`: decodes the export request and keeps every span.
async fn receive(State(spans): State<Spans>, body: Bytes) -> impl IntoResponse {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (axum::http::StatusCode::BAD_REQUEST, Vec::new()).into_response();
    };
    let mut kept = spans.lock().unwrap();
    for resource_spans in request.resource_spans {
        let attributes = resource_spans
            .resource
            .map(|r| r.attributes)
            .unwrap_or_default();
        let service = text_of(&attributes, "service.name").unwrap_or_default();
        let instance = text_of(&attributes, "service.instance.id");
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                kept.push(Received {
                    service: service.clone(),
                    instance: instance.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: span
                        .attributes
                        .iter()
                        .filter_map(|kv| {
                            Some((kv.key.clone(), display(kv.value.as_ref()?.value.as_ref()?)))
                        })
                        .collect(),
                });
            }
        }
    }
    (
        [(CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Starts the OTLP/HTTP receiver on 127.0.0.1; returns its endpoint and what it received.
async fn otlp_receiver() -> (String, Spans) {
    let spans: Spans = Arc::default();
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(receive))
        .with_state(spans.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (endpoint, spans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_reservation_is_one_trace_across_command_api_publisher_and_projector() {
    let nodes = required("STOCKFLOW_CQL_NODES");
    let brokers = required("STOCKFLOW_KAFKA_BROKERS");
    let run = std::process::id();
    let keyspace = format!("traces_{run}");
    let region = format!("traces{run}");
    migrate_keyspace(&nodes, &keyspace);
    let topic = KafkaEventLog::connect(KafkaConfig::new(
        brokers.split(',').map(str::to_string).collect(),
        stockflow_bus::default_topic(&region),
        2,
    ))
    .await
    .expect("the Kafka topic is created");
    let (endpoint, spans) = otlp_receiver().await;

    let workdir = tempfile::tempdir().expect("a working directory");
    let env = |instance: &str| -> Vec<(String, String)> {
        [
            ("STOCKFLOW_SCYLLA_NODES", nodes.clone()),
            ("STOCKFLOW_SCYLLA_KEYSPACE", keyspace.clone()),
            ("STOCKFLOW_REGION", region.clone()),
            ("STOCKFLOW_PARTITIONS", "2".into()),
            ("STOCKFLOW_OUTBOX_SCAN_MS", "100".into()),
            ("STOCKFLOW_BUS", "kafka".into()),
            ("STOCKFLOW_KAFKA_BROKERS", brokers.clone()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
            ("HOSTNAME", instance.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    };
    let command_api =
        RoleProcess::start("command-api", &env("command-api-0"), workdir.path()).await;
    let _publisher = RoleProcess::start("publisher", &env("publisher-0"), workdir.path()).await;
    let _projector = RoleProcess::start("projector", &env("projector-0"), workdir.path()).await;
    let query_api = RoleProcess::start("query-api", &env("query-api-0"), workdir.path()).await;

    let client = reqwest::Client::new();
    let base = command_api.base();
    put_warehouse(&client, &base, "dc", "north").await;
    let r = client
        .post(format!("{base}/v1/adjustments"))
        .header("idempotency-key", "stock-in")
        .json(&json!({"sku": "T1", "location": "dc", "set_on_hand": 5, "reason": "cycle_count"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .post(format!("{base}/v1/reservations"))
        .header("idempotency-key", "traced-order")
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .json(&json!({"reservation_id": "traced-order", "lines": [{"sku": "T1", "location": "dc", "qty": 2}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // The batch exporters send within ~100 ms; the event reaches the projector within the
    // outbox scan and the bus's latency.
    let deadline = Instant::now() + Duration::from_secs(60);
    let trace = loop {
        let trace: Vec<Received> = spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == CALLER_TRACE)
            .cloned()
            .collect();
        let has = |service: &str, name: &str| {
            trace.iter().any(|s| s.service == service && s.name == name)
        };
        if has("stockflow-publisher", "publish event")
            && has("stockflow-projector", "project event")
        {
            break trace;
        }
        assert!(
            Instant::now() < deadline,
            "the trace never reached the projector; spans of the trace: {trace:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let only = |service: &str, name: &str| -> Received {
        let found: Vec<&Received> = trace
            .iter()
            .filter(|s| s.service == service && s.name.starts_with(name))
            .collect();
        assert_eq!(found.len(), 1, "one {name} span from {service}: {trace:#?}");
        found[0].clone()
    };

    let request = only("stockflow-command-api", "POST /v1/reservations");
    assert_eq!(
        request.parent_span_id, CALLER_SPAN,
        "the request continues the caller's span"
    );
    assert_eq!(request.attribute("http.route"), Some("/v1/reservations"));
    assert_eq!(request.attribute("http.response.status_code"), Some("201"));
    let write = only("stockflow-command-api", "execute reserve");
    assert_eq!(
        write.parent_span_id, request.span_id,
        "the store write runs inside the request"
    );
    let publish = only("stockflow-publisher", "publish event");
    assert_eq!(
        publish.parent_span_id, write.span_id,
        "the publish hangs below the write"
    );
    assert!(publish.attribute("partition").is_some() && publish.attribute("offset").is_some());
    let project = only("stockflow-projector", "project event");
    assert_eq!(
        project.parent_span_id, write.span_id,
        "the projection hangs below the write"
    );
    assert_eq!(
        project.instance.as_deref(),
        Some("projector-0"),
        "the trace names the replica"
    );
    assert_eq!(
        project.attribute("offset"),
        publish.attribute("offset"),
        "the projected record is the published one"
    );

    // The record on the topic carries the write's traceparent as a header too, for
    // consumers that read it there.
    let partition: u32 = publish.attribute("partition").unwrap().parse().unwrap();
    let offset: u64 = publish.attribute("offset").unwrap().parse().unwrap();
    let record = topic
        .fetch(partition, offset, 1 << 20, Duration::from_secs(10))
        .await
        .unwrap()
        .into_iter()
        .next()
        .expect("the published record");
    assert_eq!(record.offset, offset);
    let header = record
        .headers
        .iter()
        .find(|(k, _)| k == "traceparent")
        .map(|(_, v)| v.clone());
    assert_eq!(
        header,
        Some(format!("00-{CALLER_TRACE}-{}-01", write.span_id)),
        "the header names the store write"
    );

    // The movement history says the same without a trace backend: where the event was
    // read from the bus and which projector replica applied it.
    let movements: serde_json::Value = client
        .get(format!(
            "{}/v1/movements?sku=T1&location=dc",
            query_api.base()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reserved = movements["movements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["reservation_id"] == "traced-order")
        .unwrap_or_else(|| panic!("the reservation's movement: {movements:#}"));
    let projection = &reserved["projection"];
    assert_eq!(
        projection["partition"].to_string(),
        publish.attribute("partition").unwrap(),
        "{reserved:#}"
    );
    assert_eq!(
        projection["offset"].to_string(),
        publish.attribute("offset").unwrap()
    );
    assert!(
        projection["projected_by"]
            .as_str()
            .is_some_and(|by| by.starts_with("projector-0-")),
        "{reserved:#}"
    );

    // `stockflow trace` joins both sides: confirm, wait until the read models have it, and
    // the printout shows the write side's state and each movement's record and replica.
    let r = client
        .post(format!("{base}/v1/reservations/traced-order/confirm"))
        .header("idempotency-key", "traced-order-confirm")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let filtered = format!(
        "{}/v1/movements?sku=T1&location=dc&reservation_id=traced-order",
        query_api.base()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page: serde_json::Value = client
            .get(&filtered)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let kinds: Vec<&str> = page["movements"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["kind"].as_str())
            .collect();
        if kinds == ["stock_reserved", "reservation_confirmed"] {
            break;
        }
        assert!(
            !kinds.contains(&"stock_adjusted"),
            "the filter keeps only the reservation's movements: {page:#}"
        );
        assert!(
            Instant::now() < deadline,
            "the confirm never projected: {page:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let printout = stockflow_output(&[
        "trace",
        "traced-order",
        "--api",
        &base,
        "--query-api",
        &query_api.base(),
    ]);
    let published = format!(
        "published  partition {}, offset {}",
        publish.attribute("partition").unwrap(),
        publish.attribute("offset").unwrap()
    );
    for expected in [
        "reservation traced-order: confirmed",
        "T1 @ dc, qty 2",
        "stock_reserved  on hand 5, reserved 2",
        "reservation_confirmed  on hand 3, reserved 0",
        "Idempotency-Key traced-order-confirm",
        &published,
        "by projector-0-",
    ] {
        assert!(printout.contains(expected), "{expected:?} in:\n{printout}");
    }
    assert!(!printout.contains("not in the read models"), "{printout}");
    let by_key = stockflow_output(&[
        "trace",
        "--idempotency-key",
        "stock-in",
        "--sku",
        "T1",
        "--location",
        "dc",
        "--query-api",
        &query_api.base(),
        "--json",
    ]);
    let by_key: serde_json::Value = serde_json::from_str(&by_key).unwrap();
    let kinds: Vec<&str> = by_key["keys"][0]["movements"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["stock_adjusted"], "{by_key:#}");

    // The earlier commands, sent without a traceparent, start traces of their own.
    let others: Vec<Received> = spans
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.name == "POST /v1/adjustments")
        .cloned()
        .collect();
    assert_eq!(others.len(), 1, "{others:#?}");
    assert_ne!(others[0].trace_id, CALLER_TRACE);
    assert!(others[0].parent_span_id.is_empty(), "a root span");
}
