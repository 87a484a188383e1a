//! VMDK sparse extents: stream-optimized and hosted sparse (monolithicSparse), read-only.
//!
//! Follows docs/formats.md §4 (VMDK) and the validation rules 15-21 and 25 of §6. Opening reads
//! metadata only: the header, the embedded descriptor (bounded), the footer when the header
//! defers to it, and the grain directory. Grain tables are loaded lazily into a bounded
//! LRU (`grain_map`); no grain is decoded at open. [`SparseVmdk::map`] answers from those
//! tables; [`SparseVmdk::decode_unit`] reads one grain marker and inflates one grain.
//!
//! Layouts handled (docs/formats.md §4.5):
//! * grain directory in the footer (header gdOffset = `GD_AT_END`; VMware, VirtualBox);
//! * grain directory in the header (qemu-img, open-vmdk), with or without a footer too;
//! * no usable grain directory: header says `GD_AT_END` but there is no valid footer; the
//!   grain map is rebuilt by scanning markers from overHead (`grain_map::scan_markers`).
//!   A stream that ends without an end-of-stream marker is refused as truncated.
//! * hosted sparse, uncompressed grains (`Extent::Stored`), zeroed-grain entries, and
//!   compressed grains without markers (flag 16 only: each grain is `size u32` + data, as
//!   open-vmdk reads them).
//!
//! Not handled: descriptor wrappers (capacity 0 with a descriptor naming other files),
//! split and flat extents, COWD and seSparse, delta links (the engine's parent does that).

mod descriptor;
mod error;
mod grain_map;
pub mod header;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub(crate) use descriptor::parse_extent_line;
pub use descriptor::{EmbeddedDescriptor, ExtentLine, MAX_DESCRIPTOR_SECTORS};
pub use error::VmdkError;
pub use grain_map::{MAX_CACHED_GRAIN_TABLES, MAX_SCANNED_GRAINS};
pub use header::{Geometry, Marker, MarkerType, SPARSE_MAGIC, SparseExtentHeader};

use grain_map::{GrainDirectory, GrainIndex, SectorRange};
use header::{
    COMPRESSED_GRAIN_SLACK_BYTES, GD_AT_END, GRAIN_MARKER_HEADER_BYTES, GRAIN_SIZE_HEADER_BYTES,
};

use super::inflate::{Wrapper, inflate_exact, looks_like_zlib};
use super::{DiskError, DiskFormat, DiskImage, Extent, SECTOR_BYTES};
use crate::error::{Result, ResultExt};
use crate::io::budget::Budget;
use crate::io::{ReadAt, read_vec_at};

/// Bytes at the end of a stream taken by `[footer marker][footer header][EOS marker]`.
const FOOTER_TAIL_BYTES: u64 = 3 * SECTOR_BYTES;

/// Where the grain map of an opened extent came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrainMapSource {
    /// The header's gdOffset (hosted sparse, qemu-img and open-vmdk streams).
    Header,
    /// The footer's gdOffset (VMware and VirtualBox streams).
    Footer,
    /// Rebuilt by scanning markers (no footer, but an end-of-stream marker).
    MarkerScan,
}

thread_local! {
    /// Compressed bytes of the grain being decoded, reused across decodes on a thread.
    static COMPRESSED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// How one grain is held in the extent, as its grain table says
/// ([`SparseVmdk::stored_grain`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredGrain {
    /// Grain table entry 0: not in this extent (zeros, or the parent's bytes in a delta link).
    Unallocated,
    /// Grain table entry 1 with flag bit 2: zeros whatever a parent holds.
    Zeroed,
    /// Compressed: the bytes after the grain marker (or size field), exactly as stored, were
    /// read into the caller's buffer. `zlib` says whether they start with a zlib header
    /// (every producer writes zlib; raw deflate is the spec's letter and rare).
    Compressed {
        /// Whether the stored bytes are a zlib stream.
        zlib: bool,
    },
    /// Uncompressed (hosted sparse): the grain's bytes are at `source_offset` of the source.
    Uncompressed {
        /// Byte offset of the grain in [`DiskImage::source`].
        source_offset: u64,
    },
}

/// A parsed VMDK sparse extent.
pub struct SparseVmdk {
    source: Arc<dyn ReadAt>,
    /// The header at sector 0, as read.
    header: SparseExtentHeader,
    /// The header in force: the footer when the header defers to it, else `header`.
    effective: SparseExtentHeader,
    geometry: Geometry,
    descriptor: Option<EmbeddedDescriptor>,
    grains: GrainIndex,
    map_source: GrainMapSource,
    /// Largest compressed grain accepted (rule 19).
    max_compressed_bytes: u64,
}

impl std::fmt::Debug for SparseVmdk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SparseVmdk")
            .field("header", &self.header)
            .field("effective", &self.effective)
            .field("map_source", &self.map_source)
            .finish_non_exhaustive()
    }
}

/// Reads the 512-byte header-sized block at `sector`.
fn read_header_at(source: &dyn ReadAt, offset: u64) -> Result<SparseExtentHeader> {
    let mut b = [0u8; SparseExtentHeader::SIZE];
    source.read_exact_at(offset, &mut b)?;
    Ok(SparseExtentHeader::parse(&b))
}

/// Reads the 16 marker bytes at byte `offset`.
fn read_marker_at(source: &dyn ReadAt, offset: u64) -> Result<Marker> {
    let mut b = [0u8; Marker::SIZE];
    source.read_exact_at(offset, &mut b)?;
    Ok(Marker::parse(&b))
}

/// Reads the embedded descriptor named by `h`, if any, after checking it is in bounds.
fn read_descriptor(
    source: &dyn ReadAt,
    h: &SparseExtentHeader,
) -> Result<Option<EmbeddedDescriptor>> {
    if h.descriptor_offset_sectors == 0 {
        return Ok(None);
    }
    let file_sectors = source.len() / SECTOR_BYTES;
    if h.descriptor_size_sectors > MAX_DESCRIPTOR_SECTORS {
        return Err(VmdkError::DescriptorTooLarge {
            size_sectors: h.descriptor_size_sectors,
            limit_sectors: MAX_DESCRIPTOR_SECTORS,
        }
        .into());
    }
    // Descriptors are often shorter than declared; producers pad with NULs. The declared
    // range must still lie inside the extent and after the header.
    let end = h
        .descriptor_offset_sectors
        .checked_add(h.descriptor_size_sectors)
        .filter(|&e| e <= file_sectors);
    if end.is_none() {
        return Err(VmdkError::DescriptorOutOfBounds {
            offset_sectors: h.descriptor_offset_sectors,
            size_sectors: h.descriptor_size_sectors,
            file_sectors,
        }
        .into());
    }
    let bytes = read_vec_at(
        source,
        "VMDK embedded descriptor",
        h.descriptor_offset_sectors * SECTOR_BYTES,
        h.descriptor_size_sectors * SECTOR_BYTES,
        MAX_DESCRIPTOR_SECTORS * SECTOR_BYTES,
    )?;
    Ok(Some(EmbeddedDescriptor::parse(&bytes)))
}

/// Reads the footer of a stream whose header says `GD_AT_END`: `[footer marker][footer]
/// [EOS]` in the last three sectors. `None` if that framing is not there (qemu's checks:
/// marker size 0 and type FOOTER, magic, EOS val 0, size 0, type 0).
fn read_footer(source: &dyn ReadAt) -> Result<Option<SparseExtentHeader>> {
    // A trailing partial sector (never written by producers) is ignored.
    let aligned_len = source.len() / SECTOR_BYTES * SECTOR_BYTES;
    let Some(marker_offset) = aligned_len.checked_sub(FOOTER_TAIL_BYTES) else {
        return Ok(None);
    };
    if marker_offset < SECTOR_BYTES {
        return Ok(None); // the footer marker would overlap the header
    }
    let marker = read_marker_at(source, marker_offset)?;
    let eos = read_marker_at(source, aligned_len - SECTOR_BYTES)?;
    let footer = read_header_at(source, marker_offset + SECTOR_BYTES)?;
    let framed = marker.size == 0
        && marker.kind() == MarkerType::Footer
        && footer.magic_number == SPARSE_MAGIC
        && eos.val == 0
        && eos.size == 0
        && eos.kind() == MarkerType::EndOfStream;
    Ok(framed.then_some(footer))
}

/// Checks that the footer describes the same disk as the header (the design's rule:
/// cross-check redundant copies). gdOffset and rgdOffset are expected to differ.
fn cross_check_footer(h: &SparseExtentHeader, f: &SparseExtentHeader) -> Result<(), VmdkError> {
    let fields: [(&'static str, u64, u64); 6] = [
        ("flags", u64::from(h.flags), u64::from(f.flags)),
        ("capacity", h.capacity_sectors, f.capacity_sectors),
        ("grainSize", h.grain_sectors, f.grain_sectors),
        (
            "numGTEsPerGT",
            u64::from(h.num_gtes_per_gt),
            u64::from(f.num_gtes_per_gt),
        ),
        ("overHead", h.overhead_sectors, f.overhead_sectors),
        (
            "compressAlgorithm",
            u64::from(h.compress_algorithm),
            u64::from(f.compress_algorithm),
        ),
    ];
    for (field, header, footer) in fields {
        if header != footer {
            return Err(VmdkError::FooterMismatch {
                field,
                header,
                footer,
            });
        }
    }
    Ok(())
}

impl SparseVmdk {
    /// Parses the header and tables of a sparse extent held in `source` (the whole extent,
    /// e.g. an OVA member). Reads metadata only.
    pub fn open(source: Arc<dyn ReadAt>) -> Result<Self> {
        Self::open_in(source, &Budget::default_metadata())
    }

    /// [`SparseVmdk::open`], counting the grain directory and table cache against `budget`.
    pub fn open_in(source: Arc<dyn ReadAt>, budget: &Budget) -> Result<Self> {
        Self::open_inner(source, budget).map_err(|e| e.context("opening VMDK sparse extent"))
    }

    fn open_inner(source: Arc<dyn ReadAt>, budget: &Budget) -> Result<Self> {
        let src: &dyn ReadAt = &*source;
        let len = src.len();
        if len < SECTOR_BYTES {
            return Err(VmdkError::TooShort { len_bytes: len }.into());
        }
        let file_sectors = len / SECTOR_BYTES;
        let header = read_header_at(src, 0)?;
        if header.magic_number != SPARSE_MAGIC {
            return Err(VmdkError::BadMagic {
                found: header.magic_number,
            }
            .into());
        }
        if header.is_descriptor_wrapper() {
            let create_type = read_descriptor(src, &header)
                .ok()
                .flatten()
                .and_then(|d| d.create_type);
            return Err(VmdkError::DescriptorWrapper { create_type }.into());
        }
        let mut geometry = header.validate()?;
        let descriptor = read_descriptor(src, &header)?;

        // The header in force and where the grain map comes from.
        let (effective, map_source) = if header.gd_offset_sectors == GD_AT_END {
            match read_footer(src)? {
                Some(footer) => {
                    let g = footer.validate().with_context(|| "footer")?;
                    cross_check_footer(&header, &footer)?;
                    if footer.gd_offset_sectors == GD_AT_END {
                        return Err(VmdkError::FooterWithoutGrainDirectory.into());
                    }
                    geometry = g;
                    (footer, GrainMapSource::Footer)
                }
                None if header.has_markers() => (header, GrainMapSource::MarkerScan),
                None => return Err(VmdkError::FooterMissing.into()),
            }
        } else {
            (header, GrainMapSource::Header)
        };

        // Regions no grain directory or table may overlap, and before which no grain lies.
        let mut reserved = vec![SectorRange {
            start: 0,
            end: 1,
            name: "header",
        }];
        let mut metadata_end = 1u64;
        if descriptor.is_some() {
            // Checked in read_descriptor: offset + size <= file_sectors.
            let start = header.descriptor_offset_sectors;
            let end = start + header.descriptor_size_sectors;
            reserved.push(SectorRange {
                start,
                end,
                name: "embedded descriptor",
            });
            metadata_end = metadata_end.max(end);
        }
        if effective.overhead_sectors < metadata_end || effective.overhead_sectors > file_sectors {
            return Err(VmdkError::InvalidOverhead {
                overhead_sectors: effective.overhead_sectors,
                min_sectors: metadata_end,
                max_sectors: file_sectors,
            }
            .into());
        }

        let max_compressed_bytes = geometry.grain_bytes + COMPRESSED_GRAIN_SLACK_BYTES;
        let grains = match map_source {
            GrainMapSource::Header | GrainMapSource::Footer => {
                GrainIndex::Directory(GrainDirectory::load(
                    src,
                    geometry,
                    effective.gd_offset_sectors,
                    &reserved,
                    budget,
                )?)
            }
            GrainMapSource::MarkerScan => GrainIndex::Scanned(grain_map::scan_markers(
                src,
                geometry,
                effective.overhead_sectors,
                max_compressed_bytes,
                budget,
            )?),
        };

        Ok(SparseVmdk {
            source,
            header,
            effective,
            geometry,
            descriptor,
            grains,
            map_source,
            max_compressed_bytes,
        })
    }

    /// The header at sector 0, as read.
    pub fn header(&self) -> &SparseExtentHeader {
        &self.header
    }

    /// The header in force (the footer's copy when the header defers to it).
    pub fn effective_header(&self) -> &SparseExtentHeader {
        &self.effective
    }

    /// Derived sizes (grain bytes, number of grains, directory size).
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Where the grain map came from.
    pub fn grain_map_source(&self) -> GrainMapSource {
        self.map_source
    }

    /// Grain tables the grain directory points at (`None` for a map rebuilt by scanning).
    pub fn stored_grain_tables(&self) -> Option<usize> {
        match &self.grains {
            GrainIndex::Directory(d) => Some(d.stored_tables()),
            GrainIndex::Scanned(_) => None,
        }
    }

    /// Grains found by the marker scan (`None` when a grain directory was used).
    pub fn scanned_grains(&self) -> Option<usize> {
        match &self.grains {
            GrainIndex::Directory(_) => None,
            GrainIndex::Scanned(s) => Some(s.len()),
        }
    }

    /// The embedded descriptor, if the extent has one.
    pub fn descriptor(&self) -> Option<&EmbeddedDescriptor> {
        self.descriptor.as_ref()
    }

    /// `createType` from the embedded descriptor (e.g. `streamOptimized`).
    pub fn create_type(&self) -> Option<&str> {
        self.descriptor.as_ref()?.create_type.as_deref()
    }

    /// The extent lines of the embedded descriptor (empty without a descriptor).
    pub fn extent_lines(&self) -> &[ExtentLine] {
        self.descriptor.as_ref().map_or(&[], |d| &d.extents)
    }

    /// How grain `grain` (< `geometry().grains`) is stored; for a compressed grain its stored
    /// bytes (marker checked as for a read, rule 19) are read into `buf`, so a re-encoder can
    /// copy them without inflating. Reads the grain's table if it is not cached.
    pub fn stored_grain(&self, grain: u64, buf: &mut Vec<u8>) -> Result<StoredGrain> {
        if grain >= self.geometry.grains {
            return Err(VmdkError::GrainPastEnd {
                grain,
                grains: self.geometry.grains,
            }
            .into());
        }
        let run = self.grains.run(&*self.source, grain, 1, false)?;
        match run.entry {
            0 => Ok(StoredGrain::Unallocated),
            1 if self.effective.has_zeroed_grain_gte() => Ok(StoredGrain::Zeroed),
            sector => {
                self.check_entry(grain, sector)?;
                if self.effective.is_compressed() {
                    self.read_compressed(grain, sector, buf)
                        .map_err(|e| e.context(format!("VMDK grain {grain} at sector {sector}")))?;
                    Ok(StoredGrain::Compressed {
                        zlib: looks_like_zlib(buf),
                    })
                } else {
                    Ok(StoredGrain::Uncompressed {
                        source_offset: sector * SECTOR_BYTES,
                    })
                }
            }
        }
    }

    /// The embedded descriptor's bytes as stored (cut at the first NUL), if there is one.
    /// Its range was checked at open.
    pub fn descriptor_bytes(&self) -> Result<Option<Vec<u8>>> {
        let h = &self.header;
        if self.descriptor.is_none() {
            return Ok(None);
        }
        let mut bytes = read_vec_at(
            &*self.source,
            "VMDK embedded descriptor",
            h.descriptor_offset_sectors * SECTOR_BYTES,
            h.descriptor_size_sectors * SECTOR_BYTES,
            MAX_DESCRIPTOR_SECTORS * SECTOR_BYTES,
        )?;
        if let Some(end) = bytes.iter().position(|&b| b == 0) {
            bytes.truncate(end);
        }
        Ok(Some(bytes))
    }

    /// Checks a grain table entry (> 0, not a zeroed entry in force) for `grain` (rule 21).
    fn check_entry(&self, grain: u64, entry: u64) -> Result<(), VmdkError> {
        if entry == 1 && !self.effective.has_zeroed_grain_gte() {
            return Err(VmdkError::ZeroedGrainWithoutFlag { grain });
        }
        if entry < self.effective.overhead_sectors {
            return Err(VmdkError::GrainBeforeOverhead {
                grain,
                sector: entry,
                overhead_sectors: self.effective.overhead_sectors,
            });
        }
        if entry >= self.source.len() / SECTOR_BYTES {
            return Err(VmdkError::GrainOutOfBounds {
                grain,
                sector: entry,
            });
        }
        Ok(())
    }

    /// Reads the compressed bytes of `grain` stored at `sector` into `buf` after checking
    /// its marker (rule 19): one small read of the marker, one read of exactly `size` bytes.
    fn read_compressed(&self, grain: u64, sector: u64, buf: &mut Vec<u8>) -> Result<()> {
        let src = &*self.source;
        let offset = sector * SECTOR_BYTES; // sector < file sectors: no overflow
        let (size, header_bytes) = if self.effective.has_markers() {
            let mut h = [0u8; Marker::SIZE];
            let n = src.read_at(offset, &mut h)?;
            if n < GRAIN_MARKER_HEADER_BYTES as usize {
                return Err(VmdkError::GrainOutOfBounds { grain, sector }.into());
            }
            let marker = Marker::parse(&h);
            if !marker.is_grain() {
                return Err(VmdkError::NotAGrainMarker {
                    grain,
                    sector,
                    marker_type: marker.marker_type,
                }
                .into());
            }
            let expected_lba = grain * self.geometry.grain_sectors;
            if marker.val != expected_lba {
                return Err(VmdkError::GrainLbaMismatch {
                    grain,
                    expected_lba,
                    found_lba: marker.val,
                }
                .into());
            }
            (u64::from(marker.size), GRAIN_MARKER_HEADER_BYTES)
        } else {
            let mut h = [0u8; 4];
            src.read_exact_at(offset, &mut h)
                .map_err(|_| VmdkError::GrainOutOfBounds { grain, sector })?;
            (u64::from(u32::from_le_bytes(h)), GRAIN_SIZE_HEADER_BYTES)
        };
        if size == 0 || size > self.max_compressed_bytes {
            return Err(VmdkError::CompressedSizeInvalid {
                sector,
                size_bytes: size,
                max_bytes: self.max_compressed_bytes,
            }
            .into());
        }
        let data_offset = offset + header_bytes;
        if data_offset
            .checked_add(size)
            .is_none_or(|end| end > src.len())
        {
            let needed_sectors = (header_bytes + size).div_ceil(SECTOR_BYTES);
            return Err(VmdkError::MarkerOutOfBounds {
                sector,
                needed_sectors,
                file_sectors: src.len() / SECTOR_BYTES,
            }
            .into());
        }
        // size <= max_compressed_bytes <= 1 MiB + 1 KiB.
        buf.resize(size as usize, 0);
        src.read_exact_at(data_offset, buf)?;
        Ok(())
    }
}

/// Inflates a grain into `out`, choosing the wrapper from the first bytes (every producer
/// writes zlib; raw deflate only when the data does not start with a zlib header).
fn inflate_grain(compressed: &[u8], out: &mut [u8], unit: u64) -> Result<()> {
    let wrapper = if looks_like_zlib(compressed) {
        Wrapper::Zlib
    } else {
        Wrapper::Deflate
    };
    inflate_exact(wrapper, compressed, out, unit)
}

impl DiskImage for SparseVmdk {
    fn format(&self) -> DiskFormat {
        if self.effective.has_markers() {
            DiskFormat::VmdkStreamOptimized
        } else {
            DiskFormat::VmdkSparse
        }
    }

    fn virtual_size(&self) -> u64 {
        self.geometry.capacity_bytes
    }

    fn unit_bytes(&self) -> u64 {
        self.geometry.grain_bytes
    }

    fn map(&self, offset: u64, max_len: u64) -> Result<Extent> {
        let size = self.geometry.capacity_bytes;
        if offset >= size || max_len == 0 {
            return Err(VmdkError::MapOutOfRange {
                offset,
                max_len,
                virtual_size: size,
            }
            .into());
        }
        let len_cap = max_len.min(size - offset);
        let grain_bytes = self.geometry.grain_bytes;
        let grain = offset / grain_bytes;
        let in_grain = offset % grain_bytes;
        // Grains the request touches (>= 1).
        let want_grains = (in_grain + len_cap).div_ceil(grain_bytes);
        let compressed = self.effective.is_compressed();
        let run = self
            .grains
            .run(&*self.source, grain, want_grains, !compressed)?;
        // run.grains >= 1 and covers whole grains from `grain`.
        let run_bytes = run.grains.saturating_mul(grain_bytes) - in_grain;
        let len = len_cap.min(run_bytes);
        match run.entry {
            0 => Ok(Extent::Unallocated { len }),
            1 if self.effective.has_zeroed_grain_gte() => Ok(Extent::Zero { len }),
            sector => {
                self.check_entry(grain, sector)?;
                if compressed {
                    let unit_len = self.unit_len(grain);
                    Ok(Extent::Unit {
                        unit: grain,
                        offset_in_unit: in_grain,
                        len: len.min(unit_len - in_grain),
                    })
                } else {
                    let source_offset = sector * SECTOR_BYTES + in_grain;
                    let end = source_offset.checked_add(len);
                    if end.is_none_or(|e| e > self.source.len()) {
                        return Err(VmdkError::GrainOutOfBounds { grain, sector }.into());
                    }
                    Ok(Extent::Stored { source_offset, len })
                }
            }
        }
    }

    fn decode_unit(&self, unit: u64, out: &mut [u8]) -> Result<()> {
        let grain = unit;
        if grain >= self.geometry.grains || !self.effective.is_compressed() {
            return Err(VmdkError::NotACompressedGrain { unit }.into());
        }
        let expected = self.unit_len(unit);
        if out.len() as u64 != expected {
            return Err(DiskError::UnitSizeMismatch {
                unit,
                expected,
                actual: out.len() as u64,
            }
            .into());
        }
        let run = self.grains.run(&*self.source, grain, 1, false)?;
        let sector = run.entry;
        if sector <= 1 {
            return Err(VmdkError::NotACompressedGrain { unit }.into());
        }
        self.check_entry(grain, sector)?;
        let partial = expected < self.geometry.grain_bytes;
        COMPRESSED
            .with(|cell| {
                let mut buf = cell.borrow_mut();
                self.read_compressed(grain, sector, &mut buf)?;
                match inflate_grain(&buf, out, unit) {
                    // A final partial grain may be stored as a whole grain padded with
                    // zeros (VirtualBox always inflates whole grains; qemu writes only the
                    // tail): accept exactly one whole grain and keep its head.
                    Err(e) if partial && overflowed(&e) => {
                        // grain_bytes <= 1 MiB (validated).
                        let mut whole = vec![0u8; self.geometry.grain_bytes as usize];
                        inflate_grain(&buf, &mut whole, unit)?;
                        out.copy_from_slice(&whole[..out.len()]);
                        Ok(())
                    }
                    other => other,
                }
            })
            .map_err(|e| e.context(format!("VMDK grain {grain} at sector {sector}")))
    }

    fn source(&self) -> &dyn ReadAt {
        &*self.source
    }

    /// The delta link's parent: `parentFileNameHint` of the embedded descriptor (qemu
    /// opens it as the backing file whenever the hint is there).
    fn parent(&self) -> Option<super::ParentRef> {
        self.descriptor
            .as_ref()?
            .parent_file_name_hint
            .as_deref()
            .filter(|h| !h.trim().is_empty())
            .map(super::ParentRef::named)
    }
}

/// Whether `e` says the stream produced more bytes than the output holds.
fn overflowed(e: &crate::error::Error) -> bool {
    matches!(
        e.layer_error(),
        Some(DiskError::UnitSizeMismatch { expected, actual, .. }) if actual > expected
    )
}
