//! Reservation expiry: each active reservation is expired when its TTL passes, through the
//! normal command path, so expiry is an event (`reservation_expired`) like any change.
//!
//! The store's own deadline index is the timer ([`WriteStore::expire_due`]): this worker
//! keeps no entry per reservation, only the time of the next deadline, so a million active
//! reservations cost it nothing. It sleeps until that time, or until a request handler
//! reports an earlier one, then expires what is due in rounds of [`ROUND_LIMIT`], back to
//! back while rounds come back full: a burst of abandoned carts is applied in batches.
//!
//! Where replicas share a write store (ScyllaDB), one of them expires at a time: the holder
//! of the `expiry` lease. Racing replicas were safe (expiry is a conditional command) but
//! each scanned the same index and fought over the same rows, so every due reservation
//! cost one lost Paxos round per extra replica. The holder rescans often, since the other
//! replicas' handlers cannot wake it; another replica takes over once its lease expires.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use stockflow_storage::now_ms;
use stockflow_storage::ports::{ExpiryRound, WriteStore};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::leases::Owned;

/// Due reservations expired per round: enough that a burst drains in few rounds (the
/// embedded writer group-commits a round), few enough that one round holds the writer for
/// milliseconds and keeps only this many deadlines in memory.
const ROUND_LIMIT: usize = 2048;
/// Longest sleep between rounds of a process that is the only writer: deadlines reach it
/// through [`ExpiryHandle::schedule`], so this only bounds a missed wake-up.
pub const RESCAN_ALONE: Duration = Duration::from_secs(30);
/// Longest sleep between rounds of the lease holder among replicas: deadlines written by
/// the others are found this late at worst.
pub const RESCAN_SHARED: Duration = Duration::from_secs(1);
/// The lease group whose single shard names the replica that expires.
pub const LEASE_GROUP: &str = "expiry";
/// Longest wait before retrying after the store failed.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Tells the expiry worker about new deadlines. Cheap to clone; one per process.
#[derive(Clone, Default)]
pub struct ExpiryHandle {
    timer: Arc<Timer>,
}

#[derive(Default)]
struct Timer {
    /// When the worker will next wake (ms since the epoch); `i64::MAX` while it runs a
    /// round, so any deadline reported meanwhile wakes it again at once.
    wake_at: AtomicI64,
    wake: Notify,
}

impl ExpiryHandle {
    /// A reservation was made that expires at `expires_at_ms`: wake the worker earlier if
    /// it would sleep past that.
    pub fn schedule(&self, expires_at_ms: i64) {
        let before = self
            .timer
            .wake_at
            .fetch_min(expires_at_ms, Ordering::AcqRel);
        if before > expires_at_ms {
            // Keeps a permit if the worker is not waiting yet, so no wake-up is lost.
            self.timer.wake.notify_one();
        }
    }
}

fn delay_until(at_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(at_ms.saturating_sub(now_ms())).unwrap_or(0))
}

/// Expires reservations until `shutdown`, while `turn` holds shard 0 of [`LEASE_GROUP`];
/// `handle` is the one request handlers report to, `rescan` the longest sleep.
pub async fn run(
    write: Arc<dyn WriteStore>,
    handle: ExpiryHandle,
    mut turn: Owned,
    rescan: Duration,
    shutdown: CancellationToken,
) {
    let timer = &handle.timer;
    let mut backoff = Duration::from_millis(100);
    let mut leading = None;
    loop {
        let holds = turn.borrow_and_update().contains(&0);
        if leading != Some(holds) {
            leading = Some(holds);
            metrics::gauge!("stockflow_expiry_leader").set(f64::from(u8::from(holds)));
            tracing::info!(
                leading = holds,
                "expiry {}",
                if holds {
                    "runs here"
                } else {
                    "runs on another replica"
                }
            );
        }
        if !holds {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = turn.changed() => if changed.is_err() { break },
            }
            continue;
        }
        timer.wake_at.store(i64::MAX, Ordering::Release);
        let round = tokio::select! {
            _ = shutdown.cancelled() => break,
            round = write.expire_due(now_ms(), ROUND_LIMIT) => round,
        };
        let mut wake_at = now_ms().saturating_add(rescan.as_millis() as i64);
        match round {
            Ok(round) => {
                record(&round);
                let progress = round.expired + round.already_final > 0;
                if round.failed == 0 || progress {
                    backoff = Duration::from_millis(100);
                }
                if round.full && progress {
                    // More is due now. (Yield so a burst cannot starve the runtime.)
                    tokio::task::yield_now().await;
                    continue;
                }
                if round.failed > 0 {
                    tracing::warn!(
                        failed = round.failed,
                        error = %round.last_error.as_ref().map(ToString::to_string).unwrap_or_default(),
                        retry_in_ms = backoff.as_millis() as u64,
                        "cannot expire some due reservations; retrying"
                    );
                    wake_at = wake_at.min(now_ms() + backoff.as_millis() as i64);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                if let Some(next) = round.next_deadline_ms {
                    wake_at = wake_at.min(next);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot look for due reservations; retrying");
                wake_at = now_ms() + backoff.as_millis() as i64;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        // A deadline reported during the round already lowered `wake_at`; keep the earlier.
        timer.wake_at.fetch_min(wake_at, Ordering::AcqRel);
        if !sleep_until_due(timer, &mut turn, &shutdown).await {
            break;
        }
    }
    tracing::info!("expiry worker stopped");
}

/// Sleeps until `wake_at`, which handlers may lower meanwhile, or until the lease changes
/// hands; false on shutdown. A wake-up only rereads the time: a deadline reported during a
/// round leaves a permit even when it falls after the planned wake.
async fn sleep_until_due(timer: &Timer, turn: &mut Owned, shutdown: &CancellationToken) -> bool {
    // A process alone never hears from its lease keeper (there is none): the channel's
    // sender is gone, so stop listening to it instead of waking at once forever.
    let mut listening = turn.has_changed().is_ok();
    loop {
        let sleep = delay_until(timer.wake_at.load(Ordering::Acquire));
        if sleep.is_zero() {
            return true;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(sleep) => return true,
            _ = timer.wake.notified() => {}
            changed = turn.changed(), if listening => match changed {
                Ok(()) => return true,
                Err(_) => listening = false,
            },
        }
    }
}

fn record(round: &ExpiryRound) {
    metrics::counter!("stockflow_reservations_expired_total").increment(round.expired as u64);
    // Due reservations known to be still waiting after the round: those it could not
    // expire and, when it stopped at its limit, at least as many as it handled. 0 while
    // expiry keeps up; a figure that stays above 0 is holds outliving their deadline.
    let waiting = round.failed
        + if round.full {
            round.expired + round.already_final
        } else {
            0
        };
    metrics::gauge!("stockflow_expiry_backlog").set(waiting as f64);
    if round.failed > 0 {
        metrics::counter!("stockflow_expiry_failures_total").increment(round.failed as u64);
    }
}
