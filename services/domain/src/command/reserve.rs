//! Reservations: hold stock on one or more lines, all or nothing.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::check_reference;
use crate::ids::{ChannelId, LocationId, ReservationId, Sku, StockKey};
use crate::limits::{MAX_LINE_QTY, MAX_LINES, MAX_TTL_SECONDS};
use crate::validation::ValidationError;

/// One line of a reservation request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveLine {
    /// The SKU.
    pub sku: Sku,
    /// The location.
    pub location: LocationId,
    /// Units to hold, 1–1,000,000.
    pub qty: i64,
}

impl ReserveLine {
    /// The stock key of the line.
    pub fn key(&self) -> StockKey {
        StockKey::new(self.sku.clone(), self.location.clone())
    }
}

/// Hold stock on one or more lines, all or nothing, until confirmed, released or expired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reserve {
    /// The reservation's id.
    pub id: ReservationId,
    /// Distinct `(sku, location)` lines.
    pub lines: Vec<ReserveLine>,
    /// Seconds until the reservation expires.
    pub ttl_seconds: u64,
    /// External reference (order id, cart id).
    pub reference: Option<String>,
    /// The sales channel it holds stock for: its allocations bind each line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<ChannelId>,
}

impl Reserve {
    /// Validates a reservation request.
    pub fn new(
        id: ReservationId,
        lines: Vec<ReserveLine>,
        ttl_seconds: u64,
        reference: Option<String>,
    ) -> Result<Self, ValidationError> {
        if lines.is_empty() || lines.len() > MAX_LINES {
            return Err(ValidationError::new(
                "lines",
                format!("must hold 1-{MAX_LINES} lines, got {}", lines.len()),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, line) in lines.iter().enumerate() {
            if !(1..=MAX_LINE_QTY).contains(&line.qty) {
                return Err(ValidationError::new(
                    format!("lines[{i}].qty"),
                    format!("must be between 1 and {MAX_LINE_QTY}"),
                ));
            }
            if !seen.insert(line.key()) {
                return Err(ValidationError::duplicate(
                    format!("lines[{i}]"),
                    format!(
                        "duplicate line for sku {} at {}; merge the quantities",
                        line.sku, line.location
                    ),
                ));
            }
        }
        if !(1..=MAX_TTL_SECONDS).contains(&ttl_seconds) {
            return Err(ValidationError::new(
                "ttl_seconds",
                format!("must be between 1 and {MAX_TTL_SECONDS}"),
            ));
        }
        check_reference(&reference)?;
        Ok(Self {
            id,
            lines,
            ttl_seconds,
            reference,
            channel: None,
        })
    }

    /// This reservation, for `channel`.
    pub fn for_channel(mut self, channel: Option<ChannelId>) -> Self {
        self.channel = channel;
        self
    }
}
