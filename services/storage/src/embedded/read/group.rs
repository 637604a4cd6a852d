//! Group commit of projections: every partition's projector hands its batch to one
//! thread, which applies all the batches waiting in one read-model transaction.
//!
//! Eight partitions committing apart wrote the same hot pages (the change feed's tail and
//! its indexes, the offsets row's page, the region totals) to the WAL once per partition,
//! and each commit blocked a runtime worker; one transaction per group writes each page
//! once and blocks no worker. As on the write side, a batch that fails rolls its group
//! back and every batch of the group reruns in a transaction of its own, so one bad batch
//! never fails (or, retried, dead-letters) another partition's.

use std::sync::Arc;
use std::thread::{self, JoinHandle};

use stockflow_domain::BusEvent;
use tokio::sync::oneshot;

use super::{ReadWriter, project, store_offset};
use crate::error::Context;
use crate::ports::Batch;
use crate::{Result, StoreError};

/// Most batches one transaction applies: a group commits in milliseconds, and a batch
/// queued behind a full one waits for one group at most.
const MAX_GROUP: usize = 64;

/// A [`Batch`] the projection thread owns.
struct OwnedBatch {
    consumer: String,
    replica: String,
    partition: u32,
    first_offset: u64,
    events: Vec<BusEvent>,
}

impl OwnedBatch {
    fn of(batch: &Batch<'_>) -> Self {
        Self {
            consumer: batch.consumer.to_string(),
            replica: batch.replica.to_string(),
            partition: batch.partition,
            first_offset: batch.first_offset,
            events: batch.events.to_vec(),
        }
    }

    fn view(&self) -> Batch<'_> {
        Batch {
            consumer: &self.consumer,
            replica: &self.replica,
            partition: self.partition,
            first_offset: self.first_offset,
            events: &self.events,
        }
    }
}

struct Job {
    batch: OwnedBatch,
    answer: oneshot::Sender<Result<()>>,
}

/// The projection thread and the queue into it; dropping it stops and joins the thread.
pub(super) struct GroupCommit {
    jobs: Option<crossbeam_channel::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl GroupCommit {
    pub(super) fn start(writer: Arc<ReadWriter>) -> Result<Self> {
        let (jobs, queue) = crossbeam_channel::unbounded();
        let thread = thread::Builder::new()
            .name("stockflow-project".into())
            .spawn(move || run(&writer, &queue))
            .what("start the projection thread")?;
        Ok(Self {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Fails once the thread is gone (it panicked): every projection would fail, so
    /// readiness says so instead of leaving the read models silently behind.
    pub(super) fn check_running(&self) -> Result<()> {
        match &self.thread {
            Some(thread) if !thread.is_finished() => Ok(()),
            _ => Err(StoreError::Stopped {
                worker: "the projection thread",
            }),
        }
    }

    /// Applies `batch` and moves its consumer's offset past it, in the next group.
    pub(super) async fn project(&self, batch: &Batch<'_>) -> Result<()> {
        let stopped = || StoreError::Stopped {
            worker: "the projection thread",
        };
        let (answer, answered) = oneshot::channel();
        let job = Job {
            batch: OwnedBatch::of(batch),
            answer,
        };
        self.jobs
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        // Closing the queue ends the thread after the group it is on; joining it means the
        // connection is closed when the store is.
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the projection thread panicked");
        }
    }
}

fn run(writer: &ReadWriter, queue: &crossbeam_channel::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        group.extend(queue.try_iter().take(MAX_GROUP - 1));
        // A projector that stopped waiting (shut down, its partition handed over) asked
        // for nothing any more: applying its batch now would be work no one sees answered.
        group.retain(|job| !job.answer.is_closed());
        if group.is_empty() {
            continue;
        }
        metrics::histogram!("stockflow_projection_group_batches").record(group.len() as f64);
        if group.len() == 1
            || writer
                .transact(|tx| group.iter().try_for_each(|job| apply(tx, &job.batch)))
                .is_err()
        {
            // Alone, each batch's own outcome is its answer.
            for job in group {
                let outcome = writer.transact(|tx| apply(tx, &job.batch));
                let _ = job.answer.send(outcome);
            }
            continue;
        }
        for job in group {
            let _ = job.answer.send(Ok(()));
        }
    }
}

fn apply(conn: &rusqlite::Connection, batch: &OwnedBatch) -> Result<()> {
    let view = batch.view();
    project::apply_all(conn, view.events, Some(&view))?;
    store_offset(conn, view.consumer, view.partition, view.next_offset())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{batch, stock_event};
    use crate::embedded::wal::WalPolicy;
    use crate::ports::ReadStore;

    fn store() -> (tempfile::TempDir, super::super::SqliteReadStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("read.db");
        let store = super::super::SqliteReadStore::open(&path, WalPolicy::default()).unwrap();
        (dir, store)
    }

    fn job(events: &[BusEvent], partition: u32) -> (Job, oneshot::Receiver<Result<()>>) {
        let (answer, answered) = oneshot::channel();
        let batch = OwnedBatch::of(&batch("g", partition, events, events.len() as u64));
        (Job { batch, answer }, answered)
    }

    /// Batches queued together commit as one group; one that fails is answered with its
    /// error and the others, rerun alone, still apply.
    #[tokio::test]
    async fn a_group_with_a_bad_batch_applies_the_others_alone() {
        let (_dir, store) = store();
        let good = |p: u32| vec![stock_event(&format!("k{p}"), "s1", "north", 1, 3, 1)];
        let bad = vec![stock_event("k1", "s1", "north", 1, 3, -1)];
        let (queue_in, queue) = crossbeam_channel::unbounded();
        let mut answers = Vec::new();
        for (p, events) in [(0, good(0)), (1, bad), (2, good(2))] {
            let (job, answered) = job(&events, p);
            queue_in.send(job).unwrap();
            answers.push(answered);
        }
        drop(queue_in);
        run(&store.writer, &queue);
        let outcomes: Vec<bool> = futures::future::join_all(answers)
            .await
            .into_iter()
            .map(|a| a.unwrap().is_ok())
            .collect();
        assert_eq!(outcomes, vec![true, false, true]);
        for (p, offset) in [(0, 1), (1, 0), (2, 1)] {
            assert_eq!(store.offset("g", p).await.unwrap(), offset, "partition {p}");
        }
        assert!(store.stock_at("k1", "s1").await.unwrap().is_none());
        assert_eq!(
            store.stock_at("k2", "s1").await.unwrap().unwrap().reserved,
            1
        );
    }

    /// Once the thread has ended (as after a panic), readiness fails instead of every
    /// projection failing unseen.
    #[tokio::test]
    async fn readiness_fails_once_the_thread_is_gone() {
        let (_dir, store) = store();
        store.check_ready().await.unwrap();
        let mut projections = GroupCommit::start(store.writer.clone()).unwrap();
        projections.check_running().unwrap();
        // Closing the queue ends the thread, as a panic would.
        drop(projections.jobs.take());
        while !projections.thread.as_ref().unwrap().is_finished() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(projections.check_running().is_err());
    }

    /// A batch whose projector stopped waiting before the thread reached it is not applied.
    #[tokio::test]
    async fn a_batch_no_one_waits_for_is_not_applied() {
        let (_dir, store) = store();
        let (queue_in, queue) = crossbeam_channel::unbounded();
        let events = [stock_event("k0", "s1", "north", 1, 3, 1)];
        let (abandoned, answered) = job(&events, 0);
        drop(answered);
        queue_in.send(abandoned).unwrap();
        drop(queue_in);
        run(&store.writer, &queue);
        assert_eq!(store.offset("g", 0).await.unwrap(), 0);
        assert!(store.stock_at("k0", "s1").await.unwrap().is_none());
    }
}
