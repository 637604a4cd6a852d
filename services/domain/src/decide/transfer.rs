//! Transfers: create, ship (out of the source, in transit to the destination), receive
//! (in parts; a close records what never arrived as a discrepancy), cancel before
//! shipping.
//!
//! Each decision exists whole, for a store that writes every key in one transaction, and
//! as the steps it is made of, for a store that writes key by key ([`ship_out_step`],
//! [`in_transit_step`], [`receive_steps`]); the whole decisions are built from the steps,
//! so both apply the same rules.

use std::collections::BTreeMap;

use crate::answer::CommandResult;
use crate::command::{AdjustReason, CreateTransfer, ReceiveTransfer};
use crate::event::{Detail, EventKind, EventMeta, StockEvent};
use crate::grant::LocationGrant;
use crate::ids::{Region, Sku};
use crate::refusal::{Answer, Refusal};
use crate::stock::{Next, StockLevel};
use crate::transfer::{Transfer, TransferLine, TransferStatus};

use super::Applied;

fn transfer_detail(transfer: &Transfer, reason: AdjustReason) -> Detail {
    Detail {
        reason: Some(reason),
        reference: transfer.reference.clone(),
        transfer_id: Some(transfer.id.clone()),
        ..Detail::default()
    }
}

fn event(
    kind: EventKind,
    before: &StockLevel,
    next: Next,
    detail: Detail,
    meta: &EventMeta,
) -> (StockLevel, StockEvent) {
    let event = StockEvent::of_change(kind, before, &next, detail, meta);
    (next.level, event)
}

fn status_conflict(transfer: &Transfer) -> Refusal {
    Refusal::TransferStatusConflict {
        id: transfer.id.clone(),
        status: transfer.status,
    }
}

/// Decides a new transfer (`existing`: a transfer found under its id; `from` and `to`:
/// the regions of its locations, `None` for a location never defined). Nothing moves.
pub fn create(
    existing: Option<&Transfer>,
    cmd: &CreateTransfer,
    from: Option<Region>,
    to: Option<Region>,
    grant: &LocationGrant,
    now_ms: i64,
) -> Answer<Applied> {
    grant.check(&cmd.from)?;
    if existing.is_some() {
        return Err(Refusal::TransferExists(cmd.id.clone()));
    }
    if from.is_none() {
        return Err(Refusal::LocationNotFound(cmd.from.clone()));
    }
    if to.is_none() {
        return Err(Refusal::LocationNotFound(cmd.to.clone()));
    }
    let transfer = Transfer {
        id: cmd.id.clone(),
        from: cmd.from.clone(),
        to: cmd.to.clone(),
        lines: cmd
            .lines
            .iter()
            .map(|l| TransferLine {
                sku: l.sku.clone(),
                qty: l.qty,
                received: 0,
                damaged: 0,
                missing: 0,
            })
            .collect(),
        expected_arrival: cmd.expected_arrival,
        status: TransferStatus::Created,
        reference: cmd.reference.clone(),
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
        receipts: 0,
    };
    Ok(Applied {
        transfer: Some(transfer.clone()),
        ..Applied::unchanged(CommandResult::Transfer(transfer))
    })
}

/// Refuses shipping `transfer` unless the caller may act at its source and it is still
/// `created`.
pub fn check_shippable(transfer: &Transfer, grant: &LocationGrant) -> Answer<()> {
    grant.check(&transfer.from)?;
    match transfer.status {
        TransferStatus::Created => Ok(()),
        _ => Err(status_conflict(transfer)),
    }
}

/// The step taking `line`'s units out of its source key `level`.
pub fn ship_out_step(
    level: &StockLevel,
    transfer: &Transfer,
    line: &TransferLine,
    meta: &EventMeta,
) -> Answer<(StockLevel, StockEvent)> {
    let next = level.ship_out(line.qty)?;
    let detail = transfer_detail(transfer, AdjustReason::TransferOut);
    Ok(event(EventKind::TransferShipped, level, next, detail, meta))
}

/// The step undoing [`ship_out_step`] at the source (a shipment abandoned half-way by a
/// store that ships key by key).
pub fn unship_step(
    level: &StockLevel,
    transfer: &Transfer,
    line: &TransferLine,
    meta: &EventMeta,
) -> (StockLevel, StockEvent) {
    let next = level.unship(line.qty);
    let detail = transfer_detail(transfer, AdjustReason::TransferIn);
    event(EventKind::TransferReverted, level, next, detail, meta)
}

/// The step putting `line`'s units in transit to its destination key `level`.
pub fn in_transit_step(
    level: &StockLevel,
    transfer: &Transfer,
    line: &TransferLine,
    meta: &EventMeta,
) -> (StockLevel, StockEvent) {
    let next = level.add_in_transit(&transfer.id, transfer.expected_arrival, line.qty);
    let detail = transfer_detail(transfer, AdjustReason::TransferOut);
    event(EventKind::TransferInTransit, level, next, detail, meta)
}

/// `transfer` shipped at `now_ms`.
pub fn shipped(transfer: &Transfer, now_ms: i64) -> Transfer {
    Transfer {
        status: TransferStatus::InTransit,
        updated_at_ms: now_ms,
        ..transfer.clone()
    }
}

/// Decides a shipment whole. `sources` and `destinations` hold the level of each line's
/// source and destination key, in line order. All or nothing: every short source line is
/// reported and nothing changes.
pub fn ship(
    transfer: &Transfer,
    sources: &[StockLevel],
    destinations: &[StockLevel],
    grant: &LocationGrant,
    meta: &EventMeta,
) -> Answer<Applied> {
    check_shippable(transfer, grant)?;
    let mut changes = Vec::with_capacity(2 * transfer.lines.len());
    let mut short = Vec::new();
    for (line, level) in transfer.lines.iter().zip(sources) {
        match ship_out_step(level, transfer, line, meta) {
            Ok(change) => changes.push(change),
            Err(_) => short.push(level.short_line(line.qty)),
        }
    }
    if !short.is_empty() {
        return Err(Refusal::InsufficientStock { lines: short });
    }
    for (line, level) in transfer.lines.iter().zip(destinations) {
        changes.push(in_transit_step(level, transfer, line, meta));
    }
    let after = shipped(transfer, meta.occurred_at_ms);
    Ok(Applied {
        transfer: Some(after.clone()),
        ..Applied::changes(changes, CommandResult::Transfer(after))
    })
}

/// One change a receipt makes at a destination key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "step")]
pub enum ReceiveStep {
    /// Units arrived: `good` sellable, `damaged` broken.
    Arrived {
        /// The SKU.
        sku: Sku,
        /// Sellable units.
        good: i64,
        /// Damaged units.
        damaged: i64,
    },
    /// Units that never arrived, known at the close: a discrepancy of their own.
    Missing {
        /// The SKU.
        sku: Sku,
        /// Units.
        qty: i64,
    },
}

impl ReceiveStep {
    /// The SKU it changes (at the transfer's destination).
    pub fn sku(&self) -> &Sku {
        match self {
            ReceiveStep::Arrived { sku, .. } | ReceiveStep::Missing { sku, .. } => sku,
        }
    }
}

/// What receiving `cmd` does to `transfer`: its steps, in order (arrivals in the order
/// given, then, at a close, what is missing in line order), and the transfer afterwards.
/// Refused unless the caller may act at the destination, the transfer is in transit and
/// no SKU receives more than is in transit.
pub fn receive_steps(
    transfer: &Transfer,
    cmd: &ReceiveTransfer,
    grant: &LocationGrant,
    now_ms: i64,
) -> Answer<(Vec<ReceiveStep>, Transfer)> {
    grant.check(&transfer.to)?;
    if transfer.status != TransferStatus::InTransit {
        return Err(status_conflict(transfer));
    }
    let mut after = transfer.clone();
    let mut steps = Vec::new();
    for got in &cmd.lines {
        let requested = got.qty + got.damaged;
        let line = after.lines.iter_mut().find(|l| l.sku == got.sku);
        let outstanding = line.as_ref().map_or(0, |l| l.outstanding());
        let Some(line) = line.filter(|_| requested <= outstanding) else {
            return Err(Refusal::TransferQuantityExceeded {
                id: transfer.id.clone(),
                sku: got.sku.clone(),
                requested,
                outstanding,
            });
        };
        line.received += got.qty;
        line.damaged += got.damaged;
        steps.push(ReceiveStep::Arrived {
            sku: got.sku.clone(),
            good: got.qty,
            damaged: got.damaged,
        });
    }
    if cmd.close || after.outstanding() == 0 {
        for line in &mut after.lines {
            let missing = line.outstanding();
            if missing > 0 {
                line.missing += missing;
                steps.push(ReceiveStep::Missing {
                    sku: line.sku.clone(),
                    qty: missing,
                });
            }
        }
        after.status = TransferStatus::Received;
    }
    after.receipts += 1;
    after.updated_at_ms = now_ms;
    Ok((steps, after))
}

/// The change `step` makes at its destination key `level`.
pub fn receive_step(
    level: &StockLevel,
    transfer: &Transfer,
    step: &ReceiveStep,
    meta: &EventMeta,
) -> (StockLevel, StockEvent) {
    match step {
        ReceiveStep::Arrived { good, damaged, .. } => {
            let next = level.receive_transfer(&transfer.id, *good, *damaged);
            let detail = transfer_detail(transfer, AdjustReason::TransferIn);
            event(EventKind::TransferReceived, level, next, detail, meta)
        }
        ReceiveStep::Missing { qty, .. } => {
            let next = level.lose_in_transit(&transfer.id, *qty);
            let detail = transfer_detail(transfer, AdjustReason::Shrinkage);
            event(EventKind::TransferDiscrepancy, level, next, detail, meta)
        }
    }
}

/// Decides a receipt whole. `destinations` holds the level of each line's destination
/// key, in the transfer's line order; a key changed twice (units arrived, then the rest
/// found missing) gets two versions.
pub fn receive(
    transfer: &Transfer,
    cmd: &ReceiveTransfer,
    destinations: &[StockLevel],
    grant: &LocationGrant,
    meta: &EventMeta,
) -> Answer<Applied> {
    let (steps, after) = receive_steps(transfer, cmd, grant, meta.occurred_at_ms)?;
    let mut levels: BTreeMap<&Sku, StockLevel> = transfer
        .lines
        .iter()
        .map(|l| &l.sku)
        .zip(destinations.iter().cloned())
        .collect();
    let mut changes = Vec::with_capacity(steps.len());
    for step in &steps {
        let Some(level) = levels.get_mut(step.sku()) else {
            continue;
        };
        let (next, event) = receive_step(level, transfer, step, meta);
        *level = next.clone();
        changes.push((next, event));
    }
    Ok(Applied {
        transfer: Some(after.clone()),
        ..Applied::changes(changes, CommandResult::Transfer(after))
    })
}

/// Decides a cancellation: only before the transfer ships.
pub fn cancel(transfer: &Transfer, grant: &LocationGrant, now_ms: i64) -> Answer<Applied> {
    grant.check(&transfer.from)?;
    if transfer.status != TransferStatus::Created {
        return Err(status_conflict(transfer));
    }
    let after = Transfer {
        status: TransferStatus::Cancelled,
        updated_at_ms: now_ms,
        ..transfer.clone()
    };
    Ok(Applied {
        transfer: Some(after.clone()),
        ..Applied::unchanged(CommandResult::Transfer(after))
    })
}
