//! Reservations that span partitions: a saga over per-partition steps, each made exactly
//! once by its reservation line, with every intermediate state recoverable.
//!
//! A header row in `reservations` carries the saga's state, moved by LWT:
//!
//! ```text
//! pending ──▶ active ──▶ settling:<how> ──▶ confirmed | released | expired
//!    │
//!    └──▶ aborting ──▶ (deleted: every line given back, the id free again)
//! ```
//!
//! - Reserve: index rows and deadlines first (plain, harmless alone), the header `pending`
//!   (`IF NOT EXISTS`), one step per line (the line row appears with the hold), the header
//!   `active`. A line that is short gives back the lines already held (their rows are
//!   *deleted*, so nothing of the failed attempt is reused by a later one) and removes the
//!   header. An infrastructure failure leaves the saga `pending`: the client's retry (same
//!   key) resumes it, and if nobody does, expiry aborts it once it has been idle for the
//!   recovery window ([`stockflow_domain::saga::RecoveryWindow`]).
//! - Settle: `active → settling:<how>` decides the outcome (one winner among confirm,
//!   release and expiry), then one step per line, then the final status ([`settle`]).
//!   Expiry finishes a settlement left half-way, again a recovery window after it began.
//!
//! **A pending saga is fenced.** Its lines and expiry's rollback exclude each other
//! through conditional writes on the one header row, so no hold can outlive its
//! reservation (a slow saga's later line landing after expiry gave the earlier ones back):
//!
//! - An *attempt* is the header's `(owner, created_at)`; a retry that resumes a pending
//!   saga adopts it (and writes the very same line records), a retry after a rollback is a
//!   new attempt.
//! - Before each line step (but the first of a new attempt, whose header was just written)
//!   the attempt takes a *lease*: `updated_at = now IF status = 'pending' AND owner AND
//!   created_at` are its own. The step is decided and sent only within half the recovery
//!   window after that ([`KeyOp::not_after`]); the driver's timeout bounds when it lands.
//!   The lease is stamped by the saga's clock and judged by expiry's: what is left of the
//!   window's second half after the driver's request timeout (10 s) is the clock skew
//!   tolerated (5 s at the default 30 s).
//! - Expiry rolls back only a saga idle for the whole window, by `pending → aborting IF
//!   updated_at = <the value it judged>`: a lease taken meanwhile makes it lose, and once it
//!   wins no lease can be taken. Its rollback reads each line through Paxos, completing a
//!   step still in flight, and gives back what that attempt holds.
//! - An attempt whose lease, own rollback or `pending → active` is refused looks at the
//!   header: made `active` by a concurrent run of the same attempt, it answers that;
//!   otherwise it gives back every line *it* holds (never another attempt's), so a line
//!   that landed after the header left `pending` is compensated by its writer.
//! - Every compensation gives back a line only if it holds exactly that attempt's record,
//!   and a step finding another attempt's line refuses (`reservation_exists`) rather than
//!   adopting it.
//!
//! Every decision about the saga's state is the domain's ([`stockflow_domain::saga`]):
//! this module reads the header ([`header`]), runs the steps ([`steps`]) and writes what
//! the domain answers.

mod header;
#[cfg(test)]
pub(crate) mod pauses;
mod settle;
mod steps;

use stockflow_domain::decide;
use stockflow_domain::saga::{self, AfterLostFence, Attempt, OnReserve, SagaState};
use stockflow_domain::{
    CommandResult, EventMeta, LocationGrant, Refusal, Reservation, Reserve, StockKey,
};

use super::coalesce::Keys;
use super::deadlines::{forget_deadlines, index_with_deadlines};
use super::partition::op::CommandId;
use crate::StoreError;
use crate::error::Interruption;
use crate::stop::{Step, Stop};
pub(crate) use header::{Located, header, indexed, locate, single_lines};
use header::{create, delete_aborted, fenced_move};
pub(crate) use settle::settle;
pub(crate) use steps::reserve_step;
#[cfg(test)]
pub(crate) use steps::settle_step;
use steps::{compensate_step, each_line};

/// A multi-line reservation (see the module docs) for a caller holding `grant`. `owner`
/// identifies the client request.
pub(crate) async fn reserve(
    keys: &Keys,
    cmd: &Reserve,
    owner: &CommandId,
    grant: &LocationGrant,
    meta: &EventMeta,
) -> Step<(CommandResult, usize)> {
    let p = &*keys.partitions;
    let window = p.window;
    let found = header(p, &cmd.id).await?;
    let resumed = match &found {
        Some(h) => match saga::on_reserve(h, owner.as_str()) {
            OnReserve::Exists => return Err(Refusal::ReservationExists(cmd.id.clone()).into()),
            OnReserve::RollingBack => {
                return Err(StoreError::Interrupted(Interruption::RollingBack).into());
            }
            OnReserve::AnswerAgain => {
                return Ok((CommandResult::Reservation(h.reservation.clone()), 0));
            }
            OnReserve::Resume => Some(h),
        },
        None => None,
    };
    let (reservation, attempt, mut lease) = match resumed {
        // Every step takes its lease first: the header may be stale by now.
        Some(h) => (h.attempt_record(), h.attempt.clone(), None),
        None => {
            let reservation = begin(keys, cmd, grant, meta).await?;
            if !create(p, &reservation, owner.as_str()).await? {
                return Err(Refusal::ReservationExists(cmd.id.clone()).into());
            }
            let attempt = Attempt {
                owner: owner.as_str().to_string(),
                created_at_ms: reservation.created_at_ms,
            };
            // The header was just written with `updated_at = created_at`: the first
            // step's lease.
            let lease = Some(reservation.updated_at_ms);
            (reservation, attempt, lease)
        }
    };
    let mut events = 0;
    for (i, line) in reservation.lines.iter().enumerate() {
        #[cfg(not(test))]
        let _ = i; // names the test pauses only
        #[cfg(test)]
        pauses::pass(cmd.id.as_str(), pauses::Point::BeforeLease(i)).await;
        let leased_at = match lease.take() {
            Some(at) => at,
            None => {
                let at = crate::now_ms();
                if !fenced_move(p, &cmd.id, &attempt, SagaState::Pending, at).await? {
                    return lost_fence(keys, &reservation, &attempt, events, meta).await;
                }
                at
            }
        };
        #[cfg(test)]
        pauses::pass(cmd.id.as_str(), pauses::Point::AfterLease(i)).await;
        let step = reserve_step(
            &reservation,
            line,
            grant,
            window.step_deadline(leased_at),
            meta,
        );
        match keys.apply(&line.key(), step).await {
            Ok(ran) => events += ran.events,
            Err(Stop::Refused(refusal)) => {
                // A line is short now (it was not when we looked), or held by another
                // attempt: give back what this attempt holds and free the id.
                let now = crate::now_ms();
                if !fenced_move(p, &cmd.id, &attempt, SagaState::Aborting, now).await? {
                    return lost_fence(keys, &reservation, &attempt, events, meta).await;
                }
                roll_back(keys, &reservation, meta).await?;
                let recovery_at = window.after(reservation.created_at_ms);
                forget_deadlines(p, &cmd.id, &[reservation.expires_at_ms, recovery_at]).await;
                return Err(refusal.into());
            }
            // Left `pending`: a retry resumes it, or expiry rolls it back once idle.
            Err(e) => return Err(e),
        }
    }
    #[cfg(test)]
    pauses::pass(cmd.id.as_str(), pauses::Point::BeforeActive).await;
    if !fenced_move(p, &cmd.id, &attempt, SagaState::Active, meta.occurred_at_ms).await? {
        return lost_fence(keys, &reservation, &attempt, events, meta).await;
    }
    forget_deadlines(p, &cmd.id, &[window.after(reservation.created_at_ms)]).await;
    Ok((CommandResult::Reservation(reservation), events))
}

/// A new attempt's first moves, before its header: look first (a request that cannot
/// succeed writes nothing, and every short line is reported at once), then write its index
/// rows and deadlines. Returns the reservation the attempt makes.
async fn begin(
    keys: &Keys,
    cmd: &Reserve,
    grant: &LocationGrant,
    meta: &EventMeta,
) -> Step<Reservation> {
    let p = &*keys.partitions;
    let mut levels = Vec::with_capacity(cmd.lines.len());
    for line in &cmd.lines {
        levels.push(p.level_or_empty(&line.key()).await??);
    }
    decide::reserve(&levels, None, cmd, grant, meta)?;
    let existing = single_lines(p, &cmd.id, indexed(p, &cmd.id).await?).await?;
    decide::check_new(&cmd.id, existing.values().next())?;
    let reservation = decide::new_reservation(cmd, meta.occurred_at_ms);
    let line_keys: Vec<StockKey> = reservation.lines.iter().map(|l| l.key()).collect();
    let deadlines = [
        reservation.expires_at_ms,
        p.window.after(reservation.created_at_ms),
    ];
    index_with_deadlines(p, &cmd.id, &line_keys, &deadlines, None).await?;
    Ok(reservation)
}

/// What an attempt answers once one of its fenced writes was refused: the header left
/// `pending` without it. `reservation` is the attempt's record; `events` what this run
/// wrote so far.
async fn lost_fence(
    keys: &Keys,
    reservation: &Reservation,
    attempt: &Attempt,
    events: usize,
    meta: &EventMeta,
) -> Step<(CommandResult, usize)> {
    let now = header(&keys.partitions, &reservation.id).await?;
    let rolled_back = || StoreError::Interrupted(Interruption::RolledBack).into();
    match saga::after_lost_fence(now.as_ref(), attempt) {
        AfterLostFence::Made(made) => Ok((CommandResult::Reservation(made), events)),
        AfterLostFence::HelpRollBack => {
            roll_back(keys, reservation, meta).await?;
            Err(rolled_back())
        }
        AfterLostFence::RetryLater => {
            Err(StoreError::Interrupted(Interruption::ChangedWhileMade).into())
        }
        AfterLostFence::GiveBack => {
            let given = each_line(keys, &reservation.lines, |line| {
                compensate_step(reservation, line, meta)
            })
            .await?;
            metrics::counter!("stockflow_reservation_compensations_total").increment(given as u64);
            Err(rolled_back())
        }
    }
}

/// Rolls back the attempt whose record is `reservation` and whose header is `aborting`:
/// gives back every line it holds, then removes the header. Idempotent; safe beside a run
/// of the attempt itself (which can no longer take a lease).
async fn roll_back(keys: &Keys, reservation: &Reservation, meta: &EventMeta) -> Step<()> {
    let events = each_line(keys, &reservation.lines, |line| {
        compensate_step(reservation, line, meta)
    })
    .await?;
    metrics::counter!("stockflow_reservation_compensations_total").increment(events as u64);
    delete_aborted(&keys.partitions, &reservation.id).await?;
    Ok(())
}
