//! The `expiry` workload: a burst of abandoned carts. It makes `--reservations`
//! reservations with a `--ttl-seconds` TTL as fast as the connections allow, then watches
//! the server's `stockflow_reservations_expired_total` until every one has expired, and
//! the query API until every bench SKU shows nothing reserved. Lateness is how long after
//! its deadline the oldest unexpired reservation waited, sampled every 20 ms.
//!
//! Run in two phases around a restart (`--expiry-phase make`, stop the server, let the
//! deadlines pass, start it, `--expiry-phase wait`) it measures a backlog that is all
//! overdue at once: `wait` runs until the query API shows nothing reserved.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::args::{BenchArgs, Phase};
use crate::conn::{Conn, LOCATION, sku};

/// How long the bench waits for the burst to expire before it reports a failure.
const PATIENCE: Duration = Duration::from_secs(300);
const SAMPLE: Duration = Duration::from_millis(20);

pub(super) async fn expiry_workload(args: &BenchArgs, run_id: &str) -> Result<(), String> {
    let mut probe = Conn::open(args.target).await?;
    let started = Instant::now();
    if args.expiry_phase == Phase::Wait {
        // Done when the query API shows nothing reserved; the write side finished when the
        // server's expiry count last moved.
        println!("\nexpiry backlog: waiting for the overdue reservations to expire");
        let (mut count, mut last_change) = (0, Duration::ZERO);
        let done = loop {
            let now = expired_count(&mut probe).await?;
            if now != count {
                (count, last_change) = (now, started.elapsed());
            }
            if nothing_reserved(&mut probe, run_id, args.load.skus).await? {
                break started.elapsed();
            }
            if started.elapsed() > PATIENCE {
                return Err(format!("{count} expired, and stock is still reserved"));
            }
            tokio::time::sleep(SAMPLE).await;
        };
        println!(
            "  {count} expired (write side) {:.2} s after the server was ready",
            last_change.as_secs_f64()
        );
        println!(
            "  read side shows nothing reserved {:.2} s after the server was ready",
            done.as_secs_f64()
        );
        return Ok(());
    }
    let expired_before = expired_count(&mut probe).await?;
    let made = Arc::new(AtomicU64::new(0));
    // (when, reservations made by then): when the n-th reservation was made.
    let made_at = Arc::new(Mutex::new(vec![(Duration::ZERO, 0u64)]));
    let (made_count, failed) = make(args, run_id, made.clone(), made_at.clone()).await?;
    let created = started.elapsed();
    let ttl = Duration::from_secs(args.ttl_seconds);
    println!(
        "\nexpiry burst: {made_count} reservations with a {} s TTL ({failed} refused or failed)",
        args.ttl_seconds
    );
    println!(
        "  made in {:.2} s ({:.0}/s)",
        created.as_secs_f64(),
        made_count as f64 / created.as_secs_f64().max(f64::EPSILON)
    );
    if args.expiry_phase == Phase::Make {
        return Ok(());
    }
    // Lateness: at each sample, the oldest unexpired reservation is (about) the first one
    // made after `expired` others; it was due `ttl` after it was made.
    let mut lateness = Duration::ZERO;
    let expired_at = loop {
        let expired = expired_count(&mut probe)
            .await?
            .saturating_sub(expired_before);
        let now = started.elapsed();
        if expired < made_count {
            let timeline = made_at.lock().map_err(|_| "timeline poisoned")?;
            let i = timeline.partition_point(|(_, n)| *n <= expired);
            if let Some((when, _)) = timeline.get(i) {
                lateness = lateness.max(now.saturating_sub(*when + ttl));
            }
        } else {
            break now;
        }
        if now > PATIENCE + ttl {
            return Err(format!(
                "only {expired} of {made_count} reservations expired"
            ));
        }
        tokio::time::sleep(SAMPLE).await;
    };
    let last_deadline = created + ttl;
    println!(
        "  all expired (write side) {:.2} s after the first reservation, {:.2} s after the last deadline",
        expired_at.as_secs_f64(),
        expired_at.saturating_sub(last_deadline).as_secs_f64()
    );
    println!(
        "  latest expiry: {:.0} ms after its deadline (sampled every {} ms)",
        lateness.as_secs_f64() * 1000.0,
        SAMPLE.as_millis()
    );
    let projected_at = wait_nothing_reserved(&mut probe, run_id, args.load.skus, started).await?;
    println!(
        "  read side shows nothing reserved {:.2} s after the first reservation, {:.2} s after the last deadline",
        projected_at.as_secs_f64(),
        projected_at.saturating_sub(last_deadline).as_secs_f64()
    );
    Ok(())
}

/// Makes the reservations over all connections; returns (made, refused or failed).
async fn make(
    args: &BenchArgs,
    run_id: &str,
    made: Arc<AtomicU64>,
    made_at: Arc<Mutex<Vec<(Duration, u64)>>>,
) -> Result<(u64, u64), String> {
    let total = args.reservations as u64;
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let timeline = {
        let (made, made_at) = (made.clone(), made_at.clone());
        tokio::spawn(async move {
            loop {
                let n = made.load(Ordering::Relaxed);
                if let Ok(mut t) = made_at.lock() {
                    t.push((started.elapsed(), n));
                }
                if n >= total {
                    return;
                }
                tokio::time::sleep(SAMPLE).await;
            }
        })
    };
    let mut workers = Vec::new();
    for _ in 0..args.load.connections {
        let mut conn = Conn::open(args.target).await?;
        let (next, made, skus, ttl) =
            (next.clone(), made.clone(), args.load.skus, args.ttl_seconds);
        let run_id = run_id.to_string();
        workers.push(tokio::spawn(async move {
            let mut failed = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return failed;
                }
                let reply = conn
                    .send(
                        Method::POST,
                        "/v1/reservations",
                        Some(&format!("x-{run_id}-{i}")),
                        Some(json!({"lines": [{"sku": sku(&run_id, (i as usize) % skus),
                                               "location": LOCATION, "qty": 1}],
                                    "ttl_seconds": ttl})),
                    )
                    .await;
                match reply {
                    Ok((StatusCode::CREATED, _)) => {
                        made.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => failed += 1,
                }
            }
        }));
    }
    let mut failed = 0;
    for w in workers {
        failed += w.await.map_err(|e| e.to_string())?;
    }
    // Every request was answered: the timeline ends at the final count.
    let made_count = made.load(Ordering::Relaxed);
    if let Ok(mut t) = made_at.lock() {
        t.push((started.elapsed(), made_count));
    }
    timeline.abort();
    Ok((made_count, failed))
}

async fn wait_nothing_reserved(
    probe: &mut Conn,
    run_id: &str,
    skus: usize,
    started: Instant,
) -> Result<Duration, String> {
    loop {
        if nothing_reserved(probe, run_id, skus).await? {
            return Ok(started.elapsed());
        }
        if started.elapsed() > PATIENCE {
            return Err("the read side still shows reserved stock".into());
        }
        tokio::time::sleep(SAMPLE).await;
    }
}

/// The server's count of expired reservations, from its Prometheus metrics.
async fn expired_count(conn: &mut Conn) -> Result<u64, String> {
    let (status, body) = conn.send(Method::GET, "/metrics", None, None).await?;
    if status != StatusCode::OK {
        return Err(format!("GET /metrics answered {status}"));
    }
    let text = String::from_utf8_lossy(&body);
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("stockflow_reservations_expired_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64))
}

/// True when no bench SKU shows reserved stock in the query API.
async fn nothing_reserved(conn: &mut Conn, run_id: &str, skus: usize) -> Result<bool, String> {
    for s in 0..skus {
        let path = format!("/v1/stock/{}/{LOCATION}", sku(run_id, s));
        let (status, body) = conn.send(Method::GET, &path, None, None).await?;
        if status != StatusCode::OK {
            return Ok(false);
        }
        let reserved = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["reserved"].as_i64());
        if reserved != Some(0) {
            return Ok(false);
        }
    }
    Ok(true)
}
