//! The libvirt side of the agent: polls every machine on the state
//! cadence (block sizes on the slower disks cadence), on a blocking
//! thread, and queues what changed for the bridge. When libvirt drops, it
//! reports nothing until it is back, so the bridge shows the machines as
//! stale instead of a made-up state.

use std::sync::{Arc, Mutex};

use chrono::Utc;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use virt::connect::Connect;

use crate::agent::AgentConfig;
use crate::agent::backoff::Backoff;
use crate::agent::inventory::{Inventory, lock};
use crate::agent::libvirt::{self, Connector, Observation, SizeRequest};
use crate::grpc::proto::agent_message::Body;

/// Polls until `stop` is cancelled.
pub async fn run(
    config: AgentConfig,
    connector: Connector,
    inventory: Arc<Mutex<Inventory>>,
    queue: mpsc::Sender<Body>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(config.retry_initial, config.retry_max);
    let mut connection: Option<Connect> = None;
    let mut retry_at = Instant::now();
    let mut disks_read_at: Option<Instant> = None;
    let mut dropping = false;
    let mut ticks = tokio::time::interval(config.state_interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }

        // (Re)connect when due; a failure waits out the backoff.
        let current = match connection.take() {
            Some(current) => current,
            None if Instant::now() < retry_at => continue,
            None => match open(&connector).await {
                Ok(opened) => {
                    info!("libvirt connected");
                    backoff.succeeded();
                    opened
                }
                Err(reason) => {
                    let delay = backoff.failed();
                    warn!(reason, retry_in = ?delay, "libvirt unreachable");
                    retry_at = Instant::now() + delay;
                    continue;
                }
            },
        };

        // Read every machine; sizes only when due or never read.
        let disks_due = disks_read_at.is_none_or(|at| at.elapsed() >= config.disks_interval);
        let sizes = match disks_due {
            true => SizeRequest::All,
            false => SizeRequest::Unknown(lock(&inventory).sized_disks()),
        };
        let (current, observed) = observe(current, sizes).await;

        match observed {
            Ok(observation) => {
                if disks_due {
                    disks_read_at = Some(Instant::now());
                }
                let dropped = queue_changes(&inventory, &queue, observation, disks_due);
                if dropped > 0 && !dropping {
                    warn!(
                        dropped,
                        "bridge reads slower than libvirt is polled; dropping"
                    );
                }
                dropping = dropped > 0;
                connection = current;
            }
            Err(reason) => {
                let delay = backoff.failed();
                warn!(reason, retry_in = ?delay, "libvirt connection lost");
                lock(&inventory).libvirt_lost();
                retry_at = Instant::now() + delay;
                close(current).await;
            }
        }
    }
    close(connection).await;
}

async fn open(connector: &Connector) -> Result<Connect, String> {
    let connector = connector.clone();
    match tokio::task::spawn_blocking(move || connector()).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(error.to_string()),
        Err(error) => Err(format!("opening libvirt failed: {error}")),
    }
}

/// One poll on a blocking thread; hands the connection back unless the
/// thread itself failed.
async fn observe(
    connection: Connect,
    sizes: SizeRequest,
) -> (Option<Connect>, Result<Observation, String>) {
    let polled = tokio::task::spawn_blocking(move || {
        let observed = libvirt::observe(&connection, &sizes);
        (connection, observed)
    })
    .await;
    match polled {
        Ok((connection, Ok(observation))) => (Some(connection), Ok(observation)),
        Ok((connection, Err(error))) => (Some(connection), Err(error.to_string())),
        Err(error) => (None, Err(format!("libvirt poll failed: {error}"))),
    }
}

/// Applies a poll to the inventory and queues what it produced, under
/// the lock a new bridge stream takes to replay: nothing interleaves.
/// Returns how many messages did not fit.
fn queue_changes(
    inventory: &Mutex<Inventory>,
    queue: &mpsc::Sender<Body>,
    observation: Observation,
    disks_due: bool,
) -> usize {
    let mut inventory = lock(inventory);
    let mut dropped = 0;
    for body in inventory.apply(observation, Utc::now(), disks_due) {
        // LIMITATION: when the bridge reads slower than libvirt is polled,
        // messages past the queue's bound are dropped; lifecycle events
        // among them are lost. State and properties heal with the next
        // poll or replay.
        if queue.try_send(body).is_err() {
            dropped += 1;
        }
    }
    dropped
}

/// Closing a libvirt connection may block, so it happens off the runtime.
async fn close(connection: Option<Connect>) {
    if let Some(connection) = connection {
        let _ = tokio::task::spawn_blocking(move || drop(connection)).await;
    }
}
