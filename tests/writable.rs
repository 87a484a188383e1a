//! Writable flat disks through a real FUSE mount: writes go to the overlay, survive a
//! remount, show in `ovafs status`, and `ovafs commit` (through the mount or offline) puts
//! them into the package, judged by qemu-img (check, compare), GNU tar and sha256sum.
//!
//! Contents:
//! - writes_survive_a_remount_and_commit_through_the_mount: write, fsync, remount, status
//!   (text and JSON), commit through the mount; the flat disk, the extracted VMDK (qemu-img
//!   compare against a model raw image) and the manifest (sha256sum -c) agree; no overlay
//!   is left; an unchanged second disk's member is byte-identical.
//! - a_one_grain_change_deflates_one_grain_and_a_clean_commit_writes_nothing
//! - offline_commit_discard_and_the_overlay_option: `-o overlay=DIR`, `ovafs commit SRC`
//!   and `ovafs discard SRC DISK` without a mount, `ovafs discard MNT DISK` with one.
//! - growing_and_punching: `truncate -s` grows the disk and the descriptor's capacity
//!   follows; `fallocate -p` makes the committed VMDK smaller.
//! - other_formats_commit_as_stream_vmdk_and_raw_stays_raw: a qcow2 disk becomes a
//!   stream-optimized VMDK with `ovf:format` updated; a raw disk is committed raw.
//! - a_stale_overlay_is_refused_and_can_be_discarded: the package replaced under an
//!   overlay: the disk is read-only with a clear notice until the overlay is discarded.
//! - read_only_mounts_refuse_writes_and_commit_at_umount: `-o ro` refuses writes (EROFS)
//!   and says which overlays it does not show; `-o commit=umount` commits at `ovafs umount`;
//!   a manual mount's umount warns.
//! - a_folder_package_and_a_gzip_disk_commit_too, several_direct_writers_at_once.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const STREAM: &str = ovafs::sample::VMDK_STREAM_URI;
const MIB: u64 = 1 << 20;

/// A 16 MiB disk with scattered data, as raw (the model) and as a stream-optimized VMDK
/// made by qemu-img, packed with a second, smaller disk into `DIR/pkg/app.ova`.
struct Fixture {
    dir: tempfile::TempDir,
    model: PathBuf,
    other: PathBuf,
    ova: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempdir();
    let model = dir.path().join("model.raw");
    scattered_raw(&model, 16 * MIB, 12, 7);
    let vmdk = dir.path().join("disk1.vmdk");
    to_stream_vmdk(&model, &vmdk);
    let other_raw = dir.path().join("other.raw");
    scattered_raw(&other_raw, 4 * MIB, 4, 9);
    let other = dir.path().join("disk2.vmdk");
    to_stream_vmdk(&other_raw, &other);
    let ova = OvaBuilder::new(&dir.path().join("pkg"), "app")
        .disk(&vmdk, 16 * MIB, STREAM)
        .disk(&other, 4 * MIB, STREAM)
        .build();
    Fixture {
        model,
        other,
        ova,
        dir,
    }
}

impl Fixture {
    fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    fn overlay_folder(&self) -> PathBuf {
        let mut name = self.ova.file_name().unwrap().to_os_string();
        name.push(".ovafs-overlay");
        self.ova.with_file_name(name)
    }

    /// Writes `data` at `offset` into the model and, through the mount, the flat disk.
    fn write_both(&self, m: &Mount, offset: u64, data: &[u8]) {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(m.path("disks/disk1.raw"))
            .unwrap();
        f.write_all_at(data, offset).unwrap();
        f.sync_all().unwrap();
        let model = fs::OpenOptions::new()
            .write(true)
            .open(&self.model)
            .unwrap();
        model.write_all_at(data, offset).unwrap();
    }

    /// Extracts the package with GNU tar into a fresh folder and returns it.
    fn extract(&self, name: &str) -> PathBuf {
        let out = self.dir.path().join(name);
        fs::create_dir_all(&out).unwrap();
        tar_extract(&self.ova, &out);
        out
    }
}

fn ovafs_cmd(args: &[&str]) -> std::process::Output {
    Command::new(ovafs()).args(args).output().unwrap()
}

fn ovafs_ok(args: &[&str]) -> String {
    let out = ovafs_cmd(args);
    assert!(
        out.status.success(),
        "ovafs {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status_json(target: &Path) -> serde_json::Value {
    let text = ovafs_ok(&["status", "--json", path_str(target)]);
    serde_json::from_str(&text).unwrap()
}

fn disk_state<'a>(v: &'a serde_json::Value, disk: &str) -> &'a serde_json::Value {
    v.as_array()
        .unwrap()
        .iter()
        .find(|d| d["disk"] == disk)
        .unwrap_or_else(|| panic!("no {disk} in {v}"))
}

/// qemu-img judges the VMDK: `check` passes and its content equals `model`; and it is in
/// VMware's layout, field by field (tests/common/vmdk_layout.rs).
fn assert_vmdk_is(vmdk: &Path, model: &Path) {
    let layout = common::vmdk_layout::check_layout(vmdk);
    assert!(
        layout.vmware,
        "{}: {:?}",
        vmdk.display(),
        layout.differences
    );
    qemu_img(&["check", path_str(vmdk)]);
    qemu_img(&[
        "compare",
        "-f",
        "vmdk",
        "-F",
        "raw",
        path_str(vmdk),
        path_str(model),
    ]);
}

#[test]
fn writes_survive_a_remount_and_commit_through_the_mount() {
    let fx = fixture();
    let m = Mount::ok(&fx.ova, &fx.mnt(), &[]);
    assert!(!fx.overlay_folder().exists(), "reading makes no overlay");
    let mut data = vec![0u8; 300_000];
    Rng::new(3).fill(&mut data);
    fx.write_both(&m, 5 * MIB + 123, &data);
    fx.write_both(&m, 100, b"unaligned bytes at the start");
    let s = status_json(&m.dir);
    let d1 = disk_state(&s, "disk1.raw");
    assert_eq!(d1["changed"], true);
    assert_eq!(d1["synced"], true);
    assert!(d1["changed_bytes"].as_u64().unwrap() >= 300_000);
    assert_eq!(disk_state(&s, "disk2.raw")["changed"], false);
    let text = ovafs_ok(&["status", path_str(&m.dir)]);
    assert!(text.contains("disks/disk1.raw: changed"), "{text}");
    assert!(text.contains("disks/disk2.raw: unchanged"), "{text}");
    m.umount();

    let m = Mount::ok(&fx.ova, &fx.mnt(), &[]);
    assert_same_bytes(&m.path("disks/disk1.raw"), &fx.model);
    let before = fx.extract("before");
    let out = ovafs_ok(&["commit", path_str(&m.dir)]);
    assert!(out.contains("disks/disk1.raw: committed"), "{out}");
    assert!(
        !fx.overlay_folder().exists(),
        "the overlay is gone after commit"
    );
    assert_same_bytes(&m.path("disks/disk1.raw"), &fx.model);
    assert_eq!(status_json(&m.dir).as_array().unwrap().len(), 2);
    assert_eq!(
        disk_state(&status_json(&m.dir), "disk1.raw")["changed"],
        false
    );
    m.umount();

    let after = fx.extract("after");
    assert_vmdk_is(&after.join("disk1.vmdk"), &fx.model);
    common::verify::coreutils_check_manifest(&after, "app.mf");
    assert_eq!(
        fs::read(after.join("disk2.vmdk")).unwrap(),
        fs::read(before.join("disk2.vmdk")).unwrap(),
        "the unchanged disk's member is byte-identical"
    );
    assert_eq!(
        fs::read(after.join("disk2.vmdk")).unwrap(),
        fs::read(&fx.other).unwrap()
    );
    let ovf = fs::read_to_string(after.join("app.ovf")).unwrap();
    let size = fs::metadata(after.join("disk1.vmdk")).unwrap().len();
    assert!(ovf.contains(&format!("ovf:size=\"{size}\"")), "{ovf}");
    let m = Mount::ok(&fx.ova, &fx.mnt(), &[]);
    assert_same_bytes(&m.path("disks/disk1.raw"), &fx.model);
    m.umount();
}

#[test]
fn a_one_grain_change_deflates_one_grain_and_a_clean_commit_writes_nothing() {
    let fx = fixture();
    let m = Mount::ok(&fx.ova, &fx.mnt(), &[]);
    let out = ovafs_ok(&["commit", path_str(&m.dir)]);
    assert!(out.contains("nothing to commit"), "{out}");
    let original = fs::read(&fx.ova).unwrap();
    // 4 KiB inside the grain at 3 MiB (64 KiB grains): one grain is new.
    fx.write_both(&m, 3 * MIB + 8192, &[0xa5; 4096]);
    let out = ovafs_ok(&["commit", path_str(&m.dir)]);
    assert!(out.contains(", 1 deflated,"), "{out}");
    m.umount();
    assert_ne!(fs::read(&fx.ova).unwrap(), original);
    let after = fx.extract("after");
    assert_vmdk_is(&after.join("disk1.vmdk"), &fx.model);
}

#[test]
fn offline_commit_discard_and_the_overlay_option() {
    let fx = fixture();
    let folder = fx.dir.path().join("my-overlays");
    let opt = format!("overlay={}", folder.display());
    let m = Mount::ok(&fx.ova, &fx.mnt(), &[&opt]);
    fx.write_both(&m, 7 * MIB, &[1u8; 65536]);
    m.umount();
    assert!(folder.join("disk1.raw.map").exists());
    assert!(!fx.overlay_folder().exists());

    let overlay_arg = format!("--overlay={}", folder.display());
    let s: serde_json::Value = serde_json::from_str(&ovafs_ok(&[
        "status",
        "--json",
        &overlay_arg,
        path_str(&fx.ova),
    ]))
    .unwrap();
    assert_eq!(disk_state(&s, "disk1.raw")["changed_bytes"], 65536);
    let out = ovafs_ok(&["commit", "-o", &opt, path_str(&fx.ova)]);
    assert!(out.contains("disks/disk1.raw: committed"), "{out}");
    assert!(!folder.join("disk1.raw.map").exists());
    let after = fx.extract("after");
    assert_vmdk_is(&after.join("disk1.vmdk"), &fx.model);

    // Discard through a mount: the disk reads as before the write.
    let committed = fx.dir.path().join("committed.raw");
    fs::copy(&fx.model, &committed).unwrap();
    let m = Mount::ok(&fx.ova, &fx.mnt(), &[]);
    let f = fs::OpenOptions::new()
        .write(true)
        .open(m.path("disks/disk2.raw"))
        .unwrap();
    f.write_all_at(&[9u8; 5000], 0).unwrap();
    f.sync_all().unwrap();
    let refused = ovafs_cmd(&["discard", path_str(&m.dir), "disk2"]);
    assert!(!refused.status.success(), "an open disk is not discarded");
    drop(f);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let out = ovafs_ok(&["discard", path_str(&m.dir), "disk2"]);
    assert!(out.contains("changes discarded"), "{out}");
    let mut head = vec![0u8; 5000];
    fs::File::open(m.path("disks/disk2.raw"))
        .unwrap()
        .read_exact_at(&mut head, 0)
        .unwrap();
    let mut want = vec![0u8; 5000];
    let other_raw = fx.dir.path().join("other.raw");
    fs::File::open(&other_raw)
        .unwrap()
        .read_exact_at(&mut want, 0)
        .unwrap();
    assert_eq!(head, want, "the discarded write is gone");
    m.umount();

    // Discard offline.
    let m = Mount::ok(&fx.ova, &fx.mnt(), &[]);
    fx.write_both(&m, 0, &[2u8; 4096]);
    m.umount();
    let out = ovafs_ok(&["discard", path_str(&fx.ova), "disk1.raw"]);
    assert!(out.contains("changes discarded"), "{out}");
    assert!(!fx.overlay_folder().exists());
    let m = Mount::ok(&fx.ova, &fx.mnt(), &[]);
    assert_same_bytes(&m.path("disks/disk1.raw"), &committed);
    m.umount();
}

#[test]
fn growing_and_punching() {
    let fx = fixture();
    let m = Mount::ok(&fx.ova, &fx.mnt(), &[]);
    run_ok(
        Command::new("truncate")
            .args(["-s", "20M"])
            .arg(m.path("disks/disk1.raw")),
    );
    assert_eq!(
        fs::metadata(m.path("disks/disk1.raw")).unwrap().len(),
        20 * MIB
    );
    fs::OpenOptions::new()
        .write(true)
        .open(&fx.model)
        .unwrap()
        .set_len(20 * MIB)
        .unwrap();
    // And `qemu-img resize` through the mount, as a user grows a disk for a guest.
    qemu_img(&[
        "resize",
        "-f",
        "raw",
        path_str(&m.path("disks/disk1.raw")),
        "22M",
    ]);
    fs::OpenOptions::new()
        .write(true)
        .open(&fx.model)
        .unwrap()
        .set_len(22 * MIB)
        .unwrap();
    fx.write_both(&m, 18 * MIB, b"data in the grown part");
    ovafs_ok(&["commit", path_str(&m.dir)]);
    m.umount();
    let after = fx.extract("grown");
    assert_vmdk_is(&after.join("disk1.vmdk"), &fx.model);
    let ovf = fs::read_to_string(after.join("app.ovf")).unwrap();
    assert!(
        ovf.contains("ovf:capacity=\"23068672\"") || ovf.contains("ovf:capacity=\"22\""),
        "the capacity follows: {ovf}"
    );
    let grown_size = fs::metadata(after.join("disk1.vmdk")).unwrap().len();

    // Punch every data range: the committed VMDK shrinks to (almost) nothing.
    let m = Mount::ok(&fx.ova, &fx.mnt(), &[]);
    run_ok(
        Command::new("fallocate")
            .args(["-p", "-o", "0", "-l", "22M"])
            .arg(m.path("disks/disk1.raw")),
    );
    ovafs_ok(&["commit", path_str(&m.dir)]);
    m.umount();
    let after = fx.extract("punched");
    let punched_size = fs::metadata(after.join("disk1.vmdk")).unwrap().len();
    assert!(
        punched_size * 4 < grown_size,
        "punched {punched_size} vs {grown_size}"
    );
    let zeros = fx.dir.path().join("zeros.raw");
    fs::File::create(&zeros).unwrap().set_len(22 * MIB).unwrap();
    assert_vmdk_is(&after.join("disk1.vmdk"), &zeros);
}

#[test]
fn other_formats_commit_as_stream_vmdk_and_raw_stays_raw() {
    let dir = tempdir();
    let model = dir.path().join("model.raw");
    scattered_raw(&model, 8 * MIB, 6, 5);
    let qcow = dir.path().join("disk1.qcow2");
    raw_to_format(&model, "qcow2", &qcow);
    let raw_model = dir.path().join("raw-model.raw");
    scattered_raw(&raw_model, 2 * MIB, 3, 6);
    let raw = dir.path().join("disk2.img");
    fs::copy(&raw_model, &raw).unwrap();
    let qcow_uri = "http://www.qemu.org/interfaces/specifications/qcow2.html";
    let raw_uri = "http://www.qemu.org/interfaces/specifications/raw.html";
    let ova = OvaBuilder::new(&dir.path().join("pkg"), "fmt")
        .disk(&qcow, 8 * MIB, qcow_uri)
        .disk(&raw, 2 * MIB, raw_uri)
        .build();
    let m = Mount::ok(&ova, &dir.path().join("mnt"), &[]);
    for (disk, model) in [("disks/disk1.raw", &model), ("disks/disk2.raw", &raw_model)] {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(m.path(disk))
            .unwrap();
        f.write_all_at(b"changed", 4096 * 3).unwrap();
        f.sync_all().unwrap();
        let mf = fs::OpenOptions::new().write(true).open(model).unwrap();
        mf.write_all_at(b"changed", 4096 * 3).unwrap();
    }
    ovafs_ok(&["commit", path_str(&m.dir)]);
    assert_same_bytes(&m.path("disks/disk1.raw"), &model);
    assert_same_bytes(&m.path("disks/disk2.raw"), &raw_model);
    m.umount();
    let out = dir.path().join("x");
    fs::create_dir_all(&out).unwrap();
    tar_extract(&ova, &out);
    assert_vmdk_is(&out.join("disk1.qcow2"), &model);
    assert_eq!(
        fs::read(out.join("disk2.img")).unwrap(),
        fs::read(&raw_model).unwrap()
    );
    let ovf = fs::read_to_string(out.join("fmt.ovf")).unwrap();
    assert!(
        ovf.contains(STREAM),
        "the qcow2 disk is now a stream VMDK: {ovf}"
    );
    assert!(ovf.contains(raw_uri), "the raw disk stays raw: {ovf}");
    assert!(!ovf.contains(qcow_uri), "{ovf}");
}

#[test]
fn a_stale_overlay_is_refused_and_can_be_discarded() {
    let fx = fixture();
    let m = Mount::ok(&fx.ova, &fx.mnt(), &[]);
    fx.write_both(&m, 0, &[3u8; 4096]);
    m.umount();
    // Another export of the appliance under the same name: other disk bytes.
    let pkg = fx.ova.parent().unwrap().to_path_buf();
    let changed = fx.dir.path().join("changed.raw");
    scattered_raw(&changed, 16 * MIB, 12, 99);
    to_stream_vmdk(&changed, &pkg.join("disk1.vmdk"));
    let ovf = fs::read_to_string(pkg.join("app.ovf")).unwrap();
    let size = fs::metadata(pkg.join("disk1.vmdk")).unwrap().len();
    let ovf = regex_free_size_swap(&ovf, "disk1.vmdk", size);
    fs::write(pkg.join("app.ovf"), ovf).unwrap();
    let mf = ovafs::sample::manifest(&pkg, &["app.ovf", "disk1.vmdk", "disk2.vmdk"]).unwrap();
    fs::write(pkg.join("app.mf"), mf).unwrap();
    run_ok(
        Command::new(tool("tar"))
            .args(["--format=ustar", "-cf"])
            .arg(&fx.ova)
            .arg("-C")
            .arg(&pkg)
            .args(["app.ovf", "app.mf", "disk1.vmdk", "disk2.vmdk"]),
    );
    let (m, notice) = Mount::bounded(&fx.ova, &fx.mnt(), &[], 30);
    let m = m.expect("the mount works with a stale overlay");
    assert!(
        notice.contains("disks/disk1.raw is read-only") && notice.contains("stale"),
        "{notice}"
    );
    let err = fs::OpenOptions::new()
        .write(true)
        .open(m.path("disks/disk1.raw"))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
    assert_same_bytes(&m.path("disks/disk1.raw"), &changed);
    let text = ovafs_ok(&["status", path_str(&m.dir)]);
    assert!(
        text.contains("read-only") && text.contains("stale"),
        "{text}"
    );
    let out = ovafs_ok(&["discard", path_str(&m.dir), "disk1"]);
    assert!(out.contains("changes discarded"), "{out}");
    assert!(!fx.overlay_folder().exists());
    m.umount();
    let m = Mount::ok(&fx.ova, &fx.mnt(), &[]);
    fs::OpenOptions::new()
        .write(true)
        .open(m.path("disks/disk1.raw"))
        .expect("writable again after the discard");
    m.umount();
}

/// The descriptor with the `ovf:size` of the File whose href is `href` set to `size`.
fn regex_free_size_swap(ovf: &str, href: &str, size: u64) -> String {
    let at = ovf.find(&format!("ovf:href=\"{href}\"")).unwrap();
    let start = at + ovf[at..].find("ovf:size=\"").unwrap() + "ovf:size=\"".len();
    let end = start + ovf[start..].find('"').unwrap();
    format!("{}{size}{}", &ovf[..start], &ovf[end..])
}

#[test]
fn read_only_mounts_refuse_writes_and_commit_at_umount() {
    let fx = fixture();
    let m = Mount::ok(&fx.ova, &fx.mnt(), &["ro"]);
    let err = fs::OpenOptions::new()
        .write(true)
        .open(m.path("disks/disk1.raw"))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    m.umount();

    // A manual mount's umount says where the changes stay.
    let m = Mount::ok(&fx.ova, &fx.mnt(), &[]);
    fx.write_both(&m, MIB, &[4u8; 8192]);
    let out = Command::new(ovafs())
        .arg("umount")
        .arg(&m.dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let warning = String::from_utf8_lossy(&out.stderr);
    assert!(
        warning.contains("uncommitted changes of disks/disk1.raw stay in the overlay"),
        "{warning}"
    );
    assert!(fx.overlay_folder().exists());

    // A read-only mount says it does not show them, and the CLI says it is read-only.
    let (m, notice) = Mount::bounded(&fx.ova, &fx.mnt(), &["ro"], 30);
    let m = m.expect("read-only mount");
    assert!(
        notice.contains("disks/disk1.raw has uncommitted changes in its overlay, not shown"),
        "{notice}"
    );
    let out = ovafs_cmd(&["status", path_str(&m.dir)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the mount is read-only"));
    m.umount();

    let m = Mount::ok(&fx.ova, &fx.mnt(), &["commit=umount"]);
    fx.write_both(&m, 2 * MIB, &[5u8; 8192]);
    m.umount();
    assert!(!fx.overlay_folder().exists(), "committed at umount");
    let after = fx.extract("after");
    assert_vmdk_is(&after.join("disk1.vmdk"), &fx.model);
}

#[test]
fn a_folder_package_and_a_gzip_disk_commit_too() {
    let dir = tempdir();
    let model = dir.path().join("model.raw");
    scattered_raw(&model, 8 * MIB, 6, 21);
    let vmdk = dir.path().join("disk1.vmdk");
    to_stream_vmdk(&model, &vmdk);
    let gz_model = dir.path().join("gz-model.raw");
    scattered_raw(&gz_model, 4 * MIB, 4, 22);
    let gz_vmdk = dir.path().join("disk2.vmdk");
    to_stream_vmdk(&gz_model, &gz_vmdk);
    // An unpacked package: the descriptor, the manifest and the disks as files.
    let pkg = dir.path().join("pkg");
    OvaBuilder::new(&pkg, "folder")
        .disk(&vmdk, 8 * MIB, STREAM)
        .gzip_disk(&gz_vmdk, 4 * MIB, STREAM)
        .write_package();
    let ovf = pkg.join("folder.ovf");
    let m = Mount::ok(&ovf, &dir.path().join("mnt"), &[]);
    for (disk, model, at) in [
        ("disks/disk1.raw", &model, 3 * MIB + 5),
        ("disks/disk2.raw", &gz_model, 1000),
    ] {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(m.path(disk))
            .unwrap();
        f.write_all_at(b"folder package change", at).unwrap();
        f.sync_all().unwrap();
        let mf = fs::OpenOptions::new().write(true).open(model).unwrap();
        mf.write_all_at(b"folder package change", at).unwrap();
    }
    ovafs_ok(&["commit", path_str(&m.dir)]);
    assert_same_bytes(&m.path("disks/disk1.raw"), &model);
    assert_same_bytes(&m.path("disks/disk2.raw"), &gz_model);
    m.umount();
    assert_vmdk_is(&pkg.join("disk1.vmdk"), &model);
    // The gzip member now holds the new VMDK as it is, and the File says so.
    assert_vmdk_is(&pkg.join("disk2.vmdk.gz"), &gz_model);
    let text = fs::read_to_string(&ovf).unwrap();
    assert!(!text.contains("ovf:compression"), "{text}");
    common::verify::coreutils_check_manifest(&pkg, "folder.mf");
    assert!(!pkg.join("folder.ovf.ovafs-overlay").exists());
    let m = Mount::ok(&ovf, &dir.path().join("mnt"), &[]);
    assert_same_bytes(&m.path("disks/disk1.raw"), &model);
    assert_same_bytes(&m.path("disks/disk2.raw"), &gz_model);
    m.umount();
}

#[test]
fn several_direct_writers_at_once() {
    use std::os::unix::fs::OpenOptionsExt;
    let fx = fixture();
    let m = Mount::ok(&fx.ova, &fx.mnt(), &[]);
    let disk = m.path("disks/disk1.raw");
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let disk = disk.clone();
            std::thread::spawn(move || {
                let f = fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(&disk)
                    .unwrap();
                // 4 KiB-aligned buffers for O_DIRECT.
                let mut buf = vec![0u8; (128 << 10) + 4096];
                let at = buf.as_ptr().align_offset(4096);
                let block = &mut buf[at..at + (128 << 10)];
                for i in 0..16u64 {
                    block.fill((w * 16 + i) as u8 | 0x80);
                    // Interleaved: writer w writes every 4th 128 KiB block.
                    f.write_all_at(block, (i * 4 + w) * (128 << 10)).unwrap();
                }
                f.sync_all().unwrap();
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let model = fs::OpenOptions::new().write(true).open(&fx.model).unwrap();
    for w in 0..4u64 {
        for i in 0..16u64 {
            let block = vec![(w * 16 + i) as u8 | 0x80; 128 << 10];
            model
                .write_all_at(&block, (i * 4 + w) * (128 << 10))
                .unwrap();
        }
    }
    assert_same_bytes(&disk, &fx.model);
    ovafs_ok(&["commit", path_str(&m.dir)]);
    m.umount();
    let after = fx.extract("after");
    assert_vmdk_is(&after.join("disk1.vmdk"), &fx.model);
}
