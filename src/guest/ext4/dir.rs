//! Directory entries in a directory block (or an inline directory's area), read linearly:
//! this reads htree directories too, since their index blocks look like one unused entry
//! covering the block (and the root's `..` covers the rest of its block). Every record's
//! length is checked against the block, its name against the record, and the checksum tail
//! of a `metadata_csum` block against the block's crc32c.

use crate::error::Result;

use super::Ext4FsError;
use super::csum;
use super::map::u32_at;

/// The checksum tail's fake entry: inode 0, record length 12, name length 0, type 0xDE.
const TAIL_LEN: usize = 12;
/// The tail's "file type".
const TAIL_TYPE: u8 = 0xDE;

/// One entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry<'a> {
    /// Its inode (never 0: unused records are left out).
    pub ino: u32,
    /// Its name (1 to 255 bytes, neither `/` nor NUL).
    pub name: &'a [u8],
    /// `file_type` (0 without the `filetype` feature).
    pub file_type: u8,
}

/// A corruption of directory `ino`.
fn corrupt(ino: u32, what: &'static str) -> crate::error::Error {
    Ext4FsError::Corrupt { ino, what }.into()
}

/// The record length stored as `raw` in an area of `area` bytes (64 KiB blocks store their
/// full length as 65535 or 0, and longer ones with the low bits as the high ones).
fn rec_len(raw: u16, area: usize) -> usize {
    if area >= 65536 && (raw == 65535 || raw == 0) {
        return 65536;
    }
    usize::from(raw & 0xFFFC) | (usize::from(raw & 3) << 16)
}

/// Whether `block` ends in a checksum tail; if so the bytes before it and the stored crc.
fn tail(block: &[u8]) -> Option<(&[u8], u32)> {
    let cut = block.len().checked_sub(TAIL_LEN)?;
    let (body, t) = block.split_at(cut);
    let is_tail = u32_at(t, 0) == Some(0)
        && t.get(4..6) == Some(&[12, 0])
        && t.get(6) == Some(&0)
        && t.get(7) == Some(&TAIL_TYPE);
    if is_tail {
        Some((body, u32_at(t, 8)?))
    } else {
        None
    }
}

/// Verifies the checksum tail of directory block `block` of directory `ino` (generation
/// `generation`) when `seed` is given. A block without a tail is an htree index block (its
/// checksum, in the index's own tail, is not verified) or one from before `metadata_csum`.
pub fn verify_block(block: &[u8], ino: u32, generation: u32, seed: Option<u32>) -> Result<()> {
    let (Some(seed), Some((body, stored))) = (seed, tail(block)) else {
        return Ok(());
    };
    if csum::crc32c(csum::inode_seed(seed, ino, generation), body) == stored {
        Ok(())
    } else {
        Err(Ext4FsError::Checksum {
            ino,
            what: "directory block",
        }
        .into())
    }
}

/// The entries of `area` (a directory block, or a part of an inline directory) of
/// directory `ino`, `.` and `..` and unused records left out; `filetype` when entries say
/// their type (else the name length is 16 bits). At most `area.len() / 12` entries.
pub fn entries(area: &[u8], ino: u32, filetype: bool) -> Result<Vec<RawEntry<'_>>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < area.len() {
        let head = area
            .get(at..at + 8)
            .ok_or_else(|| corrupt(ino, "directory entry past its block"))?;
        let len = rec_len(u16::from_le_bytes([head[4], head[5]]), area.len());
        let end = at.checked_add(len).filter(|&e| e <= area.len());
        let Some(end) = end.filter(|_| len >= 8 && len.is_multiple_of(4)) else {
            return Err(corrupt(ino, "directory record length"));
        };
        let entry_ino = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let (name_len, file_type) = if filetype {
            (usize::from(head[6]), head[7])
        } else {
            (usize::from(u16::from_le_bytes([head[6], head[7]])), 0)
        };
        let name = area
            .get(at + 8..at + 8 + name_len)
            .filter(|_| 8 + name_len <= len && name_len <= 255)
            .ok_or_else(|| corrupt(ino, "directory entry name length"))?;
        at = end;
        if entry_ino == 0 || name == b"." || name == b".." {
            continue;
        }
        if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
            return Err(corrupt(ino, "directory entry name"));
        }
        out.push(RawEntry {
            ino: entry_ino,
            name,
            file_type,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends an entry of `rec` bytes.
    fn put(b: &mut Vec<u8>, ino: u32, rec: u16, name: &[u8], ft: u8) {
        let start = b.len();
        b.extend_from_slice(&ino.to_le_bytes());
        b.extend_from_slice(&rec.to_le_bytes());
        b.push(name.len() as u8);
        b.push(ft);
        b.extend_from_slice(name);
        b.resize(start + usize::from(rec), 0);
    }

    #[test]
    fn a_block_with_dots_unused_and_tail() {
        let mut b = Vec::new();
        put(&mut b, 2, 12, b".", 2);
        put(&mut b, 2, 12, b"..", 2);
        put(&mut b, 0, 16, b"gone", 1);
        put(&mut b, 12, 20, b"hello", 1);
        put(&mut b, 13, 1024 - 60 - 12, b"dir", 2);
        let body = b.len();
        put(&mut b, 0, 12, b"", TAIL_TYPE);
        let got = entries(&b, 2, true).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            RawEntry {
                ino: 12,
                name: b"hello",
                file_type: 1
            }
        );
        assert_eq!(got[1].name, b"dir");
        // The tail: the right checksum passes, a wrong one fails.
        let c = csum::crc32c(csum::inode_seed(9, 2, 0), &b[..body]);
        b[body + 8..body + 12].copy_from_slice(&c.to_le_bytes());
        assert!(verify_block(&b, 2, 0, Some(9)).is_ok());
        assert!(verify_block(&b, 2, 1, Some(9)).is_err());
        assert!(verify_block(&b, 2, 1, None).is_ok());
    }

    #[test]
    fn hostile_records_fail() {
        let mut b = Vec::new();
        put(&mut b, 12, 12, b"a", 1);
        b[4] = 3; // record length 3 (as the integration test pokes)
        assert!(entries(&b, 2, true).is_err());
        let mut b = Vec::new();
        put(&mut b, 12, 12, b"a", 1);
        b[6] = 200; // name longer than the record
        assert!(entries(&b, 2, true).is_err());
        let mut b = Vec::new();
        put(&mut b, 12, 12, b"a", 1);
        b[4] = 16; // record past the block
        assert!(entries(&b, 2, true).is_err());
        let mut b = Vec::new();
        put(&mut b, 12, 12, b"a/", 1);
        assert!(entries(&b, 2, true).is_err());
        // Zero record length must not loop.
        let b = vec![1u8, 0, 0, 0, 0, 0, 1, 1, b'a', 0, 0, 0];
        assert!(entries(&b, 2, true).is_err());
        for cut in 0..12 {
            let _ = entries(&b[..cut], 2, true);
        }
        // 64 KiB blocks: 0 means the whole block.
        let mut big = vec![0u8; 65536];
        big[0] = 5;
        big[6] = 1;
        big[8] = b'x';
        assert_eq!(entries(&big, 2, true).unwrap().len(), 1);
    }
}
