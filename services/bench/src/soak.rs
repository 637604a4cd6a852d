//! The `soak` workload: mixed load at a steady `--rate` of carts per second for
//! `--duration` seconds, meant to run for an hour or more against one server while
//! `scripts/soak.sh` samples its memory and disk.
//!
//! A cart is one of: reserve (1–3 lines) then confirm, reserve then release, reserve with
//! a 1 s TTL and abandon it, a reservation of a SKU out of stock (refused, and retried
//! with the same key: the refusal must come back), an adjustment (retried with the same
//! key: applied once), or a query (stock, availability, search). Some confirms are
//! retried too. Every minute it prints what it did and its latency.
//!
//! The workload also checks the platform is exact: it counts what each SKU's on-hand
//! should be, and at the end waits until the query API shows, for every SKU, nothing
//! reserved and exactly that on-hand. Any mismatch, unexpected status or broken replay
//! fails the run.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::args::BenchArgs;
use crate::conn::{Conn, LOCATION, histogram, ms, sku};

/// On-hand every SKU starts with (set by the bench's set-up).
const START_ON_HAND: i64 = 1_000_000_000;
/// SKUs kept at zero on-hand, so reserving them is refused.
const SCARCE_SKUS: usize = 10;
const REPORT_EVERY: Duration = Duration::from_secs(60);
/// How long the final check waits for the read side to settle.
const PATIENCE: Duration = Duration::from_secs(120);

/// What every worker adds to, shared.
struct Tally {
    carts: AtomicU64,
    commands: AtomicU64,
    queries: AtomicU64,
    expected_refusals: AtomicU64,
    /// Unexpected statuses, failed requests, replays that answered differently.
    errors: AtomicU64,
    /// On-hand change each SKU should show, by index.
    on_hand_change: Vec<AtomicI64>,
    latency: Mutex<Histogram<u64>>,
    first_error: Mutex<Option<String>>,
}

impl Tally {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock()
            && first.is_none()
        {
            *first = Some(what);
        }
    }

    fn record(&self, started: Instant) {
        if let Ok(mut h) = self.latency.lock() {
            let _ = h.record(started.elapsed().as_micros() as u64);
        }
    }
}

pub(super) async fn soak_workload(args: &BenchArgs, run_id: &str) -> Result<(), String> {
    name_skus(args, run_id).await?;
    let tally = Arc::new(Tally {
        carts: AtomicU64::new(0),
        commands: AtomicU64::new(0),
        queries: AtomicU64::new(0),
        expected_refusals: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        on_hand_change: (0..args.load.skus).map(|_| AtomicI64::new(0)).collect(),
        latency: Mutex::new(histogram()),
        first_error: Mutex::new(None),
    });
    let deadline = Instant::now() + Duration::from_secs(args.load.duration);
    // Each connection paces itself to its share of the rate.
    let per_connection = (args.rate / args.load.connections as f64).max(0.001);
    let period = Duration::from_secs_f64(1.0 / per_connection);
    println!(
        "\nsoak: {:.0} carts/s over {} connections for {} s",
        args.rate, args.load.connections, args.load.duration
    );
    let mut workers = Vec::new();
    for w in 0..args.load.connections {
        let conn = Conn::open(args.target).await?;
        let cart = Cart {
            conn,
            tally: tally.clone(),
            run_id: run_id.to_string(),
            skus: args.load.skus,
            worker: w,
            random: 0x9E37_79B9_7F4A_7C15 ^ (w as u64 + 1),
        };
        workers.push(tokio::spawn(cart.run(period, deadline)));
    }
    let reporter = tokio::spawn(report_each_minute(tally.clone(), deadline));
    for w in workers {
        w.await.map_err(|e| e.to_string())?;
    }
    let _ = reporter.await;
    let errors = tally.errors.load(Ordering::Relaxed);
    println!(
        "  total: {} carts, {} commands, {} queries, {} expected refusals, {errors} errors",
        tally.carts.load(Ordering::Relaxed),
        tally.commands.load(Ordering::Relaxed),
        tally.queries.load(Ordering::Relaxed),
        tally.expected_refusals.load(Ordering::Relaxed),
    );
    if errors > 0 {
        let first = tally.first_error.lock().ok().and_then(|f| f.clone());
        return Err(format!(
            "{errors} unexpected answers; the first: {}",
            first.unwrap_or_default()
        ));
    }
    check_exact(args, run_id, &tally).await
}

/// Gives every bench SKU a catalog name, so search has something to find.
async fn name_skus(args: &BenchArgs, run_id: &str) -> Result<(), String> {
    let mut conn = Conn::open(args.target).await?;
    for s in 0..args.load.skus {
        let (status, body) = conn
            .send(
                Method::PUT,
                &format!("/v1/skus/{}", sku(run_id, s)),
                None,
                Some(json!({"name": format!("soak item {s} colour {}", s % 17)})),
            )
            .await?;
        if !status.is_success() {
            return Err(format!(
                "naming {} failed: {status} {body:?}",
                sku(run_id, s)
            ));
        }
    }
    for s in 0..SCARCE_SKUS {
        let (status, body) = conn
            .send(
                Method::POST,
                "/v1/adjustments",
                Some(&format!("soak-{run_id}-scarce-{s}")),
                Some(json!({"sku": scarce_sku(run_id, s), "location": LOCATION,
                            "set_on_hand": 0, "reason": "cycle_count"})),
            )
            .await?;
        if !status.is_success() {
            return Err(format!(
                "stocking {} failed: {status} {body:?}",
                scarce_sku(run_id, s)
            ));
        }
    }
    Ok(())
}

fn scarce_sku(run_id: &str, s: usize) -> String {
    format!("{}-scarce", sku(run_id, s))
}

struct Cart {
    conn: Conn,
    tally: Arc<Tally>,
    run_id: String,
    skus: usize,
    worker: usize,
    random: u64,
}

impl Cart {
    async fn run(mut self, period: Duration, deadline: Instant) {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut n = 0u64;
        while Instant::now() < deadline {
            tick.tick().await;
            n += 1;
            let key = format!("soak-{}-{}-{n}", self.run_id, self.worker);
            if let Err(e) = self.one(&key).await {
                self.tally.error(format!("{key}: {e}"));
            }
            self.tally.carts.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// splitmix64: cheap, deterministic per worker.
    fn next(&mut self, below: u64) -> u64 {
        self.random = self.random.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.random;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % below.max(1)
    }

    async fn one(&mut self, key: &str) -> Result<(), String> {
        match self.next(20) {
            0..=7 => self.reserve_then(key, Then::Confirm).await,
            8..=11 => self.reserve_then(key, Then::Release).await,
            12..=13 => self.reserve_then(key, Then::Abandon).await,
            14 => self.refused_reservation(key).await,
            15 => self.adjustment(key).await,
            _ => self.query().await,
        }
    }

    /// Sends a command, counts it and its latency.
    async fn command(
        &mut self,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value), String> {
        let started = Instant::now();
        let (status, bytes) = self.conn.send(Method::POST, path, Some(key), body).await?;
        self.tally.record(started);
        self.tally.commands.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, body))
    }

    async fn reserve_then(&mut self, key: &str, then: Then) -> Result<(), String> {
        let first = self.next(self.skus as u64) as usize;
        let lines: Vec<(usize, i64)> = (0..1 + self.next(3) as usize)
            .map(|i| ((first + i) % self.skus, 1 + self.next(3) as i64))
            .collect();
        let ttl = if then == Then::Abandon { 1 } else { 900 };
        let body = json!({
            "lines": lines.iter().map(|(s, qty)| json!({
                "sku": sku(&self.run_id, *s), "location": LOCATION, "qty": qty,
            })).collect::<Vec<_>>(),
            "ttl_seconds": ttl,
        });
        let (status, reply) = self.command("/v1/reservations", key, Some(body)).await?;
        if status != StatusCode::CREATED {
            return Err(format!("reserve answered {status} {reply}"));
        }
        let id = reply["reservation_id"]
            .as_str()
            .ok_or("reserve answered no reservation_id")?
            .to_string();
        let (path, expect) = match then {
            Then::Abandon => return Ok(()),
            Then::Confirm => (format!("/v1/reservations/{id}/confirm"), "confirmed"),
            Then::Release => (format!("/v1/reservations/{id}/release"), "released"),
        };
        let settle_key = format!("{key}-s");
        let (status, reply) = self.command(&path, &settle_key, None).await?;
        if status != StatusCode::OK || reply["status"] != expect {
            return Err(format!("{path} answered {status} {reply}"));
        }
        if then == Then::Confirm {
            for (s, qty) in &lines {
                self.tally.on_hand_change[*s].fetch_sub(*qty, Ordering::Relaxed);
            }
            // One confirm in ten is retried, as a client that lost the answer would.
            if self.next(10) == 0 {
                let (again, replay) = self.command(&path, &settle_key, None).await?;
                if again != StatusCode::OK || replay["status"] != expect {
                    return Err(format!("retried {path} answered {again} {replay}"));
                }
            }
        }
        Ok(())
    }

    async fn refused_reservation(&mut self, key: &str) -> Result<(), String> {
        let s = self.next(SCARCE_SKUS as u64) as usize;
        let body = json!({"lines": [{"sku": scarce_sku(&self.run_id, s), "location": LOCATION,
                                     "qty": 1}]});
        for attempt in ["first", "retried"] {
            let (status, reply) = self
                .command("/v1/reservations", key, Some(body.clone()))
                .await?;
            if status != StatusCode::CONFLICT || reply["code"] != "insufficient_stock" {
                return Err(format!(
                    "{attempt} oversized reserve answered {status} {reply}"
                ));
            }
            self.tally.expected_refusals.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn adjustment(&mut self, key: &str) -> Result<(), String> {
        let s = self.next(self.skus as u64) as usize;
        // -10..=10 without 0, which the API refuses.
        let delta = match self.next(20) as i64 - 10 {
            d if d >= 0 => d + 1,
            d => d,
        };
        let body = json!({"sku": sku(&self.run_id, s), "location": LOCATION,
                          "delta": delta, "reason": "cycle_count"});
        let (status, reply) = self
            .command("/v1/adjustments", key, Some(body.clone()))
            .await?;
        if status != StatusCode::OK {
            return Err(format!("adjustment answered {status} {reply}"));
        }
        self.tally.on_hand_change[s].fetch_add(delta, Ordering::Relaxed);
        let (again, replay) = self.command("/v1/adjustments", key, Some(body)).await?;
        if again != StatusCode::OK || replay["version"] != reply["version"] {
            return Err(format!(
                "retried adjustment answered {again} {replay}, first {reply}"
            ));
        }
        Ok(())
    }

    async fn query(&mut self) -> Result<(), String> {
        let s = self.next(self.skus as u64) as usize;
        let path = match self.next(3) {
            0 => format!("/v1/stock/{}/{LOCATION}", sku(&self.run_id, s)),
            1 => format!("/v1/availability/{}", sku(&self.run_id, s)),
            _ => format!("/v1/search?q=colour+{}&limit=20", s % 17),
        };
        let started = Instant::now();
        let (status, body) = self.conn.send(Method::GET, &path, None, None).await?;
        self.tally.record(started);
        self.tally.queries.fetch_add(1, Ordering::Relaxed);
        // A SKU nobody has touched yet may not be projected the instant the run starts.
        if status != StatusCode::OK && status != StatusCode::NOT_FOUND {
            return Err(format!("GET {path} answered {status} {body:?}"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    Confirm,
    Release,
    Abandon,
}

async fn report_each_minute(tally: Arc<Tally>, deadline: Instant) {
    let started = Instant::now();
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + REPORT_EVERY, REPORT_EVERY);
    let mut last = (0, 0, 0);
    println!("  minute  carts/s  commands/s  queries/s  errors  p50 ms  p99 ms  max ms");
    loop {
        tick.tick().await;
        let now = (
            tally.carts.load(Ordering::Relaxed),
            tally.commands.load(Ordering::Relaxed),
            tally.queries.load(Ordering::Relaxed),
        );
        let secs = REPORT_EVERY.as_secs_f64();
        let h = match tally.latency.lock() {
            Ok(mut h) => {
                let copy = h.clone();
                h.reset();
                copy
            }
            Err(_) => histogram(),
        };
        println!(
            "  {:>6}  {:>7.0}  {:>10.0}  {:>9.0}  {:>6}  {:>6.2}  {:>6.2}  {:>6.1}",
            (started.elapsed().as_secs_f64() / 60.0).round(),
            (now.0 - last.0) as f64 / secs,
            (now.1 - last.1) as f64 / secs,
            (now.2 - last.2) as f64 / secs,
            tally.errors.load(Ordering::Relaxed),
            ms(&h, 0.5),
            ms(&h, 0.99),
            h.max() as f64 / 1000.0,
        );
        last = now;
        if Instant::now() + REPORT_EVERY > deadline + REPORT_EVERY / 2 {
            return;
        }
    }
}

/// Waits until the query API shows, for every SKU, nothing reserved and the on-hand the
/// run accounted for.
async fn check_exact(args: &BenchArgs, run_id: &str, tally: &Tally) -> Result<(), String> {
    let mut conn = Conn::open(args.target).await?;
    let started = Instant::now();
    loop {
        let mut wrong = None;
        for s in 0..args.load.skus {
            let path = format!("/v1/stock/{}/{LOCATION}", sku(run_id, s));
            let (status, body) = conn.send(Method::GET, &path, None, None).await?;
            let level: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let want = START_ON_HAND + tally.on_hand_change[s].load(Ordering::Relaxed);
            if status != StatusCode::OK
                || level["reserved"] != 0
                || level["on_hand"].as_i64() != Some(want)
            {
                wrong = Some(format!(
                    "{path}: {status} {level}, want on_hand {want}, reserved 0"
                ));
                break;
            }
        }
        let Some(wrong) = wrong else {
            println!(
                "  exact: every SKU shows its expected on-hand and nothing reserved ({:.1} s after the load)",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        };
        if started.elapsed() > PATIENCE {
            return Err(format!(
                "the read side is not exact after {PATIENCE:?}: {wrong}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
