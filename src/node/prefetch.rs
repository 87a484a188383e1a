//! A disk as the guest file systems read it ([`GuestSource`]): the disk's current content
//! (the decoded image, or with a writable disk the overlay over it), through the same
//! decoded-unit cache as the flat file, and with the same read-ahead: a guest file read from
//! start to end reads its extents in order, and the units after them are decoded ahead on a
//! thread of the source's own ([`PrefetchThread`]), since a guest file system's reads do
//! not come through the FUSE workers' `note_read`.

use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use super::written_disk::WritableDisk;
use super::{Background, Task};
use crate::disk::engine::FlatDisk;
use crate::error::Result;
use crate::io::ReadAt;

/// Read-ahead tasks a source keeps queued at most; more are dropped (read-ahead is a hint).
const QUEUED_TASKS: usize = 64;

/// What a disk holds now.
#[derive(Clone)]
pub enum DiskContent {
    /// A read-only disk: the decoded image.
    Flat(Arc<FlatDisk>),
    /// A writable disk: its overlay over the image.
    Written(Arc<dyn WritableDisk>),
}

impl DiskContent {
    fn len(&self) -> u64 {
        match self {
            DiskContent::Flat(d) => d.len(),
            DiskContent::Written(d) => d.len(),
        }
    }
}

/// A disk's content as a [`ReadAt`], with read-ahead (see the module comment).
pub struct GuestSource {
    content: DiskContent,
    /// Started at the first read: a mount shows many disks whose guest files nobody reads.
    prefetch: OnceLock<Option<PrefetchThread>>,
}

impl GuestSource {
    /// The content of a disk.
    pub fn new(content: DiskContent) -> Self {
        GuestSource {
            content,
            prefetch: OnceLock::new(),
        }
    }

    fn prefetch(&self) -> Option<&PrefetchThread> {
        self.prefetch
            .get_or_init(|| match PrefetchThread::start() {
                Ok(t) => Some(t),
                Err(e) => {
                    log::warn!("no read-ahead for guest files: cannot start its thread: {e}");
                    None
                }
            })
            .as_ref()
    }
}

impl ReadAt for GuestSource {
    fn len(&self) -> u64 {
        self.content.len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let n = match &self.content {
            DiskContent::Flat(d) => d.read_at(offset, buf)?,
            DiskContent::Written(d) => d.read_at(offset, buf)?,
        };
        if let Some(ahead) = self.prefetch() {
            let len = n as u64;
            match &self.content {
                DiskContent::Flat(d) => super::disk::read_ahead(d, offset, len, ahead),
                DiskContent::Written(d) => d.read_ahead(offset, len, ahead),
            }
        }
        Ok(n)
    }
}

/// A [`Background`] running its tasks on one thread of its own, in order; a task that finds
/// the queue full is dropped. The thread ends when this is dropped.
pub struct PrefetchThread {
    tasks: Mutex<SyncSender<Task>>,
}

impl PrefetchThread {
    fn start() -> std::io::Result<Self> {
        let (tasks, queue) = mpsc::sync_channel::<Task>(QUEUED_TASKS);
        std::thread::Builder::new()
            .name("ovafs-guest-ahead".into())
            .spawn(move || {
                for task in queue {
                    // A panicking task (a corrupt unit) must not end read-ahead for the disk.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(task));
                }
            })?;
        Ok(PrefetchThread {
            tasks: Mutex::new(tasks),
        })
    }

    fn queue(&self, task: Task) {
        let sent = self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .try_send(task);
        if let Err(TrySendError::Disconnected(_)) = sent {
            log::debug!("guest read-ahead thread has ended");
        }
    }
}

impl Background for PrefetchThread {
    fn run(&self, task: Task) {
        self.queue(task);
    }

    fn read_ahead(&self, task: Task) {
        self.queue(task);
    }
}
