//! The `stockflow` binary: one executable, several roles.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use stockflow::{app, bench, telemetry};
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
        /// Event-log partitions (fixed when the data directory is created).
        #[arg(long, env = "STOCKFLOW_PARTITIONS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
        partitions: u32,
        /// Where the write and read sides live.
        #[arg(long, env = "STOCKFLOW_STORE", value_enum, default_value = "embedded")]
        store: Store,
        #[command(flatten)]
        scylla: ScyllaArgs,
    },
    /// Command API over ScyllaDB: commands, reservation expiry (several replicas are safe).
    CommandApi(RoleArgs),
    /// Query API over ScyllaDB: the read models.
    QueryApi(RoleArgs),
    /// Outbox publisher. Until the Fluvio bus adapter lands it publishes to a log in its
    /// data directory and projects from there itself (several replicas are safe: delivery
    /// is at least once and projection idempotent).
    Publisher(RoleArgs),
    /// Projector reading the Fluvio bus. Not in this build: the Fluvio adapter is missing,
    /// so this role refuses to start; the publisher role projects meanwhile.
    Projector(RoleArgs),
    /// Create the ScyllaDB keyspace and tables (idempotent) and record the schema version.
    Migrate {
        #[command(flatten)]
        scylla: ScyllaArgs,
    },
    /// Drive load against a running stockflow and report throughput, latency and lag.
    Bench(bench::BenchArgs),
    /// Measure the raw LWT ceiling of a CQL server with the service's conditional batch.
    BenchLwt(bench::LwtArgs),
}

/// Settings of a distributed role.
#[derive(Debug, Args)]
struct RoleArgs {
    /// Address for HTTP (API, /healthz, /readyz, /metrics).
    #[arg(long, env = "STOCKFLOW_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Scratch directory (the publisher's local log).
    #[arg(long, env = "STOCKFLOW_DATA_DIR", default_value = "/tmp/stockflow")]
    data_dir: PathBuf,
    /// Event-log partitions.
    #[arg(long, env = "STOCKFLOW_PARTITIONS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    partitions: u32,
    #[command(flatten)]
    scylla: ScyllaArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Store {
    /// SQLite files in the data directory.
    Embedded,
    /// ScyllaDB or Cassandra (the event log stays in the data directory).
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
            } => {
                let store = match store {
                    Store::Embedded => app::StoreConfig::Embedded,
                    // dev creates what it needs: a single-node replication by default.
                    Store::Scylla => app::StoreConfig::Scylla {
                        config: scylla.config(),
                        create: Some((scylla.replication(1)?, scylla.scylla_tablets)),
                    },
                };
                run_dev(data_dir, listen, partitions, store).await
            }
            Role::Migrate { scylla } => migrate(&scylla).await,
            Role::CommandApi(args) => run_role(args, app::Workers { expire: true, ..app::Workers::NONE }).await,
            Role::QueryApi(args) => run_role(args, app::Workers::NONE).await,
            Role::Projector(_) => Err("the projector role reads the Fluvio bus, and this build has no Fluvio adapter yet; \
                 the publisher role projects from its own log in the meantime (run it instead)"
                .into()),
            Role::Publisher(args) => run_role(args, app::Workers { publish: true, project: true, expire: false }).await,
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

async fn run_role(args: RoleArgs, workers: app::Workers) -> Result<(), String> {
    let mut config = app::DevConfig::new(args.data_dir);
    config.partitions = args.partitions;
    // Roles never create schema: `stockflow migrate` (the operator's Job) does.
    config.store = app::StoreConfig::Scylla {
        config: args.scylla.config(),
        create: None,
    };
    config.workers = workers;
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

async fn migrate(args: &ScyllaArgs) -> Result<(), String> {
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
    Ok(())
}

async fn run_dev(
    data_dir: PathBuf,
    listen: SocketAddr,
    partitions: u32,
    store: app::StoreConfig,
) -> Result<(), String> {
    let mut config = app::DevConfig::new(data_dir);
    config.partitions = partitions;
    config.store = store;
    serve(listen, config).await
}
