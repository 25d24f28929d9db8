//! The agent stream: a hypervisor agent identifies itself, then reports
//! machines; each message is answered by its sequence number, and a
//! rejected one leaves the stream open.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use crate::bridge::Shared;
use crate::grpc::proto::agent_message::Body;
use crate::grpc::proto::agent_reply::Outcome;
use crate::grpc::proto::{self, AgentMessage, AgentReply};
use crate::grpc::validate::{self, FieldError};
use crate::registry::{StreamId, UnknownMachine};

/// Replies buffered per stream before the bridge stops reading from an
/// agent that does not read its replies.
const REPLY_BUFFER: usize = 256;

pub struct AgentStreams {
    shared: Arc<Shared>,
}

impl AgentStreams {
    pub fn new(shared: Arc<Shared>) -> Self {
        AgentStreams { shared }
    }
}

#[tonic::async_trait]
impl proto::agent_service_server::AgentService for AgentStreams {
    type StreamStream = ReceiverStream<Result<AgentReply, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let inbound = request.into_inner();
        let (replies, outbound) = mpsc::channel(REPLY_BUFFER);
        let shared = self.shared.clone();
        self.shared.tasks.spawn(serve(inbound, replies, shared));
        Ok(Response::new(ReceiverStream::new(outbound)))
    }
}

/// The agent behind a stream, once it said hello.
struct Identity {
    stream: StreamId,
    agent: String,
}

type Replies = mpsc::Sender<Result<AgentReply, Status>>;

async fn serve(mut inbound: Streaming<AgentMessage>, replies: Replies, shared: Arc<Shared>) {
    let mut identity = None;
    loop {
        let message = tokio::select! {
            _ = shared.shutdown.cancelled() => {
                let _ = replies.try_send(Err(Status::unavailable("bridge shutting down")));
                break;
            }
            next = inbound.message() => match next {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(status) => {
                    warn!(agent = agent_name(&identity), code = ?status.code(), "agent stream broke");
                    break;
                }
            },
        };

        let reply = answer(&shared, &mut identity, message);
        let sent = tokio::select! {
            _ = shared.shutdown.cancelled() => false,
            sent = replies.send(Ok(reply)) => sent.is_ok(),
        };
        if !sent {
            break;
        }
    }

    if let Some(identity) = identity {
        shared.registry.close_stream(identity.stream);
        info!(
            agent = identity.agent,
            stream = identity.stream,
            "agent stream closed"
        );
    }
}

fn agent_name(identity: &Option<Identity>) -> &str {
    identity
        .as_ref()
        .map_or("-", |identity| identity.agent.as_str())
}

fn answer(shared: &Shared, identity: &mut Option<Identity>, message: AgentMessage) -> AgentReply {
    let seq = message.seq;
    let outcome = match apply(shared, identity, message.body) {
        Ok(()) => Outcome::Accepted(proto::Accepted {}),
        Err(error) => {
            warn!(
                agent = agent_name(identity),
                seq,
                field = error.field,
                reason = error.reason,
                "agent message rejected"
            );
            Outcome::Rejected(proto::Rejected {
                field: error.field,
                reason: error.reason,
            })
        }
    };
    AgentReply {
        seq,
        outcome: Some(outcome),
    }
}

fn unknown(field: &'static str) -> impl Fn(UnknownMachine) -> FieldError {
    move |_| FieldError::new(field, "no such machine; report its properties first")
}

fn apply(
    shared: &Shared,
    identity: &mut Option<Identity>,
    body: Option<Body>,
) -> Result<(), FieldError> {
    let body = body.ok_or_else(|| FieldError::new("body", "must be set"))?;
    let registry = &shared.registry;

    let stream = match (&body, identity.as_ref()) {
        (Body::Hello(_), Some(known)) => {
            return Err(FieldError::new(
                "hello",
                format!("stream already identified as {}", known.agent),
            ));
        }
        (Body::Hello(hello), None) => {
            let agent = validate::agent_id(hello)?;
            let stream = registry.open_stream(agent.clone());
            info!(agent, stream, "agent stream opened");
            *identity = Some(Identity { stream, agent });
            return Ok(());
        }
        (_, None) => return Err(FieldError::new("hello", "send hello first")),
        (_, Some(known)) => known.stream,
    };

    match body {
        Body::Hello(_) => unreachable!("handled above"),
        Body::Properties(message) => {
            let (uuid, facts) = validate::agent_properties("properties", &message)?;
            registry.upsert_agent_facts(uuid, facts);
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
            // Removing what is already gone is not an error: an agent that
            // retries must not be told off.
            let uuid = validate::uuid("remove.uuid", &message.uuid)?;
            let _ = registry.remove_machine(uuid);
        }
    }
    Ok(())
}
