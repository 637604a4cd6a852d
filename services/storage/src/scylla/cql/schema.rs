//! The CQL schema: keyspace creation (replication is configuration), versioned files
//! applied idempotently, and the version check every role runs at start-up.

use scylla::DeserializeRow;
use scylla::client::session::Session;

use super::errors::{already_applied, cql, table_missing};
use super::query::decode;
use super::session::valid_keyspace;
use crate::{Result, StoreError, now_ms};

/// The schema version applied.
#[derive(Debug, DeserializeRow)]
struct SchemaVersionRow {
    version: Option<i32>,
}

/// The oldest build a schema admits.
#[derive(Debug, DeserializeRow)]
struct ReadersRow {
    readers_from: Option<i32>,
}

/// A keyspace that exists.
#[derive(Debug, DeserializeRow)]
struct KeyspaceRow {
    keyspace_name: String,
}

/// The schema version this build expects.
pub const SCHEMA_VERSION: i32 = 16;

/// One versioned schema file.
struct Migration {
    version: i32,
    text: &'static str,
    /// The oldest build (by the schema version it expects) that still runs correctly on
    /// the schema after this migration: its own version when older builds would misread
    /// it, lower when the migration only adds what older builds never touch.
    readers_from: i32,
}

/// The first version whose `schema_version` row says which builds may run on it.
const READERS_RECORDED_FROM: i32 = 10;

const fn step(version: i32, text: &'static str, readers_from: i32) -> Migration {
    Migration {
        version,
        text,
        readers_from,
    }
}

/// Versioned schema files, applied in order. Builds before version 10 accept only their
/// own version, so those migrations admit no older reader.
const MIGRATIONS: &[Migration] = &[
    step(1, include_str!("../../../schema/cql/001_initial.cql"), 1),
    step(
        2,
        include_str!("../../../schema/cql/002_reservation_rows.cql"),
        2,
    ),
    step(3, include_str!("../../../schema/cql/003_leases.cql"), 3),
    step(
        4,
        include_str!("../../../schema/cql/004_recorded_refusals.cql"),
        4,
    ),
    step(5, include_str!("../../../schema/cql/005_movements.cql"), 5),
    step(
        6,
        include_str!("../../../schema/cql/006_deadline_tombstones.cql"),
        6,
    ),
    step(
        7,
        include_str!("../../../schema/cql/007_movement_provenance.cql"),
        7,
    ),
    step(
        8,
        include_str!("../../../schema/cql/008_change_feed.cql"),
        8,
    ),
    step(
        9,
        include_str!("../../../schema/cql/009_quantity_states.cql"),
        9,
    ),
    step(
        10,
        include_str!("../../../schema/cql/010_reader_compatibility.cql"),
        9,
    ),
    step(11, include_str!("../../../schema/cql/011_transfers.cql"), 9),
    step(12, include_str!("../../../schema/cql/012_sourcing.cql"), 9),
    step(
        13,
        include_str!("../../../schema/cql/013_channel_allocations.cql"),
        13,
    ),
    step(
        14,
        include_str!("../../../schema/cql/014_sku_policies.cql"),
        14,
    ),
    step(15, include_str!("../../../schema/cql/015_webhooks.cql"), 14),
    step(16, include_str!("../../../schema/cql/016_imports.cql"), 14),
];

/// The oldest build that runs on the schema once every migration up to `version` is in.
fn readers_from(version: i32) -> i32 {
    MIGRATIONS
        .iter()
        .filter(|m| m.version <= version)
        .map(|m| m.readers_from)
        .max()
        .unwrap_or(version)
}

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
    for Migration { version, text, .. } in MIGRATIONS {
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
        let recorded = if *version >= READERS_RECORDED_FROM {
            session
                .query_unpaged(
                    format!(
                        "INSERT INTO {keyspace}.schema_version (name, version, applied_at, readers_from) VALUES ('stockflow', ?, ?, ?)"
                    ),
                    (*version, now_ms(), readers_from(*version)),
                )
                .await
        } else {
            session
                .query_unpaged(
                    format!(
                        "INSERT INTO {keyspace}.schema_version (name, version, applied_at) VALUES ('stockflow', ?, ?)"
                    ),
                    (*version, now_ms()),
                )
                .await
        };
        recorded.map_err(cql("record schema version"))?;
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

/// The oldest build a schema newer than this build's admits (`None` when its row does
/// not say).
async fn newer_readers_from(session: &Session, keyspace: &str) -> Result<Option<i32>> {
    let result = session
        .query_unpaged(
            format!("SELECT readers_from FROM {keyspace}.schema_version WHERE name = 'stockflow'"),
            (),
        )
        .await
        .map_err(cql("read schema compatibility"))?;
    let rows: Vec<ReadersRow> = decode("read schema compatibility", result)?;
    Ok(rows.into_iter().next().and_then(|row| row.readers_from))
}

/// Refuses to run against a missing keyspace, an older schema, or a newer one this build
/// cannot run on, with a message that says what to do. A newer schema that admits this
/// build is accepted: mixed versions during a rolling upgrade keep serving.
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
        Some(v) if v < SCHEMA_VERSION => Err(schema(format!(
            "keyspace {keyspace} has schema version {v}, this build needs {SCHEMA_VERSION}; run `stockflow migrate` with this build"
        ))),
        // Newer: the previous build during a rolling upgrade, which keeps serving while the
        // newer schema's migrations since its own were additive.
        Some(v) => match newer_readers_from(session, keyspace).await? {
            Some(from) if from <= SCHEMA_VERSION => Ok(()),
            from => Err(schema(format!(
                "keyspace {keyspace} has schema version {v}, which builds before schema version {} cannot run on; this build is at {SCHEMA_VERSION}: run a newer build",
                from.unwrap_or(v)
            ))),
        },
        None => Err(schema(format!(
            "keyspace {keyspace} has no stockflow schema; run `stockflow migrate` first"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_in_order_and_admit_no_reader_newer_than_themselves() {
        for (n, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, n as i32 + 1);
            assert!(m.readers_from <= m.version);
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(SCHEMA_VERSION));
        // Builds 9-12 ran on each other's schemas; 13's key documents carry allocations
        // that older builds would drop; 14's SKU policies, which they would not read; 15
        // and 16 add tables only.
        assert_eq!(readers_from(12), 9);
        assert_eq!(readers_from(13), 13);
        assert_eq!(readers_from(SCHEMA_VERSION), 14);
    }

    #[test]
    fn schema_files_split_into_statements() {
        let statements: Vec<String> = MIGRATIONS[0]
            .text
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
