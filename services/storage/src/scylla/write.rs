//! The ScyllaDB write store: routes each command to its cheapest exact path.
//!
//! - An adjustment, a one-line reservation and the settlement of a one-line reservation
//!   touch one partition: ONE conditional batch writes the level, the reservation line, the
//!   outbox row and the applied-command row (the idempotency record), and concurrent
//!   commands on one hot key share batches ([`super::coalesce`], [`super::partition`]).
//! - A reservation over several partitions, and its settlement, run as a saga whose every
//!   step is exactly-once and every intermediate state recoverable ([`super::saga`]).
//! - Idempotency keys: replayed from the applied-command row for one-partition commands,
//!   claimed for sagas, and fingerprinted across partitions ([`super::claims`]).
//!
//! The domain decides everything; this module loads state, asks it, and writes the answer.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use scylla::client::session::Session;
use stockflow_domain::decide::{self, Settlement};
use stockflow_domain::{
    BusEvent, CatalogEvent, Command, CommandResult, DomainError, EventMeta, Location,
    LocationGrant, LocationId, LocationKind, RecordedAnswer, Region, Reservation, ReservationId,
    Reserve, Sku, SkuCatalog, StockKey, StockLevel,
};

use super::claims::{self, Claim, KeyState};
use super::coalesce::Keys;
use super::cql::{Rows, db_error, outcome_unknown};
use super::partition::{
    Change, CmdGuard, Decision, KeyOp, LineWrite, OpOutcome, Partitions, View, corrupt, jitter,
    shard_of,
};
use super::saga;
use super::statements::{CATALOG, Statements};
use crate::ports::{
    CommandOutcome, CommandRequest, ExpiryRound, IdempotencyToken, Purge, WriteStore,
};
use crate::{Result, StoreError, now_ms};

/// Attempts of one catalog update before giving up with a retryable error.
const MAX_CATALOG_ATTEMPTS: u32 = 30;

/// The ScyllaDB write store.
pub struct ScyllaWriteStore {
    pub(super) keys: Keys,
    pub(super) cursors: super::outbox::OutboxCursors,
    deadline_floor: super::expiry::DeadlineFloor,
    keyspace: String,
}

impl ScyllaWriteStore {
    /// Prepares every statement on `session` for `keyspace`.
    pub async fn new(session: Arc<Session>, keyspace: &str) -> Result<Self> {
        Self::with_partitions(session, keyspace, |_| {}).await
    }

    /// A store whose sagas are rolled back after `recovery_ms` idle instead of
    /// [`saga::RECOVERY_MS`], so tests need not wait half a minute.
    #[cfg(test)]
    pub(super) async fn with_recovery(
        session: Arc<Session>,
        keyspace: &str,
        recovery_ms: i64,
    ) -> Result<Self> {
        Self::with_partitions(session, keyspace, |p| p.recovery_ms = recovery_ms).await
    }

    async fn with_partitions(
        session: Arc<Session>,
        keyspace: &str,
        tune: impl FnOnce(&mut Partitions),
    ) -> Result<Self> {
        let st = Arc::new(Statements::prepare(&session, keyspace).await?);
        let mut partitions = Partitions::new(session, st);
        tune(&mut partitions);
        Ok(Self {
            keys: Keys::new(Arc::new(partitions)),
            cursors: Default::default(),
            deadline_floor: Default::default(),
            keyspace: keyspace.to_string(),
        })
    }

    fn p(&self) -> &Partitions {
        &self.keys.partitions
    }

    /// Versions of every unpublished outbox entry of `key`, in order (audits and tests).
    pub async fn outbox_versions(&self, key: &StockKey) -> Result<Vec<u64>> {
        let p = self.p();
        let rows = p
            .session
            .execute_unpaged(
                &p.st.partition_outbox,
                (key.sku.as_str(), key.location.as_str(), i32::MAX),
            )
            .await
            .map_err(|e| db_error("read partition outbox", e))?;
        let rows = Rows::from(rows)?;
        Ok((0..rows.len())
            .filter_map(|r| rows.text(r, "row_id"))
            .filter_map(|id| id.parse().ok())
            .collect())
    }

    async fn adjust(
        &self,
        cmd: &stockflow_domain::Adjust,
        guard: CmdGuard,
        grant: &LocationGrant,
        meta: &EventMeta,
    ) -> Result<OpOutcome> {
        let (adjust, grant, meta) = (cmd.clone(), grant.clone(), meta.clone());
        self.keys
            .apply(
                &cmd.key,
                KeyOp::new(
                    Some(guard),
                    None,
                    false,
                    Box::new(move |view: &View<'_>| {
                        let applied = decide::adjust(view.level, &adjust, &grant, &meta)?;
                        single_change(applied, None)
                    }),
                ),
            )
            .await
    }

    /// A one-line reservation: one conditional batch in its partition. `unrecorded`, a key
    /// seen for the first time, has its fingerprint written with the reservation's index.
    async fn reserve_one(
        &self,
        cmd: &Reserve,
        guard: CmdGuard,
        unrecorded: Option<&IdempotencyToken>,
        grant: &LocationGrant,
        meta: &EventMeta,
    ) -> Result<OpOutcome> {
        let p = self.p();
        let key = cmd.lines[0].key();
        // An id already used for a reservation elsewhere is refused. (Two concurrent
        // requests racing with one id on different keys both land; the index then names
        // both partitions and the reservation settles and expires as one.)
        let exists = match saga::locate(p, &cmd.id).await? {
            saga::Located::Saga(_) => true,
            saga::Located::Lines(indexed) => {
                let mut elsewhere = false;
                for other in indexed {
                    if other != key && !p.lines(&other, &[cmd.id.to_string()]).await?.is_empty() {
                        elsewhere = true;
                        break;
                    }
                }
                elsewhere
            }
        };
        if exists {
            if let Some(token) = unrecorded {
                claims::record_fingerprint(p, token).await;
            }
            return Err(DomainError::ReservationExists(cmd.id.clone()).into());
        }
        // The deadline the domain will give the reservation decided below with this `meta`.
        let expires_at = decide::new_reservation(cmd, meta.occurred_at_ms).expires_at_ms;
        // Before the batch, so nothing it commits is unreachable.
        saga::index_with_deadlines(
            p,
            &cmd.id,
            std::slice::from_ref(&key),
            &[expires_at],
            unrecorded,
        )
        .await?;
        let (reserve, grant, op_meta) = (cmd.clone(), grant.clone(), meta.clone());
        let outcome = self
            .keys
            .apply(
                &key,
                KeyOp::new(
                    Some(guard),
                    Some(cmd.id.clone()),
                    true,
                    Box::new(move |view: &View<'_>| {
                        let applied = decide::reserve(
                            std::slice::from_ref(view.level),
                            view.line,
                            &reserve,
                            &grant,
                            &op_meta,
                        )?;
                        let line = applied.reservation.clone().map(LineWrite::Put);
                        single_change(applied, line)
                    }),
                ),
            )
            .await;
        if let Err(StoreError::Domain(_)) = &outcome {
            // Refused: nothing will expire. (The index row may stay: it points at no line.)
            saga::forget_deadlines(p, &cmd.id, &[expires_at]).await;
        }
        outcome
    }

    /// Settles a reservation whose lines were found through the index at `keys` (no saga
    /// header), for a caller holding `grant`: each line's decision checks the line as loaded
    /// for it, in its partition's conditional batch.
    async fn settle_lines(
        &self,
        id: &ReservationId,
        keys: Vec<StockKey>,
        how: Settlement,
        guard: CmdGuard,
        grant: &LocationGrant,
        meta: &EventMeta,
    ) -> Result<OpOutcome> {
        let p = self.p();
        if keys.len() > 1 {
            // Lines of one id in several partitions without a header: twins of racing
            // one-line reserves (or index rows of refused attempts). Each line's own decision
            // below is the check that counts; this one, first, keeps a caller allowed at
            // some of them from settling those before being refused at another.
            for line in saga::single_lines(p, id, keys.clone()).await?.values() {
                grant.check_reservation(line)?;
            }
        }
        let mut last: Option<OpOutcome> = None;
        let mut held = 0;
        for key in keys {
            let (line_id, grant, op_meta) = (id.clone(), grant.clone(), meta.clone());
            let outcome = self
                .keys
                .apply(
                    &key,
                    KeyOp::new(
                        Some(guard.clone()),
                        Some(line_id.clone()),
                        false,
                        Box::new(move |view: &View<'_>| {
                            // Not found before forbidden: an unknown id tells nothing.
                            let Some(reservation) = view.line else {
                                return Err(DomainError::ReservationNotFound(line_id.clone()));
                            };
                            let applied = decide::settle(
                                how,
                                reservation,
                                std::slice::from_ref(view.level),
                                &grant,
                                &op_meta,
                            )?;
                            let line = applied.reservation.clone().map(LineWrite::Put);
                            single_change(applied, line)
                        }),
                    ),
                )
                .await;
            match outcome {
                // An index entry whose line was never written (or was given back).
                Err(StoreError::Domain(DomainError::ReservationNotFound(_))) => continue,
                Err(e) => return Err(e),
                Ok(outcome) => {
                    held += 1;
                    if let CommandResult::Reservation(r) = &outcome.result
                        && r.status != stockflow_domain::ReservationStatus::Active
                    {
                        saga::forget_deadlines(p, id, &[r.expires_at_ms]).await;
                    }
                    last = Some(merge(last, outcome));
                }
            }
        }
        if held == 0 {
            return Err(DomainError::ReservationNotFound(id.clone()).into());
        }
        last.ok_or_else(|| DomainError::ReservationNotFound(id.clone()).into())
    }

    async fn settle(
        &self,
        request: &CommandRequest,
        id: &ReservationId,
        how: Settlement,
        guard: CmdGuard,
        meta: &EventMeta,
    ) -> Result<OpOutcome> {
        let grant = &request.grant;
        match saga::locate(self.p(), id).await? {
            saga::Located::Saga(header) => {
                self.claimed(request, |_| async move {
                    saga::settle(&self.keys, header, how, grant, meta).await
                })
                .await
            }
            saga::Located::Lines(keys) => {
                self.settle_lines(id, keys, how, guard, grant, meta).await
            }
        }
    }

    /// Runs a multi-partition command under its idempotency claim (if keyed).
    async fn claimed<F, Fut>(&self, request: &CommandRequest, run: F) -> Result<OpOutcome>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = Result<(CommandResult, usize)>>,
    {
        let p = self.p();
        let (token, claimed_at) = match &request.idempotency {
            Some(token) => match claims::claim(p, token).await? {
                Claim::Replay(answer) => {
                    return Ok(OpOutcome {
                        result: answer.into_result()?,
                        events: 0,
                        replayed: true,
                    });
                }
                Claim::Owned(at) => (Some(token), at),
            },
            None => (None, 0),
        };
        let owner = match token {
            Some(t) => format!("k:{}", t.key),
            None => format!("u:{}", uuid::Uuid::now_v7()),
        };
        let ran = run(owner).await;
        let answer = match &ran {
            Ok((result, _)) => RecordedAnswer::of(&Ok(result.clone())),
            Err(StoreError::Domain(refusal)) => RecordedAnswer::of(&Err(refusal.clone())),
            Err(_) => None,
        };
        let Some(token) = token else {
            return ran.map(|(result, events)| OpOutcome {
                result,
                events,
                replayed: false,
            });
        };
        match (ran, answer) {
            (Ok((result, events)), Some(answer)) => {
                if let Err(e) = claims::finish(p, token, claimed_at, &answer).await {
                    // The command is done; only its record is missing. The client gets its
                    // success, and a retry (after the claim goes stale) resumes the saga,
                    // which finds it complete and answers the same.
                    tracing::warn!(key = %token.key, error = %e, "cannot record the idempotency result");
                }
                Ok(OpOutcome {
                    result,
                    events,
                    replayed: false,
                })
            }
            (Err(refusal), Some(answer)) => {
                // A refusal is only given once it is recorded: a retry that ran again might
                // find the state changed and answer otherwise. Unrecorded, the claim is
                // handed back at once, so the retry runs the command instead of waiting for
                // the claim to go stale.
                if let Err(e) = claims::finish(p, token, claimed_at, &answer).await {
                    claims::release(p, token, claimed_at, false).await;
                    return Err(e);
                }
                Err(refusal)
            }
            (ran, None) => {
                let malformed = matches!(ran, Err(StoreError::Domain(_)));
                if ran.is_err() {
                    claims::release(p, token, claimed_at, malformed).await;
                }
                ran.map(|(result, events)| OpOutcome {
                    result,
                    events,
                    replayed: false,
                })
            }
        }
    }

    /// Runs `command`, recording `unrecorded`'s fingerprint beside it (if any).
    async fn beside<T>(
        &self,
        unrecorded: Option<&IdempotencyToken>,
        command: impl std::future::Future<Output = T>,
    ) -> T {
        match unrecorded {
            Some(token) => tokio::join!(claims::record_fingerprint(self.p(), token), command).1,
            None => command.await,
        }
    }

    /// Runs `request`; `unrecorded` is its key when seen for the first time, whose
    /// fingerprint is written beside the command (or with it, where it writes anyway).
    async fn run(
        &self,
        request: &CommandRequest,
        unrecorded: Option<&IdempotencyToken>,
        meta: &EventMeta,
    ) -> Result<OpOutcome> {
        let guard = match &request.idempotency {
            Some(token) => CmdGuard {
                id: format!("k:{}", token.key),
                fingerprint: token.fingerprint.clone(),
            },
            None => CmdGuard {
                id: format!("u:{}", uuid::Uuid::now_v7()),
                fingerprint: String::new(),
            },
        };
        let grant = &request.grant;
        let how = match &request.command {
            Command::Adjust(cmd) => {
                return self
                    .beside(unrecorded, self.adjust(cmd, guard, grant, meta))
                    .await;
            }
            Command::Reserve(cmd) if cmd.lines.len() == 1 => {
                return self.reserve_one(cmd, guard, unrecorded, grant, meta).await;
            }
            Command::Reserve(cmd) => {
                let saga = self.claimed(request, |owner| async move {
                    saga::reserve(&self.keys, cmd, &owner, grant, meta).await
                });
                return self.beside(unrecorded, saga).await;
            }
            Command::Confirm { id } => (id, Settlement::Confirm),
            Command::Release { id } => (id, Settlement::Release),
            Command::Expire { id } => (id, Settlement::Expire),
        };
        let (id, how) = how;
        self.beside(unrecorded, self.settle(request, id, how, guard, meta))
            .await
    }
}

/// The one change of a one-partition decision, with what happens to its line.
fn single_change(
    applied: stockflow_domain::Applied,
    line: Option<LineWrite>,
) -> std::result::Result<Decision, DomainError> {
    let (Some(level), Some(event)) = (
        applied.levels.into_iter().next(),
        applied.events.into_iter().next(),
    ) else {
        return Ok(Decision::Unchanged(applied.result));
    };
    Ok(Decision::Change(Box::new(Change {
        level,
        event,
        line,
        result: applied.result,
    })))
}

/// Folds the outcomes of a reservation's lines settled one by one into one answer.
fn merge(acc: Option<OpOutcome>, next: OpOutcome) -> OpOutcome {
    let Some(mut acc) = acc else { return next };
    acc.events += next.events;
    acc.replayed &= next.replayed;
    if let (CommandResult::Reservation(a), CommandResult::Reservation(b)) =
        (&mut acc.result, next.result)
    {
        a.lines.extend(b.lines);
    }
    acc
}

#[async_trait]
impl WriteStore for ScyllaWriteStore {
    async fn execute(&self, request: CommandRequest) -> Result<CommandOutcome> {
        // A command naming a location outside the caller's grant is refused before anything
        // is read or written (not kept under its key: nothing ran). A settlement's lines are
        // checked by its decision, on the state loaded for it.
        decide::authorize(&request.command, &request.grant)?;
        let new_key = match &request.idempotency {
            Some(token) => match claims::check_fingerprint(self.p(), token).await? {
                KeyState::Refused(refusal) => return Err(refusal.into()),
                KeyState::New => true,
                KeyState::Known => false,
            },
            None => false,
        };
        let meta = EventMeta {
            actor: request.actor.clone(),
            idempotency_key: request.idempotency.as_ref().map(|t| t.key.to_string()),
            trace_context: request.trace_context.clone(),
            occurred_at_ms: now_ms(),
        };
        let unrecorded = request.idempotency.as_ref().filter(|_| new_key);
        let outcome = self.run(&request, unrecorded, &meta).await;
        if let (Some(token), Err(StoreError::Domain(refusal))) = (&request.idempotency, &outcome)
            && refusal.is_recorded()
        {
            claims::record_refusal(self.p(), token, refusal).await?;
        }
        let outcome = outcome?;
        Ok(CommandOutcome {
            result: outcome.result,
            replayed: outcome.replayed,
            events: outcome.events,
        })
    }

    async fn put_location(&self, location: Location) -> Result<Location> {
        location.may_replace(self.location(&location.id).await?.as_ref())?;
        let p = self.p();
        p.session
            .execute_unpaged(
                &p.st.put_location,
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
        let p = self.p();
        for attempt in 0..MAX_CATALOG_ATTEMPTS {
            let rows = p
                .session
                .execute_unpaged(&p.st.get_catalog, (sku.as_str(),))
                .await
                .map_err(|e| db_error("load catalog", e))?;
            let current = Rows::from(rows)?.bigint(0, "version");
            let version = current.unwrap_or(0) + 1;
            let now = now_ms();
            let event = BusEvent::Catalog(CatalogEvent {
                event_id: format!("{sku}/catalog/{version}"),
                sku: sku.clone(),
                name: name.clone(),
                attributes: attributes.clone(),
                version: u64::try_from(version).unwrap_or(0),
                occurred_at_ms: now,
            });
            p.session
                .execute_unpaged(
                    &p.st.insert_marker,
                    (shard_of(sku.as_str(), CATALOG), sku.as_str(), CATALOG, now),
                )
                .await
                .map_err(|e| db_error("write outbox marker", e))?;
            let mut batch =
                scylla::statement::batch::Batch::new(scylla::statement::batch::BatchType::Logged);
            batch.append_statement(p.st.write_catalog.clone());
            batch.append_statement(p.st.insert_outbox.clone());
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
            match p.session.batch(&batch, values).await {
                Ok(r) => {
                    if Rows::from(r)?.applied()? {
                        p.committed(sku.as_str(), CATALOG);
                        return Ok(SkuCatalog {
                            sku,
                            name,
                            attributes,
                            version: u64::try_from(version).unwrap_or(0),
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
        let p = self.p();
        let rows = p
            .session
            .execute_unpaged(&p.st.get_location, (id.as_str(),))
            .await
            .map_err(|e| db_error("load location", e))?;
        let rows = Rows::from(rows)?;
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
        let p = self.p();
        let keys = match saga::locate(p, id).await? {
            // A saga that is not active yet (or is being rolled back) does not exist for
            // clients.
            saga::Located::Saga(h) if matches!(h.status.as_str(), "pending" | "aborting") => {
                return Ok(None);
            }
            saga::Located::Saga(h) => return Ok(Some(h.reservation)),
            saga::Located::Lines(keys) => keys,
        };
        let lines = saga::single_lines(p, id, keys).await?;
        let mut found: Option<Reservation> = None;
        for (_, line) in lines {
            found = Some(match found {
                None => line,
                Some(mut r) => {
                    r.lines.extend(line.lines);
                    r
                }
            });
        }
        Ok(found)
    }

    async fn stock_level(&self, key: &StockKey) -> Result<Option<StockLevel>> {
        Ok(self.p().level(key).await?.filter(|l| l.version > 0))
    }

    async fn all_stock_levels(&self) -> Result<Vec<StockLevel>> {
        use futures::StreamExt;
        let p = self.p();
        let mut out = Vec::new();
        let mut pager = p
            .session
            .execute_iter(p.st.all_levels.clone(), ())
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

    async fn expire_due(&self, now_ms: i64, limit: usize) -> Result<ExpiryRound> {
        super::expiry::expire_due(self, self.p(), &self.deadline_floor, now_ms, limit).await
    }

    async fn purge(&self, _what: Purge, _before_ms: i64, _limit: usize) -> Result<usize> {
        // Idempotency records and final reservations carry a TTL; the database removes
        // them.
        Ok(0)
    }

    async fn check_ready(&self) -> Result<()> {
        // Also catches a keyspace migrated by another build while we run.
        super::schema::check_schema(&self.p().session, &self.keyspace).await
    }
}
