//! The HTTP listener: accepts connections, upgrades requests on the three
//! WebSocket paths, hands the operator's paths (`operator`) their answers,
//! and answers 404 everywhere else.
//!
//! Until its upgrade, a connection has one deadline (the upgrade timeout)
//! for everything it must do: the TLS handshake, when TLS is on, and the
//! whole request head. A client that stalls or trickles bytes is dropped
//! when it passes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_tungstenite::tungstenite::protocol::WebSocketConfig;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use crate::bridge::Shared;
use crate::operator;
use crate::websocket::request::Endpoint;
use crate::websocket::session;

/// The most a request head may take in memory (request line, query with
/// its token and machine list, headers). hyper's own bound is far larger.
const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// Bytes a socket reads at a time; see `route`.
const READ_BUFFER: usize = 256;

/// Accepts connections until shutdown, over TLS when `tls` is given.
// LIMITATION: a connection still sending its upgrade request is not counted
// against `--max-connections`; the upgrade deadline and the process's
// file-descriptor limit bound how many there are.
pub async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    // One wait on a child token for the listener's life, not a fresh one
    // on the bridge-wide token per accepted connection.
    let token = shared.shutdown.child_token();
    let shutdown = token.cancelled();
    tokio::pin!(shutdown);
    loop {
        // Exempt from Tokio's cooperative budget: in a reconnect storm the
        // listener would otherwise yield every 128 accepts behind thousands
        // of handshakes, the kernel's accept queue would overflow, and the
        // clients it dropped would wait a second for a SYN retransmission.
        // It still yields as soon as the queue is empty.
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = tokio::task::unconstrained(listener.accept()) => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Typically out of file descriptors; back off briefly
                    // rather than spin.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);

        let tracker = shared.tasks.clone();
        tracker.spawn(connection(stream, peer, tls.clone(), shared.clone()));
    }
}

/// One client connection up to its upgrade (or its one plain answer).
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
) {
    let deadline = Instant::now() + shared.config.upgrade_timeout;
    let Some(tls) = tls else {
        return http(stream, peer, deadline, shared).await;
    };
    let stream = match timeout_at(deadline, tls.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return debug!(%peer, %error, "TLS handshake failed"),
        Err(_) => return debug!(%peer, "TLS handshake timed out"),
    };
    http(stream, peer, deadline, shared).await
}

/// Serves HTTP/1.1 on `io` until the upgrade hands the socket over, the
/// request head misses `deadline`, or shutdown begins.
async fn http<I>(io: I, peer: SocketAddr, deadline: Instant, shared: Arc<Shared>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(|request| route(request, shared.clone()));
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(deadline.saturating_duration_since(Instant::now()))
        .max_buf_size(MAX_REQUEST_HEAD)
        .keep_alive(false)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    // Once upgraded the session runs in its own task; what is cut here
    // is only a connection still sending its request.
    let result = tokio::select! {
        result = connection => result,
        _ = shared.shutdown.cancelled() => return,
    };
    if let Err(error) = result {
        debug!(%peer, %error, "http connection ended with an error");
    }
}

async fn route(
    mut request: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some(response) = operator::answer(&request, &shared) {
        return Ok(response);
    }
    let Some(endpoint) = Endpoint::at(request.uri().path()) else {
        return Ok(plain(StatusCode::NOT_FOUND, "not found\n"));
    };
    if !hyper_tungstenite::is_upgrade_request(&request) {
        return Ok(plain(
            StatusCode::UPGRADE_REQUIRED,
            "WebSocket upgrade required\n",
        ));
    }

    // The bridge mostly writes. tungstenite zero-fills its whole read
    // buffer before every read attempt, and a session attempts one each time
    // it wakes, so a large one costs memory per socket and a memset per
    // tick; client frames are pings and closes, which fit in 256 bytes.
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(16 * 1024)
        .max_message_size(Some(shared.config.max_client_frame))
        .max_frame_size(Some(shared.config.max_client_frame));
    let (response, upgrade) = match hyper_tungstenite::upgrade(&mut request, Some(config)) {
        Ok(upgraded) => upgraded,
        Err(error) => {
            debug!(%error, "malformed upgrade request");
            return Ok(plain(
                StatusCode::BAD_REQUEST,
                "malformed WebSocket upgrade\n",
            ));
        }
    };

    let query = request.uri().query().map(str::to_owned);
    let tracker = shared.tasks.clone();
    tracker.spawn(session::run(upgrade, endpoint, query, shared));
    Ok(response)
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(text.as_bytes())))
        .expect("static response is valid")
}
