//! The bus goes away mid-run and comes back: `/readyz` turns 503 naming the bus while the
//! Kafka broker does not answer, commands are still accepted (the outbox holds them), and
//! once the broker answers again readiness returns and every change reaches the read
//! models. The outage is the test command's broker frozen with SIGSTOP, so no other test
//! binary may run meanwhile (cargo runs test binaries one at a time).
//!
//! Needs `STOCKFLOW_KAFKA_BROKERS` and `STOCKFLOW_KAFKA_PID` (the test command sets both).

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stockflow_e2e::{DevProcess, put_warehouse, required};

/// Freezes the broker; thaws it when dropped, even if the test fails.
struct Frozen(String);

impl Frozen {
    fn broker(pid: &str) -> Self {
        signal(pid, "-STOP");
        Self(pid.to_string())
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(&self.0, "-CONT");
    }
}

fn signal(pid: &str, sig: &str) {
    let status = Command::new("kill")
        .args([sig, pid])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {sig} {pid}");
}

async fn ready(client: &reqwest::Client, base: &str) -> (u16, String) {
    match client.get(format!("{base}/readyz")).send().await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

async fn adjust(client: &reqwest::Client, base: &str, key: &str, body: Value) {
    let r = client
        .post(format!("{base}/v1/adjustments"))
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .expect("the platform answers");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_bus_and_nothing_is_lost_across_an_outage() {
    let brokers = required("STOCKFLOW_KAFKA_BROKERS");
    let broker_pid = required("STOCKFLOW_KAFKA_PID");
    let topic = format!("outage-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let dev = DevProcess::start_on_kafka(dir.path(), &brokers, &topic).await;
    let base = format!("http://{}", dev.addr);
    let client = reqwest::Client::new();
    put_warehouse(&client, &base, "dc", "north").await;
    for s in 0..4 {
        adjust(&client, &base, &format!("init-{s}"), json!({"sku": format!("O{s}"), "location": "dc", "set_on_hand": 10, "reason": "cycle_count"})).await;
    }
    assert_eq!(ready(&client, &base).await.0, 200);

    let frozen = Frozen::broker(&broker_pid);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = ready(&client, &base).await;
        if status == 503 {
            assert!(body.contains("bus"), "readiness names the bus: {body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed {status} with the broker frozen"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The write side does not depend on the bus: commands are accepted into the outbox.
    for i in 0..20 {
        adjust(&client, &base, &format!("outage-{i}"), json!({"sku": format!("O{}", i % 4), "location": "dc", "delta": 1, "reason": "receipt"})).await;
    }
    drop(frozen);

    let deadline = Instant::now() + Duration::from_secs(60);
    while ready(&client, &base).await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "/readyz did not recover after the broker came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for s in 0..4 {
        loop {
            let body: Value = client
                .get(format!("{base}/v1/stock/O{s}/dc"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap_or(Value::Null);
            if body["on_hand"] == 15 && body["version"] == 6 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "O{s}: the read model stopped at {body}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    dev.stop();
}
