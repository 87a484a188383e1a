//! The overlay as the changes of a writable flat disk ([`DiskChanges`]): what
//! `node::written_disk::WrittenDiskFile` calls, mapped onto [`Overlay`].
//!
//! Two choices live here. A write that ends past the disk's end grows the disk first (the
//! overlay refuses writes past its length; a file written past its end grows). SEEK_DATA /
//! SEEK_HOLE over the base ask the flat image's own tables.

use super::{Overlay, Whence};
use crate::disk::engine::FlatDisk;
use crate::error::{Error, Result};
use crate::node::written_disk::DiskChanges;

impl DiskChanges for Overlay {
    fn len(&self) -> u64 {
        Overlay::len(self)
    }

    fn read_at(&self, base: &FlatDisk, offset: u64, buf: &mut [u8]) -> Result<usize> {
        Overlay::read_at(self, base, offset, buf)
    }

    fn write_at(&self, base: &FlatDisk, offset: u64, data: &[u8]) -> Result<()> {
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| Error::overflow("write range"))?;
        if end > Overlay::len(self) {
            Overlay::set_len(self, end)?;
        }
        Overlay::write_at(self, base, offset, data)
    }

    fn zero_range(&self, base: &FlatDisk, offset: u64, len: u64) -> Result<()> {
        Overlay::zero_range(self, base, offset, len)
    }

    fn set_len(&self, len: u64) -> Result<()> {
        Overlay::set_len(self, len)
    }

    fn sync(&self) -> Result<()> {
        Overlay::sync(self)
    }

    fn seek(&self, base: &FlatDisk, offset: u64, data: bool) -> Result<Option<u64>> {
        let whence = if data { Whence::Data } else { Whence::Hole };
        let base_seek = |at: u64, w: Whence| base.seek(at, w == Whence::Data);
        Overlay::seek(self, offset, whence, &base_seek)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use super::super::{Identity, Location, OverlayOptions};
    use super::*;
    use crate::cache::UnitCache;
    use crate::io::ReadAt;
    use crate::node::written_disk::WrittenDiskFile;
    use crate::node::{Allocation, FileNode, OpenMode};

    /// A writable flat disk over a real overlay in a temporary folder, as a mount will make
    /// one; reopening the overlay shows what a later mount sees.
    #[test]
    fn a_written_disk_over_an_overlay_keeps_what_was_synced() {
        let dir = tempfile::tempdir().unwrap();
        let ova = dir.path().join("app.ova");
        std::fs::write(&ova, b"package").unwrap();
        let package = nix::sys::stat::stat(&ova).unwrap();
        let raw: Vec<u8> = (0..256 << 10).map(|i| (i / 4096) as u8 | 1).collect();
        let source: Arc<dyn ReadAt> = Arc::new(raw.clone());
        let image = crate::disk::open(source.clone()).unwrap();
        let base = Arc::new(FlatDisk::new(
            image,
            Arc::new(UnitCache::new(1 << 20)),
            None,
        ));
        let identity = Identity::of_disk("disk1.img", &*source, None, base.len()).unwrap();
        let location = Location::beside(&ova, "disk1.raw");
        let open = || {
            Overlay::open_or_create(&location, &package, &identity, OverlayOptions::default())
                .unwrap()
        };
        let file = Arc::new(WrittenDiskFile::new(
            base.clone(),
            Arc::new(open()),
            0o644,
            SystemTime::UNIX_EPOCH,
        ));
        let h = file
            .clone()
            .open(OpenMode {
                write: true,
                ..OpenMode::default()
            })
            .unwrap();
        h.write_at(4096 + 100, b"guest data").unwrap();
        h.allocate(8 << 12, 2 << 12, Allocation::PunchHole).unwrap();
        h.write_at(raw.len() as u64 + 10, b"past the end").unwrap();
        h.fsync(false).unwrap();
        h.write_at(0, b"never synced").unwrap();
        // SEEK_HOLE finds the punched blocks, SEEK_DATA the next data after them.
        assert_eq!(h.seek(0, false).unwrap(), Some(8 << 12));
        assert_eq!(h.seek(8 << 12, true).unwrap(), Some(10 << 12));
        drop(h);
        drop(file);
        let again = open();
        let mut buf = vec![0u8; 10];
        Overlay::read_at(&again, &*base, 4096 + 100, &mut buf).unwrap();
        assert_eq!(&buf, b"guest data", "a synced write survives");
        Overlay::read_at(&again, &*base, 8 << 12, &mut buf).unwrap();
        assert_eq!(buf, vec![0u8; 10], "the hole survives");
        assert_eq!(
            Overlay::len(&again),
            raw.len() as u64 + 22,
            "so does the growth"
        );
        let mut first = vec![0u8; 12];
        Overlay::read_at(&again, &*base, 0, &mut first).unwrap();
        assert!(
            first == raw[..12] || &first[..] == b"never synced",
            "an unsynced write is either there or not, never garbage"
        );
    }
}
