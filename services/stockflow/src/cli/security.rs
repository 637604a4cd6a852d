//! Settings of the HTTP edge (authentication, rate limits, concurrency, deadlines) and
//! `stockflow token`, which mints development tokens.
//!
//! Safe by default: a process without a JWKS refuses to start unless it is told
//! `--insecure-no-auth`; only `stockflow dev` listening on loopback may run open without
//! being told, and it says so.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use super::CliError;
use crate::app::Security;
use crate::auth::signing::{
    DEV_AUDIENCE, DEV_ISSUER, DEV_KID, DevKeyFiles, SigningKey, TokenClaims,
};
use crate::auth::{AuthSettings, KeySource, MAX_LEEWAY, Scope};
use crate::http::guard::RateLimit;
use crate::http::tls::TlsSettings;

/// Who may call, and how much.
#[derive(Debug, Args)]
pub struct SecurityArgs {
    /// JWKS that verifies bearer tokens: a file (re-read every 5 minutes and on an unknown
    /// `kid`) or an `https://` URL (the identity provider's `jwks_uri`).
    #[arg(long, env = "STOCKFLOW_AUTH_JWKS")]
    pub auth_jwks: Option<String>,
    /// The `iss` every token must carry.
    #[arg(long, env = "STOCKFLOW_AUTH_ISSUER")]
    pub auth_issuer: Option<String>,
    /// An `aud` every token must include.
    #[arg(long, env = "STOCKFLOW_AUTH_AUDIENCE")]
    pub auth_audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[arg(long, env = "STOCKFLOW_AUTH_LEEWAY_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=MAX_LEEWAY.as_secs()))]
    pub auth_leeway_seconds: u64,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, env = "STOCKFLOW_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "STOCKFLOW_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Accept an `http://` JWKS URL. Only for a test identity provider on this host: keys
    /// fetched in clear text can be swapped on the way by anyone who then signs any token.
    #[arg(long, env = "STOCKFLOW_AUTH_JWKS_ALLOW_HTTP")]
    pub auth_jwks_allow_http: bool,
    /// Require client certificates signed by this PEM CA (mutual TLS). Without bearer
    /// tokens, callers are known by their certificate and get what --mtls-principals
    /// grants them.
    #[arg(long, env = "STOCKFLOW_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Mutual TLS without bearer tokens: a JSON file granting each client certificate (by
    /// common name, SAN DNS name or SAN URI) its scopes and locations; a certificate it
    /// does not name is refused (403). Read again when it changes.
    #[arg(long, env = "STOCKFLOW_MTLS_PRINCIPALS")]
    pub mtls_principals: Option<PathBuf>,
    /// Connections open at once; more wait in the accept queue.
    #[arg(long, env = "STOCKFLOW_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
    /// Seconds a client may take to send a request's headers (also how long an idle
    /// HTTP/1.1 keep-alive connection stays open).
    #[arg(long, env = "STOCKFLOW_HTTP_HEADER_READ_TIMEOUT_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub http_header_read_timeout_seconds: u64,
    /// Seconds an HTTP/2 connection may stay without a request before it is closed.
    #[arg(long, env = "STOCKFLOW_HTTP_IDLE_TIMEOUT_SECONDS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub http_idle_timeout_seconds: u64,
    /// Serve without authentication: anyone who reaches the port may change any stock.
    #[arg(long, env = "STOCKFLOW_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Requests per second each authenticated caller may send (0: no limit).
    #[arg(long, env = "STOCKFLOW_RATE_LIMIT_PER_SECOND", default_value_t = 200)]
    pub rate_limit_per_second: u32,
    /// Requests a caller may send at once above its rate.
    #[arg(long, env = "STOCKFLOW_RATE_LIMIT_BURST", default_value_t = 400)]
    pub rate_limit_burst: u32,
    /// Requests served at once; more are answered 503 at once instead of queueing.
    #[arg(long, env = "STOCKFLOW_MAX_CONCURRENT_REQUESTS", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_concurrent_requests: u64,
    /// The most one request may take, in seconds (504 after it; the command's outcome is
    /// found by retrying with the same Idempotency-Key).
    #[arg(long, env = "STOCKFLOW_REQUEST_TIMEOUT_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub request_timeout_seconds: u64,
}

impl SecurityArgs {
    /// The edge these settings ask for. `dev_key` is the data directory whose development
    /// key verifies tokens (`stockflow dev --auth-dev`); `listen` decides whether running
    /// open is allowed without `--insecure-no-auth` (loopback, and only for `dev`).
    pub fn security(
        &self,
        listen: SocketAddr,
        dev_key: Option<&Path>,
        open_on_loopback: bool,
    ) -> Result<Security, CliError> {
        let auth = match (&self.auth_jwks, dev_key) {
            (Some(_), Some(_)) => {
                return Err(CliError::Settings(
                    "give either --auth-jwks or --auth-dev, not both".into(),
                ));
            }
            (Some(jwks), None) => {
                let (Some(issuer), Some(audience)) = (&self.auth_issuer, &self.auth_audience)
                else {
                    return Err(CliError::Settings(
                        "--auth-jwks needs --auth-issuer and --auth-audience".into(),
                    ));
                };
                let source: KeySource = jwks
                    .parse()
                    .unwrap_or_else(|e: std::convert::Infallible| match e {});
                Some(AuthSettings::new(source, issuer, audience))
            }
            (None, Some(data_dir)) => {
                // Made on first use; its JWKS sits beside it.
                SigningKey::dev_key(data_dir).map_err(|e| CliError::Settings(e.to_string()))?;
                let jwks = DevKeyFiles::in_dir(data_dir).jwks;
                Some(AuthSettings::new(
                    KeySource::File(jwks),
                    DEV_ISSUER,
                    DEV_AUDIENCE,
                ))
            }
            (None, None) => None,
        };
        let auth = auth.map(|mut a| {
            a.leeway = Duration::from_secs(self.auth_leeway_seconds);
            a.allow_http_jwks = self.auth_jwks_allow_http;
            a
        });
        if let Some(AuthSettings {
            jwks: KeySource::Url(url),
            ..
        }) = &auth
            && url.starts_with("http://")
            && !self.auth_jwks_allow_http
        {
            return Err(CliError::Settings(format!(
                "refusing the JWKS URL {url}: keys fetched over plain http can be swapped on the \
                 way; use https:// or a file (--auth-jwks-allow-http is for local tests only)"
            )));
        }
        let tls = match (&self.tls_cert, &self.tls_key, &self.tls_client_ca) {
            (Some(cert), Some(key), client_ca) => Some(TlsSettings {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: client_ca.clone(),
            }),
            (None, None, None) => None,
            _ => {
                return Err(CliError::Settings(
                    "--tls-cert and --tls-key go together, and --tls-client-ca needs both".into(),
                ));
            }
        };
        // Client certificates authenticate callers as bearer tokens do, with what the
        // principals file grants: being signed by the client CA grants nothing.
        let mutual_tls = tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        match (&self.mtls_principals, mutual_tls, &auth) {
            (Some(_), false, _) => {
                return Err(CliError::Settings(
                    "--mtls-principals needs mutual TLS (--tls-client-ca)".into(),
                ));
            }
            (None, true, None) if !self.insecure_no_auth => {
                return Err(CliError::Settings(
                    "mutual TLS without bearer tokens needs --mtls-principals: a client certificate \
                     proves who calls, not what it may do"
                        .into(),
                ));
            }
            _ => {}
        }
        let principals = self.mtls_principals.is_some();
        match (&auth, self.insecure_no_auth) {
            (None, false) if principals => {
                tracing::info!(%listen, "mutual TLS: client certificates get what the principals file grants")
            }
            (None, true) if principals => {
                return Err(CliError::Settings(
                    "--insecure-no-auth contradicts --mtls-principals".into(),
                ));
            }
            (Some(_), true) => {
                return Err(CliError::Settings(
                    "--insecure-no-auth contradicts the authentication settings given".into(),
                ));
            }
            (None, false) if !(open_on_loopback && listen.ip().is_loopback()) => {
                return Err(CliError::Settings(format!(
                    "refusing to serve {listen} without authentication: give --auth-jwks, \
                     --auth-issuer and --auth-audience (or, knowingly, --insecure-no-auth)"
                )));
            }
            (None, _) => tracing::warn!(
                %listen,
                "authentication is OFF: anyone who reaches this port may change any stock"
            ),
            (Some(a), false) => {
                tracing::info!(issuer = %a.issuer, audience = %a.audience, jwks = %a.jwks, "bearer tokens required")
            }
        }
        let rate_limit = match (
            NonZeroU32::new(self.rate_limit_per_second),
            NonZeroU32::new(self.rate_limit_burst),
        ) {
            (Some(per_second), Some(burst)) => Some(RateLimit { per_second, burst }),
            _ => None,
        };
        Ok(Security {
            auth,
            rate_limit,
            max_concurrent: usize::try_from(self.max_concurrent_requests).unwrap_or(usize::MAX),
            request_timeout: Duration::from_secs(self.request_timeout_seconds),
            tls,
            mtls_principals: self.mtls_principals.clone(),
            // Anonymous callers of an exposed platform share one bucket per address;
            // `stockflow dev` open on loopback serves only this host's own processes.
            limit_anonymous: self.insecure_no_auth,
            connections: crate::http::server::ConnectionLimits {
                max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
                header_read_timeout: Duration::from_secs(self.http_header_read_timeout_seconds),
                idle_timeout: Duration::from_secs(self.http_idle_timeout_seconds),
            },
        })
    }
}

/// Arguments of `stockflow token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Data directory of a `stockflow dev --auth-dev` whose key signs the token.
    #[arg(long, env = "STOCKFLOW_DATA_DIR", default_value = "stockflow-data")]
    pub data_dir: PathBuf,
    /// Sign with this PKCS#8 PEM private key instead (with --alg and --kid).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Algorithm of --key: EdDSA, ES256 or RS256.
    #[arg(long, default_value = "EdDSA")]
    pub alg: String,
    /// `kid` of --key.
    #[arg(long, default_value = DEV_KID)]
    pub kid: String,
    /// `sub`: who the token stands for.
    #[arg(long, default_value = "dev")]
    pub subject: String,
    /// Comma-separated scopes (stock:read, stock:adjust, stock:reserve, catalog:write,
    /// admin); all of them by default.
    #[arg(long, value_delimiter = ',')]
    pub scopes: Vec<String>,
    /// Comma-separated locations a store's token may adjust and reserve at (any, if absent).
    #[arg(long, value_delimiter = ',')]
    pub locations: Vec<String>,
    /// The store a store agent's token stands for (`store_id` claim): the region records
    /// it on the store's commands and refuses the token's commands sent as another store.
    #[arg(long)]
    pub store_id: Option<String>,
    /// Lifetime, e.g. `1h`, `15m`.
    #[arg(long, default_value = "1h")]
    pub ttl: humantime::Duration,
    /// `iss`.
    #[arg(long, default_value = DEV_ISSUER)]
    pub issuer: String,
    /// `aud`.
    #[arg(long, default_value = DEV_AUDIENCE)]
    pub audience: String,
}

impl TokenArgs {
    /// Prints a token.
    pub fn run(self) -> Result<(), CliError> {
        let settings = |e: crate::auth::AuthError| CliError::Settings(e.to_string());
        let key = match &self.key {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| CliError::File {
                    path: path.clone(),
                    source,
                })?;
                let alg = self
                    .alg
                    .parse()
                    .map_err(|_| CliError::Settings(format!("unknown algorithm {}", self.alg)))?;
                SigningKey::from_pem(&pem, alg, &self.kid).map_err(settings)?
            }
            None => {
                let files = DevKeyFiles::in_dir(&self.data_dir);
                if !files.private_key.exists() {
                    return Err(CliError::Settings(format!(
                        "no development key in {}: start `stockflow dev --auth-dev --data-dir {}` first, or give --key",
                        self.data_dir.display(),
                        self.data_dir.display()
                    )));
                }
                SigningKey::dev_key(&self.data_dir).map_err(settings)?
            }
        };
        let scopes = if self.scopes.is_empty() {
            Scope::ALL.to_vec()
        } else {
            self.scopes
                .iter()
                .map(|s| {
                    Scope::parse(s.trim())
                        .ok_or_else(|| CliError::Settings(format!("unknown scope {s:?}")))
                })
                .collect::<Result<_, _>>()?
        };
        if let Some(id) = &self.store_id {
            stockflow_domain::StoreId::parse(id.as_str())
                .map_err(|e| CliError::Settings(e.to_string()))?;
        }
        let claims = TokenClaims {
            subject: self.subject,
            issuer: self.issuer,
            audience: self.audience,
            scopes,
            locations: (!self.locations.is_empty()).then_some(self.locations),
            store_id: self.store_id,
            ttl: self.ttl.into(),
            not_before_in: Duration::ZERO,
        };
        println!("{}", key.mint(&claims).map_err(settings)?);
        Ok(())
    }
}
