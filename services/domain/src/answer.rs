//! What a command answered, as kept under its idempotency key.
//!
//! A command that executed answers the same every time its key is retried — its success,
//! or its refusal (the IETF Idempotency-Key draft and Stripe behave the same way). Every
//! backend records and replays through this type, so they agree on what is kept.

use serde::{Deserialize, Serialize};

/// How long an Idempotency-Key keeps its answer, on every backend: a retry within this
/// time gets the recorded answer; after it, the key is forgotten and a request under it
/// runs as new.
pub const IDEMPOTENCY_KEY_LIFETIME_SECS: u32 = 24 * 3600;

use crate::decide::CommandResult;
use crate::error::DomainError;

/// A recorded answer. Serialized untagged: an accepted answer is the plain
/// [`CommandResult`] (records written before refusals were kept read back unchanged), a
/// refusal is `{"refused": <DomainError>}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RecordedAnswer {
    /// The command was refused after it ran against the stored state.
    Refused {
        /// Why.
        refused: DomainError,
    },
    /// The command was applied (or found nothing to do).
    Accepted(CommandResult),
}

impl RecordedAnswer {
    /// The answer to keep for `outcome`, or `None` when a refusal is not kept (see
    /// [`DomainError::is_recorded`]).
    pub fn of(outcome: &Result<CommandResult, DomainError>) -> Option<Self> {
        match outcome {
            Ok(result) => Some(RecordedAnswer::Accepted(result.clone())),
            Err(e) if e.is_recorded() => Some(RecordedAnswer::Refused { refused: e.clone() }),
            Err(_) => None,
        }
    }

    /// The answer to give a retry.
    pub fn into_result(self) -> Result<CommandResult, DomainError> {
        match self {
            RecordedAnswer::Accepted(result) => Ok(result),
            RecordedAnswer::Refused { refused } => Err(refused),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Region;
    use crate::error::{ShortLine, ValidationError};
    use crate::ids::{LocationId, Sku};
    use crate::stock::StockLevel;

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
        assert_eq!(back.into_result(), Ok(result));
    }

    #[test]
    fn a_refusal_round_trips() {
        let refusal = DomainError::InsufficientStock {
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
        assert_eq!(back.into_result(), Err(refusal));
    }

    #[test]
    fn a_malformed_command_is_not_kept() {
        let invalid = DomainError::Invalid(ValidationError::new("quantity", "must be positive"));
        assert_eq!(RecordedAnswer::of(&Err(invalid)), None);
    }
}
