//! The floor: `cherry-bench floor`, a minimal sender with no bridge logic.
//! It accepts the same WebSockets and agent streams as the bridge and puts
//! the same bytes on them at the same moments, so that each bridge figure
//! can be read against what the machine, the kernel and the WebSocket
//! library cost on their own.
//!
//! A client says in its query what it should get: `connect=a,b,c,d` (the
//! sizes of the four connect messages), `tick=n` (a DATA_DYNAMIC of n
//! bytes every second), `connections=n` (a DATA_DYNAMIC_CONNECTIONS of n
//! bytes every ten seconds, half a second out of step, as the bridge sends
//! it) and `event=n` (a lifecycle message of n bytes each time any agent
//! stream carries an event). Every frame of one size is
//! built once and shared by all the connections that asked for it.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tonic::{Status, Streaming};

use cherry_bridge::proto::agent_message::Body;
use cherry_bridge::proto::agent_reply::Outcome;
use cherry_bridge::proto::agent_service_server::{AgentService, AgentServiceServer};
use cherry_bridge::proto::{self, AgentMessage, AgentReply};

use crate::wire;

/// The connect messages, in the order the bridge sends them.
const CONNECT_TYPES: [&str; 4] = [
    "DATA_STATIC",
    "DATA_DYNAMIC",
    "DATA_DYNAMIC_DISKS",
    "DATA_DYNAMIC_CONNECTIONS",
];

/// Frames of every requested size for one broadcast, keyed by size.
type Batch = Arc<HashMap<usize, Utf8Bytes>>;

/// What every floor task shares.
struct Floor {
    /// Sizes some connection wants each tick, or for each event.
    tick_sizes: Mutex<BTreeSet<usize>>,
    connections_sizes: Mutex<BTreeSet<usize>>,
    event_sizes: Mutex<BTreeSet<usize>>,
    /// Connect frames, built once per (type, size).
    connect_frames: Mutex<HashMap<(usize, usize), Utf8Bytes>>,
    ticks: broadcast::Sender<Batch>,
    connections: broadcast::Sender<Batch>,
    events: broadcast::Sender<Batch>,
}

/// Runs the floor until killed.
pub async fn run(http: SocketAddr, grpc: SocketAddr) -> Result<(), String> {
    let floor = Arc::new(Floor {
        tick_sizes: Mutex::default(),
        connections_sizes: Mutex::default(),
        event_sizes: Mutex::default(),
        connect_frames: Mutex::default(),
        ticks: broadcast::channel(4).0,
        connections: broadcast::channel(4).0,
        events: broadcast::channel(64).0,
    });
    let listener = listen(http).map_err(|e| format!("floor cannot listen on {http}: {e}"))?;
    let grpc_listener = TcpListener::bind(grpc)
        .await
        .map_err(|e| format!("floor cannot listen on {grpc}: {e}"))?;

    tokio::spawn(tick(floor.clone()));
    tokio::spawn(tick_connections(floor.clone()));
    let agents = AgentServiceServer::new(Agents {
        floor: floor.clone(),
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(agents)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(
                grpc_listener,
            )),
    );

    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, floor.clone()));
    }
}

/// The accept backlog the bridge uses too, so a connect storm meets the
/// same kernel queue on both.
const ACCEPT_BACKLOG: u32 = 8192;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// Once a second, one DATA_DYNAMIC frame per requested size, for everyone.
async fn tick(floor: Arc<Floor>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        let sizes = lock(&floor.tick_sizes).clone();
        let _ = floor.ticks.send(frames("DATA_DYNAMIC", &sizes));
    }
}

/// Every ten seconds, starting ten and a half seconds in, one
/// DATA_DYNAMIC_CONNECTIONS per requested size.
async fn tick_connections(floor: Arc<Floor>) {
    let period = Duration::from_secs(10);
    let first = tokio::time::Instant::now() + period + Duration::from_millis(500);
    let mut ticks = tokio::time::interval_at(first, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        let sizes = lock(&floor.connections_sizes).clone();
        let _ = floor
            .connections
            .send(frames("DATA_DYNAMIC_CONNECTIONS", &sizes));
    }
}

fn frames(message_type: &str, sizes: &BTreeSet<usize>) -> Batch {
    Arc::new(
        sizes
            .iter()
            .map(|size| (*size, wire::padded_frame(message_type, *size).into()))
            .collect(),
    )
}

/// What a client asked for in its query.
#[derive(Default)]
struct Wants {
    connect: Vec<usize>,
    tick: Option<usize>,
    connections: Option<usize>,
    event: Option<usize>,
}

fn parse_wants(query: &str) -> Wants {
    let mut wants = Wants::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "connect" => wants.connect = value.split(',').filter_map(|s| s.parse().ok()).collect(),
            "tick" => wants.tick = value.parse().ok().filter(|size| *size > 0),
            "connections" => wants.connections = value.parse().ok().filter(|size| *size > 0),
            "event" => wants.event = value.parse().ok().filter(|size| *size > 0),
            _ => {}
        }
    }
    wants
}

// tungstenite's handshake callback fixes the large error type.
#[allow(clippy::result_large_err)]
async fn connection(stream: TcpStream, floor: Arc<Floor>) {
    let mut query = String::new();
    let capture = |request: &Request, response: Response| {
        query = request.uri().query().unwrap_or_default().to_owned();
        Ok(response)
    };
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024);
    let accepted =
        tokio_tungstenite::accept_hdr_async_with_config(stream, capture, Some(config)).await;
    let Ok(mut ws) = accepted else {
        return;
    };
    let wants = parse_wants(&query);

    // Subscribe before the connect messages, as the bridge joins its
    // fan-out in the same moment as it takes the snapshot.
    let mut ticks = floor.ticks.subscribe();
    let mut connections = floor.connections.subscribe();
    let mut events = floor.events.subscribe();
    if let Some(size) = wants.tick {
        lock(&floor.tick_sizes).insert(size);
    }
    if let Some(size) = wants.connections {
        lock(&floor.connections_sizes).insert(size);
    }
    if let Some(size) = wants.event {
        lock(&floor.event_sizes).insert(size);
    }
    for (index, size) in wants.connect.iter().enumerate().take(CONNECT_TYPES.len()) {
        let frame = lock(&floor.connect_frames)
            .entry((index, *size))
            .or_insert_with(|| wire::padded_frame(CONNECT_TYPES[index], *size).into())
            .clone();
        if ws.feed(Message::Text(frame)).await.is_err() {
            return;
        }
    }
    if ws.flush().await.is_err() {
        return;
    }

    loop {
        let (batch, size) = tokio::select! {
            tick = ticks.recv() => match tick {
                Ok(batch) => (batch, wants.tick),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            tick = connections.recv() => match tick {
                Ok(batch) => (batch, wants.connections),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            event = events.recv() => match event {
                Ok(batch) => (batch, wants.event),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => continue,
            },
        };
        let Some(frame) = size.and_then(|size| batch.get(&size)) else {
            continue;
        };
        if ws.send(Message::Text(frame.clone())).await.is_err() {
            return;
        }
    }
}

/// Agent streams that only decode and acknowledge; an event
/// triggers one lifecycle frame per requested size.
struct Agents {
    floor: Arc<Floor>,
}

#[tonic::async_trait]
impl AgentService for Agents {
    type StreamStream = ReceiverStream<Result<AgentReply, Status>>;

    async fn stream(
        &self,
        request: tonic::Request<Streaming<AgentMessage>>,
    ) -> Result<tonic::Response<Self::StreamStream>, Status> {
        let inbound = request.into_inner();
        // The same reply buffer the bridge uses.
        let (replies, outbound) = mpsc::channel(256);
        tokio::spawn(acknowledge(inbound, replies, self.floor.clone()));
        Ok(tonic::Response::new(ReceiverStream::new(outbound)))
    }
}

async fn acknowledge(
    mut inbound: Streaming<AgentMessage>,
    replies: mpsc::Sender<Result<AgentReply, Status>>,
    floor: Arc<Floor>,
) {
    while let Ok(Some(message)) = inbound.message().await {
        if let Some(Body::Event(_)) = message.body {
            let sizes = lock(&floor.event_sizes).clone();
            let _ = floor.events.send(frames("BOOTUP_START", &sizes));
        }
        let reply = AgentReply {
            seq: message.seq,
            outcome: Some(Outcome::Accepted(proto::Accepted {})),
        };
        if replies.send(Ok(reply)).await.is_err() {
            return;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain data; a panicked holder leaves it usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
