//! `stockflow rebuild-read-models`: the stock read models and search rebuilt from the
//! write side (`stockflow_storage::rebuild`), with progress, resuming an interrupted run.
//! The embedded store is rebuilt with the platform stopped (one process holds a data
//! directory); on ScyllaDB the projectors may keep running, since every read-model cell
//! carries its version as its write timestamp and the newest wins.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use stockflow_storage::embedded::EmbeddedBackend;
use stockflow_storage::ports::{ReadStore, WriteStore};
use stockflow_storage::rebuild::{self, RebuildProgress};
use stockflow_storage::scylla::ScyllaBackend;

use super::Result;
use super::settings::{ScyllaArgs, Store};

/// Arguments of `stockflow rebuild-read-models`.
#[derive(Debug, Args)]
pub(super) struct RebuildArgs {
    /// Where the write and read sides live.
    #[arg(long, env = "STOCKFLOW_STORE", value_enum, default_value = "embedded")]
    store: Store,
    /// The embedded data directory (stop `stockflow dev` first).
    #[arg(long, env = "STOCKFLOW_DATA_DIR", default_value = "stockflow-data")]
    data_dir: PathBuf,
    /// Event-log partitions of the embedded data directory (as it was created with).
    #[arg(long, env = "STOCKFLOW_PARTITIONS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    partitions: u32,
    /// Keys written per step; the checkpoint a resumed run starts from moves after each.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    page: u64,
    #[command(flatten)]
    scylla: ScyllaArgs,
}

impl RebuildArgs {
    /// Rebuilds, printing progress about once a second and a summary.
    pub(super) async fn run(self) -> Result<()> {
        let page = usize::try_from(self.page).unwrap_or(rebuild::PAGE);
        match self.store {
            Store::Embedded => {
                let b = EmbeddedBackend::open(&self.data_dir, self.partitions)?;
                run(b.write.as_ref(), b.read.as_ref(), page).await
            }
            Store::Scylla => {
                let b = ScyllaBackend::open(&self.scylla.config()?).await?;
                run(b.write.as_ref(), b.read.as_ref(), page).await
            }
        }
    }
}

async fn run(write: &dyn WriteStore, read: &dyn ReadStore, page: usize) -> Result<()> {
    let started = Instant::now();
    let mut last_report = Instant::now();
    let report = |p: RebuildProgress| {
        if last_report.elapsed().as_secs() >= 1 || p.keys_done == p.keys {
            last_report = Instant::now();
            eprintln!("rebuild-read-models: {}/{} keys", p.keys_done, p.keys);
        }
    };
    let done = rebuild::rebuild_read_models(write, read, page, None, report)
        .await?
        .ok_or_else(|| super::CliError::Settings("the rebuild stopped before its end".into()))?;
    println!(
        "rebuilt the read models of {} keys and {} SKUs in {:.2?}{}",
        done.keys,
        done.skus,
        started.elapsed(),
        if done.resumed_after > 0 {
            format!(
                ", resuming after {} keys done by an earlier run",
                done.resumed_after
            )
        } else {
            String::new()
        }
    );
    Ok(())
}
