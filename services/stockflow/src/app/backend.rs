//! The ports one process runs over, opened from its configuration: the embedded stores
//! in a data directory, or ScyllaDB; the embedded log, Kafka or Fluvio.

use std::path::PathBuf;
use std::sync::Arc;

use stockflow_bus::EventLog;
use stockflow_bus::fluvio::{FluvioConfig, FluvioEventLog};
use stockflow_bus::kafka::{KafkaConfig, KafkaEventLog};
use stockflow_storage::embedded::{DataDirLock, EmbeddedBackend, SqliteEventLog, checkpoint_file};
use stockflow_storage::ports::{
    ImportPayloads, ImportStore, LeaseStore, Outbox, ReadStore, WebhookStore, WriteStore,
};
use stockflow_storage::scylla::{self, Replication, ScyllaBackend, ScyllaConfig};

use super::{AppConfig, AppError};

/// Where the write and read sides live.
// Built once at start-up: the size of the ScyllaDB variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// SQLite files in the data directory.
    Embedded,
    /// A ScyllaDB (or Cassandra) cluster.
    Scylla {
        /// Connection settings.
        config: ScyllaConfig,
        /// Create the keyspace and apply the schema when missing (dev only).
        create: Option<(Replication, Option<bool>)>,
    },
}

/// Which event log carries the events from the publisher to the projectors.
#[derive(Debug, Clone)]
pub enum BusConfig {
    /// The SQLite log in the data directory (one process only).
    Embedded,
    /// A Kafka topic.
    Kafka(KafkaConfig),
    /// A Fluvio topic.
    Fluvio(FluvioConfig),
}

/// The ports of one running platform.
#[derive(Clone)]
pub struct Backend {
    /// Write side.
    pub write: Arc<dyn WriteStore>,
    /// Its outbox.
    pub outbox: Arc<dyn Outbox>,
    /// Read side.
    pub read: Arc<dyn ReadStore>,
    /// Event log, when this process publishes or projects.
    pub log: Option<Arc<dyn EventLog>>,
    /// Leases that split the work among replicas of a shared bus; `None` with the embedded
    /// store.
    pub leases: Option<Arc<dyn LeaseStore>>,
    /// Webhook subscriptions and their delivery state.
    pub webhooks: Arc<dyn WebhookStore>,
    /// Bulk import jobs.
    pub imports: Arc<dyn ImportStore>,
    /// Uploaded files kept where every replica reads them (`None`: the embedded store,
    /// whose files stay in its data directory).
    pub import_payloads: Option<Arc<dyn ImportPayloads>>,
    /// The SQLite files this process holds in its data directory.
    pub local: LocalData,
}

/// The SQLite files a process keeps in its data directory, which it alone may open.
#[derive(Clone)]
pub enum LocalData {
    /// Every store is embedded.
    Embedded(EmbeddedBackend),
    /// Only the event log is local (the write and read sides are on ScyllaDB).
    Log {
        /// Held while the process runs.
        lock: Arc<DataDirLock>,
        /// The log's database file.
        path: PathBuf,
        /// The log.
        log: Arc<SqliteEventLog>,
    },
    /// Nothing: every store and the bus are servers (a read-only root filesystem is fine).
    Nothing,
}

impl LocalData {
    /// Folds every WAL back into its database at a clean shutdown, so nothing is left to
    /// recover at the next start.
    pub fn checkpoint(&self) -> Result<(), stockflow_storage::StoreError> {
        match self {
            LocalData::Embedded(b) => b.checkpoint_all(),
            LocalData::Log { path, .. } => checkpoint_file(path, "log"),
            LocalData::Nothing => Ok(()),
        }
    }
}

/// Opens the stores and the bus `config` names.
pub async fn open_backend(config: &AppConfig) -> Result<Backend, AppError> {
    let needs_log = config.workers.publish || config.workers.project || config.workers.webhooks;
    let remote: Option<Arc<dyn EventLog>> = match (&config.bus, needs_log) {
        (BusConfig::Kafka(k), true) => Some(Arc::new(KafkaEventLog::connect(k.clone()).await?)),
        (BusConfig::Fluvio(f), true) => Some(Arc::new(FluvioEventLog::connect(f.clone()).await?)),
        _ => None,
    };
    match &config.store {
        StoreConfig::Embedded => {
            let b = EmbeddedBackend::open_with_faults(
                &config.data_dir,
                config.partitions,
                config.wal,
                config.faults.clone(),
            )?;
            let log = match remote {
                Some(remote) => Some(remote),
                None => Some(b.log.clone() as Arc<dyn EventLog>),
            };
            Ok(Backend {
                write: b.write.clone(),
                outbox: b.write.clone(),
                read: b.read.clone(),
                log,
                leases: None,
                webhooks: b.webhooks.clone() as Arc<dyn WebhookStore>,
                imports: b.imports.clone() as Arc<dyn ImportStore>,
                import_payloads: None,
                local: LocalData::Embedded(b),
            })
        }
        StoreConfig::Scylla {
            config: scylla_config,
            create,
        } => {
            if let Some((replication, tablets)) = create {
                let session = scylla::connect(scylla_config).await?;
                scylla::migrate(&session, &scylla_config.keyspace, replication, *tablets).await?;
            }
            let b = ScyllaBackend::open(scylla_config).await?;
            if let Some(every) = config.outbox_scan_every {
                b.write.scan_outbox_every(every);
            }
            let (log, local) = match (&config.bus, needs_log) {
                (BusConfig::Embedded, true) => {
                    std::fs::create_dir_all(&config.data_dir)?;
                    let lock = Arc::new(DataDirLock::acquire(&config.data_dir)?);
                    let path = config.data_dir.join("log.db");
                    let log = Arc::new(SqliteEventLog::open(&path, config.partitions, config.wal)?);
                    (
                        Some(log.clone() as Arc<dyn EventLog>),
                        LocalData::Log { lock, path, log },
                    )
                }
                _ => (remote, LocalData::Nothing),
            };
            Ok(Backend {
                write: b.write.clone(),
                outbox: b.write,
                read: b.read,
                log,
                leases: Some(b.leases),
                webhooks: b.webhooks,
                imports: b.imports.clone(),
                import_payloads: Some(b.imports),
                local,
            })
        }
    }
}
