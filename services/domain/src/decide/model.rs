//! A tiny in-memory write side for the property tests: it loads state, asks the
//! decisions, checks what every applied change must satisfy, and writes it the way a store
//! would; plus the ledger of what each SKU should hold.

use std::collections::BTreeMap;

use super::*;
use crate::command::{
    Adjust, AdjustReason, CloseIncoming, CreateTransfer, ExpectIncoming, Mode, Move, OnHandChange,
    ReceiveLine, ReceiveTransfer, Reserve, ReserveLine, SetAllocation, SetPolicy,
    TransferLineRequest,
};
use crate::event::EventMeta;
use crate::ids::{
    ChannelId, LocationId, PurchaseOrderId, Region, ReservationId, Sku, StockKey, TransferId,
};
use crate::policy::{Oversell, Settings, SkuPolicy};
use crate::quantity::{Date, PoLine, State, Target};
use crate::reservation::{Reservation, ReservationStatus};
use crate::stock::{Allocation, Cap, StockLevel};
use crate::transfer::{Transfer, TransferStatus};

/// One command of a random sequence (keys, ids and SKUs are small numbers).
#[derive(Debug, Clone)]
pub(super) enum Op {
    Adjust {
        key: u8,
        change: OnHandChange,
        record: bool,
    },
    Move {
        key: u8,
        from: State,
        to: Target,
        qty: i64,
    },
    Reserve {
        id: u8,
        lines: Vec<(u8, i64)>,
        ttl: u64,
        channel: Option<u8>,
    },
    Allocate {
        key: u8,
        channel: u8,
        fence: i64,
        cap: Option<i64>,
    },
    Settle {
        id: u8,
        how: Settlement,
    },
    Policy {
        sku: u8,
        location: Option<u8>,
        oversell: Oversell,
    },
    Expect {
        key: u8,
        line: u8,
        qty: i64,
    },
    Receipt {
        key: u8,
        line: u8,
        qty: i64,
    },
    Close {
        key: u8,
        line: u8,
    },
    Transfer {
        id: u8,
        lines: Vec<(u8, i64)>,
        reverse: bool,
    },
    Ship {
        id: u8,
    },
    /// `take`: (line index, good, damaged); clamped to what is in transit unless `over`.
    Receive {
        id: u8,
        take: Vec<(u8, i64, i64)>,
        close: bool,
        over: bool,
    },
    Cancel {
        id: u8,
    },
    Tick(i64),
}

pub(super) fn sku_of(n: u8) -> Sku {
    Sku::parse(format!("sku{}", n % 3)).expect("sku")
}

/// One of two sales channels.
fn channel_of(n: u8) -> ChannelId {
    ChannelId::parse(format!("ch{}", n % 2)).expect("channel")
}

pub(super) fn loc_of(n: u8) -> LocationId {
    LocationId::parse(format!("loc{}", n % 2)).expect("location")
}

/// Keys 0..6: SKU `k % 3` at location `k / 3`.
pub(super) fn key_of(k: u8) -> StockKey {
    StockKey::new(sku_of(k % 3), loc_of(k / 3))
}

fn po(line: u8) -> PoLine {
    PoLine {
        purchase_order: PurchaseOrderId::parse("po-1").expect("po"),
        line: u32::from(line % 3) + 1,
    }
}

#[derive(Default)]
pub(super) struct Model {
    pub levels: BTreeMap<StockKey, StockLevel>,
    pub sku_policies: BTreeMap<Sku, SkuPolicy>,
    pub reservations: BTreeMap<ReservationId, Reservation>,
    pub transfers: BTreeMap<TransferId, Transfer>,
    pub events: Vec<StockEvent>,
    pub policy_events: usize,
    /// What each SKU should hold on hand or in transit over every location: the sum of
    /// what the applied commands put in or took out.
    pub ledger: BTreeMap<Sku, i64>,
    pub now: i64,
}

impl Model {
    pub(super) fn level(&self, key: &StockKey) -> StockLevel {
        let level = self.levels.get(key).cloned().unwrap_or_else(|| {
            StockLevel::empty(
                key.sku.clone(),
                key.location.clone(),
                Region::parse("north").expect("region"),
            )
        });
        let sku = self.sku_policies.get(&key.sku).map(|p| p.settings);
        level.with_sku_policy(sku)
    }

    pub(super) fn meta(&self) -> EventMeta {
        EventMeta {
            occurred_at_ms: self.now,
            ..EventMeta::default()
        }
    }

    /// Writes an applied decision after checking what every applied change satisfies;
    /// `recorded` marks a fact (no policy floor). Returns whether anything was applied.
    pub(super) fn write(&mut self, applied: Answer<Applied>, recorded: bool) -> bool {
        let Ok(applied) = applied else { return false };
        assert_eq!(
            applied.levels.len(),
            applied.events.len(),
            "one event per change"
        );
        for (level, event) in applied.levels.iter().zip(&applied.events) {
            let before = self.level(&level.key());
            assert_eq!(level.version, before.version + 1, "one version per change");
            assert_eq!(event.version, level.version);
            let q = event.quantities();
            assert_eq!(q, level.quantities());
            assert_eq!(event.available, Some(level.available()));
            assert_eq!(
                q.on_hand,
                level.available() + q.reserved + q.damaged + q.quality_hold + q.safety_stock,
                "on_hand is the sum of its states"
            );
            let after = level.available();
            if !recorded
                && after < before.available()
                && let Some(floor) = before.policy().oversell.floor()
            {
                assert!(
                    after >= floor,
                    "available {after} below the policy's floor {floor}: {event:?}"
                );
            }
            self.levels.insert(level.key(), level.clone());
        }
        if let Some(r) = applied.reservation {
            self.reservations.insert(r.id.clone(), r);
        }
        if let Some(t) = applied.transfer {
            self.transfers.insert(t.id.clone(), t);
        }
        if let Some((policy, _event)) = applied.policy {
            self.sku_policies.insert(policy.sku.clone(), policy);
            self.policy_events += 1;
        }
        self.events.extend(applied.events);
        true
    }

    fn book(&mut self, sku: &Sku, units: i64) {
        *self.ledger.entry(sku.clone()).or_default() += units;
    }

    pub(super) fn apply(&mut self, op: &Op) -> bool {
        self.apply_as(op, &LocationGrant::Any)
    }

    /// Applies `op` for a caller holding `grant` (a recorded fact always comes from the
    /// store of its key's location).
    pub(super) fn apply_as(&mut self, op: &Op, grant: &LocationGrant) -> bool {
        let meta = self.meta();
        match op {
            Op::Adjust {
                key,
                change,
                record,
            } => {
                let key = key_of(*key);
                let Ok(mut cmd) =
                    Adjust::new(key.clone(), *change, AdjustReason::Correction, None, None)
                else {
                    return false;
                };
                let store;
                let grant = if *record {
                    cmd = cmd.recorded();
                    store = LocationGrant::only([key.location.clone()]);
                    &store
                } else {
                    grant
                };
                let level = self.level(&key);
                let holders = self.holders(&key);
                let result = adjust(&level, &cmd, grant, &holders, &meta);
                if let Ok(applied) = &result {
                    let units = applied.levels[0].on_hand - level.on_hand;
                    self.book(&key.sku, units);
                    let oversold = applied.events[0].kind == crate::EventKind::StockOversold;
                    assert_eq!(
                        oversold,
                        cmd.mode == Mode::Record && applied.levels[0].shortfall() > 0
                    );
                }
                self.write(result, *record)
            }
            Op::Move { key, from, to, qty } => {
                let key = key_of(*key);
                let Ok(cmd) = Move::new(key.clone(), *from, *to, *qty, AdjustReason::Damage, None)
                else {
                    return false;
                };
                let result = move_units(&self.level(&key), &cmd, grant, &meta);
                if result.is_ok() && *to == Target::Gone {
                    self.book(&key.sku, -qty);
                }
                self.write(result, false)
            }
            Op::Reserve {
                id,
                lines,
                ttl,
                channel,
            } => {
                let lines: Vec<ReserveLine> = lines
                    .iter()
                    .map(|(k, qty)| {
                        let key = key_of(*k);
                        ReserveLine {
                            sku: key.sku,
                            location: key.location,
                            qty: *qty,
                        }
                    })
                    .collect();
                let id = ReservationId::parse(format!("r{id}")).expect("id");
                let Ok(cmd) = Reserve::new(id.clone(), lines, *ttl, None) else {
                    return false;
                };
                let cmd = cmd.for_channel(channel.map(channel_of));
                let levels: Vec<_> = cmd.lines.iter().map(|l| self.level(&l.key())).collect();
                let result = reserve(&levels, self.reservations.get(&id), &cmd, grant, &meta);
                self.write(result, false)
            }
            Op::Settle { id, how } => {
                let id = ReservationId::parse(format!("r{id}")).expect("id");
                let Some(r) = self.reservations.get(&id).cloned() else {
                    return false;
                };
                let levels: Vec<_> = r.lines.iter().map(|l| self.level(&l.key())).collect();
                let result = settle(*how, &r, &levels, grant, &meta);
                if let Ok(applied) = &result
                    && *how == Settlement::Confirm
                    && !applied.levels.is_empty()
                {
                    for line in &r.lines {
                        self.book(&line.sku, -line.qty);
                    }
                }
                self.write(result, false)
            }
            Op::Policy {
                sku,
                location,
                oversell,
            } => {
                let settings = Settings {
                    oversell: Some(*oversell),
                    low_stock_threshold: Some(3),
                };
                let sku = sku_of(*sku);
                let Ok(cmd) =
                    SetPolicy::new(sku.clone(), location.map(loc_of), settings, None, None)
                else {
                    return false;
                };
                let result = match cmd.key() {
                    Some(key) => set_location_policy(&self.level(&key), &cmd, grant, &meta),
                    None => set_sku_policy(self.sku_policies.get(&sku), &cmd, grant, &meta),
                };
                self.write(result, false)
            }
            Op::Allocate {
                key,
                channel,
                fence,
                cap,
            } => {
                let key = key_of(*key);
                let allocation = Allocation::new(*fence, cap.map(Cap::Units)).ok();
                let Ok(cmd) =
                    SetAllocation::new(key.clone(), channel_of(*channel), allocation, None, None)
                else {
                    return false;
                };
                let result = set_allocation(&self.level(&key), &cmd, grant, &meta);
                self.write(result, false)
            }
            Op::Expect { key, line, qty } => {
                let key = key_of(*key);
                let day = Date::parse("d", "2026-12-12").expect("date");
                let Ok(cmd) = ExpectIncoming::new(key.clone(), po(*line), *qty, day, None) else {
                    return false;
                };
                let result = expect_incoming(&self.level(&key), &cmd, grant, &meta);
                self.write(result, false)
            }
            Op::Receipt { key, line, qty } => {
                let key = key_of(*key);
                let cmd = Adjust::new(
                    key.clone(),
                    OnHandChange::Delta(*qty),
                    AdjustReason::Receipt,
                    None,
                    None,
                )
                .and_then(|a| a.receiving(po(*line)));
                let Ok(cmd) = cmd else { return false };
                let result = adjust(&self.level(&key), &cmd, grant, &[], &meta);
                if result.is_ok() {
                    self.book(&key.sku, *qty);
                }
                self.write(result, false)
            }
            Op::Close { key, line } => {
                let key = key_of(*key);
                let Ok(cmd) = CloseIncoming::new(key.clone(), po(*line), None) else {
                    return false;
                };
                let result = close_incoming(&self.level(&key), &cmd, grant, &meta);
                self.write(result, false)
            }
            Op::Transfer { id, lines, reverse } => {
                let (from, to) = if *reverse { (1, 0) } else { (0, 1) };
                let lines = lines
                    .iter()
                    .map(|(s, qty)| TransferLineRequest {
                        sku: sku_of(*s),
                        qty: *qty,
                    })
                    .collect();
                let day = Date::parse("d", "2026-12-20").expect("date");
                let id = TransferId::parse(format!("t{id}")).expect("id");
                let Ok(cmd) =
                    CreateTransfer::new(id.clone(), loc_of(from), loc_of(to), lines, day, None)
                else {
                    return false;
                };
                let north = || Some(Region::parse("north").expect("region"));
                let existing = self.transfers.get(&id);
                let result = transfer::create(existing, &cmd, north(), north(), grant, self.now);
                self.write(result, false)
            }
            Op::Ship { id } => {
                let id = TransferId::parse(format!("t{id}")).expect("id");
                let Some(t) = self.transfers.get(&id).cloned() else {
                    return false;
                };
                let sources: Vec<_> = t
                    .lines
                    .iter()
                    .map(|l| self.level(&t.source_key(l)))
                    .collect();
                let dests: Vec<_> = t
                    .lines
                    .iter()
                    .map(|l| self.level(&t.destination_key(l)))
                    .collect();
                let result = transfer::ship(&t, &sources, &dests, grant, &meta);
                self.write(result, false)
            }
            Op::Receive {
                id,
                take,
                close,
                over,
            } => {
                let id = TransferId::parse(format!("t{id}")).expect("id");
                let Some(t) = self.transfers.get(&id).cloned() else {
                    return false;
                };
                let mut lines: Vec<ReceiveLine> = Vec::new();
                for (i, good, damaged) in take {
                    let line = &t.lines[usize::from(*i) % t.lines.len()];
                    if lines.iter().any(|l| l.sku == line.sku) {
                        continue;
                    }
                    let room = line.outstanding().max(0);
                    let (good, damaged) = if *over {
                        (*good, *damaged)
                    } else {
                        let good = (*good).min(room);
                        (good, (*damaged).min(room - good))
                    };
                    lines.push(ReceiveLine {
                        sku: line.sku.clone(),
                        qty: good,
                        damaged,
                    });
                }
                let Ok(cmd) = ReceiveTransfer::new(id, lines, *close) else {
                    return false;
                };
                let dests: Vec<_> = t
                    .lines
                    .iter()
                    .map(|l| self.level(&t.destination_key(l)))
                    .collect();
                let result = transfer::receive(&t, &cmd, &dests, grant, &meta);
                if let Ok(applied) = &result
                    && let Some(after) = &applied.transfer
                {
                    for (was, now) in t.lines.iter().zip(&after.lines) {
                        self.book(&now.sku, was.missing - now.missing);
                    }
                }
                self.write(result, false)
            }
            Op::Cancel { id } => {
                let id = TransferId::parse(format!("t{id}")).expect("id");
                let Some(t) = self.transfers.get(&id).cloned() else {
                    return false;
                };
                let result = transfer::cancel(&t, grant, self.now);
                self.write(result, false)
            }
            Op::Tick(ms) => {
                self.now += ms;
                false
            }
        }
    }

    /// Active reservations holding stock at `key`.
    fn holders(&self, key: &StockKey) -> Vec<ReservationId> {
        self.reservations
            .values()
            .filter(|r| r.is_active() && r.lines.iter().any(|l| l.key() == *key))
            .map(|r| r.id.clone())
            .collect()
    }

    pub(super) fn check_invariants(&self) {
        let mut held: BTreeMap<StockKey, i64> = BTreeMap::new();
        let mut by_channel: BTreeMap<StockKey, BTreeMap<ChannelId, i64>> = BTreeMap::new();
        for r in self.reservations.values() {
            if r.status == ReservationStatus::Active {
                for line in &r.lines {
                    *held.entry(line.key()).or_default() += line.qty;
                    if let Some(c) = &line.channel {
                        *by_channel
                            .entry(line.key())
                            .or_default()
                            .entry(c.clone())
                            .or_default() += line.qty;
                    }
                }
            }
        }
        let mut holding: BTreeMap<crate::ids::Sku, i64> = BTreeMap::new();
        for (key, level) in &self.levels {
            assert!(level.invariant_holds(), "invariant broken: {level:?}");
            assert_eq!(
                level.reserved,
                held.get(key).copied().unwrap_or(0),
                "reserved equals what active reservations hold at {key:?}"
            );
            assert_eq!(
                level.extras.channel_held,
                by_channel.get(key).cloned().unwrap_or_default(),
                "each channel's holds equal its active lines at {key:?}"
            );
            for b in &level.extras.backorders {
                let r = &self.reservations[&b.reservation_id];
                assert!(r.is_active(), "a backorder of a settled reservation: {b:?}");
                let line = r.lines.iter().find(|l| l.key() == *key);
                assert!(
                    line.is_some_and(|l| l.qty >= b.qty),
                    "{b:?} beyond its line"
                );
            }
            let events = self
                .events
                .iter()
                .filter(|e| e.sku == key.sku && e.location == key.location)
                .count();
            assert_eq!(level.version, events as u64, "one event per applied change");
            *holding.entry(key.sku.clone()).or_default() += level.on_hand + level.in_transit();
        }
        for (sku, units) in &self.ledger {
            assert_eq!(
                holding.get(sku).copied().unwrap_or(0),
                *units,
                "{sku}: on hand plus in transit equals what commands put in and took out"
            );
        }
        for t in self.transfers.values() {
            let in_transit: i64 = t
                .lines
                .iter()
                .map(|l| self.level(&t.destination_key(l)).in_transit_of(&t.id))
                .sum();
            let expected = match t.status {
                TransferStatus::InTransit => t.outstanding(),
                _ => 0,
            };
            assert_eq!(in_transit, expected, "no transfer half applied: {t:?}");
        }
    }
}
