//! VirtualBox's own copy of a virtual system's hardware, kept in step with edits.
//!
//! VirtualBox exports its complete machine settings as a `vbox:Machine` element inside each
//! VirtualSystem, and on import it prefers that element's CPU count and memory size to the
//! descriptor's hardware items (its importer says: "If there is a <vbox:Machine>, we always
//! prefer the setting from there"). So an edit of `cpus` or `memory` also sets
//! `Hardware/CPU@count` and `Hardware/Memory@RAMSize` (MiB) there; without that, VirtualBox
//! would import the old values while every other tool sees the new ones.
//!
//! Only those two attributes are touched, byte for byte like any other edit. The settings
//! elements are unprefixed, so they land in the document's default namespace (the OVF one,
//! or none), which is where `View::ovf_child` looks.

use crate::ovf::edit::Edit;
use crate::ovf::xml::Ns;

use super::SettingError;
use super::xmlview::View;

/// The order VirtualBox writes the first children of `Hardware` in; a missing element is
/// inserted after those that come before it here.
const HARDWARE_ORDER: [&str; 2] = ["CPU", "Memory"];

/// Edits that make VirtualBox import `n` virtual CPUs (none without machine settings).
pub(super) fn set_cpus(v: &View<'_>, system: usize, n: u64) -> Result<Vec<Edit>, SettingError> {
    // VirtualBox reads a missing count as 1.
    set_hardware_attr(v, system, "CPU", "count", n, Some(1))
}

/// Edits that make VirtualBox import `mib` MiB of memory (none without machine settings).
pub(super) fn set_memory(v: &View<'_>, system: usize, mib: u64) -> Result<Vec<Edit>, SettingError> {
    set_hardware_attr(v, system, "Memory", "RAMSize", mib, None)
}

/// Sets attribute `attr` of `Hardware/element` in the machine settings of content element
/// `system` to `value`, adding the attribute or the element when missing; `default` is the
/// value VirtualBox assumes for a missing attribute (nothing is added to state it).
fn set_hardware_attr(
    v: &View<'_>,
    system: usize,
    element: &str,
    attr: &str,
    value: u64,
    default: Option<u64>,
) -> Result<Vec<Edit>, SettingError> {
    let Some(hardware) = machine_hardware(v, system) else {
        return Ok(Vec::new());
    };
    let text = value.to_string();
    if let Some(el) = v.ovf_child(hardware, element) {
        let existing = v.node(el).attr(Ns::None, attr);
        return Ok(match existing {
            Some(a) if a.value.trim() == text => Vec::new(),
            Some(a) => vec![v.set_attr(el, Some(a.span), attr, "", &text)],
            None if default == Some(value) => Vec::new(),
            None => vec![v.set_attr(el, None, attr, "", &text)],
        });
    }
    if default == Some(value) {
        return Ok(Vec::new());
    }
    let before: &[&str] = match HARDWARE_ORDER.iter().position(|&e| e == element) {
        Some(k) => &HARDWARE_ORDER[..k],
        None => &HARDWARE_ORDER,
    };
    let xml = format!("<{element} {attr}=\"{text}\"/>");
    let edit = v.insert_child_ordered(hardware, &xml, &|c| {
        !before.contains(&v.node(c).local.as_str())
    })?;
    Ok(vec![edit])
}

/// The `Hardware` element of the `vbox:Machine` of content element `system`.
pub(crate) fn machine_hardware(v: &View<'_>, system: usize) -> Option<usize> {
    let machine = v.node(system).children.iter().copied().find(|&c| {
        let n = v.node(c);
        n.ns == Ns::Vbox && n.local == "Machine"
    })?;
    v.ovf_child(machine, "Hardware")
}
