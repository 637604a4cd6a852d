//! Projection into the ScyllaDB read models. The rows are built by
//! `stockflow_domain::read_model` (the embedded read store calls the same builders) and
//! written `USING TIMESTAMP <version>`: the cell with the highest timestamp wins, so
//! applying events late, out of order or twice converges on the newest version with no
//! read-before-write and no Paxos. Catalog search terms are replaced by a delete at
//! `2·version` and inserts at `2·version + 1`, so a newer catalog version always shadows
//! an older one's terms.

use std::collections::{BTreeMap, BTreeSet};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use stockflow_domain::read_model::{self, InventoryRow, Movement, Provenance};
use stockflow_domain::{BusEvent, CatalogEvent, StockEvent};

use super::search::terms_of;
use super::{KnownRegions, ScyllaReadStore, States, timestamp};
use crate::ports::Batch;
use crate::scylla::cql::query;
use crate::scylla::cql::rows::{
    DocumentRow, InventoryWrite, MovementWrite, ProjectedMovementWrite,
};
use crate::{Result, StoreError, now_ms};

/// Read-model writes of one projected batch in flight at once.
const PROJECTION_WRITES: usize = 64;
/// `(sku, region)` pairs this store wrote to `regions_by_sku` that it remembers, at most.
const KNOWN_REGIONS: usize = 100_000;

/// Keeps in `slot` the newer of its event and `e` (the domain's rule).
fn keep_newest<'e>(slot: &mut &'e StockEvent, e: &'e StockEvent) {
    if read_model::is_newer(e.version, Some(slot.version)) {
        *slot = e;
    }
}

impl InventoryWrite<'_> {
    fn of(row: &InventoryRow) -> InventoryWrite<'_> {
        InventoryWrite {
            sku: &row.sku,
            location: &row.location,
            region: &row.region,
            on_hand: row.on_hand,
            reserved: row.reserved,
            version: timestamp(row.version),
            as_of: row.as_of_ms,
            states: States::of(row).stored(),
            written_at: timestamp(row.version),
        }
    }
}

impl ScyllaReadStore {
    /// Applies `events`; `batch`, when they come from the log, says where each was read.
    /// Stock events are written together ([`Self::apply_stock`]); catalog events one by
    /// one, in order (each replaces the search terms of the one before).
    pub(super) async fn apply_all(
        &self,
        events: &[BusEvent],
        batch: Option<&Batch<'_>>,
    ) -> Result<()> {
        let now = now_ms();
        let stock: Vec<(&StockEvent, Option<Provenance>)> = events
            .iter()
            .enumerate()
            .filter_map(|(index, event)| match event {
                BusEvent::Stock(e) => Some((e, batch.map(|b| b.provenance(index, now)))),
                // A SKU's policy is audited on the bus; no read model shows it.
                BusEvent::Catalog(_) | BusEvent::Policy(_) => None,
            })
            .collect();
        self.apply_stock(&stock).await?;
        for event in events {
            if let BusEvent::Catalog(e) = event {
                self.apply_catalog(e).await?;
            }
        }
        Ok(())
    }

    /// Writes what the stock events of one batch change, concurrently: every row is
    /// written `USING TIMESTAMP <version>`, so order does not matter, and a row several
    /// events of the batch change is written once, as of the newest of them (the state the
    /// events applied one by one would leave). Movements are one row per event.
    async fn apply_stock(&self, events: &[(&StockEvent, Option<Provenance>)]) -> Result<()> {
        let mut inventory: BTreeMap<(&str, &str), &StockEvent> = BTreeMap::new();
        let mut availability: BTreeMap<(&str, &str, &str), &StockEvent> = BTreeMap::new();
        let mut regions: BTreeSet<(&str, &str)> = BTreeSet::new();
        for &(e, _) in events {
            e.validate().map_err(|source| StoreError::InvalidEvent {
                event_id: e.event_id.clone(),
                source,
            })?;
            let (sku, location, region) = (e.sku.as_str(), e.location.as_str(), e.region.as_str());
            keep_newest(inventory.entry((sku, location)).or_insert(e), e);
            keep_newest(availability.entry((sku, region, location)).or_insert(e), e);
            regions.insert((sku, region));
        }
        if let Ok(known) = self.known_regions.lock() {
            regions.retain(|&(sku, region)| !known.contains(sku, region));
        }
        let new_regions: Vec<(String, String)> = regions
            .iter()
            .map(|&(sku, region)| (sku.to_string(), region.to_string()))
            .collect();
        let inventory: Vec<InventoryRow> = inventory.into_values().map(InventoryRow::of).collect();
        let availability: Vec<InventoryRow> =
            availability.into_values().map(InventoryRow::of).collect();
        let mut writes = self.row_writes(&inventory, &availability, &regions)?;
        writes.extend(
            events
                .iter()
                .map(|(e, from)| self.record_movement(e, from.as_ref()).boxed()),
        );
        run_all(writes).await?;
        if let Ok(mut known) = self.known_regions.lock() {
            known.add(new_regions, KNOWN_REGIONS);
        }
        Ok(())
    }

    /// The writes of read-model rows: each key's row (and its change-feed entry), each
    /// location's share of its region, and the `(sku, region)` pairs not known yet. Fails
    /// only when a row does not encode for the feed.
    pub(super) fn row_writes<'a>(
        &'a self,
        inventory: &'a [InventoryRow],
        availability: &'a [InventoryRow],
        regions: &BTreeSet<(&'a str, &'a str)>,
    ) -> Result<Vec<BoxFuture<'a, Result<()>>>> {
        let mut writes: Vec<BoxFuture<'a, Result<()>>> = Vec::new();
        writes.extend(inventory.iter().map(|row| {
            let write = InventoryWrite::of(row);
            query::exec(
                &self.session,
                "project inventory",
                &self.st.upsert_inventory,
                write,
            )
            .boxed()
        }));
        writes.extend(super::changes::writes(
            &self.session,
            &self.feed,
            inventory,
        )?);
        writes.extend(availability.iter().map(|row| {
            let write = InventoryWrite::of(row);
            let st = &self.st.upsert_availability;
            query::exec(&self.session, "project availability", st, write).boxed()
        }));
        writes.extend(regions.iter().map(|&(sku, region)| {
            query::exec(
                &self.session,
                "project regions",
                &self.st.add_region,
                (sku, region),
            )
            .boxed()
        }));
        Ok(writes)
    }

    /// The event's row in the key's movement history; writing it again writes the same,
    /// apart from where it was last projected from (`from`; a replay leaves that alone).
    async fn record_movement(&self, e: &StockEvent, from: Option<&Provenance>) -> Result<()> {
        let m = Movement::of(e);
        let (subject, client_id) = match &m.actor {
            Some(a) => (Some(a.subject.as_str()), a.client_id.as_deref()),
            None => (None, None),
        };
        let detail = m.detail.to_stored();
        let row = MovementWrite {
            sku: &m.sku,
            location: &m.location,
            version: timestamp(m.version),
            kind: &m.kind,
            on_hand: m.on_hand,
            reserved: m.reserved,
            reservation_id: m.reservation_id.as_deref(),
            reason: m.reason.as_deref(),
            reference: m.reference.as_deref(),
            actor_subject: subject,
            actor_client_id: client_id,
            idempotency_key: m.idempotency_key.as_deref(),
            occurred_at: m.occurred_at_ms,
            detail: detail.as_deref(),
        };
        match from {
            None => {
                query::exec(
                    &self.session,
                    "record movement",
                    &self.st.insert_movement,
                    row,
                )
                .await
            }
            Some(p) => {
                let projected = ProjectedMovementWrite {
                    row,
                    bus_partition: i32::try_from(p.partition).unwrap_or(i32::MAX),
                    bus_offset: timestamp(p.offset),
                    projected_at: p.projected_at_ms,
                    projected_by: &p.projected_by,
                };
                query::exec(
                    &self.session,
                    "record movement",
                    &self.st.insert_projected_movement,
                    projected,
                )
                .await
            }
        }
    }

    async fn apply_catalog(&self, e: &CatalogEvent) -> Result<()> {
        let sku = e.sku.as_str();
        let current: Option<DocumentRow> = query::first(
            &self.session,
            "load search document",
            &self.st.get_document,
            (sku,),
        )
        .await?;
        let stored = current
            .as_ref()
            .and_then(|d| d.version)
            .map(|v| u64::try_from(v).unwrap_or(0));
        if !read_model::is_newer(e.version, stored) {
            return Ok(());
        }
        let old_terms = match current {
            Some(doc) => terms_of(
                &doc.name.unwrap_or_default(),
                &doc.attributes.unwrap_or_default(),
            ),
            None => BTreeSet::new(),
        };
        let new_terms = terms_of(&e.name, &e.attributes);
        let version = timestamp(e.version);
        let (delete_at, write_at) = (version * 2, version * 2 + 1);
        for term in old_terms.difference(&new_terms) {
            query::exec(
                &self.session,
                "delete search term",
                &self.st.delete_term,
                (delete_at, term.as_str(), sku),
            )
            .await?;
        }
        let inserts = new_terms.iter().map(|term| {
            query::exec(
                &self.session,
                "insert search term",
                &self.st.insert_term,
                (term.as_str(), sku, write_at),
            )
        });
        for result in futures::future::join_all(inserts).await {
            result?;
        }
        query::exec(
            &self.session,
            "upsert search document",
            &self.st.upsert_document,
            (sku, e.name.as_str(), &e.attributes, version, write_at),
        )
        .await
    }
}

/// Runs `writes`, [`PROJECTION_WRITES`] at a time; the first failure fails them all.
pub(super) async fn run_all(writes: Vec<BoxFuture<'_, Result<()>>>) -> Result<()> {
    let mut written = futures::stream::iter(writes).buffer_unordered(PROJECTION_WRITES);
    while let Some(result) = written.next().await {
        result?;
    }
    Ok(())
}

impl KnownRegions {
    /// Whether `(sku, region)` is known to have its row.
    fn contains(&self, sku: &str, region: &str) -> bool {
        self.by_sku
            .get(sku)
            .is_some_and(|regions| regions.contains(region))
    }

    /// Notes `pairs` as written, forgetting everything past `bound` pairs.
    fn add(&mut self, pairs: Vec<(String, String)>, bound: usize) {
        if self.pairs + pairs.len() > bound {
            *self = KnownRegions::default();
        }
        for (sku, region) in pairs {
            if self.by_sku.entry(sku).or_default().insert(region) {
                self.pairs += 1;
            }
        }
    }
}
