//! Projection into the read database, inside one write transaction: the rows are built by
//! `stockflow_domain::read_model` (the ScyllaDB read store calls the same builders); this
//! module reads what they need and writes what they return.
//!
//! Idempotent and order-tolerant: an event changes a key's row only if it is newer
//! ([`read_model::is_newer`]), and the region totals move by the difference between the
//! row before and after ([`read_model::region_changes`]), so they always equal the sum of
//! the rows whatever order or how often events arrive.

use rusqlite::{Connection, OptionalExtension, params};
use stockflow_domain::read_model::{self, InventoryRow, Movement, Provenance, RegionTotals};
use stockflow_domain::{BusEvent, CatalogEvent, StockEvent};

use super::super::sqlite::{from_sql_u64, to_sql_u64};
use super::queries::{InventoryColumns, load_totals};
use crate::error::Context;
use crate::ports::Batch;
use crate::{Result, StoreError, now_ms};
use stockflow_domain::read_model::Flow;

/// Applies `events`; `batch`, when they come from the log, says where each was read.
pub(super) fn apply_all(
    conn: &Connection,
    events: &[BusEvent],
    batch: Option<&Batch<'_>>,
) -> Result<()> {
    let now = now_ms();
    for (index, event) in events.iter().enumerate() {
        match event {
            BusEvent::Stock(e) => {
                let from = batch.map(|b| b.provenance(index, now));
                apply_stock(conn, e, from.as_ref())?;
            }
            BusEvent::Catalog(e) => apply_catalog(conn, e)?,
            // A SKU's policy is audited on the bus; no read model shows it.
            BusEvent::Policy(_) => {}
        }
    }
    Ok(())
}

fn apply_stock(conn: &Connection, e: &StockEvent, from: Option<&Provenance>) -> Result<()> {
    e.validate().map_err(|source| StoreError::InvalidEvent {
        event_id: e.event_id.clone(),
        source,
    })?;
    record_movement(conn, e, from)?;
    apply_row(conn, &InventoryRow::of(e))
}

/// Writes `after` as the key's row if it is newer than the one held, moves its regions'
/// totals by the difference and records it in the change feed.
fn apply_row(conn: &Connection, after: &InventoryRow) -> Result<()> {
    let before: Option<InventoryRow> = conn
        .prepare_cached(&format!(
            "SELECT {} FROM inventory_by_sku_location WHERE sku = ?1 AND location = ?2",
            InventoryColumns::LIST
        ))
        .and_then(|mut s| {
            s.query_row(
                [after.sku.as_str(), after.location.as_str()],
                InventoryColumns::read,
            )
            .optional()
        })
        .what("load an inventory row")?;
    if !read_model::is_newer(after.version, before.as_ref().map(|r| r.version)) {
        return Ok(());
    }
    conn.prepare_cached(
        "INSERT INTO inventory_by_sku_location (sku, location, region, on_hand, reserved, version,
             as_of_ms, damaged, quality_hold, safety_stock, backordered, in_transit, incoming,
             channels)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
         ON CONFLICT (sku, location) DO UPDATE SET region = excluded.region, on_hand = excluded.on_hand,
             reserved = excluded.reserved, version = excluded.version, as_of_ms = excluded.as_of_ms,
             damaged = excluded.damaged, quality_hold = excluded.quality_hold,
             safety_stock = excluded.safety_stock, backordered = excluded.backordered,
             in_transit = excluded.in_transit, incoming = excluded.incoming,
             channels = excluded.channels",
    )
    .and_then(|mut s| {
        s.execute(params![
            after.sku,
            after.location,
            after.region,
            after.on_hand,
            after.reserved,
            to_sql_u64(after.version),
            after.as_of_ms,
            after.damaged,
            after.quality_hold,
            after.safety_stock,
            after.flow.backordered,
            after.flow.in_transit,
            after.flow.incoming_to_stored(),
            after.flow.channels_to_stored(),
        ])
    })
    .what("write an inventory row")?;
    super::changes::record(conn, after, now_ms())?;
    for (region, change) in read_model::region_changes(before.as_ref(), after) {
        let totals = load_totals(conn, &after.sku, &region)?
            .unwrap_or_else(RegionTotals::none)
            .plus(&change);
        write_totals(conn, &after.sku, &region, &totals)?;
    }
    Ok(())
}

/// Writes rows rebuilt from the write side as projection would, and drops each key's
/// movements past its row's version: history the (restored) write side never made.
pub(super) fn restore_rows(conn: &Connection, rows: &[InventoryRow]) -> Result<()> {
    for row in rows {
        apply_row(conn, row)?;
        conn.prepare_cached(
            "DELETE FROM stock_movements WHERE sku = ?1 AND location = ?2 AND version > ?3",
        )
        .and_then(|mut s| s.execute(params![row.sku, row.location, to_sql_u64(row.version)]))
        .what("drop movements past the write side")?;
    }
    Ok(())
}

/// Empties the rows per key, the totals per region and the search documents.
pub(super) fn clear_stock_views(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "DELETE FROM inventory_by_sku_location; DELETE FROM availability_by_region;
         DELETE FROM search_documents; DELETE FROM search_index;",
    )
    .what("clear the stock read models")
}

fn write_totals(conn: &Connection, sku: &str, region: &str, t: &RegionTotals) -> Result<()> {
    let q = t.quantities;
    conn.prepare_cached(
        "INSERT INTO availability_by_region (sku, region, on_hand, reserved, locations, as_of_ms,
             damaged, quality_hold, safety_stock, backordered, in_transit, available, incoming)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (sku, region) DO UPDATE SET on_hand = excluded.on_hand,
             reserved = excluded.reserved, locations = excluded.locations,
             as_of_ms = excluded.as_of_ms, damaged = excluded.damaged,
             quality_hold = excluded.quality_hold, safety_stock = excluded.safety_stock,
             backordered = excluded.backordered, in_transit = excluded.in_transit,
             available = excluded.available, incoming = excluded.incoming",
    )
    .and_then(|mut s| {
        s.execute(params![
            sku,
            region,
            q.on_hand,
            q.reserved,
            t.locations,
            t.as_of_ms,
            q.damaged,
            q.quality_hold,
            q.safety_stock,
            t.flow.backordered,
            t.flow.in_transit,
            t.available,
            Flow::incoming_to_stored(&t.flow),
        ])
    })
    .what("write region totals")?;
    Ok(())
}

/// Records the event in the movement history. Every version once, whatever order the
/// events arrive in: a re-delivered or older event changes nothing but where the event
/// was read at its latest projection (the provenance columns).
fn record_movement(conn: &Connection, e: &StockEvent, from: Option<&Provenance>) -> Result<()> {
    let m = Movement::of(e);
    let (subject, client_id) = match &m.actor {
        Some(a) => (Some(a.subject.as_str()), a.client_id.as_deref()),
        None => (None, None),
    };
    conn.prepare_cached(
        "INSERT INTO stock_movements (sku, location, version, kind, on_hand, reserved,
             reservation_id, reason, reference, actor_subject, actor_client_id, idempotency_key,
             occurred_at_ms, bus_partition, bus_offset, projected_at_ms, projected_by, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)
         ON CONFLICT (sku, location, version) DO UPDATE SET
             bus_partition = coalesce(excluded.bus_partition, bus_partition),
             bus_offset = coalesce(excluded.bus_offset, bus_offset),
             projected_at_ms = coalesce(excluded.projected_at_ms, projected_at_ms),
             projected_by = coalesce(excluded.projected_by, projected_by)",
    )
    .and_then(|mut s| {
        s.execute(params![
            m.sku,
            m.location,
            to_sql_u64(m.version),
            m.kind,
            m.on_hand,
            m.reserved,
            m.reservation_id,
            m.reason,
            m.reference,
            subject,
            client_id,
            m.idempotency_key,
            m.occurred_at_ms,
            from.map(|p| p.partition),
            from.map(|p| to_sql_u64(p.offset)),
            from.map(|p| p.projected_at_ms),
            from.map(|p| p.projected_by.as_str()),
            m.detail.to_stored(),
        ])
    })
    .what("record a movement")?;
    Ok(())
}

fn apply_catalog(conn: &Connection, e: &CatalogEvent) -> Result<()> {
    let version: Option<i64> = conn
        .prepare_cached("SELECT version FROM search_documents WHERE sku = ?1")
        .and_then(|mut s| s.query_row([e.sku.as_str()], |r| r.get(0)).optional())
        .what("load a search document")?;
    if !read_model::is_newer(e.version, version.map(from_sql_u64)) {
        return Ok(());
    }
    let attributes =
        serde_json::to_string(&e.attributes).map_err(StoreError::encode("catalog attributes"))?;
    // The full-text index gets the attribute names and values as one text.
    let text: Vec<&str> = e
        .attributes
        .iter()
        .flat_map(|(k, v)| [k.as_str(), v.as_str()])
        .collect();
    (|| {
        conn.prepare_cached(
            "INSERT INTO search_documents (sku, name, attributes, version) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (sku) DO UPDATE SET name = excluded.name, attributes = excluded.attributes, version = excluded.version",
        )?
        .execute(params![e.sku.as_str(), e.name, attributes, to_sql_u64(e.version)])?;
        conn.prepare_cached("DELETE FROM search_index WHERE sku = ?1")?
            .execute([e.sku.as_str()])?;
        conn.prepare_cached("INSERT INTO search_index (sku, name, attributes) VALUES (?1, ?2, ?3)")?
            .execute(params![e.sku.as_str(), e.name, text.join(" ")])
    })()
    .what("index a catalog document")?;
    Ok(())
}
