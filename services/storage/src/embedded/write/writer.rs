//! The writer thread (group commit) and the flusher thread (one fsync for every batch
//! committed meanwhile, then the answers).
//!
//! The writer takes every job waiting (up to [`MAX_BATCH`]), runs them all in one
//! `BEGIN IMMEDIATE` transaction and commits once. A job that fails after writing rolls
//! the batch back, and every job of it reruns in its own transaction. The commit only
//! writes the WAL; the flusher fsyncs it and only then answers the callers and advances
//! the durable outbox watermark, so the publisher never sees an entry a power loss could
//! still take back.

use std::fs::File;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, OnceLock};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::{mpsc, watch};

use super::super::faults::FaultInjection;
use super::super::wal::WalKeeper;
use super::DB_NAME;
use super::jobs::{Done, Job, Pending, refuse, run_job};
use crate::{StoreError, now_ms};

/// Most jobs committed by one transaction: a batch commits in milliseconds, and a job
/// queued behind a full one waits for one batch at most.
pub(super) const MAX_BATCH: usize = 512;

/// The writer thread's state.
pub(super) struct Writer {
    pub conn: Connection,
    pub flush: std_mpsc::Sender<Committed>,
    /// Restarts the WAL between batches when it grows past its bound; its checkpointer
    /// thread stops with the writer.
    pub wal: WalKeeper,
    /// Set by the flusher when an fsync failed: nothing more is committed.
    pub failed: Arc<OnceLock<Arc<StoreError>>>,
}

/// A committed batch waiting for its fsync.
pub(super) struct Committed {
    answers: Vec<Pending>,
    /// The outbox sequence after the commit.
    outbox_seq: i64,
}

/// The flusher thread: fsyncs the WAL, then answers and publishes.
pub(super) struct Flusher {
    pub wal: File,
    pub durable_outbox: Arc<AtomicI64>,
    pub failed: Arc<OnceLock<Arc<StoreError>>>,
    pub tick: watch::Sender<u64>,
    pub faults: Arc<FaultInjection>,
}

impl Flusher {
    fn sync(&self) -> std::io::Result<()> {
        if self.faults.take_fsync_fault() {
            return Err(std::io::Error::other("injected fsync failure (EIO)"));
        }
        self.faults.slow_fsync();
        // fsync is per file, not per descriptor: this covers every frame the writer's
        // connection wrote before the commits returned.
        self.wal.sync_data()
    }

    pub(super) fn run(self, batches: std_mpsc::Receiver<Committed>) {
        while let Ok(first) = batches.recv() {
            let mut waiting = vec![first];
            waiting.extend(batches.try_iter());
            // Once an fsync has failed, no later fsync proves anything: Linux reports the
            // error once and may then "succeed" over pages it dropped (PostgreSQL's
            // fsyncgate). Every batch after it fails too, and the watermark never moves
            // past it, so nothing reported as failed is ever published.
            if let Some(why) = self.failed.get() {
                for answer in waiting.into_iter().flat_map(|c| c.answers) {
                    answer.fail(why).send();
                }
                continue;
            }
            let started = std::time::Instant::now();
            let synced = self.sync();
            metrics::histogram!("stockflow_wal_fsync_seconds")
                .record(started.elapsed().as_secs_f64());
            match synced {
                Ok(()) => {
                    let seq = waiting.iter().map(|c| c.outbox_seq).max().unwrap_or(0);
                    let before = self.durable_outbox.fetch_max(seq, Ordering::AcqRel);
                    for answer in waiting.into_iter().flat_map(|c| c.answers) {
                        answer.send();
                    }
                    if seq > before {
                        self.tick.send_modify(|n| *n = n.wrapping_add(1));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "fsync of the write-ahead log failed; refusing writes until restart");
                    metrics::counter!("stockflow_wal_fsync_failures_total").increment(1);
                    let why = self.failed.get_or_init(|| {
                        Arc::new(StoreError::FsyncFailed {
                            db: DB_NAME,
                            source: Arc::new(e),
                        })
                    });
                    for answer in waiting.into_iter().flat_map(|c| c.answers) {
                        answer.fail(why).send();
                    }
                }
            }
        }
    }
}

impl Writer {
    pub(super) fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = jobs.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            if let Some(why) = self.failed.get() {
                for job in batch.drain(..) {
                    refuse(job, why).send();
                }
                continue;
            }
            let size = batch.len();
            let started = std::time::Instant::now();
            let answers = self.commit_batch(batch.drain(..));
            let outbox_seq = self
                .conn
                .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'")
                .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)).optional())
                .ok()
                .flatten()
                .unwrap_or(0);
            metrics::histogram!("stockflow_write_batch_size").record(size as f64);
            metrics::histogram!("stockflow_write_batch_seconds")
                .record(started.elapsed().as_secs_f64());
            if self
                .flush
                .send(Committed {
                    answers,
                    outbox_seq,
                })
                .is_err()
            {
                tracing::error!("flusher stopped; writer stops");
                return;
            }
            // Between two transactions, so a restart sees no frame arrive while it runs.
            self.wal.after_commit(&self.conn);
        }
    }

    /// Runs a batch in one transaction. Jobs need no savepoints: every refusal happens
    /// before a job writes. If a job fails in a way that may have written part of its
    /// changes, the whole transaction rolls back and each job reruns in its own.
    fn commit_batch(&mut self, jobs: impl Iterator<Item = Job>) -> Vec<Pending> {
        let jobs: Vec<Job> = jobs.collect();
        let now = now_ms();
        let tx = match self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
        {
            Ok(tx) => tx,
            Err(e) => {
                tracing::error!(error = %e, "cannot begin write transaction");
                let why = failed_step("begin", e);
                return jobs.into_iter().map(|j| refuse(j, &why)).collect();
            }
        };
        let done: Vec<Done> = jobs.iter().map(|job| run_job(&tx, job, now)).collect();
        if done.iter().any(Done::is_fatal) {
            drop(tx); // rolls back
            return jobs
                .into_iter()
                .map(|job| self.commit_alone(job, now))
                .collect();
        }
        let answers = jobs
            .into_iter()
            .zip(done)
            .map(|(job, done)| Pending { job, done });
        match tx.commit() {
            Ok(()) => answers.collect(),
            Err(e) => {
                tracing::error!(error = %e, "write transaction failed to commit");
                let why = failed_step("commit", e);
                answers.map(|a| a.fail(&why)).collect()
            }
        }
    }

    fn commit_alone(&mut self, job: Job, now: i64) -> Pending {
        let tx = match self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
        {
            Ok(tx) => tx,
            Err(e) => return refuse(job, &failed_step("begin", e)),
        };
        let done = run_job(&tx, &job, now);
        if done.is_fatal() {
            drop(tx);
            return Pending { job, done };
        }
        match tx.commit() {
            Ok(()) => Pending { job, done },
            Err(e) => Pending { job, done }.fail(&failed_step("commit", e)),
        }
    }
}

/// The failure of a transaction's `step`, to answer every job of it.
fn failed_step(step: &'static str, e: rusqlite::Error) -> Arc<StoreError> {
    Arc::new(StoreError::Transaction {
        db: DB_NAME,
        step,
        source: Arc::new(e),
    })
}
