//! cherry-agent: a hypervisor agent that reads every machine from libvirt
//! and streams it to a bridge over the gRPC agent stream.
//!
//! Two tasks share one inventory: `poll` reads libvirt on a blocking
//! thread (through `libvirt`, `domain_xml` and `lifecycle`) and queues
//! what changed; `uplink` keeps the stream to the bridge open and replays
//! the `inventory` whenever it opens a new one.

pub mod backoff;
pub mod cli;
pub mod config;
pub mod domain_xml;
pub mod inventory;
pub mod libvirt;
pub mod lifecycle;
pub mod poll;
pub mod uplink;

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use config::AgentConfig;
pub use libvirt::{Connector, open_uri};

use inventory::Inventory;

/// Messages queued between a poll and the bridge stream: a few polls of
/// a large host.
const QUEUE: usize = 4096;

/// Runs the agent until `stop` is cancelled, reading libvirt through the
/// connections `connector` hands out.
pub async fn run(config: AgentConfig, connector: Connector, stop: CancellationToken) {
    // libvirt prints every error to stderr by default; the agent reports
    // the ones that matter itself.
    virt::error::clear_error_callback();

    let inventory = Arc::new(Mutex::new(Inventory::default()));
    let (queue, queued) = mpsc::channel(QUEUE);
    let uplink = tokio::spawn(uplink::run(
        config.clone(),
        inventory.clone(),
        queued,
        stop.clone(),
    ));
    poll::run(config, connector, inventory, queue, stop).await;
    let _ = uplink.await;
}
