//! Every OVA and OVF of the shared corpus (`$OVAFS_CORPUS`, read in place) opens, or is
//! refused with the kind its SOURCES.md entry predicts.
//!
//! Contents:
//! - `corpus_ovas`: each `.ova` through `package::open`.
//! - `corpus_descriptors`: each `.ovf` through `ovf::parse` on its bytes (most of them name
//!   disks that are not in the corpus), and the complete ones also through `package::open`
//!   as unpacked packages.
//! - Every `.ova`/`.ovf` found must have an entry here, so a corpus that grows is noticed.
//!
//! Without `OVAFS_CORPUS` the tests print a skip line and pass, except in CI (`CI=true`),
//! where they fail.

mod common;

use std::path::Path;

use ovafs::archive::TarError;
use ovafs::error::{Error, Result};
use ovafs::ovf::{Descriptor, HostResourceKind, OvfError, OvfVersion};
use ovafs::package::{Encoding, FileLocation, Package, PackageError, SourceKind};

/// Every `.ova`, `.ovf` and `.ovf.expected` file one folder down, relative, sorted.
fn corpus_files(root: &Path, suffixes: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(root).expect("corpus folder") {
        let dir = dir.expect("entry").path();
        if !dir.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&dir).expect("corpus sub-folder") {
            let p = f.expect("entry").path();
            let rel = p
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            if suffixes.iter().any(|s| rel.ends_with(s)) {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

fn pkg(e: &Error) -> &PackageError {
    match e.layer_error() {
        Some(p) => p,
        None => panic!("expected a package error, got {:?}: {e}", e.kind()),
    }
}

fn ovf(e: &Error) -> &OvfError {
    match e.layer_error() {
        Some(o) => o,
        None => panic!("expected an OVF error, got {:?}: {e}", e.kind()),
    }
}

fn opened(r: Result<Package>) -> Package {
    r.unwrap_or_else(|e| panic!("should open: {e}"))
}

fn refused<T>(r: Result<T>) -> Error {
    match r {
        Ok(_) => panic!("should be refused"),
        Err(e) => e,
    }
}

fn parsed(r: Result<Descriptor>) -> Descriptor {
    r.unwrap_or_else(|e| panic!("should parse: {e}"))
}

/// The ovftool-made VirtualBox test OVAs: descriptor, manifest, optional certificate, disks.
fn ovftool_ova(p: &Package, cert: bool, disks: usize, encoding: Encoding) {
    assert_eq!(p.kind, SourceKind::Ova);
    assert_eq!(p.descriptor_member, 0);
    assert_eq!(p.manifest_member, Some(1));
    assert_eq!(p.certificate_member.is_some(), cert);
    assert_eq!(p.disks.len(), disks);
    for d in &p.disks {
        assert_eq!(d.encoding, encoding);
        assert!(d.member.is_some() && d.data.is_some());
        assert!(
            !d.stem.ends_with(".vmdk") && !d.stem.ends_with(".gz"),
            "{}",
            d.stem
        );
    }
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

type OvaCheck = fn(Result<Package>);

const OVAS: &[(&str, OvaCheck)] = &[
    ("virtualbox/tdAppliance1-t1.ova", |r| {
        let p = opened(r);
        ovftool_ova(&p, false, 0, Encoding::Identity);
        assert_eq!(p.members[1].size, 68);
    }),
    ("virtualbox/tdAppliance1-t2-ovftool-4.1.0.ova", |r| {
        let p = opened(r);
        ovftool_ova(&p, false, 1, Encoding::Identity);
        assert_eq!(p.disks[0].data.as_ref().map(|d| d.len()), Some(68096));
        assert_eq!(p.disks[0].stem, "tdAppliance1-t2-ovftool-4.1.0-disk1");
    }),
    ("virtualbox/tdAppliance1-t3-ovftool-4.1.0.ova", |r| {
        let p = opened(r);
        ovftool_ova(&p, false, 1, Encoding::Gzip);
        assert_eq!(p.disks[0].stem, "tdAppliance1-t3-ovftool-4.1.0-disk1");
    }),
    ("virtualbox/tdAppliance1-t4.ova", |r| {
        let p = opened(r);
        ovftool_ova(&p, true, 2, Encoding::Gzip);
        assert_eq!(p.members[2].size, 102_400);
    }),
    ("virtualbox/tdAppliance1-t5.ova", |r| {
        ovftool_ova(&opened(r), true, 1, Encoding::Gzip);
    }),
    ("virtualbox/tdAppliance1-t6-ovftool-4.1.0.ova", |r| {
        let p = opened(r);
        ovftool_ova(&p, true, 1, Encoding::Gzip);
        assert_eq!(p.disks[0].data.as_ref().map(|d| d.len()), Some(105_174));
    }),
    ("virtualbox/tdAppliance1-t7-bad-instance.ova", |r| {
        let p = opened(r);
        ovftool_ova(&p, false, 1, Encoding::Identity);
        assert_eq!(p.members.len(), 4);
        assert_eq!(p.members[3].name, "readme.txt");
        // The header says 0666; the mount never shows more than the OVA file allows.
        let ceiling = ovafs::package::access_ceiling(&std::fs::metadata(&p.path).unwrap());
        assert_eq!(p.members[3].mode, 0o666 & ceiling);
        // The memory item's InstanceID is "%iid%": kept as text.
        assert_eq!(
            p.descriptor.systems[0]
                .memory
                .as_ref()
                .map(|m| m.instance_id.as_str()),
            Some("%iid%")
        );
    }),
    ("govmomi/ttylinux-pc_i486-16.1.ova", |r| {
        let e = refused(r);
        assert!(matches!(
            pkg(&e),
            PackageError::SizeMismatch {
                declared: 10_595_840,
                actual: 1_048_576,
                ..
            }
        ));
    }),
    ("glance/testserver.ova", |r| {
        let p = opened(r);
        assert_eq!(p.manifest_member, None);
        assert_eq!(p.disks.len(), 1);
        assert_eq!(p.disks[0].data.as_ref().map(|d| d.len()), Some(4));
    }),
    ("glance/testserver-bad-ovf.ova", |r| {
        let e = refused(r);
        assert!(matches!(ovf(&e), OvfError::Xml { .. }));
    }),
    ("glance/testserver-no-disk.ova", |r| {
        let e = refused(r);
        assert!(
            matches!(pkg(&e), PackageError::HrefNotFound { href, .. } if href == "testserver-disk1.vmdk")
        );
    }),
    ("glance/testserver-no-ovf.ova", |r| {
        assert!(matches!(pkg(&refused(r)), PackageError::NoDescriptor));
    }),
    ("glance/testserver-not-tar.ova", |r| {
        let e = refused(r);
        assert!(
            matches!(e.layer_error(), Some(TarError::NotTar { .. })),
            "{e}"
        );
    }),
    ("ganeti/ova.ova", |r| {
        // A gzip-compressed tar, read through a GzipReader.
        let p = opened(r);
        assert_eq!(p.archive_compression, Some("gzip"));
        let names: Vec<&str> = p.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["ganeti.ovf", "new_disk.vmdk"]);
        assert_eq!(p.members[1].size, 1_114_624);
        assert_eq!(p.disks.len(), 1);
        assert_eq!(p.disks[0].member, Some(1));
    }),
    ("open-ovf/ourOVF.ova", |r| {
        // Its descriptor has no VirtualSystem at all.
        assert!(matches!(ovf(&refused(r)), OvfError::NoContent));
    }),
];

type OvfCheck = fn(Result<Descriptor>);

const OVFS: &[(&str, OvfCheck)] = &[
    ("cot/csr1000v_2017.ovf", |r| {
        let d = parsed(r);
        assert_eq!(d.configurations.len(), 4);
        let s = &d.systems[0];
        assert_eq!(s.properties.len(), 26);
        assert_eq!(s.nics.len(), 3);
        assert_eq!(d.disks[0].capacity_bytes, Some(1 << 30));
        assert!(s.properties.iter().any(|p| p.qualifiers.is_some()));
    }),
    ("cot/input.ovf", |r| {
        let d = parsed(r);
        assert_eq!(d.files.len(), 3);
        assert_eq!(d.configurations.len(), 3);
        assert_eq!(d.systems[0].properties.len(), 10);
        assert_eq!(
            d.systems[0].hardware[0]
                .transport
                .as_ref()
                .map(|t| t.value.as_str()),
            Some("iso")
        );
    }),
    ("cot/iosv.ovf", |r| {
        let d = parsed(r);
        let blank = d.disk("flash2").expect("flash2");
        assert_eq!(
            (blank.file_ref.as_ref(), blank.capacity_bytes),
            (None, Some(128 << 20))
        );
        assert_eq!(
            d.disks[1].file_ref.as_ref().map(|f| f.value.as_str()),
            Some("vios-adventerprisek9-m.vmdk")
        );
    }),
    ("cot/minimal.ovf", |r| {
        let d = parsed(r);
        assert!(d.files.is_empty() && d.disks.is_empty());
        assert_eq!(d.systems.len(), 1);
    }),
    ("cot/ubuntu.2.0.ovf", |r| {
        let d = parsed(r);
        assert_eq!(d.version, OvfVersion::V2);
        let s = &d.systems[0];
        assert_eq!(s.memory_mib, Some(512));
        assert_eq!(
            s.nics[0].connection.as_ref().map(|c| c.value.as_str()),
            Some("NAT")
        );
        assert_eq!(
            s.nics[0].subtype.as_ref().map(|c| c.value.as_str()),
            Some("E1000")
        );
        assert_eq!(d.files[0].size, None);
        assert_eq!(
            s.disk_items[0]
                .host_resource
                .as_ref()
                .map(|h| h.id.as_str()),
            Some("vmdisk1")
        );
    }),
    ("cot/v0.9.ovf", |r| {
        let d = parsed(r);
        assert_eq!(d.version, OvfVersion::V0_9);
        assert_eq!(d.systems[0].memory_mib, Some(8192));
        assert_eq!(d.systems[0].os.as_ref().map(|o| o.id.value), Some(107));
    }),
    ("govmomi/StudioVappEulaVmEulaOvf.ovf", |r| {
        let d = parsed(r);
        assert_eq!(d.collections.len(), 1);
        let ids: Vec<_> = d.systems.iter().map(|s| s.id.value.as_str()).collect();
        assert_eq!(ids, ["ubuntu8.04", "ubuntu8.04 1"]);
        assert!(d.systems.iter().all(|s| s.path == ["VSC ovfid"]));
        // Fourteen properties are written, one of them inside a comment.
        assert_eq!(d.properties().count(), 13);
    }),
    ("govmomi/disk-capacity-property.ovf", |r| {
        let d = parsed(r);
        assert_eq!(d.disks[0].capacity_bytes, Some(5 << 30));
        assert_eq!(d.disks[0].file_ref, None);
    }),
    ("govmomi/gzip_compression.ovf", |r| {
        let d = parsed(r);
        assert_eq!(
            d.files[0].compression.as_ref().map(|c| c.value.as_str()),
            Some("gzip")
        );
        assert_eq!(d.files[0].size.as_ref().map(|s| s.value), Some(329_197_568));
    }),
    ("govmomi/nested-vapp.ovf", |r| {
        let d = parsed(r);
        assert_eq!(d.systems.len(), 3);
        assert_eq!(d.collections.len(), 3);
        let grand = d.system("grandVm").expect("grandVm");
        assert_eq!(grand.path, ["nestedVapp", "childVapp", "grandVapp"]);
        assert_eq!(
            d.system("nestedRootVm").map(|s| s.path.clone()),
            Some(vec!["nestedVapp".to_string()])
        );
    }),
    ("govmomi/nostalgia-chunkdisk.ovf", |r| {
        let d = parsed(r);
        assert_eq!(
            d.files[0].chunk_size.as_ref().map(|c| c.value),
            Some(7_516_192_768)
        );
    }),
    ("govmomi/nvapp-disks-4-multiple.ovf", |r| {
        let d = parsed(r);
        assert_eq!(d.disks.len(), 4);
        assert!(d.files.iter().all(|f| f.href.value.starts_with("disks/")));
    }),
    ("govmomi/parentDisk.ovf", |r| {
        let d = parsed(r);
        assert_eq!(
            d.disk("vmdisk1")
                .and_then(|x| x.parent_ref.as_ref())
                .map(|p| p.value.as_str()),
            Some("basedisk1")
        );
    }),
    ("govmomi/sunVHW-DiskTypes_invalidUTF.ovf", |r| {
        let d = parsed(r);
        assert_eq!(&d.bytes[..3], &[0xEF, 0xBB, 0xBF]);
        assert_eq!(d.systems.len(), 2);
        assert_eq!(d.disks.len(), 4);
    }),
    ("govmomi/vbox1_0.9.ovf", |r| {
        assert_eq!(parsed(r).version, OvfVersion::V0_9);
    }),
    ("govmomi/\u{865a}\u{62df}\u{673a}.ovf", |r| {
        let d = parsed(r);
        assert_eq!(d.files[0].href.value, "\u{865a}\u{62df}\u{673a}-1.vmdk");
    }),
    ("virtualbox/joomla-1.1.4-ovf.ovf", |r| {
        let d = parsed(r);
        assert_eq!(d.version, OvfVersion::V0_9);
        assert_eq!(d.disks.len(), 2);
        assert_eq!(
            d.disks[0].populated_size.as_ref().map(|p| p.value),
            Some(639_434_752)
        );
    }),
    ("virt-v2v/test-i-ova-chunked-gap.ovf", |r| {
        let d = parsed(r);
        assert_eq!(d.files[0].chunk_size.as_ref().map(|c| c.value), Some(10240));
        assert_eq!(d.files[0].size.as_ref().map(|c| c.value), Some(32768));
    }),
    ("virt-v2v/test-i-ova-gz.ovf", |r| {
        let d = parsed(r);
        assert_eq!(
            d.files[0].compression.as_ref().map(|c| c.value.as_str()),
            Some("gzip")
        );
    }),
    ("virt-v2v/test-i-ova-snapshots.ovf", |r| {
        assert_eq!(
            parsed(r).files[0].size.as_ref().map(|s| s.value),
            Some(12288)
        );
    }),
    ("virt-v2v/test-o-ovirt.ovf.expected", |r| {
        // A template: ovf:size='#SIZE#'.
        let e = refused(r);
        assert!(matches!(
            ovf(&e),
            OvfError::BadValue {
                what: "File/@ovf:size",
                ..
            }
        ));
    }),
    ("open-ovf/ourOVF.ovf", |r| {
        assert!(matches!(ovf(&refused(r)), OvfError::NoContent));
    }),
    ("open-ovf/someOVF.ovf", |r| {
        let d = parsed(r);
        assert_eq!(d.configurations.len(), 3);
        assert_eq!(
            d.default_configuration().map(|c| c.id.value.as_str()),
            Some("Typical")
        );
        let s = &d.systems[0];
        assert_eq!(s.properties.len(), 19);
        // "ovf://disk/lamp", after the DSP0243 1.0 example.
        let h = s.disk_items[0]
            .host_resource
            .as_ref()
            .expect("host resource");
        assert_eq!((h.kind, h.id.as_str()), (HostResourceKind::Disk, "lamp"));
    }),
    ("pve-storage/Win10-Liz.ovf", |r| {
        let d = parsed(r);
        assert_eq!(d.disks[0].capacity_bytes, Some(128 << 30));
        assert_eq!(d.systems[0].memory_mib, Some(6144));
    }),
    ("pve-storage/Win10-Liz_no_default_ns.ovf", |r| {
        // rasd declared on every element: same model as Win10-Liz.ovf.
        let d = parsed(r);
        let s = &d.systems[0];
        assert_eq!(
            (s.cpus.as_ref().map(|c| c.value), s.memory_mib),
            (Some(4), Some(6144))
        );
        assert_eq!(
            s.nics[0].subtype.as_ref().map(|c| c.value.as_str()),
            Some("E1000e")
        );
        assert_eq!(d.disks[0].capacity_bytes, Some(128 << 30));
    }),
    ("pve-storage/XEE.ovf", |r| {
        assert!(matches!(ovf(&refused(r)), OvfError::Dtd { .. }));
    }),
    ("ganeti/gzip_disk.ovf", |r| {
        // The disk item's Parent names a controller that is not there
        // (docs/formats.md §6 rule 12).
        let e = refused(r);
        assert!(matches!(ovf(&e), OvfError::ItemParentUnknown { parent, .. } if parent == "3"));
    }),
    ("ganeti/wrong_manifest.ovf", |r| {
        let d = parsed(r);
        // Ganeti writes Disks without ovf:capacity.
        assert_eq!(d.disks[0].capacity_bytes, None);
    }),
    ("virt-manager/test2.ovf", |r| {
        let d = parsed(r);
        assert!(d.bytes.windows(2).any(|w| w == b"\r\n"));
        assert_eq!(d.files[0].href.value, "w2k3 32bit-disk1.vmdk");
        assert_eq!(d.systems[0].id.value, "w2k3 32bit");
    }),
];

type FolderCheck = fn(Package);

/// Unpacked packages whose files are all in the corpus.
const FOLDERS: &[(&str, FolderCheck)] = &[
    ("cot/input.ovf", |p| {
        let names: Vec<_> = p.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "input.ovf",
                "input.vmdk",
                "input.iso",
                "sample_cfg.txt",
                "input.mf"
            ]
        );
        assert_eq!(p.manifest_member, Some(4));
        assert_eq!(p.disks[0].stem, "input");
    }),
    ("cot/ubuntu.2.0.ovf", |p| {
        assert_eq!(p.manifest_member, Some(2));
        assert_eq!(p.disks[0].stem, "ubuntu.2.0-disk1");
        assert_eq!(p.files[0].location, FileLocation::Member(1));
    }),
    ("cot/csr1000v_2017.ovf", |p| {
        assert_eq!(p.members.len(), 3);
        assert_eq!(p.disks.len(), 1);
    }),
    ("cot/iosv.ovf", |p| {
        let stems: Vec<_> = p.disks.iter().map(|d| d.stem.as_str()).collect();
        assert_eq!(stems, ["flash2", "input"]);
        assert!(p.disks[0].data.is_none());
    }),
    ("cot/v0.9.ovf", |p| assert_eq!(p.disks[0].member, Some(1))),
    ("cot/minimal.ovf", |p| assert_eq!(p.members.len(), 1)),
    ("ganeti/wrong_manifest.ovf", |p| {
        assert_eq!(p.manifest_member, Some(2));
        assert_eq!(p.disks[0].stem, "new_disk");
    }),
    ("govmomi/disk-capacity-property.ovf", |p| {
        assert_eq!(p.disks[0].stem, "vmdisk_data");
        assert!(p.disks[0].member.is_none());
    }),
];

#[test]
fn corpus_ovas() {
    let Some(root) = common::corpus_dir("package corpus test") else {
        return;
    };
    let found = corpus_files(&root, &[".ova"]);
    let listed: Vec<_> = OVAS.iter().map(|(n, _)| n.to_string()).collect();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(found, sorted, "the table must list every corpus OVA");
    for (name, check) in OVAS {
        println!("{name}");
        let r = ovafs::package::open(&root.join(name));
        if let Err(e) = &r {
            println!("  refused: {e}");
        }
        check(r);
    }
}

#[test]
fn corpus_descriptors() {
    let Some(root) = common::corpus_dir("package corpus test") else {
        return;
    };
    let found = corpus_files(&root, &[".ovf", ".ovf.expected"]);
    let mut listed: Vec<_> = OVFS.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed, "the table must list every corpus OVF");
    for (name, check) in OVFS {
        println!("{name}");
        let bytes = std::fs::read(root.join(name)).expect("read");
        let r = ovafs::ovf::parse(&bytes);
        if let Err(e) = &r {
            println!("  refused: {e}");
        }
        check(r);
    }
}

#[test]
fn corpus_unpacked_packages() {
    let Some(root) = common::corpus_dir("package corpus test") else {
        return;
    };
    for (name, check) in FOLDERS {
        println!("{name}");
        let p = ovafs::package::open(&root.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(p.kind, SourceKind::Folder);
        check(p);
    }
}
