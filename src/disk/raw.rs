//! Plain raw disk images: the flat image is the source itself.
//!
//! Accepted only when the length is a non-zero multiple of the sector size, so that a
//! placeholder or a stray text file is not mistaken for a disk.

use std::sync::Arc;

use super::{DiskError, DiskFormat, DiskImage, Extent, MAX_VIRTUAL_BYTES, SECTOR_BYTES};
use crate::error::Result;
use crate::io::ReadAt;

/// Unit size reported for raw images (read-ahead granularity only; nothing is decoded).
const RAW_UNIT_BYTES: u64 = 1 << 20;

/// A raw image.
pub struct RawImage {
    source: Arc<dyn ReadAt>,
}

impl RawImage {
    /// Accepts `source` as a raw image if its size is plausible for one.
    pub fn open(source: Arc<dyn ReadAt>) -> Result<Self> {
        let len = source.len();
        if len == 0 || !len.is_multiple_of(SECTOR_BYTES) || len > MAX_VIRTUAL_BYTES {
            return Err(DiskError::Unrecognised {
                reason: format!(
                    "no known header, and {len} bytes is not a whole number of 512-byte sectors"
                ),
            }
            .into());
        }
        Ok(RawImage { source })
    }
}

impl DiskImage for RawImage {
    fn format(&self) -> DiskFormat {
        DiskFormat::Raw
    }

    fn virtual_size(&self) -> u64 {
        self.source.len()
    }

    fn unit_bytes(&self) -> u64 {
        RAW_UNIT_BYTES
    }

    fn map(&self, offset: u64, max_len: u64) -> Result<Extent> {
        let len = self.source.len().saturating_sub(offset).min(max_len);
        Ok(Extent::Stored {
            source_offset: offset,
            len,
        })
    }

    fn decode_unit(&self, unit: u64, _out: &mut [u8]) -> Result<()> {
        Err(DiskError::CorruptUnit {
            unit,
            reason: "raw images have no encoded units".into(),
        }
        .into())
    }

    fn source(&self) -> &dyn ReadAt {
        &*self.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sector_multiple_is_raw_and_maps_to_itself() {
        let img = RawImage::open(Arc::new(vec![7u8; 4096])).unwrap();
        assert_eq!(img.virtual_size(), 4096);
        assert_eq!(
            img.map(1000, 10_000).unwrap(),
            Extent::Stored {
                source_offset: 1000,
                len: 3096
            }
        );
    }

    #[test]
    fn placeholder_files_are_not_disks() {
        assert!(RawImage::open(Arc::new(vec![1u8; 4])).is_err());
        assert!(RawImage::open(Arc::new(Vec::new())).is_err());
    }
}
