//! The commands of the binary: `serve`, and `import`, `export`, `cleanup`, which work on the
//! database file directly — safely beside a running server (WAL, busy timeout; the server
//! notices their commits through `PRAGMA data_version`).

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::Context;
use rusqlite::Connection;

use crate::config::{CleanupArgs, ExportArgs, ImportArgs, ServeArgs};
use crate::domain::import::{ImportReport, read_records};
use crate::domain::{format_iso, now_millis};
use crate::http::App;
use crate::store::export::{FilterParams, export as export_rows};
use crate::store::ingest::{self, Ingest, NewVisit};
use crate::store::rollups;
use crate::store::{WriteConns, immediate, open_writer};

/// `footfall serve`.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    tracing::info!(config = ?args, "starting footfall");
    // The database first: a port that accepts connections is a server that can answer them
    // (opening may take a while: a migration, a large roll-up).
    let app = App::build(&args)?;
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("cannot listen on {}", args.bind))?;
    tracing::info!(
        "listening on http://{} (database {})",
        listener.local_addr()?,
        args.db.db.display()
    );
    app.serve(listener, crate::http::shutdown_signal()).await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Visits per transaction of `footfall import`: large, because import speed matters and a
/// crash loses at most the batch in flight (never half of one).
const IMPORT_BATCH: usize = 50_000;

/// Writes `visits` in one transaction through the same code as the server's writer, then rolls
/// them up (a batch this large is the bulk case rollups are built for); deletes the late-visit
/// log rows an earlier roll-up counted (`late_seq`). Returns the roll-up's `late_seq`.
pub fn write_batch(
    conns: &mut WriteConns,
    ingest: &mut Ingest,
    visits: &[NewVisit],
    late_seq: i64,
) -> anyhow::Result<i64> {
    immediate(&conns.raw, |raw| {
        ingest.begin(raw)?;
        ingest::prune_late(raw, late_seq)?;
        for visit in visits {
            ingest.add_visit(raw, visit)?;
        }
        Ok::<_, rusqlite::Error>(())
    })
    // Ids handed out in a rolled-back transaction were never stored.
    .inspect_err(|_| ingest.rolled_back())?;
    Ok(conns.roll_up()?.late_seq)
}

/// `footfall import FILE|-`.
pub fn import(args: &ImportArgs) -> anyhow::Result<()> {
    let reader: Box<dyn BufRead> = if args.file.as_os_str() == "-" {
        Box::new(BufReader::with_capacity(1 << 16, std::io::stdin()))
    } else {
        let file = File::open(&args.file)
            .with_context(|| format!("cannot open {}", args.file.display()))?;
        Box::new(BufReader::with_capacity(1 << 16, file))
    };
    let mut conns = open_writer(&args.db.db, args.db.durability)?;
    let report = import_into(&mut conns, reader, std::io::stderr().is_terminal())?;
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

/// Imports every record of `reader` in batches; shows progress on stderr when `progress`.
pub fn import_into(
    conns: &mut WriteConns,
    reader: impl BufRead,
    progress: bool,
) -> anyhow::Result<ImportReport> {
    let mut ingest = Ingest::new();
    let mut late_seq = 0;
    let mut report = ImportReport::default();
    let mut batch = Vec::with_capacity(IMPORT_BATCH);
    let started = Instant::now();
    let mut last_progress = Instant::now();
    read_records(reader, |line, record| {
        match record {
            Ok(visit) => batch.push(visit),
            Err(detail) => report.skip(line, detail),
        }
        if batch.len() >= IMPORT_BATCH {
            late_seq = write_batch(conns, &mut ingest, &batch, late_seq)?;
            report.imported += batch.len() as u64;
            batch.clear();
            if progress && last_progress.elapsed() > Duration::from_millis(500) {
                last_progress = Instant::now();
                let rate = report.imported as f64 / started.elapsed().as_secs_f64();
                eprint!(
                    "\rimported {} visits, skipped {} ({rate:.0}/s)   ",
                    report.imported, report.skipped
                );
            }
        }
        Ok(())
    })?;
    // The last batch may be empty: it still deletes the late-visit log rows counted so far.
    write_batch(conns, &mut ingest, &batch, late_seq)?;
    report.imported += batch.len() as u64;
    if progress {
        eprintln!();
    }
    Ok(report)
}

/// `footfall export`: streams to stdout.
pub fn export(args: &ExportArgs) -> anyhow::Result<()> {
    let path = &args.db.db;
    if !path.exists() {
        anyhow::bail!("no database at {}", path.display());
    }
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.pragma_update(None, "query_only", true)?;
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
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut failed = None;
    export_rows(&conn, &filter, args.format, |chunk| {
        match out.write_all(&chunk) {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    })?;
    match failed {
        // A closed pipe (`footfall export | head`) is a normal way to stop.
        Some(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => {
            let _ = out.flush();
            Ok(())
        }
    }
}

/// `footfall cleanup --days N`.
pub fn cleanup(args: &CleanupArgs) -> anyhow::Result<()> {
    let cutoff = crate::http::routes::admin::cleanup_cutoff(now_millis(), args.days)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let conns = open_writer(&args.db.db, args.db.durability)?;
    let deleted = crate::store::cleanup::run(
        &conns.raw,
        cutoff,
        || Ok(rollups::read_progress(&conns.rollups)?),
        |cutoff| {
            Ok(immediate(&conns.rollups, |c| {
                rollups::take_out_before(c, &mut rollups::RollUpHints::default(), cutoff)
            })?)
        },
    )?;
    println!(
        "{}",
        serde_json::json!({
            "status": "completed",
            "deleted_visits": deleted,
            "cutoff_date": format_iso(cutoff),
        })
    );
    Ok(())
}
