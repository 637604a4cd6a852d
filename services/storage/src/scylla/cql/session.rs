//! The session: how to reach the cluster (nodes, credentials, TLS), its consistency and
//! timeouts, and the checks on what is spliced into CQL text.

use std::sync::Arc;
use std::time::Duration;

use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::statement::{Consistency, SerialConsistency};

use crate::{Result, StoreError};

/// How long a connection may take at start-up, and how long one request may take: long
/// enough for a Paxos round under load, short enough that a lost node is noticed.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long past the connect timeout the whole session set-up may take (metadata reads).
const SETUP_GRACE: Duration = Duration::from_secs(2);
/// Longest keyspace name: CQL's own limit.
const MAX_KEYSPACE_LEN: usize = 48;

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
            connect_timeout: DEFAULT_TIMEOUT,
            request_timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Checks a keyspace name: it is spliced into CQL text, so only `[a-z0-9_]{1,48}`.
pub(crate) fn valid_keyspace(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_KEYSPACE_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Config {
            setting: "keyspace",
            reason: format!("{name:?} must be 1-{MAX_KEYSPACE_LEN} characters of a-z, 0-9 and _"),
        })
    }
}

/// Opens a session: LOCAL_QUORUM for reads and writes, LOCAL_SERIAL for Paxos.
pub async fn connect(config: &ScyllaConfig) -> Result<Session> {
    valid_keyspace(&config.keyspace)?;
    if config.nodes.is_empty() {
        return Err(StoreError::Config {
            setting: "nodes",
            reason: "no ScyllaDB nodes given".into(),
        });
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
    let unreachable = |source: crate::error::Source| StoreError::Unreachable {
        nodes: config.nodes.join(", "),
        source,
    };
    match tokio::time::timeout(config.connect_timeout + SETUP_GRACE, connecting).await {
        Ok(Ok(session)) => Ok(session),
        Ok(Err(e)) => Err(unreachable(Box::new(e))),
        Err(elapsed) => Err(unreachable(Box::new(elapsed))),
    }
}

/// A rustls client configuration trusting the CA certificates in `pem`. The provider is
/// named (ring) because the process links two and rustls will not choose.
fn tls_context(pem: &str) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let ca = |reason| StoreError::Config {
        setting: "ScyllaDB CA",
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| ca(format!("not PEM: {e}")))?;
        roots.add(cert).map_err(|e| ca(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(ca("no certificate in the PEM given".into()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ca(format!("TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}
