//! The command API through real HTTP: oversell, idempotency, optimistic concurrency,
//! all-or-nothing reservations, expiry, and the refusal of bad input.

mod common;

use std::time::{Duration, Instant};

use common::{Platform, problem};
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use stockflow_domain::{CallerTag, IdempotencyKey, ScopedKey};
use stockflow_storage::ports::IdempotencyToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_reservations_never_oversell() {
    let p = Platform::start().await;
    p.location("s1", "north").await;
    p.stock("HOT", "s1", 100).await;
    let requests = (0..500).map(|i| {
        p.post(
            "/v1/reservations",
            format!("oversell-{i}"),
            json!({"lines": [{"sku": "HOT", "location": "s1", "qty": 1}], "ttl_seconds": 900}),
        )
    });
    let responses = join_all(requests).await;
    let mut created = 0;
    let mut refused = 0;
    for r in responses {
        match r.status() {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => {
                let (_, body) = problem(r).await;
                assert_eq!(body["code"], "insufficient_stock");
                refused += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((created, refused), (100, 400));
    let level = p
        .running
        .backend
        .write
        .stock_level(&stockflow_domain::StockKey::new(
            stockflow_domain::Sku::parse("HOT").unwrap(),
            stockflow_domain::LocationId::parse("s1").unwrap(),
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (level.on_hand, level.reserved, level.version),
        (100, 100, 101)
    );
    let row = p
        .eventually_stock("HOT", "s1", |v| v["version"] == 101)
        .await;
    assert_eq!(
        (row["reserved"].as_i64(), row["available"].as_i64()),
        (Some(100), Some(0))
    );
    let availability: Value = p.get("/v1/availability/HOT").await.json().await.unwrap();
    assert_eq!(availability["regions"][0]["reserved"], 100);
    assert_eq!(availability["total_available"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_posts_apply_once_and_key_misuse_is_refused() {
    let p = Platform::start().await;
    p.location("s1", "north").await;
    let body = json!({"sku": "A", "location": "s1", "delta": 5, "reason": "receipt"});
    let first = p.post("/v1/adjustments", "k1", body.clone()).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    // Same key, same body (different key order and spacing): the stored answer, nothing applied.
    for _ in 0..3 {
        let again = p
            .http
            .post(p.url("/v1/adjustments"))
            .header("idempotency-key", "k1")
            .header("content-type", "application/json")
            .body(r#"{ "reason":"receipt", "delta":5, "location":"s1", "sku":"A" }"#)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::OK);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(again.json::<Value>().await.unwrap(), first);
    }
    let row = p.eventually_stock("A", "s1", |v| v["version"] == 1).await;
    assert_eq!(row["on_hand"], 5);

    // Same key, different body.
    let (status, body) = problem(
        p.post(
            "/v1/adjustments",
            "k1",
            json!({"sku": "A", "location": "s1", "delta": 6, "reason": "receipt"}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("idempotency_key_reused")
        )
    );

    // Same key on another endpoint is a different request too.
    let (status, _) = problem(
        p.post(
            "/v1/reservations",
            "k1",
            json!({"lines": [{"sku": "A", "location": "s1", "qty": 1}], "ttl_seconds": 60}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // Same key while the first request still runs (the harness's caller's key space).
    let tag = stockflow::auth::actor_tag(common::TEST_ISSUER, "harness");
    let token = IdempotencyToken {
        key: ScopedKey::new(
            Some(CallerTag::parse(tag).unwrap()),
            IdempotencyKey::parse("busy").unwrap(),
        ),
        fingerprint: String::new(),
    };
    let guard = p.running.in_flight.enter(&token).unwrap();
    let (status, body) = problem(
        p.post(
            "/v1/adjustments",
            "busy",
            json!({"sku": "A", "location": "s1", "delta": 1, "reason": "receipt"}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("request_in_progress"))
    );
    drop(guard);
    let r = p
        .post(
            "/v1/adjustments",
            "busy",
            json!({"sku": "A", "location": "s1", "delta": 1, "reason": "receipt"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    // Missing key.
    let r = p
        .http
        .post(p.url("/v1/adjustments"))
        .json(&json!({"sku": "A", "location": "s1", "delta": 1, "reason": "receipt"}))
        .send()
        .await
        .unwrap();
    let (status, body) = problem(r).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("idempotency_key_missing"))
    );

    // Concurrent retries of one key: applied exactly once, the rest replay or wait their turn.
    let reqs = (0..20).map(|_| {
        p.post(
            "/v1/adjustments",
            "storm",
            json!({"sku": "A", "location": "s1", "delta": 10, "reason": "receipt"}),
        )
    });
    let statuses: Vec<StatusCode> = join_all(reqs).await.iter().map(|r| r.status()).collect();
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::CONFLICT),
        "{statuses:?}"
    );
    let row = p.eventually_stock("A", "s1", |v| v["version"] == 3).await;
    assert_eq!(row["on_hand"], 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_adjustments_with_the_same_expected_version_have_one_winner() {
    let p = Platform::start().await;
    p.location("s1", "north").await;
    let level = p.stock("V", "s1", 10).await;
    let version = level["version"].as_u64().unwrap();
    let reqs = (0..30).map(|i| {
        p.post(
            "/v1/adjustments",
            format!("cas-{i}"),
            json!({"sku": "V", "location": "s1", "delta": -1, "reason": "damage", "expected_version": version}),
        )
    });
    let mut winners = 0;
    for r in join_all(reqs).await {
        if r.status() == StatusCode::OK {
            winners += 1;
        } else {
            let (status, body) = problem(r).await;
            assert_eq!(status, StatusCode::CONFLICT);
            assert_eq!(body["code"], "version_conflict");
            assert_eq!(body["current_version"], version + 1);
        }
    }
    assert_eq!(winners, 1);
    let row = p
        .eventually_stock("V", "s1", |v| v["version"] == version + 1)
        .await;
    assert_eq!(row["on_hand"], 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adjustments_refuse_negative_stock_and_unknown_locations() {
    let p = Platform::start().await;
    p.location("s1", "north").await;
    p.stock("N", "s1", 3).await;
    let r = p
        .post(
            "/v1/reservations",
            "n-r",
            json!({"lines": [{"sku": "N", "location": "s1", "qty": 2}], "ttl_seconds": 60}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let (status, body) = problem(
        p.post(
            "/v1/adjustments",
            "n1",
            json!({"sku": "N", "location": "s1", "delta": -2, "reason": "damage"}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("insufficient_stock"))
    );
    let (status, body) = problem(
        p.post(
            "/v1/adjustments",
            "n2",
            json!({"sku": "N", "location": "s1", "set_on_hand": 1, "reason": "cycle_count"}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("insufficient_stock"))
    );
    let (status, body) = problem(
        p.post(
            "/v1/adjustments",
            "n3",
            json!({"sku": "N", "location": "nowhere", "delta": 2, "reason": "receipt"}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("location_not_found"))
    );
}

/// Moves between quantity states and counts guarded by the on-hand they started from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_change_states_and_a_stale_count_names_the_current_on_hand() {
    let p = Platform::start().await;
    p.location("s1", "north").await;
    p.stock("M", "s1", 10).await;
    let r = p
        .post(
            "/v1/moves",
            "m1",
            json!({"sku": "M", "location": "s1", "from": "available", "to": "damaged", "qty": 4, "reason": "damage"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(
        (&body["on_hand"], &body["damaged"], &body["available"]),
        (&json!(10), &json!(4), &json!(6)),
        "{body}"
    );
    let (status, body) = problem(
        p.post(
            "/v1/moves",
            "m2",
            json!({"sku": "M", "location": "s1", "from": "quality_hold", "to": "available", "qty": 1, "reason": "correction"}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str(), &body["held"]),
        (
            StatusCode::CONFLICT,
            Some("insufficient_quantity"),
            &json!(0)
        ),
        "{body}"
    );
    let (status, body) = problem(
        p.post(
            "/v1/adjustments",
            "c1",
            json!({"sku": "M", "location": "s1", "set_on_hand": 12, "expected_on_hand": 7, "reason": "cycle_count"}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str(), &body["current_on_hand"]),
        (StatusCode::CONFLICT, Some("on_hand_conflict"), &json!(10)),
        "{body}"
    );
    let r = p
        .post(
            "/v1/adjustments",
            "c2",
            json!({"sku": "M", "location": "s1", "set_on_hand": 12, "expected_on_hand": 10, "reason": "cycle_count"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_line_reservations_are_all_or_nothing() {
    let p = Platform::start().await;
    p.location("s1", "north").await;
    p.location("s2", "south").await;
    p.stock("M", "s1", 5).await;
    p.stock("M", "s2", 1).await;
    p.stock("K", "s1", 4).await;
    let lines = json!([
        {"sku": "M", "location": "s1", "qty": 2},
        {"sku": "M", "location": "s2", "qty": 2},
        {"sku": "K", "location": "s1", "qty": 9}
    ]);
    let (status, body) = problem(
        p.post(
            "/v1/reservations",
            "multi-1",
            json!({"lines": lines, "ttl_seconds": 60}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("insufficient_stock"))
    );
    let short: Vec<&str> = body["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["sku"].as_str().unwrap())
        .collect();
    assert_eq!(short, vec!["M", "K"], "every short line is named: {body}");
    for (sku, loc) in [("M", "s1"), ("M", "s2"), ("K", "s1")] {
        let row = p.eventually_stock(sku, loc, |v| v["version"] == 1).await;
        assert_eq!(row["reserved"], 0, "nothing stays reserved at {sku}@{loc}");
    }
    let r = p
        .post("/v1/reservations", "multi-2", json!({"reservation_id": "order-9", "reference": "order-9",
            "lines": [{"sku": "M", "location": "s1", "qty": 2}, {"sku": "M", "location": "s2", "qty": 1}], "ttl_seconds": 60}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["reservation_id"].as_str(), body["status"].as_str()),
        (Some("order-9"), Some("active"))
    );
    let confirmed: Value = p
        .post("/v1/reservations/order-9/confirm", "multi-3", json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(confirmed["status"], "confirmed");
    let (status, body) = problem(
        p.post("/v1/reservations/order-9/release", "multi-4", json!({}))
            .await,
    )
    .await;
    assert_eq!(
        (
            status,
            body["code"].as_str(),
            body["reservation_status"].as_str()
        ),
        (
            StatusCode::CONFLICT,
            Some("reservation_not_active"),
            Some("confirmed")
        )
    );
    let row = p.eventually_stock("M", "s2", |v| v["version"] == 3).await;
    assert_eq!(
        (row["on_hand"].as_i64(), row["reserved"].as_i64()),
        (Some(0), Some(0))
    );
    let got: Value = p
        .get("/v1/reservations/order-9")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["status"], "confirmed");
    let (status, _) = problem(p.get("/v1/reservations/nope").await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_expire_promptly_with_an_event() {
    let p = Platform::start().await;
    p.location("s1", "north").await;
    p.stock("E", "s1", 10).await;
    let r: Value = p
        .post(
            "/v1/reservations",
            "exp-1",
            json!({"lines": [{"sku": "E", "location": "s1", "qty": 4}], "ttl_seconds": 1}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = r["reservation_id"].as_str().unwrap().to_string();
    let started = Instant::now();
    loop {
        let got: Value = p
            .get(&format!("/v1/reservations/{id}"))
            .await
            .json()
            .await
            .unwrap();
        if got["status"] == "expired" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "not expired in time: {got}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Promptly: within a fraction of a second of the one-second TTL.
    assert!(
        started.elapsed() < Duration::from_millis(1600),
        "took {:?}",
        started.elapsed()
    );
    let row = p.eventually_stock("E", "s1", |v| v["version"] == 3).await;
    assert_eq!(row["reserved"], 0);
    let (status, body) = problem(
        p.post(
            &format!("/v1/reservations/{id}/confirm"),
            "exp-2",
            json!({}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["reservation_status"].as_str()),
        (StatusCode::CONFLICT, Some("expired"))
    );
    // The expiry is an event in the log.
    let log = p.running.backend.log.as_ref().expect("dev runs a log");
    let mut kinds = Vec::new();
    for part in 0..log.partitions() {
        for rec in log
            .fetch(part, 0, usize::MAX, std::time::Duration::ZERO)
            .await
            .unwrap()
        {
            let v: Value = serde_json::from_slice(&rec.value).unwrap();
            if v["sku"] == "E" && v["stream"] == "stock" {
                kinds.push(v["type"].as_str().unwrap().to_string());
            }
        }
    }
    assert_eq!(
        kinds,
        vec!["stock_adjusted", "stock_reserved", "reservation_expired"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_400_and_changes_nothing() {
    let p = Platform::start().await;
    p.location("s1", "north").await;
    p.stock("B", "s1", 10).await;
    let line = |qty: i64| json!({"sku": "B", "location": "s1", "qty": qty});
    let too_many: Vec<Value> = (0..101)
        .map(|i| json!({"sku": format!("B{i}"), "location": "s1", "qty": 1}))
        .collect();
    let cases = vec![
        (
            "/v1/reservations",
            json!({"lines": [line(0)], "ttl_seconds": 60}),
            "qty",
        ),
        (
            "/v1/reservations",
            json!({"lines": [line(1_000_001)], "ttl_seconds": 60}),
            "qty",
        ),
        (
            "/v1/reservations",
            json!({"lines": [], "ttl_seconds": 60}),
            "lines",
        ),
        (
            "/v1/reservations",
            json!({"lines": too_many, "ttl_seconds": 60}),
            "lines",
        ),
        (
            "/v1/reservations",
            json!({"lines": [line(1)], "ttl_seconds": 0}),
            "ttl_seconds",
        ),
        (
            "/v1/reservations",
            json!({"lines": [line(1)], "ttl_seconds": 86_401}),
            "ttl_seconds",
        ),
        (
            "/v1/reservations",
            json!({"lines": [line(1), line(2)], "ttl_seconds": 60}),
            "duplicate",
        ),
        (
            "/v1/reservations",
            json!({"lines": [{"sku": "bad sku", "location": "s1", "qty": 1}], "ttl_seconds": 60}),
            "sku",
        ),
        (
            "/v1/reservations",
            json!({"reservation_id": "x".repeat(65), "lines": [line(1)], "ttl_seconds": 60}),
            "reservation_id",
        ),
        (
            "/v1/reservations",
            json!({"lines": [line(1)], "ttl_seconds": 60, "extra": true}),
            "unknown field",
        ),
        (
            "/v1/adjustments",
            json!({"sku": "B", "location": "s1", "reason": "receipt"}),
            "exactly one",
        ),
        (
            "/v1/adjustments",
            json!({"sku": "B", "location": "s1", "delta": 1, "set_on_hand": 1, "reason": "receipt"}),
            "exactly one",
        ),
        (
            "/v1/adjustments",
            json!({"sku": "B", "location": "s1", "delta": 0, "reason": "receipt"}),
            "delta",
        ),
        (
            "/v1/adjustments",
            json!({"sku": "B", "location": "s1", "delta": 1, "reason": "theft"}),
            "reason",
        ),
        (
            "/v1/adjustments",
            json!({"sku": "B", "location": "s1", "delta": "1", "reason": "receipt"}),
            "invalid type",
        ),
    ];
    for (i, (path, body, needle)) in cases.into_iter().enumerate() {
        let (status, problem) = problem(p.post(path, format!("bad-{i}"), body.clone()).await).await;
        // A repeated line is valid field by field: 422, the rest 400.
        let expected = if needle == "duplicate" {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        assert_eq!(status, expected, "{body} → {problem}");
        let text = problem.to_string();
        assert!(
            text.contains(needle),
            "case {i}: expected {needle:?} in {text}"
        );
    }
    // Malformed JSON, wrong media type, oversized body.
    let r = p
        .http
        .post(p.url("/v1/reservations"))
        .header("idempotency-key", "m1")
        .header("content-type", "application/json")
        .body("{\"lines\": [")
        .send()
        .await
        .unwrap();
    let (status, body) = problem(r).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("malformed_body"))
    );
    let r = p
        .http
        .post(p.url("/v1/reservations"))
        .header("idempotency-key", "m2")
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(problem(r).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let big = format!("{{\"reference\": \"{}\"}}", "x".repeat(70 * 1024));
    let r = p
        .http
        .post(p.url("/v1/reservations"))
        .header("idempotency-key", "m3")
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    let (status, body) = problem(r).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
    let (status, _) = problem(p.get("/v1/stock/bad%20sku").await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = problem(p.get("/v1/search?q=x&limit=0").await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = problem(p.get("/v1/search").await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = problem(
        p.http
            .delete(p.url("/v1/adjustments"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    // Nothing changed.
    let row = p.eventually_stock("B", "s1", |v| v["version"] == 1).await;
    assert_eq!(
        (row["on_hand"].as_i64(), row["reserved"].as_i64()),
        (Some(10), Some(0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drains_the_outbox() {
    let p = Platform::start().await;
    p.location("s1", "north").await;
    for i in 0..50 {
        p.stock(&format!("G{i}"), "s1", 5).await;
    }
    let backend = p.running.backend.clone();
    p.running.stop().await.unwrap();
    assert_eq!(backend.outbox.backlog().await.unwrap(), 0);
    assert_eq!(backend.read.all_inventory().await.unwrap().len(), 50);
}

/// Fail-stop on a failed fsync: the command it covered answers 503 (retryable: its outcome
/// is unknown), so does every later one, `/healthz` turns red, and the platform stops by
/// itself with the storage fault as its error, so the supervisor restarts it from disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_answers_503_turns_healthz_red_and_stops_the_process() {
    let config = stockflow::app::AppConfig::new(std::path::PathBuf::new());
    let faults = config.faults.clone();
    let p = Platform::start_config(config).await;
    p.location("s1", "north").await;
    p.stock("F1", "s1", 5).await;
    assert_eq!(p.get("/healthz").await.status(), StatusCode::OK);

    faults
        .fail_next_fsync
        .store(true, std::sync::atomic::Ordering::Release);
    let body = json!({"sku": "F1", "location": "s1", "delta": 1, "reason": "receipt"});
    let (status, problem_body) = problem(p.post("/v1/adjustments", "during", body).await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem_body}");
    assert_eq!(problem_body["code"], "unavailable");
    // Never healthy again: red while it drains, then gone.
    if let Ok(r) = p.http.get(p.url("/healthz")).send().await {
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    // The process shuts itself down: wait() ends with the fault, within a few seconds.
    let stopped = tokio::time::timeout(Duration::from_secs(15), p.running.wait())
        .await
        .expect("the platform stops by itself after a failed fsync");
    match stopped {
        Err(stockflow::app::AppError::Fatal(why)) => assert!(why.contains("fsync"), "{why}"),
        other => panic!("expected a storage fault, got {other:?}"),
    }
}

/// Shutdown keeps to its budget (the pod's grace period): a projection stuck on its store
/// does not hold the process past it; what it left is redone from the stored offsets by
/// the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_keeps_to_its_deadline_when_a_worker_is_stuck() {
    let mut config = stockflow::app::AppConfig::new(std::path::PathBuf::new());
    config.shutdown_timeout = Duration::from_secs(2);
    let faults = config.faults.clone();
    let p = Platform::start_config(config).await;
    p.location("s1", "north").await;
    faults
        .stall_projections
        .store(true, std::sync::atomic::Ordering::Release);
    p.stock("D1", "s1", 5).await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), p.running.stop())
        .await
        .expect("shutdown returned")
        .expect("a clean shutdown");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "shutdown took {took:?}");
    faults
        .stall_projections
        .store(false, std::sync::atomic::Ordering::Release);
}
