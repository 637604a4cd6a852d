//! Webhooks as a subscriber meets them: `stockflow dev` delivers stock events to a Python
//! receiver that verifies every delivery with the official `standardwebhooks` library (not
//! with our code). The receiver goes down while changes keep coming and still gets every
//! event, once after deduplicating on `webhook-id`, in order per SKU, even across a
//! `kill -9` of the platform; a receiver that keeps failing fills the dead letters, gets
//! them on replay, and its subscription is disabled with a recorded event. The first runs
//! on both backends (on ScyllaDB with `STOCKFLOW_CQL_NODES`).
//!
//! Needs `STOCKFLOW_WEBHOOK_PYTHON`, a python with `standardwebhooks` installed
//! (`scripts/test.sh` sets it through `scripts/webhook-tools.sh`).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stockflow_e2e::{DevProcess, TestKeyspace, free_addr, put_warehouse, required};

const ADJUSTED: &str = "dev.stockflow.stock.adjusted.v1";

/// The Python receiver (`tests/webhooks/receiver.py`) as a child process.
struct Receiver {
    child: Child,
}

impl Receiver {
    async fn start(addr: SocketAddr, secret: &str, records: &Path, mode: &str) -> Self {
        let python = required("STOCKFLOW_WEBHOOK_PYTHON");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("webhooks/receiver.py");
        let child = Command::new(python)
            .arg(script)
            .arg(addr.port().to_string())
            .arg(secret)
            .arg(records)
            .arg(mode)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the receiver starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(Instant::now() < deadline, "the receiver did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child }
    }

    /// Takes it down at once (connections are refused from here on).
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the receiver recorded, one JSON value per delivery it saw.
fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Deliveries the receiver verified and accepted (answered 2xx).
fn accepted(path: &Path) -> Vec<Value> {
    let all = records(path);
    let forged: Vec<&Value> = all.iter().filter(|r| r["verified"] != true).collect();
    assert!(
        forged.is_empty(),
        "deliveries failed verification: {forged:?}"
    );
    all.into_iter().filter(|r| r["mode"] == "ok").collect()
}

async fn subscribe(client: &reqwest::Client, base: &str, url: &str) -> (String, String) {
    let r = client
        .post(format!("{base}/v1/subscriptions"))
        .header("idempotency-key", "sub-1")
        .json(&json!({"url": url, "types": [ADJUSTED], "filter": {"regions": ["north"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    let id = body["subscription"]["id"].as_str().unwrap().to_string();
    let secret = body["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    (id, secret)
}

async fn adjust(client: &reqwest::Client, base: &str, sku: &str, n: usize) {
    let r = client
        .post(format!("{base}/v1/adjustments"))
        .header("idempotency-key", format!("adj-{sku}-{n}"))
        .json(&json!({"sku": sku, "location": "dc", "delta": 1, "reason": "receipt"}))
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "adjustment {sku} {n}: {}",
        r.status()
    );
}

async fn get(client: &reqwest::Client, url: String) -> Value {
    let r = client.get(url).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    r.json().await.unwrap()
}

/// `stockflow_webhook_deliveries_total{outcome="failed"}` from `/metrics`.
async fn failed_attempts(client: &reqwest::Client, base: &str) -> u64 {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with("stockflow_webhook_deliveries_total{outcome=\"failed\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Waits until `done` holds for the receiver's accepted deliveries.
async fn wait_for(path: &Path, within: Duration, what: &str, done: impl Fn(&[Value]) -> bool) {
    let deadline = Instant::now() + within;
    loop {
        if done(&accepted(path)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: only {} deliveries after {within:?}: {:?}",
            accepted(path).len(),
            accepted(path)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_verified_once_after_the_receiver_returns() {
    every_event_arrives_once(&[]).await;
}

/// The same on ScyllaDB: subscriptions, cursors and dead letters in the keyspace, across
/// the same outage and `kill -9`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_scylladb_every_event_arrives_verified_once_after_the_receiver_returns() {
    let keyspace = TestKeyspace::migrated("webhooks");
    every_event_arrives_once(&keyspace.dev_args()).await;
}

/// Events before, during and after a receiver outage and a `kill -9` of the platform
/// (started with `store` arguments) all arrive, verified, once each after dedupe, in order
/// per SKU.
async fn every_event_arrives_once(store: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let records_path = dir.path().join("records.jsonl");
    // A 60 s window: retries every few seconds at most, and the receiver is down for
    // less than the window, so nothing is dead-lettered.
    let (data, addr) = (dir.path().join("data"), free_addr());
    let mut args = vec!["--webhook-retry-window-seconds", "60"];
    args.extend_from_slice(store);
    let dev = DevProcess::start_with(&data, addr, &args).await;
    let base = format!("http://{}", dev.addr);
    let client = reqwest::Client::new();
    put_warehouse(&client, &base, "dc", "north").await;
    let hook_addr = free_addr();
    let (id, secret) = subscribe(&client, &base, &format!("http://{hook_addr}/hook")).await;

    let skus = ["WH-1", "WH-2", "WH-3", "WH-4", "WH-5"];
    // Rounds of one adjustment per SKU: before, during and after the outage.
    let (before, during, after) = (3, 4, 3);
    let receiver = Receiver::start(hook_addr, &secret, &records_path, "ok").await;
    for i in 0..before {
        for sku in skus {
            adjust(&client, &base, sku, i).await;
        }
    }
    wait_for(
        &records_path,
        Duration::from_secs(30),
        "before the outage",
        |r| !r.is_empty(),
    )
    .await;
    receiver.kill();
    // Down: changes keep coming and every attempt is refused.
    for i in before..before + during {
        for sku in skus {
            adjust(&client, &base, sku, i).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    // The outage was real: attempts were refused while the receiver was down.
    let refused = failed_attempts(&client, &base).await;
    assert!(refused > 0, "no attempt failed during the outage");
    let receiver = Receiver::start(hook_addr, &secret, &records_path, "ok").await;
    for i in before + during..before + during + after {
        for sku in skus {
            adjust(&client, &base, sku, i).await;
        }
    }
    // kill -9 while the backlog is being delivered: the restarted process resumes from the
    // durable cursors (a delivery answered but not yet recorded comes again, same id).
    dev.kill_hard();
    let dev = DevProcess::start_with(&data, addr, &args).await;
    let crashed = before + during + after;
    for i in crashed..crashed + 2 {
        for sku in skus {
            adjust(&client, &base, sku, i).await;
        }
    }
    let n = crashed + 2;
    let expected: BTreeSet<String> = skus
        .iter()
        .flat_map(|sku| (1..=n).map(move |v| format!("{sku}/dc/{v}")))
        .collect();
    wait_for(
        &records_path,
        Duration::from_secs(90),
        "after the outage",
        |r| {
            let seen: BTreeSet<String> = r
                .iter()
                .map(|d| d["event_id"].as_str().unwrap().to_string())
                .collect();
            seen.is_superset(&expected)
        },
    )
    .await;
    // Let any redelivery in flight land before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(receiver);

    let delivered = accepted(&records_path);
    let mut first: BTreeMap<String, Value> = BTreeMap::new();
    let mut order: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for d in &delivered {
        let wid = d["webhook_id"].as_str().unwrap().to_string();
        if first.contains_key(&wid) {
            continue;
        }
        order
            .entry(d["sku"].as_str().unwrap().to_string())
            .or_default()
            .push(d["version"].as_u64().unwrap());
        first.insert(wid, d.clone());
    }
    let unique: BTreeSet<String> = first
        .values()
        .map(|d| d["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(unique, expected, "every event, nothing else");
    assert_eq!(first.len(), expected.len(), "one webhook-id per event");
    assert!(first.values().all(|d| d["type"] == ADJUSTED));
    for (sku, versions) in &order {
        let sorted: Vec<u64> = (1..=n as u64).collect();
        assert_eq!(versions, &sorted, "{sku} arrived out of order");
    }
    let duplicates = delivered.len() - first.len();
    println!(
        "webhooks: {} events, {} deliveries accepted, {} unique after dedupe by webhook-id, {} duplicates, {refused} attempts refused during the outage",
        expected.len(),
        delivered.len(),
        first.len(),
        duplicates
    );
    let sub = get(&client, format!("{base}/v1/subscriptions/{id}")).await;
    assert_eq!(sub["state"], "enabled");
    let letters = get(
        &client,
        format!("{base}/v1/subscriptions/{id}/dead-letters"),
    )
    .await;
    assert_eq!(
        letters,
        json!([]),
        "nothing dead-lettered within the window"
    );
    dev.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_fills_dead_letters_is_disabled_and_replay_delivers() {
    dead_letters_disable_and_replay(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_scylladb_a_failing_receiver_fills_dead_letters_is_disabled_and_replay_delivers() {
    let keyspace = TestKeyspace::migrated("webhook_letters");
    dead_letters_disable_and_replay(&keyspace.dev_args()).await;
}

/// A receiver that keeps failing (the platform started with `store` arguments): dead
/// letters, the subscription disabled once with its event, and a replay that delivers.
async fn dead_letters_disable_and_replay(store: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let records_path = dir.path().join("records.jsonl");
    // A 3 s window and disabled after 2 dead letters in a row.
    let mut args = vec![
        "--webhook-retry-window-seconds",
        "3",
        "--webhook-disable-after",
        "2",
    ];
    args.extend_from_slice(store);
    let dev = DevProcess::start_with(&dir.path().join("data"), free_addr(), &args).await;
    let base = format!("http://{}", dev.addr);
    let client = reqwest::Client::new();
    put_warehouse(&client, &base, "dc", "north").await;
    let hook_addr = free_addr();
    let (id, secret) = subscribe(&client, &base, &format!("http://{hook_addr}/hook")).await;
    let broken = Receiver::start(hook_addr, &secret, &records_path, "fail").await;
    // One SKU: one partition, so the events fail one after the other.
    for i in 0..3 {
        adjust(&client, &base, "DL-1", i).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let sub = loop {
        let sub = get(&client, format!("{base}/v1/subscriptions/{id}")).await;
        if sub["state"] == "disabled" {
            break sub;
        }
        assert!(Instant::now() < deadline, "never disabled: {sub}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        sub["events"][0]["type"], "dev.stockflow.subscription.disabled.v1",
        "{sub}"
    );
    let letters = get(
        &client,
        format!("{base}/v1/subscriptions/{id}/dead-letters"),
    )
    .await;
    let letters = letters.as_array().unwrap();
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert_eq!(letters[0]["event_id"], "DL-1/dc/1");
    assert_eq!(letters[1]["event_id"], "DL-1/dc/2");
    assert!(
        letters[0]["last_error"].as_str().unwrap().contains("503"),
        "{letters:?}"
    );
    let attempts = records(&records_path).len();
    assert!(
        attempts >= 4,
        "retried within the window: {attempts} attempts"
    );
    assert!(accepted(&records_path).is_empty());

    // The receiver is fixed; enabling resumes the stream, replay sends the dead letters.
    broken.kill();
    let _fixed = Receiver::start(hook_addr, &secret, &records_path, "ok").await;
    let r = client
        .post(format!("{base}/v1/subscriptions/{id}/enable"))
        .header("idempotency-key", "enable-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .post(format!("{base}/v1/subscriptions/{id}/dead-letters/replay"))
        .header("idempotency-key", "replay-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.json::<Value>().await.unwrap()["queued"], 2);
    wait_for(
        &records_path,
        Duration::from_secs(30),
        "after replay",
        |r| {
            let seen: BTreeSet<&str> = r.iter().map(|d| d["event_id"].as_str().unwrap()).collect();
            seen == BTreeSet::from(["DL-1/dc/1", "DL-1/dc/2", "DL-1/dc/3"])
        },
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let letters = get(
            &client,
            format!("{base}/v1/subscriptions/{id}/dead-letters"),
        )
        .await;
        if letters == json!([]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replayed letters stay: {letters}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let accepted_now = accepted(&records_path);
    let unique: BTreeSet<&str> = accepted_now
        .iter()
        .map(|d| d["webhook_id"].as_str().unwrap())
        .collect();
    println!(
        "webhooks (failing receiver): {attempts} refused attempts, 2 dead letters, disabled; after replay {} deliveries accepted, {} unique, {} duplicates",
        accepted_now.len(),
        unique.len(),
        accepted_now.len() - unique.len()
    );
    assert_eq!(unique.len(), 3);
    let sub = get(&client, format!("{base}/v1/subscriptions/{id}")).await;
    assert_eq!(sub["state"], "enabled");
    dev.stop();
}
