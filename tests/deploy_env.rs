//! The OVF environment files of a mount (issue 13 part 1): `vms/ID/deploy/ovf-env.xml` and
//! `ovf-env.iso`, read through real FUSE mounts and judged by independent readers.
//!
//! Contents:
//! - `edited_values_reach_cloud_init`: after `echo edge-7 > vm/properties/hostname`,
//!   cloud-init's own OVF parser (Debian's cloud-init, `DataSourceOVF.get_properties` and
//!   `read_ovf_environment`) sees the edited host name as `local-hostname`, the instance id,
//!   the password, and the default configuration's values; a password property makes both
//!   files readable by the owner only.
//! - `deployment_option_selects_values`: `-o deployment=large` gives the large
//!   configuration's Value and its configuration-only property; an unknown configuration
//!   fails the mount with one line.
//! - `iso_holds_the_same_bytes`: xorriso (`-osirrox on -extract /ovf-env.xml`) and isoinfo
//!   (`-x '/OVF_ENV.XML;1'`) extract exactly the bytes of `ovf-env.xml`; `isoinfo -d` and
//!   blkid show the label `OVF ENV`; cloud-init's `get_ovf_env` finds `ovf-env.xml` in the
//!   ISO's extracted root.
//! - `byte_stable_until_settings_change`: two reads and two mounts give identical ISO bytes,
//!   an edit changes them (and the XML inside).
//! - `hostile_values_round_trip`: a value with `<>&"'`, a tab and line breaks is what
//!   cloud-init's parser returns.
//! - `collection_entities`: a VirtualSystemCollection with two systems: each system sees its
//!   own properties, the collection's not overridden, and one Entity for its sibling (judged
//!   by Python's minidom, namespace-aware); the collection's file has one Entity per child.
//! - `guest_reads_the_cdrom`: the busybox guest boots with the mount's `ovf-env.iso` as its
//!   IDE CD-ROM, mounts `/dev/sr0` (iso9660, Rock Ridge: the listing shows `ovf-env.xml`) and
//!   prints the edited property and the volume identifier read from the device.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::guest::{Boot, Guest, ext4_image};
use common::*;

const STREAM: &str = ovafs::sample::VMDK_STREAM_URI;
/// Debian's python, where the cloud-init package installs its modules (a pyenv `python3`
/// earlier in PATH does not see them).
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

const OPTIONS: &str = r#"  <DeploymentOptionSection>
    <Info>Sizes</Info>
    <Configuration ovf:default="true" ovf:id="small">
      <Label>Small</Label>
      <Description>Small</Description>
    </Configuration>
    <Configuration ovf:id="large">
      <Label>Large</Label>
      <Description>Large</Description>
    </Configuration>
  </DeploymentOptionSection>
"#;

const MORE_PROPS: &str = r#"
      <Property ovf:key="instance-id" ovf:type="string" ovf:value="iid-ovafs-1"/>
      <Property ovf:key="tier" ovf:type="string" ovf:userConfigurable="true" ovf:value="s">
        <Value ovf:configuration="large" ovf:value="l"/>
      </Property>
      <Property ovf:configuration="large" ovf:key="large-only" ovf:type="string" ovf:value="yes"/>
      <Property ovf:key="password" ovf:password="true" ovf:type="string" ovf:userConfigurable="true" ovf:value="s3cret"/>
      <Property ovf:key="motd" ovf:type="string" ovf:userConfigurable="true" ovf:value="hello"/>"#;

/// An OVA with one system `NAME`: a small disk, the configurations above and the
/// properties hostname, instance-id, tier, large-only, password and motd.
fn appliance(dir: &Path, name: &str) -> PathBuf {
    let raw = dir.join(format!("{name}.img"));
    let vmdk = dir.join(format!("{name}-disk1.vmdk"));
    scattered_raw(&raw, 1 << 20, 2, 7);
    to_stream_vmdk(&raw, &vmdk);
    OvaBuilder::new(&dir.join(format!("{name}-pkg")), name)
        .disk(&vmdk, 1 << 20, STREAM)
        .edit_descriptor(
            &format!("  <VirtualSystem ovf:id=\"{name}\">"),
            &format!("{OPTIONS}  <VirtualSystem ovf:id=\"{name}\">"),
        )
        .edit_descriptor(
            "        <Label>Host name</Label>\n      </Property>",
            &format!("        <Label>Host name</Label>\n      </Property>{MORE_PROPS}"),
        )
        .build()
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// cloud-init's view of the environment document at `xml`: `{"props": get_properties(),
/// "md": read_ovf_environment()[0], "cfg": ...[2]}`.
fn cloud_init(xml: &Path) -> serde_json::Value {
    let script = "import json, sys\n\
        from cloudinit.sources import DataSourceOVF as d\n\
        c = open(sys.argv[1]).read()\n\
        md, ud, cfg = d.read_ovf_environment(c)\n\
        print(json.dumps({'props': d.get_properties(c), 'md': md, 'cfg': cfg}))\n";
    python(script, &[xml])
}

/// Runs `script` with Debian's python (cloud-init's modules must be there: it fails the
/// test otherwise) and parses its stdout as JSON.
fn python(script: &str, args: &[&Path]) -> serde_json::Value {
    assert!(
        Path::new(SYSTEM_PYTHON).is_file(),
        "required tool {SYSTEM_PYTHON} is missing: install cloud-init (scripts/test does)"
    );
    let out = Command::new(SYSTEM_PYTHON)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed (is Debian's cloud-init installed? scripts/test installs it):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn edited_values_reach_cloud_init() {
    let tmp = tempdir();
    let ova = appliance(tmp.path(), "edge");
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    let xml = m.path("vm/deploy/ovf-env.xml");
    let before = cloud_init(&xml);
    assert_eq!(before["md"]["local-hostname"], "sample", "{before}");
    fs::write(m.path("vm/properties/hostname"), "edge-7\n").unwrap();
    let v = cloud_init(&xml);
    assert_eq!(v["md"]["local-hostname"], "edge-7", "{v}");
    assert_eq!(v["md"]["instance-id"], "iid-ovafs-1", "{v}");
    assert_eq!(v["cfg"]["password"], "s3cret", "{v}");
    let props = v["props"].as_object().unwrap();
    assert_eq!(props["tier"], "s", "{v}");
    assert_eq!(props["motd"], "hello", "{v}");
    assert!(!props.contains_key("large-only"), "{v}");
    assert_eq!(props.len(), 5, "{v}");
    // The document names the system and the platform.
    let text = read(&xml);
    assert!(text.contains(r#"oe:id="edge""#), "{text}");
    assert!(text.contains("<Kind>ovafs</Kind>"), "{text}");
    // A password property: only the owner may read the files that carry it.
    for f in ["vm/deploy/ovf-env.xml", "vm/deploy/ovf-env.iso"] {
        let mode = fs::metadata(m.path(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{f}: {mode:o}");
    }
    m.umount();
}

#[test]
fn deployment_option_selects_values() {
    let tmp = tempdir();
    let ova = appliance(tmp.path(), "sizes");
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &["deployment=large"]);
    let v = cloud_init(&m.path("vm/deploy/ovf-env.xml"));
    assert_eq!(v["props"]["tier"], "l", "{v}");
    assert_eq!(v["props"]["large-only"], "yes", "{v}");
    m.umount();
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &["deployment=small"]);
    let v = cloud_init(&m.path("vm/deploy/ovf-env.xml"));
    assert_eq!(v["props"]["tier"], "s", "{v}");
    m.umount();

    let err = Mount::new(&ova, &tmp.path().join("mnt2"), &["deployment=huge"]).unwrap_err();
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("huge"), "{err}");
}

#[test]
fn iso_holds_the_same_bytes() {
    let tmp = tempdir();
    let ova = appliance(tmp.path(), "judge");
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    fs::write(m.path("vm/properties/hostname"), "edge-7\n").unwrap();
    let xml = fs::read(m.path("vm/deploy/ovf-env.xml")).unwrap();
    let iso = m.path("vm/deploy/ovf-env.iso");

    let out = tmp.path().join("xorriso.xml");
    run_ok(
        Command::new(tool("xorriso"))
            .arg("-indev")
            .arg(&iso)
            .args(["-osirrox", "on", "-extract", "/ovf-env.xml"])
            .arg(&out),
    );
    assert_eq!(fs::read(&out).unwrap(), xml);

    let got = run_ok(
        Command::new(tool("isoinfo"))
            .arg("-i")
            .arg(&iso)
            .args(["-x", "/OVF_ENV.XML;1"]),
    );
    assert_eq!(got.stdout, xml);
    let d = String::from_utf8(
        run_ok(Command::new(tool("isoinfo")).arg("-d").arg("-i").arg(&iso)).stdout,
    )
    .unwrap();
    assert!(d.contains("Volume id: OVF ENV\n"), "{d}");
    assert!(d.contains("Rock Ridge signatures version 1 found"), "{d}");
    let size = fs::metadata(&iso).unwrap().len();
    assert!(
        d.contains(&format!("Volume size is: {}\n", size / 2048)),
        "{size}: {d}"
    );
    let r = String::from_utf8(
        run_ok(
            Command::new(tool("isoinfo"))
                .args(["-R", "-l", "-i"])
                .arg(&iso),
        )
        .stdout,
    )
    .unwrap();
    assert!(r.contains(" ovf-env.xml"), "{r}");

    let blkid = run_ok(Command::new(ext4::sbin("blkid")).arg(&iso));
    let b = String::from_utf8_lossy(&blkid.stdout);
    assert!(
        b.contains(r#"LABEL="OVF ENV""#) && b.contains(r#"TYPE="iso9660""#),
        "{b}"
    );

    // cloud-init's ISO transport looks in the CD's root with get_ovf_env: give it the
    // ISO's whole root as xorriso extracts it.
    let root = tmp.path().join("iso-root");
    run_ok(
        Command::new(tool("xorriso"))
            .arg("-indev")
            .arg(&iso)
            .args(["-osirrox", "on", "-extract", "/"])
            .arg(&root),
    );
    let script = "import json, sys\n\
        from cloudinit.sources import DataSourceOVF as d\n\
        name, contents = d.get_ovf_env(sys.argv[1])\n\
        print(json.dumps({'name': name, 'props': d.get_properties(contents)}))\n";
    let v = python(script, &[&root]);
    assert_eq!(v["name"], "ovf-env.xml", "{v}");
    assert_eq!(v["props"]["hostname"], "edge-7", "{v}");
    m.umount();
}

#[test]
fn byte_stable_until_settings_change() {
    let tmp = tempdir();
    let ova = appliance(tmp.path(), "stable");
    let dir = tmp.path().join("mnt");
    let m = Mount::ok(&ova, &dir, &[]);
    let iso = m.path("vm/deploy/ovf-env.iso");
    let first = fs::read(&iso).unwrap();
    assert_eq!(fs::read(&iso).unwrap(), first);
    m.umount();
    let m = Mount::ok(&ova, &dir, &[]);
    assert_eq!(
        fs::read(&iso).unwrap(),
        first,
        "a second mount gives other bytes"
    );
    fs::write(m.path("vm/properties/motd"), "changed\n").unwrap();
    let after = fs::read(&iso).unwrap();
    assert_ne!(after, first);
    let xml = fs::read(m.path("vm/deploy/ovf-env.xml")).unwrap();
    assert!(after.windows(xml.len()).any(|w| w == xml.as_slice()));
    assert_eq!(fs::read(&iso).unwrap(), after);
    m.umount();
}

#[test]
fn hostile_values_round_trip() {
    let tmp = tempdir();
    let ova = appliance(tmp.path(), "hostile");
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    let value = "a<b>&amp;\"q\" 'x'\tt\nline 2\n\nline 4";
    fs::write(m.path("vm/properties/motd"), format!("{value}\n")).unwrap();
    let shown = read(&m.path("vm/properties/motd"));
    assert_eq!(
        shown,
        format!("{value}\n"),
        "the settings file keeps the value"
    );
    let v = cloud_init(&m.path("vm/deploy/ovf-env.xml"));
    assert_eq!(v["props"]["motd"], value, "{v}");
    m.umount();
}

/// An OVA whose content is a collection `app` (properties domain, role) of two systems:
/// `web` (the sample system renamed, overriding role) and `db` (property port).
fn collection(dir: &Path) -> PathBuf {
    let raw = dir.join("c.img");
    let vmdk = dir.join("c-disk1.vmdk");
    scattered_raw(&raw, 1 << 20, 2, 9);
    to_stream_vmdk(&raw, &vmdk);
    let open = r#"  <VirtualSystemCollection ovf:id="app">
    <Info>Two systems</Info>
    <ProductSection>
      <Info>Shared</Info>
      <Property ovf:key="domain" ovf:type="string" ovf:value="example.org"/>
      <Property ovf:key="role" ovf:type="string" ovf:value="none"/>
    </ProductSection>
  <VirtualSystem ovf:id="web">"#;
    let close = r#"  </VirtualSystem>
  <VirtualSystem ovf:id="db">
    <Info>Database</Info>
    <ProductSection>
      <Info>db</Info>
      <Property ovf:key="port" ovf:type="uint16" ovf:userConfigurable="true" ovf:value="5432"/>
    </ProductSection>
    <VirtualHardwareSection>
      <Info>hw</Info>
    </VirtualHardwareSection>
  </VirtualSystem>
  </VirtualSystemCollection>
</Envelope>"#;
    OvaBuilder::new(&dir.join("c-pkg"), "c")
        .disk(&vmdk, 1 << 20, STREAM)
        .edit_descriptor("  <VirtualSystem ovf:id=\"c\">", open)
        .edit_descriptor(
            "        <Label>Host name</Label>\n      </Property>",
            "        <Label>Host name</Label>\n      </Property>\n      \
             <Property ovf:key=\"role\" ovf:type=\"string\" ovf:value=\"web\"/>",
        )
        .edit_descriptor("  </VirtualSystem>\n</Envelope>", close)
        .build()
}

/// The environment at `xml` as Python's minidom reads it (namespace-aware): the root id,
/// its PropertySection and each Entity's, as `{"id", "props", "entities": {id: props}}`.
fn entities(xml: &Path) -> serde_json::Value {
    let script = "import json, sys\n\
        from xml.dom import minidom\n\
        NS = 'http://schemas.dmtf.org/ovf/environment/1'\n\
        doc = minidom.parse(sys.argv[1]).documentElement\n\
        assert doc.namespaceURI == NS and doc.localName == 'Environment'\n\
        def props(node):\n\
        \x20   secs = [c for c in node.childNodes if c.localName == 'PropertySection' and c.namespaceURI == NS]\n\
        \x20   assert len(secs) == 1\n\
        \x20   return [[p.getAttributeNS(NS, 'key'), p.getAttributeNS(NS, 'value')] for p in secs[0].childNodes if p.localName == 'Property']\n\
        ents = [[e.getAttributeNS(NS, 'id'), props(e)] for e in doc.childNodes if e.localName == 'Entity' and e.namespaceURI == NS]\n\
        print(json.dumps({'id': doc.getAttributeNS(NS, 'id'), 'props': props(doc), 'entities': ents}))\n";
    python(script, &[xml])
}

#[test]
fn collection_entities() {
    let tmp = tempdir();
    let ova = collection(tmp.path());
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    fs::write(m.path("vms/db/properties/port"), "6543\n").unwrap();
    let web = entities(&m.path("vms/web/deploy/ovf-env.xml"));
    let expected = serde_json::json!({
        "id": "web",
        "props": [["hostname", "sample"], ["role", "web"], ["domain", "example.org"]],
        "entities": [["db", [["port", "6543"], ["domain", "example.org"], ["role", "none"]]]],
    });
    assert_eq!(web, expected);
    let db = entities(&m.path("vms/db/deploy/ovf-env.xml"));
    assert_eq!(db["id"], "db");
    assert_eq!(db["entities"][0][0], "web");
    assert_eq!(db["entities"].as_array().unwrap().len(), 1);
    let app = entities(&m.path("vms/app/deploy/ovf-env.xml"));
    let ids: Vec<&str> = app["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[0].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["web", "db"]);
    assert_eq!(
        app["props"],
        serde_json::json!([["domain", "example.org"], ["role", "none"]])
    );
    // cloud-init reads a member's document too.
    let v = cloud_init(&m.path("vms/web/deploy/ovf-env.xml"));
    assert_eq!(v["props"]["role"], "web", "{v}");
    m.umount();
}

#[test]
fn guest_reads_the_cdrom() {
    let guest = Guest::build();
    let tmp = tempdir();
    let ova = appliance(tmp.path(), "boot");
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    fs::write(m.path("vm/properties/hostname"), "edge-7\n").unwrap();
    let root = tmp.path().join("root.img");
    ext4_image(&root, 8, &[("marker", b"root disk\n")]);
    let iso = m.path("vm/deploy/ovf-env.iso");
    let script = r#"cat marker
n=0; while [ ! -b /dev/sr0 ] && [ $n -lt 250 ]; do usleep 20000; n=$((n + 1)); done
mkdir -p /mnt/env
mount -t iso9660 -o ro /dev/sr0 /mnt/env || exit 3
ls /mnt/env
sed -n 's/.*oe:key="hostname" oe:value="\([^"]*\)".*/hostname=\1/p' /mnt/env/ovf-env.xml
echo "label=[$(dd if=/dev/sr0 bs=2048 skip=16 count=1 2>/dev/null | dd bs=1 skip=40 count=7 2>/dev/null)]"
umount /mnt/env
"#;
    let boot = Boot::new(script)
        .disk(&root, "raw", &["readonly=on"])
        .modules(&["ata_piix", "sr_mod", "isofs"])
        .qemu_args(&[
            "-drive",
            &format!(
                "file={},format=raw,if=ide,media=cdrom,readonly=on",
                path_str(&iso).replace(',', ",,")
            ),
        ]);
    let run = guest.run(&boot);
    let out = run.ok();
    assert!(out.contains("root disk\n"), "{run}");
    assert!(out.contains("ovf-env.xml\n"), "Rock Ridge name: {run}");
    assert!(out.contains("hostname=edge-7\n"), "{run}");
    // The volume identifier the guest's device shows (busybox has no blkid).
    assert!(out.contains("label=[OVF ENV]\n"), "{run}");
    m.umount();
}
