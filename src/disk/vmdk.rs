//! VMDK sparse extents (stream-optimized and hosted sparse). PLACEHOLDER: being written.

use std::sync::Arc;

use super::{DiskFormat, DiskImage, Extent};
use crate::error::Result;
use crate::io::ReadAt;

/// "KDMV": the first four bytes of a sparse extent.
pub const SPARSE_MAGIC: [u8; 4] = *b"KDMV";

/// A VMDK rule was broken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VmdkError {
    /// Not implemented yet.
    #[error("VMDK support is not built yet")]
    Unsupported,
}

/// A parsed sparse VMDK extent.
pub struct SparseVmdk {
    source: Arc<dyn ReadAt>,
}

impl SparseVmdk {
    /// Parses the header and tables of a sparse extent.
    pub fn open(_source: Arc<dyn ReadAt>) -> Result<Self> {
        Err(super::DiskError::Vmdk(VmdkError::Unsupported).into())
    }
}

impl DiskImage for SparseVmdk {
    fn format(&self) -> DiskFormat {
        DiskFormat::VmdkStreamOptimized
    }
    fn virtual_size(&self) -> u64 {
        0
    }
    fn unit_bytes(&self) -> u64 {
        65536
    }
    fn map(&self, _offset: u64, max_len: u64) -> Result<Extent> {
        Ok(Extent::Zero { len: max_len })
    }
    fn decode_unit(&self, _unit: u64, _out: &mut [u8]) -> Result<()> {
        Ok(())
    }
    fn source(&self) -> &dyn ReadAt {
        &*self.source
    }
}
