//! Everything the visits file holds, as `footfall copy` moves it: the visits (time to the
//! millisecond, with event, visitor and source), oldest first, then the pre-counted clicks.
//! Devices are not carried: the destination reads them from the user agent again.

use rusqlite::Connection;
use tokio::sync::mpsc;

use super::rollups::millis_of;
use crate::domain::{NewVisit, PageUrl, Source, Visitor};
use crate::store::{Dumped, Result};

/// Visits per batch handed to the reader.
const BATCH: i64 = 10_000;

/// Sends the file's contents to `sink` in batches; stops early when the reader has gone.
pub fn dump(conn: &Connection, sink: &mpsc::Sender<Result<Dumped>>) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(
        "SELECT v.id, p.url, v.ip, a.ua, e.name,
                s.referrer, s.utm_source, s.utm_medium, s.utm_campaign
         FROM visits v
         JOIN pages p ON p.id = v.page_id JOIN agents a ON a.id = v.agent_id
         JOIN events e ON e.id = v.event_id JOIN sources s ON s.id = v.source_id
         WHERE v.id > ?1 ORDER BY v.id LIMIT ?2",
    )?;
    let mut after = i64::MIN;
    loop {
        let mut batch = Vec::new();
        let mut rows = stmt.query(rusqlite::params![after, BATCH])?;
        let mut read = 0;
        while let Some(row) = rows.next()? {
            read += 1;
            after = row.get(0)?;
            let (Some(url), Some(visitor)) = (
                PageUrl::parse(&row.get::<_, String>(1)?),
                Visitor::from_bytes(&row.get::<_, Vec<u8>>(2)?),
            ) else {
                // Cannot be stored here: the copy's final check reports the difference.
                continue;
            };
            let unspecified = std::net::Ipv4Addr::UNSPECIFIED.into();
            let mut visit = NewVisit::pageview(url, unspecified, row.get(3)?, millis_of(after));
            // The stored visitor (an address or a pseudonym) and source, as they were.
            visit.ip = visitor;
            visit.source = Source {
                referrer: row.get(5)?,
                utm_source: row.get(6)?,
                utm_medium: row.get(7)?,
                utm_campaign: row.get(8)?,
            };
            let event: String = row.get(4)?;
            if event != visit.event {
                visit.event = event.into();
            }
            batch.push(visit);
        }
        drop(rows);
        if !batch.is_empty() && sink.blocking_send(Ok(Dumped::Visits(batch))).is_err() {
            return Ok(());
        }
        if read < BATCH {
            break;
        }
    }
    let clicks = conn
        .prepare(
            "SELECT c.minute, s.name, c.clicks FROM clicks c JOIN sites s ON s.id = c.site_id
             ORDER BY c.seq",
        )?
        .query_map([], |r| {
            Ok((r.get::<_, i64>(0)? * 60_000, r.get(1)?, r.get(2)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for chunk in clicks.chunks(BATCH as usize) {
        if sink
            .blocking_send(Ok(Dumped::Clicks(chunk.to_vec())))
            .is_err()
        {
            return Ok(());
        }
    }
    let counters = conn
        .prepare("SELECT name, visits FROM page_counters ORDER BY name")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for chunk in counters.chunks(BATCH as usize) {
        if sink
            .blocking_send(Ok(Dumped::Counters(chunk.to_vec())))
            .is_err()
        {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{UnixMillis, Visitor};
    use crate::store::sqlite::open_reader;
    use crate::store::sqlite::test_support::{CHROME, Db, visit};

    /// A copy keeps each visit's visitor (a pseudonym too) and source; a visit stored before
    /// sources were is copied as `(unknown)`.
    #[test]
    fn the_dump_carries_visitors_and_sources() {
        let at: UnixMillis = 1_700_000_000_000;
        let mut tagged = visit(
            "https://a.com/?utm_source=mail&utm_campaign=x",
            "10.0.0.1",
            CHROME,
            Some("https://www.google.com/"),
            at,
        );
        tagged.ip = Visitor::Pseudonym(42);
        let mut db = Db::new();
        db.write(&[tagged.clone()]);
        db.write(&[visit("https://a.com/", "10.0.0.2", CHROME, None, at + 1)]);
        // As if stored before schema 4: the column default.
        db.conns
            .raw
            .execute(
                "UPDATE visits SET source_id = 0 WHERE ip = ?1",
                [&[10u8, 0, 0, 2][..]],
            )
            .unwrap();

        let (sender, mut receiver) = mpsc::channel(16);
        dump(&open_reader(&db.db).unwrap(), &sender).unwrap();
        drop(sender);
        let mut visits = Vec::new();
        while let Ok(part) = receiver.try_recv() {
            if let Dumped::Visits(batch) = part.unwrap() {
                visits.extend(batch);
            }
        }
        assert_eq!(visits.len(), 2);
        assert_eq!(visits[0].ip, Visitor::Pseudonym(42));
        assert_eq!(visits[0].source, tagged.source);
        assert_eq!(visits[0].source.referrer, "google.com");
        assert_eq!(visits[1].source, Source::unknown());
    }
}
