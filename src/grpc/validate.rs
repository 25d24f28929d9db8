//! Turning protobuf messages into the bridge's own types, refusing anything
//! out of bounds with the path of the offending field. Nothing reaches the
//! registry before it passes here, so a rejected message changes nothing.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use tonic::Status;
use uuid::Uuid;

use crate::account::{Account, AccountType};
use crate::grpc::proto;
use crate::machine::{
    AgentFacts, DiskType, DynamicDisk, MachineConnections, MachineDisks, MachineState,
    PlatformFacts, RemoteAccess, StaticDisk,
};
use crate::registry::Lifecycle;

pub const MAX_AGENT_ID: usize = 128;
pub const MAX_NAME: usize = 256;
pub const MAX_DESCRIPTION: usize = 4096;
pub const MAX_TAGS: usize = 64;
pub const MAX_TAG: usize = 64;
pub const MAX_URL: usize = 2048;
pub const MAX_DISKS: usize = 64;
pub const MAX_CLIENTS: usize = 1024;
pub const MAX_ACTIVE_CONNECTIONS: usize = 1024;
pub const MAX_ERROR: usize = 1024;
pub const MAX_IDS: usize = 256;

/// A field that failed validation, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<FieldError> for Status {
    fn from(error: FieldError) -> Self {
        Status::invalid_argument(format!("{}: {}", error.field, error.reason))
    }
}

type Result<T> = std::result::Result<T, FieldError>;

/// Joins a path prefix and a field name.
fn at(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else {
        format!("{prefix}.{field}")
    }
}

pub fn uuid(field: &str, value: &str) -> Result<Uuid> {
    Uuid::try_parse(value).map_err(|_| FieldError::new(field, "not a UUID"))
}

fn bounded<'a>(field: &str, value: &'a str, max: usize) -> Result<&'a str> {
    if value.chars().count() > max {
        return Err(FieldError::new(
            field,
            format!("longer than {max} characters"),
        ));
    }
    Ok(value)
}

fn bounded_opt(field: &str, value: &Option<String>, max: usize) -> Result<Option<String>> {
    value
        .as_deref()
        .map(|value| bounded(field, value, max).map(str::to_owned))
        .transpose()
}

fn at_most<T>(field: &str, values: &[T], max: usize) -> Result<()> {
    if values.len() > max {
        return Err(FieldError::new(field, format!("more than {max} entries")));
    }
    Ok(())
}

fn non_negative(field: &str, value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| FieldError::new(field, "must not be negative"))
}

/// The range of `google.protobuf.Timestamp`: 0001-01-01T00:00:00Z to
/// 9999-12-31T23:59:59Z. Outside it, a time renders with a sign or a
/// five-digit year, which is not RFC 3339 and which browsers misread.
const TIMESTAMP_SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;

fn timestamp(field: &str, value: &Option<prost_types::Timestamp>) -> Result<Option<DateTime<Utc>>> {
    let Some(value) = value else {
        return Ok(None);
    };
    let invalid = || FieldError::new(field, "not a valid time (years 1 to 9999)");
    if !TIMESTAMP_SECONDS.contains(&value.seconds) {
        return Err(invalid());
    }
    // Nanos past a second would be read as a leap second (`:60`).
    let nanos = u32::try_from(value.nanos)
        .ok()
        .filter(|nanos| *nanos < 1_000_000_000)
        .ok_or_else(invalid)?;
    DateTime::from_timestamp(value.seconds, nanos)
        .map(Some)
        .ok_or_else(invalid)
}

fn uuids(field: &str, values: &[String]) -> Result<Vec<Uuid>> {
    at_most(field, values, MAX_IDS)?;
    values.iter().map(|value| uuid(field, value)).collect()
}

pub fn agent_id(hello: &proto::Hello) -> Result<String> {
    let id = bounded("hello.agent_id", hello.agent_id.trim(), MAX_AGENT_ID)?;
    if id.is_empty() {
        return Err(FieldError::new("hello.agent_id", "must not be empty"));
    }
    Ok(id.to_owned())
}

fn disk_type(field: &str, value: i32) -> Result<DiskType> {
    use proto::DiskType as P;
    match P::try_from(value) {
        Ok(P::Raw) => Ok(DiskType::Raw),
        Ok(P::Qcow2) => Ok(DiskType::Qcow2),
        Ok(P::Qed) => Ok(DiskType::Qed),
        Ok(P::Qcow) => Ok(DiskType::Qcow),
        Ok(P::Luks) => Ok(DiskType::Luks),
        Ok(P::Vdi) => Ok(DiskType::Vdi),
        Ok(P::Vmdk) => Ok(DiskType::Vmdk),
        Ok(P::Vpc) => Ok(DiskType::Vpc),
        Ok(P::Vhdx) => Ok(DiskType::Vhdx),
        Ok(P::Unspecified) | Err(_) => {
            Err(FieldError::new(field, format!("unknown disk type {value}")))
        }
    }
}

fn static_disk(field: &str, disk: &proto::StaticDisk) -> Result<StaticDisk> {
    Ok(StaticDisk {
        system: disk.system,
        name: bounded(&at(field, "name"), &disk.name, MAX_NAME)?.to_owned(),
        size_bytes: non_negative(&at(field, "size_bytes"), disk.size_bytes)?,
        disk_type: disk_type(&at(field, "type"), disk.r#type)?,
    })
}

fn dynamic_disk(field: &str, disk: &proto::DynamicDisk) -> Result<DynamicDisk> {
    Ok(DynamicDisk {
        system: disk.system,
        name: bounded(&at(field, "name"), &disk.name, MAX_NAME)?.to_owned(),
        size_bytes: non_negative(&at(field, "size_bytes"), disk.size_bytes)?,
        disk_type: disk_type(&at(field, "type"), disk.r#type)?,
        occupied_bytes: non_negative(&at(field, "occupied_bytes"), disk.occupied_bytes)?,
    })
}

/// What an agent says a machine is: its UUID, name and disks.
pub fn agent_properties(
    prefix: &str,
    message: &proto::AgentProperties,
) -> Result<(Uuid, AgentFacts)> {
    let uuid = uuid(&at(prefix, "uuid"), &message.uuid)?;
    let name = bounded(&at(prefix, "name"), message.name.trim(), MAX_NAME)?;
    let field = at(prefix, "disks");
    at_most(&field, &message.disks, MAX_DISKS)?;
    let disks = message
        .disks
        .iter()
        .enumerate()
        .map(|(index, disk)| static_disk(&format!("{field}[{index}]"), disk))
        .collect::<Result<_>>()?;
    let facts = AgentFacts {
        name: (!name.is_empty()).then(|| name.to_owned()),
        disks,
    };
    Ok((uuid, facts))
}

/// Agents send one of these per machine every second, so the field paths
/// of its error messages are only built for a field that fails.
pub fn state(prefix: &str, message: &proto::MachineState) -> Result<MachineState> {
    let vcpu = u32::try_from(message.vcpu)
        .map_err(|_| FieldError::new(at(prefix, "vcpu"), "must not be negative"))?;
    let ram_max = message
        .ram_max
        .map(|value| non_negative("", value))
        .transpose()
        .map_err(within(prefix, "ram_max"))?;
    let ram_used = message
        .ram_used
        .map(|value| non_negative("", value))
        .transpose()
        .map_err(within(prefix, "ram_used"))?;
    let ras_port = message
        .ras_port
        .map(|port| {
            u16::try_from(port)
                .ok()
                .filter(|port| *port > 0)
                .ok_or_else(|| {
                    FieldError::new(at(prefix, "ras_port"), "not a port number (1-65535)")
                })
        })
        .transpose()?;
    Ok(MachineState {
        uuid: uuid("", &message.uuid).map_err(within(prefix, "uuid"))?,
        active: message.active,
        loading: message.loading,
        vcpu,
        ram_max,
        ram_used,
        boot_timestamp: timestamp("", &message.boot_timestamp)
            .map_err(within(prefix, "boot_timestamp"))?,
        ras_ip: bounded_opt("", &message.ras_ip, MAX_NAME).map_err(within(prefix, "ras_ip"))?,
        ras_port,
    })
}

/// Puts the path of the failed field into an error raised without one.
fn within<'a>(prefix: &'a str, field: &'a str) -> impl FnOnce(FieldError) -> FieldError + 'a {
    move |error| FieldError {
        field: at(prefix, field),
        reason: error.reason,
    }
}

pub fn disks(prefix: &str, message: &proto::MachineDisks) -> Result<MachineDisks> {
    let field = at(prefix, "disks");
    at_most(&field, &message.disks, MAX_DISKS)?;
    let disks = message
        .disks
        .iter()
        .enumerate()
        .map(|(index, disk)| dynamic_disk(&format!("{field}[{index}]"), disk))
        .collect::<Result<_>>()?;
    Ok(MachineDisks {
        uuid: uuid(&at(prefix, "uuid"), &message.uuid)?,
        disks: Some(disks),
    })
}

pub fn connections(
    prefix: &str,
    message: &proto::MachineConnections,
) -> Result<MachineConnections> {
    let field = at(prefix, "active_connections");
    at_most(&field, &message.active_connections, MAX_ACTIVE_CONNECTIONS)?;
    for entry in &message.active_connections {
        bounded(&field, entry, MAX_NAME)?;
    }
    Ok(MachineConnections {
        uuid: uuid(&at(prefix, "uuid"), &message.uuid)?,
        active_connections: Some(message.active_connections.clone()),
    })
}

/// A lifecycle event: the machine, the kind and, for failures, the error.
pub fn lifecycle(
    prefix: &str,
    message: &proto::LifecycleEvent,
) -> Result<(Uuid, Lifecycle, Option<String>)> {
    use proto::LifecycleKind as K;
    let uuid = uuid(&at(prefix, "machine_uuid"), &message.machine_uuid)?;
    let kind = match K::try_from(message.kind) {
        Ok(K::BootupStart) => Lifecycle::BootupStart,
        Ok(K::BootupSuccess) => Lifecycle::BootupSuccess,
        Ok(K::BootupFail) => Lifecycle::BootupFail,
        Ok(K::ShutdownStart) => Lifecycle::ShutdownStart,
        Ok(K::ShutdownSuccess) => Lifecycle::ShutdownSuccess,
        Ok(K::ShutdownFail) => Lifecycle::ShutdownFail,
        Ok(K::Unspecified) | Err(_) => {
            return Err(FieldError::new(
                at(prefix, "kind"),
                format!("unknown lifecycle kind {}", message.kind),
            ));
        }
    };
    let error = bounded_opt(&at(prefix, "error"), &message.error, MAX_ERROR)?;
    if error.is_some() && !kind.is_failure() {
        return Err(FieldError::new(
            at(prefix, "error"),
            "only BOOTUP_FAIL and SHUTDOWN_FAIL carry an error",
        ));
    }
    Ok((uuid, kind, error))
}

fn account_type(field: &str, value: i32, default: Option<AccountType>) -> Result<AccountType> {
    use proto::AccountType as T;
    match T::try_from(value) {
        Ok(T::Administrative) => Ok(AccountType::Administrative),
        Ok(T::Client) => Ok(AccountType::Client),
        Ok(T::Unspecified) => default.ok_or_else(|| FieldError::new(field, "must be set")),
        Err(_) => Err(FieldError::new(
            field,
            format!("unknown account type {value}"),
        )),
    }
}

/// An account. `default_type` applies when the message leaves the type
/// unset (owners and assigned clients imply theirs).
pub fn account(
    prefix: &str,
    message: &proto::Account,
    default_type: Option<AccountType>,
) -> Result<Account> {
    let account_type = account_type(
        &at(prefix, "account_type"),
        message.account_type,
        default_type,
    )?;
    let permissions = non_negative(&at(prefix, "permissions"), message.permissions)?;
    let roles = uuids(&at(prefix, "roles"), &message.roles)?;
    let groups = uuids(&at(prefix, "groups"), &message.groups)?;
    match account_type {
        AccountType::Client if permissions != 0 => {
            return Err(FieldError::new(
                at(prefix, "permissions"),
                "a client account holds no permissions",
            ));
        }
        AccountType::Client if !roles.is_empty() => {
            return Err(FieldError::new(
                at(prefix, "roles"),
                "a client account has no roles",
            ));
        }
        AccountType::Administrative if !groups.is_empty() => {
            return Err(FieldError::new(
                at(prefix, "groups"),
                "an administrative account has no groups",
            ));
        }
        _ => {}
    }
    let creation_date = message
        .creation_date
        .as_deref()
        .map(|date| {
            NaiveDate::parse_from_str(date, "%Y-%m-%d")
                .map_err(|_| FieldError::new(at(prefix, "creation_date"), "not a YYYY-MM-DD date"))
        })
        .transpose()?;
    Ok(Account {
        uuid: uuid(&at(prefix, "uuid"), &message.uuid)?,
        username: bounded_opt(&at(prefix, "username"), &message.username, MAX_NAME)?,
        email: bounded_opt(&at(prefix, "email"), &message.email, MAX_NAME)?,
        name: bounded_opt(&at(prefix, "name"), &message.name, MAX_NAME)?,
        surname: bounded_opt(&at(prefix, "surname"), &message.surname, MAX_NAME)?,
        creation_date,
        last_active: timestamp(&at(prefix, "last_active"), &message.last_active)?,
        disabled: message.disabled,
        account_type,
        roles,
        permissions,
        groups,
    })
}

/// What a control plane decides about a machine.
pub fn decision(prefix: &str, message: &proto::MachineDecision) -> Result<(Uuid, PlatformFacts)> {
    let uuid = uuid(&at(prefix, "uuid"), &message.uuid)?;
    let tags_field = at(prefix, "tags");
    at_most(&tags_field, &message.tags, MAX_TAGS)?;
    let tags = message
        .tags
        .iter()
        .map(|tag| bounded(&tags_field, tag, MAX_TAG).map(str::to_owned))
        .collect::<Result<_>>()?;

    let owner_field = at(prefix, "owner");
    let owner = message
        .owner
        .as_ref()
        .map(|owner| account(&owner_field, owner, Some(AccountType::Administrative)))
        .transpose()?;
    if owner
        .as_ref()
        .is_some_and(|o| o.account_type != AccountType::Administrative)
    {
        return Err(FieldError::new(
            at(&owner_field, "account_type"),
            "an owner is an administrative account",
        ));
    }

    let clients_field = at(prefix, "assigned_clients");
    at_most(&clients_field, &message.assigned_clients, MAX_CLIENTS)?;
    let mut assigned_clients = BTreeMap::new();
    for (index, client) in message.assigned_clients.iter().enumerate() {
        let field = format!("{clients_field}[{index}]");
        let client = account(&field, client, Some(AccountType::Client))?;
        if client.account_type != AccountType::Client {
            return Err(FieldError::new(
                at(&field, "account_type"),
                "an assigned client is a client account",
            ));
        }
        assigned_clients.insert(client.uuid, client);
    }

    let connections = message
        .connections
        .as_ref()
        .map(|access| remote_access(&at(prefix, "connections"), access))
        .transpose()?
        .filter(|access| !access.is_empty());

    let facts = PlatformFacts {
        title: bounded_opt(&at(prefix, "title"), &message.title, MAX_NAME)?,
        tags,
        description: bounded_opt(
            &at(prefix, "description"),
            &message.description,
            MAX_DESCRIPTION,
        )?,
        owner,
        assigned_clients,
        connections,
    };
    Ok((uuid, facts))
}

fn remote_access(prefix: &str, message: &proto::RemoteAccess) -> Result<RemoteAccess> {
    Ok(RemoteAccess {
        ssh: bounded_opt(&at(prefix, "ssh"), &message.ssh, MAX_URL)?,
        rdp: bounded_opt(&at(prefix, "rdp"), &message.rdp, MAX_URL)?,
        vnc: bounded_opt(&at(prefix, "vnc"), &message.vnc, MAX_URL)?,
    })
}

/// A message field that must be present.
pub fn required<'a, T>(field: &str, value: &'a Option<T>) -> Result<&'a T> {
    value
        .as_ref()
        .ok_or_else(|| FieldError::new(field, "must be set"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_disk_size_names_the_disk() {
        let message = proto::AgentProperties {
            uuid: Uuid::new_v4().to_string(),
            name: "web".into(),
            disks: vec![proto::StaticDisk {
                system: true,
                name: "root".into(),
                size_bytes: -1,
                r#type: proto::DiskType::Raw as i32,
            }],
        };
        let error = agent_properties("properties", &message).unwrap_err();
        assert_eq!(error.field, "properties.disks[0].size_bytes");
    }

    fn state_booted_at(seconds: i64, nanos: i32) -> proto::MachineState {
        proto::MachineState {
            uuid: Uuid::new_v4().to_string(),
            boot_timestamp: Some(prost_types::Timestamp { seconds, nanos }),
            ..Default::default()
        }
    }

    /// Found by the property tests: year 10000 rendered as `+10000-...`.
    #[test]
    fn times_after_year_9999_are_refused() {
        let error = state("state", &state_booted_at(253_402_300_800, 0)).unwrap_err();
        assert_eq!(error.field, "state.boot_timestamp");
        assert!(state("state", &state_booted_at(253_402_300_799, 999_999_999)).is_ok());
        assert!(state("state", &state_booted_at(-62_135_596_801, 0)).is_err());
        assert!(state("state", &state_booted_at(-62_135_596_800, 0)).is_ok());
    }

    /// chrono reads nanos past a second as a leap second, rendered `:60`.
    #[test]
    fn nanos_of_a_whole_second_or_more_are_refused() {
        assert!(state("state", &state_booted_at(0, 1_000_000_000)).is_err());
        assert!(state("state", &state_booted_at(0, -1)).is_err());
    }

    #[test]
    fn unknown_lifecycle_kind_is_refused() {
        let message = proto::LifecycleEvent {
            machine_uuid: Uuid::new_v4().to_string(),
            kind: 42,
            error: None,
        };
        let error = lifecycle("event", &message).unwrap_err();
        assert_eq!(error.field, "event.kind");
    }

    #[test]
    fn a_client_cannot_own_a_machine() {
        let message = proto::MachineDecision {
            uuid: Uuid::new_v4().to_string(),
            owner: Some(proto::Account {
                uuid: Uuid::new_v4().to_string(),
                account_type: proto::AccountType::Client as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        let error = decision("machine", &message).unwrap_err();
        assert_eq!(error.field, "machine.owner.account_type");
    }
}
