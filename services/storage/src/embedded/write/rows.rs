//! The rows of the write database, read and written inside the writer's transaction (or
//! on a reader connection): stock levels, locations, SKUs, reservations, outbox entries,
//! idempotency records, and retention batches. Typed row structs map the columns; what
//! the rows mean is the domain's.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Row, params};
use stockflow_domain::{
    Answer, Applied, BusEvent, CatalogEvent, Extras, Location, LocationId, LocationKind,
    RecordedAnswer, Region, Reservation, ReservationId, ReservationStatus, ScopedKey, Sku,
    SkuCatalog, StockKey, StockLevel,
};

use super::super::sqlite::{from_sql_u64, to_sql_u64};
use super::records;
use super::schema::SQL;
use crate::definition::Definition;
use crate::error::Context;
use crate::ports::{IdempotencyToken, Purge};
use crate::{Result, StoreError};

/// A `stock` row as stored.
struct StockRow {
    sku: String,
    location: String,
    region: String,
    on_hand: i64,
    reserved: i64,
    version: i64,
    extras: Option<String>,
}

impl StockRow {
    const COLUMNS: &'static str = "sku, location, region, on_hand, reserved, version, extras";

    fn read(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            sku: r.get(0)?,
            location: r.get(1)?,
            region: r.get(2)?,
            on_hand: r.get(3)?,
            reserved: r.get(4)?,
            version: r.get(5)?,
            extras: r.get(6)?,
        })
    }

    fn into_level(self) -> Result<StockLevel> {
        const WHAT: &str = "stock row";
        let level = StockLevel {
            on_hand: self.on_hand,
            reserved: self.reserved,
            version: from_sql_u64(self.version),
            extras: Extras::from_stored(self.extras.as_deref())
                .map_err(StoreError::corrupt(WHAT))?,
            ..StockLevel::empty(
                Sku::parse(self.sku).map_err(StoreError::corrupt(WHAT))?,
                LocationId::parse(self.location).map_err(StoreError::corrupt(WHAT))?,
                Region::parse(self.region).map_err(StoreError::corrupt(WHAT))?,
            )
        };
        Ok(level)
    }
}

/// A `reservations` row as stored.
struct ReservationRow {
    status: String,
    reference: Option<String>,
    lines: String,
    created_at_ms: i64,
    expires_at_ms: i64,
    updated_at_ms: i64,
}

impl ReservationRow {
    fn read(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            status: r.get(0)?,
            reference: r.get(1)?,
            lines: r.get(2)?,
            created_at_ms: r.get(3)?,
            expires_at_ms: r.get(4)?,
            updated_at_ms: r.get(5)?,
        })
    }

    fn into_reservation(self, id: &ReservationId) -> Result<Reservation> {
        Ok(Reservation {
            id: id.clone(),
            status: ReservationStatus::parse(&self.status)
                .ok_or_else(|| StoreError::unknown("reservation status", self.status))?,
            lines: serde_json::from_str(&self.lines)
                .map_err(StoreError::corrupt("reservation lines"))?,
            reference: self.reference,
            created_at_ms: self.created_at_ms,
            expires_at_ms: self.expires_at_ms,
            updated_at_ms: self.updated_at_ms,
        })
    }
}

/// What a key's idempotency record holds.
pub(super) struct Record {
    /// The fingerprint of the request the key stands for.
    pub fingerprint: String,
    /// Its answer.
    pub answer: RecordedAnswer,
}

pub(super) fn load_level(conn: &Connection, key: &StockKey) -> Result<Option<StockLevel>> {
    let row = conn
        .prepare_cached(&format!(
            "SELECT {} FROM stock WHERE sku = ?1 AND location = ?2",
            StockRow::COLUMNS
        ))
        .and_then(|mut s| {
            s.query_row([key.sku.as_str(), key.location.as_str()], StockRow::read)
                .optional()
        })
        .what("load a stock level")?;
    row.map(StockRow::into_level).transpose()
}

/// Every stock level, by key.
pub(super) fn all_levels(conn: &Connection) -> Result<Vec<StockLevel>> {
    let rows = conn
        .prepare(&format!(
            "SELECT {} FROM stock ORDER BY sku, location",
            StockRow::COLUMNS
        ))
        .and_then(|mut s| {
            s.query_map([], StockRow::read)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .what("scan stock levels")?;
    rows.into_iter().map(StockRow::into_level).collect()
}

/// The region of `location`, if it is defined.
pub(super) fn load_region(conn: &Connection, location: &LocationId) -> Result<Option<Region>> {
    let region: Option<String> = conn
        .prepare_cached("SELECT region FROM locations WHERE id = ?1")
        .and_then(|mut s| s.query_row([location.as_str()], |r| r.get(0)).optional())
        .what("load a location's region")?;
    region
        .map(|r| Region::parse(r).map_err(StoreError::corrupt("location region")))
        .transpose()
}

pub(super) fn load_location(conn: &Connection, id: &LocationId) -> Result<Option<Location>> {
    let row: Option<(String, String, String)> = conn
        .prepare_cached("SELECT region, kind, name FROM locations WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .what("load a location")?;
    row.map(|(region, kind, name)| {
        Ok(Location {
            id: id.clone(),
            region: Region::parse(region).map_err(StoreError::corrupt("location region"))?,
            kind: LocationKind::parse(&kind)
                .ok_or_else(|| StoreError::unknown("location kind", kind))?,
            name,
        })
    })
    .transpose()
}

pub(super) fn load_reservation(
    conn: &Connection,
    id: &ReservationId,
) -> Result<Option<Reservation>> {
    conn.prepare_cached(
        "SELECT status, reference, lines, created_at_ms, expires_at_ms, updated_at_ms FROM reservations WHERE id = ?1",
    )
    .and_then(|mut s| s.query_row([id.as_str()], ReservationRow::read).optional())
    .what("load a reservation")?
    .map(|row| row.into_reservation(id))
    .transpose()
}

/// The idempotency record of `key`, if it ran before.
pub(super) fn load_record(conn: &Connection, key: &ScopedKey) -> Result<Option<Record>> {
    let stored: Option<(String, String)> = conn
        .prepare_cached("SELECT fingerprint, result FROM idempotency WHERE key = ?1")
        .and_then(|mut s| {
            s.query_row([key.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .what("load an idempotency record")?;
    stored
        .map(|(fingerprint, result)| {
            Ok(Record {
                fingerprint,
                answer: serde_json::from_str(&result)
                    .map_err(StoreError::corrupt("idempotency record"))?,
            })
        })
        .transpose()
}

/// Keeps `answer` as what `token`'s key answers.
pub(super) fn insert_record(
    conn: &Connection,
    token: &IdempotencyToken,
    answer: &RecordedAnswer,
    now: i64,
) -> Result<()> {
    let result = serde_json::to_string(answer).map_err(StoreError::encode("recorded answer"))?;
    conn.prepare_cached(
        "INSERT INTO idempotency (key, fingerprint, result, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut s| {
        s.execute(params![
            token.key.to_string(),
            token.fingerprint,
            result,
            now
        ])
    })
    .what("record an idempotency key")?;
    Ok(())
}

/// Writes what the domain decided: the new levels, the reservation, one outbox entry per
/// event.
pub(super) fn write_applied(conn: &Connection, applied: &Applied, now: i64) -> Result<()> {
    for level in &applied.levels {
        let extras = level
            .extras
            .to_stored()
            .map_err(StoreError::encode("stock extras"))?;
        // The guard proves the writer read what it overwrites; with one writer it always
        // holds, and if it ever does not, the command fails instead of losing an update.
        let changed = conn
            .prepare_cached(
                "INSERT INTO stock (sku, location, region, on_hand, reserved, version, extras)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (sku, location) DO UPDATE
                 SET on_hand = excluded.on_hand, reserved = excluded.reserved,
                     version = excluded.version, extras = excluded.extras
                 WHERE stock.version = excluded.version - 1",
            )
            .and_then(|mut s| {
                s.execute(params![
                    level.sku.as_str(),
                    level.location.as_str(),
                    level.region.as_str(),
                    level.on_hand,
                    level.reserved,
                    to_sql_u64(level.version),
                    extras
                ])
            })
            .what("write a stock level")?;
        if changed != 1 {
            return Err(StoreError::Invariant {
                what: "write a stock level",
                detail: format!("{} changed under its only writer", level.key()),
            });
        }
    }
    if let Some(r) = &applied.reservation {
        let lines =
            serde_json::to_string(&r.lines).map_err(StoreError::encode("reservation lines"))?;
        conn.prepare_cached(
            "INSERT INTO reservations (id, status, reference, lines, created_at_ms, expires_at_ms, updated_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (id) DO UPDATE SET status = excluded.status, updated_at_ms = excluded.updated_at_ms",
        )
        .and_then(|mut s| {
            s.execute(params![
                r.id.as_str(),
                r.status.as_str(),
                r.reference,
                lines,
                r.created_at_ms,
                r.expires_at_ms,
                r.updated_at_ms
            ])
        })
        .what("write a reservation")?;
    }
    if let Some(t) = &applied.transfer {
        records::write_transfer(conn, t)?;
    }
    if let Some((policy, event)) = &applied.policy {
        records::write_sku_policy(conn, policy)?;
        insert_outbox(conn, &BusEvent::Policy(event.clone()), now)?;
    }
    for event in &applied.events {
        insert_outbox(conn, &BusEvent::Stock(event.clone()), now)?;
    }
    Ok(())
}

fn insert_outbox(conn: &Connection, event: &BusEvent, now: i64) -> Result<()> {
    let payload = serde_json::to_vec(event).map_err(StoreError::encode("outbox event"))?;
    conn.prepare_cached("INSERT INTO outbox (key, payload, created_at_ms) VALUES (?1, ?2, ?3)")
        .and_then(|mut s| s.execute(params![event.key().as_str(), payload, now]))
        .what("write an outbox entry")?;
    Ok(())
}

/// Creates or updates a location, unless the domain refuses the change.
pub(super) fn put_location(conn: &Connection, location: Location) -> Result<Answer<Location>> {
    if let Err(refusal) = location.may_replace(load_location(conn, &location.id)?.as_ref()) {
        return Ok(Err(refusal));
    }
    conn.prepare_cached(
        "INSERT INTO locations (id, region, kind, name) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET region = excluded.region, kind = excluded.kind, name = excluded.name",
    )
    .and_then(|mut s| {
        s.execute(params![
            location.id.as_str(),
            location.region.as_str(),
            location.kind.as_str(),
            location.name
        ])
    })
    .what("write a location")?;
    Ok(Ok(location))
}

/// The definition stored under `key` in `table` (`channels` or `bundles`), if any.
pub(super) fn load_definition<D: Definition>(
    conn: &Connection,
    table: &str,
    key: &str,
) -> Result<Option<D>> {
    let body: Option<String> = conn
        .prepare_cached(&format!("SELECT body FROM {table} WHERE id = ?1"))
        .and_then(|mut s| s.query_row([key], |r| r.get(0)).optional())
        .what("load a definition")?;
    body.map(|b| serde_json::from_str(&b).map_err(StoreError::corrupt(D::WHAT)))
        .transpose()
}

/// Every definition in `table`.
pub(super) fn load_definitions<D: Definition>(conn: &Connection, table: &str) -> Result<Vec<D>> {
    let bodies: Vec<String> = conn
        .prepare_cached(&format!("SELECT body FROM {table} ORDER BY id"))
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .what("load the definitions")?;
    bodies
        .iter()
        .map(|b| serde_json::from_str(b).map_err(StoreError::corrupt(D::WHAT)))
        .collect()
}

/// Stores `definition` in `table` as the next revision of its key (the writer runs one job
/// at a time).
pub(super) fn put_definition<D: Definition>(
    conn: &Connection,
    table: &str,
    definition: D,
) -> Result<D> {
    let current: Option<D> = load_definition(conn, table, definition.key())?;
    let revised = definition.revised(current.as_ref());
    let body = serde_json::to_string(&revised).map_err(StoreError::encode(D::WHAT))?;
    conn.prepare_cached(&format!(
        "INSERT INTO {table} (id, version, body) VALUES (?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET version = excluded.version, body = excluded.body"
    ))
    .and_then(|mut s| s.execute(params![revised.key(), to_sql_u64(revised.version()), body]))
    .what("write a definition")?;
    Ok(revised)
}

/// Writes the next revision of a SKU's catalog data and its event.
pub(super) fn put_sku(
    conn: &Connection,
    sku: Sku,
    name: String,
    attributes: BTreeMap<String, String>,
    now: i64,
) -> Result<SkuCatalog> {
    let previous: Option<i64> = conn
        .prepare_cached("SELECT version FROM skus WHERE sku = ?1")
        .and_then(|mut s| s.query_row([sku.as_str()], |r| r.get(0)).optional())
        .what("load a SKU's revision")?;
    let catalog = SkuCatalog::revised(sku, name, attributes, previous.map(from_sql_u64));
    let encoded = serde_json::to_string(&catalog.attributes)
        .map_err(StoreError::encode("catalog attributes"))?;
    conn.prepare_cached(
        "INSERT INTO skus (sku, name, attributes, version) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (sku) DO UPDATE SET name = excluded.name, attributes = excluded.attributes, version = excluded.version",
    )
    .and_then(|mut s| {
        s.execute(params![
            catalog.sku.as_str(),
            catalog.name,
            encoded,
            to_sql_u64(catalog.version)
        ])
    })
    .what("write a SKU")?;
    insert_outbox(
        conn,
        &BusEvent::Catalog(CatalogEvent::of(&catalog, now)),
        now,
    )?;
    Ok(catalog)
}

/// Every SKU's catalog data, in SKU order.
pub(super) fn all_skus(conn: &Connection) -> Result<Vec<SkuCatalog>> {
    let rows: Vec<(String, String, String, i64)> = conn
        .prepare("SELECT sku, name, attributes, version FROM skus ORDER BY sku")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect()
        })
        .what("scan SKUs")?;
    rows.into_iter()
        .map(|(sku, name, attributes, version)| {
            Ok(SkuCatalog {
                sku: Sku::parse(sku).map_err(StoreError::corrupt("SKU"))?,
                name,
                attributes: serde_json::from_str(&attributes)
                    .map_err(StoreError::corrupt("catalog attributes"))?,
                version: from_sql_u64(version),
            })
        })
        .collect()
}

pub(super) fn mark_published(conn: &Connection, ids: &[i64]) -> Result<()> {
    let mut stmt = conn
        .prepare_cached("DELETE FROM outbox WHERE id = ?1")
        .what("mark outbox entries published")?;
    for id in ids {
        stmt.execute([id]).what("mark outbox entries published")?;
    }
    Ok(())
}

/// One batch of retention: the oldest rows first, through the indexes by age.
pub(super) fn purge(conn: &Connection, what: Purge, before: i64, limit: usize) -> Result<usize> {
    let sql = match what {
        Purge::IdempotencyRecords => {
            "DELETE FROM idempotency WHERE key IN (
                 SELECT key FROM idempotency WHERE created_at_ms < ?1
                 ORDER BY created_at_ms LIMIT ?2)"
        }
        Purge::FinalReservations => SQL.purge_final.as_str(),
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute(params![before, limit]))
        .what("purge old rows")
}

#[cfg(test)]
mod tests {
    use super::*;
    use stockflow_domain::CommandResult;

    /// Results stored with idempotency keys must decode back into what was answered.
    #[test]
    fn command_results_round_trip_through_json() {
        let level = StockLevel::empty(
            Sku::parse("s").unwrap(),
            LocationId::parse("l").unwrap(),
            Region::parse("r").unwrap(),
        );
        let result = CommandResult::Stock(level);
        let text = serde_json::to_string(&result).unwrap();
        assert_eq!(
            serde_json::from_str::<CommandResult>(&text).unwrap(),
            result
        );
    }
}
