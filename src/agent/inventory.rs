//! The machines the agent reports, as it last saw them: turns each
//! observation of libvirt into the messages the bridge needs (properties
//! when they change, lifecycle events, state, disks), and replays the
//! whole picture to a bridge the agent has just (re)connected to.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::agent::libvirt::{BlockSizes, Observation, Observed};
use crate::agent::lifecycle::{self, Phase};
use crate::grpc::proto::agent_message::Body;
use crate::grpc::proto::{self, LifecycleKind};

/// The most disks one machine message may carry.
const MAX_DISKS: usize = 64;

/// The inventory as the poll and the uplink share it; neither holds it
/// across an await.
pub fn lock(shared: &Mutex<Inventory>) -> MutexGuard<'_, Inventory> {
    shared
        .lock()
        .expect("nothing panics while holding the inventory")
}

/// Every machine the agent knows, keyed by UUID so replays and tests see a
/// stable order.
#[derive(Default)]
pub struct Inventory {
    machines: BTreeMap<Uuid, Tracked>,
    /// Machines gone from libvirt whose removal no stream has sent yet
    /// (it happened while the bridge was away): replayed, or a bridge that
    /// kept running would keep them forever.
    unsent_removals: BTreeSet<Uuid>,
}

struct Tracked {
    /// The properties last sent: a new observation is compared against
    /// them so an unchanged machine costs the bridge nothing.
    properties: proto::AgentProperties,
    /// Where the machine was at the last poll; None when the agent does
    /// not know (libvirt came back after a loss), which silences events.
    phase: Option<Phase>,
    /// When the agent saw the machine boot; None for a machine that was
    /// already running when the agent first saw it.
    booted_at: Option<DateTime<Utc>>,
    /// The latest state, replayed to a bridge the agent reconnects to.
    state: Option<proto::MachineState>,
    /// The latest disk usage, replayed likewise.
    disks: Option<proto::MachineDisks>,
    /// Block sizes per disk target, kept between the disks cadence's reads.
    sizes: HashMap<String, BlockSizes>,
}

impl Inventory {
    /// The disks whose sizes the agent already knows; the others are read
    /// at the next poll even off the disks cadence.
    pub fn sized_disks(&self) -> HashSet<(Uuid, String)> {
        self.machines
            .iter()
            .flat_map(|(uuid, tracked)| {
                tracked
                    .sizes
                    .keys()
                    .map(move |target| (*uuid, target.clone()))
            })
            .collect()
    }

    /// Takes in one poll and returns what to send, in order: a machine's
    /// properties before anything else about it.
    pub fn apply(
        &mut self,
        observation: Observation,
        now: DateTime<Utc>,
        disks_due: bool,
    ) -> Vec<Body> {
        let mut out = Vec::new();
        let seen: HashSet<Uuid> = observation.machines.iter().map(|m| m.uuid).collect();

        // Machines that are gone; an unreadable one is not gone.
        let gone: Vec<Uuid> = self
            .machines
            .keys()
            .filter(|uuid| !seen.contains(uuid) && !observation.unreadable.contains(uuid))
            .copied()
            .collect();
        for uuid in gone {
            self.machines.remove(&uuid);
            self.unsent_removals.insert(uuid);
            out.push(Body::Remove(proto::MachineRef {
                uuid: uuid.to_string(),
            }));
        }

        for observed in observation.machines {
            self.apply_machine(observed, now, disks_due, &mut out);
        }
        out
    }

    fn apply_machine(
        &mut self,
        observed: Observed,
        now: DateTime<Utc>,
        disks_due: bool,
        out: &mut Vec<Body>,
    ) {
        let uuid = observed.uuid;
        self.unsent_removals.remove(&uuid);
        let is_new = !self.machines.contains_key(&uuid);
        let tracked = self.machines.entry(uuid).or_insert_with(|| Tracked {
            properties: proto::AgentProperties::default(),
            phase: None,
            booted_at: None,
            state: None,
            disks: None,
            sizes: HashMap::new(),
        });

        // Properties, when new or changed.
        for disk in &observed.disks {
            if let Some(sizes) = disk.sizes {
                tracked.sizes.insert(disk.facts.target.clone(), sizes);
            }
        }
        let properties = properties(&observed, &tracked.sizes);
        let changed = is_new || properties != tracked.properties;
        if changed {
            tracked.properties = properties.clone();
            out.push(Body::Properties(properties));
        }

        // Lifecycle events from the phase change since the last poll.
        let events = lifecycle::events(tracked.phase, observed.phase);
        if events
            .iter()
            .any(|(kind, _)| *kind == LifecycleKind::BootupSuccess)
        {
            tracked.booted_at = Some(now);
        }
        if !observed.phase.active() {
            tracked.booted_at = None;
        }
        tracked.phase = Some(observed.phase);
        for (kind, error) in events {
            out.push(Body::Event(proto::LifecycleEvent {
                machine_uuid: uuid.to_string(),
                kind: kind as i32,
                error,
            }));
        }

        // State every poll; disks on their cadence or when they changed.
        let state = state(&observed, tracked.booted_at);
        tracked.state = Some(state.clone());
        out.push(Body::State(state));
        if disks_due || changed {
            let disks = disks(&observed, &tracked.sizes);
            tracked.disks = Some(disks.clone());
            out.push(Body::Disks(disks));
        }
    }

    /// libvirt is gone: what the agent knew about phases and state is no
    /// longer the truth, so it neither replays state nor invents events
    /// when libvirt returns.
    pub fn libvirt_lost(&mut self) {
        for tracked in self.machines.values_mut() {
            tracked.phase = None;
            tracked.state = None;
        }
    }

    /// A stream took this removal: it no longer needs a replay.
    pub fn removal_sent(&mut self, uuid: &str) {
        if let Ok(uuid) = Uuid::parse_str(uuid) {
            self.unsent_removals.remove(&uuid);
        }
    }

    /// Everything a freshly connected bridge needs: the removals it may
    /// have missed, then every machine.
    pub fn replay(&self) -> Vec<Body> {
        let mut out: Vec<Body> = self
            .unsent_removals
            .iter()
            .map(|uuid| {
                Body::Remove(proto::MachineRef {
                    uuid: uuid.to_string(),
                })
            })
            .collect();
        for tracked in self.machines.values() {
            out.push(Body::Properties(tracked.properties.clone()));
            if let Some(disks) = &tracked.disks {
                out.push(Body::Disks(disks.clone()));
            }
            if let Some(state) = &tracked.state {
                out.push(Body::State(state.clone()));
            }
        }
        out
    }
}

fn properties(observed: &Observed, sizes: &HashMap<String, BlockSizes>) -> proto::AgentProperties {
    // LIMITATION: a machine with more disks than a message may carry is
    // reported with its first 64.
    let disks = observed
        .disks
        .iter()
        .take(MAX_DISKS)
        .map(|disk| proto::StaticDisk {
            system: disk.facts.system,
            name: disk.facts.target.clone(),
            size_bytes: bytes(sizes.get(&disk.facts.target).map(|s| s.capacity)),
            r#type: disk.facts.format as i32,
        })
        .collect();
    proto::AgentProperties {
        uuid: observed.uuid.to_string(),
        name: observed.name.clone(),
        disks,
    }
}

fn disks(observed: &Observed, sizes: &HashMap<String, BlockSizes>) -> proto::MachineDisks {
    let disks = observed
        .disks
        .iter()
        .take(MAX_DISKS)
        .map(|disk| {
            let sizes = sizes.get(&disk.facts.target);
            proto::DynamicDisk {
                system: disk.facts.system,
                name: disk.facts.target.clone(),
                size_bytes: bytes(sizes.map(|s| s.capacity)),
                r#type: disk.facts.format as i32,
                occupied_bytes: bytes(sizes.map(|s| s.allocation)),
            }
        })
        .collect();
    proto::MachineDisks {
        uuid: observed.uuid.to_string(),
        disks,
    }
}

/// LIMITATION: a size libvirt could not tell is reported as 0; the
/// contract's disks have no "unknown" size.
fn bytes(value: Option<u64>) -> i64 {
    value.map_or(0, |value| i64::try_from(value).unwrap_or(i64::MAX))
}

fn state(observed: &Observed, booted_at: Option<DateTime<Utc>>) -> proto::MachineState {
    let active = observed.phase.active();
    // A console is only reachable while the machine runs.
    let graphics = observed.graphics.as_ref().filter(|_| active);
    proto::MachineState {
        uuid: observed.uuid.to_string(),
        active,
        loading: observed.phase.loading(),
        vcpu: observed.vcpu,
        ram_max: Some(observed.ram_max_mib),
        ram_used: observed.ram_used_mib,
        boot_timestamp: booted_at.map(|at| prost_types::Timestamp {
            seconds: at.timestamp(),
            nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
        }),
        ras_ip: graphics.and_then(|graphics| graphics.address.clone()),
        ras_port: graphics.and_then(|graphics| graphics.port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::domain_xml::{DiskFacts, Graphics};
    use crate::agent::libvirt::ObservedDisk;
    use crate::grpc::proto::DiskType;

    fn machine(phase: Phase) -> Observed {
        Observed {
            uuid: Uuid::from_u128(7),
            name: "web".to_owned(),
            phase,
            vcpu: 2,
            ram_max_mib: 2048,
            ram_used_mib: phase.active().then_some(512),
            graphics: Some(Graphics {
                address: Some("127.0.0.1".to_owned()),
                port: Some(5900),
            }),
            disks: vec![ObservedDisk {
                facts: DiskFacts {
                    target: "vda".to_owned(),
                    format: DiskType::Qcow2,
                    system: true,
                },
                sizes: Some(BlockSizes {
                    capacity: 10 << 30,
                    allocation: 1 << 30,
                }),
            }],
        }
    }

    fn poll(machines: Vec<Observed>) -> Observation {
        Observation {
            machines,
            unreadable: HashSet::new(),
        }
    }

    fn names(bodies: &[Body]) -> Vec<&'static str> {
        bodies
            .iter()
            .map(|body| match body {
                Body::Properties(_) => "properties",
                Body::State(_) => "state",
                Body::Disks(_) => "disks",
                Body::Event(_) => "event",
                Body::Remove(_) => "remove",
                Body::Hello(_) | Body::Connections(_) => "other",
            })
            .collect()
    }

    #[test]
    fn an_unchanged_machine_sends_only_its_state() {
        let mut inventory = Inventory::default();
        let first = inventory.apply(poll(vec![machine(Phase::Running)]), Utc::now(), false);
        assert_eq!(names(&first), ["properties", "state", "disks"]);

        let second = inventory.apply(poll(vec![machine(Phase::Running)]), Utc::now(), false);
        assert_eq!(names(&second), ["state"]);
    }

    #[test]
    fn an_unreadable_machine_is_kept_and_a_missing_one_removed() {
        let mut inventory = Inventory::default();
        inventory.apply(poll(vec![machine(Phase::Off)]), Utc::now(), false);

        let mut unreadable = poll(Vec::new());
        unreadable.unreadable.insert(Uuid::from_u128(7));
        assert!(inventory.apply(unreadable, Utc::now(), false).is_empty());

        let gone = inventory.apply(poll(Vec::new()), Utc::now(), false);
        assert_eq!(names(&gone), ["remove"]);
    }

    #[test]
    fn a_removal_no_stream_sent_is_replayed_until_one_does() {
        let mut inventory = Inventory::default();
        inventory.apply(poll(vec![machine(Phase::Off)]), Utc::now(), false);
        inventory.apply(poll(Vec::new()), Utc::now(), false);
        assert_eq!(names(&inventory.replay()), ["remove"]);

        inventory.removal_sent(&Uuid::from_u128(7).to_string());
        assert!(inventory.replay().is_empty());
    }

    #[test]
    fn an_observed_boot_sets_the_boot_time_and_the_console() {
        let mut inventory = Inventory::default();
        inventory.apply(poll(vec![machine(Phase::Off)]), Utc::now(), false);

        let boot = inventory.apply(poll(vec![machine(Phase::Running)]), Utc::now(), false);
        assert_eq!(names(&boot), ["event", "event", "state"]);
        let Some(Body::State(state)) = boot.last() else {
            panic!("state comes last");
        };
        assert!(state.boot_timestamp.is_some());
        assert_eq!(state.ras_port, Some(5900));
    }

    #[test]
    fn after_a_libvirt_loss_nothing_is_replayed_as_state_or_invented_as_event() {
        let mut inventory = Inventory::default();
        inventory.apply(poll(vec![machine(Phase::Running)]), Utc::now(), false);

        inventory.libvirt_lost();
        assert_eq!(names(&inventory.replay()), ["properties", "disks"]);

        let back = inventory.apply(poll(vec![machine(Phase::Off)]), Utc::now(), false);
        assert_eq!(names(&back), ["state"]);
    }
}
