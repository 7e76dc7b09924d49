//! Sorting PostgreSQL failures into the store's errors.
//!
//! A node must answer `503` + `Retry-After` (never `500`) while the database restarts, is
//! unreachable or refuses connections: those are [`StoreError::Unavailable`]. Anything else
//! (a bad statement, a constraint) is a bug: [`StoreError::Internal`].

use tokio_postgres::error::SqlState;

use crate::store::StoreError;

/// Whether `err` means the database cannot be used right now (connection lost or refused, the
/// server shutting down or starting up, out of connections), rather than a bug.
pub fn is_unavailable(err: &tokio_postgres::Error) -> bool {
    match err.code() {
        // No SQLSTATE: the connection itself failed (closed, I/O, timeout).
        None => true,
        Some(code) => {
            let class = &code.code()[..2];
            // 08: connection exception; 57: operator intervention (shutdown, crash, restart);
            // 53: insufficient resources (too many connections, disk full).
            matches!(class, "08" | "57" | "53") || *code == SqlState::READ_ONLY_SQL_TRANSACTION
        }
    }
}

/// Whether the transaction may simply be run again (a deadlock or serialization failure
/// between nodes).
pub fn is_retryable(err: &tokio_postgres::Error) -> bool {
    matches!(
        err.code(),
        Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    )
}

/// A database error as the store reports it.
pub fn store_error(err: tokio_postgres::Error) -> StoreError {
    if is_unavailable(&err) {
        StoreError::Unavailable(format!("PostgreSQL is unavailable: {err}"))
    } else {
        StoreError::Internal(anyhow::Error::new(err).context("PostgreSQL"))
    }
}

/// A pool that cannot hand out a connection: the database is unreachable (or saturated).
pub fn pool_error(err: deadpool_postgres::PoolError) -> StoreError {
    match err {
        deadpool_postgres::PoolError::Backend(err) => store_error(err),
        other => StoreError::Unavailable(format!("PostgreSQL is unavailable: {other}")),
    }
}
