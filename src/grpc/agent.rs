//! The agent stream: a hypervisor agent identifies itself, then reports
//! machines; each message is answered by its sequence number, and a
//! rejected one leaves the stream open.
//!
//! Two tasks serve a stream. The reader applies each message to the
//! registry as it arrives and queues its reply; the replier sends the
//! replies in order, each only once the store holds what its message
//! changed. The reader never waits for the disk, so a burst of properties
//! reaches the store as one batch instead of one commit per message.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{error, info, warn};

use crate::bridge::Shared;
use crate::grpc::proto::agent_message::Body;
use crate::grpc::proto::agent_reply::Outcome;
use crate::grpc::proto::{self, AgentMessage, AgentReply};
use crate::grpc::validate::{self, FieldError};
use crate::registry::{StreamId, UnknownMachine};
use crate::store::Durable;

/// Replies buffered per stream before the bridge stops reading from an
/// agent that does not read its replies; also how many replies may wait
/// for the store before the bridge stops reading.
const REPLY_BUFFER: usize = 256;

pub struct AgentStreams {
    shared: Arc<Shared>,
    /// One permit per open agent stream, held by the stream's reader until
    /// it ends; when none is left, a new stream is refused.
    slots: Arc<Semaphore>,
}

impl AgentStreams {
    pub fn new(shared: Arc<Shared>) -> Self {
        // Any larger limit is no limit at all; tokio would panic on it.
        let limit = shared.config.max_agent_streams.min(Semaphore::MAX_PERMITS);
        let slots = Arc::new(Semaphore::new(limit));
        AgentStreams { shared, slots }
    }
}

#[tonic::async_trait]
impl proto::agent_service_server::AgentService for AgentStreams {
    type StreamStream = ReceiverStream<Result<AgentReply, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            let limit = self.shared.config.max_agent_streams;
            warn!(limit, "agent stream refused: limit reached");
            return Err(Status::resource_exhausted(format!(
                "the bridge already serves its limit of {limit} agent streams; retry later"
            )));
        };
        let inbound = request.into_inner();
        let (replies, outbound) = mpsc::channel(REPLY_BUFFER);
        let shared = self.shared.clone();
        self.shared
            .tasks
            .spawn(serve(inbound, replies, shared, slot));
        Ok(Response::new(ReceiverStream::new(outbound)))
    }
}

/// Why an agent message was rejected, in a few words fit for a metric
/// label; the reply itself names the field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// A field failed validation, or the stream said hello twice.
    InvalidArgument,
    /// The stream sent something before hello.
    NotIdentified,
    /// Live data or an event for a machine the bridge does not know.
    UnknownMachine,
}

impl Rejection {
    pub const ALL: [Rejection; 3] = [
        Rejection::InvalidArgument,
        Rejection::NotIdentified,
        Rejection::UnknownMachine,
    ];

    /// The position of this reason in [`Rejection::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn label(self) -> &'static str {
        match self {
            Rejection::InvalidArgument => "invalid_argument",
            Rejection::NotIdentified => "not_identified",
            Rejection::UnknownMachine => "unknown_machine",
        }
    }
}

/// A rejected message: the reason to count and the field to name.
struct Rejected {
    reason: Rejection,
    error: FieldError,
}

impl From<FieldError> for Rejected {
    fn from(error: FieldError) -> Self {
        Rejected {
            reason: Rejection::InvalidArgument,
            error,
        }
    }
}

/// The agent behind a stream, once it said hello.
struct Identity {
    stream: StreamId,
    agent: String,
}

type Replies = mpsc::Sender<Result<AgentReply, Status>>;

/// A reply that may go out once `durable` resolves.
struct Pending {
    reply: AgentReply,
    durable: Durable,
}

/// Reads one agent stream until it ends; `_slot` counts it as open.
async fn serve(
    mut inbound: Streaming<AgentMessage>,
    replies: Replies,
    shared: Arc<Shared>,
    _slot: OwnedSemaphorePermit,
) {
    let (pending, ordered) = mpsc::channel(REPLY_BUFFER);
    shared.tasks.spawn(reply_in_order(
        ordered,
        replies,
        shared.shutdown.child_token(),
    ));

    let mut identity = None;
    // A child token, waited on by one future for the whole stream: polling
    // the bridge-wide token locks state it shares with every socket and
    // stream, and a select polls it for each message an agent sends.
    let token = shared.shutdown.child_token();
    let shutdown = token.cancelled();
    tokio::pin!(shutdown);
    loop {
        let message = tokio::select! {
            _ = &mut shutdown => break,
            next = inbound.message() => match next {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(status) => {
                    warn!(agent = agent_name(&identity), code = ?status.code(), "agent stream broke");
                    // A message too large or undecodable ends the stream;
                    // the agent learns why after the replies before it.
                    let _ = pending.try_send(Err(super::oversized_is_exhaustion(status)));
                    break;
                }
            },
        };

        let answered = answer(&shared, &mut identity, message);
        let queued = tokio::select! {
            _ = &mut shutdown => false,
            queued = pending.send(Ok(answered)) => queued.is_ok(),
        };
        if !queued {
            break;
        }
    }

    if let Some(identity) = identity {
        shared.registry.close_stream(identity.stream);
        shared.metrics.agent_stream_closed();
        info!(
            agent = identity.agent,
            stream = identity.stream,
            "agent stream closed"
        );
    }
}

/// Sends each reply once what its message changed is stored, in the order
/// the messages came, then the status the stream broke with, if any. A
/// store failure ends the stream: the agent cannot be
/// told its changes are kept, and reconnecting is how it retries.
async fn reply_in_order(
    mut ordered: mpsc::Receiver<Result<Pending, Status>>,
    replies: Replies,
    shutdown: CancellationToken,
) {
    while let Some(next) = ordered.recv().await {
        let Pending { reply, durable } = match next {
            Ok(pending) => pending,
            Err(status) => {
                let _ = replies.try_send(Err(status));
                return;
            }
        };
        if let Err(failure) = durable.wait().await {
            error!(seq = reply.seq, error = %failure, "agent change applied but not stored");
            let status = Status::unavailable(format!("changes are not being stored: {failure}"));
            let _ = replies.try_send(Err(status));
            return;
        }
        // A reply that fits the buffer still goes out during shutdown; one
        // that would wait for a stalled agent does not.
        let sent = tokio::select! {
            biased;
            sent = replies.send(Ok(reply)) => sent.is_ok(),
            _ = shutdown.cancelled() => false,
        };
        if !sent {
            break;
        }
    }
    if shutdown.is_cancelled() {
        let _ = replies.try_send(Err(Status::unavailable("bridge shutting down")));
    }
}

fn agent_name(identity: &Option<Identity>) -> &str {
    identity
        .as_ref()
        .map_or("-", |identity| identity.agent.as_str())
}

fn answer(shared: &Shared, identity: &mut Option<Identity>, message: AgentMessage) -> Pending {
    let seq = message.seq;
    let (outcome, durable) = match apply(shared, identity, message.body) {
        Ok(durable) => {
            shared.metrics.agent_message_accepted();
            (Outcome::Accepted(proto::Accepted {}), durable)
        }
        Err(Rejected { reason, error }) => {
            shared.metrics.agent_message_rejected(reason);
            warn!(
                agent = agent_name(identity),
                seq,
                field = error.field,
                reason = error.reason,
                "agent message rejected"
            );
            let rejected = Outcome::Rejected(proto::Rejected {
                field: error.field,
                reason: error.reason,
            });
            (rejected, Durable::now())
        }
    };
    Pending {
        reply: AgentReply {
            seq,
            outcome: Some(outcome),
        },
        durable,
    }
}

fn unknown(field: &'static str) -> impl Fn(UnknownMachine) -> Rejected {
    move |_| Rejected {
        reason: Rejection::UnknownMachine,
        error: FieldError::new(field, "no such machine; report its properties first"),
    }
}

/// Applies one message to the registry. What it returns resolves once the
/// store holds the change; only properties and removals are stored.
fn apply(
    shared: &Shared,
    identity: &mut Option<Identity>,
    body: Option<Body>,
) -> Result<Durable, Rejected> {
    // The codec leaves the body out of a message it could not read.
    let body = body.ok_or_else(|| {
        FieldError::new(
            "body",
            "missing, or not readable protobuf (a string that is not UTF-8, say)",
        )
    })?;
    let registry = &shared.registry;

    let stream = match (&body, identity.as_ref()) {
        (Body::Hello(_), Some(known)) => {
            return Err(FieldError::new(
                "hello",
                format!("stream already identified as {}", known.agent),
            )
            .into());
        }
        (Body::Hello(hello), None) => {
            let agent = validate::agent_id(hello)?;
            let stream = registry.open_stream(agent.clone());
            info!(agent, stream, "agent stream opened");
            shared.metrics.agent_stream_opened();
            *identity = Some(Identity { stream, agent });
            return Ok(Durable::now());
        }
        (_, None) => {
            return Err(Rejected {
                reason: Rejection::NotIdentified,
                error: FieldError::new("hello", "send hello first"),
            });
        }
        (_, Some(known)) => known.stream,
    };

    match body {
        Body::Hello(_) => unreachable!("handled above"),
        Body::Properties(message) => {
            let (uuid, facts) = validate::agent_properties("properties", &message)?;
            // Unchanged properties wait too: an identical change may still
            // be on its way to disk.
            registry.upsert_agent_facts(uuid, facts);
            return Ok(registry.journal().barrier());
        }
        Body::State(message) => {
            let state = validate::state("state", &message)?;
            registry
                .report_state(stream, state)
                .map_err(unknown("state.uuid"))?;
        }
        Body::Disks(message) => {
            let disks = validate::disks("disks", &message)?;
            registry
                .report_disks(disks)
                .map_err(unknown("disks.uuid"))?;
        }
        Body::Connections(message) => {
            let connections = validate::connections("connections", &message)?;
            registry
                .report_connections(connections)
                .map_err(unknown("connections.uuid"))?;
        }
        Body::Event(message) => {
            let (uuid, kind, error) = validate::lifecycle("event", &message)?;
            registry
                .publish(uuid, kind, error.as_deref())
                .map_err(unknown("event.machine_uuid"))?;
        }
        Body::Remove(message) => {
            // The agent withdraws only what it reported: the platform's
            // half of the machine is not its to erase. Removing what is
            // already gone is not an error, so an agent may retry.
            let uuid = validate::uuid("remove.uuid", &message.uuid)?;
            registry.withdraw_agent_facts(uuid);
            return Ok(registry.journal().barrier());
        }
    }
    Ok(Durable::now())
}
