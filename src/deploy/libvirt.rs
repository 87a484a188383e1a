//! `libvirt.xml`: the [`Machine`] as a libvirt domain (libvirt's "Domain XML format",
//! checked against its RelaxNG schema by `virt-xml-validate` in the tests).
//!
//! Choices (the man page's LAUNCH FILES section says them too): `<domain type='kvm'>`, since
//! a domain is defined on a libvirt host and libvirt hosts run KVM (the file must be
//! byte-stable, so it cannot look at the host; `type='qemu'` is one `virsh edit` away);
//! machine `pc` (i440fx) when a drive is on IDE, which q35 lacks, else `q35`; firmware by
//! `<os firmware='efi'>` (libvirt ≥ 5.2 picks an OVMF build itself); CPU mode
//! host-passthrough with the descriptor's topology; user-mode networking (no bridge or
//! libvirt network needed, the same as qemu.sh); a pty serial console; a VNC display on
//! 127.0.0.1 when the descriptor has a graphics adapter; no USB and no memory balloon, which
//! the descriptor does not ask for (qemu.sh has neither).
//!
//! Escaping: every text and attribute value goes through [`escape`], which writes `&`, `<`,
//! `>`, both quotes and the three white-space controls as references (an attribute keeps
//! its tab or newline) and refuses the other control characters, which XML 1.0 cannot hold
//! in any form; comments go through [`comment`], which cannot end one early.

use std::fmt::Write as _;

use super::launch::{self, Attach, Chipset, Firmware, Kind, Machine, Media};
use super::{DeployContext, DeployError, Target};

const FILE: &str = "libvirt.xml";

/// The libvirt domain of `t`.
pub fn domain_xml(t: &Target<'_>, ctx: &DeployContext) -> Result<String, DeployError> {
    render(&launch::machine(t, ctx)?)
}

/// The domain XML of machine `m`.
pub fn render(m: &Machine) -> Result<String, DeployError> {
    let mut x = String::new();
    x.push_str("<!--\n");
    for line in launch::header_lines(m, FILE) {
        let _ = writeln!(x, "  {}", comment(&line));
    }
    x.push_str("-->\n");
    x.push_str("<domain type='kvm'>\n");
    let _ = writeln!(x, "  <name>{}</name>", escape(&m.name)?);
    let _ = writeln!(x, "  <memory unit='MiB'>{}</memory>", m.memory_mib);
    let _ = writeln!(x, "  <vcpu placement='static'>{}</vcpu>", m.vcpus);
    let machine = match m.chipset {
        Chipset::I440fx => "pc",
        Chipset::Q35 => "q35",
    };
    match m.firmware {
        Firmware::Bios => x.push_str("  <os>\n"),
        Firmware::Efi => x.push_str("  <os firmware='efi'>\n"),
    }
    let _ = writeln!(x, "    <type arch='x86_64' machine='{machine}'>hvm</type>");
    x.push_str("  </os>\n");
    x.push_str("  <features>\n    <acpi/>\n    <apic/>\n  </features>\n");
    let sockets = m.vcpus.checked_div(m.cores_per_socket).unwrap_or(m.vcpus);
    let _ = writeln!(
        x,
        "  <cpu mode='host-passthrough'>\n    <topology sockets='{sockets}' cores='{}' threads='1'/>\n  </cpu>",
        m.cores_per_socket
    );
    x.push_str("  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>restart</on_reboot>\n  <on_crash>destroy</on_crash>\n");
    x.push_str("  <devices>\n");
    controllers(&mut x, m);
    disks(&mut x, m)?;
    nics(&mut x, m)?;
    x.push_str("    <serial type='pty'>\n      <target port='0'/>\n    </serial>\n");
    x.push_str(
        "    <console type='pty'>\n      <target type='serial' port='0'/>\n    </console>\n",
    );
    if m.video {
        x.push_str("    <graphics type='vnc' autoport='yes' listen='127.0.0.1'/>\n");
        x.push_str("    <video>\n      <model type='vga'/>\n    </video>\n");
    }
    x.push_str("    <controller type='usb' model='none'/>\n");
    x.push_str("    <memballoon model='none'/>\n");
    x.push_str("  </devices>\n</domain>\n");
    Ok(x)
}

fn controllers(x: &mut String, m: &Machine) {
    for c in &m.controllers {
        match c.row.kind {
            Kind::Scsi => {
                let _ = writeln!(
                    x,
                    "    <controller type='scsi' index='{}' model='{}'/>",
                    c.index, c.row.libvirt
                );
            }
            Kind::Sata => {
                let _ = writeln!(x, "    <controller type='sata' index='{}'/>", c.index);
            }
            // The machine's own IDE, or buses without a controller element.
            _ => {}
        }
    }
    if m.controllers.iter().any(|c| c.row.kind == Kind::Ide) {
        x.push_str("    <controller type='ide' index='0'/>\n");
    }
}

/// Target device names: `hd` + letter for IDE (channel*2+unit), `sd` for SCSI and SATA in
/// order, `vd` for virtio.
struct Names {
    sd: usize,
    vd: usize,
}

/// `prefix` followed by the letters of `n` (a, ..., z, aa, ab, ...), as Linux names disks.
fn dev_name(prefix: &str, n: usize) -> String {
    let mut letters = Vec::new();
    let mut k = n;
    loop {
        letters.push(b'a' + (k % 26) as u8);
        if k < 26 {
            break;
        }
        k = k / 26 - 1;
    }
    letters.reverse();
    format!("{prefix}{}", String::from_utf8_lossy(&letters))
}

fn disks(x: &mut String, m: &Machine) -> Result<(), DeployError> {
    let mut names = Names { sd: 0, vd: 0 };
    let nvme_note = m.drives.iter().any(|d| d.attach == Attach::Nvme);
    if nvme_note {
        x.push_str(
            "    <!-- NVMe disks are virtio-blk devices here: libvirt 9 has no NVMe disk bus -->\n",
        );
    }
    for d in &m.drives {
        let (device, source, readonly) = match &d.media {
            Media::Disk(p) => ("disk", Some(p), false),
            Media::Cdrom(p) => ("cdrom", p.as_ref(), true),
        };
        let (bus, dev, address) = target(m, d.attach, &mut names);
        let _ = writeln!(x, "    <disk type='file' device='{device}'>");
        x.push_str("      <driver name='qemu' type='raw'/>\n");
        if let Some(p) = source {
            let _ = writeln!(x, "      <source file='{}'/>", path_value(p)?);
        }
        let _ = writeln!(x, "      <target dev='{dev}' bus='{bus}'/>");
        if readonly {
            x.push_str("      <readonly/>\n");
        } else if !m.writable_disks {
            x.push_str("      <transient/>\n");
        }
        if let Some(a) = address {
            let _ = writeln!(x, "      {a}");
        }
        if d.boot {
            x.push_str("      <boot order='1'/>\n");
        }
        x.push_str("    </disk>\n");
    }
    Ok(())
}

/// (bus, target dev, address element) of a drive.
fn target(m: &Machine, a: Attach, names: &mut Names) -> (&'static str, String, Option<String>) {
    let on = match a {
        Attach::On { controller, unit } => m.controllers.get(controller).map(|c| (c, unit)),
        Attach::Virtio | Attach::Nvme => None,
    };
    let Some((c, unit)) = on else {
        let dev = dev_name("vd", names.vd);
        names.vd = names.vd.saturating_add(1);
        return ("virtio", dev, None);
    };
    match c.row.kind {
        Kind::Ide => {
            let n = usize::try_from(c.index.saturating_mul(2).saturating_add(unit)).unwrap_or(0);
            (
                "ide",
                dev_name("hd", n),
                Some(format!(
                    "<address type='drive' controller='0' bus='{}' target='0' unit='{unit}'/>",
                    c.index
                )),
            )
        }
        Kind::Scsi | Kind::Sata => {
            let dev = dev_name("sd", names.sd);
            names.sd = names.sd.saturating_add(1);
            let bus = if c.row.kind == Kind::Scsi {
                "scsi"
            } else {
                "sata"
            };
            (
                bus,
                dev,
                Some(format!(
                    "<address type='drive' controller='{}' bus='0' target='0' unit='{unit}'/>",
                    c.index
                )),
            )
        }
        _ => {
            let dev = dev_name("vd", names.vd);
            names.vd = names.vd.saturating_add(1);
            ("virtio", dev, None)
        }
    }
}

fn nics(x: &mut String, m: &Machine) -> Result<(), DeployError> {
    for n in &m.nics {
        x.push_str("    <interface type='user'>\n");
        if let Some(net) = &n.network {
            let _ = writeln!(
                x,
                "      <!-- {} -->",
                comment(&format!("descriptor network: {net}"))
            );
        }
        if let Some(mac) = &n.mac {
            let _ = writeln!(x, "      <mac address='{}'/>", escape(mac)?);
        }
        let _ = writeln!(x, "      <model type='{}'/>", n.row.libvirt);
        x.push_str("    </interface>\n");
    }
    Ok(())
}

/// A path as an attribute value. libvirt's schema takes a path as `(/|[a-zA-Z]:\\).+`,
/// whose `.` matches no line break: a path holding one is refused (the read fails and the
/// log says why) rather than written into a domain libvirt's validation rejects.
fn path_value(p: &std::path::Path) -> Result<String, DeployError> {
    let text = launch::path_text(p, FILE)?;
    if text.contains(['\n', '\r']) {
        return Err(DeployError::Unusable {
            file: FILE,
            reason: format!("{text:?} holds a line break, which libvirt's paths cannot"),
        });
    }
    escape(text)
}

/// `s` escaped for XML text and attribute values (see [`super::xml`]).
pub fn escape(s: &str) -> Result<String, DeployError> {
    super::xml::escape(s, FILE, &format!("{s:?}"))
}

use super::xml::comment;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_controls_refused() {
        assert_eq!(
            escape("a<b>&'\"\t\n\r").unwrap(),
            "a&lt;b&gt;&amp;&apos;&quot;&#9;&#10;&#13;"
        );
        assert_eq!(escape("é ✓").unwrap(), "é ✓");
        assert!(escape("a\u{1}b").is_err());
        assert!(escape("a\u{FFFF}").is_err());
    }

    #[test]
    fn comments_cannot_close_early() {
        for s in ["--", "a-->b", "-", "x---", "<!-- -->", "\u{0}\n-"] {
            let c = comment(s);
            assert!(!c.contains("--"), "{s:?} -> {c:?}");
            assert!(!c.ends_with('-'), "{s:?} -> {c:?}");
            assert!(!c.chars().any(|c| c < ' '), "{s:?} -> {c:?}");
        }
    }

    #[test]
    fn device_names_count_like_linux() {
        assert_eq!(dev_name("sd", 0), "sda");
        assert_eq!(dev_name("sd", 25), "sdz");
        assert_eq!(dev_name("sd", 26), "sdaa");
        assert_eq!(dev_name("vd", 27), "vdab");
        assert_eq!(dev_name("sd", 701), "sdzz");
        assert_eq!(dev_name("sd", 702), "sdaaa");
    }
}
