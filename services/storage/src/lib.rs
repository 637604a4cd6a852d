//! Storage for stockflow: the ports the services depend on, and their adapters.
//!
//! Layout:
//! - [`ports`]: the traits — [`ports::WriteStore`] (commands, catalog, reservations with
//!   idempotency and a transactional outbox), [`ports::Outbox`], [`ports::ReadStore`] (read
//!   models, consumer offsets, DLQ) and [`ports::LeaseStore`] (shards owned by one replica).
//! - [`embedded`]: the adapters over SQLite files in one data directory, used by
//!   `stockflow dev` and on laptops, including the embedded event log (an adapter of
//!   `stockflow_bus::EventLog`).
//! - [`scylla`]: the adapters over ScyllaDB (or Cassandra).
//! - `expiry`: expiry rounds, shared by the write stores.
//! - [`error`]: the crate's one error enum.
//! - `contract` (tests only): the behaviour every adapter of a port must show; each adapter's
//!   tests run it.

pub mod embedded;
pub mod error;
mod expiry;
pub mod ports;
pub mod scylla;

#[cfg(test)]
mod contract;

pub use error::{Result, StoreError};

/// Milliseconds since the Unix epoch, the time unit of every stored timestamp.
pub fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}
