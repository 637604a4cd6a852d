//! Sourcing through real HTTP on the embedded backend: channels, the three strategies and
//! the split rule, replays of region-level reservations, pickup and channel availability;
//! and a race of many region-level checkouts for the last units of a region.

mod common;

use common::{Platform, answered, refused};
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn channel(p: &Platform, id: &str, body: Value) -> Value {
    let r = p
        .http
        .put(p.url(&format!("/v1/channels/{id}")))
        .json(&body)
        .send()
        .await
        .expect("request");
    answered(r, StatusCode::OK).await
}

/// `(location, qty, step)` of each part of a sourced reservation's answer.
fn parts(body: &Value) -> Vec<(String, i64, String)> {
    body["sourcing"]
        .as_array()
        .expect("sourcing")
        .iter()
        .map(|p| {
            (
                p["location"].as_str().expect("location").to_string(),
                p["qty"].as_i64().expect("qty"),
                p["step"].as_str().expect("step").to_string(),
            )
        })
        .collect()
}

async fn stocked(p: &Platform, sku: &str, at: &[(&str, i64)]) {
    for (location, qty) in at {
        p.stock(sku, location, *qty).await;
        p.eventually_stock(sku, location, |v| v["on_hand"] == *qty)
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategies_choose_explain_and_replay() {
    let p = Platform::start().await;
    for (id, region) in [
        ("a", "north"),
        ("b", "north"),
        ("c", "north"),
        ("d", "south"),
    ] {
        p.location(id, region).await;
    }
    stocked(&p, "TEE", &[("a", 2), ("b", 9), ("c", 4), ("d", 50)]).await;
    let web = channel(
        &p,
        "web",
        json!({"locations": [{"location": "c"}, {"location": "a", "pickup_threshold": 1},
                             {"location": "b"}, {"location": "d"}],
               "strategy": "priority"}),
    )
    .await;
    assert_eq!(web["version"], 1);
    let reserve =
        |key: &str, body: Value| p.post("/v1/sourcing/reservations", key.to_string(), body);

    // priority: the channel's order, c then a, within the region.
    let r = reserve(
        "k1",
        json!({"channel": "web", "region": "north", "lines": [{"sku": "TEE", "qty": 5}]}),
    )
    .await;
    let body = answered(r, StatusCode::CREATED).await;
    assert_eq!(
        parts(&body),
        vec![
            ("c".to_string(), 4, "priority".to_string()),
            ("a".to_string(), 1, "priority".to_string())
        ]
    );
    assert_eq!(body["attempts"], 1);
    // A retry replays the reservation, applying nothing again.
    let r = reserve(
        "k1",
        json!({"channel": "web", "region": "north", "lines": [{"sku": "TEE", "qty": 5}]}),
    )
    .await;
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    let replay = answered(r, StatusCode::CREATED).await;
    assert_eq!(replay["reservation"], body["reservation"]);
    assert_eq!(p.write_level("TEE", "c").await.reserved, 4);

    // most_stock (overriding the channel's strategy): b holds the most.
    let r = reserve(
        "k2",
        json!({"channel": "web", "region": "north", "strategy": "most_stock",
               "lines": [{"sku": "TEE", "qty": 3}]}),
    )
    .await;
    let body = answered(r, StatusCode::CREATED).await;
    assert_eq!(
        parts(&body),
        vec![("b".to_string(), 3, "most_stock".to_string())]
    );

    // fewest_splits without a channel: the region's locations; b alone fills 6 (9-3).
    let r = reserve(
        "k3",
        json!({"region": "north", "lines": [{"sku": "TEE", "qty": 6}]}),
    )
    .await;
    let body = answered(r, StatusCode::CREATED).await;
    assert_eq!(
        parts(&body),
        vec![("b".to_string(), 6, "whole_order".to_string())]
    );

    // No split allowed and no single location holds 2 in the north now (a: 1, b: 0, c: 0).
    let r = reserve(
        "k4",
        json!({"region": "north", "allow_split": false, "lines": [{"sku": "TEE", "qty": 2}]}),
    )
    .await;
    let (status, body) = common::problem(r).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["code"], "insufficient_stock_in_region");
    assert_eq!(body["lines"][0]["available"], 1);
    // Neither a channel nor a region: nowhere to source from.
    let r = reserve("k5", json!({"lines": [{"sku": "TEE", "qty": 1}]})).await;
    assert_eq!(refused(r).await, (422, "conflicting_fields".to_string()));
    let r = reserve(
        "k6",
        json!({"channel": "nope", "lines": [{"sku": "TEE", "qty": 1}]}),
    )
    .await;
    assert_eq!(refused(r).await, (404, "channel_not_found".to_string()));

    // Pickup: stores above their threshold (a holds 1, its threshold is 1: not offered).
    p.eventually_stock("TEE", "b", |v| v["reserved"] == 9).await;
    let pickup: Value = answered(p.get("/v1/pickup/TEE?channel=web").await, StatusCode::OK).await;
    let stores: Vec<&str> = pickup["stores"]
        .as_array()
        .expect("stores")
        .iter()
        .map(|s| s["location"].as_str().expect("location"))
        .collect();
    assert_eq!(stores, vec!["d"]);
    let availability: Value = answered(
        p.get("/v1/channels/web/availability/TEE").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(availability["total_available"], 51);
}

/// Many checkouts at once for the last units of a region, spread over several stores:
/// exactly as many win as there are units, none oversells, and each key holds exactly
/// what the winners' lines say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_region_reservations_take_exactly_the_units_there_are() {
    const RACERS: usize = 40;
    let units = [("r1", 3), ("r2", 2), ("r3", 4), ("r4", 1), ("r5", 2)];
    let total: i64 = units.iter().map(|(_, q)| q).sum();
    let p = Platform::start().await;
    for (id, _) in units {
        p.location(id, "east").await;
    }
    stocked(&p, "LAST", &units).await;
    let outcomes = join_all((0..RACERS).map(|i| {
        let p = &p;
        async move {
            // Every strategy races at once; half refuse to split (qty 1 never needs to).
            let strategy = ["priority", "fewest_splits", "most_stock"][i % 3];
            let r = p
                .post(
                    "/v1/sourcing/reservations",
                    format!("race-{i}"),
                    json!({"region": "east", "strategy": strategy, "allow_split": i % 2 == 0,
                           "lines": [{"sku": "LAST", "qty": 1}]}),
                )
                .await;
            let status = r.status();
            let body: Value = r.json().await.expect("json");
            (status, body)
        }
    }))
    .await;
    let mut held = std::collections::BTreeMap::<String, i64>::new();
    let mut won = 0;
    for (status, body) in &outcomes {
        match *status {
            StatusCode::CREATED => {
                won += 1;
                for line in body["reservation"]["lines"].as_array().expect("lines") {
                    *held
                        .entry(line["location"].as_str().expect("location").to_string())
                        .or_default() += line["qty"].as_i64().expect("qty");
                }
            }
            StatusCode::CONFLICT => {
                assert_eq!(body["code"], "insufficient_stock_in_region", "{body}")
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(won, total, "exactly the units there are win");
    for (location, on_hand) in units {
        let level = p.write_level("LAST", location).await;
        let winners = held.get(location).copied().unwrap_or(0);
        assert_eq!(
            level.reserved, winners,
            "{location}: reserved = what its winners hold"
        );
        assert!(level.reserved <= on_hand, "{location} oversold");
        assert_eq!(level.reserved, on_hand, "{location}: every unit taken");
    }
    let replans: u64 = outcomes
        .iter()
        .filter_map(|(_, b)| b["attempts"].as_u64())
        .map(|a| a - 1)
        .sum();
    eprintln!(
        "{RACERS} racers for {total} units over {} stores: {won} won, {replans} re-plans",
        units.len()
    );
}

/// A retry whose answer was lost finds its reservation even though the stock it took is
/// gone now, and a different request under the same key applies nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_the_stock_is_gone_replays_its_reservation() {
    let p = Platform::start().await;
    p.location("only", "west").await;
    stocked(&p, "ONE", &[("only", 2)]).await;
    let body = json!({"region": "west", "lines": [{"sku": "ONE", "qty": 2}]});
    let first = answered(
        p.post("/v1/sourcing/reservations", "last-two", body.clone())
            .await,
        StatusCode::CREATED,
    )
    .await;
    let r = p.post("/v1/sourcing/reservations", "last-two", body).await;
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    let again = answered(r, StatusCode::CREATED).await;
    assert_eq!(
        again["reservation"]["reservation_id"],
        first["reservation"]["reservation_id"]
    );
    assert_eq!(
        p.write_level("ONE", "only").await.reserved,
        2,
        "applied once"
    );
    let r = p
        .post(
            "/v1/sourcing/reservations",
            "last-two",
            json!({"region": "west", "lines": [{"sku": "ONE", "qty": 1}]}),
        )
        .await;
    // Refused, and nothing applied: here no plan fits (409) before the key is consulted;
    // where one does, the store refuses the other body under the key (422).
    let (status, code) = refused(r).await;
    assert!(
        matches!(
            (status, code.as_str()),
            (409, "insufficient_stock_in_region") | (422, "idempotency_key_reused")
        ),
        "{status} {code}"
    );
    assert_eq!(p.write_level("ONE", "only").await.reserved, 2);
}

/// Allocations over HTTP: a ring-fence keeps a store's units from every other channel, a
/// percentage cap bounds the marketplace, region-level sourcing for a channel skips what
/// it may not take, and bad allocations are refused with the field they name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocations_fence_and_cap_what_each_channel_may_take() {
    let p = Platform::start().await;
    for id in ["s1", "s2"] {
        p.location(id, "north").await;
    }
    stocked(&p, "GIFT", &[("s1", 10), ("s2", 10)]).await;
    channel(&p, "counter", json!({"locations": [{"location": "s1"}]})).await;
    for id in ["market", "web"] {
        channel(
            &p,
            id,
            json!({"locations": [{"location": "s1"}, {"location": "s2"}], "strategy": "priority"}),
        )
        .await;
    }
    let allocate = |key: &str, body: Value| p.post("/v1/allocations", key.to_string(), body);
    let fenced = answered(
        allocate(
            "fence",
            json!({"sku": "GIFT", "location": "s1", "channel": "counter", "ring_fence": 4}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(fenced["channels"][0]["channel"], "counter");
    assert_eq!(fenced["channels"][0]["ring_fence"], 4);
    assert_eq!(fenced["channels"][0]["available"], 10);
    let capped = answered(
        allocate(
            "cap",
            json!({"sku": "GIFT", "location": "s1", "channel": "market", "cap_percent": 20}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let market = capped["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .find(|c| c["channel"] == "market")
        .expect("market")
        .clone();
    assert_eq!(
        (market["cap_percent"].as_i64(), market["available"].as_i64()),
        (Some(20), Some(2))
    );

    // Refused with the field they name, applying nothing.
    for (key, body, status) in [
        (
            "bad-1",
            json!({"sku": "GIFT", "location": "s2", "channel": "counter", "ring_fence": 1}),
            422,
        ),
        (
            "bad-2",
            json!({"sku": "GIFT", "location": "s1", "channel": "nobody", "ring_fence": 1}),
            404,
        ),
        (
            "bad-3",
            json!({"sku": "GIFT", "location": "s1", "channel": "web", "cap_units": 1, "cap_percent": 1}),
            422,
        ),
        (
            "bad-4",
            json!({"sku": "GIFT", "location": "s1", "channel": "web", "ring_fence": -1}),
            400,
        ),
    ] {
        let (got, code) = refused(allocate(key, body).await).await;
        assert_eq!(got, status, "{key}: {code}");
    }
    assert_eq!(p.write_level("GIFT", "s1").await.version, 3);

    let reserve = |key: &str, channel: &str, location: &str, qty: i64| {
        p.post(
            "/v1/reservations",
            key.to_string(),
            json!({"channel": channel, "lines": [{"sku": "GIFT", "location": location, "qty": qty}]}),
        )
    };
    // The marketplace: 20% of 10 on hand.
    assert_eq!(
        refused(reserve("m1", "market", "s1", 3).await).await.1,
        "insufficient_stock"
    );
    let held = answered(reserve("m2", "market", "s1", 2).await, StatusCode::CREATED).await;
    assert_eq!(held["channel"], "market");
    // The web: what is left outside the counter's fence (10 - 4 - 2).
    assert_eq!(
        refused(reserve("w1", "web", "s1", 5).await).await.1,
        "insufficient_stock"
    );
    answered(reserve("w2", "web", "s1", 4).await, StatusCode::CREATED).await;
    // The counter: its fence, whatever the others took.
    let counter = answered(reserve("c1", "counter", "s1", 4).await, StatusCode::CREATED).await;
    // A channel reserves only where it sells.
    let (status, _) = refused(reserve("c2", "counter", "s2", 1).await).await;
    assert_eq!(status, 422);

    // Region-level for the web: s1 comes first in its order but gives it nothing now.
    let r = p
        .post(
            "/v1/sourcing/reservations",
            "src-web",
            json!({"channel": "web", "region": "north", "lines": [{"sku": "GIFT", "qty": 3}]}),
        )
        .await;
    let body = answered(r, StatusCode::CREATED).await;
    assert_eq!(
        parts(&body),
        vec![("s2".to_string(), 3, "priority".to_string())]
    );
    assert_eq!(body["reservation"]["channel"], "web");

    let s1 = p.write_level("GIFT", "s1").await;
    let held_by = |c: &str| s1.held_for(&stockflow_domain::ChannelId::parse(c).expect("channel"));
    assert_eq!(
        (held_by("market"), held_by("web"), held_by("counter")),
        (2, 4, 4)
    );
    // Released, the counter's units are fenced again.
    let id = counter["reservation_id"].as_str().expect("id");
    answered(
        p.post(
            &format!("/v1/reservations/{id}/release"),
            "c1-release",
            json!({}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let s1 = p.write_level("GIFT", "s1").await;
    assert_eq!(
        s1.held_for(&stockflow_domain::ChannelId::parse("counter").expect("id")),
        0
    );
    assert_eq!(
        s1.available_to(None),
        0,
        "the 4 free units are the counter's"
    );
}

/// The planner counts a SKU's own policy: a key that only inherits backorders from its SKU
/// takes the units beyond its shelf, as a reservation made there directly would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sku_wide_backorder_policy_is_planned_like_a_location_override() {
    let p = Platform::start().await;
    p.location("pre", "east").await;
    stocked(&p, "PRE", &[("pre", 2)]).await;
    let five = json!({"region": "east", "lines": [{"sku": "PRE", "qty": 5}]});
    let r = p
        .post("/v1/sourcing/reservations", "pre-1", five.clone())
        .await;
    assert_eq!(
        refused(r).await,
        (409, "insufficient_stock_in_region".into())
    );
    let policy = p
        .post(
            "/v1/policies",
            "pre-policy",
            json!({"sku": "PRE", "oversell": "backorder", "backorder_limit": 5}),
        )
        .await;
    let policy = answered(policy, StatusCode::OK).await;
    assert_eq!(policy["version"], 1);
    let r = p.post("/v1/sourcing/reservations", "pre-2", five).await;
    let body = answered(r, StatusCode::CREATED).await;
    assert_eq!(body["reservation"]["lines"][0]["qty"], 5, "{body}");
    let level = p.write_level("PRE", "pre").await;
    assert_eq!((level.on_hand, level.reserved), (2, 5));
    assert_eq!(
        level.extras.backorders.iter().map(|b| b.qty).sum::<i64>(),
        3
    );
}
