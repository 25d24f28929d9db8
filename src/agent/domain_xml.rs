//! What a libvirt domain's XML description says that the bridge cares
//! about: its disks (which one boots, in which format) and the graphics
//! device a remote desktop connects to.

use roxmltree::{Document, Node};

use crate::grpc::proto::DiskType;

/// The parts of a domain description the agent reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description {
    /// In the order the description lists them.
    pub disks: Vec<DiskFacts>,
    /// The first VNC or SPICE device, if the domain has one.
    pub graphics: Option<Graphics>,
}

/// One disk as the description declares it; sizes come from libvirt's
/// block info, not from here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskFacts {
    /// The guest-side device name (`vda`, `sdb`): unique within a domain,
    /// and the key libvirt's block calls take.
    pub target: String,
    pub format: DiskType,
    /// The disk the domain boots from.
    pub system: bool,
}

/// Where a remote desktop reaches the domain's console.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Graphics {
    /// None when the description names no address.
    pub address: Option<String>,
    /// None while libvirt has not assigned one (autoport on a stopped
    /// domain reads as -1).
    pub port: Option<i32>,
}

/// Reads a description as `virDomainGetXMLDesc` returns it.
pub fn parse(xml: &str) -> Result<Description, roxmltree::Error> {
    let document = Document::parse(xml)?;
    let Some(devices) = child(document.root_element(), "devices") else {
        return Ok(Description {
            disks: Vec::new(),
            graphics: None,
        });
    };

    let mut disks: Vec<(DiskFacts, Option<u32>)> = devices
        .children()
        .filter(|node| node.has_tag_name("disk"))
        .filter(|disk| matches!(disk.attribute("device"), None | Some("disk" | "lun")))
        .filter_map(disk)
        .collect();
    mark_boot_disk(&mut disks);

    let graphics = devices
        .children()
        .filter(|node| node.has_tag_name("graphics"))
        .find(|node| matches!(node.attribute("type"), Some("vnc" | "spice")))
        .map(graphics);

    Ok(Description {
        disks: disks.into_iter().map(|(facts, _)| facts).collect(),
        graphics,
    })
}

/// A disk with its boot order, if it declares one.
fn disk(node: Node) -> Option<(DiskFacts, Option<u32>)> {
    let target = child(node, "target")?.attribute("dev")?.to_owned();
    let format = child(node, "driver")
        .and_then(|driver| driver.attribute("type"))
        .map_or(DiskType::Raw, format);
    let boot_order = child(node, "boot")
        .and_then(|boot| boot.attribute("order"))
        .and_then(|order| order.parse().ok());
    let facts = DiskFacts {
        target,
        format,
        system: false,
    };
    Some((facts, boot_order))
}

/// The boot disk is the one with the lowest boot order; without any
/// per-device order, libvirt boots the first hard disk.
fn mark_boot_disk(disks: &mut [(DiskFacts, Option<u32>)]) {
    let ordered = disks
        .iter()
        .enumerate()
        .filter_map(|(index, (_, order))| order.map(|order| (order, index)))
        .min();
    let boot = match ordered {
        Some((_, index)) => index,
        None if disks.is_empty() => return,
        None => 0,
    };
    disks[boot].0.system = true;
}

fn format(name: &str) -> DiskType {
    match name {
        "qcow2" => DiskType::Qcow2,
        "qed" => DiskType::Qed,
        "qcow" => DiskType::Qcow,
        "luks" => DiskType::Luks,
        "vdi" => DiskType::Vdi,
        "vmdk" => DiskType::Vmdk,
        "vpc" => DiskType::Vpc,
        "vhdx" => DiskType::Vhdx,
        // LIMITATION: formats the contract cannot name (iso, dmg, ploop,
        // ...) are reported as raw, the closest honest word for "read as
        // plain bytes".
        _ => DiskType::Raw,
    }
}

fn graphics(node: Node) -> Graphics {
    let port = node
        .attribute("port")
        .and_then(|port| port.parse::<i32>().ok())
        .filter(|port| *port > 0);
    let listen = node
        .children()
        .filter(|child| child.has_tag_name("listen"))
        .find_map(|listen| listen.attribute("address"));
    let address = listen
        .or_else(|| node.attribute("listen"))
        .map(str::to_owned);
    Graphics { address, port }
}

fn child<'a, 'input>(node: Node<'a, 'input>, name: &str) -> Option<Node<'a, 'input>> {
    node.children().find(|child| child.has_tag_name(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNNING: &str = r#"
        <domain type='kvm' id='3'>
          <name>web</name>
          <os><boot dev='hd'/></os>
          <devices>
            <disk type='file' device='cdrom'>
              <driver name='qemu' type='raw'/>
              <target dev='sda' bus='sata'/>
            </disk>
            <disk type='file' device='disk'>
              <driver name='qemu' type='qcow2'/>
              <source file='/images/web.qcow2'/>
              <target dev='vda' bus='virtio'/>
            </disk>
            <disk type='block' device='disk'>
              <source dev='/dev/vg/web-data'/>
              <target dev='vdb' bus='virtio'/>
            </disk>
            <graphics type='vnc' port='5907' autoport='yes' listen='0.0.0.0'>
              <listen type='address' address='192.0.2.10'/>
            </graphics>
          </devices>
        </domain>"#;

    #[test]
    fn cdroms_are_not_disks_and_the_first_disk_boots_by_default() {
        let description = parse(RUNNING).expect("the sample is well formed");

        let targets: Vec<_> = description
            .disks
            .iter()
            .map(|d| d.target.as_str())
            .collect();
        assert_eq!(targets, ["vda", "vdb"]);
        assert!(description.disks[0].system);
        assert!(!description.disks[1].system);
        assert_eq!(description.disks[0].format, DiskType::Qcow2);
        assert_eq!(description.disks[1].format, DiskType::Raw);
    }

    #[test]
    fn the_listen_element_wins_over_the_legacy_attribute() {
        let description = parse(RUNNING).expect("the sample is well formed");

        let graphics = description.graphics.expect("the sample has a VNC device");
        assert_eq!(graphics.address.as_deref(), Some("192.0.2.10"));
        assert_eq!(graphics.port, Some(5907));
    }

    #[test]
    fn a_boot_order_picks_the_system_disk() {
        let xml = r#"
            <domain><devices>
              <disk device='disk'><target dev='vda'/><boot order='2'/></disk>
              <disk device='disk'><target dev='vdb'/><boot order='1'/></disk>
              <graphics type='spice' port='-1' autoport='yes'/>
            </devices></domain>"#;
        let description = parse(xml).expect("the sample is well formed");

        assert!(!description.disks[0].system);
        assert!(description.disks[1].system);
        let graphics = description.graphics.expect("the sample has a SPICE device");
        assert_eq!(graphics.port, None);
        assert_eq!(graphics.address, None);
    }
}
