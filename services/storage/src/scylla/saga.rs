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
//!   key) resumes it, and if nobody does, expiry aborts it once it has been idle for the
//!   recovery window ([`RECOVERY_MS`]).
//! - Settle: `active → settling:<how>` decides the outcome (one winner among confirm,
//!   release and expiry), then one step per line, then the final status. Expiry finishes a
//!   settlement left half-way, again [`RECOVERY_MS`] after it began.
//!
//! **A pending saga is fenced.** Its lines and expiry's rollback exclude each other
//! through conditional writes on the one header row, so no hold can outlive its
//! reservation (a slow saga's later line landing after expiry gave the earlier ones back):
//!
//! - An *attempt* is the header's `(owner, created_at)`; a retry that resumes a pending
//!   saga adopts it (and writes the very same line records), a retry after a rollback is a
//!   new attempt.
//! - Before each line step (but the first of a new attempt, whose header was just written)
//!   the attempt takes a *lease*: `updated_at = now IF status = 'pending' AND owner AND
//!   created_at` are its own. The step is decided and sent only within half the recovery
//!   window after that ([`KeyOp::not_after`]); the driver's timeout bounds when it lands.
//!   The lease is stamped by the saga's clock and judged by expiry's: what is left of the
//!   window's second half after the driver's request timeout (10 s) is the clock skew
//!   tolerated (5 s at the default 30 s).
//! - Expiry rolls back only a saga idle for the whole window, by `pending → aborting IF
//!   updated_at = <the value it judged>`: a lease taken meanwhile makes it lose, and once it
//!   wins no lease can be taken. Its rollback reads each line through Paxos, completing a
//!   step still in flight, and gives back what that attempt holds.
//! - An attempt whose lease, own rollback or `pending → active` is refused looks at the
//!   header: made `active` by a concurrent run of the same attempt, it answers that;
//!   otherwise it gives back every line *it* holds (never another attempt's), so a line
//!   that landed after the header left `pending` is compensated by its writer.
//! - Every compensation gives back a line only if it holds exactly that attempt's record,
//!   and a step finding another attempt's line refuses (`reservation_exists`) rather than
//!   adopting it.

use std::collections::BTreeMap;

use scylla::statement::batch::{Batch, BatchType};
use scylla::value::CqlValue;
use stockflow_domain::decide::{self, Settlement};
use stockflow_domain::{
    CommandResult, DomainError, EventKind, EventMeta, LocationGrant, Reservation, ReservationId,
    ReservationLine, ReservationStatus, Reserve, StockKey,
};

use super::coalesce::Keys;
use super::cql::{Rows, db_error};
use super::partition::{Decision, KeyOp, LineWrite, Partitions, View, corrupt};
use super::statements::{HeaderRow, IndexRow, RECORD_TTL};
use crate::ports::IdempotencyToken;
use crate::{Result, StoreError, now_ms};

/// How long a saga may stay `pending` without taking a step's lease, or `aborting` or
/// `settling`, before expiry completes it. (A store can be given another window for tests:
/// [`Partitions::recovery_ms`].)
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

impl Header {
    /// The attempt that created this header.
    fn attempt(&self) -> Attempt {
        Attempt {
            owner: self.owner.clone(),
            created_at: self.reservation.created_at_ms,
        }
    }

    /// The reservation exactly as its attempt built it (what it writes to every line).
    fn attempt_record(&self) -> Reservation {
        Reservation {
            status: ReservationStatus::Active,
            updated_at_ms: self.reservation.created_at_ms,
            ..self.reservation.clone()
        }
    }
}

/// One attempt at a saga reservation: the header's owner and creation time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Attempt {
    owner: String,
    created_at: i64,
}

impl Attempt {
    fn made(&self, h: &Header) -> bool {
        *self == h.attempt()
    }
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

/// Moves `attempt`'s header from `pending` to `to` (`pending` again: a step's lease) at
/// `at_ms`, if it is still pending and still that attempt's.
async fn fenced_move(
    p: &Partitions,
    id: &ReservationId,
    attempt: &Attempt,
    to: &str,
    at_ms: i64,
) -> Result<bool> {
    let moved = p
        .session
        .execute_unpaged(
            &p.st.fence_header,
            (
                to,
                at_ms,
                id.as_str(),
                attempt.owner.as_str(),
                attempt.created_at,
            ),
        )
        .await
        .map_err(|e| db_error("move reservation (fenced)", e))?;
    Rows::from(moved)?.applied()
}

/// Expiry's claim on an abandoned pending saga: `aborting`, if its header has not taken a
/// lease since `seen_updated_at`.
async fn abandon(
    p: &Partitions,
    id: &ReservationId,
    seen_updated_at: i64,
    at_ms: i64,
) -> Result<bool> {
    let moved = p
        .session
        .execute_unpaged(&p.st.abandon_header, (at_ms, id.as_str(), seen_updated_at))
        .await
        .map_err(|e| db_error("abandon reservation", e))?;
    Rows::from(moved)?.applied()
}

/// The reservation as one of its lines stores it: the same header data, this line only.
fn line_record(reservation: &Reservation, line: &ReservationLine) -> Reservation {
    Reservation {
        lines: vec![line.clone()],
        ..reservation.clone()
    }
}

/// The step holding `line` for `reservation` (the attempt's record), decided only until
/// `not_after` (its lease): the line row appears with the hold, so a step run twice (a
/// resumed saga) holds once. A line of this id held by another attempt is not adopted.
pub(super) fn reserve_step(
    reservation: &Reservation,
    line: &ReservationLine,
    grant: &LocationGrant,
    not_after: i64,
    meta: &EventMeta,
) -> KeyOp {
    let (record, meta, qty) = (line_record(reservation, line), meta.clone(), line.qty);
    let grant = grant.clone();
    let mut op = KeyOp::new(
        None,
        Some(reservation.id.clone()),
        false,
        Box::new(move |view: &View<'_>| match view.line {
            Some(held) if *held == record => Ok(Decision::Unchanged(CommandResult::Stock(
                view.level.clone(),
            ))),
            Some(_) => Err(DomainError::ReservationExists(record.id.clone())),
            None => {
                let (level, event) = decide::reserve_line(
                    view.level,
                    &record.id,
                    qty,
                    &grant,
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
    );
    op.not_after = Some(not_after);
    op
}

/// The step giving back what the attempt that wrote `record` holds at `line`'s partition
/// (nothing if the line there is not exactly that attempt's active line). Read through
/// Paxos: a step of the attempt still in flight is completed first, and given back.
fn compensate_step(record: &Reservation, line: &ReservationLine, meta: &EventMeta) -> KeyOp {
    let (record, meta) = (line_record(record, line), meta.clone());
    let mut op = KeyOp::new(
        None,
        Some(record.id.clone()),
        false,
        Box::new(move |view: &View<'_>| match view.line {
            Some(held) if *held == record => {
                let qty = held.lines.first().map_or(0, |l| l.qty);
                let (level, event) = decide::compensate_line(
                    view.level,
                    &record.id,
                    qty,
                    held.reference.clone(),
                    &meta,
                );
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
    );
    op.serial = true;
    op
}

/// The step settling one line `how` (the header already says so) for a caller holding
/// `grant`.
pub(super) fn settle_step(
    how: Settlement,
    kind: EventKind,
    reservation: &Reservation,
    status: ReservationStatus,
    grant: &LocationGrant,
    meta: &EventMeta,
) -> KeyOp {
    let (reservation, meta, grant) = (reservation.clone(), meta.clone(), grant.clone());
    KeyOp::new(
        None,
        Some(reservation.id.clone()),
        false,
        Box::new(move |view: &View<'_>| match view.line {
            Some(held) if held.status == ReservationStatus::Active => {
                let Some(line) = held.lines.first() else {
                    return Ok(Decision::Unchanged(CommandResult::Stock(
                        view.level.clone(),
                    )));
                };
                let (level, event) =
                    decide::settle_line(how, kind, &reservation, line, view.level, &grant, &meta)?;
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
    )
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

/// A multi-line reservation (see the module docs) for a caller holding `grant`. `owner`
/// identifies the client request.
pub(super) async fn reserve(
    keys: &Keys,
    cmd: &Reserve,
    owner: &str,
    grant: &LocationGrant,
    meta: &EventMeta,
) -> Result<(CommandResult, usize)> {
    let p = &*keys.partitions;
    let window = p.recovery_ms;
    let resumed = match header(p, &cmd.id).await? {
        Some(h) if h.owner != owner => {
            return Err(DomainError::ReservationExists(cmd.id.clone()).into());
        }
        // The client's own request, left pending: resume that very attempt.
        Some(h) if h.status == "pending" => Some(h),
        Some(h) if h.status == "aborting" => {
            return Err(StoreError::Unavailable(
                "this reservation is being rolled back; retry".into(),
            ));
        }
        // The client's own request, finished before (its answer was lost): answer again.
        Some(h) => return Ok((CommandResult::Reservation(h.reservation), 0)),
        None => None,
    };
    let (reservation, attempt, mut lease) = match resumed {
        // Every step takes its lease first: the header may be stale by now.
        Some(h) => (h.attempt_record(), h.attempt(), None),
        None => {
            // Look first: a request that cannot succeed writes nothing, and every short
            // line is reported at once.
            let mut levels = Vec::with_capacity(cmd.lines.len());
            for line in &cmd.lines {
                levels.push(p.level_or_empty(&line.key()).await?);
            }
            decide::reserve(&levels, None, cmd, grant, meta)?;
            for k in indexed(p, &cmd.id).await? {
                if !p.lines(&k, &[cmd.id.to_string()]).await?.is_empty() {
                    return Err(DomainError::ReservationExists(cmd.id.clone()).into());
                }
            }
            let reservation = decide::new_reservation(cmd, meta.occurred_at_ms);
            let line_keys: Vec<StockKey> = reservation.lines.iter().map(|l| l.key()).collect();
            index_with_deadlines(
                p,
                &cmd.id,
                &line_keys,
                &[
                    reservation.expires_at_ms,
                    reservation.created_at_ms + window,
                ],
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
            let attempt = Attempt {
                owner: owner.to_string(),
                created_at: reservation.created_at_ms,
            };
            // The header was just written with `updated_at = created_at`: the first
            // step's lease.
            let lease = Some(reservation.updated_at_ms);
            (reservation, attempt, lease)
        }
    };
    let mut events = 0;
    for (i, line) in reservation.lines.iter().enumerate() {
        #[cfg(not(test))]
        let _ = i; // names the test pauses only
        #[cfg(test)]
        faults::pass(&cmd.id, faults::Point::BeforeLease(i)).await;
        let leased_at = match lease.take() {
            Some(at) => at,
            None => {
                let at = now_ms();
                if !fenced_move(p, &cmd.id, &attempt, "pending", at).await? {
                    return lost_fence(keys, &reservation, &attempt, events, meta).await;
                }
                at
            }
        };
        #[cfg(test)]
        faults::pass(&cmd.id, faults::Point::AfterLease(i)).await;
        let step = reserve_step(&reservation, line, grant, leased_at + window / 2, meta);
        match keys.apply(&line.key(), step).await {
            Ok(outcome) => events += outcome.events,
            Err(StoreError::Domain(refusal)) => {
                // A line is short now (it was not when we looked), or held by another
                // attempt: give back what this attempt holds and free the id.
                if !fenced_move(p, &cmd.id, &attempt, "aborting", now_ms()).await? {
                    return lost_fence(keys, &reservation, &attempt, events, meta).await;
                }
                roll_back(keys, &reservation, meta).await?;
                forget_deadlines(
                    p,
                    &cmd.id,
                    &[
                        reservation.expires_at_ms,
                        reservation.created_at_ms + window,
                    ],
                )
                .await;
                return Err(refusal.into());
            }
            // Left `pending`: a retry resumes it, or expiry rolls it back once idle.
            Err(e) => return Err(e),
        }
    }
    #[cfg(test)]
    faults::pass(&cmd.id, faults::Point::BeforeActive).await;
    if !fenced_move(p, &cmd.id, &attempt, "active", meta.occurred_at_ms).await? {
        return lost_fence(keys, &reservation, &attempt, events, meta).await;
    }
    forget_deadlines(p, &cmd.id, &[reservation.created_at_ms + window]).await;
    Ok((CommandResult::Reservation(reservation), events))
}

/// What an attempt answers once one of its fenced writes was refused: the header left
/// `pending` without it. `reservation` is the attempt's record; `events` what this run
/// wrote so far.
async fn lost_fence(
    keys: &Keys,
    reservation: &Reservation,
    attempt: &Attempt,
    events: usize,
    meta: &EventMeta,
) -> Result<(CommandResult, usize)> {
    let p = &*keys.partitions;
    match header(p, &reservation.id).await? {
        // A concurrent run of this same attempt (the client's retry) made it active: it held
        // every line first.
        Some(h) if attempt.made(&h) && !matches!(h.status.as_str(), "pending" | "aborting") => {
            Ok((CommandResult::Reservation(h.reservation), events))
        }
        // Expiry is rolling this attempt back: help it finish.
        Some(h) if attempt.made(&h) && h.status == "aborting" => {
            roll_back(keys, reservation, meta).await?;
            Err(rolled_back())
        }
        // Still this attempt's and pending: the refused write met another state, now gone
        // (it cannot come back to `pending`). Nothing to give back; let the client retry.
        Some(h) if attempt.made(&h) => Err(StoreError::Unavailable(
            "the reservation changed while it was being made; retry".into(),
        )),
        // Rolled back and gone, or another attempt's: give back what this attempt holds —
        // a line it wrote after the rollback looked — and nothing else.
        _ => {
            let given = each_line(keys, &reservation.lines, |line| {
                compensate_step(reservation, line, meta)
            })
            .await?;
            metrics::counter!("stockflow_reservation_compensations_total").increment(given as u64);
            Err(rolled_back())
        }
    }
}

fn rolled_back() -> StoreError {
    StoreError::Unavailable("the reservation took too long and was rolled back; retry".into())
}

/// Rolls back the attempt whose record is `reservation` and whose header is `aborting`:
/// gives back every line it holds, then removes the header. Idempotent; safe beside a run
/// of the attempt itself (which can no longer take a lease).
async fn roll_back(keys: &Keys, reservation: &Reservation, meta: &EventMeta) -> Result<()> {
    let p = &*keys.partitions;
    let events = each_line(keys, &reservation.lines, |line| {
        compensate_step(reservation, line, meta)
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

/// Settles (or recovers) the saga reservation `h` for a caller holding `grant`.
pub(super) async fn settle(
    keys: &Keys,
    h: Header,
    how: Settlement,
    grant: &LocationGrant,
    meta: &EventMeta,
) -> Result<(CommandResult, usize)> {
    let p = &*keys.partitions;
    let window = p.recovery_ms;
    let id = h.reservation.id.clone();
    match h.status.as_str() {
        // Invisible until active, to every caller. Expiry rolls back an attempt idle for the
        // whole recovery window, fenced against its next lease.
        "pending" | "aborting" if how == Settlement::Expire => {
            if h.status == "pending" {
                let seen = h.reservation.updated_at_ms;
                if meta.occurred_at_ms - seen < window {
                    return Ok(look_again(h.reservation, seen + window));
                }
                if !abandon(p, &id, seen, meta.occurred_at_ms).await? {
                    // It took a lease (or moved on) since: not abandoned after all.
                    return Ok(look_again(h.reservation, meta.occurred_at_ms + window));
                }
            }
            roll_back(keys, &h.attempt_record(), meta).await?;
            forget_deadlines(
                p,
                &id,
                &[
                    h.reservation.expires_at_ms,
                    h.reservation.created_at_ms + window,
                ],
            )
            .await;
            Err(DomainError::ReservationNotFound(id).into())
        }
        "pending" | "aborting" => Err(DomainError::ReservationNotFound(id).into()),
        "active" => {
            let Some((status, kind)) =
                decide::settlement(how, &h.reservation, grant, meta.occurred_at_ms)?
            else {
                return Ok((CommandResult::Reservation(h.reservation), 0));
            };
            let target = format!("settling:{}", status.as_str());
            let recovery_at = meta.occurred_at_ms + window;
            deadline(p, &id, recovery_at).await?;
            if !move_header(p, &id, "active", &target, meta.occurred_at_ms).await? {
                // Someone settled it first: answer from the new state, and take back the
                // recovery deadline nothing will need.
                forget_deadlines(p, &id, &[recovery_at]).await;
                let now = header(p, &id).await?;
                let status = now.map_or(ReservationStatus::Released, |h| h.reservation.status);
                return Err(DomainError::ReservationNotActive { id, status }.into());
            }
            finish(keys, &h, how, status, kind, recovery_at, grant, meta).await
        }
        s if s.starts_with("settling:") => {
            // A settlement left half-way: finish it, whoever may act at its lines asks.
            grant.check_reservation(&h.reservation)?;
            let status = h.reservation.status;
            let Some((started, kind)) = settlement_of(status) else {
                return Err(StoreError::Corrupt(format!("reservation status {s}")));
            };
            let recovery_at = h.reservation.updated_at_ms + window;
            let finished =
                finish(keys, &h, started, status, kind, recovery_at, grant, meta).await?;
            if started == how || how == Settlement::Expire {
                Ok(finished)
            } else {
                Err(DomainError::ReservationNotActive { id, status }.into())
            }
        }
        _ => {
            grant.check_reservation(&h.reservation)?;
            Err(DomainError::ReservationNotActive {
                id,
                status: h.reservation.status,
            }
            .into())
        }
    }
}

/// Expiry's answer for a saga still being made: `reservation` as active, due at `at_ms`,
/// when its deadline row is looked at again. (`Expire` is internal: no client sees it; a
/// client's confirm or release of a pending saga finds nothing.)
fn look_again(reservation: Reservation, at_ms: i64) -> (CommandResult, usize) {
    let pending = Reservation {
        status: ReservationStatus::Active,
        expires_at_ms: at_ms,
        ..reservation
    };
    (CommandResult::Reservation(pending), 0)
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
    grant: &LocationGrant,
    meta: &EventMeta,
) -> Result<(CommandResult, usize)> {
    let p = &*keys.partitions;
    let reservation = &header.reservation;
    let events = each_line(keys, &reservation.lines, |_| {
        settle_step(how, kind, reservation, status, grant, meta)
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

/// Pauses a test puts in sagas, to stall one between its steps (tests only).
#[cfg(test)]
pub(super) mod faults {
    use std::collections::HashMap;
    use std::sync::{Arc, LazyLock, Mutex};

    use stockflow_domain::ReservationId;
    use tokio::sync::Semaphore;

    /// Where in a reservation's saga a pause sits.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub(crate) enum Point {
        /// Before the lease of line `n` (0-based) is taken: between two lines.
        BeforeLease(usize),
        /// After line `n`'s lease, before its step is decided and sent.
        AfterLease(usize),
        /// After every line's step, before the header moves to `active`.
        BeforeActive,
    }

    /// One pause: the saga signals when it reaches it, and waits until opened.
    #[derive(Debug)]
    pub(crate) struct Gate {
        reached: Semaphore,
        open: Semaphore,
    }

    impl Gate {
        /// Waits until a saga stands at the gate.
        pub(crate) async fn reached(&self) {
            if let Ok(permit) = self.reached.acquire().await {
                permit.forget();
            }
        }

        /// Lets the saga go on.
        pub(crate) fn open(&self) {
            self.open.add_permits(1);
        }
    }

    type Gates = HashMap<(String, Point), Arc<Gate>>;
    static GATES: LazyLock<Mutex<Gates>> = LazyLock::new(Mutex::default);

    /// Puts a pause at `point` of the saga of reservation `id` (taken by its next run).
    pub(crate) fn stall(id: &str, point: Point) -> Arc<Gate> {
        let gate = Arc::new(Gate {
            reached: Semaphore::new(0),
            open: Semaphore::new(0),
        });
        if let Ok(mut gates) = GATES.lock() {
            gates.insert((id.to_string(), point), gate.clone());
        }
        gate
    }

    /// Called by the saga at `point`: waits there if a test put a pause.
    pub(crate) async fn pass(id: &ReservationId, point: Point) {
        let gate = GATES
            .lock()
            .ok()
            .and_then(|mut gates| gates.remove(&(id.to_string(), point)));
        if let Some(gate) = gate {
            gate.reached.add_permits(1);
            if let Ok(permit) = gate.open.acquire().await {
                permit.forget();
            }
        }
    }
}
