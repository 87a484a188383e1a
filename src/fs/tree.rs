//! The node table of a mount: directories and read-only files, built once at mount time.
//!
//! Inode numbers are indexes into the table (root = 1), so they are stable for the life of
//! the mount. Entries arrive as slash-separated relative paths; intermediate directories are
//! created as needed. A path that collides with an existing entry (a member named like a
//! folder ovafs creates, say) is skipped with a warning: the first entry wins, and entries
//! are added members first, so archive content always shows as stored.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::disk::engine::FlatDisk;
use crate::io::ReadAt;

/// Inode number of the root directory (FUSE's fixed value).
pub const ROOT_INO: u64 = 1;

/// What a file serves.
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

/// A file to place in the tree.
pub struct FileEntry {
    /// Relative path, `/`-separated, already validated (no `..`, no empty components).
    pub path: String,
    /// What reading it returns.
    pub content: Content,
    /// Permission bits (write bits are cleared: the tree is read-only).
    pub mode: u32,
    /// Modification time.
    pub mtime: SystemTime,
}

/// One node.
pub enum NodeKind {
    /// A directory and its children by name.
    Dir(BTreeMap<String, u64>),
    /// A read-only file.
    File {
        /// What it serves.
        content: Content,
        /// Its size in bytes.
        size: u64,
    },
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
    /// Directory or file.
    pub kind: NodeKind,
}

/// The whole tree.
pub struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    /// An empty tree whose root has `mtime`.
    pub fn new(root_mtime: SystemTime) -> Self {
        Tree {
            nodes: vec![Node {
                name: String::new(),
                parent: ROOT_INO,
                mode: 0o555,
                mtime: root_mtime,
                kind: NodeKind::Dir(BTreeMap::new()),
            }],
        }
    }

    /// The node with inode `ino`.
    pub fn get(&self, ino: u64) -> Option<&Node> {
        let idx = ino.checked_sub(1)?;
        self.nodes.get(usize::try_from(idx).ok()?)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the tree holds only its root.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() <= 1
    }

    /// Total bytes of all files (for statfs).
    pub fn total_bytes(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| match &n.kind {
                NodeKind::File { size, .. } => *size,
                NodeKind::Dir(_) => 0,
            })
            .fold(0u64, u64::saturating_add)
    }

    /// Child `name` of directory `parent`.
    pub fn lookup(&self, parent: u64, name: &str) -> Option<u64> {
        match &self.get(parent)?.kind {
            NodeKind::Dir(children) => children.get(name).copied(),
            NodeKind::File { .. } => None,
        }
    }

    /// Adds a file, creating its folders. Returns its inode, or `None` (with a warning) if
    /// the path collides with an existing entry.
    pub fn add_file(&mut self, entry: FileEntry) -> Option<u64> {
        let mut parts: Vec<&str> = entry.path.split('/').filter(|p| !p.is_empty()).collect();
        let file_name = parts.pop()?;
        let mut dir = ROOT_INO;
        for part in parts {
            dir = match self.lookup(dir, part) {
                Some(ino) if matches!(self.get(ino)?.kind, NodeKind::Dir(_)) => ino,
                Some(_) => {
                    log::warn!(
                        "{}: a file named {part:?} is in the way; entry not shown",
                        entry.path
                    );
                    return None;
                }
                None => self.push(
                    dir,
                    part,
                    0o555,
                    entry.mtime,
                    NodeKind::Dir(BTreeMap::new()),
                ),
            };
        }
        if self.lookup(dir, file_name).is_some() {
            log::warn!("{}: duplicate name; entry not shown", entry.path);
            return None;
        }
        let size = entry.content.reader().len();
        let mode = (entry.mode & 0o555) | 0o400;
        Some(self.push(
            dir,
            file_name,
            mode,
            entry.mtime,
            NodeKind::File {
                content: entry.content,
                size,
            },
        ))
    }

    /// Makes sure directory `path` exists (empty folders such as `disks/` on a package with
    /// no disks).
    pub fn add_dir(&mut self, path: &str, mtime: SystemTime) -> Option<u64> {
        let mut dir = ROOT_INO;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            dir = match self.lookup(dir, part) {
                Some(ino) if matches!(self.get(ino)?.kind, NodeKind::Dir(_)) => ino,
                Some(_) => return None,
                None => self.push(dir, part, 0o555, mtime, NodeKind::Dir(BTreeMap::new())),
            };
        }
        Some(dir)
    }

    fn push(
        &mut self,
        parent: u64,
        name: &str,
        mode: u32,
        mtime: SystemTime,
        kind: NodeKind,
    ) -> u64 {
        self.nodes.push(Node {
            name: name.to_string(),
            parent,
            mode,
            mtime,
            kind,
        });
        let ino = self.nodes.len() as u64;
        if let Some(Node {
            kind: NodeKind::Dir(children),
            ..
        }) = usize::try_from(parent - 1)
            .ok()
            .and_then(|i| self.nodes.get_mut(i))
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

    fn entry(path: &str, n: usize) -> FileEntry {
        FileEntry {
            path: path.into(),
            content: bytes(n),
            mode: 0o644,
            mtime: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn builds_folders_and_keeps_inodes_stable() {
        let mut t = Tree::new(SystemTime::UNIX_EPOCH);
        let a = t.add_file(entry("a.ovf", 10)).unwrap();
        let b = t.add_file(entry("disks/b.raw", 20)).unwrap();
        let disks = t.lookup(ROOT_INO, "disks").unwrap();
        assert_eq!(t.lookup(disks, "b.raw"), Some(b));
        assert_eq!(t.lookup(ROOT_INO, "a.ovf"), Some(a));
        assert_eq!(t.total_bytes(), 30);
        assert_eq!(t.get(a).unwrap().mode, 0o444, "write bits cleared");
    }

    #[test]
    fn collisions_keep_the_first_entry() {
        let mut t = Tree::new(SystemTime::UNIX_EPOCH);
        t.add_file(entry("disks", 1)).unwrap();
        assert!(t.add_file(entry("disks/x.raw", 2)).is_none());
        assert!(t.add_file(entry("disks", 3)).is_none());
        assert_eq!(t.total_bytes(), 1);
        assert!(t.get(0).is_none());
        assert!(t.get(u64::MAX).is_none());
    }
}
