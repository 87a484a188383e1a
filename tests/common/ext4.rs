//! ext2/3/4 images made by e2fsprogs for the guest file-system tests, and what `debugfs`
//! (the judge) says of them: [`Debugfs::tree`] walks a whole image with `ls -p` and one
//! batched `stat` per inode, [`rdump`] copies its files out.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::run_ok;

/// `name` from PATH, else from /usr/sbin or /sbin (e2fsprogs lives there); panics naming it
/// when it is nowhere.
pub fn sbin(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]);
    for dir in dirs {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("required tool '{name}' is not installed (e2fsprogs)");
}

/// Runs `debugfs` on `image` with the commands `cmds` (one a line, `-f`), returning its
/// standard output.
pub fn debugfs_batch(image: &Path, cmds: &[String], write: bool) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cmds");
    let mut f = fs::File::create(&file).unwrap();
    for c in cmds {
        writeln!(f, "{c}").unwrap();
    }
    drop(f);
    let mut cmd = Command::new(sbin("debugfs"));
    if write {
        cmd.arg("-w");
    }
    run_ok(cmd.arg("-f").arg(&file).arg(image)).stdout
}

/// `debugfs -R CMD image`: its standard output alone (no echoed command, unlike `-f`).
pub fn debugfs_r(image: &Path, cmd: &str) -> Vec<u8> {
    run_ok(Command::new(sbin("debugfs")).arg("-R").arg(cmd).arg(image)).stdout
}

/// What `debugfs stat` says of one inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InodeInfo {
    /// The inode number.
    pub ino: u32,
    /// `Type:` (regular, directory, symlink, FIFO, ...).
    pub kind: String,
    /// `Mode:` (permission bits and setuid/setgid/sticky).
    pub mode: u32,
    /// `User:`.
    pub uid: u32,
    /// `Group:`.
    pub gid: u32,
    /// `Size:`.
    pub size: u64,
    /// `Links:`.
    pub links: u32,
    /// `mtime:` seconds.
    pub mtime: i64,
    /// `mtime:` nanoseconds (0 without the extra field).
    pub mtime_nsec: u32,
    /// `Flags:` (0x1000: an htree directory, 0x80000: extents, 0x10000000: inline data).
    pub flags: u32,
}

/// One entry of a directory as `debugfs ls -p` lists it.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The inode number.
    pub ino: u32,
    /// The full `st_mode` (type and permissions).
    pub mode: u32,
}

/// The whole tree of an image as debugfs sees it.
pub struct Debugfs {
    /// Every directory's entries (absolute path as bytes, `.` and `..` left out).
    pub dirs: BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Listed>>,
    /// Every inode's `stat`.
    pub inodes: BTreeMap<u32, InodeInfo>,
    /// Fast symbolic links' targets (`Fast link dest:`).
    pub fast_links: BTreeMap<u32, Vec<u8>>,
}

impl Debugfs {
    /// Walks `image` from its root.
    pub fn tree(image: &Path) -> Self {
        let mut dirs = BTreeMap::new();
        let mut todo = vec![b"/".to_vec()];
        let mut inos = vec![2u32];
        while let Some(dir) = todo.pop() {
            // By inode number: names need no quoting.
            let ino = dir_ino(&dirs, &dir);
            let out = debugfs_r(image, &format!("ls -p <{ino}>"));
            let entries = parse_ls(&out);
            for (name, e) in &entries {
                inos.push(e.ino);
                if e.mode & 0o170000 == 0o040000 {
                    todo.push(join(&dir, name));
                }
            }
            dirs.insert(dir, entries);
        }
        inos.sort_unstable();
        inos.dedup();
        let cmds: Vec<String> = inos.iter().map(|i| format!("stat <{i}>")).collect();
        let out = debugfs_batch(image, &cmds, false);
        let (inodes, fast_links) = parse_stats(&out);
        Debugfs {
            dirs,
            inodes,
            fast_links,
        }
    }
}

/// The inode number of directory `dir` from its parent's listing (2 for the root).
fn dir_ino(dirs: &BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Listed>>, dir: &[u8]) -> u32 {
    if dir == b"/" {
        return 2;
    }
    let cut = dir.iter().rposition(|&b| b == b'/').unwrap();
    let parent = if cut == 0 {
        b"/".to_vec()
    } else {
        dir[..cut].to_vec()
    };
    dirs[&parent][&dir[cut + 1..]].ino
}

/// `dir/name` (`/name` under the root).
pub fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if p != b"/" {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Parses `ls -p` lines `/INO/MODE/UID/GID/NAME/SIZE/` (the name may hold anything but `/`
/// and NUL), dropping `.` and `..`.
fn parse_ls(out: &[u8]) -> BTreeMap<Vec<u8>, Listed> {
    let mut entries = BTreeMap::new();
    for line in out.split(|&b| b == b'\n') {
        if !line.starts_with(b"/") {
            continue;
        }
        let fields: Vec<&[u8]> = line.split(|&b| b == b'/').collect();
        // ["", ino, mode, uid, gid, name, size, ""]
        assert_eq!(
            fields.len(),
            8,
            "ls -p line {:?}",
            String::from_utf8_lossy(line)
        );
        let name = fields[5].to_vec();
        // `/0/000000/0/0//0/`: an unused record (a block e2fsck -D left empty).
        if name == b"." || name == b".." || (fields[1] == b"0" && name.is_empty()) {
            continue;
        }
        let num = |f: &[u8]| std::str::from_utf8(f).unwrap().to_string();
        entries.insert(
            name,
            Listed {
                ino: num(fields[1]).parse().unwrap(),
                mode: u32::from_str_radix(&num(fields[2]), 8).unwrap(),
            },
        );
    }
    entries
}

/// Parses a batch of `stat <INO>` outputs.
fn parse_stats(out: &[u8]) -> (BTreeMap<u32, InodeInfo>, BTreeMap<u32, Vec<u8>>) {
    let text = String::from_utf8_lossy(out);
    let mut inodes = BTreeMap::new();
    let mut links = BTreeMap::new();
    for section in text.split("debugfs: ").skip(1) {
        let word_after = |key: &str| -> String {
            let at = section
                .find(key)
                .unwrap_or_else(|| panic!("no {key} in {section}"));
            section[at + key.len()..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_string()
        };
        let ino: u32 = word_after("Inode:").parse().unwrap();
        let mtime = word_after(" mtime:");
        let (secs, extra) = match mtime.split_once(':') {
            Some((s, e)) => (
                s,
                u32::from_str_radix(e.trim_start_matches("0x"), 16).unwrap(),
            ),
            None => (mtime.as_str(), 0),
        };
        let secs = i64::from_str_radix(secs.trim_start_matches("0x"), 16).unwrap();
        // The extra field's low two bits extend the seconds past 2038; none here.
        let info = InodeInfo {
            ino,
            kind: word_after("Type:"),
            mode: u32::from_str_radix(&word_after("Mode:"), 8).unwrap(),
            uid: word_after("User:").parse().unwrap(),
            gid: word_after("Group:").parse().unwrap(),
            size: word_after("Size:").parse().unwrap(),
            links: word_after("Links:").parse().unwrap(),
            mtime: secs + i64::from(extra & 3) * (1 << 32),
            mtime_nsec: extra >> 2,
            flags: u32::from_str_radix(word_after("Flags:").trim_start_matches("0x"), 16).unwrap(),
        };
        if let Some(at) = section.find("Fast link dest: \"") {
            let rest = &section[at + 17..];
            let end = rest.rfind('"').unwrap();
            links.insert(ino, rest.as_bytes()[..end].to_vec());
        }
        inodes.insert(ino, info);
    }
    (inodes, links)
}

/// Copies the whole tree of `image` out into `out` with `debugfs rdump` (files with their
/// bytes, symbolic links as links).
pub fn rdump(image: &Path, out: &Path) {
    fs::create_dir_all(out).unwrap();
    let out_s = out.to_str().unwrap();
    debugfs_r(image, &format!("rdump / \"{out_s}\""));
}

/// The host path under `root` of guest path `abs`.
pub fn host_path(root: &Path, abs: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(abs.strip_prefix(b"/").unwrap_or(abs)))
}
