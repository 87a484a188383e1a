//! Recovery at mount and at `ovafs umount`: complete or discard a journal left beside a
//! package, and delete temporary files of an interrupted rewrite.

use std::fs::{self, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::journal::{Identity, Journal, Kind, MAX_JOURNAL_BYTES, Op};
use super::{CommitOptions, fsync_dir, journal_path, lock_dir, split_path, temp_prefix};
use crate::error::{Error, Result};
use crate::package::MAX_DIR_ENTRIES;

/// What happened to a journal found beside the package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalOutcome {
    /// There was none.
    None,
    /// It was valid and has been replayed: the package holds the committed edit.
    Completed,
    /// It was not valid (cut short while being written, so the package was never touched),
    /// or it was written for a file that is no longer there: deleted.
    Discarded {
        /// Why.
        reason: String,
    },
}

/// What [`recover`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The journal's fate.
    pub journal: JournalOutcome,
    /// Temporary files of interrupted rewrites that were deleted.
    pub removed_temp_files: Vec<PathBuf>,
}

impl RecoveryReport {
    /// Whether recovery changed nothing.
    pub fn is_clean(&self) -> bool {
        self.journal == JournalOutcome::None && self.removed_temp_files.is_empty()
    }
}

/// Completes or discards a journal beside `source` (an `.ova`, or the `.ovf` of an unpacked
/// package) and deletes stale temporary files. Call it before opening the package, at mount
/// and at `ovafs umount`. Waits for a commit in progress (another process) to finish. An
/// error means the package may be half-patched: do not mount it.
pub fn recover(source: &Path) -> Result<RecoveryReport> {
    let (real, dir, name) = split_path(source)?;
    let _lock = lock_dir(&dir)?;
    recover_locked(&real, &dir, &name)
}

/// [`recover`] with the folder lock already held.
pub(super) fn recover_locked(real: &Path, dir: &Path, name: &str) -> Result<RecoveryReport> {
    let mut report = RecoveryReport {
        journal: JournalOutcome::None,
        removed_temp_files: Vec::new(),
    };
    let jpath = journal_path(dir, name);
    match fs::symlink_metadata(&jpath) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("stat {}", jpath.display()), e)),
        Ok(meta) if !meta.is_file() => {
            return Err(Error::io(
                format!(
                    "{} is not a regular file; remove it by hand",
                    jpath.display()
                ),
                std::io::Error::from_raw_os_error(libc::EINVAL),
            ));
        }
        Ok(_) => {
            report.journal = replay(&jpath, real, dir)?;
            match &report.journal {
                JournalOutcome::Completed => log::warn!(
                    "{}: completed an interrupted commit from {}",
                    real.display(),
                    jpath.display()
                ),
                JournalOutcome::Discarded { reason } => log::warn!(
                    "{}: discarded {} ({reason}); the package was not touched by it",
                    real.display(),
                    jpath.display()
                ),
                JournalOutcome::None => {}
            }
            fs::remove_file(&jpath)
                .map_err(|e| Error::io(format!("remove {}", jpath.display()), e))?;
            fsync_dir(dir)?;
        }
    }
    report.removed_temp_files = remove_temps(dir, name)?;
    if !report.removed_temp_files.is_empty() {
        fsync_dir(dir)?;
    }
    Ok(report)
}

fn replay(jpath: &Path, real: &Path, dir: &Path) -> Result<JournalOutcome> {
    let discarded = |reason: &str| {
        Ok(JournalOutcome::Discarded {
            reason: reason.to_string(),
        })
    };
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(jpath)
        .map_err(|e| Error::io(format!("open {}", jpath.display()), e))?;
    let mut bytes = Vec::new();
    f.take(MAX_JOURNAL_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(format!("read {}", jpath.display()), e))?;
    if bytes.len() as u64 > MAX_JOURNAL_BYTES {
        return discarded("larger than any journal ovafs writes");
    }
    let journal = match Journal::decode(&bytes) {
        Ok(j) => j,
        Err(reason) => return discarded(reason),
    };
    match journal.kind {
        Kind::Archive => {
            let target = match OpenOptions::new().read(true).write(true).open(real) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return discarded("the archive it was written for is gone");
                }
                Err(e) => return Err(Error::io(format!("open {}", real.display()), e)),
            };
            let meta = target
                .metadata()
                .map_err(|e| Error::io(format!("stat {}", real.display()), e))?;
            let now = Identity {
                size: meta.len(),
                dev: meta.dev(),
                ino: meta.ino(),
            };
            if now != journal.target {
                return discarded("it was written for another file (the archive was replaced)");
            }
            for op in &journal.ops {
                if let Op::Write { offset, data } = op {
                    target
                        .write_all_at(data, *offset)
                        .map_err(|e| Error::io(format!("write {}", real.display()), e))?;
                }
            }
            target
                .sync_data()
                .map_err(|e| Error::io(format!("fsync {}", real.display()), e))?;
        }
        Kind::Folder => {
            let name = real
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if let Some(op) = journal.ops.iter().find(|op| !folder_op_allowed(name, op)) {
                log::warn!(
                    "{}: journal operation {op:?} is outside the package",
                    real.display()
                );
                return discarded("it names files that are not this package's");
            }
            super::folder::apply_ops(dir, &journal.ops, &CommitOptions::default())?
        }
    }
    Ok(JournalOutcome::Completed)
}

/// Whether a folder journal operation stays within the package whose descriptor is `ovf`:
/// renames come from its temporary files and land on its `.ovf` or `.mf`; removals take its
/// `.cert` (names compared case-insensitively, as the package layer finds them).
fn folder_op_allowed(ovf: &str, op: &Op) -> bool {
    let base = ovf.get(..ovf.len().saturating_sub(4)).unwrap_or(ovf);
    let is = |name: &str, ext: &str| name.eq_ignore_ascii_case(&format!("{base}.{ext}"));
    match op {
        Op::Rename { from, to } => {
            from.starts_with(&temp_prefix(ovf)) && (to == ovf || is(to, "mf"))
        }
        Op::Remove { name } => is(name, "cert"),
        Op::Write { .. } => false,
    }
}

/// Deletes `.NAME.ovafs-tmp-*` regular files in `dir`.
fn remove_temps(dir: &Path, name: &str) -> Result<Vec<PathBuf>> {
    let prefix = temp_prefix(name);
    let rd = fs::read_dir(dir).map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
    let mut removed = Vec::new();
    for (n, entry) in rd.enumerate() {
        if n as u64 >= MAX_DIR_ENTRIES {
            log::warn!(
                "{}: more than {MAX_DIR_ENTRIES} entries; stopped looking for temporary files",
                dir.display()
            );
            break;
        }
        let Ok(entry) = entry else { continue };
        let file_name = entry.file_name();
        let Some(s) = file_name.to_str() else {
            continue;
        };
        if !s.starts_with(&prefix) {
            continue;
        }
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let p = entry.path();
        fs::remove_file(&p).map_err(|e| Error::io(format!("remove {}", p.display()), e))?;
        log::warn!("removed {} left by an interrupted commit", p.display());
        removed.push(p);
    }
    Ok(removed)
}
