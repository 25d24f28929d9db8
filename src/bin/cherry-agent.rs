//! The `cherry-agent` command: streams the machines of a libvirt host to
//! a cherry-bridge until SIGINT or SIGTERM.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing::info;
use tracing_subscriber::EnvFilter;

use cherry_bridge::agent::{self, cli::AgentCli};
use cherry_bridge::bridge::shutdown_signal;

/// How long a stopping agent waits for a libvirt call still in flight.
const BLOCKING_GRACE: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let cli = AgentCli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    if let Err(error) = tonic::transport::Endpoint::from_shared(cli.bridge.clone()) {
        eprintln!("cherry-agent: --bridge is not a URI like http://host:port: {error}");
        return ExitCode::FAILURE;
    }
    let config = cli.config();
    info!(
        bridge = config.bridge,
        agent = config.agent_id,
        libvirt = cli.libvirt_uri,
        "cherry-agent starting"
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime can be built");
    runtime.block_on(async {
        let stop = CancellationToken::new();
        let signalled = stop.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            info!("shutdown signal received");
            signalled.cancel();
        });
        agent::run(config, agent::open_uri(cli.libvirt_uri), stop).await;
    });
    // A libvirt call that hangs (a daemon gone silent) must not keep the
    // process alive.
    runtime.shutdown_timeout(BLOCKING_GRACE);
    info!("cherry-agent stopped");
    ExitCode::SUCCESS
}
