//! The agent's stream to the bridge: connect, say hello, replay the whole
//! inventory, then forward what each poll produces. When the bridge goes
//! away, start over after a capped exponential backoff; the replay makes
//! a restarted bridge whole again, and its idempotent upserts keep a
//! bridge that never left from seeing noise.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::agent::AgentConfig;
use crate::agent::backoff::Backoff;
use crate::agent::inventory::{Inventory, lock};
use crate::grpc::client;
use crate::grpc::proto::agent_message::Body;
use crate::grpc::proto::agent_reply::Outcome;
use crate::grpc::proto::{self, AgentMessage};

/// Messages buffered towards tonic on one stream.
const STREAM_BUFFER: usize = 256;

/// How long a stopping agent waits for the bridge to close its side.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How a stream ended.
enum Ended {
    /// The agent is stopping.
    Stopped,
    /// The bridge closed the stream or the connection broke.
    Broke(String),
}

/// Keeps a stream to the bridge open until `stop` is cancelled. `queue`
/// carries what the polls produce; `inventory` is replayed on every new
/// stream.
pub async fn run(
    config: AgentConfig,
    inventory: Arc<Mutex<Inventory>>,
    mut queue: mpsc::Receiver<Body>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(config.retry_initial, config.retry_max);
    loop {
        let delay = match open(&config).await {
            Ok(stream) => {
                backoff.succeeded();
                info!(
                    bridge = config.bridge,
                    agent = config.agent_id,
                    "agent stream opened"
                );
                let ended = forward(&config, stream, &inventory, &mut queue, &stop).await;
                let Ended::Broke(reason) = ended else {
                    info!(
                        bridge = config.bridge,
                        "agent stream closed: agent stopping"
                    );
                    return;
                };
                let delay = backoff.failed();
                info!(bridge = config.bridge, reason, retry_in = ?delay, "agent stream closed");
                delay
            }
            Err(reason) => {
                let delay = backoff.failed();
                warn!(bridge = config.bridge, reason, retry_in = ?delay, "bridge unreachable");
                delay
            }
        };

        // While waiting, what the polls queue is dropped: the replay on the
        // next stream supersedes it.
        // LIMITATION: lifecycle events that happen while no stream is open
        // are lost; the frontends see the outcome in the state instead.
        let resume = tokio::time::sleep(delay);
        tokio::pin!(resume);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = &mut resume => break,
                body = queue.recv() => if body.is_none() {
                    return;
                },
            }
        }
    }
}

/// An open stream: where messages go and the task reading replies.
struct Stream {
    sender: mpsc::Sender<AgentMessage>,
    replies: JoinHandle<String>,
}

async fn open(config: &AgentConfig) -> Result<Stream, String> {
    // The error of a failed connect never contains the token: it is only
    // ever inside the metadata value.
    let mut client = client::connect_agent(&config.bridge, &config.agent_token)
        .await
        .map_err(|error| format!("cannot connect: {}", with_causes(error.as_ref())))?;
    let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
    let replies = client
        .stream(ReceiverStream::new(receiver))
        .await
        .map_err(|status| format!("stream refused: {}", status.message()))?
        .into_inner();
    Ok(Stream {
        sender,
        replies: tokio::spawn(read_replies(replies)),
    })
}

/// Reads replies so the bridge never waits on the agent, warns about
/// rejected messages, and returns why the stream ended.
async fn read_replies(mut replies: tonic::Streaming<proto::AgentReply>) -> String {
    loop {
        match replies.message().await {
            Ok(Some(reply)) => {
                if let Some(Outcome::Rejected(rejected)) = reply.outcome {
                    warn!(
                        seq = reply.seq,
                        field = rejected.field,
                        reason = rejected.reason,
                        "bridge rejected a message"
                    );
                }
            }
            Ok(None) => return "the bridge ended the stream".to_owned(),
            Err(status) => return format!("{:?}: {}", status.code(), status.message()),
        }
    }
}

async fn forward(
    config: &AgentConfig,
    mut stream: Stream,
    inventory: &Mutex<Inventory>,
    queue: &mut mpsc::Receiver<Body>,
    stop: &CancellationToken,
) -> Ended {
    // Hello, then the whole inventory. What queued up while no stream was
    // open is older than the replay, so it is dropped under the same lock
    // that the polls take to queue: nothing interleaves.
    let mut backlog: VecDeque<Body> = {
        let inventory = inventory
            .lock()
            .expect("the inventory lock is never poisoned");
        while queue.try_recv().is_ok() {}
        inventory.replay().into()
    };
    backlog.push_front(Body::Hello(proto::Hello {
        agent_id: config.agent_id.clone(),
    }));

    let mut seq = 0u64;
    let ended = loop {
        let body = match backlog.pop_front() {
            Some(body) => body,
            None => tokio::select! {
                _ = stop.cancelled() => break Ended::Stopped,
                reason = &mut stream.replies => break Ended::Broke(ended_reason(reason)),
                body = queue.recv() => match body {
                    Some(body) => body,
                    None => break Ended::Stopped,
                },
            },
        };
        seq += 1;
        let removed = match &body {
            Body::Remove(machine) => Some(machine.uuid.clone()),
            _ => None,
        };
        let message = AgentMessage {
            seq,
            body: Some(body),
        };
        tokio::select! {
            _ = stop.cancelled() => break Ended::Stopped,
            reason = &mut stream.replies => break Ended::Broke(ended_reason(reason)),
            sent = stream.sender.send(message) => {
                if sent.is_err() {
                    break Ended::Broke("the stream closed".to_owned());
                }
                if let Some(uuid) = removed {
                    lock(inventory).removal_sent(&uuid);
                }
            }
        }
    };

    // Closing our side ends the stream cleanly; the bridge then ends its
    // side, which the reply task sees.
    drop(stream.sender);
    if let Ended::Stopped = ended {
        let _ = tokio::time::timeout(CLOSE_GRACE, &mut stream.replies).await;
    }
    stream.replies.abort();
    ended
}

/// An error and what caused it, on one line: tonic's own message alone
/// ("transport error") does not say what an operator should fix.
fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

fn ended_reason(joined: Result<String, tokio::task::JoinError>) -> String {
    joined.unwrap_or_else(|error| format!("reply reader failed: {error}"))
}
