//! `stockflow-bench http --workload sourcing`: the cost of a region-level reservation, and
//! of a located one for a channel at keys holding an allocation, against a plain located
//! one, in the same run on the same server. Each SKU is stocked at the
//! bench location and at [`EXTRA_LOCATIONS`] more in its region; the located phase reserves
//! at the bench location, the sourced phase lets the platform choose (`fewest_splits`),
//! which reads the candidates' levels before it reserves. Stock is large enough that
//! nothing is refused, so both phases measure the path that succeeds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::args::BenchArgs;
use crate::conn::{Conn, LOCATION, histogram, ms, sku};

/// Locations besides the bench location holding each SKU.
const EXTRA_LOCATIONS: usize = 2;
/// The channel the channel phase reserves for.
const WEB: &str = "bench-web";
/// The channel holding a ring-fence at every bench key.
const COUNTER: &str = "bench-counter";

fn extra(i: usize) -> String {
    format!("{LOCATION}-{i}")
}

/// Stocks the extra locations (the bench location is stocked by the common setup).
async fn setup(args: &BenchArgs, run_id: &str) -> Result<(), String> {
    let mut conn = Conn::open(args.target).await?;
    for l in 0..EXTRA_LOCATIONS {
        let (status, body) = conn
            .send(
                Method::PUT,
                &format!("/v1/locations/{}", extra(l)),
                None,
                Some(json!({"region": "bench", "kind": "warehouse", "name": extra(l)})),
            )
            .await?;
        if !status.is_success() {
            return Err(format!("creating {} failed: {status} {body:?}", extra(l)));
        }
        for i in 0..args.load.skus {
            let (status, body) = conn
                .send(
                    Method::POST,
                    "/v1/adjustments",
                    Some(&format!("bench-{run_id}-stock-{l}-{i}")),
                    Some(json!({"sku": sku(run_id, i), "location": extra(l),
                                "set_on_hand": 1_000_000_000i64, "reason": "receipt"})),
                )
                .await?;
            if !status.is_success() {
                return Err(format!("stocking {} failed: {status} {body:?}", extra(l)));
            }
        }
    }
    // Channels: the web sells from every location; the store's counter keeps a ring-fence
    // of each SKU at the bench location, so the channel phase reserves at keys holding an
    // allocation (and counts the web's holds there).
    let everywhere: Vec<Value> = std::iter::once(LOCATION.to_string())
        .chain((0..EXTRA_LOCATIONS).map(extra))
        .map(|l| json!({"location": l}))
        .collect();
    for (channel, locations) in [
        (WEB, everywhere),
        (COUNTER, vec![json!({"location": LOCATION})]),
    ] {
        let (status, body) = conn
            .send(
                Method::PUT,
                &format!("/v1/channels/{channel}"),
                None,
                Some(json!({"locations": locations})),
            )
            .await?;
        if !status.is_success() {
            return Err(format!(
                "defining channel {channel} failed: {status} {body:?}"
            ));
        }
    }
    for i in 0..args.load.skus {
        let (status, body) = conn
            .send(
                Method::POST,
                "/v1/allocations",
                Some(&format!("bench-{run_id}-fence-{i}")),
                Some(json!({"sku": sku(run_id, i), "location": LOCATION,
                            "channel": COUNTER, "ring_fence": 10})),
            )
            .await?;
        if !status.is_success() {
            return Err(format!("fencing {i} failed: {status} {body:?}"));
        }
    }
    // The sourced phase finds candidates in the read model: let it catch up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

/// One phase: each connection loops one reservation (qty 1) built by `body`.
async fn phase(
    args: &BenchArgs,
    run_id: &str,
    name: &'static str,
    path: &'static str,
    body: fn(&str) -> Value,
) -> Result<(u64, u64, Histogram<u64>, f64), String> {
    let deadline = Instant::now() + Duration::from_secs(args.load.duration);
    let counter = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..args.load.connections {
        let mut conn = Conn::open(args.target).await?;
        let counter = counter.clone();
        let (skus, run_id) = (args.load.skus, run_id.to_string());
        workers.push(tokio::spawn(async move {
            let mut h = histogram();
            let (mut ok, mut failed, mut i) = (0u64, 0u64, 0usize);
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let s = (n as usize).wrapping_mul(7919) % skus;
                let key = format!("s-{run_id}-{name}-{w}-{i}");
                i += 1;
                let started = Instant::now();
                match conn
                    .send(Method::POST, path, Some(&key), Some(body(&sku(&run_id, s))))
                    .await
                {
                    Ok((StatusCode::CREATED, _)) => {
                        ok += 1;
                        let _ = h.record(started.elapsed().as_micros() as u64);
                    }
                    Ok((status, reply)) => {
                        failed += 1;
                        if failed == 1 {
                            eprintln!("  {name}: {status} {}", String::from_utf8_lossy(&reply));
                        }
                    }
                    Err(e) => {
                        failed += 1;
                        if failed == 1 {
                            eprintln!("  {name}: {e}");
                        }
                    }
                }
            }
            (h, ok, failed)
        }));
    }
    let started = Instant::now();
    let (mut all, mut ok, mut failed) = (histogram(), 0, 0);
    for w in workers {
        let (h, o, f) = w.await.map_err(|e| e.to_string())?;
        all.add(h).map_err(|e| e.to_string())?;
        ok += o;
        failed += f;
    }
    Ok((
        ok,
        failed,
        all,
        started.elapsed().as_secs_f64().max(f64::EPSILON),
    ))
}

fn located(sku: &str) -> Value {
    json!({"lines": [{"sku": sku, "location": LOCATION, "qty": 1}], "ttl_seconds": 900})
}

fn for_channel(sku: &str) -> Value {
    json!({"channel": WEB, "lines": [{"sku": sku, "location": LOCATION, "qty": 1}],
           "ttl_seconds": 900})
}

fn sourced(sku: &str) -> Value {
    json!({"region": "bench", "strategy": "fewest_splits", "ttl_seconds": 900,
           "lines": [{"sku": sku, "qty": 1}]})
}

/// Runs both phases and prints them side by side.
pub async fn sourcing_workload(args: &BenchArgs, run_id: &str) -> Result<(), String> {
    setup(args, run_id).await?;
    println!(
        "\nregion-level vs located reservation ({} s each, {} candidate locations per SKU)",
        args.load.duration,
        EXTRA_LOCATIONS + 1
    );
    let mut rates = Vec::new();
    for (name, path, body) in [
        ("located ", "/v1/reservations", located as fn(&str) -> Value),
        ("channel ", "/v1/reservations", for_channel),
        ("sourced ", "/v1/sourcing/reservations", sourced),
    ] {
        let (ok, failed, h, elapsed) = phase(args, run_id, name.trim(), path, body).await?;
        let rate = ok as f64 / elapsed;
        rates.push(rate);
        println!(
            "  {name} {rate:>8.0} reserves/s  p50 {:.2} ms  p99 {:.2} ms  (failed {failed})",
            ms(&h, 0.5),
            ms(&h, 0.99)
        );
    }
    if let [located, channel, sourced] = rates[..] {
        println!(
            "  channel/located throughput {:.2}, sourced/located {:.2}",
            channel / located.max(f64::EPSILON),
            sourced / located.max(f64::EPSILON)
        );
    }
    Ok(())
}
