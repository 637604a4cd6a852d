//! The ScyllaDB backend (also runs on Apache Cassandra 5): the write store with
//! lightweight transactions and a per-partition outbox, and the read store. The rooms:
//!
//! - `write`: the write store — one conditional batch per group of changes to a
//!   `(sku, location)` partition, hot keys coalesced, sagas for reservations spanning
//!   partitions, idempotency claims, the deadline index and expiry over it, the catalog.
//! - `outbox`: markers, bounded scans, deletion once published, the rows this process
//!   committed kept for its own publisher.
//! - `read`: the read store — read models written `USING TIMESTAMP <version>`, search,
//!   the dead-letter queue.
//! - `cql`: session set-up, the driver's errors told apart, typed rows, the prepared
//!   statements, the versioned schema.
//! - `leases`: shards of the outbox and partitions of the topic, one replica each.
//! - `webhooks`: webhook subscriptions, their cursors and dead letters.
//! - `imports`: bulk import jobs, their refused rows and their files.

mod cql;
mod imports;
mod leases;
mod outbox;
mod read;
mod webhooks;
mod write;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use cql::{
    Replication, SCHEMA_VERSION, ScyllaConfig, check_schema, connect, drop_keyspace, migrate,
};
pub use imports::ScyllaImportStore;
pub use leases::ScyllaLeaseStore;
pub use read::ScyllaReadStore;
pub use webhooks::ScyllaWebhookStore;
pub use write::ScyllaWriteStore;

use crate::Result;

/// The write and read stores over one session.
#[derive(Clone)]
pub struct ScyllaBackend {
    /// Write side and outbox.
    pub write: Arc<ScyllaWriteStore>,
    /// Read side.
    pub read: Arc<ScyllaReadStore>,
    /// Leases that split publishing and projection among replicas.
    pub leases: Arc<ScyllaLeaseStore>,
    /// Webhook subscriptions and their delivery state.
    pub webhooks: Arc<ScyllaWebhookStore>,
    /// Bulk import jobs and their files.
    pub imports: Arc<ScyllaImportStore>,
}

impl ScyllaBackend {
    /// Connects, checks the schema version and prepares every statement.
    pub async fn open(config: &ScyllaConfig) -> Result<Self> {
        let session = Arc::new(connect(config).await?);
        check_schema(&session, &config.keyspace).await?;
        Ok(Self {
            write: Arc::new(ScyllaWriteStore::new(session.clone(), &config.keyspace).await?),
            read: Arc::new(ScyllaReadStore::new(session.clone(), &config.keyspace).await?),
            leases: Arc::new(ScyllaLeaseStore::new(session.clone(), &config.keyspace).await?),
            webhooks: Arc::new(ScyllaWebhookStore::new(session.clone(), &config.keyspace).await?),
            imports: Arc::new(ScyllaImportStore::new(session, &config.keyspace).await?),
        })
    }
}
