//! The ext2/3/4 superblock: the magic (to tell which file system a partition holds), the
//! features (the ones ovafs cannot read are refused by their mke2fs names), and the numbers
//! the reader needs, each checked so that nothing later sizes an allocation or a loop by an
//! unchecked value (the group descriptor table, for one, must lie inside the source).

use crate::error::Result;
use crate::io::ReadAt;

use super::Ext4FsError;

/// Where the primary superblock starts.
const OFFSET: u64 = 1024;
/// Its length.
const LEN: usize = 1024;
/// `s_magic`.
const MAGIC: u16 = 0xEF53;
/// `s_log_block_size` of 64 KiB blocks, the largest ext4 has.
const MAX_LOG_BLOCK_SIZE: u32 = 6;
/// INCOMPAT_FILETYPE: directory entries say their entry's type (else the inode says).
pub const INCOMPAT_FILETYPE: u32 = 0x2;
/// INCOMPAT_RECOVER: the journal holds transactions not yet written in place.
const INCOMPAT_RECOVER: u32 = 0x4;
/// INCOMPAT_META_BG: group descriptors live in the first groups of each meta group.
const INCOMPAT_META_BG: u32 = 0x10;
/// INCOMPAT_64BIT: group descriptors are `s_desc_size` bytes instead of 32.
const INCOMPAT_64BIT: u32 = 0x80;
/// INCOMPAT_CSUM_SEED: the checksum seed is stored (`s_checksum_seed`), not the uuid's.
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
/// RO_COMPAT_SPARSE_SUPER: superblock backups only in groups 0, 1 and powers of 3, 5, 7.
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
/// RO_COMPAT_METADATA_CSUM: inodes, directory blocks (and more) carry crc32c checksums.
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
/// The incompatible features ovafs refuses a file system for, by their mke2fs names:
/// compressed or encrypted contents it cannot decode, an external journal device (no file
/// system), directory entries with extra data after their names.
const REFUSED: &[(u32, &str)] = &[
    (0x1, "compression"),
    (0x8, "journal_dev"),
    (0x1000, "dirdata"),
    (0x10000, "encrypt"),
];

/// What the reader takes from a checked superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Bytes per block (1 KiB to 64 KiB).
    pub block_size: u64,
    /// Block groups.
    pub groups: u64,
    /// Bytes per group descriptor (32, or 64 and more with `64bit`).
    pub desc_size: u64,
    /// Blocks of the file system (every block number read is below it).
    pub blocks: u64,
    /// The block holding the superblock (1 with 1 KiB blocks, else 0).
    pub first_data_block: u64,
    /// Blocks per group.
    pub blocks_per_group: u64,
    /// Inodes of the file system (every inode number is in `1..=inodes`).
    pub inodes: u32,
    /// Inodes per group (not zero).
    pub inodes_per_group: u32,
    /// Bytes per inode record (128 to the block size, a power of two).
    pub inode_size: u64,
    /// `s_feature_incompat`.
    pub incompat: u32,
    /// `s_feature_ro_compat`.
    pub ro_compat: u32,
    /// With `meta_bg`: the first meta group placed that way (`s_first_meta_bg`).
    pub first_meta_bg: Option<u64>,
    /// With `metadata_csum`: the crc32c seed of every checksum (`s_checksum_seed`, or the
    /// crc32c of the uuid).
    pub csum_seed: Option<u32>,
}

impl Geometry {
    /// Whether directory entries carry their entry's type.
    pub fn has_filetype(&self) -> bool {
        self.incompat & INCOMPAT_FILETYPE != 0
    }

    /// Whether group `g` holds a superblock backup (then descriptors follow it).
    pub fn has_super(&self, g: u64) -> bool {
        if self.ro_compat & RO_COMPAT_SPARSE_SUPER == 0 || g <= 1 {
            return true;
        }
        [3u64, 5, 7].iter().any(|&base| {
            let mut p = base;
            while p < g {
                match p.checked_mul(base) {
                    Some(n) => p = n,
                    None => return false,
                }
            }
            p == g
        })
    }
}

/// Whether `source` holds an ext2/3/4 superblock (its magic number at the right place).
pub fn probe(source: &dyn ReadAt) -> bool {
    let mut sb = [0u8; LEN];
    source.read_exact_at(OFFSET, &mut sb).is_ok() && u16_at(&sb, 0x38) == MAGIC
}

/// Reads the superblock of `source` and checks that the group descriptor table it
/// describes lies inside the source.
pub fn check(source: &dyn ReadAt) -> Result<Geometry> {
    let mut sb = [0u8; LEN];
    source.read_exact_at(OFFSET, &mut sb)?;
    if u16_at(&sb, 0x38) != MAGIC {
        return Err(Ext4FsError::NotExt4.into());
    }
    let incompat = u32_at(&sb, 0x60);
    features(incompat).map_err(Ext4FsError::Unsupported)?;
    if incompat & INCOMPAT_RECOVER != 0 {
        // Not replayed: what the last transactions changed reads as it was before them.
        log::warn!(
            "ext4: the journal needs recovery (not cleanly unmounted); ovafs does not replay \
             it, so the latest changes may be missing or half there"
        );
    }
    geometry(&sb, source.len()).map_err(|why| Ext4FsError::Superblock(why).into())
}

/// Fails with the names of the features of `incompat` (`s_feature_incompat`) that ovafs
/// cannot read.
fn features(incompat: u32) -> std::result::Result<(), String> {
    let missing: Vec<&str> = REFUSED
        .iter()
        .filter(|(bit, _)| incompat & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join(", "))
    }
}

/// The geometry of superblock `sb` on a source of `len` bytes, or why it is impossible.
fn geometry(sb: &[u8; LEN], len: u64) -> std::result::Result<Geometry, &'static str> {
    let incompat = u32_at(sb, 0x60);
    let ro_compat = u32_at(sb, 0x64);
    let wide = incompat & INCOMPAT_64BIT != 0;
    let high = if wide {
        u64::from(u32_at(sb, 0x150)) << 32
    } else {
        0
    };
    let blocks = u64::from(u32_at(sb, 0x04)) | high;
    let first_data_block = u64::from(u32_at(sb, 0x14));
    let log_block_size = u32_at(sb, 0x18);
    let blocks_per_group = u64::from(u32_at(sb, 0x20));
    if log_block_size > MAX_LOG_BLOCK_SIZE {
        return Err("block size above 64 KiB");
    }
    let block_size = 1024u64 << log_block_size;
    // Every byte offset of a block is then computable (a partition may still be shorter:
    // reads past its end fail one by one).
    if blocks.checked_mul(block_size).is_none() {
        return Err("file system beyond 2^64 bytes");
    }
    if blocks_per_group == 0 {
        return Err("zero blocks per group");
    }
    let data_blocks = blocks
        .checked_sub(first_data_block)
        .ok_or("first data block past the last block")?;
    let groups = data_blocks.div_ceil(blocks_per_group);
    let desc_size = if wide {
        u64::from(u16_at(sb, 0xFE))
    } else {
        32
    };
    if desc_size < 32 || desc_size > block_size || !desc_size.is_power_of_two() {
        return Err("impossible group descriptor size");
    }
    // The table starts in the block after the superblock's (with meta_bg, at most this).
    let table_end = first_data_block
        .checked_add(1)
        .and_then(|b| b.checked_mul(block_size))
        .and_then(|start| groups.checked_mul(desc_size)?.checked_add(start))
        .ok_or("group descriptor table beyond 2^64 bytes")?;
    if table_end > len {
        return Err("group descriptor table extends past the end of the partition");
    }
    let inodes = u32_at(sb, 0x00);
    let inodes_per_group = u32_at(sb, 0x28);
    if inodes_per_group == 0 || inodes < 2 {
        return Err("no inodes");
    }
    let inode_size = if u32_at(sb, 0x4C) == 0 {
        128 // Revision 0: fixed-size inodes.
    } else {
        u64::from(u16_at(sb, 0x58))
    };
    if inode_size < 128 || inode_size > block_size || !inode_size.is_power_of_two() {
        return Err("impossible inode size");
    }
    let first_meta_bg = (incompat & INCOMPAT_META_BG != 0).then(|| u64::from(u32_at(sb, 0x104)));
    let csum_seed = (ro_compat & RO_COMPAT_METADATA_CSUM != 0).then(|| {
        if incompat & INCOMPAT_CSUM_SEED != 0 {
            u32_at(sb, 0x270)
        } else {
            super::csum::crc32c(!0, sb.get(0x68..0x78).unwrap_or_default())
        }
    });
    Ok(Geometry {
        block_size,
        groups,
        desc_size,
        blocks,
        first_data_block,
        blocks_per_group,
        inodes,
        inodes_per_group,
        inode_size,
        incompat,
        ro_compat,
        first_meta_bg,
        csum_seed,
    })
}

/// The little-endian `u16` at `at` of the superblock.
fn u16_at(sb: &[u8; LEN], at: usize) -> u16 {
    u16::from_le_bytes([sb[at], sb[at + 1]])
}

/// The little-endian `u32` at `at` of the superblock.
fn u32_at(sb: &[u8; LEN], at: usize) -> u32 {
    u32::from_le_bytes([sb[at], sb[at + 1], sb[at + 2], sb[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A superblock of `blocks` 4 KiB blocks, 32768 a group.
    fn sb(blocks: u64) -> [u8; LEN] {
        let mut sb = [0u8; LEN];
        sb[0x60..0x64].copy_from_slice(&INCOMPAT_64BIT.to_le_bytes());
        sb[0xFE..0x100].copy_from_slice(&32u16.to_le_bytes());
        sb[0x00..0x04].copy_from_slice(&4096u32.to_le_bytes());
        sb[0x28..0x2C].copy_from_slice(&2048u32.to_le_bytes());
        sb[0x04..0x08].copy_from_slice(&(blocks as u32).to_le_bytes());
        sb[0x150..0x154].copy_from_slice(&((blocks >> 32) as u32).to_le_bytes());
        sb[0x18..0x1C].copy_from_slice(&2u32.to_le_bytes());
        sb[0x20..0x24].copy_from_slice(&32768u32.to_le_bytes());
        sb[0x38..0x3A].copy_from_slice(&MAGIC.to_le_bytes());
        sb
    }

    #[test]
    fn a_table_inside_the_source_is_accepted() {
        let g = geometry(&sb(65536), 1 << 28).expect("geometry");
        assert_eq!((g.block_size, g.groups, g.desc_size), (4096, 2, 32));
        assert_eq!(
            (g.inode_size, g.csum_seed, g.first_meta_bg),
            (128, None, None)
        );
    }

    #[test]
    fn forged_numbers_are_refused_not_allocated() {
        // 2^47 blocks, one per group: 2^47 descriptors would be 4 PiB of table.
        let mut s = sb(1 << 47);
        s[0x20..0x24].copy_from_slice(&1u32.to_le_bytes());
        assert!(geometry(&s, 1 << 30).is_err());
        let mut s = sb(1000);
        s[0x20..0x24].copy_from_slice(&0u32.to_le_bytes());
        assert!(geometry(&s, 1 << 30).is_err());
        let mut s = sb(1000);
        s[0x18..0x1C].copy_from_slice(&7u32.to_le_bytes());
        assert!(geometry(&s, 1 << 30).is_err());
        let mut s = sb(u64::MAX);
        s[0x14..0x18].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(geometry(&s, u64::MAX).is_err());
    }

    #[test]
    fn refused_features_are_named() {
        assert_eq!(
            features(0x2 | 0x10 | 0x40 | 0x80 | 0x200 | 0x4000 | 0x8000),
            Ok(())
        );
        assert_eq!(features(0x2 | 0x10000), Err("encrypt".to_string()));
        assert_eq!(features(0x1 | 0x1000), Err("compression, dirdata".into()));
    }

    #[test]
    fn sparse_super_backups() {
        let mut s = sb(65536);
        s[0x64..0x68].copy_from_slice(&RO_COMPAT_SPARSE_SUPER.to_le_bytes());
        let g = geometry(&s, 1 << 28).expect("geometry");
        let with: Vec<u64> = (0..60).filter(|&n| g.has_super(n)).collect();
        assert_eq!(with, [0, 1, 3, 5, 7, 9, 25, 27, 49]);
    }

    #[test]
    fn probe_wants_the_magic() {
        let mut image = vec![0u8; 4096];
        assert!(!probe(&image));
        image[1024..2048].copy_from_slice(&sb(1));
        assert!(probe(&image));
        assert!(!probe(&image[..2000].to_vec()));
    }
}
