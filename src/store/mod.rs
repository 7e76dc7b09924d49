//! Storage: the SQLite file, its schema, the read pool and the single writer.
//!
//! Everything SQLite-specific lives under this module; handlers see a
//! [`writer::WriterHandle`] (submit writes), the [`ReadPool`] they pass to [`queries`] and
//! [`export`], and plain Rust values.
//!
//! - [`writer`]: the one thread that owns the writable connection (group commit).
//! - [`ingest`]: turns visits into raw rows plus rollup deltas inside a transaction; shared by
//!   the writer, `footfall import` and `POST /import`.
//! - [`rollups`]: the in-memory deltas of one transaction and how they are applied; cleanup;
//!   the rebuild used by the invariant tests.
//! - [`queries`]: analytics reads, each answered from rollups.
//! - [`export`]: the streaming cursor behind `/all-visits` and `footfall export`.

pub mod calendar;
pub mod counters;
pub mod export;
pub mod ingest;
pub mod queries;
pub mod rollups;
pub mod writer;

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::Connection;

use crate::config::Durability;

pub use counters::CounterCache;
pub use writer::{WriteOp, WriteOutcome, WriterHandle};

/// The schema, applied when the file's `user_version` is below [`SCHEMA_VERSION`].
pub const SCHEMA: &str = include_str!("../../schema.sql");
pub const SCHEMA_VERSION: i64 = 1;

pub type ReadPool = r2d2::Pool<SqliteConnectionManager>;
pub type PooledConn = r2d2::PooledConnection<SqliteConnectionManager>;

/// How long a connection waits for another one's write lock (e.g. `footfall import` running
/// beside the server) before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Pragmas every connection gets, writable or not. Set per connection: liwan set them on one
/// pooled connection only, and the others silently ran without them.
fn apply_common_pragmas(conn: &Connection, durability: Durability) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let synchronous = match durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {synchronous};
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;"
    ))
}

/// Opens the writable connection: creates the file and its folder, turns on WAL and applies
/// the schema. Used by the writer thread and by the CLI commands that write.
pub fn open_writer(path: &Path, durability: Durability) -> anyhow::Result<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the folder {}", dir.display()))?;
    }
    let conn = Connection::open(path)
        .with_context(|| format!("cannot open the database {}", path.display()))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .context("cannot switch the database to WAL")?;
    apply_common_pragmas(&conn, durability)?;
    conn.pragma_update(None, "cache_size", -16_000)?;
    // The write path cycles through ~25 distinct statements: keep all of them prepared.
    conn.set_prepared_statement_cache_capacity(128);
    // Checkpoint every ~40 MB of WAL instead of ~4 MB: pages rewritten by consecutive commits
    // are copied back once, and the fsync of a checkpoint is paid 10x less often (measured:
    // +65% writer throughput in examples/writer_bench).
    conn.pragma_update(None, "wal_autocheckpoint", 10_000)?;
    migrate(&conn)?;
    Ok(conn)
}

/// Brings the schema to [`SCHEMA_VERSION`]; a newer file than this binary knows is refused.
fn migrate(conn: &Connection) -> anyhow::Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        anyhow::bail!(
            "the database has schema version {version}, newer than this footfall ({SCHEMA_VERSION})"
        );
    }
    if version < 1 {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(SCHEMA)
            .context("cannot apply schema.sql")?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
    }
    Ok(())
}

/// A pool of read-only (`query_only`) connections. The file must exist (open the writer first).
pub fn open_read_pool(path: &Path, durability: Durability, size: u32) -> anyhow::Result<ReadPool> {
    let manager = SqliteConnectionManager::file(path).with_init(move |conn| {
        apply_common_pragmas(conn, durability)?;
        conn.pragma_update(None, "query_only", true)
    });
    r2d2::Pool::builder()
        .max_size(size.max(1))
        // Connections are opened on demand: an idle server keeps one, and its memory small.
        .min_idle(Some(1))
        .build(manager)
        .context("cannot open the read pool")
}

/// Runs `f` with a pooled read connection on the blocking thread pool.
pub async fn read<T, F>(pool: &ReadPool, f: F) -> crate::error::Result<T>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> crate::error::Result<T> + Send + 'static,
{
    let pool = pool.clone();
    tokio::task::spawn_blocking(move || {
        let conn = pool.get()?;
        f(&conn)
    })
    .await?
}

/// `PRAGMA data_version` of `conn`: changes when another connection commits. Prepared once per
/// connection, since the writer asks at every commit (the writer's `Ingest` and the counter
/// cache's watcher both use it).
pub fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("PRAGMA data_version")?
        .query_row([], |r| r.get(0))
}

/// Size of the database in bytes, WAL included (for `/metrics`).
pub fn file_size(path: &Path) -> u64 {
    let wal = path.with_extension(
        path.extension()
            .map(|e| format!("{}-wal", e.to_string_lossy()))
            .unwrap_or_else(|| "wal".into()),
    );
    [path.to_path_buf(), wal]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}
