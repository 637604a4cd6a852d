//! When a transfer's saga may be left half-way, and how expiry finishes it.
//!
//! Before a transfer leaves a state at rest (`shipping`, `receiving`) a row in
//! `transfer_deadlines` (one partition per minute, like the reservations' index) asks
//! expiry to look at it a recovery window later. Rows are not removed when the saga ends:
//! expiry reads the header at their time, finds it at rest, and removes the row then (one
//! read per transfer move, against a delete on every command's path). A saga still
//! active is looked at again when its window would end; an abandoned one is rolled back,
//! one that can only go forward is finished.

use std::sync::atomic::{AtomicI64, Ordering};

use futures::StreamExt;
use stockflow_domain::transfer_saga::{self, OnRecover};
use stockflow_domain::{EventMeta, TransferId};

use super::super::coalesce::Keys;
use super::super::deadlines::{LOOK_BACK_MS, deadline_ttl, minute_of, minute_start};
use super::{Ctx, TransferStatements, header};
use crate::ports::ExpiryRound;
use crate::scylla::cql::query;
use crate::stop::Stop;
use crate::{Result, StoreError};

/// How far behind now the floor stays (a replica whose clock is behind ours writes rows
/// no lower than this).
const CLOCK_SKEW_MS: i64 = 120_000;
/// Minute partitions read at once.
const PARALLEL_MINUTES: usize = 8;

/// Everything in `transfer_deadlines` before this time has been dealt with.
#[derive(Debug)]
pub(crate) struct TransferFloor(AtomicI64);

impl Default for TransferFloor {
    fn default() -> Self {
        Self(AtomicI64::new(crate::now_ms() - LOOK_BACK_MS))
    }
}

/// A due row.
#[derive(Debug, scylla::DeserializeRow)]
struct DueRow {
    at: i64,
    id: String,
}

/// Asks expiry to look at transfer `id` at `at_ms`.
pub(super) async fn remind(ctx: &Ctx<'_>, id: &TransferId, at_ms: i64) -> Result<()> {
    write_row(ctx.session(), ctx.st, id.as_str(), at_ms).await
}

async fn write_row(
    session: &scylla::client::session::Session,
    st: &TransferStatements,
    id: &str,
    at_ms: i64,
) -> Result<()> {
    // Lives as long as a reservation's deadline row: past its time by as far as expiry
    // looks back, and a margin.
    let ttl = deadline_ttl(at_ms);
    query::exec(
        session,
        "record a transfer deadline",
        &st.insert_deadline,
        (minute_of(at_ms), at_ms, id, ttl),
    )
    .await
}

async fn forget(ctx: &Ctx<'_>, id: &str, at_ms: i64) -> Result<()> {
    query::exec(
        ctx.session(),
        "delete a transfer deadline",
        &ctx.st.delete_deadline,
        (minute_of(at_ms), at_ms, id),
    )
    .await
}

/// One round: every transfer whose deadline passed is looked at (at most `limit`), and
/// the next deadline ahead is noted in `round`.
pub(crate) async fn recover_due(
    keys: &Keys,
    st: &TransferStatements,
    floor: &TransferFloor,
    now: i64,
    limit: usize,
    round: &mut ExpiryRound,
) -> Result<()> {
    let from = floor.0.load(Ordering::Acquire);
    let (due, next) = scan(keys, st, from, now, limit).await?;
    if let Some(next) = next {
        round.note_deadline(next);
    }
    let last_due = due.last().map(|(_, at)| *at);
    if due.len() >= limit {
        round.full = true;
    }
    let meta = EventMeta {
        actor: None,
        idempotency_key: None,
        trace_context: None,
        occurred_at_ms: now,
    };
    let ctx = Ctx {
        keys,
        st,
        meta: &meta,
    };
    let mut stuck = None;
    for (id, at) in due {
        match recover(&ctx, &id, at, now).await {
            Ok(Some(again)) => round.note_deadline(again),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(transfer = %id, error = %e, "cannot recover a transfer; will retry");
                round.failed += 1;
                stuck = Some(stuck.map_or(at, |s: i64| s.min(at)));
                round.last_error.get_or_insert(e);
            }
        }
    }
    let full_at = round.full.then_some(last_due).flatten();
    floor
        .0
        .fetch_max(next_floor(from, now, full_at, stuck), Ordering::AcqRel);
    Ok(())
}

/// Where the floor moves after a round that read from `from`: up to `now` — or only to
/// the last row read when the round stopped at its limit (`full_at`), since rows after it
/// were never read — but no higher than the first row that failed (`stuck`) nor closer to
/// now than the clock skew, and never down.
fn next_floor(from: i64, now: i64, full_at: Option<i64>, stuck: Option<i64>) -> i64 {
    let seen_to = full_at.unwrap_or(now);
    let to = stuck.map_or(seen_to, |s| s.min(seen_to));
    to.min(now - CLOCK_SKEW_MS).max(from)
}

/// Due rows from `from` on, in time order, at most `limit`; and the first row ahead.
async fn scan(
    keys: &Keys,
    st: &TransferStatements,
    from: i64,
    now: i64,
    limit: usize,
) -> Result<(Vec<(String, i64)>, Option<i64>)> {
    let session = &keys.partitions.session;
    let limit_i32 = i32::try_from(limit).unwrap_or(i32::MAX);
    let mut reads = futures::stream::iter(minute_of(from)..=minute_of(now) + 1)
        .map(|minute| async move {
            let lower = from.max(minute_start(minute));
            query::rows::<DueRow>(
                session,
                "scan transfer deadlines",
                &st.deadlines_from,
                (minute, lower, limit_i32),
            )
            .await
        })
        .buffered(PARALLEL_MINUTES);
    let mut due = Vec::new();
    while let Some(rows) = reads.next().await {
        for row in rows? {
            if row.at > now {
                return Ok((due, Some(row.at)));
            }
            due.push((row.id, row.at));
            if due.len() >= limit {
                return Ok((due, None));
            }
        }
    }
    Ok((due, None))
}

/// Looks at transfer `id` whose row at `at` is due; the time to look again, if any.
async fn recover(ctx: &Ctx<'_>, id: &str, at: i64, now: i64) -> Result<Option<i64>> {
    let step = |r: std::result::Result<usize, Stop>| -> Result<()> {
        match r {
            Ok(_) => Ok(()),
            Err(Stop::Failed(e)) => Err(e),
            // Recovery steps cannot be refused: a refusal here means a broken invariant.
            Err(Stop::Refused(refusal)) => Err(StoreError::Invariant {
                what: "recover a transfer",
                detail: refusal.to_string(),
            }),
        }
    };
    let parsed = TransferId::parse(id).map_err(StoreError::corrupt("transfer deadline id"))?;
    let Some(h) = header::read(ctx.session(), ctx.st, &parsed).await? else {
        forget(ctx, id, at).await?;
        return Ok(None);
    };
    let window = ctx.keys.partitions.window;
    let again = match transfer_saga::on_recover(&h, now, window) {
        OnRecover::Done => None,
        OnRecover::LookAgain(t) => {
            write_row(ctx.session(), ctx.st, id, t).await?;
            Some(t)
        }
        OnRecover::Abandon { seen_updated_at_ms } => {
            let next = h.unshipping(crate::now_ms());
            let session = ctx.session();
            if header::abandon(session, ctx.st, h.seq, seen_updated_at_ms, &next).await? {
                metrics::counter!("stockflow_transfer_abandoned_total").increment(1);
                step(super::roll_back(ctx, &next).await)?;
                None
            } else {
                // Lost: the attempt took a lease meanwhile; look again once it could be idle.
                let t = window.after(crate::now_ms());
                write_row(ctx.session(), ctx.st, id, t).await?;
                Some(t)
            }
        }
        OnRecover::FinishRollback => {
            step(super::roll_back(ctx, &h).await)?;
            None
        }
        OnRecover::FinishDelivery => {
            step(super::deliver(ctx, &h).await.map(|(_, n)| n))?;
            None
        }
        OnRecover::FinishReceipt => {
            step(super::finish_receipt(ctx, &h).await.map(|(_, n)| n))?;
            None
        }
    };
    forget(ctx, id, at).await?;
    Ok(again)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_never_passes_a_row_it_did_not_read_or_could_not_finish() {
        let now = 1_000_000;
        let from = now - 3_600_000;
        // Everything due was read and done: up to the clock skew.
        assert_eq!(next_floor(from, now, None, None), now - CLOCK_SKEW_MS);
        // Stopped at its limit: no further than the last row read.
        assert_eq!(next_floor(from, now, Some(from + 10), None), from + 10);
        // A row failed: it is read again next round.
        assert_eq!(next_floor(from, now, None, Some(from + 5)), from + 5);
        assert_eq!(
            next_floor(from, now, Some(from + 10), Some(from + 5)),
            from + 5
        );
        // Never down.
        assert_eq!(next_floor(from, now, Some(from - 10), None), from);
    }
}
