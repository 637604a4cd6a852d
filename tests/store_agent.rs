//! The store agent against a real region (`stockflow dev --auth-dev`), both as processes:
//! a simulated POS sells, returns and counts through the agent while the region is down
//! for 30 s and the agent is SIGKILLed twice mid-forwarding; answers are dropped after the
//! region committed them (a proxy cuts connections); a command the region refuses for good
//! waits in the quarantine while the rest flows; a sale that oversells is applied and
//! flagged. Afterwards every command was applied exactly once, in order per key, and the
//! agent's view equals the region's.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stockflow_e2e::{DevProcess, free_addr, stockflow_bin, stockflow_output};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SKUS: usize = 20;
const LOCATIONS: [&str; 2] = ["l1", "l2"];
const START_ON_HAND: i64 = 40;

/// The region: `stockflow dev` requiring tokens from its development key.
async fn region(dir: &Path, addr: SocketAddr) -> DevProcess {
    DevProcess::start_with(dir, addr, &["--auth-dev"]).await
}

fn token(region_dir: &Path, subject: &str, scopes: &str, locations: Option<&str>) -> String {
    let dir = region_dir.to_string_lossy().to_string();
    let mut args = vec![
        "token",
        "--data-dir",
        &dir,
        "--subject",
        subject,
        "--scopes",
        scopes,
        "--ttl",
        "2h",
    ];
    // A store's token names its locations and its store (the agent's --store-id, which is
    // the subject here).
    if let Some(l) = locations {
        args.extend(["--locations", l, "--store-id", subject]);
    }
    stockflow_output(&args).trim().to_string()
}

/// A running `stockflow store-agent`.
struct Agent {
    child: Child,
    addr: SocketAddr,
}

impl Agent {
    async fn start(region_url: &str, data_dir: &Path, token_file: &Path, locations: &str) -> Self {
        Self::start_at(region_url, data_dir, token_file, locations, free_addr()).await
    }

    async fn start_at(
        region_url: &str,
        data_dir: &Path,
        token_file: &Path,
        locations: &str,
        addr: SocketAddr,
    ) -> Self {
        let child = Command::new(stockflow_bin())
            .args([
                "store-agent",
                "--store-id",
                "store-7",
                "--region-url",
                region_url,
            ])
            .args(["--locations", locations, "--listen", &addr.to_string()])
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--token-file")
            .arg(token_file)
            .args(["--request-timeout-seconds", "3"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the agent starts");
        let agent = Self { child, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        while reqwest::get(agent.url("/readyz")).await.is_err() {
            assert!(Instant::now() < deadline, "the agent did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        agent
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn kill_hard(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    async fn status(&self) -> Value {
        reqwest::get(self.url("/agent/status"))
            .await
            .expect("status")
            .json()
            .await
            .expect("json")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy to `upstream` that, on every `drop_every`-th connection, forwards the first
/// request and reads the region's answer but closes the connection instead of passing it
/// on: a timeout after the region committed.
async fn lossy_proxy(upstream: SocketAddr, drop_every: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let dropped = Arc::new(AtomicUsize::new(0));
    let counter = dropped.clone();
    tokio::spawn(async move {
        let mut n = 0usize;
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            n += 1;
            let lose = n.is_multiple_of(drop_every);
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(mut server) = TcpStream::connect(upstream).await else {
                    return;
                };
                if lose {
                    let mut buf = vec![0u8; 64 * 1024];
                    let Ok(n) = client.read(&mut buf).await else {
                        return;
                    };
                    if server.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                    // Wait for (part of) the answer: the region has committed by then.
                    let _ = server.read(&mut buf).await;
                    counter.fetch_add(1, Ordering::Relaxed);
                    return; // both sockets close: the agent never sees the answer
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    (addr, dropped)
}

/// One command the POS made, as it sent it.
#[derive(Debug, Clone)]
struct PosCommand {
    key: String,
    sku: String,
    location: String,
    body: Value,
}

/// Sends `command` to the agent until it answers (the agent may be restarting).
async fn pos_send(client: &reqwest::Client, agent: &SocketAddr, command: &PosCommand) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sent = client
            .post(format!("http://{agent}/v1/adjustments"))
            .header("idempotency-key", &command.key)
            .json(&command.body)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if let Ok(r) = sent {
            let status = r.status();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            assert!(
                status.is_success(),
                "the agent refused {command:?}: {status} {body}"
            );
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "the agent never answered {command:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sku(i: usize) -> String {
    format!("SKU-{i:02}")
}

/// Every movement of `(sku, location)` at the region, oldest first.
async fn movements(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    sku: &str,
    location: &str,
) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0u64;
    loop {
        let page: Value = client
            .get(format!("{base}/v1/movements"))
            .bearer_auth(token)
            .query(&[
                ("sku", sku),
                ("location", location),
                ("after", &after.to_string()),
                ("limit", "500"),
            ])
            .send()
            .await
            .expect("movements")
            .json()
            .await
            .expect("json");
        let rows = page["movements"].as_array().cloned().unwrap_or_default();
        out.extend(rows);
        match page["next_after"].as_u64() {
            Some(next) => after = next,
            None => return out,
        }
    }
}

/// Reads the agent's queue (its own SQLite file, read-only while it runs): per key, the
/// Idempotency-Keys it forwards, in `seq` order.
fn agent_order(data_dir: &Path) -> BTreeMap<(String, String), Vec<String>> {
    let conn = rusqlite::Connection::open_with_flags(
        data_dir.join("agent.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the agent's store");
    let mut stmt = conn
        .prepare(
            "SELECT k.sku, k.location, c.command_id FROM commands c
             JOIN command_keys k ON k.seq = c.seq WHERE c.path = '/v1/adjustments' ORDER BY c.seq",
        )
        .expect("prepare");
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .expect("query");
    for row in rows {
        let (sku, location, id) = row.expect("row");
        out.entry((sku, location)).or_default().push(id);
    }
    out
}

async fn eventually(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_sales_reach_the_region_exactly_once_in_order() {
    let region_dir = tempfile::tempdir().expect("tempdir");
    let agent_dir = tempfile::tempdir().expect("tempdir");
    let region_addr = free_addr();
    let base = format!("http://{region_addr}");
    let mut server = Some(region(region_dir.path(), region_addr).await);
    let admin = token(
        region_dir.path(),
        "erp",
        "stock:read,stock:adjust,catalog:write",
        None,
    );
    let client = reqwest::Client::new();
    for l in LOCATIONS {
        let r = client
            .put(format!("{base}/v1/locations/{l}"))
            .bearer_auth(&admin)
            .json(&json!({"region": "north", "kind": "store", "name": l}))
            .send()
            .await
            .expect("location");
        assert!(r.status().is_success());
    }
    for i in 0..SKUS {
        for l in LOCATIONS {
            let r = client
                .post(format!("{base}/v1/adjustments"))
                .bearer_auth(&admin)
                .header("idempotency-key", format!("stock-{i}-{l}"))
                .json(&json!({"sku": sku(i), "location": l, "set_on_hand": START_ON_HAND, "reason": "receipt"}))
                .send()
                .await
                .expect("stock");
            assert!(r.status().is_success());
        }
    }
    let store_token = token(
        region_dir.path(),
        "store-7",
        "stock:read,stock:adjust,stock:reserve",
        Some("l1,l2"),
    );
    let token_file = agent_dir.path().join("token");
    std::fs::write(&token_file, &store_token).expect("token file");
    let data = agent_dir.path().join("data");
    // Every third connection loses its answer after the region committed.
    let (proxy, dropped) = lossy_proxy(region_addr, 3).await;
    let proxy_url = format!("http://{proxy}");
    let agent_addr = free_addr();
    let mut agent =
        Some(Agent::start_at(&proxy_url, &data, &token_file, "l1,l2", agent_addr).await);

    // The POS: 500 sales over 20 SKUs at 2 locations, a return every 25th command, a
    // count in the middle.
    let mut commands = Vec::new();
    for n in 0..540usize {
        let (s, l) = (sku(n % SKUS), LOCATIONS[(n / SKUS) % 2].to_string());
        let body = if n == 270 {
            json!({"sku": s, "location": l, "set_on_hand": 25, "reason": "count"})
        } else if n % 25 == 24 {
            json!({"sku": s, "location": l, "delta": 1, "reason": "return"})
        } else {
            json!({"sku": s, "location": l, "delta": -1, "reason": "sale"})
        };
        commands.push(PosCommand {
            key: format!("till-1-{n}"),
            sku: s,
            location: l,
            body,
        });
    }
    let sales: i64 = commands
        .iter()
        .filter(|c| c.body["reason"] == "sale")
        .count() as i64;
    assert!(sales >= 500, "{sales} sales");
    let pos = reqwest::Client::new();
    let mut region_stopped_at = None;
    let mut region_back_at = None;
    for (n, command) in commands.iter().enumerate() {
        pos_send(&pos, &agent_addr, command).await;
        match n {
            100 => {
                // The region goes away: every till keeps selling.
                server.take().expect("running").stop();
                region_stopped_at = Some(Instant::now());
            }
            200 | 350 => {
                // The agent dies mid-forwarding (SIGKILL) and is started again.
                agent.take().expect("running").kill_hard();
                agent = Some(
                    Agent::start_at(&proxy_url, &data, &token_file, "l1,l2", agent_addr).await,
                );
            }
            _ => {}
        }
        if n > 100
            && region_back_at.is_none()
            && region_stopped_at.is_some_and(|t| t.elapsed() >= Duration::from_secs(30))
        {
            server = Some(region(region_dir.path(), region_addr).await);
            region_back_at = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if region_back_at.is_none() {
        let wait = Duration::from_secs(30)
            .saturating_sub(region_stopped_at.map_or(Duration::ZERO, |t| t.elapsed()));
        tokio::time::sleep(wait).await;
        server = Some(region(region_dir.path(), region_addr).await);
        region_back_at = Some(Instant::now());
    }
    let agent = agent.expect("running");
    let back = region_back_at.expect("the region came back");
    eventually(
        "the agent's queue drains",
        Duration::from_secs(120),
        async || agent.status().await["queue"]["pending"] == 0,
    )
    .await;
    let converged_after = back.elapsed();

    // Exactly once and in order, per key: the region's movements carry the agent's
    // Idempotency-Keys in the agent's order.
    let order = agent_order(&data);
    let mut applied = 0usize;
    let mut duplicates = 0usize;
    for i in 0..SKUS {
        for l in LOCATIONS {
            let key = (sku(i), l.to_string());
            let forwarded: Vec<Value> = movements(&client, &base, &admin, &key.0, &key.1)
                .await
                .into_iter()
                .filter(|m| {
                    m["idempotency_key"]
                        .as_str()
                        .is_some_and(|k| !k.starts_with("stock-"))
                })
                .collect();
            // Each names the store its token stands for and the agent's sequence number,
            // which grows in the agent's order.
            let seqs: Vec<u64> = forwarded
                .iter()
                .map(|m| {
                    assert_eq!(m["actor"]["store_id"], "store-7", "{m}");
                    m["actor"]["store_seq"].as_u64().expect("a store_seq")
                })
                .collect();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{key:?}: {seqs:?}");
            let moved: Vec<String> = forwarded
                .iter()
                .filter_map(|m| m["idempotency_key"].as_str().map(str::to_string))
                .collect();
            let unique: BTreeSet<&String> = moved.iter().collect();
            duplicates += moved.len() - unique.len();
            applied += moved.len();
            let expected = order.get(&key).cloned().unwrap_or_default();
            assert_eq!(
                moved, expected,
                "{key:?}: the region applied the agent's commands once each, in its order"
            );
        }
    }
    assert_eq!(duplicates, 0);
    assert_eq!(
        applied,
        commands.len(),
        "every POS command reached the region"
    );

    // The levels: what the POS did, in its order.
    let mut expected: BTreeMap<(String, String), i64> = BTreeMap::new();
    for c in &commands {
        let level = expected
            .entry((c.sku.clone(), c.location.clone()))
            .or_insert(START_ON_HAND);
        if let Some(n) = c.body["set_on_hand"].as_i64() {
            *level = n;
        } else {
            *level += c.body["delta"].as_i64().unwrap_or(0);
        }
    }
    for ((s, l), on_hand) in &expected {
        eventually(
            "the agent's view converges to the region",
            Duration::from_secs(30),
            async || {
                let region_row: Value = client
                    .get(format!("{base}/v1/stock/{s}/{l}"))
                    .bearer_auth(&admin)
                    .send()
                    .await
                    .expect("stock")
                    .json()
                    .await
                    .unwrap_or(Value::Null);
                let local: Value = reqwest::get(agent.url(&format!("/v1/stock/{s}/{l}")))
                    .await
                    .expect("local")
                    .json()
                    .await
                    .expect("json");
                region_row["on_hand"] == json!(on_hand)
                    && local["on_hand"] == json!(on_hand)
                    && local["not_yet_acknowledged"] == 0
            },
        )
        .await;
    }
    eprintln!(
        "store agent: {} POS commands ({sales} sales), {applied} applied at the region, {duplicates} duplicates, {} answers dropped after commit, region down 30 s, agent killed twice, queue drained {converged_after:?} after the region came back",
        commands.len(),
        dropped.load(Ordering::Relaxed)
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_command_is_quarantined_while_the_rest_flows_and_an_oversell_is_a_fact() {
    let region_dir = tempfile::tempdir().expect("tempdir");
    let agent_dir = tempfile::tempdir().expect("tempdir");
    let region_addr = free_addr();
    let base = format!("http://{region_addr}");
    let _server = region(region_dir.path(), region_addr).await;
    let admin = token(
        region_dir.path(),
        "erp",
        "stock:read,stock:adjust,stock:reserve,catalog:write",
        None,
    );
    let client = reqwest::Client::new();
    let put_location = |l: &'static str| {
        let client = client.clone();
        let base = base.clone();
        let admin = admin.clone();
        async move {
            let r = client
                .put(format!("{base}/v1/locations/{l}"))
                .bearer_auth(&admin)
                .json(&json!({"region": "north", "kind": "store", "name": l}))
                .send()
                .await
                .expect("location");
            assert!(r.status().is_success());
        }
    };
    put_location("l1").await;
    let r = client
        .post(format!("{base}/v1/adjustments"))
        .bearer_auth(&admin)
        .header("idempotency-key", "stock-a")
        .json(&json!({"sku": "A", "location": "l1", "set_on_hand": 2, "reason": "receipt"}))
        .send()
        .await
        .expect("stock");
    assert!(r.status().is_success());
    // A channel holds one of the two units.
    let r = client
        .post(format!("{base}/v1/reservations"))
        .bearer_auth(&admin)
        .header("idempotency-key", "web-1")
        .json(&json!({"reservation_id": "web-order-1", "lines": [{"sku": "A", "location": "l1", "qty": 1}]}))
        .send()
        .await
        .expect("reserve");
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    let store_token = token(
        region_dir.path(),
        "store-7",
        "stock:read,stock:adjust,stock:reserve",
        Some("l1,l3"),
    );
    let token_file = agent_dir.path().join("token");
    std::fs::write(&token_file, &store_token).expect("token file");
    let agent = Agent::start(&base, &agent_dir.path().join("data"), &token_file, "l1,l3").await;
    let pos = reqwest::Client::new();
    let sale = |n: usize, location: &str, qty: i64| PosCommand {
        key: format!("till-{n}"),
        sku: "A".into(),
        location: location.into(),
        body: json!({"sku": "A", "location": location, "delta": -qty, "reason": "sale"}),
    };
    // l3 is the agent's but the region does not know it yet: refused for good.
    pos_send(&pos, &agent.addr, &sale(1, "l3", 1)).await;
    // Three units sold at l1, where the region has two and holds one for the web: facts.
    for n in 2..5 {
        pos_send(&pos, &agent.addr, &sale(n, "l1", 1)).await;
    }
    eventually("the queue settles", Duration::from_secs(30), async || {
        let s = agent.status().await;
        s["queue"]["pending"] == 0 && s["queue"]["quarantined"] == 1
    })
    .await;
    let parked: Value = reqwest::get(agent.url("/agent/quarantine"))
        .await
        .expect("quarantine")
        .json()
        .await
        .expect("json");
    let poison = &parked["commands"][0];
    assert_eq!(poison["problem"]["code"], "location_not_found", "{parked}");
    // The oversell is applied and flagged; channels see nothing available.
    let stock: Value = client
        .get(format!("{base}/v1/stock/A/l1"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("stock")
        .json()
        .await
        .expect("json");
    assert_eq!(stock["on_hand"], -1, "{stock}");
    assert_eq!(stock["available"], 0, "{stock}");
    let moved = movements(&client, &base, &admin, "A", "l1").await;
    // Every recorded sale that leaves units short is flagged with the shortfall it leaves:
    // the second sale (one short: the web's unit) and the third (two short). The latest
    // says where the key stands.
    let oversold = moved
        .iter()
        .rev()
        .find(|m| m["kind"] == "stock_oversold")
        .unwrap_or_else(|| panic!("no oversold movement: {moved:?}"));
    assert_eq!(oversold["shortfall"], 2, "{oversold}");
    assert_eq!(
        oversold["reservations_at_risk"],
        json!(["web-order-1"]),
        "{oversold}"
    );
    let availability: Value = client
        .get(format!("{base}/v1/availability/A?region=north"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("availability")
        .json()
        .await
        .expect("json");
    assert_eq!(availability["total_available"], 0, "{availability}");
    // Staff fix the cause (the location) and send the command again.
    put_location("l3").await;
    let seq = poison["seq"].as_i64().expect("seq");
    let r = pos
        .post(agent.url(&format!("/agent/quarantine/{seq}/retry")))
        .send()
        .await
        .expect("retry");
    assert!(r.status().is_success());
    eventually(
        "the fixed command is applied",
        Duration::from_secs(30),
        async || {
            let s = agent.status().await;
            s["queue"]["pending"] == 0 && s["queue"]["quarantined"] == 0
        },
    )
    .await;
    // Applied at the region; its movement follows once projected.
    eventually(
        "the fixed command's movement",
        Duration::from_secs(30),
        async || {
            !movements(&client, &base, &admin, "A", "l3")
                .await
                .is_empty()
        },
    )
    .await;
    let moved = movements(&client, &base, &admin, "A", "l3").await;
    assert_eq!(moved.len(), 1, "{moved:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_loads_in_a_real_browser_and_refreshes() {
    let Some(chromium) = chromium() else {
        panic!("chromium is not installed: scripts/test.sh installs Debian's chromium package");
    };
    let agent_dir = tempfile::tempdir().expect("tempdir");
    let token_file = agent_dir.path().join("token");
    std::fs::write(&token_file, "not-a-token").expect("token file");
    // No region at all: the page must say offline and show the queue.
    let nowhere = format!("http://{}", free_addr());
    let agent = Agent::start(&nowhere, &agent_dir.path().join("data"), &token_file, "l1").await;
    let pos = reqwest::Client::new();
    for n in 0..3 {
        pos_send(
            &pos,
            &agent.addr,
            &PosCommand {
                key: format!("t-{n}"),
                sku: "A".into(),
                location: "l1".into(),
                body: json!({"sku": "A", "location": "l1", "delta": -1, "reason": "sale"}),
            },
        )
        .await;
    }
    eventually(
        "the agent knows it is offline",
        Duration::from_secs(30),
        async || agent.status().await["state"] == "offline",
    )
    .await;
    // The metrics: the status gauges and the counters the agent's tasks keep.
    let metrics = reqwest::get(agent.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics.contains("stockflow_agent_queue_pending 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("stockflow_agent_commands_total 3"),
        "{metrics}"
    );
    assert!(metrics.contains("stockflow_agent_online 0"), "{metrics}");
    let profile = agent_dir.path().join("chromium");
    let dom = Command::new(&chromium)
        .args(chromium_flags(&profile))
        .arg("--dump-dom")
        .arg(agent.url("/agent"))
        .output()
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("id=\"state\" class=\"state offline\">offline<"),
        "{dom}"
    );
    assert!(dom.contains("<td id=\"pending\">3</td>"), "{dom}");
    // Left open, the page reloads itself (no script): the agent serves it again.
    let before = page_views(&agent).await;
    let mut open = Command::new(&chromium)
        .args(chromium_flags(&agent_dir.path().join("chromium-2")))
        .arg("--remote-debugging-port=0")
        .arg(agent.url("/agent"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium runs");
    tokio::time::sleep(Duration::from_secs(12)).await;
    let _ = open.kill();
    let _ = open.wait();
    let views = page_views(&agent).await - before;
    assert!(views >= 2, "the page was loaded {views} time(s) in 12 s");
}

async fn page_views(agent: &Agent) -> u64 {
    agent.status().await["page_views"].as_u64().unwrap_or(0)
}

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn chromium_flags(profile: &Path) -> Vec<String> {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    .into_iter()
    .map(str::to_string)
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}
