//! The launch files of `vms/ID/deploy/` (issue 13 part 2) through real mounts, judged by
//! independent tools:
//!
//! - `virt-xml-validate` (libvirt's RelaxNG schema) accepts every generated `libvirt.xml`:
//!   the tests' appliances (the sample, and descriptors edited for SCSI/IDE/SATA
//!   controllers, several disks, NIC types, EFI, hostile names) and every OVA and OVF of the
//!   shared corpus (`OVAFS_CORPUS`, read in place; skipped with a message outside CI).
//! - `sh -n` accepts every `qemu.sh`, and running it with a fake `qemu-system-x86_64` on
//!   `PATH` that writes its argv shows the arguments arrive intact (quotes, `$`, backticks,
//!   newlines, commas in names and paths), the accelerator follows `/dev/kvm` and
//!   `OVAFS_ACCEL`, and the script's own arguments come last.
//! - qemu boots the test appliance with the exact command of `qemu.sh` (`timeout 180 sh
//!   MNT/vm/deploy/qemu.sh`): its disk is a FAT image made bootable by syslinux holding the
//!   test guest's kernel and initramfs (tests/common/guest.rs); the guest prints what it
//!   sees (CPU count, memory, PCI devices, and the edited property from `ovf-env.iso`, which
//!   qemu.sh put in the appliance's IDE CD-ROM drive) on the serial console, which is
//!   qemu.sh's stdout.
//!   TCG (`OVAFS_ACCEL=tcg`) unless `OVAFS_GUEST_ACCEL=kvm`, like the other guest tests.
//!   An EFI appliance (vmw:Config firmware=efi, AHCI disk) boots the same way through OVMF
//!   (Debian's `ovmf`, found by the script itself) and syslinux's EFI loader.
//! - `-o deployment=CONFIG` picks the configuration's hardware.
//! - The man page carries the generated LAUNCH FILES section (the mapping table).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::guest::Guest;
use common::*;

const STREAM: &str = ovafs::sample::VMDK_STREAM_URI;
const VMW: &str = "http://www.vmware.com/schema/ovf";

/// A small raw image packed as a stream-optimized VMDK named `NAME.vmdk`.
fn small_vmdk(dir: &Path, name: &str) -> PathBuf {
    let raw = dir.join(format!("{name}.img"));
    scattered_raw(&raw, 4 << 20, 4, 7);
    let vmdk = dir.join(format!("{name}.vmdk"));
    to_stream_vmdk(&raw, &vmdk);
    vmdk
}

/// `virt-xml-validate FILE domain` must accept `file`.
fn validate(file: &Path) {
    let out = Command::new(tool("virt-xml-validate"))
        .arg(file)
        .arg("domain")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "virt-xml-validate rejects {}:\n{}{}\n--- file ---\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        fs::read_to_string(file).unwrap_or_default()
    );
}

/// Validates XML text (written to a temporary file).
fn validate_text(xml: &str, what: &str) {
    let tmp = tempdir();
    let f = tmp.path().join(format!("{}.xml", what.replace('/', "_")));
    fs::write(&f, xml).unwrap();
    validate(&f);
}

/// `sh -n` must accept `script`.
fn sh_syntax_ok(script: &Path) {
    let out = Command::new(tool("sh"))
        .arg("-n")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sh -n {}: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `script` with a fake qemu-system-x86_64 first on PATH and returns the argv it got.
fn fake_qemu_argv(script: &Path, env: &[(&str, &str)], args: &[&str]) -> Vec<String> {
    let tmp = tempdir();
    let bin = tmp.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let fake = bin.join("qemu-system-x86_64");
    fs::write(
        &fake,
        "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\0' \"$a\"; done > \"$ARGV_OUT\"\n",
    )
    .unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let argv = tmp.path().join("argv");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(tool("sh"));
    // In an empty folder, so that a command a hostile name smuggled in (`touch PWNED`)
    // would leave a file there.
    cmd.current_dir(tmp.path())
        .arg(script)
        .args(args)
        .env("PATH", path)
        .env("ARGV_OUT", &argv)
        .env_remove("OVAFS_ACCEL")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "sh {} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut left: Vec<String> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["argv", "bin"],
        "the script ran a command from the descriptor"
    );
    let bytes = fs::read(&argv).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let mut v: Vec<String> = text.split('\0').map(str::to_string).collect();
    assert_eq!(v.pop().as_deref(), Some(""), "argv ends with a NUL");
    v
}

/// The value following option `opt` at every place it occurs.
fn values_of<'a>(argv: &'a [String], opt: &str) -> Vec<&'a str> {
    argv.windows(2)
        .filter(|w| w[0] == opt)
        .map(|w| w[1].as_str())
        .collect()
}

/// The single folder under `MNT/vms/`.
fn only_vm(m: &Mount) -> PathBuf {
    let mut vms: Vec<PathBuf> = fs::read_dir(m.path("vms"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(vms.len(), 1, "{vms:?}");
    vms.pop().unwrap()
}

/// The only flat disk `disks/*.raw` of a mount.
fn flat_disks(m: &Mount) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(m.path("disks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "raw"))
        .collect();
    v.sort();
    v
}

#[test]
fn the_sample_appliance_launch_files_validate_and_follow_the_descriptor() {
    let tmp = tempdir();
    let vmdk = small_vmdk(tmp.path(), "disk1");
    let ova = OvaBuilder::new(&tmp.path().join("pkg"), "sample")
        .disk(&vmdk, 4 << 20, STREAM)
        .build();
    for (opts, writable) in [(&[][..], true), (&["ro"][..], false)] {
        let m = Mount::ok(&ova, &tmp.path().join("mnt"), opts);
        let deploy = m.path("vm/deploy");
        let xml = fs::read_to_string(deploy.join("libvirt.xml")).unwrap();
        validate(&deploy.join("libvirt.xml"));
        let flat = flat_disks(&m);
        assert_eq!(flat.len(), 1);
        let flat = flat[0].to_str().unwrap().to_string();
        let iso = format!(
            "{}/vms/sample/deploy/ovf-env.iso",
            m.dir.canonicalize().unwrap().display()
        );
        for want in [
            "<name>sample</name>",
            "<memory unit='MiB'>1024</memory>",
            "<vcpu placement='static'>2</vcpu>",
            "<topology sockets='2' cores='1' threads='1'/>",
            "<type arch='x86_64' machine='q35'>hvm</type>",
            "<controller type='scsi' index='0' model='lsilogic'/>",
            &format!("<source file='{flat}'/>"),
            "<target dev='sda' bus='scsi'/>",
            "<address type='drive' controller='0' bus='0' target='0' unit='0'/>",
            "<boot order='1'/>",
            // The sample has a property, so the environment ISO is attached; it has no
            // CD-ROM item, so the drive is added on SATA (q35).
            &format!("<source file='{iso}'/>"),
            "<target dev='sdb' bus='sata'/>",
            "<model type='vmxnet3'/>",
            "<interface type='user'>",
        ] {
            assert!(xml.contains(want), "libvirt.xml lacks {want}:\n{xml}");
        }
        assert_eq!(xml.contains("<transient/>"), !writable, "{xml}");
        // Byte-stable: a second read gives the same bytes.
        assert_eq!(fs::read_to_string(deploy.join("libvirt.xml")).unwrap(), xml);

        let script = deploy.join("qemu.sh");
        sh_syntax_ok(&script);
        let argv = fake_qemu_argv(&script, &[("OVAFS_ACCEL", "tcg")], &[]);
        assert_eq!(values_of(&argv, "-machine"), ["q35"]);
        assert_eq!(values_of(&argv, "-accel"), ["tcg"]);
        assert_eq!(values_of(&argv, "-cpu"), ["max"]);
        assert_eq!(
            values_of(&argv, "-smp"),
            ["cpus=2,sockets=2,cores=1,threads=1"]
        );
        assert_eq!(values_of(&argv, "-m"), ["1024"]);
        let snapshot = if writable { "" } else { ",snapshot=on" };
        assert_eq!(
            values_of(&argv, "-drive"),
            [
                format!(
                    "file={},format=raw,if=none,id=drive0{snapshot}",
                    flat.replace(',', ",,")
                ),
                format!(
                    "file={},format=raw,if=none,id=drive1,media=cdrom,readonly=on",
                    iso.replace(',', ",,")
                ),
            ]
        );
        assert_eq!(
            values_of(&argv, "-device"),
            [
                "lsi53c895a,id=scsi0",
                "scsi-hd,drive=drive0,bus=scsi0.0,scsi-id=0,lun=0,bootindex=1",
                "ide-cd,drive=drive1,bus=ide.0",
                "vmxnet3,netdev=net0",
            ]
        );
        assert_eq!(values_of(&argv, "-netdev"), ["user,id=net0"]);
        m.umount();
    }
}

/// Hardware items appended to the sample's: an IDE controller (iid 5) with a CD-ROM, a
/// SATA controller (iid 6), two more NICs, and items that are not mapped.
const MORE_ITEMS: &str = r#"
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:ElementName>IDE 0</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceType>5</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:ElementName>SATA 0</rasd:ElementName>
        <rasd:InstanceID>6</rasd:InstanceID>
        <rasd:ResourceSubType>vmware.sata.ahci</rasd:ResourceSubType>
        <rasd:ResourceType>20</rasd:ResourceType>
      </Item>
      <Item ovf:required="false">
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>false</rasd:AutomaticAllocation>
        <rasd:ElementName>CD/DVD drive 1</rasd:ElementName>
        <rasd:InstanceID>7</rasd:InstanceID>
        <rasd:Parent>5</rasd:Parent>
        <rasd:ResourceType>15</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:Address>00:50:56:01:02:04</rasd:Address>
        <rasd:Connection>VM Network</rasd:Connection>
        <rasd:ElementName>Network adapter 2</rasd:ElementName>
        <rasd:InstanceID>8</rasd:InstanceID>
        <rasd:ResourceSubType>E1000e</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:Address>01:00:5e:00:00:01</rasd:Address>
        <rasd:ElementName>Network adapter 3</rasd:ElementName>
        <rasd:InstanceID>9</rasd:InstanceID>
        <rasd:ResourceSubType>PCNet32</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
      <Item ovf:required="false">
        <rasd:ElementName>Sound card</rasd:ElementName>
        <rasd:InstanceID>20</rasd:InstanceID>
        <rasd:ResourceSubType>vmware.soundcard.hdaudio</rasd:ResourceSubType>
        <rasd:ResourceType>1</rasd:ResourceType>
      </Item>
      <Item ovf:required="false">
        <rasd:ElementName>USB controller</rasd:ElementName>
        <rasd:InstanceID>21</rasd:InstanceID>
        <rasd:ResourceSubType>vmware.usb.xhci</rasd:ResourceSubType>
        <rasd:ResourceType>23</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:ElementName>Floppy --> &lt;drive&gt;</rasd:ElementName>
        <rasd:InstanceID>22</rasd:InstanceID>
        <rasd:ResourceType>14</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:ElementName>Mystery</rasd:ElementName>
        <rasd:InstanceID>23</rasd:InstanceID>
        <rasd:ResourceType>99</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>3</rasd:AddressOnParent>
        <rasd:ElementName>Blank disk</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/blank1</rasd:HostResource>
        <rasd:InstanceID>24</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:ElementName>Video card</rasd:ElementName>
        <rasd:InstanceID>25</rasd:InstanceID>
        <rasd:ResourceType>24</rasd:ResourceType>
      </Item>
      <vmw:Config xmlns:vmw="http://www.vmware.com/schema/ovf" ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
    </VirtualHardwareSection>"#;

#[test]
fn controllers_disks_nics_and_efi_map_as_the_table_says() {
    let tmp = tempdir();
    let d1 = small_vmdk(tmp.path(), "disk1");
    let d2 = small_vmdk(tmp.path(), "disk2");
    let d3 = small_vmdk(tmp.path(), "disk3");
    let ova = OvaBuilder::new(&tmp.path().join("pkg"), "several")
        .disk(&d1, 4 << 20, STREAM)
        .disk(&d2, 4 << 20, STREAM)
        .disk(&d3, 4 << 20, STREAM)
        .edit_descriptor(
            "<rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>",
            "<rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType>",
        )
        .edit_descriptor(
            "<rasd:InstanceID>12</rasd:InstanceID>\n        <rasd:Parent>3</rasd:Parent>",
            "<rasd:InstanceID>12</rasd:InstanceID>\n        <rasd:Parent>5</rasd:Parent>",
        )
        .edit_descriptor(
            "<rasd:InstanceID>13</rasd:InstanceID>\n        <rasd:Parent>3</rasd:Parent>",
            "<rasd:InstanceID>13</rasd:InstanceID>\n        <rasd:Parent>6</rasd:Parent>",
        )
        .edit_descriptor(
            "<rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>",
            "<rasd:Address>00:50:56:01:02:03</rasd:Address><rasd:ResourceSubType>E1000</rasd:ResourceSubType>",
        )
        .edit_descriptor(
            "<rasd:VirtualQuantity>2</rasd:VirtualQuantity>",
            &format!("<rasd:VirtualQuantity>4</rasd:VirtualQuantity><vmw:CoresPerSocket xmlns:vmw=\"{VMW}\" ovf:required=\"false\">2</vmw:CoresPerSocket>"),
        )
        .edit_descriptor("</DiskSection>", "  <Disk ovf:capacity=\"1048576\" ovf:diskId=\"blank1\"/>\n  </DiskSection>")
        .edit_descriptor("\n    </VirtualHardwareSection>", MORE_ITEMS)
        .build();
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &["ro"]);
    let deploy = m.path("vm/deploy");
    validate(&deploy.join("libvirt.xml"));
    let xml = fs::read_to_string(deploy.join("libvirt.xml")).unwrap();
    let flat = flat_disks(&m);
    assert_eq!(flat.len(), 3, "{flat:?}");
    let mnt = m.dir.canonicalize().unwrap();
    let iso = format!("{}/vms/several/deploy/ovf-env.iso", mnt.display());
    for want in [
        "<os firmware='efi'>",
        "<type arch='x86_64' machine='pc'>hvm</type>",
        "<vcpu placement='static'>4</vcpu>",
        "<topology sockets='2' cores='2' threads='1'/>",
        // EFI: the PVSCSI adapter is virtio-scsi (OVMF has no PVSCSI driver).
        "<controller type='scsi' index='0' model='virtio-scsi'/>",
        "EFI firmware (OVMF) has no driver for the pvscsi",
        "<controller type='sata' index='0'/>",
        "<controller type='ide' index='0'/>",
        "<target dev='sda' bus='scsi'/>",
        // Disk 2 (AddressOnParent 1) on the IDE primary channel as slave, the CD-ROM
        // (AddressOnParent 0) as master.
        "<target dev='hda' bus='ide'/>",
        "<target dev='hdb' bus='ide'/>",
        "<address type='drive' controller='0' bus='0' target='0' unit='1'/>",
        "<target dev='sdb' bus='sata'/>",
        &format!("<source file='{iso}'/>"),
        "<model type='e1000'/>",
        "<model type='e1000e'/>",
        "<model type='pcnet'/>",
        "<mac address='00:50:56:01:02:03'/>",
        "<mac address='00:50:56:01:02:04'/>",
        "<model type='vga'/>",
        "blank1",
        "sound",
        "usb controller",
        "floppy",
        "ResourceType 99",
        "not a unicast MAC",
    ] {
        assert!(xml.contains(want), "libvirt.xml lacks {want}:\n{xml}");
    }
    assert_eq!(xml.matches("<transient/>").count(), 3, "{xml}");
    assert_eq!(xml.matches("<disk ").count(), 4, "{xml}");
    assert!(
        !xml.contains("Floppy -->"),
        "a comment closed early:\n{xml}"
    );

    let script = deploy.join("qemu.sh");
    sh_syntax_ok(&script);
    let text = fs::read_to_string(&script).unwrap();
    assert!(text.contains("# - item \"24\" (\"Blank disk\")"), "{text}");
    // EFI: the firmware images come from the environment; the variable store is a
    // temporary copy, removed when qemu exits.
    let fw = tempdir();
    let code = fw.path().join("CODE, 1.fd");
    let vars = fw.path().join("VARS.fd");
    fs::write(&code, b"code").unwrap();
    fs::write(&vars, b"vars").unwrap();
    let vars_dir = fw.path().join("tmp");
    fs::create_dir(&vars_dir).unwrap();
    let argv = fake_qemu_argv(
        &script,
        &[
            ("OVAFS_ACCEL", "kvm"),
            ("OVAFS_OVMF_CODE", code.to_str().unwrap()),
            ("OVAFS_OVMF_VARS", vars.to_str().unwrap()),
            ("TMPDIR", vars_dir.to_str().unwrap()),
        ],
        &[],
    );
    assert_eq!(values_of(&argv, "-machine"), ["pc"]);
    assert_eq!(values_of(&argv, "-accel"), ["kvm"]);
    assert_eq!(values_of(&argv, "-cpu"), ["host"]);
    assert_eq!(
        values_of(&argv, "-smp"),
        ["cpus=4,sockets=2,cores=2,threads=1"]
    );
    let drives = values_of(&argv, "-drive");
    assert_eq!(
        drives[0],
        format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={}",
            code.to_str().unwrap().replace(',', ",,")
        )
    );
    assert!(
        drives[1].starts_with(&format!(
            "if=pflash,format=raw,unit=1,file={}/ovafs-efivars.",
            vars_dir.display()
        )),
        "{drives:?}"
    );
    assert_eq!(
        fs::read_dir(&vars_dir).unwrap().count(),
        0,
        "the variable store copy is removed"
    );
    let f = |i: usize| flat[i].to_str().unwrap().replace(',', ",,");
    assert_eq!(
        &drives[2..],
        [
            format!("file={},format=raw,if=none,id=drive0,snapshot=on", f(0)),
            format!("file={},format=raw,if=none,id=drive1,snapshot=on", f(1)),
            format!("file={},format=raw,if=none,id=drive2,snapshot=on", f(2)),
            format!(
                "file={},format=raw,if=none,id=drive3,media=cdrom,readonly=on",
                iso
            ),
        ]
    );
    assert_eq!(
        values_of(&argv, "-device"),
        [
            "virtio-scsi-pci,id=scsi0",
            "ich9-ahci,id=sata0",
            "scsi-hd,drive=drive0,bus=scsi0.0,channel=0,scsi-id=0,lun=0,bootindex=1",
            "ide-hd,drive=drive1,bus=ide.0,unit=1",
            "ide-hd,drive=drive2,bus=sata0.2",
            "ide-cd,drive=drive3,bus=ide.0,unit=0",
            "e1000,netdev=net0,mac=00:50:56:01:02:03",
            "e1000e,netdev=net1,mac=00:50:56:01:02:04",
            "pcnet,netdev=net2",
        ]
    );
    assert_eq!(values_of(&argv, "-vga"), ["std"]);
    m.umount();
}

#[test]
fn hostile_names_reach_qemu_intact_and_stay_escaped_in_xml() {
    let tmp = tempdir();
    let vmdk = small_vmdk(tmp.path(), "d'isk $(touch PWNED) `id`, \"x\" &amp");
    let id = "sys'q$(touch PWNED)`id`,\"&<>";
    let ova = OvaBuilder::new(&tmp.path().join("pkg"), "hostile")
        .disk(&vmdk, 4 << 20, STREAM)
        .edit_descriptor(
            "<VirtualSystem ovf:id=\"hostile\">",
            "<VirtualSystem ovf:id=\"sys'q$(touch PWNED)`id`,&quot;&amp;&lt;&gt;\">",
        )
        .edit_descriptor(
            "<Name>hostile</Name>",
            "<Name>it's $(touch PWNED) `id`\n&lt;b&gt; --&gt;</Name>",
        )
        .build();
    let mnt = tmp.path().join("m n't $x `y`, z");
    let m = Mount::ok(&ova, &mnt, &[]);
    let vm = only_vm(&m);
    let deploy = vm.join("deploy");
    let xml_path = deploy.join("libvirt.xml");
    validate(&xml_path);
    let xml = fs::read_to_string(&xml_path).unwrap();
    let name = ovafs::deploy::launch::domain_name("it's $(touch PWNED) `id`\n<b> -->");
    assert_eq!(name, "it_s___touch_PWNED___id___b__--_");
    assert!(xml.contains(&format!("<name>{name}</name>")), "{xml}");
    // xmllint (libxml2, virt-xml-validate's parser) reads the paths back exactly.
    let flat = flat_disks(&m);
    assert_eq!(flat.len(), 1);
    let canon = mnt.canonicalize().unwrap();
    let folder = vm.file_name().unwrap().to_str().unwrap().to_string();
    assert!(folder.contains(id) || folder.contains("sys'q"), "{folder}");
    let iso = format!("{}/vms/{folder}/deploy/ovf-env.iso", canon.display());
    let out = run_ok(
        Command::new(tool("xmllint"))
            .arg("--xpath")
            .arg("//disk/source/@file")
            .arg(&xml_path),
    );
    let got = String::from_utf8(out.stdout).unwrap();
    let want = |p: &str| {
        format!(
            " file=\"{}\"",
            p.replace('&', "&amp;")
                .replace('"', "&quot;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        )
    };
    assert!(got.contains(&want(flat[0].to_str().unwrap())), "{got}");
    assert!(got.contains(&want(&iso)), "{got}");

    let script = deploy.join("qemu.sh");
    sh_syntax_ok(&script);
    let argv = fake_qemu_argv(
        &script,
        &[("OVAFS_ACCEL", "tcg")],
        &["-m", "4096", "a 'b' $c"],
    );
    assert_eq!(values_of(&argv, "-name"), [format!("guest={name}")]);
    assert_eq!(
        values_of(&argv, "-drive"),
        [
            format!(
                "file={},format=raw,if=none,id=drive0",
                flat[0].to_str().unwrap().replace(',', ",,")
            ),
            format!(
                "file={},format=raw,if=none,id=drive1,media=cdrom,readonly=on",
                iso.replace(',', ",,")
            ),
        ]
    );
    // The script's arguments come last, unchanged.
    assert_eq!(&argv[argv.len() - 3..], ["-m", "4096", "a 'b' $c"]);
    m.umount();
}

#[test]
fn the_accelerator_follows_dev_kvm_when_the_script_runs() {
    let tmp = tempdir();
    let vmdk = small_vmdk(tmp.path(), "disk1");
    let ova = OvaBuilder::new(&tmp.path().join("pkg"), "accel")
        .disk(&vmdk, 4 << 20, STREAM)
        .build();
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    let script = m.path("vm/deploy/qemu.sh");
    let usable = sh("[ -r /dev/kvm ] && [ -w /dev/kvm ]").status.success();
    let argv = fake_qemu_argv(&script, &[], &[]);
    let (accel, cpu) = if usable {
        ("kvm", "host")
    } else {
        ("tcg", "max")
    };
    assert_eq!(values_of(&argv, "-accel"), [accel]);
    assert_eq!(values_of(&argv, "-cpu"), [cpu]);
    assert_eq!(
        values_of(
            &fake_qemu_argv(&script, &[("OVAFS_ACCEL", "tcg")], &[]),
            "-accel"
        ),
        ["tcg"]
    );
    // The file does not depend on the host: its bytes name no accelerator.
    let text = fs::read_to_string(&script).unwrap();
    assert!(text.contains("-accel \"$accel\""), "{text}");
    m.umount();
}

/// An empty 64 MiB FAT image file `name` in `dir`, made by mkfs.vfat (no partition table).
fn fat_image(dir: &Path, name: &str) -> PathBuf {
    let img = dir.join(name);
    let mkfs = ["/usr/sbin/mkfs.vfat", "/sbin/mkfs.vfat"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| tool("mkfs.vfat"));
    run_ok(
        Command::new(mkfs)
            .arg("-C")
            .arg(&img)
            .arg((64u32 << 10).to_string()),
    );
    img
}

/// A syslinux.cfg in `dir` booting `kernel_path` with `initrd_path` and `append`.
fn syslinux_cfg(dir: &Path, kernel_path: &str, initrd_path: &str, append: &str) -> PathBuf {
    let cfg = dir.join("syslinux.cfg");
    fs::write(
        &cfg,
        format!("DEFAULT linux\nPROMPT 0\nTIMEOUT 0\nLABEL linux\n  KERNEL {kernel_path}\n  INITRD {initrd_path}\n  APPEND {append}\n"),
    )
    .unwrap();
    cfg
}

/// Copies each (source, name) into the FAT image `img` with mcopy.
fn mcopy_into(img: &Path, files: &[(&Path, &str)]) {
    for (src, name) in files {
        run_ok(
            Command::new(tool("mcopy"))
                .arg("-i")
                .arg(img)
                .arg(src)
                .arg(format!("::{name}")),
        );
    }
}

/// A raw FAT image that SeaBIOS boots with syslinux into `kernel` and `initrd`, with
/// `append` as the kernel command line. No partition table: the FAT boot sector
/// (syslinux's) is the disk's first sector.
fn syslinux_disk(dir: &Path, kernel: &Path, initrd: &Path, append: &str) -> PathBuf {
    let img = fat_image(dir, "boot.img");
    let cfg = syslinux_cfg(dir, "vmlinuz", "initrd", append);
    mcopy_into(
        &img,
        &[
            (kernel, "vmlinuz"),
            (initrd, "initrd"),
            (&cfg, "syslinux.cfg"),
        ],
    );
    run_ok(Command::new(tool("syslinux")).arg("--install").arg(&img));
    img
}

/// Runs `timeout 180 sh SCRIPT` (a mount's qemu.sh, nothing added) with TCG, or KVM when
/// `OVAFS_GUEST_ACCEL=kvm` as for the other guest tests, and `env` applied to the command;
/// asserts it exits 0 and returns the serial console (its standard output).
fn boot_with_qemu_sh(script: &Path, what: &str, env: impl FnOnce(&mut Command)) -> String {
    let accel = match std::env::var("OVAFS_GUEST_ACCEL").as_deref() {
        Ok("kvm") => "kvm",
        _ => "tcg",
    };
    let mut cmd = Command::new(tool("timeout"));
    cmd.arg("180")
        .arg(tool("sh"))
        .arg(script)
        .env("OVAFS_ACCEL", accel)
        .stdin(Stdio::null());
    env(&mut cmd);
    let started = std::time::Instant::now();
    let out = cmd.output().unwrap();
    let console = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    eprintln!(
        "qemu.sh {what} boot ({accel}): {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "qemu.sh exited {}:\n{console}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    console
}

#[test]
fn qemu_boots_the_appliance_with_the_exact_command_of_qemu_sh() {
    let guest = Guest::build();
    let tmp = tempdir();
    let initrd = tmp.path().join("initrd");
    guest.initrd_with_script(
        "echo launch-marker\n\
         grep -c ^processor /proc/cpuinfo\n\
         grep MemTotal /proc/meminfo\n\
         for d in /sys/bus/pci/devices/*; do echo pci $(cat $d/vendor):$(cat $d/device); done\n\
         n=0; while [ ! -b /dev/sr0 ] && [ $n -lt 250 ]; do usleep 20000; n=$((n + 1)); done\n\
         mkdir -p /cd && mount -t iso9660 -o ro /dev/sr0 /cd\n\
         grep -o 'oe:key=\"hostname\" oe:value=\"[^\"]*\"' /cd/ovf-env.xml\n",
        tmp.path(),
        &initrd,
    );
    let img = syslinux_disk(
        tmp.path(),
        &guest.kernel,
        &initrd,
        "console=ttyS0 quiet panic=-1 mitigations=off tsc=reliable no_timer_check ovafs.root=none \
         ovafs.modules=ata_piix,sr_mod,isofs",
    );
    let vmdk = tmp.path().join("boot.vmdk");
    to_stream_vmdk(&img, &vmdk);
    // The sample has a property, so deploy/ovf-env.iso goes into the CD-ROM drive added here
    // on an IDE controller (the test kernel has IDE and CD-ROM drivers, no AHCI), which also
    // makes the machine an i440fx.
    let ova = OvaBuilder::new(&tmp.path().join("pkg"), "bootable")
        .disk(&vmdk, 64 << 20, STREAM)
        .edit_descriptor(
            "\n    </VirtualHardwareSection>",
            "\n      <Item>\n        <rasd:Address>1</rasd:Address>\n        <rasd:ElementName>IDE 1</rasd:ElementName>\n        <rasd:InstanceID>90</rasd:InstanceID>\n        <rasd:ResourceType>5</rasd:ResourceType>\n      </Item>\n      <Item ovf:required=\"false\">\n        <rasd:AddressOnParent>0</rasd:AddressOnParent>\n        <rasd:ElementName>CD-ROM 1</rasd:ElementName>\n        <rasd:InstanceID>91</rasd:InstanceID>\n        <rasd:Parent>90</rasd:Parent>\n        <rasd:ResourceType>15</rasd:ResourceType>\n      </Item>\n    </VirtualHardwareSection>",
        )
        .build();
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &["rw"]);
    // The guest reads the property as edited through the mount.
    fs::write(m.path("vm/properties/hostname"), "edge-7\n").unwrap();
    let console = boot_with_qemu_sh(&m.path("vm/deploy/qemu.sh"), "BIOS", |_| {});
    let body = console
        .split("@@ovafs-guest-begin@@\n")
        .nth(1)
        .unwrap_or_else(|| panic!("the guest did not start its script:\n{console}"));
    assert!(body.starts_with("launch-marker\n2\n"), "{console}");
    let mem_kb: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no MemTotal:\n{console}"));
    assert!(
        (900_000..=1_048_576).contains(&mem_kb),
        "memory {mem_kb} kB"
    );
    // The descriptor's LSI Logic SCSI controller and VmxNet3 adapter, on i440fx (IDE).
    for (dev, what) in [
        ("pci 0x1000:0x0012", "LSI 53C895A"),
        ("pci 0x15ad:0x07b0", "vmxnet3"),
        ("pci 0x8086:0x1237", "i440fx host bridge"),
    ] {
        assert!(body.contains(dev), "no {what} ({dev}):\n{console}");
    }
    // The environment ISO in the CD-ROM drive, with the value edited through the mount.
    assert!(
        body.contains("oe:key=\"hostname\" oe:value=\"edge-7\""),
        "the guest did not read the edited property from its CD-ROM:\n{console}"
    );
    assert!(body.contains("@@ovafs-guest-end rc=0@@"), "{console}");
    m.umount();
}

/// Every `vms/*/deploy/libvirt.xml` of a mount: read, validated; every qemu.sh passes sh -n.
fn check_mount(m: &Mount, key: &str) -> usize {
    let mut n = 0;
    for e in fs::read_dir(m.path("vms")).unwrap() {
        let deploy = e.unwrap().path().join("deploy");
        let xml = deploy.join("libvirt.xml");
        if !xml.exists() {
            continue; // a collection
        }
        let text =
            fs::read_to_string(&xml).unwrap_or_else(|e| panic!("{key}: {}: {e}", xml.display()));
        validate_text(&text, key);
        sh_syntax_ok(&deploy.join("qemu.sh"));
        n += 1;
    }
    n
}

#[test]
fn every_corpus_libvirt_xml_validates() {
    let Some(corpus) = corpus_dir("launch files corpus test") else {
        return;
    };
    let tmp = tempdir();
    let mut files = Vec::new();
    let mut stack = vec![corpus.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "ova" || x == "ovf") {
                files.push(p);
            }
        }
    }
    files.sort();
    let (mut mounted, mut domains) = (0, 0);
    for (i, f) in files.iter().enumerate() {
        let key = f
            .strip_prefix(&corpus)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if f.extension().is_some_and(|x| x == "ova") {
            match Mount::new(f, &tmp.path().join(format!("m{i}")), &["ro"]) {
                Ok(m) => {
                    domains += check_mount(&m, &key);
                    mounted += 1;
                    m.umount();
                }
                Err(e) => eprintln!("{key}: refused ({}), no launch files", e.trim()),
            }
            continue;
        }
        // A loose descriptor: its files through the library, each disk "shown".
        let bytes = fs::read(f).unwrap();
        let desc = match ovafs::ovf::parse_descriptor(&bytes) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("{key}: not parseable ({e}), skipped");
                continue;
            }
        };
        let ctx = ovafs::deploy::DeployContext {
            mountpoint: PathBuf::from("/mnt/corpus"),
            disks: desc
                .disks
                .iter()
                .map(|d| ovafs::deploy::FlatDiskPath {
                    disk_id: d.disk_id.value.clone(),
                    path: format!("disks/{}.raw", d.disk_id.value),
                })
                .collect(),
            configuration: None,
            writable_disks: false,
        };
        for e in ovafs::deploy::tree(&desc) {
            if !e.path.ends_with("/libvirt.xml") {
                continue;
            }
            let bytes = ovafs::deploy::read(&desc, &e.path, &ctx)
                .unwrap()
                .unwrap_or_else(|err| panic!("{key}: {}: {err}", e.path));
            validate_text(&String::from_utf8(bytes).unwrap(), &key);
            domains += 1;
        }
    }
    eprintln!("{domains} libvirt domains validated ({mounted} OVAs mounted)");
    assert!(mounted >= 6, "only {mounted} corpus OVAs mounted");
    assert!(domains >= 30, "only {domains} domains validated");
}

#[test]
fn man_page_carries_the_generated_launch_files_section() {
    let man_path = concat!(env!("CARGO_MANIFEST_DIR"), "/man/ovafs.1");
    let mut man = fs::read_to_string(man_path).unwrap();
    let section = ovafs::deploy::launch::man_section();
    if std::env::var_os("OVAFS_REGENERATE_MAN").is_some() {
        // Replace the section (up to the next .SH), or put it before VERIFY.
        man = match man.find(".SH LAUNCH FILES\n") {
            Some(start) => {
                let end = man[start + 1..]
                    .find("\n.SH ")
                    .map(|k| start + 1 + k + 1)
                    .unwrap_or(man.len());
                format!("{}{section}{}", &man[..start], &man[end..])
            }
            None => {
                let at = man.find(".SH VERIFY\n").unwrap_or(man.len());
                format!("{}{section}{}", &man[..at], &man[at..])
            }
        };
        fs::write(man_path, &man).unwrap();
    }
    assert!(
        man.contains(&section),
        "man/ovafs.1 is out of date: run this test with OVAFS_REGENERATE_MAN=1"
    );
}

#[test]
fn the_deployed_configuration_chooses_the_hardware() {
    let tmp = tempdir();
    let vmdk = small_vmdk(tmp.path(), "disk1");
    let ova = OvaBuilder::new(&tmp.path().join("pkg"), "dep")
        .disk(&vmdk, 4 << 20, STREAM)
        .edit_descriptor(
            "  <VirtualSystem ovf:id=\"dep\">",
            "  <DeploymentOptionSection>\n    <Info>Sizes</Info>\n    <Configuration ovf:default=\"true\" ovf:id=\"small\">\n      <Label>Small</Label>\n      <Description>Small</Description>\n    </Configuration>\n    <Configuration ovf:id=\"big\">\n      <Label>Big</Label>\n      <Description>Big</Description>\n    </Configuration>\n  </DeploymentOptionSection>\n  <VirtualSystem ovf:id=\"dep\">",
        )
        .edit_descriptor(
            "<rasd:VirtualQuantity>2</rasd:VirtualQuantity>\n      </Item>",
            &format!(
                "<rasd:VirtualQuantity>2</rasd:VirtualQuantity>\n      </Item>\n      <Item ovf:configuration=\"big\">\n        <rasd:InstanceID>1</rasd:InstanceID>\n        <rasd:ResourceType>3</rasd:ResourceType>\n        <rasd:VirtualQuantity>8</rasd:VirtualQuantity>\n        <vmw:CoresPerSocket xmlns:vmw=\"{VMW}\" ovf:required=\"false\">4</vmw:CoresPerSocket>\n      </Item>"
            ),
        )
        .build();
    for (opts, vcpus, topology) in [
        (&[][..], "2", "sockets='2' cores='1'"),
        (&["deployment=small"][..], "2", "sockets='2' cores='1'"),
        (&["deployment=big"][..], "8", "sockets='2' cores='4'"),
    ] {
        let m = Mount::ok(&ova, &tmp.path().join("mnt"), opts);
        let xml = fs::read_to_string(m.path("vm/deploy/libvirt.xml")).unwrap();
        validate(&m.path("vm/deploy/libvirt.xml"));
        assert!(
            xml.contains(&format!("<vcpu placement='static'>{vcpus}</vcpu>")),
            "{opts:?}:\n{xml}"
        );
        assert!(
            xml.contains(&format!("<topology {topology} threads='1'/>")),
            "{opts:?}:\n{xml}"
        );
        let config = opts
            .first()
            .map_or("small", |o| o.trim_start_matches("deployment="));
        assert!(
            xml.contains(&format!("deployment configuration \"{config}\"")),
            "{opts:?}:\n{xml}"
        );
        m.umount();
    }
}

#[test]
fn a_line_break_in_a_path_reaches_qemu_and_fails_libvirt_xml_cleanly() {
    let tmp = tempdir();
    let vmdk = small_vmdk(tmp.path(), "disk1");
    let ova = OvaBuilder::new(&tmp.path().join("pkg"), "nl")
        .disk(&vmdk, 4 << 20, STREAM)
        .edit_descriptor(
            "<VirtualSystem ovf:id=\"nl\">",
            "<VirtualSystem ovf:id=\"a&#10;b'$(touch PWNED)\">",
        )
        .build();
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    let vm = only_vm(&m);
    let folder = vm.file_name().unwrap().to_str().unwrap().to_string();
    assert!(folder.contains('\n'), "{folder:?}");
    // libvirt's schema cannot take the ISO's path: the read fails (EIO), it is not
    // written out wrong.
    let err = fs::read_to_string(vm.join("deploy/libvirt.xml")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let script = vm.join("deploy/qemu.sh");
    sh_syntax_ok(&script);
    let argv = fake_qemu_argv(&script, &[("OVAFS_ACCEL", "tcg")], &[]);
    let iso = format!(
        "{}/vms/{folder}/deploy/ovf-env.iso",
        m.dir.canonicalize().unwrap().display()
    );
    assert_eq!(
        values_of(&argv, "-drive")[1],
        format!("file={iso},format=raw,if=none,id=drive1,media=cdrom,readonly=on")
    );
    m.umount();
}

/// A raw FAT image of 64 MiB that OVMF boots from its removable-media path
/// (`EFI/BOOT/BOOTX64.EFI`, syslinux's EFI loader) into `kernel` and `initrd`.
fn syslinux_efi_disk(dir: &Path, kernel: &Path, initrd: &Path, append: &str) -> PathBuf {
    let img = fat_image(dir, "efi.img");
    let loader = Path::new("/usr/lib/SYSLINUX.EFI/efi64/syslinux.efi");
    let ldlinux = Path::new("/usr/lib/syslinux/modules/efi64/ldlinux.e64");
    for p in [loader, ldlinux] {
        assert!(
            p.is_file(),
            "{} is missing: install syslinux-efi and syslinux-common",
            p.display()
        );
    }
    let cfg = syslinux_cfg(dir, "/vmlinuz", "/initrd", append);
    run_ok(
        Command::new(tool("mmd"))
            .arg("-i")
            .arg(&img)
            .arg("::EFI")
            .arg("::EFI/BOOT"),
    );
    mcopy_into(
        &img,
        &[
            (loader, "EFI/BOOT/BOOTX64.EFI"),
            (ldlinux, "EFI/BOOT/ldlinux.e64"),
            (&cfg, "EFI/BOOT/syslinux.cfg"),
            (kernel, "vmlinuz"),
            (initrd, "initrd"),
        ],
    );
    img
}

#[test]
fn qemu_sh_boots_an_efi_appliance_with_ovmf() {
    let ovmf = Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd");
    assert!(
        ovmf.is_file(),
        "{} is missing: install ovmf",
        ovmf.display()
    );
    let guest = Guest::build();
    let tmp = tempdir();
    let initrd = tmp.path().join("initrd");
    guest.initrd_with_script(
        "echo efi-marker\nls /sys/firmware/efi >/dev/null && echo efi-firmware\n",
        tmp.path(),
        &initrd,
    );
    let img = syslinux_efi_disk(
        tmp.path(),
        &guest.kernel,
        &initrd,
        "console=ttyS0 quiet panic=-1 mitigations=off tsc=reliable no_timer_check ovafs.root=none",
    );
    let vmdk = tmp.path().join("efi.vmdk");
    to_stream_vmdk(&img, &vmdk);
    // An AHCI controller (OVMF has no driver for the LSI 53C895A) and VMware's EFI switch.
    let ova = OvaBuilder::new(&tmp.path().join("pkg"), "efi")
        .disk(&vmdk, 64 << 20, STREAM)
        .edit_descriptor(
            "<rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>\n        <rasd:ResourceType>6</rasd:ResourceType>",
            "<rasd:ResourceSubType>AHCI</rasd:ResourceSubType>\n        <rasd:ResourceType>20</rasd:ResourceType>",
        )
        .edit_descriptor(
            "<Property ovf:key=\"hostname\" ovf:type=\"string\" ovf:userConfigurable=\"true\" ovf:value=\"sample\">\n        <Label>Host name</Label>\n      </Property>",
            "",
        )
        .edit_descriptor(
            "\n    </VirtualHardwareSection>",
            &format!("\n      <vmw:Config xmlns:vmw=\"{VMW}\" ovf:required=\"false\" vmw:key=\"firmware\" vmw:value=\"efi\"/>\n    </VirtualHardwareSection>"),
        )
        .build();
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &["ro"]);
    let xml = m.path("vm/deploy/libvirt.xml");
    validate(&xml);
    assert!(
        fs::read_to_string(&xml)
            .unwrap()
            .contains("<os firmware='efi'>")
    );
    let vars_dir = tmp.path().join("vars");
    fs::create_dir(&vars_dir).unwrap();
    let console = boot_with_qemu_sh(&m.path("vm/deploy/qemu.sh"), "EFI", |c| {
        c.env("TMPDIR", &vars_dir)
            .env_remove("OVAFS_OVMF_CODE")
            .env_remove("OVAFS_OVMF_VARS");
    });
    assert!(
        console
            .contains("@@ovafs-guest-begin@@\nefi-marker\nefi-firmware\n@@ovafs-guest-end rc=0@@"),
        "{console}"
    );
    assert_eq!(
        fs::read_dir(&vars_dir).unwrap().count(),
        0,
        "the EFI variable copy is removed"
    );
    m.umount();
}
