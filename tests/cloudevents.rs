//! Events as other systems meet them on the bus: `stockflow dev` on a real Kafka broker,
//! and on its embedded log, takes commands of every sort (catalog, adjustments, a move,
//! policies, incoming stock, reservations confirmed and released), and every record read
//! back from the topic is a CloudEvents 1.0 event in binary content mode whose `ce_*`
//! headers and JSON data pass the schemas the platform publishes at `/asyncapi.json`,
//! checked by the `jsonschema` validator (not by our code).
//!
//! On Fluvio, whose records have no headers, each record is the structured form of the
//! same event; read back as attributes and data, it passes the same checks ([`fluvio`]).
//!
//! The Kafka case needs `STOCKFLOW_KAFKA_BROKERS` (the test command starts a broker and
//! sets it); the Fluvio case a cluster at `FLUVIO_ENDPOINT` (no registry ships one).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use stockflow_bus::EventLog;
use stockflow_bus::kafka::{KafkaConfig, KafkaEventLog};
use stockflow_e2e::{DevProcess, free_addr, metric, put_warehouse, required};
use stockflow_storage::embedded::{SqliteEventLog, WalPolicy};

#[path = "cloudevents/fluvio.rs"]
mod fluvio;

/// Partitions `DevProcess` gives the topic.
const PARTITIONS: u32 = 4;

/// The changes the commands below make: the catalog, two adjustments, a move, two
/// policies, an incoming line, three reserved lines, two confirmed, one released.
const EVENTS: usize = 13;

/// The types the commands below must produce.
const EXPECTED: [&str; 9] = [
    "dev.stockflow.catalog.changed.v1",
    "dev.stockflow.stock.adjusted.v1",
    "dev.stockflow.stock.moved.v1",
    "dev.stockflow.sku-policy.changed.v1",
    "dev.stockflow.location-policy.changed.v1",
    "dev.stockflow.incoming.expected.v1",
    "dev.stockflow.stock.reserved.v1",
    "dev.stockflow.reservation.confirmed.v1",
    "dev.stockflow.reservation.released.v1",
];

/// The trace context every command is sent with: stock events carry it.
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Commands of every sort, in order: each yields at least one event.
const COMMANDS: [(&str, &str); 10] = [
    (
        "/v1/adjustments",
        r#"{"sku": "CE-1", "location": "dc", "set_on_hand": 20, "reason": "cycle_count"}"#,
    ),
    (
        "/v1/adjustments",
        r#"{"sku": "CE-2", "location": "dc", "delta": 7, "reason": "receipt", "reference": "asn-1"}"#,
    ),
    (
        "/v1/moves",
        r#"{"sku": "CE-1", "location": "dc", "from": "available", "to": "damaged", "qty": 1, "reason": "damage"}"#,
    ),
    (
        "/v1/policies",
        r#"{"sku": "CE-1", "oversell": "backorder", "backorder_limit": 5, "low_stock_threshold": 2}"#,
    ),
    (
        "/v1/policies",
        r#"{"sku": "CE-2", "location": "dc", "low_stock_threshold": 3}"#,
    ),
    (
        "/v1/incoming",
        r#"{"sku": "CE-2", "location": "dc", "purchase_order": "po-1", "line": 1, "qty": 10, "expected_date": "2030-01-15"}"#,
    ),
    (
        "/v1/reservations",
        r#"{"reservation_id": "ord-1", "reference": "order-1", "lines": [{"sku": "CE-1", "location": "dc", "qty": 2}, {"sku": "CE-2", "location": "dc", "qty": 1}]}"#,
    ),
    ("/v1/reservations/ord-1/confirm", "{}"),
    (
        "/v1/reservations",
        r#"{"reservation_id": "ord-2", "lines": [{"sku": "CE-1", "location": "dc", "qty": 1}]}"#,
    ),
    ("/v1/reservations/ord-2/release", "{}"),
];

/// Posts one command under its own Idempotency-Key; panics unless it is accepted.
async fn post(client: &reqwest::Client, base: &str, path: &str, body: &str) {
    static SENT: AtomicUsize = AtomicUsize::new(0);
    let r = client
        .post(format!("{base}{path}"))
        .header(
            "idempotency-key",
            format!("ce-{}", SENT.fetch_add(1, Ordering::Relaxed)),
        )
        .header("content-type", "application/json")
        .header("traceparent", TRACEPARENT)
        .body(body.to_string())
        .send()
        .await
        .expect("the platform answers");
    let status = r.status();
    assert!(
        status.is_success(),
        "POST {path}: {status} {}",
        r.text().await.unwrap_or_default()
    );
}

/// A validator for the part of the AsyncAPI document at `pointer` (a payload or headers
/// schema), resolving its `$ref`s inside the document.
fn validator(doc: &Value, pointer: &str) -> jsonschema::Validator {
    let root = json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "allOf": [{"$ref": format!("#{pointer}")}],
        "components": doc["components"],
    });
    jsonschema::draft7::new(&root)
        .unwrap_or_else(|e| panic!("the schema at {pointer} compiles: {e}"))
}

fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// Every record of the topic, read from the start of each partition to its end.
async fn read_all(log: &dyn EventLog) -> Vec<stockflow_bus::LogRecord> {
    let mut records = Vec::new();
    for partition in 0..PARTITIONS {
        let end = log.end_offset(partition).await.expect("end offset");
        let mut offset = log.start_offset(partition).await.expect("start offset");
        while offset < end {
            let batch = log
                .fetch(partition, offset, 1 << 20, Duration::from_secs(2))
                .await
                .expect("fetch");
            let Some(last) = batch.last() else { break };
            offset = last.offset + 1;
            records.extend(batch);
        }
    }
    records
}

/// Sends the catalog and every command of [`COMMANDS`]; returns the platform's AsyncAPI
/// document and when the commands began (Unix ms).
async fn send_commands(base: &str) -> (Value, i64) {
    send_some_commands(base, &COMMANDS, true).await
}

/// Sends `commands`, after the warehouse and the catalog when `first`; returns the
/// platform's AsyncAPI document and when the commands began (Unix ms).
async fn send_some_commands(base: &str, commands: &[(&str, &str)], first: bool) -> (Value, i64) {
    let client = reqwest::Client::new();
    let started_ms = now_ms();
    if first {
        catalog(&client, base).await;
    }
    for (path, body) in commands {
        post(&client, base, path, body).await;
    }
    let doc: Value = client
        .get(format!("{base}/asyncapi.json"))
        .send()
        .await
        .expect("the platform answers")
        .json()
        .await
        .expect("a JSON document");
    assert_eq!(doc["asyncapi"], "3.0.0");
    (doc, started_ms)
}

/// The warehouse and the catalog entry the commands use (one catalog event).
async fn catalog(client: &reqwest::Client, base: &str) {
    put_warehouse(client, base, "dc", "north").await;
    let r = client
        .put(format!("{base}/v1/skus/CE-1"))
        .json(&json!({"name": "Cloud shoe", "attributes": {"color": "blue"}}))
        .send()
        .await
        .expect("the platform answers");
    assert!(r.status().is_success(), "PUT sku: {}", r.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_on_kafka_is_a_cloudevent_that_passes_the_published_schemas() {
    let brokers = required("STOCKFLOW_KAFKA_BROKERS");
    let topic = format!("cloudevents-{}", std::process::id());
    let dir = tempfile::tempdir().expect("a data directory");
    let dev = DevProcess::start_on_kafka(dir.path(), &brokers, &topic).await;
    let (doc, started_ms) = send_commands(&format!("http://{}", dev.addr)).await;

    let log = KafkaEventLog::connect(KafkaConfig::new(
        brokers.split(',').map(str::to_string).collect(),
        topic.clone(),
        PARTITIONS,
    ))
    .await
    .expect("the topic answers");
    // The publisher moves the outbox within milliseconds; wait until every kind is there.
    let deadline = Instant::now() + Duration::from_secs(60);
    let records = loop {
        let records = read_all(&log).await;
        let seen: BTreeSet<String> = records
            .iter()
            .filter_map(|r| header_map(&r.headers).remove("ce_type"))
            .collect();
        if records.len() >= EVENTS && EXPECTED.iter().all(|t| seen.contains(*t)) {
            break records;
        }
        assert!(
            Instant::now() < deadline,
            "not every type reached the topic; seen {seen:?} in {} records",
            records.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    check_cloudevents(&records, &doc, started_ms);
    dev.stop();
}

/// The same on the embedded log `stockflow dev` runs by default, read back from its file
/// once the process has published every event and stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_on_the_embedded_log_is_the_same_cloudevent() {
    let dir = tempfile::tempdir().expect("a data directory");
    let dev = DevProcess::start(dir.path(), free_addr()).await;
    let base = format!("http://{}", dev.addr);
    let (doc, started_ms) = send_commands(&base).await;
    wait_published(&base).await;
    dev.stop();

    let log = SqliteEventLog::open(&dir.path().join("log.db"), PARTITIONS, WalPolicy::default())
        .expect("the log opens");
    let records = read_all(&log).await;
    check_cloudevents(&records, &doc, started_ms);
}

/// Waits until the platform at `base` has published every event of [`send_commands`].
async fn wait_published(base: &str) {
    wait_published_at_least(base, EVENTS).await;
}

/// Waits until the platform at `base` has published `events` events since it started.
async fn wait_published_at_least(base: &str, events: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let published = count(base, "stockflow_events_published_total").await;
        if published >= events {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {published} of {events} events were published"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The counter `name` of the platform at `base` (0 before its first increment).
async fn count(base: &str, name: &str) -> usize {
    metric(base, name).await.map_or(0, |n| n as usize)
}

/// Every record of `records` is one of the [`EVENTS`] changes, once, as a CloudEvent in
/// binary content mode whose headers and data pass `doc`'s schemas of its type.
fn check_cloudevents(records: &[stockflow_bus::LogRecord], doc: &Value, started_ms: i64) {
    // One event per change, none twice (nothing crashed, so nothing was republished).
    let ids: BTreeSet<&str> = records
        .iter()
        .filter_map(|r| r.headers.iter().find(|(k, _)| k == "ce_id"))
        .map(|(_, id)| id.as_str())
        .collect();
    assert_eq!((records.len(), ids.len()), (EVENTS, EVENTS), "{ids:?}");

    let mut validators = BTreeMap::new();
    let mut checked = BTreeMap::<String, usize>::new();
    for record in records {
        let headers = header_map(&record.headers);
        let at = format!("partition {} offset {}", record.partition, record.offset);
        let ce_type = headers
            .get("ce_type")
            .unwrap_or_else(|| panic!("{at}: no ce_type header in {headers:?}"))
            .clone();
        let data: Value = serde_json::from_slice(&record.value)
            .unwrap_or_else(|e| panic!("{at}: the value is not JSON: {e}"));

        // Binary content mode: the attributes agree with the data they describe.
        assert_eq!(
            headers.get("ce_specversion").map(String::as_str),
            Some("1.0"),
            "{at}"
        );
        assert_eq!(
            headers.get("content-type").map(String::as_str),
            Some("application/json"),
            "{at}"
        );
        assert_eq!(
            headers.get("ce_id").map(String::as_str),
            data["event_id"].as_str(),
            "{at}"
        );
        let sku = data["sku"].as_str().expect("every event names its SKU");
        assert_eq!(record.key, sku, "{at}: the record key is the SKU");
        let (subject, source) = match data["stream"].as_str() {
            Some("stock") => (
                format!("{sku}/{}", data["location"].as_str().unwrap_or_default()),
                format!(
                    "/stockflow/regions/{}",
                    data["region"].as_str().unwrap_or_default()
                ),
            ),
            Some("catalog") => (sku.to_string(), "/stockflow/catalog".to_string()),
            Some("policy") => (sku.to_string(), "/stockflow/policies".to_string()),
            other => panic!("{at}: unknown stream {other:?}"),
        };
        assert_eq!(headers.get("ce_subject"), Some(&subject), "{at}");
        assert_eq!(headers.get("ce_source"), Some(&source), "{at}");
        // The trace context, where the data carries one, under both header names.
        let trace = data["trace_context"].as_str();
        assert_eq!(
            headers.get("ce_traceparent").map(String::as_str),
            trace,
            "{at}"
        );
        assert_eq!(
            headers.get("traceparent").map(String::as_str),
            trace,
            "{at}"
        );
        if data["stream"] == "stock" {
            assert_eq!(
                trace,
                Some(TRACEPARENT),
                "{at}: the command's trace context"
            );
        }
        let time = headers.get("ce_time").expect("ce_time");
        let occurred = data["occurred_at_ms"].as_i64().expect("occurred_at_ms");
        assert_eq!(
            rfc3339_ms(time),
            occurred,
            "{at}: ce_time {time} is the decision time"
        );
        assert!(
            occurred >= started_ms - 1000,
            "{at}: decided during this test"
        );

        // And both pass the published schemas of the record's type.
        let message = format!("/components/messages/{ce_type}");
        assert!(
            doc.pointer(&message).is_some(),
            "{at}: {ce_type} is not in the document"
        );
        let (payload, header_schema) = validators.entry(ce_type.clone()).or_insert_with(|| {
            (
                validator(doc, &format!("{message}/payload")),
                validator(doc, &format!("{message}/headers")),
            )
        });
        let failed = errors(payload, &data);
        assert!(
            failed.is_empty(),
            "{at}: {ce_type} data {data} fails its schema: {failed:#?}"
        );
        let header_json =
            Value::Object(headers.iter().map(|(k, v)| (k.clone(), json!(v))).collect());
        let failed = errors(header_schema, &header_json);
        assert!(
            failed.is_empty(),
            "{at}: {ce_type} headers fail their schema: {failed:#?}"
        );

        // The schemas are not vacuous: the same data without its version, or named as
        // another type, is refused.
        let mut broken = data.clone();
        if let Some(fields) = broken.as_object_mut() {
            fields.remove("version");
        }
        assert!(
            !errors(payload, &broken).is_empty(),
            "{at}: a {ce_type} without a version passes"
        );
        if data["stream"] == "stock" {
            let mut renamed = data.clone();
            renamed["type"] = json!(if data["type"] == "stock_moved" {
                "stock_adjusted"
            } else {
                "stock_moved"
            });
            assert!(
                !errors(payload, &renamed).is_empty(),
                "{at}: another kind passes as {ce_type}"
            );
        }
        *checked.entry(ce_type).or_default() += 1;
    }
    eprintln!(
        "validated {} records against /asyncapi.json: {checked:?}",
        records.len()
    );
    assert_eq!(
        checked.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        EXPECTED.into_iter().collect(),
        "every type is there"
    );
}

fn header_map(headers: &[(String, String)]) -> BTreeMap<String, String> {
    headers.iter().cloned().collect()
}

fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// Unix milliseconds of an RFC 3339 time, read by humantime's parser.
fn rfc3339_ms(time: &str) -> i64 {
    let at = humantime::parse_rfc3339(time).unwrap_or_else(|e| panic!("{time}: not RFC 3339: {e}"));
    let since = at.duration_since(UNIX_EPOCH).expect("after the epoch");
    i64::try_from(since.as_millis()).expect("fits")
}
