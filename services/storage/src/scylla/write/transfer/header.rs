//! A transfer's header row, read as the domain's [`TransferHeader`] and moved by
//! conditional writes on its `seq`; and the statements that do it, prepared once.

use std::collections::BTreeSet;

use scylla::DeserializeRow;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use stockflow_domain::transfer_saga::{PendingReceipt, TransferHeader, TransferState};
use stockflow_domain::{Transfer, TransferId};

use crate::scylla::cql::query;
use crate::{Result, StoreError};

/// The statements of transfers.
pub(crate) struct TransferStatements {
    get: PreparedStatement,
    insert: PreparedStatement,
    /// Every column, `IF seq = ?`: a move decided on the header as read.
    move_to: PreparedStatement,
    /// `updated_at` only, `IF seq = ?`: a shipping attempt's lease.
    lease: PreparedStatement,
    /// A move `IF seq = ? AND updated_at = ?`: expiry's claim on an idle attempt.
    abandon: PreparedStatement,
    pub(super) insert_deadline: PreparedStatement,
    pub(super) delete_deadline: PreparedStatement,
    pub(super) deadlines_from: PreparedStatement,
}

impl TransferStatements {
    pub(crate) async fn prepare(s: &Session, ks: &str) -> Result<Self> {
        let p = |cql: String| query::prepare(s, cql);
        let t = format!("{ks}.transfers");
        let d = format!("{ks}.transfer_deadlines");
        Ok(Self {
            get: p(format!("SELECT state, seq, owner, attempt, record, receipt, updated_at, done_by FROM {t} WHERE id = ?")).await?,
            insert: p(format!("INSERT INTO {t} (id, state, seq, owner, attempt, record, receipt, updated_at, done_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS")).await?,
            move_to: p(format!("UPDATE {t} SET state = ?, seq = ?, owner = ?, attempt = ?, record = ?, receipt = ?, updated_at = ?, done_by = ? WHERE id = ? IF seq = ?")).await?,
            lease: p(format!("UPDATE {t} SET updated_at = ? WHERE id = ? IF seq = ?")).await?,
            abandon: p(format!("UPDATE {t} SET state = ?, seq = ?, owner = ?, attempt = ?, record = ?, receipt = ?, updated_at = ?, done_by = ? WHERE id = ? IF seq = ? AND updated_at = ?")).await?,
            insert_deadline: p(format!("INSERT INTO {d} (minute, at, id) VALUES (?, ?, ?) USING TTL ?")).await?,
            delete_deadline: p(format!("DELETE FROM {d} WHERE minute = ? AND at = ? AND id = ?")).await?,
            deadlines_from: p(format!("SELECT at, id FROM {d} WHERE minute = ? AND at >= ? LIMIT ?")).await?,
        })
    }
}

/// A header row as stored.
#[derive(Debug, DeserializeRow)]
struct HeaderRow {
    state: Option<String>,
    seq: Option<i64>,
    owner: Option<String>,
    attempt: Option<i64>,
    record: Option<String>,
    receipt: Option<String>,
    updated_at: Option<i64>,
    done_by: Option<BTreeSet<String>>,
}

/// The columns a header is written with.
struct Columns {
    state: String,
    record: String,
    receipt: Option<String>,
}

fn columns(h: &TransferHeader) -> Result<Columns> {
    Ok(Columns {
        state: h.state.to_string(),
        record: serde_json::to_string(&h.transfer).map_err(StoreError::encode("transfer"))?,
        receipt: h
            .receipt
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(StoreError::encode("transfer receipt"))?,
    })
}

/// The header of transfer `id`, if it exists.
pub(super) async fn read(
    session: &Session,
    st: &TransferStatements,
    id: &TransferId,
) -> Result<Option<TransferHeader>> {
    let row: Option<HeaderRow> =
        query::first(session, "load transfer", &st.get, (id.as_str(),)).await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let state_text = row.state.unwrap_or_default();
    let state = TransferState::parse(&state_text)
        .ok_or_else(|| StoreError::unknown("transfer state", state_text))?;
    let transfer: Transfer = serde_json::from_str(&row.record.unwrap_or_default())
        .map_err(StoreError::corrupt("transfer record"))?;
    let receipt: Option<PendingReceipt> = row
        .receipt
        .map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(StoreError::corrupt("transfer receipt"))?;
    Ok(Some(TransferHeader {
        transfer,
        state,
        seq: row.seq.unwrap_or(0),
        owner: row.owner.unwrap_or_default(),
        attempt: row.attempt.unwrap_or(0),
        updated_at_ms: row.updated_at.unwrap_or(0),
        receipt,
        done_by: row.done_by.unwrap_or_default(),
    }))
}

/// Writes a new header, if none exists under its id; whether it did.
pub(super) async fn insert(
    session: &Session,
    st: &TransferStatements,
    h: &TransferHeader,
) -> Result<bool> {
    let c = columns(h)?;
    let row = (
        h.transfer.id.as_str(),
        c.state.as_str(),
        h.seq,
        h.owner.as_str(),
        h.attempt,
        c.record.as_str(),
        c.receipt.as_deref(),
        h.updated_at_ms,
        &h.done_by,
    );
    Ok(query::lwt(session, "create transfer", &st.insert, row)
        .await?
        .applied)
}

/// Writes `next` over the header, if it is still at `seen_seq`; whether it did.
pub(super) async fn move_to(
    session: &Session,
    st: &TransferStatements,
    seen_seq: i64,
    next: &TransferHeader,
) -> Result<bool> {
    let c = columns(next)?;
    let row = (
        c.state.as_str(),
        next.seq,
        next.owner.as_str(),
        next.attempt,
        c.record.as_str(),
        c.receipt.as_deref(),
        next.updated_at_ms,
        &next.done_by,
        next.transfer.id.as_str(),
        seen_seq,
    );
    Ok(query::lwt(session, "move transfer", &st.move_to, row)
        .await?
        .applied)
}

/// A shipping attempt's lease at `at_ms`, if the header is still at the attempt's `seq`.
pub(super) async fn lease(
    session: &Session,
    st: &TransferStatements,
    id: &TransferId,
    seq: i64,
    at_ms: i64,
) -> Result<bool> {
    Ok(query::lwt(
        session,
        "lease transfer",
        &st.lease,
        (at_ms, id.as_str(), seq),
    )
    .await?
    .applied)
}

/// Expiry's claim: `next` over the header, if it is still at `seen_seq` with the lease
/// `seen_updated_at_ms` it judged idle.
pub(super) async fn abandon(
    session: &Session,
    st: &TransferStatements,
    seen_seq: i64,
    seen_updated_at_ms: i64,
    next: &TransferHeader,
) -> Result<bool> {
    let c = columns(next)?;
    let row = (
        c.state.as_str(),
        next.seq,
        next.owner.as_str(),
        next.attempt,
        c.record.as_str(),
        c.receipt.as_deref(),
        next.updated_at_ms,
        &next.done_by,
        next.transfer.id.as_str(),
        seen_seq,
        seen_updated_at_ms,
    );
    Ok(query::lwt(session, "abandon transfer", &st.abandon, row)
        .await?
        .applied)
}
