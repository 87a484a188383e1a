//! FAT12, FAT16 and FAT32 with long file names (VFAT), read with the fatfs crate (0.3.6).
//!
//! fatfs's `FileSystem` is neither `Send` nor `Sync` (`RefCell`s, a `&dyn` code-page
//! converter), so each opened file system gets a thread of its own ([`worker`]) that owns
//! it and answers requests sent over a channel; [`FatFs`] is the `Send + Sync` handle.
//! Every request runs inside `catch_unwind` there, and after a caught panic the file
//! system answers every later request with [`FatFsError::Failed`] (logged once).
//!
//! fatfs trusts the image: it computes the layout without overflow checks, follows any
//! cluster chain (for ever, around a loop), and compares no chain with its file's size
//! (see /work/notes/i12/fat-ntfs.md). So ovafs checks the boot sector itself
//! ([`boot`]), checks every directory's chain before fatfs walks it and reads file bytes
//! itself from chains it checked ([`table`]), and gives fatfs a read-only disk that stops
//! a request after a budget of bytes ([`volume`]).
//!
//! What Linux's vfat driver shows by default is shown: modes 0755 (0555 for a file with
//! the read-only attribute), owner and group 0, one link, long names (else short names
//! in code page 437 with the NT lower-case flags), modification times taken as UTC.

pub mod boot;
mod cp437;
mod table;
mod volume;
mod worker;

use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{Error, Result};
use crate::guest::{GuestEntry, GuestFs, GuestStat};
use crate::io::ReadAt;

pub use boot::probe;

/// What goes wrong reading a FAT file system, besides a missing path or a wrong kind
/// (those are [`crate::error::Refusal`]s).
#[derive(Debug, thiserror::Error)]
pub enum FatFsError {
    /// The boot sector is not one of a FAT volume ovafs reads.
    #[error("FAT boot sector: {0}")]
    BootSector(&'static str),
    /// A cluster chain is impossible (outside the volume, broken, longer than its file).
    #[error("FAT: corrupt cluster chain: {0}")]
    Chain(&'static str),
    /// fatfs refused the file system or a directory of it.
    #[error("FAT: {0}")]
    Crate(#[source] std::io::Error),
    /// fatfs panicked on this file system earlier (or just now); it reads nothing more.
    #[error("FAT: the file system failed earlier (the reader panicked on corrupt data)")]
    Failed,
    /// The file system's thread could not be started.
    #[error("FAT: cannot start the file system's thread: {0}")]
    Thread(#[source] std::io::Error),
}

impl From<FatFsError> for Error {
    fn from(e: FatFsError) -> Self {
        Error::layer(e)
    }
}

/// Opens the FAT file system in `source` (its boot sector is checked now; directories and
/// files are read when asked).
pub fn open(source: Arc<dyn ReadAt>) -> Result<Arc<dyn GuestFs>> {
    let geo = boot::check(&*source)?;
    let jobs = worker::spawn(source, geo)?;
    Ok(Arc::new(FatFs {
        jobs: Mutex::new(jobs),
    }))
}

/// A request for the worker thread.
type Job = Box<dyn FnOnce(&mut worker::State) + Send>;

/// The `Send + Sync` handle of one opened FAT file system.
pub struct FatFs {
    /// Where requests go; the thread ends when this is dropped.
    jobs: Mutex<Sender<Job>>,
}

impl FatFs {
    /// Runs `f` on the file system's thread and waits for its answer. A panic there drops
    /// the reply channel unanswered, which is [`FatFsError::Failed`] here.
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
            return Err(FatFsError::Failed.into());
        }
        answer
            .recv()
            .unwrap_or_else(|_| Err(FatFsError::Failed.into()))
    }
}

impl GuestFs for FatFs {
    fn type_name(&self) -> &'static str {
        "vfat"
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
