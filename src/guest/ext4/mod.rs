//! ext2, ext3 and ext4, read by ovafs itself (no crate, no kernel): the superblock and
//! group descriptors (32- or 64-byte, `meta_bg` placement, `flex_bg` by following them),
//! inodes (with `metadata_csum` checksums verified), extent trees and block maps (holes and
//! unwritten extents read as zeros), inline data (files and directories in the inode),
//! directories by a linear scan of their blocks (htree ones too; checksum tails verified),
//! fast and slow symbolic links. Read-only; the journal is not replayed (a warning is
//! logged when the superblock says it needs recovery).
//!
//! Nothing here panics on any input and nothing is sized by what the image claims: a read
//! fills the caller's buffer only, a directory scan reads at most [`MAX_DIR_BYTES`] and
//! lists at most [`MAX_DIR_ENTRIES`], a link target at most [`MAX_LINK_TARGET`]. The file
//! system is `Send + Sync` directly: every read goes through [`ReadAt::read_at`], and the
//! few caches (inodes, metadata blocks, resolved paths) are small LRUs behind mutexes.

pub mod superblock;

mod csum;
mod dir;
mod inode;
mod map;

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use lru::LruCache;

use crate::error::{Error, ErrorKind, Refusal, Result};
use crate::guest::{EntryKind, GuestEntry, GuestFs, GuestStat, MAX_DIR_ENTRIES};
use crate::io::ReadAt;

use inode::Inode;
use map::{Blocks, Run};
use superblock::Geometry;

pub use superblock::probe;

/// What goes wrong reading an ext2/3/4 file system, besides a missing path or a wrong kind
/// (those are [`crate::error::Refusal`]s).
#[derive(Debug, thiserror::Error)]
pub enum Ext4FsError {
    /// No ext2/3/4 superblock magic at byte 1080.
    #[error("not an ext2/ext3/ext4 file system (no superblock magic)")]
    NotExt4,
    /// The superblock describes an impossible file system.
    #[error("ext4 superblock: {0}")]
    Superblock(&'static str),
    /// The file system uses features ovafs cannot read (their mke2fs names).
    #[error("ext4: unsupported feature: {0} (ovafs reads none of this file system)")]
    Unsupported(String),
    /// A structure of inode `ino` (its record, extent tree, block map, directory) is
    /// impossible; 0 for the file system's own structures.
    #[error("ext4: inode {ino}: corrupt {what}")]
    Corrupt {
        /// The inode.
        ino: u32,
        /// What is corrupt.
        what: &'static str,
    },
    /// A `metadata_csum` checksum does not match.
    #[error("ext4: inode {ino}: {what} checksum mismatch")]
    Checksum {
        /// The inode.
        ino: u32,
        /// Whose checksum.
        what: &'static str,
    },
    /// A file ovafs cannot read (encrypted contents).
    #[error("ext4: inode {0}: encrypted contents are not read")]
    Encrypted(u32),
}

impl From<Ext4FsError> for Error {
    fn from(e: Ext4FsError) -> Self {
        Error::layer(e)
    }
}

/// Longest symbolic link target read (Linux's `PATH_MAX`).
const MAX_LINK_TARGET: u64 = 4096;
/// Largest directory listed or looked up in (a million entries of long names fit): a
/// linear scan reads every block the size claims.
const MAX_DIR_BYTES: u64 = 1 << 30;
/// Most components of a path resolved.
const MAX_PATH_COMPONENTS: usize = 4096;
/// Inodes kept decoded.
const INODE_CACHE: usize = 1024;
/// Metadata blocks kept (extent nodes, indirect blocks, descriptor blocks).
const BLOCK_CACHE: usize = 256;
/// Resolved paths kept.
const PATH_CACHE: usize = 65536;
/// The root directory's inode.
const ROOT: u32 = 2;

/// Opens the ext2/3/4 file system in `source` (its superblock and root are read now).
pub fn open(source: Arc<dyn ReadAt>) -> Result<Arc<dyn GuestFs>> {
    let geo = superblock::check(&*source)?;
    let fs = Ext4Fs {
        source,
        geo,
        inodes: cache(INODE_CACHE),
        blocks: cache(BLOCK_CACHE),
        paths: cache(PATH_CACHE),
    };
    if fs.inode(ROOT)?.kind()? != EntryKind::Dir {
        return Err(Ext4FsError::Corrupt {
            ino: ROOT,
            what: "root (not a directory)",
        }
        .into());
    }
    Ok(Arc::new(fs))
}

/// An empty LRU of `n` entries.
fn cache<K: std::hash::Hash + Eq, V>(n: usize) -> Mutex<LruCache<K, V>> {
    Mutex::new(LruCache::new(
        NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN),
    ))
}

/// One opened ext2/3/4 file system.
pub struct Ext4Fs {
    /// The partition.
    source: Arc<dyn ReadAt>,
    /// The checked superblock.
    geo: Geometry,
    /// Decoded inodes by number.
    inodes: Mutex<LruCache<u32, Arc<Inode>>>,
    /// Metadata blocks by number.
    blocks: Mutex<LruCache<u64, Arc<[u8]>>>,
    /// Inode numbers of paths resolved (each through directories only).
    paths: Mutex<LruCache<Vec<Vec<u8>>, u32>>,
}

/// Locks `m`, whose contents stay consistent whatever panicked while holding it (a cache).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Blocks for Ext4Fs {
    fn block_size(&self) -> u64 {
        self.geo.block_size
    }

    fn meta_block(&self, phys: u64) -> Result<Arc<[u8]>> {
        if let Some(b) = lock(&self.blocks).get(&phys) {
            return Ok(Arc::clone(b));
        }
        let mut buf = vec![0u8; self.block_len()];
        self.read_blocks(phys, 1, &mut buf)?;
        let b: Arc<[u8]> = buf.into();
        lock(&self.blocks).put(phys, Arc::clone(&b));
        Ok(b)
    }

    fn csum_seed(&self) -> Option<u32> {
        self.geo.csum_seed
    }
}

impl Ext4Fs {
    /// The block size as a length (at most 64 KiB).
    fn block_len(&self) -> usize {
        usize::try_from(self.geo.block_size).unwrap_or(1024)
    }

    /// Reads `buf` from block `phys` on, failing unless all of `count` blocks from `phys`
    /// are inside the file system (block 0 holds the boot sector and superblock).
    fn read_blocks(&self, phys: u64, count: u64, buf: &mut [u8]) -> Result<()> {
        let end = phys.checked_add(count);
        if phys == 0 || end.is_none_or(|e| e > self.geo.blocks) {
            return Err(Ext4FsError::Corrupt {
                ino: 0,
                what: "block number outside the file system",
            }
            .into());
        }
        let offset = phys
            .checked_mul(self.geo.block_size)
            .ok_or_else(|| Error::overflow("ext4 block offset"))?;
        self.source.read_exact_at(offset, buf)
    }

    /// The first block of group `g`'s inode table, from its descriptor.
    fn inode_table(&self, g: u64) -> Result<u64> {
        let geo = &self.geo;
        let per_block = geo.block_size / geo.desc_size;
        let (block, index) = match geo.first_meta_bg {
            // meta_bg: each meta group's descriptors fill one block, in its first group
            // (after the superblock backup when that group has one).
            Some(first) if g / per_block >= first => {
                let first_group = g / per_block * per_block;
                let start = first_group
                    .checked_mul(geo.blocks_per_group)
                    .and_then(|b| b.checked_add(geo.first_data_block))
                    .and_then(|b| b.checked_add(u64::from(geo.has_super(first_group))));
                (start, g % per_block)
            }
            _ => (
                (geo.first_data_block + 1).checked_add(g / per_block),
                g % per_block,
            ),
        };
        let block = block.ok_or_else(|| Error::overflow("ext4 descriptor block"))?;
        let bytes = self.meta_block(block)?;
        // Both below the block size (at most 64 KiB).
        let at = usize::try_from(index * geo.desc_size).unwrap_or(usize::MAX);
        let lo = map::u32_at(&bytes, at + 0x08);
        let hi = if geo.desc_size >= 64 {
            map::u32_at(&bytes, at + 0x28)
        } else {
            Some(0)
        };
        match (lo, hi) {
            (Some(lo), Some(hi)) => Ok(u64::from(lo) | u64::from(hi) << 32),
            _ => Err(corrupt(0, "group descriptor")),
        }
    }

    /// Inode `ino`, decoded (and its checksum verified).
    fn inode(&self, ino: u32) -> Result<Arc<Inode>> {
        if let Some(i) = lock(&self.inodes).get(&ino) {
            return Ok(Arc::clone(i));
        }
        if ino == 0 || ino > self.geo.inodes {
            return Err(corrupt(ino, "inode number out of range"));
        }
        let index = u64::from(ino - 1);
        let per_group = u64::from(self.geo.inodes_per_group);
        let group = index / per_group;
        if group >= self.geo.groups {
            return Err(corrupt(ino, "inode number beyond the groups"));
        }
        let table = self.inode_table(group)?;
        let size = self.geo.inode_size;
        let offset = table
            .checked_mul(self.geo.block_size)
            .and_then(|t| t.checked_add((index % per_group).checked_mul(size)?))
            .ok_or_else(|| corrupt(ino, "inode table location"))?;
        if table == 0 || table >= self.geo.blocks {
            return Err(corrupt(ino, "inode table location"));
        }
        // At most one block (the inode size is checked against it).
        let mut raw = vec![0u8; usize::try_from(size).unwrap_or(128)];
        self.source.read_exact_at(offset, &mut raw)?;
        let inode = Arc::new(Inode::parse(ino, &raw, self.geo.csum_seed)?);
        lock(&self.inodes).put(ino, Arc::clone(&inode));
        Ok(inode)
    }

    /// The run of `inode`'s blocks from logical block `lblk`.
    fn run(&self, inode: &Inode, lblk: u64) -> Result<Run> {
        if inode.has_extents() {
            map::extent_run(self, inode.ino, inode.generation, &inode.block, lblk)
        } else {
            map::block_map_run(self, inode.ino, &inode.block, lblk)
        }
    }

    /// Reads `inode`'s content at `offset` into `buf`, short only at its size; the bytes
    /// go straight into `buf` (nothing else is allocated for them).
    fn read_content(&self, inode: &Inode, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if inode.flags & inode::ENCRYPT_FL != 0 {
            return Err(Ext4FsError::Encrypted(inode.ino).into());
        }
        let left = inode.size.saturating_sub(offset);
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let Some(buf) = buf.get_mut(..want) else {
            return Ok(0);
        };
        if inode.is_inline() {
            return self.read_inline(inode, offset, buf);
        }
        let bs = self.geo.block_size;
        let mut done = 0usize;
        while done < buf.len() {
            // `done` is below `want`, which is at most what is left of the size.
            let pos = offset + done as u64;
            let within = pos % bs;
            let run = self.run(inode, pos / bs)?;
            let blocks = match run {
                Run::Data { len, .. } | Run::Zeros { len } => len,
            };
            let run_bytes = blocks.saturating_mul(bs).saturating_sub(within);
            let take = usize::try_from(run_bytes)
                .unwrap_or(usize::MAX)
                .min(buf.len() - done);
            let Some(dst) = buf.get_mut(done..done + take) else {
                break;
            };
            match run {
                Run::Zeros { .. } => dst.fill(0),
                Run::Data { phys, .. } => {
                    let count = (within + take as u64).div_ceil(bs);
                    let offset = phys
                        .checked_mul(bs)
                        .and_then(|o| o.checked_add(within))
                        .ok_or_else(|| Error::overflow("ext4 data offset"))?;
                    self.check_range(phys, count)?;
                    self.source.read_exact_at(offset, dst)?;
                }
            }
            done += take;
        }
        Ok(done)
    }

    /// Fails unless `count` blocks from `phys` are inside the file system.
    fn check_range(&self, phys: u64, count: u64) -> Result<()> {
        match phys.checked_add(count) {
            Some(end) if phys != 0 && end <= self.geo.blocks => Ok(()),
            _ => Err(corrupt(0, "block number outside the file system")),
        }
    }

    /// Reads inline content (`i_block`'s 60 bytes, then `system.data`) at `offset`.
    fn read_inline(&self, inode: &Inode, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let total = 60 + inode.inline_rest.len() as u64;
        if inode.size > total {
            return Err(corrupt(inode.ino, "inline data shorter than the size"));
        }
        let mut done = 0;
        let parts = [&inode.block[..], &inode.inline_rest[..]];
        let mut part_start = 0u64;
        for part in parts {
            let part_end = part_start + part.len() as u64;
            let pos = offset + done as u64;
            if pos < part_end && done < buf.len() {
                let from = usize::try_from(pos - part_start).unwrap_or(usize::MAX);
                let src = part.get(from..).unwrap_or_default();
                let n = src.len().min(buf.len() - done);
                if let (Some(d), Some(s)) = (buf.get_mut(done..done + n), src.get(..n)) {
                    d.copy_from_slice(s);
                }
                done += n;
            }
            part_start = part_end;
        }
        Ok(done)
    }

    /// Calls `each` with every entry of directory `dir` until it answers `true`; reads at
    /// most [`MAX_DIR_BYTES`]. A hole in the directory is skipped (as the kernel does).
    fn scan(
        &self,
        dir: &Inode,
        mut each: impl FnMut(dir::RawEntry<'_>) -> Result<bool>,
    ) -> Result<()> {
        let filetype = self.geo.has_filetype();
        if dir.is_inline() {
            // The parent's inode number, then entries to the end of `i_block`, then more in
            // `system.data`.
            for area in [dir.block.get(4..).unwrap_or_default(), &dir.inline_rest[..]] {
                for e in dir::entries(area, dir.ino, filetype)? {
                    if each(e)? {
                        return Ok(());
                    }
                }
            }
            return Ok(());
        }
        if dir.size > MAX_DIR_BYTES {
            return Err(ErrorKind::LimitExceeded {
                what: "ext4 directory",
                value: dir.size,
                limit: MAX_DIR_BYTES,
            }
            .into());
        }
        let bs = self.geo.block_size;
        let mut block = vec![0u8; self.block_len()];
        let mut lblk = 0u64;
        while lblk < dir.size.div_ceil(bs) {
            match self.run(dir, lblk)? {
                Run::Zeros { len } => lblk = lblk.saturating_add(len),
                Run::Data { phys, .. } => {
                    self.read_blocks(phys, 1, &mut block)?;
                    dir::verify_block(&block, dir.ino, dir.generation, self.geo.csum_seed)?;
                    for e in dir::entries(&block, dir.ino, filetype)? {
                        if each(e)? {
                            return Ok(());
                        }
                    }
                    lblk += 1;
                }
            }
        }
        Ok(())
    }

    /// The inode number of `name` in directory `dir`, if there.
    fn lookup(&self, dir: &Inode, name: &[u8]) -> Result<Option<u32>> {
        let mut found = None;
        self.scan(dir, |e| {
            if e.name == name {
                found = Some(e.ino);
            }
            Ok(found.is_some())
        })?;
        Ok(found)
    }

    /// The inode of `path`, every ancestor a directory (a symbolic link in the middle is
    /// refused, never followed); the last component is not followed.
    fn resolve(&self, path: &[Vec<u8>]) -> Result<Arc<Inode>> {
        if path.len() > MAX_PATH_COMPONENTS {
            return Err(refused(path, Refusal::InvalidArgument));
        }
        for c in path {
            if c.is_empty() || c == b"." || c == b".." || c.contains(&b'/') || c.contains(&0) {
                return Err(refused(path, Refusal::InvalidArgument));
            }
        }
        if let Some(&ino) = lock(&self.paths).get(path) {
            return self.inode(ino);
        }
        // The longest prefix resolved before, then one component at a time.
        let mut depth = path.len();
        let mut ino = ROOT;
        while depth > 0 {
            if let Some(&known) = lock(&self.paths).get(path.get(..depth).unwrap_or_default()) {
                ino = known;
                break;
            }
            depth -= 1;
        }
        let mut inode = self.inode(ino)?;
        for (i, name) in path.iter().enumerate().skip(depth) {
            if inode.kind()? != EntryKind::Dir {
                return Err(refused(path, Refusal::NotAFolder));
            }
            let Some(next) = self.lookup(&inode, name)? else {
                return Err(refused(path, Refusal::NotFound));
            };
            inode = self.inode(next)?;
            lock(&self.paths).put(path.get(..=i).unwrap_or_default().to_vec(), next);
        }
        Ok(inode)
    }

    /// The kind of a listed entry: its `file_type`, else (no `filetype` feature, or an
    /// unknown value) its inode's.
    fn entry_kind(&self, e: &dir::RawEntry<'_>) -> Result<EntryKind> {
        Ok(match e.file_type {
            1 => EntryKind::File,
            2 => EntryKind::Dir,
            7 => EntryKind::Symlink,
            3..=6 => EntryKind::Other,
            _ => self.inode(e.ino)?.kind()?,
        })
    }
}

/// A corruption of inode `ino`'s structures.
fn corrupt(ino: u32, what: &'static str) -> Error {
    Ext4FsError::Corrupt { ino, what }.into()
}

/// The refusal `reason` for `path`.
fn refused(path: &[Vec<u8>], reason: Refusal) -> Error {
    let mut shown = Vec::new();
    for c in path {
        shown.push(b'/');
        shown.extend_from_slice(c);
    }
    if shown.is_empty() {
        shown.push(b'/');
    }
    Error::refused(String::from_utf8_lossy(&shown), reason)
}

/// `UNIX_EPOCH + seconds.nanos`, clamped to the epoch where the platform cannot say it.
fn system_time(seconds: i64, nanos: u32) -> SystemTime {
    let since = Duration::new(seconds.unsigned_abs(), nanos.min(999_999_999));
    let t = if seconds >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(since)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(since)
    };
    t.unwrap_or(SystemTime::UNIX_EPOCH)
}

impl GuestFs for Ext4Fs {
    fn type_name(&self) -> &'static str {
        "ext4"
    }

    fn stat(&self, path: &[Vec<u8>]) -> Result<GuestStat> {
        let inode = self.resolve(path)?;
        Ok(GuestStat {
            kind: inode.kind()?,
            size: inode.size,
            mode: u32::from(inode.mode) & 0o7777,
            uid: inode.uid,
            gid: inode.gid,
            mtime: system_time(inode.mtime, inode.mtime_nsec),
            // As stored: a directory of more than 65000 subdirectories (`dir_nlink`) has 1,
            // which Linux reports too; 0 (an inode being deleted, or corrupt) is shown as 1.
            nlink: u32::from(inode.links).max(1),
        })
    }

    fn read_dir(&self, path: &[Vec<u8>]) -> Result<Vec<GuestEntry>> {
        let inode = self.resolve(path)?;
        if inode.kind()? != EntryKind::Dir {
            return Err(refused(path, Refusal::NotAFolder));
        }
        let mut out = Vec::new();
        let mut inos = Vec::new();
        self.scan(&inode, |e| {
            if out.len() == MAX_DIR_ENTRIES {
                return Err(ErrorKind::LimitExceeded {
                    what: "ext4 directory entries",
                    value: MAX_DIR_ENTRIES as u64 + 1,
                    limit: MAX_DIR_ENTRIES as u64,
                }
                .into());
            }
            out.push(GuestEntry {
                name: e.name.to_vec(),
                kind: self.entry_kind(&e)?,
            });
            inos.push(e.ino);
            Ok(false)
        })?;
        // A listing is followed by a stat of each entry: remember where each one is, so that
        // those stats do not scan the directory again (a scan per entry is quadratic).
        let mut paths = lock(&self.paths);
        for (entry, ino) in out.iter().zip(inos) {
            let mut child = path.to_vec();
            child.push(entry.name.clone());
            paths.put(child, ino);
        }
        drop(paths);
        Ok(out)
    }

    fn read(&self, path: &[Vec<u8>], offset: u64, buf: &mut [u8]) -> Result<usize> {
        let inode = self.resolve(path)?;
        match inode.kind()? {
            EntryKind::File => self.read_content(&inode, offset, buf),
            EntryKind::Dir => Err(refused(path, Refusal::IsAFolder)),
            _ => Err(refused(path, Refusal::InvalidArgument)),
        }
    }

    fn read_link(&self, path: &[Vec<u8>]) -> Result<Vec<u8>> {
        let inode = self.resolve(path)?;
        if inode.kind()? != EntryKind::Symlink {
            return Err(refused(path, Refusal::InvalidArgument));
        }
        if inode.size > MAX_LINK_TARGET {
            return Err(ErrorKind::LimitExceeded {
                what: "ext4 symbolic link target",
                value: inode.size,
                limit: MAX_LINK_TARGET,
            }
            .into());
        }
        // At most MAX_LINK_TARGET.
        let len = usize::try_from(inode.size).unwrap_or(0);
        if inode.is_fast_symlink(self.geo.block_size) {
            return inode
                .block
                .get(..len)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| corrupt(inode.ino, "fast symbolic link longer than i_block"));
        }
        let mut target = vec![0u8; len];
        let n = self.read_content(&inode, 0, &mut target)?;
        target.truncate(n);
        Ok(target)
    }
}
