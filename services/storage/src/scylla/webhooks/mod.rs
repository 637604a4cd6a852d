//! Webhook subscriptions on ScyllaDB (schema version 15), so the `webhooks` role runs
//! against a region's keyspace as the embedded store runs it against `webhooks.db`.
//!
//! - The subscription row is changed only by conditional writes: its state and its
//!   dead-letter count are read-modify-writes that the workers of several partitions make
//!   at once, and Paxos keeps each change whole. A delivery reads the count first and
//!   writes only when there is one to clear, so a healthy subscription costs no Paxos
//!   round per event.
//! - A cursor is written plainly: one worker holds a partition's lease.
//! - A dead letter and the cursor past it are one logged batch (both land, or neither);
//!   its count is raised after, so a crash between the two delays a disabling by one dead
//!   letter rather than hastening it.
//! - Dead letters, events and replays are keyed by ids that grow with time (milliseconds
//!   and random low bits), inserted `IF NOT EXISTS` so two never share one.

mod rows;
mod statements;

use std::sync::Arc;

use async_trait::async_trait;
use scylla::client::session::Session;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;

use super::cql::errors::cql;
use super::cql::query;
use super::cql::values::{bigint, int};
use crate::ports::{Cursor, Subscription, SubscriptionEvent, WebhookDeadLetter, WebhookStore};
use crate::{Result, StoreError};
use rows::{
    CursorRow, CursorWrite, EventRow, LetterRow, LetterWrite, LocationRow, QueuedRow,
    SubscriptionRow, cursor, json, letter, new_id, subscription,
};
use statements::Statements;

/// Attempts at a read-modify-write of a subscription row that other workers change too.
const ATTEMPTS: usize = 20;

/// [`WebhookStore`] over a ScyllaDB keyspace.
pub struct ScyllaWebhookStore {
    session: Arc<Session>,
    st: Statements,
}

impl ScyllaWebhookStore {
    /// Prepares the statements.
    pub async fn new(session: Arc<Session>, keyspace: &str) -> Result<Self> {
        let st = Statements::prepare(&session, keyspace).await?;
        Ok(Self { session, st })
    }

    async fn lwt(
        &self,
        what: &'static str,
        st: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<bool> {
        Ok(query::lwt(&self.session, what, st, values).await?.applied)
    }

    /// The subscription's dead-letter count (`None`: no subscription). A plain read: a
    /// change it misses is one still being made, and the conditional write that follows a
    /// read (if any) fails on it and reads again.
    async fn count(&self, id: &str) -> Result<Option<i32>> {
        let row: Option<SubscriptionRow> =
            query::first(&self.session, "read a subscription", &self.st.get, (id,)).await?;
        Ok(row.map(|r| r.consecutive_dead_letters.unwrap_or(0)))
    }

    /// Sets the dead-letter count to what `next` makes of it; answers the new count (`None`:
    /// no subscription).
    async fn change_count(&self, id: &str, next: impl Fn(i32) -> i32) -> Result<Option<i32>> {
        for _ in 0..ATTEMPTS {
            let Some(current) = self.count(id).await? else {
                return Ok(None);
            };
            let wanted = next(current);
            if wanted == current {
                return Ok(Some(current));
            }
            let set = (wanted, id, current);
            if self
                .lwt("count dead letters", &self.st.set_count, set)
                .await?
            {
                return Ok(Some(wanted));
            }
        }
        Err(StoreError::Contention {
            on: format!("the dead-letter count of {id}"),
        })
    }

    fn cursor_write<'a>(
        id: &'a str,
        log: &'a str,
        partition: u32,
        c: &'a Cursor,
    ) -> Result<CursorWrite<'a>> {
        Ok(CursorWrite {
            subscription_id: id,
            log,
            log_partition: int("a cursor's partition", partition)?,
            next_offset: bigint("a cursor's offset", c.next_offset)?,
            attempts: int("a cursor's attempts", c.attempts)?,
            first_attempt_ms: c.first_attempt_ms,
            retry_at_ms: c.retry_at_ms,
            last_error: c.last_error.as_deref(),
        })
    }

    /// Takes dead letter `id` off the replay queue of partition `at`.
    async fn unqueue(&self, at: i32, id: i64) -> Result<()> {
        query::exec(
            &self.session,
            "unqueue a replay",
            &self.st.dequeue,
            (at, id),
        )
        .await
    }

    /// Removes dead letter `id` from the id index.
    async fn unindex(&self, id: i64) -> Result<()> {
        let st = &self.st.unindex_letter;
        query::exec(&self.session, "unindex a dead letter", st, (id,)).await
    }
}

#[async_trait]
impl WebhookStore for ScyllaWebhookStore {
    async fn create_subscription(&self, s: &Subscription) -> Result<()> {
        let values = (
            s.id.as_str(),
            s.url.as_str(),
            json(&s.types)?,
            json(&s.filter)?,
            s.secret.as_str(),
            s.state.as_str(),
            int("a dead-letter count", s.consecutive_dead_letters)?,
            s.created_at_ms,
            s.updated_at_ms,
        );
        if self
            .lwt("store a subscription", &self.st.create, values)
            .await?
        {
            return Ok(());
        }
        Err(StoreError::Invariant {
            what: "store a subscription",
            detail: format!("{} exists already", s.id),
        })
    }

    async fn subscription(&self, id: &str) -> Result<Option<Subscription>> {
        let row: Option<SubscriptionRow> =
            query::first(&self.session, "read a subscription", &self.st.get, (id,)).await?;
        row.map(subscription).transpose()
    }

    async fn subscriptions(&self) -> Result<Vec<Subscription>> {
        let rows: Vec<SubscriptionRow> =
            query::scan(&self.session, "list subscriptions", &self.st.all).await?;
        let mut all = rows
            .into_iter()
            .map(subscription)
            .collect::<Result<Vec<_>>>()?;
        all.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        Ok(all)
    }

    async fn delete_subscription(&self, id: &str) -> Result<bool> {
        let letters = self.dead_letters(id).await?;
        let deleted = self
            .lwt("delete a subscription", &self.st.delete, (id,))
            .await?;
        for st in &self.st.drop_state {
            query::exec(&self.session, "delete a subscription's state", st, (id,)).await?;
        }
        for l in letters {
            self.unqueue(int("a dead letter's partition", l.partition)?, l.id)
                .await?;
            self.unindex(l.id).await?;
        }
        Ok(deleted)
    }

    async fn enable(&self, id: &str, now_ms: i64) -> Result<bool> {
        if !self
            .lwt("enable a subscription", &self.st.enable, (now_ms, id))
            .await?
        {
            return Ok(false);
        }
        // A pending event gets a fresh window: its old one ran out while disabled.
        let rows: Vec<CursorRow> =
            query::rows(&self.session, "read cursors", &self.st.cursors, (id,)).await?;
        for row in rows {
            let (log, partition) = (row.log.clone(), row.log_partition);
            let fresh = Cursor {
                next_offset: cursor(row).next_offset,
                ..Cursor::default()
            };
            let partition = u32::try_from(partition).unwrap_or(0);
            let write = Self::cursor_write(id, &log, partition, &fresh)?;
            query::exec(&self.session, "restart retries", &self.st.put_cursor, write).await?;
        }
        Ok(true)
    }

    async fn disable(&self, id: &str, event_type: &str, reason: &str, now_ms: i64) -> Result<bool> {
        if !self
            .lwt("disable a subscription", &self.st.disable, (now_ms, id))
            .await?
        {
            return Ok(false);
        }
        let values = (id, new_id(), event_type, reason, now_ms);
        query::exec(
            &self.session,
            "record a subscription event",
            &self.st.insert_event,
            values,
        )
        .await?;
        Ok(true)
    }

    async fn subscription_events(&self, id: &str) -> Result<Vec<SubscriptionEvent>> {
        let rows: Vec<EventRow> = query::rows(
            &self.session,
            "list subscription events",
            &self.st.events,
            (id,),
        )
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| SubscriptionEvent {
                id: r.id,
                subscription_id: id.to_string(),
                event_type: r.event_type.unwrap_or_default(),
                reason: r.reason.unwrap_or_default(),
                at_ms: r.at_ms.unwrap_or(0),
            })
            .collect())
    }

    async fn cursor(&self, id: &str, log: &str, partition: u32) -> Result<Option<Cursor>> {
        let at = int("a cursor's partition", partition)?;
        let row: Option<CursorRow> = query::first(
            &self.session,
            "read a webhook cursor",
            &self.st.cursor,
            (id, log, at),
        )
        .await?;
        Ok(row.map(cursor))
    }

    async fn save_cursor(
        &self,
        id: &str,
        log: &str,
        partition: u32,
        c: &Cursor,
        delivered: bool,
    ) -> Result<()> {
        // One plain read either way; a success clears a count only where there is one.
        let count = self.count(id).await?;
        let Some(count) = count else {
            return Ok(());
        };
        let write = Self::cursor_write(id, log, partition, c)?;
        query::exec(
            &self.session,
            "store a webhook cursor",
            &self.st.put_cursor,
            write,
        )
        .await?;
        if delivered && count != 0 {
            self.change_count(id, |_| 0).await?;
        }
        Ok(())
    }

    async fn dead_letter(&self, l: &WebhookDeadLetter, log: &str, c: &Cursor) -> Result<u32> {
        if self.count(&l.subscription_id).await?.is_none() {
            return Ok(0);
        }
        let partition = int("a dead letter's partition", l.partition)?;
        let id = loop {
            let id = new_id();
            let values = (id, l.subscription_id.as_str(), partition);
            if self
                .lwt("index a dead letter", &self.st.index_letter, values)
                .await?
            {
                break id;
            }
        };
        let mut batch = Batch::new(BatchType::Logged);
        batch.append_statement(self.st.insert_letter.clone());
        batch.append_statement(self.st.put_cursor.clone());
        let letter = LetterWrite {
            subscription_id: &l.subscription_id,
            id,
            log_partition: partition,
            log_offset: bigint("a dead letter's offset", l.offset)?,
            event_id: &l.event_id,
            event_type: &l.event_type,
            body: &l.body,
            attempts: int("a dead letter's attempts", l.attempts)?,
            last_error: &l.last_error,
            failed_at_ms: l.failed_at_ms,
        };
        let cursor = Self::cursor_write(&l.subscription_id, log, l.partition, c)?;
        self.session
            .batch(&batch, (letter, cursor))
            .await
            .map_err(cql("store a webhook dead letter"))?;
        let count = self.change_count(&l.subscription_id, |n| n + 1).await?;
        Ok(count.map_or(0, |n| u32::try_from(n).unwrap_or(0)))
    }

    async fn dead_letters(&self, id: &str) -> Result<Vec<WebhookDeadLetter>> {
        let rows: Vec<LetterRow> = query::rows(
            &self.session,
            "list webhook dead letters",
            &self.st.letters,
            (id,),
        )
        .await?;
        Ok(rows.into_iter().map(letter).collect())
    }

    async fn request_replay(&self, id: &str) -> Result<u64> {
        let letters = self.dead_letters(id).await?;
        for l in &letters {
            let at = int("a dead letter's partition", l.partition)?;
            query::exec(
                &self.session,
                "ask for a replay",
                &self.st.request_replay,
                (id, l.id),
            )
            .await?;
            query::exec(
                &self.session,
                "queue a replay",
                &self.st.queue_replay,
                (at, l.id, id),
            )
            .await?;
        }
        Ok(letters.len() as u64)
    }

    async fn replays(&self, partition: u32, limit: usize) -> Result<Vec<WebhookDeadLetter>> {
        let at = int("a replay's partition", partition)?;
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let queued: Vec<QueuedRow> = query::rows(
            &self.session,
            "list webhook replays",
            &self.st.queued,
            (at, limit),
        )
        .await?;
        let mut out = Vec::new();
        for q in queued {
            let row: Option<LetterRow> = query::first(
                &self.session,
                "read a dead letter",
                &self.st.letter,
                (q.subscription_id.as_str(), q.id),
            )
            .await?;
            match row.map(letter) {
                Some(l) if l.replay_requested => out.push(l),
                // Gone, or already answered: the queue entry is stale.
                _ => self.unqueue(at, q.id).await?,
            }
        }
        Ok(out)
    }

    async fn replayed(
        &self,
        letter_id: i64,
        outcome: std::result::Result<(), String>,
        now_ms: i64,
    ) -> Result<()> {
        let location: Option<LocationRow> = query::first(
            &self.session,
            "find a dead letter",
            &self.st.letter_location,
            (letter_id,),
        )
        .await?;
        let Some(LocationRow {
            subscription_id: sub,
            log_partition: at,
        }) = location
        else {
            return Ok(());
        };
        let sub = sub.as_str();
        match outcome {
            Ok(()) => {
                query::exec(
                    &self.session,
                    "remove a dead letter",
                    &self.st.drop_letter,
                    (sub, letter_id),
                )
                .await?;
                self.unindex(letter_id).await?;
            }
            Err(error) => {
                let row: Option<LetterRow> = query::first(
                    &self.session,
                    "read a dead letter",
                    &self.st.letter,
                    (sub, letter_id),
                )
                .await?;
                let attempts = row.and_then(|r| r.attempts).unwrap_or(0).saturating_add(1);
                let values = (attempts, error.as_str(), now_ms, sub, letter_id);
                query::exec(
                    &self.session,
                    "record a failed replay",
                    &self.st.failed_replay,
                    values,
                )
                .await?;
            }
        }
        self.unqueue(at, letter_id).await
    }
}
