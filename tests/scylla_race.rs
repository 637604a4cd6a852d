//! Two command-API processes on one keyspace (Cassandra standing in for ScyllaDB), racing
//! on the same SKUs: no lost update, no oversell, and every acknowledged command has
//! exactly one outbox event. Needs `STOCKFLOW_CQL_NODES` (the test command sets it).

use std::collections::BTreeMap;

use futures::future::join_all;
use serde_json::json;
use stockflow_bus::EventLog;
use stockflow_domain::{LocationId, Sku, StockKey};
use stockflow_e2e::metric;
use stockflow_storage::embedded::{SqliteEventLog, WalPolicy};
use stockflow_storage::ports::WriteStore;
use stockflow_storage::scylla::ScyllaBackend;

mod scylla_processes;

use scylla_processes::{TwoProcesses, two_processes};

const SKUS: usize = 3;
const STOCK: i64 = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_racing_on_one_keyspace_lose_nothing_and_never_oversell() {
    let TwoProcesses {
        a,
        b,
        dirs: [dir_a, dir_b],
        bases,
        client,
        config,
    } = two_processes("race").await;
    for s in 0..SKUS {
        let r = client.post(format!("{}/v1/adjustments", bases[s % 2])).header("idempotency-key", format!("init-{s}"))
            .json(&json!({"sku": format!("R{s}"), "location": "dc", "set_on_hand": STOCK, "reason": "cycle_count"}))
            .send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
    // 150 reservations and 60 adjustments (+1), alternating between the processes.
    let requests = (0..210).map(|i| {
        let client = client.clone();
        let base = bases[i % 2].clone();
        async move {
            let s = i % SKUS;
            let (path, body) = if i % 7 == 0 || i % 7 == 3 {
                ("/v1/adjustments", json!({"sku": format!("R{s}"), "location": "dc", "delta": 1, "reason": "receipt"}))
            } else {
                ("/v1/reservations", json!({"lines": [{"sku": format!("R{s}"), "location": "dc", "qty": 1}], "ttl_seconds": 3600}))
            };
            let r = client.post(format!("{base}{path}")).header("idempotency-key", format!("race-{i}"))
                .json(&body).send().await.unwrap();
            (s, path, r.status().as_u16())
        }
    });
    let results = join_all(requests).await;
    let mut reserved: BTreeMap<usize, i64> = BTreeMap::new();
    let mut added: BTreeMap<usize, i64> = BTreeMap::new();
    for (s, path, status) in &results {
        match (*path, *status) {
            ("/v1/reservations", 201) => *reserved.entry(*s).or_default() += 1,
            ("/v1/adjustments", 200) => *added.entry(*s).or_default() += 1,
            (_, 409 | 503) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // A clean stop publishes what each process committed into its own log.
    a.stop();
    b.stop();
    let mut published: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for dir in [&dir_a, &dir_b] {
        let log =
            SqliteEventLog::open(&dir.path().join("log.db"), 4, WalPolicy::default()).unwrap();
        for p in 0..log.partitions() {
            for rec in log
                .fetch(p, 0, usize::MAX, std::time::Duration::ZERO)
                .await
                .unwrap()
            {
                let v: serde_json::Value = serde_json::from_slice(&rec.value).unwrap();
                if v["stream"] == "stock" {
                    published
                        .entry(v["sku"].as_str().unwrap().to_string())
                        .or_default()
                        .push(v["version"].as_u64().unwrap());
                }
            }
        }
    }
    let backend = ScyllaBackend::open(&config).await.unwrap();
    let mut total_reserved = 0;
    for s in 0..SKUS {
        let key = StockKey::new(
            Sku::parse(format!("R{s}")).unwrap(),
            LocationId::parse("dc").unwrap(),
        );
        let level = backend.write.stock_level(&key).await.unwrap().unwrap();
        let (res, add) = (
            reserved.get(&s).copied().unwrap_or(0),
            added.get(&s).copied().unwrap_or(0),
        );
        assert_eq!(
            level.reserved, res,
            "R{s}: reserved equals acknowledged reservations"
        );
        assert_eq!(level.on_hand, STOCK + add, "R{s}: no lost adjustment");
        assert!(level.reserved <= level.on_hand, "R{s}: no oversell");
        // One version per applied change, each published (both publishers read the one
        // outbox, so a version may reach both logs), nothing left in the outbox.
        let expected_changes = 1 + res + add;
        assert_eq!(
            level.version,
            u64::try_from(expected_changes).unwrap(),
            "R{s}"
        );
        let mut versions = published.remove(&format!("R{s}")).unwrap_or_default();
        versions.sort_unstable();
        versions.dedup();
        assert_eq!(
            versions,
            (1..=level.version).collect::<Vec<_>>(),
            "R{s}: every change was published"
        );
        assert!(
            backend
                .write
                .outbox_versions(&key)
                .await
                .unwrap()
                .is_empty(),
            "R{s}: the outbox drained"
        );
        total_reserved += res;
    }
    eprintln!(
        "reserved {total_reserved} units across two processes; adjustments {:?}",
        added
    );
}

/// Two processes on one keyspace under a reservation mix: hundreds of 1-second
/// reservations beside long-lived ones, and multi-line reservations racing for a scarce key
/// whose refused ids are retried (new key, same id) after a restock. At the end every key's
/// `reserved` equals exactly what its active reservations hold, and every reservation is
/// either active or final — none is left half-way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_long_and_multi_line_reservations_leave_exactly_their_holds() {
    let TwoProcesses {
        a,
        b,
        dirs: _dirs,
        bases,
        client,
        config,
    } = two_processes("mix").await;
    let set = |sku: &str, n: i64, key: String| {
        let (client, base) = (client.clone(), bases[0].clone());
        let sku = sku.to_string();
        async move {
            let r = client
                .post(format!("{base}/v1/adjustments"))
                .header("idempotency-key", key)
                .json(&json!({"sku": sku, "location": "dc", "delta": n, "reason": "receipt"}))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        }
    };
    for s in 0..SKUS {
        set(&format!("M{s}"), 500, format!("init-m{s}")).await;
    }
    set("Q", 3, "init-q".into()).await;

    // (id, lines, ttl): 240 one-second, 30 long-lived, 20 two-line against Q (3 units).
    type Planned = (String, Vec<(String, i64)>, u64);
    let mut plan: Vec<Planned> = Vec::new();
    for i in 0..240 {
        plan.push((format!("short-{i}"), vec![(format!("M{}", i % SKUS), 1)], 1));
    }
    for i in 0..30 {
        plan.push((
            format!("long-{i}"),
            vec![(format!("M{}", i % SKUS), 2)],
            3600,
        ));
    }
    for i in 0..20 {
        plan.push((
            format!("multi-{i}"),
            vec![(format!("M{}", i % SKUS), 1), ("Q".to_string(), 1)],
            3600,
        ));
    }
    let reserve = |i: usize, id: String, lines: Vec<(String, i64)>, ttl: u64, key: String| {
        let (client, base) = (client.clone(), bases[i % 2].clone());
        async move {
            let lines: Vec<_> = lines
                .iter()
                .map(|(sku, qty)| json!({"sku": sku, "location": "dc", "qty": qty}))
                .collect();
            let r = client
                .post(format!("{base}/v1/reservations"))
                .header("idempotency-key", key)
                .json(&json!({"reservation_id": id, "lines": lines, "ttl_seconds": ttl}))
                .send()
                .await
                .unwrap();
            (id, r.status().as_u16())
        }
    };
    let first = join_all(plan.iter().enumerate().map(|(i, (id, lines, ttl))| {
        reserve(i, id.clone(), lines.clone(), *ttl, format!("{id}-a"))
    }))
    .await;
    let refused: Vec<String> = first
        .iter()
        .filter(|(_, status)| *status == 409)
        .map(|(id, _)| id.clone())
        .collect();
    for (id, status) in &first {
        assert!(
            *status == 201 || (*status == 409 && id.starts_with("multi-")),
            "{id}: {status}"
        );
    }
    assert!(
        !refused.is_empty(),
        "the scarce key refused some multi-line reservations"
    );
    // Restock, then retry each refused id with a new key.
    set("Q", 100, "restock-q".into()).await;
    let retried = join_all(
        plan.iter()
            .enumerate()
            .filter(|(_, (id, _, _))| refused.contains(id))
            .map(|(i, (id, lines, ttl))| {
                reserve(i + 1, id.clone(), lines.clone(), *ttl, format!("{id}-b"))
            }),
    )
    .await;
    for (id, status) in &retried {
        assert_eq!(
            *status, 201,
            "{id}: a refused id, retried after the restock"
        );
    }

    // Wait for every 1-second reservation to expire, then check every reservation.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut held: BTreeMap<String, i64> = BTreeMap::new();
    loop {
        held.clear();
        let mut unsettled_short = 0;
        for (i, (id, lines, _)) in plan.iter().enumerate() {
            let r = client
                .get(format!("{}/v1/reservations/{id}", bases[i % 2]))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200, "{id} exists");
            let v: serde_json::Value = r.json().await.unwrap();
            let status = v["status"].as_str().unwrap().to_string();
            assert!(
                ["active", "expired"].contains(&status.as_str()),
                "{id} is {status}, never half-way"
            );
            assert_eq!(v["lines"].as_array().unwrap().len(), lines.len(), "{id}");
            if status == "active" {
                if id.starts_with("short-") {
                    unsettled_short += 1;
                }
                for (sku, qty) in lines {
                    *held.entry(sku.clone()).or_default() += qty;
                }
            }
        }
        if unsettled_short == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{unsettled_short} one-second reservations still active after 60 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    // One process expires at a time: the holder of the expiry lease. Stopped, it hands
    // over: a one-second reservation made on the other process still expires.
    let leaders = [
        expiry_leader(&bases[0]).await,
        expiry_leader(&bases[1]).await,
    ];
    assert_eq!(
        leaders.iter().filter(|l| **l).count(),
        1,
        "exactly one process holds the expiry lease: {leaders:?}"
    );
    let (leader, other, other_base) = if leaders[0] {
        (a, b, bases[1].clone())
    } else {
        (b, a, bases[0].clone())
    };
    leader.stop();
    let r = client
        .post(format!("{other_base}/v1/reservations"))
        .header("idempotency-key", "after-handover")
        .json(
            &json!({"reservation_id": "after-handover", "ttl_seconds": 1,
            "lines": [{"sku": "M0", "location": "dc", "qty": 1}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let v: serde_json::Value = client
            .get(format!("{other_base}/v1/reservations/after-handover"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["status"] == "expired" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the remaining process took the expiry lease over: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(expiry_leader(&other_base).await);
    other.stop();
    let backend = ScyllaBackend::open(&config).await.unwrap();
    for sku in (0..SKUS).map(|s| format!("M{s}")).chain(["Q".to_string()]) {
        let key = StockKey::new(
            Sku::parse(sku.clone()).unwrap(),
            LocationId::parse("dc").unwrap(),
        );
        let level = backend.write.stock_level(&key).await.unwrap().unwrap();
        assert_eq!(
            level.reserved,
            held.get(&sku).copied().unwrap_or(0),
            "{sku}: reserved equals what its active reservations hold"
        );
        assert!(level.reserved <= level.on_hand, "{sku}: no oversell");
    }
}

/// Whether the process at `base` holds the expiry lease, by its `/metrics`.
async fn expiry_leader(base: &str) -> bool {
    metric(base, "stockflow_expiry_leader").await == Some(1.0)
}
