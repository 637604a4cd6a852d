//! Settling a saga reservation — or completing one left half-way — as the domain's
//! [`saga::on_settle`] says: `active → settling:<how>` decides the outcome (one winner
//! among confirm, release and expiry), then one step per line, then the final status.

use stockflow_domain::decide::{self, Settlement};
use stockflow_domain::saga::{self, OnSettle, Saga, SagaState};
use stockflow_domain::{CommandResult, EventMeta, LocationGrant, Refusal, Reservation};

use super::super::coalesce::Keys;
use super::super::deadlines::{deadline, forget_deadlines};
use super::header::{self, abandon, move_state};
use super::roll_back;
use super::steps::{each_line, settle_step};
use crate::stop::Step;

/// Settles (or recovers) the saga reservation `h` for a caller holding `grant`.
pub(crate) async fn settle(
    keys: &Keys,
    h: Saga,
    how: Settlement,
    grant: &LocationGrant,
    meta: &EventMeta,
) -> Step<(CommandResult, usize)> {
    let p = &*keys.partitions;
    let window = p.window;
    let now = meta.occurred_at_ms;
    let id = h.reservation.id.clone();
    match saga::on_settle(&h, how, now, window) {
        OnSettle::NotFound => Err(Refusal::ReservationNotFound(id).into()),
        OnSettle::LookAgain(at) => Ok((CommandResult::Reservation(h.due_again(at)), 0)),
        OnSettle::Abandon { seen_updated_at_ms } => {
            if !abandon(p, &id, seen_updated_at_ms, now).await? {
                // It took a lease (or moved on) since: not abandoned after all.
                let again = h.due_again(window.after(now));
                return Ok((CommandResult::Reservation(again), 0));
            }
            finish_rollback(keys, &h, meta).await
        }
        OnSettle::FinishRollback => finish_rollback(keys, &h, meta).await,
        OnSettle::Decide => {
            let Some((status, _)) = decide::settlement(how, &h.reservation, grant, now)? else {
                return Ok((CommandResult::Reservation(h.reservation), 0));
            };
            debug_assert_eq!(status, how.status());
            let recovery_at = window.after(now);
            deadline(p, &id, recovery_at).await?;
            if !move_state(p, &id, SagaState::Active, SagaState::Settling(how), now).await? {
                // Someone settled it first: answer from the new state, and take back the
                // recovery deadline nothing will need.
                forget_deadlines(p, &id, &[recovery_at]).await;
                let now = header::header(p, &id).await?;
                return Err(saga::settled_by_another(id, now.as_ref()).into());
            }
            finish(keys, &h, how, recovery_at, grant, meta).await
        }
        OnSettle::Resume(started) => {
            // A settlement left half-way: finish it, whoever may act at its lines asks.
            grant.check_reservation(&h.reservation)?;
            let recovery_at = window.after(h.reservation.updated_at_ms);
            let finished = finish(keys, &h, started, recovery_at, grant, meta).await?;
            if started.answers(how) {
                Ok(finished)
            } else {
                Err(Refusal::ReservationNotActive {
                    id,
                    status: h.reservation.status,
                }
                .into())
            }
        }
        OnSettle::Final(status) => {
            grant.check_reservation(&h.reservation)?;
            Err(Refusal::ReservationNotActive { id, status }.into())
        }
    }
}

/// Rolls back a saga that expiry took over (it is `aborting`): every line its attempt
/// holds is given back, the header goes, and the id is free again.
async fn finish_rollback(keys: &Keys, h: &Saga, meta: &EventMeta) -> Step<(CommandResult, usize)> {
    let p = &*keys.partitions;
    roll_back(keys, &h.attempt_record(), meta).await?;
    let r = &h.reservation;
    forget_deadlines(
        p,
        &r.id,
        &[r.expires_at_ms, p.window.after(r.created_at_ms)],
    )
    .await;
    Err(Refusal::ReservationNotFound(r.id.clone()).into())
}

/// Settles every line, then records the final status and forgets the deadlines.
async fn finish(
    keys: &Keys,
    h: &Saga,
    how: Settlement,
    recovery_at: i64,
    grant: &LocationGrant,
    meta: &EventMeta,
) -> Step<(CommandResult, usize)> {
    let p = &*keys.partitions;
    let reservation = &h.reservation;
    let events = each_line(keys, &reservation.lines, |_| {
        settle_step(how, reservation, grant, meta)
    })
    .await?;
    let settled = Reservation {
        status: how.status(),
        updated_at_ms: meta.occurred_at_ms,
        ..reservation.clone()
    };
    header::finish(p, &settled, SagaState::Settled(how), &h.attempt.owner).await?;
    forget_deadlines(
        p,
        &reservation.id,
        &[reservation.expires_at_ms, recovery_at],
    )
    .await;
    Ok((CommandResult::Reservation(settled), events))
}
