//! The in-memory cache of per-page counters (seed 004), provably never stale.
//!
//! The cache is valid for one `PRAGMA data_version` of a dedicated *watcher* connection, which
//! changes whenever any other connection commits: our writer thread, or `footfall import` /
//! `cleanup` in another process. A read whose version differs from the cache's drops the cache
//! and reads SQLite. The writer, which alone changes counters, carries the cache across its own
//! commits: it notes the watcher's version inside its transaction (while it holds the write lock,
//! so nothing else can commit) and after the commit, and applies its new counts only if nothing
//! but its own commit happened in between.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension};

use super::data_version;
use crate::store::ServedVia;

/// Entries kept at most; past that the cache starts over.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Default)]
struct State {
    counts: HashMap<String, i64>,
    /// The watcher's data_version the counts are exact for; `None`: nothing cached yet.
    version: Option<i64>,
}

pub struct CounterCache {
    watcher: Mutex<Connection>,
    state: Mutex<State>,
}

impl std::fmt::Debug for CounterCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CounterCache").finish_non_exhaustive()
    }
}

impl CounterCache {
    /// Opens the watcher connection on an existing database file.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let watcher = Connection::open(path)?;
        watcher.busy_timeout(std::time::Duration::from_secs(30))?;
        watcher.pragma_update(None, "query_only", true)?;
        Ok(Self {
            watcher: Mutex::new(watcher),
            state: Mutex::new(State::default()),
        })
    }

    /// The exact count of `page_id` and where it came from. Blocking: call off the runtime.
    pub fn get(&self, page_id: &str) -> rusqlite::Result<(i64, ServedVia)> {
        let watcher = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
        let version = data_version(&watcher)?;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.version == Some(version) {
            if let Some(&n) = state.counts.get(page_id) {
                return Ok((n, ServedVia::Cache));
            }
        } else {
            state.counts.clear();
            state.version = Some(version);
        }
        // Read while holding the watcher: a commit landing now moves its data_version, so the
        // next request sees a new version and re-reads, never this value as current.
        let n: i64 = watcher
            .prepare_cached("SELECT visits FROM page_counters WHERE name = ?1")?
            .query_row([page_id], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        if state.counts.len() >= MAX_ENTRIES {
            state.counts.clear();
        }
        state.counts.insert(page_id.to_owned(), n);
        Ok((n, ServedVia::Sqlite))
    }

    /// Whether nothing is cached. A commit that changes no counter may then skip
    /// [`Self::version_before_commit`] and [`Self::after_commit`]: a count cached meanwhile was
    /// read at an older `data_version`, so the next read sees the commit's new one and re-reads.
    pub fn is_empty(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .counts
            .is_empty()
    }

    /// Called by the writer inside its write transaction: the version its commit starts from.
    pub fn version_before_commit(&self) -> rusqlite::Result<i64> {
        data_version(&self.watcher.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Called by the writer after it committed `new_counts`. `before` is what
    /// [`Self::version_before_commit`] returned; `foreign_commit` says whether the writer's own
    /// connection saw another connection commit since (checked after this version is read).
    /// Infallible on purpose: the commit happened, so any doubt just empties the cache.
    pub fn after_commit(
        &self,
        before: i64,
        new_counts: &[(String, i64)],
        foreign_commit: impl FnOnce() -> rusqlite::Result<bool>,
    ) {
        let watcher = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
        let after = data_version(&watcher);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (Ok(after), Ok(false)) = (after, foreign_commit()) else {
            *state = State::default();
            return;
        };
        if state.version != Some(before) {
            state.counts.clear();
        }
        state.version = Some(after);
        for (name, n) in new_counts {
            if state.counts.len() >= MAX_ENTRIES {
                state.counts.clear();
            }
            state.counts.insert(name.clone(), *n);
        }
    }
}
