//! The ScyllaDB write store: routes each command to its cheapest exact path.
//!
//! - An adjustment, a one-line reservation and the settlement of a one-line reservation
//!   touch one partition ([`one_partition`]): ONE conditional batch writes the level, the
//!   reservation line, the outbox row and the applied-command row (the idempotency
//!   record), and concurrent commands on one hot key share batches ([`coalesce`],
//!   [`partition`]).
//! - A reservation over several partitions, and its settlement, run as a saga whose every
//!   step is exactly-once and every intermediate state recoverable ([`saga`]).
//! - Idempotency keys: replayed from the applied-command row for one-partition commands,
//!   claimed for sagas, and fingerprinted across partitions ([`claims`]).
//! - The reservation and deadline indexes ([`deadlines`]) and expiry rounds over them
//!   ([`deadline_scan`]); the catalog ([`catalog`]); a SKU's own policy ([`sku_policy`]);
//!   reads of the state ([`lookups`]).
//!
//! The domain decides everything; this module loads state, asks it, and writes the answer.

mod backoff;
mod catalog;
mod claims;
mod coalesce;
mod deadline_scan;
pub(crate) mod deadlines;
mod definitions;
mod known;
mod lookups;
mod one_partition;
pub(crate) mod partition;
pub(crate) mod saga;
mod sku_policy;
pub(crate) mod transfer;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use scylla::client::session::Session;
use stockflow_domain::decide::{self, Settlement};
use stockflow_domain::saga::RecoveryWindow;
use stockflow_domain::sourcing::Bundle;
use stockflow_domain::{
    Answer, Channel, ChannelId, Command, EventMeta, Location, LocationId, Reservation,
    ReservationId, Sku, SkuCatalog, StockKey, StockLevel, Transfer, TransferId,
};
use tokio::sync::watch;

use super::cql::query;
use super::cql::rows::OutboxRow;
use super::cql::write_statements::WriteStatements;
use super::outbox::{OutboxLog, SHARDS};
use crate::ports::{
    CommandRequest, Executed, ExpiryRound, IdempotencyToken, Outbox, OutboxEntry, Purge, WriteStore,
};
use crate::stop::{self, Ran, Step, Stop};
use crate::{Result, now_ms};
use claims::KeyState;
pub(crate) use coalesce::Keys;
use deadline_scan::DeadlineFloor;
use partition::Partitions;
use partition::op::CmdGuard;
use saga::Located;

/// The ScyllaDB write store.
pub struct ScyllaWriteStore {
    pub(crate) keys: Keys,
    deadline_floor: DeadlineFloor,
    transfers: transfer::TransferStatements,
    transfer_floor: transfer::recovery::TransferFloor,
    keyspace: String,
}

impl ScyllaWriteStore {
    /// Prepares every statement on `session` for `keyspace`.
    pub async fn new(session: Arc<Session>, keyspace: &str) -> Result<Self> {
        Self::with_window(session, keyspace, RecoveryWindow::DEFAULT).await
    }

    /// A store whose sagas are rolled back after `recovery_ms` idle instead of the
    /// default window, so tests need not wait half a minute.
    #[cfg(test)]
    pub(crate) async fn with_recovery(
        session: Arc<Session>,
        keyspace: &str,
        recovery_ms: i64,
    ) -> Result<Self> {
        Self::with_window(session, keyspace, RecoveryWindow { ms: recovery_ms }).await
    }

    async fn with_window(
        session: Arc<Session>,
        keyspace: &str,
        window: RecoveryWindow,
    ) -> Result<Self> {
        let st = Arc::new(WriteStatements::prepare(&session, keyspace).await?);
        let transfers = transfer::TransferStatements::prepare(&session, keyspace).await?;
        let outbox = Arc::new(OutboxLog::new(session.clone(), st.clone()));
        let partitions = Partitions::new(session, st, outbox, window);
        Ok(Self {
            keys: Keys::new(Arc::new(partitions)),
            deadline_floor: DeadlineFloor::default(),
            transfers,
            transfer_floor: transfer::recovery::TransferFloor::default(),
            keyspace: keyspace.to_string(),
        })
    }

    fn p(&self) -> &Partitions {
        &self.keys.partitions
    }

    fn channel_statements(&self) -> definitions::Statements<'_> {
        let st = &self.p().st;
        definitions::Statements {
            get: &st.get_channel,
            create: &st.create_channel,
            revise: &st.revise_channel,
        }
    }

    fn bundle_statements(&self) -> definitions::Statements<'_> {
        let st = &self.p().st;
        definitions::Statements {
            get: &st.get_bundle,
            create: &st.create_bundle,
            revise: &st.revise_bundle,
        }
    }

    /// How often `pending` reads every marker of its shards. A publisher in its own process
    /// learns of new entries only this way, so this bounds its publishing delay; each scan
    /// costs one read per shard and one per partition marked.
    pub fn scan_outbox_every(&self, every: Duration) {
        self.p().outbox.scan_every(every);
    }

    /// Versions of every unpublished outbox entry of `key`, in order (audits and tests).
    pub async fn outbox_versions(&self, key: &StockKey) -> Result<Vec<u64>> {
        let p = self.p();
        let rows: Vec<OutboxRow> = query::rows(
            &p.session,
            "read partition outbox",
            &p.st.partition_outbox,
            (key.sku.as_str(), key.location.as_str(), i32::MAX),
        )
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| row.row_id.parse().ok())
            .collect())
    }

    /// Runs `command`, recording `unrecorded`'s fingerprint beside it (if any).
    async fn beside<T>(
        &self,
        unrecorded: Option<&IdempotencyToken>,
        command: impl Future<Output = T>,
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
    ) -> Step<Ran> {
        let guard = CmdGuard::of(request.idempotency.as_ref());
        let grant = &request.grant;
        let (id, how) = match &request.command {
            Command::Adjust(cmd) => {
                let adjust = one_partition::adjust(&self.keys, cmd, guard, grant, meta);
                return self.beside(unrecorded, adjust).await;
            }
            Command::Reserve(cmd) if cmd.lines.len() == 1 => {
                return one_partition::reserve_one(&self.keys, cmd, guard, unrecorded, grant, meta)
                    .await;
            }
            Command::Reserve(cmd) => {
                let saga = claims::claimed(self.p(), request, |owner| async move {
                    saga::reserve(&self.keys, cmd, &owner, grant, meta).await
                });
                return self.beside(unrecorded, saga).await;
            }
            Command::Confirm { id } => (id, Settlement::Confirm),
            Command::Release { id } => (id, Settlement::Release),
            Command::Expire { id } => (id, Settlement::Expire),
            Command::Move(cmd) => {
                let (c, g, m) = (cmd.clone(), grant.clone(), meta.clone());
                let run = one_partition::one_key(&self.keys, &cmd.key, guard, move |level| {
                    decide::move_units(level, &c, &g, &m)
                });
                return self.beside(unrecorded, run).await;
            }
            Command::ExpectIncoming(cmd) => {
                let (c, g, m) = (cmd.clone(), grant.clone(), meta.clone());
                let run = one_partition::one_key(&self.keys, &cmd.key, guard, move |level| {
                    decide::expect_incoming(level, &c, &g, &m)
                });
                return self.beside(unrecorded, run).await;
            }
            Command::CloseIncoming(cmd) => {
                let (c, g, m) = (cmd.clone(), grant.clone(), meta.clone());
                let run = one_partition::one_key(&self.keys, &cmd.key, guard, move |level| {
                    decide::close_incoming(level, &c, &g, &m)
                });
                return self.beside(unrecorded, run).await;
            }
            Command::SetAllocation(cmd) => {
                let (c, g, m) = (cmd.clone(), grant.clone(), meta.clone());
                let run = one_partition::one_key(&self.keys, &cmd.key, guard, move |level| {
                    decide::set_allocation(level, &c, &g, &m)
                });
                return self.beside(unrecorded, run).await;
            }
            Command::SetPolicy(cmd) => {
                let Some(key) = cmd.key() else {
                    let run = sku_policy::set(self.p(), cmd, guard, grant, meta);
                    return self.beside(unrecorded, run).await;
                };
                let (c, g, m) = (cmd.clone(), grant.clone(), meta.clone());
                let run = one_partition::one_key(&self.keys, &key, guard, move |level| {
                    decide::set_location_policy(level, &c, &g, &m)
                });
                return self.beside(unrecorded, run).await;
            }
            Command::CreateTransfer(_)
            | Command::ShipTransfer { .. }
            | Command::ReceiveTransfer(_)
            | Command::CancelTransfer { .. } => {
                let ctx = transfer::Ctx {
                    keys: &self.keys,
                    st: &self.transfers,
                    meta,
                };
                let saga = claims::claimed(self.p(), request, |owner| {
                    let ctx = &ctx;
                    async move {
                        match &request.command {
                            Command::CreateTransfer(cmd) => {
                                transfer::create(ctx, cmd, &owner, grant).await
                            }
                            Command::ShipTransfer { id } => {
                                transfer::ship(ctx, id, &owner, grant).await
                            }
                            Command::ReceiveTransfer(cmd) => {
                                transfer::receive(ctx, cmd, &owner, grant).await
                            }
                            Command::CancelTransfer { id } => {
                                transfer::cancel(ctx, id, &owner, grant).await
                            }
                            other => Err(Stop::Failed(crate::StoreError::Unsupported {
                                backend: "ScyllaDB",
                                command: other.name(),
                            })),
                        }
                    }
                });
                return self.beside(unrecorded, saga).await;
            }
        };
        self.beside(unrecorded, self.settle(request, id, how, guard, meta))
            .await
    }

    /// Settles reservation `id` where it lives: a saga under its claim, or its lines one
    /// partition each.
    async fn settle(
        &self,
        request: &CommandRequest,
        id: &ReservationId,
        how: Settlement,
        guard: CmdGuard,
        meta: &EventMeta,
    ) -> Step<Ran> {
        let grant = &request.grant;
        match saga::locate(self.p(), id).await? {
            Located::Saga(h) => {
                claims::claimed(self.p(), request, |_| async move {
                    saga::settle(&self.keys, h, how, grant, meta).await
                })
                .await
            }
            Located::Lines(keys) => {
                one_partition::settle_lines(&self.keys, id, keys, how, guard, grant, meta).await
            }
        }
    }
}

#[async_trait]
impl WriteStore for ScyllaWriteStore {
    async fn execute(&self, request: CommandRequest) -> Result<Executed> {
        // A command naming a location outside the caller's grant is refused before anything
        // is read or written (not kept under its key: nothing ran). A settlement's lines are
        // checked by its decision, on the state loaded for it.
        if let Err(refusal) = decide::authorize(&request.command, &request.grant) {
            return Ok(Executed::refused(refusal));
        }
        let new_key = match &request.idempotency {
            Some(token) => match claims::check_fingerprint(self.p(), token).await? {
                KeyState::Answered(refusal) => return Ok(Executed::refused(refusal)),
                KeyState::New => true,
                KeyState::Known => false,
            },
            None => false,
        };
        let meta = EventMeta {
            actor: request.actor.clone(),
            idempotency_key: request.idempotency.as_ref().map(|t| t.key.clone()),
            trace_context: request.trace_context.clone(),
            occurred_at_ms: now_ms(),
        };
        let unrecorded = request.idempotency.as_ref().filter(|_| new_key);
        let outcome = self.run(&request, unrecorded, &meta).await;
        if let (Some(token), Err(Stop::Refused(refusal))) = (&request.idempotency, &outcome)
            && refusal.is_recorded()
        {
            claims::record_refusal(self.p(), token, refusal).await?;
        }
        stop::executed(outcome)
    }

    async fn put_location(&self, location: Location) -> Result<Answer<Location>> {
        catalog::put_location(self.p(), location).await
    }

    async fn put_sku(
        &self,
        sku: Sku,
        name: String,
        attributes: BTreeMap<String, String>,
    ) -> Result<SkuCatalog> {
        catalog::put_sku(self.p(), sku, name, attributes).await
    }

    async fn location(&self, id: &LocationId) -> Result<Option<Location>> {
        catalog::location(self.p(), id).await
    }

    async fn put_channel(&self, channel: Channel) -> Result<Channel> {
        definitions::put(self.p(), &self.channel_statements(), channel).await
    }

    async fn channel(&self, id: &ChannelId) -> Result<Option<Channel>> {
        definitions::load(self.p(), &self.channel_statements(), id.as_str()).await
    }

    async fn put_bundle(&self, bundle: Bundle) -> Result<Bundle> {
        definitions::put(self.p(), &self.bundle_statements(), bundle).await
    }

    async fn bundles(&self) -> Result<Vec<Bundle>> {
        definitions::load_all(self.p(), &self.p().st.all_bundles).await
    }

    async fn reservation(&self, id: &ReservationId) -> Result<Option<Reservation>> {
        lookups::reservation(self.p(), id).await
    }

    async fn transfer(&self, id: &TransferId) -> Result<Option<Transfer>> {
        transfer::lookup(&self.keys, &self.transfers, id).await
    }

    async fn stock_level(&self, key: &StockKey) -> Result<Option<StockLevel>> {
        lookups::stock_level(self.p(), key).await
    }

    async fn all_stock_levels(&self) -> Result<Vec<StockLevel>> {
        lookups::all_stock_levels(self.p()).await
    }

    async fn all_skus(&self) -> Result<Vec<SkuCatalog>> {
        lookups::all_skus(self.p()).await
    }

    async fn expire_due(&self, now_ms: i64, limit: usize) -> Result<ExpiryRound> {
        let mut round =
            deadline_scan::expire_due(self, self.p(), &self.deadline_floor, now_ms, limit).await?;
        // Transfers left half-way are few; they ride along with the reservations' round.
        let (keys, st, floor) = (&self.keys, &self.transfers, &self.transfer_floor);
        transfer::recovery::recover_due(keys, st, floor, now_ms, limit, &mut round).await?;
        Ok(round)
    }

    async fn purge(&self, _what: Purge, _before_ms: i64, _limit: usize) -> Result<usize> {
        // Idempotency records and final reservations carry a TTL; the database removes
        // them.
        Ok(0)
    }

    async fn check_ready(&self) -> Result<()> {
        // Also catches a keyspace migrated by another build while we run.
        super::cql::schema::check_schema(&self.p().session, &self.keyspace).await
    }
}

#[async_trait]
impl Outbox for ScyllaWriteStore {
    fn shards(&self) -> u32 {
        u32::try_from(SHARDS).unwrap_or(1)
    }

    async fn pending(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        self.p().outbox.pending(None, limit).await
    }

    async fn pending_in(&self, shards: &BTreeSet<u32>, limit: usize) -> Result<Vec<OutboxEntry>> {
        self.p().outbox.pending(Some(shards), limit).await
    }

    async fn mark_published(&self, ids: &[String]) -> Result<()> {
        self.p().outbox.mark_published(ids).await
    }

    async fn backlog(&self) -> Result<u64> {
        self.p().outbox.backlog().await
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.p().outbox.subscribe()
    }
}
