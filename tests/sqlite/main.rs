//! The SQLite backend's own tests: what its two files, its roll-up thread and its export
//! cursor guarantee, checked against the files themselves. The API suite (`tests/api`) checks
//! what users see and knows no backend; these look inside this one.

#[path = "../api/common.rs"]
mod common;
mod engine;

use std::path::Path;

use footfall::store::Durability;
use footfall::store::sqlite::{WriteConns, open_reader, open_writer};

use crate::common::TestApp;

/// The connections the SQLite engine writes with, on `db` (no threads: what a crash leaves is
/// written with them).
pub fn write_conns(db: &Path) -> WriteConns {
    open_writer(db, Durability::Normal).unwrap()
}

/// A read connection on the test app's database, its rollups file attached (as the server's).
pub fn conn(app: &TestApp) -> rusqlite::Connection {
    open_reader(&app.db).unwrap()
}

/// The app's SQLite backend.
pub fn sqlite(app: &TestApp) -> &footfall::store::sqlite::SqliteStore {
    match app.store() {
        footfall::store::Store::Sqlite(store) => store,
        other => panic!("not an SQLite store: {other:?}"),
    }
}
