//! Command line and environment configuration (clap derive).
//!
//! Every flag can also be set as `FOOTFALL_<FLAG>`; the doc comment of each field is its
//! `--help` text. `footfall` with no subcommand is `footfall serve`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;

use crate::domain::export::ExportFormat;
use crate::store::{self, Durability};

#[derive(Debug, Parser)]
#[command(
    name = "footfall",
    version,
    about = "Page-visit analytics server on an embedded SQLite file, or on PostgreSQL for several nodes"
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `serve`'s options, accepted without the word `serve`.
    #[command(flatten)]
    pub serve: ServeArgs,
}

impl Cli {
    /// The command to run: `serve` when none was named.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Serve(Box::new(self.serve)))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve(Box<ServeArgs>),
    /// Load visits from JSONL or a JSON array (FILE, or - for stdin) straight into the database.
    Import(ImportArgs),
    /// Write stored visits to stdout, newest first.
    Export(ExportArgs),
    /// Delete visits older than N days (and their share of every rollup), e.g. from cron.
    Cleanup(CleanupArgs),
    /// Copy everything one database holds into another (SQLite file or PostgreSQL URL, either
    /// direction): visits with their events and dimensions, pre-counted clicks and per-page
    /// counters; then check the totals.
    Copy(CopyArgs),
}

#[derive(Clone, Args)]
pub struct DbArgs {
    /// SQLite file of the recorded visits; the rollups derived from them live beside it, in
    /// `<name>.rollups.<ext>` (`serve`, `import` and `cleanup` create both, with their folder,
    /// when missing; `export` reads the visits file only, which must exist). Or a PostgreSQL
    /// URL, `postgres://user:pass@host:5432/dbname` (libpq style, `?sslmode=verify-full` and
    /// `sslrootcert=FILE` included; the database and its schema are created when missing): any
    /// number of nodes may share one.
    #[arg(long, env = "FOOTFALL_DB", default_value = "data/visits.db")]
    pub db: PathBuf,
    /// `normal`: a committed visit survives a crash of the process (WAL, synchronous=NORMAL).
    /// `full`: it also survives power loss (fsync on every commit; slower).
    #[arg(long, env = "FOOTFALL_DURABILITY", value_enum, default_value_t = Durability::Normal)]
    pub durability: Durability,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "FOOTFALL_BIND", default_value = "127.0.0.1:8000")]
    pub bind: SocketAddr,
    #[command(flatten)]
    pub db: DbArgs,
    /// Bearer token for the admin endpoints (/cleanup, /import, /all-visits, POST /domains).
    /// Without one, those answer loopback clients only, and refuse requests a browser marks as
    /// coming from another site or under a host name that is not a loopback one.
    #[arg(long, env = "FOOTFALL_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Comma-separated CIDRs whose X-Forwarded-For / X-Real-IP headers are believed.
    #[arg(
        long,
        env = "FOOTFALL_TRUSTED_PROXIES",
        value_delimiter = ',',
        default_value = "127.0.0.0/8,::1/128"
    )]
    pub trusted_proxies: Vec<IpNet>,
    /// Comma-separated origins allowed by CORS, or `*` for any (admin endpoints never answer
    /// CORS).
    #[arg(
        long,
        env = "FOOTFALL_CORS_ORIGINS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub cors_origins: Vec<String>,
    /// Recording requests allowed per (client IP, page URL) per minute; 0 disables the limit.
    #[arg(long, env = "FOOTFALL_RATE_LIMIT_PER_MINUTE", default_value_t = 10)]
    pub rate_limit_per_minute: u32,
    /// /bulk-visits items allowed per (client IP, page URL) per minute; 0 disables the limit.
    #[arg(
        long,
        env = "FOOTFALL_BULK_RATE_LIMIT_PER_MINUTE",
        default_value_t = 20
    )]
    pub bulk_rate_limit_per_minute: u32,
    /// Requests per second allowed per client IP over every route; 0 disables the ceiling.
    #[arg(long, env = "FOOTFALL_IP_RATE_PER_SECOND", default_value_t = 50)]
    pub ip_rate_per_second: u32,
    /// Burst size of the per-IP ceiling.
    #[arg(long, env = "FOOTFALL_IP_BURST", default_value_t = 100)]
    pub ip_burst: u32,
    /// Most distinct keys each of the two per-page rate limiters keeps in memory (the per-IP
    /// ceiling is purged, not capped).
    #[arg(long, env = "FOOTFALL_LIMITER_MAX_KEYS", default_value_t = 1_000_000)]
    pub limiter_max_keys: usize,
    /// Redis shared by all nodes for the per-(client IP, page URL) limits, e.g.
    /// `redis://host:6379`: each pair gets its quota once per cluster, not once per node. While
    /// Redis cannot be reached, each node applies the limits on its own.
    #[arg(long, env = "FOOTFALL_REDIS", hide_env_values = true)]
    pub redis: Option<String>,
    /// Log line format.
    #[arg(long, env = "FOOTFALL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Requests queued for the writer before recording endpoints answer 503.
    #[arg(long, env = "FOOTFALL_WRITE_QUEUE", default_value_t = 16_384)]
    pub write_queue: usize,
    /// Most visits written in one group-commit transaction.
    #[arg(long, env = "FOOTFALL_MAX_BATCH", default_value_t = 4_096)]
    pub max_batch: usize,
    /// Seconds a request may take before it is answered 408.
    #[arg(long, env = "FOOTFALL_REQUEST_TIMEOUT", default_value_t = 30)]
    pub request_timeout: u64,
    /// Read-only database connections for queries and exports.
    #[arg(long, env = "FOOTFALL_READ_POOL", default_value_t = 8)]
    pub read_pool: u32,
    /// Threads that serve HTTP. Default: one per CPU core less one (at least one), since the
    /// writer and roll-up threads need about a core between them under full recording load.
    #[arg(long, env = "FOOTFALL_HTTP_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub http_workers: Option<u16>,
    #[command(flatten)]
    pub bus: BusArgs,
    #[command(flatten)]
    pub privacy: crate::privacy::PrivacyArgs,
    /// Delete visits older than N days, with their share of every figure, as
    /// `DELETE /cleanup?days=N` does: checked at start and every hour.
    #[arg(long, env = "FOOTFALL_RETENTION_DAYS", value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub retention_days: Option<u32>,
    /// When set, analytics reads (`/summary`, `/stats`, `/visits/{id}`, `/breakdown`,
    /// `/domains/{period}`, `/sources`, `/devices`, `/hourly`) need
    /// `Authorization: Bearer <token>` (the admin token works too). Unset, they are public.
    #[arg(long, env = "FOOTFALL_ANALYTICS_TOKEN", hide_env_values = true)]
    pub analytics_token: Option<String>,
}

/// Event-bus ingest (API.md §11): visits taken from NATS JetStream or ZeroMQ beside HTTP.
#[derive(Clone, Args)]
pub struct BusArgs {
    /// NATS server to take visits from through a durable JetStream consumer, e.g.
    /// `nats://127.0.0.1:4222` (needs --nats-subject). A message is acknowledged once its visit
    /// is committed.
    #[arg(
        long,
        env = "FOOTFALL_NATS",
        requires = "nats_subject",
        hide_env_values = true
    )]
    pub nats: Option<String>,
    /// Subject the consumer takes, e.g. `visits.>`; a JetStream stream must hold it.
    #[arg(long, env = "FOOTFALL_NATS_SUBJECT", requires = "nats")]
    pub nats_subject: Option<String>,
    /// Name of the durable consumer; nodes that share it share the work, each message counted
    /// once.
    #[arg(long, env = "FOOTFALL_NATS_DURABLE", default_value = "footfall")]
    pub nats_durable: String,
    /// Seconds JetStream waits for an acknowledgement before delivering a message again (set
    /// when footfall creates the consumer; an existing consumer keeps its own).
    #[arg(long, env = "FOOTFALL_NATS_ACK_WAIT", default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub nats_ack_wait: u64,
    /// ZeroMQ publisher to subscribe to, e.g. `tcp://127.0.0.1:5556`: at most once (events
    /// published while footfall is not connected are lost).
    #[arg(long, env = "FOOTFALL_ZMQ_SUB")]
    pub zmq_sub: Option<String>,
    /// Topic prefix of the ZeroMQ subscription (default: every message).
    #[arg(long, env = "FOOTFALL_ZMQ_TOPIC", default_value = "")]
    pub zmq_topic: String,
    /// Hours a bus event's id is remembered, so that a redelivered or republished event is not
    /// counted twice (see docs/OPERATIONS.md for why 24 is enough).
    #[arg(long, env = "FOOTFALL_BUS_DEDUP_HOURS", default_value_t = 24,
        value_parser = clap::value_parser!(u32).range(1..=8760))]
    pub bus_dedup_hours: u32,
}

/// Hand-written: a NATS URL may hold credentials.
impl fmt::Debug for BusArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusArgs")
            .field("nats", &self.nats.as_ref().map(|_| "<set>"))
            .field("nats_subject", &self.nats_subject)
            .field("nats_durable", &self.nats_durable)
            .field("nats_ack_wait", &self.nats_ack_wait)
            .field("zmq_sub", &self.zmq_sub)
            .field("zmq_topic", &self.zmq_topic)
            .field("bus_dedup_hours", &self.bus_dedup_hours)
            .finish()
    }
}

impl DbArgs {
    /// The store options these arguments give, with the serving sizes' defaults.
    pub fn store_options(&self) -> store::Options {
        store::Options {
            durability: self.durability,
            ..store::Options::default()
        }
    }
}

impl ServeArgs {
    /// The store options of `serve`: the database's, sized by the serving flags.
    pub fn store_options(&self) -> store::Options {
        store::Options {
            durability: self.db.durability,
            write_queue: self.write_queue,
            max_batch: self.max_batch,
            read_pool: self.read_pool,
        }
    }

    /// The HTTP worker threads to start: `--http-workers`, or the default it describes.
    pub fn http_worker_threads(&self) -> usize {
        match self.http_workers {
            Some(n) => usize::from(n),
            None => std::thread::available_parallelism()
                .map_or(1, |cores| cores.get().saturating_sub(1))
                .max(1),
        }
    }
}

/// Hand-written so a database URL's password never reaches a log line through `{:?}`.
impl std::fmt::Debug for DbArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbArgs")
            .field("db", &without_password(&self.db.to_string_lossy()))
            .field("durability", &self.durability)
            .finish()
    }
}

/// `url` for a log line or a message: the password of its `user:password@` part and any
/// `password=` setting of its query replaced.
pub fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let rest = match rest[..authority_end].rfind('@') {
        Some(at) if rest[..at].contains(':') => {
            let user = rest[..at].split(':').next().unwrap_or_default();
            format!("{user}:<redacted>{}", &rest[at..])
        }
        _ => rest.to_owned(),
    };
    let Some((base, query)) = rest.split_once('?') else {
        return format!("{scheme}://{rest}");
    };
    let query: Vec<String> = query
        .split('&')
        .map(|piece| match piece.split_once('=') {
            Some(("password", _)) => "password=<redacted>".to_owned(),
            _ => piece.to_owned(),
        })
        .collect();
    format!("{scheme}://{base}?{}", query.join("&"))
}

/// Hand-written so the admin token can never reach a log line through `{:?}`.
impl fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeArgs")
            .field("bind", &self.bind)
            .field("db", &self.db)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("trusted_proxies", &self.trusted_proxies)
            .field("cors_origins", &self.cors_origins)
            .field("rate_limit_per_minute", &self.rate_limit_per_minute)
            .field(
                "bulk_rate_limit_per_minute",
                &self.bulk_rate_limit_per_minute,
            )
            .field("ip_rate_per_second", &self.ip_rate_per_second)
            .field("ip_burst", &self.ip_burst)
            .field("limiter_max_keys", &self.limiter_max_keys)
            // A Redis URL may hold a password.
            .field("redis", &self.redis.as_ref().map(|_| "<set>"))
            .field("log_format", &self.log_format)
            .field("write_queue", &self.write_queue)
            .field("max_batch", &self.max_batch)
            .field("request_timeout", &self.request_timeout)
            .field("read_pool", &self.read_pool)
            .field("http_workers", &self.http_worker_threads())
            .field("bus", &self.bus)
            .field("privacy", &self.privacy)
            .field("retention_days", &self.retention_days)
            .field(
                "analytics_token",
                &self.analytics_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl ServeArgs {
    /// Defaults with another database file: what tests and examples start from.
    pub fn for_db(db: impl Into<PathBuf>) -> Self {
        let mut args = Cli::parse_from(["footfall"]).serve;
        args.db.db = db.into();
        args
    }
}

#[derive(Debug, Clone, Args)]
pub struct CopyArgs {
    /// The database to copy from: an SQLite file or a PostgreSQL URL (read, not changed).
    #[arg(long)]
    pub from: PathBuf,
    /// The database to copy into (created when missing); what it holds already is kept.
    #[arg(long)]
    pub to: PathBuf,
    /// Durability of the SQLite side's commits (see `serve --durability`).
    #[arg(long, env = "FOOTFALL_DURABILITY", value_enum, default_value_t = Durability::Normal)]
    pub durability: Durability,
}

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// JSONL or JSON-array file of visits, or `-` for stdin.
    pub file: PathBuf,
    #[command(flatten)]
    pub db: DbArgs,
    /// How the records' addresses are stored, as `serve --ip-mode` (`truncated`: to /24 and
    /// /48; `hashed`: pseudonyms under today's salt). Records that already carry a pseudonym
    /// keep it.
    #[arg(long, env = "FOOTFALL_IP_MODE", value_enum, default_value_t = crate::privacy::IpMode::Full)]
    pub ip_mode: crate::privacy::IpMode,
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
    pub format: ExportFormat,
    /// First day to include (YYYY-MM-DD).
    #[arg(long)]
    pub start_date: Option<String>,
    /// Last day to include (YYYY-MM-DD).
    #[arg(long)]
    pub end_date: Option<String>,
    /// Only visits after this timestamp.
    #[arg(long)]
    pub since: Option<String>,
    /// START,END (dates or timestamps; START inclusive, END exclusive); overrides the others.
    #[arg(long)]
    pub range: Option<String>,
    /// Most visits to write.
    #[arg(long)]
    pub limit: Option<i64>,
    /// Visits to skip first.
    #[arg(long)]
    pub offset: Option<i64>,
}

#[derive(Debug, Clone, Args)]
pub struct CleanupArgs {
    /// Delete visits older than this many days (at least 1).
    #[arg(long)]
    pub days: i64,
    #[command(flatten)]
    pub db: DbArgs,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_args(flags: &[&str]) -> Result<ServeArgs, clap::Error> {
        let argv = ["footfall", "serve"].iter().chain(flags);
        match Cli::try_parse_from(argv)?.into_command() {
            Command::Serve(args) => Ok(*args),
            _ => unreachable!("parsed `serve`"),
        }
    }

    #[test]
    fn a_database_password_never_reaches_the_debug_line() {
        let args = serve_args(&[
            "--db",
            "postgres://me:s3cr%40t@db.example:5432/f?sslmode=require",
        ])
        .unwrap();
        let line = format!("{args:?}");
        assert!(!line.contains("s3cr"), "{line}");
        assert!(
            line.contains("postgres://me:<redacted>@db.example:5432/f?sslmode=require"),
            "{line}"
        );
        for plain in [
            "data/visits.db",
            "postgres://me@db.example/f",
            "postgres://db/f?a=b@c:d",
        ] {
            assert_eq!(without_password(plain), plain);
        }
        assert_eq!(
            without_password("postgres://me@db/f?sslmode=require&password=s3cr"),
            "postgres://me@db/f?sslmode=require&password=<redacted>"
        );
    }

    #[test]
    fn http_workers_default_to_the_cores_less_one_and_can_be_set() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let default = serve_args(&[]).unwrap().http_worker_threads();
        assert_eq!(default, cores.saturating_sub(1).max(1));
        let three = serve_args(&["--http-workers", "3"]).unwrap();
        assert_eq!(three.http_worker_threads(), 3);
        assert!(serve_args(&["--http-workers", "0"]).is_err());
    }

    #[test]
    fn nats_needs_a_subject_and_its_url_is_never_printed() {
        assert!(serve_args(&["--nats", "nats://u:p@h:4222"]).is_err());
        assert!(serve_args(&["--nats-subject", "visits.>"]).is_err());
        let args =
            serve_args(&["--nats", "nats://u:secret@h:4222", "--nats-subject", "v.>"]).unwrap();
        assert_eq!(args.bus.nats_durable, "footfall");
        assert_eq!(args.bus.nats_ack_wait, 30);
        assert_eq!(args.bus.bus_dedup_hours, 24);
        assert!(!format!("{args:?}").contains("secret"));
    }
}
