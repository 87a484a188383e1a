//! Persisting a change set into its package: in place under a redo journal when it fits,
//! else by an atomic rewrite (docs/design.md "Commit", docs/formats.md §1.2-1.4, §3,
//! §6 rule 26).
//!
//! [`Committer::open`] captures the package's on-disk layout (every member's header and
//! offsets, the descriptor, manifest and certificate members). [`Committer::commit`] then
//! writes a [`ChangeSet`]: a new descriptor (optional), members replaced by new content (a
//! [`Content`]: a [`ReadAt`] and a length, streamed, never held in memory whole, digested
//! while it is copied), members added, members removed, and what to do with the certificate
//! ([`CertificateAction`]: keep, drop, re-sign with a [`Signer`]). A settings edit is
//! `ChangeSet::descriptor(bytes)`. The descriptor's File entries are the caller's business.
//!
//! - The **manifest** is refreshed in its own algorithm and line style ([`manifest`]): the
//!   values on the lines naming a changed member change, the lines of removed members go,
//!   added members get lines in the style and algorithms of the descriptor's line. A member
//!   the manifest does not list stays unlisted.
//! - A **certificate** signs the manifest bytes. Kept ([`CertificateAction::Keep`], what
//!   settings edits do): it stays while the manifest does not change, else it is removed and
//!   reported. Dropped on request. Re-signed: regenerated over the new manifest as ovftool
//!   writes it ([`Signer`]), created when there was none.
//! - **In place** (OVA): when every change fills the same number of tar blocks as the bytes
//!   it replaces (the descriptor may be padded with trailing whitespace, [`padding`], and a
//!   rewrite leaves slack for this; a replaced member of at most 1 MiB; the manifest; a
//!   re-signed certificate), nothing is added or removed and no certificate has to go, the
//!   headers and data are patched. The patches are first written to a journal beside the OVA
//!   (`NAME.ova.ovafs-journal`, [`journal`]), which is fsynced with its folder; then the OVA
//!   is patched by the journal's applier and fsynced and the journal deleted.
//! - **Rewrite** (OVA): otherwise a new archive is written to `.NAME.ova.ovafs-tmp-*` in the
//!   same folder: descriptor first (with slack after it), manifest next, a new certificate,
//!   then every other member in its original order (removed ones left out; unchanged data
//!   copied byte for byte with `copy_file_range`, replaced data streamed from its content),
//!   then the added members; headers rebuilt as ustar (GNU only for members of 8 GiB and more
//!   or names that need it; never pax). The manifest and certificate are written with
//!   placeholder digests of their final length and filled in once the contents after them
//!   are digested, so every content is read once. The archive is fsynced, checked by
//!   indexing it again, renamed over the original, and the folder is fsynced.
//! - **Folder** packages: new contents, the new `.ovf`, `.mf` and `.cert` are written to
//!   trusted temporary files and fsynced; a journal listing the renames and removals (data
//!   files placed and unlinked bound to their identity) is made durable; then the journal's
//!   applier carries it out and the folder is fsynced.
//!
//! Crash safety: at every moment the package is the old version, the new one, or a journal
//! beside it that [`recover`] completes (a journal with a valid checksum, bound to the bytes
//! it overwrites, is replayed; one cut short is deleted, the package having not been touched
//! yet). [`recover`] also deletes temporary files of an interrupted rewrite. Journals and
//! temporary files are used only when they pass the ownership rules of `trust` (anything
//! else is left alone and the package is read-only); [`inspect`] only looks, for read-only
//! mounts.
//!
//! One writer per package: a [`Committer`] holds an OFD write lock on the package file for
//! its whole life (`lock`); a second one (another mount) cannot open, and recovery never
//! replays a journal while someone else holds the lock (that journal may be the commit in
//! progress), so `ovafs umount` recovering after the daemon exited and a second mount
//! starting while the first commits cannot race it. Nothing waits on a lock.
//!
//! A source that is read-only (no write permission bit, a read-only file system, a folder we
//! cannot write) cannot be committed to: [`Committer::open`] fails with an error for which
//! [`is_read_only`] is true, and the mount should be read-only.
//!
//! Not here: building the new descriptor (settings), FUSE, encoding disks.

mod folder;
pub mod journal;
mod lock;
pub mod manifest;
mod ova;
pub mod padding;
mod recover;
mod sign;
pub(crate) mod trust;

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::io::ReadAt;
use crate::package::{Package, SourceKind};

pub use recover::{JournalOutcome, MAX_LISTED_TEMPS, RecoveryReport, inspect, recover};
pub use sign::Signer;

/// Suffix of the journal file beside a package: `NAME.ova.ovafs-journal`.
pub const JOURNAL_SUFFIX: &str = ".ovafs-journal";

/// Infix of temporary files: `.NAME.ova.ovafs-tmp-XXXXXX`.
pub const TEMP_INFIX: &str = ".ovafs-tmp-";

/// Largest manifest read into memory: far above any real manifest (a line per file).
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// A commit cannot be done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// The descriptor, manifest or certificate member named at open is no longer there.
    #[error("member {name:?} is not in the archive any more")]
    MemberMissing {
        /// The member.
        name: String,
    },
    /// The manifest cannot be refreshed.
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    /// The archive cannot be rewritten without losing something.
    #[error("the archive cannot be rewritten: {reason}")]
    CannotRewrite {
        /// Why.
        reason: String,
    },
    /// The rewritten archive does not read back as written (a bug or a failing disk); the
    /// original was left in place.
    #[error("the rewritten archive does not read back as written: {reason}")]
    RewriteCheck {
        /// What differs.
        reason: String,
    },
    /// A tar header cannot be written.
    #[error(transparent)]
    Header(#[from] crate::archive::write::WriteError),
    /// A path that cannot be used (no file name, not UTF-8).
    #[error("cannot commit to {path:?}: {reason}")]
    BadPath {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// A change set that does not fit the package (a member replaced that is not there, one
    /// added that is, a name in two lists, the manifest removed, ...).
    #[error("the change set cannot be applied: {reason}")]
    BadChange {
        /// Why.
        reason: String,
    },
    /// The package cannot be re-signed with this signer (bad key, key of another
    /// certificate, no manifest to sign).
    #[error("cannot re-sign: {reason}")]
    Signer {
        /// Why.
        reason: String,
    },
    /// A new descriptor above [`crate::ovf::MAX_DESCRIPTOR_BYTES`].
    #[error("the new descriptor is {size} bytes, above the limit of {limit}")]
    DescriptorTooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
}

impl From<CommitError> for Error {
    fn from(e: CommitError) -> Self {
        // A layer error like every other layer's, found again with [`commit_error`].
        Error::layer(e).context("commit")
    }
}

/// The [`CommitError`] inside `e`, if it is one.
pub fn commit_error(e: &Error) -> Option<&CommitError> {
    e.layer_error::<CommitError>()
}

/// Whether `e` says the package cannot be written (read-only file, file system or folder;
/// locked by another mount; a journal beside it that is not replayed).
pub fn is_read_only(e: &Error) -> bool {
    matches!(e.kind(), crate::error::ErrorKind::ReadOnly(_))
        || matches!(
            e.os_error(),
            Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM)
        )
}

/// The package cannot be written for a reason that is not a permission: the message says
/// which (locked by another mount, a journal left beside it).
fn refused(msg: String) -> Error {
    Error::new(crate::error::ErrorKind::ReadOnly(msg))
}

/// The package `name` in `folder` is locked by someone else.
fn locked(folder: &trust::Folder, name: &str) -> Error {
    refused(format!(
        "{} is in use by another writable ovafs mount (it holds the package's write lock)",
        folder.shown(name)
    ))
}

/// `path` cannot be written: `why` says what makes it read-only.
fn read_only(path: &Path, why: &str) -> Error {
    refused(format!("{} is read-only ({why})", path.display()))
}

/// The new package file `shown` (a rewritten archive, a new descriptor) cannot be locked
/// before it takes the package's name: someone else holds a lock on it.
fn new_file_busy(shown: &str) -> Error {
    Error::refused(format!("lock {shown}"), crate::error::Refusal::Busy)
}

/// A step of a commit, for tests that stop a commit there ([`CommitOptions::fault_hook`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultPoint {
    /// Half of the journal is written; nothing is synced.
    JournalPartial,
    /// The journal is durable; the package is untouched.
    JournalDurable,
    /// Archive: half (`half` 0) or all (`half` 1) of write `op` is done. Folder: rename or
    /// removal `op` is done (`half` 1).
    Applied {
        /// Operation index.
        op: usize,
        /// 0 after the first half, 1 after the whole operation.
        half: u8,
    },
    /// The package is durable; the journal is still there.
    AppliedDurable,
    /// The journal is unlinked; the folder is not synced yet.
    JournalRemoved,
    /// Rewrite: `count` members are in the temporary file.
    RewriteMember {
        /// Members written so far.
        count: usize,
    },
    /// Rewrite: the temporary file is complete and durable, not renamed yet.
    RewriteDurable,
    /// Rewrite: renamed over the original; the folder is not synced yet.
    Renamed,
    /// Folder: the temporary files are durable; no journal yet.
    TempsDurable,
}

/// A callback run at every [`FaultPoint`] (tests use it to kill the process there).
pub type FaultHook = Arc<dyn Fn(FaultPoint) + Send + Sync>;

/// Tuning and test hooks.
#[derive(Clone, Default)]
pub struct CommitOptions {
    /// Slack left after the descriptor when rewriting; default [`padding::default_slack`].
    pub slack_bytes: Option<u64>,
    /// The mtime given to the descriptor and manifest members; default: now. Tests fix it to
    /// compare archives byte for byte.
    pub mtime: Option<u64>,
    /// Called at every step of a commit.
    pub fault_hook: Option<FaultHook>,
}

impl fmt::Debug for CommitOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommitOptions")
            .field("slack_bytes", &self.slack_bytes)
            .field("mtime", &self.mtime)
            .field("fault_hook", &self.fault_hook.is_some())
            .finish()
    }
}

impl CommitOptions {
    fn fault(&self, point: FaultPoint) {
        if let Some(h) = &self.fault_hook {
            h(point);
        }
    }

    fn mtime_now(&self) -> u64 {
        self.mtime.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        })
    }
}

/// Which way a commit went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitPath {
    /// The new descriptor equals the stored one: nothing was written.
    Unchanged,
    /// Patched in place under a journal.
    InPlace,
    /// The whole archive was rewritten and renamed over the original.
    Rewrite,
    /// Folder package: new files renamed over the old ones under a journal.
    Folder,
}

/// What a commit did.
#[derive(Debug, Clone)]
pub struct CommitReport {
    /// The path taken.
    pub path: CommitPath,
    /// The descriptor as now stored (the new descriptor plus any padding after it; see
    /// [`padding::split_padding`]).
    pub descriptor: Vec<u8>,
    /// The manifest as now stored, when the package has one.
    pub manifest: Option<Vec<u8>>,
    /// Whether the manifest changed.
    pub manifest_changed: bool,
    /// The certificate removed because it no longer matches the manifest (or the change set
    /// dropped it).
    pub certificate_dropped: Option<String>,
    /// What became of the certificate.
    pub certificate: CertificateFate,
    /// The certificate as now stored, when the commit re-signed ([`CertificateFate::Signed`]).
    pub certificate_bytes: Option<Vec<u8>>,
    /// Members whose content was replaced.
    pub members_replaced: Vec<String>,
    /// Members added.
    pub members_added: Vec<String>,
    /// Members removed.
    pub members_removed: Vec<String>,
    /// Bytes written to the package, its journal and temporary files.
    pub bytes_written: u64,
    /// Wall time of the commit.
    pub elapsed: Duration,
    /// Whether the package file was replaced by a new one (rewrite, folder): readers must
    /// reopen it; member offsets changed.
    pub replaced: bool,
}

/// New content for a member: `len` bytes read from `data` (which must hold at least that
/// many). Copied in chunks and digested while it is copied, never held in memory whole.
#[derive(Clone)]
pub struct Content {
    /// The bytes.
    pub data: Arc<dyn ReadAt>,
    /// How many of them.
    pub len: u64,
}

impl Content {
    /// All of `data`.
    pub fn new(data: Arc<dyn ReadAt>) -> Content {
        let len = data.len();
        Content { data, len }
    }

    /// Bytes held in memory (small members, tests).
    pub fn bytes(bytes: impl Into<Vec<u8>>) -> Content {
        Content::new(Arc::new(bytes.into()))
    }
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Content").field("len", &self.len).finish()
    }
}

/// What a commit does with the package's certificate.
#[derive(Debug, Clone, Default)]
pub enum CertificateAction {
    /// Kept while it still signs the manifest; removed (and reported) when the manifest
    /// changes. What settings edits do.
    #[default]
    Keep,
    /// Removed.
    Drop,
    /// Regenerated over the new manifest with this signer (created when there was none).
    Resign(Signer),
}

/// Most members one change set may replace, add and remove in all.
pub const MAX_CHANGED_MEMBERS: usize = 1024;

/// What a commit changes: the descriptor, members replaced, added and removed, and the
/// certificate's fate. Member names are as the package lists them (archive member names; a
/// folder package's file names, which must be plain names). The descriptor's File entries
/// are the caller's: the change set writes what it is given.
#[derive(Debug, Clone, Default)]
pub struct ChangeSet {
    /// The new descriptor, if it changes.
    pub descriptor: Option<Vec<u8>>,
    /// Members whose content is replaced.
    pub replace: Vec<(String, Content)>,
    /// Members added (after the others).
    pub add: Vec<(String, Content)>,
    /// Members removed.
    pub remove: Vec<String>,
    /// The certificate.
    pub certificate: CertificateAction,
}

impl ChangeSet {
    /// Only a new descriptor (a settings edit).
    pub fn descriptor(bytes: impl Into<Vec<u8>>) -> ChangeSet {
        ChangeSet {
            descriptor: Some(bytes.into()),
            ..ChangeSet::default()
        }
    }

    /// Also sets a new descriptor.
    pub fn with_descriptor(mut self, bytes: impl Into<Vec<u8>>) -> ChangeSet {
        self.descriptor = Some(bytes.into());
        self
    }

    /// Also replaces member `name`.
    pub fn replace(mut self, name: impl Into<String>, content: Content) -> ChangeSet {
        self.replace.push((name.into(), content));
        self
    }

    /// Also adds member `name`.
    pub fn add(mut self, name: impl Into<String>, content: Content) -> ChangeSet {
        self.add.push((name.into(), content));
        self
    }

    /// Also removes member `name`.
    pub fn remove(mut self, name: impl Into<String>) -> ChangeSet {
        self.remove.push(name.into());
        self
    }

    /// Sets what happens to the certificate.
    pub fn certificate(mut self, action: CertificateAction) -> ChangeSet {
        self.certificate = action;
        self
    }

    /// Whether the member lists change nothing.
    fn members_unchanged(&self) -> bool {
        self.replace.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Checks what does not depend on the package: sizes, the number of members, names in
    /// two lists, contents shorter than their length.
    fn check(&self) -> Result<()> {
        let limit = crate::ovf::MAX_DESCRIPTOR_BYTES;
        if let Some(d) = &self.descriptor
            && d.len() as u64 > limit
        {
            return Err(CommitError::DescriptorTooLarge {
                size: d.len() as u64,
                limit,
            }
            .into());
        }
        let names: Vec<&str> = self
            .replace
            .iter()
            .chain(&self.add)
            .map(|(n, _)| n.as_str())
            .chain(self.remove.iter().map(String::as_str))
            .collect();
        if names.len() > MAX_CHANGED_MEMBERS {
            return Err(bad_change(format!(
                "{} members changed, above the limit of {MAX_CHANGED_MEMBERS}",
                names.len()
            )));
        }
        let mut sorted = names.clone();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(bad_change(format!("member {:?} is named twice", w[0])));
        }
        for (name, c) in self.replace.iter().chain(&self.add) {
            if c.data.len() < c.len {
                return Err(bad_change(format!(
                    "the content of {name:?} holds {} bytes, fewer than its length {}",
                    c.data.len(),
                    c.len
                )));
            }
        }
        Ok(())
    }
}

fn bad_change(reason: String) -> Error {
    CommitError::BadChange { reason }.into()
}

/// What became of the certificate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CertificateFate {
    /// The package has none, before and after.
    #[default]
    None,
    /// Kept as it was (it still signs the manifest).
    Kept(String),
    /// Removed: it no longer matched the manifest, or the change set dropped it.
    Dropped(String),
    /// Written anew over the new manifest.
    Signed(String),
}

/// Persists new descriptors into one package.
pub struct Committer {
    inner: Inner,
    options: CommitOptions,
    /// Re-signs every change set that keeps the certificate ([`Committer::resign_with`]).
    signer: Option<Signer>,
}

enum Inner {
    Ova(Box<ova::OvaCommitter>),
    Folder(folder::FolderCommitter),
}

impl fmt::Debug for Committer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Committer")
            .field("source", &self.source())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Committer {
    /// Captures the layout of `pkg` for commits, with default options, and takes the
    /// package's write lock for the committer's life. Fails with an error for which
    /// [`is_read_only`] is true when the source is read-only, another committer (another
    /// mount) holds the lock, or a journal is waiting beside it (run [`recover`] before
    /// opening the package).
    pub fn open(pkg: &Package) -> Result<Committer> {
        Committer::open_with(pkg, CommitOptions::default())
    }

    /// [`Committer::open`] with options.
    pub fn open_with(pkg: &Package, options: CommitOptions) -> Result<Committer> {
        let inner = match pkg.kind {
            SourceKind::Ova => Inner::Ova(Box::new(ova::OvaCommitter::open(pkg)?)),
            SourceKind::Folder => Inner::Folder(folder::FolderCommitter::open(pkg)?),
        };
        Ok(Committer {
            inner,
            options,
            signer: None,
        })
    }

    /// Makes every later commit whose change set keeps the certificate
    /// ([`CertificateAction::Keep`], what settings edits and disk commits ask) re-sign with
    /// `signer` instead (`-o sign_key=`); `None` goes back to keeping. A change set that
    /// asks to drop or re-sign is done as asked.
    pub fn resign_with(&mut self, signer: Option<Signer>) {
        self.signer = signer;
    }

    /// Whether commits re-sign ([`Committer::resign_with`]).
    pub fn resigns(&self) -> bool {
        self.signer.is_some()
    }

    /// The package file this committer writes (the real path of the `.ova` or `.ovf`).
    pub fn source(&self) -> &Path {
        match &self.inner {
            Inner::Ova(c) => c.path(),
            Inner::Folder(c) => c.path(),
        }
    }

    /// The descriptor bytes as stored now.
    pub fn descriptor(&self) -> &[u8] {
        match &self.inner {
            Inner::Ova(c) => c.descriptor(),
            Inner::Folder(c) => c.descriptor(),
        }
    }

    /// Writes the change set into the package with a refreshed manifest: in place under a
    /// journal when every change fits where the old bytes were, else by a rewrite. Durable
    /// when it returns. On error the package is the old version, or the new one, or has a
    /// journal beside it that the next commit or [`recover`] completes.
    pub fn commit(&mut self, changes: &ChangeSet) -> Result<CommitReport> {
        let start = Instant::now();
        changes.check()?;
        let resigned;
        let changes = match (&self.signer, &changes.certificate) {
            (Some(signer), CertificateAction::Keep) => {
                // Contents are shared (`Arc`), so the copy holds no member data.
                resigned = changes
                    .clone()
                    .certificate(CertificateAction::Resign(signer.clone()));
                &resigned
            }
            _ => changes,
        };
        let mut report = match &mut self.inner {
            Inner::Ova(c) => c.commit(changes, &self.options)?,
            Inner::Folder(c) => c.commit(changes, &self.options)?,
        };
        report.elapsed = start.elapsed();
        report.certificate_dropped = match &report.certificate {
            CertificateFate::Dropped(name) => Some(name.clone()),
            _ => None,
        };
        match &report.certificate {
            CertificateFate::Dropped(cert)
                if matches!(changes.certificate, CertificateAction::Keep) =>
            {
                log::warn!(
                    "{}: certificate {cert:?} removed: it signed the old manifest (commit with a signer to re-sign)",
                    self.source().display()
                )
            }
            CertificateFate::Dropped(cert) => {
                log::info!("{}: certificate {cert:?} removed", self.source().display())
            }
            CertificateFate::Signed(cert) => log::info!(
                "{}: certificate {cert:?} signs the new manifest",
                self.source().display()
            ),
            CertificateFate::None | CertificateFate::Kept(_) => {}
        }
        log::info!(
            "{}: committed {} descriptor bytes, {} members replaced, {} added, {} removed ({:?}, {} bytes written, {:?})",
            self.source().display(),
            report.descriptor.len(),
            report.members_replaced.len(),
            report.members_added.len(),
            report.members_removed.len(),
            report.path,
            report.bytes_written,
            report.elapsed
        );
        Ok(report)
    }
}

/// The size and digests of a content copied by [`copy_content`]: in the manifest's
/// algorithms, and SHA-256 for a folder journal's binding.
struct Copied {
    values: manifest::MemberValues,
    sha256: journal::Digest32,
}

/// Chunk a content is copied in: the memory a copy uses, whatever its length.
const COPY_CHUNK: usize = 1 << 20;

/// Chunks queued between the copy and the digest thread of [`copy_content`] (each
/// [`COPY_CHUNK`] bytes; at most this many plus two exist at once).
const DIGEST_QUEUE: usize = 2;

/// The digests [`copy_content`] computes: the manifest's algorithms, and SHA-256 apart
/// when the manifest does not use it.
struct Digesting {
    hashers: Vec<(
        crate::verify::digest::DigestAlgorithm,
        Box<dyn sha2::digest::DynDigest + Send>,
    )>,
    sha256: Option<sha2::Sha256>,
}

impl Digesting {
    fn new(algorithms: &[crate::verify::digest::DigestAlgorithm]) -> Digesting {
        use crate::verify::digest::DigestAlgorithm;
        Digesting {
            hashers: algorithms.iter().map(|a| (*a, a.hasher())).collect(),
            sha256: (!algorithms.contains(&DigestAlgorithm::Sha256))
                .then(<sha2::Sha256 as sha2::Digest>::new),
        }
    }

    fn update(&mut self, chunk: &[u8]) {
        for (_, h) in &mut self.hashers {
            h.update(chunk);
        }
        if let Some(h) = &mut self.sha256 {
            sha2::Digest::update(h, chunk);
        }
    }

    fn finish(self, size: u64) -> Copied {
        use crate::verify::digest::DigestAlgorithm;
        let digests: Vec<(DigestAlgorithm, Vec<u8>)> = self
            .hashers
            .into_iter()
            .map(|(a, h)| (a, h.finalize().into_vec()))
            .collect();
        let sha256: journal::Digest32 = match (
            digests.iter().find(|(a, _)| *a == DigestAlgorithm::Sha256),
            self.sha256,
        ) {
            (Some((_, d)), _) => d.as_slice().try_into().unwrap_or_default(),
            (None, Some(h)) => sha2::Digest::finalize(h).into(),
            (None, None) => journal::Digest32::default(),
        };
        Copied {
            values: manifest::MemberValues { size, digests },
            sha256,
        }
    }
}

/// Copies `content` to the current position of `out`, digesting it in `algorithms` while it
/// is copied. Chunks of zeros are skipped with a seek (the output stays sparse where the
/// content is; the caller writes something after it or sets the length). The digests are
/// computed on a thread of their own, a chunk behind the copy: a disk member of a commit is
/// hundreds of MiB, and digesting it after each read would add the digest's time to the
/// copy's instead of overlapping them.
fn copy_content(
    content: &Content,
    out: &mut File,
    algorithms: &[crate::verify::digest::DigestAlgorithm],
    shown: &str,
) -> Result<Copied> {
    use std::sync::mpsc;
    let digesting = Digesting::new(algorithms);
    std::thread::scope(|scope| {
        let (to_digest, chunks) = mpsc::sync_channel::<Vec<u8>>(DIGEST_QUEUE);
        let (give_back, spares) = mpsc::channel::<Vec<u8>>();
        let digester = scope.spawn(move || {
            let mut d = digesting;
            for chunk in chunks {
                d.update(&chunk);
                // The copy may have ended (an error): the buffer is then simply dropped.
                let _ = give_back.send(chunk);
            }
            d
        });
        let copied = copy_chunks(content, out, shown, &to_digest, &spares);
        drop(to_digest);
        let digests = digester.join().map_err(|_| {
            Error::io(
                format!("digest the copy into {shown}"),
                std::io::Error::other("the digest thread stopped"),
            )
        });
        copied?;
        Ok(digests?.finish(content.len))
    })
}

/// The copy loop of [`copy_content`]: each chunk read, written (or skipped when zeros),
/// then handed to the digest thread; buffers come back through `spares`.
fn copy_chunks(
    content: &Content,
    out: &mut File,
    shown: &str,
    to_digest: &std::sync::mpsc::SyncSender<Vec<u8>>,
    spares: &std::sync::mpsc::Receiver<Vec<u8>>,
) -> Result<()> {
    use std::io::{Seek, SeekFrom};
    let mut done = 0u64;
    let mut writeback = Writeback::at(out);
    while done < content.len {
        let want =
            usize::try_from((content.len - done).min(COPY_CHUNK as u64)).unwrap_or(COPY_CHUNK);
        // At most DIGEST_QUEUE + 2 buffers exist: the queue is bounded, so a new one is
        // made only while the digest thread holds or queues the others.
        let mut buf = spares.try_recv().unwrap_or_else(|_| vec![0u8; COPY_CHUNK]);
        buf.resize(want, 0);
        content.data.read_exact_at(done, &mut buf)?;
        if buf.iter().all(|&b| b == 0) {
            out.seek(SeekFrom::Current(want as i64))
                .map_err(|e| Error::io(format!("seek {shown}"), e))?;
        } else {
            out.write_all(&buf)
                .map_err(|e| Error::io(format!("write {shown}"), e))?;
        }
        done += want as u64;
        writeback.wrote(out, want as u64);
        to_digest.send(buf).map_err(|_| {
            Error::io(
                format!("digest the copy into {shown}"),
                std::io::Error::other("the digest thread stopped"),
            )
        })?;
    }
    Ok(())
}

/// Bytes copied between two writeback kicks of [`Writeback`].
const WRITEBACK_STEP: u64 = 16 << 20;

/// Starts the writeback of a big copy's pages while the copy goes on, so that the commit's
/// fsync finds most of them written instead of writing the whole member after the copy.
/// `posix_fadvise(DONTNEED)` on the range just written is Linux's way to do it without
/// `unsafe` (the crate has no `sync_file_range`): it starts writeback of the range's dirty
/// pages without waiting, and drops only the pages already clean (so some of the new
/// member may have to be read from storage later). Durability still comes from the fsync
/// alone; where the call fails nothing changes but the overlap.
struct Writeback {
    /// Where the pages not yet kicked begin (`None`: the position is unknown, no kicks).
    from: Option<u64>,
    /// Bytes copied since `from`.
    pending: u64,
}

impl Writeback {
    fn at(out: &mut File) -> Writeback {
        use std::io::Seek;
        Writeback {
            from: out.stream_position().ok(),
            pending: 0,
        }
    }

    /// Records `n` bytes copied; every [`WRITEBACK_STEP`] starts their writeback.
    fn wrote(&mut self, out: &File, n: u64) {
        use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
        let Some(from) = self.from else { return };
        self.pending = self.pending.saturating_add(n);
        if self.pending < WRITEBACK_STEP {
            return;
        }
        let range = (
            libc::off_t::try_from(from),
            libc::off_t::try_from(self.pending),
        );
        let kicked = match range {
            (Ok(offset), Ok(len)) => {
                posix_fadvise(out, offset, len, PosixFadviseAdvice::POSIX_FADV_DONTNEED).is_ok()
            }
            _ => false,
        };
        self.from = if kicked {
            from.checked_add(self.pending)
        } else {
            None
        };
        self.pending = 0;
    }
}

// ---- helpers shared by the OVA and folder committers and by recovery ----

/// The folder and file name of `path`, following symlinks to the real file when it exists
/// (so the journal and temporary files sit beside the file actually changed).
fn split_path(path: &Path) -> Result<(PathBuf, PathBuf, String)> {
    let real = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let name = real
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| CommitError::BadPath {
            path: path.to_path_buf(),
            reason: "no UTF-8 file name",
        })?
        .to_string();
    let dir = match real.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((real, dir, name))
}

fn journal_path(dir: &Path, file_name: &str) -> PathBuf {
    dir.join(format!("{file_name}{JOURNAL_SUFFIX}"))
}

/// Whether anything (of ours or not, even a dangling symlink) sits at the journal's name.
fn journal_waits(folder: &trust::Folder, file_name: &str) -> Result<bool> {
    Ok(folder
        .lstat(&format!("{file_name}{JOURNAL_SUFFIX}"))?
        .is_some())
}

/// Recovery before a commit, with the package lock held: an error when it leaves a journal
/// in place (refused or pending), since committing over it would lose it.
fn recover_before_commit(folder: &trust::Folder, file_name: &str) -> Result<()> {
    let report = recover::recover_held(folder, file_name)?;
    match report.read_only_reason() {
        Some(reason) => Err(refused(format!(
            "{}: cannot commit: {reason}",
            folder.shown(file_name)
        ))),
        None => Ok(()),
    }
}

/// The error for a journal found beside a package being opened for commits.
fn journal_beside(folder: &trust::Folder, file_name: &str) -> Error {
    refused(format!(
        "{} has a journal beside it ({}{JOURNAL_SUFFIX}): recover it first",
        folder.shown(file_name),
        file_name
    ))
}

fn temp_prefix(file_name: &str) -> String {
    format!(".{file_name}{TEMP_INFIX}")
}

/// fsync of a folder: makes creations, renames and removals in it durable.
fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("fsync folder {}", dir.display()), e))
}

/// Writes a journal and makes it durable (file and folder), stopping at the fault points.
fn write_journal(path: &Path, bytes: &[u8], opts: &CommitOptions) -> Result<()> {
    let io = |e| Error::io(format!("write journal {}", path.display()), e);
    // A new file only (recovery ran under the package lock, so none of ours is there), never
    // through a symlink, readable by the owner only: it holds descriptor bytes, and recovery
    // trusts only a journal nobody else can write.
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io)?;
    let half = bytes.len() / 2;
    f.write_all(&bytes[..half]).map_err(io)?;
    opts.fault(FaultPoint::JournalPartial);
    f.write_all(&bytes[half..]).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    fsync_dir(path.parent().unwrap_or(Path::new(".")))?;
    opts.fault(FaultPoint::JournalDurable);
    Ok(())
}

/// Deletes a journal once the package is durable, and makes that durable.
fn remove_journal(path: &Path, opts: &CommitOptions) -> Result<()> {
    fs::remove_file(path)
        .map_err(|e| Error::io(format!("remove journal {}", path.display()), e))?;
    opts.fault(FaultPoint::JournalRemoved);
    fsync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Whether a file with these metadata may be written: a write permission bit must be set
/// (root bypasses permission checks, but a file marked read-only stays read-only for us).
fn check_writable(path: &Path, meta: &fs::Metadata) -> Result<()> {
    if meta.mode() & 0o222 == 0 {
        return Err(read_only(path, "no write permission bit"));
    }
    Ok(())
}

/// Whether we may create and rename files in `dir`.
fn check_dir_writable(dir: &Path) -> Result<()> {
    match nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK) {
        Ok(()) => Ok(()),
        Err(errno) => Err(Error::io(
            format!("{} is read-only (cannot create files in it)", dir.display()),
            std::io::Error::from(errno),
        )),
    }
}
