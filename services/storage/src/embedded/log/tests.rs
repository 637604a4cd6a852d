//! What the bus contract cannot see: a log written before records kept headers.

use std::time::Duration;

use rusqlite::{Connection, params};
use stockflow_bus::{EventLog, NewRecord};

use super::SqliteEventLog;
use crate::embedded::WalPolicy;

/// The records table as versions before headers made it.
const OLD_RECORDS: &str = "CREATE TABLE log_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE records (
    partition INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    PRIMARY KEY (partition, offset)
) WITHOUT ROWID;";

#[tokio::test]
async fn a_log_from_before_headers_keeps_its_records_and_stores_headers_from_then_on() {
    let dir = tempfile::tempdir().expect("a directory");
    let path = dir.path().join("log.db");
    let old = Connection::open(&path).expect("log.db");
    old.execute_batch(OLD_RECORDS).expect("the old schema");
    old.execute(
        "INSERT INTO records (partition, offset, key, value, timestamp_ms) VALUES (0, ?1, 'k', ?2, 1)",
        params![0, b"old".to_vec()],
    )
    .expect("an old record");
    drop(old);

    let log = SqliteEventLog::open(&path, 1, WalPolicy::default()).expect("the old log opens");
    let mut record = NewRecord::new("k", b"new".to_vec());
    record.headers = vec![("ce_type".into(), "dev.stockflow.stock.adjusted.v1".into())];
    assert_eq!(log.append(vec![record]).await.expect("appended"), [(0, 1)]);

    let read = log
        .fetch(0, 0, 1 << 20, Duration::ZERO)
        .await
        .expect("fetched");
    let seen: Vec<_> = read
        .iter()
        .map(|r| (r.offset, r.value.as_slice(), r.headers.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (0, b"old".as_slice(), vec![]),
            (
                1,
                b"new".as_slice(),
                vec![(
                    "ce_type".to_string(),
                    "dev.stockflow.stock.adjusted.v1".to_string()
                )]
            ),
        ]
    );
    drop(log);
    // Opening it again finds the column there and leaves it.
    drop(SqliteEventLog::open(&path, 1, WalPolicy::default()).expect("it reopens"));
}
