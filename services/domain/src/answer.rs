//! What a command answers, and how that answer is kept under its idempotency key.
//!
//! A command that executed answers the same every time its key is retried — its success,
//! or its refusal (the IETF Idempotency-Key draft and Stripe behave the same way). Every
//! backend records and replays through [`RecordedAnswer`], so they agree on what is kept.

use serde::{Deserialize, Serialize};

use crate::policy::SkuPolicy;
use crate::refusal::{Answer, Refusal};
use crate::reservation::Reservation;
use crate::stock::StockLevel;
use crate::transfer::Transfer;

/// What a client is told a command did; stored with the idempotency key so a retry gets
/// the same answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum CommandResult {
    /// The level after an adjustment.
    Stock(StockLevel),
    /// The reservation after reserve, confirm, release or expire.
    Reservation(Reservation),
    /// The transfer after create, ship, receive or cancel.
    Transfer(Transfer),
    /// A SKU's policy after a change.
    Policy(SkuPolicy),
}

/// A recorded answer. Serialized untagged: an accepted answer is the plain
/// [`CommandResult`] (records written before refusals were kept read back unchanged), a
/// refusal is `{"refused": <Refusal>}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RecordedAnswer {
    /// The command was refused after it ran against the stored state.
    Refused {
        /// Why.
        refused: Refusal,
    },
    /// The command was applied (or found nothing to do).
    Accepted(CommandResult),
}

impl RecordedAnswer {
    /// The answer to keep for `answer`, or `None` when a refusal is not kept (see
    /// [`Refusal::is_recorded`]).
    pub fn of(answer: &Answer<CommandResult>) -> Option<Self> {
        match answer {
            Ok(result) => Some(RecordedAnswer::Accepted(result.clone())),
            Err(e) if e.is_recorded() => Some(RecordedAnswer::Refused { refused: e.clone() }),
            Err(_) => None,
        }
    }

    /// The answer a key's record gives a request under that key: the recorded one when
    /// the request is the one the key stands for (`same_request`: the same fingerprint),
    /// else the key was reused for another request.
    pub fn replay(self, same_request: bool) -> Answer<CommandResult> {
        if same_request {
            self.into_answer()
        } else {
            Err(Refusal::IdempotencyKeyReused)
        }
    }

    /// The answer to give a retry.
    pub fn into_answer(self) -> Answer<CommandResult> {
        match self {
            RecordedAnswer::Accepted(result) => Ok(result),
            RecordedAnswer::Refused { refused } => Err(refused),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{LocationId, Region, Sku};
    use crate::refusal::ShortLine;

    fn level() -> StockLevel {
        let mut level = StockLevel::empty(
            Sku::parse("SKU-1").expect("sku"),
            LocationId::parse("store-1").expect("location"),
            Region::parse("eu").expect("region"),
        );
        level.on_hand = 3;
        level.version = 2;
        level
    }

    #[test]
    fn an_accepted_answer_reads_back_from_a_plain_result() {
        let result = CommandResult::Stock(level());
        let stored = serde_json::to_string(&result).expect("serialize");
        let back: RecordedAnswer = serde_json::from_str(&stored).expect("deserialize");
        assert_eq!(back.into_answer(), Ok(result));
    }

    #[test]
    fn a_refusal_round_trips() {
        let refusal = Refusal::InsufficientStock {
            lines: vec![ShortLine {
                sku: Sku::parse("SKU-1").expect("sku"),
                location: LocationId::parse("store-1").expect("location"),
                requested: 5,
                available: 2,
            }],
        };
        let answer = RecordedAnswer::of(&Err(refusal.clone())).expect("kept");
        let stored = serde_json::to_string(&answer).expect("serialize");
        let back: RecordedAnswer = serde_json::from_str(&stored).expect("deserialize");
        assert_eq!(back.into_answer(), Err(refusal));
    }

    #[test]
    fn records_written_before_keep_their_spelling() {
        let stored = r#"{"refused":{"location_not_found":"s1"}}"#;
        let back: RecordedAnswer = serde_json::from_str(stored).expect("deserialize");
        assert_eq!(
            back.into_answer(),
            Err(Refusal::LocationNotFound(
                LocationId::parse("s1").expect("location")
            ))
        );
    }

    #[test]
    fn answers_about_the_caller_or_the_key_are_not_kept() {
        let forbidden = Refusal::LocationForbidden {
            location: LocationId::parse("s1").expect("location"),
        };
        for refusal in [
            forbidden,
            Refusal::IdempotencyKeyReused,
            Refusal::RequestInProgress,
        ] {
            assert_eq!(RecordedAnswer::of(&Err(refusal)), None);
        }
    }
}
