//! The ports: what the services need from storage and the bus, independent of backend.
//!
//! Shaped for both the embedded backend and the distributed one (ScyllaDB + a bus): a
//! command is one call (the adapter owns its transaction or conditional batch), outbox
//! entries are discovered and marked in batches, and read-model writes carry the consumer
//! offset they advance to, so both are stored together. The event log's port lives in
//! `stockflow-bus`.
//!
//! - [`write`]: [`WriteStore`] — commands with idempotency and a transactional outbox.
//! - [`outbox`]: [`Outbox`] — what the publisher drains.
//! - [`read`]: [`ReadStore`] — read models (rows built by `stockflow_domain::read_model`),
//!   consumer offsets, the DLQ.
//! - [`leases`]: [`LeaseStore`] — shards owned by one replica at a time.
//! - [`webhooks`]: [`WebhookStore`] — webhook subscriptions and their delivery state.
//! - [`imports`]: [`ImportStore`] — bulk import jobs and their checkpoints.

pub mod imports;
pub mod leases;
pub mod outbox;
pub mod read;
pub mod webhooks;
pub mod write;

pub use imports::{
    ImportJob, ImportPayloads, ImportProgress, ImportRowError, ImportStatus, ImportStore,
    PAYLOAD_CHUNK_BYTES,
};
pub use leases::LeaseStore;
pub use outbox::{Outbox, OutboxEntry};
pub use read::{
    Batch, CHANGE_CURSOR_PATTERN, ChangeCursor, ChangeSnapshot, Changes, ConsumerOffset,
    DeadLetter, EXPORT_CHUNK_ROWS, ExportChunk, InventoryRow, Movement, Provenance, ReadStore,
    RegionAvailability, SearchHit, SearchQuery,
};
pub use webhooks::{Cursor, Subscription, SubscriptionEvent, WebhookDeadLetter, WebhookStore};
pub use write::{CommandRequest, Executed, ExpiryRound, IdempotencyToken, Purge, WriteStore};
