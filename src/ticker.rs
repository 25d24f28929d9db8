//! The three cadences: DATA_DYNAMIC every state interval,
//! DATA_DYNAMIC_CONNECTIONS every connections interval, DATA_DYNAMIC_DISKS
//! every disks interval. Each tick asks the registry to build one body per
//! scope and hand it to the connections that share it.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior, interval_at};

use crate::bridge::Shared;
use crate::outbox::Periodic;

pub fn spawn(shared: &Arc<Shared>) {
    let intervals = shared.config.intervals;
    let start = Instant::now();
    // The slower cadences run half a state interval out of step with the
    // state cadence: were they to fall on the same instant, every tenth
    // DATA_DYNAMIC would queue behind a second full fan-out and reach the
    // sockets served last more than a tick after the one before.
    let offset = intervals.state / 2;
    for (kind, period, first) in [
        (Periodic::State, intervals.state, start + intervals.state),
        (
            Periodic::Connections,
            intervals.connections,
            start + intervals.connections + offset,
        ),
        (
            Periodic::Disks,
            intervals.disks,
            start + intervals.disks + offset,
        ),
    ] {
        shared.tasks.spawn(run(shared.clone(), kind, first, period));
    }
}

async fn run(shared: Arc<Shared>, kind: Periodic, first: Instant, period: Duration) {
    // Connections get a snapshot when they open, so the first tick is (at
    // least) one period away. A tick that falls behind is skipped, not
    // bunched: a frontend wants the latest picture, not a burst of old ones.
    let mut ticks = interval_at(first, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = ticks.tick() => tick(&shared, kind),
        }
    }
}

/// One tick, timed; a state tick also recounts the machines for metrics.
fn tick(shared: &Shared, kind: Periodic) {
    let started = std::time::Instant::now();
    shared.registry.tick(kind);
    let took = started.elapsed();
    let machines = (kind == Periodic::State).then(|| shared.registry.machine_counts());
    shared.metrics.tick(kind, took, machines);
}
