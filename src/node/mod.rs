//! The files and folders a mount shows, as objects: every kind of file is one implementation
//! of [`FileNode`], every kind of folder one of [`DirNode`].
//!
//! The FUSE layer (`fs`) knows only these traits: it keeps the inode table (which node has
//! which inode number), answers each request by calling the node it names, and turns the
//! [`crate::error::Error`] a node returns into an errno in its one table. What a file *is*
//! (an archive member, a flat disk decoded through the cache, a setting read from the
//! descriptor, an editor's scratch copy, the status report) lives in the implementation, so
//! a new kind of file is one new file here or in the layer that owns its content.
//!
//! The split follows the kernel's: a [`FileNode`] is the file (attributes, opening,
//! truncation without a handle, replacement by a renamed file), an [`OpenFile`] is one open
//! of it (reads, writes, flush, fsync, seeks for data and holes). A handle may hold state of
//! its own: a settings file buffers what one `open()` writes and checks it whole.
//!
//! Implementations here: [`member::MemberFile`] (bytes as stored), [`disk::DiskFile`] (a flat
//! disk), [`written_disk::WrittenDiskFile`] (a flat disk whose changes a
//! [`written_disk::WritableDisk`] serves), [`scratch::ScratchFile`] (an editor's temporary file, in memory),
//! [`live::LiveFile`] (content produced on demand by a [`live::LiveSource`]: the descriptor,
//! the manifest, settings, the status report) and [`folder::Folder`] (a folder of named
//! nodes, where editors may create scratch files). The names the mount reserves for itself
//! are in [`layout`].
//!
//! Nothing here knows an errno: refusals are [`crate::error::Refusal`]s.

pub mod disk;
pub mod folder;
pub mod guest;
pub mod layout;
pub mod live;
pub mod member;
pub mod refusals;
pub mod scratch;
pub mod written_disk;

use std::any::Any;
use std::sync::Arc;
use std::time::SystemTime;

use crate::error::{Error, Refusal, Result};

/// Work a node hands back to run off the request thread.
pub type Task = Box<dyn FnOnce() + Send + 'static>;

/// Where nodes run work that must not hold up the request that found it (counting a disk's
/// allocated bytes, decoding ahead of a sequential reader). The FUSE layer's worker pool
/// implements it.
pub trait Background {
    /// Runs `task` soon, as ordinary work.
    fn run(&self, task: Task);
    /// Runs `task` when the workers have nothing more urgent; may drop it when too much such
    /// work is queued.
    fn read_ahead(&self, task: Task);
}

/// How a file's content behaves, which decides how the kernel may cache it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caching {
    /// Never changes while mounted: long attribute lifetimes, the page cache keeps what was
    /// read, and reads run on the worker pool (they may decode).
    Stable,
    /// Changes (edits, commits, a growing report): no attribute caching, direct I/O, reads
    /// answered at once from memory.
    Changing,
}

/// The block size a file suggests to readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockSize {
    /// Ordinary files.
    Normal,
    /// Large images: readers (cp, dd) should read in large chunks, each of which becomes
    /// concurrent kernel read-ahead.
    Large,
}

/// What `stat` shows of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAttributes {
    /// Bytes.
    pub size: u64,
    /// Bytes actually stored (for `st_blocks`), when known; `None` reads as fully allocated.
    pub allocated: Option<u64>,
    /// Permission bits.
    pub mode: u32,
    /// Modification time.
    pub mtime: SystemTime,
    /// Block size hint.
    pub block_size: BlockSize,
}

/// What `stat` shows of a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirAttributes {
    /// Permission bits.
    pub mode: u32,
    /// Modification time.
    pub mtime: SystemTime,
    /// How its listing may be cached.
    pub caching: Caching,
    /// Number of folders directly inside (for the link count).
    pub subfolders: usize,
}

/// How a file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpenMode {
    /// For writing (or reading and writing).
    pub write: bool,
    /// With `O_TRUNC`.
    pub truncate: bool,
    /// By `create()` of a name that already exists (an editor writing a file it renamed
    /// away): a file that is replaced as a whole starts empty.
    pub recreate: bool,
}

/// What an `fallocate()` asks of a range (the modes a guest's disk needs: qemu's discard is
/// a punched hole, its write-zeroes a zeroed range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// Reserve space (mode 0, or `FALLOC_FL_KEEP_SIZE`): the range reads as before; without
    /// `keep_size` the file grows to cover it.
    Reserve {
        /// `FALLOC_FL_KEEP_SIZE`.
        keep_size: bool,
    },
    /// `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`: the range reads as zeros and need not
    /// be stored; the size stays.
    PunchHole,
    /// `FALLOC_FL_ZERO_RANGE`: the range reads as zeros; without `keep_size` the file grows
    /// to cover it.
    ZeroRange {
        /// `FALLOC_FL_KEEP_SIZE`.
        keep_size: bool,
    },
}

impl Allocation {
    /// Whether the range reads as zeros afterwards.
    pub fn zeroes(self) -> bool {
        !matches!(self, Allocation::Reserve { .. })
    }

    /// Whether the file grows to cover the range (no `FALLOC_FL_KEEP_SIZE`).
    pub fn grows(self) -> bool {
        match self {
            Allocation::Reserve { keep_size } | Allocation::ZeroRange { keep_size } => !keep_size,
            Allocation::PunchHole => false,
        }
    }
}

/// A file of the mount.
pub trait FileNode: Send + Sync + 'static {
    /// Its attributes; `background` may be handed work that refines them later (a count of
    /// allocated bytes too long to do here).
    fn attributes(&self, background: &dyn Background) -> FileAttributes;

    /// How its content may be cached (cheap: asked at every open and read).
    fn caching(&self) -> Caching;

    /// Its owner and group, when they are not the mount's (a guest file's).
    fn owner(&self) -> Option<(u32, u32)> {
        None
    }

    /// Its size alone (for `statfs`): files whose other attributes cost more (a flat disk
    /// counts its allocated bytes) answer it without that work.
    fn size(&self, background: &dyn Background) -> u64 {
        self.attributes(background).size
    }

    /// Opens it. Opening for writing a file that never changes is refused
    /// ([`Refusal::AccessDenied`]).
    fn open(self: Arc<Self>, mode: OpenMode) -> Result<Arc<dyn OpenFile>>;

    /// Truncates or extends it without an open handle (`truncate -s`).
    fn set_len(&self, _len: u64) -> Result<()> {
        Err(Error::refused("truncate", Refusal::AccessDenied))
    }

    /// Takes the mode and modification time an editor copies onto the files it writes.
    /// Files whose modes are not theirs to change ignore the mode.
    fn set_times(&self, _mode: Option<u32>, _mtime: Option<SystemTime>) {}

    /// Whether its content is edited as a whole (the descriptor, a setting): a file renamed
    /// over it replaces its content ([`FileNode::replace`]), and renaming it away leaves it
    /// in place with a scratch copy under the new name.
    fn edited_whole(&self) -> bool {
        false
    }

    /// Replaces its content with `data`, complete (a temporary file renamed over it).
    fn replace(&self, _data: &[u8]) -> Result<()> {
        Err(Error::refused("replace", Refusal::NotPermitted))
    }

    /// Its whole current content (for a copy made when an editor renames it away).
    fn contents(&self) -> Result<Arc<[u8]>> {
        Err(Error::refused("copy", Refusal::NotSupported))
    }

    /// The node as `Any`, so that a folder recognises files of its own making.
    fn as_any(&self) -> &dyn Any;
}

/// One open of a file.
pub trait OpenFile: Send + Sync {
    /// Size as this handle sees it (its unsaved writes included).
    fn len(&self) -> u64;

    /// Whether [`OpenFile::len`] is 0.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads at `offset` into `buf`; returns the bytes read (0 at or past the end).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize>;

    /// Writes `data` at `offset`.
    fn write_at(&self, _offset: u64, _data: &[u8]) -> Result<()> {
        Err(Error::refused("write", Refusal::AccessDenied))
    }

    /// Truncates or extends through this handle.
    fn set_len(&self, _len: u64) -> Result<()> {
        Err(Error::refused("truncate", Refusal::AccessDenied))
    }

    /// `close()` of one descriptor of this open: persists what was written.
    fn flush(&self) -> Result<()> {
        Ok(())
    }

    /// `fsync()` (`fdatasync()` when `data_only`): what was written is durable when this
    /// returns.
    fn fsync(&self, _data_only: bool) -> Result<()> {
        self.flush()
    }

    /// `fallocate()` of `len` bytes at `offset`.
    fn allocate(&self, _offset: u64, _len: u64, _how: Allocation) -> Result<()> {
        Err(Error::refused("fallocate", Refusal::NotSupported))
    }

    /// The last descriptor is gone: persists anything still pending. Errors here reach no
    /// program; the FUSE layer logs them.
    fn release(&self) -> Result<()> {
        Ok(())
    }

    /// The first offset at or after `offset` holding data (`data`) or a hole, `None` when
    /// there is none. Most files are all data; sparse images answer from their tables.
    fn seek(&self, offset: u64, data: bool) -> Result<Option<u64>> {
        let len = self.len();
        Ok(match (offset < len, data) {
            (true, true) => Some(offset),
            (true, false) => Some(len),
            (false, _) => None,
        })
    }

    /// Told of each read before it is answered, so that a sequential reader can have the
    /// data after it decoded ahead (the tasks go to `background`).
    fn note_read(&self, _offset: u64, _len: u64, _background: &dyn Background) {}
}

/// A folder of the mount.
pub trait DirNode: Send + Sync + 'static {
    /// Its attributes.
    fn attributes(&self) -> DirAttributes;

    /// The child called `name`. A folder returns the same object for the same child while
    /// that child exists: the inode table recognises nodes by identity.
    fn lookup(&self, name: &str) -> Option<Node>;

    /// Every child, by name.
    fn entries(&self) -> Vec<(String, Node)>;

    /// Its owner and group, when they are not the mount's (a guest directory's).
    fn owner(&self) -> Option<(u32, u32)> {
        None
    }

    /// Whether its children are expensive to produce (a guest file system): the inode table
    /// then forgets them when the kernel does, instead of keeping them for the mount's life.
    fn is_lazy(&self) -> bool {
        false
    }

    /// Creates a file `name` (an editor's temporary file) with permission bits `mode`.
    fn create(&self, name: &str, _mode: u32) -> Result<Node> {
        Err(Error::refused(name, Refusal::NotPermitted))
    }

    /// Removes the file `name`.
    fn unlink(&self, name: &str) -> Result<()> {
        Err(Error::refused(name, Refusal::NotPermitted))
    }

    /// Creates the folder `name`.
    fn mkdir(&self, name: &str) -> Result<Node> {
        Err(Error::refused(name, Refusal::NotPermitted))
    }

    /// Removes the folder `name`.
    fn rmdir(&self, name: &str) -> Result<()> {
        Err(Error::refused(name, Refusal::NotPermitted))
    }

    /// Renames `name` to `new_name` in `to` (which may be this folder). `no_replace` asks
    /// for `RENAME_NOREPLACE`.
    fn rename(
        &self,
        name: &str,
        _to: &Arc<dyn DirNode>,
        _new_name: &str,
        _no_replace: bool,
    ) -> Result<()> {
        Err(Error::refused(name, Refusal::NotPermitted))
    }

    /// The folder as `Any`, so that a rename between two folders of one kind can reach the
    /// other's entries.
    fn as_any(&self) -> &dyn Any;

    /// The shared folder as `Any` (see [`DirNode::as_any`]).
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

/// A node: a file, a folder or a symbolic link.
#[derive(Clone)]
pub enum Node {
    /// A file.
    File(Arc<dyn FileNode>),
    /// A folder.
    Dir(Arc<dyn DirNode>),
    /// A symbolic link to a relative target (inside the mount).
    Symlink(Arc<str>),
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Node::File(_) => write!(f, "File({:#x})", self.identity()),
            Node::Dir(_) => write!(f, "Dir({:#x})", self.identity()),
            Node::Symlink(t) => write!(f, "Symlink({t:?})"),
        }
    }
}

impl Node {
    /// A symbolic link to `target`.
    pub fn symlink(target: &str) -> Node {
        Node::Symlink(Arc::from(target))
    }

    /// Whether this is a folder.
    pub fn is_dir(&self) -> bool {
        matches!(self, Node::Dir(_))
    }

    /// The identity of the object behind this node: equal for clones of one node, different
    /// for different nodes while both exist.
    pub fn identity(&self) -> usize {
        match self {
            Node::File(f) => Arc::as_ptr(f) as *const () as usize,
            Node::Dir(d) => Arc::as_ptr(d) as *const () as usize,
            Node::Symlink(s) => Arc::as_ptr(s) as *const u8 as usize,
        }
    }

    /// Whether `self` and `other` are the same object.
    pub fn same_as(&self, other: &Node) -> bool {
        self.identity() == other.identity()
    }
}

/// Bytes of `data` for a read of `buf.len()` bytes at `offset` (clamped to the data).
pub fn read_slice(data: &[u8], offset: u64, buf: &mut [u8]) -> usize {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(data.len());
    let end = start.saturating_add(buf.len()).min(data.len());
    let n = end - start;
    buf[..n].copy_from_slice(&data[start..end]);
    n
}

/// Applies a write of `data` at `offset` to `buf`, bounded by `max` bytes in all.
pub fn write_into(buf: &mut Vec<u8>, offset: u64, data: &[u8], max: u64) -> Result<()> {
    let too_large = || Error::refused("write", Refusal::TooLarge);
    let end = offset
        .checked_add(data.len() as u64)
        .ok_or_else(too_large)?;
    if end > max {
        return Err(too_large());
    }
    // OK to cast: end <= max, a small bound (memory files only).
    let (start, end) = (offset as usize, end as usize);
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[start..end].copy_from_slice(data);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_bounded_and_fill_gaps_with_zeros() {
        let mut b = b"ab".to_vec();
        write_into(&mut b, 4, b"xy", 10).unwrap();
        assert_eq!(b, b"ab\0\0xy");
        let e = write_into(&mut b, 9, b"xy", 10).unwrap_err();
        assert_eq!(e.refusal(), Some(Refusal::TooLarge));
        let e = write_into(&mut b, u64::MAX, b"x", 10).unwrap_err();
        assert_eq!(e.refusal(), Some(Refusal::TooLarge));
    }

    #[test]
    fn reads_clamp_to_the_data() {
        let mut buf = [0u8; 3];
        assert_eq!(read_slice(b"hello", 1, &mut buf), 3);
        assert_eq!(&buf, b"ell");
        let mut buf = [0u8; 100];
        assert_eq!(read_slice(b"hello", 4, &mut buf), 1);
        assert_eq!(read_slice(b"hello", u64::MAX, &mut buf), 0);
    }
}
