//! An editor's temporary file (swap, backup, `sed -i`'s copy), held in memory.
//!
//! Scratch files never become settings and never reach the package, unless one is renamed
//! over a file edited whole (see [`super::folder::Folder`]), which is a write of that file.
//! Each is bounded ([`MAX_SCRATCH_BYTES`]); the FUSE layer bounds how many exist.

use std::any::Any;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use super::{
    Allocation, Background, BlockSize, Caching, FileAttributes, FileNode, OpenFile, OpenMode,
    read_slice, write_into,
};
use crate::error::{Error, Refusal, Result};

/// Largest scratch file (editors' temporary copies of settings or of the descriptor).
pub const MAX_SCRATCH_BYTES: u64 = 64 << 20;

struct State {
    data: Vec<u8>,
    mode: u32,
    mtime: SystemTime,
}

/// A file in memory.
pub struct ScratchFile {
    state: Mutex<State>,
}

impl ScratchFile {
    /// An empty file with permission bits `mode`.
    pub fn new(mode: u32) -> Self {
        Self::with_data(mode, Vec::new())
    }

    /// A file holding `data`.
    pub fn with_data(mode: u32, data: Vec<u8>) -> Self {
        ScratchFile {
            state: Mutex::new(State {
                data,
                mode: mode & 0o7777,
                mtime: SystemTime::now(),
            }),
        }
    }

    /// A copy of its bytes.
    pub fn data(&self) -> Vec<u8> {
        self.state().data.clone()
    }

    // A panic while the lock is held leaves whole values behind (a write either resized and
    // copied or it did not): the data stays usable.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn resize(&self, len: u64) -> Result<()> {
        if len > MAX_SCRATCH_BYTES {
            return Err(Error::refused("truncate", Refusal::TooLarge));
        }
        let mut st = self.state();
        // OK to cast: len <= MAX_SCRATCH_BYTES.
        st.data.resize(len as usize, 0);
        st.mtime = SystemTime::now();
        Ok(())
    }
}

impl FileNode for ScratchFile {
    fn attributes(&self, _background: &dyn Background) -> FileAttributes {
        let st = self.state();
        FileAttributes {
            size: st.data.len() as u64,
            allocated: None,
            mode: st.mode,
            mtime: st.mtime,
            block_size: BlockSize::Normal,
        }
    }

    fn open(self: Arc<Self>, mode: OpenMode) -> Result<Arc<dyn OpenFile>> {
        if mode.write && mode.truncate {
            self.state().data.clear();
        }
        Ok(Arc::new(OpenScratch(self)))
    }

    fn set_len(&self, len: u64) -> Result<()> {
        self.resize(len)
    }

    fn set_times(&self, mode: Option<u32>, mtime: Option<SystemTime>) {
        let mut st = self.state();
        if let Some(m) = mode {
            st.mode = m & 0o7777;
        }
        if let Some(t) = mtime {
            st.mtime = t;
        }
    }

    fn caching(&self) -> Caching {
        Caching::Changing
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// An open of a scratch file: reads and writes go straight to its bytes.
struct OpenScratch(Arc<ScratchFile>);

impl OpenFile for OpenScratch {
    fn len(&self) -> u64 {
        self.0.state().data.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        Ok(read_slice(&self.0.state().data, offset, buf))
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        let mut st = self.0.state();
        write_into(&mut st.data, offset, data, MAX_SCRATCH_BYTES)?;
        st.mtime = SystemTime::now();
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<()> {
        self.0.resize(len)
    }

    /// In memory every byte is stored: reserving only grows the file, and holes and zeroed
    /// ranges are zeros written.
    fn allocate(&self, offset: u64, len: u64, how: Allocation) -> Result<()> {
        let too_large = || Error::refused("fallocate", Refusal::TooLarge);
        let end = offset.checked_add(len).ok_or_else(too_large)?;
        let mut st = self.0.state();
        let size = st.data.len() as u64;
        let (zero, grow) = (how.zeroes(), how.grows());
        let new_size = if grow { size.max(end) } else { size };
        if new_size > MAX_SCRATCH_BYTES {
            return Err(too_large());
        }
        // OK to cast: every bound here is <= MAX_SCRATCH_BYTES.
        st.data.resize(new_size as usize, 0);
        if zero {
            let (start, stop) = (offset.min(new_size) as usize, end.min(new_size) as usize);
            st.data[start..stop].fill(0);
        }
        st.mtime = SystemTime::now();
        Ok(())
    }
}
