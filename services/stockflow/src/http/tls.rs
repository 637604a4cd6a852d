//! HTTPS for the APIs (rustls), with the serving certificate re-read when its files are
//! renewed, and mutual TLS: with a client CA, a certificate it did not sign is refused in
//! the handshake, a client without one reaches only the probes' routes (see
//! [`super::guard`]), and the certificate's names are handed to the guard, which grants
//! what the principals file says (see [`crate::auth::principals`]). Connections are served
//! by [`super::server`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// Where the server's certificate and key are, and the CA of its clients for mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates; when set, every client must present a certificate they signed.
    pub client_ca: Option<PathBuf>,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// rustls refused the configuration (a key that does not match its certificate, ...).
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The acceptor `settings` describe.
pub fn acceptor(settings: &TlsSettings) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certificate = ReloadingCertificate::load(settings, provider.clone())?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).map_err(|e| pem(ca, e.to_string()))? {
                roots
                    .add(cert.map_err(|e| pem(ca, e.to_string()))?)
                    .map_err(|e| pem(ca, e.to_string()))?;
            }
            // A certificate, when sent, must chain to `ca` (else the handshake fails); one
            // may be left out, so probes reach the open routes, and the guard refuses
            // every other route without one (`EdgeConfig::client_certificate_required`).
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(certificate));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn pem(path: &Path, reason: String) -> TlsError {
    TlsError::Pem {
        path: path.display().to_string(),
        reason,
    }
}

/// How often the certificate files are looked at for a renewal.
const RELOAD_CHECK: Duration = Duration::from_secs(10);

/// The serving certificate, read again when its files change: cert-manager (or any
/// renewal) rewrites a mounted Secret in place, and the pods must serve the new certificate
/// before the old one expires, without a restart. A renewal that does not load (half
/// written, a key that does not match) keeps the current certificate and is retried.
#[derive(Debug)]
struct ReloadingCertificate {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    /// Modification times of the certificate and key files when they were read.
    stamp: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

impl ReloadingCertificate {
    fn load(
        settings: &TlsSettings,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let stamp = stamp(&settings.cert, &settings.key);
        let key = certified_key(&settings.cert, &settings.key, &provider)?;
        Ok(Self {
            cert: settings.cert.clone(),
            key: settings.key.clone(),
            provider,
            current: RwLock::new(Loaded {
                key,
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// Re-reads the files if they changed since they were read (looked at every
    /// [`RELOAD_CHECK`], so a handshake rarely pays for a `stat`).
    fn refresh(&self) {
        {
            let current = self.current.read().unwrap_or_else(|p| p.into_inner());
            if current.checked.elapsed() < RELOAD_CHECK {
                return;
            }
        }
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        current.checked = Instant::now();
        let stamp = stamp(&self.cert, &self.key);
        if stamp == current.stamp {
            return;
        }
        match certified_key(&self.cert, &self.key, &self.provider) {
            Ok(key) => {
                tracing::info!(cert = %self.cert.display(), "serving a renewed TLS certificate");
                current.key = key;
                current.stamp = stamp;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the changed TLS certificate does not load; serving the previous one");
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.refresh();
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        Some(current.key.clone())
    }
}

fn stamp(cert: &Path, key: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (modified(cert), modified(key))
}

fn certified_key(
    cert: &Path,
    key: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem(cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(pem(cert, "no certificate".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| pem(key, e.to_string()))?;
    // `from_der` also checks that the key belongs to the certificate.
    CertifiedKey::from_der(certs, private, provider)
        .map(Arc::new)
        .map_err(|e| TlsError::Config(e.to_string()))
}

/// The names of the verified client certificate of `stream`, if the client sent one (the
/// handshake already checked it chains to the client CA).
pub fn peer_certificate<IO>(
    stream: &tokio_rustls::server::TlsStream<IO>,
) -> Option<crate::auth::PeerCertificate> {
    let chain = stream.get_ref().1.peer_certificates()?;
    names_of(chain.first()?)
}

/// The subject's common name and the DNS and URI subject alternative names of `cert`.
fn names_of(cert: &CertificateDer<'_>) -> Option<crate::auth::PeerCertificate> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let common_name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    let (mut dns_names, mut uris) = (Vec::new(), Vec::new());
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => dns_names.push((*dns).to_string()),
                GeneralName::URI(uri) => uris.push((*uri).to_string()),
                _ => {}
            }
        }
    }
    Some(crate::auth::PeerCertificate {
        common_name,
        dns_names,
        uris,
        subject: subject.to_string(),
    })
}
