//! Safe defaults of the real binary: no role serves without authentication unless told
//! `--insecure-no-auth`, `stockflow dev` runs open only on loopback, and
//! `stockflow dev --auth-dev` with `stockflow token` is the whole development loop.

use std::process::{Command, Stdio};
use std::time::Duration;

use stockflow_e2e::{DevProcess, free_addr, stockflow_bin};

/// Runs `stockflow args` to completion (it must exit within 20 s); returns success and
/// stderr.
fn run(args: &[&str]) -> (bool, String) {
    let mut child = Command::new(stockflow_bin())
        .args(args)
        .env_remove("STOCKFLOW_INSECURE_NO_AUTH")
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("stockflow runs");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("stockflow {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn roles_refuse_to_serve_without_authentication() {
    for role in [
        "command-api",
        "query-api",
        "publisher",
        "projector",
        "webhooks",
    ] {
        let addr = free_addr().to_string();
        let (ok, stderr) = run(&[
            role,
            "--listen",
            &addr,
            "--scylla-nodes",
            "127.0.0.1:1",
            "--bus",
            "kafka",
            "--kafka-brokers",
            "127.0.0.1:1",
        ]);
        assert!(!ok, "{role} started without authentication");
        assert!(
            stderr.contains("without authentication") && stderr.contains("--insecure-no-auth"),
            "{role} says why and how: {stderr}"
        );
    }
}

#[test]
fn dev_runs_open_only_on_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, stderr) = run(&[
        "dev",
        "--data-dir",
        &dir.path().display().to_string(),
        "--listen",
        "0.0.0.0:0",
    ]);
    assert!(!ok, "dev served every interface without authentication");
    assert!(stderr.contains("without authentication"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_key_and_stockflow_token_are_the_development_loop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = DevProcess::start_with(dir.path(), free_addr(), &["--auth-dev"]).await;
    let token = |scopes: &str| {
        let out = Command::new(stockflow_bin())
            .args(["token", "--data-dir"])
            .arg(dir.path())
            .args(["--scopes", scopes, "--subject", "laptop"])
            .output()
            .expect("stockflow token runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let client = reqwest::Client::new();
    let url = format!("http://{}/v1/locations/s1", dev.addr);
    let body = serde_json::json!({"region": "north", "kind": "store", "name": "S1"});
    let without = client.put(&url).json(&body).send().await.expect("request");
    assert_eq!(without.status(), reqwest::StatusCode::UNAUTHORIZED);
    let reader = client
        .put(&url)
        .bearer_auth(token("stock:read"))
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(reader.status(), reqwest::StatusCode::FORBIDDEN);
    let writer = client
        .put(&url)
        .bearer_auth(token("catalog:write"))
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(writer.status(), reqwest::StatusCode::OK);
    dev.stop();
}
