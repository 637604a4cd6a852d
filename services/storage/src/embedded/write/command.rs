//! One command on the write database, inside the writer's transaction: replay its key's
//! answer if it ran before, else load the state it touches, ask the domain, and persist the
//! answer — the new state with its outbox entries, and the idempotency record (a success,
//! or a refusal the domain says is kept).

use rusqlite::Connection;
use stockflow_domain::decide::{self, Settlement};
use stockflow_domain::{
    Answer, Applied, Command, EventMeta, LocationGrant, RecordedAnswer, Refusal, ReservationId,
    StockKey, StockLevel,
};

use super::rows;
use crate::Result;
use crate::ports::{CommandRequest, Executed};
use crate::stop::{Step, Stop, executed, replayed};

pub(super) fn execute(conn: &Connection, req: &CommandRequest, now: i64) -> Result<Executed> {
    // A command naming a location outside the caller's grant is refused before anything is
    // read (not kept under its key: nothing ran). A settlement's lines are checked by its
    // decision below, in this transaction.
    if let Err(refusal) = decide::authorize(&req.command, &req.grant) {
        return Ok(Executed::refused(refusal));
    }
    if let Some(token) = &req.idempotency
        && let Some(record) = rows::load_record(conn, &token.key)?
    {
        let same_request = record.fingerprint == token.fingerprint;
        return executed(replayed(record.answer.replay(same_request)));
    }
    let meta = EventMeta {
        actor: req.actor.clone(),
        idempotency_key: req.idempotency.as_ref().map(|t| t.key.clone()),
        trace_context: req.trace_context.clone(),
        occurred_at_ms: now,
    };
    let decided: Answer<Applied> = match decide_command(conn, &req.command, &req.grant, &meta) {
        Ok(applied) => Ok(applied),
        Err(Stop::Refused(refusal)) => Err(refusal),
        Err(Stop::Failed(e)) => return Err(e),
    };
    if let Ok(applied) = &decided {
        rows::write_applied(conn, applied, now)?;
    }
    let events = decided.as_ref().map_or(0, |a| a.events.len());
    let answer = decided.map(|a| a.result);
    if let Some(token) = &req.idempotency
        && let Some(recorded) = RecordedAnswer::of(&answer)
    {
        rows::insert_record(conn, token, &recorded, now)?;
    }
    Ok(Executed {
        answer,
        replayed: false,
        events,
    })
}

/// Loads what `command` touches and asks the domain what to do, for a caller holding
/// `grant`.
fn decide_command(
    conn: &Connection,
    command: &Command,
    grant: &LocationGrant,
    meta: &EventMeta,
) -> Step<Applied> {
    Ok(match command {
        Command::Adjust(cmd) => {
            let level = level_or_empty(conn, &cmd.key)?;
            decide::adjust(&level, cmd, grant, meta)?
        }
        Command::Reserve(cmd) => {
            let existing = rows::load_reservation(conn, &cmd.id)?;
            let levels = cmd
                .lines
                .iter()
                .map(|line| level_or_empty(conn, &line.key()))
                .collect::<Step<Vec<_>>>()?;
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
) -> Step<Applied> {
    let reservation = rows::load_reservation(conn, id)?
        .ok_or_else(|| Refusal::ReservationNotFound(id.clone()))?;
    let levels = reservation
        .lines
        .iter()
        .map(|line| level_or_empty(conn, &line.key()))
        .collect::<Step<Vec<_>>>()?;
    Ok(decide::settle(how, &reservation, &levels, grant, meta)?)
}

/// The level of `key`, or what the domain makes of a key never written.
fn level_or_empty(conn: &Connection, key: &StockKey) -> Step<StockLevel> {
    if let Some(level) = rows::load_level(conn, key)? {
        return Ok(level);
    }
    let region = rows::load_region(conn, &key.location)?;
    Ok(StockLevel::never_written(key, region)?)
}
