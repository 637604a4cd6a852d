//! Background workers: the outbox publisher, the projectors and reservation expiry.
//!
//! Each takes its ports and a cancellation token, so the same code runs in `stockflow dev`
//! over the embedded backend and, as separate roles, over the distributed one.

pub mod expiry;
pub mod projector;
pub mod publisher;

use std::time::Duration;

/// Exponential backoff for retrying a failing store, capped at two seconds.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(10u64.saturating_mul(1 << attempt.min(8))).min(Duration::from_secs(2))
}
