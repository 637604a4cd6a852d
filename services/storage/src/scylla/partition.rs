//! Changes to one stock partition: load its state, let the domain decide, write the answer
//! as ONE conditional batch.
//!
//! A partition `(sku, location)` holds the level (static columns), the reservation lines
//! held there (`'r'` rows), the applied-command records (`'c'` rows) and the outbox (`'o'`
//! rows). A group of operations on one key is decided in order against the state loaded
//! once — each sees the level the previous one left — and written by one batch:
//!
//! - the level `IF version = <loaded>` (null for a partition never written): nothing else
//!   changed the key since it was read;
//! - each keyed operation's applied-command row `IF NOT EXISTS`: a command id is applied at
//!   most once, decided inside the same condition, whoever runs it and however often;
//! - each reservation line in its final state, and one outbox row per change.
//!
//! If the batch is not applied (a race, or a duplicate command), the group is reloaded and
//! decided again; a duplicate then finds its applied-command row and replays the stored
//! answer. A Paxos timeout leaves the outcome unknown; the reload settles it the same way.
//! Refusals are answered only once the state they were decided on is known to be current.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use scylla::client::session::Session;
use scylla::statement::batch::{Batch, BatchType};
use scylla::value::CqlValue;
use serde::{Deserialize, Serialize};
use stockflow_domain::{
    BusEvent, CommandResult, DomainError, RecordedAnswer, Region, Reservation, ReservationId,
    ReservationStatus, StockEvent, StockKey, StockLevel,
};
use tokio::sync::watch;

use super::cql::{Rows, db_error, outcome_unknown};
use super::fresh::{FreshOutbox, FreshRow};
use super::known::{KnownPartitions, KnownState};
use super::statements::{CmdRow, LevelRow, LineRow, RECORD_TTL, Statements};
use crate::{Result, StoreError, now_ms};

/// Attempts of one group before giving up with a retryable error.
const MAX_ATTEMPTS: u32 = 30;
/// Outbox marker shards; the publisher scans each.
pub(super) const SHARDS: i32 = 16;
/// A marker this process wrote for a partition less than this long ago is still there: the
/// publisher only deletes markers older than its grace period (15 s), so re-writing it
/// before every batch of a hot key would be wasted work.
const MARKER_FRESH_MS: i64 = 2_000;

/// The exactly-once guard of a keyed operation, and its stored answer.
#[derive(Debug, Clone)]
pub(super) struct CmdGuard {
    /// Row id of the applied-command record (`k:<idempotency key>` or `u:<uuid>`).
    pub id: String,
    /// What the request looked like, to refuse a key reused for another request.
    pub fingerprint: String,
}

/// What an applied-command row stores: the command's answer, a success or a refusal.
#[derive(Debug, Serialize, Deserialize)]
struct StoredAnswer {
    fingerprint: String,
    result: RecordedAnswer,
}

/// The values of a batch's statements, one row each.
type BatchValues = Vec<Vec<Option<CqlValue>>>;

/// What an operation sees of its partition.
#[derive(Debug)]
pub(super) struct View<'a> {
    /// The current level (version 0 if the key was never written).
    pub level: &'a StockLevel,
    /// The operation's reservation line here, if it has one: the reservation as of this
    /// line (its `lines` hold this line only for a multi-partition reservation).
    pub line: Option<&'a Reservation>,
}

/// What happens to a reservation line.
#[derive(Debug, Clone)]
pub(super) enum LineWrite {
    /// Store the line in this state.
    Put(Reservation),
    /// Remove it (a compensated line: the reservation id may be used again).
    Delete,
}

/// A decided change of the partition.
#[derive(Debug, Clone)]
pub(super) struct Change {
    /// The next level, exactly one version above the current one.
    pub level: StockLevel,
    /// Its event.
    pub event: StockEvent,
    /// The operation's line afterwards, if it changes.
    pub line: Option<LineWrite>,
    /// The answer for the caller.
    pub result: CommandResult,
}

/// An operation's decision.
#[derive(Debug, Clone)]
pub(super) enum Decision {
    /// Change the partition.
    Change(Box<Change>),
    /// Nothing to write (already done, or not due); the answer.
    Unchanged(CommandResult),
}

type Decide = dyn Fn(&View<'_>) -> std::result::Result<Decision, DomainError> + Send + Sync;

/// One command's part in one partition.
pub(super) struct KeyOp {
    /// The applied-command guard; `None` for saga steps, whose line row is the guard.
    pub cmd: Option<CmdGuard>,
    /// The reservation line this operation reads and may write.
    pub line: Option<ReservationId>,
    /// The line is meant to be new (a reservation made here): when its state is not known
    /// it is taken as absent without a read, and the batch inserts it only if it is.
    pub new_line: bool,
    /// The domain decision, called again whenever the state must be reloaded.
    pub decide: Box<Decide>,
    /// A saga step's lease: past this time (Unix ms) the operation is no longer decided, so
    /// no batch of it is sent once expiry may judge its saga abandoned (it is answered
    /// `Unavailable` instead). `None`: no limit.
    pub not_after: Option<i64>,
    /// Read the partition through Paxos (`LOCAL_SERIAL`), never from memory: a rollback
    /// first completes any write of the partition still in flight (a saga step whose
    /// outcome its writer never learned), so it gives back what that write held.
    pub serial: bool,
}

impl KeyOp {
    /// An operation of a one-partition command or saga step with no lease and plain reads.
    pub(super) fn new(
        cmd: Option<CmdGuard>,
        line: Option<ReservationId>,
        new_line: bool,
        decide: Box<Decide>,
    ) -> Self {
        Self {
            cmd,
            line,
            new_line,
            decide,
            not_after: None,
            serial: false,
        }
    }
}

/// What an operation did.
#[derive(Debug, Clone)]
pub(super) struct OpOutcome {
    /// The answer.
    pub result: CommandResult,
    /// Events written (0 for a replay or a decision that changed nothing).
    pub events: usize,
    /// True when the command had been applied before and this is its stored answer.
    pub replayed: bool,
}

/// Loads, decides and writes partitions. Shared by the store, its coalescer and its sagas.
pub(super) struct Partitions {
    pub session: Arc<Session>,
    pub st: Arc<Statements>,
    /// Ticks on every commit, for the publisher.
    pub tick: watch::Sender<u64>,
    /// When this process last wrote each partition's outbox marker.
    markers: std::sync::Mutex<BTreeMap<(String, String), i64>>,
    /// Partitions this process committed outbox rows to since the publisher last looked:
    /// read at once, without waiting for a scan of every marker.
    pub dirty: std::sync::Mutex<BTreeSet<(String, String)>>,
    /// The state of each partition as of this process's last batch or read of it.
    known: KnownPartitions,
    /// The outbox rows this process committed, for its own publisher.
    pub fresh: FreshOutbox,
    /// How long a pending saga may go without taking a step's lease before expiry rolls it
    /// back (and the first half of it, how long each step may still be sent):
    /// [`super::saga::RECOVERY_MS`] but in tests.
    pub recovery_ms: i64,
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
    level: std::result::Result<StockLevel, DomainError>,
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

pub(super) fn shard_of(sku: &str, location: &str) -> i32 {
    let h =
        stockflow_domain::partition_for_key(format!("{sku}/{location}").as_bytes(), SHARDS as u32);
    i32::try_from(h).unwrap_or(0)
}

pub(super) fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// Full jitter between 2 and 2 + 20·attempt milliseconds, from the clock's low bits (no
/// RNG needed: contenders read the clock at different nanoseconds).
pub(super) fn jitter(attempt: u32) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let span = 20 * u64::from(attempt.min(10)) + 1;
    Duration::from_millis(2 + u64::from(nanos) % span)
}

/// Copies an error for each of several callers (driver errors are not `Clone`).
pub(super) fn share_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Domain(d) => StoreError::Domain(d.clone()),
        StoreError::IdempotencyKeyReused => StoreError::IdempotencyKeyReused,
        StoreError::InProgress => StoreError::InProgress,
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Cql { context, source } => StoreError::Cql {
            context: context.clone(),
            source: source.clone(),
        },
        StoreError::Config(m) => StoreError::Config(m.clone()),
        StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
        other => StoreError::Database(other.to_string()),
    }
}

impl Partitions {
    pub(super) fn new(session: Arc<Session>, st: Arc<Statements>) -> Self {
        Self {
            session,
            st,
            tick: watch::channel(0).0,
            markers: std::sync::Mutex::new(BTreeMap::new()),
            dirty: std::sync::Mutex::new(BTreeSet::new()),
            known: KnownPartitions::default(),
            fresh: FreshOutbox::default(),
            recovery_ms: super::saga::RECOVERY_MS,
        }
    }

    /// The level of `key` as stored (`None` if never written).
    pub(super) async fn level(&self, key: &StockKey) -> Result<Option<StockLevel>> {
        let (sku, location) = (key.sku.as_str(), key.location.as_str());
        let rows: Vec<LevelRow> = self
            .query("load level", &self.st.load_level, (sku, location))
            .await?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        let (Some(region), Some(version)) = (row.region, row.version) else {
            return Ok(None);
        };
        Ok(Some(StockLevel {
            sku: key.sku.clone(),
            location: key.location.clone(),
            region: Region::parse(region).map_err(corrupt)?,
            on_hand: row.on_hand.unwrap_or(0),
            reserved: row.reserved.unwrap_or(0),
            version: u64::try_from(version).unwrap_or(0),
        }))
    }

    /// Runs `st` and decodes every row of its (unpaged) result as `R`.
    pub(super) async fn query<R>(
        &self,
        context: &str,
        st: &scylla::statement::prepared::PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Vec<R>>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
    {
        let decode = |e: &dyn std::fmt::Display| StoreError::Database(format!("{context}: {e}"));
        let rows = self
            .session
            .execute_unpaged(st, values)
            .await
            .map_err(|e| db_error(context, e))?
            .into_rows_result()
            .map_err(|e| decode(&e))?;
        rows.rows::<R>()
            .map_err(|e| decode(&e))?
            .map(|r| r.map_err(|e| decode(&e)))
            .collect()
    }

    /// The reservation lines with ids `ids` held in `key`'s partition.
    pub(super) async fn lines(
        &self,
        key: &StockKey,
        ids: &[String],
    ) -> Result<BTreeMap<String, Reservation>> {
        self.lines_read(key, ids, false).await
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
        let rows: Vec<LineRow> = self
            .query("load reservation lines", st, (sku, location, ids))
            .await?;
        for row in rows {
            let Some(payload) = row.payload else { continue };
            let mut reservation: Reservation = serde_json::from_slice(&payload)?;
            if let Some(status) = row.status.as_deref().and_then(ReservationStatus::parse) {
                reservation.status = status;
            }
            out.insert(row.row_id, reservation);
        }
        Ok(out)
    }

    async fn cmds(&self, key: &StockKey, ids: &[String]) -> Result<BTreeMap<String, StoredAnswer>> {
        let mut out = BTreeMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let (sku, location) = (key.sku.as_str(), key.location.as_str());
        let rows: Vec<CmdRow> = self
            .query(
                "load applied commands",
                &self.st.load_cmds,
                (sku, location, ids),
            )
            .await?;
        for row in rows {
            if let Some(payload) = row.payload {
                out.insert(row.row_id, serde_json::from_slice(&payload)?);
            }
        }
        Ok(out)
    }

    /// Level, applied-command rows (if `with_cmds`) and lines the open operations need,
    /// read concurrently. The reads need not agree with each other: every guard is
    /// re-checked by the batch's conditions.
    async fn load(&self, key: &StockKey, ops: &[&KeyOp], with_cmds: bool) -> Result<Loaded> {
        let cmd_ids: Vec<String> = ops
            .iter()
            .filter(|_| with_cmds)
            .filter_map(|op| op.cmd.as_ref().map(|c| c.id.clone()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let line_ids: Vec<String> = ops
            .iter()
            .filter_map(|op| op.line.as_ref().map(|id| id.to_string()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
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
        let loaded = self.load(key, ops, with_cmds).await?;
        let expected = loaded.level.as_ref().map(|l| l.version);
        let level = match loaded.level {
            Some(level) => Ok(level),
            None => match self.region_of(key).await {
                Ok(region) => Ok(StockLevel::empty(
                    key.sku.clone(),
                    key.location.clone(),
                    region,
                )),
                Err(StoreError::Domain(e)) => Err(e),
                Err(e) => return Err(e),
            },
        };
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
        if !unknown.is_empty() {
            lines.extend(
                self.lines(key, &unknown)
                    .await?
                    .into_iter()
                    .map(|(id, r)| (id, Some(r))),
            );
        }
        Ok(Decidable {
            expected: state.expected,
            level: Ok(state.level),
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
        level: &std::result::Result<StockLevel, DomainError>,
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

    /// Notes a commit of outbox rows to a partition, for the publisher.
    pub(super) fn committed(&self, sku: &str, location: &str) {
        if let Ok(mut dirty) = self.dirty.lock() {
            dirty.insert((sku.to_string(), location.to_string()));
        }
        self.tick.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The level of `key`, or an empty one at a known location (unknown locations are
    /// refused).
    pub(super) async fn level_or_empty(&self, key: &StockKey) -> Result<StockLevel> {
        match self.level(key).await? {
            Some(level) => Ok(level),
            None => Ok(StockLevel::empty(
                key.sku.clone(),
                key.location.clone(),
                self.region_of(key).await?,
            )),
        }
    }

    /// The region of `key`'s location, for a partition never written.
    async fn region_of(&self, key: &StockKey) -> Result<Region> {
        let rows = self
            .session
            .execute_unpaged(&self.st.get_location, (key.location.as_str(),))
            .await
            .map_err(|e| db_error("load location", e))?;
        let rows = Rows::from(rows)?;
        let region = rows
            .text(0, "region")
            .ok_or_else(|| DomainError::LocationNotFound(key.location.clone()))?;
        Region::parse(region).map_err(corrupt)
    }

    /// Names the partition in the outbox markers before its batch (unless this process did
    /// so a moment ago), so the publisher finds what the batch commits.
    async fn mark(&self, key: &StockKey) -> Result<()> {
        let (sku, location) = (key.sku.as_str(), key.location.as_str());
        let now = now_ms();
        let id = (sku.to_string(), location.to_string());
        if let Ok(markers) = self.markers.lock()
            && markers
                .get(&id)
                .is_some_and(|at| now - at < MARKER_FRESH_MS)
        {
            return Ok(());
        }
        self.session
            .execute_unpaged(
                &self.st.insert_marker,
                (shard_of(sku, location), sku, location, now),
            )
            .await
            .map_err(|e| db_error("write outbox marker", e))?;
        if let Ok(mut markers) = self.markers.lock() {
            if markers.len() > 100_000 {
                markers.retain(|_, at| now - *at < MARKER_FRESH_MS);
            }
            markers.insert(id, now);
        }
        Ok(())
    }

    /// Applies `ops` to `key`'s partition, in order, in as few conditional batches as the
    /// races allow (one when uncontended). Returns one answer per operation.
    ///
    /// The first round does not read the applied-command rows: a new command (the common
    /// case) is caught by its row's `IF NOT EXISTS` anyway. Any other outcome — a batch not
    /// applied, a refusal, nothing to change — is only answered after a round that read them,
    /// so a retried command always gets its stored answer.
    pub(super) async fn apply(&self, key: &StockKey, ops: &[KeyOp]) -> Vec<Result<OpOutcome>> {
        let mut answers: Vec<Option<Result<OpOutcome>>> = (0..ops.len()).map(|_| None).collect();
        let mut with_cmds = false;
        for attempt in 0..MAX_ATTEMPTS {
            let open: Vec<usize> = (0..ops.len()).filter(|i| answers[*i].is_none()).collect();
            if open.is_empty() {
                break;
            }
            let open_ops: Vec<&KeyOp> = open.iter().map(|i| &ops[*i]).collect();
            match self.attempt(key, &open, &open_ops, with_cmds).await {
                Ok(Attempt::Done(done)) => {
                    for (i, answer) in done {
                        answers[i] = Some(answer);
                    }
                    break;
                }
                Ok(Attempt::Partial(done)) => {
                    for (i, answer) in done {
                        answers[i] = Some(answer);
                    }
                    with_cmds = true;
                }
                Ok(Attempt::Reload) => with_cmds = true,
                Ok(Attempt::Retry) => tokio::time::sleep(jitter(attempt)).await,
                Err(e) => {
                    for i in open {
                        answers[i] = Some(Err(share_error(&e)));
                    }
                    break;
                }
            }
        }
        answers
            .into_iter()
            .map(|a| {
                a.unwrap_or_else(|| {
                    Err(StoreError::Unavailable(format!(
                        "too much contention on {}@{}; retry with the same Idempotency-Key",
                        key.sku, key.location
                    )))
                })
            })
            .collect()
    }

    /// One load–decide–write round for the open operations (`open[j]` is the index of
    /// `ops[j]` in the caller's list).
    async fn attempt(
        &self,
        key: &StockKey,
        open: &[usize],
        ops: &[&KeyOp],
        with_cmds: bool,
    ) -> Result<Attempt> {
        // A state this process knows is decided on without reading; the first round only
        // (a reload always reads), and only its changes are answered (below).
        let remembered = if with_cmds || ops.iter().any(|op| op.serial) {
            None
        } else {
            self.known.get(key)
        };
        let from_memory = remembered.is_some();
        let Decidable {
            expected,
            mut level,
            mut lines,
            cmds,
            assumed_absent,
        } = match remembered {
            Some(state) => self.complete(key, ops, state).await?,
            None => self.read_state(key, ops, with_cmds).await?,
        };
        let mut touched_lines: BTreeMap<String, Option<Reservation>> = BTreeMap::new();
        let mut replays = Vec::new();
        let mut tentative = Vec::new();
        let mut changes: Vec<(usize, Change, Option<&CmdGuard>)> = Vec::new();
        // Keyed refusals: each is kept in its applied-command row like a success, so a
        // retry gets the same refusal even once the stock changed.
        let mut refusals: Vec<(&CmdGuard, RecordedAnswer)> = Vec::new();
        // A command id seen earlier in this group: the same request arrived twice at once.
        // It waits for the next round, where the first one's applied-command row answers it;
        // deciding it now would apply it twice in one batch (both `IF NOT EXISTS` conditions
        // are checked against the state before the batch).
        let mut seen_cmds = BTreeSet::new();
        let mut deferred = false;
        // A keyed command refused or unchanged may be a retry of one that was applied.
        let mut keyed_tentative = false;
        for (j, op) in ops.iter().enumerate() {
            let i = open[j];
            if let Some(cmd) = &op.cmd
                && !seen_cmds.insert(cmd.id.as_str())
            {
                deferred = true;
                continue;
            }
            if let Some(cmd) = &op.cmd
                && let Some(stored) = cmds.get(&cmd.id)
            {
                replays.push((
                    i,
                    if stored.fingerprint == cmd.fingerprint {
                        stored
                            .result
                            .clone()
                            .into_result()
                            .map(|result| OpOutcome {
                                result,
                                events: 0,
                                replayed: true,
                            })
                            .map_err(StoreError::Domain)
                    } else {
                        Err(StoreError::IdempotencyKeyReused)
                    },
                ));
                continue;
            }
            if op.not_after.is_some_and(|t| now_ms() > t) {
                // Its lease ran out: expiry may be rolling its saga back, so nothing of it
                // may land any more. (Not recorded: saga steps carry no command guard.)
                tentative.push((
                    i,
                    Err(StoreError::Unavailable(
                        "a step of this reservation outlived its lease; retry".into(),
                    )),
                ));
                continue;
            }
            let line_id = op.line.as_ref().map(|id| id.to_string());
            let decided = match &level {
                Ok(level) => (op.decide)(&View {
                    level,
                    line: line_id
                        .as_ref()
                        .and_then(|id| lines.get(id))
                        .and_then(Option::as_ref),
                }),
                Err(unknown_location) => Err(unknown_location.clone()),
            };
            keyed_tentative |= op.cmd.is_some() && !matches!(decided, Ok(Decision::Change(_)));
            match decided {
                Err(e) => {
                    if let Some(cmd) = &op.cmd
                        && let Some(answer) = RecordedAnswer::of(&Err(e.clone()))
                    {
                        refusals.push((cmd, answer));
                    }
                    tentative.push((i, Err(StoreError::Domain(e))));
                }
                Ok(Decision::Unchanged(result)) => tentative.push((
                    i,
                    Ok(OpOutcome {
                        result,
                        events: 0,
                        replayed: false,
                    }),
                )),
                Ok(Decision::Change(change)) => {
                    let change = *change;
                    let Ok(level) = &mut level else {
                        return Err(StoreError::Corrupt(format!(
                            "a change decided for {}@{}, an unknown location",
                            key.sku, key.location
                        )));
                    };
                    if change.level.version != level.version + 1 {
                        return Err(StoreError::Corrupt(format!(
                            "a decision on {}@{} skipped a version",
                            key.sku, key.location
                        )));
                    }
                    *level = change.level.clone();
                    if let (Some(id), Some(write)) = (&line_id, &change.line) {
                        let after = match write {
                            LineWrite::Put(r) => Some(r.clone()),
                            LineWrite::Delete => None,
                        };
                        lines.insert(id.clone(), after.clone());
                        touched_lines.insert(id.clone(), after);
                    }
                    changes.push((i, change, op.cmd.as_ref()));
                }
            }
        }
        if !with_cmds && (keyed_tentative || (from_memory && !tentative.is_empty())) {
            // Only its applied-command row can tell, and a remembered state may be outdated:
            // read both before answering.
            return Ok(Attempt::Reload);
        }
        let finish = |done| {
            if deferred {
                Attempt::Partial(done)
            } else {
                Attempt::Done(done)
            }
        };
        if changes.is_empty() && refusals.is_empty() {
            // Nothing to write: replays are final, and the rest was decided on the stored
            // state.
            self.remember(key, expected, &level, lines);
            replays.extend(tentative);
            return Ok(finish(replays));
        }
        let (batch, values, fresh) = match &level {
            Ok(level) if !changes.is_empty() => {
                self.mark(key).await?;
                self.batch(
                    key,
                    level,
                    expected,
                    &changes,
                    (&touched_lines, &assumed_absent),
                    &refusals,
                )?
            }
            // Refusals only: their rows' `IF NOT EXISTS` is the whole condition. A refusal
            // changes nothing, so it holds as of the state it was decided on, whatever
            // other commands did since; only a concurrent run of the same command could
            // answer differently, and its row would exist.
            _ => {
                let (batch, values) = self.refusal_batch(key, &refusals)?;
                (batch, values, Vec::new())
            }
        };
        match self.session.batch(&batch, values).await {
            Ok(result) => {
                if Rows::from(result)?.applied()? {
                    if !changes.is_empty() {
                        self.fresh
                            .committed(key.sku.as_str(), key.location.as_str(), fresh);
                        self.committed(key.sku.as_str(), key.location.as_str());
                    }
                    let stored = match &level {
                        Ok(level) if !changes.is_empty() => Some(level.version),
                        _ => expected,
                    };
                    self.remember(key, stored, &level, lines);
                    let mut done = replays;
                    done.extend(tentative);
                    done.extend(changes.into_iter().map(|(i, change, _)| {
                        (
                            i,
                            Ok(OpOutcome {
                                result: change.result,
                                events: 1,
                                replayed: false,
                            }),
                        )
                    }));
                    return Ok(finish(done));
                }
                metrics::counter!("stockflow_lwt_conflicts_total").increment(1);
                if from_memory {
                    metrics::counter!("stockflow_lwt_stale_known_state_total").increment(1);
                }
                self.known.forget(key, from_memory);
            }
            Err(e) if outcome_unknown(&e) => {
                self.known.forget(key, false);
                // Its rows may be there: the kept ones must not stand for a read that
                // stops short of them.
                self.fresh.forget(key.sku.as_str(), key.location.as_str());
                if !changes.is_empty() {
                    // If it did apply, its outbox rows are published without waiting for a
                    // scan to come across them.
                    self.committed(key.sku.as_str(), key.location.as_str());
                }
                // Applied or not: the reload reads the applied-command rows and lines back.
                metrics::counter!("stockflow_lwt_unknown_outcomes_total").increment(1);
                tracing::warn!(sku = %key.sku, location = %key.location, error = %e, "conditional batch outcome unknown; reading back");
            }
            Err(e) => {
                self.known.forget(key, false);
                return Err(db_error("conditional batch", e));
            }
        }
        Ok(if !with_cmds {
            Attempt::Reload
        } else if replays.is_empty() {
            Attempt::Retry
        } else {
            Attempt::Partial(replays)
        })
    }

    /// The conditional batch writing `changes` (level `expected` → `level`) and the
    /// applied-command rows of the `refusals` decided beside them, with its outbox rows for
    /// this process's publisher (if it has one).
    fn batch(
        &self,
        key: &StockKey,
        level: &StockLevel,
        expected: Option<u64>,
        changes: &[(usize, Change, Option<&CmdGuard>)],
        (lines, assumed_absent): (&BTreeMap<String, Option<Reservation>>, &BTreeSet<String>),
        refusals: &[(&CmdGuard, RecordedAnswer)],
    ) -> Result<(Batch, BatchValues, Vec<FreshRow>)> {
        let (sku, location) = (key.sku.as_str(), key.location.as_str());
        let keep = self.fresh.wanted();
        let mut fresh = Vec::new();
        let text = |s: &str| Some(CqlValue::Text(s.to_string()));
        let bigint = |v: i64| Some(CqlValue::BigInt(v));
        let version = |v: u64| i64::try_from(v).map_err(corrupt);
        let now = now_ms();
        let mut batch = Batch::new(BatchType::Logged);
        let mut values = Vec::new();
        batch.append_statement(self.st.write_level.clone());
        values.push(vec![
            text(level.region.as_str()),
            bigint(level.on_hand),
            bigint(level.reserved),
            bigint(version(level.version)?),
            text(sku),
            text(location),
            match expected {
                Some(v) => bigint(version(v)?),
                None => None,
            },
        ]);
        for (_, change, cmd) in changes {
            let payload = serde_json::to_vec(&BusEvent::Stock(change.event.clone()))?;
            if keep {
                fresh.push(FreshRow {
                    version: change.level.version,
                    payload: payload.clone(),
                    created_at_ms: now,
                });
            }
            batch.append_statement(self.st.insert_outbox.clone());
            values.push(vec![
                text(sku),
                text(location),
                text(&format!("{:020}", change.level.version)),
                Some(CqlValue::Blob(payload)),
                bigint(now),
            ]);
            if let Some(cmd) = cmd {
                let answer = RecordedAnswer::Accepted(change.result.clone());
                self.append_cmd(&mut batch, &mut values, key, cmd, answer, now)?;
            }
        }
        for (cmd, answer) in refusals {
            self.append_cmd(&mut batch, &mut values, key, cmd, answer.clone(), now)?;
        }
        for (id, after) in lines {
            match after {
                Some(r) => {
                    // Active lines live until settled; final ones as long as idempotency
                    // records, for reads and replays.
                    let ttl = if r.status == ReservationStatus::Active {
                        0
                    } else {
                        RECORD_TTL
                    };
                    // A line taken as absent unread is inserted only if it is.
                    batch.append_statement(if assumed_absent.contains(id) {
                        self.st.insert_new_line.clone()
                    } else {
                        self.st.put_line.clone()
                    });
                    values.push(vec![
                        text(sku),
                        text(location),
                        text(id),
                        text(r.status.as_str()),
                        Some(CqlValue::Blob(serde_json::to_vec(r)?)),
                        bigint(now),
                        Some(CqlValue::Int(ttl)),
                    ]);
                }
                None => {
                    batch.append_statement(self.st.delete_line.clone());
                    values.push(vec![text(sku), text(location), text(id)]);
                }
            }
        }
        Ok((batch, values, fresh))
    }
}

impl Partitions {
    /// A batch of nothing but refusals' applied-command rows.
    fn refusal_batch(
        &self,
        key: &StockKey,
        refusals: &[(&CmdGuard, RecordedAnswer)],
    ) -> Result<(Batch, BatchValues)> {
        let mut batch = Batch::new(BatchType::Logged);
        let mut values = Vec::new();
        let now = now_ms();
        for (cmd, answer) in refusals {
            self.append_cmd(&mut batch, &mut values, key, cmd, answer.clone(), now)?;
        }
        Ok((batch, values))
    }

    /// Appends `cmd`'s applied-command row (`IF NOT EXISTS`) holding `answer`.
    fn append_cmd(
        &self,
        batch: &mut Batch,
        values: &mut BatchValues,
        key: &StockKey,
        cmd: &CmdGuard,
        answer: RecordedAnswer,
        now: i64,
    ) -> Result<()> {
        let payload = serde_json::to_vec(&StoredAnswer {
            fingerprint: cmd.fingerprint.clone(),
            result: answer,
        })?;
        batch.append_statement(self.st.insert_cmd.clone());
        values.push(vec![
            Some(CqlValue::Text(key.sku.to_string())),
            Some(CqlValue::Text(key.location.to_string())),
            Some(CqlValue::Text(cmd.id.clone())),
            Some(CqlValue::Blob(payload)),
            Some(CqlValue::BigInt(now)),
        ]);
        Ok(())
    }
}

/// How one round ended.
enum Attempt {
    /// Every open operation has its answer.
    Done(Vec<(usize, Result<OpOutcome>)>),
    /// Some operations were answered; reload (reading applied-command rows) and retry the
    /// rest.
    Partial(Vec<(usize, Result<OpOutcome>)>),
    /// Nothing answered; reload and retry.
    Retry,
    /// Nothing answered; reload at once, reading the applied-command rows this time.
    Reload,
}
