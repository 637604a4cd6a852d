//! `stockflow store-agent`: the process beside a store's POS that keeps the store selling
//! when the region cannot be reached.
//!
//! Layout:
//! - [`store`]: the agent's SQLite file: the command queue (committed before the POS is
//!   answered), the quarantine, the region's view of the store's stock and the feed cursor.

pub mod store;

/// Why the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The agent's SQLite file failed.
    #[error("{what}: {source}")]
    Sqlite {
        /// What was being done.
        what: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A stored or received document does not decode.
    #[error("{what} does not decode: {source}")]
    Corrupt {
        /// What.
        what: String,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// The filesystem failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}
