//! Hostile neighbours: files other users plant beside a package, a second mount of the same
//! package, and `ovafs umount` pointed at mounts that are not what they claim. Real mounts,
//! as root; planted files made by `nobody` (setpriv) in a sticky, world-writable folder.
//! Every test asserts the refusal and that nothing was written: the SHA-256 of every file in
//! the package folder (and the type or target of every other entry) is the same before and
//! after.
//!
//! Contents:
//! - `journal_*`: a journal owned by `nobody`, group/other-writable, hard-linked, a symlink, a
//!   FIFO, a directory (the mount returns promptly), a version 1 journal, a sealed version 2
//!   journal aimed at bytes it never saw: each is left alone, named in the mount's notice, and
//!   the package is served read-only (edits fail with EROFS).
//! - `ro_mount_reports_a_pending_journal_and_writes_nothing`; the same journal is replayed by
//!   a later writable mount (it was genuine).
//! - `journal_planted_while_mounted_stops_commits`: the next edit fails with EROFS.
//! - `temp_files_planted_by_others_are_kept`: only ovafs's own temporary files are deleted.
//! - `second_writable_mount_is_read_only`, `rewrite_commit_keeps_the_package_locked`.
//! - `folder_journal_renaming_a_planted_file_is_refused`,
//!   `folder_package_lock_follows_the_renamed_descriptor` (unpacked packages).
//! - `umount_recovers_the_served_package_not_the_fsname` and
//!   `umount_refuses_mounts_that_are_not_ovafs` (tmpfs, plain `fuse`).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use ovafs::commit::journal::{Identity, Journal, Kind, Op, sector_digests};

const STREAM: &str = ovafs::sample::VMDK_STREAM_URI;

/// Where the planted files go: a sticky, world-writable folder (like /tmp) inside a fresh
/// temporary folder that `nobody` may enter.
struct Shared {
    tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Shared {
    fn new() -> Shared {
        let tmp = tempdir();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let dir = tmp.path().join("shared");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777)).unwrap();
        Shared { tmp, dir }
    }

    /// A mount point outside the shared folder.
    fn mnt(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// A sample OVA (2 CPUs) in the shared folder, owned by root.
    fn ova(&self, name: &str) -> PathBuf {
        let raw = self.tmp.path().join(format!("{name}.img"));
        let vmdk = self.tmp.path().join(format!("{name}-disk1.vmdk"));
        scattered_raw(&raw, 1 << 20, 2, 7);
        to_stream_vmdk(&raw, &vmdk);
        OvaBuilder::new(&self.dir, name)
            .disk(&vmdk, 1 << 20, STREAM)
            .build()
    }

    /// A sample unpacked package (2 CPUs) in the shared folder; returns its `.ovf`.
    fn ovf(&self, name: &str) -> PathBuf {
        let raw = self.tmp.path().join(format!("{name}.img"));
        let vmdk = self.tmp.path().join(format!("{name}-disk1.vmdk"));
        scattered_raw(&raw, 1 << 20, 2, 7);
        to_stream_vmdk(&raw, &vmdk);
        OvaBuilder::new(&self.dir, name)
            .disk(&vmdk, 1 << 20, STREAM)
            .write_package();
        self.dir.join(format!("{name}.ovf"))
    }

    /// Writes `bytes` at `dst` as `nobody` (so `nobody` owns it, mode 0644).
    fn plant_as_nobody(&self, dst: &Path, bytes: &[u8]) {
        let payload = self.tmp.path().join("payload");
        fs::write(&payload, bytes).unwrap();
        fs::set_permissions(&payload, fs::Permissions::from_mode(0o644)).unwrap();
        run_ok(as_nobody().arg(tool("cp")).arg(&payload).arg(dst));
        assert_eq!(fs::metadata(dst).unwrap().uid(), 65534);
    }
}

fn journal_of(p: &Path) -> PathBuf {
    let name = p.file_name().unwrap().to_str().unwrap();
    p.with_file_name(format!("{name}.ovafs-journal"))
}

/// Every entry of a folder: a file's SHA-256, a symlink's target, or its type.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let meta = fs::symlink_metadata(&p).unwrap();
        let what = if meta.file_type().is_symlink() {
            format!("symlink to {}", fs::read_link(&p).unwrap().display())
        } else if meta.is_file() {
            format!("{} uid {}", sha256_file(&p), meta.uid())
        } else {
            format!("{:?}", meta.file_type())
        };
        out.insert(e.file_name().to_string_lossy().into_owned(), what);
    }
    out
}

/// A sealed version 2 journal that writes "XXXX" over "Samp" of the descriptor's leading
/// comment (bytes 44..48 of the first member's data, at offset 512), bound to the sector as
/// it is now: a journal ovafs itself could have written. Returns its bytes and the offset of
/// "XXXX".
fn genuine_journal(ova: &Path) -> (Vec<u8>, usize) {
    let bytes = fs::read(ova).unwrap();
    assert!(bytes[512..].starts_with(b"<?xml"), "descriptor data at 512");
    let old = bytes[512..1024].to_vec();
    assert_eq!(&old[44..48], b"Samp");
    let mut data = old.clone();
    data[44..48].copy_from_slice(b"XXXX");
    (archive_journal(ova, data, &old).encode(), 556)
}

/// A version 2 journal for the archive `ova` as it is now (its size, device and inode) that
/// writes `data` at offset 512, claiming the bytes there were `old`.
fn archive_journal(ova: &Path, data: Vec<u8>, old: &[u8]) -> Journal {
    let meta = fs::metadata(ova).unwrap();
    Journal {
        kind: Kind::Archive,
        target: Identity {
            size: meta.len(),
            dev: meta.dev(),
            ino: meta.ino(),
        },
        ops: vec![Op::Write {
            offset: 512,
            data,
            old: sector_digests(old),
        }],
    }
}

/// Writes `bytes` to `path` with mode 0600: the journal's owner and mode as ovafs makes them.
fn write_private(path: impl AsRef<Path>, bytes: impl AsRef<[u8]>) {
    let path = path.as_ref();
    fs::write(path, bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

/// Runs `ovafs mount` under `timeout` (a planted FIFO must not hang it): the mount guard, or
/// none, and stderr.
fn mount(source: &Path, dir: &Path, opts: &[&str]) -> (Option<Mount>, String) {
    Mount::bounded(source, dir, opts, 60)
}

/// [`mount`], which must succeed: the guard and the notices on stderr.
fn mount_ok(source: &Path, dir: &Path, opts: &[&str]) -> (Mount, String) {
    match mount(source, dir, opts) {
        (Some(m), err) => (m, err),
        (None, err) => panic!(
            "mount of {} on {} refused: {err}",
            source.display(),
            dir.display()
        ),
    }
}

/// `echo N > vm/cpus` on the mount.
fn set_cpus(m: &Mount, n: u32) -> Output {
    sh(&format!("echo {n} > '{}'", m.path("vm/cpus").display()))
}

fn assert_read_only(m: &Mount) {
    let out = set_cpus(m, 4);
    assert!(!out.status.success(), "an edit went through");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Read-only file system"), "{err}");
    assert_eq!(fs::read_to_string(m.path("vm/cpus")).unwrap(), "2\n");
}

/// Plants something at the journal's name with `plant`, mounts the package writable, and
/// checks: the mount is up promptly, read-only, its notice names the journal and contains
/// `rule`; nothing in the folder changed, also after `ovafs umount`.
fn planted_journal_is_left_alone(rule: &str, plant: impl FnOnce(&Shared, &Path, &Path)) {
    let s = Shared::new();
    let ova = s.ova("vm");
    plant(&s, &ova, &journal_of(&ova));
    let before = snapshot(&s.dir);
    let (m, err) = mount_ok(&ova, &s.mnt("mnt"), &[]);
    println!("notice: {err}");
    assert!(err.contains("vm.ova.ovafs-journal"), "{err}");
    assert!(err.contains(rule), "{err}");
    assert!(err.contains("read-only"), "{err}");
    // The status file says it too, for users who never saw the mount's stderr.
    let status = fs::read_to_string(m.path(".ovafs/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("package: ") && l.contains("vm.ova.ovafs-journal"))
        .unwrap_or_else(|| panic!("no package notice in the status:\n{status}"));
    assert!(line.contains(rule), "{line}");
    assert_read_only(&m);
    assert_eq!(snapshot(&s.dir), before, "the folder changed while mounted");
    m.umount();
    assert_eq!(snapshot(&s.dir), before, "the folder changed at umount");
}

#[test]
fn journal_owned_by_nobody() {
    planted_journal_is_left_alone("owned by uid 65534", |s, ova, j| {
        s.plant_as_nobody(j, &genuine_journal(ova).0)
    });
}

#[test]
fn journal_writable_by_group_or_others() {
    planted_journal_is_left_alone("writable by group or others", |_, ova, j| {
        fs::write(j, genuine_journal(ova).0).unwrap();
        fs::set_permissions(j, fs::Permissions::from_mode(0o666)).unwrap();
    });
}

#[test]
fn journal_hard_linked() {
    planted_journal_is_left_alone("2 hard links", |s, ova, j| {
        let other = s.dir.join("elsewhere");
        write_private(&other, genuine_journal(ova).0);
        fs::hard_link(&other, j).unwrap();
    });
}

#[test]
fn journal_symlink() {
    planted_journal_is_left_alone("symbolic link", |s, ova, j| {
        let victim = s.dir.join("victim");
        write_private(&victim, genuine_journal(ova).0);
        std::os::unix::fs::symlink(&victim, j).unwrap();
    });
}

#[test]
fn journal_fifo_does_not_hang_the_mount() {
    planted_journal_is_left_alone("FIFO", |_, _, j| {
        run_ok(as_nobody().arg(tool("mkfifo")).arg(j));
    });
}

#[test]
fn journal_directory() {
    planted_journal_is_left_alone("directory", |_, _, j| {
        run_ok(as_nobody().arg(tool("mkdir")).arg(j));
    });
}

#[test]
fn journal_of_version_1_cannot_be_proven() {
    planted_journal_is_left_alone("version 1", |_, ova, j| {
        // What ovafs wrote before journals carried old-bytes digests: well sealed.
        let meta = fs::metadata(ova).unwrap();
        let mut v = b"OVAFSJNL".to_vec();
        for x in [1u32, 1] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        for x in [meta.len(), meta.dev(), meta.ino()] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.extend_from_slice(&1u32.to_le_bytes());
        v.push(1);
        v.extend_from_slice(&556u64.to_le_bytes());
        v.extend_from_slice(&4u32.to_le_bytes());
        v.extend_from_slice(b"XXXX");
        let sum = ovafs::commit::journal::digest(&v);
        v.extend_from_slice(&sum);
        write_private(j, v);
    });
}

#[test]
fn journal_aimed_at_bytes_it_never_saw() {
    planted_journal_is_left_alone("neither the bytes", |_, ova, j| {
        // Right owner, mode, checksum and identity; the old-bytes digests are of other bytes.
        let bytes = fs::read(ova).unwrap();
        let mut data = bytes[512..1024].to_vec();
        data[44..48].copy_from_slice(b"XXXX");
        write_private(j, archive_journal(ova, data, &[b'A'; 512]).encode());
    });
}

#[test]
fn ro_mount_reports_a_pending_journal_and_writes_nothing() {
    let s = Shared::new();
    let ova = s.ova("vm");
    let (journal, at) = genuine_journal(&ova);
    write_private(journal_of(&ova), &journal);
    let temp = s.dir.join(".vm.ova.ovafs-tmp-left");
    write_private(&temp, b"half a rewrite");
    let before = snapshot(&s.dir);
    let ova_sum = sha256_file(&ova);

    let (m, err) = mount_ok(&ova, &s.mnt("mnt"), &["ro"]);
    println!("notice: {err}");
    assert!(err.contains("waits, not replayed"), "{err}");
    assert!(err.contains("read-only"), "{err}");
    assert_read_only(&m);
    m.umount();
    assert_eq!(sha256_file(&ova), ova_sum);
    assert_eq!(snapshot(&s.dir), before);

    // It was a genuine journal: a writable mount completes it and removes the temporary file.
    let (m, _) = mount_ok(&ova, &s.mnt("mnt"), &[]);
    assert!(!journal_of(&ova).exists() && !temp.exists());
    assert_eq!(&fs::read(&ova).unwrap()[at..at + 4], b"XXXX");
    assert!(set_cpus(&m, 3).status.success());
    m.umount();
}

#[test]
fn journal_planted_while_mounted_stops_commits() {
    let s = Shared::new();
    let ova = s.ova("vm");
    let (m, _) = mount_ok(&ova, &s.mnt("mnt"), &[]);
    s.plant_as_nobody(&journal_of(&ova), &genuine_journal(&ova).0);
    let before = snapshot(&s.dir);
    // The mount is writable, so the refusal comes at close (which bash ignores): python
    // reports a failed close.
    let out = Command::new(tool("python3"))
        .arg("-c")
        .arg("import sys; f = open(sys.argv[1], 'w'); f.write('4\\n'); f.close()")
        .arg(m.path("vm/cpus"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "an edit went through");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Read-only file system"), "{err}");
    assert_eq!(snapshot(&s.dir), before, "the planted journal was used");
    assert_eq!(fs::read_to_string(m.path("vm/cpus")).unwrap(), "2\n");
    // Gone again: commits go on.
    fs::remove_file(journal_of(&ova)).unwrap();
    assert!(set_cpus(&m, 4).status.success());
    m.umount();
}

#[test]
fn temp_files_planted_by_others_are_kept() {
    let s = Shared::new();
    let ova = s.ova("vm");
    let planted = s.dir.join(".vm.ova.ovafs-tmp-nobody");
    s.plant_as_nobody(&planted, b"not yours to delete");
    let victim = s.dir.join("victim");
    fs::write(&victim, b"keep me").unwrap();
    let link = s.dir.join(".vm.ova.ovafs-tmp-link");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let linked = s.dir.join(".vm.ova.ovafs-tmp-linked");
    fs::hard_link(&victim, &linked).unwrap();
    let ours = s.dir.join(".vm.ova.ovafs-tmp-ours");
    write_private(&ours, b"left by a crash");
    let mut expected = snapshot(&s.dir);
    expected.remove(".vm.ova.ovafs-tmp-ours");

    let (m, _) = mount_ok(&ova, &s.mnt("mnt"), &[]);
    assert!(!ours.exists(), "ovafs's own temporary file is removed");
    assert_eq!(snapshot(&s.dir), expected, "others' files are kept");
    // Planted temporary files do not make the package read-only: commits never use them.
    assert!(set_cpus(&m, 3).status.success());
    m.umount();
    for p in [&planted, &link, &linked, &victim] {
        assert!(fs::symlink_metadata(p).is_ok(), "{} gone", p.display());
    }
    assert_eq!(fs::read(&victim).unwrap(), b"keep me");
}

#[test]
fn second_writable_mount_is_read_only() {
    let s = Shared::new();
    let ova = s.ova("vm");
    let (first, err) = mount_ok(&ova, &s.mnt("one"), &[]);
    assert!(!err.contains("read-only"), "{err}");
    let sum = sha256_file(&ova);
    let (second, err) = mount_ok(&ova, &s.mnt("two"), &[]);
    println!("notice: {err}");
    assert!(
        err.contains("in use by another writable ovafs mount"),
        "{err}"
    );
    assert_read_only(&second);
    assert_eq!(sha256_file(&ova), sum, "the read-only mount wrote");
    // The first mount still edits.
    let out = set_cpus(&first, 4);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read_to_string(first.path("vm/cpus")).unwrap(), "4\n");
    assert_ne!(sha256_file(&ova), sum);
    second.umount();
    first.umount();
    // Both gone: the lock went with the first daemon.
    let (m, err) = mount_ok(&ova, &s.mnt("three"), &[]);
    assert!(!err.contains("read-only"), "{err}");
    m.umount();
}

#[test]
fn rewrite_commit_keeps_the_package_locked() {
    let s = Shared::new();
    let ova = s.ova("vm");
    let ino = fs::metadata(&ova).unwrap().ino();
    let (first, _) = mount_ok(&ova, &s.mnt("one"), &[]);
    // A descriptor far larger than its tar blocks: the archive is rewritten and renamed.
    let ovf = first.path("vm.ovf");
    let text = fs::read_to_string(&ovf).unwrap();
    let pad = format!("<!-- {} -->\n</Envelope>", "x".repeat(20_000));
    let grown = text.replacen("</Envelope>", &pad, 1);
    assert_ne!(grown, text);
    fs::write(&ovf, &grown).unwrap();
    assert_ne!(
        fs::metadata(&ova).unwrap().ino(),
        ino,
        "no rewrite happened"
    );
    let sum = sha256_file(&ova);
    let (second, err) = mount_ok(&ova, &s.mnt("two"), &[]);
    assert!(
        err.contains("in use by another writable ovafs mount"),
        "{err}"
    );
    assert_read_only(&second);
    assert_eq!(sha256_file(&ova), sum);
    assert!(set_cpus(&first, 4).status.success());
    second.umount();
    first.umount();
}

#[test]
fn folder_journal_renaming_a_planted_file_is_refused() {
    let s = Shared::new();
    let ovf = s.ovf("vm");
    // nobody's descriptor, waiting under ovafs's temporary name...
    let evil = fs::read_to_string(&ovf)
        .unwrap()
        .replace("2 virtual CPU(s)", "8 virtual CPU(s)");
    let planted = ".vm.ovf.ovafs-tmp-evil";
    s.plant_as_nobody(&s.dir.join(planted), evil.as_bytes());
    // ...and a journal of the right owner, even bound to those bytes: only the planted file's
    // owner tells them apart from a commit of ours.
    let j = Journal {
        kind: Kind::Folder,
        target: Identity::default(),
        ops: vec![Op::Rename {
            from: planted.into(),
            to: "vm.ovf".into(),
            sha256: ovafs::commit::journal::digest(evil.as_bytes()),
        }],
    };
    write_private(journal_of(&ovf), j.encode());
    let before = snapshot(&s.dir);
    let (m, err) = mount_ok(&ovf, &s.mnt("mnt"), &[]);
    assert!(err.contains("is not ovafs's"), "{err}");
    assert!(err.contains("owned by uid 65534"), "{err}");
    assert_read_only(&m);
    m.umount();
    assert_eq!(snapshot(&s.dir), before);
}

#[test]
fn folder_package_lock_follows_the_renamed_descriptor() {
    let s = Shared::new();
    let ovf = s.ovf("vm");
    let (first, _) = mount_ok(&ovf, &s.mnt("one"), &[]);
    let (second, err) = mount_ok(&ovf, &s.mnt("two"), &[]);
    assert!(
        err.contains("in use by another writable ovafs mount"),
        "{err}"
    );
    let before = snapshot(&s.dir);
    assert_read_only(&second);
    assert_eq!(snapshot(&s.dir), before);
    second.umount();
    // A folder commit renames a new .ovf over the old one: the lock goes with it.
    let ino = fs::metadata(&ovf).unwrap().ino();
    assert!(set_cpus(&first, 4).status.success());
    assert_ne!(fs::metadata(&ovf).unwrap().ino(), ino, "no rename happened");
    let (third, err) = mount_ok(&ovf, &s.mnt("three"), &[]);
    assert!(
        err.contains("in use by another writable ovafs mount"),
        "{err}"
    );
    assert_eq!(fs::read_to_string(third.path("vm/cpus")).unwrap(), "4\n");
    third.umount();
    first.umount();
}

#[test]
fn umount_recovers_the_served_package_not_the_fsname() {
    let s = Shared::new();
    let served = s.ova("served");
    let other = s.ova("other");
    let (journal, _) = genuine_journal(&other);
    write_private(journal_of(&other), &journal);
    let before = snapshot(&s.dir);
    let fsname = format!("fsname={}", other.display());
    let (m, _) = mount_ok(&served, &s.mnt("mnt"), &[&fsname]);
    let table = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        table.contains(&format!("fuse.ovafs {}", other.display())),
        "the mount table shows the forged source"
    );
    m.umount();
    assert_eq!(snapshot(&s.dir), before, "umount acted on the fsname");
    // The other package's journal was genuine: only its own recovery replays it.
    let r = ovafs::commit::recover(&other).unwrap();
    assert_eq!(r.journal, ovafs::commit::JournalOutcome::Completed);
}

/// A FUSE mount of type plain `fuse` (no subtype) whose source names `source`, served by no
/// daemon: the kernel never gets an answer, and nothing here touches the mount itself.
struct PlainFuse {
    dir: PathBuf,
    _dev: fs::File,
}

impl PlainFuse {
    fn new(source: &Path, dir: &Path) -> PlainFuse {
        use std::os::fd::AsRawFd;
        fs::create_dir_all(dir).unwrap();
        let dev = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .unwrap();
        let data = format!("fd={},rootmode=40000,user_id=0,group_id=0", dev.as_raw_fd());
        nix::mount::mount(
            Some(source),
            dir,
            Some("fuse"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some(data.as_str()),
        )
        .unwrap();
        PlainFuse {
            dir: dir.to_path_buf(),
            _dev: dev,
        }
    }
}

impl Drop for PlainFuse {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn umount_refuses_mounts_that_are_not_ovafs() {
    let s = Shared::new();
    let ova = s.ova("vm");
    let (journal, _) = genuine_journal(&ova);
    write_private(journal_of(&ova), &journal);
    let before = snapshot(&s.dir);

    let tmpfs = s.mnt("tmpfs");
    fs::create_dir(&tmpfs).unwrap();
    run_ok(
        Command::new(tool("mount"))
            .args(["-t", "tmpfs", "-o", "size=1m"])
            .arg(&ova)
            .arg(&tmpfs),
    );
    let _guard = Mount { dir: tmpfs.clone() };
    let fuse = PlainFuse::new(&ova, &s.mnt("fuse"));
    for (dir, kind) in [(&tmpfs, "tmpfs"), (&fuse.dir, "fuse")] {
        let out = Command::new(ovafs())
            .arg("umount")
            .arg(dir)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{kind}: ovafs umount accepted it");
        assert!(
            err.contains(&format!("is a {kind} mount, not an ovafs one")),
            "{kind}: {err}"
        );
        assert!(is_mounted(dir), "{kind}: unmounted anyway");
    }
    assert_eq!(snapshot(&s.dir), before);
}
