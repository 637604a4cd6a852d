//! `stockflow-bench rebuild`: how long `stockflow rebuild-read-models` takes for many keys.
//! Seeds a fresh embedded directory or ScyllaDB keyspace with `--keys` keys through the
//! write store (an adjustment each, `--connections` at once), then rebuilds the read
//! models from the write side and reports keys per second.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use stockflow_domain::{
    Adjust, AdjustReason, Command, Location, LocationGrant, LocationId, LocationKind, OnHandChange,
    Region, Sku, StockKey,
};
use stockflow_storage::ports::{CommandRequest, ReadStore, WriteStore};
use stockflow_storage::rebuild::{PAGE, rebuild_read_models};

use crate::BenchError;

/// Locations the keys are spread over.
const LOCATIONS: usize = 10;

/// Arguments of `stockflow-bench rebuild`.
#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// Keys (SKU × location) to seed and rebuild.
    #[arg(long, default_value_t = 100_000)]
    pub keys: usize,
    /// Concurrent seeding commands.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Rebuild a ScyllaDB keyspace at these contact points instead of an embedded
    /// directory (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub scylla_nodes: Vec<String>,
    /// Scratch keyspace (created; use a new name per run).
    #[arg(long, default_value = "stockflow_rebuild_bench")]
    pub scylla_keyspace: String,
}

fn setup(e: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(e.to_string())
}

/// Seeds, rebuilds and prints the figures.
pub async fn run_rebuild(args: RebuildArgs) -> Result<(), BenchError> {
    if args.scylla_nodes.is_empty() {
        let dir =
            std::env::temp_dir().join(format!("stockflow-rebuild-bench-{}", std::process::id()));
        let b = stockflow_storage::embedded::EmbeddedBackend::open(&dir, 8).map_err(setup)?;
        let result = measure(b.write.clone(), b.read.clone(), &args, "embedded").await;
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
        result
    } else {
        use stockflow_storage::scylla::{self as cql, Replication, ScyllaBackend, ScyllaConfig};
        let config = ScyllaConfig::new(args.scylla_nodes.clone(), args.scylla_keyspace.clone());
        let session = cql::connect(&config).await.map_err(setup)?;
        cql::migrate(
            &session,
            &config.keyspace,
            &Replication::NetworkTopology(vec![("datacenter1".into(), 1)]),
            None,
        )
        .await
        .map_err(setup)?;
        let b = ScyllaBackend::open(&config).await.map_err(setup)?;
        measure(b.write.clone(), b.read.clone(), &args, "ScyllaDB").await
    }
}

async fn measure<W: WriteStore, R: ReadStore>(
    write: Arc<W>,
    read: Arc<R>,
    args: &RebuildArgs,
    backend: &str,
) -> Result<(), BenchError> {
    let locations: Vec<LocationId> = (0..LOCATIONS)
        .map(|l| LocationId::parse(format!("rb-loc-{l}")).map_err(setup))
        .collect::<Result<_, _>>()?;
    for id in &locations {
        let location = Location {
            id: id.clone(),
            region: Region::parse("bench").map_err(setup)?,
            kind: LocationKind::Store,
            name: id.to_string(),
        };
        write
            .put_location(location)
            .await
            .map_err(setup)?
            .map_err(setup)?;
    }
    let skus = args.keys.div_ceil(LOCATIONS);
    for s in (0..skus).step_by(skus.div_ceil(100).max(1)) {
        let sku = Sku::parse(format!("rb-{s}")).map_err(setup)?;
        write
            .put_sku(sku, format!("Rebuild bench {s}"), BTreeMap::new())
            .await
            .map_err(setup)?;
    }
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut seeders = Vec::new();
    for _ in 0..args.connections.max(1) {
        let (write, next, locations, keys) =
            (write.clone(), next.clone(), locations.clone(), args.keys);
        seeders.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= keys {
                    return Ok::<(), BenchError>(());
                }
                let key = StockKey::new(
                    Sku::parse(format!("rb-{}", n / LOCATIONS)).map_err(setup)?,
                    locations[n % LOCATIONS].clone(),
                );
                let adjust = Adjust::new(
                    key,
                    OnHandChange::Delta(10 + (n % 7) as i64),
                    AdjustReason::Receipt,
                    None,
                    None,
                )
                .map_err(setup)?;
                let request = CommandRequest {
                    command: Command::Adjust(adjust),
                    idempotency: None,
                    trace_context: None,
                    actor: None,
                    grant: LocationGrant::Any,
                };
                write
                    .execute(request)
                    .await
                    .map_err(setup)?
                    .answer
                    .map_err(setup)?;
            }
        }));
    }
    for seeder in seeders {
        seeder.await.map_err(setup)??;
    }
    let seeded = started.elapsed();
    let started = Instant::now();
    let done = rebuild_read_models(write.as_ref(), read.as_ref(), PAGE, None, |_| {})
        .await
        .map_err(setup)?
        .ok_or_else(|| setup("the rebuild stopped before its end"))?;
    let rebuilt = started.elapsed();
    let rows = read.all_inventory().await.map_err(setup)?.len();
    println!(
        "{backend}: seeded {} keys in {seeded:.2?}; rebuilt {} keys and {} SKUs in {rebuilt:.2?} ({:.0} keys/s); {rows} rows read back",
        args.keys,
        done.keys,
        done.skus,
        done.keys as f64 / rebuilt.as_secs_f64()
    );
    Ok(())
}
