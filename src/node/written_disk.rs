//! A flat disk that takes writes: a [`WritableDisk`] (the decoded image underneath and its
//! changes in the copy-on-write overlay, `crate::writable`), so that a guest can run from
//! the mount.
//!
//! Reads of unchanged ranges are the base image's, through the cache and its read-ahead, at
//! today's speed; changed ranges are the overlay's. Writes are acknowledged once the overlay
//! has the data; `fsync`/`fdatasync` make every acknowledged write durable before they
//! return (never answered as "not implemented": the kernel would then fake success for every
//! later flush). `fallocate` with PUNCH_HOLE|KEEP_SIZE and ZERO_RANGE (qemu's discard and
//! write-zeroes) turn ranges to zeros; SEEK_DATA/SEEK_HOLE answer over base and overlay;
//! `truncate -s` grows the disk.
//!
//! Group and others never get write access, whatever the image file allows: a disk is
//! written by its owner (a hypervisor running as the mounting user, or root).

use std::any::Any;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use super::{
    Allocation, Background, BlockSize, Caching, FileAttributes, FileNode, OpenFile, OpenMode,
};
use crate::error::Result;

/// A disk image that takes writes, as the flat file needs it: the image underneath and its
/// changes (the copy-on-write overlay) behind one interface. Offsets are bytes of the flat
/// disk.
pub trait WritableDisk: Send + Sync {
    /// The disk's size now (the base's, or more after growing).
    fn len(&self) -> u64;
    /// Whether the size is 0.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Reads the disk as changed: overlay blocks over the base.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize>;
    /// Writes `data` at `offset` (sub-block writes read the base around them); a write that
    /// ends past the end grows the disk.
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<()>;
    /// Makes `len` bytes at `offset` read as zeros (a discard or write-zeroes).
    fn zero_range(&self, offset: u64, len: u64) -> Result<()>;
    /// Grows the disk to `len` bytes.
    fn set_len(&self, len: u64) -> Result<()>;
    /// Makes every write acknowledged so far durable.
    fn sync(&self) -> Result<()>;
    /// The first offset at or after `offset` holding data (`data`) or a hole, over base and
    /// changes; `None` when there is none.
    fn seek(&self, offset: u64, data: bool) -> Result<Option<u64>>;
    /// Starts decoding ahead of a read of `len` bytes at `offset`, on `background`.
    fn read_ahead(&self, offset: u64, len: u64, background: &dyn Background);
    /// The bytes the disk holds (`st_blocks`), when they are known cheaply; `None` shows
    /// the disk as fully allocated, which is never wrong for readers.
    fn allocated(&self, _background: &dyn Background) -> Option<u64> {
        None
    }
    /// The flat file was opened (counted, so that a discard can refuse an open disk).
    fn opened(&self) {}
    /// An open of the flat file ended.
    fn closed(&self) {}
}

/// A writable flat disk.
pub struct WrittenDiskFile {
    disk: Arc<dyn WritableDisk>,
    mode: u32,
    mtime: Mutex<SystemTime>,
}

impl WrittenDiskFile {
    /// The disk `disk`; `mode` is the image file's (write access is the owner's only).
    pub fn new(disk: Arc<dyn WritableDisk>, mode: u32, mtime: SystemTime) -> Self {
        WrittenDiskFile {
            disk,
            mode: (mode & 0o444) | 0o600,
            mtime: Mutex::new(mtime),
        }
    }

    // The time is replaced whole: a panic cannot leave it half written.
    fn mtime(&self) -> MutexGuard<'_, SystemTime> {
        self.mtime.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl FileNode for WrittenDiskFile {
    fn attributes(&self, background: &dyn Background) -> FileAttributes {
        FileAttributes {
            size: self.disk.len(),
            allocated: self.disk.allocated(background),
            mode: self.mode,
            mtime: *self.mtime(),
            block_size: BlockSize::Large,
        }
    }

    /// All changes arrive through this mount, so the kernel's page cache stays true, and
    /// reads and writes do I/O: they run on the workers.
    fn caching(&self) -> Caching {
        Caching::Stable
    }

    fn open(self: Arc<Self>, _mode: OpenMode) -> Result<Arc<dyn OpenFile>> {
        self.disk.opened();
        Ok(Arc::new(OpenWrittenDisk(self)))
    }

    fn set_len(&self, len: u64) -> Result<()> {
        self.disk.set_len(len)?;
        *self.mtime() = SystemTime::now();
        Ok(())
    }

    fn set_times(&self, _mode: Option<u32>, mtime: Option<SystemTime>) {
        if let Some(t) = mtime {
            *self.mtime() = t;
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// An open of a writable flat disk.
struct OpenWrittenDisk(Arc<WrittenDiskFile>);

impl Drop for OpenWrittenDisk {
    fn drop(&mut self) {
        self.0.disk.closed();
    }
}

impl OpenWrittenDisk {
    fn touched(&self) {
        *self.0.mtime() = SystemTime::now();
    }
}

impl OpenFile for OpenWrittenDisk {
    fn len(&self) -> u64 {
        self.0.disk.len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.0.disk.read_at(offset, buf)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.0.disk.write_at(offset, data)?;
        self.touched();
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<()> {
        self.0.set_len(len)
    }

    fn fsync(&self, _data_only: bool) -> Result<()> {
        self.0.disk.sync()
    }

    fn allocate(&self, offset: u64, len: u64, how: Allocation) -> Result<()> {
        let end = offset
            .checked_add(len)
            .ok_or_else(|| crate::error::Error::overflow("fallocate range"))?;
        let (zero, grow) = (how.zeroes(), how.grows());
        if grow && end > self.len() {
            self.0.disk.set_len(end)?;
        }
        if zero {
            let stop = end.min(self.len());
            if offset < stop {
                self.0.disk.zero_range(offset, stop - offset)?;
            }
        }
        self.touched();
        Ok(())
    }

    fn seek(&self, offset: u64, data: bool) -> Result<Option<u64>> {
        self.0.disk.seek(offset, data)
    }

    fn note_read(&self, offset: u64, len: u64, background: &dyn Background) {
        self.0.disk.read_ahead(offset, len, background);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Changes kept in memory: the whole disk as bytes (a model of the overlay).
    struct InMemory {
        bytes: Mutex<Vec<u8>>,
        syncs: Mutex<usize>,
    }

    impl InMemory {
        fn of(bytes: Vec<u8>) -> InMemory {
            InMemory {
                bytes: Mutex::new(bytes),
                syncs: Mutex::new(0),
            }
        }
    }

    impl WritableDisk for InMemory {
        fn len(&self) -> u64 {
            self.bytes.lock().unwrap().len() as u64
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
            Ok(crate::node::read_slice(
                &self.bytes.lock().unwrap(),
                offset,
                buf,
            ))
        }
        fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
            crate::node::write_into(&mut self.bytes.lock().unwrap(), offset, data, u64::MAX)
        }
        fn zero_range(&self, offset: u64, len: u64) -> Result<()> {
            let mut b = self.bytes.lock().unwrap();
            b[offset as usize..(offset + len) as usize].fill(0);
            Ok(())
        }
        fn set_len(&self, len: u64) -> Result<()> {
            self.bytes.lock().unwrap().resize(len as usize, 0);
            Ok(())
        }
        fn sync(&self) -> Result<()> {
            *self.syncs.lock().unwrap() += 1;
            Ok(())
        }
        fn seek(&self, offset: u64, data: bool) -> Result<Option<u64>> {
            let len = self.len();
            Ok(match (offset < len, data) {
                (true, true) => Some(offset),
                (true, false) => Some(len),
                (false, _) => None,
            })
        }
        fn read_ahead(&self, _offset: u64, _len: u64, _background: &dyn Background) {}
    }

    struct NoBackground;
    impl Background for NoBackground {
        fn run(&self, _task: crate::node::Task) {}
        fn read_ahead(&self, _task: crate::node::Task) {}
    }

    fn disk() -> (Arc<WrittenDiskFile>, Arc<InMemory>) {
        let changes = Arc::new(InMemory::of(vec![7u8; 64 << 10]));
        let file = WrittenDiskFile::new(changes.clone(), 0o644, SystemTime::UNIX_EPOCH);
        (Arc::new(file), changes)
    }

    #[test]
    fn writes_reads_syncs_and_zeroes_reach_the_changes() {
        let (file, changes) = disk();
        assert_eq!(file.attributes(&NoBackground).mode, 0o644 & 0o444 | 0o600);
        let h = file.clone().open(OpenMode::default()).unwrap();
        h.write_at(10, b"abc").unwrap();
        let mut buf = [0u8; 5];
        h.read_at(9, &mut buf).unwrap();
        assert_eq!(&buf, &[7, b'a', b'b', b'c', 7]);
        h.fsync(true).unwrap();
        assert_eq!(
            *changes.syncs.lock().unwrap(),
            1,
            "fsync is the overlay's sync"
        );
        h.allocate(8, 4, Allocation::PunchHole).unwrap();
        h.read_at(7, &mut buf).unwrap();
        assert_eq!(&buf, &[7, 0, 0, 0, 0], "punched");
        h.allocate(
            60 << 10,
            8 << 10,
            Allocation::ZeroRange { keep_size: false },
        )
        .unwrap();
        assert_eq!(h.len(), 68 << 10, "zero range past the end grows the disk");
        h.allocate(0, 1 << 20, Allocation::Reserve { keep_size: true })
            .unwrap();
        assert_eq!(h.len(), 68 << 10, "reserving with KEEP_SIZE keeps it");
        file.set_len(1 << 20).unwrap();
        assert_eq!(
            file.attributes(&NoBackground).size,
            1 << 20,
            "truncate -s grows"
        );
    }
}
