//! A race through real HTTP on the embedded backend: many ships, cancels and receipts of
//! the same transfers at once with till sales draining the source. Each transfer ships at
//! most once (never after a cancel), nothing goes negative under `deny`, and on-hand plus
//! in-transit over both keys is what was there less what was sold.

mod common;

use common::{Platform, answered};
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// What one racer asked and what it was answered.
async fn outcome(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.expect("json");
    (
        status,
        body["code"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_ships_cancels_receipts_and_sales_conserve_every_unit() {
    const TRANSFERS: usize = 12;
    const QTY: i64 = 5;
    const STOCK: i64 = 50;
    const SALES: usize = 40;
    let p = Platform::start().await;
    p.location("src", "north").await;
    p.location("dst", "north").await;
    p.stock("RACE", "src", STOCK).await;
    p.stock("RACE", "dst", 0).await;
    for i in 0..TRANSFERS {
        let lines = json!([{"sku": "RACE", "qty": QTY}]);
        answered(
            p.create_transfer(&format!("tr-{i}"), "src", "dst", lines)
                .await,
            StatusCode::CREATED,
        )
        .await;
    }
    // Per transfer: 4 ships and 4 receipts (2+2+1+1 units: at most 5 fit), and 2 cancels
    // of every other one, all at once with the sales; each request under its own key.
    let ships = join_all(
        (0..TRANSFERS)
            .flat_map(|i| (0..4).map(move |n| (i, n)))
            .map(|(i, n)| {
                let p = &p;
                async move {
                    let r = p
                        .on_transfer(&format!("tr-{i}"), "ship", &format!("ship-{i}-{n}"))
                        .await;
                    (i, outcome(r).await)
                }
            }),
    );
    let cancels = join_all(
        (0..TRANSFERS)
            .filter(|i| i % 2 == 0)
            .flat_map(|i| (0..2).map(move |n| (i, n)))
            .map(|(i, n)| {
                let p = &p;
                async move {
                    (
                        i,
                        outcome(
                            p.on_transfer(&format!("tr-{i}"), "cancel", &format!("cancel-{i}-{n}"))
                                .await,
                        )
                        .await,
                    )
                }
            }),
    );
    let receipts = join_all(
        (0..TRANSFERS)
            .flat_map(|i| {
                [2, 2, 1, 1]
                    .into_iter()
                    .enumerate()
                    .map(move |(n, q)| (i, n, q))
            })
            .map(|(i, n, q)| {
                let p = &p;
                async move {
                    let body = json!({"lines": [{"sku": "RACE", "received": q}]});
                    let r = p
                        .receive_transfer(&format!("tr-{i}"), &format!("recv-{i}-{n}"), body)
                        .await;
                    (i, q, outcome(r).await)
                }
            }),
    );
    let sales = join_all((0..SALES).map(|n| {
        let p = &p;
        async move {
            let body = json!({"sku": "RACE", "location": "src", "delta": -1, "reason": "sale"});
            outcome(p.post("/v1/adjustments", format!("sale-{n}"), body).await).await
        }
    }));
    let (ships, cancels, receipts, sales) = tokio::join!(ships, cancels, receipts, sales);

    let mut shipped = [0i64; TRANSFERS];
    for (i, (status, code)) in &ships {
        match (status, code.as_str()) {
            (200, _) => shipped[*i] += 1,
            (409, "transfer_status_conflict" | "insufficient_stock") => {}
            other => panic!("ship answered {other:?}"),
        }
    }
    let mut cancelled = [0i64; TRANSFERS];
    for (i, (status, code)) in &cancels {
        match (status, code.as_str()) {
            (200, _) => cancelled[*i] += 1,
            (409, "transfer_status_conflict") => {}
            other => panic!("cancel answered {other:?}"),
        }
    }
    let mut received = [0i64; TRANSFERS];
    for (i, q, (status, code)) in &receipts {
        match (status, code.as_str()) {
            (200, _) => received[*i] += q,
            (409, "transfer_status_conflict" | "transfer_quantity_exceeded") => {}
            other => panic!("receive answered {other:?}"),
        }
    }
    let sold = sales.iter().filter(|(s, _)| *s == 200).count() as i64;
    assert!(
        sales
            .iter()
            .all(|(s, c)| *s == 200 || (*s == 409 && c == "insufficient_stock")),
        "{sales:?}"
    );

    let mut in_transit = 0;
    for i in 0..TRANSFERS {
        // Each transfer shipped at most once, or was cancelled (once), never both.
        assert!(
            shipped[i] <= 1 && cancelled[i] <= 1 && shipped[i] + cancelled[i] <= 1,
            "tr-{i}: {} ships, {} cancels",
            shipped[i],
            cancelled[i]
        );
        assert!(
            received[i] <= QTY && (shipped[i] == 1 || received[i] == 0),
            "tr-{i}"
        );
        let t = answered(
            p.get(&format!("/v1/transfers/tr-{i}")).await,
            StatusCode::OK,
        )
        .await;
        let status = t["status"].as_str().unwrap_or_default();
        let expected = match (shipped[i], cancelled[i], received[i]) {
            (1, _, QTY) => "received",
            (1, _, _) => "in_transit",
            (_, 1, _) => "cancelled",
            _ => "created",
        };
        assert_eq!(status, expected, "tr-{i}: {t}");
        assert_eq!(t["lines"][0]["received"], received[i], "tr-{i}");
        in_transit += shipped[i] * QTY - received[i];
    }
    let src = p.write_level("RACE", "src").await;
    let dst = p.write_level("RACE", "dst").await;
    let shipped_units: i64 = shipped.iter().sum::<i64>() * QTY;
    let received_units: i64 = received.iter().sum();
    // Nothing negative under deny, and every unit where the answers say it went.
    assert!(src.on_hand >= 0 && dst.on_hand >= 0 && dst.in_transit() >= 0);
    assert_eq!(src.on_hand, STOCK - sold - shipped_units);
    assert_eq!(dst.on_hand, received_units);
    assert_eq!(dst.in_transit(), in_transit);
    assert_eq!(
        src.on_hand + src.in_transit() + dst.on_hand + dst.in_transit(),
        STOCK - sold
    );
    // One version per applied change: the set, each sale and each ship at the source.
    assert_eq!(
        src.version,
        1 + sold as u64 + shipped.iter().sum::<i64>() as u64
    );
    // The read model agrees once projected.
    let row = p
        .eventually_stock("RACE", "dst", |v| v["version"] == dst.version)
        .await;
    assert_eq!(
        (&row["on_hand"], &row["in_transit"]),
        (&json!(dst.on_hand), &json!(in_transit))
    );
    eprintln!(
        "race: {} ships, {} cancels, {} receipt units, {sold} sales of {SALES}",
        shipped.iter().sum::<i64>(),
        cancelled.iter().sum::<i64>(),
        received_units
    );
}
