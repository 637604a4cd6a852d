//! The behaviour every [`EventLog`] adapter must show, run by each adapter's tests against
//! a real log (the embedded SQLite log, a Kafka broker, a Fluvio cluster).
//!
//! Each check starts from the partitions' end offsets at the time, so the suite also runs
//! on a topic that already holds records.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stockflow_domain::partition_for_key;

use crate::port::{EventLog, LogRecord, NewRecord};

/// Long enough for a real broker, short enough for an empty poll.
const WAIT: Duration = Duration::from_secs(5);

async fn end_offsets(log: &dyn EventLog) -> Vec<u64> {
    let mut out = Vec::new();
    for p in 0..log.partitions() {
        out.push(log.end_offset(p).await.unwrap());
    }
    out
}

/// Reads `partition` from `from` until `count` records arrived, fetch by fetch, checking
/// that offsets continue exactly.
async fn read_exactly(
    log: &dyn EventLog,
    partition: u32,
    from: u64,
    count: usize,
    max_bytes: usize,
) -> Vec<LogRecord> {
    let mut out: Vec<LogRecord> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < count {
        assert!(
            Instant::now() < deadline,
            "partition {partition}: {} of {count} records after 30 s",
            out.len()
        );
        let next = from + out.len() as u64;
        let batch = log.fetch(partition, next, max_bytes, WAIT).await.unwrap();
        for (i, r) in batch.iter().enumerate() {
            assert_eq!(r.partition, partition);
            assert_eq!(r.offset, next + i as u64, "offsets are contiguous");
        }
        out.extend(batch);
    }
    out
}

/// Runs every check.
pub async fn event_log_contract(log: Arc<dyn EventLog>) {
    partition_by_key_in_append_order(&*log).await;
    tiny_fetches_return_one_record_each(&*log).await;
    resumes_from_any_stored_offset(&*log).await;
    empty_fetch_waits_then_returns_nothing(&*log).await;
    long_poll_returns_a_record_appended_while_waiting(log.clone()).await;
    concurrent_appends_keep_each_keys_order(log.clone()).await;
    a_large_backlog_arrives_whole_in_small_fetches(&*log).await;
    headers_come_back_where_the_log_keeps_them(&*log).await;
}

/// A record's headers are read back as appended on a log that keeps headers, and dropped
/// (never mixed into key or payload) on one that does not.
pub async fn headers_come_back_where_the_log_keeps_them(log: &dyn EventLog) {
    let key = "headers";
    let partition = partition_for_key(key.as_bytes(), log.partitions());
    let from = log.end_offset(partition).await.unwrap();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut record = NewRecord::new(key, b"with headers".to_vec());
    record.headers = vec![
        ("traceparent".into(), traceparent.into()),
        ("tracestate".into(), "vendor=1".into()),
    ];
    let placed = log
        .append(vec![record, NewRecord::new(key, b"without".to_vec())])
        .await
        .unwrap();
    assert_eq!(placed[0], (partition, from));
    let read = read_exactly(log, partition, from, 2, 1 << 20).await;
    assert_eq!(read[0].value, b"with headers");
    assert_eq!(read[0].key, key);
    if log.keeps_headers() {
        assert_eq!(
            read[0].headers,
            [
                ("traceparent".to_string(), traceparent.to_string()),
                ("tracestate".to_string(), "vendor=1".to_string())
            ]
        );
    } else {
        assert!(read[0].headers.is_empty(), "{:?}", read[0].headers);
    }
    assert!(read[1].headers.is_empty(), "{:?}", read[1].headers);
}

/// Each record lands in `partition_for_key(key)`, at the offset the append reported, in
/// append order.
pub async fn partition_by_key_in_append_order(log: &dyn EventLog) {
    let n = log.partitions();
    let before = end_offsets(log).await;
    let records: Vec<NewRecord> = (0..50)
        .map(|i| {
            NewRecord::new(
                format!("sku-{}", i % 7),
                format!("{i:04}").into_bytes().repeat(25 + i),
            )
        })
        .collect();
    let assigned = log.append(records.clone()).await.unwrap();
    assert_eq!(assigned.len(), records.len());
    let mut per_partition: BTreeMap<u32, Vec<(&NewRecord, u64)>> = BTreeMap::new();
    for (record, (partition, offset)) in records.iter().zip(&assigned) {
        assert_eq!(
            *partition,
            partition_for_key(record.key.as_bytes(), n),
            "the partition is the project's partitioner of the key"
        );
        per_partition
            .entry(*partition)
            .or_default()
            .push((record, *offset));
    }
    for (p, appended) in per_partition {
        let from = before[p as usize];
        let read = read_exactly(log, p, from, appended.len(), usize::MAX).await;
        for ((record, offset), got) in appended.iter().zip(&read) {
            assert_eq!(got.offset, *offset, "reported offset is where it is");
            assert_eq!((&got.key, &got.value), (&record.key, &record.value));
        }
        assert_eq!(
            log.end_offset(p).await.unwrap(),
            from + appended.len() as u64
        );
    }
}

/// A `max_bytes` smaller than any record still returns one record per fetch, and walking
/// offset by offset delivers every record.
pub async fn tiny_fetches_return_one_record_each(log: &dyn EventLog) {
    let key = "tiny-fetch-sku";
    let p = partition_for_key(key.as_bytes(), log.partitions());
    let from = log.end_offset(p).await.unwrap();
    let records: Vec<NewRecord> = (0..20)
        .map(|i| NewRecord::new(key, format!("tiny-{i}").into_bytes()))
        .collect();
    log.append(records.clone()).await.unwrap();
    let mut got = Vec::new();
    for i in 0..records.len() as u64 {
        let batch = log.fetch(p, from + i, 1, WAIT).await.unwrap();
        assert!(!batch.is_empty(), "a fetch returns at least one record");
        assert_eq!(batch[0].offset, from + i);
        got.push(batch[0].value.clone());
    }
    let expected: Vec<Vec<u8>> = records.into_iter().map(|r| r.value).collect();
    assert_eq!(got, expected);
}

/// A consumer restarting from a stored offset reads from exactly there, forwards and
/// backwards (a replay re-reads what it already saw).
pub async fn resumes_from_any_stored_offset(log: &dyn EventLog) {
    let key = "resume-sku";
    let p = partition_for_key(key.as_bytes(), log.partitions());
    let from = log.end_offset(p).await.unwrap();
    let records: Vec<NewRecord> = (0..30)
        .map(|i| NewRecord::new(key, format!("resume-{i}").into_bytes()))
        .collect();
    log.append(records).await.unwrap();
    for start in [17u64, 3, 29, 0, 17] {
        let batch = log.fetch(p, from + start, usize::MAX, WAIT).await.unwrap();
        assert!(!batch.is_empty());
        assert_eq!(batch[0].offset, from + start);
        assert_eq!(batch[0].value, format!("resume-{start}").into_bytes());
    }
    let all = read_exactly(log, p, from, 30, usize::MAX).await;
    assert_eq!(all.len(), 30);
}

/// At the end of a partition a fetch waits up to `max_wait`, then returns nothing.
pub async fn empty_fetch_waits_then_returns_nothing(log: &dyn EventLog) {
    let p = log.partitions() - 1;
    let end = log.end_offset(p).await.unwrap();
    let wait = Duration::from_millis(300);
    let started = Instant::now();
    let batch = log.fetch(p, end, usize::MAX, wait).await.unwrap();
    assert!(batch.is_empty(), "nothing past the end");
    assert!(
        started.elapsed() >= wait - Duration::from_millis(50),
        "an empty fetch is a long poll, not a spin"
    );
}

/// A fetch waiting at the end of a partition returns a record appended meanwhile, well
/// before its `max_wait` runs out.
pub async fn long_poll_returns_a_record_appended_while_waiting(log: Arc<dyn EventLog>) {
    let key = "long-poll-sku";
    let p = partition_for_key(key.as_bytes(), log.partitions());
    let end = log.end_offset(p).await.unwrap();
    // Prime the reader at the end, as a caught-up consumer would be.
    let _ = log
        .fetch(p, end, usize::MAX, Duration::from_millis(50))
        .await
        .unwrap();
    let waiting = {
        let log = log.clone();
        tokio::spawn(async move {
            log.fetch(p, end, usize::MAX, Duration::from_secs(20))
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    log.append(vec![NewRecord::new(key, b"woken".to_vec())])
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting fetch returns once a record arrives")
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].offset, got[0].value.as_slice()),
        (end, &b"woken"[..])
    );
}

/// Appends racing from several tasks keep each key's records in the order its task
/// appended them.
pub async fn concurrent_appends_keep_each_keys_order(log: Arc<dyn EventLog>) {
    let keys: Vec<String> = (0..6).map(|i| format!("race-sku-{i}")).collect();
    let before = end_offsets(&*log).await;
    let mut tasks = Vec::new();
    for key in keys.clone() {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..40u32 {
                log.append(vec![NewRecord::new(key.clone(), i.to_be_bytes().to_vec())])
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let after = end_offsets(&*log).await;
    let mut seen: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for p in 0..log.partitions() {
        let count = usize::try_from(after[p as usize] - before[p as usize]).unwrap();
        for r in read_exactly(&*log, p, before[p as usize], count, usize::MAX).await {
            let value: [u8; 4] = r.value.as_slice().try_into().unwrap();
            seen.entry(r.key)
                .or_default()
                .push(u32::from_be_bytes(value));
        }
    }
    for key in keys {
        assert_eq!(
            seen.get(&key).cloned().unwrap_or_default(),
            (0..40).collect::<Vec<u32>>(),
            "{key}: every record once, in order"
        );
    }
}

/// A backlog far larger than one fetch arrives whole and contiguous through fetches of a
/// few records each (the Fluvio 0.50.1 client drops the rest of a batch at `max_bytes`;
/// its adapter must re-read, never skip).
pub async fn a_large_backlog_arrives_whole_in_small_fetches(log: &dyn EventLog) {
    let key = "backlog-sku";
    let p = partition_for_key(key.as_bytes(), log.partitions());
    let from = log.end_offset(p).await.unwrap();
    let records: Vec<NewRecord> = (0..600)
        .map(|i| {
            NewRecord::new(
                key,
                format!("backlog-{i:05}-{}", "x".repeat(90)).into_bytes(),
            )
        })
        .collect();
    for chunk in records.chunks(100) {
        log.append(chunk.to_vec()).await.unwrap();
    }
    let read = read_exactly(log, p, from, records.len(), 600).await;
    let expected: Vec<&Vec<u8>> = records.iter().map(|r| &r.value).collect();
    let got: Vec<&Vec<u8>> = read.iter().map(|r| &r.value).collect();
    assert_eq!(got, expected, "every record once, in order");
}
