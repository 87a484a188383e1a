//! The grain map: which sector of the extent holds each grain (docs/formats.md §4.3, §4.5).
//!
//! Two sources, one lookup:
//! * [`GrainDirectory`]: the grain directory read at open (bounded by
//!   [`MAX_GRAIN_DIRECTORY_ENTRIES`](super::header::MAX_GRAIN_DIRECTORY_ENTRIES) and by the
//!   extent's length, every entry checked), and grain tables loaded lazily on first use into
//!   an LRU of at most [`MAX_CACHED_GRAIN_TABLES`] tables, so memory stays bounded whatever
//!   the header claims and an empty 1 TiB disk opens without reading a single table.
//! * [`ScannedGrains`]: rebuilt by [`scan_markers`] from the grain markers of a stream whose
//!   grain directory is missing; a sorted array searched in O(log n), at most
//!   [`MAX_SCANNED_GRAINS`] entries.
//!
//! Entries are returned raw (a sector number, 0, or 1); the caller interprets and checks
//! them against overHead and the extent's length.

use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;

use super::error::VmdkError;
use super::header::{
    GRAIN_MARKER_HEADER_BYTES, Geometry, MARKER_BYTES, Marker, MarkerType, TABLE_ENTRY_BYTES,
};
use crate::disk::SECTOR_BYTES;
use crate::error::Result;
use crate::io::budget::Budget;
use crate::io::{ReadAt, read_vec_at};

/// Bytes a cached table costs besides its entries (LRU node, box header).
const TABLE_OVERHEAD_BYTES: u64 = 64;

/// Bytes a scanned grain costs while the scan runs: the `(grain, sector)` pair in a vector
/// that may have doubled, then the two boxed arrays it becomes.
const SCANNED_GRAIN_BYTES: u64 = 32;

/// Grains charged to the budget at a time during a marker scan.
const SCAN_CHARGE_GRAINS: u64 = 4096;

/// Most grain tables kept in memory per disk (8 MiB at 512 entries per table; covers
/// 128 GiB of virtual disk at 64 KiB grains). A miss costs one small pread.
pub const MAX_CACHED_GRAIN_TABLES: usize = 4096;

/// Most grains a marker scan may record (4 Mi grains = 256 GiB of data at 64 KiB grains,
/// 64 MiB of map). The scan is a recovery path for streams without a grain directory.
pub const MAX_SCANNED_GRAINS: u64 = 1 << 22;

/// Bytes read at a time while scanning markers: markers are at increasing offsets, usually
/// a few KiB apart, so one window serves many of them.
pub const SCAN_WINDOW_BYTES: u64 = 1 << 20;

/// A run of grains that map alike, starting at the grain asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrainRun {
    /// Raw grain table entry of the first grain: 0 unallocated, 1 zeroed (when enabled),
    /// otherwise the sector of the grain (or of its marker).
    pub entry: u64,
    /// Number of grains in the run (>= 1). For entries 0 and 1, the following grains have the
    /// same entry; for sectors, only when `contiguous` was asked: the following grains are
    /// stored right after each other (`entry + k * grainSize`).
    pub grains: u64,
}

/// Where grain entries come from.
pub enum GrainIndex {
    /// A grain directory and lazily loaded grain tables.
    Directory(GrainDirectory),
    /// A map rebuilt from a marker scan.
    Scanned(ScannedGrains),
}

impl GrainIndex {
    /// The run of grains starting at `grain` (< number of grains), at most `max_grains`
    /// (>= 1) long, not crossing a grain table. `contiguous` asks for runs of allocated
    /// grains stored back to back (uncompressed extents).
    pub fn run(
        &self,
        source: &dyn ReadAt,
        grain: u64,
        max_grains: u64,
        contiguous: bool,
    ) -> Result<GrainRun> {
        match self {
            GrainIndex::Directory(d) => d.run(source, grain, max_grains, contiguous),
            GrainIndex::Scanned(s) => Ok(s.run(grain, max_grains)),
        }
    }
}

/// A grain directory with lazily loaded grain tables.
pub struct GrainDirectory {
    geometry: Geometry,
    /// Grain directory entries (sector of each grain table, 0 = absent), all validated.
    gd: Box<[u32]>,
    /// Loaded grain tables by directory index.
    tables: Mutex<LruCache<u64, Box<[u32]>>>,
}

/// A half-open range of sectors, for overlap checks.
#[derive(Debug, Clone, Copy)]
pub struct SectorRange {
    /// First sector.
    pub start: u64,
    /// One past the last sector.
    pub end: u64,
    /// What lives there ("header", "embedded descriptor", ...).
    pub name: &'static str,
}

impl SectorRange {
    fn overlaps(&self, start: u64, end: u64) -> bool {
        start < self.end && self.start < end
    }
}

impl GrainDirectory {
    /// Reads and validates the grain directory at `gd_sector`. `reserved` lists regions no
    /// grain directory or table may overlap (header, descriptor). The directory, the
    /// transient list of tables and the table cache (at the size it may grow to: the
    /// tables the directory points at, at most [`MAX_CACHED_GRAIN_TABLES`]) are counted
    /// against `budget` before they are allocated.
    pub fn load(
        source: &dyn ReadAt,
        geometry: Geometry,
        gd_sector: u64,
        reserved: &[SectorRange],
        budget: &Budget,
    ) -> Result<Self> {
        let file_sectors = source.len() / SECTOR_BYTES;
        let gd_end = gd_sector
            .checked_add(geometry.gd_sectors)
            .filter(|&e| e <= file_sectors)
            .ok_or(VmdkError::GrainDirectoryOutOfBounds {
                sector: gd_sector,
                sectors: geometry.gd_sectors,
                file_sectors,
            })?;
        if let Some(r) = reserved.iter().find(|r| r.overlaps(gd_sector, gd_end)) {
            return Err(VmdkError::GrainDirectoryOverlap {
                sector: gd_sector,
                region: r.name,
            }
            .into());
        }
        // OK to multiply: gd_entries <= MAX_GRAIN_DIRECTORY_ENTRIES and the directory lies
        // inside the source (checked above), so this is at most the source length.
        let gd_bytes = geometry.gd_entries * TABLE_ENTRY_BYTES;
        // The raw bytes and the decoded directory live together for a moment; the list of
        // tables (8 bytes an entry) is given back once checked.
        let transient = gd_bytes + geometry.gd_entries * 8;
        budget.charge("VMDK grain directory", gd_bytes + transient)?;
        let raw = read_vec_at(
            source,
            "VMDK grain directory",
            gd_sector * SECTOR_BYTES,
            gd_bytes,
            gd_bytes,
        )?;
        let gd: Box<[u32]> = raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let directory = SectorRange {
            start: gd_sector,
            end: gd_end,
            name: "grain directory",
        };
        // (sector, directory index) of every table; u32 halves the transient memory.
        let mut tables: Vec<(u32, u32)> = Vec::new();
        for (index, &entry) in gd.iter().enumerate() {
            if entry == 0 {
                continue;
            }
            let index32 = u32::try_from(index).unwrap_or(u32::MAX); // < 4 Mi entries
            let index = index as u64;
            let start = u64::from(entry);
            let end = start + geometry.gt_sectors; // < 2^32 + 4: no overflow
            if end > file_sectors {
                return Err(VmdkError::GrainTableOutOfBounds {
                    gde_index: index,
                    sector: start,
                }
                .into());
            }
            if let Some(r) = reserved
                .iter()
                .chain(std::iter::once(&directory))
                .find(|r| r.overlaps(start, end))
            {
                return Err(VmdkError::GrainTableOverlap {
                    gde_index: index,
                    sector: start,
                    region: r.name,
                }
                .into());
            }
            tables.push((entry, index32));
        }
        // Two entries sharing (part of) a table would let a small file stand for a huge
        // disk and is never written by a real producer: refuse it (docs/formats.md §6 rule 18).
        tables.sort_unstable();
        for pair in tables.windows(2) {
            let ((a_start, a_index), (b_start, b_index)) = (pair[0], pair[1]);
            if u64::from(b_start) < u64::from(a_start) + geometry.gt_sectors {
                return Err(VmdkError::GrainTablesOverlap {
                    gde_index: u64::from(a_index),
                    other_gde_index: u64::from(b_index),
                    sector: u64::from(b_start),
                }
                .into());
            }
        }
        budget.release(transient);
        let cached = tables.len().clamp(1, MAX_CACHED_GRAIN_TABLES);
        let table_bytes = geometry.gtes_per_gt * TABLE_ENTRY_BYTES + TABLE_OVERHEAD_BYTES;
        budget.charge("VMDK grain table cache", cached as u64 * table_bytes)?;
        let capacity = NonZeroUsize::new(cached).unwrap_or(NonZeroUsize::MIN);
        Ok(GrainDirectory {
            geometry,
            gd,
            tables: Mutex::new(LruCache::new(capacity)),
        })
    }

    /// Number of directory entries that point at a grain table.
    pub fn stored_tables(&self) -> usize {
        self.gd.iter().filter(|&&e| e != 0).count()
    }

    fn run(
        &self,
        source: &dyn ReadAt,
        grain: u64,
        max_grains: u64,
        contiguous: bool,
    ) -> Result<GrainRun> {
        let per_gt = self.geometry.gtes_per_gt;
        let gd_index = grain / per_gt;
        let first = grain % per_gt;
        let left_in_table = per_gt - first;
        let limit = max_grains.clamp(1, left_in_table);
        let gde = usize::try_from(gd_index)
            .ok()
            .and_then(|i| self.gd.get(i))
            .copied()
            .unwrap_or(0);
        if gde == 0 {
            return Ok(GrainRun {
                entry: 0,
                grains: limit,
            });
        }
        if let Some(run) = self.run_in_cached(gd_index, first, limit, contiguous) {
            return Ok(run);
        }
        // Load outside the lock: a concurrent loader of the same table only wastes a pread.
        let table = self.read_table(source, u64::from(gde))?;
        let run = run_in_table(
            &table,
            first,
            limit,
            contiguous,
            self.geometry.grain_sectors,
        );
        self.lock().put(gd_index, table);
        Ok(run)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<u64, Box<[u32]>>> {
        // The cache holds only immutable tables; a panic elsewhere cannot corrupt it.
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run_in_cached(
        &self,
        gd_index: u64,
        first: u64,
        limit: u64,
        contiguous: bool,
    ) -> Option<GrainRun> {
        let mut cache = self.lock();
        let table = cache.get(&gd_index)?;
        Some(run_in_table(
            table,
            first,
            limit,
            contiguous,
            self.geometry.grain_sectors,
        ))
    }

    fn read_table(&self, source: &dyn ReadAt, sector: u64) -> Result<Box<[u32]>> {
        // Bounds were checked at load; gt bytes <= 2 KiB.
        let bytes = self.geometry.gtes_per_gt * TABLE_ENTRY_BYTES;
        let raw = read_vec_at(
            source,
            "VMDK grain table",
            sector * SECTOR_BYTES,
            bytes,
            bytes,
        )?;
        Ok(raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

/// The run starting at entry `first` of `table`, at most `limit` entries.
fn run_in_table(
    table: &[u32],
    first: u64,
    limit: u64,
    contiguous: bool,
    grain_sectors: u64,
) -> GrainRun {
    // first < table.len() and limit <= table.len() - first (callers clamp).
    let start = usize::try_from(first).unwrap_or(usize::MAX);
    let rest = table.get(start..).unwrap_or(&[]);
    let Some(&entry) = rest.first() else {
        return GrainRun {
            entry: 0,
            grains: 1,
        };
    };
    let entry = u64::from(entry);
    let limit = usize::try_from(limit).unwrap_or(usize::MAX).min(rest.len());
    let mut n = 1usize;
    if entry <= 1 {
        while n < limit && u64::from(rest[n]) == entry {
            n += 1;
        }
    } else if contiguous {
        let mut expected = entry;
        while n < limit {
            expected = expected.saturating_add(grain_sectors);
            if u64::from(rest[n]) != expected {
                break;
            }
            n += 1;
        }
    }
    GrainRun {
        entry,
        grains: n as u64,
    }
}

/// A grain map rebuilt from markers: grain numbers in increasing order with the sector of
/// each grain's marker.
pub struct ScannedGrains {
    grains: Box<[u64]>,
    sectors: Box<[u64]>,
}

impl ScannedGrains {
    /// Number of grains found.
    pub fn len(&self) -> usize {
        self.grains.len()
    }

    fn run(&self, grain: u64, max_grains: u64) -> GrainRun {
        let i = self.grains.partition_point(|&g| g < grain);
        match self.grains.get(i) {
            Some(&g) if g == grain => GrainRun {
                entry: self.sectors[i],
                grains: 1,
            },
            next => GrainRun {
                entry: 0,
                grains: next
                    .map_or(max_grains, |&g| (g - grain).min(max_grains))
                    .max(1),
            },
        }
    }
}

/// A forward-only window over the source for the marker scan.
struct ScanReader<'a> {
    source: &'a dyn ReadAt,
    start: u64,
    buf: Vec<u8>,
}

impl ScanReader<'_> {
    /// The 16 marker bytes at `offset` (`offset + 16 <= source.len()` is checked by the
    /// caller).
    fn marker_at(&mut self, offset: u64) -> Result<Marker> {
        let in_window = offset
            .checked_sub(self.start)
            .filter(|&d| d + MARKER_BYTES as u64 <= self.buf.len() as u64);
        let at = match in_window {
            Some(d) => d as usize,
            None => {
                let len = (self.source.len() - offset).min(SCAN_WINDOW_BYTES);
                self.buf.resize(len as usize, 0);
                self.source.read_exact_at(offset, &mut self.buf)?;
                self.start = offset;
                0
            }
        };
        let mut m = [0u8; MARKER_BYTES];
        m.copy_from_slice(&self.buf[at..at + MARKER_BYTES]);
        Ok(Marker::parse(&m))
    }
}

/// Rebuilds the grain map of a stream-optimized extent from its markers, starting at
/// `start_sector` (overHead), until the end-of-stream marker.
///
/// Bounded: every step advances at least one sector and the scan stops at the end of the
/// source, so it takes at most `len / 512` steps; at most [`MAX_SCANNED_GRAINS`] grains are
/// recorded. Grain, table, directory, footer and progress markers are skipped by their
/// declared lengths; unknown marker types, grains outside the capacity, misaligned or
/// duplicate LBAs are refused. Reaching the end without an end-of-stream marker, or a grain
/// cut by the end, means the stream was truncated.
pub fn scan_markers(
    source: &dyn ReadAt,
    geometry: Geometry,
    start_sector: u64,
    max_compressed_bytes: u64,
    budget: &Budget,
) -> Result<ScannedGrains> {
    let len = source.len();
    let file_sectors = len / SECTOR_BYTES;
    let capacity_sectors = geometry.capacity_bytes / SECTOR_BYTES;
    let mut reader = ScanReader {
        source,
        start: 0,
        buf: Vec::new(),
    };
    // Largest metadata block a producer writes: a marker and the grain directory or a table.
    let plausible_metadata_sectors = 1 + geometry.gd_sectors.max(geometry.gt_sectors);
    let mut found: Vec<(u64, u64)> = Vec::new();
    let mut sector = start_sector;
    loop {
        if sector >= file_sectors {
            return Err(VmdkError::StreamTruncated { sector }.into());
        }
        // sector < file_sectors, so sector*512 + 16 <= len.
        let marker = reader.marker_at(sector * SECTOR_BYTES)?;
        let needed_sectors = if marker.is_grain() {
            let size = u64::from(marker.size);
            if size > max_compressed_bytes {
                return Err(VmdkError::CompressedSizeInvalid {
                    sector,
                    size_bytes: size,
                    max_bytes: max_compressed_bytes,
                }
                .into());
            }
            if marker.val % geometry.grain_sectors != 0 {
                return Err(VmdkError::GrainLbaMisaligned {
                    sector,
                    lba: marker.val,
                }
                .into());
            }
            if marker.val >= capacity_sectors {
                return Err(VmdkError::GrainLbaBeyondCapacity {
                    sector,
                    lba: marker.val,
                    capacity_sectors,
                }
                .into());
            }
            if found.len() as u64 >= MAX_SCANNED_GRAINS {
                return Err(VmdkError::TooManyGrains {
                    limit: MAX_SCANNED_GRAINS,
                }
                .into());
            }
            if (found.len() as u64).is_multiple_of(SCAN_CHARGE_GRAINS) {
                budget.charge(
                    "VMDK grain map rebuilt from markers",
                    SCAN_CHARGE_GRAINS * SCANNED_GRAIN_BYTES,
                )?;
            }
            found.push((marker.val / geometry.grain_sectors, sector));
            (GRAIN_MARKER_HEADER_BYTES + size).div_ceil(SECTOR_BYTES)
        } else {
            match marker.kind() {
                MarkerType::EndOfStream => break,
                MarkerType::GrainTable
                | MarkerType::GrainDirectory
                | MarkerType::Footer
                | MarkerType::Progress => marker.val.saturating_add(1),
                MarkerType::Unknown(marker_type) => {
                    return Err(VmdkError::UnknownMarkerType {
                        sector,
                        marker_type,
                    }
                    .into());
                }
            }
        };
        // needed_sectors >= 1: forward progress.
        let next = sector
            .checked_add(needed_sectors)
            .filter(|&next| next <= file_sectors);
        sector = match next {
            Some(next) => next,
            // A grain (its size already bounded) or a metadata block of a plausible size cut
            // by the end of the source: the stream was truncated, as uploads and downloads
            // that stopped early leave it.
            None if marker.is_grain() || needed_sectors <= plausible_metadata_sectors => {
                return Err(VmdkError::StreamTruncated { sector }.into());
            }
            None => {
                return Err(VmdkError::MarkerOutOfBounds {
                    sector,
                    needed_sectors,
                    file_sectors,
                }
                .into());
            }
        };
    }
    // Producers write grains in LBA order; sorting is cheap when they did.
    found.sort_by_key(|&(grain, _)| grain);
    for pair in found.windows(2) {
        if pair[0].0 == pair[1].0 {
            let (first_sector, second_sector) =
                (pair[0].1.min(pair[1].1), pair[0].1.max(pair[1].1));
            return Err(VmdkError::DuplicateGrain {
                grain: pair[0].0,
                first_sector,
                second_sector,
            }
            .into());
        }
    }
    Ok(ScannedGrains {
        grains: found.iter().map(|&(g, _)| g).collect(),
        sectors: found.iter().map(|&(_, s)| s).collect(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn runs_in_a_table() {
        // grain size 8: entries 100, 108, 116 are contiguous; 200 is not.
        let t = [0, 0, 0, 1, 1, 100, 108, 116, 200, 0];
        let r = |first, limit, contiguous| run_in_table(&t, first, limit, contiguous, 8);
        assert_eq!(
            r(0, 10, false),
            GrainRun {
                entry: 0,
                grains: 3
            }
        );
        assert_eq!(
            r(1, 1, false),
            GrainRun {
                entry: 0,
                grains: 1
            }
        );
        assert_eq!(
            r(3, 10, false),
            GrainRun {
                entry: 1,
                grains: 2
            }
        );
        assert_eq!(
            r(5, 10, false),
            GrainRun {
                entry: 100,
                grains: 1
            }
        );
        assert_eq!(
            r(5, 10, true),
            GrainRun {
                entry: 100,
                grains: 3
            }
        );
        assert_eq!(
            r(5, 2, true),
            GrainRun {
                entry: 100,
                grains: 2
            }
        );
        assert_eq!(
            r(9, 10, false),
            GrainRun {
                entry: 0,
                grains: 1
            }
        );
    }

    #[test]
    fn scanned_runs_stop_at_the_next_grain() {
        let s = ScannedGrains {
            grains: vec![2, 5].into(),
            sectors: vec![300, 400].into(),
        };
        assert_eq!(
            s.run(0, 100),
            GrainRun {
                entry: 0,
                grains: 2
            }
        );
        assert_eq!(
            s.run(2, 100),
            GrainRun {
                entry: 300,
                grains: 1
            }
        );
        assert_eq!(
            s.run(3, 1),
            GrainRun {
                entry: 0,
                grains: 1
            }
        );
        assert_eq!(
            s.run(6, 7),
            GrainRun {
                entry: 0,
                grains: 7
            }
        );
    }
}
