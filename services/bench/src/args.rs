//! The arguments of `stockflow-bench http`, shared by its workloads.

use std::net::SocketAddr;

use clap::{Args, ValueEnum};

use crate::cpu::Watched;

/// Arguments of `stockflow-bench http`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Address of the stockflow HTTP API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub target: SocketAddr,
    /// Connections (keep-alive, each a loop), seconds per workload, SKUs (1 = a single
    /// hot SKU) and the processes whose CPU the reserve workload reports per command.
    #[command(flatten)]
    pub load: Load,
    /// Reservations the `expiry` workload makes.
    #[arg(long, default_value_t = 100_000)]
    pub reservations: usize,
    /// TTL of the `expiry` workload's reservations, in seconds.
    #[arg(long, default_value_t = 1)]
    pub ttl_seconds: u64,
    /// Which part of the `expiry` workload to run: `make` only makes the reservations,
    /// `wait` only waits until a freshly started server has expired them (to measure a
    /// backlog that is all overdue at once, after a restart; use the same `--run-id`).
    #[arg(long, value_enum, default_value = "both")]
    pub expiry_phase: Phase,
    /// Reuse the SKUs of an earlier run (its id is printed at start).
    #[arg(long)]
    pub run_id: Option<String>,
    /// Carts per second the `soak` workload sends, spread over the connections.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Rows of the `import` workload's file.
    #[arg(long, default_value_t = 1_000_000)]
    pub import_rows: usize,
    /// Which workload(s) to run.
    #[arg(long, value_enum, default_value = "all")]
    pub workload: Workload,
    /// Bearer token sent with every request, for a platform that requires one (e.g.
    /// `$(stockflow token --data-dir DIR)` for `stockflow dev --auth-dev`). It needs the
    /// stock:read, stock:adjust, stock:reserve and catalog:write scopes. All requests are
    /// then one caller's: raise the server's --rate-limit-per-second (200) to measure more.
    #[arg(long, env = "STOCKFLOW_BENCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// The shape of a load: how many loops (each on its own connection), how long, over how
/// many keys, and which processes' CPU to count.
#[derive(Debug, Args)]
pub struct Load {
    /// Concurrent loops, each on its own connection.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Distinct keys (1 = a single hot row or partition).
    #[arg(long, default_value_t = 1000)]
    pub skus: usize,
    /// A process whose CPU time over the run is reported per command, `NAME=PID` (the
    /// database; its descendants count with it).
    #[arg(long = "cpu", value_name = "NAME=PID")]
    pub cpu: Vec<Watched>,
}

/// Workload selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Reserve + confirm.
    Reserve,
    /// Point queries.
    Query,
    /// Reserve, then query.
    All,
    /// A burst of 1-second reservations, all expiring (not part of `all`).
    Expiry,
    /// Region-level reservations against located ones, in one run (not part of `all`).
    Sourcing,
    /// Checkout latency without and during a bulk import, and the import's rows/s (not
    /// part of `all`).
    Import,
    /// Mixed load at a steady `--rate` for `--duration`, checked exact at the end (not
    /// part of `all`; `scripts/soak.sh` runs it for an hour).
    Soak,
}

/// Parts of the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Phase {
    /// Make the reservations, then wait for them to expire.
    Both,
    /// Only make them.
    Make,
    /// Only wait for a freshly started server to expire them.
    Wait,
}
