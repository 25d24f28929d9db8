//! The `cherry-agent` command line, every flag with a `CHERRY_*`
//! environment twin.

use std::time::Duration;

use clap::Parser;

use crate::agent::AgentConfig;

#[derive(Parser, Debug)]
#[command(
    name = "cherry-agent",
    version,
    about = "Streams the machines of a libvirt host to a cherry-bridge"
)]
pub struct AgentCli {
    /// The bridge's gRPC address.
    #[arg(
        long,
        env = "CHERRY_AGENT_BRIDGE",
        default_value = "http://127.0.0.1:50051"
    )]
    pub bridge: String,

    /// Bearer token the bridge expects from agents (prefer the environment
    /// variable: a flag shows in the process list).
    #[arg(long, env = "CHERRY_AGENT_TOKEN", hide_env_values = true)]
    pub agent_token: String,

    /// The libvirt connection URI.
    #[arg(long, env = "CHERRY_LIBVIRT_URI", default_value = "qemu:///system")]
    pub libvirt_uri: String,

    /// How this agent names itself to the bridge; the host name by default.
    #[arg(long, env = "CHERRY_AGENT_ID")]
    pub agent_id: Option<String>,

    /// How often machines are polled and their state reported.
    #[arg(
        long,
        env = "CHERRY_AGENT_STATE_INTERVAL",
        value_parser = humantime::parse_duration,
        default_value = "1s"
    )]
    pub state_interval: Duration,

    /// How often disk usage (block allocation) is read and reported.
    #[arg(
        long,
        env = "CHERRY_AGENT_DISKS_INTERVAL",
        value_parser = humantime::parse_duration,
        default_value = "60s"
    )]
    pub disks_interval: Duration,

    /// The longest wait between reconnection attempts (bridge or libvirt).
    #[arg(
        long,
        env = "CHERRY_AGENT_RETRY_MAX",
        value_parser = humantime::parse_duration,
        default_value = "30s"
    )]
    pub retry_max: Duration,
}

impl AgentCli {
    pub fn config(&self) -> AgentConfig {
        let agent_id = self.agent_id.clone().unwrap_or_else(host_name);
        let mut config = AgentConfig::new(self.bridge.clone(), self.agent_token.clone(), agent_id);
        config.state_interval = self.state_interval;
        config.disks_interval = self.disks_interval;
        config.retry_max = self.retry_max;
        config
    }
}

/// The kernel's host name, read without another dependency.
// LIMITATION: Linux only; elsewhere the agent calls itself `cherry-agent`
// unless --agent-id says otherwise.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "cherry-agent".to_owned())
}
