//! The accept loop: serves the router over HTTP/1.1 with hyper, with the connection-level limits
//! of [`HttpSettings`] and graceful shutdown.
//!
//! Why not `axum::serve`: it offers no header-read timeout, so a client that sends its headers one
//! byte a second (slowloris), or connects and says nothing, holds a connection, a task and a file
//! descriptor for ever; enough of them exhaust the descriptors and nobody else gets in. Here
//! hyper's `header_read_timeout` closes such connections. In hyper the same timer also runs while
//! a keep-alive connection waits for its next request, so it is the idle timeout too. Oversized
//! heads (`max_header_bytes`, `max_headers`) answer 431 from hyper before any handler runs. Slow
//! bodies are bounded where bodies are read ([`crate::extract::read_body`]), which answers 408.

use axum::{Router, extract::ConnectInfo, http::Request};
use faultline_shared::config::HttpSettings;
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use std::{future::Future, io, time::Duration};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// How long the loop pauses after an accept error that is not the client's (out of file
/// descriptors, out of memory): accepting again at once would spin on the same error, while the
/// header timeout frees descriptors within seconds.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The most a connection reads ahead into its buffer (hyper's default is ~400 kB). The buffer
/// grows to fit the reads a connection's bodies need and is kept for the connection's life: 256
/// connections that each once sent a 900 kB batch could keep up to ~100 MB of read buffers between
/// requests. A head must fit, so it is never below `max_header_bytes`.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, lets each open
/// connection finish the request in hand (idle ones close at once) for at most
/// `http.shutdown_grace`, and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    http: &HttpSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(http.header_timeout)
        // A limit on the head itself: `max_buf_size` alone is not one, since a head that arrives
        // in one large read is parsed whole before the buffer size is looked at.
        .max_header_size(http.max_header_bytes)
        .max_headers(http.max_headers)
        .max_buf_size(http.max_header_bytes.max(READ_BUFFER_BYTES));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    // Accept errors come in bursts (every accept fails while descriptors are exhausted): log the
    // first of a burst, count them all.
    let mut failing = false;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                if failing {
                    tracing::info!("Accepting connections again.");
                    failing = false;
                }
                accepted
            }
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                metrics::counter!("http_accept_errors_total").increment(1);
                if !failing {
                    tracing::warn!(error = %e, "Cannot accept connections; pausing and retrying.");
                    failing = true;
                }
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        // Answers are small: send them at once rather than waiting on Nagle.
        let _ = stream.set_nodelay(true);
        let service = router
            .clone()
            .map_request(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            });
        let conn =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let open = metrics::gauge!("http_open_connections");
            open.increment(1.0);
            if let Err(e) = conn.await {
                let kind = error_kind(&e);
                metrics::counter!("http_connection_errors_total", "kind" => kind).increment(1);
                tracing::debug!(%peer, kind, error = %e, "Connection closed with an error.");
            }
            open.decrement(1.0);
        });
    }
    drop(listener);
    if tokio::time::timeout(http.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = http.shutdown_grace.as_millis() as u64,
            "Connections still open after the shutdown grace period; closing them."
        );
    }
}

/// Errors about one connection that died before we took it; the listener itself is fine.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// A low-cardinality label for why a connection ended badly.
fn error_kind(e: &hyper::Error) -> &'static str {
    if e.is_timeout() {
        "header_timeout"
    } else if e.is_parse_too_large() {
        "head_too_large"
    } else if e.is_parse() || e.is_parse_status() {
        "parse"
    } else if e.is_incomplete_message() {
        "incomplete"
    } else {
        "other"
    }
}
