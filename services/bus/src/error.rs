//! The bus crate's one error enum.

/// Result with [`BusError`].
pub type Result<T, E = BusError> = std::result::Result<T, E>;

/// Why a bus operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The bus cannot be reached or did not confirm in time; safe to retry.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// The configuration cannot work (no brokers, a topic that is missing and may not be
    /// created, a partition count that disagrees with the topic); retrying will not help.
    #[error("bus configuration: {0}")]
    Config(String),
    /// The bus refused a request for a reason retrying will not fix.
    #[error("bus: {0}")]
    Refused(String),
    /// The embedded log's storage failed.
    #[error("embedded log: {0}")]
    Storage(String),
}

impl BusError {
    /// Whether the same operation may succeed if tried again.
    pub fn retryable(&self) -> bool {
        matches!(self, BusError::Unavailable(_) | BusError::Storage(_))
    }

    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            BusError::Unavailable(_) => "unavailable",
            BusError::Config(_) => "config",
            BusError::Refused(_) => "refused",
            BusError::Storage(_) => "storage",
        }
    }
}
