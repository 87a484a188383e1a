//! On-disk structures of a VMDK sparse extent: the 512-byte `SparseExtentHeader` and the
//! stream-optimized markers (docs/formats.md §4.1, §4.2, §4.5).
//!
//! `parse` only decodes bytes; `validate` applies the rules that need nothing but the header
//! itself (docs/formats.md §6 rules 15-17). Checks against the extent's length live in the
//! caller. `encode` is the inverse of `parse`, used by the writer and by test fixtures.

use super::error::VmdkError;
use crate::disk::{MAX_VIRTUAL_BYTES, SECTOR_BYTES};

/// "KDMV": the first four bytes of a sparse extent (magicNumber 0x564D444B, LE).
pub const SPARSE_MAGIC: [u8; 4] = *b"KDMV";

/// Highest header version any producer writes (3 = CBT-capable; qemu and open-vmdk refuse
/// more).
pub const MAX_VERSION: u32 = 3;

/// Flag bit 0: the newline-detection bytes are valid and must be checked.
pub const FLAG_NEWLINE_DETECT: u32 = 1 << 0;
/// Flag bit 1: a redundant grain directory and tables exist (ignored for reading).
pub const FLAG_REDUNDANT_GRAIN_TABLE: u32 = 1 << 1;
/// Flag bit 2: a grain table entry of 1 means "zeroed grain".
pub const FLAG_ZEROED_GRAIN_GTE: u32 = 1 << 2;
/// Flag bit 16 (incompatible): grains are compressed.
pub const FLAG_COMPRESSED: u32 = 1 << 16;
/// Flag bit 17 (incompatible): every grain and metadata block is preceded by a marker.
pub const FLAG_MARKERS: u32 = 1 << 17;
/// The incompatible half of the flags: a reader must understand every bit set there.
pub const INCOMPATIBLE_FLAGS_MASK: u32 = 0xFFFF_0000;
/// Incompatible flags this reader understands.
pub const KNOWN_INCOMPATIBLE_FLAGS: u32 = FLAG_COMPRESSED | FLAG_MARKERS;

/// compressAlgorithm 0: grains stored verbatim.
pub const COMPRESSION_NONE: u16 = 0;
/// compressAlgorithm 1: DEFLATE (in practice zlib-wrapped, docs/formats.md §4.5).
pub const COMPRESSION_DEFLATE: u16 = 1;

/// gdOffset value meaning "the grain directory is in the footer at the end of the stream".
pub const GD_AT_END: u64 = u64::MAX;

/// The newline-detection bytes `\n`, ` `, `\r`, `\n` at offsets 73..77.
pub const NEWLINE_BYTES: [u8; 4] = [0x0A, 0x20, 0x0D, 0x0A];

/// Smallest grain accepted, in sectors (4 KiB; the spec says "> 8", VirtualBox accepts 8).
pub const MIN_GRAIN_SECTORS: u64 = 8;
/// Largest grain accepted, in sectors (1 MiB, docs/formats.md §6 rule 16): every decode
/// allocates a grain, so this bounds the memory one read can demand.
pub const MAX_GRAIN_SECTORS: u64 = 2048;

// A grain is the decoded unit: the largest grain must fit the engine's unit limit.
const _: () = assert!(MAX_GRAIN_SECTORS * SECTOR_BYTES <= crate::disk::MAX_UNIT_BYTES);

/// Fewest grain table entries per table accepted (open-vmdk: one sector of entries).
pub const MIN_GTES_PER_GT: u32 = 128;
/// Most grain table entries per table accepted (qemu refuses more; VMware always writes 512).
pub const MAX_GTES_PER_GT: u32 = 512;

/// Largest grain directory accepted, in entries (4 Mi entries = 16 MiB in memory). At the
/// default geometry (512 entries x 64 KiB grains) this covers 128 TiB, above
/// [`MAX_VIRTUAL_BYTES`]; only absurd small-grain geometries hit it (qemu caps at 32 Mi).
pub const MAX_GRAIN_DIRECTORY_ENTRIES: u64 = 1 << 22;

/// Size of one grain directory or grain table entry (a `u32le` sector number).
pub const TABLE_ENTRY_BYTES: u64 = 4;

/// Reads a little-endian u16 at `at` of a fixed-size header.
fn le16(b: &[u8; SparseExtentHeader::SIZE], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// Reads a little-endian u32 at `at` of a fixed-size header.
fn le32(b: &[u8; SparseExtentHeader::SIZE], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads a little-endian u64 at `at` (unaligned) of a fixed-size header.
fn le64(b: &[u8; SparseExtentHeader::SIZE], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// The hosted sparse extent header (VMDK 5.0 technote "SparseExtentHeader"), fields in spec
/// order. Also the payload of a stream-optimized footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SparseExtentHeader {
    /// magicNumber: "KDMV".
    pub magic_number: [u8; 4],
    /// version: 1, 2 or 3.
    pub version: u32,
    /// flags (see the `FLAG_*` constants).
    pub flags: u32,
    /// capacity: virtual size in sectors.
    pub capacity_sectors: u64,
    /// grainSize: sectors per grain.
    pub grain_sectors: u64,
    /// descriptorOffset: sector of the embedded descriptor, 0 for none.
    pub descriptor_offset_sectors: u64,
    /// descriptorSize: sectors of the embedded descriptor.
    pub descriptor_size_sectors: u64,
    /// numGTEsPerGT: entries per grain table.
    pub num_gtes_per_gt: u32,
    /// rgdOffset: sector of the redundant grain directory.
    pub rgd_offset_sectors: u64,
    /// gdOffset: sector of the grain directory, or [`GD_AT_END`].
    pub gd_offset_sectors: u64,
    /// overHead: sectors of metadata before the first grain.
    pub overhead_sectors: u64,
    /// uncleanShutdown (ignored for read-only access).
    pub unclean_shutdown: u8,
    /// singleEndLineChar, nonEndLineChar, doubleEndLineChar1, doubleEndLineChar2.
    pub newline_bytes: [u8; 4],
    /// compressAlgorithm.
    pub compress_algorithm: u16,
}

impl SparseExtentHeader {
    /// Size of the header on disk: one sector.
    pub const SIZE: usize = 512;

    /// Decodes the header fields (no validation).
    pub fn parse(b: &[u8; Self::SIZE]) -> Self {
        SparseExtentHeader {
            magic_number: [b[0], b[1], b[2], b[3]],
            version: le32(b, 4),
            flags: le32(b, 8),
            capacity_sectors: le64(b, 12),
            grain_sectors: le64(b, 20),
            descriptor_offset_sectors: le64(b, 28),
            descriptor_size_sectors: le64(b, 36),
            num_gtes_per_gt: le32(b, 44),
            rgd_offset_sectors: le64(b, 48),
            gd_offset_sectors: le64(b, 56),
            overhead_sectors: le64(b, 64),
            unclean_shutdown: b[72],
            newline_bytes: [b[73], b[74], b[75], b[76]],
            compress_algorithm: le16(b, 77),
        }
    }

    /// Encodes the header into one sector (padding zero).
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..4].copy_from_slice(&self.magic_number);
        b[4..8].copy_from_slice(&self.version.to_le_bytes());
        b[8..12].copy_from_slice(&self.flags.to_le_bytes());
        b[12..20].copy_from_slice(&self.capacity_sectors.to_le_bytes());
        b[20..28].copy_from_slice(&self.grain_sectors.to_le_bytes());
        b[28..36].copy_from_slice(&self.descriptor_offset_sectors.to_le_bytes());
        b[36..44].copy_from_slice(&self.descriptor_size_sectors.to_le_bytes());
        b[44..48].copy_from_slice(&self.num_gtes_per_gt.to_le_bytes());
        b[48..56].copy_from_slice(&self.rgd_offset_sectors.to_le_bytes());
        b[56..64].copy_from_slice(&self.gd_offset_sectors.to_le_bytes());
        b[64..72].copy_from_slice(&self.overhead_sectors.to_le_bytes());
        b[72] = self.unclean_shutdown;
        b[73..77].copy_from_slice(&self.newline_bytes);
        b[77..79].copy_from_slice(&self.compress_algorithm.to_le_bytes());
        b
    }

    /// Whether grains are compressed (flag bit 16).
    pub fn is_compressed(&self) -> bool {
        self.flags & FLAG_COMPRESSED != 0
    }

    /// Whether grains and metadata carry markers (flag bit 17): stream-optimized.
    pub fn has_markers(&self) -> bool {
        self.flags & FLAG_MARKERS != 0
    }

    /// Whether a grain table entry of 1 means a zeroed grain (flag bit 2).
    pub fn has_zeroed_grain_gte(&self) -> bool {
        self.flags & FLAG_ZEROED_GRAIN_GTE != 0
    }

    /// Whether the header is a descriptor wrapper: no capacity of its own, but an embedded
    /// descriptor naming other extents.
    pub fn is_descriptor_wrapper(&self) -> bool {
        self.capacity_sectors == 0 && self.descriptor_offset_sectors != 0
    }

    /// Checks the rules that need only the header (docs/formats.md §6 rules 15-17). On success
    /// the derived quantities ([`Geometry`]) cannot overflow.
    pub fn validate(&self) -> Result<Geometry, VmdkError> {
        if self.magic_number != SPARSE_MAGIC {
            return Err(VmdkError::BadMagic {
                found: self.magic_number,
            });
        }
        if self.version == 0 || self.version > MAX_VERSION {
            return Err(VmdkError::UnsupportedVersion {
                version: self.version,
            });
        }
        if self.flags & FLAG_NEWLINE_DETECT != 0 && self.newline_bytes != NEWLINE_BYTES {
            return Err(VmdkError::NewlineCheckFailed {
                found: self.newline_bytes,
            });
        }
        if self.flags & INCOMPATIBLE_FLAGS_MASK & !KNOWN_INCOMPATIBLE_FLAGS != 0 {
            return Err(VmdkError::UnknownIncompatibleFlags { flags: self.flags });
        }
        if self.has_markers() && !self.is_compressed() {
            return Err(VmdkError::MarkersWithoutCompression { flags: self.flags });
        }
        // qemu decides "compressed" from the algorithm, the spec from flag bit 16; when they
        // disagree the two readers would read different bytes, so refuse rather than guess.
        let expected_algorithm = if self.is_compressed() {
            COMPRESSION_DEFLATE
        } else {
            COMPRESSION_NONE
        };
        if self.compress_algorithm != expected_algorithm {
            return Err(VmdkError::UnsupportedCompression {
                algorithm: self.compress_algorithm,
                flags: self.flags,
            });
        }
        if !self.grain_sectors.is_power_of_two()
            || !(MIN_GRAIN_SECTORS..=MAX_GRAIN_SECTORS).contains(&self.grain_sectors)
        {
            return Err(VmdkError::InvalidGrainSize {
                grain_sectors: self.grain_sectors,
                min: MIN_GRAIN_SECTORS,
                max: MAX_GRAIN_SECTORS,
            });
        }
        if !self.num_gtes_per_gt.is_power_of_two()
            || !(MIN_GTES_PER_GT..=MAX_GTES_PER_GT).contains(&self.num_gtes_per_gt)
        {
            return Err(VmdkError::InvalidGrainTableSize {
                num_gtes_per_gt: self.num_gtes_per_gt,
            });
        }
        if self.capacity_sectors == 0 {
            return Err(VmdkError::ZeroCapacity);
        }
        let capacity_bytes = self
            .capacity_sectors
            .checked_mul(SECTOR_BYTES)
            .filter(|&b| b <= MAX_VIRTUAL_BYTES)
            .ok_or(VmdkError::CapacityTooLarge {
                capacity_sectors: self.capacity_sectors,
                limit_bytes: MAX_VIRTUAL_BYTES,
            })?;
        // Bounded above: grain <= 2048 sectors, table <= 512 entries.
        let gt_coverage_sectors = self.grain_sectors * u64::from(self.num_gtes_per_gt);
        let grains = self.capacity_sectors.div_ceil(self.grain_sectors);
        let gd_entries = self.capacity_sectors.div_ceil(gt_coverage_sectors);
        if gd_entries > MAX_GRAIN_DIRECTORY_ENTRIES {
            return Err(VmdkError::GrainDirectoryTooLarge {
                entries: gd_entries,
                limit: MAX_GRAIN_DIRECTORY_ENTRIES,
            });
        }
        Ok(Geometry {
            capacity_bytes,
            grain_sectors: self.grain_sectors,
            grain_bytes: self.grain_sectors * SECTOR_BYTES,
            gtes_per_gt: u64::from(self.num_gtes_per_gt),
            gt_sectors: (u64::from(self.num_gtes_per_gt) * TABLE_ENTRY_BYTES)
                .div_ceil(SECTOR_BYTES),
            grains,
            gd_entries,
            gd_sectors: (gd_entries * TABLE_ENTRY_BYTES).div_ceil(SECTOR_BYTES),
        })
    }
}

/// Quantities derived from a validated header; all products are known not to overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// capacity * 512.
    pub capacity_bytes: u64,
    /// grainSize.
    pub grain_sectors: u64,
    /// grainSize * 512.
    pub grain_bytes: u64,
    /// numGTEsPerGT.
    pub gtes_per_gt: u64,
    /// Sectors one grain table occupies (4 for 512 entries).
    pub gt_sectors: u64,
    /// Grains covering the capacity (the last may be partial).
    pub grains: u64,
    /// Entries in the grain directory.
    pub gd_entries: u64,
    /// Sectors the grain directory occupies.
    pub gd_sectors: u64,
}

/// Size of a grain marker's header: `lba u64` + `size u32` (docs/formats.md §4.5).
pub const GRAIN_MARKER_HEADER_BYTES: u64 = 12;
/// Size of the size-only header of a compressed grain in an extent without markers (flag 16
/// without 17; open-vmdk's reading): `size u32`.
pub const GRAIN_SIZE_HEADER_BYTES: u64 = 4;
/// Bytes of a marker that a reader looks at: `val u64`, `size u32`, `type u32`.
pub const MARKER_BYTES: usize = 16;

/// Slack above one grain that a compressed grain may take: deflate expands incompressible
/// data by a few bytes per 16 KiB block (docs/formats.md §6 rule 19: grainBytes + 1024).
pub const COMPRESSED_GRAIN_SLACK_BYTES: u64 = 1024;

/// Metadata marker types (docs/formats.md §4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerType {
    /// 0: end of stream.
    EndOfStream,
    /// 1: a grain table follows.
    GrainTable,
    /// 2: a grain directory follows.
    GrainDirectory,
    /// 3: the footer follows.
    Footer,
    /// 4: vSphere "progress" marker, undocumented; skipped.
    Progress,
    /// Any other value.
    Unknown(u32),
}

impl MarkerType {
    /// Marker type from its on-disk value.
    pub fn from_raw(raw: u32) -> Self {
        match raw {
            0 => MarkerType::EndOfStream,
            1 => MarkerType::GrainTable,
            2 => MarkerType::GrainDirectory,
            3 => MarkerType::Footer,
            4 => MarkerType::Progress,
            other => MarkerType::Unknown(other),
        }
    }

    /// On-disk value.
    pub fn raw(self) -> u32 {
        match self {
            MarkerType::EndOfStream => 0,
            MarkerType::GrainTable => 1,
            MarkerType::GrainDirectory => 2,
            MarkerType::Footer => 3,
            MarkerType::Progress => 4,
            MarkerType::Unknown(v) => v,
        }
    }
}

/// The first 16 bytes of a marker sector: a grain marker (`size != 0`: `val` is the grain's
/// LBA) or a metadata marker (`size == 0`: `val` is the payload's length in sectors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// LBA (grain marker) or number of payload sectors (metadata marker).
    pub val: u64,
    /// Compressed byte count (grain marker), 0 for metadata markers.
    pub size: u32,
    /// Type (metadata markers only; for grain markers these bytes are compressed data).
    pub marker_type: u32,
}

impl Marker {
    /// Size of the decoded part.
    pub const SIZE: usize = MARKER_BYTES;

    /// Decodes the 16 marker bytes.
    pub fn parse(b: &[u8; Self::SIZE]) -> Self {
        let mut val = [0u8; 8];
        val.copy_from_slice(&b[0..8]);
        Marker {
            val: u64::from_le_bytes(val),
            size: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            marker_type: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
        }
    }

    /// A metadata marker sector of `kind` with a payload of `payload_sectors`.
    pub fn metadata_sector(kind: MarkerType, payload_sectors: u64) -> [u8; 512] {
        let mut s = [0u8; 512];
        s[0..8].copy_from_slice(&payload_sectors.to_le_bytes());
        s[12..16].copy_from_slice(&kind.raw().to_le_bytes());
        s
    }

    /// Whether this is a grain marker.
    pub fn is_grain(&self) -> bool {
        self.size != 0
    }

    /// The metadata type (meaningful only when `!is_grain()`).
    pub fn kind(&self) -> MarkerType {
        MarkerType::from_raw(self.marker_type)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test
mod tests {
    use super::*;

    /// A VMware-style stream-optimized header, one annotated field per line.
    fn vmware_stream_header() -> SparseExtentHeader {
        SparseExtentHeader {
            magic_number: *b"KDMV",
            version: 3,
            flags: FLAG_NEWLINE_DETECT | FLAG_COMPRESSED | FLAG_MARKERS, // 0x30001
            capacity_sectors: 33_554_432,                                // 16 GiB
            grain_sectors: 128,                                          // 64 KiB
            descriptor_offset_sectors: 1,
            descriptor_size_sectors: 1,
            num_gtes_per_gt: 512,
            rgd_offset_sectors: 0,
            gd_offset_sectors: GD_AT_END,
            overhead_sectors: 128,
            unclean_shutdown: 0,
            newline_bytes: NEWLINE_BYTES,
            compress_algorithm: COMPRESSION_DEFLATE,
        }
    }

    #[test]
    fn encode_parse_round_trip_and_field_offsets() {
        let h = vmware_stream_header();
        let b = h.encode();
        assert_eq!(&b[0..4], b"KDMV");
        assert_eq!(b[4], 3); // version
        assert_eq!(&b[8..12], &[0x01, 0x00, 0x03, 0x00]); // flags 0x30001
        assert_eq!(&b[56..64], &[0xFF; 8]); // gdOffset GD_AT_END
        assert_eq!(&b[73..77], &NEWLINE_BYTES);
        assert_eq!(&b[77..79], &[1, 0]); // compressAlgorithm, unaligned
        assert!(b[79..].iter().all(|&x| x == 0));
        assert_eq!(SparseExtentHeader::parse(&b), h);
        let g = h.validate().unwrap();
        assert_eq!(g.grain_bytes, 65536);
        assert_eq!(g.gd_entries, 512);
        assert_eq!(g.gd_sectors, 4);
        assert_eq!(g.gt_sectors, 4);
        assert_eq!(g.grains, 262_144);
    }

    fn check(edit: impl FnOnce(&mut SparseExtentHeader)) -> VmdkError {
        let mut h = vmware_stream_header();
        edit(&mut h);
        h.validate().unwrap_err()
    }

    #[test]
    fn each_header_rule_has_its_error() {
        assert_eq!(
            check(|h| h.magic_number = *b"COWD"),
            VmdkError::BadMagic { found: *b"COWD" }
        );
        assert_eq!(
            check(|h| h.version = 4),
            VmdkError::UnsupportedVersion { version: 4 }
        );
        assert_eq!(
            check(|h| h.version = 0),
            VmdkError::UnsupportedVersion { version: 0 }
        );
        // A text-mode transfer turned "\r\n" into "\n".
        assert_eq!(
            check(|h| h.newline_bytes = [0x0A, 0x20, 0x0A, 0x00]),
            VmdkError::NewlineCheckFailed {
                found: [0x0A, 0x20, 0x0A, 0x00]
            }
        );
        assert_eq!(
            check(|h| h.flags |= 1 << 18),
            VmdkError::UnknownIncompatibleFlags { flags: 0x70001 }
        );
        assert_eq!(
            check(|h| h.flags = FLAG_MARKERS),
            VmdkError::MarkersWithoutCompression {
                flags: FLAG_MARKERS
            }
        );
        assert_eq!(
            check(|h| h.compress_algorithm = 2),
            VmdkError::UnsupportedCompression {
                algorithm: 2,
                flags: 0x30001
            }
        );
        assert_eq!(
            check(|h| h.flags = FLAG_NEWLINE_DETECT),
            VmdkError::UnsupportedCompression {
                algorithm: 1,
                flags: 1
            }
        );
        for bad in [0, 4, 96, 4096] {
            assert_eq!(
                check(|h| h.grain_sectors = bad),
                VmdkError::InvalidGrainSize {
                    grain_sectors: bad,
                    min: MIN_GRAIN_SECTORS,
                    max: MAX_GRAIN_SECTORS
                }
            );
        }
        for bad in [0, 64, 384, 1024] {
            assert_eq!(
                check(|h| h.num_gtes_per_gt = bad),
                VmdkError::InvalidGrainTableSize {
                    num_gtes_per_gt: bad
                }
            );
        }
        assert_eq!(check(|h| h.capacity_sectors = 0), VmdkError::ZeroCapacity);
        assert_eq!(
            check(|h| h.capacity_sectors = u64::MAX / 256),
            VmdkError::CapacityTooLarge {
                capacity_sectors: u64::MAX / 256,
                limit_bytes: MAX_VIRTUAL_BYTES
            }
        );
        assert!(matches!(
            check(|h| h.capacity_sectors = (MAX_VIRTUAL_BYTES / 512) + 1),
            VmdkError::CapacityTooLarge { .. }
        ));
        // 64 TiB with 4 KiB grains and 128-entry tables: 128 Mi directory entries.
        assert_eq!(
            check(|h| {
                h.capacity_sectors = MAX_VIRTUAL_BYTES / 512;
                h.grain_sectors = 8;
                h.num_gtes_per_gt = 128;
            }),
            VmdkError::GrainDirectoryTooLarge {
                entries: 1 << 27,
                limit: MAX_GRAIN_DIRECTORY_ENTRIES
            }
        );
    }

    #[test]
    fn limits_are_accepted_at_their_edges() {
        let mut h = vmware_stream_header();
        h.capacity_sectors = MAX_VIRTUAL_BYTES / 512;
        h.grain_sectors = MAX_GRAIN_SECTORS;
        h.num_gtes_per_gt = MIN_GTES_PER_GT;
        assert!(h.validate().is_ok());
        h.grain_sectors = MIN_GRAIN_SECTORS;
        h.num_gtes_per_gt = MAX_GTES_PER_GT;
        h.capacity_sectors = 1;
        let g = h.validate().unwrap();
        assert_eq!((g.grains, g.gd_entries, g.gd_sectors), (1, 1, 1));
        // Newline bytes are not checked without flag bit 0 (qemu's afl images have zeros).
        h.flags &= !FLAG_NEWLINE_DETECT;
        h.newline_bytes = [0; 4];
        assert!(h.validate().is_ok());
    }

    #[test]
    fn markers_decode() {
        let s = Marker::metadata_sector(MarkerType::GrainTable, 4);
        let mut m = [0u8; 16];
        m.copy_from_slice(&s[..16]);
        let m = Marker::parse(&m);
        assert_eq!(m.val, 4);
        assert!(!m.is_grain());
        assert_eq!(m.kind(), MarkerType::GrainTable);
        assert_eq!(MarkerType::from_raw(9), MarkerType::Unknown(9));
        assert_eq!(MarkerType::Unknown(9).raw(), 9);
    }
}
