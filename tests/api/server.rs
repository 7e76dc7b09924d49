//! The connection loop (`footfall::http::server`): header timeout, half-close, graceful shutdown.

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// A server on an ephemeral port with `/slow` (answers after 300 ms) and `/peer` (the
/// client address the router saw); stops when the returned sender is sent to or dropped.
async fn start(
    header_timeout: Duration,
) -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let router = Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "done"
            }),
        )
        .route(
            "/peer",
            get(
                |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<
                    std::net::SocketAddr,
                >| async move { peer.ip().to_string() },
            ),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(footfall::http::server::serve(
        listener,
        router,
        header_timeout,
        async {
            let _ = stopped.await;
        },
    ));
    (addr, stop, server)
}

/// A connection to `addr` that has sent `request`.
async fn sent(addr: &str, request: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    stream
}

async fn read_all(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_client_trickling_headers_is_cut_off_after_the_header_timeout() {
    let (addr, _stop, _server) = start(Duration::from_millis(300)).await;
    let mut stream = sent(&addr, b"GET /peer HTTP/1.1\r\nHost: x\r\n").await;
    let started = Instant::now();
    let answer = read_all(&mut stream).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "closed after {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(4),
        "still open after {waited:?}"
    );
    assert!(!answer.contains("200 OK"), "{answer}");
}

/// The header timeout runs from the end of one answer on a kept-alive connection too: one
/// that sends no next request within it is closed (an idle timeout), and not before.
#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_header_timeout() {
    let (addr, _stop, _server) = start(Duration::from_millis(300)).await;
    let mut stream = sent(&addr, b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = vec![0; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"));
    let started = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(4), stream.read(&mut buf))
        .await
        .expect("closed within the timeout and a margin")
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(n, 0, "closed, not answered");
    assert!(
        waited >= Duration::from_millis(250),
        "closed after {waited:?}"
    );
}

#[tokio::test]
async fn a_request_sent_before_the_client_half_closes_is_still_answered() {
    let (addr, _stop, _server) = start(Duration::from_secs(5)).await;
    let request = b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut stream = sent(&addr, request).await;
    stream.shutdown().await.unwrap(); // the client's side: no more requests
    let answer = read_all(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.ends_with("done"), "{answer}");
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_and_stops_accepting() {
    let (addr, stop, server) = start(Duration::from_secs(5)).await;
    let request = b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut peer = sent(&addr, request).await;
    assert!(
        read_all(&mut peer).await.ends_with("127.0.0.1"),
        "ConnectInfo is set"
    );

    let mut slow = sent(&addr, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.send(()).unwrap();
    let answer = read_all(&mut slow).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returns once the last connection closed")
        .unwrap();
    assert!(
        TcpStream::connect(&addr).await.is_err(),
        "no longer accepting"
    );
}

crate::on_postgres!(
    a_client_trickling_headers_is_cut_off_after_the_header_timeout,
    an_idle_kept_alive_connection_is_closed_after_the_header_timeout,
    a_request_sent_before_the_client_half_closes_is_still_answered,
    shutdown_finishes_in_flight_requests_and_stops_accepting,
);
