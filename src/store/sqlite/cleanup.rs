//! Deleting old visits across the two files, without a moment where they disagree for good.
//!
//! SQLite commits each file on its own, so a cleanup is two transactions in a fixed order, both
//! under the visits file's write lock (nothing can be stored below the cutoff in between):
//!
//! 1. the rollups file takes the visits out of every rollup and records the cleanup
//!    ([`super::rollups::take_out_before`]: `progress.cleanup_seq` and `cleanup_before`);
//! 2. the visits file deletes them and records the same `cleanup_seq` in `raw_state`.
//!
//! A crash between the two leaves the rollups one cleanup ahead; [`finish_interrupted`] sees it
//! (the numbers differ) and does step 2, whenever the visits file is next opened for writing
//! and before every cleanup. Until then the visits below the cutoff are out of the rollups but
//! still among the raw rows: totals and breakdowns no longer count them, while an export, or the
//! raw part of the hour an analytics window starts in, may still show them.

use rusqlite::Connection;

use super::rollups::{self, TakenOut};
use crate::domain::UnixMillis;

/// Runs a whole cleanup of the visits older than `cutoff` in one transaction of the visits file:
/// `raw` is a connection to it outside any transaction; `take_out` does step 1 on a rollups
/// connection (the roll-up thread's, or the CLI's own) and `progress` reads the rollups'
/// `progress` row. Returns the number of visits deleted.
pub fn run(
    raw: &Connection,
    cutoff: UnixMillis,
    progress: impl FnOnce() -> anyhow::Result<rollups::Progress>,
    take_out: impl FnOnce(UnixMillis) -> anyhow::Result<TakenOut>,
) -> anyhow::Result<u64> {
    super::immediate(raw, |raw| {
        // A cleanup that a crash interrupted first: its visits are already out of the
        // rollups, and step 1 would take them out a second time.
        finish(raw, &progress()?)?;
        let taken = take_out(cutoff)?;
        delete_below(raw, taken.cleanup_seq, taken.before_id)?;
        Ok(taken.visits)
    })
}

/// Does step 2 of a cleanup that the rollups recorded and the visits file did not (a crash in
/// between); nothing otherwise. `raw` is a connection to the visits file outside any
/// transaction, `rollups` any connection that sees the rollups file.
pub fn finish_interrupted(raw: &Connection, rollups: &Connection) -> anyhow::Result<()> {
    // Read under the visits file's write lock: only a holder of it moves `cleanup_seq`.
    super::immediate(raw, |raw| finish(raw, &rollups::read_progress(rollups)?))
}

/// Step 2 of the rollups' last cleanup, if the visits file has not done it yet.
fn finish(raw: &Connection, progress: &rollups::Progress) -> anyhow::Result<()> {
    let done: i64 = raw.query_row("SELECT cleanup_seq FROM raw_state WHERE id = 1", [], |r| {
        r.get(0)
    })?;
    // Different, not just greater: a rebuilt rollups file counts its cleanups from 0 again (and
    // finishing its "cleanup 0", below id 0, deletes nothing).
    if progress.cleanup_seq != done {
        tracing::warn!(
            cleanup = progress.cleanup_seq,
            "the visits file has not done the rollups' last cleanup (interrupted, or a rebuilt rollups file): deleting the visits it took out"
        );
        delete_below(raw, progress.cleanup_seq, progress.cleanup_before)?;
    }
    Ok(())
}

/// Step 2: deletes the visits below `before_id` and records cleanup `cleanup_seq` as done. The
/// highest id is kept in `raw_state.high_id` first, so a visit stored after the newest ones are
/// gone is still known to be below the rollups' watermark (late).
fn delete_below(raw: &Connection, cleanup_seq: i64, before_id: i64) -> rusqlite::Result<()> {
    raw.execute(
        "UPDATE raw_state SET high_id = max(high_id, coalesce((SELECT max(id) FROM visits), 0))
         WHERE id = 1",
        [],
    )?;
    raw.execute("DELETE FROM visits WHERE id < ?1", [before_id])?;
    raw.execute(
        "UPDATE raw_state SET cleanup_seq = ?1 WHERE id = 1",
        [cleanup_seq],
    )?;
    Ok(())
}
