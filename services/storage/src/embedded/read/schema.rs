//! The read database's schema, and the columns later versions added to it.

use rusqlite::Connection;

use crate::Result;
use crate::error::Context;

/// Every table of the read database, created if missing.
pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS inventory_by_sku_location (
    sku TEXT NOT NULL,
    location TEXT NOT NULL,
    region TEXT NOT NULL,
    on_hand INTEGER NOT NULL,
    reserved INTEGER NOT NULL,
    version INTEGER NOT NULL,
    as_of_ms INTEGER NOT NULL,
    PRIMARY KEY (sku, location)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS availability_by_region (
    sku TEXT NOT NULL,
    region TEXT NOT NULL,
    on_hand INTEGER NOT NULL,
    reserved INTEGER NOT NULL,
    locations INTEGER NOT NULL,
    as_of_ms INTEGER NOT NULL,
    PRIMARY KEY (sku, region)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS search_documents (
    sku TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    attributes TEXT NOT NULL,
    version INTEGER NOT NULL
);
CREATE VIRTUAL TABLE IF NOT EXISTS search_index USING fts5 (
    sku UNINDEXED, name, attributes, tokenize = 'unicode61'
);
CREATE TABLE IF NOT EXISTS consumer_offsets (
    consumer TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (consumer, partition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stock_movements (
    sku TEXT NOT NULL,
    location TEXT NOT NULL,
    version INTEGER NOT NULL,
    kind TEXT NOT NULL,
    on_hand INTEGER NOT NULL,
    reserved INTEGER NOT NULL,
    reservation_id TEXT,
    reason TEXT,
    reference TEXT,
    actor_subject TEXT,
    actor_client_id TEXT,
    idempotency_key TEXT,
    occurred_at_ms INTEGER NOT NULL,
    bus_partition INTEGER,
    bus_offset INTEGER,
    projected_at_ms INTEGER,
    projected_by TEXT,
    PRIMARY KEY (sku, location, version)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS stock_movements_by_time ON stock_movements (occurred_at_ms);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    consumer TEXT NOT NULL,
    partition INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    key TEXT NOT NULL,
    payload TEXT NOT NULL,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    failed_at_ms INTEGER NOT NULL
);
"#;

/// Adds the columns later versions introduced to a read database made by an earlier one
/// (SQLite has no `ADD COLUMN IF NOT EXISTS`).
pub(super) fn add_missing_columns(conn: &Connection) -> Result<()> {
    let present: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('stock_movements')")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .what("read the movement table's columns")?;
    for (column, kind) in [
        ("bus_partition", "INTEGER"),
        ("bus_offset", "INTEGER"),
        ("projected_at_ms", "INTEGER"),
        ("projected_by", "TEXT"),
    ] {
        if !present.iter().any(|p| p == column) {
            conn.execute_batch(&format!(
                "ALTER TABLE stock_movements ADD COLUMN {column} {kind}"
            ))
            .what("add a movement column")?;
        }
    }
    Ok(())
}
