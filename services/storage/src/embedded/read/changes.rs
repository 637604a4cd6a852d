//! The change feed in the read database: every inventory row a projection writes is
//! appended, in the same transaction, with a sequence number SQLite assigns in commit
//! order, so a cursor is exact (`e:<seq>`): nothing committed before it is missed, and a
//! reader sees only committed rows. Retention removes the oldest entries and remembers how
//! far it went, so a cursor behind that point is answered "expired" instead of skipping.

use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use stockflow_domain::read_model::InventoryRow;

use super::queries::inventory;
use crate::error::Context;
use crate::ports::{ChangeCursor, ChangeSnapshot, Changes};
use crate::{Result, StoreError};

/// The feed's tables.
pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS change_feed (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    location TEXT NOT NULL,
    sku TEXT NOT NULL,
    row TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS change_feed_by_location ON change_feed (location, seq);
CREATE INDEX IF NOT EXISTS change_feed_by_time ON change_feed (at_ms);
CREATE TABLE IF NOT EXISTS change_feed_meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS inventory_by_location ON inventory_by_sku_location (location);
"#;

/// Appends `row` (just written) to the feed.
pub(super) fn record(conn: &Connection, row: &InventoryRow, now_ms: i64) -> Result<()> {
    let text = serde_json::to_string(row).map_err(|source| StoreError::Encode {
        what: "a change-feed row",
        source,
    })?;
    conn.prepare_cached(
        "INSERT INTO change_feed (location, sku, row, at_ms) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut s| s.execute(params![row.location, row.sku, text, now_ms]))
    .what("append to the change feed")?;
    Ok(())
}

fn cursor_of(seq: i64) -> String {
    ChangeCursor::Embedded(seq).to_string()
}

/// The highest sequence number retention removed.
fn purged_through(conn: &Connection) -> Result<i64> {
    Ok(conn
        .query_row(
            "SELECT value FROM change_feed_meta WHERE name = 'purged_through'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .optional()
        .what("read the feed's retention point")?
        .unwrap_or(0))
}

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// A page of the feed (one read transaction: the rows and the point they were read at
/// agree).
pub(super) fn page(
    conn: &Connection,
    locations: &[String],
    cursor: Option<&str>,
    limit: usize,
) -> Result<Changes> {
    let after = match cursor {
        None => None,
        Some(c) => match ChangeCursor::parse(c) {
            Some(ChangeCursor::Embedded(seq)) => Some(seq),
            // ScyllaDB's: this feed cannot say what follows it.
            Some(_) => return Ok(Changes::Expired),
            None => return Ok(Changes::BadCursor(c.to_string())),
        },
    };
    let tx = conn
        .unchecked_transaction()
        .what("begin a change-feed read")?;
    let floor = purged_through(&tx)?;
    let after = match after {
        Some(seq) if seq < floor => return Ok(Changes::Expired),
        Some(seq) => seq,
        None => floor,
    };
    let head: i64 = tx
        .query_row("SELECT coalesce(MAX(seq), 0) FROM change_feed", [], |r| {
            r.get(0)
        })
        .what("read the feed's head")?;
    let sql = format!(
        "SELECT seq, row FROM change_feed WHERE seq > ? AND location IN ({}) ORDER BY seq LIMIT ?",
        placeholders(locations.len())
    );
    let mut values: Vec<rusqlite::types::Value> = vec![after.into()];
    values.extend(locations.iter().map(|l| l.clone().into()));
    values.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
    let found: Vec<(i64, String)> = tx
        .prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_map(params_from_iter(values), |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
        .what("read the change feed")?;
    // A full page goes on from its last row; a short one from the head: the entries in
    // between belong to other locations.
    let next = if found.len() == limit {
        found.last().map_or(after, |(seq, _)| *seq)
    } else {
        head.max(after)
    };
    let rows = found
        .into_iter()
        .map(|(_, text)| {
            serde_json::from_str(&text).map_err(|source| StoreError::Corrupt {
                what: "a change-feed entry",
                source: source.into(),
            })
        })
        .collect::<Result<Vec<InventoryRow>>>()?;
    Ok(Changes::Page {
        rows,
        cursor: cursor_of(next),
    })
}

/// Every row of `locations` and the feed's head, read at one point.
pub(super) fn snapshot(conn: &Connection, locations: &[String]) -> Result<ChangeSnapshot> {
    let tx = conn.unchecked_transaction().what("begin a snapshot read")?;
    let head: i64 = tx
        .query_row("SELECT coalesce(MAX(seq), 0) FROM change_feed", [], |r| {
            r.get(0)
        })
        .what("read the feed's head")?;
    let rows = inventory(
        &tx,
        &format!("WHERE location IN ({})", placeholders(locations.len())),
        params_from_iter(locations.iter()),
    )?;
    Ok(ChangeSnapshot {
        rows,
        cursor: cursor_of(head.max(purged_through(&tx)?)),
    })
}

/// Removes at most `limit` entries older than `before_ms`, moving the retention point.
pub(super) fn purge(conn: &Connection, before_ms: i64, limit: usize) -> Result<usize> {
    let last: Option<i64> = conn
        .query_row(
            "SELECT MAX(seq) FROM (SELECT seq FROM change_feed WHERE at_ms < ?1 ORDER BY seq LIMIT ?2)",
            params![before_ms, i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| r.get(0),
        )
        .what("find old feed entries")?;
    let Some(last) = last else {
        return Ok(0);
    };
    let removed = conn
        .execute("DELETE FROM change_feed WHERE seq <= ?1", params![last])
        .what("purge the change feed")?;
    conn.execute(
        "INSERT INTO change_feed_meta (name, value) VALUES ('purged_through', ?1)
         ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
        params![last],
    )
    .what("record the feed's retention point")?;
    Ok(removed)
}
