//! What each job of the embedded writer does on the write database, inside the writer's
//! transaction: load the state a command needs, ask the domain, persist its answer (stock
//! rows, reservation, outbox entries, idempotency record); catalog upserts, marking outbox
//! entries published and retention batches. [`super::write`] batches and commits these.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};
use stockflow_domain::decide::{self, Settlement};
use stockflow_domain::ids::Region;
use stockflow_domain::{
    Applied, BusEvent, CatalogEvent, Command, DomainError, EventMeta, Location, LocationGrant,
    LocationId, LocationKind, RecordedAnswer, Reservation, ReservationId, ReservationStatus, Sku,
    SkuCatalog, StockKey, StockLevel,
};

use super::sqlite::{from_sql_u64, to_sql_u64};
use crate::ports::{CommandOutcome, CommandRequest, Purge};
use crate::{Result, StoreError};

/// One batch of retention: the oldest rows first, through the indexes by age.
pub(super) fn purge(conn: &Connection, what: Purge, before: i64, limit: usize) -> Result<usize> {
    let sql = match what {
        Purge::IdempotencyRecords => {
            "DELETE FROM idempotency WHERE key IN (
                 SELECT key FROM idempotency WHERE created_at_ms < ?1
                 ORDER BY created_at_ms LIMIT ?2)"
        }
        Purge::FinalReservations => {
            "DELETE FROM reservations WHERE id IN (
                 SELECT id FROM reservations WHERE status != 'active' AND updated_at_ms < ?1
                 ORDER BY updated_at_ms LIMIT ?2)"
        }
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    Ok(conn.prepare_cached(sql)?.execute(params![before, limit])?)
}

pub(super) fn execute(conn: &Connection, req: &CommandRequest, now: i64) -> Result<CommandOutcome> {
    // A command naming a location outside the caller's grant is refused before anything is
    // read (not kept under its key: nothing ran). A settlement's lines are checked by its
    // decision below, in this transaction.
    decide::authorize(&req.command, &req.grant)?;
    if let Some(token) = &req.idempotency {
        let stored: Option<(String, String)> = conn
            .prepare_cached("SELECT fingerprint, result FROM idempotency WHERE key = ?1")?
            .query_row([token.key.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((fingerprint, result)) = stored {
            if fingerprint != token.fingerprint {
                return Err(StoreError::IdempotencyKeyReused);
            }
            let answer: RecordedAnswer = serde_json::from_str(&result)?;
            return Ok(CommandOutcome {
                result: answer.into_result()?,
                replayed: true,
                events: 0,
            });
        }
    }
    let meta = EventMeta {
        actor: req.actor.clone(),
        idempotency_key: req.idempotency.as_ref().map(|t| t.key.to_string()),
        trace_context: req.trace_context.clone(),
        occurred_at_ms: now,
    };
    let decided = match decide_command(conn, &req.command, &req.grant, &meta) {
        Ok(applied) => Ok(applied),
        Err(StoreError::Domain(refusal)) => Err(refusal),
        Err(e) => return Err(e),
    };
    let answer = decided
        .as_ref()
        .map(|a| a.result.clone())
        .map_err(Clone::clone);
    if let Ok(applied) = &decided {
        write_applied(conn, applied, now)?;
    }
    if let Some(token) = &req.idempotency
        && let Some(recorded) = RecordedAnswer::of(&answer)
    {
        conn.prepare_cached(
            "INSERT INTO idempotency (key, fingerprint, result, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            token.key.as_str(),
            token.fingerprint,
            serde_json::to_string(&recorded)?,
            now
        ])?;
    }
    let applied = decided?;
    Ok(CommandOutcome {
        events: applied.events.len(),
        result: applied.result,
        replayed: false,
    })
}

/// Loads what `command` touches and asks the domain what to do, for a caller holding
/// `grant`.
fn decide_command(
    conn: &Connection,
    command: &Command,
    grant: &LocationGrant,
    meta: &EventMeta,
) -> Result<Applied> {
    Ok(match command {
        Command::Adjust(cmd) => {
            let level = level_or_empty(conn, &cmd.key)?;
            decide::adjust(&level, cmd, grant, meta)?
        }
        Command::Reserve(cmd) => {
            let existing = load_reservation(conn, &cmd.id)?;
            let levels = cmd
                .lines
                .iter()
                .map(|line| level_or_empty(conn, &line.key()))
                .collect::<Result<Vec<_>>>()?;
            decide::reserve(&levels, existing.as_ref(), cmd, grant, meta)?
        }
        Command::Confirm { id } => settle(conn, id, Settlement::Confirm, grant, meta)?,
        Command::Release { id } => settle(conn, id, Settlement::Release, grant, meta)?,
        Command::Expire { id } => settle(conn, id, Settlement::Expire, grant, meta)?,
    })
}

/// Loads the reservation (an unknown id is `reservation_not_found`, for any caller) and its
/// lines' levels, and asks the domain, which checks the loaded lines against `grant`.
fn settle(
    conn: &Connection,
    id: &ReservationId,
    how: Settlement,
    grant: &LocationGrant,
    meta: &EventMeta,
) -> Result<Applied> {
    let reservation =
        load_reservation(conn, id)?.ok_or_else(|| DomainError::ReservationNotFound(id.clone()))?;
    let levels = reservation
        .lines
        .iter()
        .map(|line| level_or_empty(conn, &line.key()))
        .collect::<Result<Vec<_>>>()?;
    Ok(decide::settle(how, &reservation, &levels, grant, meta)?)
}

/// The level of `key`, or an empty one at a known location; unknown locations are refused.
fn level_or_empty(conn: &Connection, key: &StockKey) -> Result<StockLevel> {
    if let Some(level) = load_level(conn, key)? {
        return Ok(level);
    }
    let region: Option<String> = conn
        .prepare_cached("SELECT region FROM locations WHERE id = ?1")?
        .query_row([key.location.as_str()], |r| r.get(0))
        .optional()?;
    let region = region.ok_or_else(|| DomainError::LocationNotFound(key.location.clone()))?;
    Ok(StockLevel::empty(
        key.sku.clone(),
        key.location.clone(),
        Region::parse(region).map_err(|e| StoreError::Corrupt(e.to_string()))?,
    ))
}

fn write_applied(conn: &Connection, applied: &Applied, now: i64) -> Result<()> {
    for level in &applied.levels {
        // The guard proves the writer read what it overwrites; with one writer it always
        // holds, and if it ever does not, the command fails instead of losing an update.
        let changed = conn
            .prepare_cached(
                "INSERT INTO stock (sku, location, region, on_hand, reserved, version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (sku, location) DO UPDATE
                 SET on_hand = excluded.on_hand, reserved = excluded.reserved, version = excluded.version
                 WHERE stock.version = excluded.version - 1",
            )?
            .execute(params![
                level.sku.as_str(),
                level.location.as_str(),
                level.region.as_str(),
                level.on_hand,
                level.reserved,
                to_sql_u64(level.version)
            ])?;
        if changed != 1 {
            return Err(StoreError::Unavailable(format!(
                "concurrent write on {}@{}; retry",
                level.sku, level.location
            )));
        }
    }
    if let Some(r) = &applied.reservation {
        conn.prepare_cached(
            "INSERT INTO reservations (id, status, reference, lines, created_at_ms, expires_at_ms, updated_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (id) DO UPDATE SET status = excluded.status, updated_at_ms = excluded.updated_at_ms",
        )?
        .execute(params![
            r.id.as_str(),
            r.status.as_str(),
            r.reference,
            serde_json::to_string(&r.lines)?,
            r.created_at_ms,
            r.expires_at_ms,
            r.updated_at_ms
        ])?;
    }
    for event in &applied.events {
        insert_outbox(conn, &BusEvent::Stock(event.clone()), now)?;
    }
    Ok(())
}

fn insert_outbox(conn: &Connection, event: &BusEvent, now: i64) -> Result<()> {
    conn.prepare_cached("INSERT INTO outbox (key, payload, created_at_ms) VALUES (?1, ?2, ?3)")?
        .execute(params![
            event.key().as_str(),
            serde_json::to_vec(event)?,
            now
        ])?;
    Ok(())
}

pub(super) fn put_location(conn: &Connection, location: Location) -> Result<Location> {
    location.may_replace(load_location(conn, &location.id)?.as_ref())?;
    conn.prepare_cached(
        "INSERT INTO locations (id, region, kind, name) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET region = excluded.region, kind = excluded.kind, name = excluded.name",
    )?
    .execute(params![
        location.id.as_str(),
        location.region.as_str(),
        location.kind.as_str(),
        location.name
    ])?;
    Ok(location)
}

pub(super) fn put_sku(
    conn: &Connection,
    sku: Sku,
    name: String,
    attributes: BTreeMap<String, String>,
    now: i64,
) -> Result<SkuCatalog> {
    let version: Option<i64> = conn
        .prepare_cached("SELECT version FROM skus WHERE sku = ?1")?
        .query_row([sku.as_str()], |r| r.get(0))
        .optional()?;
    let version = from_sql_u64(version.unwrap_or(0)) + 1;
    conn.prepare_cached(
        "INSERT INTO skus (sku, name, attributes, version) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (sku) DO UPDATE SET name = excluded.name, attributes = excluded.attributes, version = excluded.version",
    )?
    .execute(params![
        sku.as_str(),
        name,
        serde_json::to_string(&attributes)?,
        to_sql_u64(version)
    ])?;
    let event = BusEvent::Catalog(CatalogEvent {
        event_id: format!("{sku}/catalog/{version}"),
        sku: sku.clone(),
        name: name.clone(),
        attributes: attributes.clone(),
        version,
        occurred_at_ms: now,
    });
    insert_outbox(conn, &event, now)?;
    Ok(SkuCatalog {
        sku,
        name,
        attributes,
        version,
    })
}

pub(super) fn mark_published(conn: &Connection, ids: &[i64]) -> Result<()> {
    let mut stmt = conn.prepare_cached("DELETE FROM outbox WHERE id = ?1")?;
    for id in ids {
        stmt.execute([id])?;
    }
    Ok(())
}

type RowResult<T> = std::result::Result<T, rusqlite::Error>;

pub(super) fn row_to_level(row: &rusqlite::Row<'_>) -> RowResult<Result<StockLevel>> {
    let sku: String = row.get(0)?;
    let location: String = row.get(1)?;
    let region: String = row.get(2)?;
    let (on_hand, reserved, version): (i64, i64, i64) = (row.get(3)?, row.get(4)?, row.get(5)?);
    Ok((|| {
        Ok(StockLevel {
            sku: Sku::parse(sku).map_err(corrupt)?,
            location: LocationId::parse(location).map_err(corrupt)?,
            region: Region::parse(region).map_err(corrupt)?,
            on_hand,
            reserved,
            version: from_sql_u64(version),
        })
    })())
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

pub(super) fn load_level(conn: &Connection, key: &StockKey) -> Result<Option<StockLevel>> {
    let row = conn
        .prepare_cached(
            "SELECT sku, location, region, on_hand, reserved, version FROM stock WHERE sku = ?1 AND location = ?2",
        )?
        .query_row([key.sku.as_str(), key.location.as_str()], row_to_level)
        .optional()?;
    row.transpose()
}

pub(super) fn load_location(conn: &Connection, id: &LocationId) -> Result<Option<Location>> {
    let row: Option<(String, String, String)> = conn
        .prepare_cached("SELECT region, kind, name FROM locations WHERE id = ?1")?
        .query_row([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    row.map(|(region, kind, name)| {
        Ok(Location {
            id: id.clone(),
            region: Region::parse(region).map_err(corrupt)?,
            kind: LocationKind::parse(&kind)
                .ok_or_else(|| corrupt(format!("location kind {kind}")))?,
            name,
        })
    })
    .transpose()
}

pub(super) fn load_reservation(
    conn: &Connection,
    id: &ReservationId,
) -> Result<Option<Reservation>> {
    let row: Option<(String, Option<String>, String, i64, i64, i64)> = conn
        .prepare_cached(
            "SELECT status, reference, lines, created_at_ms, expires_at_ms, updated_at_ms FROM reservations WHERE id = ?1",
        )?
        .query_row([id.as_str()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
        })
        .optional()?;
    row.map(
        |(status, reference, lines, created_at_ms, expires_at_ms, updated_at_ms)| {
            Ok(Reservation {
                id: id.clone(),
                status: ReservationStatus::parse(&status)
                    .ok_or_else(|| corrupt(format!("reservation status {status}")))?,
                lines: serde_json::from_str(&lines)?,
                reference,
                created_at_ms,
                expires_at_ms,
                updated_at_ms,
            })
        },
    )
    .transpose()
}

/// Results stored with idempotency keys must decode back into what was answered.
#[cfg(test)]
mod tests {
    use super::*;
    use stockflow_domain::CommandResult;

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
