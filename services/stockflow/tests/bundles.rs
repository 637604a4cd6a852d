//! Bundles through real HTTP on the embedded backend: a bundle line reserves its
//! components at the same location all or nothing, confirm and release act on them, the
//! bundle's availability is the least its components allow; and bundle and component
//! reservations racing for the same units never oversell a component.

mod common;

use common::{Platform, answered, refused};
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn bundle(p: &Platform, sku: &str, components: Value) -> Value {
    let r = p
        .http
        .put(p.url(&format!("/v1/bundles/{sku}")))
        .json(&json!({ "components": components }))
        .send()
        .await
        .expect("request");
    answered(r, StatusCode::OK).await
}

async fn put_bundle_status(p: &Platform, sku: &str, components: Value) -> (u16, String) {
    let r = p
        .http
        .put(p.url(&format!("/v1/bundles/{sku}")))
        .json(&json!({ "components": components }))
        .send()
        .await
        .expect("request");
    refused(r).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_reserves_confirms_and_releases_its_components() {
    let p = Platform::start().await;
    p.location("s1", "north").await;
    p.stock("MUG", "s1", 10).await;
    p.stock("TEA", "s1", 7).await;
    let gift = bundle(
        &p,
        "GIFT",
        json!([{"sku": "MUG", "qty": 1}, {"sku": "TEA", "qty": 2}]),
    )
    .await;
    assert_eq!(gift["version"], 1);
    // Nesting is refused both ways.
    assert_eq!(
        put_bundle_status(&p, "BIG", json!([{"sku": "GIFT", "qty": 1}])).await,
        (422, "conflicting_fields".to_string())
    );
    assert_eq!(
        put_bundle_status(&p, "MUG", json!([{"sku": "CUP", "qty": 1}])).await,
        (422, "conflicting_fields".to_string())
    );

    // Valid alone, too large once expanded: a conflict, not bad input.
    let r = p
        .post(
            "/v1/reservations",
            "gift-huge",
            json!({"lines": [{"sku": "GIFT", "location": "s1", "qty": 1_000_000}]}),
        )
        .await;
    assert_eq!(refused(r).await, (422, "conflicting_fields".to_string()));
    // 3 gift sets hold 3 mugs and 6 tea, with one more tea beside them.
    let r = p
        .post(
            "/v1/reservations",
            "gift-1",
            json!({"reservation_id": "g1", "lines": [{"sku": "GIFT", "location": "s1", "qty": 3},
                                                      {"sku": "TEA", "location": "s1", "qty": 1}]}),
        )
        .await;
    let body = answered(r, StatusCode::CREATED).await;
    let lines: Vec<(String, i64)> = body["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| {
            (
                l["sku"].as_str().expect("sku").to_string(),
                l["qty"].as_i64().expect("qty"),
            )
        })
        .collect();
    assert_eq!(lines, vec![("MUG".to_string(), 3), ("TEA".to_string(), 7)]);
    // All or nothing: one more gift needs 2 tea, none is left; the mugs stay unheld.
    let r = p
        .post(
            "/v1/reservations",
            "gift-2",
            json!({"lines": [{"sku": "GIFT", "location": "s1", "qty": 1}]}),
        )
        .await;
    assert_eq!(refused(r).await, (409, "insufficient_stock".to_string()));
    assert_eq!(p.write_level("MUG", "s1").await.reserved, 3);

    // Availability: min(7/1, 0/2) once the holds are in the read model.
    p.eventually_stock("TEA", "s1", |v| v["reserved"] == 7)
        .await;
    let availability: Value =
        answered(p.get("/v1/bundles/GIFT/availability").await, StatusCode::OK).await;
    assert_eq!(availability["total_available"], 0);
    // Releasing gives back every component.
    let r = p
        .post("/v1/reservations/g1/release", "gift-1-release", json!({}))
        .await;
    answered(r, StatusCode::OK).await;
    p.eventually_stock("TEA", "s1", |v| v["reserved"] == 0)
        .await;
    let availability: Value =
        answered(p.get("/v1/bundles/GIFT/availability").await, StatusCode::OK).await;
    assert_eq!(availability["total_available"], 3, "{availability}");
    assert_eq!(availability["locations"][0]["available"], 3);
}

/// Bundle reservations and direct reservations of its components, all at once: no
/// component is reserved beyond its stock, and each holds exactly what the winners' lines
/// say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_bundles_and_components_never_oversell_a_component() {
    const RACERS: usize = 60;
    let p = Platform::start().await;
    p.location("s1", "north").await;
    p.stock("MUG", "s1", 10).await;
    p.stock("TEA", "s1", 15).await;
    bundle(
        &p,
        "GIFT",
        json!([{"sku": "MUG", "qty": 1}, {"sku": "TEA", "qty": 2}]),
    )
    .await;
    let outcomes = join_all((0..RACERS).map(|i| {
        let p = &p;
        async move {
            let sku = ["GIFT", "MUG", "TEA"][i % 3];
            let r = p
                .post(
                    "/v1/reservations",
                    format!("race-{i}"),
                    json!({"lines": [{"sku": sku, "location": "s1", "qty": 1}]}),
                )
                .await;
            let status = r.status();
            (status, r.json::<Value>().await.expect("json"))
        }
    }))
    .await;
    let mut held = std::collections::BTreeMap::<String, i64>::new();
    for (status, body) in &outcomes {
        match *status {
            StatusCode::CREATED => {
                for line in body["lines"].as_array().expect("lines") {
                    *held
                        .entry(line["sku"].as_str().expect("sku").to_string())
                        .or_default() += line["qty"].as_i64().expect("qty");
                }
            }
            StatusCode::CONFLICT => assert_eq!(body["code"], "insufficient_stock", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    for (sku, on_hand) in [("MUG", 10), ("TEA", 15)] {
        let level = p.write_level(sku, "s1").await;
        assert_eq!(level.reserved, held.get(sku).copied().unwrap_or(0), "{sku}");
        assert!(level.reserved <= on_hand, "{sku} oversold");
    }
    eprintln!("{RACERS} racers (bundles, mugs, tea): held {held:?}");
}

/// A region-level line may name a bundle: the planner offers each location what its
/// components there allow, chooses one location per set (or splits sets over locations),
/// and the reservation holds the components at the chosen locations. A bundle beside one
/// of its own components in one order is refused (the offers would count units twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_level_bundle_line_holds_its_components_where_the_planner_chose() {
    let p = Platform::start().await;
    for id in ["k1", "k2"] {
        p.location(id, "west").await;
    }
    // k1 can make 1 set (2 tea), k2 can make 3 (mugs 3, tea 8).
    for (sku, location, qty) in [
        ("MUG", "k1", 5),
        ("TEA", "k1", 2),
        ("MUG", "k2", 3),
        ("TEA", "k2", 8),
    ] {
        p.stock(sku, location, qty).await;
        p.eventually_stock(sku, location, |v| v["on_hand"] == qty)
            .await;
    }
    bundle(
        &p,
        "KIT",
        json!([{"sku": "MUG", "qty": 1}, {"sku": "TEA", "qty": 2}]),
    )
    .await;
    let reserve =
        |key: &str, body: Value| p.post("/v1/sourcing/reservations", key.to_string(), body);
    let r = reserve(
        "kit-1",
        json!({"region": "west", "strategy": "fewest_splits", "lines": [{"sku": "KIT", "qty": 3}]}),
    )
    .await;
    let body = answered(r, StatusCode::CREATED).await;
    assert_eq!(body["sourcing"][0]["sku"], "KIT");
    assert_eq!(body["sourcing"][0]["location"], "k2");
    let mut lines: Vec<(String, String, i64)> = body["reservation"]["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| {
            (
                l["sku"].as_str().expect("sku").to_string(),
                l["location"].as_str().expect("location").to_string(),
                l["qty"].as_i64().expect("qty"),
            )
        })
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            ("MUG".into(), "k2".into(), 3),
            ("TEA".into(), "k2".into(), 6)
        ]
    );
    // One set is left in the region (at k1): two are short.
    let r = reserve(
        "kit-2",
        json!({"region": "west", "lines": [{"sku": "KIT", "qty": 2}]}),
    )
    .await;
    assert_eq!(
        refused(r).await,
        (409, "insufficient_stock_in_region".to_string())
    );
    let r = reserve(
        "kit-3",
        json!({"region": "west", "lines": [{"sku": "KIT", "qty": 1}]}),
    )
    .await;
    let body = answered(r, StatusCode::CREATED).await;
    assert_eq!(body["sourcing"][0]["location"], "k1");
    assert_eq!(p.write_level("TEA", "k1").await.reserved, 2);
    // A bundle beside its own component.
    let r = reserve(
        "kit-4",
        json!({"region": "west", "lines": [{"sku": "KIT", "qty": 1}, {"sku": "TEA", "qty": 1}]}),
    )
    .await;
    assert_eq!(refused(r).await, (422, "conflicting_fields".to_string()));
}

/// Search and the availability query count a bundle's sets from its components' rows, so
/// an in-stock search finds a gift set that holds no stock of its own, and drops it once a
/// component runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_counts_a_bundles_sets() {
    let p = Platform::start().await;
    p.location("s1", "north").await;
    for (sku, qty) in [("MUG", 4), ("TEA", 5)] {
        p.stock(sku, "s1", qty).await;
        p.eventually_stock(sku, "s1", |v| v["on_hand"] == qty).await;
    }
    bundle(
        &p,
        "KIT",
        json!([{"sku": "MUG", "qty": 1}, {"sku": "TEA", "qty": 2}]),
    )
    .await;
    for (sku, name) in [("KIT", "Tea kit"), ("TEA", "Tea leaves")] {
        let r = p
            .http
            .put(p.url(&format!("/v1/skus/{sku}")))
            .json(&json!({ "name": name }))
            .send()
            .await
            .expect("request");
        answered(r, StatusCode::OK).await;
    }
    // The hits of an in-stock search for `q`, once they are `expected` (the catalog and the
    // stock reach the read model asynchronously), else the last seen after 5 s.
    let search = |q: &'static str, expected: Vec<(&'static str, i64)>| {
        let p = &p;
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            loop {
                let body = answered(
                    p.get(&format!("/v1/search?q={q}&in_stock=true")).await,
                    StatusCode::OK,
                )
                .await;
                let mut hits: Vec<(String, i64)> = body["hits"]
                    .as_array()
                    .expect("hits")
                    .iter()
                    .map(|h| {
                        (
                            h["sku"].as_str().expect("sku").to_string(),
                            h["available"].as_i64().expect("available"),
                        )
                    })
                    .collect();
                hits.sort();
                let wanted: Vec<(String, i64)> =
                    expected.iter().map(|(s, n)| (s.to_string(), *n)).collect();
                if hits == wanted || std::time::Instant::now() > deadline {
                    return (hits, wanted);
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    let (hits, wanted) = search("kit", vec![("KIT", 2)]).await;
    assert_eq!(hits, wanted);
    // So does the availability query: the sets, with no stock of its own.
    let body = answered(p.get("/v1/availability/KIT").await, StatusCode::OK).await;
    assert_eq!(body["total_available"], 2, "{body}");
    assert_eq!(
        (
            body["regions"][0]["region"].as_str(),
            body["regions"][0]["on_hand"].as_i64()
        ),
        (Some("north"), Some(0))
    );
    let (hits, wanted) = search("tea", vec![("KIT", 2), ("TEA", 5)]).await;
    assert_eq!(hits, wanted);
    // Out of mugs: the kit is out of stock, the tea is not.
    p.stock("MUG", "s1", 0).await;
    p.eventually_stock("MUG", "s1", |v| v["on_hand"] == 0).await;
    let (hits, wanted) = search("tea", vec![("TEA", 5)]).await;
    assert_eq!(hits, wanted);
}
