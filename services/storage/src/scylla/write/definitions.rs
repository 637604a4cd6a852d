//! Sales channels and bundles on ScyllaDB: one row each, the definition as JSON, revised
//! by a conditional write on its version so two concurrent changes never both count as
//! the same revision.

use scylla::statement::prepared::PreparedStatement;

use super::backoff::{MAX_ATTEMPTS, jitter};
use super::partition::Partitions;
use crate::definition::Definition;
use crate::scylla::cql::query;
use crate::scylla::cql::rows::DefinitionRow;
use crate::scylla::cql::values::bigint;
use crate::{Result, StoreError};

/// The statements of one kind of definition.
pub(super) struct Statements<'a> {
    pub get: &'a PreparedStatement,
    pub create: &'a PreparedStatement,
    pub revise: &'a PreparedStatement,
}

/// The definition stored under `key`, if any.
pub(super) async fn load<D: Definition>(
    p: &Partitions,
    st: &Statements<'_>,
    key: &str,
) -> Result<Option<D>> {
    let row: Option<DefinitionRow> = query::first(&p.session, D::WHAT, st.get, (key,)).await?;
    row.and_then(|r| r.body).map(|b| decode(&b)).transpose()
}

/// Every definition of one kind (a small table, read whole).
pub(super) async fn load_all<D: Definition>(
    p: &Partitions,
    all: &PreparedStatement,
) -> Result<Vec<D>> {
    let rows: Vec<DefinitionRow> = query::rows(&p.session, D::WHAT, all, ()).await?;
    rows.into_iter()
        .filter_map(|r| r.body)
        .map(|b| decode(&b))
        .collect()
}

fn decode<D: Definition>(body: &str) -> Result<D> {
    serde_json::from_str(body).map_err(StoreError::corrupt(D::WHAT))
}

/// Stores `definition` as the next revision of its key, retrying while others revise it.
pub(super) async fn put<D: Definition>(
    p: &Partitions,
    st: &Statements<'_>,
    definition: D,
) -> Result<D> {
    for attempt in 0..MAX_ATTEMPTS {
        let current: Option<D> = load(p, st, definition.key()).await?;
        let revised = definition.clone().revised(current.as_ref());
        let body = serde_json::to_string(&revised).map_err(StoreError::encode(D::WHAT))?;
        let version = version_of(&revised)?;
        let key = revised.key();
        let lwt = match &current {
            None => {
                query::lwt(
                    &p.session,
                    D::WHAT,
                    st.create,
                    (key, version, body.as_str()),
                )
                .await?
            }
            Some(previous) => {
                let expected = version_of(previous)?;
                query::lwt(
                    &p.session,
                    D::WHAT,
                    st.revise,
                    (version, body.as_str(), key, expected),
                )
                .await?
            }
        };
        if lwt.applied {
            return Ok(revised);
        }
        tokio::time::sleep(jitter(attempt)).await;
    }
    Err(StoreError::Contention {
        on: format!("{} {}", D::WHAT, definition.key()),
    })
}

fn version_of<D: Definition>(definition: &D) -> Result<i64> {
    bigint("revise a definition revision", definition.version())
}
