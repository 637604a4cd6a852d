//! The read database's schema, and the columns later versions added to it.

use std::collections::BTreeMap;

use rusqlite::{Connection, params};

use super::queries;
use crate::Result;
use crate::error::Context;

/// Every table of the read database, created if missing.
///
/// The movement history is a rowid table, unlike the other keyed tables: its rows are
/// appended in projection order to the table's last page, and only the narrow index on
/// `(sku, location, version)` takes an entry where the key sorts. Kept `WITHOUT ROWID`, every
/// movement was a wide row inserted in the middle of the table, splitting pages all over it
/// (docs/benchmarks.md, "Where the embedded platform's cost since 69479e9 went").
pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS inventory_by_sku_location (
    sku TEXT NOT NULL,
    location TEXT NOT NULL,
    region TEXT NOT NULL,
    on_hand INTEGER NOT NULL,
    reserved INTEGER NOT NULL,
    version INTEGER NOT NULL,
    as_of_ms INTEGER NOT NULL,
    damaged INTEGER NOT NULL DEFAULT 0,
    quality_hold INTEGER NOT NULL DEFAULT 0,
    safety_stock INTEGER NOT NULL DEFAULT 0,
    backordered INTEGER NOT NULL DEFAULT 0,
    in_transit INTEGER NOT NULL DEFAULT 0,
    incoming TEXT,
    channels TEXT,
    PRIMARY KEY (sku, location)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS availability_by_region (
    sku TEXT NOT NULL,
    region TEXT NOT NULL,
    on_hand INTEGER NOT NULL,
    reserved INTEGER NOT NULL,
    locations INTEGER NOT NULL,
    as_of_ms INTEGER NOT NULL,
    damaged INTEGER NOT NULL DEFAULT 0,
    quality_hold INTEGER NOT NULL DEFAULT 0,
    safety_stock INTEGER NOT NULL DEFAULT 0,
    backordered INTEGER NOT NULL DEFAULT 0,
    in_transit INTEGER NOT NULL DEFAULT 0,
    available INTEGER NOT NULL DEFAULT 0,
    incoming TEXT,
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
    detail TEXT,
    PRIMARY KEY (sku, location, version)
);
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

/// The columns later versions added, by table: a read database made by an earlier version
/// gains them (a row without them reads as zeros, no incoming, no detail).
const ADDED: &[(&str, &[(&str, &str)])] = &[
    (
        "stock_movements",
        &[
            ("bus_partition", "INTEGER"),
            ("bus_offset", "INTEGER"),
            ("projected_at_ms", "INTEGER"),
            ("projected_by", "TEXT"),
            ("detail", "TEXT"),
        ],
    ),
    (
        "inventory_by_sku_location",
        &[
            ("damaged", "INTEGER NOT NULL DEFAULT 0"),
            ("quality_hold", "INTEGER NOT NULL DEFAULT 0"),
            ("safety_stock", "INTEGER NOT NULL DEFAULT 0"),
            ("backordered", "INTEGER NOT NULL DEFAULT 0"),
            ("in_transit", "INTEGER NOT NULL DEFAULT 0"),
            ("incoming", "TEXT"),
            ("channels", "TEXT"),
        ],
    ),
    (
        "availability_by_region",
        &[
            ("damaged", "INTEGER NOT NULL DEFAULT 0"),
            ("quality_hold", "INTEGER NOT NULL DEFAULT 0"),
            ("safety_stock", "INTEGER NOT NULL DEFAULT 0"),
            ("backordered", "INTEGER NOT NULL DEFAULT 0"),
            ("in_transit", "INTEGER NOT NULL DEFAULT 0"),
            ("available", "INTEGER NOT NULL DEFAULT 0"),
            ("incoming", "TEXT"),
        ],
    ),
];

/// Adds the columns later versions introduced to a read database made by an earlier one
/// (SQLite has no `ADD COLUMN IF NOT EXISTS`). The region totals gain `available` as the
/// sum of each location's availability clamped at zero: rows of that time knew only
/// on-hand and reserved, so it is computed from their inventory rows once, in the same
/// transaction.
pub(super) fn add_missing_columns(conn: &Connection) -> Result<()> {
    let tx = conn
        .unchecked_transaction()
        .what("begin a read-model migration")?;
    for (table, columns) in ADDED {
        let present: Vec<String> = tx
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .what("read a table's columns")?;
        for (column, kind) in *columns {
            if present.iter().any(|p| p == column) {
                continue;
            }
            tx.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))
                .what("add a read-model column")?;
            if (*table, *column) == ("availability_by_region", "available") {
                fill_region_availability(&tx)?;
            }
        }
    }
    tx.commit().what("commit a read-model migration")?;
    Ok(())
}

/// Rebuilds a movement history kept `WITHOUT ROWID` (by versions before the rowid table,
/// [`SCHEMA`]) as a rowid table, in one transaction: the old table is renamed (its time
/// index goes with it), the new one created, the rows copied oldest first through that
/// index (so the rowid order stays the time order, with no sort), the old table dropped, and
/// the schema then builds the time index on the new table in one pass. Runs after
/// [`add_missing_columns`], so both tables have the same columns; an earlier version that
/// opens the rebuilt table reads and writes it as before. It takes a while on a long
/// history (docs/operations.md, data directory), once.
pub(super) fn movements_as_rowid_table(conn: &Connection) -> Result<()> {
    let sql: String = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'stock_movements'",
            [],
            |r| r.get(0),
        )
        .what("read the movement table's definition")?;
    if !sql.contains("WITHOUT ROWID") {
        return Ok(());
    }
    let tx = conn
        .unchecked_transaction()
        .what("begin the movement table's rebuild")?;
    tx.execute_batch("ALTER TABLE stock_movements RENAME TO stock_movements_without_rowid")
        .what("set the old movement table aside")?;
    let columns: Vec<String> = tx
        .prepare("SELECT name FROM pragma_table_info('stock_movements_without_rowid')")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .what("read the movement table's columns")?;
    let columns = columns.join(", ");
    // The new table is the schema's own: an index named `stock_movements_by_time` still
    // exists (on the old table), so the schema creates only the table now.
    tx.execute_batch(SCHEMA).what("create the movement table")?;
    let copied = tx
        .execute(
            &format!(
                "INSERT INTO stock_movements ({columns})
                 SELECT {columns} FROM stock_movements_without_rowid ORDER BY occurred_at_ms"
            ),
            [],
        )
        .what("copy the movements")?;
    tx.execute_batch("DROP TABLE stock_movements_without_rowid")
        .what("drop the old movement table")?;
    tx.execute_batch(SCHEMA)
        .what("index the movement table by time")?;
    tx.commit().what("commit the movement table's rebuild")?;
    tracing::info!(
        movements = copied,
        "read database migrated: the movement history is a rowid table"
    );
    Ok(())
}

/// Sets each region's `available` to the sum of its locations' rows' (the domain's
/// channel availability of each row), for totals kept before the column existed.
fn fill_region_availability(conn: &Connection) -> Result<()> {
    let mut sums: BTreeMap<(String, String), i64> = BTreeMap::new();
    for row in queries::inventory(conn, "", [])? {
        *sums.entry((row.sku, row.region)).or_default() += row.available;
    }
    let mut update = conn
        .prepare("UPDATE availability_by_region SET available = ?3 WHERE sku = ?1 AND region = ?2")
        .what("fill in region availability")?;
    for ((sku, region), available) in sums {
        update
            .execute(params![sku, region, available])
            .what("fill in region availability")?;
    }
    Ok(())
}
