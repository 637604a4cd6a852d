//! `stockflow-bench lwt`: the raw ceiling of the ScyllaDB write path on the same cluster:
//! the same conditional batch a command writes, from a minimal loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;

use crate::BenchError;
use crate::args::Load;
use crate::conn::{histogram, ms};
use crate::cpu::CpuSample;

/// Arguments of `stockflow-bench lwt`.
#[derive(Debug, Args)]
pub struct LwtArgs {
    /// Contact points, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:9042")]
    pub scylla_nodes: Vec<String>,
    /// Scratch keyspace (created, then reused).
    #[arg(long, default_value = "stockflow_lwt_bench")]
    pub scylla_keyspace: String,
    /// Loops, duration, keys and the processes to measure.
    #[command(flatten)]
    pub load: Load,
}

/// The raw LWT ceiling: the service's per-key conditional batch (level `IF version = ?`,
/// outbox row, applied-command row) issued by a minimal loop, read-then-batch, on the same
/// schema — no HTTP, idempotency claim or reservation row.
pub async fn run_lwt(args: LwtArgs) -> Result<(), BenchError> {
    use stockflow_storage::scylla::{self as cql, Replication, ScyllaConfig};
    let config = ScyllaConfig::new(args.scylla_nodes.clone(), args.scylla_keyspace.clone());
    let session = cql::connect(&config)
        .await
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    cql::migrate(
        &session,
        &config.keyspace,
        &Replication::NetworkTopology(vec![("datacenter1".into(), 1)]),
        None,
    )
    .await
    .map_err(|e| BenchError::Setup(e.to_string()))?;
    let session = Arc::new(session);
    let ks = &config.keyspace;
    let sp = format!("{ks}.stock_partitions");
    let prep = |cql: String| {
        let session = session.clone();
        async move {
            session
                .prepare(cql)
                .await
                .map_err(|e| BenchError::Setup(e.to_string()))
        }
    };
    let load = prep(format!(
        "SELECT on_hand, reserved, version FROM {sp} WHERE sku = ? AND location = 'lwt' LIMIT 1"
    ))
    .await?;
    let init = prep(format!("INSERT INTO {sp} (sku, location, region, on_hand, reserved, version) VALUES (?, 'lwt', 'bench', 1000000000, 0, 0) IF NOT EXISTS")).await?;
    let update = prep(format!("UPDATE {sp} SET on_hand = ?, reserved = ?, version = ? WHERE sku = ? AND location = 'lwt' IF version = ?")).await?;
    let outbox = prep(format!("INSERT INTO {sp} (sku, location, row_kind, row_id, payload, created_at, published) VALUES (?, 'lwt', 'o', ?, ?, ?, false) USING TTL 3600")).await?;
    let record = prep(format!("INSERT INTO {sp} (sku, location, row_kind, row_id, payload, created_at) VALUES (?, 'lwt', 'c', ?, ?, ?) USING TTL 3600")).await?;
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    for i in 0..args.load.skus {
        session
            .execute_unpaged(&init, (format!("lwt-{run_id}-{i}"),))
            .await
            .map_err(|e| BenchError::Setup(e.to_string()))?;
    }
    let deadline = Instant::now() + Duration::from_secs(args.load.duration);
    let counter = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..args.load.connections {
        let (session, load, update, outbox, record, counter, run_id) = (
            session.clone(),
            load.clone(),
            update.clone(),
            outbox.clone(),
            record.clone(),
            counter.clone(),
            run_id.clone(),
        );
        let skus = args.load.skus;
        workers.push(tokio::spawn(async move {
            let mut h = histogram();
            let (mut applied, mut conflicts, mut errors) = (0u64, 0u64, 0u64);
            let payload = vec![0u8; 400];
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed) as usize;
                let sku = format!("lwt-{run_id}-{}", n.wrapping_mul(7919) % skus);
                let started = Instant::now();
                let Ok(rows) = session.execute_unpaged(&load, (sku.as_str(),)).await else {
                    errors += 1;
                    continue;
                };
                let Ok(rows) = rows.into_rows_result() else {
                    errors += 1;
                    continue;
                };
                let Ok(Some((on_hand, reserved, version))) =
                    rows.maybe_first_row::<(Option<i64>, Option<i64>, Option<i64>)>()
                else {
                    errors += 1;
                    continue;
                };
                let (on_hand, reserved, version) = (
                    on_hand.unwrap_or(0),
                    reserved.unwrap_or(0),
                    version.unwrap_or(0),
                );
                let mut batch = scylla::statement::batch::Batch::new(
                    scylla::statement::batch::BatchType::Logged,
                );
                batch.append_statement(update.clone());
                batch.append_statement(outbox.clone());
                batch.append_statement(record.clone());
                let row = format!("{:020}", version + 1);
                let cmd = format!("c-{n}");
                let now = stockflow_storage::now_ms();
                let values = (
                    (on_hand, reserved + 1, version + 1, sku.as_str(), version),
                    (sku.as_str(), row.as_str(), payload.as_slice(), now),
                    (sku.as_str(), cmd.as_str(), payload.as_slice(), now),
                );
                match session.batch(&batch, values).await {
                    Ok(r) => {
                        let ok = r
                            .into_rows_result()
                            .ok()
                            .and_then(|rows| {
                                let i = rows
                                    .column_specs()
                                    .iter()
                                    .position(|c| c.name() == "[applied]")?;
                                let row = rows.maybe_first_row::<scylla::value::Row>().ok()??;
                                match row.columns.get(i)? {
                                    Some(scylla::value::CqlValue::Boolean(b)) => Some(*b),
                                    _ => None,
                                }
                            })
                            .unwrap_or(false);
                        if ok {
                            applied += 1;
                            let _ = h.record(started.elapsed().as_micros() as u64);
                        } else {
                            conflicts += 1;
                        }
                    }
                    Err(_) => errors += 1,
                }
            }
            (h, applied, conflicts, errors)
        }));
    }
    let started = Instant::now();
    let cpu_start = CpuSample::take(&args.load.cpu);
    let mut h = histogram();
    let (mut applied, mut conflicts, mut errors) = (0, 0, 0);
    for w in workers {
        let (wh, a, c, e) = w.await.map_err(|e| BenchError::Setup(e.to_string()))?;
        h.add(wh).map_err(|e| BenchError::Setup(e.to_string()))?;
        applied += a;
        conflicts += c;
        errors += e;
    }
    let cpu_end = CpuSample::take(&args.load.cpu);
    let window = started.elapsed();
    let elapsed = window.as_secs_f64().max(f64::EPSILON);
    println!(
        "raw LWT ceiling ({} loops, {} key(s), {} s): {applied} applied ({:.0}/s), {conflicts} version conflicts, {errors} errors",
        args.load.connections,
        args.load.skus,
        args.load.duration,
        applied as f64 / elapsed
    );
    println!(
        "  read + conditional batch latency  p50 {:.2} ms  p99 {:.2} ms",
        ms(&h, 0.5),
        ms(&h, 0.99)
    );
    cpu_start.print(&cpu_end, &args.load.cpu, (applied, "applied batch"), window);
    Ok(())
}
