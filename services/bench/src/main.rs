//! `stockflow-bench`: load generators for a running stockflow, kept out of the product
//! binary.
//!
//! Layout:
//! - `http`: workloads over the HTTP API (reserve + confirm, queries, an expiry burst, a
//!   soak), with `conn` (one keep-alive connection, the histograms), `expiry_burst` and `soak`.
//! - `lwt`: the raw ScyllaDB conditional-batch ceiling the command path is measured
//!   against.
//! - `bus`: the event path alone (Kafka, and a projector running as its own process),
//!   with `prometheus`, which reads that process's `/metrics`.
//! - `rebuild`: seeding many keys and timing the read models' rebuild from the write side.
//! - `pg`: the same checkout as PostgreSQL transactions, the baseline.
//! - `cpu`: CPU time per command of the processes a run drives (server, database).

mod args;
mod bus;
mod checkout;
mod conn;
mod cpu;
mod expiry_burst;
mod http;
mod import;
mod lwt;
mod pg;
mod prometheus;
mod rebuild;
mod soak;
mod sourcing;

use clap::{Parser, Subcommand};

/// Why a bench run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The target could not be reached or answered badly during set-up.
    #[error("{0}")]
    Setup(String),
    /// A measured run failed midway (the bus refused an append, a metric was unreadable).
    #[error("{0}")]
    Run(String),
}

#[derive(Debug, Parser)]
#[command(
    name = "stockflow-bench",
    version,
    about = "Load generators for stockflow"
)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Drive a running stockflow over HTTP.
    Http(args::BenchArgs),
    /// The raw ScyllaDB LWT ceiling (the command path's conditional batch, nothing else).
    Lwt(lwt::LwtArgs),
    /// Seed many keys, then time `rebuild-read-models` (embedded, or ScyllaDB).
    Rebuild(rebuild::RebuildArgs),
    /// The same checkout as PostgreSQL transactions (the baseline).
    Pg(pg::PgArgs),
    /// The event path alone: appends to Kafka as the publisher does, read back by the
    /// bench and by a running `stockflow projector`.
    Bus(bus::BusArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.bench {
        Bench::Http(args) => http::run(args).await,
        Bench::Lwt(args) => lwt::run_lwt(args).await,
        Bench::Rebuild(args) => rebuild::run_rebuild(args).await,
        Bench::Pg(args) => pg::run_pg(args).await,
        Bench::Bus(args) => bus::run_bus(args).await.map_err(BenchError::Run),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stockflow-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
