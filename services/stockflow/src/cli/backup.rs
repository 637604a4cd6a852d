//! `stockflow backup` and `stockflow restore`: a consistent copy of an embedded data
//! directory taken while the platform serves it, and its restore into an empty directory.
//! The copy itself is `stockflow_storage::embedded::backup`'s; this is its command line.

use std::path::PathBuf;

use clap::Args;
use stockflow_storage::embedded::backup;

use super::CliError;

/// Arguments of `stockflow backup`.
#[derive(Debug, Args)]
pub(super) struct BackupArgs {
    /// The data directory to copy (a `stockflow dev` may be serving it).
    #[arg(long, env = "STOCKFLOW_DATA_DIR", default_value = "stockflow-data")]
    data_dir: PathBuf,
    /// Where to write the backup: a directory that does not exist yet (or is empty).
    #[arg(long)]
    to: PathBuf,
}

impl BackupArgs {
    /// Takes the backup and prints what it holds.
    pub(super) fn run(self) -> Result<(), CliError> {
        let report = backup::backup(&self.data_dir, &self.to)?;
        let m = &report.manifest;
        println!(
            "backed up {} to {} in {:.2?}: {} stock keys, {} reservations, {} idempotency records, {} outbox entries to publish, {} log records ({} newer than the write side cut, {} moved), {} webhook subscriptions, {} unfinished imports; {} bytes",
            self.data_dir.display(),
            self.to.display(),
            report.elapsed,
            m.stock_keys,
            m.reservations,
            m.idempotency_records,
            m.outbox_entries,
            m.log_records,
            report.records_cut,
            report.records_moved,
            m.subscriptions,
            m.unfinished_imports,
            report.bytes,
        );
        Ok(())
    }
}

/// Arguments of `stockflow restore`.
#[derive(Debug, Args)]
pub(super) struct RestoreArgs {
    /// The backup to restore (a directory written by `stockflow backup`).
    #[arg(long)]
    from: PathBuf,
    /// The data directory to restore into: it must not exist yet (or be empty). Start
    /// `stockflow dev --data-dir` on it afterwards; it publishes what the outbox still
    /// holds and projects the log from where the read models stopped.
    #[arg(long, env = "STOCKFLOW_DATA_DIR")]
    data_dir: PathBuf,
}

impl RestoreArgs {
    /// Restores the backup and prints what it held.
    pub(super) fn run(self) -> Result<(), CliError> {
        let started = std::time::Instant::now();
        let m = backup::restore(&self.from, &self.data_dir)?;
        println!(
            "restored {} into {} in {:.2?}: {} stock keys, {} reservations, {} idempotency records, {} log records, {} webhook subscriptions, {} unfinished imports (backup of {} taken at {} ms)",
            self.from.display(),
            self.data_dir.display(),
            started.elapsed(),
            m.stock_keys,
            m.reservations,
            m.idempotency_records,
            m.log_records,
            m.subscriptions,
            m.unfinished_imports,
            m.source,
            m.created_at_ms,
        );
        Ok(())
    }
}
