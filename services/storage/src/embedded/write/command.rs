//! One command on the write database, inside the writer's transaction: replay its key's
//! answer if it ran before, else load the state it touches, ask the domain, and persist the
//! answer — the new state with its outbox entries, and the idempotency record (a success,
//! or a refusal the domain says is kept).

use rusqlite::Connection;
use stockflow_domain::decide::{self, Settlement, transfer};
use stockflow_domain::{
    Answer, Applied, Command, EventMeta, LocationGrant, RecordedAnswer, Refusal, ReservationId,
    StockKey, StockLevel, Transfer, TransferId,
};

use super::{records, rows};
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
    let events = decided.as_ref().map_or(0, Applied::event_count);
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
            let holders = if decide::needs_holders(cmd) {
                records::holders(conn, &cmd.key)?
            } else {
                Vec::new()
            };
            decide::adjust(&level, cmd, grant, &holders, meta)?
        }
        Command::Move(cmd) => {
            decide::move_units(&level_or_empty(conn, &cmd.key)?, cmd, grant, meta)?
        }
        Command::ExpectIncoming(cmd) => {
            decide::expect_incoming(&level_or_empty(conn, &cmd.key)?, cmd, grant, meta)?
        }
        Command::CloseIncoming(cmd) => {
            decide::close_incoming(&level_or_empty(conn, &cmd.key)?, cmd, grant, meta)?
        }
        Command::SetAllocation(cmd) => {
            decide::set_allocation(&level_or_empty(conn, &cmd.key)?, cmd, grant, meta)?
        }
        Command::SetPolicy(cmd) => match cmd.key() {
            Some(key) => {
                decide::set_location_policy(&level_or_empty(conn, &key)?, cmd, grant, meta)?
            }
            None => {
                let current = records::load_sku_policy(conn, &cmd.sku)?;
                decide::set_sku_policy(current.as_ref(), cmd, grant, meta)?
            }
        },
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
        Command::CreateTransfer(cmd) => {
            let existing = records::load_transfer(conn, &cmd.id)?;
            let from = rows::load_region(conn, &cmd.from)?;
            let to = rows::load_region(conn, &cmd.to)?;
            let now = meta.occurred_at_ms;
            transfer::create(existing.as_ref(), cmd, from, to, grant, now)?
        }
        Command::ShipTransfer { id } => {
            let t = load_transfer(conn, id)?;
            transfer::check_shippable(&t, grant)?;
            let sources = levels(conn, t.lines.iter().map(|l| t.source_key(l)))?;
            let destinations = levels(conn, t.lines.iter().map(|l| t.destination_key(l)))?;
            transfer::ship(&t, &sources, &destinations, grant, meta)?
        }
        Command::ReceiveTransfer(cmd) => {
            let t = load_transfer(conn, &cmd.id)?;
            let destinations = levels(conn, t.lines.iter().map(|l| t.destination_key(l)))?;
            transfer::receive(&t, cmd, &destinations, grant, meta)?
        }
        Command::CancelTransfer { id } => {
            let t = load_transfer(conn, id)?;
            transfer::cancel(&t, grant, meta.occurred_at_ms)?
        }
    })
}

/// Transfer `id` (an unknown id is `transfer_not_found`, for any caller).
fn load_transfer(conn: &Connection, id: &TransferId) -> Step<Transfer> {
    Ok(records::load_transfer(conn, id)?.ok_or_else(|| Refusal::TransferNotFound(id.clone()))?)
}

/// The levels of `keys`, in order.
fn levels(conn: &Connection, keys: impl Iterator<Item = StockKey>) -> Step<Vec<StockLevel>> {
    keys.map(|key| level_or_empty(conn, &key)).collect()
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

/// The level of `key` (or what the domain makes of a key never written), with its SKU's
/// policy attached.
fn level_or_empty(conn: &Connection, key: &StockKey) -> Step<StockLevel> {
    let level = match rows::load_level(conn, key)? {
        Some(level) => level,
        None => StockLevel::never_written(key, rows::load_region(conn, &key.location)?)?,
    };
    Ok(records::attach_sku_policy(conn, level)?)
}
