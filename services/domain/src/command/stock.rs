//! Commands on one stock key (adjust, move, incoming, a location's policy) and on a SKU's
//! policy.

use serde::{Deserialize, Serialize};

use super::{AdjustReason, Mode, check_reference};
use crate::ids::{LocationId, Sku, StockKey};
use crate::limits::{MAX_LINE_QTY, MAX_ON_HAND, MAX_VERSION};
use crate::policy::Settings;
use crate::quantity::{Date, PoLine, State, Target};
use crate::validation::ValidationError;

/// How an adjustment changes on-hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnHandChange {
    /// Add (or, negative, remove) units.
    Delta(i64),
    /// Replace on-hand with a counted value.
    SetOnHand(i64),
}

fn quantity(field: &str, qty: i64) -> Result<(), ValidationError> {
    if (1..=MAX_LINE_QTY).contains(&qty) {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!("must be between 1 and {MAX_LINE_QTY}"),
        ))
    }
}

pub(super) fn version(field: &str, v: Option<u64>) -> Result<(), ValidationError> {
    if v.is_some_and(|v| v > MAX_VERSION) {
        return Err(ValidationError::new(
            field,
            format!("must be between 0 and {MAX_VERSION}"),
        ));
    }
    Ok(())
}

/// Checks a purchase-order line number.
pub(crate) fn po_line(line: u32) -> Result<(), ValidationError> {
    if line == 0 {
        return Err(ValidationError::new("line", "must be 1 or more"));
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
    /// A count's guard (with `set_on_hand` only): apply only if on-hand is still what the
    /// clerk started counting from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_on_hand: Option<i64>,
    /// A request checked against the state, or a fact recorded whatever it leaves.
    #[serde(default)]
    pub mode: Mode,
    /// The purchase-order line a receipt receives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incoming: Option<PoLine>,
}

impl Adjust {
    /// Validates an adjustment (checked, no count guard, no purchase order).
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
        check_reference(&reference)?;
        version("expected_version", expected_version)?;
        Ok(Self {
            key,
            change,
            reason,
            reference,
            expected_version,
            expected_on_hand: None,
            mode: Mode::Check,
            incoming: None,
        })
    }

    /// This adjustment as a recorded fact.
    pub fn recorded(mut self) -> Self {
        self.mode = Mode::Record;
        self
    }

    /// This count guarded by the on-hand it started from.
    pub fn expecting_on_hand(mut self, expected: i64) -> Result<Self, ValidationError> {
        if !matches!(self.change, OnHandChange::SetOnHand(_)) {
            return Err(ValidationError::new(
                "expected_on_hand",
                "only a count (set_on_hand) may carry expected_on_hand",
            ));
        }
        if !(0..=MAX_ON_HAND).contains(&expected) {
            return Err(ValidationError::new(
                "expected_on_hand",
                format!("must be between 0 and {MAX_ON_HAND}"),
            ));
        }
        self.expected_on_hand = Some(expected);
        Ok(self)
    }

    /// This receipt as the receipt of purchase-order line `po`.
    pub fn receiving(mut self, po: PoLine) -> Result<Self, ValidationError> {
        let positive = matches!(self.change, OnHandChange::Delta(d) if d > 0);
        if !positive || self.reason != AdjustReason::Receipt {
            // Each field is valid alone; together they conflict (422).
            return Err(ValidationError::conflict(
                "purchase_order_line",
                "only a receipt (reason receipt, a positive delta) names a purchase-order line",
            ));
        }
        po_line(po.line)?;
        self.incoming = Some(po);
        Ok(self)
    }
}

/// Move units between states of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    /// The key.
    pub key: StockKey,
    /// The state the units leave.
    pub from: State,
    /// Where they go.
    pub to: Target,
    /// Units, 1–1,000,000.
    pub qty: i64,
    /// Why.
    pub reason: AdjustReason,
    /// External reference.
    pub reference: Option<String>,
}

impl Move {
    /// Validates a move.
    pub fn new(
        key: StockKey,
        from: State,
        to: Target,
        qty: i64,
        reason: AdjustReason,
        reference: Option<String>,
    ) -> Result<Self, ValidationError> {
        if to == Target::State(from) {
            return Err(ValidationError::new("to", "must differ from `from`"));
        }
        quantity("qty", qty)?;
        check_reference(&reference)?;
        Ok(Self {
            key,
            from,
            to,
            qty,
            reason,
            reference,
        })
    }
}

/// Expect a purchase-order line at a key on a date (or revise the line's open quantity and
/// date).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectIncoming {
    /// The key.
    pub key: StockKey,
    /// The purchase-order line.
    pub po: PoLine,
    /// Units still expected, 1–1,000,000.
    pub qty: i64,
    /// When.
    pub expected: Date,
    /// External reference.
    pub reference: Option<String>,
}

impl ExpectIncoming {
    /// Validates an incoming line.
    pub fn new(
        key: StockKey,
        po: PoLine,
        qty: i64,
        expected: Date,
        reference: Option<String>,
    ) -> Result<Self, ValidationError> {
        po_line(po.line)?;
        quantity("qty", qty)?;
        check_reference(&reference)?;
        Ok(Self {
            key,
            po,
            qty,
            expected,
            reference,
        })
    }
}

/// Close a purchase-order line: what was not received is no longer expected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseIncoming {
    /// The key.
    pub key: StockKey,
    /// The purchase-order line.
    pub po: PoLine,
    /// External reference.
    pub reference: Option<String>,
}

impl CloseIncoming {
    /// Validates a close.
    pub fn new(
        key: StockKey,
        po: PoLine,
        reference: Option<String>,
    ) -> Result<Self, ValidationError> {
        po_line(po.line)?;
        check_reference(&reference)?;
        Ok(Self { key, po, reference })
    }
}

/// Set a SKU's policy (no location) or a location's override of it: the settings given
/// replace the ones at that level (a field left out inherits).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetPolicy {
    /// The SKU.
    pub sku: Sku,
    /// The location whose override this is; `None` for the SKU's own policy.
    pub location: Option<LocationId>,
    /// The settings.
    pub settings: Settings,
    /// Apply only if the policy's record (the SKU's, or the key's) is at this version.
    pub expected_version: Option<u64>,
    /// External reference (change ticket).
    pub reference: Option<String>,
}

impl SetPolicy {
    /// Validates a policy change.
    pub fn new(
        sku: Sku,
        location: Option<LocationId>,
        settings: Settings,
        expected_version: Option<u64>,
        reference: Option<String>,
    ) -> Result<Self, ValidationError> {
        version("expected_version", expected_version)?;
        check_reference(&reference)?;
        Ok(Self {
            sku,
            location,
            settings,
            expected_version,
            reference,
        })
    }

    /// The key of a location's override.
    pub fn key(&self) -> Option<StockKey> {
        self.location
            .as_ref()
            .map(|l| StockKey::new(self.sku.clone(), l.clone()))
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

    #[test]
    fn guards_and_receipts_fit_their_change() {
        let count = Adjust::new(
            key(),
            OnHandChange::SetOnHand(5),
            AdjustReason::CycleCount,
            None,
            None,
        )
        .expect("count");
        assert!(count.clone().expecting_on_hand(4).is_ok());
        let po = PoLine {
            purchase_order: crate::ids::PurchaseOrderId::parse("po").expect("id"),
            line: 1,
        };
        assert!(
            count.receiving(po.clone()).is_err(),
            "a count names no PO line"
        );
        let receipt = Adjust::new(
            key(),
            OnHandChange::Delta(5),
            AdjustReason::Receipt,
            None,
            None,
        )
        .expect("receipt");
        assert!(receipt.clone().expecting_on_hand(4).is_err());
        assert!(receipt.receiving(po).is_ok());
        assert!(
            Move::new(
                key(),
                State::Damaged,
                Target::State(State::Damaged),
                1,
                AdjustReason::Damage,
                None
            )
            .is_err()
        );
    }
}
