//! The WebSocket clients: a fleet of real sockets, one task each, that
//! record when every frame arrived, how large it was, and for DATA_DYNAMIC
//! the server's timestamp. Frames are not parsed as JSON; the envelope's
//! fixed layout is enough (see `wire`).
//!
//! LIMITATION: the clients run on the same cores as the server they
//! measure, so their own work (about as much CPU as the floor's) is part
//! of every delay; and they do less than a browser, which parses each
//! frame.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use crate::wire::{self, Kind};

/// The scopes of the contract, as the report groups them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Account,
    Subscribed,
    Global,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Account, Scope::Subscribed, Scope::Global];

    pub fn name(self) -> &'static str {
        match self {
            Scope::Account => "account",
            Scope::Subscribed => "subscribed",
            Scope::Global => "global",
        }
    }
}

/// One client to open: its scope and the path and query it requests.
#[derive(Clone, Debug)]
pub struct Spec {
    pub scope: Scope,
    pub target: String,
}

/// One frame as it arrived.
#[derive(Clone, Copy, Debug)]
pub struct Arrival {
    /// Wall clock at arrival, µs since the epoch.
    pub at_us: i64,
    pub len: u32,
    pub kind: Kind,
    /// The envelope's timestamp, for DATA_DYNAMIC only.
    pub stamped_us: Option<i64>,
}

/// Everything one client saw.
#[derive(Debug)]
pub struct Record {
    pub scope: Scope,
    /// Why the socket ended early, if it did.
    pub failure: Option<String>,
    /// When the client began to connect, µs since the epoch.
    pub started_us: i64,
    /// Every frame, in order; the first four are the connect messages.
    pub arrivals: Vec<Arrival>,
}

/// Frames a connection sends before anything else.
pub const CONNECT_MESSAGES: usize = 4;

impl Record {
    /// When the fourth connect message arrived.
    pub fn ready_us(&self) -> Option<i64> {
        self.arrivals.get(CONNECT_MESSAGES - 1).map(|a| a.at_us)
    }

    /// Frames after the connect messages.
    pub fn later(&self) -> &[Arrival] {
        self.arrivals.get(CONNECT_MESSAGES..).unwrap_or_default()
    }

    /// What the floor must send this client to put the same bytes on its
    /// socket: the connect sizes, then the last size seen of each later
    /// kind of message.
    pub fn floor_target(&self) -> String {
        let connect: Vec<String> = self
            .arrivals
            .iter()
            .take(CONNECT_MESSAGES)
            .map(|a| a.len.to_string())
            .collect();
        let last = |kind| {
            self.later()
                .iter()
                .rev()
                .find(|a| a.kind == kind)
                .map_or(0, |a| a.len)
        };
        format!(
            "/floor?connect={}&tick={}&connections={}&event={}",
            connect.join(","),
            last(Kind::State),
            last(Kind::Connections),
            last(Kind::Lifecycle)
        )
    }
}

/// A running fleet of clients.
pub struct Fleet {
    handles: Vec<JoinHandle<Record>>,
    stop: CancellationToken,
    /// Clients that have all four connect messages.
    ready: Arc<AtomicUsize>,
}

impl Fleet {
    /// Starts one task per spec. With `concurrency`, at most that many
    /// handshakes are in progress at once; without it, all start at once.
    pub fn launch(addr: SocketAddr, specs: &[Spec], concurrency: Option<usize>) -> Fleet {
        let stop = CancellationToken::new();
        let ready = Arc::new(AtomicUsize::new(0));
        let gate = concurrency.map(|permits| Arc::new(Semaphore::new(permits)));
        let handles = specs
            .iter()
            .map(|spec| {
                let client = Client {
                    addr,
                    spec: spec.clone(),
                    gate: gate.clone(),
                    stop: stop.clone(),
                    ready: ready.clone(),
                };
                tokio::spawn(client.run())
            })
            .collect();
        Fleet {
            handles,
            stop,
            ready,
        }
    }

    pub fn ready(&self) -> usize {
        self.ready.load(Ordering::Relaxed)
    }

    /// Waits until every client is ready, at most `limit`; says whether all
    /// made it.
    pub async fn wait_ready(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while self.ready() < self.handles.len() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Stops every client and collects what each saw.
    pub async fn finish(self) -> Vec<Record> {
        self.stop.cancel();
        let mut records = Vec::with_capacity(self.handles.len());
        for handle in self.handles {
            if let Ok(record) = handle.await {
                records.push(record);
            }
        }
        records
    }
}

struct Client {
    addr: SocketAddr,
    spec: Spec,
    gate: Option<Arc<Semaphore>>,
    stop: CancellationToken,
    ready: Arc<AtomicUsize>,
}

impl Client {
    async fn run(self) -> Record {
        let mut record = Record {
            scope: self.spec.scope,
            failure: None,
            started_us: wire::now_us(),
            arrivals: Vec::with_capacity(64),
        };
        let permit = match &self.gate {
            Some(gate) => Some(gate.clone().acquire_owned().await),
            None => None,
        };
        record.started_us = wire::now_us();
        // One future on a child token for the client's whole life: a fresh
        // `cancelled()` on the shared token per frame would make thousands
        // of clients contend for one lock, a cost the bridge did not cause.
        let token = self.stop.child_token();
        let stopped = token.cancelled();
        tokio::pin!(stopped);
        let connected = tokio::select! {
            _ = &mut stopped => return record,
            connected = self.connect() => connected,
        };
        drop(permit);
        let mut ws = match connected {
            Ok(ws) => ws,
            Err(error) => {
                record.failure = Some(error);
                return record;
            }
        };

        loop {
            let next = tokio::select! {
                _ = &mut stopped => return record,
                next = ws.next() => next,
            };
            let text = match next {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map(|f| u16::from(f.code));
                    record.failure = Some(format!("closed by server with {code:?}"));
                    return record;
                }
                Some(Ok(_)) => continue,
                Some(Err(error)) => {
                    record.failure = Some(error.to_string());
                    return record;
                }
                None => {
                    record.failure = Some("connection ended".to_owned());
                    return record;
                }
            };
            let at_us = wire::now_us();
            let kind = wire::kind(&text);
            record.arrivals.push(Arrival {
                at_us,
                len: text.len() as u32,
                kind,
                stamped_us: (kind == Kind::State)
                    .then(|| wire::timestamp_us(&text))
                    .flatten(),
            });
            if record.arrivals.len() == CONNECT_MESSAGES {
                self.ready.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    async fn connect(&self) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, String> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        // tungstenite zero-fills its read buffer before every read, so the
        // thousands of small-scope clients get one that fits their frames
        // and only `global` clients, whose frames hold every machine, a
        // large one. Either way this costs the bridge and the floor alike.
        let read_buffer = match self.spec.scope {
            Scope::Global => 64 * 1024,
            Scope::Account | Scope::Subscribed => 4 * 1024,
        };
        let config = WebSocketConfig::default().read_buffer_size(read_buffer);
        let url = format!("ws://{}{}", self.addr, self.spec.target);
        let (ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(config))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        Ok(ws)
    }
}
