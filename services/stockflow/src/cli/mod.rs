//! The command line of the `stockflow` binary: its subcommands ([`commands`]: `dev`, the
//! region roles, `migrate`, `teardown`, `token`, `trace`, `backup`, `restore`), the settings they share
//! ([`settings`]: store, bus, command limits), the HTTP edge's ([`security`]) and the edge
//! cache's ([`edge`]).
//!
//! Every setting also reads an environment variable (`STOCKFLOW_*`), which is how the
//! operator's pods receive them: plain values from the region's ConfigMap, secrets
//! (passwords, CA certificates) from Secrets, never on the command line.

use std::path::PathBuf;

use stockflow_bus::BusError;
use stockflow_storage::StoreError;

use crate::app;

mod agent;
mod backup;
mod commands;
mod edge;
mod rebuild;
pub mod reference;
mod security;
mod settings;

pub use commands::Cli;
pub use edge::EdgeArgs;
pub use security::{SecurityArgs, TokenArgs};
pub use settings::{Bus, BusArgs, CommandArgs, KafkaProtocol, ScyllaArgs, Store};

/// Why the binary stopped.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A setting is missing or malformed.
    #[error("{0}")]
    Settings(String),
    /// A file named by a setting cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The platform failed to start or stopped with an error.
    #[error(transparent)]
    App(#[from] app::AppError),
    /// A store call failed (migrate, teardown).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bus call failed (migrate, teardown).
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The store agent failed.
    #[error(transparent)]
    Agent(#[from] crate::agent::AgentError),
    /// `stockflow trace` could not follow the command.
    #[error(transparent)]
    Trace(#[from] crate::trace::TraceError),
}

/// Result with [`CliError`].
pub type Result<T, E = CliError> = std::result::Result<T, E>;

fn settings(message: impl Into<String>) -> CliError {
    CliError::Settings(message.into())
}

/// A PEM given inline (an env var filled from a Secret) or as a file.
fn pem(inline: Option<&String>, file: Option<&PathBuf>) -> Result<Option<String>> {
    match (inline, file) {
        (Some(pem), _) => Ok(Some(pem.clone())),
        (None, Some(path)) => {
            std::fs::read_to_string(path)
                .map(Some)
                .map_err(|source| CliError::File {
                    path: path.clone(),
                    source,
                })
        }
        (None, None) => Ok(None),
    }
}
