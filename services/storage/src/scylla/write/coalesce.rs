//! Hot keys coalesced: concurrent operations on one stock key in this process share
//! conditional batches instead of racing each other for Paxos rounds.
//!
//! The first operation on an idle key runs at once (no added latency). Operations that
//! arrive while a batch on their key is in flight queue up; when it lands, one task takes
//! the queue (up to [`MAX_GROUP`] at a time) and applies it as one group: each operation is
//! decided in arrival order against the state the previous one left, and each gets its own
//! answer. One hot SKU thus moves many commands per Paxos round instead of one, and
//! commands from one process no longer abort each other's rounds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use stockflow_domain::StockKey;
use tokio::sync::oneshot;

use super::partition::Partitions;
use super::partition::op::KeyOp;
use crate::StoreError;
use crate::error::Interruption;
use crate::stop::{Ran, Step};

/// Most operations written by one batch. Cassandra refuses batches above 50 KiB by default
/// (`batch_size_fail_threshold`); an operation adds about 1.5 KiB.
const MAX_GROUP: usize = 16;

type Reply = oneshot::Sender<Step<Ran>>;

/// Queues per key; a key is present while a batch on it is in flight.
#[derive(Default)]
pub(crate) struct Coalescer {
    busy: Mutex<HashMap<StockKey, Vec<(KeyOp, Reply)>>>,
}

fn lost() -> StoreError {
    StoreError::Interrupted(Interruption::BatchAbandoned)
}

impl Coalescer {
    /// Applies `op` to `key`, alone if the key is idle, else with whatever queued beside it.
    ///
    /// The work runs on a task of its own, so a caller that goes away (a client that
    /// disconnects) never strands the operations queued behind it.
    pub(crate) async fn apply(
        self: &Arc<Self>,
        partitions: &Arc<Partitions>,
        key: &StockKey,
        op: KeyOp,
    ) -> Step<Ran> {
        let (tx, rx) = oneshot::channel();
        let idle = {
            let mut busy = self.busy.lock().map_err(|_| lost())?;
            match busy.get_mut(key) {
                Some(queue) => {
                    queue.push((op, tx));
                    false
                }
                None => {
                    busy.insert(key.clone(), vec![(op, tx)]);
                    true
                }
            }
        };
        if idle {
            let (me, partitions, key) = (self.clone(), partitions.clone(), key.clone());
            tokio::spawn(async move { me.drain(&partitions, &key).await });
        }
        rx.await.unwrap_or_else(|_| Err(lost().into()))
    }

    /// Applies queued operations on `key` group by group until none is left, then marks the
    /// key idle.
    async fn drain(&self, partitions: &Partitions, key: &StockKey) {
        // If this task dies (a panic), the key must not stay busy forever: the guard frees
        // it and drops the queued replies, which their callers see as a retryable error.
        let guard = FreeOnDrop {
            coalescer: self,
            key,
        };
        loop {
            let group: Vec<(KeyOp, Reply)> = {
                let Ok(mut busy) = self.busy.lock() else {
                    return;
                };
                let Some(queue) = busy.get_mut(key) else {
                    return;
                };
                if queue.is_empty() {
                    busy.remove(key);
                    std::mem::forget(guard);
                    return;
                }
                let take = queue.len().min(MAX_GROUP);
                queue.drain(..take).collect()
            };
            metrics::histogram!("stockflow_coalesced_group_size").record(group.len() as f64);
            let (ops, replies): (Vec<KeyOp>, Vec<Reply>) = group.into_iter().unzip();
            let answers = partitions.apply(key, &ops).await;
            for (reply, answer) in replies.into_iter().zip(answers) {
                // A caller that gave up no longer listens.
                let _ = reply.send(answer);
            }
        }
    }
}

struct FreeOnDrop<'a> {
    coalescer: &'a Coalescer,
    key: &'a StockKey,
}

impl Drop for FreeOnDrop<'_> {
    fn drop(&mut self) {
        if let Ok(mut busy) = self.coalescer.busy.lock() {
            busy.remove(self.key);
        }
    }
}

/// Applies operations to stock partitions through the coalescer.
#[derive(Clone)]
pub(crate) struct Keys {
    /// Loads, decides and writes partitions.
    pub partitions: Arc<Partitions>,
    coalescer: Arc<Coalescer>,
}

impl Keys {
    pub(crate) fn new(partitions: Arc<Partitions>) -> Self {
        Self {
            partitions,
            coalescer: Arc::new(Coalescer::default()),
        }
    }

    /// Applies `op` to `key`, sharing a batch with concurrent operations on the same key.
    pub(crate) async fn apply(&self, key: &StockKey, op: KeyOp) -> Step<Ran> {
        self.coalescer.apply(&self.partitions, key, op).await
    }
}
