//! The store's unsigned counts as CQL's signed integer types: a value out of range is an
//! invariant broken (no count grows that far), named by what was being stored.

use crate::{Result, StoreError};

/// `value` as CQL's `bigint`.
pub(crate) fn bigint(what: &'static str, value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| out_of_range(what, value))
}

/// `value` as CQL's `int`.
pub(crate) fn int(what: &'static str, value: u32) -> Result<i32> {
    i32::try_from(value).map_err(|_| out_of_range(what, u64::from(value)))
}

fn out_of_range(what: &'static str, value: u64) -> StoreError {
    StoreError::Invariant {
        what,
        detail: format!("{value} is out of range"),
    }
}
