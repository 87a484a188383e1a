//! A flat disk: the raw image of a Disk, decoded lazily through the cache.
//!
//! Reads of a sequential reader get the units after them decoded ahead on the workers
//! ([`FlatDisk::note_read`]). `st_blocks` and SEEK_DATA/SEEK_HOLE answer from the image's
//! tables: a `stat` counts in place only when that is quick (within
//! [`INLINE_COUNTED_EXTENTS`] extents), else it shows the disk as fully allocated, which is
//! never wrong for readers, while a worker counts for later `stat`s.

use std::any::Any;
use std::sync::Arc;
use std::time::SystemTime;

use super::member::read_only_mode;
use super::{Background, BlockSize, Caching, FileAttributes, FileNode, OpenFile, OpenMode};
use crate::disk::engine::{FlatDisk, INLINE_COUNTED_EXTENTS};
use crate::error::{Error, Refusal, Result};
use crate::io::ReadAt;

/// A flat disk image, read-only.
pub struct DiskFile {
    disk: Arc<FlatDisk>,
    mode: u32,
    mtime: SystemTime,
}

impl DiskFile {
    /// The flat image `disk`, with permission bits `mode` (write bits cleared).
    pub fn new(disk: Arc<FlatDisk>, mode: u32, mtime: SystemTime) -> Self {
        DiskFile {
            disk,
            mode: read_only_mode(mode),
            mtime,
        }
    }
}

/// The allocated bytes a `stat` of `disk` reports: see the module's comment.
pub fn allocated_bytes(disk: &Arc<FlatDisk>, background: &dyn Background) -> Option<u64> {
    let known = disk.allocated_bytes_within(INLINE_COUNTED_EXTENTS);
    if known.is_none() && disk.claim_count() {
        let disk = disk.clone();
        background.run(Box::new(move || {
            disk.allocated_bytes();
        }));
    }
    known
}

impl FileNode for DiskFile {
    fn attributes(&self, background: &dyn Background) -> FileAttributes {
        FileAttributes {
            size: self.disk.len(),
            allocated: allocated_bytes(&self.disk, background),
            mode: self.mode,
            mtime: self.mtime,
            block_size: BlockSize::Large,
        }
    }

    fn open(self: Arc<Self>, mode: OpenMode) -> Result<Arc<dyn OpenFile>> {
        if mode.write {
            return Err(Error::refused("open for writing", Refusal::AccessDenied));
        }
        Ok(Arc::new(OpenDisk(self.disk.clone())))
    }

    fn size(&self, _background: &dyn Background) -> u64 {
        self.disk.len()
    }

    fn caching(&self) -> Caching {
        Caching::Stable
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// An open of a flat disk.
struct OpenDisk(Arc<FlatDisk>);

impl OpenFile for OpenDisk {
    fn len(&self) -> u64 {
        self.0.len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.0.read_at(offset, buf)
    }

    fn seek(&self, offset: u64, data: bool) -> Result<Option<u64>> {
        self.0.seek(offset, data)
    }

    fn note_read(&self, offset: u64, len: u64, background: &dyn Background) {
        read_ahead(&self.0, offset, len, background);
    }
}

/// Tells `disk` of a read of `len` bytes at `offset` and hands the units it wants decoded
/// ahead of a sequential reader to `background`.
pub fn read_ahead(disk: &Arc<FlatDisk>, offset: u64, len: u64, background: &dyn Background) {
    for unit in disk.note_read(offset, len) {
        let disk = disk.clone();
        background.read_ahead(Box::new(move || disk.prefetch(unit)));
    }
}
