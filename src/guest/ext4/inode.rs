//! One inode record, checked and decoded: type and permissions, owner (with the high 16
//! bits), size, links, mtime (with the extra field's nanoseconds and epoch bits), flags,
//! `i_block`, and for inline data the `system.data` extended attribute of the in-inode
//! attribute area. With `metadata_csum` the record's crc32c is verified first.

use crate::error::Result;
use crate::guest::EntryKind;

use super::Ext4FsError;
use super::csum;
use super::map::u32_at;

/// The classic inode record; the extra fields follow it.
const GOOD_OLD_SIZE: usize = 128;
/// `EXT4_EXTENTS_FL`: `i_block` is an extent tree.
pub const EXTENTS_FL: u32 = 0x8_0000;
/// `EXT4_INLINE_DATA_FL`: the content is in `i_block` and `system.data`.
pub const INLINE_DATA_FL: u32 = 0x1000_0000;
/// `EXT4_ENCRYPT_FL`: the content is encrypted.
pub const ENCRYPT_FL: u32 = 0x800;
/// The in-inode extended attribute area's magic.
const XATTR_MAGIC: u32 = 0xEA02_0000;
/// The `system.` attribute name index.
const XATTR_INDEX_SYSTEM: u8 = 7;

/// A decoded inode.
#[derive(Debug, Clone)]
pub struct Inode {
    /// Its number.
    pub ino: u32,
    /// `i_mode` (type and permissions).
    pub mode: u16,
    /// Owner, with the high 16 bits.
    pub uid: u32,
    /// Group, with the high 16 bits.
    pub gid: u32,
    /// Size in bytes (never used to size an allocation).
    pub size: u64,
    /// `i_links_count`.
    pub links: u16,
    /// mtime seconds (with the epoch bits).
    pub mtime: i64,
    /// mtime nanoseconds (0 without the extra field).
    pub mtime_nsec: u32,
    /// `i_flags`.
    pub flags: u32,
    /// `i_block`: block pointers, an extent tree root, a fast link's target or inline data.
    pub block: [u8; 60],
    /// `i_generation` (part of the directory blocks' checksum seed).
    pub generation: u32,
    /// 512-byte sectors held (`i_blocks`, as the kernel tells fast links by it).
    pub sectors: u64,
    /// `i_file_acl`: an extended attribute block (counted in `sectors`).
    pub file_acl: u64,
    /// With inline data: the `system.data` value (the content past `i_block`'s 60 bytes).
    pub inline_rest: Vec<u8>,
}

/// A corruption of inode `ino`.
fn corrupt(ino: u32, what: &'static str) -> crate::error::Error {
    Ext4FsError::Corrupt { ino, what }.into()
}

/// The little-endian `u16` at `at` of `b` (0 past its end: callers check lengths first).
fn u16_at(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u16::from_le_bytes)
}

/// The little-endian `u32` at `at` of `b` (0 past its end).
fn u32_or0(b: &[u8], at: usize) -> u32 {
    u32_at(b, at).unwrap_or(0)
}

impl Inode {
    /// Decodes record `raw` (the superblock's inode size) of inode `ino`, verifying its
    /// checksum when `seed` (the file system's checksum seed) is given.
    pub fn parse(ino: u32, raw: &[u8], seed: Option<u32>) -> Result<Inode> {
        if raw.len() < GOOD_OLD_SIZE {
            return Err(corrupt(ino, "inode record shorter than 128 bytes"));
        }
        let extra = if raw.len() > GOOD_OLD_SIZE {
            usize::from(u16_at(raw, 0x80))
        } else {
            0
        };
        if GOOD_OLD_SIZE + extra > raw.len() || !extra.is_multiple_of(4) {
            return Err(corrupt(ino, "i_extra_isize"));
        }
        let fits = |end: usize| end <= GOOD_OLD_SIZE + extra;
        if let Some(seed) = seed {
            verify(ino, raw, seed, fits(0x84))?;
        }
        let mtime_extra = if fits(0x8C) { u32_or0(raw, 0x88) } else { 0 };
        let mut block = [0u8; 60];
        block.copy_from_slice(raw.get(0x28..0x64).unwrap_or(&[0u8; 60]));
        let flags = u32_or0(raw, 0x20);
        let mut inode = Inode {
            ino,
            mode: u16_at(raw, 0x00),
            uid: u32::from(u16_at(raw, 0x02)) | u32::from(u16_at(raw, 0x78)) << 16,
            gid: u32::from(u16_at(raw, 0x18)) | u32::from(u16_at(raw, 0x7A)) << 16,
            size: u64::from(u32_or0(raw, 0x04)) | u64::from(u32_or0(raw, 0x6C)) << 32,
            links: u16_at(raw, 0x1A),
            mtime: i64::from(u32_or0(raw, 0x10) as i32) + (i64::from(mtime_extra & 3) << 32),
            mtime_nsec: mtime_extra >> 2,
            flags,
            block,
            generation: u32_or0(raw, 0x64),
            sectors: u64::from(u32_or0(raw, 0x1C)) | u64::from(u16_at(raw, 0x74)) << 32,
            file_acl: u64::from(u32_or0(raw, 0x68)) | u64::from(u16_at(raw, 0x76)) << 32,
            inline_rest: Vec::new(),
        };
        inode.kind()?;
        if flags & INLINE_DATA_FL != 0 {
            let area = raw.get(GOOD_OLD_SIZE + extra..).unwrap_or_default();
            inode.inline_rest = system_data(ino, area)?;
        }
        Ok(inode)
    }

    /// What the inode is; an unknown type is a corruption.
    pub fn kind(&self) -> Result<EntryKind> {
        match self.mode & 0xF000 {
            0x8000 => Ok(EntryKind::File),
            0x4000 => Ok(EntryKind::Dir),
            0xA000 => Ok(EntryKind::Symlink),
            0x1000 | 0x2000 | 0x6000 | 0xC000 => Ok(EntryKind::Other),
            _ => Err(corrupt(self.ino, "no such file type in i_mode")),
        }
    }

    /// Whether the content is inline (in `i_block` and `system.data`).
    pub fn is_inline(&self) -> bool {
        self.flags & INLINE_DATA_FL != 0
    }

    /// Whether `i_block` is an extent tree.
    pub fn has_extents(&self) -> bool {
        self.flags & EXTENTS_FL != 0
    }

    /// Whether a symbolic link's target is in `i_block` (it holds no block of its own but
    /// an extended attribute block, as the kernel decides).
    pub fn is_fast_symlink(&self, block_size: u64) -> bool {
        let acl = if self.file_acl != 0 {
            block_size / 512
        } else {
            0
        };
        !self.is_inline() && self.sectors == acl
    }
}

/// Checks the crc32c of inode record `raw`: seeded with the inode's number and generation,
/// over the record with its checksum fields zeroed; `hi` when the upper 16 bits are there.
fn verify(ino: u32, raw: &[u8], seed: u32, hi: bool) -> Result<()> {
    let mut copy = raw.to_vec();
    let mut stored = u32::from(u16_at(raw, 0x7C));
    if let Some(f) = copy.get_mut(0x7C..0x7E) {
        f.fill(0);
    }
    if hi {
        stored |= u32::from(u16_at(raw, 0x82)) << 16;
        if let Some(f) = copy.get_mut(0x82..0x84) {
            f.fill(0);
        }
    }
    let mut calc = csum::crc32c(csum::inode_seed(seed, ino, u32_or0(raw, 0x64)), &copy);
    if !hi {
        calc &= 0xFFFF;
    }
    if calc == stored {
        Ok(())
    } else {
        Err(Ext4FsError::Checksum { ino, what: "inode" }.into())
    }
}

/// The value of `system.data` in the in-inode attribute area `area` (empty when there is
/// none: all the inline content then fits in `i_block`).
fn system_data(ino: u32, area: &[u8]) -> Result<Vec<u8>> {
    if u32_at(area, 0) != Some(XATTR_MAGIC) {
        return Ok(Vec::new());
    }
    let base = area.get(4..).unwrap_or_default();
    let mut at = 0usize;
    // Each entry is at least 16 bytes: the walk ends within the area.
    while let Some(head) = base.get(at..at + 16) {
        if u32_or0(head, 0) == 0 {
            break; // The end marker.
        }
        let name_len = usize::from(head.first().copied().unwrap_or(0));
        let index = head.get(1).copied().unwrap_or(0);
        let value_offs = usize::from(u16_at(head, 2));
        let value_inum = u32_or0(head, 4);
        let value_size = u32_or0(head, 8) as usize;
        let name = base
            .get(at + 16..at + 16 + name_len)
            .ok_or_else(|| corrupt(ino, "extended attribute name"))?;
        if index == XATTR_INDEX_SYSTEM && name == b"data" {
            if value_inum != 0 {
                return Err(corrupt(ino, "inline data in an attribute inode"));
            }
            let value = value_offs
                .checked_add(value_size)
                .and_then(|end| base.get(value_offs..end))
                .ok_or_else(|| corrupt(ino, "extended attribute value"))?;
            return Ok(value.to_vec());
        }
        at += (16 + name_len + 3) & !3;
    }
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 256-byte regular-file inode record.
    fn record() -> Vec<u8> {
        let mut r = vec![0u8; 256];
        r[0..2].copy_from_slice(&0o100644u16.to_le_bytes());
        r[0x80..0x82].copy_from_slice(&32u16.to_le_bytes());
        r
    }

    #[test]
    fn fields_decode() {
        let mut r = record();
        r[0x02..0x04].copy_from_slice(&0x1170u16.to_le_bytes());
        r[0x78..0x7A].copy_from_slice(&1u16.to_le_bytes());
        r[0x04..0x08].copy_from_slice(&5u32.to_le_bytes());
        r[0x6C..0x70].copy_from_slice(&1u32.to_le_bytes());
        r[0x10..0x14].copy_from_slice(&1000u32.to_le_bytes());
        r[0x88..0x8C].copy_from_slice(&((7u32 << 2) | 1).to_le_bytes());
        let i = Inode::parse(12, &r, None).unwrap();
        assert_eq!(i.uid, 0x1_1170);
        assert_eq!(i.size, (1 << 32) + 5);
        assert_eq!((i.mtime, i.mtime_nsec), (1000 + (1 << 32), 7));
        assert_eq!(i.kind().unwrap(), EntryKind::File);
    }

    #[test]
    fn checksums_are_verified() {
        let mut r = record();
        let seed = 0x1234_5678;
        let c = csum::crc32c(csum::inode_seed(seed, 12, 0), &r);
        r[0x7C..0x7E].copy_from_slice(&(c as u16).to_le_bytes());
        r[0x82..0x84].copy_from_slice(&((c >> 16) as u16).to_le_bytes());
        assert!(Inode::parse(12, &r, Some(seed)).is_ok());
        assert!(Inode::parse(13, &r, Some(seed)).is_err());
        r[0x10] ^= 1;
        assert!(Inode::parse(12, &r, Some(seed)).is_err());
        assert!(Inode::parse(12, &[0u8; 256], Some(seed)).is_err());
    }

    #[test]
    fn hostile_records_fail_without_panicking() {
        let mut r = record();
        r[0x80..0x82].copy_from_slice(&200u16.to_le_bytes());
        assert!(Inode::parse(1, &r, None).is_err());
        let mut r = record();
        r[0..2].copy_from_slice(&0xF000u16.to_le_bytes());
        assert!(Inode::parse(1, &r, None).is_err());
        assert!(Inode::parse(1, &[0u8; 100], None).is_err());
        // Inline data with an attribute area whose entries overrun it.
        let mut r = record();
        r[0x20..0x24].copy_from_slice(&INLINE_DATA_FL.to_le_bytes());
        r[160..164].copy_from_slice(&XATTR_MAGIC.to_le_bytes());
        r[164] = 4; // name_len
        r[165] = XATTR_INDEX_SYSTEM;
        r[166..168].copy_from_slice(&0u16.to_le_bytes());
        r[172..176].copy_from_slice(&5000u32.to_le_bytes());
        r[180..184].copy_from_slice(b"data");
        assert!(Inode::parse(1, &r, None).is_err());
        r[172..176].copy_from_slice(&3u32.to_le_bytes());
        r[166..168].copy_from_slice(&40u16.to_le_bytes());
        r[164 + 40..164 + 43].copy_from_slice(b"xyz");
        assert_eq!(Inode::parse(1, &r, None).unwrap().inline_rest, b"xyz");
        for cut in 0..256 {
            let _ = Inode::parse(1, &r[..cut], None);
        }
    }
}
