//! The JSON shapes of the HTTP API, and their conversion to and from the domain.
//!
//! Request types refuse unknown fields; ids arrive as strings and are validated by the
//! domain types, so every message names the offending field.

use std::time::{Duration, UNIX_EPOCH};

mod allocations;
mod bundles;
mod catalog;
mod commands;
mod incoming;
mod queries;
mod sourcing;
mod transfers;
mod webhooks;

pub(crate) use allocations::*;
pub(crate) use bundles::*;
pub(crate) use catalog::*;
pub(crate) use commands::*;
pub(crate) use incoming::*;
pub(crate) use queries::*;
pub(crate) use sourcing::*;
pub(crate) use transfers::*;
pub(crate) use webhooks::*;

/// RFC 3339 text of a Unix-millisecond timestamp.
pub(crate) fn rfc3339(ms: i64) -> String {
    let ms = u64::try_from(ms).unwrap_or(0);
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}
