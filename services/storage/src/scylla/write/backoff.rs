//! How conditional writes that lost a race are tried again: a bounded number of times,
//! after a short randomized pause.

use std::time::Duration;

/// Attempts of one group of operations (or one catalog update) before giving up with a
/// retryable error: enough to ride out a burst of contention on one key, few enough that
/// the client's own timeout is not reached first.
pub(crate) const MAX_ATTEMPTS: u32 = 30;
/// The shortest pause between two attempts, milliseconds.
const MIN_PAUSE_MS: u64 = 2;
/// How much each attempt widens the random part of the pause, milliseconds.
const PAUSE_STEP_MS: u64 = 20;
/// Attempts after which the pause stops growing.
const MAX_STEPS: u32 = 10;

/// Full jitter between 2 and 2 + 20·attempt milliseconds, from the clock's low bits (no
/// RNG needed: contenders read the clock at different nanoseconds).
pub(crate) fn jitter(attempt: u32) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let span = PAUSE_STEP_MS * u64::from(attempt.min(MAX_STEPS)) + 1;
    Duration::from_millis(MIN_PAUSE_MS + u64::from(nanos) % span)
}
