//! The rounds of a group of operations on one partition: decide each on the state loaded
//! (or remembered), write the changes and the kept refusals in one conditional batch, and
//! read the outcome — every operation answered, some answered (reload and go on with the
//! rest), or nothing applied (retry).
//!
//! The first round does not read the applied-command rows: a new command (the common
//! case) is caught by its row's `IF NOT EXISTS` anyway. Any other outcome — a batch not
//! applied, a refusal, nothing to change — is only answered after a round that read them,
//! so a retried command always gets its stored answer.

use std::collections::{BTreeMap, BTreeSet};

use stockflow_domain::{Answer, RecordedAnswer, Reservation, StockKey, StockLevel};

use super::super::backoff::{MAX_ATTEMPTS, jitter};
use super::op::{Change, CmdGuard, Decision, KeyOp, LineWrite, StoredAnswer, View};
use super::{Decidable, Partitions};
use crate::error::Interruption;
use crate::scylla::cql::errors::{cql, outcome_unknown};
use crate::scylla::cql::query;
use crate::stop::{Ran, Step, Stop};
use crate::{Result, StoreError, now_ms};

/// An operation's answer, by its index in the caller's list.
type Answered = (usize, Step<Ran>);

/// How one round ended.
enum Attempt {
    /// Every open operation has its answer.
    Done(Vec<Answered>),
    /// Some operations were answered; reload (reading applied-command rows) and retry the
    /// rest.
    Partial(Vec<Answered>),
    /// Nothing answered; reload and retry.
    Retry,
    /// Nothing answered; reload at once, reading the applied-command rows this time.
    Reload,
}

/// What deciding the open operations of a round produced.
struct Round<'a> {
    /// Answers from applied-command rows: final.
    replays: Vec<Answered>,
    /// Answers decided on the state read: final once that state is known current.
    tentative: Vec<Answered>,
    /// The changes, each with its operation's index and guard.
    changes: Vec<(usize, Change, Option<&'a CmdGuard>)>,
    /// Keyed refusals: each is kept in its applied-command row like a success, so a retry
    /// gets the same refusal even once the stock changed.
    refusals: Vec<(&'a CmdGuard, RecordedAnswer)>,
    /// The lines the changes leave (`None`: deleted).
    touched_lines: BTreeMap<String, Option<Reservation>>,
    /// A command id seen twice in the group: the later one waits for the next round.
    deferred: bool,
    /// A keyed command was refused or changed nothing: it may be a retry of one applied.
    keyed_tentative: bool,
}

impl Round<'_> {
    /// The answers of a round, complete unless an operation was deferred.
    fn finish(deferred: bool, answers: Vec<Answered>) -> Attempt {
        if deferred {
            Attempt::Partial(answers)
        } else {
            Attempt::Done(answers)
        }
    }
}

/// Decides the open operations `ops` (`open[j]` is the index of `ops[j]` in the caller's
/// list) in order on `level` and `lines`, each seeing what the previous one left.
fn decide<'a>(
    key: &StockKey,
    open: &[usize],
    ops: &[&'a KeyOp],
    level: &mut Answer<StockLevel>,
    lines: &mut BTreeMap<String, Option<Reservation>>,
    cmds: &BTreeMap<String, StoredAnswer>,
) -> Result<Round<'a>> {
    let mut round = Round {
        replays: Vec::new(),
        tentative: Vec::new(),
        changes: Vec::new(),
        refusals: Vec::new(),
        touched_lines: BTreeMap::new(),
        deferred: false,
        keyed_tentative: false,
    };
    // A command id seen earlier in this group: the same request arrived twice at once.
    // It waits for the next round, where the first one's applied-command row answers it;
    // deciding it now would apply it twice in one batch (both `IF NOT EXISTS` conditions
    // are checked against the state before the batch).
    let mut seen_cmds = BTreeSet::new();
    for (&i, &op) in open.iter().zip(ops) {
        if let Some(cmd) = &op.cmd {
            if !seen_cmds.insert(cmd.id.as_str()) {
                round.deferred = true;
                continue;
            }
            if let Some(stored) = cmds.get(cmd.id.as_str()) {
                round.replays.push((i, stored.replay_for(cmd)));
                continue;
            }
        }
        if op.not_after.is_some_and(|t| now_ms() > t) {
            // Its lease ran out: expiry may be rolling its saga back, so nothing of it
            // may land any more. (Not recorded: a reservation's steps carry no command
            // guard, and a transfer step's guard keeps only what applied or was refused.)
            let interrupted = StoreError::Interrupted(Interruption::LeaseRunOut);
            round.tentative.push((i, Err(interrupted.into())));
            continue;
        }
        let line_id = op.line.as_ref().map(ToString::to_string);
        let decided = match &*level {
            Ok(level) => (op.decide)(&View {
                level,
                line: line_id
                    .as_ref()
                    .and_then(|id| lines.get(id))
                    .and_then(Option::as_ref),
            }),
            Err(unknown_location) => Err(unknown_location.clone()),
        };
        round.keyed_tentative |= op.cmd.is_some() && !matches!(decided, Ok(Decision::Change(_)));
        match decided {
            Err(refusal) => {
                if let Some(cmd) = &op.cmd
                    && let Some(answer) = RecordedAnswer::of(&Err(refusal.clone()))
                {
                    round.refusals.push((cmd, answer));
                }
                round.tentative.push((i, Err(Stop::Refused(refusal))));
            }
            Ok(Decision::Unchanged(result)) => round.tentative.push((
                i,
                Ok(Ran {
                    result,
                    events: 0,
                    replayed: false,
                }),
            )),
            Ok(Decision::Change(change)) => {
                let change = *change;
                let Ok(level) = level else {
                    return Err(StoreError::Invariant {
                        what: "decide a partition's changes",
                        detail: format!("a change decided for {key}, an unknown location"),
                    });
                };
                if change.level.version != level.version + 1 {
                    return Err(StoreError::Invariant {
                        what: "decide a partition's changes",
                        detail: format!("a decision on {key} skipped a version"),
                    });
                }
                *level = change.level.clone();
                if let (Some(id), Some(write)) = (&line_id, &change.line) {
                    let after = match write {
                        LineWrite::Put(r) => Some(r.clone()),
                        LineWrite::Delete => None,
                    };
                    lines.insert(id.clone(), after.clone());
                    round.touched_lines.insert(id.clone(), after);
                }
                round.changes.push((i, change, op.cmd.as_ref()));
            }
        }
    }
    Ok(round)
}

/// Whether a change of `round` belongs to an operation whose lease ran out since it was
/// decided (`open[j]` is the caller's index of `ops[j]`).
fn lease_ran_out(open: &[usize], ops: &[&KeyOp], round: &Round<'_>) -> bool {
    let now = now_ms();
    round.changes.iter().any(|(i, _, _)| {
        open.iter()
            .zip(ops)
            .find(|(o, _)| *o == i)
            .and_then(|(_, op)| op.not_after)
            .is_some_and(|t| now > t)
    })
}

impl Partitions {
    /// Applies `ops` to `key`'s partition, in order, in as few conditional batches as the
    /// races allow (one when uncontended). Returns one answer per operation.
    pub(crate) async fn apply(&self, key: &StockKey, ops: &[KeyOp]) -> Vec<Step<Ran>> {
        let mut answers: Vec<Option<Step<Ran>>> = (0..ops.len()).map(|_| None).collect();
        let mut with_cmds = false;
        for attempt in 0..MAX_ATTEMPTS {
            let open: Vec<usize> = (0..ops.len()).filter(|i| answers[*i].is_none()).collect();
            if open.is_empty() {
                break;
            }
            let open_ops: Vec<&KeyOp> = open.iter().map(|i| &ops[*i]).collect();
            match self.attempt(key, &open, &open_ops, with_cmds).await {
                Ok(Attempt::Done(done)) => {
                    for (i, answer) in done {
                        answers[i] = Some(answer);
                    }
                    break;
                }
                Ok(Attempt::Partial(done)) => {
                    for (i, answer) in done {
                        answers[i] = Some(answer);
                    }
                    with_cmds = true;
                }
                Ok(Attempt::Reload) => with_cmds = true,
                Ok(Attempt::Retry) => tokio::time::sleep(jitter(attempt)).await,
                Err(e) => {
                    let shared = e.shared();
                    for i in open {
                        answers[i] = Some(Err(StoreError::Shared(shared.clone()).into()));
                    }
                    break;
                }
            }
        }
        answers
            .into_iter()
            .map(|a| {
                a.unwrap_or_else(|| {
                    Err(StoreError::Contention {
                        on: key.to_string(),
                    }
                    .into())
                })
            })
            .collect()
    }

    /// One load–decide–write round for the open operations.
    async fn attempt(
        &self,
        key: &StockKey,
        open: &[usize],
        ops: &[&KeyOp],
        with_cmds: bool,
    ) -> Result<Attempt> {
        // A state this process knows is decided on without reading; the first round only
        // (a reload always reads), and only its changes are answered (below).
        let remembered = if with_cmds || ops.iter().any(|op| op.serial) {
            None
        } else {
            self.known.get(key)
        };
        let from_memory = remembered.is_some();
        let Decidable {
            expected,
            mut level,
            mut lines,
            cmds,
            assumed_absent,
        } = match remembered {
            Some(state) => self.complete(key, ops, state).await?,
            None => self.read_state(key, ops, with_cmds).await?,
        };
        let round = decide(key, open, ops, &mut level, &mut lines, &cmds)?;
        if !with_cmds && (round.keyed_tentative || (from_memory && !round.tentative.is_empty())) {
            // Only its applied-command row can tell, and a remembered state may be outdated:
            // read both before answering.
            return Ok(Attempt::Reload);
        }
        if round.changes.is_empty() && round.refusals.is_empty() {
            // Nothing to write: replays are final, and the rest was decided on the stored
            // state.
            self.remember(key, expected, &level, lines);
            let mut answers = round.replays;
            answers.extend(round.tentative);
            return Ok(Round::finish(round.deferred, answers));
        }
        let written = match &level {
            Ok(level) if !round.changes.is_empty() => {
                self.outbox.mark(key).await?;
                if lease_ran_out(open, ops, &round) {
                    // The marker took long enough for a saga step's lease to run out: it
                    // may not be sent now. The next round answers it LeaseRunOut.
                    return Ok(Attempt::Retry);
                }
                self.batch(
                    key,
                    level,
                    expected,
                    &round.changes,
                    (&round.touched_lines, &assumed_absent),
                    &round.refusals,
                )?
            }
            // Refusals only: their rows' `IF NOT EXISTS` is the whole condition. A refusal
            // changes nothing, so it holds as of the state it was decided on, whatever
            // other commands did since; only a concurrent run of the same command could
            // answer differently, and its row would exist.
            _ => self.refusal_batch(key, &round.refusals)?,
        };
        let (sku, location) = (key.sku.as_str(), key.location.as_str());
        match self.session.batch(&written.batch, &written.values).await {
            Ok(result) => {
                if query::applied("conditional batch", result)?.applied {
                    if !round.changes.is_empty() {
                        self.outbox.fresh().committed(sku, location, written.fresh);
                        self.outbox.committed(sku, location);
                    }
                    let stored = match &level {
                        Ok(level) if !round.changes.is_empty() => Some(level.version),
                        _ => expected,
                    };
                    self.remember(key, stored, &level, lines);
                    let mut answers = round.replays;
                    answers.extend(round.tentative);
                    answers.extend(round.changes.into_iter().map(|(i, change, _)| {
                        (
                            i,
                            Ok(Ran {
                                result: change.result,
                                events: 1,
                                replayed: false,
                            }),
                        )
                    }));
                    return Ok(Round::finish(round.deferred, answers));
                }
                metrics::counter!("stockflow_lwt_conflicts_total").increment(1);
                if from_memory {
                    metrics::counter!("stockflow_lwt_stale_known_state_total").increment(1);
                }
                self.known.forget(key, from_memory);
            }
            Err(e) if outcome_unknown(&e) => {
                self.known.forget(key, false);
                // Its rows may be there: the kept ones must not stand for a read that
                // stops short of them.
                self.outbox.fresh().forget(sku, location);
                if !round.changes.is_empty() {
                    // If it did apply, its outbox rows are published without waiting for a
                    // scan to come across them.
                    self.outbox.committed(sku, location);
                }
                // Applied or not: the reload reads the applied-command rows and lines back.
                metrics::counter!("stockflow_lwt_unknown_outcomes_total").increment(1);
                tracing::warn!(%key, error = %e, "conditional batch outcome unknown; reading back");
            }
            Err(e) => {
                self.known.forget(key, false);
                return Err(cql("conditional batch")(e));
            }
        }
        Ok(if !with_cmds {
            Attempt::Reload
        } else if round.replays.is_empty() {
            Attempt::Retry
        } else {
            Attempt::Partial(round.replays)
        })
    }
}
