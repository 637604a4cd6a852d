//! Transfers through real HTTP on the embedded backend: create → ship → partial receipts →
//! close with a discrepancy, read back from the query API; cancel before shipping; the
//! refusals and their codes; an idempotent retry of a ship; store tokens at each end. The
//! race of ships, cancels, receipts and sales is in `transfer_race.rs`.

mod common;

use common::{DAY, Platform, answered, problem, refused};
use reqwest::StatusCode;
use serde_json::{Value, json};
use stockflow::auth::Scope;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ship_then_receive_in_parts_and_close_with_a_discrepancy() {
    let p = Platform::start().await;
    p.location("a", "north").await;
    p.location("b", "north").await;
    p.stock("T1", "a", 10).await;
    p.stock("T2", "a", 4).await;
    let lines = json!([{"sku": "T1", "qty": 6}, {"sku": "T2", "qty": 4}]);
    let t = answered(
        p.create_transfer("tr-1", "a", "b", lines).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(
        (&t["status"], &t["from"], &t["to"], &t["expected_arrival"]),
        (&json!("created"), &json!("a"), &json!("b"), &json!(DAY))
    );
    let t = answered(
        p.on_transfer("tr-1", "ship", "ship-1").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(t["status"], "in_transit");
    assert_eq!(t["lines"][0]["outstanding"], 6);

    // Out of the source, in transit (and incoming on the day) at the destination.
    let src = p.eventually_stock("T1", "a", |v| v["on_hand"] == 4).await;
    assert_eq!(src["available"], 4);
    let dst = p
        .eventually_stock("T1", "b", |v| v["in_transit"] == 6)
        .await;
    assert_eq!(dst["on_hand"], 0);
    assert_eq!(dst["incoming"], json!([{"date": DAY, "qty": 6}]));
    let availability: Value = p
        .get("/v1/availability/T1?region=north")
        .await
        .json()
        .await
        .expect("json");
    let north = &availability["regions"][0];
    assert_eq!(
        (&north["on_hand"], &north["in_transit"]),
        (&json!(4), &json!(6))
    );
    assert_eq!(north["incoming"], json!([{"date": DAY, "qty": 6}]));

    // A partial receipt: 3 good and 1 damaged of T1; 2 still in transit.
    let body = json!({"lines": [{"sku": "T1", "received": 3, "damaged": 1}]});
    let t = answered(
        p.receive_transfer("tr-1", "recv-1", body).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(t["status"], "in_transit");
    assert_eq!(
        (
            &t["lines"][0]["received"],
            &t["lines"][0]["damaged"],
            &t["lines"][0]["outstanding"]
        ),
        (&json!(3), &json!(1), &json!(2))
    );
    let dst = p.eventually_stock("T1", "b", |v| v["on_hand"] == 4).await;
    assert_eq!(
        (&dst["damaged"], &dst["available"], &dst["in_transit"]),
        (&json!(1), &json!(3), &json!(2))
    );
    // Too much of a line, and a SKU the transfer lacks.
    for (line, outstanding) in [
        (json!({"sku": "T1", "received": 3}), 2),
        (json!({"sku": "NOPE", "received": 1}), 0),
    ] {
        let sku = line["sku"].as_str().unwrap_or_default().to_string();
        let r = p
            .receive_transfer("tr-1", &format!("over-{sku}"), json!({"lines": [line]}))
            .await;
        let (status, body) = problem(r).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["code"], "transfer_quantity_exceeded");
        assert_eq!(
            (&body["sku"], &body["outstanding"]),
            (&json!(sku), &json!(outstanding))
        );
    }

    // The rest of T2 arrives and the transfer closes: T1's 2 missing units are a
    // discrepancy of their own at the destination.
    let body = json!({"lines": [{"sku": "T2", "received": 4}], "close": true});
    let t = answered(
        p.receive_transfer("tr-1", "recv-2", body).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (&t["status"], &t["receipts"]),
        (&json!("received"), &json!(2))
    );
    assert_eq!(
        (&t["lines"][0]["missing"], &t["lines"][0]["outstanding"]),
        (&json!(2), &json!(0))
    );
    let dst = p
        .eventually_stock("T1", "b", |v| {
            v["in_transit"] == 0 && v["incoming"] == json!([])
        })
        .await;
    assert_eq!(dst["on_hand"], 4);
    p.eventually_stock("T2", "b", |v| v["on_hand"] == 4).await;
    let movements: Value = p
        .get("/v1/movements?sku=T1&location=b")
        .await
        .json()
        .await
        .expect("json");
    let kinds: Vec<&str> = movements["movements"]
        .as_array()
        .expect("movements")
        .iter()
        .filter_map(|m| m["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "transfer_in_transit",
            "transfer_received",
            "transfer_discrepancy"
        ]
    );
    let got = answered(p.get("/v1/transfers/tr-1").await, StatusCode::OK).await;
    assert_eq!(got, t);
    // Closed: nothing more moves it.
    for what in ["ship", "cancel"] {
        let r = p.on_transfer("tr-1", what, &format!("late-{what}")).await;
        assert_eq!(refused(r).await, (409, "transfer_status_conflict".into()));
    }
    let r = p
        .receive_transfer("tr-1", "late-recv", json!({"close": true}))
        .await;
    assert_eq!(refused(r).await, (409, "transfer_status_conflict".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_ship_and_every_refusal_has_its_code() {
    let p = Platform::start().await;
    p.location("a", "north").await;
    p.location("b", "north").await;
    p.stock("C", "a", 3).await;
    let one = json!([{"sku": "C", "qty": 2}]);
    answered(
        p.create_transfer("tr-c", "a", "b", one.clone()).await,
        StatusCode::CREATED,
    )
    .await;
    // Before it ships there is nothing to receive.
    let r = p
        .receive_transfer(
            "tr-c",
            "early",
            json!({"lines": [{"sku": "C", "received": 1}]}),
        )
        .await;
    assert_eq!(refused(r).await, (409, "transfer_status_conflict".into()));
    let t = answered(
        p.on_transfer("tr-c", "cancel", "cancel-1").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(t["status"], "cancelled");
    let (status, body) = problem(p.on_transfer("tr-c", "ship", "ship-c").await).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        (&body["code"], &body["transfer_status"]),
        (&json!("transfer_status_conflict"), &json!("cancelled"))
    );
    assert_eq!(p.write_level("C", "a").await.on_hand, 3);

    // Its id is taken (another key, same id).
    let r = p
        .post(
            "/v1/transfers",
            "create-again",
            json!({"transfer_id": "tr-c", "from": "a", "to": "b", "lines": one, "expected_arrival": DAY}),
        )
        .await;
    assert_eq!(refused(r).await, (409, "transfer_exists".into()));
    // More than the source holds: nothing ships.
    let many = json!([{"sku": "C", "qty": 4}]);
    answered(
        p.create_transfer("tr-big", "a", "b", many).await,
        StatusCode::CREATED,
    )
    .await;
    let r = p.on_transfer("tr-big", "ship", "ship-big").await;
    assert_eq!(refused(r).await, (409, "insufficient_stock".into()));
    assert_eq!(p.write_level("C", "a").await.on_hand, 3);
    let got = answered(p.get("/v1/transfers/tr-big").await, StatusCode::OK).await;
    assert_eq!(got["status"], "created");

    let cases = [
        (
            p.on_transfer("nope", "ship", "n1").await,
            (404, "transfer_not_found"),
        ),
        (
            p.on_transfer("nope", "cancel", "n2").await,
            (404, "transfer_not_found"),
        ),
        (
            p.get("/v1/transfers/nope").await,
            (404, "transfer_not_found"),
        ),
        (
            p.create_transfer("tr-x", "a", "nowhere", json!([{"sku": "C", "qty": 1}]))
                .await,
            (404, "location_not_found"),
        ),
        (
            p.create_transfer("tr-y", "a", "a", json!([{"sku": "C", "qty": 1}]))
                .await,
            (422, "conflicting_fields"),
        ),
        (
            p.create_transfer(
                "tr-z",
                "a",
                "b",
                json!([{"sku": "C", "qty": 1}, {"sku": "C", "qty": 1}]),
            )
            .await,
            (422, "duplicate_line"),
        ),
        (
            p.receive_transfer("tr-c", "empty", json!({"lines": []}))
                .await,
            (400, "invalid_request"),
        ),
    ];
    for (r, (status, code)) in cases {
        assert_eq!(refused(r).await, (status, code.to_string()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_ship_applies_once() {
    let p = Platform::start().await;
    p.location("a", "north").await;
    p.location("b", "north").await;
    p.stock("R", "a", 10).await;
    answered(
        p.create_transfer("tr-r", "a", "b", json!([{"sku": "R", "qty": 3}]))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let first = p.on_transfer("tr-r", "ship", "ship-once").await;
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first = answered(first, StatusCode::OK).await;
    let before = p.write_level("R", "a").await;
    for _ in 0..3 {
        let again = p.on_transfer("tr-r", "ship", "ship-once").await;
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(answered(again, StatusCode::OK).await, first);
    }
    let after = p.write_level("R", "a").await;
    assert_eq!((after.on_hand, after.version), (7, before.version));
    assert_eq!(p.write_level("R", "b").await.in_transit(), 3);
    // The key names the ship of this transfer: a cancel under it is another request.
    let r = p.on_transfer("tr-r", "cancel", "ship-once").await;
    assert_eq!(refused(r).await, (422, "idempotency_key_reused".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_token_acts_at_its_own_end_only() {
    let p = Platform::start().await;
    for l in ["a", "b", "c"] {
        p.location(l, "north").await;
    }
    p.stock("S", "a", 5).await;
    let signer = p.signer.as_ref().expect("the harness signs tokens");
    let store = |location: &str| {
        let claims = stockflow::auth::signing::TokenClaims {
            locations: Some(vec![location.into()]),
            ..common::claims(location, &[Scope::StockRead, Scope::StockAdjust])
        };
        signer.mint(&claims).expect("token")
    };
    let send = |token: String, path: String, key: &str, body: Value| {
        p.http
            .post(p.url(&path))
            .header("authorization", format!("Bearer {token}"))
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let body = json!({"transfer_id": "tr-s", "from": "a", "to": "b", "lines": [{"sku": "S", "qty": 2}], "expected_arrival": DAY});
    // b may not send a's stock; a may.
    let r = send(store("b"), "/v1/transfers".into(), "s1", body.clone())
        .await
        .expect("request");
    assert_eq!(refused(r).await, (403, "location_forbidden".into()));
    let r = send(store("a"), "/v1/transfers".into(), "s2", body)
        .await
        .expect("request");
    answered(r, StatusCode::CREATED).await;
    let r = send(
        store("b"),
        "/v1/transfers/tr-s/ship".into(),
        "s3",
        json!({}),
    )
    .await
    .expect("request");
    assert_eq!(refused(r).await, (403, "location_forbidden".into()));
    let r = send(
        store("a"),
        "/v1/transfers/tr-s/ship".into(),
        "s4",
        json!({}),
    )
    .await
    .expect("request");
    answered(r, StatusCode::OK).await;
    // Only the destination receives.
    let got = json!({"lines": [{"sku": "S", "received": 2}]});
    let r = send(
        store("a"),
        "/v1/transfers/tr-s/receive".into(),
        "s5",
        got.clone(),
    )
    .await
    .expect("request");
    assert_eq!(refused(r).await, (403, "location_forbidden".into()));
    let r = send(store("b"), "/v1/transfers/tr-s/receive".into(), "s6", got)
        .await
        .expect("request");
    assert_eq!(answered(r, StatusCode::OK).await["status"], "received");
    // Both ends read it; a third store does not.
    for (location, status) in [("a", 200), ("b", 200), ("c", 403)] {
        let r = p
            .http
            .get(p.url("/v1/transfers/tr-s"))
            .header("authorization", format!("Bearer {}", store(location)))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status().as_u16(), status, "{location}");
    }
}
