//! The ScyllaDB write store.
//!
//! Every change to a stock key is ONE conditional batch on its `(sku, location)` partition:
//! the static level columns `IF version = ?`, the outbox entry, and the applied-command
//! record, so the three commit together or not at all. Before the batch, a marker names the
//! partition in `outbox_markers` for the publisher (a marker with nothing behind it is
//! harmless).
//!
//! Commands spanning keys (reservations and their settlement) are driven by a reservation
//! row whose status moves by LWT (`pending` → `active` → `settling:<how>` → final); each key
//! is changed by its own batch, keyed by an applied-command id (`r:<id>`, `s:<id>`,
//! `rc:<id>`), so re-running a half-finished command after a crash applies every key at
//! most once. A reservation that cannot get every line releases the lines it got
//! (compensation) before answering, so clients see all or nothing.
//!
//! A Paxos write that times out has an unknown outcome: it is resolved by reading the
//! applied-command record back, never by applying again blindly.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use scylla::client::session::Session;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use stockflow_domain::decide::{self, Settlement};
use stockflow_domain::{
    BusEvent, CatalogEvent, Command, CommandResult, DomainError, EventKind, EventMeta, Location,
    LocationId, LocationKind, Region, Reservation, ReservationId, ReservationLine,
    ReservationStatus, Reserve, Sku, SkuCatalog, StockEvent, StockKey, StockLevel,
};
use tokio::sync::watch;

use super::cql::{Rows, db_error, outcome_unknown};
use crate::ports::{
    CommandOutcome, CommandRequest, IdempotencyToken, Outbox, OutboxEntry, WriteStore,
};
use crate::{Result, StoreError, now_ms};

/// Outbox marker shards; the publisher scans each.
const SHARDS: i32 = 16;
/// Attempts of one conditional batch before giving up with a retryable error.
const MAX_ATTEMPTS: u32 = 30;
/// Applied-command records and idempotency records live this long (seconds).
const RECORD_TTL: i32 = 2 * 24 * 3600;
/// A pending idempotency claim older than this is taken over (its holder crashed).
const CLAIM_STALE_MS: i64 = 30_000;
/// Markers younger than this are never deleted: their batch may still be in flight.
const MARKER_GRACE_MS: i64 = 15_000;
/// Partition holding a SKU's catalog data.
const CATALOG: &str = "~catalog";

struct Statements {
    load_level: PreparedStatement,
    load_cmd: PreparedStatement,
    init_level: PreparedStatement,
    update_level: PreparedStatement,
    insert_outbox: PreparedStatement,
    insert_cmd: PreparedStatement,
    insert_marker: PreparedStatement,
    markers: PreparedStatement,
    delete_marker: PreparedStatement,
    partition_outbox: PreparedStatement,
    mark_published: PreparedStatement,
    get_location: PreparedStatement,
    put_location: PreparedStatement,
    get_catalog: PreparedStatement,
    update_catalog: PreparedStatement,
    create_reservation: PreparedStatement,
    get_reservation: PreparedStatement,
    move_reservation: PreparedStatement,
    delete_pending_reservation: PreparedStatement,
    insert_deadline: PreparedStatement,
    delete_deadline: PreparedStatement,
    deadlines: PreparedStatement,
    claim: PreparedStatement,
    get_claim: PreparedStatement,
    take_over: PreparedStatement,
    finish_claim: PreparedStatement,
    finish_reservation: PreparedStatement,
    drop_claim: PreparedStatement,
    all_levels: PreparedStatement,
}

impl Statements {
    async fn prepare(s: &Session, ks: &str) -> Result<Self> {
        let p = |cql: String| async move {
            s.prepare(cql)
                .await
                .map_err(|e| StoreError::Database(format!("prepare: {e}")))
        };
        let sp = format!("{ks}.stock_partitions");
        Ok(Self {
            load_level: p(format!("SELECT region, on_hand, reserved, version FROM {sp} WHERE sku = ? AND location = ? LIMIT 1")).await?,
            load_cmd: p(format!("SELECT payload FROM {sp} WHERE sku = ? AND location = ? AND row_kind = 'c' AND row_id = ?")).await?,
            init_level: p(format!("INSERT INTO {sp} (sku, location, region, on_hand, reserved, version) VALUES (?, ?, ?, 0, 0, 0) IF NOT EXISTS")).await?,
            update_level: p(format!("UPDATE {sp} SET on_hand = ?, reserved = ?, version = ? WHERE sku = ? AND location = ? IF version = ?")).await?,
            insert_outbox: p(format!("INSERT INTO {sp} (sku, location, row_kind, row_id, payload, created_at, published) VALUES (?, ?, 'o', ?, ?, ?, false) USING TTL {RECORD_TTL}")).await?,
            insert_cmd: p(format!("INSERT INTO {sp} (sku, location, row_kind, row_id, payload, created_at) VALUES (?, ?, 'c', ?, ?, ?) USING TTL {RECORD_TTL}")).await?,
            insert_marker: p(format!("INSERT INTO {ks}.outbox_markers (shard, sku, location, touched) VALUES (?, ?, ?, ?)")).await?,
            markers: p(format!("SELECT sku, location, writetime(touched) AS written FROM {ks}.outbox_markers WHERE shard = ?")).await?,
            delete_marker: p(format!("DELETE FROM {ks}.outbox_markers USING TIMESTAMP ? WHERE shard = ? AND sku = ? AND location = ?")).await?,
            partition_outbox: p(format!("SELECT row_id, payload, created_at, published FROM {sp} WHERE sku = ? AND location = ? AND row_kind = 'o'")).await?,
            mark_published: p(format!("UPDATE {sp} USING TTL {RECORD_TTL} SET published = true WHERE sku = ? AND location = ? AND row_kind = 'o' AND row_id = ?")).await?,
            get_location: p(format!("SELECT region, kind, name FROM {ks}.locations WHERE id = ?")).await?,
            put_location: p(format!("INSERT INTO {ks}.locations (id, region, kind, name) VALUES (?, ?, ?, ?)")).await?,
            get_catalog: p(format!("SELECT version, catalog_name, catalog_attributes FROM {sp} WHERE sku = ? AND location = '{CATALOG}' LIMIT 1")).await?,
            update_catalog: p(format!("UPDATE {sp} SET catalog_name = ?, catalog_attributes = ?, version = ? WHERE sku = ? AND location = '{CATALOG}' IF version = ?")).await?,
            create_reservation: p(format!("INSERT INTO {ks}.reservations (id, status, owner, lines, reference, created_at, expires_at, updated_at) VALUES (?, 'pending', ?, ?, ?, ?, ?, ?) IF NOT EXISTS")).await?,
            get_reservation: p(format!("SELECT status, owner, lines, reference, created_at, expires_at, updated_at FROM {ks}.reservations WHERE id = ?")).await?,
            move_reservation: p(format!("UPDATE {ks}.reservations SET status = ?, updated_at = ? WHERE id = ? IF status = ?")).await?,
            delete_pending_reservation: p(format!("DELETE FROM {ks}.reservations WHERE id = ? IF status = 'pending'")).await?,
            insert_deadline: p(format!("INSERT INTO {ks}.reservation_deadlines (minute, expires_at, id) VALUES (?, ?, ?)")).await?,
            delete_deadline: p(format!("DELETE FROM {ks}.reservation_deadlines WHERE minute = ? AND expires_at = ? AND id = ?")).await?,
            deadlines: p(format!("SELECT expires_at, id FROM {ks}.reservation_deadlines WHERE minute = ?")).await?,
            claim: p(format!("INSERT INTO {ks}.idempotency (key, fingerprint, state, claimed_at) VALUES (?, ?, 'pending', ?) IF NOT EXISTS USING TTL {RECORD_TTL}")).await?,
            get_claim: p(format!("SELECT fingerprint, state, result, claimed_at FROM {ks}.idempotency WHERE key = ?")).await?,
            take_over: p(format!("UPDATE {ks}.idempotency USING TTL {RECORD_TTL} SET claimed_at = ? WHERE key = ? IF claimed_at = ?")).await?,
            // Plain writes, not Paxos: only the claim's owner finishes it, and a late
            // take-over re-runs a command whose key changes are guarded by command ids.
            finish_claim: p(format!("UPDATE {ks}.idempotency USING TTL {RECORD_TTL} SET state = 'done', result = ? WHERE key = ?")).await?,
            finish_reservation: p(format!("UPDATE {ks}.reservations SET status = ?, updated_at = ? WHERE id = ?")).await?,
            drop_claim: p(format!("DELETE FROM {ks}.idempotency WHERE key = ? IF state = 'pending'")).await?,
            all_levels: p(format!("SELECT DISTINCT sku, location, region, on_hand, reserved, version FROM {sp}")).await?,
        })
    }
}

/// The ScyllaDB write store.
pub struct ScyllaWriteStore {
    session: Arc<Session>,
    keyspace: String,
    st: Statements,
    tick: watch::Sender<u64>,
}

/// What applying one key's change did.
struct KeyChange {
    level: StockLevel,
    /// Events written (0 when the change had been applied before).
    events: usize,
}

/// The payload of an applied-command record: the level the change produced.
type CmdRecord = StockLevel;

enum Claim {
    /// This call owns the key now.
    Owned,
    /// The key was applied before: the stored result.
    Replay(CommandResult),
}

fn shard_of(sku: &str, location: &str) -> i32 {
    let h =
        stockflow_domain::partition_for_key(format!("{sku}/{location}").as_bytes(), SHARDS as u32);
    i32::try_from(h).unwrap_or(0)
}

fn minute_of(ms: i64) -> i64 {
    ms.div_euclid(60_000)
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// Full jitter between 2 and 2 + 20·attempt milliseconds, from the clock's low bits (no
/// RNG needed: contenders read the clock at different nanoseconds).
fn jitter(attempt: u32) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let span = 20 * u64::from(attempt.min(10)) + 1;
    Duration::from_millis(2 + u64::from(nanos) % span)
}

impl ScyllaWriteStore {
    /// Prepares every statement on `session` for `keyspace`.
    pub async fn new(session: Arc<Session>, keyspace: &str) -> Result<Self> {
        let st = Statements::prepare(&session, keyspace).await?;
        Ok(Self {
            session,
            keyspace: keyspace.to_string(),
            st,
            tick: watch::channel(0).0,
        })
    }

    async fn rows(
        &self,
        context: &str,
        st: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Rows> {
        let result = self
            .session
            .execute_unpaged(st, values)
            .await
            .map_err(|e| db_error(context, e))?;
        Rows::from(result)
    }

    async fn load_level(&self, key: &StockKey) -> Result<Option<StockLevel>> {
        let rows = self
            .rows(
                "load level",
                &self.st.load_level,
                (key.sku.as_str(), key.location.as_str()),
            )
            .await?;
        if rows.len() == 0 {
            return Ok(None);
        }
        let (Some(region), Some(version)) = (rows.text(0, "region"), rows.bigint(0, "version"))
        else {
            return Ok(None);
        };
        Ok(Some(StockLevel {
            sku: key.sku.clone(),
            location: key.location.clone(),
            region: Region::parse(region).map_err(corrupt)?,
            on_hand: rows.bigint(0, "on_hand").unwrap_or(0),
            reserved: rows.bigint(0, "reserved").unwrap_or(0),
            version: u64::try_from(version).unwrap_or(0),
        }))
    }

    async fn load_cmd(&self, key: &StockKey, cmd_id: &str) -> Result<Option<CmdRecord>> {
        let rows = self
            .rows(
                "load command record",
                &self.st.load_cmd,
                (key.sku.as_str(), key.location.as_str(), cmd_id),
            )
            .await?;
        match rows.blob(0, "payload") {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// The level of `key`, creating its partition (version 0) at a known location.
    async fn level_or_init(&self, key: &StockKey) -> Result<StockLevel> {
        if let Some(level) = self.load_level(key).await? {
            return Ok(level);
        }
        let location = self
            .location(&key.location)
            .await?
            .ok_or_else(|| DomainError::LocationNotFound(key.location.clone()))?;
        self.session
            .execute_unpaged(
                &self.st.init_level,
                (
                    key.sku.as_str(),
                    key.location.as_str(),
                    location.region.as_str(),
                ),
            )
            .await
            .map_err(|e| db_error("create stock partition", e))?;
        self.load_level(key)
            .await?
            .ok_or_else(|| StoreError::Unavailable("stock partition not readable yet".into()))
    }

    /// Applies one key's change exactly once under `cmd_id`: loads the level, asks `decide`
    /// for the next one, and writes level + event + command record in one conditional
    /// batch, retrying version races with jitter.
    async fn apply_to_key(
        &self,
        key: &StockKey,
        cmd_id: &str,
        decide: impl Fn(&StockLevel) -> std::result::Result<(StockLevel, StockEvent), DomainError>,
    ) -> Result<KeyChange> {
        for attempt in 0..MAX_ATTEMPTS {
            if let Some(level) = self.load_cmd(key, cmd_id).await? {
                return Ok(KeyChange { level, events: 0 });
            }
            let current = self.level_or_init(key).await?;
            let (next, event) = decide(&current)?;
            let version = i64::try_from(next.version).map_err(corrupt)?;
            let expected = version - 1;
            let payload = serde_json::to_vec(&BusEvent::Stock(event))?;
            let record = serde_json::to_vec(&next)?;
            let now = now_ms();
            let (sku, location) = (key.sku.as_str(), key.location.as_str());
            self.session
                .execute_unpaged(
                    &self.st.insert_marker,
                    (shard_of(sku, location), sku, location, now),
                )
                .await
                .map_err(|e| db_error("write outbox marker", e))?;
            let mut batch = Batch::new(BatchType::Logged);
            batch.append_statement(self.st.update_level.clone());
            batch.append_statement(self.st.insert_outbox.clone());
            batch.append_statement(self.st.insert_cmd.clone());
            let row_id = format!("{version:020}");
            let values = (
                (
                    next.on_hand,
                    next.reserved,
                    version,
                    sku,
                    location,
                    expected,
                ),
                (sku, location, row_id.as_str(), payload.as_slice(), now),
                (sku, location, cmd_id, record.as_slice(), now),
            );
            match self.session.batch(&batch, values).await {
                Ok(result) => {
                    if Rows::from(result)?.applied()? {
                        self.tick.send_modify(|n| *n = n.wrapping_add(1));
                        return Ok(KeyChange {
                            level: next,
                            events: 1,
                        });
                    }
                    metrics::counter!("stockflow_lwt_conflicts_total").increment(1);
                }
                Err(e) if outcome_unknown(&e) => {
                    // The batch may or may not have been applied; the next loop reads the
                    // command record back before deciding anything again.
                    metrics::counter!("stockflow_lwt_unknown_outcomes_total").increment(1);
                    tracing::warn!(%sku, %location, error = %e, "conditional batch outcome unknown; reading back");
                }
                Err(e) => return Err(db_error("conditional batch", e)),
            }
            tokio::time::sleep(jitter(attempt)).await;
        }
        Err(StoreError::Unavailable(format!(
            "too much contention on {}@{}; retry with the same Idempotency-Key",
            key.sku, key.location
        )))
    }

    async fn claim(&self, token: &IdempotencyToken) -> Result<Claim> {
        let now = now_ms();
        let key = token.key.as_str();
        let result = self
            .session
            .execute_unpaged(&self.st.claim, (key, token.fingerprint.as_str(), now))
            .await
            .map_err(|e| db_error("claim idempotency key", e))?;
        if Rows::from(result)?.applied()? {
            return Ok(Claim::Owned);
        }
        let rows = self
            .rows("read idempotency key", &self.st.get_claim, (key,))
            .await?;
        if rows.text(0, "fingerprint").as_deref() != Some(token.fingerprint.as_str()) {
            return Err(StoreError::IdempotencyKeyReused);
        }
        if rows.text(0, "state").as_deref() == Some("done") {
            let result = rows.text(0, "result").unwrap_or_default();
            return Ok(Claim::Replay(serde_json::from_str(&result)?));
        }
        let claimed_at = rows.bigint(0, "claimed_at").unwrap_or(0);
        if now - claimed_at < CLAIM_STALE_MS {
            return Err(StoreError::InProgress);
        }
        // The holder crashed: take over. Every key change is guarded by its command id, so
        // finishing the command applies nothing twice.
        let result = self
            .session
            .execute_unpaged(&self.st.take_over, (now, key, claimed_at))
            .await
            .map_err(|e| db_error("take over idempotency key", e))?;
        if Rows::from(result)?.applied()? {
            Ok(Claim::Owned)
        } else {
            Err(StoreError::InProgress)
        }
    }

    async fn finish(&self, token: &IdempotencyToken, result: &CommandResult) -> Result<()> {
        self.session
            .execute_unpaged(
                &self.st.finish_claim,
                (serde_json::to_string(result)?, token.key.as_str()),
            )
            .await
            .map_err(|e| db_error("record idempotency result", e))?;
        Ok(())
    }

    async fn drop_claim(&self, token: &IdempotencyToken) {
        if let Err(e) = self
            .session
            .execute_unpaged(&self.st.drop_claim, (token.key.as_str(),))
            .await
        {
            tracing::warn!(error = %e, "cannot drop idempotency claim; it expires by itself");
        }
    }

    async fn load_reservation(
        &self,
        id: &ReservationId,
    ) -> Result<Option<(Reservation, String, String)>> {
        let rows = self
            .rows("load reservation", &self.st.get_reservation, (id.as_str(),))
            .await?;
        if rows.len() == 0 {
            return Ok(None);
        }
        let raw_status = rows.text(0, "status").unwrap_or_default();
        let status = match raw_status.as_str() {
            "pending" => ReservationStatus::Active,
            // A settlement in progress is reported as its outcome: it can no longer fail.
            s => ReservationStatus::parse(s.strip_prefix("settling:").unwrap_or(s))
                .unwrap_or(ReservationStatus::Active),
        };
        let lines: Vec<ReservationLine> =
            serde_json::from_str(&rows.text(0, "lines").unwrap_or_default())?;
        Ok(Some((
            Reservation {
                id: id.clone(),
                status,
                lines,
                reference: rows.text(0, "reference"),
                created_at_ms: rows.bigint(0, "created_at").unwrap_or(0),
                expires_at_ms: rows.bigint(0, "expires_at").unwrap_or(0),
                updated_at_ms: rows.bigint(0, "updated_at").unwrap_or(0),
            },
            raw_status,
            rows.text(0, "owner").unwrap_or_default(),
        )))
    }

    async fn move_reservation(&self, id: &ReservationId, from: &str, to: &str) -> Result<bool> {
        let result = self
            .session
            .execute_unpaged(&self.st.move_reservation, (to, now_ms(), id.as_str(), from))
            .await
            .map_err(|e| db_error("move reservation", e))?;
        Rows::from(result)?.applied()
    }

    async fn reserve(
        &self,
        cmd: &Reserve,
        owner: &str,
        meta: &EventMeta,
    ) -> Result<(CommandResult, usize)> {
        // Look first, so every short line is reported and nothing is written for a request
        // that cannot succeed.
        let mut levels = Vec::with_capacity(cmd.lines.len());
        for line in &cmd.lines {
            levels.push(self.level_or_init(&line.key()).await?);
        }
        let existing = self.load_reservation(&cmd.id).await?;
        // The same client request, interrupted after creating the reservation: resume it.
        let resuming =
            matches!(&existing, Some((_, status, o)) if status == "pending" && o == owner);
        if !resuming {
            if existing.is_some() {
                return Err(DomainError::ReservationExists(cmd.id.clone()).into());
            }
            decide::reserve(&levels, None, cmd, meta)?;
        }
        let ttl_ms = i64::try_from(cmd.ttl_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
        let expires_at = meta.occurred_at_ms.saturating_add(ttl_ms);
        let lines: Vec<ReservationLine> = cmd
            .lines
            .iter()
            .map(|l| ReservationLine {
                sku: l.sku.clone(),
                location: l.location.clone(),
                qty: l.qty,
            })
            .collect();
        if !resuming {
            let created = self
                .session
                .execute_unpaged(
                    &self.st.create_reservation,
                    (
                        cmd.id.as_str(),
                        owner,
                        serde_json::to_string(&lines)?,
                        cmd.reference.as_deref(),
                        meta.occurred_at_ms,
                        expires_at,
                        meta.occurred_at_ms,
                    ),
                )
                .await
                .map_err(|e| db_error("create reservation", e))?;
            if !Rows::from(created)?.applied()? {
                return Err(DomainError::ReservationExists(cmd.id.clone()).into());
            }
        }
        let cmd_id = format!("r:{}", cmd.id);
        let mut done: Vec<&stockflow_domain::ReserveLine> = Vec::new();
        let mut events = 0;
        for line in &cmd.lines {
            let outcome = self
                .apply_to_key(&line.key(), &cmd_id, |level| {
                    let next = level.reserve(line.qty)?;
                    let event = StockEvent::for_level(
                        EventKind::StockReserved,
                        &next,
                        Some(cmd.id.clone()),
                        None,
                        cmd.reference.clone(),
                        meta,
                    );
                    Ok((next, event))
                })
                .await;
            match outcome {
                Ok(change) => {
                    events += change.events;
                    done.push(line);
                }
                Err(e) => {
                    // Give back what this reservation already holds, then refuse.
                    let undo_id = format!("rc:{}", cmd.id);
                    for held in &done {
                        let change = self
                            .apply_to_key(&held.key(), &undo_id, |level| {
                                let next = level.unreserve(held.qty);
                                let event = StockEvent::for_level(
                                    EventKind::ReservationReleased,
                                    &next,
                                    Some(cmd.id.clone()),
                                    None,
                                    cmd.reference.clone(),
                                    meta,
                                );
                                Ok((next, event))
                            })
                            .await?;
                        metrics::counter!("stockflow_reservation_compensations_total")
                            .increment(change.events as u64);
                    }
                    let _ = self
                        .session
                        .execute_unpaged(&self.st.delete_pending_reservation, (cmd.id.as_str(),))
                        .await;
                    return Err(e);
                }
            }
        }
        if !self.move_reservation(&cmd.id, "pending", "active").await? {
            return Err(StoreError::Unavailable(
                "reservation changed while being created".into(),
            ));
        }
        self.session
            .execute_unpaged(
                &self.st.insert_deadline,
                (minute_of(expires_at), expires_at, cmd.id.as_str()),
            )
            .await
            .map_err(|e| db_error("record deadline", e))?;
        let reservation = Reservation {
            id: cmd.id.clone(),
            status: ReservationStatus::Active,
            lines,
            reference: cmd.reference.clone(),
            created_at_ms: meta.occurred_at_ms,
            expires_at_ms: expires_at,
            updated_at_ms: meta.occurred_at_ms,
        };
        Ok((CommandResult::Reservation(reservation), events))
    }

    async fn settle(
        &self,
        id: &ReservationId,
        how: Settlement,
        meta: &EventMeta,
    ) -> Result<(CommandResult, usize)> {
        let target = match how {
            Settlement::Confirm => "confirmed",
            Settlement::Release => "released",
            Settlement::Expire => "expired",
        };
        let settling = format!("settling:{target}");
        let (reservation, raw, _) = self
            .load_reservation(id)
            .await?
            .ok_or_else(|| DomainError::ReservationNotFound(id.clone()))?;
        if raw == "pending" {
            // Still being created by another call: not visible as a reservation yet.
            return Err(DomainError::ReservationNotFound(id.clone()).into());
        }
        let kind = if raw == settling {
            // A settlement that crashed half-way: finish it.
            match how {
                Settlement::Confirm => EventKind::ReservationConfirmed,
                Settlement::Release => EventKind::ReservationReleased,
                Settlement::Expire => EventKind::ReservationExpired,
            }
        } else {
            if raw != "active" {
                return Err(DomainError::ReservationNotActive {
                    id: id.clone(),
                    status: reservation.status,
                }
                .into());
            }
            let Some((_, kind)) = decide::settlement(how, &reservation, meta.occurred_at_ms)?
            else {
                return Ok((CommandResult::Reservation(reservation), 0));
            };
            if !self.move_reservation(id, "active", &settling).await? {
                // Someone else settled it first; answer from the new state.
                let status = self
                    .load_reservation(id)
                    .await?
                    .map_or(ReservationStatus::Released, |(r, _, _)| r.status);
                return Err(DomainError::ReservationNotActive {
                    id: id.clone(),
                    status,
                }
                .into());
            }
            kind
        };
        let cmd_id = format!("s:{id}");
        let mut events = 0;
        for line in &reservation.lines {
            let change = self
                .apply_to_key(&line.key(), &cmd_id, |level| {
                    let next = match how {
                        Settlement::Confirm => level.confirm(line.qty),
                        Settlement::Release | Settlement::Expire => level.unreserve(line.qty),
                    };
                    let event = StockEvent::for_level(
                        kind,
                        &next,
                        Some(id.clone()),
                        None,
                        reservation.reference.clone(),
                        meta,
                    );
                    Ok((next, event))
                })
                .await?;
            events += change.events;
        }
        // Only the settlement that won `active → settling:<how>` gets here, and readers
        // already report `settling:<how>` as its outcome, so the last step needs no Paxos
        // round: even if this write were lost, nothing could settle the reservation again.
        self.session
            .execute_unpaged(
                &self.st.finish_reservation,
                (target, meta.occurred_at_ms, id.as_str()),
            )
            .await
            .map_err(|e| db_error("finish reservation", e))?;
        let _ = self
            .session
            .execute_unpaged(
                &self.st.delete_deadline,
                (
                    minute_of(reservation.expires_at_ms),
                    reservation.expires_at_ms,
                    id.as_str(),
                ),
            )
            .await;
        let status = ReservationStatus::parse(target).unwrap_or(ReservationStatus::Released);
        Ok((
            CommandResult::Reservation(Reservation {
                status,
                updated_at_ms: meta.occurred_at_ms,
                ..reservation
            }),
            events,
        ))
    }

    async fn run_command(
        &self,
        request: &CommandRequest,
        owner: &str,
        meta: &EventMeta,
    ) -> Result<(CommandResult, usize)> {
        match &request.command {
            Command::Adjust(cmd) => {
                let change = self
                    .apply_to_key(&cmd.key, &format!("a:{owner}"), |level| {
                        let applied = decide::adjust(level, cmd, meta)?;
                        let next = applied.levels.into_iter().next().ok_or_else(|| {
                            DomainError::LocationNotFound(cmd.key.location.clone())
                        })?;
                        let event = applied.events.into_iter().next().ok_or_else(|| {
                            DomainError::LocationNotFound(cmd.key.location.clone())
                        })?;
                        Ok((next, event))
                    })
                    .await?;
                Ok((CommandResult::Stock(change.level), change.events))
            }
            Command::Reserve(cmd) => self.reserve(cmd, owner, meta).await,
            Command::Confirm { id } => self.settle(id, Settlement::Confirm, meta).await,
            Command::Release { id } => self.settle(id, Settlement::Release, meta).await,
            Command::Expire { id } => self.settle(id, Settlement::Expire, meta).await,
        }
    }
}

#[async_trait]
impl WriteStore for ScyllaWriteStore {
    async fn execute(&self, request: CommandRequest) -> Result<CommandOutcome> {
        if let Some(token) = &request.idempotency
            && let Claim::Replay(result) = self.claim(token).await?
        {
            return Ok(CommandOutcome {
                result,
                replayed: true,
                events: 0,
            });
        }
        let owner = match &request.idempotency {
            Some(token) => format!("k:{}", token.key),
            None => format!("u:{}", uuid::Uuid::now_v7()),
        };
        let meta = EventMeta {
            idempotency_key: request.idempotency.as_ref().map(|t| t.key.to_string()),
            trace_context: request.trace_context.clone(),
            occurred_at_ms: now_ms(),
        };
        match self.run_command(&request, &owner, &meta).await {
            Ok((result, events)) => {
                if let Some(token) = &request.idempotency {
                    self.finish(token, &result).await?;
                }
                Ok(CommandOutcome {
                    result,
                    replayed: false,
                    events,
                })
            }
            Err(e) => {
                // A refusal writes nothing, so the key may be used again; an infrastructure
                // failure keeps the claim, and a retry finishes the command.
                if let (Some(token), StoreError::Domain(_)) = (&request.idempotency, &e) {
                    self.drop_claim(token).await;
                }
                Err(e)
            }
        }
    }

    async fn put_location(&self, location: Location) -> Result<Location> {
        if let Some(current) = self.location(&location.id).await?
            && current.region != location.region
        {
            // Regions are fixed once a location exists: read models aggregate by region.
            return Err(DomainError::LocationRegionImmutable {
                location: location.id,
                current: current.region.to_string(),
            }
            .into());
        }
        self.session
            .execute_unpaged(
                &self.st.put_location,
                (
                    location.id.as_str(),
                    location.region.as_str(),
                    location.kind.as_str(),
                    location.name.as_str(),
                ),
            )
            .await
            .map_err(|e| db_error("put location", e))?;
        Ok(location)
    }

    async fn put_sku(
        &self,
        sku: Sku,
        name: String,
        attributes: BTreeMap<String, String>,
    ) -> Result<SkuCatalog> {
        for attempt in 0..MAX_ATTEMPTS {
            let rows = self
                .rows("load catalog", &self.st.get_catalog, (sku.as_str(),))
                .await?;
            let current = rows.bigint(0, "version");
            if current.is_none() {
                self.session
                    .execute_unpaged(&self.st.init_level, (sku.as_str(), CATALOG, "catalog"))
                    .await
                    .map_err(|e| db_error("create catalog partition", e))?;
                continue;
            }
            let current = current.unwrap_or(0);
            let version = current + 1;
            let now = now_ms();
            let event = BusEvent::Catalog(CatalogEvent {
                event_id: format!("{sku}/catalog/{version}"),
                sku: sku.clone(),
                name: name.clone(),
                attributes: attributes.clone(),
                version: u64::try_from(version).unwrap_or(0),
                occurred_at_ms: now,
            });
            self.session
                .execute_unpaged(
                    &self.st.insert_marker,
                    (shard_of(sku.as_str(), CATALOG), sku.as_str(), CATALOG, now),
                )
                .await
                .map_err(|e| db_error("write outbox marker", e))?;
            let mut batch = Batch::new(BatchType::Logged);
            batch.append_statement(self.st.update_catalog.clone());
            batch.append_statement(self.st.insert_outbox.clone());
            let payload = serde_json::to_vec(&event)?;
            let row_id = format!("{version:020}");
            let values = (
                (name.as_str(), &attributes, version, sku.as_str(), current),
                (
                    sku.as_str(),
                    CATALOG,
                    row_id.as_str(),
                    payload.as_slice(),
                    now,
                ),
            );
            match self.session.batch(&batch, values).await {
                Ok(r) => {
                    if Rows::from(r)?.applied()? {
                        self.tick.send_modify(|n| *n = n.wrapping_add(1));
                        let version = u64::try_from(version).unwrap_or(0);
                        return Ok(SkuCatalog {
                            sku,
                            name,
                            attributes,
                            version,
                        });
                    }
                }
                Err(e) if outcome_unknown(&e) => {}
                Err(e) => return Err(db_error("catalog batch", e)),
            }
            tokio::time::sleep(jitter(attempt)).await;
        }
        Err(StoreError::Unavailable(format!(
            "too much contention on catalog of {sku}"
        )))
    }

    async fn location(&self, id: &LocationId) -> Result<Option<Location>> {
        let rows = self
            .rows("load location", &self.st.get_location, (id.as_str(),))
            .await?;
        if rows.len() == 0 {
            return Ok(None);
        }
        let kind = rows.text(0, "kind").unwrap_or_default();
        Ok(Some(Location {
            id: id.clone(),
            region: Region::parse(rows.text(0, "region").unwrap_or_default()).map_err(corrupt)?,
            kind: LocationKind::parse(&kind)
                .ok_or_else(|| corrupt(format!("location kind {kind}")))?,
            name: rows.text(0, "name").unwrap_or_default(),
        }))
    }

    async fn reservation(&self, id: &ReservationId) -> Result<Option<Reservation>> {
        Ok(self
            .load_reservation(id)
            .await?
            .filter(|(_, raw, _)| raw != "pending")
            .map(|(r, _, _)| r))
    }

    async fn stock_level(&self, key: &StockKey) -> Result<Option<StockLevel>> {
        Ok(self.load_level(key).await?.filter(|l| l.version > 0))
    }

    async fn all_stock_levels(&self) -> Result<Vec<StockLevel>> {
        let mut out = Vec::new();
        let mut pager = self
            .session
            .execute_iter(self.st.all_levels.clone(), ())
            .await
            .map_err(|e| StoreError::Database(format!("scan levels: {e}")))?
            .rows_stream::<(
                String,
                String,
                Option<String>,
                Option<i64>,
                Option<i64>,
                Option<i64>,
            )>()
            .map_err(|e| StoreError::Database(e.to_string()))?;
        use futures::StreamExt;
        while let Some(row) = pager.next().await {
            let (sku, location, region, on_hand, reserved, version) =
                row.map_err(|e| StoreError::Database(e.to_string()))?;
            if location == CATALOG || version.unwrap_or(0) == 0 {
                continue;
            }
            out.push(StockLevel {
                sku: Sku::parse(sku).map_err(corrupt)?,
                location: LocationId::parse(location).map_err(corrupt)?,
                region: Region::parse(region.unwrap_or_default()).map_err(corrupt)?,
                on_hand: on_hand.unwrap_or(0),
                reserved: reserved.unwrap_or(0),
                version: u64::try_from(version.unwrap_or(0)).unwrap_or(0),
            });
        }
        out.sort_by(|a, b| {
            (a.sku.as_str(), a.location.as_str()).cmp(&(b.sku.as_str(), b.location.as_str()))
        });
        Ok(out)
    }

    async fn active_reservation_deadlines(
        &self,
        limit: usize,
    ) -> Result<Vec<(ReservationId, i64)>> {
        use futures::StreamExt;
        let now = now_ms();
        // Due soon or overdue by up to the longest TTL: what the expiry worker needs. One
        // partition per minute, read 32 at a time.
        let minutes = minute_of(now - 25 * 3_600_000)..=minute_of(now + 10 * 60_000);
        let mut scans = futures::stream::iter(minutes)
            .map(|minute| async move {
                self.rows("scan deadlines", &self.st.deadlines, (minute,))
                    .await
            })
            .buffer_unordered(32);
        let mut out = Vec::new();
        while let Some(rows) = scans.next().await {
            let rows = rows?;
            for r in 0..rows.len() {
                if let (Some(at), Some(id)) = (rows.bigint(r, "expires_at"), rows.text(r, "id")) {
                    out.push((ReservationId::parse(id).map_err(corrupt)?, at));
                }
            }
        }
        out.sort_by_key(|(_, at)| *at);
        out.truncate(limit);
        Ok(out)
    }

    async fn purge_idempotency(&self, _before_ms: i64) -> Result<usize> {
        // Records carry a TTL; the database removes them.
        Ok(0)
    }

    async fn check_ready(&self) -> Result<()> {
        // Also catches a keyspace migrated by another build while we run.
        super::schema::check_schema(&self.session, &self.keyspace).await
    }
}

impl ScyllaWriteStore {
    /// Versions of every outbox entry of `key`, published or not, in order (audits and
    /// tests: each applied change must appear exactly once).
    pub async fn outbox_versions(&self, key: &StockKey) -> Result<Vec<u64>> {
        let rows = self
            .rows(
                "read partition outbox",
                &self.st.partition_outbox,
                (key.sku.as_str(), key.location.as_str()),
            )
            .await?;
        Ok((0..rows.len())
            .filter_map(|r| rows.text(r, "row_id"))
            .filter_map(|id| id.parse().ok())
            .collect())
    }
}

/// An outbox entry's id: the partition and the row.
fn entry_id(sku: &str, location: &str, row_id: &str) -> String {
    format!("{sku}\u{1f}{location}\u{1f}{row_id}")
}

impl ScyllaWriteStore {
    /// Unpublished entries, the partitions scanned and when each scan began (µs).
    async fn scan_outbox(
        &self,
        limit: usize,
    ) -> Result<(Vec<OutboxEntry>, Vec<(i32, String, String, i64, bool)>)> {
        let mut entries = Vec::new();
        let mut partitions = Vec::new();
        for shard in 0..SHARDS {
            let markers = self
                .rows("scan outbox markers", &self.st.markers, (shard,))
                .await?;
            for m in 0..markers.len() {
                let (Some(sku), Some(location)) =
                    (markers.text(m, "sku"), markers.text(m, "location"))
                else {
                    continue;
                };
                let written = markers.bigint(m, "written").unwrap_or(i64::MAX);
                let read_at = now_ms() * 1000;
                let rows = self
                    .rows(
                        "read partition outbox",
                        &self.st.partition_outbox,
                        (sku.as_str(), location.as_str()),
                    )
                    .await?;
                let mut pending = false;
                for r in 0..rows.len() {
                    if rows.boolean(r, "published") == Some(true) {
                        continue;
                    }
                    pending = true;
                    if entries.len() < limit {
                        let row_id = rows.text(r, "row_id").unwrap_or_default();
                        entries.push(OutboxEntry {
                            id: entry_id(&sku, &location, &row_id),
                            key: sku.clone(),
                            payload: rows.blob(r, "payload").unwrap_or_default(),
                            created_at_ms: rows.bigint(r, "created_at").unwrap_or(0),
                        });
                    }
                }
                let stale = written < read_at - MARKER_GRACE_MS * 1000;
                partitions.push((shard, sku, location, read_at, !pending && stale));
            }
        }
        Ok((entries, partitions))
    }
}

#[async_trait]
impl Outbox for ScyllaWriteStore {
    async fn pending(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        let (entries, partitions) = self.scan_outbox(limit).await?;
        // Drop markers that have nothing behind them and are old enough that no batch
        // can still be in flight; the delete's timestamp spares any newer marker write.
        for (shard, sku, location, read_at, removable) in partitions {
            if removable {
                let _ = self
                    .session
                    .execute_unpaged(
                        &self.st.delete_marker,
                        (
                            read_at - MARKER_GRACE_MS * 1000,
                            shard,
                            sku.as_str(),
                            location.as_str(),
                        ),
                    )
                    .await;
            }
        }
        Ok(entries)
    }

    async fn mark_published(&self, ids: &[String]) -> Result<()> {
        let marks = ids.iter().map(|id| async move {
            let mut parts = id.split('\u{1f}');
            let (Some(sku), Some(location), Some(row)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(StoreError::Corrupt(format!("outbox id {id:?}")));
            };
            self.session
                .execute_unpaged(&self.st.mark_published, (sku, location, row))
                .await
                .map_err(|e| db_error("mark published", e))?;
            Ok(())
        });
        for result in futures::future::join_all(marks).await {
            result?;
        }
        Ok(())
    }

    async fn backlog(&self) -> Result<u64> {
        let (entries, _) = self.scan_outbox(usize::MAX).await?;
        Ok(entries.len() as u64)
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.tick.subscribe()
    }
}
