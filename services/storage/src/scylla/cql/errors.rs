//! The driver's errors, told apart where only the adapter can: which are transient (a
//! retry may succeed), which leave a conditional write's outcome unknown, and which
//! refuse the values themselves. Every driver error leaves this adapter as a
//! [`StoreError::Cql`] naming what was being done.

use scylla::errors::{DbError, ExecutionError, RequestAttemptError, WriteType};

use crate::StoreError;

/// Whether a failed statement may still have been applied (a Paxos write that timed out).
pub(crate) fn outcome_unknown(e: &ExecutionError) -> bool {
    match e {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, _)) => matches!(
            db,
            DbError::WriteTimeout {
                write_type: WriteType::Cas | WriteType::Batch | WriteType::BatchLog,
                ..
            } | DbError::WriteFailure { .. }
        ),
        ExecutionError::RequestTimeout(_) => true,
        _ => false,
    }
}

/// Whether a failed request may succeed when tried again: timeouts, unavailable or
/// overloaded replicas, a lost connection.
fn transient(e: &ExecutionError) -> bool {
    match e {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, _)) => matches!(
            db,
            DbError::Unavailable { .. }
                | DbError::Overloaded
                | DbError::IsBootstrapping
                | DbError::ReadTimeout { .. }
                | DbError::WriteTimeout { .. }
        ),
        ExecutionError::RequestTimeout(_) | ExecutionError::ConnectionPoolError(_) => true,
        _ => false,
    }
}

/// Whether the server refused the request for its values (an invalid or oversized value),
/// which no retry fixes. Timeouts, unavailable replicas, `WriteFailure` and `ServerError`
/// are the cluster's trouble and retried.
fn rejects_input(e: &ExecutionError) -> bool {
    matches!(
        e,
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(DbError::Invalid, _))
    )
}

/// Wraps a failed request's error with what was being done.
pub(crate) fn cql(what: &'static str) -> impl FnOnce(ExecutionError) -> StoreError {
    move |e| StoreError::Cql {
        what,
        transient: transient(&e),
        rejects_input: rejects_input(&e),
        source: Box::new(e),
    }
}

/// Wraps an error the driver gave for an answer it could not read as asked (a result that
/// is not rows, a row of another shape, a statement that did not prepare): not transient.
pub(crate) fn unreadable<E>(what: &'static str) -> impl FnOnce(E) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |e| StoreError::Cql {
        what,
        transient: false,
        rejects_input: false,
        source: Box::new(e),
    }
}

/// Whether a schema statement failed because what it adds is there already (a migration
/// interrupted after it ran).
pub(crate) fn already_applied(e: &ExecutionError) -> bool {
    let text = e.to_string();
    text.contains("conflicts with an existing column") || text.contains("already exists")
}

/// Whether a read failed because the table does not exist yet (before the first
/// migration).
pub(crate) fn table_missing(e: &ExecutionError) -> bool {
    let text = e.to_string();
    text.contains("unconfigured table") || text.contains("does not exist")
}
