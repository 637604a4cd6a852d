//! The command queue: recording (an origin key answered once), what is due in order per
//! key, settling (acknowledged, quarantined, retried), the quarantine and compaction.

use rusqlite::{Connection, OptionalExtension, params};

use super::{
    ACKNOWLEDGED, AgentStore, DROPPED, LocalReservation, NewCommand, PENDING, QUARANTINED,
    Quarantined, QueueCounts, Queued, Recorded, ViewRow, encode, json, sqlite, view::upsert_view,
};
use crate::agent::AgentError;

impl AgentStore {
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
            if command.remember_origin {
                let remembered = tx
                    .query_row(
                        "SELECT seq FROM remembered_origins WHERE origin_key = ?1",
                        params![command.origin_key],
                        |r| r.get::<_, i64>(0),
                    )
                    .optional()
                    .map_err(sqlite("look up a remembered origin key"))?;
                if let Some(seq) = remembered {
                    // Recorded, forwarded and compacted long ago.
                    return Ok(Recorded {
                        seq,
                        command_id: String::new(),
                        answer: serde_json::Value::Null,
                        replayed: true,
                    });
                }
            }
            let command_id = uuid::Uuid::now_v7().to_string();
            let (state, problem, settled_at_ms) = match &command.refused {
                Some(problem) => (QUARANTINED, Some(problem.to_string()), Some(now_ms)),
                None => (PENDING, None, None),
            };
            tx.execute(
                "INSERT INTO commands (command_id, origin_key, path, body, effects, answer,
                     created_at_ms, state, next_attempt_ms, region_answer, settled_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?7, ?9, ?10)",
                params![
                    command_id,
                    command.origin_key,
                    command.path,
                    command.body.to_string(),
                    serde_json::to_string(&command.effects).map_err(encode)?,
                    command.answer.to_string(),
                    now_ms,
                    state,
                    problem,
                    settled_at_ms,
                ],
            )
            .map_err(sqlite("queue the command"))?;
            let seq = tx.last_insert_rowid();
            if command.remember_origin {
                tx.execute(
                    "INSERT INTO remembered_origins (origin_key, seq) VALUES (?1, ?2)",
                    params![command.origin_key, seq],
                )
                .map_err(sqlite("remember the origin key"))?;
            }
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
                    "INSERT OR IGNORE INTO command_keys (seq, sku, location, pending) VALUES (?1, ?2, ?3, ?4)",
                    params![seq, effect.sku, effect.location, command.refused.is_none()],
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

    /// Remembers origin keys as seen without recording anything (rows the region already
    /// has): a later capture of them records nothing.
    pub fn remember_origins(&self, origin_keys: &[String]) -> Result<(), AgentError> {
        self.with(|conn| {
            let tx = conn.transaction().map_err(sqlite("begin"))?;
            for key in origin_keys {
                tx.execute(
                    "INSERT OR IGNORE INTO remembered_origins (origin_key, seq) VALUES (?1, 0)",
                    params![key],
                )
                .map_err(sqlite("remember an origin key"))?;
            }
            tx.commit().map_err(sqlite("commit the remembered keys"))
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
            let found: Option<(String, Option<String>)> = tx
                .query_row(
                    "SELECT command_id, region_answer FROM commands WHERE seq = ?1 AND state = 'quarantined'",
                    params![seq],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(sqlite("read the quarantined command"))?;
            let Some((command_id, problem)) = found else {
                return Ok(false);
            };
            let command_id = resent_key(&command_id, problem.as_deref());
            let changed = tx
                .execute(
                    "UPDATE commands SET state = 'pending', attempts = 0, next_attempt_ms = ?2,
                         region_answer = NULL, settled_at_ms = NULL, command_id = ?3
                     WHERE seq = ?1 AND state = 'quarantined'",
                    params![seq, now_ms, command_id],
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
}

/// The Idempotency-Key a command is sent under again after staff retry it from the
/// quarantine. A command the region refused was not applied, and the region keeps that
/// refusal under its key (a retry under it is answered the same refusal, even once staff
/// fixed the cause): it goes under a new key, `<id>.r<n>`. Only a command quarantined for
/// outliving the region's key lifetime keeps its key: whether it was applied is unknown,
/// and a new key would surely apply it again.
pub(super) fn resent_key(command_id: &str, problem: Option<&str>) -> String {
    let outlived = problem
        .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
        .is_some_and(|p| p["code"] == "outlived_idempotency_key");
    if outlived {
        return command_id.to_string();
    }
    let (base, resends) = match command_id.rsplit_once(".r") {
        Some((base, n)) => match n.parse::<u32>() {
            Ok(n) => (base, n),
            Err(_) => (command_id, 0),
        },
        None => (command_id, 0),
    };
    format!("{base}.r{}", resends + 1)
}
