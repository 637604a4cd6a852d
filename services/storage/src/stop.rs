//! How a command path stops before its answer: the domain refused (an answer to give, and
//! perhaps to record under the key) or the store failed. Internal to the adapters: `?`
//! carries both through a command's steps, and the port answers them apart
//! ([`crate::ports::Executed`] for a refusal, [`StoreError`] for a failure).

use stockflow_domain::{Answer, CommandResult, Refusal};

use crate::StoreError;
use crate::ports::Executed;

/// Why a command path stopped.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The domain refused the command.
    Refused(Refusal),
    /// The store failed.
    Failed(StoreError),
}

/// A step of a command path.
pub(crate) type Step<T> = std::result::Result<T, Stop>;

impl From<Refusal> for Stop {
    fn from(refusal: Refusal) -> Self {
        Stop::Refused(refusal)
    }
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Failed(e)
    }
}

impl Stop {
    /// The refusal, if the domain refused.
    pub(crate) fn refusal(&self) -> Option<&Refusal> {
        match self {
            Stop::Refused(refusal) => Some(refusal),
            Stop::Failed(_) => None,
        }
    }
}

/// What a command that ran (or was refused) answers, from the path's last step.
#[derive(Debug, Clone)]
pub(crate) struct Ran {
    /// The result.
    pub result: CommandResult,
    /// Events written by this call.
    pub events: usize,
    /// True when this is the answer recorded by an earlier run.
    pub replayed: bool,
}

/// The port's answer for a command path's outcome: a refusal is an answer, a failure an
/// error.
pub(crate) fn executed(step: Step<Ran>) -> crate::Result<Executed> {
    match step {
        Ok(ran) => Ok(Executed {
            answer: Ok(ran.result),
            replayed: ran.replayed,
            events: ran.events,
        }),
        Err(Stop::Refused(refusal)) => Ok(Executed::refused(refusal)),
        Err(Stop::Failed(e)) => Err(e),
    }
}

/// A recorded answer replayed as the end of a command path.
pub(crate) fn replayed(answer: Answer<CommandResult>) -> Step<Ran> {
    Ok(Ran {
        result: answer?,
        events: 0,
        replayed: true,
    })
}
