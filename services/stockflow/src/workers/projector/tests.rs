//! Projector tests over the real embedded log and read store: gaps, poison records, replay.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use stockflow_bus::{EventLog, LogRecord, NewRecord};
use stockflow_domain::{
    AdjustReason, BusEvent, Detail, EventKind, EventMeta, LocationId, Region, Sku, StockEvent,
    StockLevel,
};
use stockflow_storage::embedded::EmbeddedBackend;
use stockflow_storage::ports::ReadStore;

use super::step::contiguous;
use super::*;

fn event(sku: &str, location: &str, version: u64, on_hand: i64, reserved: i64) -> BusEvent {
    let level = StockLevel {
        on_hand,
        reserved,
        version,
        ..StockLevel::empty(
            Sku::parse(sku).unwrap(),
            LocationId::parse(location).unwrap(),
            Region::parse("north").unwrap(),
        )
    };
    let detail = Detail {
        reason: Some(AdjustReason::Receipt),
        ..Detail::default()
    };
    let meta = EventMeta {
        occurred_at_ms: 1,
        ..EventMeta::default()
    };
    BusEvent::Stock(StockEvent::for_level(
        EventKind::StockAdjusted,
        &level,
        detail,
        &meta,
    ))
}

fn record(e: &BusEvent) -> NewRecord {
    NewRecord::new(e.key().to_string(), serde_json::to_vec(e).unwrap())
}

/// The embedded log with every fetch's records passed through `filter`: a client or a log
/// that loses records.
struct FilteredLog {
    inner: Arc<dyn EventLog>,
    filter: Box<Filter>,
}

/// What a [`FilteredLog`] does to each fetch's records.
type Filter = dyn Fn(&mut Vec<LogRecord>) + Send + Sync;

#[async_trait]
impl EventLog for FilteredLog {
    fn partitions(&self) -> u32 {
        self.inner.partitions()
    }
    fn identity(&self) -> String {
        self.inner.identity()
    }
    async fn append(&self, records: Vec<NewRecord>) -> stockflow_bus::Result<Vec<(u32, u64)>> {
        self.inner.append(records).await
    }
    async fn fetch(
        &self,
        p: u32,
        offset: u64,
        max: usize,
        wait: Duration,
    ) -> stockflow_bus::Result<Vec<LogRecord>> {
        let mut records = self.inner.fetch(p, offset, max, wait).await?;
        (self.filter)(&mut records);
        Ok(records)
    }
    async fn end_offset(&self, p: u32) -> stockflow_bus::Result<u64> {
        self.inner.end_offset(p).await
    }
    async fn check_ready(&self) -> stockflow_bus::Result<()> {
        self.inner.check_ready().await
    }
}

/// Like the fluvio 0.50.1 consumer at `max_bytes`, silently drops records from the middle
/// of a fetch: every other fetch of more than two records loses its third one.
fn lossy(inner: Arc<dyn EventLog>) -> FilteredLog {
    let fetches = AtomicUsize::new(0);
    FilteredLog {
        inner,
        filter: Box::new(move |records| {
            if fetches.fetch_add(1, Ordering::Relaxed).is_multiple_of(2) && records.len() > 2 {
                records.remove(2);
            }
        }),
    }
}

/// Steps every partition until each is idle; returns the total steps taken.
async fn drain(log: &dyn EventLog, read: &dyn ReadStore, config: &ProjectorConfig) -> usize {
    let mut steps = 0;
    for p in 0..log.partitions() {
        let mut next = read.offset(&config.consumer, p).await.unwrap();
        loop {
            steps += 1;
            assert!(steps < 10_000, "projector does not converge");
            match step(log, read, config, p, next, Duration::ZERO)
                .await
                .unwrap()
            {
                Step::Idle if next == log.end_offset(p).await.unwrap() => break,
                Step::Idle | Step::Gap => {}
                Step::Advanced(to) => next = to,
            }
        }
    }
    steps
}

fn backend(partitions: u32) -> (tempfile::TempDir, EmbeddedBackend) {
    let dir = tempfile::tempdir().unwrap();
    let b = EmbeddedBackend::open(dir.path(), partitions).unwrap();
    (dir, b)
}

/// Ten SKUs, ten versions each.
fn history() -> Vec<BusEvent> {
    let mut events = Vec::new();
    for v in 1..=10u64 {
        for s in 0..10 {
            events.push(event(
                &format!("sku-{s}"),
                "loc",
                v,
                100 + v as i64,
                v as i64,
            ));
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_in_fetches_are_re_read_and_nothing_is_skipped() {
    let (_dir, b) = backend(2);
    b.log
        .append(history().iter().map(record).collect())
        .await
        .unwrap();
    let lossy = lossy(b.log.clone());
    // A small max_bytes forces many fetches, as in the fluvio defect.
    let config = ProjectorConfig {
        max_bytes: 600,
        ..ProjectorConfig::default()
    };
    drain(&lossy, &*b.read, &config).await;
    let rows = b.read.all_inventory().await.unwrap();
    assert_eq!(rows.len(), 10);
    assert!(
        rows.iter()
            .all(|r| r.version == 10 && r.on_hand == 110 && r.reserved == 10)
    );
    for p in 0..2 {
        assert_eq!(
            b.read.offset(&config.consumer, p).await.unwrap(),
            b.log.end_offset(p).await.unwrap()
        );
    }
}

/// A Fluvio topic switched to structured CloudEvents holds both forms, the bare events of
/// before and the structured ones after: each projects alike, none is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_and_structured_records_project_alike() {
    let (_dir, b) = backend(2);
    let records = history()
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let payload = serde_json::to_vec(e).unwrap();
            let value = if i % 3 == 0 {
                payload
            } else {
                crate::events::structured::encode(e, &payload).unwrap()
            };
            NewRecord::new(e.key().to_string(), value)
        })
        .collect();
    b.log.append(records).await.unwrap();
    drain(&*b.log, &*b.read, &ProjectorConfig::default()).await;
    let rows = b.read.all_inventory().await.unwrap();
    assert_eq!(rows.len(), 10);
    assert!(
        rows.iter()
            .all(|r| r.version == 10 && r.on_hand == 110 && r.reserved == 10)
    );
    assert!(b.read.dead_letters(10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_go_to_the_dlq_and_the_partition_moves_on() {
    let (_dir, b) = backend(1);
    let good1 = event("a", "l", 1, 5, 0);
    let broken = event("a", "l", 2, 1, -1); // reserved below zero: cannot be applied
    let good2 = event("a", "l", 3, 7, 1);
    let mut records = vec![record(&good1), record(&broken)];
    records.push(NewRecord::new("a", b"{not json".to_vec()));
    records.push(record(&good2));
    b.log.append(records).await.unwrap();
    let config = ProjectorConfig {
        max_attempts: 2,
        ..ProjectorConfig::default()
    };
    drain(&*b.log, &*b.read, &config).await;
    let row = b.read.stock_at("a", "l").await.unwrap().unwrap();
    assert_eq!((row.version, row.on_hand, row.reserved), (3, 7, 1));
    let letters = b.read.dead_letters(10).await.unwrap();
    assert_eq!(
        letters.iter().map(|l| l.offset).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(
        letters[0].error.contains("invariant"),
        "{}",
        letters[0].error
    );
    assert!(letters[1].error.contains("decode"), "{}", letters[1].error);
    assert_eq!(b.read.offset(&config.consumer, 0).await.unwrap(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_what_the_read_models_applied_reaches_the_edge_purge() {
    let (_dir, b) = backend(1);
    let broken = event("b", "l", 1, 1, -1); // cannot be applied: dead-lettered
    let records = vec![
        record(&event("a", "l", 1, 5, 0)),
        record(&broken),
        NewRecord::new("c", b"{not json".to_vec()),
        record(&event("d", "l", 1, 7, 1)),
    ];
    b.log.append(records).await.unwrap();
    let queue = crate::workers::edge_purge::PurgeQueue::new(100);
    let config = ProjectorConfig {
        max_attempts: 1,
        edge_purge: Some(queue.clone()),
        ..ProjectorConfig::default()
    };
    drain(&*b.log, &*b.read, &config).await;
    assert_eq!(queue.pending_skus(), ["a", "d"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_whole_log_twice_changes_nothing() {
    let (_dir, b) = backend(3);
    let mut events = history();
    // Duplicates, as an at-least-once publisher produces after a crash.
    events.extend(history().into_iter().step_by(3));
    b.log
        .append(events.iter().map(record).collect())
        .await
        .unwrap();
    let config = ProjectorConfig::default();
    drain(&*b.log, &*b.read, &config).await;
    let inventory = b.read.all_inventory().await.unwrap();
    let availability = b.read.availability("sku-3", None).await.unwrap();
    assert_eq!(availability[0].quantities.on_hand, 110);
    for p in 0..3 {
        b.read.reset_offset(&config.consumer, p, 0).await.unwrap();
    }
    drain(&*b.log, &*b.read, &config).await;
    assert_eq!(b.read.all_inventory().await.unwrap(), inventory);
    assert_eq!(
        b.read.availability("sku-3", None).await.unwrap(),
        availability
    );
}

#[test]
fn contiguous_cuts_at_the_first_gap_and_skips_redeliveries() {
    let r = |offset| LogRecord {
        partition: 0,
        offset,
        key: String::new(),
        value: Vec::new(),
        timestamp_ms: 0,
        headers: Vec::new(),
    };
    let (kept, gap) = contiguous(vec![r(3), r(4), r(5), r(7), r(8)], 4);
    assert_eq!(
        kept.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![4, 5]
    );
    assert!(gap);
    let (kept, gap) = contiguous(vec![r(6)], 4);
    assert!(kept.is_empty() && gap);
}

/// A full disk (or any failure of the store itself) while projecting is retried until it
/// clears, however long that takes: good events never go to the dead-letter queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_while_projecting_is_retried_and_never_dead_letters() {
    use stockflow_storage::embedded::{FaultInjection, WalPolicy};
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(FaultInjection::default());
    let b = EmbeddedBackend::open_with_faults(dir.path(), 1, WalPolicy::default(), faults.clone())
        .unwrap();
    let events = [event("d", "l", 1, 5, 0), event("d", "l", 2, 6, 1)];
    b.log
        .append(events.iter().map(record).collect())
        .await
        .unwrap();
    let config = ProjectorConfig {
        max_attempts: 2,
        ..ProjectorConfig::default()
    };
    // More failures in a row than a poison record is allowed attempts.
    faults.fail_projections.store(7, Ordering::Release);
    let (mut next, mut failures) = (0, 0);
    while next < b.log.end_offset(0).await.unwrap() {
        match step(&*b.log, &*b.read, &config, 0, next, Duration::ZERO).await {
            Ok(Step::Advanced(to)) => next = to,
            Ok(Step::Idle | Step::Gap) => {}
            Err(_) => failures += 1,
        }
        assert!(failures < 100, "the projection never recovered");
    }
    assert!(failures > 0, "the injected full disk was seen");
    assert!(b.read.dead_letters(10).await.unwrap().is_empty());
    let row = b.read.stock_at("d", "l").await.unwrap().unwrap();
    assert_eq!((row.version, row.on_hand, row.reserved), (2, 6, 1));
}

/// A record lost for good stalls its partition visibly (`Step::Gap`, never `Idle` as if
/// caught up) and nothing after it is applied out of order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_missing_for_good_is_reported_as_a_gap_not_as_caught_up() {
    let (_dir, b) = backend(1);
    let events = [
        event("g", "l", 1, 1, 0),
        event("g", "l", 2, 2, 0),
        event("g", "l", 3, 3, 0),
    ];
    b.log
        .append(events.iter().map(record).collect())
        .await
        .unwrap();
    // A log that has lost offset 1 for good.
    let log = FilteredLog {
        inner: b.log.clone(),
        filter: Box::new(|records| records.retain(|r| r.offset != 1)),
    };
    let config = ProjectorConfig::default();
    let first = step(&log, &*b.read, &config, 0, 0, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(first, Step::Advanced(1));
    for _ in 0..3 {
        let again = step(&log, &*b.read, &config, 0, 1, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(again, Step::Gap);
    }
    let row = b.read.stock_at("g", "l").await.unwrap().unwrap();
    assert_eq!(row.version, 1, "nothing past the hole is applied");
}
