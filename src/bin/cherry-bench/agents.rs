//! Simulated hypervisor agents over the real gRPC agent stream: steady
//! reporters that send every machine's state once a second, a flood that
//! sends as fast as the server acknowledges, and a single event sender.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use cherry_bridge::grpc::client::{self, AgentClient, ControlClient};
use cherry_bridge::proto::agent_message::Body;
use cherry_bridge::proto::agent_reply::Outcome;
use cherry_bridge::proto::{self, AgentMessage};

use crate::process::AGENT_TOKEN;

/// Messages an agent may have in flight before its sender waits; the same
/// size as the bridge's reply buffer.
const IN_FLIGHT: usize = 256;

/// Both gRPC clients of a target.
pub async fn connect(addr: SocketAddr) -> Result<(AgentClient, ControlClient), String> {
    client::connect(addr, AGENT_TOKEN)
        .await
        .map_err(|e| format!("gRPC connect to {addr}: {e}"))
}

/// One open agent stream: a sender, and a count of accepted replies kept
/// by a task that drains them.
pub struct Stream {
    sender: mpsc::Sender<AgentMessage>,
    seq: u64,
    pub accepted: Arc<AtomicU64>,
}

impl Stream {
    /// Opens a stream on its own HTTP/2 connection and says hello.
    pub async fn open(addr: SocketAddr, agent_id: String) -> Result<Self, String> {
        let (mut agent, _) = connect(addr).await?;
        let (sender, receiver) = mpsc::channel(IN_FLIGHT);
        let mut replies = agent
            .stream(ReceiverStream::new(receiver))
            .await
            .map_err(|status| format!("agent stream: {}", status.message()))?
            .into_inner();
        let accepted = Arc::new(AtomicU64::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok(Some(reply)) = replies.message().await {
                if let Some(Outcome::Accepted(_)) = reply.outcome {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let mut stream = Stream {
            sender,
            seq: 0,
            accepted,
        };
        stream.send(Body::Hello(proto::Hello { agent_id })).await?;
        Ok(stream)
    }

    pub async fn send(&mut self, body: Body) -> Result<(), String> {
        self.seq += 1;
        let message = AgentMessage {
            seq: self.seq,
            body: Some(body),
        };
        self.sender
            .send(message)
            .await
            .map_err(|_| "agent stream closed".to_owned())
    }

    /// Announces machines, as an agent does when it connects.
    pub async fn announce(&mut self, machines: &[Uuid]) -> Result<(), String> {
        for uuid in machines {
            self.send(Body::Properties(properties(uuid))).await?;
        }
        Ok(())
    }

    /// Waits until `count` messages have been accepted, at most `limit`.
    pub async fn settle(&self, count: u64, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.accepted.load(Ordering::Relaxed) < count
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn sent(&self) -> u64 {
        self.seq
    }
}

fn properties(uuid: &Uuid) -> proto::AgentProperties {
    proto::AgentProperties {
        uuid: uuid.to_string(),
        name: format!("bench-{}", &uuid.to_string()[..8]),
        disks: vec![proto::StaticDisk {
            system: true,
            name: "root".to_owned(),
            size_bytes: 20 << 30,
            r#type: proto::DiskType::Qcow2 as i32,
        }],
    }
}

/// A plausible live state; `round` varies the RAM figure so bodies change.
fn state(uuid: &Uuid, index: usize, round: u64) -> proto::MachineState {
    proto::MachineState {
        uuid: uuid.to_string(),
        active: true,
        loading: false,
        vcpu: 2,
        ram_max: Some(4096),
        ram_used: Some(1024 + ((index as u64 * 37 + round * 11) % 2048) as i64),
        boot_timestamp: Some(prost_types::Timestamp {
            seconds: 1_780_000_000,
            nanos: 0,
        }),
        ras_ip: Some("127.0.0.1".to_owned()),
        ras_port: Some(5900 + (index % 1000) as i32),
    }
}

/// Splits `machines` over `streams` agents that each announce theirs, then
/// report every machine's state once per second until `stop`.
pub async fn report_every_second(
    addr: SocketAddr,
    machines: &[Uuid],
    streams: usize,
    stop: CancellationToken,
) -> Result<Vec<JoinHandle<()>>, String> {
    let per_stream = machines.len().div_ceil(streams.max(1)).max(1);
    let mut handles = Vec::new();
    for (agent, slice) in machines.chunks(per_stream).enumerate() {
        let mut stream = Stream::open(addr, format!("bench-agent-{agent}")).await?;
        stream.announce(slice).await?;
        let slice = slice.to_vec();
        let stop = stop.clone();
        handles.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(1));
            let mut round = 0;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                round += 1;
                for (index, uuid) in slice.iter().enumerate() {
                    if stream
                        .send(Body::State(state(uuid, index, round)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }));
    }
    Ok(handles)
}

/// Opens `streams` agents, each announcing its share of `machines`, then
/// sends state as fast as acknowledgements allow for `window`. Returns the
/// messages accepted per second during the window.
pub async fn flood(
    addr: SocketAddr,
    machines: &[Uuid],
    streams: usize,
    window: Duration,
) -> Result<f64, String> {
    let per_stream = machines.len().div_ceil(streams.max(1)).max(1);
    let mut agents = Vec::new();
    for (agent, slice) in machines.chunks(per_stream).enumerate() {
        let mut stream = Stream::open(addr, format!("bench-flood-{agent}")).await?;
        stream.announce(slice).await?;
        stream.settle(stream.sent(), Duration::from_secs(10)).await;
        agents.push((stream, slice.to_vec()));
    }

    let counters: Vec<Arc<AtomicU64>> = agents.iter().map(|(s, _)| s.accepted.clone()).collect();
    let total = || -> u64 { counters.iter().map(|c| c.load(Ordering::Relaxed)).sum() };
    let stop = CancellationToken::new();
    let mut senders = Vec::new();
    for (mut stream, slice) in agents {
        let stop = stop.clone();
        senders.push(tokio::spawn(async move {
            let mut round = 0;
            while !stop.is_cancelled() {
                round += 1;
                for (index, uuid) in slice.iter().enumerate() {
                    let body = Body::State(state(uuid, index, round));
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        sent = stream.send(body) => if sent.is_err() { return },
                    }
                }
            }
        }));
    }

    // A second of warm-up lets every stream reach its steady pace.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = (tokio::time::Instant::now(), total());
    tokio::time::sleep(window).await;
    let end = (tokio::time::Instant::now(), total());
    stop.cancel();
    for sender in senders {
        let _ = sender.await;
    }
    let seconds = end.0.duration_since(start.0).as_secs_f64();
    Ok((end.1 - start.1) as f64 / seconds)
}

/// A lifecycle event about `machine`, as an agent reports it.
pub fn event(machine: &Uuid) -> Body {
    Body::Event(proto::LifecycleEvent {
        machine_uuid: machine.to_string(),
        kind: proto::LifecycleKind::BootupStart as i32,
        error: None,
    })
}
