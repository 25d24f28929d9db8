//! Every configured limit and its outcome: connections in total and per
//! account (1013), the upgrade deadline (dropped), client frames (1008),
//! gRPC message size (RESOURCE_EXHAUSTED) and agent streams
//! (RESOURCE_EXHAUSTED).

use std::time::Duration;

use cherry_bridge::grpc::client;
use cherry_bridge::proto;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use uuid::Uuid;

use crate::harness::*;
use crate::raw;

const DEADLINE: Duration = Duration::from_millis(300);

#[tokio::test]
async fn a_connection_over_the_total_limit_is_closed_with_1013() {
    let mut config = config();
    config.limits.max_connections = 2;
    let bridge = TestBridge::start_with(config).await;

    let mut first = bridge.connect("global", &viewer_token(), "").await;
    first.connect_messages().await;
    let mut second = bridge.connect("global", &viewer_token(), "").await;
    second.connect_messages().await;

    let mut third = bridge.connect("global", &viewer_token(), "").await;
    let (code, reason) = third.closed().await;
    assert_eq!(
        (code, reason.as_str()),
        (1013, "Connection limit reached, try again later.")
    );

    // A slot frees when a connection ends.
    drop(first);
    let admitted = async {
        loop {
            let mut again = bridge.connect("global", &viewer_token(), "").await;
            if let Read::Message(_) = again.read().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(PATIENCE, admitted)
        .await
        .expect("admitted once a slot is free");
}

#[tokio::test]
async fn a_connection_over_the_account_limit_is_closed_with_1013() {
    let mut config = config();
    config.limits.max_connections_per_account = 1;
    let bridge = TestBridge::start_with(config).await;
    let token = viewer_token();

    let mut first = bridge.connect("global", &token, "").await;
    first.connect_messages().await;
    let mut second = bridge.connect("account", &token, "").await;
    assert_eq!(second.closed().await.0, 1013);

    // Another account is not held back.
    let mut other = bridge.connect("global", &viewer_token(), "").await;
    other.connect_messages().await;
}

#[tokio::test]
async fn a_slowloris_sending_one_byte_at_a_time_is_dropped_at_the_deadline() {
    let mut config = config();
    config.upgrade_timeout = DEADLINE;
    let bridge = TestBridge::start_with(config).await;

    let head = raw::request(
        &format!("/ws/machines/global?access_token={}", viewer_token()),
        &raw::UPGRADE,
    );
    let mut stream = TcpStream::connect(bridge.bridge.http_addr())
        .await
        .expect("connects");
    let started = tokio::time::Instant::now();
    let mut dropped = false;
    // One byte every 20 ms would take seconds to finish the request.
    for byte in head.as_bytes() {
        if stream.write_all(&[*byte]).await.is_err() {
            dropped = true;
            break;
        }
        if raw::dropped_within(&mut stream, Duration::from_millis(20)).await {
            dropped = true;
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "still connected after {PATIENCE:?}"
        );
    }
    assert!(dropped, "the whole request went through");
    assert!(started.elapsed() >= DEADLINE, "dropped before the deadline");
}

#[tokio::test]
async fn a_client_that_sends_nothing_is_dropped_at_the_deadline() {
    let mut config = config();
    config.upgrade_timeout = DEADLINE;
    let bridge = TestBridge::start_with(config).await;

    let mut silent = TcpStream::connect(bridge.bridge.http_addr())
        .await
        .expect("connects");
    assert!(raw::dropped_within(&mut silent, PATIENCE).await);
}

#[tokio::test]
async fn a_frame_over_the_bound_closes_with_1008() {
    let mut config = config();
    config.max_client_frame = 1024;
    let bridge = TestBridge::start_with(config).await;
    let path = format!("/ws/machines/global?access_token={}", viewer_token());

    // At the bound: ignored, the socket stays.
    let mut socket = raw::upgrade(bridge.bridge.http_addr(), &path).await;
    let fits = raw::frame(true, raw::TEXT, &[b'a'; 1024]);
    socket.write_all(&fits).await.expect("sent");
    let (opcode, _) = raw::read_frame(&mut socket).await.expect("DATA_STATIC");
    assert_eq!(opcode, raw::TEXT);

    // One byte over: 1008.
    let over = raw::frame(true, raw::TEXT, &[b'a'; 1025]);
    socket.write_all(&over).await.expect("sent");
    assert_eq!(raw::close_code(&mut socket).await, Some(1008));

    // Fragments that add up to more than the bound: 1008 as well.
    let mut socket = raw::upgrade(bridge.bridge.http_addr(), &path).await;
    let mut fragments = raw::frame(false, raw::TEXT, &[b'a'; 600]);
    fragments.extend(raw::frame(true, 0x0, &[b'a'; 600]));
    socket.write_all(&fragments).await.expect("sent");
    assert_eq!(raw::close_code(&mut socket).await, Some(1008));
}

#[tokio::test]
async fn a_grpc_message_over_the_bound_is_refused_unread() {
    let mut config = config();
    config.max_grpc_message = 4096;
    let mut bridge = TestBridge::start_with(config).await;
    let machine = Uuid::new_v4();

    let mut decision = decision(machine, Uuid::new_v4(), &[]);
    decision.description = Some("d".repeat(4000));
    let status = bridge
        .control
        .upsert_machine(proto::UpsertMachineRequest {
            machine: Some(decision.clone()),
        })
        .await
        .expect_err("over the bound");
    assert_too_large(&status);
    assert!(bridge.list_machines().await.is_empty(), "nothing changed");

    decision.description = Some("d".repeat(1000));
    bridge.upsert_machine(decision).await;
    assert_eq!(bridge.list_machines().await.len(), 1);

    // On the agent stream, the oversized message ends the stream with the
    // same status, after the reply to the message before it.
    let (sender, mut replies) = open_stream(&bridge).await.expect("stream opens");
    let hello = proto::agent_message::Body::Hello(proto::Hello {
        agent_id: "big".to_owned(),
    });
    let big = proto::agent_message::Body::Properties(proto::AgentProperties {
        uuid: machine.to_string(),
        name: "n".repeat(8000),
        disks: Vec::new(),
    });
    for (seq, body) in [(1, hello), (2, big)] {
        let message = proto::AgentMessage {
            seq,
            body: Some(body),
        };
        sender.send(message).await.expect("stream open");
    }
    let hello = tokio::time::timeout(PATIENCE, replies.message()).await;
    let hello = hello.expect("in time").expect("a reply");
    assert!(hello.is_some_and(|reply| accepted(&reply)));
    let status = tokio::time::timeout(PATIENCE, replies.message()).await;
    let status = status.expect("in time").expect_err("the stream ends");
    assert_too_large(&status);
}

/// An oversized message is RESOURCE_EXHAUSTED, naming the limit.
fn assert_too_large(status: &tonic::Status) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("the limit is: 4096 bytes"),
        "{status:?}"
    );
}

/// Opens an agent stream; the status if it is refused.
async fn open_stream(
    bridge: &TestBridge,
) -> Result<
    (
        mpsc::Sender<proto::AgentMessage>,
        tonic::Streaming<proto::AgentReply>,
    ),
    tonic::Status,
> {
    let (mut agent, _) = client::connect(bridge.bridge.grpc_addr(), AGENT_TOKEN)
        .await
        .expect("gRPC connects");
    let (sender, receiver) = mpsc::channel(4);
    let replies = agent.stream(ReceiverStream::new(receiver)).await?;
    Ok((sender, replies.into_inner()))
}

#[tokio::test]
async fn an_agent_stream_over_the_limit_is_resource_exhausted() {
    let mut config = config();
    config.max_agent_streams = 2;
    let bridge = TestBridge::start_with(config).await;

    let first = open_stream(&bridge).await.expect("first stream");
    let _second = open_stream(&bridge).await.expect("second stream");
    let status = open_stream(&bridge).await.expect_err("over the limit");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("limit of 2 agent streams"),
        "{status:?}"
    );

    // Ending a stream frees its slot.
    drop(first);
    let reopened = async {
        loop {
            if open_stream(&bridge).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(PATIENCE, reopened)
        .await
        .expect("a stream opens once one ended");
}
