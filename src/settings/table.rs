//! The settings table: every settings file with its path, its documentation, its reader
//! and its writer. [`man_section`] renders the same table as the man page's SETTINGS FILES
//! section.

use crate::ovf::edit::Edit;
use crate::ovf::units::byte_factor;
use crate::ovf::{Property, section_name};
use crate::roff::escape as roff_escape;
use crate::units::parse_size;

use super::hw::{
    Change, Hardware, Key, MergedItem, RESOURCE_TYPE_ETHERNET, RESOURCE_TYPE_MEMORY,
    RESOURCE_TYPE_PROCESSOR,
};
use super::os_types::{os_id, os_name};
use super::props::{PropertyType, Qualifiers, validate};
use super::values::{self, block, boolean, line, mac, token, token_list, uint};
use super::vbox;
use super::xmlview::{VMW_URI, View, escape_attr};
use super::{Applied, Ctx, SettingError, Target, invalid, unsupported};

/// Where a setting lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// `vms/ID/` of systems and collections (not per configuration).
    Content,
    /// `vms/ID/` of systems only (not per configuration).
    System,
    /// `vms/ID/` and `vms/ID/configs/CONFIG/` of systems.
    Hardware,
    /// `nics/N/` in those folders.
    Nic,
    /// `properties/KEY` in `vms/ID/` and `vms/ID/configs/CONFIG/`.
    Property,
    /// `networks/NAME/`.
    Network,
}

/// Reads a setting: `None` when this target does not have it (it is not listed).
pub(crate) type Reader = fn(&Ctx<'_>, &Target) -> Result<Option<String>, SettingError>;
/// Validates a new value and returns the edits.
pub(crate) type Writer = fn(&Ctx<'_>, &Target, &str) -> Result<Applied, SettingError>;

/// One row of the table.
pub(crate) struct Setting {
    /// Path under the folder of its place; `N` is an adapter number, `KEY` a property key.
    pub path: &'static str,
    pub place: Place,
    /// The man page paragraph (plain text).
    pub doc: &'static str,
    pub read: Reader,
    pub write: Writer,
}

/// Every setting.
pub(crate) static SETTINGS: &[Setting] = &[
    Setting {
        path: "name",
        place: Place::Content,
        doc: "The Name of the virtual system or collection. One line; empty leaves a missing Name missing.",
        read: read_name,
        write: write_name,
    },
    Setting {
        path: "annotation",
        place: Place::Content,
        doc: "The AnnotationSection text (free text of several lines). Writing it to a system or collection without one adds the section.",
        read: read_annotation,
        write: write_annotation,
    },
    Setting {
        path: "os",
        place: Place::System,
        doc: "The guest operating system: the CIM OSType id of the OperatingSystemSection and its name, e.g. \"36 LINUX\" or \"94 Ubuntu 64-Bit\". Write an id (0 to 65535; anything after the number is ignored) or a name from the CIM list (case, spaces and dashes ignored). Adds the section when there is none.",
        read: read_os,
        write: write_os,
    },
    Setting {
        path: "os_type",
        place: Place::System,
        doc: "VMware's guest id (vmw:osType), e.g. otherLinux64Guest: letters, digits, '_' and '-'. Empty removes it. Listed when the system has an OperatingSystemSection.",
        read: read_os_type,
        write: write_os_type,
    },
    Setting {
        path: "os_description",
        place: Place::System,
        doc: "The OperatingSystemSection Description (one line). Listed when the system has an OperatingSystemSection.",
        read: read_os_description,
        write: write_os_description,
    },
    Setting {
        path: "system_type",
        place: Place::System,
        doc: "The virtual hardware family (vssd:VirtualSystemType), e.g. \"vmx-13\" or \"vmx-07 vmx-08\": tokens of letters, digits, '.', '_' and '-' separated by spaces.",
        read: read_system_type,
        write: write_system_type,
    },
    Setting {
        path: "transport",
        place: Place::System,
        doc: "How properties reach the guest (ovf:transport of the VirtualHardwareSection): iso, com.vmware.guestInfo (vmware is accepted for it), or other transport URIs, separated by spaces. Empty removes it.",
        read: read_transport,
        write: write_transport,
    },
    Setting {
        path: "cpus",
        place: Place::Hardware,
        doc: "Number of virtual CPUs (VirtualQuantity of the processor item): a whole number from 1 to 4096, a multiple of cores_per_socket when that is set. Refused when the system has no processor item. In a VirtualBox export the CPU count of its vbox:Machine settings changes too, since VirtualBox imports it from there.",
        read: read_cpus,
        write: write_cpus,
    },
    Setting {
        path: "cores_per_socket",
        place: Place::Hardware,
        doc: "Cores per CPU socket (vmw:CoresPerSocket of the processor item): a whole number that divides cpus. Empty removes it. Listed when there is a processor item.",
        read: read_cores,
        write: write_cores,
    },
    Setting {
        path: "memory",
        place: Place::Hardware,
        doc: "Memory in MiB, read as a plain integer (a size that is not a whole number of MiB reads in bytes, e.g. \"1000000 B\"). Write 512, 512M, 512 MiB, 1G or 1 GiB (binary units; a bare number is MiB); it must be more than 0 and a whole number of MiB. The memory item keeps its AllocationUnits when the size fits them, else gets byte * 2^20 (MegaBytes in documents that use that spelling). Refused when the system has no memory item. In a VirtualBox export the RAMSize of its vbox:Machine settings changes too, since VirtualBox imports it from there.",
        read: read_memory,
        write: write_memory,
    },
    Setting {
        path: "nics/N/network",
        place: Place::Nic,
        doc: "The network adapter's network (its first Connection). It must name a network of networks/ exactly; create one first with mkdir networks/NAME. Adapters are numbered from 0 in document order.",
        read: read_nic_network,
        write: write_nic_network,
    },
    Setting {
        path: "nics/N/type",
        place: Place::Nic,
        doc: "The adapter model (ResourceSubType), e.g. E1000, E1000e, VmxNet3, PCNet32, virtio: letters, digits, '.', '_' and '-'.",
        read: read_nic_type,
        write: write_nic_type,
    },
    Setting {
        path: "nics/N/mac",
        place: Place::Nic,
        doc: "The adapter's MAC address (Address): six hexadecimal octets separated by ':' or '-', unicast; written lower case with colons. Empty removes it (the hypervisor then assigns one).",
        read: read_nic_mac,
        write: write_nic_mac,
    },
    Setting {
        path: "nics/N/connected",
        place: Place::Nic,
        doc: "Whether the adapter is connected at power on (AutomaticAllocation): true or false (1/0, yes/no, on/off accepted).",
        read: read_nic_connected,
        write: write_nic_connected,
    },
    Setting {
        path: "nics/N/name",
        place: Place::Nic,
        doc: "The adapter's display name (ElementName, or Caption where the document uses that instead). One line, not empty.",
        read: read_nic_name,
        write: write_nic_name,
    },
    Setting {
        path: "product/product",
        place: Place::Content,
        doc: "Product name of the first ProductSection (one line). Writing any product/ file adds a missing element in schema order, or the ProductSection itself.",
        read: read_product,
        write: write_product,
    },
    Setting {
        path: "product/vendor",
        place: Place::Content,
        doc: "Vendor (one line).",
        read: read_vendor,
        write: write_vendor,
    },
    Setting {
        path: "product/version",
        place: Place::Content,
        doc: "Short version (one line).",
        read: read_version,
        write: write_version,
    },
    Setting {
        path: "product/full_version",
        place: Place::Content,
        doc: "Full version (FullVersion, one line).",
        read: read_full_version,
        write: write_full_version,
    },
    Setting {
        path: "product/product_url",
        place: Place::Content,
        doc: "Product URL (ProductUrl; no white space).",
        read: read_product_url,
        write: write_product_url,
    },
    Setting {
        path: "product/vendor_url",
        place: Place::Content,
        doc: "Vendor URL (VendorUrl; no white space).",
        read: read_vendor_url,
        write: write_vendor_url,
    },
    Setting {
        path: "product/app_url",
        place: Place::Content,
        doc: "Application URL (AppUrl; no white space).",
        read: read_app_url,
        write: write_app_url,
    },
    Setting {
        path: "properties/KEY",
        place: Place::Property,
        doc: "A ProductSection property, named by its key as the guest sees it ([class.]key[.instance]). At the top it is the property's default value (ovf:value), which every configuration without a Value of its own uses; in configs/CONFIG/ it is the value in that configuration (a Value element for it is added or changed). Only one trailing line break is removed. The type is enforced: uint8 to uint64 and sint8 to sint64 by range, real32 and real64 as finite numbers, boolean as true or false (1/0 accepted), ip and ip:NETWORK as an IPv4 or IPv6 address; so are the qualifiers MinLen, MaxLen, MinValue, MaxValue and ValueMap. Empty means no default and is accepted by string and ip properties. Password properties read like the others (mode 0600).",
        read: read_property,
        write: write_property,
    },
    Setting {
        path: "description",
        place: Place::Network,
        doc: "The network's Description (one line).",
        read: read_network_description,
        write: write_network_description,
    },
];

// ---------------------------------------------------------------------------------------
// Shared helpers

/// The text of OVF child `local` of node `parent`, or "".
fn child_text(view: &View<'_>, parent: usize, local: &str) -> String {
    view.ovf_child(parent, local)
        .map(|child| view.node(child).text.value.clone())
        .unwrap_or_default()
}

/// Rank of an OVF child in `order` (unknown ones after all of them).
fn schema_rank(view: &View<'_>, node: usize, order: &[&str]) -> usize {
    let element = view.node(node);
    order
        .iter()
        .position(|name| element.is_ovf(name))
        .unwrap_or(order.len())
}

/// Sets the text of OVF child `local` of `parent`, inserting it in `order` when missing (an
/// empty value leaves a missing child missing).
fn set_child_text(
    view: &View<'_>,
    parent: usize,
    local: &str,
    value: &str,
    order: &[&str],
) -> Result<Applied, SettingError> {
    match view.ovf_child(parent, local) {
        Some(child) => {
            if view.node(child).text.value == value {
                return Ok(Applied::none(value));
            }
            Ok(Applied::new(vec![view.set_text(child, value)], value))
        }
        None => {
            if value.is_empty() {
                return Ok(Applied::none(value));
            }
            let xml = view.ovf_element(parent, local, value);
            let own_rank = order
                .iter()
                .position(|name| *name == local)
                .unwrap_or(order.len());
            let edit = view.insert_child_ordered(parent, &xml, &|sibling| {
                schema_rank(view, sibling, order) > own_rank
            })?;
            Ok(Applied::new(vec![edit], value))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Content: name, annotation, product

fn read_name(ctx: &Ctx<'_>, target: &Target) -> Result<Option<String>, SettingError> {
    let node = ctx.owner_node(target.owner)?;
    Ok(Some(child_text(&ctx.view, node, "Name")))
}

fn write_name(ctx: &Ctx<'_>, target: &Target, text: &str) -> Result<Applied, SettingError> {
    let value = line(text).map_err(invalid)?;
    let node = ctx.owner_node(target.owner)?;
    set_child_text(&ctx.view, node, "Name", &value, &["Info", "Name"])
}

fn read_annotation(ctx: &Ctx<'_>, target: &Target) -> Result<Option<String>, SettingError> {
    let node = ctx.owner_node(target.owner)?;
    Ok(Some(
        ctx.view
            .section(node, "AnnotationSection")
            .map(|section| child_text(&ctx.view, section, "Annotation"))
            .unwrap_or_default(),
    ))
}

fn write_annotation(ctx: &Ctx<'_>, target: &Target, text: &str) -> Result<Applied, SettingError> {
    let value = block(text).map_err(invalid)?;
    let view = &ctx.view;
    let node = ctx.owner_node(target.owner)?;
    match view.section(node, "AnnotationSection") {
        Some(section) => {
            set_child_text(view, section, "Annotation", &value, &["Info", "Annotation"])
        }
        None => {
            if value.is_empty() {
                return Ok(Applied::none(value));
            }
            let children = [
                view.ovf_element(node, "Info", "A human-readable annotation"),
                view.ovf_element(node, "Annotation", &value),
            ];
            let xml = view.new_section(node, "AnnotationSection", "", &children);
            Ok(Applied::new(
                vec![view.insert_section(node, &xml, None)?],
                value,
            ))
        }
    }
}

/// Children of a ProductSection in schema order.
const PRODUCT_ORDER: &[&str] = &[
    "Info",
    "Product",
    "Vendor",
    "Version",
    "FullVersion",
    "ProductUrl",
    "VendorUrl",
    "AppUrl",
    "Icon",
];

/// The tree node of the owner's first ProductSection.
fn product_node(ctx: &Ctx<'_>, target: &Target) -> Option<usize> {
    let product = match target.owner {
        super::Owner::System(index) => ctx.descriptor.systems.get(index)?.product.as_ref(),
        super::Owner::Collection(index) => ctx.descriptor.collections.get(index)?.product.as_ref(),
    }?;
    ctx.view.find(product.element)
}

fn read_product_field(
    ctx: &Ctx<'_>,
    target: &Target,
    local: &str,
) -> Result<Option<String>, SettingError> {
    Ok(Some(
        product_node(ctx, target)
            .map(|product| child_text(&ctx.view, product, local))
            .unwrap_or_default(),
    ))
}

fn write_product_field(
    ctx: &Ctx<'_>,
    target: &Target,
    text: &str,
    local: &str,
    url: bool,
) -> Result<Applied, SettingError> {
    let value = line(text).map_err(invalid)?;
    if url && value.contains(char::is_whitespace) {
        return Err(invalid("a URL has no white space"));
    }
    let view = &ctx.view;
    match product_node(ctx, target) {
        Some(product) => set_child_text(view, product, local, &value, PRODUCT_ORDER),
        None => {
            if value.is_empty() {
                return Ok(Applied::none(value));
            }
            let node = ctx.owner_node(target.owner)?;
            let children = [
                view.ovf_element(node, "Info", "Information about the installed software"),
                view.ovf_element(node, local, &value),
            ];
            let xml = view.new_section(node, "ProductSection", "", &children);
            Ok(Applied::new(
                vec![view.insert_section(node, &xml, None)?],
                value,
            ))
        }
    }
}

macro_rules! product_rw {
    ($read:ident, $write:ident, $local:literal, $url:literal) => {
        fn $read(ctx: &Ctx<'_>, target: &Target) -> Result<Option<String>, SettingError> {
            read_product_field(ctx, target, $local)
        }
        fn $write(ctx: &Ctx<'_>, target: &Target, text: &str) -> Result<Applied, SettingError> {
            write_product_field(ctx, target, text, $local, $url)
        }
    };
}

product_rw!(read_product, write_product, "Product", false);
product_rw!(read_vendor, write_vendor, "Vendor", false);
product_rw!(read_version, write_version, "Version", false);
product_rw!(read_full_version, write_full_version, "FullVersion", false);
product_rw!(read_product_url, write_product_url, "ProductUrl", true);
product_rw!(read_vendor_url, write_vendor_url, "VendorUrl", true);
product_rw!(read_app_url, write_app_url, "AppUrl", true);

// ---------------------------------------------------------------------------------------
// System: os, os_type, os_description, system_type, transport

fn os_text(id: u16) -> String {
    match os_name(id) {
        Some(name) => format!("{id} {name}"),
        None => id.to_string(),
    }
}

/// The OperatingSystemSection node of a system.
fn os_node(ctx: &Ctx<'_>, target: &Target) -> Option<usize> {
    ctx.view.find(ctx.system(target)?.os.as_ref()?.element)
}

fn read_os(ctx: &Ctx<'_>, target: &Target) -> Result<Option<String>, SettingError> {
    let Some(system) = ctx.system(target) else {
        return Ok(None);
    };
    Ok(Some(
        system
            .os
            .as_ref()
            .map(|os| os_text(os.id.value))
            .unwrap_or_default(),
    ))
}

fn write_os(ctx: &Ctx<'_>, target: &Target, text: &str) -> Result<Applied, SettingError> {
    let system = ctx
        .system(target)
        .ok_or_else(|| unsupported("not a virtual system"))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(invalid(
            "an operating system id or name is needed, e.g. 36 or LINUX",
        ));
    }
    let digits = text
        .find(|ch: char| !ch.is_ascii_digit())
        .unwrap_or(text.len());
    let id: u16 = if digits > 0 {
        if !text[digits..].is_empty() && !text[digits..].starts_with(char::is_whitespace) {
            return Err(invalid(
                "write a CIM id, a name, or an id followed by a name",
            ));
        }
        text[..digits]
            .parse()
            .map_err(|_| invalid("CIM operating system ids go from 0 to 65535"))?
    } else {
        os_id(text).ok_or_else(|| {
            invalid("not a CIM operating system id or name (e.g. 36, LINUX, Ubuntu 64-Bit)")
        })?
    };
    let view = &ctx.view;
    let expect = os_text(id);
    match &system.os {
        Some(os) => {
            if os.id.value == id {
                return Ok(Applied::none(expect));
            }
            let node =
                os_node(ctx, target).ok_or_else(|| SettingError::Internal("no OS node".into()))?;
            Ok(Applied::new(
                vec![view.set_attr(node, Some(os.id.span), "", "", &id.to_string())],
                expect,
            ))
        }
        None => {
            let node = ctx.owner_node(target.owner)?;
            let (name, decl) = view.ovf_attr_name(node, "id");
            let children =
                [view.ovf_element(node, "Info", "The kind of installed guest operating system")];
            let attrs = format!("{decl} {name}=\"{id}\"");
            let xml = view.new_section(node, "OperatingSystemSection", &attrs, &children);
            Ok(Applied::new(
                vec![view.insert_section(node, &xml, Some("VirtualHardwareSection"))?],
                expect,
            ))
        }
    }
}

fn read_os_type(ctx: &Ctx<'_>, target: &Target) -> Result<Option<String>, SettingError> {
    Ok(ctx
        .system(target)
        .and_then(|system| system.os.as_ref())
        .map(|os| {
            os.vmw_os_type
                .as_ref()
                .map(|spanned| spanned.value.clone())
                .unwrap_or_default()
        }))
}

fn write_os_type(ctx: &Ctx<'_>, target: &Target, text: &str) -> Result<Applied, SettingError> {
    let os = ctx
        .system(target)
        .and_then(|system| system.os.as_ref())
        .ok_or_else(|| unsupported("the system has no OperatingSystemSection; write os first"))?;
    let node = os_node(ctx, target).ok_or_else(|| SettingError::Internal("no OS node".into()))?;
    let value = text.trim();
    let current = os.vmw_os_type.as_ref();
    let invalid_id = !value
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
        || value.len() > 64;
    if invalid_id && current.is_none_or(|old| old.value != value) {
        return Err(invalid(
            "a VMware guest id is letters, digits, '_' and '-' (e.g. otherLinux64Guest)",
        ));
    }
    let view = &ctx.view;
    set_optional_attr(view, node, current, value, "vmw:osType", || {
        match view.prefix_in_scope(node, &|uri| uri == VMW_URI, false) {
            Some(prefix) => (format!("{prefix}osType"), String::new()),
            None => (
                "vmw:osType".to_string(),
                format!(" xmlns:vmw=\"{VMW_URI}\""),
            ),
        }
    })
}

/// Sets the optional attribute `current` (called `what` in errors) of element `node` to
/// `value`, or removes it when `value` is empty; no edit when it already holds that. A new
/// attribute gets the qualified name and namespace declaration `name_decl` returns.
fn set_optional_attr(
    view: &View<'_>,
    node: usize,
    current: Option<&crate::ovf::Spanned<String>>,
    value: &str,
    what: &str,
    name_decl: impl FnOnce() -> (String, String),
) -> Result<Applied, SettingError> {
    if current.is_some_and(|old| old.value == value) || (current.is_none() && value.is_empty()) {
        return Ok(Applied::none(value));
    }
    if value.is_empty() {
        let edit = current
            .and_then(|old| view.remove_attr(node, old.span))
            .ok_or_else(|| SettingError::Internal(format!("{what} not found")))?;
        return Ok(Applied::new(vec![edit], ""));
    }
    let (name, decl) = name_decl();
    Ok(Applied::new(
        vec![view.set_attr(node, current.map(|old| old.span), &name, &decl, value)],
        value,
    ))
}

fn read_os_description(ctx: &Ctx<'_>, target: &Target) -> Result<Option<String>, SettingError> {
    Ok(os_node(ctx, target).map(|os| child_text(&ctx.view, os, "Description")))
}

fn write_os_description(
    ctx: &Ctx<'_>,
    target: &Target,
    text: &str,
) -> Result<Applied, SettingError> {
    let node = os_node(ctx, target)
        .ok_or_else(|| unsupported("the system has no OperatingSystemSection; write os first"))?;
    let value = line(text).map_err(invalid)?;
    set_child_text(
        &ctx.view,
        node,
        "Description",
        &value,
        &["Info", "Description"],
    )
}

/// The System node of a system's first hardware section.
fn system_node(ctx: &Ctx<'_>, target: &Target) -> Option<usize> {
    let system = ctx.system(target)?;
    ctx.view
        .find(system.hardware.first()?.system.as_ref()?.element)
}

fn read_system_type(ctx: &Ctx<'_>, target: &Target) -> Result<Option<String>, SettingError> {
    let Some(system) = ctx.system(target) else {
        return Ok(None);
    };
    Ok(system
        .hardware
        .first()
        .and_then(|hardware| hardware.system.as_ref())
        .map(|system| {
            system
                .system_type
                .as_ref()
                .map(|spanned| spanned.value.clone())
                .unwrap_or_default()
        }))
}

fn is_system_type_token(word: &str) -> bool {
    word.chars()
        .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-'))
}

fn write_system_type(ctx: &Ctx<'_>, target: &Target, text: &str) -> Result<Applied, SettingError> {
    let node = system_node(ctx, target)
        .ok_or_else(|| unsupported("the hardware section has no System element"))?;
    let value = token_list(text, "system type", is_system_type_token).map_err(invalid)?;
    if value.is_empty() {
        return Err(invalid("a virtual system type is needed, e.g. vmx-13"));
    }
    let view = &ctx.view;
    let current = view
        .node(node)
        .children
        .iter()
        .copied()
        .find(|&child| view.node(child).local == "VirtualSystemType");
    match current {
        Some(existing) => {
            if view.node(existing).text.value == value {
                return Ok(Applied::none(value));
            }
            Ok(Applied::new(vec![view.set_text(existing, &value)], value))
        }
        None => {
            let sibling = view.node(node).children.first().copied().ok_or_else(|| {
                unsupported("the System element is empty; edit the descriptor instead")
            })?;
            let xml = view.element_like(sibling, "VirtualSystemType", &value);
            let edit = view.insert_child_ordered(node, &xml, &|child| {
                view.node(child).local.to_ascii_lowercase().as_str() > "virtualsystemtype"
            })?;
            Ok(Applied::new(vec![edit], value))
        }
    }
}

fn read_transport(ctx: &Ctx<'_>, target: &Target) -> Result<Option<String>, SettingError> {
    Ok(ctx
        .system(target)
        .and_then(|system| system.hardware.first())
        .map(|hardware| {
            hardware
                .transport
                .as_ref()
                .map(|spanned| spanned.value.clone())
                .unwrap_or_default()
        }))
}

fn write_transport(ctx: &Ctx<'_>, target: &Target, text: &str) -> Result<Applied, SettingError> {
    let hardware = ctx
        .system(target)
        .and_then(|system| system.hardware.first())
        .ok_or_else(|| unsupported("the system has no VirtualHardwareSection"))?;
    let node = ctx
        .view
        .find(hardware.element)
        .ok_or_else(|| SettingError::Internal("no hardware node".into()))?;
    let value = token_list(text, "transport", |_| true).map_err(invalid)?;
    let value = value
        .split(' ')
        .filter(|word| !word.is_empty())
        .map(|word| match word {
            "vmware" => "com.vmware.guestInfo",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(" ");
    values::check_xml_chars(&value).map_err(invalid)?;
    let view = &ctx.view;
    set_optional_attr(
        view,
        node,
        hardware.transport.as_ref(),
        &value,
        "ovf:transport",
        || view.ovf_attr_name(node, "transport"),
    )
}

// ---------------------------------------------------------------------------------------
// Hardware: cpus, cores_per_socket, memory

/// The first merged item of type `resource_type` in the target's configuration.
fn first_item<'v, 'd>(
    ctx: &'v Ctx<'d>,
    target: &Target,
    resource_type: u16,
) -> Option<(Hardware<'v, 'd>, MergedItem)> {
    let (hardware, list) = ctx.of_type(target, resource_type)?;
    let item = list.first()?.clone();
    Some((hardware, item))
}

/// Why a hardware setting has nothing to change.
fn no_item_reason(ctx: &Ctx<'_>, target: &Target, what: &str, resource_type: u16) -> String {
    let mut reason =
        format!("this virtual system has no {what} item (ResourceType {resource_type})");
    if let Some(config) = ctx.hardware_config(target) {
        reason.push_str(&format!(" in configuration {config:?}"));
    }
    reason.push_str("; add one by writing the whole descriptor");
    reason
}

fn virtual_quantity() -> Key {
    Key::cim("VirtualQuantity")
}

fn cores_per_socket_key() -> Key {
    Key::Vmw("CoresPerSocket".into())
}

fn read_cpus(ctx: &Ctx<'_>, target: &Target) -> Result<Option<String>, SettingError> {
    if ctx.system(target).is_none() {
        return Ok(None);
    }
    Ok(Some(
        first_item(ctx, target, RESOURCE_TYPE_PROCESSOR)
            .and_then(|(hardware, item)| {
                hardware
                    .get_text(&item, &virtual_quantity())
                    .map(|value| value.trim().to_string())
            })
            .unwrap_or_default(),
    ))
}

fn write_cpus(ctx: &Ctx<'_>, target: &Target, text: &str) -> Result<Applied, SettingError> {
    let cpus = uint(text, 1, 4096).map_err(invalid)?;
    let (hardware, item) = first_item(ctx, target, RESOURCE_TYPE_PROCESSOR).ok_or_else(|| {
        unsupported(no_item_reason(
            ctx,
            target,
            "processor",
            RESOURCE_TYPE_PROCESSOR,
        ))
    })?;
    if hardware
        .get_text(&item, &virtual_quantity())
        .and_then(|value| value.trim().parse::<u64>().ok())
        == Some(cpus)
    {
        return Ok(Applied::none(cpus.to_string()));
    }
    if let Some(cores) = hardware
        .get_text(&item, &cores_per_socket_key())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .filter(|&cores| cores > 0)
        && cpus % cores != 0
    {
        return Err(invalid(format!(
            "{cpus} CPUs do not split into sockets of {cores} cores (cores_per_socket); change that first"
        )));
    }
    let mut edits = hardware.edit(
        ctx.hardware_config(target),
        &item,
        &[Change {
            key: virtual_quantity(),
            value: Some(cpus.to_string()),
        }],
    )?;
    if target.config.is_none() {
        edits.extend(vbox::set_cpus(
            &ctx.view,
            ctx.owner_node(target.owner)?,
            cpus,
        )?);
    }
    Ok(Applied::new(edits, cpus.to_string()))
}

fn read_cores(ctx: &Ctx<'_>, target: &Target) -> Result<Option<String>, SettingError> {
    Ok(
        first_item(ctx, target, RESOURCE_TYPE_PROCESSOR).map(|(hardware, item)| {
            hardware
                .get_text(&item, &cores_per_socket_key())
                .map(|value| value.trim().to_string())
                .unwrap_or_default()
        }),
    )
}

fn write_cores(ctx: &Ctx<'_>, target: &Target, text: &str) -> Result<Applied, SettingError> {
    let (hardware, item) = first_item(ctx, target, RESOURCE_TYPE_PROCESSOR)
        .ok_or_else(|| unsupported("this virtual system has no processor item"))?;
    let current = hardware
        .get_text(&item, &cores_per_socket_key())
        .map(|value| value.trim().to_string());
    if text.trim().is_empty() {
        if current.is_none() {
            return Ok(Applied::none(""));
        }
        let edits = hardware.edit(
            ctx.hardware_config(target),
            &item,
            &[Change {
                key: cores_per_socket_key(),
                value: None,
            }],
        )?;
        return Ok(Applied::new(edits, ""));
    }
    let cores = uint(text, 1, 4096).map_err(invalid)?;
    if current
        .as_deref()
        .and_then(|value| value.parse::<u64>().ok())
        == Some(cores)
    {
        return Ok(Applied::none(cores.to_string()));
    }
    if let Some(cpus) = hardware
        .get_text(&item, &virtual_quantity())
        .and_then(|value| value.trim().parse::<u64>().ok())
        && cpus % cores != 0
    {
        return Err(invalid(format!(
            "{cpus} CPUs do not split into sockets of {cores} cores; change cpus first"
        )));
    }
    let edits = hardware.edit(
        ctx.hardware_config(target),
        &item,
        &[Change {
            key: cores_per_socket_key(),
            value: Some(cores.to_string()),
        }],
    )?;
    Ok(Applied::new(edits, cores.to_string()))
}

const MIB: u64 = 1 << 20;

/// The memory item's size in bytes, if its quantity and units read.
fn memory_bytes(hardware: &Hardware<'_, '_>, item: &MergedItem) -> Option<u64> {
    let quantity: u64 = hardware
        .get_text(item, &virtual_quantity())?
        .trim()
        .parse()
        .ok()?;
    let factor = match hardware.get_text(item, &Key::cim("AllocationUnits")) {
        Some(units) => byte_factor(units).ok()?,
        None => MIB,
    };
    quantity.checked_mul(factor)
}

fn memory_text(bytes: u64) -> String {
    if bytes.is_multiple_of(MIB) {
        (bytes / MIB).to_string()
    } else {
        format!("{bytes} B")
    }
}

fn read_memory(ctx: &Ctx<'_>, target: &Target) -> Result<Option<String>, SettingError> {
    if ctx.system(target).is_none() {
        return Ok(None);
    }
    Ok(Some(match first_item(ctx, target, RESOURCE_TYPE_MEMORY) {
        Some((hardware, item)) => match memory_bytes(&hardware, &item) {
            Some(bytes) => memory_text(bytes),
            None => hardware
                .get_text(&item, &virtual_quantity())
                .map(|value| value.trim().to_string())
                .unwrap_or_default(),
        },
        None => String::new(),
    }))
}

fn write_memory(ctx: &Ctx<'_>, target: &Target, text: &str) -> Result<Applied, SettingError> {
    let bytes = parse_size(text, MIB)
        .ok_or_else(|| invalid("not a size: write 512, 512M, 512 MiB, 1G or 1 GiB"))?;
    if bytes == 0 {
        return Err(invalid("memory must be more than 0"));
    }
    if bytes % MIB != 0 {
        return Err(invalid("memory must be a whole number of MiB"));
    }
    let (hardware, item) = first_item(ctx, target, RESOURCE_TYPE_MEMORY)
        .ok_or_else(|| unsupported(no_item_reason(ctx, target, "memory", RESOURCE_TYPE_MEMORY)))?;
    let expect = memory_text(bytes);
    if memory_bytes(&hardware, &item) == Some(bytes) {
        return Ok(Applied::none(expect));
    }
    let units = hardware.get_text(&item, &Key::cim("AllocationUnits"));
    let factor = match units {
        Some(units) => byte_factor(units).ok(),
        None => Some(MIB),
    };
    let changes = match factor {
        Some(factor) if bytes % factor == 0 => vec![Change {
            key: virtual_quantity(),
            value: Some((bytes / factor).to_string()),
        }],
        _ => {
            // A unit written as a word (MegaBytes) rather than a formula (byte * 2^20).
            let legacy = units.is_some_and(|units| !units.contains('*') && !units.contains('^'));
            vec![
                Change {
                    key: Key::cim("AllocationUnits"),
                    value: Some(if legacy { "MegaBytes" } else { "byte * 2^20" }.into()),
                },
                Change {
                    key: virtual_quantity(),
                    value: Some((bytes / MIB).to_string()),
                },
            ]
        }
    };
    let mut edits = hardware.edit(ctx.hardware_config(target), &item, &changes)?;
    if target.config.is_none() {
        edits.extend(vbox::set_memory(
            &ctx.view,
            ctx.owner_node(target.owner)?,
            bytes / MIB,
        )?);
    }
    Ok(Applied::new(edits, expect))
}

// ---------------------------------------------------------------------------------------
// Network adapters

fn nic_item<'v, 'd>(ctx: &'v Ctx<'d>, target: &Target) -> Option<(Hardware<'v, 'd>, MergedItem)> {
    let (hardware, list) = ctx.of_type(target, RESOURCE_TYPE_ETHERNET)?;
    let item = list.get(target.nic)?.clone();
    Some((hardware, item))
}

fn nic_field(ctx: &Ctx<'_>, target: &Target, key: &str) -> Option<String> {
    let (hardware, item) = nic_item(ctx, target)?;
    Some(
        hardware
            .get_text(&item, &Key::cim(key))
            .map(|value| value.trim().to_string())
            .unwrap_or_default(),
    )
}

fn set_nic_field(
    ctx: &Ctx<'_>,
    target: &Target,
    key: Key,
    value: Option<String>,
    expect: String,
) -> Result<Applied, SettingError> {
    let (hardware, item) =
        nic_item(ctx, target).ok_or_else(|| unsupported("no such network adapter"))?;
    let edits = hardware.edit(ctx.hardware_config(target), &item, &[Change { key, value }])?;
    Ok(Applied::new(edits, expect))
}

fn read_nic_network(ctx: &Ctx<'_>, target: &Target) -> Result<Option<String>, SettingError> {
    Ok(nic_field(ctx, target, "Connection"))
}

fn write_nic_network(ctx: &Ctx<'_>, target: &Target, text: &str) -> Result<Applied, SettingError> {
    let value = line(text).map_err(invalid)?;
    if nic_field(ctx, target, "Connection").as_deref() == Some(value.as_str()) {
        return Ok(Applied::none(value));
    }
    if value.is_empty() {
        return Err(invalid("a network name is needed (networks/ lists them)"));
    }
    if !ctx
        .descriptor
        .networks
        .iter()
        .any(|network| network.name.value == value)
    {
        let names: Vec<String> = ctx
            .descriptor
            .networks
            .iter()
            .map(|network| format!("{:?}", network.name.value))
            .collect();
        return Err(invalid(format!(
            "no such network (the descriptor has {}); create it first with mkdir networks/NAME",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        )));
    }
    set_nic_field(
        ctx,
        target,
        Key::cim("Connection"),
        Some(value.clone()),
        value,
    )
}

fn read_nic_type(ctx: &Ctx<'_>, target: &Target) -> Result<Option<String>, SettingError> {
    Ok(nic_field(ctx, target, "ResourceSubType"))
}

fn write_nic_type(ctx: &Ctx<'_>, target: &Target, text: &str) -> Result<Applied, SettingError> {
    let value = token(text, "an adapter type").map_err(invalid)?;
    if nic_field(ctx, target, "ResourceSubType").as_deref() == Some(value.as_str()) {
        return Ok(Applied::none(value));
    }
    set_nic_field(
        ctx,
        target,
        Key::cim("ResourceSubType"),
        Some(value.clone()),
        value,
    )
}

fn read_nic_mac(ctx: &Ctx<'_>, target: &Target) -> Result<Option<String>, SettingError> {
    Ok(nic_field(ctx, target, "Address"))
}

fn write_nic_mac(ctx: &Ctx<'_>, target: &Target, text: &str) -> Result<Applied, SettingError> {
    let current = nic_field(ctx, target, "Address").unwrap_or_default();
    if text.trim().is_empty() {
        if current.is_empty() {
            return Ok(Applied::none(""));
        }
        return set_nic_field(ctx, target, Key::cim("Address"), None, String::new());
    }
    let value = mac(text).map_err(invalid)?;
    if mac(&current).ok().as_deref() == Some(value.as_str()) {
        return Ok(Applied::none(current));
    }
    set_nic_field(ctx, target, Key::cim("Address"), Some(value.clone()), value)
}

fn read_nic_connected(ctx: &Ctx<'_>, target: &Target) -> Result<Option<String>, SettingError> {
    Ok(nic_field(ctx, target, "AutomaticAllocation"))
}

fn write_nic_connected(
    ctx: &Ctx<'_>,
    target: &Target,
    text: &str,
) -> Result<Applied, SettingError> {
    let connected = boolean(text).map_err(invalid)?;
    let current = nic_field(ctx, target, "AutomaticAllocation").unwrap_or_default();
    if boolean(&current).ok() == Some(connected) {
        return Ok(Applied::none(current));
    }
    let value = if connected { "true" } else { "false" };
    set_nic_field(
        ctx,
        target,
        Key::cim("AutomaticAllocation"),
        Some(value.into()),
        value.into(),
    )
}

/// The name field an adapter uses: ElementName, else Caption (else what the version
/// writes).
fn nic_name_field(ctx: &Ctx<'_>, target: &Target) -> &'static str {
    if let Some((_, e)) = nic_item(ctx, target) {
        if e.get(&Key::cim("ElementName")).is_some() {
            return "ElementName";
        }
        if e.get(&Key::cim("Caption")).is_some() {
            return "Caption";
        }
    }
    if ctx.descriptor.version == crate::ovf::OvfVersion::V0_9 {
        "Caption"
    } else {
        "ElementName"
    }
}

fn read_nic_name(ctx: &Ctx<'_>, target: &Target) -> Result<Option<String>, SettingError> {
    Ok(nic_field(ctx, target, nic_name_field(ctx, target)))
}

fn write_nic_name(ctx: &Ctx<'_>, target: &Target, text: &str) -> Result<Applied, SettingError> {
    let value = line(text).map_err(invalid)?;
    let key = nic_name_field(ctx, target);
    if nic_field(ctx, target, key).as_deref() == Some(value.as_str()) {
        return Ok(Applied::none(value));
    }
    if value.is_empty() {
        return Err(invalid("an adapter name cannot be empty"));
    }
    set_nic_field(ctx, target, Key::cim(key), Some(value.clone()), value)
}

// ---------------------------------------------------------------------------------------
// Properties

/// The property a `properties/KEY` target names.
fn target_property<'d>(ctx: &Ctx<'d>, target: &Target) -> Option<&'d Property> {
    ctx.properties(target.owner).get(target.prop)
}

/// The value a property's file shows: its default at the top, its configuration's value in
/// `configs/CONFIG/`.
fn property_value(ctx: &Ctx<'_>, target: &Target, property: &Property) -> String {
    match ctx.folder_config(target) {
        None => property.value.as_ref(),
        Some(config) => property.value_for(Some(config)),
    }
    .map(|value| value.value.clone())
    .unwrap_or_default()
}

fn read_property(ctx: &Ctx<'_>, target: &Target) -> Result<Option<String>, SettingError> {
    Ok(target_property(ctx, target).map(|property| property_value(ctx, target, property)))
}

fn write_property(ctx: &Ctx<'_>, target: &Target, text: &str) -> Result<Applied, SettingError> {
    let property = target_property(ctx, target).ok_or_else(|| unsupported("no such property"))?;
    values::check_xml_chars(text).map_err(invalid)?;
    let current = property_value(ctx, target, property);
    if text == current {
        return Ok(Applied::none(current));
    }
    let type_name = property.type_name.as_ref().map(|name| name.value.as_str());
    let property_type = PropertyType::parse(type_name);
    let qualifiers =
        Qualifiers::parse(property.qualifiers.as_ref().map(|list| list.value.as_str()));
    let value = validate(text, &property_type, &qualifiers)
        .map_err(|reason| invalid(format!("{reason} (type {})", type_name.unwrap_or("string"))))?;
    if value == current {
        return Ok(Applied::none(current));
    }
    let view = &ctx.view;
    let node = view
        .find(property.element)
        .ok_or_else(|| SettingError::Internal("property not in the tree".into()))?;
    let Some(config) = ctx.folder_config(target) else {
        let local =
            if property.value.is_none() && ctx.descriptor.version == crate::ovf::OvfVersion::V0_9 {
                "defaultValue"
            } else {
                "value"
            };
        let (name, decl) = view.ovf_attr_name(node, local);
        let old_span = property.value.as_ref().map(|old| old.span);
        return Ok(Applied::new(
            vec![view.set_attr(node, old_span, &name, &decl, &value)],
            value,
        ));
    };
    let (value_attr, value_decl) = view.ovf_attr_name(node, "value");
    let (config_attr, _) = view.ovf_attr_name(node, "configuration");
    let prefix = view.ovf_elem_prefix(node);
    let value_element = format!(
        "<{prefix}Value{value_decl} {value_attr}=\"{}\" {config_attr}=\"{}\"/>",
        escape_attr(&value),
        escape_attr(config)
    );
    let own_value = property.values.iter().find(|candidate| {
        candidate
            .configurations
            .as_ref()
            .is_some_and(|list| list.value.iter().any(|id| id == config))
    });
    match own_value {
        Some(own) => {
            let own_node = view
                .find(own.element)
                .ok_or_else(|| SettingError::Internal("Value not in the tree".into()))?;
            let configs = own.configurations.as_ref().map(|list| &list.value);
            if configs.is_some_and(|ids| ids.iter().all(|id| id == config)) {
                return Ok(Applied::new(
                    vec![view.set_attr(own_node, Some(own.value.span), "", "", &value)],
                    value,
                ));
            }
            // The Value serves other configurations too: take this one out of its list and
            // give it a Value of its own.
            let others: Vec<&str> = configs
                .into_iter()
                .flatten()
                .map(String::as_str)
                .filter(|id| *id != config)
                .collect();
            let span = own
                .configurations
                .as_ref()
                .map(|list| list.span)
                .ok_or_else(|| SettingError::Internal("Value without a list".into()))?;
            Ok(Applied::new(
                vec![
                    Edit {
                        span,
                        replacement: escape_attr(&others.join(" ")),
                    },
                    view.insert_after(own_node, &value_element),
                ],
                value,
            ))
        }
        None => {
            let last_value = property.values.last();
            let edit = match last_value.and_then(|last| view.find(last.element)) {
                Some(last) => view.insert_after(last, &value_element),
                None => view.append_child(node, &value_element)?,
            };
            Ok(Applied::new(vec![edit], value))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Networks

fn read_network_description(
    ctx: &Ctx<'_>,
    target: &Target,
) -> Result<Option<String>, SettingError> {
    Ok(ctx.descriptor.networks.get(target.network).map(|network| {
        network
            .description
            .as_ref()
            .map(|description| description.value.clone())
            .unwrap_or_default()
    }))
}

fn write_network_description(
    ctx: &Ctx<'_>,
    target: &Target,
    text: &str,
) -> Result<Applied, SettingError> {
    let network = ctx
        .descriptor
        .networks
        .get(target.network)
        .ok_or_else(|| unsupported("no such network"))?;
    let node = ctx
        .view
        .find(network.element)
        .ok_or_else(|| SettingError::Internal("network not in the tree".into()))?;
    let value = line(text).map_err(invalid)?;
    set_child_text(&ctx.view, node, "Description", &value, &["Description"])
}

/// The envelope-level NetworkSection node.
fn network_section(view: &View<'_>) -> Option<usize> {
    let root = view.tree.root;
    view.node(root)
        .children
        .iter()
        .copied()
        .find(|&child| section_name(view.node(child)) == Some("NetworkSection"))
}

/// A new Network element written like element `like`; `inner` is the line break and
/// indentation before its child, `outer` those before its end tag.
fn network_xml(view: &View<'_>, like: usize, name: &str, inner: &str, outer: &str) -> String {
    let prefix = view.ovf_elem_prefix(like);
    let (attr, decl) = view.ovf_attr_name(like, "name");
    let description = view.ovf_element(like, "Description", &format!("The {name} network"));
    format!(
        "<{prefix}Network{decl} {attr}=\"{}\">{inner}{description}{outer}</{prefix}Network>",
        escape_attr(name)
    )
}

/// Edits that add a network named `name`.
pub(crate) fn add_network(ctx: &Ctx<'_>, name: &str) -> Result<Vec<Edit>, SettingError> {
    let as_line = line(name).map_err(invalid)?;
    if as_line != name || name.is_empty() {
        return Err(invalid(
            "a network name is one line without surrounding spaces",
        ));
    }
    let view = &ctx.view;
    let last_network = ctx.descriptor.networks.last();
    if let Some(last) = last_network.and_then(|network| view.find(network.element)) {
        let inner = view.child_break(last);
        let outer = view.own_break(last);
        let xml = network_xml(view, last, name, &inner, &outer);
        return Ok(vec![view.insert_after(last, &xml)]);
    }
    if let Some(section) = network_section(view) {
        let child_break = view.child_break(section);
        let indent = if child_break.is_empty() {
            String::new()
        } else {
            view.indent_unit(section)
        };
        let inner = format!("{child_break}{indent}");
        let xml = network_xml(view, section, name, &inner, &child_break);
        return Ok(vec![view.append_child(section, &xml)?]);
    }
    // No NetworkSection: add one after the DiskSection (or References).
    let root = view.tree.root;
    let child_break = view.child_break(root);
    let indent = if child_break.is_empty() {
        String::new()
    } else {
        view.indent_unit(root)
    };
    let inner = format!("{child_break}{indent}{indent}");
    let outer = format!("{child_break}{indent}");
    let children = [
        view.ovf_element(root, "Info", "The list of logical networks"),
        network_xml(view, root, name, &inner, &outer),
    ];
    let xml = view.new_section(root, "NetworkSection", "", &children);
    let anchor = view.node(root).children.iter().copied().rfind(|&child| {
        section_name(view.node(child)) == Some("DiskSection")
            || view.node(child).is_ovf("References")
    });
    let edit = match anchor {
        Some(anchor) => view.insert_after(anchor, &xml),
        None => match view.node(root).children.first() {
            Some(&first) => view.insert_before(first, &xml),
            None => view.append_child(root, &xml)?,
        },
    };
    Ok(vec![edit])
}

/// Edits that remove network number `index`, refused while an adapter uses it.
pub(crate) fn remove_network(ctx: &Ctx<'_>, index: usize) -> Result<Vec<Edit>, SettingError> {
    let network = ctx
        .descriptor
        .networks
        .get(index)
        .ok_or_else(|| SettingError::Internal("no such network".into()))?;
    let name = &network.name.value;
    for (system_index, system) in ctx.descriptor.systems.iter().enumerate() {
        let items = system
            .hardware
            .iter()
            .flat_map(|hardware| hardware.items.iter());
        for item in items {
            if item
                .fields
                .iter()
                .any(|field| field.name == "Connection" && field.value.value == *name)
            {
                let folder = ctx
                    .contents
                    .iter()
                    .find(|(_, owner)| *owner == super::Owner::System(system_index))
                    .map(|(folder, _)| folder.as_str())
                    .unwrap_or("?");
                let instance_id = item
                    .instance_id()
                    .map(|id| id.value.as_str())
                    .unwrap_or("?");
                return Err(SettingError::InUse {
                    name: name.clone(),
                    user: format!(
                        "the network adapter with InstanceID {instance_id} of vms/{folder}"
                    ),
                });
            }
        }
    }
    let node = ctx
        .view
        .find(network.element)
        .ok_or_else(|| SettingError::Internal("network not in the tree".into()))?;
    Ok(vec![ctx.view.remove(node)])
}

// ---------------------------------------------------------------------------------------
// The man page section

/// The man page's SETTINGS FILES section, generated from the settings table.
pub fn man_section() -> String {
    let mut section = String::new();
    section.push_str(".SH SETTINGS FILES\n");
    section.push_str(&roff_escape(
        "A writable mount shows the appliance's settings as small text files, one value per file, read with cat and changed with any editor or a shell redirect. A value the descriptor cannot take is refused with EINVAL and a log line saying why; the old value stays. An edit changes only the bytes of that value in the descriptor (or inserts the element it needs, in schema order, written like its neighbours).",
    ));
    section.push('\n');
    section.push_str(".PP\n");
    section.push_str(&roff_escape(
        "vms/ID/ is a folder for every VirtualSystem and VirtualSystemCollection (nested collections are flattened), ID being its ovf:id with % and / written %25 and %2F; vm links to it when there is exactly one VirtualSystem. Its files show the default deployment configuration. When the descriptor has a DeploymentOptionSection, vms/ID/configs/CONFIG/ holds cpus, cores_per_socket, memory, nics/ and properties/ for each configuration. An edit there changes that configuration only: a hardware item shared with other configurations is copied for it (with ovf:configuration naming it) and the copy changed, so the others keep their values.",
    ));
    section.push('\n');
    section.push_str(".PP\n");
    section.push_str(&roff_escape(
        "networks/NAME/ is a folder for every network of the NetworkSection. mkdir networks/NAME adds a network; rmdir removes one that no network adapter uses.",
    ));
    section.push('\n');
    for row in SETTINGS {
        let path = match row.place {
            Place::Network => format!("networks/NAME/{}", row.path),
            _ => format!("vms/ID/{}", row.path),
        };
        section.push_str(".TP\n");
        section.push_str(&format!(".B {}\n", roff_escape(&path)));
        section.push_str(&roff_escape(row.doc));
        section.push('\n');
    }
    section
}
