//! Persistence: a bridge restarted on the same data directory serves the
//! same machines and authorizes the same accounts; live state does not come
//! back; a store it cannot trust is refused instead of read as empty.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use cherry_bridge::account::VIEW_ALL_VMS;
use cherry_bridge::grpc::client::{self, AgentClient, ControlClient};
use cherry_bridge::grpc::proto::{self, agent_message::Body, agent_reply::Outcome};
use cherry_bridge::token::{self, SigningKey, TokenRequest};
use cherry_bridge::{Bridge, Config, Persistence};

const SECRET: &str = "persistence-test-secret";
const AGENT_TOKEN: &str = "persistence-test-agent-token";

fn config(data_dir: &Path) -> Config {
    Config {
        persistence: Persistence::DataDir(data_dir.to_owned()),
        ..Config::new(SigningKey::Secret(SECRET.into()), AGENT_TOKEN.to_owned())
    }
}

/// An access token that says nothing about its account but its UUID, so it
/// is accepted only if the directory knows the account.
fn bare_token(account: Uuid) -> String {
    token::mint(
        SECRET.as_bytes(),
        &TokenRequest {
            account,
            account_type: None,
            permissions: None,
            lifetime: Duration::from_secs(600),
            token_type: "access".to_owned(),
        },
    )
    .expect("a token mints")
}

fn account(
    uuid: Uuid,
    username: &str,
    account_type: proto::AccountType,
    permissions: i64,
) -> proto::Account {
    proto::Account {
        uuid: uuid.to_string(),
        username: Some(username.to_owned()),
        email: Some(format!("{username}@example.com")),
        creation_date: Some("2026-01-15".to_owned()),
        account_type: account_type as i32,
        permissions,
        ..Default::default()
    }
}

async fn upsert_account(control: &mut ControlClient, account: proto::Account) {
    control
        .upsert_account(proto::UpsertAccountRequest {
            account: Some(account),
        })
        .await
        .expect("account upsert is acknowledged");
}

async fn upsert_decision(control: &mut ControlClient, decision: proto::MachineDecision) {
    control
        .upsert_machine(proto::UpsertMachineRequest {
            machine: Some(decision),
        })
        .await
        .expect("machine upsert is acknowledged");
}

/// An open agent stream: messages go in through `send`, replies come out.
struct AgentStream {
    send: mpsc::Sender<proto::AgentMessage>,
    replies: tonic::Streaming<proto::AgentReply>,
    seq: u64,
}

impl AgentStream {
    async fn open(mut agent: AgentClient, agent_id: &str) -> AgentStream {
        let (send, outbound) = mpsc::channel(1024);
        let replies = agent
            .stream(ReceiverStream::new(outbound))
            .await
            .expect("the agent stream opens")
            .into_inner();
        let mut stream = AgentStream {
            send,
            replies,
            seq: 0,
        };
        let seq = stream
            .queue(Body::Hello(proto::Hello {
                agent_id: agent_id.to_owned(),
            }))
            .await;
        stream.expect_accepted(seq).await;
        stream
    }

    /// Sends a message without waiting for its reply; returns its `seq`.
    async fn queue(&mut self, body: Body) -> u64 {
        self.seq += 1;
        let message = proto::AgentMessage {
            seq: self.seq,
            body: Some(body),
        };
        self.send.send(message).await.expect("the stream is open");
        self.seq
    }

    async fn expect_accepted(&mut self, seq: u64) {
        let reply = self
            .replies
            .message()
            .await
            .expect("the stream is healthy")
            .expect("a reply comes");
        assert_eq!(reply.seq, seq, "replies come in order");
        assert!(
            matches!(reply.outcome, Some(Outcome::Accepted(_))),
            "message {seq} accepted: {reply:?}"
        );
    }
}

fn agent_properties(uuid: Uuid, name: &str) -> Body {
    Body::Properties(proto::AgentProperties {
        uuid: uuid.to_string(),
        name: name.to_owned(),
        disks: vec![proto::StaticDisk {
            system: true,
            name: format!("{name}-root"),
            size_bytes: 20 << 30,
            r#type: proto::DiskType::Qcow2 as i32,
        }],
    })
}

/// The first messages a socket receives, by type, and how it ended if it
/// ended before sending them.
#[derive(Debug)]
enum Opened {
    Messages(Vec<(String, Value)>),
    Closed(u16),
}

/// Opens a socket and reads its four connect messages, or its close code.
async fn open_socket(http: std::net::SocketAddr, path_and_query: &str) -> Opened {
    let url = format!("ws://{http}/ws/machines/{path_and_query}");
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("the upgrade succeeds");
    let mut messages = Vec::new();
    while messages.len() < 4 {
        let frame = socket
            .next()
            .await
            .expect("the socket stays open until it is closed")
            .expect("frames are well formed");
        match frame {
            Message::Text(text) => {
                let value: Value = serde_json::from_str(&text).expect("frames are JSON");
                let kind = value["type"].as_str().expect("a type").to_owned();
                messages.push((kind, value["body"].clone()));
            }
            Message::Close(Some(close)) => return Opened::Closed(close.code.into()),
            other => panic!("unexpected frame {other:?}"),
        }
    }
    Opened::Messages(messages)
}

fn body_of(opened: &Opened, kind: &str) -> Value {
    let Opened::Messages(messages) = opened else {
        panic!("the socket was refused: {opened:?}");
    };
    messages
        .iter()
        .find(|(found, _)| found == kind)
        .map(|(_, body)| body.clone())
        .unwrap_or_else(|| panic!("no {kind} in {messages:?}"))
}

#[tokio::test]
async fn restarted_bridge_serves_the_same_machines_and_accounts() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let administrator = Uuid::new_v4();
    let owner = Uuid::new_v4();
    let client = Uuid::new_v4();
    let removed_account = Uuid::new_v4();
    let (web, desktop, removed_machine) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());

    // The first bridge learns accounts and machines from both writers.
    let bridge = Bridge::start(config(dir.path()))
        .await
        .expect("bridge starts");
    let (agent, mut control) = client::connect(bridge.grpc_addr(), AGENT_TOKEN)
        .await
        .expect("gRPC connects");
    let admin_account = account(
        administrator,
        "ada",
        proto::AccountType::Administrative,
        VIEW_ALL_VMS as i64,
    );
    let owner_account = account(owner, "owen", proto::AccountType::Administrative, 0);
    let client_account = account(client, "clara", proto::AccountType::Client, 0);
    for entry in [
        admin_account,
        owner_account.clone(),
        client_account.clone(),
        account(removed_account, "gone", proto::AccountType::Client, 0),
    ] {
        upsert_account(&mut control, entry).await;
    }
    control
        .remove_account(proto::RemoveAccountRequest {
            uuid: removed_account.to_string(),
        })
        .await
        .expect("account removal is acknowledged");

    let mut stream = AgentStream::open(agent, "hypervisor-1").await;
    for (uuid, name) in [
        (web, "web-01"),
        (desktop, "desk-01"),
        (removed_machine, "tmp-01"),
    ] {
        let seq = stream.queue(agent_properties(uuid, name)).await;
        stream.expect_accepted(seq).await;
    }
    let seq = stream
        .queue(Body::State(proto::MachineState {
            uuid: web.to_string(),
            active: true,
            vcpu: 2,
            ..Default::default()
        }))
        .await;
    stream.expect_accepted(seq).await;
    let seq = stream
        .queue(Body::Remove(proto::MachineRef {
            uuid: removed_machine.to_string(),
        }))
        .await;
    stream.expect_accepted(seq).await;

    upsert_decision(
        &mut control,
        proto::MachineDecision {
            uuid: web.to_string(),
            title: Some("Web server".to_owned()),
            tags: vec!["web".to_owned()],
            description: Some("Serves the site.".to_owned()),
            owner: Some(owner_account),
            assigned_clients: vec![client_account],
            connections: Some(proto::RemoteAccess {
                ssh: Some("ssh://web.example.com".to_owned()),
                ..Default::default()
            }),
        },
    )
    .await;

    let global = format!("global?access_token={}", bare_token(administrator));
    let as_client = format!("account?access_token={}", bare_token(client));
    let before = open_socket(bridge.http_addr(), &global).await;
    let client_before = open_socket(bridge.http_addr(), &as_client).await;
    let seen = body_of(&before, "DATA_STATIC");
    assert_eq!(seen.as_object().map(|machines| machines.len()), Some(2));
    assert!(
        body_of(&before, "DATA_DYNAMIC")
            .get(web.to_string())
            .is_some(),
        "the web machine is live before the restart"
    );
    drop(stream);
    bridge.stop().await;

    // The second bridge knows the same machines and accounts, none of them
    // live.
    let bridge = Bridge::start(config(dir.path()))
        .await
        .expect("bridge restarts");
    let after = open_socket(bridge.http_addr(), &global).await;
    let client_after = open_socket(bridge.http_addr(), &as_client).await;
    assert_eq!(body_of(&after, "DATA_STATIC"), seen);
    assert_eq!(
        body_of(&client_after, "DATA_STATIC"),
        body_of(&client_before, "DATA_STATIC")
    );
    assert_eq!(body_of(&after, "DATA_DYNAMIC"), serde_json::json!({}));

    let owner_socket = format!(
        "subscribed?access_token={}&machine_uuid={web}",
        bare_token(owner)
    );
    let owner_after = open_socket(bridge.http_addr(), &owner_socket).await;
    let web_properties = &body_of(&owner_after, "DATA_STATIC")[web.to_string()];
    assert_eq!(web_properties["title"], "Web server");
    assert_eq!(web_properties["disks"][0]["name"], "web-01-root");
    assert_eq!(web_properties["owner"]["username"], "owen");

    let removed = format!("account?access_token={}", bare_token(removed_account));
    assert!(matches!(
        open_socket(bridge.http_addr(), &removed).await,
        Opened::Closed(4401)
    ));
    bridge.stop().await;
}

#[tokio::test]
async fn restarted_bridge_takes_new_agent_reports_for_loaded_machines() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let machine = Uuid::new_v4();
    let administrator = Uuid::new_v4();

    let bridge = Bridge::start(config(dir.path()))
        .await
        .expect("bridge starts");
    let (agent, mut control) = client::connect(bridge.grpc_addr(), AGENT_TOKEN)
        .await
        .expect("gRPC connects");
    upsert_account(
        &mut control,
        account(
            administrator,
            "ada",
            proto::AccountType::Administrative,
            VIEW_ALL_VMS as i64,
        ),
    )
    .await;
    let mut stream = AgentStream::open(agent, "hypervisor-1").await;
    let seq = stream.queue(agent_properties(machine, "db-01")).await;
    stream.expect_accepted(seq).await;
    drop(stream);
    bridge.stop().await;

    let bridge = Bridge::start(config(dir.path()))
        .await
        .expect("bridge restarts");
    let (agent, mut control) = client::connect(bridge.grpc_addr(), AGENT_TOKEN)
        .await
        .expect("gRPC connects");
    let mut stream = AgentStream::open(agent, "hypervisor-1").await;

    // Re-sending the same inventory changes nothing; live state is taken
    // for a machine known only from the store.
    let seq = stream.queue(agent_properties(machine, "db-01")).await;
    stream.expect_accepted(seq).await;
    let seq = stream
        .queue(Body::State(proto::MachineState {
            uuid: machine.to_string(),
            active: true,
            vcpu: 4,
            ..Default::default()
        }))
        .await;
    stream.expect_accepted(seq).await;
    let view = control
        .get_machine(proto::GetMachineRequest {
            uuid: machine.to_string(),
        })
        .await
        .expect("the machine is known")
        .into_inner();
    assert_eq!(view.state.map(|state| state.vcpu), Some(4));

    let global = format!("global?access_token={}", bare_token(administrator));
    let opened = open_socket(bridge.http_addr(), &global).await;
    assert_eq!(
        body_of(&opened, "DATA_DYNAMIC")[machine.to_string()]["vcpu"],
        4
    );
    drop(stream);
    bridge.stop().await;
}

// ----- the real binary -------------------------------------------------------

/// Runs `cherry-bridge serve` on `data_dir` with ephemeral ports.
fn serve(data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cherry-bridge"));
    command
        .arg("serve")
        .args(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir)
        .env("CHERRY_JWT_SECRET", SECRET)
        .env("CHERRY_AGENT_TOKEN", AGENT_TOKEN)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Starts the binary and waits for its `bridge listening` line; returns the
/// process and its gRPC address.
async fn spawn_bridge(data_dir: &Path) -> (Child, std::net::SocketAddr) {
    spawn(serve(data_dir)).await
}

async fn spawn(mut command: Command) -> (Child, std::net::SocketAddr) {
    let mut child = command.spawn().expect("the binary runs");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let line = lines
            .next_line()
            .await
            .expect("stderr reads")
            .expect("the bridge logs that it listens before anything else ends its log");
        if !line.contains("bridge listening") {
            continue;
        }
        let grpc = line
            .split_whitespace()
            .find_map(|field| field.strip_prefix("grpc="))
            .expect("the line names the gRPC address")
            .parse()
            .expect("the gRPC address parses");
        // Keep draining stderr so the bridge never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        return (child, grpc);
    }
}

/// Runs the binary on `data_dir`, expecting it to refuse to start; returns
/// what it wrote to stderr.
async fn refused_start(data_dir: &Path) -> String {
    let output = serve(data_dir).output().await.expect("the binary runs");
    assert!(!output.status.success(), "the bridge must refuse to start");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Machines, how many versions of each one round writes, and how many
/// rounds of write-then-kill run on one store.
const MACHINES: usize = 40;
const VERSIONS: usize = 25;
const ROUNDS: usize = 3;

/// Names that sort in the order they were written.
fn versioned_name(machine: usize, version: usize) -> String {
    format!("m{machine:02}-v{version:03}")
}

/// The last version of each machine the bridge acknowledged, per writer.
struct Acknowledged {
    named: Vec<Option<usize>>,
    described: Vec<Option<usize>>,
}

/// A control plane that describes every machine in turn, one call at a
/// time, until the bridge stops answering; returns what was acknowledged.
async fn describe_until_refused(
    mut control: ControlClient,
    machines: Vec<Uuid>,
    versions: std::ops::Range<usize>,
) -> Vec<(usize, usize)> {
    let mut acked = Vec::new();
    for version in versions {
        for (index, uuid) in machines.iter().enumerate() {
            let decision = proto::MachineDecision {
                uuid: uuid.to_string(),
                description: Some(versioned_name(index, version)),
                ..Default::default()
            };
            let request = proto::UpsertMachineRequest {
                machine: Some(decision),
            };
            if control.upsert_machine(request).await.is_err() {
                return acked;
            }
            acked.push((index, version));
        }
    }
    acked
}

/// Starts the binary, writes `versions` of every machine from an agent and
/// a control plane at once, and kills it with SIGKILL the moment the
/// agent's last upsert is acknowledged: if an acknowledgement ever ran
/// ahead of the disk, this is when the disk is furthest behind. The control
/// plane is then mid-stream.
async fn write_then_kill(
    dir: &Path,
    machines: &[Uuid],
    versions: std::ops::Range<usize>,
    acknowledged: &mut Acknowledged,
) {
    let (mut child, grpc) = spawn_bridge(dir).await;
    let (agent, control) = client::connect(grpc, AGENT_TOKEN)
        .await
        .expect("gRPC connects");
    let describer = tokio::spawn(describe_until_refused(
        control,
        machines.to_vec(),
        versions.clone(),
    ));

    // The agent sends everything without waiting: the channel holds it all.
    let mut stream = AgentStream::open(agent, "hypervisor-1").await;
    let mut sent = Vec::new();
    for version in versions {
        for (index, uuid) in machines.iter().enumerate() {
            stream.seq += 1;
            let message = proto::AgentMessage {
                seq: stream.seq,
                body: Some(agent_properties(*uuid, &versioned_name(index, version))),
            };
            stream.send.try_send(message).expect("the channel has room");
            sent.push((index, version));
        }
    }

    loop {
        let reply = stream
            .replies
            .message()
            .await
            .expect("the stream is healthy")
            .expect("a reply comes");
        assert!(
            matches!(reply.outcome, Some(Outcome::Accepted(_))),
            "{reply:?}"
        );
        // seq 1 was the hello; the properties start at seq 2.
        let (index, version) = sent[(reply.seq - 2) as usize];
        acknowledged.named[index] = Some(version);
        if reply.seq == stream.seq {
            break;
        }
    }
    child.start_kill().expect("SIGKILL is delivered");
    child.wait().await.expect("the bridge dies");

    let described = describer.await.expect("the control plane ends");
    assert!(
        !described.is_empty(),
        "the control plane was acknowledged before the kill"
    );
    for (index, version) in described {
        acknowledged.described[index] = Some(version);
    }
}

/// Checks that the store holds, for each machine, the last acknowledged
/// version of each writer's half, or a later one.
async fn assert_kept(grpc: std::net::SocketAddr, machines: &[Uuid], acknowledged: &Acknowledged) {
    let (_, mut control) = client::connect(grpc, AGENT_TOKEN)
        .await
        .expect("gRPC connects");
    for (index, uuid) in machines.iter().enumerate() {
        let request = proto::GetMachineRequest {
            uuid: uuid.to_string(),
        };
        let stored = control
            .get_machine(request)
            .await
            .ok()
            .and_then(|view| view.into_inner().properties);
        let disk = stored
            .as_ref()
            .and_then(|properties| properties.disks.first())
            .map(|disk| disk.name.clone());
        let description = stored.and_then(|properties| properties.description);

        if let Some(version) = acknowledged.named[index] {
            let disk = disk.unwrap_or_else(|| panic!("machine {index} lost its agent facts"));
            let expected = format!("{}-root", versioned_name(index, version));
            assert!(
                disk >= expected,
                "machine {index}: acknowledged {expected}, kept {disk}"
            );
        }
        if let Some(version) = acknowledged.described[index] {
            let description =
                description.unwrap_or_else(|| panic!("machine {index} lost its description"));
            let expected = versioned_name(index, version);
            assert!(
                description >= expected,
                "machine {index}: acknowledged {expected}, kept {description}"
            );
        }
    }
}

#[tokio::test]
async fn sigkill_loses_no_acknowledged_upsert() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let machines: Vec<Uuid> = (0..MACHINES).map(|_| Uuid::new_v4()).collect();
    let mut acknowledged = Acknowledged {
        named: vec![None; MACHINES],
        described: vec![None; MACHINES],
    };

    // Each round starts on the store the previous round's kill left.
    for round in 0..ROUNDS {
        let versions = round * VERSIONS..(round + 1) * VERSIONS;
        write_then_kill(dir.path(), &machines, versions, &mut acknowledged).await;

        let (mut restarted, grpc) = spawn_bridge(dir.path()).await;
        assert_kept(grpc, &machines, &acknowledged).await;
        restarted.start_kill().expect("the restarted bridge stops");
        let _ = restarted.wait().await;
    }
}

#[tokio::test]
async fn store_from_a_newer_format_is_refused() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join(cherry_bridge::store::FILE_NAME);

    // The layout the store documents, stamped with a version from the future.
    let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
    let database = redb::Database::create(&path).expect("a redb file is created");
    let write = database.begin_write().expect("a write begins");
    write
        .open_table(meta)
        .expect("meta opens")
        .insert("format_version", cherry_bridge::store::FORMAT_VERSION + 1)
        .expect("the version is written");
    write.commit().expect("the version commits");
    drop(database);

    let stderr = refused_start(dir.path()).await;
    assert!(stderr.contains("newer than version 1"), "{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
}

#[tokio::test]
async fn file_that_is_not_a_store_is_refused() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join(cherry_bridge::store::FILE_NAME);
    std::fs::write(&path, vec![0x5a_u8; 64 * 1024]).expect("the file is written");

    let stderr = refused_start(dir.path()).await;
    assert!(
        stderr.contains("corrupt or not a cherry-bridge store"),
        "{stderr}"
    );
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
}

#[tokio::test]
async fn damaged_store_is_refused() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join(cherry_bridge::store::FILE_NAME);

    // A real store with some machines in it...
    let bridge = Bridge::start(config(dir.path()))
        .await
        .expect("bridge starts");
    let (_, mut control) = client::connect(bridge.grpc_addr(), AGENT_TOKEN)
        .await
        .expect("gRPC connects");
    for index in 0..20 {
        let decision = proto::MachineDecision {
            uuid: Uuid::new_v4().to_string(),
            title: Some(format!("machine {index}")),
            description: Some("x".repeat(2000)),
            ..Default::default()
        };
        upsert_decision(&mut control, decision).await;
    }
    bridge.stop().await;

    // ...with every byte after redb's header overwritten.
    let mut bytes = std::fs::read(&path).expect("the store reads");
    assert!(bytes.len() > 8192, "the store holds data past its header");
    for byte in &mut bytes[4096..] {
        *byte ^= 0xa5;
    }
    std::fs::write(&path, &bytes).expect("the damage is written");

    let stderr = refused_start(dir.path()).await;
    assert!(
        stderr.contains("corrupt or not a cherry-bridge store"),
        "{stderr}"
    );
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
}

#[tokio::test]
async fn unreadable_record_is_refused() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join(cherry_bridge::store::FILE_NAME);

    let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
    let machines: redb::TableDefinition<u128, &[u8]> = redb::TableDefinition::new("machines");
    let database = redb::Database::create(&path).expect("a redb file is created");
    let write = database.begin_write().expect("a write begins");
    {
        let mut table = write.open_table(meta).expect("meta opens");
        table
            .insert("format_version", cherry_bridge::store::FORMAT_VERSION)
            .expect("the version is written");
        let mut table = write.open_table(machines).expect("machines opens");
        table
            .insert(Uuid::new_v4().as_u128(), b"{\"uuid\": 42}".as_slice())
            .expect("the record is written");
    }
    write.commit().expect("the store commits");
    drop(database);

    let stderr = refused_start(dir.path()).await;
    assert!(
        stderr.contains("corrupt or not a cherry-bridge store"),
        "{stderr}"
    );
    assert!(stderr.contains("table machines"), "{stderr}");
}

#[tokio::test]
async fn ephemeral_serve_keeps_nothing_even_with_a_data_dir() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data_dir = dir.path().join("data");
    let mut command = serve(&data_dir);
    command.arg("--ephemeral");
    let (mut child, grpc) = spawn(command).await;

    let (_, mut control) = client::connect(grpc, AGENT_TOKEN)
        .await
        .expect("gRPC connects");
    let decision = proto::MachineDecision {
        uuid: Uuid::new_v4().to_string(),
        title: Some("kept in memory".to_owned()),
        ..Default::default()
    };
    upsert_decision(&mut control, decision).await;
    child.start_kill().expect("the bridge stops");
    let _ = child.wait().await;
    assert!(
        !data_dir.exists(),
        "an ephemeral bridge creates no data directory"
    );
}

#[tokio::test]
async fn an_empty_store_file_is_refused_not_taken_for_a_new_store() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join(cherry_bridge::store::FILE_NAME);
    std::fs::write(&path, b"").expect("an empty file");

    let stderr = refused_start(dir.path()).await;
    assert!(stderr.contains("the file is empty"), "{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
}
