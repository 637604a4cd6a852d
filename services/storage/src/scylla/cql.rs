//! Session set-up, statement helpers and the mapping of driver errors.

use std::sync::Arc;
use std::time::Duration;

use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError, WriteType};
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::response::query_result::QueryResult;
use scylla::statement::{Consistency, SerialConsistency};
use scylla::value::{CqlValue, Row};

use crate::{Result, StoreError};

/// How to reach the cluster.
#[derive(Debug, Clone)]
pub struct ScyllaConfig {
    /// Contact points, `host:port`.
    pub nodes: Vec<String>,
    /// Keyspace holding every table.
    pub keyspace: String,
    /// Datacenter for `LOCAL_*` consistency and routing.
    pub local_dc: Option<String>,
    /// Username and password, when authentication is on.
    pub credentials: Option<(String, String)>,
    /// TLS to every node, trusting the CA certificates of this PEM (client encryption on
    /// the cluster; a node's certificate must name its IP address).
    pub tls_ca_pem: Option<String>,
    /// How long to wait for a connection at start-up.
    pub connect_timeout: Duration,
    /// Per-request timeout.
    pub request_timeout: Duration,
}

impl ScyllaConfig {
    /// Defaults for `nodes` and `keyspace`.
    pub fn new(nodes: Vec<String>, keyspace: impl Into<String>) -> Self {
        Self {
            nodes,
            keyspace: keyspace.into(),
            local_dc: None,
            credentials: None,
            tls_ca_pem: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Checks a keyspace name: it is spliced into CQL text, so only `[a-z0-9_]{1,48}`.
pub(crate) fn valid_keyspace(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 48
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Config(format!(
            "keyspace {name:?} must be 1-48 characters of a-z, 0-9 and _"
        )))
    }
}

/// Opens a session: LOCAL_QUORUM for reads and writes, LOCAL_SERIAL for Paxos.
pub async fn connect(config: &ScyllaConfig) -> Result<Session> {
    valid_keyspace(&config.keyspace)?;
    if config.nodes.is_empty() {
        return Err(StoreError::Config("no ScyllaDB nodes given".into()));
    }
    let mut policy = DefaultPolicy::builder().token_aware(true);
    if let Some(dc) = &config.local_dc {
        policy = policy.prefer_datacenter(dc.clone());
    }
    let profile = ExecutionProfile::builder()
        .load_balancing_policy(policy.build())
        .consistency(Consistency::LocalQuorum)
        .serial_consistency(Some(SerialConsistency::LocalSerial))
        .request_timeout(Some(config.request_timeout))
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(&config.nodes)
        .connection_timeout(config.connect_timeout)
        .default_execution_profile_handle(profile.into_handle());
    if let Some((user, password)) = &config.credentials {
        builder = builder.user(user, password);
    }
    if let Some(pem) = &config.tls_ca_pem {
        builder = builder.tls_context(Some(tls_context(pem)?));
    }
    let connecting = builder.build();
    match tokio::time::timeout(config.connect_timeout + Duration::from_secs(2), connecting).await {
        Ok(Ok(session)) => Ok(session),
        Ok(Err(e)) => Err(StoreError::Unavailable(format!(
            "cannot connect to ScyllaDB at {}: {e}",
            config.nodes.join(", ")
        ))),
        Err(_) => Err(StoreError::Unavailable(format!(
            "no answer from ScyllaDB at {} within {:?}",
            config.nodes.join(", "),
            config.connect_timeout
        ))),
    }
}

/// A rustls client configuration trusting the CA certificates in `pem`. The provider is
/// named (ring) because the process links two and rustls will not choose.
fn tls_context(pem: &str) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| StoreError::Config(format!("ScyllaDB CA: not PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| StoreError::Config(format!("ScyllaDB CA: {e}")))?;
    }
    if roots.is_empty() {
        return Err(StoreError::Config(
            "ScyllaDB CA: no certificate in the PEM given".into(),
        ));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| StoreError::Config(format!("TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Whether a failed statement may still have been applied (a Paxos write that timed out).
pub(crate) fn outcome_unknown(e: &ExecutionError) -> bool {
    match e {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, _)) => matches!(
            db,
            DbError::WriteTimeout {
                write_type: WriteType::Cas | WriteType::Batch | WriteType::BatchLog,
                ..
            } | DbError::WriteFailure { .. }
        ),
        ExecutionError::RequestTimeout(_) => true,
        _ => false,
    }
}

/// Whether a failed request may succeed when tried again: timeouts, unavailable or
/// overloaded replicas, a lost connection.
pub(crate) fn transient(e: &ExecutionError) -> bool {
    match e {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, _)) => matches!(
            db,
            DbError::Unavailable { .. }
                | DbError::Overloaded
                | DbError::IsBootstrapping
                | DbError::ReadTimeout { .. }
                | DbError::WriteTimeout { .. }
        ),
        ExecutionError::RequestTimeout(_) | ExecutionError::ConnectionPoolError(_) => true,
        _ => false,
    }
}

/// Whether the server refused the request for its values (an invalid or oversized value),
/// which no retry fixes. Timeouts, unavailable replicas, `WriteFailure` and `ServerError`
/// are the cluster's trouble and retried.
pub(crate) fn rejects_the_input(e: &ExecutionError) -> bool {
    matches!(
        e,
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(DbError::Invalid, _))
    )
}

/// Wraps a driver error with what was being done; [`StoreError::retryable`] reads the
/// typed error to tell a timeout from a refusal.
pub(crate) fn db_error(context: &str, e: ExecutionError) -> StoreError {
    StoreError::Cql {
        context: context.to_string(),
        source: Arc::new(e),
    }
}

/// Rows of a result, untyped, with the index of each named column.
pub(crate) struct Rows {
    pub(crate) names: Vec<String>,
    pub(crate) rows: Vec<Row>,
}

impl Rows {
    pub(crate) fn from(result: QueryResult) -> Result<Self> {
        if !result.is_rows() {
            return Ok(Self {
                names: Vec::new(),
                rows: Vec::new(),
            });
        }
        let rows = result
            .into_rows_result()
            .map_err(|e| StoreError::Database(format!("result is not rows: {e}")))?;
        let names = rows
            .column_specs()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        let decoded = rows
            .rows::<Row>()
            .map_err(|e| StoreError::Database(e.to_string()))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Database(e.to_string()))?;
        Ok(Self {
            names,
            rows: decoded,
        })
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// The value of column `name` in row `row`.
    pub(crate) fn get(&self, row: usize, name: &str) -> Option<&CqlValue> {
        let i = self.index(name)?;
        self.rows.get(row)?.columns.get(i)?.as_ref()
    }

    pub(crate) fn text(&self, row: usize, name: &str) -> Option<String> {
        match self.get(row, name)? {
            CqlValue::Text(s) | CqlValue::Ascii(s) => Some(s.clone()),
            _ => None,
        }
    }

    pub(crate) fn bigint(&self, row: usize, name: &str) -> Option<i64> {
        match self.get(row, name)? {
            CqlValue::BigInt(v) => Some(*v),
            CqlValue::Int(v) => Some(i64::from(*v)),
            _ => None,
        }
    }

    pub(crate) fn boolean(&self, row: usize, name: &str) -> Option<bool> {
        match self.get(row, name)? {
            CqlValue::Boolean(v) => Some(*v),
            _ => None,
        }
    }

    pub(crate) fn text_map(
        &self,
        row: usize,
        name: &str,
    ) -> std::collections::BTreeMap<String, String> {
        let mut out = std::collections::BTreeMap::new();
        if let Some(CqlValue::Map(entries)) = self.get(row, name) {
            for (k, v) in entries {
                if let (CqlValue::Text(k), CqlValue::Text(v)) = (k, v) {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
        out
    }

    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    /// `[applied]` of a conditional statement or batch, read by name: ScyllaDB and
    /// Cassandra return different shapes, but both name this column.
    pub(crate) fn applied(&self) -> Result<bool> {
        if self.len() == 0 {
            return Err(StoreError::Database(
                "conditional result has no rows".into(),
            ));
        }
        (0..self.len())
            .map(|r| self.boolean(r, "[applied]"))
            .try_fold(true, |all, v| v.map(|v| all && v))
            .ok_or_else(|| StoreError::Database("conditional result lacks [applied]".into()))
    }
}
