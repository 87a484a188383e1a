//! The ext2/3/4 superblock, read by ovafs itself before ext4-view sees the image: the
//! magic (to tell which file system a partition holds) and the few numbers from which
//! ext4-view sizes allocations before it reads anything else.
//!
//! ext4-view reserves `Vec::with_capacity(number of block groups)` for the group
//! descriptors before it reads one, and the number of groups comes straight from the
//! superblock (`blocks_count / blocks_per_group`, up to 2^32): a forged superblock could make
//! it ask for hundreds of GiB, which aborts the process (an allocation failure is not a
//! panic `catch_unwind` can catch). [`check`] refuses a superblock whose descriptor table
//! does not fit inside the source, so that reservation is bounded by the image's size.

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
/// INCOMPAT_64BIT: group descriptors are `s_desc_size` bytes instead of 32.
const INCOMPAT_64BIT: u32 = 0x80;

/// The numbers of a superblock that bound what reading the image allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Bytes per block.
    pub block_size: u64,
    /// Block groups.
    pub groups: u64,
    /// Bytes per group descriptor.
    pub desc_size: u64,
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
    geometry(&sb, source.len()).map_err(|why| Ext4FsError::Superblock(why).into())
}

/// The geometry of superblock `sb` on a source of `len` bytes, or why it is impossible.
fn geometry(sb: &[u8; LEN], len: u64) -> std::result::Result<Geometry, &'static str> {
    let blocks = u64::from(u32_at(sb, 0x04)) | (u64::from(u32_at(sb, 0x150)) << 32);
    let first_data_block = u64::from(u32_at(sb, 0x14));
    let log_block_size = u32_at(sb, 0x18);
    let blocks_per_group = u64::from(u32_at(sb, 0x20));
    let incompat = u32_at(sb, 0x60);
    if log_block_size > MAX_LOG_BLOCK_SIZE {
        return Err("block size above 64 KiB");
    }
    let block_size = 1024u64 << log_block_size;
    if blocks_per_group == 0 {
        return Err("zero blocks per group");
    }
    let data_blocks = blocks
        .checked_sub(first_data_block)
        .ok_or("first data block past the last block")?;
    let groups = data_blocks.div_ceil(blocks_per_group);
    let desc_size = if incompat & INCOMPAT_64BIT != 0 {
        u64::from(u16_at(sb, 0xFE))
    } else {
        32
    };
    // The table starts in the block after the superblock's.
    let table_end = first_data_block
        .checked_add(1)
        .and_then(|b| b.checked_mul(block_size))
        .and_then(|start| groups.checked_mul(desc_size)?.checked_add(start))
        .ok_or("group descriptor table beyond 2^64 bytes")?;
    if table_end > len {
        return Err("group descriptor table extends past the end of the partition");
    }
    Ok(Geometry {
        block_size,
        groups,
        desc_size,
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
        assert_eq!(
            g,
            Geometry {
                block_size: 4096,
                groups: 2,
                desc_size: 32
            }
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
    fn probe_wants_the_magic() {
        let mut image = vec![0u8; 4096];
        assert!(!probe(&image));
        image[1024..2048].copy_from_slice(&sb(1));
        assert!(probe(&image));
        assert!(!probe(&image[..2000].to_vec()));
    }
}
