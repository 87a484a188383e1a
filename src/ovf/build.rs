//! From the element tree to the typed [`Descriptor`], enforcing the descriptor rules of
//! docs/formats.md §6 that the model depends on: rule 9 (File ids and hrefs unique, every
//! `Disk/@fileRef` names a File, diskIds unique), rule 11 (capacity units and overflow,
//! `${property}` references), rule 12 (HostResource syntax and targets, `Parent` names an
//! item and has no cycle, `ovf:configuration` ids exist).
//!
//! Producer quirks accepted, each named where it is handled: OVF 0.9 `Section xsi:type` and
//! `Content`, Open-OVF's `xs:name` instead of `xsi:type`, unqualified OVF elements under a
//! prefixed root (Open-OVF, oVirt), `ovf://disk/<id>` host resources (Open-OVF, after the
//! DSP0243 1.0 example), empty `ovf:fileRef`/`ovf:parentRef` (oVirt) read as absent.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::OvfError;
use super::model::*;
use super::units::{UnitsProblem, byte_factor};
use super::xml::{ENVELOPE_0_9, ENVELOPE_1, ENVELOPE_2, ENVELOPE_DRAFT, Node, Ns, Tree, trim_uri};

/// Bytes in a MiB.
const MIB: u64 = 1 << 20;

/// CIM ResourceType values the model reads (docs/formats.md §2.5).
const RT_PROCESSOR: u16 = 3;
const RT_MEMORY: u16 = 4;
const RT_ETHERNET: u16 = 10;
const RT_FLOPPY: u16 = 14;
const RT_CD: u16 = 15;
const RT_DVD: u16 = 16;
const RT_DISK: u16 = 17;
const RT_STORAGE_EXTENT: u16 = 19;

/// Which content element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContentKind {
    System,
    Collection,
}

/// The section name of an OVF section element: the element name for 1.x/2.x
/// (`DiskSection`), or the `xsi:type` of a 0.9 `<Section>` without prefix and `_Type`.
pub(crate) fn section_name(node: &Node) -> Option<&str> {
    if !matches!(node.ns, Ns::Ovf | Ns::None) {
        return None;
    }
    if node.local == "Section" {
        // Open-OVF writes the type as `xs:name` instead of `xsi:type`.
        let t = node
            .attr(Ns::Xsi, "type")
            .or_else(|| node.attr(Ns::Xs, "name"))?;
        let local = t.value.rsplit(':').next().unwrap_or(&t.value);
        return Some(local.strip_suffix("_Type").unwrap_or(local));
    }
    node.local
        .ends_with("Section")
        .then_some(node.local.as_str())
}

/// Whether `node` is a VirtualSystem or VirtualSystemCollection (0.9: `Content xsi:type`).
pub(crate) fn content_kind(node: &Node) -> Option<ContentKind> {
    if node.is_ovf("VirtualSystem") {
        return Some(ContentKind::System);
    }
    if node.is_ovf("VirtualSystemCollection") {
        return Some(ContentKind::Collection);
    }
    if node.is_ovf("Content") {
        let t = node
            .attr(Ns::Xsi, "type")
            .or_else(|| node.attr(Ns::Xs, "name"))?;
        return match t.value.rsplit(':').next() {
            Some("VirtualSystem_Type") => Some(ContentKind::System),
            Some("VirtualSystemCollection_Type") => Some(ContentKind::Collection),
            _ => None,
        };
    }
    None
}

fn required(
    node: &Node,
    element: &'static str,
    attribute: &'static str,
) -> Result<Spanned<String>, OvfError> {
    node.ovf_attr(attribute)
        .cloned()
        .ok_or(OvfError::MissingAttribute {
            element,
            attribute,
            position: node.span.start,
        })
}

/// A decimal `u64` (xs:unsignedLong / non-negative xs:long) with surrounding spaces allowed.
fn parse_u64(s: &Spanned<String>, what: &'static str) -> Result<Spanned<u64>, OvfError> {
    let t = s.value.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_value(what, s));
    }
    let v = t.parse::<u64>().map_err(|_| bad_value(what, s))?;
    Ok(Spanned::new(v, s.span))
}

fn opt_u64(node: &Node, attr: &str, what: &'static str) -> Result<Option<Spanned<u64>>, OvfError> {
    node.ovf_attr(attr).map(|s| parse_u64(s, what)).transpose()
}

/// xs:boolean.
fn parse_bool(s: &Spanned<String>, what: &'static str) -> Result<Spanned<bool>, OvfError> {
    let v = match s.value.trim() {
        "true" | "1" => true,
        "false" | "0" => false,
        _ => return Err(bad_value(what, s)),
    };
    Ok(Spanned::new(v, s.span))
}

fn opt_bool(
    node: &Node,
    attr: &str,
    what: &'static str,
) -> Result<Option<Spanned<bool>>, OvfError> {
    node.ovf_attr(attr).map(|s| parse_bool(s, what)).transpose()
}

fn bad_value(what: &'static str, s: &Spanned<String>) -> OvfError {
    OvfError::BadValue {
        what,
        value: s.value.chars().take(100).collect(),
        position: s.span.start,
    }
}

/// A whitespace-separated list (`ovf:configuration`).
fn list(s: &Spanned<String>) -> Spanned<Vec<String>> {
    Spanned::new(
        s.value.split_whitespace().map(str::to_string).collect(),
        s.span,
    )
}

/// An attribute that is absent when empty (oVirt writes `ovf:parentRef=''`).
fn non_empty(s: Option<&Spanned<String>>) -> Option<Spanned<String>> {
    s.filter(|s| !s.value.trim().is_empty()).cloned()
}

/// Parses a HostResource: `ovf:/disk/<id>`, `/disk/<id>` (VirtualBox, 0.9), `ovf:/file/<id>`,
/// and `ovf://disk/<id>` (Open-OVF, after the DSP0243 1.0 example).
pub fn parse_host_resource(s: &str) -> Option<(HostResourceKind, &str)> {
    let s = s.trim();
    let s = s.strip_prefix("ovf:").unwrap_or(s);
    let s = s.strip_prefix("//").or_else(|| s.strip_prefix('/'))?;
    let (kind, id) = s.split_once('/')?;
    let kind = match kind {
        "disk" => HostResourceKind::Disk,
        "file" => HostResourceKind::File,
        _ => return None,
    };
    (!id.is_empty()).then_some((kind, id))
}

/// Builds the descriptor from its tree.
pub(crate) fn build(tree: &Tree, bytes: Arc<[u8]>) -> Result<Descriptor, OvfError> {
    #[cfg(test)]
    super::parse_count::model();
    let root = tree.node(tree.root);
    if root.local != "Envelope" {
        return Err(OvfError::NotAnEnvelope {
            root: tree.root_name.clone(),
        });
    }
    let version = match trim_uri(&tree.root_uri) {
        ENVELOPE_0_9 => OvfVersion::V0_9,
        ENVELOPE_DRAFT => OvfVersion::Draft,
        ENVELOPE_1 => OvfVersion::V1,
        ENVELOPE_2 => OvfVersion::V2,
        _ => {
            return Err(OvfError::UnsupportedNamespace {
                namespace: tree.root_uri.clone(),
            });
        }
    };

    let mut d = Descriptor {
        bytes,
        version,
        namespace: tree.root_uri.clone(),
        version_attr: root.ovf_attr("version").cloned(),
        envelope: root.span,
        references: None,
        files: Vec::new(),
        disk_section: None,
        disks: Vec::new(),
        networks: Vec::new(),
        configurations: Vec::new(),
        systems: Vec::new(),
        collections: Vec::new(),
    };

    let mut disk_sections = Vec::new();
    let mut contents = Vec::new();
    for child in tree.children(root) {
        if child.is_ovf("References") {
            if d.references.is_none() {
                d.references = Some(child.span);
                d.files = files(tree, child)?;
            } else {
                log::warn!("descriptor has more than one References element; using the first");
            }
        } else if let Some(kind) = content_kind(child) {
            contents.push((child, kind));
        } else {
            match section_name(child) {
                Some("DiskSection") => disk_sections.push(child),
                Some("NetworkSection") => d.networks.extend(networks(tree, child)?),
                Some("DeploymentOptionSection") => {
                    d.configurations.extend(configurations(tree, child)?)
                }
                _ => {}
            }
        }
    }
    if contents.is_empty() {
        return Err(OvfError::NoContent);
    }
    if contents.len() > 1 {
        log::warn!(
            "descriptor has {} content elements; OVF allows one",
            contents.len()
        );
    }

    let default_config = d.default_configuration().map(|c| c.id.value.clone());
    let mut path = Vec::new();
    for (node, kind) in contents {
        content(
            tree,
            node,
            kind,
            &mut path,
            default_config.as_deref(),
            &mut d,
        )?;
    }

    let mut disks = Vec::new();
    {
        let props = property_index(&d);
        for section in &disk_sections {
            for node in tree.children(section).filter(|n| n.is_ovf("Disk")) {
                disks.push(disk(node, &props)?);
            }
        }
    }
    d.disk_section = disk_sections.first().map(|s| s.span);
    d.disks = disks;

    check_disks(&d)?;
    check_hardware(&d)?;
    check_configurations(&d)?;
    Ok(d)
}

/// `References/File` with rule 9 (unique ids and hrefs).
fn files(tree: &Tree, refs: &Node) -> Result<Vec<FileRef>, OvfError> {
    let mut out: Vec<FileRef> = Vec::new();
    let mut ids = HashSet::new();
    let mut hrefs = HashSet::new();
    for f in tree.children(refs).filter(|n| n.is_ovf("File")) {
        let id = required(f, "File", "id")?;
        let href = required(f, "File", "href")?;
        let size = opt_u64(f, "size", "File/@ovf:size")?;
        let chunk_size = opt_u64(f, "chunkSize", "File/@ovf:chunkSize")?;
        if let Some(c) = &chunk_size
            && c.value == 0
        {
            return Err(OvfError::BadValue {
                what: "File/@ovf:chunkSize",
                value: "0".into(),
                position: c.span.start,
            });
        }
        if !ids.insert(id.value.clone()) {
            return Err(OvfError::DuplicateFileId { id: id.value });
        }
        if !hrefs.insert(href.value.clone()) {
            return Err(OvfError::DuplicateHref { href: href.value });
        }
        out.push(FileRef {
            element: f.span,
            id,
            href,
            size,
            compression: f.ovf_attr("compression").cloned(),
            chunk_size,
        });
    }
    Ok(out)
}

fn networks(tree: &Tree, section: &Node) -> Result<Vec<Network>, OvfError> {
    tree.children(section)
        .filter(|n| n.is_ovf("Network"))
        .map(|n| {
            Ok(Network {
                element: n.span,
                name: required(n, "Network", "name")?,
                description: tree.ovf_child_text(n, "Description"),
            })
        })
        .collect()
}

fn configurations(tree: &Tree, section: &Node) -> Result<Vec<Configuration>, OvfError> {
    tree.children(section)
        .filter(|n| n.is_ovf("Configuration"))
        .map(|n| {
            Ok(Configuration {
                element: n.span,
                id: required(n, "Configuration", "id")?,
                default: opt_bool(n, "default", "Configuration/@ovf:default")?
                    .is_some_and(|b| b.value),
                label: tree.ovf_child_text(n, "Label"),
                description: tree.ovf_child_text(n, "Description"),
            })
        })
        .collect()
}

/// A VirtualSystem or collection, recursively.
fn content(
    tree: &Tree,
    node: &Node,
    kind: ContentKind,
    path: &mut Vec<String>,
    config: Option<&str>,
    d: &mut Descriptor,
) -> Result<(), OvfError> {
    let element = match kind {
        ContentKind::System => "VirtualSystem",
        ContentKind::Collection => "VirtualSystemCollection",
    };
    let id = required(node, element, "id")?;
    let name = tree.ovf_child_text(node, "Name");
    let mut product = None;
    let mut properties = Vec::new();
    let mut os = None;
    let mut hardware = Vec::new();
    let mut children = Vec::new();
    for child in tree.children(node) {
        if let Some(k) = content_kind(child) {
            children.push((child, k));
            continue;
        }
        match section_name(child) {
            Some("ProductSection") => {
                let (info, props) = product_section(tree, child)?;
                product.get_or_insert(info);
                properties.extend(props);
            }
            Some("OperatingSystemSection") if kind == ContentKind::System && os.is_none() => {
                os = Some(os_section(tree, child)?);
            }
            Some("VirtualHardwareSection") if kind == ContentKind::System => {
                hardware.push(hardware_section(tree, child)?);
            }
            _ => {}
        }
    }
    match kind {
        ContentKind::System => {
            if !children.is_empty() {
                log::warn!(
                    "VirtualSystem {:?} contains content elements; ignored",
                    id.value
                );
            }
            let mut vs = VirtualSystem {
                element: node.span,
                id,
                name,
                path: path.clone(),
                os,
                hardware,
                cpus: None,
                memory_mib: None,
                memory: None,
                nics: Vec::new(),
                disk_items: Vec::new(),
                product,
                properties,
            };
            summarise(&mut vs, config)?;
            d.systems.push(vs);
        }
        ContentKind::Collection => {
            let id_text = id.value.clone();
            d.collections.push(Collection {
                element: node.span,
                id,
                name,
                path: path.clone(),
                product,
                properties,
            });
            path.push(id_text);
            for (child, k) in children {
                content(tree, child, k, path, config, d)?;
            }
            path.pop();
        }
    }
    Ok(())
}

fn product_section(tree: &Tree, node: &Node) -> Result<(ProductInfo, Vec<Property>), OvfError> {
    let class = node.ovf_attr("class").cloned();
    let instance = node.ovf_attr("instance").cloned();
    let text = |name: &str| tree.ovf_child_text(node, name);
    let info = ProductInfo {
        element: node.span,
        class: class.clone(),
        instance: instance.clone(),
        product: text("Product"),
        vendor: text("Vendor"),
        version: text("Version"),
        full_version: text("FullVersion"),
        product_url: text("ProductUrl"),
        vendor_url: text("VendorUrl"),
        app_url: text("AppUrl"),
    };
    let mut props = Vec::new();
    for p in tree.children(node).filter(|n| n.is_ovf("Property")) {
        let mut values = Vec::new();
        for v in tree.children(p).filter(|n| n.is_ovf("Value")) {
            values.push(PropertyValue {
                element: v.span,
                value: required(v, "Value", "value")?,
                configurations: v.ovf_attr("configuration").map(list),
            });
        }
        // OVF 0.9 spells the default `ovf:defaultValue` and the flag `ovf:configurableByUser`.
        let user_configurable =
            match opt_bool(p, "userConfigurable", "Property/@ovf:userConfigurable")? {
                Some(b) => Some(b),
                None => opt_bool(p, "configurableByUser", "Property/@ovf:configurableByUser")?,
            };
        props.push(Property {
            element: p.span,
            class: class.as_ref().map(|c| c.value.clone()),
            instance: instance.as_ref().map(|c| c.value.clone()),
            key: required(p, "Property", "key")?,
            type_name: p.ovf_attr("type").cloned(),
            value: p
                .ovf_attr("value")
                .or_else(|| p.ovf_attr("defaultValue"))
                .cloned(),
            values,
            qualifiers: p.ovf_attr("qualifiers").cloned(),
            user_configurable,
            password: opt_bool(p, "password", "Property/@ovf:password")?,
            configurations: p.ovf_attr("configuration").map(list),
            label: tree.ovf_child_text(p, "Label"),
            description: tree.ovf_child_text(p, "Description"),
        });
    }
    Ok((info, props))
}

fn os_section(tree: &Tree, node: &Node) -> Result<OsInfo, OvfError> {
    let id = required(node, "OperatingSystemSection", "id")?;
    let parsed = id
        .value
        .trim()
        .parse::<u16>()
        .map_err(|_| bad_value("OperatingSystemSection/@ovf:id", &id))?;
    Ok(OsInfo {
        element: node.span,
        id: Spanned::new(parsed, id.span),
        description: tree.ovf_child_text(node, "Description"),
        vmw_os_type: node.attr(Ns::Vmw, "osType").cloned(),
    })
}

fn hardware_section(tree: &Tree, node: &Node) -> Result<VirtualHardware, OvfError> {
    let system = tree.ovf_child(node, "System").map(|s| {
        let vssd = |names: &[&str]| {
            tree.children(s)
                .find(|c| c.ns == Ns::Vssd && names.contains(&c.local.as_str()))
                .map(|c| c.text.clone())
        };
        SystemInfo {
            element: s.span,
            element_name: vssd(&["ElementName"]),
            instance_id: vssd(&["InstanceID", "InstanceId"]),
            identifier: vssd(&["VirtualSystemIdentifier"]),
            system_type: vssd(&["VirtualSystemType"]),
        }
    });
    let mut items = Vec::new();
    for n in tree.children(node) {
        let (kind, own) = if n.is_ovf("Item") {
            (ItemKind::Item, Ns::Rasd)
        } else if n.is_ovf("StorageItem") {
            (ItemKind::StorageItem, Ns::Sasd)
        } else if n.is_ovf("EthernetPortItem") {
            (ItemKind::EthernetPortItem, Ns::Epasd)
        } else {
            continue;
        };
        let fields: Vec<ItemField> = tree
            .children(n)
            .filter(|c| c.ns == own || c.ns == Ns::Rasd)
            .map(|c| ItemField {
                name: c.local.clone(),
                value: c.text.clone(),
                element: c.span,
            })
            .collect();
        let item = Item {
            element: n.span,
            kind,
            required: opt_bool(n, "required", "Item/@ovf:required")?.is_none_or(|b| b.value),
            configurations: n.ovf_attr("configuration").map(list),
            bound: n.ovf_attr("bound").cloned(),
            fields,
        };
        if item.instance_id().is_none() {
            return Err(OvfError::MissingElement {
                element: "Item",
                child: "InstanceID",
                position: n.span.start,
            });
        }
        items.push(item);
    }
    Ok(VirtualHardware {
        element: node.span,
        id: node.ovf_attr("id").cloned(),
        transport: node.ovf_attr("transport").cloned(),
        system,
        items,
    })
}

/// Fills the default-configuration summary of a VirtualSystem from its first hardware section.
fn summarise(vs: &mut VirtualSystem, config: Option<&str>) -> Result<(), OvfError> {
    let Some(hw) = vs.hardware.first() else {
        return Ok(());
    };
    for e in hw.effective_items(config) {
        let Some(id) = e.instance_id().cloned() else {
            continue;
        };
        let rt = e.resource_type();
        match rt {
            Some(RT_PROCESSOR) if vs.cpus.is_none() => {
                if let Some(q) = e.text("VirtualQuantity") {
                    vs.cpus = Some(parse_u64(q, "Processor VirtualQuantity")?);
                }
            }
            Some(RT_MEMORY) if vs.memory.is_none() => {
                if let Some(q) = e.text("VirtualQuantity") {
                    let quantity = parse_u64(q, "Memory VirtualQuantity")?;
                    let units = e.text("AllocationUnits").cloned();
                    // No producer omits AllocationUnits on memory; MiB is what they all mean.
                    let factor = match &units {
                        Some(u) => byte_factor(&u.value).map_err(|p| match p {
                            UnitsProblem::Unknown => OvfError::UnknownUnits {
                                what: "memory AllocationUnits",
                                units: u.value.clone(),
                            },
                            UnitsProblem::Overflow => OvfError::QuantityOverflow {
                                instance_id: id.value.clone(),
                            },
                        })?,
                        None => MIB,
                    };
                    let bytes = quantity.value.checked_mul(factor).ok_or_else(|| {
                        OvfError::QuantityOverflow {
                            instance_id: id.value.clone(),
                        }
                    })?;
                    vs.memory_mib = (bytes % MIB == 0).then_some(bytes / MIB);
                    vs.memory = Some(Quantity {
                        instance_id: id.value.clone(),
                        quantity,
                        units,
                    });
                }
            }
            Some(RT_ETHERNET) => vs.nics.push(Nic {
                instance_id: id.clone(),
                connection: e.text("Connection").cloned(),
                subtype: e.text("ResourceSubType").cloned(),
                element_name: e.display_name().cloned(),
            }),
            _ => {}
        }
        let host = e.text("HostResource");
        let drive = matches!(
            rt,
            Some(RT_FLOPPY | RT_CD | RT_DVD | RT_DISK | RT_STORAGE_EXTENT)
        );
        if drive || host.is_some() {
            let host_resource = host.and_then(|h| {
                parse_host_resource(&h.value).map(|(kind, hid)| HostResource {
                    kind,
                    id: hid.to_string(),
                    span: h.span,
                })
            });
            vs.disk_items.push(DiskItem {
                instance_id: id,
                resource_type: rt,
                host_resource,
                parent: e.text("Parent").cloned(),
                address_on_parent: e.text("AddressOnParent").cloned(),
                element_name: e.display_name().cloned(),
            });
        }
    }
    Ok(())
}

/// Properties by key and by full key (`class.key.instance`); the first one wins.
type PropertyIndex<'a> = HashMap<String, &'a Property>;

fn property_index(d: &Descriptor) -> PropertyIndex<'_> {
    let mut map = HashMap::new();
    for p in d.properties() {
        map.entry(p.key.value.clone()).or_insert(p);
        map.entry(p.full_key()).or_insert(p);
    }
    map
}

/// `DiskSection/Disk` with rule 11 (capacity units, overflow, `${property}`).
fn disk(node: &Node, props: &PropertyIndex<'_>) -> Result<DiskDef, OvfError> {
    let disk_id = required(node, "Disk", "diskId")?;
    // The schema requires ovf:capacity, but Ganeti omits it; the image header has the size
    // anyway, so a missing capacity is only an unknown one.
    let capacity_raw = node.ovf_attr("capacity").cloned();
    let capacity_units = node.ovf_attr("capacityAllocationUnits").cloned();
    let capacity_bytes = match &capacity_raw {
        Some(raw) => capacity(&disk_id.value, raw, capacity_units.as_ref(), props)?,
        None => {
            log::warn!("disk {:?} has no ovf:capacity", disk_id.value);
            None
        }
    };
    Ok(DiskDef {
        element: node.span,
        disk_id,
        file_ref: non_empty(node.ovf_attr("fileRef")),
        capacity_bytes,
        capacity_raw,
        capacity_units,
        format_uri: node.ovf_attr("format").cloned(),
        populated_size: opt_u64(node, "populatedSize", "Disk/@ovf:populatedSize")?,
        parent_ref: non_empty(node.ovf_attr("parentRef")),
    })
}

fn capacity(
    disk_id: &str,
    raw: &Spanned<String>,
    units: Option<&Spanned<String>>,
    props: &PropertyIndex<'_>,
) -> Result<Option<u64>, OvfError> {
    let text = raw.value.trim();
    let number = match text.strip_prefix("${").and_then(|s| s.strip_suffix('}')) {
        Some(key) => {
            let key = key.trim();
            let prop = props
                .get(key)
                .ok_or_else(|| OvfError::CapacityPropertyUnknown {
                    disk_id: disk_id.to_string(),
                    property: key.to_string(),
                })?;
            match prop.value.as_ref().filter(|v| !v.value.trim().is_empty()) {
                Some(v) => v.clone(),
                None => {
                    log::info!(
                        "disk {disk_id:?}: capacity property {key:?} has no default; size unknown"
                    );
                    return Ok(None);
                }
            }
        }
        None => raw.clone(),
    };
    let n = parse_u64(&number, "Disk/@ovf:capacity")?.value;
    let factor = match units {
        None => 1,
        Some(u) => byte_factor(&u.value).map_err(|p| match p {
            UnitsProblem::Unknown => OvfError::UnknownUnits {
                what: "Disk/@ovf:capacityAllocationUnits",
                units: u.value.clone(),
            },
            UnitsProblem::Overflow => OvfError::CapacityOverflow {
                disk_id: disk_id.to_string(),
            },
        })?,
    };
    n.checked_mul(factor)
        .map(Some)
        .ok_or_else(|| OvfError::CapacityOverflow {
            disk_id: disk_id.to_string(),
        })
}

/// The first node on a cycle of `parent` links, visiting starts in `order`; linear time.
fn find_cycle<'a>(order: &[&'a str], parent: &HashMap<&'a str, &'a str>) -> Option<&'a str> {
    // 1 = on the path being walked, 2 = known to reach a root.
    let mut state: HashMap<&str, u8> = HashMap::new();
    for &start in order {
        let mut path = Vec::new();
        let mut at = start;
        loop {
            match state.get(at) {
                Some(1) => return Some(at),
                Some(_) => break,
                None => {}
            }
            state.insert(at, 1);
            path.push(at);
            match parent.get(at) {
                Some(&p) => at = p,
                None => break,
            }
        }
        for p in path {
            state.insert(p, 2);
        }
    }
    None
}

/// Rule 9 for disks: unique diskIds, known fileRefs; parentRefs name a disk, without cycles.
fn check_disks(d: &Descriptor) -> Result<(), OvfError> {
    let files: HashSet<&str> = d.files.iter().map(|f| f.id.value.as_str()).collect();
    let mut ids = HashSet::new();
    for disk in &d.disks {
        if !ids.insert(disk.disk_id.value.as_str()) {
            return Err(OvfError::DuplicateDiskId {
                disk_id: disk.disk_id.value.clone(),
            });
        }
    }
    let mut parent: HashMap<&str, &str> = HashMap::new();
    for disk in &d.disks {
        if let Some(f) = &disk.file_ref
            && !files.contains(f.value.as_str())
        {
            return Err(OvfError::DiskFileRefUnknown {
                disk_id: disk.disk_id.value.clone(),
                file_ref: f.value.clone(),
            });
        }
        if let Some(p) = &disk.parent_ref {
            if !ids.contains(p.value.as_str()) {
                return Err(OvfError::DiskParentUnknown {
                    disk_id: disk.disk_id.value.clone(),
                    parent_ref: p.value.clone(),
                });
            }
            parent.insert(disk.disk_id.value.as_str(), p.value.as_str());
        }
    }
    let order: Vec<&str> = d.disks.iter().map(|x| x.disk_id.value.as_str()).collect();
    if let Some(disk_id) = find_cycle(&order, &parent) {
        return Err(OvfError::DiskParentCycle {
            disk_id: disk_id.to_string(),
        });
    }
    Ok(())
}

/// Rule 12: HostResource syntax and target, Parent names an item of the same section, no
/// Parent cycles.
fn check_hardware(d: &Descriptor) -> Result<(), OvfError> {
    let files: HashSet<&str> = d.files.iter().map(|f| f.id.value.as_str()).collect();
    let disks: HashSet<&str> = d.disks.iter().map(|x| x.disk_id.value.as_str()).collect();
    for vs in &d.systems {
        for hw in &vs.hardware {
            let ids: HashSet<&str> = hw
                .items
                .iter()
                .filter_map(|i| i.instance_id().map(|s| s.value.as_str()))
                .collect();
            let mut parent_of: HashMap<&str, &str> = HashMap::new();
            let mut order = Vec::new();
            for item in &hw.items {
                let iid = item.instance_id().map(|s| s.value.as_str()).unwrap_or("");
                for h in item.fields.iter().filter(|f| f.name == "HostResource") {
                    let Some((kind, id)) = parse_host_resource(&h.value.value) else {
                        return Err(OvfError::BadHostResource {
                            instance_id: iid.to_string(),
                            value: h.value.value.clone(),
                        });
                    };
                    let known = match kind {
                        HostResourceKind::Disk => disks.contains(id),
                        HostResourceKind::File => files.contains(id),
                    };
                    if !known {
                        return Err(OvfError::HostResourceUnknown {
                            instance_id: iid.to_string(),
                            value: h.value.value.clone(),
                        });
                    }
                }
                if let Some(p) = item.field("Parent") {
                    let p = p.value.value.as_str();
                    if !ids.contains(p) {
                        return Err(OvfError::ItemParentUnknown {
                            instance_id: iid.to_string(),
                            parent: p.to_string(),
                        });
                    }
                    parent_of.insert(iid, p);
                    order.push(iid);
                }
            }
            if let Some(iid) = find_cycle(&order, &parent_of) {
                return Err(OvfError::ItemParentCycle {
                    instance_id: iid.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Rule 12: every `ovf:configuration` id names a DeploymentOptionSection Configuration.
fn check_configurations(d: &Descriptor) -> Result<(), OvfError> {
    let known: HashSet<&str> = d
        .configurations
        .iter()
        .map(|c| c.id.value.as_str())
        .collect();
    let check = |l: &Option<Spanned<Vec<String>>>| -> Result<(), OvfError> {
        for id in l.iter().flat_map(|l| l.value.iter()) {
            if !known.contains(id.as_str()) {
                return Err(OvfError::UnknownConfiguration { id: id.clone() });
            }
        }
        Ok(())
    };
    for vs in &d.systems {
        for item in vs.hardware.iter().flat_map(|h| h.items.iter()) {
            check(&item.configurations)?;
        }
    }
    let all_props = d
        .systems
        .iter()
        .flat_map(|s| s.properties.iter())
        .chain(d.collections.iter().flat_map(|c| c.properties.iter()));
    for p in all_props {
        check(&p.configurations)?;
        for v in &p.values {
            check(&v.configurations)?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cycles_are_found_in_linear_time() {
        let n = 200_000;
        let names: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        let order: Vec<&str> = names.iter().map(String::as_str).collect();
        // A long chain 0 <- 1 <- 2 ... : no cycle.
        let chain: HashMap<&str, &str> = (1..n).map(|i| (order[i], order[i - 1])).collect();
        assert_eq!(find_cycle(&order, &chain), None);
        let mut looped = chain.clone();
        looped.insert(order[0], order[n - 1]);
        assert!(find_cycle(&order, &looped).is_some());
        let mut selfloop = HashMap::new();
        selfloop.insert("a", "a");
        assert_eq!(find_cycle(&["a"], &selfloop), Some("a"));
    }

    #[test]
    fn host_resource_forms() {
        use HostResourceKind::*;
        assert_eq!(
            parse_host_resource("ovf:/disk/vmdisk1"),
            Some((Disk, "vmdisk1"))
        );
        assert_eq!(
            parse_host_resource("/disk/vmdisk1"),
            Some((Disk, "vmdisk1"))
        );
        assert_eq!(
            parse_host_resource(" ovf:/file/file2 "),
            Some((File, "file2"))
        );
        assert_eq!(parse_host_resource("ovf://disk/lamp"), Some((Disk, "lamp")));
        assert_eq!(parse_host_resource("ovf:/disk/"), None);
        assert_eq!(parse_host_resource("ovf:/net/x"), None);
        assert_eq!(parse_host_resource("disk/x"), None);
        assert_eq!(parse_host_resource(""), None);
    }
}
