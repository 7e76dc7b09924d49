//! The per-visit cost of reading API.md §12's dimensions, on the user agents and referrers of
//! `../shared/bench/gen_visits.py`:
//!
//!     cargo run --release --example dimension_parse
//!
//! Prints nanoseconds per call of `Device::parse` (which the store pays once per distinct user
//! agent, not per visit), `is_bot` (per visit under `--bots exclude`) and `Source::of` (per
//! visit: the referrer's host and the page URL's UTM tags).

use std::hint::black_box;
use std::time::Instant;

use footfall::domain::{Device, PageUrl, Source, is_bot};

const AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.3 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (iPad; CPU OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
];
const REFERRERS: &[Option<&str>] = &[
    None,
    Some("https://www.google.com/"),
    Some("https://news.ycombinator.com/item?id=1"),
    Some("https://t.co/abc"),
    Some("https://site3.example.com/page/0"),
];

fn per_call(what: &str, calls: usize, mut f: impl FnMut(usize)) {
    for i in 0..calls / 10 {
        f(i); // warm-up
    }
    let started = Instant::now();
    for i in 0..calls {
        f(i);
    }
    let ns = started.elapsed().as_nanos() as f64 / calls as f64;
    println!("{what:<40} {ns:>8.0} ns");
}

fn main() {
    let pages: Vec<PageUrl> = (0..50)
        .map(|p| {
            let tags = if p % 5 == 0 {
                "?utm_source=news&utm_medium=email&utm_campaign=x"
            } else {
                ""
            };
            PageUrl::parse(&format!(
                "https://site{}.example.com/page/{p}{tags}",
                p % 20
            ))
            .unwrap()
        })
        .collect();
    let n = 200_000;
    per_call("Device::parse (once per new agent)", n, |i| {
        black_box(Device::parse(AGENTS[i % AGENTS.len()]));
    });
    per_call("is_bot (per visit, --bots exclude)", n, |i| {
        black_box(is_bot(AGENTS[i % AGENTS.len()]));
    });
    per_call("Source::of (per visit)", n, |i| {
        black_box(Source::of(
            &pages[i % pages.len()],
            REFERRERS[i % REFERRERS.len()],
        ));
    });
}
