//! The files of a guest file system as nodes: a folder per guest directory
//! ([`GuestFolder`], lazy), a read-only file per regular file ([`GuestFile`]), and symbolic
//! links rewritten so that they never lead out of the guest's tree.
//!
//! Nothing is read until asked: a folder lists its directory when listed, a lookup stats one
//! name. A folder keeps its children weakly, so it hands out the same node for the same
//! child while anyone (the inode table) holds it, and memory follows what the kernel keeps,
//! not the size of the guest. Names that are not UTF-8 are not shown (logged once per
//! folder): the FUSE layer works in UTF-8 names.
//!
//! Ownership, modes and times are the guest's (`FileNode::owner`); write bits are cleared.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use super::{
    Background, BlockSize, Caching, DirAttributes, DirNode, FileAttributes, FileNode, Node,
    OpenFile, OpenMode,
};
use crate::error::{Error, Refusal, Result};
use crate::guest::{EntryKind, GuestFs, GuestStat};

/// A child kept weakly (see the module comment).
enum WeakNode {
    File(Weak<dyn FileNode>),
    Dir(Weak<dyn DirNode>),
}

impl WeakNode {
    fn upgrade(&self) -> Option<Node> {
        match self {
            WeakNode::File(w) => w.upgrade().map(Node::File),
            WeakNode::Dir(w) => w.upgrade().map(Node::Dir),
        }
    }
}

/// A directory of a guest file system.
pub struct GuestFolder {
    fs: Arc<dyn GuestFs>,
    path: Vec<Vec<u8>>,
    stat: GuestStat,
    children: Mutex<Children>,
}

/// Smallest number of remembered children before dead ones are swept out.
const MIN_SWEEP: usize = 4096;

/// The children handed out, kept weakly, and when to sweep out the dead ones.
struct Children {
    map: HashMap<String, WeakNode>,
    /// Sweep when the map reaches this many entries.
    sweep_at: usize,
}

impl GuestFolder {
    /// The root of `fs`.
    pub fn root(fs: Arc<dyn GuestFs>) -> Result<Arc<GuestFolder>> {
        let stat = fs.stat(&[])?;
        Ok(Arc::new(GuestFolder::at(fs, Vec::new(), stat)))
    }

    fn at(fs: Arc<dyn GuestFs>, path: Vec<Vec<u8>>, stat: GuestStat) -> GuestFolder {
        GuestFolder {
            fs,
            path,
            stat,
            children: Mutex::new(Children {
                map: HashMap::new(),
                sweep_at: MIN_SWEEP,
            }),
        }
    }

    fn child_path(&self, name: &str) -> Vec<Vec<u8>> {
        let mut p = self.path.clone();
        p.push(name.as_bytes().to_vec());
        p
    }

    /// The node of child `name` whose guest stat is `stat`, made now.
    fn make(&self, name: &str, stat: GuestStat) -> Option<Node> {
        let path = self.child_path(name);
        match stat.kind {
            EntryKind::Dir => Some(Node::Dir(Arc::new(GuestFolder::at(
                self.fs.clone(),
                path,
                stat,
            )))),
            EntryKind::File => Some(Node::File(Arc::new(GuestFile {
                fs: self.fs.clone(),
                path,
                stat,
            }))),
            EntryKind::Symlink => {
                let target = self.fs.read_link(&path).ok()?;
                Some(Node::Symlink(Arc::from(contained_target(
                    &target, &self.path,
                ))))
            }
            EntryKind::Other => None,
        }
    }

    /// The child `name`: the node handed out before while it lives, else made now (`stat`,
    /// when the caller has it, else asked). `None`: no such name, or nothing ovafs shows
    /// (a device, a link whose target cannot be read).
    fn child(&self, name: &str, stat: Option<GuestStat>) -> Result<Option<Node>> {
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = children.map.get(name).and_then(WeakNode::upgrade) {
            return Ok(Some(n));
        }
        let stat = match stat {
            Some(s) => s,
            None => match self.fs.stat(&self.child_path(name)) {
                Ok(s) => s,
                Err(e) if e.refusal() == Some(Refusal::NotFound) => return Ok(None),
                Err(e) => return Err(e),
            },
        };
        let Some(node) = self.make(name, stat) else {
            return Ok(None);
        };
        match &node {
            Node::File(f) => {
                children
                    .map
                    .insert(name.to_string(), WeakNode::File(Arc::downgrade(f)));
            }
            Node::Dir(d) => {
                children
                    .map
                    .insert(name.to_string(), WeakNode::Dir(Arc::downgrade(d)));
            }
            // A link is its target: nothing to keep.
            Node::Symlink(_) => {}
        }
        // Dead entries go once the map has doubled since the last sweep (at least
        // MIN_SWEEP entries), so a sweep costs amortised O(1) per insert even when every
        // child is alive (a listing of a 50,000-entry folder holds all of them).
        if children.map.len() >= children.sweep_at {
            children.map.retain(|_, w| w.upgrade().is_some());
            children.sweep_at = children.map.len().saturating_mul(2).max(MIN_SWEEP);
        }
        Ok(Some(node))
    }
}

/// A symbolic link's target made safe to follow on the host: a target that is absolute or
/// climbs above the guest's root is resolved against the link's folder `folder` inside the
/// guest (never above its root) and written relative to that folder; a relative target
/// that stays inside the guest is kept as written. The kernel then follows it inside the
/// mount, within the guest's tree.
fn contained_target(target: &[u8], folder: &[Vec<u8>]) -> String {
    let text = String::from_utf8_lossy(target);
    let absolute = text.starts_with('/');
    if !absolute && stays_inside(&text, folder.len()) {
        return text.into_owned();
    }
    let mut at: Vec<String> = if absolute {
        Vec::new()
    } else {
        folder
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    };
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                at.pop();
            }
            p => at.push(p.to_string()),
        }
    }
    let relative = format!("{}{}", "../".repeat(folder.len()), at.join("/"));
    match relative.trim_end_matches('/') {
        "" => ".".to_string(),
        r => r.to_string(),
    }
}

/// Whether the relative path `text`, followed from a folder `depth` levels below the root,
/// never climbs above the root.
fn stays_inside(text: &str, depth: usize) -> bool {
    let mut at = depth;
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => match at.checked_sub(1) {
                Some(up) => at = up,
                None => return false,
            },
            _ => at += 1,
        }
    }
    true
}

impl DirNode for GuestFolder {
    fn attributes(&self) -> DirAttributes {
        DirAttributes {
            mode: read_only(self.stat.mode),
            mtime: self.stat.mtime,
            caching: Caching::Stable,
            subfolders: (self.stat.nlink as usize).saturating_sub(2),
        }
    }

    fn lookup(&self, name: &str) -> Option<Node> {
        self.find(name).ok().flatten()
    }

    fn entries(&self) -> Vec<(String, Node)> {
        self.list().unwrap_or_default()
    }

    fn find(&self, name: &str) -> Result<Option<Node>> {
        self.child(name, None).map_err(|e| {
            log::error!("{}: {e}", shown(&self.child_path(name)));
            e
        })
    }

    /// A child that cannot be read (a corrupt inode) is left out with a log line; a
    /// directory that cannot be read fails whole.
    fn list(&self) -> Result<Vec<(String, Node)>> {
        let listed = self.fs.read_dir(&self.path).map_err(|e| {
            log::error!("{}: {e}", shown(&self.path));
            e
        })?;
        let mut out = Vec::with_capacity(listed.len());
        let mut skipped = 0usize;
        for entry in listed {
            let Ok(name) = String::from_utf8(entry.name) else {
                skipped += 1;
                continue;
            };
            match self.child(&name, None) {
                Ok(Some(node)) => out.push((name, node)),
                Ok(None) => {}
                Err(e) => log::error!("{}: {e}", shown(&self.child_path(&name))),
            }
        }
        if skipped > 0 {
            log::warn!(
                "{}: {skipped} names that are not UTF-8 are not shown",
                shown(&self.path)
            );
        }
        Ok(out)
    }

    fn is_lazy(&self) -> bool {
        true
    }

    fn owner(&self) -> Option<(u32, u32)> {
        Some((self.stat.uid, self.stat.gid))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

/// A regular file of a guest file system, read-only.
pub struct GuestFile {
    fs: Arc<dyn GuestFs>,
    path: Vec<Vec<u8>>,
    stat: GuestStat,
}

impl FileNode for GuestFile {
    fn attributes(&self, _background: &dyn Background) -> FileAttributes {
        FileAttributes {
            size: self.stat.size,
            allocated: None,
            mode: read_only(self.stat.mode),
            mtime: self.stat.mtime,
            block_size: BlockSize::Normal,
        }
    }

    /// Reads decode guest structures: on the workers, with the page cache kept.
    fn caching(&self) -> Caching {
        Caching::Stable
    }

    fn open(self: Arc<Self>, mode: OpenMode) -> Result<Arc<dyn OpenFile>> {
        if mode.write {
            return Err(Error::refused("open for writing", Refusal::AccessDenied));
        }
        Ok(Arc::new(OpenGuestFile(self)))
    }

    fn owner(&self) -> Option<(u32, u32)> {
        Some((self.stat.uid, self.stat.gid))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

struct OpenGuestFile(Arc<GuestFile>);

impl OpenFile for OpenGuestFile {
    fn len(&self) -> u64 {
        self.0.stat.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if offset >= self.0.stat.size {
            return Ok(0);
        }
        self.0.fs.read(&self.0.path, offset, buf)
    }
}

/// The guest's mode without write bits (the guest file system is read-only here).
fn read_only(mode: u32) -> u32 {
    mode & !0o222 & 0o7777
}

fn shown(path: &[Vec<u8>]) -> String {
    let parts: Vec<String> = path
        .iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    format!("guest /{}", parts.join("/"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::guest::GuestEntry;
    use std::time::SystemTime;

    /// A guest file system held in memory: paths to (stat, content or link target).
    struct InMemory(HashMap<Vec<Vec<u8>>, (GuestStat, Vec<u8>)>);

    fn stat(kind: EntryKind, size: u64, mode: u32) -> GuestStat {
        GuestStat {
            kind,
            size,
            mode,
            uid: 1000,
            gid: 100,
            mtime: SystemTime::UNIX_EPOCH,
            nlink: if kind == EntryKind::Dir { 3 } else { 1 },
        }
    }

    fn path(p: &str) -> Vec<Vec<u8>> {
        p.split('/')
            .filter(|c| !c.is_empty())
            .map(|c| c.as_bytes().to_vec())
            .collect()
    }

    impl InMemory {
        fn sample() -> Arc<dyn GuestFs> {
            let mut m = HashMap::new();
            m.insert(path(""), (stat(EntryKind::Dir, 0, 0o755), Vec::new()));
            m.insert(path("etc"), (stat(EntryKind::Dir, 0, 0o755), Vec::new()));
            let hosts = b"127.0.0.1 localhost\n".to_vec();
            m.insert(
                path("etc/hosts"),
                (stat(EntryKind::File, hosts.len() as u64, 0o644), hosts),
            );
            m.insert(
                path("etc/link"),
                (stat(EntryKind::Symlink, 10, 0o777), b"/etc/hosts".to_vec()),
            );
            m.insert(
                path("etc/\u{e9}t\u{e9}"),
                (stat(EntryKind::File, 0, 0o4755), Vec::new()),
            );
            Arc::new(InMemory(m))
        }

        fn get(&self, p: &[Vec<u8>]) -> Result<&(GuestStat, Vec<u8>)> {
            self.0
                .get(p)
                .ok_or_else(|| Error::refused("guest path", Refusal::NotFound))
        }
    }

    impl GuestFs for InMemory {
        fn type_name(&self) -> &'static str {
            "memory"
        }
        fn stat(&self, p: &[Vec<u8>]) -> Result<GuestStat> {
            Ok(self.get(p)?.0.clone())
        }
        fn read_dir(&self, p: &[Vec<u8>]) -> Result<Vec<GuestEntry>> {
            let mut out: Vec<GuestEntry> = self
                .0
                .iter()
                .filter(|(k, _)| k.len() == p.len() + 1 && k.starts_with(p))
                .map(|(k, (s, _))| GuestEntry {
                    name: k[p.len()].clone(),
                    kind: s.kind,
                })
                .collect();
            out.push(GuestEntry {
                name: vec![0xff, 0xfe],
                kind: EntryKind::File,
            });
            Ok(out)
        }
        fn read(&self, p: &[Vec<u8>], offset: u64, buf: &mut [u8]) -> Result<usize> {
            Ok(crate::node::read_slice(&self.get(p)?.1, offset, buf))
        }
        fn read_link(&self, p: &[Vec<u8>]) -> Result<Vec<u8>> {
            Ok(self.get(p)?.1.clone())
        }
    }

    struct NoBackground;
    impl Background for NoBackground {
        fn run(&self, _task: crate::node::Task) {}
        fn read_ahead(&self, _task: crate::node::Task) {}
    }

    #[test]
    fn a_guest_tree_reads_lazily_with_the_guests_owners_and_no_write_bits() {
        let root = GuestFolder::root(InMemory::sample()).unwrap();
        let Some(Node::Dir(etc)) = root.lookup("etc") else {
            panic!("etc is a folder")
        };
        assert_eq!(etc.owner(), Some((1000, 100)));
        let mut names: Vec<String> = etc.entries().into_iter().map(|(n, _)| n).collect();
        names.sort();
        assert_eq!(
            names,
            ["hosts", "link", "\u{e9}t\u{e9}"],
            "the non-UTF-8 name is not shown"
        );
        let Some(Node::File(hosts)) = etc.lookup("hosts") else {
            panic!("hosts is a file")
        };
        let a = hosts.attributes(&NoBackground);
        assert_eq!(a.mode, 0o444);
        let h = hosts.clone().open(OpenMode::default()).unwrap();
        let mut buf = [0u8; 9];
        h.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf, b"127.0.0.1");
        assert!(
            hosts
                .clone()
                .open(OpenMode {
                    write: true,
                    ..OpenMode::default()
                })
                .is_err()
        );
        let Some(Node::File(again)) = etc.lookup("hosts") else {
            panic!()
        };
        assert!(Arc::ptr_eq(&hosts, &again), "the same node while it lives");
        let Some(Node::Symlink(t)) = etc.lookup("link") else {
            panic!("link is a link")
        };
        assert_eq!(&*t, "../etc/hosts");
        let Some(Node::File(suid)) = etc.lookup("\u{e9}t\u{e9}") else {
            panic!()
        };
        assert_eq!(suid.attributes(&NoBackground).mode, 0o4555);
        assert!(etc.lookup("missing").is_none());
    }

    #[test]
    fn link_targets_stay_inside_the_guest() {
        let ssh = [b"etc".to_vec(), b"ssh".to_vec()];
        assert_eq!(contained_target(b"/usr/share/x", &ssh), "../../usr/share/x");
        assert_eq!(contained_target(b"moduli", &ssh), "moduli");
        assert_eq!(contained_target(b"../hosts", &ssh), "../hosts");
        assert_eq!(contained_target(b"../../../hosts", &ssh), "../../hosts");
        assert_eq!(
            contained_target(b"../../../../../etc/passwd", &ssh),
            "../../etc/passwd"
        );
        assert_eq!(contained_target(b"/", &[]), ".");
        assert_eq!(contained_target(b"/../../x", &ssh[..1]), "../x");
    }
}
