//! Guest file systems: the files inside an appliance's disks, read by ovafs itself, without
//! root, loop devices or a kernel appliance (issue 12). This layer reads a disk's partition
//! table ([`partition`]) and a partition's file system from any [`ReadAt`] (a flat disk, a
//! partition's window of it), behind one read-only interface ([`GuestFs`]); [`open`]
//! recognises the file system by content. Adding a kind is a module and one [`KINDS`] entry.
//!
//! Paths are lists of components as bytes (guest names need not be UTF-8), never `.` or
//! `..`, never empty, without `/`; the empty list is the root. A symbolic link is reported as
//! one and never followed by these calls.

pub mod ext4;
pub mod fat;
pub mod iso9660;
pub mod ntfs;
pub mod partition;

use std::sync::Arc;
use std::time::SystemTime;

use crate::error::Result;
use crate::io::ReadAt;

/// One file-system kind ovafs reads: its name, whether `source` holds one (by content, a few
/// sectors read, never an error: unreadable is "no"), and how to open it.
struct Kind {
    name: &'static str,
    probe: fn(&dyn ReadAt) -> bool,
    open: Opener,
}

/// Opens a file system of one kind.
type Opener = fn(Arc<dyn ReadAt>) -> Result<Arc<dyn GuestFs>>;

/// Every kind, tried in this order (a kind whose signature is more specific comes first).
const KINDS: &[Kind] = &[
    Kind {
        name: "ext4",
        probe: ext4::probe,
        open: ext4::open,
    },
    Kind {
        name: "iso9660",
        probe: iso9660::probe,
        open: iso9660::open,
    },
    Kind {
        name: "ntfs",
        probe: ntfs::probe,
        open: ntfs::open,
    },
    Kind {
        name: "vfat",
        probe: fat::probe,
        open: fat::open,
    },
];

/// The name of the file-system kind `source` holds, if ovafs reads it.
pub fn probe(source: &dyn ReadAt) -> Option<&'static str> {
    KINDS.iter().find(|k| (k.probe)(source)).map(|k| k.name)
}

/// Opens the file system `source` holds, recognised by content; `None` when ovafs reads no
/// file system there (an unknown one, swap, an empty partition).
pub fn open(source: Arc<dyn ReadAt>) -> Result<Option<Arc<dyn GuestFs>>> {
    match KINDS.iter().find(|k| (k.probe)(&*source)) {
        Some(kind) => (kind.open)(source).map(Some),
        None => Ok(None),
    }
}

/// What a directory entry or a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A device, FIFO or socket (listed, never read).
    Other,
}

/// What a guest file system says of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestStat {
    /// Its kind.
    pub kind: EntryKind,
    /// Its size in bytes (a symbolic link: its target's length).
    pub size: u64,
    /// Permission bits, with setuid, setgid and sticky (`0o7777`), as the guest has them;
    /// file systems without modes (FAT) report what their Linux driver shows by default.
    pub mode: u32,
    /// The guest's owner and group ids (0 where the file system has none).
    pub uid: u32,
    /// See `uid`.
    pub gid: u32,
    /// Modification time.
    pub mtime: SystemTime,
    /// Hard links (1 where the file system has no such count).
    pub nlink: u32,
}

/// One entry of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestEntry {
    /// Its name (never `.` or `..`).
    pub name: Vec<u8>,
    /// Its kind.
    pub kind: EntryKind,
}

/// A read-only guest file system. `Send + Sync`: an implementation whose reader is neither
/// keeps it on a thread of its own and sends it requests. Every call fails with a typed
/// error on corrupt input (a crate that panics is contained, and the file system then fails
/// every call), never loops without a bound and never allocates what the image claims
/// without a bound.
pub trait GuestFs: Send + Sync {
    /// A short name of the file system's type (`ext4`, `vfat`, `ntfs`, `iso9660`).
    fn type_name(&self) -> &'static str;
    /// What `path` is (a final symbolic link is not followed). A missing path is
    /// `Refusal::NotFound`.
    fn stat(&self, path: &[Vec<u8>]) -> Result<GuestStat>;
    /// The entries of the directory `path`, at most [`MAX_DIR_ENTRIES`] (more is an error).
    fn read_dir(&self, path: &[Vec<u8>]) -> Result<Vec<GuestEntry>>;
    /// Reads the regular file `path` at `offset` into `buf`; short only at its end.
    fn read(&self, path: &[Vec<u8>], offset: u64, buf: &mut [u8]) -> Result<usize>;
    /// The target of the symbolic link `path`, as stored.
    fn read_link(&self, path: &[Vec<u8>]) -> Result<Vec<u8>>;
}

/// Most entries one directory may list (a directory claiming more is refused, not read).
pub const MAX_DIR_ENTRIES: usize = 1 << 20;
