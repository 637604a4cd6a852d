//! POS capture: for a POS that writes its sales to its own PostgreSQL instead of calling
//! the agent, the agent reads the sales table and records every row as the POS's own
//! adjustment would be, exactly once.
//!
//! The source hands over committed POS transactions (or, on a fresh start, every row of
//! the table) and is told when the agent has committed them: a position is acknowledged
//! only after the local commit, so a crash replays rows instead of losing them, and each
//! row's id (the POS's transaction line) is remembered for good, so a replay or a rebuild
//! from the table records nothing twice. A row the agent cannot read is recorded into the
//! quarantine with its problem, never skipped.
//!
//! - [`postgres`]: the source over PostgreSQL logical replication (`pgoutput`).

pub mod postgres;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::api::{AdjustBody, AgentState};
use super::store::NewCommand;
use crate::error::ApiError;

/// One row of the POS's sales table, column name to its text value (`None` for NULL).
pub type Row = BTreeMap<String, Option<String>>;

/// What the source hands over at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Rows inserted by one POS transaction, or rows of the table's baseline copy.
    pub rows: Vec<Row>,
    /// What to acknowledge once `rows` are committed locally (none for baseline rows: the
    /// source moves past the baseline when it is asked for the next batch).
    pub position: Option<u64>,
    /// Rows the region already has (the table's rows when capture began, by choice): their
    /// ids are remembered, nothing is recorded.
    pub remember_only: bool,
}

/// Why the source failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Worth retrying: the database is down or restarting, the connection dropped.
    #[error("{0}")]
    Transient(String),
    /// A setting is wrong (the table, a column, the database's configuration).
    #[error("{0}")]
    Setup(String),
    /// The agent is stopping.
    #[error("stopped")]
    Stopped,
}

/// A source of captured POS rows.
#[async_trait]
pub trait SalesSource: Send {
    /// The next batch (waits for one).
    async fn next_batch(&mut self) -> Result<Batch, CaptureError>;
    /// Everything up to `position` is committed locally: the source may forget it.
    fn committed(&mut self, position: u64);
    /// Stops, telling the database what was committed (a crash instead only means the
    /// unacknowledged rows come again).
    async fn close(&mut self) {}
}

/// Which column of the POS table holds what. Each defaults to its own name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    /// The POS's transaction line id: unique per row, the deduplication key.
    pub id: String,
    /// The SKU.
    pub sku: String,
    /// The location.
    pub location: String,
    /// Units (positive).
    pub quantity: String,
    /// `sale`, `return`, `receipt`, `damage`, `shrinkage` or `write_off`.
    pub kind: String,
}

impl Default for Columns {
    fn default() -> Self {
        Self {
            id: "id".into(),
            sku: "sku".into(),
            location: "location".into(),
            quantity: "quantity".into(),
            kind: "kind".into(),
        }
    }
}

impl Columns {
    /// Parses `id=line_id,sku=item,...`; unnamed columns keep their default.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut columns = Self::default();
        for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, column) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}` is not field=column"))?;
            let column = column.trim().to_string();
            if column.is_empty() {
                return Err(format!("`{pair}` names no column"));
            }
            match field.trim() {
                "id" => columns.id = column,
                "sku" => columns.sku = column,
                "location" => columns.location = column,
                "quantity" => columns.quantity = column,
                "kind" => columns.kind = column,
                other => {
                    return Err(format!(
                        "unknown field `{other}` (id, sku, location, quantity, kind)"
                    ));
                }
            }
        }
        Ok(columns)
    }

    /// Every column the capture reads.
    pub fn all(&self) -> [&str; 5] {
        [
            &self.id,
            &self.sku,
            &self.location,
            &self.quantity,
            &self.kind,
        ]
    }
}

/// Records batches from `source` until `stop`, acknowledging each after its commit.
pub async fn run(
    state: AgentState,
    mut source: Box<dyn SalesSource>,
    columns: Columns,
    stop: CancellationToken,
) {
    let mut wait = Duration::from_secs(1);
    loop {
        let batch = tokio::select! {
            () = stop.cancelled() => {
                source.close().await;
                return;
            }
            batch = source.next_batch() => batch,
        };
        match batch {
            Ok(batch) => {
                wait = Duration::from_secs(1);
                // The batch is recorded before the source is asked for more (which is what
                // lets it move on): a failure retries the same rows.
                let mut retry = Duration::from_secs(1);
                loop {
                    match record_batch(&state, &columns, &batch).await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::error!(error = %e, retry_in_s = retry.as_secs(), "cannot record captured POS rows");
                            tokio::select! {
                                () = stop.cancelled() => {
                                    source.close().await;
                                    return;
                                }
                                () = tokio::time::sleep(retry) => {}
                            }
                            retry = (retry * 2).min(Duration::from_secs(60));
                        }
                    }
                }
                if let Some(position) = batch.position {
                    source.committed(position);
                }
            }
            Err(CaptureError::Stopped) => {
                source.close().await;
                return;
            }
            Err(e) => {
                metrics::counter!("stockflow_agent_capture_errors_total").increment(1);
                tracing::warn!(error = %e, retry_in_s = wait.as_secs(), "POS capture failed");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(60));
            }
        }
    }
}

async fn record_batch(
    state: &AgentState,
    columns: &Columns,
    batch: &Batch,
) -> Result<(), ApiError> {
    if batch.remember_only {
        let ids: Vec<String> = batch
            .rows
            .iter()
            .filter_map(|row| row.get(&columns.id).cloned().flatten())
            .map(|id| format!("capture:{id}"))
            .collect();
        let store = state.store.clone();
        tokio::task::spawn_blocking(move || store.remember_origins(&ids))
            .await
            .map_err(|e| ApiError::Internal(format!("remembering rows panicked: {e}")))??;
        return Ok(());
    }
    for row in &batch.rows {
        record_row(state, columns, row).await?;
    }
    Ok(())
}

/// Records one row as the adjustment it stands for; a row that is not one is recorded
/// into the quarantine with the problem. Returns whether it was new.
pub async fn record_row(
    state: &AgentState,
    columns: &Columns,
    row: &Row,
) -> Result<bool, ApiError> {
    let text = |column: &str| row.get(column).cloned().flatten();
    let Some(id) = text(&columns.id).filter(|id| !id.is_empty()) else {
        // Without its id a row cannot be deduplicated: it is held for staff, under a key
        // made of the whole row so that its replays collapse too.
        let origin = format!("capture:row:{}", json!(row));
        return refuse(state, origin, row, "the row has no id").await;
    };
    let origin = format!("capture:{id}");
    let body = match adjust_body(columns, row) {
        Ok(body) => body,
        Err(why) => return refuse(state, origin, row, &why).await,
    };
    match state.adjustment(body, origin.clone()) {
        Ok(mut command) => {
            command.remember_origin = true;
            let recorded = state.commit(command).await?;
            if !recorded.replayed {
                metrics::counter!("stockflow_agent_captured_rows_total").increment(1);
            }
            Ok(!recorded.replayed)
        }
        Err(e @ (ApiError::Internal(_) | ApiError::QueueFull(_))) => Err(e),
        Err(e) => {
            let problem = problem_document(e).await;
            record_refused(state, origin, row, problem).await
        }
    }
}

/// The adjustment a row stands for: sales and losses take units, returns and receipts
/// bring them.
fn adjust_body(columns: &Columns, row: &Row) -> Result<AdjustBody, String> {
    let text = |column: &str| -> Result<String, String> {
        row.get(column)
            .cloned()
            .flatten()
            .ok_or_else(|| format!("column `{column}` is missing or NULL"))
    };
    let quantity: i64 = text(&columns.quantity)?
        .trim()
        .parse()
        .map_err(|_| format!("column `{}` is not a whole number", columns.quantity))?;
    if quantity <= 0 {
        return Err(format!("column `{}` must be positive", columns.quantity));
    }
    let kind = text(&columns.kind)?;
    let delta = match kind.as_str() {
        "sale" | "damage" | "shrinkage" | "write_off" => -quantity,
        "return" | "receipt" => quantity,
        other => {
            return Err(format!(
                "kind `{other}` is not sale, return, receipt, damage, shrinkage or write_off"
            ));
        }
    };
    Ok(AdjustBody {
        sku: text(&columns.sku)?,
        location: text(&columns.location)?,
        delta: Some(delta),
        set_on_hand: None,
        reason: kind,
        reference: text(&columns.id).ok().map(|id| format!("pos-line:{id}")),
    })
}

async fn refuse(
    state: &AgentState,
    origin: String,
    row: &Row,
    why: &str,
) -> Result<bool, ApiError> {
    let problem = json!({
        "type": "https://stockflow.dev/problems/capture-row-invalid",
        "title": "The POS row cannot be read as a stock change",
        "status": 422,
        "detail": why,
        "code": "capture_row_invalid",
    });
    record_refused(state, origin, row, problem).await
}

async fn record_refused(
    state: &AgentState,
    origin: String,
    row: &Row,
    problem: Value,
) -> Result<bool, ApiError> {
    tracing::warn!(%origin, problem = %problem, "a captured POS row is quarantined");
    let recorded = state
        .commit(NewCommand {
            origin_key: origin,
            path: "/v1/adjustments".into(),
            body: json!({ "captured_row": row }),
            effects: Vec::new(),
            answer: Value::Null,
            // Held for staff whatever the disk: losing it would lose a sale.
            essential: true,
            reservation: None,
            remember_origin: true,
            refused: Some(problem),
        })
        .await?;
    Ok(!recorded.replayed)
}

/// The problem document the agent's API would answer with `e`.
async fn problem_document(e: ApiError) -> Value {
    use axum::response::IntoResponse;
    let response = e.into_response();
    match axum::body::to_bytes(response.into_body(), 64 * 1024).await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pairs: &[(&str, &str)]) -> Row {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.to_string())))
            .collect()
    }

    #[test]
    fn columns_parse_with_defaults() {
        let c = Columns::parse("id=line_id, quantity=qty").expect("parses");
        assert_eq!(c.id, "line_id");
        assert_eq!(c.quantity, "qty");
        assert_eq!(c.sku, "sku");
        assert!(Columns::parse("colour=x").is_err());
        assert!(Columns::parse("id=").is_err());
        assert!(Columns::parse("id").is_err());
    }

    #[test]
    fn sales_take_units_and_returns_bring_them() {
        let c = Columns::default();
        let sale = adjust_body(
            &c,
            &row(&[
                ("id", "7"),
                ("sku", "A"),
                ("location", "L"),
                ("quantity", "3"),
                ("kind", "sale"),
            ]),
        )
        .expect("a sale");
        assert_eq!(sale.delta, Some(-3));
        assert_eq!(sale.reason, "sale");
        assert_eq!(sale.reference.as_deref(), Some("pos-line:7"));
        let ret = adjust_body(
            &c,
            &row(&[
                ("id", "8"),
                ("sku", "A"),
                ("location", "L"),
                ("quantity", "1"),
                ("kind", "return"),
            ]),
        )
        .expect("a return");
        assert_eq!(ret.delta, Some(1));
    }

    #[test]
    fn unreadable_rows_say_why() {
        let c = Columns::default();
        let base = [("id", "9"), ("sku", "A"), ("location", "L")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = base.to_vec();
            pairs.extend_from_slice(extra);
            adjust_body(&c, &row(&pairs)).expect_err("refused")
        };
        assert!(with(&[("quantity", "two"), ("kind", "sale")]).contains("whole number"));
        assert!(with(&[("quantity", "0"), ("kind", "sale")]).contains("positive"));
        assert!(with(&[("quantity", "1"), ("kind", "gift")]).contains("kind `gift`"));
        assert!(with(&[("quantity", "1")]).contains("`kind`"));
    }
}
