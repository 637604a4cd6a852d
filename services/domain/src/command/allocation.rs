//! A channel's allocation at one key: set, changed or removed as one versioned, audited
//! change of the key, so reservations are decided against exactly the allocations the
//! key holds.

use serde::{Deserialize, Serialize};

use super::check_reference;
use super::stock::version;
use crate::ids::{ChannelId, StockKey};
use crate::stock::Allocation;
use crate::validation::ValidationError;

/// Set (or remove) one channel's ring-fence and cap at one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAllocation {
    /// The key.
    pub key: StockKey,
    /// The channel.
    pub channel: ChannelId,
    /// The allocation; `None` removes the channel's.
    pub allocation: Option<Allocation>,
    /// Apply only if the key is at this version.
    pub expected_version: Option<u64>,
    /// External reference (change ticket).
    pub reference: Option<String>,
}

impl SetAllocation {
    /// Validates an allocation change (the allocation itself is validated when built).
    pub fn new(
        key: StockKey,
        channel: ChannelId,
        allocation: Option<Allocation>,
        expected_version: Option<u64>,
        reference: Option<String>,
    ) -> Result<Self, ValidationError> {
        version("expected_version", expected_version)?;
        check_reference(&reference)?;
        Ok(Self {
            key,
            channel,
            allocation,
            expected_version,
            reference,
        })
    }
}
