//! The settings table: every settings file with its path, its documentation, its reader
//! and its writer. [`man_section`] renders the same table as the man page's SETTINGS FILES
//! section.

use crate::ovf::edit::Edit;
use crate::ovf::units::byte_factor;
use crate::ovf::{Property, section_name};
use crate::units::parse_size;

use super::hw::{Change, Eff, Hw, Key, RT_ETHERNET, RT_MEMORY, RT_PROCESSOR};
use super::os_types::{os_id, os_name};
use super::props::{PropType, Qualifiers, validate};
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
pub(crate) type ReadFn = fn(&Ctx<'_>, &Target) -> Result<Option<String>, SettingError>;
/// Validates a new value and returns the edits.
pub(crate) type WriteFn = fn(&Ctx<'_>, &Target, &str) -> Result<Applied, SettingError>;

/// One row of the table.
pub(crate) struct Setting {
    /// Path under the folder of its place; `N` is an adapter number, `KEY` a property key.
    pub path: &'static str,
    pub place: Place,
    /// The man page paragraph (plain text).
    pub doc: &'static str,
    pub read: ReadFn,
    pub write: WriteFn,
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
        read: r_product,
        write: w_product,
    },
    Setting {
        path: "product/vendor",
        place: Place::Content,
        doc: "Vendor (one line).",
        read: r_vendor,
        write: w_vendor,
    },
    Setting {
        path: "product/version",
        place: Place::Content,
        doc: "Short version (one line).",
        read: r_version,
        write: w_version,
    },
    Setting {
        path: "product/full_version",
        place: Place::Content,
        doc: "Full version (FullVersion, one line).",
        read: r_full_version,
        write: w_full_version,
    },
    Setting {
        path: "product/product_url",
        place: Place::Content,
        doc: "Product URL (ProductUrl; no white space).",
        read: r_product_url,
        write: w_product_url,
    },
    Setting {
        path: "product/vendor_url",
        place: Place::Content,
        doc: "Vendor URL (VendorUrl; no white space).",
        read: r_vendor_url,
        write: w_vendor_url,
    },
    Setting {
        path: "product/app_url",
        place: Place::Content,
        doc: "Application URL (AppUrl; no white space).",
        read: r_app_url,
        write: w_app_url,
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
        read: read_net_description,
        write: write_net_description,
    },
];

// ---------------------------------------------------------------------------------------
// Shared helpers

/// Maps a value parser's reason to a refusal.
fn inv(r: String) -> SettingError {
    invalid(r)
}

/// The text of OVF child `local` of node `parent`, or "".
fn child_text(v: &View<'_>, parent: usize, local: &str) -> String {
    v.ovf_child(parent, local)
        .map(|c| v.node(c).text.value.clone())
        .unwrap_or_default()
}

/// Rank of an OVF child in `order` (unknown ones after all of them).
fn rank(v: &View<'_>, node: usize, order: &[&str]) -> usize {
    let n = v.node(node);
    order
        .iter()
        .position(|o| n.is_ovf(o))
        .unwrap_or(order.len())
}

/// Sets the text of OVF child `local` of `parent`, inserting it in `order` when missing (an
/// empty value leaves a missing child missing).
fn text_child(
    v: &View<'_>,
    parent: usize,
    local: &str,
    value: &str,
    order: &[&str],
) -> Result<Applied, SettingError> {
    match v.ovf_child(parent, local) {
        Some(c) => {
            if v.node(c).text.value == value {
                return Ok(Applied::none(value));
            }
            Ok(Applied {
                edits: vec![v.set_text(c, value)],
                expect: value.to_string(),
            })
        }
        None => {
            if value.is_empty() {
                return Ok(Applied::none(value));
            }
            let xml = v.ovf_element(parent, local, value);
            let mine = order
                .iter()
                .position(|o| *o == local)
                .unwrap_or(order.len());
            let edit = v.insert_child_ordered(parent, &xml, &|c| rank(v, c, order) > mine)?;
            Ok(Applied {
                edits: vec![edit],
                expect: value.to_string(),
            })
        }
    }
}

fn applied(edits: Vec<Edit>, expect: impl Into<String>) -> Applied {
    Applied {
        edits,
        expect: expect.into(),
    }
}

// ---------------------------------------------------------------------------------------
// Content: name, annotation, product

fn read_name(c: &Ctx<'_>, t: &Target) -> Result<Option<String>, SettingError> {
    let node = c.owner_node(t.owner)?;
    Ok(Some(child_text(&c.view, node, "Name")))
}

fn write_name(c: &Ctx<'_>, t: &Target, s: &str) -> Result<Applied, SettingError> {
    let v = line(s).map_err(inv)?;
    let node = c.owner_node(t.owner)?;
    text_child(&c.view, node, "Name", &v, &["Info", "Name"])
}

fn read_annotation(c: &Ctx<'_>, t: &Target) -> Result<Option<String>, SettingError> {
    let node = c.owner_node(t.owner)?;
    Ok(Some(
        c.view
            .section(node, "AnnotationSection")
            .map(|s| child_text(&c.view, s, "Annotation"))
            .unwrap_or_default(),
    ))
}

fn write_annotation(c: &Ctx<'_>, t: &Target, s: &str) -> Result<Applied, SettingError> {
    let value = block(s).map_err(inv)?;
    let v = &c.view;
    let node = c.owner_node(t.owner)?;
    match v.section(node, "AnnotationSection") {
        Some(sec) => text_child(v, sec, "Annotation", &value, &["Info", "Annotation"]),
        None => {
            if value.is_empty() {
                return Ok(Applied::none(value));
            }
            let kids = [
                v.ovf_element(node, "Info", "A human-readable annotation"),
                v.ovf_element(node, "Annotation", &value),
            ];
            let xml = v.new_section(node, "AnnotationSection", "", &kids);
            Ok(applied(vec![v.insert_section(node, &xml, None)?], value))
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
fn product_node(c: &Ctx<'_>, t: &Target) -> Option<usize> {
    let info = match t.owner {
        super::Owner::System(i) => c.desc.systems.get(i)?.product.as_ref(),
        super::Owner::Collection(i) => c.desc.collections.get(i)?.product.as_ref(),
    }?;
    c.view.find(info.element)
}

fn read_product_field(
    c: &Ctx<'_>,
    t: &Target,
    local: &str,
) -> Result<Option<String>, SettingError> {
    Ok(Some(
        product_node(c, t)
            .map(|p| child_text(&c.view, p, local))
            .unwrap_or_default(),
    ))
}

fn write_product_field(
    c: &Ctx<'_>,
    t: &Target,
    s: &str,
    local: &str,
    url: bool,
) -> Result<Applied, SettingError> {
    let value = line(s).map_err(inv)?;
    if url && value.contains(char::is_whitespace) {
        return Err(invalid("a URL has no white space"));
    }
    let v = &c.view;
    match product_node(c, t) {
        Some(p) => text_child(v, p, local, &value, PRODUCT_ORDER),
        None => {
            if value.is_empty() {
                return Ok(Applied::none(value));
            }
            let node = c.owner_node(t.owner)?;
            let kids = [
                v.ovf_element(node, "Info", "Information about the installed software"),
                v.ovf_element(node, local, &value),
            ];
            let xml = v.new_section(node, "ProductSection", "", &kids);
            Ok(applied(vec![v.insert_section(node, &xml, None)?], value))
        }
    }
}

macro_rules! product_rw {
    ($r:ident, $w:ident, $local:literal, $url:literal) => {
        fn $r(c: &Ctx<'_>, t: &Target) -> Result<Option<String>, SettingError> {
            read_product_field(c, t, $local)
        }
        fn $w(c: &Ctx<'_>, t: &Target, s: &str) -> Result<Applied, SettingError> {
            write_product_field(c, t, s, $local, $url)
        }
    };
}

product_rw!(r_product, w_product, "Product", false);
product_rw!(r_vendor, w_vendor, "Vendor", false);
product_rw!(r_version, w_version, "Version", false);
product_rw!(r_full_version, w_full_version, "FullVersion", false);
product_rw!(r_product_url, w_product_url, "ProductUrl", true);
product_rw!(r_vendor_url, w_vendor_url, "VendorUrl", true);
product_rw!(r_app_url, w_app_url, "AppUrl", true);

// ---------------------------------------------------------------------------------------
// System: os, os_type, os_description, system_type, transport

fn os_text(id: u16) -> String {
    match os_name(id) {
        Some(n) => format!("{id} {n}"),
        None => id.to_string(),
    }
}

/// The OperatingSystemSection node of a system.
fn os_node(c: &Ctx<'_>, t: &Target) -> Option<usize> {
    c.view.find(c.system(t)?.os.as_ref()?.element)
}

fn read_os(c: &Ctx<'_>, t: &Target) -> Result<Option<String>, SettingError> {
    let Some(sys) = c.system(t) else {
        return Ok(None);
    };
    Ok(Some(
        sys.os
            .as_ref()
            .map(|o| os_text(o.id.value))
            .unwrap_or_default(),
    ))
}

fn write_os(c: &Ctx<'_>, t: &Target, s: &str) -> Result<Applied, SettingError> {
    let sys = c
        .system(t)
        .ok_or_else(|| unsupported("not a virtual system"))?;
    let text = s.trim();
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
    let v = &c.view;
    let expect = os_text(id);
    match &sys.os {
        Some(os) => {
            if os.id.value == id {
                return Ok(Applied::none(expect));
            }
            let node = os_node(c, t).ok_or_else(|| SettingError::Internal("no OS node".into()))?;
            Ok(applied(
                vec![v.set_attr(node, Some(os.id.span), "", "", &id.to_string())],
                expect,
            ))
        }
        None => {
            let node = c.owner_node(t.owner)?;
            let (name, decl) = v.ovf_attr_name(node, "id");
            let kids =
                [v.ovf_element(node, "Info", "The kind of installed guest operating system")];
            let attrs = format!("{decl} {name}=\"{id}\"");
            let xml = v.new_section(node, "OperatingSystemSection", &attrs, &kids);
            Ok(applied(
                vec![v.insert_section(node, &xml, Some("VirtualHardwareSection"))?],
                expect,
            ))
        }
    }
}

fn read_os_type(c: &Ctx<'_>, t: &Target) -> Result<Option<String>, SettingError> {
    Ok(c.system(t).and_then(|s| s.os.as_ref()).map(|o| {
        o.vmw_os_type
            .as_ref()
            .map(|x| x.value.clone())
            .unwrap_or_default()
    }))
}

fn write_os_type(c: &Ctx<'_>, t: &Target, s: &str) -> Result<Applied, SettingError> {
    let os = c
        .system(t)
        .and_then(|s| s.os.as_ref())
        .ok_or_else(|| unsupported("the system has no OperatingSystemSection; write os first"))?;
    let node = os_node(c, t).ok_or_else(|| SettingError::Internal("no OS node".into()))?;
    let value = s.trim();
    let cur = os.vmw_os_type.as_ref();
    let invalid_id = !value
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
        || value.len() > 64;
    if invalid_id && cur.is_none_or(|x| x.value != value) {
        return Err(invalid(
            "a VMware guest id is letters, digits, '_' and '-' (e.g. otherLinux64Guest)",
        ));
    }
    let v = &c.view;
    set_optional_attr(v, node, cur, value, "vmw:osType", || {
        match v.prefix_in_scope(node, &|u| u == VMW_URI, false) {
            Some(p) => (format!("{p}osType"), String::new()),
            None => (
                "vmw:osType".to_string(),
                format!(" xmlns:vmw=\"{VMW_URI}\""),
            ),
        }
    })
}

/// Sets the optional attribute `cur` (called `what` in errors) of element `node` to `value`,
/// or removes it when `value` is empty; no edit when it already holds that. A new attribute
/// gets the qualified name and namespace declaration `name_decl` returns.
fn set_optional_attr(
    v: &View<'_>,
    node: usize,
    cur: Option<&crate::ovf::Spanned<String>>,
    value: &str,
    what: &str,
    name_decl: impl FnOnce() -> (String, String),
) -> Result<Applied, SettingError> {
    if cur.is_some_and(|x| x.value == value) || (cur.is_none() && value.is_empty()) {
        return Ok(Applied::none(value));
    }
    if value.is_empty() {
        let edit = cur
            .and_then(|x| v.remove_attr(node, x.span))
            .ok_or_else(|| SettingError::Internal(format!("{what} not found")))?;
        return Ok(applied(vec![edit], ""));
    }
    let (name, decl) = name_decl();
    Ok(applied(
        vec![v.set_attr(node, cur.map(|x| x.span), &name, &decl, value)],
        value,
    ))
}

fn read_os_description(c: &Ctx<'_>, t: &Target) -> Result<Option<String>, SettingError> {
    Ok(os_node(c, t).map(|n| child_text(&c.view, n, "Description")))
}

fn write_os_description(c: &Ctx<'_>, t: &Target, s: &str) -> Result<Applied, SettingError> {
    let node = os_node(c, t)
        .ok_or_else(|| unsupported("the system has no OperatingSystemSection; write os first"))?;
    let value = line(s).map_err(inv)?;
    text_child(
        &c.view,
        node,
        "Description",
        &value,
        &["Info", "Description"],
    )
}

/// The System node of a system's first hardware section.
fn system_node(c: &Ctx<'_>, t: &Target) -> Option<usize> {
    let sys = c.system(t)?;
    c.view.find(sys.hardware.first()?.system.as_ref()?.element)
}

fn read_system_type(c: &Ctx<'_>, t: &Target) -> Result<Option<String>, SettingError> {
    let Some(sys) = c.system(t) else {
        return Ok(None);
    };
    Ok(sys
        .hardware
        .first()
        .and_then(|h| h.system.as_ref())
        .map(|s| {
            s.system_type
                .as_ref()
                .map(|x| x.value.clone())
                .unwrap_or_default()
        }))
}

fn is_token(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn write_system_type(c: &Ctx<'_>, t: &Target, s: &str) -> Result<Applied, SettingError> {
    let node = system_node(c, t)
        .ok_or_else(|| unsupported("the hardware section has no System element"))?;
    let value = token_list(s, "system type", is_token).map_err(inv)?;
    if value.is_empty() {
        return Err(invalid("a virtual system type is needed, e.g. vmx-13"));
    }
    let v = &c.view;
    let cur = v
        .node(node)
        .children
        .iter()
        .copied()
        .find(|&k| v.node(k).local == "VirtualSystemType");
    match cur {
        Some(k) => {
            if v.node(k).text.value == value {
                return Ok(Applied::none(value));
            }
            Ok(applied(vec![v.set_text(k, &value)], value))
        }
        None => {
            let sibling = v.node(node).children.first().copied().ok_or_else(|| {
                unsupported("the System element is empty; edit the descriptor instead")
            })?;
            let xml = v.element_like(sibling, "VirtualSystemType", &value);
            let edit = v.insert_child_ordered(node, &xml, &|k| {
                v.node(k).local.to_ascii_lowercase().as_str() > "virtualsystemtype"
            })?;
            Ok(applied(vec![edit], value))
        }
    }
}

fn read_transport(c: &Ctx<'_>, t: &Target) -> Result<Option<String>, SettingError> {
    Ok(c.system(t).and_then(|s| s.hardware.first()).map(|h| {
        h.transport
            .as_ref()
            .map(|x| x.value.clone())
            .unwrap_or_default()
    }))
}

fn write_transport(c: &Ctx<'_>, t: &Target, s: &str) -> Result<Applied, SettingError> {
    let hw = c
        .system(t)
        .and_then(|s| s.hardware.first())
        .ok_or_else(|| unsupported("the system has no VirtualHardwareSection"))?;
    let node = c
        .view
        .find(hw.element)
        .ok_or_else(|| SettingError::Internal("no hardware node".into()))?;
    let value = token_list(s, "transport", |_| true).map_err(inv)?;
    let value = value
        .split(' ')
        .filter(|x| !x.is_empty())
        .map(|x| match x {
            "vmware" => "com.vmware.guestInfo",
            x => x,
        })
        .collect::<Vec<_>>()
        .join(" ");
    values::check_xml_chars(&value).map_err(inv)?;
    let v = &c.view;
    set_optional_attr(
        v,
        node,
        hw.transport.as_ref(),
        &value,
        "ovf:transport",
        || v.ovf_attr_name(node, "transport"),
    )
}

// ---------------------------------------------------------------------------------------
// Hardware: cpus, cores_per_socket, memory

/// The first merged item of type `rt` in the target's configuration.
fn hw_item<'v, 'd>(c: &'v Ctx<'d>, t: &Target, rt: u16) -> Option<(Hw<'v, 'd>, Eff)> {
    let (h, list) = c.of_type(t, rt)?;
    let e = list.first()?.clone();
    Some((h, e))
}

/// Why a hardware setting has nothing to change.
fn missing_item(c: &Ctx<'_>, t: &Target, what: &str, rt: u16) -> String {
    let mut s = format!("this virtual system has no {what} item (ResourceType {rt})");
    if let Some(cfg) = c.hw_config(t) {
        s.push_str(&format!(" in configuration {cfg:?}"));
    }
    s.push_str("; add one by writing the whole descriptor");
    s
}

fn vq() -> Key {
    Key::cim("VirtualQuantity")
}

fn cores_key() -> Key {
    Key::Vmw("CoresPerSocket".into())
}

fn read_cpus(c: &Ctx<'_>, t: &Target) -> Result<Option<String>, SettingError> {
    if c.system(t).is_none() {
        return Ok(None);
    }
    Ok(Some(
        hw_item(c, t, RT_PROCESSOR)
            .and_then(|(h, e)| h.get_text(&e, &vq()).map(|s| s.trim().to_string()))
            .unwrap_or_default(),
    ))
}

fn write_cpus(c: &Ctx<'_>, t: &Target, s: &str) -> Result<Applied, SettingError> {
    let n = uint(s, 1, 4096).map_err(inv)?;
    let (h, e) = hw_item(c, t, RT_PROCESSOR)
        .ok_or_else(|| unsupported(missing_item(c, t, "processor", RT_PROCESSOR)))?;
    if h.get_text(&e, &vq())
        .and_then(|x| x.trim().parse::<u64>().ok())
        == Some(n)
    {
        return Ok(Applied::none(n.to_string()));
    }
    if let Some(cores) = h
        .get_text(&e, &cores_key())
        .and_then(|x| x.trim().parse::<u64>().ok())
        .filter(|&k| k > 0)
        && n % cores != 0
    {
        return Err(invalid(format!(
            "{n} CPUs do not split into sockets of {cores} cores (cores_per_socket); change that first"
        )));
    }
    let mut edits = h.edit(
        c.hw_config(t),
        &e,
        &[Change {
            key: vq(),
            value: Some(n.to_string()),
        }],
    )?;
    if t.config.is_none() {
        edits.extend(vbox::set_cpus(&c.view, c.owner_node(t.owner)?, n)?);
    }
    Ok(applied(edits, n.to_string()))
}

fn read_cores(c: &Ctx<'_>, t: &Target) -> Result<Option<String>, SettingError> {
    Ok(hw_item(c, t, RT_PROCESSOR).map(|(h, e)| {
        h.get_text(&e, &cores_key())
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }))
}

fn write_cores(c: &Ctx<'_>, t: &Target, s: &str) -> Result<Applied, SettingError> {
    let (h, e) = hw_item(c, t, RT_PROCESSOR)
        .ok_or_else(|| unsupported("this virtual system has no processor item"))?;
    let cur = h.get_text(&e, &cores_key()).map(|x| x.trim().to_string());
    if s.trim().is_empty() {
        if cur.is_none() {
            return Ok(Applied::none(""));
        }
        let edits = h.edit(
            c.hw_config(t),
            &e,
            &[Change {
                key: cores_key(),
                value: None,
            }],
        )?;
        return Ok(applied(edits, ""));
    }
    let n = uint(s, 1, 4096).map_err(inv)?;
    if cur.as_deref().and_then(|x| x.parse::<u64>().ok()) == Some(n) {
        return Ok(Applied::none(n.to_string()));
    }
    if let Some(cpus) = h
        .get_text(&e, &vq())
        .and_then(|x| x.trim().parse::<u64>().ok())
        && cpus % n != 0
    {
        return Err(invalid(format!(
            "{cpus} CPUs do not split into sockets of {n} cores; change cpus first"
        )));
    }
    let edits = h.edit(
        c.hw_config(t),
        &e,
        &[Change {
            key: cores_key(),
            value: Some(n.to_string()),
        }],
    )?;
    Ok(applied(edits, n.to_string()))
}

const MIB: u64 = 1 << 20;

/// The memory item's size in bytes, if its quantity and units read.
fn memory_bytes(h: &Hw<'_, '_>, e: &Eff) -> Option<u64> {
    let q: u64 = h.get_text(e, &vq())?.trim().parse().ok()?;
    let f = match h.get_text(e, &Key::cim("AllocationUnits")) {
        Some(u) => byte_factor(u).ok()?,
        None => MIB,
    };
    q.checked_mul(f)
}

fn mem_text(bytes: u64) -> String {
    if bytes.is_multiple_of(MIB) {
        (bytes / MIB).to_string()
    } else {
        format!("{bytes} B")
    }
}

fn read_memory(c: &Ctx<'_>, t: &Target) -> Result<Option<String>, SettingError> {
    if c.system(t).is_none() {
        return Ok(None);
    }
    Ok(Some(match hw_item(c, t, RT_MEMORY) {
        Some((h, e)) => match memory_bytes(&h, &e) {
            Some(b) => mem_text(b),
            None => h
                .get_text(&e, &vq())
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
        },
        None => String::new(),
    }))
}

fn write_memory(c: &Ctx<'_>, t: &Target, s: &str) -> Result<Applied, SettingError> {
    let bytes = parse_size(s, MIB)
        .ok_or_else(|| invalid("not a size: write 512, 512M, 512 MiB, 1G or 1 GiB"))?;
    if bytes == 0 {
        return Err(invalid("memory must be more than 0"));
    }
    if bytes % MIB != 0 {
        return Err(invalid("memory must be a whole number of MiB"));
    }
    let (h, e) = hw_item(c, t, RT_MEMORY)
        .ok_or_else(|| unsupported(missing_item(c, t, "memory", RT_MEMORY)))?;
    let expect = mem_text(bytes);
    if memory_bytes(&h, &e) == Some(bytes) {
        return Ok(Applied::none(expect));
    }
    let units = h.get_text(&e, &Key::cim("AllocationUnits"));
    let factor = match units {
        Some(u) => byte_factor(u).ok(),
        None => Some(MIB),
    };
    let changes = match factor {
        Some(f) if bytes % f == 0 => vec![Change {
            key: vq(),
            value: Some((bytes / f).to_string()),
        }],
        _ => {
            let legacy = units.is_some_and(|u| !u.contains('*') && !u.contains('^'));
            vec![
                Change {
                    key: Key::cim("AllocationUnits"),
                    value: Some(if legacy { "MegaBytes" } else { "byte * 2^20" }.into()),
                },
                Change {
                    key: vq(),
                    value: Some((bytes / MIB).to_string()),
                },
            ]
        }
    };
    let mut edits = h.edit(c.hw_config(t), &e, &changes)?;
    if t.config.is_none() {
        edits.extend(vbox::set_memory(
            &c.view,
            c.owner_node(t.owner)?,
            bytes / MIB,
        )?);
    }
    Ok(applied(edits, expect))
}

// ---------------------------------------------------------------------------------------
// Network adapters

fn nic<'v, 'd>(c: &'v Ctx<'d>, t: &Target) -> Option<(Hw<'v, 'd>, Eff)> {
    let (h, list) = c.of_type(t, RT_ETHERNET)?;
    let e = list.get(t.nic)?.clone();
    Some((h, e))
}

fn nic_text(c: &Ctx<'_>, t: &Target, key: &str) -> Option<String> {
    let (h, e) = nic(c, t)?;
    Some(
        h.get_text(&e, &Key::cim(key))
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    )
}

fn nic_set(
    c: &Ctx<'_>,
    t: &Target,
    key: Key,
    value: Option<String>,
    expect: String,
) -> Result<Applied, SettingError> {
    let (h, e) = nic(c, t).ok_or_else(|| unsupported("no such network adapter"))?;
    let edits = h.edit(c.hw_config(t), &e, &[Change { key, value }])?;
    Ok(applied(edits, expect))
}

fn read_nic_network(c: &Ctx<'_>, t: &Target) -> Result<Option<String>, SettingError> {
    Ok(nic_text(c, t, "Connection"))
}

fn write_nic_network(c: &Ctx<'_>, t: &Target, s: &str) -> Result<Applied, SettingError> {
    let value = line(s).map_err(inv)?;
    if nic_text(c, t, "Connection").as_deref() == Some(value.as_str()) {
        return Ok(Applied::none(value));
    }
    if value.is_empty() {
        return Err(invalid("a network name is needed (networks/ lists them)"));
    }
    if !c.desc.networks.iter().any(|n| n.name.value == value) {
        let names: Vec<String> = c
            .desc
            .networks
            .iter()
            .map(|n| format!("{:?}", n.name.value))
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
    nic_set(c, t, Key::cim("Connection"), Some(value.clone()), value)
}

fn read_nic_type(c: &Ctx<'_>, t: &Target) -> Result<Option<String>, SettingError> {
    Ok(nic_text(c, t, "ResourceSubType"))
}

fn write_nic_type(c: &Ctx<'_>, t: &Target, s: &str) -> Result<Applied, SettingError> {
    let value = token(s, "an adapter type").map_err(inv)?;
    if nic_text(c, t, "ResourceSubType").as_deref() == Some(value.as_str()) {
        return Ok(Applied::none(value));
    }
    nic_set(
        c,
        t,
        Key::cim("ResourceSubType"),
        Some(value.clone()),
        value,
    )
}

fn read_nic_mac(c: &Ctx<'_>, t: &Target) -> Result<Option<String>, SettingError> {
    Ok(nic_text(c, t, "Address"))
}

fn write_nic_mac(c: &Ctx<'_>, t: &Target, s: &str) -> Result<Applied, SettingError> {
    let cur = nic_text(c, t, "Address").unwrap_or_default();
    if s.trim().is_empty() {
        if cur.is_empty() {
            return Ok(Applied::none(""));
        }
        return nic_set(c, t, Key::cim("Address"), None, String::new());
    }
    let value = mac(s).map_err(inv)?;
    if mac(&cur).ok().as_deref() == Some(value.as_str()) {
        return Ok(Applied::none(cur));
    }
    nic_set(c, t, Key::cim("Address"), Some(value.clone()), value)
}

fn read_nic_connected(c: &Ctx<'_>, t: &Target) -> Result<Option<String>, SettingError> {
    Ok(nic_text(c, t, "AutomaticAllocation"))
}

fn write_nic_connected(c: &Ctx<'_>, t: &Target, s: &str) -> Result<Applied, SettingError> {
    let b = boolean(s).map_err(inv)?;
    let cur = nic_text(c, t, "AutomaticAllocation").unwrap_or_default();
    if boolean(&cur).ok() == Some(b) {
        return Ok(Applied::none(cur));
    }
    let value = if b { "true" } else { "false" };
    nic_set(
        c,
        t,
        Key::cim("AutomaticAllocation"),
        Some(value.into()),
        value.into(),
    )
}

/// The name field an adapter uses: ElementName, else Caption (else what the version
/// writes).
fn nic_name_key(c: &Ctx<'_>, t: &Target) -> &'static str {
    if let Some((_, e)) = nic(c, t) {
        if e.get(&Key::cim("ElementName")).is_some() {
            return "ElementName";
        }
        if e.get(&Key::cim("Caption")).is_some() {
            return "Caption";
        }
    }
    if c.desc.version == crate::ovf::OvfVersion::V0_9 {
        "Caption"
    } else {
        "ElementName"
    }
}

fn read_nic_name(c: &Ctx<'_>, t: &Target) -> Result<Option<String>, SettingError> {
    Ok(nic_text(c, t, nic_name_key(c, t)))
}

fn write_nic_name(c: &Ctx<'_>, t: &Target, s: &str) -> Result<Applied, SettingError> {
    let value = line(s).map_err(inv)?;
    let key = nic_name_key(c, t);
    if nic_text(c, t, key).as_deref() == Some(value.as_str()) {
        return Ok(Applied::none(value));
    }
    if value.is_empty() {
        return Err(invalid("an adapter name cannot be empty"));
    }
    nic_set(c, t, Key::cim(key), Some(value.clone()), value)
}

// ---------------------------------------------------------------------------------------
// Properties

fn property<'d>(c: &Ctx<'d>, t: &Target) -> Option<&'d Property> {
    c.properties(t.owner).get(t.prop)
}

fn property_value(c: &Ctx<'_>, t: &Target, p: &Property) -> String {
    match c.folder_config(t) {
        None => p.value.as_ref(),
        Some(cfg) => p.value_for(Some(cfg)),
    }
    .map(|v| v.value.clone())
    .unwrap_or_default()
}

fn read_property(c: &Ctx<'_>, t: &Target) -> Result<Option<String>, SettingError> {
    Ok(property(c, t).map(|p| property_value(c, t, p)))
}

fn write_property(c: &Ctx<'_>, t: &Target, s: &str) -> Result<Applied, SettingError> {
    let p = property(c, t).ok_or_else(|| unsupported("no such property"))?;
    values::check_xml_chars(s).map_err(inv)?;
    let cur = property_value(c, t, p);
    if s == cur {
        return Ok(Applied::none(cur));
    }
    let ty = PropType::parse(p.type_name.as_ref().map(|x| x.value.as_str()));
    let q = Qualifiers::parse(p.qualifiers.as_ref().map(|x| x.value.as_str()));
    let value = validate(s, &ty, &q).map_err(|r| {
        let ty = p
            .type_name
            .as_ref()
            .map(|x| x.value.as_str())
            .unwrap_or("string");
        invalid(format!("{r} (type {ty})"))
    })?;
    if value == cur {
        return Ok(Applied::none(cur));
    }
    let v = &c.view;
    let node = v
        .find(p.element)
        .ok_or_else(|| SettingError::Internal("property not in the tree".into()))?;
    let Some(cfg) = c.folder_config(t) else {
        let local = if p.value.is_none() && c.desc.version == crate::ovf::OvfVersion::V0_9 {
            "defaultValue"
        } else {
            "value"
        };
        let (name, decl) = v.ovf_attr_name(node, local);
        return Ok(applied(
            vec![v.set_attr(node, p.value.as_ref().map(|x| x.span), &name, &decl, &value)],
            value,
        ));
    };
    let (vname, vdecl) = v.ovf_attr_name(node, "value");
    let (cname, _) = v.ovf_attr_name(node, "configuration");
    let prefix = v.ovf_elem_prefix(node);
    let new_value = format!(
        "<{prefix}Value{vdecl} {vname}=\"{}\" {cname}=\"{}\"/>",
        escape_attr(&value),
        escape_attr(cfg)
    );
    let own = p.values.iter().find(|x| {
        x.configurations
            .as_ref()
            .is_some_and(|l| l.value.iter().any(|y| y == cfg))
    });
    match own {
        Some(x) => {
            let xnode = v
                .find(x.element)
                .ok_or_else(|| SettingError::Internal("Value not in the tree".into()))?;
            let list = x.configurations.as_ref().map(|l| &l.value);
            if list.is_some_and(|l| l.iter().all(|y| y == cfg)) {
                return Ok(applied(
                    vec![v.set_attr(xnode, Some(x.value.span), "", "", &value)],
                    value,
                ));
            }
            // The Value serves other configurations too: take this one out of its list and
            // give it a Value of its own.
            let rest: Vec<&str> = list
                .into_iter()
                .flatten()
                .map(String::as_str)
                .filter(|y| *y != cfg)
                .collect();
            let span = x
                .configurations
                .as_ref()
                .map(|l| l.span)
                .ok_or_else(|| SettingError::Internal("Value without a list".into()))?;
            Ok(applied(
                vec![
                    Edit {
                        span,
                        replacement: escape_attr(&rest.join(" ")),
                    },
                    v.insert_after(xnode, &new_value),
                ],
                value,
            ))
        }
        None => {
            let edit = match p.values.last().and_then(|x| v.find(x.element)) {
                Some(last) => v.insert_after(last, &new_value),
                None => v.append_child(node, &new_value)?,
            };
            Ok(applied(vec![edit], value))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Networks

fn read_net_description(c: &Ctx<'_>, t: &Target) -> Result<Option<String>, SettingError> {
    Ok(c.desc.networks.get(t.network).map(|n| {
        n.description
            .as_ref()
            .map(|d| d.value.clone())
            .unwrap_or_default()
    }))
}

fn write_net_description(c: &Ctx<'_>, t: &Target, s: &str) -> Result<Applied, SettingError> {
    let n = c
        .desc
        .networks
        .get(t.network)
        .ok_or_else(|| unsupported("no such network"))?;
    let node = c
        .view
        .find(n.element)
        .ok_or_else(|| SettingError::Internal("network not in the tree".into()))?;
    let value = line(s).map_err(inv)?;
    text_child(&c.view, node, "Description", &value, &["Description"])
}

/// The envelope-level NetworkSection node.
fn network_section(v: &View<'_>) -> Option<usize> {
    let root = v.tree.root;
    v.node(root)
        .children
        .iter()
        .copied()
        .find(|&k| section_name(v.node(k)) == Some("NetworkSection"))
}

/// A new Network element; `inner` is the line break and indentation of its child.
fn network_xml(v: &View<'_>, like: usize, name: &str, inner: &str, outer: &str) -> String {
    let p = v.ovf_elem_prefix(like);
    let (attr, decl) = v.ovf_attr_name(like, "name");
    let desc = v.ovf_element(like, "Description", &format!("The {name} network"));
    format!(
        "<{p}Network{decl} {attr}=\"{}\">{inner}{desc}{outer}</{p}Network>",
        escape_attr(name)
    )
}

/// Edits that add a network named `name`.
pub(crate) fn add_network(c: &Ctx<'_>, name: &str) -> Result<Vec<Edit>, SettingError> {
    let name_ok = line(name).map_err(inv)?;
    if name_ok != name || name.is_empty() {
        return Err(invalid(
            "a network name is one line without surrounding spaces",
        ));
    }
    let v = &c.view;
    if let Some(last) = c.desc.networks.last().and_then(|n| v.find(n.element)) {
        let inner = v.child_break(last);
        let outer = v.own_break(last);
        let xml = network_xml(v, last, name, &inner, &outer);
        return Ok(vec![v.insert_after(last, &xml)]);
    }
    if let Some(sec) = network_section(v) {
        let cb = v.child_break(sec);
        let unit = if cb.is_empty() {
            String::new()
        } else {
            v.indent_unit(sec)
        };
        let inner = format!("{cb}{unit}");
        let xml = network_xml(v, sec, name, &inner, &cb);
        return Ok(vec![v.append_child(sec, &xml)?]);
    }
    // No NetworkSection: add one after the DiskSection (or References).
    let root = v.tree.root;
    let cb = v.child_break(root);
    let unit = if cb.is_empty() {
        String::new()
    } else {
        v.indent_unit(root)
    };
    let inner = format!("{cb}{unit}{unit}");
    let outer = format!("{cb}{unit}");
    let kids = [
        v.ovf_element(root, "Info", "The list of logical networks"),
        network_xml(v, root, name, &inner, &outer),
    ];
    let xml = v.new_section(root, "NetworkSection", "", &kids);
    let anchor = v.node(root).children.iter().copied().rfind(|&k| {
        section_name(v.node(k)) == Some("DiskSection") || v.node(k).is_ovf("References")
    });
    let edit = match anchor {
        Some(a) => v.insert_after(a, &xml),
        None => match v.node(root).children.first() {
            Some(&f) => v.insert_before(f, &xml),
            None => v.append_child(root, &xml)?,
        },
    };
    Ok(vec![edit])
}

/// Edits that remove network `idx`, refused while an adapter uses it.
pub(crate) fn remove_network(c: &Ctx<'_>, idx: usize) -> Result<Vec<Edit>, SettingError> {
    let net = c
        .desc
        .networks
        .get(idx)
        .ok_or_else(|| SettingError::Internal("no such network".into()))?;
    let name = &net.name.value;
    for (si, sys) in c.desc.systems.iter().enumerate() {
        for item in sys.hardware.iter().flat_map(|h| h.items.iter()) {
            if item
                .fields
                .iter()
                .any(|f| f.name == "Connection" && f.value.value == *name)
            {
                let vm = c
                    .contents
                    .iter()
                    .find(|(_, o)| *o == super::Owner::System(si))
                    .map(|(n, _)| n.as_str())
                    .unwrap_or("?");
                let iid = item.instance_id().map(|x| x.value.as_str()).unwrap_or("?");
                return Err(SettingError::InUse {
                    name: name.clone(),
                    user: format!("the network adapter with InstanceID {iid} of vms/{vm}"),
                });
            }
        }
    }
    let node = c
        .view
        .find(net.element)
        .ok_or_else(|| SettingError::Internal("network not in the tree".into()))?;
    Ok(vec![c.view.remove(node)])
}

// ---------------------------------------------------------------------------------------
// The man page section

/// Escapes plain text for roff.
fn roff(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            c => out.push(c),
        }
    }
    if out.starts_with('.') || out.starts_with('\'') {
        out.insert_str(0, "\\&");
    }
    out
}

/// The man page's SETTINGS FILES section, generated from the settings table.
pub fn man_section() -> String {
    let mut s = String::new();
    s.push_str(".SH SETTINGS FILES\n");
    s.push_str(&roff(
        "A writable mount shows the appliance's settings as small text files, one value per file, read with cat and changed with any editor or a shell redirect. A value the descriptor cannot take is refused with EINVAL and a log line saying why; the old value stays. An edit changes only the bytes of that value in the descriptor (or inserts the element it needs, in schema order, written like its neighbours).",
    ));
    s.push('\n');
    s.push_str(".PP\n");
    s.push_str(&roff(
        "vms/ID/ is a folder for every VirtualSystem and VirtualSystemCollection (nested collections are flattened), ID being its ovf:id with % and / written %25 and %2F; vm links to it when there is exactly one VirtualSystem. Its files show the default deployment configuration. When the descriptor has a DeploymentOptionSection, vms/ID/configs/CONFIG/ holds cpus, cores_per_socket, memory, nics/ and properties/ for each configuration. An edit there changes that configuration only: a hardware item shared with other configurations is copied for it (with ovf:configuration naming it) and the copy changed, so the others keep their values.",
    ));
    s.push('\n');
    s.push_str(".PP\n");
    s.push_str(&roff(
        "networks/NAME/ is a folder for every network of the NetworkSection. mkdir networks/NAME adds a network; rmdir removes one that no network adapter uses.",
    ));
    s.push('\n');
    for row in SETTINGS {
        let path = match row.place {
            Place::Network => format!("networks/NAME/{}", row.path),
            _ => format!("vms/ID/{}", row.path),
        };
        s.push_str(".TP\n");
        s.push_str(&format!(".B {}\n", roff(&path)));
        s.push_str(&roff(row.doc));
        s.push('\n');
    }
    s
}
