//! Pure decisions: the state a store loaded, plus a command, gives the new state and its
//! events, or a rejection. Every storage backend calls these, so the rules live once.
//!
//! Callers load the stock levels a command touches (a never-written key is
//! [`StockLevel::empty`]) with the SKU's policy attached
//! ([`StockLevel::with_sku_policy`]), call the decision, and write [`Applied`] atomically
//! — or, on a backend without multi-key transactions, key by key with compensation.
//!
//! Every decision takes the caller's [`LocationGrant`] and refuses first (before any other
//! rule, so a caller learns nothing about stock it may not touch) with
//! [`Refusal::LocationForbidden`] when the command touches a location outside it: the
//! locations a command names, or, for a settlement or a transfer, the locations of the
//! record as loaded for this decision. Only a record that does not exist answers before
//! that (`reservation_not_found`, `transfer_not_found`, decided by the caller that found
//! nothing to load).
//!
//! - [`stock`]: one key — adjust (checked or recorded), move, incoming lines, a
//!   location's policy — and a SKU's policy.
//! - [`reserve`]: reservations and their settlement.
//! - [`transfer`]: transfers, decided whole (one transaction) or step by step.

pub mod reserve;
pub mod stock;
pub mod transfer;

pub use reserve::*;
pub use stock::*;

use crate::answer::CommandResult;
use crate::command::{Command, Mode};
use crate::event::{EventMeta, PolicyEvent, StockEvent};
use crate::grant::LocationGrant;
use crate::policy::SkuPolicy;
use crate::refusal::{Answer, Refusal};
use crate::reservation::Reservation;
use crate::stock::StockLevel;
use crate::transfer::Transfer;

/// The outcome of an accepted command: what to write and what to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// New states of the touched keys, in the order the changes were made: each one
    /// version above the key's previous state (a key changed twice by one command appears
    /// twice, the later entry one version above the earlier).
    pub levels: Vec<StockLevel>,
    /// The reservation to insert or update, if the command touched one.
    pub reservation: Option<Reservation>,
    /// One event per entry of `levels`, in the same order.
    pub events: Vec<StockEvent>,
    /// The transfer to insert or update, if the command touched one.
    pub transfer: Option<Transfer>,
    /// A SKU's policy record to write, and its event.
    pub policy: Option<(SkuPolicy, PolicyEvent)>,
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
            transfer: None,
            policy: None,
            result,
        }
    }

    /// How many events the command publishes: one per key change, and one for a SKU's
    /// policy.
    pub fn event_count(&self) -> usize {
        self.events.len() + usize::from(self.policy.is_some())
    }

    /// Changes of keys (each with its event) answered with `result`.
    pub(crate) fn changes(changes: Vec<(StockLevel, StockEvent)>, result: CommandResult) -> Self {
        let (levels, events) = changes.into_iter().unzip();
        Self {
            levels,
            events,
            ..Self::unchanged(result)
        }
    }
}

/// Refuses `command` when the caller may not send it, before anything is loaded: a
/// location it names outside `grant` (so a caller is told `forbidden`, not whether the
/// location exists or what it holds), a recorded fact from anyone but a store, a SKU-wide
/// policy from a store. A settlement, a shipment, a receipt or a cancellation names no
/// location: its record's are checked by its decision on the state loaded for it.
pub fn authorize(command: &Command, grant: &LocationGrant) -> Answer<()> {
    match command {
        Command::Adjust(cmd) => {
            grant.check(&cmd.key.location)?;
            if cmd.mode == Mode::Record && !grant.is_store() {
                return Err(Refusal::RecordModeForbidden);
            }
            Ok(())
        }
        Command::Move(cmd) => grant.check(&cmd.key.location),
        Command::SetAllocation(cmd) => grant.check(&cmd.key.location),
        Command::ExpectIncoming(cmd) => grant.check(&cmd.key.location),
        Command::CloseIncoming(cmd) => grant.check(&cmd.key.location),
        Command::SetPolicy(cmd) => match &cmd.location {
            Some(location) => grant.check(location),
            None if grant.is_store() => Err(Refusal::SkuWideForbidden),
            None => Ok(()),
        },
        Command::Reserve(cmd) => grant.check_all(cmd.lines.iter().map(|l| &l.location)),
        Command::CreateTransfer(cmd) => grant.check(&cmd.from),
        Command::Confirm { .. }
        | Command::Release { .. }
        | Command::Expire { .. }
        | Command::ShipTransfer { .. }
        | Command::ReceiveTransfer(_)
        | Command::CancelTransfer { .. } => Ok(()),
    }
}

/// The meta of a step a store runs on its own (expiry, a transfer's recovery): no actor,
/// no key.
pub fn internal_meta(now_ms: i64) -> EventMeta {
    EventMeta {
        occurred_at_ms: now_ms,
        ..EventMeta::default()
    }
}

#[cfg(test)]
mod model;
#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
