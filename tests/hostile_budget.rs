//! Small inputs that used to multiply into huge memory or time, built by the tests and
//! tried through real mounts and the real CLI:
//!
//! - a VMDK descriptor naming one large sparse extent 5,000 times: the extent is opened
//!   once, and the daemon's peak memory (VmHWM) stays far below what 5,000 openings cost;
//! - 40 qcow2 overlays of one base whose L1 takes 2.5 MiB: the base is opened once, so
//!   the package fits a 16 MiB metadata budget that 40 openings would cross;
//! - a qcow2 whose L1 table needs more metadata memory than `metadata_limit`: refused with
//!   one line naming the disk, the table and the option; with the option raised it mounts;
//! - a qcow2 whose extent map alternates zero and unallocated 512-byte clusters over 64 GiB:
//!   one `SEEK_DATA` used to walk 128 Mi extents on the session thread; now each lseek is
//!   bounded, runs on a worker, and a member of the same mount reads promptly meanwhile;
//! - a gzip-compressed OVA holding a gzip-compressed disk that inflates to 16 GiB of zeros:
//!   refused in bounded time once `inflate_limit` is reached, saying so;
//! - FIFOs, a device and a directory given as the source of `info`, `verify` and `mount`,
//!   and a FIFO named as a disk inside a folder package: refused at once, nothing hangs.

mod common;

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const SPARSE_URI: &str = ovafs::sample::VMDK_SPARSE_URI;
const QCOW2_URI: &str = "http://www.gnome.org/~markmc/qcow-image-format.html";
const RAW_URI: &str = "http://example.com/raw";

/// A temporary folder with an empty `pkg` folder inside: (guard, `pkg`).
fn package_folder() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempdir();
    let pkg = tmp.path().join("pkg");
    fs::create_dir_all(&pkg).unwrap();
    (tmp, pkg)
}

/// `qemu-img create -q -f FORMAT -o OPTIONS PATH SIZE`.
fn qemu_create(format: &str, options: &str, path: &Path, size: &str) {
    qemu_img(&[
        "create",
        "-q",
        "-f",
        format,
        "-o",
        options,
        path_str(path),
        size,
    ]);
}

/// Asserts that `err` is one line naming each of `needed`.
fn assert_one_line_naming(err: &str, needed: &[&str]) {
    let line = err.trim_end();
    assert_eq!(line.lines().count(), 1, "one line: {err}");
    for needed in needed {
        assert!(line.contains(needed), "{needed:?} missing from {line:?}");
    }
}

/// Runs a Python program (the tests' independent writer of hostile images).
fn python(program: &str, args: &[&str]) {
    run_ok(
        Command::new(tool("python3"))
            .arg("-c")
            .arg(program)
            .args(args),
    );
}

#[test]
fn a_descriptor_naming_one_sparse_extent_5000_times_opens_it_once() {
    let (tmp, pkg) = package_folder();
    // A 512 GiB hosted sparse extent by qemu-img: 8192 grain tables, a 32 KiB grain
    // directory; each opening used to build its own directory, table list and cache.
    let big = pkg.join("big.vmdk");
    qemu_create("vmdk", "subformat=monolithicSparse", &big, "512G");
    let lines = 5000u64;
    let mut text = String::from(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
         createType=\"twoGbMaxExtentSparse\"\n\n# Extent description\n",
    );
    for _ in 0..lines {
        text.push_str("RW 2048 SPARSE \"big.vmdk\"\n");
    }
    text.push_str("\nddb.adapterType = \"lsilogic\"\n");
    let desc = pkg.join("many.vmdk");
    fs::write(&desc, &text).unwrap();
    let capacity = lines << 20;
    let ova = OvaBuilder::new(&pkg, "many")
        .disk(&desc, capacity, SPARSE_URI)
        .file(&big)
        .build();
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    let flat = File::open(m.path("disks/many.raw")).unwrap();
    assert_eq!(flat.metadata().unwrap().len(), capacity);
    let mut buf = vec![1u8; 4096];
    for at in [0, capacity / 2, capacity - 4096] {
        flat.read_exact_at(&mut buf, at).unwrap();
        assert!(buf.iter().all(|&b| b == 0), "an empty extent reads zeros");
    }
    let hwm = daemon_vm_hwm(&ova);
    // 5,000 openings kept 5,000 grain directories of 32 KiB (160 MB), besides their
    // transient copies; one opening keeps one.
    eprintln!("daemon VmHWM with {lines} extent lines: {} KiB", hwm >> 10);
    assert!(hwm < 64 << 20, "daemon VmHWM {hwm} bytes");
    drop(flat);
    m.umount();
}

#[test]
fn metadata_beyond_the_budget_is_refused_and_the_option_raises_it() {
    let (tmp, pkg) = package_folder();
    // 512-byte clusters: each L1 entry covers 32 KiB, so 100 GiB needs a 25 MiB L1 table.
    let img = pkg.join("wide.qcow2");
    qemu_create("qcow2", "cluster_size=512", &img, "100G");
    let ova = OvaBuilder::new(&pkg, "wide")
        .disk(&img, 100 << 30, QCOW2_URI)
        .build();
    let mnt = tmp.path().join("mnt");
    let err = Mount::new(&ova, &mnt, &["metadata_limit=16M"]).expect_err("refused");
    eprintln!("refused: {}", err.trim_end());
    assert_one_line_naming(
        &err,
        &["wide.qcow2", "qcow2 L1 table", "16 MiB", "metadata_limit"],
    );
    assert!(!is_mounted(&mnt));
    let m = Mount::ok(&ova, &mnt, &["metadata_limit=64M"]);
    assert_eq!(
        fs::metadata(m.path("disks/wide.raw")).unwrap().len(),
        100 << 30
    );
    m.umount();
    // `ovafs info` counts against the default budget (1 GiB): it opens the disk.
    let out = run_ok(Command::new(ovafs()).arg("info").arg(&ova));
    assert!(String::from_utf8_lossy(&out.stdout).contains("qcow2"));
}

/// A v3 qcow2 of 64 GiB with 512-byte clusters whose 2 Mi L1 entries all point at one L2
/// table alternating unallocated (0) and zero (1) entries: 128 Mi extents of 512 bytes,
/// all holes, from a 16 MiB file.
fn many_extent_qcow2(path: &Path) {
    python(
        r#"
import struct, sys
size = 64 << 30
l1_entries = size // (512 * 64)
l1_off = 512
l2_off = l1_off + l1_entries * 8
h = b"QFI\xfb" + struct.pack(">IQIIQIIQQIIQ", 3, 0, 0, 9, size, 0, l1_entries, l1_off, 0, 0, 0, 0)
h += struct.pack(">QQQII", 0, 0, 0, 4, 104)
h = h.ljust(512, b"\0")
with open(sys.argv[1], "wb") as f:
    f.write(h)
    f.write(struct.pack(">Q", l2_off) * l1_entries)
    f.write(struct.pack(">QQ", 0, 1) * 32)
"#,
        &[path_str(path)],
    );
}

#[test]
fn lseek_on_a_map_of_millions_of_extents_is_bounded_and_blocks_no_other_file() {
    use nix::unistd::{Whence, lseek};
    let (tmp, pkg) = package_folder();
    let img = pkg.join("holes.qcow2");
    many_extent_qcow2(&img);
    let size = 64u64 << 30;
    let ova = OvaBuilder::new(&pkg, "holes")
        .disk(&img, size, QCOW2_URI)
        .build();
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    let disk = File::open(m.path("disks/holes.raw")).unwrap();
    let fd = &disk;

    // One SEEK_DATA from 0 used to walk all 128 Mi extents (seconds, on the session thread).
    let started = Instant::now();
    let data = lseek(fd, 0, Whence::SeekData);
    let one = started.elapsed();
    eprintln!("one SEEK_DATA over 128 Mi extents: {one:?}, answered {data:?}");
    let data = data.expect("conservative answer, not ENXIO");
    assert!(one < Duration::from_secs(3), "SEEK_DATA took {one:?}");
    // Conservative: everything before the answer is really a hole, and it claims no hole
    // where there is data (SEEK_HOLE at a hole is the offset itself).
    assert!(data > 0 && (data as u64) < size, "{data}");
    let mut buf = vec![1u8; 1 << 20];
    disk.read_exact_at(&mut buf, 0).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    assert_eq!(lseek(fd, data, Whence::SeekHole).unwrap(), data);

    // A copy walking the map (SEEK_DATA, SEEK_HOLE, ...) in another thread while a member
    // of the same mount is read over and over: every read is answered promptly.
    let path = m.path("disks/holes.raw");
    let walker = std::thread::spawn(move || {
        let f = File::open(path).unwrap();
        let fd = &f;
        let (mut pos, mut calls, mut slowest) = (0i64, 0u32, Duration::ZERO);
        let deadline = Instant::now() + Duration::from_secs(4);
        while Instant::now() < deadline {
            let t = Instant::now();
            let next = lseek(fd, pos, Whence::SeekData).unwrap();
            let hole = lseek(fd, next, Whence::SeekHole).unwrap();
            slowest = slowest.max(t.elapsed());
            assert!(next >= pos && hole >= next);
            pos = hole;
            calls += 2;
        }
        (calls, slowest, pos)
    });
    let member = m.path("holes.ovf");
    let expected = fs::read(pkg.join("holes.ovf")).unwrap();
    let mut slowest_read = Duration::ZERO;
    let mut reads = 0u32;
    while !walker.is_finished() {
        let t = Instant::now();
        // A fresh open and read each time: the kernel asks the daemon for the bytes.
        let f = File::open(&member).unwrap();
        let mut got = vec![0u8; expected.len()];
        f.read_exact_at(&mut got, 0).unwrap();
        slowest_read = slowest_read.max(t.elapsed());
        assert_eq!(got, expected);
        reads += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    let (calls, slowest_seek, reached) = walker.join().unwrap();
    eprintln!(
        "{calls} lseeks (slowest {slowest_seek:?}, reached {reached}); {reads} member reads \
         meanwhile, slowest {slowest_read:?}"
    );
    assert!(calls > 10 && reads > 10, "{calls} seeks, {reads} reads");
    assert!(slowest_seek < Duration::from_secs(3), "{slowest_seek:?}");
    assert!(slowest_read < Duration::from_secs(1), "{slowest_read:?}");
    drop(disk);
    m.umount();
}

/// `count` copies of one gzip member of 64 MiB of zeros: `count * 64 MiB` decompressed from
/// about `count * 64 KiB` (members back to back are one gzip stream).
fn zero_bomb(path: &Path, count: u32) {
    python(
        r#"
import gzip, sys
member = gzip.compress(bytes(64 << 20), compresslevel=9)
with open(sys.argv[1], "wb") as f:
    for _ in range(int(sys.argv[2])):
        f.write(member)
"#,
        &[path_str(path), &count.to_string()],
    );
}

#[test]
fn a_nested_gzip_bomb_is_refused_in_bounded_time_at_the_inflate_limit() {
    let (tmp, pkg) = package_folder();
    // The disk member: 16 GiB of zeros in 16 MiB of gzip, referenced with
    // ovf:compression="gzip"; the OVA itself is then gzip-compressed (tar -czf).
    let inner = pkg.join("bomb.img.gz");
    zero_bomb(&inner, 256);
    let mut builder = OvaBuilder::new(&pkg, "bomb")
        .disk(&inner, 16 << 30, RAW_URI)
        .edit_descriptor(
            "<File ovf:href=\"bomb.img.gz\"",
            "<File ovf:compression=\"gzip\" ovf:href=\"bomb.img.gz\"",
        );
    builder.gzip_archive = true;
    let ova = builder.build();
    let gz = tmp.path().join("bomb.ova.gz");
    fs::rename(&ova, &gz).unwrap();
    let mnt = tmp.path().join("mnt");
    let started = Instant::now();
    let err = Mount::new(&gz, &mnt, &["inflate_limit=1G"]).expect_err("refused");
    let took = started.elapsed();
    eprintln!("nested gzip bomb refused in {took:?}: {}", err.trim_end());
    assert_one_line_naming(&err, &["inflate_limit", "1 GiB", "bomb"]);
    // 1 GiB of zeros inflates in about a second; the whole bomb would take 16 times that.
    assert!(took < Duration::from_secs(60), "{took:?}");
    assert!(!is_mounted(&mnt));
}

/// Runs `ovafs ARGS` under `timeout 30` and returns its output; panics if it timed out.
fn ovafs_bounded(args: &[&Path]) -> Output {
    let out = Command::new(tool("timeout"))
        .arg("30")
        .arg(ovafs())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(124), "ovafs {args:?} hung");
    out
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
}

#[test]
fn fifos_devices_and_directories_as_sources_are_refused_at_once() {
    let tmp = tempdir();
    let fifo_ova = tmp.path().join("pipe.ova");
    let fifo_ovf = tmp.path().join("pipe.ovf");
    mkfifo(&fifo_ova);
    mkfifo(&fifo_ovf);
    let dir = tmp.path().join("dir.ova");
    fs::create_dir(&dir).unwrap();
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let cases: [(&Path, &str); 4] = [
        (&fifo_ova, "a FIFO"),
        (&fifo_ovf, "a FIFO"),
        (Path::new("/dev/null"), "a character device"),
        (&dir, "a directory"),
    ];
    for (source, what) in cases {
        for cmd in ["info", "verify", "mount"] {
            let started = Instant::now();
            let out = if cmd == "mount" {
                ovafs_bounded(&[Path::new(cmd), source, &mnt])
            } else {
                ovafs_bounded(&[Path::new(cmd), source])
            };
            let took = started.elapsed();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "ovafs {cmd} {source:?} succeeded");
            assert_eq!(err.trim_end().lines().count(), 1, "{cmd} {source:?}: {err}");
            assert!(
                err.contains(what) && err.contains("not a regular file"),
                "{cmd} {source:?}: {err}"
            );
            assert!(
                took < Duration::from_secs(10),
                "{cmd} {source:?} took {took:?}"
            );
            assert!(!is_mounted(&mnt));
        }
    }
}

#[test]
fn a_fifo_named_by_a_folder_package_does_not_hang() {
    let (tmp, pkg) = package_folder();
    let placeholder = pkg.join("disk.img");
    fs::write(&placeholder, vec![0u8; 4096]).unwrap();
    let names = OvaBuilder::new(&pkg, "fifo")
        .disk(&placeholder, 4096, RAW_URI)
        .write_package();
    // The disk becomes a FIFO nobody writes: opening it for reading would block forever.
    fs::remove_file(&placeholder).unwrap();
    mkfifo(&placeholder);
    let ovf = pkg.join(&names[0]);
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    for out in [
        ovafs_bounded(&[Path::new("info"), &ovf]),
        ovafs_bounded(&[Path::new("mount"), &ovf, &mnt]),
    ] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains("disk.img") && err.contains("regular file"),
            "{err}"
        );
    }
    assert!(!is_mounted(&mnt));
}

#[test]
fn a_parent_shared_by_many_disks_is_opened_once() {
    let (tmp, pkg) = package_folder();
    // The base: 512-byte clusters, so its L1 table takes 2.5 MiB (5 MiB while parsed).
    let base = pkg.join("base.qcow2");
    let size = 10u64 << 30;
    qemu_create("qcow2", "cluster_size=512", &base, "10G");
    let mut builder = OvaBuilder::new(&pkg, "overlays");
    let overlays = 40;
    for i in 0..overlays {
        let ov = pkg.join(format!("ov{i}.qcow2"));
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            path_str(&ov),
        ]);
        builder = builder.disk(&ov, size, QCOW2_URI);
    }
    let ova = builder.file(&base).build();
    // Opened once per chain, the base would need 40 x 2.5 MiB = 100 MiB of L1 tables; once
    // for the whole package it fits in 16 MiB with room to spare.
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &["metadata_limit=16M"]);
    for i in [0, overlays - 1] {
        let flat = File::open(m.path(&format!("disks/ov{i}.raw"))).unwrap();
        assert_eq!(flat.metadata().unwrap().len(), size);
        let mut buf = vec![1u8; 4096];
        flat.read_exact_at(&mut buf, size - 4096).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
    }
    m.umount();
}
