//! Reading the read database: typed rows of each table, availability through the domain,
//! and the catalog search (full-text candidates, then the domain's stock figures).

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Row, params};
use stockflow_domain::read_model::{
    self, Flow, InventoryRow, Movement, MovementDetail, Provenance, RegionAvailability,
    RegionTotals,
};
use stockflow_domain::{Actor, Quantities};

use super::super::sqlite::{from_sql_u64, to_sql_u64};
use crate::error::Context;
use crate::ports::{
    ConsumerOffset, DeadLetter, EXPORT_CHUNK_ROWS, ExportChunk, SearchHit, SearchQuery,
};
use crate::{Result, StoreError};

/// Words of a query used at most: more only slows the index down.
const MAX_QUERY_WORDS: usize = 16;
/// Search candidates read per page while filtering for stock.
const SEARCH_PAGE: i64 = 256;

/// The columns of `inventory_by_sku_location`, read into a row through the domain.
pub(super) struct InventoryColumns;

impl InventoryColumns {
    pub(super) const LIST: &'static str = "sku, location, region, on_hand, reserved, version, \
         as_of_ms, damaged, quality_hold, safety_stock, backordered, in_transit, incoming, channels";

    pub(super) fn read(r: &Row<'_>) -> rusqlite::Result<InventoryRow> {
        let incoming: Option<String> = r.get(12)?;
        let channels: Option<String> = r.get(13)?;
        Ok(InventoryRow::stored(
            (r.get(0)?, r.get(1)?, r.get(2)?),
            Quantities {
                on_hand: r.get(3)?,
                reserved: r.get(4)?,
                damaged: r.get(7)?,
                quality_hold: r.get(8)?,
                safety_stock: r.get(9)?,
            },
            Flow {
                backordered: r.get(10)?,
                in_transit: r.get(11)?,
                incoming: Flow::incoming_from_stored(incoming.as_deref()),
                channels: Flow::channels_from_stored(channels.as_deref()),
            },
            from_sql_u64(r.get(5)?),
            r.get(6)?,
        ))
    }
}

/// The columns of `availability_by_region` after its key, read into running totals.
pub(super) struct TotalsColumns;

impl TotalsColumns {
    pub(super) const LIST: &'static str = "on_hand, reserved, damaged, quality_hold, \
         safety_stock, backordered, in_transit, available, incoming, locations, as_of_ms";

    /// Reads the totals starting at column `at`.
    fn read(r: &Row<'_>, at: usize) -> rusqlite::Result<RegionTotals> {
        let incoming: Option<String> = r.get(at + 8)?;
        Ok(RegionTotals {
            quantities: Quantities {
                on_hand: r.get(at)?,
                reserved: r.get(at + 1)?,
                damaged: r.get(at + 2)?,
                quality_hold: r.get(at + 3)?,
                safety_stock: r.get(at + 4)?,
            },
            flow: Flow {
                backordered: r.get(at + 5)?,
                in_transit: r.get(at + 6)?,
                incoming: Flow::incoming_from_stored(incoming.as_deref()),
                channels: Vec::new(),
            },
            available: r.get(at + 7)?,
            locations: r.get(at + 9)?,
            as_of_ms: r.get(at + 10)?,
        })
    }
}

/// Inventory rows matching `filter` (a `WHERE` clause over `params`), by key.
pub(super) fn inventory(
    conn: &Connection,
    filter: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<InventoryRow>> {
    conn.prepare_cached(&format!(
        "SELECT {} FROM inventory_by_sku_location {filter} ORDER BY sku, location",
        InventoryColumns::LIST
    ))
    .and_then(|mut s| s.query_map(params, InventoryColumns::read)?.collect())
    .what("read inventory rows")
}

/// Every consumer's offsets, by consumer and partition.
pub(super) fn consumer_offsets(conn: &Connection) -> Result<Vec<ConsumerOffset>> {
    conn.prepare_cached(
        "SELECT consumer, partition, next_offset FROM consumer_offsets ORDER BY consumer, partition",
    )
    .and_then(|mut s| {
        s.query_map([], |r| {
            Ok(ConsumerOffset {
                consumer: r.get(0)?,
                partition: r.get(1)?,
                next_offset: from_sql_u64(r.get(2)?),
            })
        })?
        .collect()
    })
    .what("read consumer offsets")
}

/// Streams the offsets and then the rows (of `region`, or all) into `sink`, all read in
/// one transaction, so the rows are exactly the records before the offsets.
pub(super) fn export_stock(
    conn: &Connection,
    region: Option<&str>,
    sink: &tokio::sync::mpsc::Sender<ExportChunk>,
) -> Result<()> {
    // A deferred transaction: its snapshot starts at the first read and holds until the
    // end, while the projector goes on writing (WAL readers never block the writer).
    let tx = conn.unchecked_transaction().what("begin an export")?;
    let offsets = consumer_offsets(&tx)?;
    if sink.blocking_send(ExportChunk::Offsets(offsets)).is_err() {
        return Ok(());
    }
    let sql = format!(
        "SELECT {} FROM inventory_by_sku_location WHERE (?1 IS NULL OR region = ?1) ORDER BY sku, location",
        InventoryColumns::LIST
    );
    let mut statement = tx.prepare(&sql).what("export inventory rows")?;
    let rows = statement
        .query_map([region], InventoryColumns::read)
        .what("export inventory rows")?;
    let mut chunk = Vec::with_capacity(EXPORT_CHUNK_ROWS);
    for row in rows {
        chunk.push(row.what("export inventory rows")?);
        if chunk.len() == EXPORT_CHUNK_ROWS {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(EXPORT_CHUNK_ROWS));
            if sink.blocking_send(ExportChunk::Rows(full)).is_err() {
                return Ok(());
            }
        }
    }
    if !chunk.is_empty() {
        let _ = sink.blocking_send(ExportChunk::Rows(chunk));
    }
    Ok(())
}

/// The running totals of `sku` in `region`, if any location counted there.
pub(super) fn load_totals(
    conn: &Connection,
    sku: &str,
    region: &str,
) -> Result<Option<RegionTotals>> {
    conn.prepare_cached(&format!(
        "SELECT {} FROM availability_by_region WHERE sku = ?1 AND region = ?2",
        TotalsColumns::LIST
    ))
    .and_then(|mut s| {
        s.query_row([sku, region], |r| TotalsColumns::read(r, 0))
            .optional()
    })
    .what("load region totals")
}

/// The availability of `sku` per region (one region if given), by region.
pub(super) fn availability(
    conn: &Connection,
    sku: &str,
    region: Option<&str>,
) -> Result<Vec<RegionAvailability>> {
    let rows: Vec<(String, RegionTotals)> = conn
        .prepare_cached(&format!(
            "SELECT region, {} FROM availability_by_region
             WHERE sku = ?1 AND (?2 IS NULL OR region = ?2) ORDER BY region",
            TotalsColumns::LIST
        ))
        .and_then(|mut s| {
            s.query_map(params![sku, region], |r| {
                Ok((r.get(0)?, TotalsColumns::read(r, 1)?))
            })?
            .collect()
        })
        .what("read availability")?;
    Ok(rows
        .into_iter()
        .filter_map(|(region, totals)| RegionAvailability::of_totals(sku, &region, totals))
        .collect())
}

/// The movements of one key after `after`, oldest first.
pub(super) fn movements(
    conn: &Connection,
    sku: &str,
    location: &str,
    after: u64,
    limit: i64,
) -> Result<Vec<Movement>> {
    conn.prepare_cached(
        "SELECT sku, location, version, kind, on_hand, reserved, reservation_id, reason,
             reference, actor_subject, actor_client_id, idempotency_key, occurred_at_ms,
             bus_partition, bus_offset, projected_at_ms, projected_by, detail
         FROM stock_movements WHERE sku = ?1 AND location = ?2 AND version > ?3
         ORDER BY version LIMIT ?4",
    )
    .and_then(|mut s| {
        s.query_map(params![sku, location, to_sql_u64(after), limit], movement)?
            .collect()
    })
    .what("read movements")
}

fn movement(r: &Row<'_>) -> rusqlite::Result<Movement> {
    let subject: Option<String> = r.get(9)?;
    let client_id: Option<String> = r.get(10)?;
    let detail: Option<String> = r.get(17)?;
    let detail = MovementDetail::from_stored(detail.as_deref()).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(17, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(Movement {
        sku: r.get(0)?,
        location: r.get(1)?,
        version: from_sql_u64(r.get(2)?),
        kind: r.get(3)?,
        on_hand: r.get(4)?,
        reserved: r.get(5)?,
        reservation_id: r.get(6)?,
        reason: r.get(7)?,
        reference: r.get(8)?,
        actor: subject.map(|subject| Actor {
            subject,
            client_id,
            store: None,
        }),
        idempotency_key: r.get(11)?,
        occurred_at_ms: r.get(12)?,
        detail,
        projection: match (
            r.get(13)?,
            r.get::<_, Option<i64>>(14)?,
            r.get(15)?,
            r.get(16)?,
        ) {
            (Some(partition), Some(offset), Some(projected_at_ms), Some(projected_by)) => {
                Some(Provenance {
                    partition,
                    offset: from_sql_u64(offset),
                    projected_at_ms,
                    projected_by,
                })
            }
            _ => None,
        },
    })
}

/// The oldest `limit` dead letters.
pub(super) fn dead_letters(conn: &Connection, limit: usize) -> Result<Vec<DeadLetter>> {
    conn.prepare_cached(
        "SELECT id, consumer, partition, offset, key, payload, error, attempts, failed_at_ms
         FROM dead_letters ORDER BY id LIMIT ?1",
    )
    .and_then(|mut s| {
        s.query_map([to_sql_u64(limit as u64)], |r| {
            Ok(DeadLetter {
                id: r.get(0)?,
                consumer: r.get(1)?,
                partition: r.get(2)?,
                offset: from_sql_u64(r.get(3)?),
                key: r.get(4)?,
                payload: r.get(5)?,
                error: r.get(6)?,
                attempts: r.get(7)?,
                failed_at_ms: r.get(8)?,
            })
        })?
        .collect()
    })
    .what("read dead letters")
}

/// Turns user text into an FTS5 query: every word must match as a prefix. Only letters
/// and digits survive, so no user input can change the query's syntax.
pub(super) fn fts_query(text: &str) -> Option<String> {
    let terms: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(MAX_QUERY_WORDS)
        .map(|w| format!("\"{w}\"*"))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" "))
}

/// Catalog search: documents in rank order (or by SKU without text), each with the stock
/// the domain counts for it, filtered to those in stock if asked, at most `limit`.
pub(super) fn search(
    conn: &Connection,
    query: &SearchQuery,
    limit: usize,
) -> Result<Vec<SearchHit>> {
    let fts = fts_query(&query.text);
    let sql = match fts {
        Some(_) => {
            "SELECT d.sku, d.name, d.attributes
             FROM search_index f JOIN search_documents d ON d.sku = f.sku
             WHERE search_index MATCH ?1 ORDER BY f.rank, d.sku LIMIT ?2 OFFSET ?3"
        }
        None => {
            "SELECT d.sku, d.name, d.attributes FROM search_documents d
             WHERE ?1 IS NULL ORDER BY d.sku LIMIT ?2 OFFSET ?3"
        }
    };
    // One snapshot for every page, so a projection between two pages moves nothing.
    let snapshot = conn
        .unchecked_transaction()
        .what("begin a search snapshot")?;
    let mut hits = Vec::new();
    let mut offset = 0;
    loop {
        let page: Vec<(String, String, String)> = snapshot
            .prepare_cached(sql)
            .and_then(|mut s| {
                s.query_map(params![fts, SEARCH_PAGE, offset], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect()
            })
            .what("search the catalog")?;
        let exhausted = (page.len() as i64) < SEARCH_PAGE;
        for (sku, name, attributes) in page {
            let regions = availability(&snapshot, &sku, query.region.as_deref())?;
            let available = read_model::available_over(&regions);
            if query.in_stock && !read_model::in_stock(available) {
                continue;
            }
            let attributes: BTreeMap<String, String> = serde_json::from_str(&attributes)
                .map_err(StoreError::corrupt("search document attributes"))?;
            hits.push(SearchHit {
                sku,
                name,
                attributes,
                available,
            });
            if hits.len() >= limit {
                return Ok(hits);
            }
        }
        if exhausted {
            return Ok(hits);
        }
        offset += SEARCH_PAGE;
    }
}

#[cfg(test)]
mod tests {
    use super::fts_query;

    #[test]
    fn fts_query_keeps_only_words() {
        assert_eq!(
            fts_query("red  shoe-42"),
            Some("\"red\"* \"shoe\"* \"42\"*".into())
        );
        assert_eq!(fts_query("\" OR * NEAR("), Some("\"OR\"* \"NEAR\"*".into()));
        assert_eq!(fts_query("  ..  "), None);
    }
}
