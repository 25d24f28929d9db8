//! The gRPC side: the agent stream, the control service, health and
//! reflection (both `v1` and `v1alpha`), behind a bearer-token check, over
//! TLS when the bridge has a certificate.

pub mod agent;
pub mod client;
pub mod codec;
pub mod control;
pub mod validate;
pub mod view;

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::{Request, Status};
use tower::util::MapResponseLayer;

use crate::bridge::Shared;
use agent::AgentStreams;
use control::Control;
use proto::agent_service_server::AgentServiceServer;
use proto::control_service_server::ControlServiceServer;

/// The generated protobuf types and services of `proto/`.
pub mod proto {
    tonic::include_proto!("cherry.bridge.v1");

    /// The compiled descriptors, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("bridge_descriptor");
}

/// Accepts a call only with `authorization: Bearer <agent token>`.
/// Health and reflection stay open: they reveal nothing secret, and an
/// operator's first `grpcurl list` should work.
#[derive(Clone)]
pub struct AgentAuth {
    expected: Arc<[u8]>,
}

impl AgentAuth {
    pub fn new(agent_token: &str) -> Self {
        AgentAuth {
            expected: format!("Bearer {agent_token}").into_bytes().into(),
        }
    }
}

impl Interceptor for AgentAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .map(|value| value.as_bytes())
            .unwrap_or_default();
        if bool::from(presented.ct_eq(&self.expected)) {
            Ok(request)
        } else {
            Err(Status::unauthenticated(
                "missing or wrong agent token in `authorization` metadata (expected `Bearer <token>`)",
            ))
        }
    }
}

/// tonic refuses a message over `--max-grpc-message` with OUT_OF_RANGE;
/// the bridge answers RESOURCE_EXHAUSTED, as gRPC's own servers do for a
/// message too large. The bridge itself never answers OUT_OF_RANGE.
pub fn oversized_is_exhaustion(status: Status) -> Status {
    if status.code() != tonic::Code::OutOfRange {
        return status;
    }
    Status::resource_exhausted(status.message().to_owned())
}

/// The same, for a call refused before its handler ran: the status is in
/// the response headers (a trailers-only response).
fn oversized_response_is_exhaustion<B>(mut response: hyper::Response<B>) -> hyper::Response<B> {
    let out_of_range = i32::from(tonic::Code::OutOfRange).to_string();
    let headers = response.headers_mut();
    if headers
        .get("grpc-status")
        .is_some_and(|code| code.as_bytes() == out_of_range.as_bytes())
    {
        let exhausted = i32::from(tonic::Code::ResourceExhausted).to_string();
        headers.insert(
            "grpc-status",
            exhausted.parse().expect("digits are a header value"),
        );
    }
    response
}

/// A reflection builder that knows every service served here, so that both
/// reflection versions list the same services, each other included.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .include_reflection_service(false)
}

/// Serves gRPC until shutdown.
// LIMITATION: an HTTP/2 connection that stays idle after its handshake has
// no deadline of its own. Messages over the configured size fail with
/// RESOURCE_EXHAUSTED (tonic's answer) before they are read into memory.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
) -> Result<(), tonic::transport::Error> {
    let auth = AgentAuth::new(&shared.config.agent_token);

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<AgentServiceServer<AgentStreams>>()
        .await;
    health.set_serving::<ControlServiceServer<Control>>().await;

    let reflection_v1 = reflection()
        .build_v1()
        .expect("the compiled descriptor sets are valid");
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .expect("the compiled descriptor sets are valid");

    let max_message = shared.config.max_grpc_message;
    let agents = AgentServiceServer::new(AgentStreams::new(shared.clone()))
        .max_decoding_message_size(max_message);
    let agents = InterceptedService::new(agents, auth.clone());
    let control = ControlServiceServer::new(Control::new(shared.clone()))
        .max_decoding_message_size(max_message);
    let control = InterceptedService::new(control, auth);

    let mut server =
        Server::builder().layer(MapResponseLayer::new(oversized_response_is_exhaustion));
    if let Some(identity) = &shared.config.tls {
        server = server.tls_config(identity.grpc(shared.config.upgrade_timeout))?;
    }
    let shutdown = shared.shutdown.clone();
    server
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(agents)
        .add_service(control)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.cancelled_owned())
        .await
}
