//! Commits into an unpacked package: new `.ovf` and `.mf` written to temporary files in the
//! package folder, then renamed over the old ones (and the certificate removed) under a
//! journal, so that a crash never leaves a new descriptor beside an old manifest
//! (formats.md §1.5). The committer holds the write lock on the `.ovf` ([`super::lock`]);
//! the new `.ovf` is locked before it is renamed over the old one, so the lock moves with it.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::journal::{self, Identity, Journal, Kind, Op, Target};
use super::lock::{self, Attempt, PackageLock};
use super::trust::Folder;
use super::{
    CommitError, CommitOptions, CommitPath, CommitReport, FaultPoint, MAX_MANIFEST_BYTES,
    check_dir_writable, check_writable, journal_beside, journal_path, journal_waits, locked,
    manifest, new_file_busy, read_only, recover_before_commit, remove_journal, split_path,
    temp_prefix, write_journal,
};
use crate::archive::names::file_name;
use crate::error::{Error, Result};
use crate::ovf::MAX_DESCRIPTOR_BYTES;
use crate::package::Package;

pub(super) struct FolderCommitter {
    /// Real path of the `.ovf`.
    path: PathBuf,
    dir: PathBuf,
    file_name: String,
    manifest_name: Option<String>,
    certificate_name: Option<String>,
    descriptor: Vec<u8>,
    folder: Folder,
    /// The write lock on the current `.ovf`.
    lock: PackageLock,
}

/// Reads a whole small file, refusing one above `cap`; `None` when it does not exist.
fn read_capped(path: &Path, cap: u64) -> Result<Option<Vec<u8>>> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("stat {}", path.display()), e)),
    };
    if meta.len() > cap {
        return Err(crate::error::ErrorKind::LimitExceeded {
            what: "file",
            value: meta.len(),
            limit: cap,
        }
        .into());
    }
    fs::read(path)
        .map(Some)
        .map_err(|e| Error::io(format!("read {}", path.display()), e))
}

/// Writes `bytes` to a new temporary file in `dir` with the permissions of `like` (when it
/// exists), fsyncs it and keeps it; returns its file name and the open file.
fn write_temp(dir: &Path, prefix: &str, bytes: &[u8], like: &Path) -> Result<(String, File)> {
    let mut tmp = tempfile::Builder::new()
        .prefix(prefix)
        .tempfile_in(dir)
        .map_err(|e| Error::io(format!("create a temporary file in {}", dir.display()), e))?;
    let shown = tmp.path().display().to_string();
    let io = |e| Error::io(format!("write {shown}"), e);
    if let Ok(meta) = fs::metadata(like) {
        tmp.as_file()
            .set_permissions(meta.permissions())
            .map_err(io)?;
        // Best effort: only root may give a file away.
        let _ = std::os::unix::fs::fchown(tmp.as_file(), Some(meta.uid()), Some(meta.gid()));
    }
    tmp.write_all(bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    let (file, path) = tmp
        .keep()
        .map_err(|e| Error::io(format!("keep {shown}"), e.error))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| CommitError::BadPath {
            path: path.clone(),
            reason: "temporary file without a UTF-8 name",
        })?;
    Ok((name, file))
}

impl FolderCommitter {
    pub(super) fn open(pkg: &Package) -> Result<FolderCommitter> {
        let (path, dir, file_name) = split_path(&pkg.path)?;
        let meta =
            fs::metadata(&path).map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
        check_writable(&path, &meta)?;
        check_dir_writable(&dir)?;
        let sibling = |i: Option<usize>| -> Option<String> {
            i.and_then(|i| pkg.members.get(i))
                .map(|m| file_name_of(&m.name).to_string())
        };
        let manifest_name = sibling(pkg.manifest_member);
        if let Some(m) = &manifest_name {
            let p = dir.join(m);
            if let Ok(meta) = fs::metadata(&p) {
                check_writable(&p, &meta)?;
            }
        }
        let folder = Folder::open(&dir)?;
        let lock = match lock::acquire(&folder, &file_name)? {
            Attempt::Locked(l) => l,
            Attempt::HeldElsewhere => return Err(locked(&folder, &file_name)),
            Attempt::CannotWrite(why) => return Err(read_only(&path, &why)),
        };
        if journal_waits(&folder, &file_name)? {
            return Err(journal_beside(&folder, &file_name));
        }
        let descriptor = read_capped(&path, MAX_DESCRIPTOR_BYTES)?.unwrap_or_default();
        Ok(FolderCommitter {
            path,
            dir,
            file_name,
            manifest_name,
            certificate_name: sibling(pkg.certificate_member),
            descriptor,
            folder,
            lock,
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn descriptor(&self) -> &[u8] {
        &self.descriptor
    }

    pub(super) fn commit(&mut self, new: &[u8], opts: &CommitOptions) -> Result<CommitReport> {
        let journal = journal_path(&self.dir, &self.file_name);
        if !self.lock.is_at(&self.folder, &self.file_name)? {
            // Someone replaced the `.ovf` behind our back: lock the file there now.
            self.relock()?;
        }
        if journal_waits(&self.folder, &self.file_name)? {
            recover_before_commit(&self.folder, &self.file_name)?;
        }
        self.descriptor = read_capped(&self.path, MAX_DESCRIPTOR_BYTES)?.unwrap_or_default();
        let manifest_path = self.manifest_name.as_ref().map(|n| self.dir.join(n));
        let old_manifest = match &manifest_path {
            Some(p) => read_capped(p, MAX_MANIFEST_BYTES)?,
            None => None,
        };
        if new == self.descriptor.as_slice() {
            return Ok(CommitReport {
                path: CommitPath::Unchanged,
                descriptor: self.descriptor.clone(),
                manifest: old_manifest,
                manifest_changed: false,
                certificate_dropped: None,
                bytes_written: 0,
                elapsed: Default::default(),
                replaced: false,
            });
        }
        let refresh = match &old_manifest {
            Some(m) => Some(manifest::refresh(m, &self.file_name, new).map_err(CommitError::from)?),
            None => None,
        };
        let manifest_changed = refresh.as_ref().is_some_and(|r| r.changed);
        let drop_cert = match &self.certificate_name {
            Some(c) if manifest_changed && self.dir.join(c).exists() => Some(c.clone()),
            _ => None,
        };

        let prefix = temp_prefix(&self.file_name);
        let mut temps = Vec::new();
        let mut ops = Vec::new();
        let mut written = 0u64;
        let mut new_lock = None;
        let result = (|| -> Result<()> {
            let (t, file) = write_temp(&self.dir, &prefix, new, &self.path)?;
            temps.push(t.clone());
            // Locked before it becomes the `.ovf`, so that the lock moves with the name.
            new_lock = Some(
                PackageLock::try_on(&file)?.ok_or_else(|| new_file_busy(&self.folder.shown(&t)))?,
            );
            written += new.len() as u64;
            ops.push(Op::Rename {
                from: t,
                to: self.file_name.clone(),
                sha256: journal::digest(new),
            });
            if let (Some(r), Some(name), Some(p)) = (&refresh, &self.manifest_name, &manifest_path)
                && r.changed
            {
                let (t, _) = write_temp(&self.dir, &prefix, &r.bytes, p)?;
                temps.push(t.clone());
                written += r.bytes.len() as u64;
                ops.push(Op::Rename {
                    from: t,
                    to: name.clone(),
                    sha256: journal::digest(&r.bytes),
                });
            }
            if let Some(c) = &drop_cert {
                ops.push(Op::Remove { name: c.clone() });
            }
            self.folder.sync()?;
            opts.fault(FaultPoint::TempsDurable);
            let bytes = Journal {
                kind: Kind::Folder,
                target: Identity::default(),
                ops: ops.clone(),
            }
            .encode();
            written += bytes.len() as u64;
            write_journal(&journal, &bytes, opts)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&journal);
            for t in &temps {
                let _ = fs::remove_file(self.dir.join(t));
            }
            return Err(e);
        }
        // The journal is durable: a failure from here is completed by recovery.
        let j = Journal {
            kind: Kind::Folder,
            target: Identity::default(),
            ops,
        };
        let applied = journal::apply(&j, Target::Folder(&self.folder), &|p| opts.fault(p));
        if let Some(l) = new_lock.take()
            && l.is_at(&self.folder, &self.file_name)?
        {
            self.lock = l;
        }
        applied?;
        opts.fault(FaultPoint::AppliedDurable);
        remove_journal(&journal, opts)?;

        if drop_cert.is_some() {
            self.certificate_name = None;
        }
        self.descriptor = new.to_vec();
        Ok(CommitReport {
            path: CommitPath::Folder,
            descriptor: self.descriptor.clone(),
            manifest: refresh.map(|r| r.bytes),
            manifest_changed,
            certificate_dropped: drop_cert,
            bytes_written: written,
            elapsed: Default::default(),
            replaced: true,
        })
    }
}

impl FolderCommitter {
    /// Locks the `.ovf` the name holds now (after someone else replaced it).
    fn relock(&mut self) -> Result<()> {
        match lock::acquire(&self.folder, &self.file_name)? {
            Attempt::Locked(l) => {
                self.lock = l;
                Ok(())
            }
            Attempt::HeldElsewhere => Err(locked(&self.folder, &self.file_name)),
            Attempt::CannotWrite(why) => Err(read_only(&self.path, &why)),
        }
    }
}

/// The last component of a member name.
fn file_name_of(name: &str) -> &str {
    file_name(name)
}
