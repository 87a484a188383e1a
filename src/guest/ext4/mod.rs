//! ext2, ext3 and ext4, read with the ext4-view crate (extents and block maps, htree
//! directories, 64-bit, metadata checksums, the journal replayed in memory).
//!
//! ext4-view's `Ext4` is neither `Send` nor `Sync` (it holds `Rc` and `RefCell`), so each
//! opened file system gets a thread of its own ([`worker`]) that owns it and answers
//! requests sent over a channel; [`Ext4Fs`] is the `Send + Sync` handle. Every request runs
//! inside `catch_unwind` there: ext4-view has `unwrap`s that corrupt input can reach (see
//! /work/notes/i12/ext4.md), and after a caught panic the file system answers every later
//! request with [`Ext4FsError::Failed`] (logged once), since the crate's caches may be half
//! updated. Two things ext4-view would let a hostile image do are refused before it gets
//! there: a group descriptor table larger than the partition ([`superblock::check`]) and a
//! symbolic link target or directory whose claimed size would be allocated or walked whole
//! ([`worker`]).

pub mod superblock;

mod reader;
mod worker;

use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{Error, Result};
use crate::guest::{GuestEntry, GuestFs, GuestStat};
use crate::io::ReadAt;

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
    /// ext4-view refused the file system or a path of it (corrupt, unsupported feature such
    /// as `inline_data`, encrypted file).
    #[error("ext4: {0}")]
    Crate(#[source] ext4_view::Ext4Error),
    /// ext4-view panicked on this file system earlier (or just now); it reads nothing more.
    #[error("ext4: the file system failed earlier (the reader panicked on corrupt data)")]
    Failed,
    /// The file system's thread could not be started.
    #[error("ext4: cannot start the file system's thread: {0}")]
    Thread(#[source] std::io::Error),
}

impl From<Ext4FsError> for Error {
    fn from(e: Ext4FsError) -> Self {
        Error::layer(e)
    }
}

/// Opens the ext2/3/4 file system in `source` (its superblock, group descriptors and
/// journal are read now; directories and files when asked).
pub fn open(source: Arc<dyn ReadAt>) -> Result<Arc<dyn GuestFs>> {
    superblock::check(&*source)?;
    let jobs = worker::spawn(source)?;
    Ok(Arc::new(Ext4Fs {
        jobs: Mutex::new(jobs),
    }))
}

/// A request for the worker thread.
type Job = Box<dyn FnOnce(&mut worker::State) + Send>;

/// The `Send + Sync` handle of one opened ext2/3/4 file system.
pub struct Ext4Fs {
    /// Where requests go; the thread ends when this is dropped.
    jobs: Mutex<Sender<Job>>,
}

impl Ext4Fs {
    /// Runs `f` on the file system's thread and waits for its answer. A panic there drops
    /// the reply channel unanswered, which is [`Ext4FsError::Failed`] here.
    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut worker::State) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |state| {
            // The caller may have gone; nothing to do then.
            let _ = reply.send(f(state));
        });
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(job);
        if sent.is_err() {
            return Err(Ext4FsError::Failed.into());
        }
        answer.recv().unwrap_or_else(|_| Err(Ext4FsError::Failed.into()))
    }
}

impl GuestFs for Ext4Fs {
    fn type_name(&self) -> &'static str {
        "ext4"
    }

    fn stat(&self, path: &[Vec<u8>]) -> Result<GuestStat> {
        let path = path.to_vec();
        self.call(move |s| s.stat(&path))
    }

    fn read_dir(&self, path: &[Vec<u8>]) -> Result<Vec<GuestEntry>> {
        let path = path.to_vec();
        self.call(move |s| s.read_dir(&path))
    }

    fn read(&self, path: &[Vec<u8>], offset: u64, buf: &mut [u8]) -> Result<usize> {
        let path = path.to_vec();
        let len = buf.len();
        // The bytes travel back by value: the caller's buffer cannot cross to the thread.
        let data = self.call(move |s| s.read(&path, offset, len))?;
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        Ok(n)
    }

    fn read_link(&self, path: &[Vec<u8>]) -> Result<Vec<u8>> {
        let path = path.to_vec();
        self.call(move |s| s.read_link(&path))
    }
}
