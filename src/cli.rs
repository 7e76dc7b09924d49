//! The commands of the binary: `serve`, and `import`, `export`, `cleanup`, which open the
//! database through the same [`Store`] as the server — safely beside a running server on the
//! same file (SQLite's WAL and busy timeout; the server notices their commits).

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{StreamExt, TryStreamExt};

use crate::config::{CleanupArgs, CopyArgs, ExportArgs, ImportArgs, ServeArgs};
use crate::domain::export::FilterParams;
use crate::domain::import::{ImportReport, read_records};
use crate::domain::{NewVisit, cleanup_cutoff, format_iso, now_millis};
use crate::http::App;
use crate::privacy::{IpMode, Privacy, PrivacyArgs};
use crate::store::{Dumped, Store};

/// `footfall serve`.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    tracing::info!(config = ?args, "starting footfall");
    // Before the port is bound: from the moment it answers, SIGTERM must mean a clean stop.
    let signalled = crate::http::shutdown_signal();
    // The database first: a port that accepts connections is a server that can answer them
    // (opening may take a while: a migration, a large roll-up).
    let app = App::build(&args)?;
    if app.state.admin_token.is_none() {
        // WARN, not INFO: a proxy on this host that does not forward the client address makes
        // every visitor loopback, so admin, and nothing at start can tell that apart.
        tracing::warn!(
            "no admin token: admin endpoints (/all-visits, /import, /cleanup, POST /domains) \
             answer loopback clients only; a reverse proxy on this host must forward the client \
             address in X-Forwarded-For (believed from --trusted-proxies), or every visitor \
             looks like loopback: set --admin-token behind a proxy"
        );
    }
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("cannot listen on {}", args.bind))?;
    tracing::info!(
        "listening on http://{} (database {})",
        listener.local_addr()?,
        crate::config::without_password(&args.db.db.to_string_lossy())
    );
    // One signal for HTTP and the bus subscribers: both stop taking work at SIGTERM, and the
    // store is closed once both have committed what they hold.
    let (stopper, stop) = crate::bus::Stop::channel();
    app.start_buses(&args, &stop);
    let shutdown = async move {
        signalled.await;
        stopper.stop();
    };
    app.serve(listener, shutdown).await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Visits per transaction of `footfall import`: large, because import speed matters and a
/// crash loses at most the batch in flight (never half of one).
const IMPORT_BATCH: usize = 50_000;

/// `footfall import FILE|-`.
pub async fn import(args: &ImportArgs) -> anyhow::Result<()> {
    let reader: Box<dyn BufRead + Send> = if args.file.as_os_str() == "-" {
        Box::new(BufReader::with_capacity(1 << 16, std::io::stdin()))
    } else {
        let file = File::open(&args.file)
            .with_context(|| format!("cannot open {}", args.file.display()))?;
        Box::new(BufReader::with_capacity(1 << 16, file))
    };
    let store = Store::open(&args.db.db, &args.db.store_options())?;
    let privacy = Privacy::new(PrivacyArgs {
        ip_mode: args.ip_mode,
        ..PrivacyArgs::default()
    });
    let progress = std::io::stderr().is_terminal();
    let imported = import_into(&store, &privacy, reader, progress).await;
    store.close().await;
    let report = imported?;
    for error in &report.errors {
        eprintln!("line {}: {}", error.line, error.detail);
    }
    if report.skipped as usize > report.errors.len() {
        eprintln!(
            "... and {} more errors",
            report.skipped as usize - report.errors.len()
        );
    }
    println!(
        "imported {} visits, skipped {}",
        report.imported, report.skipped
    );
    Ok(())
}

/// Imports every record of `reader` into `store` in batches, each committed before the next
/// is sent (the next is parsed meanwhile), their visitors in the form `privacy` stores; shows
/// progress on stderr when `progress`.
pub async fn import_into(
    store: &Store,
    privacy: &Privacy,
    reader: impl BufRead + Send + 'static,
    progress: bool,
) -> anyhow::Result<ImportReport> {
    let (batches, mut parsed) = tokio::sync::mpsc::channel::<Vec<NewVisit>>(1);
    let parser = tokio::task::spawn_blocking(move || {
        let mut report = ImportReport::default();
        let mut batch = Vec::with_capacity(IMPORT_BATCH);
        let result = read_records(reader, |line, record| {
            match record {
                Ok(visit) => batch.push(visit),
                Err(detail) => report.skip(line, detail),
            }
            if batch.len() >= IMPORT_BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(IMPORT_BATCH));
                // The importing side stopped (a failed commit): so does the parsing.
                batches
                    .blocking_send(full)
                    .map_err(|_| anyhow::anyhow!("the import stopped"))?;
            }
            Ok(())
        });
        if result.is_ok() && !batch.is_empty() {
            let _ = batches.blocking_send(batch);
        }
        (result, report)
    });
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut imported = 0u64;
    let mut failed = None;
    while let Some(mut batch) = parsed.recv().await {
        if privacy.ip_mode() != IpMode::Full {
            let mut stored = Vec::with_capacity(batch.len());
            for visit in batch {
                stored.push(privacy.anonymize(store, visit).await?);
            }
            batch = stored;
        }
        match store.import(batch).await {
            Ok(n) => imported += n as u64,
            Err(err) => {
                failed = Some(err);
                break;
            }
        }
        if progress && last_progress.elapsed() > Duration::from_millis(500) {
            last_progress = Instant::now();
            let rate = imported as f64 / started.elapsed().as_secs_f64();
            eprint!("\rimported {imported} visits ({rate:.0}/s)   ");
        }
    }
    drop(parsed);
    let (result, mut report) = parser.await?;
    if progress {
        eprintln!();
    }
    if let Some(err) = failed {
        return Err(anyhow::Error::new(err).context(format!(
            "import stopped after {imported} visits were committed"
        )));
    }
    result?;
    report.imported = imported;
    Ok(report)
}

/// `footfall export`: streams to stdout.
pub async fn export(args: &ExportArgs) -> anyhow::Result<()> {
    let path = &args.db.db;
    if !Store::is_postgres(path) && !path.exists() {
        anyhow::bail!("no database at {}", path.display());
    }
    let filter = FilterParams {
        start_date: args.start_date.clone(),
        end_date: args.end_date.clone(),
        since: args.since.clone(),
        range: args.range.clone(),
        limit: args.limit,
        offset: args.offset,
    }
    .parse()
    .map_err(|e| anyhow::anyhow!(e))?;
    let store = Store::open(path, &args.db.store_options())?;
    let mut chunks = store.export(filter, args.format);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut written = Ok(());
    while let Some(chunk) = chunks.recv().await {
        if let Err(e) = out.write_all(&chunk) {
            written = Err(e);
            break;
        }
    }
    drop(chunks);
    store.close().await;
    match written.and_then(|()| out.flush()) {
        // A closed pipe (`footfall export | head`) is a normal way to stop.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// `footfall cleanup --days N`.
pub async fn cleanup(args: &CleanupArgs) -> anyhow::Result<()> {
    let cutoff = cleanup_cutoff(now_millis(), args.days).map_err(|e| anyhow::anyhow!(e))?;
    let store = Store::open(&args.db.db, &args.db.store_options())?;
    let deleted = store.cleanup(cutoff).await;
    store.close().await;
    println!(
        "{}",
        serde_json::json!({
            "status": "completed",
            "deleted_visits": deleted?,
            "cutoff_date": format_iso(cutoff),
        })
    );
    Ok(())
}

/// Visits per commit of `footfall copy` on the receiving side.
const COPY_BATCH: usize = 50_000;
/// Per-page counters `footfall copy` adds at once.
const COUNTERS_IN_FLIGHT: usize = 64;

/// `footfall copy --from SRC --to DST`: everything SRC holds (visits with their events and
/// times to the millisecond, pre-counted clicks) is added to DST, with a progress line on a
/// terminal; then the totals are checked: DST must have grown by exactly what SRC holds.
/// Writers to SRC should be stopped first (a visit recorded during the copy may be missed, and
/// the check then says so).
pub async fn copy(args: &CopyArgs) -> anyhow::Result<()> {
    if !Store::is_postgres(&args.from) && !args.from.exists() {
        anyhow::bail!("no database at {}", args.from.display());
    }
    let options = crate::store::Options {
        durability: args.durability,
        ..crate::store::Options::default()
    };
    let from = Store::open(&args.from, &options)?;
    let to = Store::open(&args.to, &options)?;
    let copied = copy_between(&from, &to, std::io::stderr().is_terminal()).await;
    from.close().await;
    to.close().await;
    let (visits, clicks, counted) = copied?;
    println!(
        "copied {visits} visits, {clicks} pre-counted clicks and {counted} per-page counter \
         visits; the totals match"
    );
    Ok(())
}

/// Copies everything `from` holds into `to` and checks the totals; answers (visits, clicks,
/// per-page counter visits).
pub async fn copy_between(
    from: &Store,
    to: &Store,
    progress: bool,
) -> anyhow::Result<(i64, i64, i64)> {
    let (src_visits, src_clicks) = (from.stored_visits().await?, from.stored_clicks().await?);
    let (dst_visits, dst_clicks) = (to.stored_visits().await?, to.stored_clicks().await?);
    let (src_counted, dst_counted) = (
        from.page_counts_total().await?,
        to.page_counts_total().await?,
    );
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut visits = 0i64;
    let mut pending: Vec<NewVisit> = Vec::with_capacity(COPY_BATCH);
    let mut parts = from.dump();
    while let Some(part) = parts.recv().await {
        match part? {
            Dumped::Visits(batch) => {
                pending.extend(batch);
                if pending.len() >= COPY_BATCH {
                    visits += to.import(std::mem::take(&mut pending)).await? as i64;
                }
            }
            Dumped::Clicks(clicks) => {
                // One call per instant, as POST /domains adds them.
                let mut by_time: std::collections::BTreeMap<i64, Vec<(String, i64)>> =
                    std::collections::BTreeMap::new();
                for (at, site, n) in clicks {
                    by_time.entry(at).or_default().push((site, n));
                }
                for (at, clicks) in by_time {
                    to.add_clicks(at, clicks).await?;
                }
            }
            Dumped::Counters(counters) => {
                // Many at once, so that the destination's writer commits them in batches
                // rather than one commit each.
                futures_util::stream::iter(counters)
                    .map(|(name, visits)| async move { to.add_to_page_count(&name, visits).await })
                    .buffer_unordered(COUNTERS_IN_FLIGHT)
                    .try_collect::<Vec<i64>>()
                    .await?;
            }
        }
        if progress && last_progress.elapsed() > Duration::from_millis(500) {
            last_progress = Instant::now();
            let rate = visits as f64 / started.elapsed().as_secs_f64();
            eprint!("\rcopied {visits} of {src_visits} visits ({rate:.0}/s)   ");
        }
    }
    if !pending.is_empty() {
        visits += to.import(pending).await? as i64;
    }
    if progress {
        eprintln!("\rcopied {visits} of {src_visits} visits                ");
    }
    let (now_visits, now_clicks) = (to.stored_visits().await?, to.stored_clicks().await?);
    let now_counted = to.page_counts_total().await?;
    if now_visits - dst_visits != src_visits
        || now_clicks - dst_clicks != src_clicks
        || now_counted - dst_counted != src_counted
    {
        anyhow::bail!(
            "the totals do not match: the source holds {src_visits} visits, {src_clicks} \
             clicks and {src_counted} counter visits, the destination gained {} visits, {} \
             clicks and {} counter visits (was the source written to during the copy?)",
            now_visits - dst_visits,
            now_clicks - dst_clicks,
            now_counted - dst_counted
        );
    }
    Ok((src_visits, src_clicks, src_counted))
}
