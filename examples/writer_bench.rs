//! Writer and roll-up throughput without HTTP: batches of visits shaped like
//! `../shared/bench/visit.lua` (20 sites × 1,000 pages, 130k client IPs, 4 agents) written
//! like the server's writer thread does (one transaction of raw rows per batch), and the tail
//! rolled up every `ROLL_UP_AT` visits like its roll-up thread does, here one after the other
//! so that each part's time per visit is printed on its own. In the server they run on two
//! threads, each with its file's write lock.
//!
//! Run with: `cargo run --release --example writer_bench -- [VISITS] [BATCH]`
use std::time::Instant;

use footfall::domain::NewVisit;
use footfall::domain::{PageUrl, now_millis};
use footfall::store::Durability;
use footfall::store::sqlite::ingest::Ingest;
use footfall::store::sqlite::roller::ROLL_UP_AT;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let total: usize = args.next().map_or(Ok(200_000), |s| s.parse())?;
    let batch: usize = args.next().map_or(Ok(64), |s| s.parse())?;
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("bench.db");
    let mut conns = footfall::store::sqlite::open_writer(&db, Durability::Normal)?;
    let mut ingest = Ingest::new();
    let agents = ["Chrome/130", "Safari/17", "Firefox/131", "iPhone"];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let started = Instant::now();
    let mut written = 0;
    let mut tail = 0;
    let mut rolled_up_in = std::time::Duration::ZERO;
    while written < total {
        let visits: Vec<NewVisit> = (0..batch)
            .map(|i| {
                let r = rand();
                let url = format!(
                    "https://site{}.example.com/page/{}",
                    r % 20 + 1,
                    (r >> 8) % 1000 + 1
                );
                NewVisit::pageview(
                    PageUrl::parse(&url).expect("valid"),
                    // visit.lua's addresses: 10.T.x.y for its 2 threads T, so most come back.
                    std::net::IpAddr::from([
                        10,
                        (r >> 20) as u8 % 2,
                        (r >> 28) as u8,
                        ((r >> 36) % 254 + 1) as u8,
                    ]),
                    agents[i % 4].to_owned(),
                    now_millis(),
                )
            })
            .collect();
        footfall::store::sqlite::immediate(&conns.raw, |raw| {
            ingest.begin(raw)?;
            for visit in &visits {
                ingest.add_visit(raw, visit)?;
            }
            Ok::<_, rusqlite::Error>(())
        })?;
        tail += batch;
        written += batch;
        if tail >= ROLL_UP_AT || written >= total {
            let rolling = Instant::now();
            conns.roll_up()?;
            rolled_up_in += rolling.elapsed();
            tail = 0;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{written} visits in batches of {batch}: {:.0} visits/s ({:.1} µs/visit, of which \
         {:.1} rolling up)",
        written as f64 / secs,
        secs * 1e6 / written as f64,
        rolled_up_in.as_secs_f64() * 1e6 / written as f64
    );
    Ok(())
}
