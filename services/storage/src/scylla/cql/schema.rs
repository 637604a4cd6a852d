//! The CQL schema: keyspace creation (replication is configuration), versioned files
//! applied idempotently, and the version check every role runs at start-up.

use scylla::client::session::Session;

use super::errors::{already_applied, cql, table_missing};
use super::query::decode;
use super::rows::{KeyspaceRow, SchemaVersionRow};
use super::session::valid_keyspace;
use crate::{Result, StoreError, now_ms};

/// The schema version this build expects.
pub const SCHEMA_VERSION: i32 = 9;

/// Versioned schema files, applied in order.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../../../schema/cql/001_initial.cql")),
    (
        2,
        include_str!("../../../schema/cql/002_reservation_rows.cql"),
    ),
    (3, include_str!("../../../schema/cql/003_leases.cql")),
    (
        4,
        include_str!("../../../schema/cql/004_recorded_refusals.cql"),
    ),
    (5, include_str!("../../../schema/cql/005_movements.cql")),
    (
        6,
        include_str!("../../../schema/cql/006_deadline_tombstones.cql"),
    ),
    (
        7,
        include_str!("../../../schema/cql/007_movement_provenance.cql"),
    ),
    (8, include_str!("../../../schema/cql/008_change_feed.cql")),
    (
        9,
        include_str!("../../../schema/cql/009_quantity_states.cql"),
    ),
];

/// How the keyspace is replicated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replication {
    /// `NetworkTopologyStrategy` with a replication factor per datacenter.
    NetworkTopology(Vec<(String, u32)>),
    /// `SimpleStrategy` (single-DC test clusters only).
    Simple(u32),
}

impl Replication {
    fn cql(&self) -> Result<String> {
        Ok(match self {
            Replication::Simple(rf) => {
                format!("{{'class': 'SimpleStrategy', 'replication_factor': {rf}}}")
            }
            Replication::NetworkTopology(dcs) => {
                let mut parts = vec!["'class': 'NetworkTopologyStrategy'".to_string()];
                for (dc, rf) in dcs {
                    if !dc
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    {
                        return Err(StoreError::Config {
                            setting: "replication",
                            reason: format!("datacenter name {dc:?}"),
                        });
                    }
                    parts.push(format!("'{dc}': {rf}"));
                }
                format!("{{{}}}", parts.join(", "))
            }
        })
    }
}

/// Creates the keyspace if missing and applies every schema file not yet applied.
/// Idempotent. `tablets` adds ScyllaDB's `tablets = {'enabled': ...}` option, which
/// Cassandra rejects: leave it `None` there. Returns the schema version now in place.
pub async fn migrate(
    session: &Session,
    keyspace: &str,
    replication: &Replication,
    tablets: Option<bool>,
) -> Result<i32> {
    valid_keyspace(keyspace)?;
    let mut create = format!(
        "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {}",
        replication.cql()?
    );
    if let Some(enabled) = tablets {
        create.push_str(&format!(" AND tablets = {{'enabled': {enabled}}}"));
    }
    session
        .query_unpaged(create, ())
        .await
        .map_err(cql("create keyspace"))?;
    let current = applied_version(session, keyspace).await?.unwrap_or(0);
    for (version, text) in MIGRATIONS {
        if *version <= current {
            continue;
        }
        for statement in text.split("\n;\n").map(str::trim).filter(|s| !s.is_empty()) {
            let statement = strip_comments(statement);
            if statement.is_empty() {
                continue;
            }
            let qualified = qualify(&statement, keyspace);
            match session.query_unpaged(qualified, ()).await {
                Ok(_) => {}
                // A migration interrupted after this statement: `ALTER TABLE ... ADD` has
                // no `IF NOT EXISTS`, so a column already there means it was applied.
                Err(e) if statement.starts_with("ALTER TABLE") && already_applied(&e) => {}
                Err(e) => return Err(cql("apply schema")(e)),
            }
        }
        await_agreement(session).await?;
        session
            .query_unpaged(
                format!(
                    "INSERT INTO {keyspace}.schema_version (name, version, applied_at) VALUES ('stockflow', ?, ?)"
                ),
                (*version, now_ms()),
            )
            .await
            .map_err(cql("record schema version"))?;
        tracing::info!(keyspace, version, "schema applied");
    }
    Ok(applied_version(session, keyspace).await?.unwrap_or(0))
}

/// Drops the keyspace and every table in it (idempotent). Only `stockflow teardown` calls
/// this, when a region deleted under `deletionPolicy: Delete` takes its data with it.
pub async fn drop_keyspace(session: &Session, keyspace: &str) -> Result<()> {
    valid_keyspace(keyspace)?;
    session
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ())
        .await
        .map_err(cql("drop keyspace"))?;
    await_agreement(session).await
}

/// Waits until every node runs the same schema; a node that lags is the cluster's
/// trouble, and the same step may be retried.
async fn await_agreement(session: &Session) -> Result<()> {
    session
        .await_schema_agreement()
        .await
        .map_err(|e| StoreError::Cql {
            what: "schema agreement",
            transient: true,
            rejects_input: false,
            source: Box::new(e),
        })?;
    Ok(())
}

fn strip_comments(statement: &str) -> String {
    statement
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string()
}

/// Prefixes table names with the keyspace (`CREATE TABLE IF NOT EXISTS t` → `ks.t`,
/// `ALTER TABLE t` → `ALTER TABLE ks.t`).
fn qualify(statement: &str, keyspace: &str) -> String {
    for prefix in ["CREATE TABLE IF NOT EXISTS ", "ALTER TABLE "] {
        if let Some(rest) = statement.strip_prefix(prefix) {
            return format!("{prefix}{keyspace}.{rest}");
        }
    }
    statement.to_string()
}

async fn applied_version(session: &Session, keyspace: &str) -> Result<Option<i32>> {
    let result = session
        .query_unpaged(
            format!("SELECT version FROM {keyspace}.schema_version WHERE name = 'stockflow'"),
            (),
        )
        .await;
    match result {
        Ok(r) => {
            let rows: Vec<SchemaVersionRow> = decode("read schema version", r)?;
            Ok(rows.into_iter().next().and_then(|row| row.version))
        }
        // The table does not exist before the first migration.
        Err(e) if table_missing(&e) => Ok(None),
        Err(e) => Err(cql("read schema version")(e)),
    }
}

/// Refuses to run against a missing keyspace or another schema version, with a message
/// that says what to do.
pub async fn check_schema(session: &Session, keyspace: &str) -> Result<()> {
    valid_keyspace(keyspace)?;
    let exists = session
        .query_unpaged(
            "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = ?",
            (keyspace,),
        )
        .await
        .map_err(cql("look up keyspace"))?;
    let found: Vec<KeyspaceRow> = decode("look up keyspace", exists)?;
    let schema = |reason| StoreError::Config {
        setting: "keyspace",
        reason,
    };
    if !found.iter().any(|k| k.keyspace_name == keyspace) {
        return Err(schema(format!(
            "keyspace {keyspace} does not exist; run `stockflow migrate` first"
        )));
    }
    match applied_version(session, keyspace).await? {
        Some(SCHEMA_VERSION) => Ok(()),
        Some(v) => Err(schema(format!(
            "keyspace {keyspace} has schema version {v}, this build needs {SCHEMA_VERSION}; run `stockflow migrate` with a matching build"
        ))),
        None => Err(schema(format!(
            "keyspace {keyspace} has no stockflow schema; run `stockflow migrate` first"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_files_split_into_statements() {
        let statements: Vec<String> = MIGRATIONS[0]
            .1
            .split("\n;\n")
            .map(strip_comments)
            .filter(|s| !s.is_empty())
            .collect();
        assert!(statements.len() >= 10);
        assert!(
            statements
                .iter()
                .all(|s| s.starts_with("CREATE TABLE IF NOT EXISTS "))
        );
        assert_eq!(
            qualify(&statements[0], "ks"),
            statements[0].replacen("EXISTS ", "EXISTS ks.", 1)
        );
    }

    #[test]
    fn replication_renders_cql() {
        assert_eq!(
            Replication::NetworkTopology(vec![("datacenter1".into(), 1)])
                .cql()
                .unwrap(),
            "{'class': 'NetworkTopologyStrategy', 'datacenter1': 1}"
        );
        assert!(
            Replication::NetworkTopology(vec![("dc'1".into(), 1)])
                .cql()
                .is_err()
        );
    }
}
