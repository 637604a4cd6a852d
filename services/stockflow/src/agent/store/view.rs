//! The region's view of the store's stock (kept from the change feed, with its cursor in
//! the same transaction), the local settings, and what the queue still owes each key.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::{AgentStore, Effect, ViewRow, sqlite};
use crate::agent::AgentError;

impl AgentStore {
    /// Applies changes from the region's feed (each only if newer than the view holds) and
    /// stores the feed's cursor, in one transaction: a restart resumes exactly after them.
    pub fn apply_changes(&self, rows: &[ViewRow], cursor: &str) -> Result<(), AgentError> {
        self.with(|conn| {
            let tx = conn.transaction().map_err(sqlite("begin"))?;
            for row in rows {
                upsert_view(&tx, row)?;
            }
            set(&tx, "feed_cursor", cursor)?;
            tx.commit().map_err(sqlite("commit the changes"))
        })
    }

    /// Replaces the view by a snapshot of the region (a cursor too old to resume), with the
    /// cursor to follow from. Queued commands are untouched.
    pub fn reset_view(&self, rows: &[ViewRow], cursor: &str) -> Result<(), AgentError> {
        self.with(|conn| {
            let tx = conn.transaction().map_err(sqlite("begin"))?;
            tx.execute("DELETE FROM view", [])
                .map_err(sqlite("clear the view"))?;
            for row in rows {
                upsert_view(&tx, row)?;
            }
            set(&tx, "feed_cursor", cursor)?;
            tx.commit().map_err(sqlite("commit the snapshot"))
        })
    }

    /// The feed's cursor, if the feed was ever read.
    pub fn cursor(&self) -> Result<Option<String>, AgentError> {
        self.setting("feed_cursor")
    }

    /// A stored setting.
    pub fn setting(&self, name: &str) -> Result<Option<String>, AgentError> {
        self.with(|conn| {
            conn.query_row(
                "SELECT value FROM settings WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()
            .map_err(sqlite("read a setting"))
        })
    }

    /// Stores a setting.
    pub fn set_setting(&self, name: &str, value: &str) -> Result<(), AgentError> {
        self.with(|conn| set(conn, name, value))
    }

    /// One key as the region last reported it.
    pub fn view(&self, sku: &str, location: &str) -> Result<Option<ViewRow>, AgentError> {
        self.with(|conn| {
            conn.query_row(
                "SELECT sku, location, on_hand, reserved, version, as_of_ms FROM view
                 WHERE sku = ?1 AND location = ?2",
                params![sku, location],
                view_row,
            )
            .optional()
            .map_err(sqlite("read the view"))
        })
    }

    /// Every key of `sku` as the region last reported it.
    pub fn view_of_sku(&self, sku: &str) -> Result<Vec<ViewRow>, AgentError> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT sku, location, on_hand, reserved, version, as_of_ms FROM view
                     WHERE sku = ?1 ORDER BY location",
                )
                .map_err(sqlite("prepare the view query"))?;
            let rows = stmt
                .query_map(params![sku], view_row)
                .map_err(sqlite("read the view"))?;
            rows.collect::<Result<_, _>>()
                .map_err(sqlite("read a view row"))
        })
    }

    /// The effects of the commands the region has not acknowledged yet on `(sku,
    /// location)`, in the order they were made.
    pub fn pending_effects(&self, sku: &str, location: &str) -> Result<Vec<Effect>, AgentError> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT c.effects FROM command_keys k JOIN commands c ON c.seq = k.seq
                     WHERE k.sku = ?1 AND k.location = ?2 AND k.pending = 1 ORDER BY k.seq",
                )
                .map_err(sqlite("prepare the pending query"))?;
            let rows = stmt
                .query_map(params![sku, location], |r| r.get::<_, String>(0))
                .map_err(sqlite("read pending commands"))?;
            let mut out = Vec::new();
            for row in rows {
                let effects: Vec<Effect> = serde_json::from_str(
                    &row.map_err(sqlite("read a pending command"))?,
                )
                .map_err(|e| AgentError::Corrupt {
                    what: "a queued command's effects".into(),
                    source: e,
                })?;
                out.extend(
                    effects
                        .into_iter()
                        .filter(|e| e.sku == sku && e.location == location),
                );
            }
            Ok(out)
        })
    }

    /// Bytes the store takes on disk (database and WAL).
    pub fn disk_bytes(&self) -> u64 {
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let mut wal = self.path.as_os_str().to_owned();
        wal.push("-wal");
        size(&self.path) + size(Path::new(&wal))
    }
}

fn view_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ViewRow> {
    Ok(ViewRow {
        sku: r.get(0)?,
        location: r.get(1)?,
        on_hand: r.get(2)?,
        reserved: r.get(3)?,
        version: r.get::<_, i64>(4)?.try_into().unwrap_or(0),
        as_of_ms: r.get(5)?,
    })
}

/// Writes `row` unless the view already holds that key at a version as new.
pub(super) fn upsert_view(conn: &Connection, row: &ViewRow) -> Result<(), AgentError> {
    conn.execute(
        "INSERT INTO view (sku, location, on_hand, reserved, version, as_of_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (sku, location) DO UPDATE SET
             on_hand = excluded.on_hand, reserved = excluded.reserved,
             version = excluded.version, as_of_ms = excluded.as_of_ms
         WHERE excluded.version > view.version",
        params![
            row.sku,
            row.location,
            row.on_hand,
            row.reserved,
            i64::try_from(row.version).unwrap_or(i64::MAX),
            row.as_of_ms
        ],
    )
    .map_err(sqlite("update the view"))?;
    Ok(())
}

fn set(conn: &Connection, name: &str, value: &str) -> Result<(), AgentError> {
    conn.execute(
        "INSERT INTO settings (name, value) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        params![name, value],
    )
    .map_err(sqlite("store a setting"))?;
    Ok(())
}
