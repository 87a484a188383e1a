//! gzip through real FUSE mounts.
//!
//! Contents:
//! - gzip_disks_match_qemu_and_members_are_byte_exact: an OVA whose Files are compressed by
//!   GNU gzip (`ovf:compression="gzip"`): a qemu-made stream-optimized VMDK and a raw image.
//!   Members vs `tar -xf`, flat images vs `qemu-img convert -O raw` and the raw image,
//!   concurrent random reads of a flat image decoded through gzip.
//! - tar_gz_ova_mounts: the same kind of package packed with `tar -czf` (a gzip-compressed
//!   tar named .ova), one disk compressed again inside it.
//! - corrupt_gzip_disk_is_refused_with_one_line: a CRC-32 mismatch in a gzip disk member.

mod common;

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use common::*;

const STREAM: &str = ovafs::sample::VMDK_STREAM_URI;
const RAW: &str = "http://example.com/raw";

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn gzip_disks_match_qemu_and_members_are_byte_exact() {
    let tmp = tempdir();
    let vmdk_size = 48 << 20;
    let (_, vmdk) = qemu_stream_vmdk(tmp.path(), "sys", vmdk_size, 12, 1);
    let raw_size = (24 << 20) + 7 * 512;
    let raw = tmp.path().join("data.img");
    scattered_raw(&raw, raw_size, 20, 2);
    let ova = OvaBuilder::new(&tmp.path().join("pkg"), "app")
        .gzip_disk(&vmdk, vmdk_size, STREAM)
        .gzip_disk(&raw, raw_size, RAW)
        .build();
    let descriptor = fs::read_to_string(tmp.path().join("pkg/app.ovf")).unwrap();
    assert_eq!(descriptor.matches("ovf:compression=\"gzip\"").count(), 2);
    let extracted = tmp.path().join("x");
    fs::create_dir(&extracted).unwrap();
    tar_extract(&ova, &extracted);

    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    assert_eq!(
        listing(&m.dir),
        [
            ".ovafs",
            "app.mf",
            "app.ovf",
            "data.img.gz",
            "disks",
            "networks",
            "sys.vmdk.gz",
            "vm",
            "vms"
        ]
    );
    for member in ["app.ovf", "app.mf", "sys.vmdk.gz", "data.img.gz"] {
        assert_same_bytes(&m.path(member), &extracted.join(member));
    }
    assert_eq!(
        listing(&m.path("disks")),
        ["data", "data.raw", "sys", "sys.raw"]
    );
    let reference = tmp.path().join("sys.qemu.raw");
    qemu_to_raw(&vmdk, "vmdk", &reference);
    assert_same_bytes(&m.path("disks/sys.raw"), &reference);
    assert_same_bytes(&m.path("disks/data.raw"), &raw);
    concurrent_reads_match(&m.path("disks/data.raw"), &raw, raw_size, 100, 200);
    concurrent_reads_match(&m.path("disks/sys.raw"), &reference, vmdk_size, 100, 200);
    m.umount();
}

#[test]
fn tar_gz_ova_mounts() {
    let tmp = tempdir();
    let vmdk_size = 16 << 20;
    let (_, vmdk) = qemu_stream_vmdk(tmp.path(), "root", vmdk_size, 12, 3);
    let raw_size = 6 << 20;
    let raw = tmp.path().join("swap.img");
    scattered_raw(&raw, raw_size, 8, 4);
    let mut b = OvaBuilder::new(&tmp.path().join("pkg"), "targz")
        .disk(&vmdk, vmdk_size, STREAM)
        .gzip_disk(&raw, raw_size, RAW);
    b.gzip_archive = true;
    let ova = b.build();
    let mut magic = [0u8; 2];
    File::open(&ova)
        .unwrap()
        .read_exact_at(&mut magic, 0)
        .unwrap();
    assert_eq!(magic, [0x1f, 0x8b], "tar -czf wrote no gzip");
    let extracted = tmp.path().join("x");
    fs::create_dir(&extracted).unwrap();
    run_ok(
        Command::new(tool("tar"))
            .arg("-xzf")
            .arg(&ova)
            .arg("-C")
            .arg(&extracted),
    );

    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    assert_eq!(
        listing(&m.dir),
        [
            ".ovafs",
            "disks",
            "networks",
            "root.vmdk",
            "swap.img.gz",
            "targz.mf",
            "targz.ovf",
            "vm",
            "vms"
        ]
    );
    for member in ["targz.ovf", "targz.mf", "root.vmdk", "swap.img.gz"] {
        assert_same_bytes(&m.path(member), &extracted.join(member));
    }
    let reference = tmp.path().join("root.qemu.raw");
    qemu_to_raw(&vmdk, "vmdk", &reference);
    assert_same_bytes(&m.path("disks/root.raw"), &reference);
    assert_same_bytes(&m.path("disks/swap.raw"), &raw);
    concurrent_reads_match(&m.path("disks/root.raw"), &reference, vmdk_size, 100, 200);
    m.umount();
}

#[test]
fn corrupt_gzip_disk_is_refused_with_one_line() {
    let tmp = tempdir();
    let raw = tmp.path().join("bad.img");
    scattered_raw(&raw, 1 << 20, 2, 5);
    let pkg = tmp.path().join("pkg");
    let b = OvaBuilder::new(&pkg, "crc").gzip_disk(&raw, 1 << 20, RAW);
    b.write_package();
    // Flip a bit of the CRC-32 in the trailer, then pack (the manifest no longer matches,
    // which ovafs does not check at mount).
    let gz = pkg.join("bad.img.gz");
    let len = fs::metadata(&gz).unwrap().len();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&gz)
        .unwrap();
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, len - 8).unwrap();
    f.write_all_at(&[byte[0] ^ 1], len - 8).unwrap();
    drop(f);
    let ova = pkg.join("crc.ova");
    run_ok(tar_create(&ova, &pkg).args(["crc.ovf", "crc.mf", "bad.img.gz"]));
    let Err(e) = Mount::new(&ova, &tmp.path().join("mnt"), &[]) else {
        panic!("a gzip disk with a bad CRC-32 must be refused");
    };
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(e.contains("CRC-32"), "{e}");
}
