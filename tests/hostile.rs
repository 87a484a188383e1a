//! A hostile corpus built by the tests, through real mounts: each package is refused with
//! one line, or mounts and fails only the reads that touch the damage, while everything else
//! on the mount keeps working. Nothing escapes the mount or the package.
//!
//! - archive names that try to escape (`../`, absolute, `a/../../`), links out of the
//!   package, duplicates;
//! - an XML entity bomb and an external entity;
//! - a grain table entry pointing past the end of the file;
//! - a grain that would inflate far beyond its grain (a zip bomb);
//! - a capacity of 2^64 sectors;
//! - a marker stream built to make a scanner loop;
//! - mounts are private unless `allow_other`; with it, another user reads but cannot write.

mod common;

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use ovafs::disk::vmdk_writer::{StreamLayout, StreamWriterOptions, write_stream_optimized};

const STREAM: &str = ovafs::sample::VMDK_STREAM_URI;

fn le32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes(b[at..at + 4].try_into().unwrap()))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// A stream-optimized VMDK written by ovafs's writer (grain directory in the header) from a
/// scattered raw image; returns (raw, vmdk bytes).
fn header_gd_vmdk(dir: &Path, size: u64, seed: u64) -> (PathBuf, Vec<u8>) {
    let raw = dir.join(format!("src{seed}.img"));
    scattered_raw(&raw, size, 3, seed);
    let src = ovafs::io::FileSource::open(&raw).unwrap();
    let mut out = Vec::new();
    let opts = StreamWriterOptions {
        layout: StreamLayout::GdInHeader,
        ..Default::default()
    };
    write_stream_optimized(&src, &mut out, &opts).unwrap();
    (raw, out)
}

/// Byte offset of grain table entry `grain` (GD in the header, as our writer lays it out).
fn gte_offset(vmdk: &[u8], grain: u64) -> usize {
    let gd_sector = le64(vmdk, 56);
    let per_gt = le32(vmdk, 44);
    let gde = le32(vmdk, (gd_sector * 512 + (grain / per_gt) * 4) as usize);
    (gde * 512 + (grain % per_gt) * 4) as usize
}

/// Packs a package with a healthy disk next to the hostile one, mounts it, and returns the
/// mount (or the one-line refusal).
fn pack_with_healthy_neighbour(
    dir: &Path,
    name: &str,
    hostile: &[u8],
    capacity: u64,
) -> (Result<Mount, String>, PathBuf) {
    fs::create_dir_all(dir).unwrap();
    let bad = dir.join(format!("{name}.vmdk"));
    fs::write(&bad, hostile).unwrap();
    let (healthy_raw, healthy) = header_gd_vmdk(dir, 2 << 20, 99);
    let good = dir.join("healthy.vmdk");
    fs::write(&good, healthy).unwrap();
    let ova = OvaBuilder::new(&dir.join("pkg"), name)
        .disk(&bad, capacity, STREAM)
        .disk(&good, 2 << 20, STREAM)
        .build();
    (Mount::new(&ova, &dir.join("mnt"), &[]), healthy_raw)
}

/// After damage, the healthy disk and the descriptor still read byte-exact.
fn neighbours_unaffected(m: &Mount, healthy_raw: &Path, name: &str) {
    assert_same_bytes(&m.path("disks/healthy.raw"), healthy_raw);
    assert!(
        fs::read(m.path(&format!("{name}.ovf")))
            .unwrap()
            .starts_with(b"<?xml")
    );
}

fn assert_one_line(err: &str) {
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("ovafs: "), "{err}");
}

#[test]
fn grain_table_entry_past_the_end_fails_only_that_read() {
    let tmp = tempdir();
    let (raw, mut vmdk) = header_gd_vmdk(tmp.path(), 4 << 20, 1);
    let at = gte_offset(&vmdk, 0);
    assert_ne!(le32(&vmdk, at), 0, "grain 0 holds data");
    vmdk[at..at + 4].copy_from_slice(&0xFFFF_FF00u32.to_le_bytes());
    let (mounted, healthy_raw) = pack_with_healthy_neighbour(tmp.path(), "gtpast", &vmdk, 4 << 20);
    match mounted {
        Err(e) => assert_one_line(&e),
        Ok(m) => {
            let flat = File::open(m.path("disks/gtpast.raw")).unwrap();
            let mut buf = vec![0u8; 4096];
            assert_eq!(
                flat.read_at(&mut buf, 0).unwrap_err().raw_os_error(),
                Some(libc::EIO)
            );
            // Other grains of the same disk still read right.
            let mut want = vec![0u8; 4096];
            File::open(&raw)
                .unwrap()
                .read_exact_at(&mut want, 3 << 20)
                .unwrap();
            flat.read_exact_at(&mut buf, 3 << 20).unwrap();
            assert_eq!(buf, want);
            neighbours_unaffected(&m, &healthy_raw, "gtpast");
            drop(flat);
            m.umount();
        }
    }
}

#[test]
fn a_grain_that_inflates_far_beyond_its_size_is_refused() {
    let tmp = tempdir();
    let (_, mut vmdk) = header_gd_vmdk(tmp.path(), 4 << 20, 2);
    // Replace grain 0's payload by a zlib stream of 60 MiB of zeros (about 60 KiB, within
    // the marker's size limit): decoding must stop at one grain, not allocate 60 MiB.
    let marker = (le32(&vmdk, gte_offset(&vmdk, 0)) * 512) as usize;
    let old_size = le32(&vmdk, marker + 8) as usize;
    let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::best());
    let bomb_src = vec![0u8; 60 << 20];
    let mut bomb = vec![0u8; c.zlib_compress_bound(bomb_src.len())];
    let n = c.zlib_compress(&bomb_src, &mut bomb).unwrap();
    bomb.truncate(n);
    assert!(bomb.len() < 65536 + 1024, "bomb is {} bytes", bomb.len());
    // Append it as a new marker at the end and point grain 0 there.
    let new_marker = vmdk.len();
    let mut block = Vec::new();
    block.extend_from_slice(&0u64.to_le_bytes());
    block.extend_from_slice(&(bomb.len() as u32).to_le_bytes());
    block.extend_from_slice(&bomb);
    block.resize(block.len().div_ceil(512) * 512, 0);
    vmdk.extend_from_slice(&block);
    let at = gte_offset(&vmdk, 0);
    vmdk[at..at + 4].copy_from_slice(&((new_marker / 512) as u32).to_le_bytes());
    assert!(old_size > 0);
    let (mounted, healthy_raw) = pack_with_healthy_neighbour(tmp.path(), "bomb", &vmdk, 4 << 20);
    let m = mounted.unwrap_or_else(|e| panic!("the bomb is found only when read: {e}"));
    let flat = File::open(m.path("disks/bomb.raw")).unwrap();
    let mut buf = vec![0u8; 65536];
    assert_eq!(
        flat.read_at(&mut buf, 0).unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
    neighbours_unaffected(&m, &healthy_raw, "bomb");
    drop(flat);
    m.umount();
}

#[test]
fn a_capacity_of_two_to_the_64_is_refused() {
    let tmp = tempdir();
    let (_, mut vmdk) = header_gd_vmdk(tmp.path(), 1 << 20, 3);
    vmdk[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
    let (mounted, _) = pack_with_healthy_neighbour(tmp.path(), "huge", &vmdk, 1 << 20);
    let err = mounted.expect_err("a capacity of 2^64 sectors is refused");
    assert_one_line(&err);
    assert!(err.contains("huge.vmdk"), "{err}");
}

#[test]
fn a_marker_stream_built_to_loop_ends() {
    // Header says the grain directory is at the end, there is no footer, and the stream is
    // a long run of zero-length metadata markers: the scan must make progress and stop.
    let tmp = tempdir();
    let (_, good) = header_gd_vmdk(tmp.path(), 1 << 20, 4);
    let mut vmdk = good[..512].to_vec();
    vmdk[56..64].copy_from_slice(&u64::MAX.to_le_bytes()); // gdOffset = GD_AT_END
    let overhead = le64(&vmdk, 64) as usize;
    vmdk.resize(overhead * 512, 0);
    let descriptor_end = (le64(&good, 28) + le64(&good, 36)) as usize * 512;
    vmdk[512..descriptor_end].copy_from_slice(&good[512..descriptor_end]);
    for _ in 0..20_000 {
        let mut marker = [0u8; 512];
        marker[12..16].copy_from_slice(&1u32.to_le_bytes()); // a GT marker of 0 sectors
        vmdk.extend_from_slice(&marker);
    }
    let start = std::time::Instant::now();
    let (mounted, healthy_raw) = pack_with_healthy_neighbour(tmp.path(), "loop", &vmdk, 1 << 20);
    assert!(
        start.elapsed().as_secs() < 30,
        "the scan took {:?}",
        start.elapsed()
    );
    match mounted {
        Err(e) => assert_one_line(&e),
        Ok(m) => {
            neighbours_unaffected(&m, &healthy_raw, "loop");
            m.umount();
        }
    }
}

#[test]
fn entity_bombs_and_external_entities_are_refused() {
    let tmp = tempdir();
    let (_, vmdk) = header_gd_vmdk(tmp.path(), 1 << 20, 5);
    for (name, prolog) in [
        (
            "laughs",
            r#"<!DOCTYPE Envelope [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>"#,
        ),
        (
            "xxe",
            r#"<!DOCTYPE Envelope [<!ENTITY x SYSTEM "file:///etc/shadow">]>"#,
        ),
    ] {
        let dir = tmp.path().join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("disk.vmdk"), &vmdk).unwrap();
        let b = OvaBuilder::new(&dir, name).disk(&dir.join("disk.vmdk"), 1 << 20, STREAM);
        let names = b.write_package();
        let ovf = dir.join(format!("{name}.ovf"));
        let xml = fs::read_to_string(&ovf).unwrap();
        let xml = xml
            .replacen("<Envelope", &format!("{prolog}\n<Envelope"), 1)
            .replace("<Name>", "<Name>&d;&x;");
        fs::write(&ovf, xml).unwrap();
        let ova = dir.join(format!("{name}.ova"));
        run_ok(tar_create(&ova, &dir).args(&names));
        let err = Mount::new(&ova, &dir.join("mnt"), &[]).expect_err("refused");
        assert_one_line(&err);
        assert!(
            err.to_lowercase().contains("dtd") || err.contains("DOCTYPE"),
            "{err}"
        );
    }
}

/// Writes a tar with raw, hostile member names using Python's tarfile (GNU tar refuses to
/// create most of them). File data is staged in files; the list travels as JSON.
fn hostile_tar(path: &Path, members: &[(&str, &str, &[u8])]) {
    let stage = path.with_extension("stage");
    fs::create_dir_all(&stage).unwrap();
    let mut spec = Vec::new();
    for (i, (kind, name, data)) in members.iter().enumerate() {
        let file = stage.join(i.to_string());
        fs::write(&file, data).unwrap();
        spec.push(serde_json::json!({"kind": kind, "name": name, "data": file}));
    }
    let spec_file = stage.join("spec.json");
    fs::write(&spec_file, serde_json::to_vec(&spec).unwrap()).unwrap();
    let script = r#"
import io, json, sys, tarfile
spec = json.load(open(sys.argv[2]))
with tarfile.open(sys.argv[1], "w", format=tarfile.GNU_FORMAT) as t:
    for m in spec:
        data = open(m["data"], "rb").read()
        i = tarfile.TarInfo(m["name"])
        if m["kind"] == "file":
            i.size = len(data); t.addfile(i, io.BytesIO(data))
        elif m["kind"] == "symlink":
            i.type = tarfile.SYMTYPE; i.linkname = data.decode(); t.addfile(i)
        elif m["kind"] == "hardlink":
            i.type = tarfile.LNKTYPE; i.linkname = data.decode(); t.addfile(i)
"#;
    run_ok(
        Command::new(tool("python3"))
            .arg("-c")
            .arg(script)
            .arg(path)
            .arg(&spec_file),
    );
}

#[test]
fn archive_names_cannot_escape_the_mount() {
    let tmp = tempdir();
    let (raw, vmdk) = header_gd_vmdk(tmp.path(), 1 << 20, 6);
    let pkg = tmp.path().join("pkg");
    fs::create_dir_all(&pkg).unwrap();
    fs::write(pkg.join("disk.vmdk"), &vmdk).unwrap();
    let b = OvaBuilder::new(&pkg, "esc").disk(&pkg.join("disk.vmdk"), 1 << 20, STREAM);
    b.write_package();
    let ovf = fs::read(pkg.join("esc.ovf")).unwrap();
    let mf = fs::read(pkg.join("esc.mf")).unwrap();
    let ova = tmp.path().join("esc.ova");
    let outside = tmp.path().join("outside-target");
    fs::write(&outside, b"untouched").unwrap();
    hostile_tar(
        &ova,
        &[
            ("file", "esc.ovf", &ovf),
            ("file", "esc.mf", &mf),
            ("file", "disk.vmdk", &vmdk),
            ("file", "../escape.txt", b"up"),
            ("file", "/etc/absolute.txt", b"abs"),
            ("file", "a/../../sneaky.txt", b"sneak"),
            ("file", "ctl\x07name.txt", b"bell"),
            ("symlink", "link-out", outside.to_str().unwrap().as_bytes()),
            ("hardlink", "hard-out", b"../../etc/passwd"),
            ("file", "dup.txt", b"first"),
            ("file", "dup.txt", b"second"),
        ],
    );
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    let mut all = Vec::new();
    let mut stack = vec![m.dir.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = p
                .strip_prefix(&m.dir)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
            all.push(rel);
        }
    }
    for bad in [
        "escape", "absolute", "sneaky", "link-out", "hard-out", "\x07",
    ] {
        assert!(
            !all.iter().any(|n| n.contains(bad)),
            "{bad} is shown: {all:?}"
        );
    }
    assert_eq!(
        fs::read(m.path("dup.txt")).unwrap(),
        b"second",
        "the last duplicate wins, as GNU tar"
    );
    assert_same_bytes(&m.path("disks/disk.raw"), &raw);
    assert_eq!(fs::read(&outside).unwrap(), b"untouched");
    assert!(!tmp.path().join("escape.txt").exists() && !Path::new("/etc/absolute.txt").exists());
    m.umount();
}

#[test]
fn mounts_are_private_unless_allow_other_and_others_cannot_write() {
    let tmp = tempdir();
    // Other users must be able to reach the mount point itself.
    fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let (_, vmdk) = header_gd_vmdk(tmp.path(), 1 << 20, 7);
    let disk = tmp.path().join("disk.vmdk");
    fs::write(&disk, vmdk).unwrap();
    let ova = OvaBuilder::new(&tmp.path().join("pkg"), "priv")
        .disk(&disk, 1 << 20, STREAM)
        .build();
    let as_nobody = |args: &[&str]| {
        Command::new(tool("runuser"))
            .args(["-u", "nobody", "--"])
            .args(args)
            .output()
            .unwrap()
    };

    let m = Mount::ok(&ova, &tmp.path().join("mnt-private"), &[]);
    let cpus = m.path("vm/cpus");
    let out = as_nobody(&["cat", cpus.to_str().unwrap()]);
    assert!(!out.status.success(), "another user reads a private mount");
    m.umount();

    let m = Mount::ok(&ova, &tmp.path().join("mnt-shared"), &["allow_other"]);
    let cpus = m.path("vm/cpus");
    let out = as_nobody(&["cat", cpus.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2\n");
    let out = as_nobody(&["sh", "-c", &format!("echo 7 > '{}'", cpus.display())]);
    assert!(!out.status.success(), "another user wrote a setting");
    assert_eq!(fs::read_to_string(&cpus).unwrap(), "2\n");
    m.umount();
}
