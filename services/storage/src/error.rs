//! The storage crate's one error enum.

use stockflow_domain::DomainError;

/// Result with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The command was refused by the domain; nothing was written.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The idempotency key was used before for a different request.
    #[error("idempotency key was already used for a different request")]
    IdempotencyKeyReused,
    /// A request with the same idempotency key is being executed (by this or another
    /// process).
    #[error("a request with this idempotency key is in progress")]
    InProgress,
    /// The store cannot take work now (shutting down, overloaded); safe to retry.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The configuration is unusable (bad keyspace name, no nodes, wrong schema).
    #[error("configuration: {0}")]
    Config(String),
    /// The database refused a statement for a reason retrying will not fix.
    #[error("database: {0}")]
    Database(String),
    /// A CQL request failed: the driver's error, kept typed so callers can tell a timeout
    /// or an unavailable replica (retryable) from a refused statement.
    #[error("{context}: {source}")]
    Cql {
        /// What was being done.
        context: String,
        /// The driver's error (shared: one failure may answer several callers).
        #[source]
        source: std::sync::Arc<scylla::errors::ExecutionError>,
    },
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored record could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The filesystem failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Another process has the data directory open.
    #[error(
        "data directory {} is in use by another stockflow process: {holder}; stop it or choose another data directory",
        dir.display()
    )]
    DataDirInUse {
        /// The directory.
        dir: std::path::PathBuf,
        /// What the holder wrote into the lock file (its pid).
        holder: String,
    },
}

impl StoreError {
    /// Whether the same operation may succeed if tried again.
    pub fn retryable(&self) -> bool {
        match self {
            StoreError::Unavailable(_) | StoreError::InProgress => true,
            StoreError::Cql { source, .. } => crate::scylla::transient(source),
            // A full disk or a failed read/write rolls the transaction back: nothing was
            // applied, and trying again once space or the device is back will work.
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::DiskFull
                    | rusqlite::ErrorCode::SystemIoFailure
            ),
            StoreError::Io(_) => true,
            _ => false,
        }
    }

    /// Whether the failure is about the data given, so trying again can never succeed (a
    /// projector dead-letters such an event). Every other failure is the store's, and the
    /// same data is to be tried again later, never dead-lettered.
    pub fn rejects_the_input(&self) -> bool {
        match self {
            StoreError::Domain(_) | StoreError::IdempotencyKeyReused | StoreError::Corrupt(_) => {
                true
            }
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::ConstraintViolation
                    | rusqlite::ErrorCode::TooBig
                    | rusqlite::ErrorCode::TypeMismatch
            ),
            StoreError::Sqlite(rusqlite::Error::ToSqlConversionFailure(_)) => true,
            StoreError::Cql { source, .. } => crate::scylla::rejects_the_input(source),
            _ => false,
        }
    }

    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            StoreError::Domain(e) => e.code(),
            StoreError::IdempotencyKeyReused => "idempotency_key_reused",
            StoreError::InProgress => "request_in_progress",
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Sqlite(_) => "sqlite",
            StoreError::Corrupt(_) => "corrupt",
            StoreError::Config(_) => "config",
            StoreError::Database(_) => "database",
            StoreError::Cql { .. } => "cql",
            StoreError::Io(_) => "io",
            StoreError::DataDirInUse { .. } => "data_dir_in_use",
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}
