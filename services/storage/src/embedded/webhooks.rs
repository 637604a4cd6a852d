//! The embedded webhook store: subscriptions, cursors, dead letters and subscription
//! events in `webhooks.db`, a file of its own so delivery bookkeeping never queues behind
//! (or in front of) the write side's group commits. Durable: a subscription and its cursor
//! exist nowhere else, and a cursor that went backwards after a power loss would only
//! redeliver (deliveries are at least once), never skip.

use std::path::Path;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use stockflow_domain::webhook::{Filter, SubscriptionState};

use super::sqlite::{LockedConnection, from_sql_u64, to_sql_u64};
use crate::error::Context;
use crate::ports::{Cursor, Subscription, SubscriptionEvent, WebhookDeadLetter, WebhookStore};
use crate::{Result, StoreError};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS subscriptions (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    types TEXT NOT NULL,
    filter TEXT NOT NULL,
    secret TEXT NOT NULL,
    state TEXT NOT NULL,
    consecutive_dead_letters INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS subscription_cursors (
    subscription_id TEXT NOT NULL,
    log TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    first_attempt_ms INTEGER,
    retry_at_ms INTEGER NOT NULL,
    last_error TEXT,
    PRIMARY KEY (subscription_id, log, partition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subscription_dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription_id TEXT NOT NULL,
    partition INTEGER NOT NULL,
    log_offset INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    failed_at_ms INTEGER NOT NULL,
    replay_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS subscription_dead_letters_by_sub
    ON subscription_dead_letters (subscription_id, id);
CREATE INDEX IF NOT EXISTS subscription_dead_letters_replay
    ON subscription_dead_letters (partition, replay_requested, id);
CREATE TABLE IF NOT EXISTS subscription_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    reason TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
"#;

const SUBSCRIPTION_COLUMNS: &str = "id, url, types, filter, secret, state, \
    consecutive_dead_letters, created_at_ms, updated_at_ms";
const LETTER_COLUMNS: &str = "id, subscription_id, partition, log_offset, event_id, \
    event_type, body, attempts, last_error, failed_at_ms, replay_requested";

/// The embedded webhook store (one connection: the traffic is a few rows per delivery).
pub struct SqliteWebhookStore {
    conn: LockedConnection,
}

impl SqliteWebhookStore {
    /// Opens `path`, creating the schema.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            conn: LockedConnection::open(path, SCHEMA)?,
        })
    }
}

fn corrupt(what: &'static str) -> impl Fn(serde_json::Error) -> rusqlite::Error {
    move |e| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            Box::new(WhatErr(what, e)),
        )
    }
}

#[derive(Debug)]
struct WhatErr(&'static str, serde_json::Error);
impl std::fmt::Display for WhatErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.0, self.1)
    }
}
impl std::error::Error for WhatErr {}

fn subscription_row(row: &Row<'_>) -> rusqlite::Result<Subscription> {
    let types: String = row.get(2)?;
    let filter: String = row.get(3)?;
    let state: String = row.get(5)?;
    Ok(Subscription {
        id: row.get(0)?,
        url: row.get(1)?,
        types: serde_json::from_str(&types).map_err(corrupt("stored types"))?,
        filter: serde_json::from_str::<Filter>(&filter).map_err(corrupt("stored filter"))?,
        secret: row.get(4)?,
        // An unknown state (a newer version's) is treated as disabled: never deliver on a
        // state we do not understand.
        state: SubscriptionState::parse(&state).unwrap_or(SubscriptionState::Disabled),
        consecutive_dead_letters: row.get(6)?,
        created_at_ms: row.get(7)?,
        updated_at_ms: row.get(8)?,
    })
}

fn letter_row(row: &Row<'_>) -> rusqlite::Result<WebhookDeadLetter> {
    Ok(WebhookDeadLetter {
        id: row.get(0)?,
        subscription_id: row.get(1)?,
        partition: row.get(2)?,
        offset: from_sql_u64(row.get(3)?),
        event_id: row.get(4)?,
        event_type: row.get(5)?,
        body: row.get(6)?,
        attempts: row.get(7)?,
        last_error: row.get(8)?,
        failed_at_ms: row.get(9)?,
        replay_requested: row.get::<_, i64>(10)? != 0,
    })
}

fn put_cursor(conn: &Connection, id: &str, log: &str, partition: u32, c: &Cursor) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO subscription_cursors
           (subscription_id, log, partition, next_offset, attempts, first_attempt_ms, retry_at_ms, last_error)
         SELECT ?1, ?8, ?2, ?3, ?4, ?5, ?6, ?7 WHERE EXISTS (SELECT 1 FROM subscriptions WHERE id = ?1)
         ON CONFLICT (subscription_id, log, partition) DO UPDATE SET
           next_offset = excluded.next_offset, attempts = excluded.attempts,
           first_attempt_ms = excluded.first_attempt_ms, retry_at_ms = excluded.retry_at_ms,
           last_error = excluded.last_error",
    )
    .and_then(|mut s| {
        s.execute(params![
            id,
            partition,
            to_sql_u64(c.next_offset),
            c.attempts,
            c.first_attempt_ms,
            c.retry_at_ms,
            c.last_error,
            log
        ])
    })
    .what("store a webhook cursor")?;
    Ok(())
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Invariant {
        what: "serialize a subscription",
        detail: e.to_string(),
    })
}

#[async_trait]
impl WebhookStore for SqliteWebhookStore {
    async fn create_subscription(&self, s: &Subscription) -> Result<()> {
        let (types, filter) = (to_json(&s.types)?, to_json(&s.filter)?);
        self.conn.with(|conn| {
            conn.execute(
                &format!("INSERT INTO subscriptions ({SUBSCRIPTION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
                params![s.id, s.url, types, filter, s.secret, s.state.as_str(), s.consecutive_dead_letters, s.created_at_ms, s.updated_at_ms],
            )
            .what("store a subscription")?;
            Ok(())
        })
    }

    async fn subscription(&self, id: &str) -> Result<Option<Subscription>> {
        self.conn.with(|conn| {
            conn.query_row(
                &format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = ?1"),
                [id],
                subscription_row,
            )
            .optional()
            .what("read a subscription")
        })
    }

    async fn subscriptions(&self) -> Result<Vec<Subscription>> {
        self.conn.with(|conn| {
            let mut s = conn
                .prepare_cached(&format!(
                    "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions ORDER BY created_at_ms, id"
                ))
                .what("list subscriptions")?;
            s.query_map([], subscription_row)
                .and_then(|rows| rows.collect())
                .what("list subscriptions")
        })
    }

    async fn delete_subscription(&self, id: &str) -> Result<bool> {
        self.conn.with(|conn| {
            let tx = conn.transaction().what("begin deleting a subscription")?;
            let n = tx
                .execute("DELETE FROM subscriptions WHERE id = ?1", [id])
                .what("delete a subscription")?;
            for table in [
                "subscription_cursors",
                "subscription_dead_letters",
                "subscription_events",
            ] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE subscription_id = ?1"),
                    [id],
                )
                .what("delete a subscription's state")?;
            }
            tx.commit().what("commit deleting a subscription")?;
            Ok(n > 0)
        })
    }

    async fn enable(&self, id: &str, now_ms: i64) -> Result<bool> {
        self.conn.with(|conn| {
            let tx = conn.transaction().what("begin enabling a subscription")?;
            let n = tx
                .execute(
                    "UPDATE subscriptions SET state = 'enabled', consecutive_dead_letters = 0,
                       updated_at_ms = ?2 WHERE id = ?1",
                    params![id, now_ms],
                )
                .what("enable a subscription")?;
            // A pending event gets a fresh window: its old one ran out while disabled.
            tx.execute(
                "UPDATE subscription_cursors SET attempts = 0, first_attempt_ms = NULL,
                   retry_at_ms = 0, last_error = NULL WHERE subscription_id = ?1",
                [id],
            )
            .what("restart a subscription's retries")?;
            tx.commit().what("commit enabling a subscription")?;
            Ok(n > 0)
        })
    }

    async fn disable(&self, id: &str, event_type: &str, reason: &str, now_ms: i64) -> Result<bool> {
        self.conn.with(|conn| {
            let tx = conn.transaction().what("begin disabling a subscription")?;
            let n = tx
                .execute(
                    "UPDATE subscriptions SET state = 'disabled', updated_at_ms = ?2
                     WHERE id = ?1 AND state = 'enabled'",
                    params![id, now_ms],
                )
                .what("disable a subscription")?;
            if n > 0 {
                tx.execute(
                    "INSERT INTO subscription_events (subscription_id, event_type, reason, at_ms)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![id, event_type, reason, now_ms],
                )
                .what("record a subscription event")?;
            }
            tx.commit().what("commit disabling a subscription")?;
            Ok(n > 0)
        })
    }

    async fn subscription_events(&self, id: &str) -> Result<Vec<SubscriptionEvent>> {
        self.conn.with(|conn| {
            let mut s = conn
                .prepare_cached(
                    "SELECT id, subscription_id, event_type, reason, at_ms FROM subscription_events
                     WHERE subscription_id = ?1 ORDER BY id DESC LIMIT 100",
                )
                .what("list subscription events")?;
            s.query_map([id], |r| {
                Ok(SubscriptionEvent {
                    id: r.get(0)?,
                    subscription_id: r.get(1)?,
                    event_type: r.get(2)?,
                    reason: r.get(3)?,
                    at_ms: r.get(4)?,
                })
            })
            .and_then(|rows| rows.collect())
            .what("list subscription events")
        })
    }

    async fn cursor(&self, id: &str, log: &str, partition: u32) -> Result<Option<Cursor>> {
        self.conn.with(|conn| {
            conn.prepare_cached(
                "SELECT next_offset, attempts, first_attempt_ms, retry_at_ms, last_error
                 FROM subscription_cursors
                 WHERE subscription_id = ?1 AND log = ?3 AND partition = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![id, partition, log], |r| {
                    Ok(Cursor {
                        next_offset: from_sql_u64(r.get(0)?),
                        attempts: r.get(1)?,
                        first_attempt_ms: r.get(2)?,
                        retry_at_ms: r.get(3)?,
                        last_error: r.get(4)?,
                    })
                })
                .optional()
            })
            .what("read a webhook cursor")
        })
    }

    async fn save_cursor(
        &self,
        id: &str,
        log: &str,
        partition: u32,
        cursor: &Cursor,
        delivered: bool,
    ) -> Result<()> {
        self.conn.with(|conn| {
            let tx = conn.transaction().what("begin storing a webhook cursor")?;
            put_cursor(&tx, id, log, partition, cursor)?;
            if delivered {
                tx.execute(
                    "UPDATE subscriptions SET consecutive_dead_letters = 0
                     WHERE id = ?1 AND consecutive_dead_letters != 0",
                    [id],
                )
                .what("clear a subscription's dead-letter count")?;
            }
            tx.commit().what("commit a webhook cursor")
        })
    }

    async fn dead_letter(&self, l: &WebhookDeadLetter, log: &str, cursor: &Cursor) -> Result<u32> {
        self.conn.with(|conn| {
            let tx = conn.transaction().what("begin dead-lettering a delivery")?;
            let count: Option<u32> = tx
                .query_row(
                    "UPDATE subscriptions SET consecutive_dead_letters = consecutive_dead_letters + 1
                     WHERE id = ?1 RETURNING consecutive_dead_letters",
                    [&l.subscription_id],
                    |r| r.get(0),
                )
                .optional()
                .what("count a subscription's dead letters")?;
            let Some(count) = count else {
                return Ok(0);
            };
            tx.execute(
                "INSERT INTO subscription_dead_letters (subscription_id, partition, log_offset,
                   event_id, event_type, body, attempts, last_error, failed_at_ms, replay_requested)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0)",
                params![
                    l.subscription_id,
                    l.partition,
                    to_sql_u64(l.offset),
                    l.event_id,
                    l.event_type,
                    l.body,
                    l.attempts,
                    l.last_error,
                    l.failed_at_ms
                ],
            )
            .what("store a webhook dead letter")?;
            put_cursor(&tx, &l.subscription_id, log, l.partition, cursor)?;
            tx.commit().what("commit a webhook dead letter")?;
            Ok(count)
        })
    }

    async fn dead_letters(&self, id: &str) -> Result<Vec<WebhookDeadLetter>> {
        self.conn.with(|conn| {
            let mut s = conn
                .prepare_cached(&format!(
                    "SELECT {LETTER_COLUMNS} FROM subscription_dead_letters
                     WHERE subscription_id = ?1 ORDER BY id LIMIT 1000"
                ))
                .what("list webhook dead letters")?;
            s.query_map([id], letter_row)
                .and_then(|rows| rows.collect())
                .what("list webhook dead letters")
        })
    }

    async fn request_replay(&self, id: &str) -> Result<u64> {
        self.conn.with(|conn| {
            let n = conn
                .execute(
                    "UPDATE subscription_dead_letters SET replay_requested = 1 WHERE subscription_id = ?1",
                    [id],
                )
                .what("ask for a replay")?;
            Ok(n as u64)
        })
    }

    async fn replays(&self, partition: u32, limit: usize) -> Result<Vec<WebhookDeadLetter>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.conn.with(|conn| {
            let mut s = conn
                .prepare_cached(&format!(
                    "SELECT {LETTER_COLUMNS} FROM subscription_dead_letters
                     WHERE partition = ?1 AND replay_requested = 1 ORDER BY id LIMIT ?2"
                ))
                .what("list webhook replays")?;
            s.query_map(params![partition, limit], letter_row)
                .and_then(|rows| rows.collect())
                .what("list webhook replays")
        })
    }

    async fn replayed(
        &self,
        letter_id: i64,
        outcome: std::result::Result<(), String>,
        now_ms: i64,
    ) -> Result<()> {
        self.conn.with(|conn| {
            match outcome {
                Ok(()) => conn
                    .execute("DELETE FROM subscription_dead_letters WHERE id = ?1", [letter_id])
                    .what("remove a replayed dead letter")?,
                Err(error) => conn
                    .execute(
                        "UPDATE subscription_dead_letters SET replay_requested = 0,
                           attempts = attempts + 1, last_error = ?2, failed_at_ms = ?3 WHERE id = ?1",
                        params![letter_id, error, now_ms],
                    )
                    .what("record a failed replay")?,
            };
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_webhook_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::SqliteWebhookStore::open(&dir.path().join("webhooks.db")).unwrap();
        crate::contract::webhooks::run(&store).await;
    }
}
