//! VHD (Virtual PC / Hyper-V "Virtual Hard Disk"): fixed, dynamic and differencing images,
//! read-only (docs/formats.md §5.1, §5.2, §6 rule 22; Microsoft's VHD specification 1.0; qemu's
//! `block/vpc.c`, where this reader follows qemu, and where it does not).
//!
//! * Fixed: raw data then a footer in the last 512 bytes (511 bytes in images older than
//!   Virtual PC 2004, which this reader also accepts; qemu does not).
//! * Dynamic: a footer copy at offset 0 (the one used, as qemu does), a dynamic disk header
//!   at the footer's data offset, a block allocation table (BAT) of `u32` sector numbers,
//!   blocks of `[sector bitmap][block data]`. The bitmap is ignored, as qemu ignores it: an
//!   allocated block is read whole, an unallocated one is [`Extent::Unallocated`].
//! * Differencing: a dynamic disk over a parent; in an allocated block the bitmap decides
//!   per sector (bit set: stored here; clear: [`Extent::Unallocated`], the parent's bytes).
//!   Bitmaps are cached in a bounded LRU. The parent is named by the parent locators
//!   (`W2ru` relative and `W2ku` absolute UTF-16LE paths, `MacX` file URL) and the parent's
//!   unicode name, and reported through [`DiskImage::parent`]. qemu reads differencing
//!   images without their parent (unallocated sectors as zeros); ovafs refuses to show one
//!   whose parent is missing.
//!
//! Checks: footer checksum (qemu refuses a mismatch: "Incorrect header checksum"), dynamic
//! header checksum (qemu does not check it), block size a power of two in 512 B..=256 MiB,
//! a table that covers the disk, every BAT entry the disk uses pointing at a whole block
//! inside the file (qemu: "image has been truncated"), locators inside the file.
//!
//! Opening reads the footer, the dynamic header, the BAT (at most [`MAX_BAT_ENTRIES`]
//! entries) and, for a differencing disk, the parent locators; nothing else.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::{DiskFormat, DiskImage, Extent, ParentRef, SECTOR_BYTES};
use crate::error::Result;
use crate::io::budget::Budget;
use crate::io::{ReadAt, read_vec_at};

/// Footer cookie, also the sniffing signature (offset 0 of the footer).
pub const FOOTER_COOKIE: [u8; 8] = *b"conectix";
/// Dynamic disk header cookie.
pub const DYNAMIC_COOKIE: [u8; 8] = *b"cxsparse";
/// Size of the footer.
pub const FOOTER_BYTES: u64 = 512;
/// Size of the footer in images made before Virtual PC 2004 (its last reserved byte is
/// missing; the checksum is the same).
pub const LEGACY_FOOTER_BYTES: u64 = 511;
/// Size of the dynamic disk header.
pub const DYNAMIC_HEADER_BYTES: u64 = 1024;

/// Footer disk type: fixed.
pub const DISK_TYPE_FIXED: u32 = 2;
/// Footer disk type: dynamic.
pub const DISK_TYPE_DYNAMIC: u32 = 3;
/// Footer disk type: differencing.
pub const DISK_TYPE_DIFFERENCING: u32 = 4;

/// BAT entry of a block that is not allocated.
pub const UNALLOCATED: u32 = 0xFFFF_FFFF;

/// The largest CHS geometry (65535 cylinders, 16 heads, 255 sectors per track): a disk
/// this size uses the footer's current size whatever its creator (qemu `VHD_MAX_GEOMETRY`).
pub const MAX_GEOMETRY_SECTORS: u64 = 65535 * 16 * 255;
/// Largest disk accepted: 2040 GiB, the format's limit (qemu `VHD_MAX_SECTORS`).
pub const MAX_VIRTUAL_SECTORS: u64 = 0xff00_0000;

/// Smallest block accepted (qemu: a power of two of at least one sector).
pub const MIN_BLOCK_BYTES: u64 = 512;
/// Largest block accepted: 256 MiB (docs/formats.md §6 rule 22; producers write 2 MiB, Hyper-V
/// up to 256 MiB). Bounds the size of one bitmap (64 KiB).
pub const MAX_BLOCK_BYTES: u64 = 256 << 20;

/// Most BAT entries read (16 MiB of table): covers the 2040 GiB limit with blocks of
/// 512 KiB or more. A smaller block size on a disk that large is refused.
pub const MAX_BAT_ENTRIES: u64 = 1 << 22;

/// Largest parent locator read (a path of 32 Ki UTF-16 units).
pub const MAX_LOCATOR_BYTES: u64 = 64 << 10;

/// Bytes of sector bitmaps kept in memory per differencing disk.
pub const MAX_CACHED_BITMAP_BYTES: u64 = 8 << 20;

/// Unit size reported for fixed disks (read-ahead granularity only; nothing is decoded).
const FIXED_UNIT_BYTES: u64 = 1 << 20;

/// Number of parent locator entries in the dynamic header.
const LOCATOR_COUNT: usize = 8;

/// A VHD rule was broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VhdError {
    /// Neither offset 0 nor the end of the source holds a footer cookie.
    #[error("not a VHD: no \"conectix\" footer at the start or the end ({len_bytes} bytes)")]
    NoFooter {
        /// Length of the source.
        len_bytes: u64,
    },
    /// The footer's checksum is wrong (qemu: "Incorrect header checksum").
    #[error("VHD footer checksum is {stored:#010x}, computed {computed:#010x}")]
    FooterChecksum {
        /// Checksum field.
        stored: u32,
        /// One's complement of the byte sum.
        computed: u32,
    },
    /// A disk type other than fixed, dynamic or differencing.
    #[error("VHD disk type {disk_type} is not fixed (2), dynamic (3) or differencing (4)")]
    UnsupportedDiskType {
        /// Disk type field.
        disk_type: u32,
    },
    /// The footer at the end of the file names another type than fixed (qemu: "invalid
    /// VPC image"); dynamic disks carry a footer copy at offset 0.
    #[error(
        "VHD footer at the end of the file says disk type {disk_type}, and offset 0 has no footer copy"
    )]
    EndFooterNotFixed {
        /// Disk type field.
        disk_type: u32,
    },
    /// The virtual size exceeds the format's 2040 GiB limit (qemu: EFBIG).
    #[error("VHD virtual size {sectors} sectors exceeds the limit of {limit_sectors}")]
    VirtualSizeTooLarge {
        /// Sectors claimed.
        sectors: u64,
        /// The limit.
        limit_sectors: u64,
    },
    /// A fixed disk's data is shorter than its virtual size.
    #[error("VHD fixed disk of {virtual_size} bytes holds only {data_bytes} bytes of data")]
    FixedTooShort {
        /// Virtual size.
        virtual_size: u64,
        /// Bytes before the footer.
        data_bytes: u64,
    },
    /// The dynamic header lies (partly) outside the file.
    #[error("VHD dynamic header at {offset} lies outside the {file_len}-byte file")]
    DynamicHeaderOutOfBounds {
        /// Footer data offset.
        offset: u64,
        /// File length.
        file_len: u64,
    },
    /// The dynamic header cookie is not "cxsparse".
    #[error("VHD dynamic header cookie is {found:02x?}, not \"cxsparse\"")]
    BadDynamicCookie {
        /// Bytes found.
        found: [u8; 8],
    },
    /// The dynamic header's checksum is wrong.
    #[error("VHD dynamic header checksum is {stored:#010x}, computed {computed:#010x}")]
    DynamicHeaderChecksum {
        /// Checksum field.
        stored: u32,
        /// One's complement of the byte sum.
        computed: u32,
    },
    /// Block size not a power of two in the accepted range (qemu: "Invalid block size").
    #[error("VHD block size {block_bytes} is not a power of two in {min}..={max}")]
    InvalidBlockSize {
        /// Block size field.
        block_bytes: u64,
        /// Smallest accepted.
        min: u64,
        /// Largest accepted.
        max: u64,
    },
    /// The BAT has fewer entries than the disk needs.
    #[error("VHD block table has {entries} entries, the {virtual_size}-byte disk needs {needed}")]
    TableTooSmall {
        /// max table entries.
        entries: u64,
        /// Entries needed.
        needed: u64,
        /// Virtual size.
        virtual_size: u64,
    },
    /// The BAT the disk needs is larger than accepted.
    #[error("VHD block table needs {entries} entries, above the limit of {limit}")]
    TableTooLarge {
        /// Entries needed.
        entries: u64,
        /// The limit.
        limit: u64,
    },
    /// The BAT lies (partly) outside the file.
    #[error("VHD block table at {offset} (+{bytes} bytes) lies outside the {file_len}-byte file")]
    TableOutOfBounds {
        /// Table offset.
        offset: u64,
        /// Bytes of the entries used.
        bytes: u64,
        /// File length.
        file_len: u64,
    },
    /// A BAT entry points a block (bitmap and data) past the end of the file.
    #[error(
        "VHD block {block} at sector {sector} ends past the end of the {file_len}-byte file (truncated image?)"
    )]
    BlockOutOfBounds {
        /// Block index.
        block: u64,
        /// BAT entry.
        sector: u64,
        /// File length.
        file_len: u64,
    },
    /// A parent locator's data lies (partly) outside the file or is larger than accepted.
    #[error(
        "VHD parent locator {index} at {offset} (+{len} bytes) is outside the file or too large"
    )]
    LocatorOutOfBounds {
        /// Locator index (0..8).
        index: usize,
        /// Data offset.
        offset: u64,
        /// Data length.
        len: u64,
    },
    /// `map` outside the disk or for zero bytes (a caller bug).
    #[error(
        "VHD map of {max_len} bytes at offset {offset} is outside the {virtual_size}-byte disk"
    )]
    MapOutOfRange {
        /// Offset asked for.
        offset: u64,
        /// Length asked for.
        max_len: u64,
        /// Size of the disk.
        virtual_size: u64,
    },
    /// `decode_unit` was called: VHD has no encoded units.
    #[error("VHD unit {unit} is not an encoded unit (VHD data is stored verbatim)")]
    NotAnEncodedUnit {
        /// Unit asked for.
        unit: u64,
    },
}

impl From<VhdError> for crate::error::Error {
    fn from(e: VhdError) -> Self {
        super::DiskError::Vhd(e).into()
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(v)
}

/// The VHD checksum: one's complement of the sum of all bytes, with the 4 checksum bytes
/// at `checksum_at` counted as zero.
pub fn checksum(bytes: &[u8], checksum_at: usize) -> u32 {
    let sum = bytes
        .iter()
        .enumerate()
        .filter(|(i, _)| !(checksum_at..checksum_at + 4).contains(i))
        .fold(0u32, |s, (_, &b)| s.wrapping_add(u32::from(b)));
    !sum
}

/// The hard disk footer (VHD specification "Hard Disk Footer Format"), fields in spec order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VhdFooter {
    /// "conectix".
    pub cookie: [u8; 8],
    /// Features (bit 0 temporary, bit 1 reserved).
    pub features: u32,
    /// File format version (0x00010000).
    pub file_format_version: u32,
    /// Absolute offset of the dynamic header; all ones for fixed disks.
    pub data_offset: u64,
    /// Seconds since 2000-01-01 UTC.
    pub timestamp: u32,
    /// Creator application (`vpc `, `qemu`, `win `, `d2v `, ...).
    pub creator_application: [u8; 4],
    /// Creator version.
    pub creator_version: u32,
    /// Creator host OS.
    pub creator_host_os: u32,
    /// Size at creation, bytes.
    pub original_size: u64,
    /// Current size, bytes.
    pub current_size: u64,
    /// Geometry: cylinders.
    pub cylinders: u16,
    /// Geometry: heads.
    pub heads: u8,
    /// Geometry: sectors per track.
    pub sectors_per_track: u8,
    /// Disk type (2 fixed, 3 dynamic, 4 differencing).
    pub disk_type: u32,
    /// Checksum of the footer.
    pub checksum: u32,
    /// Unique id (a parent's is recorded in its children).
    pub unique_id: [u8; 16],
    /// Saved state flag.
    pub saved_state: u8,
}

impl VhdFooter {
    /// Size on disk.
    pub const SIZE: usize = 512;
    /// Offset of the checksum field.
    pub const CHECKSUM_AT: usize = 64;

    /// Decodes the fields (no validation).
    pub fn parse(b: &[u8; Self::SIZE]) -> Self {
        let mut cookie = [0u8; 8];
        cookie.copy_from_slice(&b[0..8]);
        let mut unique_id = [0u8; 16];
        unique_id.copy_from_slice(&b[68..84]);
        VhdFooter {
            cookie,
            features: be32(b, 8),
            file_format_version: be32(b, 12),
            data_offset: be64(b, 16),
            timestamp: be32(b, 24),
            creator_application: [b[28], b[29], b[30], b[31]],
            creator_version: be32(b, 32),
            creator_host_os: be32(b, 36),
            original_size: be64(b, 40),
            current_size: be64(b, 48),
            cylinders: be16(b, 56),
            heads: b[58],
            sectors_per_track: b[59],
            disk_type: be32(b, 60),
            checksum: be32(b, 64),
            unique_id,
            saved_state: b[84],
        }
    }

    /// Encodes the footer (reserved bytes zero); the checksum field is written as stored.
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..8].copy_from_slice(&self.cookie);
        b[8..12].copy_from_slice(&self.features.to_be_bytes());
        b[12..16].copy_from_slice(&self.file_format_version.to_be_bytes());
        b[16..24].copy_from_slice(&self.data_offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.timestamp.to_be_bytes());
        b[28..32].copy_from_slice(&self.creator_application);
        b[32..36].copy_from_slice(&self.creator_version.to_be_bytes());
        b[36..40].copy_from_slice(&self.creator_host_os.to_be_bytes());
        b[40..48].copy_from_slice(&self.original_size.to_be_bytes());
        b[48..56].copy_from_slice(&self.current_size.to_be_bytes());
        b[56..58].copy_from_slice(&self.cylinders.to_be_bytes());
        b[58] = self.heads;
        b[59] = self.sectors_per_track;
        b[60..64].copy_from_slice(&self.disk_type.to_be_bytes());
        b[64..68].copy_from_slice(&self.checksum.to_be_bytes());
        b[68..84].copy_from_slice(&self.unique_id);
        b[84] = self.saved_state;
        b
    }

    /// Sectors of the CHS geometry.
    pub fn geometry_sectors(&self) -> u64 {
        u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors_per_track)
    }

    /// The virtual size in sectors, as qemu 10 decides it (`vpc_ignore_current_size` in
    /// `block/vpc.c`, since the 2025 change "vpc: Read images exported from Azure
    /// correctly"): the CHS geometry for the creators that size disks by geometry, Virtual
    /// PC (`vpc `) and old qemu (`qemu`), unless the geometry is the maximum one (then the
    /// disk may be larger than any geometry can say); the footer's current size for every
    /// other creator (Hyper-V `win `, Disk2vhd `d2v `, XenServer `tap\0`, Azure `wa\0\0`,
    /// newer qemu `qem2`, ...). qemu 7.2 used the geometry for every creator not on a list
    /// of known current-size creators; the two rules agree on all those creators.
    pub fn virtual_sectors(&self) -> u64 {
        let by_geometry = matches!(&self.creator_application, b"vpc " | b"qemu");
        let chs = self.geometry_sectors();
        if by_geometry && chs != MAX_GEOMETRY_SECTORS {
            chs
        } else {
            self.current_size / SECTOR_BYTES
        }
    }

    /// Checks cookie, checksum and disk type against the raw bytes `raw` it came from.
    fn validate(&self, raw: &[u8; Self::SIZE]) -> Result<(), VhdError> {
        let computed = checksum(raw, Self::CHECKSUM_AT);
        if computed != self.checksum {
            return Err(VhdError::FooterChecksum {
                stored: self.checksum,
                computed,
            });
        }
        if !matches!(
            self.disk_type,
            DISK_TYPE_FIXED | DISK_TYPE_DYNAMIC | DISK_TYPE_DIFFERENCING
        ) {
            return Err(VhdError::UnsupportedDiskType {
                disk_type: self.disk_type,
            });
        }
        let sectors = self.virtual_sectors();
        if sectors > MAX_VIRTUAL_SECTORS {
            return Err(VhdError::VirtualSizeTooLarge {
                sectors,
                limit_sectors: MAX_VIRTUAL_SECTORS,
            });
        }
        Ok(())
    }
}

/// One parent locator entry of the dynamic header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParentLocator {
    /// Platform code (`W2ru`, `W2ku`, `MacX`, ...), 0 for an unused entry.
    pub platform_code: [u8; 4],
    /// Platform data space (sectors, or bytes for some producers).
    pub data_space: u32,
    /// Length of the locator data in bytes.
    pub data_length: u32,
    /// Absolute offset of the locator data.
    pub data_offset: u64,
}

/// The dynamic disk header ("Dynamic Disk Header Format"), fields in spec order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicDiskHeader {
    /// "cxsparse".
    pub cookie: [u8; 8],
    /// Unused (all ones).
    pub data_offset: u64,
    /// Absolute offset of the BAT.
    pub table_offset: u64,
    /// Header version (0x00010000).
    pub header_version: u32,
    /// Entries in the BAT.
    pub max_table_entries: u32,
    /// Block size in bytes.
    pub block_size: u32,
    /// Checksum of the header.
    pub checksum: u32,
    /// Unique id of the parent.
    pub parent_unique_id: [u8; 16],
    /// Parent's modification time.
    pub parent_timestamp: u32,
    /// Parent's file name, UTF-16BE, NUL-padded.
    pub parent_unicode_name: [u8; 512],
    /// The eight parent locators.
    pub parent_locators: [ParentLocator; LOCATOR_COUNT],
}

impl DynamicDiskHeader {
    /// Size on disk.
    pub const SIZE: usize = 1024;
    /// Offset of the checksum field.
    pub const CHECKSUM_AT: usize = 36;

    /// Decodes the fields (no validation).
    pub fn parse(b: &[u8; Self::SIZE]) -> Self {
        let mut cookie = [0u8; 8];
        cookie.copy_from_slice(&b[0..8]);
        let mut parent_unique_id = [0u8; 16];
        parent_unique_id.copy_from_slice(&b[40..56]);
        let mut parent_unicode_name = [0u8; 512];
        parent_unicode_name.copy_from_slice(&b[64..576]);
        let mut parent_locators = [ParentLocator::default(); LOCATOR_COUNT];
        for (i, l) in parent_locators.iter_mut().enumerate() {
            let at = 576 + 24 * i;
            *l = ParentLocator {
                platform_code: [b[at], b[at + 1], b[at + 2], b[at + 3]],
                data_space: be32(b, at + 4),
                data_length: be32(b, at + 8),
                data_offset: be64(b, at + 16),
            };
        }
        DynamicDiskHeader {
            cookie,
            data_offset: be64(b, 8),
            table_offset: be64(b, 16),
            header_version: be32(b, 24),
            max_table_entries: be32(b, 28),
            block_size: be32(b, 32),
            checksum: be32(b, 36),
            parent_unique_id,
            parent_timestamp: be32(b, 56),
            parent_unicode_name,
            parent_locators,
        }
    }

    /// Encodes the header (reserved bytes zero); the checksum field is written as stored.
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..8].copy_from_slice(&self.cookie);
        b[8..16].copy_from_slice(&self.data_offset.to_be_bytes());
        b[16..24].copy_from_slice(&self.table_offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.header_version.to_be_bytes());
        b[28..32].copy_from_slice(&self.max_table_entries.to_be_bytes());
        b[32..36].copy_from_slice(&self.block_size.to_be_bytes());
        b[36..40].copy_from_slice(&self.checksum.to_be_bytes());
        b[40..56].copy_from_slice(&self.parent_unique_id);
        b[56..60].copy_from_slice(&self.parent_timestamp.to_be_bytes());
        b[64..576].copy_from_slice(&self.parent_unicode_name);
        for (i, l) in self.parent_locators.iter().enumerate() {
            let at = 576 + 24 * i;
            b[at..at + 4].copy_from_slice(&l.platform_code);
            b[at + 4..at + 8].copy_from_slice(&l.data_space.to_be_bytes());
            b[at + 8..at + 12].copy_from_slice(&l.data_length.to_be_bytes());
            b[at + 16..at + 24].copy_from_slice(&l.data_offset.to_be_bytes());
        }
        b
    }
}

/// Where a fixed VHD's footer starts, if the source ends with one: the last 512 bytes, or
/// the last 511 bytes of a pre-2004 image.
pub fn fixed_footer_offset(source: &dyn ReadAt) -> Result<Option<u64>> {
    let len = source.len();
    for footer in [FOOTER_BYTES, LEGACY_FOOTER_BYTES] {
        if let Some(at) = len.checked_sub(footer) {
            let mut cookie = [0u8; 8];
            if source.read_at(at, &mut cookie)? == 8 && cookie == FOOTER_COOKIE {
                return Ok(Some(at));
            }
        }
    }
    Ok(None)
}

/// The block layout of a dynamic or differencing disk.
struct Blocks {
    block_bytes: u64,
    /// Bytes of the sector bitmap that precedes each block's data (a multiple of 512).
    bitmap_bytes: u64,
    /// BAT entries for the blocks the disk uses, all checked.
    bat: Box<[u32]>,
    /// Cached bitmaps by block (differencing disks only).
    bitmaps: Option<Mutex<LruCache<u64, Arc<[u8]>>>>,
}

/// A parsed VHD.
pub struct Vhd {
    source: Arc<dyn ReadAt>,
    footer: VhdFooter,
    header: Option<DynamicDiskHeader>,
    virtual_size: u64,
    blocks: Option<Blocks>,
    parent: Option<ParentRef>,
}

impl std::fmt::Debug for Vhd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vhd")
            .field("footer", &self.footer)
            .field("virtual_size", &self.virtual_size)
            .field("parent", &self.parent)
            .finish_non_exhaustive()
    }
}

impl Vhd {
    /// Parses the footer and tables of the VHD held in `source`. Reads metadata only.
    pub fn open(source: Arc<dyn ReadAt>) -> Result<Self> {
        Self::open_in(source, &Budget::default_metadata())
    }

    /// [`Vhd::open`], counting the BAT and the bitmap cache against `budget`.
    pub fn open_in(source: Arc<dyn ReadAt>, budget: &Budget) -> Result<Self> {
        Self::open_inner(source, budget).map_err(|e| e.context("opening VHD"))
    }

    fn open_inner(source: Arc<dyn ReadAt>, budget: &Budget) -> Result<Self> {
        let src: &dyn ReadAt = &*source;
        let file_len = src.len();
        // qemu's order: the footer copy at 0 (dynamic and differencing disks), else the
        // footer at the end, which must then say "fixed".
        let mut raw = [0u8; VhdFooter::SIZE];
        let head_ok = src.read_at(0, &mut raw)? == VhdFooter::SIZE && raw[..8] == FOOTER_COOKIE;
        let (footer_at, at_end) = if head_ok {
            (0, false)
        } else {
            let at = fixed_footer_offset(src)?.ok_or(VhdError::NoFooter {
                len_bytes: file_len,
            })?;
            raw = [0u8; VhdFooter::SIZE];
            // A 511-byte legacy footer lacks its last (reserved) byte: read as zero.
            let n = src.read_at(at, &mut raw)?;
            raw[n..].fill(0);
            (at, true)
        };
        let footer = VhdFooter::parse(&raw);
        footer.validate(&raw)?;
        if at_end && footer.disk_type != DISK_TYPE_FIXED {
            return Err(VhdError::EndFooterNotFixed {
                disk_type: footer.disk_type,
            }
            .into());
        }
        // OK to multiply: virtual_sectors <= MAX_VIRTUAL_SECTORS (validated).
        let virtual_size = footer.virtual_sectors() * SECTOR_BYTES;
        if footer.disk_type == DISK_TYPE_FIXED {
            // Data precedes the footer (a fixed footer found at 0 means data from 0, as qemu
            // reads it).
            let data_bytes = if at_end { footer_at } else { file_len };
            if virtual_size > data_bytes {
                return Err(VhdError::FixedTooShort {
                    virtual_size,
                    data_bytes,
                }
                .into());
            }
            return Ok(Vhd {
                source,
                footer,
                header: None,
                virtual_size,
                blocks: None,
                parent: None,
            });
        }

        let header_end = footer
            .data_offset
            .checked_add(DYNAMIC_HEADER_BYTES)
            .filter(|&e| e <= file_len);
        if header_end.is_none() {
            return Err(VhdError::DynamicHeaderOutOfBounds {
                offset: footer.data_offset,
                file_len,
            }
            .into());
        }
        let mut hraw = [0u8; DynamicDiskHeader::SIZE];
        src.read_exact_at(footer.data_offset, &mut hraw)?;
        let header = DynamicDiskHeader::parse(&hraw);
        if header.cookie != DYNAMIC_COOKIE {
            return Err(VhdError::BadDynamicCookie {
                found: header.cookie,
            }
            .into());
        }
        let computed = checksum(&hraw, DynamicDiskHeader::CHECKSUM_AT);
        if computed != header.checksum {
            return Err(VhdError::DynamicHeaderChecksum {
                stored: header.checksum,
                computed,
            }
            .into());
        }
        let block_bytes = u64::from(header.block_size);
        if !block_bytes.is_power_of_two()
            || !(MIN_BLOCK_BYTES..=MAX_BLOCK_BYTES).contains(&block_bytes)
        {
            return Err(VhdError::InvalidBlockSize {
                block_bytes,
                min: MIN_BLOCK_BYTES,
                max: MAX_BLOCK_BYTES,
            }
            .into());
        }
        // One bit per sector, rounded up to whole sectors (at most 64 KiB).
        let bitmap_bytes = (block_bytes / SECTOR_BYTES / 8).next_multiple_of(SECTOR_BYTES);
        let needed = virtual_size.div_ceil(block_bytes);
        let entries = u64::from(header.max_table_entries);
        if entries < needed {
            return Err(VhdError::TableTooSmall {
                entries,
                needed,
                virtual_size,
            }
            .into());
        }
        if needed > MAX_BAT_ENTRIES {
            return Err(VhdError::TableTooLarge {
                entries: needed,
                limit: MAX_BAT_ENTRIES,
            }
            .into());
        }
        let table_bytes = needed * 4; // <= 16 MiB
        if header
            .table_offset
            .checked_add(table_bytes)
            .is_none_or(|e| e > file_len)
        {
            return Err(VhdError::TableOutOfBounds {
                offset: header.table_offset,
                bytes: table_bytes,
                file_len,
            }
            .into());
        }
        // The raw table and its decoded copy coexist while it is parsed.
        budget.charge("VHD block allocation table", table_bytes * 2)?;
        let raw_bat = read_vec_at(
            src,
            "VHD block allocation table",
            header.table_offset,
            table_bytes,
            MAX_BAT_ENTRIES * 4,
        )?;
        let bat: Box<[u32]> = raw_bat
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        for (block, &entry) in bat.iter().enumerate() {
            if entry == UNALLOCATED {
                continue;
            }
            // entry < 2^32, so entry*512 + 64 KiB + 256 MiB cannot overflow.
            let end = u64::from(entry) * SECTOR_BYTES + bitmap_bytes + block_bytes;
            if end > file_len {
                return Err(VhdError::BlockOutOfBounds {
                    block: block as u64,
                    sector: u64::from(entry),
                    file_len,
                }
                .into());
            }
        }
        budget.release(table_bytes);
        let differencing = footer.disk_type == DISK_TYPE_DIFFERENCING;
        if differencing {
            // The cache may hold at most one bitmap per allocated block.
            let allocated = bat.iter().filter(|&&e| e != UNALLOCATED).count() as u64;
            let count = (MAX_CACHED_BITMAP_BYTES / bitmap_bytes).clamp(1, allocated.max(1));
            budget.charge("VHD sector bitmap cache", count * (bitmap_bytes + 64))?;
        }
        let bitmaps = differencing.then(|| {
            let count = (MAX_CACHED_BITMAP_BYTES / bitmap_bytes).max(1);
            let count = usize::try_from(count).unwrap_or(usize::MAX);
            Mutex::new(LruCache::new(
                NonZeroUsize::new(count).unwrap_or(NonZeroUsize::MIN),
            ))
        });
        let parent = if differencing {
            Some(parent_names(src, &header)?)
        } else {
            None
        };
        Ok(Vhd {
            source,
            footer,
            header: Some(header),
            virtual_size,
            blocks: Some(Blocks {
                block_bytes,
                bitmap_bytes,
                bat,
                bitmaps,
            }),
            parent,
        })
    }

    /// The footer in force.
    pub fn footer(&self) -> &VhdFooter {
        &self.footer
    }

    /// The dynamic disk header (dynamic and differencing disks).
    pub fn dynamic_header(&self) -> Option<&DynamicDiskHeader> {
        self.header.as_ref()
    }

    /// The sector bitmap of `block` (allocated at `entry`), from the cache or the file.
    fn bitmap(&self, b: &Blocks, block: u64, entry: u32) -> Result<Arc<[u8]>> {
        let cache = b.bitmaps.as_ref();
        if let Some(c) = cache {
            let mut c = c.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(bits) = c.get(&block) {
                return Ok(bits.clone());
            }
        }
        // Checked at open: the block, bitmap first, lies inside the file.
        let bits: Arc<[u8]> = read_vec_at(
            &*self.source,
            "VHD sector bitmap",
            u64::from(entry) * SECTOR_BYTES,
            b.bitmap_bytes,
            MAX_BLOCK_BYTES / SECTOR_BYTES / 8,
        )?
        .into();
        if let Some(c) = cache {
            c.lock()
                .unwrap_or_else(|p| p.into_inner())
                .put(block, bits.clone());
        }
        Ok(bits)
    }
}

/// Decodes UTF-16 code units up to the first NUL (lossy).
fn utf16_until_nul(units: impl Iterator<Item = u16>) -> String {
    let units: Vec<u16> = units.take_while(|&u| u != 0).collect();
    String::from_utf16_lossy(&units)
}

/// The parent names of a differencing disk: the locators in the order relative (`W2ru`),
/// URL (`MacX`), absolute (`W2ku`), deprecated Windows (`Wi2r`, `Wi2k`), then the parent's
/// unicode name.
fn parent_names(src: &dyn ReadAt, h: &DynamicDiskHeader) -> Result<ParentRef> {
    let file_len = src.len();
    let mut by_code: Vec<(usize, String)> = Vec::new();
    for (index, l) in h.parent_locators.iter().enumerate() {
        let rank = match &l.platform_code {
            b"W2ru" => 0,
            b"MacX" => 1,
            b"W2ku" => 2,
            b"Wi2r" => 3,
            b"Wi2k" => 4,
            _ => continue, // unused entry, or a Mac alias blob
        };
        let len = u64::from(l.data_length);
        if len == 0 {
            continue;
        }
        if len > MAX_LOCATOR_BYTES || l.data_offset.checked_add(len).is_none_or(|e| e > file_len) {
            return Err(VhdError::LocatorOutOfBounds {
                index,
                offset: l.data_offset,
                len,
            }
            .into());
        }
        let data = read_vec_at(
            src,
            "VHD parent locator",
            l.data_offset,
            len,
            MAX_LOCATOR_BYTES,
        )?;
        let name = match &l.platform_code {
            b"W2ru" | b"W2ku" => utf16_until_nul(
                data.chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]])),
            ),
            _ => {
                let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                String::from_utf8_lossy(&data[..end]).into_owned()
            }
        };
        if !name.trim().is_empty() {
            by_code.push((rank, name));
        }
    }
    by_code.sort_by_key(|(rank, _)| *rank);
    let mut names: Vec<String> = by_code.into_iter().map(|(_, n)| n).collect();
    let unicode = utf16_until_nul(
        h.parent_unicode_name
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]])),
    );
    if !unicode.trim().is_empty() {
        names.push(unicode);
    }
    Ok(ParentRef {
        names,
        format: None,
    })
}

impl DiskImage for Vhd {
    fn format(&self) -> DiskFormat {
        match self.footer.disk_type {
            DISK_TYPE_FIXED => DiskFormat::VhdFixed,
            DISK_TYPE_DIFFERENCING => DiskFormat::VhdDifferencing,
            _ => DiskFormat::VhdDynamic,
        }
    }

    fn virtual_size(&self) -> u64 {
        self.virtual_size
    }

    fn unit_bytes(&self) -> u64 {
        self.blocks
            .as_ref()
            .map_or(FIXED_UNIT_BYTES, |b| b.block_bytes)
    }

    fn map(&self, offset: u64, max_len: u64) -> Result<Extent> {
        if offset >= self.virtual_size || max_len == 0 {
            return Err(VhdError::MapOutOfRange {
                offset,
                max_len,
                virtual_size: self.virtual_size,
            }
            .into());
        }
        let max_len = max_len.min(self.virtual_size - offset);
        let Some(b) = &self.blocks else {
            return Ok(Extent::Stored {
                source_offset: offset,
                len: max_len,
            });
        };
        let block = offset / b.block_bytes;
        let in_block = offset % b.block_bytes;
        let len = max_len.min(b.block_bytes - in_block);
        let entry = usize::try_from(block)
            .ok()
            .and_then(|i| b.bat.get(i))
            .copied()
            .unwrap_or(UNALLOCATED);
        if entry == UNALLOCATED {
            return Ok(Extent::Unallocated { len });
        }
        // Checked at open: the whole block is inside the file.
        let data = u64::from(entry) * SECTOR_BYTES + b.bitmap_bytes;
        if b.bitmaps.is_none() {
            return Ok(Extent::Stored {
                source_offset: data + in_block,
                len,
            });
        }
        // Differencing: the run of sectors sharing the first sector's bit (MSB of byte 0
        // is the block's first sector).
        let bits = self.bitmap(b, block, entry)?;
        let bit = |sector: u64| -> bool {
            let byte = usize::try_from(sector / 8).ok().and_then(|i| bits.get(i));
            byte.is_some_and(|&v| v & (0x80 >> (sector % 8)) != 0)
        };
        let first = in_block / SECTOR_BYTES;
        let present = bit(first);
        let end = in_block + len;
        let mut sector = first + 1;
        while sector * SECTOR_BYTES < end && bit(sector) == present {
            sector += 1;
        }
        let run = (sector * SECTOR_BYTES).min(end) - in_block;
        Ok(if present {
            Extent::Stored {
                source_offset: data + in_block,
                len: run,
            }
        } else {
            Extent::Unallocated { len: run }
        })
    }

    fn decode_unit(&self, unit: u64, _out: &mut [u8]) -> Result<()> {
        Err(VhdError::NotAnEncodedUnit { unit }.into())
    }

    fn source(&self) -> &dyn ReadAt {
        &*self.source
    }

    fn parent(&self) -> Option<ParentRef> {
        self.parent.clone()
    }
}

#[cfg(test)]
#[path = "vhd_tests.rs"]
mod tests;
