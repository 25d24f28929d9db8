//! The HTTP listener: accepts connections, upgrades requests on the three
//! WebSocket paths, and answers 404 everywhere else.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_tungstenite::tungstenite::protocol::WebSocketConfig;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::bridge::Shared;
use crate::websocket::request::Endpoint;
use crate::websocket::session;

/// Bytes a socket reads at a time; see `route`.
const READ_BUFFER: usize = 256;

/// Accepts connections until shutdown.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
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

        let shared = shared.clone();
        let tracker = shared.tasks.clone();
        tracker.spawn(async move {
            let service = service_fn(|request| route(request, shared.clone()));
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(shared.config.upgrade_timeout)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(error) = connection.await {
                debug!(%peer, %error, "http connection ended with an error");
            }
        });
    }
}

async fn route(
    mut request: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
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
