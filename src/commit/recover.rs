//! Recovery at mount, at `ovafs umount` and before a commit: complete or discard a journal
//! left beside a package, and delete temporary files of an interrupted rewrite; or, for a
//! read-only mount, only look and report.
//!
//! Nothing beside the package is believed on its name alone. A journal or temporary file is
//! used only if it passes [`super::trust::Rules`] (a regular file of one link, owned by the
//! package's owner or by us, not writable by others; checked on the opened descriptor); a
//! journal is replayed only if it is bound to the bytes it overwrites ([`super::journal`]) and
//! only while we hold the package's write lock ([`super::lock`]): a live mount holding it may
//! be in the middle of the commit that journal belongs to. Anything else is left exactly as
//! it is, named in a one-line warning, and the package is served read-only
//! ([`RecoveryReport::read_only_reason`]).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::FileStat;

use super::journal::{self, Identity, Invalid, Journal, Kind, MAX_JOURNAL_BYTES, Target};
use super::lock::{self, Attempt};
use super::trust::{Folder, Found, Rules, errno_err};
use super::{JOURNAL_SUFFIX, split_path, temp_prefix};
use crate::error::{Error, Refusal, Result};
use crate::package::MAX_DIR_ENTRIES;

/// What happened to a journal found beside the package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalOutcome {
    /// There was none.
    None,
    /// It was valid and has been replayed: the package holds the committed edit.
    Completed,
    /// It was one of ours but cut short while being written (so the package was never
    /// touched), or it was written for a file that is no longer there: deleted.
    Discarded {
        /// Why.
        reason: String,
    },
    /// Left beside the package untouched, neither replayed nor deleted: it is not a file
    /// ovafs trusts (owner, mode, links, type), or it cannot be proven to belong to these
    /// bytes. The package must stay read-only until someone looks at it.
    Refused {
        /// The journal.
        path: PathBuf,
        /// The broken rule.
        reason: String,
    },
    /// A journal waits and was not replayed: a read-only inspection, or another mount holds
    /// the package's write lock. The package must stay read-only.
    Pending {
        /// The journal.
        path: PathBuf,
        /// Why it was not replayed, and what replaying it would do.
        reason: String,
    },
}

/// What [`recover`] or [`inspect`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The journal's fate.
    pub journal: JournalOutcome,
    /// Temporary files of interrupted rewrites that were deleted.
    pub removed_temp_files: Vec<PathBuf>,
    /// Temporary-file names left in place, with why (not ours, or nothing may be written):
    /// the first [`MAX_LISTED_TEMPS`] of them.
    pub kept_temp_files: Vec<(PathBuf, String)>,
    /// How many more were left in place than are listed: a neighbour may plant any number
    /// of names with our prefix, and each would otherwise be a log line and a status line.
    pub kept_temp_unlisted: u64,
}

/// Most kept temporary files named one by one in the log, the report and the status file.
pub const MAX_LISTED_TEMPS: usize = 16;

impl RecoveryReport {
    /// Whether recovery found nothing.
    pub fn is_clean(&self) -> bool {
        self.journal == JournalOutcome::None
            && self.removed_temp_files.is_empty()
            && self.kept_temp_files.is_empty()
            && self.kept_temp_unlisted == 0
    }

    /// Why the package must be served read-only, when a journal was refused or left
    /// pending (one line, for the mount's notice and `.ovafs/status`).
    pub fn read_only_reason(&self) -> Option<String> {
        match &self.journal {
            JournalOutcome::Refused { path, reason } => Some(format!(
                "{} left alone, not replayed: {reason}",
                path.display()
            )),
            JournalOutcome::Pending { path, reason } => {
                Some(format!("{} waits, not replayed: {reason}", path.display()))
            }
            _ => None,
        }
    }

    /// One line per thing worth telling the user (what was replayed, deleted, refused or
    /// left), for the log and `.ovafs/status`.
    pub fn notices(&self) -> Vec<String> {
        let mut out = Vec::new();
        match &self.journal {
            JournalOutcome::None => {}
            JournalOutcome::Completed => {
                out.push("completed an interrupted commit from its journal".to_string())
            }
            JournalOutcome::Discarded { reason } => out.push(format!(
                "discarded a journal ({reason}); the package was not touched by it"
            )),
            JournalOutcome::Refused { .. } | JournalOutcome::Pending { .. } => {
                out.extend(self.read_only_reason())
            }
        }
        for p in &self.removed_temp_files {
            out.push(format!(
                "removed {} left by an interrupted commit",
                p.display()
            ));
        }
        for (p, why) in &self.kept_temp_files {
            out.push(format!("left {} in place: {why}", p.display()));
        }
        if self.kept_temp_unlisted > 0 {
            out.push(format!(
                "left {} more temporary-file names in place",
                self.kept_temp_unlisted
            ));
        }
        out
    }
}

/// Whether recovery may write, and why not.
#[derive(Debug, Clone)]
enum Mode {
    /// Replay, discard, delete: we hold the package's write lock.
    Repair,
    /// Look only: the reason nothing is written.
    Inspect(String),
}

/// Completes or discards a journal beside `source` (an `.ova`, or the `.ovf` of an unpacked
/// package) and deletes stale temporary files. Call it before opening the package for
/// writing, at mount and at `ovafs umount`. It writes only while it holds the package's write
/// lock: when another mount holds it, or the package cannot be opened for writing, it only
/// inspects (a journal is then [`JournalOutcome::Pending`]). Never waits. An error means the
/// package could not be examined: do not mount it.
pub fn recover(source: &Path) -> Result<RecoveryReport> {
    let (_, dir, name) = split_path(source)?;
    let folder = Folder::open(&dir)?;
    match lock::acquire(&folder, &name)? {
        Attempt::Locked(_lock) => examine(&folder, &name, &Mode::Repair),
        Attempt::HeldElsewhere => examine(
            &folder,
            &name,
            &Mode::Inspect(
                "another ovafs mount holds the package's write lock (the journal may be its commit in progress)"
                    .into(),
            ),
        ),
        Attempt::CannotWrite(why) => examine(&folder, &name, &Mode::Inspect(why)),
    }
}

/// Read-only inspection for a read-only mount: reports a journal and temporary files beside
/// `source` without replaying, deleting or locking anything.
pub fn inspect(source: &Path) -> Result<RecoveryReport> {
    let (_, dir, name) = split_path(source)?;
    let folder = Folder::open(&dir)?;
    examine(
        &folder,
        &name,
        &Mode::Inspect("the mount is read-only".into()),
    )
}

/// [`recover`] for a committer that already holds the package's write lock.
pub(super) fn recover_held(folder: &Folder, name: &str) -> Result<RecoveryReport> {
    examine(folder, name, &Mode::Repair)
}

fn examine(folder: &Folder, name: &str, mode: &Mode) -> Result<RecoveryReport> {
    let package = folder
        .lstat(name)?
        .ok_or_else(|| Error::refused(folder.shown(name), Refusal::NotFound))?;
    let jname = format!("{name}{JOURNAL_SUFFIX}");
    let journal = match folder.open_trusted(&jname, &Rules::journal(&package))? {
        Found::Missing => JournalOutcome::None,
        Found::Untrusted(rule) => JournalOutcome::Refused {
            path: PathBuf::from(folder.shown(&jname)),
            reason: format!("not a journal ovafs trusts: {rule}"),
        },
        Found::Trusted(t) => settle(folder, name, &package, &jname, t, mode)?,
    };
    log_outcome(folder, name, &journal);
    let temps_may_go = matches!(mode, Mode::Repair)
        && !matches!(
            journal,
            JournalOutcome::Refused { .. } | JournalOutcome::Pending { .. }
        );
    let temps = settle_temps(folder, name, &package, temps_may_go, mode)?;
    Ok(RecoveryReport {
        journal,
        removed_temp_files: temps.removed,
        kept_temp_files: temps.kept,
        kept_temp_unlisted: temps.unlisted,
    })
}

fn log_outcome(folder: &Folder, name: &str, outcome: &JournalOutcome) {
    let pkg = folder.shown(name);
    match outcome {
        JournalOutcome::None => {}
        JournalOutcome::Completed => log::warn!("{pkg}: completed an interrupted commit"),
        JournalOutcome::Discarded { reason } => {
            log::warn!("{pkg}: discarded its journal ({reason}); the package was not touched by it")
        }
        JournalOutcome::Refused { path, reason } => log::warn!(
            "{}: left alone, not replayed: {reason}; {pkg} is served read-only",
            path.display()
        ),
        JournalOutcome::Pending { path, reason } => log::warn!(
            "{}: a journal waits, not replayed: {reason}; {pkg} is served read-only",
            path.display()
        ),
    }
}

/// Decides the fate of a trusted journal file, and carries it out in [`Mode::Repair`].
fn settle(
    folder: &Folder,
    name: &str,
    package: &FileStat,
    jname: &str,
    t: super::trust::Trusted,
    mode: &Mode,
) -> Result<JournalOutcome> {
    let jpath = PathBuf::from(folder.shown(jname));
    let refused = |reason: String| JournalOutcome::Refused {
        path: jpath.clone(),
        reason,
    };
    let mut bytes = Vec::new();
    (&t.file)
        .take(MAX_JOURNAL_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(format!("read {}", jpath.display()), e))?;
    if bytes.len() as u64 > MAX_JOURNAL_BYTES {
        return Ok(refused("larger than any journal ovafs writes".into()));
    }
    // What replaying would do: a discard (with why) or a replay of these operations.
    let verdict = match Journal::decode(&bytes) {
        Err(Invalid::Torn(reason)) => Verdict::Discard(reason.to_string()),
        Err(Invalid::Refused(reason)) => return Ok(refused(reason.to_string())),
        Ok(j) => match check(folder, name, package, &j, mode)? {
            Check::Replay(target) => Verdict::Replay(j, target),
            Check::Discard(reason) => Verdict::Discard(reason),
            Check::Refuse(reason) => return Ok(refused(reason)),
        },
    };
    if let Mode::Inspect(why) = mode {
        let would = match verdict {
            Verdict::Discard(reason) => format!("it would be discarded ({reason})"),
            Verdict::Replay(..) => "it would complete an interrupted commit".to_string(),
        };
        return Ok(JournalOutcome::Pending {
            path: jpath,
            reason: format!("{why}; {would}"),
        });
    }
    let outcome = match verdict {
        Verdict::Discard(reason) => JournalOutcome::Discarded { reason },
        Verdict::Replay(j, target) => {
            replay(folder, &j, target.as_ref())?;
            JournalOutcome::Completed
        }
    };
    // Only the file we read goes: not one swapped in under its name since.
    if folder
        .lstat(jname)?
        .is_some_and(|st| (st.st_dev, st.st_ino) == (t.stat.st_dev, t.stat.st_ino))
    {
        folder.unlink(jname)?;
    }
    folder.sync()?;
    Ok(outcome)
}

enum Verdict {
    Discard(String),
    Replay(Journal, Option<File>),
}

enum Check {
    /// Replay it (onto this open archive, for archive journals).
    Replay(Option<File>),
    /// One of ours for a file that is gone: delete it.
    Discard(String),
    /// Leave it alone.
    Refuse(String),
}

/// Checks that a well-formed journal belongs to this package as it is now.
fn check(
    folder: &Folder,
    name: &str,
    package: &FileStat,
    j: &Journal,
    mode: &Mode,
) -> Result<Check> {
    match j.kind {
        Kind::Archive => check_archive(folder, name, j, mode),
        Kind::Folder => check_folder(folder, name, package, j),
    }
}

fn check_archive(folder: &Folder, name: &str, j: &Journal, mode: &Mode) -> Result<Check> {
    let rw = match mode {
        Mode::Repair => OFlag::O_RDWR,
        Mode::Inspect(_) => OFlag::O_RDONLY,
    };
    let flags = rw | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let target = match folder.openat(name, flags) {
        Ok(fd) => File::from(fd),
        Err(nix::errno::Errno::ENOENT) => {
            return Ok(Check::Discard(
                "the archive it was written for is gone".into(),
            ));
        }
        Err(e) => {
            return Err(errno_err(format!("open {}", folder.shown(name)), e));
        }
    };
    let st = nix::sys::stat::fstat(&target).map_err(|e| errno_err("stat the archive", e))?;
    let now = Identity {
        size: st.st_size as u64,
        dev: st.st_dev,
        ino: st.st_ino,
    };
    if now != j.target {
        return Ok(Check::Discard(
            "it was written for another file (the archive was replaced)".into(),
        ));
    }
    if let Some(reason) = journal::unbound_archive(&target, j)? {
        return Ok(Check::Refuse(reason));
    }
    Ok(Check::Replay(Some(target)))
}

fn check_folder(folder: &Folder, name: &str, package: &FileStat, j: &Journal) -> Result<Check> {
    Ok(match journal::unbound_folder(folder, name, package, j)? {
        Some(reason) => Check::Refuse(reason),
        None => Check::Replay(None),
    })
}

/// Replays a journal that passed its checks, with the applier a commit uses.
fn replay(folder: &Folder, j: &Journal, target: Option<&File>) -> Result<()> {
    let target = match (j.kind, target) {
        (Kind::Archive, Some(file)) => Target::Archive(file),
        _ => Target::Folder(folder),
    };
    journal::apply(j, target, &|_| {}).map(|_| ())
}

/// What [`settle_temps`] did.
#[derive(Default)]
struct Temps {
    removed: Vec<PathBuf>,
    /// The first [`MAX_LISTED_TEMPS`] names left in place, and why.
    kept: Vec<(PathBuf, String)>,
    /// Names left in place beyond those.
    unlisted: u64,
}

impl Temps {
    fn keep(&mut self, path: PathBuf, why: String) {
        if self.kept.len() < MAX_LISTED_TEMPS {
            log::warn!("{}: left in place: {why}", path.display());
            self.kept.push((path, why));
        } else {
            self.unlisted += 1;
        }
    }
}

/// Deletes the `.NAME.ovafs-tmp-*` files that are ours when `may_delete`; lists the others.
fn settle_temps(
    folder: &Folder,
    name: &str,
    package: &FileStat,
    may_delete: bool,
    mode: &Mode,
) -> Result<Temps> {
    let rules = Rules::temporary(package);
    let mut temps = Temps::default();
    for t in folder.names_with_prefix(&temp_prefix(name), MAX_DIR_ENTRIES)? {
        let shown = PathBuf::from(folder.shown(&t));
        let stat = match folder.open_trusted(&t, &rules)? {
            Found::Missing => continue,
            Found::Untrusted(rule) => {
                temps.keep(shown, format!("not a temporary file of ovafs: {rule}"));
                continue;
            }
            Found::Trusted(f) => f.stat,
        };
        if !may_delete {
            let why = match mode {
                Mode::Inspect(why) => why.clone(),
                Mode::Repair => "a journal waits beside the package".to_string(),
            };
            temps.keep(shown, why);
            continue;
        }
        // Only the file checked goes, not one swapped in under its name since.
        if folder
            .lstat(&t)?
            .is_some_and(|st| (st.st_dev, st.st_ino) == (stat.st_dev, stat.st_ino))
        {
            folder.unlink(&t)?;
            log::warn!("removed {} left by an interrupted commit", shown.display());
            temps.removed.push(shown);
        }
    }
    if temps.unlisted > 0 {
        log::warn!(
            "{}: {} more temporary-file names left in place",
            folder.shown(name),
            temps.unlisted
        );
    }
    if !temps.removed.is_empty() {
        folder.sync()?;
    }
    Ok(temps)
}
