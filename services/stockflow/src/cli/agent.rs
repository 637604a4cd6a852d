//! `stockflow store-agent`: the command line of the process beside a store's POS (the
//! agent itself is `crate::agent`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{CliError, Result};
use crate::app;

/// Arguments of `stockflow store-agent`.
#[derive(Debug, Args)]
pub(super) struct AgentArgs {
    /// The region's command API, e.g. `https://north.stockflow.example`.
    #[arg(long, env = "STOCKFLOW_REGION_URL")]
    region_url: String,
    /// The store this agent serves.
    #[arg(long, env = "STOCKFLOW_STORE_ID")]
    store_id: String,
    /// The store's locations, comma-separated: commands elsewhere are refused.
    #[arg(
        long,
        env = "STOCKFLOW_LOCATIONS",
        value_delimiter = ',',
        required = true
    )]
    locations: Vec<String>,
    /// A file holding the store's bearer token (read again when it changes).
    #[arg(long, env = "STOCKFLOW_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// PEM certificates of the region's CA, trusted besides the public roots (a region
    /// served by a private PKI).
    #[arg(long, env = "STOCKFLOW_REGION_CA_FILE")]
    region_ca_file: Option<PathBuf>,
    /// The store's PEM client certificate, for a region that requires mutual TLS (its
    /// principals file names the certificate, with the store's scopes and locations).
    #[arg(
        long,
        env = "STOCKFLOW_REGION_CLIENT_CERT_FILE",
        requires = "region_client_key_file"
    )]
    region_client_cert_file: Option<PathBuf>,
    /// The private key of --region-client-cert-file (PEM).
    #[arg(
        long,
        env = "STOCKFLOW_REGION_CLIENT_KEY_FILE",
        requires = "region_client_cert_file"
    )]
    region_client_key_file: Option<PathBuf>,
    /// Where the agent keeps its queue and view (one agent per directory).
    #[arg(long, env = "STOCKFLOW_DATA_DIR", default_value = "stockflow-agent")]
    data_dir: PathBuf,
    /// Where the POS reaches the agent.
    #[arg(long, env = "STOCKFLOW_LISTEN", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// The longest the store may sell offline, in hours: the region must keep idempotency
    /// records at least this long.
    #[arg(long, env = "STOCKFLOW_MAX_OFFLINE_HOURS", default_value_t = 168)]
    max_offline_hours: u64,
    /// The size the queue may take on disk, in MiB (past 95% only sales and returns are
    /// taken).
    #[arg(long, env = "STOCKFLOW_DISK_CAP_MB", default_value_t = 1024)]
    disk_cap_mb: u64,
    /// How long acknowledged commands are kept before compaction, in hours.
    #[arg(long, env = "STOCKFLOW_KEEP_ACKNOWLEDGED_HOURS", default_value_t = 24)]
    keep_acknowledged_hours: u64,
    /// How long one attempt waits for the region's answer, in seconds.
    #[arg(long, env = "STOCKFLOW_REQUEST_TIMEOUT_SECONDS", default_value_t = 10)]
    request_timeout_seconds: u64,
    /// Serve the POS on a non-loopback address (the API has no authentication of its own:
    /// only with a firewall that lets nothing but the tills in).
    #[arg(long, env = "STOCKFLOW_AGENT_ALLOW_NON_LOOPBACK")]
    allow_non_loopback: bool,
    /// The POS's own PostgreSQL, for a POS that writes its sales there: the agent reads the
    /// sales table by logical replication (the server needs `wal_level=logical`; the user
    /// needs REPLICATION and the table's ownership to create the publication).
    #[arg(long, env = "STOCKFLOW_POS_CAPTURE_URL")]
    pos_capture_url: Option<String>,
    /// The POS's sales table (`schema.table`).
    #[arg(
        long,
        env = "STOCKFLOW_POS_CAPTURE_TABLE",
        default_value = "public.pos_sales"
    )]
    pos_capture_table: String,
    /// Which columns hold what, as `field=column` pairs (fields: id, sku, location,
    /// quantity, kind); a field not named reads the column of its own name.
    #[arg(long, env = "STOCKFLOW_POS_CAPTURE_COLUMNS", default_value = "")]
    pos_capture_columns: String,
    /// The publication the agent creates for the table when it is missing.
    #[arg(
        long,
        env = "STOCKFLOW_POS_CAPTURE_PUBLICATION",
        default_value = "stockflow_pos_sales"
    )]
    pos_capture_publication: String,
    /// The agent's replication slot (default: `stockflow_agent_<store id>`).
    #[arg(long, env = "STOCKFLOW_POS_CAPTURE_SLOT")]
    pos_capture_slot: Option<String>,
    /// What the first capture does with the rows the table already holds: `record` them
    /// (sales the region has not seen) or `ignore` them (the region has them).
    #[arg(
        long,
        env = "STOCKFLOW_POS_CAPTURE_EXISTING_ROWS",
        value_enum,
        default_value = "record"
    )]
    pos_capture_existing_rows: crate::agent::capture::postgres::ExistingRows,
}

impl AgentArgs {
    pub(super) async fn run(self) -> Result<()> {
        if !self.listen.ip().is_loopback() && !self.allow_non_loopback {
            return Err(CliError::Settings(format!(
                "refusing to serve the store agent on {}: its API has no authentication of its \
                 own; listen on loopback, or give --allow-non-loopback behind a firewall",
                self.listen
            )));
        }
        let capture = match self.pos_capture_url {
            None => None,
            Some(url) => Some(crate::agent::capture::postgres::PostgresCapture {
                url,
                slot: self
                    .pos_capture_slot
                    .unwrap_or_else(|| format!("stockflow_agent_{}", slot_safe(&self.store_id))),
                table: self.pos_capture_table,
                publication: self.pos_capture_publication,
                columns: crate::agent::capture::Columns::parse(&self.pos_capture_columns)
                    .map_err(|e| CliError::Settings(format!("--pos-capture-columns: {e}")))?,
                existing_rows: self.pos_capture_existing_rows,
            }),
        };
        let config = crate::agent::AgentConfig {
            capture,
            region_url: self.region_url,
            store_id: self.store_id,
            locations: self.locations.into_iter().collect(),
            token_file: self.token_file,
            region_tls: crate::agent::region::RegionTls {
                ca_file: self.region_ca_file,
                client_cert_file: self.region_client_cert_file,
                client_key_file: self.region_client_key_file,
            },
            data_dir: self.data_dir,
            listen: self.listen,
            max_offline: Duration::from_secs(self.max_offline_hours * 3600),
            disk_cap_bytes: self.disk_cap_mb.saturating_mul(1 << 20),
            keep_acknowledged: Duration::from_secs(self.keep_acknowledged_hours * 3600),
            request_timeout: Duration::from_secs(self.request_timeout_seconds),
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| CliError::Settings(format!("cannot listen on {}: {e}", config.listen)))?;
        let running = crate::agent::start(config, listener).await?;
        let token = running.stop_token();
        tokio::spawn(async move {
            app::shutdown_signal().await;
            token.cancel();
        });
        Ok(running.wait().await?)
    }
}

/// A replication slot's name may hold lower-case letters, digits and underscores.
fn slot_safe(store_id: &str) -> String {
    store_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}
