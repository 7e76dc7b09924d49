//! The daily salts of `--ip-mode hashed` (API.md §12), kept in the visits file's `salts` table.
//!
//! The writer asks for a day's salt inside one of its transactions: a random salt is inserted
//! when the day has none, and whichever is stored is read back, so every process on the file
//! (the server, an import beside it) uses the same one. Salts of days before yesterday go in the
//! same transaction: once deleted, that day's pseudonyms cannot be computed again.

use rusqlite::{Connection, params};

/// The salt of `day` (days since the epoch, UTC), created when missing; deletes the salts of
/// days before `day - 1`. Inside the caller's write transaction on the visits file.
pub fn daily_salt(conn: &Connection, day: i64) -> rusqlite::Result<[u8; 16]> {
    let mut fresh = [0u8; 16];
    getrandom::fill(&mut fresh)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    conn.prepare_cached("INSERT INTO salts (day, salt) VALUES (?1, ?2) ON CONFLICT (day) DO NOTHING")?
        .execute(params![day, &fresh[..]])?;
    let stored: Vec<u8> = conn
        .prepare_cached("SELECT salt FROM salts WHERE day = ?1")?
        .query_row([day], |r| r.get(0))?;
    conn.prepare_cached("DELETE FROM salts WHERE day < ?1")?
        .execute([day - 1])?;
    <[u8; 16]>::try_from(stored.as_slice()).map_err(|_| {
        rusqlite::Error::IntegralValueOutOfRange(0, stored.len() as i64)
    })
}
