//! `qemu.sh`: the [`Machine`] as a POSIX sh script running `qemu-system-x86_64` (QEMU's
//! "Invocation" documentation: `-drive if=none` plus `-device`, `-netdev user`), the same
//! machine `libvirt.xml` describes.
//!
//! The script is byte-stable: what depends on the host is decided when it runs. KVM with
//! `-cpu host` when `/dev/kvm` is readable and writable, TCG with `-cpu max` otherwise
//! (`OVAFS_ACCEL=kvm|tcg` forces one); for EFI, the OVMF images are looked up then and the
//! variable store copied to a temporary file that is removed when qemu exits.
//!
//! `-nodefaults` so that qemu adds nothing the descriptor does not ask for (as libvirt
//! does), `-nographic` with the serial console and the monitor multiplexed on standard
//! input and output. The script's own arguments come last (`"$@"`), so a user can add or
//! override options (`-m 4096`, `-kernel ...`).
//!
//! Quoting: every word that holds a value from the descriptor or a path is written in
//! single quotes (a `'` inside as `'\''`), which sh takes literally, newlines and `$`
//! included; inside qemu's `key=value,...` option syntax a `,` in a value is doubled.

use std::fmt::Write as _;

use super::launch::{self, Attach, Chipset, Firmware, Kind, Machine, Media};
use super::{DeployContext, DeployError, Target};

const FILE: &str = "qemu.sh";

/// The qemu-system-x86_64 script of `t`.
pub fn script(t: &Target<'_>, ctx: &DeployContext) -> Result<String, DeployError> {
    render(&launch::machine(t, ctx)?)
}

/// `s` as one sh word that sh reads back literally.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `s` as a value inside qemu's `key=value,...` syntax (`,` doubled).
fn opt_value(s: &str) -> String {
    s.replace(',', ",,")
}

/// `s` as one comment line (line breaks and other controls become spaces and `?`).
fn comment(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\n' | '\r' | '\t' => ' ',
            c if c.is_control() => '?',
            c => c,
        })
        .collect()
}

const ACCEL: &str = r#"accel=${OVAFS_ACCEL:-}
if [ -z "$accel" ]; then
  if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then accel=kvm; else accel=tcg; fi
fi
case $accel in
  kvm) cpu=host ;;
  tcg) cpu=max ;;
  *) echo "qemu.sh: OVAFS_ACCEL must be kvm or tcg" >&2; exit 2 ;;
esac
"#;

const OVMF: &str = r#"# EFI firmware: OVAFS_OVMF_CODE and OVAFS_OVMF_VARS, else the first OVMF installed.
code=${OVAFS_OVMF_CODE:-}
vars_template=${OVAFS_OVMF_VARS:-}
if [ -z "$code" ]; then
  for pair in \
    /usr/share/OVMF/OVMF_CODE_4M.fd:/usr/share/OVMF/OVMF_VARS_4M.fd \
    /usr/share/OVMF/OVMF_CODE.fd:/usr/share/OVMF/OVMF_VARS.fd \
    /usr/share/edk2/ovmf/OVMF_CODE.fd:/usr/share/edk2/ovmf/OVMF_VARS.fd \
    /usr/share/edk2/x64/OVMF_CODE.4m.fd:/usr/share/edk2/x64/OVMF_VARS.4m.fd \
    /usr/share/qemu/ovmf-x86_64-code.bin:/usr/share/qemu/ovmf-x86_64-vars.bin
  do
    if [ -r "${pair%%:*}" ] && [ -r "${pair#*:}" ]; then
      code=${pair%%:*}
      vars_template=${pair#*:}
      break
    fi
  done
fi
if [ -z "$code" ] || [ -z "$vars_template" ]; then
  echo "qemu.sh: this appliance boots with EFI and no OVMF firmware was found (install ovmf, or set OVAFS_OVMF_CODE and OVAFS_OVMF_VARS)" >&2
  exit 1
fi
vars=$(mktemp "${TMPDIR:-/tmp}/ovafs-efivars.XXXXXX")
trap 'rm -f "$vars"' EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
cp "$vars_template" "$vars"
code_opt=$(printf '%s' "$code" | sed 's/,/,,/g')
vars_opt=$(printf '%s' "$vars" | sed 's/,/,,/g')
"#;

/// The script of machine `m`.
pub fn render(m: &Machine) -> Result<String, DeployError> {
    let mut s = String::from("#!/bin/sh\n");
    for line in launch::header_lines(m, FILE) {
        let _ = writeln!(s, "# {}", comment(&line));
    }
    s.push_str("# Usage: sh qemu.sh [QEMU OPTIONS]: the options are appended to qemu's (a later\n");
    s.push_str("# one overrides, e.g. -m 4096). KVM when /dev/kvm is usable, else TCG;\n");
    s.push_str("# OVAFS_ACCEL=kvm or OVAFS_ACCEL=tcg forces one. The serial console is on this\n");
    s.push_str("# terminal (Ctrl-A X quits).\n");
    s.push_str("set -e\n");
    s.push_str(ACCEL);
    let efi = m.firmware == Firmware::Efi;
    if efi {
        s.push_str(OVMF);
    }
    let mut words: Vec<String> = Vec::new();
    let mut add = |a: &str, b: String| {
        words.push(a.to_string());
        words.push(b);
    };
    add("-name", sh_quote(&format!("guest={}", opt_value(&m.name))));
    let machine = match m.chipset {
        Chipset::I440fx => "pc",
        Chipset::Q35 => "q35",
    };
    add("-machine", machine.to_string());
    add("-accel", "\"$accel\"".into());
    add("-cpu", "\"$cpu\"".into());
    let sockets = m.vcpus.checked_div(m.cores_per_socket).unwrap_or(m.vcpus);
    add(
        "-smp",
        format!(
            "cpus={},sockets={sockets},cores={},threads=1",
            m.vcpus, m.cores_per_socket
        ),
    );
    add("-m", m.memory_mib.to_string());
    words.push("-nodefaults".into());
    words.push("-nographic".into());
    words.push("-serial".into());
    words.push("mon:stdio".into());
    if efi {
        words.push("-drive".into());
        words.push("\"if=pflash,format=raw,unit=0,readonly=on,file=$code_opt\"".into());
        words.push("-drive".into());
        words.push("\"if=pflash,format=raw,unit=1,file=$vars_opt\"".into());
    }
    if m.video {
        words.push("-vga".into());
        words.push("std".into());
    }
    for c in &m.controllers {
        match c.row.kind {
            Kind::Scsi => {
                words.push("-device".into());
                words.push(format!("{},id=scsi{}", c.row.qemu, c.index));
            }
            Kind::Sata if !(m.chipset == Chipset::Q35 && c.index == 0) => {
                words.push("-device".into());
                words.push(format!("{},id=sata{}", c.row.qemu, c.index));
            }
            _ => {}
        }
    }
    for (n, d) in m.drives.iter().enumerate() {
        drive(&mut words, m, n, d)?;
    }
    for (n, nic) in m.nics.iter().enumerate() {
        words.push("-netdev".into());
        words.push(format!("user,id=net{n}"));
        let mac = nic
            .mac
            .as_ref()
            .map(|mac| format!(",mac={mac}"))
            .unwrap_or_default();
        words.push("-device".into());
        words.push(format!("{},netdev=net{n}{mac}", nic.row.qemu));
    }
    if m.nics.is_empty() {
        words.push("-nic".into());
        words.push("none".into());
    }
    words.push("\"$@\"".into());
    s.push_str(if efi {
        "qemu-system-x86_64"
    } else {
        "exec qemu-system-x86_64"
    });
    // Two words a line: an option and its value.
    let mut iter = words.iter().peekable();
    while let Some(w) = iter.next() {
        s.push_str(" \\\n  ");
        s.push_str(w);
        if w.starts_with('-')
            && let Some(v) = iter.peek()
            && !v.starts_with('-')
            && v.as_str() != "\"$@\""
        {
            s.push(' ');
            s.push_str(v);
            iter.next();
        }
    }
    s.push('\n');
    Ok(s)
}

/// The `-drive` and `-device` of drive `n`.
fn drive(
    words: &mut Vec<String>,
    m: &Machine,
    n: usize,
    d: &launch::Drive,
) -> Result<(), DeployError> {
    let id = format!("drive{n}");
    let (spec, cd) = match &d.media {
        Media::Disk(p) => {
            let snapshot = if m.writable_disks { "" } else { ",snapshot=on" };
            (
                format!(
                    "file={},format=raw,if=none,id={id}{snapshot}",
                    opt_value(launch::path_text(p, FILE)?)
                ),
                false,
            )
        }
        Media::Cdrom(Some(p)) => (
            format!(
                "file={},format=raw,if=none,id={id},media=cdrom,readonly=on",
                opt_value(launch::path_text(p, FILE)?)
            ),
            true,
        ),
        Media::Cdrom(None) => (format!("if=none,id={id},media=cdrom"), true),
    };
    words.push("-drive".into());
    words.push(sh_quote(&spec));
    let boot = if d.boot { ",bootindex=1" } else { "" };
    let on = match d.attach {
        Attach::On { controller, unit } => m.controllers.get(controller).map(|c| (c, unit)),
        Attach::Virtio | Attach::Nvme => None,
    };
    let device = match (on, d.attach) {
        (None, Attach::Nvme) => format!("nvme,drive={id},serial=ovafs{n}"),
        (None, _) => format!("virtio-blk-pci,drive={id}"),
        (Some((c, unit)), _) => {
            let ide = if cd { "ide-cd" } else { "ide-hd" };
            match c.row.kind {
                Kind::Ide => format!("{ide},drive={id},bus=ide.{},unit={unit}", c.index),
                Kind::Sata => {
                    let bus = if m.chipset == Chipset::Q35 && c.index == 0 {
                        "ide".to_string()
                    } else {
                        format!("sata{}", c.index)
                    };
                    format!("{ide},drive={id},bus={bus}.{unit}")
                }
                Kind::Scsi => {
                    let dev = if cd { "scsi-cd" } else { "scsi-hd" };
                    // As libvirt addresses them: the unit is the target on an LSI
                    // 53C895A, the LUN of target 0 on the other adapters.
                    let addr = if c.row.libvirt == "lsilogic" {
                        format!("scsi-id={unit},lun=0")
                    } else {
                        format!("channel=0,scsi-id=0,lun={unit}")
                    };
                    format!("{dev},drive={id},bus=scsi{}.0,{addr}", c.index)
                }
                _ => format!("virtio-blk-pci,drive={id}"),
            }
        }
    };
    words.push("-device".into());
    words.push(format!("{device}{boot}"));
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_sh() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        assert_eq!(sh_quote("$x `y` \"z\"\n"), "'$x `y` \"z\"\n'");
        assert_eq!(opt_value("a,b"), "a,,b");
        assert_eq!(comment("a\nb\u{7}"), "a b?");
    }
}
