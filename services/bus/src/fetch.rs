//! What the adapters' fetches share: one reader slot per partition (a consumer positioned
//! at the next offset, reopened when a fetch asks for another), the batch a fetch gathers
//! up to its byte budget, and the state a topic was found in.

use tokio::sync::{Mutex, MutexGuard};

use crate::port::LogRecord;
use crate::{BusError, Result};

/// Most records one fetch returns, whatever `max_bytes` allows: bounds the memory and the
/// time one projection round holds.
pub(crate) const MAX_FETCH_RECORDS: usize = 2000;

/// A topic as the admin calls found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicState {
    /// This call created it.
    Created,
    /// It existed with the expected partition count.
    Existed,
}

/// One reader slot per partition; a fetch holds its partition's slot for its duration, so
/// two fetches of one partition never interleave on one consumer.
pub(crate) struct Readers<R> {
    slots: Vec<Mutex<Option<R>>>,
}

impl<R> Readers<R> {
    /// Empty slots for `partitions` partitions.
    pub(crate) fn new(partitions: u32) -> Self {
        Self {
            slots: (0..partitions).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// The slot of `partition`, locked.
    pub(crate) async fn lock(&self, partition: u32) -> Result<MutexGuard<'_, Option<R>>> {
        let slot = self
            .slots
            .get(partition as usize)
            .ok_or(BusError::NoSuchPartition {
                partition,
                partitions: u32::try_from(self.slots.len()).unwrap_or(u32::MAX),
            })?;
        Ok(slot.lock().await)
    }
}

/// The records one fetch hands out: taken while under the caller's byte budget and
/// [`MAX_FETCH_RECORDS`] (at least one, however large).
#[derive(Debug)]
pub(crate) struct Gathered {
    records: Vec<LogRecord>,
    bytes: usize,
    max_bytes: usize,
}

impl Gathered {
    /// A batch with room for `max_bytes` of payload.
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            records: Vec::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Whether another record may be taken.
    pub(crate) fn has_room(&self) -> bool {
        self.records.is_empty()
            || (self.bytes < self.max_bytes && self.records.len() < MAX_FETCH_RECORDS)
    }

    /// Takes `record`.
    pub(crate) fn push(&mut self, record: LogRecord) {
        self.bytes += record.value.len();
        self.records.push(record);
    }

    /// The offset after the last record taken, if any.
    pub(crate) fn next_offset(&self) -> Option<u64> {
        self.records.last().map(|r| r.offset + 1)
    }

    /// The records.
    pub(crate) fn into_records(self) -> Vec<LogRecord> {
        self.records
    }
}
