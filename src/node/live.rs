//! A file whose content is produced on demand and edited as a whole: the descriptor, the
//! manifest, each settings file, the status report.
//!
//! Where the bytes come from and where new ones go is a [`LiveSource`]; this file does what
//! every such file shares. Each open handle keeps the new content it is writing, and checks
//! it as a complete value at every `write()` (so `echo banana > cpus` fails in the shell).
//! The content is stored at `close()` (flush), `fsync()` and release, and when a file is
//! renamed over it. A value refused at `write()` is dropped, nothing of that handle is
//! stored, and every close says so again. Every refusal is kept in [`Refusals`] for the
//! status report, with its value hidden when the file holds a secret or others may not read
//! it.

use std::any::Any;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use super::refusals::Refusals;
use super::{
    Background, BlockSize, Caching, FileAttributes, FileNode, OpenFile, OpenMode, read_slice,
    write_into,
};
use crate::error::{Error, ErrorKind, Refusal, Result};

/// Where a live file's content comes from and goes to.
pub trait LiveSource: Send + Sync {
    /// The current content.
    fn read(&self) -> Result<Arc<[u8]>>;

    /// Largest content accepted (bounds the memory of write buffers).
    fn max_len(&self) -> u64;

    /// Whether `data` would be accepted as the complete new content, checked at every
    /// `write()`. Content written in several calls (the descriptor) may accept anything here
    /// and check in [`LiveSource::store`].
    fn check(&self, data: &[u8]) -> Result<()>;

    /// Validates `data` as the new content and persists it; the change is durable when this
    /// returns `Ok`. An invalid value changes nothing.
    fn store(&self, data: &[u8]) -> Result<()>;
}

/// How a live file is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveMode {
    /// Accepts new content.
    pub writable: bool,
    /// Holds a secret (a password property): readable by its owner only, and a refused
    /// value is never shown.
    pub secret: bool,
    /// The permission bits that group and others may get at most: those of the package file
    /// the content comes from (a setting is no more readable than the descriptor).
    pub ceiling: u32,
}

impl LiveMode {
    /// The permission bits shown.
    pub fn bits(&self) -> u32 {
        let mode = match (self.writable, self.secret) {
            (true, false) => 0o644,
            (true, true) => 0o600,
            (false, false) => 0o444,
            (false, true) => 0o400,
        };
        (mode & 0o700) | (mode & self.ceiling & 0o077)
    }
}

/// A live file.
pub struct LiveFile {
    /// Its path in the mount (for the status report).
    path: String,
    source: Box<dyn LiveSource>,
    mode: u32,
    secret: bool,
    mtime: Mutex<SystemTime>,
    refusals: Arc<Refusals>,
}

impl LiveFile {
    /// The live file at `path`, served by `source`.
    pub fn new(
        path: &str,
        source: Box<dyn LiveSource>,
        mode: LiveMode,
        refusals: Arc<Refusals>,
    ) -> Self {
        LiveFile {
            path: path.to_string(),
            source,
            mode: mode.bits(),
            secret: mode.secret,
            mtime: Mutex::new(SystemTime::now()),
            refusals,
        }
    }

    fn writable(&self) -> bool {
        self.mode & 0o200 != 0
    }

    // The time is replaced whole: a panic cannot leave it half written.
    fn mtime(&self) -> MutexGuard<'_, SystemTime> {
        self.mtime.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `data` as the complete new content.
    fn store(&self, data: &[u8]) -> Result<()> {
        if let Err(e) = self.source.store(data) {
            self.note_refusal(data, &e);
            return Err(e);
        }
        *self.mtime() = SystemTime::now();
        Ok(())
    }

    /// Keeps a refused write of `data` for the status report. The status files are
    /// world-readable, so the value is hidden for a file that holds a secret or that others
    /// may not read.
    fn note_refusal(&self, data: &[u8], e: &Error) {
        let private = self.secret || self.mode & 0o004 == 0;
        self.refusals
            .record(&self.path, data, private, &e.to_string());
    }

    /// The content to change: the handle's buffer if it has one, else the current content.
    fn base(&self, buf: &Option<Vec<u8>>) -> Result<Vec<u8>> {
        match buf {
            Some(b) => Ok(b.clone()),
            None => Ok(self.source.read()?.to_vec()),
        }
    }
}

impl FileNode for LiveFile {
    fn attributes(&self, _background: &dyn Background) -> FileAttributes {
        FileAttributes {
            size: self.source.read().map_or(0, |b| b.len() as u64),
            allocated: None,
            mode: self.mode,
            mtime: *self.mtime(),
            block_size: BlockSize::Normal,
        }
    }

    fn caching(&self) -> Caching {
        Caching::Changing
    }

    fn open(self: Arc<Self>, mode: OpenMode) -> Result<Arc<dyn OpenFile>> {
        if mode.write && !self.writable() {
            return Err(Error::refused(self.path.clone(), Refusal::AccessDenied));
        }
        let truncated = mode.write && (mode.truncate || mode.recreate);
        Ok(Arc::new(LiveHandle {
            file: self,
            state: Mutex::new(HandleState {
                buf: truncated.then(Vec::new),
                dirty: truncated,
                written: false,
                refused: None,
            }),
        }))
    }

    /// A truncation without an open file (`truncate -s 0 cpus`) is a complete edit.
    fn set_len(&self, len: u64) -> Result<()> {
        if !self.writable() {
            return Err(Error::refused(self.path.clone(), Refusal::AccessDenied));
        }
        let mut data = resized(self.source.read()?.to_vec(), len, self.source.max_len())?;
        data.shrink_to_fit();
        self.store(&data)
    }

    fn set_times(&self, _mode: Option<u32>, mtime: Option<SystemTime>) {
        // Modes are the file's own; times an editor copies are kept.
        if let Some(t) = mtime {
            *self.mtime() = t;
        }
    }

    fn edited_whole(&self) -> bool {
        true
    }

    fn replace(&self, data: &[u8]) -> Result<()> {
        if !self.writable() {
            return Err(Error::refused(self.path.clone(), Refusal::NotPermitted));
        }
        self.store(data)
    }

    fn contents(&self) -> Result<Arc<[u8]>> {
        self.source.read()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `data` truncated or zero-extended to `len`, within `max`.
fn resized(mut data: Vec<u8>, len: u64, max: u64) -> Result<Vec<u8>> {
    if len > max {
        return Err(Error::refused("truncate", Refusal::TooLarge));
    }
    // OK to cast: len <= max, a small bound.
    data.resize(len as usize, 0);
    Ok(data)
}

struct HandleState {
    /// New content, once the handle has written or truncated.
    buf: Option<Vec<u8>>,
    /// The buffer differs from what was last stored.
    dirty: bool,
    /// Something was written (or explicitly truncated) through this handle. A buffer that
    /// was only emptied by `O_TRUNC` is not stored at `flush`: a shell's `echo 4 > cpus`
    /// closes a duplicate of the descriptor before it writes.
    written: bool,
    /// Why the last write was refused, repeated at every close.
    refused: Option<String>,
}

/// One open of a live file.
struct LiveHandle {
    file: Arc<LiveFile>,
    state: Mutex<HandleState>,
}

impl LiveHandle {
    // Every field is replaced whole: a panic cannot leave the state half written.
    fn state(&self) -> MutexGuard<'_, HandleState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Persists the buffer if it changed: at flush and fsync when something was written, at
    /// release whatever made it dirty (a bare truncation, say).
    fn store_pending(&self, releasing: bool) -> Result<()> {
        let data = {
            let st = self.state();
            if let Some(why) = &st.refused {
                return Err(Error::new(ErrorKind::InvalidEdit(why.clone())));
            }
            match (&st.buf, st.dirty && (st.written || releasing)) {
                (Some(buf), true) => buf.clone(),
                _ => return Ok(()),
            }
        };
        self.file.store(&data)?;
        let mut st = self.state();
        if st.buf.as_deref() == Some(data.as_slice()) {
            st.dirty = false;
        }
        Ok(())
    }
}

impl OpenFile for LiveHandle {
    fn len(&self) -> u64 {
        if let Some(buf) = &self.state().buf {
            return buf.len() as u64;
        }
        self.file.source.read().map_or(0, |b| b.len() as u64)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if let Some(data) = &self.state().buf {
            return Ok(read_slice(data, offset, buf));
        }
        Ok(read_slice(&self.file.source.read()?, offset, buf))
    }

    /// Into the handle's buffer, then checked as a complete value.
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        let mut st = self.state();
        let mut buf = self.file.base(&st.buf)?;
        write_into(&mut buf, offset, data, self.file.source.max_len())?;
        match self.file.source.check(&buf) {
            Ok(()) => {
                st.buf = Some(buf);
                st.dirty = true;
                st.written = true;
                st.refused = None;
                Ok(())
            }
            Err(e) => {
                // The refused bytes are dropped and nothing of this handle is stored: the
                // old value stays; every close says so again.
                st.refused = Some(e.to_string());
                st.dirty = false;
                drop(st);
                self.file.note_refusal(&buf, &e);
                Err(e)
            }
        }
    }

    /// Checked when written or closed: an editor truncates before it writes.
    fn set_len(&self, len: u64) -> Result<()> {
        let mut st = self.state();
        let buf = resized(self.file.base(&st.buf)?, len, self.file.source.max_len())?;
        st.buf = Some(buf);
        st.dirty = true;
        st.written = true;
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.store_pending(false)
    }

    /// A refused value was already reported at every close: only new failures are errors.
    fn release(&self) -> Result<()> {
        if self.state().refused.is_some() {
            return Ok(());
        }
        self.store_pending(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that accepts digits only, and counts stores.
    struct Digits {
        value: Mutex<Vec<u8>>,
        stores: Mutex<usize>,
    }

    impl LiveSource for Arc<Digits> {
        fn read(&self) -> Result<Arc<[u8]>> {
            Ok(Arc::from(self.value.lock().unwrap().as_slice()))
        }
        fn max_len(&self) -> u64 {
            16
        }
        fn check(&self, data: &[u8]) -> Result<()> {
            if data.iter().all(|b| b.is_ascii_digit() || *b == b'\n') {
                Ok(())
            } else {
                Err(Error::new(ErrorKind::InvalidEdit("not a number".into())))
            }
        }
        fn store(&self, data: &[u8]) -> Result<()> {
            self.check(data)?;
            *self.stores.lock().unwrap() += 1;
            *self.value.lock().unwrap() = data.to_vec();
            Ok(())
        }
    }

    fn file() -> (Arc<LiveFile>, Arc<Digits>, Arc<Refusals>) {
        let digits = Arc::new(Digits {
            value: Mutex::new(b"2\n".to_vec()),
            stores: Mutex::new(0),
        });
        let refusals = Arc::new(Refusals::default());
        let mode = LiveMode {
            writable: true,
            secret: false,
            ceiling: 0o777,
        };
        let f = LiveFile::new("vm/cpus", Box::new(digits.clone()), mode, refusals.clone());
        (Arc::new(f), digits, refusals)
    }

    fn writing(truncate: bool) -> OpenMode {
        OpenMode {
            write: true,
            truncate,
            recreate: false,
        }
    }

    #[test]
    fn a_shell_redirect_stores_once_at_close() {
        let (f, digits, _) = file();
        // `echo 4 > cpus`: the shell's duplicate closes before anything is written.
        let h = f.clone().open(writing(true)).unwrap();
        h.flush().unwrap();
        assert_eq!(*digits.stores.lock().unwrap(), 0);
        h.write_at(0, b"4\n").unwrap();
        assert_eq!(h.len(), 2);
        h.flush().unwrap();
        h.release().unwrap();
        assert_eq!(*digits.stores.lock().unwrap(), 1);
        assert_eq!(&*digits.read().unwrap(), b"4\n");
    }

    #[test]
    fn a_refused_value_changes_nothing_and_is_reported_at_every_close() {
        let (f, digits, refusals) = file();
        let h = f.clone().open(writing(true)).unwrap();
        let e = h.write_at(0, b"banana\n").unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::InvalidEdit(_)));
        assert!(h.flush().is_err());
        assert!(h.flush().is_err());
        h.release().unwrap();
        assert_eq!(&*digits.read().unwrap(), b"2\n");
        let r = refusals.list();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].path, "vm/cpus");
        assert_eq!(r[0].value, "\"banana\\n\"");
    }

    #[test]
    fn modes_follow_secrets_and_the_ceiling() {
        let m = |writable, secret, ceiling| {
            LiveMode {
                writable,
                secret,
                ceiling,
            }
            .bits()
        };
        assert_eq!(m(true, false, 0o777), 0o644);
        assert_eq!(m(true, true, 0o777), 0o600);
        assert_eq!(m(false, false, 0o640), 0o440);
        assert_eq!(m(false, true, 0o777), 0o400);
        let (f, _, _) = file();
        assert!(f.edited_whole());
        let ro = LiveFile::new(
            "m.mf",
            Box::new(Arc::new(Digits {
                value: Mutex::new(Vec::new()),
                stores: Mutex::new(0),
            })),
            LiveMode {
                writable: false,
                secret: false,
                ceiling: 0o777,
            },
            Arc::new(Refusals::default()),
        );
        let e = Arc::new(ro).open(writing(false)).err().unwrap();
        assert_eq!(e.refusal(), Some(Refusal::AccessDenied));
    }
}
