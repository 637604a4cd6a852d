//! The read side's port: read models, consumer offsets and the DLQ. The rows are built by
//! `stockflow_domain::read_model`, which both read stores call.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use stockflow_domain::BusEvent;
pub use stockflow_domain::read_model::{InventoryRow, Movement, Provenance, RegionAvailability};

use crate::Result;

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

/// What the change feed answers from a cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// The rows of the asked locations that changed after the cursor, in the order they
    /// changed (each key's in version order), and the cursor to go on from.
    Page {
        /// The rows as they are after each change.
        rows: Vec<InventoryRow>,
        /// Where the next page starts.
        cursor: String,
    },
    /// The feed no longer holds what follows the cursor (retention passed it): load the
    /// snapshot and follow from its cursor.
    Expired,
    /// The cursor is not one this store gave out.
    BadCursor(String),
}

/// The shape every change-feed cursor has (the HTTP schema documents it): `e:<seq>` from
/// the embedded store, `s:<timeuuid>` or `s@<unix ms>` from ScyllaDB.
pub const CHANGE_CURSOR_PATTERN: &str = "^(e:[0-9]{1,18}|s@[0-9]{1,15}|s:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-1[0-9a-fA-F]{3}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$";

/// A change-feed cursor, parsed. One type for both backends so a cursor of the other one
/// (a region moved from the embedded store to ScyllaDB) is told apart from garbage: it
/// reads as expired, and the agent reloads the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeCursor {
    /// The embedded feed: after this sequence number.
    Embedded(i64),
    /// The ScyllaDB feed: after this row (a version-1 UUID).
    ScyllaRow(uuid::Uuid),
    /// The ScyllaDB feed: after everything written at or before these Unix milliseconds.
    ScyllaTime(i64),
}

impl ChangeCursor {
    /// The cursor `text` spells, if it has the shape of one.
    pub fn parse(text: &str) -> Option<Self> {
        let digits = |s: &str, max: usize| {
            (!s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<i64>().ok())
                .flatten()
        };
        if let Some(seq) = text.strip_prefix("e:") {
            return digits(seq, 18).map(Self::Embedded);
        }
        if let Some(ms) = text.strip_prefix("s@") {
            return digits(ms, 15).map(Self::ScyllaTime);
        }
        let id: uuid::Uuid = text.strip_prefix("s:")?.parse().ok()?;
        // Only the hyphenated form the feed writes (uuid also parses braces and URNs).
        (text.len() == 38 && id.get_version_num() == 1).then_some(Self::ScyllaRow(id))
    }
}

impl std::fmt::Display for ChangeCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Embedded(seq) => write!(f, "e:{seq}"),
            Self::ScyllaRow(id) => write!(f, "s:{}", id.hyphenated()),
            Self::ScyllaTime(ms) => write!(f, "s@{ms}"),
        }
    }
}

/// Every row of some locations, and the feed's cursor from which changes after it follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeSnapshot {
    /// The rows.
    pub rows: Vec<InventoryRow>,
    /// The feed's cursor as of the snapshot (changes at or before it may come again:
    /// they are version-guarded).
    pub cursor: String,
}

/// Where a consumer stands on one partition of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerOffset {
    /// The consumer (the projector's is `read-models@<log identity>`).
    pub consumer: String,
    /// The partition.
    pub partition: u32,
    /// The next offset it reads: every record before it is in the read models.
    pub next_offset: u64,
}

/// One piece of a stock export, in the order [`ReadStore::export_stock`] sends them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportChunk {
    /// First, once: the consumer offsets the rows reflect at least. A row may also
    /// reflect later records; each row carries its key's version, so a consumer that
    /// follows the log from these offsets skips any event at or below the row's version.
    Offsets(Vec<ConsumerOffset>),
    /// Rows in (sku, location) order.
    Rows(Vec<InventoryRow>),
}

/// Rows per [`ExportChunk::Rows`].
pub const EXPORT_CHUNK_ROWS: usize = 1000;

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
    /// Empties the stock read models (rows per key, totals per region, search documents)
    /// before they are rebuilt from the write side; the movement history, the change feed,
    /// consumer offsets and dead letters stay.
    async fn clear_stock_views(&self) -> Result<()>;
    /// Writes rows rebuilt from the write side as projection writes an event's row (a
    /// row newer than the one held replaces it, region totals follow, the change feed
    /// records it), and drops each key's movements past the row's version: history a
    /// restored write side never made.
    async fn restore_stock(&self, rows: &[InventoryRow]) -> Result<()>;
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
    /// Every consumer's offset on every partition it has read.
    async fn consumer_offsets(&self) -> Result<Vec<ConsumerOffset>>;
    /// Sends the offsets, then the inventory rows (of `region`, or all) in chunks, to
    /// `sink`; stops early without error when the receiver is dropped. The offsets are read
    /// before the rows, so every record before them is in the rows.
    async fn export_stock(
        &self,
        region: Option<String>,
        sink: tokio::sync::mpsc::Sender<ExportChunk>,
    ) -> Result<()>;
    /// The change feed of `locations` after `cursor` (`None`: from the start of what is
    /// held), at most `limit` rows.
    async fn changes(
        &self,
        locations: &[String],
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Changes>;
    /// Every row of `locations`, with the feed's cursor to follow from.
    async fn change_snapshot(&self, locations: &[String]) -> Result<ChangeSnapshot>;
    /// Removes at most `limit` feed entries older than `before_ms`; returns how many (0
    /// where the store expires them itself).
    async fn purge_changes(&self, before_ms: i64, limit: usize) -> Result<usize>;
    /// Succeeds when queries can be served.
    async fn check_ready(&self) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::ChangeCursor;

    #[test]
    fn cursors_round_trip_and_garbage_does_not_parse() {
        for c in [
            ChangeCursor::Embedded(0),
            ChangeCursor::Embedded(i64::MAX / 10),
            ChangeCursor::ScyllaTime(1_733_000_000_000),
            ChangeCursor::ScyllaRow(
                "5e1b3c2a-0b7d-11ef-8000-000000000000"
                    .parse()
                    .expect("a uuid"),
            ),
        ] {
            assert_eq!(ChangeCursor::parse(&c.to_string()), Some(c));
        }
        for bad in [
            "",
            "0",
            "e:",
            "e:-1",
            "e:1x",
            "s@",
            "s@-5",
            "s:nope",
            "s:{5e1b3c2a-0b7d-11ef-8000-000000000000}",
            // A version-4 UUID is not a timeuuid.
            "s:5e1b3c2a-0b7d-41ef-8000-000000000000",
        ] {
            assert_eq!(ChangeCursor::parse(bad), None, "{bad}");
        }
    }
}
