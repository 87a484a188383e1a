//! Where a file's logical blocks are: extent trees (ext4) and block maps (ext2/3), from the
//! 60 bytes of `i_block` and the blocks they point to. Both answer with a [`Run`]: a stretch
//! of blocks from the asked one that is either on the disk, one after the other, or reads as
//! zeros (a hole, or an extent allocated but not yet written). Every bound is checked here:
//! an extent tree's depth (at most [`MAX_DEPTH`], one less at each level, so a tree cannot
//! loop), its entry counts (within `eh_max` and the node), block numbers (the caller's
//! [`Blocks::meta_block`] refuses those past the file system), and all arithmetic.

use std::sync::Arc;

use crate::error::Result;

use super::Ext4FsError;
use super::csum;

/// The extent header's magic.
const EXTENT_MAGIC: u16 = 0xF30A;
/// Deepest extent tree ext4 makes (the kernel's limit too).
pub const MAX_DEPTH: u16 = 5;
/// An extent longer than this is unwritten (its length is `ee_len - 32768`).
const INIT_MAX_LEN: u16 = 32768;
/// Logical blocks are 32-bit.
const LOGICAL_END: u64 = 1 << 32;
/// Direct block pointers in a block map.
const DIRECT: u64 = 12;

/// Where the metadata blocks of a file come from.
pub trait Blocks {
    /// Bytes per block.
    fn block_size(&self) -> u64;
    /// The whole block `phys` (a node of an extent tree, an indirect block); fails for a
    /// block outside the file system.
    fn meta_block(&self, phys: u64) -> Result<Arc<[u8]>>;
    /// With `metadata_csum`: the file system's checksum seed.
    fn csum_seed(&self) -> Option<u32>;
}

/// What a stretch of a file's blocks is, from the block asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// `len` blocks on the disk from block `phys`.
    Data {
        /// First physical block.
        phys: u64,
        /// Blocks (at least 1).
        len: u64,
    },
    /// `len` blocks that read as zeros (at least 1).
    Zeros {
        /// Blocks.
        len: u64,
    },
}

/// A corruption error of the extent tree or block map of inode `ino`.
fn corrupt(ino: u32, what: &'static str) -> crate::error::Error {
    Ext4FsError::Corrupt { ino, what }.into()
}

/// The little-endian `u16` at `at` of `b`, if there.
fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

/// The little-endian `u32` at `at` of `b`, if there.
pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// One checked node of an extent tree: its depth and its entries' bytes (12 each).
struct Node<'a> {
    depth: u16,
    entries: &'a [u8],
}

/// Checks the header of extent node `node` (the 60 bytes of `i_block` or a whole block).
fn node(ino: u32, node: &[u8], want_depth: Option<u16>) -> Result<Node<'_>> {
    let bad = |what| corrupt(ino, what);
    if u16_at(node, 0) != Some(EXTENT_MAGIC) {
        return Err(bad("extent header magic"));
    }
    let count = u16_at(node, 2).ok_or_else(|| bad("extent header"))?;
    let max = u16_at(node, 4).ok_or_else(|| bad("extent header"))?;
    let depth = u16_at(node, 6).ok_or_else(|| bad("extent header"))?;
    if depth > MAX_DEPTH || want_depth.is_some_and(|d| d != depth) {
        return Err(bad("extent tree depth"));
    }
    let room = node.len().saturating_sub(12) / 12;
    if count > max || usize::from(max) > room {
        return Err(bad("extent node entry count"));
    }
    let end = 12 + usize::from(count) * 12;
    let entries = node
        .get(12..end)
        .ok_or_else(|| bad("extent node entry count"))?;
    Ok(Node { depth, entries })
}

/// Checks the tail of extent block `block` of inode `ino` (generation `generation`): the
/// crc32c of the header and all `eh_max` entry slots, stored right after them.
fn verify_node(b: &dyn Blocks, block: &[u8], ino: u32, generation: u32) -> Result<()> {
    let Some(seed) = b.csum_seed() else {
        return Ok(());
    };
    // `node` checked that 12 + 12 * eh_max fits in the block; the tail may not.
    let end = 12 + usize::from(u16_at(block, 4).unwrap_or(0)) * 12;
    let stored = u32_at(block, end);
    let body = block.get(..end).unwrap_or_default();
    if stored == Some(csum::crc32c(csum::inode_seed(seed, ino, generation), body)) {
        Ok(())
    } else {
        Err(Ext4FsError::Checksum {
            ino,
            what: "extent block",
        }
        .into())
    }
}

/// The run of inode `ino`'s extent tree (root `root`) from logical block `lblk`;
/// `generation` seeds its blocks' checksums.
pub fn extent_run(
    b: &dyn Blocks,
    ino: u32,
    generation: u32,
    root: &[u8],
    lblk: u64,
) -> Result<Run> {
    // Where the subtree being searched ends: a hole past the last extent stops there.
    let mut bound = LOGICAL_END;
    if lblk >= bound {
        return Err(corrupt(ino, "logical block beyond 2^32"));
    }
    let mut held: Arc<[u8]>;
    let mut bytes: &[u8] = root;
    let mut want = None;
    // Depth strictly decreases from at most MAX_DEPTH: at most MAX_DEPTH + 1 nodes.
    for _ in 0..=MAX_DEPTH {
        let n = node(ino, bytes, want)?;
        if want.is_some() {
            verify_node(b, bytes, ino, generation)?;
        }
        let depth = n.depth;
        if depth == 0 {
            return Ok(leaf_run(n.entries, lblk, bound));
        }
        // The last index starting at or before `lblk`; the next one bounds its subtree.
        let mut chosen: Option<(u32, u64)> = None;
        let mut next = bound;
        for e in n.entries.chunks_exact(12) {
            let start = u32_at(e, 0).unwrap_or(0);
            if u64::from(start) <= lblk {
                if chosen.is_none_or(|(s, _)| start >= s) {
                    let lo = u64::from(u32_at(e, 4).unwrap_or(0));
                    let hi = u64::from(u16_at(e, 8).unwrap_or(0));
                    chosen = Some((start, lo | hi << 32));
                }
            } else {
                next = next.min(u64::from(start));
            }
        }
        let Some((start, child)) = chosen else {
            // Before the first index: nothing is mapped up to it.
            return Ok(Run::Zeros { len: next - lblk });
        };
        bound = n.entries.chunks_exact(12).fold(bound, |acc, e| {
            let s = u64::from(u32_at(e, 0).unwrap_or(0));
            if s > u64::from(start) {
                acc.min(s)
            } else {
                acc
            }
        });
        held = b.meta_block(child)?;
        bytes = &held;
        want = Some(depth - 1);
    }
    Err(corrupt(ino, "extent tree depth"))
}

/// The run from `lblk` in leaf entries `entries`, whose subtree ends at `bound`.
fn leaf_run(entries: &[u8], lblk: u64, bound: u64) -> Run {
    let mut hole_end = bound;
    for e in entries.chunks_exact(12) {
        let start = u64::from(u32_at(e, 0).unwrap_or(0));
        let raw = u16_at(e, 4).unwrap_or(0);
        let (len, unwritten) = if raw > INIT_MAX_LEN {
            (u64::from(raw - INIT_MAX_LEN), true)
        } else {
            (u64::from(raw), false)
        };
        let end = start + len; // Both below 2^33: no overflow.
        if start <= lblk && lblk < end {
            let left = end.min(bound) - lblk;
            if unwritten {
                return Run::Zeros { len: left };
            }
            let hi = u64::from(u16_at(e, 6).unwrap_or(0));
            let lo = u64::from(u32_at(e, 8).unwrap_or(0));
            let first = lo | hi << 32;
            // 48-bit block plus a 32-bit offset: no overflow.
            return Run::Data {
                phys: first + (lblk - start),
                len: left,
            };
        }
        if start > lblk {
            hole_end = hole_end.min(start);
        }
    }
    Run::Zeros {
        len: hole_end.saturating_sub(lblk).max(1),
    }
}

/// The run of inode `ino`'s block map (`i_block`'s 15 pointers) from logical block `lblk`.
/// A pointer of 0 is a hole, at any level.
pub fn block_map_run(b: &dyn Blocks, ino: u32, i_block: &[u8], lblk: u64) -> Result<Run> {
    let per = b.block_size() / 4;
    if lblk < DIRECT {
        return Ok(contiguous(i_block, lblk, DIRECT));
    }
    // Which tree (single, double, triple indirect), and `r`, the block within it.
    let mut r = lblk - DIRECT;
    let mut span = per;
    for (slot, levels) in [(12usize, 1u32), (13, 2), (14, 3)] {
        if r < span {
            let top = u32_at(i_block, slot * 4).unwrap_or(0);
            return walk(b, ino, top, levels, r, per);
        }
        r -= span;
        span = span.saturating_mul(per);
    }
    Err(corrupt(ino, "logical block beyond the block map"))
}

/// Follows pointer `ptr` down `levels` levels of indirect blocks to block `r` of its tree.
fn walk(b: &dyn Blocks, ino: u32, mut ptr: u32, levels: u32, mut r: u64, per: u64) -> Result<Run> {
    for level in (0..levels).rev() {
        // What one pointer of this level's block covers, and the pointer itself covers.
        let below = per.pow(level);
        if ptr == 0 {
            let covered = below.saturating_mul(per);
            return Ok(Run::Zeros {
                len: covered - r % covered,
            });
        }
        let block = b.meta_block(u64::from(ptr))?;
        let idx = r / below;
        if level == 0 {
            return Ok(contiguous(&block, idx, per));
        }
        ptr = usize::try_from(idx)
            .ok()
            .and_then(|i| u32_at(&block, i.checked_mul(4)?))
            .ok_or_else(|| corrupt(ino, "indirect block"))?;
        r %= below;
    }
    Err(corrupt(ino, "block map depth"))
}

/// The run from pointer `idx` of the `count` pointers in `ptrs`: a hole while they are 0,
/// else blocks while each follows the one before.
fn contiguous(ptrs: &[u8], idx: u64, count: u64) -> Run {
    let at = |i: u64| -> u32 {
        usize::try_from(i)
            .ok()
            .and_then(|i| u32_at(ptrs, i.checked_mul(4)?))
            .unwrap_or(0)
    };
    let first = at(idx);
    let mut len = 1;
    while idx + len < count {
        let p = at(idx + len);
        let follows = if first == 0 {
            p == 0
        } else {
            u64::from(p) == u64::from(first) + len
        };
        if !follows {
            break;
        }
        len += 1;
    }
    if first == 0 {
        Run::Zeros { len }
    } else {
        Run::Data {
            phys: u64::from(first),
            len,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Blocks of `size` bytes from a map; missing ones fail.
    struct Mem {
        size: u64,
        seed: Option<u32>,
        blocks: HashMap<u64, Vec<u8>>,
    }

    impl Blocks for Mem {
        fn block_size(&self) -> u64 {
            self.size
        }
        fn meta_block(&self, phys: u64) -> Result<Arc<[u8]>> {
            match self.blocks.get(&phys) {
                Some(b) => Ok(b.clone().into()),
                None => Err(corrupt(0, "no such block")),
            }
        }
        fn csum_seed(&self) -> Option<u32> {
            self.seed
        }
    }

    /// An extent node of `len` bytes: header then 12-byte entries.
    fn ext_node(len: usize, depth: u16, max: u16, entries: &[[u32; 3]]) -> Vec<u8> {
        let mut n = vec![0u8; len];
        n[0..2].copy_from_slice(&EXTENT_MAGIC.to_le_bytes());
        n[2..4].copy_from_slice(&(entries.len() as u16).to_le_bytes());
        n[4..6].copy_from_slice(&max.to_le_bytes());
        n[6..8].copy_from_slice(&depth.to_le_bytes());
        for (i, e) in entries.iter().enumerate() {
            let at = 12 + i * 12;
            n[at..at + 4].copy_from_slice(&e[0].to_le_bytes());
            if depth == 0 {
                // [block, len, start]
                n[at + 4..at + 6].copy_from_slice(&(e[1] as u16).to_le_bytes());
                n[at + 8..at + 12].copy_from_slice(&e[2].to_le_bytes());
            } else {
                // [block, child, _]
                n[at + 4..at + 8].copy_from_slice(&e[1].to_le_bytes());
            }
        }
        n
    }

    fn mem(blocks: &[(u64, Vec<u8>)]) -> Mem {
        Mem {
            size: 1024,
            seed: None,
            blocks: blocks.iter().cloned().collect(),
        }
    }

    #[test]
    fn leaf_extents_holes_and_unwritten() {
        let root = ext_node(60, 0, 4, &[[0, 2, 100], [5, 32768 + 3, 200], [10, 1, 300]]);
        let m = mem(&[]);
        let run = |l| extent_run(&m, 1, 0, &root, l).unwrap();
        assert_eq!(run(0), Run::Data { phys: 100, len: 2 });
        assert_eq!(run(1), Run::Data { phys: 101, len: 1 });
        assert_eq!(run(2), Run::Zeros { len: 3 });
        assert_eq!(run(6), Run::Zeros { len: 2 });
        assert_eq!(run(10), Run::Data { phys: 300, len: 1 });
        assert_eq!(
            run(11),
            Run::Zeros {
                len: LOGICAL_END - 11
            }
        );
        assert!(extent_run(&m, 1, 0, &root, LOGICAL_END).is_err());
    }

    #[test]
    fn index_nodes_bound_their_subtrees() {
        let root = ext_node(60, 1, 4, &[[0, 7, 0], [100, 8, 0]]);
        let m = mem(&[
            (7, ext_node(1024, 0, 84, &[[0, 10, 500]])),
            (8, ext_node(1024, 0, 84, &[[100, 10, 600]])),
        ]);
        assert_eq!(
            extent_run(&m, 1, 0, &root, 3).unwrap(),
            Run::Data { phys: 503, len: 7 }
        );
        // After the first leaf's extent, a hole up to where the second subtree begins.
        assert_eq!(
            extent_run(&m, 1, 0, &root, 20).unwrap(),
            Run::Zeros { len: 80 }
        );
        assert_eq!(
            extent_run(&m, 1, 0, &root, 105).unwrap(),
            Run::Data { phys: 605, len: 5 }
        );
    }

    #[test]
    fn extent_block_checksums() {
        let root = ext_node(60, 1, 4, &[[0, 7, 0]]);
        let mut leaf = ext_node(1024, 0, 84, &[[0, 10, 500]]);
        let c = csum::crc32c(csum::inode_seed(5, 1, 0), &leaf[..12 + 84 * 12]);
        leaf[12 + 84 * 12..16 + 84 * 12].copy_from_slice(&c.to_le_bytes());
        let mut m = mem(&[(7, leaf.clone())]);
        m.seed = Some(5);
        assert_eq!(
            extent_run(&m, 1, 0, &root, 3).unwrap(),
            Run::Data { phys: 503, len: 7 }
        );
        assert!(extent_run(&m, 1, 9, &root, 3).is_err());
        leaf[20] ^= 1;
        m.blocks.insert(7, leaf);
        assert!(extent_run(&m, 1, 0, &root, 3).is_err());
    }

    #[test]
    fn hostile_extent_trees_fail() {
        let m = mem(&[
            // A node pointing at itself: its depth must drop, so the second visit fails.
            (9, ext_node(1024, 1, 84, &[[0, 9, 0]])),
            (10, ext_node(1024, 0, 84, &[])),
        ]);
        let looping = ext_node(60, 2, 4, &[[0, 9, 0]]);
        assert!(extent_run(&m, 1, 0, &looping, 0).is_err());
        let deep = ext_node(60, 40, 4, &[[0, 9, 0]]);
        assert!(extent_run(&m, 1, 0, &deep, 0).is_err());
        // More entries than eh_max, or than the node holds.
        let mut over = ext_node(60, 0, 4, &[[0, 1, 1]]);
        over[2..4].copy_from_slice(&5u16.to_le_bytes());
        assert!(extent_run(&m, 1, 0, &over, 0).is_err());
        let too_big = ext_node(60, 0, 5, &[[0, 1, 1]]);
        assert!(extent_run(&m, 1, 0, &too_big, 0).is_err());
        let mut magic = ext_node(60, 0, 4, &[]);
        magic[0] = 0;
        assert!(extent_run(&m, 1, 0, &magic, 0).is_err());
        // A child out of range (the block source refuses it).
        let missing = ext_node(60, 1, 4, &[[0, 12345, 0]]);
        assert!(extent_run(&m, 1, 0, &missing, 0).is_err());
        // Wrong depth in the child.
        let wrong = ext_node(60, 2, 4, &[[0, 10, 0]]);
        assert!(extent_run(&m, 1, 0, &wrong, 0).is_err());
        // Truncated input never panics.
        for cut in 0..60 {
            let _ = extent_run(&m, 1, 0, &looping[..cut], 0);
        }
    }

    /// `i_block` with the 15 pointers `ptrs`.
    fn i_block(ptrs: &[(usize, u32)]) -> Vec<u8> {
        let mut b = vec![0u8; 60];
        for &(i, p) in ptrs {
            b[i * 4..i * 4 + 4].copy_from_slice(&p.to_le_bytes());
        }
        b
    }

    /// An indirect block of 256 pointers (1 KiB).
    fn indirect(ptrs: &[(usize, u32)]) -> Vec<u8> {
        let mut b = vec![0u8; 1024];
        for &(i, p) in ptrs {
            b[i * 4..i * 4 + 4].copy_from_slice(&p.to_le_bytes());
        }
        b
    }

    #[test]
    fn block_maps_with_holes_at_every_level() {
        let ib = i_block(&[(0, 50), (1, 51), (2, 60), (12, 70), (14, 80)]);
        let m = mem(&[
            (70, indirect(&[(0, 90), (1, 91), (5, 99)])),
            (80, indirect(&[(1, 81)])),
            (81, indirect(&[(0, 82)])),
            (82, indirect(&[(3, 4000)])),
        ]);
        let run = |l| block_map_run(&m, 1, &ib, l).unwrap();
        assert_eq!(run(0), Run::Data { phys: 50, len: 2 });
        assert_eq!(run(2), Run::Data { phys: 60, len: 1 });
        assert_eq!(run(3), Run::Zeros { len: 9 });
        assert_eq!(run(12), Run::Data { phys: 90, len: 2 });
        assert_eq!(run(14), Run::Zeros { len: 3 });
        // The double indirect pointer is 0: its whole tree is a hole.
        assert_eq!(run(12 + 256), Run::Zeros { len: 256 * 256 });
        let triple = 12 + 256 + 256 * 256;
        assert_eq!(run(triple), Run::Zeros { len: 256 * 256 });
        let t = triple + 256 * 256;
        assert_eq!(run(t), Run::Zeros { len: 3 });
        assert_eq!(run(t + 3), Run::Data { phys: 4000, len: 1 });
        assert_eq!(run(t + 4), Run::Zeros { len: 252 });
        assert!(block_map_run(&m, 1, &ib, triple + 256 * 256 * 256).is_err());
        // A pointer to a block the source does not have fails.
        let bad = i_block(&[(12, 12345)]);
        assert!(block_map_run(&m, 1, &bad, 12).is_err());
        assert!(block_map_run(&m, 1, &[], 5).is_ok());
    }
}
