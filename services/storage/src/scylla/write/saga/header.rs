//! A saga's header row, read as the domain's [`Saga`] and moved by conditional writes;
//! and how a reservation is found — through its index, and its header where it has one.

use std::collections::BTreeMap;

use stockflow_domain::saga::{Attempt, Saga, SagaState};
use stockflow_domain::{LocationId, Reservation, ReservationId, ReservationStatus, Sku, StockKey};

use super::super::partition::Partitions;
use crate::scylla::cql::query;
use crate::scylla::cql::rows::{
    FencedMove, HeaderAbandon, HeaderMove, HeaderRow, HeaderWrite, IndexRow,
};
use crate::{Result, StoreError};

/// The header of reservation `id`, if it is a saga.
pub(crate) async fn header(p: &Partitions, id: &ReservationId) -> Result<Option<Saga>> {
    let row: Option<HeaderRow> = query::first(
        &p.session,
        "load reservation",
        &p.st.get_header,
        (id.as_str(),),
    )
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let status = row.status.unwrap_or_default();
    let state =
        SagaState::parse(&status).ok_or_else(|| StoreError::unknown("saga state", status))?;
    let lines = serde_json::from_str(&row.lines.unwrap_or_default())
        .map_err(StoreError::corrupt("saga lines"))?;
    let reservation = Reservation {
        id: id.clone(),
        status: ReservationStatus::Active,
        lines,
        reference: row.reference,
        created_at_ms: row.created_at.unwrap_or(0),
        expires_at_ms: row.expires_at.unwrap_or(0),
        updated_at_ms: row.updated_at.unwrap_or(0),
    };
    Ok(Some(Saga::from_header(
        reservation,
        state,
        row.owner.unwrap_or_default(),
    )))
}

/// The partitions that may hold lines of reservation `id`.
pub(crate) async fn indexed(p: &Partitions, id: &ReservationId) -> Result<Vec<StockKey>> {
    let rows: Vec<IndexRow> = query::rows(
        &p.session,
        "load reservation index",
        &p.st.index_of,
        (id.as_str(),),
    )
    .await?;
    rows.into_iter()
        .map(|row| {
            let corrupt = || StoreError::corrupt("reservation index");
            Ok(StockKey::new(
                Sku::parse(row.sku).map_err(corrupt())?,
                LocationId::parse(row.location).map_err(corrupt())?,
            ))
        })
        .collect()
}

/// Where a reservation's state lives.
pub(crate) enum Located {
    /// A saga: its header.
    Saga(Saga),
    /// Lines found through the index (none if the id is unknown), each a one-partition
    /// reservation of its own or the racing twin of one.
    Lines(Vec<StockKey>),
}

/// Finds reservation `id` with one read where it can: the index first, the header only if
/// the index names two keys or more, or none. A saga writes its index rows (at least two:
/// its lines are on distinct keys, the domain refuses a key named twice) in one batch
/// before its header, so an id indexed on exactly one key has no header. An empty index
/// may be a saga's that expired while its header did not (an active header has no TTL),
/// so the header is read then too.
pub(crate) async fn locate(p: &Partitions, id: &ReservationId) -> Result<Located> {
    let keys = indexed(p, id).await?;
    if keys.len() != 1
        && let Some(saga) = header(p, id).await?
    {
        return Ok(Located::Saga(saga));
    }
    Ok(Located::Lines(keys))
}

/// Lines of reservation `id` at `keys` (its index), by partition.
pub(crate) async fn single_lines(
    p: &Partitions,
    id: &ReservationId,
    keys: Vec<StockKey>,
) -> Result<BTreeMap<StockKey, Reservation>> {
    let mut out = BTreeMap::new();
    for key in keys {
        if let Some(line) = p.lines(&key, &[id.to_string()]).await?.remove(id.as_str()) {
            out.insert(key, line);
        }
    }
    Ok(out)
}

/// Writes `reservation`'s header in `state` for `owner`, if none exists; whether it did.
pub(super) async fn create(p: &Partitions, reservation: &Reservation, owner: &str) -> Result<bool> {
    write(p, reservation, SagaState::Pending, owner, true).await
}

/// Writes the header whole in its final `state` (every column, so the row expires as one).
pub(super) async fn finish(
    p: &Partitions,
    reservation: &Reservation,
    state: SagaState,
    owner: &str,
) -> Result<()> {
    write(p, reservation, state, owner, false).await.map(drop)
}

async fn write(
    p: &Partitions,
    reservation: &Reservation,
    state: SagaState,
    owner: &str,
    new: bool,
) -> Result<bool> {
    let lines =
        serde_json::to_string(&reservation.lines).map_err(StoreError::encode("saga lines"))?;
    let state = state.to_string();
    let row = HeaderWrite {
        id: reservation.id.as_str(),
        status: &state,
        owner,
        lines: &lines,
        reference: reservation.reference.as_deref(),
        created_at: reservation.created_at_ms,
        expires_at: reservation.expires_at_ms,
        updated_at: reservation.updated_at_ms,
    };
    if new {
        Ok(
            query::lwt(&p.session, "create reservation", &p.st.create_header, row)
                .await?
                .applied,
        )
    } else {
        query::exec(&p.session, "finish reservation", &p.st.finish_header, row).await?;
        Ok(true)
    }
}

/// Moves the header from `from` to `to` at `at_ms`, if it is still `from`.
pub(super) async fn move_state(
    p: &Partitions,
    id: &ReservationId,
    from: SagaState,
    to: SagaState,
    at_ms: i64,
) -> Result<bool> {
    let (from, to) = (from.to_string(), to.to_string());
    let row = HeaderMove {
        new_status: &to,
        moved_at: at_ms,
        id: id.as_str(),
        old_status: &from,
    };
    Ok(
        query::lwt(&p.session, "move reservation", &p.st.move_header, row)
            .await?
            .applied,
    )
}

/// Moves `attempt`'s header from `pending` to `to` (`pending` again: a step's lease) at
/// `at_ms`, if it is still pending and still that attempt's.
pub(super) async fn fenced_move(
    p: &Partitions,
    id: &ReservationId,
    attempt: &Attempt,
    to: SagaState,
    at_ms: i64,
) -> Result<bool> {
    let (from, to) = (SagaState::Pending.to_string(), to.to_string());
    let row = FencedMove {
        new_status: &to,
        moved_at: at_ms,
        id: id.as_str(),
        old_status: &from,
        owner: &attempt.owner,
        created_at: attempt.created_at_ms,
    };
    Ok(query::lwt(
        &p.session,
        "move reservation (fenced)",
        &p.st.fence_header,
        row,
    )
    .await?
    .applied)
}

/// Expiry's claim on an abandoned pending saga: `aborting`, if its header has not taken a
/// lease since `seen_updated_at`.
pub(super) async fn abandon(
    p: &Partitions,
    id: &ReservationId,
    seen_updated_at: i64,
    at_ms: i64,
) -> Result<bool> {
    let (from, to) = (
        SagaState::Pending.to_string(),
        SagaState::Aborting.to_string(),
    );
    let row = HeaderAbandon {
        new_status: &to,
        moved_at: at_ms,
        id: id.as_str(),
        old_status: &from,
        seen: seen_updated_at,
    };
    Ok(
        query::lwt(&p.session, "abandon reservation", &p.st.abandon_header, row)
            .await?
            .applied,
    )
}

/// Removes the header of a saga rolled back (while it is still `aborting`): the id is free
/// again.
pub(super) async fn delete_aborted(p: &Partitions, id: &ReservationId) -> Result<()> {
    let aborting = SagaState::Aborting.to_string();
    query::lwt(
        &p.session,
        "delete aborted reservation",
        &p.st.delete_header,
        (id.as_str(), aborting.as_str()),
    )
    .await
    .map(drop)
}
