//! Reading every machine from a libvirt connection in one pass. Every
//! call here blocks: callers run it on a blocking thread, never on the
//! async runtime.

use std::collections::HashSet;
use std::sync::Arc;

use tracing::debug;
use uuid::Uuid;
use virt::connect::Connect;
use virt::domain::{
    Domain, DomainPausedReason, DomainShutoffReason, DomainState, DomainStateReason,
};
use virt::enumutil::Enum;
use virt::error::Error;
use virt::sys;

use crate::agent::domain_xml::{self, DiskFacts, Graphics};
use crate::agent::lifecycle::Phase;

/// Opens (or hands out) the libvirt connection the agent reads. Called
/// again after the connection is lost.
pub type Connector = Arc<dyn Fn() -> Result<Connect, Error> + Send + Sync>;

/// A connector that opens `uri` each time.
pub fn open_uri(uri: String) -> Connector {
    Arc::new(move || Connect::open(Some(&uri)))
}

/// Every machine libvirt knows, read in one pass.
#[derive(Debug, Default)]
pub struct Observation {
    pub machines: Vec<Observed>,
    /// Listed but unreadable this time (for example undefined between the
    /// listing and the read): neither removed nor reported.
    pub unreadable: HashSet<Uuid>,
}

/// One machine as libvirt describes it right now.
#[derive(Debug)]
pub struct Observed {
    pub uuid: Uuid,
    pub name: String,
    pub phase: Phase,
    pub vcpu: i32,
    pub ram_max_mib: i64,
    /// None while the machine is not running.
    pub ram_used_mib: Option<i64>,
    pub graphics: Option<Graphics>,
    pub disks: Vec<ObservedDisk>,
}

#[derive(Debug)]
pub struct ObservedDisk {
    pub facts: DiskFacts,
    /// Read only when asked for (see `SizeRequest`); None when not read or
    /// libvirt could not tell.
    pub sizes: Option<BlockSizes>,
}

/// Bytes, as libvirt's block info reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockSizes {
    /// What the guest sees.
    pub capacity: u64,
    /// What the image occupies on the host.
    pub allocation: u64,
}

/// Which disks to read block sizes for: a block read may open the image
/// file, so it happens on the slower disks cadence and for disks the
/// agent has never sized.
pub enum SizeRequest {
    All,
    /// Only disks outside this set of (machine, target) pairs.
    Unknown(HashSet<(Uuid, String)>),
}

impl SizeRequest {
    fn wants(&self, machine: Uuid, target: &str) -> bool {
        match self {
            SizeRequest::All => true,
            SizeRequest::Unknown(known) => !known.contains(&(machine, target.to_owned())),
        }
    }
}

/// Reads every machine. Fails only when the listing itself fails, which
/// the caller takes as the connection being gone.
pub fn observe(connection: &Connect, sizes: &SizeRequest) -> Result<Observation, Error> {
    let domains = connection.list_all_domains(0)?;
    let mut observation = Observation::default();
    for domain in domains {
        let uuid = match domain.uuid() {
            Ok(uuid) => uuid,
            Err(error) => {
                debug!(%error, "a listed domain has no readable UUID");
                continue;
            }
        };
        match read(&domain, uuid, sizes) {
            Ok(observed) => observation.machines.push(observed),
            Err(error) => {
                debug!(machine = %uuid, %error, "domain unreadable this time");
                observation.unreadable.insert(uuid);
            }
        }
    }
    Ok(observation)
}

/// Why one domain could not be read: either fails only that domain.
type ReadError = Box<dyn std::error::Error>;

fn read(domain: &Domain, uuid: Uuid, sizes: &SizeRequest) -> Result<Observed, ReadError> {
    let name = domain.name()?;
    let phase = phase(domain)?;
    let info = domain.info()?;
    let xml = domain.xml_desc(0)?;
    let description = domain_xml::parse(&xml)?;

    let ram_used_mib = phase
        .active()
        .then(|| ram_used_kib(domain, info.memory) / 1024);
    let disks = description
        .disks
        .into_iter()
        .map(|facts| {
            let sizes = sizes
                .wants(uuid, &facts.target)
                .then(|| block_sizes(domain, &facts.target))
                .flatten();
            ObservedDisk { facts, sizes }
        })
        .collect();

    Ok(Observed {
        uuid,
        name,
        phase,
        vcpu: i32::try_from(info.nr_virt_cpu).unwrap_or(i32::MAX),
        ram_max_mib: i64::try_from(info.max_mem / 1024).unwrap_or(i64::MAX),
        ram_used_mib: ram_used_mib.map(|mib| i64::try_from(mib).unwrap_or(i64::MAX)),
        graphics: description.graphics,
        disks,
    })
}

fn phase(domain: &Domain) -> Result<Phase, Error> {
    let (state, reason) = domain.state()?;
    let phase = match state {
        Enum::Known(DomainState::Paused) => match reason {
            Enum::Known(DomainStateReason::Paused(Enum::Known(DomainPausedReason::StartingUp))) => {
                Phase::Starting
            }
            _ => Phase::Running,
        },
        Enum::Known(DomainState::Running | DomainState::Blocked | DomainState::PMSuspended) => {
            Phase::Running
        }
        Enum::Known(DomainState::Shutdown) => Phase::Stopping,
        Enum::Known(DomainState::Crashed) => Phase::Failed,
        Enum::Known(DomainState::Shutoff) => match reason {
            Enum::Known(DomainStateReason::Shutoff(Enum::Known(
                DomainShutoffReason::Crashed | DomainShutoffReason::Failed,
            ))) => Phase::Failed,
            _ => Phase::Off,
        },
        // No state, or one this binding does not know: ask the simpler
        // question instead of guessing.
        _ => match domain.is_active()? {
            true => Phase::Running,
            false => Phase::Off,
        },
    };
    Ok(phase)
}

/// What the guest uses when it reports memory statistics (total minus
/// free); otherwise what the hypervisor has given it.
fn ram_used_kib(domain: &Domain, current_kib: u64) -> u64 {
    let Ok(stats) = domain.memory_stats(0) else {
        return current_kib;
    };
    let stat = |tag: u32| {
        stats
            .iter()
            .find(|stat| stat.tag == tag)
            .map(|stat| stat.val)
    };
    let available = stat(sys::VIR_DOMAIN_MEMORY_STAT_AVAILABLE);
    let unused = stat(sys::VIR_DOMAIN_MEMORY_STAT_UNUSED);
    match (available, unused) {
        (Some(available), Some(unused)) => available.saturating_sub(unused),
        _ => current_kib,
    }
}

fn block_sizes(domain: &Domain, target: &str) -> Option<BlockSizes> {
    // libvirt zeroes the result before it tries, and this binding returns
    // that zeroed result instead of the error: all zeros means "unknown".
    let info = domain.block_info(target, 0).ok()?;
    if info.capacity == 0 && info.allocation == 0 && info.physical == 0 {
        return None;
    }
    Some(BlockSizes {
        capacity: info.capacity,
        allocation: info.allocation,
    })
}
