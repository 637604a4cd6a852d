//! Crash test: `kill -9` the real binary under load, restart it on the same data directory,
//! and prove that every acknowledged command survived, retries apply nothing twice, the
//! outbox drains, and the read models equal the write model.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stockflow_bus::EventLog;
use stockflow_e2e::{DevProcess, free_addr, put_warehouse};
use stockflow_storage::embedded::EmbeddedBackend;
use stockflow_storage::ports::{Outbox, ReadStore, WriteStore};
use tokio::sync::Mutex;

const SKUS: usize = 6;
const START: i64 = 1_000_000;

#[derive(Debug, Clone)]
struct Attempt {
    path: String,
    key: String,
    body: Value,
    sku: Option<usize>,
    acked: Option<Value>,
}

async fn post(
    client: &reqwest::Client,
    base: &str,
    a: &Attempt,
) -> Option<(reqwest::StatusCode, bool, Value)> {
    let r = client
        .post(format!("{base}{}", a.path))
        .header("idempotency-key", &a.key)
        .json(&a.body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    let status = r.status();
    let replayed = r.headers().get("idempotent-replayed").is_some();
    let body = r.json().await.ok()?;
    Some((status, replayed, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_command() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let base = format!("http://{addr}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();

    let first = DevProcess::start(dir.path(), addr).await;
    put_warehouse(&client, &base, "dc1", "north").await;
    for s in 0..SKUS {
        let a = Attempt {
            path: "/v1/adjustments".into(),
            key: format!("init-{s}"),
            sku: None,
            acked: None,
            body: json!({"sku": format!("C{s}"), "location": "dc1", "set_on_hand": START, "reason": "cycle_count"}),
        };
        assert_eq!(post(&client, &base, &a).await.unwrap().0, 200);
    }

    // Load: adjustments (+1) and reservations from 32 concurrent clients.
    let attempts = Arc::new(Mutex::new(Vec::<Attempt>::new()));
    let stop_at = Instant::now() + Duration::from_millis(1500);
    let mut tasks = Vec::new();
    for t in 0..32 {
        let (client, base, attempts) = (client.clone(), base.clone(), attempts.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            loop {
                i += 1;
                let s = (t * 7 + i) % SKUS;
                let mut a = if i % 3 == 0 {
                    Attempt { path: "/v1/reservations".into(), key: format!("r-{t}-{i}"), sku: None, acked: None,
                        body: json!({"lines": [{"sku": format!("C{s}"), "location": "dc1", "qty": 1}], "ttl_seconds": 3600}) }
                } else {
                    Attempt { path: "/v1/adjustments".into(), key: format!("a-{t}-{i}"), sku: Some(s), acked: None,
                        body: json!({"sku": format!("C{s}"), "location": "dc1", "delta": 1, "reason": "receipt"}) }
                };
                let reply = post(&client, &base, &a).await;
                let failed = reply.is_none();
                if let Some((status, _, body)) = reply
                    && status.is_success()
                {
                    a.acked = Some(body);
                }
                attempts.lock().await.push(a);
                if failed {
                    return; // The server is gone.
                }
                if Instant::now() > stop_at + Duration::from_secs(10) {
                    return;
                }
            }
        }));
    }
    tokio::time::sleep(stop_at - Instant::now()).await;
    first.kill_hard();
    for t in tasks {
        t.await.unwrap();
    }
    let attempts = attempts.lock().await.clone();
    let acked = attempts.iter().filter(|a| a.acked.is_some()).count();
    assert!(
        acked > 100,
        "the load produced too few acknowledged commands: {acked}"
    );
    eprintln!(
        "{} commands attempted, {acked} acknowledged before kill -9",
        attempts.len()
    );

    // Restart on the same data directory and retry every command with its key.
    let second = DevProcess::start(dir.path(), addr).await;
    let mut per_sku: BTreeMap<usize, i64> = BTreeMap::new();
    for a in &attempts {
        let (status, replayed, body) = post(&client, &base, a)
            .await
            .expect("restarted server answers");
        assert!(
            status.is_success(),
            "{} {} → {status} {body}",
            a.path,
            a.key
        );
        if let Some(acked) = &a.acked {
            assert!(
                replayed,
                "acknowledged command {} was not found after the crash",
                a.key
            );
            assert_eq!(
                &body, acked,
                "replay of {} returned a different answer",
                a.key
            );
        }
        if let Some(s) = a.sku {
            *per_sku.entry(s).or_default() += 1;
        }
    }
    // Each adjustment applied exactly once: on-hand = start + its distinct keys.
    for s in 0..SKUS {
        let expected = START + per_sku.get(&s).copied().unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v: Value = client
                .get(format!("{base}/v1/stock/C{s}/dc1"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v["on_hand"].as_i64() == Some(expected) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "C{s}: read model shows {v}, expected on_hand {expected}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    second.stop();
    for db in ["write.db", "log.db", "read.db"] {
        let wal = dir.path().join(format!("{db}-wal"));
        let len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        assert_eq!(len, 0, "{db}: a clean shutdown leaves no WAL behind");
    }

    // Offline: the outbox drained and the read models equal the write model.
    let backend = EmbeddedBackend::open(dir.path(), 4).unwrap();
    assert_eq!(backend.write.backlog().await.unwrap(), 0, "outbox drained");
    let write = backend.write.all_stock_levels().await.unwrap();
    let read = backend.read.all_inventory().await.unwrap();
    assert_eq!(write.len(), read.len());
    for (w, r) in write.iter().zip(&read) {
        assert_eq!(
            (w.sku.as_str(), w.location.as_str()),
            (r.sku.as_str(), r.location.as_str())
        );
        assert_eq!(
            (w.on_hand, w.reserved, w.version),
            (r.on_hand, r.reserved, r.version),
            "{}",
            w.sku
        );
    }
    // Every version of every key reached the log at least once; duplicates (re-published
    // after the crash) had no effect on the read models, as checked above.
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for p in 0..backend.log.partitions() {
        for rec in backend
            .log
            .fetch(p, 0, usize::MAX, std::time::Duration::ZERO)
            .await
            .unwrap()
        {
            let v: Value = serde_json::from_slice(&rec.value).unwrap();
            if v["stream"] == "stock" {
                seen.entry(v["sku"].as_str().unwrap().to_string())
                    .or_default()
                    .push(v["version"].as_u64().unwrap());
            }
        }
    }
    for w in &write {
        let mut versions = seen.remove(w.sku.as_str()).unwrap_or_default();
        let total = versions.len();
        versions.sort_unstable();
        versions.dedup();
        assert_eq!(
            versions,
            (1..=w.version).collect::<Vec<_>>(),
            "{}: every version published",
            w.sku
        );
        eprintln!("{}: {} versions, {} log records", w.sku, w.version, total);
    }
}
