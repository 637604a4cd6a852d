//! The dead-letter queue on ScyllaDB: letters spread over [`LETTER_BUCKETS`] partitions,
//! each ordered by a time-ordered id, so listing is a merge of bucket prefixes and purging
//! is one range tombstone per bucket.

use std::collections::BTreeMap;

use super::ScyllaReadStore;
use crate::ports::DeadLetter;
use crate::scylla::cql::query;
use crate::scylla::cql::rows::{CountRow, IdRow, LetterRow};
use crate::{Result, now_ms};

/// Partitions the dead-letter table is spread over, so a poison burst does not make one
/// hot, ever-growing partition.
const LETTER_BUCKETS: i32 = 16;
/// Bits of an id below the milliseconds: they tell apart letters of the same millisecond.
const ID_LOW_BITS: u32 = 20;

/// The bucket of letter `id`: its low bits, which come from a hash of the letter's origin.
fn letter_bucket(id: i64) -> i32 {
    i32::try_from(id.rem_euclid(i64::from(LETTER_BUCKETS))).unwrap_or(0)
}

/// A dead letter's id: the time in milliseconds, then 20 bits that tell apart letters of
/// the same millisecond (a digest of the consumer, partition and offset), so two letters
/// written at once get different ids.
fn dead_letter_id(now_ms: i64, letter: &DeadLetter) -> i64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = siphasher::sip::SipHasher::new();
    (&letter.consumer, letter.partition, letter.offset).hash(&mut hasher);
    let low = i64::try_from(hasher.finish() & ((1 << ID_LOW_BITS) - 1)).unwrap_or(0);
    (now_ms << ID_LOW_BITS) | low
}

fn saturating_i32(n: impl TryInto<i32>) -> i32 {
    n.try_into().unwrap_or(i32::MAX)
}

impl ScyllaReadStore {
    /// Writes `letter` under a fresh id: time-ordered (the list is oldest first) and never
    /// overwritten (the insert is conditional, and a taken id moves on to the next one).
    pub(super) async fn write_letter(&self, letter: &DeadLetter) -> Result<()> {
        let mut id = dead_letter_id(now_ms(), letter);
        loop {
            let row = LetterRow {
                bucket: letter_bucket(id),
                id,
                consumer: Some(letter.consumer.clone()),
                partition: Some(saturating_i32(letter.partition)),
                record_offset: Some(i64::try_from(letter.offset).unwrap_or(i64::MAX)),
                key: Some(letter.key.clone()),
                payload: Some(letter.payload.clone()),
                error: Some(letter.error.clone()),
                attempts: Some(saturating_i32(letter.attempts)),
                failed_at: Some(now_ms()),
            };
            if query::lwt(
                &self.session,
                "write dead letter",
                &self.st.insert_letter,
                row,
            )
            .await?
            .applied
            {
                return Ok(());
            }
            id += 1;
        }
    }

    /// The oldest `limit` letters: each bucket is in id order, so the oldest overall are
    /// among the oldest `limit` of every bucket.
    pub(super) async fn oldest_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        let limit_i32 = saturating_i32(limit);
        let reads = (0..LETTER_BUCKETS).map(|bucket| {
            query::rows::<LetterRow>(
                &self.session,
                "read dead letters",
                &self.st.letters,
                (bucket, limit_i32),
            )
        });
        let mut out = Vec::new();
        for rows in futures::future::join_all(reads).await {
            out.extend(rows?.into_iter().map(|r| {
                DeadLetter {
                    id: r.id,
                    consumer: r.consumer.unwrap_or_default(),
                    partition: r.partition.and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
                    offset: r
                        .record_offset
                        .and_then(|o| u64::try_from(o).ok())
                        .unwrap_or(0),
                    key: r.key.unwrap_or_default(),
                    payload: r.payload.unwrap_or_default(),
                    error: r.error.unwrap_or_default(),
                    attempts: r.attempts.and_then(|a| u32::try_from(a).ok()).unwrap_or(0),
                    failed_at_ms: r.failed_at.unwrap_or(0),
                }
            }));
        }
        out.sort_by_key(|l| l.id);
        out.truncate(limit);
        Ok(out)
    }

    /// Removes letter `id`; whether it was there.
    pub(super) async fn remove_letter(&self, id: i64) -> Result<bool> {
        // Letters written before the buckets all live in bucket 0.
        let mut buckets = vec![letter_bucket(id)];
        if buckets[0] != 0 {
            buckets.push(0);
        }
        for bucket in buckets {
            if query::lwt(
                &self.session,
                "remove dead letter",
                &self.st.delete_letter,
                (bucket, id),
            )
            .await?
            .applied
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Removes at most `limit` letters written before `before_ms`, oldest first.
    pub(super) async fn purge_letters(&self, before_ms: i64, limit: usize) -> Result<usize> {
        // Ids are time-ordered (milliseconds in the high bits): a bucket's old letters are
        // one range of its partition, removed by one range tombstone.
        let first_kept = before_ms.saturating_mul(1 << ID_LOW_BITS);
        let limit_i32 = saturating_i32(limit);
        // The oldest `limit` overall are a prefix of each bucket: each bucket's share goes
        // with one range tombstone through its newest chosen id.
        let finds = (0..LETTER_BUCKETS).map(|bucket| async move {
            let rows: Vec<IdRow> = query::rows(
                &self.session,
                "find old dead letters",
                &self.st.letters_before,
                (bucket, first_kept, limit_i32),
            )
            .await?;
            Ok::<_, crate::StoreError>(rows.into_iter().map(|r| (r.id, bucket)).collect::<Vec<_>>())
        });
        let mut old = Vec::new();
        for found in futures::future::join_all(finds).await {
            old.extend(found?);
        }
        old.sort_unstable();
        old.truncate(limit);
        let mut through: BTreeMap<i32, i64> = BTreeMap::new();
        for (id, bucket) in &old {
            through.insert(*bucket, *id);
        }
        for (bucket, last) in through {
            query::exec(
                &self.session,
                "purge dead letters",
                &self.st.delete_letters_through,
                (bucket, last),
            )
            .await?;
        }
        Ok(old.len())
    }

    /// How many letters are held.
    pub(super) async fn count_letters(&self) -> Result<u64> {
        let counts = (0..LETTER_BUCKETS).map(|bucket| {
            query::first::<CountRow>(
                &self.session,
                "count dead letters",
                &self.st.count_letters,
                (bucket,),
            )
        });
        let mut total = 0;
        for count in futures::future::join_all(counts).await {
            total += count?.map_or(0, |c| u64::try_from(c.n).unwrap_or(0));
        }
        Ok(total)
    }
}
