//! The webhook store's prepared statements.

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use crate::Result;
use crate::scylla::cql::query;

/// Every statement of the webhook store.
pub(super) struct Statements {
    pub create: PreparedStatement,
    pub get: PreparedStatement,
    pub all: PreparedStatement,
    pub delete: PreparedStatement,
    pub enable: PreparedStatement,
    pub disable: PreparedStatement,
    pub set_count: PreparedStatement,
    pub cursor: PreparedStatement,
    pub cursors: PreparedStatement,
    pub put_cursor: PreparedStatement,
    pub insert_letter: PreparedStatement,
    pub letters: PreparedStatement,
    pub letter: PreparedStatement,
    pub index_letter: PreparedStatement,
    pub letter_location: PreparedStatement,
    pub request_replay: PreparedStatement,
    pub queue_replay: PreparedStatement,
    pub queued: PreparedStatement,
    pub dequeue: PreparedStatement,
    pub drop_letter: PreparedStatement,
    pub unindex_letter: PreparedStatement,
    pub failed_replay: PreparedStatement,
    pub insert_event: PreparedStatement,
    pub events: PreparedStatement,
    pub drop_state: [PreparedStatement; 3],
}

impl Statements {
    /// Prepares every statement for `keyspace`.
    pub(super) async fn prepare(session: &Session, keyspace: &str) -> Result<Self> {
        let ks = keyspace;
        let s = session;
        let p = |cql: String| query::prepare(s, cql);
        let subs = format!("{ks}.webhook_subscriptions");
        let columns = "id, url, types, filter, secret, state, consecutive_dead_letters, created_at_ms, updated_at_ms";
        let letter_columns = "subscription_id, id, log_partition, log_offset, event_id, event_type, body, attempts, last_error, failed_at_ms, replay_requested";
        let get = p(format!("SELECT {columns} FROM {subs} WHERE id = ?")).await?;
        Ok(Statements {
            create: p(format!("INSERT INTO {subs} ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS")).await?,
            get,
            all: p(format!("SELECT {columns} FROM {subs}")).await?,
            delete: p(format!("DELETE FROM {subs} WHERE id = ? IF EXISTS")).await?,
            enable: p(format!("UPDATE {subs} SET state = 'enabled', consecutive_dead_letters = 0, updated_at_ms = ? WHERE id = ? IF EXISTS")).await?,
            disable: p(format!("UPDATE {subs} SET state = 'disabled', updated_at_ms = ? WHERE id = ? IF state = 'enabled'")).await?,
            set_count: p(format!("UPDATE {subs} SET consecutive_dead_letters = ? WHERE id = ? IF consecutive_dead_letters = ?")).await?,
            cursor: p(format!("SELECT log, log_partition, next_offset, attempts, first_attempt_ms, retry_at_ms, last_error FROM {ks}.webhook_cursors WHERE subscription_id = ? AND log = ? AND log_partition = ?")).await?,
            cursors: p(format!("SELECT log, log_partition, next_offset, attempts, first_attempt_ms, retry_at_ms, last_error FROM {ks}.webhook_cursors WHERE subscription_id = ?")).await?,
            put_cursor: p(format!("INSERT INTO {ks}.webhook_cursors (subscription_id, log, log_partition, next_offset, attempts, first_attempt_ms, retry_at_ms, last_error) VALUES (:subscription_id, :log, :log_partition, :next_offset, :attempts, :first_attempt_ms, :retry_at_ms, :last_error)")).await?,
            insert_letter: p(format!("INSERT INTO {ks}.webhook_dead_letters (subscription_id, id, log_partition, log_offset, event_id, event_type, body, attempts, last_error, failed_at_ms, replay_requested) VALUES (:subscription_id, :id, :log_partition, :log_offset, :event_id, :event_type, :body, :attempts, :last_error, :failed_at_ms, false)")).await?,
            letters: p(format!("SELECT {letter_columns} FROM {ks}.webhook_dead_letters WHERE subscription_id = ? LIMIT 1000")).await?,
            letter: p(format!("SELECT {letter_columns} FROM {ks}.webhook_dead_letters WHERE subscription_id = ? AND id = ?")).await?,
            index_letter: p(format!("INSERT INTO {ks}.webhook_dead_letter_ids (id, subscription_id, log_partition) VALUES (?, ?, ?) IF NOT EXISTS")).await?,
            letter_location: p(format!("SELECT subscription_id, log_partition FROM {ks}.webhook_dead_letter_ids WHERE id = ?")).await?,
            request_replay: p(format!("UPDATE {ks}.webhook_dead_letters SET replay_requested = true WHERE subscription_id = ? AND id = ?")).await?,
            queue_replay: p(format!("INSERT INTO {ks}.webhook_replays (log_partition, id, subscription_id) VALUES (?, ?, ?)")).await?,
            queued: p(format!("SELECT id, subscription_id FROM {ks}.webhook_replays WHERE log_partition = ? LIMIT ?")).await?,
            dequeue: p(format!("DELETE FROM {ks}.webhook_replays WHERE log_partition = ? AND id = ?")).await?,
            drop_letter: p(format!("DELETE FROM {ks}.webhook_dead_letters WHERE subscription_id = ? AND id = ?")).await?,
            unindex_letter: p(format!("DELETE FROM {ks}.webhook_dead_letter_ids WHERE id = ?")).await?,
            failed_replay: p(format!("UPDATE {ks}.webhook_dead_letters SET replay_requested = false, attempts = ?, last_error = ?, failed_at_ms = ? WHERE subscription_id = ? AND id = ?")).await?,
            insert_event: p(format!("INSERT INTO {ks}.webhook_subscription_events (subscription_id, id, event_type, reason, at_ms) VALUES (?, ?, ?, ?, ?)")).await?,
            events: p(format!("SELECT id, event_type, reason, at_ms FROM {ks}.webhook_subscription_events WHERE subscription_id = ? LIMIT 100")).await?,
            drop_state: [
                p(format!("DELETE FROM {ks}.webhook_cursors WHERE subscription_id = ?")).await?,
                p(format!("DELETE FROM {ks}.webhook_dead_letters WHERE subscription_id = ?")).await?,
                p(format!("DELETE FROM {ks}.webhook_subscription_events WHERE subscription_id = ?")).await?,
            ],
        })
    }
}
