//! Bad gRPC input is refused with INVALID_ARGUMENT (or UNAUTHENTICATED),
//! names the field, leaves the stream usable and the registry unchanged.

use cherry_bridge::grpc::client;
use cherry_bridge::proto::{self, agent_message::Body};
use tonic::Code;
use uuid::Uuid;

use crate::harness::*;

#[tokio::test]
async fn bad_stream_messages_are_rejected_by_field_and_the_stream_goes_on() {
    let mut bridge = TestBridge::start().await;
    let machine = Uuid::new_v4();
    let mut agent = bridge.agent("bad-input").await;
    assert!(accepted(&agent.properties(machine, "good").await));
    let before = bridge.list_machines().await;

    let bad_uuid = agent
        .send(Body::Properties(proto::AgentProperties {
            uuid: "not-a-uuid".to_owned(),
            name: "x".to_owned(),
            disks: Vec::new(),
        }))
        .await;
    assert_eq!(
        rejected_field(&bad_uuid).as_deref(),
        Some("properties.uuid")
    );

    let negative = agent
        .send(Body::Properties(proto::AgentProperties {
            uuid: machine.to_string(),
            name: "changed".to_owned(),
            disks: vec![proto::StaticDisk {
                system: true,
                name: "root".to_owned(),
                size_bytes: -5,
                r#type: proto::DiskType::Raw as i32,
            }],
        }))
        .await;
    assert_eq!(
        rejected_field(&negative).as_deref(),
        Some("properties.disks[0].size_bytes")
    );

    let unknown_kind = agent
        .send(Body::Event(proto::LifecycleEvent {
            machine_uuid: machine.to_string(),
            kind: 99,
            error: None,
        }))
        .await;
    assert_eq!(rejected_field(&unknown_kind).as_deref(), Some("event.kind"));

    let unknown_disk_type = agent
        .send(Body::Disks(proto::MachineDisks {
            uuid: machine.to_string(),
            disks: vec![proto::DynamicDisk {
                r#type: 42,
                ..Default::default()
            }],
        }))
        .await;
    assert_eq!(
        rejected_field(&unknown_disk_type).as_deref(),
        Some("disks.disks[0].type")
    );

    let oversized = agent
        .send(Body::Properties(proto::AgentProperties {
            uuid: machine.to_string(),
            name: "n".repeat(10_000),
            disks: Vec::new(),
        }))
        .await;
    assert_eq!(
        rejected_field(&oversized).as_deref(),
        Some("properties.name")
    );

    let unknown_machine = agent.state(Uuid::new_v4(), true).await;
    assert_eq!(
        rejected_field(&unknown_machine).as_deref(),
        Some("state.uuid")
    );

    let second_hello = agent
        .send(Body::Hello(proto::Hello {
            agent_id: "again".to_owned(),
        }))
        .await;
    assert_eq!(rejected_field(&second_hello).as_deref(), Some("hello"));

    // Still usable, and nothing above changed the registry.
    assert!(accepted(&agent.state(machine, true).await));
    let after = bridge.list_machines().await;
    assert_eq!(
        before
            .iter()
            .map(|m| m.properties.clone())
            .collect::<Vec<_>>(),
        after
            .iter()
            .map(|m| m.properties.clone())
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn messages_before_hello_are_rejected() {
    let bridge = TestBridge::start().await;
    let (mut agent, _) = client::connect(bridge.bridge.grpc_addr(), AGENT_TOKEN)
        .await
        .expect("connects");
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let mut replies = agent
        .stream(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .expect("stream opens")
        .into_inner();
    sender
        .send(proto::AgentMessage {
            seq: 7,
            body: Some(Body::State(state(Uuid::new_v4(), true))),
        })
        .await
        .expect("sent");
    let reply = replies.message().await.expect("healthy").expect("a reply");
    assert_eq!(reply.seq, 7);
    assert_eq!(rejected_field(&reply).as_deref(), Some("hello"));
}

#[tokio::test]
async fn bad_unary_requests_are_invalid_argument_naming_the_field() {
    let mut bridge = TestBridge::start().await;
    let before = bridge.list_machines().await;

    let mut bad_uuid = decision(Uuid::new_v4(), Uuid::new_v4(), &[]);
    bad_uuid.uuid = "nope".to_owned();
    let status = bridge
        .control
        .upsert_machine(proto::UpsertMachineRequest {
            machine: Some(bad_uuid),
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("machine.uuid:"),
        "{}",
        status.message()
    );

    let mut bad_client = decision(Uuid::new_v4(), Uuid::new_v4(), &[Uuid::new_v4()]);
    bad_client.assigned_clients[0].uuid = "zzz".to_owned();
    let status = bridge
        .control
        .upsert_machine(proto::UpsertMachineRequest {
            machine: Some(bad_client),
        })
        .await
        .expect_err("refused");
    assert!(
        status
            .message()
            .starts_with("machine.assigned_clients[0].uuid:"),
        "{}",
        status.message()
    );

    let status = bridge
        .control
        .publish_event(proto::PublishEventRequest {
            event: Some(proto::LifecycleEvent {
                machine_uuid: Uuid::new_v4().to_string(),
                kind: 1234,
                error: None,
            }),
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("event.kind:"),
        "{}",
        status.message()
    );

    let status = bridge
        .control
        .upsert_account(proto::UpsertAccountRequest {
            account: Some(proto::Account {
                uuid: Uuid::new_v4().to_string(),
                account_type: proto::AccountType::Client as i32,
                permissions: 1,
                ..Default::default()
            }),
        })
        .await
        .expect_err("refused");
    assert!(
        status.message().starts_with("account.permissions:"),
        "{}",
        status.message()
    );

    let status = bridge
        .control
        .remove_machine(proto::RemoveMachineRequest {
            uuid: Uuid::new_v4().to_string(),
        })
        .await
        .expect_err("unknown machine");
    assert_eq!(status.code(), Code::NotFound);

    assert_eq!(before, bridge.list_machines().await);
}

#[tokio::test]
async fn a_missing_or_wrong_agent_token_is_unauthenticated() {
    let bridge = TestBridge::start().await;
    let addr = bridge.bridge.grpc_addr();

    let (_, mut wrong) = client::connect(addr, "not-the-token")
        .await
        .expect("connects");
    let status = wrong
        .list_machines(proto::ListMachinesRequest {})
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated);

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid URI")
        .connect()
        .await
        .expect("connects");
    let mut anonymous = proto::control_service_client::ControlServiceClient::new(channel.clone());
    let status = anonymous
        .list_machines(proto::ListMachinesRequest {})
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated);

    let mut agent = proto::agent_service_client::AgentServiceClient::new(channel);
    let status = agent
        .stream(tokio_stream::iter(Vec::<proto::AgentMessage>::new()))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated);
}

/// An agent message whose properties carry a name as raw bytes, so a test
/// can send a name that is not UTF-8.
#[derive(Clone, PartialEq, prost::Message)]
struct LooseAgentMessage {
    #[prost(uint64, tag = "1")]
    seq: u64,
    #[prost(message, optional, tag = "2")]
    hello: Option<proto::Hello>,
    #[prost(message, optional, tag = "3")]
    properties: Option<LooseProperties>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LooseProperties {
    #[prost(string, tag = "1")]
    uuid: String,
    #[prost(bytes = "vec", tag = "2")]
    name: Vec<u8>,
}

fn with_agent_token<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {AGENT_TOKEN}").parse().expect("ASCII");
    request.metadata_mut().insert("authorization", value);
    request
}

#[tokio::test]
async fn an_unreadable_message_is_rejected_by_its_sequence_and_the_stream_goes_on() {
    let mut bridge = TestBridge::start().await;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", bridge.bridge.grpc_addr()))
            .expect("valid URI")
            .connect()
            .await
            .expect("connects");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");

    let machine = Uuid::new_v4();
    let properties = |seq: u64, name: &[u8]| LooseAgentMessage {
        seq,
        hello: None,
        properties: Some(LooseProperties {
            uuid: machine.to_string(),
            name: name.to_vec(),
        }),
    };
    let messages = vec![
        LooseAgentMessage {
            seq: 1,
            hello: Some(proto::Hello {
                agent_id: "loose".to_owned(),
            }),
            properties: None,
        },
        properties(2, b"caf\xe9"),
        properties(3, b"cafe"),
    ];
    let mut replies = grpc
        .streaming(
            with_agent_token(tokio_stream::iter(messages)),
            hyper::http::uri::PathAndQuery::from_static("/cherry.bridge.v1.AgentService/Stream"),
            tonic_prost::ProstCodec::<LooseAgentMessage, proto::AgentReply>::default(),
        )
        .await
        .expect("stream opens")
        .into_inner();

    let mut outcomes = Vec::new();
    while let Some(reply) = replies.message().await.expect("the stream stays healthy") {
        outcomes.push((reply.seq, rejected_field(&reply)));
        if outcomes.len() == 3 {
            break;
        }
    }
    assert_eq!(
        outcomes,
        [(1, None), (2, Some("body".to_owned())), (3, None)]
    );
    let listed = bridge.list_machines().await;
    assert_eq!(
        listed[0]
            .properties
            .as_ref()
            .and_then(|p| p.title.clone())
            .as_deref(),
        Some("cafe")
    );

    // The same bytes on a unary call are INVALID_ARGUMENT, naming the field.
    #[derive(Clone, PartialEq, prost::Message)]
    struct LooseUpsert {
        #[prost(message, optional, tag = "1")]
        machine: Option<LooseProperties>,
    }
    grpc.ready().await.expect("ready");
    let status = grpc
        .unary(
            with_agent_token(LooseUpsert {
                machine: Some(LooseProperties {
                    uuid: machine.to_string(),
                    name: b"caf\xe9".to_vec(),
                }),
            }),
            hyper::http::uri::PathAndQuery::from_static(
                "/cherry.bridge.v1.ControlService/UpsertMachine",
            ),
            tonic_prost::ProstCodec::<LooseUpsert, proto::UpsertMachineResponse>::default(),
        )
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("MachineDecision.title"),
        "{}",
        status.message()
    );
}
