//! The settings the subcommands share: where the write and read sides live (embedded or
//! ScyllaDB), the event bus (embedded, Kafka with its security, Fluvio), and the command
//! path's limits (reservation TTL, retention, shutdown budget); each converted here into
//! the store and bus configurations.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use stockflow_bus::fluvio::FluvioConfig;
use stockflow_bus::kafka::{KafkaConfig, KafkaSecurity, SaslCredentials};
use stockflow_storage::scylla::{Replication, ScyllaConfig};

use super::{Result, pem, settings};
use crate::app;

/// How events are written on Fluvio, whose records carry no headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FluvioEvents {
    /// The event's JSON alone, as every version reads it.
    Plain,
    /// A CloudEvents 1.0 event in structured content mode around the event's JSON.
    Structured,
}

/// The event bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Bus {
    /// The SQLite log in the data directory (`stockflow dev` only).
    Embedded,
    /// Apache Kafka or a compatible broker (Redpanda, managed Kafka).
    Kafka,
    /// Fluvio.
    Fluvio,
}

/// Kafka's `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KafkaProtocol {
    /// No authentication, no encryption.
    Plaintext,
    /// TLS.
    Ssl,
    /// SASL without TLS.
    SaslPlaintext,
    /// SASL over TLS (managed Kafkas).
    SaslSsl,
}

/// Settings of the command API, and of the process's shutdown.
#[derive(Debug, Args)]
pub struct CommandArgs {
    /// TTL of a reservation whose request names none, in seconds.
    #[arg(long, env = "STOCKFLOW_RESERVATION_TTL_SECONDS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub reservation_ttl_seconds: u64,
    /// The most a graceful shutdown may take, in seconds (keep it under the pod's
    /// termination grace period, 30 s in the operator's pods).
    #[arg(long, env = "STOCKFLOW_SHUTDOWN_TIMEOUT_SECONDS", default_value_t = 25, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub shutdown_timeout_seconds: u64,
    /// How long confirmed, released and expired reservations stay readable, in hours
    /// (embedded store; ScyllaDB keeps them as long as an Idempotency-Key, 7 days).
    #[arg(long, env = "STOCKFLOW_FINAL_RESERVATION_RETENTION_HOURS", default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..=87_600))]
    pub final_reservation_retention_hours: u64,
    /// How long dead letters that were not replayed are kept, in days.
    #[arg(long, env = "STOCKFLOW_DEAD_LETTER_RETENTION_DAYS", default_value_t = 14, value_parser = clap::value_parser!(u64).range(1..=3_650))]
    pub dead_letter_retention_days: u64,
    /// How long the movement history (`GET /v1/movements`) is kept, in days (embedded
    /// store; ScyllaDB expires it after 90 days by the table's TTL).
    #[arg(long, env = "STOCKFLOW_MOVEMENT_RETENTION_DAYS", default_value_t = 90, value_parser = clap::value_parser!(u64).range(1..=3_650))]
    pub movement_retention_days: u64,
    /// How long records of the embedded event log are kept once every consumer has read
    /// them, in hours (a replay of the projections starts at the oldest one kept).
    #[arg(long, env = "STOCKFLOW_LOG_RETENTION_HOURS", default_value_t = 168, value_parser = clap::value_parser!(u64).range(1..=87_600))]
    pub log_retention_hours: u64,
    /// How long the change feed store agents follow is kept, in seconds (embedded store;
    /// ScyllaDB keeps it three days by the table's TTL). A store agent offline longer
    /// reloads its locations' snapshot.
    #[arg(long, env = "STOCKFLOW_CHANGE_FEED_RETENTION_SECONDS", default_value_t = 259_200, value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub change_feed_retention_seconds: u64,
    /// Keeps idempotency records, final reservations, dead letters and log records only
    /// this many seconds, and runs retention every 10 s. For soak tests, which must reach
    /// every bound within their hour; keys then live shorter than documented.
    #[arg(long, env = "STOCKFLOW_SOAK_RETENTION_SECONDS", hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub soak_retention_seconds: Option<u64>,
    /// How long a failing webhook delivery is retried (exponential backoff with jitter),
    /// in seconds, before the event goes to the subscription's dead letters.
    #[arg(long, env = "STOCKFLOW_WEBHOOK_RETRY_WINDOW_SECONDS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..=2_592_000))]
    pub webhook_retry_window_seconds: u64,
    /// Consecutive dead letters (no successful delivery in between) after which a webhook
    /// subscription is disabled; 0 never disables.
    #[arg(long, env = "STOCKFLOW_WEBHOOK_DISABLE_AFTER", default_value_t = 3)]
    pub webhook_disable_after: u32,
    /// Rows per second bulk imports (`POST /v1/imports`) apply at most, over every import
    /// this process runs (on ScyllaDB, each command API replica paces its own), so checkout
    /// traffic keeps its latency.
    #[arg(long, env = "STOCKFLOW_IMPORT_ROWS_PER_SECOND", default_value_t = 2_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub import_rows_per_second: u32,
}

impl CommandArgs {
    /// Sets the command path's limits on `config`: the default reservation TTL, retention
    /// and the shutdown budget.
    pub fn apply(&self, config: &mut app::AppConfig) {
        config.reservation_ttl_seconds = self.reservation_ttl_seconds;
        config.retention = self.retention();
        config.shutdown_timeout = std::time::Duration::from_secs(self.shutdown_timeout_seconds);
        config.webhooks.retry = stockflow_domain::webhook::RetryPolicy::over(
            std::time::Duration::from_secs(self.webhook_retry_window_seconds),
            self.webhook_disable_after,
        );
        config.imports.rows_per_second = self.import_rows_per_second;
    }

    /// The retention these settings ask for.
    pub fn retention(&self) -> crate::workers::retention::Retention {
        let hours = |h: u64| std::time::Duration::from_secs(h * 3600);
        if let Some(seconds) = self.soak_retention_seconds {
            let keep = std::time::Duration::from_secs(seconds);
            return crate::workers::retention::Retention {
                idempotency: keep,
                final_reservations: keep,
                dead_letters: keep,
                movements: keep,
                log: keep,
                change_feed: keep,
                every: std::time::Duration::from_secs(10),
                ..Default::default()
            };
        }
        crate::workers::retention::Retention {
            final_reservations: hours(self.final_reservation_retention_hours),
            dead_letters: hours(self.dead_letter_retention_days * 24),
            movements: hours(self.movement_retention_days * 24),
            log: hours(self.log_retention_hours),
            change_feed: std::time::Duration::from_secs(self.change_feed_retention_seconds),
            ..Default::default()
        }
    }
}

/// Which bus carries the region's events, and how to reach it.
#[derive(Debug, Args)]
pub struct BusArgs {
    /// The event bus.
    #[arg(long, env = "STOCKFLOW_BUS", value_enum, default_value = "embedded")]
    pub bus: Bus,
    /// The region, which names the default topic.
    #[arg(long, env = "STOCKFLOW_REGION", default_value = "dev")]
    pub region: String,
    /// The topic (default `stockflow-<region>-stock-events`).
    #[arg(long, env = "STOCKFLOW_BUS_TOPIC")]
    pub bus_topic: Option<String>,
    /// Replication factor of a topic this process creates.
    #[arg(long, env = "STOCKFLOW_BUS_REPLICATION", default_value_t = 1)]
    pub bus_replication: u16,
    /// Create the topic when missing (default: yes for `dev` and `migrate`, no for the
    /// roles, whose topic the migration creates).
    #[arg(long, env = "STOCKFLOW_BUS_CREATE_TOPIC")]
    pub bus_create_topic: Option<bool>,
    /// Kafka bootstrap brokers, comma-separated `host:port`.
    #[arg(long, env = "STOCKFLOW_KAFKA_BROKERS", value_delimiter = ',')]
    pub kafka_brokers: Vec<String>,
    /// Kafka security protocol.
    #[arg(
        long,
        env = "STOCKFLOW_KAFKA_SECURITY_PROTOCOL",
        value_enum,
        default_value = "PLAINTEXT"
    )]
    pub kafka_security_protocol: KafkaProtocol,
    /// SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(
        long,
        env = "STOCKFLOW_KAFKA_SASL_MECHANISM",
        default_value = "SCRAM-SHA-512"
    )]
    pub kafka_sasl_mechanism: String,
    /// SASL username.
    #[arg(long, env = "STOCKFLOW_KAFKA_SASL_USERNAME")]
    pub kafka_sasl_username: Option<String>,
    /// SASL password (prefer the environment variable).
    #[arg(long, env = "STOCKFLOW_KAFKA_SASL_PASSWORD", hide_env_values = true)]
    pub kafka_sasl_password: Option<String>,
    /// PEM file of the CA that signs the brokers' certificates (default: the system's).
    #[arg(long, env = "STOCKFLOW_KAFKA_CA_FILE")]
    pub kafka_ca_file: Option<PathBuf>,
    /// The same CA as PEM text (what a pod gets from a Secret); wins over the file.
    #[arg(long, env = "STOCKFLOW_KAFKA_CA_PEM", hide_env_values = true)]
    pub kafka_ca_pem: Option<String>,
    /// Extra librdkafka settings, `key=value` (repeat, or comma-separate in the env), e.g.
    /// `client.id=store-42`.
    #[arg(
        long = "kafka-option",
        env = "STOCKFLOW_KAFKA_OPTIONS",
        value_delimiter = ','
    )]
    pub kafka_options: Vec<String>,
    /// Fluvio's SC public endpoint, `host:port`.
    #[arg(long, env = "STOCKFLOW_FLUVIO_ENDPOINT")]
    pub fluvio_endpoint: Option<String>,
    /// Bytes a Fluvio consumer stream asks for per fetch.
    #[arg(long, env = "STOCKFLOW_FLUVIO_MAX_FETCH_BYTES", default_value_t = 1 << 20, value_parser = clap::value_parser!(i32).range(64..))]
    pub fluvio_max_fetch_bytes: i32,
    /// How events are written on Fluvio: `plain` (the event's JSON) or `structured` (a
    /// CloudEvents 1.0 structured-mode event around it). Readers of this version take both;
    /// older ones only `plain`, so set `structured` once every role of the region runs
    /// this version or later.
    #[arg(long, env = "STOCKFLOW_FLUVIO_CLOUDEVENTS", value_enum, default_value_t = FluvioEvents::Plain)]
    pub fluvio_cloudevents: FluvioEvents,
}

impl BusArgs {
    /// Whether the publisher wraps each event in a structured CloudEvent.
    pub fn structured_events(&self) -> bool {
        self.bus == Bus::Fluvio && self.fluvio_cloudevents == FluvioEvents::Structured
    }

    /// The region's topic.
    pub fn topic(&self) -> String {
        self.bus_topic
            .clone()
            .unwrap_or_else(|| stockflow_bus::default_topic(&self.region))
    }

    fn kafka_security(&self) -> Result<KafkaSecurity> {
        use stockflow_bus::kafka::SecurityProtocol as P;
        let protocol = match self.kafka_security_protocol {
            KafkaProtocol::Plaintext => P::Plaintext,
            KafkaProtocol::Ssl => P::Ssl,
            KafkaProtocol::SaslPlaintext => P::SaslPlaintext,
            KafkaProtocol::SaslSsl => P::SaslSsl,
        };
        let sasl = match (&self.kafka_sasl_username, &self.kafka_sasl_password) {
            (Some(username), Some(password)) => Some(SaslCredentials {
                mechanism: self.kafka_sasl_mechanism.parse()?,
                username: username.clone(),
                password: password.clone(),
            }),
            (None, None) => None,
            _ => {
                return Err(settings(
                    "Kafka SASL needs both a username and a password \
                     (STOCKFLOW_KAFKA_SASL_USERNAME, STOCKFLOW_KAFKA_SASL_PASSWORD)",
                ));
            }
        };
        let ca_pem = pem(self.kafka_ca_pem.as_ref(), self.kafka_ca_file.as_ref())?;
        let security = KafkaSecurity {
            protocol,
            sasl,
            ca_pem,
        };
        // Refuse a combination that cannot work now, not at the first connection.
        security.settings()?;
        Ok(security)
    }

    /// The bus configuration, with `partitions`; `create_by_default` says whether a
    /// missing topic is created when `--bus-create-topic` is not given.
    pub fn config(&self, partitions: u32, create_by_default: bool) -> Result<app::BusConfig> {
        match self.bus {
            Bus::Embedded => Ok(app::BusConfig::Embedded),
            Bus::Fluvio => {
                let endpoint = self.fluvio_endpoint.clone().ok_or_else(|| {
                    settings("--bus fluvio needs --fluvio-endpoint (or STOCKFLOW_FLUVIO_ENDPOINT)")
                })?;
                let mut config = FluvioConfig::new(endpoint, self.topic(), partitions);
                config.replication = u32::from(self.bus_replication);
                config.create_topic = self.bus_create_topic.unwrap_or(create_by_default);
                config.max_fetch_bytes = self.fluvio_max_fetch_bytes;
                Ok(app::BusConfig::Fluvio(config))
            }
            Bus::Kafka => {
                if self.kafka_brokers.is_empty() {
                    return Err(settings(
                        "--bus kafka needs --kafka-brokers (or STOCKFLOW_KAFKA_BROKERS)",
                    ));
                }
                let mut config =
                    KafkaConfig::new(self.kafka_brokers.clone(), self.topic(), partitions);
                config.replication = self.bus_replication;
                config.create_topic = self.bus_create_topic.unwrap_or(create_by_default);
                config.security = self.kafka_security()?;
                for option in &self.kafka_options {
                    let (k, v) = option.split_once('=').ok_or_else(|| {
                        settings(format!(
                            "--kafka-option: expected key=value, got {option:?}"
                        ))
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

/// Where the write and read sides of `stockflow dev` live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Store {
    /// SQLite files in the data directory.
    Embedded,
    /// ScyllaDB or Cassandra (with the embedded bus, the log stays in the data directory).
    Scylla,
}

/// How to reach ScyllaDB.
#[derive(Debug, Args)]
pub struct ScyllaArgs {
    /// Contact points, comma-separated `host:port`.
    #[arg(
        long,
        env = "STOCKFLOW_SCYLLA_NODES",
        value_delimiter = ',',
        default_value = "127.0.0.1:9042"
    )]
    pub scylla_nodes: Vec<String>,
    /// Keyspace.
    #[arg(long, env = "STOCKFLOW_SCYLLA_KEYSPACE", default_value = "stockflow")]
    pub scylla_keyspace: String,
    /// Local datacenter (LOCAL_QUORUM / LOCAL_SERIAL, and the default replication).
    #[arg(long, env = "STOCKFLOW_SCYLLA_LOCAL_DC", default_value = "datacenter1")]
    pub scylla_local_dc: String,
    /// Replication per datacenter for a new keyspace, `dc:rf[,dc:rf]` (default: local DC, 3).
    #[arg(long, env = "STOCKFLOW_SCYLLA_REPLICATION")]
    pub scylla_replication: Option<String>,
    /// ScyllaDB only: create the keyspace with `tablets = {'enabled': ...}`.
    #[arg(long, env = "STOCKFLOW_SCYLLA_TABLETS")]
    pub scylla_tablets: Option<bool>,
    /// Username, when authentication is on.
    #[arg(long, env = "STOCKFLOW_SCYLLA_USER")]
    pub scylla_user: Option<String>,
    /// Password (prefer the environment variable).
    #[arg(long, env = "STOCKFLOW_SCYLLA_PASSWORD", hide_env_values = true)]
    pub scylla_password: Option<String>,
    /// Connect over TLS (client encryption); needs the CA that signs the nodes'
    /// certificates, which must name each node's IP address.
    #[arg(long, env = "STOCKFLOW_SCYLLA_TLS")]
    pub scylla_tls: bool,
    /// PEM file of that CA.
    #[arg(long, env = "STOCKFLOW_SCYLLA_TLS_CA_FILE")]
    pub scylla_tls_ca_file: Option<PathBuf>,
    /// The same CA as PEM text (what a pod gets from a Secret); wins over the file.
    #[arg(long, env = "STOCKFLOW_SCYLLA_TLS_CA_PEM", hide_env_values = true)]
    pub scylla_tls_ca_pem: Option<String>,
}

impl ScyllaArgs {
    /// The connection settings.
    pub fn config(&self) -> Result<ScyllaConfig> {
        let mut config = ScyllaConfig::new(self.scylla_nodes.clone(), self.scylla_keyspace.clone());
        config.local_dc = Some(self.scylla_local_dc.clone());
        match (&self.scylla_user, &self.scylla_password) {
            (Some(user), Some(password)) => {
                config.credentials = Some((user.clone(), password.clone()));
            }
            (None, None) => {}
            _ => {
                return Err(settings(
                    "ScyllaDB authentication needs both STOCKFLOW_SCYLLA_USER and STOCKFLOW_SCYLLA_PASSWORD",
                ));
            }
        }
        let ca = pem(
            self.scylla_tls_ca_pem.as_ref(),
            self.scylla_tls_ca_file.as_ref(),
        )?;
        match (self.scylla_tls, ca) {
            (true, Some(ca)) => config.tls_ca_pem = Some(ca),
            (true, None) => {
                return Err(settings(
                    "--scylla-tls needs the CA of the nodes' certificates: --scylla-tls-ca-file \
                     (or STOCKFLOW_SCYLLA_TLS_CA_PEM)",
                ));
            }
            (false, Some(_)) => {
                return Err(settings(
                    "a ScyllaDB CA was given without --scylla-tls (STOCKFLOW_SCYLLA_TLS=true)",
                ));
            }
            (false, None) => {}
        }
        Ok(config)
    }

    /// The replication of a keyspace this process creates.
    pub fn replication(&self, default_rf: u32) -> Result<Replication> {
        let Some(spec) = &self.scylla_replication else {
            return Ok(Replication::NetworkTopology(vec![(
                self.scylla_local_dc.clone(),
                default_rf,
            )]));
        };
        let mut dcs = Vec::new();
        for part in spec.split(',') {
            let (dc, rf) = part.split_once(':').ok_or_else(|| {
                settings(format!(
                    "--scylla-replication: expected dc:rf, got {part:?}"
                ))
            })?;
            let rf = rf.parse().map_err(|_| {
                settings(format!(
                    "--scylla-replication: {rf:?} is not a replication factor"
                ))
            })?;
            dcs.push((dc.to_string(), rf));
        }
        Ok(Replication::NetworkTopology(dcs))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::CliError;

    #[derive(Parser)]
    struct Both {
        #[command(flatten)]
        scylla: ScyllaArgs,
        #[command(flatten)]
        bus: BusArgs,
    }

    fn parse(args: &[&str]) -> Both {
        Both::parse_from(std::iter::once("stockflow").chain(args.iter().copied()))
    }

    #[test]
    fn kafka_sasl_ssl_settings_reach_the_client_configuration() {
        let cli = parse(&[
            "--bus=kafka",
            "--kafka-brokers=b:9093",
            "--kafka-security-protocol=SASL_SSL",
            "--kafka-sasl-mechanism=PLAIN",
            "--kafka-sasl-username=u",
            "--kafka-sasl-password=p",
            "--kafka-ca-pem=-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----",
        ]);
        let Ok(app::BusConfig::Kafka(config)) = cli.bus.config(4, false) else {
            panic!("not a Kafka configuration");
        };
        let sasl = config.security.sasl.expect("credentials");
        assert_eq!(sasl.username, "u");
        assert!(config.security.ca_pem.is_some());
    }

    #[test]
    fn structured_cloudevents_are_asked_for_only_on_fluvio() {
        let on = |args: &[&str]| parse(args).bus.structured_events();
        let fluvio = ["--bus=fluvio", "--fluvio-endpoint=f:9003"];
        assert!(!on(&fluvio), "plain by default");
        assert!(on(
            &[&fluvio[..], &["--fluvio-cloudevents=structured"]].concat()
        ));
        assert!(!on(&[
            "--bus=kafka",
            "--kafka-brokers=b:9092",
            "--fluvio-cloudevents=structured"
        ]));
        assert!(
            !on(&["--fluvio-cloudevents=structured"]),
            "the embedded log keeps headers"
        );
    }

    #[test]
    fn half_given_credentials_and_a_tls_flag_without_ca_are_refused() {
        let cli = parse(&[
            "--bus=kafka",
            "--kafka-brokers=b:9092",
            "--kafka-sasl-username=u",
        ]);
        assert!(matches!(
            cli.bus.config(4, false),
            Err(CliError::Settings(_))
        ));
        let cli = parse(&["--scylla-tls"]);
        assert!(matches!(cli.scylla.config(), Err(CliError::Settings(_))));
        let cli = parse(&["--scylla-user=u"]);
        assert!(cli.scylla.config().is_err());
        let cli = parse(&["--scylla-tls-ca-file=/nonexistent/ca.pem", "--scylla-tls"]);
        assert!(matches!(cli.scylla.config(), Err(CliError::File { .. })));
    }
}
