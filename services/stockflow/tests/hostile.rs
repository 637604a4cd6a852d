//! Hostile input against a real platform: requests a fuzzing campaign found getting
//! through, each answered with its documented refusal and changing nothing. Raw TCP where
//! an HTTP client would not send what an attacker sends. Add every new finding here.

mod common;

use std::time::{Duration, Instant};

use common::Platform;
use reqwest::StatusCode;
use serde_json::{Value, json};
use stockflow::app::AppConfig;
use stockflow::auth::Scope;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A platform with short connection deadlines, so the slow-client cases run in seconds.
async fn platform() -> Platform {
    let mut config = AppConfig::new(std::path::PathBuf::new());
    config.security.connections.header_read_timeout = Duration::from_secs(2);
    config.security.connections.idle_timeout = Duration::from_secs(3);
    config.security.connections.max_connections = 300;
    let p = Platform::start_config(config).await;
    p.location("s1", "north").await;
    p.stock("SKU-1", "s1", 10).await;
    p
}

fn token(p: &Platform) -> String {
    p.signer
        .as_ref()
        .expect("the harness signs tokens")
        .mint(&common::claims("fuzzer", &Scope::ALL))
        .expect("token")
}

/// The write side's level of SKU-1 at s1: `(on_hand, reserved, version)`.
async fn level(p: &Platform) -> (i64, i64, u64) {
    let key = stockflow_domain::StockKey::new(
        stockflow_domain::Sku::parse("SKU-1").expect("sku"),
        stockflow_domain::LocationId::parse("s1").expect("location"),
    );
    let l = p
        .running
        .backend
        .write
        .stock_level(&key)
        .await
        .expect("level")
        .expect("exists");
    (l.on_hand, l.reserved, l.version)
}

/// Sends `raw` bytes and reads the answer until the server closes or `wait` passes;
/// returns the status code (0 when nothing came back) and the body.
async fn raw(p: &Platform, raw: &[u8], wait: Duration) -> (u16, String) {
    let mut tcp = TcpStream::connect(p.running.addr).await.expect("connect");
    tcp.write_all(raw).await.expect("write");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buf[..n]);
                // One response is enough: stop once its body is complete.
                if let Some(end) = find(&answer, b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&answer[..end]).to_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if answer.len() >= end + 4 + length {
                        break;
                    }
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn request(token: &str, method: &str, path: &str, headers: &[&str], body: &str) -> Vec<u8> {
    let mut text = format!(
        "{method} {path} HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\nconnection: close\r\n"
    );
    for h in headers {
        text.push_str(h);
        text.push_str("\r\n");
    }
    if !headers.iter().any(|h| {
        h.to_lowercase().starts_with("content-length")
            || h.to_lowercase().starts_with("transfer-encoding")
    }) {
        text.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    text.push_str(body);
    text.into_bytes()
}

fn code(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_string))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_change_nothing() {
    let p = platform().await;
    let token = token(&p);
    let before = level(&p).await;
    let adjust = r#"{"sku": "SKU-1", "location": "s1", "delta": 1, "reason": "receipt"}"#;
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "two Idempotency-Key headers",
            request(
                &token,
                "POST",
                "/v1/adjustments",
                &["idempotency-key: a", "idempotency-key: b"],
                adjust,
            ),
            400,
            "invalid_request",
        ),
        (
            "the most negative delta",
            request(
                &token,
                "POST",
                "/v1/adjustments",
                &["idempotency-key: min"],
                r#"{"sku": "SKU-1", "location": "s1", "delta": -9223372036854775808, "reason": "receipt"}"#,
            ),
            400,
            "invalid_request",
        ),
        (
            "a repeated delta",
            request(
                &token,
                "POST",
                "/v1/adjustments",
                &["idempotency-key: dup-1"],
                r#"{"sku": "SKU-1", "location": "s1", "delta": 1, "delta": 1000000, "reason": "receipt"}"#,
            ),
            400,
            "malformed_body",
        ),
        (
            "a repeated location",
            request(
                &token,
                "POST",
                "/v1/adjustments",
                &["idempotency-key: dup-2"],
                r#"{"sku": "SKU-1", "location": "s1", "location": "s2", "delta": 1, "reason": "receipt"}"#,
            ),
            400,
            "malformed_body",
        ),
        (
            "a repeated qty in a line",
            request(
                &token,
                "POST",
                "/v1/reservations",
                &["idempotency-key: dup-3"],
                r#"{"lines": [{"sku": "SKU-1", "location": "s1", "qty": 1, "qty": 999999}]}"#,
            ),
            400,
            "malformed_body",
        ),
        (
            "a gzip body",
            request(
                &token,
                "POST",
                "/v1/adjustments",
                &["idempotency-key: gz-1", "content-encoding: gzip"],
                adjust,
            ),
            415,
            "unsupported_encoding",
        ),
        (
            "a gzip transfer coding",
            {
                let chunked = format!("{:x}\r\n{adjust}\r\n0\r\n\r\n", adjust.len());
                request(
                    &token,
                    "POST",
                    "/v1/adjustments",
                    &["idempotency-key: gz-2", "transfer-encoding: gzip, chunked"],
                    &chunked,
                )
            },
            501,
            "unsupported_transfer_coding",
        ),
        (
            "150 header fields",
            {
                let many: Vec<String> = (0..150).map(|i| format!("x-h{i}: v")).collect();
                let many: Vec<&str> = many.iter().map(String::as_str).collect();
                let mut headers = vec!["idempotency-key: hdr"];
                headers.extend(many);
                request(&token, "POST", "/v1/adjustments", &headers, adjust)
            },
            431,
            "headers_too_large",
        ),
    ];
    for (case, bytes, status, expected) in &cases {
        let (got, body) = raw(&p, bytes, Duration::from_secs(5)).await;
        assert_eq!(got, *status, "{case}: {body}");
        assert_eq!(code(&body), *expected, "{case}: {body}");
    }
    assert_eq!(level(&p).await, before, "a refused request changed stock");
    // The refused keys recorded nothing: each applies once when sent right.
    for key in ["a", "min", "dup-1", "gz-1"] {
        let r = p
            .post(
                "/v1/adjustments",
                key,
                json!({"sku": "SKU-1", "location": "s1", "delta": 1, "reason": "receipt"}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK, "{key}");
    }
    assert_eq!(level(&p).await.0, before.0 + 4);
    eprintln!(
        "hostile input: {} refused cases, nothing applied",
        cases.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_body_over_the_limit_is_refused_at_once() {
    let p = platform().await;
    let token = token(&p);
    let before = level(&p).await;
    let started = Instant::now();
    let bytes = request(
        &token,
        "POST",
        "/v1/adjustments",
        &["idempotency-key: big", "content-length: 70000"],
        r#"{"sku": "SKU-1"#,
    );
    let (status, body) = raw(&p, &bytes, Duration::from_secs(10)).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(code(&body), "payload_too_large");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "waited {:?} for a body that never came",
        started.elapsed()
    );
    assert_eq!(level(&p).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_connections_are_closed_while_others_are_served() {
    let p = platform().await;
    // 200 connections that send nothing, and 50 that send a header byte a second.
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(TcpStream::connect(p.running.addr).await.expect("connect"));
    }
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut tcp = TcpStream::connect(p.running.addr).await.expect("connect");
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nx-slow: ")
            .await
            .expect("write");
        slow.push(tcp);
    }
    let drip = tokio::spawn(async move {
        let started = Instant::now();
        let mut open = slow.len();
        while open > 0 && started.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            open = 0;
            for tcp in &mut slow {
                if tcp.write_all(b"a").await.is_ok() {
                    open += 1;
                }
            }
        }
        (open, started.elapsed())
    });
    // Meanwhile the platform serves everyone else.
    for _ in 0..20 {
        let started = Instant::now();
        let r = p.get("/v1/stock/SKU-1/s1").await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every silent connection is closed by the server within its deadline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    for mut tcp in silent {
        let mut buf = [0u8; 16];
        let closed = tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "a silent connection is still open: {closed:?}"
        );
    }
    let (open, after) = drip.await.expect("drip");
    assert_eq!(open, 0, "slow connections still open after {after:?}");
    assert!(
        after < Duration::from_secs(8),
        "slow connections lasted {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_holds_and_frees() {
    let mut config = AppConfig::new(std::path::PathBuf::new());
    config.security.connections.header_read_timeout = Duration::from_secs(2);
    config.security.connections.max_connections = 20;
    let p = Platform::start_config(config).await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(p.running.addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Past the cap a new client waits in the accept queue; once the silent ones are
    // closed at their deadline, it is served.
    let started = Instant::now();
    let r = reqwest::get(p.url("/healthz")).await.expect("served");
    assert_eq!(r.status(), StatusCode::OK);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1000) && waited < Duration::from_secs(6),
        "waited {waited:?}"
    );
    drop(held);
}
