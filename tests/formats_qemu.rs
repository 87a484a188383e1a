//! Disk formats beyond stream-optimized VMDK, differentially against qemu-img, through real
//! FUSE mounts.
//!
//! Contents:
//! 1. `vhd_and_vhdx`: qemu-img converts a scattered raw image (data spread over the disk, a
//!    size that is not a multiple of any block size) to VHD dynamic and fixed and VHDX
//!    dynamic and fixed; the images are packed into an OVA with GNU tar and mounted; each
//!    `disks/*.raw` must equal `qemu-img convert -O raw` of the same image.
//! 2. `qcow2_variants`: qcow2 v3, v2 (compat=0.10), compressed (deflate), compressed with
//!    zstd, extended L2 entries; same check.
//! 3. `vmdk_descriptor_files`: monolithicFlat, twoGbMaxExtentFlat and twoGbMaxExtentSparse
//!    (a 2 GiB + 5 MiB disk: two sparse extents), the extent files packed beside the
//!    descriptor; same check. A descriptor whose extent is missing is refused naming it.
//! 4. `parents_and_backing_files`: a qcow2 with a backing file written by qemu-io, a VMDK
//!    delta link (parentFileNameHint), a differencing VHD (qemu-img cannot make one: it is
//!    made here from a qemu dynamic VHD by setting its type, sector bitmaps and parent
//!    locators as the VHD specification says; the expected image is computed), and an OVF
//!    delta disk (`ovf:parentRef`) whose image has no backing name of its own. A chain
//!    whose parent is missing is refused naming it.
//!
//! qemu-img, qemu-io and GNU tar are required: a missing tool fails the test naming it.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Size of the scattered raw image: 40 MiB + 7 sectors, a multiple of no block or cluster
/// size.
const RAW_BYTES: u64 = (40 << 20) + 7 * 512;

fn raw_image(dir: &Path, name: &str, seed: u64) -> PathBuf {
    let p = dir.join(name);
    scattered_raw(&p, RAW_BYTES, 24, seed);
    p
}

fn convert(src: &Path, dst: &Path, out_fmt: &str, opts: &[&str]) {
    let mut args = vec!["convert", "-f", "raw", "-O", out_fmt];
    args.extend_from_slice(opts);
    args.push(path_str(src));
    args.push(path_str(dst));
    qemu_img(&args);
}

fn qemu_io(image: &Path, fmt: &str, cmds: &[&str]) {
    let mut c = Command::new(tool("qemu-io"));
    c.arg("-f").arg(fmt);
    for cmd in cmds {
        c.arg("-c").arg(cmd);
    }
    run_ok(c.arg(image));
}

/// The stem ovafs gives a disk file: its name without the last extension.
fn stem(p: &Path) -> String {
    p.file_stem().unwrap().to_str().unwrap().to_string()
}

/// Mounts `ova` and checks that `disks/<stem>.raw` equals `expected` for every pair, and
/// that no other flat image is shown.
fn check_mount(ova: &Path, mnt: &Path, expected: &[(String, PathBuf)]) {
    let m = Mount::ok(ova, mnt, &[]);
    let mut shown: Vec<String> = fs::read_dir(m.path("disks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    shown.sort();
    // Each flat image NAME.raw has its guest view NAME/ beside it.
    let mut want: Vec<String> = expected
        .iter()
        .flat_map(|(s, _)| [format!("{s}.raw"), s.clone()])
        .collect();
    want.sort();
    assert_eq!(shown, want, "{}", ova.display());
    for (s, raw) in expected {
        assert_same_bytes(&m.path(&format!("disks/{s}.raw")), raw);
    }
    m.umount();
}

/// qemu's flat image of `image` (format `fmt`), written beside it.
fn qemu_flat(image: &Path, fmt: &str) -> PathBuf {
    let out = image.with_extension(format!("{}.qemu.raw", fmt));
    qemu_to_raw(image, fmt, &out);
    out
}

const VHD_URI: &str = "http://www.microsoft.com/technet/virtualserver/downloads/vhdspec.mspx";
const QCOW_URI: &str = "http://www.gnome.org/~markmc/qcow-image-format.html";
const VMDK_URI: &str = "http://www.vmware.com/interfaces/specifications/vmdk.html#sparse";

#[test]
fn vhd_and_vhdx() {
    let tmp = tempdir();
    let dir = tmp.path();
    let raw = raw_image(dir, "source.img", 1);
    let images = [
        ("vhd-dynamic.vhd", "vpc", vec!["-o", "subformat=dynamic"]),
        ("vhd-fixed.vhd", "vpc", vec!["-o", "subformat=fixed"]),
        ("vhdx-dynamic.vhdx", "vhdx", vec![]),
        ("vhdx-fixed.vhdx", "vhdx", vec!["-o", "subformat=fixed"]),
        (
            "vhdx-1m.vhdx",
            "vhdx",
            vec!["-o", "block_size=1M,log_size=1M"],
        ),
    ];
    let pkg = dir.join("pkg");
    let mut b = OvaBuilder::new(&pkg, "vhds");
    let mut expected = Vec::new();
    for (name, fmt, opts) in &images {
        let img = dir.join(name);
        convert(&raw, &img, fmt, opts);
        b = b.disk(&img, RAW_BYTES, VHD_URI);
        expected.push((stem(&img), qemu_flat(&img, fmt)));
    }
    let ova = b.build();
    check_mount(&ova, &dir.join("mnt"), &expected);
    // `ovafs info` names the formats.
    let out = run_ok(Command::new(ovafs()).arg("info").arg(&ova));
    let text = String::from_utf8_lossy(&out.stdout);
    for f in [
        "vhd (dynamic)",
        "vhd (fixed)",
        "vhdx (dynamic)",
        "vhdx (fixed)",
    ] {
        assert!(text.contains(f), "ovafs info does not show {f}:\n{text}");
    }
}

#[test]
fn qcow2_variants() {
    let tmp = tempdir();
    let dir = tmp.path();
    let raw = raw_image(dir, "source.img", 2);
    let images = [
        ("qcow2-v3.qcow2", vec![]),
        ("qcow2-v2.qcow2", vec!["-o", "compat=0.10"]),
        ("qcow2-compressed.qcow2", vec!["-c"]),
        (
            "qcow2-v2-compressed.qcow2",
            vec!["-c", "-o", "compat=0.10,cluster_size=4096"],
        ),
        (
            "qcow2-zstd.qcow2",
            vec!["-c", "-o", "compression_type=zstd"],
        ),
        (
            "qcow2-extl2.qcow2",
            vec!["-o", "extended_l2=on,cluster_size=128k"],
        ),
        ("qcow2-2m.qcow2", vec!["-o", "cluster_size=2M"]),
    ];
    let pkg = dir.join("pkg");
    let mut b = OvaBuilder::new(&pkg, "qcows");
    let mut expected = Vec::new();
    for (name, opts) in &images {
        let img = dir.join(name);
        convert(&raw, &img, "qcow2", opts);
        b = b.disk(&img, RAW_BYTES, QCOW_URI);
        expected.push((stem(&img), qemu_flat(&img, "qcow2")));
    }
    // Zero clusters (v3 zero flag) written by qemu-io over data.
    let zeroed = dir.join("qcow2-zeroed.qcow2");
    convert(&raw, &zeroed, "qcow2", &[]);
    qemu_io(
        &zeroed,
        "qcow2",
        &[
            "write -z 0 1M",
            "write -z 3M 65536",
            "write -P 0x5a 33M 4096",
        ],
    );
    b = b.disk(&zeroed, RAW_BYTES, QCOW_URI);
    expected.push((stem(&zeroed), qemu_flat(&zeroed, "qcow2")));
    let ova = b.build();
    check_mount(&ova, &dir.join("mnt"), &expected);
}

#[test]
fn vmdk_descriptor_files() {
    let tmp = tempdir();
    let dir = tmp.path();
    let raw = raw_image(dir, "source.img", 3);
    let pkg = dir.join("pkg");
    let mut b = OvaBuilder::new(&pkg, "vmdks");
    let mut expected = Vec::new();
    for (name, sub) in [
        ("mono.vmdk", "monolithicFlat"),
        ("twogbflat.vmdk", "twoGbMaxExtentFlat"),
        ("twogbsparse.vmdk", "twoGbMaxExtentSparse"),
    ] {
        let img = dir.join(name);
        convert(&raw, &img, "vmdk", &["-o", &format!("subformat={sub}")]);
        b = b.disk(&img, RAW_BYTES, VMDK_URI);
        expected.push((stem(&img), qemu_flat(&img, "vmdk")));
    }
    // A 2 GiB + 5 MiB disk split into two sparse extents, data in both.
    let big = dir.join("big.img");
    let f = fs::File::create(&big).unwrap();
    f.set_len((2 << 30) + (5 << 20)).unwrap();
    drop(f);
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(&big).unwrap();
        let mut rng = Rng::new(9);
        for off in [0u64, (2 << 30) - 70_000, (2 << 30) + (4 << 20)] {
            let mut buf = vec![0u8; 100_000.min(((2 << 30) + (5 << 20) - off) as usize)];
            rng.fill(&mut buf);
            f.write_all_at(&buf, off).unwrap();
        }
    }
    let split = dir.join("split-sparse.vmdk");
    convert(
        &big,
        &split,
        "vmdk",
        &["-o", "subformat=twoGbMaxExtentSparse"],
    );
    b = b.disk(&split, (2 << 30) + (5 << 20), VMDK_URI);
    expected.push((stem(&split), qemu_flat(&split, "vmdk")));
    // Every extent file goes into the package beside its descriptor.
    let mut extents: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            n.ends_with("-flat.vmdk")
                || n.ends_with(".vmdk") && (n.contains("-f0") || n.contains("-s0"))
        })
        .collect();
    extents.sort();
    assert!(extents.len() >= 5, "qemu-img made {extents:?}");
    for e in &extents {
        b = b.file(e);
    }
    let ova = b.build();
    check_mount(&ova, &dir.join("mnt"), &expected);
    // The same package unpacked (mounted by its .ovf): extent files that References does
    // not name are found in the descriptor's folder.
    check_mount(&pkg.join("vmdks.ovf"), &dir.join("mnt-folder"), &expected);

    // The same descriptor without its extent file is refused, naming the file.
    let pkg2 = dir.join("pkg2");
    let ova2 = OvaBuilder::new(&pkg2, "noextent")
        .disk(&dir.join("mono.vmdk"), RAW_BYTES, VMDK_URI)
        .build();
    let err = Mount::new(&ova2, &dir.join("mnt2"), &[]).unwrap_err();
    assert!(
        err.contains("mono-flat.vmdk") && err.lines().count() == 1,
        "{err}"
    );
    // In an unpacked package, an extent that is a symlink leading outside the package
    // folder is never opened: the extent is missing.
    let pkg3 = dir.join("pkg3");
    OvaBuilder::new(&pkg3, "escape")
        .disk(&dir.join("mono.vmdk"), RAW_BYTES, VMDK_URI)
        .write_package();
    std::os::unix::fs::symlink(dir.join("mono-flat.vmdk"), pkg3.join("mono-flat.vmdk")).unwrap();
    let err = Mount::new(&pkg3.join("escape.ovf"), &dir.join("mnt3"), &[]).unwrap_err();
    assert!(
        err.contains("mono-flat.vmdk") && err.contains("not in the package"),
        "{err}"
    );
}

#[test]
fn parent_chain_limits() {
    let tmp = tempdir();
    let dir = tmp.path();
    let create = |name: &str, backing: Option<&str>| {
        let p = dir.join(name);
        let mut args = vec!["create", "-f", "qcow2"];
        if let Some(b) = backing {
            args.extend_from_slice(&["-u", "-b", b, "-F", "qcow2"]);
        }
        args.push(path_str(&p));
        args.push("1M");
        qemu_img(&args);
        p
    };
    // c0 <- c1 <- ... <- c17: seventeen parents below the top, one more than accepted.
    let mut chain = vec![create("c0.qcow2", None)];
    for i in 1..=17 {
        chain.push(create(
            &format!("c{i}.qcow2"),
            Some(&format!("c{}.qcow2", i - 1)),
        ));
    }
    let mut b = OvaBuilder::new(&dir.join("deep"), "deep").disk(&chain[17], 1 << 20, QCOW_URI);
    for c in &chain[..17] {
        b = b.file(c);
    }
    let err = Mount::new(&b.build(), &dir.join("mnt1"), &[]).unwrap_err();
    assert!(err.contains("deeper than 16"), "{err}");
    // Sixteen parents are fine.
    let mut b = OvaBuilder::new(&dir.join("ok"), "ok").disk(&chain[16], 1 << 20, QCOW_URI);
    for c in &chain[..16] {
        b = b.file(c);
    }
    let m = Mount::ok(&b.build(), &dir.join("mnt2"), &[]);
    assert_eq!(
        fs::metadata(m.path("disks/c16.raw")).unwrap().len(),
        1 << 20
    );
    m.umount();
    // a -> b -> a.
    let a = create("a.qcow2", Some("b.qcow2"));
    let bb = create("b.qcow2", Some("a.qcow2"));
    let ova = OvaBuilder::new(&dir.join("loop"), "loop")
        .disk(&a, 1 << 20, QCOW_URI)
        .file(&bb)
        .build();
    let err = Mount::new(&ova, &dir.join("mnt3"), &[]).unwrap_err();
    assert!(err.contains("loops back to a.qcow2"), "{err}");
}

/// Turns qemu's dynamic VHD `child` into a differencing VHD over `parent_name`: disk type
/// 4, sector bitmaps from `bits(block, byte)`, a `W2ru` and a `W2ku` locator and the
/// parent's unicode name; returns the sectors (per block) that the child stores.
fn make_differencing(child: &Path, parent_name: &str, bits: impl Fn(u64, usize) -> u8) {
    let mut v = fs::read(child).unwrap();
    assert_eq!(&v[..8], b"conectix");
    let be32 = |b: &[u8], at: usize| u32::from_be_bytes(b[at..at + 4].try_into().unwrap());
    let be64 = |b: &[u8], at: usize| u64::from_be_bytes(b[at..at + 8].try_into().unwrap());
    let hdr = be64(&v, 16) as usize;
    let bat = be64(&v, hdr + 16) as usize;
    let entries = be32(&v, hdr + 28) as usize;
    let block = be32(&v, hdr + 32) as usize;
    let bitmap_bytes = (block / 512 / 8).next_multiple_of(512);
    for i in 0..entries {
        let e = be32(&v, bat + 4 * i);
        if e == u32::MAX {
            continue;
        }
        let at = e as usize * 512;
        for k in 0..bitmap_bytes {
            v[at + k] = bits(i as u64, k);
        }
    }
    // Locator data goes where the footer was; the footer moves after it.
    let footer_at = v.len() - 512;
    let footer: Vec<u8> = v[footer_at..].to_vec();
    v.truncate(footer_at);
    let utf16le = |s: &str| -> Vec<u8> { s.encode_utf16().flat_map(u16::to_le_bytes).collect() };
    let rel = utf16le(&format!(".\\{parent_name}"));
    let abs = utf16le(&format!("C:\\Hyper-V\\{parent_name}"));
    let rel_at = v.len();
    v.extend_from_slice(&rel);
    v.resize(rel_at + 512, 0);
    let abs_at = v.len();
    v.extend_from_slice(&abs);
    v.resize(abs_at + 512, 0);
    v.extend_from_slice(&footer);
    // Dynamic header: parent name (UTF-16BE) and the two locators.
    for (i, u) in parent_name.encode_utf16().enumerate() {
        v[hdr + 64 + 2 * i..hdr + 66 + 2 * i].copy_from_slice(&u.to_be_bytes());
    }
    for (slot, (code, at, len)) in [(b"W2ku", abs_at, abs.len()), (b"W2ru", rel_at, rel.len())]
        .into_iter()
        .enumerate()
    {
        let l = hdr + 576 + 24 * slot;
        v[l..l + 4].copy_from_slice(code);
        v[l + 4..l + 8].copy_from_slice(&512u32.to_be_bytes());
        v[l + 8..l + 12].copy_from_slice(&(len as u32).to_be_bytes());
        v[l + 16..l + 24].copy_from_slice(&(at as u64).to_be_bytes());
    }
    let checksum = |b: &[u8], skip: usize| -> u32 {
        !b.iter()
            .enumerate()
            .filter(|(i, _)| !(skip..skip + 4).contains(i))
            .fold(0u32, |s, (_, &x)| s.wrapping_add(u32::from(x)))
    };
    let c = checksum(&v[hdr..hdr + 1024], 36);
    v[hdr + 36..hdr + 40].copy_from_slice(&c.to_be_bytes());
    // Both footer copies: type 4, checksum.
    let n = v.len();
    for at in [0, n - 512] {
        v[at + 60..at + 64].copy_from_slice(&4u32.to_be_bytes());
        let c = checksum(&v[at..at + 512], 64);
        v[at + 64..at + 68].copy_from_slice(&c.to_be_bytes());
    }
    fs::write(child, v).unwrap();
}

#[test]
fn parents_and_backing_files() {
    let tmp = tempdir();
    let dir = tmp.path();
    let raw = raw_image(dir, "source.img", 4);
    let pkg = dir.join("pkg");
    let mut b = OvaBuilder::new(&pkg, "chains");
    let mut expected = Vec::new();

    // qcow2 over a qcow2 backing file, written by qemu-io.
    let base = dir.join("base.qcow2");
    convert(&raw, &base, "qcow2", &[]);
    let top = dir.join("top.qcow2");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        path_str(&top),
    ]);
    qemu_io(
        &top,
        "qcow2",
        &[
            "write -P 0xab 1M 64k",
            "write -z 5M 128k",
            "write -P 0x11 39M 1536",
        ],
    );
    b = b.disk(&top, RAW_BYTES, QCOW_URI).file(&base);
    expected.push((stem(&top), qemu_flat(&top, "qcow2")));

    // A VMDK delta link (parentFileNameHint) over a monolithicSparse VMDK.
    let vbase = dir.join("vbase.vmdk");
    convert(&raw, &vbase, "vmdk", &[]);
    let vtop = dir.join("vtop.vmdk");
    qemu_img(&[
        "create",
        "-f",
        "vmdk",
        "-b",
        "vbase.vmdk",
        "-F",
        "vmdk",
        path_str(&vtop),
    ]);
    qemu_io(
        &vtop,
        "vmdk",
        &["write -P 0xcd 2M 100k", "write -P 0x22 40M 512"],
    );
    b = b.disk(&vtop, RAW_BYTES, VMDK_URI).file(&vbase);
    expected.push((stem(&vtop), qemu_flat(&vtop, "vmdk")));

    // A differencing VHD: sector bitmaps decide, per sector, child or parent.
    let parent_raw = raw_image(dir, "parent.img", 5);
    let hbase = dir.join("hbase.vhd");
    convert(&parent_raw, &hbase, "vpc", &["-o", "subformat=dynamic"]);
    let hchild = dir.join("hchild.vhd");
    convert(&raw, &hchild, "vpc", &["-o", "subformat=dynamic"]);
    let child_flat = qemu_flat(&hchild, "vpc");
    let parent_flat = qemu_flat(&hbase, "vpc");
    let bits = |block: u64, byte: usize| -> u8 {
        match (block as usize + byte) % 5 {
            0 => 0xFF,
            1 => 0x00,
            2 => 0b1010_0110,
            3 => 0x0F,
            _ => 0x80,
        }
    };
    make_differencing(&hchild, "hbase.vhd", bits);
    // Expected: the parent, with the child's sectors where the child's bitmap is set.
    let child_bytes = fs::read(&child_flat).unwrap();
    let mut want = fs::read(&parent_flat).unwrap();
    assert_eq!(want.len(), child_bytes.len());
    let v = fs::read(&hchild).unwrap();
    let be32 = |b: &[u8], at: usize| u32::from_be_bytes(b[at..at + 4].try_into().unwrap());
    let hdr = 512usize;
    let bat = u64::from_be_bytes(v[hdr + 16..hdr + 24].try_into().unwrap()) as usize;
    let block = be32(&v, hdr + 32) as usize;
    for s in 0..want.len() / 512 {
        let blk = s * 512 / block;
        if be32(&v, bat + 4 * blk) == u32::MAX {
            continue;
        }
        let in_block = (s * 512 % block) / 512;
        if bits(blk as u64, in_block / 8) & (0x80 >> (in_block % 8)) != 0 {
            want[s * 512..(s + 1) * 512].copy_from_slice(&child_bytes[s * 512..(s + 1) * 512]);
        }
    }
    let hwant = dir.join("hchild.expected.raw");
    fs::write(&hwant, &want).unwrap();
    b = b.disk(&hchild, RAW_BYTES, VHD_URI).file(&hbase);
    expected.push((stem(&hchild), hwant));

    // An OVF delta disk: its image has no backing name; ovf:parentRef gives the parent.
    let obase = dir.join("obase.qcow2");
    convert(&parent_raw, &obase, "qcow2", &[]);
    let odelta = dir.join("odelta.qcow2");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "obase.qcow2",
        "-F",
        "qcow2",
        path_str(&odelta),
    ]);
    qemu_io(
        &odelta,
        "qcow2",
        &["write -P 0x77 10M 3M", "write -z 20M 64k"],
    );
    let owant = qemu_flat(&odelta, "qcow2");
    qemu_img(&["rebase", "-u", "-b", "", path_str(&odelta)]);
    b = b
        .disk(&obase, RAW_BYTES, QCOW_URI)
        .disk(&odelta, RAW_BYTES, QCOW_URI)
        .edit_descriptor(
            "ovf:diskId=\"vmdisk5\"",
            "ovf:diskId=\"vmdisk5\" ovf:parentRef=\"vmdisk4\"",
        );
    expected.push((stem(&obase), qemu_flat(&obase, "qcow2")));
    expected.push((stem(&odelta), owant));

    let ova = b.build();
    check_mount(&ova, &dir.join("mnt"), &expected);

    // The differencing VHD without its parent is refused, naming the parent.
    let pkg2 = dir.join("pkg2");
    let ova2 = OvaBuilder::new(&pkg2, "orphan")
        .disk(&hchild, RAW_BYTES, VHD_URI)
        .build();
    let err = Mount::new(&ova2, &dir.join("mnt2"), &[]).unwrap_err();
    assert!(
        err.contains("hbase.vhd") && err.contains("not in the package") && err.lines().count() == 1,
        "{err}"
    );
    // So is the qcow2 without its backing file.
    let pkg3 = dir.join("pkg3");
    let ova3 = OvaBuilder::new(&pkg3, "nobacking")
        .disk(&top, RAW_BYTES, QCOW_URI)
        .build();
    let err = Mount::new(&ova3, &dir.join("mnt3"), &[]).unwrap_err();
    assert!(err.contains("base.qcow2"), "{err}");
}
