//! gRPC validation on arbitrary protobuf messages: no panic, and whatever
//! is accepted is within the bounds of `grpc::validate` and renders as the
//! contract says (UUIDs, RFC 3339 times, `YYYY-MM-DD` dates).

use cherry_bridge::grpc::validate::{self, *};
use cherry_bridge::proto;
use chrono::DateTime;
use proptest::prelude::*;
use serde_json::Value;
use uuid::Uuid;

/// Text around the bounds: UUIDs, short text, and text near 256 chars.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<u128>().prop_map(|n| Uuid::from_u128(n).to_string()),
        4 => ".{0,12}",
        1 => prop::collection::vec(any::<char>(), 250..260).prop_map(String::from_iter),
        1 => "[0-9]{4,6}-[0-9]{1,2}-[0-9]{1,2}",
        1 => "[+-]?[0-9]{1,6}-[0-9]{2}-[0-9]{2}",
    ]
}

fn texts(max: usize) -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(text(), 0..max)
}

fn number() -> impl Strategy<Value = i64> {
    prop_oneof![any::<i64>(), -2i64..70_000, Just(i64::MIN), Just(i64::MAX)]
}

fn timestamp() -> impl Strategy<Value = Option<prost_types::Timestamp>> {
    let seconds = prop_oneof![
        any::<i64>(),
        -62_135_596_800i64..=253_402_300_799, // years 1 to 9999
        -100_000_000_000i64..400_000_000_000,
    ];
    let nanos = prop_oneof![
        0i32..1_000_000_000,
        any::<i32>(),
        999_999_990i32..2_000_000_100
    ];
    prop::option::of(
        (seconds, nanos).prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
    )
}

fn enum_value() -> impl Strategy<Value = i32> {
    prop_oneof![4 => -1i32..12, 1 => any::<i32>()]
}

fn account() -> impl Strategy<Value = proto::Account> {
    (
        text(),
        prop::collection::vec(prop::option::of(text()), 5),
        timestamp(),
        any::<bool>(),
        enum_value(),
        (texts(4), number(), texts(4)),
    )
        .prop_map(
            |(uuid, strings, last_active, disabled, account_type, rest)| {
                let (roles, permissions, groups) = rest;
                proto::Account {
                    uuid,
                    username: strings[0].clone(),
                    email: strings[1].clone(),
                    name: strings[2].clone(),
                    surname: strings[3].clone(),
                    creation_date: strings[4].clone(),
                    last_active,
                    disabled,
                    account_type,
                    roles,
                    permissions,
                    groups,
                }
            },
        )
}

fn static_disk() -> impl Strategy<Value = proto::StaticDisk> {
    (any::<bool>(), text(), number(), enum_value()).prop_map(|(system, name, size, kind)| {
        proto::StaticDisk {
            system,
            name,
            size_bytes: size,
            r#type: kind,
        }
    })
}

fn dynamic_disk() -> impl Strategy<Value = proto::DynamicDisk> {
    (static_disk(), number()).prop_map(|(disk, occupied)| proto::DynamicDisk {
        system: disk.system,
        name: disk.name,
        size_bytes: disk.size_bytes,
        r#type: disk.r#type,
        occupied_bytes: occupied,
    })
}

fn state() -> impl Strategy<Value = proto::MachineState> {
    (
        text(),
        any::<(bool, bool)>(),
        prop_oneof![any::<i32>(), -1i32..64],
        prop::option::of(number()),
        prop::option::of(number()),
        timestamp(),
        prop::option::of(text()),
        prop::option::of(prop_oneof![any::<i32>(), -1i32..70_000]),
    )
        .prop_map(
            |(uuid, (active, loading), vcpu, ram_max, ram_used, boot, ras_ip, ras_port)| {
                proto::MachineState {
                    uuid,
                    active,
                    loading,
                    vcpu,
                    ram_max,
                    ram_used,
                    boot_timestamp: boot,
                    ras_ip,
                    ras_port,
                }
            },
        )
}

fn decision() -> impl Strategy<Value = proto::MachineDecision> {
    (
        text(),
        prop::option::of(text()),
        texts(70),
        prop::option::of(text()),
        prop::option::of(account()),
        prop::collection::vec(account(), 0..4),
        prop::option::of(
            prop::collection::vec(prop::option::of(text()), 3).prop_map(|urls| {
                proto::RemoteAccess {
                    ssh: urls[0].clone(),
                    rdp: urls[1].clone(),
                    vnc: urls[2].clone(),
                }
            }),
        ),
    )
        .prop_map(
            |(uuid, title, tags, description, owner, assigned_clients, connections)| {
                proto::MachineDecision {
                    uuid,
                    title,
                    tags,
                    description,
                    owner,
                    assigned_clients,
                    connections,
                }
            },
        )
}

fn chars(text: &str) -> usize {
    text.chars().count()
}

/// A rendered time must read back as RFC 3339 with a four-digit year.
fn check_time(value: &Value) -> Result<(), TestCaseError> {
    let Some(text) = value.as_str() else {
        prop_assert!(value.is_null(), "a time is a string or null: {value}");
        return Ok(());
    };
    prop_assert!(
        DateTime::parse_from_rfc3339(text).is_ok(),
        "not RFC 3339: {text}"
    );
    prop_assert!(text.as_bytes()[4] == b'-', "not a four-digit year: {text}");
    Ok(())
}

fn check_account(account: &cherry_bridge::account::Account) -> Result<(), TestCaseError> {
    for text in [
        &account.username,
        &account.email,
        &account.name,
        &account.surname,
    ]
    .into_iter()
    .flatten()
    {
        prop_assert!(chars(text) <= MAX_NAME);
    }
    prop_assert!(account.roles.len() <= MAX_IDS && account.groups.len() <= MAX_IDS);
    let json = serde_json::to_value(account).expect("an account renders");
    check_time(&json["last_active"])?;
    if let Some(date) = json["creation_date"].as_str() {
        prop_assert!(
            chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok() && date.len() == 10,
            "not YYYY-MM-DD: {date}"
        );
    }
    Ok(())
}

proptest! {
    #[test]
    fn agent_properties_within_bounds(
        uuid in text(),
        name in text(),
        disks in prop::collection::vec(static_disk(), 0..4),
    ) {
        let message = proto::AgentProperties { uuid, name, disks };
        if let Ok((_, facts)) = validate::agent_properties("properties", &message) {
            prop_assert!(facts.disks.len() <= MAX_DISKS);
            prop_assert!(facts.name.as_deref().is_none_or(|n| chars(n) <= MAX_NAME && !n.is_empty()));
            for disk in &facts.disks {
                prop_assert!(chars(&disk.name) <= MAX_NAME);
                prop_assert!(i64::try_from(disk.size_bytes).is_ok());
            }
        }
    }

    #[test]
    fn state_within_bounds(message in state()) {
        if let Ok(state) = validate::state("state", &message) {
            prop_assert_eq!(state.uuid, Uuid::parse_str(&message.uuid).expect("accepted"));
            prop_assert!(state.ras_port.is_none_or(|port| port > 0));
            prop_assert!(state.ras_ip.as_deref().is_none_or(|ip| chars(ip) <= MAX_NAME));
            let json = serde_json::to_value(&state).expect("a state renders");
            check_time(&json["boot_timestamp"])?;
        }
    }

    #[test]
    fn disks_and_connections_within_bounds(
        uuid in text(),
        disks in prop::collection::vec(dynamic_disk(), 0..4),
        active in texts(6),
    ) {
        let message = proto::MachineDisks { uuid: uuid.clone(), disks };
        if let Ok(disks) = validate::disks("disks", &message) {
            for disk in disks.disks.iter().flatten() {
                prop_assert!(chars(&disk.name) <= MAX_NAME);
            }
        }
        let message = proto::MachineConnections { uuid, active_connections: active };
        if let Ok(connections) = validate::connections("connections", &message) {
            for entry in connections.active_connections.iter().flatten() {
                prop_assert!(chars(entry) <= MAX_NAME);
            }
        }
    }

    #[test]
    fn lifecycle_within_bounds(
        machine_uuid in text(),
        kind in enum_value(),
        error in prop::option::of(text()),
    ) {
        let message = proto::LifecycleEvent { machine_uuid, kind, error };
        if let Ok((_, kind, error)) = validate::lifecycle("event", &message) {
            prop_assert!(error.is_none() || kind.is_failure());
            prop_assert!(error.as_deref().is_none_or(|e| chars(e) <= MAX_ERROR));
        }
    }

    #[test]
    fn accounts_within_bounds(message in account()) {
        if let Ok(account) = validate::account("account", &message, None) {
            check_account(&account)?;
        }
    }

    #[test]
    fn decisions_within_bounds(message in decision()) {
        if let Ok((_, facts)) = validate::decision("machine", &message) {
            prop_assert!(facts.tags.len() <= MAX_TAGS);
            prop_assert!(facts.tags.iter().all(|tag| chars(tag) <= MAX_TAG));
            prop_assert!(facts.title.as_deref().is_none_or(|t| chars(t) <= MAX_NAME));
            prop_assert!(facts.description.as_deref().is_none_or(|d| chars(d) <= MAX_DESCRIPTION));
            prop_assert!(facts.assigned_clients.len() <= MAX_CLIENTS);
            for client in facts.assigned_clients.values() {
                check_account(client)?;
            }
            if let Some(owner) = &facts.owner {
                check_account(owner)?;
            }
        }
    }
}
