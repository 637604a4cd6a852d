//! Who is calling and what they may do: `Authorization: Bearer <JWT>` checked against a
//! JWKS ([`keys`]), scopes per route, and the locations a store's token may act at.
//! [`signing`] mints tokens from a local key for development and tests.
//!
//! Only asymmetric algorithms are accepted (RS256, ES256, EdDSA): a JWKS is public, so a
//! verifier that accepted HS256 could be fooled by a token "signed" with a public key, and
//! `alg: none` is no signature at all.

pub mod keys;
pub mod principals;
pub mod signing;
mod store;

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, Validation, decode, decode_header};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use stockflow_domain::{CallerTag, IdempotencyKey, LocationId, ScopedKey};
use tokio_util::sync::CancellationToken;

pub use keys::{KeySet, KeySource};
pub use principals::{Grant, PeerCertificate, PrincipalTable, Principals};
pub use store::{STORE_HEADER, STORE_SEQ_HEADER, StoreMismatch};

/// The algorithms a token may be signed with.
pub const ACCEPTED_ALGORITHMS: [Algorithm; 3] =
    [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// The most clock skew `--auth-leeway-seconds` may allow.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// A permission a token carries in its `scope` (space-separated) or `scp` (list) claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// The query API and reading reservations.
    StockRead,
    /// Adjustments.
    StockAdjust,
    /// Reserve, confirm, release.
    StockReserve,
    /// Locations and SKUs.
    CatalogWrite,
    /// Dead letters, projection replays, metrics.
    Admin,
    /// Webhook subscriptions: who receives the region's events (admin-like: a
    /// subscription sees every event its filter matches).
    WebhooksManage,
}

impl Scope {
    /// Every scope, in the order the docs list them.
    pub const ALL: [Scope; 6] = [
        Scope::StockRead,
        Scope::StockAdjust,
        Scope::StockReserve,
        Scope::CatalogWrite,
        Scope::Admin,
        Scope::WebhooksManage,
    ];

    /// The scope's name in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::StockRead => "stock:read",
            Scope::StockAdjust => "stock:adjust",
            Scope::StockReserve => "stock:reserve",
            Scope::CatalogWrite => "catalog:write",
            Scope::Admin => "admin",
            Scope::WebhooksManage => "webhooks:manage",
        }
    }

    /// The scope named `name`, if it is one.
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The caller of one request, and exactly what it was granted. Nothing here grants a
/// scope or a location by default: every constructor states what the caller gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's subject, the certificate's principal, or `anonymous`.
    pub subject: String,
    /// The OAuth2 client (`client_id` or `azp`), if the token names one.
    pub client_id: Option<String>,
    scopes: BTreeSet<Scope>,
    /// `None`: any location.
    locations: Option<BTreeSet<String>>,
    /// The store a store's credentials stand for (`store_id` claim or principal grant).
    store_id: Option<String>,
    /// Digest of issuer and subject, which scopes idempotency keys; `None` when anonymous.
    actor_tag: Option<String>,
    /// The caller's token bucket.
    rate_key: String,
}

impl Identity {
    /// A caller of a platform that runs without authentication (`--insecure-no-auth`, or
    /// `stockflow dev` on loopback): whoever reaches the port was knowingly given every
    /// scope at every location. Anonymous callers share one idempotency key space and
    /// one token bucket per client address.
    pub fn unauthenticated(client: Option<IpAddr>) -> Self {
        Self {
            subject: "anonymous".into(),
            client_id: None,
            scopes: Scope::ALL.into_iter().collect(),
            locations: None,
            store_id: None,
            actor_tag: None,
            rate_key: anonymous_rate_key(client),
        }
    }

    /// A caller of an open route (`/healthz`, `/readyz`, `/openapi.json`, `/asyncapi.json`)
    /// on a platform that authenticates: it holds nothing.
    pub fn nobody(client: Option<IpAddr>) -> Self {
        Self {
            scopes: BTreeSet::new(),
            locations: Some(BTreeSet::new()),
            ..Self::unauthenticated(client)
        }
    }

    /// A caller known by its verified client certificate (mutual TLS without bearer
    /// tokens), with what the principals file grants it.
    pub fn from_principal(grant: Grant) -> Self {
        let tag = actor_tag("mtls", &grant.principal);
        Self {
            subject: grant.principal,
            client_id: None,
            scopes: grant.scopes,
            locations: grant.locations,
            store_id: grant.store_id,
            rate_key: tag.clone(),
            actor_tag: Some(tag),
        }
    }

    /// Whether the caller holds `scope`.
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// Whether a `locations` claim (or grant) limits the caller to some locations.
    pub fn is_limited_to_locations(&self) -> bool {
        self.locations.is_some()
    }

    /// Whether the caller may read stock and movements at `location`: the locations its
    /// [`Identity::location_grant`] lets it change.
    pub fn may_read_at(&self, location: &str) -> bool {
        self.locations.as_ref().is_none_or(|l| l.contains(location))
    }

    /// The caller as recorded in the events of its commands (audit), with the store the
    /// command came from ([`Identity::store_origin`]).
    pub fn actor(&self, store: Option<stockflow_domain::StoreOrigin>) -> stockflow_domain::Actor {
        stockflow_domain::Actor {
            subject: self.subject.clone(),
            client_id: self.client_id.clone(),
            store,
        }
    }

    /// Where the caller may change stock, for the write side to check where each command
    /// is decided: any location, or only those of its `locations` claim (a name that is not
    /// a valid location id matches no location).
    pub fn location_grant(&self) -> stockflow_domain::LocationGrant {
        match &self.locations {
            None => stockflow_domain::LocationGrant::Any,
            Some(names) => stockflow_domain::LocationGrant::only(
                names
                    .iter()
                    .filter_map(|n| LocationId::parse(n.as_str()).ok()),
            ),
        }
    }

    /// `key` as this caller's: authenticated callers each have their own key space.
    pub fn scoped_key(&self, key: IdempotencyKey) -> ScopedKey {
        // The tag is hex of a digest, always valid; fall back to the shared key space
        // rather than fail a request over it.
        let caller = self
            .actor_tag
            .as_deref()
            .and_then(|tag| CallerTag::parse(tag).ok());
        ScopedKey::new(caller, key)
    }

    /// The rate-limit bucket of this caller: its own when authenticated, its client
    /// address's when anonymous.
    pub fn rate_key(&self) -> &str {
        &self.rate_key
    }
}

/// An [`Identity`] as kept with work done on its behalf later: an import's rows run as
/// their uploader, also after a restart, with exactly the rights the upload was granted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct StoredIdentity {
    subject: String,
    client_id: Option<String>,
    scopes: Vec<String>,
    locations: Option<BTreeSet<String>>,
    store_id: Option<String>,
    actor_tag: Option<String>,
    rate_key: String,
}

impl Identity {
    /// The identity as [`StoredIdentity`] keeps it.
    pub fn to_stored(&self) -> StoredIdentity {
        StoredIdentity {
            subject: self.subject.clone(),
            client_id: self.client_id.clone(),
            scopes: self.scopes.iter().map(|s| s.as_str().to_string()).collect(),
            locations: self.locations.clone(),
            store_id: self.store_id.clone(),
            actor_tag: self.actor_tag.clone(),
            rate_key: self.rate_key.clone(),
        }
    }

    /// The identity `stored` kept; a scope this version does not know grants nothing.
    pub fn from_stored(stored: StoredIdentity) -> Self {
        Self {
            subject: stored.subject,
            client_id: stored.client_id,
            scopes: stored
                .scopes
                .iter()
                .filter_map(|n| Scope::parse(n))
                .collect(),
            locations: stored.locations,
            store_id: stored.store_id,
            actor_tag: stored.actor_tag,
            rate_key: stored.rate_key,
        }
    }

    /// Whether `other` is the same caller (the same subject of the same issuer, or both
    /// anonymous): who may read what this caller started.
    pub fn same_caller(&self, other: &Identity) -> bool {
        self.subject == other.subject && self.actor_tag == other.actor_tag
    }
}

fn anonymous_rate_key(client: Option<IpAddr>) -> String {
    match client {
        Some(ip) => format!("anonymous@{ip}"),
        None => "anonymous".into(),
    }
}

/// The tag that scopes a caller's idempotency keys and names its rate-limit bucket: 64
/// bits of SHA-256 over issuer and subject.
pub fn actor_tag(issuer: &str, subject: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(issuer.as_bytes());
    digest.update(b"\n");
    digest.update(subject.as_bytes());
    hex::encode(&digest.finalize()[..8])
}

/// How tokens are checked.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Where the verification keys come from.
    pub jwks: KeySource,
    /// The `iss` every token must carry.
    pub issuer: String,
    /// An `aud` every token must include.
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf` (at most [`MAX_LEEWAY`]).
    pub leeway: Duration,
    /// How often the JWKS is re-read even when every `kid` is known.
    pub refresh_every: Duration,
    /// The least time between two re-reads caused by unknown `kid`s, so forged `kid`s
    /// cannot make us hammer the key source.
    pub min_refresh_gap: Duration,
    /// Accept an `http://` JWKS URL (tests against a local server only): keys fetched in
    /// clear text can be replaced by anyone on the path, who could then sign any token.
    pub allow_http_jwks: bool,
}

impl AuthSettings {
    /// Settings with the default leeway (60 s) and refresh periods (5 min, 10 s).
    pub fn new(jwks: KeySource, issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            jwks,
            issuer: issuer.into(),
            audience: audience.into(),
            leeway: Duration::from_secs(60),
            refresh_every: Duration::from_secs(300),
            min_refresh_gap: Duration::from_secs(10),
            allow_http_jwks: false,
        }
    }
}

/// Why a request's credentials were refused, or the verifier could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("this endpoint needs an Authorization: Bearer token")]
    Missing,
    /// The header or token is not a well-formed bearer JWT.
    #[error("malformed bearer token: {0}")]
    Malformed(String),
    /// Signature, algorithm, issuer, audience or time checks failed.
    #[error("token rejected: {0}")]
    Rejected(String),
    /// The token's `kid` is in no key of the JWKS, even after re-reading it.
    #[error("token rejected: no key with kid {0:?} in the JWKS")]
    UnknownKey(String),
    /// The JWKS could not be loaded.
    #[error("cannot load the JWKS from {location}: {reason}")]
    KeySource {
        /// Where from.
        location: String,
        /// Why.
        reason: String,
    },
    /// The JWKS has not been loaded yet (its source was unreachable since start-up): no
    /// token can be checked, so the request is answered 503, never 401.
    #[error("the token verification keys are not loaded yet: {0}")]
    KeysUnavailable(String),
    /// The settings are not usable.
    #[error("{0}")]
    Settings(String),
}

/// The claims we read. `iss` and `sub` must be strings (RFC 7519 makes them one
/// StringOrURI; a list is refused, whatever the JWT library would accept), and `locations`
/// and `store_id` are kept raw so that a present but unusable value (`null`, a string
/// where a list belongs) is refused instead of meaning "any location" or "no store".
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    locations: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    store_id: Option<serde_json::Value>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    azp: Option<String>,
}

/// `Some` for a claim that is present, `null` included (serde's `Option` would read a
/// `null` as absent).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

/// Checks bearer tokens.
pub struct Authenticator {
    keys: Arc<KeySet>,
    issuer: String,
    audience: String,
    leeway: Duration,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Checks the settings and starts loading the JWKS. An unreachable key source does not
    /// stop the start: it is retried with backoff while the process reports not-ready
    /// ([`Authenticator::ready`]) and answers 503, so an identity provider that is down
    /// when a pod starts does not crash-loop the region.
    pub async fn start(
        settings: AuthSettings,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, AuthError> {
        if settings.leeway > MAX_LEEWAY {
            return Err(AuthError::Settings(format!(
                "the token leeway may be at most {} s",
                MAX_LEEWAY.as_secs()
            )));
        }
        if settings.issuer.is_empty() || settings.audience.is_empty() {
            return Err(AuthError::Settings(
                "authentication needs both an issuer and an audience".into(),
            ));
        }
        if let KeySource::Url(url) = &settings.jwks
            && !url.starts_with("https://")
            && !settings.allow_http_jwks
        {
            return Err(AuthError::Settings(format!(
                "the JWKS URL {url} is not https://: keys fetched in clear text can be replaced \
                 on the way (use https, a file, or, for a local test server only, \
                 --auth-jwks-allow-http)"
            )));
        }
        let keys = KeySet::start(settings.jwks.clone(), settings.min_refresh_gap).await?;
        keys.clone().keep_fresh(settings.refresh_every, shutdown);
        Ok(Arc::new(Self {
            keys,
            issuer: settings.issuer,
            audience: settings.audience,
            leeway: settings.leeway,
        }))
    }

    /// `Err` with the last load error while no JWKS has been loaded yet.
    pub fn ready(&self) -> Result<(), AuthError> {
        self.keys.ready()
    }

    /// The caller `authorization` (the header's value) names.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Identity, AuthError> {
        let header = authorization.ok_or(AuthError::Missing)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| AuthError::Malformed("expected `Bearer <token>`".into()))?;
        let jose = decode_header(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
        if !ACCEPTED_ALGORITHMS.contains(&jose.alg) {
            return Err(AuthError::Rejected(format!(
                "algorithm {:?} is not accepted (RS256, ES256 or EdDSA only)",
                jose.alg
            )));
        }
        self.keys.ready()?;
        // A token without `kid` is checked against the JWKS's only key (and refused when
        // it holds several); an empty `kid` names nothing and is refused.
        let kid = match jose.kid {
            Some(kid) if kid.is_empty() => {
                return Err(AuthError::Malformed("the kid header is empty".into()));
            }
            Some(kid) => kid,
            None => String::new(),
        };
        let key = self
            .keys
            .find(&kid)
            .await
            .ok_or_else(|| AuthError::UnknownKey(kid.clone()))?;
        if key.algorithm.is_some_and(|a| a != jose.alg) {
            return Err(AuthError::Rejected(format!(
                "key {kid:?} is for {:?}, the token says {:?}",
                key.algorithm, jose.alg
            )));
        }
        let mut validation = Validation::new(jose.alg);
        validation.algorithms = vec![jose.alg];
        validation.leeway = self.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = decode::<Claims>(token, &key.decoding, &validation)
            .map_err(|e| AuthError::Rejected(e.to_string()))?
            .claims;
        self.identity(claims)
    }

    fn identity(&self, claims: Claims) -> Result<Identity, AuthError> {
        if claims.iss != self.issuer {
            return Err(AuthError::Rejected("wrong issuer".into()));
        }
        let names: Vec<String> = match (claims.scope, claims.scp) {
            (Some(s), _) => s.split_whitespace().map(str::to_string).collect(),
            (None, Some(list)) => list,
            (None, None) => Vec::new(),
        };
        // Unknown scopes are other services' business: ignored, never an error.
        let scopes = names.iter().filter_map(|n| Scope::parse(n)).collect();
        let locations = match claims.locations {
            None => None,
            Some(serde_json::Value::Array(items)) => Some(
                items
                    .into_iter()
                    .map(|item| match item {
                        serde_json::Value::String(l) => Ok(l),
                        other => Err(AuthError::Rejected(format!(
                            "the locations claim holds {other}, not a location id"
                        ))),
                    })
                    .collect::<Result<BTreeSet<_>, _>>()?,
            ),
            Some(other) => {
                return Err(AuthError::Rejected(format!(
                    "the locations claim must be a list of location ids, not {other}"
                )));
            }
        };
        let store_id = match claims.store_id {
            None => None,
            Some(serde_json::Value::String(id)) => Some(
                stockflow_domain::StoreId::parse(id)
                    .map_err(|e| AuthError::Rejected(format!("the store_id claim: {e}")))?
                    .into(),
            ),
            Some(other) => {
                return Err(AuthError::Rejected(format!(
                    "the store_id claim must be a store id, not {other}"
                )));
            }
        };
        let tag = actor_tag(&self.issuer, &claims.sub);
        Ok(Identity {
            subject: claims.sub,
            client_id: claims.client_id.or(claims.azp),
            scopes,
            locations,
            store_id,
            rate_key: tag.clone(),
            actor_tag: Some(tag),
        })
    }
}

#[cfg(test)]
mod tests;
