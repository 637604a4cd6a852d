//! The per-partition steps of a saga, each a [`KeyOp`] whose decision is the domain's
//! ([`stockflow_domain::saga`]): hold a line, give one back, settle one. Each is guarded by
//! its reservation line row, so a step run twice (a resumed saga) applies once.

use stockflow_domain::decide::Settlement;
use stockflow_domain::saga;
use stockflow_domain::{CommandResult, EventMeta, LocationGrant, Reservation, ReservationLine};

use super::super::coalesce::Keys;
use super::super::partition::op::{Decision, KeyOp, LineWrite, View};
use crate::stop::Step;

/// Nothing to write at this partition: the answer is its level.
fn unchanged(view: &View<'_>) -> Decision {
    Decision::Unchanged(CommandResult::Stock(view.level.clone()))
}

/// The step holding `line` for the attempt whose record is `record`, decided only until
/// `not_after` (its lease): the line row appears with the hold.
pub(crate) fn reserve_step(
    record: &Reservation,
    line: &ReservationLine,
    grant: &LocationGrant,
    not_after: i64,
    meta: &EventMeta,
) -> KeyOp {
    let (record, line, grant, meta) = (record.clone(), line.clone(), grant.clone(), meta.clone());
    let mut op = KeyOp::new(
        None,
        Some(record.id.clone()),
        false,
        Box::new(move |view: &View<'_>| {
            let held = saga::hold_line(&record, &line, view.line, view.level, &grant, &meta)?;
            Ok(match held {
                Some((level, event)) => {
                    Decision::step(level, event, LineWrite::Put(record.line_record(&line)))
                }
                None => unchanged(view),
            })
        }),
    );
    op.not_after = Some(not_after);
    op
}

/// The step giving back what the attempt that wrote `record` holds at `line`'s partition.
/// Read through Paxos: a step of the attempt still in flight is completed first, and
/// given back.
pub(super) fn compensate_step(
    record: &Reservation,
    line: &ReservationLine,
    meta: &EventMeta,
) -> KeyOp {
    let (record, line, meta) = (record.clone(), line.clone(), meta.clone());
    let mut op = KeyOp::new(
        None,
        Some(record.id.clone()),
        false,
        Box::new(move |view: &View<'_>| {
            Ok(
                match saga::give_back_line(&record, &line, view.line, view.level, &meta) {
                    Some((level, event)) => Decision::step(level, event, LineWrite::Delete),
                    None => unchanged(view),
                },
            )
        }),
    );
    op.serial = true;
    op
}

/// The step settling one line `how` (the header already says so) for a caller holding
/// `grant`.
pub(crate) fn settle_step(
    how: Settlement,
    reservation: &Reservation,
    grant: &LocationGrant,
    meta: &EventMeta,
) -> KeyOp {
    let (reservation, meta, grant) = (reservation.clone(), meta.clone(), grant.clone());
    KeyOp::new(
        None,
        Some(reservation.id.clone()),
        false,
        Box::new(move |view: &View<'_>| {
            let settled =
                saga::settle_held_line(how, &reservation, view.line, view.level, &grant, &meta)?;
            Ok(match settled {
                Some((level, event, record)) => {
                    Decision::step(level, event, LineWrite::Put(record))
                }
                None => unchanged(view),
            })
        }),
    )
}

/// Runs `step` for every line of `lines`, one partition at a time, stopping at the first
/// error; the events written.
pub(super) async fn each_line(
    keys: &Keys,
    lines: &[ReservationLine],
    step: impl Fn(&ReservationLine) -> KeyOp,
) -> Step<usize> {
    let mut events = 0;
    for line in lines {
        events += keys.apply(&line.key(), step(line)).await?.events;
    }
    Ok(events)
}
