//! Transfers as records: what was asked, shipped and received, and where each stands.
//!
//! Life cycle: `created` → `in_transit` (shipped) → `received` (closed, every unit
//! accounted for: received, received damaged, or missing); `created` → `cancelled`.
//! The rules that move a transfer are [`crate::decide::transfer`]'s.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{LocationId, Sku, StockKey, TransferId};
use crate::quantity::Date;

/// Where a transfer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferStatus {
    /// Asked for; nothing moved yet.
    Created,
    /// Shipped: out of the source, expected at the destination.
    InTransit,
    /// Closed at the destination: every shipped unit is accounted for.
    Received,
    /// Cancelled before it shipped.
    Cancelled,
}

impl TransferStatus {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TransferStatus::Created => "created",
            TransferStatus::InTransit => "in_transit",
            TransferStatus::Received => "received",
            TransferStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for TransferStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One SKU of a transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferLine {
    /// The SKU.
    pub sku: Sku,
    /// Units asked for (and shipped, once it ships).
    pub qty: i64,
    /// Units received in good condition so far.
    #[serde(default)]
    pub received: i64,
    /// Units received damaged so far.
    #[serde(default)]
    pub damaged: i64,
    /// Units that never arrived (known once the transfer is closed).
    #[serde(default)]
    pub missing: i64,
}

impl TransferLine {
    /// Units shipped and not yet accounted for at the destination.
    pub fn outstanding(&self) -> i64 {
        self.qty - self.received - self.damaged - self.missing
    }
}

/// A transfer of stock from one location to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// Its id.
    pub id: TransferId,
    /// Where the units leave from.
    pub from: LocationId,
    /// Where they go.
    pub to: LocationId,
    /// Its SKUs.
    pub lines: Vec<TransferLine>,
    /// When the destination expects them.
    pub expected_arrival: Date,
    /// Where it is.
    pub status: TransferStatus,
    /// External reference.
    pub reference: Option<String>,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: i64,
    /// Last change, Unix milliseconds.
    pub updated_at_ms: i64,
    /// Receipts made so far (each a separate command at the destination).
    #[serde(default)]
    pub receipts: u32,
}

impl Transfer {
    /// The key a line leaves from.
    pub fn source_key(&self, line: &TransferLine) -> StockKey {
        StockKey::new(line.sku.clone(), self.from.clone())
    }

    /// The key a line goes to.
    pub fn destination_key(&self, line: &TransferLine) -> StockKey {
        StockKey::new(line.sku.clone(), self.to.clone())
    }

    /// The line of `sku`, if the transfer has one.
    pub fn line(&self, sku: &Sku) -> Option<&TransferLine> {
        self.lines.iter().find(|l| l.sku == *sku)
    }

    /// Units in transit over every line.
    pub fn outstanding(&self) -> i64 {
        self.lines.iter().map(TransferLine::outstanding).sum()
    }
}
