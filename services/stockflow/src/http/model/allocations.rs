//! Bodies of channel allocations: the request setting one channel's ring-fence and cap at
//! one key, and each channel's share of a key as answers show it.

use serde::{Deserialize, Serialize};
use stockflow_domain::{
    Allocation, Cap, ChannelId, ChannelShare, LocationId, MAX_LINE_QTY, SetAllocation, Sku,
    StockKey, ValidationError,
};
use utoipa::ToSchema;
use utoipa::openapi::schema::Object;

use super::super::docs;

fn ring_fence() -> Object {
    docs::nullable_integer(
        "Units kept for the channel: no other channel, and no reservation without one, may take them (default 0)",
        0,
        MAX_LINE_QTY,
    )
    .build()
}

fn cap_units() -> Object {
    docs::nullable_integer(
        "The most units the channel may hold here at once",
        0,
        MAX_LINE_QTY,
    )
    .build()
}

fn cap_percent() -> Object {
    docs::nullable_integer(
        "The most the channel may hold here at once, as a percentage of on-hand (rounded down)",
        0,
        100,
    )
    .build()
}

/// `POST /v1/allocations`: one channel's ring-fence and cap at one key. Neither a fence
/// above zero nor a cap removes the channel's allocation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AllocationRequest {
    /// SKU.
    #[schema(schema_with = docs::sku)]
    pub sku: String,
    /// Location.
    #[schema(schema_with = docs::location)]
    pub location: String,
    /// The channel (defined with `PUT /v1/channels/{channel}`, listing this location).
    #[schema(schema_with = docs::channel)]
    pub channel: String,
    /// Units kept for the channel.
    #[schema(schema_with = ring_fence)]
    pub ring_fence: Option<i64>,
    /// A cap in units (not with `cap_percent`).
    #[schema(schema_with = cap_units)]
    pub cap_units: Option<i64>,
    /// A cap as a share of on-hand (not with `cap_units`).
    #[schema(schema_with = cap_percent)]
    pub cap_percent: Option<i64>,
    /// Apply only if the key is at this version.
    #[schema(schema_with = docs::expected_version)]
    pub expected_version: Option<u64>,
    /// External reference (change ticket).
    #[schema(schema_with = docs::reference)]
    pub reference: Option<String>,
}

impl AllocationRequest {
    /// The channel it names.
    pub fn channel(&self) -> Result<ChannelId, ValidationError> {
        ChannelId::parse(self.channel.clone()).map_err(|e| ValidationError {
            field: "channel".into(),
            ..e
        })
    }

    /// The location it names.
    pub fn location(&self) -> Result<LocationId, ValidationError> {
        LocationId::parse(self.location.clone())
    }

    /// Validates into a domain command.
    pub fn into_command(self) -> Result<SetAllocation, ValidationError> {
        let channel = self.channel()?;
        let cap = match (self.cap_units, self.cap_percent) {
            (Some(_), Some(_)) => {
                return Err(ValidationError::conflict(
                    "cap_percent",
                    "give cap_units or cap_percent, not both",
                ));
            }
            (Some(units), None) => Some(Cap::Units(units)),
            (None, Some(percent)) => Some(Cap::Percent(percent)),
            (None, None) => None,
        };
        let fence = self.ring_fence.unwrap_or(0);
        let allocation = if fence == 0 && cap.is_none() {
            None
        } else {
            Some(Allocation::new(fence, cap)?)
        };
        SetAllocation::new(
            StockKey::new(Sku::parse(self.sku)?, LocationId::parse(self.location)?),
            channel,
            allocation,
            self.expected_version,
            self.reference,
        )
    }
}

/// One channel's share of a key: its allocation, what it holds and what it may still take.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChannelShareBody {
    /// The channel.
    pub channel: String,
    /// Units kept for it (0: none).
    pub ring_fence: i64,
    /// Its cap in units, if it has one in units.
    pub cap_units: Option<i64>,
    /// Its cap as a share of on-hand, if it has one so.
    pub cap_percent: Option<i64>,
    /// Units its active reservations hold here.
    pub held: i64,
    /// Units it may still reserve here: what is available, less other channels'
    /// unheld ring-fences, within its cap.
    pub available: i64,
}

impl From<ChannelShare> for ChannelShareBody {
    fn from(s: ChannelShare) -> Self {
        let cap = s.allocation.and_then(|a| a.cap);
        Self {
            channel: s.channel.to_string(),
            ring_fence: s.allocation.map_or(0, |a| a.ring_fence),
            cap_units: match cap {
                Some(Cap::Units(n)) => Some(n),
                _ => None,
            },
            cap_percent: match cap {
                Some(Cap::Percent(p)) => Some(p),
                _ => None,
            },
            held: s.held,
            available: s.available,
        }
    }
}
