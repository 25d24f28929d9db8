//! Turning what the registry holds back into protobuf messages, for the
//! list and get calls.

use chrono::{DateTime, Utc};

use crate::account::{Account, AccountType};
use crate::grpc::proto;
use crate::machine::{DiskType, DynamicDisk, MachineState, RemoteAccess, StaticDisk};
use crate::registry::{Change, MachineView};

pub fn outcome(change: Change) -> i32 {
    let outcome = match change {
        Change::Created => proto::UpsertOutcome::Created,
        Change::Updated => proto::UpsertOutcome::Updated,
        Change::Unchanged => proto::UpsertOutcome::Unchanged,
    };
    outcome as i32
}

fn timestamp(time: &DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}

fn disk_type(disk_type: DiskType) -> i32 {
    let value = match disk_type {
        DiskType::Raw => proto::DiskType::Raw,
        DiskType::Qcow2 => proto::DiskType::Qcow2,
        DiskType::Qed => proto::DiskType::Qed,
        DiskType::Qcow => proto::DiskType::Qcow,
        DiskType::Luks => proto::DiskType::Luks,
        DiskType::Vdi => proto::DiskType::Vdi,
        DiskType::Vmdk => proto::DiskType::Vmdk,
        DiskType::Vpc => proto::DiskType::Vpc,
        DiskType::Vhdx => proto::DiskType::Vhdx,
    };
    value as i32
}

/// Sizes were validated non-negative on the way in and fit an `i64`.
fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub fn account(account: &Account) -> proto::Account {
    let account_type = match account.account_type {
        AccountType::Administrative => proto::AccountType::Administrative,
        AccountType::Client => proto::AccountType::Client,
    };
    proto::Account {
        uuid: account.uuid.to_string(),
        username: account.username.clone(),
        email: account.email.clone(),
        name: account.name.clone(),
        surname: account.surname.clone(),
        creation_date: account
            .creation_date
            .map(|date| date.format("%Y-%m-%d").to_string()),
        last_active: account.last_active.as_ref().map(timestamp),
        disabled: account.disabled,
        account_type: account_type as i32,
        roles: account.roles.iter().map(ToString::to_string).collect(),
        permissions: signed(account.permissions),
        groups: account.groups.iter().map(ToString::to_string).collect(),
    }
}

fn static_disk(disk: &StaticDisk) -> proto::StaticDisk {
    proto::StaticDisk {
        system: disk.system,
        name: disk.name.clone(),
        size_bytes: signed(disk.size_bytes),
        r#type: disk_type(disk.disk_type),
    }
}

fn dynamic_disk(disk: &DynamicDisk) -> proto::DynamicDisk {
    proto::DynamicDisk {
        system: disk.system,
        name: disk.name.clone(),
        size_bytes: signed(disk.size_bytes),
        r#type: disk_type(disk.disk_type),
        occupied_bytes: signed(disk.occupied_bytes),
    }
}

fn remote_access(access: &RemoteAccess) -> proto::RemoteAccess {
    proto::RemoteAccess {
        ssh: access.ssh.clone(),
        rdp: access.rdp.clone(),
        vnc: access.vnc.clone(),
    }
}

fn state(state: &MachineState) -> proto::MachineState {
    proto::MachineState {
        uuid: state.uuid.to_string(),
        active: state.active,
        loading: state.loading,
        vcpu: i32::try_from(state.vcpu).unwrap_or(i32::MAX),
        ram_max: state.ram_max.map(signed),
        ram_used: state.ram_used.map(signed),
        boot_timestamp: state.boot_timestamp.as_ref().map(timestamp),
        ras_ip: state.ras_ip.clone(),
        ras_port: state.ras_port.map(i32::from),
    }
}

pub fn machine(view: &MachineView) -> proto::MachineView {
    let properties = &view.properties;
    let uuid = properties.uuid.to_string();
    let platform = properties.platform.as_ref();
    let agent = properties.agent.as_ref();

    proto::MachineView {
        properties: Some(proto::MachineProperties {
            uuid: uuid.clone(),
            title: properties.title().map(str::to_owned),
            tags: platform.map(|p| p.tags.clone()).unwrap_or_default(),
            description: platform.and_then(|p| p.description.clone()),
            owner: platform.and_then(|p| p.owner.as_ref()).map(account),
            assigned_clients: platform
                .map(|p| p.assigned_clients.values().map(account).collect())
                .unwrap_or_default(),
            connections: platform
                .and_then(|p| p.connections.as_ref())
                .map(remote_access),
            disks: agent
                .map(|a| a.disks.iter().map(static_disk).collect())
                .unwrap_or_default(),
        }),
        state: view.state.as_ref().map(state),
        disks: Some(proto::MachineDisks {
            uuid: uuid.clone(),
            disks: view.disks.iter().flatten().map(dynamic_disk).collect(),
        }),
        connections: Some(proto::MachineConnections {
            uuid,
            active_connections: view.active_connections.clone().unwrap_or_default(),
        }),
    }
}
