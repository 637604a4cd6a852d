//! Region-level reservations racing through two command-API processes on one keyspace
//! (Cassandra standing in for ScyllaDB): many checkouts for the last units of a region
//! spread over several warehouses. Exactly the units there are are won, none twice, and
//! each key holds exactly what the winners' lines say. Needs `STOCKFLOW_CQL_NODES`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{Value, json};
use stockflow_domain::{LocationId, Sku, StockKey};
use stockflow_e2e::put_warehouse;
use stockflow_storage::ports::WriteStore;
use stockflow_storage::scylla::ScyllaBackend;

mod scylla_processes;

use scylla_processes::{TwoProcesses, two_processes};

const RACERS: usize = 60;

/// Waits until the read model behind `base` shows `locations` rows of `sku`.
async fn rows_shown(client: &reqwest::Client, base: &str, sku: &str, locations: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows: Value = client
            .get(format!("{base}/v1/stock/{sku}"))
            .send()
            .await
            .expect("request")
            .json()
            .await
            .unwrap_or(Value::Null);
        if rows["locations"]
            .as_array()
            .is_some_and(|l| l.len() == locations)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "read model never showed the stock: {rows}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
const UNITS: [(&str, i64); 5] = [("w1", 3), ("w2", 2), ("w3", 4), ("w4", 1), ("w5", 2)];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_region_reservations_on_two_processes_take_exactly_the_units_there_are() {
    let TwoProcesses {
        a,
        b,
        bases,
        client,
        config,
        // Kept until the end: the processes' data directories.
        dirs: _dirs,
    } = two_processes("sourcing").await;
    for (id, qty) in UNITS {
        put_warehouse(&client, &bases[0], id, "east").await;
        let r = client
            .post(format!("{}/v1/adjustments", bases[1]))
            .header("idempotency-key", format!("init-{id}"))
            .json(&json!({"sku": "LAST", "location": id, "set_on_hand": qty, "reason": "cycle_count"}))
            .send()
            .await
            .expect("request");
        assert!(
            r.status().is_success(),
            "{}",
            r.text().await.unwrap_or_default()
        );
    }
    // Candidates come from the read model: wait until it shows every warehouse.
    rows_shown(&client, &bases[0], "LAST", UNITS.len()).await;
    let outcomes = join_all((0..RACERS).map(|i| {
        let client = client.clone();
        let base = bases[i % 2].clone();
        async move {
            let strategy = ["priority", "fewest_splits", "most_stock"][i % 3];
            let r = client
                .post(format!("{base}/v1/sourcing/reservations"))
                .header("idempotency-key", format!("race-{i}"))
                .json(
                    &json!({"region": "east", "strategy": strategy, "ttl_seconds": 3600,
                              "lines": [{"sku": "LAST", "qty": 1}]}),
                )
                .send()
                .await
                .expect("request");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    }))
    .await;
    let mut held: BTreeMap<String, i64> = BTreeMap::new();
    let (mut won, mut short, mut unavailable, mut replans) = (0, 0, 0, 0);
    for (status, body) in &outcomes {
        match status {
            201 => {
                won += 1;
                replans += body["attempts"].as_i64().unwrap_or(1) - 1;
                for line in body["reservation"]["lines"].as_array().expect("lines") {
                    *held
                        .entry(line["location"].as_str().expect("location").to_string())
                        .or_default() += line["qty"].as_i64().expect("qty");
                }
            }
            409 => {
                assert_eq!(body["code"], "insufficient_stock_in_region", "{body}");
                short += 1;
            }
            503 => unavailable += 1,
            other => panic!("unexpected {other}: {body}"),
        }
    }
    // A winner's request sent again through the other process replays its reservation:
    // the stock is gone, and nothing is held twice.
    let winner = outcomes
        .iter()
        .position(|(status, _)| *status == 201)
        .expect("a winner");
    let strategy = ["priority", "fewest_splits", "most_stock"][winner % 3];
    let r = client
        .post(format!(
            "{}/v1/sourcing/reservations",
            bases[(winner + 1) % 2]
        ))
        .header("idempotency-key", format!("race-{winner}"))
        .json(
            &json!({"region": "east", "strategy": strategy, "ttl_seconds": 3600,
                      "lines": [{"sku": "LAST", "qty": 1}]}),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    let again: Value = r.json().await.expect("json");
    assert_eq!(
        again["reservation"]["reservation_id"],
        outcomes[winner].1["reservation"]["reservation_id"]
    );
    a.stop();
    b.stop();
    let backend = ScyllaBackend::open(&config).await.expect("keyspace");
    let mut reserved_total = 0;
    for (id, on_hand) in UNITS {
        let key = StockKey::new(
            Sku::parse("LAST").expect("sku"),
            LocationId::parse(id).expect("location"),
        );
        let level = backend
            .write
            .stock_level(&key)
            .await
            .expect("read")
            .expect("written");
        assert_eq!(
            level.reserved,
            held.get(id).copied().unwrap_or(0),
            "{id}: reserved = the winners' lines there"
        );
        assert!(level.reserved <= on_hand, "{id}: oversold");
        reserved_total += level.reserved;
    }
    let total: i64 = UNITS.iter().map(|(_, q)| q).sum();
    eprintln!(
        "{RACERS} racers over two processes for {total} units in {} warehouses: {won} won, {short} refused short, {unavailable} unavailable, {replans} re-plans",
        UNITS.len()
    );
    assert_eq!(
        reserved_total, won,
        "every win holds one unit, no unit twice"
    );
    if unavailable == 0 {
        assert_eq!(won, total, "every unit was won");
    }
}

/// Bundle reservations and direct component reservations racing through both processes
/// for more units than there are (30 mugs, 50 tea; 20 racers of each kind)
/// (the bundle defined through one, learnt by the other's reload): no component is held
/// beyond its stock, and each holds exactly what the winners' lines say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_bundles_and_components_on_two_processes_never_oversell() {
    let TwoProcesses {
        a,
        b,
        bases,
        client,
        config,
        dirs: _dirs,
    } = two_processes("bundles").await;
    for (sku, qty) in [("MUG", 30), ("TEA", 50)] {
        let r = client
            .post(format!("{}/v1/adjustments", bases[0]))
            .header("idempotency-key", format!("init-{sku}"))
            .json(
                &json!({"sku": sku, "location": "dc", "set_on_hand": qty, "reason": "cycle_count"}),
            )
            .send()
            .await
            .expect("request");
        assert!(r.status().is_success());
    }
    let r = client
        .put(format!("{}/v1/bundles/GIFT", bases[0]))
        .json(&json!({"components": [{"sku": "MUG", "qty": 1}, {"sku": "TEA", "qty": 2}]}))
        .send()
        .await
        .expect("request");
    assert!(
        r.status().is_success(),
        "{}",
        r.text().await.unwrap_or_default()
    );
    // The other process reloads its bundles every 2 s.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let outcomes = join_all((0..60).map(|i| {
        let client = client.clone();
        let base = bases[i % 2].clone();
        async move {
            let sku = ["GIFT", "MUG", "TEA"][i % 3];
            let r = client
                .post(format!("{base}/v1/reservations"))
                .header("idempotency-key", format!("race-{i}"))
                .json(&json!({"lines": [{"sku": sku, "location": "dc", "qty": 1}], "ttl_seconds": 3600}))
                .send()
                .await
                .expect("request");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    }))
    .await;
    let mut held: BTreeMap<String, i64> = BTreeMap::new();
    let mut bundles_won = 0;
    for (i, (status, body)) in outcomes.iter().enumerate() {
        match status {
            201 => {
                let lines = body["lines"].as_array().expect("lines");
                if i % 3 == 0 {
                    assert_eq!(lines.len(), 2, "a bundle holds both components: {body}");
                    bundles_won += 1;
                }
                for line in lines {
                    *held
                        .entry(line["sku"].as_str().expect("sku").to_string())
                        .or_default() += line["qty"].as_i64().expect("qty");
                }
            }
            409 => assert_eq!(body["code"], "insufficient_stock", "{body}"),
            503 => {}
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(bundles_won > 0, "some bundles won: {outcomes:?}");
    a.stop();
    b.stop();
    let backend = ScyllaBackend::open(&config).await.expect("keyspace");
    for (sku, on_hand) in [("MUG", 30), ("TEA", 50)] {
        let key = StockKey::new(
            Sku::parse(sku).expect("sku"),
            LocationId::parse("dc").expect("location"),
        );
        let level = backend
            .write
            .stock_level(&key)
            .await
            .expect("read")
            .expect("written");
        assert_eq!(level.reserved, held.get(sku).copied().unwrap_or(0), "{sku}");
        assert!(level.reserved <= on_hand, "{sku} oversold");
    }
    eprintln!(
        "bundles and components over two processes: {bundles_won} bundles won, held {held:?}"
    );
}

/// Channels racing through both processes over two warehouses with allocations: a store
/// counter's ring-fence of 3 at `a1`, a marketplace capped at 2 there and 1 at `a2`. The web
/// and the marketplace reserve by region, the counter at its store. No fence or cap is
/// overdrawn, the counter gets its fenced units, and each key's count of each channel's
/// holds equals that channel's winners there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_channels_on_two_processes_never_overdraw_an_allocation() {
    let TwoProcesses {
        a,
        b,
        bases,
        client,
        config,
        dirs: _dirs,
    } = two_processes("allocations").await;
    let send =
        |method: reqwest::Method, base: &str, path: &str, key: Option<String>, body: Value| {
            let mut request = client.request(method, format!("{base}{path}")).json(&body);
            if let Some(key) = key {
                request = request.header("idempotency-key", key);
            }
            request.send()
        };
    for (id, qty) in [("a1", 6), ("a2", 4)] {
        put_warehouse(&client, &bases[0], id, "south").await;
        let body =
            json!({"sku": "FENCED", "location": id, "set_on_hand": qty, "reason": "cycle_count"});
        let r = send(
            reqwest::Method::POST,
            &bases[1],
            "/v1/adjustments",
            Some(format!("init-{id}")),
            body,
        )
        .await
        .expect("request");
        assert!(
            r.status().is_success(),
            "{}",
            r.text().await.unwrap_or_default()
        );
    }
    for (id, locations) in [
        ("counter", vec!["a1"]),
        ("web", vec!["a1", "a2"]),
        ("market", vec!["a1", "a2"]),
    ] {
        let locations: Vec<Value> = locations.iter().map(|l| json!({"location": l})).collect();
        let body = json!({"locations": locations, "strategy": "priority"});
        let r = send(
            reqwest::Method::PUT,
            &bases[0],
            &format!("/v1/channels/{id}"),
            None,
            body,
        )
        .await
        .expect("request");
        assert!(
            r.status().is_success(),
            "{}",
            r.text().await.unwrap_or_default()
        );
    }
    for (n, (location, channel, allocation)) in [
        ("a1", "counter", json!({"ring_fence": 3})),
        ("a1", "market", json!({"cap_units": 2})),
        ("a2", "market", json!({"cap_units": 1})),
    ]
    .into_iter()
    .enumerate()
    {
        let mut body = json!({"sku": "FENCED", "location": location, "channel": channel});
        for (k, v) in allocation.as_object().expect("object") {
            body[k] = v.clone();
        }
        let r = send(
            reqwest::Method::POST,
            &bases[n % 2],
            "/v1/allocations",
            Some(format!("alloc-{n}")),
            body,
        )
        .await
        .expect("request");
        assert!(
            r.status().is_success(),
            "{}",
            r.text().await.unwrap_or_default()
        );
    }
    // Region-level candidates come from the read model: wait until it shows both.
    rows_shown(&client, &bases[0], "FENCED", 2).await;
    let outcomes = join_all((0..45).map(|i| {
        let base = bases[i % 2].clone();
        let channel = ["web", "market", "counter"][i % 3];
        let (path, body) = if channel == "counter" {
            (
                "/v1/reservations",
                json!({"channel": channel, "ttl_seconds": 3600,
                       "lines": [{"sku": "FENCED", "location": "a1", "qty": 1}]}),
            )
        } else {
            (
                "/v1/sourcing/reservations",
                json!({"channel": channel, "region": "south", "ttl_seconds": 3600,
                       "lines": [{"sku": "FENCED", "qty": 1}]}),
            )
        };
        let request = send(
            reqwest::Method::POST,
            &base,
            path,
            Some(format!("race-{i}")),
            body,
        );
        async move {
            let r = request.await.expect("request");
            let status = r.status().as_u16();
            (
                channel,
                status,
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    }))
    .await;
    // (channel, location) -> units won.
    let mut won: BTreeMap<(&str, String), i64> = BTreeMap::new();
    let mut unavailable = 0;
    for (channel, status, body) in &outcomes {
        match status {
            201 => {
                let reservation = if body["reservation"].is_object() {
                    &body["reservation"]
                } else {
                    body
                };
                assert_eq!(reservation["channel"], *channel, "{body}");
                for line in reservation["lines"].as_array().expect("lines") {
                    let location = line["location"].as_str().expect("location").to_string();
                    *won.entry((*channel, location)).or_default() +=
                        line["qty"].as_i64().expect("qty");
                }
            }
            409 => assert!(
                matches!(
                    body["code"].as_str(),
                    Some("insufficient_stock" | "insufficient_stock_in_region")
                ),
                "{body}"
            ),
            503 => unavailable += 1,
            other => panic!("unexpected {other}: {body}"),
        }
    }
    a.stop();
    b.stop();
    let backend = ScyllaBackend::open(&config).await.expect("keyspace");
    let units = |c: &str, l: &str| won.get(&(c, l.to_string())).copied().unwrap_or(0);
    for (location, on_hand) in [("a1", 6), ("a2", 4)] {
        let key = StockKey::new(
            Sku::parse("FENCED").expect("sku"),
            LocationId::parse(location).expect("location"),
        );
        let level = backend
            .write
            .stock_level(&key)
            .await
            .expect("read")
            .expect("written");
        let by_channel: BTreeMap<String, i64> = ["counter", "market", "web"]
            .into_iter()
            .filter(|c| units(c, location) > 0)
            .map(|c| (c.to_string(), units(c, location)))
            .collect();
        let held: BTreeMap<String, i64> = level
            .extras
            .channel_held
            .iter()
            .map(|(c, n)| (c.to_string(), *n))
            .collect();
        assert_eq!(
            held, by_channel,
            "{location}: each channel holds its winners' lines"
        );
        assert_eq!(
            level.reserved,
            by_channel.values().sum::<i64>(),
            "{location}"
        );
        assert!(level.reserved <= on_hand, "{location}: oversold");
    }
    assert!(
        units("market", "a1") <= 2 && units("market", "a2") <= 1,
        "a cap was passed: {won:?}"
    );
    assert!(
        units("web", "a1") + units("market", "a1") <= 3,
        "the counter's fence was taken: {won:?}"
    );
    eprintln!("channels over two processes: {won:?}, {unavailable} unavailable");
    if unavailable == 0 {
        assert!(
            units("counter", "a1") >= 3,
            "the counter did not get its fence: {won:?}"
        );
    }
}
