//! End-to-end tests with a real Linux guest (tests/common/guest.rs: Debian's cloud kernel and
//! busybox, booted by qemu-system-x86_64 under TCG), its serial console as the judge.
//!
//! Contents:
//! - guest_boots_from_a_raw_image_and_prints_its_file: the fixture itself; the guest boots
//!   from an ext4 image file and prints a file of its root exactly.
//! - guest_boots_from_the_mounted_ova: that image packed as a stream-optimized OVA (qemu-img,
//!   GNU tar) and mounted with `ovafs mount`; the guest boots from `disks/root.raw` with
//!   `snapshot=on,cache=none` (reads a file and a 3 MiB blob, writes a file into qemu's
//!   overlay and reads it back after dropping its caches), then with
//!   `cache=none,readonly=on` (the same reads; the snapshot's file is gone; writing is
//!   refused with EROFS because the root is mounted read-only).
//! - snapshot_writes_leave_the_flat_disk_and_the_ova_unchanged: after a guest wrote, deleted
//!   and trimmed in snapshot mode, and after qemu was killed (SIGKILL) while a guest wrote
//!   in snapshot mode, `sha256sum` of the mounted flat disk and of the OVA are those from
//!   before the boots (and the flat disk's is the original image's).

mod common;

use std::path::{Path, PathBuf};

use common::guest::{Boot, Guest, ext4_image};
use common::verify::coreutils;
use common::*;

const STREAM: &str = ovafs::sample::VMDK_STREAM_URI;
/// Size of the guest's root disk.
const DISK_MIB: u64 = 64;
const HELLO: &str = "hello from a file on the guest's root\n";

/// A 3 MiB blob whose digest the guest computes, so every read goes through the disk.
fn blob() -> Vec<u8> {
    let mut v = vec![0u8; 3 << 20];
    Rng::new(11).fill(&mut v);
    v
}

/// SHA-256 of `bytes` in hex.
fn sha256_hex(bytes: &[u8]) -> String {
    sha256_reader(bytes)
}

/// The guest's root image `DIR/root.img`, holding `hello.txt` and `data/blob.bin`.
fn root_image(dir: &Path) -> PathBuf {
    let img = dir.join("root.img");
    ext4_image(
        &img,
        DISK_MIB,
        &[("hello.txt", HELLO.as_bytes()), ("data/blob.bin", &blob())],
    );
    img
}

/// The root image packed as `DIR/pkg/guest.ova` around a stream-optimized VMDK made by
/// qemu-img (so its flat disk is `disks/root.raw`); returns (raw image, OVA).
fn guest_ova(dir: &Path) -> (PathBuf, PathBuf) {
    let img = root_image(dir);
    let vmdk = dir.join("root.vmdk");
    to_stream_vmdk(&img, &vmdk);
    let ova = OvaBuilder::new(&dir.join("pkg"), "guest")
        .disk(&vmdk, DISK_MIB << 20, STREAM)
        .build();
    (img, ova)
}

#[test]
fn guest_boots_from_a_raw_image_and_prints_its_file() {
    let guest = Guest::build();
    let tmp = tempdir();
    let img = root_image(tmp.path());
    let run = guest.boot(&img, "raw", "writeback", "cat hello.txt");
    eprintln!("boot from a raw image: {:.2} s", run.elapsed.as_secs_f64());
    assert_eq!(run.ok(), HELLO, "{run}");
}

#[test]
fn guest_boots_from_the_mounted_ova() {
    let guest = Guest::build();
    let tmp = tempdir();
    let (_, ova) = guest_ova(tmp.path());
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    let flat = m.path("disks/root.raw");
    let blob_sum = sha256_hex(&blob());

    let writer = guest.run(
        &Boot::new(
            "set -e
             cat hello.txt
             sha256sum data/blob.bin
             echo 'written by the guest' > written.txt
             sync
             echo 3 > /proc/sys/vm/drop_caches
             cat written.txt
             grep ' /root ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1",
        )
        .disk(&flat, "raw", &["snapshot=on", "cache=none"]),
    );
    eprintln!(
        "boot from the mount, snapshot: {:.2} s",
        writer.elapsed.as_secs_f64()
    );
    assert_eq!(
        writer.ok(),
        format!("{HELLO}{blob_sum}  data/blob.bin\nwritten by the guest\nrw\n"),
        "{writer}"
    );

    let reader = guest.run(
        &Boot::new(
            "cat hello.txt
             sha256sum data/blob.bin
             test -e written.txt && echo 'written.txt survived' || echo 'no written.txt'
             (echo x > new.txt) 2>&1 | sed 's/.*: //'
             grep ' /root ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1",
        )
        .disk(&flat, "raw", &["cache=none", "readonly=on"]),
    );
    eprintln!(
        "boot from the mount, read-only: {:.2} s",
        reader.elapsed.as_secs_f64()
    );
    assert_eq!(
        reader.ok(),
        format!(
            "{HELLO}{blob_sum}  data/blob.bin\nno written.txt\n\
             Read-only file system\nro\n"
        ),
        "{reader}"
    );
    m.umount();
}

#[test]
fn snapshot_writes_leave_the_flat_disk_and_the_ova_unchanged() {
    let guest = Guest::build();
    let tmp = tempdir();
    let (img, ova) = guest_ova(tmp.path());
    let ova_before = coreutils("sha256sum", &ova);
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    let flat = m.path("disks/root.raw");
    let flat_before = coreutils("sha256sum", &flat);
    assert_eq!(
        flat_before,
        coreutils("sha256sum", &img),
        "the flat disk is the image packed into the OVA"
    );

    let run = guest.run(
        &Boot::new(
            "set -e
             dd if=/dev/urandom of=noise.bin bs=1M count=8 2>/dev/null
             dd if=/dev/zero of=data/blob.bin bs=64k count=16 conv=notrunc 2>/dev/null
             rm hello.txt
             sync
             fstrim /root
             echo 3 > /proc/sys/vm/drop_caches
             ls -1
             sha256sum data/blob.bin | cut -d' ' -f1",
        )
        .disk(&flat, "raw", &["snapshot=on", "discard=unmap"]),
    );
    eprintln!(
        "boot with writes, snapshot: {:.2} s",
        run.elapsed.as_secs_f64()
    );
    let mut changed = blob();
    changed[..1 << 20].fill(0);
    assert_eq!(
        run.ok(),
        format!("data\nlost+found\nnoise.bin\n{}\n", sha256_hex(&changed)),
        "{run}"
    );

    // qemu killed (SIGKILL) while the guest writes in snapshot mode.
    let mut writing = guest.start(
        &Boot::new(
            "echo writing
             while :; do dd if=/dev/urandom of=loop.bin bs=64k count=64 conv=fsync 2>/dev/null; done",
        )
        .disk(&flat, "raw", &["snapshot=on", "cache=none"]),
    );
    writing.wait_for("writing\n");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let killed = writing.kill();
    assert!(
        killed.rc.is_none(),
        "the guest was killed mid-write: {killed}"
    );

    assert_eq!(
        coreutils("sha256sum", &flat),
        flat_before,
        "the flat disk changed"
    );
    m.umount();
    assert_eq!(coreutils("sha256sum", &ova), ova_before, "the OVA changed");
}
