//! The operator's one error enum.

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while reconciling.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API refused or failed a call.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The finalizer machinery failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// The object lacks something the API server always sets.
    #[error("invalid object: {0}")]
    Invalid(String),
    /// Serializing an object failed.
    #[error("serialize: {0}")]
    Serialize(#[from] serde_json::Error),
    /// Deletion waits for the teardown Job (named) to end; not a failure.
    #[error("teardown job {0} is still running")]
    TeardownRunning(String),
}

impl Error {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Finalizer(_) => "finalizer",
            Error::Invalid(_) => "invalid",
            Error::Serialize(_) => "serialize",
            Error::TeardownRunning(_) => "teardown_running",
        }
    }
}
