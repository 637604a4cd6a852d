//! Idempotency keys across partitions.
//!
//! A command on one partition keeps its key in that partition's applied-command row, inside
//! its conditional batch. Two things need more:
//!
//! - **Key reuse**: a key first used for one request and then for another that touches a
//!   different partition would find no applied-command row there. Every keyed command
//!   therefore records its fingerprint in `idempotency_fingerprints` (a plain write) and
//!   checks it first; a mismatch is refused.
//! - **Refusals** are answers: a keyed command refused after it ran keeps its refusal in
//!   the fingerprint row too (beside the applied-command row, where a partition decided
//!   it), so a refusal decided before any partition was touched replays as well.
//! - **Multi-partition commands** (a reservation spanning keys, or its settlement) run as a
//!   saga: the key is *claimed* by LWT in `idempotency` and finished with the answer. A
//!   retry of a finished command replays the answer; a retry of an unfinished one *resumes*
//!   it (every step is guarded by its reservation line, so resuming applies nothing twice).
//!   A claim whose holder is still running answers "in progress"; one whose holder failed
//!   (it says so) or vanished (its claim is older than the saga recovery window,
//!   [`super::saga::RECOVERY_MS`]: by then expiry may have rolled its saga back) is taken
//!   over ([`stockflow_domain::claim`] decides).

use std::future::Future;

use stockflow_domain::claim::{self, ClaimState, OnClaimed};
use stockflow_domain::{CommandResult, RecordedAnswer, Refusal};

use super::partition::Partitions;
use super::partition::op::CommandId;
use crate::error::Interruption;
use crate::ports::{CommandRequest, IdempotencyToken};
use crate::scylla::cql::query;
use crate::scylla::cql::rows::{ClaimRow, ClaimStamp, FingerprintRow, FingerprintWrite};
use crate::stop::{Ran, Step, Stop, replayed};
use crate::{Result, StoreError, now_ms};

/// What claiming a key found.
// A stock level (with its extras) is what most of these carry; boxing it would add an
// allocation per command to save a few hundred bytes on short-lived values.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Claim {
    /// This call owns the key, stamped with `claimed_at`.
    Owned(i64),
    /// The command finished before: its answer (a success or a refusal).
    Replay(RecordedAnswer),
}

/// What a key's fingerprint row says before a command runs.
pub(crate) enum KeyState {
    /// Never used: the caller records it with [`record_fingerprint`].
    New,
    /// Used before for this same request: the command finds its own stored answer.
    Known,
    /// The key's answer, given without running the command: its recorded refusal, or
    /// `idempotency_key_reused` when it was first used for another request.
    Answered(Refusal),
}

/// What `token`'s key answers before its command runs.
pub(crate) async fn check_fingerprint(
    p: &Partitions,
    token: &IdempotencyToken,
) -> Result<KeyState> {
    let key = token.key.to_string();
    let row: Option<FingerprintRow> = query::first(
        &p.session,
        "read idempotency fingerprint",
        &p.st.get_fingerprint,
        (key.as_str(),),
    )
    .await?;
    let Some(FingerprintRow {
        fingerprint: Some(fingerprint),
        refusal,
    }) = row
    else {
        return Ok(KeyState::New);
    };
    let same_request = fingerprint == token.fingerprint;
    let recorded: Option<RecordedAnswer> = refusal
        .map(|r| serde_json::from_str(&r))
        .transpose()
        .map_err(StoreError::corrupt("recorded refusal"))?;
    Ok(match recorded.map(|answer| answer.replay(same_request)) {
        Some(Err(refusal)) => KeyState::Answered(refusal),
        None if !same_request => KeyState::Answered(Refusal::IdempotencyKeyReused),
        Some(Ok(_)) | None => KeyState::Known,
    })
}

/// Keeps `refusal` as the answer of `token`'s key. A refusal is only answered once this
/// succeeded: a retry that ran the command again might find the state changed.
pub(crate) async fn record_refusal(
    p: &Partitions,
    token: &IdempotencyToken,
    refusal: &Refusal,
) -> Result<()> {
    let answer = RecordedAnswer::Refused {
        refused: refusal.clone(),
    };
    let answer = serde_json::to_string(&answer).map_err(StoreError::encode("recorded refusal"))?;
    query::exec(
        &p.session,
        "record refusal",
        &p.st.put_refusal,
        (token.key.to_string(), token.fingerprint.as_str(), answer),
    )
    .await
}

/// Records which request `token`'s key stands for. Only detection depends on it, so it runs
/// beside the command and a failure is logged, not answered.
pub(crate) async fn record_fingerprint(p: &Partitions, token: &IdempotencyToken) {
    let key = token.key.to_string();
    let row = FingerprintWrite {
        key: &key,
        fingerprint: &token.fingerprint,
    };
    let written = query::exec(
        &p.session,
        "record idempotency fingerprint",
        &p.st.put_fingerprint,
        row,
    )
    .await;
    if let Err(e) = written {
        tracing::warn!(key = %token.key, error = %e, "cannot record an idempotency fingerprint");
    }
}

/// Claims `token` for a multi-partition command.
pub(crate) async fn claim(p: &Partitions, token: &IdempotencyToken) -> Step<Claim> {
    let now = now_ms();
    let key = token.key.to_string();
    let values = (
        key.as_str(),
        token.fingerprint.as_str(),
        ClaimState::Pending.as_str(),
        now,
    );
    if query::lwt(&p.session, "claim idempotency key", &p.st.claim, values)
        .await?
        .applied
    {
        return Ok(Claim::Owned(now));
    }
    let row: Option<ClaimRow> = query::first(
        &p.session,
        "read idempotency claim",
        &p.st.get_claim,
        (key.as_str(),),
    )
    .await?;
    let Some(row) = row else {
        // Dropped meanwhile (its holder was refused): try again.
        return Err(StoreError::Interrupted(Interruption::KeyChangedHands).into());
    };
    let claimed_at = row.claimed_at.unwrap_or(claim::GIVEN_UP);
    let same_request = row.fingerprint.as_deref() == Some(token.fingerprint.as_str());
    let state = row.state.as_deref().and_then(ClaimState::parse);
    match claim::on_claimed(same_request, state, claimed_at, now, p.window) {
        OnClaimed::Reused => Err(Refusal::IdempotencyKeyReused.into()),
        OnClaimed::InProgress => Err(Refusal::RequestInProgress.into()),
        OnClaimed::Replay => {
            let result = row.result.unwrap_or_default();
            let answer =
                serde_json::from_str(&result).map_err(StoreError::corrupt("claimed answer"))?;
            Ok(Claim::Replay(answer))
        }
        OnClaimed::TakeOver => {
            let stamp = ClaimStamp {
                claimed_at: now,
                key: &key,
                held: claimed_at,
            };
            let taken = query::lwt(
                &p.session,
                "take over idempotency key",
                &p.st.take_over,
                stamp,
            )
            .await?;
            if taken.applied {
                Ok(Claim::Owned(now))
            } else {
                Err(Refusal::RequestInProgress.into())
            }
        }
    }
}

/// Records the answer (success or refusal) of the command that owns `token` since
/// `claimed_at`.
async fn finish(
    p: &Partitions,
    token: &IdempotencyToken,
    claimed_at: i64,
    answer: &RecordedAnswer,
) -> Result<()> {
    let answer = serde_json::to_string(answer).map_err(StoreError::encode("claimed answer"))?;
    let values = (
        ClaimState::Done.as_str(),
        answer,
        token.key.to_string(),
        claimed_at,
    );
    let done = query::lwt(
        &p.session,
        "record idempotency result",
        &p.st.finish_claim,
        values,
    )
    .await?;
    if !done.applied {
        // Taken over meanwhile: the new owner finishes the same command and records it.
        tracing::warn!(key = %token.key, "idempotency claim was taken over before it finished");
    }
    Ok(())
}

/// Gives up the claim after the command did not finish: a command refused before it ran
/// (nothing was written) frees the key for any request; an infrastructure failure marks it
/// resumable at once ([`claim::GIVEN_UP`]), so the client's retry continues the command
/// instead of waiting for the claim to go stale. A kept refusal is an answer, kept by
/// [`finish`].
async fn release(p: &Partitions, token: &IdempotencyToken, claimed_at: i64, unrun: bool) {
    let key = token.key.to_string();
    let outcome = if unrun {
        query::lwt(
            &p.session,
            "drop idempotency claim",
            &p.st.drop_claim,
            (key.as_str(), claimed_at),
        )
        .await
    } else {
        let stamp = ClaimStamp {
            claimed_at: claim::GIVEN_UP,
            key: &key,
            held: claimed_at,
        };
        query::lwt(
            &p.session,
            "give up idempotency claim",
            &p.st.take_over,
            stamp,
        )
        .await
    };
    if let Err(e) = outcome {
        tracing::warn!(%key, error = %e, "cannot release idempotency claim; it goes stale by itself");
    }
}

/// Runs a multi-partition command under its idempotency claim (if keyed): a finished
/// command replays, an unfinished one is resumed by `run` (given the command's id, the
/// owner of what it writes), and its answer is recorded before it is given.
pub(crate) async fn claimed<F, Fut>(p: &Partitions, request: &CommandRequest, run: F) -> Step<Ran>
where
    F: FnOnce(CommandId) -> Fut,
    Fut: Future<Output = Step<(CommandResult, usize)>>,
{
    let (token, claimed_at) = match &request.idempotency {
        Some(token) => match claim(p, token).await? {
            Claim::Replay(answer) => return replayed(answer.into_answer()),
            Claim::Owned(at) => (Some(token), at),
        },
        None => (None, claim::GIVEN_UP),
    };
    let ran = run(CommandId::of(token)).await;
    let answer = match &ran {
        Ok((result, _)) => RecordedAnswer::of(&Ok(result.clone())),
        Err(Stop::Refused(refusal)) => RecordedAnswer::of(&Err(refusal.clone())),
        Err(Stop::Failed(_)) => None,
    };
    let ran = ran.map(|(result, events)| Ran {
        result,
        events,
        replayed: false,
    });
    let Some(token) = token else {
        return ran;
    };
    match (ran, answer) {
        (Ok(ran), Some(answer)) => {
            if let Err(e) = finish(p, token, claimed_at, &answer).await {
                // The command is done; only its record is missing. The client gets its
                // success, and a retry (after the claim goes stale) resumes the saga,
                // which finds it complete and answers the same.
                tracing::warn!(key = %token.key, error = %e, "cannot record the idempotency result");
            }
            Ok(ran)
        }
        (Err(refusal), Some(answer)) => {
            // A refusal is only given once it is recorded: a retry that ran again might
            // find the state changed and answer otherwise. Unrecorded, the claim is handed
            // back at once, so the retry runs the command instead of waiting for the claim
            // to go stale.
            if let Err(e) = finish(p, token, claimed_at, &answer).await {
                release(p, token, claimed_at, false).await;
                return Err(e.into());
            }
            Err(refusal)
        }
        (ran, None) => {
            if let Err(stop) = &ran {
                release(p, token, claimed_at, stop.refusal().is_some()).await;
            }
            ran
        }
    }
}
