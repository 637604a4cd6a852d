//! The ScyllaDB backend (also runs on Apache Cassandra 5): the write store with
//! lightweight transactions and a per-partition outbox, and the read store.
//!
//! - [`schema`]: keyspace creation, versioned CQL files, the schema-version check.
//! - [`write`]: commands as conditional batches on the `(sku, location)` partition.
//! - [`read`]: read models written `USING TIMESTAMP <version>`.
//! - [`cql`]: session set-up, statement helpers, error mapping.

mod cql;
mod read;
pub mod schema;
mod write;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use cql::{ScyllaConfig, connect};
pub use read::ScyllaReadStore;
pub use schema::{Replication, SCHEMA_VERSION, check_schema, migrate};
pub use write::ScyllaWriteStore;

use crate::Result;

/// The write and read stores over one session.
#[derive(Clone)]
pub struct ScyllaBackend {
    /// Write side and outbox.
    pub write: Arc<ScyllaWriteStore>,
    /// Read side.
    pub read: Arc<ScyllaReadStore>,
}

impl ScyllaBackend {
    /// Connects, checks the schema version and prepares every statement.
    pub async fn open(config: &ScyllaConfig) -> Result<Self> {
        let session = Arc::new(connect(config).await?);
        check_schema(&session, &config.keyspace).await?;
        Ok(Self {
            write: Arc::new(ScyllaWriteStore::new(session.clone(), &config.keyspace).await?),
            read: Arc::new(ScyllaReadStore::new(session, &config.keyspace).await?),
        })
    }
}
