//! A rolling upgrade with both builds serving: the previous release's roles (command API,
//! query API, publisher, projector, as separate processes over Cassandra and Kafka) run a
//! region under a mixed load; this build's migration runs under them, as the operator's Job
//! does; this build's roles start beside them and the two builds serve together for
//! [`MIXED_FOR`], every command sent to one build and retried under its key on the other;
//! then the old roles stop. Throughout, every role of both builds stays ready, and at the
//! end every acknowledged command is in the write model exactly once, the new query API
//! serves every key as written, and every version of every key is on the topic in order.
//!
//! The previous release's binary comes from `scripts/previous-release.sh`
//! (`STOCKFLOW_PREVIOUS_BIN`, which the test command sets, like `STOCKFLOW_CQL_NODES` and
//! `STOCKFLOW_KAFKA_BROKERS`); the test fails without them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use stockflow_bus::kafka::{KafkaConfig, KafkaEventLog};
use stockflow_e2e::mixed_load::{LoadClient, finish, region_holds_exactly, stock_keys};
use stockflow_e2e::{
    RoleProcess, migrate_keyspace_with, put_warehouse, region_env, required, stockflow_bin,
};

const SKUS: usize = 12;
const STOCK: i64 = 200;
const PARTITIONS: u32 = 4;
const CLIENTS: usize = 6;
/// How long both builds serve the region together.
const MIXED_FOR: Duration = Duration::from_secs(60);

/// One build's replica of each role the region runs.
struct Roles {
    build: &'static str,
    command: RoleProcess,
    query: RoleProcess,
    publisher: RoleProcess,
    projector: RoleProcess,
}

impl Roles {
    async fn start(build: &'static str, bin: &Path, env: &[(String, String)], dir: &Path) -> Self {
        Self {
            build,
            command: RoleProcess::start_from(bin, "command-api", env, dir).await,
            query: RoleProcess::start_from(bin, "query-api", env, dir).await,
            publisher: RoleProcess::start_from(bin, "publisher", env, dir).await,
            projector: RoleProcess::start_from(bin, "projector", env, dir).await,
        }
    }

    fn each(&self) -> [&RoleProcess; 4] {
        [&self.command, &self.query, &self.publisher, &self.projector]
    }

    /// Asserts every role answers `/readyz` with 200 now (not eventually).
    async fn assert_ready(&self, client: &reqwest::Client, when: &str) {
        for role in self.each() {
            let status = client
                .get(format!("{}/readyz", role.base()))
                .send()
                .await
                .map_or(0, |r| r.status().as_u16());
            assert_eq!(
                status, 200,
                "{} {} is not ready {when}",
                self.build, role.role
            );
        }
    }

    /// SIGTERM to each, as a rollout ends a pod; each exits cleanly.
    fn stop(self) {
        for role in [self.command, self.publisher, self.projector, self.query] {
            role.stop();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)]
async fn both_builds_serve_one_region_through_a_rolling_upgrade() {
    let previous = PathBuf::from(required("STOCKFLOW_PREVIOUS_BIN"));
    let current = stockflow_bin();
    let nodes = required("STOCKFLOW_CQL_NODES");
    let brokers = required("STOCKFLOW_KAFKA_BROKERS");
    let run = std::process::id();
    let keyspace = format!("upgrade_{run}");
    let region = format!("upgrade{run}");
    let topic = stockflow_bus::default_topic(&region);

    // The region as the previous release made it: its schema, its topic, its roles.
    migrate_keyspace_with(&previous, &nodes, &keyspace);
    let log = KafkaEventLog::connect(KafkaConfig::new(
        brokers.split(',').map(str::to_string).collect(),
        topic,
        PARTITIONS,
    ))
    .await
    .expect("the Kafka topic is created");
    let workdir = tempfile::tempdir().expect("a working directory");
    let bus = vec![
        ("STOCKFLOW_BUS", "kafka".to_string()),
        ("STOCKFLOW_KAFKA_BROKERS", brokers.clone()),
    ];
    let env = region_env((&nodes, &keyspace), &region, PARTITIONS, bus);
    let old = Roles::start("previous", &previous, &env, workdir.path()).await;
    let client = reqwest::Client::new();
    put_warehouse(&client, &old.command.base(), "dc", "north").await;
    let mut expected = stock_keys(&client, &old.command.base(), SKUS, STOCK).await;

    // The load: each client sends each command to one of the command APIs in service and,
    // while there are two, again under the same key to the other.
    let serving = Arc::new(RwLock::new(vec![old.command.base()]));
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for c in 0..CLIENTS {
        let (client, serving, stop) = (client.clone(), serving.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut me = LoadClient::new(c, SKUS);
            while !stop.load(Ordering::Relaxed) {
                let bases = serving.read().expect("the serving list").clone();
                let first = (c + me.ops()) % bases.len();
                let other = (bases.len() > 1).then(|| bases[(first + 1) % bases.len()].as_str());
                me.next(&client, &bases[first], other).await;
            }
            me
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    // This build's migration runs under the old roles, which keep serving on it.
    migrate_keyspace_with(&current, &nodes, &keyspace);
    old.assert_ready(&client, "on the new schema").await;

    // This build's roles beside them: both serve, each command goes to both builds.
    let new = Roles::start("current", &current, &env, workdir.path()).await;
    serving
        .write()
        .expect("the serving list")
        .push(new.command.base());
    let mixed_until = Instant::now() + MIXED_FOR;
    while Instant::now() < mixed_until {
        tokio::time::sleep(Duration::from_secs(5)).await;
        old.assert_ready(&client, "beside the new build").await;
        new.assert_ready(&client, "beside the previous build").await;
        for query in [&old.query, &new.query] {
            let r = client
                .get(format!("{}/v1/stock/K0/dc", query.base()))
                .send()
                .await
                .expect("the query API answers");
            assert_eq!(r.status(), 200, "{} serves K0", query.base());
        }
    }

    // The rollout ends: the old command API leaves the Service first, then every old pod
    // stops; the new build carries on alone for a while.
    serving
        .write()
        .expect("the serving list")
        .retain(|base| *base != old.command.base());
    tokio::time::sleep(Duration::from_millis(500)).await;
    old.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let clients = finish(load, &mut expected).await;
    let (records, versions) = region_holds_exactly(
        (&nodes, &keyspace),
        &client,
        &new.query.base(),
        (&log, PARTITIONS),
        &expected,
    )
    .await;
    let ops: usize = clients.iter().map(LoadClient::ops).sum();
    let replayed: usize = clients.iter().map(|c| c.replayed).sum();
    eprintln!(
        "{ops} client operations over {SKUS} keys, {replayed} of them sent again to the other build and answered alike; {records} stock events on the topic for {versions} versions"
    );
    assert!(
        replayed > 0,
        "no command went to both builds: the mixed window saw no load"
    );
    new.assert_ready(&client, "after the rollout").await;
    new.stop();
}
