//! The quantity states of a stock key besides `on_hand` and `reserved`, and what is
//! expected to arrive: the vocabulary the stock rules ([`crate::stock`]) work in.
//!
//! `on_hand` (physical) is split into `available`, `reserved`, `damaged`, `quality_hold`
//! and `safety_stock`; `available` is derived ([`crate::stock::available`]), never stored.
//! `incoming` is not on hand: purchase-order lines and transfers in transit, each dated.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::{PurchaseOrderId, ReservationId, TransferId};
use crate::validation::ValidationError;

/// A state units can be moved out of (`POST /v1/moves`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Sellable: what is left of on-hand after every other state.
    Available,
    /// Broken units: on hand, never sold.
    Damaged,
    /// Held for inspection: on hand, not sold until released.
    QualityHold,
    /// Kept back as a buffer: on hand, not offered to channels.
    SafetyStock,
}

impl State {
    /// Every state, in the order the API lists them.
    pub const ALL: [State; 4] = [
        State::Available,
        State::Damaged,
        State::QualityHold,
        State::SafetyStock,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Available => "available",
            State::Damaged => "damaged",
            State::QualityHold => "quality_hold",
            State::SafetyStock => "safety_stock",
        }
    }

    /// The state spelled `text`, if any.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// Where moved units go: another state, or out of on-hand altogether (a write-off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Into a state.
    State(State),
    /// Off the books: on-hand drops.
    Gone,
}

impl Target {
    /// The wire spelling: a state's, or `gone`.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::State(s) => s.as_str(),
            Target::Gone => "gone",
        }
    }

    /// The target spelled `text`, if any.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "gone" => Some(Target::Gone),
            other => State::parse(other).map(Target::State),
        }
    }
}

/// A calendar day (`YYYY-MM-DD`): when incoming units are expected. A day, not an
/// instant: "available from 12 Dec" is what a checkout shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Date {
    year: u16,
    month: u8,
    day: u8,
}

impl Date {
    /// Validates `YYYY-MM-DD` (years 2000-9999, real days of the month).
    pub fn parse(field: &str, text: &str) -> Result<Self, ValidationError> {
        let bad = || ValidationError::new(field, "must be a date YYYY-MM-DD (2000-9999)");
        let bytes = text.as_bytes();
        if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
            return Err(bad());
        }
        let number = |range: std::ops::Range<usize>| -> Result<u16, ValidationError> {
            let part = &text[range];
            if !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            part.parse().map_err(|_| bad())
        };
        let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        let days = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return Err(bad()),
        };
        if !(2000..=9999).contains(&year) || day == 0 || day > days {
            return Err(bad());
        }
        Ok(Self {
            year,
            month: u8::try_from(month).map_err(|_| bad())?,
            day: u8::try_from(day).map_err(|_| bad())?,
        })
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

// By hand: the derive would see only the `String` it converts through.
impl schemars::JsonSchema for Date {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Date".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": "date",
            "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
        })
    }
}

impl TryFrom<String> for Date {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse("date", &value)
    }
}

impl From<Date> for String {
    fn from(d: Date) -> String {
        d.to_string()
    }
}

/// One line of a purchase order: what a receipt names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct PoLine {
    /// The purchase order (an id like any other).
    pub purchase_order: PurchaseOrderId,
    /// Its line number, 1 or more.
    pub line: u32,
}

impl fmt::Display for PoLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.purchase_order, self.line)
    }
}

/// Why units are expected.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A purchase-order line.
    PurchaseOrder(PoLine),
    /// A transfer from another location, shipped and not yet received (in transit).
    Transfer(TransferId),
}

/// Units expected at a key, not on hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incoming {
    /// Why.
    pub source: Source,
    /// When they are expected.
    pub expected: Date,
    /// Units still open (received ones have left this line for on-hand).
    pub qty: i64,
}

impl Incoming {
    /// Whether the units are in transit from another location.
    pub fn in_transit(&self) -> bool {
        matches!(self.source, Source::Transfer(_))
    }
}

/// Units expected on one day: what availability-to-promise shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Dated {
    /// The day.
    pub date: Date,
    /// Units expected that day.
    pub qty: i64,
}

/// `incoming` summed by day, earliest first.
pub fn by_date<'a>(incoming: impl IntoIterator<Item = &'a Incoming>) -> Vec<Dated> {
    let mut days: std::collections::BTreeMap<Date, i64> = std::collections::BTreeMap::new();
    for i in incoming {
        *days.entry(i.expected).or_default() += i.qty;
    }
    merge_days(days)
}

/// Adds `change` (per day, may be negative) to `days`, dropping days that reach zero.
pub fn add_days(days: &[Dated], change: &[Dated], sign: i64) -> Vec<Dated> {
    let mut all: std::collections::BTreeMap<Date, i64> =
        days.iter().map(|d| (d.date, d.qty)).collect();
    for d in change {
        *all.entry(d.date).or_default() += sign * d.qty;
    }
    merge_days(all)
}

fn merge_days(days: std::collections::BTreeMap<Date, i64>) -> Vec<Dated> {
    days.into_iter()
        .filter(|(_, qty)| *qty != 0)
        .map(|(date, qty)| Dated { date, qty })
        .collect()
}

/// Units of a reservation line accepted beyond stock under a backorder policy, waiting
/// for stock: filled in reservation order as stock arrives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backorder {
    /// The reservation.
    pub reservation_id: ReservationId,
    /// Units still waiting.
    pub qty: i64,
}

/// Units of a backorder that arriving stock covered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Filled {
    /// The reservation.
    pub reservation_id: ReservationId,
    /// Units covered by this change.
    pub qty: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_real_days() {
        assert_eq!(
            Date::parse("d", "2026-12-12").map(|d| d.to_string()),
            Ok("2026-12-12".to_string())
        );
        assert!(Date::parse("d", "2028-02-29").is_ok());
        for bad in [
            "2027-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-1-01",
            "1999-01-01",
            "2026-04-31",
            "+026-04-01",
            "2026-04-0a",
        ] {
            assert!(Date::parse("d", bad).is_err(), "{bad}");
        }
        let a = Date::parse("d", "2026-12-01").expect("date");
        let b = Date::parse("d", "2026-12-12").expect("date");
        assert!(a < b);
    }

    #[test]
    fn incoming_sums_by_day() {
        let day = |s| Date::parse("d", s).expect("date");
        let po = |n| {
            Source::PurchaseOrder(PoLine {
                purchase_order: PurchaseOrderId::parse("po-1").expect("id"),
                line: n,
            })
        };
        let lines = [
            Incoming {
                source: po(1),
                expected: day("2026-12-12"),
                qty: 5,
            },
            Incoming {
                source: po(2),
                expected: day("2026-12-01"),
                qty: 2,
            },
            Incoming {
                source: po(3),
                expected: day("2026-12-12"),
                qty: 1,
            },
        ];
        let days = by_date(&lines);
        assert_eq!(days.len(), 2);
        assert_eq!((days[0].qty, days[1].qty), (2, 6));
        let less = add_days(&days, &days[..1], -1);
        assert_eq!(less.len(), 1);
    }
}
