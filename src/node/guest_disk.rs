//! A disk's guest view, `disks/NAME/` (issue 12): its partitions and the files of their
//! file systems, read by ovafs itself.
//!
//! ```text
//! disks/NAME/partitions   the partition table, one line per partition (see `table_text`)
//! disks/NAME/pN.raw       partition N as a flat image, read-only
//! disks/NAME/pN/          the file system of partition N, read-only, when ovafs reads it
//! disks/NAME/fs/          the file system of a disk without a partition table
//! ```
//!
//! Lazy at every level: nothing is read at mount; the first lookup or listing of
//! `disks/NAME/` reads the partition table and a few sectors of each partition (to recognise
//! its file system); entering `pN/` opens the file system (its superblock); each directory
//! is read when listed. A table or file system that cannot be read fails the folder's
//! listing and lookups with EIO and a log line; every other partition keeps working.

use std::any::Any;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use super::guest::GuestFolder;
use super::member::MemberFile;
use super::{Caching, DirAttributes, DirNode, Node};
use crate::error::{Error, Result};
use crate::guest::partition::{self, Table, TableKind};
use crate::io::ReadAt;

/// Name of the partition-table file.
pub const TABLE_FILE: &str = "partitions";
/// Name of the file-system folder of a disk without a partition table.
pub const WHOLE_DISK_FS: &str = "fs";

/// Why a guest folder cannot be shown (kept as text: the same failure answers every later
/// call without reading the disk again). Shown as EIO.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Unreadable(String);

fn unreadable(what: &str, e: &Error) -> Unreadable {
    Unreadable(format!("{what}: {e}"))
}

fn failure(u: &Unreadable) -> Error {
    Error::layer(Unreadable(u.0.clone()))
}

/// The permission bits of a folder that shows the content of a file with mode `file_mode`:
/// read and enter for whom the file is readable, nothing more. The guest view of a disk is
/// never wider than the disk (a guest's `/etc/hostname` is 0644 in the guest, but who may
/// not read the disk may not enter its view: `default_permissions` enforces this).
pub fn view_mode(file_mode: u32) -> u32 {
    let read = file_mode & 0o444;
    read | (read >> 2)
}

/// `disks/NAME/`.
pub struct GuestDiskFolder {
    /// The disk's name (`disk1`), for log lines.
    name: String,
    source: Arc<dyn ReadAt>,
    mtime: SystemTime,
    /// Its mode (see [`view_mode`]); the files in it are readable by the same users.
    mode: u32,
    children: OnceLock<std::result::Result<Vec<(String, Node)>, Unreadable>>,
}

impl GuestDiskFolder {
    /// The guest view of the disk `name` whose current content is `source` and whose flat
    /// file has mode `disk_mode`.
    pub fn new(name: &str, source: Arc<dyn ReadAt>, mtime: SystemTime, disk_mode: u32) -> Self {
        GuestDiskFolder {
            name: name.to_string(),
            source,
            mtime,
            mode: view_mode(disk_mode),
            children: OnceLock::new(),
        }
    }

    /// The mode of the files in it: readable by those who may enter it.
    fn file_mode(&self) -> u32 {
        self.mode & 0o444
    }

    fn children(&self) -> Result<&Vec<(String, Node)>> {
        self.children
            .get_or_init(|| self.read_children())
            .as_ref()
            .map_err(failure)
    }

    /// Reads the partition table and recognises each partition's file system.
    fn read_children(&self) -> std::result::Result<Vec<(String, Node)>, Unreadable> {
        let table = partition::read_table(&*self.source).map_err(|e| {
            let u = unreadable(&format!("disks/{}: partition table", self.name), &e);
            log::error!("{u}");
            u
        })?;
        for note in &table.notes {
            log::warn!("disks/{}: partition table: {note}", self.name);
        }
        let mut children = Vec::new();
        let mut kinds = Vec::new();
        if table.kind == TableKind::None {
            let kind = crate::guest::probe(&*self.source);
            if let Some(kind) = kind {
                children.push(self.fs_folder(WHOLE_DISK_FS, self.source.clone(), kind));
            }
            kinds.push(kind);
        }
        for p in &table.partitions {
            let window = partition::partition_source(self.source.clone(), p)
                .map_err(|e| unreadable(&format!("disks/{}: p{}", self.name, p.number), &e))?;
            let raw = MemberFile::new(window.clone(), self.file_mode(), self.mtime);
            children.push((format!("p{}.raw", p.number), Node::File(Arc::new(raw))));
            let kind = crate::guest::probe(&*window);
            if let Some(kind) = kind {
                children.push(self.fs_folder(&format!("p{}", p.number), window, kind));
            }
            kinds.push(kind);
        }
        let text = table_text(&table, &kinds, self.source.len());
        let file = MemberFile::new(Arc::new(text.into_bytes()), self.file_mode(), self.mtime);
        children.push((TABLE_FILE.to_string(), Node::File(Arc::new(file))));
        Ok(children)
    }

    fn fs_folder(&self, name: &str, source: Arc<dyn ReadAt>, kind: &'static str) -> (String, Node) {
        let root = FileSystemRoot {
            label: format!("disks/{}/{name}", self.name),
            source,
            kind,
            mtime: self.mtime,
            limit: self.mode,
            root: OnceLock::new(),
        };
        (name.to_string(), Node::Dir(Arc::new(root)))
    }
}

/// The text of `disks/NAME/partitions`: a first line naming the table's kind and the disk's
/// size, then one tab-separated line per partition under a header line: number, first
/// byte, length in bytes, type, GPT name (`-` when none), the file system ovafs reads there
/// (`-` when none). Notes about the table follow as `#` lines.
pub fn table_text(table: &Table, kinds: &[Option<&'static str>], disk_len: u64) -> String {
    let kind = match table.kind {
        TableKind::Mbr => "mbr",
        TableKind::Gpt => "gpt",
        TableKind::None => "none",
    };
    let mut out = format!("table\t{kind}\tdisk bytes\t{disk_len}\n");
    out.push_str("number\tstart\tbytes\ttype\tname\tfilesystem\n");
    if table.kind == TableKind::None {
        let fs = kinds.first().copied().flatten().unwrap_or("-");
        let _ = writeln!(out, "-\t0\t{disk_len}\twhole disk\t-\t{fs}");
    }
    let offset = usize::from(table.kind == TableKind::None);
    for (i, p) in table.partitions.iter().enumerate() {
        let fs = kinds.get(i + offset).copied().flatten().unwrap_or("-");
        let name = p.name.as_deref().map_or("-".to_string(), one_field);
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}",
            p.number,
            p.start,
            p.len,
            one_field(&p.type_name),
            name,
            fs
        );
    }
    for note in &table.notes {
        let _ = writeln!(out, "# {}", one_field(note));
    }
    out
}

/// `s` with tabs and line breaks replaced, so that it stays one field of one line (a GPT
/// name is the guest's text).
fn one_field(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

impl DirNode for GuestDiskFolder {
    fn attributes(&self) -> DirAttributes {
        DirAttributes {
            mode: self.mode,
            mtime: self.mtime,
            caching: Caching::Stable,
            subfolders: 0,
        }
    }

    fn lookup(&self, name: &str) -> Option<Node> {
        self.find(name).ok().flatten()
    }

    fn entries(&self) -> Vec<(String, Node)> {
        self.list().unwrap_or_default()
    }

    fn find(&self, name: &str) -> Result<Option<Node>> {
        Ok(self
            .children()?
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, node)| node.clone()))
    }

    fn list(&self) -> Result<Vec<(String, Node)>> {
        Ok(self.children()?.clone())
    }

    fn is_lazy(&self) -> bool {
        true
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

/// `media/NAME/`: the file tree of the package member `source` named `label` (an ISO 9660
/// image) whose mode is `member_mode`, opened when first entered; a member that holds no
/// file system ovafs reads fails with EIO there.
pub fn media_folder(
    label: &str,
    source: Arc<dyn ReadAt>,
    mtime: SystemTime,
    member_mode: u32,
) -> Node {
    Node::Dir(Arc::new(FileSystemRoot {
        label: label.to_string(),
        source,
        kind: "iso9660",
        mtime,
        limit: view_mode(member_mode | 0o400),
        root: OnceLock::new(),
    }))
}

/// `pN/` or `fs/`: a file system, opened when first entered.
struct FileSystemRoot {
    label: String,
    source: Arc<dyn ReadAt>,
    kind: &'static str,
    mtime: SystemTime,
    /// The most its mode may allow (see [`view_mode`]): the guest root's own mode is
    /// masked with it, so the view is never wider than what holds it.
    limit: u32,
    root: OnceLock<std::result::Result<Arc<GuestFolder>, Unreadable>>,
}

impl FileSystemRoot {
    fn root(&self) -> Result<&Arc<GuestFolder>> {
        self.root
            .get_or_init(|| {
                let opened = crate::guest::open(self.source.clone()).and_then(|fs| match fs {
                    Some(fs) => GuestFolder::root(fs),
                    None => Err(Error::layer(Unreadable(format!(
                        "no {} file system there",
                        self.kind
                    )))),
                });
                opened.map_err(|e| {
                    let u = unreadable(&format!("{} ({})", self.label, self.kind), &e);
                    log::error!("{u}");
                    u
                })
            })
            .as_ref()
            .map_err(failure)
    }
}

impl DirNode for FileSystemRoot {
    /// The guest root's once the file system is open; until then a plain read-only folder
    /// (stat of `disks/NAME/` entries must not open every file system).
    fn attributes(&self) -> DirAttributes {
        match self.root.get() {
            Some(Ok(root)) => {
                let mut a = root.attributes();
                a.mode &= self.limit;
                a
            }
            _ => DirAttributes {
                mode: self.limit,
                mtime: self.mtime,
                caching: Caching::Stable,
                subfolders: 0,
            },
        }
    }

    fn lookup(&self, name: &str) -> Option<Node> {
        self.find(name).ok().flatten()
    }

    fn entries(&self) -> Vec<(String, Node)> {
        self.list().unwrap_or_default()
    }

    fn find(&self, name: &str) -> Result<Option<Node>> {
        self.root()?.find(name)
    }

    fn list(&self) -> Result<Vec<(String, Node)>> {
        self.root()?.list()
    }

    fn owner(&self) -> Option<(u32, u32)> {
        match self.root.get() {
            Some(Ok(root)) => root.owner(),
            _ => None,
        }
    }

    fn is_lazy(&self) -> bool {
        true
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}
