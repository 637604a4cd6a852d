//! Claims on idempotency keys of commands that span partitions (a saga): the key is
//! claimed before the command runs and finished with its answer, so a retry replays a
//! finished command, resumes an abandoned one, and waits for one still running.

use crate::saga::RecoveryWindow;

/// `claimed_at` of a claim whose holder gave up after an infrastructure error: anyone may
/// take it over at once, resuming the command.
pub const GIVEN_UP: i64 = 0;

/// Where a claimed command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimState {
    /// Running (or abandoned by its holder).
    Pending,
    /// Finished: the claim holds the answer.
    Done,
}

impl ClaimState {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimState::Pending => "pending",
            ClaimState::Done => "done",
        }
    }

    /// Reads the stored spelling back.
    pub fn parse(text: &str) -> Option<Self> {
        [ClaimState::Pending, ClaimState::Done]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// What a request finds in a key's claim, when it could not take the claim itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnClaimed {
    /// The key was claimed for another request: `idempotency_key_reused`.
    Reused,
    /// The command finished: replay its answer.
    Replay,
    /// Its holder gave up or vanished (its claim is older than the saga recovery window,
    /// by when expiry may have rolled its saga back): take the claim over.
    TakeOver,
    /// Its holder is still running: `request_in_progress`.
    InProgress,
}

/// What a request with the claim's fingerprint (`same_request`) does about a claim in
/// `state`, taken at `claimed_at_ms`, at `now_ms`.
pub fn on_claimed(
    same_request: bool,
    state: Option<ClaimState>,
    claimed_at_ms: i64,
    now_ms: i64,
    window: RecoveryWindow,
) -> OnClaimed {
    if !same_request {
        OnClaimed::Reused
    } else if state == Some(ClaimState::Done) {
        OnClaimed::Replay
    } else if claimed_at_ms == GIVEN_UP || window.is_idle(claimed_at_ms, now_ms) {
        OnClaimed::TakeOver
    } else {
        OnClaimed::InProgress
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_taken_over_only_once_given_up_or_stale() {
        let window = RecoveryWindow { ms: 1_000 };
        let pending = Some(ClaimState::Pending);
        assert_eq!(
            on_claimed(true, pending, 500, 1_000, window),
            OnClaimed::InProgress
        );
        assert_eq!(
            on_claimed(true, pending, 500, 1_500, window),
            OnClaimed::TakeOver
        );
        assert_eq!(
            on_claimed(true, pending, GIVEN_UP, 10, window),
            OnClaimed::TakeOver
        );
        assert_eq!(
            on_claimed(true, Some(ClaimState::Done), 500, 600, window),
            OnClaimed::Replay
        );
        assert_eq!(
            on_claimed(false, Some(ClaimState::Done), 500, 600, window),
            OnClaimed::Reused
        );
        assert_eq!(ClaimState::parse("done"), Some(ClaimState::Done));
    }
}
