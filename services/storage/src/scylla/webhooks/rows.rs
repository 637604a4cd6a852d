//! The webhook tables' rows, and the store's values as CQL keeps them.

use scylla::{DeserializeRow, SerializeRow};
use stockflow_domain::webhook::SubscriptionState;

use crate::ports::{Cursor, Subscription, WebhookDeadLetter};
use crate::{Result, StoreError, now_ms};

/// A subscription row.
#[derive(DeserializeRow)]
pub(super) struct SubscriptionRow {
    pub id: String,
    pub url: Option<String>,
    pub types: Option<String>,
    pub filter: Option<String>,
    pub secret: Option<String>,
    pub state: Option<String>,
    pub consecutive_dead_letters: Option<i32>,
    pub created_at_ms: Option<i64>,
    pub updated_at_ms: Option<i64>,
}

/// A cursor row.
#[derive(DeserializeRow)]
pub(super) struct CursorRow {
    pub log: String,
    pub log_partition: i32,
    pub next_offset: Option<i64>,
    pub attempts: Option<i32>,
    pub first_attempt_ms: Option<i64>,
    pub retry_at_ms: Option<i64>,
    pub last_error: Option<String>,
}

/// A cursor as written.
#[derive(SerializeRow)]
pub(super) struct CursorWrite<'a> {
    pub subscription_id: &'a str,
    pub log: &'a str,
    pub log_partition: i32,
    pub next_offset: i64,
    pub attempts: i32,
    pub first_attempt_ms: Option<i64>,
    pub retry_at_ms: i64,
    pub last_error: Option<&'a str>,
}

/// A dead letter row.
#[derive(DeserializeRow)]
pub(super) struct LetterRow {
    pub subscription_id: String,
    pub id: i64,
    pub log_partition: Option<i32>,
    pub log_offset: Option<i64>,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub body: Option<String>,
    pub attempts: Option<i32>,
    pub last_error: Option<String>,
    pub failed_at_ms: Option<i64>,
    pub replay_requested: Option<bool>,
}

/// A new dead letter as written.
#[derive(SerializeRow)]
pub(super) struct LetterWrite<'a> {
    pub subscription_id: &'a str,
    pub id: i64,
    pub log_partition: i32,
    pub log_offset: i64,
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub body: &'a str,
    pub attempts: i32,
    pub last_error: &'a str,
    pub failed_at_ms: i64,
}

/// Where a dead letter is (its id index).
#[derive(DeserializeRow)]
pub(super) struct LocationRow {
    pub subscription_id: String,
    pub log_partition: i32,
}

/// A replay waiting in its partition's queue.
#[derive(DeserializeRow)]
pub(super) struct QueuedRow {
    pub id: i64,
    pub subscription_id: String,
}

/// A subscription event row.
#[derive(DeserializeRow)]
pub(super) struct EventRow {
    pub id: i64,
    pub event_type: Option<String>,
    pub reason: Option<String>,
    pub at_ms: Option<i64>,
}

/// A new id: milliseconds, then 20 random bits (ordered by time, unique with `IF NOT
/// EXISTS`).
pub(super) fn new_id() -> i64 {
    // A UUIDv7's low bits are random.
    let random = uuid::Uuid::now_v7().as_u128() as u32 & 0xF_FFFF;
    (now_ms() << 20) | i64::from(random)
}

pub(super) fn json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(StoreError::encode("a subscription"))
}

pub(super) fn subscription(row: SubscriptionRow) -> Result<Subscription> {
    fn parse<T: serde::de::DeserializeOwned>(
        what: &'static str,
        text: Option<String>,
    ) -> Result<T> {
        serde_json::from_str(text.as_deref().unwrap_or("null")).map_err(StoreError::corrupt(what))
    }
    Ok(Subscription {
        types: parse("subscription types", row.types)?,
        filter: parse("subscription filter", row.filter)?,
        id: row.id,
        url: row.url.unwrap_or_default(),
        secret: row.secret.unwrap_or_default(),
        // An unknown state (a newer version's) is treated as disabled: never deliver on a
        // state we do not understand.
        state: row
            .state
            .as_deref()
            .and_then(SubscriptionState::parse)
            .unwrap_or(SubscriptionState::Disabled),
        consecutive_dead_letters: u32::try_from(row.consecutive_dead_letters.unwrap_or(0))
            .unwrap_or(0),
        created_at_ms: row.created_at_ms.unwrap_or(0),
        updated_at_ms: row.updated_at_ms.unwrap_or(0),
    })
}

pub(super) fn cursor(row: CursorRow) -> Cursor {
    Cursor {
        next_offset: u64::try_from(row.next_offset.unwrap_or(0)).unwrap_or(0),
        attempts: u32::try_from(row.attempts.unwrap_or(0)).unwrap_or(0),
        first_attempt_ms: row.first_attempt_ms,
        retry_at_ms: row.retry_at_ms.unwrap_or(0),
        last_error: row.last_error,
    }
}

pub(super) fn letter(row: LetterRow) -> WebhookDeadLetter {
    WebhookDeadLetter {
        id: row.id,
        subscription_id: row.subscription_id,
        partition: u32::try_from(row.log_partition.unwrap_or(0)).unwrap_or(0),
        offset: u64::try_from(row.log_offset.unwrap_or(0)).unwrap_or(0),
        event_id: row.event_id.unwrap_or_default(),
        event_type: row.event_type.unwrap_or_default(),
        body: row.body.unwrap_or_default(),
        attempts: u32::try_from(row.attempts.unwrap_or(0)).unwrap_or(0),
        last_error: row.last_error.unwrap_or_default(),
        failed_at_ms: row.failed_at_ms.unwrap_or(0),
        replay_requested: row.replay_requested.unwrap_or(false),
    }
}
