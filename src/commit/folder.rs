//! Commits into an unpacked package: new `.ovf` and `.mf` written to temporary files in the
//! package folder, then renamed over the old ones (and the certificate removed) under a
//! journal, so that a crash never leaves a new descriptor beside an old manifest
//! (formats.md §1.5).

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::journal::{Identity, Journal, Kind, Op};
use super::{
    CommitError, CommitOptions, CommitPath, CommitReport, FaultPoint, MAX_MANIFEST_BYTES,
    check_dir_writable, check_writable, fsync_dir, journal_path, lock_dir, manifest,
    remove_journal, split_path, temp_prefix, write_journal,
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
/// exists), fsyncs it and keeps it; returns its file name.
fn write_temp(dir: &Path, prefix: &str, bytes: &[u8], like: &Path) -> Result<String> {
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
    let (_, path) = tmp
        .keep()
        .map_err(|e| Error::io(format!("keep {shown}"), e.error))?;
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| {
            CommitError::BadPath {
                path: path.clone(),
                reason: "temporary file without a UTF-8 name",
            }
            .into()
        })
}

/// Carries out folder journal operations: each rename only if its temporary file is still
/// there, each removal only if the file is still there (so replaying is harmless).
pub(super) fn apply_ops(dir: &Path, ops: &[Op], opts: &CommitOptions) -> Result<()> {
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Rename { from, to } => {
                let from = dir.join(from);
                if from.exists() {
                    fs::rename(&from, dir.join(to))
                        .map_err(|e| Error::io(format!("rename {} to {to}", from.display()), e))?;
                }
            }
            Op::Remove { name } => match fs::remove_file(dir.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("remove {name}"), e)),
            },
            Op::Write { .. } => {}
        }
        opts.fault(FaultPoint::Applied { op: i, half: 1 });
    }
    fsync_dir(dir)
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
        if journal_path(&dir, &file_name).exists() {
            return Err(Error::io(
                format!(
                    "{} has a journal beside it: recover it first",
                    path.display()
                ),
                std::io::Error::from_raw_os_error(libc::EBUSY),
            ));
        }
        let descriptor = read_capped(&path, MAX_DESCRIPTOR_BYTES)?.unwrap_or_default();
        Ok(FolderCommitter {
            path,
            dir,
            file_name,
            manifest_name,
            certificate_name: sibling(pkg.certificate_member),
            descriptor,
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn descriptor(&self) -> &[u8] {
        &self.descriptor
    }

    pub(super) fn commit(&mut self, new: &[u8], opts: &CommitOptions) -> Result<CommitReport> {
        let _lock = lock_dir(&self.dir)?;
        let journal = journal_path(&self.dir, &self.file_name);
        if journal.exists() {
            super::recover::recover_locked(&self.path, &self.dir, &self.file_name)?;
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
        let result = (|| -> Result<()> {
            let t = write_temp(&self.dir, &prefix, new, &self.path)?;
            temps.push(t.clone());
            written += new.len() as u64;
            ops.push(Op::Rename {
                from: t,
                to: self.file_name.clone(),
            });
            if let (Some(r), Some(name), Some(p)) = (&refresh, &self.manifest_name, &manifest_path)
                && r.changed
            {
                let t = write_temp(&self.dir, &prefix, &r.bytes, p)?;
                temps.push(t.clone());
                written += r.bytes.len() as u64;
                ops.push(Op::Rename {
                    from: t,
                    to: name.clone(),
                });
            }
            if let Some(c) = &drop_cert {
                ops.push(Op::Remove { name: c.clone() });
            }
            fsync_dir(&self.dir)?;
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
        apply_ops(&self.dir, &ops, opts)?;
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

/// The last component of a member name.
fn file_name_of(name: &str) -> &str {
    file_name(name)
}
