//! The query API: read models, caching headers, search, the DLQ admin endpoints, OpenAPI.

mod common;

use common::{Platform, problem};
use reqwest::StatusCode;
use serde_json::{Value, json};
use stockflow::app::AppConfig;
use stockflow_bus::NewRecord;
use stockflow_storage::ports::DeadLetter;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_carry_etags_and_answer_conditional_gets() {
    let p = Platform::start().await;
    p.location("s1", "north").await;
    p.location("s2", "north").await;
    p.location("w1", "south").await;
    p.stock("Q", "s1", 5).await;
    p.stock("Q", "s2", 6).await;
    p.stock("Q", "w1", 7).await;
    p.eventually_stock("Q", "w1", |v| v["version"] == 1).await;
    p.eventually_stock("Q", "s2", |v| v["version"] == 1).await;
    let r = p.get("/v1/stock/Q").await;
    assert_eq!(r.status(), StatusCode::OK);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    // Tagged for an edge cache with the SKU and every location it shows.
    assert_eq!(
        r.headers()["surrogate-key"],
        "stockflow sku:Q loc:s1 loc:s2 loc:w1"
    );
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("stale-if-error=")
    );
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age")
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["locations"].as_array().unwrap().len(), 3);
    assert_eq!(body["total_available"], 18);
    let r = p
        .http
        .get(p.url("/v1/stock/Q"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
    // A cache that revalidates keeps the tags.
    assert!(r.headers().contains_key("surrogate-key"));
    // A change moves the ETag.
    p.stock("Q", "s1", 9).await;
    p.eventually_stock("Q", "s1", |v| v["version"] == 2).await;
    let r = p
        .http
        .get(p.url("/v1/stock/Q"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let a: Value = p.get("/v1/availability/Q").await.json().await.unwrap();
    let regions: Vec<(&str, i64)> = a["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["region"].as_str().unwrap(),
                r["available"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(regions, vec![("north", 15), ("south", 7)]);
    let a: Value = p
        .get("/v1/availability/Q?region=south")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(a["total_available"], 7);
    let (status, _) = problem(p.get("/v1/stock/Q/nowhere").await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_filters_by_stock_and_region() {
    let p = Platform::start().await;
    p.location("s1", "north").await;
    p.location("w1", "south").await;
    for (sku, name, brand) in [
        ("SH-1", "Trail running shoe", "Acme"),
        ("SH-2", "Road running shoe", "Zed"),
        ("CT-1", "Rain coat", "Acme"),
    ] {
        let r = p
            .http
            .put(p.url(&format!("/v1/skus/{sku}")))
            .json(&json!({"name": name, "attributes": {"brand": brand}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    p.stock("SH-1", "s1", 3).await;
    p.stock("SH-2", "w1", 2).await;
    p.eventually_stock("SH-2", "w1", |v| v["version"] == 1)
        .await;
    p.eventually_stock("SH-1", "s1", |v| v["version"] == 1)
        .await;
    let skus = |v: Value| -> Vec<String> {
        let mut s: Vec<String> = v["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["sku"].as_str().unwrap().to_string())
            .collect();
        s.sort();
        s
    };
    let mut all = Vec::new();
    for _ in 0..200 {
        all = skus(p.get("/v1/search?q=running").await.json().await.unwrap());
        if all.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(all, vec!["SH-1", "SH-2"]);
    assert_eq!(
        skus(p.get("/v1/search?q=acme").await.json().await.unwrap()),
        vec!["CT-1", "SH-1"]
    );
    assert_eq!(
        skus(
            p.get("/v1/search?q=acme&in_stock=true")
                .await
                .json()
                .await
                .unwrap()
        ),
        vec!["SH-1"]
    );
    assert_eq!(
        skus(
            p.get("/v1/search?q=shoe&in_stock=true&region=south")
                .await
                .json()
                .await
                .unwrap()
        ),
        vec!["SH-2"]
    );
    assert_eq!(
        skus(p.get("/v1/search?q=run%20tra").await.json().await.unwrap()),
        vec!["SH-1"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_projector_cannot_apply_lands_in_the_dlq() {
    let p = Platform::start().await;
    p.location("s1", "north").await;
    p.stock("D", "s1", 4).await;
    p.running
        .backend
        .log
        .as_ref()
        .expect("dev runs a log")
        .append(vec![NewRecord::new(
            "D",
            b"{\"stream\":\"stock\",\"garbage\":1}".to_vec(),
        )])
        .await
        .unwrap();
    p.stock("D", "s1", 6).await;
    p.eventually_stock("D", "s1", |v| v["version"] == 2).await;
    let letter = the_one_dead_letter(&p).await;
    assert!(letter["error"].as_str().unwrap().contains("decode"));
    let (status, body) = problem(replay(&p, &letter).await).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("dead_letter_still_failing"))
    );
    let metrics = p.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("stockflow_dead_letters_total 1"),
        "{metrics}"
    );
}

/// A dead letter of a Fluvio topic written with structured CloudEvents holds the envelope;
/// its replay applies the event inside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_structured_cloudevent_dead_letter_replays() {
    let p = Platform::start().await;
    p.location("s1", "north").await;
    p.stock("E", "s1", 4).await;
    p.eventually_stock("E", "s1", |v| v["version"] == 1).await;
    let payload = serde_json::to_vec(&json!({
        "stream": "stock", "event_id": "E/s1/2", "type": "stock_adjusted", "region": "north",
        "sku": "E", "location": "s1", "version": 2, "on_hand": 9, "reserved": 0,
        "reservation_id": null, "reason": "receipt", "reference": null,
        "idempotency_key": null, "occurred_at_ms": 1, "trace_context": null
    }))
    .unwrap();
    let event = serde_json::from_slice(&payload).unwrap();
    let envelope = stockflow::events::structured::encode(&event, &payload).unwrap();
    let read = &p.running.backend.read;
    read.dead_letter(
        DeadLetter {
            id: 0,
            // A consumer of its own, so no projector's offset moves.
            consumer: "structured-test".into(),
            partition: 0,
            offset: 0,
            key: "E".into(),
            payload: String::from_utf8(envelope).unwrap(),
            error: "the read store was unavailable".into(),
            attempts: 3,
            failed_at_ms: 1,
        },
        1,
    )
    .await
    .unwrap();
    let r = replay(&p, &the_one_dead_letter(&p).await).await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    p.eventually_stock("E", "s1", |v| v["version"] == 2 && v["on_hand"] == 9)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projection_replay_through_the_api_changes_nothing() {
    let p = Platform::start().await;
    p.location("s1", "north").await;
    for i in 0..20 {
        p.stock(&format!("R{i}"), "s1", i + 1).await;
    }
    p.eventually_stock("R19", "s1", |v| v["version"] == 1).await;
    let read = &p.running.backend.read;
    let mut before = read.all_inventory().await.unwrap();
    while before.len() < 20 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        before = read.all_inventory().await.unwrap();
    }
    let r = p
        .http
        .post(p.url("/admin/projections/replay"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(read.all_inventory().await.unwrap(), before);
    let metrics = p.get("/metrics").await.text().await.unwrap();
    let projected: f64 = metrics
        .lines()
        .find(|l| l.starts_with("stockflow_events_projected_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(projected >= 40.0, "the log was applied twice: {projected}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_endpoints_answer() {
    let p = Platform::start().await;
    assert_eq!(p.get("/healthz").await.status(), StatusCode::OK);
    assert_eq!(p.get("/readyz").await.status(), StatusCode::OK);
    let doc: Value = p.get("/openapi.json").await.json().await.unwrap();
    for path in [
        "/v1/adjustments",
        "/v1/reservations",
        "/v1/stock/{sku}",
        "/v1/search",
        "/v1/availability/{sku}",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from OpenAPI"
        );
    }
    p.location("s1", "north").await;
    p.stock("O", "s1", 1).await;
    let metrics = p.get("/metrics").await.text().await.unwrap();
    for name in [
        "stockflow_commands_total",
        "stockflow_command_duration_seconds_bucket",
        "stockflow_outbox_backlog",
        "stockflow_http_requests_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_before_the_disk_is_full() {
    // No filesystem has this much room: the data directory is "short of space".
    let mut config = AppConfig::new(std::path::PathBuf::new());
    config.wal.min_free_disk_bytes = u64::MAX;
    let p = Platform::start_config(config).await;
    let ready = p.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.headers()["content-type"], "application/problem+json");
    let problem: Value = ready.json().await.unwrap();
    assert_eq!(problem["code"], "not_ready");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("MiB free"), "{detail}");
    // Readiness only steers traffic away: the process is alive and still serves commands.
    assert_eq!(p.get("/healthz").await.status(), StatusCode::OK);
    p.location("s1", "north").await;
    p.stock("O", "s1", 1).await;
    let metrics = p.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("stockflow_data_dir_free_bytes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn movements_say_who_changed_what_and_why_paged_by_version() {
    let p = Platform::start().await;
    p.location("s1", "north").await;
    let r = p
        .post(
            "/v1/adjustments",
            "asn-1",
            json!({"sku": "M", "location": "s1", "delta": 10, "reason": "receipt", "reference": "ASN-77"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = p
        .post(
            "/v1/reservations",
            "cart-1",
            json!({"reservation_id": "order-1", "lines": [{"sku": "M", "location": "s1", "qty": 3}]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = p
        .post("/v1/reservations/order-1/confirm", "pay-1", json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    p.eventually_stock("M", "s1", |v| v["version"] == 3).await;

    let page: Value = p
        .get("/v1/movements?sku=M&location=s1&limit=2")
        .await
        .json()
        .await
        .unwrap();
    let moves = page["movements"].as_array().unwrap();
    assert_eq!(moves.len(), 2, "{page}");
    assert_eq!(
        (
            &moves[0]["kind"],
            &moves[0]["reason"],
            &moves[0]["reference"],
            &moves[0]["on_hand"],
            &moves[0]["idempotency_key"],
            &moves[0]["actor"]["subject"],
        ),
        (
            &json!("stock_adjusted"),
            &json!("receipt"),
            &json!("ASN-77"),
            &json!(10),
            &json!("asn-1"),
            &json!("harness"),
        ),
        "{page}"
    );
    assert_eq!(
        (
            &moves[1]["kind"],
            &moves[1]["reserved"],
            &moves[1]["reservation_id"]
        ),
        (&json!("stock_reserved"), &json!(3), &json!("order-1"))
    );
    assert_eq!(page["next_after"], 2);
    let rest: Value = p
        .get("/v1/movements?sku=M&location=s1&after=2")
        .await
        .json()
        .await
        .unwrap();
    let moves = rest["movements"].as_array().unwrap();
    assert_eq!(moves.len(), 1, "{rest}");
    assert_eq!(
        (
            &moves[0]["kind"],
            &moves[0]["on_hand"],
            &moves[0]["idempotency_key"]
        ),
        (&json!("reservation_confirmed"), &json!(7), &json!("pay-1"))
    );
    assert!(rest["next_after"].is_null());
    let (status, body) = problem(p.get("/v1/movements?sku=M").await).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_query"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn movements_filtered_by_reservation_or_key_read_a_bounded_scan_per_page() {
    use futures::StreamExt;
    let p = Platform::start().await;
    p.location("s1", "north").await;
    let r = p
        .post(
            "/v1/adjustments",
            "stock-in",
            json!({"sku": "F", "location": "s1", "delta": 10, "reason": "receipt"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = p
        .post(
            "/v1/reservations",
            "cart-1",
            json!({"reservation_id": "order-1", "lines": [{"sku": "F", "location": "s1", "qty": 3}]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // More unrelated history than one filtered page reads (5,000 movements).
    let noise = 5_050;
    futures::stream::iter(0..noise)
        .map(|i| {
            p.post(
                "/v1/adjustments",
                format!("noise-{i}"),
                json!({"sku": "F", "location": "s1", "delta": 1, "reason": "receipt"}),
            )
        })
        .buffer_unordered(32)
        .for_each(|r| async move { assert_eq!(r.status(), StatusCode::OK) })
        .await;
    let r = p
        .post("/v1/reservations/order-1/confirm", "pay-1", json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let last = 3 + noise;
    p.eventually_stock("F", "s1", |v| v["version"] == last)
        .await;

    let page: Value = p
        .get("/v1/movements?sku=F&location=s1&reservation_id=order-1")
        .await
        .json()
        .await
        .unwrap();
    let kinds = |page: &Value| -> Vec<String> {
        page["movements"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["kind"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(kinds(&page), ["stock_reserved"], "{page}");
    let next = page["next_after"]
        .as_u64()
        .expect("the scan stopped at its budget");
    assert_eq!(next, 5_000, "one page reads 5,000 movements: {page}");
    let rest: Value = p
        .get(&format!(
            "/v1/movements?sku=F&location=s1&reservation_id=order-1&after={next}"
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(kinds(&rest), ["reservation_confirmed"], "{rest}");
    assert!(
        rest["next_after"].is_null(),
        "the end of the history: {rest}"
    );

    let by_key: Value = p
        .get("/v1/movements?sku=F&location=s1&idempotency_key=stock-in&limit=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(kinds(&by_key), ["stock_adjusted"], "{by_key}");
    assert_eq!(by_key["next_after"], 1, "the limit was reached: {by_key}");
    let (status, body) = problem(
        p.get("/v1/movements?sku=F&location=s1&reservation_id=no%20such")
            .await,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_feed_pages_long_polls_streams_and_refuses_what_is_not_a_cursor() {
    let p = Platform::start().await;
    p.location("s1", "north").await;
    p.location("s2", "north").await;
    p.stock("F", "s1", 5).await;
    p.stock("F", "s2", 6).await;
    p.eventually_stock("F", "s2", |v| v["version"] == 1).await;

    // From the start: both rows, then a cursor that has nothing after it.
    let page: Value = p
        .get("/v1/changes?locations=s1,s2")
        .await
        .json()
        .await
        .unwrap();
    let skus: Vec<(&str, i64)> = page["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["location"].as_str().unwrap(),
                c["on_hand"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(skus, vec![("s1", 5), ("s2", 6)]);
    let cursor = page["cursor"].as_str().unwrap().to_string();
    let empty: Value = p
        .get(&format!("/v1/changes?locations=s1&after={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(empty["changes"], json!([]));

    // A long poll answers with the change that arrives while it waits.
    let poll = {
        let (http, url) = (
            p.http.clone(),
            p.url(&format!(
                "/v1/changes?locations=s1&after={cursor}&wait_ms=20000"
            )),
        );
        tokio::spawn(async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    p.stock("F", "s1", 9).await;
    let got = poll.await.unwrap();
    assert_eq!(got["changes"][0]["on_hand"], 9, "{got}");

    // Server-Sent Events from the same cursor: the first event is that change, its id the
    // cursor after it.
    let mut sse = p
        .http
        .get(p.url("/v1/changes?locations=s1"))
        .header("accept", "text/event-stream")
        .header("last-event-id", &cursor)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), StatusCode::OK);
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = sse.chunk().await.unwrap().expect("an event");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("event: changes"), "{text}");
    assert!(text.contains("\"on_hand\":9"), "{text}");
    drop(sse);

    // The other backend's cursor is expired here (reload the snapshot); garbage is a 400.
    let (status, body) = problem(p.get("/v1/changes?locations=s1&after=s@0").await).await;
    assert_eq!(status, StatusCode::GONE);
    assert_eq!(body["code"], "cursor_expired");
    for bad in [
        "/v1/changes?locations=s1&after=0",
        "/v1/changes?locations=s1&wait_ms=30001",
    ] {
        let (status, _) = problem(p.get(bad).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let r = p
        .http
        .get(p.url("/v1/changes?locations=s1"))
        .header("last-event-id", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // The snapshot: every row of the locations and a cursor to follow from.
    let snap: Value = p
        .get("/v1/changes/snapshot?locations=s1,s2")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(snap["rows"].as_array().map(Vec::len), Some(2), "{snap}");
    assert!(snap["cursor"].as_str().is_some(), "{snap}");
}

/// The platform's only dead letter (there must be exactly one).
async fn the_one_dead_letter(p: &Platform) -> Value {
    let mut letters: Vec<Value> = p
        .get("/admin/dead-letters")
        .await
        .json()
        .await
        .expect("the dead letters as JSON");
    assert_eq!(letters.len(), 1, "{letters:?}");
    letters.remove(0)
}

/// `POST /admin/dead-letters/{id}/replay` of `letter`.
async fn replay(p: &Platform, letter: &Value) -> reqwest::Response {
    p.http
        .post(p.url(&format!("/admin/dead-letters/{}/replay", letter["id"])))
        .send()
        .await
        .expect("the replay answers")
}
