//! Everything CQL: the session ([`session`]), the driver's errors told apart ([`errors`]),
//! statements run and their rows decoded as typed structs ([`query`], [`rows`]), the
//! prepared statements of each store, counts as CQL integers ([`values`]), and the versioned
//! schema ([`schema`]).

pub(crate) mod errors;
pub(crate) mod query;
pub(crate) mod read_statements;
pub(crate) mod rows;
pub mod schema;
pub(crate) mod session;
pub(crate) mod values;
pub(crate) mod write_statements;

pub use schema::{Replication, SCHEMA_VERSION, check_schema, drop_keyspace, migrate};
pub use session::{ScyllaConfig, connect};
