//! The write database's schema, and the statements that name a reservation status. The
//! status is spelled by the domain ([`ReservationStatus::as_str`]) and written into the
//! SQL once, at start-up: SQLite uses a partial index only for a query whose `WHERE`
//! repeats the index's own literal.

use std::sync::LazyLock;

use stockflow_domain::ReservationStatus;

/// Statements built with the domain's spelling of the active status.
pub(super) struct Sql {
    /// Every table and index, created if missing.
    pub schema: String,
    /// Active reservations due by `?1`, soonest first, at most `?2` (the index is the timer).
    pub due: String,
    /// The soonest deadline after `?1` of an active reservation.
    pub next_deadline: String,
    /// Final reservations that became final before `?1`, oldest first, at most `?2`.
    pub purge_final: String,
    /// How many final reservations are kept.
    pub count_final: String,
    /// Active reservations with a line at `(?1, ?2)`, oldest first (read only when a
    /// recorded fact needs them: it scans the active reservations).
    pub holders: String,
}

/// Brings a write database made by an earlier version to this schema. Version 1's stock
/// table refused on-hand below zero or below reserved (a recorded sale may leave both, and a
/// backorder the second) and had no column for the other states: it is rebuilt once, in
/// one transaction, its rows copied with no extras (which read as zeros).
pub(super) fn migrate(conn: &rusqlite::Connection) -> crate::Result<()> {
    use crate::error::Context;
    let sql: String = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'stock'",
            [],
            |r| r.get(0),
        )
        .what("read the stock table's definition")?;
    if !sql.contains("CHECK") && sql.contains("extras") {
        return Ok(());
    }
    conn.execute_batch(
        "BEGIN IMMEDIATE;
         CREATE TABLE stock_v2 (
             sku TEXT NOT NULL,
             location TEXT NOT NULL,
             region TEXT NOT NULL,
             on_hand INTEGER NOT NULL,
             reserved INTEGER NOT NULL,
             version INTEGER NOT NULL,
             extras TEXT,
             PRIMARY KEY (sku, location)
         ) WITHOUT ROWID;
         INSERT INTO stock_v2 (sku, location, region, on_hand, reserved, version)
             SELECT sku, location, region, on_hand, reserved, version FROM stock;
         DROP TABLE stock;
         ALTER TABLE stock_v2 RENAME TO stock;
         COMMIT;",
    )
    .what("migrate the stock table")?;
    tracing::info!("write database migrated: stock rows keep every quantity state");
    Ok(())
}

/// The statements, built once.
pub(super) static SQL: LazyLock<Sql> = LazyLock::new(|| {
    let active = ReservationStatus::Active.as_str();
    Sql {
        schema: format!(
            r#"
CREATE TABLE IF NOT EXISTS locations (
    id TEXT PRIMARY KEY,
    region TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS channels (
    id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bundles (
    id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS skus (
    sku TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    attributes TEXT NOT NULL,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS stock (
    sku TEXT NOT NULL,
    location TEXT NOT NULL,
    region TEXT NOT NULL,
    on_hand INTEGER NOT NULL,
    reserved INTEGER NOT NULL,
    version INTEGER NOT NULL,
    extras TEXT,
    PRIMARY KEY (sku, location)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sku_policies (
    sku TEXT PRIMARY KEY,
    settings TEXT NOT NULL,
    version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS transfers (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    body TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    reference TEXT,
    lines TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS reservations_active_by_expiry
    ON reservations (expires_at_ms) WHERE status = '{active}';
CREATE INDEX IF NOT EXISTS reservations_final_by_age
    ON reservations (updated_at_ms) WHERE status != '{active}';
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    result TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_by_age ON idempotency (created_at_ms);
"#
        ),
        due: format!(
            "SELECT id, expires_at_ms FROM reservations WHERE status = '{active}' AND expires_at_ms <= ?1 ORDER BY expires_at_ms LIMIT ?2"
        ),
        next_deadline: format!(
            "SELECT MIN(expires_at_ms) FROM reservations WHERE status = '{active}' AND expires_at_ms > ?1"
        ),
        purge_final: format!(
            "DELETE FROM reservations WHERE id IN (
                 SELECT id FROM reservations WHERE status != '{active}' AND updated_at_ms < ?1
                 ORDER BY updated_at_ms LIMIT ?2)"
        ),
        count_final: format!("SELECT COUNT(*) FROM reservations WHERE status != '{active}'"),
        holders: format!(
            "SELECT r.id FROM reservations r, json_each(r.lines) j
             WHERE r.status = '{active}' AND json_extract(j.value, '$.sku') = ?1
                 AND json_extract(j.value, '$.location') = ?2
             ORDER BY r.created_at_ms, r.id"
        ),
    }
});
