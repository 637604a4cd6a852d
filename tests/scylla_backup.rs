//! A region's keyspace backed up while commands run, restored into a new keyspace and its
//! read models rebuilt, with `scripts/keyspace-backup.sh` (`nodetool snapshot`, `nodetool
//! import`, `stockflow rebuild-read-models`) on the test command's Cassandra. Every key of
//! the restored keyspace is served at its write-side version, each restored level is one
//! the original keyspace went through (its movement history at that version shows the
//! same quantities), and the restored region takes commands. Needs `STOCKFLOW_CQL_NODES`
//! and `CASSANDRA_PORT`/`CASSANDRA_STORAGE_PORT` (the test command sets them).

// The helpers below are the test's own assertions.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use stockflow_e2e::{
    DevProcess, free_addr, migrate_keyspace, post_status, put_warehouse, required, stockflow_bin,
};
use stockflow_storage::ports::{ReadStore, WriteStore};
use stockflow_storage::scylla::{ScyllaBackend, ScyllaConfig};

const SKUS: usize = 12;
const LOCATIONS: [&str; 2] = ["dc1", "dc2"];
const CLIENTS: usize = 8;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `scripts/keyspace-backup.sh` with the test Cassandra's nodetool and data directory.
fn keyspace_backup(nodes: &str, args: &[&str]) -> String {
    let cassandra = repo().join("scripts/cassandra.sh");
    let data_dir = Command::new("bash")
        .arg(&cassandra)
        .arg("data-dir")
        .output()
        .unwrap();
    let out = Command::new("bash")
        .arg(repo().join("scripts/keyspace-backup.sh"))
        .args(args)
        .env("NODETOOL", format!("bash {} nodetool", cassandra.display()))
        .env(
            "CASSANDRA_DATA_DIR",
            String::from_utf8(data_dir.stdout).unwrap().trim(),
        )
        .env("STOCKFLOW", stockflow_bin())
        .env("STOCKFLOW_SCYLLA_NODES", nodes)
        .env("STOCKFLOW_SCYLLA_REPLICATION", "datacenter1:1")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(
        out.status.success(),
        "keyspace-backup.sh {args:?} failed:\n{stdout}\n{stderr}"
    );
    eprintln!(
        "{}",
        stderr
            .lines()
            .filter(|l| l.contains("keyspace-backup.sh"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    stdout
}

/// Waits until the read side of `b` shows every key at its write-side version.
async fn projected(b: &ScyllaBackend) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let write = b.write.all_stock_levels().await.unwrap();
        let read = b.read.all_inventory().await.unwrap();
        let caught_up = write.len() == read.len()
            && write.iter().all(|w| {
                read.iter().any(|r| {
                    r.sku == w.sku.as_str()
                        && r.location == w.location.as_str()
                        && r.version == w.version
                })
            });
        if caught_up {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the source's read models never caught up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyspace_snapshotted_under_load_restores_into_a_new_keyspace_and_serves_every_key() {
    let nodes = required("STOCKFLOW_CQL_NODES");
    required("CASSANDRA_PORT");
    let source = format!("snapsrc_{}", std::process::id());
    let restored = format!("snapdst_{}", std::process::id());
    migrate_keyspace(&nodes, &source);
    let scylla = |keyspace: &str| {
        [
            "--store".to_string(),
            "scylla".into(),
            "--scylla-nodes".into(),
            nodes.clone(),
            "--scylla-keyspace".into(),
            keyspace.to_string(),
        ]
    };
    let dir = tempfile::tempdir().unwrap();
    let args = scylla(&source);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let addr = free_addr();
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let platform = DevProcess::start_with(&dir.path().join("source"), addr, &args).await;
    for location in LOCATIONS {
        put_warehouse(&client, &base, location, "north").await;
    }
    for s in 0..SKUS {
        for location in LOCATIONS {
            let body = json!({"sku": format!("K{s}"), "location": location, "set_on_hand": 1000, "reason": "cycle_count"});
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

    // Load: adjustments and reservations from 8 clients while the snapshot is taken.
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
                let sku = format!("K{}", (t * 5 + i) % SKUS);
                let location = LOCATIONS[i % 2];
                let status = if i % 2 == 0 {
                    let body = json!({"sku": sku, "location": location, "delta": 1, "reason": "receipt"});
                    post_status(&client, &base, "/v1/adjustments", &format!("a-{t}-{i}"), body).await
                } else {
                    let id = format!("r-{t}-{i}");
                    let body = json!({"reservation_id": id, "lines": [{"sku": sku, "location": location, "qty": 1}], "ttl_seconds": 3600});
                    post_status(&client, &base, "/v1/reservations", &id, body).await
                };
                if matches!(status, 200 | 201) {
                    applied.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let backup = dir.path().join("backup");
    let started = Instant::now();
    let (n, b) = (nodes.clone(), backup.clone());
    let s = source.clone();
    tokio::task::spawn_blocking(move || {
        keyspace_backup(&n, &["snapshot", &s, b.to_str().unwrap()])
    })
    .await
    .unwrap();
    let snapshot_time = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let applied = applied.load(Ordering::Relaxed);
    assert!(applied > 50, "the load applied too little: {applied}");
    let config = |keyspace: &str| {
        ScyllaConfig::new(
            nodes.split(',').map(str::to_string).collect(),
            keyspace.to_string(),
        )
    };
    let original = ScyllaBackend::open(&config(&source)).await.unwrap();
    projected(&original).await;
    platform.stop();

    // Restore into a new keyspace; the script rebuilds the read models.
    let started = Instant::now();
    let (n, b) = (nodes.clone(), backup.clone());
    let r = restored.clone();
    let out = tokio::task::spawn_blocking(move || {
        keyspace_backup(&n, &["restore", b.to_str().unwrap(), &r])
    })
    .await
    .unwrap();
    let restore_time = started.elapsed();
    let copy = ScyllaBackend::open(&config(&restored)).await.unwrap();
    let levels = copy.write.all_stock_levels().await.unwrap();
    assert_eq!(levels.len(), SKUS * LOCATIONS.len());
    assert!(
        out.contains(&format!("rebuilt the read models of {} keys", levels.len())),
        "{out}"
    );

    // Every key: its read model is its write side, and its level is one the source had.
    let mut read = copy.read.all_inventory().await.unwrap();
    read.sort_by(|a, b| (&a.sku, &a.location).cmp(&(&b.sku, &b.location)));
    assert_eq!(read.len(), levels.len());
    for (w, r) in levels.iter().zip(&read) {
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
            "the restored read model of a key differs from its write side"
        );
        let history = original
            .read
            .movements(w.sku.as_str(), w.location.as_str(), w.version - 1, 1)
            .await
            .unwrap();
        let at = history.first().expect("the source made this version");
        assert_eq!(
            (at.version, at.on_hand, at.reserved),
            (w.version, w.on_hand, w.reserved),
            "{}/{}: the restored level is the source's at that version",
            w.sku,
            w.location
        );
    }

    // The restored region takes commands, and projects them.
    let args = scylla(&restored);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let addr = free_addr();
    let base = format!("http://{addr}");
    let platform = DevProcess::start_with(&dir.path().join("restored"), addr, &args).await;
    for w in &levels {
        let body = json!({"sku": w.sku.as_str(), "location": w.location.as_str(), "delta": 1, "reason": "receipt"});
        assert_eq!(
            post_status(
                &client,
                &base,
                "/v1/adjustments",
                &format!("after-{}-{}", w.sku, w.location),
                body
            )
            .await,
            200
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for w in &levels {
        loop {
            let v: serde_json::Value = client
                .get(format!("{base}/v1/stock/{}/{}", w.sku, w.location))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap_or_default();
            if v["version"].as_u64() == Some(w.version + 1) {
                assert_eq!(v["on_hand"], w.on_hand + 1);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}/{} not projected: {v}",
                w.sku,
                w.location
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    platform.stop();
    eprintln!(
        "{applied} commands under load; snapshot of {SKUS}x2 keys in {snapshot_time:.2?}, restore with rebuild in {restore_time:.2?}"
    );
}
