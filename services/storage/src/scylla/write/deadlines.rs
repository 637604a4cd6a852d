//! The rows written before a reservation's own batch, so nothing it commits is
//! unreachable: where its lines are (`reservation_index`) and when expiry is to look at it
//! (`reservation_deadlines`, one partition per minute). Each row is harmless alone: an
//! index row pointing at no line, a deadline whose reservation is settled, are tidied.

use scylla::statement::batch::{Batch, BatchType};
use stockflow_domain::{IDEMPOTENCY_KEY_LIFETIME_SECS, ReservationId, StockKey};

use super::partition::Partitions;
use crate::ports::IdempotencyToken;
use crate::scylla::cql::errors::cql;
use crate::scylla::cql::query;
use crate::scylla::cql::rows::{DeadlineWrite, FingerprintWrite, IndexBatchRow, IndexWrite};
use crate::{Result, now_ms};

/// How far back a process that starts looks for deadlines: expiry overdue by a day (an
/// outage) is still found.
pub(crate) const LOOK_BACK_MS: i64 = 25 * 3_600_000;
/// A deadline partition's span.
const MINUTE_MS: i64 = 60_000;
/// How long a deadline row outlives the time expiry stops looking back that far, seconds:
/// a row whose delete was lost leaves the index by itself soon after.
const DEADLINE_TTL_MARGIN_SECS: i64 = 3_600;
/// Index rows outlive every line they point to: an active line's day of TTL, plus a final
/// line's lifetime (an idempotency key's), plus an hour.
const INDEX_TTL: i32 = IDEMPOTENCY_KEY_LIFETIME_SECS as i32 + 86_400 + 3_600;

/// The deadline partition of time `ms`.
pub(crate) fn minute_of(ms: i64) -> i64 {
    ms.div_euclid(MINUTE_MS)
}

/// The first time of deadline partition `minute`.
pub(crate) fn minute_start(minute: i64) -> i64 {
    minute * MINUTE_MS
}

/// Seconds a deadline row lives: past its time by [`LOOK_BACK_MS`] and a margin, so a row
/// whose delete was lost (a crash, a timeout) leaves the index by itself once expiry no
/// longer looks that far back.
pub(crate) fn deadline_ttl(at_ms: i64) -> i32 {
    let ahead_ms = (at_ms - now_ms()).max(0);
    let secs = (ahead_ms + LOOK_BACK_MS) / 1000 + DEADLINE_TTL_MARGIN_SECS;
    i32::try_from(secs).unwrap_or(i32::MAX)
}

fn deadline_row(id: &ReservationId, at_ms: i64) -> DeadlineWrite<'_> {
    DeadlineWrite {
        minute: minute_of(at_ms),
        expires_at: at_ms,
        id: id.as_str(),
        ttl: deadline_ttl(at_ms),
    }
}

/// Records that `id` has a line at each of `keys` and asks expiry to look at it at each of
/// `deadlines`, with `fingerprint`'s row if given, in one request (an unlogged batch: the
/// rows are independent, and each is idempotent, so a partial write is completed by the
/// retry that must follow its error).
pub(crate) async fn index_with_deadlines(
    p: &Partitions,
    id: &ReservationId,
    keys: &[StockKey],
    deadlines: &[i64],
    fingerprint: Option<&IdempotencyToken>,
) -> Result<()> {
    let key = fingerprint.map(|t| t.key.to_string());
    let mut batch = Batch::new(BatchType::Unlogged);
    let mut values = Vec::new();
    for k in keys {
        batch.append_statement(p.st.index_line.clone());
        values.push(IndexBatchRow::Index(IndexWrite {
            id: id.as_str(),
            sku: k.sku.as_str(),
            location: k.location.as_str(),
            ttl: INDEX_TTL,
        }));
    }
    for at in deadlines {
        batch.append_statement(p.st.insert_deadline.clone());
        values.push(IndexBatchRow::Deadline(deadline_row(id, *at)));
    }
    if let (Some(token), Some(key)) = (fingerprint, &key) {
        batch.append_statement(p.st.put_fingerprint.clone());
        values.push(IndexBatchRow::Fingerprint(FingerprintWrite {
            key,
            fingerprint: &token.fingerprint,
        }));
    }
    p.session
        .batch(&batch, &values)
        .await
        .map_err(cql("index reservation and record its deadlines"))?;
    Ok(())
}

/// Asks expiry to look at `id` at `at_ms`.
pub(crate) async fn deadline(p: &Partitions, id: &ReservationId, at_ms: i64) -> Result<()> {
    query::exec(
        &p.session,
        "record deadline",
        &p.st.insert_deadline,
        deadline_row(id, at_ms),
    )
    .await
}

/// Removes the deadline of `id` at `at_ms`.
pub(crate) async fn forget_deadline(p: &Partitions, id: &ReservationId, at_ms: i64) -> Result<()> {
    query::exec(
        &p.session,
        "delete deadline",
        &p.st.delete_deadline,
        (minute_of(at_ms), at_ms, id.as_str()),
    )
    .await
}

/// Forgets the deadlines of `id` at `times` (best effort: a stale one finds nothing to do).
pub(crate) async fn forget_deadlines(p: &Partitions, id: &ReservationId, times: &[i64]) {
    for at in times {
        if let Err(e) = forget_deadline(p, id, *at).await {
            tracing::debug!(reservation = %id, error = %e, "cannot delete a deadline; it goes stale");
        }
    }
}
