//! Test support shared by the SQLite backend's unit tests: a scratch database written and rolled
//! up the way the writer and the roll-up thread do it, step by step, and visits to fill it.

use std::path::PathBuf;

use crate::domain::{NewVisit, PageUrl, Source};
use crate::store::Durability;
use crate::store::sqlite::ingest::{Ingest, commit_visits};
use crate::store::sqlite::{WriteConns, cleanup, open_reader, open_writer, rollups};

pub const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
pub const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1";
pub const BOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

/// A visit to `url` from `ip` with `ua`, referred from `referrer`, at `at`.
pub fn visit(url: &str, ip: &str, ua: &str, referrer: Option<&str>, at: i64) -> NewVisit {
    let url = PageUrl::parse(url).unwrap();
    NewVisit {
        source: Source::of(&url, referrer),
        ..NewVisit::pageview(url, ip.parse().unwrap(), ua.into(), at)
    }
}

/// A database in a temporary folder, with both write connections.
pub struct Db {
    _dir: tempfile::TempDir,
    pub db: PathBuf,
    pub conns: WriteConns,
    pub ingest: Ingest,
}

impl Db {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("v.db");
        let conns = open_writer(&db, Durability::Normal).unwrap();
        Self {
            _dir: dir,
            db,
            conns,
            ingest: Ingest::new(),
        }
    }

    pub fn write(&mut self, visits: &[NewVisit]) {
        commit_visits(&self.conns.raw, &mut self.ingest, visits.iter().cloned());
    }

    pub fn roll_up(&mut self) {
        self.conns.roll_up().unwrap();
    }

    pub fn mismatches(&self) -> Vec<String> {
        rollups::check(&open_reader(&self.db).unwrap()).unwrap()
    }

    /// `DELETE /cleanup` of the visits before `cutoff`, both steps, as the writer runs it.
    pub fn cleanup(&mut self, cutoff: i64) -> u64 {
        let conns = &mut self.conns;
        cleanup::run(
            &conns.raw,
            cutoff,
            || Ok(rollups::read_progress(&conns.rollups)?),
            |cutoff| {
                Ok(conns.hints.transaction(&conns.rollups, |conn, hints| {
                    rollups::take_out_before(conn, hints, cutoff)
                })?)
            },
        )
        .unwrap()
    }
}
