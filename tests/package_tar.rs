//! The tar index and the package layer against archives written by GNU tar.
//!
//! Contents:
//! - `index_matches_gnu_tar_listing_*`: one test per `--format` (ustar, gnu, oldgnu, pax,
//!   posix, v7); each archive is indexed and compared with `tar -tvf`: names in order, sizes,
//!   kinds, and every regular member's bytes read through the index.
//! - `sparse_members_*`: `tar --sparse` members (GNU old sparse and pax sparse) are listed
//!   as non-regular and the members after them are found.
//! - `package_from_gnu_tar_*`: OVAs assembled with GNU tar opened with `package::open`.
//!
//! GNU tar is required: a missing `tar` fails these tests with a message saying so.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use ovafs::archive::{self, MemberKind, TarIndex};
use ovafs::io::{FileSource, ReadAt, Window};

/// Runs GNU tar with `args` in `dir`.
fn gnu_tar(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("tar")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("GNU tar is needed for this test and could not run: {e}"));
    assert!(
        out.status.success(),
        "tar {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("tar output is UTF-8")
}

/// One line of `tar -tvf`: (name, size, first char of the mode string).
fn listing(dir: &Path, archive: &Path) -> Vec<(String, u64, char)> {
    let a = archive.to_str().expect("utf-8 path");
    gnu_tar(dir, &["--quoting-style=literal", "-tvf", a])
        .lines()
        .map(|line| {
            // perms owner/group size date time name; the name may contain spaces.
            let mut it = line.split_whitespace();
            let perms = it.next().expect("perms");
            let _owner = it.next();
            let size: u64 = it.next().expect("size").parse().expect("size is a number");
            let date = it.next().expect("date");
            let time = it.next().expect("time");
            let after = line
                .find(&format!("{date} {time} "))
                .map(|i| &line[i + date.len() + time.len() + 2..])
                .expect("name after date and time");
            let name = after.split(" -> ").next().unwrap_or(after);
            (name.to_string(), size, perms.chars().next().unwrap_or('?'))
        })
        .collect()
}

/// Normalises a GNU tar listing name the way the index does.
fn norm(name: &str) -> String {
    let n = name.trim_start_matches("./").trim_end_matches('/');
    n.to_string()
}

fn index_file(path: &Path) -> (TarIndex, Arc<dyn ReadAt>) {
    let src: Arc<dyn ReadAt> = Arc::new(FileSource::open(path).expect("open archive"));
    let idx = archive::index(&*src).expect("index");
    (idx, src)
}

/// Builds the source tree: a descriptor, a disk, nested folders, a non-ASCII name, a symlink.
fn tree(root: &Path, long: bool) -> Vec<String> {
    let mut names = Vec::new();
    let mut put = |name: &str, data: &[u8]| {
        let p = root.join(name);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, data).expect("write");
        names.push(name.to_string());
    };
    put("appliance.ovf", b"<Envelope/>\n");
    put("appliance.mf", b"SHA256(appliance.ovf)= 00\n");
    let disk: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    put("appliance-disk1.vmdk", &disk);
    put("sub/dir/notes.txt", b"notes");
    put("empty.bin", b"");
    put("\u{865a}\u{62df}\u{673a}-1.vmdk", b"non-ascii name");
    if long {
        let deep = format!("{}/{}.vmdk", "d".repeat(120), "x".repeat(130));
        put(&deep, b"long name");
    }
    std::os::unix::fs::symlink("appliance.ovf", root.join("link.ovf")).expect("symlink");
    names.push("link.ovf".into());
    names
}

fn check_format(format: &str, long: bool) {
    let t = tempfile::tempdir().expect("tempdir");
    let src = t.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    let members = tree(&src, long);
    let archive = t.path().join(format!("{format}.tar"));
    let a = archive.to_str().expect("utf-8");
    let mut args = vec!["--format", format, "-cf", a, "sub"];
    args.extend(
        members
            .iter()
            .filter(|m| !m.starts_with("sub/"))
            .map(String::as_str),
    );
    gnu_tar(&src, &args);

    let (idx, data) = index_file(&archive);
    let expected = listing(&src, &archive);
    let got: Vec<(String, u64, MemberKind)> = idx
        .members
        .iter()
        .map(|m| (m.name.clone(), m.size, m.kind))
        .collect();
    assert_eq!(
        got.len(),
        expected.len(),
        "{format}: {got:?}\nvs\n{expected:?}"
    );
    for ((name, size, kind), (tname, tsize, tperm)) in got.iter().zip(&expected) {
        assert_eq!(name, &norm(tname), "{format}");
        assert_eq!(size, tsize, "{format}: {name}");
        let want = match tperm {
            '-' => MemberKind::Regular,
            'd' => MemberKind::Directory,
            _ => MemberKind::Other,
        };
        assert_eq!(*kind, want, "{format}: {name}");
    }
    assert!(idx.skipped.is_empty() && idx.duplicates.is_empty());
    for m in idx.members.iter().filter(|m| m.kind == MemberKind::Regular) {
        let w = Window::new(data.clone(), m.data_offset, m.size).expect("window");
        let mut buf = vec![0u8; m.size as usize];
        w.read_exact_at(0, &mut buf).expect("read member");
        let original = fs::read(src.join(&m.name)).expect("original");
        assert_eq!(buf, original, "{format}: {}", m.name);
        let mode = fs::metadata(src.join(&m.name)).expect("stat");
        assert_eq!(
            m.mode,
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o7777
        );
    }
}

#[test]
fn index_matches_gnu_tar_listing_ustar() {
    check_format("ustar", false);
}

#[test]
fn index_matches_gnu_tar_listing_gnu_with_long_names() {
    check_format("gnu", true);
}

#[test]
fn index_matches_gnu_tar_listing_oldgnu_with_long_names() {
    check_format("oldgnu", true);
}

#[test]
fn index_matches_gnu_tar_listing_pax_with_long_names() {
    check_format("pax", true);
}

#[test]
fn index_matches_gnu_tar_listing_posix_with_long_names() {
    check_format("posix", true);
}

#[test]
fn index_matches_gnu_tar_listing_v7() {
    // v7 has no long names and no non-ASCII trouble beyond bytes; same tree minus long names.
    check_format("v7", false);
}

#[test]
fn ustar_splits_long_paths_into_prefix_and_name() {
    let t = tempfile::tempdir().expect("tempdir");
    let src = t.path().join("src");
    let name = format!("{}/{}/disk.vmdk", "p".repeat(90), "q".repeat(60));
    fs::create_dir_all(src.join(Path::new(&name).parent().expect("parent"))).expect("mkdir");
    fs::write(src.join(&name), b"prefixed").expect("write");
    let archive = t.path().join("u.tar");
    gnu_tar(
        &src,
        &[
            "--format=ustar",
            "-cf",
            archive.to_str().expect("utf-8"),
            &name,
        ],
    );
    let (idx, _) = index_file(&archive);
    assert_eq!(idx.members.len(), 1);
    assert_eq!(idx.members[0].name, name);
}

fn sparse_file(root: &Path) {
    let f = fs::File::create(root.join("sparse.img")).expect("create");
    f.set_len(4 << 20).expect("set_len");
    std::os::unix::fs::FileExt::write_at(&f, b"data in the middle", 2 << 20).expect("write");
    fs::write(root.join("after.txt"), b"after").expect("write");
}

#[test]
fn sparse_members_gnu_are_other_and_skipped_correctly() {
    for format in ["gnu", "pax"] {
        let t = tempfile::tempdir().expect("tempdir");
        let src = t.path().join("src");
        fs::create_dir(&src).expect("mkdir");
        sparse_file(&src);
        let archive = t.path().join("s.tar");
        gnu_tar(
            &src,
            &[
                "--format",
                format,
                "--sparse",
                "-cf",
                archive.to_str().expect("utf-8"),
                "sparse.img",
                "after.txt",
            ],
        );
        let (idx, data) = index_file(&archive);
        let last = idx.members.last().expect("members");
        assert_eq!(last.name, "after.txt", "{format}: {:?}", idx.members);
        let mut buf = vec![0u8; 5];
        Window::new(data, last.data_offset, 5)
            .expect("window")
            .read_exact_at(0, &mut buf)
            .expect("read");
        assert_eq!(buf, b"after");
        assert!(
            idx.members[..idx.members.len() - 1]
                .iter()
                .all(|m| m.kind == MemberKind::Other),
            "{format}: {:?}",
            idx.members
        );
    }
}

/// An OVA made by GNU tar from files in a folder, descriptor first.
fn make_ova(dir: &Path, format: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let src = dir.join("src");
    for (name, data) in files {
        let p = src.join(name);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, data).expect("write");
    }
    let ova = dir.join("out.ova");
    let mut args = vec!["--format", format, "-cf", ova.to_str().expect("utf-8")];
    args.extend(files.iter().map(|(n, _)| *n));
    gnu_tar(&src, &args);
    ova
}

const DESCRIPTOR: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
  <References><File ovf:href="HREF" ovf:id="file1" ovf:size="SIZE"/></References>
  <DiskSection><Info>d</Info><Disk ovf:capacity="1" ovf:diskId="vmdisk1" ovf:fileRef="file1"/></DiskSection>
  <VirtualSystem ovf:id="vm"><Info>vm</Info></VirtualSystem>
</Envelope>
"#;

#[test]
fn package_from_gnu_tar_in_every_format() {
    let disk = vec![0x5au8; 3000];
    let href = format!("{}-disk1.vmdk", "long".repeat(30));
    let desc = DESCRIPTOR
        .replace("HREF", &href)
        .replace("SIZE", &disk.len().to_string());
    for format in ["ustar", "gnu", "pax"] {
        let t = tempfile::tempdir().expect("tempdir");
        let name_for = if format == "ustar" {
            "short-disk1.vmdk"
        } else {
            href.as_str()
        };
        let desc = desc.replace(&href, name_for);
        let ova = make_ova(
            t.path(),
            format,
            &[
                ("vm.ovf", desc.as_bytes()),
                ("vm.mf", b"x"),
                (name_for, &disk),
            ],
        );
        let p = ovafs::package::open(&ova).unwrap_or_else(|e| panic!("{format}: {e}"));
        assert_eq!(p.members.len(), 3, "{format}");
        assert_eq!(p.manifest_member, Some(1));
        let d = &p.disks[0];
        assert_eq!(d.member, Some(2));
        let data = d.data.as_ref().expect("data");
        let mut buf = vec![0u8; disk.len()];
        data.read_exact_at(0, &mut buf).expect("read");
        assert_eq!(buf, disk);
        assert_eq!(&*p.descriptor.bytes, desc.as_bytes());
    }
}

#[test]
fn package_from_gnu_tar_with_descriptor_in_a_folder() {
    let t = tempfile::tempdir().expect("tempdir");
    let desc = DESCRIPTOR.replace("HREF", "disk.vmdk").replace("SIZE", "4");
    let ova = make_ova(
        t.path(),
        "gnu",
        &[("pkg/vm.ovf", desc.as_bytes()), ("pkg/disk.vmdk", b"disk")],
    );
    let p = ovafs::package::open(&ova).expect("open");
    assert_eq!(
        p.members[p.disks[0].member.expect("member")].name,
        "pkg/disk.vmdk"
    );
}
