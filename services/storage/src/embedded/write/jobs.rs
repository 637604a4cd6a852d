//! The jobs the embedded writer runs, what each produced, and how each is answered once
//! its batch is durable (or failed).

use std::collections::BTreeMap;
use std::sync::Arc;

use rusqlite::Connection;
use stockflow_domain::sourcing::Bundle;
use stockflow_domain::{Answer, Channel, Location, Sku, SkuCatalog};
use tokio::sync::oneshot;

use super::{command, rows};
use crate::ports::{CommandRequest, Executed, Purge};
use crate::{Result, StoreError};

pub(super) type Reply<T> = oneshot::Sender<Result<T>>;

/// One mutation sent to the writer thread.
pub(super) enum Job {
    Execute(Box<CommandRequest>, Reply<Executed>),
    PutLocation(Location, Reply<Answer<Location>>),
    PutChannel(Channel, Reply<Channel>),
    PutBundle(Bundle, Reply<Bundle>),
    PutSku(Sku, String, BTreeMap<String, String>, Reply<SkuCatalog>),
    MarkPublished(Vec<i64>, Reply<()>),
    Purge(Purge, i64, usize, Reply<usize>),
}

/// What running a job produced, before it is paired with the job's reply channel.
// Nearly every job is a command: boxing its (largest) answer would allocate once per
// command to shrink the rare catalog answers.
#[allow(clippy::large_enum_variant)]
pub(super) enum Done {
    Execute(Result<Executed>),
    Location(Result<Answer<Location>>),
    Channel(Result<Channel>),
    Bundle(Result<Bundle>),
    Sku(Result<SkuCatalog>),
    Marked(Result<()>),
    Purged(Result<usize>),
}

impl Done {
    /// True for failures, which may have left partial writes. Refusals (the domain's, or
    /// the key's) are answers, decided before a job writes anything.
    pub(super) fn is_fatal(&self) -> bool {
        match self {
            Done::Execute(r) => r.is_err(),
            Done::Location(r) => r.is_err(),
            Done::Channel(r) => r.is_err(),
            Done::Bundle(r) => r.is_err(),
            Done::Sku(r) => r.is_err(),
            Done::Marked(r) => r.is_err(),
            Done::Purged(r) => r.is_err(),
        }
    }

    /// Replaces an answer with `err` when the transaction did not commit. A command's
    /// refusal too: it may have been recorded under its key, and an answer that a retry
    /// might not get again is not given.
    fn fail(self, err: &Arc<StoreError>) -> Self {
        match self {
            Done::Execute(Ok(_)) => Done::Execute(failed(err)),
            Done::Location(Ok(Ok(_))) => Done::Location(failed(err)),
            Done::Channel(Ok(_)) => Done::Channel(failed(err)),
            Done::Bundle(Ok(_)) => Done::Bundle(failed(err)),
            Done::Sku(Ok(_)) => Done::Sku(failed(err)),
            Done::Marked(Ok(_)) => Done::Marked(failed(err)),
            Done::Purged(Ok(_)) => Done::Purged(failed(err)),
            other => other,
        }
    }
}

/// A job's answer, held until its batch is durable.
pub(super) struct Pending {
    pub job: Job,
    pub done: Done,
}

impl Pending {
    pub(super) fn fail(self, err: &Arc<StoreError>) -> Self {
        Pending {
            job: self.job,
            done: self.done.fail(err),
        }
    }

    pub(super) fn send(self) {
        // A caller that gave up (timeout, disconnect) no longer listens; nothing to do.
        let mismatch = || StoreError::Invariant {
            what: "answer a write job",
            detail: "the answer is of another job kind".into(),
        };
        let _ = match (self.job, self.done) {
            (Job::Execute(_, tx), Done::Execute(r)) => tx.send(r).map_err(drop),
            (Job::PutLocation(_, tx), Done::Location(r)) => tx.send(r).map_err(drop),
            (Job::PutChannel(_, tx), Done::Channel(r)) => tx.send(r).map_err(drop),
            (Job::PutBundle(_, tx), Done::Bundle(r)) => tx.send(r).map_err(drop),
            (Job::PutSku(_, _, _, tx), Done::Sku(r)) => tx.send(r).map_err(drop),
            (Job::MarkPublished(_, tx), Done::Marked(r)) => tx.send(r).map_err(drop),
            (Job::Purge(.., tx), Done::Purged(r)) => tx.send(r).map_err(drop),
            (Job::Execute(_, tx), _) => tx.send(Err(mismatch())).map_err(drop),
            (Job::PutLocation(_, tx), _) => tx.send(Err(mismatch())).map_err(drop),
            (Job::PutChannel(_, tx), _) => tx.send(Err(mismatch())).map_err(drop),
            (Job::PutBundle(_, tx), _) => tx.send(Err(mismatch())).map_err(drop),
            (Job::PutSku(_, _, _, tx), _) => tx.send(Err(mismatch())).map_err(drop),
            (Job::MarkPublished(_, tx), _) => tx.send(Err(mismatch())).map_err(drop),
            (Job::Purge(.., tx), _) => tx.send(Err(mismatch())).map_err(drop),
        };
    }
}

/// Runs one job on `conn` inside the current transaction.
pub(super) fn run_job(conn: &Connection, job: &Job, now: i64) -> Done {
    match job {
        Job::Execute(req, _) => Done::Execute(command::execute(conn, req, now)),
        Job::PutLocation(location, _) => Done::Location(rows::put_location(conn, location.clone())),
        Job::PutChannel(channel, _) => {
            Done::Channel(rows::put_definition(conn, "channels", channel.clone()))
        }
        Job::PutBundle(bundle, _) => {
            Done::Bundle(rows::put_definition(conn, "bundles", bundle.clone()))
        }
        Job::PutSku(sku, name, attributes, _) => Done::Sku(rows::put_sku(
            conn,
            sku.clone(),
            name.clone(),
            attributes.clone(),
            now,
        )),
        Job::MarkPublished(ids, _) => Done::Marked(rows::mark_published(conn, ids)),
        Job::Purge(what, before, limit, _) => {
            Done::Purged(rows::purge(conn, *what, *before, *limit))
        }
    }
}

/// `err`, shared with every job it answers.
fn failed<T>(err: &Arc<StoreError>) -> Result<T> {
    Err(StoreError::Shared(err.clone()))
}

/// The answer of a job that never ran: `err` for it.
pub(super) fn refuse(job: Job, err: &Arc<StoreError>) -> Pending {
    let done = match &job {
        Job::Execute(..) => Done::Execute(failed(err)),
        Job::PutLocation(..) => Done::Location(failed(err)),
        Job::PutChannel(..) => Done::Channel(failed(err)),
        Job::PutBundle(..) => Done::Bundle(failed(err)),
        Job::PutSku(..) => Done::Sku(failed(err)),
        Job::MarkPublished(..) => Done::Marked(failed(err)),
        Job::Purge(..) => Done::Purged(failed(err)),
    };
    Pending { job, done }
}
