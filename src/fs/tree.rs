//! The node table of a mount: folders, files and symlinks, with stable inode numbers.
//!
//! Inode numbers are slots in the table (root = 1) and are never reused within a mount, so
//! they stay stable for the life of the mount even as editors create and delete their
//! temporary files. Three kinds of files:
//! - static files (archive members, flat disks): immutable content;
//! - live files (the descriptor, the manifest, settings): content produced by the
//!   [`Backend`](super::backend::Backend) on demand, named by their path in the mount;
//! - scratch files: editors' temporary, swap and backup files, held in memory; they never
//!   become settings and never reach the OVA (unless renamed over a setting, which is a
//!   write of that setting).
//!
//! Entries arrive as slash-separated relative paths; intermediate folders are created as
//! needed. A path that collides with an existing entry is skipped with a warning.
//!
//! The mount's own names come first: the top-level names ovafs generates
//! ([`RESERVED_NAMES`]: the status folder, the disks folder and the settings tree) belong to
//! ovafs whatever the package holds. A package file whose path starts with one of them is
//! shown under [`ESCAPE_DIR`] instead (`.ovafs/members/<its path>`, see [`shown_path`]), so
//! a member named `.ovafs/status` or `disks/x.raw` can neither replace the integrity report
//! nor pass for a flat image, and is still readable, byte for byte, under its escaped name.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::disk::engine::FlatDisk;
use crate::io::ReadAt;

/// Inode number of the root directory (FUSE's fixed value).
pub const ROOT_INO: u64 = 1;

/// Folder of the status files (`.ovafs/status`, `.ovafs/status.json`).
pub const STATUS_DIR: &str = ".ovafs";

/// Folder of the flat images (`disks/NAME.raw`).
pub const DISKS_DIR: &str = "disks";

/// Where a package file whose name collides with the mount's own names is shown:
/// `.ovafs/members/<its path in the package>`.
pub const ESCAPE_DIR: &str = ".ovafs/members";

/// Every top-level name the mount generates. A package file whose first path component is
/// one of these is shown under [`ESCAPE_DIR`] (the one place this rule is applied is
/// [`shown_path`]).
pub const RESERVED_NAMES: [&str; 5] = [
    STATUS_DIR,
    DISKS_DIR,
    crate::settings::TOP_LEVEL_NAMES[0],
    crate::settings::TOP_LEVEL_NAMES[1],
    crate::settings::TOP_LEVEL_NAMES[2],
];

/// Whether `path` (a package-relative name) lies in the mount's own namespace.
pub fn is_reserved(path: &str) -> bool {
    let first = path.split('/').find(|p| !p.is_empty()).unwrap_or("");
    RESERVED_NAMES.contains(&first)
}

/// The path in the mount of the package file `name`: its own name, or
/// `.ovafs/members/<name>` when that name lies in the mount's own namespace.
pub fn shown_path(name: &str) -> Cow<'_, str> {
    if is_reserved(name) {
        Cow::Owned(format!("{ESCAPE_DIR}/{}", name.trim_start_matches('/')))
    } else {
        Cow::Borrowed(name)
    }
}

/// A package file shown under an escaped name because its own is the mount's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escaped {
    /// Its name in the package.
    pub name: String,
    /// Where the mount shows it (`.ovafs/members/<name>`).
    pub shown: String,
}

/// Deepest folder nesting accepted when walking paths (bounds every loop on names).
const MAX_DEPTH: usize = 256;

/// What a static file serves.
#[derive(Clone)]
pub enum Content {
    /// Bytes as stored (an archive member, a file of an unpacked package).
    Bytes(Arc<dyn ReadAt>),
    /// A flat disk decoded through the cache.
    Disk(Arc<FlatDisk>),
}

impl Content {
    /// The readable bytes.
    pub fn reader(&self) -> &dyn ReadAt {
        match self {
            Content::Bytes(r) => &**r,
            Content::Disk(d) => &**d,
        }
    }
}

/// The kinds of file.
pub enum FileKind {
    /// Immutable content.
    Static(Content),
    /// Content from the backend, named by this path in the mount.
    Live(String),
    /// An editor's temporary file, in memory.
    Scratch(Vec<u8>),
}

/// One node's kind.
pub enum NodeKind {
    /// A folder and its children by name.
    Dir(BTreeMap<String, u64>),
    /// A file.
    File(FileKind),
    /// A symbolic link and its target.
    Symlink(String),
}

/// A node of the table.
pub struct Node {
    /// Name within its parent ("" for the root).
    pub name: String,
    /// Parent inode (the root is its own parent).
    pub parent: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time.
    pub mtime: SystemTime,
    /// Folder, file or link.
    pub kind: NodeKind,
    /// Whether the node came from the backend's live entries (settings folders, links,
    /// live files), so that a resync may remove it.
    pub live: bool,
}

impl Node {
    /// Whether this is a folder.
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, NodeKind::Dir(_))
    }
}

/// The whole tree.
pub struct Tree {
    nodes: Vec<Option<Node>>,
}

impl Tree {
    /// An empty tree whose root has `mtime`.
    pub fn new(root_mtime: SystemTime) -> Self {
        Tree {
            nodes: vec![Some(Node {
                name: String::new(),
                parent: ROOT_INO,
                mode: 0o555,
                mtime: root_mtime,
                kind: NodeKind::Dir(BTreeMap::new()),
                live: false,
            })],
        }
    }

    /// The node with inode `ino`.
    pub fn get(&self, ino: u64) -> Option<&Node> {
        let idx = usize::try_from(ino.checked_sub(1)?).ok()?;
        self.nodes.get(idx)?.as_ref()
    }

    /// The node with inode `ino`, mutably.
    pub fn get_mut(&mut self, ino: u64) -> Option<&mut Node> {
        let idx = usize::try_from(ino.checked_sub(1)?).ok()?;
        self.nodes.get_mut(idx)?.as_mut()
    }

    /// Number of live nodes.
    pub fn len(&self) -> usize {
        self.nodes.iter().filter(|n| n.is_some()).count()
    }

    /// Whether the tree holds only its root.
    pub fn is_empty(&self) -> bool {
        self.len() <= 1
    }

    /// Total bytes of static files (for statfs).
    pub fn total_bytes(&self) -> u64 {
        self.nodes
            .iter()
            .flatten()
            .map(|n| match &n.kind {
                NodeKind::File(FileKind::Static(c)) => c.reader().len(),
                NodeKind::File(FileKind::Scratch(d)) => d.len() as u64,
                _ => 0,
            })
            .fold(0u64, u64::saturating_add)
    }

    /// Child `name` of folder `parent`.
    pub fn lookup(&self, parent: u64, name: &str) -> Option<u64> {
        match &self.get(parent)?.kind {
            NodeKind::Dir(children) => children.get(name).copied(),
            _ => None,
        }
    }

    /// The inode at `path` (relative, `/`-separated).
    pub fn resolve(&self, path: &str) -> Option<u64> {
        let mut ino = ROOT_INO;
        for part in path.split('/').filter(|p| !p.is_empty()).take(MAX_DEPTH) {
            ino = self.lookup(ino, part)?;
        }
        Some(ino)
    }

    /// The path of `ino` inside the mount, without a leading slash ("" for the root).
    pub fn path_of(&self, ino: u64) -> String {
        let mut parts = Vec::new();
        let mut cur = ino;
        while cur != ROOT_INO && parts.len() < MAX_DEPTH {
            match self.get(cur) {
                Some(n) => {
                    parts.push(n.name.as_str());
                    cur = n.parent;
                }
                None => break,
            }
        }
        parts.reverse();
        parts.join("/")
    }

    /// Makes sure folder `path` exists; returns its inode, or `None` if a non-folder is in
    /// the way. New folders get `mode` and `mtime` and are marked `live` as asked.
    pub fn ensure_dir(
        &mut self,
        path: &str,
        mode: u32,
        mtime: SystemTime,
        live: bool,
    ) -> Option<u64> {
        let mut dir = ROOT_INO;
        for part in path.split('/').filter(|p| !p.is_empty()).take(MAX_DEPTH) {
            dir = match self.lookup(dir, part) {
                Some(ino) if self.get(ino)?.is_dir() => ino,
                Some(_) => return None,
                None => self.push(dir, part, mode, mtime, NodeKind::Dir(BTreeMap::new()), live),
            };
        }
        Some(dir)
    }

    /// Adds a node at `path`, creating its folders. Returns its inode, or `None` (with a
    /// warning) if the path collides with an existing entry.
    pub fn add(
        &mut self,
        path: &str,
        kind: NodeKind,
        mode: u32,
        mtime: SystemTime,
        live: bool,
    ) -> Option<u64> {
        let (dir_path, name) = match path.rsplit_once('/') {
            Some((d, n)) => (d, n),
            None => ("", path),
        };
        if name.is_empty() {
            return None;
        }
        let Some(dir) = self.ensure_dir(dir_path, 0o555, mtime, live) else {
            log::warn!("{path}: a file is in the way of its folder; entry not shown");
            return None;
        };
        if self.lookup(dir, name).is_some() {
            log::warn!("{path}: duplicate name; entry not shown");
            return None;
        }
        Some(self.push(dir, name, mode, mtime, kind, live))
    }

    /// Adds a static file (write bits cleared, owner can always read).
    pub fn add_static(
        &mut self,
        path: &str,
        content: Content,
        mode: u32,
        mtime: SystemTime,
    ) -> Option<u64> {
        let mode = (mode & 0o555) | 0o400;
        self.add(
            path,
            NodeKind::File(FileKind::Static(content)),
            mode,
            mtime,
            false,
        )
    }

    /// Creates a scratch file `name` in folder `parent`.
    pub fn add_scratch(&mut self, parent: u64, name: &str, mode: u32) -> Option<u64> {
        if !self.get(parent)?.is_dir() || self.lookup(parent, name).is_some() {
            return None;
        }
        let kind = NodeKind::File(FileKind::Scratch(Vec::new()));
        Some(self.push(parent, name, mode & 0o7777, SystemTime::now(), kind, false))
    }

    /// Removes `ino` (and, for a folder, everything under it) from the tree.
    pub fn remove(&mut self, ino: u64) {
        if ino == ROOT_INO {
            return;
        }
        let Some(node) = self.get(ino) else { return };
        let (parent, name) = (node.parent, node.name.clone());
        if let Some(Node {
            kind: NodeKind::Dir(children),
            ..
        }) = self.get_mut(parent)
        {
            children.remove(&name);
        }
        let mut stack = vec![ino];
        while let Some(i) = stack.pop() {
            if let Some(Node {
                kind: NodeKind::Dir(children),
                ..
            }) = self.get(i)
            {
                stack.extend(children.values().copied());
            }
            if let Some(slot) = usize::try_from(i - 1)
                .ok()
                .and_then(|s| self.nodes.get_mut(s))
            {
                *slot = None;
            }
        }
    }

    /// Moves `ino` to `new_parent` under `new_name`, replacing nothing (the caller removes
    /// any target first).
    pub fn rename(&mut self, ino: u64, new_parent: u64, new_name: &str) -> bool {
        let Some(node) = self.get(ino) else {
            return false;
        };
        let (old_parent, old_name) = (node.parent, node.name.clone());
        if self.lookup(new_parent, new_name).is_some()
            || !self.get(new_parent).is_some_and(Node::is_dir)
        {
            return false;
        }
        if let Some(Node {
            kind: NodeKind::Dir(children),
            ..
        }) = self.get_mut(old_parent)
        {
            children.remove(&old_name);
        }
        if let Some(Node {
            kind: NodeKind::Dir(children),
            ..
        }) = self.get_mut(new_parent)
        {
            children.insert(new_name.to_string(), ino);
        }
        if let Some(n) = self.get_mut(ino) {
            n.parent = new_parent;
            n.name = new_name.to_string();
            n.mtime = SystemTime::now();
        }
        true
    }

    /// Paths of every node marked `live`, with their inodes.
    pub fn live_nodes(&self) -> Vec<(String, u64)> {
        (1..=self.nodes.len() as u64)
            .filter(|&ino| self.get(ino).is_some_and(|n| n.live))
            .map(|ino| (self.path_of(ino), ino))
            .collect()
    }

    fn push(
        &mut self,
        parent: u64,
        name: &str,
        mode: u32,
        mtime: SystemTime,
        kind: NodeKind,
        live: bool,
    ) -> u64 {
        self.nodes.push(Some(Node {
            name: name.to_string(),
            parent,
            mode,
            mtime,
            kind,
            live,
        }));
        let ino = self.nodes.len() as u64;
        if let Some(Node {
            kind: NodeKind::Dir(children),
            ..
        }) = self.get_mut(parent)
        {
            children.insert(name.to_string(), ino);
        }
        ino
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize) -> Content {
        Content::Bytes(Arc::new(vec![0u8; n]))
    }

    #[test]
    fn builds_folders_and_keeps_inodes_stable() {
        let mut t = Tree::new(SystemTime::UNIX_EPOCH);
        let a = t
            .add_static("a.ovf", bytes(10), 0o644, SystemTime::UNIX_EPOCH)
            .unwrap();
        let b = t
            .add_static("disks/b.raw", bytes(20), 0o644, SystemTime::UNIX_EPOCH)
            .unwrap();
        let disks = t.lookup(ROOT_INO, "disks").unwrap();
        assert_eq!(t.lookup(disks, "b.raw"), Some(b));
        assert_eq!(t.resolve("disks/b.raw"), Some(b));
        assert_eq!(t.path_of(b), "disks/b.raw");
        assert_eq!(t.lookup(ROOT_INO, "a.ovf"), Some(a));
        assert_eq!(t.total_bytes(), 30);
        assert_eq!(t.get(a).unwrap().mode, 0o444, "write bits cleared");
    }

    #[test]
    fn reserved_names_are_escaped_and_others_kept() {
        for (name, shown) in [
            (".ovafs/status", ".ovafs/members/.ovafs/status"),
            (".ovafs", ".ovafs/members/.ovafs"),
            ("disks/x.raw", ".ovafs/members/disks/x.raw"),
            ("vm", ".ovafs/members/vm"),
            ("vms/foo", ".ovafs/members/vms/foo"),
            (
                "networks/n/description",
                ".ovafs/members/networks/n/description",
            ),
            (".ovafs/members/x", ".ovafs/members/.ovafs/members/x"),
        ] {
            assert_eq!(shown_path(name), shown, "{name}");
        }
        for name in [
            "vm.ovf",
            "disk1.vmdk",
            "sub/disks/x",
            "Disks/x",
            "vmsx",
            ".ovafsx",
        ] {
            assert_eq!(shown_path(name), name, "{name}");
        }
    }

    #[test]
    fn collisions_keep_the_first_entry() {
        let mut t = Tree::new(SystemTime::UNIX_EPOCH);
        t.add_static("disks", bytes(1), 0o644, SystemTime::UNIX_EPOCH)
            .unwrap();
        assert!(
            t.add_static("disks/x.raw", bytes(2), 0o644, SystemTime::UNIX_EPOCH)
                .is_none()
        );
        assert!(
            t.add_static("disks", bytes(3), 0o644, SystemTime::UNIX_EPOCH)
                .is_none()
        );
        assert_eq!(t.total_bytes(), 1);
        assert!(t.get(0).is_none());
        assert!(t.get(u64::MAX).is_none());
    }

    #[test]
    fn scratch_files_rename_and_removal_never_reuse_inodes() {
        let mut t = Tree::new(SystemTime::UNIX_EPOCH);
        let dir = t
            .ensure_dir("vms/vm1", 0o755, SystemTime::UNIX_EPOCH, true)
            .unwrap();
        let s = t.add_scratch(dir, ".cpus.swp", 0o600).unwrap();
        assert!(t.add_scratch(dir, ".cpus.swp", 0o600).is_none());
        assert!(t.rename(s, ROOT_INO, "moved"));
        assert_eq!(t.resolve("moved"), Some(s));
        t.remove(s);
        assert!(t.get(s).is_none());
        let s2 = t.add_scratch(dir, "x", 0o600).unwrap();
        assert!(s2 > s);
        let vms = t.resolve("vms").unwrap();
        t.remove(vms);
        assert!(t.get(dir).is_none() && t.get(s2).is_none());
        assert_eq!(t.live_nodes().len(), 0);
    }
}
