//! Reservations that span partitions: a saga over per-partition steps, each made exactly
//! once by its reservation line, with every intermediate state recoverable.
//!
//! A header row in `reservations` carries the saga's state, moved by LWT:
//!
//! ```text
//! pending ──▶ active ──▶ settling:<how> ──▶ confirmed | released | expired
//!    │
//!    └──▶ aborting ──▶ (deleted: every line given back, the id free again)
//! ```
//!
//! - Reserve: index rows and deadlines first (plain, harmless alone), the header `pending`
//!   (`IF NOT EXISTS`), one step per line (the line row appears with the hold), the header
//!   `active`. A line that is short gives back the lines already held (their rows are
//!   *deleted*, so nothing of the failed attempt is reused by a later one) and removes the
//!   header. An infrastructure failure leaves the saga `pending`: the client's retry (same
//!   key) resumes it, and if nobody does, expiry aborts it [`RECOVERY_MS`] after it began.
//! - Settle: `active → settling:<how>` decides the outcome (one winner among confirm,
//!   release and expiry), then one step per line, then the final status. Expiry finishes a
//!   settlement left half-way, again [`RECOVERY_MS`] after it began.

use std::collections::BTreeMap;

use scylla::statement::batch::{Batch, BatchType};
use scylla::value::CqlValue;
use stockflow_domain::decide::{self, Settlement};
use stockflow_domain::{
    CommandResult, DomainError, EventKind, EventMeta, Reservation, ReservationId, ReservationLine,
    ReservationStatus, Reserve, StockKey,
};

use super::coalesce::Keys;
use super::cql::{Rows, db_error};
use super::partition::{Decision, KeyOp, LineWrite, Partitions, View, corrupt};
use super::statements::{HeaderRow, IndexRow, RECORD_TTL};
use crate::ports::IdempotencyToken;
use crate::{Result, StoreError, now_ms};

/// How long a saga may stay `pending`, `aborting` or `settling` before expiry completes it.
pub(super) const RECOVERY_MS: i64 = 30_000;
/// Index rows outlive every line they point to: a day of TTL plus final lines' lifetime.
const INDEX_TTL: i32 = RECORD_TTL + 86_400 + 3_600;

/// A saga's header.
#[derive(Debug, Clone)]
pub(super) struct Header {
    /// The reservation as the header describes it (status `Active` while not final).
    pub reservation: Reservation,
    /// The raw status (`pending`, `active`, `settling:<how>`, `aborting` or final).
    pub status: String,
    /// Who created it (`k:<idempotency key>` or `u:<uuid>`).
    pub owner: String,
}

pub(super) fn minute_of(ms: i64) -> i64 {
    ms.div_euclid(60_000)
}

/// The header of reservation `id`, if it is a saga.
pub(super) async fn header(p: &Partitions, id: &ReservationId) -> Result<Option<Header>> {
    let rows: Vec<HeaderRow> = p
        .query("load reservation", &p.st.get_header, (id.as_str(),))
        .await?;
    let Some(row) = rows.into_iter().next() else {
        return Ok(None);
    };
    let status = row.status.unwrap_or_default();
    // A settlement in progress is reported as its outcome: it can no longer fail.
    let shown = ReservationStatus::parse(status.strip_prefix("settling:").unwrap_or(&status))
        .unwrap_or(ReservationStatus::Active);
    let lines: Vec<ReservationLine> = serde_json::from_str(&row.lines.unwrap_or_default())?;
    Ok(Some(Header {
        reservation: Reservation {
            id: id.clone(),
            status: shown,
            lines,
            reference: row.reference,
            created_at_ms: row.created_at.unwrap_or(0),
            expires_at_ms: row.expires_at.unwrap_or(0),
            updated_at_ms: row.updated_at.unwrap_or(0),
        },
        status,
        owner: row.owner.unwrap_or_default(),
    }))
}

/// The partitions that may hold lines of reservation `id`.
pub(super) async fn indexed(p: &Partitions, id: &ReservationId) -> Result<Vec<StockKey>> {
    let rows: Vec<IndexRow> = p
        .query("load reservation index", &p.st.index_of, (id.as_str(),))
        .await?;
    rows.into_iter()
        .map(|row| {
            Ok(StockKey::new(
                stockflow_domain::Sku::parse(row.sku).map_err(corrupt)?,
                stockflow_domain::LocationId::parse(row.location).map_err(corrupt)?,
            ))
        })
        .collect()
}

/// Where a reservation's state lives.
pub(super) enum Located {
    /// A saga: its header.
    Saga(Header),
    /// Lines found through the index (none if the id is unknown), each a one-partition
    /// reservation of its own or the racing twin of one.
    Lines(Vec<StockKey>),
}

/// Finds reservation `id` with one read where it can: the index first, the header only if
/// the index names two keys or more, or none. A saga writes its index rows (at least two:
/// its lines are on distinct keys, the domain refuses a key named twice) in one batch
/// before its header, so an id indexed on exactly one key has no header. An empty index
/// may be a saga's that expired ([`INDEX_TTL`]) while its header did not (an active header
/// has no TTL), so the header is read then too.
pub(super) async fn locate(p: &Partitions, id: &ReservationId) -> Result<Located> {
    let keys = indexed(p, id).await?;
    if keys.len() != 1
        && let Some(h) = header(p, id).await?
    {
        return Ok(Located::Saga(h));
    }
    Ok(Located::Lines(keys))
}

/// Records that `id` has a line at each of `keys` and asks expiry to look at it at each of
/// `deadlines`, with `fingerprint`'s row if given, in one request (an unlogged batch: the
/// rows are independent, and each is idempotent, so a partial write is completed by the
/// retry that must follow its error).
pub(super) async fn index_with_deadlines(
    p: &Partitions,
    id: &ReservationId,
    keys: &[StockKey],
    deadlines: &[i64],
    fingerprint: Option<&IdempotencyToken>,
) -> Result<()> {
    let mut batch = Batch::new(BatchType::Unlogged);
    let mut values: Vec<Vec<CqlValue>> = Vec::new();
    let text = |s: &str| CqlValue::Text(s.to_string());
    for k in keys {
        batch.append_statement(p.st.index_line.clone());
        values.push(vec![
            text(id.as_str()),
            text(k.sku.as_str()),
            text(k.location.as_str()),
            CqlValue::Int(INDEX_TTL),
        ]);
    }
    for at in deadlines {
        batch.append_statement(p.st.insert_deadline.clone());
        values.push(vec![
            CqlValue::BigInt(minute_of(*at)),
            CqlValue::BigInt(*at),
            text(id.as_str()),
            CqlValue::Int(deadline_ttl(*at)),
        ]);
    }
    if let Some(token) = fingerprint {
        batch.append_statement(p.st.put_fingerprint.clone());
        values.push(vec![
            text(token.key.as_str()),
            text(token.fingerprint.as_str()),
        ]);
    }
    p.session
        .batch(&batch, values)
        .await
        .map_err(|e| db_error("index reservation and record its deadlines", e))?;
    Ok(())
}

/// Asks expiry to look at `id` at `at_ms`.
pub(super) async fn deadline(p: &Partitions, id: &ReservationId, at_ms: i64) -> Result<()> {
    p.session
        .execute_unpaged(
            &p.st.insert_deadline,
            (minute_of(at_ms), at_ms, id.as_str(), deadline_ttl(at_ms)),
        )
        .await
        .map_err(|e| db_error("record deadline", e))?;
    Ok(())
}

/// Seconds a deadline row lives: past its time by [`super::expiry::LOOK_BACK_MS`] and an
/// hour, so a row whose delete was lost (a crash, a timeout) leaves the index by itself once
/// expiry no longer looks that far back.
fn deadline_ttl(at_ms: i64) -> i32 {
    let ahead_ms = (at_ms - crate::now_ms()).max(0);
    let secs = (ahead_ms + super::expiry::LOOK_BACK_MS) / 1000 + 3600;
    i32::try_from(secs).unwrap_or(i32::MAX)
}

/// Forgets the deadlines of `id` at `times` (best effort: a stale one finds nothing to do).
pub(super) async fn forget_deadlines(p: &Partitions, id: &ReservationId, times: &[i64]) {
    for at in times {
        if let Err(e) = p
            .session
            .execute_unpaged(&p.st.delete_deadline, (minute_of(*at), *at, id.as_str()))
            .await
        {
            tracing::debug!(reservation = %id, error = %e, "cannot delete a deadline; it goes stale");
        }
    }
}

async fn move_header(
    p: &Partitions,
    id: &ReservationId,
    from: &str,
    to: &str,
    at_ms: i64,
) -> Result<bool> {
    let moved = p
        .session
        .execute_unpaged(&p.st.move_header, (to, at_ms, id.as_str(), from))
        .await
        .map_err(|e| db_error("move reservation", e))?;
    Rows::from(moved)?.applied()
}

/// The reservation as one of its lines stores it: the same header data, this line only.
fn line_record(reservation: &Reservation, line: &ReservationLine) -> Reservation {
    Reservation {
        lines: vec![line.clone()],
        ..reservation.clone()
    }
}

/// The step holding `line` for `reservation`: the line row appears with the hold, so a
/// step run twice (a resumed saga) holds once.
pub(super) fn reserve_step(
    reservation: &Reservation,
    line: &ReservationLine,
    meta: &EventMeta,
) -> KeyOp {
    let (record, meta, qty) = (line_record(reservation, line), meta.clone(), line.qty);
    KeyOp {
        cmd: None,
        line: Some(reservation.id.clone()),
        new_line: false,
        decide: Box::new(move |view: &View<'_>| match view.line {
            Some(held) if held.status == ReservationStatus::Active => Ok(Decision::Unchanged(
                CommandResult::Stock(view.level.clone()),
            )),
            Some(_) => Err(DomainError::ReservationExists(record.id.clone())),
            None => {
                let (level, event) = decide::reserve_line(
                    view.level,
                    &record.id,
                    qty,
                    record.reference.clone(),
                    &meta,
                )?;
                Ok(Decision::Change(Box::new(super::partition::Change {
                    result: CommandResult::Stock(level.clone()),
                    level,
                    event,
                    line: Some(LineWrite::Put(record.clone())),
                })))
            }
        }),
    }
}

/// The step giving back what `id` holds in a partition (nothing if it holds nothing).
fn compensate_step(id: &ReservationId, meta: &EventMeta) -> KeyOp {
    let (id, meta) = (id.clone(), meta.clone());
    KeyOp {
        cmd: None,
        line: Some(id.clone()),
        new_line: false,
        decide: Box::new(move |view: &View<'_>| match view.line {
            Some(held) if held.status == ReservationStatus::Active => {
                let qty = held.lines.first().map_or(0, |l| l.qty);
                let (level, event) =
                    decide::compensate_line(view.level, &id, qty, held.reference.clone(), &meta);
                Ok(Decision::Change(Box::new(super::partition::Change {
                    result: CommandResult::Stock(level.clone()),
                    level,
                    event,
                    line: Some(LineWrite::Delete),
                })))
            }
            _ => Ok(Decision::Unchanged(CommandResult::Stock(
                view.level.clone(),
            ))),
        }),
    }
}

/// The step settling one line `how` (the header already says so).
pub(super) fn settle_step(
    how: Settlement,
    kind: EventKind,
    reservation: &Reservation,
    status: ReservationStatus,
    meta: &EventMeta,
) -> KeyOp {
    let (reservation, meta) = (reservation.clone(), meta.clone());
    KeyOp {
        cmd: None,
        line: Some(reservation.id.clone()),
        new_line: false,
        decide: Box::new(move |view: &View<'_>| match view.line {
            Some(held) if held.status == ReservationStatus::Active => {
                let Some(line) = held.lines.first() else {
                    return Ok(Decision::Unchanged(CommandResult::Stock(
                        view.level.clone(),
                    )));
                };
                let (level, event) =
                    decide::settle_line(how, kind, &reservation, line, view.level, &meta);
                let record = Reservation {
                    status,
                    updated_at_ms: meta.occurred_at_ms,
                    ..held.clone()
                };
                Ok(Decision::Change(Box::new(super::partition::Change {
                    result: CommandResult::Stock(level.clone()),
                    level,
                    event,
                    line: Some(LineWrite::Put(record)),
                })))
            }
            // Settled by an earlier run of this step, or never held (a line of an aborted
            // attempt): nothing to do.
            _ => Ok(Decision::Unchanged(CommandResult::Stock(
                view.level.clone(),
            ))),
        }),
    }
}

/// Runs `step` for every line of `lines`, one partition at a time, stopping at the first
/// error.
async fn each_line(
    keys: &Keys,
    lines: &[ReservationLine],
    step: impl Fn(&ReservationLine) -> KeyOp,
) -> Result<usize> {
    let mut events = 0;
    for line in lines {
        events += keys.apply(&line.key(), step(line)).await?.events;
    }
    Ok(events)
}

/// A multi-line reservation (see the module docs). `owner` identifies the client request.
pub(super) async fn reserve(
    keys: &Keys,
    cmd: &Reserve,
    owner: &str,
    meta: &EventMeta,
) -> Result<(CommandResult, usize)> {
    let p = &*keys.partitions;
    let resuming = match header(p, &cmd.id).await? {
        Some(h) if h.owner != owner => {
            return Err(DomainError::ReservationExists(cmd.id.clone()).into());
        }
        Some(h) if h.status == "pending" => true,
        Some(h) if h.status == "aborting" => {
            return Err(StoreError::Unavailable(
                "this reservation is being rolled back; retry".into(),
            ));
        }
        // The client's own request, finished before (its answer was lost): answer again.
        Some(h) => return Ok((CommandResult::Reservation(h.reservation), 0)),
        None => false,
    };
    if !resuming {
        // Look first: a request that cannot succeed writes nothing, and every short line is
        // reported at once.
        let mut levels = Vec::with_capacity(cmd.lines.len());
        for line in &cmd.lines {
            levels.push(p.level_or_empty(&line.key()).await?);
        }
        decide::reserve(&levels, None, cmd, meta)?;
        for k in indexed(p, &cmd.id).await? {
            if !p.lines(&k, &[cmd.id.to_string()]).await?.is_empty() {
                return Err(DomainError::ReservationExists(cmd.id.clone()).into());
            }
        }
    }
    let reservation = decide::new_reservation(cmd, meta.occurred_at_ms);
    let recovery_at = meta.occurred_at_ms + RECOVERY_MS;
    if !resuming {
        let line_keys: Vec<StockKey> = reservation.lines.iter().map(|l| l.key()).collect();
        index_with_deadlines(
            p,
            &cmd.id,
            &line_keys,
            &[reservation.expires_at_ms, recovery_at],
            None,
        )
        .await?;
        let created = p
            .session
            .execute_unpaged(
                &p.st.create_header,
                (
                    cmd.id.as_str(),
                    owner,
                    serde_json::to_string(&reservation.lines)?,
                    cmd.reference.as_deref(),
                    reservation.created_at_ms,
                    reservation.expires_at_ms,
                    reservation.updated_at_ms,
                ),
            )
            .await
            .map_err(|e| db_error("create reservation", e))?;
        if !Rows::from(created)?.applied()? {
            return Err(DomainError::ReservationExists(cmd.id.clone()).into());
        }
    }
    let held = each_line(keys, &reservation.lines, |line| {
        reserve_step(&reservation, line, meta)
    })
    .await;
    let events = match held {
        Ok(events) => events,
        Err(StoreError::Domain(refusal)) => {
            // A line is short now (it was not when we looked): give back what this attempt
            // holds and free the id.
            abort(keys, &reservation, "pending", meta).await?;
            forget_deadlines(p, &cmd.id, &[reservation.expires_at_ms, recovery_at]).await;
            return Err(refusal.into());
        }
        // Left `pending`: a retry resumes it, or expiry rolls it back.
        Err(e) => return Err(e),
    };
    if !move_header(p, &cmd.id, "pending", "active", meta.occurred_at_ms).await? {
        match header(p, &cmd.id).await? {
            // A concurrent resume of the same request got there first.
            Some(h) if h.status == "active" => {}
            _ => {
                // Expiry judged this attempt abandoned and is rolling it back.
                abort(keys, &reservation, "aborting", meta).await?;
                return Err(StoreError::Unavailable(
                    "the reservation took too long and was rolled back; retry".into(),
                ));
            }
        }
    }
    forget_deadlines(p, &cmd.id, &[recovery_at]).await;
    Ok((CommandResult::Reservation(reservation), events))
}

/// Rolls back a saga that is `from` (`pending` or `aborting`): marks it `aborting`, gives
/// back every line, removes the header. Idempotent; safe beside a run of the saga itself.
async fn abort(keys: &Keys, reservation: &Reservation, from: &str, meta: &EventMeta) -> Result<()> {
    let p = &*keys.partitions;
    if from == "pending"
        && !move_header(p, &reservation.id, "pending", "aborting", now_ms()).await?
    {
        // Already aborting (or gone): carry on giving back, which is idempotent.
        tracing::debug!(reservation = %reservation.id, "abort found the saga moved on");
    }
    let events = each_line(keys, &reservation.lines, |_| {
        compensate_step(&reservation.id, meta)
    })
    .await?;
    metrics::counter!("stockflow_reservation_compensations_total").increment(events as u64);
    let deleted = p
        .session
        .execute_unpaged(&p.st.delete_header, (reservation.id.as_str(), "aborting"))
        .await
        .map_err(|e| db_error("delete aborted reservation", e))?;
    Rows::from(deleted)?.applied()?;
    Ok(())
}

/// Settles (or recovers) the saga reservation `h`.
pub(super) async fn settle(
    keys: &Keys,
    h: Header,
    how: Settlement,
    meta: &EventMeta,
) -> Result<(CommandResult, usize)> {
    let p = &*keys.partitions;
    let id = h.reservation.id.clone();
    let age = meta.occurred_at_ms - h.reservation.updated_at_ms;
    match h.status.as_str() {
        "pending" | "aborting" => {
            // Invisible until active. Expiry rolls back an abandoned attempt.
            if how == Settlement::Expire && (h.status == "aborting" || age >= RECOVERY_MS) {
                abort(keys, &h.reservation, &h.status, meta).await?;
                forget_deadlines(
                    p,
                    &id,
                    &[
                        h.reservation.expires_at_ms,
                        h.reservation.created_at_ms + RECOVERY_MS,
                    ],
                )
                .await;
            }
            Err(DomainError::ReservationNotFound(id).into())
        }
        "active" => {
            let Some((status, kind)) =
                decide::settlement(how, &h.reservation, meta.occurred_at_ms)?
            else {
                return Ok((CommandResult::Reservation(h.reservation), 0));
            };
            let target = format!("settling:{}", status.as_str());
            let recovery_at = meta.occurred_at_ms + RECOVERY_MS;
            deadline(p, &id, recovery_at).await?;
            if !move_header(p, &id, "active", &target, meta.occurred_at_ms).await? {
                // Someone settled it first: answer from the new state, and take back the
                // recovery deadline nothing will need.
                forget_deadlines(p, &id, &[recovery_at]).await;
                let now = header(p, &id).await?;
                let status = now.map_or(ReservationStatus::Released, |h| h.reservation.status);
                return Err(DomainError::ReservationNotActive { id, status }.into());
            }
            finish(keys, &h, how, status, kind, recovery_at, meta).await
        }
        s if s.starts_with("settling:") => {
            // A settlement left half-way: finish it, whoever asks.
            let status = h.reservation.status;
            let Some((started, kind)) = settlement_of(status) else {
                return Err(StoreError::Corrupt(format!("reservation status {s}")));
            };
            let recovery_at = h.reservation.updated_at_ms + RECOVERY_MS;
            let finished = finish(keys, &h, started, status, kind, recovery_at, meta).await?;
            if started == how || how == Settlement::Expire {
                Ok(finished)
            } else {
                Err(DomainError::ReservationNotActive { id, status }.into())
            }
        }
        _ => Err(DomainError::ReservationNotActive {
            id,
            status: h.reservation.status,
        }
        .into()),
    }
}

/// The settlement that ends in `status`, and its event kind.
fn settlement_of(status: ReservationStatus) -> Option<(Settlement, EventKind)> {
    match status {
        ReservationStatus::Confirmed => {
            Some((Settlement::Confirm, EventKind::ReservationConfirmed))
        }
        ReservationStatus::Released => Some((Settlement::Release, EventKind::ReservationReleased)),
        ReservationStatus::Expired => Some((Settlement::Expire, EventKind::ReservationExpired)),
        ReservationStatus::Active => None,
    }
}

/// Settles every line, then records the final status and forgets the deadlines.
#[allow(clippy::too_many_arguments)]
async fn finish(
    keys: &Keys,
    header: &Header,
    how: Settlement,
    status: ReservationStatus,
    kind: EventKind,
    recovery_at: i64,
    meta: &EventMeta,
) -> Result<(CommandResult, usize)> {
    let p = &*keys.partitions;
    let reservation = &header.reservation;
    let events = each_line(keys, &reservation.lines, |_| {
        settle_step(how, kind, reservation, status, meta)
    })
    .await?;
    p.session
        .execute_unpaged(
            &p.st.finish_header,
            (
                reservation.id.as_str(),
                status.as_str(),
                header.owner.as_str(),
                serde_json::to_string(&reservation.lines)?,
                reservation.reference.as_deref(),
                reservation.created_at_ms,
                reservation.expires_at_ms,
                meta.occurred_at_ms,
            ),
        )
        .await
        .map_err(|e| db_error("finish reservation", e))?;
    forget_deadlines(
        p,
        &reservation.id,
        &[reservation.expires_at_ms, recovery_at],
    )
    .await;
    Ok((
        CommandResult::Reservation(Reservation {
            status,
            updated_at_ms: meta.occurred_at_ms,
            ..reservation.clone()
        }),
        events,
    ))
}

/// Lines of reservation `id` at `keys` (its index), by partition.
pub(super) async fn single_lines(
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
