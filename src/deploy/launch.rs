//! The virtual machine the launch files start, made from the descriptor's hardware (DSP0243
//! §9.5 VirtualHardwareSection, with CIM_ResourceAllocationSettingData ResourceType values;
//! docs/formats.md §2.5), and the one mapping table both launch files and the man page use.
//!
//! [`machine`] reads the VirtualSystem's first VirtualHardwareSection as the deployed
//! configuration sees it (items merged by InstanceID by `settings::hw`, the same merge the
//! settings files show, vendor children such as `vmw:CoresPerSocket` included) and turns it
//! into a [`Machine`]: name, CPUs and topology, memory, firmware, chipset, controllers,
//! drives (the mount's flat disks, CD-ROMs, the OVF environment ISO), network adapters.
//! Every item is classified by [`MAPPING`], one row per ResourceType/ResourceSubType:
//! [`super::libvirt`] and [`super::qemu`] render the same machine from the same rows, and
//! [`man_section`] prints the rows as the man page's mapping table (a test checks that
//! `man/ovafs.1` carries it verbatim). Whatever the machine cannot carry (an unmapped item,
//! a disk without a flat file, a value out of range) becomes a [`Machine::notes`] line that
//! both files print as a comment: nothing is dropped silently.
//!
//! Firmware (no DSP0243 field exists for it): EFI when the VirtualHardwareSection has
//! `<vmw:Config vmw:key="firmware" vmw:value="efi"/>` (what ovftool and vSphere write, and
//! what virt-v2v reads), when VirtualBox's `vbox:Machine` has `Hardware/Firmware
//! type="EFI*"`, or when the VirtualSystemType names a Hyper-V generation 2 machine
//! (`Microsoft:Hyper-V:SubType:2`); BIOS otherwise.

use crate::roff::escape as roff_escape;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::ovf::xml::Ns;
use crate::ovf::{HostResourceKind, VirtualHardware, VirtualSystem, parse_host_resource};
use crate::settings::Owner;
use crate::settings::hw::{Hardware, Key, MergedItem};
use crate::settings::xmlview::View;

use super::{DeployContext, DeployError, DeployFile, Target};

/// What a hardware item becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The virtual CPUs.
    Processor,
    /// The memory.
    Memory,
    /// A SCSI host adapter.
    Scsi,
    /// An IDE channel pair of the machine's own PIIX IDE.
    Ide,
    /// An AHCI (SATA) controller.
    Sata,
    /// An NVMe controller.
    Nvme,
    /// A controller whose disks become virtio-blk devices.
    Virtio,
    /// A hard disk.
    Disk,
    /// A CD/DVD drive.
    Cdrom,
    /// A network adapter.
    Nic,
    /// The graphics adapter.
    Video,
    /// A serial port (the machine's console).
    Serial,
    /// Nothing: said in a comment.
    Unmapped,
}

/// One row of the mapping table.
#[derive(Debug)]
pub struct Row {
    /// CIM ResourceType; 0 in the last row: any other ResourceType.
    pub resource_type: u16,
    /// ResourceSubType values (compared case-insensitively) this row is for; empty: any
    /// other value, or none.
    pub subtypes: &'static [&'static str],
    /// What the item is, for the man page.
    pub what: &'static str,
    /// What it becomes.
    pub kind: Kind,
    /// The libvirt value: controller model, disk bus or interface model.
    pub libvirt: &'static str,
    /// The qemu `-device` driver.
    pub qemu: &'static str,
    /// Units per bus of a controller (SCSI targets, IDE units per channel, AHCI ports).
    pub units: u32,
    /// Why, for the man page.
    pub note: &'static str,
}

#[allow(clippy::too_many_arguments)]
const fn row(
    resource_type: u16,
    subtypes: &'static [&'static str],
    what: &'static str,
    kind: Kind,
    libvirt: &'static str,
    qemu: &'static str,
    units: u32,
    note: &'static str,
) -> Row {
    Row {
        resource_type,
        subtypes,
        what,
        kind,
        libvirt,
        qemu,
        units,
        note,
    }
}

/// The mapping of hardware items to libvirt and qemu, in the man page's order. For one
/// ResourceType the rows with subtypes come first; the row without subtypes catches the
/// rest. The last row catches every ResourceType not listed.
pub static MAPPING: &[Row] = &[
    row(
        3,
        &[],
        "Processor",
        Kind::Processor,
        "",
        "",
        0,
        "VirtualQuantity virtual CPUs (1 to 4096); vmw:CoresPerSocket cores per socket when it divides them, else one core per socket.",
    ),
    row(
        4,
        &[],
        "Memory",
        Kind::Memory,
        "",
        "",
        0,
        "VirtualQuantity in AllocationUnits (MiB when absent), rounded up to whole MiB.",
    ),
    row(
        5,
        &["virtio"],
        "IDE controller of subtype virtio (COT, Cisco IOSv)",
        Kind::Virtio,
        "virtio",
        "virtio-blk-pci",
        0,
        "Its disks are virtio-blk devices, which is what the subtype asks for.",
    ),
    row(
        5,
        &[],
        "IDE controller (PIIX3, PIIX4, ICH6 or none)",
        Kind::Ide,
        "ide",
        "ide-hd",
        2,
        "The machine's own PIIX IDE, so the machine is pc-i440fx (q35 has no IDE): the first IDE controller is the primary channel, the second the secondary; AddressOnParent 0 and 1 are master and slave. A third IDE controller is not mapped (its disks become virtio-blk devices).",
    ),
    row(
        6,
        &["lsilogic"],
        "SCSI controller, LSI Logic",
        Kind::Scsi,
        "lsilogic",
        "lsi53c895a",
        7,
        "QEMU has no LSI53C1030 (VMware's LSI Logic parallel adapter); the LSI 53C895A is its parallel LSI adapter, and libvirt's name for VMware's lsilogic (Linux driver sym53c8xx). Targets 0 to 6.",
    ),
    row(
        6,
        &["lsilogicsas"],
        "SCSI controller, LSI Logic SAS",
        Kind::Scsi,
        "lsisas1068",
        "mptsas1068",
        8,
        "The LSI SAS1068 of VMware's LSI Logic SAS, which QEMU emulates (Linux driver mptsas).",
    ),
    row(
        6,
        &["virtualscsi", "pvscsi"],
        "SCSI controller, VMware paravirtual",
        Kind::Scsi,
        "vmpvscsi",
        "pvscsi",
        64,
        "VMware's PVSCSI, which QEMU emulates (Linux driver vmw_pvscsi).",
    ),
    row(
        6,
        &["buslogic"],
        "SCSI controller, BusLogic",
        Kind::Scsi,
        "lsilogic",
        "lsi53c895a",
        7,
        "QEMU does not emulate BusLogic adapters: the disks are put on an LSI 53C895A instead, which the guest needs a driver for.",
    ),
    row(
        6,
        &["virtio", "virtioscsi", "virtio-scsi"],
        "SCSI controller, virtio",
        Kind::Scsi,
        "virtio-scsi",
        "virtio-scsi-pci",
        256,
        "virtio-scsi.",
    ),
    row(
        6,
        &[],
        "SCSI controller of another or no subtype",
        Kind::Scsi,
        "lsilogic",
        "lsi53c895a",
        7,
        "LSI Logic, VMware's default adapter.",
    ),
    row(
        20,
        &["vmware.nvme.controller", "nvme"],
        "NVMe controller",
        Kind::Nvme,
        "virtio",
        "nvme",
        1,
        "qemu.sh gives each disk its own NVMe controller. libvirt 9 has no NVMe disk bus, so libvirt.xml attaches these disks as virtio-blk devices (the comment in the file says so).",
    ),
    row(
        20,
        &[],
        "SATA controller (AHCI, vmware.sata.ahci or none)",
        Kind::Sata,
        "sata",
        "ich9-ahci",
        6,
        "Intel ICH9 AHCI, 6 ports (the built-in one of a q35 machine first). AddressOnParent is the port.",
    ),
    row(
        17,
        &[],
        "Disk drive",
        Kind::Disk,
        "disk",
        "",
        0,
        "HostResource ovf:/disk/ID (or ovf:/file/ID of the Disk's file): the mount's flat file disks/NAME.raw, format raw, on the controller its Parent names at the unit of its AddressOnParent (the next free unit when that is taken or out of range). On a read-only mount the disk is transient (libvirt <transient/>, qemu snapshot=on: the guest's writes go to a temporary overlay and the mount's file is only read); on a writable mount it is attached read-write. The first disk is the boot device. A disk with no flat file on the mount (blank, remote or unreadable) is not attached. A disk whose Parent is no controller becomes a virtio-blk device.",
    ),
    row(
        15,
        &[],
        "CD drive",
        Kind::Cdrom,
        "cdrom",
        "",
        0,
        "An empty CD-ROM drive on its controller; the first one holds the OVF environment ISO (deploy/ovf-env.iso) when the system or an enclosing collection has properties, as vSphere delivers the environment through the VM's CD-ROM drive. When there is no drive, one is added for the ISO (on the IDE secondary channel of a pc-i440fx machine, on SATA on q35).",
    ),
    row(
        16,
        &[],
        "DVD drive",
        Kind::Cdrom,
        "cdrom",
        "",
        0,
        "As a CD drive.",
    ),
    row(
        10,
        &["e1000"],
        "Ethernet adapter, E1000",
        Kind::Nic,
        "e1000",
        "e1000",
        0,
        "Intel 82540EM (VMware's E1000 is an 82545EM; both use the e1000 driver).",
    ),
    row(
        10,
        &["e1000e"],
        "Ethernet adapter, E1000e",
        Kind::Nic,
        "e1000e",
        "e1000e",
        0,
        "Intel 82574L, the same chip as VMware's.",
    ),
    row(
        10,
        &["vmxnet3"],
        "Ethernet adapter, VmxNet3",
        Kind::Nic,
        "vmxnet3",
        "vmxnet3",
        0,
        "VMware's vmxnet3, which QEMU emulates.",
    ),
    row(
        10,
        &["pcnet32", "pcnet"],
        "Ethernet adapter, PCNet32",
        Kind::Nic,
        "pcnet",
        "pcnet",
        0,
        "AMD PCnet-PCI II, as VMware's and VirtualBox's.",
    ),
    row(
        10,
        &["virtio", "virtio-net"],
        "Ethernet adapter, virtio",
        Kind::Nic,
        "virtio",
        "virtio-net-pci",
        0,
        "virtio-net.",
    ),
    row(
        10,
        &[],
        "Ethernet adapter of another or no subtype (VmxNet, VmxNet2, ...)",
        Kind::Nic,
        "e1000",
        "e1000",
        0,
        "e1000, the adapter most guests have a driver for (QEMU has no vmxnet2). Every adapter uses user-mode networking (libvirt <interface type='user'>, qemu -netdev user), which works without privileges or a host bridge; the MAC address is rasd:Address when that is a unicast MAC, else chosen by the hypervisor.",
    ),
    row(
        24,
        &[],
        "Graphics controller",
        Kind::Video,
        "vga",
        "VGA",
        0,
        "A standard VGA adapter (libvirt adds a VNC display on 127.0.0.1; qemu.sh runs with -nographic). Without a graphics item the machine has none.",
    ),
    row(
        21,
        &[],
        "Serial port",
        Kind::Serial,
        "",
        "",
        0,
        "The machine has one serial port, the console (libvirt pty, qemu.sh stdio); more serial ports are not mapped.",
    ),
    row(
        14,
        &[],
        "Floppy drive",
        Kind::Unmapped,
        "",
        "",
        0,
        "Not mapped.",
    ),
    row(
        22,
        &[],
        "Parallel port",
        Kind::Unmapped,
        "",
        "",
        0,
        "Not mapped.",
    ),
    row(
        23,
        &[],
        "USB controller",
        Kind::Unmapped,
        "",
        "",
        0,
        "Not mapped: the machine has no USB (libvirt <controller type='usb' model='none'/>).",
    ),
    row(
        35,
        &[],
        "Sound card",
        Kind::Unmapped,
        "",
        "",
        0,
        "Not mapped.",
    ),
    row(
        1,
        &[],
        "Other (VMware VMCI, sound cards)",
        Kind::Unmapped,
        "",
        "",
        0,
        "Not mapped.",
    ),
    row(
        0,
        &[],
        "Any other ResourceType",
        Kind::Unmapped,
        "",
        "",
        0,
        "Not mapped; each such item is named in a comment of both files.",
    ),
];

/// The row for an item of ResourceType `rt` and subtype `subtype`.
pub fn row_for(rt: u16, subtype: Option<&str>) -> &'static Row {
    let sub = subtype.map(|s| s.trim().to_ascii_lowercase());
    let same_type = || MAPPING.iter().filter(|r| r.resource_type == rt && rt != 0);
    same_type()
        .find(|r| sub.as_deref().is_some_and(|s| r.subtypes.contains(&s)))
        .or_else(|| same_type().find(|r| r.subtypes.is_empty()))
        .unwrap_or(&UNKNOWN)
}

/// The catch-all row (the last of [`MAPPING`]).
static UNKNOWN: Row = row(
    0,
    &[],
    "Any other ResourceType",
    Kind::Unmapped,
    "",
    "",
    0,
    "",
);

/// Firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// PC BIOS (SeaBIOS).
    Bios,
    /// UEFI (OVMF).
    Efi,
}

/// The chipset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chipset {
    /// pc-i440fx (PIIX IDE): when anything is on IDE.
    I440fx,
    /// q35 otherwise.
    Q35,
}

/// A storage controller.
#[derive(Debug, Clone)]
pub struct Controller {
    /// Its row (kind, models).
    pub row: &'static Row,
    /// Index among the controllers of its kind (libvirt's controller index; IDE: channel).
    pub index: u32,
}

/// Where a drive is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// On `controllers[c]` at this unit.
    On {
        /// Index in [`Machine::controllers`].
        controller: usize,
        /// SCSI target, IDE unit on the channel, AHCI port.
        unit: u32,
    },
    /// A virtio-blk device of its own.
    Virtio,
    /// An NVMe controller of its own (libvirt: virtio-blk).
    Nvme,
}

/// What a drive holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Media {
    /// A hard disk: the flat file.
    Disk(PathBuf),
    /// A CD-ROM: an image, or empty.
    Cdrom(Option<PathBuf>),
}

/// A drive.
#[derive(Debug, Clone)]
pub struct Drive {
    /// What it holds.
    pub media: Media,
    /// Where.
    pub attach: Attach,
    /// The boot device.
    pub boot: bool,
}

/// A network adapter.
#[derive(Debug, Clone)]
pub struct Nic {
    /// Its row (models).
    pub row: &'static Row,
    /// A valid unicast MAC, `aa:bb:cc:dd:ee:ff`.
    pub mac: Option<String>,
    /// The descriptor's network name (informational: user-mode networking is used).
    pub network: Option<String>,
}

/// The machine both launch files start.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Domain name: letters, digits, `.`, `_`, `-` and `+` only.
    pub name: String,
    /// The VirtualSystem's ovf:id (for the comments).
    pub system_id: String,
    /// The deployment configuration.
    pub configuration: Option<String>,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Cores per socket (divides `vcpus`).
    pub cores_per_socket: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Firmware.
    pub firmware: Firmware,
    /// Chipset.
    pub chipset: Chipset,
    /// Storage controllers, in item order.
    pub controllers: Vec<Controller>,
    /// Drives, in item order (the environment ISO's drive where it goes).
    pub drives: Vec<Drive>,
    /// Network adapters, in item order.
    pub nics: Vec<Nic>,
    /// A graphics adapter.
    pub video: bool,
    /// The flat disks are attached read-write (a writable mount), else transient.
    pub writable_disks: bool,
    /// What was not mapped, one line each, for the comments.
    pub notes: Vec<String>,
}

/// Most items looked at (a hostile descriptor may hold thousands).
const MAX_ITEMS: usize = 4096;
/// Most CPUs a machine gets.
const MAX_CPUS: u64 = 4096;
/// Memory when the descriptor gives none that reads.
const DEFAULT_MEMORY_MIB: u64 = 1024;
/// How much of a descriptor string a note quotes.
const NOTE_TEXT: usize = 80;

/// The machine of the VirtualSystem `t` describes.
pub fn machine(t: &Target<'_>, ctx: &DeployContext) -> Result<Machine, DeployError> {
    let Owner::System(i) = t.owner else {
        return Err(DeployError::NoContent(format!("vms/{}", t.folder)));
    };
    let sys = t
        .desc
        .systems
        .get(i)
        .ok_or_else(|| DeployError::NoContent(format!("vms/{}", t.folder)))?;
    let view = View::new(t.desc).map_err(|e| unusable(e.to_string()))?;
    let mut b = Builder::new(t, sys);
    b.m.writable_disks = ctx.writable_disks;
    match sys.hardware.first() {
        Some(hw) => {
            let nodes = std::rc::Rc::new(Hardware::item_nodes(&view, sys));
            let hardware = Hardware::with_nodes(&view, sys, nodes)
                .ok_or_else(|| unusable("no VirtualHardwareSection".into()))?;
            b.firmware = firmware(&view, sys, hw);
            let items = hardware.effective(t.configuration);
            if items.len() > MAX_ITEMS {
                b.note(format!(
                    "only the first {MAX_ITEMS} of {} hardware items are mapped",
                    items.len()
                ));
            }
            let items: Vec<Item> = items
                .iter()
                .take(MAX_ITEMS)
                .map(|e| Item::new(&hardware, e))
                .collect();
            b.items(&items, t, ctx);
        }
        None => b.note("the system has no VirtualHardwareSection: default CPU and memory".into()),
    }
    b.environment(t, ctx);
    Ok(b.finish())
}

fn unusable(reason: String) -> DeployError {
    DeployError::Unusable {
        file: "libvirt.xml/qemu.sh",
        reason,
    }
}

/// A merged item's fields as text.
struct Item {
    iid: String,
    fields: HashMap<String, String>,
    vmw: HashMap<String, String>,
}

impl Item {
    fn new(hw: &Hardware<'_, '_>, e: &MergedItem) -> Item {
        let mut fields = HashMap::new();
        let mut vmw = HashMap::new();
        for f in &e.fields {
            let text = hw.text(f).trim().to_string();
            match &f.key {
                // The first of repeated children (HostResource, Connection) counts.
                Key::Cim(name) => {
                    fields.entry(name.clone()).or_insert(text);
                }
                Key::Vmw(name) => {
                    vmw.entry(name.clone()).or_insert(text);
                }
                Key::Other(_) => {}
            }
        }
        Item {
            iid: e.iid.clone(),
            fields,
            vmw,
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .get(name)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    fn resource_type(&self) -> Option<u16> {
        self.get("ResourceType")?.parse().ok()
    }

    fn label(&self) -> String {
        let name = self
            .get("ElementName")
            .or_else(|| self.get("Caption"))
            .or_else(|| self.get("Description"))
            .unwrap_or("");
        format!("item {} ({})", quote(&self.iid), quote(name))
    }
}

/// `s` cut to [`NOTE_TEXT`] characters, in double quotes.
fn quote(s: &str) -> String {
    let mut out: String = s.chars().take(NOTE_TEXT).collect();
    if s.chars().count() > NOTE_TEXT {
        out.push_str("...");
    }
    format!("\"{out}\"")
}

/// A drive before it is placed.
struct Pending {
    media: Media,
    parent: Option<String>,
    address: Option<u32>,
    label: String,
    disk: bool,
}

struct Builder {
    m: Machine,
    firmware: Firmware,
    /// InstanceID → index in `m.controllers` (or None: a controller kind with no slot).
    by_iid: HashMap<String, Option<usize>>,
    pending: Vec<Pending>,
    ide_channels: u32,
    serial_seen: bool,
}

impl Builder {
    fn new(t: &Target<'_>, sys: &VirtualSystem) -> Builder {
        let name = sys
            .name
            .as_ref()
            .map(|n| n.value.as_str())
            .filter(|n| !n.trim().is_empty())
            .unwrap_or(sys.id.value.as_str());
        Builder {
            m: Machine {
                name: domain_name(name),
                system_id: sys.id.value.clone(),
                configuration: t.configuration.map(str::to_string),
                vcpus: 1,
                cores_per_socket: 1,
                memory_mib: DEFAULT_MEMORY_MIB,
                firmware: Firmware::Bios,
                chipset: Chipset::Q35,
                controllers: Vec::new(),
                drives: Vec::new(),
                nics: Vec::new(),
                video: false,
                writable_disks: false,
                notes: Vec::new(),
            },
            firmware: Firmware::Bios,
            by_iid: HashMap::new(),
            pending: Vec::new(),
            ide_channels: 0,
            serial_seen: false,
        }
    }

    fn note(&mut self, s: String) {
        self.m.notes.push(s);
    }

    fn items(&mut self, items: &[Item], t: &Target<'_>, ctx: &DeployContext) {
        let mut cpu_seen = false;
        let mut memory_seen = false;
        for item in items {
            let Some(rt) = item.resource_type() else {
                self.note(format!("{}: no ResourceType, not mapped", item.label()));
                continue;
            };
            let row = row_for(rt, item.get("ResourceSubType"));
            match row.kind {
                Kind::Processor if !cpu_seen => {
                    cpu_seen = true;
                    self.processor(item);
                }
                Kind::Memory if !memory_seen => {
                    memory_seen = true;
                    self.memory(item);
                }
                Kind::Processor | Kind::Memory => self.note(format!(
                    "{}: a second {} item, not mapped",
                    item.label(),
                    row.what
                )),
                Kind::Scsi | Kind::Sata | Kind::Ide | Kind::Nvme | Kind::Virtio => {
                    self.controller(item, row)
                }
                Kind::Disk => self.disk(item, t, ctx),
                Kind::Cdrom => self.cdrom(item),
                Kind::Nic => self.nic(item, row),
                Kind::Video => self.m.video = true,
                Kind::Serial if !self.serial_seen => self.serial_seen = true,
                Kind::Serial => self.note(format!(
                    "{}: serial port, not mapped (the machine has one, the console)",
                    item.label()
                )),
                Kind::Unmapped => {
                    let sub = item
                        .get("ResourceSubType")
                        .map(|s| format!(", subtype {}", quote(s)))
                        .unwrap_or_default();
                    let what = if row.resource_type == 0 {
                        "unknown ResourceType".to_string()
                    } else {
                        row.what.to_ascii_lowercase()
                    };
                    self.note(format!(
                        "{}: {what} (ResourceType {rt}{sub}), not mapped",
                        item.label()
                    ));
                }
            }
        }
        if !cpu_seen {
            self.note("no processor item: 1 virtual CPU".into());
        }
        if !memory_seen {
            self.note(format!("no memory item: {DEFAULT_MEMORY_MIB} MiB"));
        }
    }

    fn processor(&mut self, item: &Item) {
        let text = item.get("VirtualQuantity").unwrap_or("");
        let cpus = match text.parse::<u64>() {
            Ok(n) if (1..=MAX_CPUS).contains(&n) => n,
            _ => {
                self.note(format!(
                    "{}: VirtualQuantity {} is not a CPU count from 1 to {MAX_CPUS}: 1 CPU",
                    item.label(),
                    quote(text)
                ));
                1
            }
        };
        let cores = item
            .vmw
            .get("CoresPerSocket")
            .map(|c| (c.clone(), c.parse::<u64>().ok()));
        let cores = match cores {
            None => 1,
            Some((_, Some(c))) if c >= 1 && cpus % c == 0 => c,
            Some((text, _)) => {
                self.note(format!(
                    "{}: vmw:CoresPerSocket {} does not divide {cpus} CPUs: one core per socket",
                    item.label(),
                    quote(&text)
                ));
                1
            }
        };
        // Both are at most MAX_CPUS, so they fit u32.
        self.m.vcpus = u32::try_from(cpus).unwrap_or(1);
        self.m.cores_per_socket = u32::try_from(cores).unwrap_or(1);
    }

    fn memory(&mut self, item: &Item) {
        let quantity = item
            .get("VirtualQuantity")
            .and_then(|q| q.parse::<u64>().ok());
        let factor = match item.get("AllocationUnits") {
            None => Some(1 << 20),
            Some(u) => crate::ovf::units::byte_factor(u).ok(),
        };
        let mib = quantity
            .zip(factor)
            .and_then(|(q, f)| q.checked_mul(f))
            .map(|bytes| bytes.div_ceil(1 << 20))
            .filter(|&m| m > 0);
        match mib {
            Some(m) => self.m.memory_mib = m,
            None => self.note(format!(
                "{}: memory {} {} does not read: {DEFAULT_MEMORY_MIB} MiB",
                item.label(),
                quote(item.get("VirtualQuantity").unwrap_or("")),
                quote(item.get("AllocationUnits").unwrap_or(""))
            )),
        }
    }

    fn controller(&mut self, item: &Item, row: &'static Row) {
        let slot = match row.kind {
            Kind::Ide => {
                let channel = self.ide_channels;
                self.ide_channels = channel.saturating_add(1);
                if channel < 2 {
                    Some(self.push_controller(row, channel))
                } else {
                    self.note(format!(
                        "{}: a third IDE controller, not mapped (its disks become virtio-blk devices)",
                        item.label()
                    ));
                    None
                }
            }
            Kind::Scsi | Kind::Sata => {
                let index = self
                    .m
                    .controllers
                    .iter()
                    .filter(|c| c.row.kind == row.kind)
                    .count();
                Some(self.push_controller(row, u32::try_from(index).unwrap_or(u32::MAX)))
            }
            _ => Some(self.push_controller(row, 0)),
        };
        if row.subtypes.is_empty()
            && let Some(sub) = item.get("ResourceSubType")
            && row.kind == Kind::Scsi
        {
            self.note(format!(
                "{}: SCSI subtype {} is not known: LSI Logic",
                item.label(),
                quote(sub)
            ));
        }
        self.by_iid.insert(item.iid.clone(), slot);
    }

    fn push_controller(&mut self, row: &'static Row, index: u32) -> usize {
        self.m.controllers.push(Controller { row, index });
        self.m.controllers.len() - 1
    }

    fn disk(&mut self, item: &Item, t: &Target<'_>, ctx: &DeployContext) {
        let Some(host) = item.get("HostResource") else {
            self.note(format!(
                "{}: disk without HostResource, not attached",
                item.label()
            ));
            return;
        };
        let disk_id = match parse_host_resource(host) {
            Some((HostResourceKind::Disk, id)) => Some(id.to_string()),
            Some((HostResourceKind::File, id)) => t
                .desc
                .disks
                .iter()
                .find(|d| d.file_ref.as_ref().is_some_and(|f| f.value == id))
                .map(|d| d.disk_id.value.clone()),
            None => None,
        };
        let Some(path) = disk_id.as_deref().and_then(|id| ctx.flat_disk(id)) else {
            self.note(format!(
                "{}: HostResource {} has no flat file on the mount (a blank, remote or unreadable disk), not attached",
                item.label(),
                quote(host)
            ));
            return;
        };
        self.pend(item, Media::Disk(path), true);
    }

    fn cdrom(&mut self, item: &Item) {
        if let Some(host) = item.get("HostResource") {
            self.note(format!(
                "{}: the CD-ROM's image {} is not attached (the drive is empty)",
                item.label(),
                quote(host)
            ));
        }
        self.pend(item, Media::Cdrom(None), false);
    }

    fn pend(&mut self, item: &Item, media: Media, disk: bool) {
        self.pending.push(Pending {
            media,
            parent: item.get("Parent").map(str::to_string),
            address: item.get("AddressOnParent").and_then(|a| a.parse().ok()),
            label: item.label(),
            disk,
        });
    }

    fn nic(&mut self, item: &Item, row: &'static Row) {
        if row.subtypes.is_empty()
            && let Some(sub) = item.get("ResourceSubType")
        {
            self.note(format!(
                "{}: network adapter subtype {} is not emulated: e1000",
                item.label(),
                quote(sub)
            ));
        }
        let mac = item.get("Address").and_then(|a| {
            let mac = unicast_mac(a);
            if mac.is_none() {
                self.note(format!(
                    "{}: Address {} is not a unicast MAC address: the hypervisor picks one",
                    item.label(),
                    quote(a)
                ));
            }
            mac
        });
        self.m.nics.push(Nic {
            row,
            mac,
            network: item.get("Connection").map(str::to_string),
        });
    }

    /// Places the pending drives on their controllers, and the environment ISO.
    fn environment(&mut self, t: &Target<'_>, ctx: &DeployContext) {
        self.m.firmware = self.firmware;
        self.efi_scsi();
        let pending = std::mem::take(&mut self.pending);
        let ide_used = pending
            .iter()
            .any(|p| self.parent_of(p).is_some_and(|c| c.row.kind == Kind::Ide));
        self.m.chipset = if ide_used {
            Chipset::I440fx
        } else {
            Chipset::Q35
        };
        let mut used: HashMap<(usize, u32), ()> = HashMap::new();
        let mut boot_given = false;
        for p in pending {
            let attach = self.place(&p, &mut used);
            let Some(attach) = attach else { continue };
            let boot = p.disk && !boot_given;
            boot_given |= boot;
            self.m.drives.push(Drive {
                media: p.media,
                attach,
                boot,
            });
        }
        if !has_properties(t) {
            return;
        }
        let iso = ctx.mount_path(&t.own_file(DeployFile::EnvironmentIso));
        if let Some(cd) = self
            .m
            .drives
            .iter_mut()
            .find(|d| matches!(d.media, Media::Cdrom(None)))
        {
            cd.media = Media::Cdrom(Some(iso));
            return;
        }
        // No CD-ROM drive: add one where this chipset has room.
        let attach = self.free_cd_slot(&mut used);
        self.m.drives.push(Drive {
            media: Media::Cdrom(Some(iso)),
            attach,
            boot: false,
        });
    }

    /// With EFI, SCSI adapters other than virtio-scsi become virtio-scsi: OVMF (as Debian
    /// builds it, measured: no boot from lsi53c895a, mptsas1068 or pvscsi, a boot from
    /// virtio-scsi-pci) has no driver for them, so nothing on them could boot. SeaBIOS has
    /// all of them, so BIOS machines keep the table's adapter.
    fn efi_scsi(&mut self) {
        if self.m.firmware != Firmware::Efi {
            return;
        }
        let virtio = row_for(6, Some("virtio"));
        let mut changed = Vec::new();
        for c in &mut self.m.controllers {
            if c.row.kind == Kind::Scsi && !std::ptr::eq(c.row, virtio) {
                changed.push((c.index, c.row.qemu));
                c.row = virtio;
            }
        }
        for (index, qemu) in changed {
            self.note(format!(
                "SCSI controller {index}: EFI firmware (OVMF) has no driver for the {qemu} it would be, so it is virtio-scsi"
            ));
        }
    }

    fn parent_of(&self, p: &Pending) -> Option<&Controller> {
        let slot = (*self.by_iid.get(p.parent.as_deref()?)?)?;
        self.m.controllers.get(slot)
    }

    /// Where a pending drive goes, or `None` (said in a note) when nowhere.
    fn place(&mut self, p: &Pending, used: &mut HashMap<(usize, u32), ()>) -> Option<Attach> {
        let slot = p
            .parent
            .as_deref()
            .and_then(|iid| self.by_iid.get(iid).copied().flatten());
        let Some(c) = slot.and_then(|s| self.m.controllers.get(s).map(|c| (s, c.row))) else {
            return self.fallback(p, "its Parent is no mapped controller");
        };
        let (slot, row) = c;
        match row.kind {
            Kind::Virtio | Kind::Nvme if !p.disk => {
                return self.fallback(p, "its controller has no CD-ROM drives");
            }
            Kind::Virtio => return Some(Attach::Virtio),
            Kind::Nvme => return Some(Attach::Nvme),
            _ => {}
        }
        let fits = |u: u32| u < row.units && !used.contains_key(&(slot, u));
        let unit = p
            .address
            .filter(|&u| fits(u))
            .or_else(|| (0..row.units).find(|&u| fits(u)));
        match unit {
            Some(unit) => {
                used.insert((slot, unit), ());
                Some(Attach::On {
                    controller: slot,
                    unit,
                })
            }
            None => self.fallback(p, "its controller has no free unit"),
        }
    }

    fn fallback(&mut self, p: &Pending, why: &str) -> Option<Attach> {
        if p.disk {
            self.note(format!(
                "{}: {why}: attached as a virtio-blk device",
                p.label
            ));
            Some(Attach::Virtio)
        } else {
            self.note(format!(
                "{}: {why}: the CD-ROM drive is not attached",
                p.label
            ));
            None
        }
    }

    /// A slot for the environment's CD-ROM when the descriptor has no drive: the IDE
    /// secondary channel on pc-i440fx, else an AHCI port (adding a controller if needed).
    fn free_cd_slot(&mut self, used: &mut HashMap<(usize, u32), ()>) -> Attach {
        if self.m.chipset == Chipset::I440fx {
            for channel in [1u32, 0] {
                let slot = match self
                    .m
                    .controllers
                    .iter()
                    .position(|c| c.row.kind == Kind::Ide && c.index == channel)
                {
                    Some(s) => s,
                    None => self.push_controller(ide_row(), channel),
                };
                if let Some(unit) = (0..2).find(|u| !used.contains_key(&(slot, *u))) {
                    used.insert((slot, unit), ());
                    return Attach::On {
                        controller: slot,
                        unit,
                    };
                }
            }
        }
        for slot in 0..self.m.controllers.len() {
            let Some(c) = self.m.controllers.get(slot) else {
                break;
            };
            if c.row.kind != Kind::Sata {
                continue;
            }
            if let Some(unit) = (0..c.row.units).find(|u| !used.contains_key(&(slot, *u))) {
                used.insert((slot, unit), ());
                return Attach::On {
                    controller: slot,
                    unit,
                };
            }
        }
        let index = self
            .m
            .controllers
            .iter()
            .filter(|c| c.row.kind == Kind::Sata)
            .count();
        let slot = self.push_controller(sata_row(), u32::try_from(index).unwrap_or(u32::MAX));
        used.insert((slot, 0), ());
        Attach::On {
            controller: slot,
            unit: 0,
        }
    }

    fn finish(self) -> Machine {
        self.m
    }
}

fn ide_row() -> &'static Row {
    row_for(5, None)
}

fn sata_row() -> &'static Row {
    row_for(20, None)
}

/// Whether the environment ISO is attached: the system or an enclosing collection has
/// properties (the environment then has something to deliver).
fn has_properties(t: &Target<'_>) -> bool {
    let Owner::System(i) = t.owner else {
        return false;
    };
    let Some(sys) = t.desc.systems.get(i) else {
        return false;
    };
    !sys.properties.is_empty()
        || t.desc
            .collections
            .iter()
            .any(|c| sys.path.contains(&c.id.value) && !c.properties.is_empty())
}

/// The firmware the descriptor asks for (see the module doc).
fn firmware(view: &View<'_>, sys: &VirtualSystem, hw: &VirtualHardware) -> Firmware {
    let vmw_efi = view.find(hw.element).is_some_and(|section| {
        view.node(section).children.iter().any(|&c| {
            let n = view.node(c);
            let attr = |name: &str| {
                n.attr(Ns::Vmw, name)
                    .or_else(|| n.ovf_attr(name))
                    .map(|a| a.value.trim().to_ascii_lowercase())
            };
            n.ns == Ns::Vmw
                && n.local == "Config"
                && attr("key").as_deref() == Some("firmware")
                && attr("value").as_deref() == Some("efi")
        })
    });
    let vbox_efi = view
        .find(sys.element)
        .and_then(|s| crate::settings::vbox::machine_hardware(view, s))
        .and_then(|h| view.ovf_child(h, "Firmware"))
        .and_then(|f| view.node(f).attr(Ns::None, "type").map(|t| t.value.clone()))
        .is_some_and(|t| t.trim().to_ascii_uppercase().starts_with("EFI"));
    let hyperv_gen2 = hw
        .system
        .as_ref()
        .and_then(|s| s.system_type.as_ref())
        .is_some_and(|t| {
            t.value
                .split_whitespace()
                .any(|w| w.eq_ignore_ascii_case("Microsoft:Hyper-V:SubType:2"))
        });
    if vmw_efi || vbox_efi || hyperv_gen2 {
        Firmware::Efi
    } else {
        Firmware::Bios
    }
}

/// A libvirt domain name from the system's name: letters, digits, `.`, `_`, `-`, `+` kept,
/// anything else `_`; at most 64 characters; starting with a letter or digit (`vm-` is put
/// in front otherwise); never all digits (virsh would read it as a domain id).
pub fn domain_name(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) || s.chars().all(|c| c.is_ascii_digit())
    {
        s.insert_str(0, "vm-");
    }
    s
}

/// `a` as a unicast MAC address (`aa:bb:cc:dd:ee:ff`), when it is one: six hex octets
/// separated by `:` or `-`, or twelve hex digits; not multicast, not all zeros.
pub fn unicast_mac(a: &str) -> Option<String> {
    let a = a.trim();
    let octets: Vec<&str> = if a.contains(':') {
        a.split(':').collect()
    } else if a.contains('-') {
        a.split('-').collect()
    } else if a.len() == 12 && a.is_ascii() {
        (0..6).filter_map(|i| a.get(2 * i..2 * i + 2)).collect()
    } else {
        return None;
    };
    if octets.len() != 6 {
        return None;
    }
    let mut bytes = [0u8; 6];
    for (b, o) in bytes.iter_mut().zip(&octets) {
        if o.is_empty() || o.len() > 2 {
            return None;
        }
        *b = u8::from_str_radix(o, 16).ok()?;
    }
    if bytes[0] & 1 == 1 || bytes.iter().all(|&b| b == 0) {
        return None;
    }
    Some(
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
    )
}

/// `path` as text, for files that name it: it must be UTF-8 (both files are text).
pub fn path_text<'p>(path: &'p Path, file: &'static str) -> Result<&'p str, DeployError> {
    path.to_str().ok_or_else(|| DeployError::Unusable {
        file,
        reason: format!("{} is not UTF-8", path.display()),
    })
}

/// The header comment lines both files carry: what they were made from, and the notes.
pub fn header_lines(m: &Machine, file: &str) -> Vec<String> {
    let config = m
        .configuration
        .as_deref()
        .map(|c| format!(", deployment configuration {}", quote(c)))
        .unwrap_or_default();
    let mut out = vec![
        format!(
            "{file}: generated by ovafs from the OVF descriptor, VirtualSystem {}{config}.",
            quote(&m.system_id)
        ),
        "The mapping of hardware items is the LAUNCH FILES table of ovafs(1).".to_string(),
    ];
    if m.notes.is_empty() {
        out.push("Every hardware item is mapped.".into());
    } else {
        out.push("Not mapped or changed:".into());
        out.extend(m.notes.iter().map(|n| format!("- {n}")));
    }
    out
}

/// What a row becomes in libvirt.xml and qemu.sh, in words.
fn row_targets(r: &Row) -> String {
    match r.kind {
        Kind::Processor => "libvirt <vcpu> and <cpu><topology>; qemu -smp.".into(),
        Kind::Memory => "libvirt <memory unit='MiB'>; qemu -m.".into(),
        Kind::Scsi => format!(
            "libvirt <controller type='scsi' model='{}'>, disks on bus scsi; qemu -device {}, disks scsi-hd, CD-ROMs scsi-cd.",
            r.libvirt, r.qemu
        ),
        Kind::Ide => "libvirt bus ide; qemu ide-hd and ide-cd on ide.0 and ide.1.".into(),
        Kind::Sata => format!(
            "libvirt <controller type='sata'>, bus sata; qemu -device {}, ide-hd and ide-cd on its ports.",
            r.qemu
        ),
        Kind::Nvme => format!("libvirt bus {}; qemu -device {}.", r.libvirt, r.qemu),
        Kind::Virtio => format!("libvirt bus {}; qemu -device {}.", r.libvirt, r.qemu),
        Kind::Disk => "libvirt <disk device='disk'> with <driver type='raw'>; qemu -drive format=raw,if=none and the controller's disk device.".into(),
        Kind::Cdrom => "libvirt <disk device='cdrom'>; qemu -drive media=cdrom and ide-cd or scsi-cd.".into(),
        Kind::Nic => format!(
            "libvirt <interface type='user'><model type='{}'/>; qemu -netdev user and -device {}.",
            r.libvirt, r.qemu
        ),
        Kind::Video => "libvirt <video><model type='vga'/>; qemu -vga std.".into(),
        Kind::Serial => "libvirt <serial type='pty'> and <console>; qemu -serial mon:stdio.".into(),
        Kind::Unmapped => "Nothing.".into(),
    }
}

/// The man page's LAUNCH FILES section, generated from [`MAPPING`].
pub fn man_section() -> String {
    let mut s = String::from(".SH LAUNCH FILES\n");
    let paras = [
        "vms/ID/deploy/libvirt.xml and vms/ID/deploy/qemu.sh (for every VirtualSystem) start the appliance from the mount: virsh define vms/ID/deploy/libvirt.xml, or sh vms/ID/deploy/qemu.sh. Both are made from the same machine: the VirtualSystem's first VirtualHardwareSection in the deployment configuration of -o deployment= (the default configuration otherwise), with the mount's flat disks and, when the system has properties, deploy/ovf-env.iso in a CD-ROM drive. They are generated at their first read and stay byte-identical until the descriptor changes. What a file does not map is listed in a comment at its top.",
        "libvirt.xml is a domain of type kvm (a host without KVM needs type='qemu': virsh edit), machine pc (i440fx) when anything is on IDE, else q35, with <os firmware='efi'> for EFI, CPU mode host-passthrough, a serial console, no USB and no memory balloon; every value from the descriptor is escaped, and a path it cannot hold (a control character, which XML 1.0 cannot carry, or a line break, which libvirt's path syntax excludes) makes the read fail (EIO, with a log line).",
        "qemu.sh is a POSIX sh script running qemu-system-x86_64 -nodefaults -nographic with the serial console on its standard input and output (Ctrl-A X quits). It uses KVM (-cpu host) when /dev/kvm is readable and writable when it runs, TCG (-cpu max) otherwise; OVAFS_ACCEL=kvm or OVAFS_ACCEL=tcg forces one. For EFI it looks for OVMF (OVAFS_OVMF_CODE and OVAFS_OVMF_VARS, else the Debian, Fedora, Arch and openSUSE locations) and runs with a temporary copy of the variable store. Its arguments are appended to qemu's, so sh qemu.sh -m 4096 overrides the memory. Every path is single-quoted.",
        "Firmware: EFI when the VirtualHardwareSection has vmw:Config vmw:key=\"firmware\" vmw:value=\"efi\" (ovftool, vSphere), when VirtualBox's vbox:Machine has Hardware/Firmware type=\"EFI\", or when the VirtualSystemType is Microsoft:Hyper-V:SubType:2; BIOS otherwise. With EFI every SCSI controller is virtio-scsi (a comment says so): OVMF has no driver for the LSI 53C895A, SAS1068 or PVSCSI adapters, so nothing on them could boot; with BIOS, SeaBIOS boots from all of them. The name is the VirtualSystem's Name (else its ovf:id) with every character but letters, digits, . _ - + made _.",
        "The mapping of hardware items (CIM ResourceType, ResourceSubType compared without case):",
    ];
    for (i, p) in paras.iter().enumerate() {
        if i > 0 {
            s.push_str(".PP\n");
        }
        s.push_str(&roff_escape(p));
        s.push('\n');
    }
    for r in MAPPING {
        let key = match (r.resource_type, r.subtypes) {
            (0, _) => "other".to_string(),
            (rt, []) => format!("{rt}"),
            (rt, subs) => format!("{rt} {}", subs.join(", ")),
        };
        s.push_str(".TP\n");
        s.push_str(&format!(".B {}\n", roff_escape(&key)));
        s.push_str(&roff_escape(&format!(
            "{}: {} {}",
            r.what,
            row_targets(r),
            r.note
        )));
        s.push('\n');
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_found_by_type_and_subtype() {
        assert_eq!(row_for(6, Some("lsilogic")).qemu, "lsi53c895a");
        assert_eq!(row_for(6, Some("LsiLogic")).qemu, "lsi53c895a");
        assert_eq!(row_for(6, Some("lsilogicsas")).qemu, "mptsas1068");
        assert_eq!(row_for(6, Some("VirtualSCSI")).qemu, "pvscsi");
        assert_eq!(row_for(6, Some("buslogic")).libvirt, "lsilogic");
        assert_eq!(row_for(6, Some("weird")).libvirt, "lsilogic");
        assert_eq!(row_for(6, None).libvirt, "lsilogic");
        assert_eq!(row_for(5, Some("PIIX4")).kind, Kind::Ide);
        assert_eq!(row_for(5, Some("virtio")).kind, Kind::Virtio);
        assert_eq!(row_for(20, Some("vmware.sata.ahci")).kind, Kind::Sata);
        assert_eq!(row_for(20, Some("AHCI")).kind, Kind::Sata);
        assert_eq!(row_for(20, Some("vmware.nvme.controller")).kind, Kind::Nvme);
        assert_eq!(row_for(10, Some("E1000")).libvirt, "e1000");
        assert_eq!(row_for(10, Some("E1000e")).libvirt, "e1000e");
        assert_eq!(row_for(10, Some("VMXNET3")).qemu, "vmxnet3");
        assert_eq!(row_for(10, Some("VmxNet3")).qemu, "vmxnet3");
        assert_eq!(row_for(10, Some("PCNet32")).libvirt, "pcnet");
        assert_eq!(row_for(10, Some("virtio")).qemu, "virtio-net-pci");
        assert_eq!(row_for(10, Some("VmxNet2")).libvirt, "e1000");
        assert_eq!(row_for(17, None).kind, Kind::Disk);
        assert_eq!(row_for(15, None).kind, Kind::Cdrom);
        assert_eq!(row_for(16, None).kind, Kind::Cdrom);
        assert_eq!(row_for(23, Some("vmware.usb.xhci")).kind, Kind::Unmapped);
        assert_eq!(row_for(999, None).kind, Kind::Unmapped);
        assert_eq!(row_for(0, None).kind, Kind::Unmapped);
    }

    #[test]
    fn every_row_is_reachable_and_the_catch_all_is_last() {
        for r in MAPPING {
            let found = row_for(r.resource_type, r.subtypes.first().copied());
            assert!(std::ptr::eq(found, r) || r.resource_type == 0, "{}", r.what);
        }
        assert_eq!(MAPPING.last().map(|r| r.resource_type), Some(0));
        // Subtypes are lower case (they are compared with a lower-cased value).
        for r in MAPPING {
            for s in r.subtypes {
                assert_eq!(*s, s.to_ascii_lowercase());
            }
        }
    }

    #[test]
    fn macs_are_checked() {
        assert_eq!(
            unicast_mac("00:50:56:AB:cd:01").as_deref(),
            Some("00:50:56:ab:cd:01")
        );
        assert_eq!(
            unicast_mac("00-50-56-ab-cd-01").as_deref(),
            Some("00:50:56:ab:cd:01")
        );
        assert_eq!(
            unicast_mac("005056abcd01").as_deref(),
            Some("00:50:56:ab:cd:01")
        );
        for bad in [
            "",
            "0",
            "7",
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "00:50:56:ab:cd",
            "00:50:56:ab:cd:01:02",
            "00:50:56:ab:cd:zz",
            "00:50:56:ab:cd:123",
            "é05056abcd0",
        ] {
            assert_eq!(unicast_mac(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_are_safe_for_libvirt() {
        assert_eq!(domain_name("web-1.example"), "web-1.example");
        assert_eq!(domain_name("a b/c'd\"e<f>&\n"), "a_b_c_d_e_f___");
        assert_eq!(domain_name("-x"), "vm--x");
        assert_eq!(domain_name("123"), "vm-123");
        assert_eq!(domain_name(""), "vm-");
        assert_eq!(domain_name(&"x".repeat(100)).len(), 64);
        assert_eq!(domain_name("ünï"), "vm-_n_");
    }
}
