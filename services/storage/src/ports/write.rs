//! The write side's port: commands with optimistic concurrency, idempotency and an
//! outbox, plus the catalog, expiry and retention.

use std::collections::BTreeMap;

use async_trait::async_trait;
use stockflow_domain::sourcing::Bundle;
use stockflow_domain::{
    Actor, Answer, Channel, ChannelId, Command, CommandResult, Location, LocationGrant, LocationId,
    Refusal, Reservation, ReservationId, ScopedKey, Sku, SkuCatalog, StockKey, StockLevel,
    Transfer, TransferId,
};

use crate::{Result, StoreError};

/// The idempotency key of a client request and a fingerprint of the request itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyToken {
    /// The client's key, in its caller's key space.
    pub key: ScopedKey,
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

/// What executing a command answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    /// The command's answer: its result (applied, or nothing to do), or why the domain
    /// refused it (recorded under its key where [`Refusal::is_recorded`] says so).
    pub answer: Answer<CommandResult>,
    /// True when the key had run before and this is its recorded success.
    pub replayed: bool,
    /// Events written to the outbox by this call (0 for a replay, a refusal or a no-op).
    pub events: usize,
}

impl Executed {
    /// A refused command: nothing written.
    pub fn refused(refusal: Refusal) -> Self {
        Self {
            answer: Err(refusal),
            replayed: false,
            events: 0,
        }
    }
}

/// The write side: commands with optimistic concurrency, idempotency and an outbox.
#[async_trait]
pub trait WriteStore: Send + Sync + 'static {
    /// Applies a command at most once per idempotency key: state, reservation, outbox
    /// entries and idempotency record are written together or not at all. A refusal is an
    /// answer ([`Executed::answer`]); an error means the store failed, and the same request
    /// may be sent again with the same key.
    async fn execute(&self, request: CommandRequest) -> Result<Executed>;
    /// Creates or updates a location. Its region cannot change (a refusal).
    async fn put_location(&self, location: Location) -> Result<Answer<Location>>;
    /// Creates or updates a SKU's catalog data; publishes a catalog event.
    async fn put_sku(
        &self,
        sku: Sku,
        name: String,
        attributes: BTreeMap<String, String>,
    ) -> Result<SkuCatalog>;
    /// A location, if defined.
    async fn location(&self, id: &LocationId) -> Result<Option<Location>>;
    /// Creates or replaces a sales channel as the next revision of its id.
    async fn put_channel(&self, channel: Channel) -> Result<Channel>;
    /// A sales channel, if defined.
    async fn channel(&self, id: &ChannelId) -> Result<Option<Channel>>;
    /// Creates or replaces a bundle as the next revision of its SKU.
    async fn put_bundle(&self, bundle: Bundle) -> Result<Bundle>;
    /// Every bundle (a small table: the processes keep it in memory).
    async fn bundles(&self) -> Result<Vec<Bundle>>;
    /// A reservation, if it exists.
    async fn reservation(&self, id: &ReservationId) -> Result<Option<Reservation>>;
    /// A transfer, if it exists.
    async fn transfer(&self, id: &TransferId) -> Result<Option<Transfer>>;
    /// The write-side state of one key, if it was ever written, with its SKU's policy
    /// attached (what a decision on it would see).
    async fn stock_level(&self, key: &StockKey) -> Result<Option<StockLevel>>;
    /// Every stock level (used by tests and consistency checks; not on a hot path).
    async fn all_stock_levels(&self) -> Result<Vec<StockLevel>>;
    /// Every SKU's catalog data (rebuilding the read models; not on a hot path).
    async fn all_skus(&self) -> Result<Vec<SkuCatalog>>;
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
    pub last_error: Option<StoreError>,
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
