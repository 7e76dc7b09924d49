//! Everything a PostgreSQL database holds, as `footfall copy` moves it: the visits (time to the
//! millisecond, with event, source and dimensions) in id order, then the pre-counted clicks, read from
//! one snapshot through a portal.

use tokio::sync::mpsc;

use super::queries::begin;
use std::borrow::Cow;

use crate::domain::{DEFAULT_EVENT, NewVisit, PageUrl, Source, Visitor};
use crate::store::{Dumped, Result};

/// Rows per batch handed to the reader.
const BATCH: i32 = 10_000;

/// Sends the database's contents to `sink` in batches; stops early when the reader has gone.
pub async fn dump(
    pool: deadpool_postgres::Pool,
    sink: &mpsc::Sender<Result<Dumped>>,
) -> anyhow::Result<()> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client).await?;
    let stmt = tx
        .prepare(
            "SELECT v.at, p.url, v.ip, a.ua, e.name,
                    s.referrer, s.utm_source, s.utm_medium, s.utm_campaign
             FROM visits v
             JOIN pages p ON p.id = v.page_id JOIN agents a ON a.id = v.agent_id
             JOIN events e ON e.id = v.event_id JOIN sources s ON s.id = v.source_id
             ORDER BY v.id",
        )
        .await?;
    let portal = tx.bind(&stmt, &[]).await?;
    loop {
        let rows = tx.query_portal(&portal, BATCH).await?;
        let last = rows.len() < BATCH as usize;
        let batch: Vec<NewVisit> = rows
            .iter()
            .filter_map(|row| {
                let url = PageUrl::parse(row.get::<_, &str>(1))?;
                let ip = Visitor::from_bytes(row.get::<_, &[u8]>(2))?;
                let event: String = row.get(4);
                // The device is not carried: the destination reads it from the user agent.
                Some(NewVisit {
                    url,
                    ip,
                    user_agent: row.get(3),
                    event: if event == DEFAULT_EVENT {
                        Cow::Borrowed(DEFAULT_EVENT)
                    } else {
                        Cow::Owned(event)
                    },
                    at: row.get(0),
                    source: Source {
                        referrer: row.get(5),
                        utm_source: row.get(6),
                        utm_medium: row.get(7),
                        utm_campaign: row.get(8),
                    },
                    stamped_on_arrival: false,
                })
            })
            .collect();
        if !batch.is_empty() && sink.send(Ok(Dumped::Visits(batch))).await.is_err() {
            return Ok(());
        }
        if last {
            break;
        }
    }
    let clicks: Vec<(i64, String, i64)> = tx
        .query(
            "SELECT c.minute * 60000, s.name, c.clicks FROM clicks c
             JOIN sites s ON s.id = c.site_id ORDER BY c.seq",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    for chunk in clicks.chunks(BATCH as usize) {
        if sink.send(Ok(Dumped::Clicks(chunk.to_vec()))).await.is_err() {
            return Ok(());
        }
    }
    let counters: Vec<(String, i64)> = tx
        .query("SELECT name, visits FROM page_counters ORDER BY name", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for chunk in counters.chunks(BATCH as usize) {
        if sink
            .send(Ok(Dumped::Counters(chunk.to_vec())))
            .await
            .is_err()
        {
            break;
        }
    }
    tx.commit().await?;
    Ok(())
}
