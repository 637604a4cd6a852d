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
        log.execute(
            "INSERT INTO records (partition, offset, key, value, timestamp_ms) VALUES (?1, ?2, 'k', ?3, 1)",
            params![partition, offset, value],
        )
        .expect("a record");
    }
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
