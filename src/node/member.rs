//! A file whose bytes are stored as they are shown: an archive member, a file of an
//! unpacked package. Never changes while mounted.

use std::any::Any;
use std::sync::Arc;
use std::time::SystemTime;

use super::{BlockSize, Caching, FileAttributes, FileNode, OpenFile, OpenMode};
use crate::error::{Error, Refusal, Result};
use crate::io::ReadAt;

/// Bytes as stored.
pub struct MemberFile {
    data: Arc<dyn ReadAt>,
    mode: u32,
    mtime: SystemTime,
}

impl MemberFile {
    /// A file serving `data`; its write bits are cleared and its owner may always read it.
    pub fn new(data: Arc<dyn ReadAt>, mode: u32, mtime: SystemTime) -> Self {
        MemberFile {
            data,
            mode: read_only_mode(mode),
            mtime,
        }
    }
}

/// `mode` without write bits, readable by the owner: what a file that never changes shows.
pub fn read_only_mode(mode: u32) -> u32 {
    (mode & 0o555) | 0o400
}

impl FileNode for MemberFile {
    fn attributes(&self, _background: &dyn super::Background) -> FileAttributes {
        FileAttributes {
            size: self.data.len(),
            allocated: None,
            mode: self.mode,
            mtime: self.mtime,
            block_size: BlockSize::Normal,
        }
    }

    fn open(self: Arc<Self>, mode: OpenMode) -> Result<Arc<dyn OpenFile>> {
        if mode.write {
            return Err(Error::refused("open for writing", Refusal::AccessDenied));
        }
        Ok(Arc::new(StoredBytes(self.data.clone())))
    }

    fn caching(&self) -> Caching {
        Caching::Stable
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// An open of stored bytes: reads straight from the source.
struct StoredBytes(Arc<dyn ReadAt>);

impl OpenFile for StoredBytes {
    fn len(&self) -> u64 {
        self.0.len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.0.read_at(offset, buf)
    }
}
