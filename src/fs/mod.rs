//! The FUSE glue: the inode table, attributes, open flags, read scheduling and errno
//! mapping. Every file and folder is a node object ([`crate::node`]); this layer looks up
//! the node a request names, calls it, and answers.
//!
//! Files whose content never changes ([`Caching::Stable`]: members, flat disks) get long
//! TTLs and `FOPEN_KEEP_CACHE`, so the kernel page cache keeps what was read, and their reads
//! run on a worker pool (see [`pool`]) in buffered mode, so the kernel's concurrent
//! read-ahead decodes on every core; the node is told of each read first, so a flat disk's
//! sequential readers get units decoded ahead of them. Files that change (settings, the
//! descriptor, editors' scratch files) get zero TTLs and direct I/O and are answered on the
//! session thread from memory.
//!
//! Extended attributes: there are none. `getxattr`, `listxattr` and `setxattr` answer
//! ENOSYS (without fuser's "not implemented" warning): the kernel then remembers that this
//! file system has no extended attributes and answers every later call itself with
//! EOPNOTSUPP, as for vfat. That saves `cp -a` and `ls -l` three requests per file (a third
//! of all requests of a `cp -a` out of a guest file system).
//!
//! This is the only layer that knows errnos: [`errno_of`] is its one table.

pub mod contain;
pub mod pool;
pub mod table;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::error::{Error, ErrorKind, Refusal};
use crate::node::{Allocation, BlockSize, Caching, DirNode, Node, OpenFile, OpenMode};
use pool::Pool;
use table::{ROOT_INO, Table};

/// Attribute and entry TTL of stable nodes: they never change while mounted.
const STATIC_TTL: Duration = Duration::from_secs(3600);

/// TTL of nodes that change: their sizes change.
const LIVE_TTL: Duration = Duration::ZERO;

/// `st_blksize` advertised for flat disks: large, so that `cp` and friends read in big
/// chunks (each chunk becomes concurrent kernel read-ahead requests).
const DISK_BLKSIZE: u32 = 1 << 20;

/// `st_blksize` for other files.
const FILE_BLKSIZE: u32 = 64 << 10;

/// Kernel background requests allowed in flight (read-ahead is background work).
const MAX_BACKGROUND: u16 = 64;

/// Largest write request the kernel sends.
const MAX_WRITE: u32 = 1 << 20;

/// Block size reported by statfs.
const STATFS_BSIZE: u32 = 4096;

/// Nodes the table may hold beyond those of the built tree before `create` refuses more
/// scratch files (bounds memory whatever a program creates).
const MAX_SCRATCH_FILES: usize = 1024;

/// An open file: its handle, and how its content is cached (which decides where reads run).
struct Open {
    file: Arc<dyn OpenFile>,
    caching: Caching,
}

/// The mounted filesystem.
pub struct OvaFs {
    table: Arc<RwLock<Table>>,
    pool: Pool,
    handles: Mutex<HashMap<u64, Open>>,
    /// The listing of each open folder, by handle (taken at `opendir`).
    listings: Mutex<HashMap<u64, Arc<Listing>>>,
    next_handle: AtomicU64,
    /// Nodes in the table when mounted (the bound on scratch files counts from here).
    built_nodes: usize,
    read_only: bool,
    uid: u32,
    gid: u32,
}

/// How an [`OvaFs`] is set up.
pub struct FsOptions {
    /// Read worker threads.
    pub threads: usize,
    /// Owner of every node.
    pub uid: u32,
    /// Group of every node.
    pub gid: u32,
    /// Refuse every change.
    pub read_only: bool,
}

type Reply<T> = std::result::Result<T, Errno>;

/// A folder's entries as `readdir` returns them: inode, kind, name (`.` and `..` first).
type Listing = Vec<(u64, FileType, String)>;

impl OvaFs {
    /// A filesystem showing the folder `root`.
    pub fn new(root: Arc<dyn DirNode>, opts: &FsOptions) -> std::io::Result<Self> {
        let built_nodes = 1 + count_nodes(&*root);
        Ok(OvaFs {
            table: Arc::new(RwLock::new(Table::new(Node::Dir(root)))),
            pool: Pool::new(opts.threads)?,
            handles: Mutex::new(HashMap::new()),
            listings: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            built_nodes,
            read_only: opts.read_only,
            uid: opts.uid,
            gid: opts.gid,
        })
    }

    // The table's entries are replaced whole: a lock poisoned by a contained panic still
    // guards a consistent table.
    fn table(&self) -> RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn table_mut(&self) -> RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    fn handles(&self) -> MutexGuard<'_, HashMap<u64, Open>> {
        self.handles.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn listings(&self) -> MutexGuard<'_, HashMap<u64, Arc<Listing>>> {
        self.listings.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn new_handle(&self, open: Open) -> FileHandle {
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.handles().insert(fh, open);
        FileHandle(fh)
    }

    fn handle(&self, fh: u64) -> Option<(Arc<dyn OpenFile>, Caching)> {
        self.handles().get(&fh).map(|o| (o.file.clone(), o.caching))
    }

    fn node(&self, ino: u64) -> Reply<Node> {
        self.table().node(ino).ok_or(Errno::ENOENT)
    }

    fn dir(&self, ino: u64) -> Reply<Arc<dyn DirNode>> {
        match self.node(ino)? {
            Node::Dir(d) => Ok(d),
            _ => Err(Errno::ENOTDIR),
        }
    }

    /// The inode of `node`, found as `name` in `parent`; `lookup` counts a kernel reference.
    fn number(&self, parent: u64, name: &str, node: &Node, lookup: bool) -> u64 {
        let lazy = matches!(self.table().node(parent), Some(Node::Dir(d)) if d.is_lazy());
        self.table_mut().number(parent, name, node, lookup, lazy)
    }

    fn attr(&self, ino: u64, node: &Node, fh: Option<u64>) -> (FileAttr, Duration) {
        let (kind, size, allocated, mode, mtime, blksize, nlink, ttl) = match node {
            Node::Dir(d) => {
                let a = d.attributes();
                let nlink = 2u32.saturating_add(u32::try_from(a.subfolders).unwrap_or(u32::MAX));
                (
                    FileType::Directory,
                    0,
                    None,
                    a.mode,
                    a.mtime,
                    FILE_BLKSIZE,
                    nlink,
                    ttl_of(a.caching),
                )
            }
            Node::File(f) => {
                let a = f.attributes(&self.pool);
                // An open handle sees its own unsaved writes.
                let size = fh
                    .and_then(|fh| self.handle(fh))
                    .map_or(a.size, |(h, _)| h.len());
                let blksize = match a.block_size {
                    BlockSize::Large => DISK_BLKSIZE,
                    BlockSize::Normal => FILE_BLKSIZE,
                };
                let ttl = ttl_of(f.caching());
                (
                    FileType::RegularFile,
                    size,
                    a.allocated,
                    a.mode,
                    a.mtime,
                    blksize,
                    1,
                    ttl,
                )
            }
            Node::Symlink(target) => (
                FileType::Symlink,
                target.len() as u64,
                None,
                0o777,
                self.symlink_time(),
                FILE_BLKSIZE,
                1,
                LIVE_TTL,
            ),
        };
        let (uid, gid) = match node {
            Node::Dir(d) => d.owner(),
            Node::File(f) => f.owner(),
            Node::Symlink(_) => None,
        }
        .unwrap_or((self.uid, self.gid));
        let attr = FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: allocated.unwrap_or(size).div_ceil(512),
            atime: mtime,
            mtime,
            ctime: mtime,
            crtime: mtime,
            kind,
            perm: (mode & 0o7777) as u16,
            nlink,
            uid,
            gid,
            rdev: 0,
            blksize,
            flags: 0,
        };
        (attr, ttl)
    }

    /// Whether `ino`'s node is no longer where the table last saw it (a setting removed by a
    /// commit): once the kernel forgets it, nothing can reach it again.
    fn is_orphan(&self, ino: u64) -> bool {
        let (parent, name, node) = match self.table().get(ino) {
            Some(s) => (s.parent, s.name.clone(), s.node.clone()),
            None => return false,
        };
        match self.table().node(parent) {
            Some(Node::Dir(d)) => !d.lookup(&name).is_some_and(|n| n.same_as(&node)),
            _ => true,
        }
    }

    /// The time symbolic links show: the root folder's.
    fn symlink_time(&self) -> SystemTime {
        match self.table().node(ROOT_INO) {
            Some(Node::Dir(d)) => d.attributes().mtime,
            _ => SystemTime::UNIX_EPOCH,
        }
    }

    fn reply_entry(&self, parent: u64, name: &str, node: &Node, reply: ReplyEntry) {
        let ino = self.number(parent, name, node, true);
        let (attr, ttl) = self.attr(ino, node, None);
        reply.entry(&ttl, &attr, fuser::Generation(0));
    }

    /// Logs a failed operation once and returns its errno.
    fn fail(&self, op: &str, ino: u64, e: &Error) -> Errno {
        let path = self.table().path_of(ino);
        log_failure(op, &path, e);
        errno_of(e)
    }

    fn check_writable(&self) -> Reply<()> {
        if self.read_only {
            Err(Errno::EROFS)
        } else {
            Ok(())
        }
    }

    fn name_str(name: &OsStr) -> Reply<&str> {
        let n = name.to_str().ok_or(Errno::EINVAL)?;
        if n.is_empty() || n.contains('/') || n == "." || n == ".." {
            return Err(Errno::EINVAL);
        }
        Ok(n)
    }
}

/// The [`Allocation`] an `fallocate()` mode asks for; `None` for modes no file here offers
/// (collapsing, inserting, unsharing ranges).
fn allocation_of(mode: i32) -> Option<Allocation> {
    let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
    match mode & !libc::FALLOC_FL_KEEP_SIZE {
        0 => Some(Allocation::Reserve { keep_size }),
        // The kernel lets PUNCH_HOLE through only with KEEP_SIZE.
        libc::FALLOC_FL_PUNCH_HOLE if keep_size => Some(Allocation::PunchHole),
        libc::FALLOC_FL_ZERO_RANGE => Some(Allocation::ZeroRange { keep_size }),
        _ => None,
    }
}

/// The TTL of a node cached as `caching`.
fn ttl_of(caching: Caching) -> Duration {
    match caching {
        Caching::Stable => STATIC_TTL,
        Caching::Changing => LIVE_TTL,
    }
}

/// The open flags of a file cached as `caching`.
fn open_flags(caching: Caching) -> FopenFlags {
    match caching {
        Caching::Stable => FopenFlags::FOPEN_KEEP_CACHE,
        Caching::Changing => FopenFlags::FOPEN_DIRECT_IO,
    }
}

/// Nodes below `dir` (not below lazy folders), to size the bound on scratch files.
fn count_nodes(dir: &dyn DirNode) -> usize {
    let mut count = 0usize;
    crate::node::folder::walk(dir, &mut |_| count += 1);
    count
}

/// Logs a failed operation: refused edits as warnings, failures as errors, and what a file
/// system refuses in the ordinary way (a write to a member, say) only for debugging.
fn log_failure(op: &str, path: &str, e: &Error) {
    match e.kind() {
        ErrorKind::InvalidEdit(_) => log::warn!("{op} /{path}: refused: {e}"),
        ErrorKind::Refused { .. } => log::debug!("{op} /{path}: {e}"),
        _ => log::error!("{op} /{path}: {e}"),
    }
}

/// Maps an error to the errno the caller sees. One table for the whole filesystem: OS
/// errors keep their number, refused edits are EINVAL, writes to read-only things EROFS,
/// everything else (corrupt or truncated data) EIO.
pub fn errno_of(err: &Error) -> Errno {
    match err.kind() {
        ErrorKind::Io { source, .. } => source
            .raw_os_error()
            .map(Errno::from_i32)
            .unwrap_or(Errno::EIO),
        ErrorKind::InvalidEdit(_) => Errno::EINVAL,
        ErrorKind::ReadOnly(_) => Errno::EROFS,
        ErrorKind::Refused { reason, .. } => errno_of_refusal(*reason),
        _ => Errno::EIO,
    }
}

/// The errno of each [`Refusal`].
fn errno_of_refusal(reason: Refusal) -> Errno {
    match reason {
        Refusal::NotFound => Errno::ENOENT,
        Refusal::Exists => Errno::EEXIST,
        Refusal::NotAFolder => Errno::ENOTDIR,
        Refusal::IsAFolder => Errno::EISDIR,
        Refusal::NotEmpty => Errno::ENOTEMPTY,
        Refusal::NotPermitted => Errno::EPERM,
        Refusal::AccessDenied => Errno::EACCES,
        Refusal::TooLarge => Errno::EFBIG,
        Refusal::NotSupported => Errno::ENOTSUP,
        Refusal::InvalidArgument => Errno::EINVAL,
        Refusal::Busy => Errno::EAGAIN,
        Refusal::CrossFolder => Errno::EXDEV,
        Refusal::NoSpace => Errno::ENOSPC,
        Refusal::NoData => Errno::ENXIO,
    }
}

/// The path of `ino` in the shared table, for a worker's log line (a lock poisoned by a
/// contained panic still names it).
fn path_in(table: &RwLock<Table>, ino: u64) -> String {
    table.read().unwrap_or_else(|p| p.into_inner()).path_of(ino)
}

/// Answers an lseek: the offset found, or ENXIO when there is none.
fn reply_seek(reply: ReplyLseek, at: Option<u64>) {
    match at {
        Some(at) => reply.offset(i64::try_from(at).unwrap_or(i64::MAX)),
        None => reply.error(Errno::ENXIO),
    }
}

impl OvaFs {
    fn do_lookup(&self, parent: u64, name: &OsStr) -> Reply<(String, Node)> {
        let name = name.to_str().ok_or(Errno::ENOENT)?;
        let node = self
            .dir(parent)?
            .find(name)
            .map_err(|e| errno_of(&e))?
            .ok_or(Errno::ENOENT)?;
        Ok((name.to_string(), node))
    }

    fn do_setattr(
        &self,
        ino: u64,
        mode: Option<u32>,
        size: Option<u64>,
        mtime: Option<TimeOrNow>,
        fh: Option<u64>,
    ) -> Reply<()> {
        let node = self.node(ino)?;
        if let Some(size) = size {
            self.check_writable()?;
            let result = match (&node, fh.and_then(|fh| self.handle(fh))) {
                (Node::File(_), Some((h, _))) => h.set_len(size),
                (Node::File(f), None) => f.set_len(size),
                (Node::Dir(_), _) => return Err(Errno::EISDIR),
                (Node::Symlink(_), _) => return Err(Errno::EACCES),
            };
            result.map_err(|e| self.fail("truncate", ino, &e))?;
        }
        if let Node::File(f) = &node {
            // Editors copy modes and times onto the files they write; the node decides which
            // are its to keep (scratch files take both, settings their times, members none).
            let mtime = mtime.map(|t| match t {
                TimeOrNow::SpecificTime(t) => t,
                TimeOrNow::Now => SystemTime::now(),
            });
            f.set_times(mode, mtime);
        }
        Ok(())
    }

    fn do_open(&self, ino: u64, mode: OpenMode) -> Reply<(FileHandle, FopenFlags)> {
        match self.node(ino)? {
            Node::File(f) => {
                if mode.write && self.read_only {
                    return Err(Errno::EROFS);
                }
                let caching = f.caching();
                let file = f.open(mode).map_err(|e| errno_of(&e))?;
                let mut flags = open_flags(caching);
                // A read-only open of an immutable file has nothing to flush at close: the
                // kernel may skip the FLUSH request (one round trip per file a `cp` reads).
                if caching == Caching::Stable && !mode.write {
                    flags |= FopenFlags::FOPEN_NOFLUSH;
                }
                Ok((self.new_handle(Open { file, caching }), flags))
            }
            Node::Dir(_) => Err(Errno::EISDIR),
            Node::Symlink(_) => Err(Errno::ELOOP),
        }
    }

    fn do_create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> Reply<(String, Node, FileHandle)> {
        self.check_writable()?;
        let name = Self::name_str(name)?;
        let dir = self.dir(parent)?;
        let existing = dir.lookup(name);
        let recreate = existing.is_some();
        let node = match existing {
            // The kernel may believe a settings file is gone after an editor renamed it
            // away (vim's backup dance): creating it again opens it for rewriting.
            Some(node) if flags & libc::O_EXCL == 0 => node,
            Some(_) => return Err(Errno::EEXIST),
            None => {
                if self.table().len() >= self.built_nodes + MAX_SCRATCH_FILES {
                    return Err(Errno::ENOSPC);
                }
                dir.create(name, mode).map_err(|e| errno_of(&e))?
            }
        };
        let Node::File(f) = &node else {
            return Err(if node.is_dir() {
                Errno::EISDIR
            } else {
                Errno::EACCES
            });
        };
        let open_mode = OpenMode {
            write: true,
            truncate: flags & libc::O_TRUNC != 0,
            recreate,
        };
        let caching = f.caching();
        let file = f.clone().open(open_mode).map_err(|e| errno_of(&e))?;
        let fh = self.new_handle(Open { file, caching });
        Ok((name.to_string(), node, fh))
    }

    fn do_rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Reply<()> {
        self.check_writable()?;
        let (name, newname) = (Self::name_str(name)?, Self::name_str(newname)?);
        if flags & libc::RENAME_EXCHANGE != 0 {
            return Err(Errno::EINVAL);
        }
        let (from, to) = (self.dir(parent)?, self.dir(newparent)?);
        let moving = from.lookup(name).ok_or(Errno::ENOENT)?;
        let no_replace = flags & libc::RENAME_NOREPLACE != 0;
        from.rename(name, &to, newname, no_replace)
            .map_err(|e| self.fail("rename", parent, &e))?;
        // The node keeps its number where it went; a scratch file consumed by the rename
        // (written into the file it landed on) is gone.
        match to.lookup(newname) {
            Some(n) if n.same_as(&moving) => {
                self.number(newparent, newname, &moving, false);
            }
            _ if from.lookup(name).is_none() => self.table_mut().remove(&moving),
            _ => {}
        }
        Ok(())
    }

    /// Answers an lseek for SEEK_DATA/SEEK_HOLE through the handle. Stable files (flat
    /// disks) answer from their tables, which may be read: on a worker, never on the
    /// session thread.
    fn do_lseek(&self, ino: u64, fh: u64, offset: u64, data: bool, reply: ReplyLseek) {
        let Some((file, caching)) = self.handle(fh) else {
            return reply.error(Errno::EBADF);
        };
        let seek = move |table: &RwLock<Table>, reply: ReplyLseek| match file.seek(offset, data) {
            Ok(at) => reply_seek(reply, at),
            Err(e) => {
                log::error!("lseek /{} at offset {offset}: {e}", path_in(table, ino));
                reply.error(errno_of(&e));
            }
        };
        match caching {
            Caching::Stable => {
                let table = self.table.clone();
                self.pool.read(move || seek(&table, reply));
            }
            Caching::Changing => seek(&self.table, reply),
        }
    }

    fn do_read(&self, ino: u64, fh: u64, offset: u64, size: u32, reply: ReplyData) {
        let Some((file, caching)) = self.handle(fh) else {
            return reply.error(Errno::EBADF);
        };
        let note = file.clone();
        let read = move |table: &RwLock<Table>, reply: ReplyData| {
            with_read_buffer(size as usize, |buf| match file.read_at(offset, buf) {
                Ok(n) => reply.data(&buf[..n]),
                Err(e) => {
                    let path = path_in(table, ino);
                    log::error!("read /{path} at offset {offset}: {e}");
                    reply.error(errno_of(&e));
                }
            })
        };
        match caching {
            Caching::Stable => {
                note.note_read(offset, u64::from(size), &self.pool);
                let table = self.table.clone();
                self.pool.read(move || {
                    contain::test_panic_point("read", || path_in(&table, ino));
                    read(&table, reply)
                });
            }
            Caching::Changing => read(&self.table, reply),
        }
    }

    /// Runs a handle operation (flush, fsync) and answers with the outcome.
    fn reply_handle(
        &self,
        ino: u64,
        fh: u64,
        op: &str,
        f: impl FnOnce(&dyn OpenFile) -> crate::error::Result<()>,
        reply: ReplyEmpty,
    ) {
        match self.handle(fh) {
            Some((h, _)) => match f(&*h) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(self.fail(op, ino, &e)),
            },
            None => reply.ok(),
        }
    }
}

/// Largest read buffer a worker keeps between reads (the kernel's reads are at most 1 MiB
/// with FUSE's usual 256-page limit).
const KEPT_READ_BUFFER_BYTES: usize = 4 << 20;

thread_local! {
    /// Each read worker's reusable buffer. A fresh `vec![0; 1 MiB]` per read costs page
    /// faults and zeroing on every read, and the freed buffers fragmented malloc's arenas
    /// (part of the memory overshoot described in BENCHMARKS.md).
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on a buffer of exactly `len` bytes (contents unspecified: readers overwrite
/// every byte they return) from this thread's reusable buffer.
fn with_read_buffer<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    READ_BUFFER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) if len <= KEPT_READ_BUFFER_BYTES => {
            if buf.len() < len {
                buf.resize(len, 0);
            }
            f(&mut buf[..len])
        }
        _ => f(&mut vec![0u8; len]),
    })
}

impl Filesystem for OvaFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_background(MAX_BACKGROUND);
        // Large writes (a guest's disk, a whole descriptor) arrive in few requests.
        let _ = config.set_max_write(MAX_WRITE);
        // O_TRUNC arrives with open() instead of as a separate truncate.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_ATOMIC_O_TRUNC);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.do_lookup(parent.0, name) {
            Ok((name, node)) => self.reply_entry(parent.0, &name, &node, reply),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let orphan = self.is_orphan(ino.0);
        self.table_mut().forget(ino.0, nlookup, orphan);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino.0) {
            Ok(node) => {
                let (attr, ttl) = self.attr(ino.0, &node, fh.map(|f| f.0));
                reply.attr(&ttl, &attr);
            }
            Err(e) => reply.error(e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let fh = fh.map(|f| f.0);
        if let Err(e) = self.do_setattr(ino.0, mode, size, mtime, fh) {
            return reply.error(e);
        }
        match self.node(ino.0) {
            Ok(node) => {
                let (attr, ttl) = self.attr(ino.0, &node, fh);
                reply.attr(&ttl, &attr);
            }
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.node(ino.0) {
            Ok(Node::Symlink(target)) => reply.data(target.as_bytes()),
            Ok(_) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mode = OpenMode {
            write: flags.acc_mode() != OpenAccMode::O_RDONLY,
            truncate: flags.0 & libc::O_TRUNC != 0,
            recreate: false,
        };
        match self.do_open(ino.0, mode) {
            Ok((fh, flags)) => reply.opened(fh, flags),
            Err(e) => reply.error(e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.do_read(ino.0, fh.0, offset, size, reply);
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if let Err(e) = self.check_writable() {
            return reply.error(e);
        }
        let Some((file, caching)) = self.handle(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let written = data.len() as u32;
        match caching {
            // A disk's write does I/O: on a worker, like its reads.
            Caching::Stable => {
                let data = data.to_vec();
                let table = self.table.clone();
                self.pool.read(move || match file.write_at(offset, &data) {
                    Ok(()) => reply.written(written),
                    Err(e) => {
                        log_failure("write", &path_in(&table, ino.0), &e);
                        reply.error(errno_of(&e));
                    }
                });
            }
            Caching::Changing => match file.write_at(offset, data) {
                Ok(()) => reply.written(written),
                Err(e) => reply.error(self.fail("write", ino.0, &e)),
            },
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.reply_handle(ino.0, fh.0, "close", |h| h.flush(), reply);
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.handle(fh.0) {
            // Making a disk's writes durable waits for the storage: on a worker.
            Some((file, Caching::Stable)) => {
                let table = self.table.clone();
                self.pool.read(move || match file.fsync(datasync) {
                    Ok(()) => reply.ok(),
                    Err(e) => {
                        log_failure("fsync", &path_in(&table, ino.0), &e);
                        reply.error(errno_of(&e));
                    }
                });
            }
            _ => self.reply_handle(ino.0, fh.0, "fsync", |h| h.fsync(datasync), reply),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // Normally flush already stored the content; this catches bare truncations and
        // writers that never flushed (mmap). Errors here cannot reach the program any more.
        let open = self.handles().remove(&fh.0);
        if let Some(open) = open
            && let Err(e) = open.file.release()
        {
            let _ = self.fail("release", ino.0, &e);
        }
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.do_create(parent.0, name, mode & !umask, flags) {
            Ok((name, node, fh)) => {
                let ino = self.number(parent.0, &name, &node, true);
                let (attr, ttl) = self.attr(ino, &node, Some(fh.0));
                reply.created(
                    &ttl,
                    &attr,
                    fuser::Generation(0),
                    fh,
                    FopenFlags::FOPEN_DIRECT_IO,
                );
            }
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let made = (|| {
            self.check_writable()?;
            if mode & libc::S_IFMT != libc::S_IFREG {
                return Err(Errno::EPERM);
            }
            let name = Self::name_str(name)?;
            let node = self
                .dir(parent.0)?
                .create(name, mode & !umask)
                .map_err(|e| errno_of(&e))?;
            Ok((name.to_string(), node))
        })();
        match made {
            Ok((name, node)) => self.reply_entry(parent.0, &name, &node, reply),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let done = (|| {
            self.check_writable()?;
            let (name, node) = self.do_lookup(parent.0, name)?;
            self.dir(parent.0)?
                .unlink(&name)
                .map_err(|e| errno_of(&e))?;
            self.table_mut().remove(&node);
            Ok(())
        })();
        match done {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let made = (|| {
            self.check_writable()?;
            let name = Self::name_str(name)?;
            let dir = self.dir(parent.0)?;
            if dir.lookup(name).is_some() {
                return Err(Errno::EEXIST);
            }
            let node = dir
                .mkdir(name)
                .map_err(|e| self.fail("mkdir", parent.0, &e))?;
            Ok((name.to_string(), node))
        })();
        match made {
            Ok((name, node)) => self.reply_entry(parent.0, &name, &node, reply),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let done = (|| {
            self.check_writable()?;
            let (name, _) = self.do_lookup(parent.0, name)?;
            self.dir(parent.0)?
                .rmdir(&name)
                .map_err(|e| self.fail("rmdir", parent.0, &e))
        })();
        match done {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.do_rename(parent.0, name, newparent.0, newname, flags.bits()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    /// The listing is taken here, once per open: `readdir` then pages through it (a guest
    /// directory is not read again for every page), and an unreadable directory fails here.
    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let dir = match self.dir(ino.0) {
            Ok(d) => d,
            Err(e) => return reply.error(e),
        };
        let children = match dir.list() {
            Ok(c) => c,
            Err(e) => {
                log_failure("opendir", &path_in(&self.table, ino.0), &e);
                return reply.error(errno_of(&e));
            }
        };
        let flags = match dir.attributes().caching {
            Caching::Stable => FopenFlags::FOPEN_CACHE_DIR,
            Caching::Changing => FopenFlags::empty(),
        };
        let parent = self.table().get(ino.0).map_or(ROOT_INO, |s| s.parent);
        let mut listing = vec![
            (ino.0, FileType::Directory, ".".to_string()),
            (parent, FileType::Directory, "..".to_string()),
        ];
        listing.extend(children.into_iter().map(|(name, node)| {
            let kind = match node {
                Node::Dir(_) => FileType::Directory,
                Node::Symlink(_) => FileType::Symlink,
                Node::File(_) => FileType::RegularFile,
            };
            (self.number(ino.0, &name, &node, false), kind, name)
        }));
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.listings().insert(fh, Arc::new(listing));
        reply.opened(FileHandle(fh), flags)
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if let Err(e) = self.dir(ino.0) {
            return reply.error(e);
        }
        let Some(listing) = self.listings().get(&fh.0).cloned() else {
            return reply.error(Errno::EBADF);
        };
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (child, kind, name)) in listing.iter().enumerate().skip(skip) {
            if reply.add(INodeNo(*child), (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.listings().remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Every change is already durable when its operation returns.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let root = self.dir(ROOT_INO);
        let bytes = root.map_or(0, |r| crate::node::folder::stored_bytes(&*r, &self.pool));
        let blocks = bytes.div_ceil(u64::from(STATFS_BSIZE));
        let files = self.table().len() as u64;
        reply.statfs(blocks, 0, 0, files, 0, STATFS_BSIZE, 255, STATFS_BSIZE);
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if let Err(e) = self.check_writable() {
            return reply.error(e);
        }
        let Some(how) = allocation_of(mode) else {
            return reply.error(Errno::EOPNOTSUPP);
        };
        self.reply_handle(
            ino.0,
            fh.0,
            "fallocate",
            |h| h.allocate(offset, length, how),
            reply,
        );
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let data = match whence {
            libc::SEEK_DATA => true,
            libc::SEEK_HOLE => false,
            // Plain seeks never reach the filesystem; anything else is not ours to answer.
            _ => return reply.error(Errno::EINVAL),
        };
        let Ok(offset) = u64::try_from(offset) else {
            return reply.error(Errno::ENXIO);
        };
        match self.node(ino.0) {
            Ok(Node::File(_)) => self.do_lseek(ino.0, fh.0, offset, data, reply),
            Ok(_) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, _name: &OsStr, _size: u32, reply: ReplyXattr) {
        match self.node(ino.0) {
            Ok(_) => reply.error(Errno::ENOSYS),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, _size: u32, reply: ReplyXattr) {
        match self.node(ino.0) {
            Ok(_) => reply.error(Errno::ENOSYS),
            Err(e) => reply.error(e),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        match self.node(ino.0) {
            Ok(_) => reply.error(Errno::ENODATA),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self.node(ino.0) {
            Err(e) => reply.error(e),
            Ok(_) if self.read_only && mask.contains(AccessFlags::W_OK) => {
                reply.error(Errno::EROFS)
            }
            Ok(_) => reply.ok(),
        }
    }
}

impl crate::node::Background for Pool {
    fn run(&self, task: crate::node::Task) {
        self.read(task);
    }

    fn read_ahead(&self, task: crate::node::Task) {
        Pool::read_ahead(self, task);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::folder::{Folder, Origin};
    use crate::node::{DirAttributes, Node};
    use std::sync::atomic::AtomicUsize;

    /// A folder whose children are made on demand (as a guest file system's would be),
    /// counting how often it is listed.
    struct LazyDir {
        listed: AtomicUsize,
        child: Node,
    }

    impl DirNode for LazyDir {
        fn attributes(&self) -> DirAttributes {
            DirAttributes {
                mode: 0o555,
                mtime: SystemTime::UNIX_EPOCH,
                caching: Caching::Stable,
                subfolders: 0,
            }
        }
        fn lookup(&self, name: &str) -> Option<Node> {
            (name == "child").then(|| self.child.clone())
        }
        fn entries(&self) -> Vec<(String, Node)> {
            self.listed.fetch_add(1, Ordering::Relaxed);
            vec![("child".into(), self.child.clone())]
        }
        fn is_lazy(&self) -> bool {
            true
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
        fn into_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync> {
            self
        }
    }

    #[test]
    fn lazy_folders_are_not_expanded_at_mount_and_their_children_are_forgotten() {
        let root = Folder::root(SystemTime::UNIX_EPOCH);
        let lazy = Arc::new(LazyDir {
            listed: AtomicUsize::new(0),
            child: Node::symlink("x"),
        });
        root.add(
            "guest",
            Node::Dir(lazy.clone()),
            SystemTime::UNIX_EPOCH,
            Origin::Fixed,
        );
        let fs = OvaFs::new(
            root,
            &FsOptions {
                threads: 1,
                uid: 0,
                gid: 0,
                read_only: true,
            },
        )
        .unwrap();
        assert_eq!(
            lazy.listed.load(Ordering::Relaxed),
            0,
            "not listed at mount"
        );
        let guest = fs.do_lookup(ROOT_INO, OsStr::new("guest")).unwrap().1;
        let guest_ino = fs.number(ROOT_INO, "guest", &guest, true);
        let (name, child) = fs.do_lookup(guest_ino, OsStr::new("child")).unwrap();
        let child_ino = fs.number(guest_ino, &name, &child, true);
        assert_eq!(fs.table().path_of(child_ino), "guest/child");
        fs.table_mut().forget(child_ino, 1, false);
        assert!(
            fs.table().get(child_ino).is_none(),
            "a lazy child goes when forgotten"
        );
        fs.table_mut().forget(guest_ino, 1, false);
        assert!(
            fs.table().get(guest_ino).is_some(),
            "the folder itself stays"
        );
        assert_eq!(lazy.listed.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn errno_table() {
        assert_eq!(
            errno_of(&Error::new(ErrorKind::InvalidEdit("x".into()))),
            Errno::EINVAL
        );
        assert_eq!(
            errno_of(&Error::new(ErrorKind::ReadOnly("x".into()))),
            Errno::EROFS
        );
        assert_eq!(errno_of(&Error::overflow("x")), Errno::EIO);
        assert_eq!(
            errno_of(&Error::io(
                "x",
                std::io::Error::from_raw_os_error(libc::ENOSPC)
            )),
            Errno::ENOSPC
        );
        assert_eq!(
            errno_of(&Error::refused("x", Refusal::NotFound)),
            Errno::ENOENT
        );
        assert_eq!(
            errno_of(&Error::refused("x", Refusal::TooLarge)),
            Errno::EFBIG
        );
    }
}
