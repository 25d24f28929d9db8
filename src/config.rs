//! The bridge's settings, independent of how they were given (command line,
//! environment, or a test building them directly).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::registry::RegistryLimits;
use crate::tls::TlsIdentity;
use crate::token::{ClaimChecks, SigningKey};

/// How often each periodic message goes out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intervals {
    pub state: Duration,
    pub connections: Duration,
    pub disks: Duration,
}

impl Default for Intervals {
    fn default() -> Self {
        Intervals {
            state: Duration::from_secs(1),
            connections: Duration::from_secs(10),
            disks: Duration::from_secs(120),
        }
    }
}

/// Where machine properties and the account directory are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// In memory only: a restart forgets every machine and account.
    Ephemeral,
    /// In the store in this directory, read back on start.
    DataDir(PathBuf),
}

/// How long shutdown waits for sockets and streams to close by default.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The largest gRPC message decoded by default: tonic's own default, far
/// above the largest message validation accepts (a machine decision with
/// every assigned client at its bounds).
pub const MAX_GRPC_MESSAGE: usize = 4 * 1024 * 1024;

/// Agent streams served at once by default: one per hypervisor, with room
/// for a large fleet.
pub const MAX_AGENT_STREAMS: usize = 1024;

#[derive(Clone, Debug)]
pub struct Config {
    /// WebSockets (and, later, plain HTTP pages) listen here.
    pub http_addr: SocketAddr,
    /// Agents and control planes connect here.
    pub grpc_addr: SocketAddr,
    pub signing_key: SigningKey,
    pub claim_checks: ClaimChecks,
    /// The bearer token agents and control planes present.
    pub agent_token: String,
    pub intervals: Intervals,
    pub limits: RegistryLimits,
    /// Largest client frame or message accepted; larger closes with 1008.
    pub max_client_frame: usize,
    /// How long a client may take to send its upgrade request, TLS
    /// handshake included; also bounds a gRPC TLS handshake.
    pub upgrade_timeout: Duration,
    /// The certificate both listeners present; `None` serves plain text.
    pub tls: Option<TlsIdentity>,
    /// Largest gRPC message the agent and control services decode; a larger
    /// one fails with RESOURCE_EXHAUSTED before it is read into memory.
    pub max_grpc_message: usize,
    /// Agent streams open at once; one more is refused with
    /// RESOURCE_EXHAUSTED, so a misbehaving fleet cannot exhaust the bridge.
    pub max_agent_streams: usize,
    /// How long shutdown waits for sockets and streams to close.
    pub shutdown_grace: Duration,
    /// Whether machines and accounts outlive a restart.
    pub persistence: Persistence,
}

impl Config {
    /// Defaults for everything but the secrets, listening on ephemeral
    /// loopback ports and keeping nothing on disk.
    /// Refuses settings that would leave the bridge running but broken: a
    /// zero interval never ticks, a zero bound closes every connection, an
    /// empty secret or agent token opens the door to anyone.
    pub fn check(&self) -> Result<(), String> {
        if let SigningKey::Secret(secret) = &self.signing_key
            && secret.is_empty()
        {
            return Err("the JWT secret is empty".to_owned());
        }
        if self.agent_token.trim().is_empty() {
            return Err("the agent token is empty".to_owned());
        }
        let durations = [
            ("--state-interval", self.intervals.state),
            ("--connections-interval", self.intervals.connections),
            ("--disks-interval", self.intervals.disks),
            ("--stale-after", self.limits.stale_after),
            ("--upgrade-timeout", self.upgrade_timeout),
        ];
        for (flag, duration) in durations {
            if duration.is_zero() {
                return Err(format!("{flag} must be longer than zero"));
            }
        }
        let bounds = [
            ("--max-backlog", self.limits.max_backlog),
            ("--max-connections", self.limits.max_connections),
            (
                "--max-connections-per-account",
                self.limits.max_connections_per_account,
            ),
            ("--max-client-frame", self.max_client_frame),
            ("--max-grpc-message", self.max_grpc_message),
            ("--max-agent-streams", self.max_agent_streams),
        ];
        for (flag, bound) in bounds {
            if bound == 0 {
                return Err(format!("{flag} must be at least 1"));
            }
        }
        Ok(())
    }

    pub fn new(signing_key: SigningKey, agent_token: String) -> Self {
        Config {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            signing_key,
            claim_checks: ClaimChecks::default(),
            agent_token,
            intervals: Intervals::default(),
            limits: RegistryLimits::default(),
            max_client_frame: 64 * 1024,
            upgrade_timeout: Duration::from_secs(10),
            tls: None,
            max_grpc_message: MAX_GRPC_MESSAGE,
            max_agent_streams: MAX_AGENT_STREAMS,
            shutdown_grace: SHUTDOWN_GRACE,
            persistence: Persistence::Ephemeral,
        }
    }
}

impl Default for RegistryLimits {
    fn default() -> Self {
        RegistryLimits {
            stale_after: Duration::from_secs(5),
            max_backlog: 1024,
            max_connections: 20_000,
            max_connections_per_account: 64,
        }
    }
}
