//! A real bridge on ephemeral loopback ports, with the clients the tests
//! talk to it through: an authenticated gRPC agent stream and control
//! client, and WebSocket clients that read envelopes and close codes.

use std::time::Duration;

use cherry_bridge::account::VIEW_ALL_VMS;
use cherry_bridge::config::Config;
use cherry_bridge::grpc::client::{self, ControlClient};
use cherry_bridge::proto::agent_message::Body;
use cherry_bridge::proto::agent_reply::Outcome;
use cherry_bridge::proto::{self, AgentMessage, AgentReply};
use cherry_bridge::token::{self, SigningKey, TokenRequest};
use cherry_bridge::{Bridge, Intervals};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

pub const SECRET: &[u8] = b"test-secret-of-enough-length";
pub const AGENT_TOKEN: &str = "test-agent-token";

/// How long any single expected message may take before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// Short cadences so periodic behaviour shows within a test.
pub fn config() -> Config {
    let mut config = Config::new(SigningKey::Secret(SECRET.to_vec()), AGENT_TOKEN.to_owned());
    config.intervals = Intervals {
        state: Duration::from_millis(100),
        connections: Duration::from_millis(150),
        disks: Duration::from_millis(200),
    };
    config.limits.stale_after = Duration::from_secs(2);
    config.shutdown_grace = Duration::from_secs(3);
    config
}

pub struct TestBridge {
    pub bridge: Bridge,
    pub control: ControlClient,
}

impl TestBridge {
    pub async fn start() -> Self {
        Self::start_with(config()).await
    }

    pub async fn start_with(config: Config) -> Self {
        let bridge = Bridge::start(config).await.expect("bridge starts");
        let (_, control) = client::connect(bridge.grpc_addr(), AGENT_TOKEN)
            .await
            .expect("gRPC connects");
        TestBridge { bridge, control }
    }

    pub fn ws_url(&self, path_and_query: &str) -> String {
        format!("ws://{}{}", self.bridge.http_addr(), path_and_query)
    }

    /// Opens a WebSocket on `path` (`global`, `account` or `subscribed`)
    /// with `token` and extra query text such as `&machine_uuid=...`.
    pub async fn connect(&self, scope: &str, token: &str, extra: &str) -> Client {
        let url = self.ws_url(&format!("/ws/machines/{scope}?access_token={token}{extra}"));
        Client::connect(&url).await
    }

    pub async fn agent(&self, agent_id: &str) -> Agent {
        Agent::open(self, agent_id).await
    }

    pub async fn upsert_machine(&mut self, decision: proto::MachineDecision) -> i32 {
        self.control
            .upsert_machine(proto::UpsertMachineRequest {
                machine: Some(decision),
            })
            .await
            .expect("upsert accepted")
            .into_inner()
            .outcome
    }

    pub async fn upsert_account(&mut self, account: proto::Account) -> i32 {
        self.control
            .upsert_account(proto::UpsertAccountRequest {
                account: Some(account),
            })
            .await
            .expect("account upsert accepted")
            .into_inner()
            .outcome
    }

    pub async fn publish(
        &mut self,
        machine: Uuid,
        kind: proto::LifecycleKind,
        error: Option<&str>,
    ) {
        self.control
            .publish_event(proto::PublishEventRequest {
                event: Some(proto::LifecycleEvent {
                    machine_uuid: machine.to_string(),
                    kind: kind as i32,
                    error: error.map(str::to_owned),
                }),
            })
            .await
            .expect("event accepted");
    }

    pub async fn remove_machine(&mut self, machine: Uuid) {
        self.control
            .remove_machine(proto::RemoveMachineRequest {
                uuid: machine.to_string(),
            })
            .await
            .expect("machine removed");
    }

    pub async fn list_machines(&mut self) -> Vec<proto::MachineView> {
        self.control
            .list_machines(proto::ListMachinesRequest {})
            .await
            .expect("list answers")
            .into_inner()
            .machines
    }
}

/// A token for an account the directory does not hold, described by its
/// claims.
pub fn admin_token(account: Uuid, permissions: u64) -> String {
    mint(
        account,
        Some(cherry_bridge::account::AccountType::Administrative),
        Some(permissions),
    )
}

pub fn viewer_token() -> String {
    admin_token(Uuid::new_v4(), VIEW_ALL_VMS)
}

pub fn client_token(account: Uuid) -> String {
    mint(
        account,
        Some(cherry_bridge::account::AccountType::Client),
        None,
    )
}

pub fn mint(
    account: Uuid,
    account_type: Option<cherry_bridge::account::AccountType>,
    permissions: Option<u64>,
) -> String {
    mint_with(TokenRequest {
        account,
        account_type,
        permissions,
        lifetime: Duration::from_secs(3600),
        token_type: "access".to_owned(),
    })
}

/// Signs arbitrary claims with the test secret, for tokens `mint` would
/// never make.
pub fn sign(claims: &Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET).expect("an HS256 key");
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), claims, &key).expect("claims encode")
}

/// Seconds since the epoch, for hand-written `exp` claims.
pub fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs()
}

pub fn mint_with(request: TokenRequest) -> String {
    token::mint(SECRET, &request).expect("token mints")
}

/// An administrative account for machine decisions and the directory.
pub fn admin(uuid: Uuid) -> proto::Account {
    proto::Account {
        uuid: uuid.to_string(),
        username: Some(format!("admin-{}", &uuid.to_string()[..8])),
        account_type: proto::AccountType::Administrative as i32,
        ..Default::default()
    }
}

pub fn client_account(uuid: Uuid) -> proto::Account {
    proto::Account {
        uuid: uuid.to_string(),
        username: Some(format!("client-{}", &uuid.to_string()[..8])),
        account_type: proto::AccountType::Client as i32,
        ..Default::default()
    }
}

/// A machine owned by `owner` with the given assigned clients.
pub fn decision(machine: Uuid, owner: Uuid, clients: &[Uuid]) -> proto::MachineDecision {
    proto::MachineDecision {
        uuid: machine.to_string(),
        title: Some(format!("machine {}", &machine.to_string()[..8])),
        tags: vec!["test".to_owned()],
        description: None,
        owner: Some(admin(owner)),
        assigned_clients: clients.iter().map(|c| client_account(*c)).collect(),
        connections: None,
    }
}

pub fn state(machine: Uuid, active: bool) -> proto::MachineState {
    proto::MachineState {
        uuid: machine.to_string(),
        active,
        loading: false,
        vcpu: 2,
        ram_max: Some(2048),
        ram_used: active.then_some(512),
        boot_timestamp: None,
        ras_ip: None,
        ras_port: None,
    }
}

/// One agent stream, sending a message at a time and reading its reply.
pub struct Agent {
    sender: mpsc::Sender<AgentMessage>,
    replies: tonic::Streaming<AgentReply>,
    seq: u64,
}

impl Agent {
    pub async fn open(bridge: &TestBridge, agent_id: &str) -> Agent {
        let (mut agent, _) = client::connect(bridge.bridge.grpc_addr(), AGENT_TOKEN)
            .await
            .expect("gRPC connects");
        let (sender, receiver) = mpsc::channel(1024);
        let replies = agent
            .stream(ReceiverStream::new(receiver))
            .await
            .expect("stream opens")
            .into_inner();
        let mut agent = Agent {
            sender,
            replies,
            seq: 0,
        };
        let hello = agent
            .send(Body::Hello(proto::Hello {
                agent_id: agent_id.to_owned(),
            }))
            .await;
        assert!(accepted(&hello), "hello refused: {hello:?}");
        agent
    }

    /// Sends one message and waits for its reply.
    pub async fn send(&mut self, body: Body) -> AgentReply {
        let seq = self.push(body).await;
        let reply = self.reply().await;
        assert_eq!(reply.seq, seq, "replies come in order");
        reply
    }

    /// Sends without waiting for the reply; returns the sequence number.
    pub async fn push(&mut self, body: Body) -> u64 {
        self.seq += 1;
        let message = AgentMessage {
            seq: self.seq,
            body: Some(body),
        };
        self.sender.send(message).await.expect("stream open");
        self.seq
    }

    pub async fn reply(&mut self) -> AgentReply {
        tokio::time::timeout(PATIENCE, self.replies.message())
            .await
            .expect("reply in time")
            .expect("stream healthy")
            .expect("stream not ended")
    }

    /// The next reply, or `None` once the bridge ended the stream.
    pub async fn next_reply(&mut self) -> Option<AgentReply> {
        self.replies.message().await.ok().flatten()
    }

    pub async fn properties(&mut self, machine: Uuid, name: &str) -> AgentReply {
        self.send(Body::Properties(proto::AgentProperties {
            uuid: machine.to_string(),
            name: name.to_owned(),
            disks: vec![proto::StaticDisk {
                system: true,
                name: "root".to_owned(),
                size_bytes: 10 << 30,
                r#type: proto::DiskType::Qcow2 as i32,
            }],
        }))
        .await
    }

    pub async fn state(&mut self, machine: Uuid, active: bool) -> AgentReply {
        self.send(Body::State(state(machine, active))).await
    }
}

pub fn accepted(reply: &AgentReply) -> bool {
    matches!(reply.outcome, Some(Outcome::Accepted(_)))
}

/// The rejected field of a reply, if it was rejected.
pub fn rejected_field(reply: &AgentReply) -> Option<String> {
    match &reply.outcome {
        Some(Outcome::Rejected(rejected)) => Some(rejected.field.clone()),
        _ => None,
    }
}

/// One envelope as received.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub raw: String,
    pub uuid: String,
    pub kind: String,
    pub body: Value,
    pub timestamp: String,
}

/// What a read produced.
#[derive(Debug)]
pub enum Read {
    Message(Envelope),
    Closed(u16, String),
}

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("WebSocket upgrade accepted");
        Client { ws }
    }

    /// The TCP connection underneath, to end it without a close frame.
    pub fn into_stream(self) -> MaybeTlsStream<TcpStream> {
        self.ws.into_inner()
    }

    pub fn from_stream(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Client {
        Client { ws }
    }

    /// The next text message or the close, failing the test after
    /// `PATIENCE`.
    pub async fn read(&mut self) -> Read {
        loop {
            let next = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("the bridge sent something in time");
            match next {
                Some(Ok(Message::Text(text))) => return Read::Message(parse(text.as_str())),
                Some(Ok(Message::Close(frame))) => {
                    // Send the close reply tungstenite queued, as a browser
                    // does at once.
                    let _ = self.ws.flush().await;
                    let (code, reason) = frame
                        .map(|frame| (u16::from(frame.code), frame.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    return Read::Closed(code, reason);
                }
                Some(Ok(_)) => continue,
                Some(Err(error)) => panic!("WebSocket error: {error}"),
                None => panic!("connection ended without a close frame"),
            }
        }
    }

    pub async fn next(&mut self) -> Envelope {
        match self.read().await {
            Read::Message(envelope) => envelope,
            Read::Closed(code, reason) => {
                panic!("closed with {code} {reason} instead of a message")
            }
        }
    }

    /// The next message of `kind`, skipping periodic messages of other
    /// types. Fails on any other event: tests name every event they expect.
    pub async fn next_event(&mut self, kind: &str) -> Envelope {
        loop {
            let envelope = self.next().await;
            if envelope.kind == kind {
                return envelope;
            }
            assert!(
                is_periodic(&envelope.kind),
                "expected {kind}, got {} {}",
                envelope.kind,
                envelope.body
            );
        }
    }

    /// The next message of `kind`, skipping anything else.
    pub async fn next_of(&mut self, kind: &str) -> Envelope {
        loop {
            let envelope = self.next().await;
            if envelope.kind == kind {
                return envelope;
            }
        }
    }

    /// The four connect messages, checked for order.
    pub async fn connect_messages(&mut self) -> [Envelope; 4] {
        let messages = [
            self.next().await,
            self.next().await,
            self.next().await,
            self.next().await,
        ];
        let kinds: Vec<&str> = messages.iter().map(|m| m.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "DATA_STATIC",
                "DATA_DYNAMIC",
                "DATA_DYNAMIC_DISKS",
                "DATA_DYNAMIC_CONNECTIONS"
            ]
        );
        messages
    }

    /// Reads until the bridge closes, returning the close code and reason.
    /// Fails if an event (not a periodic message) arrives first.
    pub async fn closed(&mut self) -> (u16, String) {
        loop {
            match self.read().await {
                Read::Closed(code, reason) => return (code, reason),
                Read::Message(envelope) if is_periodic(&envelope.kind) => continue,
                Read::Message(envelope) => {
                    panic!("expected a close, got {} {}", envelope.kind, envelope.body)
                }
            }
        }
    }

    /// Closes from the client side with 1000 and waits for the bridge's
    /// reply.
    pub async fn close_normally(&mut self) {
        self.ws.close(None).await.expect("close sent");
        let _ = tokio::time::timeout(PATIENCE, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }

    /// Asserts that nothing but periodic messages arrives for `quiet`.
    pub async fn expect_no_event(&mut self, quiet: Duration) {
        let deadline = tokio::time::Instant::now() + quiet;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next()).await;
            match next {
                Err(_) => return,
                Ok(Some(Ok(Message::Text(text)))) => {
                    let envelope = parse(text.as_str());
                    assert!(
                        is_periodic(&envelope.kind),
                        "unexpected {} {}",
                        envelope.kind,
                        envelope.body
                    );
                }
                Ok(Some(Ok(Message::Close(frame)))) => panic!("unexpected close {frame:?}"),
                Ok(Some(Ok(_))) => {}
                Ok(other) => panic!("unexpected end {other:?}"),
            }
        }
    }
}

pub fn is_periodic(kind: &str) -> bool {
    matches!(
        kind,
        "DATA_DYNAMIC" | "DATA_DYNAMIC_DISKS" | "DATA_DYNAMIC_CONNECTIONS"
    )
}

fn parse(raw: &str) -> Envelope {
    let value: Value = serde_json::from_str(raw).expect("every frame is JSON");
    let field = |name: &str| value[name].as_str().unwrap_or_default().to_owned();
    Envelope {
        raw: raw.to_owned(),
        uuid: field("uuid"),
        kind: field("type"),
        body: value["body"].clone(),
        timestamp: field("timestamp"),
    }
}

/// The keys of a JSON object, in order.
pub fn keys(value: &Value) -> Vec<&str> {
    value
        .as_object()
        .expect("a JSON object")
        .keys()
        .map(String::as_str)
        .collect()
}

/// A plain HTTP/1.1 GET on the bridge's HTTP listener: the status code and
/// the body.
pub async fn http_get(bridge: &TestBridge, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(bridge.bridge.http_addr())
        .await
        .expect("HTTP listener accepts");
    let request = format!("GET {path} HTTP/1.1\r\nHost: bridge\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("request written");
    read_response(&mut stream).await
}

/// Reads one HTTP response to its end (the bridge closes after each).
pub async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut raw = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("response read");
    let text = String::from_utf8(raw).expect("response is UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    (status, body.to_owned())
}

/// `/metrics` as text.
pub async fn metrics(bridge: &TestBridge) -> String {
    let (status, body) = http_get(bridge, "/metrics").await;
    assert_eq!(status, 200, "/metrics answers");
    body
}

/// The value of the series `name` with exactly `labels`, if it is there.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    wanted.sort();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, mut found) = match series.split_once('{') {
                Some((series_name, rest)) => (
                    series_name,
                    rest.trim_end_matches('}')
                        .split(',')
                        .map(str::to_owned)
                        .collect::<Vec<_>>(),
                ),
                None => (series, Vec::new()),
            };
            found.sort();
            (series_name == name && found == wanted).then(|| value.parse().ok())?
        })
}

/// Reads `/metrics` until `check` holds, failing with the last text after
/// `PATIENCE`: counters are written by tasks the test does not wait on.
pub async fn metrics_until(bridge: &TestBridge, what: &str, check: impl Fn(&str) -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let text = metrics(bridge).await;
        if check(&text) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics never showed {what}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
