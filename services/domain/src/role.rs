//! The roles of the one `stockflow` binary that a region deploys. The operator names its
//! Deployments, Services and environment after these, and the binary's subcommands carry
//! the same names, so the two cannot drift apart.

use std::fmt;

/// A role a region runs as its own Deployment of the `stockflow` image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Commands, catalog writes, reservation reads and expiry.
    CommandApi,
    /// The read models.
    QueryApi,
    /// Outbox → bus.
    Publisher,
    /// Bus → read models.
    Projector,
    /// Bus → webhook subscribers.
    Webhooks,
}

impl Role {
    /// Every role a region runs, in the order it is rolled out.
    pub const REGION: [Role; 5] = [
        Role::CommandApi,
        Role::QueryApi,
        Role::Publisher,
        Role::Projector,
        Role::Webhooks,
    ];

    /// The role's name: the `stockflow` subcommand that runs it, and the suffix of its
    /// Kubernetes objects.
    pub fn name(self) -> &'static str {
        match self {
            Role::CommandApi => "command-api",
            Role::QueryApi => "query-api",
            Role::Publisher => "publisher",
            Role::Projector => "projector",
            Role::Webhooks => "webhooks",
        }
    }

    /// Whether the role serves an API to clients (behind a Service).
    pub fn exposed(self) -> bool {
        matches!(self, Role::CommandApi | Role::QueryApi)
    }

    /// The OpenTelemetry `service.name` of its processes.
    pub fn service_name(self) -> &'static str {
        match self {
            Role::CommandApi => "stockflow-command-api",
            Role::QueryApi => "stockflow-query-api",
            Role::Publisher => "stockflow-publisher",
            Role::Projector => "stockflow-projector",
            Role::Webhooks => "stockflow-webhooks",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
