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
    on_hand INTEGER NOT NULL CHECK (on_hand >= 0),
    reserved INTEGER NOT NULL CHECK (reserved >= 0 AND reserved <= on_hand),
    version INTEGER NOT NULL,
    PRIMARY KEY (sku, location)
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
    }
});
