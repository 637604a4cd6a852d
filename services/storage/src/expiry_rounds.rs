//! Expiry rounds shared by the write stores: each store finds its due deadlines in its own
//! index, and every due reservation is expired here through the normal command path
//! (`Command::Expire`, decided by the domain), many at once, so a store that commits
//! concurrent commands together (the embedded writer's group commit, ScyllaDB's parallel
//! conditional batches) expires a burst in a few transactions instead of one per cart.

use futures::StreamExt;
use stockflow_domain::{Command, CommandResult, LocationGrant, Refusal, ReservationId};

use crate::StoreError;
use crate::ports::{CommandRequest, ExpiryRound, WriteStore};

/// What expiring one reservation found.
#[derive(Debug)]
pub(crate) enum Expired {
    /// It was active and due, and is expired now; its deadline was this.
    Now(i64),
    /// It is still active: by the store's clock it is due at this time.
    NotDue(i64),
    /// It was settled (or given back) before: nothing to do.
    AlreadyFinal,
    /// No reservation has this id. Final where the deadline and the reservation are written
    /// together; where the deadline is written first (ScyllaDB), the reservation may still
    /// be on its way, and the store's tidying decides.
    Missing,
    /// The store could not tell; try again later.
    Failed(StoreError),
}

/// Expires one reservation through the command path.
pub(crate) async fn expire(store: &dyn WriteStore, id: &ReservationId) -> Expired {
    let result = store
        .execute(CommandRequest {
            actor: None,
            command: Command::Expire { id: id.clone() },
            idempotency: None,
            trace_context: None,
            grant: LocationGrant::Any,
        })
        .await;
    let executed = match result {
        Ok(executed) => executed,
        Err(e) => return Expired::Failed(e),
    };
    match executed.answer {
        Ok(CommandResult::Reservation(r)) if r.is_active() => Expired::NotDue(r.expires_at_ms),
        // Expired by this call when it wrote events; otherwise another worker or a
        // settle got there first.
        Ok(CommandResult::Reservation(r)) if executed.events > 0 => Expired::Now(r.expires_at_ms),
        Ok(_) | Err(Refusal::ReservationNotActive { .. }) => Expired::AlreadyFinal,
        Err(Refusal::ReservationNotFound(_)) => Expired::Missing,
        // Expiry runs with every grant and no key: no other refusal can come.
        Err(refusal) => Expired::Failed(StoreError::Invariant {
            what: "expire a due reservation",
            detail: refusal.to_string(),
        }),
    }
}

/// Expires `due` (deadlines that have passed), at most `concurrency` at a time, and tallies
/// them into `round`. `on_each` sees every reservation with what expiring it found, for
/// stores that keep their deadline index apart from the reservation and tidy it. Returns
/// the earliest deadline among those that stay in the index (failed or not due yet).
pub(crate) async fn expire_all<F, Fut>(
    store: &dyn WriteStore,
    due: Vec<(ReservationId, i64)>,
    concurrency: usize,
    round: &mut ExpiryRound,
    on_each: F,
) -> Option<i64>
where
    F: Fn(ReservationId, i64, Expired) -> Fut,
    Fut: Future<Output = Expired>,
{
    let mut runs = futures::stream::iter(due)
        .map(|(id, at)| {
            let on_each = &on_each;
            async move {
                let found = expire(store, &id).await;
                (at, on_each(id, at, found).await)
            }
        })
        .buffer_unordered(concurrency.max(1));
    let mut left: Option<i64> = None;
    while let Some((at, found)) = runs.next().await {
        if matches!(found, Expired::NotDue(_) | Expired::Failed(_)) {
            left = Some(left.map_or(at, |l| l.min(at)));
        }
        match found {
            Expired::Now(_) => round.expired += 1,
            Expired::AlreadyFinal | Expired::Missing => round.already_final += 1,
            Expired::NotDue(at) => round.note_deadline(at),
            Expired::Failed(e) => {
                round.failed += 1;
                round.last_error.get_or_insert(e);
            }
        }
    }
    left
}
