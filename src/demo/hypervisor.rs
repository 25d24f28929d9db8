//! A simulated hypervisor: a dozen machines that boot, run with changing
//! RAM use, shut down and sometimes fail, reported to the bridge over the
//! real gRPC agent stream, exactly as a real agent would.

use std::time::Duration;

use chrono::Utc;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

use crate::grpc::client::AgentClient;
use crate::grpc::proto::agent_message::Body;
use crate::grpc::proto::agent_reply::Outcome;
use crate::grpc::proto::{self, AgentMessage, LifecycleKind};

/// One simulated machine.
pub struct SimulatedMachine {
    pub uuid: Uuid,
    pub name: String,
    vcpu: i32,
    ram_max: i64,
    ram_used: i64,
    disk_bytes: i64,
    occupied_bytes: i64,
    phase: Phase,
    booted_at: Option<chrono::DateTime<Utc>>,
    ras_port: i32,
    viewers: Vec<String>,
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    Off { seconds_left: u32 },
    Booting { seconds_left: u32, fails: bool },
    Running { seconds_left: u32 },
    ShuttingDown { seconds_left: u32, fails: bool },
}

impl SimulatedMachine {
    pub fn new(index: usize, rng: &mut StdRng) -> Self {
        let ram_max = [1024, 2048, 4096, 8192][index % 4];
        SimulatedMachine {
            uuid: uuid::Builder::from_random_bytes(rng.random()).into_uuid(),
            name: format!("demo-{:02}", index + 1),
            vcpu: [1, 2, 4][index % 3],
            ram_max,
            ram_used: 0,
            disk_bytes: (20 + 10 * index as i64) << 30,
            occupied_bytes: (5 + index as i64) << 30,
            phase: Phase::Off {
                seconds_left: rng.random_range(1..8),
            },
            booted_at: None,
            ras_port: 5900 + index as i32,
            viewers: Vec::new(),
        }
    }

    fn properties(&self) -> proto::AgentProperties {
        proto::AgentProperties {
            uuid: self.uuid.to_string(),
            name: self.name.clone(),
            disks: vec![proto::StaticDisk {
                system: true,
                name: format!("{}-root", self.name),
                size_bytes: self.disk_bytes,
                r#type: proto::DiskType::Qcow2 as i32,
            }],
        }
    }

    fn state(&self) -> proto::MachineState {
        let active = matches!(
            self.phase,
            Phase::Running { .. } | Phase::ShuttingDown { .. }
        );
        let loading = matches!(
            self.phase,
            Phase::Booting { .. } | Phase::ShuttingDown { .. }
        );
        proto::MachineState {
            uuid: self.uuid.to_string(),
            active,
            loading,
            vcpu: self.vcpu,
            ram_max: Some(self.ram_max),
            ram_used: active.then_some(self.ram_used),
            boot_timestamp: self.booted_at.map(|at| prost_types::Timestamp {
                seconds: at.timestamp(),
                nanos: 0,
            }),
            ras_ip: active.then(|| "127.0.0.1".to_owned()),
            ras_port: active.then_some(self.ras_port),
        }
    }

    fn disks(&self) -> proto::MachineDisks {
        proto::MachineDisks {
            uuid: self.uuid.to_string(),
            disks: vec![proto::DynamicDisk {
                system: true,
                name: format!("{}-root", self.name),
                size_bytes: self.disk_bytes,
                r#type: proto::DiskType::Qcow2 as i32,
                occupied_bytes: self.occupied_bytes,
            }],
        }
    }

    fn connections(&self) -> proto::MachineConnections {
        proto::MachineConnections {
            uuid: self.uuid.to_string(),
            active_connections: self.viewers.clone(),
        }
    }

    /// Advances one second; returns the lifecycle event that happened, if
    /// any, with its error.
    fn step(&mut self, rng: &mut StdRng) -> Option<(LifecycleKind, Option<String>)> {
        let (next, event) = match self.phase {
            Phase::Off { seconds_left: 0 } => (
                Phase::Booting {
                    seconds_left: rng.random_range(2..5),
                    fails: rng.random_bool(0.2),
                },
                Some((LifecycleKind::BootupStart, None)),
            ),
            Phase::Booting {
                seconds_left: 0,
                fails: true,
            } => (
                Phase::Off {
                    seconds_left: rng.random_range(5..15),
                },
                Some((
                    LifecycleKind::BootupFail,
                    Some("Not enough free memory on the host.".to_owned()),
                )),
            ),
            Phase::Booting {
                seconds_left: 0, ..
            } => {
                self.booted_at = Some(Utc::now());
                self.ram_used = self.ram_max / 4;
                (
                    Phase::Running {
                        seconds_left: rng.random_range(15..45),
                    },
                    Some((LifecycleKind::BootupSuccess, None)),
                )
            }
            Phase::Running { seconds_left: 0 } => (
                Phase::ShuttingDown {
                    seconds_left: rng.random_range(2..4),
                    fails: rng.random_bool(0.1),
                },
                Some((LifecycleKind::ShutdownStart, None)),
            ),
            Phase::ShuttingDown {
                seconds_left: 0,
                fails: true,
            } => (
                Phase::Running {
                    seconds_left: rng.random_range(10..20),
                },
                Some((
                    LifecycleKind::ShutdownFail,
                    Some("The guest did not answer the ACPI shutdown request.".to_owned()),
                )),
            ),
            Phase::ShuttingDown {
                seconds_left: 0, ..
            } => {
                self.booted_at = None;
                self.viewers.clear();
                (
                    Phase::Off {
                        seconds_left: rng.random_range(5..15),
                    },
                    Some((LifecycleKind::ShutdownSuccess, None)),
                )
            }
            Phase::Off { seconds_left } => (
                Phase::Off {
                    seconds_left: seconds_left - 1,
                },
                None,
            ),
            Phase::Booting {
                seconds_left,
                fails,
            } => (
                Phase::Booting {
                    seconds_left: seconds_left - 1,
                    fails,
                },
                None,
            ),
            Phase::Running { seconds_left } => {
                let swing = self.ram_max / 16;
                self.ram_used = (self.ram_used + rng.random_range(-swing..=swing))
                    .clamp(self.ram_max / 8, self.ram_max);
                self.occupied_bytes =
                    (self.occupied_bytes + rng.random_range(0..(64 << 20))).min(self.disk_bytes);
                if rng.random_bool(0.05) {
                    self.viewers = if self.viewers.is_empty() {
                        vec!["operator".to_owned()]
                    } else {
                        Vec::new()
                    };
                }
                (
                    Phase::Running {
                        seconds_left: seconds_left - 1,
                    },
                    None,
                )
            }
            Phase::ShuttingDown {
                seconds_left,
                fails,
            } => (
                Phase::ShuttingDown {
                    seconds_left: seconds_left - 1,
                    fails,
                },
                None,
            ),
        };
        self.phase = next;
        event
    }
}

/// The demo's machines, created from a fixed seed so every run shows the
/// same UUIDs.
pub fn machines(count: usize) -> Vec<SimulatedMachine> {
    let mut rng = StdRng::seed_from_u64(0x00C4_E77E);
    (0..count)
        .map(|index| SimulatedMachine::new(index, &mut rng))
        .collect()
}

/// Streams the machines to the bridge until `stop` is cancelled: inventory
/// first, then state every second, disks and connections on their own
/// cadence, lifecycle events as they happen.
pub async fn run(
    mut client: AgentClient,
    mut machines: Vec<SimulatedMachine>,
    disks_every: Duration,
    stop: CancellationToken,
) -> Result<(), tonic::Status> {
    let (sender, receiver) = mpsc::channel::<AgentMessage>(256);
    let mut replies = client
        .stream(ReceiverStream::new(receiver))
        .await?
        .into_inner();
    tokio::spawn(async move {
        while let Ok(Some(reply)) = replies.message().await {
            if let Some(Outcome::Rejected(rejected)) = reply.outcome {
                warn!(
                    seq = reply.seq,
                    field = rejected.field,
                    reason = rejected.reason,
                    "simulator message rejected"
                );
            }
        }
    });

    let mut seq = 0u64;
    let mut send = |body: Body| {
        seq += 1;
        let message = AgentMessage {
            seq,
            body: Some(body),
        };
        let sender = sender.clone();
        async move { sender.send(message).await.is_ok() }
    };

    send(Body::Hello(proto::Hello {
        agent_id: "demo-hypervisor".to_owned(),
    }))
    .await;
    for machine in &machines {
        send(Body::Properties(machine.properties())).await;
        send(Body::Disks(machine.disks())).await;
        send(Body::Connections(machine.connections())).await;
    }
    info!(machines = machines.len(), "simulated hypervisor reporting");

    let mut rng = StdRng::seed_from_u64(0x5EED);
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    let disks_every_ticks = disks_every.as_secs().max(1);
    for second in 0u64.. {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = ticks.tick() => {}
        }
        for machine in &mut machines {
            if let Some((kind, error)) = machine.step(&mut rng) {
                let event = proto::LifecycleEvent {
                    machine_uuid: machine.uuid.to_string(),
                    kind: kind as i32,
                    error,
                };
                send(Body::Event(event)).await;
            }
            send(Body::State(machine.state())).await;
            send(Body::Connections(machine.connections())).await;
            if second % disks_every_ticks == 0 {
                send(Body::Disks(machine.disks())).await;
            }
        }
    }
    Ok(())
}
