//! HTTPS and mutual TLS against a real platform: plain HTTP is not answered on a TLS port;
//! with a client CA, a certificate from another CA is refused in the handshake, a client
//! without one reaches only the probes' routes (401 elsewhere), and a client certificate
//! gets exactly what the principals file grants it: a certificate of the right CA that the
//! file does not name gets 403 on every route.

mod common;

use std::path::Path;

use common::Platform;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use reqwest::StatusCode;
use serde_json::{Value, json};
use stockflow::app::AppConfig;
use stockflow::http::tls::TlsSettings;

struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
    stranger: (String, String),
    /// Signed by the region's CA, named by no principal.
    unlisted: (String, String),
    /// Signed by the region's CA, known by its SAN URI and limited to store s1.
    store_uri: (String, String),
}

fn ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().expect("key");
    let pem = params.self_signed(&key).expect("ca").pem();
    (params, key, pem)
}

fn leaf(names: &[&str], cn: &str, issuer: &Issuer<'_, KeyPair>) -> (String, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("params");
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, issuer).expect("signed");
    (cert.pem(), key.serialize_pem())
}

fn pki() -> Pki {
    let (ca_params, ca_key, ca_pem) = ca("stockflow test CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let (other_params, other_key, _) = ca("another CA");
    let other = Issuer::new(other_params, other_key);
    Pki {
        ca_pem,
        server: leaf(&["127.0.0.1", "localhost"], "stockflow", &issuer),
        client: leaf(&[], "store-7-pos", &issuer),
        stranger: leaf(&[], "stranger", &other),
        unlisted: leaf(&[], "someone-the-ca-also-signed", &issuer),
        store_uri: uri_leaf("spiffe://stockflow.test/store/s1", "pos", &issuer),
    }
}

fn uri_leaf(uri: &str, cn: &str, issuer: &Issuer<'_, KeyPair>) -> (String, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, cn);
    params
        .subject_alt_names
        .push(SanType::URI(uri.try_into().expect("uri")));
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, issuer).expect("signed");
    (cert.pem(), key.serialize_pem())
}

/// What the test region grants: the POS certificate catalog writes and adjustments
/// anywhere, the SAN-URI certificate adjustments and reads at s1 only.
const PRINCIPALS: &str = r#"{"principals": [
    {"cn": "store-7-pos", "scopes": ["catalog:write", "stock:adjust", "stock:read"], "store_id": "store-s1"},
    {"uri": "spiffe://stockflow.test/store/s1", "scopes": ["stock:adjust", "stock:read"], "locations": ["s1"]}
]}"#;

async fn https_platform(dir: &Path, pki: &Pki, mutual: bool) -> Platform {
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let mut config = AppConfig::new(std::path::PathBuf::new());
    config.security.tls = Some(TlsSettings {
        cert: write("server.pem", &pki.server.0),
        key: write("server-key.pem", &pki.server.1),
        client_ca: mutual.then(|| write("ca.pem", &pki.ca_pem)),
    });
    config.security.mtls_principals = mutual.then(|| write("principals.json", PRINCIPALS));
    let mut p = Platform::start_config(config).await;
    p.base = p.base.replace("http://", "https://");
    p
}

fn client(pki: &Pki, identity: Option<&(String, String)>, token: Option<&str>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).expect("ca"));
    if let Some((cert, key)) = identity {
        builder = builder.identity(
            reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).expect("identity"),
        );
    }
    if let Some(token) = token {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        builder = builder.default_headers(headers);
    }
    builder.build().expect("client")
}

fn harness_token(p: &Platform) -> String {
    p.signer
        .as_ref()
        .expect("the harness set up authentication")
        .mint(&common::claims("harness", &stockflow::auth::Scope::ALL))
        .expect("token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_the_api_and_plain_http_gets_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki();
    let p = https_platform(dir.path(), &pki, false).await;
    let token = harness_token(&p);
    let https = client(&pki, None, Some(&token));
    let r = https.get(p.url("/readyz")).send().await.expect("https");
    assert_eq!(r.status(), StatusCode::OK);
    let r = https
        .put(p.url("/v1/locations/s1"))
        .json(&json!({"region": "north", "kind": "store", "name": "S1"}))
        .send()
        .await
        .expect("https");
    assert_eq!(r.status(), StatusCode::OK);
    let plain = p.url("/readyz").replace("https://", "http://");
    assert!(
        reqwest::get(plain).await.is_err(),
        "plain HTTP answered on the TLS port"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_clients_without_a_certificate_of_its_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki();
    // Client certificates alone authenticate (the harness adds no bearer tokens then).
    let p = https_platform(dir.path(), &pki, true).await;
    // Without a certificate only the probes' routes answer (a kubelet sends none).
    let anonymous = client(&pki, None, None);
    for path in ["/healthz", "/readyz"] {
        let r = anonymous.get(p.url(path)).send().await.expect("probe");
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    for (method, path) in [
        (reqwest::Method::GET, "/v1/stock/A"),
        (reqwest::Method::POST, "/v1/adjustments"),
        (reqwest::Method::GET, "/metrics"),
    ] {
        let r = anonymous
            .request(method, p.url(path))
            .header("idempotency-key", "k0")
            .json(&json!({"sku": "A", "location": "s1", "delta": 1, "reason": "receipt"}))
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        let body: Value = r.json().await.expect("problem");
        assert!(
            body["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("client certificate"),
            "{body}"
        );
    }
    let stranger = client(&pki, Some(&pki.stranger), None);
    assert!(
        stranger.get(p.url("/healthz")).send().await.is_err(),
        "a certificate from another CA got through the handshake"
    );
    let store = client(&pki, Some(&pki.client), None);
    let r = store
        .put(p.url("/v1/locations/s1"))
        .json(&json!({"region": "north", "kind": "store", "name": "S1"}))
        .send()
        .await
        .expect("mutual TLS");
    assert_eq!(r.status(), StatusCode::OK);
    let adjust =
        |delta: i64| json!({"sku": "A", "location": "s1", "delta": delta, "reason": "receipt"});
    let r = store
        .post(p.url("/v1/adjustments"))
        .header("idempotency-key", "k1")
        .json(&adjust(4))
        .send()
        .await
        .expect("mutual TLS");
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["on_hand"], 4);
    // Its grant holds no admin scope.
    let r = store.get(p.url("/metrics")).send().await.expect("answer");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = r.json().await.expect("problem");
    assert_eq!(body["code"], "insufficient_scope", "{body}");
    // A certificate limited to s1 adjusts there, not at s2.
    let limited = client(&pki, Some(&pki.store_uri), None);
    let r = limited
        .post(p.url("/v1/adjustments"))
        .header("idempotency-key", "k2")
        .json(&adjust(1))
        .send()
        .await
        .expect("mutual TLS");
    assert_eq!(r.status(), StatusCode::OK);
    let r = limited
        .post(p.url("/v1/adjustments"))
        .header("idempotency-key", "k3")
        .json(&json!({"sku": "A", "location": "s2", "delta": 1, "reason": "receipt"}))
        .send()
        .await
        .expect("mutual TLS");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = r.json().await.expect("problem");
    assert_eq!(body["code"], "location_forbidden", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_the_principals_file_does_not_name_gets_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki();
    let p = https_platform(dir.path(), &pki, true).await;
    let unlisted = client(&pki, Some(&pki.unlisted), None);
    let doc: Value = unlisted
        .get(p.url("/openapi.json"))
        .send()
        .await
        .expect("document")
        .json()
        .await
        .expect("json");
    let mut refused = 0;
    for (template, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            if op["security"].is_null() {
                continue;
            }
            let path = template
                .replace("{sku}", "A")
                .replace("{location}", "s1")
                .replace("{id}", "1");
            let method: reqwest::Method = method.to_uppercase().parse().expect("method");
            let r = unlisted
                .request(
                    method.clone(),
                    p.url(&format!("{path}?sku=A&location=s1&q=a")),
                )
                .header("idempotency-key", "k")
                .json(&json!({}))
                .send()
                .await
                .expect("answer");
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{method} {template}");
            let body: Value = r.json().await.expect("problem");
            assert_eq!(
                body["code"], "principal_not_listed",
                "{method} {template}: {body}"
            );
            refused += 1;
        }
    }
    assert!(refused >= 15, "{refused} routes");
    assert!(
        p.running
            .backend
            .write
            .all_stock_levels()
            .await
            .expect("levels")
            .is_empty(),
        "a refused request changed stock"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki();
    // The platform starts with a certificate the client does not trust (as good as an
    // expired one), then the files are renewed in place, as cert-manager does.
    let (old_params, old_key, _) = ca("retired CA");
    let retired = Issuer::new(old_params, old_key);
    let start = Pki {
        ca_pem: pki.ca_pem.clone(),
        server: leaf(&["127.0.0.1", "localhost"], "stockflow", &retired),
        client: pki.client.clone(),
        stranger: pki.stranger.clone(),
        unlisted: pki.unlisted.clone(),
        store_uri: pki.store_uri.clone(),
    };
    let p = https_platform(dir.path(), &start, false).await;
    assert!(
        client(&pki, None, None)
            .get(p.url("/healthz"))
            .send()
            .await
            .is_err(),
        "the client trusts the first certificate"
    );
    std::fs::write(dir.path().join("server-key.pem"), &pki.server.1).expect("key");
    std::fs::write(dir.path().join("server.pem"), &pki.server.0).expect("cert");
    // The files are looked at every 10 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(25);
    loop {
        match client(&pki, None, None).get(p.url("/healthz")).send().await {
            Ok(r) => {
                assert_eq!(r.status(), StatusCode::OK);
                break;
            }
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the renewed certificate is not served: {e}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_and_principals_a_token_decides_and_a_bare_certificate_gets_its_grant() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let jwks = dir.path().join("jwks.json");
    let key = common::key_with_jwks("k1", &jwks);
    let mut config = AppConfig::new(std::path::PathBuf::new());
    config.security.tls = Some(TlsSettings {
        cert: write("server.pem", &pki.server.0),
        key: write("server-key.pem", &pki.server.1),
        client_ca: Some(write("ca.pem", &pki.ca_pem)),
    });
    config.security.mtls_principals = Some(write("principals.json", PRINCIPALS));
    config.security.auth = Some(stockflow::auth::AuthSettings::new(
        stockflow::auth::KeySource::File(jwks),
        common::TEST_ISSUER,
        common::TEST_AUDIENCE,
    ));
    let mut p = Platform::start_config(config).await;
    p.base = p.base.replace("http://", "https://");
    let location = json!({"region": "north", "kind": "store", "name": "S1"});
    // A listed certificate without a token: its principal's grant (catalog:write).
    let listed = client(&pki, Some(&pki.client), None);
    let r = listed
        .put(p.url("/v1/locations/s1"))
        .json(&location)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), StatusCode::OK);
    // An unlisted certificate without a token: nothing.
    let unlisted = client(&pki, Some(&pki.unlisted), None);
    let r = unlisted
        .put(p.url("/v1/locations/s1"))
        .json(&location)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The same unlisted certificate with a token: the token decides.
    let token = key
        .mint(&common::claims(
            "erp",
            &[stockflow::auth::Scope::CatalogWrite],
        ))
        .expect("token");
    let with_token = client(&pki, Some(&pki.unlisted), Some(&token));
    let r = with_token
        .put(p.url("/v1/locations/s1"))
        .json(&location)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), StatusCode::OK);
}

/// A store agent with the region's CA and the store's client certificate follows a region
/// that requires mutual TLS; without the certificate it cannot, and says offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_agent_reaches_a_mutual_tls_region_with_its_certificate() {
    use stockflow::agent::{AgentConfig, region::RegionTls};

    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki();
    let p = https_platform(dir.path(), &pki, true).await;
    let pos = client(&pki, Some(&pki.client), None);
    let r = pos
        .put(p.url("/v1/locations/s1"))
        .json(&json!({"region": "north", "kind": "store", "name": "S1"}))
        .send()
        .await
        .expect("https");
    assert_eq!(r.status(), StatusCode::OK);
    let r = pos
        .post(p.url("/v1/adjustments"))
        .header("idempotency-key", "agent-tls-1")
        .json(&json!({"sku": "A", "location": "s1", "delta": 7, "reason": "receipt"}))
        .send()
        .await
        .expect("https");
    assert_eq!(r.status(), StatusCode::OK);

    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        Some(path)
    };
    let start = |name: &'static str, region_tls: RegionTls| {
        common::start_agent(AgentConfig {
            store_id: "store-s1".into(),
            locations: ["s1".to_string()].into(),
            region_tls,
            ..common::agent_config(&p.base, &dir.path().join(name), None)
        })
    };
    let with_cert = start(
        "agent",
        RegionTls {
            ca_file: file("region-ca.pem", &pki.ca_pem),
            client_cert_file: file("store.pem", &pki.store_uri.0),
            client_key_file: file("store-key.pem", &pki.store_uri.1),
        },
    )
    .await;
    let without = start(
        "agent-without-cert",
        RegionTls {
            ca_file: file("region-ca-2.pem", &pki.ca_pem),
            ..RegionTls::default()
        },
    )
    .await;
    let plain = reqwest::Client::new();
    let stock = |addr: std::net::SocketAddr| {
        let plain = plain.clone();
        async move {
            plain
                .get(format!("http://{addr}/v1/stock/A/s1"))
                .send()
                .await
                .expect("the agent answers")
                .json::<Value>()
                .await
                .unwrap_or(Value::Null)
        }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let v = stock(with_cert.addr).await;
        if v["on_hand"] == 7 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the agent never saw the region's stock over mutual TLS: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let status = |addr: std::net::SocketAddr| {
        let plain = plain.clone();
        async move {
            plain
                .get(format!("http://{addr}/agent/status"))
                .send()
                .await
                .expect("the agent answers")
                .json::<Value>()
                .await
                .expect("status")
        }
    };
    assert_eq!(status(with_cert.addr).await["state"], "online");
    // The one without a certificate is refused in the handshake: it never gets the stock.
    let v = stock(without.addr).await;
    assert_ne!(v["on_hand"], 7, "{v}");
    assert_ne!(status(without.addr).await["state"], "online");
    with_cert.stop().await.expect("stops");
    without.stop().await.expect("stops");
}
