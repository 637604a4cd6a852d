//! Reading the read database: typed rows of each table, availability through the domain,
//! and the catalog search (full-text candidates, then the domain's stock figures).

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Row, params};
use stockflow_domain::Actor;
use stockflow_domain::read_model::{
    self, InventoryRow, Movement, Provenance, RegionAvailability, RegionTotals,
};

use super::super::sqlite::{from_sql_u64, to_sql_u64};
use crate::error::Context;
use crate::ports::{DeadLetter, SearchHit, SearchQuery};
use crate::{Result, StoreError};

/// Words of a query used at most: more only slows the index down.
const MAX_QUERY_WORDS: usize = 16;
/// Search candidates read per page while filtering for stock.
const SEARCH_PAGE: i64 = 256;

/// The columns of `inventory_by_sku_location`, read into a row through the domain.
pub(super) struct InventoryColumns;

impl InventoryColumns {
    pub(super) const LIST: &'static str =
        "sku, location, region, on_hand, reserved, version, as_of_ms";

    pub(super) fn read(r: &Row<'_>) -> rusqlite::Result<InventoryRow> {
        Ok(InventoryRow::stored(
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            from_sql_u64(r.get(5)?),
            r.get(6)?,
        ))
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

/// The running totals of `sku` in `region`, if any location counted there.
pub(super) fn load_totals(
    conn: &Connection,
    sku: &str,
    region: &str,
) -> Result<Option<RegionTotals>> {
    conn.prepare_cached(
        "SELECT on_hand, reserved, locations, as_of_ms FROM availability_by_region WHERE sku = ?1 AND region = ?2",
    )
    .and_then(|mut s| {
        s.query_row([sku, region], |r| {
            Ok(RegionTotals {
                on_hand: r.get(0)?,
                reserved: r.get(1)?,
                locations: r.get(2)?,
                as_of_ms: r.get(3)?,
            })
        })
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
        .prepare_cached(
            "SELECT region, on_hand, reserved, locations, as_of_ms FROM availability_by_region
             WHERE sku = ?1 AND (?2 IS NULL OR region = ?2) ORDER BY region",
        )
        .and_then(|mut s| {
            s.query_map(params![sku, region], |r| {
                Ok((
                    r.get(0)?,
                    RegionTotals {
                        on_hand: r.get(1)?,
                        reserved: r.get(2)?,
                        locations: r.get(3)?,
                        as_of_ms: r.get(4)?,
                    },
                ))
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
             bus_partition, bus_offset, projected_at_ms, projected_by
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
        actor: subject.map(|subject| Actor { subject, client_id }),
        idempotency_key: r.get(11)?,
        occurred_at_ms: r.get(12)?,
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
