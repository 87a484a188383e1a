//! The typed descriptor model (docs/formats.md §2).
//!
//! Every value carries the [`Span`] of the bytes it was read from, and every struct that
//! stands for an element records the element's span, so an editor can change a value by
//! splicing new bytes into the original document ([`super::edit`]). The model never
//! re-serialises anything: an unedited descriptor is its original bytes.
//!
//! Simple accessors (`cpus`, `memory_mib`, `nics`, `disk_items` on [`VirtualSystem`])
//! describe the *default* deployment configuration; the raw [`Item`]s keep their
//! `ovf:configuration` lists for callers that need another one.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

pub use super::xml::{Span, Spanned};

/// OVF version, from the root element's namespace (docs/formats.md §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OvfVersion {
    /// VMware's pre-DMTF 0.9 (`http://www.vmware.com/schema/ovf/1/envelope`).
    V0_9,
    /// The pre-1.0 DMTF draft (`http://schemas.dmtf.org/ovf/envelope`).
    Draft,
    /// DSP0243 1.x (`.../ovf/envelope/1`).
    V1,
    /// DSP0243 2.x (`.../ovf/envelope/2`).
    V2,
}

impl fmt::Display for OvfVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OvfVersion::V0_9 => "0.9",
            OvfVersion::Draft => "pre-1.0 draft",
            OvfVersion::V1 => "1.x",
            OvfVersion::V2 => "2.x",
        })
    }
}

/// A parsed descriptor.
#[derive(Clone)]
pub struct Descriptor {
    /// The original bytes; every span indexes these.
    pub bytes: Arc<[u8]>,
    /// The OVF version.
    pub version: OvfVersion,
    /// The root element's namespace URI as written.
    pub namespace: String,
    /// The `ovf:version` attribute of the Envelope, if any (informational only).
    pub version_attr: Option<Spanned<String>>,
    /// The Envelope element.
    pub envelope: Span,
    /// The References element, if any.
    pub references: Option<Span>,
    /// `References/File`, in document order.
    pub files: Vec<FileRef>,
    /// The DiskSection element, if any.
    pub disk_section: Option<Span>,
    /// `DiskSection/Disk`, in document order.
    pub disks: Vec<DiskDef>,
    /// `NetworkSection/Network`, in document order.
    pub networks: Vec<Network>,
    /// `DeploymentOptionSection/Configuration`, in document order.
    pub configurations: Vec<Configuration>,
    /// Every VirtualSystem, depth first in document order, wherever it is nested.
    pub systems: Vec<VirtualSystem>,
    /// Every VirtualSystemCollection, depth first in document order.
    pub collections: Vec<Collection>,
}

impl fmt::Debug for Descriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Descriptor")
            .field("bytes", &format_args!("<{} bytes>", self.bytes.len()))
            .field("version", &self.version)
            .field("namespace", &self.namespace)
            .field("version_attr", &self.version_attr)
            .field("envelope", &self.envelope)
            .field("references", &self.references)
            .field("files", &self.files)
            .field("disk_section", &self.disk_section)
            .field("disks", &self.disks)
            .field("networks", &self.networks)
            .field("configurations", &self.configurations)
            .field("systems", &self.systems)
            .field("collections", &self.collections)
            .finish()
    }
}

impl Descriptor {
    /// The File with this `ovf:id`.
    pub fn file(&self, id: &str) -> Option<&FileRef> {
        self.files.iter().find(|f| f.id.value == id)
    }

    /// The Disk with this `ovf:diskId`.
    pub fn disk(&self, disk_id: &str) -> Option<&DiskDef> {
        self.disks.iter().find(|d| d.disk_id.value == disk_id)
    }

    /// The VirtualSystem with this `ovf:id`.
    pub fn system(&self, id: &str) -> Option<&VirtualSystem> {
        self.systems.iter().find(|s| s.id.value == id)
    }

    /// The default deployment configuration: the one marked `ovf:default="true"`, else the
    /// first one, else none.
    pub fn default_configuration(&self) -> Option<&Configuration> {
        self.configurations
            .iter()
            .find(|c| c.default)
            .or_else(|| self.configurations.first())
    }

    /// Every property of every ProductSection, systems first, then collections.
    pub fn properties(&self) -> impl Iterator<Item = &Property> {
        self.systems
            .iter()
            .flat_map(|s| s.properties.iter())
            .chain(self.collections.iter().flat_map(|c| c.properties.iter()))
    }
}

/// `References/File` (docs/formats.md §1.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    /// The File element.
    pub element: Span,
    /// `ovf:id`.
    pub id: Spanned<String>,
    /// `ovf:href` as written (a relative reference, or a URL).
    pub href: Spanned<String>,
    /// `ovf:size`: bytes as stored (compressed size when compressed; whole file when chunked).
    pub size: Option<Spanned<u64>>,
    /// `ovf:compression` (`gzip`, `identity`, ...).
    pub compression: Option<Spanned<String>>,
    /// `ovf:chunkSize`: the file is split into chunks of this many bytes.
    pub chunk_size: Option<Spanned<u64>>,
}

/// `DiskSection/Disk` (docs/formats.md §2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskDef {
    /// The Disk element.
    pub element: Span,
    /// `ovf:diskId`.
    pub disk_id: Spanned<String>,
    /// `ovf:fileRef`: the File holding the image; `None` for a blank disk.
    pub file_ref: Option<Spanned<String>>,
    /// The capacity in bytes, units applied with checked arithmetic. `None` when the
    /// capacity is absent (Ganeti writes Disks without one) or is a `${property}` whose
    /// property has no default value (set at deploy time).
    pub capacity_bytes: Option<u64>,
    /// `ovf:capacity` as written (a number or `${property}`).
    pub capacity_raw: Option<Spanned<String>>,
    /// `ovf:capacityAllocationUnits` as written (default `byte`).
    pub capacity_units: Option<Spanned<String>>,
    /// `ovf:format`: the image format URI.
    pub format_uri: Option<Spanned<String>>,
    /// `ovf:populatedSize`.
    pub populated_size: Option<Spanned<u64>>,
    /// `ovf:parentRef`: the diskId of the parent of a delta disk.
    pub parent_ref: Option<Spanned<String>>,
}

/// `NetworkSection/Network` (docs/formats.md §2.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// The Network element.
    pub element: Span,
    /// `ovf:name`.
    pub name: Spanned<String>,
    /// The Description child.
    pub description: Option<Spanned<String>>,
}

/// `DeploymentOptionSection/Configuration` (docs/formats.md §2.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configuration {
    /// The Configuration element.
    pub element: Span,
    /// `ovf:id`.
    pub id: Spanned<String>,
    /// `ovf:default="true"`.
    pub default: bool,
    /// The Label child.
    pub label: Option<Spanned<String>>,
    /// The Description child.
    pub description: Option<Spanned<String>>,
}

/// A VirtualSystemCollection (docs/formats.md §2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collection {
    /// The collection element.
    pub element: Span,
    /// `ovf:id`.
    pub id: Spanned<String>,
    /// The Name child.
    pub name: Option<Spanned<String>>,
    /// Ids of the enclosing collections, outermost first.
    pub path: Vec<String>,
    /// The first ProductSection's product information.
    pub product: Option<ProductInfo>,
    /// Properties of all its own ProductSections.
    pub properties: Vec<Property>,
}

/// A VirtualSystem (docs/formats.md §2.2, §2.5-2.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualSystem {
    /// The VirtualSystem element.
    pub element: Span,
    /// `ovf:id`.
    pub id: Spanned<String>,
    /// The Name child.
    pub name: Option<Spanned<String>>,
    /// Ids of the enclosing collections, outermost first.
    pub path: Vec<String>,
    /// The OperatingSystemSection.
    pub os: Option<OsInfo>,
    /// Every VirtualHardwareSection (the simple accessors use the first).
    pub hardware: Vec<VirtualHardware>,
    /// Virtual CPU count (default configuration): `VirtualQuantity` of the Processor item.
    pub cpus: Option<Spanned<u64>>,
    /// Memory in MiB (default configuration), `AllocationUnits` applied; `None` when there
    /// is no memory item or it is not a whole number of MiB.
    pub memory_mib: Option<u64>,
    /// The memory item's quantity and units as written (what an editor changes).
    pub memory: Option<Quantity>,
    /// Network adapters (default configuration).
    pub nics: Vec<Nic>,
    /// Disk, CD/DVD and floppy drives and other items with a HostResource (default
    /// configuration).
    pub disk_items: Vec<DiskItem>,
    /// The first ProductSection's product information.
    pub product: Option<ProductInfo>,
    /// Properties of all its ProductSections.
    pub properties: Vec<Property>,
}

/// `OperatingSystemSection` (docs/formats.md §2.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsInfo {
    /// The section element.
    pub element: Span,
    /// `ovf:id`: the CIM OSType.
    pub id: Spanned<u16>,
    /// The Description child.
    pub description: Option<Spanned<String>>,
    /// `vmw:osType`.
    pub vmw_os_type: Option<Spanned<String>>,
}

/// A `VirtualHardwareSection` (docs/formats.md §2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualHardware {
    /// The section element.
    pub element: Span,
    /// `ovf:id`.
    pub id: Option<Spanned<String>>,
    /// `ovf:transport` (e.g. `iso`, `com.vmware.guestInfo`).
    pub transport: Option<Spanned<String>>,
    /// The System child.
    pub system: Option<SystemInfo>,
    /// Item, StorageItem and EthernetPortItem children, in document order, unmerged.
    pub items: Vec<Item>,
}

/// `VirtualHardwareSection/System` (vssd).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInfo {
    /// The System element.
    pub element: Span,
    /// `vssd:ElementName`.
    pub element_name: Option<Spanned<String>>,
    /// `vssd:InstanceID` (0.9: `InstanceId`).
    pub instance_id: Option<Spanned<String>>,
    /// `vssd:VirtualSystemIdentifier`.
    pub identifier: Option<Spanned<String>>,
    /// `vssd:VirtualSystemType` (e.g. `vmx-11`, `virtualbox-2.2`).
    pub system_type: Option<Spanned<String>>,
}

/// Which item element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    /// `Item` (rasd).
    Item,
    /// `StorageItem` (sasd, OVF 2.x).
    StorageItem,
    /// `EthernetPortItem` (epasd, OVF 2.x).
    EthernetPortItem,
}

/// One item element as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The item element.
    pub element: Span,
    /// Which element.
    pub kind: ItemKind,
    /// `ovf:required` (default true).
    pub required: bool,
    /// `ovf:configuration`: the configurations this item belongs to; `None` = all.
    pub configurations: Option<Spanned<Vec<String>>>,
    /// `ovf:bound` (`min`, `max`, `normal`).
    pub bound: Option<Spanned<String>>,
    /// The CIM children (`rasd:`/`sasd:`/`epasd:`), in document order.
    pub fields: Vec<ItemField>,
}

impl Item {
    /// Whether the item applies in configuration `config` with the normal bound.
    pub fn applies_to(&self, config: Option<&str>) -> bool {
        let bound_ok = self
            .bound
            .as_ref()
            .is_none_or(|b| b.value.eq_ignore_ascii_case("normal"));
        let config_ok = match (&self.configurations, config) {
            (None, _) => true,
            (Some(list), Some(c)) => list.value.iter().any(|x| x == c),
            (Some(_), None) => false,
        };
        bound_ok && config_ok
    }

    /// The first field with this local name.
    pub fn field(&self, name: &str) -> Option<&ItemField> {
        field(&self.fields, name)
    }

    /// `InstanceID` (0.9: `InstanceId`).
    pub fn instance_id(&self) -> Option<&Spanned<String>> {
        instance_id(&self.fields)
    }
}

/// One CIM child of an item (`<rasd:VirtualQuantity>512</rasd:VirtualQuantity>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemField {
    /// Local name (`VirtualQuantity`).
    pub name: String,
    /// The text.
    pub value: Spanned<String>,
    /// The child element.
    pub element: Span,
}

fn field<'a>(fields: &'a [ItemField], name: &str) -> Option<&'a ItemField> {
    fields.iter().find(|f| f.name == name)
}

fn instance_id(fields: &[ItemField]) -> Option<&Spanned<String>> {
    field(fields, "InstanceID")
        .or_else(|| field(fields, "InstanceId"))
        .map(|f| &f.value)
}

/// An item as it applies in one configuration: items with the same InstanceID merged, later
/// children replacing like-named earlier ones (DSP0243, docs/formats.md §2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveItem {
    /// Kind of the first item merged.
    pub kind: ItemKind,
    /// The merged fields.
    pub fields: Vec<ItemField>,
    /// Indices (in [`VirtualHardware::items`]) of the items merged, in order.
    pub sources: Vec<usize>,
}

impl EffectiveItem {
    /// The first field with this local name.
    pub fn field(&self, name: &str) -> Option<&ItemField> {
        field(&self.fields, name)
    }

    /// The text of the first field with this local name.
    pub fn text(&self, name: &str) -> Option<&Spanned<String>> {
        self.field(name).map(|f| &f.value)
    }

    /// All fields with this local name (`Connection`, `HostResource` may repeat).
    pub fn fields_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a ItemField> {
        self.fields.iter().filter(move |f| f.name == name)
    }

    /// `InstanceID` (0.9: `InstanceId`).
    pub fn instance_id(&self) -> Option<&Spanned<String>> {
        instance_id(&self.fields)
    }

    /// `ResourceType`, when it is a number.
    pub fn resource_type(&self) -> Option<u16> {
        self.text("ResourceType")?.value.trim().parse().ok()
    }

    /// The display name: ElementName, else Caption, else Description (docs/formats.md §2.5).
    pub fn display_name(&self) -> Option<&Spanned<String>> {
        self.text("ElementName")
            .or_else(|| self.text("Caption"))
            .or_else(|| self.text("Description"))
    }
}

impl VirtualHardware {
    /// The items that apply in configuration `config` (`None`: items without
    /// `ovf:configuration` only), merged by InstanceID, in order of first appearance.
    pub fn effective_items(&self, config: Option<&str>) -> Vec<EffectiveItem> {
        let mut out: Vec<EffectiveItem> = Vec::new();
        // InstanceID -> index in `out`; keeps merging linear on hostile inputs.
        let mut by_id: HashMap<&str, usize> = HashMap::new();
        for (i, item) in self.items.iter().enumerate() {
            if !item.applies_to(config) {
                continue;
            }
            let id = item.instance_id().map(|s| s.value.as_str());
            match id
                .and_then(|id| by_id.get(id))
                .and_then(|&j| out.get_mut(j))
            {
                Some(e) => {
                    let names: HashSet<&str> =
                        item.fields.iter().map(|f| f.name.as_str()).collect();
                    e.fields.retain(|f| !names.contains(f.name.as_str()));
                    e.fields.extend(item.fields.iter().cloned());
                    e.sources.push(i);
                }
                None => {
                    if let Some(id) = id {
                        by_id.insert(id, out.len());
                    }
                    out.push(EffectiveItem {
                        kind: item.kind,
                        fields: item.fields.clone(),
                        sources: vec![i],
                    });
                }
            }
        }
        out
    }
}

/// A quantity with its units as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity {
    /// InstanceID of the item it comes from.
    pub instance_id: String,
    /// `VirtualQuantity`.
    pub quantity: Spanned<u64>,
    /// `AllocationUnits`.
    pub units: Option<Spanned<String>>,
}

/// A network adapter item (ResourceType 10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// InstanceID.
    pub instance_id: Spanned<String>,
    /// The first `Connection` (a Network name).
    pub connection: Option<Spanned<String>>,
    /// `ResourceSubType` (`E1000`, `VmxNet3`, ...).
    pub subtype: Option<Spanned<String>>,
    /// ElementName, else Caption, else Description.
    pub element_name: Option<Spanned<String>>,
}

/// What a `HostResource` names (docs/formats.md §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostResourceKind {
    /// `ovf:/disk/<diskId>`.
    Disk,
    /// `ovf:/file/<fileId>`.
    File,
}

/// A parsed `HostResource`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostResource {
    /// Disk or File.
    pub kind: HostResourceKind,
    /// The diskId or file id.
    pub id: String,
    /// The HostResource text.
    pub span: Span,
}

/// A drive item: disk, CD/DVD, floppy or storage extent, or any item with a HostResource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskItem {
    /// InstanceID.
    pub instance_id: Spanned<String>,
    /// ResourceType (17 disk, 15 CD, 16 DVD, 14 floppy, 19 storage extent, ...).
    pub resource_type: Option<u16>,
    /// The first HostResource.
    pub host_resource: Option<HostResource>,
    /// `Parent`: InstanceID of the controller.
    pub parent: Option<Spanned<String>>,
    /// `AddressOnParent`.
    pub address_on_parent: Option<Spanned<String>>,
    /// ElementName, else Caption, else Description.
    pub element_name: Option<Spanned<String>>,
}

/// `ProductSection` product information (docs/formats.md §2.6).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProductInfo {
    /// The section element.
    pub element: Span,
    /// `ovf:class`.
    pub class: Option<Spanned<String>>,
    /// `ovf:instance`.
    pub instance: Option<Spanned<String>>,
    /// Product.
    pub product: Option<Spanned<String>>,
    /// Vendor.
    pub vendor: Option<Spanned<String>>,
    /// Version.
    pub version: Option<Spanned<String>>,
    /// FullVersion.
    pub full_version: Option<Spanned<String>>,
    /// ProductUrl.
    pub product_url: Option<Spanned<String>>,
    /// VendorUrl.
    pub vendor_url: Option<Spanned<String>>,
    /// AppUrl.
    pub app_url: Option<Spanned<String>>,
}

/// A per-configuration default (`<Value ovf:value ovf:configuration/>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyValue {
    /// The Value element.
    pub element: Span,
    /// `ovf:value`.
    pub value: Spanned<String>,
    /// `ovf:configuration`.
    pub configurations: Option<Spanned<Vec<String>>>,
}

/// `ProductSection/Property` (docs/formats.md §2.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    /// The Property element.
    pub element: Span,
    /// `ovf:class` of the enclosing ProductSection.
    pub class: Option<String>,
    /// `ovf:instance` of the enclosing ProductSection.
    pub instance: Option<String>,
    /// `ovf:key`.
    pub key: Spanned<String>,
    /// `ovf:type` (`string`, `boolean`, `uint16`, `ip`, ...).
    pub type_name: Option<Spanned<String>>,
    /// `ovf:value` (0.9: `ovf:defaultValue`): the default.
    pub value: Option<Spanned<String>>,
    /// Value children: per-configuration defaults.
    pub values: Vec<PropertyValue>,
    /// `ovf:qualifiers` (`MinLen(1)`, `ValueMap{...}`).
    pub qualifiers: Option<Spanned<String>>,
    /// `ovf:userConfigurable` (0.9: `ovf:configurableByUser`).
    pub user_configurable: Option<Spanned<bool>>,
    /// `ovf:password`.
    pub password: Option<Spanned<bool>>,
    /// `ovf:configuration` on the Property itself.
    pub configurations: Option<Spanned<Vec<String>>>,
    /// The Label child.
    pub label: Option<Spanned<String>>,
    /// The Description child.
    pub description: Option<Spanned<String>>,
}

impl Property {
    /// The key the guest sees: `[class.]key[.instance]`.
    pub fn full_key(&self) -> String {
        let mut s = String::new();
        if let Some(c) = &self.class {
            s.push_str(c);
            s.push('.');
        }
        s.push_str(&self.key.value);
        if let Some(i) = &self.instance {
            s.push('.');
            s.push_str(i);
        }
        s
    }

    /// Whether the user may set it at deploy time (default false).
    pub fn is_user_configurable(&self) -> bool {
        self.user_configurable.as_ref().is_some_and(|b| b.value)
    }

    /// Whether it is a secret (default false).
    pub fn is_password(&self) -> bool {
        self.password.as_ref().is_some_and(|b| b.value)
    }

    /// The default value in configuration `config`: a matching Value child, else `ovf:value`.
    pub fn value_for(&self, config: Option<&str>) -> Option<&Spanned<String>> {
        config
            .and_then(|c| {
                self.values.iter().find(|v| {
                    v.configurations
                        .as_ref()
                        .is_some_and(|l| l.value.iter().any(|x| x == c))
                })
            })
            .map(|v| &v.value)
            .or(self.value.as_ref())
    }
}
