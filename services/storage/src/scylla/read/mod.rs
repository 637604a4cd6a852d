//! The ScyllaDB read store: read models written by [`project`] (rows the domain builds,
//! written `USING TIMESTAMP <version>`), catalog search ([`search`]), the dead-letter queue
//! ([`letters`]), consumer offsets, and the queries the API serves.

mod changes;
mod letters;
mod project;
mod rebuild;
mod search;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt;
use scylla::client::session::Session;
use serde::{Deserialize, Serialize};
use stockflow_domain::read_model::{
    Flow, InventoryRow, LocationShare, Movement, MovementDetail, Provenance,
};
use stockflow_domain::{Actor, BusEvent, Quantities};

use super::cql::errors::{cql, unreadable};
use super::cql::query;
use super::cql::read_statements::ReadStatements;
use super::cql::rows::{
    ConsumerOffsetRow, InventoryReadRow, MovementRow, OffsetRow, RegionRow, ShareRow,
};
use crate::Result;
use crate::ports::{
    Batch, ChangeSnapshot, Changes, ConsumerOffset, DeadLetter, EXPORT_CHUNK_ROWS, ExportChunk,
    ReadStore, RegionAvailability, SearchHit, SearchQuery,
};

/// Most movements one page returns: a page of audit history, not a dump.
const MAX_MOVEMENTS_PAGE: usize = 1000;

/// Regions each SKU is known to have in `regions_by_sku`, and how many pairs that is.
#[derive(Default)]
struct KnownRegions {
    by_sku: HashMap<String, HashSet<String>>,
    pairs: usize,
}

/// The ScyllaDB read store.
pub struct ScyllaReadStore {
    session: Arc<Session>,
    st: ReadStatements,
    /// `(sku, region)` rows known to be in `regions_by_sku`. Nothing deletes those rows, so
    /// an event for a SKU in a region seen before has nothing to add there.
    known_regions: Mutex<KnownRegions>,
    /// The change feed's statements.
    feed: changes::FeedStatements,
    /// The keyspace, for truncating the stock views before a rebuild.
    keyspace: String,
}

/// A version or offset as a CQL bigint (and a write timestamp): they never get near 2^63.
fn timestamp(version: u64) -> i64 {
    i64::try_from(version).unwrap_or(i64::MAX)
}

/// The states of a read-model row beyond on-hand and reserved, kept as one document
/// (rows written before schema 9 have none: zeros, nothing expected).
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct States {
    #[serde(default)]
    damaged: i64,
    #[serde(default)]
    quality_hold: i64,
    #[serde(default)]
    safety_stock: i64,
    #[serde(default)]
    flow: Flow,
}

impl States {
    /// The states of `row`.
    pub(super) fn of(row: &InventoryRow) -> Self {
        Self {
            damaged: row.damaged,
            quality_hold: row.quality_hold,
            safety_stock: row.safety_stock,
            flow: row.flow.clone(),
        }
    }

    /// The stored form: null when there is nothing beyond on-hand and reserved.
    pub(super) fn stored(&self) -> Option<String> {
        if *self == States::default() {
            return None;
        }
        serde_json::to_string(self).ok()
    }

    /// Reads the stored form back.
    fn read(stored: Option<&str>) -> Result<Self> {
        match stored {
            None | Some("") => Ok(Self::default()),
            Some(text) => {
                serde_json::from_str(text).map_err(crate::StoreError::corrupt("read-model states"))
            }
        }
    }

    /// The quantities with `on_hand` and `reserved`.
    fn quantities(&self, on_hand: Option<i64>, reserved: Option<i64>) -> Quantities {
        Quantities {
            on_hand: on_hand.unwrap_or(0),
            reserved: reserved.unwrap_or(0),
            damaged: self.damaged,
            quality_hold: self.quality_hold,
            safety_stock: self.safety_stock,
        }
    }
}

/// A stored row of `inventory_by_sku_location`, through the domain.
/// Rows in `(sku, location)` order.
fn by_key(rows: &mut [InventoryRow]) {
    rows.sort_by(|a, b| (&a.sku, &a.location).cmp(&(&b.sku, &b.location)));
}

fn inventory(row: InventoryReadRow) -> Result<InventoryRow> {
    let states = States::read(row.states.as_deref())?;
    Ok(InventoryRow::stored(
        (row.sku, row.location, row.region.unwrap_or_default()),
        states.quantities(row.on_hand, row.reserved),
        states.flow,
        u64::try_from(row.version.unwrap_or(0)).unwrap_or(0),
        row.as_of.unwrap_or(0),
    ))
}

fn movement(r: MovementRow) -> Result<Movement> {
    let detail = MovementDetail::from_stored(r.detail.as_deref())
        .map_err(crate::StoreError::corrupt("movement detail"))?;
    Ok(Movement {
        sku: r.sku,
        location: r.location,
        version: u64::try_from(r.version).unwrap_or(0),
        kind: r.kind.unwrap_or_default(),
        on_hand: r.on_hand.unwrap_or(0),
        reserved: r.reserved.unwrap_or(0),
        reservation_id: r.reservation_id,
        reason: r.reason,
        reference: r.reference,
        actor: r.actor_subject.map(|subject| Actor {
            subject,
            client_id: r.actor_client_id,
            store: None,
        }),
        idempotency_key: r.idempotency_key,
        occurred_at_ms: r.occurred_at.unwrap_or(0),
        detail,
        projection: match (
            r.bus_partition,
            r.bus_offset,
            r.projected_at,
            r.projected_by,
        ) {
            (Some(partition), Some(offset), Some(projected_at_ms), Some(projected_by)) => {
                Some(Provenance {
                    partition: u32::try_from(partition).unwrap_or(0),
                    offset: u64::try_from(offset).unwrap_or(0),
                    projected_at_ms,
                    projected_by,
                })
            }
            _ => None,
        },
    })
}

impl ScyllaReadStore {
    /// Every inventory row, page by page, in token order.
    async fn scan_inventory(
        &self,
    ) -> Result<impl futures::Stream<Item = Result<InventoryRow>> + use<>> {
        let pager = self
            .session
            .execute_iter(self.st.all_inventory.clone(), ())
            .await
            .map_err(unreadable("scan inventory"))?
            .rows_stream::<InventoryReadRow>()
            .map_err(unreadable("scan inventory"))?;
        Ok(pager.map(|row| inventory(row.map_err(unreadable("scan inventory"))?)))
    }

    /// Prepares every statement on `session` for `keyspace`.
    pub async fn new(session: Arc<Session>, keyspace: &str) -> Result<Self> {
        let st = ReadStatements::prepare(&session, keyspace).await?;
        let feed = changes::FeedStatements::prepare(&session, keyspace).await?;
        Ok(Self {
            session,
            st,
            known_regions: Mutex::default(),
            feed,
            keyspace: keyspace.to_string(),
        })
    }

    /// The availability of `sku` in each of `regions` (every region it has rows in when
    /// `None`), summed over the locations' rows by the domain.
    async fn region_totals(
        &self,
        sku: &str,
        region: Option<&str>,
    ) -> Result<Vec<RegionAvailability>> {
        let regions: Vec<String> = match region {
            Some(r) => vec![r.to_string()],
            None => {
                let rows: Vec<RegionRow> =
                    query::rows(&self.session, "read regions", &self.st.regions, (sku,)).await?;
                rows.into_iter().map(|r| r.region).collect()
            }
        };
        let mut out = Vec::new();
        for region in regions {
            let shares: Vec<ShareRow> = query::rows(
                &self.session,
                "read availability",
                &self.st.region_rows,
                (sku, region.as_str()),
            )
            .await?;
            let shares = shares
                .into_iter()
                .map(|s| {
                    let states = States::read(s.states.as_deref())?;
                    Ok(LocationShare {
                        quantities: states.quantities(s.on_hand, s.reserved),
                        flow: states.flow,
                        as_of_ms: s.as_of.unwrap_or(0),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            if let Some(total) = RegionAvailability::over(sku, &region, shares) {
                out.push(total);
            }
        }
        out.sort_by(|a, b| a.region.cmp(&b.region));
        Ok(out)
    }
}

#[async_trait]
impl ReadStore for ScyllaReadStore {
    async fn project(&self, batch: Batch<'_>) -> Result<()> {
        // Without cross-table transactions the offset follows the writes: a crash in
        // between re-applies events, which the timestamps make harmless.
        self.apply_all(batch.events, Some(&batch)).await?;
        self.reset_offset(batch.consumer, batch.partition, batch.next_offset())
            .await
    }

    async fn replay(&self, events: &[BusEvent]) -> Result<()> {
        self.apply_all(events, None).await
    }

    async fn clear_stock_views(&self) -> Result<()> {
        self.truncate_stock_views().await
    }

    async fn restore_stock(&self, rows: &[InventoryRow]) -> Result<()> {
        self.write_restored(rows).await
    }

    async fn dead_letter(&self, letter: DeadLetter, next_offset: u64) -> Result<()> {
        self.write_letter(&letter).await?;
        self.reset_offset(&letter.consumer, letter.partition, next_offset)
            .await
    }

    async fn offset(&self, consumer: &str, partition: u32) -> Result<u64> {
        let row: Option<OffsetRow> = query::first(
            &self.session,
            "read offset",
            &self.st.get_offset,
            (consumer, i32::try_from(partition).unwrap_or(i32::MAX)),
        )
        .await?;
        Ok(row
            .and_then(|r| r.next_offset)
            .and_then(|o| u64::try_from(o).ok())
            .unwrap_or(0))
    }

    async fn reset_offset(&self, consumer: &str, partition: u32, offset: u64) -> Result<()> {
        query::exec(
            &self.session,
            "store offset",
            &self.st.store_offset,
            (
                consumer,
                i32::try_from(partition).unwrap_or(i32::MAX),
                timestamp(offset),
            ),
        )
        .await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        self.oldest_letters(limit).await
    }

    async fn remove_dead_letter(&self, id: i64) -> Result<bool> {
        self.remove_letter(id).await
    }

    async fn purge_dead_letters(&self, before_ms: i64, limit: usize) -> Result<usize> {
        self.purge_letters(before_ms, limit).await
    }

    async fn movements(
        &self,
        sku: &str,
        location: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Movement>> {
        let limit = i32::try_from(limit.clamp(1, MAX_MOVEMENTS_PAGE)).unwrap_or(i32::MAX);
        let rows: Vec<MovementRow> = query::rows(
            &self.session,
            "read movements",
            &self.st.movements,
            (sku, location, timestamp(after), limit),
        )
        .await?;
        rows.into_iter().map(movement).collect()
    }

    async fn purge_movements(&self, _before_ms: i64, _limit: usize) -> Result<usize> {
        // The table's default TTL (90 days) expires movements on ScyllaDB.
        Ok(0)
    }

    async fn dead_letter_count(&self) -> Result<u64> {
        self.count_letters().await
    }

    async fn stock_by_sku(&self, sku: &str) -> Result<Vec<InventoryRow>> {
        let rows: Vec<InventoryReadRow> =
            query::rows(&self.session, "read stock", &self.st.stock_by_sku, (sku,)).await?;
        rows.into_iter().map(inventory).collect()
    }

    async fn stock_at(&self, sku: &str, location: &str) -> Result<Option<InventoryRow>> {
        let row: Option<InventoryReadRow> = query::first(
            &self.session,
            "read stock",
            &self.st.stock_at,
            (sku, location),
        )
        .await?;
        row.map(inventory).transpose()
    }

    async fn availability(
        &self,
        sku: &str,
        region: Option<&str>,
    ) -> Result<Vec<RegionAvailability>> {
        self.region_totals(sku, region).await
    }

    async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>> {
        self.find(query).await
    }

    async fn consumer_offsets(&self) -> Result<Vec<ConsumerOffset>> {
        let rows: Vec<ConsumerOffsetRow> =
            query::rows(&self.session, "read offsets", &self.st.all_offsets, ()).await?;
        let mut out: Vec<ConsumerOffset> = rows
            .into_iter()
            .filter_map(|r| {
                Some(ConsumerOffset {
                    consumer: r.consumer,
                    partition: u32::try_from(r.partition).ok()?,
                    next_offset: u64::try_from(r.next_offset?).ok()?,
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.consumer, a.partition).cmp(&(&b.consumer, b.partition)));
        Ok(out)
    }

    /// Pages through the table after reading the offsets: no snapshot isolation here, so
    /// a row may be newer than the offsets (its version says so), never older. Rows come
    /// in token order per page, sorted within each chunk only.
    async fn export_stock(
        &self,
        region: Option<String>,
        sink: tokio::sync::mpsc::Sender<ExportChunk>,
    ) -> Result<()> {
        let offsets = self.consumer_offsets().await?;
        if sink.send(ExportChunk::Offsets(offsets)).await.is_err() {
            return Ok(());
        }
        let mut pager = self.scan_inventory().await?;
        let mut chunk = Vec::with_capacity(EXPORT_CHUNK_ROWS);
        while let Some(row) = pager.next().await {
            let row = row?;
            if region.as_deref().is_some_and(|r| r != row.region) {
                continue;
            }
            chunk.push(row);
            if chunk.len() == EXPORT_CHUNK_ROWS {
                let mut full = std::mem::replace(&mut chunk, Vec::with_capacity(EXPORT_CHUNK_ROWS));
                by_key(&mut full);
                if sink.send(ExportChunk::Rows(full)).await.is_err() {
                    return Ok(());
                }
            }
        }
        if !chunk.is_empty() {
            by_key(&mut chunk);
            let _ = sink.send(ExportChunk::Rows(chunk)).await;
        }
        Ok(())
    }

    async fn all_inventory(&self) -> Result<Vec<InventoryRow>> {
        let mut out = Vec::new();
        let mut pager = self.scan_inventory().await?;
        while let Some(row) = pager.next().await {
            out.push(row?);
        }
        by_key(&mut out);
        Ok(out)
    }

    async fn changes(
        &self,
        locations: &[String],
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Changes> {
        changes::page(
            &self.session,
            &self.feed,
            locations,
            cursor,
            limit.clamp(1, 1000),
        )
        .await
    }

    async fn change_snapshot(&self, locations: &[String]) -> Result<ChangeSnapshot> {
        changes::snapshot(&self.session, &self.feed, locations).await
    }

    async fn purge_changes(&self, _before_ms: i64, _limit: usize) -> Result<usize> {
        // The table's TTL expires the feed.
        Ok(0)
    }

    async fn check_ready(&self) -> Result<()> {
        self.session
            .query_unpaged("SELECT release_version FROM system.local", ())
            .await
            .map_err(cql("readiness probe"))?;
        Ok(())
    }
}
