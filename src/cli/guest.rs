//! `ovafs ls` and `ovafs cat`: the guest view of the mount (`disks/NAME/`, issue 12)
//! without a mount, for scripts and containers. The same nodes as the mount serve, read
//! from the package as stored (a writable mount's uncommitted changes are in its overlay,
//! not here; read them through the mount).
//!
//! Paths are `NAME/...` as below the mount's `disks/` (a leading `disks/` is accepted):
//! `disk1`, `disk1/p1/etc`. Links are followed inside the guest, as the kernel follows them
//! in the mount (their targets never lead out of the guest's tree).

use std::collections::VecDeque;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use super::EXIT_OK;
use crate::appliance::{self, Appliance};
use crate::cache::UnitCache;
use crate::error::{Error, Refusal, Result};
use crate::node::folder::{Folder, Origin};
use crate::node::prefetch::DiskContent;
use crate::node::{Background, DirNode, Node, OpenMode, Task};

/// Links followed at most while resolving one path (Linux's limit).
const MAX_LINK_HOPS: usize = 40;
/// The cache of decoded disk units for one command.
const CACHE_BYTES: u64 = 64 << 20;
/// Bytes copied to standard output per read.
const CHUNK: usize = 1 << 20;

/// `ovafs ls [-l] SOURCE [PATH]`.
pub fn ls(source: &Path, path: &str, long: bool) -> Result<i32> {
    let root = guest_root(source)?;
    let (node, shown) = resolve(root, path, true)?;
    let mut out = std::io::stdout().lock();
    match node {
        Node::Dir(dir) => {
            let mut entries = dir.list().map_err(|e| e.context(shown.clone()))?;
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, child) in entries {
                print_entry(&mut out, &name, &child, long)?;
            }
        }
        other => print_entry(&mut out, &shown, &other, long)?,
    }
    Ok(EXIT_OK)
}

/// `ovafs cat SOURCE PATH`.
pub fn cat(source: &Path, path: &str) -> Result<i32> {
    let root = guest_root(source)?;
    let (node, shown) = resolve(root, path, true)?;
    let Node::File(file) = node else {
        return Err(Error::refused(shown, Refusal::IsAFolder));
    };
    let open = file.open(OpenMode::default())?;
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    loop {
        let n = open
            .read_at(offset, &mut buf)
            .map_err(|e| e.context(format!("{shown} at byte {offset}")))?;
        if n == 0 {
            break;
        }
        write_out(&mut out, &buf[..n])?;
        offset = offset.saturating_add(n as u64);
    }
    out.flush().map_err(|e| Error::io("standard output", e))?;
    Ok(EXIT_OK)
}

/// A folder holding each disk's guest view by its name, as the mount's `disks/` does.
fn guest_root(source: &Path) -> Result<Arc<dyn DirNode>> {
    let appliance = Appliance::open(source)?;
    let cache = Arc::new(UnitCache::new(CACHE_BYTES));
    let root = Folder::root(SystemTime::UNIX_EPOCH);
    for d in &appliance.disks {
        let flat = Arc::new(appliance::flat_chain(d, &cache));
        let view = appliance::guest_view(&d.stem, DiskContent::Flat(flat), d.mtime, d.mode);
        root.add(&d.stem, view, d.mtime, Origin::Fixed);
    }
    Ok(root)
}

/// The node at `path` below `root`, and the path as shown in messages. Links on the way
/// (and the last one when `follow_last`) are followed, at most [`MAX_LINK_HOPS`].
fn resolve(root: Arc<dyn DirNode>, path: &str, follow_last: bool) -> Result<(Node, String)> {
    let path = path.trim_start_matches('/');
    let path = path.strip_prefix("disks/").unwrap_or(path);
    let mut todo: VecDeque<String> = components(path).collect();
    let mut stack: Vec<(String, Arc<dyn DirNode>)> = Vec::new();
    let mut hops = 0usize;
    let shown = |stack: &[(String, Arc<dyn DirNode>)], name: &str| {
        let mut parts: Vec<&str> = stack.iter().map(|(n, _)| n.as_str()).collect();
        parts.push(name);
        parts.retain(|p| !p.is_empty());
        parts.join("/")
    };
    while let Some(name) = todo.pop_front() {
        if name == ".." {
            stack.pop();
            continue;
        }
        let dir = stack
            .last()
            .map_or_else(|| root.clone(), |(_, d)| d.clone());
        let here = shown(&stack, &name);
        let node = dir
            .find(&name)
            .map_err(|e| e.context(here.clone()))?
            .ok_or_else(|| Error::refused(here.clone(), Refusal::NotFound))?;
        match node {
            Node::Dir(d) => stack.push((name, d)),
            Node::Symlink(target) if !todo.is_empty() || follow_last => {
                hops += 1;
                if hops > MAX_LINK_HOPS {
                    return Err(Error::refused(
                        format!("{here}: too many levels of links"),
                        Refusal::InvalidArgument,
                    ));
                }
                for part in components(&target).rev() {
                    todo.push_front(part);
                }
            }
            other if todo.is_empty() => return Ok((other, here)),
            _ => return Err(Error::refused(here, Refusal::NotAFolder)),
        }
    }
    let here = shown(&stack, "");
    match stack.pop() {
        Some((_, d)) => Ok((Node::Dir(d), here)),
        None => Ok((Node::Dir(root), here)),
    }
}

/// The parts of a path, without empty ones and `.`.
fn components(path: &str) -> impl DoubleEndedIterator<Item = String> + '_ {
    path.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .map(str::to_string)
}

/// One line of `ls`: the name, or with `long` what `ls -l` shows (mode, owner, group, size,
/// modification time in UTC, name, link target).
fn print_entry(out: &mut impl Write, name: &str, node: &Node, long: bool) -> Result<()> {
    if !long {
        return write_out(out, format!("{name}\n").as_bytes());
    }
    let line = match node {
        Node::Dir(d) => {
            let a = d.attributes();
            let (uid, gid) = d.owner().unwrap_or((0, 0));
            let time = humantime::format_rfc3339_seconds(a.mtime);
            format!("d{} {uid} {gid} 0 {time} {name}\n", mode_text(a.mode))
        }
        Node::File(f) => {
            let a = f.attributes(&Inline);
            let (uid, gid) = f.owner().unwrap_or((0, 0));
            let time = humantime::format_rfc3339_seconds(a.mtime);
            format!(
                "-{} {uid} {gid} {} {time} {name}\n",
                mode_text(a.mode),
                a.size
            )
        }
        Node::Symlink(t) => format!("lrwxrwxrwx 0 0 {} - {name} -> {t}\n", t.len()),
    };
    write_out(out, line.as_bytes())
}

/// `rwxr-xr-x` with setuid, setgid and sticky as `ls` shows them.
fn mode_text(mode: u32) -> String {
    let mut s: Vec<u8> = b"rwxrwxrwx".to_vec();
    for (i, c) in s.iter_mut().enumerate() {
        if mode & (0o400 >> i) == 0 {
            *c = b'-';
        }
    }
    for (bit, at, set, unset) in [
        (0o4000, 2, b's', b'S'),
        (0o2000, 5, b's', b'S'),
        (0o1000, 8, b't', b'T'),
    ] {
        if mode & bit != 0 {
            s[at] = if s[at] == b'-' { unset } else { set };
        }
    }
    String::from_utf8_lossy(&s).into_owned()
}

fn write_out(out: &mut impl Write, bytes: &[u8]) -> Result<()> {
    out.write_all(bytes)
        .map_err(|e| Error::io("standard output", e))
}

/// Work a node hands off runs at once: a command has no worker pool.
struct Inline;

impl Background for Inline {
    fn run(&self, task: Task) {
        task();
    }

    fn read_ahead(&self, _task: Task) {}
}

#[cfg(test)]
mod tests {
    use super::mode_text;

    #[test]
    fn modes_read_as_ls_shows_them() {
        assert_eq!(mode_text(0o755), "rwxr-xr-x");
        assert_eq!(mode_text(0o4555), "r-sr-xr-x");
        assert_eq!(mode_text(0o1777), "rwxrwxrwt");
        assert_eq!(mode_text(0o2440), "r--r-S---");
    }
}
