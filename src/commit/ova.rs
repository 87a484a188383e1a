//! Commits into an OVA: the layout captured from the archive's headers, the in-place patch
//! under a journal, and the atomic rewrite (formats.md §1.2-1.4, §6 rule 26).
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
use super::padding;
use super::trust::Folder;
use super::{
    CommitError, CommitOptions, CommitPath, CommitReport, FaultPoint, MAX_MANIFEST_BYTES,
    check_dir_writable, check_writable, fsync_dir, journal_beside, journal_path, journal_waits,
    locked, new_file_busy, recover_before_commit, remove_journal, split_path, temp_prefix,
    write_journal,
};
use crate::archive::names::file_name;
use crate::archive::write::{self, BLOCK, END_OF_ARCHIVE, MemberHeader, round_up_block};
use crate::archive::{self, MemberKind};
use crate::error::{Error, Result, ResultExt};
use crate::io::FileSource;
use crate::ovf::MAX_DESCRIPTOR_BYTES;
use crate::package::Package;

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
    descriptor: Vec<u8>,
    descriptor_header: [u8; BLOCK],
    manifest: Option<(Vec<u8>, [u8; BLOCK])>,
    manifest_changed: bool,
    mtime: u64,
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

    pub(super) fn commit(&mut self, new: &[u8], opts: &CommitOptions) -> Result<CommitReport> {
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
        if new == self.descriptor.as_slice() {
            return Ok(CommitReport {
                path: CommitPath::Unchanged,
                descriptor: self.descriptor.clone(),
                manifest: self.manifest.clone(),
                manifest_changed: false,
                certificate_dropped: None,
                bytes_written: 0,
                elapsed: Default::default(),
                replaced: false,
            });
        }
        match self.plan_in_place(new, opts)? {
            Some(plan) => self.apply_in_place(plan, &journal, opts),
            None => self.rewrite(new, opts),
        }
    }

    /// The descriptor's file name as the manifest beside it lists it.
    fn listed_name(&self) -> &str {
        file_name(&self.names.descriptor)
    }

    fn refresh_manifest(&self, descriptor: &[u8]) -> Result<Option<manifest::Refresh>> {
        match &self.manifest {
            Some(m) => Ok(Some(
                manifest::refresh(m, self.listed_name(), descriptor).map_err(CommitError::from)?,
            )),
            None => Ok(None),
        }
    }

    /// The patch when the new descriptor and manifest keep their block counts and no
    /// certificate has to go; `None` when the archive must be rewritten.
    fn plan_in_place(&self, new: &[u8], opts: &CommitOptions) -> Result<Option<Plan>> {
        let d = &self.layout.entries[self.layout.descriptor];
        if d.pax_size {
            log::info!(
                "{}: a pax header gives the descriptor's size; rewriting",
                self.path.display()
            );
            return Ok(None);
        }
        let (Some(capacity), Some(hdr_off)) = (d.capacity(), d.own_header_offset()) else {
            return Ok(None);
        };
        let Some(stored) = padding::fit_blocks(new, capacity) else {
            return Ok(None);
        };
        let mtime = opts.mtime_now();
        let mut ops = Vec::with_capacity(2);
        let mut header = d.header;
        write::patch_size_mtime(&mut header, stored.len() as u64, Some(mtime))
            .map_err(CommitError::from)?;
        let mut data = Vec::with_capacity(BLOCK + capacity as usize);
        data.extend_from_slice(&header);
        data.extend_from_slice(&stored);
        data.resize(BLOCK + capacity as usize, 0);
        ops.push(self.write_op(hdr_off, data)?);

        let mut manifest = None;
        let mut manifest_changed = false;
        if let (Some(refresh), Some(mi)) = (self.refresh_manifest(&stored)?, self.layout.manifest) {
            let m = &self.layout.entries[mi];
            let mut mheader = m.header;
            if refresh.changed {
                manifest_changed = true;
                if self.layout.certificate.is_some() {
                    // The certificate signs the old manifest: removing a member takes a
                    // rewrite.
                    return Ok(None);
                }
                let (Some(mcap), Some(mhdr)) = (m.capacity(), m.own_header_offset()) else {
                    return Ok(None);
                };
                if m.pax_size || round_up_block(refresh.bytes.len() as u64) != Some(mcap) {
                    return Ok(None);
                }
                write::patch_size_mtime(&mut mheader, refresh.bytes.len() as u64, Some(mtime))
                    .map_err(CommitError::from)?;
                let mut data = Vec::with_capacity(BLOCK + mcap as usize);
                data.extend_from_slice(&mheader);
                data.extend_from_slice(&refresh.bytes);
                data.resize(BLOCK + mcap as usize, 0);
                ops.push(self.write_op(mhdr, data)?);
            }
            manifest = Some((refresh.bytes, mheader));
        }
        Ok(Some(Plan {
            ops,
            descriptor: stored,
            descriptor_header: header,
            manifest,
            manifest_changed,
            mtime,
        }))
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
        let di = self.layout.descriptor;
        let d = &mut self.layout.entries[di];
        d.size = plan.descriptor.len() as u64;
        d.header = plan.descriptor_header;
        d.mtime = plan.mtime;
        self.descriptor = plan.descriptor;
        if let (Some((bytes, header)), Some(mi)) = (plan.manifest, self.layout.manifest) {
            if plan.manifest_changed {
                let m = &mut self.layout.entries[mi];
                m.size = bytes.len() as u64;
                m.header = header;
                m.mtime = plan.mtime;
            }
            self.manifest = Some(bytes);
        }
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

    fn rewrite(&mut self, new: &[u8], opts: &CommitOptions) -> Result<CommitReport> {
        self.check_rewritable()?;
        let slack = opts
            .slack_bytes
            .unwrap_or_else(|| padding::default_slack(new.len() as u64));
        let stored = padding::with_slack(new, slack);
        let refresh = self.refresh_manifest(&stored)?;
        let manifest_changed = refresh.as_ref().is_some_and(|r| r.changed);
        let drop_cert = if manifest_changed {
            self.layout.certificate
        } else {
            None
        };
        let mtime = opts.mtime_now();
        let shown = self.path.display().to_string();

        // Descriptor, manifest, then every other member in archive order.
        let l = &self.layout;
        let mut order = vec![l.descriptor];
        order.extend(l.manifest);
        order.extend(
            (0..l.entries.len())
                .filter(|&i| i != l.descriptor && Some(i) != l.manifest && Some(i) != drop_cert),
        );

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

        let mut written = 0u64;
        let mut expect: Vec<(String, u64)> = Vec::with_capacity(order.len());
        let manifest_bytes = refresh.map(|r| r.bytes);
        for (count, &i) in order.iter().enumerate() {
            let e = &self.layout.entries[i];
            let out = tmp.as_file_mut();
            if i == self.layout.descriptor || Some(i) == self.layout.manifest {
                let (bytes, member_mtime) = if i == self.layout.descriptor {
                    (&stored[..], mtime)
                } else if manifest_changed {
                    (manifest_bytes.as_deref().unwrap_or_default(), mtime)
                } else {
                    (manifest_bytes.as_deref().unwrap_or_default(), e.mtime)
                };
                let h = write::member_headers(
                    &e.header,
                    &MemberHeader {
                        name: &e.name,
                        size: bytes.len() as u64,
                        mtime: member_mtime,
                        typeflag: b'0',
                    },
                )
                .map_err(CommitError::from)?;
                out.write_all(&h)
                    .and_then(|_| out.write_all(bytes))
                    .and_then(|_| {
                        out.write_all(&[0u8; BLOCK][..write::padding_len(bytes.len() as u64)])
                    })
                    .map_err(io_err(format!("write {tmp_shown}")))?;
                written += (h.len() + bytes.len() + write::padding_len(bytes.len() as u64)) as u64;
                expect.push((e.name.clone(), bytes.len() as u64));
            } else if e.kind == MemberKind::Other {
                // Links, devices, sparse members: their header blocks and data verbatim.
                let end = e
                    .capacity()
                    .and_then(|c| e.data_offset.checked_add(c))
                    .ok_or_else(|| Error::overflow("member end"))?;
                written += copy_range(&self.file, e.header_offset, end - e.header_offset, out)
                    .with_context(|| format!("copy {} into {tmp_shown}", e.name))?;
            } else {
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
                written += h.len() as u64;
                written += copy_range(&self.file, e.data_offset, e.size, out)
                    .with_context(|| format!("copy {} into {tmp_shown}", e.name))?;
                let pad = write::padding_len(e.size);
                out.write_all(&[0u8; BLOCK][..pad])
                    .map_err(io_err(format!("write {tmp_shown}")))?;
                written += pad as u64;
                expect.push((e.name.clone(), e.size));
            }
            opts.fault(FaultPoint::RewriteMember { count: count + 1 });
        }
        tmp.as_file_mut()
            .write_all(&END_OF_ARCHIVE)
            .map_err(io_err(format!("write {tmp_shown}")))?;
        written += END_OF_ARCHIVE.len() as u64;
        tmp.as_file()
            .sync_all()
            .map_err(io_err(format!("fsync {tmp_shown}")))?;
        check_rewritten(tmp.as_file(), tmp.path(), &expect, &stored)?;
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

        let dropped = drop_cert.map(|i| self.layout.entries[i].name.clone());
        if dropped.is_some() {
            self.names.certificate = None;
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
            certificate_dropped: dropped,
            bytes_written: written,
            elapsed: Default::default(),
            replaced: true,
        })
    }
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
