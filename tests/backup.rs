//! Backup and restore of an embedded data directory, with the real binary: backups taken
//! while 16 clients adjust and reserve, each restored and served. Every restored platform
//! is consistent (the read models equal its write side, every version of every key is in
//! its log exactly as the write side made it, and the next change of each key is
//! projected), and the backup taken once the load stopped equals the original key by key.

// The helpers below are the test's own assertions.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stockflow_bus::EventLog;
use stockflow_domain::StockLevel;
use stockflow_e2e::{DevProcess, free_addr, post_status, put_warehouse, stockflow_output};
use stockflow_storage::embedded::EmbeddedBackend;
use stockflow_storage::ports::{Outbox, ReadStore, WriteStore};

const SKUS: usize = 24;
const LOCATIONS: [&str; 2] = ["dc1", "dc2"];
const CLIENTS: usize = 16;

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temporary path")
}

fn backup(data: &Path, to: &Path) -> String {
    stockflow_output(&["backup", "--data-dir", path(data), "--to", path(to)])
        .trim()
        .to_string()
}

fn restore(from: &Path, data: &Path) {
    stockflow_output(&["restore", "--from", path(from), "--data-dir", path(data)]);
}

/// The write side's stock levels of a stopped data directory.
async fn write_levels(dir: &Path) -> Vec<StockLevel> {
    let backend = EmbeddedBackend::open(dir, 4).expect("the directory opens");
    backend
        .write
        .all_stock_levels()
        .await
        .expect("stock levels")
}

/// Offline checks of a stopped directory: nothing left to publish, read models equal to
/// the write side, and each key's versions 1..=v in the log, none other.
async fn assert_consistent(dir: &Path, what: &str) {
    let backend = EmbeddedBackend::open(dir, 4).expect("the directory opens");
    assert_eq!(
        backend.write.backlog().await.unwrap(),
        0,
        "{what}: outbox drained"
    );
    let write = backend.write.all_stock_levels().await.unwrap();
    let read = backend.read.all_inventory().await.unwrap();
    assert_eq!(write.len(), read.len(), "{what}");
    for (w, r) in write.iter().zip(&read) {
        assert_eq!(
            (
                w.sku.as_str(),
                w.location.as_str(),
                w.on_hand,
                w.reserved,
                w.version
            ),
            (
                r.sku.as_str(),
                r.location.as_str(),
                r.on_hand,
                r.reserved,
                r.version
            ),
            "{what}: read model of a key differs from its write side"
        );
    }
    let mut seen = std::collections::BTreeMap::<(String, String), Vec<u64>>::new();
    for p in 0..backend.log.partitions() {
        for rec in backend
            .log
            .fetch(p, 0, usize::MAX, Duration::ZERO)
            .await
            .unwrap()
        {
            let v: Value = serde_json::from_slice(&rec.value).unwrap();
            if v["stream"] == "stock" {
                seen.entry((
                    v["sku"].as_str().unwrap().into(),
                    v["location"].as_str().unwrap().into(),
                ))
                .or_default()
                .push(v["version"].as_u64().unwrap());
            }
        }
    }
    for w in &write {
        let mut versions = seen
            .remove(&(w.sku.to_string(), w.location.to_string()))
            .unwrap_or_default();
        versions.sort_unstable();
        versions.dedup();
        assert_eq!(
            versions,
            (1..=w.version).collect::<Vec<_>>(),
            "{what}: {}/{}: the log holds exactly the versions the write side made",
            w.sku,
            w.location
        );
    }
    assert!(
        seen.is_empty(),
        "{what}: log records of unknown keys: {seen:?}"
    );
}

/// Waits until the served read model of every key of `levels` is at its version.
async fn caught_up(client: &reqwest::Client, base: &str, levels: &[StockLevel], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for l in levels {
        loop {
            let r = client
                .get(format!("{base}/v1/stock/{}/{}", l.sku, l.location))
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            if v["version"].as_u64() == Some(l.version) {
                assert_eq!(v["on_hand"], l.on_hand, "{what}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {}/{} stuck at {v} (write side at version {})",
                l.sku,
                l.location,
                l.version
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_taken_under_load_restore_to_consistent_platforms() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let addr = free_addr();
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let original = DevProcess::start(&data, addr).await;
    for location in LOCATIONS {
        put_warehouse(&client, &base, location, "north").await;
    }
    for s in 0..SKUS {
        for location in LOCATIONS {
            let body = json!({"sku": format!("B{s}"), "location": location, "set_on_hand": 100_000, "reason": "cycle_count"});
            assert_eq!(
                post_status(
                    &client,
                    &base,
                    "/v1/adjustments",
                    &format!("init-{s}-{location}"),
                    body
                )
                .await,
                200
            );
        }
    }

    // Load: adjustments, reservations and confirmations from 16 clients until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let applied = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..CLIENTS {
        let (client, base, stop, applied) =
            (client.clone(), base.clone(), stop.clone(), applied.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let sku = format!("B{}", (t * 5 + i) % SKUS);
                let location = LOCATIONS[i % 2];
                let status = if i % 2 == 0 {
                    let body = json!({"sku": sku, "location": location, "delta": 1, "reason": "receipt"});
                    post_status(&client, &base, "/v1/adjustments", &format!("a-{t}-{i}"), body).await
                } else {
                    let id = format!("r-{t}-{i}");
                    let body = json!({"reservation_id": id, "lines": [{"sku": sku, "location": location, "qty": 1}], "ttl_seconds": 3600});
                    let s = post_status(&client, &base, "/v1/reservations", &id, body).await;
                    if s == 200 && i % 3 == 0 {
                        post_status(&client, &base, &format!("/v1/reservations/{id}/confirm"), &format!("c-{t}-{i}"), json!({})).await
                    } else {
                        s
                    }
                };
                if status == 200 {
                    applied.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    // Three backups while the load runs.
    let mut under_load = Vec::new();
    for n in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let to = dir.path().join(format!("under-load-{n}"));
        let (data_c, to_c) = (data.clone(), to.clone());
        let line = tokio::task::spawn_blocking(move || backup(&data_c, &to_c))
            .await
            .unwrap();
        eprintln!("under load: {line}");
        under_load.push(to);
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let applied = applied.load(Ordering::Relaxed);
    assert!(applied > 300, "the load applied too little: {applied}");

    // Once quiet: a backup that must equal the original exactly.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let quiet = dir.path().join("quiet");
    eprintln!("quiet: {}", backup(&data, &quiet));
    original.stop();
    let original_levels = write_levels(&data).await;
    eprintln!("{applied} commands applied under load over {SKUS}x2 keys");

    for (n, from) in under_load.iter().chain([&quiet]).enumerate() {
        let what = from.file_name().unwrap().to_string_lossy().to_string();
        let restored = dir.path().join(format!("restored-{n}"));
        let started = Instant::now();
        restore(from, &restored);
        let restore_time = started.elapsed();
        let levels = write_levels(&restored).await;
        assert_eq!(levels.len(), SKUS * LOCATIONS.len(), "{what}");
        if from == &quiet {
            assert_eq!(levels, original_levels, "{what}: equals the original");
        }

        // Served: the read models reach the write side, and the next change of every key
        // is projected (a log record the write side never made would hide it).
        let addr = free_addr();
        let base = format!("http://{addr}");
        let platform = DevProcess::start(&restored, addr).await;
        let served = Instant::now();
        caught_up(&client, &base, &levels, &what).await;
        let catch_up = served.elapsed();
        for l in &levels {
            let body = json!({"sku": l.sku.as_str(), "location": l.location.as_str(), "delta": 1, "reason": "receipt"});
            assert_eq!(
                post_status(
                    &client,
                    &base,
                    "/v1/adjustments",
                    &format!("after-{}-{}", l.sku, l.location),
                    body
                )
                .await,
                200,
                "{what}"
            );
        }
        let next: Vec<StockLevel> = levels
            .iter()
            .map(|l| StockLevel {
                on_hand: l.on_hand + 1,
                version: l.version + 1,
                ..l.clone()
            })
            .collect();
        caught_up(&client, &base, &next, &what).await;
        platform.stop();
        assert_consistent(&restored, &what).await;
        eprintln!(
            "{what}: restored in {restore_time:.2?}, read models caught up {catch_up:.2?} after start"
        );
    }
}

fn fresh_addr() -> (std::net::SocketAddr, String) {
    let addr = free_addr();
    (addr, format!("http://{addr}"))
}

/// A lost read table comes back from the write side: with `inventory_by_sku_location` and
/// `availability_by_region` dropped, the projectors (already at the log's end) have nothing
/// to bring them back, and `stockflow rebuild-read-models` does, after which the platform
/// serves every key at its version and projects the next change of each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_read_table_is_rebuilt_from_the_write_side() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A fresh port for each start: tests run side by side, and a port given up between
    // two starts may be taken by another test's server.
    let mut addr = free_addr();
    let mut base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let platform = DevProcess::start(&data, addr).await;
    for location in LOCATIONS {
        put_warehouse(&client, &base, location, "north").await;
    }
    for s in 0..SKUS {
        for (n, location) in LOCATIONS.into_iter().enumerate() {
            for step in 0..=n {
                let body = json!({"sku": format!("L{s}"), "location": location, "delta": 3 + s, "reason": "receipt"});
                let key = format!("l-{s}-{location}-{step}");
                assert_eq!(
                    post_status(&client, &base, "/v1/adjustments", &key, body).await,
                    200
                );
            }
        }
        let id = format!("lr-{s}");
        let body = json!({"reservation_id": id, "lines": [{"sku": format!("L{s}"), "location": "dc1", "qty": 2}], "ttl_seconds": 3600});
        assert!(matches!(
            post_status(&client, &base, "/v1/reservations", &id, body).await,
            200 | 201
        ));
    }
    platform.stop();
    let levels = write_levels(&data).await;
    assert_eq!(levels.len(), SKUS * LOCATIONS.len());

    let read_db = rusqlite::Connection::open(data.join("read.db")).unwrap();
    read_db
        .execute_batch("DROP TABLE inventory_by_sku_location; DROP TABLE availability_by_region;")
        .unwrap();
    drop(read_db);
    (addr, base) = fresh_addr();
    let platform = DevProcess::start(&data, addr).await;
    let r = client
        .get(format!("{base}/v1/stock/L0/dc1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        404,
        "the projectors do not bring a lost table back"
    );
    platform.stop();

    let line = stockflow_output(&[
        "rebuild-read-models",
        "--data-dir",
        path(&data),
        "--partitions",
        "4",
        "--page",
        "10",
    ]);
    eprintln!("{}", line.trim());
    assert!(
        line.contains(&format!("rebuilt the read models of {} keys", levels.len())),
        "{line}"
    );
    assert_consistent(&data, "rebuilt").await;

    (addr, base) = fresh_addr();
    let platform = DevProcess::start(&data, addr).await;
    caught_up(&client, &base, &levels, "rebuilt").await;
    let region: Value = client
        .get(format!("{base}/v1/availability/L1?region=north"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expected: i64 = levels
        .iter()
        .filter(|l| l.sku.as_str() == "L1")
        .map(|l| l.on_hand - l.reserved)
        .sum();
    assert_eq!(region["total_available"], expected, "{region}");
    for l in &levels {
        let body = json!({"sku": l.sku.as_str(), "location": l.location.as_str(), "delta": 1, "reason": "receipt"});
        let key = format!("after-{}-{}", l.sku, l.location);
        assert_eq!(
            post_status(&client, &base, "/v1/adjustments", &key, body).await,
            200
        );
    }
    let next: Vec<StockLevel> = levels
        .iter()
        .map(|l| StockLevel {
            on_hand: l.on_hand + 1,
            version: l.version + 1,
            ..l.clone()
        })
        .collect();
    caught_up(&client, &base, &next, "after the rebuild").await;
    platform.stop();
}
