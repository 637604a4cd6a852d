//! The ports: what the services need from storage and the bus, independent of backend.
//!
//! Shaped for both the embedded backend and the distributed one (ScyllaDB + a bus): a
//! command is one call (the adapter owns its transaction or conditional batch), outbox
//! entries are discovered and marked in batches, and read-model writes carry the consumer
//! offset they advance to, so both are stored together. The event log's port lives in
//! `stockflow-bus`.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use stockflow_domain::{
    Actor, BusEvent, Command, CommandResult, IdempotencyKey, Location, LocationGrant, LocationId,
    Reservation, ReservationId, Sku, SkuCatalog, StockEvent, StockKey, StockLevel,
};
use tokio::sync::watch;

use crate::Result;

/// The idempotency key of a client request and a fingerprint of the request itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyToken {
    /// The client's key.
    pub key: IdempotencyKey,
    /// A digest of what was asked (method, path, canonical body): the same key with a
    /// different fingerprint is a client bug, refused with `idempotency_key_reused`.
    pub fingerprint: String,
}

/// A command with the context the write side records with it.
#[derive(Debug, Clone)]
pub struct CommandRequest {
    /// What to do.
    pub command: Command,
    /// Present for client requests; internal commands (expiry) carry none.
    pub idempotency: Option<IdempotencyToken>,
    /// W3C `traceparent` to stamp on the events.
    pub trace_context: Option<String>,
    /// Who asked, recorded in the events (audit); `None` for internal commands.
    pub actor: Option<Actor>,
    /// Where the caller may change stock. The store hands it to the domain's decision,
    /// which checks it against the state loaded for that decision (a settlement: the
    /// reservation's lines as they are when it is decided), so no check runs apart from the
    /// command. [`LocationGrant::Any`] for central callers and internal commands.
    pub grant: LocationGrant,
}

/// What executing a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    /// The answer for the client.
    pub result: CommandResult,
    /// True when the idempotency key had already been applied and this is the stored answer.
    pub replayed: bool,
    /// Events written to the outbox by this call (0 for a replay or a no-op).
    pub events: usize,
}

/// The write side: commands with optimistic concurrency, idempotency and an outbox.
#[async_trait]
pub trait WriteStore: Send + Sync + 'static {
    /// Applies a command at most once per idempotency key: state, reservation, outbox
    /// entries and idempotency record are written together or not at all.
    async fn execute(&self, request: CommandRequest) -> Result<CommandOutcome>;
    /// Creates or updates a location. Its region cannot change.
    async fn put_location(&self, location: Location) -> Result<Location>;
    /// Creates or updates a SKU's catalog data; publishes a catalog event.
    async fn put_sku(
        &self,
        sku: Sku,
        name: String,
        attributes: BTreeMap<String, String>,
    ) -> Result<SkuCatalog>;
    /// A location, if defined.
    async fn location(&self, id: &LocationId) -> Result<Option<Location>>;
    /// A reservation, if it exists.
    async fn reservation(&self, id: &ReservationId) -> Result<Option<Reservation>>;
    /// The write-side state of one key, if it was ever written.
    async fn stock_level(&self, key: &StockKey) -> Result<Option<StockLevel>>;
    /// Every stock level (used by tests and consistency checks; not on a hot path).
    async fn all_stock_levels(&self) -> Result<Vec<StockLevel>>;
    /// One round of expiry: expires active reservations whose deadline has passed by
    /// `now_ms`, at most `limit` of them (soonest first, through the domain's decision for
    /// `Command::Expire`), and tells when the next deadline falls. Only `limit` deadlines
    /// are ever held in memory; callers repeat while [`ExpiryRound::full`] and otherwise
    /// sleep until [`ExpiryRound::next_deadline_ms`].
    async fn expire_due(&self, now_ms: i64, limit: usize) -> Result<ExpiryRound>;
    /// Removes at most `limit` rows of `what` older than `before_ms`, oldest first, and
    /// returns how many: one small batch, so commands queue behind it for milliseconds
    /// only; callers repeat while full batches come back. Stores whose rows expire by TTL
    /// remove nothing.
    async fn purge(&self, what: Purge, before_ms: i64, limit: usize) -> Result<usize>;
    /// How many rows each table that retention bounds holds now, by table name. Stores
    /// whose rows expire by TTL report nothing.
    async fn retained(&self) -> Result<Vec<(&'static str, u64)>> {
        Ok(Vec::new())
    }
    /// Succeeds when the store can take commands.
    async fn check_ready(&self) -> Result<()>;
    /// Why this store has stopped for good, if it has: after a failed fsync what is on
    /// disk is unknown, so the process must exit and start again from the disk. Stores
    /// without local files never stop this way.
    fn fatal_error(&self) -> Option<String> {
        None
    }
}

/// What one [`WriteStore::expire_due`] round did.
#[derive(Debug, Default)]
pub struct ExpiryRound {
    /// Reservations this round expired. (A multi-line reservation that two replicas
    /// expire at once is finished by both, each settling some lines, and counted by each.)
    pub expired: usize,
    /// Due entries whose reservation was already settled or expired (by another replica,
    /// or a settle racing the deadline).
    pub already_final: usize,
    /// Due reservations the store could not expire this round; they stay due.
    pub failed: usize,
    /// The first of those failures.
    pub last_error: Option<crate::StoreError>,
    /// The soonest deadline still ahead that the round saw, if any.
    pub next_deadline_ms: Option<i64>,
    /// True when the round stopped at its limit: more may be due now.
    pub full: bool,
}

impl ExpiryRound {
    /// Records a deadline still ahead.
    pub fn note_deadline(&mut self, at_ms: i64) {
        self.next_deadline_ms = Some(self.next_deadline_ms.map_or(at_ms, |t| t.min(at_ms)));
    }
}

/// Rows that retention removes from a write store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purge {
    /// Idempotency records (answers of past commands), by when they were written.
    IdempotencyRecords,
    /// Confirmed, released and expired reservations, by when they became final.
    FinalReservations,
}

/// One outbox entry waiting to be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Opaque position in the outbox, used to mark it published.
    pub id: String,
    /// The record key (the SKU).
    pub key: String,
    /// The serialized [`BusEvent`].
    pub payload: Vec<u8>,
    /// When the change happened, Unix milliseconds.
    pub created_at_ms: i64,
}

/// The transactional outbox, drained by the publisher (at least once).
///
/// An outbox is split into [`Outbox::shards`] shards, so several publisher replicas can
/// share it: each reads only the shards it holds a lease on. A key's entries are always in
/// one shard, so one publisher at a time keeps them in order.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// How many shards the outbox has (1 when one publisher does all the work).
    fn shards(&self) -> u32 {
        1
    }
    /// The oldest unpublished entries, at most `limit`, in commit order per key.
    async fn pending(&self, limit: usize) -> Result<Vec<OutboxEntry>>;
    /// [`Outbox::pending`], restricted to the entries of `shards`.
    async fn pending_in(&self, shards: &BTreeSet<u32>, limit: usize) -> Result<Vec<OutboxEntry>> {
        if shards.contains(&0) {
            self.pending(limit).await
        } else {
            Ok(Vec::new())
        }
    }
    /// Marks entries published; marking an already-marked entry is a no-op.
    async fn mark_published(&self, ids: &[String]) -> Result<()>;
    /// How many entries wait to be published.
    async fn backlog(&self) -> Result<u64>;
    /// Ticks after commits that wrote outbox entries. A hint for low latency: the
    /// publisher marks the value seen before it reads, and still polls on a timer.
    fn subscribe(&self) -> watch::Receiver<u64>;
}

/// One row of `inventory_by_sku_location`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryRow {
    /// SKU.
    pub sku: String,
    /// Location.
    pub location: String,
    /// Region of the location.
    pub region: String,
    /// On hand.
    pub on_hand: i64,
    /// Reserved.
    pub reserved: i64,
    /// On hand minus reserved.
    pub available: i64,
    /// The write-side version this row reflects.
    pub version: u64,
    /// When the reflected change happened, Unix milliseconds.
    pub as_of_ms: i64,
}

/// One row of `availability_by_region`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionAvailability {
    /// SKU.
    pub sku: String,
    /// Region.
    pub region: String,
    /// Sum of on hand over the region's locations.
    pub on_hand: i64,
    /// Sum of reserved.
    pub reserved: i64,
    /// Sum of available.
    pub available: i64,
    /// Locations with a row for this SKU.
    pub locations: u64,
    /// Latest change reflected, Unix milliseconds.
    pub as_of_ms: i64,
}

/// One search hit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchHit {
    /// SKU.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Catalog attributes.
    pub attributes: BTreeMap<String, String>,
    /// Available units (in `region` if the query named one, else everywhere).
    pub available: i64,
}

/// A search query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchQuery {
    /// Free text, matched against name and attributes (every word must match a prefix).
    pub text: String,
    /// Only SKUs with available stock.
    pub in_stock: bool,
    /// Restrict availability to one region.
    pub region: Option<String>,
    /// At most this many hits.
    pub limit: usize,
}

/// An event the projector gave up on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// DLQ id.
    pub id: i64,
    /// The consumer that failed.
    pub consumer: String,
    /// Where the record was.
    pub partition: u32,
    /// Its offset.
    pub offset: u64,
    /// Its key.
    pub key: String,
    /// Its payload, as text (lossy for binary payloads).
    pub payload: String,
    /// The last error.
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
    /// When it was dead-lettered, Unix milliseconds.
    pub failed_at_ms: i64,
}

/// One change of one key in the movement history (audit): what happened, why, who asked,
/// and the levels it left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Movement {
    /// SKU.
    pub sku: String,
    /// Location.
    pub location: String,
    /// The key's version after the change.
    pub version: u64,
    /// The event type (`stock_adjusted`, `stock_reserved`, ...).
    pub kind: String,
    /// On hand after the change.
    pub on_hand: i64,
    /// Reserved after the change.
    pub reserved: i64,
    /// The reservation involved.
    pub reservation_id: Option<String>,
    /// Why on-hand changed (adjustments).
    pub reason: Option<String>,
    /// The command's external reference.
    pub reference: Option<String>,
    /// Who asked.
    pub actor: Option<Actor>,
    /// The client's Idempotency-Key.
    pub idempotency_key: Option<String>,
    /// When, Unix milliseconds.
    pub occurred_at_ms: i64,
    /// Where the event was read from and who applied it, at its latest projection; absent
    /// for a replayed dead letter (and rows projected before this was recorded).
    pub projection: Option<Provenance>,
}

/// The bus record an event was projected from and the replica that applied it: the last
/// legs of one command's path (`stockflow trace`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// The log partition.
    pub partition: u32,
    /// The record's offset in it.
    pub offset: u64,
    /// When the read models applied it, Unix milliseconds.
    pub projected_at_ms: i64,
    /// The projector replica (its lease member name: pod, pid, start).
    pub projected_by: String,
}

/// Records of one partition for [`ReadStore::project`]: `events[i]` is the record at
/// offset `first_offset + i`.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// The consumer whose offset moves.
    pub consumer: &'a str,
    /// The replica applying the batch, recorded in each movement's [`Provenance`].
    pub replica: &'a str,
    /// The log partition.
    pub partition: u32,
    /// Offset of `events[0]`.
    pub first_offset: u64,
    /// The decoded records, contiguous.
    pub events: &'a [BusEvent],
}

impl Batch<'_> {
    /// The offset the consumer reads next once the batch is applied.
    pub fn next_offset(&self) -> u64 {
        self.first_offset + self.events.len() as u64
    }

    /// The provenance of `events[index]`, applied at `now_ms`.
    pub fn provenance(&self, index: usize, now_ms: i64) -> Provenance {
        Provenance {
            partition: self.partition,
            offset: self.first_offset + index as u64,
            projected_at_ms: now_ms,
            projected_by: self.replica.to_string(),
        }
    }
}

impl Movement {
    /// The movement an event records.
    pub fn of(e: &StockEvent) -> Self {
        Self {
            sku: e.sku.to_string(),
            location: e.location.to_string(),
            version: e.version,
            kind: e.kind.as_str().to_string(),
            on_hand: e.on_hand,
            reserved: e.reserved,
            reservation_id: e.reservation_id.as_ref().map(ToString::to_string),
            reason: e.reason.map(|r| r.as_str().to_string()),
            reference: e.reference.clone(),
            actor: e.actor.clone(),
            idempotency_key: e
                .idempotency_key
                .as_deref()
                .map(|k| stockflow_domain::IdempotencyKey::client_part(k).to_string()),
            occurred_at_ms: e.occurred_at_ms,
            projection: None,
        }
    }
}

/// The read side: read models, consumer offsets and the DLQ.
#[async_trait]
pub trait ReadStore: Send + Sync + 'static {
    /// Applies a batch's events and advances its consumer's offset for its partition to
    /// [`Batch::next_offset`], in one atomic step. Each event is applied only if newer than
    /// what the read models hold, so re-applying is harmless; its movement records where
    /// it was read and by whom.
    async fn project(&self, batch: Batch<'_>) -> Result<()>;
    /// Applies events without moving any offset (replaying a dead letter).
    async fn replay(&self, events: &[BusEvent]) -> Result<()>;
    /// Records a poison record in the DLQ and advances the offset past it, atomically.
    async fn dead_letter(&self, letter: DeadLetter, next_offset: u64) -> Result<()>;
    /// The next offset `consumer` should read from `partition` (0 if never stored).
    async fn offset(&self, consumer: &str, partition: u32) -> Result<u64>;
    /// Sets a consumer's offset (used to replay the log).
    async fn reset_offset(&self, consumer: &str, partition: u32, offset: u64) -> Result<()>;
    /// Dead letters, oldest first.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>>;
    /// Removes a dead letter (after a successful replay).
    async fn remove_dead_letter(&self, id: i64) -> Result<bool>;
    /// Removes at most `limit` dead letters written before `before_ms`, oldest first;
    /// returns how many.
    async fn purge_dead_letters(&self, before_ms: i64, limit: usize) -> Result<usize>;
    /// How many dead letters are held.
    async fn dead_letter_count(&self) -> Result<u64>;
    /// Every location of a SKU.
    async fn stock_by_sku(&self, sku: &str) -> Result<Vec<InventoryRow>>;
    /// One location of a SKU.
    async fn stock_at(&self, sku: &str, location: &str) -> Result<Option<InventoryRow>>;
    /// Availability of a SKU per region (one region if given).
    async fn availability(
        &self,
        sku: &str,
        region: Option<&str>,
    ) -> Result<Vec<RegionAvailability>>;
    /// Catalog search.
    async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>>;
    /// The change history of one key, oldest first: at most `limit` movements with a
    /// version above `after`.
    async fn movements(
        &self,
        sku: &str,
        location: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Movement>>;
    /// Removes at most `limit` movements that happened before `before_ms`; returns how
    /// many (0 where the store expires them itself).
    async fn purge_movements(&self, before_ms: i64, limit: usize) -> Result<usize>;
    /// Every inventory row (tests and consistency checks).
    async fn all_inventory(&self) -> Result<Vec<InventoryRow>>;
    /// Succeeds when queries can be served.
    async fn check_ready(&self) -> Result<()>;
}

/// Leases that give each shard of a piece of work (outbox shards, topic partitions) to one
/// live replica at a time. A lease expires `ttl` after it was last taken or renewed, so
/// the shards of a replica that died move to the others.
#[async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// Takes `shard` of `group` for `owner` if nobody holds it; true when `owner` holds it
    /// now.
    async fn acquire(&self, group: &str, shard: u32, owner: &str, ttl_secs: u32) -> Result<bool>;
    /// Extends `owner`'s lease; false when it lost the lease (expired and taken by another).
    async fn renew(&self, group: &str, shard: u32, owner: &str, ttl_secs: u32) -> Result<bool>;
    /// Gives `shard` up if `owner` holds it.
    async fn release(&self, group: &str, shard: u32, owner: &str) -> Result<()>;
    /// Records that `member` is alive and competing for `group`'s shards, for `ttl`.
    async fn heartbeat(&self, group: &str, member: &str, ttl_secs: u32) -> Result<()>;
    /// The members of `group` that sent a heartbeat within its `ttl`.
    async fn members(&self, group: &str) -> Result<Vec<String>>;
}
