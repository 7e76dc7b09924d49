//! The SQLite backend: two files, their schemas, the read pool, the writer and the roll-up
//! thread, behind [`SqliteStore`].
//!
//! The *visits file* (`--db`, `visits.sql`) holds what was recorded; the *rollups file* beside
//! it ([`rollups_path`], `rollups.sql`) holds the aggregates derived from it. Each has its own
//! write lock, so the roll-up runs beside recording instead of stopping it. Everything
//! SQLite-specific lives under this module; the rest of footfall sees [`SqliteStore`] through
//! `store::Store`.
//!
//! - [`store`]: [`SqliteStore`], the backend's side of the boundary: opens the files, starts
//!   the threads, answers each `Store` method.
//! - [`writer`]: the one thread that writes the visits file (group commit).
//! - [`roller`]: the one thread that writes the rollups file (bulk roll-ups).
//! - `worker`: how each of those threads is started and stopped, and in which order.
//! - [`checkpointer`]: copies the visits file's log into it beside the writer.
//! - [`ingest`]: turns visits into raw rows inside a transaction; shared by the writer,
//!   `footfall import` and `POST /import`.
//! - [`rollups`]: the roll-up itself, its in-memory deltas, cleanup's inverse, and the rebuild
//!   used by the invariant tests.
//! - [`cleanup`]: the two-file protocol of deleting old visits.
//! - [`queries`]: analytics reads, each answered from rollups plus the tail.
//! - [`dimensions`]: the reads of API.md §12 (`/sources`, `/devices`, `/hourly`), the same way.
//! - [`salts`]: the daily salts of `--ip-mode hashed`.
//! - [`export`]: the streaming cursor behind `/all-visits` and `footfall export`.
//! - [`dump`]: everything the file holds, for `footfall copy`.

pub mod calendar;
pub mod checkpointer;
pub mod cleanup;
pub mod counters;
pub mod dimensions;
pub mod dump;
pub mod export;
pub mod ingest;
pub mod queries;
pub mod roller;
pub mod rollups;
pub mod salts;
mod store;
#[cfg(test)]
mod test_support;
mod worker;
pub mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::Connection;

use crate::store::Durability;

pub use counters::CounterCache;
pub use store::SqliteStore;
pub use writer::{WriteOp, WriteOutcome, WriterHandle};

/// The visits file's schema, applied to a new file; the steps in `migrations/` bring older ones to
/// [`SCHEMA_VERSION`].
pub const SCHEMA: &str = include_str!("../../../schema/sqlite/visits.sql");
pub const SCHEMA_VERSION: i64 = 4;
/// Steps from the version before each to it, in order.
const MIGRATIONS: &[(i64, &str)] = &[
    (2, include_str!("../../../schema/sqlite/migrations/v2.sql")),
    (3, include_str!("../../../schema/sqlite/migrations/v3.sql")),
    (4, include_str!("../../../schema/sqlite/migrations/v4.sql")),
];
/// The rollups file's schema and version (its own `user_version`). A file of an older version is
/// emptied and refilled from the visits file (see [`open_rollups`]): no migration steps.
pub const ROLLUPS_SCHEMA: &str = include_str!("../../../schema/sqlite/rollups.sql");
pub const ROLLUPS_SCHEMA_VERSION: i64 = 2;

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

/// The rollups file that belongs to the visits file `db`: `visits.db` -> `visits.rollups.db`,
/// `data` -> `data.rollups`.
pub fn rollups_path(db: &Path) -> PathBuf {
    let stem = db.file_stem().unwrap_or_default().to_string_lossy();
    let name = match db.extension() {
        Some(ext) => format!("{stem}.rollups.{}", ext.to_string_lossy()),
        None => format!("{stem}.rollups"),
    };
    db.with_file_name(name)
}

/// Opens `path` as a WAL database with the pragmas every writable connection gets.
fn open_wal(path: &Path, durability: Durability) -> anyhow::Result<Connection> {
    let conn = Connection::open(path)
        .with_context(|| format!("cannot open the database {}", path.display()))?;
    // First, with its busy timeout: another process may be opening the same file.
    apply_common_pragmas(&conn, durability)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .with_context(|| format!("cannot switch {} to WAL", path.display()))?;
    conn.pragma_update(None, "cache_size", -16_000)?;
    // The write paths cycle through ~25 distinct statements: keep all of them prepared.
    conn.set_prepared_statement_cache_capacity(128);
    // Checkpoint every ~40 MB of WAL instead of ~4 MB: pages rewritten by consecutive commits
    // are copied back once, and the fsync of a checkpoint is paid 10x less often (measured:
    // +65% writer throughput in examples/writer_bench).
    conn.pragma_update(None, "wal_autocheckpoint", 10_000)?;
    // A reader's long snapshot (a long roll-up or export) keeps
    // checkpoints from restarting the log, and it grows past the checkpoint size meanwhile
    // (~200 MB in `ingest.sh`): cut it back to this when it restarts, rather than keep the
    // high-water mark on disk.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    Ok(conn)
}

/// Copies the whole write-ahead log into the database file and empties it, when the writer or
/// the roll-up thread stops: a closed database is then its two files, not a log beside each
/// (`footfall import` of 10M visits left 282 MB of rollups log behind otherwise). A reader
/// still in a transaction makes it give up, which only leaves the log for the next start.
fn truncate_wal(conn: &Connection) {
    if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
        tracing::debug!(error = %err, "the write-ahead log was not truncated");
    }
}

/// The two connections that write: the visits file's (`raw`) and a rollups connection
/// ([`open_rollups`]). The server hands them to its writer and roll-up threads; a CLI command
/// uses both itself.
pub struct WriteConns {
    /// Declared first, so dropped first: the last connection to close a WAL file checkpoints
    /// it, and this one has the visits file attached read-only, which cannot.
    pub rollups: Connection,
    pub raw: Connection,
    /// Carried from one [`Self::roll_up`] to the next.
    hints: rollups::RollUpHints,
}

impl WriteConns {
    /// Rolls up everything outstanding, in one transaction.
    pub fn roll_up(&mut self) -> rusqlite::Result<rollups::RolledUp> {
        self.hints.transaction(&self.rollups, rollups::roll_up)
    }
}

/// Opens both files for writing: creates the visits file and its folder, turns on WAL, applies
/// or migrates the schemas, creates the rollups file beside it (and rolls up a large backlog),
/// and finishes a cleanup a crash interrupted.
pub fn open_writer(path: &Path, durability: Durability) -> anyhow::Result<WriteConns> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the folder {}", dir.display()))?;
    }
    let raw = open_wal(path, durability)?;
    migrate(&raw)?;
    let mut conns = WriteConns {
        rollups: open_rollups(path, durability)?,
        raw,
        hints: rollups::RollUpHints::default(),
    };
    // More than one roll-up's worth outstanding (a schema-1 file, whose rollups were dropped; a
    // deleted rollups file; a large tail left by a crash): count it in now, rather than have the
    // first queries add it from the raw rows.
    let progress = rollups::read_progress(&conns.rollups)?;
    let outstanding = roller::outstanding(&conns.rollups, &progress)?;
    if outstanding > roller::ROLL_UP_AT {
        tracing::info!(
            outstanding,
            "rolling up what the rollups file does not count yet ({})",
            rollups_path(path).display()
        );
        let done = conns.roll_up()?;
        tracing::info!(visits = done.visits, "rolled up");
    }
    cleanup::finish_interrupted(&conns.raw, &conns.rollups)?;
    Ok(conns)
}

/// Brings the visits file's schema to [`SCHEMA_VERSION`]; a newer file than this binary knows is
/// refused.
fn migrate(conn: &Connection) -> anyhow::Result<()> {
    upgrade(conn, "database", SCHEMA_VERSION, |conn, version| {
        if version == 0 {
            return conn
                .execute_batch(SCHEMA)
                .context("cannot apply visits.sql");
        }
        for (to, step) in MIGRATIONS.iter().filter(|(to, _)| *to > version) {
            tracing::info!(from = to - 1, to, "migrating the database schema");
            conn.execute_batch(step)
                .with_context(|| format!("cannot migrate the database to schema version {to}"))?;
        }
        Ok(())
    })
}

/// Runs `apply(conn, version)` and sets `user_version` to `target` when the file's version is
/// lower; refuses a file newer than `target`. The version is read inside the write transaction,
/// so two processes opening a new file at once do not both create the schema.
fn upgrade(
    conn: &Connection,
    what: &str,
    target: i64,
    apply: impl FnOnce(&Connection, i64) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let read_version =
        || -> rusqlite::Result<i64> { conn.pragma_query_value(None, "user_version", |r| r.get(0)) };
    // Most opens find the schema current: no write lock for them.
    if read_version()? == target {
        return Ok(());
    }
    immediate(conn, |conn| {
        let version = read_version()?;
        if version > target {
            anyhow::bail!(
                "the {what} has schema version {version}, newer than this footfall ({target})"
            );
        }
        if version < target {
            apply(conn, version)?;
            conn.pragma_update(None, "user_version", target)?;
        }
        Ok(())
    })
}

/// Opens a rollups connection: the rollups file of the visits file `db` as `main` (created, and
/// its schema applied, when missing), the visits file attached read-only as `raw`, so
/// `BEGIN IMMEDIATE` takes the rollups' write lock and only a snapshot of the visits file. Names
/// of the visits file's tables resolve to `raw` (they are not in `main`). `db` must exist.
///
/// A rollups file of an older version is emptied and given the current schema: its `progress`
/// starts again at 0, so the visits are counted in again from the raw rows, as for a deleted
/// rollups file (by [`open_writer`] when that is more than one roll-up's worth, else by the
/// roll-up thread; queries add what is not rolled up yet meanwhile). Simpler than a step per
/// new table, and right whatever the old file held.
pub fn open_rollups(db: &Path, durability: Durability) -> anyhow::Result<Connection> {
    let conn = open_wal(&rollups_path(db), durability)?;
    upgrade(
        &conn,
        "rollups file",
        ROLLUPS_SCHEMA_VERSION,
        |conn, version| {
            if version > 0 {
                tracing::info!(
                    from = version,
                    to = ROLLUPS_SCHEMA_VERSION,
                    "rebuilding the rollups file for its new schema"
                );
                drop_tables(conn).context("cannot empty the rollups file")?;
            }
            conn.execute_batch(ROLLUPS_SCHEMA)
                .context("cannot apply rollups.sql")
        },
    )?;
    conn.execute("ATTACH DATABASE ?1 AS raw", [file_uri(db, "ro")])
        .with_context(|| format!("cannot attach {}", db.display()))?;
    Ok(conn)
}

/// Drops every table of `conn`'s main database (inside the caller's transaction).
fn drop_tables(conn: &Connection) -> rusqlite::Result<()> {
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM main.sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for table in tables {
        conn.execute_batch(&format!("DROP TABLE main.\"{table}\""))?;
    }
    Ok(())
}

/// `path` as an SQLite URI with `mode`: `%`, `?` and `#` escaped, so any file name works.
fn file_uri(path: &Path, mode: &str) -> String {
    let mut uri = String::from("file:");
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3f"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push_str("?mode=");
    uri.push_str(mode);
    uri
}

/// A pool of read-only (`query_only`) connections on the visits file, with the rollups file
/// attached as `rollups` (its tables resolve there by name). Both files must exist (open the
/// writer first).
pub fn open_read_pool(path: &Path, durability: Durability, size: u32) -> anyhow::Result<ReadPool> {
    let rollups = file_uri(&rollups_path(path), "ro");
    let manager = SqliteConnectionManager::file(path).with_init(move |conn| {
        apply_common_pragmas(conn, durability)?;
        conn.execute("ATTACH DATABASE ?1 AS rollups", [&rollups])?;
        conn.pragma_update(None, "query_only", true)
    });
    r2d2::Pool::builder()
        .max_size(size.max(1))
        // Connections are opened on demand: an idle server keeps one, and its memory small.
        .min_idle(Some(1))
        .build(manager)
        .context("cannot open the read pool")
}

/// One read-only connection like the pool's: the visits file, the rollups file attached. For
/// tests and the writer's rare reads of the rollups' progress (cleanups).
pub fn open_reader(db: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .with_context(|| format!("cannot open the database {}", db.display()))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute(
        "ATTACH DATABASE ?1 AS rollups",
        [file_uri(&rollups_path(db), "ro")],
    )
    .with_context(|| format!("cannot attach {}", rollups_path(db).display()))?;
    Ok(conn)
}

/// Runs `f` in one `BEGIN IMMEDIATE` transaction on `conn`: commits what it did, or rolls it
/// back on error. Every write transaction of both files goes through here. On a rollups
/// connection, `IMMEDIATE` takes the rollups' write lock and the snapshot of the visits file
/// together (see [`rollups::roll_up`]). The two statements are cached: rusqlite's `Transaction`
/// parses both again every time, and the writer commits thousands of times a second.
pub fn immediate<T, E: From<rusqlite::Error>>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, E>,
) -> Result<T, E> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let result = f(conn).and_then(|value| {
        conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(value)
    });
    if result.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}

/// `PRAGMA data_version` of `conn`: changes when another connection commits. Prepared once per
/// connection, since the writer asks at every commit (the writer's `Ingest` and the counter
/// cache's watcher both use it).
pub fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("PRAGMA data_version")?
        .query_row([], |r| r.get(0))
}

/// Size of the database in bytes: both files, their WALs included (for `/metrics`).
pub fn file_size(path: &Path) -> u64 {
    let with_wal = |p: PathBuf| {
        let mut wal = p.clone().into_os_string();
        wal.push("-wal");
        [p, PathBuf::from(wal)]
    };
    with_wal(path.to_path_buf())
        .into_iter()
        .chain(with_wal(rollups_path(path)))
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{UNKNOWN, now_millis};
    use crate::store::sqlite::ingest::{Ingest, commit_visits};
    use crate::store::sqlite::rollups::{HOUR_MS, id_at};
    use crate::store::sqlite::test_support::{CHROME, visit};

    /// A database written by the previous release (visits file version 3, rollups file
    /// version 1, their schemas as shipped) is brought up in place on open: its visits stay,
    /// show as `(unknown)` in every dimension and count in `/hourly`, and the rollups file is
    /// rebuilt so that every rollup, the new ones included, agrees with the raw rows.
    #[test]
    fn a_previous_release_database_upgrades_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("v.db");
        let now = now_millis();
        {
            let old = Connection::open(&db).unwrap();
            old.execute_batch(include_str!("testdata/visits_v3.sql"))
                .unwrap();
            old.execute_batch(
                "PRAGMA user_version = 3;
                 INSERT INTO sites (id, name) VALUES (1, 'a.com');
                 INSERT INTO pages (id, url, site_id) VALUES (1, 'https://a.com/', 1);
                 INSERT INTO agents (id, ua) VALUES (1, 'Old UA');",
            )
            .unwrap();
            for (i, ip) in [[10u8, 0, 0, 1], [10, 0, 0, 2]].iter().enumerate() {
                old.execute(
                    "INSERT INTO visits (id, page_id, ip, agent_id, event_id)
                     VALUES (?1, 1, ?2, 1, 1)",
                    rusqlite::params![id_at(now - HOUR_MS + i as i64 * 1000), &ip[..]],
                )
                .unwrap();
            }
            // Its rollups as the previous release left them: everything counted (in the tables
            // that release had).
            let old = Connection::open(rollups_path(&db)).unwrap();
            old.execute_batch(include_str!("testdata/rollups_v1.sql"))
                .unwrap();
            old.execute(
                "UPDATE progress SET rolled_up_to = ?1",
                [id_at(now - HOUR_MS + 2000)],
            )
            .unwrap();
            old.execute_batch(
                "PRAGMA user_version = 1;
                 UPDATE totals SET visits = 2, unique_ips = 2;
                 INSERT INTO page_totals VALUES (1, 2, 2);",
            )
            .unwrap();
        }

        let mut conns = open_writer(&db, Durability::Normal).unwrap();
        let version = |conn: &Connection| -> i64 {
            conn.pragma_query_value(None, "user_version", |r| r.get(0))
                .unwrap()
        };
        assert_eq!(version(&conns.raw), SCHEMA_VERSION);
        assert_eq!(version(&conns.rollups), ROLLUPS_SCHEMA_VERSION);
        let reader = open_reader(&db).unwrap();
        assert!(rollups::check(&reader).unwrap().is_empty());
        let unknown = |n: i64| vec![(UNKNOWN.to_owned(), n)];
        let sources = dimensions::sources(&reader, now, 24, None, 10).unwrap();
        assert_eq!(sources.referrers, unknown(2));
        assert_eq!(sources.utm_campaign, unknown(2));
        let devices = dimensions::devices(&reader, now, 24, Some("a.com"), 10).unwrap();
        assert_eq!((devices.browsers, devices.os), (unknown(2), unknown(2)));
        assert_eq!(devices.device_types[4], (UNKNOWN.to_owned(), 2));
        let hourly = dimensions::hourly(&reader, now, 24, None).unwrap();
        assert_eq!((hourly.total_visits, hourly.unique_ips), (2, 2));
        assert_eq!(hourly.by_hour.iter().map(|h| h.1).sum::<i64>(), 2);

        // New visits are stored with their dimensions beside the old ones.
        let mut ingest = Ingest::new();
        let new = visit(
            "https://a.com/",
            "10.0.0.3",
            CHROME,
            Some("https://t.co/x"),
            now,
        );
        commit_visits(&conns.raw, &mut ingest, [new]);
        conns.roll_up().unwrap();
        assert!(rollups::check(&reader).unwrap().is_empty());
        let sources = dimensions::sources(&reader, now + 1, 24, Some("a.com"), 10).unwrap();
        assert_eq!(
            sources.referrers,
            vec![(UNKNOWN.to_owned(), 2), ("t.co".to_owned(), 1)]
        );
        let hourly = dimensions::hourly(&reader, now + 1, 24, Some("a.com")).unwrap();
        assert_eq!((hourly.total_visits, hourly.unique_ips), (3, 3));
    }
}
