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
    /// The operator could not start (its listener, its metrics recorder).
    #[error("start-up: {context}: {source}")]
    Startup {
        /// What was being set up.
        context: String,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Another replica holds the leader lease now.
    #[error("lost leadership; exiting so a follower can take over")]
    LostLeadership,
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
            Error::Startup { .. } => "startup",
            Error::LostLeadership => "lost_leadership",
        }
    }
}
