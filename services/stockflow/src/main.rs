//! The `stockflow` binary: one executable, several roles.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use stockflow::{app, bench, telemetry};

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
    },
    /// Drive load against a running stockflow and report throughput, latency and lag.
    Bench(bench::BenchArgs),
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
            } => run_dev(data_dir, listen, partitions).await,
            Role::Bench(args) => bench::run(args).await.map_err(|e| e.to_string()),
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

async fn run_dev(data_dir: PathBuf, listen: SocketAddr, partitions: u32) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let mut config = app::DevConfig::new(data_dir);
    config.partitions = partitions;
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
