//! The edge, against a real platform: every route refuses every bad credential with exactly
//! 401 or 403 (never 2xx, never 5xx), keys rotate without a restart, idempotency keys are
//! scoped per caller, the rate limit answers 429 and recovers, and a request cut off by its
//! deadline is applied once with its retry.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Platform, TEST_AUDIENCE, TEST_ISSUER, key_with_jwks};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use stockflow::app::AppConfig;
use stockflow::auth::signing::SigningKey;
use stockflow::auth::{AuthSettings, KeySource, Scope};
use stockflow::http::guard::RateLimit;

/// A platform whose JWKS file the test controls, and its current key.
struct Secured {
    platform: Platform,
    key: SigningKey,
    jwks: std::path::PathBuf,
    _keys: tempfile::TempDir,
}

async fn secured(adjust: impl FnOnce(&mut AppConfig)) -> Secured {
    let keys = tempfile::tempdir().expect("tempdir");
    let jwks = keys.path().join("jwks.json");
    let key = key_with_jwks("k1", &jwks);
    let mut settings = AuthSettings::new(KeySource::File(jwks.clone()), TEST_ISSUER, TEST_AUDIENCE);
    settings.min_refresh_gap = Duration::ZERO;
    let mut config = AppConfig::new(std::path::PathBuf::new());
    config.security.auth = Some(settings);
    adjust(&mut config);
    let mut platform = Platform::start_config(config).await;
    platform.authorize_with(&key);
    Secured {
        platform,
        key,
        jwks,
        _keys: keys,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Claims as `key` would sign them for `scopes`, editable before signing.
fn raw_claims(scopes: &[Scope]) -> Value {
    let scope: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    json!({"sub": "store-7", "iss": TEST_ISSUER, "aud": TEST_AUDIENCE, "iat": now(),
           "nbf": now(), "exp": now() + 600, "scope": scope.join(" ")})
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// One route of the API, with a request that would succeed (or fail in the domain) when
/// authorized.
struct Route {
    method: Method,
    /// The concrete path (and query) sent.
    path: String,
    /// The operation's path template in the document.
    template: String,
    body: Option<Value>,
    scope: Scope,
    /// Names a location other than the store token's own (`s2`): the token is refused.
    at_location: bool,
}

impl Route {
    fn new(method: Method, path: &str, body: Option<Value>, scope: Scope) -> Self {
        Route {
            method,
            path: path.to_string(),
            template: path.to_string(),
            body,
            scope,
            at_location: true,
        }
    }
}

/// The value a test request gives each path or query parameter, by name: everything that
/// names a location names `s2` (another store than the store token's `s1`), and `r-1` is
/// a reservation held at `s2`.
fn sample(parameter: &str) -> &'static str {
    match parameter {
        "sku" => "SKU-1",
        "location" | "locations" => "s2",
        "id" => "r-1",
        "q" => "shoe",
        "channel" => "web",
        other => panic!("no sample value for parameter {other}: add one"),
    }
}

/// A body that the operation `template` accepts. Every operation with a request body in the
/// document must have one here, so a new route cannot escape the matrix.
fn sample_body(method: &Method, template: &str) -> Option<Value> {
    match (method.as_str(), template) {
        ("POST", "/v1/adjustments") => {
            Some(json!({"sku": "SKU-1", "location": "s2", "delta": 1, "reason": "receipt"}))
        }
        ("POST", "/v1/reservations") => {
            Some(json!({"lines": [{"sku": "SKU-1", "location": "s2", "qty": 1}]}))
        }
        ("PUT", "/v1/locations/{location}") => {
            Some(json!({"region": "north", "kind": "store", "name": "S2"}))
        }
        ("PUT", "/v1/skus/{sku}") => Some(json!({"name": "Shoe"})),
        ("POST", "/v1/moves") => Some(
            json!({"sku": "SKU-1", "location": "s2", "from": "available", "to": "damaged", "qty": 1, "reason": "damage"}),
        ),
        ("POST", "/v1/incoming") => Some(
            json!({"sku": "SKU-1", "location": "s2", "purchase_order": "po-1", "line": 1, "qty": 5, "expected_date": "2026-12-12"}),
        ),
        ("POST", "/v1/incoming/close") => {
            Some(json!({"sku": "SKU-1", "location": "s2", "purchase_order": "po-1", "line": 1}))
        }
        ("POST", "/v1/transfers") => Some(
            json!({"transfer_id": "t-9", "from": "s2", "to": "s1", "lines": [{"sku": "SKU-1", "qty": 1}], "expected_arrival": "2026-12-12"}),
        ),
        ("POST", "/v1/transfers/{id}/receive") => {
            Some(json!({"lines": [{"sku": "SKU-1", "received": 1}]}))
        }
        ("PUT", "/v1/channels/{channel}") => {
            Some(json!({"locations": [{"location": "s2"}, {"location": "s1"}]}))
        }
        ("POST", "/v1/sourcing/reservations") => {
            Some(json!({"channel": "web", "lines": [{"sku": "SKU-1", "qty": 1}]}))
        }
        // Another SKU than the sample's: SKU-1 stays a plain SKU for every other route.
        ("PUT", "/v1/bundles/{sku}") => Some(json!({"components": [{"sku": "SKU-2", "qty": 1}]})),
        ("POST", "/v1/subscriptions") => Some(
            json!({"url": "http://127.0.0.1:9/hook", "types": ["dev.stockflow.stock.adjusted.v1"]}),
        ),
        // Sent as JSON, so the command API answers 415 once the edge lets it through: the
        // matrix is about the edge, and an import's rows are checked one by one later.
        ("POST", "/v1/imports") => Some(json!({"type": "sku", "sku": "SKU-1", "name": "Shoe"})),
        ("POST", "/v1/allocations") => {
            Some(json!({"sku": "SKU-1", "location": "s2", "channel": "web", "ring_fence": 1}))
        }
        ("POST", "/v1/policies") => {
            Some(json!({"sku": "SKU-1", "location": "s2", "oversell": "track_only"}))
        }
        _ => None,
    }
}

/// Every operation of the platform's own `/openapi.json` that needs a credential, with a
/// request for it: generated from the document, not listed by hand.
async fn routes(p: &Platform) -> Vec<Route> {
    let doc: Value = reqwest::get(p.url("/openapi.json"))
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let mut routes = Vec::new();
    let paths = doc["paths"].as_object().expect("paths");
    for (template, item) in paths {
        for (method, op) in item.as_object().expect("path item") {
            let method: Method = method.to_uppercase().parse().expect("method");
            let Some(scope) = op["security"][0]["bearer"][0].as_str() else {
                assert!(
                    ["/healthz", "/readyz", "/openapi.json", "/asyncapi.json"]
                        .contains(&template.as_str()),
                    "{method} {template} needs no credential"
                );
                continue;
            };
            let scope = Scope::parse(scope).expect("a documented scope");
            let mut path = template.clone();
            let mut query = Vec::new();
            let mut at_location = false;
            for parameter in op["parameters"].as_array().into_iter().flatten() {
                let name = parameter["name"].as_str().expect("name");
                match parameter["in"].as_str() {
                    Some("path") => {
                        let value = match (template.as_str(), name) {
                            ("/admin/dead-letters/{id}/replay", "id") => "1",
                            // Transfers between s2 and s3: only the receipt checks the
                            // destination, so it names the one going to s2.
                            ("/v1/transfers/{id}/receive", "id") => "t-2",
                            (t, "id") if t.starts_with("/v1/transfers/") => "t-1",
                            ("/v1/bundles/{sku}", "sku") => "KIT-1",
                            _ => sample(name),
                        };
                        at_location |= name == "location" && !template.starts_with("/v1/locations");
                        at_location |= template.starts_with("/v1/reservations/{id}");
                        at_location |= template.starts_with("/v1/transfers/{id}");
                        path = path.replace(&format!("{{{name}}}"), value);
                    }
                    Some("query") if parameter["required"] == json!(true) => {
                        at_location |= name == "location" || name == "locations";
                        query.push(format!("{name}={}", sample(name)));
                    }
                    _ => {}
                }
            }
            if !query.is_empty() {
                path = format!("{path}?{}", query.join("&"));
            }
            let body = sample_body(&method, template);
            assert_eq!(
                body.is_some(),
                !op["requestBody"].is_null(),
                "{method} {template}: give it a sample body"
            );
            at_location |= body
                .as_ref()
                .is_some_and(|b| b.to_string().contains("\"location\":\"s2\""));
            at_location |= template == "/v1/transfers";
            routes.push(Route {
                method,
                path,
                template: template.clone(),
                body,
                scope,
                at_location,
            });
        }
    }
    routes
}

async fn send(p: &Platform, route: &Route, token: Option<&str>, key: &str) -> (StatusCode, Value) {
    // A client without the harness's default token.
    let client = reqwest::Client::new();
    let mut req = client
        .request(route.method.clone(), p.url(&route.path))
        .header("idempotency-key", key);
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    if let Some(body) = &route.body {
        req = req.json(body);
    }
    let r = req.send().await.expect("request");
    let status = r.status();
    let body = r.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// What the platform holds: every stock level, the reservation `r-1`, and the movements of
/// both stores' keys. A refused request must leave it as it was.
async fn state_of(p: &Platform) -> Value {
    let write = &p.running.backend.write;
    let levels = write.all_stock_levels().await.expect("levels");
    let reservation = write
        .reservation(&stockflow_domain::ReservationId::parse("r-1").expect("id"))
        .await
        .expect("reservation");
    let mut transfers = Vec::new();
    for id in ["t-1", "t-2"] {
        let id = stockflow_domain::TransferId::parse(id).expect("id");
        let t = write.transfer(&id).await.expect("transfer");
        transfers.push(t.map(|t| t.status.as_str()));
    }
    let mut movements = Vec::new();
    for location in ["s1", "s2"] {
        let rows = p
            .running
            .backend
            .read
            .movements("SKU-1", location, 0, 500)
            .await
            .expect("movements");
        movements.push(rows.iter().map(|m| m.version).collect::<Vec<_>>());
    }
    json!({
        "levels": levels.iter().map(|l| json!([l.sku.as_str(), l.location.as_str(), l.on_hand, l.reserved, l.version])).collect::<Vec<_>>(),
        "reservation": reservation.map(|r| json!([r.status.as_str(), r.lines.len()])),
        "transfers": transfers,
        "movements": movements,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_every_bad_credential() {
    let s = secured(|_| {}).await;
    let p = &s.platform;
    p.location("s1", "north").await;
    p.location("s2", "north").await;
    p.stock("SKU-1", "s2", 10).await;
    let all = Scope::ALL;
    let good = s.key.sign(&raw_claims(&all)).expect("token");
    let reserve = Route::new(
        Method::POST,
        "/v1/reservations",
        Some(
            json!({"reservation_id": "r-1", "lines": [{"sku": "SKU-1", "location": "s2", "qty": 1}]}),
        ),
        Scope::StockReserve,
    );
    let (status, body) = send(p, &reserve, Some(&good), "setup-r-1").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    p.eventually_stock("SKU-1", "s2", |v| v["reserved"] == 1)
        .await;
    // Transfers between s2 and s3, neither end the store token's s1.
    p.location("s3", "north").await;
    for (id, from, to) in [("t-1", "s2", "s3"), ("t-2", "s3", "s2")] {
        let create = Route::new(
            Method::POST,
            "/v1/transfers",
            Some(json!({"transfer_id": id, "from": from, "to": to,
                        "lines": [{"sku": "SKU-1", "qty": 1}], "expected_arrival": "2026-12-12"})),
            Scope::StockAdjust,
        );
        let (status, body) = send(p, &create, Some(&good), &format!("setup-{id}")).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let stranger = SigningKey::generate_ed25519("k-unknown").expect("key").0;
    let parts: Vec<&str> = good.split('.').collect();
    let mut tampered_claims = raw_claims(&all);
    tampered_claims["sub"] = json!("someone-else");
    let header_none = json!({"alg": "none", "typ": "JWT", "kid": "k1"});
    let public_x = std::fs::read_to_string(&s.jwks).expect("jwks");
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some("k1".into());
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut c = raw_claims(&all);
        f(&mut c);
        s.key.sign(&c).expect("token")
    };
    let empty_kid = {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(String::new());
        s.key
            .sign_with_header(&header, &raw_claims(&all))
            .expect("token")
    };
    let bad: Vec<(&str, Option<String>, &str)> = vec![
        ("no token", None, "unauthenticated"),
        (
            "expired",
            Some(edit(&|c| c["exp"] = json!(now() - 3600))),
            "invalid_token",
        ),
        (
            "not yet valid",
            Some(edit(&|c| c["nbf"] = json!(now() + 3600))),
            "invalid_token",
        ),
        (
            "wrong issuer",
            Some(edit(&|c| c["iss"] = json!("https://evil.test"))),
            "invalid_token",
        ),
        (
            "issuer as a list holding the right one",
            Some(edit(&|c| {
                c["iss"] = json!(["https://evil.test", TEST_ISSUER])
            })),
            "invalid_token",
        ),
        (
            "wrong audience",
            Some(edit(&|c| c["aud"] = json!("other-service"))),
            "invalid_token",
        ),
        (
            "no subject",
            Some(edit(&|c| {
                c.as_object_mut().map(|m| m.remove("sub"));
            })),
            "invalid_token",
        ),
        (
            "subject not a string",
            Some(edit(&|c| c["sub"] = json!(["store-7"]))),
            "invalid_token",
        ),
        (
            "locations null",
            Some(edit(&|c| c["locations"] = Value::Null)),
            "invalid_token",
        ),
        (
            "locations a string",
            Some(edit(&|c| c["locations"] = json!("s2"))),
            "invalid_token",
        ),
        ("empty kid", Some(empty_kid), "unauthenticated_or_invalid"),
        (
            "alg none",
            Some(format!("{}.{}.", b64(&header_none), b64(&raw_claims(&all)))),
            "invalid_token",
        ),
        (
            "HS256 with the public key",
            Some(
                jsonwebtoken::encode(
                    &hs_header,
                    &raw_claims(&all),
                    &EncodingKey::from_secret(public_x.as_bytes()),
                )
                .expect("forged"),
            ),
            "invalid_token",
        ),
        (
            "unknown kid",
            Some(stranger.sign(&raw_claims(&all)).expect("token")),
            "invalid_token",
        ),
        (
            "tampered payload",
            Some(format!(
                "{}.{}.{}",
                parts[0],
                b64(&tampered_claims),
                parts[2]
            )),
            "invalid_token",
        ),
        ("garbage", Some("not-a-jwt".into()), "invalid_token"),
    ];
    let routes = routes(p).await;
    assert!(
        routes.len() >= 15,
        "the document lists {} routes",
        routes.len()
    );
    let before = state_of(p).await;
    let mut cases = 0;
    for (n, route) in routes.iter().enumerate() {
        for (case, token, code) in &bad {
            let (status, body) = send(p, route, token.as_deref(), &format!("bad-{n}")).await;
            cases += 1;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{case} on {} {}: {body}",
                route.method,
                route.path
            );
            if *code != "unauthenticated_or_invalid" {
                assert_eq!(body["code"], *code, "{case} on {}", route.path);
            }
        }
        // The right token without the route's scope.
        let others: Vec<Scope> = all.into_iter().filter(|x| *x != route.scope).collect();
        let token = s.key.sign(&raw_claims(&others)).expect("token");
        let (status, body) = send(p, route, Some(&token), &format!("scope-{n}")).await;
        cases += 1;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "missing scope on {}: {body}",
            route.path
        );
        assert_eq!(body["code"], "insufficient_scope");
        assert_eq!(body["scope"], route.scope.as_str());
        if route.at_location {
            // A store's token with every scope, at another store: commands and reads.
            let mut c = raw_claims(&all);
            c["locations"] = json!(["s1"]);
            let token = s.key.sign(&c).expect("token");
            let (status, body) = send(p, route, Some(&token), &format!("loc-{n}")).await;
            cases += 1;
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "other location on {} {}: {body}",
                route.method,
                route.path
            );
            assert_eq!(body["code"], "location_forbidden");
            assert_eq!(body["location"], "s2");
        }
    }
    // Nothing any refused request asked for happened: levels, the reservation, movements.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(state_of(p).await, before, "a refused request changed state");
    eprintln!(
        "authorization matrix: {} routes from /openapi.json, {cases} refused requests",
        routes.len()
    );
    // The right token passes the edge: whatever the domain answers, never 401/403/5xx.
    for (n, route) in routes.iter().enumerate() {
        let (status, body) = send(p, route, Some(&good), &format!("good-{n}")).await;
        assert!(
            status != StatusCode::UNAUTHORIZED
                && status != StatusCode::FORBIDDEN
                && !status.is_server_error(),
            "good token on {} {}: {status} {body}",
            route.method,
            route.path
        );
    }
    // Open routes need nothing.
    for path in ["/healthz", "/readyz", "/openapi.json", "/asyncapi.json"] {
        let r = reqwest::get(p.url(path)).await.expect("request");
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_token_reads_only_its_own_locations() {
    let s = secured(|_| {}).await;
    let p = &s.platform;
    p.location("s1", "north").await;
    p.location("s2", "north").await;
    p.stock("SKU-1", "s1", 4).await;
    p.stock("SKU-1", "s2", 6).await;
    p.eventually_stock("SKU-1", "s2", |v| v["on_hand"] == 6)
        .await;
    p.eventually_stock("SKU-1", "s1", |v| v["on_hand"] == 4)
        .await;
    let mut c = raw_claims(&[Scope::StockRead]);
    c["locations"] = json!(["s1"]);
    let store = s.key.sign(&c).expect("token");
    let get = |path: &str| Route::new(Method::GET, path, None, Scope::StockRead);
    // Its own location: as anyone sees it, but never for a shared cache.
    let client = reqwest::Client::new();
    let r = client
        .get(p.url("/v1/stock/SKU-1"))
        .header("authorization", format!("Bearer {store}"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    let cache = r.headers()["cache-control"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(cache.starts_with("private"), "{cache}");
    assert!(
        r.headers().get("surrogate-key").is_none() && r.headers().get("cache-tag").is_none(),
        "an answer cut to one caller carries no edge-cache tags"
    );
    let body: Value = r.json().await.expect("json");
    let locations: Vec<&str> = body["locations"]
        .as_array()
        .expect("locations")
        .iter()
        .filter_map(|l| l["location"].as_str())
        .collect();
    assert_eq!(locations, ["s1"], "{body}");
    assert_eq!(body["total_available"], 4);
    let (status, _) = send(p, &get("/v1/stock/SKU-1/s1"), Some(&store), "k").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(
        p,
        &get("/v1/movements?sku=SKU-1&location=s1"),
        Some(&store),
        "k",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // Another store's stock and movements: refused.
    for path in ["/v1/stock/SKU-1/s2", "/v1/movements?sku=SKU-1&location=s2"] {
        let (status, body) = send(p, &get(path), Some(&store), "k").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert_eq!(body["location"], "s2");
    }
    // Region availability and search are any stock:read caller's.
    for path in ["/v1/availability/SKU-1?region=north", "/v1/search?q=SKU"] {
        let (status, body) = send(p, &get(path), Some(&store), "k").await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    let (_, body) = send(
        p,
        &get("/v1/availability/SKU-1?region=north"),
        Some(&store),
        "k",
    )
    .await;
    assert_eq!(body["total_available"], 10, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_token_acts_at_its_own_locations() {
    let s = secured(|_| {}).await;
    let p = &s.platform;
    p.location("s1", "north").await;
    let mut c = raw_claims(&[Scope::StockAdjust, Scope::StockReserve]);
    c["locations"] = json!(["s1"]);
    let token = s.key.sign(&c).expect("token");
    let adjust = Route::new(
        Method::POST,
        "/v1/adjustments",
        Some(json!({"sku": "SKU-1", "location": "s1", "set_on_hand": 5, "reason": "receipt"})),
        Scope::StockAdjust,
    );
    let (status, body) = send(p, &adjust, Some(&token), "own-1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["on_hand"], 5);

    // Settling a reservation acts at its lines' locations: the store settles its own, not
    // another store's (which the central token made).
    p.location("s2", "north").await;
    p.stock("SKU-1", "s2", 5).await;
    let central = s.key.sign(&raw_claims(&Scope::ALL)).expect("token");
    let route = |method, path: &'static str, body, scope| Route::new(method, path, body, scope);
    let reserve_at = |location: &str, id: &str| {
        route(
            Method::POST,
            "/v1/reservations",
            Some(
                json!({"reservation_id": id, "lines": [{"sku": "SKU-1", "location": location, "qty": 1}]}),
            ),
            Scope::StockReserve,
        )
    };
    let (status, body) = send(p, &reserve_at("s2", "r-s2"), Some(&central), "c-1").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = send(p, &reserve_at("s1", "r-s1"), Some(&token), "own-2").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for path in [
        "/v1/reservations/r-s2/confirm",
        "/v1/reservations/r-s2/release",
    ] {
        let settle = route(Method::POST, path, None, Scope::StockReserve);
        let (status, body) = send(p, &settle, Some(&token), "own-3").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert_eq!(
            (body["code"].as_str(), body["location"].as_str()),
            (Some("location_forbidden"), Some("s2"))
        );
    }
    let confirm = route(
        Method::POST,
        "/v1/reservations/r-s1/confirm",
        None,
        Scope::StockReserve,
    );
    let (status, body) = send(p, &confirm, Some(&token), "own-4").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("confirmed")),
        "{body}"
    );
    // The other store's reservation is untouched, and its owner still settles it.
    let release = route(
        Method::POST,
        "/v1/reservations/r-s2/release",
        None,
        Scope::StockReserve,
    );
    let (status, body) = send(p, &release, Some(&central), "c-2").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("released")),
        "{body}"
    );
}

/// A store records what already happened (`mode: record`): applied below zero and shown to
/// channels as zero, flagged in the movements; nobody else records, and a store only at
/// its own locations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_token_records_facts_and_no_other_token_may() {
    let s = secured(|_| {}).await;
    let p = &s.platform;
    p.location("s1", "north").await;
    p.location("s2", "north").await;
    p.stock("SKU-1", "s1", 1).await;
    let mut c = raw_claims(&[Scope::StockAdjust, Scope::StockRead]);
    c["locations"] = json!(["s1"]);
    let store = s.key.sign(&c).expect("token");
    let central = s.key.sign(&raw_claims(&Scope::ALL)).expect("token");
    let sale = |location: &str| {
        Route::new(
            Method::POST,
            "/v1/adjustments",
            Some(
                json!({"sku": "SKU-1", "location": location, "delta": -3, "reason": "sale", "mode": "record"}),
            ),
            Scope::StockAdjust,
        )
    };
    let (status, body) = send(p, &sale("s1"), Some(&store), "till-1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["on_hand"], &body["available"], &body["shortfall"]),
        (&json!(-2), &json!(0), &json!(2)),
        "{body}"
    );
    let (status, body) = send(p, &sale("s1"), Some(&central), "central-1").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("record_mode_forbidden")),
        "{body}"
    );
    let (status, body) = send(p, &sale("s2"), Some(&store), "till-2").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("location_forbidden")),
        "{body}"
    );
}

/// A store agent's commands carry its store (`stockflow-store`) and sequence number: the
/// region records them only under a token whose `store_id` claim is that store, refuses
/// any other store's name (and a name from a token of no store), and leaves nothing behind
/// when it refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_token_sends_as_its_own_store_only_and_the_region_records_it() {
    let s = secured(|_| {}).await;
    let p = &s.platform;
    p.location("s1", "north").await;
    let mut c = raw_claims(&[Scope::StockAdjust, Scope::StockRead]);
    c["locations"] = json!(["s1"]);
    c["store_id"] = json!("store-7");
    let store = s.key.sign(&c).expect("token");
    let central = s.key.sign(&raw_claims(&Scope::ALL)).expect("token");
    let client = reqwest::Client::new();
    let adjust = |token: &str, key: &str, headers: &[(&str, &str)]| {
        let mut req = client
            .post(p.url("/v1/adjustments"))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(&json!({"sku": "SKU-1", "location": "s1", "delta": 1, "reason": "receipt"}));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        async move {
            let r = req.send().await.expect("request");
            let status = r.status();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let as_store = [("stockflow-store", "store-7"), ("stockflow-store-seq", "5")];
    let (status, body) = adjust(&store, "k-1", &as_store).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = adjust(&store, "k-2", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The movements are projected: wait for both, so the state compared below is settled.
    p.eventually_stock("SKU-1", "s1", |v| v["version"] == 2)
        .await;
    let before = state_of(p).await;
    for (token, key, headers) in [
        (&store, "k-3", &[("stockflow-store", "store-8")][..]),
        (&central, "k-4", &[("stockflow-store", "store-7")][..]),
    ] {
        let (status, body) = adjust(token, key, headers).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("store_forbidden")),
            "{body}"
        );
    }
    for (header, value) in [
        ("stockflow-store", "no/such"),
        ("stockflow-store-seq", "-1"),
    ] {
        let (status, body) = adjust(&store, "k-5", &[(header, value)]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{header}: {body}");
    }
    let mut odd = c.clone();
    odd["store_id"] = json!(7);
    let (status, body) = adjust(&s.key.sign(&odd).expect("token"), "k-6", &[]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token")),
        "{body}"
    );
    assert_eq!(
        state_of(p).await,
        before,
        "a refused command changed nothing"
    );

    let page: Value = client
        .get(p.url("/v1/movements?sku=SKU-1&location=s1"))
        .bearer_auth(&central)
        .send()
        .await
        .expect("movements")
        .json()
        .await
        .expect("json");
    let stores: Vec<(Value, Value)> = page["movements"]
        .as_array()
        .expect("movements")
        .iter()
        .map(|m| {
            (
                m["actor"]["store_id"].clone(),
                m["actor"]["store_seq"].clone(),
            )
        })
        .collect();
    assert_eq!(
        stores,
        [
            (json!("store-7"), json!(5)),
            (json!("store-7"), Value::Null)
        ],
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_without_a_restart() {
    let s = secured(|_| {}).await;
    let p = &s.platform;
    let route = &Route::new(Method::GET, "/v1/stock/SKU-1", None, Scope::StockRead);
    let old = s.key.sign(&raw_claims(&[Scope::StockRead])).expect("token");
    assert_ne!(
        send(p, route, Some(&old), "r").await.0,
        StatusCode::UNAUTHORIZED
    );
    // The identity provider rotates: the set now holds only k2.
    let next = key_with_jwks("k2", &s.jwks);
    let new = next.sign(&raw_claims(&[Scope::StockRead])).expect("token");
    let (status, body) = send(p, route, Some(&new), "r").await;
    assert!(
        status == StatusCode::NOT_FOUND || status == StatusCode::OK,
        "new key: {status} {body}"
    );
    // The unknown kid made the set reload: the retired key no longer verifies.
    let (status, _) = send(p, route, Some(&old), "r").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_are_scoped_per_caller() {
    let s = secured(|_| {}).await;
    let p = &s.platform;
    p.location("s1", "north").await;
    let token = |sub: &str| {
        let mut c = raw_claims(&Scope::ALL);
        c["sub"] = json!(sub);
        s.key.sign(&c).expect("token")
    };
    let route = |delta: i64| {
        Route::new(
            Method::POST,
            "/v1/adjustments",
            Some(json!({"sku": "SKU-1", "location": "s1", "delta": delta, "reason": "receipt"})),
            Scope::StockAdjust,
        )
    };
    // Two POS systems pick the same key for different requests.
    let (a, a_body) = send(p, &route(3), Some(&token("pos-a")), "same-key").await;
    let (b, b_body) = send(p, &route(4), Some(&token("pos-b")), "same-key").await;
    assert_eq!(
        (a, b),
        (StatusCode::OK, StatusCode::OK),
        "{a_body} {b_body}"
    );
    assert_eq!(a_body["on_hand"], 3);
    assert_eq!(
        b_body["on_hand"], 7,
        "b's adjustment applied, not a's answer replayed"
    );
    // Each one's retry replays its own answer.
    let (again, again_body) = send(p, &route(3), Some(&token("pos-a")), "same-key").await;
    assert_eq!(again, StatusCode::OK);
    assert_eq!(again_body["on_hand"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_answers_429_and_recovers() {
    let per_second = std::num::NonZeroU32::new(5).expect("non-zero");
    let s = secured(|c| {
        c.security.rate_limit = Some(RateLimit {
            per_second,
            burst: per_second,
        })
    })
    .await;
    let p = &s.platform;
    let route = &Route::new(Method::GET, "/v1/stock/SKU-1", None, Scope::StockRead);
    let token = s.key.sign(&raw_claims(&[Scope::StockRead])).expect("token");
    let mut limited = None;
    for i in 0..20 {
        let client = reqwest::Client::new();
        let r = client
            .get(p.url(&route.path))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .expect("request");
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            let retry_after: u64 = r.headers()["retry-after"]
                .to_str()
                .expect("ascii")
                .parse()
                .expect("seconds");
            let body: Value = r.json().await.expect("json");
            assert_eq!(body["code"], "rate_limited");
            limited = Some((i, retry_after));
            break;
        }
    }
    let (i, retry_after) = limited.expect("the sixth request in a burst of twenty is limited");
    assert!(i >= 5, "the burst of 5 passes first");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    // Another caller has its own bucket.
    let mut other = raw_claims(&[Scope::StockRead]);
    other["sub"] = json!("another-store");
    let other = s.key.sign(&other).expect("token");
    assert_ne!(
        send(p, route, Some(&other), "k").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_ne!(
        send(p, route, Some(&token), "k").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_command_and_its_retry_apply_once() {
    let faults = std::sync::Arc::new(stockflow_storage::embedded::FaultInjection::default());
    let injected = faults.clone();
    let s = secured(move |c| {
        c.security.request_timeout = Duration::from_millis(300);
        c.faults = injected;
    })
    .await;
    let p = &s.platform;
    p.location("s1", "north").await;
    let token = s.key.sign(&raw_claims(&Scope::ALL)).expect("token");
    let route = Route::new(
        Method::POST,
        "/v1/adjustments",
        Some(json!({"sku": "SKU-1", "location": "s1", "delta": 2, "reason": "receipt"})),
        Scope::StockAdjust,
    );
    // The disk turns slow: the command outlives its deadline.
    faults.slow_fsync_ms.store(1000, Ordering::Release);
    let (status, body) = send(p, &route, Some(&token), "slow-1").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(body["code"], "timeout");
    faults.slow_fsync_ms.store(0, Ordering::Release);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // The retry finds the outcome: applied once.
    let (status, body) = send(p, &route, Some(&token), "slow-1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["on_hand"], 2);
    let (status, body) = send(p, &route, Some(&token), "slow-1").await;
    assert_eq!(
        (status, body["on_hand"].clone()),
        (StatusCode::OK, json!(2))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_states_each_routes_scope_and_edge_answers() {
    let s = secured(|_| {}).await;
    let doc: Value = reqwest::get(s.platform.url("/openapi.json"))
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let routes = routes(&s.platform).await;
    for route in &routes {
        let template = route.template.as_str();
        assert_eq!(
            Some(route.scope),
            stockflow::http::guard::required_scope(&route.method, template),
            "{} {template}: the document states the scope the guard checks",
            route.method
        );
        let op = &doc["paths"][template][route.method.as_str().to_lowercase()];
        assert_eq!(
            op["security"][0]["bearer"],
            json!([route.scope.as_str()]),
            "{} {template}",
            route.method
        );
        for status in ["401", "403", "429", "431", "503", "504"] {
            assert_eq!(
                op["responses"][status]["content"]["application/problem+json"]["schema"]["$ref"],
                "#/components/schemas/Problem",
                "{status} of {} {template}",
                route.method
            );
        }
    }
    assert!(doc["paths"]["/healthz"]["get"]["security"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_url_in_clear_text_is_refused() {
    let mut config = AppConfig::new(std::path::PathBuf::new());
    config.security.auth = Some(AuthSettings::new(
        KeySource::Url("http://127.0.0.1:9/jwks.json".into()),
        TEST_ISSUER,
        TEST_AUDIENCE,
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    config.data_dir = dir.path().to_path_buf();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let error = stockflow::app::start(config, listener)
        .await
        .err()
        .expect("refused");
    assert!(error.to_string().contains("not https"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_missing_at_start_is_retried_and_the_platform_is_not_ready_meanwhile() {
    let keys = tempfile::tempdir().expect("tempdir");
    let jwks = keys.path().join("jwks.json");
    let mut config = AppConfig::new(std::path::PathBuf::new());
    config.security.auth = Some(AuthSettings::new(
        KeySource::File(jwks.clone()),
        TEST_ISSUER,
        TEST_AUDIENCE,
    ));
    // The identity provider is down: the platform starts anyway, not ready.
    let p = Platform::start_config(config).await;
    let r = reqwest::get(p.url("/readyz")).await.expect("answer");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.expect("problem");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("authentication"),
        "{body}"
    );
    let key = key_with_jwks("k1", &jwks.with_extension("later"));
    let token = key.sign(&raw_claims(&[Scope::StockRead])).expect("token");
    let route = Route::new(Method::GET, "/v1/stock/SKU-1", None, Scope::StockRead);
    let (status, body) = send(&p, &route, Some(&token), "k").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "not_ready");
    // It comes back: the retry loads it, the platform turns ready and checks tokens.
    std::fs::rename(jwks.with_extension("later"), &jwks).expect("publish the JWKS");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = reqwest::get(p.url("/readyz")).await.expect("answer");
        if r.status() == StatusCode::OK {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still not ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body) = send(&p, &route, Some(&token), "k").await;
    assert!(
        status == StatusCode::OK || status == StatusCode::NOT_FOUND,
        "{status} {body}"
    );
}

/// An import runs its rows as its uploader: a store's token without `catalog:write` gets
/// its own location's rows applied and every other row refused, one by one, with the code
/// the same call would get; nobody else sees the job, and its export holds its own rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_runs_with_exactly_its_uploaders_rights() {
    let s = secured(|_| {}).await;
    let p = &s.platform;
    p.location("s1", "north").await;
    p.location("s2", "north").await;
    p.stock("SKU-1", "s2", 6).await;
    let mut c = raw_claims(&[Scope::StockAdjust, Scope::StockRead]);
    c["locations"] = json!(["s1"]);
    let store = s.key.sign(&c).expect("token");
    let file = [
        json!({"type": "count", "sku": "SKU-1", "location": "s1", "on_hand": 4}),
        json!({"type": "count", "sku": "SKU-1", "location": "s2", "on_hand": 99}),
        json!({"type": "sku", "sku": "SKU-1", "name": "Renamed by a store"}),
        json!({"type": "location", "location": "s9", "region": "north", "kind": "store", "name": "S9"}),
    ]
    .iter()
    .map(|row| format!("{row}\n"))
    .collect::<String>();
    let client = reqwest::Client::new();
    let r = client
        .post(p.url("/v1/imports"))
        .header("authorization", format!("Bearer {store}"))
        .header("idempotency-key", "store-load-1")
        .header("content-type", "application/x-ndjson")
        .body(file)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let job: Value = r.json().await.expect("json");
    let id = job["id"].as_str().expect("id").to_string();
    let get = |path: String, token: String| {
        let client = client.clone();
        async move {
            client
                .get(p.url(&path))
                .header("authorization", format!("Bearer {token}"))
                .send()
                .await
                .expect("request")
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let done = loop {
        let j: Value = get(format!("/v1/imports/{id}"), store.clone())
            .await
            .json()
            .await
            .expect("json");
        if j["status"] == "done" {
            break j;
        }
        assert!(std::time::Instant::now() < deadline, "{j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (done["applied"].as_u64(), done["failed"].as_u64()),
        (Some(1), Some(3)),
        "{done}"
    );
    let errors = get(format!("/v1/imports/{id}/errors"), store.clone())
        .await
        .text()
        .await
        .expect("text");
    let codes: Vec<(u64, String)> = errors
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json"))
        .map(|v| {
            (
                v["row"].as_u64().expect("row"),
                v["code"].as_str().expect("code").to_string(),
            )
        })
        .collect();
    assert_eq!(
        codes,
        [
            (2, "location_forbidden".to_string()),
            (3, "insufficient_scope".to_string()),
            (4, "insufficient_scope".to_string())
        ]
    );
    // Nothing outside its rights changed.
    let levels = p
        .running
        .backend
        .write
        .all_stock_levels()
        .await
        .expect("levels");
    let at = |l: &str| {
        levels
            .iter()
            .find(|k| k.location.as_str() == l)
            .map(|k| k.on_hand)
    };
    assert_eq!((at("s1"), at("s2")), (Some(4), Some(6)));
    // Another caller, even with every scope, is told there is no such job.
    let mut other = raw_claims(&Scope::ALL);
    other["sub"] = json!("erp");
    let other = s.key.sign(&other).expect("token");
    let r = get(format!("/v1/imports/{id}"), other).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // The store's export holds only its own location.
    p.eventually_stock("SKU-1", "s1", |v| v["on_hand"] == 4)
        .await;
    let export = get("/v1/exports/stock".into(), store.clone())
        .await
        .text()
        .await
        .expect("text");
    let locations: Vec<String> = export
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json"))
        .map(|v| v["location"].as_str().expect("location").to_string())
        .collect();
    assert_eq!(locations, ["s1"]);
}
