//! The `stockflow` binary: one executable, several roles (see [`stockflow::cli`]).

use std::process::ExitCode;

use clap::Parser;
use stockflow::cli::Cli;

// The request path allocates many small, short-lived buffers across threads; mimalloc
// handles that pattern with far less contention than the system allocator. It is built
// without transparent huge pages (the `no_thp` feature): with them, khugepaged collapses
// its sparsely used regions into 2 MiB pages some twenty minutes into a run, and the
// resident set steps up by tens of MiB that the program never uses (scripts/soak.sh).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before the runtime: the OTLP exporter's blocking client refuses to be built inside it.
    let traces = stockflow_telemetry::init_tracing(cli.log_json, cli.service_name());
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
    let result = runtime.block_on(cli.run());
    traces.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The log line for collectors, the message for whoever ran the command.
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
