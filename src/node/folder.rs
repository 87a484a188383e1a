//! A folder of named nodes: the folders of the mount that are not a guest's.
//!
//! Entries come from three places, and each entry remembers which ([`Origin`]):
//! - **fixed** entries, added once when the mount is built (members, flat disks, the status
//!   report) with [`Folder::add`] and [`Folder::ensure_dir`], which create the folders on
//!   the way;
//! - **live** entries, the settings tree and the files edited whole, which follow the
//!   descriptor: after each change their owner calls [`Folder::sync_live`] with the paths
//!   that should exist, and live entries not among them go;
//! - **scratch** entries, editors' temporary files ([`ScratchFile`]), made by `create`.
//!
//! Renames follow what editors do (see [`Folder::rename`]): a scratch file renamed over a
//! file edited whole is a write of that file (`sed -i`, vim, atomic-save editors); a file
//! edited whole renamed away stays where it is and a scratch copy appears under the new name
//! (vim's backup by rename), so settings cannot vanish; everything else that is not a
//! scratch file stays put.
//!
//! `mkdir` and `rmdir` are answered by the folder's [`FolderChanges`], if it has one (the
//! settings folders, where `mkdir networks/new` adds a network); other folders refuse them.
//!
//! Locks: each folder has its own. No folder holds its lock while it calls a node or its
//! changes (those may commit and call [`Folder::sync_live`], which takes folder locks).

use std::any::Any;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use super::scratch::ScratchFile;
use super::{Caching, DirAttributes, DirNode, Node};
use crate::error::{Error, Refusal, Result};

/// Deepest folder nesting accepted when walking paths (bounds every loop on names).
const MAX_DEPTH: usize = 256;

/// Where an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Added when the mount was built; stays.
    Fixed,
    /// Follows the descriptor; [`Folder::sync_live`] adds and removes these.
    Live,
    /// An editor's temporary file.
    Scratch,
}

/// What creates and removes folders inside a live folder.
pub trait FolderChanges: Send + Sync {
    /// Creates the folder at `path` (in the mount, no leading slash) and brings the tree up
    /// to date.
    fn mkdir(&self, path: &str) -> Result<()>;
    /// Removes the folder at `path` and brings the tree up to date.
    fn rmdir(&self, path: &str) -> Result<()>;
}

/// What a live path should be, for [`Folder::sync_live`].
pub trait LiveTree {
    /// The paths that should exist, in an order where each folder comes before what it holds
    /// (folders on the way that are not listed are made with [`LiveTree::folder`]).
    fn paths(&self) -> Vec<String>;
    /// The node for `path` (called only for paths not shown yet).
    fn node(&self, path: &str) -> Option<Node>;
    /// A folder on the way to a listed path.
    fn folder(&self, path: &str) -> Arc<Folder>;
}

struct Entry {
    node: Node,
    origin: Origin,
}

struct State {
    mtime: SystemTime,
    entries: BTreeMap<String, Entry>,
}

/// A folder of the mount.
pub struct Folder {
    state: RwLock<State>,
    mode: u32,
    caching: Caching,
    /// Its path in the mount, for [`FolderChanges`].
    path: String,
    changes: Option<Arc<dyn FolderChanges>>,
}

impl Folder {
    /// An empty folder at `path` with permission bits `mode`.
    pub fn new(path: &str, mode: u32, mtime: SystemTime, caching: Caching) -> Self {
        Folder {
            state: RwLock::new(State {
                mtime,
                entries: BTreeMap::new(),
            }),
            mode,
            caching,
            path: path.trim_matches('/').to_string(),
            changes: None,
        }
    }

    /// The root of a mount.
    pub fn root(mtime: SystemTime) -> Arc<Folder> {
        Arc::new(Folder::new("", 0o555, mtime, Caching::Stable))
    }

    /// This folder, answering `mkdir` and `rmdir` inside it with `changes`.
    pub fn with_changes(mut self, changes: Arc<dyn FolderChanges>) -> Self {
        self.changes = Some(changes);
        self
    }

    /// Its path in the mount ("" for the root).
    pub fn path(&self) -> &str {
        &self.path
    }

    // Every change replaces whole entries, so a panic while a lock is held leaves a
    // consistent map behind: the data stays usable.
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn entry(&self, name: &str) -> Option<(Node, Origin)> {
        self.read()
            .entries
            .get(name)
            .map(|e| (e.node.clone(), e.origin))
    }

    /// The sub-folder `name`, if it is a [`Folder`].
    fn subfolder(&self, name: &str) -> Option<Arc<Folder>> {
        match self.entry(name)?.0 {
            Node::Dir(d) => as_folder(d),
            _ => None,
        }
    }

    /// The folder at `path` below this one (`""`: this one).
    pub fn folder_at(self: &Arc<Self>, path: &str) -> Option<Arc<Folder>> {
        let mut dir = self.clone();
        for part in parts(path) {
            dir = dir.subfolder(part)?;
        }
        Some(dir)
    }

    /// The node at `path` below this one.
    pub fn resolve(self: &Arc<Self>, path: &str) -> Option<Node> {
        let (dir, name) = split_path(path);
        if name.is_empty() {
            return Some(Node::Dir(self.folder_at(dir)?));
        }
        self.folder_at(dir)?.lookup(name)
    }

    /// Makes sure the folder `path` exists below this one and returns it, or `None` when a
    /// file is in the way. Folders made on the way get `mode` and `mtime`, and `origin`.
    pub fn ensure_dir(
        self: &Arc<Self>,
        path: &str,
        mode: u32,
        mtime: SystemTime,
        origin: Origin,
    ) -> Option<Arc<Folder>> {
        let caching = match origin {
            Origin::Fixed => Caching::Stable,
            _ => Caching::Changing,
        };
        self.ensure_dir_with(path, origin, &|p| {
            Arc::new(Folder::new(p, mode, mtime, caching))
        })
    }

    fn ensure_dir_with(
        self: &Arc<Self>,
        path: &str,
        origin: Origin,
        make: &dyn Fn(&str) -> Arc<Folder>,
    ) -> Option<Arc<Folder>> {
        let mut dir = self.clone();
        for part in parts(path) {
            let next = {
                let mut st = dir.write();
                match st.entries.get(part).map(|e| e.node.clone()) {
                    Some(Node::Dir(d)) => as_folder(d)?,
                    Some(_) => return None,
                    None => {
                        let sub = make(&join(&dir.path, part));
                        st.entries.insert(
                            part.to_string(),
                            Entry {
                                node: Node::Dir(sub.clone()),
                                origin,
                            },
                        );
                        sub
                    }
                }
            };
            dir = next;
        }
        Some(dir)
    }

    /// Adds `node` at `path` below this one, making the folders on the way (mode 0o555,
    /// `mtime`). Returns false, with a warning, when the path collides with an entry.
    pub fn add(
        self: &Arc<Self>,
        path: &str,
        node: Node,
        mtime: SystemTime,
        origin: Origin,
    ) -> bool {
        let (dir_path, name) = split_path(path);
        if name.is_empty() {
            return false;
        }
        let Some(dir) = self.ensure_dir(dir_path, 0o555, mtime, origin) else {
            log::warn!("{path}: a file is in the way of its folder; entry not shown");
            return false;
        };
        if !dir.insert(name, node, origin) {
            log::warn!("{path}: duplicate name; entry not shown");
            return false;
        }
        true
    }

    /// Inserts `node` as `name` unless the name is taken.
    fn insert(&self, name: &str, node: Node, origin: Origin) -> bool {
        let mut st = self.write();
        if st.entries.contains_key(name) {
            return false;
        }
        st.entries.insert(name.to_string(), Entry { node, origin });
        true
    }

    /// Removes `name` if it is still `node`.
    fn remove_if(&self, name: &str, node: &Node) -> bool {
        let mut st = self.write();
        if st.entries.get(name).is_some_and(|e| e.node.same_as(node)) {
            st.entries.remove(name);
            return true;
        }
        false
    }

    /// Brings the live entries below this folder in line with `tree`: live entries whose
    /// path is not listed go, listed paths not shown yet are added. Entries that stay keep
    /// their node (and so their inode number).
    pub fn sync_live(self: &Arc<Self>, tree: &dyn LiveTree) {
        let wanted: Vec<String> = tree.paths();
        let listed: HashSet<&str> = wanted.iter().map(String::as_str).collect();
        self.prune_live("", &listed, 0);
        for path in &wanted {
            if self.resolve(path).is_some() {
                continue;
            }
            let (dir_path, name) = split_path(path);
            let Some(dir) = self.ensure_dir_with(dir_path, Origin::Live, &|p| tree.folder(p))
            else {
                log::warn!("{path}: a file is in the way of its folder; entry not shown");
                continue;
            };
            if let Some(node) = tree.node(path)
                && !dir.insert(name, node, Origin::Live)
            {
                log::warn!("{path}: duplicate name; entry not shown");
            }
        }
    }

    fn prune_live(&self, prefix: &str, listed: &HashSet<&str>, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        let children: Vec<(String, Node, Origin)> = self
            .read()
            .entries
            .iter()
            .map(|(n, e)| (n.clone(), e.node.clone(), e.origin))
            .collect();
        for (name, node, origin) in children {
            let path = join(prefix, &name);
            if origin == Origin::Live && !listed.contains(path.as_str()) {
                self.remove_if(&name, &node);
                continue;
            }
            if let Node::Dir(d) = node
                && let Some(sub) = as_folder(d)
            {
                sub.prune_live(&path, listed, depth + 1);
            }
        }
    }

    /// Moves the scratch file `name` of this folder to `new_name` in `to`, replacing a
    /// scratch file there.
    fn move_scratch(&self, name: &str, node: &Node, to: &Folder, new_name: &str) -> Result<()> {
        if let Some((existing, origin)) = to.entry(new_name) {
            match (origin, &existing) {
                (Origin::Scratch, _) => {
                    to.remove_if(new_name, &existing);
                }
                (_, Node::Dir(_)) => return Err(Error::refused(new_name, Refusal::IsAFolder)),
                _ => return Err(Error::refused(new_name, Refusal::NotPermitted)),
            }
        }
        if !self.remove_if(name, node) {
            return Err(Error::refused(name, Refusal::NotFound));
        }
        if !to.insert(new_name, node.clone(), Origin::Scratch) {
            // Someone created the name meanwhile: put the file back where it was.
            self.insert(name, node.clone(), Origin::Scratch);
            return Err(Error::refused(new_name, Refusal::Exists));
        }
        Ok(())
    }
}

/// `node` as one of our folders.
fn as_folder(d: Arc<dyn DirNode>) -> Option<Arc<Folder>> {
    let any: Arc<dyn Any + Send + Sync> = d.into_any();
    any.downcast::<Folder>().ok()
}

impl DirNode for Folder {
    fn attributes(&self) -> DirAttributes {
        let st = self.read();
        DirAttributes {
            mode: self.mode,
            mtime: st.mtime,
            caching: self.caching,
            subfolders: st.entries.values().filter(|e| e.node.is_dir()).count(),
        }
    }

    fn lookup(&self, name: &str) -> Option<Node> {
        self.entry(name).map(|(n, _)| n)
    }

    fn entries(&self) -> Vec<(String, Node)> {
        self.read()
            .entries
            .iter()
            .map(|(n, e)| (n.clone(), e.node.clone()))
            .collect()
    }

    fn create(&self, name: &str, mode: u32) -> Result<Node> {
        let node = Node::File(Arc::new(ScratchFile::new(mode)));
        if self.insert(name, node.clone(), Origin::Scratch) {
            Ok(node)
        } else {
            Err(Error::refused(name, Refusal::Exists))
        }
    }

    fn unlink(&self, name: &str) -> Result<()> {
        match self.entry(name) {
            None => Err(Error::refused(name, Refusal::NotFound)),
            Some((node, Origin::Scratch)) => {
                self.remove_if(name, &node);
                Ok(())
            }
            Some((Node::Dir(_), _)) => Err(Error::refused(name, Refusal::IsAFolder)),
            // Members, flat disks and settings cannot be deleted.
            Some(_) => Err(Error::refused(name, Refusal::NotPermitted)),
        }
    }

    fn mkdir(&self, name: &str) -> Result<Node> {
        if self.entry(name).is_some() {
            return Err(Error::refused(name, Refusal::Exists));
        }
        let path = join(&self.path, name);
        let changes = self
            .changes
            .as_ref()
            .ok_or_else(|| Error::refused(path.clone(), Refusal::NotPermitted))?;
        changes.mkdir(&path)?;
        self.lookup(name).ok_or_else(|| {
            Error::new(crate::error::ErrorKind::InvalidEdit(format!(
                "{path}: the folder was accepted but does not appear"
            )))
        })
    }

    fn rmdir(&self, name: &str) -> Result<()> {
        let (node, origin) = self
            .entry(name)
            .ok_or_else(|| Error::refused(name, Refusal::NotFound))?;
        let Node::Dir(dir) = node else {
            return Err(Error::refused(name, Refusal::NotAFolder));
        };
        let sub = as_folder(dir).filter(|_| origin == Origin::Live);
        match sub.as_ref().and_then(|s| s.changes.clone().map(|c| (s, c))) {
            Some((sub, changes)) => changes.rmdir(&sub.path),
            None => Err(Error::refused(name, Refusal::NotPermitted)),
        }
    }

    /// See the module's comment for what each kind of rename does.
    fn rename(
        &self,
        name: &str,
        to: &Arc<dyn DirNode>,
        new_name: &str,
        no_replace: bool,
    ) -> Result<()> {
        let to_folder =
            as_folder(to.clone()).ok_or_else(|| Error::refused(new_name, Refusal::CrossFolder))?;
        let (src, src_origin) = self
            .entry(name)
            .ok_or_else(|| Error::refused(name, Refusal::NotFound))?;
        let dst = to_folder.entry(new_name);
        if dst.is_some() && no_replace {
            return Err(Error::refused(new_name, Refusal::Exists));
        }
        if dst.as_ref().is_some_and(|(d, _)| d.same_as(&src)) {
            return Ok(());
        }
        let whole = |n: &Node| matches!(n, Node::File(f) if f.edited_whole());
        match (src_origin, &dst) {
            // A temporary file landing on a file edited whole is a write of that file.
            (Origin::Scratch, Some((target, _))) if whole(target) => {
                let data = scratch_data(&src)?;
                if let Node::File(f) = target {
                    f.replace(&data)?;
                }
                self.remove_if(name, &src);
                Ok(())
            }
            (Origin::Scratch, _) => self.move_scratch(name, &src, &to_folder, new_name),
            // Moving a file edited whole away leaves it in place and makes a scratch copy
            // under the new name: settings cannot vanish.
            (_, None) if whole(&src) => {
                let Node::File(f) = &src else {
                    return Err(Error::refused(name, Refusal::NotPermitted));
                };
                let bytes = f.contents()?;
                let copy = Node::File(Arc::new(ScratchFile::with_data(0o644, bytes.to_vec())));
                if to_folder.insert(new_name, copy, Origin::Scratch) {
                    Ok(())
                } else {
                    Err(Error::refused(new_name, Refusal::Exists))
                }
            }
            _ => Err(Error::refused(name, Refusal::NotPermitted)),
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

/// The bytes of a scratch file node.
fn scratch_data(node: &Node) -> Result<Vec<u8>> {
    match node {
        Node::File(f) => f
            .as_any()
            .downcast_ref::<ScratchFile>()
            .map(ScratchFile::data)
            .ok_or_else(|| Error::refused("rename", Refusal::NotPermitted)),
        _ => Err(Error::refused("rename", Refusal::NotPermitted)),
    }
}

/// The non-empty components of `path`, at most [`MAX_DEPTH`].
fn parts(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|p| !p.is_empty()).take(MAX_DEPTH)
}

/// `path` as (folder, last name).
fn split_path(path: &str) -> (&str, &str) {
    let path = path.trim_matches('/');
    match path.rsplit_once('/') {
        Some((d, n)) => (d, n),
        None => ("", path),
    }
}

/// `dir/name` (just `name` in the root).
fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Calls `visit` for every node below `dir`, depth first, without entering lazy folders
/// (their children are expensive) and at most 256 folders deep.
pub fn walk(dir: &dyn DirNode, visit: &mut dyn FnMut(&Node)) {
    let mut stack: Vec<(Vec<(String, Node)>, usize)> = vec![(dir.entries(), 0)];
    while let Some((entries, depth)) = stack.pop() {
        for (_, node) in entries {
            visit(&node);
            if let Node::Dir(d) = &node
                && !d.is_lazy()
                && depth < MAX_DEPTH
            {
                stack.push((d.entries(), depth + 1));
            }
        }
    }
}

/// Sum of the sizes of the files below `dir` that are not edited whole (members, flat
/// disks, scratch files: what `statfs` reports), not counting the children of lazy folders.
pub fn stored_bytes(dir: &dyn DirNode, background: &dyn super::Background) -> u64 {
    let mut total = 0u64;
    walk(dir, &mut |node| {
        if let Node::File(f) = node
            && !f.edited_whole()
        {
            total = total.saturating_add(f.size(background));
        }
    });
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::OpenMode;
    use crate::node::member::MemberFile;

    struct NoBackground;
    impl crate::node::Background for NoBackground {
        fn run(&self, _task: crate::node::Task) {}
        fn read_ahead(&self, _task: crate::node::Task) {}
    }

    fn bytes(n: usize) -> Node {
        Node::File(Arc::new(MemberFile::new(
            Arc::new(vec![0u8; n]),
            0o644,
            SystemTime::UNIX_EPOCH,
        )))
    }

    #[test]
    fn builds_folders_and_finds_entries() {
        let root = Folder::root(SystemTime::UNIX_EPOCH);
        assert!(root.add("a.ovf", bytes(10), SystemTime::UNIX_EPOCH, Origin::Fixed));
        assert!(root.add(
            "disks/b.raw",
            bytes(20),
            SystemTime::UNIX_EPOCH,
            Origin::Fixed
        ));
        let b = root.resolve("disks/b.raw").unwrap();
        assert!(
            root.folder_at("disks")
                .unwrap()
                .lookup("b.raw")
                .unwrap()
                .same_as(&b)
        );
        assert_eq!(stored_bytes(&*root, &NoBackground), 30);
        let Node::File(a) = root.resolve("a.ovf").unwrap() else {
            panic!("a file")
        };
        assert_eq!(
            a.attributes(&NoBackground).mode,
            0o444,
            "write bits cleared"
        );
    }

    #[test]
    fn collisions_keep_the_first_entry() {
        let root = Folder::root(SystemTime::UNIX_EPOCH);
        assert!(root.add("disks", bytes(1), SystemTime::UNIX_EPOCH, Origin::Fixed));
        assert!(!root.add(
            "disks/x.raw",
            bytes(2),
            SystemTime::UNIX_EPOCH,
            Origin::Fixed
        ));
        assert!(!root.add("disks", bytes(3), SystemTime::UNIX_EPOCH, Origin::Fixed));
        assert_eq!(stored_bytes(&*root, &NoBackground), 1);
    }

    #[test]
    fn scratch_files_move_and_members_stay() {
        let root = Folder::root(SystemTime::UNIX_EPOCH);
        root.add("m", bytes(3), SystemTime::UNIX_EPOCH, Origin::Fixed);
        let dir = root
            .ensure_dir("vms/vm1", 0o755, SystemTime::UNIX_EPOCH, Origin::Live)
            .unwrap();
        let s = dir.create(".cpus.swp", 0o600).unwrap();
        assert_eq!(
            dir.create(".cpus.swp", 0o600).unwrap_err().refusal(),
            Some(Refusal::Exists)
        );
        let to: Arc<dyn DirNode> = root.clone();
        dir.rename(".cpus.swp", &to, "moved", false).unwrap();
        assert!(root.lookup("moved").unwrap().same_as(&s));
        assert!(dir.lookup(".cpus.swp").is_none());
        let here: Arc<dyn DirNode> = root.clone();
        assert_eq!(
            root.rename("m", &here, "n", false).unwrap_err().refusal(),
            Some(Refusal::NotPermitted)
        );
        assert_eq!(
            root.unlink("m").unwrap_err().refusal(),
            Some(Refusal::NotPermitted)
        );
        root.unlink("moved").unwrap();
        assert!(root.lookup("moved").is_none());
        assert_eq!(
            root.mkdir("x").unwrap_err().refusal(),
            Some(Refusal::NotPermitted)
        );
    }

    #[test]
    fn scratch_writes_are_kept_and_bounded() {
        let root = Folder::root(SystemTime::UNIX_EPOCH);
        let Node::File(f) = root.create("t", 0o644).unwrap() else {
            panic!("a file")
        };
        let h = f
            .clone()
            .open(OpenMode {
                write: true,
                ..OpenMode::default()
            })
            .unwrap();
        h.write_at(2, b"xy").unwrap();
        let mut buf = [9u8; 8];
        assert_eq!(h.read_at(0, &mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], b"\0\0xy");
        let e = h
            .write_at(crate::node::scratch::MAX_SCRATCH_BYTES, b"z")
            .unwrap_err();
        assert_eq!(e.refusal(), Some(Refusal::TooLarge));
    }

    struct Wanted(Vec<&'static str>);
    impl LiveTree for Wanted {
        fn paths(&self) -> Vec<String> {
            self.0.iter().map(|s| s.to_string()).collect()
        }
        fn node(&self, path: &str) -> Option<Node> {
            Some(if path.ends_with('/') || !path.contains('.') {
                Node::Dir(self.folder(path))
            } else {
                bytes(1)
            })
        }
        fn folder(&self, path: &str) -> Arc<Folder> {
            Arc::new(Folder::new(
                path,
                0o755,
                SystemTime::UNIX_EPOCH,
                Caching::Changing,
            ))
        }
    }

    #[test]
    fn live_entries_follow_the_list_and_keep_their_nodes() {
        let root = Folder::root(SystemTime::UNIX_EPOCH);
        root.add(
            "member.txt",
            bytes(1),
            SystemTime::UNIX_EPOCH,
            Origin::Fixed,
        );
        root.sync_live(&Wanted(vec!["vm", "vm/a.x", "networks", "networks/n1"]));
        let a = root.resolve("vm/a.x").unwrap();
        root.sync_live(&Wanted(vec!["vm", "vm/a.x", "networks"]));
        assert!(root.resolve("vm/a.x").unwrap().same_as(&a), "kept");
        assert!(root.resolve("networks/n1").is_none(), "removed");
        assert!(root.resolve("member.txt").is_some(), "fixed entries stay");
        root.sync_live(&Wanted(vec![]));
        assert!(root.resolve("vm").is_none());
    }
}
