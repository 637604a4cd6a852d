//! A real `stockflow dev` platform on 127.0.0.1:0 in a temporary directory, and a small
//! HTTP client for tests.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use stockflow::app::{self, AppConfig, Running};
use stockflow::auth::signing::{SigningKey, TokenClaims};
use stockflow::auth::{AuthSettings, KeySource, Scope};

pub struct Platform {
    pub running: Running,
    pub base: String,
    /// Sends a token holding every scope with each request, unless the test configured
    /// authentication itself (then it sends none).
    pub http: reqwest::Client,
    /// Signs tokens the platform accepts (when the harness set up authentication).
    pub signer: Option<SigningKey>,
    _dir: tempfile::TempDir,
}

/// Issuer and audience of the harness's tokens.
pub const TEST_ISSUER: &str = "https://idp.test";
pub const TEST_AUDIENCE: &str = "stockflow-test";

/// A fresh Ed25519 key with `kid`, its JWKS written to `jwks`.
pub fn key_with_jwks(kid: &str, jwks: &std::path::Path) -> SigningKey {
    let (key, _pem, set) = SigningKey::generate_ed25519(kid).expect("key");
    std::fs::write(jwks, set.to_string()).expect("write jwks");
    key
}

/// Claims of a harness token for `subject` with `scopes`.
pub fn claims(subject: &str, scopes: &[Scope]) -> TokenClaims {
    TokenClaims {
        issuer: TEST_ISSUER.into(),
        audience: TEST_AUDIENCE.into(),
        ..TokenClaims::dev(subject, scopes)
    }
}

impl Platform {
    pub async fn start() -> Self {
        Self::start_with(app::StoreConfig::Embedded).await
    }

    pub async fn start_with(store: app::StoreConfig) -> Self {
        let mut config = AppConfig::new(std::path::PathBuf::new());
        config.store = store;
        Self::start_config(config).await
    }

    /// Starts `config` in a fresh temporary data directory, with 4 partitions.
    pub async fn start_config(mut config: AppConfig) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        config.data_dir = dir.path().to_path_buf();
        config.partitions = 4;
        // Every test runs with authentication on, as production does: bearer tokens, unless
        // the test authenticates callers by client certificates.
        let mutual_tls = config
            .security
            .tls
            .as_ref()
            .is_some_and(|t| t.client_ca.is_some());
        let signer = if config.security.auth.is_none() && !mutual_tls {
            let jwks = dir.path().join("test-jwks.json");
            let key = key_with_jwks("test-1", &jwks);
            config.security.auth = Some(AuthSettings::new(
                KeySource::File(jwks),
                TEST_ISSUER,
                TEST_AUDIENCE,
            ));
            Some(key)
        } else {
            None
        };
        let running = app::start(config, listener).await.expect("platform starts");
        let base = format!("http://{}", running.addr);
        let http = client(signer.as_ref());
        Self {
            running,
            base,
            http,
            signer,
            _dir: dir,
        }
    }

    /// The harness's helpers send tokens `key` signed (the test set up authentication).
    pub fn authorize_with(&mut self, key: &SigningKey) {
        self.http = client(Some(key));
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, key: impl Into<String>, body: Value) -> Response {
        self.http
            .post(self.url(path))
            .header("idempotency-key", key.into())
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.http.get(self.url(path)).send().await.expect("request")
    }

    pub async fn location(&self, id: &str, region: &str) {
        let r = self
            .http
            .put(self.url(&format!("/v1/locations/{id}")))
            .json(&json!({"region": region, "kind": "store", "name": id}))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), StatusCode::OK);
    }

    pub async fn stock(&self, sku: &str, location: &str, on_hand: i64) -> Value {
        let r = self
            .post(
                "/v1/adjustments",
                &format!("stock-{sku}-{location}-{on_hand}"),
                json!({"sku": sku, "location": location, "set_on_hand": on_hand, "reason": "cycle_count"}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.expect("json")
    }

    /// Polls the query API until `check` accepts the stock row, or fails after 5 s.
    pub async fn eventually_stock(
        &self,
        sku: &str,
        location: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = self.get(&format!("/v1/stock/{sku}/{location}")).await;
            if r.status() == StatusCode::OK {
                let v: Value = r.json().await.expect("json");
                if check(&v) {
                    return v;
                }
                if Instant::now() > deadline {
                    panic!("read model did not converge: {v}");
                }
            } else if Instant::now() > deadline {
                panic!("read model has no row for {sku}@{location}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A client sending a token `key` signed with every scope, if given.
fn client(key: Option<&SigningKey>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = key {
        let token = key.mint(&claims("harness", &Scope::ALL)).expect("token");
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    reqwest::Client::builder()
        .pool_max_idle_per_host(600)
        .default_headers(headers)
        .build()
        .expect("client")
}

pub async fn problem(r: Response) -> (StatusCode, Value) {
    let status = r.status();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body: Value = r.json().await.expect("problem body is JSON");
    assert_eq!(content_type, "application/problem+json", "{body}");
    assert_eq!(body["status"].as_u64(), Some(u64::from(status.as_u16())));
    (status, body)
}

/// Writes to `path` a token of the store [`agent_config`] names (`store-1`, at `l1`, with
/// the scopes a store agent needs), signed by the harness.
pub fn write_agent_token(p: &Platform, path: &std::path::Path) {
    let claims = TokenClaims {
        locations: Some(vec!["l1".into()]),
        store_id: Some("store-1".into()),
        ..claims(
            "store-1",
            &[Scope::StockRead, Scope::StockAdjust, Scope::StockReserve],
        )
    };
    let token = p
        .signer
        .as_ref()
        .expect("the harness signs tokens")
        .mint(&claims)
        .expect("a token");
    std::fs::write(path, token).expect("token file");
}

/// A store agent's settings for tests: store `store-1` at location `l1`, the given region,
/// directory and token, and the production defaults otherwise (7 days offline, 1 GiB).
pub fn agent_config(
    region_url: &str,
    data_dir: &std::path::Path,
    token_file: Option<std::path::PathBuf>,
) -> stockflow::agent::AgentConfig {
    stockflow::agent::AgentConfig {
        region_url: region_url.to_string(),
        store_id: "store-1".into(),
        locations: ["l1".to_string()].into(),
        token_file,
        region_tls: stockflow::agent::region::RegionTls::default(),
        data_dir: data_dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().expect("an address"),
        max_offline: Duration::from_secs(7 * 24 * 3600),
        disk_cap_bytes: 1 << 30,
        keep_acknowledged: Duration::from_secs(3600),
        request_timeout: Duration::from_secs(5),
        capture: None,
    }
}

/// Starts a store agent on a free loopback port.
pub async fn start_agent(config: stockflow::agent::AgentConfig) -> stockflow::agent::RunningAgent {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .expect("a port");
    stockflow::agent::start(config, listener)
        .await
        .expect("the agent starts")
}

/// The day the transfer helpers expect their units.
pub const DAY: &str = "2026-12-12";

impl Platform {
    /// `POST /v1/transfers` under the key `create-{id}`.
    pub async fn create_transfer(&self, id: &str, from: &str, to: &str, lines: Value) -> Response {
        self.post(
            "/v1/transfers",
            format!("create-{id}"),
            json!({"transfer_id": id, "from": from, "to": to, "lines": lines, "expected_arrival": DAY}),
        )
        .await
    }

    /// `POST /v1/transfers/{id}/{what}` (ship or cancel) under `key`.
    pub async fn on_transfer(&self, id: &str, what: &str, key: &str) -> Response {
        self.post(&format!("/v1/transfers/{id}/{what}"), key, json!({}))
            .await
    }

    /// `POST /v1/transfers/{id}/receive` under `key`.
    pub async fn receive_transfer(&self, id: &str, key: &str, body: Value) -> Response {
        self.post(&format!("/v1/transfers/{id}/receive"), key, body)
            .await
    }

    /// The write side's level of a key that was written.
    pub async fn write_level(&self, sku: &str, location: &str) -> stockflow_domain::StockLevel {
        let key = stockflow_domain::StockKey::new(
            stockflow_domain::Sku::parse(sku).expect("sku"),
            stockflow_domain::LocationId::parse(location).expect("location"),
        );
        self.running
            .backend
            .write
            .stock_level(&key)
            .await
            .expect("read")
            .unwrap_or_else(|| panic!("no level for {sku}@{location}"))
    }
}

/// The JSON body of `r`, which must have answered `status`.
pub async fn answered(r: Response, status: StatusCode) -> Value {
    let got = r.status();
    let body: Value = r.json().await.expect("json");
    assert_eq!(got, status, "{body}");
    body
}

/// The status and code of a refusal (a problem document).
pub async fn refused(r: Response) -> (u16, String) {
    let (status, body) = problem(r).await;
    (
        status.as_u16(),
        body["code"].as_str().unwrap_or_default().to_string(),
    )
}
