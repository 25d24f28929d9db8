//! One WebSocket from upgrade to close: admission, then a loop that writes
//! what the fan-out queued, answers pings, honours a client close, and
//! closes the socket when the registry, the token's expiry or shutdown says
//! so.

use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper_tungstenite::{HyperWebsocket, HyperWebsocketStream};
use tokio::time::{Instant, Sleep, sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use crate::bridge::Shared;
use crate::close::Close;
use crate::outbox::{Batch, Outbox};
use crate::registry::Admission;
use crate::telemetry;
use crate::websocket::request::{self, Endpoint};

/// How long the bridge keeps trying to deliver its close frame (behind
/// whatever the client has not read yet) before it drops the connection.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How a session ended.
enum Ending {
    /// The bridge closed it with this code.
    Closed(Close),
    /// The client closed it, with the code it gave.
    ByClient(Option<u16>),
    /// The connection broke.
    Lost,
}

pub async fn run(
    upgrade: HyperWebsocket,
    endpoint: Endpoint,
    query: Option<String>,
    shared: Arc<Shared>,
) {
    let mut ws = match upgrade.await {
        Ok(ws) => ws,
        Err(error) => {
            debug!(scope = endpoint.name(), %error, "upgrade failed");
            return;
        }
    };

    let admitted = admit(&shared, endpoint, query.as_deref());
    // The token is not needed again; do not keep it for the session's life.
    drop(query);
    let (admission, expires_at) = match admitted {
        Ok(admitted) => admitted,
        Err((reason, account)) => {
            info!(
                scope = endpoint.name(),
                account = account.map(|a| a.to_string()),
                code = reason.code(),
                reason = reason.reason(),
                "connection refused"
            );
            shared.metrics.connection_refused(endpoint, reason);
            send_close(&mut ws, reason).await;
            return;
        }
    };
    let account = admission.principal.account;
    info!(scope = endpoint.name(), %account, connection = admission.id, "connection opened");
    shared.metrics.connection_opened(endpoint);

    // A bug in the loop must not leave the connection in the fan-out or the
    // client without a close code: it ends the session with 1011.
    let pumped = AssertUnwindSafe(pump(&mut ws, &admission.outbox, expires_at, &shared))
        .catch_unwind()
        .await;
    shared.registry.release(admission.id);
    let ending = match pumped {
        Ok(ending) => ending,
        Err(_) => {
            error!(scope = endpoint.name(), %account, connection = admission.id, "session failed");
            close(&mut ws, Close::Internal).await
        }
    };
    shared.metrics.connection_closed(endpoint, ending.metric());

    match ending {
        Ending::Closed(reason) => info!(
            scope = endpoint.name(),
            %account,
            connection = admission.id,
            code = reason.code(),
            reason = reason.reason(),
            "connection closed"
        ),
        Ending::ByClient(code) => info!(
            scope = endpoint.name(),
            %account,
            connection = admission.id,
            code,
            "connection closed by client"
        ),
        Ending::Lost => info!(
            scope = endpoint.name(),
            %account,
            connection = admission.id,
            "connection lost"
        ),
    }
}

impl Ending {
    fn metric(&self) -> telemetry::Ending {
        match self {
            Ending::Closed(reason) => telemetry::Ending::Bridge(*reason),
            Ending::ByClient(_) => telemetry::Ending::Client,
            Ending::Lost => telemetry::Ending::Lost,
        }
    }
}

/// Parses the request, verifies the token and joins the fan-out. On refusal,
/// returns the close to send and, when the token named one, the account.
fn admit(
    shared: &Shared,
    endpoint: Endpoint,
    query: Option<&str>,
) -> Result<(Admission, Instant), (Close, Option<Uuid>)> {
    let request = request::parse(endpoint, query).map_err(|reason| (reason, None))?;
    let token = shared
        .verifier
        .verify(&request.token)
        .map_err(|reason| (reason, None))?;
    let expires_at = Instant::now() + token.remaining();
    let admission = shared
        .registry
        .admit(&token, request.scope)
        .map_err(|reason| (reason, Some(token.account)))?;
    Ok((admission, expires_at))
}

/// What woke the session loop.
enum Wake {
    Close(Close),
    Frames(Vec<tokio_tungstenite::tungstenite::Utf8Bytes>),
    Incoming(Option<Result<Message, WsError>>),
}

async fn pump(
    ws: &mut HyperWebsocketStream,
    outbox: &Outbox,
    expires_at: Instant,
    shared: &Shared,
) -> Ending {
    let expiry = sleep_until(expires_at);
    tokio::pin!(expiry);
    // A child token, waited on by one future for the whole session: every
    // select below polls it, and polling the bridge-wide token locks state
    // shared by every socket, at every tick.
    let token = shared.shutdown.child_token();
    let shutdown = token.cancelled();
    tokio::pin!(shutdown);

    loop {
        let wake = tokio::select! {
            biased;
            _ = &mut shutdown => Wake::Close(Close::ShuttingDown),
            _ = &mut expiry => Wake::Close(Close::TokenExpired),
            batch = outbox.next_batch() => match batch {
                Batch::Close(reason) => Wake::Close(reason),
                Batch::Frames(frames) => Wake::Frames(frames),
            },
            incoming = ws.next() => Wake::Incoming(incoming),
        };

        match wake {
            Wake::Close(reason) => return close(ws, reason).await,
            Wake::Frames(frames) => {
                // A client that stops reading blocks this write; a close
                // request, shutdown or expiry must still get through.
                let write = async {
                    for frame in frames {
                        shared.metrics.frame_sent(frame.as_str());
                        ws.feed(Message::Text(frame)).await?;
                    }
                    ws.flush().await
                };
                match interruptible(write, outbox, &token, expiry.as_mut()).await {
                    Written::Done => {}
                    Written::Lost => return Ending::Lost,
                    Written::Interrupted(reason) => return close(ws, reason).await,
                }
            }
            Wake::Incoming(incoming) => match incoming {
                None => return Ending::Lost,
                // LIMITATION: a close frame with an invalid code is answered
                // by tungstenite itself with 1002, not the contract's 1008.
                Some(Ok(Message::Close(frame))) => {
                    // tungstenite queued the reply; send it.
                    let _ = timeout(CLOSE_GRACE, ws.flush()).await;
                    return Ending::ByClient(frame.map(|frame| u16::from(frame.code)));
                }
                Some(Ok(Message::Ping(_))) => {
                    // tungstenite queued the pong, keeping only the latest,
                    // so a ping flood holds no memory. A flooder that reads
                    // nothing blocks this flush as it would a write.
                    match interruptible(ws.flush(), outbox, &token, expiry.as_mut()).await {
                        Written::Done => {}
                        Written::Lost => return Ending::Lost,
                        Written::Interrupted(reason) => return close(ws, reason).await,
                    }
                }
                // Clients carry no commands in this version.
                Some(Ok(_)) => {}
                // A client that vanished without a close frame (its process
                // died, say) broke no rule: the connection is just lost.
                Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => {
                    return Ending::Lost;
                }
                Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. })))
                | Some(Err(WsError::Protocol(_)))
                | Some(Err(WsError::Utf8(_))) => {
                    warn!("client frame too large or malformed");
                    return close(ws, Close::BadClientFrame).await;
                }
                Some(Err(_)) => return Ending::Lost,
            },
        }
    }
}

/// What became of a write to the client.
enum Written {
    Done,
    Lost,
    /// A close that may not wait for the write to finish.
    Interrupted(Close),
}

/// Runs `write` until it finishes, unless the registry closes the
/// connection, shutdown begins or the token expires first: a client that
/// stops reading blocks a write, and a close must still get through.
async fn interruptible(
    write: impl Future<Output = Result<(), WsError>>,
    outbox: &Outbox,
    shutdown: &CancellationToken,
    expiry: Pin<&mut Sleep>,
) -> Written {
    tokio::select! {
        biased;
        result = write => match result {
            Ok(()) => Written::Done,
            Err(_) => Written::Lost,
        },
        _ = outbox.closing() => match outbox.close_reason() {
            Some(reason) => Written::Interrupted(reason),
            None => Written::Done,
        },
        _ = shutdown.cancelled() => Written::Interrupted(Close::ShuttingDown),
        _ = expiry => Written::Interrupted(Close::TokenExpired),
    }
}

async fn close(ws: &mut HyperWebsocketStream, reason: Close) -> Ending {
    send_close(ws, reason).await;
    Ending::Closed(reason)
}

/// Sends a close frame, waits briefly for the client's reply, and gives up
/// on a client that reads nothing.
async fn send_close(ws: &mut HyperWebsocketStream, reason: Close) {
    let frame = CloseFrame {
        code: CloseCode::from(reason.code()),
        reason: reason.reason().into(),
    };
    if timeout(CLOSE_GRACE, ws.close(Some(frame))).await.is_err() {
        return;
    }
    let _ = timeout(CLOSE_GRACE, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}
