//! The Fluvio cases: its records have no headers, so with `--fluvio-cloudevents
//! structured` each is the structured form of the same event, and a region that switches
//! to it mid-life keeps projecting. They need a cluster at `FLUVIO_ENDPOINT` (no registry
//! ships one).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use stockflow_bus::fluvio::{FluvioConfig, FluvioEventLog};
use stockflow_e2e::{DevProcess, required};

use super::{
    COMMANDS, EVENTS, PARTITIONS, check_cloudevents, count, read_all, send_commands,
    send_some_commands, wait_published, wait_published_at_least,
};
/// On Fluvio with `--fluvio-cloudevents structured`: every record is a structured-mode
/// CloudEvent whose attributes, read as the binary mode's headers, and data pass the same
/// checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Fluvio cluster: set FLUVIO_ENDPOINT and run with --ignored"]
async fn every_record_on_fluvio_is_a_structured_cloudevent() {
    let endpoint = required("FLUVIO_ENDPOINT");
    let topic = format!("cloudevents-{}", std::process::id());
    let dir = tempfile::tempdir().expect("a data directory");
    let dev = DevProcess::start_on_fluvio(dir.path(), &endpoint, &topic, "structured").await;
    let base = format!("http://{}", dev.addr);
    let (doc, started_ms) = send_commands(&base).await;
    wait_published(&base).await;
    dev.stop();

    let config = FluvioConfig::new(endpoint, topic, PARTITIONS);
    let log = FluvioEventLog::connect(config.clone())
        .await
        .expect("the topic answers");
    let records: Vec<_> = read_all(&log)
        .await
        .into_iter()
        .map(|mut record| {
            assert!(record.headers.is_empty(), "Fluvio keeps no headers");
            let (headers, data) = structured_to_binary(&record.value);
            record.headers = headers;
            record.value = data;
            record
        })
        .collect();
    check_cloudevents(&records, &doc, started_ms);
    stockflow_bus::fluvio::delete_topic(&config)
        .await
        .expect("the topic is deleted");
}

/// The switch an existing Fluvio region makes: `stockflow dev` writes bare events, then,
/// restarted with `--fluvio-cloudevents structured`, structured ones after them on the same
/// topic. The read models follow both: every stock key's read-model version becomes the
/// newest version on the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Fluvio cluster: set FLUVIO_ENDPOINT and run with --ignored"]
async fn a_fluvio_topic_switched_to_structured_projects_both_forms() {
    let endpoint = required("FLUVIO_ENDPOINT");
    let topic = format!("cloudevents-switch-{}", std::process::id());
    let dir = tempfile::tempdir().expect("a data directory");
    let start = |form| DevProcess::start_on_fluvio(dir.path(), &endpoint, &topic, form);
    // Before: the catalog, two adjustments, a move and two policies (6 events), bare.
    let (before, after) = COMMANDS.split_at(5);
    let dev = start("plain").await;
    let base = format!("http://{}", dev.addr);
    send_some_commands(&base, before, true).await;
    wait_published_at_least(&base, 6).await;
    dev.stop();
    // After: the rest (7 events), structured, on the same data directory and topic.
    let dev = start("structured").await;
    let base = format!("http://{}", dev.addr);
    send_some_commands(&base, after, false).await;
    wait_published_at_least(&base, EVENTS - 6).await;

    let config = FluvioConfig::new(endpoint.clone(), topic.clone(), PARTITIONS);
    let log = FluvioEventLog::connect(config.clone())
        .await
        .expect("the topic answers");
    let records = read_all(&log).await;
    let mut newest = BTreeMap::<(String, String), u64>::new();
    let (mut bare, mut structured) = (0, 0);
    // Partitions whose records have turned structured: a partition's order is the
    // publishing order, so no bare record may follow a structured one in it.
    let mut switched = BTreeSet::new();
    for record in &records {
        let value: Value = serde_json::from_slice(&record.value).expect("JSON");
        let event = if value["specversion"] == "1.0" {
            structured += 1;
            switched.insert(record.partition);
            value["data"].clone()
        } else {
            assert!(
                !switched.contains(&record.partition),
                "a bare record after a structured one in partition {}: {value}",
                record.partition
            );
            bare += 1;
            value
        };
        if event["stream"] == "stock" {
            let key = (
                event["sku"].as_str().expect("a SKU").to_string(),
                event["location"].as_str().expect("a location").to_string(),
            );
            let version = event["version"].as_u64().expect("a version");
            let held = newest.entry(key).or_default();
            *held = (*held).max(version);
        }
    }
    assert_eq!((bare, structured), (6, EVENTS - 6), "{records:?}");
    let client = reqwest::Client::new();
    for ((sku, location), version) in &newest {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let row: Value = client
                .get(format!("{base}/v1/stock/{sku}/{location}"))
                .send()
                .await
                .expect("the platform answers")
                .json()
                .await
                .expect("a JSON row");
            if row["version"].as_u64() == Some(*version) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{sku}/{location}: the read model holds {row}, the topic version {version}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(dead_letters(&base).await, 0, "nothing was dead-lettered");
    dev.stop();
    stockflow_bus::fluvio::delete_topic(&config)
        .await
        .expect("the topic is deleted");
}

/// `stockflow_dead_letters_total`, from the platform's `/metrics` (0 when absent).
async fn dead_letters(base: &str) -> usize {
    count(base, "stockflow_dead_letters_total").await
}

/// A structured-mode event's attributes as the Kafka binding's binary-mode headers
/// (`ce_<name>`; `datacontenttype` as `content-type`; the trace context under both names)
/// and its `data` as the value.
fn structured_to_binary(value: &[u8]) -> (Vec<(String, String)>, Vec<u8>) {
    let Value::Object(mut event) = serde_json::from_slice(value).expect("a JSON object") else {
        panic!(
            "not a structured CloudEvent: {}",
            String::from_utf8_lossy(value)
        );
    };
    let data = event.remove("data").expect("structured events carry data");
    let mut headers = Vec::new();
    for (name, attribute) in event {
        let attribute = attribute.as_str().expect("string attributes").to_string();
        match name.as_str() {
            "datacontenttype" => headers.push(("content-type".to_string(), attribute)),
            "traceparent" => {
                headers.push(("traceparent".to_string(), attribute.clone()));
                headers.push(("ce_traceparent".to_string(), attribute));
            }
            _ => headers.push((format!("ce_{name}"), attribute)),
        }
    }
    (headers, serde_json::to_vec(&data).expect("JSON"))
}
