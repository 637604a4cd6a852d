//! The `stockflow` binary: one executable, several roles.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use stockflow::cli::{
    BusArgs, CliError, CommandArgs, Result, ScyllaArgs, SecurityArgs, Store, TokenArgs,
};
use stockflow::http::Routes;
use stockflow::{app, trace};
use stockflow_storage::scylla;

// The request path allocates many small, short-lived buffers across threads; mimalloc
// handles that pattern with far less contention than the system allocator. It is built
// without transparent huge pages (the `no_thp` feature): with them, khugepaged collapses
// its sparsely used regions into 2 MiB pages some twenty minutes into a run, and the
// resident set steps up by tens of MiB that the program never uses (scripts/soak.sh).
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
        /// Free space, in MiB, the data directory's filesystem keeps: below it `/readyz`
        /// answers 503, before commands start failing with a full disk.
        #[arg(long, env = "STOCKFLOW_MIN_FREE_DISK_MB", default_value_t = 256)]
        min_free_disk_mb: u64,
        /// Require bearer tokens signed by a development key kept in the data directory
        /// (made on first use); mint them with `stockflow token`.
        #[arg(long, env = "STOCKFLOW_AUTH_DEV")]
        auth_dev: bool,
        #[command(flatten)]
        security: SecurityArgs,
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
    /// Remove a region's data for good: drop its keyspace and delete its topic (the
    /// operator's Job when a region with `deletionPolicy: Delete` is deleted). Each removal
    /// must be asked for; both are idempotent.
    Teardown {
        #[command(flatten)]
        scylla: ScyllaArgs,
        #[command(flatten)]
        bus: BusArgs,
        /// Partitions of the region's topic.
        #[arg(long, alias = "bus-partitions", env = "STOCKFLOW_PARTITIONS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
        partitions: u32,
        /// Drop the keyspace.
        #[arg(long)]
        drop_keyspace: bool,
        /// Delete the topic.
        #[arg(long)]
        delete_topic: bool,
    },
    /// Print a bearer token signed by the development key of a data directory (or by
    /// --key), for `stockflow dev --auth-dev` and tests.
    Token(TokenArgs),
    /// Print the path of one command from a region's APIs: the reservation on the write
    /// side, then per key when each change was committed, the bus partition and offset it
    /// was projected from, and when and by which projector replica.
    Trace(trace::TraceArgs),
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
    #[command(flatten)]
    security: SecurityArgs,
}

impl Role {
    /// The `service.name` of this process's spans, unless `OTEL_SERVICE_NAME` says otherwise.
    fn service_name(&self) -> &'static str {
        match self {
            Role::Dev { .. } => "stockflow-dev",
            Role::CommandApi(_) => "stockflow-command-api",
            Role::QueryApi(_) => "stockflow-query-api",
            Role::Publisher(_) => "stockflow-publisher",
            Role::Projector(_) => "stockflow-projector",
            Role::Migrate { .. } | Role::Teardown { .. } => "stockflow-migrate",
            Role::Token(_) | Role::Trace(_) => "stockflow",
        }
    }
}

/// What a role runs and serves.
struct RoleKind {
    name: &'static str,
    workers: app::Workers,
    routes: Routes,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before the runtime: the OTLP exporter's blocking client refuses to be built inside it.
    let traces = stockflow_telemetry::init_tracing(cli.log_json, cli.role.service_name());
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
                min_free_disk_mb,
                auth_dev,
                security,
                store,
                scylla,
                bus,
                commands,
            } => {
                let store = match store {
                    Store::Embedded => app::StoreConfig::Embedded,
                    // dev creates what it needs: a single-node replication by default.
                    Store::Scylla => app::StoreConfig::Scylla {
                        config: scylla.config()?,
                        create: Some((scylla.replication(1)?, scylla.scylla_tablets)),
                    },
                };
                let bus = bus.config(partitions, true)?;
                let security = security.security(listen, auth_dev.then_some(data_dir.as_path()), true)?;
                if auth_dev {
                    println!(
                        "stockflow dev: bearer tokens required. Mint one with\n  \
                         TOKEN=$(stockflow token --data-dir {} --scopes stock:read,stock:reserve)\n\
                         and send it as\n  curl -H \"Authorization: Bearer $TOKEN\" http://{listen}/v1/stock/SKU",
                        data_dir.display()
                    );
                }
                let mut config = app::AppConfig::new(data_dir);
                config.security = security;
                config.partitions = partitions;
                config.wal.min_free_disk_bytes = min_free_disk_mb.saturating_mul(1 << 20);
                config.store = store;
                config.bus = bus;
                config.reservation_ttl_seconds = commands.reservation_ttl_seconds;
                config.retention = commands.retention();
                config.shutdown_timeout =
                    std::time::Duration::from_secs(commands.shutdown_timeout_seconds);
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
            Role::Teardown {
                scylla,
                bus,
                partitions,
                drop_keyspace,
                delete_topic,
            } => {
                let bus = bus.config(partitions, false)?;
                teardown(&scylla, &bus, drop_keyspace, delete_topic).await
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
            Role::Token(args) => args.run(),
            Role::Trace(args) => Ok(trace::run(args).await?),
        }
    });
    traces.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_role(args: RoleArgs, role: RoleKind) -> Result<()> {
    let bus = args.bus.config(args.partitions, false)?;
    let needs_bus = role.workers.publish || role.workers.project;
    if needs_bus && matches!(bus, app::BusConfig::Embedded) {
        return Err(CliError::Settings(format!(
            "the {} role needs a bus shared by every replica: --bus kafka --kafka-brokers HOST:PORT \
             or --bus fluvio --fluvio-endpoint HOST:PORT \
             (the embedded log lives inside one process; `stockflow dev` runs everything over it)",
            role.name
        )));
    }
    // No data directory: a role over ScyllaDB and a bus keeps nothing on local disk.
    let mut config = app::AppConfig::new(PathBuf::new());
    config.security = args.security.security(args.listen, None, false)?;
    config.partitions = args.partitions;
    // Roles never create schema: `stockflow migrate` (the operator's Job) does.
    config.store = app::StoreConfig::Scylla {
        config: args.scylla.config()?,
        create: None,
    };
    config.bus = bus;
    config.workers = role.workers;
    config.routes = role.routes;
    config.outbox_scan_every = Some(std::time::Duration::from_millis(args.outbox_scan_ms));
    config.reservation_ttl_seconds = args.commands.reservation_ttl_seconds;
    config.retention = args.commands.retention();
    config.shutdown_timeout =
        std::time::Duration::from_secs(args.commands.shutdown_timeout_seconds);
    tracing::info!(role = role.name, "starting");
    serve(args.listen, config).await
}

/// Binds `listen`, starts the platform `config` describes, and runs it until ctrl-c or
/// SIGTERM.
async fn serve(listen: SocketAddr, config: app::AppConfig) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| CliError::Settings(format!("cannot listen on {listen}: {e}")))?;
    let running = app::start(config, listener).await?;
    let token = running.shutdown_token();
    tokio::spawn(async move {
        app::shutdown_signal().await;
        token.cancel();
    });
    Ok(running.wait().await?)
}

async fn migrate(args: &ScyllaArgs, bus: &app::BusConfig) -> Result<()> {
    let config = args.config()?;
    let session = scylla::connect(&config).await?;
    let version = scylla::migrate(
        &session,
        &config.keyspace,
        &args.replication(3)?,
        args.scylla_tablets,
    )
    .await?;
    println!(
        "keyspace {} is at schema version {version}",
        config.keyspace
    );
    let (topic, state) = match bus {
        app::BusConfig::Embedded => return Ok(()),
        app::BusConfig::Kafka(k) => (&k.topic, stockflow_bus::kafka::ensure_topic(k).await?),
        app::BusConfig::Fluvio(f) => (&f.topic, stockflow_bus::fluvio::ensure_topic(f).await?),
    };
    println!("topic {topic}: {state:?}");
    Ok(())
}

async fn teardown(
    args: &ScyllaArgs,
    bus: &app::BusConfig,
    drop_keyspace: bool,
    delete_topic: bool,
) -> Result<()> {
    if !drop_keyspace && !delete_topic {
        return Err(CliError::Settings(
            "teardown removes nothing unless asked: --drop-keyspace and/or --delete-topic".into(),
        ));
    }
    if drop_keyspace {
        let config = args.config()?;
        let session = scylla::connect(&config).await?;
        scylla::drop_keyspace(&session, &config.keyspace).await?;
        println!("keyspace {} dropped", config.keyspace);
    }
    if delete_topic {
        let topic = match bus {
            app::BusConfig::Embedded => {
                return Err(CliError::Settings(
                    "--delete-topic needs --bus kafka or --bus fluvio".into(),
                ));
            }
            app::BusConfig::Kafka(k) => {
                stockflow_bus::kafka::delete_topic(k).await?;
                &k.topic
            }
            app::BusConfig::Fluvio(f) => {
                stockflow_bus::fluvio::delete_topic(f).await?;
                &f.topic
            }
        };
        println!("topic {topic} deleted");
    }
    Ok(())
}
