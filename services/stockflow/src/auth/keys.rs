//! The verification keys: a JWKS read from a file or a URL, re-read periodically and when
//! a token names a `kid` we do not know (key rotation without a restart), never more often
//! than a minimum gap.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio_util::sync::CancellationToken;

use super::AuthError;

/// Where a JWKS comes from: `http(s)://…` is fetched, anything else is a file path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A JWKS document on disk (a mounted Secret or ConfigMap: the kubelet updates it).
    File(PathBuf),
    /// An identity provider's `jwks_uri`.
    Url(String),
}

impl FromStr for KeySource {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(if s.starts_with("https://") || s.starts_with("http://") {
            KeySource::Url(s.to_string())
        } else {
            KeySource::File(PathBuf::from(s))
        })
    }
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::File(p) => write!(f, "{}", p.display()),
            KeySource::Url(u) => f.write_str(u),
        }
    }
}

/// One verification key.
#[derive(Clone)]
pub struct VerifyingKey {
    /// The key.
    pub decoding: DecodingKey,
    /// The algorithm the JWK is restricted to, if it names one.
    pub algorithm: Option<Algorithm>,
}

/// The current keys by `kid` (`""` for a key without one).
pub struct KeySet {
    source: KeySource,
    keys: RwLock<Arc<HashMap<String, VerifyingKey>>>,
    /// Why the set is still empty, until the first successful load.
    not_loaded: RwLock<Option<String>>,
    last_load: Mutex<Instant>,
    min_refresh_gap: Duration,
    http: reqwest::Client,
}

/// The first retry of a JWKS that could not be loaded at start-up, doubled up to
/// [`LOAD_RETRY_MAX`].
const LOAD_RETRY_FIRST: Duration = Duration::from_millis(500);
/// The longest wait between two retries of a JWKS never loaded.
const LOAD_RETRY_MAX: Duration = Duration::from_secs(30);

impl KeySet {
    /// Reads `source` once. When that fails the set starts empty and not ready
    /// ([`KeySet::ready`]); [`KeySet::keep_fresh`] retries with backoff until it loads.
    pub async fn start(
        source: KeySource,
        min_refresh_gap: Duration,
    ) -> Result<Arc<Self>, AuthError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| AuthError::KeySource {
                location: source.to_string(),
                reason: e.to_string(),
            })?;
        let (keys, not_loaded) = match read(&source, &http).await {
            Ok(keys) => (keys, None),
            Err(e) => {
                tracing::warn!(error = %e, "cannot load the JWKS at start-up; not ready until it loads, retrying");
                (HashMap::new(), Some(e.to_string()))
            }
        };
        Ok(Arc::new(Self {
            source,
            keys: RwLock::new(Arc::new(keys)),
            not_loaded: RwLock::new(not_loaded),
            last_load: Mutex::new(Instant::now()),
            min_refresh_gap,
            http,
        }))
    }

    /// `Err` while no JWKS has ever been loaded, with the last reason.
    pub fn ready(&self) -> Result<(), AuthError> {
        match &*self.not_loaded.read().unwrap_or_else(|p| p.into_inner()) {
            None => Ok(()),
            Some(why) => Err(AuthError::KeysUnavailable(why.clone())),
        }
    }

    /// The key `kid` names, re-reading the source once if it is unknown and the last read
    /// is older than the minimum gap.
    pub async fn find(&self, kid: &str) -> Option<VerifyingKey> {
        if let Some(key) = self.lookup(kid) {
            return Some(key);
        }
        let due = {
            let mut last = self.last_load.lock().unwrap_or_else(|p| p.into_inner());
            if last.elapsed() >= self.min_refresh_gap {
                *last = Instant::now();
                true
            } else {
                false
            }
        };
        if due {
            self.reload().await;
        }
        self.lookup(kid)
    }

    fn lookup(&self, kid: &str) -> Option<VerifyingKey> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        match keys.get(kid) {
            Some(k) => Some(k.clone()),
            // A token without a kid is accepted only when the set has exactly one key.
            None if kid.is_empty() && keys.len() == 1 => keys.values().next().cloned(),
            None => None,
        }
    }

    /// Re-reads the source; on failure keeps the keys it had (a flaky identity provider
    /// must not lock every caller out). True when it loaded.
    async fn reload(&self) -> bool {
        match read(&self.source, &self.http).await {
            Ok(keys) => {
                tracing::debug!(source = %self.source, keys = keys.len(), "JWKS reloaded");
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
                let mut not_loaded = self.not_loaded.write().unwrap_or_else(|p| p.into_inner());
                if not_loaded.take().is_some() {
                    tracing::info!(source = %self.source, "JWKS loaded; tokens are checked now");
                }
                true
            }
            Err(e) => {
                let mut not_loaded = self.not_loaded.write().unwrap_or_else(|p| p.into_inner());
                match not_loaded.as_mut() {
                    Some(why) => {
                        tracing::warn!(error = %e, "the JWKS still cannot be loaded; retrying");
                        *why = e.to_string();
                    }
                    None => {
                        tracing::warn!(error = %e, "cannot reload the JWKS; keeping the keys loaded before")
                    }
                }
                false
            }
        }
    }

    /// Until `shutdown`: retries a set never loaded with backoff (0.5 s doubling to 30 s),
    /// then re-reads the source every `every`.
    pub fn keep_fresh(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        tokio::spawn(async move {
            let mut retry = LOAD_RETRY_FIRST;
            while self.ready().is_err() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(retry) => {}
                }
                *self.last_load.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                if !self.reload().await {
                    retry = (retry * 2).min(LOAD_RETRY_MAX);
                }
            }
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                *self.last_load.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                self.reload().await;
            }
        });
    }
}

async fn read(
    source: &KeySource,
    http: &reqwest::Client,
) -> Result<HashMap<String, VerifyingKey>, AuthError> {
    let failed = |reason: String| AuthError::KeySource {
        location: source.to_string(),
        reason,
    };
    let text = match source {
        KeySource::File(path) => tokio::fs::read_to_string(path)
            .await
            .map_err(|e| failed(e.to_string()))?,
        KeySource::Url(url) => {
            let response = http
                .get(url)
                .send()
                .await
                .map_err(|e| failed(e.to_string()))?;
            if !response.status().is_success() {
                return Err(failed(format!("answered {}", response.status())));
            }
            response.text().await.map_err(|e| failed(e.to_string()))?
        }
    };
    let set: JwkSet =
        serde_json::from_str(&text).map_err(|e| failed(format!("not a JWKS: {e}")))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let kid = jwk.common.key_id.clone().unwrap_or_default();
        // Symmetric keys never verify anything here: the set is public.
        if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
            tracing::warn!(kid, "ignoring a symmetric (oct) key in the JWKS");
            continue;
        }
        let algorithm = match jwk.common.key_algorithm {
            Some(KeyAlgorithm::RS256) => Some(Algorithm::RS256),
            Some(KeyAlgorithm::ES256) => Some(Algorithm::ES256),
            Some(KeyAlgorithm::EdDSA) => Some(Algorithm::EdDSA),
            Some(_) => {
                tracing::warn!(kid, "ignoring a JWKS key for an algorithm we do not accept");
                continue;
            }
            None => None,
        };
        match DecodingKey::from_jwk(jwk) {
            Ok(decoding) => {
                keys.insert(
                    kid,
                    VerifyingKey {
                        decoding,
                        algorithm,
                    },
                );
            }
            Err(e) => tracing::warn!(kid, error = %e, "ignoring an unusable JWKS key"),
        }
    }
    if keys.is_empty() {
        return Err(failed("no usable RS256, ES256 or EdDSA key".into()));
    }
    Ok(keys)
}
