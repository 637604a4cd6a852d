//! The quantity rules of one key: each takes the level as loaded and gives the next one
//! (one version up, backorders filled) or a refusal. Decisions ([`crate::decide`]) wrap
//! them with grants, events and answers.

use crate::command::{Adjust, Mode, OnHandChange};
use crate::ids::{ChannelId, ReservationId, TransferId};
use crate::limits::{MAX_BACKORDERS, MAX_INCOMING, MAX_ON_HAND};
use crate::policy::{Oversell, Settings};
use crate::quantity::{Backorder, Date, Incoming, PoLine, Source, State, Target};
use crate::refusal::{Answer, Refusal};

use super::{Next, StockLevel};

impl StockLevel {
    /// Refuses a change that would take `available` from its value now to `after` when
    /// that is lower than both the policy's floor and what it was.
    fn within_policy(&self, after: i64, requested: i64) -> Answer<()> {
        let before = self.available();
        match self.policy().oversell.floor() {
            Some(floor) if after < before && after < floor => Err(self.short(requested)),
            _ => Ok(()),
        }
    }

    /// Changes on-hand. A checked adjustment honours `expected_version`, `expected_on_hand`
    /// and the oversell policy (and never takes on-hand below zero unless the key is
    /// `track_only`); a recorded one is a fact and is applied whatever it leaves, within
    /// the bounds of a count. A receipt naming a purchase-order line takes its units off
    /// that line (the rest stays incoming; a line received in full is closed).
    pub fn adjust(&self, cmd: &Adjust) -> Answer<Next> {
        if cmd.mode == Mode::Check {
            if let Some(expected) = cmd.expected_version
                && expected != self.version
            {
                return Err(Refusal::VersionConflict {
                    sku: self.sku.clone(),
                    location: self.location.clone(),
                    expected,
                    current: self.version,
                });
            }
            if let Some(expected) = cmd.expected_on_hand
                && expected != self.on_hand
            {
                return Err(Refusal::OnHandConflict {
                    sku: self.sku.clone(),
                    location: self.location.clone(),
                    expected,
                    current: self.on_hand,
                });
            }
        }
        let (on_hand, requested) = match cmd.change {
            OnHandChange::Delta(delta) => (self.on_hand + delta, delta),
            OnHandChange::SetOnHand(count) => (count, count - self.on_hand),
        };
        if on_hand.abs() > MAX_ON_HAND {
            return Err(self.short(requested));
        }
        let after = self.available() + (on_hand - self.on_hand);
        if cmd.mode == Mode::Check {
            let track_only = self.policy().oversell == Oversell::TrackOnly;
            if on_hand < 0 && on_hand < self.on_hand && !track_only {
                return Err(self.short(requested));
            }
            self.within_policy(after, requested)?;
        }
        let received = match &cmd.incoming {
            Some(po) => Some((self.open_po_line(po)?, po.clone())),
            None => None,
        };
        Ok(self.next(|l| {
            l.on_hand = on_hand;
            if let Some((index, _)) = received {
                let line = &mut l.extras.incoming[index];
                line.qty -= requested.clamp(0, line.qty);
                l.extras.incoming.retain(|i| i.qty > 0);
            }
        }))
    }

    /// Where purchase-order line `po` is open here.
    fn open_po_line(&self, po: &PoLine) -> Answer<usize> {
        self.extras
            .incoming
            .iter()
            .position(|i| i.source == Source::PurchaseOrder(po.clone()))
            .ok_or_else(|| Refusal::IncomingNotFound {
                sku: self.sku.clone(),
                location: self.location.clone(),
                po_line: po.to_string(),
            })
    }

    /// Holds `qty` units for reservation `id` of `channel`. Under `deny` refused beyond
    /// `available`; under `backorder` accepted down to `-limit`, the units beyond stock
    /// backordered for `id`; under `track_only` always accepted. Within either of the first
    /// two, refused when it would take another channel's fenced units or pass the
    /// channel's cap. Returns the level and the units backordered.
    pub fn reserve(
        &self,
        qty: i64,
        id: &ReservationId,
        channel: Option<&ChannelId>,
    ) -> Answer<(Next, i64)> {
        let available = self.available();
        if qty <= 0 {
            return Err(self.short(qty));
        }
        self.within_allocations(qty, channel)?;
        let after = available - qty;
        let backordered = match self.policy().oversell {
            Oversell::Deny if after < 0 => return Err(self.short(qty)),
            Oversell::Backorder { limit } if after < -limit => return Err(self.short(qty)),
            Oversell::Backorder { .. } => (qty - available.max(0)).clamp(0, qty),
            Oversell::Deny | Oversell::TrackOnly => 0,
        };
        if backordered > 0 && self.extras.backorders.len() >= MAX_BACKORDERS {
            return Err(self.short(qty));
        }
        let next = self.next(|l| {
            l.reserved += qty;
            l.hold_for(channel, qty);
            if backordered > 0 {
                l.extras.backorders.push(Backorder {
                    reservation_id: id.clone(),
                    qty: backordered,
                });
            }
        });
        Ok((next, backordered))
    }

    /// Returns `qty` held units of reservation `id` of `channel` to availability (release
    /// or expiry), dropping what was backordered for it.
    ///
    /// Saturates at zero so that a state written by an older, buggy writer can still be
    /// released; with the invariant intact this never saturates.
    pub fn unreserve(&self, qty: i64, id: &ReservationId, channel: Option<&ChannelId>) -> Next {
        self.next(|l| {
            l.reserved = (l.reserved - qty).max(0);
            l.unhold_for(channel, qty);
            l.extras.backorders.retain(|b| b.reservation_id != *id);
        })
    }

    /// Turns `qty` held units of reservation `id` into a sale: both on-hand and reserved
    /// drop. Refused while units of it are still backordered: what has not arrived cannot
    /// leave.
    pub fn confirm(
        &self,
        qty: i64,
        id: &ReservationId,
        channel: Option<&ChannelId>,
    ) -> Answer<Next> {
        let waiting = self.backordered_for(id);
        if waiting > 0 {
            return Err(Refusal::ReservationBackordered {
                id: id.clone(),
                lines: vec![self.short_line(waiting)],
            });
        }
        let qty = qty.min(self.reserved).max(0);
        Ok(self.next(|l| {
            l.on_hand -= qty;
            l.reserved -= qty;
            l.unhold_for(channel, qty);
        }))
    }

    /// The units in state `state` (what `available` is for the derived state).
    pub fn in_state(&self, state: State) -> i64 {
        match state {
            State::Available => self.available(),
            State::Damaged => self.extras.damaged,
            State::QualityHold => self.extras.quality_hold,
            State::SafetyStock => self.extras.safety_stock,
        }
    }

    /// Moves `qty` units from `from` to `to`; refused when `from` holds fewer, whatever the
    /// policy (a state cannot give what it does not have). Into `gone`, on-hand drops.
    pub fn move_units(&self, from: State, to: Target, qty: i64) -> Answer<Next> {
        let held = self.in_state(from);
        if qty <= 0 || held < qty {
            return Err(Refusal::StateShort {
                sku: self.sku.clone(),
                location: self.location.clone(),
                state: from,
                requested: qty,
                held: held.max(0),
            });
        }
        Ok(self.next(|l| {
            let mut change = |state: State, by: i64| match state {
                State::Available => {}
                State::Damaged => l.extras.damaged += by,
                State::QualityHold => l.extras.quality_hold += by,
                State::SafetyStock => l.extras.safety_stock += by,
            };
            change(from, -qty);
            match to {
                Target::State(state) => change(state, qty),
                Target::Gone => l.on_hand -= qty,
            }
        }))
    }

    /// Expects `qty` units of purchase-order line `po` on `date`: a new line, or the
    /// line's open quantity and date revised.
    pub fn expect(&self, po: &PoLine, date: Date, qty: i64) -> Answer<Next> {
        let source = Source::PurchaseOrder(po.clone());
        let at = self.extras.incoming.iter().position(|i| i.source == source);
        if at.is_none() && self.extras.incoming.len() >= MAX_INCOMING {
            return Err(Refusal::LimitReached {
                what: format!("open incoming lines at {}", self.key()),
                limit: MAX_INCOMING as u64,
            });
        }
        Ok(self.next(|l| match at {
            Some(i) => {
                l.extras.incoming[i].expected = date;
                l.extras.incoming[i].qty = qty;
            }
            None => l.extras.incoming.push(Incoming {
                source,
                expected: date,
                qty,
            }),
        }))
    }

    /// Closes purchase-order line `po`: what was not received is no longer expected.
    pub fn close_incoming(&self, po: &PoLine) -> Answer<Next> {
        let at = self.open_po_line(po)?;
        Ok(self.next(|l| {
            l.extras.incoming.remove(at);
        }))
    }

    /// Units of a transfer leaving here: refused beyond `available` unless the key is
    /// `track_only` (a shipment cannot be backordered).
    pub fn ship_out(&self, qty: i64) -> Answer<Next> {
        let track_only = self.policy().oversell == Oversell::TrackOnly;
        if !track_only && self.available() < qty {
            return Err(self.short(qty));
        }
        Ok(self.next(|l| l.on_hand -= qty))
    }

    /// Gives back units a transfer took out here, when its shipment is undone before it
    /// completed.
    pub fn unship(&self, qty: i64) -> Next {
        self.next(|l| l.on_hand += qty)
    }

    /// Units of transfer `id` on their way here, expected on `date`.
    pub fn add_in_transit(&self, id: &TransferId, date: Date, qty: i64) -> Next {
        let source = Source::Transfer(id.clone());
        self.next(
            |l| match l.extras.incoming.iter_mut().find(|i| i.source == source) {
                Some(line) => line.qty += qty,
                None => l.extras.incoming.push(Incoming {
                    source,
                    expected: date,
                    qty,
                }),
            },
        )
    }

    /// Units of transfer `id` arrived: `good` sellable, `damaged` broken on arrival; both
    /// leave the transfer's incoming line and join on-hand.
    pub fn receive_transfer(&self, id: &TransferId, good: i64, damaged: i64) -> Next {
        self.next(|l| {
            l.take_in_transit(id, good + damaged);
            l.on_hand += good + damaged;
            l.extras.damaged += damaged;
        })
    }

    /// Units of transfer `id` that never arrived: no longer expected.
    pub fn lose_in_transit(&self, id: &TransferId, qty: i64) -> Next {
        self.next(|l| l.take_in_transit(id, qty))
    }

    fn take_in_transit(&mut self, id: &TransferId, qty: i64) {
        let source = Source::Transfer(id.clone());
        if let Some(line) = self.extras.incoming.iter_mut().find(|i| i.source == source) {
            line.qty -= qty.min(line.qty);
        }
        self.extras.incoming.retain(|i| i.qty > 0);
    }

    /// The location's policy override becomes `settings` (empty: inherit the SKU's).
    pub fn set_policy(&self, settings: Settings) -> Next {
        self.next(|l| l.extras.policy = settings)
    }
}
