//! Commands, validated on construction: a value of these types is always well-formed.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::ids::{LocationId, ReservationId, Sku, StockKey};
use crate::limits::{
    MAX_LINE_QTY, MAX_LINES, MAX_ON_HAND, MAX_REFERENCE_CHARS, MAX_TTL_SECONDS, MAX_VERSION,
};
use crate::validation::ValidationError;

/// Why on-hand changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdjustReason {
    /// Goods received.
    Receipt,
    /// A physical count.
    CycleCount,
    /// Damaged or lost goods.
    Damage,
    /// A bookkeeping correction.
    Correction,
    /// A customer return.
    Return,
}

impl AdjustReason {
    /// Every reason, in the order the API lists them.
    pub const ALL: [AdjustReason; 5] = [
        AdjustReason::Receipt,
        AdjustReason::CycleCount,
        AdjustReason::Damage,
        AdjustReason::Correction,
        AdjustReason::Return,
    ];

    /// The reason spelled `text`, if any.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AdjustReason::Receipt => "receipt",
            AdjustReason::CycleCount => "cycle_count",
            AdjustReason::Damage => "damage",
            AdjustReason::Correction => "correction",
            AdjustReason::Return => "return",
        }
    }
}

/// How an adjustment changes on-hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnHandChange {
    /// Add (or, negative, remove) units.
    Delta(i64),
    /// Replace on-hand with a counted value.
    SetOnHand(i64),
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

/// Change on-hand at one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adjust {
    /// The key.
    pub key: StockKey,
    /// The change.
    pub change: OnHandChange,
    /// Why.
    pub reason: AdjustReason,
    /// External reference.
    pub reference: Option<String>,
    /// Optimistic-concurrency guard: apply only if the key is at this version.
    pub expected_version: Option<u64>,
}

impl Adjust {
    /// Validates an adjustment.
    pub fn new(
        key: StockKey,
        change: OnHandChange,
        reason: AdjustReason,
        reference: Option<String>,
        expected_version: Option<u64>,
    ) -> Result<Self, ValidationError> {
        match change {
            OnHandChange::Delta(0) => {
                return Err(ValidationError::new("delta", "must not be zero"));
            }
            // A range test, not `d.abs() > MAX`: `i64::MIN.abs()` overflows (to itself
            // in release builds), which let the most negative delta through.
            OnHandChange::Delta(d) if !(-MAX_LINE_QTY..=MAX_LINE_QTY).contains(&d) => {
                return Err(ValidationError::new(
                    "delta",
                    format!("must be between -{MAX_LINE_QTY} and {MAX_LINE_QTY}"),
                ));
            }
            OnHandChange::SetOnHand(n) if !(0..=MAX_ON_HAND).contains(&n) => {
                return Err(ValidationError::new(
                    "set_on_hand",
                    format!("must be between 0 and {MAX_ON_HAND}"),
                ));
            }
            _ => {}
        }
        if let Some(reference) = &reference {
            validate_reference("reference", reference)?;
        }
        if expected_version.is_some_and(|v| v > MAX_VERSION) {
            return Err(ValidationError::new(
                "expected_version",
                format!("must be between 0 and {MAX_VERSION}"),
            ));
        }
        Ok(Self {
            key,
            change,
            reason,
            reference,
            expected_version,
        })
    }
}

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
        if let Some(reference) = &reference {
            validate_reference("reference", reference)?;
        }
        Ok(Self {
            id,
            lines,
            ttl_seconds,
            reference,
        })
    }
}

/// Every command the write side applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Change on-hand.
    Adjust(Adjust),
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
}

impl Command {
    /// The command's name, for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Adjust(_) => "adjust",
            Command::Reserve(_) => "reserve",
            Command::Confirm { .. } => "confirm",
            Command::Release { .. } => "release",
            Command::Expire { .. } => "expire",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> StockKey {
        StockKey::new(
            Sku::parse("s").expect("valid"),
            LocationId::parse("l").expect("valid"),
        )
    }

    #[test]
    fn deltas_are_bounded_without_overflow() {
        let adjust = |d| {
            Adjust::new(
                key(),
                OnHandChange::Delta(d),
                AdjustReason::Receipt,
                None,
                None,
            )
        };
        for refused in [
            i64::MIN,
            i64::MIN + 1,
            -MAX_LINE_QTY - 1,
            MAX_LINE_QTY + 1,
            i64::MAX,
            0,
        ] {
            assert!(adjust(refused).is_err(), "delta {refused} must be refused");
        }
        for accepted in [-MAX_LINE_QTY, -1, 1, MAX_LINE_QTY] {
            assert!(
                adjust(accepted).is_ok(),
                "delta {accepted} must be accepted"
            );
        }
    }
}
