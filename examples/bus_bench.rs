//! Run with: cargo run --release --example bus_bench [-- EVENTS] 2>/dev/null
//!
//! Events/s from NATS JetStream into footfall against `POST /visit` requests/s, in one run (the
//! machine is shared: only figures taken together compare). Needs a NATS server with JetStream
//! at `FOOTFALL_BENCH_NATS` (default `nats://127.0.0.1:4222`).
//!
//! - **NATS**: EVENTS events (each with an `id`, a different page and client) are published to a
//!   stream of the bench's own first; then footfall starts consuming (a fresh database) and the
//!   clock runs until every event is committed and counted: the rate at which footfall drains a
//!   backlog, acknowledgements included.
//! - **HTTP**: the same number of `POST /visit` requests (a different page and client each) to
//!   footfall served on loopback in this process, 64 in flight over keep-alive connections, as
//!   `../shared/bench/ingest.sh` keeps them; the clock runs until the last is answered.
//!
//! Both run in this process on a multi-threaded runtime, on fresh databases, rate limits off;
//! the HTTP load generator shares the cores with the server, as `nats-server` does on the other
//! side. Each side runs twice, alternating, and both runs are printed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use footfall::config::ServeArgs;
use footfall::http::App;

const IN_FLIGHT: usize = 64;

fn main() -> anyhow::Result<()> {
    let events: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(100_000);
    let url =
        std::env::var("FOOTFALL_BENCH_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        for round in 1..=2 {
            let nats = nats_rate(&url, events, round).await?;
            let http = http_rate(events).await?;
            println!(
                "round {round}: NATS {nats:.0} events/s, POST /visit {http:.0} requests/s, ratio {:.2}",
                nats / http
            );
        }
        Ok(())
    })
}

fn args_on(dir: &tempfile::TempDir) -> ServeArgs {
    let mut args = ServeArgs::for_db(dir.path().join("visits.db"));
    args.rate_limit_per_minute = 0;
    args.bulk_rate_limit_per_minute = 0;
    args.ip_rate_per_second = 0;
    args
}

fn event(i: usize) -> String {
    serde_json::json!({
        "id": format!("bench-{i}"),
        "url": format!("https://bench{}.example/page/{i}", i % 50),
        "ip": format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255),
        "user_agent": "bench",
    })
    .to_string()
}

/// Publishes `events` to a new stream, then times footfall consuming all of them.
async fn nats_rate(url: &str, events: usize, round: usize) -> anyhow::Result<f64> {
    let client = async_nats::connect(url).await?;
    let js = async_nats::jetstream::new(client);
    let name = format!("FFBENCH_{}_{round}", std::process::id());
    let subject = format!("ffbench.{}.{round}", std::process::id());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![subject.clone()],
        ..Default::default()
    })
    .await?;
    let published = Instant::now();
    for chunk in (0..events).collect::<Vec<_>>().chunks(1_000) {
        let mut acks = Vec::with_capacity(chunk.len());
        for &i in chunk {
            acks.push(js.publish(subject.clone(), event(i).into()).await?);
        }
        for ack in acks {
            ack.await?;
        }
    }
    eprintln!(
        "published {events} in {:.2} s",
        published.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir()?;
    let mut args = args_on(&dir);
    args.bus.nats = Some(url.to_owned());
    args.bus.nats_subject = Some(subject);
    args.bus.nats_durable = name.clone();
    let app = App::build(&args)?;
    let (stopper, stop) = footfall::bus::Stop::channel();
    let started = Instant::now();
    app.start_buses(&args, &stop);
    while app.state.store.stored_visits().await? < events as i64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    stopper.stop();
    app.state.buses.join().await;
    app.state.store.close().await;
    js.delete_stream(&name).await?;
    Ok(rate)
}

/// Times `requests` `POST /visit`s to footfall served on loopback.
async fn http_rate(requests: usize) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let app = App::build(&args_on(&dir))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/visit", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.serve(listener, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(IN_FLIGHT)
        .build()?;
    let base = Arc::new(base);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..IN_FLIGHT {
        let (client, base) = (client.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            for i in (worker..requests).step_by(IN_FLIGHT) {
                let reply = client
                    .post(base.as_str())
                    .header(
                        "x-forwarded-for",
                        format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255),
                    )
                    .body(
                        serde_json::json!({"url": format!("https://bench{}.example/page/{i}", i % 50)})
                            .to_string(),
                    )
                    .header("content-type", "application/json")
                    .send()
                    .await?;
                anyhow::ensure!(reply.status() == 200, "answered {}", reply.status());
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let rate = requests as f64 / started.elapsed().as_secs_f64();
    let _ = stop.send(());
    server.await??;
    Ok(rate)
}
