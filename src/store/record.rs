//! The records the store writes: machine properties (both writers' halves)
//! and directory accounts, as JSON.
//!
//! They are separate from the domain types on purpose. The domain types
//! serialize into the WebSocket contract, which follows the frontends; the
//! records follow the store's format version. Either can change without the
//! other silently changing with it. New optional fields take a serde default
//! so older records still read; anything else is a new format version.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::account::{Account, AccountType};
use crate::machine::{AgentFacts, DiskType, PlatformFacts, Properties, RemoteAccess, StaticDisk};

/// One machine's properties, keyed in the store by its UUID.
#[derive(Debug, Serialize, Deserialize)]
pub struct MachineRecord {
    pub uuid: Uuid,
    /// What the hypervisor agent last reported, if it ever did.
    pub agent: Option<AgentRecord>,
    /// What the control plane last decided, if it ever did.
    pub platform: Option<PlatformRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AgentRecord {
    pub name: Option<String>,
    pub disks: Vec<DiskRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DiskRecord {
    pub system: bool,
    pub name: String,
    pub size_bytes: u64,
    pub format: DiskFormat,
}

/// The disk image formats, spelled as in the contract so a record is
/// readable by eye.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
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

#[derive(Debug, Serialize, Deserialize)]
pub struct PlatformRecord {
    pub title: Option<String>,
    pub tags: Vec<String>,
    pub description: Option<String>,
    pub owner: Option<AccountRecord>,
    /// In UUID order; the map key is each account's own `uuid`.
    pub assigned_clients: Vec<AccountRecord>,
    pub connections: Option<RemoteAccessRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RemoteAccessRecord {
    pub ssh: Option<String>,
    pub rdp: Option<String>,
    pub vnc: Option<String>,
}

/// An account, in the directory or embedded in a machine's properties.
#[derive(Debug, Serialize, Deserialize)]
pub struct AccountRecord {
    pub uuid: Uuid,
    pub username: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub surname: Option<String>,
    pub creation_date: Option<NaiveDate>,
    pub last_active: Option<DateTime<Utc>>,
    pub disabled: bool,
    pub kind: AccountKind,
    pub roles: Vec<Uuid>,
    pub permissions: u64,
    pub groups: Vec<Uuid>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountKind {
    Administrative,
    Client,
}

// ----- domain to record ------------------------------------------------------

impl From<&Properties> for MachineRecord {
    fn from(properties: &Properties) -> Self {
        MachineRecord {
            uuid: properties.uuid,
            agent: properties.agent.as_ref().map(AgentRecord::from),
            platform: properties.platform.as_ref().map(PlatformRecord::from),
        }
    }
}

impl From<&AgentFacts> for AgentRecord {
    fn from(facts: &AgentFacts) -> Self {
        AgentRecord {
            name: facts.name.clone(),
            disks: facts.disks.iter().map(DiskRecord::from).collect(),
        }
    }
}

impl From<&StaticDisk> for DiskRecord {
    fn from(disk: &StaticDisk) -> Self {
        DiskRecord {
            system: disk.system,
            name: disk.name.clone(),
            size_bytes: disk.size_bytes,
            format: DiskFormat::from(disk.disk_type),
        }
    }
}

impl From<DiskType> for DiskFormat {
    fn from(disk_type: DiskType) -> Self {
        match disk_type {
            DiskType::Raw => DiskFormat::Raw,
            DiskType::Qcow2 => DiskFormat::Qcow2,
            DiskType::Qed => DiskFormat::Qed,
            DiskType::Qcow => DiskFormat::Qcow,
            DiskType::Luks => DiskFormat::Luks,
            DiskType::Vdi => DiskFormat::Vdi,
            DiskType::Vmdk => DiskFormat::Vmdk,
            DiskType::Vpc => DiskFormat::Vpc,
            DiskType::Vhdx => DiskFormat::Vhdx,
        }
    }
}

impl From<&PlatformFacts> for PlatformRecord {
    fn from(facts: &PlatformFacts) -> Self {
        PlatformRecord {
            title: facts.title.clone(),
            tags: facts.tags.clone(),
            description: facts.description.clone(),
            owner: facts.owner.as_ref().map(AccountRecord::from),
            assigned_clients: facts
                .assigned_clients
                .values()
                .map(AccountRecord::from)
                .collect(),
            connections: facts.connections.as_ref().map(|access| RemoteAccessRecord {
                ssh: access.ssh.clone(),
                rdp: access.rdp.clone(),
                vnc: access.vnc.clone(),
            }),
        }
    }
}

impl From<&Account> for AccountRecord {
    fn from(account: &Account) -> Self {
        AccountRecord {
            uuid: account.uuid,
            username: account.username.clone(),
            email: account.email.clone(),
            name: account.name.clone(),
            surname: account.surname.clone(),
            creation_date: account.creation_date,
            last_active: account.last_active,
            disabled: account.disabled,
            kind: match account.account_type {
                AccountType::Administrative => AccountKind::Administrative,
                AccountType::Client => AccountKind::Client,
            },
            roles: account.roles.clone(),
            permissions: account.permissions,
            groups: account.groups.clone(),
        }
    }
}

// ----- record to domain ------------------------------------------------------

impl From<MachineRecord> for Properties {
    fn from(record: MachineRecord) -> Self {
        Properties {
            uuid: record.uuid,
            agent: record.agent.map(AgentFacts::from),
            platform: record.platform.map(PlatformFacts::from),
        }
    }
}

impl From<AgentRecord> for AgentFacts {
    fn from(record: AgentRecord) -> Self {
        AgentFacts {
            name: record.name,
            disks: record.disks.into_iter().map(StaticDisk::from).collect(),
        }
    }
}

impl From<DiskRecord> for StaticDisk {
    fn from(record: DiskRecord) -> Self {
        StaticDisk {
            system: record.system,
            name: record.name,
            size_bytes: record.size_bytes,
            disk_type: DiskType::from(record.format),
        }
    }
}

impl From<DiskFormat> for DiskType {
    fn from(format: DiskFormat) -> Self {
        match format {
            DiskFormat::Raw => DiskType::Raw,
            DiskFormat::Qcow2 => DiskType::Qcow2,
            DiskFormat::Qed => DiskType::Qed,
            DiskFormat::Qcow => DiskType::Qcow,
            DiskFormat::Luks => DiskType::Luks,
            DiskFormat::Vdi => DiskType::Vdi,
            DiskFormat::Vmdk => DiskType::Vmdk,
            DiskFormat::Vpc => DiskType::Vpc,
            DiskFormat::Vhdx => DiskType::Vhdx,
        }
    }
}

impl From<PlatformRecord> for PlatformFacts {
    fn from(record: PlatformRecord) -> Self {
        let assigned_clients: BTreeMap<Uuid, Account> = record
            .assigned_clients
            .into_iter()
            .map(|client| (client.uuid, Account::from(client)))
            .collect();
        PlatformFacts {
            title: record.title,
            tags: record.tags,
            description: record.description,
            owner: record.owner.map(Account::from),
            assigned_clients,
            connections: record.connections.map(|access| RemoteAccess {
                ssh: access.ssh,
                rdp: access.rdp,
                vnc: access.vnc,
            }),
        }
    }
}

impl From<AccountRecord> for Account {
    fn from(record: AccountRecord) -> Self {
        Account {
            uuid: record.uuid,
            username: record.username,
            email: record.email,
            name: record.name,
            surname: record.surname,
            creation_date: record.creation_date,
            last_active: record.last_active,
            disabled: record.disabled,
            account_type: match record.kind {
                AccountKind::Administrative => AccountType::Administrative,
                AccountKind::Client => AccountType::Client,
            },
            roles: record.roles,
            permissions: record.permissions,
            groups: record.groups,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(uuid: Uuid) -> Account {
        Account {
            username: Some("clara".to_owned()),
            creation_date: NaiveDate::from_ymd_opt(2026, 1, 15),
            groups: vec![Uuid::from_u128(7)],
            ..Account::bare(uuid, AccountType::Client)
        }
    }

    #[test]
    fn properties_survive_a_round_trip_through_json() {
        let owner = Account {
            permissions: 1,
            roles: vec![Uuid::from_u128(9)],
            last_active: Some(Utc::now()),
            ..Account::bare(Uuid::from_u128(2), AccountType::Administrative)
        };
        let clients = [Uuid::from_u128(3), Uuid::from_u128(4)];
        let properties = Properties {
            uuid: Uuid::from_u128(1),
            agent: Some(AgentFacts {
                name: Some("web-01".to_owned()),
                disks: vec![StaticDisk {
                    system: true,
                    name: "root".to_owned(),
                    size_bytes: 20 << 30,
                    disk_type: DiskType::Vhdx,
                }],
            }),
            platform: Some(PlatformFacts {
                title: Some("Web".to_owned()),
                tags: vec!["web".to_owned()],
                description: None,
                owner: Some(owner),
                assigned_clients: clients.iter().map(|&uuid| (uuid, client(uuid))).collect(),
                connections: Some(RemoteAccess {
                    ssh: Some("ssh://host".to_owned()),
                    ..RemoteAccess::default()
                }),
            }),
        };

        let json = serde_json::to_vec(&MachineRecord::from(&properties)).expect("serializes");
        let record: MachineRecord = serde_json::from_slice(&json).expect("reads back");
        assert_eq!(Properties::from(record), properties);
    }
}
