//! The change feed on ScyllaDB: each projected row is written to its location's partition
//! of `change_feed` (one partition per location and day, ordered by a timeuuid the
//! coordinator assigns) and to `inventory_by_location` (the snapshot).
//!
//! A cursor is a point in time (`s:<timeuuid>` after the row last handed out, or
//! `s@<ms>`), and a page only reads rows older than [`SETTLE`]: a row whose write is still
//! in flight when a page is read gets a timeuuid before that point and would be skipped by
//! a cursor already past it, so the feed waits that long before handing a window out (a
//! write slower than that is the one case a change reaches the agent only with the key's
//! next change or the next snapshot). Rows expire with the table's TTL ([`RETENTION`]): a
//! cursor older than that is answered "expired".

use std::collections::BTreeMap;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use scylla::client::session::Session;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimeuuid;
use stockflow_domain::read_model::InventoryRow;

use crate::ports::{ChangeCursor, ChangeSnapshot, Changes};
use crate::scylla::cql::errors::{cql, unreadable};
use crate::scylla::cql::query;
use crate::{Result, StoreError, now_ms};

/// How long the feed keeps a change (the table's TTL).
pub(crate) const RETENTION: Duration = Duration::from_secs(3 * 24 * 3600);
/// How old a change must be before a page hands it out.
pub(crate) const SETTLE: Duration = Duration::from_secs(5);
const DAY_MS: i64 = 86_400_000;

/// The feed's statements.
pub(crate) struct FeedStatements {
    append: PreparedStatement,
    snapshot_row: PreparedStatement,
    after_row: PreparedStatement,
    after_time: PreparedStatement,
    location_rows: PreparedStatement,
}

impl FeedStatements {
    pub(crate) async fn prepare(s: &Session, ks: &str) -> Result<Self> {
        let p = |cql: String| async move {
            s.prepare(cql)
                .await
                .map_err(unreadable("prepare a change-feed statement"))
        };
        Ok(Self {
            append: p(format!(
                "INSERT INTO {ks}.change_feed (location, day, seq, sku, row) VALUES (?, ?, now(), ?, ?)"
            ))
            .await?,
            snapshot_row: p(format!(
                "INSERT INTO {ks}.inventory_by_location (location, sku, row) VALUES (?, ?, ?) USING TIMESTAMP ?"
            ))
            .await?,
            after_row: p(format!(
                "SELECT seq, row FROM {ks}.change_feed WHERE location = ? AND day = ? AND seq > ? AND seq <= maxTimeuuid(?) LIMIT ?"
            ))
            .await?,
            after_time: p(format!(
                "SELECT seq, row FROM {ks}.change_feed WHERE location = ? AND day = ? AND seq > maxTimeuuid(?) AND seq <= maxTimeuuid(?) LIMIT ?"
            ))
            .await?,
            location_rows: p(format!(
                "SELECT row FROM {ks}.inventory_by_location WHERE location = ?"
            ))
            .await?,
        })
    }
}

/// Where a page starts.
enum From {
    /// After this row.
    Row(CqlTimeuuid),
    /// After everything at or before this time (ms).
    Time(i64),
}

impl From {
    /// Where `cursor` starts; `None` for the embedded store's (it cannot be followed here).
    fn of(cursor: ChangeCursor) -> Option<Self> {
        match cursor {
            ChangeCursor::ScyllaTime(ms) => Some(From::Time(ms)),
            ChangeCursor::ScyllaRow(id) => Some(From::Row(CqlTimeuuid::from(id))),
            ChangeCursor::Embedded(_) => None,
        }
    }

    fn ms(&self) -> i64 {
        match self {
            From::Time(ms) => *ms,
            From::Row(id) => ms_of(id),
        }
    }
}

/// The Unix milliseconds of a timeuuid.
fn ms_of(id: &CqlTimeuuid) -> i64 {
    let (secs, nanos) = uuid::Uuid::from(*id)
        .get_timestamp()
        .map_or((0, 0), |t| t.to_unix());
    i64::try_from(secs).unwrap_or(0) * 1000 + i64::from(nanos / 1_000_000)
}

fn decode(text: &str) -> Result<InventoryRow> {
    serde_json::from_str(text).map_err(|source| StoreError::Corrupt {
        what: "a change-feed row",
        source: source.into(),
    })
}

fn encode(row: &InventoryRow) -> Result<String> {
    serde_json::to_string(row).map_err(|source| StoreError::Encode {
        what: "a change-feed row",
        source,
    })
}

/// Rows of one location one batch carries at most, and their encoded text at most: under
/// Cassandra's default batch-size warning (5 KiB; ScyllaDB warns at 128 KiB).
const BATCH_ROWS: usize = 16;
const BATCH_TEXT: usize = 3 * 1024;

/// The writes that append `rows` to their locations' feeds and to the locations' snapshot
/// rows: for each location, unlogged batches of up to [`BATCH_ROWS`] rows, one for each
/// table, each a single partition (the location's feed of today; its snapshot rows), so a
/// batch costs the database about what one row's write does. The rows are independent and
/// idempotent (a snapshot row is written at its version; a feed entry written twice is read
/// as the same version twice), so a batch that fails is written again whole by the retry
/// that must follow its error. A row's feed entry and snapshot row are written
/// concurrently: a snapshot's cursor starts before its read, so whichever lands first, a
/// reader still gets the row (at worst twice, which its version guard drops).
pub(crate) fn writes<'a>(
    session: &'a Session,
    st: &'a FeedStatements,
    rows: &'a [InventoryRow],
) -> Result<Vec<BoxFuture<'a, Result<()>>>> {
    let day = i32::try_from(now_ms() / DAY_MS).unwrap_or(i32::MAX);
    let mut by_location: BTreeMap<&str, Vec<(&InventoryRow, String)>> = BTreeMap::new();
    for row in rows {
        by_location
            .entry(row.location.as_str())
            .or_default()
            .push((row, encode(row)?));
    }
    let mut writes: Vec<BoxFuture<'a, Result<()>>> = Vec::new();
    for (location, rows) in by_location {
        for chunk in chunks(rows) {
            let appends: Vec<(&str, i32, &str, String)> = chunk
                .iter()
                .map(|(row, text)| (location, day, row.sku.as_str(), text.clone()))
                .collect();
            writes.push(batch(session, &st.append, appends, "append to the change feed").boxed());
            let snapshot: Vec<(&str, &str, String, i64)> = chunk
                .into_iter()
                .map(|(row, text)| {
                    let version = i64::try_from(row.version).unwrap_or(i64::MAX);
                    (location, row.sku.as_str(), text, version)
                })
                .collect();
            writes.push(
                batch(
                    session,
                    &st.snapshot_row,
                    snapshot,
                    "write a location's rows",
                )
                .boxed(),
            );
        }
    }
    Ok(writes)
}

/// `rows` cut into batches of at most [`BATCH_ROWS`] rows and about [`BATCH_TEXT`] bytes
/// (a row larger than that goes alone).
fn chunks<T>(rows: Vec<(T, String)>) -> Vec<Vec<(T, String)>> {
    let mut out: Vec<Vec<(T, String)>> = Vec::new();
    let mut text = 0;
    for row in rows {
        let fits = out
            .last()
            .is_some_and(|last| last.len() < BATCH_ROWS && text + row.1.len() <= BATCH_TEXT);
        if !fits {
            out.push(Vec::new());
            text = 0;
        }
        text += row.1.len();
        if let Some(last) = out.last_mut() {
            last.push(row);
        }
    }
    out
}

/// Runs `st` once for each of `values` in one unlogged batch.
async fn batch<V: SerializeRow>(
    session: &Session,
    st: &PreparedStatement,
    values: Vec<V>,
    what: &'static str,
) -> Result<()> {
    let mut batch = Batch::new(BatchType::Unlogged);
    for _ in &values {
        batch.append_statement(st.clone());
    }
    session.batch(&batch, &values).await.map_err(cql(what))?;
    Ok(())
}

/// A page of the feed of `locations` after `cursor`.
pub(crate) async fn page(
    session: &Session,
    st: &FeedStatements,
    locations: &[String],
    cursor: Option<&str>,
    limit: usize,
) -> Result<Changes> {
    let now = now_ms();
    let oldest = now - i64::try_from(RETENTION.as_millis()).unwrap_or(i64::MAX);
    let from = match cursor {
        None => From::Time(oldest),
        Some(c) => match ChangeCursor::parse(c).map(From::of) {
            Some(Some(from)) => from,
            Some(None) => return Ok(Changes::Expired),
            None => return Ok(Changes::BadCursor(c.to_string())),
        },
    };
    if from.ms() < oldest {
        return Ok(Changes::Expired);
    }
    let upto = now - i64::try_from(SETTLE.as_millis()).unwrap_or(0);
    let limit_i32 = i32::try_from(limit).unwrap_or(i32::MAX);
    let mut found: Vec<(CqlTimeuuid, String)> = Vec::new();
    // The day a row lands in is the writer's clock; its timeuuid the coordinator's: look one
    // day back so a row written just before midnight is not missed.
    let first_day = from.ms() / DAY_MS - 1;
    for location in locations {
        for day in first_day..=(upto / DAY_MS) {
            let day = i32::try_from(day).unwrap_or(i32::MAX);
            let rows: Vec<(CqlTimeuuid, String)> = match &from {
                From::Row(after) => {
                    query::rows(
                        session,
                        "read the change feed",
                        &st.after_row,
                        (location, day, after, upto_timestamp(upto), limit_i32),
                    )
                    .await?
                }
                From::Time(ms) => {
                    query::rows(
                        session,
                        "read the change feed",
                        &st.after_time,
                        (
                            location,
                            day,
                            upto_timestamp(*ms),
                            upto_timestamp(upto),
                            limit_i32,
                        ),
                    )
                    .await?
                }
            };
            found.extend(rows);
        }
    }
    // Timeuuids order by time first (CQL's order); ties by the rest.
    found.sort_by(|a, b| {
        (ms_of(&a.0), uuid::Uuid::from(a.0)).cmp(&(ms_of(&b.0), uuid::Uuid::from(b.0)))
    });
    found.truncate(limit);
    let cursor = if found.len() == limit {
        found
            .last()
            .map(|(id, _)| ChangeCursor::ScyllaRow(uuid::Uuid::from(*id)).to_string())
            .unwrap_or_else(|| ChangeCursor::ScyllaTime(upto).to_string())
    } else {
        ChangeCursor::ScyllaTime(upto.max(from.ms())).to_string()
    };
    let rows = found
        .iter()
        .map(|(_, text)| decode(text))
        .collect::<Result<Vec<_>>>()?;
    Ok(Changes::Page { rows, cursor })
}

fn upto_timestamp(ms: i64) -> scylla::value::CqlTimestamp {
    scylla::value::CqlTimestamp(ms)
}

/// Every row of `locations`, with a cursor a little before the read began: the feed hands
/// out again what changed in that margin (version-guarded at the reader), never less.
pub(crate) async fn snapshot(
    session: &Session,
    st: &FeedStatements,
    locations: &[String],
) -> Result<ChangeSnapshot> {
    let since = now_ms() - i64::try_from(SETTLE.as_millis()).unwrap_or(0);
    let mut rows = Vec::new();
    for location in locations {
        let texts: Vec<(String,)> = query::rows(
            session,
            "read a location's rows",
            &st.location_rows,
            (location,),
        )
        .await?;
        for (text,) in texts {
            rows.push(decode(&text)?);
        }
    }
    Ok(ChangeSnapshot {
        rows,
        cursor: ChangeCursor::ScyllaTime(since).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(sizes: &[usize]) -> Vec<(usize, String)> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (i, "x".repeat(n)))
            .collect()
    }

    fn shape(chunks: &[Vec<(usize, String)>]) -> Vec<Vec<usize>> {
        chunks
            .iter()
            .map(|c| c.iter().map(|(i, _)| *i).collect())
            .collect()
    }

    #[test]
    fn a_batch_is_cut_at_its_row_count_and_its_size_and_keeps_the_order() {
        let many = chunks(rows(&[10; 40]));
        assert_eq!(
            many.iter().map(Vec::len).collect::<Vec<_>>(),
            [BATCH_ROWS, BATCH_ROWS, 40 - 2 * BATCH_ROWS]
        );
        let big = BATCH_TEXT / 2 + 1;
        assert_eq!(
            shape(&chunks(rows(&[big, big, 10, BATCH_TEXT * 2, 10]))),
            [vec![0], vec![1, 2], vec![3], vec![4]],
            "a row past the size goes alone, and nothing is dropped"
        );
        assert!(chunks(rows(&[])).is_empty());
    }
}
