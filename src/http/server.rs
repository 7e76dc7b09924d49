//! The HTTP/1.1 connection loop: accepts connections, serves each with hyper, and shuts down
//! gracefully (stop accepting, let in-flight requests finish, close idle connections).
//!
//! `axum::serve` does the same but exposes none of hyper's connection options, and three matter:
//!
//! - **Half-close allowed.** Otherwise, while a request waits for its commit, hyper reads the
//!   socket once more to notice a client that went away; the request still holds its headers,
//!   which share hyper's read buffer, so that read allocates a fresh 8 KiB buffer. One `recv`
//!   and one 8 KiB allocation a request for nothing: a recording is committed whether or not
//!   its client is still there to hear so.
//! - **Answers flattened** into one buffer before they are written (`writev(false)`; measured
//!   at its call).
//! - **A header read timeout** ([`HEADER_READ_TIMEOUT`]): a client that opens connections and
//!   trickles header bytes (slowloris) is cut off instead of holding them forever. hyper runs
//!   it from the end of the previous answer, so it is also the idle timeout of a kept-alive
//!   connection (`axum::serve` kept those open for good).

use std::future::Future;
use std::io;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::Service;

/// How long a client may take to send a request's headers, counted from the connection's start
/// or its previous answer: also how long a kept-alive connection may sit idle.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `router` on `listener` until `shutdown` completes; then stops accepting and returns
/// once every connection has finished its in-flight request and closed. A connection that
/// takes longer than `header_timeout` to send a request's headers (idle ones included) is
/// closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = http1::Builder::new();
    builder
        .half_close(true)
        // Head and body copied into one buffer and sent with one `write`, instead of a
        // `writev` of the two: footfall's answers are a few hundred bytes, and two alternating
        // A/B runs of the ingest load gave +3.7% and +8.4% requests/s (10 of 12 rounds ahead).
        .writev(false)
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let connections = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    pause_after_accept_error(err).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            // `Router` is always ready and cheap to clone (one `Arc`).
            router.clone().call(request.map(Body::new))
        });
        let connection = connections.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                // A client that vanished or sent garbage: its business, not an operator's.
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
}

/// After a failed `accept`: nothing for a connection the client already dropped; otherwise
/// (e.g. out of file descriptors) an error line and a second's pause, so the loop does not
/// spin while the condition lasts — hyper 0.14's and axum's behaviour.
async fn pause_after_accept_error(err: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        err.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %err, "accept failed; retrying in a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
