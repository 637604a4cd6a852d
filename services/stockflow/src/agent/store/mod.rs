//! The agent's own SQLite file: every command the POS sends, committed (WAL,
//! `synchronous=FULL`) before the POS gets its answer, queued until the region
//! acknowledges it; the region's view of the store's stock with the change feed's cursor
//! in the same transaction; and the quarantine of commands the region refuses for good.
//!
//! Ordering: a command is sent only when no command with a lower `seq` waits on any of its
//! keys (`(sku, location)`), so one key's commands reach the region in the order the POS
//! made them, while a key whose head waits (backoff, a slow answer) never holds up others.
//! A quarantined command leaves its key's queue: what came after it flows.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use super::AgentError;

/// How a command changes one key, for the local read view until the region has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effect {
    /// SKU.
    pub sku: String,
    /// Location.
    pub location: String,
    /// Added to on hand.
    #[serde(default)]
    pub on_hand: i64,
    /// Added to reserved.
    #[serde(default)]
    pub reserved: i64,
    /// A count: on hand becomes this (before `on_hand` is added).
    #[serde(default)]
    pub set_on_hand: Option<i64>,
}

/// A command to record.
#[derive(Debug, Clone)]
pub struct NewCommand {
    /// The POS's Idempotency-Key (a retry of it gets the first answer), or a capture's
    /// transaction id.
    pub origin_key: String,
    /// `POST` path at the region.
    pub path: String,
    /// JSON body forwarded to the region.
    pub body: serde_json::Value,
    /// The keys it changes, in any order: it is ordered behind every earlier command on any
    /// of them.
    pub effects: Vec<Effect>,
    /// The answer the POS gets (computed by the caller from the view with this command).
    pub answer: serde_json::Value,
    /// Whether this is a sale (or return): still accepted when the disk is nearly full.
    pub essential: bool,
    /// The local reservation this command creates or settles.
    pub reservation: Option<LocalReservation>,
    /// A captured row's origin key is remembered after the command is compacted: a
    /// capture rebuilt from the POS table re-reads every row, and must find each again.
    pub remember_origin: bool,
    /// Set when the agent itself refuses the command (a captured row it cannot read): it
    /// is recorded straight into the quarantine with this problem, for staff to see.
    pub refused: Option<serde_json::Value>,
}

/// A click-and-collect reservation as the agent holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalReservation {
    /// Its id (the region's too).
    pub id: String,
    /// `(sku, location, qty)` lines.
    pub lines: Vec<(String, String, i64)>,
    /// `active`, `confirmed` or `released`.
    pub status: String,
}

/// What recording did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// Position in the queue.
    pub seq: i64,
    /// The Idempotency-Key the region gets on every attempt.
    pub command_id: String,
    /// The POS's answer (the stored one for a replay).
    pub answer: serde_json::Value,
    /// True when `origin_key` had been recorded before: nothing new was queued.
    pub replayed: bool,
}

/// A queued command due to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// Position.
    pub seq: i64,
    /// Its Idempotency-Key at the region.
    pub command_id: String,
    /// Region path.
    pub path: String,
    /// Body.
    pub body: serde_json::Value,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the POS made it, Unix ms.
    pub created_at_ms: i64,
}

/// A command the region refused for good, kept for staff to fix and resend or drop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Quarantined {
    /// Position.
    pub seq: i64,
    /// Its Idempotency-Key at the region.
    pub command_id: String,
    /// Region path.
    pub path: String,
    /// Body.
    pub body: serde_json::Value,
    /// The region's problem document.
    pub problem: serde_json::Value,
    /// When the POS made it, Unix ms.
    pub created_at_ms: i64,
    /// When it was quarantined, Unix ms.
    pub quarantined_at_ms: i64,
}

/// One key as the region last reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewRow {
    /// SKU.
    pub sku: String,
    /// Location.
    pub location: String,
    /// On hand at the region.
    pub on_hand: i64,
    /// Reserved at the region.
    pub reserved: i64,
    /// The region's version of the key.
    pub version: u64,
    /// When the change happened at the region, Unix ms.
    pub as_of_ms: i64,
}

/// Queue counts for the status page and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueCounts {
    /// Waiting to be sent (or resent).
    pub pending: u64,
    /// Refused for good, waiting for staff.
    pub quarantined: u64,
    /// Acknowledged by the region and not yet compacted.
    pub acknowledged: u64,
    /// When the oldest waiting command was made, Unix ms.
    pub oldest_pending_ms: Option<i64>,
    /// The highest `seq` the region acknowledged.
    pub last_acknowledged_seq: Option<i64>,
}

/// Command states.
const PENDING: &str = "pending";
const ACKNOWLEDGED: &str = "acknowledged";
const QUARANTINED: &str = "quarantined";
const DROPPED: &str = "dropped";

/// The agent's store; cheap to clone.
#[derive(Clone)]
pub struct AgentStore {
    conn: Arc<Mutex<Connection>>,
    path: std::path::PathBuf,
}

impl std::fmt::Debug for AgentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS commands (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    command_id TEXT NOT NULL UNIQUE,
    origin_key TEXT NOT NULL UNIQUE,
    path TEXT NOT NULL,
    body TEXT NOT NULL,
    effects TEXT NOT NULL,
    answer TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_error TEXT,
    region_answer TEXT,
    settled_at_ms INTEGER
);
CREATE INDEX IF NOT EXISTS commands_by_state ON commands(state, seq);
CREATE TABLE IF NOT EXISTS command_keys (
    seq INTEGER NOT NULL,
    sku TEXT NOT NULL,
    location TEXT NOT NULL,
    pending INTEGER NOT NULL,
    PRIMARY KEY (sku, location, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS command_keys_by_seq ON command_keys(seq);
CREATE TABLE IF NOT EXISTS view (
    sku TEXT NOT NULL,
    location TEXT NOT NULL,
    on_hand INTEGER NOT NULL,
    reserved INTEGER NOT NULL,
    version INTEGER NOT NULL,
    as_of_ms INTEGER NOT NULL,
    PRIMARY KEY (sku, location)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT PRIMARY KEY,
    lines TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS remembered_origins (
    origin_key TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
";

impl AgentStore {
    /// Opens (creating) `dir/agent.db`.
    pub fn open(dir: &Path) -> Result<Self, AgentError> {
        std::fs::create_dir_all(dir).map_err(|source| AgentError::Io {
            what: format!("create {}", dir.display()),
            source,
        })?;
        let path = dir.join("agent.db");
        let conn = Connection::open(&path).map_err(sqlite("open the agent store"))?;
        // Every answer to the POS follows a commit that survives a power cut.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sqlite("set WAL"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sqlite("set synchronous=FULL"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sqlite("set the busy timeout"))?;
        conn.execute_batch(SCHEMA)
            .map_err(sqlite("create the schema"))?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    /// The database file (its size bounds the queue).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, AgentError>,
    ) -> Result<T, AgentError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn)
    }
}

fn sqlite(what: &'static str) -> impl Fn(rusqlite::Error) -> AgentError {
    move |source| AgentError::Sqlite { what, source }
}

fn encode(source: serde_json::Error) -> AgentError {
    AgentError::Corrupt {
        what: "a command to store".into(),
        source,
    }
}

fn json(text: &str) -> Result<serde_json::Value, AgentError> {
    serde_json::from_str(text).map_err(|source| AgentError::Corrupt {
        what: "a stored document".into(),
        source,
    })
}

mod queue;
mod view;

#[cfg(test)]
mod tests;
