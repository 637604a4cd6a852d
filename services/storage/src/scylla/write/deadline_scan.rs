//! Expiry rounds over ScyllaDB's deadline index. `reservation_deadlines` (one partition per minute, rows ordered by
//! deadline) is the timer. A floor kept in memory marks the time before which every row has
//! been dealt with, so a round reads forward from it with a lower bound on the clustering
//! key and never rereads the tombstones of rows it removed. A round holds at most its
//! limit of rows (times the minutes read at once), however many reservations are active.
//!
//! The index lives apart from the reservations, so a round also tidies it: a row whose
//! reservation is final is removed, and a recovery row of a reservation that is active
//! again is moved to that reservation's own deadline.

use std::sync::atomic::{AtomicI64, Ordering};

use futures::StreamExt;
use stockflow_domain::ReservationId;

use super::deadlines::{LOOK_BACK_MS, deadline, forget_deadline, minute_of, minute_start};
use super::partition::Partitions;
use crate::expiry_rounds::{self, Expired};
use crate::ports::{ExpiryRound, WriteStore};
use crate::scylla::cql::query;
use crate::scylla::cql::rows::DeadlineRow;
use crate::{Result, StoreError, now_ms};
/// How far behind now the floor stays, so a replica whose clock is this far behind ours
/// cannot write a deadline below it (every deadline is written in its writer's future).
const CLOCK_SKEW_MS: i64 = 120_000;
/// How far ahead a round looks for the next deadline; beyond it the caller's rescan does.
const LOOK_AHEAD_MS: i64 = 10 * 60_000;
/// Minute partitions read at once.
const PARALLEL_MINUTES: usize = 8;
/// Expiries in flight at once, each a few conditional batches.
const CONCURRENCY: usize = 64;
/// How long past its time a deadline whose reservation is not found is kept: longer than
/// any reserve can still be retrying its batch (30 attempts, each bounded by the driver's
/// and the node's timeouts).
const MISSING_GRACE_MS: i64 = 120_000;
/// How often such a deadline is looked at again meanwhile.
const MISSING_RECHECK_MS: i64 = 2_000;

/// Everything in the index before this time has been dealt with.
#[derive(Debug)]
pub(crate) struct DeadlineFloor(AtomicI64);

impl Default for DeadlineFloor {
    fn default() -> Self {
        Self(AtomicI64::new(now_ms() - LOOK_BACK_MS))
    }
}

/// One expiry round over the index (see [`WriteStore::expire_due`]).
pub(crate) async fn expire_due(
    store: &dyn WriteStore,
    p: &Partitions,
    floor: &DeadlineFloor,
    now: i64,
    limit: usize,
) -> Result<ExpiryRound> {
    let from = floor.0.load(Ordering::Acquire);
    let until = now + LOOK_AHEAD_MS;
    let rows = scan(p, from, until, now, limit + 1).await?;
    let mut round = ExpiryRound::default();
    let mut due = Vec::new();
    for (id, at) in rows {
        if at > now {
            round.note_deadline(at);
            break;
        }
        if due.len() == limit {
            round.full = true;
            break;
        }
        due.push((id, at));
    }
    let last_due = due.last().map(|(_, at)| *at);
    let left = expiry_rounds::expire_all(store, due, CONCURRENCY, &mut round, |id, at, found| {
        tidy(p, id, at, found)
    })
    .await;
    // The floor moves up to the first row still in the index that this round saw, and no
    // closer to now than the clock skew allows.
    let seen_to = match (round.full, last_due, round.next_deadline_ms) {
        (true, Some(at), _) => at,
        (_, _, Some(next)) => next,
        _ => until,
    };
    let to = left
        .map_or(seen_to, |at| at.min(seen_to))
        .min(now - CLOCK_SKEW_MS);
    floor.0.fetch_max(to.max(from), Ordering::AcqRel);
    Ok(round)
}

/// Index rows from `from` on, in deadline order, until `limit` rows or the first row after
/// `now` (the next deadline) or the minute of `until`.
async fn scan(
    p: &Partitions,
    from: i64,
    until: i64,
    now: i64,
    limit: usize,
) -> Result<Vec<(ReservationId, i64)>> {
    let limit_i32 = i32::try_from(limit).unwrap_or(i32::MAX);
    let mut reads = futures::stream::iter(minute_of(from)..=minute_of(until))
        .map(|minute| async move {
            let lower = from.max(minute_start(minute));
            query::rows::<DeadlineRow>(
                &p.session,
                "scan deadlines",
                &p.st.deadlines_from,
                (minute, lower, limit_i32),
            )
            .await
        })
        // In minute order: rows come out sorted, and reading stops as soon as it can.
        .buffered(PARALLEL_MINUTES);
    let mut out = Vec::new();
    while let Some(rows) = reads.next().await {
        for row in rows? {
            let id = ReservationId::parse(row.id).map_err(StoreError::corrupt("deadline id"))?;
            let at = row.expires_at;
            out.push((id, at));
            if out.len() >= limit || at > now {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

/// Keeps the index true to what expiring `id` (seen at `at`) found.
async fn tidy(p: &Partitions, id: ReservationId, at: i64, found: Expired) -> Expired {
    let forget = |at: i64| {
        let id = id.clone();
        async move { forget_deadline(p, &id, at).await }
    };
    match found {
        // The expiry removed the row of the reservation's own deadline with its command.
        Expired::Now(deadline) if deadline == at => found,
        // The row is written before the reservation's conditional batch, which may still be
        // retrying (contention, a slow node): dropping the row now could leave the
        // reservation active with no deadline. It is looked at again until no command that
        // wrote it can still be running.
        Expired::Missing if now_ms() - at < MISSING_GRACE_MS => {
            Expired::NotDue(now_ms() + MISSING_RECHECK_MS)
        }
        Expired::Now(_) | Expired::AlreadyFinal | Expired::Missing => match forget(at).await {
            Ok(_) => found,
            Err(e) => Expired::Failed(e),
        },
        // A recovery row (a saga that was mid-way) of a reservation active again: its own
        // deadline takes over, written before this row goes so nothing is unreachable.
        Expired::NotDue(real) if real != at => {
            if let Err(e) = deadline(p, &id, real).await {
                return Expired::Failed(e);
            }
            match forget(at).await {
                Ok(_) => Expired::NotDue(real),
                Err(e) => Expired::Failed(e),
            }
        }
        other => other,
    }
}
