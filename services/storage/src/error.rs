//! The storage crate's one error enum: each variant names what failed and keeps the
//! underlying error as its source, so callers tell a store that is busy (retry) from data
//! that can never apply (dead-letter it) from a setting to fix, by the variant alone.
//!
//! Refusals are not errors: a refused command is an answer ([`crate::ports::Executed`]).
//! The adapters build their own variants — the ScyllaDB adapter knows which driver errors
//! are transient and says so in [`StoreError::Cql`] — so this module names no database
//! driver but SQLite's error codes.

use std::path::PathBuf;
use std::sync::Arc;

use stockflow_domain::{EventInvalid, ValidationError};

/// Result with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A client library's error, kept as the source of a [`StoreError`].
pub type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A CQL request failed; the ScyllaDB adapter, which knows its driver, says whether it
    /// may succeed when tried again.
    #[error("{what}: {source}")]
    Cql {
        /// What was being done.
        what: &'static str,
        /// A timeout, an unavailable or overloaded replica, a lost connection.
        transient: bool,
        /// The server refused the request for its values: no retry fixes it.
        rejects_input: bool,
        /// The driver's error.
        #[source]
        source: Source,
    },
    /// No ScyllaDB node answered at start-up.
    #[error("cannot connect to ScyllaDB at {nodes}: {source}")]
    Unreachable {
        /// The contact points tried.
        nodes: String,
        /// The driver's error, or the connect deadline.
        #[source]
        source: Source,
    },
    /// A SQLite statement failed.
    #[error("{what}: {source}")]
    Sqlite {
        /// What was being done.
        what: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A write transaction of the embedded store could not begin or commit: nothing of it
    /// was applied.
    #[error("{db}.db: cannot {step} the write transaction: {source}")]
    Transaction {
        /// The database.
        db: &'static str,
        /// `begin` or `commit`.
        step: &'static str,
        /// SQLite's error (shared: it answers every job of the transaction).
        #[source]
        source: Arc<rusqlite::Error>,
    },
    /// An fsync of a write-ahead log failed: what is on disk is unknown, so the store
    /// refuses every write until the process restarts from the disk.
    #[error(
        "an fsync of the write-ahead log of {db}.db failed; the store refuses writes until the process restarts: {source}"
    )]
    FsyncFailed {
        /// The database.
        db: &'static str,
        /// The fsync's error (shared: it answers every later write).
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The filesystem failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A value could not be encoded for storage.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored record could not be read back.
    #[error("corrupt {what}: {source}")]
    Corrupt {
        /// What was being read.
        what: &'static str,
        /// What is wrong with it.
        #[source]
        source: Malformed,
    },
    /// An event breaks what a projection relies on: it can never be applied.
    #[error("event {event_id} cannot be projected: {source}")]
    InvalidEvent {
        /// The event.
        event_id: String,
        /// Why.
        #[source]
        source: EventInvalid,
    },
    /// A setting is unusable (a keyspace name, no nodes, a CA, a missing schema).
    #[error("{setting}: {reason}")]
    Config {
        /// The setting.
        setting: &'static str,
        /// What is wrong with it, and what to do.
        reason: String,
    },
    /// An embedded event log was opened with another partition count than it has.
    #[error(
        "the log at {} has {stored} partitions, not {wanted}; changing it would move SKUs between partitions",
        path.display()
    )]
    PartitionsFixed {
        /// The log's file.
        path: PathBuf,
        /// Partitions it has.
        stored: u32,
        /// Partitions asked for.
        wanted: u32,
    },
    /// Too much work is queued; retry shortly.
    #[error("{queue} is full; retry shortly")]
    QueueFull {
        /// The queue.
        queue: &'static str,
    },
    /// A thread or task the store needs is gone (shutting down, or it panicked).
    #[error("{worker} has stopped")]
    Stopped {
        /// Which.
        worker: &'static str,
    },
    /// A lock was poisoned by an operation that panicked while holding it.
    #[error("{what}: a previous operation panicked while holding it")]
    Poisoned {
        /// The lock.
        what: &'static str,
    },
    /// The data directory's filesystem is nearly full: a replica stops reporting ready
    /// before commands start failing.
    #[error(
        "only {free_mib} MiB free on the filesystem of {}, below the {needed_mib} MiB a ready replica keeps (commands fail once the disk is full)",
        dir.display()
    )]
    LowDisk {
        /// The data directory.
        dir: PathBuf,
        /// Free space.
        free_mib: u64,
        /// The minimum.
        needed_mib: u64,
    },
    /// A checkpoint that must empty a write-ahead log could not finish.
    #[error("cannot checkpoint {db}.db: another connection keeps using its write-ahead log")]
    CheckpointBusy {
        /// The database.
        db: &'static str,
    },
    /// Concurrent writers kept winning the conditional writes of this command.
    #[error("too much contention on {on}; retry with the same Idempotency-Key")]
    Contention {
        /// The key or catalog entry.
        on: String,
    },
    /// A backup or restore was refused: the directory is not what it must be.
    #[error("{}: {reason}", path.display())]
    Backup {
        /// The directory (or file) at fault.
        path: std::path::PathBuf,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// A command spanning partitions was interrupted; nothing of it is kept half-done,
    /// and a retry with the same key runs (or resumes) it.
    #[error(transparent)]
    Interrupted(#[from] Interruption),
    /// The store found a state its own rules exclude (a bug, or data written by hand).
    #[error("{what}: {detail}")]
    Invariant {
        /// What was being done.
        what: &'static str,
        /// What was found.
        detail: String,
    },
    /// A command this backend does not run yet (the embedded backend runs every command;
    /// the ScyllaDB adapter gains the newer ones step by step).
    #[error("the {backend} backend does not run {command} commands yet")]
    Unsupported {
        /// The backend.
        backend: &'static str,
        /// The command's name.
        command: &'static str,
    },
    /// One failure answering several callers (a shared batch).
    #[error(transparent)]
    Shared(Arc<StoreError>),
    /// Another process has the data directory open.
    #[error(
        "data directory {} is in use by another stockflow process: {holder}; stop it or choose another data directory",
        dir.display()
    )]
    DataDirInUse {
        /// The directory.
        dir: PathBuf,
        /// What the holder wrote into the lock file (its pid).
        holder: String,
    },
}

/// What is wrong with a stored record.
#[derive(Debug, thiserror::Error)]
pub enum Malformed {
    /// Its JSON does not decode.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// An identifier in it is not valid.
    #[error(transparent)]
    Value(#[from] ValidationError),
    /// A value none of its kind is spelled like.
    #[error("unknown value {text:?}")]
    Unknown {
        /// The value as stored.
        text: String,
    },
}

/// Why a command spanning partitions stopped before its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Interruption {
    /// A step was not sent because its lease ran out: expiry may be rolling it back.
    #[error("a step of this reservation outlived its lease; retry")]
    LeaseRunOut,
    /// The header left `pending` under a write of this attempt, and came back to it.
    #[error("the reservation changed while it was being made; retry")]
    ChangedWhileMade,
    /// The attempt took too long and expiry rolled it back.
    #[error("the reservation took too long and was rolled back; retry")]
    RolledBack,
    /// The attempt is being rolled back now.
    #[error("this reservation is being rolled back; retry")]
    RollingBack,
    /// The key's claim was dropped while this request looked at it.
    #[error("idempotency key changed hands; retry")]
    KeyChangedHands,
    /// The batch carrying the command was dropped before it answered.
    #[error("the batch carrying this command was abandoned; retry")]
    BatchAbandoned,
    /// Another request is shipping this transfer now; it may yet fail.
    #[error("another request is shipping this transfer; retry")]
    TransferBusy,
    /// The transfer moved on under this request several times running.
    #[error("the transfer kept changing under this request; retry")]
    TransferChanged,
}

impl StoreError {
    /// Whether the same operation may succeed if tried again.
    pub fn retryable(&self) -> bool {
        match self {
            StoreError::Cql { transient, .. } => *transient,
            // A full disk or a failed read/write rolls the transaction back: nothing was
            // applied, and trying again once space or the device is back will work.
            StoreError::Sqlite {
                source: rusqlite::Error::SqliteFailure(e, _),
                ..
            } => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::DiskFull
                    | rusqlite::ErrorCode::SystemIoFailure
            ),
            StoreError::Unreachable { .. }
            | StoreError::Transaction { .. }
            | StoreError::FsyncFailed { .. }
            | StoreError::Io { .. }
            | StoreError::QueueFull { .. }
            | StoreError::Stopped { .. }
            | StoreError::Poisoned { .. }
            | StoreError::LowDisk { .. }
            | StoreError::CheckpointBusy { .. }
            | StoreError::Contention { .. }
            | StoreError::Interrupted(_) => true,
            StoreError::Shared(e) => e.retryable(),
            _ => false,
        }
    }

    /// Whether the failure is about the data given, so trying again can never succeed (a
    /// projector dead-letters such an event). Every other failure is the store's, and the
    /// same data is to be tried again later, never dead-lettered.
    pub fn rejects_the_input(&self) -> bool {
        match self {
            StoreError::Encode { .. }
            | StoreError::Corrupt { .. }
            | StoreError::InvalidEvent { .. } => true,
            StoreError::Cql { rejects_input, .. } => *rejects_input,
            StoreError::Sqlite {
                source: rusqlite::Error::SqliteFailure(e, _),
                ..
            } => matches!(
                e.code,
                rusqlite::ErrorCode::ConstraintViolation
                    | rusqlite::ErrorCode::TooBig
                    | rusqlite::ErrorCode::TypeMismatch
            ),
            StoreError::Sqlite {
                source: rusqlite::Error::ToSqlConversionFailure(_),
                ..
            } => true,
            StoreError::Shared(e) => e.rejects_the_input(),
            _ => false,
        }
    }

    /// A short label for metrics (a small, fixed set).
    pub fn metric_label(&self) -> &'static str {
        match self {
            StoreError::Cql { .. } => "cql",
            StoreError::Sqlite { .. } => "sqlite",
            StoreError::Io { .. } => "io",
            StoreError::Encode { .. } | StoreError::Corrupt { .. } => "corrupt",
            StoreError::InvalidEvent { .. } => "invalid_event",
            StoreError::Config { .. }
            | StoreError::PartitionsFixed { .. }
            | StoreError::Backup { .. } => "config",
            StoreError::Invariant { .. } => "invariant",
            StoreError::Unsupported { .. } => "unsupported",
            StoreError::DataDirInUse { .. } => "data_dir_in_use",
            StoreError::Shared(e) => e.metric_label(),
            StoreError::Unreachable { .. }
            | StoreError::Transaction { .. }
            | StoreError::FsyncFailed { .. }
            | StoreError::QueueFull { .. }
            | StoreError::Stopped { .. }
            | StoreError::Poisoned { .. }
            | StoreError::LowDisk { .. }
            | StoreError::CheckpointBusy { .. }
            | StoreError::Contention { .. }
            | StoreError::Interrupted(_) => "unavailable",
        }
    }

    /// `self` as the answer of several callers: each gets a [`StoreError::Shared`] of it.
    pub(crate) fn shared(self) -> Arc<StoreError> {
        match self {
            StoreError::Shared(inner) => inner,
            other => Arc::new(other),
        }
    }

    /// Builds [`StoreError::Corrupt`] for `what`.
    pub(crate) fn corrupt<E: Into<Malformed>>(what: &'static str) -> impl FnOnce(E) -> StoreError {
        move |e| StoreError::Corrupt {
            what,
            source: e.into(),
        }
    }

    /// Builds [`StoreError::Corrupt`] for a value of `what` spelled `text`.
    pub(crate) fn unknown(what: &'static str, text: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            what,
            source: Malformed::Unknown { text: text.into() },
        }
    }

    /// Builds [`StoreError::Encode`] for `what`.
    pub(crate) fn encode(what: &'static str) -> impl FnOnce(serde_json::Error) -> StoreError {
        move |source| StoreError::Encode { what, source }
    }
}

/// Names what failed on a result from SQLite or the filesystem: `.what("...")?`.
pub(crate) trait Context<T> {
    /// The result, its error naming `what`.
    fn what(self, what: &'static str) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, rusqlite::Error> {
    fn what(self, what: &'static str) -> Result<T> {
        self.map_err(|source| StoreError::Sqlite { what, source })
    }
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn what(self, what: &'static str) -> Result<T> {
        self.map_err(|source| StoreError::Io { what, source })
    }
}
