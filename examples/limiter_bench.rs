//! Run with: cargo run --release --example limiter_bench [-- CHECKS THREADS]
//!
//! What one check of the (client IP, page URL) limiter costs on the request path, in the shape
//! of `../shared/bench/ingest.sh`: every check a key drawn like `visit.lua` draws them (130k
//! addresses × 20,000 pages, so nearly every key is new), from THREADS threads at once (default
//! 2, the server's HTTP workers), while a thread purges every [`PURGE_EVERY`] as the server's
//! timer does. CHECKS (default 600,000) stays below the server's cap of 1,000,000 keys, as an
//! 8 s `ingest.sh` round does; more times the refusals of a full table instead. Prints
//! nanoseconds per check and the keys held at the end.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use footfall::http::ratelimit::{PURGE_EVERY, RateLimits};

fn main() {
    let mut args = std::env::args().skip(1);
    let checks: u64 = args.next().map_or(600_000, |a| a.parse().expect("CHECKS"));
    let threads: u64 = args.next().map_or(2, |a| a.parse().expect("THREADS"));
    // The server's defaults.
    let limits = Arc::new(RateLimits::new(10, 20, 1_000_000));
    let stop = Arc::new(AtomicBool::new(false));
    let purger = {
        let (limits, stop) = (limits.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(PURGE_EVERY);
                limits.purge();
            }
        })
    };
    // URLs made up front, so the loop times the check alone.
    let urls: Vec<String> = (0..20_000)
        .map(|i| format!("https://site{}.example.com/page/{}", i % 20, i / 20))
        .collect();
    let urls = Arc::new(urls);
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (limits, urls) = (limits.clone(), urls.clone());
            std::thread::spawn(move || {
                // A xorshift generator: no dependency, and the same sequence every run.
                let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ (t + 1);
                let mut refused = 0u64;
                for _ in 0..checks / threads {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let ip =
                        IpAddr::V4(Ipv4Addr::new(10, t as u8, (state >> 8) as u8, state as u8));
                    let url = &urls[(state >> 16) as usize % urls.len()];
                    refused += u64::from(limits.check_visit(ip, url).is_err());
                }
                refused
            })
        })
        .collect();
    let refused: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    purger.join().unwrap();
    println!(
        "{checks} checks on {threads} threads: {:.0} ns a check per thread, {refused} refused, {} keys held",
        elapsed.as_nanos() as f64 * threads as f64 / checks as f64,
        limits.key_count()
    );
}
