//! `stockflow-bench http --workload import`: what a bulk import costs the checkouts running
//! beside it. Checkouts (reserve + confirm, `--connections`) run alone for `--duration`,
//! then again while an NDJSON file of `--import-rows` adjustments is applied by the
//! platform's import worker (paced by the server's `--import-rows-per-second`); the report
//! gives checkout latency in both phases, the import's rows/s during the checkouts, and
//! its rows/s from upload to done.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::args::BenchArgs;
use crate::checkout::{Tally, checkout_loop};
use crate::conn::{Conn, ms};

/// The location the imported rows adjust (its own SKUs: the import never touches the
/// checkouts' keys, only the write path they share).
const IMPORT_LOCATION: &str = "bench-import";
/// SKUs the imported rows spread over.
const IMPORT_SKUS: usize = 10_000;

/// The NDJSON file: one location row, then adjustments.
fn import_file(run_id: &str, rows: usize) -> Bytes {
    let mut text = String::with_capacity(rows * 110);
    text.push_str(
        &json!({"type": "location", "location": IMPORT_LOCATION, "region": "bench", "kind": "warehouse", "name": "Import DC"})
            .to_string(),
    );
    text.push('\n');
    for i in 1..rows {
        let sku = format!("imp-{run_id}-{}", i % IMPORT_SKUS);
        text.push_str(
            &json!({"type": "adjustment", "sku": sku, "location": IMPORT_LOCATION, "delta": 1, "reason": "receipt"})
                .to_string(),
        );
        text.push('\n');
    }
    Bytes::from(text)
}

/// Checkouts on every connection for `--duration`: reserve latency and checkouts/s.
async fn checkouts(
    args: &BenchArgs,
    run_id: &str,
    phase: &str,
) -> Result<(Histogram<u64>, u64, u64, f64), String> {
    let deadline = Instant::now() + Duration::from_secs(args.load.duration);
    let counter = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..args.load.connections {
        let conn = Conn::open(args.target).await?;
        workers.push(tokio::spawn(checkout_loop(
            conn,
            counter.clone(),
            run_id.to_string(),
            format!("{phase}{w}"),
            args.load.skus,
            deadline,
        )));
    }
    let started = Instant::now();
    let mut tally = Tally::new();
    for w in workers {
        tally.add(w.await.map_err(|e| e.to_string())?)?;
    }
    Ok((
        tally.reserve,
        tally.ok,
        tally.errors + tally.refused,
        started.elapsed().as_secs_f64().max(f64::EPSILON),
    ))
}

async fn job_status(conn: &mut Conn, id: &str) -> Result<Value, String> {
    let (status, body) = conn
        .send(Method::GET, &format!("/v1/imports/{id}"), None, None)
        .await?;
    if status != StatusCode::OK {
        return Err(format!("import status: {status} {body:?}"));
    }
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}

fn rows_done(v: &Value) -> u64 {
    v["rows_done"].as_u64().unwrap_or(0)
}

fn report(name: &str, (reserve, ok, errors, secs): &(Histogram<u64>, u64, u64, f64)) {
    println!(
        "  {name:<16} checkouts {ok} ({:.0}/s), errors {errors}; reserve p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        *ok as f64 / secs,
        ms(reserve, 0.5),
        ms(reserve, 0.99),
        reserve.max() as f64 / 1000.0
    );
}

pub(crate) async fn import_workload(args: &BenchArgs, run_id: &str) -> Result<(), String> {
    let file = import_file(run_id, args.import_rows.max(2));
    println!(
        "\nbulk import of {} rows ({:.1} MiB) beside checkouts on {} connections",
        args.import_rows,
        file.len() as f64 / (1 << 20) as f64,
        args.load.connections
    );
    let alone = checkouts(args, run_id, "alone").await?;
    let mut conn = Conn::open(args.target).await?;
    let uploading = Instant::now();
    let (status, body) = conn
        .send_bytes(
            Method::POST,
            "/v1/imports",
            Some(&format!("bench-import-{run_id}")),
            Some(("application/x-ndjson", file)),
        )
        .await?;
    if status != StatusCode::ACCEPTED {
        return Err(format!("upload: {status} {body:?}"));
    }
    let uploaded = uploading.elapsed();
    let job: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    let id = job["id"]
        .as_str()
        .ok_or("the upload named no job")?
        .to_string();
    let before = rows_done(&job_status(&mut conn, &id).await?);
    let during = checkouts(args, run_id, "during").await?;
    let after = job_status(&mut conn, &id).await?;
    let rows_during = rows_done(&after).saturating_sub(before);
    println!(
        "  upload           {:.2} s (answered 202 with job {id})",
        uploaded.as_secs_f64()
    );
    report("alone", &alone);
    report("during import", &during);
    println!(
        "  import rows/s during the checkouts {:.0} ({rows_during} rows in {:.1} s)",
        rows_during as f64 / during.3,
        during.3
    );
    // Then to the end, alone.
    let limit = Duration::from_secs((args.import_rows as u64 / 50).max(60));
    loop {
        let now = job_status(&mut conn, &id).await?;
        if now["status"] == "done" {
            let secs = uploading.elapsed().as_secs_f64();
            println!(
                "  import done      {} rows in {secs:.1} s from upload ({:.0} rows/s overall): applied {}, replayed {}, failed {}",
                now["rows_total"],
                now["rows_total"].as_f64().unwrap_or(0.0) / secs,
                now["applied"],
                now["replayed"],
                now["failed"]
            );
            return Ok(());
        }
        if uploading.elapsed() > limit {
            println!("  import not done after {limit:?}: {now}");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
