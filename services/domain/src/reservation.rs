//! Reservations: stock held for an order until confirmed, released or expired.
//!
//! Life cycle: `Active` → one of `Confirmed`, `Released`, `Expired`; terminal states never move.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{ChannelId, LocationId, ReservationId, Sku, StockKey};

/// Where a reservation is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationStatus {
    /// Holding stock.
    Active,
    /// Sold: the held units left on-hand.
    Confirmed,
    /// Given back by the client.
    Released,
    /// Given back because the TTL passed.
    Expired,
}

impl ReservationStatus {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationStatus::Active => "active",
            ReservationStatus::Confirmed => "confirmed",
            ReservationStatus::Released => "released",
            ReservationStatus::Expired => "expired",
        }
    }

    /// Parses the API spelling.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "active" => Some(Self::Active),
            "confirmed" => Some(Self::Confirmed),
            "released" => Some(Self::Released),
            "expired" => Some(Self::Expired),
            _ => None,
        }
    }
}

impl fmt::Display for ReservationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// One held line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationLine {
    /// The SKU.
    pub sku: Sku,
    /// The location.
    pub location: LocationId,
    /// Units held.
    pub qty: i64,
    /// Of those, units backordered (accepted beyond stock, waiting for it), as the key
    /// says now. Not kept with the reservation: the key's backorders are the truth, and
    /// readers fill this in from them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub backordered: i64,
    /// The sales channel the units are held for, counted against its allocations at the
    /// key. Kept on each line (not only on the reservation) because lines are stored and
    /// settled apart, each with its own key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<ChannelId>,
}

impl ReservationLine {
    /// The stock key of the line.
    pub fn key(&self) -> StockKey {
        StockKey::new(self.sku.clone(), self.location.clone())
    }
}

/// A reservation and its lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// Its id.
    pub id: ReservationId,
    /// Where it is in its life cycle.
    pub status: ReservationStatus,
    /// The held lines.
    pub lines: Vec<ReservationLine>,
    /// External reference.
    pub reference: Option<String>,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: i64,
    /// When it expires if still active, Unix milliseconds.
    pub expires_at_ms: i64,
    /// Last status change, Unix milliseconds.
    pub updated_at_ms: i64,
}

impl Reservation {
    /// The sales channel it holds stock for, if any (every line holds for the same one).
    pub fn channel(&self) -> Option<&ChannelId> {
        self.lines.first().and_then(|l| l.channel.as_ref())
    }

    /// Whether the TTL has passed at `now_ms`.
    pub fn is_due(&self, now_ms: i64) -> bool {
        now_ms >= self.expires_at_ms
    }

    /// Whether it still holds stock (neither settled nor expired).
    pub fn is_active(&self) -> bool {
        self.status == ReservationStatus::Active
    }

    /// The reservation as one of its lines stores it, where lines live apart (a partition
    /// per line): the same reservation, with `line` alone.
    pub fn line_record(&self, line: &ReservationLine) -> Reservation {
        Reservation {
            lines: vec![line.clone()],
            ..self.clone()
        }
    }

    /// This reservation with the lines of `other`, another record of the same reservation
    /// (its lines found in other partitions).
    pub fn join(mut self, other: Reservation) -> Reservation {
        self.lines.extend(other.lines);
        self
    }

    /// This reservation with each line's `backordered` as `backordered(line)` says (the
    /// units its key holds backordered for it now).
    pub fn with_backorders(mut self, backordered: impl Fn(&ReservationLine) -> i64) -> Self {
        for line in &mut self.lines {
            line.backordered = if self.status == ReservationStatus::Active {
                backordered(line)
            } else {
                0
            };
        }
        self
    }
}
