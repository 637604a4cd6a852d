//! Idempotency keys across partitions.
//!
//! A command on one partition keeps its key in that partition's applied-command row, inside
//! its conditional batch. Two things need more:
//!
//! - **Key reuse**: a key first used for one request and then for another that touches a
//!   different partition would find no applied-command row there. Every keyed command
//!   therefore records its fingerprint in `idempotency_fingerprints` (a plain write) and
//!   checks it first; a mismatch is refused.
//! - **Multi-partition commands** (a reservation spanning keys, or its settlement) run as a
//!   saga: the key is *claimed* by LWT in `idempotency` and finished with the answer. A
//!   retry of a finished command replays the answer; a retry of an unfinished one *resumes*
//!   it (every step is guarded by its reservation line, so resuming applies nothing twice).
//!   A claim whose holder is still running answers "in progress"; one whose holder failed
//!   (it says so) or vanished (its claim is older than [`CLAIM_STALE_MS`]) is taken over.

use stockflow_domain::CommandResult;

use super::cql::{Rows, db_error};
use super::partition::Partitions;
use super::statements::ClaimRow;
use crate::ports::IdempotencyToken;
use crate::{Result, StoreError, now_ms};

/// A claim older than this is taken over: its holder crashed.
const CLAIM_STALE_MS: i64 = 30_000;

/// What claiming a key found.
pub(super) enum Claim {
    /// This call owns the key, stamped with `claimed_at`.
    Owned(i64),
    /// The command finished before: its answer.
    Replay(CommandResult),
}

/// Refuses `token` if its key was first used for another request. `Ok(true)` when the key
/// is new: the caller then records it with [`record_fingerprint`].
pub(super) async fn check_fingerprint(p: &Partitions, token: &IdempotencyToken) -> Result<bool> {
    let rows = p
        .session
        .execute_unpaged(&p.st.get_fingerprint, (token.key.as_str(),))
        .await
        .map_err(|e| db_error("read idempotency fingerprint", e))?;
    match Rows::from(rows)?.text(0, "fingerprint") {
        Some(fp) if fp != token.fingerprint => Err(StoreError::IdempotencyKeyReused),
        Some(_) => Ok(false),
        None => Ok(true),
    }
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
    if claimed_at != 0 && now - claimed_at < CLAIM_STALE_MS {
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

/// Records the answer of the command that owns `token` since `claimed_at`.
pub(super) async fn finish(
    p: &Partitions,
    token: &IdempotencyToken,
    claimed_at: i64,
    result: &CommandResult,
) -> Result<()> {
    let done = p
        .session
        .execute_unpaged(
            &p.st.finish_claim,
            (
                serde_json::to_string(result)?,
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

/// Gives up the claim after the command failed: a refusal frees the key for any request
/// (nothing was written); an infrastructure failure marks it resumable at once, so the
/// client's retry continues the command instead of waiting for the claim to go stale.
pub(super) async fn release(
    p: &Partitions,
    token: &IdempotencyToken,
    claimed_at: i64,
    refused: bool,
) {
    let key = token.key.as_str();
    let outcome = if refused {
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
