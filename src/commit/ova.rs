//! Commits into an OVA: the layout captured from the archive's headers, a change set checked
//! against it, the in-place patch under a journal, and the atomic rewrite that streams new
//! contents (docs/formats.md §1.2-1.4, §6 rule 26).
//!
//! The committer holds the OVA's write lock ([`super::lock`]) from open to drop; a rewrite
//! locks its new archive before renaming it over the old one, so the lock moves with the
//! name. Each in-place write is journalled with the digests of the sectors it overwrites,
//! read from the archive just before the journal is written ([`super::journal`]).

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::journal::{self, Identity, Journal, Kind, Op, Target};
use super::lock::PackageLock;
use super::manifest;
use super::manifest::MemberValues;
use super::padding;
use super::trust::Folder;
use super::{
    CertificateAction, CertificateFate, ChangeSet, CommitError, CommitOptions, CommitPath,
    CommitReport, Content, Copied, FaultPoint, MAX_MANIFEST_BYTES, bad_change, check_dir_writable,
    check_writable, copy_content, fsync_dir, journal_beside, journal_path, journal_waits, locked,
    new_file_busy, recover_before_commit, remove_journal, split_path, temp_prefix, write_journal,
};
use crate::archive::names::{file_name, normalize_str};
use crate::archive::write::{self, BLOCK, END_OF_ARCHIVE, MemberHeader, round_up_block};
use crate::archive::{self, MemberKind};
use crate::error::{Error, Result, ResultExt};
use crate::io::FileSource;
use crate::ovf::MAX_DESCRIPTOR_BYTES;
use crate::package::Package;
use crate::verify::digest::DigestAlgorithm;

/// One member as laid out in the archive.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    kind: MemberKind,
    typeflag: u8,
    /// First header block (GNU long name or pax header when there is one).
    header_offset: u64,
    /// The member's own header block.
    own_header_offset: u64,
    data_offset: u64,
    size: u64,
    mtime: u64,
    /// The member's own header block (regular files and directories only; zero otherwise).
    header: [u8; BLOCK],
    /// A pax header before it overrides the size: the header's size field is not the truth.
    pax_size: bool,
    /// pax headers (per-file or global) sit between `header_offset` and the data.
    has_pax: bool,
}

impl Entry {
    /// Offset of the member's own header block.
    fn own_header_offset(&self) -> Option<u64> {
        Some(self.own_header_offset)
    }

    /// Bytes of the data area (data and its zero padding).
    fn capacity(&self) -> Option<u64> {
        round_up_block(self.size)
    }
}

/// The archive's members and the three the commit cares about.
#[derive(Debug, Clone)]
struct Layout {
    entries: Vec<Entry>,
    descriptor: usize,
    manifest: Option<usize>,
    certificate: Option<usize>,
    /// Members the index refused (hostile names): a rewrite would drop them.
    skipped: Vec<String>,
}

/// Names of the members, fixed at open.
#[derive(Debug, Clone)]
struct Names {
    descriptor: String,
    manifest: Option<String>,
    certificate: Option<String>,
}

/// What identifies the file between commits: a change means someone else wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }
}

pub(super) struct OvaCommitter {
    path: PathBuf,
    dir: PathBuf,
    file_name: String,
    file: File,
    names: Names,
    layout: Layout,
    descriptor: Vec<u8>,
    manifest: Option<Vec<u8>>,
    stamp: Stamp,
    /// A commit failed after its journal became durable, or after the rename: recover and
    /// rescan before the next one.
    stale: bool,
    /// The package folder, for the journal's checks and recovery.
    folder: Folder,
    /// The write lock on the archive the name holds.
    lock: PackageLock,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |e| Error::io(what, e)
}

impl Layout {
    fn scan(file: &File, path: &Path, names: &Names) -> Result<Layout> {
        let shown = path.display().to_string();
        let src = FileSource::from_file(
            file.try_clone().map_err(io_err(format!("dup {shown}")))?,
            path,
        )?;
        let index = archive::index(&src).with_context(|| shown.clone())?;
        let mut entries = Vec::with_capacity(index.members.len());
        for m in &index.members {
            // Everything but the member's own header block comes from the index, the one
            // walker of untrusted tar headers; that block is kept to be patched in place.
            let mut header = [0u8; BLOCK];
            if m.kind != MemberKind::Other {
                file.read_exact_at(&mut header, m.own_header_offset)
                    .map_err(io_err(format!("read {shown}")))?;
            }
            entries.push(Entry {
                name: m.name.clone(),
                kind: m.kind,
                typeflag: m.typeflag,
                header_offset: m.header_offset,
                own_header_offset: m.own_header_offset,
                data_offset: m.data_offset,
                size: m.size,
                mtime: m.mtime,
                header,
                pax_size: m.pax_size,
                has_pax: m.pax,
            });
        }
        let find = |name: &str| {
            entries
                .iter()
                .position(|e| e.name == name && e.kind == MemberKind::Regular)
        };
        let descriptor = find(&names.descriptor).ok_or_else(|| CommitError::MemberMissing {
            name: names.descriptor.clone(),
        })?;
        let manifest = names.manifest.as_deref().and_then(find);
        let certificate = names.certificate.as_deref().and_then(find);
        let skipped = index.skipped.iter().map(|s| s.raw_name.clone()).collect();
        for d in &index.duplicates {
            log::info!(
                "{shown}: an earlier copy of {:?} is shadowed by a later one; a rewrite keeps only the later one",
                d.name
            );
        }
        Ok(Layout {
            entries,
            descriptor,
            manifest,
            certificate,
            skipped,
        })
    }
}

/// Reads a member's bytes (small members only: descriptor, manifest).
fn read_member(file: &File, e: &Entry, cap: u64) -> Result<Vec<u8>> {
    if e.size > cap {
        return Err(crate::error::ErrorKind::LimitExceeded {
            what: "member",
            value: e.size,
            limit: cap,
        }
        .into());
    }
    let mut v = vec![0u8; e.size as usize];
    file.read_exact_at(&mut v, e.data_offset)
        .map_err(io_err(format!("read member {}", e.name)))?;
    Ok(v)
}

/// The planned in-place patch.
struct Plan {
    ops: Vec<Op>,
    patched: Vec<Patched>,
    descriptor: Vec<u8>,
    manifest: Option<Vec<u8>>,
    manifest_changed: bool,
    certificate: CertificateFate,
    /// The re-signed certificate's bytes.
    certificate_bytes: Option<Vec<u8>>,
}

/// An entry patched in place: its new size, header and mtime.
struct Patched {
    entry: usize,
    size: u64,
    header: [u8; BLOCK],
    mtime: u64,
}

/// Largest replacement patched in place (under the journal, which holds the bytes): larger
/// ones take a rewrite.
const IN_PLACE_MAX_MEMBER_BYTES: u64 = 1 << 20;

/// Member names and their new values for the manifest.
type MemberValueMap<'a> = std::collections::HashMap<&'a str, MemberValues>;

/// A change set checked against the archive.
struct Resolved<'c> {
    /// The new descriptor, when it differs from the stored one.
    descriptor: Option<&'c [u8]>,
    /// Entries replaced, with their contents.
    replace: Vec<(usize, &'c Content)>,
    /// Members added.
    add: Vec<(&'c str, &'c Content)>,
    /// Entries removed, and their names.
    remove: Vec<usize>,
    removed_names: Vec<String>,
    certificate: &'c CertificateAction,
    /// The archive has a certificate now.
    has_certificate: bool,
}

impl Resolved<'_> {
    /// Whether nothing changes.
    fn is_empty(&self) -> bool {
        self.descriptor.is_none()
            && self.replace.is_empty()
            && self.add.is_empty()
            && self.remove.is_empty()
            && match self.certificate {
                CertificateAction::Keep => true,
                CertificateAction::Drop => !self.has_certificate,
                CertificateAction::Resign(_) => false,
            }
    }
}

impl OvaCommitter {
    pub(super) fn open(pkg: &Package) -> Result<OvaCommitter> {
        let (path, dir, file_name) = split_path(&pkg.path)?;
        let meta = fs::metadata(&path).map_err(io_err(format!("stat {}", path.display())))?;
        check_writable(&path, &meta)?;
        check_dir_writable(&dir)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM) => {
                    Error::io(format!("{} is read-only", path.display()), e)
                }
                _ => Error::io(format!("open {}", path.display()), e),
            })?;
        let member_name =
            |i: Option<usize>| i.and_then(|i| pkg.members.get(i)).map(|m| m.name.clone());
        let names = Names {
            descriptor: member_name(Some(pkg.descriptor_member)).ok_or_else(|| {
                CommitError::MemberMissing {
                    name: "(descriptor)".into(),
                }
            })?,
            manifest: member_name(pkg.manifest_member),
            certificate: member_name(pkg.certificate_member),
        };
        let folder = Folder::open(&dir)?;
        let lock = match PackageLock::try_on(&file)? {
            Some(l) if l.is_at(&folder, &file_name)? => l,
            _ => return Err(locked(&folder, &file_name)),
        };
        if journal_waits(&folder, &file_name)? {
            return Err(journal_beside(&folder, &file_name));
        }
        let mut c = OvaCommitter {
            layout: Layout::scan(&file, &path, &names)?,
            path,
            dir,
            file_name,
            file,
            names,
            descriptor: Vec::new(),
            manifest: None,
            stamp: Stamp::of(&meta),
            stale: false,
            folder,
            lock,
        };
        c.load()?;
        Ok(c)
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn descriptor(&self) -> &[u8] {
        &self.descriptor
    }

    /// Reads the descriptor and manifest bytes and the file's stamp for the current layout.
    fn load(&mut self) -> Result<()> {
        let d = &self.layout.entries[self.layout.descriptor];
        self.descriptor = read_member(&self.file, d, MAX_DESCRIPTOR_BYTES)?;
        self.manifest = match self.layout.manifest {
            Some(i) => Some(read_member(
                &self.file,
                &self.layout.entries[i],
                MAX_MANIFEST_BYTES,
            )?),
            None => None,
        };
        let meta = self
            .file
            .metadata()
            .map_err(io_err(format!("stat {}", self.path.display())))?;
        self.stamp = Stamp::of(&meta);
        Ok(())
    }

    fn open_rw(&self) -> Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(io_err(format!("open {}", self.path.display())))
    }

    /// Re-reads the archive at `path` from scratch (after a failure, a rewrite, or a change
    /// made by someone else).
    fn reopen(&mut self) -> Result<()> {
        self.file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(io_err(format!("open {}", self.path.display())))?;
        let meta = self
            .file
            .metadata()
            .map_err(io_err(format!("stat {}", self.path.display())))?;
        if !self.lock.covers_meta(&meta) {
            // Replaced by someone else: the lock must be on the file the name holds now.
            self.lock = match PackageLock::try_on(&self.file)? {
                Some(l) => l,
                None => return Err(locked(&self.folder, &self.file_name)),
            };
        }
        self.layout = Layout::scan(&self.file, &self.path, &self.names)?;
        if self.layout.certificate.is_none() {
            self.names.certificate = None;
        }
        self.load()
    }

    pub(super) fn commit(&mut self, cs: &ChangeSet, opts: &CommitOptions) -> Result<CommitReport> {
        let journal = journal_path(&self.dir, &self.file_name);
        let now = fs::metadata(&self.path)
            .map(|m| Stamp::of(&m))
            .map_err(io_err(format!("stat {}", self.path.display())))?;
        let waits = journal_waits(&self.folder, &self.file_name)?;
        if self.stale || waits || now != self.stamp {
            if !self.stale && now != self.stamp {
                log::warn!(
                    "{}: changed by another program since it was opened; reading it again",
                    self.path.display()
                );
            }
            if !self.lock.is_at(&self.folder, &self.file_name)? {
                // Replaced behind our back: lock the archive there before recovering it.
                self.lock = match PackageLock::try_on(&self.open_rw()?)? {
                    Some(l) if l.is_at(&self.folder, &self.file_name)? => l,
                    _ => return Err(locked(&self.folder, &self.file_name)),
                };
            }
            recover_before_commit(&self.folder, &self.file_name)?;
            self.reopen()?;
            self.stale = false;
        }
        let r = self.resolve(cs)?;
        if r.is_empty() {
            return Ok(CommitReport {
                path: CommitPath::Unchanged,
                descriptor: self.descriptor.clone(),
                manifest: self.manifest.clone(),
                manifest_changed: false,
                certificate_dropped: None,
                certificate_bytes: None,
                certificate: self.certificate_kept(),
                members_replaced: Vec::new(),
                members_added: Vec::new(),
                members_removed: Vec::new(),
                bytes_written: 0,
                elapsed: Default::default(),
                replaced: false,
            });
        }
        let mut report = match self.plan_in_place(&r, opts)? {
            Some(plan) => self.apply_in_place(plan, &journal, opts)?,
            None => self.rewrite(&r, opts)?,
        };
        // Names from the change set: the layout may have been scanned anew.
        report.members_replaced = cs.replace.iter().map(|(n, _)| n.clone()).collect();
        report.members_added = r.add.iter().map(|(n, _)| n.to_string()).collect();
        report.members_removed = r.removed_names.clone();
        Ok(report)
    }

    fn name_of(&self, i: usize) -> String {
        self.layout
            .entries
            .get(i)
            .map(|e| e.name.clone())
            .unwrap_or_default()
    }

    /// The certificate's fate when nothing touches it.
    fn certificate_kept(&self) -> CertificateFate {
        match self.layout.certificate {
            Some(i) => CertificateFate::Kept(self.name_of(i)),
            None => CertificateFate::None,
        }
    }

    /// Checks the change set against the archive and finds its members.
    fn resolve<'c>(&self, cs: &'c ChangeSet) -> Result<Resolved<'c>> {
        let l = &self.layout;
        let find = |name: &str| {
            l.entries
                .iter()
                .rposition(|e| e.name == name && e.kind == MemberKind::Regular)
        };
        let special =
            |i: usize| i == l.descriptor || Some(i) == l.manifest || Some(i) == l.certificate;
        let mut replace = Vec::with_capacity(cs.replace.len());
        for (name, content) in &cs.replace {
            match find(name) {
                Some(i) if special(i) => return Err(not_a_data_member(name)),
                Some(i) => replace.push((i, content)),
                None => return Err(bad_change(format!("member {name:?} is not in the archive"))),
            }
        }
        let mut add = Vec::with_capacity(cs.add.len());
        for (name, content) in &cs.add {
            if normalize_str(name).ok().as_deref() != Some(name.as_str()) || name.ends_with('/') {
                return Err(bad_change(format!(
                    "{name:?} is not a member name ovafs writes"
                )));
            }
            if l.entries.iter().any(|e| &e.name == name) || self.is_reserved(name) {
                return Err(bad_change(format!(
                    "member {name:?} is already in the archive"
                )));
            }
            add.push((name.as_str(), content));
        }
        let mut remove = Vec::with_capacity(cs.remove.len());
        for name in &cs.remove {
            match find(name) {
                Some(i) if Some(i) == l.certificate => {
                    return Err(bad_change(format!(
                        "{name:?} is the certificate: drop it with CertificateAction::Drop"
                    )));
                }
                Some(i) if special(i) => return Err(not_a_data_member(name)),
                Some(i) => remove.push(i),
                None => return Err(bad_change(format!("member {name:?} is not in the archive"))),
            }
        }
        if matches!(cs.certificate, CertificateAction::Resign(_)) && self.manifest.is_none() {
            return Err(CommitError::Signer {
                reason: "the package has no manifest to sign".into(),
            }
            .into());
        }
        Ok(Resolved {
            descriptor: cs
                .descriptor
                .as_deref()
                .filter(|d| *d != self.descriptor.as_slice()),
            replace,
            add,
            removed_names: remove.iter().map(|&i| self.name_of(i)).collect(),
            remove,
            certificate: &cs.certificate,
            has_certificate: l.certificate.is_some(),
        })
    }

    /// Whether `name` is the manifest's or certificate's name (which only those may take).
    fn is_reserved(&self, name: &str) -> bool {
        Some(name) == self.names.manifest.as_deref()
            || Some(name) == self.names.certificate.as_deref()
            || Some(name) == self.new_certificate_name().as_deref()
    }

    /// The name a new certificate takes: the manifest's, with `.cert` for `.mf`.
    fn new_certificate_name(&self) -> Option<String> {
        let mf = self.names.manifest.as_deref()?;
        let base = mf.get(..mf.len().checked_sub(3)?)?;
        Some(format!("{base}.cert"))
    }

    /// The descriptor's file name as the manifest beside it lists it.
    fn listed_name(&self) -> &str {
        file_name(&self.names.descriptor)
    }

    /// The manifest refreshed for `descriptor` (when it changes) and the members' new values.
    fn refresh_manifest(
        &self,
        descriptor: Option<&[u8]>,
        r: &Resolved<'_>,
        values: &MemberValueMap,
    ) -> Result<Option<manifest::Refresh>> {
        let Some(m) = &self.manifest else {
            return Ok(None);
        };
        let algorithms = manifest::algorithms(m).map_err(CommitError::from)?;
        let descriptor_values = descriptor.map(|d| MemberValues::of_bytes(d, &algorithms));
        let mut changes = manifest::Changes::default();
        if let Some(v) = &descriptor_values {
            changes.set.push((self.listed_name(), v));
        }
        for (i, _) in &r.replace {
            let name = &self.layout.entries[*i].name;
            changes
                .set
                .push((name, values.get(name.as_str()).ok_or_else(missing_values)?));
        }
        for (name, _) in &r.add {
            changes
                .add
                .push((name, values.get(*name).ok_or_else(missing_values)?));
        }
        for name in &r.removed_names {
            changes.remove.push(name);
        }
        Ok(Some(
            manifest::refresh_members(m, &changes).map_err(CommitError::from)?,
        ))
    }

    /// The algorithms the manifest's lines use (none without a manifest).
    fn algorithms(&self) -> Result<Vec<DigestAlgorithm>> {
        match &self.manifest {
            Some(m) => Ok(manifest::algorithms(m).map_err(CommitError::from)?),
            None => Ok(Vec::new()),
        }
    }

    /// The new certificate's bytes over `manifest`, when the change set re-signs.
    fn signed_certificate(&self, r: &Resolved<'_>, manifest: &[u8]) -> Result<Option<Vec<u8>>> {
        let CertificateAction::Resign(signer) = r.certificate else {
            return Ok(None);
        };
        let mf_name = self.names.manifest.as_deref().unwrap_or_default();
        let alg = self
            .manifest
            .as_deref()
            .map(|m| manifest::primary_algorithm(m, self.listed_name()))
            .transpose()
            .map_err(CommitError::from)?
            .unwrap_or(DigestAlgorithm::Sha256);
        Ok(Some(signer.certificate_file(
            file_name(mf_name),
            manifest,
            alg,
        )?))
    }

    /// The patch when every change keeps its member's block count (replaced members of at
    /// most [`IN_PLACE_MAX_MEMBER_BYTES`]), nothing is added or removed and no certificate
    /// has to go; `None` when the archive must be rewritten.
    fn plan_in_place(&self, r: &Resolved<'_>, opts: &CommitOptions) -> Result<Option<Plan>> {
        if !r.add.is_empty() || !r.remove.is_empty() {
            return Ok(None);
        }
        if matches!(r.certificate, CertificateAction::Drop) && r.has_certificate {
            return Ok(None);
        }
        let mtime = opts.mtime_now();
        let mut ops = Vec::new();
        let mut patched = Vec::new();
        let mut stored = self.descriptor.clone();
        if let Some(new) = r.descriptor {
            let d = &self.layout.entries[self.layout.descriptor];
            if d.pax_size {
                log::info!(
                    "{}: a pax header gives the descriptor's size; rewriting",
                    self.path.display()
                );
                return Ok(None);
            }
            let Some(capacity) = d.capacity() else {
                return Ok(None);
            };
            let Some(fit) = padding::fit_blocks(new, capacity) else {
                return Ok(None);
            };
            let Some((op, p)) = self.patch(self.layout.descriptor, &fit, mtime)? else {
                return Ok(None);
            };
            stored = fit;
            ops.push(op);
            patched.push(p);
        }
        let algorithms = self.algorithms()?;
        let mut values = MemberValueMap::new();
        for (i, content) in &r.replace {
            let e = &self.layout.entries[*i];
            if content.len > IN_PLACE_MAX_MEMBER_BYTES
                || e.capacity() != round_up_block(content.len)
            {
                return Ok(None);
            }
            let mut bytes = vec![0u8; usize::try_from(content.len).unwrap_or(usize::MAX)];
            content.data.read_exact_at(0, &mut bytes)?;
            let Some((op, p)) = self.patch(*i, &bytes, mtime)? else {
                return Ok(None);
            };
            values.insert(e.name.as_str(), MemberValues::of_bytes(&bytes, &algorithms));
            ops.push(op);
            patched.push(p);
        }
        let refresh = self.refresh_manifest(r.descriptor.map(|_| stored.as_slice()), r, &values)?;
        let manifest_changed = refresh.as_ref().is_some_and(|m| m.changed);
        if let (Some(m), Some(mi)) = (&refresh, self.layout.manifest)
            && m.changed
        {
            if r.has_certificate && matches!(r.certificate, CertificateAction::Keep) {
                // The certificate signs the old manifest: removing a member takes a rewrite.
                return Ok(None);
            }
            let Some((op, p)) = self.patch(mi, &m.bytes, mtime)? else {
                return Ok(None);
            };
            ops.push(op);
            patched.push(p);
        }
        let manifest_now = refresh.map(|m| m.bytes).or_else(|| self.manifest.clone());
        let mut certificate = self.certificate_kept();
        let signed = self.signed_certificate(r, manifest_now.as_deref().unwrap_or_default())?;
        if let Some(cert) = &signed {
            let Some(ci) = self.layout.certificate else {
                return Ok(None);
            };
            let Some((op, p)) = self.patch(ci, cert, mtime)? else {
                return Ok(None);
            };
            ops.push(op);
            patched.push(p);
            certificate = CertificateFate::Signed(self.name_of(ci));
        }
        let journal_bytes: u64 = ops
            .iter()
            .map(|op| match op {
                Op::Write { data, .. } => data.len() as u64 * 2,
                _ => 0,
            })
            .sum();
        if ops.len() > journal::MAX_OPS as usize || journal_bytes > journal::MAX_JOURNAL_BYTES / 2 {
            return Ok(None);
        }
        Ok(Some(Plan {
            ops,
            patched,
            descriptor: stored,
            manifest: manifest_now,
            manifest_changed,
            certificate,
            certificate_bytes: signed,
        }))
    }

    /// The journal write that gives entry `i` the data `bytes` (its header's size and mtime
    /// patched), when they fill the same blocks and no pax header gives the size.
    fn patch(&self, i: usize, bytes: &[u8], mtime: u64) -> Result<Option<(Op, Patched)>> {
        let e = &self.layout.entries[i];
        let (Some(capacity), Some(offset)) = (e.capacity(), e.own_header_offset()) else {
            return Ok(None);
        };
        if e.pax_size || round_up_block(bytes.len() as u64) != Some(capacity) {
            return Ok(None);
        }
        let mut header = e.header;
        write::patch_size_mtime(&mut header, bytes.len() as u64, Some(mtime))
            .map_err(CommitError::from)?;
        let mut data = Vec::with_capacity(BLOCK + capacity as usize);
        data.extend_from_slice(&header);
        data.extend_from_slice(bytes);
        data.resize(BLOCK + capacity as usize, 0);
        Ok(Some((
            self.write_op(offset, data)?,
            Patched {
                entry: i,
                size: bytes.len() as u64,
                header,
                mtime,
            },
        )))
    }

    /// A journal write of `data` at `offset`, bound to the sectors there now.
    fn write_op(&self, offset: u64, data: Vec<u8>) -> Result<Op> {
        let mut before = vec![0u8; data.len()];
        self.file
            .read_exact_at(&mut before, offset)
            .map_err(io_err(format!("read {}", self.path.display())))?;
        Ok(Op::Write {
            offset,
            old: journal::sector_digests(&before),
            data,
        })
    }

    fn identity(&self) -> Result<Identity> {
        let meta = self
            .file
            .metadata()
            .map_err(io_err(format!("stat {}", self.path.display())))?;
        Ok(Identity {
            size: meta.len(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    fn apply_in_place(
        &mut self,
        plan: Plan,
        journal: &Path,
        opts: &CommitOptions,
    ) -> Result<CommitReport> {
        let j = Journal {
            kind: Kind::Archive,
            target: self.identity()?,
            ops: plan.ops,
        };
        let bytes = j.encode();
        if let Err(e) = write_journal(journal, &bytes, opts) {
            // Not durable, the archive untouched: take the partial journal away.
            let _ = fs::remove_file(journal);
            return Err(e);
        }
        // From here on a failure leaves a journal that completes the commit.
        self.stale = true;
        let shown = self.path.display().to_string();
        let written = bytes.len() as u64
            + journal::apply(&j, Target::Archive(&self.file), &|p| opts.fault(p))?;
        opts.fault(FaultPoint::AppliedDurable);
        remove_journal(journal, opts)?;

        // The layout now holds the new sizes and headers.
        for p in &plan.patched {
            let e = &mut self.layout.entries[p.entry];
            e.size = p.size;
            e.header = p.header;
            e.mtime = p.mtime;
        }
        self.descriptor = plan.descriptor;
        self.manifest = plan.manifest;
        let meta = self
            .file
            .metadata()
            .map_err(io_err(format!("stat {shown}")))?;
        self.stamp = Stamp::of(&meta);
        self.stale = false;
        Ok(CommitReport {
            path: CommitPath::InPlace,
            descriptor: self.descriptor.clone(),
            manifest: self.manifest.clone(),
            manifest_changed: plan.manifest_changed,
            certificate_dropped: None,
            certificate_bytes: plan.certificate_bytes,
            certificate: plan.certificate,
            members_replaced: Vec::new(),
            members_added: Vec::new(),
            members_removed: Vec::new(),
            bytes_written: written,
            elapsed: Default::default(),
            replaced: false,
        })
    }

    /// Refuses a rewrite that would lose members it cannot carry over faithfully.
    fn check_rewritable(&self) -> Result<()> {
        if let Some(name) = self.layout.skipped.first() {
            return Err(CommitError::CannotRewrite {
                reason: format!(
                    "member {name:?} (and {} more) has a name ovafs refuses; a rewrite would drop it",
                    self.layout.skipped.len() - 1
                ),
            }
            .into());
        }
        if let Some(e) = self
            .layout
            .entries
            .iter()
            .find(|e| e.kind == MemberKind::Other && e.has_pax)
        {
            return Err(CommitError::CannotRewrite {
                reason: format!(
                    "entry {:?} (type {:?}) is described by a pax header, which ovafs never writes",
                    e.name, e.typeflag as char
                ),
            }
            .into());
        }
        Ok(())
    }

    /// Writes a new archive: descriptor (with slack), manifest, a new certificate, every
    /// other member in archive order (removed ones left out, replaced ones copied from their
    /// new content), then the added members. The manifest and certificate are written with
    /// placeholder digests of their final lengths and filled in once the contents copied
    /// after them are digested.
    fn rewrite(&mut self, r: &Resolved<'_>, opts: &CommitOptions) -> Result<CommitReport> {
        self.check_rewritable()?;
        let new = r.descriptor.unwrap_or(&self.descriptor);
        let stored = match r.descriptor {
            Some(new) => {
                let slack = opts
                    .slack_bytes
                    .unwrap_or_else(|| padding::default_slack(new.len() as u64));
                padding::with_slack(new, slack)
            }
            // Unchanged: kept byte for byte, padding and all.
            None => new.to_vec(),
        };
        let algorithms = self.algorithms()?;
        let mut values = MemberValueMap::new();
        for (i, c) in &r.replace {
            let name = self.layout.entries[*i].name.as_str();
            values.insert(name, MemberValues::placeholder(c.len, &algorithms));
        }
        for (name, c) in &r.add {
            values.insert(name, MemberValues::placeholder(c.len, &algorithms));
        }
        let descriptor_changed = r.descriptor.is_some();
        let refresh =
            self.refresh_manifest(descriptor_changed.then_some(&stored[..]), r, &values)?;
        let manifest_changed = refresh.as_ref().is_some_and(|m| m.changed);
        let l = &self.layout;
        let cert_name = l.certificate.map(|i| self.name_of(i));
        let (drop_cert, certificate) = match (r.certificate, &cert_name) {
            (CertificateAction::Resign(_), Some(name)) => {
                (None, CertificateFate::Signed(name.clone()))
            }
            (CertificateAction::Resign(_), None) => (
                None,
                CertificateFate::Signed(self.new_certificate_name().unwrap_or_default()),
            ),
            (CertificateAction::Drop, Some(name)) => {
                (l.certificate, CertificateFate::Dropped(name.clone()))
            }
            (CertificateAction::Keep, Some(name)) if manifest_changed => {
                (l.certificate, CertificateFate::Dropped(name.clone()))
            }
            (_, Some(name)) => (None, CertificateFate::Kept(name.clone())),
            (_, None) => (None, CertificateFate::None),
        };
        let manifest_bytes = refresh.map(|m| m.bytes).or_else(|| self.manifest.clone());
        let cert_bytes =
            self.signed_certificate(r, manifest_bytes.as_deref().unwrap_or_default())?;
        let mtime = opts.mtime_now();
        let shown = self.path.display().to_string();

        // Descriptor, manifest, a new certificate, then every other member in archive order.
        let replaced: std::collections::HashMap<usize, &Content> =
            r.replace.iter().map(|(i, c)| (*i, *c)).collect();
        let mut order = vec![Slot::Entry(l.descriptor)];
        order.extend(l.manifest.map(Slot::Entry));
        if cert_bytes.is_some() && l.certificate.is_none() {
            order.push(Slot::NewCertificate);
        }
        order.extend(
            (0..l.entries.len())
                .filter(|&i| {
                    i != l.descriptor
                        && Some(i) != l.manifest
                        && Some(i) != drop_cert
                        && !r.remove.contains(&i)
                })
                .map(Slot::Entry),
        );
        order.extend((0..r.add.len()).map(Slot::Added));

        let mut tmp = tempfile::Builder::new()
            .prefix(&temp_prefix(&self.file_name))
            .tempfile_in(&self.dir)
            .map_err(io_err(format!(
                "create a temporary file in {}",
                self.dir.display()
            )))?;
        let tmp_shown = tmp.path().display().to_string();
        let meta = self
            .file
            .metadata()
            .map_err(io_err(format!("stat {shown}")))?;
        tmp.as_file()
            .set_permissions(meta.permissions())
            .map_err(io_err(format!("chmod {tmp_shown}")))?;
        if std::os::unix::fs::fchown(tmp.as_file(), Some(meta.uid()), Some(meta.gid())).is_err() {
            log::debug!("{shown}: cannot give the rewritten archive its owner back");
        }

        let template = self.layout.entries[self.layout.descriptor].header;
        let mut written = 0u64;
        let mut expect: Vec<(String, u64)> = Vec::with_capacity(order.len());
        // Where the manifest's and certificate's data sit, to fill them in at the end.
        let mut manifest_at = None;
        let mut cert_at = None;
        let started = std::time::Instant::now();
        for (count, slot) in order.iter().enumerate() {
            let out = tmp.as_file_mut();
            match *slot {
                Slot::Entry(i) if i == self.layout.descriptor => {
                    let e = &self.layout.entries[i];
                    let member_mtime = if descriptor_changed { mtime } else { e.mtime };
                    written +=
                        write_small(out, &e.header, &e.name, &stored, member_mtime, &tmp_shown)?;
                    expect.push((e.name.clone(), stored.len() as u64));
                }
                Slot::Entry(i) if Some(i) == self.layout.manifest => {
                    let e = &self.layout.entries[i];
                    let bytes = manifest_bytes.as_deref().unwrap_or_default();
                    let member_mtime = if manifest_changed { mtime } else { e.mtime };
                    written +=
                        write_small(out, &e.header, &e.name, bytes, member_mtime, &tmp_shown)?;
                    manifest_at = Some(written - padded(bytes.len()));
                    expect.push((e.name.clone(), bytes.len() as u64));
                }
                Slot::Entry(i) if Some(i) == self.layout.certificate && cert_bytes.is_some() => {
                    let e = &self.layout.entries[i];
                    let bytes = cert_bytes.as_deref().unwrap_or_default();
                    written += write_small(out, &e.header, &e.name, bytes, mtime, &tmp_shown)?;
                    cert_at = Some(written - padded(bytes.len()));
                    expect.push((e.name.clone(), bytes.len() as u64));
                }
                Slot::NewCertificate => {
                    let name = self.new_certificate_name().unwrap_or_default();
                    let bytes = cert_bytes.as_deref().unwrap_or_default();
                    written += write_small(out, &template, &name, bytes, mtime, &tmp_shown)?;
                    cert_at = Some(written - padded(bytes.len()));
                    expect.push((name, bytes.len() as u64));
                }
                Slot::Entry(i) => {
                    let e = &self.layout.entries[i];
                    match replaced.get(&i) {
                        Some(c) => {
                            let (n, copied) = write_content(
                                out,
                                &e.header,
                                &e.name,
                                c,
                                mtime,
                                &algorithms,
                                &tmp_shown,
                            )?;
                            written += n;
                            values.insert(e.name.as_str(), copied.values);
                            expect.push((e.name.clone(), c.len));
                        }
                        None => {
                            written += self.copy_entry(e, out, &tmp_shown)?;
                            if e.kind != MemberKind::Other {
                                expect.push((e.name.clone(), e.size));
                            }
                        }
                    }
                }
                Slot::Added(k) => {
                    let (name, c) = r.add[k];
                    let (n, copied) =
                        write_content(out, &template, name, c, mtime, &algorithms, &tmp_shown)?;
                    written += n;
                    values.insert(name, copied.values);
                    expect.push((name.to_string(), c.len));
                }
            }
            opts.fault(FaultPoint::RewriteMember { count: count + 1 });
        }
        tmp.as_file_mut()
            .write_all(&END_OF_ARCHIVE)
            .map_err(io_err(format!("write {tmp_shown}")))?;
        written += END_OF_ARCHIVE.len() as u64;

        // The contents are digested: the manifest and certificate take their real values, in
        // the places their placeholders reserved.
        // The certificate as finally written (placeholders are filled in below).
        let mut final_cert = cert_bytes.clone();
        if !r.replace.is_empty() || !r.add.is_empty() {
            let real =
                self.refresh_manifest(descriptor_changed.then_some(&stored[..]), r, &values)?;
            let real = real.map(|m| m.bytes);
            fill_in(
                tmp.as_file(),
                manifest_at,
                manifest_bytes.as_deref(),
                real.as_deref(),
                "manifest",
            )?;
            let cert = self.signed_certificate(r, real.as_deref().unwrap_or_default())?;
            final_cert = cert.clone();
            fill_in(
                tmp.as_file(),
                cert_at,
                cert_bytes.as_deref(),
                cert.as_deref(),
                "certificate",
            )?;
        }
        let copied = started.elapsed();
        tmp.as_file()
            .sync_all()
            .map_err(io_err(format!("fsync {tmp_shown}")))?;
        let synced = started.elapsed();
        check_rewritten(tmp.as_file(), tmp.path(), &expect, &stored)?;
        log::info!(
            "rewrite {shown}: {written} bytes copied in {:.3} s, fsync {:.3} s, check {:.3} s",
            copied.as_secs_f64(),
            (synced - copied).as_secs_f64(),
            (started.elapsed() - synced).as_secs_f64()
        );
        opts.fault(FaultPoint::RewriteDurable);

        // Locked before it takes the name, so that a mount opening the new archive finds it
        // locked as the old one was.
        let new_lock =
            PackageLock::try_on(tmp.as_file())?.ok_or_else(|| new_file_busy(&tmp_shown))?;
        let file = tmp
            .persist(&self.path)
            .map_err(|e| Error::io(format!("rename {tmp_shown} over {shown}"), e.error))?;
        self.lock = new_lock;
        // Renamed: a failure from here leaves the new archive, maybe not durable yet.
        self.stale = true;
        opts.fault(FaultPoint::Renamed);
        fsync_dir(&self.dir)?;

        match &certificate {
            CertificateFate::Dropped(_) | CertificateFate::None => self.names.certificate = None,
            CertificateFate::Signed(name) | CertificateFate::Kept(name) => {
                self.names.certificate = Some(name.clone())
            }
        }
        self.file = file;
        self.layout = Layout::scan(&self.file, &self.path, &self.names)?;
        self.load()?;
        self.stale = false;
        Ok(CommitReport {
            path: CommitPath::Rewrite,
            descriptor: self.descriptor.clone(),
            manifest: self.manifest.clone(),
            manifest_changed,
            certificate_dropped: None,
            certificate_bytes: final_cert,
            certificate,
            members_replaced: Vec::new(),
            members_added: Vec::new(),
            members_removed: Vec::new(),
            bytes_written: written,
            elapsed: Default::default(),
            replaced: true,
        })
    }

    /// Copies an unchanged entry: links, devices, sparse members with their header blocks
    /// and data verbatim; regular files and folders with a rebuilt ustar header.
    fn copy_entry(&self, e: &Entry, out: &mut File, tmp_shown: &str) -> Result<u64> {
        if e.kind == MemberKind::Other {
            let end = e
                .capacity()
                .and_then(|c| e.data_offset.checked_add(c))
                .ok_or_else(|| Error::overflow("member end"))?;
            return copy_range(&self.file, e.header_offset, end - e.header_offset, out)
                .with_context(|| format!("copy {} into {tmp_shown}", e.name));
        }
        let (name, typeflag) = if e.kind == MemberKind::Directory {
            (format!("{}/", e.name), b'5')
        } else {
            let t = if e.typeflag == b'7' { b'7' } else { b'0' };
            (e.name.clone(), t)
        };
        let h = write::member_headers(
            &e.header,
            &MemberHeader {
                name: &name,
                size: e.size,
                mtime: e.mtime,
                typeflag,
            },
        )
        .map_err(CommitError::from)?;
        out.write_all(&h)
            .map_err(io_err(format!("write {tmp_shown}")))?;
        let mut written = h.len() as u64;
        written += copy_range(&self.file, e.data_offset, e.size, out)
            .with_context(|| format!("copy {} into {tmp_shown}", e.name))?;
        let pad = write::padding_len(e.size);
        out.write_all(&[0u8; BLOCK][..pad])
            .map_err(io_err(format!("write {tmp_shown}")))?;
        Ok(written + pad as u64)
    }
}

/// What fills a place in a rewritten archive.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// An entry of the old archive (its bytes, or its new content).
    Entry(usize),
    /// The certificate a re-signing creates.
    NewCertificate,
    /// The change set's `k`-th added member.
    Added(usize),
}

/// Bytes a member's data takes with its padding.
fn padded(len: usize) -> u64 {
    (len + write::padding_len(len as u64)) as u64
}

/// Writes a small member (descriptor, manifest, certificate) from memory: headers built on
/// `template`, data, padding; returns the bytes written.
fn write_small(
    out: &mut File,
    template: &[u8; BLOCK],
    name: &str,
    bytes: &[u8],
    mtime: u64,
    tmp_shown: &str,
) -> Result<u64> {
    let h = write::member_headers(
        template,
        &MemberHeader {
            name,
            size: bytes.len() as u64,
            mtime,
            typeflag: b'0',
        },
    )
    .map_err(CommitError::from)?;
    out.write_all(&h)
        .and_then(|_| out.write_all(bytes))
        .and_then(|_| out.write_all(&[0u8; BLOCK][..write::padding_len(bytes.len() as u64)]))
        .map_err(io_err(format!("write {tmp_shown}")))?;
    Ok(h.len() as u64 + padded(bytes.len()))
}

/// Writes a member from a content, streamed and digested; returns the bytes written and the
/// digests.
fn write_content(
    out: &mut File,
    template: &[u8; BLOCK],
    name: &str,
    content: &Content,
    mtime: u64,
    algorithms: &[DigestAlgorithm],
    tmp_shown: &str,
) -> Result<(u64, Copied)> {
    let h = write::member_headers(
        template,
        &MemberHeader {
            name,
            size: content.len,
            mtime,
            typeflag: b'0',
        },
    )
    .map_err(CommitError::from)?;
    out.write_all(&h)
        .map_err(io_err(format!("write {tmp_shown}")))?;
    let copied = copy_content(content, out, algorithms, tmp_shown)
        .with_context(|| format!("copy the new content of {name} into {tmp_shown}"))?;
    let pad = write::padding_len(content.len);
    out.write_all(&[0u8; BLOCK][..pad])
        .map_err(io_err(format!("write {tmp_shown}")))?;
    Ok((h.len() as u64 + content.len + pad as u64, copied))
}

/// Writes `real` where `placeholder` was written at `at`: they must have the same length (a
/// digest's length depends only on its algorithm, a signature's only on the key).
fn fill_in(
    file: &File,
    at: Option<u64>,
    placeholder: Option<&[u8]>,
    real: Option<&[u8]>,
    what: &str,
) -> Result<()> {
    let (Some(at), Some(placeholder), Some(real)) = (at, placeholder, real) else {
        return Ok(());
    };
    if placeholder.len() != real.len() {
        return Err(CommitError::RewriteCheck {
            reason: format!(
                "the {what} is {} bytes, its reserved place {}",
                real.len(),
                placeholder.len()
            ),
        }
        .into());
    }
    file.write_all_at(real, at)
        .map_err(io_err(format!("write the {what}")))
}

fn not_a_data_member(name: &str) -> Error {
    bad_change(format!(
        "{name:?} is the descriptor, manifest or certificate: they change through the change set's descriptor and certificate"
    ))
}

fn missing_values() -> Error {
    CommitError::RewriteCheck {
        reason: "a changed member has no digests".into(),
    }
    .into()
}
/// Copies `len` bytes at `offset` of `src` to the current position of `dst`, with
/// `copy_file_range` where the kernel offers it (std's `io::copy` between files).
fn copy_range(src: &File, offset: u64, len: u64, dst: &mut File) -> Result<u64> {
    let mut reader = src;
    reader
        .seek(SeekFrom::Start(offset))
        .map_err(io_err("seek"))?;
    let copied =
        std::io::copy(&mut std::io::Read::take(reader, len), dst).map_err(io_err("copy"))?;
    if copied != len {
        return Err(crate::error::ErrorKind::UnexpectedEof {
            offset,
            wanted: len,
            available: offset.saturating_add(copied),
        }
        .into());
    }
    Ok(copied)
}

/// Indexes the rewritten archive and checks it lists exactly the members written, with
/// their sizes, descriptor first, and that the descriptor reads back as written.
fn check_rewritten(
    file: &File,
    path: &Path,
    expect: &[(String, u64)],
    descriptor: &[u8],
) -> Result<()> {
    let fail = |reason: String| -> Error { CommitError::RewriteCheck { reason }.into() };
    let src = FileSource::from_file(file.try_clone().map_err(io_err("dup"))?, path)?;
    let index = archive::index(&src)?;
    let got: Vec<(String, u64)> = index
        .members
        .iter()
        .filter(|m| m.kind != MemberKind::Other)
        .map(|m| (m.name.clone(), m.size))
        .collect();
    if got != expect {
        return Err(fail(format!("members {got:?}, expected {expect:?}")));
    }
    let first = index
        .members
        .first()
        .ok_or_else(|| fail("no members".into()))?;
    let mut back = vec![0u8; descriptor.len()];
    file.read_exact_at(&mut back, first.data_offset)
        .map_err(io_err("read back"))?;
    if back != descriptor {
        return Err(fail("the descriptor differs".into()));
    }
    Ok(())
}
