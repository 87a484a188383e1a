//! Tar archives: an index of members built from headers only (docs/formats.md §1.2, §1.7, §6
//! rules 1-7).
//!
//! [`index`] makes one pass over the headers of an archive and seeks over member data: the
//! only payloads it reads are GNU long names (`././@LongLink`, typeflag `L`, capped at
//! [`Limits::max_long_name_bytes`]) and pax extended headers (typeflags `x` and `g`, capped at
//! [`Limits::max_pax_bytes`]). It understands POSIX ustar (with the `prefix` field), GNU tar
//! (long names, base-256 sizes, old sparse members), pax and old v7 headers.
//!
//! Header fields are decoded with the `tar` crate's [`tar::Header`], but the iteration, the
//! limits and the checks are ours. We do not use `tar::Archive`: its iterator reads GNU
//! long-name and pax payloads into memory without any size cap (a hostile header can claim a
//! multi-gigabyte long name), it does not let us choose what to do with hostile names, and it
//! does not check that a member's data lies inside the archive.
//!
//! Policies (documented here because callers rely on them):
//! - **Names** are normalised by [`names::normalize`]. A member whose name is refused (absolute,
//!   `..`, NUL or control characters, not UTF-8, empty, too long) is *skipped*, logged and
//!   recorded in [`TarIndex::skipped`]; the rest of the archive stays usable, so one hostile
//!   member never makes an appliance unreadable. Backslash is a literal character.
//! - **Duplicates**: as GNU tar extracts, the later member wins. The earlier one is dropped
//!   from [`TarIndex::members`], logged and recorded in [`TarIndex::duplicates`].
//! - **Non-regular members** (links, devices, FIFOs, GNU sparse, pax sparse, volume labels)
//!   are kept as [`MemberKind::Other`] for diagnostics and never served.
//! - The archive ends at the first all-zero block, or cleanly at end of file on a block
//!   boundary. Every member's data must lie inside the archive ([`TarError::Truncated`]).
//!
//! This module does not decompress (a gzip-compressed archive is refused by the package
//! layer before it gets here) and does not write archives.

pub mod names;
pub mod pax;
pub mod write;

use std::collections::HashMap;

use crate::error::Result;
use crate::io::{ReadAt, read_vec_at};

use self::names::NameProblem;
use self::pax::PaxOverrides;

/// Size of a tar block: every header and every data padding unit (POSIX ustar).
pub const BLOCK_BYTES: u64 = 512;

/// Default cap on members: far above any appliance (a handful of members) and low enough that
/// the index of a hostile archive stays small (docs/formats.md §6 rule 6).
pub const MAX_MEMBERS: usize = 100_000;

/// Default cap on one GNU long name payload: 64 KiB, sixteen times `PATH_MAX`.
pub const MAX_LONG_NAME_BYTES: u64 = 64 << 10;

/// Default cap on one pax header payload: 1 MiB (docs/formats.md §6 rule 6).
pub const MAX_PAX_BYTES: u64 = 1 << 20;

/// Offsets of the header fields we read by hand (POSIX ustar layout, docs/formats.md §1.2).
const MODE_FIELD: std::ops::Range<usize> = 100..108;
const SIZE_FIELD: std::ops::Range<usize> = 124..136;
const MTIME_FIELD: std::ops::Range<usize> = 136..148;
const CHKSUM_FIELD: std::ops::Range<usize> = 148..156;
const TYPEFLAG: usize = 156;
const MAGIC_FIELD: std::ops::Range<usize> = 257..263;
const VERSION_FIELD: std::ops::Range<usize> = 263..265;
const PREFIX_FIELD: std::ops::Range<usize> = 345..500;
/// GNU old-sparse header: the `isextended` flag byte (after four 24-byte sparse entries).
const GNU_ISEXTENDED: usize = 482;
/// GNU sparse extension block: its own `isextended` flag byte (after 21 sparse entries).
const GNU_EXT_ISEXTENDED: usize = 504;

/// A tar archive is malformed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TarError {
    /// Not a tar archive at all (the first header is not a valid tar header).
    #[error("not a tar archive ({reason})")]
    NotTar {
        /// Why.
        reason: String,
    },
    /// A header after the first one fails its checksum.
    #[error("tar header at offset {offset} has a bad checksum")]
    BadChecksum {
        /// Offset of the header.
        offset: u64,
    },
    /// A header after the first one has an unknown magic/version.
    #[error("tar header at offset {offset} has an unknown format magic")]
    BadMagic {
        /// Offset of the header.
        offset: u64,
    },
    /// A numeric header field cannot be decoded (not octal, negative base-256, too large).
    #[error("tar header at offset {offset}: bad {field} field")]
    BadField {
        /// Offset of the header.
        offset: u64,
        /// Which field.
        field: &'static str,
    },
    /// The archive ends inside a header block.
    #[error("tar archive ends inside the header block at offset {offset}")]
    TruncatedHeader {
        /// Offset of the partial block.
        offset: u64,
    },
    /// A member's data runs past the end of the archive (a truncated download, typically).
    #[error(
        "tar member {member:?} is truncated: its data ends at {data_end}, the archive has {archive_len} bytes"
    )]
    Truncated {
        /// The member's name as written (lossily decoded).
        member: String,
        /// Where the data should end.
        data_end: u64,
        /// Length of the archive.
        archive_len: u64,
    },
    /// A GNU long-name or pax header is not followed by the member it describes.
    #[error("tar extension header at offset {offset} is not followed by a member")]
    DanglingExtension {
        /// Offset of the extension header.
        offset: u64,
    },
    /// A GNU long-name or pax payload is larger than the cap.
    #[error("tar {what} header at offset {offset} is {size} bytes, above the limit of {limit}")]
    ExtensionTooLarge {
        /// `"GNU long name"` or `"pax"`.
        what: &'static str,
        /// Offset of the header.
        offset: u64,
        /// Size claimed.
        size: u64,
        /// The cap.
        limit: u64,
    },
    /// A pax payload is malformed.
    #[error("tar pax header at offset {offset} is malformed: {reason}")]
    BadPax {
        /// Offset of the header.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// More members (or headers) than the cap.
    #[error("tar archive has more than {limit} members")]
    TooManyMembers {
        /// The cap.
        limit: usize,
    },
}

/// Lets `?` turn a tar error into the one public [`Error`](crate::error::Error).
impl From<TarError> for crate::error::Error {
    fn from(e: TarError) -> Self {
        crate::error::Error::layer(e)
    }
}

/// What kind of entry a member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberKind {
    /// A regular file (typeflag '0', '\0' or '7').
    Regular,
    /// A directory.
    Directory,
    /// Anything else (links, devices, FIFOs, sparse files): listed for diagnostics, never
    /// served.
    Other,
}

/// One member of the archive, as its headers describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarMember {
    /// Normalised relative name (no leading "./", no "..", no NUL or control characters).
    pub name: String,
    /// Offset of the member's first header block (including GNU/pax extension headers).
    pub header_offset: u64,
    /// Offset of the member's own header block (after its extension headers; for old GNU
    /// sparse members, before their sparse-map extension blocks).
    pub own_header_offset: u64,
    /// Offset of the member's data in the archive.
    pub data_offset: u64,
    /// Size of the data in bytes (for [`MemberKind::Other`] members, the bytes stored).
    pub size: u64,
    /// Permission bits from the header (`0o7777` mask).
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
    /// Entry kind.
    pub kind: MemberKind,
    /// The header's typeflag byte, for diagnostics.
    pub typeflag: u8,
    /// pax headers sit between [`TarMember::header_offset`] and the member's own header: a
    /// per-member `x` header, or a global `g` header among the member's extension headers
    /// (a rewrite cannot carry them over for entries it does not copy as files).
    pub pax: bool,
    /// A pax `size` record applies to this member: the size field of its own header is not
    /// the truth, so an in-place patch of that field would be ignored by readers.
    pub pax_size: bool,
}

/// A member left out of the index because its name is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedMember {
    /// The name as written, lossily decoded (for messages only).
    pub raw_name: String,
    /// Offset of the member's first header.
    pub header_offset: u64,
    /// Why it was skipped.
    pub problem: NameProblem,
}

/// A member replaced by a later one with the same normalised name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateMember {
    /// The shared name.
    pub name: String,
    /// Header offset of the member that was dropped.
    pub dropped_header_offset: u64,
    /// Header offset of the member that won.
    pub kept_header_offset: u64,
}

/// The members of an archive, in archive order.
#[derive(Debug, Clone, Default)]
pub struct TarIndex {
    /// Members in archive order, duplicates already resolved (the later one is kept, at its
    /// own position).
    pub members: Vec<TarMember>,
    /// Members whose names were refused.
    pub skipped: Vec<SkippedMember>,
    /// Members dropped because a later member has the same name.
    pub duplicates: Vec<DuplicateMember>,
    /// Offset of the end-of-archive zero block, or the archive length when there is none.
    pub end_offset: u64,
}

impl TarIndex {
    /// The member with exactly this normalised name.
    pub fn find(&self, name: &str) -> Option<&TarMember> {
        self.members.iter().find(|m| m.name == name)
    }
}

/// Caps that keep indexing a hostile archive bounded.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most members (and, times four, most headers of any kind).
    pub max_members: usize,
    /// Largest GNU long-name payload read.
    pub max_long_name_bytes: u64,
    /// Largest pax payload read.
    pub max_pax_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_members: MAX_MEMBERS,
            max_long_name_bytes: MAX_LONG_NAME_BYTES,
            max_pax_bytes: MAX_PAX_BYTES,
        }
    }
}

/// Indexes the archive in `src`, reading headers only, with the default [`Limits`].
pub fn index(src: &dyn ReadAt) -> Result<TarIndex> {
    index_with(src, &Limits::default())
}

/// Header flavour, from the magic and version fields (docs/formats.md §6 rule 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavour {
    /// POSIX ustar / pax: `"ustar\0"` + `"00"`.
    Ustar,
    /// GNU tar: `"ustar "` + `" \0"`.
    Gnu,
    /// Old v7 tar: no magic at all.
    V7,
}

fn flavour(block: &[u8; 512]) -> Option<Flavour> {
    let magic = &block[MAGIC_FIELD];
    let version = &block[VERSION_FIELD];
    match (magic, version) {
        // POSIX says version "00"; VMware ovftool writes "ustar\0" with the GNU version " \0".
        // GNU tar decides on the magic alone, and so do we.
        (b"ustar\0", _) => Some(Flavour::Ustar),
        (b"ustar ", b" \0") => Some(Flavour::Gnu),
        _ if magic.iter().all(|&b| b == 0) => Some(Flavour::V7),
        _ => None,
    }
}

/// Whether the stored checksum matches the unsigned or (old writers) signed byte sum, with
/// the checksum field itself read as eight spaces.
fn checksum_ok(header: &tar::Header, block: &[u8; 512]) -> bool {
    let Ok(stored) = header.cksum() else {
        return false;
    };
    let mut unsigned: u32 = 0;
    let mut signed: i32 = 0;
    for (i, &b) in block.iter().enumerate() {
        let b = if CHKSUM_FIELD.contains(&i) { b' ' } else { b };
        // Cannot overflow: at most 512 * 255.
        unsigned += u32::from(b);
        signed += i32::from(b as i8);
    }
    stored == unsigned || i64::from(stored) == i64::from(signed)
}

/// The header's size field: octal, or GNU base-256 (first byte 0x80). Negative base-256
/// (0xFF) and values that do not fit `u64` are refused (docs/formats.md §6 rule 2).
fn header_size(header: &tar::Header, block: &[u8; 512], offset: u64) -> Result<u64> {
    let field = &block[SIZE_FIELD];
    let bad = || TarError::BadField {
        offset,
        field: "size",
    };
    if field[0] & 0x80 != 0 {
        // Base-256: 0x80 then a big-endian number; only the last 8 bytes may be non-zero.
        if field[0] != 0x80 || field[1..4].iter().any(|&b| b != 0) {
            return Err(bad().into());
        }
    }
    if is_blank(field) {
        return Ok(0);
    }
    Ok(header.entry_size().map_err(|_| bad())?)
}

/// Whether a numeric field is all NULs and spaces. Some writers leave fields they do not
/// care about blank; like Python's `tarfile` we read such a field as 0.
fn is_blank(field: &[u8]) -> bool {
    field.iter().all(|&b| b == 0 || b == b' ')
}

/// The name in the header itself: `prefix/name` for POSIX ustar headers with a prefix, else
/// the name field (in GNU headers the prefix area holds other fields).
fn header_name(header: &tar::Header, block: &[u8; 512], flavour: Flavour) -> Vec<u8> {
    let until_nul = |f: &[u8]| -> Vec<u8> { f.iter().copied().take_while(|&b| b != 0).collect() };
    let name = until_nul(&header.as_old().name);
    if flavour != Flavour::Ustar {
        return name;
    }
    let mut prefix = until_nul(&block[PREFIX_FIELD]);
    if prefix.is_empty() {
        return name;
    }
    prefix.push(b'/');
    prefix.extend_from_slice(&name);
    prefix
}

/// Offset of the next header after `size` data bytes starting at `data_offset`.
fn next_header(data_offset: u64, size: u64) -> Option<u64> {
    let padded = size.checked_add(BLOCK_BYTES - 1)? & !(BLOCK_BYTES - 1);
    data_offset.checked_add(padded)
}

/// Extension headers seen before the member they describe.
#[derive(Default)]
struct Pending {
    /// Offset of the first extension header.
    start: Option<u64>,
    long_name: Option<Vec<u8>>,
    pax: PaxOverrides,
    /// A pax header (`x`, or `g` after `start`) was among them.
    any_pax: bool,
}

/// Indexes the archive in `src`, reading headers only, under `limits`.
pub fn index_with(src: &dyn ReadAt, limits: &Limits) -> Result<TarIndex> {
    let len = src.len();
    let max_headers = limits.max_members.saturating_mul(4);
    let mut out = TarIndex::default();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    let mut dropped: Vec<bool> = Vec::new();
    let mut pending = Pending::default();
    let mut global_mtime: Option<u64> = None;
    let mut headers = 0usize;
    let mut off = 0u64;
    let mut block = [0u8; 512];
    let mut header = tar::Header::new_old();

    out.end_offset = loop {
        let remaining = len.saturating_sub(off);
        if remaining == 0 {
            // End of file on a block boundary without the zero blocks: accepted.
            break len;
        }
        if remaining < BLOCK_BYTES {
            if off == 0 {
                return Err(TarError::NotTar {
                    reason: "shorter than one tar header".into(),
                }
                .into());
            }
            return Err(TarError::TruncatedHeader { offset: off }.into());
        }
        src.read_exact_at(off, &mut block)?;
        if block.iter().all(|&b| b == 0) {
            // Also at offset 0: that is how GNU tar writes an empty archive.
            break off;
        }
        headers += 1;
        if headers > max_headers {
            return Err(TarError::TooManyMembers {
                limit: limits.max_members,
            }
            .into());
        }
        header.as_mut_bytes().copy_from_slice(&block);
        if !checksum_ok(&header, &block) {
            if off == 0 {
                return Err(TarError::NotTar {
                    reason: "the first header's checksum does not match".into(),
                }
                .into());
            }
            return Err(TarError::BadChecksum { offset: off }.into());
        }
        let Some(flavour) = flavour(&block) else {
            if off == 0 {
                return Err(TarError::NotTar {
                    reason: "unknown header magic".into(),
                }
                .into());
            }
            return Err(TarError::BadMagic { offset: off }.into());
        };
        let typeflag = block[TYPEFLAG];
        let stored_size = header_size(&header, &block, off)?;
        let mut data_offset = off.checked_add(BLOCK_BYTES).ok_or(TarError::BadField {
            offset: off,
            field: "size",
        })?;
        let next = |data_offset: u64, size: u64| {
            next_header(data_offset, size).ok_or(TarError::BadField {
                offset: off,
                field: "size",
            })
        };

        // Extension headers: remember what they say and go on to the next header.
        match typeflag {
            b'L' | b'x' | b'g' => {
                let (what, cap) = if typeflag == b'L' {
                    ("GNU long name", limits.max_long_name_bytes)
                } else {
                    ("pax", limits.max_pax_bytes)
                };
                if stored_size > cap {
                    return Err(TarError::ExtensionTooLarge {
                        what,
                        offset: off,
                        size: stored_size,
                        limit: cap,
                    }
                    .into());
                }
                let end = data_offset.checked_add(stored_size);
                if end.is_none_or(|end| end > len) {
                    return Err(TarError::Truncated {
                        member: format!("({what} header at offset {off})"),
                        data_end: end.unwrap_or(u64::MAX),
                        archive_len: len,
                    }
                    .into());
                }
                let payload =
                    read_vec_at(src, "tar extension header", data_offset, stored_size, cap)?;
                match typeflag {
                    b'L' => {
                        let end = payload
                            .iter()
                            .position(|&b| b == 0)
                            .unwrap_or(payload.len());
                        pending.long_name = Some(payload[..end].to_vec());
                        pending.start.get_or_insert(off);
                    }
                    b'x' => {
                        let p = pax::parse(&payload).map_err(|reason| TarError::BadPax {
                            offset: off,
                            reason,
                        })?;
                        pending.pax.merge(p);
                        pending.any_pax = true;
                        pending.start.get_or_insert(off);
                    }
                    _ => {
                        // Global pax records: only `mtime` is honoured. A global `path` or
                        // `size` would apply to every later member, which no OVA writer
                        // does and which would only produce duplicates; they are ignored.
                        let p = pax::parse(&payload).map_err(|reason| TarError::BadPax {
                            offset: off,
                            reason,
                        })?;
                        if p.mtime.is_some() {
                            global_mtime = p.mtime;
                        }
                        // A global header inside a member's run of extension headers sits
                        // between that member's first header and its own one.
                        pending.any_pax |= pending.start.is_some();
                    }
                }
                off = next(data_offset, stored_size)?;
                continue;
            }
            b'K' => {
                // GNU long link name: we never follow links, so its payload is not read.
                pending.start.get_or_insert(off);
                off = next(data_offset, stored_size)?;
                continue;
            }
            _ => {}
        }

        // A real member.
        let own_header_offset = off;
        let header_offset = pending.start.unwrap_or(off);
        let mut kind = match typeflag {
            b'0' | b'\0' | b'7' => MemberKind::Regular,
            b'5' => MemberKind::Directory,
            _ => MemberKind::Other,
        };
        if pending.pax.sparse {
            kind = MemberKind::Other;
        }
        // Old GNU sparse members: extension blocks of the sparse map follow the header and
        // come before the data; the size field counts only the stored data.
        if typeflag == b'S' && flavour == Flavour::Gnu && block[GNU_ISEXTENDED] != 0 {
            let mut ext = [0u8; 512];
            loop {
                if data_offset
                    .checked_add(BLOCK_BYTES)
                    .is_none_or(|end| end > len)
                {
                    return Err(TarError::TruncatedHeader {
                        offset: data_offset,
                    }
                    .into());
                }
                headers += 1;
                if headers > max_headers {
                    return Err(TarError::TooManyMembers {
                        limit: limits.max_members,
                    }
                    .into());
                }
                src.read_exact_at(data_offset, &mut ext)?;
                data_offset += BLOCK_BYTES;
                if ext[GNU_EXT_ISEXTENDED] == 0 {
                    break;
                }
            }
        }
        let pax_size = pending.pax.size.is_some();
        let size = match (kind, pending.pax.size) {
            // A pax size describes the file; for a sparse member the stored bytes are what
            // the header says.
            (MemberKind::Other, _) | (_, None) => stored_size,
            (_, Some(s)) => s,
        };
        let raw_name: Vec<u8> = match (pending.pax.path.take(), pending.long_name.take()) {
            (Some(p), _) => p,
            (None, Some(l)) => l,
            (None, None) => header_name(&header, &block, flavour),
        };
        let data_end = data_offset.checked_add(size);
        if data_end.is_none_or(|end| end > len) {
            return Err(TarError::Truncated {
                member: String::from_utf8_lossy(&raw_name).into_owned(),
                data_end: data_end.unwrap_or(u64::MAX),
                archive_len: len,
            }
            .into());
        }
        // Old v7 archives mark directories with a trailing slash on a regular entry.
        if flavour == Flavour::V7 && kind == MemberKind::Regular && raw_name.ends_with(b"/") {
            kind = MemberKind::Directory;
        }
        let mode = if is_blank(&block[MODE_FIELD]) {
            0
        } else {
            header.mode().map_err(|_| TarError::BadField {
                offset: off,
                field: "mode",
            })? & 0o7777
        };
        let any_pax = pending.any_pax;
        let mtime = match pending.pax.mtime.or(global_mtime) {
            Some(t) => t,
            None if is_blank(&block[MTIME_FIELD]) => 0,
            None => header.mtime().map_err(|_| TarError::BadField {
                offset: off,
                field: "mtime",
            })?,
        };
        pending = Pending::default();
        off = next(data_offset, size)?;

        let name = match names::normalize(&raw_name) {
            Ok(n) => n,
            Err(problem) => {
                let raw = String::from_utf8_lossy(&raw_name).into_owned();
                log::warn!("tar member {raw:?} at offset {header_offset} skipped: {problem}");
                out.skipped.push(SkippedMember {
                    raw_name: raw,
                    header_offset,
                    problem,
                });
                continue;
            }
        };
        if out.members.len() >= limits.max_members {
            return Err(TarError::TooManyMembers {
                limit: limits.max_members,
            }
            .into());
        }
        let member = TarMember {
            name: name.clone(),
            header_offset,
            own_header_offset,
            data_offset,
            size,
            mode,
            mtime,
            kind,
            typeflag,
            pax: any_pax,
            pax_size,
        };
        let idx = out.members.len();
        if let Some(prev) = by_name.insert(name.clone(), idx) {
            let dropped_header_offset = out.members.get(prev).map_or(0, |m| m.header_offset);
            log::warn!(
                "tar member {name:?} appears again at offset {header_offset}; \
                 the later one is used (as GNU tar extracts)"
            );
            out.duplicates.push(DuplicateMember {
                name,
                dropped_header_offset,
                kept_header_offset: header_offset,
            });
            if let Some(d) = dropped.get_mut(prev) {
                *d = true;
            }
        }
        out.members.push(member);
        dropped.push(false);
    };

    if pending.start.is_some() {
        return Err(TarError::DanglingExtension {
            offset: pending.start.unwrap_or(out.end_offset),
        }
        .into());
    }
    if !out.duplicates.is_empty() {
        let mut keep = dropped.iter().map(|d| !d);
        out.members.retain(|_| keep.next().unwrap_or(true));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
