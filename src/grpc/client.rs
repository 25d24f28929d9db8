//! Clients of the bridge's own gRPC services, authenticated with the agent
//! token: used by the demo's simulated hypervisor and by anything else in
//! this crate that feeds a bridge.

use std::net::SocketAddr;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::grpc::proto::agent_service_client::AgentServiceClient;
use crate::grpc::proto::control_service_client::ControlServiceClient;

/// Adds `authorization: Bearer <agent token>` to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Bearer {
    /// `Bearer <agent token>`; fails on a token that cannot be a header.
    pub fn new(agent_token: &str) -> Result<Self, tonic::metadata::errors::InvalidMetadataValue> {
        format!("Bearer {agent_token}").parse().map(Bearer)
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

pub type AgentClient = AgentServiceClient<InterceptedService<Channel, Bearer>>;
pub type ControlClient = ControlServiceClient<InterceptedService<Channel, Bearer>>;

/// Both clients over one HTTP/2 connection to `addr`.
pub async fn connect(
    addr: SocketAddr,
    agent_token: &str,
) -> Result<(AgentClient, ControlClient), Box<dyn std::error::Error + Send + Sync>> {
    let bearer = Bearer::new(agent_token)?;
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    Ok((
        AgentServiceClient::with_interceptor(channel.clone(), bearer.clone()),
        ControlServiceClient::with_interceptor(channel, bearer),
    ))
}

/// An agent client for a bridge given as a URI (`http://host:port`), as
/// an agent's configuration names it.
// LIMITATION: no TLS configuration is given, so an `https://` bridge
// cannot be reached; an agent needs a plain-text path to the bridge.
pub async fn connect_agent(
    uri: &str,
    agent_token: &str,
) -> Result<AgentClient, Box<dyn std::error::Error + Send + Sync>> {
    let bearer = Bearer::new(agent_token)?;
    let channel = Endpoint::from_shared(uri.to_owned())?
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect()
        .await?;
    Ok(AgentServiceClient::with_interceptor(channel, bearer))
}
