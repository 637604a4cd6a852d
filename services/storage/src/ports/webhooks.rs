//! The webhook port: subscriptions, each one's delivery cursor per event-log partition,
//! its dead letters and the record of its state changes.
//!
//! Delivery state lives per `(subscription, log, partition)` — `log` being the event log's
//! identity, so offsets kept for one topic are never applied to another — because a
//! partition is what one
//! delivery worker holds a lease on and reads in order: the cursor is the next log offset
//! to consider, and the pending attempt (how many, since when, when next) belongs to the
//! event at that offset, which holds back the rest of the partition for that subscription.

use async_trait::async_trait;
use stockflow_domain::webhook::{Filter, SubscriptionState};

use crate::Result;

/// A stored subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// `sub_` + a UUIDv7.
    pub id: String,
    /// Where deliveries are POSTed.
    pub url: String,
    /// CloudEvents types delivered.
    pub types: Vec<String>,
    /// Which events of those types.
    pub filter: Filter,
    /// The signing secret, `whsec_...`.
    pub secret: String,
    /// Enabled or disabled.
    pub state: SubscriptionState,
    /// Dead letters since the last successful delivery (the disable rule counts them).
    pub consecutive_dead_letters: u32,
    /// Created, Unix milliseconds: events appended to the log before it are not delivered.
    pub created_at_ms: i64,
    /// Last changed, Unix milliseconds.
    pub updated_at_ms: i64,
}

/// Where a subscription's delivery stands in one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    /// The next offset to consider.
    pub next_offset: u64,
    /// Failed attempts of the event at `next_offset`.
    pub attempts: u32,
    /// When its first attempt failed (Unix ms); `None` when no attempt failed.
    pub first_attempt_ms: Option<i64>,
    /// Not before this time (Unix ms) is it tried again.
    pub retry_at_ms: i64,
    /// Its last failure.
    pub last_error: Option<String>,
}

/// An event a subscription gave up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDeadLetter {
    /// Assigned by the store.
    pub id: i64,
    /// The subscription.
    pub subscription_id: String,
    /// Where the event is in the log.
    pub partition: u32,
    /// Its offset.
    pub offset: u64,
    /// The event's id.
    pub event_id: String,
    /// Its CloudEvents type.
    pub event_type: String,
    /// The exact body that was delivered (and will be again on replay).
    pub body: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last failure.
    pub last_error: String,
    /// When it was dead-lettered, Unix ms.
    pub failed_at_ms: i64,
    /// Whether a replay has been asked for and not yet attempted.
    pub replay_requested: bool,
}

/// A change of a subscription's state worth telling its owner about (its disabling).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionEvent {
    /// Assigned by the store.
    pub id: i64,
    /// The subscription.
    pub subscription_id: String,
    /// A CloudEvents type, e.g. `dev.stockflow.subscription.disabled.v1`.
    pub event_type: String,
    /// Why.
    pub reason: String,
    /// When, Unix ms.
    pub at_ms: i64,
}

/// Webhook subscriptions and their delivery state.
#[async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    /// Stores a new subscription.
    async fn create_subscription(&self, subscription: &Subscription) -> Result<()>;
    /// The subscription `id`.
    async fn subscription(&self, id: &str) -> Result<Option<Subscription>>;
    /// Every subscription, oldest first.
    async fn subscriptions(&self) -> Result<Vec<Subscription>>;
    /// Removes a subscription with its cursors, dead letters and events; false when absent.
    async fn delete_subscription(&self, id: &str) -> Result<bool>;
    /// Enables a subscription: its dead-letter count starts again and a pending event gets
    /// a fresh retry window; false when absent.
    async fn enable(&self, id: &str, now_ms: i64) -> Result<bool>;
    /// Disables a subscription and records `event_type` with `reason`; false when absent or
    /// already disabled (so the event is recorded once).
    async fn disable(&self, id: &str, event_type: &str, reason: &str, now_ms: i64) -> Result<bool>;
    /// The subscription's events, newest first.
    async fn subscription_events(&self, id: &str) -> Result<Vec<SubscriptionEvent>>;
    /// The subscription's cursor in `partition` of `log` (the log's identity), if any.
    async fn cursor(&self, id: &str, log: &str, partition: u32) -> Result<Option<Cursor>>;
    /// Stores the cursor; when `delivered` it also clears the subscription's dead-letter
    /// count (a success). Ignored when the subscription is gone.
    async fn save_cursor(
        &self,
        id: &str,
        log: &str,
        partition: u32,
        cursor: &Cursor,
        delivered: bool,
    ) -> Result<()>;
    /// Dead-letters an event and moves the cursor past it, in one transaction; answers the
    /// subscription's dead letters since its last success (0 when it is gone).
    async fn dead_letter(
        &self,
        letter: &WebhookDeadLetter,
        log: &str,
        cursor: &Cursor,
    ) -> Result<u32>;
    /// The subscription's dead letters, oldest first.
    async fn dead_letters(&self, id: &str) -> Result<Vec<WebhookDeadLetter>>;
    /// Asks for every dead letter of the subscription to be delivered again; answers how
    /// many.
    async fn request_replay(&self, id: &str) -> Result<u64>;
    /// Dead letters of `partition` waiting for a replay, oldest first (of every subscription).
    async fn replays(&self, partition: u32, limit: usize) -> Result<Vec<WebhookDeadLetter>>;
    /// The outcome of a replay: delivered (the letter is removed) or failed again (kept,
    /// with its error, no longer waiting).
    async fn replayed(
        &self,
        letter_id: i64,
        outcome: std::result::Result<(), String>,
        now_ms: i64,
    ) -> Result<()>;
}
