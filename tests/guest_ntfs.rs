//! NTFS read by `ovafs::guest` (src/guest/ntfs), judged by ntfs-3g's mount and tools.
//!
//! Contents:
//! - ntfs_matches_ntfs_3g: `mkntfs -F -f` on an image file, a tree written through an
//!   ntfs-3g FUSE mount of it (long and non-ASCII names, nested folders, an empty file, a
//!   resident file, a 300 KiB non-resident one, a sparse 8 MiB file with data in its
//!   middle, a hard link, a folder of 300 names (an index with `$INDEX_ALLOCATION`), a
//!   read-only file, a compressed file (`-o compression` and the compressed attribute on
//!   its folder), symbolic links (ntfs-3g makes them Interix style: a system file holding
//!   `IntxLNK\1` and the UTF-16 target), one relative with a non-ASCII target), unmounted; then every path, kind, size, mode, link
//!   count, modification time and file's bytes that ovafs gives are those of a read-only
//!   ntfs-3g mount of the image, and `ntfscat` gives the same bytes. The compressed file is
//!   refused with an error (not garbage); the symbolic links are `Symlink`s whose targets
//!   are those ntfs-3g reads.
//! - probe_claims_ntfs_only: zeros and a FAT image are not NTFS.

mod common;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::guest_fs::{components, image_source, open_image, read_all, walk};
use common::*;
use ovafs::guest::ntfs::NtfsFsError;
use ovafs::guest::{self, EntryKind};

/// An ntfs-3g mount, unmounted when dropped.
struct Mounted(PathBuf);

impl Mounted {
    fn new(image: &Path, dir: &Path, opts: &str) -> Self {
        fs::create_dir_all(dir).unwrap();
        run_ok(
            Command::new(tool("ntfs-3g"))
                .arg("-o")
                .arg(opts)
                .arg(image)
                .arg(dir),
        );
        Mounted(dir.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let ok = Command::new(tool("fusermount3"))
            .arg("-u")
            .arg(&self.0)
            .status()
            .map(|s| s.success());
        if ok.ok() != Some(true) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Sets the Windows attributes of `path` through ntfs-3g's `system.ntfs_attrib_be`.
fn set_attrib(path: &Path, attrib: u32) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let name = CString::new("system.ntfs_attrib_be").unwrap();
    let value = attrib.to_be_bytes();
    // SAFETY: both strings are NUL-terminated, the value is 4 readable bytes.
    let rc = unsafe { libc::setxattr(p.as_ptr(), name.as_ptr(), value.as_ptr().cast(), 4, 0) };
    assert_eq!(
        rc,
        0,
        "setxattr {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Writes the tree through the mount at `m`.
fn write_tree(m: &Path) {
    let mut rng = Rng::new(7);
    let mut big = vec![0u8; 300_000];
    rng.fill(&mut big);
    fs::create_dir_all(m.join("dir1/nested dir/deeper")).unwrap();
    fs::write(m.join("A long file name with spaces.txt"), b"long name\n").unwrap();
    fs::write(m.join("ünïcödé näme.txt"), "non-ASCII\n").unwrap();
    fs::write(m.join("empty"), b"").unwrap();
    fs::write(m.join("tiny"), b"hi").unwrap();
    fs::write(m.join("big.bin"), &big).unwrap();
    fs::write(m.join("dir1/nested dir/deeper/deep.txt"), b"deep\n").unwrap();
    let sparse = fs::File::create(m.join("sparse.bin")).unwrap();
    sparse.set_len(8 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    sparse.write_all_at(b"in the middle", 4 << 20).unwrap();
    drop(sparse);
    fs::hard_link(m.join("big.bin"), m.join("dir1/big link.bin")).unwrap();
    std::os::unix::fs::symlink("big.bin", m.join("link to big")).unwrap();
    std::os::unix::fs::symlink("../ünïcödé näme.txt", m.join("dir1/link up")).unwrap();
    fs::create_dir(m.join("many")).unwrap();
    for i in 0..300 {
        fs::write(
            m.join(format!("many/a rather long file name number {i:03}.txt")),
            format!("{i}\n"),
        )
        .unwrap();
    }
    fs::write(m.join("readonly.txt"), b"read-only\n").unwrap();
    set_attrib(&m.join("readonly.txt"), 0x01);
    fs::create_dir(m.join("packed")).unwrap();
    set_attrib(&m.join("packed"), 0x800);
    fs::write(
        m.join("packed/compressed.txt"),
        b"compress me ".repeat(20_000),
    )
    .unwrap();
    for (i, p) in [
        "tiny",
        "big.bin",
        "dir1/nested dir/deeper/deep.txt",
        "readonly.txt",
    ]
    .iter()
    .enumerate()
    {
        let t =
            SystemTime::UNIX_EPOCH + Duration::new(1_600_000_000 + 86_400 * i as u64, 123_456_700);
        fs::File::options()
            .write(true)
            .open(m.join(p))
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
}

/// Every path below the mount at `m` with its metadata (not following links).
fn walk_mount(m: &Path) -> BTreeMap<String, fs::Metadata> {
    let mut out = BTreeMap::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        for e in fs::read_dir(m.join(&rel)).unwrap() {
            let e = e.unwrap();
            let rel = rel.join(e.file_name());
            let meta = fs::symlink_metadata(m.join(&rel)).unwrap();
            if meta.is_dir() {
                todo.push(rel.clone());
            }
            out.insert(format!("/{}", rel.to_str().unwrap()), meta);
        }
    }
    out
}

#[test]
fn ntfs_matches_ntfs_3g() {
    let dir = tempdir();
    let image = dir.path().join("ntfs.img");
    fs::write(&image, vec![0u8; 64 << 20]).unwrap();
    run_ok(
        Command::new(tool("mkntfs"))
            .args(["-F", "-f", "-q"])
            .arg(&image),
    );
    {
        let m = Mounted::new(&image, &dir.path().join("rw"), "compression");
        write_tree(&m.0);
    }
    let fs = open_image(&image, "ntfs");
    assert_eq!(fs.type_name(), "ntfs");
    let ours = walk(&*fs);
    let m = Mounted::new(&image, &dir.path().join("ro"), "ro");
    let theirs = walk_mount(&m.0);
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    let mut for_ntfscat = Vec::new();
    for (path, stat) in &ours {
        let meta = &theirs[path];
        let kind = if meta.is_dir() {
            EntryKind::Dir
        } else if meta.is_file() {
            EntryKind::File
        } else if meta.is_symlink() {
            EntryKind::Symlink
        } else {
            EntryKind::Other
        };
        assert_eq!(stat.kind, kind, "{path}");
        assert_eq!(
            stat.mode,
            meta.permissions().mode() & 0o7777,
            "{path}: mode"
        );
        assert_eq!(stat.nlink, meta.nlink() as u32, "{path}: links");
        assert_eq!(stat.mtime, meta.modified().unwrap(), "{path}: mtime");
        if kind == EntryKind::Other {
            continue;
        }
        assert_eq!(stat.size, meta.len(), "{path}: size");
        if kind == EntryKind::Symlink {
            let target = fs.read_link(&components(path)).unwrap();
            assert_eq!(
                target,
                fs::read_link(m.0.join(&path[1..]))
                    .unwrap()
                    .as_os_str()
                    .as_bytes(),
                "{path}: target"
            );
            assert!(
                fs.read(&components(path), 0, &mut [0u8; 10]).is_err(),
                "{path}: read of a link"
            );
            continue;
        }
        if kind != EntryKind::File {
            continue;
        }
        if path == "/packed/compressed.txt" {
            let e = fs
                .read(&components(path), 0, &mut [0u8; 100])
                .expect_err("compressed file read");
            assert!(
                matches!(
                    e.layer_error::<NtfsFsError>(),
                    Some(NtfsFsError::Unsupported(_))
                ),
                "{e}"
            );
            continue;
        }
        let data = read_all(&*fs, path);
        assert!(
            data == fs::read(m.0.join(&path[1..])).unwrap(),
            "{path}: bytes differ from ntfs-3g's"
        );
        if data.len() > 1000 {
            for_ntfscat.push((path.clone(), data));
        }
    }
    // ntfscat refuses an image ntfs-3g has open.
    drop(m);
    for (path, data) in for_ntfscat {
        let cat = run_ok(Command::new(tool("ntfscat")).arg(&image).arg(&path)).stdout;
        assert!(cat == data, "{path}: bytes differ from ntfscat's");
    }
    assert_eq!(ours["/link to big"].kind, EntryKind::Symlink);
    assert_eq!(
        fs.read_link(&components("/link to big")).unwrap(),
        b"big.bin"
    );
    assert_eq!(
        fs.read_link(&components("/dir1/link up")).unwrap(),
        "../ünïcödé näme.txt".as_bytes()
    );
    assert!(fs.read_link(&components("/big.bin")).is_err());
    assert_eq!(ours["/big.bin"].nlink, 2);
    assert_eq!(ours["/sparse.bin"].size, 8 << 20);
}

#[test]
fn probe_claims_ntfs_only() {
    let dir = tempdir();
    assert_eq!(guest::probe(&vec![0u8; 1 << 20]), None);
    let fat = dir.path().join("fat.img");
    run_ok(
        Command::new(tool("mkfs.vfat"))
            .args(["-C", "-F", "16", "-s", "1"])
            .arg(&fat)
            .arg("8192"),
    );
    assert_eq!(guest::probe(&*image_source(&fat)), Some("vfat"));
    let ntfs = dir.path().join("ntfs.img");
    fs::write(&ntfs, vec![0u8; 8 << 20]).unwrap();
    run_ok(
        Command::new(tool("mkntfs"))
            .args(["-F", "-f", "-q"])
            .arg(&ntfs),
    );
    let mut bytes = fs::read(&ntfs).unwrap();
    assert_eq!(guest::probe(&bytes), Some("ntfs"));
    // A boot sector with garbage fields: recognised, refused when opened, no panic.
    bytes[11..80].fill(0xFF);
    let source: std::sync::Arc<dyn ovafs::io::ReadAt> = std::sync::Arc::new(bytes);
    assert!(guest::ntfs::open(source).is_err());
}
