//! The edge cache end to end: a real Varnish 7.1 with `xkey` (started by
//! `scripts/varnish.sh` with the sample VCL, config/samples/varnish/stockflow.vcl) in front
//! of `stockflow dev`, whose purge worker points at it.
//!
//! - Repeated reads are served from the cache (`X-Cache: HIT`); the hit ratio of a burst
//!   of shopper reads is printed.
//! - A stock change through the command API purges exactly that SKU's objects within a
//!   second (another SKU's object stays a hit, its `Age` still growing), and the next read
//!   is a hit showing the new stock: the purge worker warmed it. The purge latency (change
//!   accepted → the cache shows it) is printed.
//! - With the stockflow process killed, Varnish still answers from stale objects with 200
//!   (`stale-if-error`), including one long past its TTL and its stale-while-revalidate.
//!
//! Needs `varnishd` and `vmod_xkey` (Debian's varnish and varnish-modules; the test
//! command installs them). Without them the test fails: it never passes silently.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stockflow_e2e::{DevProcess, free_addr, put_warehouse};

/// How long the edge keeps stock objects (`--edge-ttl-seconds`): far longer than the test,
/// so only a purge can make the cache show a change.
const EDGE_TTL_SECONDS: &str = "300";

/// A Varnish started by `scripts/varnish.sh up`, stopped by `down` when dropped.
struct Varnish {
    addr: SocketAddr,
    run_dir: PathBuf,
    env: Vec<(&'static str, String)>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/varnish.sh")
}

impl Varnish {
    /// Starts Varnish in front of `backend`.
    fn up(backend: SocketAddr, run_dir: &Path) -> Self {
        let addr = free_addr();
        let admin = free_addr();
        let env = vec![
            ("VARNISH_PORT", addr.port().to_string()),
            ("VARNISH_ADMIN_PORT", admin.port().to_string()),
            ("VARNISH_BACKEND_PORT", backend.port().to_string()),
            ("VARNISH_RUN_DIR", run_dir.display().to_string()),
        ];
        let out = Command::new("bash")
            .arg(script())
            .arg("up")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .expect("bash runs scripts/varnish.sh");
        assert!(
            out.status.success(),
            "scripts/varnish.sh up failed (Varnish 7.1 with vmod_xkey is required: \
             apt-get install varnish varnish-modules, or run ./scripts/test.sh as root): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            addr,
            run_dir: run_dir.to_path_buf(),
            env,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `MAIN.cache_hit` and `MAIN.cache_miss` from varnishstat. A worker adds its counts
    /// to the shared ones when its connection goes idle (after `timeout_linger`, 50 ms):
    /// wait for that first.
    fn hits_and_misses(&self) -> (u64, u64) {
        std::thread::sleep(Duration::from_millis(300));
        let out = Command::new("varnishstat")
            .args(["-1", "-f", "MAIN.cache_hit", "-f", "MAIN.cache_miss", "-n"])
            .arg(self.run_dir.join("work"))
            .output()
            .expect("varnishstat runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let counter = |name: &str| -> u64 {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (counter("MAIN.cache_hit"), counter("MAIN.cache_miss"))
    }
}

impl Drop for Varnish {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("down")
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .status();
    }
}

/// A read through the cache: status, `X-Cache`, `Age`, body.
struct Read {
    status: u16,
    cache: String,
    age: u64,
    body: Value,
}

async fn read(client: &reqwest::Client, url: &str) -> Read {
    let r = client.get(url).send().await.expect("Varnish answers");
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let cache = header("x-cache");
    let age = header("age").parse().unwrap_or(0);
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(Value::Null);
    Read {
        status,
        cache,
        age,
        body,
    }
}

async fn adjust(client: &reqwest::Client, base: &str, key: &str, sku: &str, delta: i64) {
    let r = client
        .post(format!("{base}/v1/adjustments"))
        .header("idempotency-key", key)
        .json(&json!({"sku": sku, "location": "store-1", "delta": delta, "reason": "receipt"}))
        .send()
        .await
        .expect("the command API answers");
    assert!(r.status().is_success(), "adjust {sku}: {}", r.status());
}

/// Waits until the read model (asked directly, not through the cache) shows `on_hand`.
async fn projected(client: &reqwest::Client, base: &str, sku: &str, on_hand: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = read(client, &format!("{base}/v1/stock/{sku}/store-1")).await;
        if r.body["on_hand"] == on_hand {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sku} never projected: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn varnish_serves_hits_purges_one_sku_on_change_warms_it_and_survives_the_origin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let origin_addr = free_addr();
    let varnish = Varnish::up(origin_addr, &dir.path().join("varnish"));
    let purge_url = varnish.url("/");
    let dev = DevProcess::start_with(
        &dir.path().join("data"),
        origin_addr,
        &[
            "--edge-purge-url",
            &purge_url,
            "--edge-ttl-seconds",
            EDGE_TTL_SECONDS,
        ],
    )
    .await;
    let origin = format!("http://{}", dev.addr);
    let client = reqwest::Client::new();
    put_warehouse(&client, &origin, "store-1", "north").await;
    let catalog = client
        .put(format!("{origin}/v1/skus/SKU-A"))
        .json(&json!({"name": "Trail shoe", "attributes": {"color": "red"}}))
        .send()
        .await
        .expect("catalog");
    assert!(catalog.status().is_success());
    adjust(&client, &origin, "a-1", "SKU-A", 10).await;
    adjust(&client, &origin, "b-1", "SKU-B", 20).await;
    projected(&client, &origin, "SKU-A", 10).await;
    projected(&client, &origin, "SKU-B", 20).await;

    // The origin tags what it sends.
    let direct = client
        .get(format!("{origin}/v1/stock/SKU-A/store-1"))
        .send()
        .await
        .expect("origin");
    let tags = direct.headers()["surrogate-key"].to_str().expect("ascii");
    assert_eq!(tags, "stockflow sku:SKU-A loc:store-1 region:north");
    assert_eq!(direct.headers()["cache-tag"], &tags.replace(' ', ","));
    let cc = direct.headers()["cache-control"].to_str().expect("ascii");
    assert!(
        cc.contains("stale-while-revalidate=") && cc.contains("stale-if-error="),
        "{cc}"
    );

    // Wait for the probe to find the origin healthy, then: a repeat read is a hit.
    let a = varnish.url("/v1/stock/SKU-A/store-1");
    let b = varnish.url("/v1/stock/SKU-B/store-1");
    let search = varnish.url("/v1/search?q=trail");
    let deadline = Instant::now() + Duration::from_secs(10);
    while read(&client, &a).await.status != 200 {
        assert!(
            Instant::now() < deadline,
            "Varnish never reached the origin"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = read(&client, &a).await;
    assert_eq!((again.status, again.cache.as_str()), (200, "HIT"));
    assert_eq!(again.body["on_hand"], 10);

    // A burst of shopper reads over a handful of pages.
    let pages: Vec<String> = [
        "/v1/stock/SKU-A",
        "/v1/stock/SKU-A/store-1",
        "/v1/availability/SKU-A",
        "/v1/stock/SKU-B",
        "/v1/stock/SKU-B/store-1",
        "/v1/availability/SKU-B",
    ]
    .iter()
    .map(|p| varnish.url(p))
    .collect();
    let (hits_before, misses_before) = varnish.hits_and_misses();
    let mut hits = 0usize;
    let reads = 600usize;
    for i in 0..reads {
        let r = read(&client, &pages[i % pages.len()]).await;
        assert_eq!(r.status, 200);
        hits += usize::from(r.cache.starts_with("HIT"));
    }
    let (hits_after, misses_after) = varnish.hits_and_misses();
    let ratio = hits as f64 / reads as f64;
    eprintln!(
        "edge cache: hit ratio {ratio:.3} over {reads} shopper reads of {} pages \
         (varnishstat: {} hits, {} misses in the burst)",
        pages.len(),
        hits_after - hits_before,
        misses_after - misses_before
    );
    assert!(ratio > 0.95, "hit ratio {ratio}");

    // Changes purge exactly their SKU, quickly, and leave it warm.
    let mut latencies = Vec::new();
    let mut on_hand = 10;
    for round in 1..=5 {
        let before_b = read(&client, &b).await;
        assert_eq!(before_b.cache, "HIT");
        let cached_a = read(&client, &a).await;
        assert_eq!(cached_a.body["on_hand"], on_hand);
        on_hand += 5;
        let started = Instant::now();
        adjust(&client, &origin, &format!("a-change-{round}"), "SKU-A", 5).await;
        let (latency, first) = loop {
            let r = read(&client, &a).await;
            if r.body["on_hand"] == on_hand {
                break (started.elapsed(), r);
            }
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "round {round}: the cache still shows {} a second after the change",
                r.body
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        latencies.push(latency);
        // The next shopper hits a warm, fresh object.
        let next = read(&client, &a).await;
        assert_eq!(
            (next.cache.as_str(), &next.body["on_hand"]),
            ("HIT", &json!(on_hand))
        );
        eprintln!(
            "edge cache: round {round}: change visible through the cache after {latency:?} \
             (first fresh read: {}, age {})",
            first.cache, first.age
        );
        // The other SKU was not touched: still the same cached object.
        let after_b = read(&client, &b).await;
        assert_eq!(after_b.cache, "HIT", "round {round}: SKU-B was purged too");
        assert!(
            after_b.age >= before_b.age,
            "round {round}: SKU-B was fetched again"
        );
    }
    latencies.sort();
    eprintln!(
        "edge cache: purge latency (change accepted → the cache shows it): median {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    let metrics = client
        .get(format!("{origin}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for line in metrics.lines().filter(|l| {
        l.starts_with("stockflow_edge_purge_lag_seconds_sum")
            || l.starts_with("stockflow_edge_purge_lag_seconds_count")
            || l.starts_with("stockflow_edge_purges_total")
            || l.starts_with("stockflow_edge_warms_total")
    }) {
        eprintln!("edge cache: {line}");
    }

    // The origin dies; the cache answers from what it holds, even long past its TTL.
    let hit = read(&client, &search).await;
    assert_eq!(hit.status, 200);
    assert!(hit.body["hits"].as_array().is_some_and(|h| !h.is_empty()));
    dev.kill_hard();
    let fresh = read(&client, &a).await;
    assert_eq!(
        (fresh.status, &fresh.body["on_hand"]),
        (200, &json!(on_hand))
    );
    // Search objects live 1 s plus 2 s of stale-while-revalidate; later, only
    // stale-if-error keeps them.
    tokio::time::sleep(Duration::from_millis(4_000)).await;
    let stale = read(&client, &search).await;
    assert_eq!(stale.status, 200, "no stale answer with the origin down");
    assert_eq!(stale.body, hit.body);
    assert!(stale.age >= 4, "age {}", stale.age);
    eprintln!(
        "edge cache: origin killed; a search object {} s old served with {} ({})",
        stale.age, stale.status, stale.cache
    );
    let never_cached = read(&client, &varnish.url("/v1/stock/SKU-C/store-1")).await;
    assert_eq!(never_cached.status, 503, "nothing to fall back on");
}
