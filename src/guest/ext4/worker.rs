//! The thread that owns one ext4-view `Ext4` and answers requests for it, each inside
//! `catch_unwind`; the path checks that keep "never follow a symbolic link" true; and the
//! translation of ext4-view's answers into ovafs's.
//!
//! ext4-view resolves paths itself and follows symbolic links in every component but the
//! last (and in the last too for `read_dir` and `open`). A path handed to [`State`] must not
//! go through a link: each request first checks that the parent resolves to itself
//! (`canonicalize`), remembering the parents it checked, and then looks at the last
//! component without following it before reading it.

use std::num::NonZeroUsize;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, SystemTime};

use ext4_view::{Ext4, Ext4Error, File, FileType, Metadata};
use lru::LruCache;

use super::reader::SourceReader;
use super::{Ext4FsError, Job};
use crate::error::{Error, ErrorKind, Refusal, Result};
use crate::guest::{EntryKind, GuestEntry, GuestStat, MAX_DIR_ENTRIES};
use crate::io::ReadAt;

/// Open files kept between reads (each holds its inode and its place in the extent tree,
/// at most a few blocks), so that sequential reads of a file do not resolve its path and
/// walk its block list from the start each time.
const OPEN_FILES: usize = 16;
/// Parent directories remembered as free of symbolic links.
const CHECKED_PARENTS: usize = 1024;
/// Longest symbolic link target read (Linux's `PATH_MAX`): ext4-view allocates a link's
/// whole claimed size at once.
const MAX_LINK_TARGET: u64 = 4096;
/// Largest directory listed: its blocks are walked one by one, holes included, so a forged
/// size would be a walk of 2^32 blocks. A million entries of long names fit.
const MAX_DIR_BYTES: u64 = 1 << 30;

/// The thread's side: the file system and what it keeps between requests.
pub struct State {
    /// The file system.
    fs: Ext4,
    /// Open regular files by absolute path.
    files: LruCache<Vec<u8>, File>,
    /// Absolute paths known to be directories reached without a symbolic link.
    parents: LruCache<Vec<u8>, ()>,
}

/// Loads the file system of `source` on a new thread and returns where to send its
/// requests (the thread ends when the sender is dropped).
pub fn spawn(source: Arc<dyn ReadAt>) -> Result<mpsc::Sender<Job>> {
    let (jobs, inbox) = mpsc::channel::<Job>();
    let (loaded, load_result) = mpsc::sync_channel::<Result<()>>(1);
    std::thread::Builder::new()
        .name("ovafs-ext4".into())
        .spawn(move || serve(source, inbox, loaded))
        .map_err(Ext4FsError::Thread)?;
    load_result
        .recv()
        .unwrap_or_else(|_| Err(Ext4FsError::Failed.into()))?;
    Ok(jobs)
}

/// The thread: loads, reports the outcome, then answers jobs until the handle is dropped.
fn serve(source: Arc<dyn ReadAt>, inbox: Receiver<Job>, loaded: mpsc::SyncSender<Result<()>>) {
    let load = catch_unwind(AssertUnwindSafe(|| {
        Ext4::load(Box::new(SourceReader(source))).map_err(convert_load)
    }));
    let fs = match load {
        Ok(Ok(fs)) => fs,
        Ok(Err(e)) => {
            let _ = loaded.send(Err(e));
            return;
        }
        Err(_) => {
            log::error!("ext4: the reader panicked loading the file system; it is not opened");
            let _ = loaded.send(Err(Ext4FsError::Failed.into()));
            return;
        }
    };
    if loaded.send(Ok(())).is_err() {
        return;
    }
    let mut state = State {
        fs,
        files: LruCache::new(NonZeroUsize::new(OPEN_FILES).unwrap_or(NonZeroUsize::MIN)),
        parents: LruCache::new(NonZeroUsize::new(CHECKED_PARENTS).unwrap_or(NonZeroUsize::MIN)),
    };
    let mut failed = false;
    for job in inbox {
        if failed {
            // Dropping the job drops its reply channel: the caller gets `Failed`.
            continue;
        }
        if catch_unwind(AssertUnwindSafe(|| job(&mut state))).is_err() {
            log::error!(
                "ext4: the reader panicked on corrupt data; this file system now fails every \
                 request"
            );
            failed = true;
        }
    }
}

impl State {
    /// What `path` is, not following a final symbolic link.
    pub fn stat(&mut self, path: &[Vec<u8>]) -> Result<GuestStat> {
        let abs = absolute(path)?;
        let meta = self.lstat(&abs)?;
        Ok(GuestStat {
            kind: kind(meta.file_type()),
            size: meta.len(),
            mode: u32::from(meta.mode()) & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: system_time(meta.modified().seconds(), meta.modified().nanoseconds()),
            // ext4-view exposes neither the inode's link count nor inode numbers; 1 is what
            // the interface asks for where the count is unknown (find(1) then does not
            // assume a directory's count of subdirectories).
            nlink: 1,
        })
    }

    /// The entries of directory `path` without `.` and `..`.
    pub fn read_dir(&mut self, path: &[Vec<u8>]) -> Result<Vec<GuestEntry>> {
        let abs = absolute(path)?;
        let meta = self.lstat(&abs)?;
        if !meta.is_dir() {
            return Err(refused(&abs, Refusal::NotAFolder));
        }
        if meta.len() > MAX_DIR_BYTES {
            return Err(ErrorKind::LimitExceeded {
                what: "ext4 directory",
                value: meta.len(),
                limit: MAX_DIR_BYTES,
            }
            .into());
        }
        let mut entries = Vec::new();
        for entry in self.fs.read_dir(abs.as_slice()).map_err(|e| convert(&abs, e))? {
            let entry = entry.map_err(|e| convert(&abs, e))?;
            let name = entry.file_name().as_ref().to_vec();
            if name == b"." || name == b".." {
                continue;
            }
            if entries.len() == MAX_DIR_ENTRIES {
                return Err(ErrorKind::LimitExceeded {
                    what: "ext4 directory entries",
                    value: MAX_DIR_ENTRIES as u64 + 1,
                    limit: MAX_DIR_ENTRIES as u64,
                }
                .into());
            }
            let file_type = entry.file_type().map_err(|e| convert(&abs, e))?;
            entries.push(GuestEntry {
                name,
                kind: kind(file_type),
            });
        }
        Ok(entries)
    }

    /// Up to `len` bytes of regular file `path` from `offset` (fewer only at its end).
    pub fn read(&mut self, path: &[Vec<u8>], offset: u64, len: usize) -> Result<Vec<u8>> {
        let abs = absolute(path)?;
        let mut file = match self.files.pop(&abs) {
            Some(file) => file,
            None => self.open(&abs)?,
        };
        let data = read_file(&mut file, offset, len).map_err(|e| convert(&abs, e))?;
        // Kept only after a read that worked: a failed one may have left it anywhere.
        self.files.put(abs, file);
        Ok(data)
    }

    /// The target of symbolic link `path`, as stored.
    pub fn read_link(&mut self, path: &[Vec<u8>]) -> Result<Vec<u8>> {
        let abs = absolute(path)?;
        let meta = self.lstat(&abs)?;
        if !meta.is_symlink() {
            return Err(refused(&abs, Refusal::InvalidArgument));
        }
        if meta.len() > MAX_LINK_TARGET {
            return Err(ErrorKind::LimitExceeded {
                what: "ext4 symbolic link target",
                value: meta.len(),
                limit: MAX_LINK_TARGET,
            }
            .into());
        }
        let target = self
            .fs
            .read_link(abs.as_slice())
            .map_err(|e| convert(&abs, e))?;
        Ok(target.as_ref().to_vec())
    }

    /// Opens regular file `abs` (checked not to be reached through a link).
    fn open(&mut self, abs: &[u8]) -> Result<File> {
        let meta = self.lstat(abs)?;
        match meta.file_type() {
            FileType::Regular => {}
            FileType::Directory => return Err(refused(abs, Refusal::IsAFolder)),
            _ => return Err(refused(abs, Refusal::InvalidArgument)),
        }
        self.fs.open(abs).map_err(|e| convert(abs, e))
    }

    /// The metadata of `abs` itself, after checking that its parent is reached without
    /// following a symbolic link.
    fn lstat(&mut self, abs: &[u8]) -> Result<Metadata> {
        self.check_parent(abs)?;
        self.fs.symlink_metadata(abs).map_err(|e| convert(abs, e))
    }

    /// Fails unless the parent of `abs` resolves to itself: no component of it is a link.
    fn check_parent(&mut self, abs: &[u8]) -> Result<()> {
        let cut = abs.iter().rposition(|&b| b == b'/').unwrap_or(0);
        if cut == 0 {
            return Ok(()); // The root is the parent.
        }
        let parent = &abs[..cut];
        if self.parents.get(parent).is_some() {
            return Ok(());
        }
        let resolved = self
            .fs
            .canonicalize(parent)
            .map_err(|e| convert(parent, e))?;
        if resolved.as_ref() != parent {
            // A link in the middle: the kernel resolves those itself (readlink), so a
            // caller asking through one is refused as the path not being a folder.
            return Err(refused(abs, Refusal::NotAFolder));
        }
        self.parents.put(parent.to_vec(), ());
        Ok(())
    }
}

/// Reads up to `len` bytes of `file` from `offset`: from where it is when a previous read
/// ended there, otherwise after a seek (which walks its block list from the start).
fn read_file(file: &mut File, offset: u64, len: usize) -> Result<Vec<u8>, Ext4Error> {
    let size = file.metadata().len();
    let want = usize::try_from(size.saturating_sub(offset))
        .unwrap_or(usize::MAX)
        .min(len);
    let mut data = vec![0u8; want];
    if want == 0 {
        return Ok(data);
    }
    if file.position() != offset {
        file.seek_to(offset)?;
    }
    let mut done = 0;
    while done < want {
        // At most one block per call; 0 only at the end (the size may have been a lie of
        // a corrupt inode that ext4-view then reports as an error or a short file).
        let n = file.read_bytes(&mut data[done..])?;
        if n == 0 {
            break;
        }
        done += n;
    }
    data.truncate(done);
    Ok(data)
}

/// `/a/b` from `[a, b]`; `/` for the root. A component that is empty, `.`, `..`, or holds
/// `/` or NUL is refused (the interface never passes one).
fn absolute(path: &[Vec<u8>]) -> Result<Vec<u8>> {
    let mut abs = Vec::new();
    for c in path {
        if c.is_empty() || c == b"." || c == b".." || c.contains(&b'/') || c.contains(&0) {
            return Err(Error::refused(
                String::from_utf8_lossy(c),
                Refusal::InvalidArgument,
            ));
        }
        abs.push(b'/');
        abs.extend_from_slice(c);
    }
    if abs.is_empty() {
        abs.push(b'/');
    }
    Ok(abs)
}

/// The interface's kind of an ext4-view file type.
fn kind(t: FileType) -> EntryKind {
    match t {
        FileType::Regular => EntryKind::File,
        FileType::Directory => EntryKind::Dir,
        FileType::Symlink => EntryKind::Symlink,
        _ => EntryKind::Other,
    }
}

/// `UNIX_EPOCH + seconds.nanos`, clamped to the epoch where the platform cannot say it.
fn system_time(seconds: i64, nanos: u32) -> SystemTime {
    let since = Duration::new(seconds.unsigned_abs(), nanos.min(999_999_999));
    let t = if seconds >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(since)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(since)
    };
    t.unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The refusal `reason` for path `abs`.
fn refused(abs: &[u8], reason: Refusal) -> Error {
    Error::refused(String::from_utf8_lossy(abs), reason)
}

/// ovafs's error for ext4-view's `e` about `abs`: a missing path or a wrong kind is a
/// refusal; a failed read of the source is the source's own error; the rest is the crate's.
fn convert(abs: &[u8], e: Ext4Error) -> Error {
    let reason = match e {
        Ext4Error::NotFound => Refusal::NotFound,
        Ext4Error::NotADirectory => Refusal::NotAFolder,
        Ext4Error::IsADirectory => Refusal::IsAFolder,
        Ext4Error::NotASymlink | Ext4Error::MalformedPath | Ext4Error::PathTooLong => {
            Refusal::InvalidArgument
        }
        Ext4Error::Io(inner) => return source_error(inner),
        other => return Ext4FsError::Crate(other).into(),
    };
    refused(abs, reason)
}

/// The error of loading a file system: all of it is the crate's or the source's.
fn convert_load(e: Ext4Error) -> Error {
    match e {
        Ext4Error::Io(inner) => source_error(inner),
        other => Ext4FsError::Crate(other).into(),
    }
}

/// The source's own [`Error`] that [`SourceReader`] boxed, taken back out.
fn source_error(inner: Box<dyn std::error::Error + Send + Sync>) -> Error {
    match inner.downcast::<Error>() {
        Ok(e) => *e,
        Err(other) => Ext4FsError::Crate(Ext4Error::Io(other)).into(),
    }
}
