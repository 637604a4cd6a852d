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
    /// The region's ScyllaDB could not be reached or refused a statement.
    #[error("scylla: {0}")]
    Store(#[from] stockflow_storage::StoreError),
    /// The region's bus could not be reached or refused a request.
    #[error("bus: {0}")]
    Bus(#[from] stockflow_bus::BusError),
    /// Something outside Kubernetes failed.
    #[error("{0}")]
    External(String),
}

impl Error {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Finalizer(_) => "finalizer",
            Error::Invalid(_) => "invalid",
            Error::Serialize(_) => "serialize",
            Error::Store(_) => "scylla",
            Error::Bus(_) => "bus",
            Error::External(_) => "external",
        }
    }
}
