//! Commands, validated on construction: a value of these types is always well-formed.
//!
//! - [`stock`] holds the commands on one key — adjustments, moves between states,
//!   incoming purchase-order lines, a location's policy — and a SKU's policy;
//! - [`allocation`] holds a channel's allocation at a key;
//! - [`reserve`] holds reservations;
//! - [`transfer`] holds transfers between two locations.

mod allocation;
mod reserve;
mod stock;
mod transfer;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::{ReservationId, TransferId};
use crate::limits::MAX_REFERENCE_CHARS;
use crate::validation::ValidationError;

pub use allocation::SetAllocation;
pub use reserve::{Reserve, ReserveLine};
pub use stock::{Adjust, CloseIncoming, ExpectIncoming, Move, OnHandChange, SetPolicy};
pub use transfer::{CreateTransfer, ReceiveLine, ReceiveTransfer, TransferLineRequest};

/// Why on-hand changed (or units moved between states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AdjustReason {
    /// Goods received.
    Receipt,
    /// A physical count.
    CycleCount,
    /// Damaged goods.
    Damage,
    /// A bookkeeping correction.
    Correction,
    /// A customer return.
    Return,
    /// A sale at a till (one command, no reservation).
    Sale,
    /// Theft or loss.
    Shrinkage,
    /// Written off (damaged beyond use, expired).
    WriteOff,
    /// Units of a transfer arriving (posted by the transfer itself).
    TransferIn,
    /// Units of a transfer leaving (posted by the transfer itself).
    TransferOut,
}

impl AdjustReason {
    /// Every reason, in the order the API lists them.
    pub const ALL: [AdjustReason; 10] = [
        AdjustReason::Receipt,
        AdjustReason::CycleCount,
        AdjustReason::Damage,
        AdjustReason::Correction,
        AdjustReason::Return,
        AdjustReason::Sale,
        AdjustReason::Shrinkage,
        AdjustReason::WriteOff,
        AdjustReason::TransferIn,
        AdjustReason::TransferOut,
    ];

    /// The reasons a client may give: transfers post their own.
    pub const CLIENT: [AdjustReason; 8] = [
        AdjustReason::Receipt,
        AdjustReason::CycleCount,
        AdjustReason::Damage,
        AdjustReason::Correction,
        AdjustReason::Return,
        AdjustReason::Sale,
        AdjustReason::Shrinkage,
        AdjustReason::WriteOff,
    ];

    /// The reason spelled `text`, if any.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// The client reason spelled `text` (as a request field named `field`).
    pub fn parse_client(field: &str, text: &str) -> Result<Self, ValidationError> {
        Self::CLIENT
            .into_iter()
            .find(|r| r.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::CLIENT.iter().map(|r| r.as_str()).collect();
                ValidationError::new(field, format!("must be one of {}", names.join(", ")))
            })
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AdjustReason::Receipt => "receipt",
            AdjustReason::CycleCount => "cycle_count",
            AdjustReason::Damage => "damage",
            AdjustReason::Correction => "correction",
            AdjustReason::Return => "return",
            AdjustReason::Sale => "sale",
            AdjustReason::Shrinkage => "shrinkage",
            AdjustReason::WriteOff => "write_off",
            AdjustReason::TransferIn => "transfer_in",
            AdjustReason::TransferOut => "transfer_out",
        }
    }
}

/// How an adjustment meets the state it lands on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A request: refused when it conflicts (`expected_version`, `expected_on_hand`) or
    /// would take more than the oversell policy allows.
    #[default]
    Check,
    /// A fact that already happened (a sale at a till): applied whatever it leaves, as if
    /// the key were `track_only` for this command. Only a store's token, at its own
    /// locations, may record.
    Record,
}

impl Mode {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Check => "check",
            Mode::Record => "record",
        }
    }
}

/// Checks a free-text reference (order number, ASN, ticket): 1–128 printable characters.
pub fn validate_reference(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() || value.chars().count() > MAX_REFERENCE_CHARS {
        return Err(ValidationError::new(
            field,
            format!("must be 1-{MAX_REFERENCE_CHARS} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

fn check_reference(reference: &Option<String>) -> Result<(), ValidationError> {
    match reference {
        Some(r) => validate_reference("reference", r),
        None => Ok(()),
    }
}

/// Every command the write side applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Change on-hand.
    Adjust(Adjust),
    /// Move units between states.
    Move(Move),
    /// Expect a purchase-order line.
    ExpectIncoming(ExpectIncoming),
    /// Close a purchase-order line.
    CloseIncoming(CloseIncoming),
    /// Set a SKU's policy, or a location's override.
    SetPolicy(SetPolicy),
    /// Set or remove a channel's allocation at a key.
    SetAllocation(SetAllocation),
    /// Hold stock.
    Reserve(Reserve),
    /// Turn a reservation into a sale.
    Confirm {
        /// The reservation.
        id: ReservationId,
    },
    /// Give held stock back.
    Release {
        /// The reservation.
        id: ReservationId,
    },
    /// Give held stock back because the TTL passed (issued by the expiry worker).
    Expire {
        /// The reservation.
        id: ReservationId,
    },
    /// Create a transfer (no stock moves yet).
    CreateTransfer(CreateTransfer),
    /// Ship a transfer: out of its source, in transit to its destination.
    ShipTransfer {
        /// The transfer.
        id: TransferId,
    },
    /// Receive (some of) a transfer at its destination.
    ReceiveTransfer(ReceiveTransfer),
    /// Cancel a transfer not shipped yet.
    CancelTransfer {
        /// The transfer.
        id: TransferId,
    },
}

impl Command {
    /// The command's name, for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Adjust(_) => "adjust",
            Command::Move(_) => "move",
            Command::ExpectIncoming(_) => "expect_incoming",
            Command::CloseIncoming(_) => "close_incoming",
            Command::SetPolicy(_) => "set_policy",
            Command::SetAllocation(_) => "set_allocation",
            Command::Reserve(_) => "reserve",
            Command::Confirm { .. } => "confirm",
            Command::Release { .. } => "release",
            Command::Expire { .. } => "expire",
            Command::CreateTransfer(_) => "create_transfer",
            Command::ShipTransfer { .. } => "ship_transfer",
            Command::ReceiveTransfer(_) => "receive_transfer",
            Command::CancelTransfer { .. } => "cancel_transfer",
        }
    }
}
