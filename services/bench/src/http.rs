//! `stockflow-bench http`: an HTTP load generator for a running stockflow.
//!
//! Workloads:
//! - `reserve`: each connection loops reserve (qty 1) then confirm, over `--skus` SKUs at
//!   one location; reports reserve throughput and latency, confirm latency, and projection
//!   lag (command acknowledged → its version visible in the query API), sampled on a
//!   separate connection.
//! - `query`: each connection loops `GET /v1/stock/{sku}/{location}`.
//! - `expiry`: a burst of `--reservations` 1-second reservations; reports how long until
//!   all have expired, on the write side and in the query API (see [`expiry`]).
//! - `sourcing`: region-level reservations against located ones, in one run (see
//!   [`sourcing`]).
//! - `soak`: mixed carts at a steady `--rate`, reported each minute and checked exact at
//!   the end (see [`soak`]).
//! - `import`: checkout latency without and during a bulk import of `--import-rows` rows,
//!   and the import's rows/s (see [`import`]).
//!
//! Every connection is one keep-alive HTTP/1.1 connection driven by hyper directly, so the
//! generator spends as little CPU as possible on the machine it shares with the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hyper::{Method, StatusCode};
use serde_json::json;

use crate::BenchError;
use crate::args::{BenchArgs, Workload};
use crate::checkout::{Tally, checkout_loop};
use crate::conn::{AUTHORIZATION, Conn, LOCATION, histogram, sku, spread};
use crate::cpu::CpuSample;
use crate::{expiry_burst, import, soak, sourcing};

/// Runs the selected workloads and prints a report.
pub async fn run(args: BenchArgs) -> Result<(), BenchError> {
    if let Some(token) = &args.token {
        let _ = AUTHORIZATION.set(format!("Bearer {token}"));
    }
    let fresh = uuid::Uuid::now_v7().simple().to_string();
    let run_id = match &args.run_id {
        Some(id) => id.as_str(),
        None => &fresh[fresh.len() - 10..],
    };
    // Stocking is keyed by the run id, so a reused run replays it.
    setup(&args, run_id).await.map_err(BenchError::Setup)?;
    println!(
        "stockflow bench: target {} · {} connections · {} s per workload · {} SKU(s) · run {run_id}",
        args.target, args.load.connections, args.load.duration, args.load.skus
    );
    if matches!(args.workload, Workload::Reserve | Workload::All) {
        reserve_workload(&args, run_id)
            .await
            .map_err(BenchError::Setup)?;
    }
    if matches!(args.workload, Workload::Query | Workload::All) {
        query_workload(&args, run_id)
            .await
            .map_err(BenchError::Setup)?;
    }
    if args.workload == Workload::Expiry {
        expiry_burst::expiry_workload(&args, run_id)
            .await
            .map_err(BenchError::Setup)?;
    }
    if args.workload == Workload::Sourcing {
        sourcing::sourcing_workload(&args, run_id)
            .await
            .map_err(BenchError::Setup)?;
    }
    if args.workload == Workload::Import {
        import::import_workload(&args, run_id)
            .await
            .map_err(BenchError::Setup)?;
    }
    if args.workload == Workload::Soak {
        soak::soak_workload(&args, run_id)
            .await
            .map_err(BenchError::Setup)?;
    }
    Ok(())
}

async fn setup(args: &BenchArgs, run_id: &str) -> Result<(), String> {
    let mut conn = Conn::open(args.target).await?;
    let (status, body) = conn
        .send(
            Method::PUT,
            &format!("/v1/locations/{LOCATION}"),
            None,
            Some(json!({"region": "bench", "kind": "warehouse", "name": "Bench DC"})),
        )
        .await?;
    if !status.is_success() {
        return Err(format!(
            "creating the bench location failed: {status} {body:?}"
        ));
    }
    for i in 0..args.load.skus {
        let (status, body) = conn
            .send(
                Method::POST,
                "/v1/adjustments",
                Some(&format!("bench-{run_id}-stock-{i}")),
                Some(json!({"sku": sku(run_id, i), "location": LOCATION,
                            "set_on_hand": 1_000_000_000i64, "reason": "receipt"})),
            )
            .await?;
        if !status.is_success() {
            return Err(format!(
                "stocking {} failed: {status} {body:?}",
                sku(run_id, i)
            ));
        }
    }
    Ok(())
}

async fn reserve_workload(args: &BenchArgs, run_id: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(args.load.duration);
    let counter = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..args.load.connections {
        let conn = Conn::open(args.target).await?;
        let counter = counter.clone();
        let skus = args.load.skus;
        let run_id = run_id.to_string();
        workers.push(tokio::spawn(checkout_loop(
            conn,
            counter,
            run_id,
            w.to_string(),
            skus,
            deadline,
        )));
    }
    let sampler = tokio::spawn(sample_lag(
        args.target,
        run_id.to_string(),
        args.load.skus,
        deadline,
    ));
    let started = Instant::now();
    let cpu_start = CpuSample::take(&args.load.cpu);
    let mut tally = Tally::new();
    for w in workers {
        tally.add(w.await.map_err(|e| e.to_string())?)?;
    }
    let cpu_end = CpuSample::take(&args.load.cpu);
    let window = started.elapsed();
    let elapsed = window.as_secs_f64().max(f64::EPSILON);
    let lag = sampler.await.map_err(|e| e.to_string())??;
    println!("\nreserve + confirm ({} s)", args.load.duration);
    tally.print("acknowledged", elapsed);
    println!(
        "  projection lag   {}  ({} samples)",
        spread(&lag),
        lag.len()
    );
    cpu_start.print(
        &cpu_end,
        &args.load.cpu,
        (tally.commands(), "command"),
        window,
    );
    Ok(())
}

/// Samples projection lag while the workers run: every 20 ms it adjusts one of the bench
/// SKUs (+1), takes the version the acknowledgement reports, and polls the query API until
/// that version is visible. Lag = acknowledgement → visible.
async fn sample_lag(
    target: SocketAddr,
    run_id: String,
    skus: usize,
    deadline: Instant,
) -> Result<Histogram<u64>, String> {
    let mut command = Conn::open(target).await?;
    let mut query = Conn::open(target).await?;
    let mut lag = histogram();
    let mut n = 0usize;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        n += 1;
        let s = n.wrapping_mul(104_729) % skus;
        let (status, body) = command
            .send(Method::POST, "/v1/adjustments", Some(&format!("lag-{run_id}-{n}")),
                Some(json!({"sku": sku(&run_id, s), "location": LOCATION, "delta": 1, "reason": "receipt"})))
            .await?;
        let acked = Instant::now();
        if status != StatusCode::OK {
            continue;
        }
        let Some(version) = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["version"].as_u64())
        else {
            continue;
        };
        let path = format!("/v1/stock/{}/{LOCATION}", sku(&run_id, s));
        loop {
            if read_version(&mut query, &path).await?.unwrap_or(0) >= version {
                let _ = lag.record(acked.elapsed().as_micros() as u64);
                break;
            }
            if acked.elapsed() > Duration::from_secs(10) {
                let _ = lag.record(acked.elapsed().as_micros() as u64);
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    Ok(lag)
}

async fn read_version(conn: &mut Conn, path: &str) -> Result<Option<u64>, String> {
    let (status, body) = conn.send(Method::GET, path, None, None).await?;
    if status != StatusCode::OK {
        return Ok(None);
    }
    Ok(serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["version"].as_u64()))
}

async fn query_workload(args: &BenchArgs, run_id: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(args.load.duration);
    let mut workers = Vec::new();
    for w in 0..args.load.connections {
        let mut conn = Conn::open(args.target).await?;
        let skus = args.load.skus;
        let run_id = run_id.to_string();
        workers.push(tokio::spawn(async move {
            let mut h = histogram();
            let (mut ok, mut errors) = (0u64, 0u64);
            let mut i = w;
            while Instant::now() < deadline {
                i = i.wrapping_mul(31).wrapping_add(17);
                let path = format!("/v1/stock/{}/{LOCATION}", sku(&run_id, i % skus));
                let started = Instant::now();
                match conn.send(Method::GET, &path, None, None).await {
                    Ok((StatusCode::OK, _)) => {
                        ok += 1;
                        let _ = h.record(started.elapsed().as_micros() as u64);
                    }
                    _ => errors += 1,
                }
            }
            (h, ok, errors)
        }));
    }
    let started = Instant::now();
    let mut h = histogram();
    let (mut ok, mut errors) = (0, 0);
    for w in workers {
        let (wh, o, e) = w.await.map_err(|e| e.to_string())?;
        h.add(wh).map_err(|e| e.to_string())?;
        ok += o;
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64().max(f64::EPSILON);
    println!(
        "\nqueries GET /v1/stock/{{sku}}/{{location}} ({} s)",
        args.load.duration
    );
    println!(
        "  requests {ok} ({:.0}/s), errors {errors}",
        ok as f64 / elapsed
    );
    println!("  latency  {}", spread(&h));
    Ok(())
}
