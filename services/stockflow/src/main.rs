//! The `stockflow` binary: one executable, several roles.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use stockflow::http::Routes;
use stockflow::{app, bench, telemetry};
use stockflow_bus::fluvio::FluvioConfig;
use stockflow_bus::kafka::KafkaConfig;
use stockflow_storage::scylla::{self, Replication, ScyllaConfig};

// The request path allocates many small, short-lived buffers across threads; mimalloc
// handles that pattern with far less contention than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "stockflow", version, about = "Distributed retail inventory")]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "STOCKFLOW_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Run every role in one process on the embedded backend (a data directory, no servers).
    Dev {
        /// Where the data lives (created if missing).
        #[arg(long, env = "STOCKFLOW_DATA_DIR", default_value = "stockflow-data")]
        data_dir: PathBuf,
        /// Address for the command and query APIs.
        #[arg(long, env = "STOCKFLOW_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Event-log partitions (fixed when the data directory or topic is created).
        #[arg(long, alias = "bus-partitions", env = "STOCKFLOW_PARTITIONS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
        partitions: u32,
        /// Where the write and read sides live.
        #[arg(long, env = "STOCKFLOW_STORE", value_enum, default_value = "embedded")]
        store: Store,
        #[command(flatten)]
        scylla: ScyllaArgs,
        #[command(flatten)]
        bus: BusArgs,
        #[command(flatten)]
        commands: CommandArgs,
    },
    /// Command API over ScyllaDB: commands and reservation expiry (several replicas are
    /// safe: every change is a Paxos-guarded command).
    CommandApi(RoleArgs),
    /// Query API over ScyllaDB: the read models, and dead-letter administration.
    QueryApi(RoleArgs),
    /// Outbox publisher: ScyllaDB outbox → bus. Replicas split the outbox shards by leases.
    Publisher(RoleArgs),
    /// Projector: bus → read models on ScyllaDB. Replicas split the topic's partitions by
    /// leases.
    Projector(RoleArgs),
    /// Create the ScyllaDB keyspace and tables (idempotent) and record the schema version;
    /// with `--bus kafka|fluvio`, also create the region's topic (idempotent; a topic with
    /// another partition count is refused).
    Migrate {
        #[command(flatten)]
        scylla: ScyllaArgs,
        #[command(flatten)]
        bus: BusArgs,
        /// Partitions of the region's topic.
        #[arg(long, alias = "bus-partitions", env = "STOCKFLOW_PARTITIONS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
        partitions: u32,
    },
    /// Drive load against a running stockflow and report throughput, latency and lag.
    Bench(bench::BenchArgs),
    /// Measure the raw LWT ceiling of a CQL server with the service's conditional batch.
    BenchLwt(bench::LwtArgs),
}

/// Settings of a distributed role. Nothing is kept on local disk.
#[derive(Debug, Args)]
struct RoleArgs {
    /// Address for HTTP (API, /healthz, /readyz, /metrics).
    #[arg(long, env = "STOCKFLOW_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Partitions of the region's topic.
    #[arg(long, alias = "bus-partitions", env = "STOCKFLOW_PARTITIONS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    partitions: u32,
    /// How often the publisher reads every outbox marker of its shards, in milliseconds:
    /// the longest a committed change waits before it is published.
    #[arg(long, env = "STOCKFLOW_OUTBOX_SCAN_MS", default_value_t = 250, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    outbox_scan_ms: u64,
    #[command(flatten)]
    scylla: ScyllaArgs,
    #[command(flatten)]
    bus: BusArgs,
    #[command(flatten)]
    commands: CommandArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Bus {
    /// The SQLite log in the data directory (`stockflow dev` only).
    Embedded,
    /// Apache Kafka or a compatible broker (Redpanda, managed Kafka).
    Kafka,
    /// Fluvio.
    Fluvio,
}

/// Settings of the command API.
#[derive(Debug, Args)]
struct CommandArgs {
    /// TTL of a reservation whose request names none, in seconds.
    #[arg(long, env = "STOCKFLOW_RESERVATION_TTL_SECONDS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    reservation_ttl_seconds: u64,
}

/// Which bus carries the region's events.
#[derive(Debug, Args)]
struct BusArgs {
    /// The event bus.
    #[arg(long, env = "STOCKFLOW_BUS", value_enum, default_value = "embedded")]
    bus: Bus,
    /// The region, which names the default topic.
    #[arg(long, env = "STOCKFLOW_REGION", default_value = "dev")]
    region: String,
    /// The topic (default `stockflow-<region>-stock-events`).
    #[arg(long, env = "STOCKFLOW_BUS_TOPIC")]
    bus_topic: Option<String>,
    /// Replication factor of a topic this process creates.
    #[arg(long, env = "STOCKFLOW_BUS_REPLICATION", default_value_t = 1)]
    bus_replication: u16,
    /// Create the topic when missing (default: yes for `dev`, no for the roles, whose
    /// topic the operator creates).
    #[arg(long, env = "STOCKFLOW_BUS_CREATE_TOPIC")]
    bus_create_topic: Option<bool>,
    /// Kafka bootstrap brokers, comma-separated `host:port`.
    #[arg(long, env = "STOCKFLOW_KAFKA_BROKERS", value_delimiter = ',')]
    kafka_brokers: Vec<String>,
    /// Extra librdkafka settings, `key=value` (repeat, or comma-separate in the env), e.g.
    /// `security.protocol=SASL_SSL`.
    #[arg(
        long = "kafka-option",
        env = "STOCKFLOW_KAFKA_OPTIONS",
        value_delimiter = ','
    )]
    kafka_options: Vec<String>,
    /// Fluvio's SC public endpoint, `host:port`.
    #[arg(long, env = "STOCKFLOW_FLUVIO_ENDPOINT")]
    fluvio_endpoint: Option<String>,
    /// Bytes a Fluvio consumer stream asks for per fetch.
    #[arg(long, env = "STOCKFLOW_FLUVIO_MAX_FETCH_BYTES", default_value_t = 1 << 20, value_parser = clap::value_parser!(i32).range(64..))]
    fluvio_max_fetch_bytes: i32,
}

impl BusArgs {
    fn topic(&self) -> String {
        self.bus_topic
            .clone()
            .unwrap_or_else(|| stockflow_bus::default_topic(&self.region))
    }

    fn config(&self, partitions: u32, create_by_default: bool) -> Result<app::BusConfig, String> {
        match self.bus {
            Bus::Embedded => Ok(app::BusConfig::Embedded),
            Bus::Fluvio => {
                let endpoint = self
                    .fluvio_endpoint
                    .clone()
                    .ok_or("--bus fluvio needs --fluvio-endpoint (or STOCKFLOW_FLUVIO_ENDPOINT)")?;
                let mut config = FluvioConfig::new(endpoint, self.topic(), partitions);
                config.replication = u32::from(self.bus_replication);
                config.create_topic = self.bus_create_topic.unwrap_or(create_by_default);
                config.max_fetch_bytes = self.fluvio_max_fetch_bytes;
                Ok(app::BusConfig::Fluvio(config))
            }
            Bus::Kafka => {
                if self.kafka_brokers.is_empty() {
                    return Err(
                        "--bus kafka needs --kafka-brokers (or STOCKFLOW_KAFKA_BROKERS)".into(),
                    );
                }
                let mut config =
                    KafkaConfig::new(self.kafka_brokers.clone(), self.topic(), partitions);
                config.replication = self.bus_replication;
                config.create_topic = self.bus_create_topic.unwrap_or(create_by_default);
                for option in &self.kafka_options {
                    let (k, v) = option.split_once('=').ok_or_else(|| {
                        format!("--kafka-option: expected key=value, got {option:?}")
                    })?;
                    config
                        .options
                        .push((k.trim().to_string(), v.trim().to_string()));
                }
                Ok(app::BusConfig::Kafka(config))
            }
        }
    }
}

/// What a role runs and serves.
struct RoleKind {
    name: &'static str,
    workers: app::Workers,
    routes: Routes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Store {
    /// SQLite files in the data directory.
    Embedded,
    /// ScyllaDB or Cassandra (with the embedded bus, the log stays in the data directory).
    Scylla,
}

#[derive(Debug, Args)]
struct ScyllaArgs {
    /// Contact points, comma-separated `host:port`.
    #[arg(
        long,
        env = "STOCKFLOW_SCYLLA_NODES",
        value_delimiter = ',',
        default_value = "127.0.0.1:9042"
    )]
    scylla_nodes: Vec<String>,
    /// Keyspace.
    #[arg(long, env = "STOCKFLOW_SCYLLA_KEYSPACE", default_value = "stockflow")]
    scylla_keyspace: String,
    /// Local datacenter (LOCAL_QUORUM / LOCAL_SERIAL, and the default replication).
    #[arg(long, env = "STOCKFLOW_SCYLLA_LOCAL_DC", default_value = "datacenter1")]
    scylla_local_dc: String,
    /// Replication per datacenter for a new keyspace, `dc:rf[,dc:rf]` (default: local DC, 3).
    #[arg(long, env = "STOCKFLOW_SCYLLA_REPLICATION")]
    scylla_replication: Option<String>,
    /// ScyllaDB only: create the keyspace with `tablets = {'enabled': ...}`.
    #[arg(long, env = "STOCKFLOW_SCYLLA_TABLETS")]
    scylla_tablets: Option<bool>,
    /// Username, when authentication is on.
    #[arg(long, env = "STOCKFLOW_SCYLLA_USER")]
    scylla_user: Option<String>,
    /// Password (prefer the environment variable).
    #[arg(long, env = "STOCKFLOW_SCYLLA_PASSWORD", hide_env_values = true)]
    scylla_password: Option<String>,
}

impl ScyllaArgs {
    fn config(&self) -> ScyllaConfig {
        let mut config = ScyllaConfig::new(self.scylla_nodes.clone(), self.scylla_keyspace.clone());
        config.local_dc = Some(self.scylla_local_dc.clone());
        if let (Some(user), Some(password)) = (&self.scylla_user, &self.scylla_password) {
            config.credentials = Some((user.clone(), password.clone()));
        }
        config
    }

    fn replication(&self, default_rf: u32) -> Result<Replication, String> {
        let Some(spec) = &self.scylla_replication else {
            return Ok(Replication::NetworkTopology(vec![(
                self.scylla_local_dc.clone(),
                default_rf,
            )]));
        };
        let mut dcs = Vec::new();
        for part in spec.split(',') {
            let (dc, rf) = part
                .split_once(':')
                .ok_or_else(|| format!("--scylla-replication: expected dc:rf, got {part:?}"))?;
            let rf = rf
                .parse()
                .map_err(|_| format!("--scylla-replication: {rf:?} is not a replication factor"))?;
            dcs.push((dc.to_string(), rf));
        }
        Ok(Replication::NetworkTopology(dcs))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_tracing(cli.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.role {
            Role::Dev {
                data_dir,
                listen,
                partitions,
                store,
                scylla,
                bus,
                commands,
            } => {
                let store = match store {
                    Store::Embedded => app::StoreConfig::Embedded,
                    // dev creates what it needs: a single-node replication by default.
                    Store::Scylla => app::StoreConfig::Scylla {
                        config: scylla.config(),
                        create: Some((scylla.replication(1)?, scylla.scylla_tablets)),
                    },
                };
                let bus = bus.config(partitions, true)?;
                let mut config = app::DevConfig::new(data_dir);
                config.partitions = partitions;
                config.store = store;
                config.bus = bus;
                config.reservation_ttl_seconds = commands.reservation_ttl_seconds;
                serve(listen, config).await
            }
            Role::Migrate {
                scylla,
                bus,
                partitions,
            } => {
                let bus = bus.config(partitions, true)?;
                migrate(&scylla, &bus).await
            }
            Role::CommandApi(args) => {
                run_role(
                    args,
                    RoleKind {
                        name: "command-api",
                        workers: app::Workers {
                            expire: true,
                            ..app::Workers::NONE
                        },
                        routes: Routes::COMMANDS,
                    },
                )
                .await
            }
            Role::QueryApi(args) => {
                run_role(
                    args,
                    RoleKind {
                        name: "query-api",
                        workers: app::Workers::NONE,
                        routes: Routes::QUERIES,
                    },
                )
                .await
            }
            Role::Publisher(args) => {
                run_role(
                    args,
                    RoleKind {
                        name: "publisher",
                        workers: app::Workers {
                            publish: true,
                            ..app::Workers::NONE
                        },
                        routes: Routes::NONE,
                    },
                )
                .await
            }
            Role::Projector(args) => {
                run_role(
                    args,
                    RoleKind {
                        name: "projector",
                        workers: app::Workers {
                            project: true,
                            ..app::Workers::NONE
                        },
                        routes: Routes::PROJECTOR,
                    },
                )
                .await
            }
            Role::Bench(args) => bench::run(args).await.map_err(|e| e.to_string()),
            Role::BenchLwt(args) => bench::run_lwt(args).await.map_err(|e| e.to_string()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_role(args: RoleArgs, role: RoleKind) -> Result<(), String> {
    let bus = args.bus.config(args.partitions, false)?;
    let needs_bus = role.workers.publish || role.workers.project;
    if needs_bus && matches!(bus, app::BusConfig::Embedded) {
        return Err(format!(
            "the {} role needs a bus shared by every replica: --bus kafka --kafka-brokers HOST:PORT \
             or --bus fluvio --fluvio-endpoint HOST:PORT \
             (the embedded log lives inside one process; `stockflow dev` runs everything over it)",
            role.name
        ));
    }
    // No data directory: a role over ScyllaDB and a bus keeps nothing on local disk.
    let mut config = app::DevConfig::new(PathBuf::new());
    config.partitions = args.partitions;
    // Roles never create schema: `stockflow migrate` (the operator's Job) does.
    config.store = app::StoreConfig::Scylla {
        config: args.scylla.config(),
        create: None,
    };
    config.bus = bus;
    config.workers = role.workers;
    config.routes = role.routes;
    config.outbox_scan_every = Some(std::time::Duration::from_millis(args.outbox_scan_ms));
    config.reservation_ttl_seconds = args.commands.reservation_ttl_seconds;
    tracing::info!(role = role.name, "starting");
    serve(args.listen, config).await
}

/// Binds `listen`, starts the platform `config` describes, and runs it until ctrl-c or
/// SIGTERM.
async fn serve(listen: SocketAddr, config: app::DevConfig) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let running = app::start(config, listener)
        .await
        .map_err(|e| e.to_string())?;
    let token = running.shutdown_token();
    tokio::spawn(async move {
        app::shutdown_signal().await;
        token.cancel();
    });
    running.wait().await.map_err(|e| e.to_string())
}

async fn migrate(args: &ScyllaArgs, bus: &app::BusConfig) -> Result<(), String> {
    let config = args.config();
    let session = scylla::connect(&config).await.map_err(|e| e.to_string())?;
    let version = scylla::migrate(
        &session,
        &config.keyspace,
        &args.replication(3)?,
        args.scylla_tablets,
    )
    .await
    .map_err(|e| e.to_string())?;
    println!(
        "keyspace {} is at schema version {version}",
        config.keyspace
    );
    let (topic, state) = match bus {
        app::BusConfig::Embedded => return Ok(()),
        app::BusConfig::Kafka(k) => (&k.topic, stockflow_bus::kafka::ensure_topic(k).await),
        app::BusConfig::Fluvio(f) => (&f.topic, stockflow_bus::fluvio::ensure_topic(f).await),
    };
    let state = state.map_err(|e| e.to_string())?;
    println!("topic {topic}: {state:?}");
    Ok(())
}
