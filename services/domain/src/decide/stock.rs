//! Decisions on one key — an adjustment (checked or recorded), a move between states, a
//! purchase-order line expected or closed, a location's policy override, a channel's
//! allocation — and on a SKU's
//! own policy. Each applied one is one version bump and one event.

use crate::answer::CommandResult;
use crate::command::{Adjust, CloseIncoming, ExpectIncoming, Mode, Move, SetAllocation, SetPolicy};
use crate::event::{
    AllocationChange, Detail, EventKind, EventMeta, Moved, PolicyEvent, StockEvent,
};
use crate::grant::LocationGrant;
use crate::ids::ReservationId;
use crate::policy::SkuPolicy;
use crate::refusal::{Answer, Refusal};
use crate::stock::{Next, StockLevel};

use super::Applied;

/// The one change of a one-key decision, answered with the new level.
fn one_change(
    before: &StockLevel,
    next: Next,
    kind: EventKind,
    detail: Detail,
    meta: &EventMeta,
) -> Applied {
    let event = StockEvent::of_change(kind, before, &next, detail, meta);
    let level = next.level;
    Applied::changes(vec![(level.clone(), event)], CommandResult::Stock(level))
}

/// Whether deciding `cmd` needs the reservations holding stock at its key (a recorded
/// fact names them when it oversells): a store loads them only then.
pub fn needs_holders(cmd: &Adjust) -> bool {
    cmd.mode == Mode::Record
}

/// Decides an adjustment of `current`. A recorded fact (a sale at a till) is applied
/// whatever it leaves, as if the key were `track_only` for this command; when it leaves
/// units short beyond what is backordered, its event is `stock_oversold`, carrying the
/// shortfall and the reservations holding stock here (`holders`, which the store supplies
/// when [`needs_holders`] says so).
pub fn adjust(
    current: &StockLevel,
    cmd: &Adjust,
    grant: &LocationGrant,
    holders: &[ReservationId],
    meta: &EventMeta,
) -> Answer<Applied> {
    grant.check(&cmd.key.location)?;
    if cmd.mode == Mode::Record && !grant.is_store() {
        return Err(Refusal::RecordModeForbidden);
    }
    let next = current.adjust(cmd)?;
    let shortfall = next.level.shortfall();
    let oversold = cmd.mode == Mode::Record && shortfall > 0;
    let detail = Detail {
        reason: Some(cmd.reason),
        reference: cmd.reference.clone(),
        purchase_order: cmd.incoming.clone(),
        shortfall: oversold.then_some(shortfall),
        reservations_at_risk: if oversold {
            holders.to_vec()
        } else {
            Vec::new()
        },
        ..Detail::default()
    };
    let kind = if oversold {
        EventKind::StockOversold
    } else {
        EventKind::StockAdjusted
    };
    Ok(one_change(current, next, kind, detail, meta))
}

/// Decides a move between states of `current`.
pub fn move_units(
    current: &StockLevel,
    cmd: &Move,
    grant: &LocationGrant,
    meta: &EventMeta,
) -> Answer<Applied> {
    grant.check(&cmd.key.location)?;
    let next = current.move_units(cmd.from, cmd.to, cmd.qty)?;
    let detail = Detail {
        reason: Some(cmd.reason),
        reference: cmd.reference.clone(),
        moved: Some(Moved {
            from: cmd.from,
            to: cmd.to,
            qty: cmd.qty,
        }),
        ..Detail::default()
    };
    Ok(one_change(
        current,
        next,
        EventKind::StockMoved,
        detail,
        meta,
    ))
}

/// Decides a purchase-order line expected at `current` (new, or revised).
pub fn expect_incoming(
    current: &StockLevel,
    cmd: &ExpectIncoming,
    grant: &LocationGrant,
    meta: &EventMeta,
) -> Answer<Applied> {
    grant.check(&cmd.key.location)?;
    let next = current.expect(&cmd.po, cmd.expected, cmd.qty)?;
    let detail = Detail {
        reference: cmd.reference.clone(),
        purchase_order: Some(cmd.po.clone()),
        ..Detail::default()
    };
    Ok(one_change(
        current,
        next,
        EventKind::IncomingExpected,
        detail,
        meta,
    ))
}

/// Decides a purchase-order line closed at `current`.
pub fn close_incoming(
    current: &StockLevel,
    cmd: &CloseIncoming,
    grant: &LocationGrant,
    meta: &EventMeta,
) -> Answer<Applied> {
    grant.check(&cmd.key.location)?;
    let next = current.close_incoming(&cmd.po)?;
    let detail = Detail {
        reference: cmd.reference.clone(),
        purchase_order: Some(cmd.po.clone()),
        ..Detail::default()
    };
    Ok(one_change(
        current,
        next,
        EventKind::IncomingClosed,
        detail,
        meta,
    ))
}

/// Decides a location's policy override (`cmd.location` is set): a change of the key,
/// versioned with it.
pub fn set_location_policy(
    current: &StockLevel,
    cmd: &SetPolicy,
    grant: &LocationGrant,
    meta: &EventMeta,
) -> Answer<Applied> {
    grant.check(&current.location)?;
    at_version(current, cmd.expected_version)?;
    let next = current.set_policy(cmd.settings);
    let detail = Detail {
        reference: cmd.reference.clone(),
        policy: Some(cmd.settings),
        ..Detail::default()
    };
    Ok(one_change(
        current,
        next,
        EventKind::PolicyChanged,
        detail,
        meta,
    ))
}

/// Refuses a change that names a version the key is not at.
fn at_version(current: &StockLevel, expected: Option<u64>) -> Answer<()> {
    match expected {
        Some(expected) if expected != current.version => Err(Refusal::VersionConflict {
            sku: current.sku.clone(),
            location: current.location.clone(),
            expected,
            current: current.version,
        }),
        _ => Ok(()),
    }
}

/// Decides a channel's allocation at `current`: set, changed or removed, one version
/// bump and one `allocation_changed` event carrying the channel and what it has now.
pub fn set_allocation(
    current: &StockLevel,
    cmd: &SetAllocation,
    grant: &LocationGrant,
    meta: &EventMeta,
) -> Answer<Applied> {
    grant.check(&current.location)?;
    at_version(current, cmd.expected_version)?;
    let next = current.allocate(&cmd.channel, cmd.allocation)?;
    let detail = Detail {
        reference: cmd.reference.clone(),
        allocation: Some(AllocationChange {
            channel: cmd.channel.clone(),
            allocation: cmd.allocation,
        }),
        ..Detail::default()
    };
    Ok(one_change(
        current,
        next,
        EventKind::AllocationChanged,
        detail,
        meta,
    ))
}

/// Decides a SKU's own policy (`cmd.location` is `None`), given its record (`None`: never
/// set).
pub fn set_sku_policy(
    current: Option<&SkuPolicy>,
    cmd: &SetPolicy,
    grant: &LocationGrant,
    meta: &EventMeta,
) -> Answer<Applied> {
    if grant.is_store() {
        return Err(Refusal::SkuWideForbidden);
    }
    let version = current.map_or(0, |p| p.version);
    if let Some(expected) = cmd.expected_version
        && expected != version
    {
        return Err(Refusal::PolicyVersionConflict {
            sku: cmd.sku.clone(),
            expected,
            current: version,
        });
    }
    let policy = SkuPolicy {
        sku: cmd.sku.clone(),
        settings: cmd.settings,
        version: version + 1,
    };
    let event = PolicyEvent::of(&policy, cmd.reference.clone(), meta);
    Ok(Applied {
        policy: Some((policy.clone(), event)),
        ..Applied::unchanged(CommandResult::Policy(policy))
    })
}
