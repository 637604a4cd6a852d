//! The ScyllaDB backend (also runs on Apache Cassandra 5): the write store with
//! lightweight transactions and a per-partition outbox, and the read store.
//!
//! - [`schema`]: keyspace creation, versioned CQL files, the schema-version check.
//! - `write`: routes each command to its path; `partition`: one conditional batch per
//!   group of changes to a `(sku, location)` partition; `coalesce`: concurrent commands on
//!   one hot key share batches; `saga`: reservations spanning partitions; `claims`:
//!   idempotency keys across partitions; `outbox`: markers, bounded scans, deletion once
//!   published; `statements`: the prepared CQL and its typed rows.
//! - [`read`]: read models written `USING TIMESTAMP <version>`.
//! - `expiry`: expiry rounds over the per-minute deadline index.
//! - `leases`: shards of the outbox and partitions of the topic, one replica each.
//! - [`cql`]: session set-up, statement helpers, error mapping.

mod claims;
mod coalesce;
mod cql;
mod expiry;
mod fresh;
mod known;
mod leases;
mod outbox;
mod partition;
mod read;
mod saga;
pub mod schema;
mod statements;
mod write;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use cql::{ScyllaConfig, connect};
pub(crate) use cql::{rejects_the_input, transient};
pub use leases::ScyllaLeaseStore;
pub use read::ScyllaReadStore;
pub use schema::{Replication, SCHEMA_VERSION, check_schema, drop_keyspace, migrate};
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
}

impl ScyllaBackend {
    /// Connects, checks the schema version and prepares every statement.
    pub async fn open(config: &ScyllaConfig) -> Result<Self> {
        let session = Arc::new(connect(config).await?);
        check_schema(&session, &config.keyspace).await?;
        Ok(Self {
            write: Arc::new(ScyllaWriteStore::new(session.clone(), &config.keyspace).await?),
            read: Arc::new(ScyllaReadStore::new(session.clone(), &config.keyspace).await?),
            leases: Arc::new(ScyllaLeaseStore::new(session, &config.keyspace).await?),
        })
    }
}
