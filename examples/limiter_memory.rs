//! Run with: cargo run --release --example limiter_memory [-- --max-keys N --rate KEYS_PER_S --total N --rounds N]
//!
//! Shows that the (client IP, page URL) rate limiters' memory is bounded whatever number of
//! distinct keys they see. Feeds `--total` (default 1,000,000) distinct (IP, URL) pairs through
//! [`RateLimits`] — each one checked against both the visit and the bulk limiter, the worst
//! case — while a thread purges every [`PURGE_EVERY`] exactly as the server's timer does, and
//! prints the process's resident memory (VmRSS) every 100,000 keys. Then:
//!
//! 1. feeds as many *new* keys again at once: the table is at its cap (`--max-keys`, the
//!    server's `--limiter-max-keys`, default 1,000,000), so they are refused and memory stays
//!    flat;
//! 2. `--rounds` times over (default 3): waits until every quota has refilled, lets the purge
//!    empty the table, and feeds another round of new keys: the tables' memory is reused, so
//!    resident memory stays at its high-water mark instead of adding up.
//!
//! With `--rate N` the keys arrive at N per second instead of as fast as possible: the purge
//! then keeps the table at roughly N × (time for one visit's token to come back) keys, below
//! the cap, however long the run.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use footfall::http::ratelimit::{PURGE_EVERY, RateLimits};

/// The server's defaults (`--rate-limit-per-minute`, `--bulk-rate-limit-per-minute`).
const VISITS_PER_MINUTE: u32 = 10;
const BULK_PER_MINUTE: u32 = 20;
const REPORT_EVERY: u64 = 100_000;

struct Options {
    max_keys: usize,
    rate: u64,
    total: u64,
    rounds: u64,
}

fn options() -> Options {
    let mut options = Options {
        max_keys: 1_000_000,
        rate: 0,
        total: 1_000_000,
        rounds: 3,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair
            .get(1)
            .and_then(|v| v.replace('_', "").parse::<u64>().ok());
        match (pair[0].as_str(), value) {
            ("--max-keys", Some(v)) => options.max_keys = v as usize,
            ("--rate", Some(v)) => options.rate = v,
            ("--total", Some(v)) => options.total = v,
            ("--rounds", Some(v)) => options.rounds = v,
            _ => {
                eprintln!(
                    "usage: limiter_memory [--max-keys N] [--rate KEYS_PER_S] [--total N] [--rounds N]"
                );
                std::process::exit(2);
            }
        }
    }
    options
}

/// Resident memory of this process in MiB, from /proc/self/status.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The `n`-th distinct (IP, URL) pair: 65,536 addresses × many pages per address.
fn key(n: u64) -> (IpAddr, String) {
    let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (n as u32 & 0xffff)));
    let url = format!("https://site{}.example/articles/{n}", n % 997);
    (ip, url)
}

/// Feeds keys `from..from + count` and prints a line every [`REPORT_EVERY`].
fn feed(limits: &RateLimits, from: u64, count: u64, rate: u64, round: &str) {
    let started = Instant::now();
    let mut refused = 0u64;
    for i in 0..count {
        if rate > 0 {
            // Pace the arrivals: key i is due at i / rate seconds.
            let due = Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let (ip, url) = key(from + i);
        refused += u64::from(limits.check_visit(ip, &url).is_err());
        refused += u64::from(limits.check_bulk_item(ip, &url).is_err());
        if (i + 1) % REPORT_EVERY == 0 {
            println!(
                "{round:>7} {:>9} {:>11} {:>10} {:>9.1} {:>8.1}",
                i + 1,
                limits.key_count(),
                refused,
                rss_mib(),
                started.elapsed().as_secs_f64()
            );
        }
    }
}

fn main() {
    let options = options();
    let limits = Arc::new(RateLimits::new(
        VISITS_PER_MINUTE,
        BULK_PER_MINUTE,
        options.max_keys,
    ));
    // The server's purge task, on a thread: every PURGE_EVERY, drop the refilled keys.
    let stop = Arc::new(AtomicBool::new(false));
    // The longest purge, in µs: the server runs it on an async worker, so it is a stall.
    let longest_purge = Arc::new(AtomicU64::new(0));
    let purger = {
        let (limits, stop, longest) = (limits.clone(), stop.clone(), longest_purge.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(PURGE_EVERY);
                let started = Instant::now();
                limits.purge();
                longest.fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            }
        })
    };

    println!(
        "limits: {VISITS_PER_MINUTE}/min per (IP, URL), bulk {BULK_PER_MINUTE}/min; cap {} keys per \
         limiter; purge every {:?}; rate {}",
        options.max_keys,
        PURGE_EVERY,
        if options.rate == 0 {
            "unpaced".to_owned()
        } else {
            format!("{} keys/s", options.rate)
        }
    );
    println!("baseline RSS {:.1} MiB", rss_mib());
    println!(
        "{:>7} {:>9} {:>11} {:>10} {:>9} {:>8}",
        "round", "fed", "keys held", "refused", "RSS MiB", "seconds"
    );
    feed(&limits, 0, options.total, options.rate, "fill");
    if options.rate == 0 {
        // 1. More new keys straight away: the cap holds.
        feed(&limits, options.total, options.total, 0, "at-cap");
        // 2. governor drops a key once its state is indistinguishable from a fresh one: one
        //    emission interval after its quota is full again, so 2 × (60 s / per-minute rate)
        //    after a single hit. Wait for that plus a purge, then feed new keys; `--rounds`
        //    times, to show the memory does not creep up round after round.
        let interval = Duration::from_secs(60 / u64::from(VISITS_PER_MINUTE.min(BULK_PER_MINUTE)));
        for round in 1..=options.rounds {
            std::thread::sleep(2 * interval + PURGE_EVERY + Duration::from_millis(500));
            println!(
                "after refill and purge: {} keys held, RSS {:.1} MiB",
                limits.key_count(),
                rss_mib()
            );
            feed(
                &limits,
                (1 + round) * options.total,
                options.total,
                0,
                &format!("again-{round}"),
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = purger.join();
    println!(
        "final: {} keys held, RSS {:.1} MiB, {} purges run by requests at the cap, longest \
         timer purge {:.1} ms",
        limits.key_count(),
        rss_mib(),
        limits.inline_purges(),
        longest_purge.load(Ordering::Relaxed) as f64 / 1000.0
    );
}
