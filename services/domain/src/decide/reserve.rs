//! Reservations: holding stock on lines (all or nothing, under each key's oversell
//! policy), and how a reservation ends — confirmed, released or expired.

use crate::answer::CommandResult;
use crate::command::Reserve;
use crate::event::{Detail, EventKind, EventMeta, StockEvent};
use crate::grant::LocationGrant;
use crate::ids::{ChannelId, ReservationId};
use crate::refusal::{Answer, Refusal};
use crate::reservation::{Reservation, ReservationLine, ReservationStatus};
use crate::stock::StockLevel;

use super::Applied;

/// Decides a reservation. `levels` holds the current level of each line, in line order.
///
/// All or nothing: if any line is short, every short line is reported and nothing changes.
/// The answer shows, per line, the units backordered under a backorder policy.
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
    let mut changes = Vec::with_capacity(levels.len());
    let mut short = Vec::new();
    let channel = cmd.channel.as_ref();
    for (line, level) in cmd.lines.iter().zip(levels) {
        let hold = Hold {
            id: &cmd.id,
            qty: line.qty,
            channel,
        };
        match reserve_line(level, hold, grant, cmd.reference.clone(), meta) {
            Ok(change) => changes.push(change),
            Err(e @ Refusal::LocationForbidden { .. }) => return Err(e),
            Err(_) => short.push(level.short_line_to(line.qty, channel)),
        }
    }
    if !short.is_empty() {
        return Err(Refusal::InsufficientStock { lines: short });
    }
    let reservation = new_reservation(cmd, meta.occurred_at_ms);
    let shown = with_backorders_of(reservation.clone(), changes.iter().map(|(l, _)| l));
    Ok(Applied {
        reservation: Some(reservation),
        ..Applied::changes(changes, CommandResult::Reservation(shown))
    })
}

/// `reservation` with each line's backordered units as `levels` (one per line, any
/// order) hold them for it.
pub fn with_backorders_of<'a>(
    reservation: Reservation,
    levels: impl IntoIterator<Item = &'a StockLevel>,
) -> Reservation {
    let levels: Vec<&StockLevel> = levels.into_iter().collect();
    let id = reservation.id.clone();
    reservation.with_backorders(|line| {
        levels
            .iter()
            .find(|l| l.sku == line.sku && l.location == line.location)
            .map_or(0, |l| l.backordered_for(&id))
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

/// The reservation `cmd` creates when accepted at `now_ms` (as stored: backorders are the
/// keys' to tell).
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
                backordered: 0,
                channel: cmd.channel.clone(),
            })
            .collect(),
        reference: cmd.reference.clone(),
        created_at_ms: now_ms,
        expires_at_ms: now_ms.saturating_add(ttl_ms),
        updated_at_ms: now_ms,
    }
}

/// Units one reservation holds (or held) at one key, for its channel.
#[derive(Debug, Clone, Copy)]
pub struct Hold<'a> {
    /// The reservation.
    pub id: &'a ReservationId,
    /// Units.
    pub qty: i64,
    /// The sales channel they are held for.
    pub channel: Option<&'a ChannelId>,
}

impl<'a> Hold<'a> {
    /// What reservation `id` holds on `line`.
    pub fn of_line(id: &'a ReservationId, line: &'a ReservationLine) -> Self {
        Self {
            id,
            qty: line.qty,
            channel: line.channel.as_ref(),
        }
    }
}

/// Holds `hold` at `level`: one line of [`reserve`], or one step of a reservation that a
/// backend applies key by key.
pub fn reserve_line(
    level: &StockLevel,
    hold: Hold<'_>,
    grant: &LocationGrant,
    reference: Option<String>,
    meta: &EventMeta,
) -> Answer<(StockLevel, StockEvent)> {
    grant.check(&level.location)?;
    let Hold { id, qty, channel } = hold;
    let (next, backordered) = level.reserve(qty, id, channel)?;
    let detail = Detail {
        reservation_id: Some(id.clone()),
        reference,
        backordered: (backordered > 0).then_some(backordered),
        ..Detail::default()
    };
    let event = StockEvent::of_change(EventKind::StockReserved, level, &next, detail, meta);
    Ok((next.level, event))
}

/// Gives back a line that reservation `id` held when the reservation as a whole failed
/// (a later line was short): the compensation step of a key-by-key reservation. The event
/// is a release, so read models and consumers see the hold disappear. No grant: it undoes
/// what the failed attempt itself did, whoever finishes the rollback.
pub fn compensate_line(
    level: &StockLevel,
    hold: Hold<'_>,
    reference: Option<String>,
    meta: &EventMeta,
) -> (StockLevel, StockEvent) {
    let Hold { id, qty, channel } = hold;
    let next = level.unreserve(qty, id, channel);
    let detail = Detail {
        reservation_id: Some(id.clone()),
        reference,
        ..Detail::default()
    };
    let event = StockEvent::of_change(EventKind::ReservationReleased, level, &next, detail, meta);
    (next.level, event)
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
    let id = &reservation.id;
    let channel = line.channel.as_ref();
    let next = match how {
        Settlement::Confirm => level.confirm(line.qty, id, channel)?,
        Settlement::Release | Settlement::Expire => level.unreserve(line.qty, id, channel),
    };
    let detail = Detail {
        reservation_id: Some(id.clone()),
        reference: reservation.reference.clone(),
        ..Detail::default()
    };
    let event = StockEvent::of_change(how.event_kind(), level, &next, detail, meta);
    Ok((next.level, event))
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

/// Refuses to confirm `reservation` while units of it are backordered at any of its
/// lines' keys (`levels`, one per line in line order). Backorders of a reservation only
/// shrink once it holds them, so a reservation found confirmable stays so: a store that
/// settles line by line checks once, before it commits to the settlement.
pub fn check_confirmable(reservation: &Reservation, levels: &[StockLevel]) -> Answer<()> {
    let waiting: Vec<_> = levels
        .iter()
        .filter_map(|level| {
            let n = level.backordered_for(&reservation.id);
            (n > 0).then(|| level.short_line(n))
        })
        .collect();
    if waiting.is_empty() {
        Ok(())
    } else {
        Err(Refusal::ReservationBackordered {
            id: reservation.id.clone(),
            lines: waiting,
        })
    }
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
        let shown = with_backorders_of(reservation.clone(), levels);
        return Ok(Applied::unchanged(CommandResult::Reservation(shown)));
    };
    debug_assert_eq!(levels.len(), reservation.lines.len());
    if how == Settlement::Confirm {
        check_confirmable(reservation, levels)?;
    }
    let changes = reservation
        .lines
        .iter()
        .zip(levels)
        .map(|(line, level)| settle_line(how, reservation, line, level, grant, meta))
        .collect::<Result<Vec<_>, _>>()?;
    let updated = Reservation {
        status,
        updated_at_ms: now,
        ..reservation.clone()
    };
    Ok(Applied {
        reservation: Some(updated.clone()),
        ..Applied::changes(changes, CommandResult::Reservation(updated))
    })
}

fn not_active(id: &ReservationId, status: ReservationStatus) -> Refusal {
    Refusal::ReservationNotActive {
        id: id.clone(),
        status,
    }
}
