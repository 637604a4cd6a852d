//! Commands that touch one partition: an adjustment, a one-line reservation, and the
//! settlement of reservations whose lines were made one partition each. Each is ONE
//! conditional batch in its partition ([`super::partition`]), its applied-command row the
//! idempotency record.

use stockflow_domain::decide::{self, Settlement};
use stockflow_domain::{
    Adjust, Answer, Applied, CommandResult, EventMeta, LocationGrant, Refusal, ReservationId,
    Reserve, StockKey, StockLevel,
};

use super::claims;
use super::coalesce::Keys;
use super::deadlines::{forget_deadlines, index_with_deadlines};
use super::partition::op::{Change, CmdGuard, Decision, KeyOp, LineWrite, View};
use super::saga::{self, Located};
use crate::ports::IdempotencyToken;
use crate::stop::{Ran, Step, Stop};

/// The one change of a one-partition decision, with what happens to its line.
fn single_change(applied: Applied, line: Option<LineWrite>) -> Answer<Decision> {
    let (Some(level), Some(event)) = (
        applied.levels.into_iter().next(),
        applied.events.into_iter().next(),
    ) else {
        return Ok(Decision::Unchanged(applied.result));
    };
    Ok(Decision::Change(Box::new(Change {
        level,
        event,
        line,
        result: applied.result,
    })))
}

/// Folds the outcomes of a reservation's lines settled one by one into one answer.
fn merge(acc: Option<Ran>, next: Ran) -> Ran {
    let Some(mut acc) = acc else { return next };
    acc.events += next.events;
    acc.replayed &= next.replayed;
    if let (CommandResult::Reservation(a), CommandResult::Reservation(b)) =
        (&mut acc.result, next.result)
    {
        *a = a.clone().join(b);
    }
    acc
}

/// A command on one key decided whole on its level by `decide` (a move between states, a
/// purchase-order line expected or closed, a location's policy): one conditional batch in
/// its partition, like an adjustment.
pub(super) async fn one_key(
    keys: &Keys,
    key: &StockKey,
    guard: CmdGuard,
    decide: impl Fn(&StockLevel) -> Answer<Applied> + Send + Sync + 'static,
) -> Step<Ran> {
    let op = KeyOp::new(
        Some(guard),
        None,
        false,
        Box::new(move |view: &View<'_>| single_change(decide(view.level)?, None)),
    );
    keys.apply(key, op).await
}

/// An adjustment: one conditional batch in its key's partition.
pub(super) async fn adjust(
    keys: &Keys,
    cmd: &Adjust,
    guard: CmdGuard,
    grant: &LocationGrant,
    meta: &EventMeta,
) -> Step<Ran> {
    let holders = if decide::needs_holders(cmd) {
        keys.partitions.holders(&cmd.key).await?
    } else {
        Vec::new()
    };
    let (adjust, grant, meta) = (cmd.clone(), grant.clone(), meta.clone());
    let op = KeyOp::new(
        Some(guard),
        None,
        false,
        Box::new(move |view: &View<'_>| {
            let applied = decide::adjust(view.level, &adjust, &grant, &holders, &meta)?;
            single_change(applied, None)
        }),
    );
    keys.apply(&cmd.key, op).await
}

/// A one-line reservation: one conditional batch in its partition. `unrecorded`, a key
/// seen for the first time, has its fingerprint written with the reservation's index.
pub(super) async fn reserve_one(
    keys: &Keys,
    cmd: &Reserve,
    guard: CmdGuard,
    unrecorded: Option<&IdempotencyToken>,
    grant: &LocationGrant,
    meta: &EventMeta,
) -> Step<Ran> {
    let p = &*keys.partitions;
    let key = cmd.lines[0].key();
    // An id already used for a reservation elsewhere is refused. (Two concurrent requests
    // racing with one id on different keys both land; the index then names both
    // partitions and the reservation settles and expires as one.)
    let existing = match saga::locate(p, &cmd.id).await? {
        Located::Saga(h) => Some(h.reservation),
        Located::Lines(indexed) => {
            let others: Vec<StockKey> = indexed.into_iter().filter(|k| *k != key).collect();
            saga::single_lines(p, &cmd.id, others)
                .await?
                .into_values()
                .next()
        }
    };
    if let Err(refusal) = decide::check_new(&cmd.id, existing.as_ref()) {
        if let Some(token) = unrecorded {
            claims::record_fingerprint(p, token).await;
        }
        return Err(refusal.into());
    }
    // The deadline the domain will give the reservation decided below with this `meta`.
    let expires_at = decide::new_reservation(cmd, meta.occurred_at_ms).expires_at_ms;
    // Before the batch, so nothing it commits is unreachable.
    index_with_deadlines(
        p,
        &cmd.id,
        std::slice::from_ref(&key),
        &[expires_at],
        unrecorded,
    )
    .await?;
    let (reserve, grant, op_meta) = (cmd.clone(), grant.clone(), meta.clone());
    let op = KeyOp::new(
        Some(guard),
        Some(cmd.id.clone()),
        true,
        Box::new(move |view: &View<'_>| {
            let applied = decide::reserve(
                std::slice::from_ref(view.level),
                view.line,
                &reserve,
                &grant,
                &op_meta,
            )?;
            let line = applied.reservation.clone().map(LineWrite::Put);
            single_change(applied, line)
        }),
    );
    let outcome = keys.apply(&key, op).await;
    if let Err(Stop::Refused(_)) = &outcome {
        // Refused: nothing will expire. (The index row may stay: it points at no line.)
        forget_deadlines(p, &cmd.id, &[expires_at]).await;
    }
    outcome
}

/// Settles a reservation whose lines were found through the index at `keys` (no saga
/// header), for a caller holding `grant`: each line's decision checks the line as loaded
/// for it, in its partition's conditional batch.
pub(super) async fn settle_lines(
    keys: &Keys,
    id: &ReservationId,
    indexed: Vec<StockKey>,
    how: Settlement,
    guard: CmdGuard,
    grant: &LocationGrant,
    meta: &EventMeta,
) -> Step<Ran> {
    let p = &*keys.partitions;
    if indexed.len() > 1 {
        // Lines of one id in several partitions without a header: twins of racing
        // one-line reserves (or index rows of refused attempts). Each line's own decision
        // below is the check that counts; this one, first, keeps a caller allowed at some
        // of them from settling those before being refused at another.
        for line in saga::single_lines(p, id, indexed.clone()).await?.values() {
            grant.check_reservation(line)?;
        }
    }
    let mut last: Option<Ran> = None;
    for key in indexed {
        let (line_id, grant, op_meta) = (id.clone(), grant.clone(), meta.clone());
        let op = KeyOp::new(
            Some(guard.clone()),
            Some(line_id.clone()),
            false,
            Box::new(move |view: &View<'_>| {
                // Not found before forbidden: an unknown id tells nothing.
                let Some(reservation) = view.line else {
                    return Err(Refusal::ReservationNotFound(line_id.clone()));
                };
                let applied = decide::settle(
                    how,
                    reservation,
                    std::slice::from_ref(view.level),
                    &grant,
                    &op_meta,
                )?;
                let line = applied.reservation.clone().map(LineWrite::Put);
                single_change(applied, line)
            }),
        );
        match keys.apply(&key, op).await {
            // An index entry whose line was never written (or was given back).
            Err(Stop::Refused(Refusal::ReservationNotFound(_))) => continue,
            Err(e) => return Err(e),
            Ok(ran) => {
                if let CommandResult::Reservation(r) = &ran.result
                    && !r.is_active()
                {
                    forget_deadlines(p, id, &[r.expires_at_ms]).await;
                }
                last = Some(merge(last, ran));
            }
        }
    }
    last.ok_or_else(|| Refusal::ReservationNotFound(id.clone()).into())
}
