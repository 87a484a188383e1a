//! The redo journal written beside a package before it is changed in place, and its one applier
//! (`apply`: a journal's operations, with the checks that bind it to the package), which commits
//! and recovery share, for archives and folders.
//!
//! A journal says what the package will look like, not how it looked: every operation is idempotent
//! (write these bytes at this offset; rename this temporary file over that name if it is still
//! there; remove that file if it is still there), so recovery can replay a journal any number of
//! times, from any point. It is written and made durable (file and folder fsynced) before the
//! package is touched, and deleted once the package is durable, so:
//! - no journal: the package is whole (old or new);
//! - a journal whose checksum is right: the commit was decided; replaying it completes it;
//! - a journal whose checksum is wrong or that is cut short: the commit stopped while the journal
//!   was being written, before the package was touched; it is deleted.
//!
//! A journal is also bound to the bytes it was written against, so that a journal cannot be aimed
//! at bytes it never saw (planted, or left over from another version of the file): every write
//! carries the SHA-256 of each 512-byte sector it overwrites, taken before the commit, and is
//! replayed only if every sector of its range now holds either those old bytes or the new ones (a
//! patch torn by a crash is a mix of the two, sector by sector: disks and the page cache never tear
//! a write inside a sector). Every rename carries the SHA-256 of the temporary file it moves; a
//! data file placed by a change set also carries the temporary file's identity (device, inode,
//! size, kept by the rename, so a placed file whose temporary is gone must be that very file), and
//! a data file removed carries the identity it had (a file of that name that is another one is not
//! removed). Nothing here is secret: the binding proves the journal was made from this package's
//! bytes, while who may write a journal is settled by the ownership rules of `super::trust`.
//!
//! Format, version 2, integers little-endian:
//! ```text
//! magic      8  "OVAFSJNL" version    4  2 kind       4  1 = archive (writes into the OVA), 2 =
//! folder (renames and removals) size       8  archive: the OVA's size (patches never change it);
//! folder: 0 dev        8  archive: st_dev of the OVA; folder: 0 ino        8  archive: st_ino of
//! the OVA; folder: 0 count      4  number of operations operations: tag 1 = write:  offset u64,
//! length u32 (both multiples of 512, length > 0), the bytes, then length/512 SHA-256 digests: each
//! sector as it was before tag 2 = rename: from-length u16, from, to-length u16, to (names in the
//! same folder), SHA-256 of the content of `from` tag 3 = remove: length u16, name tag 4 = place:
//! from-length u16, from, to-length u16, to, dev u64, ino u64, size u64 (of `from`), SHA-256 of the
//! content of `from` (a data member of a change set) tag 5 = unlink: length u16, name, dev u64, ino
//! u64, size u64 (of the file removed) checksum  32  SHA-256 of every byte before it
//! ```
//! The identity (size, dev, ino) makes sure a journal is only ever replayed onto the file it was
//! written for: an OVA replaced since (copied over, restored from a backup) is not patched. Names
//! are single path components (no `/`, not `.` or `..`, no NUL). Version 1 journals (no old-bytes
//! digests) are refused: they cannot be proven.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;

use nix::sys::stat::FileStat;
use sha2::{Digest, Sha256};

use super::trust::{Folder, Found, Rules};
use super::{FaultPoint, JOURNAL_SUFFIX, MAX_MANIFEST_BYTES, temp_prefix};
use crate::error::{Error, Result};
use crate::ovf::MAX_DESCRIPTOR_BYTES;

/// First bytes of a journal.
pub const MAGIC: &[u8; 8] = b"OVAFSJNL";

/// The format version written and read.
pub const VERSION: u32 = 2;

/// The unit a write's old bytes are hashed in: a disk never tears a write inside one.
pub const SECTOR: usize = 512;

/// A SHA-256 digest.
pub type Digest32 = [u8; 32];

/// Largest journal read back: two descriptors at their limit and a manifest, with room to
/// spare. A larger file is not one of ours.
pub const MAX_JOURNAL_BYTES: u64 = 128 << 20;

/// Length of the fixed header before the operations.
const HEADER_BYTES: usize = 8 + 4 + 4 + 8 + 8 + 8 + 4;

/// Length of the trailing checksum.
const CHECKSUM_BYTES: usize = 32;

/// Most operations in one journal: a settings commit writes a handful, a change set one or
/// two per member it touches ([`super::MAX_CHANGED_MEMBERS`] at most).
pub const MAX_OPS: u32 = 4096;

/// What the journal changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Writes into an OVA.
    Archive,
    /// Renames and removals in an unpacked package's folder.
    Folder,
}

/// The file an archive journal was written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Identity {
    /// Size in bytes.
    pub size: u64,
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
}

/// One idempotent operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Write `data` at `offset` in the archive.
    Write {
        /// Offset in the archive (a multiple of [`SECTOR`]).
        offset: u64,
        /// The bytes (a whole number of sectors).
        data: Vec<u8>,
        /// SHA-256 of each sector of the range before the commit ([`sector_digests`]).
        old: Vec<Digest32>,
    },
    /// Rename `from` over `to` if `from` still exists.
    Rename {
        /// Temporary file name.
        from: String,
        /// Final name.
        to: String,
        /// SHA-256 of the content of `from`.
        sha256: Digest32,
    },
    /// Remove `name` if it exists.
    Remove {
        /// File name.
        name: String,
    },
    /// Rename the temporary file `from` over the data file `to` (a member replaced or added
    /// by a change set) if `from` still exists. Bound to the temporary file's identity, which
    /// a rename keeps: when `from` is gone, `to` must be that file.
    Place {
        /// Temporary file name.
        from: String,
        /// The member's file name.
        to: String,
        /// The temporary file's identity and size.
        file: FileId,
        /// SHA-256 of the content of `from`.
        sha256: Digest32,
    },
    /// Remove the data file `name` (a member removed by a change set) if it is still the
    /// file the journal was written for.
    Unlink {
        /// The member's file name.
        name: String,
        /// Its identity and size when the journal was written.
        file: FileId,
    },
}

/// Which file a folder operation is bound to: device, inode and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileId {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
}

impl FileId {
    /// The identity in `st`.
    pub fn of(st: &FileStat) -> FileId {
        FileId {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
        }
    }
}

/// A decoded journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journal {
    /// Archive or folder.
    pub kind: Kind,
    /// The target (archive journals only; zero for folders).
    pub target: Identity,
    /// The operations, in order.
    pub ops: Vec<Op>,
}

/// Why a journal file was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Cut short while being written (bad checksum, too short): the commit never touched
    /// the package, and the journal can go.
    Torn(&'static str),
    /// Complete, but not one this ovafs can prove (another format, another version, fields
    /// out of range): it is left alone.
    Refused(&'static str),
}

impl Invalid {
    /// The reason, in words.
    pub fn reason(&self) -> &'static str {
        match self {
            Invalid::Torn(r) | Invalid::Refused(r) => r,
        }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

/// The SHA-256 of each [`SECTOR`] of `bytes` (a last partial sector is hashed as it is).
pub fn sector_digests(bytes: &[u8]) -> Vec<Digest32> {
    bytes
        .chunks(SECTOR)
        .map(|s| Sha256::digest(s).into())
        .collect()
}

/// The SHA-256 of `bytes`.
pub fn digest(bytes: &[u8]) -> Digest32 {
    Sha256::digest(bytes).into()
}

/// Whether `name` is a single path component we may rename or remove.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0')
        && name.len() <= usize::from(u16::MAX)
}

fn put_file_id(out: &mut Vec<u8>, file: &FileId) {
    out.extend_from_slice(&file.dev.to_le_bytes());
    out.extend_from_slice(&file.ino.to_le_bytes());
    out.extend_from_slice(&file.size.to_le_bytes());
}

fn put_name(out: &mut Vec<u8>, name: &str) {
    // Names were checked by `is_plain_name`: at most u16::MAX bytes.
    let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&name.as_bytes()[..usize::from(len)]);
}

impl Journal {
    /// The journal's bytes, checksum included. Writes must be below 4 GiB each (a commit
    /// writes a descriptor and a manifest, both capped far lower).
    pub fn encode(&self) -> Vec<u8> {
        let payload: usize = self
            .ops
            .iter()
            .map(|op| match op {
                Op::Write { data, old, .. } => 13 + data.len() + 32 * old.len(),
                Op::Rename { from, to, .. } => 37 + from.len() + to.len(),
                Op::Remove { name } => 3 + name.len(),
                Op::Place { from, to, .. } => 61 + from.len() + to.len(),
                Op::Unlink { name, .. } => 27 + name.len(),
            })
            .sum();
        let mut out = Vec::with_capacity(HEADER_BYTES + payload + CHECKSUM_BYTES);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        let kind: u32 = match self.kind {
            Kind::Archive => 1,
            Kind::Folder => 2,
        };
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&self.target.size.to_le_bytes());
        out.extend_from_slice(&self.target.dev.to_le_bytes());
        out.extend_from_slice(&self.target.ino.to_le_bytes());
        let count = u32::try_from(self.ops.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&count.to_le_bytes());
        for op in &self.ops {
            match op {
                Op::Write { offset, data, old } => {
                    out.push(1);
                    out.extend_from_slice(&offset.to_le_bytes());
                    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
                    out.extend_from_slice(&len.to_le_bytes());
                    out.extend_from_slice(&data[..len as usize]);
                    for d in old {
                        out.extend_from_slice(d);
                    }
                }
                Op::Rename { from, to, sha256 } => {
                    out.push(2);
                    put_name(&mut out, from);
                    put_name(&mut out, to);
                    out.extend_from_slice(sha256);
                }
                Op::Remove { name } => {
                    out.push(3);
                    put_name(&mut out, name);
                }
                Op::Place {
                    from,
                    to,
                    file,
                    sha256,
                } => {
                    out.push(4);
                    put_name(&mut out, from);
                    put_name(&mut out, to);
                    put_file_id(&mut out, file);
                    out.extend_from_slice(sha256);
                }
                Op::Unlink { name, file } => {
                    out.push(5);
                    put_name(&mut out, name);
                    put_file_id(&mut out, file);
                }
            }
        }
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    }

    /// Decodes and checks a journal: checksum first, then every field, and every byte must
    /// be consumed.
    pub fn decode(bytes: &[u8]) -> Result<Journal, Invalid> {
        if bytes.len() < MAGIC.len() && MAGIC.starts_with(bytes) {
            return Err(Invalid::Torn("shorter than a journal header"));
        }
        if !bytes.starts_with(MAGIC) {
            return Err(Invalid::Refused("not an ovafs journal (bad magic)"));
        }
        if bytes.len() < HEADER_BYTES + CHECKSUM_BYTES {
            return Err(Invalid::Torn("shorter than a journal header"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_BYTES);
        if Sha256::digest(body).as_slice() != sum {
            return Err(Invalid::Torn(
                "checksum mismatch (the journal was cut short while being written)",
            ));
        }
        Journal::decode_body(body).map_err(Invalid::Refused)
    }

    /// The fields of a journal whose checksum is right.
    fn decode_body(body: &[u8]) -> Result<Journal, &'static str> {
        let mut r = Reader { buf: body, pos: 8 };
        match r.u32()? {
            VERSION => {}
            1 => {
                return Err(
                    "a version 1 journal (from an older ovafs): it does not record the bytes it overwrites, so it cannot be proven",
                );
            }
            _ => return Err("unknown journal version"),
        }
        let kind = match r.u32()? {
            1 => Kind::Archive,
            2 => Kind::Folder,
            _ => return Err("unknown journal kind"),
        };
        let target = Identity {
            size: r.u64()?,
            dev: r.u64()?,
            ino: r.u64()?,
        };
        let count = r.u32()?;
        if count > MAX_OPS {
            return Err("too many operations");
        }
        let mut ops = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let op = match r.u8()? {
                1 => r.write_op(target.size)?,
                2 => Op::Rename {
                    from: r.name()?,
                    to: r.name()?,
                    sha256: r.digest()?,
                },
                3 => Op::Remove { name: r.name()? },
                4 => Op::Place {
                    from: r.name()?,
                    to: r.name()?,
                    file: r.file_id()?,
                    sha256: r.digest()?,
                },
                5 => Op::Unlink {
                    name: r.name()?,
                    file: r.file_id()?,
                },
                _ => return Err("unknown operation"),
            };
            match (&op, kind) {
                (Op::Write { .. }, Kind::Archive) => {}
                (
                    Op::Rename { .. } | Op::Remove { .. } | Op::Place { .. } | Op::Unlink { .. },
                    Kind::Folder,
                ) => {}
                _ => return Err("operation does not belong to this kind of journal"),
            }
            ops.push(op);
        }
        if r.pos != body.len() {
            return Err("trailing bytes after the operations");
        }
        Ok(Journal { kind, target, ops })
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A write: sector-aligned, inside the archive, with one old digest per sector.
    fn write_op(&mut self, archive_size: u64) -> Result<Op, &'static str> {
        let offset = self.u64()?;
        let len = self.u32()? as usize;
        if len == 0 || !len.is_multiple_of(SECTOR) || !offset.is_multiple_of(SECTOR as u64) {
            return Err("a write that is not whole sectors");
        }
        if offset
            .checked_add(len as u64)
            .is_none_or(|e| e > archive_size)
        {
            return Err("write past the end of the archive");
        }
        let data = self.take(len)?.to_vec();
        let sectors = len / SECTOR;
        let mut old = Vec::with_capacity(sectors.min(self.buf.len() / 32));
        for _ in 0..sectors {
            old.push(self.digest()?);
        }
        Ok(Op::Write { offset, data, old })
    }
    fn file_id(&mut self) -> Result<FileId, &'static str> {
        Ok(FileId {
            dev: self.u64()?,
            ino: self.u64()?,
            size: self.u64()?,
        })
    }
    fn digest(&mut self) -> Result<Digest32, &'static str> {
        let mut a = [0u8; 32];
        a.copy_from_slice(self.take(32)?);
        Ok(a)
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let end = self.pos.checked_add(n).ok_or("length overflow")?;
        let s = self.buf.get(self.pos..end).ok_or("cut short")?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, &'static str> {
        let mut a = [0u8; 2];
        a.copy_from_slice(self.take(2)?);
        Ok(u16::from_le_bytes(a))
    }
    fn u32(&mut self) -> Result<u32, &'static str> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, &'static str> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn name(&mut self) -> Result<String, &'static str> {
        let len = usize::from(self.u16()?);
        let s = std::str::from_utf8(self.take(len)?).map_err(|_| "name is not UTF-8")?;
        if !is_plain_name(s) {
            return Err("name is not a plain file name");
        }
        Ok(s.to_string())
    }
}

// ---- the one applier, for commits and for recovery, and the checks that bind a journal ----

/// Where a journal's operations land.
pub(super) enum Target<'a> {
    /// The archive, open for writing (archive journals).
    Archive(&'a File),
    /// The package folder (folder journals).
    Folder(&'a Folder),
}

/// Carries out a journal's operations and makes them durable; returns the bytes written
/// into the archive. Every operation is idempotent, so a commit and a recovery after a crash
/// at any point run the same code. Archive writes are made in two halves split at a sector
/// boundary, as a crash tears a write at worst (tests stop there through `fault`). Folder
/// operations: each rename only if its temporary file is still there, each removal only if
/// the file is still there (and, for a member's file, still the file the journal names).
pub(super) fn apply(j: &Journal, target: Target<'_>, fault: &dyn Fn(FaultPoint)) -> Result<u64> {
    match target {
        Target::Archive(file) => apply_writes(file, &j.ops, fault),
        Target::Folder(folder) => apply_folder_ops(folder, &j.ops, fault).map(|()| 0),
    }
}

fn apply_writes(file: &File, ops: &[Op], fault: &dyn Fn(FaultPoint)) -> Result<u64> {
    let io = |e| Error::io("write the archive", e);
    let mut written = 0u64;
    for (i, op) in ops.iter().enumerate() {
        if let Op::Write { offset, data, .. } = op {
            let half = data.len() / 2 / SECTOR * SECTOR;
            file.write_all_at(&data[..half], *offset).map_err(io)?;
            fault(FaultPoint::Applied { op: i, half: 0 });
            file.write_all_at(&data[half..], offset.saturating_add(half as u64))
                .map_err(io)?;
            fault(FaultPoint::Applied { op: i, half: 1 });
            written = written.saturating_add(data.len() as u64);
        }
    }
    file.sync_data()
        .map_err(|e| Error::io("fsync the archive", e))?;
    Ok(written)
}

fn apply_folder_ops(folder: &Folder, ops: &[Op], fault: &dyn Fn(FaultPoint)) -> Result<()> {
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Rename { from, to, .. } | Op::Place { from, to, .. } => {
                if folder.lstat(from)?.is_some() {
                    folder.rename(from, to)?;
                }
            }
            Op::Remove { name } => {
                if folder.lstat(name)?.is_some() {
                    folder.unlink(name)?;
                }
            }
            Op::Unlink { name, file } => {
                if folder
                    .lstat(name)?
                    .is_some_and(|st| FileId::of(&st) == *file)
                {
                    folder.unlink(name)?;
                }
            }
            Op::Write { .. } => {}
        }
        fault(FaultPoint::Applied { op: i, half: 1 });
    }
    folder.sync()
}

/// Why the archive journal `j` does not belong to `target` as it is now: the first sector of
/// a write that holds neither the bytes the journal recorded as there before nor the bytes it
/// writes, in words; `None` when every sector is one or the other.
pub(super) fn unbound_archive(target: &File, j: &Journal) -> Result<Option<String>> {
    for op in &j.ops {
        if let Op::Write { offset, data, old } = op
            && let Some(reason) = unbound_write(target, *offset, data, old)?
        {
            return Ok(Some(reason));
        }
    }
    Ok(None)
}

fn unbound_write(
    target: &File,
    offset: u64,
    data: &[u8],
    old: &[Digest32],
) -> Result<Option<String>> {
    let mut now = vec![0u8; data.len()];
    if let Err(e) = target.read_exact_at(&mut now, offset) {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            return Ok(Some(format!(
                "its write at {offset} is past the archive's end"
            )));
        }
        return Err(Error::io("read the archive", e));
    }
    let sectors = now.chunks(SECTOR).zip(data.chunks(SECTOR));
    for (i, ((cur, new), was)) in sectors.zip(old).enumerate() {
        if cur != new && digest(cur) != *was {
            let at = offset.saturating_add((i * SECTOR) as u64);
            return Ok(Some(format!(
                "the archive's sector at byte {at} holds neither the bytes the journal was written against nor the ones it writes (it was not made from this archive)"
            )));
        }
    }
    Ok(None)
}

/// Why the folder journal `j` does not belong to the package whose descriptor is `ovf` (in
/// `folder`, owned as `package` says): an operation on a file that is not the package's, a
/// temporary file that is not ovafs's or does not hold the bytes (or is not the file) it was
/// written for, a member's file that is not the one it was written for; `None` when bound.
pub(super) fn unbound_folder(
    folder: &Folder,
    ovf: &str,
    package: &FileStat,
    j: &Journal,
) -> Result<Option<String>> {
    if let Some(op) = j.ops.iter().find(|op| !folder_op_allowed(ovf, op)) {
        return Ok(Some(format!(
            "it names files that are not this package's ({op:?})"
        )));
    }
    let rules = Rules::temporary(package);
    for op in &j.ops {
        let reason = match op {
            Op::Rename { from, sha256, .. } => unbound_rename(folder, &rules, from, sha256)?,
            Op::Place {
                from,
                to,
                file,
                sha256,
            } => unbound_place(folder, &rules, from, to, file, sha256)?,
            Op::Unlink { name, file } => match folder.lstat(name)? {
                Some(st) if FileId::of(&st) != *file => Some(format!(
                    "the file it removes, {}, is not the one it was written for",
                    folder.shown(name)
                )),
                _ => None,
            },
            Op::Remove { .. } | Op::Write { .. } => None,
        };
        if reason.is_some() {
            return Ok(reason);
        }
    }
    Ok(None)
}

/// A rename of a small temporary file (descriptor, manifest, certificate), bound to its bytes.
fn unbound_rename(
    folder: &Folder,
    rules: &Rules,
    from: &str,
    sha256: &Digest32,
) -> Result<Option<String>> {
    match folder.open_trusted(from, rules)? {
        Found::Missing => Ok(None), // already renamed
        Found::Untrusted(rule) => Ok(Some(not_ours(folder, from, &rule))),
        Found::Trusted(t) => {
            let cap = MAX_DESCRIPTOR_BYTES.max(MAX_MANIFEST_BYTES);
            let got = digest_file(&t.file, cap, &folder.shown(from))?;
            Ok((got.as_ref() != Some(sha256)).then(|| holds_other_bytes(folder, from)))
        }
    }
}

/// A rename of a member's temporary file, bound to its identity and bytes; once renamed, the
/// member's name must hold that very file.
fn unbound_place(
    folder: &Folder,
    rules: &Rules,
    from: &str,
    to: &str,
    file: &FileId,
    sha256: &Digest32,
) -> Result<Option<String>> {
    match folder.open_trusted(from, rules)? {
        Found::Missing => match folder.lstat(to)? {
            Some(st) if FileId::of(&st) == *file => Ok(None), // already renamed
            _ => Ok(Some(format!(
                "neither the file it renames, {}, nor the file it became is there",
                folder.shown(from)
            ))),
        },
        Found::Untrusted(rule) => Ok(Some(not_ours(folder, from, &rule))),
        Found::Trusted(t) => {
            if FileId::of(&t.stat) != *file {
                return Ok(Some(format!(
                    "the file it renames, {}, is not the one it was written for",
                    folder.shown(from)
                )));
            }
            let got = digest_file(&t.file, u64::MAX, &folder.shown(from))?;
            Ok((got.as_ref() != Some(sha256)).then(|| holds_other_bytes(folder, from)))
        }
    }
}

fn not_ours(folder: &Folder, from: &str, rule: &str) -> String {
    format!(
        "the file it renames, {}, is not ovafs's: {rule}",
        folder.shown(from)
    )
}

fn holds_other_bytes(folder: &Folder, from: &str) -> String {
    format!(
        "the file it renames, {}, does not hold the bytes it was written for",
        folder.shown(from)
    )
}

/// The SHA-256 of a whole file, read in chunks; `None` when it is longer than `cap`.
fn digest_file(file: &File, cap: u64, shown: &str) -> Result<Option<Digest32>> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    let mut reader = file;
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| Error::io(format!("read {shown}"), e))?;
        if n == 0 {
            return Ok(Some(hasher.finalize().into()));
        }
        total = total.saturating_add(n as u64);
        if total > cap {
            return Ok(None);
        }
        hasher.update(&buf[..n]);
    }
}

/// Whether a folder journal operation stays within the package whose descriptor is `ovf`:
/// renames come from its temporary files and land on its `.ovf`, `.mf` or `.cert`; removals
/// take its `.cert`; a member's file placed or unlinked is a plain name that is none of
/// those, nor a journal or temporary name (names compared case-insensitively, as the package
/// layer finds them).
fn folder_op_allowed(ovf: &str, op: &Op) -> bool {
    let base = ovf.get(..ovf.len().saturating_sub(4)).unwrap_or(ovf);
    let is = |name: &str, ext: &str| name.eq_ignore_ascii_case(&format!("{base}.{ext}"));
    let temp = |name: &str| name.starts_with(&temp_prefix(ovf));
    let member = |name: &str| {
        !name.eq_ignore_ascii_case(ovf)
            && !is(name, "mf")
            && !is(name, "cert")
            && !temp(name)
            && !name.ends_with(JOURNAL_SUFFIX)
    };
    match op {
        Op::Rename { from, to, .. } => temp(from) && (to == ovf || is(to, "mf") || is(to, "cert")),
        Op::Remove { name } => is(name, "cert"),
        Op::Place { from, to, .. } => temp(from) && member(to),
        Op::Unlink { name, .. } => member(name),
        Op::Write { .. } => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn archive_journal() -> Journal {
        Journal {
            kind: Kind::Archive,
            target: Identity {
                size: 10_240,
                dev: 2049,
                ino: 77,
            },
            ops: vec![
                Op::Write {
                    offset: 0,
                    data: vec![1; 1024],
                    old: sector_digests(&[0; 1024]),
                },
                Op::Write {
                    offset: 2048,
                    data: vec![b'S'; 512],
                    old: sector_digests(&[7; 512]),
                },
            ],
        }
    }

    fn folder_journal() -> Journal {
        Journal {
            kind: Kind::Folder,
            target: Identity::default(),
            ops: vec![
                Op::Rename {
                    from: ".a.ovf.ovafs-tmp-1".into(),
                    to: "a.ovf".into(),
                    sha256: digest(b"new descriptor"),
                },
                Op::Remove {
                    name: "a.cert".into(),
                },
            ],
        }
    }

    #[test]
    fn round_trip() {
        for j in [archive_journal(), folder_journal()] {
            assert_eq!(Journal::decode(&j.encode()).unwrap(), j);
        }
    }

    #[test]
    fn every_truncation_is_torn_and_every_flipped_byte_is_refused() {
        for j in [archive_journal(), folder_journal()] {
            let bytes = j.encode();
            for n in 0..bytes.len() {
                assert!(
                    matches!(Journal::decode(&bytes[..n]), Err(Invalid::Torn(_))),
                    "cut at {n}"
                );
            }
            for i in 0..bytes.len() {
                let mut b = bytes.clone();
                b[i] ^= 0x20;
                assert!(Journal::decode(&b).is_err(), "flip at {i}");
            }
        }
    }

    /// Encodes a journal with a valid checksum over hand-made bytes.
    fn sealed(mut body: Vec<u8>) -> Vec<u8> {
        let sum = Sha256::digest(&body);
        body.extend_from_slice(&sum);
        body
    }

    fn header(version: u32, kind: u32, size: u64, count: u32) -> Vec<u8> {
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&version.to_le_bytes());
        v.extend_from_slice(&kind.to_le_bytes());
        v.extend_from_slice(&size.to_le_bytes());
        v.extend_from_slice(&[0; 16]);
        v.extend_from_slice(&count.to_le_bytes());
        v
    }

    fn write_op(offset: u64, len: u32, data: &[u8], digests: usize) -> Vec<u8> {
        let mut v = vec![1];
        v.extend_from_slice(&offset.to_le_bytes());
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(data);
        v.extend(std::iter::repeat_n(0u8, 32 * digests));
        v
    }

    fn refused(bytes: &[u8]) -> &'static str {
        match Journal::decode(bytes) {
            Err(Invalid::Refused(r)) => r,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn well_sealed_but_hostile_journals_are_refused_not_torn() {
        // A version 1 journal, sealed right: cannot be proven.
        let mut v = header(1, 1, 10_240, 1);
        v.push(1);
        v.extend_from_slice(&0u64.to_le_bytes());
        v.extend_from_slice(&4u32.to_le_bytes());
        v.extend_from_slice(b"XXXX");
        assert!(refused(&sealed(v)).contains("version 1"));
        // Not ours at all.
        assert!(
            refused(b"#!/bin/sh\nrm -rf /\n........................................")
                .contains("magic")
        );
        // A write past the end of the target.
        let mut v = header(2, 1, 1024, 1);
        v.extend(write_op(1024, 512, &[0; 512], 1));
        assert!(refused(&sealed(v)).contains("past the end"));
        // A write that is not whole sectors, or not sector-aligned.
        for (off, len) in [(0u64, 4u32), (100, 512)] {
            let mut v = header(2, 1, 10_240, 1);
            v.extend(write_op(off, len, &vec![0; len as usize], 1));
            assert!(refused(&sealed(v)).contains("whole sectors"), "{off} {len}");
        }
        // Old-bytes digests missing for the last sector.
        let mut v = header(2, 1, 10_240, 1);
        v.extend(write_op(0, 1024, &[0; 1024], 1));
        assert!(refused(&sealed(v)).contains("cut short"));
        // A rename out of the folder.
        let mut v = header(2, 2, 0, 1);
        v.push(2);
        for name in [&b"x"[..], b"../etc/passwd"] {
            v.extend_from_slice(&(name.len() as u16).to_le_bytes());
            v.extend_from_slice(name);
        }
        v.extend_from_slice(&[0; 32]);
        assert!(refused(&sealed(v)).contains("plain file name"));
        // A write in a folder journal.
        let mut v = header(2, 2, 10_240, 1);
        v.extend(write_op(0, 512, &[0; 512], 1));
        assert!(refused(&sealed(v)).contains("does not belong"));
        // A huge operation count.
        assert!(refused(&sealed(header(2, 1, 0, u32::MAX))).contains("too many"));
        // A length that runs past the end.
        let mut v = header(2, 1, u64::MAX, 1);
        v.push(1);
        v.extend_from_slice(&0u64.to_le_bytes());
        v.extend_from_slice(&(u32::MAX - 511).to_le_bytes());
        assert!(refused(&sealed(v)).contains("cut short"));
    }

    #[test]
    fn place_and_unlink_round_trip_and_belong_to_folder_journals() {
        let file = FileId {
            dev: 2049,
            ino: 12,
            size: 1 << 33,
        };
        let j = Journal {
            kind: Kind::Folder,
            target: Identity::default(),
            ops: vec![
                Op::Place {
                    from: ".a.ovf.ovafs-tmp-2".into(),
                    to: "disk1.vmdk".into(),
                    file,
                    sha256: digest(b"disk"),
                },
                Op::Unlink {
                    name: "disk2.vmdk".into(),
                    file,
                },
            ],
        };
        let bytes = j.encode();
        assert_eq!(Journal::decode(&bytes).unwrap(), j);
        for n in 0..bytes.len() {
            assert!(matches!(
                Journal::decode(&bytes[..n]),
                Err(Invalid::Torn(_))
            ));
        }
        // In an archive journal they are refused.
        let mut v = header(2, 1, 10_240, 1);
        v.push(5);
        v.extend_from_slice(&1u16.to_le_bytes());
        v.push(b'x');
        v.extend_from_slice(&[0; 24]);
        assert!(refused(&sealed(v)).contains("does not belong"));
    }

    #[test]
    fn folder_ops_stay_within_the_package() {
        let place = |from: &str, to: &str| Op::Place {
            from: from.into(),
            to: to.into(),
            file: FileId::default(),
            sha256: [0; 32],
        };
        let unlink = |name: &str| Op::Unlink {
            name: name.into(),
            file: FileId::default(),
        };
        let tmp = ".a.ovf.ovafs-tmp-1";
        assert!(folder_op_allowed("a.ovf", &place(tmp, "disk.vmdk")));
        assert!(folder_op_allowed("a.ovf", &unlink("disk.vmdk")));
        for to in [
            "a.ovf",
            "A.MF",
            "a.cert",
            ".a.ovf.ovafs-tmp-2",
            "a.ovf.ovafs-journal",
        ] {
            assert!(!folder_op_allowed("a.ovf", &place(tmp, to)), "{to}");
            assert!(!folder_op_allowed("a.ovf", &unlink(to)), "{to}");
        }
        assert!(!folder_op_allowed("a.ovf", &place("disk.tmp", "disk.vmdk")));
        assert!(!folder_op_allowed(
            "a.ovf",
            &Op::Remove {
                name: "disk.vmdk".into()
            }
        ));
    }
}
