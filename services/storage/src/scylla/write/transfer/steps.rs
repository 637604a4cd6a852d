//! The per-key steps of a transfer, each a [`KeyOp`] guarded by the name the domain gives
//! it ([`step_guard`]): the name's applied-command row is written with the change, in the
//! same conditional batch, so a step run twice (a resumed attempt, a recovery beside the
//! attempt) applies once and replays its first answer after.

use stockflow_domain::decide::transfer::{
    ReceiveStep, in_transit_step, receive_step, ship_out_step, unship_step,
};
use stockflow_domain::transfer_saga::{StepKind, step_guard};
use stockflow_domain::{
    CommandResult, EventMeta, RecordedAnswer, StockKey, Transfer, TransferLine,
};

use super::super::coalesce::Keys;
use super::super::partition::op::{Change, CmdGuard, CommandId, Decision, KeyOp};
use crate::Result;
use crate::stop::Step;

/// The guard of `step` of `attempt`.
fn guard(transfer: &Transfer, attempt: i64, step: StepKind) -> CmdGuard {
    CmdGuard {
        id: CommandId::step(step_guard(transfer, attempt, step)),
        fingerprint: String::new(),
    }
}

/// A step that changes its key whatever it finds there (the domain decides how).
fn change_op(
    guard: CmdGuard,
    decide: impl Fn(
        &stockflow_domain::StockLevel,
    ) -> stockflow_domain::Answer<(
        stockflow_domain::StockLevel,
        stockflow_domain::StockEvent,
    )> + Send
    + Sync
    + 'static,
) -> KeyOp {
    KeyOp::new(
        Some(guard),
        None,
        false,
        Box::new(move |view| {
            let (level, event) = decide(view.level)?;
            Ok(Decision::Change(Box::new(Change {
                result: CommandResult::Stock(level.clone()),
                level,
                event,
                line: None,
            })))
        }),
    )
}

/// Takes `line`'s units out of its source, for `attempt`, decided only until `not_after`
/// (its lease). Refused when the source is short.
pub(super) fn out(
    transfer: &Transfer,
    line: &TransferLine,
    attempt: i64,
    not_after: i64,
    meta: &EventMeta,
) -> KeyOp {
    let (t, l, m) = (transfer.clone(), line.clone(), meta.clone());
    let mut op = change_op(guard(transfer, attempt, StepKind::Out), move |level| {
        ship_out_step(level, &t, &l, &m)
    });
    op.not_after = Some(not_after);
    op
}

/// Gives `line`'s units back to its source (only for a line whose `out` step applied).
pub(super) fn back(
    transfer: &Transfer,
    line: &TransferLine,
    attempt: i64,
    meta: &EventMeta,
) -> KeyOp {
    let (t, l, m) = (transfer.clone(), line.clone(), meta.clone());
    change_op(guard(transfer, attempt, StepKind::Back), move |level| {
        Ok(unship_step(level, &t, &l, &m))
    })
}

/// Puts `line`'s units in transit at its destination.
pub(super) fn arrive_in_transit(
    transfer: &Transfer,
    line: &TransferLine,
    attempt: i64,
    meta: &EventMeta,
) -> KeyOp {
    let (t, l, m) = (transfer.clone(), line.clone(), meta.clone());
    change_op(guard(transfer, attempt, StepKind::In), move |level| {
        Ok(in_transit_step(level, &t, &l, &m))
    })
}

/// The `n`th change of the receipt of `attempt` at the destination.
pub(super) fn receipt(
    transfer: &Transfer,
    step: &ReceiveStep,
    attempt: i64,
    n: usize,
    meta: &EventMeta,
) -> KeyOp {
    let (t, s, m) = (transfer.clone(), step.clone(), meta.clone());
    change_op(
        guard(transfer, attempt, StepKind::Receipt(n)),
        move |level| Ok(receive_step(level, &t, &s, &m)),
    )
}

/// Whether `attempt`'s `out` step applied at `key`, read through Paxos: a step still in
/// flight is completed (or known never to land) first. Asked only once no step of the
/// attempt can be sent any more, so the answer stays true.
pub(super) async fn out_applied(
    keys: &Keys,
    transfer: &Transfer,
    key: &StockKey,
    attempt: i64,
) -> Result<bool> {
    let name = step_guard(transfer, attempt, StepKind::Out);
    let rows = keys.partitions.cmds_read(key, &[name], true).await?;
    Ok(rows
        .values()
        .any(|stored| matches!(stored.result, RecordedAnswer::Accepted(_))))
}

/// Applies `op` at `key`; the events written.
pub(super) async fn apply(keys: &Keys, key: &StockKey, op: KeyOp) -> Step<usize> {
    Ok(keys.apply(key, op).await?.events)
}
