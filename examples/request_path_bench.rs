//! Run with: cargo run --release --example request_path_bench [-- REQUESTS] 2>/dev/null
//!
//! What `POST /visit` costs the HTTP thread above hyper and the kernel: the router, every
//! middleware layer, the handler, the hand-off to the writer and the answer, driven in-process
//! (`tower::ServiceExt::oneshot`) on a single-threaded runtime, 64 requests in flight as
//! `../shared/bench/ingest.sh` keeps them, each drawn like `visit.lua` draws them. The requests
//! are built before the clock starts. Prints this thread's CPU time per request (from
//! `/proc/thread-self/schedstat`, so the writer and roll-up threads are not in it) and the heap
//! allocations per request made on this thread. Steadier than requests/s under wrk on a shared
//! machine, and it isolates the part of a request footfall's own code decides. Each request
//! writes its log line, as in the server (to stderr: hence the redirection above).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use footfall::config::ServeArgs;
use futures_util::future::join_all;
use tower::ServiceExt;

/// Counts this thread's allocations (a thread-local counter: the writer's are not ours).
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: delegates every call to `System` unchanged; the counter is a thread-local `Cell`.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Nanoseconds this thread has run on a CPU.
fn thread_cpu_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    stat.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("schedstat's first field")
}

const IN_FLIGHT: usize = 64;
const AGENTS: [&str; 4] = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:131.0) Gecko/20100101 Firefox/131.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
];

/// The `n`th request, drawn like `visit.lua` (a small xorshift instead of Lua's generator).
fn visit(n: u64, state: &mut u64) -> Request<Body> {
    let mut next = |bound: u64| {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state % bound
    };
    let (site, page) = (next(20) + 1, next(1000) + 1);
    let ip = format!("10.{}.{}.{}", n % 2, next(256), next(254) + 1);
    let body = format!(r#"{{"url":"https://site{site}.example.com/page/{page}"}}"#);
    let mut request = Request::post("/visit")
        .header("content-type", "application/json")
        .header("x-forwarded-for", ip)
        .header("user-agent", AGENTS[(n % 4) as usize])
        .body(Body::from(body))
        .expect("a valid request");
    let peer: SocketAddr = "127.0.0.1:40000".parse().expect("an address");
    request.extensions_mut().insert(ConnectInfo(peer));
    request
}

fn main() -> anyhow::Result<()> {
    let requests: usize = std::env::args()
        .nth(1)
        .map_or(200_000, |a| a.parse().expect("REQUESTS"));
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("bench.db");
    let args = ServeArgs::for_db(&db);
    let _log_guard = footfall::telemetry::init_tracing(args.log_format);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let app = footfall::http::App::build(&args)?;
        let router = app.router.clone();
        let mut state = 0x9E37_79B9_7F4A_7C15;
        let mut batches = Vec::new();
        for start in (0..requests).step_by(IN_FLIGHT) {
            let end = (start + IN_FLIGHT).min(requests);
            batches.push((start..end).map(|n| visit(n as u64, &mut state)).collect::<Vec<_>>());
        }
        let (cpu, allocations) = (thread_cpu_ns(), ALLOCATIONS.with(Cell::get));
        let started = std::time::Instant::now();
        for batch in batches {
            let answers = join_all(batch.into_iter().map(|r| router.clone().oneshot(r))).await;
            for answer in answers {
                let status = answer.expect("infallible").status();
                assert!(status.is_success(), "POST /visit answered {status}");
            }
        }
        let elapsed = started.elapsed();
        let cpu = thread_cpu_ns() - cpu;
        let allocations = ALLOCATIONS.with(Cell::get) - allocations;
        println!(
            "{requests} requests in {:.2} s: request path {:.2} µs CPU and {:.1} allocations a request on the HTTP thread",
            elapsed.as_secs_f64(),
            cpu as f64 / 1e3 / requests as f64,
            allocations as f64 / requests as f64,
        );
        app.state.store.close().await;
        anyhow::Ok(())
    })
}
