//! Machines: what the two writers (agents and control planes) say about a
//! machine, and the payload objects the frontends receive
//! (`MachineProperties`, `MachineState`, `MachineDisks`,
//! `MachineConnections`), with the contract's field names and order.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::account::{Account, Audience};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskType {
    Raw,
    Qcow2,
    Qed,
    Qcow,
    Luks,
    Vdi,
    Vmdk,
    Vpc,
    Vhdx,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StaticDisk {
    pub system: bool,
    pub name: String,
    pub size_bytes: u64,
    #[serde(rename = "type")]
    pub disk_type: DiskType,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DynamicDisk {
    pub system: bool,
    pub name: String,
    pub size_bytes: u64,
    #[serde(rename = "type")]
    pub disk_type: DiskType,
    pub occupied_bytes: u64,
}

/// Remote-desktop URLs; only the protocols a machine offers are written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RemoteAccess {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rdp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vnc: Option<String>,
}

impl RemoteAccess {
    pub fn is_empty(&self) -> bool {
        self.ssh.is_none() && self.rdp.is_none() && self.vnc.is_none()
    }
}

/// What a hypervisor agent knows about a machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentFacts {
    /// Shown as the title until a control plane sets one.
    pub name: Option<String>,
    pub disks: Vec<StaticDisk>,
}

/// What the platform decides about a machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlatformFacts {
    pub title: Option<String>,
    pub tags: Vec<String>,
    pub description: Option<String>,
    /// An administrative account.
    pub owner: Option<Account>,
    /// Client accounts keyed by their UUID.
    pub assigned_clients: BTreeMap<Uuid, Account>,
    /// `None` when the machine offers no remote desktop.
    pub connections: Option<RemoteAccess>,
}

/// A machine's properties as both writers left them. Each writer replaces
/// only its own half.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Properties {
    pub uuid: Uuid,
    pub agent: Option<AgentFacts>,
    pub platform: Option<PlatformFacts>,
}

impl Properties {
    pub fn new(uuid: Uuid) -> Self {
        Properties {
            uuid,
            agent: None,
            platform: None,
        }
    }

    /// The owner and the assigned clients: the accounts whose `account`
    /// scope includes this machine.
    pub fn audience(&self) -> Audience {
        let Some(platform) = &self.platform else {
            return Audience::new();
        };
        platform
            .owner
            .iter()
            .map(|owner| owner.uuid)
            .chain(platform.assigned_clients.keys().copied())
            .collect()
    }

    /// The platform's title, or else the agent's name.
    pub fn title(&self) -> Option<&str> {
        let platform_title = self.platform.as_ref().and_then(|p| p.title.as_deref());
        platform_title.or_else(|| self.agent.as_ref().and_then(|a| a.name.as_deref()))
    }

    /// The `MachineProperties` object as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        let platform = self.platform.as_ref();
        let agent = self.agent.as_ref();
        let view = PropertiesView {
            uuid: self.uuid,
            title: self.title(),
            tags: platform.map(|p| p.tags.as_slice()).unwrap_or_default(),
            description: platform.and_then(|p| p.description.as_deref()),
            owner: platform.and_then(|p| p.owner.as_ref()),
            assigned_clients: platform.map(|p| &p.assigned_clients),
            connections: platform.and_then(|p| p.connections.as_ref()),
            disks: agent.map(|a| a.disks.as_slice()),
        };
        serde_json::to_vec(&view).expect("properties always serialize")
    }
}

#[derive(Serialize)]
struct PropertiesView<'a> {
    uuid: Uuid,
    title: Option<&'a str>,
    tags: &'a [String],
    description: Option<&'a str>,
    owner: Option<&'a Account>,
    #[serde(serialize_with = "clients_or_empty")]
    assigned_clients: Option<&'a BTreeMap<Uuid, Account>>,
    connections: Option<&'a RemoteAccess>,
    disks: Option<&'a [StaticDisk]>,
}

fn clients_or_empty<S: serde::Serializer>(
    clients: &Option<&BTreeMap<Uuid, Account>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match clients {
        Some(clients) => clients.serialize(serializer),
        None => BTreeMap::<Uuid, Account>::new().serialize(serializer),
    }
}

/// Live state as an agent reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MachineState {
    pub uuid: Uuid,
    pub active: bool,
    pub loading: bool,
    pub vcpu: u32,
    /// MiB.
    pub ram_max: Option<u64>,
    /// MiB.
    pub ram_used: Option<u64>,
    #[serde(serialize_with = "rfc3339_or_null")]
    pub boot_timestamp: Option<DateTime<Utc>>,
    pub ras_ip: Option<String>,
    pub ras_port: Option<u16>,
}

impl MachineState {
    /// The JSON object, exactly as `Serialize` writes it, written directly:
    /// agents report every machine every second and the generic path (each
    /// key escaped, each field through a serializer call) was most of the
    /// cost of accepting a report.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"{\"uuid\":\"");
        let mut buffer = Uuid::encode_buffer();
        out.extend_from_slice(self.uuid.hyphenated().encode_lower(&mut buffer).as_bytes());
        out.extend_from_slice(b"\",\"active\":");
        out.extend_from_slice(if self.active { b"true" } else { b"false" });
        out.extend_from_slice(b",\"loading\":");
        out.extend_from_slice(if self.loading { b"true" } else { b"false" });
        out.extend_from_slice(b",\"vcpu\":");
        push_number(&mut out, Some(u64::from(self.vcpu)));
        out.extend_from_slice(b",\"ram_max\":");
        push_number(&mut out, self.ram_max);
        out.extend_from_slice(b",\"ram_used\":");
        push_number(&mut out, self.ram_used);
        out.extend_from_slice(b",\"boot_timestamp\":");
        match &self.boot_timestamp {
            // RFC 3339 text holds nothing JSON must escape.
            Some(at) => {
                out.push(b'"');
                out.extend_from_slice(at.to_rfc3339_opts(SecondsFormat::AutoSi, true).as_bytes());
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"ras_ip\":");
        serde_json::to_writer(&mut out, &self.ras_ip).expect("a string serializes");
        out.extend_from_slice(b",\"ras_port\":");
        push_number(&mut out, self.ras_port.map(u64::from));
        out.push(b'}');
        out
    }
}

fn push_number(out: &mut Vec<u8>, value: Option<u64>) {
    match value {
        Some(value) => {
            use std::io::Write;
            write!(out, "{value}").expect("writing to memory cannot fail");
        }
        None => out.extend_from_slice(b"null"),
    }
}

/// The same text chrono's own `Serialize` writes, formatted in one piece:
/// chrono's streams it a character at a time through the JSON escaper,
/// which was the largest single cost of accepting a state report.
fn rfc3339_or_null<S: serde::Serializer>(
    value: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(at) => serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        None => serializer.serialize_none(),
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MachineDisks {
    pub uuid: Uuid,
    /// `None` until an agent reports the disks' occupation.
    pub disks: Option<Vec<DynamicDisk>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MachineConnections {
    pub uuid: Uuid,
    /// `None` until an agent reports who is connected.
    pub active_connections: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_timestamp_serializes_as_chrono_does() {
        for at in [
            DateTime::from_timestamp(1_780_000_000, 0),
            DateTime::from_timestamp(1_780_000_000, 123_456_000),
        ] {
            let at = at.expect("in range");
            let state = MachineState {
                uuid: Uuid::nil(),
                active: true,
                loading: false,
                vcpu: 1,
                ram_max: None,
                ram_used: None,
                boot_timestamp: Some(at),
                ras_ip: None,
                ras_port: None,
            };
            let json = serde_json::to_value(&state).expect("serializes");
            let chrono = serde_json::to_value(at).expect("serializes");
            assert_eq!(json["boot_timestamp"], chrono);
        }
    }

    #[test]
    fn hand_written_state_json_matches_serde() {
        let full = MachineState {
            uuid: Uuid::new_v4(),
            active: true,
            loading: false,
            vcpu: 4,
            ram_max: Some(8192),
            ram_used: Some(1234),
            boot_timestamp: DateTime::from_timestamp(1_780_000_000, 5_000),
            ras_ip: Some("10.0.0.\"1\\\u{1}é".to_owned()),
            ras_port: Some(5901),
        };
        let empty = MachineState {
            uuid: Uuid::nil(),
            active: false,
            loading: true,
            vcpu: 0,
            ram_max: None,
            ram_used: None,
            boot_timestamp: None,
            ras_ip: None,
            ras_port: None,
        };
        for state in [full, empty] {
            let derived = serde_json::to_vec(&state).expect("serializes");
            assert_eq!(
                String::from_utf8(state.to_json()).expect("UTF-8"),
                String::from_utf8(derived).expect("UTF-8")
            );
        }
    }
}
