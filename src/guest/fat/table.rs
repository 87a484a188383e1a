//! The file allocation table read by ovafs itself, to check a chain before fatfs walks it
//! and to map a file's bytes to clusters.
//!
//! fatfs follows a chain wherever it leads: a cluster number 1 (or a FAT32 number whose
//! offset overflows) makes it panic, a loop in a directory's chain makes it iterate for
//! ever, and a file's chain is never compared with its size. So every chain ovafs lets it
//! walk (a directory's) or walks for it (a file's) is read here first: each cluster must be
//! a data cluster of the volume, a file's chain must hold exactly the clusters its size
//! needs (a longer one is refused: that is how a loop shows), and a directory's chain ends
//! within [`MAX_DIR_BYTES`].

use crate::error::Result;
use crate::io::ReadAt;

use super::FatFsError;
use super::boot::{FatType, Geometry};

/// Largest directory read: 65,536 entries of 32 bytes, the FAT specification's limit (and
/// the Linux driver's when it grows one).
pub const MAX_DIR_BYTES: u64 = 65536 * 32;
/// Most runs of contiguous clusters one file may have (8 bytes each in memory).
const MAX_RUNS: usize = 1 << 22;
/// Bytes of the FAT read and kept at a time.
const BLOCK: u64 = 4096;

/// What a FAT entry says of the cluster after this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// The chain goes on at this cluster (not yet checked to be valid).
    Cluster(u32),
    /// The chain ends here.
    End,
    /// The entry is free, bad or reserved: no chain may pass through it.
    Broken,
}

/// A run of contiguous clusters of a file: `count` clusters from `first`, which is the
/// file's cluster number `index` (counted from 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// The place of its first cluster in the file.
    pub index: u64,
    /// The first cluster.
    pub first: u32,
    /// How many.
    pub count: u32,
}

/// A reader of the FAT keeping the last [`BLOCK`] it read.
pub struct Table<'a> {
    geo: &'a Geometry,
    source: &'a dyn ReadAt,
    block: Option<(u64, Vec<u8>)>,
}

impl<'a> Table<'a> {
    /// A reader of the FAT of `geo` in `source`.
    pub fn new(geo: &'a Geometry, source: &'a dyn ReadAt) -> Self {
        Table {
            geo,
            source,
            block: None,
        }
    }

    /// The runs of a file of `size` bytes starting at `first` (0: no cluster). Refused: a
    /// cluster outside the volume, a chain that ends early or passes a free or bad entry,
    /// and a chain longer than the size needs.
    pub fn file_runs(&mut self, first: u32, size: u64) -> Result<Vec<Run>> {
        let need = size.div_ceil(self.geo.cluster_bytes);
        if need == 0 {
            // Linux reads nothing of an empty file's chain either.
            return Ok(Vec::new());
        }
        if need > u64::from(self.geo.clusters) {
            return Err(FatFsError::Chain("a file larger than the volume").into());
        }
        let runs = self.walk(first, need, need)?;
        Ok(runs)
    }

    /// The runs of a directory starting at `first`, refused if longer than
    /// [`MAX_DIR_BYTES`] (a loop in its chain shows so) or broken.
    pub fn dir_runs(&mut self, first: u32) -> Result<Vec<Run>> {
        let most = MAX_DIR_BYTES.div_ceil(self.geo.cluster_bytes).max(1);
        self.walk(first, 1, most)
    }

    /// Walks the chain from `first`: at least `least` clusters, at most `most`, ending
    /// with an end-of-chain mark.
    fn walk(&mut self, first: u32, least: u64, most: u64) -> Result<Vec<Run>> {
        let mut runs: Vec<Run> = Vec::new();
        let mut cluster = first;
        let mut count = 0u64;
        loop {
            if !self.geo.valid_cluster(cluster) {
                return Err(FatFsError::Chain("a cluster number outside the volume").into());
            }
            count += 1;
            push(&mut runs, cluster)?;
            match self.next(cluster)? {
                Next::End if count >= least => return Ok(runs),
                Next::End => return Err(FatFsError::Chain("a chain shorter than its file").into()),
                Next::Broken => {
                    return Err(FatFsError::Chain(
                        "a chain through a free, reserved or bad cluster",
                    )
                    .into());
                }
                Next::Cluster(_) if count >= most => {
                    return Err(FatFsError::Chain(
                        "a chain longer than its file or directory may be (a loop?)",
                    )
                    .into());
                }
                Next::Cluster(n) => cluster = n,
            }
        }
    }

    /// What the FAT entry of (valid) `cluster` says.
    fn next(&mut self, cluster: u32) -> Result<Next> {
        let c = u64::from(cluster);
        let raw = match self.geo.fat_type {
            FatType::Fat12 => {
                let v = u32::from(u16::from_le_bytes(self.bytes::<2>(c + c / 2)?));
                if cluster & 1 == 0 { v & 0xFFF } else { v >> 4 }
            }
            FatType::Fat16 => u32::from(u16::from_le_bytes(self.bytes::<2>(c * 2)?)),
            FatType::Fat32 => u32::from_le_bytes(self.bytes::<4>(c * 4)?) & 0x0FFF_FFFF,
        };
        let end_from = match self.geo.fat_type {
            FatType::Fat12 => 0xFF8,
            FatType::Fat16 => 0xFFF8,
            FatType::Fat32 => 0x0FFF_FFF8,
        };
        Ok(if raw >= end_from {
            Next::End
        } else if raw < 2 || raw == end_from - 1 {
            // 0: free, 1: reserved, end_from - 1: bad.
            Next::Broken
        } else {
            Next::Cluster(raw)
        })
    }

    /// `N` bytes of the FAT at `at`, through the kept block.
    fn bytes<const N: usize>(&mut self, at: u64) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        let end = at + N as u64;
        if end > self.geo.fat_bytes {
            return Err(FatFsError::Chain("a cluster beyond the FAT").into());
        }
        let start = at - at % BLOCK;
        if end > start + BLOCK {
            // Straddles two blocks (a FAT12 entry): read it alone.
            self.source
                .read_exact_at(self.geo.fat_offset + at, &mut out)?;
            return Ok(out);
        }
        let cached = matches!(&self.block, Some((s, _)) if *s == start);
        if !cached {
            let len = BLOCK.min(self.geo.fat_bytes - start);
            let mut buf = vec![0u8; len as usize];
            self.source
                .read_exact_at(self.geo.fat_offset + start, &mut buf)?;
            self.block = Some((start, buf));
        }
        let from = (at - start) as usize;
        if let Some(got) = self.block.as_ref().and_then(|(_, b)| b.get(from..from + N)) {
            out.copy_from_slice(got);
        }
        Ok(out)
    }
}

/// Appends `cluster` to `runs`, extending the last run when contiguous.
fn push(runs: &mut Vec<Run>, cluster: u32) -> Result<()> {
    if let Some(last) = runs.last_mut()
        && u64::from(last.first) + u64::from(last.count) == u64::from(cluster)
    {
        last.count += 1;
        return Ok(());
    }
    if runs.len() == MAX_RUNS {
        return Err(FatFsError::Chain("a file in more than 4 million fragments").into());
    }
    let index = runs.last().map_or(0, |r| r.index + u64::from(r.count));
    runs.push(Run {
        index,
        first: cluster,
        count: 1,
    });
    Ok(())
}
