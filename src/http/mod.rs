//! The HTTP layer: state, router assembly, serving and shutdown.

pub mod client_ip;
pub mod error;
pub mod extract;
pub mod ratelimit;
mod retention;
pub mod routes;
pub mod server;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::bus::{self, Buses, Stop};
use crate::config::ServeArgs;
use crate::http::client_ip::TrustedProxies;
use crate::privacy::Privacy;
use crate::store::Store;
use ratelimit::{IpCeilingConfig, Limits};

/// Everything a handler may need: one `Arc`, so the per-request clone axum makes for every
/// `State` extractor and stateful layer is a single atomic increment.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The contents of [`AppState`].
pub struct Shared {
    /// Shared with the bus subscribers, which outlive no request but run beside them all.
    pub store: Arc<Store>,
    /// The bus subscribers: their states for `/health`, their tasks for shutdown.
    pub buses: Buses,
    /// The per-(IP, URL) limits: through Redis with `--redis`, the node's own otherwise.
    pub limits: Arc<Limits>,
    /// The per-IP ceiling over every route; `None` when disabled.
    pub ip_ceiling: Option<Arc<IpCeilingConfig>>,
    pub trusted: TrustedProxies,
    /// Never logged: `AppState` has no `Debug`.
    pub admin_token: Option<Arc<str>>,
    /// `--analytics-token`: when set, analytics reads need it (or the admin token).
    pub analytics_token: Option<Arc<str>>,
    /// Which visits are stored, and in what form (API.md §12).
    pub privacy: Arc<Privacy>,
    pub cors_origins: Arc<Vec<String>>,
    pub request_timeout_secs: u64,
    pub metrics: Option<PrometheusHandle>,
}

/// A built application, ready to serve.
pub struct App {
    pub state: AppState,
    pub router: Router,
    /// `--retention-days`.
    pub retention_days: Option<u32>,
}

impl App {
    /// Opens (or creates) the database, starts the store's workers and builds the router.
    pub fn build(args: &ServeArgs) -> anyhow::Result<Self> {
        // First: the store's workers take their metric handles from the recorder as they start.
        let metrics = crate::telemetry::prometheus();
        let store = Store::open(&args.db.db, &args.store_options())?;
        let state = AppState(Arc::new(Shared {
            store: Arc::new(store),
            buses: Buses::default(),
            limits: Arc::new(Limits::new(args)?),
            ip_ceiling: ratelimit::ip_ceiling_config(args.ip_rate_per_second, args.ip_burst),
            trusted: TrustedProxies::new(args.trusted_proxies.clone()),
            admin_token: args
                .admin_token
                .as_deref()
                .filter(|t| !t.is_empty())
                .map(Arc::from),
            analytics_token: args
                .analytics_token
                .as_deref()
                .filter(|t| !t.is_empty())
                .map(Arc::from),
            privacy: Arc::new(Privacy::new(args.privacy.clone())),
            cors_origins: Arc::new(args.cors_origins.clone()),
            request_timeout_secs: args.request_timeout,
            metrics,
        }));
        let router = routes::router(state.clone());
        Ok(Self {
            state,
            router,
            retention_days: args.retention_days,
        })
    }

    /// Starts the bus subscribers `args` asks for (none by default); they stop when `stop` is
    /// set, and [`Self::serve`] waits for them before it closes the store.
    pub fn start_buses(&self, args: &ServeArgs, stop: &Stop) {
        bus::start(
            &args.bus,
            &self.state.store,
            &self.state.privacy,
            &self.state.buses,
            stop,
        );
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight requests finish,
    /// waits for the bus subscribers (which watch the same signal) to commit and acknowledge
    /// what they hold, commits everything queued for the writer and returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        // Before the first request: says in the log whether the limits are shared.
        self.state.limits.connect().await;
        let purge = tokio::spawn(purge_limiters(self.state.clone()));
        let retention = self
            .retention_days
            .map(|days| tokio::spawn(retention::run(self.state.store.clone(), days)));
        let header_timeout = server::HEADER_READ_TIMEOUT;
        server::serve(listener, self.router, header_timeout, shutdown).await;
        purge.abort();
        if let Some(retention) = retention {
            retention.abort();
        }
        self.state.buses.join().await;
        self.state.store.close().await;
        Ok(())
    }
}

/// Drops rate-limiter keys whose quota has refilled, so their memory stays bounded.
///
/// On a blocking thread: a scan of two full key tables (2 × 1M keys) takes ~20 ms, a stall
/// no async worker should take (`examples/limiter_memory.rs` prints it).
async fn purge_limiters(state: AppState) {
    let mut tick = tokio::time::interval(ratelimit::PURGE_EVERY);
    loop {
        tick.tick().await;
        let state = state.clone();
        let _ = tokio::task::spawn_blocking(move || {
            state.limits.purge();
            // Not shrunk either, for the reason `ratelimit::RateLimits::purge` gives.
            if let Some(ceiling) = &state.ip_ceiling {
                ceiling.limiter().retain_recent();
            }
        })
        .await;
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed when this is called,
/// not when the future is first polled: call it before the port is bound, or a SIGTERM sent
/// as soon as the port answers could still find the default action and kill the process.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (mut term, mut interrupt) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let term = async {
                match term.as_mut() {
                    Some(s) => drop(s.recv().await),
                    None => std::future::pending::<()>().await,
                }
            };
            let interrupt = async {
                match interrupt.as_mut() {
                    Some(s) => drop(s.recv().await),
                    None => drop(tokio::signal::ctrl_c().await),
                }
            };
            tokio::select! {
                () = term => {},
                () = interrupt => {},
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested: finishing requests and committing queued visits");
    }
}
