//! VHDX (Hyper-V virtual hard disk v2): fixed, dynamic and differencing images, read-only
//! (docs/formats.md §5.3, §6 rule 24; Microsoft's MS-VHDX specification; qemu's
//! `block/vhdx.c`, `vhdx.h`).
//!
//! Opening reads the file identifier, both headers (CRC-32C; the valid one with the highest
//! sequence number wins; equal numbers are only accepted for identical headers, as qemu
//! does for Disk2VHD), the region table (the first copy if valid, else the second), the
//! metadata table and items (block size, virtual size, logical sector size, parent
//! locator) and the whole BAT (at most [`MAX_BAT_ENTRIES`]), checking every allocated
//! block against the file's length and the metadata regions. Sector bitmaps of a
//! differencing disk are read lazily into an LRU bounded by [`MAX_CACHED_BITMAP_BYTES`].
//!
//! Payload block states, as [`DiskImage::map`] reports them:
//! * FULLY_PRESENT: [`Extent::Stored`];
//! * ZERO: [`Extent::Zero`];
//! * NOT_PRESENT: [`Extent::Unallocated`] (the parent's bytes; zeros without a parent);
//! * UNDEFINED, UNMAPPED (3, and 5 from the 0.95 draft): [`Extent::Unallocated`] in a
//!   fixed or dynamic disk (zeros, as qemu reads them), [`Extent::Zero`] in a differencing
//!   disk (the specification lets a reader return zeros; qemu returns zeros for all three);
//! * PARTIALLY_PRESENT (differencing only): per logical sector, bit set in the sector
//!   bitmap (bit 0 of byte 0 first) is stored here, clear is the parent's.
//!
//! Where ovafs differs from qemu: qemu refuses differencing VHDX files; ovafs reads them and
//! names the parent from the parent locator (`relative_path`, `absolute_win32_path`,
//! `volume_path`). A file whose header has a non-zero LogGuid is refused: its log must be
//! replayed (by Hyper-V, or by qemu opening it read-write) before the data can be trusted;
//! ovafs does not replay logs (qemu refuses it read-only too when the log holds entries;
//! it opens a file whose log is empty despite a LogGuid, which ovafs does not inspect).

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::{DiskError, DiskFormat, DiskImage, Extent, MAX_VIRTUAL_BYTES, ParentRef};
use crate::error::Result;
use crate::io::budget::Budget;
use crate::io::{ReadAt, read_vec_at};

/// "vhdxfile": the file type identifier at offset 0.
pub const FILE_SIGNATURE: [u8; 8] = *b"vhdxfile";
/// Offsets of the two headers.
pub const HEADER_OFFSETS: [u64; 2] = [64 << 10, 128 << 10];
/// Bytes a header checksum covers.
pub const HEADER_BYTES: u64 = 4 << 10;
/// Offsets of the two region tables.
pub const REGION_TABLE_OFFSETS: [u64; 2] = [192 << 10, 256 << 10];
/// Bytes a region table (and the metadata table) occupies.
pub const TABLE_BYTES: u64 = 64 << 10;
/// Most entries in a region or metadata table.
pub const MAX_TABLE_ENTRIES: u64 = 2047;
/// The header area before any region or block (1 MiB).
pub const HEADER_AREA_BYTES: u64 = 1 << 20;
/// BAT file offsets are in units of 1 MiB.
pub const MIB: u64 = 1 << 20;
/// Sectors one sector bitmap block describes (2^23).
pub const SECTORS_PER_BITMAP_BLOCK: u64 = 1 << 23;

/// Smallest and largest block size.
pub const MIN_BLOCK_BYTES: u64 = 1 << 20;
/// Largest block size (256 MiB).
pub const MAX_BLOCK_BYTES: u64 = 256 << 20;
/// Most BAT entries read (32 MiB of table): covers 64 TiB at 16 MiB blocks, 128 TiB at
/// the default 32 MiB. A 64 TiB disk with 1 MiB blocks is refused.
pub const MAX_BAT_ENTRIES: u64 = 1 << 22;
/// Largest metadata item read (the parent locator is the only variable-length one).
pub const MAX_METADATA_ITEM_BYTES: u64 = 64 << 10;
/// Most key/value pairs read from a parent locator.
pub const MAX_LOCATOR_ENTRIES: u64 = 256;
/// Bytes of sector bitmaps kept in memory per differencing disk.
pub const MAX_CACHED_BITMAP_BYTES: u64 = 8 << 20;

/// Payload state: not present (parent's, or undefined).
pub const PAYLOAD_NOT_PRESENT: u64 = 0;
/// Payload state: undefined.
pub const PAYLOAD_UNDEFINED: u64 = 1;
/// Payload state: zeros.
pub const PAYLOAD_ZERO: u64 = 2;
/// Payload state: unmapped (spec 1.0).
pub const PAYLOAD_UNMAPPED: u64 = 3;
/// Payload state: unmapped (draft 0.95; qemu reads it as 3).
pub const PAYLOAD_UNMAPPED_V095: u64 = 5;
/// Payload state: all sectors stored in the file.
pub const PAYLOAD_FULLY_PRESENT: u64 = 6;
/// Payload state: some sectors stored (differencing; see the sector bitmap).
pub const PAYLOAD_PARTIALLY_PRESENT: u64 = 7;
/// Sector bitmap state: present.
pub const SB_PRESENT: u64 = 6;

/// Builds a GUID's on-disk bytes (first three groups little-endian) from its text form's
/// numbers.
const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

/// Region: block allocation table.
pub const BAT_GUID: [u8; 16] = guid(
    0x2DC2_7766,
    0xF623,
    0x4200,
    [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08],
);
/// Region: metadata.
pub const METADATA_GUID: [u8; 16] = guid(
    0x8B7C_A206,
    0x4790,
    0x4B9A,
    [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E],
);
/// Metadata item: file parameters.
pub const FILE_PARAMETERS_GUID: [u8; 16] = guid(
    0xCAA1_6737,
    0xFA36,
    0x4D43,
    [0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B],
);
/// Metadata item: virtual disk size.
pub const VIRTUAL_DISK_SIZE_GUID: [u8; 16] = guid(
    0x2FA5_4224,
    0xCD1B,
    0x4876,
    [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8],
);
/// Metadata item: page 83 data.
pub const PAGE83_GUID: [u8; 16] = guid(
    0xBECA_12AB,
    0xB2E6,
    0x4523,
    [0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46],
);
/// Metadata item: logical sector size.
pub const LOGICAL_SECTOR_SIZE_GUID: [u8; 16] = guid(
    0x8141_BF1D,
    0xA96F,
    0x4709,
    [0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F],
);
/// Metadata item: physical sector size.
pub const PHYSICAL_SECTOR_SIZE_GUID: [u8; 16] = guid(
    0xCDA3_48C7,
    0x445D,
    0x4471,
    [0x9C, 0xC9, 0xE9, 0x88, 0x52, 0x51, 0xC5, 0x56],
);
/// Metadata item: parent locator.
pub const PARENT_LOCATOR_GUID: [u8; 16] = guid(
    0xA8D3_5F2D,
    0xB30B,
    0x454D,
    [0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C],
);
/// Parent locator type of a VHDX parent.
pub const VHDX_PARENT_LOCATOR_TYPE: [u8; 16] = guid(
    0xB04A_EFB7,
    0xD19E,
    0x4A81,
    [0xB7, 0x89, 0x25, 0xB8, 0xE9, 0x44, 0x59, 0x13],
);

/// File parameters flag: blocks stay allocated (a fixed disk).
pub const LEAVE_BLOCKS_ALLOCATED: u32 = 1;
/// File parameters flag: the disk has a parent (differencing).
pub const HAS_PARENT: u32 = 2;
/// Metadata entry flag: a reader must understand the item.
pub const METADATA_IS_REQUIRED: u32 = 4;

/// CRC-32C (Castagnoli), the VHDX checksum.
const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// A VHDX rule was broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VhdxError {
    /// The file is shorter than the 1 MiB header area.
    #[error("VHDX file is {len_bytes} bytes, shorter than its 1 MiB header area")]
    TooShort {
        /// Length of the source.
        len_bytes: u64,
    },
    /// No "vhdxfile" at offset 0.
    #[error("not a VHDX file: no \"vhdxfile\" identifier")]
    BadSignature,
    /// Neither header has a valid signature, version 1 and CRC-32C.
    #[error(
        "VHDX has no valid header (signature, version 1 and CRC-32C checked at 64 and 128 KiB)"
    )]
    NoValidHeader,
    /// Both headers are valid with the same sequence number but differ.
    #[error("VHDX headers differ but share sequence number {sequence}")]
    AmbiguousHeaders {
        /// The sequence number.
        sequence: u64,
    },
    /// The header's LogGuid is not zero: the log must be replayed first.
    #[error(
        "VHDX has a log to replay (LogGuid set); open it once with Hyper-V or qemu read-write to replay it"
    )]
    LogNotEmpty,
    /// Neither region table is valid.
    #[error("VHDX has no valid region table (signature and CRC-32C checked at 192 and 256 KiB)")]
    NoValidRegionTable,
    /// A region or metadata table claims more entries than the format allows.
    #[error("VHDX {table} table has {entries} entries, above the limit of 2047")]
    TooManyEntries {
        /// Which table.
        table: &'static str,
        /// Entry count field.
        entries: u64,
    },
    /// A region is unaligned, outside the file, overlaps another, or is duplicated.
    #[error("VHDX region {name} at {offset} (+{len} bytes) is invalid: {problem}")]
    InvalidRegion {
        /// BAT, metadata, or the GUID.
        name: String,
        /// Region offset.
        offset: u64,
        /// Region length.
        len: u64,
        /// Which rule.
        problem: &'static str,
    },
    /// A required region, or a required metadata item, that this reader does not know.
    #[error("VHDX requires {kind} {guid:02x?}, which is not supported")]
    UnknownRequired {
        /// "region" or "metadata item".
        kind: &'static str,
        /// Its GUID bytes.
        guid: [u8; 16],
    },
    /// The BAT or metadata region is missing.
    #[error("VHDX region table has no {name} region")]
    MissingRegion {
        /// Which region.
        name: &'static str,
    },
    /// The metadata table's signature is wrong.
    #[error("VHDX metadata table signature is wrong")]
    BadMetadataSignature,
    /// A mandatory metadata item is missing, duplicated, too short or outside the region.
    #[error("VHDX metadata item {name} is missing or invalid ({problem})")]
    InvalidMetadataItem {
        /// Which item.
        name: &'static str,
        /// Which rule.
        problem: &'static str,
    },
    /// Block size not a power of two in 1..=256 MiB.
    #[error("VHDX block size {block_bytes} is not a power of two in 1 MiB..=256 MiB")]
    InvalidBlockSize {
        /// BlockSize field.
        block_bytes: u64,
    },
    /// Logical sector size other than 512 or 4096.
    #[error("VHDX logical sector size {sector_bytes} is neither 512 nor 4096")]
    InvalidSectorSize {
        /// LogicalSectorSize field.
        sector_bytes: u64,
    },
    /// Virtual size zero, above the limit, or not a multiple of the logical sector size.
    #[error("VHDX virtual size {size} is invalid (limit {limit}, multiple of {sector_bytes})")]
    InvalidVirtualSize {
        /// VirtualDiskSize field.
        size: u64,
        /// The limit.
        limit: u64,
        /// Logical sector size.
        sector_bytes: u64,
    },
    /// The BAT region is too small for the disk, or the BAT larger than accepted.
    #[error("VHDX BAT needs {entries} entries; region holds {region_entries}, limit {limit}")]
    InvalidBatSize {
        /// Entries the disk needs.
        entries: u64,
        /// Entries the region holds.
        region_entries: u64,
        /// The limit.
        limit: u64,
    },
    /// A BAT entry has a reserved state, or PARTIALLY_PRESENT in a disk without a parent.
    #[error("VHDX BAT entry {index} has state {state}, not valid here")]
    InvalidBlockState {
        /// BAT index.
        index: u64,
        /// State bits.
        state: u64,
    },
    /// A BAT entry points a block past the end of the file or into a metadata region.
    #[error("VHDX BAT entry {index} points at {offset} (+{len} bytes): {problem}")]
    BlockOutOfBounds {
        /// BAT index.
        index: u64,
        /// File offset.
        offset: u64,
        /// Bytes the block needs.
        len: u64,
        /// Which rule.
        problem: &'static str,
    },
    /// A partially present block whose chunk has no sector bitmap block.
    #[error("VHDX block {block} is partially present but its chunk has no sector bitmap")]
    MissingSectorBitmap {
        /// Payload block.
        block: u64,
    },
    /// The parent locator item is malformed.
    #[error("VHDX parent locator is invalid ({problem})")]
    InvalidParentLocator {
        /// Which rule.
        problem: &'static str,
    },
    /// `map` outside the disk or for zero bytes (a caller bug).
    #[error(
        "VHDX map of {max_len} bytes at offset {offset} is outside the {virtual_size}-byte disk"
    )]
    MapOutOfRange {
        /// Offset asked for.
        offset: u64,
        /// Length asked for.
        max_len: u64,
        /// Size of the disk.
        virtual_size: u64,
    },
    /// `decode_unit` was called: VHDX has no encoded units.
    #[error("VHDX unit {unit} is not an encoded unit (VHDX data is stored verbatim)")]
    NotAnEncodedUnit {
        /// Unit asked for.
        unit: u64,
    },
}

impl From<VhdxError> for crate::error::Error {
    fn from(e: VhdxError) -> Self {
        DiskError::Vhdx(e).into()
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

fn guid_at(b: &[u8], at: usize) -> [u8; 16] {
    let mut g = [0u8; 16];
    g.copy_from_slice(&b[at..at + 16]);
    g
}

/// CRC-32C of `bytes` with the four checksum bytes at `at` counted as zero.
pub fn crc32c_with_zeroed(bytes: &[u8], at: usize) -> u32 {
    let mut d = CRC32C.digest();
    d.update(&bytes[..at]);
    d.update(&[0u8; 4]);
    d.update(&bytes[at + 4..]);
    d.finalize()
}

/// A VHDX header (MS-VHDX 2.2.2), fields in spec order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VhdxHeader {
    /// "head".
    pub signature: [u8; 4],
    /// CRC-32C over the 4 KiB header.
    pub checksum: u32,
    /// Higher wins.
    pub sequence_number: u64,
    /// Changes on every open for writing.
    pub file_write_guid: [u8; 16],
    /// Changes when data changes (a child's parent_linkage names it).
    pub data_write_guid: [u8; 16],
    /// Non-zero: the log must be replayed.
    pub log_guid: [u8; 16],
    /// 0.
    pub log_version: u16,
    /// 1.
    pub version: u16,
    /// Log length.
    pub log_length: u32,
    /// Log offset.
    pub log_offset: u64,
}

impl VhdxHeader {
    /// Bytes decoded.
    pub const SIZE: usize = 80;

    /// Decodes the fields (no validation).
    pub fn parse(b: &[u8]) -> Self {
        VhdxHeader {
            signature: [b[0], b[1], b[2], b[3]],
            checksum: le32(b, 4),
            sequence_number: le64(b, 8),
            file_write_guid: guid_at(b, 16),
            data_write_guid: guid_at(b, 32),
            log_guid: guid_at(b, 48),
            log_version: le16(b, 64),
            version: le16(b, 66),
            log_length: le32(b, 68),
            log_offset: le64(b, 72),
        }
    }
}

/// One region table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Region {
    guid: [u8; 16],
    offset: u64,
    len: u64,
    required: bool,
}

/// The sector-bitmap side of a differencing disk.
struct Bitmaps {
    cache: Mutex<LruCache<u64, Arc<[u8]>>>,
    /// Bytes of one payload block's bitmap (sectors per block / 8).
    block_bitmap_bytes: u64,
}

/// A parsed VHDX.
pub struct Vhdx {
    source: Arc<dyn ReadAt>,
    header: VhdxHeader,
    virtual_size: u64,
    block_bytes: u64,
    sector_bytes: u64,
    chunk_ratio: u64,
    leave_blocks_allocated: bool,
    bat: Box<[u64]>,
    bitmaps: Option<Bitmaps>,
    parent: Option<ParentRef>,
}

impl std::fmt::Debug for Vhdx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vhdx")
            .field("header", &self.header)
            .field("virtual_size", &self.virtual_size)
            .field("block_bytes", &self.block_bytes)
            .field("sector_bytes", &self.sector_bytes)
            .field("parent", &self.parent)
            .finish_non_exhaustive()
    }
}

/// Reads and checks header `i`; `None` if it is not valid.
fn read_header(src: &dyn ReadAt, i: usize) -> Result<Option<(VhdxHeader, Vec<u8>)>> {
    let raw = read_vec_at(
        src,
        "VHDX header",
        HEADER_OFFSETS[i],
        HEADER_BYTES,
        HEADER_BYTES,
    )?;
    let h = VhdxHeader::parse(&raw);
    let valid =
        &h.signature == b"head" && h.version == 1 && crc32c_with_zeroed(&raw, 4) == h.checksum;
    Ok(valid.then_some((h, raw)))
}

/// Reads and checks region table `i`; `None` if its signature or checksum is wrong.
fn read_region_table(src: &dyn ReadAt, i: usize) -> Result<Option<Vec<Region>>> {
    let raw = read_vec_at(
        src,
        "VHDX region table",
        REGION_TABLE_OFFSETS[i],
        TABLE_BYTES,
        TABLE_BYTES,
    )?;
    if &raw[0..4] != b"regi" || crc32c_with_zeroed(&raw, 4) != le32(&raw, 4) {
        return Ok(None);
    }
    let count = u64::from(le32(&raw, 8));
    if count > MAX_TABLE_ENTRIES {
        return Err(VhdxError::TooManyEntries {
            table: "region",
            entries: count,
        }
        .into());
    }
    // OK to cast: count <= 2047, and 16 + 2047 * 32 < 64 KiB.
    Ok(Some(
        (0..count as usize)
            .map(|k| {
                let at = 16 + 32 * k;
                Region {
                    guid: guid_at(&raw, at),
                    offset: le64(&raw, at + 16),
                    len: u64::from(le32(&raw, at + 24)),
                    required: le32(&raw, at + 28) & 1 != 0,
                }
            })
            .collect(),
    ))
}

/// Metadata items found in the metadata table: (offset in region, length).
#[derive(Default)]
struct MetadataItems {
    file_parameters: Option<(u64, u64)>,
    virtual_disk_size: Option<(u64, u64)>,
    page83: Option<(u64, u64)>,
    logical_sector_size: Option<(u64, u64)>,
    physical_sector_size: Option<(u64, u64)>,
    parent_locator: Option<(u64, u64)>,
}

impl Vhdx {
    /// Parses the headers, regions, metadata and BAT of the VHDX held in `source`.
    pub fn open(source: Arc<dyn ReadAt>) -> Result<Self> {
        Self::open_in(source, &Budget::default_metadata())
    }

    /// [`Vhdx::open`], counting the BAT and the bitmap cache against `budget`.
    pub fn open_in(source: Arc<dyn ReadAt>, budget: &Budget) -> Result<Self> {
        Self::open_inner(source, budget).map_err(|e| e.context("opening VHDX"))
    }

    fn open_inner(source: Arc<dyn ReadAt>, budget: &Budget) -> Result<Self> {
        let src: &dyn ReadAt = &*source;
        let file_len = src.len();
        if file_len < HEADER_AREA_BYTES {
            return Err(VhdxError::TooShort {
                len_bytes: file_len,
            }
            .into());
        }
        let mut sig = [0u8; 8];
        src.read_exact_at(0, &mut sig)?;
        if sig != FILE_SIGNATURE {
            return Err(VhdxError::BadSignature.into());
        }
        let header = match (read_header(src, 0)?, read_header(src, 1)?) {
            (None, None) => return Err(VhdxError::NoValidHeader.into()),
            (Some((h, _)), None) | (None, Some((h, _))) => h,
            (Some((a, ra)), Some((b, rb))) => {
                if a.sequence_number > b.sequence_number {
                    a
                } else if b.sequence_number > a.sequence_number {
                    b
                } else if ra == rb {
                    // Disk2VHD writes two identical headers (qemu accepts them).
                    a
                } else {
                    return Err(VhdxError::AmbiguousHeaders {
                        sequence: a.sequence_number,
                    }
                    .into());
                }
            }
        };
        if header.log_guid != [0u8; 16] {
            return Err(VhdxError::LogNotEmpty.into());
        }
        let regions = match read_region_table(src, 0)? {
            Some(r) => r,
            None => read_region_table(src, 1)?.ok_or(VhdxError::NoValidRegionTable)?,
        };
        let mut bat_region = None;
        let mut metadata_region = None;
        // Areas no region or block may overlap: headers and region tables, then regions.
        let mut used: Vec<(u64, u64, &'static str)> = vec![(0, HEADER_AREA_BYTES, "header area")];
        if header.log_length > 0 {
            used.push((
                header.log_offset,
                header
                    .log_offset
                    .saturating_add(u64::from(header.log_length)),
                "log",
            ));
        }
        for r in &regions {
            let name = if r.guid == BAT_GUID {
                "BAT"
            } else if r.guid == METADATA_GUID {
                "metadata"
            } else {
                if r.required {
                    return Err(VhdxError::UnknownRequired {
                        kind: "region",
                        guid: r.guid,
                    }
                    .into());
                }
                continue;
            };
            let invalid = |problem| VhdxError::InvalidRegion {
                name: name.to_string(),
                offset: r.offset,
                len: r.len,
                problem,
            };
            if r.offset % MIB != 0 || r.len % MIB != 0 || r.len == 0 {
                return Err(
                    invalid("not a non-empty multiple of 1 MiB at a 1 MiB boundary").into(),
                );
            }
            let end = r.offset.checked_add(r.len).filter(|&e| e <= file_len);
            let Some(end) = end else {
                return Err(invalid("outside the file").into());
            };
            if used.iter().any(|&(s, e, _)| r.offset < e && s < end) {
                return Err(invalid("overlaps the header area, the log or another region").into());
            }
            used.push((r.offset, end, name));
            let slot = if name == "BAT" {
                &mut bat_region
            } else {
                &mut metadata_region
            };
            if slot.replace(*r).is_some() {
                return Err(invalid("appears twice").into());
            }
        }
        let bat_region = bat_region.ok_or(VhdxError::MissingRegion { name: "BAT" })?;
        let metadata_region =
            metadata_region.ok_or(VhdxError::MissingRegion { name: "metadata" })?;

        // Metadata table and items.
        let table = read_vec_at(
            src,
            "VHDX metadata table",
            metadata_region.offset,
            TABLE_BYTES.min(metadata_region.len),
            TABLE_BYTES,
        )?;
        if &table[0..8] != b"metadata" {
            return Err(VhdxError::BadMetadataSignature.into());
        }
        let count = u64::from(le16(&table, 10));
        if count > MAX_TABLE_ENTRIES {
            return Err(VhdxError::TooManyEntries {
                table: "metadata",
                entries: count,
            }
            .into());
        }
        let mut items = MetadataItems::default();
        // OK to cast: count <= 2047, and 32 + 2047 * 32 <= 64 KiB.
        for k in 0..count as usize {
            let at = 32 + 32 * k;
            let id = guid_at(&table, at);
            let span = (
                u64::from(le32(&table, at + 16)),
                u64::from(le32(&table, at + 20)),
            );
            let flags = le32(&table, at + 24);
            let (slot, name) = match id {
                FILE_PARAMETERS_GUID => (&mut items.file_parameters, "file parameters"),
                VIRTUAL_DISK_SIZE_GUID => (&mut items.virtual_disk_size, "virtual disk size"),
                PAGE83_GUID => (&mut items.page83, "page 83 data"),
                LOGICAL_SECTOR_SIZE_GUID => (&mut items.logical_sector_size, "logical sector size"),
                PHYSICAL_SECTOR_SIZE_GUID => {
                    (&mut items.physical_sector_size, "physical sector size")
                }
                PARENT_LOCATOR_GUID => (&mut items.parent_locator, "parent locator"),
                _ => {
                    if flags & METADATA_IS_REQUIRED != 0 {
                        return Err(VhdxError::UnknownRequired {
                            kind: "metadata item",
                            guid: id,
                        }
                        .into());
                    }
                    continue;
                }
            };
            if span
                .0
                .checked_add(span.1)
                .is_none_or(|e| e > metadata_region.len)
            {
                return Err(VhdxError::InvalidMetadataItem {
                    name,
                    problem: "outside the metadata region",
                }
                .into());
            }
            if slot.replace(span).is_some() {
                return Err(VhdxError::InvalidMetadataItem {
                    name,
                    problem: "appears twice",
                }
                .into());
            }
        }
        let item =
            |span: Option<(u64, u64)>, name: &'static str, min_len: u64| -> Result<Vec<u8>> {
                let (off, len) = span.ok_or(VhdxError::InvalidMetadataItem {
                    name,
                    problem: "missing",
                })?;
                if len < min_len || len > MAX_METADATA_ITEM_BYTES {
                    return Err(VhdxError::InvalidMetadataItem {
                        name,
                        problem: "wrong length",
                    }
                    .into());
                }
                read_vec_at(
                    src,
                    "VHDX metadata item",
                    metadata_region.offset + off,
                    len,
                    MAX_METADATA_ITEM_BYTES,
                )
            };
        let params = item(items.file_parameters, "file parameters", 8)?;
        let block_bytes = u64::from(le32(&params, 0));
        let flags = le32(&params, 4);
        let size = le64(&item(items.virtual_disk_size, "virtual disk size", 8)?, 0);
        item(items.page83, "page 83 data", 16)?;
        let sector_bytes = u64::from(le32(
            &item(items.logical_sector_size, "logical sector size", 4)?,
            0,
        ));
        item(items.physical_sector_size, "physical sector size", 4)?;
        if !block_bytes.is_power_of_two()
            || !(MIN_BLOCK_BYTES..=MAX_BLOCK_BYTES).contains(&block_bytes)
        {
            return Err(VhdxError::InvalidBlockSize { block_bytes }.into());
        }
        if sector_bytes != 512 && sector_bytes != 4096 {
            return Err(VhdxError::InvalidSectorSize { sector_bytes }.into());
        }
        if size == 0 || size > MAX_VIRTUAL_BYTES || !size.is_multiple_of(sector_bytes) {
            return Err(VhdxError::InvalidVirtualSize {
                size,
                limit: MAX_VIRTUAL_BYTES,
                sector_bytes,
            }
            .into());
        }
        let has_parent = flags & HAS_PARENT != 0;
        let parent = if has_parent {
            let raw = item(items.parent_locator, "parent locator", 20)?;
            Some(parse_parent_locator(&raw)?)
        } else {
            None
        };

        // BAT: chunk_ratio payload entries, then one sector bitmap entry, repeated.
        let chunk_ratio = SECTORS_PER_BITMAP_BLOCK * sector_bytes / block_bytes; // >= 16
        let data_blocks = size.div_ceil(block_bytes);
        let entries = if has_parent {
            data_blocks.div_ceil(chunk_ratio) * (chunk_ratio + 1)
        } else {
            data_blocks + (data_blocks - 1) / chunk_ratio
        };
        let region_entries = bat_region.len / 8;
        if entries > region_entries || entries > MAX_BAT_ENTRIES {
            return Err(VhdxError::InvalidBatSize {
                entries,
                region_entries,
                limit: MAX_BAT_ENTRIES,
            }
            .into());
        }
        // The raw table and its decoded copy coexist while it is parsed.
        budget.charge("VHDX BAT", entries * 16)?;
        let raw_bat = read_vec_at(
            src,
            "VHDX BAT",
            bat_region.offset,
            entries * 8,
            MAX_BAT_ENTRIES * 8,
        )?;
        let bat: Box<[u64]> = raw_bat.chunks_exact(8).map(|c| le64(c, 0)).collect();
        for (index, &e) in bat.iter().enumerate() {
            let index = index as u64;
            let state = e & 7;
            let offset = (e >> 20) << 20;
            let is_bitmap = (index + 1).is_multiple_of(chunk_ratio + 1);
            let len = if is_bitmap {
                if state != SB_PRESENT || !has_parent {
                    continue; // not present, or ignored in a disk without parent (qemu)
                }
                MIB
            } else {
                match state {
                    PAYLOAD_NOT_PRESENT
                    | PAYLOAD_UNDEFINED
                    | PAYLOAD_ZERO
                    | PAYLOAD_UNMAPPED
                    | PAYLOAD_UNMAPPED_V095 => continue,
                    PAYLOAD_FULLY_PRESENT => {}
                    PAYLOAD_PARTIALLY_PRESENT if has_parent => {}
                    _ => return Err(VhdxError::InvalidBlockState { index, state }.into()),
                }
                // A final partial block need only hold the disk's last bytes (qemu allows
                // it: qemu itself wrote such files).
                let block = index - index / (chunk_ratio + 1);
                // block < 4 Mi, block_bytes <= 256 MiB: no overflow. Entries past the disk
                // (the padding of a differencing disk's last chunk) are never read.
                let left = size.saturating_sub(block * block_bytes);
                if left == 0 {
                    continue;
                }
                block_bytes.min(left)
            };
            let out = |problem| VhdxError::BlockOutOfBounds {
                index,
                offset,
                len,
                problem,
            };
            if offset.checked_add(len).is_none_or(|end| end > file_len) {
                return Err(out("past the end of the file (truncated image?)").into());
            }
            if used
                .iter()
                .any(|&(s, end, _)| offset < end && s < offset + len)
            {
                return Err(out("overlaps the headers, the log or a metadata region").into());
            }
        }
        budget.release(entries * 8);
        if has_parent {
            let block_bitmap_bytes = block_bytes / sector_bytes / 8;
            let count =
                (MAX_CACHED_BITMAP_BYTES / block_bitmap_bytes.max(1)).clamp(1, data_blocks.max(1));
            budget.charge(
                "VHDX sector bitmap cache",
                count * (block_bitmap_bytes + 64),
            )?;
        }
        let bitmaps = has_parent.then(|| {
            let block_bitmap_bytes = block_bytes / sector_bytes / 8; // 32 B ..= 64 KiB
            let count =
                usize::try_from(MAX_CACHED_BITMAP_BYTES / block_bitmap_bytes).unwrap_or(usize::MAX);
            Bitmaps {
                cache: Mutex::new(LruCache::new(
                    NonZeroUsize::new(count).unwrap_or(NonZeroUsize::MIN),
                )),
                block_bitmap_bytes,
            }
        });
        // Partially present blocks need their chunk's bitmap block.
        if has_parent {
            for block in 0..data_blocks {
                let e = bat_entry(&bat, block, chunk_ratio);
                if e & 7 == PAYLOAD_PARTIALLY_PRESENT
                    && bitmap_entry(&bat, block, chunk_ratio) & 7 != SB_PRESENT
                {
                    return Err(VhdxError::MissingSectorBitmap { block }.into());
                }
            }
        }
        Ok(Vhdx {
            source,
            header,
            virtual_size: size,
            block_bytes,
            sector_bytes,
            chunk_ratio,
            leave_blocks_allocated: flags & LEAVE_BLOCKS_ALLOCATED != 0,
            bat,
            bitmaps,
            parent,
        })
    }

    /// The header in force.
    pub fn header(&self) -> &VhdxHeader {
        &self.header
    }

    /// Block size in bytes.
    pub fn block_bytes(&self) -> u64 {
        self.block_bytes
    }

    /// Logical sector size in bytes.
    pub fn logical_sector_bytes(&self) -> u64 {
        self.sector_bytes
    }

    /// The sector bitmap bits of payload `block` (one bit per logical sector).
    fn block_bitmap(&self, b: &Bitmaps, block: u64) -> Result<Arc<[u8]>> {
        {
            let mut c = b.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(bits) = c.get(&block) {
                return Ok(bits.clone());
            }
        }
        let sb = bitmap_entry(&self.bat, block, self.chunk_ratio);
        // Checked at open: present, and the 1 MiB bitmap block lies inside the file.
        let at = ((sb >> 20) << 20) + (block % self.chunk_ratio) * b.block_bitmap_bytes;
        let bits: Arc<[u8]> = read_vec_at(
            &*self.source,
            "VHDX sector bitmap",
            at,
            b.block_bitmap_bytes,
            MIB,
        )?
        .into();
        b.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(block, bits.clone());
        Ok(bits)
    }
}

/// The BAT entry of payload block `block`.
fn bat_entry(bat: &[u64], block: u64, chunk_ratio: u64) -> u64 {
    let index = block + block / chunk_ratio;
    usize::try_from(index)
        .ok()
        .and_then(|i| bat.get(i))
        .copied()
        .unwrap_or(0)
}

/// The sector bitmap BAT entry of the chunk holding payload block `block`.
fn bitmap_entry(bat: &[u64], block: u64, chunk_ratio: u64) -> u64 {
    let index = (block / chunk_ratio) * (chunk_ratio + 1) + chunk_ratio;
    usize::try_from(index)
        .ok()
        .and_then(|i| bat.get(i))
        .copied()
        .unwrap_or(0)
}

/// Parses a parent locator item (MS-VHDX 2.6.2.6): the parent's paths, relative first.
fn parse_parent_locator(raw: &[u8]) -> Result<ParentRef> {
    let bad = |problem| VhdxError::InvalidParentLocator { problem };
    if guid_at(raw, 0) != VHDX_PARENT_LOCATOR_TYPE {
        return Err(bad("unknown locator type").into());
    }
    let count = u64::from(le16(raw, 18));
    if count > MAX_LOCATOR_ENTRIES || 20 + count * 12 > raw.len() as u64 {
        return Err(bad("too many entries for its size").into());
    }
    let text = |off: u32, len: u16| -> Result<String, VhdxError> {
        let start = off as usize;
        let end = start
            .checked_add(usize::from(len))
            .filter(|&e| e <= raw.len() && len.is_multiple_of(2))
            .ok_or(bad("key or value outside the item"))?;
        let units: Vec<u16> = raw[start..end]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        Ok(String::from_utf16_lossy(&units))
    };
    let mut found: Vec<(usize, String)> = Vec::new();
    // OK to cast: count <= 256.
    for k in 0..count as usize {
        let at = 20 + 12 * k;
        let key = text(le32(raw, at), le16(raw, at + 8))?;
        let value = text(le32(raw, at + 4), le16(raw, at + 10))?;
        let rank = match key.as_str() {
            "relative_path" => 0,
            "absolute_win32_path" => 1,
            "volume_path" => 2,
            _ => continue,
        };
        if !value.trim().is_empty() {
            found.push((rank, value));
        }
    }
    found.sort_by_key(|(r, _)| *r);
    Ok(ParentRef {
        names: found.into_iter().map(|(_, v)| v).collect(),
        format: Some("vhdx".into()),
    })
}

impl DiskImage for Vhdx {
    fn format(&self) -> DiskFormat {
        if self.bitmaps.is_some() {
            DiskFormat::VhdxDifferencing
        } else if self.leave_blocks_allocated {
            DiskFormat::VhdxFixed
        } else {
            DiskFormat::VhdxDynamic
        }
    }

    fn virtual_size(&self) -> u64 {
        self.virtual_size
    }

    fn unit_bytes(&self) -> u64 {
        self.block_bytes
    }

    fn map(&self, offset: u64, max_len: u64) -> Result<Extent> {
        if offset >= self.virtual_size || max_len == 0 {
            return Err(VhdxError::MapOutOfRange {
                offset,
                max_len,
                virtual_size: self.virtual_size,
            }
            .into());
        }
        let block = offset / self.block_bytes;
        let in_block = offset % self.block_bytes;
        let len = max_len
            .min(self.virtual_size - offset)
            .min(self.block_bytes - in_block);
        let e = bat_entry(&self.bat, block, self.chunk_ratio);
        let data = (e >> 20) << 20;
        let differencing = self.bitmaps.is_some();
        Ok(match e & 7 {
            PAYLOAD_FULLY_PRESENT => Extent::Stored {
                source_offset: data + in_block,
                len,
            },
            PAYLOAD_ZERO => Extent::Zero { len },
            PAYLOAD_NOT_PRESENT => Extent::Unallocated { len },
            PAYLOAD_PARTIALLY_PRESENT => match &self.bitmaps {
                Some(b) => {
                    let bits = self.block_bitmap(b, block)?;
                    let s = self.sector_bytes;
                    let bit = |sector: u64| -> bool {
                        let byte = usize::try_from(sector / 8).ok().and_then(|i| bits.get(i));
                        byte.is_some_and(|&v| v >> (sector % 8) & 1 == 1)
                    };
                    let first = in_block / s;
                    let present = bit(first);
                    let end = in_block + len;
                    let mut sector = first + 1;
                    while sector * s < end && bit(sector) == present {
                        sector += 1;
                    }
                    let run = (sector * s).min(end) - in_block;
                    if present {
                        Extent::Stored {
                            source_offset: data + in_block,
                            len: run,
                        }
                    } else {
                        Extent::Unallocated { len: run }
                    }
                }
                // Refused at open.
                None => Extent::Zero { len },
            },
            // UNDEFINED, UNMAPPED: arbitrary content by the spec; qemu returns zeros.
            _ if differencing => Extent::Zero { len },
            _ => Extent::Unallocated { len },
        })
    }

    fn decode_unit(&self, unit: u64, _out: &mut [u8]) -> Result<()> {
        Err(VhdxError::NotAnEncodedUnit { unit }.into())
    }

    fn source(&self) -> &dyn ReadAt {
        &*self.source
    }

    fn parent(&self) -> Option<ParentRef> {
        self.parent.clone()
    }
}

#[cfg(test)]
#[path = "vhdx_tests.rs"]
mod tests;
