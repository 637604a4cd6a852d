//! Storage for stockflow: the ports the services depend on, and their adapters. The
//! adapters load state, ask `stockflow_domain` (which owns every rule), and persist the
//! answer.
//!
//! Layout:
//! - [`ports`]: the traits — [`ports::WriteStore`] (commands, catalog, reservations with
//!   idempotency and a transactional outbox), [`ports::Outbox`], [`ports::ReadStore`] (read
//!   models, consumer offsets, DLQ) and [`ports::LeaseStore`] (shards owned by one replica).
//! - [`embedded`]: the adapters over SQLite files in one data directory, used by
//!   `stockflow dev` and on laptops, including the embedded event log (an adapter of
//!   `stockflow_bus::EventLog`).
//! - [`scylla`]: the adapters over ScyllaDB (or Cassandra).
//! - `expiry_rounds`: expiry through the command path, shared by the write stores.
//! - [`error`]: the crate's one error enum; `stop`: a refusal or a failure, inside a
//!   command path.
//! - `contract` (tests only): the behaviour every adapter of a port must show; each adapter's
//!   tests run it.

mod definition;
pub mod embedded;
pub mod error;
mod expiry_rounds;
pub mod ports;
pub mod rebuild;
pub mod scylla;
mod stop;

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
