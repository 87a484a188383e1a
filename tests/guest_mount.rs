//! The guest view in a real mount (issue 12): `disks/NAME/` with the partition table, each
//! partition as `pN.raw` and its file system as `pN/`, read by ovafs from a stream-optimized
//! VMDK made by qemu-img of a GPT disk made by sgdisk holding ext4 file systems made by
//! `mkfs.ext4 -d`. Judges: the trees the file systems were made from, `sfdisk --json` for
//! the table, sha256 of the partition images, and `debugfs` for the listing it reads.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const STREAM: &str = ovafs::sample::VMDK_STREAM_URI;
const MIB: u64 = 1 << 20;
const SECTOR: u64 = 512;
/// Where the partitions are, in MiB: p1, p2 (ext4), p3 (empty), p4 (a damaged ext4).
const LAYOUT: [(u64, u64); 4] = [(1, 24), (25, 24), (49, 4), (53, 24)];
const DISK_MIB: u64 = 80;

fn sbin(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not installed (scripts/test installs it)");
}

/// A tree with what the guest view must get right: nested folders, a multi-megabyte file,
/// an empty file, modes with setuid, other owners, links (absolute, relative, escaping).
fn make_tree(root: &Path, seed: u64) {
    let mut rng = Rng::new(seed);
    for d in ["etc/ssh", "var/log/app", "home/user", "empty"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(root.join("etc/hostname"), format!("guest-{seed}\n")).unwrap();
    fs::write(root.join("etc/ssh/sshd_config"), "PermitRootLogin no\n").unwrap();
    let mut big = vec![0u8; 3 * MIB as usize + 12345];
    rng.fill(&mut big);
    fs::write(root.join("var/log/app/big.log"), &big).unwrap();
    fs::write(root.join("var/log/empty.log"), b"").unwrap();
    fs::write(root.join("home/user/notes.txt"), "owned by 1234\n").unwrap();
    std::os::unix::fs::chown(root.join("home/user/notes.txt"), Some(1234), Some(99)).unwrap();
    std::os::unix::fs::chown(root.join("home/user"), Some(1234), Some(99)).unwrap();
    let tool = root.join("etc/tool");
    fs::write(&tool, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o4755)).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("etc/ssh/host_abs")).unwrap();
    std::os::unix::fs::symlink("../hostname", root.join("etc/ssh/host_rel")).unwrap();
    std::os::unix::fs::symlink("../../../../../etc/passwd", root.join("etc/escape")).unwrap();
}

/// `mkfs.ext4 -d tree` into a new image of `mib` MiB, with `extra` options.
fn make_ext4(image: &Path, tree: &Path, mib: u64, extra: &[&str]) {
    run_ok(
        Command::new(sbin("mkfs.ext4"))
            .args(["-q", "-F", "-E", "root_owner=0:0"])
            .args(extra)
            .arg("-d")
            .arg(tree)
            .arg(image)
            .arg(format!("{mib}M")),
    );
}

/// Zeroes the inode table of the first block group of an ext4 image (as `dumpe2fs` places
/// it): the superblock stays valid, every inode read fails its checksum.
fn damage_inode_table(image: &Path) {
    let out = run_ok(Command::new(sbin("dumpe2fs")).arg(image));
    let text = String::from_utf8_lossy(&out.stdout);
    let block_size: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("dumpe2fs block size");
    let first = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Inode table at "))
        .and_then(|v| v.split('-').next())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("dumpe2fs inode table");
    let f = fs::OpenOptions::new().write(true).open(image).unwrap();
    f.write_all_at(&vec![0u8; 4 * block_size as usize], first * block_size)
        .unwrap();
}

struct Fixture {
    _dir: tempfile::TempDir,
    ova: PathBuf,
    trees: [PathBuf; 2],
    images: Vec<PathBuf>,
    raw: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempdir();
    let trees = [dir.path().join("tree1"), dir.path().join("tree2")];
    make_tree(&trees[0], 1);
    make_tree(&trees[1], 2);
    let images: Vec<PathBuf> = (1..=4)
        .map(|n| dir.path().join(format!("p{n}.img")))
        .collect();
    make_ext4(&images[0], &trees[0], LAYOUT[0].1, &["-b", "4096"]);
    make_ext4(
        &images[1],
        &trees[1],
        LAYOUT[1].1,
        &["-b", "1024", "-O", "^metadata_csum"],
    );
    fs::write(&images[2], vec![0u8; (LAYOUT[2].1 * MIB) as usize]).unwrap();
    make_ext4(&images[3], &trees[0], LAYOUT[3].1, &["-b", "4096"]);
    damage_inode_table(&images[3]);

    let raw = dir.path().join("disk.raw");
    fs::File::create(&raw)
        .unwrap()
        .set_len(DISK_MIB * MIB)
        .unwrap();
    let mut sgdisk = Command::new(sbin("sgdisk"));
    sgdisk.arg("-o");
    for (i, (start, len)) in LAYOUT.iter().enumerate() {
        let n = i + 1;
        sgdisk.arg(format!(
            "-n{n}:{}:{}",
            start * MIB / SECTOR,
            (start + len) * MIB / SECTOR - 1
        ));
        sgdisk.arg(format!("-c{n}:part {n}"));
    }
    run_ok(sgdisk.arg(&raw));
    let disk = fs::OpenOptions::new().write(true).open(&raw).unwrap();
    for (image, (start, _)) in images.iter().zip(LAYOUT) {
        disk.write_all_at(&fs::read(image).unwrap(), start * MIB)
            .unwrap();
    }
    let vmdk = dir.path().join("disk.vmdk");
    to_stream_vmdk(&raw, &vmdk);
    let ova = OvaBuilder::new(&dir.path().join("pkg"), "guest")
        .disk(&vmdk, DISK_MIB * MIB, STREAM)
        .build();
    Fixture {
        _dir: dir,
        ova,
        trees,
        images,
        raw,
    }
}

/// What a tree holds, by relative path: kind, mode, owner, size, content or link target.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    owner: (u32, u32),
    /// A file's sha256, a link's target.
    bytes: String,
}

fn scan(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(root.join(&rel)).unwrap() {
            let e = e.unwrap();
            let rel = rel.join(e.file_name());
            let meta = fs::symlink_metadata(root.join(&rel)).unwrap();
            let (kind, bytes) = if meta.file_type().is_symlink() {
                let t = fs::read_link(root.join(&rel)).unwrap();
                ("link", t.to_string_lossy().into_owned())
            } else if meta.is_dir() {
                stack.push(rel.clone());
                ("dir", String::new())
            } else {
                ("file", sha256_file(&root.join(&rel)))
            };
            let mode = if kind == "link" {
                0
            } else {
                meta.mode() & 0o7777
            };
            let owner = if kind == "link" {
                (0, 0)
            } else {
                (meta.uid(), meta.gid())
            };
            out.insert(
                rel.to_string_lossy().into_owned(),
                Entry {
                    kind,
                    mode,
                    owner,
                    bytes,
                },
            );
        }
    }
    out
}

/// The source tree as the guest view must show it: write bits cleared (read-only), and
/// link targets that are absolute or climb made relative inside the guest root.
fn expected(tree: &Path) -> BTreeMap<String, Entry> {
    let mut want = scan(tree);
    for (path, e) in want.iter_mut() {
        if e.kind != "link" {
            e.mode &= !0o222;
        }
        match path.as_str() {
            "etc/ssh/host_abs" => e.bytes = "../../etc/hostname".into(),
            "etc/escape" => e.bytes = "../etc/passwd".into(),
            _ => {}
        }
    }
    // mkfs.ext4 makes it; the guest shows it as the file system has it.
    want.insert(
        "lost+found".into(),
        Entry {
            kind: "dir",
            mode: 0o500,
            owner: (0, 0),
            bytes: String::new(),
        },
    );
    want
}

/// Fails naming the paths whose entries differ (the whole maps are too long to read).
fn assert_same_tree(got: &BTreeMap<String, Entry>, want: &BTreeMap<String, Entry>) {
    let mut diffs = Vec::new();
    for (path, w) in want {
        match got.get(path) {
            Some(g) if g == w => {}
            Some(g) => diffs.push(format!("{path}: got {g:?}, want {w:?}")),
            None => diffs.push(format!("{path}: missing")),
        }
    }
    diffs.extend(
        got.keys()
            .filter(|p| !want.contains_key(*p))
            .map(|p| format!("{p}: extra")),
    );
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

fn errno_of(r: std::io::Result<impl Sized>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

#[test]
fn the_guest_files_of_each_partition_are_plain_read_only_files() {
    let f = fixture();
    let m = Mount::ok(&f.ova, &f.ova.with_extension("mnt"), &["ro"]);
    let disk = m.path("disks/disk");

    let mut listed: Vec<String> = fs::read_dir(&disk)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            "p1",
            "p1.raw",
            "p2",
            "p2.raw",
            "p3.raw",
            "p4",
            "p4.raw",
            "partitions"
        ],
        "an empty partition has no folder; a damaged one is recognised by its superblock"
    );
    assert!(
        m.path("disks/disk.raw").is_file(),
        "the flat disk stays where it was"
    );

    // The partition table file against sfdisk's reading of the same disk.
    let table = fs::read_to_string(disk.join("partitions")).unwrap();
    let json = run_ok(Command::new(sbin("sfdisk")).arg("--json").arg(&f.raw));
    let sf: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let parts = sf["partitiontable"]["partitions"].as_array().unwrap();
    let lines: Vec<Vec<&str>> = table
        .lines()
        .skip(2)
        .map(|l| l.split('\t').collect())
        .collect();
    assert!(table.starts_with(&format!("table\tgpt\tdisk bytes\t{}\n", DISK_MIB * MIB)));
    assert_eq!(lines.len(), parts.len(), "{table}");
    for (line, p) in lines.iter().zip(parts) {
        let start = p["start"].as_u64().unwrap() * SECTOR;
        let size = p["size"].as_u64().unwrap() * SECTOR;
        assert_eq!(line[1], start.to_string(), "{table}");
        assert_eq!(line[2], size.to_string(), "{table}");
        assert_eq!(line[4], p["name"].as_str().unwrap(), "{table}");
    }
    let fs_column: Vec<&str> = lines.iter().map(|l| l[5]).collect();
    assert_eq!(fs_column, ["ext4", "ext4", "-", "ext4"]);

    // Each partition's flat file is the image written there.
    for (n, image) in f.images.iter().enumerate() {
        let n = n + 1;
        assert_eq!(
            sha256_file(&disk.join(format!("p{n}.raw"))),
            sha256_file(image),
            "p{n}.raw"
        );
    }

    // Every file, folder and link of both file systems, with the guest's modes and owners.
    for (n, tree) in f.trees.iter().enumerate() {
        let root = disk.join(format!("p{}", n + 1));
        assert_same_tree(&scan(&root), &expected(tree));
        // Links resolve inside the mount, never on the host.
        assert_eq!(
            fs::read(root.join("etc/ssh/host_abs")).unwrap(),
            fs::read(tree.join("etc/hostname")).unwrap()
        );
        assert!(
            fs::read(root.join("etc/escape")).is_err(),
            "no passwd in the guest"
        );
        // Reads at offsets, as a copy program or a reader seeking around makes them.
        let big = fs::File::open(root.join("var/log/app/big.log")).unwrap();
        let want = fs::read(tree.join("var/log/app/big.log")).unwrap();
        let mut buf = vec![0u8; 70000];
        big.read_exact_at(&mut buf, 1_000_003).unwrap();
        assert_eq!(buf, want[1_000_003..1_070_003]);
        assert!(
            fs::OpenOptions::new()
                .write(true)
                .open(root.join("etc/hostname"))
                .is_err()
        );
    }

    // debugfs, reading the partition image, lists the same root.
    let out = run_ok(
        Command::new(sbin("debugfs"))
            .args(["-R", "ls -p /"])
            .arg(&f.images[0]),
    );
    let mut debugfs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split('/').nth(5).map(str::to_string))
        .filter(|n| !n.is_empty() && n != "." && n != "..")
        .collect();
    debugfs.sort();
    let mut ours: Vec<String> = fs::read_dir(disk.join("p1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    ours.sort();
    assert_eq!(ours, debugfs);

    // The damaged file system fails with EIO; the rest of the mount keeps working.
    assert_eq!(errno_of(fs::read_dir(disk.join("p4"))), Some(libc_eio()));
    assert_eq!(
        errno_of(fs::metadata(disk.join("p4/etc"))),
        Some(libc_eio())
    );
    assert_eq!(
        fs::read(disk.join("p1/etc/hostname")).unwrap(),
        b"guest-1\n"
    );
    assert_eq!(sha256_file(&disk.join("p4.raw")), sha256_file(&f.images[3]));
    m.umount();
}

fn libc_eio() -> i32 {
    5
}

#[test]
fn the_guest_view_of_a_writable_disk_shows_its_overlay() {
    let f = fixture();
    let m = Mount::ok(&f.ova, &f.ova.with_extension("mnt"), &[]);
    // A new file system written over p2 through the flat disk, before p2/ is entered.
    let fresh = f.ova.with_extension("tree3");
    fs::create_dir_all(fresh.join("srv")).unwrap();
    fs::write(fresh.join("srv/new.txt"), "written through the mount\n").unwrap();
    let image = f.ova.with_extension("p2new");
    make_ext4(&image, &fresh, LAYOUT[1].1, &[]);
    let flat = fs::OpenOptions::new()
        .write(true)
        .open(m.path("disks/disk.raw"))
        .unwrap();
    flat.write_all_at(&fs::read(&image).unwrap(), LAYOUT[1].0 * MIB)
        .unwrap();
    flat.sync_all().unwrap();
    drop(flat);
    assert_eq!(
        fs::read_to_string(m.path("disks/disk/p2/srv/new.txt")).unwrap(),
        "written through the mount\n"
    );
    assert_eq!(
        sha256_file(&m.path("disks/disk/p2.raw")),
        sha256_file(&image)
    );
    assert_eq!(
        fs::read(m.path("disks/disk/p1/etc/hostname")).unwrap(),
        b"guest-1\n"
    );
    m.umount();
}

fn ovafs_out(args: &[&str]) -> std::process::Output {
    Command::new(ovafs()).args(args).output().unwrap()
}

#[test]
fn ls_and_cat_read_the_guest_without_a_mount() {
    let f = fixture();
    let ova = path_str(&f.ova);
    let names = |out: &std::process::Output| -> Vec<String> {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(names(&ovafs_out(&["ls", ova])), ["disk"]);
    assert_eq!(
        names(&ovafs_out(&["ls", ova, "disks/disk"])),
        [
            "p1",
            "p1.raw",
            "p2",
            "p2.raw",
            "p3.raw",
            "p4",
            "p4.raw",
            "partitions"
        ]
    );
    let mut want: Vec<String> = fs::read_dir(f.trees[0].join("etc"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    want.sort();
    assert_eq!(names(&ovafs_out(&["ls", ova, "disk/p1/etc"])), want);

    // Long listing: the guest's modes (write bits cleared), owners and link targets.
    let long = names(&ovafs_out(&["ls", "-l", ova, "disk/p1/home/user"]));
    assert_eq!(long.len(), 1);
    assert!(long[0].starts_with("-r--r--r-- 1234 99 14 "), "{}", long[0]);
    assert!(long[0].ends_with(" notes.txt"), "{}", long[0]);
    let etc = names(&ovafs_out(&["ls", "-l", ova, "disk/p1/etc"]));
    assert!(
        etc.iter()
            .any(|l| l.starts_with("-r-sr-xr-x 0 0 10 ") && l.ends_with(" tool")),
        "{etc:?}"
    );
    assert!(
        etc.iter().any(|l| l.ends_with(" escape -> ../etc/passwd")),
        "{etc:?}"
    );

    // cat: bytes as stored, through links followed inside the guest.
    for (path, source) in [
        (
            "disk/p1/var/log/app/big.log",
            f.trees[0].join("var/log/app/big.log"),
        ),
        ("disk/p2/etc/ssh/host_abs", f.trees[1].join("etc/hostname")),
        ("disk/p1.raw", f.images[0].clone()),
    ] {
        let out = ovafs_out(&["cat", ova, path]);
        assert!(
            out.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, fs::read(&source).unwrap(), "{path}");
    }
    let table = ovafs_out(&["cat", ova, "disk/partitions"]);
    assert!(String::from_utf8_lossy(&table.stdout).starts_with("table\tgpt\t"));

    // Failures are one line and exit 1: a missing name, a folder, a damaged file system.
    for (path, says) in [
        ("disk/p1/etc/nope", "disk/p1/etc/nope"),
        ("disk/p1/etc", "is a folder"),
        ("disk/p4/etc/hostname", "disk/p4"),
        ("disk/p1/etc/escape", "disk/p1/etc/passwd"),
    ] {
        let out = ovafs_out(&["cat", ova, path]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{path}: {err}");
        assert_eq!(err.lines().count(), 1, "{path}: {err}");
        assert!(
            err.starts_with("ovafs: ") && err.contains(says),
            "{path}: {err}"
        );
    }
}

#[test]
fn an_iso_member_is_browsable_under_media() {
    let dir = tempdir();
    let tree = dir.path().join("cd");
    fs::create_dir_all(tree.join("drivers/net")).unwrap();
    fs::write(tree.join("README.TXT"), "install me\n").unwrap();
    let mut blob = vec![0u8; 300_000];
    Rng::new(7).fill(&mut blob);
    fs::write(tree.join("drivers/net/virtio-net.ko"), &blob).unwrap();
    std::os::unix::fs::symlink("drivers/net/virtio-net.ko", tree.join("driver")).unwrap();
    let iso = dir.path().join("tools.iso");
    run_ok(
        Command::new(tool("xorriso"))
            .args(["-as", "mkisofs", "-quiet", "-R", "-J", "-o"])
            .arg(&iso)
            .arg(&tree),
    );
    let fake = dir.path().join("fake.iso");
    fs::write(&fake, vec![0x5a; 64 * 1024]).unwrap();
    let raw = dir.path().join("small.raw");
    fs::write(&raw, vec![0u8; MIB as usize]).unwrap();
    let vmdk = dir.path().join("small.vmdk");
    to_stream_vmdk(&raw, &vmdk);
    let ova = OvaBuilder::new(&dir.path().join("pkg"), "media")
        .disk(&vmdk, MIB, STREAM)
        .file(&iso)
        .file(&fake)
        .build();
    let m = Mount::ok(&ova, &dir.path().join("mnt"), &["ro"]);
    let media = m.path("media/tools");
    assert_eq!(fs::read(media.join("README.TXT")).unwrap(), b"install me\n");
    assert_eq!(
        sha256_file(&media.join("driver")),
        sha256_file(&tree.join("drivers/net/virtio-net.ko")),
        "the Rock Ridge link is followed inside the image"
    );
    assert_eq!(
        fs::read_link(media.join("driver")).unwrap(),
        Path::new("drivers/net/virtio-net.ko")
    );
    assert_eq!(
        sha256_file(&m.path("tools.iso")),
        sha256_file(&iso),
        "the member itself stays"
    );
    assert_eq!(
        errno_of(fs::read_dir(m.path("media/fake"))),
        Some(libc_eio())
    );
    m.umount();
}

/// A distribution-like root file system (the busybox root of the Linux test guest: the
/// static busybox of Debian's busybox-static with a link per applet, /etc files, empty
/// /dev, /proc, /tmp with the sticky bit), on a table-less disk shown as `fs/`, compared
/// whole with what `debugfs -R 'rdump / OUT'` extracts from the same image.
#[test]
fn a_busybox_root_reads_as_debugfs_extracts_it() {
    let guest = common::guest::Guest::build();
    let dir = tempdir();
    let root = dir.path().join("root");
    for d in [
        "bin", "sbin", "etc", "dev", "proc", "sys", "root", "var/log",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::create_dir_all(root.join("tmp")).unwrap();
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::set_permissions(root.join("root"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::copy(&guest.busybox, root.join("bin/busybox")).unwrap();
    fs::set_permissions(root.join("bin/busybox"), fs::Permissions::from_mode(0o755)).unwrap();
    let list = run_ok(Command::new(&guest.busybox).arg("--list-full"));
    let applets = String::from_utf8_lossy(&list.stdout).into_owned();
    for applet in applets.lines().filter(|l| !l.is_empty()) {
        let link = root.join(applet);
        if link.exists() || !applet.starts_with("bin/") && !applet.starts_with("sbin/") {
            continue;
        }
        let target = if applet.starts_with("bin/") {
            "busybox"
        } else {
            "../bin/busybox"
        };
        std::os::unix::fs::symlink(target, &link).unwrap();
    }
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(
        root.join("etc/os-release"),
        "NAME=\"ovafs test root\"\nID=busybox\n",
    )
    .unwrap();
    fs::write(root.join("etc/hostname"), "appliance\n").unwrap();
    let image = dir.path().join("root.img");
    make_ext4(&image, &root, 64, &[]);
    let vmdk = dir.path().join("root.vmdk");
    to_stream_vmdk(&image, &vmdk);
    let ova = OvaBuilder::new(&dir.path().join("pkg"), "busybox")
        .disk(&vmdk, 64 * MIB, STREAM)
        .build();

    let extracted = dir.path().join("rdump");
    fs::create_dir(&extracted).unwrap();
    run_ok(
        Command::new(sbin("debugfs"))
            .arg("-R")
            .arg(format!("rdump / {}", extracted.display()))
            .arg(&image),
    );
    let m = Mount::ok(&ova, &dir.path().join("mnt"), &["ro"]);
    let view = m.path("disks/root/fs");
    let mut want = scan(&extracted);
    for e in want.values_mut() {
        if e.kind != "link" {
            e.mode &= !0o222;
        }
    }
    // rdump creates folders without their sticky bit; debugfs's stat says what /tmp has.
    let stat = run_ok(
        Command::new(sbin("debugfs"))
            .args(["-R", "stat /tmp"])
            .arg(&image),
    );
    assert!(String::from_utf8_lossy(&stat.stdout).contains("Mode:  01777"));
    want.get_mut("tmp").unwrap().mode = 0o1555;
    let got = scan(&view);
    assert!(got.len() > 100, "{} entries", got.len());
    assert_same_tree(&got, &want);
    assert_eq!(
        fs::read_to_string(m.path("disks/root/partitions"))
            .unwrap()
            .lines()
            .nth(2),
        Some(format!("-\t0\t{}\twhole disk\t-\text4", 64 * MIB).as_str())
    );
    // Applets are links to busybox that resolve inside the guest.
    assert_eq!(
        sha256_file(&view.join("sbin/reboot")),
        sha256_file(&guest.busybox)
    );
    m.umount();
}
