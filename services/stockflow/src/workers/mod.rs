//! Background workers: the outbox publisher, the projectors, reservation expiry, webhook
//! delivery, the lease keeper that splits publishing and projection among replicas, and
//! the edge-cache purge and warm-up that follow the projectors.
//!
//! Each takes its ports and a cancellation token, so the same code runs in `stockflow dev`
//! over the embedded backend and, as separate roles, over the distributed one.

pub mod edge_purge;
pub mod edge_warm;
pub mod expirer;
pub mod leases;
pub mod projector;
pub mod publisher;
pub mod retention;
pub mod webhooks;

/// Why a step of a worker failed: its store or its bus. Either way the worker retries.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A store failed.
    #[error(transparent)]
    Store(#[from] stockflow_storage::StoreError),
    /// The bus failed.
    #[error(transparent)]
    Bus(#[from] stockflow_bus::BusError),
}

use std::time::Duration;

/// Exponential backoff for retrying a failing store, capped at two seconds.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(10u64.saturating_mul(1 << attempt.min(8))).min(Duration::from_secs(2))
}
