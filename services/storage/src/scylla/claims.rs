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
//!   over.

use stockflow_domain::{DomainError, RecordedAnswer};

use super::cql::{Rows, db_error};
use super::partition::Partitions;
use super::statements::{ClaimRow, FingerprintRow};
use crate::ports::IdempotencyToken;
use crate::{Result, StoreError, now_ms};

/// What claiming a key found.
pub(super) enum Claim {
    /// This call owns the key, stamped with `claimed_at`.
    Owned(i64),
    /// The command finished before: its answer (a success or a refusal).
    Replay(RecordedAnswer),
}

/// What a key's fingerprint row says before a command runs.
pub(super) enum KeyState {
    /// Never used: the caller records it with [`record_fingerprint`].
    New,
    /// Used before for this same request: the command finds its own stored answer.
    Known,
    /// Used before for this same request, which was refused: the answer again.
    Refused(DomainError),
}

/// Refuses `token` if its key was first used for another request; otherwise says what the
/// key's row holds.
pub(super) async fn check_fingerprint(
    p: &Partitions,
    token: &IdempotencyToken,
) -> Result<KeyState> {
    let rows: Vec<FingerprintRow> = p
        .query(
            "read idempotency fingerprint",
            &p.st.get_fingerprint,
            (token.key.as_str(),),
        )
        .await?;
    let Some(row) = rows.into_iter().next() else {
        return Ok(KeyState::New);
    };
    match (row.fingerprint, row.refusal) {
        (Some(fp), _) if fp != token.fingerprint => Err(StoreError::IdempotencyKeyReused),
        (None, _) => Ok(KeyState::New),
        (Some(_), Some(refusal)) => match serde_json::from_str(&refusal)? {
            RecordedAnswer::Refused { refused } => Ok(KeyState::Refused(refused)),
            RecordedAnswer::Accepted(_) => Ok(KeyState::Known),
        },
        (Some(_), None) => Ok(KeyState::Known),
    }
}

/// Keeps `refusal` as the answer of `token`'s key. A refusal is only answered once this
/// succeeded: a retry that ran the command again might find the state changed.
pub(super) async fn record_refusal(
    p: &Partitions,
    token: &IdempotencyToken,
    refusal: &DomainError,
) -> Result<()> {
    let answer = RecordedAnswer::Refused {
        refused: refusal.clone(),
    };
    p.session
        .execute_unpaged(
            &p.st.put_refusal,
            (
                token.key.as_str(),
                token.fingerprint.as_str(),
                serde_json::to_string(&answer)?,
            ),
        )
        .await
        .map_err(|e| db_error("record refusal", e))?;
    Ok(())
}

/// Records which request `token`'s key stands for. Only detection depends on it, so it runs
/// beside the command and a failure is logged, not answered.
pub(super) async fn record_fingerprint(p: &Partitions, token: &IdempotencyToken) {
    let written = p
        .session
        .execute_unpaged(
            &p.st.put_fingerprint,
            (token.key.as_str(), token.fingerprint.as_str()),
        )
        .await;
    if let Err(e) = written {
        tracing::warn!(key = %token.key, error = %e, "cannot record an idempotency fingerprint");
    }
}

async fn read_claim(p: &Partitions, key: &str) -> Result<Option<ClaimRow>> {
    let rows: Vec<ClaimRow> = p
        .query("read idempotency claim", &p.st.get_claim, (key,))
        .await?;
    Ok(rows.into_iter().next())
}

/// Claims `token` for a multi-partition command.
pub(super) async fn claim(p: &Partitions, token: &IdempotencyToken) -> Result<Claim> {
    let now = now_ms();
    let key = token.key.as_str();
    let result = p
        .session
        .execute_unpaged(&p.st.claim, (key, token.fingerprint.as_str(), now))
        .await
        .map_err(|e| db_error("claim idempotency key", e))?;
    if Rows::from(result)?.applied()? {
        return Ok(Claim::Owned(now));
    }
    let Some(row) = read_claim(p, key).await? else {
        // Dropped meanwhile (its holder was refused): try again.
        return Err(StoreError::Unavailable(
            "idempotency key changed hands; retry".into(),
        ));
    };
    if row.fingerprint.as_deref() != Some(token.fingerprint.as_str()) {
        return Err(StoreError::IdempotencyKeyReused);
    }
    if row.state.as_deref() == Some("done") {
        let result = row.result.unwrap_or_default();
        return Ok(Claim::Replay(serde_json::from_str(&result)?));
    }
    let claimed_at = row.claimed_at.unwrap_or(0);
    // `claimed_at = 0` is a claim its holder gave up after an infrastructure error.
    if claimed_at != 0 && now - claimed_at < p.recovery_ms {
        return Err(StoreError::InProgress);
    }
    let result = p
        .session
        .execute_unpaged(&p.st.take_over, (now, key, claimed_at))
        .await
        .map_err(|e| db_error("take over idempotency key", e))?;
    if Rows::from(result)?.applied()? {
        Ok(Claim::Owned(now))
    } else {
        Err(StoreError::InProgress)
    }
}

/// Records the answer (success or refusal) of the command that owns `token` since
/// `claimed_at`.
pub(super) async fn finish(
    p: &Partitions,
    token: &IdempotencyToken,
    claimed_at: i64,
    answer: &RecordedAnswer,
) -> Result<()> {
    let done = p
        .session
        .execute_unpaged(
            &p.st.finish_claim,
            (
                serde_json::to_string(answer)?,
                token.key.as_str(),
                claimed_at,
            ),
        )
        .await
        .map_err(|e| db_error("record idempotency result", e))?;
    if !Rows::from(done)?.applied()? {
        // Taken over meanwhile: the new owner finishes the same command and records it.
        tracing::warn!(key = %token.key, "idempotency claim was taken over before it finished");
    }
    Ok(())
}

/// Gives up the claim after the command did not finish: a malformed command (nothing
/// ran, nothing was written) frees the key for any request; an infrastructure failure
/// marks it resumable at once, so the client's retry continues the command instead of
/// waiting for the claim to go stale. A refusal is an answer, kept by [`finish`].
pub(super) async fn release(
    p: &Partitions,
    token: &IdempotencyToken,
    claimed_at: i64,
    malformed: bool,
) {
    let key = token.key.as_str();
    let outcome = if malformed {
        p.session
            .execute_unpaged(&p.st.drop_claim, (key, claimed_at))
            .await
    } else {
        p.session
            .execute_unpaged(&p.st.take_over, (0_i64, key, claimed_at))
            .await
    };
    if let Err(e) = outcome {
        tracing::warn!(key, error = %e, "cannot release idempotency claim; it goes stale by itself");
    }
}
