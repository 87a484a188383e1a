//! End-to-end tests of writable flat disks with a real Linux guest (tests/common/guest.rs:
//! Debian's cloud kernel and busybox, booted by qemu-system-x86_64 under TCG): the guest
//! boots from `MNT/disks/root.raw` of a mounted OVA, writes, syncs and powers off; debugfs,
//! GNU tar, coreutils, qemu-img, COT and virt-v2v judge what ovafs made of it.
//!
//! The root disk is an ext4 image packed as a stream-optimized OVA by qemu-img and GNU tar.
//!
//! Contents:
//! - guest_writes_with_cache_none_survive_remount_and_commit_at_the_mount: qemu with
//!   `cache=none` (O_DIRECT); the guest writes a small file, 4 MiB of random bytes (printing
//!   their sha256) and 12 KiB into a file that was there, runs `sync`, powers off. The OVA is
//!   unchanged; after umount and remount debugfs reads the guest's bytes from the flat disk;
//!   `ovafs commit MNT`; the mounted disk still reads them; then the judges (below).
//! - guest_writes_with_cache_writeback_survive_remount_and_commit_of_the_source: the same
//!   with `cache=writeback` (buffered writes through the host's page cache) and
//!   `ovafs commit SRC` after umount.
//! - guest_trim_shrinks_the_committed_vmdk: the guest deletes a 16 MiB file of random bytes
//!   and syncs (no discard reaches the disk), `ovafs commit MNT`; then it runs `fstrim` with
//!   `discard=unmap`, commit again: the VMDK member `tar tvf` lists is at least 15 MiB
//!   smaller than after the first commit; the file's blocks (debugfs) held its bytes after
//!   the first commit and are zero after the second, and the other files are intact.
//!
//! The judges of every commit: GNU tar extracts the OVA; `sha256sum -c` checks the manifest;
//! the descriptor's `ovf:size` of the VMDK is the size `tar tvf` lists; `qemu-img check`
//! passes on the new VMDK, `qemu-img info` calls it streamOptimized and `qemu-img convert -O
//! raw` of it gives an image whose files (debugfs) are the guest's; `cot info` reads the OVA;
//! `virt-v2v -i ova OVA --print-source` accepts it (it checks the manifest's digest of the
//! disk). After a remount the flat disk reads the guest's files, `ovafs status --json`
//! reports no change and no overlay, and no overlay folder is left beside the OVA.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::guest::{Boot, Guest, ext4_blocks, ext4_cat, ext4_image, ext4_names};
use common::verify::coreutils_check_manifest;
use common::*;

const STREAM: &str = ovafs::sample::VMDK_STREAM_URI;
/// Size of the guest's root disk.
const DISK_MIB: u64 = 64;
/// A file of the root image the guest leaves alone.
const HELLO: &str = "hello from a file on the guest's root\n";
/// The small file the guest writes.
const SMALL: &str = "a small file the guest wrote\n";
/// Size of the random file the trim test's root holds at first.
const BIG_MIB: usize = 16;

/// The guest's writes: a small file, 4 MiB from `/dev/urandom`, 12 KiB of random bytes over
/// `data/blob.bin` at 400 KiB (blocks of the base image); it prints the two changed files'
/// `sha256sum` lines, then flushes everything to the disk.
const WRITE_SCRIPT: &str = "set -e
printf 'a small file the guest wrote\\n' > small.txt
dd if=/dev/urandom of=random.bin bs=1M count=4 2>/dev/null
dd if=/dev/urandom of=data/blob.bin bs=4k seek=100 count=3 conv=notrunc 2>/dev/null
sha256sum random.bin data/blob.bin
sync";

/// A 3 MiB blob that compresses somewhat, part of the root image.
fn blob() -> Vec<u8> {
    let mut v = vec![0u8; 3 << 20];
    Rng::new(11).fill(&mut v);
    v
}

/// `len` bytes that do not compress (the generator's raw output).
fn incompressible(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&rng.next().to_le_bytes());
    }
    v.truncate(len);
    v
}

/// `DIR/pkg/guest.ova`: an ext4 root holding `files` and `hello.txt`, converted to a
/// stream-optimized VMDK by qemu-img (so the flat disk is `disks/root.raw`), with a SHA-256
/// manifest, packed by GNU tar.
fn guest_ova(dir: &Path, files: &[(&str, &[u8])]) -> PathBuf {
    let img = dir.join("root.img");
    let mut all: Vec<(&str, &[u8])> = vec![("hello.txt", HELLO.as_bytes())];
    all.extend_from_slice(files);
    ext4_image(&img, DISK_MIB, &all);
    let vmdk = dir.join("root.vmdk");
    to_stream_vmdk(&img, &vmdk);
    fs::remove_file(&img).unwrap();
    OvaBuilder::new(&dir.join("pkg"), "guest")
        .disk(&vmdk, DISK_MIB << 20, STREAM)
        .build()
}

/// What [`WRITE_SCRIPT`] reported: the sha256 of `random.bin` and of the changed
/// `data/blob.bin`.
#[derive(Debug)]
struct Written {
    random_sha: String,
    blob_sha: String,
}

impl Written {
    /// Parses the two `sha256sum` lines the script printed.
    fn from_output(out: &str) -> Written {
        let sums: Vec<(&str, &str)> = out
            .lines()
            .map(|l| l.split_once("  ").unwrap_or_else(|| panic!("{out:?}")))
            .collect();
        let sum_of = |name: &str| {
            let (hex, _) = sums
                .iter()
                .find(|(_, n)| *n == name)
                .unwrap_or_else(|| panic!("the guest printed no sum of {name}: {out:?}"));
            assert_eq!(hex.len(), 64, "{out:?}");
            hex.to_string()
        };
        let written = Written {
            random_sha: sum_of("random.bin"),
            blob_sha: sum_of("data/blob.bin"),
        };
        assert_ne!(
            written.blob_sha,
            sha256_reader(&blob()[..]),
            "the guest did not change data/blob.bin"
        );
        written
    }

    /// Asserts the ext4 file system of the raw image `image` holds exactly what the guest
    /// wrote and left alone (read by debugfs, compared byte for byte or by sha256).
    fn check(&self, image: &Path) {
        assert_eq!(
            ext4_names(image, "/"),
            ["data", "hello.txt", "lost+found", "random.bin", "small.txt"],
            "{}",
            image.display()
        );
        assert_eq!(ext4_cat(image, "/small.txt"), SMALL.as_bytes());
        assert_eq!(ext4_cat(image, "/hello.txt"), HELLO.as_bytes());
        let random = ext4_cat(image, "/random.bin");
        assert_eq!(random.len(), 4 << 20, "random.bin in {}", image.display());
        assert_eq!(sha256_reader(&random[..]), self.random_sha, "random.bin");
        let now = ext4_cat(image, "/data/blob.bin");
        assert_eq!(sha256_reader(&now[..]), self.blob_sha, "data/blob.bin");
        // Outside the 12 KiB the guest wrote, the blob is the image's.
        let (before, changed) = (blob(), 100 * 4096..103 * 4096);
        assert_eq!(now.len(), before.len(), "data/blob.bin");
        assert!(
            before[..changed.start] == now[..changed.start],
            "data/blob.bin"
        );
        assert!(before[changed.end..] == now[changed.end..], "data/blob.bin");
    }
}

/// Which form of `ovafs commit` a test uses.
#[derive(Debug, Clone, Copy)]
enum CommitForm {
    /// `ovafs commit MNT` while mounted.
    Mount,
    /// `ovafs commit SRC` after `ovafs umount`.
    Source,
}

/// Runs `ovafs ARGS`, which must succeed; returns stdout.
fn ovafs_ok(args: &[&Path]) -> String {
    let out = run_ok(Command::new(ovafs()).args(args));
    String::from_utf8(out.stdout).unwrap()
}

/// `ovafs commit TARGET` (a mount point or the OVA).
fn commit(target: &Path) {
    ovafs_ok(&[Path::new("commit"), target]);
}

/// The one disk's row of `ovafs status --json`.
#[derive(Debug, PartialEq)]
struct Status {
    changed_bytes: u64,
    synced: bool,
    overlay: Option<String>,
}

impl Status {
    /// What a disk without changes reports.
    const CLEAN: Status = Status {
        changed_bytes: 0,
        synced: true,
        overlay: None,
    };
}

/// `ovafs status --json TARGET` (a mount point or the OVA) for the guest's one disk.
fn status(target: &Path) -> Status {
    let text = ovafs_ok(&[Path::new("status"), Path::new("--json"), target]);
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("status --json: {e}: {text}"));
    let disks = v.as_array().unwrap_or_else(|| panic!("{text}"));
    assert_eq!(disks.len(), 1, "{text}");
    let disk = &disks[0];
    assert_eq!(disk["disk"], "root.raw", "{text}");
    Status {
        changed_bytes: disk["changed_bytes"]
            .as_u64()
            .unwrap_or_else(|| panic!("{text}")),
        synced: disk["synced"].as_bool().unwrap_or_else(|| panic!("{text}")),
        overlay: disk["overlay"].as_str().map(str::to_string),
    }
}

/// The overlay folder ovafs keeps beside `ova`.
fn overlay_dir(ova: &Path) -> PathBuf {
    PathBuf::from(format!("{}.ovafs-overlay", path_str(ova)))
}

/// The size of the one VMDK member of `ova`, as `tar tvf` lists it.
fn vmdk_member_size(ova: &Path) -> u64 {
    let vmdks: Vec<(String, u64)> = tar_list(ova)
        .into_iter()
        .filter(|(n, _)| n.ends_with(".vmdk"))
        .collect();
    assert_eq!(vmdks.len(), 1, "{vmdks:?}");
    vmdks[0].1
}

/// The independent judges of a committed (or any) OVA: GNU tar extracts it into
/// `work/NAME`; the manifest verifies with `sha256sum -c`; the descriptor's `ovf:size` of the
/// one VMDK is its size in `tar tvf`; `qemu-img check` passes on that VMDK and `qemu-img
/// info` calls it streamOptimized; `cot info` and `virt-v2v -i ova --print-source` read the
/// OVA. Returns the VMDK converted to raw by qemu-img.
fn judge_ova(ova: &Path, work: &Path, name: &str) -> PathBuf {
    let x = work.join(name);
    fs::create_dir_all(&x).unwrap();
    tar_extract(ova, &x);
    coreutils_check_manifest(&x, "guest.mf");
    let vmdks: Vec<PathBuf> = fs::read_dir(&x)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "vmdk"))
        .collect();
    assert_eq!(vmdks.len(), 1, "{vmdks:?}");
    let vmdk = path_str(&vmdks[0]);
    let member = vmdks[0].file_name().unwrap().to_str().unwrap();
    let listed = tar_list(ova);
    let (_, member_size) = listed
        .iter()
        .find(|(n, _)| n == member)
        .unwrap_or_else(|| panic!("{listed:?}"));
    let descriptor = fs::read_to_string(x.join("guest.ovf")).unwrap();
    assert_eq!(
        file_size_attribute(&descriptor, member),
        *member_size,
        "the descriptor's ovf:size of {member}"
    );
    qemu_img(&["check", "-f", "vmdk", vmdk]);
    let info = qemu_img(&["info", "-f", "vmdk", "--output=json", vmdk]);
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["virtual-size"], DISK_MIB << 20, "{info}");
    assert_eq!(
        info["format-specific"]["data"]["create-type"], "streamOptimized",
        "{info}"
    );
    let raw = work.join(format!("{name}.raw"));
    qemu_to_raw(&vmdks[0], "vmdk", &raw);
    run_ok(Command::new(tool("cot")).arg("info").arg(ova));
    virt_v2v_accepts(ova, work);
    fs::remove_dir_all(&x).unwrap();
    raw
}

/// The `ovf:size` of the `File` element whose `ovf:href` is `href` in `descriptor`.
fn file_size_attribute(descriptor: &str, href: &str) -> u64 {
    let element = descriptor
        .split("<File ")
        .skip(1)
        .map(|rest| &rest[..rest.find("/>").unwrap()])
        .find(|e| e.contains(&format!("ovf:href=\"{href}\"")))
        .unwrap_or_else(|| panic!("no File element for {href}: {descriptor}"));
    let value = element
        .split("ovf:size=\"")
        .nth(1)
        .and_then(|v| v.split('"').next())
        .unwrap_or_else(|| panic!("no ovf:size in <File {element}/>"));
    value.parse().unwrap()
}

/// `virt-v2v -i ova OVA --print-source` succeeds (it checks the manifest's digests of the
/// disk) and lists one disk.
fn virt_v2v_accepts(ova: &Path, work: &Path) {
    let out = run_ok(
        Command::new(tool("virt-v2v"))
            .args(["-i", "ova"])
            .arg(ova)
            .arg("--print-source")
            .env("TMPDIR", work)
            .env("LIBGUESTFS_BACKEND", "direct"),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // The disk list is a `disks:` line followed by one `\tINDEX [CONTROLLER]` line a disk.
    let disks: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "disks:")
        .skip(1)
        .take_while(|l| l.starts_with('\t'))
        .collect();
    assert_eq!(disks.len(), 1, "virt-v2v --print-source: {text}");
    assert!(
        disks[0].trim().starts_with("0 ["),
        "virt-v2v --print-source: {text}"
    );
}

/// The guest writes through the mount with qemu's `cache`; remount, commit in `form`, judges,
/// remount (the file header's first two tests).
fn guest_write_round_trip(cache: &str, form: CommitForm) {
    let guest = Guest::build();
    let tmp = tempdir();
    let ova = guest_ova(tmp.path(), &[("data/blob.bin", &blob())]);
    let ova_before = sha256_file(&ova);
    let mnt = tmp.path().join("mnt");

    let m = Mount::ok(&ova, &mnt, &[]);
    let run = guest.boot(&m.path("disks/root.raw"), "raw", cache, WRITE_SCRIPT);
    eprintln!(
        "boot with cache={cache}, writes: {:.2} s",
        run.elapsed.as_secs_f64()
    );
    let written = Written::from_output(run.ok());
    m.umount();
    assert_eq!(
        sha256_file(&ova),
        ova_before,
        "the OVA changed before commit"
    );
    assert!(overlay_dir(&ova).is_dir(), "no overlay beside the OVA");

    let m = Mount::ok(&ova, &mnt, &[]);
    written.check(&m.path("disks/root.raw"));
    let after_boot = status(&mnt);
    assert!(
        after_boot.changed_bytes >= 4 << 20 && after_boot.synced,
        "status after the guest wrote 4 MiB and synced: {after_boot:?}"
    );
    let overlay = after_boot.overlay.expect("status names the overlay");
    assert!(
        Path::new(&overlay).starts_with(overlay_dir(&ova)),
        "overlay {overlay}"
    );
    match form {
        CommitForm::Mount => {
            commit(&mnt);
            written.check(&m.path("disks/root.raw"));
            assert_eq!(
                status(&mnt),
                Status::CLEAN,
                "status after commit at the mount"
            );
            m.umount();
        }
        CommitForm::Source => {
            m.umount();
            commit(&ova);
        }
    }
    assert_ne!(
        sha256_file(&ova),
        ova_before,
        "commit left the OVA unchanged"
    );
    assert!(
        !overlay_dir(&ova).exists(),
        "commit left the overlay folder"
    );

    let raw = judge_ova(&ova, tmp.path(), "committed");
    written.check(&raw);

    let m = Mount::ok(&ova, &mnt, &[]);
    written.check(&m.path("disks/root.raw"));
    assert_eq!(
        status(&mnt),
        Status::CLEAN,
        "status after commit and remount"
    );
    m.umount();
    assert!(!overlay_dir(&ova).exists(), "a remount made an overlay");
}

#[test]
fn guest_writes_with_cache_none_survive_remount_and_commit_at_the_mount() {
    guest_write_round_trip("none", CommitForm::Mount);
}

#[test]
fn guest_writes_with_cache_writeback_survive_remount_and_commit_of_the_source() {
    guest_write_round_trip("writeback", CommitForm::Source);
}

/// The bytes of the 4 KiB `blocks` of the raw image `image`, concatenated.
fn blocks_of(image: &Path, blocks: &[u64]) -> Vec<u8> {
    let bytes = fs::read(image).unwrap();
    blocks
        .iter()
        .flat_map(|b| &bytes[(*b as usize) << 12..((*b as usize) + 1) << 12])
        .copied()
        .collect()
}

#[test]
fn guest_trim_shrinks_the_committed_vmdk() {
    let guest = Guest::build();
    let tmp = tempdir();
    let big = incompressible(BIG_MIB << 20, 7);
    let ova = guest_ova(tmp.path(), &[("big.bin", &big)]);
    let mnt = tmp.path().join("mnt");
    let m = Mount::ok(&ova, &mnt, &[]);
    let flat = m.path("disks/root.raw");
    assert_eq!(ext4_cat(&flat, "/big.bin"), big);
    let big_blocks = ext4_blocks(&flat, "/big.bin");
    assert_eq!(big_blocks.len(), BIG_MIB << 8, "{big_blocks:?}");
    let original = vmdk_member_size(&ova);

    // Deleted without a discard: the freed blocks keep their bytes.
    let run = guest.run(&Boot::new("set -e\nrm big.bin\nsync").disk(
        &flat,
        "raw",
        &["cache=none", "discard=ignore"],
    ));
    run.ok();
    commit(&mnt);
    let kept = vmdk_member_size(&ova);
    let raw = judge_ova(&ova, tmp.path(), "deleted");
    assert_eq!(ext4_names(&raw, "/"), ["hello.txt", "lost+found"]);
    assert!(
        blocks_of(&raw, &big_blocks) == big,
        "the blocks of the deleted file changed without a discard"
    );

    // Trimmed: the freed blocks become zero grains, which a stream-optimized VMDK omits.
    let run = guest.run(&Boot::new("set -e\nfstrim /root\nsync").disk(
        &flat,
        "raw",
        &["cache=none", "discard=unmap"],
    ));
    run.ok();
    assert_eq!(ext4_cat(&flat, "/hello.txt"), HELLO.as_bytes());
    commit(&mnt);
    let trimmed = vmdk_member_size(&ova);
    eprintln!("VMDK member: {original} bytes at first, {kept} after rm, {trimmed} after fstrim");
    assert!(
        trimmed + ((BIG_MIB as u64 - 1) << 20) < kept,
        "fstrim freed {BIG_MIB} MiB of random bytes, yet the VMDK went from {kept} to \
         {trimmed} bytes"
    );
    let raw = judge_ova(&ova, tmp.path(), "trimmed");
    assert_eq!(ext4_names(&raw, "/"), ["hello.txt", "lost+found"]);
    assert!(
        blocks_of(&raw, &big_blocks).iter().all(|b| *b == 0),
        "the trimmed blocks of the deleted file are not zero"
    );
    assert_eq!(ext4_cat(&raw, "/hello.txt"), HELLO.as_bytes());
    m.umount();
    assert!(
        !overlay_dir(&ova).exists(),
        "commit left the overlay folder"
    );
}
