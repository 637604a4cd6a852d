//! The ScyllaDB read store.
//!
//! Read-model rows are written `USING TIMESTAMP <version>`: the cell with the highest
//! timestamp wins, so applying events late, out of order or twice converges on the newest
//! version with no read-before-write and no Paxos. Catalog search terms are replaced by a
//! delete at `2·version` and inserts at `2·version + 1`, so a newer catalog version always
//! shadows an older one's terms.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use scylla::SerializeRow;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use stockflow_domain::{Actor, BusEvent, CatalogEvent, StockEvent};

use super::cql::{Rows, db_error};
use crate::ports::{
    Batch, DeadLetter, InventoryRow, Movement, Provenance, ReadStore, RegionAvailability,
    SearchHit, SearchQuery,
};
use crate::{Result, StoreError, now_ms};

/// Longest indexed prefix of a word.
const MAX_TERM: usize = 12;
/// Candidate SKUs read per page of a search term's partition.
const SEARCH_PAGE: i32 = 256;
/// Candidates one search looks at, at most: a term shared by a million SKUs costs a
/// bounded read, at the price of fewer hits than asked when most candidates fail the filters.
const SEARCH_CANDIDATES: usize = 2_000;
/// Candidates checked at once.
const SEARCH_PARALLEL: usize = 16;
/// Read-model writes of one projected batch in flight at once.
const PROJECTION_WRITES: usize = 64;

struct Statements {
    upsert_inventory: PreparedStatement,
    upsert_availability: PreparedStatement,
    add_region: PreparedStatement,
    get_document: PreparedStatement,
    upsert_document: PreparedStatement,
    delete_term: PreparedStatement,
    insert_term: PreparedStatement,
    terms: PreparedStatement,
    store_offset: PreparedStatement,
    get_offset: PreparedStatement,
    insert_letter: PreparedStatement,
    letters: PreparedStatement,
    delete_letter: PreparedStatement,
    letters_before: PreparedStatement,
    delete_letters_through: PreparedStatement,
    count_letters: PreparedStatement,
    stock_by_sku: PreparedStatement,
    stock_at: PreparedStatement,
    regions: PreparedStatement,
    region_rows: PreparedStatement,
    all_inventory: PreparedStatement,
    insert_movement: PreparedStatement,
    insert_projected_movement: PreparedStatement,
    movements: PreparedStatement,
}

/// `(sku, region)` pairs this store wrote to `regions_by_sku` that it remembers, at most.
const KNOWN_REGIONS: usize = 100_000;

/// Regions each SKU is known to have in `regions_by_sku`, and how many pairs that is.
#[derive(Default)]
struct KnownRegions {
    by_sku: HashMap<String, HashSet<String>>,
    pairs: usize,
}

/// The ScyllaDB read store.
pub struct ScyllaReadStore {
    session: Arc<Session>,
    st: Statements,
    /// `(sku, region)` rows known to be in `regions_by_sku`. Nothing deletes those rows, so
    /// an event for a SKU in a region seen before has nothing to add there.
    known_regions: Mutex<KnownRegions>,
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Every prefix (1..=12 characters) of every word of a document.
fn terms_of(name: &str, attributes: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut text = name.to_string();
    for (k, v) in attributes {
        text.push(' ');
        text.push_str(k);
        text.push(' ');
        text.push_str(v);
    }
    let mut terms = BTreeSet::new();
    for word in words(&text) {
        for (n, (i, c)) in word.char_indices().enumerate() {
            if n >= MAX_TERM {
                break;
            }
            terms.insert(word[..i + c.len_utf8()].to_string());
        }
    }
    terms
}

fn ts(version: u64) -> i64 {
    i64::try_from(version).unwrap_or(i64::MAX)
}

impl ScyllaReadStore {
    /// Prepares every statement on `session` for `keyspace`.
    pub async fn new(session: Arc<Session>, keyspace: &str) -> Result<Self> {
        let ks = keyspace;
        let s = &session;
        let p = |cql: String| async move {
            s.prepare(cql)
                .await
                .map_err(|e| StoreError::Database(format!("prepare: {e}")))
        };
        let st = Statements {
            upsert_inventory: p(format!("INSERT INTO {ks}.inventory_by_sku_location (sku, location, region, on_hand, reserved, version, as_of) VALUES (?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?")).await?,
            upsert_availability: p(format!("INSERT INTO {ks}.availability_by_region (sku, region, location, on_hand, reserved, version, as_of) VALUES (?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?")).await?,
            add_region: p(format!("INSERT INTO {ks}.regions_by_sku (sku, region) VALUES (?, ?) USING TIMESTAMP 1")).await?,
            get_document: p(format!("SELECT name, attributes, version FROM {ks}.search_documents WHERE sku = ?")).await?,
            upsert_document: p(format!("INSERT INTO {ks}.search_documents (sku, name, attributes, version) VALUES (?, ?, ?, ?) USING TIMESTAMP ?")).await?,
            delete_term: p(format!("DELETE FROM {ks}.search_terms USING TIMESTAMP ? WHERE term = ? AND sku = ?")).await?,
            insert_term: p(format!("INSERT INTO {ks}.search_terms (term, sku) VALUES (?, ?) USING TIMESTAMP ?")).await?,
            terms: p(format!("SELECT sku FROM {ks}.search_terms WHERE term = ?")).await?,
            store_offset: p(format!("INSERT INTO {ks}.consumer_offsets (consumer, partition, next_offset) VALUES (?, ?, ?)")).await?,
            get_offset: p(format!("SELECT next_offset FROM {ks}.consumer_offsets WHERE consumer = ? AND partition = ?")).await?,
            insert_letter: p(format!("INSERT INTO {ks}.dead_letters (bucket, id, consumer, partition, record_offset, key, payload, error, attempts, failed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS")).await?,
            letters: p(format!("SELECT id, consumer, partition, record_offset, key, payload, error, attempts, failed_at FROM {ks}.dead_letters WHERE bucket = ? LIMIT ?")).await?,
            delete_letter: p(format!("DELETE FROM {ks}.dead_letters WHERE bucket = ? AND id = ? IF EXISTS")).await?,
            letters_before: p(format!("SELECT id FROM {ks}.dead_letters WHERE bucket = ? AND id < ? LIMIT ?")).await?,
            delete_letters_through: p(format!("DELETE FROM {ks}.dead_letters WHERE bucket = ? AND id <= ?")).await?,
            count_letters: p(format!("SELECT COUNT(*) AS n FROM {ks}.dead_letters WHERE bucket = ?")).await?,
            stock_by_sku: p(format!("SELECT sku, location, region, on_hand, reserved, version, as_of FROM {ks}.inventory_by_sku_location WHERE sku = ?")).await?,
            stock_at: p(format!("SELECT sku, location, region, on_hand, reserved, version, as_of FROM {ks}.inventory_by_sku_location WHERE sku = ? AND location = ?")).await?,
            regions: p(format!("SELECT region FROM {ks}.regions_by_sku WHERE sku = ?")).await?,
            region_rows: p(format!("SELECT on_hand, reserved, as_of FROM {ks}.availability_by_region WHERE sku = ? AND region = ?")).await?,
            all_inventory: p(format!("SELECT sku, location, region, on_hand, reserved, version, as_of FROM {ks}.inventory_by_sku_location")).await?,
            insert_movement: p(format!("INSERT INTO {ks}.stock_movements (sku, location, version, kind, on_hand, reserved, reservation_id, reason, reference, actor_subject, actor_client_id, idempotency_key, occurred_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")).await?,
            insert_projected_movement: p(format!("INSERT INTO {ks}.stock_movements (sku, location, version, kind, on_hand, reserved, reservation_id, reason, reference, actor_subject, actor_client_id, idempotency_key, occurred_at, bus_partition, bus_offset, projected_at, projected_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")).await?,
            movements: p(format!("SELECT sku, location, version, kind, on_hand, reserved, reservation_id, reason, reference, actor_subject, actor_client_id, idempotency_key, occurred_at, bus_partition, bus_offset, projected_at, projected_by FROM {ks}.stock_movements WHERE sku = ? AND location = ? AND version > ? ORDER BY version LIMIT ?")).await?,
        };
        Ok(Self {
            session,
            st,
            known_regions: Mutex::default(),
        })
    }

    /// `sku` as a search hit, if its document has every wanted word and it passes the
    /// query's stock filter.
    async fn search_hit(
        &self,
        sku: String,
        wanted: &[String],
        query: &SearchQuery,
    ) -> Result<Option<SearchHit>> {
        let doc = self
            .rows(
                "load search document",
                &self.st.get_document,
                (sku.as_str(),),
            )
            .await?;
        if doc.len() == 0 {
            return Ok(None);
        }
        let name = doc.text(0, "name").unwrap_or_default();
        let attributes = doc.text_map(0, "attributes");
        // Terms stop at 12 characters and only one word was looked up: confirm every word
        // against the document.
        let doc_words = words(&format!(
            "{name} {}",
            attributes
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(" ")
        ));
        if !wanted
            .iter()
            .all(|w| doc_words.iter().any(|d| d.starts_with(w.as_str())))
        {
            return Ok(None);
        }
        let available: i64 = self
            .availability(&sku, query.region.as_deref())
            .await?
            .iter()
            .map(|r| r.available)
            .sum();
        if query.in_stock && available <= 0 {
            return Ok(None);
        }
        Ok(Some(SearchHit {
            sku,
            name,
            attributes,
            available,
        }))
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

    async fn exec(
        &self,
        context: &str,
        st: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<()> {
        self.session
            .execute_unpaged(st, values)
            .await
            .map_err(|e| db_error(context, e))?;
        Ok(())
    }

    /// The inventory row of `e`'s key as of `e`.
    async fn project_inventory(&self, e: &StockEvent) -> Result<()> {
        let version = ts(e.version);
        self.exec(
            "project inventory",
            &self.st.upsert_inventory,
            (
                e.sku.as_str(),
                e.location.as_str(),
                e.region.as_str(),
                e.on_hand,
                e.reserved,
                version,
                e.occurred_at_ms,
                version,
            ),
        )
        .await
    }

    /// The availability row of `e`'s key in its region as of `e`.
    async fn project_availability(&self, e: &StockEvent) -> Result<()> {
        let version = ts(e.version);
        self.exec(
            "project availability",
            &self.st.upsert_availability,
            (
                e.sku.as_str(),
                e.region.as_str(),
                e.location.as_str(),
                e.on_hand,
                e.reserved,
                version,
                e.occurred_at_ms,
                version,
            ),
        )
        .await
    }

    /// Writes what the stock events of one batch change, concurrently: every row is
    /// written `USING TIMESTAMP <version>`, so order does not matter, and a row several
    /// events of the batch change is written once, as of the newest of them (the state the
    /// events applied one by one would leave). Movements are one row per event.
    async fn apply_stock<'e>(&self, events: &[(&'e StockEvent, Option<Provenance>)]) -> Result<()> {
        let mut inventory: BTreeMap<(&str, &str), &'e StockEvent> = BTreeMap::new();
        let mut availability: BTreeMap<(&str, &str, &str), &'e StockEvent> = BTreeMap::new();
        let mut regions: BTreeSet<(&str, &str)> = BTreeSet::new();
        for &(e, _) in events {
            e.validate().map_err(StoreError::Corrupt)?;
            let (sku, location, region) = (e.sku.as_str(), e.location.as_str(), e.region.as_str());
            let newest = |slot: &mut &'e StockEvent| {
                if e.version > slot.version {
                    *slot = e;
                }
            };
            inventory
                .entry((sku, location))
                .and_modify(newest)
                .or_insert(e);
            availability
                .entry((sku, region, location))
                .and_modify(newest)
                .or_insert(e);
            regions.insert((sku, region));
        }
        if let Ok(known) = self.known_regions.lock() {
            regions.retain(|&(sku, region)| {
                !known
                    .by_sku
                    .get(sku)
                    .is_some_and(|regions| regions.contains(region))
            });
        }
        let new_regions: Vec<(String, String)> = regions
            .iter()
            .map(|&(sku, region)| (sku.to_string(), region.to_string()))
            .collect();
        let mut writes: Vec<futures::future::BoxFuture<'_, Result<()>>> = Vec::new();
        writes.extend(
            inventory
                .into_values()
                .map(|e| self.project_inventory(e).boxed()),
        );
        writes.extend(
            availability
                .into_values()
                .map(|e| self.project_availability(e).boxed()),
        );
        writes.extend(regions.into_iter().map(|(sku, region)| {
            self.exec("project regions", &self.st.add_region, (sku, region))
                .boxed()
        }));
        writes.extend(
            events
                .iter()
                .map(|(e, from)| self.record_movement(e, from.as_ref()).boxed()),
        );
        let mut written = futures::stream::iter(writes).buffer_unordered(PROJECTION_WRITES);
        while let Some(result) = written.next().await {
            result?;
        }
        if let Ok(mut known) = self.known_regions.lock() {
            if known.pairs + new_regions.len() > KNOWN_REGIONS {
                *known = KnownRegions::default();
            }
            for (sku, region) in new_regions {
                if known.by_sku.entry(sku).or_default().insert(region) {
                    known.pairs += 1;
                }
            }
        }
        Ok(())
    }

    /// The event's row in the key's movement history; writing it again writes the same,
    /// apart from where it was last projected from (`from`; a replay leaves that alone).
    async fn record_movement(&self, e: &StockEvent, from: Option<&Provenance>) -> Result<()> {
        let m = Movement::of(e);
        let (subject, client_id) = match &m.actor {
            Some(a) => (Some(a.subject.as_str()), a.client_id.as_deref()),
            None => (None, None),
        };
        let row = MovementRow {
            sku: m.sku.as_str(),
            location: m.location.as_str(),
            version: ts(m.version),
            kind: m.kind.as_str(),
            on_hand: m.on_hand,
            reserved: m.reserved,
            reservation_id: m.reservation_id.as_deref(),
            reason: m.reason.as_deref(),
            reference: m.reference.as_deref(),
            actor_subject: subject,
            actor_client_id: client_id,
            idempotency_key: m.idempotency_key.as_deref(),
            occurred_at: m.occurred_at_ms,
        };
        match from {
            None => {
                self.exec("record movement", &self.st.insert_movement, row)
                    .await
            }
            Some(p) => {
                let projected = ProjectedMovementRow {
                    row,
                    bus_partition: i32::try_from(p.partition).unwrap_or(i32::MAX),
                    bus_offset: ts(p.offset),
                    projected_at: p.projected_at_ms,
                    projected_by: p.projected_by.as_str(),
                };
                self.exec(
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
        let current = self
            .rows("load search document", &self.st.get_document, (sku,))
            .await?;
        let old_version = current.bigint(0, "version").unwrap_or(0);
        if u64::try_from(old_version).unwrap_or(0) >= e.version {
            return Ok(());
        }
        let old_terms = if current.len() > 0 {
            terms_of(
                &current.text(0, "name").unwrap_or_default(),
                &current.text_map(0, "attributes"),
            )
        } else {
            BTreeSet::new()
        };
        let new_terms = terms_of(&e.name, &e.attributes);
        let (delete_at, write_at) = (ts(e.version) * 2, ts(e.version) * 2 + 1);
        for term in old_terms.difference(&new_terms) {
            self.exec(
                "delete search term",
                &self.st.delete_term,
                (delete_at, term.as_str(), sku),
            )
            .await?;
        }
        let inserts = new_terms.iter().map(|term| {
            self.exec(
                "insert search term",
                &self.st.insert_term,
                (term.as_str(), sku, write_at),
            )
        });
        for result in futures::future::join_all(inserts).await {
            result?;
        }
        self.exec(
            "upsert search document",
            &self.st.upsert_document,
            (sku, e.name.as_str(), &e.attributes, ts(e.version), write_at),
        )
        .await
    }

    /// Applies `events`; `batch`, when they come from the log, says where each was read.
    /// Stock events are written together ([`Self::apply_stock`]); catalog events one by
    /// one, in order (each replaces the search terms of the one before).
    async fn apply_all(&self, events: &[BusEvent], batch: Option<&Batch<'_>>) -> Result<()> {
        let now = now_ms();
        let stock: Vec<(&StockEvent, Option<Provenance>)> = events
            .iter()
            .enumerate()
            .filter_map(|(index, event)| match event {
                BusEvent::Stock(e) => Some((e, batch.map(|b| b.provenance(index, now)))),
                BusEvent::Catalog(_) => None,
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

    fn inventory_rows(rows: &Rows) -> Vec<InventoryRow> {
        (0..rows.len())
            .map(|r| {
                let on_hand = rows.bigint(r, "on_hand").unwrap_or(0);
                let reserved = rows.bigint(r, "reserved").unwrap_or(0);
                InventoryRow {
                    sku: rows.text(r, "sku").unwrap_or_default(),
                    location: rows.text(r, "location").unwrap_or_default(),
                    region: rows.text(r, "region").unwrap_or_default(),
                    on_hand,
                    reserved,
                    available: on_hand - reserved,
                    version: u64::try_from(rows.bigint(r, "version").unwrap_or(0)).unwrap_or(0),
                    as_of_ms: rows.bigint(r, "as_of").unwrap_or(0),
                }
            })
            .collect()
    }

    async fn region_total(&self, sku: &str, region: &str) -> Result<Option<RegionAvailability>> {
        let rows = self
            .rows("read availability", &self.st.region_rows, (sku, region))
            .await?;
        if rows.len() == 0 {
            return Ok(None);
        }
        let mut total = RegionAvailability {
            sku: sku.to_string(),
            region: region.to_string(),
            on_hand: 0,
            reserved: 0,
            available: 0,
            locations: 0,
            as_of_ms: 0,
        };
        for r in 0..rows.len() {
            total.on_hand += rows.bigint(r, "on_hand").unwrap_or(0);
            total.reserved += rows.bigint(r, "reserved").unwrap_or(0);
            total.locations += 1;
            total.as_of_ms = total.as_of_ms.max(rows.bigint(r, "as_of").unwrap_or(0));
        }
        total.available = total.on_hand - total.reserved;
        Ok(Some(total))
    }
}

/// A movement's columns, bound by name.
#[derive(SerializeRow)]
struct MovementRow<'a> {
    sku: &'a str,
    location: &'a str,
    version: i64,
    kind: &'a str,
    on_hand: i64,
    reserved: i64,
    reservation_id: Option<&'a str>,
    reason: Option<&'a str>,
    reference: Option<&'a str>,
    actor_subject: Option<&'a str>,
    actor_client_id: Option<&'a str>,
    idempotency_key: Option<&'a str>,
    occurred_at: i64,
}

/// A movement with where it was projected from (seventeen columns: past the driver's
/// tuples).
#[derive(SerializeRow)]
struct ProjectedMovementRow<'a> {
    #[scylla(flatten)]
    row: MovementRow<'a>,
    bus_partition: i32,
    bus_offset: i64,
    projected_at: i64,
    projected_by: &'a str,
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

    async fn dead_letter(&self, letter: DeadLetter, next_offset: u64) -> Result<()> {
        // Time-ordered (the list is oldest first) and never overwritten: the insert is
        // conditional, and a taken id moves on to the next one.
        let mut id = dead_letter_id(now_ms(), &letter);
        loop {
            let rows = self
                .rows(
                    "write dead letter",
                    &self.st.insert_letter,
                    (
                        letter_bucket(id),
                        id,
                        letter.consumer.as_str(),
                        i32::try_from(letter.partition).unwrap_or(i32::MAX),
                        ts(letter.offset),
                        letter.key.as_str(),
                        letter.payload.as_str(),
                        letter.error.as_str(),
                        i32::try_from(letter.attempts).unwrap_or(i32::MAX),
                        now_ms(),
                    ),
                )
                .await?;
            if rows.applied()? {
                break;
            }
            id += 1;
        }
        self.reset_offset(&letter.consumer, letter.partition, next_offset)
            .await
    }

    async fn offset(&self, consumer: &str, partition: u32) -> Result<u64> {
        let rows = self
            .rows(
                "read offset",
                &self.st.get_offset,
                (consumer, i32::try_from(partition).unwrap_or(i32::MAX)),
            )
            .await?;
        Ok(u64::try_from(rows.bigint(0, "next_offset").unwrap_or(0)).unwrap_or(0))
    }

    async fn reset_offset(&self, consumer: &str, partition: u32, offset: u64) -> Result<()> {
        self.exec(
            "store offset",
            &self.st.store_offset,
            (
                consumer,
                i32::try_from(partition).unwrap_or(i32::MAX),
                ts(offset),
            ),
        )
        .await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        // Each bucket is in id order: the oldest `limit` overall are among the oldest
        // `limit` of every bucket.
        let limit_i32 = i32::try_from(limit).unwrap_or(i32::MAX);
        let reads = (0..LETTER_BUCKETS)
            .map(|bucket| self.rows("read dead letters", &self.st.letters, (bucket, limit_i32)));
        let mut out = Vec::new();
        for rows in futures::future::join_all(reads).await {
            let rows = rows?;
            out.extend((0..rows.len()).map(|r| DeadLetter {
                id: rows.bigint(r, "id").unwrap_or(0),
                consumer: rows.text(r, "consumer").unwrap_or_default(),
                partition: u32::try_from(rows.bigint(r, "partition").unwrap_or(0)).unwrap_or(0),
                offset: u64::try_from(rows.bigint(r, "record_offset").unwrap_or(0)).unwrap_or(0),
                key: rows.text(r, "key").unwrap_or_default(),
                payload: rows.text(r, "payload").unwrap_or_default(),
                error: rows.text(r, "error").unwrap_or_default(),
                attempts: u32::try_from(rows.bigint(r, "attempts").unwrap_or(0)).unwrap_or(0),
                failed_at_ms: rows.bigint(r, "failed_at").unwrap_or(0),
            }));
        }
        out.sort_by_key(|l| l.id);
        out.truncate(limit);
        Ok(out)
    }

    async fn remove_dead_letter(&self, id: i64) -> Result<bool> {
        // Letters written before the buckets all live in bucket 0.
        let mut buckets = vec![letter_bucket(id)];
        if buckets[0] != 0 {
            buckets.push(0);
        }
        for bucket in buckets {
            let result = self
                .session
                .execute_unpaged(&self.st.delete_letter, (bucket, id))
                .await
                .map_err(|e| db_error("remove dead letter", e))?;
            if Rows::from(result)?.applied()? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn purge_dead_letters(&self, before_ms: i64, limit: usize) -> Result<usize> {
        // Ids are time-ordered (milliseconds in the high bits): a bucket's old letters are
        // one range of its partition, removed by one range tombstone.
        let first_kept = before_ms.saturating_mul(1 << 20);
        let limit_i32 = i32::try_from(limit).unwrap_or(i32::MAX);
        // The oldest `limit` overall are a prefix of each bucket: each bucket's share goes
        // with one range tombstone through its newest chosen id.
        let finds = (0..LETTER_BUCKETS).map(|bucket| async move {
            let rows = self
                .rows(
                    "find old dead letters",
                    &self.st.letters_before,
                    (bucket, first_kept, limit_i32),
                )
                .await?;
            Ok::<_, StoreError>(
                (0..rows.len())
                    .filter_map(|r| rows.bigint(r, "id"))
                    .map(|id| (id, bucket))
                    .collect::<Vec<_>>(),
            )
        });
        let mut old = Vec::new();
        for found in futures::future::join_all(finds).await {
            old.extend(found?);
        }
        old.sort_unstable();
        old.truncate(limit);
        let mut through: BTreeMap<i32, i64> = BTreeMap::new();
        for (id, bucket) in &old {
            through.insert(*bucket, *id);
        }
        for (bucket, last) in through {
            self.session
                .execute_unpaged(&self.st.delete_letters_through, (bucket, last))
                .await
                .map_err(|e| db_error("purge dead letters", e))?;
        }
        Ok(old.len())
    }

    async fn movements(
        &self,
        sku: &str,
        location: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Movement>> {
        let limit = i32::try_from(limit.clamp(1, 1000)).unwrap_or(1000);
        let rows = self
            .rows(
                "read movements",
                &self.st.movements,
                (sku, location, ts(after), limit),
            )
            .await?;
        Ok((0..rows.len())
            .map(|r| Movement {
                sku: rows.text(r, "sku").unwrap_or_default(),
                location: rows.text(r, "location").unwrap_or_default(),
                version: u64::try_from(rows.bigint(r, "version").unwrap_or(0)).unwrap_or(0),
                kind: rows.text(r, "kind").unwrap_or_default(),
                on_hand: rows.bigint(r, "on_hand").unwrap_or(0),
                reserved: rows.bigint(r, "reserved").unwrap_or(0),
                reservation_id: rows.text(r, "reservation_id"),
                reason: rows.text(r, "reason"),
                reference: rows.text(r, "reference"),
                actor: rows.text(r, "actor_subject").map(|subject| Actor {
                    subject,
                    client_id: rows.text(r, "actor_client_id"),
                }),
                idempotency_key: rows.text(r, "idempotency_key"),
                occurred_at_ms: rows.bigint(r, "occurred_at").unwrap_or(0),
                projection: match (
                    rows.bigint(r, "bus_partition"),
                    rows.bigint(r, "bus_offset"),
                    rows.bigint(r, "projected_at"),
                    rows.text(r, "projected_by"),
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
            .collect())
    }

    async fn purge_movements(&self, _before_ms: i64, _limit: usize) -> Result<usize> {
        // The table's default TTL (90 days) expires movements on ScyllaDB.
        Ok(0)
    }

    async fn dead_letter_count(&self) -> Result<u64> {
        let counts = (0..LETTER_BUCKETS)
            .map(|bucket| self.rows("count dead letters", &self.st.count_letters, (bucket,)));
        let mut total = 0;
        for rows in futures::future::join_all(counts).await {
            total += u64::try_from(rows?.bigint(0, "n").unwrap_or(0)).unwrap_or(0);
        }
        Ok(total)
    }

    async fn stock_by_sku(&self, sku: &str) -> Result<Vec<InventoryRow>> {
        let rows = self
            .rows("read stock", &self.st.stock_by_sku, (sku,))
            .await?;
        Ok(Self::inventory_rows(&rows))
    }

    async fn stock_at(&self, sku: &str, location: &str) -> Result<Option<InventoryRow>> {
        let rows = self
            .rows("read stock", &self.st.stock_at, (sku, location))
            .await?;
        Ok(Self::inventory_rows(&rows).into_iter().next())
    }

    async fn availability(
        &self,
        sku: &str,
        region: Option<&str>,
    ) -> Result<Vec<RegionAvailability>> {
        let regions: Vec<String> = match region {
            Some(r) => vec![r.to_string()],
            None => {
                let rows = self.rows("read regions", &self.st.regions, (sku,)).await?;
                (0..rows.len())
                    .filter_map(|r| rows.text(r, "region"))
                    .collect()
            }
        };
        let mut out = Vec::new();
        for region in regions {
            if let Some(total) = self.region_total(sku, &region).await? {
                out.push(total);
            }
        }
        out.sort_by(|a, b| a.region.cmp(&b.region));
        Ok(out)
    }

    async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>> {
        use futures::StreamExt;
        let wanted: Vec<String> = words(&query.text).into_iter().take(16).collect();
        let limit = query.limit.clamp(1, 200);
        // The longest word's term names the fewest SKUs: its partition, read page by page
        // in SKU order, gives the candidates, and each candidate's document confirms the
        // other words. At most SEARCH_CANDIDATES are looked at, whatever the catalog holds.
        let Some(driver) = wanted.iter().max_by_key(|w| w.chars().count()) else {
            return Ok(Vec::new());
        };
        let term: String = driver.chars().take(MAX_TERM).collect();
        let mut statement = self.st.terms.clone();
        statement.set_page_size(SEARCH_PAGE);
        let candidates = self
            .session
            .execute_iter(statement, (term,))
            .await
            .map_err(|e| StoreError::Database(format!("search terms: {e}")))?
            .rows_stream::<(String,)>()
            .map_err(|e| StoreError::Database(e.to_string()))?;
        let wanted = &wanted;
        let mut checked = candidates
            .take(SEARCH_CANDIDATES)
            .map(|row| async move {
                let (sku,) = row.map_err(|e| StoreError::Database(e.to_string()))?;
                self.search_hit(sku, wanted, query).await
            })
            .buffered(SEARCH_PARALLEL);
        let mut hits = Vec::new();
        while let Some(hit) = checked.next().await {
            if let Some(hit) = hit? {
                hits.push(hit);
                if hits.len() >= limit {
                    break;
                }
            }
        }
        Ok(hits)
    }

    async fn all_inventory(&self) -> Result<Vec<InventoryRow>> {
        let mut out = Vec::new();
        let mut pager = self
            .session
            .execute_iter(self.st.all_inventory.clone(), ())
            .await
            .map_err(|e| StoreError::Database(format!("scan inventory: {e}")))?
            .rows_stream::<(
                String,
                String,
                Option<String>,
                Option<i64>,
                Option<i64>,
                Option<i64>,
                Option<i64>,
            )>()
            .map_err(|e| StoreError::Database(e.to_string()))?;
        while let Some(row) = pager.next().await {
            let (sku, location, region, on_hand, reserved, version, as_of) =
                row.map_err(|e| StoreError::Database(e.to_string()))?;
            let (on_hand, reserved) = (on_hand.unwrap_or(0), reserved.unwrap_or(0));
            out.push(InventoryRow {
                sku,
                location,
                region: region.unwrap_or_default(),
                on_hand,
                reserved,
                available: on_hand - reserved,
                version: u64::try_from(version.unwrap_or(0)).unwrap_or(0),
                as_of_ms: as_of.unwrap_or(0),
            });
        }
        out.sort_by(|a, b| (&a.sku, &a.location).cmp(&(&b.sku, &b.location)));
        Ok(out)
    }

    async fn check_ready(&self) -> Result<()> {
        self.session
            .query_unpaged("SELECT release_version FROM system.local", ())
            .await
            .map_err(|e| db_error("readiness probe", e))?;
        Ok(())
    }
}

/// A dead letter's id: the time in milliseconds, then 20 bits that tell apart letters of
/// the same millisecond (a digest of the consumer, partition and offset), so two letters
/// written at once get different ids (the old `ms * 1000 + partition` made one overwrite
/// the other).
/// Partitions the dead-letter table is spread over, so a poison burst does not make one
/// hot, ever-growing partition.
const LETTER_BUCKETS: i32 = 16;

/// The bucket of letter `id`: its low bits, which come from a hash of the letter's origin.
fn letter_bucket(id: i64) -> i32 {
    i32::try_from(id.rem_euclid(i64::from(LETTER_BUCKETS))).unwrap_or(0)
}

fn dead_letter_id(now_ms: i64, letter: &DeadLetter) -> i64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = siphasher::sip::SipHasher::new();
    (&letter.consumer, letter.partition, letter.offset).hash(&mut hasher);
    let low = i64::try_from(hasher.finish() & 0xF_FFFF).unwrap_or(0);
    (now_ms << 20) | low
}
