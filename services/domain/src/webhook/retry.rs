//! How a failing delivery is retried, when it gives up, and when a subscription that
//! keeps failing is disabled.
//!
//! Exponential backoff with full jitter (each delay drawn uniformly below an exponentially
//! growing, capped ceiling) spreads the retries of many subscriptions after a shared outage
//! instead of stampeding the receiver when it returns. Attempts continue until the
//! delivery's window has passed since its first attempt (24 hours by default, Standard
//! Webhooks practice); the last attempt is made at the window's end, so a receiver down
//! for less than the window still gets the event. Then the event goes to the
//! subscription's dead letters and the next one is tried.

use std::time::Duration;

/// The retry schedule and the disable rule of every subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The ceiling of the first retry's delay; it doubles per attempt.
    pub first_delay: Duration,
    /// The highest ceiling.
    pub max_delay: Duration,
    /// How long after its first attempt a delivery is still retried.
    pub window: Duration,
    /// Consecutive dead letters (no success in between) after which the subscription is
    /// disabled: each dead letter is a whole window of failure.
    pub disable_after_dead_letters: u32,
}

/// Standard Webhooks practice: retries spread over a day, disabled after several days of
/// failure.
impl Default for RetryPolicy {
    fn default() -> Self {
        Self::over(DEFAULT_WINDOW, DEFAULT_DISABLE_AFTER)
    }
}

/// The default retry window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// The default number of consecutive dead letters that disables a subscription.
pub const DEFAULT_DISABLE_AFTER: u32 = 3;

/// What follows a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AfterFailure {
    /// Try again at this time (Unix milliseconds).
    RetryAt(i64),
    /// The window has passed: dead-letter the event and move on.
    DeadLetter,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl RetryPolicy {
    /// A policy whose whole window is `window`: the first ceiling 5 s and the cap an hour,
    /// or a 100th and a 10th of a window too short for those (tests use seconds).
    pub fn over(window: Duration, disable_after_dead_letters: u32) -> Self {
        Self {
            first_delay: (window / 100)
                .min(Duration::from_secs(5))
                .max(Duration::from_millis(50)),
            max_delay: (window / 10)
                .min(Duration::from_secs(3600))
                .max(Duration::from_millis(100)),
            window,
            disable_after_dead_letters,
        }
    }

    /// The ceiling of the delay after the `attempts`-th failed attempt (1-based).
    pub fn ceiling(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(30);
        self.first_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay)
    }

    /// What to do after the `attempts`-th attempt of a delivery failed at `now_ms`, its first
    /// attempt having been at `first_attempt_ms`. `random` is any uniformly random number
    /// (the caller's randomness: this crate reads none).
    pub fn after_failure(
        &self,
        first_attempt_ms: i64,
        now_ms: i64,
        attempts: u32,
        random: u64,
    ) -> AfterFailure {
        let deadline = first_attempt_ms.saturating_add(ms(self.window));
        if now_ms >= deadline {
            return AfterFailure::DeadLetter;
        }
        let ceiling = u64::try_from(ms(self.ceiling(attempts))).unwrap_or(u64::MAX);
        // Full jitter, but never below half the first delay: a draw near zero must not
        // turn into a hot loop against a receiver that is down.
        let floor = u64::try_from(ms(self.first_delay) / 2).unwrap_or(0);
        let delay = (random % ceiling.saturating_add(1)).max(floor);
        let at = now_ms.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX));
        // The last attempt is made at the deadline itself, so the window is used in full.
        AfterFailure::RetryAt(at.min(deadline))
    }

    /// Whether a subscription with `consecutive_dead_letters` since its last success is
    /// disabled.
    pub fn should_disable(&self, consecutive_dead_letters: u32) -> bool {
        self.disable_after_dead_letters > 0
            && consecutive_dead_letters >= self.disable_after_dead_letters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.ceiling(1), Duration::from_secs(5));
        assert_eq!(p.ceiling(2), Duration::from_secs(10));
        assert_eq!(p.ceiling(5), Duration::from_secs(80));
        assert_eq!(p.ceiling(20), Duration::from_secs(3600));
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(3600));
    }

    #[test]
    fn delays_are_jittered_below_the_ceiling_and_above_the_floor() {
        let p = RetryPolicy::default();
        for random in [0u64, 1, 2_499, 2_500, 4_999, 5_000, 5_001, u64::MAX] {
            let AfterFailure::RetryAt(at) = p.after_failure(0, 1_000, 1, random) else {
                panic!("retries within the window");
            };
            let delay = at - 1_000;
            assert!((2_500..=5_000).contains(&delay), "{random}: {delay}");
        }
        // Different draws spread the retries.
        let draws: std::collections::BTreeSet<_> = (0..50u64)
            .map(|r| p.after_failure(0, 0, 8, r.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
            .collect();
        assert!(draws.len() > 40);
    }

    /// Walks a delivery that always fails with the worst draws (the longest delays): it is
    /// retried for the whole 24 hours, the last attempt at the deadline, then dead-lettered.
    #[test]
    fn a_delivery_is_retried_for_the_whole_window_then_dead_lettered() {
        let p = RetryPolicy::default();
        assert!(p.window >= Duration::from_secs(24 * 3600));
        for random in [0u64, u64::MAX / 3, u64::MAX] {
            let (first, mut now, mut attempts) = (10 * HOUR, 10 * HOUR, 1u32);
            while let AfterFailure::RetryAt(at) = p.after_failure(first, now, attempts, random) {
                assert!(at > now && at <= first + 24 * HOUR);
                now = at;
                attempts += 1;
                assert!(attempts < 100_000, "never gives up");
            }
            assert_eq!(
                now,
                first + 24 * HOUR,
                "the last attempt is at the deadline"
            );
            assert!(attempts > 10, "{attempts} attempts in a day");
        }
    }

    #[test]
    fn a_short_window_for_tests_scales_its_delays() {
        let p = RetryPolicy::over(Duration::from_secs(10), 2);
        assert_eq!(p.first_delay, Duration::from_millis(100));
        assert_eq!(p.max_delay, Duration::from_secs(1));
        assert_eq!(p.after_failure(0, 10_000, 3, 7), AfterFailure::DeadLetter);
        assert!(matches!(
            p.after_failure(0, 9_990, 3, 7),
            AfterFailure::RetryAt(10_000)
        ));
    }

    #[test]
    fn disabled_after_consecutive_dead_letters() {
        let p = RetryPolicy::default();
        assert!(!p.should_disable(0));
        assert!(!p.should_disable(2));
        assert!(p.should_disable(3));
        let never = RetryPolicy {
            disable_after_dead_letters: 0,
            ..p
        };
        assert!(!never.should_disable(1000));
    }
}
