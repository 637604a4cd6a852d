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

use rusqlite::{Connection, OptionalExtension, params};
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

    /// Records `command` (or finds it recorded under its origin key), in one transaction.
    pub fn record(&self, command: NewCommand, now_ms: i64) -> Result<Recorded, AgentError> {
        self.with(|conn| {
            let tx = conn.transaction().map_err(sqlite("begin"))?;
            let existing = tx
                .query_row(
                    "SELECT seq, command_id, answer FROM commands WHERE origin_key = ?1",
                    params![command.origin_key],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)),
                )
                .optional()
                .map_err(sqlite("look up the origin key"))?;
            if let Some((seq, command_id, answer)) = existing {
                return Ok(Recorded {
                    seq,
                    command_id,
                    answer: json(&answer)?,
                    replayed: true,
                });
            }
            let command_id = uuid::Uuid::now_v7().to_string();
            tx.execute(
                "INSERT INTO commands (command_id, origin_key, path, body, effects, answer,
                     created_at_ms, state, next_attempt_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?7)",
                params![
                    command_id,
                    command.origin_key,
                    command.path,
                    command.body.to_string(),
                    serde_json::to_string(&command.effects).map_err(encode)?,
                    command.answer.to_string(),
                    now_ms,
                    PENDING,
                ],
            )
            .map_err(sqlite("queue the command"))?;
            let seq = tx.last_insert_rowid();
            if let Some(r) = &command.reservation {
                tx.execute(
                    "INSERT INTO reservations (id, lines, status, created_at_ms) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (id) DO UPDATE SET status = excluded.status",
                    params![
                        r.id,
                        serde_json::to_string(&r.lines).map_err(encode)?,
                        r.status,
                        now_ms
                    ],
                )
                .map_err(sqlite("record the reservation"))?;
            }
            for effect in &command.effects {
                tx.execute(
                    "INSERT OR IGNORE INTO command_keys (seq, sku, location, pending) VALUES (?1, ?2, ?3, 1)",
                    params![seq, effect.sku, effect.location],
                )
                .map_err(sqlite("index the command's keys"))?;
            }
            tx.commit().map_err(sqlite("commit the command"))?;
            Ok(Recorded {
                seq,
                command_id,
                answer: command.answer,
                replayed: false,
            })
        })
    }

    /// The answer recorded under `origin_key`, if any.
    pub fn answer_of(&self, origin_key: &str) -> Result<Option<serde_json::Value>, AgentError> {
        self.with(|conn| {
            conn.query_row(
                "SELECT answer FROM commands WHERE origin_key = ?1",
                params![origin_key],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map_err(sqlite("look up the origin key"))?
            .map(|a| json(&a))
            .transpose()
        })
    }

    /// A local reservation.
    pub fn reservation(&self, id: &str) -> Result<Option<LocalReservation>, AgentError> {
        self.with(|conn| {
            let row = conn
                .query_row(
                    "SELECT lines, status FROM reservations WHERE id = ?1",
                    params![id],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
                )
                .optional()
                .map_err(sqlite("read the reservation"))?;
            row.map(|(lines, status)| {
                Ok(LocalReservation {
                    id: id.to_string(),
                    lines: serde_json::from_str(&lines).map_err(|e| AgentError::Corrupt {
                        what: "a reservation's lines".into(),
                        source: e,
                    })?,
                    status,
                })
            })
            .transpose()
        })
    }

    /// Commands due at `now_ms` that lead every key they touch, oldest first, at most
    /// `limit`.
    pub fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<Queued>, AgentError> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT c.seq, c.command_id, c.path, c.body, c.attempts, c.created_at_ms
                     FROM commands c
                     WHERE c.state = 'pending' AND c.next_attempt_ms <= ?1
                       AND NOT EXISTS (
                         SELECT 1 FROM command_keys mine
                         JOIN command_keys earlier
                           ON earlier.sku = mine.sku AND earlier.location = mine.location
                          AND earlier.seq < mine.seq AND earlier.pending = 1
                         WHERE mine.seq = c.seq)
                     ORDER BY c.seq LIMIT ?2",
                )
                .map_err(sqlite("prepare the due query"))?;
            let rows = stmt
                .query_map(params![now_ms, limit as i64], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, u32>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                })
                .map_err(sqlite("read due commands"))?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, command_id, path, body, attempts, created_at_ms) =
                    row.map_err(sqlite("read a due command"))?;
                out.push(Queued {
                    seq,
                    command_id,
                    path,
                    body: json(&body)?,
                    attempts,
                    created_at_ms,
                });
            }
            Ok(out)
        })
    }

    /// When the next waiting command falls due, if any waits.
    pub fn next_due_ms(&self) -> Result<Option<i64>, AgentError> {
        self.with(|conn| {
            conn.query_row(
                "SELECT MIN(next_attempt_ms) FROM commands WHERE state = 'pending'",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map_err(sqlite("read the next due time"))
        })
    }

    fn settle(
        conn: &mut Connection,
        seq: i64,
        state: &str,
        region_answer: &serde_json::Value,
        now_ms: i64,
    ) -> Result<(), AgentError> {
        let tx = conn.transaction().map_err(sqlite("begin"))?;
        tx.execute(
            "UPDATE commands SET state = ?2, region_answer = ?3, settled_at_ms = ?4
             WHERE seq = ?1 AND state = 'pending'",
            params![seq, state, region_answer.to_string(), now_ms],
        )
        .map_err(sqlite("settle the command"))?;
        tx.execute(
            "UPDATE command_keys SET pending = 0 WHERE seq = ?1",
            params![seq],
        )
        .map_err(sqlite("release the command's keys"))?;
        tx.commit().map_err(sqlite("commit the settlement"))
    }

    /// The region applied the command (or had applied it: a replayed answer). `level`, when
    /// the answer carries a key's new level, moves the view forward at once.
    pub fn acknowledge(
        &self,
        seq: i64,
        region_answer: &serde_json::Value,
        level: Option<ViewRow>,
        now_ms: i64,
    ) -> Result<(), AgentError> {
        self.with(|conn| {
            Self::settle(conn, seq, ACKNOWLEDGED, region_answer, now_ms)?;
            if let Some(row) = level {
                upsert_view(conn, &row)?;
            }
            Ok(())
        })
    }

    /// The region refused the command for good: it leaves its keys' queues.
    pub fn quarantine(
        &self,
        seq: i64,
        problem: &serde_json::Value,
        now_ms: i64,
    ) -> Result<(), AgentError> {
        self.with(|conn| Self::settle(conn, seq, QUARANTINED, problem, now_ms))
    }

    /// The attempt failed in a way a retry may fix: try again at `next_ms`.
    pub fn retry_at(&self, seq: i64, next_ms: i64, error: &str) -> Result<(), AgentError> {
        self.with(|conn| {
            conn.execute(
                "UPDATE commands SET attempts = attempts + 1, next_attempt_ms = ?2, last_error = ?3
                 WHERE seq = ?1 AND state = 'pending'",
                params![seq, next_ms, error],
            )
            .map_err(sqlite("reschedule the command"))?;
            Ok(())
        })
    }

    /// Every waiting command due now (a region that came back, a staff "send now").
    pub fn retry_all_now(&self, now_ms: i64) -> Result<usize, AgentError> {
        self.with(|conn| {
            conn.execute(
                "UPDATE commands SET next_attempt_ms = ?1 WHERE state = 'pending' AND next_attempt_ms > ?1",
                params![now_ms],
            )
            .map_err(sqlite("make waiting commands due"))
        })
    }

    /// The quarantine, oldest first.
    pub fn quarantined(&self, limit: usize) -> Result<Vec<Quarantined>, AgentError> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT seq, command_id, path, body, region_answer, created_at_ms, settled_at_ms
                     FROM commands WHERE state = 'quarantined' ORDER BY seq LIMIT ?1",
                )
                .map_err(sqlite("prepare the quarantine query"))?;
            let rows = stmt
                .query_map(params![limit as i64], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, i64>(5)?,
                        r.get::<_, Option<i64>>(6)?,
                    ))
                })
                .map_err(sqlite("read the quarantine"))?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, command_id, path, body, problem, created_at_ms, at) =
                    row.map_err(sqlite("read a quarantined command"))?;
                out.push(Quarantined {
                    seq,
                    command_id,
                    path,
                    body: json(&body)?,
                    problem: problem.map(|p| json(&p)).transpose()?.unwrap_or_default(),
                    created_at_ms,
                    quarantined_at_ms: at.unwrap_or_default(),
                });
            }
            Ok(out)
        })
    }

    /// Sends a quarantined command again (after the cause was fixed at the region): it
    /// rejoins its keys' queues at its own position. False when it is not quarantined.
    pub fn requeue(&self, seq: i64, now_ms: i64) -> Result<bool, AgentError> {
        self.with(|conn| {
            let tx = conn.transaction().map_err(sqlite("begin"))?;
            let changed = tx
                .execute(
                    "UPDATE commands SET state = 'pending', attempts = 0, next_attempt_ms = ?2,
                         region_answer = NULL, settled_at_ms = NULL
                     WHERE seq = ?1 AND state = 'quarantined'",
                    params![seq, now_ms],
                )
                .map_err(sqlite("requeue the command"))?;
            if changed == 1 {
                tx.execute(
                    "UPDATE command_keys SET pending = 1 WHERE seq = ?1",
                    params![seq],
                )
                .map_err(sqlite("queue the command's keys"))?;
            }
            tx.commit().map_err(sqlite("commit the requeue"))?;
            Ok(changed == 1)
        })
    }

    /// Gives a quarantined command up for good (kept, marked dropped, for the audit).
    pub fn drop_quarantined(&self, seq: i64, now_ms: i64) -> Result<bool, AgentError> {
        self.with(|conn| {
            let changed = conn
                .execute(
                    "UPDATE commands SET state = ?2, settled_at_ms = ?3 WHERE seq = ?1 AND state = 'quarantined'",
                    params![seq, DROPPED, now_ms],
                )
                .map_err(sqlite("drop the command"))?;
            Ok(changed == 1)
        })
    }

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

    /// Queue counts.
    pub fn counts(&self) -> Result<QueueCounts, AgentError> {
        self.with(|conn| {
            let count = |state: &str| -> Result<u64, AgentError> {
                conn.query_row(
                    "SELECT COUNT(*) FROM commands WHERE state = ?1",
                    params![state],
                    |r| r.get::<_, u64>(0),
                )
                .map_err(sqlite("count commands"))
            };
            let oldest_pending_ms = conn
                .query_row(
                    "SELECT MIN(created_at_ms) FROM commands WHERE state = 'pending'",
                    [],
                    |r| r.get::<_, Option<i64>>(0),
                )
                .map_err(sqlite("read the oldest waiting command"))?;
            let last_acknowledged_seq = conn
                .query_row(
                    "SELECT MAX(seq) FROM commands WHERE state = 'acknowledged'",
                    [],
                    |r| r.get::<_, Option<i64>>(0),
                )
                .map_err(sqlite("read the last acknowledged command"))?;
            Ok(QueueCounts {
                pending: count(PENDING)?,
                quarantined: count(QUARANTINED)?,
                acknowledged: count(ACKNOWLEDGED)?,
                oldest_pending_ms,
                last_acknowledged_seq,
            })
        })
    }

    /// Removes acknowledged and dropped commands settled before `before_ms` (their origin
    /// keys with them: a POS retry after that long is a new sale), at most `limit`; returns
    /// how many.
    pub fn compact(&self, before_ms: i64, limit: usize) -> Result<usize, AgentError> {
        self.with(|conn| {
            let tx = conn.transaction().map_err(sqlite("begin"))?;
            tx.execute(
                "DELETE FROM command_keys WHERE seq IN (
                     SELECT seq FROM commands WHERE state IN ('acknowledged', 'dropped')
                       AND settled_at_ms < ?1 ORDER BY seq LIMIT ?2)",
                params![before_ms, limit as i64],
            )
            .map_err(sqlite("compact command keys"))?;
            let removed = tx
                .execute(
                    "DELETE FROM commands WHERE seq IN (
                         SELECT seq FROM commands WHERE state IN ('acknowledged', 'dropped')
                           AND settled_at_ms < ?1 ORDER BY seq LIMIT ?2)",
                    params![before_ms, limit as i64],
                )
                .map_err(sqlite("compact commands"))?;
            tx.commit().map_err(sqlite("commit the compaction"))?;
            Ok(removed)
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
fn upsert_view(conn: &Connection, row: &ViewRow) -> Result<(), AgentError> {
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

#[cfg(test)]
mod tests;
