//! Hostile clients against the real `cherry-bridge` binary: malformed
//! upgrades, invalid and oversized frames, ping floods, a thousand
//! half-open connections, slowloris, forged tokens. Throughout, a
//! well-behaved frontend keeps getting DATA_DYNAMIC with the machine an
//! agent reports; afterwards the bridge is still up, its resident memory is
//! back near where it started, and no secret reached its log.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cherry_bridge::grpc::client;
use cherry_bridge::proto::{self, AgentMessage, agent_message::Body};
use futures_util::future::join_all;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

use crate::harness::*;
use crate::raw;

/// How much resident memory may grow over the whole attack.
const MEMORY_SLACK_KIB: u64 = 20 * 1024;

/// The binary, its addresses and everything it logged so far.
struct Process {
    child: Child,
    http: SocketAddr,
    grpc: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Process {
    async fn start() -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cherry-bridge"))
            .args([
                "serve",
                "--http-addr=127.0.0.1:0",
                "--grpc-addr=127.0.0.1:0",
                "--ephemeral",
                "--upgrade-timeout=300ms",
                "--state-interval=100ms",
                "--stale-after=60s",
                "--max-client-frame=65536",
            ])
            .env(
                "CHERRY_JWT_SECRET",
                String::from_utf8_lossy(SECRET).as_ref(),
            )
            .env("CHERRY_AGENT_TOKEN", AGENT_TOKEN)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the binary starts");

        // Keep draining stderr, or a full pipe would stall the bridge.
        let log = Arc::new(Mutex::new(String::new()));
        let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
        let (ready, mut listening) = mpsc::channel(1);
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("bridge listening") {
                    let _ = ready.try_send(line.clone());
                }
                let mut log = sink.lock().expect("log lock");
                log.push_str(&line);
                log.push('\n');
            }
        });
        let line = tokio::time::timeout(Duration::from_secs(30), listening.recv())
            .await
            .expect("the bridge listens in time")
            .expect("a listening line");
        let addr = |key: &str| -> SocketAddr {
            let start = line.find(key).expect("address logged") + key.len();
            let rest = &line[start..];
            let end = rest.find(' ').unwrap_or(rest.len());
            rest[..end].parse().expect("an address")
        };
        Process {
            http: addr("http="),
            grpc: addr("grpc="),
            child,
            log,
        }
    }

    /// Resident memory in KiB, from /proc.
    fn rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("still running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc");
        let line = status
            .lines()
            .find(|line| line.starts_with("VmRSS:"))
            .expect("VmRSS");
        line.split_whitespace()
            .nth(1)
            .and_then(|kib| kib.parse().ok())
            .expect("a number")
    }

    fn ws(&self, path_and_query: &str) -> String {
        format!("ws://{}{}", self.http, path_and_query)
    }
}

/// Waits for a DATA_DYNAMIC that lists `machine`.
async fn still_serving(watcher: &mut Client, machine: Uuid, after: &str) {
    let key = machine.to_string();
    let fresh = async {
        loop {
            let envelope = watcher.next_of("DATA_DYNAMIC").await;
            if envelope.body.get(&key).is_some() {
                return;
            }
        }
    };
    tokio::time::timeout(PATIENCE, fresh)
        .await
        .unwrap_or_else(|_| panic!("no DATA_DYNAMIC with the machine after {after}"));
}

fn global(token: &str) -> String {
    format!("/ws/machines/global?access_token={token}")
}

/// One round of every attack; `scale` multiplies the counts.
async fn attack(process: &Process, watcher: &mut Client, machine: Uuid, scale: usize) {
    malformed_upgrades(process, scale).await;
    still_serving(watcher, machine, "malformed upgrades").await;
    bad_frames(process, scale).await;
    still_serving(watcher, machine, "bad frames").await;
    ping_floods(process, scale).await;
    still_serving(watcher, machine, "ping floods").await;
    half_open(process, 100 * scale).await;
    still_serving(watcher, machine, "half-open connections").await;
    forged_tokens(process, scale).await;
    still_serving(watcher, machine, "forged tokens").await;
}

async fn malformed_upgrades(process: &Process, scale: usize) {
    let path = global(&viewer_token());
    let no_key = &raw::UPGRADE[..3];
    let wrong_version = [
        raw::UPGRADE[0],
        raw::UPGRADE[1],
        "Sec-WebSocket-Version: 12",
        raw::UPGRADE[3],
    ];
    for _ in 0..scale {
        for headers in [no_key, &wrong_version[..]] {
            let mut stream = TcpStream::connect(process.http).await.expect("connects");
            let status = raw::exchange(&mut stream, &raw::request(&path, headers)).await;
            assert_eq!(status, 400, "{headers:?}");
        }

        // Bytes that are not HTTP at all, and a head far over the bound.
        let garbage: Vec<u8> = (0..2048u32).map(|i| (i * 7919 % 251) as u8).collect();
        let huge = raw::request(&path, &[&format!("X-Filler: {}", "a".repeat(100_000))]);
        for bytes in [garbage, huge.into_bytes()] {
            let mut stream = TcpStream::connect(process.http).await.expect("connects");
            let _ = stream.write_all(&bytes).await;
            assert!(raw::dropped_within(&mut stream, PATIENCE).await);
        }
    }
}

async fn bad_frames(process: &Process, scale: usize) {
    let path = global(&viewer_token());
    for _ in 0..scale {
        // Invalid UTF-8 in a text frame.
        let mut socket = raw::upgrade(process.http, &path).await;
        let _ = socket
            .write_all(&raw::frame(true, raw::TEXT, &[0xff, 0xfe, 0xc3]))
            .await;
        assert_eq!(raw::close_code(&mut socket).await, Some(1008));

        // A header that promises a terabyte, and a real frame one byte over.
        let mut socket = raw::upgrade(process.http, &path).await;
        let _ = socket
            .write_all(&raw::header_only(raw::TEXT, 1 << 40))
            .await;
        assert_eq!(raw::close_code(&mut socket).await, Some(1008));
        let mut socket = raw::upgrade(process.http, &path).await;
        let over = raw::frame(true, raw::BINARY, &vec![0u8; 65_537]);
        let _ = socket.write_all(&over).await;
        assert_eq!(raw::close_code(&mut socket).await, Some(1008));

        // Binary frames are ignored; the socket keeps getting messages.
        let mut socket = raw::upgrade(process.http, &path).await;
        for _ in 0..10 {
            let frame = raw::frame(true, raw::BINARY, &[0u8; 1000]);
            socket.write_all(&frame).await.expect("sent");
        }
        for _ in 0..5 {
            let (opcode, _) = raw::read_frame(&mut socket).await.expect("a message");
            assert_eq!(opcode, raw::TEXT);
        }
    }
}

async fn ping_floods(process: &Process, scale: usize) {
    let path = global(&viewer_token());
    for _ in 0..scale {
        // A flood from a client that reads: the pong to the last ping
        // arrives (earlier ones may be merged into it).
        let socket = raw::upgrade(process.http, &path).await;
        let (mut reader, mut writer) = socket.into_split();
        let pings = 2000u64;
        let flood = tokio::spawn(async move {
            let mut bytes = Vec::new();
            for seq in 1..=pings {
                bytes.extend(raw::frame(true, raw::PING, &seq.to_be_bytes()));
            }
            writer.write_all(&bytes).await.expect("pings sent");
            writer
        });
        let last = pings.to_be_bytes().to_vec();
        let answered = async {
            loop {
                let (opcode, payload) = raw::read_frame(&mut reader).await.expect("a frame");
                if opcode == raw::PONG && payload == last {
                    return;
                }
            }
        };
        tokio::time::timeout(PATIENCE, answered)
            .await
            .expect("the last ping answered");
        drop(flood.await.expect("flood finished"));

        // A flood from a client that never reads: it is stuck or dropped,
        // and costs the bridge no more than its socket buffers.
        let mut socket = raw::upgrade(process.http, &path).await;
        let mut bytes = Vec::new();
        for seq in 0..20_000u64 {
            bytes.extend(raw::frame(true, raw::PING, &seq.to_be_bytes()));
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), socket.write_all(&bytes)).await;
    }
}

/// `count` connections that never finish their request, half of them
/// silent, half stopping inside the request line; all are dropped.
async fn half_open(process: &Process, count: usize) {
    let partial = format!("GET {}", global(&viewer_token()));
    let mut streams = Vec::with_capacity(count);
    for index in 0..count {
        let mut stream = TcpStream::connect(process.http).await.expect("connects");
        if index % 2 == 1 {
            let _ = stream.write_all(partial.as_bytes()).await;
        }
        streams.push(stream);
    }
    let dropped = join_all(
        streams
            .iter_mut()
            .map(|stream| raw::dropped_within(stream, PATIENCE)),
    )
    .await;
    let kept = dropped.iter().filter(|dropped| !**dropped).count();
    assert_eq!(kept, 0, "{kept} of {count} half-open connections kept");
}

async fn forged_tokens(process: &Process, scale: usize) {
    let claims = serde_json::json!({
        "sub": Uuid::new_v4().to_string(),
        "exp": u64::MAX,
        "token_type": "access",
        "account_type": "administrative",
        "permissions": 1,
    });
    let segment = |value: serde_json::Value| URL_SAFE_NO_PAD.encode(value.to_string());
    let alg_none = format!(
        "{}.{}.",
        segment(serde_json::json!({"alg": "none"})),
        segment(claims.clone())
    );
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET).expect("secret");
    let hs384 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384),
        &claims,
        &key,
    )
    .expect("signs");
    for _ in 0..scale {
        for token in [&alg_none, &hs384] {
            let mut socket = Client::connect(&process.ws(&global(token))).await;
            assert_eq!(socket.closed().await.0, 4401);
        }
    }
}

/// Sends a slowloris request, one byte every 50 ms, until dropped.
async fn slowloris(addr: SocketAddr) -> bool {
    let head = raw::request(&global(&viewer_token()), &raw::UPGRADE);
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return false;
    };
    for byte in head.as_bytes() {
        if stream.write_all(&[*byte]).await.is_err() {
            return true;
        }
        if raw::dropped_within(&mut stream, Duration::from_millis(50)).await {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_leave_the_bridge_serving_and_its_memory_at_baseline() {
    let mut process = Process::start().await;

    // An agent reporting one machine, and a frontend watching it.
    let machine = Uuid::new_v4();
    let (mut agent, mut control) = client::connect(process.grpc, AGENT_TOKEN)
        .await
        .expect("gRPC connects");
    control
        .upsert_machine(proto::UpsertMachineRequest {
            machine: Some(decision(machine, Uuid::new_v4(), &[])),
        })
        .await
        .expect("machine created");
    let (sender, receiver) = mpsc::channel(8);
    let mut replies = agent
        .stream(ReceiverStream::new(receiver))
        .await
        .expect("stream opens")
        .into_inner();
    let hello = Body::Hello(proto::Hello {
        agent_id: "steady".to_owned(),
    });
    for (seq, body) in [(1, hello), (2, Body::State(state(machine, true)))] {
        let message = AgentMessage {
            seq,
            body: Some(body),
        };
        sender.send(message).await.expect("stream open");
        let reply = replies.message().await.expect("healthy").expect("a reply");
        assert!(accepted(&reply), "{reply:?}");
    }
    let watcher_token = viewer_token();
    let mut watcher = Client::connect(&process.ws(&global(&watcher_token))).await;
    watcher.connect_messages().await;
    still_serving(&mut watcher, machine, "start").await;

    // A small round first, so the baseline includes warmed-up allocator
    // arenas and buffers rather than a cold process.
    attack(&process, &mut watcher, machine, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = process.rss_kib();

    attack(&process, &mut watcher, machine, 10).await;
    let slow = join_all((0..20).map(|_| slowloris(process.http))).await;
    assert!(
        slow.iter().all(|dropped| *dropped),
        "a slowloris got through"
    );
    still_serving(&mut watcher, machine, "slowloris").await;

    // Everything hostile is gone once the upgrade deadline has passed.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = process.rss_kib();
    eprintln!("resident memory: {baseline} KiB before the attack, {after} KiB after");
    assert!(
        after <= baseline + MEMORY_SLACK_KIB,
        "resident memory grew from {baseline} KiB to {after} KiB"
    );
    still_serving(&mut watcher, machine, "the whole attack").await;
    assert!(
        process.child.try_wait().expect("waitable").is_none(),
        "the bridge exited"
    );

    // Refusals were logged, never with a secret.
    let log = process.log.lock().expect("log lock").clone();
    assert!(log.contains("connection refused"), "refusals are logged");
    let secret = String::from_utf8_lossy(SECRET).into_owned();
    for secret in [secret.as_str(), AGENT_TOKEN, watcher_token.as_str()] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
    process.child.kill().await.expect("stopped");
}
