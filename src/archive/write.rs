//! Writing tar headers: POSIX ustar, with GNU extensions only where a member needs them
//! (docs/formats.md §1.2, §6 rule 26).
//!
//! What this module builds:
//! - a member's header from a *template* (the member's original header block), keeping its
//!   mode, uid, gid, uname, gname, device numbers and link name byte for byte, with a new name,
//!   size, mtime and checksum ([`member_headers`]);
//! - a GNU long-name entry (`././@LongLink`, typeflag `L`) before a header whose name fits
//!   neither the 100-byte name field nor the ustar `prefix` + `/` + `name` split;
//! - a size field in octal, or in GNU base-256 for sizes above 8 GiB - 1 (in a GNU header);
//! - the header checksum (unsigned byte sum with the checksum field read as spaces, stored as
//!   six octal digits, NUL, space, as GNU tar writes it).
//!
//! A header is POSIX ustar (`"ustar\0"`, `"00"`) unless the member needs a GNU feature (a size
//! of 8 GiB or more, a name that does not fit the ustar fields, a base-256 numeric field kept
//! from the template); then the whole header uses the GNU magic (`"ustar "`, `" \0"`), whose
//! prefix area is not a name prefix. pax headers are never written: vSphere refuses them.
//!
//! Not here: reading archives ([`crate::archive::index`]), file I/O, deciding member order.

use std::ops::Range;

/// Size of a tar block, as a `usize` for buffers.
pub const BLOCK: usize = 512;

/// Largest size an 11-digit octal size field holds: 8 GiB - 1 (docs/formats.md §1.2).
pub const MAX_OCTAL_SIZE: u64 = 0o777_7777_7777;

/// Longest name the `name` field holds (exactly 100 bytes is stored without a NUL).
pub const NAME_FIELD_BYTES: usize = 100;

/// Longest `prefix` of a POSIX ustar split name.
pub const PREFIX_FIELD_BYTES: usize = 155;

/// The end-of-archive marker: two zero blocks.
pub const END_OF_ARCHIVE: [u8; 2 * BLOCK] = [0; 2 * BLOCK];

/// Longest name we write at all (GNU long names included): `PATH_MAX`.
pub const MAX_NAME_BYTES: usize = 4096;

// Header field offsets (POSIX ustar layout, docs/formats.md §1.2).
const NAME: Range<usize> = 0..100;
const MODE: Range<usize> = 100..108;
const UID: Range<usize> = 108..116;
const GID: Range<usize> = 116..124;
const SIZE: Range<usize> = 124..136;
const MTIME: Range<usize> = 136..148;
const CHKSUM: Range<usize> = 148..156;
const TYPEFLAG: usize = 156;
const LINKNAME: Range<usize> = 157..257;
const MAGIC: Range<usize> = 257..263;
const VERSION: Range<usize> = 263..265;
const UNAME: Range<usize> = 265..297;
const GNAME: Range<usize> = 297..329;
const DEVMAJOR: Range<usize> = 329..337;
const DEVMINOR: Range<usize> = 337..345;
const PREFIX: Range<usize> = 345..500;

/// Name of the pseudo-member that carries a GNU long name.
const GNU_LONGLINK: &[u8] = b"././@LongLink";

/// A header cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// A number does not fit its field (octal, nor base-256 where allowed).
    #[error("tar {field} value {value} does not fit its header field")]
    FieldTooLarge {
        /// Which field.
        field: &'static str,
        /// The value.
        value: u64,
    },
    /// A name that is empty, has a NUL byte or is longer than [`MAX_NAME_BYTES`].
    #[error("tar member name {name:?} cannot be written")]
    BadName {
        /// The name, lossily decoded.
        name: String,
    },
}

/// Rounds `n` up to a whole number of blocks; `None` on overflow.
pub fn round_up_block(n: u64) -> Option<u64> {
    Some(n.checked_add(511)? & !511)
}

/// Zero bytes that follow `n` data bytes to fill their last block.
pub fn padding_len(n: u64) -> usize {
    // OK to cast: the result is below 512.
    ((BLOCK as u64 - n % BLOCK as u64) % BLOCK as u64) as usize
}

/// The header checksum: the unsigned sum of the 512 bytes with the checksum field read as
/// eight spaces.
pub fn checksum(block: &[u8; BLOCK]) -> u32 {
    block
        .iter()
        .enumerate()
        // Cannot overflow: at most 512 * 255.
        .map(|(i, &b)| u32::from(if CHKSUM.contains(&i) { b' ' } else { b }))
        .sum()
}

/// Recomputes and stores the checksum: six octal digits, NUL, space (GNU tar's layout).
pub fn set_checksum(block: &mut [u8; BLOCK]) {
    let sum = checksum(block);
    let field = &mut block[CHKSUM];
    // At most 512 * 255 = 0o376_000: six octal digits always suffice.
    let digits = format!("{sum:06o}");
    field[..6].copy_from_slice(&digits.as_bytes()[digits.len() - 6..]);
    field[6] = 0;
    field[7] = b' ';
}

/// Writes `value` as zero-padded octal filling the field but its last byte, which is NUL.
fn put_octal(field: &mut [u8], value: u64) -> bool {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    if s.len() > digits {
        return false;
    }
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
    true
}

/// Writes `value` in GNU base-256: 0x80, then the value big-endian in the remaining bytes.
fn put_base256(field: &mut [u8], value: u64) {
    field.fill(0);
    field[0] = 0x80;
    let be = value.to_be_bytes();
    let n = field.len();
    field[n - 8..].copy_from_slice(&be);
}

/// Whether the header uses the GNU magic (`"ustar "` + `" \0"`).
pub fn is_gnu(block: &[u8; BLOCK]) -> bool {
    &block[MAGIC] == b"ustar " && &block[VERSION] == b" \0"
}

/// Stores `size` in the size field: octal when it fits, else base-256 when `gnu` (the header
/// uses the GNU magic), else fails.
pub fn set_size(block: &mut [u8; BLOCK], size: u64, gnu: bool) -> Result<(), WriteError> {
    set_number(block, SIZE, "size", size, gnu)
}

/// Stores `mtime` in the mtime field: octal when it fits, else base-256 when `gnu`.
pub fn set_mtime(block: &mut [u8; BLOCK], mtime: u64, gnu: bool) -> Result<(), WriteError> {
    set_number(block, MTIME, "mtime", mtime, gnu)
}

/// Stores `value` in the numeric field at `range` (called `name` in errors): octal when it
/// fits, else GNU base-256 when `gnu`, else fails.
fn set_number(
    block: &mut [u8; BLOCK],
    range: Range<usize>,
    name: &'static str,
    value: u64,
    gnu: bool,
) -> Result<(), WriteError> {
    if put_octal(&mut block[range.clone()], value) {
        return Ok(());
    }
    if !gnu {
        return Err(WriteError::FieldTooLarge { field: name, value });
    }
    put_base256(&mut block[range], value);
    Ok(())
}

/// Updates the size and mtime of an existing header in place and recomputes its checksum:
/// the fast path's header patch. Every other byte stays as it was. Base-256 is used only in a
/// GNU header.
pub fn patch_size_mtime(
    block: &mut [u8; BLOCK],
    size: u64,
    mtime: Option<u64>,
) -> Result<(), WriteError> {
    let gnu = is_gnu(block);
    set_size(block, size, gnu)?;
    if let Some(t) = mtime {
        set_mtime(block, t, gnu)?;
    }
    set_checksum(block);
    Ok(())
}

/// How a member name is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameLayout {
    /// In the 100-byte name field.
    Plain,
    /// POSIX ustar split: `prefix` holds the bytes before the `/` at this index, `name` the
    /// bytes after it.
    UstarPrefix(usize),
    /// A GNU long-name entry before the header; the name field holds the first 100 bytes.
    GnuLongName,
}

/// Chooses how to store `name`: plain, a ustar prefix split when one exists (GNU tar and
/// every ustar reader understand it), and only then a GNU long name.
pub fn name_layout(name: &[u8]) -> NameLayout {
    if name.len() <= NAME_FIELD_BYTES {
        return NameLayout::Plain;
    }
    // The split `/` must leave at most 155 bytes before it and 1..=100 bytes after it. Take
    // the leftmost such slash, as GNU tar does.
    let min_slash = name.len().saturating_sub(NAME_FIELD_BYTES + 1);
    let found = name
        .iter()
        .enumerate()
        .skip(min_slash)
        .take_while(|(i, _)| *i <= PREFIX_FIELD_BYTES)
        .find(|(i, b)| **b == b'/' && *i + 1 < name.len())
        .map(|(i, _)| i);
    match found {
        Some(i) => NameLayout::UstarPrefix(i),
        None => NameLayout::GnuLongName,
    }
}

/// Whether a numeric field copied from a template is in base-256 (and so needs a GNU header).
fn is_base256(field: &[u8]) -> bool {
    field.first().is_some_and(|b| b & 0x80 != 0)
}

/// What a rebuilt member header says.
#[derive(Debug, Clone)]
pub struct MemberHeader<'a> {
    /// The member's name as it should be extracted (directories end with `/`).
    pub name: &'a str,
    /// Data size in bytes.
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
    /// Typeflag (`b'0'` regular, `b'5'` directory, ...).
    pub typeflag: u8,
}

/// Builds the header block(s) of a member: a GNU long-name entry (header and padded name)
/// when the name needs one, then the member's header. Mode, uid, gid, uname, gname, device
/// numbers and link name are copied from `template` byte for byte; the rest is built anew.
pub fn member_headers(template: &[u8; BLOCK], h: &MemberHeader<'_>) -> Result<Vec<u8>, WriteError> {
    let name = h.name.as_bytes();
    if name.is_empty() || name.len() > MAX_NAME_BYTES || name.contains(&0) {
        return Err(WriteError::BadName {
            name: h.name.to_string(),
        });
    }
    let needs_gnu = h.size > MAX_OCTAL_SIZE
        || [MODE, UID, GID, DEVMAJOR, DEVMINOR]
            .into_iter()
            .any(|f| is_base256(&template[f]));
    let layout = match name_layout(name) {
        // A GNU header has no name prefix: the split name becomes a GNU long name.
        NameLayout::UstarPrefix(_) if needs_gnu => NameLayout::GnuLongName,
        l => l,
    };
    let gnu = needs_gnu || layout == NameLayout::GnuLongName;

    let mut out = Vec::with_capacity(BLOCK * 2);
    if layout == NameLayout::GnuLongName {
        let mut long = [0u8; BLOCK];
        long[..GNU_LONGLINK.len()].copy_from_slice(GNU_LONGLINK);
        put_octal(&mut long[MODE], 0o644);
        put_octal(&mut long[UID], 0);
        put_octal(&mut long[GID], 0);
        // The payload is the name and a NUL.
        let payload = name.len() as u64 + 1;
        set_size(&mut long, payload, true)?;
        put_octal(&mut long[MTIME], 0);
        long[TYPEFLAG] = b'L';
        long[MAGIC].copy_from_slice(b"ustar ");
        long[VERSION].copy_from_slice(b" \0");
        set_checksum(&mut long);
        out.extend_from_slice(&long);
        out.extend_from_slice(name);
        out.push(0);
        out.resize(out.len() + padding_len(payload), 0);
    }

    let mut block = [0u8; BLOCK];
    match layout {
        NameLayout::Plain => block[..name.len()].copy_from_slice(name),
        NameLayout::UstarPrefix(i) => {
            block[PREFIX][..i].copy_from_slice(&name[..i]);
            let rest = &name[i + 1..];
            block[..rest.len()].copy_from_slice(rest);
        }
        NameLayout::GnuLongName => {
            block[NAME].copy_from_slice(&name[..NAME_FIELD_BYTES]);
        }
    }
    for f in [MODE, UID, GID, UNAME, GNAME, DEVMAJOR, DEVMINOR, LINKNAME] {
        block[f.clone()].copy_from_slice(&template[f]);
    }
    if matches!(h.typeflag, b'0' | b'5' | b'7') {
        // Regular files and directories have no link name.
        block[LINKNAME].fill(0);
    }
    block[TYPEFLAG] = h.typeflag;
    if gnu {
        block[MAGIC].copy_from_slice(b"ustar ");
        block[VERSION].copy_from_slice(b" \0");
    } else {
        block[MAGIC].copy_from_slice(b"ustar\0");
        block[VERSION].copy_from_slice(b"00");
    }
    set_size(&mut block, h.size, gnu)?;
    set_mtime(&mut block, h.mtime, gnu)?;
    set_checksum(&mut block);
    out.extend_from_slice(&block);
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn template() -> [u8; BLOCK] {
        let mut t = [0u8; BLOCK];
        t[MODE].copy_from_slice(b"0000640\0");
        t[UID].copy_from_slice(b"0001750\0");
        t[GID].copy_from_slice(b"0001750\0");
        t[UNAME][..9].copy_from_slice(b"vboxovf20");
        t[GNAME][..4].copy_from_slice(b"vbox");
        t
    }

    /// The headers of a regular file `name` of `size` bytes, from the template.
    fn file_headers(name: &str, size: u64, mtime: u64) -> Vec<u8> {
        member_headers(
            &template(),
            &MemberHeader {
                name,
                size,
                mtime,
                typeflag: b'0',
            },
        )
        .unwrap()
    }

    /// Parses our output back with the `tar` crate (an independent reader of the fields).
    fn parsed(bytes: &[u8]) -> tar::Header {
        let mut h = tar::Header::new_old();
        h.as_mut_bytes()
            .copy_from_slice(&bytes[bytes.len() - BLOCK..]);
        h
    }

    #[test]
    fn checksum_layout_matches_gnu_tar() {
        let mut b = [0u8; BLOCK];
        set_checksum(&mut b);
        // 8 spaces = 256 = 0o400.
        assert_eq!(&b[CHKSUM], b"000400\0 ");
        let h = parsed(&b);
        assert_eq!(h.cksum().unwrap(), 256);
    }

    #[test]
    fn plain_ustar_header_keeps_owner_fields() {
        let out = file_headers("disk1.vmdk", 12345, 1_700_000_000);
        assert_eq!(out.len(), BLOCK);
        let h = parsed(&out);
        assert_eq!(&out[MAGIC], b"ustar\0");
        assert_eq!(&out[VERSION], b"00");
        assert_eq!(h.path_bytes().as_ref(), b"disk1.vmdk");
        assert_eq!(h.size().unwrap(), 12345);
        assert_eq!(h.mtime().unwrap(), 1_700_000_000);
        assert_eq!(h.mode().unwrap(), 0o640);
        assert_eq!(h.uid().unwrap(), 1000);
        assert_eq!(h.username().unwrap(), Some("vboxovf20"));
        assert_eq!(h.cksum().unwrap(), checksum(out[..].try_into().unwrap()));
    }

    #[test]
    fn long_name_uses_ustar_prefix_when_a_slash_allows_it() {
        let name = format!("{}/{}", "d".repeat(120), "f".repeat(90));
        assert_eq!(name_layout(name.as_bytes()), NameLayout::UstarPrefix(120));
        let out = file_headers(&name, 1, 0);
        assert_eq!(out.len(), BLOCK);
        assert_eq!(&out[MAGIC], b"ustar\0");
        assert_eq!(parsed(&out).path_bytes().as_ref(), name.as_bytes());
    }

    #[test]
    fn name_of_exactly_100_bytes_is_plain() {
        let name = "n".repeat(100);
        assert_eq!(name_layout(name.as_bytes()), NameLayout::Plain);
        let out = file_headers(&name, 1, 0);
        assert_eq!(&out[NAME], name.as_bytes());
    }

    #[test]
    fn long_name_without_split_uses_gnu_longlink() {
        let name = "x".repeat(150);
        assert_eq!(name_layout(name.as_bytes()), NameLayout::GnuLongName);
        let out = file_headers(&name, 7, 5);
        // Long-link header, one block of payload (151 bytes), the header.
        assert_eq!(out.len(), 3 * BLOCK);
        assert_eq!(&out[..13], GNU_LONGLINK);
        assert_eq!(out[TYPEFLAG], b'L');
        assert_eq!(&out[BLOCK..BLOCK + 150], name.as_bytes());
        assert_eq!(out[BLOCK + 150], 0);
        let h = &out[2 * BLOCK..];
        assert_eq!(&h[MAGIC], b"ustar ");
        assert_eq!(&h[VERSION], b" \0");
    }

    #[test]
    fn size_above_8_gib_is_gnu_base256() {
        let size = 9 << 30;
        let out = file_headers("big.vmdk", size, 0);
        assert_eq!(&out[MAGIC], b"ustar ");
        assert_eq!(out[SIZE.start], 0x80);
        assert_eq!(parsed(&out).entry_size().unwrap(), size);
        // 8 GiB - 1 still fits octal, in a ustar header.
        let out = file_headers("edge.vmdk", MAX_OCTAL_SIZE, 0);
        assert_eq!(&out[MAGIC], b"ustar\0");
        assert_eq!(&out[SIZE], b"77777777777\0");
    }

    #[test]
    fn big_member_with_split_name_gets_a_gnu_long_name() {
        let name = format!("{}/{}", "d".repeat(120), "f".repeat(90));
        let out = file_headers(&name, 9 << 30, 0);
        assert_eq!(out[TYPEFLAG], b'L');
        assert_eq!(&out[out.len() - BLOCK..][MAGIC], b"ustar ");
    }

    #[test]
    fn patch_keeps_other_bytes_and_refuses_base256_in_ustar() {
        let mut b = [0u8; BLOCK];
        b[..5].copy_from_slice(b"a.ovf");
        b[MAGIC].copy_from_slice(b"ustar\0");
        b[VERSION].copy_from_slice(b"00");
        b[UNAME][..3].copy_from_slice(b"bob");
        set_checksum(&mut b);
        let before = b;
        patch_size_mtime(&mut b, 4000, Some(77)).unwrap();
        for i in 0..BLOCK {
            if !SIZE.contains(&i) && !MTIME.contains(&i) && !CHKSUM.contains(&i) {
                assert_eq!(b[i], before[i], "byte {i}");
            }
        }
        let h = parsed(&b);
        assert_eq!(h.size().unwrap(), 4000);
        assert_eq!(h.mtime().unwrap(), 77);
        assert_eq!(h.cksum().unwrap(), checksum(&b));
        assert!(patch_size_mtime(&mut b, 9 << 30, None).is_err());
    }

    #[test]
    fn refuses_bad_names() {
        for name in ["", "a\0b"] {
            assert!(
                member_headers(
                    &template(),
                    &MemberHeader {
                        name,
                        size: 0,
                        mtime: 0,
                        typeflag: b'0'
                    }
                )
                .is_err()
            );
        }
    }

    #[test]
    fn padding_fills_the_last_block() {
        assert_eq!(padding_len(0), 0);
        assert_eq!(padding_len(1), 511);
        assert_eq!(padding_len(512), 0);
        assert_eq!(round_up_block(513), Some(1024));
        assert_eq!(round_up_block(u64::MAX), None);
    }
}
