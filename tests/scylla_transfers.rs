//! Transfers on ScyllaDB (Cassandra standing in) across two command-API processes, one of
//! them killed with `kill -9` while it ships: once expiry has finished or rolled back
//! whatever the dead process left half-way, every unit is at its source, in transit or
//! sold, exactly as the transfers' statuses say; and every transfer the dead process never
//! shipped ships afterwards. Needs `STOCKFLOW_CQL_NODES` (the test command sets it).

// The helper below is the test's own assertion.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::json;
use stockflow_domain::{LocationId, Sku, StockKey, TransferId, TransferStatus};
use stockflow_e2e::put_warehouse;
use stockflow_storage::ports::WriteStore;
use stockflow_storage::scylla::{ScyllaBackend, connect};

mod scylla_processes;

use scylla_processes::{TwoProcesses, two_processes};

const TRANSFERS: usize = 24;
const STOCK: i64 = 60;
/// Units of each SKU per transfer.
const LINES: [(&str, i64); 2] = [("T0", 2), ("T1", 1)];

/// Where every unit of each SKU is, and whether that matches the transfers' statuses.
async fn accounted(
    backend: &ScyllaBackend,
    sold: &[i64; 2],
) -> (bool, String, Vec<TransferStatus>) {
    let mut statuses = Vec::new();
    for i in 0..TRANSFERS {
        let id = TransferId::parse(format!("kt-{i}")).unwrap();
        let t = backend.write.transfer(&id).await.unwrap().unwrap();
        statuses.push(t.status);
    }
    let shipped = statuses
        .iter()
        .filter(|s| **s == TransferStatus::InTransit)
        .count() as i64;
    let mut ok = true;
    let mut report = String::new();
    for (n, (sku, qty)) in LINES.iter().enumerate() {
        let level = |l: &str| {
            let key = StockKey::new(Sku::parse(*sku).unwrap(), LocationId::parse(l).unwrap());
            async move { backend.write.stock_level(&key).await.unwrap() }
        };
        let src = level("dc").await.map_or(0, |l| l.on_hand);
        let dst = level("st").await.map_or(0, |l| l.in_transit());
        let want_src = STOCK - sold[n] - shipped * qty;
        ok &= src == want_src && dst == shipped * qty && src >= 0;
        report += &format!(
            "{sku}: source {src} (want {want_src}), in transit {dst} (want {}); ",
            shipped * qty
        );
    }
    (ok, report, statuses)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_while_shipping_leaves_no_unit_lost_or_doubled() {
    let TwoProcesses {
        a,
        b,
        dirs: _dirs,
        bases: [base_a, base_b],
        client,
        config,
    } = two_processes("kill_transfers").await;
    put_warehouse(&client, &base_b, "st", "north").await;
    for (sku, _) in LINES {
        let r = client.post(format!("{base_b}/v1/adjustments")).header("idempotency-key", format!("init-{sku}"))
            .json(&json!({"sku": sku, "location": "dc", "set_on_hand": STOCK, "reason": "cycle_count"}))
            .send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
    let lines: Vec<_> = LINES
        .iter()
        .map(|(sku, qty)| json!({"sku": sku, "qty": qty}))
        .collect();
    for i in 0..TRANSFERS {
        let r = client.post(format!("{base_b}/v1/transfers")).header("idempotency-key", format!("create-{i}"))
            .json(&json!({"transfer_id": format!("kt-{i}"), "from": "dc", "to": "st", "lines": lines, "expected_arrival": "2026-12-24"}))
            .send().await.unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }

    // Every transfer shipped from the process about to die, half of them raced from the
    // other one; killed once its shipments are under way and some sources are out (a
    // header `shipping` or `delivering`, T0 out of its source for one transfer or more), or
    // once it answered them all.
    let ship = |base: String, i: usize, key: String| {
        let client = client.clone();
        async move {
            client
                .post(format!("{base}/v1/transfers/kt-{i}/ship"))
                .header("idempotency-key", key)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };
    let doomed = tokio::spawn(join_all(
        (0..TRANSFERS).map(|i| ship(base_a.clone(), i, format!("ship-a-{i}"))),
    ));
    let raced = (0..TRANSFERS)
        .step_by(2)
        .map(|i| ship(base_b.clone(), i, format!("ship-b-{i}")));
    let backend = ScyllaBackend::open(&config).await.unwrap();
    let session = connect(&config).await.unwrap();
    let under_way = format!("SELECT state FROM {}.transfers", config.keyspace);
    let busy_now = || async {
        let rows = session.query_unpaged(under_way.as_str(), ()).await.unwrap();
        let rows = rows.into_rows_result().unwrap();
        rows.rows::<(Option<String>,)>()
            .unwrap()
            .filter_map(Result::ok)
            .filter(|(s,)| {
                matches!(
                    s.as_deref(),
                    Some("shipping" | "delivering" | "unshipping" | "receiving")
                )
            })
            .count()
    };
    let t0_source = || async {
        let key = StockKey::new(Sku::parse("T0").unwrap(), LocationId::parse("dc").unwrap());
        backend
            .write
            .stock_level(&key)
            .await
            .unwrap()
            .map_or(0, |l| l.on_hand)
    };
    let watch = async {
        let started = Instant::now();
        loop {
            let busy = busy_now().await;
            let out = STOCK - t0_source().await;
            if (busy >= 1 && out >= 2)
                || doomed.is_finished()
                || started.elapsed() > Duration::from_secs(20)
            {
                return (busy, out / 2);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let (raced, (busy_at_kill, out_at_kill)) = tokio::join!(join_all(raced), async {
        let seen = watch.await;
        a.kill_hard();
        seen
    });
    // Sales at the source on the live process while expiry recovers.
    let sales = join_all((0..20).map(|n| {
        let client = client.clone();
        let base = base_b.clone();
        async move {
            let sku = LINES[n % 2].0;
            let r = client
                .post(format!("{base}/v1/adjustments"))
                .header("idempotency-key", format!("sale-{n}"))
                .json(&json!({"sku": sku, "location": "dc", "delta": -1, "reason": "sale"}))
                .send()
                .await
                .unwrap();
            (n % 2, r.status().as_u16())
        }
    }))
    .await;
    let mut sold = [0i64; 2];
    for (n, status) in sales {
        match status {
            200 => sold[n] += 1,
            409 | 503 => {}
            other => panic!("sale answered {other}"),
        }
    }
    for status in raced {
        let status = status.expect("the live process answers");
        assert!(matches!(status, 200 | 409 | 503), "ship answered {status}");
    }
    let answered_by_dead = doomed.await.unwrap().iter().filter(|r| r.is_ok()).count();

    // Expiry on the live process finishes or rolls back what the dead one left half-way,
    // within its recovery window (30 s) and a round: every header at rest, every unit
    // where the statuses say.
    let started = Instant::now();
    let (first_ok, first_report, _) = accounted(&backend, &sold).await;
    let report = loop {
        let (ok, report, _) = accounted(&backend, &sold).await;
        if ok && busy_now().await == 0 {
            break report;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "units still unaccounted for after 120 s: {report}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "{answered_by_dead}/{TRANSFERS} ships answered before kill -9, {busy_at_kill} under way, {out_at_kill} transfers' T0 out of the source; accounted at once: {first_ok} ({first_report}); after {:?}: {report}",
        started.elapsed()
    );

    // Whatever is still `created` ships now, whole.
    let (_, _, statuses) = accounted(&backend, &sold).await;
    for (i, status) in statuses.iter().enumerate() {
        if *status == TransferStatus::Created {
            let r = ship(base_b.clone(), i, format!("ship-again-{i}"))
                .await
                .unwrap();
            assert!(matches!(r, 200 | 409), "kt-{i} answered {r}");
        }
    }
    let (ok, report, statuses) = accounted(&backend, &sold).await;
    assert!(ok, "{report}");
    let shipped = statuses
        .iter()
        .filter(|s| **s == TransferStatus::InTransit)
        .count();
    // 24 × 2 + 20 sales fit in 60 units of T0 only if the sales leave room: every transfer
    // that fits ships.
    let t0_left = STOCK - sold[0] - 2 * shipped as i64;
    assert!(
        shipped == TRANSFERS || t0_left < 2,
        "{shipped} shipped with {t0_left} of T0 left"
    );
    b.stop();
}
