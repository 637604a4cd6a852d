//! Running statements and reading their rows as typed structs: every result is decoded
//! into a `DeserializeRow` type (the row structs are in [`super::rows`]), never read by
//! column name — but for [`Lwt`], the result of a conditional write, whose shape differs
//! between ScyllaDB and Cassandra.

use futures::TryStreamExt;
use scylla::client::session::Session;
use scylla::deserialize::row::{ColumnIterator, DeserializeRow};
use scylla::deserialize::value::DeserializeValue;
use scylla::deserialize::{DeserializationError, TypeCheckError};
use scylla::frame::response::result::ColumnSpec;
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;

use super::errors::{cql, unreadable};
use crate::Result;

/// The name ScyllaDB and Cassandra both give the outcome column of a conditional write.
const APPLIED: &str = "[applied]";
/// The column a lease's conditional write returns when it is not applied.
const OWNER: &str = "owner";

/// What a conditional statement or batch answered. ScyllaDB returns `[applied]` and the
/// old row always (one row per conditional statement of a batch); Cassandra returns only
/// `[applied]` when applied, and `[applied]` with the condition columns when not (one row
/// for a batch). Both name `[applied]`, so it is read by name and every other column is
/// ignored but `owner` (a lease's holder).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Lwt {
    /// Whether the condition held (every statement's, in a batch) and the write happened.
    pub applied: bool,
    /// The `owner` column of the row returned, if it has one.
    pub owner: Option<String>,
}

/// A result with no `[applied]` column where one was expected.
#[derive(Debug, thiserror::Error)]
#[error("a conditional result without [applied]")]
struct NoApplied;

impl<'frame, 'metadata> DeserializeRow<'frame, 'metadata> for Lwt {
    fn type_check(specs: &[ColumnSpec]) -> std::result::Result<(), TypeCheckError> {
        let mut found = false;
        for spec in specs {
            match spec.name() {
                APPLIED => {
                    <bool as DeserializeValue>::type_check(spec.typ())?;
                    found = true;
                }
                OWNER => <Option<String> as DeserializeValue>::type_check(spec.typ())?,
                _ => {}
            }
        }
        if found {
            Ok(())
        } else {
            Err(TypeCheckError::new(NoApplied))
        }
    }

    fn deserialize(
        row: ColumnIterator<'frame, 'metadata>,
    ) -> std::result::Result<Self, DeserializationError> {
        let mut lwt = Lwt::default();
        for column in row {
            let column = column?;
            match column.spec.name() {
                APPLIED => {
                    lwt.applied =
                        <bool as DeserializeValue>::deserialize(column.spec.typ(), column.slice)?;
                }
                OWNER => {
                    lwt.owner = <Option<String> as DeserializeValue>::deserialize(
                        column.spec.typ(),
                        column.slice,
                    )?;
                }
                _ => {}
            }
        }
        Ok(lwt)
    }
}

/// Decodes every row of `result` as `R`.
pub(crate) fn decode<R>(what: &'static str, result: QueryResult) -> Result<Vec<R>>
where
    R: for<'f, 'm> DeserializeRow<'f, 'm>,
{
    let rows = result.into_rows_result().map_err(unreadable(what))?;
    rows.rows::<R>()
        .map_err(unreadable(what))?
        .map(|r| r.map_err(unreadable(what)))
        .collect()
}

/// Reads a conditional statement's or batch's outcome from `result`.
pub(crate) fn applied(what: &'static str, result: QueryResult) -> Result<Lwt> {
    let rows: Vec<Lwt> = decode(what, result)?;
    let Some(first) = rows.first() else {
        return Err(unreadable(what)(NoApplied));
    };
    Ok(Lwt {
        applied: rows.iter().all(|r| r.applied),
        owner: first.owner.clone(),
    })
}

/// Runs `st` (unpaged), its error naming `what`.
async fn run(
    session: &Session,
    what: &'static str,
    st: &PreparedStatement,
    values: impl SerializeRow,
) -> Result<QueryResult> {
    session.execute_unpaged(st, values).await.map_err(cql(what))
}

/// Prepares `cql` on `session`.
pub(crate) async fn prepare(session: &Session, cql: String) -> Result<PreparedStatement> {
    session
        .prepare(cql)
        .await
        .map_err(unreadable("prepare a statement"))
}

/// Runs `st` paged through every row, decoding each as `R`: a scan of a small table, or a
/// rebuild; never on a hot path.
pub(crate) async fn scan<R>(
    session: &Session,
    what: &'static str,
    st: &PreparedStatement,
) -> Result<Vec<R>>
where
    R: for<'f, 'm> DeserializeRow<'f, 'm> + 'static,
{
    session
        .execute_iter(st.clone(), ())
        .await
        .map_err(unreadable(what))?
        .rows_stream::<R>()
        .map_err(unreadable(what))?
        .try_collect()
        .await
        .map_err(unreadable(what))
}

/// Runs `st` (unpaged) and decodes every row as `R`.
pub(crate) async fn rows<R>(
    session: &Session,
    what: &'static str,
    st: &PreparedStatement,
    values: impl SerializeRow,
) -> Result<Vec<R>>
where
    R: for<'f, 'm> DeserializeRow<'f, 'm>,
{
    decode(what, run(session, what, st, values).await?)
}

/// Runs `st` (unpaged) and decodes its first row as `R`, if any.
pub(crate) async fn first<R>(
    session: &Session,
    what: &'static str,
    st: &PreparedStatement,
    values: impl SerializeRow,
) -> Result<Option<R>>
where
    R: for<'f, 'm> DeserializeRow<'f, 'm>,
{
    Ok(rows(session, what, st, values).await?.into_iter().next())
}

/// Runs `st` for its effect.
pub(crate) async fn exec(
    session: &Session,
    what: &'static str,
    st: &PreparedStatement,
    values: impl SerializeRow,
) -> Result<()> {
    run(session, what, st, values).await.map(drop)
}

/// Runs the conditional statement `st` and reads its outcome.
pub(crate) async fn lwt(
    session: &Session,
    what: &'static str,
    st: &PreparedStatement,
    values: impl SerializeRow,
) -> Result<Lwt> {
    applied(what, run(session, what, st, values).await?)
}
