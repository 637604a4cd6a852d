//! The mixed load the region tests run from many clients (adjustments, long reservations
//! confirmed or released, one-second reservations left to expire), what each client's
//! acknowledged commands did, and the three checks that follow it: the write model holds
//! every acknowledged command once, the read model converges on it, and every version of
//! every key is on the topic in order.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stockflow_bus::EventLog;
use stockflow_domain::StockLevel;
use stockflow_storage::ports::WriteStore;
use stockflow_storage::scylla::{ScyllaBackend, ScyllaConfig};
use tokio::task::JoinHandle;

/// What the acknowledged commands did to one key.
#[derive(Debug, Default, Clone, Copy)]
pub struct Expected {
    /// Units on hand.
    pub on_hand: i64,
    /// Units held by reservations that neither expire nor end during the test.
    pub held: i64,
}

/// Sends a command until its outcome is definite: a 503 (or a lost connection) means
/// "unknown, retry with the same key", as the API promises.
pub async fn command(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    key: &str,
    body: Option<&Value>,
) -> u16 {
    for _ in 0..50 {
        let mut request = client
            .post(format!("{base}{path}"))
            .header("idempotency-key", key);
        if let Some(body) = body {
            request = request.json(body);
        }
        match request.send().await {
            Ok(r) if r.status().as_u16() != 503 => return r.status().as_u16(),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    panic!("{path} with key {key} never got a definite answer");
}

/// What one operation of the mixed load is, which decides what its answer does to the
/// expectation.
enum Kind {
    /// An adjustment of +2.
    Receive,
    /// A reservation of an hour, with its id: held until the client ends it.
    Hold(String),
    /// The end of the newest open reservation: a confirm or a release.
    End { confirm: bool },
    /// A one-second reservation, left to expire.
    Brief,
}

/// One client of the mixed load over keys `K0..K{skus}` at location `dc`.
pub struct LoadClient {
    id: usize,
    skus: usize,
    op: usize,
    effects: BTreeMap<String, Expected>,
    open: Vec<(String, String)>,
    /// Commands sent again under their key to another command API, answered alike.
    pub replayed: usize,
}

impl LoadClient {
    /// Client `id` of the load.
    pub fn new(id: usize, skus: usize) -> Self {
        Self {
            id,
            skus,
            op: 0,
            effects: BTreeMap::new(),
            open: Vec::new(),
            replayed: 0,
        }
    }

    /// Operations sent so far.
    pub fn ops(&self) -> usize {
        self.op
    }

    /// Sends its next operation to `base`; with `replay_on`, sends it again under the same
    /// key to that command API too and asserts the same answer (a retry that lands on
    /// another replica, or on another build during an upgrade).
    pub async fn next(&mut self, client: &reqwest::Client, base: &str, replay_on: Option<&str>) {
        let (c, op) = (self.id, self.op);
        self.op += 1;
        let sku = format!("K{}", (c * 7 + op) % self.skus);
        let key = format!("c{c}-op{op}");
        let line = json!([{"sku": sku, "location": "dc", "qty": 1}]);
        let (kind, path, body) = match op % 5 {
            0 => (
                Kind::Receive,
                "/v1/adjustments".to_string(),
                Some(json!({"sku": sku, "location": "dc", "delta": 2, "reason": "receipt"})),
            ),
            1 | 4 => {
                let id = format!("long-{c}-{op}");
                let body = json!({"reservation_id": id, "lines": line, "ttl_seconds": 3600});
                (Kind::Hold(id), "/v1/reservations".to_string(), Some(body))
            }
            2 => match self.open.last() {
                Some((id, _)) => (
                    Kind::End { confirm: true },
                    format!("/v1/reservations/{id}/confirm"),
                    None,
                ),
                None => return,
            },
            _ => match self.open.last() {
                Some((id, _)) if op % 2 == 0 => (
                    Kind::End { confirm: false },
                    format!("/v1/reservations/{id}/release"),
                    None,
                ),
                _ => (
                    Kind::Brief,
                    "/v1/reservations".to_string(),
                    Some(json!({"lines": line, "ttl_seconds": 1})),
                ),
            },
        };
        let status = command(client, base, &path, &key, body.as_ref()).await;
        if let Some(other) = replay_on {
            let again = command(client, other, &path, &key, body.as_ref()).await;
            assert_eq!(
                again, status,
                "{path} under key {key}: {base} answered {status}, {other} {again}"
            );
            self.replayed += 1;
        }
        self.record(kind, &path, sku, status);
    }

    fn record(&mut self, kind: Kind, path: &str, sku: String, status: u16) {
        match kind {
            Kind::Receive => {
                assert_eq!(status, 200, "adjustment answered {status}");
                self.effects.entry(sku).or_default().on_hand += 2;
            }
            Kind::Hold(id) => {
                assert!(matches!(status, 201 | 409), "reserve answered {status}");
                if status == 201 {
                    self.effects.entry(sku.clone()).or_default().held += 1;
                    self.open.push((id, sku));
                }
            }
            Kind::Brief => {
                assert!(matches!(status, 201 | 409), "reserve answered {status}");
            }
            Kind::End { confirm } => {
                assert_eq!(status, 200, "{path} answered {status}");
                let (_, sku) = self.open.pop().expect("an open reservation was ended");
                let e = self.effects.entry(sku).or_default();
                e.held -= 1;
                if confirm {
                    e.on_hand -= 1;
                }
            }
        }
    }

    /// What its acknowledged commands did, per key.
    pub fn effects(&self) -> &BTreeMap<String, Expected> {
        &self.effects
    }
}

/// Sets every key `K0..K{skus}` at `dc` to `stock` units through `base`; the expectation.
pub async fn stock_keys(
    client: &reqwest::Client,
    base: &str,
    skus: usize,
    stock: i64,
) -> BTreeMap<String, Expected> {
    let mut expected = BTreeMap::new();
    for s in 0..skus {
        let sku = format!("K{s}");
        let body =
            json!({"sku": sku, "location": "dc", "set_on_hand": stock, "reason": "cycle_count"});
        let status = command(
            client,
            base,
            "/v1/adjustments",
            &format!("init-{sku}"),
            Some(&body),
        )
        .await;
        assert_eq!(status, 200);
        expected.insert(
            sku,
            Expected {
                on_hand: stock,
                held: 0,
            },
        );
    }
    expected
}

/// Waits for every client of the load and adds what each did to `expected`; returns them.
pub async fn finish(
    load: Vec<JoinHandle<LoadClient>>,
    expected: &mut BTreeMap<String, Expected>,
) -> Vec<LoadClient> {
    let mut clients = Vec::new();
    for task in load {
        let client = task.await.expect("a client task");
        for (sku, e) in client.effects() {
            let slot = expected.entry(sku.clone()).or_default();
            slot.on_hand += e.on_hand;
            slot.held += e.held;
        }
        clients.push(client);
    }
    clients
}

/// The three checks on a region over the keyspace at `nodes`: its write model holds
/// exactly `expected`, the query API at `query` converges on it, and `log` holds every
/// version in order. Returns the stock events read and the versions they carry.
pub async fn region_holds_exactly(
    (nodes, keyspace): (&str, &str),
    client: &reqwest::Client,
    query: &str,
    (log, partitions): (&dyn EventLog, u32),
    expected: &BTreeMap<String, Expected>,
) -> (u64, usize) {
    let config = ScyllaConfig::new(
        nodes.split(',').map(str::to_string).collect(),
        keyspace.to_string(),
    );
    let write = ScyllaBackend::open(&config)
        .await
        .expect("the keyspace opens");
    let levels = write_model_settles(write.write.as_ref(), expected).await;
    read_model_converges(client, query, &levels).await;
    topic_holds_every_version(log, partitions, &levels).await
}

/// Waits until the one-second reservations have expired, then asserts the write model
/// holds exactly what was acknowledged; returns its levels.
pub async fn write_model_settles(
    write: &dyn WriteStore,
    expected: &BTreeMap<String, Expected>,
) -> Vec<StockLevel> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let levels = loop {
        let levels = write
            .all_stock_levels()
            .await
            .expect("the write model reads");
        let settled = levels.iter().all(|l| {
            expected
                .get(l.sku.as_str())
                .is_some_and(|e| l.reserved == e.held)
        });
        if settled && levels.len() == expected.len() {
            break levels;
        }
        assert!(
            Instant::now() < deadline,
            "short reservations did not expire: {levels:?} vs {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for level in &levels {
        let e = expected[level.sku.as_str()];
        assert_eq!(
            (level.on_hand, level.reserved),
            (e.on_hand, e.held),
            "{}: the write model is every acknowledged command, once",
            level.sku
        );
    }
    levels
}

/// Waits until the query API at `query` serves every key as the write model holds it.
pub async fn read_model_converges(client: &reqwest::Client, query: &str, levels: &[StockLevel]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for level in levels {
        loop {
            let body: Value = match client
                .get(format!("{query}/v1/stock/{}/dc", level.sku))
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => r.json().await.unwrap_or(Value::Null),
                _ => Value::Null,
            };
            let read = (
                body["on_hand"].as_i64(),
                body["reserved"].as_i64(),
                body["version"].as_u64(),
            );
            if read
                == (
                    Some(level.on_hand),
                    Some(level.reserved),
                    Some(level.version),
                )
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: read model {read:?} never reached the write model {level:?}",
                level.sku
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Asserts every version of every key is on the topic, in order within its partition
/// (redeliveries repeat versions already seen, never go back); returns the stock events
/// read and the versions they carry.
pub async fn topic_holds_every_version(
    log: &dyn EventLog,
    partitions: u32,
    levels: &[StockLevel],
) -> (u64, usize) {
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut records = 0u64;
    for p in 0..partitions {
        let end = log.end_offset(p).await.expect("the end offset reads");
        let mut next = 0;
        while next < end {
            let batch = log
                .fetch(p, next, 1 << 20, Duration::from_secs(5))
                .await
                .expect("the partition reads");
            assert!(!batch.is_empty(), "partition {p} ends before {end}");
            for record in batch {
                assert_eq!(record.offset, next);
                next += 1;
                let value: Value = serde_json::from_slice(&record.value).expect("an event is JSON");
                // A structured CloudEvent (Fluvio with `--fluvio-cloudevents structured`)
                // carries the event as its data.
                let event = if value["specversion"] == "1.0" {
                    value["data"].clone()
                } else {
                    value
                };
                if event["stream"] != "stock" {
                    continue;
                }
                records += 1;
                let sku = event["sku"].as_str().expect("a stock event names its SKU");
                let version = event["version"].as_u64().expect("a stock event's version");
                let versions = seen.entry(sku.to_string()).or_default();
                let newest = versions.last().copied().unwrap_or(0);
                assert!(
                    version <= newest || version == newest + 1,
                    "{sku}: version {version} follows {newest} on partition {p}"
                );
                if version > newest {
                    versions.push(version);
                }
            }
        }
    }
    for level in levels {
        assert_eq!(
            seen.get(level.sku.as_str()).map(Vec::len),
            usize::try_from(level.version).ok(),
            "{}: versions 1..={} on the topic",
            level.sku,
            level.version
        );
    }
    (records, seen.values().map(Vec::len).sum())
}
