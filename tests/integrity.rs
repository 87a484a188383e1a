//! Integrity checking at mount time: `-o verify=lazy` (default), `strict`, `off`, and the
//! status files `.ovafs/status` and `.ovafs/status.json`.
//!
//! The tampered package changes one byte of the disk member where the VMDK reader does not
//! look (the NUL padding of its embedded descriptor), so the image still decodes and only
//! the manifest digest can tell.

mod common;

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

const STREAM: &str = ovafs::sample::VMDK_STREAM_URI;

/// A valid OVA and a copy whose disk member differs from its manifest digest by one byte.
fn packages(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let raw = dir.join("disk.img");
    let vmdk = dir.join("disk.vmdk");
    scattered_raw(&raw, 8 << 20, 4, 77);
    to_stream_vmdk(&raw, &vmdk);
    let good = OvaBuilder::new(&dir.join("good"), "good")
        .disk(&vmdk, 8 << 20, STREAM)
        .build();
    // Same package, then one byte of the descriptor's NUL padding (sector 20) changed inside
    // the archive: the manifest still has the old digest.
    let bad_pkg = dir.join("bad");
    let names = OvaBuilder::new(&bad_pkg, "bad")
        .disk(&vmdk, 8 << 20, STREAM)
        .write_package();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(bad_pkg.join("disk.vmdk"))
        .unwrap();
    f.write_all_at(b"X", 20 * 512 + 100).unwrap();
    drop(f);
    let bad = dir.join("bad.ova");
    run_ok(tar_create(&bad, &bad_pkg).args(&names));
    (good, bad, raw)
}

/// Waits until `.ovafs/status` reports a finished verification; returns its text.
fn finished_status(m: &Mount) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = fs::read_to_string(m.path(".ovafs/status")).unwrap();
        if text.starts_with("verification: passed") || text.starts_with("verification: FAILED") {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "verification never finished: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn lazy_verification_reports_and_fails_reads_of_a_tampered_disk() {
    let tmp = tempdir();
    let (good, bad, raw) = packages(tmp.path());

    let m = Mount::ok(&good, &tmp.path().join("mnt-good"), &[]);
    let status = finished_status(&m);
    assert!(
        status.starts_with("verification: passed (lazy)"),
        "{status}"
    );
    assert!(
        status.contains("ok") && status.contains("disk.vmdk"),
        "{status}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(m.path(".ovafs/status.json")).unwrap()).unwrap();
    assert_eq!(json["state"], "done");
    assert_eq!(json["report"]["passed"], true);
    assert_same_bytes(&m.path("disks/disk.raw"), &raw);
    m.umount();

    let m = Mount::ok(&bad, &tmp.path().join("mnt-bad"), &[]);
    let status = finished_status(&m);
    assert!(
        status.starts_with("verification: FAILED (lazy)"),
        "{status}"
    );
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("MISMATCH") && l.ends_with("disk.vmdk")),
        "{status}"
    );
    let flat = File::open(m.path("disks/disk.raw")).unwrap();
    let mut buf = vec![0u8; 4096];
    assert_eq!(
        flat.read_at(&mut buf, 0).unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
    // The member itself is still served as stored, and the rest of the mount works.
    assert!(fs::read(m.path("bad.ovf")).unwrap().starts_with(b"<?xml"));
    assert_eq!(
        fs::read(m.path("disk.vmdk")).unwrap().len() as u64,
        fs::metadata(tmp.path().join("bad/disk.vmdk"))
            .unwrap()
            .len()
    );
    drop(flat);
    m.umount();
}

#[test]
fn strict_verification_refuses_a_tampered_package_and_mounts_a_good_one() {
    let tmp = tempdir();
    let (good, bad, _) = packages(tmp.path());
    let err = Mount::new(&bad, &tmp.path().join("mnt-bad"), &["verify=strict"]).unwrap_err();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("verify=strict") && err.contains("disk.vmdk"),
        "{err}"
    );

    let m = Mount::ok(&good, &tmp.path().join("mnt-good"), &["verify=strict"]);
    let status = fs::read_to_string(m.path(".ovafs/status")).unwrap();
    assert!(
        status.starts_with("verification: passed (strict)"),
        "{status}"
    );
    m.umount();
}

#[test]
fn verification_off_checks_nothing() {
    let tmp = tempdir();
    let (_, bad, raw) = packages(tmp.path());
    let m = Mount::ok(&bad, &tmp.path().join("mnt"), &["verify=off"]);
    let status = fs::read_to_string(m.path(".ovafs/status")).unwrap();
    assert!(status.starts_with("verification: off"), "{status}");
    std::thread::sleep(Duration::from_millis(300));
    assert_same_bytes(&m.path("disks/disk.raw"), &raw);
    m.umount();
    assert!(Mount::new(&bad, &tmp.path().join("mnt2"), &["verify=sometimes"]).is_err());
}

#[test]
fn signed_corpus_ova_verifies_at_mount() {
    let Some(corpus) = corpus_dir("signed corpus mount test") else {
        return;
    };
    let tmp = tempdir();
    let m = Mount::ok(
        &corpus.join("virtualbox/tdAppliance1-t6-ovftool-4.1.0.ova"),
        &tmp.path().join("mnt"),
        &["verify=strict"],
    );
    let status = fs::read_to_string(m.path(".ovafs/status")).unwrap();
    assert!(status.contains("signature ok"), "{status}");
    m.umount();
}
