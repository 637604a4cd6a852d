//! One command's part in one partition, as the partition writer runs it: the domain
//! decision it makes on what it sees there, and its exactly-once guard.

use serde::{Deserialize, Serialize};
use stockflow_domain::{
    Answer, CommandResult, RecordedAnswer, Reservation, ReservationId, StockEvent, StockLevel,
};

use crate::ports::IdempotencyToken;
use crate::scylla::cql::rows::PayloadWrite;
use crate::stop::{Ran, Step};
use crate::{Result, StoreError};

/// Who a command is, for at-most-once: its idempotency key (in its caller's key space), or
/// a one-off id for a command without one. Its text form names the applied-command row
/// and a saga's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommandId(String);

impl CommandId {
    /// The id of a command with `token`'s key, or a fresh one without a key.
    pub(crate) fn of(token: Option<&IdempotencyToken>) -> Self {
        match token {
            Some(token) => Self(format!("k:{}", token.key)),
            None => Self(format!("u:{}", uuid::Uuid::now_v7())),
        }
    }

    /// The id of one step of a saga, named by the domain (see
    /// [`stockflow_domain::transfer_saga::step_guard`]).
    pub(crate) fn step(name: String) -> Self {
        Self(name)
    }

    /// The text form.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// The exactly-once guard of a keyed operation, and what it stores with its answer.
#[derive(Debug, Clone)]
pub(crate) struct CmdGuard {
    /// Row id of the applied-command record.
    pub id: CommandId,
    /// What the request looked like, to refuse a key reused for another request.
    pub fingerprint: String,
}

impl CmdGuard {
    /// The guard of a command with `token` (a one-off id and no fingerprint without one).
    pub(crate) fn of(token: Option<&IdempotencyToken>) -> Self {
        Self {
            id: CommandId::of(token),
            fingerprint: token.map(|t| t.fingerprint.clone()).unwrap_or_default(),
        }
    }
}

/// What an applied-command row stores: the command's answer, a success or a refusal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredAnswer {
    pub fingerprint: String,
    pub result: RecordedAnswer,
}

impl StoredAnswer {
    /// The applied-command row of `cmd` in partition `(sku, location)`, holding `answer`.
    pub(crate) fn row(
        cmd: &CmdGuard,
        answer: RecordedAnswer,
        (sku, location): (&str, &str),
        now: i64,
    ) -> Result<PayloadWrite> {
        let payload = serde_json::to_vec(&StoredAnswer {
            fingerprint: cmd.fingerprint.clone(),
            result: answer,
        })
        .map_err(StoreError::encode("applied-command record"))?;
        Ok(PayloadWrite {
            sku: sku.to_string(),
            location: location.to_string(),
            row_id: cmd.id.as_str().to_string(),
            payload,
            created_at: now,
        })
    }

    /// The answer of a command that ran before, for `cmd`: its stored answer if the
    /// request is the one its key stands for.
    pub(crate) fn replay_for(&self, cmd: &CmdGuard) -> Step<Ran> {
        let same_request = self.fingerprint == cmd.fingerprint;
        crate::stop::replayed(self.result.clone().replay(same_request))
    }
}

/// What an operation sees of its partition.
#[derive(Debug)]
pub(crate) struct View<'a> {
    /// The current level (version 0 if the key was never written).
    pub level: &'a StockLevel,
    /// The operation's reservation line here, if it has one: the reservation as of this
    /// line (its `lines` hold this line only for a multi-partition reservation).
    pub line: Option<&'a Reservation>,
}

/// What happens to a reservation line.
#[derive(Debug, Clone)]
pub(crate) enum LineWrite {
    /// Store the line in this state.
    Put(Reservation),
    /// Remove it (a compensated line: the reservation id may be used again).
    Delete,
}

/// A decided change of the partition.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    /// The next level, exactly one version above the current one.
    pub level: StockLevel,
    /// Its event.
    pub event: StockEvent,
    /// The operation's line afterwards, if it changes.
    pub line: Option<LineWrite>,
    /// The answer for the caller.
    pub result: CommandResult,
}

/// An operation's decision.
// A stock level (with its extras) is what most of these carry; boxing it would add an
// allocation per command to save a few hundred bytes on short-lived values.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub(crate) enum Decision {
    /// Change the partition.
    Change(Box<Change>),
    /// Nothing to write (already done, or not due); the answer.
    Unchanged(CommandResult),
}

impl Decision {
    /// A change of the level alone (a saga step: the answer is the new level).
    pub(crate) fn step(level: StockLevel, event: StockEvent, line: LineWrite) -> Self {
        Decision::Change(Box::new(Change {
            result: CommandResult::Stock(level.clone()),
            level,
            event,
            line: Some(line),
        }))
    }
}

type Decide = dyn Fn(&View<'_>) -> Answer<Decision> + Send + Sync;

/// One command's part in one partition.
pub(crate) struct KeyOp {
    /// The applied-command guard; `None` for saga steps, whose line row is the guard.
    pub cmd: Option<CmdGuard>,
    /// The reservation line this operation reads and may write.
    pub line: Option<ReservationId>,
    /// The line is meant to be new (a reservation made here): when its state is not known
    /// it is taken as absent without a read, and the batch inserts it only if it is.
    pub new_line: bool,
    /// The domain decision, called again whenever the state must be reloaded.
    pub decide: Box<Decide>,
    /// A saga step's lease: past this time (Unix ms) the operation is no longer decided, so
    /// no batch of it is sent once expiry may judge its saga abandoned (it is answered
    /// [`crate::error::Interruption::LeaseRunOut`] instead). `None`: no limit.
    pub not_after: Option<i64>,
    /// Read the partition through Paxos (`LOCAL_SERIAL`), never from memory: a rollback
    /// first completes any write of the partition still in flight (a saga step whose
    /// outcome its writer never learned), so it gives back what that write held.
    pub serial: bool,
}

impl KeyOp {
    /// An operation of a one-partition command or saga step with no lease and plain reads.
    pub(crate) fn new(
        cmd: Option<CmdGuard>,
        line: Option<ReservationId>,
        new_line: bool,
        decide: Box<Decide>,
    ) -> Self {
        Self {
            cmd,
            line,
            new_line,
            decide,
            not_after: None,
            serial: false,
        }
    }
}
