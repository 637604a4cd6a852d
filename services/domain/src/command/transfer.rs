//! Transfers of stock from one location to another: created, shipped (out of the source,
//! in transit to the destination), received (in parts), or cancelled before shipping.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::check_reference;
use crate::ids::{LocationId, Sku, TransferId};
use crate::limits::{MAX_LINE_QTY, MAX_TRANSFER_LINES};
use crate::quantity::Date;
use crate::validation::ValidationError;

/// One SKU of a transfer as requested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferLineRequest {
    /// The SKU.
    pub sku: Sku,
    /// Units to send, 1–1,000,000.
    pub qty: i64,
}

/// Create a transfer; nothing moves until it ships.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTransfer {
    /// The transfer's id.
    pub id: TransferId,
    /// Where the units leave from.
    pub from: LocationId,
    /// Where they go.
    pub to: LocationId,
    /// 1–100 distinct SKUs.
    pub lines: Vec<TransferLineRequest>,
    /// When the destination expects them.
    pub expected_arrival: Date,
    /// External reference.
    pub reference: Option<String>,
}

fn distinct_skus<'a>(skus: impl Iterator<Item = &'a Sku>) -> Result<(), ValidationError> {
    let mut seen = BTreeSet::new();
    for (i, sku) in skus.enumerate() {
        if !seen.insert(sku) {
            return Err(ValidationError::duplicate(
                format!("lines[{i}]"),
                format!("duplicate line for sku {sku}; merge the quantities"),
            ));
        }
    }
    Ok(())
}

fn line_count(n: usize, min: usize) -> Result<(), ValidationError> {
    if n < min || n > MAX_TRANSFER_LINES {
        return Err(ValidationError::new(
            "lines",
            format!("must hold {min}-{MAX_TRANSFER_LINES} lines, got {n}"),
        ));
    }
    Ok(())
}

impl CreateTransfer {
    /// Validates a transfer.
    pub fn new(
        id: TransferId,
        from: LocationId,
        to: LocationId,
        lines: Vec<TransferLineRequest>,
        expected_arrival: Date,
        reference: Option<String>,
    ) -> Result<Self, ValidationError> {
        if from == to {
            return Err(ValidationError::conflict("to", "must differ from `from`"));
        }
        line_count(lines.len(), 1)?;
        for (i, line) in lines.iter().enumerate() {
            if !(1..=MAX_LINE_QTY).contains(&line.qty) {
                return Err(ValidationError::new(
                    format!("lines[{i}].qty"),
                    format!("must be between 1 and {MAX_LINE_QTY}"),
                ));
            }
        }
        distinct_skus(lines.iter().map(|l| &l.sku))?;
        check_reference(&reference)?;
        Ok(Self {
            id,
            from,
            to,
            lines,
            expected_arrival,
            reference,
        })
    }
}

/// Units of one SKU received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiveLine {
    /// The SKU.
    pub sku: Sku,
    /// Units received in good condition.
    pub qty: i64,
    /// Units received damaged (they arrive in the `damaged` state).
    pub damaged: i64,
}

/// Receive units of a transfer at its destination. `close` ends it: what was shipped and
/// never arrived is recorded as a discrepancy, and nothing more is expected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiveTransfer {
    /// The transfer.
    pub id: TransferId,
    /// What arrived (none, to close only).
    pub lines: Vec<ReceiveLine>,
    /// Close the transfer after this receipt.
    pub close: bool,
}

impl ReceiveTransfer {
    /// Validates a receipt.
    pub fn new(
        id: TransferId,
        lines: Vec<ReceiveLine>,
        close: bool,
    ) -> Result<Self, ValidationError> {
        line_count(lines.len(), usize::from(!close))?;
        for (i, line) in lines.iter().enumerate() {
            let each = 0..=MAX_LINE_QTY;
            if !each.contains(&line.qty) || !each.contains(&line.damaged) {
                return Err(ValidationError::new(
                    format!("lines[{i}]"),
                    format!("qty and damaged must be between 0 and {MAX_LINE_QTY}"),
                ));
            }
            if line.qty + line.damaged == 0 {
                return Err(ValidationError::new(
                    format!("lines[{i}]"),
                    "receives nothing: give qty or damaged",
                ));
            }
        }
        distinct_skus(lines.iter().map(|l| &l.sku))?;
        Ok(Self { id, lines, close })
    }
}
