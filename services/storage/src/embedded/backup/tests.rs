//! Sealing a copied log: records of changes the copied write side does not hold are cut,
//! backed ones behind them move up, and a partition's next offset never goes back.

use std::path::Path;

use rusqlite::{Connection, params};
use serde_json::json;
use stockflow_bus::{EventLog, NewRecord};

use super::{backup, read_manifest, restore, seal_log};
use crate::embedded::{SqliteEventLog, WalPolicy};

fn stock_event(sku: &str, version: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "stream": "stock", "event_id": format!("{sku}/s1/{version}"), "type": "stock_adjusted",
        "region": "north", "sku": sku, "location": "s1", "version": version,
        "on_hand": 10, "reserved": 0, "reservation_id": null, "reason": "receipt",
        "reference": null, "idempotency_key": null, "occurred_at_ms": 1, "trace_context": null
    }))
    .expect("an event")
}

fn catalog_event(sku: &str, version: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "stream": "catalog", "event_id": format!("{sku}/catalog/{version}"), "sku": sku,
        "name": "x", "attributes": {}, "version": version, "occurred_at_ms": 1
    }))
    .expect("an event")
}

/// A copied directory: a write side where A/s1 is at version 2, B/s1 at 1 and SKU A's
/// catalog at 1, and a log (made by the real log, then written by hand) of 3 partitions.
fn copied_dir(dir: &Path, partitions: &[(i64, i64, Vec<u8>)]) {
    let write = Connection::open(dir.join("write.db")).expect("write.db");
    write
        .execute_batch(
            "CREATE TABLE stock (sku TEXT, location TEXT, region TEXT, on_hand INTEGER, reserved INTEGER, version INTEGER, PRIMARY KEY (sku, location));
             CREATE TABLE skus (sku TEXT PRIMARY KEY, name TEXT, attributes TEXT, version INTEGER);
             INSERT INTO stock VALUES ('A', 's1', 'north', 10, 0, 2), ('B', 's1', 'north', 10, 0, 1);
             INSERT INTO skus VALUES ('A', 'x', '{}', 1);",
        )
        .expect("write side");
    drop(SqliteEventLog::open(&dir.join("log.db"), 3, WalPolicy::default()).expect("a log"));
    let log = Connection::open(dir.join("log.db")).expect("log.db");
    for (partition, offset, value) in partitions {
        // Each record's headers name its offset, to follow it when it moves.
        log.execute(
            "INSERT INTO records (partition, offset, key, value, timestamp_ms, headers) VALUES (?1, ?2, 'k', ?3, 1, ?4)",
            params![partition, offset, value, format!(r#"[["appended_at","{offset}"]]"#)],
        )
        .expect("a record");
    }
}

/// The offset each record of `partition` was appended at, from its headers.
async fn appended_at(dir: &Path, partition: u32) -> Vec<String> {
    let log = SqliteEventLog::open(&dir.join("log.db"), 3, WalPolicy::default()).expect("a log");
    let records = log
        .fetch(partition, 0, 1 << 20, std::time::Duration::ZERO)
        .await
        .expect("records");
    records
        .into_iter()
        .flat_map(|r| r.headers.into_iter().map(|(_, at)| at))
        .collect()
}

fn offsets_and_versions(dir: &Path, partition: i64) -> Vec<(i64, Option<u64>)> {
    let log = Connection::open(dir.join("log.db")).expect("log.db");
    let mut st = log
        .prepare("SELECT offset, value FROM records WHERE partition = ?1 ORDER BY offset")
        .expect("a query");
    st.query_map([partition], |r| {
        let value: Vec<u8> = r.get(1)?;
        let version = serde_json::from_slice::<serde_json::Value>(&value)
            .ok()
            .and_then(|v| v["version"].as_u64());
        Ok((r.get(0)?, version))
    })
    .and_then(Iterator::collect)
    .expect("records")
}

#[tokio::test]
async fn sealing_cuts_what_the_write_side_never_made_and_keeps_offsets_moving_forward() {
    let dir = tempfile::tempdir().expect("a directory");
    copied_dir(
        dir.path(),
        &[
            // Partition 0 (retention removed offsets 0-4): A v1, A v2, then A v3 — committed
            // after write.db was copied — then B v1 and A v2 again (republished), a catalog
            // change of A the copy has and one it has not, and a record that is no event.
            (0, 5, stock_event("A", 1)),
            (0, 6, stock_event("A", 2)),
            (0, 7, stock_event("A", 3)),
            (0, 8, stock_event("B", 1)),
            (0, 9, stock_event("A", 2)),
            (0, 10, catalog_event("A", 1)),
            (0, 11, catalog_event("A", 2)),
            (0, 12, b"not an event".to_vec()),
            // Partition 1: all backed.
            (1, 0, stock_event("B", 1)),
            // Partition 2: one record of a key the copy does not have at all.
            (2, 3, stock_event("C", 1)),
        ],
    );
    let (cut, moved) = seal_log(dir.path()).expect("sealed");
    assert_eq!((cut, moved), (3, 4));
    assert_eq!(
        offsets_and_versions(dir.path(), 0),
        vec![
            (5, Some(1)),
            (6, Some(2)),
            (7, Some(1)),
            (8, Some(2)),
            (9, Some(1)),
            (10, None)
        ]
    );
    assert_eq!(offsets_and_versions(dir.path(), 1), vec![(0, Some(1))]);
    assert_eq!(offsets_and_versions(dir.path(), 2), vec![]);
    // A moved record keeps its own headers.
    assert_eq!(
        appended_at(dir.path(), 0).await,
        ["5", "6", "8", "9", "10", "12"]
    );

    // Reopened, the log appends after what is kept, and never below a cut: partition 2 is
    // empty but its read model may have consumed offset 3 already.
    let log = SqliteEventLog::open(&dir.path().join("log.db"), 3, WalPolicy::default())
        .expect("the log reopens");
    let record = |key: &str| NewRecord {
        key: key.to_string(),
        value: b"{}".to_vec(),
        headers: Vec::new(),
    };
    let mut next = std::collections::BTreeMap::new();
    for key in ["A", "B", "C", "D", "E", "F", "G", "H", "I", "J"] {
        for (partition, offset) in log.append(vec![record(key)]).await.expect("appended") {
            next.entry(partition).or_insert(offset);
        }
    }
    assert_eq!(next.get(&0), Some(&11));
    assert_eq!(next.get(&1), Some(&1));
    assert_eq!(next.get(&2), Some(&3));
}

/// A backup taken by this version of a data directory an earlier one wrote (before an
/// upgrade): its log has no headers column until sealing adds it.
#[test]
fn sealing_a_log_from_before_headers_adds_the_column() {
    let dir = tempfile::tempdir().expect("a directory");
    copied_dir(dir.path(), &[]);
    let log = Connection::open(dir.path().join("log.db")).expect("log.db");
    log.execute_batch(
        "DROP TABLE records;
         CREATE TABLE records (partition INTEGER NOT NULL, offset INTEGER NOT NULL,
             key TEXT NOT NULL, value BLOB NOT NULL, timestamp_ms INTEGER NOT NULL,
             PRIMARY KEY (partition, offset)) WITHOUT ROWID;",
    )
    .expect("the old table");
    for (offset, version) in [(0, 1), (1, 3), (2, 2)] {
        log.execute(
            "INSERT INTO records (partition, offset, key, value, timestamp_ms) VALUES (0, ?1, 'k', ?2, 1)",
            params![offset, stock_event("A", version)],
        )
        .expect("a record");
    }
    drop(log);
    assert_eq!(seal_log(dir.path()).expect("sealed"), (1, 1));
    assert_eq!(
        offsets_and_versions(dir.path(), 0),
        vec![(0, Some(1)), (1, Some(2))]
    );
}

#[test]
fn a_backup_restores_only_into_an_empty_directory_and_only_when_complete() {
    let dir = tempfile::tempdir().expect("a directory");
    let data = dir.path().join("data");
    drop(crate::embedded::EmbeddedBackend::open(&data, 2).expect("a data directory"));

    // Not a data directory; a target that is not empty.
    let nowhere = backup(&dir.path().join("nothing"), &dir.path().join("b0"));
    assert!(nowhere.is_err());
    std::fs::create_dir_all(dir.path().join("full")).expect("a directory");
    std::fs::write(dir.path().join("full/x"), b"x").expect("a file");
    assert!(backup(&data, &dir.path().join("full")).is_err());

    let report = backup(&data, &dir.path().join("b1")).expect("a backup");
    assert_eq!(report.manifest.stock_keys, 0);
    assert_eq!(
        read_manifest(&dir.path().join("b1")).expect("a manifest"),
        report.manifest
    );
    restore(&dir.path().join("b1"), &dir.path().join("r1")).expect("restored");
    drop(crate::embedded::EmbeddedBackend::open(&dir.path().join("r1"), 2).expect("it opens"));
    // Into a directory that has data: refused, and the data untouched.
    assert!(restore(&dir.path().join("b1"), &dir.path().join("r1")).is_err());
    // A backup whose manifest is missing (interrupted before its end) is refused.
    std::fs::remove_file(dir.path().join("b1").join(super::MANIFEST)).expect("removed");
    let refused = restore(&dir.path().join("b1"), &dir.path().join("r2"));
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("not a complete backup")),
        "{refused:?}"
    );
}

/// Webhook subscriptions (with their cursors) and unfinished imports (with their files)
/// are restored; a finished import's file is not copied, and an unfinished job whose file
/// is gone is copied as it is (its worker ends it).
#[tokio::test]
async fn subscriptions_and_unfinished_imports_are_backed_up_with_their_state() {
    use crate::ports::{
        Cursor, ImportJob, ImportProgress, ImportStatus, ImportStore, Subscription, WebhookStore,
    };
    use stockflow_domain::webhook::{Filter, SubscriptionState};

    let dir = tempfile::tempdir().expect("a directory");
    let data = dir.path().join("data");
    let b = crate::embedded::EmbeddedBackend::open(&data, 2).expect("a data directory");
    let sub = Subscription {
        id: "sub_1".into(),
        url: "http://127.0.0.1:9/hook".into(),
        types: vec!["dev.stockflow.stock.adjusted.v1".into()],
        filter: Filter::default(),
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        state: SubscriptionState::Enabled,
        consecutive_dead_letters: 0,
        created_at_ms: 1,
        updated_at_ms: 1,
    };
    b.webhooks
        .create_subscription(&sub)
        .await
        .expect("subscribed");
    let cursor = Cursor {
        next_offset: 7,
        ..Cursor::default()
    };
    b.webhooks
        .save_cursor("sub_1", "stock", 1, &cursor, true)
        .await
        .expect("a cursor");
    let job = |id: &str, status| ImportJob {
        id: id.into(),
        owner: "erp".into(),
        digest: "00".into(),
        rows_total: 3,
        bytes: 30,
        status,
        progress: ImportProgress {
            rows_done: 1,
            next_byte: 10,
            applied: 1,
            ..ImportProgress::default()
        },
        created_at_ms: 1,
        finished_at_ms: None,
    };
    let files = data.join("imports");
    std::fs::create_dir_all(&files).expect("imports/");
    for (id, status, file) in [
        ("running", ImportStatus::Running, true),
        ("done", ImportStatus::Done, true),
        ("fileless", ImportStatus::Queued, false),
    ] {
        b.imports
            .create_import(&job(id, status))
            .await
            .expect("a job");
        if file {
            std::fs::write(files.join(format!("{id}.ndjson")), "{}\n{}\n{}\n").expect("rows");
        }
    }

    let report = backup(&data, &dir.path().join("b")).expect("a backup");
    assert_eq!(
        (
            report.manifest.subscriptions,
            report.manifest.unfinished_imports
        ),
        (1, 2)
    );
    let copied = dir.path().join("b").join("imports");
    assert!(copied.join("running.ndjson").is_file());
    assert!(
        !copied.join("done.ndjson").exists(),
        "a finished job needs no file"
    );
    restore(&dir.path().join("b"), &dir.path().join("r")).expect("restored");
    drop(b);

    let r = crate::embedded::EmbeddedBackend::open(&dir.path().join("r"), 2).expect("it opens");
    assert_eq!(r.webhooks.subscription("sub_1").await.unwrap(), Some(sub));
    assert_eq!(
        r.webhooks.cursor("sub_1", "stock", 1).await.unwrap(),
        Some(cursor)
    );
    let running = r.imports.import("running").await.unwrap().expect("the job");
    assert_eq!(running, job("running", ImportStatus::Running));
    let mut unfinished: Vec<String> = r
        .imports
        .unfinished_imports()
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    unfinished.sort();
    assert_eq!(unfinished, ["fileless", "running"]);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("r").join("imports").join("running.ndjson"))
            .expect("its rows"),
        "{}\n{}\n{}\n"
    );
}
