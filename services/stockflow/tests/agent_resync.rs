//! A store agent whose feed cursor the region no longer serves: it was away longer than the
//! change feed's retention. On its return the region answers 410, the agent loads the
//! snapshot, keeps the command it took while away, and ends with the region's stock plus
//! that command, which the region applies once.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Platform;
use serde_json::{Value, json};
use stockflow::agent::RunningAgent;
use stockflow::app::AppConfig;

async fn agent(region_url: &str, data_dir: &Path, token_file: &Path) -> RunningAgent {
    common::start_agent(common::agent_config(
        region_url,
        data_dir,
        Some(token_file.to_path_buf()),
    ))
    .await
}

async fn get(url: String) -> Value {
    reqwest::get(url)
        .await
        .expect("answers")
        .json()
        .await
        .unwrap_or(Value::Null)
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_cursor_reloads_the_snapshot_and_keeps_the_commands_not_yet_sent() {
    let mut config = AppConfig::new(PathBuf::new());
    config.retention.change_feed = Duration::from_secs(1);
    config.retention.every = Duration::from_millis(200);
    let p = Platform::start_config(config).await;
    p.location("l1", "north").await;
    p.stock("A", "l1", 10).await;
    p.eventually_stock("A", "l1", |v| v["version"] == 1).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    common::write_agent_token(&p, &token_file);
    let data = dir.path().join("agent");

    // Connected: the agent's view follows the region, its cursor at version 1.
    let first = agent(&p.base, &data, &token_file).await;
    let at = |a: &RunningAgent| format!("http://{}", a.addr);
    let base = at(&first);
    eventually("the view has the region's stock", async || {
        get(format!("{base}/v1/stock/A/l1")).await["on_hand"] == 10
    })
    .await;
    first.stop().await.expect("stops");

    // Away (the region unreachable): the POS reserves 3, which waits in the queue.
    let away = agent("http://127.0.0.1:1", &data, &token_file).await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/reservations", at(&away)))
        .header("idempotency-key", "pos-order-1")
        .json(&json!({"reservation_id": "pickup-1", "lines": [{"sku": "A", "location": "l1", "qty": 3}], "ttl_seconds": 3600}))
        .send()
        .await
        .expect("the agent answers");
    assert!(r.status().is_success(), "{}", r.status());
    let status = get(format!("{}/agent/status", at(&away))).await;
    assert_eq!(status["queue"]["pending"], 1, "{status}");
    away.stop().await.expect("stops");

    // Meanwhile the region moves on, and retention removes what the agent's cursor needs.
    p.stock("A", "l1", 20).await;
    p.eventually_stock("A", "l1", |v| v["version"] == 2).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, body) = common::problem(p.get("/v1/changes?locations=l1&after=e:1").await).await;
    assert_eq!(status, reqwest::StatusCode::GONE, "{body}");

    // Back: 410, the snapshot, and the reservation sent once.
    let back = agent(&p.base, &data, &token_file).await;
    let base = at(&back);
    eventually("the agent resynced from the snapshot", async || {
        get(format!("{base}/agent/status")).await["feed"]["resyncs"]
            .as_u64()
            .is_some_and(|n| n >= 1)
    })
    .await;
    eventually("the region holds the reservation", async || {
        let row: Value = p
            .get("/v1/stock/A/l1")
            .await
            .json()
            .await
            .unwrap_or(Value::Null);
        row["reserved"] == 3 && row["on_hand"] == 20
    })
    .await;
    eventually(
        "the view is the region's stock and the reservation",
        async || {
            let v = get(format!("{base}/v1/stock/A/l1")).await;
            v["on_hand"] == 20 && v["reserved"] == 3
        },
    )
    .await;
    let status = get(format!("{base}/agent/status")).await;
    assert_eq!(status["queue"]["pending"], 0, "{status}");
    assert_eq!(status["queue"]["quarantined"], 0, "{status}");
    let reservation: Value = p
        .get("/v1/reservations/pickup-1")
        .await
        .json()
        .await
        .expect("the reservation");
    assert_eq!(reservation["status"], "active", "{reservation}");
    back.stop().await.expect("stops");
}
