//! Changes to one stock partition: load its state, let the domain decide, write the answer
//! as ONE conditional batch.
//!
//! A partition `(sku, location)` holds the level (static columns), the reservation lines
//! held there (`'r'` rows), the applied-command records (`'c'` rows) and the outbox (`'o'`
//! rows). A group of operations on one key ([`op`]) is decided in order against the state
//! loaded once — each sees the level the previous one left — and written by one batch
//! ([`batch`]):
//!
//! - the level `IF version = <loaded>` (null for a partition never written): nothing else
//!   changed the key since it was read;
//! - each keyed operation's applied-command row `IF NOT EXISTS`: a command id is applied at
//!   most once, decided inside the same condition, whoever runs it and however often;
//! - each reservation line in its final state, and one outbox row per change.
//!
//! If the batch is not applied (a race, or a duplicate command), the group is reloaded and
//! decided again ([`round`]); a duplicate then finds its applied-command row and replays
//! the stored answer. A Paxos timeout leaves the outcome unknown; the reload settles it the
//! same way. Refusals are answered only once the state they were decided on is known to be
//! current. This module loads the state.

mod batch;
pub(crate) mod op;
mod round;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use scylla::client::session::Session;
use stockflow_domain::saga::RecoveryWindow;
use stockflow_domain::{
    Answer, Extras, Region, Reservation, ReservationId, ReservationStatus, Settings, Sku,
    SkuPolicy, StockKey, StockLevel,
};

use super::known::{KnownPartitions, KnownState};
use crate::scylla::cql::query;
use crate::scylla::cql::rows::{CmdRow, LevelRow, LineRow, LocationRow, SkuPolicyRow};
use crate::scylla::cql::write_statements::WriteStatements;
use crate::scylla::outbox::OutboxLog;
use crate::{Result, StoreError};
use op::{KeyOp, StoredAnswer};

/// Loads, decides and writes partitions. Shared by the store, its coalescer and its sagas.
pub(crate) struct Partitions {
    pub session: Arc<Session>,
    pub st: Arc<WriteStatements>,
    /// What this process committed to the outbox, for its publisher.
    pub outbox: Arc<OutboxLog>,
    /// The state of each partition as of this process's last batch or read of it.
    known: KnownPartitions,
    /// How long a pending saga may go without taking a step's lease before expiry rolls it
    /// back (and how long a claim is held): [`RecoveryWindow::DEFAULT`] but in tests.
    pub window: RecoveryWindow,
}

/// A partition as loaded.
struct Loaded {
    level: Option<StockLevel>,
    cmds: BTreeMap<String, StoredAnswer>,
    lines: BTreeMap<String, Reservation>,
}

/// The state a round decides on.
struct Decidable {
    /// The version the batch is conditioned on (`None`: never written).
    expected: Option<u64>,
    /// The level, or the refusal of every operation (an unknown location).
    level: Answer<StockLevel>,
    /// The lines of the operations: `Some` held here, `None` absent.
    lines: BTreeMap<String, Option<Reservation>>,
    /// Applied-command rows read (none in a first round).
    cmds: BTreeMap<String, StoredAnswer>,
    /// New lines taken as absent without a read; their inserts carry `IF NOT EXISTS`.
    assumed_absent: BTreeSet<String>,
}

/// The line ids of `ops`.
fn line_ids<'a>(ops: &'a [&KeyOp]) -> impl Iterator<Item = (String, bool)> + 'a {
    ops.iter()
        .filter_map(|op| op.line.as_ref().map(|id| (id.to_string(), op.new_line)))
}

/// The distinct values `of` gives for `ops`.
fn distinct(ops: &[&KeyOp], of: impl Fn(&KeyOp) -> Option<String>) -> Vec<String> {
    ops.iter()
        .filter_map(|op| of(op))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

impl Partitions {
    pub(crate) fn new(
        session: Arc<Session>,
        st: Arc<WriteStatements>,
        outbox: Arc<OutboxLog>,
        window: RecoveryWindow,
    ) -> Self {
        Self {
            session,
            st,
            outbox,
            known: KnownPartitions::default(),
            window,
        }
    }

    /// The level of `key` as stored (`None` if never written).
    pub(crate) async fn level(&self, key: &StockKey) -> Result<Option<StockLevel>> {
        let (sku, location) = (key.sku.as_str(), key.location.as_str());
        let row: Option<LevelRow> = query::first(
            &self.session,
            "load level",
            &self.st.load_level,
            (sku, location),
        )
        .await?;
        let Some(LevelRow {
            region: Some(region),
            version: Some(version),
            on_hand,
            reserved,
            extras,
        }) = row
        else {
            return Ok(None);
        };
        let region = Region::parse(region).map_err(StoreError::corrupt("level region"))?;
        Ok(Some(StockLevel {
            extras: Extras::from_stored(extras.as_deref())
                .map_err(StoreError::corrupt("stock extras"))?,
            on_hand: on_hand.unwrap_or(0),
            reserved: reserved.unwrap_or(0),
            version: u64::try_from(version).unwrap_or(0),
            ..StockLevel::empty(key.sku.clone(), key.location.clone(), region)
        }))
    }

    /// The reservation lines with ids `ids` held in `key`'s partition.
    pub(crate) async fn lines(
        &self,
        key: &StockKey,
        ids: &[String],
    ) -> Result<BTreeMap<String, Reservation>> {
        self.lines_read(key, ids, false).await
    }

    /// The active reservations holding stock in `key`'s partition, oldest first: what a
    /// recorded fact that oversells names as at risk. Read before the decision, outside
    /// its batch: the list informs, it guards nothing.
    pub(crate) async fn holders(&self, key: &StockKey) -> Result<Vec<ReservationId>> {
        let (sku, location) = (key.sku.as_str(), key.location.as_str());
        let rows: Vec<LineRow> = query::rows(
            &self.session,
            "load a key's reservations",
            &self.st.all_lines,
            (sku, location),
        )
        .await?;
        let mut held = Vec::new();
        for row in rows {
            let Some(payload) = row.payload else { continue };
            let reservation: Reservation = serde_json::from_slice(&payload)
                .map_err(StoreError::corrupt("reservation line"))?;
            let status = row.status.as_deref().and_then(ReservationStatus::parse);
            if status.unwrap_or(reservation.status) == ReservationStatus::Active {
                held.push((reservation.created_at_ms, reservation.id));
            }
        }
        held.sort();
        Ok(held.into_iter().map(|(_, id)| id).collect())
    }

    /// [`Partitions::lines`], read through Paxos when `serial` (see [`KeyOp::serial`]).
    async fn lines_read(
        &self,
        key: &StockKey,
        ids: &[String],
        serial: bool,
    ) -> Result<BTreeMap<String, Reservation>> {
        let mut out = BTreeMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let (sku, location) = (key.sku.as_str(), key.location.as_str());
        let st = if serial {
            &self.st.load_lines_serial
        } else {
            &self.st.load_lines
        };
        let rows: Vec<LineRow> = query::rows(
            &self.session,
            "load reservation lines",
            st,
            (sku, location, ids),
        )
        .await?;
        for row in rows {
            let Some(payload) = row.payload else { continue };
            let mut reservation: Reservation = serde_json::from_slice(&payload)
                .map_err(StoreError::corrupt("reservation line"))?;
            // The status column is the line's own; the payload keeps the status it was
            // made with.
            if let Some(status) = row.status.as_deref().and_then(ReservationStatus::parse) {
                reservation.status = status;
            }
            out.insert(row.row_id, reservation);
        }
        Ok(out)
    }

    async fn cmds(&self, key: &StockKey, ids: &[String]) -> Result<BTreeMap<String, StoredAnswer>> {
        self.cmds_read(key, ids, false).await
    }

    /// The applied-command rows `ids` of `key`'s partition, read through Paxos when
    /// `serial` (see [`KeyOp::serial`]): a saga's rollback asks whether its step applied.
    pub(crate) async fn cmds_read(
        &self,
        key: &StockKey,
        ids: &[String],
        serial: bool,
    ) -> Result<BTreeMap<String, StoredAnswer>> {
        self.cmds_in((key.sku.as_str(), key.location.as_str()), ids, serial)
            .await
    }

    /// [`Partitions::cmds_read`] of any partition `(sku, location)`: a key's, or a SKU's own
    /// (its policy's).
    pub(crate) async fn cmds_in(
        &self,
        (sku, location): (&str, &str),
        ids: &[String],
        serial: bool,
    ) -> Result<BTreeMap<String, StoredAnswer>> {
        let mut out = BTreeMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let st = if serial {
            &self.st.load_cmds_serial
        } else {
            &self.st.load_cmds
        };
        let rows: Vec<CmdRow> = query::rows(
            &self.session,
            "load applied commands",
            st,
            (sku, location, ids),
        )
        .await?;
        for row in rows {
            if let Some(payload) = row.payload {
                let stored = serde_json::from_slice(&payload)
                    .map_err(StoreError::corrupt("applied-command record"))?;
                out.insert(row.row_id, stored);
            }
        }
        Ok(out)
    }

    /// Level, applied-command rows (if `with_cmds`) and lines the open operations need,
    /// read concurrently. The reads need not agree with each other: every guard is
    /// re-checked by the batch's conditions.
    async fn load(&self, key: &StockKey, ops: &[&KeyOp], with_cmds: bool) -> Result<Loaded> {
        let cmd_ids = distinct(ops, |op| {
            op.cmd
                .as_ref()
                .filter(|_| with_cmds)
                .map(|c| c.id.as_str().to_string())
        });
        let line_ids = distinct(ops, |op| op.line.as_ref().map(ToString::to_string));
        if ops.iter().any(|op| op.serial) {
            // The serial read first: it completes any write still in flight, which the
            // other reads then see.
            let lines = self.lines_read(key, &line_ids, true).await?;
            let (level, cmds) = tokio::join!(self.level(key), self.cmds(key, &cmd_ids));
            return Ok(Loaded {
                level: level?,
                cmds: cmds?,
                lines,
            });
        }
        let (level, cmds, lines) = tokio::join!(
            self.level(key),
            self.cmds(key, &cmd_ids),
            self.lines(key, &line_ids)
        );
        Ok(Loaded {
            level: level?,
            cmds: cmds?,
            lines: lines?,
        })
    }

    /// Reads the partition for a round.
    async fn read_state(
        &self,
        key: &StockKey,
        ops: &[&KeyOp],
        with_cmds: bool,
    ) -> Result<Decidable> {
        let (loaded, policy) =
            tokio::join!(self.load(key, ops, with_cmds), self.sku_settings(&key.sku));
        let (loaded, policy) = (loaded?, policy?);
        let expected = loaded.level.as_ref().map(|l| l.version);
        let level = self.decidable(key, loaded.level, policy).await?;
        let mut lines: BTreeMap<String, Option<Reservation>> =
            line_ids(ops).map(|(id, _)| (id, None)).collect();
        lines.extend(loaded.lines.into_iter().map(|(id, r)| (id, Some(r))));
        Ok(Decidable {
            expected,
            level,
            lines,
            cmds: loaded.cmds,
            assumed_absent: BTreeSet::new(),
        })
    }

    /// A remembered state, with the lines it does not know: new ones taken as absent,
    /// others read.
    async fn complete(
        &self,
        key: &StockKey,
        ops: &[&KeyOp],
        state: KnownState,
    ) -> Result<Decidable> {
        let mut lines = state.lines;
        let mut assumed_absent = BTreeSet::new();
        let mut unknown = Vec::new();
        for (id, new_line) in line_ids(ops) {
            if lines.contains_key(&id) {
                continue;
            }
            if new_line {
                assumed_absent.insert(id.clone());
            } else {
                unknown.push(id.clone());
            }
            lines.insert(id, None);
        }
        // Remembered or not, the level decides under the SKU's policy as it is now.
        let (read, policy) = tokio::join!(self.lines(key, &unknown), self.sku_settings(&key.sku));
        lines.extend(read?.into_iter().map(|(id, r)| (id, Some(r))));
        Ok(Decidable {
            expected: state.expected,
            level: Ok(state.level.with_sku_policy(policy?)),
            lines,
            cmds: BTreeMap::new(),
            assumed_absent,
        })
    }

    /// Keeps `key`'s state as stored at version `expected`, for the next round to decide on
    /// without reading (an unknown location is not kept: it refuses everything anyway).
    fn remember(
        &self,
        key: &StockKey,
        expected: Option<u64>,
        level: &Answer<StockLevel>,
        lines: BTreeMap<String, Option<Reservation>>,
    ) {
        if let Ok(level) = level {
            let level = level.clone();
            self.known.put(
                key,
                KnownState {
                    expected,
                    level,
                    lines,
                },
            );
        }
    }

    /// The level of `key`, or what the domain makes of a key never written, with its
    /// SKU's policy attached.
    pub(crate) async fn level_or_empty(&self, key: &StockKey) -> Result<Answer<StockLevel>> {
        let (level, policy) = tokio::join!(self.level(key), self.sku_settings(&key.sku));
        self.decidable(key, level?, policy?).await
    }

    /// `level` as a decision sees it: as stored, or what the domain makes of a key never
    /// written; with the SKU's `policy` attached.
    async fn decidable(
        &self,
        key: &StockKey,
        level: Option<StockLevel>,
        policy: Option<Settings>,
    ) -> Result<Answer<StockLevel>> {
        let level = match level {
            Some(level) => Ok(level),
            None => StockLevel::never_written(key, self.region_of(key).await?),
        };
        Ok(level.map(|level| level.with_sku_policy(policy)))
    }

    /// The policy `sku` sets for all its keys (`None`: never set).
    ///
    /// It lives in the SKU's own partition, so a key's batch cannot be conditioned on it:
    /// every round reads it afresh instead, and a command that starts after a policy change
    /// is acknowledged decides under it (one already in flight may decide under the
    /// previous one).
    pub(crate) async fn sku_policy(&self, sku: &Sku) -> Result<Option<SkuPolicy>> {
        let row: Option<SkuPolicyRow> = query::first(
            &self.session,
            "load a SKU's policy",
            &self.st.get_sku_policy,
            (sku.as_str(),),
        )
        .await?;
        let Some(SkuPolicyRow {
            extras: Some(settings),
            version: Some(version),
        }) = row
        else {
            return Ok(None);
        };
        Ok(Some(SkuPolicy {
            sku: sku.clone(),
            settings: serde_json::from_str(&settings).map_err(StoreError::corrupt("SKU policy"))?,
            version: u64::try_from(version).unwrap_or(0),
        }))
    }

    /// [`Partitions::sku_policy`]'s settings, as a decision attaches them.
    pub(crate) async fn sku_settings(&self, sku: &Sku) -> Result<Option<Settings>> {
        Ok(self.sku_policy(sku).await?.map(|p| p.settings))
    }

    /// The region of `key`'s location (`None`: the location is unknown).
    async fn region_of(&self, key: &StockKey) -> Result<Option<Region>> {
        let row: Option<LocationRow> = query::first(
            &self.session,
            "load location",
            &self.st.get_location,
            (key.location.as_str(),),
        )
        .await?;
        row.and_then(|r| r.region)
            .map(|r| Region::parse(r).map_err(StoreError::corrupt("location region")))
            .transpose()
    }
}
