//! What the publisher writes for consumers that are not ours, on the real embedded stores:
//! headers where the bus keeps them, the structured CloudEvent where it does not and it is
//! asked for, the bare event otherwise.

use std::sync::Arc;

use async_trait::async_trait;
use cloudevents::AttributesReader;
use stockflow_bus::{EventLog, LogRecord};
use stockflow_domain::{
    Adjust, AdjustReason, Command, Location, LocationGrant, LocationId, LocationKind, OnHandChange,
    Region, Sku, StockKey,
};
use stockflow_storage::embedded::{EmbeddedBackend, SqliteEventLog, WalPolicy};
use stockflow_storage::ports::{CommandRequest, WriteStore};

use super::*;

/// A log that drops headers, as Fluvio's records do: the embedded log underneath.
struct Headerless(Arc<SqliteEventLog>);

#[async_trait]
impl EventLog for Headerless {
    fn partitions(&self) -> u32 {
        self.0.partitions()
    }
    fn identity(&self) -> String {
        self.0.identity()
    }
    async fn append(&self, mut records: Vec<NewRecord>) -> stockflow_bus::Result<Vec<(u32, u64)>> {
        records.iter_mut().for_each(|r| r.headers.clear());
        self.0.append(records).await
    }
    async fn fetch(
        &self,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        max_wait: Duration,
    ) -> stockflow_bus::Result<Vec<LogRecord>> {
        self.0.fetch(partition, offset, max_bytes, max_wait).await
    }
    async fn end_offset(&self, partition: u32) -> stockflow_bus::Result<u64> {
        self.0.end_offset(partition).await
    }
    async fn check_ready(&self) -> stockflow_bus::Result<()> {
        Ok(())
    }
}

/// Adjusts SKUs `P0` and `P1` at `s1` once each, leaving two entries in the outbox.
async fn two_changes(b: &EmbeddedBackend) {
    for sku in ["P0", "P1"] {
        let key = StockKey::new(
            Sku::parse(sku).expect("a SKU"),
            LocationId::parse("s1").expect("a location"),
        );
        let adjust = Adjust::new(
            key,
            OnHandChange::Delta(3),
            AdjustReason::Receipt,
            None,
            None,
        )
        .expect("an adjustment");
        b.write
            .execute(CommandRequest {
                command: Command::Adjust(adjust),
                idempotency: None,
                trace_context: None,
                actor: None,
                grant: LocationGrant::Any,
            })
            .await
            .expect("executed")
            .answer
            .expect("applied");
    }
}

/// Every record of `log`, with the event each holds.
async fn records(log: &dyn EventLog) -> Vec<(LogRecord, BusEvent)> {
    let mut out = Vec::new();
    for partition in 0..log.partitions() {
        let read = log
            .fetch(partition, 0, 1 << 20, Duration::ZERO)
            .await
            .expect("fetched");
        out.extend(read.into_iter().map(|r| {
            let event = structured::event_of(&r.value).expect("an event");
            (r, event)
        }));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bus_gets_the_cloudevents_form_it_can_carry() {
    let dir = tempfile::tempdir().expect("a directory");
    let b = EmbeddedBackend::open(&dir.path().join("data"), 2).expect("a backend");
    b.write
        .put_location(Location {
            id: LocationId::parse("s1").expect("a location"),
            region: Region::parse("north").expect("a region"),
            kind: LocationKind::Store,
            name: "S1".into(),
        })
        .await
        .expect("stored")
        .expect("accepted");
    let shards: BTreeSet<u32> = (0..b.write.shards()).collect();
    let other_log = |name: &str| {
        Arc::new(
            SqliteEventLog::open(&dir.path().join(name), 2, WalPolicy::default()).expect("a log"),
        )
    };

    // A bus without headers, asked for structured events: a CloudEvent the CNCF SDK reads,
    // whose data is the event.
    two_changes(&b).await;
    let fluvio_like = Headerless(other_log("structured.db"));
    let structured_config = PublisherConfig {
        structured_events: true,
        ..PublisherConfig::default()
    };
    assert_eq!(
        publish_batch(&*b.write, &fluvio_like, &shards, &structured_config)
            .await
            .expect("published"),
        2
    );
    let published = records(&fluvio_like).await;
    assert_eq!(published.len(), 2);
    for (record, event) in &published {
        assert!(record.headers.is_empty());
        let ce: cloudevents::Event = serde_json::from_slice(&record.value).expect("a CloudEvent");
        assert_eq!(ce.ty(), "dev.stockflow.stock.adjusted.v1");
        assert_eq!(ce.id(), event.event_id());
        assert_eq!(ce.subject(), Some(format!("{}/s1", record.key).as_str()));
    }

    // The same bus not asked: the bare event, as older readers take it.
    two_changes(&b).await;
    let bare_log = Headerless(other_log("bare.db"));
    assert_eq!(
        publish_batch(&*b.write, &bare_log, &shards, &PublisherConfig::default())
            .await
            .expect("published"),
        2
    );
    for (record, event) in records(&bare_log).await {
        assert_eq!(
            serde_json::from_slice::<BusEvent>(&record.value).expect("bare JSON"),
            event
        );
    }

    // A bus that keeps headers: the bare event with the attributes as headers, whatever the
    // setting.
    two_changes(&b).await;
    assert_eq!(
        publish_batch(&*b.write, &*b.log, &shards, &structured_config)
            .await
            .expect("published"),
        2
    );
    for (record, event) in records(&*b.log).await {
        assert_eq!(
            serde_json::from_slice::<BusEvent>(&record.value).expect("bare JSON"),
            event
        );
        let ce_type = record.headers.iter().find(|(k, _)| k == headers::TYPE);
        assert_eq!(
            ce_type.map(|(_, v)| v.as_str()),
            Some("dev.stockflow.stock.adjusted.v1")
        );
    }
}
