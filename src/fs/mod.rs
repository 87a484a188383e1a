//! The FUSE glue: the node table, attributes, open flags, read scheduling and errno mapping.
//!
//! Everything served is immutable for the life of the mount, so attributes and entries get
//! a long TTL and files open with `FOPEN_KEEP_CACHE`: the kernel page cache keeps what was
//! read, across opens. Reads run on a worker pool (see [`pool`]) in buffered mode, so the
//! kernel's concurrent read-ahead decodes on every core; sequential readers of a flat disk
//! also get units decoded ahead of them. This is the only layer that knows errnos.

pub mod pool;
pub mod tree;

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, KernelConfig,
    LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, Request,
};

use crate::error::{Error, ErrorKind};
use pool::Pool;
use tree::{Content, Node, NodeKind, Tree};

/// Attribute and entry TTL: nothing in the tree changes while mounted.
const TTL: Duration = Duration::from_secs(3600);

/// `st_blksize` advertised for flat disks: large, so that `cp` and friends read in big
/// chunks (each chunk becomes concurrent kernel read-ahead requests).
const DISK_BLKSIZE: u32 = 1 << 20;

/// `st_blksize` for other files.
const FILE_BLKSIZE: u32 = 64 << 10;

/// Kernel background requests allowed in flight (read-ahead is background work).
const MAX_BACKGROUND: u16 = 64;

/// Block size reported by statfs.
const STATFS_BSIZE: u32 = 4096;

/// The mounted filesystem.
pub struct OvaFs {
    tree: Arc<Tree>,
    pool: Pool,
    uid: u32,
    gid: u32,
}

impl OvaFs {
    /// A filesystem serving `tree` with `threads` read workers; files belong to `uid:gid`.
    pub fn new(tree: Tree, threads: usize, uid: u32, gid: u32) -> std::io::Result<Self> {
        Ok(OvaFs {
            tree: Arc::new(tree),
            pool: Pool::new(threads)?,
            uid,
            gid,
        })
    }

    fn attr(&self, ino: u64, node: &Node) -> FileAttr {
        let (kind, size, blksize, nlink) = match &node.kind {
            NodeKind::Dir(children) => {
                let subdirs = children
                    .values()
                    .filter(|&&c| {
                        matches!(self.tree.get(c).map(|n| &n.kind), Some(NodeKind::Dir(_)))
                    })
                    .count();
                (FileType::Directory, 0, FILE_BLKSIZE, 2 + subdirs as u32)
            }
            NodeKind::File { content, size } => {
                let blk = if matches!(content, Content::Disk(_)) {
                    DISK_BLKSIZE
                } else {
                    FILE_BLKSIZE
                };
                (FileType::RegularFile, *size, blk, 1)
            }
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
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
        }
    }
}

/// Maps an error to the errno the caller sees. One table for the whole filesystem: OS
/// errors keep their number, everything else (corrupt or truncated data) is EIO.
pub fn errno_of(err: &Error) -> Errno {
    match err.kind() {
        ErrorKind::Io { source, .. } => source
            .raw_os_error()
            .map(Errno::from_i32)
            .unwrap_or(Errno::EIO),
        _ => Errno::EIO,
    }
}

impl Filesystem for OvaFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_background(MAX_BACKGROUND);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = name
            .to_str()
            .and_then(|n| self.tree.lookup(parent.0, n))
            .and_then(|ino| Some((ino, self.tree.get(ino)?)));
        match found {
            Some((ino, node)) => reply.entry(&TTL, &self.attr(ino, node), fuser::Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.tree.get(ino.0) {
            Some(node) => reply.attr(&TTL, &self.attr(ino.0, node)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.tree.get(ino.0).map(|n| &n.kind) {
            Some(NodeKind::File { .. }) => {
                if flags.acc_mode() != OpenAccMode::O_RDONLY {
                    reply.error(Errno::EROFS);
                } else {
                    reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
                }
            }
            Some(NodeKind::Dir(_)) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let content = match self.tree.get(ino.0).map(|n| &n.kind) {
            Some(NodeKind::File { content, .. }) => content.clone(),
            Some(NodeKind::Dir(_)) => return reply.error(Errno::EISDIR),
            None => return reply.error(Errno::ENOENT),
        };
        if let Content::Disk(disk) = &content {
            for unit in disk.note_read(offset, u64::from(size)) {
                let disk = disk.clone();
                self.pool.read_ahead(move || disk.prefetch(unit));
            }
        }
        let tree = self.tree.clone();
        self.pool.read(move || {
            let mut buf = vec![0u8; size as usize];
            match content.reader().read_at(offset, &mut buf) {
                Ok(n) => reply.data(&buf[..n]),
                Err(e) => {
                    log::error!("read {} at offset {offset}: {e}", path_of(&tree, ino.0));
                    reply.error(errno_of(&e));
                }
            }
        });
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.tree.get(ino.0).map(|n| &n.kind) {
            Some(NodeKind::Dir(_)) => reply.opened(FileHandle(0), FopenFlags::FOPEN_CACHE_DIR),
            Some(NodeKind::File { .. }) => reply.error(Errno::ENOTDIR),
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
        let Some(node) = self.tree.get(ino.0) else {
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
                let kind = match self.tree.get(child).map(|n| &n.kind) {
                    Some(NodeKind::Dir(_)) => FileType::Directory,
                    _ => FileType::RegularFile,
                };
                (child, kind, name.as_str())
            }));
        for (i, (child, kind, name)) in entries.enumerate().skip(offset as usize) {
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

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let blocks = self.tree.total_bytes().div_ceil(u64::from(STATFS_BSIZE));
        reply.statfs(
            blocks,
            0,
            0,
            self.tree.len() as u64,
            0,
            STATFS_BSIZE,
            255,
            STATFS_BSIZE,
        );
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: fuser::AccessFlags, reply: ReplyEmpty) {
        match self.tree.get(ino.0) {
            None => reply.error(Errno::ENOENT),
            Some(_) if mask.contains(fuser::AccessFlags::W_OK) => reply.error(Errno::EROFS),
            Some(_) => reply.ok(),
        }
    }
}

/// The path of `ino` inside the mount, for log lines.
fn path_of(tree: &Tree, ino: u64) -> String {
    let mut parts = Vec::new();
    let mut cur = ino;
    while cur != tree::ROOT_INO {
        match tree.get(cur) {
            Some(n) if parts.len() < 256 => {
                parts.push(n.name.clone());
                cur = n.parent;
            }
            _ => break,
        }
    }
    parts.reverse();
    format!("/{}", parts.join("/"))
}
