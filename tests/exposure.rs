//! What a mount exposes, through real mounts (issue 9, sections 3 and 4 and "Also"):
//!
//! - the mount's own names come first: members named `.ovafs/status`, `disks/x.raw`, `vm`,
//!   `vms/foo`, `networks/n/description` are shown under `.ovafs/members/...`, byte-exact,
//!   and listed as collisions in the status files;
//! - a folder package opens only its own files: an extent that is a link is refused, a
//!   root-only extent or parent (named by a VMDK descriptor or `parentFileNameHint`, not by
//!   the OVF) makes the flat image root-only (another user never reads its bytes through
//!   an `allow_other` mount), and swapping the folder after the mount redirects nothing;
//! - a 0600 disk gives a flat image no wider than 0600, a 0600 OVA members and settings no
//!   wider than 0600 (read as `nobody` with `setpriv`: EACCES; root reads);
//! - after a rewrite commit the daemon holds no deleted archive open and the mount reads
//!   what GNU tar extracts from the new OVA;
//! - `ls -l` in a foreground mount logs no extended-attribute warnings;
//! - a refused `echo bogus > vm/cpus` is shown in `.ovafs/status` and `status.json`.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const STREAM: &str = ovafs::sample::VMDK_STREAM_URI;

/// A temporary folder other users can traverse (to reach an `allow_other` mount).
fn shared_tempdir() -> tempfile::TempDir {
    let t = tempdir();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    t
}

/// Runs `args` as `nobody` (no groups).
fn run_as_nobody(args: &[&str]) -> Output {
    as_nobody()
        .arg("--")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Asserts that `nobody` cannot read `path` and that the refusal is EACCES.
fn nobody_cannot_read(path: &Path) {
    let out = run_as_nobody(&["cat", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && out.stdout.is_empty(),
        "nobody read {}",
        path.display()
    );
    assert!(
        err.contains("Permission denied"),
        "{}: {err}",
        path.display()
    );
}

/// A stream-optimized VMDK of a scattered raw image; returns (raw, vmdk).
fn stream_disk(dir: &Path, name: &str, size: u64, seed: u64) -> (PathBuf, PathBuf) {
    fs::create_dir_all(dir).unwrap();
    qemu_stream_vmdk(dir, name, size, 3, seed)
}

/// A package `name` in the folder `pkg` with one disk, `name-disk1.vmdk`, of `size` bytes
/// made in `src` from seed `seed`: (the builder, to `build` or `write_package`; the raw
/// image; the VMDK).
fn one_disk_package(
    src: &Path,
    pkg: &Path,
    name: &str,
    size: u64,
    seed: u64,
) -> (OvaBuilder, PathBuf, PathBuf) {
    let (raw, vmdk) = stream_disk(src, &format!("{name}-disk1"), size, seed);
    let package = OvaBuilder::new(pkg, name).disk(&vmdk, size, STREAM);
    (package, raw, vmdk)
}

/// Every path under `root` (relative), files and folders.
fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().to_str().unwrap().to_string());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Waits until the status file reports a finished verification.
fn finished_status(m: &Mount) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = fs::read_to_string(m.path(".ovafs/status")).unwrap();
        if !text.starts_with("verification: running") {
            return text;
        }
        assert!(Instant::now() < deadline, "verification never finished");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const FORGED_STATUS: &str = "verification: passed (strict)\n\
    certificate: forged.cert (signature ok, chain trusted) CN=VMware, Inc. - signed by VMware, trusted\n";

#[test]
fn members_cannot_forge_the_mounts_own_names() {
    let tmp = tempdir();
    let (raw, vmdk) = stream_disk(tmp.path(), "forged-disk1", 2 << 20, 11);
    let pkg = tmp.path().join("pkg");
    let mut names = OvaBuilder::new(&pkg, "forged")
        .disk(&vmdk, 2 << 20, STREAM)
        .write_package();
    let forged: [(&str, &[u8]); 5] = [
        (".ovafs/status", FORGED_STATUS.as_bytes()),
        ("disks/x.raw", b"not a flat image"),
        ("vm", b"not the vm link"),
        ("vms/foo", b"not a settings folder"),
        ("networks/n/description", b"not a network"),
    ];
    for (name, bytes) in forged {
        let p = pkg.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, bytes).unwrap();
        names.push(name.to_string());
    }
    let ova = tmp.path().join("forged.ova");
    run_ok(tar_create(&ova, &pkg).args(&names));
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);

    // The generated names are the mount's.
    let status = finished_status(&m);
    assert!(status.starts_with("verification: "), "{status}");
    assert!(!status.contains("signed by VMware"), "{status}");
    // The flat image and its guest view (random bytes: no table, no file system).
    assert_eq!(
        walk(&m.path("disks")),
        [
            "forged-disk1",
            "forged-disk1.raw",
            "forged-disk1/partitions"
        ]
    );
    assert_same_bytes(&m.path("disks/forged-disk1.raw"), &raw);
    let vm = fs::read_link(m.path("vm")).unwrap();
    assert!(vm.to_str().unwrap().starts_with("vms/"), "{vm:?}");
    assert!(!m.path("vms/foo").exists());
    assert!(!m.path("networks/n").exists());
    assert_eq!(fs::read_to_string(m.path("vm/cpus")).unwrap(), "2\n");

    // The members are still there, byte-exact, under their escaped names.
    for (name, bytes) in forged {
        let shown = m.path(&format!(".ovafs/members/{name}"));
        assert_eq!(fs::read(&shown).unwrap(), bytes, "{name}");
        assert!(
            status.contains(&format!(
                "collision: member {name:?} is shown as /.ovafs/members/{name}"
            )),
            "{name} not listed: {status}"
        );
    }
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(m.path(".ovafs/status.json")).unwrap()).unwrap();
    let listed = string_pairs(&json["collisions"], "member", "shownAs");
    assert_eq!(listed.len(), forged.len(), "{listed:?}");
    for (name, _) in forged {
        assert!(listed.contains(&(name.to_string(), format!("/.ovafs/members/{name}"))));
    }
    // Unforged members keep their own names.
    assert_eq!(
        fs::read(m.path("forged-disk1.vmdk")).unwrap(),
        fs::read(&vmdk).unwrap()
    );
    m.umount();
}

/// A text VMDK descriptor whose one FLAT extent is `extent` (`sectors` long).
fn flat_descriptor(extent: &str, sectors: u64) -> String {
    format!(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
         createType=\"monolithicFlat\"\n\n# Extent description\nRW {sectors} FLAT \"{extent}\" 0\n\n\
         # The Disk Data Base\n#DDB\nddb.adapterType = \"lsilogic\"\n"
    )
}

/// A folder package whose disk is `disk.vmdk`, a descriptor naming the extent `extent`.
fn folder_with_extent(pkg: &Path, extent: &str) -> PathBuf {
    fs::create_dir_all(pkg).unwrap();
    let desc = pkg.join("disk.vmdk");
    fs::write(&desc, flat_descriptor(extent, 2048)).unwrap();
    OvaBuilder::new(pkg, "ext")
        .disk(&desc, 1 << 20, ovafs::sample::VMDK_SPARSE_URI)
        .write_package();
    pkg.join("ext.ovf")
}

const SECRET: &[u8] = b"ROOT-ONLY-SECRET";

/// A root-only (0600) file of 1 MiB full of [`SECRET`].
fn root_only_secret(path: &Path) {
    fs::write(path, SECRET.repeat((1 << 20) / SECRET.len())).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn a_root_only_extent_is_never_readable_by_others_and_links_are_refused() {
    let tmp = shared_tempdir();
    let pkg = tmp.path().join("pkg");
    let ovf = folder_with_extent(&pkg, "secret-flat.vmdk");
    root_only_secret(&pkg.join("secret-flat.vmdk"));

    let m = Mount::ok(&ovf, &tmp.path().join("mnt"), &["allow_other", "ro"]);
    let flat = m.path("disks/disk.raw");
    // The extent is part of the disk (its descriptor names it): root reads it...
    assert_same_bytes(&flat, &pkg.join("secret-flat.vmdk"));
    let mode = fs::metadata(&flat).unwrap().mode() & 0o777;
    assert_eq!(mode & 0o077, 0, "flat image mode {mode:o}");
    // ...nobody else does, through any file of the mount.
    nobody_cannot_read(&flat);
    let listing = walk(&m.dir);
    assert!(
        !listing.iter().any(|p| p.contains("secret")),
        "the extent is shown: {listing:?}"
    );
    let out = run_as_nobody(&[
        "grep",
        "-r",
        "-l",
        std::str::from_utf8(SECRET).unwrap(),
        m.dir.to_str().unwrap(),
    ]);
    assert!(
        out.stdout.is_empty(),
        "nobody found the secret in {}",
        String::from_utf8_lossy(&out.stdout)
    );
    m.umount();

    // An extent that is a link (here to that same file, inside the folder) is not opened:
    // the mount is refused, naming the extent.
    let pkg2 = tmp.path().join("pkg2");
    let ovf2 = folder_with_extent(&pkg2, "link-flat.vmdk");
    std::os::unix::fs::symlink(pkg.join("secret-flat.vmdk"), pkg2.join("link-flat.vmdk")).unwrap();
    let err = Mount::new(&ovf2, &tmp.path().join("mnt2"), &["allow_other", "ro"]).unwrap_err();
    assert!(err.contains("link-flat.vmdk"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn a_root_only_parent_named_by_a_hint_is_never_readable_by_others() {
    let tmp = shared_tempdir();
    let pkg = tmp.path().join("pkg");
    fs::create_dir_all(&pkg).unwrap();
    let base_raw = tmp.path().join("base.img");
    root_only_secret(&base_raw);
    let base = pkg.join("secret-base.vmdk");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vmdk",
        path_str(&base_raw),
        path_str(&base),
    ]);
    fs::set_permissions(&base, fs::Permissions::from_mode(0o600)).unwrap();
    let delta = pkg.join("delta.vmdk");
    qemu_img(&[
        "create",
        "-f",
        "vmdk",
        "-b",
        "secret-base.vmdk",
        "-F",
        "vmdk",
        path_str(&delta),
    ]);
    // The OVF names only the delta; its parentFileNameHint names the root-only base.
    OvaBuilder::new(&pkg, "hint")
        .disk(&delta, 1 << 20, ovafs::sample::VMDK_SPARSE_URI)
        .write_package();
    let m = Mount::ok(
        &pkg.join("hint.ovf"),
        &tmp.path().join("mnt"),
        &["allow_other", "ro"],
    );
    let flat = m.path("disks/delta.raw");
    assert_same_bytes(&flat, &base_raw);
    let mode = fs::metadata(&flat).unwrap().mode() & 0o777;
    assert_eq!(mode & 0o077, 0, "flat image mode {mode:o}");
    nobody_cannot_read(&flat);
    assert!(!walk(&m.dir).iter().any(|p| p.contains("secret")));
    m.umount();
}

#[test]
fn disks_sharing_a_parent_are_each_held_to_its_root_only_extent() {
    // The parent is opened once and shared by both disks; its extent is looked up only
    // while the first one opens it, and the second must still inherit that extent's mode.
    let tmp = shared_tempdir();
    let pkg = tmp.path().join("pkg");
    fs::create_dir_all(&pkg).unwrap();
    root_only_secret(&pkg.join("secret-flat.img"));
    let base = pkg.join("base.vmdk");
    fs::write(&base, flat_descriptor("secret-flat.img", 2048)).unwrap();
    fs::set_permissions(&base, fs::Permissions::from_mode(0o644)).unwrap();
    let mut builder = OvaBuilder::new(&pkg, "shared");
    for name in ["delta1.vmdk", "delta2.vmdk"] {
        let delta = pkg.join(name);
        qemu_img(&[
            "create",
            "-f",
            "vmdk",
            "-b",
            "base.vmdk",
            "-F",
            "vmdk",
            path_str(&delta),
        ]);
        fs::set_permissions(&delta, fs::Permissions::from_mode(0o644)).unwrap();
        builder = builder.disk(&delta, 1 << 20, ovafs::sample::VMDK_SPARSE_URI);
    }
    builder.write_package();
    let m = Mount::ok(
        &pkg.join("shared.ovf"),
        &tmp.path().join("mnt"),
        &["allow_other", "ro"],
    );
    for disk in ["disks/delta1.raw", "disks/delta2.raw"] {
        let flat = m.path(disk);
        assert_same_bytes(&flat, &pkg.join("secret-flat.img"));
        let mode = fs::metadata(&flat).unwrap().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{disk}: mode {mode:o}");
        nobody_cannot_read(&flat);
    }
    m.umount();
}

#[test]
fn a_0600_disk_gives_a_flat_image_and_member_no_wider_than_0600() {
    let tmp = shared_tempdir();
    let pkg = tmp.path().join("pkg");
    let (package, raw, vmdk) = one_disk_package(&pkg, &pkg, "private", 2 << 20, 12);
    package.write_package();
    fs::set_permissions(&vmdk, fs::Permissions::from_mode(0o600)).unwrap();

    let m = Mount::ok(
        &pkg.join("private.ovf"),
        &tmp.path().join("mnt"),
        &["allow_other", "ro"],
    );
    for rel in ["disks/private-disk1.raw", "private-disk1.vmdk"] {
        let p = m.path(rel);
        let mode = fs::metadata(&p).unwrap().mode() & 0o777;
        assert_eq!(mode & !0o600, 0, "{rel}: mode {mode:o}");
        nobody_cannot_read(&p);
    }
    assert_same_bytes(&m.path("disks/private-disk1.raw"), &raw);
    assert_eq!(
        fs::read(m.path("private-disk1.vmdk")).unwrap(),
        fs::read(&vmdk).unwrap()
    );
    // The descriptor is 0644: its settings stay readable.
    let out = run_as_nobody(&["cat", m.path("vm/cpus").to_str().unwrap()]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2\n");
    m.umount();
}

#[test]
fn a_0600_ova_gives_members_and_settings_no_wider_than_0600() {
    let tmp = shared_tempdir();
    let (package, raw, _) =
        one_disk_package(tmp.path(), &tmp.path().join("pkg"), "locked", 2 << 20, 13);
    let ova = package.build();
    fs::set_permissions(&ova, fs::Permissions::from_mode(0o600)).unwrap();

    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &["allow_other"]);
    let mut files = 0;
    for rel in walk(&m.dir) {
        let p = m.path(&rel);
        let meta = fs::symlink_metadata(&p).unwrap();
        if !meta.is_file() || rel.starts_with(".ovafs/status") {
            continue;
        }
        let mode = meta.mode() & 0o777;
        assert_eq!(mode & !0o600, 0, "{rel}: mode {mode:o}");
        nobody_cannot_read(&p);
        files += 1;
    }
    assert!(files >= 8, "only {files} files checked");
    assert_same_bytes(&m.path("disks/locked-disk1.raw"), &raw);
    assert_eq!(fs::read_to_string(m.path("vm/cpus")).unwrap(), "2\n");
    m.umount();
}

#[test]
fn swapping_the_package_folder_after_the_mount_redirects_nothing() {
    let tmp = tempdir();
    let pkg = tmp.path().join("pkg");
    let (package, raw, vmdk) = one_disk_package(&tmp.path().join("src"), &pkg, "swap", 2 << 20, 14);
    package.write_package();
    // A look-alike package with other bytes.
    let evil = tmp.path().join("evil");
    let (package, _, evil_vmdk) =
        one_disk_package(&tmp.path().join("src-evil"), &evil, "swap", 2 << 20, 15);
    package.write_package();
    let original = fs::read(&vmdk).unwrap();
    assert_ne!(original, fs::read(&evil_vmdk).unwrap());

    let m = Mount::ok(&pkg.join("swap.ovf"), &tmp.path().join("mnt"), &["ro"]);
    // Nothing has been read through the mount yet; now the folder becomes a link.
    fs::rename(&pkg, tmp.path().join("pkg-moved")).unwrap();
    std::os::unix::fs::symlink(&evil, &pkg).unwrap();
    assert_eq!(fs::read(m.path("swap-disk1.vmdk")).unwrap(), original);
    assert_same_bytes(&m.path("disks/swap-disk1.raw"), &raw);
    m.umount();
}

/// The targets of the daemon's open file descriptors.
fn open_files(pid: i32) -> Vec<String> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn after_a_rewrite_the_mount_reads_the_new_archive() {
    let tmp = tempdir();
    let (package, raw, _) =
        one_disk_package(tmp.path(), &tmp.path().join("pkg"), "rw", 4 << 20, 16);
    let ova = package.build();
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    let pid = daemon_pid(&ova);
    let before = fs::metadata(&ova).unwrap().ino();
    assert!(
        open_files(pid).iter().any(|f| f == ova.to_str().unwrap()),
        "the daemon does not hold the OVA: {:?}",
        open_files(pid)
    );
    // An annotation far larger than the descriptor's slack: the archive is rewritten.
    let note = "a long note. ".repeat(800);
    fs::write(m.path("vm/annotation"), format!("{note}\n")).unwrap();
    assert_ne!(
        fs::metadata(&ova).unwrap().ino(),
        before,
        "the commit was not a rewrite"
    );
    let deleted: Vec<String> = open_files(pid)
        .into_iter()
        .filter(|f| f.contains("(deleted)"))
        .collect();
    assert!(deleted.is_empty(), "the daemon holds {deleted:?}");

    // Every member reads as GNU tar extracts it from the new archive.
    let out = tmp.path().join("extracted");
    fs::create_dir(&out).unwrap();
    tar_extract(&ova, &out);
    let extracted = walk(&out);
    assert!(extracted.len() >= 3, "{extracted:?}");
    for rel in extracted {
        assert_eq!(
            fs::read(m.path(&rel)).unwrap(),
            fs::read(out.join(&rel)).unwrap(),
            "{rel}"
        );
    }
    assert!(
        fs::read_to_string(m.path("rw.ovf"))
            .unwrap()
            .contains(note.trim_end())
    );
    assert_same_bytes(&m.path("disks/rw-disk1.raw"), &raw);
    // A second rewrite follows the file again.
    let before = fs::metadata(&ova).unwrap().ino();
    fs::write(m.path("vm/annotation"), format!("{note}{note}\n")).unwrap();
    assert_ne!(fs::metadata(&ova).unwrap().ino(), before);
    assert!(
        !open_files(pid).iter().any(|f| f.contains("(deleted)")),
        "{:?}",
        open_files(pid)
    );
    assert_same_bytes(&m.path("disks/rw-disk1.raw"), &raw);
    m.umount();
}

#[test]
fn ls_l_logs_no_extended_attribute_warnings() {
    let tmp = tempdir();
    let (package, _, _) = one_disk_package(tmp.path(), &tmp.path().join("pkg"), "xa", 1 << 20, 17);
    let ova = package.build();
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let log = tmp.path().join("stderr.log");
    let mut child = Command::new(ovafs())
        .args(["mount", "-f"])
        .arg(&ova)
        .arg(&mnt)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !is_mounted(&mnt) {
        assert!(
            Instant::now() < deadline,
            "the foreground mount never came up"
        );
        assert!(child.try_wait().unwrap().is_none(), "ovafs -f exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    let guard = Mount { dir: mnt.clone() };
    for dir in [
        &mnt,
        &mnt.join("disks"),
        &mnt.join("vm/"),
        &mnt.join(".ovafs"),
    ] {
        run_ok(Command::new(tool("ls")).arg("-la").arg(dir));
    }
    // Python as the judge of the answers themselves.
    let script = format!(
        "import errno, os\n\
         for p in ['{m}', '{m}/xa.ovf', '{m}/disks/xa-disk1.raw', '{m}/vm/cpus']:\n\
         \x20   for call in (lambda: os.listxattr(p), lambda: os.getxattr(p, 'user.x')):\n\
         \x20       try:\n\
         \x20           call()\n\
         \x20           raise SystemExit(p + ': an xattr call answered')\n\
         \x20       except OSError as e:\n\
         \x20           assert e.errno == errno.EOPNOTSUPP, (p, e)\n",
        m = mnt.display()
    );
    run_ok(Command::new(tool("python3")).arg("-c").arg(script));
    drop(guard);
    let status = child.wait().unwrap();
    assert!(status.success(), "ovafs -f exited with {status}");
    let text = fs::read_to_string(&log).unwrap();
    assert!(!text.contains("Not Implemented"), "{text}");
    assert!(!text.to_lowercase().contains("xattr"), "{text}");
}

#[test]
fn a_refused_write_is_shown_in_the_status_files() {
    let tmp = tempdir();
    let (package, _, _) = one_disk_package(tmp.path(), &tmp.path().join("pkg"), "ref", 1 << 20, 18);
    let ova = package.build();
    let original = fs::read(&ova).unwrap();
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    let cpus = m.path("vm/cpus");
    let out = Command::new(tool("bash"))
        .arg("-c")
        .arg(format!("echo bogus > '{}'", cpus.display()))
        .output()
        .unwrap();
    assert!(!out.status.success(), "bogus was accepted");
    assert_eq!(fs::read_to_string(&cpus).unwrap(), "2\n");
    let target = fs::read_link(m.path("vm")).unwrap();
    let path = format!("{}/cpus", target.display());

    let status = fs::read_to_string(m.path(".ovafs/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("refused: /{path} at ")))
        .unwrap_or_else(|| panic!("no refusal in {status}"));
    assert!(line.contains("\"bogus\\n\""), "{line}");
    assert!(line.contains(" at 20") && line.contains('Z'), "{line}");
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(m.path(".ovafs/status.json")).unwrap()).unwrap();
    let r = &json["refusals"][0];
    assert_eq!(r["path"], path.as_str());
    assert_eq!(r["value"], "\"bogus\\n\"");
    assert!(!r["reason"].as_str().unwrap().is_empty());
    assert!(r["time"].as_u64().unwrap() > 1_700_000_000);
    m.umount();
    assert_eq!(
        fs::read(&ova).unwrap(),
        original,
        "a refused write changed the OVA"
    );
}
