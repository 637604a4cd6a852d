//! Reservation expiry: each active reservation is expired when its TTL passes, through the
//! normal command path, so expiry is an event (`reservation_expired`) like any change.
//!
//! Deadlines live in a timer queue fed by new reservations and by a periodic scan of the
//! store (which also recovers them after a restart), so expiry fires within milliseconds
//! of the deadline instead of waiting for a sweep.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use stockflow_domain::{Command, DomainError, ReservationId, ReservationStatus};
use stockflow_storage::ports::{CommandRequest, WriteStore};
use stockflow_storage::{StoreError, now_ms};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;

/// How often the store is scanned for deadlines this process does not know.
const RESCAN: Duration = Duration::from_secs(30);
/// Reservations loaded per scan.
const SCAN_LIMIT: usize = 50_000;

/// Schedules expiries from request handlers.
#[derive(Clone)]
pub struct ExpiryHandle {
    tx: mpsc::UnboundedSender<(ReservationId, i64)>,
}

impl ExpiryHandle {
    /// Expire `id` at `expires_at_ms` unless it is settled first.
    pub fn schedule(&self, id: ReservationId, expires_at_ms: i64) {
        // The worker only stops at shutdown; the periodic scan covers anything lost then.
        let _ = self.tx.send((id, expires_at_ms));
    }
}

/// The handle and the receiving end for [`run`].
pub fn channel() -> (ExpiryHandle, mpsc::UnboundedReceiver<(ReservationId, i64)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (ExpiryHandle { tx }, rx)
}

fn delay_until(expires_at_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(expires_at_ms - now_ms()).unwrap_or(0))
}

/// Scans the store for deadlines now and every [`RESCAN`], feeding the timer loop. It runs
/// apart from the timers so a slow scan never delays an expiry that is due.
async fn scan(write: Arc<dyn WriteStore>, handle: ExpiryHandle, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(RESCAN);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        match write.active_reservation_deadlines(SCAN_LIMIT).await {
            Ok(deadlines) => {
                for (id, at) in deadlines {
                    handle.schedule(id, at);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot scan reservation deadlines"),
        }
    }
}

/// Expires reservations until `shutdown`. `handle` must be the sender of `requests`.
pub async fn run(
    write: Arc<dyn WriteStore>,
    handle: ExpiryHandle,
    mut requests: mpsc::UnboundedReceiver<(ReservationId, i64)>,
    shutdown: CancellationToken,
) {
    let scanner = tokio::spawn(scan(write.clone(), handle, shutdown.clone()));
    let mut queue: DelayQueue<(ReservationId, i64)> = DelayQueue::new();
    let mut scheduled: HashSet<ReservationId> = HashSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some((id, at)) = requests.recv() => {
                if scheduled.insert(id.clone()) {
                    queue.insert((id, at), delay_until(at));
                }
            }
            Some(expired) = queue.next(), if !queue.is_empty() => {
                let (id, at) = expired.into_inner();
                match expire(&*write, &id).await {
                    Ok(None) => { scheduled.remove(&id); }
                    Ok(Some(due)) => {
                        // Not due by the store's clock yet: try again when it is (a deadline
                        // recorded early, or a clock a little ahead of the store's).
                        let wait = delay_until(due).max(Duration::from_millis(50));
                        queue.insert((id, due.max(at)), wait);
                    }
                    Err(e) => {
                        tracing::warn!(reservation = %id, error = %e, "expiry failed; retrying");
                        queue.insert((id, at), Duration::from_millis(500));
                    }
                }
            }
        }
    }
    scanner.abort();
    tracing::info!("expiry worker stopped");
}

/// Expires one reservation. `Ok(None)` when it is settled (now or before), `Ok(Some(at))`
/// when it is not due until `at`.
async fn expire(write: &dyn WriteStore, id: &ReservationId) -> Result<Option<i64>, StoreError> {
    let result = write
        .execute(CommandRequest {
            command: Command::Expire { id: id.clone() },
            idempotency: None,
            trace_context: None,
        })
        .await;
    match result {
        Ok(outcome) => {
            let due = match &outcome.result {
                stockflow_domain::CommandResult::Reservation(r)
                    if r.status == ReservationStatus::Active =>
                {
                    Some(r.expires_at_ms)
                }
                _ => None,
            };
            if due.is_none() {
                metrics::counter!("stockflow_reservations_expired_total").increment(1);
            }
            Ok(due)
        }
        Err(StoreError::Domain(
            DomainError::ReservationNotActive { .. } | DomainError::ReservationNotFound(_),
        )) => Ok(None),
        Err(e) => Err(e),
    }
}
