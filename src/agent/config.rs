//! The agent's settings, independent of how they were given (command
//! line, environment, or a test building them directly).

use std::time::Duration;

/// Everything `agent::run` needs besides the libvirt connection.
#[derive(Clone)]
pub struct AgentConfig {
    /// The bridge's gRPC address as a URI, `http://host:port`.
    pub bridge: String,
    /// Presented as `authorization: Bearer <token>`; never logged.
    pub agent_token: String,
    /// Names this agent's stream in the bridge's logs; usually the host
    /// name.
    pub agent_id: String,
    /// How often libvirt is polled and state reported.
    pub state_interval: Duration,
    /// How often block sizes (disk usage) are read and reported.
    pub disks_interval: Duration,
    /// The first wait before reconnecting to the bridge or libvirt.
    pub retry_initial: Duration,
    /// The longest wait between reconnection attempts.
    pub retry_max: Duration,
}

impl AgentConfig {
    /// Production cadences for a bridge at `bridge`.
    pub fn new(bridge: String, agent_token: String, agent_id: String) -> Self {
        AgentConfig {
            bridge,
            agent_token,
            agent_id,
            state_interval: Duration::from_secs(1),
            disks_interval: Duration::from_secs(60),
            retry_initial: Duration::from_millis(250),
            retry_max: Duration::from_secs(30),
        }
    }
}
