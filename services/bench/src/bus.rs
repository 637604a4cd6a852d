//! `stockflow-bench bus`: the event path alone, publisher → Kafka → projector, with the
//! projector running as its own process (`stockflow projector`) as a region runs it.
//!
//! The write side is left out on purpose: on this machine it sets the pace (the embedded
//! one about 7,000 events/s, the ScyllaDB one about 600), so a bench driven through it never
//! shows what the bus carries. The bench appends the events itself, through the same
//! Kafka adapter with the same CloudEvents headers as the publisher, in batches like the
//! publisher's, each SKU's versions in order. Two parts, each at full speed and then at
//! half the rate it reached (where its lag is measured):
//! - transport: the bench reads the topic back itself, one reader per partition as the
//!   projector's replicas do; lag is exact (each event's decision time to its read);
//! - projector: `--projector` names a running projector whose topic is `--topic`; what it
//!   applied and its lag histogram are read from its `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use stockflow_bus::kafka::{KafkaConfig, KafkaEventLog};
use stockflow_bus::{EventLog, NewRecord};
use stockflow_domain::{
    AdjustReason, BusEvent, Detail, EventKind, EventMeta, LocationId, Region, Sku, StockEvent,
    StockLevel,
};

use crate::conn::{histogram, spread};
use crate::cpu::{CpuSample, Watched};
use crate::prometheus::{Quantile, Scrape, growth, quantile, share_within};

/// The pause before each paced projector phase.
const SETTLE: Duration = Duration::from_secs(15);

/// Arguments of `stockflow-bench bus`.
#[derive(Debug, Args)]
pub struct BusArgs {
    /// Kafka bootstrap brokers, comma-separated `host:port`.
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// The topic the projector under test reads (the region's, made by `stockflow
    /// migrate`); the transport part uses `<topic>-transport`, which it creates.
    #[arg(long)]
    topic: String,
    /// Partitions of both topics.
    #[arg(long, default_value_t = 16)]
    partitions: u32,
    /// SKUs the events are spread over (one stock key each).
    #[arg(long, default_value_t = 1000)]
    skus: usize,
    /// Seconds of each measured phase.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// The region the events belong to (the projector's).
    #[arg(long, default_value = "bench")]
    region: String,
    /// Records per append, as the publisher batches an outbox scan.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Appends in flight at once (the publisher runs one per outbox shard).
    #[arg(long, default_value_t = 8)]
    appenders: usize,
    /// HTTP address of the running projector (its `/metrics`); without it only the
    /// transport is measured.
    #[arg(long)]
    projector: Option<SocketAddr>,
    /// Rates (events/s, comma-separated) at which the projector's lag is measured after
    /// its full-speed phase; by default half of what it sustained.
    #[arg(long, value_delimiter = ',')]
    projector_rates: Vec<f64>,
    /// Processes whose CPU is reported per event, `NAME=PID` (repeat).
    #[arg(long = "cpu")]
    cpu: Vec<Watched>,
}

/// What every appender writes: one stock key per SKU, each with its next version.
struct Keys {
    skus: Vec<Sku>,
    location: LocationId,
    region: Region,
    /// The last version appended of each key, carried from phase to phase so the
    /// projector sees every key move forward.
    versions: Vec<AtomicU64>,
}

impl Keys {
    fn new(args: &BusArgs) -> Result<Self, String> {
        let run = std::process::id();
        let skus = (0..args.skus)
            .map(|i| Sku::parse(format!("bus-{run}-{i}")).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            versions: (0..skus.len()).map(|_| AtomicU64::new(0)).collect(),
            skus,
            location: LocationId::parse("bench-dc").map_err(|e| e.to_string())?,
            region: Region::parse(args.region.clone()).map_err(|e| e.to_string())?,
        })
    }

    /// Key `i`'s next event, decided now, as the publisher writes it: the outbox's JSON
    /// with the CloudEvents headers.
    fn next_record(&self, i: usize) -> Result<NewRecord, String> {
        let version = self.versions[i].fetch_add(1, Ordering::Relaxed) + 1;
        let level = StockLevel {
            on_hand: i64::try_from(version).unwrap_or(i64::MAX),
            version,
            ..StockLevel::empty(
                self.skus[i].clone(),
                self.location.clone(),
                self.region.clone(),
            )
        };
        let detail = Detail {
            reason: Some(AdjustReason::Receipt),
            ..Detail::default()
        };
        let meta = EventMeta {
            occurred_at_ms: now_ms(),
            ..EventMeta::default()
        };
        let event = BusEvent::Stock(StockEvent::for_level(
            EventKind::StockAdjusted,
            &level,
            detail,
            &meta,
        ));
        let payload = serde_json::to_vec(&event).map_err(|e| e.to_string())?;
        let mut record = NewRecord::new(event.key().to_string(), payload);
        record.headers = stockflow::events::headers::of(&event);
        Ok(record)
    }
}

/// Runs both parts and prints a report of each phase.
pub async fn run_bus(mut args: BusArgs) -> Result<(), String> {
    // The appends and the transport's reads cost this process too: the publisher's and
    // the projector's share of a real region.
    args.cpu.push(Watched {
        name: "bench".into(),
        pid: std::process::id(),
    });
    let keys = Arc::new(Keys::new(&args)?);
    let window = Duration::from_secs(args.duration);
    println!(
        "bus path over Kafka ({}): {} SKUs, {} partitions, appends of {} records, {} in flight, {} s per phase",
        args.brokers, args.skus, args.partitions, args.batch, args.appenders, args.duration
    );

    let transport = connect(&args, &format!("{}-transport", args.topic)).await?;
    println!("=== transport: the bench appends and reads the topic back ===");
    let full = transport_phase(&args, &transport, &keys, None, window).await?;
    transport_phase(&args, &transport, &keys, Some(full / 2.0), window).await?;

    if let Some(projector) = args.projector {
        let region_topic = connect(&args, &args.topic).await?;
        println!("=== projector: `stockflow projector` at {projector} reads the topic ===");
        let full = projector_phase(&args, &region_topic, &keys, projector, None, window).await?;
        let rates = if args.projector_rates.is_empty() {
            vec![full / 2.0]
        } else {
            args.projector_rates.clone()
        };
        for rate in rates {
            // The phase before left the database flushing and compacting what it wrote:
            // let that finish, so each rate's lag is its own.
            tokio::time::sleep(SETTLE).await;
            projector_phase(&args, &region_topic, &keys, projector, Some(rate), window).await?;
        }
    }
    Ok(())
}

async fn connect(args: &BusArgs, topic: &str) -> Result<Arc<KafkaEventLog>, String> {
    let brokers = args.brokers.split(',').map(str::to_string).collect();
    let log = KafkaEventLog::connect(KafkaConfig::new(brokers, topic.into(), args.partitions))
        .await
        .map_err(|e| format!("topic {topic}: {e}"))?;
    Ok(Arc::new(log))
}

/// Appends for `window` at `rate` events/s (as fast as Kafka takes them when `None`) from
/// `args.appenders` tasks, each owning every `appenders`-th key so a key's versions are
/// appended in order. Returns how many were appended.
async fn append_for(
    args: &BusArgs,
    log: &Arc<KafkaEventLog>,
    keys: &Arc<Keys>,
    rate: Option<f64>,
    window: Duration,
) -> Result<u64, String> {
    let started = Instant::now();
    let appenders = args.appenders.clamp(1, keys.skus.len().max(1));
    let per_task = rate.map(|r| r / appenders as f64);
    let most = args.batch.max(1);
    let mut tasks = Vec::with_capacity(appenders);
    for task in 0..appenders {
        let (log, keys) = (Arc::clone(log), Arc::clone(keys));
        tasks.push(tokio::spawn(async move {
            let owned: Vec<usize> = (task..keys.skus.len()).step_by(appenders).collect();
            let mut appended = 0u64;
            let mut next = 0usize;
            while started.elapsed() < window {
                let count = match per_task {
                    None => most,
                    // Paced: whatever is due by now (at most `batch`), then a pause until
                    // about 10 ms' worth is due again: a steady stream, as the publisher's
                    // scans give, not bursts the readers would then measure as lag; an
                    // append slower than the tick is caught up by the next, larger one.
                    Some(rate) => {
                        let due = (started.elapsed().as_secs_f64() * rate) as u64;
                        if due <= appended {
                            let tick = (rate / 100.0).max(1.0);
                            let at =
                                started + Duration::from_secs_f64((appended as f64 + tick) / rate);
                            tokio::time::sleep_until(at.into()).await;
                            continue;
                        }
                        usize::try_from(due - appended).unwrap_or(most).min(most)
                    }
                };
                let records = (0..count)
                    .map(|n| keys.next_record(owned[(next + n) % owned.len()]))
                    .collect::<Result<Vec<_>, _>>()?;
                next = (next + count) % owned.len();
                log.append(records).await.map_err(|e| e.to_string())?;
                appended += count as u64;
            }
            Ok::<u64, String>(appended)
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.map_err(|e| e.to_string())??;
    }
    Ok(total)
}

/// One transport phase: readers on every partition from its end, appends for `window`,
/// then reads until every appended event has been read. Returns the events/s appended.
async fn transport_phase(
    args: &BusArgs,
    log: &Arc<KafkaEventLog>,
    keys: &Arc<Keys>,
    rate: Option<f64>,
    window: Duration,
) -> Result<f64, String> {
    let read = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for partition in 0..args.partitions {
        let from = log.end_offset(partition).await.map_err(|e| e.to_string())?;
        let (log, read, stop) = (Arc::clone(log), Arc::clone(&read), Arc::clone(&stop));
        readers.push(tokio::spawn(read_partition(
            log, partition, from, read, stop,
        )));
    }
    let cpu = CpuSample::take(&args.cpu);
    let started = Instant::now();
    let appended = append_for(args, log, keys, rate, window).await?;
    let elapsed = started.elapsed();
    let read_in_window = read.load(Ordering::Relaxed);
    let cpu_end = CpuSample::take(&args.cpu);
    let drained = wait_until(|| read.load(Ordering::Relaxed) >= appended).await;
    stop.store(true, Ordering::Relaxed);
    let mut lag = histogram();
    for reader in readers {
        let partial = reader.await.map_err(|e| e.to_string())??;
        lag.add(&partial).map_err(|e| e.to_string())?;
    }
    let rate_appended = appended as f64 / elapsed.as_secs_f64();
    println!("{}", phase_title(rate));
    println!(
        "  appended {appended} events: {rate_appended:.0} events/s; read within the window {:.0} events/s",
        read_in_window as f64 / elapsed.as_secs_f64()
    );
    match drained {
        Some(after) => println!(
            "  every event read {:.2} s after the appends stopped",
            after.as_secs_f64()
        ),
        None => println!(
            "  NOT every event was read 60 s after the appends stopped ({} of {appended})",
            read.load(Ordering::Relaxed)
        ),
    }
    println!(
        "  bus lag (decided → read)  {}  ({} events)",
        spread(&lag),
        lag.len()
    );
    cpu.print(&cpu_end, &args.cpu, (appended, "event"), elapsed);
    Ok(rate_appended)
}

/// Reads `partition` from `from` until told to stop; counts the events and returns their
/// lag, from the time each was decided (its payload's `occurred_at_ms`) to its read.
async fn read_partition(
    log: Arc<KafkaEventLog>,
    partition: u32,
    from: u64,
    read: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Result<Histogram<u64>, String> {
    let mut lag = histogram();
    let mut offset = from;
    while !stop.load(Ordering::Relaxed) {
        let records = log
            .fetch(partition, offset, 1 << 20, Duration::from_millis(100))
            .await
            .map_err(|e| e.to_string())?;
        let now = now_ms();
        for record in &records {
            let decided = serde_json::from_slice::<Decided>(&record.value)
                .map_err(|e| format!("partition {partition} offset {}: {e}", record.offset))?;
            let _ = lag.record(u64::try_from(now - decided.occurred_at_ms).unwrap_or(0) * 1000);
            offset = record.offset + 1;
        }
        read.fetch_add(records.len() as u64, Ordering::Relaxed);
    }
    Ok(lag)
}

/// The one field of an event the reader needs.
#[derive(serde::Deserialize)]
struct Decided {
    occurred_at_ms: i64,
}

/// One projector phase: appends for `window` to the projector's topic, and reads what it
/// applied and its lag from its metrics over the window and until it has caught up.
/// Returns the events/s it applied from the start until it caught up.
async fn projector_phase(
    args: &BusArgs,
    log: &Arc<KafkaEventLog>,
    keys: &Arc<Keys>,
    projector: SocketAddr,
    rate: Option<f64>,
    window: Duration,
) -> Result<f64, String> {
    const PROJECTED: &str = "stockflow_events_projected_total";
    const LAG: &str = "stockflow_projection_lag_seconds";
    let before = Scrape::of(projector).await?;
    let cpu = CpuSample::take(&args.cpu);
    let started = Instant::now();
    let appended = append_for(args, log, keys, rate, window).await?;
    let elapsed = started.elapsed();
    let cpu_end = CpuSample::take(&args.cpu);
    let in_window = Scrape::of(projector).await?;
    let applied_in_window = in_window.total(PROJECTED) - before.total(PROJECTED);

    // Caught up: it has applied at least every event appended in this phase.
    let target = before.total(PROJECTED) + appended as f64;
    let stopped = Instant::now();
    let mut after = in_window;
    let mut drained = after.total(PROJECTED) >= target;
    while !drained && stopped.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = Scrape::of(projector).await?;
        drained = after.total(PROJECTED) >= target;
    }
    let caught_up = stopped.elapsed();

    // What it sustains: everything it applied from the phase's start until it caught up
    // (within the window alone it may still be warming up, or starved of CPU by the
    // appends it then catches up on).
    let applied = after.total(PROJECTED) - before.total(PROJECTED);
    let rate_applied = applied / (elapsed + caught_up).as_secs_f64();
    println!("{}", phase_title(rate));
    println!(
        "  appended {appended} events: {:.0} events/s; the projector applied {:.0} events/s within the window, {rate_applied:.0} events/s until caught up",
        appended as f64 / elapsed.as_secs_f64(),
        applied_in_window / elapsed.as_secs_f64()
    );
    if drained {
        println!(
            "  caught up {:.2} s after the appends stopped",
            caught_up.as_secs_f64()
        );
    } else {
        println!(
            "  NOT caught up 120 s after the appends stopped ({applied:.0} of {appended} applied)"
        );
    }
    let lag = growth(&before.buckets(LAG), &after.buckets(LAG));
    let at = |q| quantile(&lag, q).map_or("?".into(), Quantile::ms);
    println!(
        "  projection lag (decided → applied, from its histogram)  p50 {}  p99 {}  within 100 ms: {}",
        at(0.5),
        at(0.99),
        share_within(&lag, 0.1).map_or("?".into(), |s| format!("{:.1}%", s * 100.0))
    );
    cpu.print(&cpu_end, &args.cpu, (appended, "event"), elapsed);
    Ok(rate_applied)
}

fn phase_title(rate: Option<f64>) -> String {
    match rate {
        None => "--- as fast as Kafka takes them".to_string(),
        Some(rate) => format!("--- at {rate:.0} events/s"),
    }
}

/// How long until `done` holds, polled every 50 ms for up to 60 s.
async fn wait_until(done: impl Fn() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if done() {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
