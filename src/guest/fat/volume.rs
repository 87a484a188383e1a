//! fatfs's disk: `Read + Write + Seek` over ovafs's [`ReadAt`], read-only, with a budget
//! of bytes per request and the last block read kept.
//!
//! fatfs reads a directory entry field by field (a dozen reads of 1 to 11 bytes each), so
//! the block it reads is kept. Writes fail: fatfs is opened read-only and never writes
//! unless asked to change something, but it must not be able to. The budget is the
//! backstop against a loop inside fatfs that [`super::table`] did not foresee (a chain
//! changed under it): once a request has read its budget, every read fails.

use std::cell::Cell;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::rc::Rc;
use std::sync::Arc;

use crate::io::ReadAt;

/// Bytes kept from the last read.
const BLOCK: u64 = 4096;

/// The error a read gives once the request's budget is spent.
#[derive(Debug, thiserror::Error)]
#[error("FAT: the request read more than its budget (a loop in the file system?)")]
pub struct BudgetSpent;

/// The adapter fatfs owns.
pub struct Volume {
    source: Arc<dyn ReadAt>,
    pos: u64,
    block: Option<(u64, Vec<u8>)>,
    /// Bytes the current request may still read (set by the worker before each request).
    pub budget: Rc<Cell<u64>>,
}

impl Volume {
    /// A reader of `source` with an empty budget.
    pub fn new(source: Arc<dyn ReadAt>, budget: Rc<Cell<u64>>) -> Self {
        Volume {
            source,
            pos: 0,
            block: None,
            budget,
        }
    }

    /// Makes the block at `start` the kept one.
    fn load(&mut self, start: u64) -> io::Result<()> {
        let len = BLOCK.min(self.source.len().saturating_sub(start));
        let mut buf = vec![0u8; len as usize];
        self.source
            .read_exact_at(start, &mut buf)
            .map_err(io::Error::other)?;
        self.block = Some((start, buf));
        Ok(())
    }
}

impl Read for Volume {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.budget.get();
        let want = buf.len() as u64;
        if want > left {
            return Err(io::Error::other(BudgetSpent));
        }
        self.budget.set(left - want);
        if self.pos >= self.source.len() || buf.is_empty() {
            return Ok(0);
        }
        let start = self.pos - self.pos % BLOCK;
        let cached = matches!(&self.block, Some((s, _)) if *s == start);
        if !cached {
            self.load(start)?;
        }
        let from = (self.pos - start) as usize;
        let kept = self
            .block
            .as_ref()
            .and_then(|(_, b)| b.get(from..))
            .unwrap_or(&[]);
        let n = kept.len().min(buf.len());
        buf[..n].copy_from_slice(&kept[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for Volume {
    fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::ReadOnlyFilesystem,
            "ovafs reads FAT file systems only",
        ))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Volume {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.source.len().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos =
            pos.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek out of range"))?;
        Ok(self.pos)
    }
}
