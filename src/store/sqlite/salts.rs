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
    conn.prepare_cached(
        "INSERT INTO salts (day, salt) VALUES (?1, ?2) ON CONFLICT (day) DO NOTHING",
    )?
    .execute(params![day, &fresh[..]])?;
    let stored: Vec<u8> = conn
        .prepare_cached("SELECT salt FROM salts WHERE day = ?1")?
        .query_row([day], |r| r.get(0))?;
    conn.prepare_cached("DELETE FROM salts WHERE day < ?1")?
        .execute([day - 1])?;
    <[u8; 16]>::try_from(stored.as_slice())
        .map_err(|_| rusqlite::Error::IntegralValueOutOfRange(0, stored.len() as i64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::{SqliteStore, immediate, open_writer};
    use crate::store::{Durability, Options};

    fn days(conn: &Connection) -> Vec<i64> {
        conn.prepare("SELECT day FROM salts ORDER BY day")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// A day's salt is created once and then the same for every caller (a second connection
    /// included); asking for a day deletes the salts before the day before it.
    #[test]
    fn a_day_keeps_its_salt_and_older_days_lose_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("v.db");
        let conns = open_writer(&db, Durability::Normal).unwrap();
        let other = open_writer(&db, Durability::Normal).unwrap();
        let salt = |conn: &Connection, day| immediate(conn, |conn| daily_salt(conn, day)).unwrap();
        let day = 20_000;
        let first = salt(&conns.raw, day);
        assert_eq!(salt(&conns.raw, day), first);
        assert_eq!(
            salt(&other.raw, day),
            first,
            "another process reads the same salt"
        );
        let next = salt(&conns.raw, day + 1);
        assert_ne!(next, first);
        assert_eq!(days(&conns.raw), vec![day, day + 1], "yesterday's is kept");
        let later = salt(&conns.raw, day + 2);
        assert_eq!(days(&conns.raw), vec![day + 1, day + 2]);
        assert_ne!(later, next);
        assert_ne!(
            salt(&conns.raw, day),
            first,
            "a deleted day's salt is gone for good"
        );
    }

    /// Through the store: the writer answers with the stored salt.
    #[tokio::test]
    async fn the_store_answers_the_stored_salt() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("v.db");
        let store = SqliteStore::open(&db, &Options::default()).unwrap();
        let salt = store.daily_salt(20_000).await.unwrap();
        assert_eq!(store.daily_salt(20_000).await.unwrap(), salt);
        store.close().await;
        let reader = crate::store::sqlite::open_reader(&db).unwrap();
        let stored: Vec<u8> = reader
            .query_row("SELECT salt FROM salts WHERE day = 20000", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, salt.to_vec());
    }
}
