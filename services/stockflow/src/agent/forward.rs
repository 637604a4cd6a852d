//! Forwarding: the queue drained to the region, in order per key, a few keys at a time.
//!
//! - Each attempt uses the command's own Idempotency-Key, so an answer lost on the way
//!   (a timeout after the region committed) costs a resend, never a second sale.
//! - A failed attempt waits with exponential backoff and jitter (0.5 s doubling to 60 s);
//!   the loop wakes on its own timer, so a queue drains with no new sale to push it.
//! - A circuit breaker stops sending after consecutive failures to reach the region and
//!   probes it with one command at growing intervals; the first success sends every
//!   waiting command at once, so a backlog flows as soon as the region is back.
//! - A command the region refuses for good goes to the quarantine with the region's
//!   problem; the rest of its key and every other key go on.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::region::{Outcome, Region};
use super::store::{AgentStore, Queued, ViewRow};
use super::{AgentError, now_ms};

/// Commands sent at once (each the head of its keys).
const PARALLEL: usize = 8;
/// The first wait after a failed attempt; doubled per attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait between two attempts of one command.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Consecutive failures to reach the region that open the breaker.
const BREAKER_THRESHOLD: u32 = 3;
/// How long an open breaker waits before its first probe; doubled per failed probe up to
/// [`MAX_BACKOFF`].
const BREAKER_COOLDOWN: Duration = Duration::from_secs(1);
/// How often an idle loop looks at the queue even without a wake-up.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// What staff and metrics see of the link to the region.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LinkState {
    /// The last attempt reached the region and the breaker is closed.
    pub online: bool,
    /// The breaker is open (sending paused until the next probe).
    pub breaker_open: bool,
    /// When the region last acknowledged a command, Unix ms.
    pub last_acknowledged_ms: Option<i64>,
    /// The last failure, if the last attempt failed.
    pub last_error: Option<String>,
    /// The region refuses the token: staff must renew it.
    pub unauthorized: bool,
    /// Attempts that failed since the last success.
    pub consecutive_failures: u32,
}

/// The breaker and the link state, shared with the status page.
#[derive(Debug, Default)]
pub struct Link {
    state: Mutex<LinkState>,
    /// The current cooldown of an open breaker.
    cooldown: Mutex<Duration>,
    /// How long the region keeps an Idempotency-Key's answer, once read from it.
    key_lifetime: Mutex<Option<Duration>>,
}

impl Link {
    /// How long the region keeps an Idempotency-Key's answer, if known.
    pub fn key_lifetime(&self) -> Option<Duration> {
        *self.key_lifetime.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the region's key lifetime.
    pub fn set_key_lifetime(&self, lifetime: Duration) {
        *self.key_lifetime.lock().unwrap_or_else(|p| p.into_inner()) = Some(lifetime);
    }

    /// A snapshot for the status page.
    pub fn state(&self) -> LinkState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn succeeded(&self, now: i64) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let was_down = !s.online || s.breaker_open;
        s.online = true;
        s.breaker_open = false;
        s.unauthorized = false;
        s.last_error = None;
        s.consecutive_failures = 0;
        s.last_acknowledged_ms = Some(now);
        *self.cooldown.lock().unwrap_or_else(|p| p.into_inner()) = BREAKER_COOLDOWN;
        was_down
    }

    /// Records a failed attempt; returns how long the breaker now pauses sending.
    fn failed(&self, reason: &str, unreachable: bool, unauthorized: bool) -> Option<Duration> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.last_error = Some(reason.to_string());
        s.unauthorized = unauthorized;
        if !unreachable {
            // The region answered: it is up, whatever it said.
            s.online = true;
            return None;
        }
        s.consecutive_failures += 1;
        s.online = false;
        if s.consecutive_failures < BREAKER_THRESHOLD {
            return None;
        }
        s.breaker_open = true;
        let mut cooldown = self.cooldown.lock().unwrap_or_else(|p| p.into_inner());
        let pause = (*cooldown).max(BREAKER_COOLDOWN);
        *cooldown = (pause * 2).min(MAX_BACKOFF);
        Some(pause)
    }
}

/// The wait before attempt `attempts + 1`: exponential, capped, with equal jitter so
/// stores that lost the region together do not come back in lockstep.
pub fn backoff(attempts: u32) -> Duration {
    let exp = FIRST_BACKOFF
        .saturating_mul(1u32 << attempts.min(16))
        .min(MAX_BACKOFF);
    let half = exp / 2;
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(attempts);
    let jitter = hasher.finish() % (u64::try_from(half.as_millis()).unwrap_or(1).max(1));
    half + Duration::from_millis(jitter)
}

/// Drains the queue until `stop`.
pub async fn run(
    store: AgentStore,
    region: Arc<Region>,
    link: Arc<Link>,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    loop {
        if stop.is_cancelled() {
            return;
        }
        match round(&store, &region, &link).await {
            Ok(Round::Sent) => continue,
            Ok(Round::Paused(pause)) => {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
            }
            Ok(Round::Idle) => {
                let wait = match store.next_due_ms() {
                    Ok(Some(at)) => {
                        Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0))
                            .min(IDLE_TICK)
                    }
                    _ => IDLE_TICK,
                };
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = wake.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "the agent store failed while forwarding");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(IDLE_TICK) => {}
                }
            }
        }
    }
}

enum Round {
    /// Something was sent: look again at once.
    Sent,
    /// Nothing due.
    Idle,
    /// The breaker opened: wait this long before probing.
    Paused(Duration),
}

async fn round(store: &AgentStore, region: &Region, link: &Link) -> Result<Round, AgentError> {
    let state = link.state();
    // An open breaker lets one probe through per cooldown.
    let limit = if state.breaker_open { 1 } else { PARALLEL };
    let mut due = store.due(now_ms(), limit)?;
    if due.is_empty() {
        return Ok(Round::Idle);
    }
    // A command sent before without an answer, older than the region remembers keys: a
    // resend could apply it twice. Staff decide (the region's movements show whether it
    // landed).
    if let Some(lifetime) = link.key_lifetime() {
        let now = now_ms();
        let oldest = now - millis(lifetime);
        let (outlived, keep): (Vec<Queued>, Vec<Queued>) = due
            .into_iter()
            .partition(|q| q.attempts > 0 && q.created_at_ms < oldest);
        for q in outlived {
            let problem = serde_json::json!({
                "code": "outlived_idempotency_key",
                "detail": format!(
                    "sent before without an answer, and older than the {} s the region keeps an Idempotency-Key: check the region's movements for Idempotency-Key {} before resending",
                    lifetime.as_secs(), q.command_id
                ),
            });
            tracing::warn!(seq = q.seq, command_id = %q.command_id, "a command outlived the region's key lifetime; quarantined");
            store.quarantine(q.seq, &problem, now)?;
        }
        due = keep;
        if due.is_empty() {
            return Ok(Round::Sent);
        }
    }
    let attempts = due.into_iter().map(|queued| async move {
        let outcome = region
            .send(&queued.path, &queued.command_id, queued.seq, &queued.body)
            .await;
        (queued, outcome)
    });
    let mut pause = None;
    for (queued, outcome) in futures::future::join_all(attempts).await {
        let now = now_ms();
        match outcome? {
            Outcome::Applied(answer) => {
                let level = level_of(&answer);
                store.acknowledge(queued.seq, &answer, level, now)?;
                metrics::counter!("stockflow_agent_forwarded_total", "outcome" => "acknowledged")
                    .increment(1);
                if link.succeeded(now) {
                    // Back online: whatever waits on a backoff timer goes now.
                    let woken = store.retry_all_now(now)?;
                    tracing::info!(woken, "the region answers again; sending the backlog");
                }
            }
            Outcome::Refused(problem) => {
                tracing::warn!(seq = queued.seq, command_id = %queued.command_id, %problem,
                    "the region refused a command for good; it is in the quarantine");
                store.quarantine(queued.seq, &problem, now)?;
                metrics::counter!("stockflow_agent_forwarded_total", "outcome" => "quarantined")
                    .increment(1);
                link.succeeded(now);
            }
            Outcome::Retry {
                reason,
                after,
                unreachable,
                unauthorized,
            } => {
                let wait = after.unwrap_or_default().max(backoff(queued.attempts));
                store.retry_at(queued.seq, now + millis(wait), &reason)?;
                metrics::counter!("stockflow_agent_forwarded_total", "outcome" => "retry")
                    .increment(1);
                if let Some(p) = link.failed(&reason, unreachable, unauthorized) {
                    pause = Some(p);
                }
            }
        }
    }
    Ok(match pause {
        Some(p) => Round::Paused(p),
        None => Round::Sent,
    })
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The key's level in an adjustment's answer, which moves the view forward at once.
fn level_of(answer: &serde_json::Value) -> Option<ViewRow> {
    Some(ViewRow {
        sku: answer["sku"].as_str()?.to_string(),
        location: answer["location"].as_str()?.to_string(),
        on_hand: answer["on_hand"].as_i64()?,
        reserved: answer["reserved"].as_i64()?,
        version: answer["version"].as_u64()?,
        as_of_ms: now_ms(),
    })
}

/// A queued command, as the status page lists the oldest ones.
pub fn describe(queued: &Queued) -> String {
    format!("#{} {} {}", queued.seq, queued.path, queued.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_below_it() {
        for attempts in 0..30 {
            let d = backoff(attempts);
            assert!(d <= MAX_BACKOFF, "{attempts}: {d:?}");
            assert!(d >= FIRST_BACKOFF / 2, "{attempts}: {d:?}");
        }
        assert!(backoff(20) >= MAX_BACKOFF / 2);
    }

    #[test]
    fn the_breaker_opens_after_repeated_unreachable_attempts_and_closes_on_success() {
        let link = Link::default();
        assert_eq!(link.failed("down", true, false), None);
        assert_eq!(link.failed("down", true, false), None);
        let pause = link.failed("down", true, false).expect("opens");
        assert!(link.state().breaker_open && !link.state().online);
        let longer = link.failed("down", true, false).expect("still open");
        assert!(longer > pause, "{longer:?} > {pause:?}");
        assert!(link.succeeded(1), "it was down");
        assert!(link.state().online && !link.state().breaker_open);
        // A refusal of the token is an answer: the region is up.
        assert_eq!(link.failed("401", false, true), None);
        assert!(link.state().unauthorized && link.state().online);
    }
}
