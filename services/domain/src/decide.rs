//! Pure decisions: the state a store loaded, plus a command, gives the new state and its
//! events, or a rejection. Every storage backend calls these, so the rules live once.
//!
//! Callers load the stock levels a command touches (a never-written key is
//! [`StockLevel::empty`]), call the decision, and write [`Applied`] atomically — or, on a
//! backend without multi-key transactions, key by key with compensation.
//!
//! Every decision takes the caller's [`LocationGrant`] and refuses first (before any other
//! rule, so a caller learns nothing about stock it may not touch) with
//! [`Refusal::LocationForbidden`] when the command touches a location outside it: the
//! locations a command names, or, for a settlement, the lines of the reservation as
//! loaded for this decision. Only a reservation that does not exist answers before that
//! (`reservation_not_found`, decided by the caller that found nothing to load).

use crate::answer::CommandResult;
use crate::command::{Adjust, Command, Reserve};
use crate::event::{EventKind, EventMeta, StockEvent};
use crate::grant::LocationGrant;
use crate::ids::ReservationId;
use crate::refusal::{Answer, Refusal, ShortLine};
use crate::reservation::{Reservation, ReservationLine, ReservationStatus};
use crate::stock::StockLevel;

/// The outcome of an accepted command: what to write and what to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// New states of the touched keys, each exactly one version above what was loaded.
    pub levels: Vec<StockLevel>,
    /// The reservation to insert or update, if the command touched one.
    pub reservation: Option<Reservation>,
    /// One event per entry of `levels`, in the same order.
    pub events: Vec<StockEvent>,
    /// The answer for the client.
    pub result: CommandResult,
}

impl Applied {
    /// An accepted command that changes nothing (for example expiring a reservation that is
    /// not due yet).
    pub fn unchanged(result: CommandResult) -> Self {
        Self {
            levels: Vec::new(),
            reservation: None,
            events: Vec::new(),
            result,
        }
    }
}

/// Refuses `command` when a location it names is outside `grant`, before anything is
/// loaded: an adjustment's key, a reservation's lines (so a caller is told `forbidden`, not
/// whether the location exists or what it holds). A settlement names no location: its
/// reservation's lines are checked by [`settle`] (or [`settlement`]) on the state loaded
/// for the decision.
pub fn authorize(command: &Command, grant: &LocationGrant) -> Answer<()> {
    match command {
        Command::Adjust(cmd) => grant.check(&cmd.key.location),
        Command::Reserve(cmd) => grant.check_all(cmd.lines.iter().map(|l| &l.location)),
        Command::Confirm { .. } | Command::Release { .. } | Command::Expire { .. } => Ok(()),
    }
}

/// Decides an adjustment of `current`.
pub fn adjust(
    current: &StockLevel,
    cmd: &Adjust,
    grant: &LocationGrant,
    meta: &EventMeta,
) -> Answer<Applied> {
    grant.check(&cmd.key.location)?;
    let next = current.adjust(cmd.change, cmd.expected_version)?;
    let event = StockEvent::for_level(
        EventKind::StockAdjusted,
        &next,
        None,
        Some(cmd.reason),
        cmd.reference.clone(),
        meta,
    );
    Ok(Applied {
        levels: vec![next.clone()],
        reservation: None,
        events: vec![event],
        result: CommandResult::Stock(next),
    })
}

/// Decides a reservation. `levels` holds the current level of each line, in line order.
///
/// All or nothing: if any line is short, every short line is reported and nothing changes.
pub fn reserve(
    levels: &[StockLevel],
    existing: Option<&Reservation>,
    cmd: &Reserve,
    grant: &LocationGrant,
    meta: &EventMeta,
) -> Answer<Applied> {
    grant.check_all(cmd.lines.iter().map(|l| &l.location))?;
    check_new(&cmd.id, existing)?;
    debug_assert_eq!(levels.len(), cmd.lines.len());
    let mut next = Vec::with_capacity(levels.len());
    let mut events = Vec::with_capacity(levels.len());
    let mut short = Vec::new();
    for (line, level) in cmd.lines.iter().zip(levels) {
        match reserve_line(level, &cmd.id, line.qty, grant, cmd.reference.clone(), meta) {
            Ok((level, event)) => {
                next.push(level);
                events.push(event);
            }
            Err(e @ Refusal::LocationForbidden { .. }) => return Err(e),
            Err(_) => short.push(ShortLine {
                sku: line.sku.clone(),
                location: line.location.clone(),
                requested: line.qty,
                available: level.available(),
            }),
        }
    }
    if !short.is_empty() {
        return Err(Refusal::InsufficientStock { lines: short });
    }
    let reservation = new_reservation(cmd, meta.occurred_at_ms);
    Ok(Applied {
        levels: next,
        reservation: Some(reservation.clone()),
        events,
        result: CommandResult::Reservation(reservation),
    })
}

/// Refuses to make reservation `id` when one of that id exists (`existing`: any record of
/// it a store found, wherever it keeps them).
pub fn check_new(id: &ReservationId, existing: Option<&Reservation>) -> Answer<()> {
    match existing {
        Some(_) => Err(Refusal::ReservationExists(id.clone())),
        None => Ok(()),
    }
}

/// The reservation `cmd` creates when accepted at `now_ms`.
pub fn new_reservation(cmd: &Reserve, now_ms: i64) -> Reservation {
    let ttl_ms = i64::try_from(cmd.ttl_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
    Reservation {
        id: cmd.id.clone(),
        status: ReservationStatus::Active,
        lines: cmd
            .lines
            .iter()
            .map(|l| ReservationLine {
                sku: l.sku.clone(),
                location: l.location.clone(),
                qty: l.qty,
            })
            .collect(),
        reference: cmd.reference.clone(),
        created_at_ms: now_ms,
        expires_at_ms: now_ms.saturating_add(ttl_ms),
        updated_at_ms: now_ms,
    }
}

/// Holds `qty` at `level` for reservation `id`: one line of [`reserve`], or one step of a
/// reservation that a backend applies key by key.
pub fn reserve_line(
    level: &StockLevel,
    id: &ReservationId,
    qty: i64,
    grant: &LocationGrant,
    reference: Option<String>,
    meta: &EventMeta,
) -> Answer<(StockLevel, StockEvent)> {
    grant.check(&level.location)?;
    let next = level.reserve(qty)?;
    let event = StockEvent::for_level(
        EventKind::StockReserved,
        &next,
        Some(id.clone()),
        None,
        reference,
        meta,
    );
    Ok((next, event))
}

/// Gives back a line that reservation `id` held when the reservation as a whole failed
/// (a later line was short): the compensation step of a key-by-key reservation. The event
/// is a release, so read models and consumers see the hold disappear. No grant: it undoes
/// what the failed attempt itself did, whoever finishes the rollback.
pub fn compensate_line(
    level: &StockLevel,
    id: &ReservationId,
    qty: i64,
    reference: Option<String>,
    meta: &EventMeta,
) -> (StockLevel, StockEvent) {
    let next = level.unreserve(qty);
    let event = StockEvent::for_level(
        EventKind::ReservationReleased,
        &next,
        Some(id.clone()),
        None,
        reference,
        meta,
    );
    (next, event)
}

/// Applies the settlement `how` (already decided by [`settlement`]) to one line of
/// `reservation` at `level`.
pub fn settle_line(
    how: Settlement,
    reservation: &Reservation,
    line: &ReservationLine,
    level: &StockLevel,
    grant: &LocationGrant,
    meta: &EventMeta,
) -> Answer<(StockLevel, StockEvent)> {
    grant.check(&line.location)?;
    let next = match how {
        Settlement::Confirm => level.confirm(line.qty),
        Settlement::Release | Settlement::Expire => level.unreserve(line.qty),
    };
    let event = StockEvent::for_level(
        how.event_kind(),
        &next,
        Some(reservation.id.clone()),
        None,
        reservation.reference.clone(),
        meta,
    );
    Ok((next, event))
}

/// How an active reservation ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Sold.
    Confirm,
    /// Given back by the client.
    Release,
    /// Given back because the TTL passed.
    Expire,
}

impl Settlement {
    /// The status a reservation ends in.
    pub fn status(self) -> ReservationStatus {
        match self {
            Settlement::Confirm => ReservationStatus::Confirmed,
            Settlement::Release => ReservationStatus::Released,
            Settlement::Expire => ReservationStatus::Expired,
        }
    }

    /// The event kind of each settled line.
    pub fn event_kind(self) -> EventKind {
        match self {
            Settlement::Confirm => EventKind::ReservationConfirmed,
            Settlement::Release => EventKind::ReservationReleased,
            Settlement::Expire => EventKind::ReservationExpired,
        }
    }

    /// The settlement that ends in `status` (`None` for `Active`, which ends nothing).
    pub fn ending_in(status: ReservationStatus) -> Option<Self> {
        match status {
            ReservationStatus::Confirmed => Some(Settlement::Confirm),
            ReservationStatus::Released => Some(Settlement::Release),
            ReservationStatus::Expired => Some(Settlement::Expire),
            ReservationStatus::Active => None,
        }
    }

    /// Whether a request to settle `asked` is answered with the outcome of a settlement
    /// `self` already under way: the same request, or expiry (which only wants it ended).
    pub fn answers(self, asked: Settlement) -> bool {
        self == asked || asked == Settlement::Expire
    }
}

/// Whether `reservation` may end `how` at `now_ms` for a caller holding `grant`: the status
/// it moves to and the event kind of its lines, `None` when it is not due yet (expiry
/// only), or a refusal — first [`Refusal::LocationForbidden`] if any of its lines is
/// outside the grant, whatever its status.
pub fn settlement(
    how: Settlement,
    reservation: &Reservation,
    grant: &LocationGrant,
    now_ms: i64,
) -> Answer<Option<(ReservationStatus, EventKind)>> {
    grant.check_reservation(reservation)?;
    if !reservation.is_active() {
        return Err(not_active(&reservation.id, reservation.status));
    }
    Ok(match how {
        Settlement::Confirm if reservation.is_due(now_ms) => {
            // The TTL passed: the hold is gone even if the expiry worker has not run yet.
            return Err(not_active(&reservation.id, ReservationStatus::Expired));
        }
        Settlement::Expire if !reservation.is_due(now_ms) => None,
        _ => Some((how.status(), how.event_kind())),
    })
}

/// Decides how `reservation` ends. `levels` holds the current level of each line, in line
/// order.
pub fn settle(
    how: Settlement,
    reservation: &Reservation,
    levels: &[StockLevel],
    grant: &LocationGrant,
    meta: &EventMeta,
) -> Answer<Applied> {
    let now = meta.occurred_at_ms;
    let Some((status, _)) = settlement(how, reservation, grant, now)? else {
        return Ok(Applied::unchanged(CommandResult::Reservation(
            reservation.clone(),
        )));
    };
    debug_assert_eq!(levels.len(), reservation.lines.len());
    let (next, events): (Vec<StockLevel>, Vec<StockEvent>) = reservation
        .lines
        .iter()
        .zip(levels)
        .map(|(line, level)| settle_line(how, reservation, line, level, grant, meta))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .unzip();
    let updated = Reservation {
        status,
        updated_at_ms: now,
        ..reservation.clone()
    };
    Ok(Applied {
        levels: next,
        reservation: Some(updated.clone()),
        events,
        result: CommandResult::Reservation(updated),
    })
}

fn not_active(id: &ReservationId, status: ReservationStatus) -> Refusal {
    Refusal::ReservationNotActive {
        id: id.clone(),
        status,
    }
}

#[cfg(test)]
mod tests;
