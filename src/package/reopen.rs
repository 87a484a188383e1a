//! Following a package across a commit that replaced its file (an OVA rewrite, a folder
//! package's renamed descriptor and manifest).
//!
//! Every member's bytes are a [`Movable`]: a source that can be re-pointed while readers use
//! it. After a commit reports `replaced`, [`Relocation::reopen`] opens the package file again,
//! indexes it, and points every member at its bytes in the new file, so that the mount reads
//! the new archive and the unlinked old one is closed once the last read in flight ends.
//! The members a commit rewrites (descriptor, manifest, certificate) keep the bytes they had
//! when the package was opened, copied into memory (they are small and bounded): the
//! package, like its integrity report, stays the package as mounted; the mount serves their
//! current content through the editor. A member that is not in the new archive with its
//! old name and size (which a commit never does) keeps reading the old file, with a warning.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::SourceKind;
use crate::archive::{self, MemberKind};
use crate::error::{Error, Result};
use crate::io::{FileSource, ReadAt, Window, read_vec_at};

/// Largest member copied into memory when a rewrite moves it (descriptor, manifest and
/// certificate are far smaller).
const MAX_KEPT_BYTES: u64 = 32 << 20;

/// Bytes that can be re-pointed to another source while readers use them. A read uses the
/// source current when it starts; the old source is dropped when its last read ends.
pub struct Movable {
    inner: RwLock<Arc<dyn ReadAt>>,
    /// The current source's length (read on every access, so kept apart from the lock).
    len: AtomicU64,
}

impl Movable {
    /// Bytes served from `inner` until re-pointed.
    pub fn new(inner: Arc<dyn ReadAt>) -> Self {
        Movable {
            len: AtomicU64::new(inner.len()),
            inner: RwLock::new(inner),
        }
    }

    /// The current source.
    pub fn current(&self) -> Arc<dyn ReadAt> {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Serves `to` from now on.
    pub fn repoint(&self, to: Arc<dyn ReadAt>) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        self.len.store(to.len(), Ordering::Relaxed);
        *inner = to;
    }
}

impl ReadAt for Movable {
    fn len(&self) -> u64 {
        self.len.load(Ordering::Relaxed)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.current().read_at(offset, buf)
    }
}

/// One member as the relocation knows it.
struct Placed {
    name: String,
    size: u64,
    data: Arc<Movable>,
    /// A member a commit rewrites: kept in memory instead of re-pointed.
    kept: bool,
}

/// What is needed to follow a package into its replacement.
pub struct Relocation {
    /// The real path of the package file (the `.ova`; unused for a folder).
    real_path: PathBuf,
    /// Owner of the package file when it was opened.
    owner: Option<u32>,
    kind: SourceKind,
    /// The archive as a whole (OVA only).
    archive: Option<Arc<Movable>>,
    members: RwLock<Vec<Placed>>,
}

impl Relocation {
    /// A relocation for a package of `kind` at `real_path`; members are added with
    /// [`Relocation::track`].
    /// `owner` is the uid of the package file as opened.
    pub(super) fn new(
        real_path: PathBuf,
        kind: SourceKind,
        archive: Option<Arc<Movable>>,
        owner: Option<u32>,
    ) -> Self {
        Relocation {
            owner,
            real_path,
            kind,
            archive,
            members: RwLock::new(Vec::new()),
        }
    }

    /// A relocation that follows nothing (a package that is never rewritten).
    pub(super) fn none() -> Self {
        Relocation::new(PathBuf::new(), SourceKind::Folder, None, None)
    }

    /// Follows member `name` (`size` bytes) served by `data`.
    pub(super) fn track(&self, name: &str, size: u64, data: Arc<Movable>) {
        self.members
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Placed {
                name: name.to_string(),
                size,
                data,
                kept: false,
            });
    }

    /// Marks the members that commits rewrite (by name).
    pub(super) fn keep(&self, names: &[&str]) {
        for p in self
            .members
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .iter_mut()
        {
            if names.contains(&p.name.as_str()) {
                p.kept = true;
            }
        }
    }

    /// Re-points every member at the package file as it is now (after a commit that
    /// replaced it, or replaced the members named in `replaced`, whose sizes may have
    /// changed). Returns how many members now read the new file.
    pub fn reopen(&self, replaced: &[String]) -> Result<usize> {
        let mut members = self.members.write().unwrap_or_else(|p| p.into_inner());
        let is_replaced = |p: &Placed| replaced.contains(&p.name);
        for p in members.iter().filter(|p| p.kept) {
            let old = p.data.current();
            match read_vec_at(&*old, "member", 0, p.size, MAX_KEPT_BYTES) {
                Ok(bytes) => p.data.repoint(Arc::new(bytes)),
                Err(e) => log::warn!("{}: keeps reading the old file: {e}", p.name),
            }
        }
        if self.kind == SourceKind::Folder {
            // Settings commits replace only the descriptor and the manifest (kept above);
            // a replaced member (a committed disk) is a new file of the folder.
            let mut moved = 0;
            for p in members.iter_mut().filter(|p| !p.kept && is_replaced(p)) {
                let src = self.open_folder_member(&p.name)?;
                p.size = src.len();
                p.data.repoint(src);
                moved += 1;
            }
            return Ok(moved);
        }
        let shown = self.real_path.display().to_string();
        let file = match self.open_followed(&self.real_path)? {
            Ok(file) => file,
            Err(uid) => {
                log::warn!(
                    "{shown} is now owned by uid {uid} (not this mount's owner or the package's); \
                     the mount keeps reading the file it opened"
                );
                return Ok(0);
            }
        };
        let src: Arc<dyn ReadAt> = Arc::new(FileSource::from_file(file, &self.real_path)?);
        let index = archive::index(&*src).map_err(|e| e.context(shown.clone()))?;
        let found: HashMap<&str, (u64, u64)> = index
            .members
            .iter()
            .filter(|m| m.kind == MemberKind::Regular)
            .map(|m| (m.name.as_str(), (m.data_offset, m.size)))
            .collect();
        let mut moved = 0;
        for p in members.iter_mut().filter(|p| !p.kept) {
            let resized = is_replaced(p);
            match found.get(p.name.as_str()) {
                Some(&(offset, size)) if size == p.size || resized => {
                    p.size = size;
                    p.data
                        .repoint(Arc::new(Window::new(src.clone(), offset, size)?));
                    moved += 1;
                }
                _ => log::warn!(
                    "{shown}: member {:?} is not in the rewritten archive as it was; it keeps \
                     reading the old archive",
                    p.name
                ),
            }
        }
        if let Some(a) = &self.archive {
            a.repoint(src);
        }
        Ok(moved)
    }

    /// Opens member `name` of a folder package anew (a file a commit put in place).
    fn open_folder_member(&self, name: &str) -> Result<Arc<dyn ReadAt>> {
        let root = self.real_path.parent().unwrap_or(std::path::Path::new("/"));
        let path = root.join(name);
        match self.open_followed(&path)? {
            Ok(file) => Ok(Arc::new(FileSource::from_file(file, &path)?)),
            Err(uid) => Err(Error::refused(
                format!(
                    "{}: owned by uid {uid}, not this user or the package's owner",
                    path.display()
                ),
                crate::error::Refusal::AccessDenied,
            )),
        }
    }

    /// Opens `path` to follow the package into it, with the rules the package was opened
    /// with: no symbolic link, a regular file written by this process's user (the commit)
    /// or the package's owner; `Err(uid)` names the owner of a file that breaks them (one
    /// that another user renamed into place is not followed).
    fn open_followed(&self, path: &std::path::Path) -> Result<std::result::Result<File, u32>> {
        let shown = path.display().to_string();
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| Error::io(format!("cannot reopen {shown}"), e))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io(format!("cannot stat {shown}"), e))?;
        let euid = nix::unistd::geteuid().as_raw();
        if !meta.is_file() || (meta.uid() != euid && Some(meta.uid()) != self.owner) {
            return Ok(Err(meta.uid()));
        }
        Ok(Ok(file))
    }
}
