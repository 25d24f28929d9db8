//! cherry-agent against libvirt's built-in test driver (no daemon, no
//! hypervisor) and a real bridge, watched from a real WebSocket client on
//! the `global` scope.
//!
//! The test driver keeps its machines per connection, so each test opens
//! its own connection to its own driver file, hands the agent a clone of
//! it, and starts and stops domains through the very same connection.
#![cfg(feature = "libvirt")]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use virt::connect::Connect;

use cherry_bridge::account::AccountType;
use cherry_bridge::agent::{self, AgentConfig};
use cherry_bridge::token::{self, SigningKey, TokenRequest};
use cherry_bridge::{Bridge, Config, Intervals};

const SECRET: &[u8] = b"libvirt-agent-test-secret";
const AGENT_TOKEN: &str = "libvirt-agent-test-token";

/// How long any awaited fact may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(15);

const ALPHA: &str = "a1a1a1a1-0000-4000-8000-000000000001";
const BETA: &str = "b2b2b2b2-0000-4000-8000-000000000002";
const GAMMA: &str = "c3c3c3c3-0000-4000-8000-000000000003";
const DELTA: &str = "d4d4d4d4-0000-4000-8000-000000000004";

/// Three domains: alpha runs with two disks and a VNC console, beta is
/// off with a boot order and a console of its own, gamma runs with a
/// CD-ROM (not a disk) and no console.
const DRIVER_XML: &str = r#"<node xmlns:test="http://libvirt.org/schemas/domain/test/1.0">
  <domain type="test">
    <name>alpha</name>
    <uuid>a1a1a1a1-0000-4000-8000-000000000001</uuid>
    <memory unit="MiB">2048</memory>
    <currentMemory unit="MiB">1024</currentMemory>
    <vcpu>2</vcpu>
    <os><type>hvm</type><boot dev="hd"/></os>
    <devices>
      <disk type="file" device="disk">
        <driver name="qemu" type="qcow2"/>
        <source file="/images/alpha.qcow2"/>
        <target dev="vda" bus="virtio"/>
      </disk>
      <disk type="file" device="disk">
        <driver name="qemu" type="raw"/>
        <source file="/images/alpha-data.img"/>
        <target dev="vdb" bus="virtio"/>
      </disk>
      <graphics type="vnc" port="5901" autoport="no" listen="127.0.0.1"/>
    </devices>
  </domain>
  <domain type="test">
    <name>beta</name>
    <uuid>b2b2b2b2-0000-4000-8000-000000000002</uuid>
    <memory unit="MiB">1024</memory>
    <vcpu>1</vcpu>
    <os><type>hvm</type></os>
    <devices>
      <disk type="file" device="disk">
        <driver name="qemu" type="qcow2"/>
        <source file="/images/beta-scratch.qcow2"/>
        <target dev="vda" bus="virtio"/>
        <boot order="2"/>
      </disk>
      <disk type="file" device="disk">
        <driver name="qemu" type="raw"/>
        <source file="/images/beta.img"/>
        <target dev="sda" bus="sata"/>
        <boot order="1"/>
      </disk>
      <graphics type="vnc" port="5902" autoport="no" listen="127.0.0.1"/>
    </devices>
    <test:runstate>5</test:runstate>
  </domain>
  <domain type="test">
    <name>gamma</name>
    <uuid>c3c3c3c3-0000-4000-8000-000000000003</uuid>
    <memory unit="MiB">4096</memory>
    <vcpu>4</vcpu>
    <os><type>hvm</type></os>
    <devices>
      <disk type="file" device="cdrom">
        <driver name="qemu" type="raw"/>
        <target dev="hdc" bus="ide"/>
      </disk>
      <disk type="file" device="disk">
        <driver name="qemu" type="vmdk"/>
        <source file="/images/gamma.vmdk"/>
        <target dev="vda" bus="virtio"/>
      </disk>
    </devices>
  </domain>
</node>
"#;

const DELTA_XML: &str = r#"<domain type="test">
  <name>delta</name>
  <uuid>d4d4d4d4-0000-4000-8000-000000000004</uuid>
  <memory unit="MiB">512</memory>
  <vcpu>1</vcpu>
  <os><type>hvm</type></os>
  <devices>
    <disk type="file" device="disk">
      <driver name="qemu" type="qcow2"/>
      <source file="/images/delta.qcow2"/>
      <target dev="vda" bus="virtio"/>
    </disk>
  </devices>
</domain>
"#;

/// A driver file of its own for one test, removed when the test ends.
struct DriverFile(PathBuf);

impl DriverFile {
    fn write() -> DriverFile {
        let path = std::env::temp_dir().join(format!("cherry-agent-{}.xml", Uuid::new_v4()));
        std::fs::write(&path, DRIVER_XML).expect("the temp dir is writable");
        DriverFile(path)
    }

    fn connect(&self) -> Connect {
        let uri = format!("test://{}", self.0.display());
        Connect::open(Some(&uri)).expect("the test driver opens its own file")
    }
}

impl Drop for DriverFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn bridge_config(http_addr: SocketAddr, grpc_addr: SocketAddr) -> Config {
    let mut config = Config::new(SigningKey::Secret(SECRET.to_vec()), AGENT_TOKEN.to_owned());
    config.http_addr = http_addr;
    config.grpc_addr = grpc_addr;
    config.intervals = Intervals {
        state: Duration::from_millis(100),
        connections: Duration::from_secs(10),
        disks: Duration::from_millis(200),
    };
    config.shutdown_grace = Duration::from_secs(2);
    config
}

async fn start_bridge() -> Bridge {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    Bridge::start(bridge_config(any, any))
        .await
        .expect("a bridge starts on ephemeral ports")
}

fn agent_config(bridge: &Bridge) -> AgentConfig {
    let mut config = AgentConfig::new(
        format!("http://{}", bridge.grpc_addr()),
        AGENT_TOKEN.to_owned(),
        "test-host".to_owned(),
    );
    config.state_interval = Duration::from_millis(100);
    config.disks_interval = Duration::from_millis(300);
    config.retry_initial = Duration::from_millis(50);
    config.retry_max = Duration::from_millis(200);
    config
}

/// The agent, running in-process on a clone of the test's connection.
struct RunningAgent {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl RunningAgent {
    fn start(config: AgentConfig, connection: &Connect) -> RunningAgent {
        let shared = connection.clone();
        let connector: agent::Connector = Arc::new(move || Ok(shared.clone()));
        let stop = CancellationToken::new();
        let task = tokio::spawn(agent::run(config, connector, stop.clone()));
        RunningAgent { stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the agent stops when asked")
            .expect("the agent task does not panic");
    }
}

/// What a frontend on the `global` scope has been told so far.
#[derive(Default)]
struct Picture {
    /// MachineProperties by UUID, from DATA_STATIC and CREATE.
    properties: HashMap<String, Value>,
    /// The latest DATA_DYNAMIC body.
    state: serde_json::Map<String, Value>,
    /// The latest DATA_DYNAMIC_DISKS body.
    disks: serde_json::Map<String, Value>,
    /// Lifecycle events in arrival order: (type, machine UUID).
    events: Vec<(String, String)>,
    /// CREATE messages per machine.
    creates: BTreeMap<String, usize>,
    /// DELETE messages per machine.
    deletes: BTreeMap<String, usize>,
    /// The machines of the connect snapshot (the first DATA_STATIC).
    snapshot: Option<Vec<String>>,
    /// DATA_DYNAMIC messages received.
    state_messages: usize,
}

impl Picture {
    fn apply(&mut self, message: &Value) {
        let kind = message["type"].as_str().expect("every message has a type");
        let body = &message["body"];
        match kind {
            "DATA_STATIC" => {
                let entries = body.as_object().expect("DATA_STATIC is an object");
                if self.snapshot.is_none() {
                    self.snapshot = Some(entries.keys().cloned().collect());
                }
                for (uuid, properties) in entries {
                    self.properties.insert(uuid.clone(), properties.clone());
                }
            }
            "CREATE" => {
                let uuid = body["uuid"].as_str().expect("CREATE names its machine");
                *self.creates.entry(uuid.to_owned()).or_default() += 1;
                self.properties.insert(uuid.to_owned(), body.clone());
            }
            "DELETE" => {
                let uuid = body["uuid"].as_str().expect("DELETE names its machine");
                *self.deletes.entry(uuid.to_owned()).or_default() += 1;
                self.properties.remove(uuid);
            }
            "DATA_DYNAMIC" => {
                self.state = body.as_object().expect("DATA_DYNAMIC is an object").clone();
                self.state_messages += 1;
            }
            "DATA_DYNAMIC_DISKS" => {
                self.disks = body.as_object().expect("disks are an object").clone();
            }
            "DATA_DYNAMIC_CONNECTIONS" => {}
            event => {
                let uuid = body["uuid"].as_str().expect("an event names its machine");
                self.events.push((event.to_owned(), uuid.to_owned()));
            }
        }
    }

    fn events_of(&self, uuid: &str) -> Vec<&str> {
        self.events
            .iter()
            .filter(|(_, machine)| machine == uuid)
            .map(|(kind, _)| kind.as_str())
            .collect()
    }

    fn has_state_of(&self, uuids: &[&str]) -> bool {
        uuids.iter().all(|uuid| self.state.contains_key(*uuid))
    }
}

/// A WebSocket on `/ws/machines/global` as an administrator.
struct Frontend {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    picture: Picture,
}

impl Frontend {
    async fn open(bridge: &Bridge) -> Frontend {
        let token = token::mint(
            SECRET,
            &TokenRequest {
                account: Uuid::new_v4(),
                account_type: Some(AccountType::Administrative),
                permissions: Some(1),
                lifetime: Duration::from_secs(3600),
                token_type: "access".to_owned(),
            },
        )
        .expect("an HS256 token can be minted");
        let url = format!(
            "ws://{}/ws/machines/global?access_token={token}",
            bridge.http_addr()
        );
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("the bridge accepts the upgrade");
        Frontend {
            socket,
            picture: Picture::default(),
        }
    }

    /// Reads messages until `done` holds for the picture.
    async fn until(&mut self, what: &str, done: impl Fn(&Picture) -> bool) {
        let reading = async {
            while !done(&self.picture) {
                let frame = self
                    .socket
                    .next()
                    .await
                    .expect("the socket stays open")
                    .expect("frames arrive intact");
                if let Message::Text(text) = frame {
                    let message: Value = serde_json::from_str(&text).expect("frames are JSON");
                    self.picture.apply(&message);
                }
            }
        };
        if tokio::time::timeout(PATIENCE, reading).await.is_err() {
            panic!("timed out waiting for {what}");
        }
    }
}

/// Runs a blocking libvirt call off the runtime.
async fn libvirt<T: Send + 'static>(
    connection: &Connect,
    call: impl FnOnce(&Connect) -> T + Send + 'static,
) -> T {
    let connection = connection.clone();
    tokio::task::spawn_blocking(move || call(&connection))
        .await
        .expect("the libvirt call does not panic")
}

fn disk_summary(disks: &Value) -> Vec<(bool, String, String)> {
    disks
        .as_array()
        .expect("disks are a list")
        .iter()
        .map(|disk| {
            (
                disk["system"].as_bool().expect("system is a bool"),
                disk["name"].as_str().expect("a disk has a name").to_owned(),
                disk["type"].as_str().expect("a disk has a type").to_owned(),
            )
        })
        .collect()
}

/// One test's world: a test-driver file, the connection the agent and the
/// test share, a bridge, the agent between them and a frontend on `global`.
struct Scene {
    _driver: DriverFile,
    connection: Connect,
    bridge: Bridge,
    agent: RunningAgent,
    frontend: Frontend,
}

impl Scene {
    async fn start() -> Scene {
        let driver = DriverFile::write();
        let connection = driver.connect();
        let bridge = start_bridge().await;
        let agent = RunningAgent::start(agent_config(&bridge), &connection);
        let frontend = Frontend::open(&bridge).await;
        Scene {
            _driver: driver,
            connection,
            bridge,
            agent,
            frontend,
        }
    }
}

/// Stops the agent before the bridge, so the bridge sees a clean end.
async fn stop_both(agent: RunningAgent, bridge: Bridge) {
    agent.stop().await;
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_domain_appears_with_its_disks_state_and_console_port() {
    let Scene {
        _driver,
        connection: _,
        bridge,
        agent,
        mut frontend,
    } = Scene::start().await;

    frontend
        .until("all three machines with state and disk usage", |picture| {
            let machines = [ALPHA, BETA, GAMMA];
            machines
                .iter()
                .all(|uuid| picture.properties.contains_key(*uuid))
                && picture.has_state_of(&machines)
                && machines
                    .iter()
                    .all(|uuid| picture.disks.contains_key(*uuid))
        })
        .await;
    let picture = &frontend.picture;

    // Properties: the domain name as title, disks from the description.
    let alpha = &picture.properties[ALPHA];
    assert_eq!(alpha["title"], "alpha");
    assert_eq!(
        disk_summary(&alpha["disks"]),
        [
            (true, "vda".to_owned(), "qcow2".to_owned()),
            (false, "vdb".to_owned(), "raw".to_owned()),
        ]
    );
    assert!(alpha["disks"][0]["size_bytes"].as_i64().expect("a size") > 0);
    assert_eq!(
        disk_summary(&picture.properties[BETA]["disks"]),
        [
            (false, "vda".to_owned(), "qcow2".to_owned()),
            (true, "sda".to_owned(), "raw".to_owned()),
        ]
    );
    assert_eq!(
        disk_summary(&picture.properties[GAMMA]["disks"]),
        [(true, "vda".to_owned(), "vmdk".to_owned())]
    );

    // State: running alpha with its console, beta off, gamma without one.
    let alpha = &picture.state[ALPHA];
    assert_eq!(alpha["active"], true);
    assert_eq!(alpha["loading"], false);
    assert_eq!(alpha["vcpu"], 2);
    assert_eq!(alpha["ram_max"], 2048);
    assert_eq!(alpha["ram_used"], 1024);
    assert_eq!(alpha["ras_ip"], "127.0.0.1");
    assert_eq!(alpha["ras_port"], 5901);
    let beta = &picture.state[BETA];
    assert_eq!(beta["active"], false);
    assert_eq!(beta["ram_max"], 1024);
    assert_eq!(beta["ram_used"], Value::Null);
    assert_eq!(beta["ras_port"], Value::Null);
    let gamma = &picture.state[GAMMA];
    assert_eq!(gamma["active"], true);
    assert_eq!(gamma["vcpu"], 4);
    assert_eq!(gamma["ras_port"], Value::Null);

    // Disk usage: the block allocation of every disk.
    let usage = &picture.disks[ALPHA]["disks"];
    assert_eq!(usage[0]["name"], "vda");
    assert!(usage[0]["occupied_bytes"].as_i64().expect("occupied bytes") > 0);
    assert!(picture.events.is_empty(), "nothing happened, so no events");

    drop(frontend);
    stop_both(agent, bridge).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_and_stopping_domains_sends_lifecycle_events_and_state() {
    let Scene {
        _driver,
        connection,
        bridge,
        agent,
        mut frontend,
    } = Scene::start().await;
    frontend
        .until("the first state of every machine", |picture| {
            picture.has_state_of(&[ALPHA, BETA, GAMMA])
        })
        .await;

    // Beta boots: start then success, then its console and boot time.
    libvirt(&connection, |connection| {
        let beta = connection
            .lookup_domain_by_name("beta")
            .expect("beta exists");
        beta.create().expect("the test driver starts beta");
    })
    .await;
    frontend
        .until("beta running with its console", |picture| {
            let beta = &picture.state.get(BETA);
            picture.events_of(BETA).len() == 2
                && beta.is_some_and(|state| state["active"] == true && state["ras_port"] == 5902)
        })
        .await;
    assert_eq!(
        frontend.picture.events_of(BETA),
        ["BOOTUP_START", "BOOTUP_SUCCESS"]
    );
    assert!(frontend.picture.state[BETA]["boot_timestamp"].is_string());
    assert_eq!(frontend.picture.state[BETA]["ram_used"], 1024);

    // Alpha shuts down: start then success, and its console goes away.
    libvirt(&connection, |connection| {
        let alpha = connection
            .lookup_domain_by_name("alpha")
            .expect("alpha exists");
        alpha.shutdown().expect("the test driver shuts alpha down");
    })
    .await;
    frontend
        .until("alpha off", |picture| {
            let alpha = &picture.state.get(ALPHA);
            picture.events_of(ALPHA).len() == 2
                && alpha.is_some_and(|state| state["active"] == false)
        })
        .await;
    assert_eq!(
        frontend.picture.events_of(ALPHA),
        ["SHUTDOWN_START", "SHUTDOWN_SUCCESS"]
    );
    let alpha = &frontend.picture.state[ALPHA];
    assert_eq!(alpha["ras_port"], Value::Null);
    assert_eq!(alpha["boot_timestamp"], Value::Null);
    assert!(frontend.picture.events_of(GAMMA).is_empty());

    drop(frontend);
    stop_both(agent, bridge).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defined_and_undefined_domains_come_and_go() {
    let Scene {
        _driver,
        connection,
        bridge,
        agent,
        mut frontend,
    } = Scene::start().await;
    frontend
        .until("the first state of every machine", |picture| {
            picture.has_state_of(&[ALPHA, BETA, GAMMA])
        })
        .await;

    libvirt(&connection, |connection| {
        connection
            .define_domain_xml(DELTA_XML)
            .expect("the test driver defines delta");
    })
    .await;
    frontend
        .until("delta created", |picture| {
            picture.properties.contains_key(DELTA)
        })
        .await;
    assert_eq!(frontend.picture.properties[DELTA]["title"], "delta");

    libvirt(&connection, |connection| {
        let delta = connection
            .lookup_domain_by_name("delta")
            .expect("delta exists");
        delta.undefine().expect("the test driver undefines delta");
    })
    .await;
    frontend
        .until("delta deleted", |picture| {
            picture.deletes.contains_key(DELTA)
        })
        .await;
    assert_eq!(frontend.picture.creates.get(DELTA), Some(&1));
    assert_eq!(frontend.picture.deletes.get(DELTA), Some(&1));
    assert!(frontend.picture.properties.contains_key(ALPHA));

    drop(frontend);
    stop_both(agent, bridge).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_bridge_gets_every_domain_back_exactly_once() {
    let driver = DriverFile::write();
    let connection = driver.connect();
    let bridge = start_bridge().await;
    let (http_addr, grpc_addr) = (bridge.http_addr(), bridge.grpc_addr());
    let mut config = agent_config(&bridge);
    // A retry slower than opening a socket, so the new bridge's frontend
    // is usually there before the agent's replay; the assertions below
    // hold either way.
    config.retry_initial = Duration::from_millis(500);
    config.retry_max = Duration::from_millis(500);
    let agent = RunningAgent::start(config, &connection);
    let mut before = Frontend::open(&bridge).await;
    before
        .until("every machine on the first bridge", |picture| {
            picture.has_state_of(&[ALPHA, BETA, GAMMA])
        })
        .await;

    // The bridge goes away and a new one, knowing nothing, takes its ports.
    drop(before);
    bridge.stop().await;
    let restarted = restart(http_addr, grpc_addr).await;
    let mut after = Frontend::open(&restarted).await;
    after
        .until("every machine back with fresh state", |picture| {
            picture.has_state_of(&[ALPHA, BETA, GAMMA])
        })
        .await;

    // A few more state rounds give any duplicate the time to show.
    let seen = after.picture.state_messages;
    after
        .until("five more state messages", |picture| {
            picture.state_messages >= seen + 5
        })
        .await;
    let picture = &after.picture;
    let in_snapshot = picture.snapshot.clone().unwrap_or_default();
    for uuid in [ALPHA, BETA, GAMMA] {
        let created = picture.creates.get(uuid).copied().unwrap_or(0);
        let arrived = created + usize::from(in_snapshot.iter().any(|known| known == uuid));
        assert_eq!(
            arrived, 1,
            "{uuid} arrives exactly once (CREATE or snapshot)"
        );
    }
    assert_eq!(picture.creates.len() + in_snapshot.len(), 3);
    assert!(
        picture.events.is_empty(),
        "a replay is not a lifecycle event"
    );

    drop(after);
    agent.stop().await;
    restarted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_hypervisor_reports_nothing_until_it_is_back() {
    let driver = DriverFile::write();
    let connection = driver.connect();
    let bridge = start_bridge().await;
    let reachable = Arc::new(AtomicBool::new(false));
    let connector: agent::Connector = {
        let reachable = reachable.clone();
        let shared = connection.clone();
        Arc::new(move || match reachable.load(Ordering::SeqCst) {
            true => Ok(shared.clone()),
            // A file that does not exist fails the way a dead daemon does:
            // with a libvirt error.
            false => Connect::open(Some("test:///nonexistent/cherry-agent.xml")),
        })
    };
    let stop = CancellationToken::new();
    let task = tokio::spawn(agent::run(agent_config(&bridge), connector, stop.clone()));
    let agent = RunningAgent { stop, task };
    let mut frontend = Frontend::open(&bridge).await;

    // Several state rounds while libvirt is away: no machine, no state.
    frontend
        .until("five state messages", |picture| picture.state_messages >= 5)
        .await;
    assert!(frontend.picture.properties.is_empty());
    assert!(frontend.picture.state.is_empty());

    reachable.store(true, Ordering::SeqCst);
    frontend
        .until("every machine once libvirt is back", |picture| {
            picture.has_state_of(&[ALPHA, BETA, GAMMA])
        })
        .await;
    assert!(
        frontend.picture.events.is_empty(),
        "coming back is not a boot"
    );

    drop(frontend);
    stop_both(agent, bridge).await;
}

/// A new bridge on the old ports; the old listeners may take a moment to
/// let go of them.
async fn restart(http_addr: SocketAddr, grpc_addr: SocketAddr) -> Bridge {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match Bridge::start(bridge_config(http_addr, grpc_addr)).await {
            Ok(bridge) => return bridge,
            Err(error) if tokio::time::Instant::now() < deadline => {
                eprintln!("restarting the bridge: {error}; trying again");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("the bridge cannot take its old ports back: {error}"),
        }
    }
}
