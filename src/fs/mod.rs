//! The FUSE glue: the node table, attributes, open flags, read scheduling, editing
//! operations and errno mapping.
//!
//! Static files (members, flat disks) never change: long TTLs and `FOPEN_KEEP_CACHE` let the
//! kernel page cache keep what was read, and their reads run on a worker pool (see [`pool`])
//! in buffered mode, so the kernel's concurrent read-ahead decodes on every core; sequential
//! readers of a flat disk also get units decoded ahead of them.
//!
//! Live files (descriptor, manifest, settings) and editors' scratch files change: zero TTLs
//! and direct I/O, per-handle write buffers checked at every `write()` (so `echo banana >
//! cpus` fails in the shell), persisted through the [`backend::Backend`] at `flush` (close),
//! `fsync` and `release`, and when a scratch file is renamed over a setting (`sed -i`, vim).
//! The last refused write of each file is kept in [`backend::Refusals`] for the status
//! report. A live file is never more readable than the package file its content comes from
//! ([`backend::Backend::mode_ceiling`]).
//!
//! Extended attributes: there are none. `getxattr` answers ENODATA and `listxattr` an empty
//! list (instead of fuser's "not implemented" warning on every `ls -l`); setting one is
//! refused with ENOTSUP.
//!
//! This is the only layer that knows errnos.

pub mod backend;
pub mod contain;
pub mod pool;
pub mod tree;

use std::collections::{HashMap, HashSet};
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

use crate::disk::engine::{FlatDisk, INLINE_COUNTED_EXTENTS};
use crate::error::{Error, ErrorKind, Refusal, Result};
use backend::{Backend, LiveKind, Refusals};
use pool::Pool;
use tree::{Content, FileKind, Node, NodeKind, Tree};

/// Attribute and entry TTL of static nodes: they never change while mounted.
const STATIC_TTL: Duration = Duration::from_secs(3600);

/// TTL of live and scratch nodes: their sizes change.
const LIVE_TTL: Duration = Duration::ZERO;

/// `st_blksize` advertised for flat disks: large, so that `cp` and friends read in big
/// chunks (each chunk becomes concurrent kernel read-ahead requests).
const DISK_BLKSIZE: u32 = 1 << 20;

/// `st_blksize` for other files.
const FILE_BLKSIZE: u32 = 64 << 10;

/// Kernel background requests allowed in flight (read-ahead is background work).
const MAX_BACKGROUND: u16 = 64;

/// Block size reported by statfs.
const STATFS_BSIZE: u32 = 4096;

/// Largest scratch file (editors' temporary copies of settings or of the descriptor).
const MAX_SCRATCH_BYTES: u64 = 64 << 20;

/// Scratch files allowed at once (bounds memory whatever a program creates).
const MAX_SCRATCH_FILES: usize = 1024;

/// An open file.
enum Handle {
    /// A static file or folder: nothing to track.
    Plain,
    /// A live file, with the new content being written.
    Live(LiveHandle),
    /// A scratch file (its data lives in the tree).
    Scratch,
}

struct LiveHandle {
    path: String,
    /// New content, once the handle has written or truncated.
    buf: Option<Vec<u8>>,
    /// The buffer differs from what was last stored.
    dirty: bool,
    /// Something was written (or explicitly truncated) through this handle. A buffer that
    /// was only emptied by `O_TRUNC` is not stored at `flush`: a shell's `echo 4 > cpus`
    /// closes a duplicate of the descriptor before it writes.
    written: bool,
    /// Why the last write was refused, repeated at every close.
    refused: Option<String>,
}

impl LiveHandle {
    fn new(path: String, truncated: bool) -> Self {
        LiveHandle {
            path,
            buf: truncated.then(Vec::new),
            dirty: truncated,
            written: false,
            refused: None,
        }
    }
}

/// The mounted filesystem.
pub struct OvaFs {
    tree: Arc<RwLock<Tree>>,
    backends: Vec<Arc<dyn Backend>>,
    /// Which backend serves each live path (rebuilt by `resync`).
    routes: RwLock<HashMap<String, usize>>,
    /// Live files that hold a secret (rebuilt by `resync`): their refused values are not
    /// shown.
    secrets: RwLock<HashSet<String>>,
    refusals: Arc<Refusals>,
    pool: Pool,
    handles: Mutex<HashMap<u64, Handle>>,
    next_handle: AtomicU64,
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
    /// Where refused writes are kept for the status report.
    pub refusals: Arc<Refusals>,
}

impl OvaFs {
    /// A filesystem serving `tree`; `backends` serve its live files, each the paths its
    /// entries list.
    pub fn new(
        tree: Tree,
        backends: Vec<Arc<dyn Backend>>,
        opts: &FsOptions,
    ) -> std::io::Result<Self> {
        let fs = OvaFs {
            tree: Arc::new(RwLock::new(tree)),
            backends,
            routes: RwLock::new(HashMap::new()),
            secrets: RwLock::new(HashSet::new()),
            refusals: opts.refusals.clone(),
            pool: Pool::new(opts.threads)?,
            handles: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            read_only: opts.read_only,
            uid: opts.uid,
            gid: opts.gid,
        };
        fs.resync();
        Ok(fs)
    }

    fn tree(&self) -> RwLockReadGuard<'_, Tree> {
        self.tree.read().unwrap_or_else(|p| p.into_inner())
    }

    fn tree_mut(&self) -> RwLockWriteGuard<'_, Tree> {
        self.tree.write().unwrap_or_else(|p| p.into_inner())
    }

    fn handles(&self) -> MutexGuard<'_, HashMap<u64, Handle>> {
        self.handles.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn new_handle(&self, h: Handle) -> FileHandle {
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.handles().insert(fh, h);
        FileHandle(fh)
    }

    /// Brings the live part of the tree in line with the backends' entries.
    fn resync(&self) {
        let mut entries = Vec::new();
        let mut routes = HashMap::new();
        for (i, b) in self.backends.iter().enumerate() {
            for e in b.entries() {
                routes.insert(e.path.clone(), i);
                entries.push((e, i));
            }
        }
        let secrets = entries
            .iter()
            .filter(|(e, _)| matches!(e.kind, LiveKind::File { secret: true, .. }))
            .map(|(e, _)| e.path.clone())
            .collect();
        *self.routes.write().unwrap_or_else(|p| p.into_inner()) = routes;
        *self.secrets.write().unwrap_or_else(|p| p.into_inner()) = secrets;
        let mut tree = self.tree_mut();
        let wanted: HashMap<&str, &LiveKind> = entries
            .iter()
            .map(|(e, _)| (e.path.as_str(), &e.kind))
            .collect();
        for (path, ino) in tree.live_nodes() {
            if !wanted.contains_key(path.as_str()) {
                tree.remove(ino);
            }
        }
        let now = SystemTime::now();
        let (dir_mode, file_mode) = if self.read_only {
            (0o555, 0o444)
        } else {
            (0o755, 0o644)
        };
        for (e, backend) in &entries {
            if tree.resolve(&e.path).is_some() {
                continue;
            }
            match &e.kind {
                LiveKind::Dir => {
                    tree.ensure_dir(&e.path, dir_mode, now, true);
                }
                LiveKind::File { writable, secret } => {
                    let mode = match (*writable, *secret) {
                        (true, false) => file_mode,
                        (true, true) => file_mode & 0o600,
                        (false, false) => 0o444,
                        (false, true) => 0o400,
                    };
                    // Group and others never get more than the package file allows.
                    let ceiling = self
                        .backends
                        .get(*backend)
                        .map_or(0o777, |b| b.mode_ceiling(&e.path));
                    let mode = (mode & 0o700) | (mode & ceiling & 0o077);
                    tree.add(
                        &e.path,
                        NodeKind::File(FileKind::Live(e.path.clone())),
                        mode,
                        now,
                        true,
                    );
                }
                LiveKind::Symlink(target) => {
                    tree.add(&e.path, NodeKind::Symlink(target.clone()), 0o777, now, true);
                }
            }
        }
    }

    /// Current bytes of a live file: the open handle's buffer if it has one, else the
    /// backend's.
    fn live_bytes(&self, path: &str, fh: Option<u64>) -> Result<Arc<[u8]>> {
        if let Some(fh) = fh
            && let Some(Handle::Live(LiveHandle { buf: Some(buf), .. })) = self.handles().get(&fh)
        {
            return Ok(Arc::from(buf.as_slice()));
        }
        self.backend_for(path)?.read(path)
    }

    /// The backend serving `path` (for a path that does not exist yet, the one serving its
    /// folder).
    fn backend_for(&self, path: &str) -> Result<&Arc<dyn Backend>> {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        let folder = path.rsplit_once('/').map_or("", |(d, _)| d);
        routes
            .get(path)
            .or_else(|| routes.get(folder))
            .and_then(|&i| self.backends.get(i))
            .ok_or_else(|| {
                Error::io(
                    path.to_string(),
                    std::io::Error::from_raw_os_error(libc::ENOENT),
                )
            })
    }

    /// The allocated bytes a `stat` of `disk` reports: counted in place when that is quick
    /// (within [`INLINE_COUNTED_EXTENTS`] extents), else `None` (fully allocated, which is
    /// never wrong for readers) while a worker counts them for later `stat`s. The count
    /// walks the disk's tables, so the session thread does only a bounded part of it.
    fn allocated_bytes(&self, disk: &Arc<FlatDisk>) -> Option<u64> {
        let known = disk.allocated_bytes_within(INLINE_COUNTED_EXTENTS);
        if known.is_none() && disk.claim_count() {
            let disk = disk.clone();
            self.pool.read(move || {
                disk.allocated_bytes();
            });
        }
        known
    }

    fn attr(&self, tree: &Tree, ino: u64, node: &Node, fh: Option<u64>) -> (FileAttr, Duration) {
        let allocated = match &node.kind {
            NodeKind::File(FileKind::Static(Content::Disk(disk))) => self.allocated_bytes(disk),
            _ => None,
        };
        let (kind, size, blksize, nlink, ttl) = match &node.kind {
            NodeKind::Dir(children) => {
                let subdirs = children
                    .values()
                    .filter(|&&c| tree.get(c).is_some_and(Node::is_dir))
                    .count();
                (
                    FileType::Directory,
                    0,
                    FILE_BLKSIZE,
                    2 + subdirs as u32,
                    if node.live { LIVE_TTL } else { STATIC_TTL },
                )
            }
            NodeKind::File(FileKind::Static(content)) => {
                let blk = if matches!(content, Content::Disk(_)) {
                    DISK_BLKSIZE
                } else {
                    FILE_BLKSIZE
                };
                (
                    FileType::RegularFile,
                    content.reader().len(),
                    blk,
                    1,
                    STATIC_TTL,
                )
            }
            NodeKind::File(FileKind::Live(path)) => {
                let size = self
                    .live_bytes(path, fh)
                    .map(|b| b.len() as u64)
                    .unwrap_or(0);
                (FileType::RegularFile, size, FILE_BLKSIZE, 1, LIVE_TTL)
            }
            NodeKind::File(FileKind::Scratch(data)) => (
                FileType::RegularFile,
                data.len() as u64,
                FILE_BLKSIZE,
                1,
                LIVE_TTL,
            ),
            NodeKind::Symlink(target) => (
                FileType::Symlink,
                target.len() as u64,
                FILE_BLKSIZE,
                1,
                LIVE_TTL,
            ),
        };
        let attr = FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: allocated.unwrap_or(size).div_ceil(512),
            atime: node.mtime,
            mtime: node.mtime,
            ctime: node.mtime,
            crtime: node.mtime,
            kind,
            perm: (node.mode & 0o7777) as u16,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize,
            flags: 0,
        };
        (attr, ttl)
    }

    fn reply_entry(&self, ino: u64, reply: ReplyEntry) {
        let tree = self.tree();
        match tree.get(ino) {
            Some(node) => {
                let (attr, ttl) = self.attr(&tree, ino, node, None);
                reply.entry(&ttl, &attr, fuser::Generation(0));
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn reply_attr(&self, ino: u64, fh: Option<u64>, reply: ReplyAttr) {
        let tree = self.tree();
        match tree.get(ino) {
            Some(node) => {
                let (attr, ttl) = self.attr(&tree, ino, node, fh);
                reply.attr(&ttl, &attr);
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    /// Persists a live handle's buffer if it changed: at flush and fsync when something was
    /// written, at release whatever made it dirty (a bare truncation, say).
    fn store_handle(&self, fh: u64, releasing: bool) -> Result<()> {
        let pending = match self.handles().get_mut(&fh) {
            Some(Handle::Live(h)) => {
                if let Some(why) = &h.refused {
                    return Err(Error::new(ErrorKind::InvalidEdit(why.clone())));
                }
                match (&h.buf, h.dirty && (h.written || releasing)) {
                    (Some(buf), true) => Some((h.path.clone(), buf.clone())),
                    _ => None,
                }
            }
            _ => None,
        };
        let Some((path, data)) = pending else {
            return Ok(());
        };
        self.store(&path, &data)?;
        if let Some(Handle::Live(h)) = self.handles().get_mut(&fh)
            && h.buf.as_deref() == Some(data.as_slice())
        {
            h.dirty = false;
        }
        Ok(())
    }

    fn store(&self, path: &str, data: &[u8]) -> Result<()> {
        let backend = self.writable_backend(path)?;
        if let Err(e) = backend.store(path, data) {
            self.note_refusal(path, data, &e);
            return Err(e);
        }
        self.resync();
        let ino = self.tree().resolve(path);
        if let Some(ino) = ino {
            let mut tree = self.tree_mut();
            if let Some(n) = tree.get_mut(ino) {
                n.mtime = SystemTime::now();
            }
        }
        Ok(())
    }

    fn writable_backend(&self, path: &str) -> Result<&Arc<dyn Backend>> {
        if self.read_only {
            return Err(Error::new(ErrorKind::ReadOnly(format!(
                "{path}: the mount is read-only"
            ))));
        }
        self.backend_for(path)
    }

    /// Keeps a refused write of `data` to `path` for the status report. The status files
    /// are world-readable, so the value is hidden for a file that holds a secret or that
    /// others may not read.
    fn note_refusal(&self, path: &str, data: &[u8], e: &Error) {
        let secret = self
            .secrets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(path);
        let private = {
            let tree = self.tree();
            tree.resolve(path)
                .and_then(|ino| tree.get(ino))
                .is_none_or(|n| n.mode & 0o004 == 0)
        };
        self.refusals
            .record(path, data, secret || private, &e.to_string());
    }

    /// Logs a failed operation once and returns its errno.
    fn fail(&self, op: &str, path: &str, e: &Error) -> Errno {
        match e.kind() {
            ErrorKind::InvalidEdit(_) => log::warn!("{op} /{path}: refused: {e}"),
            _ => log::error!("{op} /{path}: {e}"),
        }
        errno_of(e)
    }

    fn name_str(name: &OsStr) -> std::result::Result<&str, Errno> {
        let n = name.to_str().ok_or(Errno::EINVAL)?;
        if n.is_empty() || n.contains('/') || n == "." || n == ".." {
            return Err(Errno::EINVAL);
        }
        Ok(n)
    }

    fn check_writable(&self) -> std::result::Result<(), Errno> {
        if self.read_only {
            Err(Errno::EROFS)
        } else {
            Ok(())
        }
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

/// The path of `ino` in the shared tree, for a worker's log line (a lock poisoned by a
/// contained panic still names it).
fn path_in(tree: &RwLock<Tree>, ino: u64) -> String {
    tree.read().unwrap_or_else(|p| p.into_inner()).path_of(ino)
}

/// Answers an lseek: the offset found, or ENXIO when there is none.
fn reply_seek(reply: ReplyLseek, at: Option<u64>) {
    match at {
        Some(at) => reply.offset(i64::try_from(at).unwrap_or(i64::MAX)),
        None => reply.error(Errno::ENXIO),
    }
}

/// Applies a write of `data` at `offset` to `buf`, bounded by `max`.
fn write_into(
    buf: &mut Vec<u8>,
    offset: u64,
    data: &[u8],
    max: u64,
) -> std::result::Result<(), Errno> {
    let end = offset.checked_add(data.len() as u64).ok_or(Errno::EFBIG)?;
    if end > max {
        return Err(Errno::EFBIG);
    }
    // OK to cast: end <= max, a small bound.
    let (start, end) = (offset as usize, end as usize);
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[start..end].copy_from_slice(data);
    Ok(())
}

/// Slice of `data` for a read of `size` bytes at `offset`.
fn read_slice(data: &[u8], offset: u64, size: u32) -> &[u8] {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(data.len());
    let end = start.saturating_add(size as usize).min(data.len());
    &data[start..end]
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
        // O_TRUNC arrives with open() instead of as a separate truncate.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_ATOMIC_O_TRUNC);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = name.to_str().and_then(|n| self.tree().lookup(parent.0, n));
        match found {
            Some(ino) => self.reply_entry(ino, reply),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        self.reply_attr(ino.0, fh.map(|f| f.0), reply);
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
        let ino = ino.0;
        let kind_path = {
            let tree = self.tree();
            match tree.get(ino).map(|n| &n.kind) {
                None => return reply.error(Errno::ENOENT),
                Some(NodeKind::File(FileKind::Live(p))) => Some(p.clone()),
                _ => None,
            }
        };
        if let Some(size) = size {
            if let Err(e) = self.check_writable() {
                return reply.error(e);
            }
            match &kind_path {
                Some(path) => {
                    if let Err(errno) = self.truncate_live(path, fh.map(|f| f.0), size) {
                        return reply.error(errno);
                    }
                }
                None => {
                    let mut tree = self.tree_mut();
                    match tree.get_mut(ino).map(|n| &mut n.kind) {
                        Some(NodeKind::File(FileKind::Scratch(data))) => {
                            if size > MAX_SCRATCH_BYTES {
                                return reply.error(Errno::EFBIG);
                            }
                            // OK to cast: size <= MAX_SCRATCH_BYTES.
                            data.resize(size as usize, 0);
                        }
                        Some(NodeKind::Dir(_)) => return reply.error(Errno::EISDIR),
                        _ => return reply.error(Errno::EACCES),
                    }
                }
            }
        }
        {
            let mut tree = self.tree_mut();
            if let Some(node) = tree.get_mut(ino) {
                let scratch = matches!(node.kind, NodeKind::File(FileKind::Scratch(_)));
                // Editors copy modes and times onto the files they write; they matter only
                // for scratch files (settings keep their modes, members are immutable).
                if scratch && let Some(m) = mode {
                    node.mode = m & 0o7777;
                }
                if scratch || kind_path.is_some() {
                    match mtime {
                        Some(TimeOrNow::SpecificTime(t)) => node.mtime = t,
                        Some(TimeOrNow::Now) => node.mtime = SystemTime::now(),
                        None => {}
                    }
                }
            }
        }
        self.reply_attr(ino, fh.map(|f| f.0), reply);
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.tree().get(ino.0).map(|n| &n.kind) {
            Some(NodeKind::Symlink(target)) => reply.data(target.as_bytes()),
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let writing = flags.acc_mode() != OpenAccMode::O_RDONLY;
        let truncate = flags.0 & libc::O_TRUNC != 0;
        let tree = self.tree();
        let Some(node) = tree.get(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        match &node.kind {
            NodeKind::File(FileKind::Static(_)) => {
                if writing {
                    return reply.error(if self.read_only {
                        Errno::EROFS
                    } else {
                        Errno::EACCES
                    });
                }
                drop(tree);
                reply.opened(self.new_handle(Handle::Plain), FopenFlags::FOPEN_KEEP_CACHE);
            }
            NodeKind::File(FileKind::Live(path)) => {
                let path = path.clone();
                let writable = node.mode & 0o200 != 0;
                drop(tree);
                if writing && (self.read_only || !writable) {
                    return reply.error(if self.read_only {
                        Errno::EROFS
                    } else {
                        Errno::EACCES
                    });
                }
                let h = Handle::Live(LiveHandle::new(path, writing && truncate));
                reply.opened(self.new_handle(h), FopenFlags::FOPEN_DIRECT_IO);
            }
            NodeKind::File(FileKind::Scratch(_)) => {
                drop(tree);
                if writing
                    && truncate
                    && let Some(NodeKind::File(FileKind::Scratch(d))) =
                        self.tree_mut().get_mut(ino.0).map(|n| &mut n.kind)
                {
                    d.clear();
                }
                reply.opened(
                    self.new_handle(Handle::Scratch),
                    FopenFlags::FOPEN_DIRECT_IO,
                );
            }
            NodeKind::Dir(_) => reply.error(Errno::EISDIR),
            NodeKind::Symlink(_) => reply.error(Errno::ELOOP),
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
        let content = {
            let tree = self.tree();
            match tree.get(ino.0).map(|n| &n.kind) {
                Some(NodeKind::File(FileKind::Static(content))) => content.clone(),
                Some(NodeKind::File(FileKind::Scratch(data))) => {
                    return reply.data(read_slice(data, offset, size));
                }
                Some(NodeKind::File(FileKind::Live(path))) => {
                    let path = path.clone();
                    drop(tree);
                    return match self.live_bytes(&path, Some(fh.0)) {
                        Ok(bytes) => reply.data(read_slice(&bytes, offset, size)),
                        Err(e) => reply.error(self.fail("read", &path, &e)),
                    };
                }
                Some(NodeKind::Dir(_)) => return reply.error(Errno::EISDIR),
                Some(NodeKind::Symlink(_)) => return reply.error(Errno::EINVAL),
                None => return reply.error(Errno::ENOENT),
            }
        };
        if let Content::Disk(disk) = &content {
            for unit in disk.note_read(offset, u64::from(size)) {
                let disk = disk.clone();
                self.pool.read_ahead(move || disk.prefetch(unit));
            }
        }
        let tree = self.tree.clone();
        self.pool.read(move || {
            contain::test_panic_point("read", || path_in(&tree, ino.0));
            with_read_buffer(size as usize, |buf| {
                match content.reader().read_at(offset, buf) {
                    Ok(n) => reply.data(&buf[..n]),
                    Err(e) => {
                        let path = path_in(&tree, ino.0);
                        log::error!("read /{path} at offset {offset}: {e}");
                        reply.error(errno_of(&e));
                    }
                }
            })
        });
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
        let live_path = match self.tree().get(ino.0).map(|n| &n.kind) {
            Some(NodeKind::File(FileKind::Live(p))) => Some(p.clone()),
            Some(NodeKind::File(FileKind::Scratch(_))) => None,
            Some(_) => return reply.error(Errno::EACCES),
            None => return reply.error(Errno::ENOENT),
        };
        let written = data.len() as u32;
        match live_path {
            None => {
                let mut tree = self.tree_mut();
                if let Some(node) = tree.get_mut(ino.0)
                    && let NodeKind::File(FileKind::Scratch(d)) = &mut node.kind
                {
                    if let Err(e) = write_into(d, offset, data, MAX_SCRATCH_BYTES) {
                        return reply.error(e);
                    }
                    node.mtime = SystemTime::now();
                }
                reply.written(written);
            }
            Some(path) => match self.write_live(&path, fh.0, offset, data) {
                Ok(()) => reply.written(written),
                Err(errno) => reply.error(errno),
            },
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.reply_store(fh.0, "close", reply);
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.reply_store(fh.0, "fsync", reply);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // Normally flush already stored the content; this catches bare truncations and
        // writers that never flushed (mmap). Errors here cannot reach the program any more,
        // and a refused value was already reported: log only new failures.
        let refused =
            matches!(self.handles().get(&fh.0), Some(Handle::Live(h)) if h.refused.is_some());
        if !refused && let Err(e) = self.store_handle(fh.0, true) {
            let path = self.handle_path(fh.0);
            let _ = self.fail("release", &path, &e);
        }
        self.handles().remove(&fh.0);
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
        if let Err(e) = self.check_writable() {
            return reply.error(e);
        }
        let name = match Self::name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let existing = self.tree().lookup(parent.0, name);
        let ino = match existing {
            // The kernel may believe a live file is gone after an editor renamed it away
            // (vim's backup dance): creating it again opens the setting for rewriting.
            Some(ino) if flags & libc::O_EXCL == 0 => ino,
            Some(_) => return reply.error(Errno::EEXIST),
            None => {
                let mut tree = self.tree_mut();
                if tree.len() >= MAX_SCRATCH_FILES + 4096 {
                    return reply.error(Errno::ENOSPC);
                }
                match tree.add_scratch(parent.0, name, mode & !umask) {
                    Some(ino) => ino,
                    None => return reply.error(Errno::ENOTDIR),
                }
            }
        };
        let handle = {
            let tree = self.tree();
            match tree.get(ino).map(|n| (&n.kind, n.mode)) {
                Some((NodeKind::File(FileKind::Live(path)), mode)) if mode & 0o200 != 0 => {
                    Handle::Live(LiveHandle::new(path.clone(), true))
                }
                Some((NodeKind::File(FileKind::Scratch(_)), _)) => Handle::Scratch,
                Some((NodeKind::Dir(_), _)) => return reply.error(Errno::EISDIR),
                _ => return reply.error(Errno::EACCES),
            }
        };
        if matches!(handle, Handle::Scratch)
            && flags & libc::O_TRUNC != 0
            && let Some(NodeKind::File(FileKind::Scratch(d))) =
                self.tree_mut().get_mut(ino).map(|n| &mut n.kind)
        {
            d.clear();
        }
        let fh = self.new_handle(handle);
        let tree = self.tree();
        let Some(node) = tree.get(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let (attr, ttl) = self.attr(&tree, ino, node, Some(fh.0));
        reply.created(
            &ttl,
            &attr,
            fuser::Generation(0),
            fh,
            FopenFlags::FOPEN_DIRECT_IO,
        );
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
        if let Err(e) = self.check_writable() {
            return reply.error(e);
        }
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EPERM);
        }
        let name = match Self::name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let ino = self.tree_mut().add_scratch(parent.0, name, mode & !umask);
        match ino {
            Some(ino) => self.reply_entry(ino, reply),
            None => reply.error(Errno::EEXIST),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if let Err(e) = self.check_writable() {
            return reply.error(e);
        }
        let mut tree = self.tree_mut();
        let Some(ino) = name.to_str().and_then(|n| tree.lookup(parent.0, n)) else {
            return reply.error(Errno::ENOENT);
        };
        match tree.get(ino).map(|n| &n.kind) {
            Some(NodeKind::File(FileKind::Scratch(_))) => {
                tree.remove(ino);
                reply.ok();
            }
            Some(NodeKind::Dir(_)) => reply.error(Errno::EISDIR),
            // Members, flat disks and settings cannot be deleted.
            _ => reply.error(Errno::EPERM),
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
        if let Err(e) = self.check_writable() {
            return reply.error(e);
        }
        let name = match Self::name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let path = {
            let tree = self.tree();
            if tree.lookup(parent.0, name).is_some() {
                return reply.error(Errno::EEXIST);
            }
            let dir = tree.path_of(parent.0);
            if dir.is_empty() {
                name.to_string()
            } else {
                format!("{dir}/{name}")
            }
        };
        let result = self.writable_backend(&path).and_then(|b| b.mkdir(&path));
        match result {
            Ok(()) => {
                self.resync();
                let ino = self.tree().resolve(&path);
                match ino {
                    Some(ino) => self.reply_entry(ino, reply),
                    None => reply.error(Errno::EIO),
                }
            }
            Err(e) => reply.error(self.fail("mkdir", &path, &e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if let Err(e) = self.check_writable() {
            return reply.error(e);
        }
        let path = {
            let tree = self.tree();
            let Some(ino) = name.to_str().and_then(|n| tree.lookup(parent.0, n)) else {
                return reply.error(Errno::ENOENT);
            };
            match tree.get(ino) {
                Some(n) if n.is_dir() && n.live => tree.path_of(ino),
                Some(n) if n.is_dir() => return reply.error(Errno::EPERM),
                _ => return reply.error(Errno::ENOTDIR),
            }
        };
        match self.writable_backend(&path).and_then(|b| b.rmdir(&path)) {
            Ok(()) => {
                self.resync();
                reply.ok();
            }
            Err(e) => reply.error(self.fail("rmdir", &path, &e)),
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
        if let Err(e) = self.check_writable() {
            return reply.error(e);
        }
        let (name, newname) = match (Self::name_str(name), Self::name_str(newname)) {
            (Ok(a), Ok(b)) => (a, b),
            _ => return reply.error(Errno::EINVAL),
        };
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

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.tree().get(ino.0).map(|n| (n.is_dir(), n.live)) {
            Some((true, live)) => {
                let flags = if live {
                    FopenFlags::empty()
                } else {
                    FopenFlags::FOPEN_CACHE_DIR
                };
                reply.opened(FileHandle(0), flags)
            }
            Some((false, _)) => reply.error(Errno::ENOTDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let tree = self.tree();
        let Some(node) = tree.get(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let NodeKind::Dir(children) = &node.kind else {
            return reply.error(Errno::ENOTDIR);
        };
        let dots = [
            (ino.0, FileType::Directory, "."),
            (node.parent, FileType::Directory, ".."),
        ];
        let entries = dots
            .into_iter()
            .chain(children.iter().map(|(name, &child)| {
                let kind = match tree.get(child).map(|n| &n.kind) {
                    Some(NodeKind::Dir(_)) => FileType::Directory,
                    Some(NodeKind::Symlink(_)) => FileType::Symlink,
                    _ => FileType::RegularFile,
                };
                (child, kind, name.as_str())
            }));
        for (i, (child, kind, name)) in entries
            .enumerate()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
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
        let tree = self.tree();
        let blocks = tree.total_bytes().div_ceil(u64::from(STATFS_BSIZE));
        reply.statfs(
            blocks,
            0,
            0,
            tree.len() as u64,
            0,
            STATFS_BSIZE,
            255,
            STATFS_BSIZE,
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
        let found = {
            let tree = self.tree();
            match tree.get(ino.0).map(|n| &n.kind) {
                Some(NodeKind::File(FileKind::Static(Content::Disk(disk)))) => {
                    // The walk depends on the disk's tables (bounded, but it may read them):
                    // it runs on a worker, never on the session thread.
                    let disk = disk.clone();
                    drop(tree);
                    let tree = self.tree.clone();
                    return self.pool.read(move || match disk.seek(offset, data) {
                        Ok(at) => reply_seek(reply, at),
                        Err(e) => {
                            let path = path_in(&tree, ino.0);
                            log::error!("lseek /{path} at offset {offset}: {e}");
                            reply.error(errno_of(&e));
                        }
                    });
                }
                Some(NodeKind::File(kind)) => {
                    // Members, live and scratch files are all data.
                    let len = match kind {
                        FileKind::Static(c) => c.reader().len(),
                        FileKind::Scratch(d) => d.len() as u64,
                        FileKind::Live(p) => {
                            let p = p.clone();
                            drop(tree);
                            self.live_bytes(&p, Some(fh.0))
                                .map(|b| b.len() as u64)
                                .unwrap_or(0)
                        }
                    };
                    Ok(match (offset < len, data) {
                        (true, true) => Some(offset),
                        (true, false) => Some(len),
                        (false, _) => None,
                    })
                }
                Some(_) => return reply.error(Errno::EINVAL),
                None => return reply.error(Errno::ENOENT),
            }
        };
        match found {
            Ok(at) => reply_seek(reply, at),
            Err(e) => reply.error(self.fail("lseek", &self.tree().path_of(ino.0), &e)),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, _name: &OsStr, _size: u32, reply: ReplyXattr) {
        match self.tree().get(ino.0) {
            Some(_) => reply.error(Errno::ENODATA),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.tree().get(ino.0) {
            // No names: the list is empty (its size is 0 whether or not a buffer was given).
            Some(_) if size == 0 => reply.size(0),
            Some(_) => reply.data(&[]),
            None => reply.error(Errno::ENOENT),
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
        reply.error(Errno::ENOTSUP);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        match self.tree().get(ino.0) {
            Some(_) => reply.error(Errno::ENODATA),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self.tree().get(ino.0) {
            None => reply.error(Errno::ENOENT),
            Some(_) if self.read_only && mask.contains(AccessFlags::W_OK) => {
                reply.error(Errno::EROFS)
            }
            Some(_) => reply.ok(),
        }
    }
}

impl OvaFs {
    /// Stores a handle's new content (flush, fsync) and answers with the outcome.
    fn reply_store(&self, fh: u64, op: &str, reply: ReplyEmpty) {
        match self.store_handle(fh, false) {
            Ok(()) => reply.ok(),
            Err(e) => {
                let path = self.handle_path(fh);
                reply.error(self.fail(op, &path, &e));
            }
        }
    }

    fn handle_path(&self, fh: u64) -> String {
        match self.handles().get(&fh) {
            Some(Handle::Live(h)) => h.path.clone(),
            _ => String::new(),
        }
    }

    /// A write to a live file: into the handle's buffer, then checked as a complete value.
    fn write_live(
        &self,
        path: &str,
        fh: u64,
        offset: u64,
        data: &[u8],
    ) -> std::result::Result<(), Errno> {
        let backend = self
            .writable_backend(path)
            .map_err(|e| errno_of(&e))?
            .clone();
        let current = match self.handles().get(&fh) {
            Some(Handle::Live(h)) => h.buf.clone(),
            _ => return Err(Errno::EBADF),
        };
        let mut buf = match current {
            Some(b) => b,
            None => backend
                .read(path)
                .map_err(|e| self.fail("write", path, &e))?
                .to_vec(),
        };
        write_into(&mut buf, offset, data, backend.max_len(path))?;
        let verdict = backend.check(path, &buf);
        let mut handles = self.handles();
        let Some(Handle::Live(h)) = handles.get_mut(&fh) else {
            return Err(Errno::EBADF);
        };
        match verdict {
            Ok(()) => {
                h.buf = Some(buf);
                h.dirty = true;
                h.written = true;
                h.refused = None;
                Ok(())
            }
            Err(e) => {
                // The refused bytes are dropped and nothing of this handle is stored: the old
                // value stays; every close says so again.
                h.refused = Some(e.to_string());
                h.dirty = false;
                drop(handles);
                self.note_refusal(path, &buf, &e);
                Err(self.fail("write", path, &e))
            }
        }
    }

    fn truncate_live(
        &self,
        path: &str,
        fh: Option<u64>,
        size: u64,
    ) -> std::result::Result<(), Errno> {
        let backend = self
            .writable_backend(path)
            .map_err(|e| errno_of(&e))?
            .clone();
        if size > backend.max_len(path) {
            return Err(Errno::EFBIG);
        }
        let current = fh.and_then(|fh| match self.handles().get(&fh) {
            Some(Handle::Live(h)) => h.buf.clone(),
            _ => None,
        });
        let mut buf = match current {
            Some(b) => b,
            None => backend
                .read(path)
                .map_err(|e| self.fail("truncate", path, &e))?
                .to_vec(),
        };
        // OK to cast: size <= max_len, a small bound.
        buf.resize(size as usize, 0);
        match fh {
            Some(fh) => match self.handles().get_mut(&fh) {
                // Checked when written or closed: an editor truncates before it writes.
                Some(Handle::Live(h)) => {
                    h.buf = Some(buf);
                    h.dirty = true;
                    h.written = true;
                    Ok(())
                }
                _ => Err(Errno::EBADF),
            },
            // A truncate without an open file (`truncate -s 0 cpus`) is a complete edit.
            None => self
                .store(path, &buf)
                .map_err(|e| self.fail("truncate", path, &e)),
        }
    }

    fn do_rename(
        &self,
        parent: u64,
        name: &str,
        newparent: u64,
        newname: &str,
        flags: u32,
    ) -> std::result::Result<(), Errno> {
        if flags & libc::RENAME_EXCHANGE != 0 {
            return Err(Errno::EINVAL);
        }
        let (src, dst) = {
            let tree = self.tree();
            let src = tree.lookup(parent, name).ok_or(Errno::ENOENT)?;
            (src, tree.lookup(newparent, newname))
        };
        if dst.is_some() && flags & libc::RENAME_NOREPLACE != 0 {
            return Err(Errno::EEXIST);
        }
        if dst == Some(src) {
            return Ok(());
        }
        enum Src {
            Scratch(Vec<u8>),
            Live(Arc<[u8]>),
            Other,
        }
        let src_kind = {
            let tree = self.tree();
            match tree.get(src).map(|n| &n.kind) {
                Some(NodeKind::File(FileKind::Scratch(d))) => Src::Scratch(d.clone()),
                Some(NodeKind::File(FileKind::Live(p))) => {
                    let p = p.clone();
                    drop(tree);
                    Src::Live(self.live_bytes(&p, None).map_err(|e| errno_of(&e))?)
                }
                _ => Src::Other,
            }
        };
        let dst_live = dst.and_then(|d| match self.tree().get(d).map(|n| &n.kind) {
            Some(NodeKind::File(FileKind::Live(p))) => Some(p.clone()),
            _ => None,
        });
        match (src_kind, dst, dst_live) {
            // A temporary file landing on a live file is a write of that file (sed -i, vim
            // with backupcopy=no, atomic-save editors).
            (Src::Scratch(data), Some(_), Some(path)) => {
                self.store(&path, &data)
                    .map_err(|e| self.fail("rename", &path, &e))?;
                self.tree_mut().remove(src);
                Ok(())
            }
            (Src::Scratch(_), dst, None) => {
                let mut tree = self.tree_mut();
                if let Some(d) = dst {
                    match tree.get(d).map(|n| &n.kind) {
                        Some(NodeKind::File(FileKind::Scratch(_))) => tree.remove(d),
                        Some(NodeKind::Dir(_)) => return Err(Errno::EISDIR),
                        _ => return Err(Errno::EPERM),
                    }
                }
                if tree.rename(src, newparent, newname) {
                    Ok(())
                } else {
                    Err(Errno::ENOTDIR)
                }
            }
            // Moving a live file away (vim's backup by rename) leaves it in place and makes a
            // scratch copy under the new name: settings cannot vanish.
            (Src::Live(bytes), None, _) => {
                let mut tree = self.tree_mut();
                let ino = tree
                    .add_scratch(newparent, newname, 0o644)
                    .ok_or(Errno::ENOTDIR)?;
                if let Some(NodeKind::File(FileKind::Scratch(d))) =
                    tree.get_mut(ino).map(|n| &mut n.kind)
                {
                    *d = bytes.to_vec();
                }
                Ok(())
            }
            _ => Err(Errno::EPERM),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_bounded_and_fill_gaps_with_zeros() {
        let mut b = b"ab".to_vec();
        write_into(&mut b, 4, b"xy", 10).unwrap();
        assert_eq!(b, b"ab\0\0xy");
        assert_eq!(write_into(&mut b, 9, b"xy", 10), Err(Errno::EFBIG));
        assert_eq!(write_into(&mut b, u64::MAX, b"x", 10), Err(Errno::EFBIG));
    }

    #[test]
    fn reads_clamp_to_the_data() {
        assert_eq!(read_slice(b"hello", 1, 3), b"ell");
        assert_eq!(read_slice(b"hello", 4, 100), b"o");
        assert_eq!(read_slice(b"hello", u64::MAX, 1), b"");
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
    }
}
