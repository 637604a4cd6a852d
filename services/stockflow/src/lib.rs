//! The `stockflow` service: HTTP command and query APIs, the background workers, and the
//! wiring that runs them.
//!
//! Layout:
//! - [`agent`]: `stockflow store-agent`, the store's offline-capable agent beside the POS.
//! - [`auth`]: bearer tokens, scopes and the locations a token may act at.
//! - [`http`]: the axum router — command API, query API, operations endpoints, OpenAPI.
//! - [`events`]: the events as CloudEvents on the bus, and their AsyncAPI document.
//! - [`error`]: the one error type and its mapping to RFC 9457 problem responses.
//! - [`workers`]: outbox publisher, projectors, reservation expiry.
//! - [`app`]: wiring of the embedded platform (`stockflow dev`) and graceful shutdown.
//! - [`telemetry`]: the Prometheus recorder (logs and traces: `stockflow-telemetry`).
//! - [`trace`]: `stockflow trace`, the path of one command read from a region's APIs.

pub mod agent;
pub mod app;
pub mod auth;
pub mod cli;
pub mod error;
pub mod events;
pub mod http;
pub mod imports;
pub mod telemetry;
pub mod trace;
pub mod workers;
