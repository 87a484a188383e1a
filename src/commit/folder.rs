//! Commits into an unpacked package: new data files, `.ovf`, `.mf` and `.cert` written to temporary
//! files in the package folder, then renamed over the old ones (removed files and a dropped
//! certificate unlinked) under a journal, so that a crash never leaves a new descriptor beside an
//! old manifest or disk (docs/formats.md §1.5). Change-set member names are plain file names in the
//! package folder. The committer holds the write lock on the `.ovf` ([`super::lock`]); the new
//! `.ovf` is locked before it is renamed over the old one, so the lock moves with it.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::journal::{self, FileId, Identity, Journal, Kind, Op, Target};
use super::lock::{self, Attempt, PackageLock};
use super::trust::Folder;
use super::{
    CertificateAction, CertificateFate, ChangeSet, CommitError, CommitOptions, CommitPath,
    CommitReport, Content, Copied, FaultPoint, MAX_MANIFEST_BYTES, bad_change, check_dir_writable,
    check_writable, copy_content, journal_beside, journal_path, journal_waits, locked, manifest,
    new_file_busy, read_only, recover_before_commit, remove_journal, split_path, temp_prefix,
    write_journal,
};
use crate::archive::names::file_name;
use crate::error::{Error, Result};
use crate::ovf::MAX_DESCRIPTOR_BYTES;
use crate::package::Package;
use crate::verify::digest::DigestAlgorithm;

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

/// A new temporary file in `dir` with the permissions (and, for root, the owner) of `like`
/// when it exists.
fn new_temp(dir: &Path, prefix: &str, like: &Path) -> Result<tempfile::NamedTempFile> {
    let tmp = tempfile::Builder::new()
        .prefix(prefix)
        .tempfile_in(dir)
        .map_err(|e| Error::io(format!("create a temporary file in {}", dir.display()), e))?;
    if let Ok(meta) = fs::metadata(like) {
        tmp.as_file()
            .set_permissions(meta.permissions())
            .map_err(|e| Error::io(format!("chmod {}", tmp.path().display()), e))?;
        // Best effort: only root may give a file away.
        let _ = std::os::unix::fs::fchown(tmp.as_file(), Some(meta.uid()), Some(meta.gid()));
    }
    Ok(tmp)
}

/// Keeps a temporary file (it is renamed under the journal later); returns its name.
fn keep_temp(tmp: tempfile::NamedTempFile) -> Result<(String, File)> {
    let shown = tmp.path().display().to_string();
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

/// Writes `bytes` to a new temporary file in `dir` with the permissions of `like` (when it
/// exists), fsyncs it and keeps it; returns its file name and the open file.
fn write_temp(dir: &Path, prefix: &str, bytes: &[u8], like: &Path) -> Result<(String, File)> {
    let mut tmp = new_temp(dir, prefix, like)?;
    let shown = tmp.path().display().to_string();
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| Error::io(format!("write {shown}"), e))?;
    keep_temp(tmp)
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

    pub(super) fn commit(&mut self, cs: &ChangeSet, opts: &CommitOptions) -> Result<CommitReport> {
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
        let cert_now = match &self.certificate_name {
            Some(c) if self.folder.lstat(c)?.is_some() => Some(c.clone()),
            _ => None,
        };
        let new = cs
            .descriptor
            .as_deref()
            .filter(|d| *d != self.descriptor.as_slice());
        let members = self.resolve(cs)?;
        let cert_untouched = match &cs.certificate {
            CertificateAction::Keep => true,
            CertificateAction::Drop => cert_now.is_none(),
            CertificateAction::Resign(_) => false,
        };
        if new.is_none() && cs.members_unchanged() && cert_untouched {
            return Ok(CommitReport {
                path: CommitPath::Unchanged,
                descriptor: self.descriptor.clone(),
                manifest: old_manifest,
                manifest_changed: false,
                certificate_dropped: None,
                certificate_bytes: None,
                certificate: cert_now.map_or(CertificateFate::None, CertificateFate::Kept),
                members_replaced: Vec::new(),
                members_added: Vec::new(),
                members_removed: Vec::new(),
                bytes_written: 0,
                elapsed: Default::default(),
                replaced: false,
            });
        }
        if matches!(cs.certificate, CertificateAction::Resign(_)) && old_manifest.is_none() {
            return Err(CommitError::Signer {
                reason: "the package has no manifest to sign".into(),
            }
            .into());
        }
        let algorithms = match &old_manifest {
            Some(m) => manifest::algorithms(m).map_err(CommitError::from)?,
            None => Vec::new(),
        };

        let prefix = temp_prefix(&self.file_name);
        let mut temps = Vec::new();
        let mut ops = Vec::new();
        let mut written = 0u64;
        let mut new_lock = None;
        let mut refresh = None;
        let mut certificate = cert_now
            .clone()
            .map_or(CertificateFate::None, CertificateFate::Kept);
        let mut certificate_bytes = None;
        let result = (|| -> Result<()> {
            // Members' new contents first: streamed into temporary files, digested on the way.
            let mut values = Vec::with_capacity(members.len());
            for m in &members {
                match m {
                    MemberChange::Put {
                        name,
                        content,
                        like,
                    } => {
                        let like = like.as_deref().unwrap_or(&self.path);
                        let (t, file, copied) = write_temp_content(
                            &self.dir,
                            &prefix,
                            content,
                            like,
                            &self.path,
                            &algorithms,
                        )?;
                        temps.push(t.clone());
                        let st = nix::sys::stat::fstat(&file).map_err(|e| {
                            Error::io(
                                format!("stat {}", self.folder.shown(&t)),
                                std::io::Error::from(e),
                            )
                        })?;
                        written += content.len;
                        ops.push(Op::Place {
                            from: t,
                            to: name.clone(),
                            file: FileId::of(&st),
                            sha256: copied.sha256,
                        });
                        values.push((name.as_str(), copied.values));
                    }
                    MemberChange::Remove { name, file } => ops.push(Op::Unlink {
                        name: name.clone(),
                        file: *file,
                    }),
                }
            }
            if let Some(new) = new {
                let (t, file) = write_temp(&self.dir, &prefix, new, &self.path)?;
                temps.push(t.clone());
                // Locked before it becomes the `.ovf`, so that the lock moves with the name.
                new_lock = Some(
                    PackageLock::try_on(&file)?
                        .ok_or_else(|| new_file_busy(&self.folder.shown(&t)))?,
                );
                written += new.len() as u64;
                ops.push(Op::Rename {
                    from: t,
                    to: self.file_name.clone(),
                    sha256: journal::digest(new),
                });
            }
            if let Some(m) = &old_manifest {
                let descriptor_values =
                    new.map(|d| manifest::MemberValues::of_bytes(d, &algorithms));
                let mut changes = manifest::Changes::default();
                if let Some(v) = &descriptor_values {
                    changes.set.push((&self.file_name, v));
                }
                // `values` holds one entry per `Put`, in order.
                let puts = members
                    .iter()
                    .filter(|m| matches!(m, MemberChange::Put { .. }));
                for (m, (name, v)) in puts.zip(&values) {
                    match m {
                        MemberChange::Put { like: Some(_), .. } => changes.set.push((name, v)),
                        _ => changes.add.push((name, v)),
                    }
                }
                for m in &members {
                    if let MemberChange::Remove { name, .. } = m {
                        changes.remove.push(name);
                    }
                }
                refresh = Some(manifest::refresh_members(m, &changes).map_err(CommitError::from)?);
            }
            let manifest_changed = refresh
                .as_ref()
                .is_some_and(|r: &manifest::Refresh| r.changed);
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
            match (&cs.certificate, &cert_now) {
                (CertificateAction::Resign(signer), _) => {
                    let mf = refresh
                        .as_ref()
                        .map(|r| r.bytes.clone())
                        .or(old_manifest.clone())
                        .unwrap_or_default();
                    let mf_name = self.manifest_name.clone().unwrap_or_default();
                    let alg = manifest::primary_algorithm(&mf, &self.file_name)
                        .map_err(CommitError::from)?;
                    let cert = signer.certificate_file(&mf_name, &mf, alg)?;
                    let name = cert_now
                        .clone()
                        .unwrap_or_else(|| new_certificate_name(&self.file_name));
                    let like = manifest_path.clone().unwrap_or_else(|| self.path.clone());
                    let (t, _) = write_temp(&self.dir, &prefix, &cert, &like)?;
                    temps.push(t.clone());
                    written += cert.len() as u64;
                    ops.push(Op::Rename {
                        from: t,
                        to: name.clone(),
                        sha256: journal::digest(&cert),
                    });
                    certificate = CertificateFate::Signed(name);
                    certificate_bytes = Some(cert);
                }
                (CertificateAction::Drop, Some(c)) => {
                    ops.push(Op::Remove { name: c.clone() });
                    certificate = CertificateFate::Dropped(c.clone());
                }
                (CertificateAction::Keep, Some(c)) if manifest_changed => {
                    ops.push(Op::Remove { name: c.clone() });
                    certificate = CertificateFate::Dropped(c.clone());
                }
                _ => {}
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

        match &certificate {
            CertificateFate::Dropped(_) | CertificateFate::None => self.certificate_name = None,
            CertificateFate::Signed(c) | CertificateFate::Kept(c) => {
                self.certificate_name = Some(c.clone())
            }
        }
        if let Some(new) = new {
            self.descriptor = new.to_vec();
        }
        let manifest_changed = refresh.as_ref().is_some_and(|r| r.changed);
        let name_of = |m: &MemberChange<'_>| match m {
            MemberChange::Put { name, .. } | MemberChange::Remove { name, .. } => name.clone(),
        };
        Ok(CommitReport {
            path: CommitPath::Folder,
            descriptor: self.descriptor.clone(),
            manifest: refresh.map(|r| r.bytes).or(old_manifest),
            manifest_changed,
            certificate_dropped: None,
            certificate_bytes,
            certificate,
            members_replaced: members
                .iter()
                .filter(|m| matches!(m, MemberChange::Put { like: Some(_), .. }))
                .map(name_of)
                .collect(),
            members_added: members
                .iter()
                .filter(|m| matches!(m, MemberChange::Put { like: None, .. }))
                .map(name_of)
                .collect(),
            members_removed: members
                .iter()
                .filter(|m| matches!(m, MemberChange::Remove { .. }))
                .map(name_of)
                .collect(),
            bytes_written: written,
            elapsed: Default::default(),
            replaced: true,
        })
    }

    /// Checks the change set's members against the folder: replaced and removed files must
    /// be there, added ones must not; all are plain names other than the package's own.
    fn resolve<'c>(&self, cs: &'c ChangeSet) -> Result<Vec<MemberChange<'c>>> {
        let own = |name: &str| {
            name.eq_ignore_ascii_case(&self.file_name)
                || self
                    .manifest_name
                    .as_deref()
                    .is_some_and(|m| name.eq_ignore_ascii_case(m))
                || self
                    .certificate_name
                    .as_deref()
                    .is_some_and(|c| name.eq_ignore_ascii_case(c))
                || name.eq_ignore_ascii_case(&new_certificate_name(&self.file_name))
                || name.starts_with('.')
                || name.ends_with(super::JOURNAL_SUFFIX)
        };
        let plain = |name: &str| -> Result<()> {
            if !journal::is_plain_name(name) || own(name) {
                return Err(bad_change(format!(
                    "{name:?} is not a data file name of this folder package (a plain name, not the descriptor's, manifest's or certificate's)"
                )));
            }
            Ok(())
        };
        let regular = |name: &str| -> Result<nix::sys::stat::FileStat> {
            match self.folder.lstat(name)? {
                Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFREG => Ok(st),
                _ => Err(bad_change(format!(
                    "{} is not a file of the package",
                    self.folder.shown(name)
                ))),
            }
        };
        let mut out = Vec::new();
        for (name, content) in &cs.replace {
            plain(name)?;
            regular(name)?;
            out.push(MemberChange::Put {
                name: name.clone(),
                content,
                like: Some(self.dir.join(name)),
            });
        }
        for (name, content) in &cs.add {
            plain(name)?;
            if self.folder.lstat(name)?.is_some() {
                return Err(bad_change(format!(
                    "{} is already there",
                    self.folder.shown(name)
                )));
            }
            out.push(MemberChange::Put {
                name: name.clone(),
                content,
                like: None,
            });
        }
        for name in &cs.remove {
            plain(name)?;
            let st = regular(name)?;
            out.push(MemberChange::Remove {
                name: name.clone(),
                file: FileId::of(&st),
            });
        }
        Ok(out)
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

/// A data file a change set writes or removes.
enum MemberChange<'c> {
    /// Written from `content` and renamed to `name`; `like` is the file it replaces (whose
    /// permissions it takes), `None` for a file added.
    Put {
        name: String,
        content: &'c Content,
        like: Option<PathBuf>,
    },
    /// Removed, if it is still this file.
    Remove { name: String, file: FileId },
}

/// The name a new certificate takes beside `ovf`: `NAME.cert` for `NAME.ovf`.
fn new_certificate_name(ovf: &str) -> String {
    let base = ovf.get(..ovf.len().saturating_sub(4)).unwrap_or(ovf);
    format!("{base}.cert")
}

/// Streams `content` into a new temporary file in `dir` (permissions of `like`, without
/// group/other write bits the descriptor `package` lacks), digesting it; fsyncs and keeps it.
fn write_temp_content(
    dir: &Path,
    prefix: &str,
    content: &Content,
    like: &Path,
    package: &Path,
    algorithms: &[DigestAlgorithm],
) -> Result<(String, File, Copied)> {
    let mut tmp = new_temp(dir, prefix, like)?;
    let shown = tmp.path().display().to_string();
    // Recovery trusts a temporary file only with the group/other write bits the package's
    // descriptor has: a data file's looser mode is not carried over.
    let package_mode = fs::metadata(package).map(|m| m.mode()).unwrap_or(0);
    let mode = tmp
        .as_file()
        .metadata()
        .map_err(|e| Error::io(format!("stat {shown}"), e))?
        .mode();
    let tight = mode & 0o7777 & !(0o022 & !package_mode);
    if tight != mode & 0o7777 {
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(tight))
            .map_err(|e| Error::io(format!("chmod {shown}"), e))?;
    }
    let copied = copy_content(content, tmp.as_file_mut(), algorithms, &shown)?;
    // Zeros at the end were skipped: the length says where the file ends.
    tmp.as_file()
        .set_len(content.len)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| Error::io(format!("write {shown}"), e))?;
    let (name, file) = keep_temp(tmp)?;
    Ok((name, file, copied))
}

/// The last component of a member name.
fn file_name_of(name: &str) -> &str {
    file_name(name)
}
