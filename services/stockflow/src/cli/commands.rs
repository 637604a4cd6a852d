//! The subcommands of `stockflow` and what each runs: `dev` (every role in one process),
//! the region roles the operator deploys (named by [`stockflow_domain::Role`], so the
//! operator and the binary agree on them), `migrate` and `teardown` (the operator's Jobs),
//! `token` and `trace`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use stockflow_domain::Role;
use stockflow_storage::scylla;

use super::{
    BusArgs, CliError, CommandArgs, EdgeArgs, Result, ScyllaArgs, SecurityArgs, Store, TokenArgs,
};
use crate::app;
use crate::http::Routes;
use crate::trace;

/// The command line.
#[derive(Parser)]
#[command(name = "stockflow", version, about = "Distributed retail inventory")]
pub struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "STOCKFLOW_LOG_JSON")]
    pub log_json: bool,
    #[command(subcommand)]
    command: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Run every role in one process on the embedded backend (a data directory, no servers).
    Dev(Box<DevArgs>),
    /// Command API over ScyllaDB: commands and reservation expiry (several replicas are
    /// safe: every change is a Paxos-guarded command).
    CommandApi(Box<RoleArgs>),
    /// Query API over ScyllaDB: the read models, and dead-letter administration.
    QueryApi(Box<RoleArgs>),
    /// Outbox publisher: ScyllaDB outbox → bus. Replicas split the outbox shards by leases.
    Publisher(Box<RoleArgs>),
    /// Projector: bus → read models on ScyllaDB. Replicas split the topic's partitions by
    /// leases.
    Projector(Box<RoleArgs>),
    /// Webhook delivery: bus → subscribers, signed per Standard Webhooks. Replicas split
    /// the topic's partitions by leases; subscriptions and cursors live in the keyspace.
    Webhooks(Box<RoleArgs>),
    /// Create the ScyllaDB keyspace and tables (idempotent) and record the schema version;
    /// with `--bus kafka|fluvio`, also create the region's topic (idempotent; a topic with
    /// another partition count is refused).
    Migrate(MigrateArgs),
    /// Remove a region's data for good: drop its keyspace and delete its topic (the
    /// operator's Job when a region with `deletionPolicy: Delete` is deleted). Each removal
    /// must be asked for; both are idempotent.
    Teardown(TeardownArgs),
    /// Run beside a store's POS: answer it locally, queue every command, forward them to
    /// the region exactly once and in order, and keep a local view of the store's stock.
    StoreAgent(Box<super::agent::AgentArgs>),
    /// Copy an embedded data directory consistently while `stockflow dev` serves it.
    Backup(super::backup::BackupArgs),
    /// Restore a backup of an embedded data directory into an empty directory.
    Restore(super::backup::RestoreArgs),
    /// Rebuild the stock read models and search from the write side (a lost or stale read
    /// table, a restored keyspace), with progress; an interrupted run resumes.
    RebuildReadModels(super::rebuild::RebuildArgs),
    /// Print a bearer token signed by the development key of a data directory (or by
    /// --key), for `stockflow dev --auth-dev` and tests.
    Token(TokenArgs),
    /// Print the configuration reference (every subcommand's settings) as Markdown.
    #[command(hide = true)]
    Reference,
    /// Print the AsyncAPI 3.0 document of a region's topic (the one `/asyncapi.json`
    /// serves): every event type, its CloudEvents headers and the JSON Schema of its data.
    Asyncapi,
    /// Print the path of one command from a region's APIs: the reservation on the write
    /// side, then per key when each change was committed, the bus partition and offset it
    /// was projected from, and when and by which projector replica.
    Trace(trace::TraceArgs),
}

/// Arguments of `stockflow dev`.
#[derive(Debug, Args)]
struct DevArgs {
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
    #[command(flatten)]
    edge: EdgeArgs,
}

/// Settings of a region role. Nothing is kept on local disk.
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
    #[command(flatten)]
    edge: EdgeArgs,
}

/// Arguments of `stockflow migrate`.
#[derive(Debug, Args)]
struct MigrateArgs {
    #[command(flatten)]
    scylla: ScyllaArgs,
    #[command(flatten)]
    bus: BusArgs,
    /// Partitions of the region's topic.
    #[arg(long, alias = "bus-partitions", env = "STOCKFLOW_PARTITIONS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    partitions: u32,
}

/// Arguments of `stockflow teardown`.
#[derive(Debug, Args)]
struct TeardownArgs {
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
}

impl Cli {
    /// The `service.name` of this process's spans, unless `OTEL_SERVICE_NAME` says otherwise.
    pub fn service_name(&self) -> &'static str {
        match &self.command {
            Action::Dev(_) => "stockflow-dev",
            Action::Migrate(_) | Action::Teardown(_) => "stockflow-migrate",
            Action::StoreAgent(_) => "stockflow-store-agent",
            Action::Token(_)
            | Action::Trace(_)
            | Action::Reference
            | Action::Asyncapi
            | Action::Backup(_)
            | Action::Restore(_)
            | Action::RebuildReadModels(_) => "stockflow",
            command => command.role().map_or("stockflow", Role::service_name),
        }
    }

    /// Runs the subcommand to its end.
    pub async fn run(self) -> Result<()> {
        let role = self.command.role();
        match self.command {
            Action::Dev(args) => args.run().await,
            Action::CommandApi(args)
            | Action::QueryApi(args)
            | Action::Publisher(args)
            | Action::Projector(args)
            | Action::Webhooks(args) => match role {
                Some(role) => args.run(role).await,
                None => Err(CliError::Settings("not a region role".into())),
            },
            Action::Migrate(args) => args.run().await,
            Action::Teardown(args) => args.run().await,
            Action::StoreAgent(args) => args.run().await,
            Action::Token(args) => args.run(),
            Action::Backup(args) => args.run(),
            Action::Restore(args) => args.run(),
            Action::RebuildReadModels(args) => args.run().await,
            Action::Reference => {
                print!("{}", super::reference::markdown());
                Ok(())
            }
            Action::Asyncapi => {
                println!("{:#}", crate::events::asyncapi::document());
                Ok(())
            }
            Action::Trace(args) => Ok(trace::run(args).await?),
        }
    }
}

impl Action {
    /// The region role this subcommand runs, if it is one.
    fn role(&self) -> Option<Role> {
        match self {
            Action::CommandApi(_) => Some(Role::CommandApi),
            Action::QueryApi(_) => Some(Role::QueryApi),
            Action::Publisher(_) => Some(Role::Publisher),
            Action::Projector(_) => Some(Role::Projector),
            Action::Webhooks(_) => Some(Role::Webhooks),
            _ => None,
        }
    }
}

/// The workers a region role runs and the routes it serves.
fn work_of(role: Role) -> (app::Workers, Routes) {
    let none = app::Workers::NONE;
    match role {
        Role::CommandApi => (
            app::Workers {
                expire: true,
                ..none
            },
            Routes::COMMANDS,
        ),
        Role::QueryApi => (none, Routes::QUERIES),
        Role::Publisher => (
            app::Workers {
                publish: true,
                ..none
            },
            Routes::NONE,
        ),
        Role::Projector => (
            app::Workers {
                project: true,
                ..none
            },
            Routes::PROJECTOR,
        ),
        Role::Webhooks => (
            app::Workers {
                webhooks: true,
                ..none
            },
            Routes::NONE,
        ),
    }
}

impl DevArgs {
    async fn run(self) -> Result<()> {
        let store = match self.store {
            Store::Embedded => app::StoreConfig::Embedded,
            // dev creates what it needs: a single-node replication by default.
            Store::Scylla => app::StoreConfig::Scylla {
                config: self.scylla.config()?,
                create: Some((self.scylla.replication(1)?, self.scylla.scylla_tablets)),
            },
        };
        let bus = self.bus.config(self.partitions, true)?;
        let dev_key = self.auth_dev.then_some(self.data_dir.as_path());
        let security = self.security.security(self.listen, dev_key, true)?;
        if self.auth_dev {
            println!(
                "stockflow dev: bearer tokens required. Mint one with\n  \
                 TOKEN=$(stockflow token --data-dir {} --scopes stock:read,stock:reserve)\n\
                 and send it as\n  curl -H \"Authorization: Bearer $TOKEN\" http://{}/v1/stock/SKU",
                self.data_dir.display(),
                self.listen
            );
        }
        let mut config = app::AppConfig::new(self.data_dir);
        config.security = security;
        config.partitions = self.partitions;
        config.wal.min_free_disk_bytes = self.min_free_disk_mb.saturating_mul(1 << 20);
        config.store = store;
        config.bus = bus;
        config.publisher.structured_events = self.bus.structured_events();
        self.commands.apply(&mut config);
        self.edge.apply(&mut config)?;
        serve(self.listen, config).await
    }
}

impl RoleArgs {
    async fn run(self, role: Role) -> Result<()> {
        let (workers, routes) = work_of(role);
        let bus = self.bus.config(self.partitions, false)?;
        let reads_the_bus = workers.publish || workers.project || workers.webhooks;
        if reads_the_bus && matches!(bus, app::BusConfig::Embedded) {
            return Err(CliError::Settings(format!(
                "the {role} role needs a bus shared by every replica: --bus kafka --kafka-brokers HOST:PORT \
                 or --bus fluvio --fluvio-endpoint HOST:PORT \
                 (the embedded log lives inside one process; `stockflow dev` runs everything over it)"
            )));
        }
        // No data directory: a role over ScyllaDB and a bus keeps nothing on local disk.
        let mut config = app::AppConfig::new(PathBuf::new());
        config.security = self.security.security(self.listen, None, false)?;
        config.partitions = self.partitions;
        // Roles never create schema: `stockflow migrate` (the operator's Job) does.
        config.store = app::StoreConfig::Scylla {
            config: self.scylla.config()?,
            create: None,
        };
        config.bus = bus;
        config.publisher.structured_events = self.bus.structured_events();
        config.workers = workers;
        config.routes = routes;
        config.outbox_scan_every = Some(Duration::from_millis(self.outbox_scan_ms));
        self.commands.apply(&mut config);
        self.edge.apply(&mut config)?;
        tracing::info!(%role, "starting");
        serve(self.listen, config).await
    }
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

impl MigrateArgs {
    async fn run(self) -> Result<()> {
        let bus = self.bus.config(self.partitions, true)?;
        let config = self.scylla.config()?;
        let session = scylla::connect(&config).await?;
        let version = scylla::migrate(
            &session,
            &config.keyspace,
            &self.scylla.replication(3)?,
            self.scylla.scylla_tablets,
        )
        .await?;
        println!(
            "keyspace {} is at schema version {version}",
            config.keyspace
        );
        let (topic, state) = match &bus {
            app::BusConfig::Embedded => return Ok(()),
            app::BusConfig::Kafka(k) => (&k.topic, stockflow_bus::kafka::ensure_topic(k).await?),
            app::BusConfig::Fluvio(f) => (&f.topic, stockflow_bus::fluvio::ensure_topic(f).await?),
        };
        println!("topic {topic}: {state:?}");
        Ok(())
    }
}

impl TeardownArgs {
    async fn run(self) -> Result<()> {
        if !self.drop_keyspace && !self.delete_topic {
            return Err(CliError::Settings(
                "teardown removes nothing unless asked: --drop-keyspace and/or --delete-topic"
                    .into(),
            ));
        }
        let bus = self.bus.config(self.partitions, false)?;
        if self.drop_keyspace {
            let config = self.scylla.config()?;
            let session = scylla::connect(&config).await?;
            scylla::drop_keyspace(&session, &config.keyspace).await?;
            println!("keyspace {} dropped", config.keyspace);
        }
        if self.delete_topic {
            let topic = match &bus {
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
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn every_region_role_the_operator_deploys_is_a_subcommand_that_runs_it() {
        let cli = Cli::command();
        for role in Role::REGION {
            assert!(
                cli.find_subcommand(role.name()).is_some(),
                "`stockflow {role}` is not a subcommand"
            );
            let parsed = Cli::try_parse_from(["stockflow", role.name()]).expect("parses");
            assert_eq!(parsed.command.role(), Some(role));
            assert_eq!(parsed.service_name(), role.service_name());
        }
    }
}
