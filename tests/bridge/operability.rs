//! What operators read over plain HTTP: `/metrics` after scripted traffic,
//! `/healthz`, `/readyz` through a shutdown, and the live page's files.

use cherry_bridge::grpc::client;
use cherry_bridge::proto::{self, AgentMessage, agent_message::Body};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

use crate::harness::*;

const OPENED: &str = "cherry_websocket_connections_opened_total";
const OPEN: &str = "cherry_websocket_connections_open";
const CLOSED: &str = "cherry_websocket_connections_closed_total";
const SENT: &str = "cherry_websocket_messages_sent_total";
const BYTES: &str = "cherry_websocket_bytes_sent_total";
const REJECTED: &str = "cherry_agent_messages_rejected_total";

#[tokio::test]
async fn metrics_count_connections_by_scope_and_close_code_and_frames_by_type() {
    let mut bridge = TestBridge::start().await;
    let owner = Uuid::new_v4();
    let machine = Uuid::new_v4();
    bridge.upsert_machine(decision(machine, owner, &[])).await;

    // Three admitted, one per scope; one refused; one closed by its client.
    let owner_token = admin_token(owner, 0);
    let mut global = bridge.connect("global", &viewer_token(), "").await;
    global.connect_messages().await;
    let mut account = bridge.connect("account", &owner_token, "").await;
    account.connect_messages().await;
    let extra = format!("&machine_uuid={machine}");
    let mut subscribed = bridge.connect("subscribed", &owner_token, &extra).await;
    subscribed.connect_messages().await;
    let mut refused = bridge.connect("global", "not-a-token", "").await;
    assert_eq!(refused.closed().await.0, 4401);
    account.close_normally().await;

    metrics_until(&bridge, "the scripted connections", |text| {
        let scope = |name| [("scope", name)];
        let closed = |name, code| sample(text, CLOSED, &[("scope", name), ("code", code)]);
        ["global", "account", "subscribed"]
            .into_iter()
            .all(|name| sample(text, OPENED, &scope(name)) == Some(1.0))
            && sample(text, OPEN, &scope("global")) == Some(1.0)
            && sample(text, OPEN, &scope("account")) == Some(0.0)
            && sample(text, OPEN, &scope("subscribed")) == Some(1.0)
            && closed("global", "4401") == Some(1.0)
            && closed("account", "client") == Some(1.0)
            && closed("global", "client").is_none()
    })
    .await;

    // Every admitted connection got one DATA_STATIC; DATA_DYNAMIC keeps
    // coming every state interval.
    let text = metrics(&bridge).await;
    assert_eq!(sample(&text, SENT, &[("type", "DATA_STATIC")]), Some(3.0));
    assert_eq!(sample(&text, SENT, &[("type", "CREATE")]), Some(0.0));
    let dynamic = sample(&text, SENT, &[("type", "DATA_DYNAMIC")]).expect("series present");
    assert!(dynamic >= 3.0, "DATA_DYNAMIC frames sent: {dynamic}");
    let bytes = sample(&text, BYTES, &[("type", "DATA_DYNAMIC")]).expect("series present");
    assert!(bytes > dynamic * 50.0, "DATA_DYNAMIC bytes sent: {bytes}");

    // An event is counted once per connection it reaches.
    bridge
        .publish(machine, proto::LifecycleKind::BootupStart, None)
        .await;
    global.next_event("BOOTUP_START").await;
    subscribed.next_event("BOOTUP_START").await;
    metrics_until(&bridge, "two BOOTUP_START frames", |text| {
        sample(text, SENT, &[("type", "BOOTUP_START")]) == Some(2.0)
    })
    .await;
}

#[tokio::test]
async fn metrics_count_agent_messages_by_outcome_and_machines_by_freshness() {
    let bridge = TestBridge::start().await;
    let (alpha, bravo) = (Uuid::new_v4(), Uuid::new_v4());

    // Accepted: hello, two properties, one state.
    let mut agent = bridge.agent("counted").await;
    assert!(accepted(&agent.properties(alpha, "alpha").await));
    assert!(accepted(&agent.properties(bravo, "bravo").await));
    assert!(accepted(&agent.state(alpha, true).await));

    // Rejected: a machine nobody reported, a UUID that does not parse, a
    // second hello, and (on another stream) data before hello.
    let reply = agent.state(Uuid::new_v4(), true).await;
    assert_eq!(rejected_field(&reply).as_deref(), Some("state.uuid"));
    let mut malformed = state(alpha, true);
    malformed.uuid = "not-a-uuid".to_owned();
    let reply = agent.send(Body::State(malformed)).await;
    assert_eq!(rejected_field(&reply).as_deref(), Some("state.uuid"));
    let hello_again = Body::Hello(proto::Hello {
        agent_id: "counted".to_owned(),
    });
    assert!(rejected_field(&agent.send(hello_again).await).is_some());
    let reply = unidentified_state(&bridge, alpha).await;
    assert_eq!(rejected_field(&reply).as_deref(), Some("hello"));

    metrics_until(&bridge, "the scripted agent traffic", |text| {
        let rejected = |reason| sample(text, REJECTED, &[("reason", reason)]);
        sample(text, "cherry_agent_messages_accepted_total", &[]) == Some(4.0)
            && rejected("invalid_argument") == Some(2.0)
            && rejected("unknown_machine") == Some(1.0)
            && rejected("not_identified") == Some(1.0)
            && sample(text, "cherry_agent_streams_open", &[]) == Some(1.0)
            && sample(text, "cherry_machines_known", &[]) == Some(2.0)
            && sample(text, "cherry_machines_fresh", &[]) == Some(1.0)
    })
    .await;
    let text = metrics(&bridge).await;
    let ticks = sample(
        &text,
        "cherry_tick_duration_seconds_count",
        &[("type", "DATA_DYNAMIC")],
    );
    assert!(ticks.is_some_and(|ticks| ticks >= 1.0), "{text}");
    assert!(text.contains("cherry_tick_duration_seconds_bucket{type=\"DATA_DYNAMIC\",le=\""));

    // The agent goes: its stream closes and its machine is no longer fresh.
    drop(agent);
    metrics_until(&bridge, "the agent gone", |text| {
        sample(text, "cherry_agent_streams_open", &[]) == Some(0.0)
            && sample(text, "cherry_machines_known", &[]) == Some(2.0)
            && sample(text, "cherry_machines_fresh", &[]) == Some(0.0)
    })
    .await;
}

/// Opens a stream that sends state before hello; returns the reply.
async fn unidentified_state(bridge: &TestBridge, machine: Uuid) -> proto::AgentReply {
    let (mut agent, _) = client::connect(bridge.bridge.grpc_addr(), AGENT_TOKEN)
        .await
        .expect("gRPC connects");
    let (sender, receiver) = mpsc::channel(1);
    sender
        .send(AgentMessage {
            seq: 1,
            body: Some(Body::State(state(machine, true))),
        })
        .await
        .expect("queued");
    let mut replies = agent
        .stream(ReceiverStream::new(receiver))
        .await
        .expect("stream opens")
        .into_inner();
    tokio::time::timeout(PATIENCE, replies.message())
        .await
        .expect("reply in time")
        .expect("stream healthy")
        .expect("a reply")
}

#[tokio::test]
async fn healthz_and_readyz_answer_200_while_the_bridge_serves() {
    let bridge = TestBridge::start().await;
    assert_eq!(
        http_get(&bridge, "/healthz").await,
        (200, "ok\n".to_owned())
    );
    assert_eq!(
        http_get(&bridge, "/readyz").await,
        (200, "ready\n".to_owned())
    );
    assert_eq!(http_get(&bridge, "/nowhere").await.0, 404);
}

#[tokio::test]
async fn readyz_never_answers_ready_once_shutdown_begins() {
    let bridge = TestBridge::start().await;
    let addr = bridge.bridge.http_addr();
    assert_eq!(http_get(&bridge, "/readyz").await.0, 200);

    bridge.bridge.shutdown_token().cancel();
    // The listener stops accepting; a probe racing it is refused, cut, or
    // answered 503, never 200.
    for _ in 0..20 {
        let Ok(mut probe) = TcpStream::connect(addr).await else {
            return;
        };
        if probe
            .write_all(b"GET /readyz HTTP/1.1\r\nHost: bridge\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        let mut raw = Vec::new();
        let _ = tokio::time::timeout(PATIENCE, probe.read_to_end(&mut raw)).await;
        let text = String::from_utf8_lossy(&raw);
        assert!(
            !text.starts_with("HTTP/1.1 200"),
            "ready during shutdown: {text}"
        );
        if text.starts_with("HTTP/1.1 503") || raw.is_empty() {
            return;
        }
    }
    panic!("probes kept being answered without a verdict");
}

#[tokio::test]
async fn the_live_page_and_its_files_come_from_the_binary() {
    let bridge = TestBridge::start().await;
    let (status, html) = http_get(&bridge, "/").await;
    assert_eq!(status, 200);
    assert!(html.contains("<script src=\"/live.js\""), "{html}");
    assert!(html.contains("<link rel=\"stylesheet\" href=\"/live.css\">"));
    let (status, script) = http_get(&bridge, "/live.js").await;
    assert_eq!(status, 200);
    assert!(script.contains("new WebSocket("));
    assert_eq!(http_get(&bridge, "/live.css").await.0, 200);
}
