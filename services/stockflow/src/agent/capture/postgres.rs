//! The POS's PostgreSQL as a [`SalesSource`]: logical replication (`pgoutput`, through
//! `pg_walstream`) of one sales table, from a slot of the agent's own.
//!
//! A new slot comes with an exported snapshot: every row of the table at the slot's start
//! is handed over first (the baseline), then the stream continues from exactly there, so
//! nothing falls between the copy and the stream. The same path rebuilds the capture when
//! the slot is lost (invalidated because the POS kept too little WAL, or dropped by
//! someone): the slot is dropped, a new one copies the table again, and the rows the agent
//! already holds are recognised by their ids. The stream's position is acknowledged to
//! PostgreSQL only after the agent committed the transaction's rows.

use std::time::Duration;

use async_trait::async_trait;
use pg_walstream::{
    CancellationToken, ColumnValue, EventStream, EventType, LogicalReplicationStream,
    PgReplicationConnection, ReplicationError, ReplicationStreamConfig, RowData, SnapshotOutcome,
    SnapshotRows, StreamingMode, quote_ident, quote_literal,
};

use super::{Batch, CaptureError, Columns, Row, SalesSource};
use crate::agent::store::AgentStore;

/// Rows of the baseline copy handed over at a time.
const BASELINE_BATCH: usize = 500;

/// What to do with the rows a table holds when the agent first captures it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExistingRows {
    /// Record them: they are sales the region has not seen.
    Record,
    /// Remember them as seen without recording: the region already has them (a POS that
    /// called the region directly until now).
    Ignore,
}

/// Where and what to capture.
#[derive(Debug, Clone)]
pub struct PostgresCapture {
    /// `postgresql://user@host:port/db` of the POS database.
    pub url: String,
    /// `schema.table` (or `table`, in `public`).
    pub table: String,
    /// The publication the agent creates for the table (if missing).
    pub publication: String,
    /// The agent's replication slot.
    pub slot: String,
    /// The table's columns.
    pub columns: Columns,
    /// The first baseline's rows.
    pub existing_rows: ExistingRows,
}

enum Stage {
    /// Not connected.
    Idle,
    /// Copying the table (rows handed over are committed once the next batch is asked
    /// for); `remember_only` for the first copy of a table whose rows the region has.
    Baseline {
        rows: Box<SnapshotRows>,
        remember_only: bool,
    },
    /// Following the slot.
    Streaming(Box<EventStream>),
}

/// The source.
pub struct PostgresSource {
    capture: PostgresCapture,
    store: AgentStore,
    stage: Stage,
    stop: CancellationToken,
}

impl std::fmt::Debug for PostgresSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSource")
            .field("table", &self.capture.table)
            .field("slot", &self.capture.slot)
            .finish_non_exhaustive()
    }
}

impl PostgresSource {
    /// A source that connects when first asked for a batch.
    pub fn new(capture: PostgresCapture, store: AgentStore, stop: CancellationToken) -> Self {
        Self {
            capture,
            store,
            stage: Stage::Idle,
            stop,
        }
    }

    fn baseline_key(&self) -> String {
        format!("capture_baseline:{}", self.capture.slot)
    }

    fn replication_url(&self) -> String {
        with_param(&self.capture.url, "replication=database")
    }

    /// Checks the table and its columns, and creates the publication if it is missing.
    // Owned, not `&self`: the stream inside is not `Sync`.
    async fn prepare(capture: PostgresCapture) -> Result<(), CaptureError> {
        let url = with_param(&capture.url, "replication=false");
        blocking(move || {
            let mut conn = PgReplicationConnection::connect(&url).map_err(classify)?;
            let (schema, table) = split_table(&capture.table);
            let qualified = format!(
                "{}.{}",
                quote_ident(schema).map_err(setup)?,
                quote_ident(table).map_err(setup)?
            );
            let present = query(
                &mut conn,
                &format!(
                    "SELECT a.attname FROM pg_attribute a
                     JOIN pg_class c ON c.oid = a.attrelid
                     JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = {} AND c.relname = {} AND a.attnum > 0 AND NOT a.attisdropped",
                    quote_literal(schema).map_err(setup)?,
                    quote_literal(table).map_err(setup)?
                ),
            )?;
            if present.is_empty() {
                return Err(CaptureError::Setup(format!(
                    "the POS table {} does not exist",
                    capture.table
                )));
            }
            let missing: Vec<&str> = capture
                .columns
                .all()
                .into_iter()
                .filter(|c| !present.iter().any(|p| p == c))
                .collect();
            if !missing.is_empty() {
                return Err(CaptureError::Setup(format!(
                    "the POS table {} has no column {} (map them with --pos-capture-columns)",
                    capture.table,
                    missing.join(", ")
                )));
            }
            let publication = quote_literal(&capture.publication).map_err(setup)?;
            let exists = query(
                &mut conn,
                &format!("SELECT pubname FROM pg_publication WHERE pubname = {publication}"),
            )?;
            if exists.is_empty() {
                // Inserts only: a sale is a fact; corrections arrive as new rows.
                execute(
                    &mut conn,
                    &format!(
                        "CREATE PUBLICATION {} FOR TABLE {qualified} WITH (publish = 'insert')",
                        quote_ident(&capture.publication).map_err(setup)?
                    ),
                )?;
                tracing::info!(publication = %capture.publication, table = %capture.table, "created the POS publication");
            }
            Ok(())
        })
        .await
    }

    /// Drops the agent's slot (lost, or left by an unfinished baseline): the next
    /// connection makes a new one and copies the table again.
    async fn drop_slot(&mut self) -> Result<(), CaptureError> {
        self.stage = Stage::Idle;
        let url = self.replication_url();
        let slot = self.capture.slot.clone();
        blocking(move || {
            let mut conn = PgReplicationConnection::connect(&url).map_err(classify)?;
            match conn.drop_replication_slot(&slot, false) {
                Ok(()) => Ok(()),
                // Already gone.
                Err(e) if e.to_string().contains("does not exist") => Ok(()),
                Err(e) => Err(classify(e)),
            }
        })
        .await?;
        self.store
            .set_setting(&self.baseline_key(), "")
            .map_err(|e| CaptureError::Transient(e.to_string()))?;
        tracing::warn!(slot = %self.capture.slot, "dropped the POS capture slot: the table is copied again and rows already held are recognised");
        Ok(())
    }

    /// Connects: a new slot starts with the table's baseline, an existing one resumes.
    async fn connect(&mut self) -> Result<(), CaptureError> {
        Self::prepare(self.capture.clone()).await?;
        let config =
            ReplicationStreamConfig::builder(&self.capture.slot, &self.capture.publication)
                // Whole transactions at their commit: a POS transaction is small.
                .with_protocol_version(1)
                .with_streaming_mode(StreamingMode::Off)
                .with_feedback_interval(Duration::from_secs(1))
                .with_connection_timeout(Duration::from_secs(10));
        let stream = LogicalReplicationStream::new(&self.replication_url(), config)
            .await
            .map_err(classify)?;
        match stream.snapshot().await.map_err(classify)? {
            SnapshotOutcome::Available(snapshot) => {
                tracing::info!(slot = %self.capture.slot, tables = snapshot.tables().len(), "POS capture: copying the table's rows, then following its changes");
                let rows = snapshot.with_cancellation(self.stop.clone()).rows();
                let first = self
                    .store
                    .setting(EVER_BASELINED)
                    .map_err(|e| CaptureError::Transient(e.to_string()))?
                    .is_none();
                self.stage = Stage::Baseline {
                    rows: Box::new(rows),
                    remember_only: first && self.capture.existing_rows == ExistingRows::Ignore,
                };
            }
            SnapshotOutcome::Unavailable(stream) => {
                let done = self
                    .store
                    .setting(&self.baseline_key())
                    .map_err(|e| CaptureError::Transient(e.to_string()))?;
                if done.as_deref().is_none_or(str::is_empty) {
                    // A slot without a finished baseline (a copy that failed, or a slot
                    // made by someone else) would stream with rows missing before it.
                    drop(stream);
                    self.drop_slot().await?;
                    return Err(CaptureError::Transient(
                        "the capture slot had no finished baseline; it was dropped and the table is copied again".into(),
                    ));
                }
                self.start_streaming(stream).await?;
            }
        }
        Ok(())
    }

    async fn start_streaming(
        &mut self,
        mut stream: LogicalReplicationStream,
    ) -> Result<(), CaptureError> {
        stream.start(None).await.map_err(classify)?;
        tracing::info!(slot = %self.capture.slot, "POS capture: following the table's changes");
        self.stage = Stage::Streaming(Box::new(stream.into_stream(self.stop.clone())));
        Ok(())
    }

    async fn next_baseline(&mut self) -> Result<Option<Batch>, CaptureError> {
        let Stage::Baseline {
            rows,
            remember_only,
        } = &mut self.stage
        else {
            return Ok(None);
        };
        let remember_only = *remember_only;
        let mut batch = Vec::new();
        while batch.len() < BASELINE_BATCH {
            match rows.next_row().await.map_err(classify)? {
                Some(row) => batch.push(to_row(&row.data)),
                None => break,
            }
        }
        if !batch.is_empty() {
            return Ok(Some(Batch {
                rows: batch,
                position: None,
                remember_only,
            }));
        }
        // Every row is committed locally (the caller asks again only then): hand over to
        // the stream, which resumes exactly at the copy's point.
        let Stage::Baseline { rows, .. } = std::mem::replace(&mut self.stage, Stage::Idle) else {
            return Ok(None);
        };
        let stream = rows.finish().await.map_err(classify)?;
        for name in [self.baseline_key().as_str(), EVER_BASELINED] {
            self.store
                .set_setting(name, "done")
                .map_err(|e| CaptureError::Transient(e.to_string()))?;
        }
        self.start_streaming(stream).await?;
        Ok(None)
    }

    async fn next_transaction(&mut self) -> Result<Batch, CaptureError> {
        let Stage::Streaming(stream) = &mut self.stage else {
            return Err(CaptureError::Transient("not streaming".into()));
        };
        let (schema, table) = split_table(&self.capture.table);
        let mut rows = Vec::new();
        loop {
            let event = stream.next_event().await.map_err(classify)?;
            match event.event_type {
                EventType::Begin { .. } => rows.clear(),
                EventType::Insert {
                    schema: s,
                    table: t,
                    data,
                    ..
                } if &*s == schema && &*t == table => rows.push(to_row(&data)),
                EventType::Commit { end_lsn, .. } => {
                    if rows.is_empty() {
                        stream.update_applied_lsn(end_lsn);
                        continue;
                    }
                    return Ok(Batch {
                        rows: std::mem::take(&mut rows),
                        position: Some(end_lsn.value()),
                        remember_only: false,
                    });
                }
                EventType::Truncate { .. } => {
                    tracing::warn!(table = %self.capture.table, "the POS table was truncated: rows already captured stay recorded");
                }
                _ => {}
            }
        }
    }
}

#[async_trait]
impl SalesSource for PostgresSource {
    async fn next_batch(&mut self) -> Result<Batch, CaptureError> {
        loop {
            if self.stop.is_cancelled() {
                return Err(CaptureError::Stopped);
            }
            let step = match self.stage {
                Stage::Idle => self.connect().await.map(|()| None),
                Stage::Baseline { .. } => self.next_baseline().await,
                Stage::Streaming(_) => self.next_transaction().await.map(Some),
            };
            match step {
                Ok(Some(batch)) => return Ok(batch),
                Ok(None) => continue,
                Err(e) => {
                    let lost_slot =
                        matches!(&e, CaptureError::Setup(m) if m.starts_with(SLOT_LOST));
                    self.stage = Stage::Idle;
                    if lost_slot {
                        tracing::warn!(error = %e, "the POS capture slot is lost");
                        self.drop_slot().await?;
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }

    fn committed(&mut self, position: u64) {
        if let Stage::Streaming(stream) = &self.stage {
            stream.update_applied_lsn(position);
        }
    }

    async fn close(&mut self) {
        if let Stage::Streaming(mut stream) = std::mem::replace(&mut self.stage, Stage::Idle) {
            // Sends the final acknowledgement.
            if let Err(e) = stream.shutdown().await {
                tracing::debug!(error = %e, "closing the POS capture stream");
            }
        }
    }
}

/// Prefix of the error that says the slot is gone.
const SLOT_LOST: &str = "replication slot: ";

/// Set once any baseline finished: later copies are rebuilds, whose rows are recorded.
const EVER_BASELINED: &str = "capture_ever_baselined";

fn classify(e: ReplicationError) -> CaptureError {
    match e {
        ReplicationError::Cancelled(_) => CaptureError::Stopped,
        ReplicationError::ReplicationSlot(m) => CaptureError::Setup(format!("{SLOT_LOST}{m}")),
        ReplicationError::Authentication(m) | ReplicationError::Config(m) => CaptureError::Setup(m),
        other => CaptureError::Transient(other.to_string()),
    }
}

fn setup(e: ReplicationError) -> CaptureError {
    CaptureError::Setup(e.to_string())
}

/// Runs a blocking round trip of the control connection off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CaptureError> + Send + 'static,
) -> Result<T, CaptureError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CaptureError::Transient(format!("a PostgreSQL call panicked: {e}")))?
}

/// The first column of every row `sql` returns.
fn query(conn: &mut PgReplicationConnection, sql: &str) -> Result<Vec<String>, CaptureError> {
    let result = conn.exec(sql).map_err(classify)?;
    if !result.is_ok() {
        return Err(CaptureError::Setup(
            result
                .error_message()
                .unwrap_or_else(|| format!("`{sql}` failed")),
        ));
    }
    Ok((0..result.ntuples())
        .filter_map(|i| result.get_value(i, 0))
        .collect())
}

fn execute(conn: &mut PgReplicationConnection, sql: &str) -> Result<(), CaptureError> {
    query(conn, sql).map(drop)
}

fn to_row(data: &RowData) -> Row {
    data.iter()
        .map(|(name, value)| {
            let text = match value {
                ColumnValue::Null => None,
                other => other.as_str().map(str::to_string),
            };
            (name.to_string(), text)
        })
        .collect()
}

fn split_table(table: &str) -> (&str, &str) {
    table.split_once('.').unwrap_or(("public", table))
}

fn with_param(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        format!("{url}{sep}{param}")
    } else {
        format!("{url} {param}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_join_either_form() {
        assert_eq!(
            with_param("postgresql://u@h:1/db", "replication=database"),
            "postgresql://u@h:1/db?replication=database"
        );
        assert_eq!(
            with_param("postgresql://u@h:1/db?sslmode=disable", "replication=false"),
            "postgresql://u@h:1/db?sslmode=disable&replication=false"
        );
        assert_eq!(
            with_param("host=h dbname=db", "replication=false"),
            "host=h dbname=db replication=false"
        );
    }

    #[test]
    fn tables_default_to_public() {
        assert_eq!(split_table("pos.sales"), ("pos", "sales"));
        assert_eq!(split_table("sales"), ("public", "sales"));
    }
}
