//! End-to-end tests of the read-only mount, through real FUSE mounts.
//!
//! Contents:
//! - members_are_byte_exact_and_disks_match_qemu: a multi-disk OVA made from qemu-img
//!   stream-optimized VMDKs (one >= 1 GiB, one not grain-aligned); members vs GNU tar
//!   extraction, flat images vs `qemu-img convert -O raw`, and `qemu-img info` on the mount.
//! - tar_flavours_mount: GNU, pax and ustar archives of the same package.
//! - unpacked_ovf_folder_mounts: the .ovf of an unpacked package as the source.
//! - concurrent_random_readers_are_byte_exact: 4 threads reading random ranges at once.
//! - qemu_boots_from_the_flat_disk: qemu-system-x86_64 boots a boot sector that prints a
//!   sector stored 1 GB into the disk.
//! - huge_sparse_disk_reads_in_bounded_memory: a 1 TiB-capacity disk, random reads, daemon
//!   RSS bounded.
//! - corrupt_grain_fails_with_eio_and_mount_survives
//! - bad_inputs_are_refused_with_one_line: missing file, not a tar, no descriptor, malformed
//!   XML, descriptor cut short, nonsense disk header.
//! - umount_waits_for_the_daemon, mount_helper_argv0, stale_mountpoint_is_reported.

mod common;

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

const STREAM: &str = ovafs::sample::VMDK_STREAM_URI;

#[test]
fn members_are_byte_exact_and_disks_match_qemu() {
    let tmp = tempdir();
    let (_, big) = qemu_stream_vmdk(tmp.path(), "big", (1 << 30) + (5 << 20), 40, 1);
    let (_, odd) = qemu_stream_vmdk(tmp.path(), "odd", 10 * 1024 * 1024 + 7 * 512, 6, 2);
    let ova = OvaBuilder::new(&tmp.path().join("pkg"), "app")
        .disk(&big, (1 << 30) + (5 << 20), STREAM)
        .disk(&odd, 10 * 1024 * 1024 + 7 * 512, STREAM)
        .build();
    let extracted = tmp.path().join("x");
    fs::create_dir(&extracted).unwrap();
    tar_extract(&ova, &extracted);

    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    let mut names: Vec<String> = fs::read_dir(&m.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ".ovafs", "app.mf", "app.ovf", "big.vmdk", "disks", "networks", "odd.vmdk", "vm", "vms"
        ]
    );
    for member in ["app.ovf", "app.mf", "big.vmdk", "odd.vmdk"] {
        assert_same_bytes(&m.path(member), &extracted.join(member));
    }
    let mut disks: Vec<String> = fs::read_dir(m.path("disks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    disks.sort();
    assert_eq!(
        disks,
        ["big", "big.raw", "odd", "odd.raw"],
        "flat images and guest views"
    );

    for (disk, vmdk) in [("big", &big), ("odd", &odd)] {
        let flat = m.path(&format!("disks/{disk}.raw"));
        let info = qemu_img(&["info", "--output=json", "-f", "raw", path_str(&flat)]);
        let want_size = fs::metadata(tmp.path().join(format!("{disk}.img")))
            .unwrap()
            .len();
        assert!(
            String::from_utf8_lossy(&info.stdout)
                .contains(&format!("\"virtual-size\": {want_size}")),
            "qemu-img info on the mount: {}",
            String::from_utf8_lossy(&info.stdout)
        );
        let reference = tmp.path().join(format!("{disk}.qemu.raw"));
        qemu_to_raw(vmdk, "vmdk", &reference);
        assert_same_bytes(&flat, &reference);
    }
    m.umount();
}

#[test]
fn tar_flavours_mount() {
    let tmp = tempdir();
    let (raw, vmdk) = qemu_stream_vmdk(tmp.path(), "d", 8 << 20, 4, 3);
    for format in ["gnu", "pax", "ustar", "v7"] {
        let mut b =
            OvaBuilder::new(&tmp.path().join(format), "flavour").disk(&vmdk, 8 << 20, STREAM);
        b.tar_format = format.into();
        let ova = b.build();
        let m = Mount::ok(&ova, &tmp.path().join(format!("mnt-{format}")), &[]);
        assert_same_bytes(&m.path("disks/d.raw"), &raw);
        assert_eq!(
            sha256_file(&m.path("d.vmdk")),
            sha256_file(&vmdk),
            "{format}"
        );
        m.umount();
    }
}

#[test]
fn unpacked_ovf_folder_mounts() {
    let tmp = tempdir();
    let (raw, vmdk) = qemu_stream_vmdk(tmp.path(), "disk", 4 << 20, 3, 4);
    let pkg = tmp.path().join("pkg");
    OvaBuilder::new(&pkg, "folder")
        .disk(&vmdk, 4 << 20, STREAM)
        .write_package();
    let m = Mount::ok(&pkg.join("folder.ovf"), &tmp.path().join("mnt"), &[]);
    assert_same_bytes(&m.path("disks/disk.raw"), &raw);
    assert_same_bytes(&m.path("folder.ovf"), &pkg.join("folder.ovf"));
    assert_same_bytes(&m.path("folder.mf"), &pkg.join("folder.mf"));
    m.umount();
}

#[test]
fn concurrent_random_readers_are_byte_exact() {
    let tmp = tempdir();
    let size = 64u64 << 20;
    let (raw, vmdk) = qemu_stream_vmdk(tmp.path(), "r", size, 30, 5);
    let ova = OvaBuilder::new(&tmp.path().join("pkg"), "rand")
        .disk(&vmdk, size, STREAM)
        .build();
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &["cache_size=8M"]);
    concurrent_reads_match(&m.path("disks/r.raw"), &raw, size, 300, 100);
    m.umount();
}

#[test]
fn qemu_boots_from_the_flat_disk() {
    let tmp = tempdir();
    let size: u64 = 2 << 30;
    let message_lba: u64 = 2_000_000; // about 1 GB into the disk
    let raw = tmp.path().join("boot.img");
    {
        let f = File::create(&raw).unwrap();
        f.set_len(size).unwrap();
        f.write_all_at(&ovafs::sample::bootsector::boot_sector(message_lba), 0)
            .unwrap();
        let text = "ovafs: sector 2000000 read through the flat disk\r\n";
        f.write_all_at(
            &ovafs::sample::bootsector::message_sector(text),
            message_lba * 512,
        )
        .unwrap();
    }
    let vmdk = tmp.path().join("boot.vmdk");
    to_stream_vmdk(&raw, &vmdk);
    let ova = OvaBuilder::new(&tmp.path().join("pkg"), "bootable")
        .disk(&vmdk, size, STREAM)
        .build();
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    let drive = format!(
        "file={},format=raw,if=virtio,readonly=on",
        m.path("disks/boot.raw").display()
    );
    let out = Command::new(tool("qemu-system-x86_64"))
        .args([
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-m",
            "64",
            "-serial",
            "stdio",
        ])
        .args([
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-accel",
            "tcg",
        ])
        .args(["-drive", &drive])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let serial = String::from_utf8_lossy(&out.stdout);
    assert!(
        serial.contains("ovafs: sector 2000000 read through the flat disk"),
        "serial output: {serial:?}, stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exit_code = (i32::from(ovafs::sample::bootsector::DEBUG_EXIT_VALUE) << 1) | 1;
    assert_eq!(
        out.status.code(),
        Some(exit_code),
        "the VM exits through isa-debug-exit"
    );
    m.umount();
}

#[test]
fn huge_sparse_disk_reads_in_bounded_memory() {
    let tmp = tempdir();
    let vmdk = tmp.path().join("huge.vmdk");
    let capacity: u64 = 1 << 40;
    qemu_img(&[
        "create",
        "-f",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        path_str(&vmdk),
        "1T",
    ]);
    let ova = OvaBuilder::new(&tmp.path().join("pkg"), "huge")
        .disk(&vmdk, capacity, STREAM)
        .build();
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &["cache_size=16M"]);
    let flat = m.path("disks/huge.raw");
    assert_eq!(fs::metadata(&flat).unwrap().len(), capacity);
    let f = File::open(&flat).unwrap();
    let mut rng = Rng::new(9);
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..2000 {
        let off = rng.next() % (capacity - buf.len() as u64);
        f.read_exact_at(&mut buf, off).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
    }
    let rss = daemon_vm_hwm(ova.canonicalize().as_deref().unwrap_or(&ova));
    assert!(rss < (16 << 20) + (50 << 20), "daemon peak RSS {rss} bytes");
    drop(f);
    m.umount();
}

/// Offset of the first grain marker's compressed payload in a qemu stream VMDK (the first
/// allocated grain after `overHead`).
fn first_grain_payload(vmdk: &Path) -> u64 {
    let mut f = File::open(vmdk).unwrap();
    let mut header = [0u8; 512];
    f.read_exact(&mut header).unwrap();
    let overhead_sectors = u64::from_le_bytes(header[64..72].try_into().unwrap());
    overhead_sectors * 512 + 12
}

#[test]
fn corrupt_grain_fails_with_eio_and_mount_survives() {
    let tmp = tempdir();
    let size = 16u64 << 20;
    let (raw, vmdk) = qemu_stream_vmdk(tmp.path(), "c", size, 5, 6);
    // Damage the first grain's deflate data (it holds virtual offset 0).
    let payload = first_grain_payload(&vmdk);
    let f = fs::OpenOptions::new().write(true).open(&vmdk).unwrap();
    f.write_all_at(&[0xFF; 64], payload + 2).unwrap();
    drop(f);
    let ova = OvaBuilder::new(&tmp.path().join("pkg"), "corrupt")
        .disk(&vmdk, size, STREAM)
        .build();
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    let flat = File::open(m.path("disks/c.raw")).unwrap();
    let mut buf = vec![0u8; 4096];
    let err = flat.read_at(&mut buf, 0).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // Everything else still reads, byte-exact, and so does the rest of the mount.
    let r = File::open(&raw).unwrap();
    let mut want = vec![0u8; 4096];
    for off in [1u64 << 20, 5 << 20, size - 4096] {
        flat.read_exact_at(&mut buf, off).unwrap();
        r.read_exact_at(&mut want, off).unwrap();
        assert_eq!(buf, want, "offset {off}");
    }
    assert!(
        fs::read(m.path("corrupt.ovf"))
            .unwrap()
            .starts_with(b"<?xml")
    );
    drop(flat);
    m.umount();
}

/// Runs `ovafs mount` on `source` expecting failure; returns stderr.
fn refused(source: &Path, tmp: &Path) -> String {
    let mnt = tmp.join(format!(
        "mnt-{}",
        source.file_name().unwrap().to_string_lossy()
    ));
    let err = Mount::new(source, &mnt, &[]).err().unwrap_or_else(|| {
        panic!("{} should have been refused", source.display());
    });
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line of error, got {err:?}");
    assert!(lines[0].starts_with("ovafs: "), "{err}");
    err
}

#[test]
fn bad_inputs_are_refused_with_one_line() {
    let tmp = tempdir();
    let t = tmp.path();
    let e = refused(&t.join("missing.ova"), t);
    assert!(e.contains("missing.ova"), "{e}");

    let not_tar = t.join("not-tar.ova");
    fs::write(&not_tar, vec![0x89u8; 3000]).unwrap();
    assert!(refused(&not_tar, t).contains("tar"));

    let dir = t.join("no-ovf");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("disk.vmdk"), vec![0u8; 1024]).unwrap();
    let no_ovf = t.join("no-ovf.ova");
    run_ok(tar_create(&no_ovf, &dir).arg("disk.vmdk"));
    assert!(refused(&no_ovf, t).to_lowercase().contains("descriptor"));

    let (_, vmdk) = qemu_stream_vmdk(t, "ok", 1 << 20, 1, 7);
    let pkg = t.join("badxml");
    let names = OvaBuilder::new(&pkg, "badxml")
        .disk(&vmdk, 1 << 20, STREAM)
        .write_package();
    fs::write(pkg.join("badxml.ovf"), "<Envelope><References></Envelope>").unwrap();
    let bad_xml = t.join("badxml.ova");
    run_ok(tar_create(&bad_xml, &pkg).args(&names));
    refused(&bad_xml, t);

    let pkg = t.join("short");
    let names = OvaBuilder::new(&pkg, "short")
        .disk(&vmdk, 1 << 20, STREAM)
        .write_package();
    let full = fs::read(pkg.join("short.ovf")).unwrap();
    fs::write(pkg.join("short.ovf"), &full[..full.len() / 2]).unwrap();
    let short = t.join("short.ova");
    run_ok(tar_create(&short, &pkg).args(&names));
    refused(&short, t);

    let nonsense = t.join("nonsense.vmdk");
    let mut header = fs::read(&vmdk).unwrap();
    header[4..8].copy_from_slice(&77u32.to_le_bytes()); // VMDK version 77
    fs::write(&nonsense, header).unwrap();
    let ova = OvaBuilder::new(&t.join("nonsense"), "nonsense")
        .disk(&nonsense, 1 << 20, STREAM)
        .build();
    let e = refused(&ova, t);
    assert!(e.contains("nonsense.vmdk"), "the error names the disk: {e}");

    let archive = fs::read(&ova).unwrap();
    let cut = t.join("cut.ova");
    fs::write(&cut, &archive[..archive.len() / 2]).unwrap();
    refused(&cut, t);
}

#[test]
fn umount_waits_for_the_daemon() {
    let tmp = tempdir();
    let (_, vmdk) = qemu_stream_vmdk(tmp.path(), "w", 1 << 20, 1, 8);
    let ova = OvaBuilder::new(&tmp.path().join("pkg"), "wait")
        .disk(&vmdk, 1 << 20, STREAM)
        .build();
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    let ova = ova.canonicalize().unwrap();
    daemon_vm_hwm(&ova); // the daemon is running
    let dir = m.dir.clone();
    m.umount();
    assert!(!is_mounted(&dir));
    let still_running = fs::read_dir("/proc").unwrap().flatten().any(|e| {
        fs::read(e.path().join("cmdline"))
            .map(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains("__serve") && c.contains(ova.to_str().unwrap())
            })
            .unwrap_or(false)
    });
    assert!(
        !still_running,
        "ovafs umount returned before the daemon exited"
    );
    let e = Command::new(ovafs())
        .arg("umount")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!e.status.success(), "unmounting twice is an error");
    // Another file system on a mount point is not ours to unmount: a tmpfs here (an
    // sshfs mount would be refused the same way, by its type fuse.sshfs).
    fs::create_dir_all(&dir).unwrap();
    run_ok(
        Command::new(tool("mount"))
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(&dir),
    );
    let e = Command::new(ovafs())
        .arg("umount")
        .arg(&dir)
        .output()
        .unwrap();
    let refused = is_mounted(&dir);
    let _ = Command::new("umount").arg(&dir).status();
    assert!(
        !e.status.success() && refused,
        "ovafs umount unmounted a tmpfs"
    );
    let e = String::from_utf8_lossy(&e.stderr);
    assert!(e.contains("is a tmpfs mount, not an ovafs one"), "{e}");
}

#[test]
fn mount_helper_argv0() {
    let tmp = tempdir();
    let (raw, vmdk) = qemu_stream_vmdk(tmp.path(), "h", 2 << 20, 2, 9);
    let ova = OvaBuilder::new(&tmp.path().join("pkg"), "helper")
        .disk(&vmdk, 2 << 20, STREAM)
        .build();
    let helper = tmp.path().join("mount.ovafs");
    std::os::unix::fs::symlink(ovafs(), &helper).unwrap();
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    run_ok(
        Command::new(&helper)
            .arg(&ova)
            .arg(&mnt)
            .args(["-o", "ro,noauto,nofail,cache_size=16M"]),
    );
    let m = Mount { dir: mnt };
    assert_same_bytes(&m.path("disks/h.raw"), &raw);
    // The mount table names the filesystem as sshfs and archivemount do (fuse.NAME), so
    // `findmnt -t fuse.ovafs` and `umount -t fuse.ovafs` find it.
    let out = Command::new(tool("findmnt"))
        .args(["-n", "-o", "FSTYPE,SOURCE", "-t", "fuse.ovafs"])
        .arg(&m.dir)
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>(),
        ["fuse.ovafs", ova.to_str().unwrap()],
        "findmnt: {line}"
    );
    m.umount();
}

/// Starts `ovafs mount -f` of a one-disk OVA (disk `NAME.raw`) and waits for the mount.
fn start_foreground(tmp: &Path, name: &str, seed: u64) -> (std::process::Child, Mount) {
    let (_, vmdk) = qemu_stream_vmdk(tmp, name, 1 << 20, 1, seed);
    let ova = OvaBuilder::new(&tmp.join("pkg"), name)
        .disk(&vmdk, 1 << 20, STREAM)
        .build();
    let mnt = tmp.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let child = Command::new(ovafs())
        .args(["mount", "-f"])
        .arg(&ova)
        .arg(&mnt)
        .spawn()
        .unwrap();
    let guard = Mount { dir: mnt.clone() };
    wait_until("the foreground mount to appear", 10, || is_mounted(&mnt));
    (child, guard)
}

fn sigterm(child: &std::process::Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
}

/// Polls `done` every 20 ms, failing the test after `secs` seconds.
fn wait_until(what: &str, secs: u64, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "waited {secs} s for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn foreground_mount_stops_on_sigterm() {
    let tmp = tempdir();
    let (mut child, guard) = start_foreground(tmp.path(), "fg", 10);
    assert!(fs::read_dir(&guard.dir).unwrap().count() > 0);
    sigterm(&child);
    let status = wait_or_kill(&mut child, 30);
    assert!(status.success(), "{status}");
    assert!(!is_mounted(&guard.dir));
}

/// A file still open in the mount when SIGTERM arrives makes a plain unmount fail with
/// EBUSY; the daemon must then detach the mount and end once the file is closed, not serve
/// on forever (found when a parallel test's fork briefly inherited a descriptor).
#[test]
fn foreground_mount_stops_on_sigterm_while_a_file_is_open() {
    let tmp = tempdir();
    let (mut child, guard) = start_foreground(tmp.path(), "busy", 12);
    let open_file = File::open(guard.dir.join("disks/busy.raw")).unwrap();
    sigterm(&child);
    // Detached after the busy retries: gone from the namespace while the file is open.
    wait_until("the mount to be detached", 20, || !is_mounted(&guard.dir));
    drop(open_file);
    let status = wait_or_kill(&mut child, 30);
    assert!(status.success(), "{status}");
}

/// Waits for `child`, killing it and failing the test after `secs` seconds.
fn wait_or_kill(child: &mut std::process::Child, secs: u64) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon did not exit within {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn seek_and_read_like_a_program_would() {
    let tmp = tempdir();
    let (raw, vmdk) = qemu_stream_vmdk(tmp.path(), "s", 3 << 20, 3, 11);
    let ova = OvaBuilder::new(&tmp.path().join("pkg"), "seek")
        .disk(&vmdk, 3 << 20, STREAM)
        .build();
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    let mut f = File::open(m.path("disks/s.raw")).unwrap();
    let mut want = File::open(&raw).unwrap();
    for off in [0u64, 65535, 65536, (3 << 20) - 1] {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        f.seek(SeekFrom::Start(off)).unwrap();
        want.seek(SeekFrom::Start(off)).unwrap();
        f.by_ref().take(200_000).read_to_end(&mut a).unwrap();
        want.by_ref().take(200_000).read_to_end(&mut b).unwrap();
        assert_eq!(a, b, "offset {off}");
    }
    // Writable on a writable mount (tests/writable.rs); opening makes no overlay.
    drop(
        fs::OpenOptions::new()
            .write(true)
            .open(m.path("disks/s.raw"))
            .unwrap(),
    );
    assert!(!tmp.path().join("pkg/seek.ova.ovafs-overlay").exists());
    drop(f);
    m.umount();
}

#[test]
fn every_stream_layout_mounts_byte_exact() {
    use ovafs::disk::vmdk_writer::{StreamLayout, StreamWriterOptions, write_stream_optimized};
    let tmp = tempdir();
    let size = 40 * 1024 * 1024 + 3 * 512; // two grain tables, a partial last grain
    let raw = tmp.path().join("layout.img");
    scattered_raw(&raw, size, 12, 12);
    let src = ovafs::io::FileSource::open(&raw).unwrap();
    for layout in [
        StreamLayout::GdInFooter,
        StreamLayout::GdInHeader,
        StreamLayout::NoGrainDirectory,
    ] {
        let name = format!("{layout:?}").to_lowercase();
        let vmdk = tmp.path().join(format!("{name}.vmdk"));
        let opts = StreamWriterOptions {
            layout,
            extent_file_name: format!("{name}.vmdk"),
            ..Default::default()
        };
        let mut out = std::io::BufWriter::new(File::create(&vmdk).unwrap());
        write_stream_optimized(&src, &mut out, &opts).unwrap();
        drop(out);
        let ova = OvaBuilder::new(&tmp.path().join(&name), &name)
            .disk(&vmdk, size, STREAM)
            .build();
        let m = Mount::ok(&ova, &tmp.path().join(format!("mnt-{name}")), &[]);
        assert_same_bytes(&m.path(&format!("disks/{name}.raw")), &raw);
        m.umount();
    }
}

#[test]
fn demo_mounts_a_sample_and_cleans_up_on_ctrl_c() {
    use std::io::BufRead;
    let mut child = Command::new(ovafs())
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut mnt = None;
    let mut lines = std::io::BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("Mounted on ") {
            mnt = Some(PathBuf::from(rest.split(". Try").next().unwrap()));
            break;
        }
    }
    let mnt = mnt.expect("demo printed where it mounted");
    let guard = Mount { dir: mnt.clone() };
    assert!(is_mounted(&mnt));
    let flat = mnt.join("disks/demo-disk1.raw");
    assert_eq!(fs::metadata(&flat).unwrap().len(), 256 << 20);
    let f = File::open(&flat).unwrap();
    let mut sector = vec![0u8; 512];
    f.read_exact_at(&mut sector, 0).unwrap();
    assert_eq!(&sector[510..], &[0x55, 0xAA], "the demo disk is bootable");
    f.read_exact_at(&mut sector, 409_600 * 512).unwrap();
    assert!(String::from_utf8_lossy(&sector).starts_with("Hello from ovafs"));
    drop(f);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!is_mounted(&mnt));
    assert!(
        !mnt.parent().unwrap().exists(),
        "the demo folder is removed"
    );
    drop(guard);
}

#[test]
fn seek_data_and_hole_follow_the_disk_tables() {
    use nix::unistd::{Whence, lseek};
    let tmp = tempdir();
    let size = 96u64 << 20;
    let (raw, vmdk) = qemu_stream_vmdk(tmp.path(), "sparse", size, 6, 13);
    let ova = OvaBuilder::new(&tmp.path().join("pkg"), "holes")
        .disk(&vmdk, size, STREAM)
        .build();
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    let flat = File::open(m.path("disks/sparse.raw")).unwrap();
    let original = File::open(&raw).unwrap();
    // Every byte ovafs calls a hole is zero in the original; there are holes and data.
    let (mut pos, mut holes, mut data) = (0u64, 0u64, 0u64);
    while pos < size {
        let hole = lseek(&flat, pos as i64, Whence::SeekHole).unwrap() as u64;
        data += hole - pos;
        if hole >= size {
            break;
        }
        let next = lseek(&flat, hole as i64, Whence::SeekData)
            .map(|o| o as u64)
            .unwrap_or(size);
        let mut buf = vec![0u8; (next - hole).min(8 << 20) as usize];
        original.read_exact_at(&mut buf, hole).unwrap();
        assert!(
            buf.iter().all(|&b| b == 0),
            "non-zero bytes in the hole at {hole}"
        );
        holes += next - hole;
        pos = next;
    }
    assert!(holes > size / 2 && data > 0, "holes {holes}, data {data}");
    assert_eq!(
        sha256_sparse(&m.path("disks/sparse.raw")),
        sha256_file(&raw)
    );
    // qemu-img, which follows SEEK_DATA, converts the flat image exactly.
    let back = tmp.path().join("back.raw");
    qemu_to_raw(&m.path("disks/sparse.raw"), "raw", &back);
    assert_same_bytes(&back, &raw);
    // The allocated blocks are the data bytes (what `du` shows), so GNU cp sees a sparse
    // file, follows SEEK_DATA and leaves the holes unwritten.
    let blocks = fs::metadata(m.path("disks/sparse.raw")).unwrap().blocks();
    assert_eq!(blocks * 512, data, "st_blocks of the flat image");
    let copy = tmp.path().join("copy.raw");
    run_ok(
        Command::new(tool("cp"))
            .arg(m.path("disks/sparse.raw"))
            .arg(&copy),
    );
    assert_same_bytes(&copy, &raw);
    let copied_blocks = fs::metadata(&copy).unwrap().blocks();
    assert!(
        copied_blocks * 512 < size / 2,
        "cp wrote {copied_blocks} blocks of a {size}-byte disk with {holes} bytes of holes"
    );
    drop((flat, original));
    m.umount();
}
