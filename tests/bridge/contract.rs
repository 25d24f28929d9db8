//! The envelope, the payload fields and their order, the connect messages
//! and the cadences, exactly as the contract lists them.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};

use cherry_bridge::proto;
use serde_json::Value;
use uuid::Uuid;

use crate::harness::*;

const PROPERTIES: [&str; 8] = [
    "uuid",
    "title",
    "tags",
    "description",
    "owner",
    "assigned_clients",
    "connections",
    "disks",
];
const ADMINISTRATOR: [&str; 11] = [
    "uuid",
    "username",
    "email",
    "name",
    "surname",
    "creation_date",
    "last_active",
    "disabled",
    "account_type",
    "roles",
    "permissions",
];
const CLIENT: [&str; 10] = [
    "uuid",
    "username",
    "email",
    "name",
    "surname",
    "creation_date",
    "last_active",
    "disabled",
    "account_type",
    "groups",
];
const STATE: [&str; 9] = [
    "uuid",
    "active",
    "loading",
    "vcpu",
    "ram_max",
    "ram_used",
    "boot_timestamp",
    "ras_ip",
    "ras_port",
];

fn assert_envelope(envelope: &Envelope) {
    assert!(
        envelope.raw.starts_with(&format!(
            "{{\"uuid\":\"{}\",\"type\":\"{}\",\"body\":",
            envelope.uuid, envelope.kind
        )),
        "envelope keys out of order: {}",
        envelope.raw
    );
    assert!(
        envelope
            .raw
            .ends_with(&format!(",\"timestamp\":\"{}\"}}", envelope.timestamp))
    );
    let uuid = Uuid::parse_str(&envelope.uuid).expect("envelope uuid is a UUID");
    assert_eq!(uuid.get_version_num(), 4);
    assert!(envelope.timestamp.ends_with('Z'), "timestamp in UTC with Z");
    chrono::DateTime::parse_from_rfc3339(&envelope.timestamp).expect("timestamp is RFC 3339");
}

/// A machine with every field set, reported by both writers.
/// Returns the machine and the agent stream whose openness keeps its state
/// fresh.
async fn described_machine(bridge: &mut TestBridge, owner: Uuid, client: Uuid) -> (Uuid, Agent) {
    let machine = Uuid::new_v4();
    let mut decision = decision(machine, owner, &[client]);
    decision.description = Some("described".to_owned());
    decision.connections = Some(proto::RemoteAccess {
        vnc: Some("vnc://10.0.0.1:5900".to_owned()),
        ..Default::default()
    });
    decision.owner.as_mut().expect("owner set").creation_date = Some("2026-01-02".to_owned());
    bridge.upsert_machine(decision).await;

    let mut agent = bridge.agent("contract").await;
    assert!(accepted(&agent.properties(machine, "vm-name").await));
    let mut live = state(machine, true);
    live.ras_ip = Some("10.0.0.1".to_owned());
    live.ras_port = Some(5900);
    live.boot_timestamp = Some(prost_types::Timestamp {
        seconds: 1_800_000_000,
        nanos: 0,
    });
    let reply = agent.send(proto::agent_message::Body::State(live)).await;
    assert!(accepted(&reply));
    let reply = agent
        .send(proto::agent_message::Body::Disks(proto::MachineDisks {
            uuid: machine.to_string(),
            disks: vec![proto::DynamicDisk {
                system: true,
                name: "root".to_owned(),
                size_bytes: 100,
                r#type: proto::DiskType::Raw as i32,
                occupied_bytes: 40,
            }],
        }))
        .await;
    assert!(accepted(&reply));
    (machine, agent)
}

#[tokio::test]
async fn global_connect_messages_have_the_contracts_fields_in_order() {
    let mut bridge = TestBridge::start().await;
    let owner = Uuid::new_v4();
    let client = Uuid::new_v4();
    let (machine, _agent) = described_machine(&mut bridge, owner, client).await;
    let key = machine.to_string();

    let mut socket = bridge.connect("global", &viewer_token(), "").await;
    let [properties, dynamic, disks, connections] = socket.connect_messages().await;
    for envelope in [&properties, &dynamic, &disks, &connections] {
        assert_envelope(envelope);
    }

    let entry = &properties.body[&key];
    assert_eq!(keys(entry), PROPERTIES);
    assert_eq!(entry["title"], "machine ".to_owned() + &key[..8]);
    assert_eq!(entry["tags"], serde_json::json!(["test"]));
    assert_eq!(
        entry["connections"],
        serde_json::json!({"vnc": "vnc://10.0.0.1:5900"})
    );
    assert_eq!(keys(&entry["owner"]), ADMINISTRATOR);
    assert_eq!(entry["owner"]["account_type"], "administrative");
    assert_eq!(entry["owner"]["creation_date"], "2026-01-02");
    assert_eq!(entry["owner"]["email"], Value::Null);
    let assigned = &entry["assigned_clients"][client.to_string()];
    assert_eq!(keys(assigned), CLIENT);
    assert_eq!(assigned["account_type"], "client");
    assert_eq!(
        keys(&entry["disks"][0]),
        ["system", "name", "size_bytes", "type"]
    );
    assert_eq!(entry["disks"][0]["type"], "qcow2");

    let live = &dynamic.body[&key];
    assert_eq!(keys(live), STATE);
    assert_eq!(live["ras_port"], 5900);
    assert_eq!(live["ram_used"], 512);
    assert_eq!(live["boot_timestamp"], "2027-01-15T08:00:00Z");

    let disk_entry = &disks.body[&key];
    assert_eq!(keys(disk_entry), ["uuid", "disks"]);
    assert_eq!(
        keys(&disk_entry["disks"][0]),
        ["system", "name", "size_bytes", "type", "occupied_bytes"]
    );
    assert_eq!(disk_entry["disks"][0]["occupied_bytes"], 40);

    let connection_entry = &connections.body[&key];
    assert_eq!(keys(connection_entry), ["uuid", "active_connections"]);
    assert_eq!(connection_entry["active_connections"], Value::Null);
}

#[tokio::test]
async fn account_and_subscribed_connect_messages_arrive_in_order() {
    let mut bridge = TestBridge::start().await;
    let owner = Uuid::new_v4();
    let client = Uuid::new_v4();
    let (machine, _agent) = described_machine(&mut bridge, owner, client).await;
    let key = machine.to_string();

    let owner_token = admin_token(owner, 0);
    let mut account = bridge.connect("account", &owner_token, "").await;
    let [properties, dynamic, ..] = account.connect_messages().await;
    assert_eq!(keys(&properties.body), [key.as_str()]);
    assert_eq!(keys(&dynamic.body), [key.as_str()]);

    let extra = format!("&machine_uuid={machine}");
    let mut subscribed = bridge
        .connect("subscribed", &client_token(client), &extra)
        .await;
    let [properties, ..] = subscribed.connect_messages().await;
    assert_eq!(keys(&properties.body), [key.as_str()]);

    // An account that sees nothing gets an empty picture, not an error.
    let mut stranger = bridge
        .connect("account", &admin_token(Uuid::new_v4(), 0), "")
        .await;
    let [properties, dynamic, disks, connections] = stranger.connect_messages().await;
    for envelope in [properties, dynamic, disks, connections] {
        assert_eq!(envelope.body, serde_json::json!({}));
    }
}

#[tokio::test]
async fn periodic_messages_follow_their_configured_intervals() {
    let mut config = config();
    config.intervals.state = Duration::from_millis(100);
    config.intervals.connections = Duration::from_millis(300);
    config.intervals.disks = Duration::from_millis(600);
    let mut bridge = TestBridge::start_with(config).await;
    let owner = Uuid::new_v4();
    let _agent = described_machine(&mut bridge, owner, Uuid::new_v4()).await;

    let mut socket = bridge.connect("account", &admin_token(owner, 0), "").await;
    socket.connect_messages().await;
    let mut times: HashMap<String, Vec<DateTime<Utc>>> = HashMap::new();
    let mut seen = HashSet::new();
    while times.get("DATA_DYNAMIC_DISKS").map_or(0, Vec::len) < 3 {
        let envelope = socket.next().await;
        assert!(
            seen.insert(envelope.uuid.clone()),
            "envelope uuids never repeat"
        );
        let at = DateTime::parse_from_rfc3339(&envelope.timestamp).expect("RFC 3339");
        times
            .entry(envelope.kind)
            .or_default()
            .push(at.with_timezone(&Utc));
    }

    // The bridge stamps each frame when it builds it, so the gaps between
    // timestamps are the cadence, whatever the client's scheduling.
    for (kind, interval) in [
        ("DATA_DYNAMIC", 100),
        ("DATA_DYNAMIC_CONNECTIONS", 300),
        ("DATA_DYNAMIC_DISKS", 600),
    ] {
        let gap = median_gap_ms(&times[kind]);
        assert!(
            (interval * 6 / 10..=interval * 14 / 10).contains(&gap),
            "{kind} every {gap} ms, configured {interval} ms"
        );
    }
}

fn median_gap_ms(times: &[DateTime<Utc>]) -> i64 {
    let mut gaps: Vec<i64> = times
        .windows(2)
        .map(|pair| (pair[1] - pair[0]).num_milliseconds())
        .collect();
    gaps.sort_unstable();
    gaps[gaps.len() / 2]
}
