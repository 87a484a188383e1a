//! qcow2 (QEMU copy-on-write v2), versions 2 and 3, read-only (docs/formats.md §5.4, §6 rule 23;
//! qemu's `docs/interop/qcow2.txt` and `block/qcow2*.c`).
//!
//! Opening reads the header, its extensions (backing format), the backing file name and
//! the active L1 table (only the entries the virtual size needs, at most
//! [`MAX_L1_ENTRIES`], qemu's 32 MiB limit), checking every L1 entry. L2 tables are read
//! lazily in slices of at most [`L2_SLICE_BYTES`] into an LRU bounded by
//! [`MAX_L2_CACHE_BYTES`]. Snapshots and refcounts are ignored (the active L1 is the disk).
//!
//! Mapping: a standard cluster is [`Extent::Stored`]; the zero flag (v3, and v2 as qemu
//! reads it) is [`Extent::Zero`]; an unallocated cluster is [`Extent::Unallocated`] (the
//! backing file's bytes, zeros without one); a compressed cluster is an [`Extent::Unit`]
//! decoded by [`Qcow2::decode_unit`] from raw deflate (compression type 0) or zstd (type 1)
//! into exactly one cluster. Extended L2 entries (32 subclusters per cluster) are read
//! subcluster by subcluster as qemu does.
//!
//! Refused, as qemu refuses them or cannot read them without more than the image: unknown
//! incompatible feature bits, encryption, an external data file, versions other than 2
//! and 3. The dirty and corrupt bits are accepted with a warning: qemu opens such images
//! read-only too (it only refuses them read-write).
//!
//! Where ovafs differs from qemu: a data cluster past the end of the file, an L2 table past
//! the end of the file, unaligned table or cluster offsets are refused at open or read with
//! typed errors (qemu marks the image corrupt and fails the read, except that bytes of a
//! data cluster that starts inside the file and runs past its end read as zeros in both).

use std::cell::RefCell;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::inflate::{Wrapper, inflate_exact};
use super::{DiskError, DiskFormat, DiskImage, Extent, MAX_VIRTUAL_BYTES, ParentRef};
use crate::error::Result;
use crate::io::budget::Budget;
use crate::io::{ReadAt, read_vec_at};

/// `QFI\xfb`: the first four bytes.
pub const MAGIC: [u8; 4] = *b"QFI\xfb";

/// Header length of version 2 (and the fixed part of version 3).
pub const V2_HEADER_BYTES: u64 = 72;
/// Smallest version 3 header (qemu: "qcow2 header too short").
pub const V3_MIN_HEADER_BYTES: u64 = 104;

/// Smallest cluster: 512 bytes (qemu `MIN_CLUSTER_BITS`).
pub const MIN_CLUSTER_BITS: u32 = 9;
/// Largest cluster: 2 MiB (qemu `MAX_CLUSTER_BITS`); also the engine's unit limit.
pub const MAX_CLUSTER_BITS: u32 = 21;
const _: () = assert!((1u64 << MAX_CLUSTER_BITS) <= super::MAX_UNIT_BYTES);

/// Smallest cluster with extended L2 entries (16 KiB; qemu creates them only from there).
pub const MIN_EXTENDED_L2_CLUSTER_BITS: u32 = 14;

/// Most active L1 entries (qemu `QCOW_MAX_L1_SIZE`: 32 MiB of table).
pub const MAX_L1_ENTRIES: u64 = (32 << 20) / 8;

/// Bytes of one cached L2 slice (qemu's default l2-cache-entry-size is the same 4 KiB).
pub const L2_SLICE_BYTES: u64 = 4096;
/// Bytes of L2 slices kept in memory per image.
pub const MAX_L2_CACHE_BYTES: u64 = 16 << 20;

/// Longest backing file name (qemu: 1023 bytes).
pub const MAX_BACKING_NAME_BYTES: u64 = 1023;
/// Longest backing format name (qemu: `bs->backing_format` holds 15 bytes and a NUL).
pub const MAX_BACKING_FORMAT_BYTES: u64 = 15;

/// Incompatible feature bit 0: the refcounts may be stale (only matters for writers).
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
/// Incompatible feature bit 1: qemu found the image corrupt (it then opens it read-only).
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Incompatible feature bit 2: guest data lives in an external data file.
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// Incompatible feature bit 3: the compression type field is not zlib.
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
/// Incompatible feature bit 4: extended L2 entries (subclusters).
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
/// Incompatible features this reader understands.
pub const KNOWN_INCOMPAT: u64 =
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;

/// Header extension type: end of the extension area.
pub const EXT_END: u32 = 0;
/// Header extension type: backing file format name.
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;

/// Offset bits of L1 and standard L2 entries (bits 9-55).
pub const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// L2 entry bit 62: compressed cluster.
pub const L2_COMPRESSED: u64 = 1 << 62;
/// L2 entry bit 0: reads as zeros (standard clusters without extended L2).
pub const L2_ZERO: u64 = 1;

/// Subclusters per cluster with extended L2 entries.
pub const SUBCLUSTERS: u64 = 32;

/// Compression type 0: raw deflate (zlib without header, window 4 KiB).
pub const COMPRESSION_ZLIB: u8 = 0;
/// Compression type 1: zstd.
pub const COMPRESSION_ZSTD: u8 = 1;

/// Largest zstd window accepted: 8 MiB, well above what a one-cluster frame needs.
pub const MAX_ZSTD_WINDOW_BYTES: u64 = 8 << 20;

/// A qcow2 rule was broken (or a feature is not supported).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Qcow2Error {
    /// The source is shorter than a header.
    #[error("qcow2 image is {len_bytes} bytes, shorter than its header")]
    TooShort {
        /// Length of the source.
        len_bytes: u64,
    },
    /// Not `QFI\xfb`.
    #[error("not a qcow2 image: magic {found:02x?}")]
    BadMagic {
        /// Bytes found.
        found: [u8; 4],
    },
    /// Version other than 2 or 3 (1 is the old qcow format).
    #[error("unsupported qcow version {version} (2 and 3 are read)")]
    UnsupportedVersion {
        /// Version field.
        version: u32,
    },
    /// cluster_bits outside 9..=21.
    #[error("qcow2 cluster_bits {cluster_bits} is outside 9..=21")]
    InvalidClusterBits {
        /// cluster_bits field.
        cluster_bits: u32,
    },
    /// A version 3 header_length below 104, not a multiple of 8, or beyond the first
    /// cluster.
    #[error(
        "qcow2 header_length {header_length} is invalid (>= 104, multiple of 8, within the {cluster_bytes}-byte first cluster)"
    )]
    InvalidHeaderLength {
        /// header_length field.
        header_length: u32,
        /// Cluster size.
        cluster_bytes: u64,
    },
    /// Incompatible feature bits this reader does not know (qemu: "Unsupported qcow2
    /// feature(s)").
    #[error("qcow2 image uses unknown incompatible features {features:#x}")]
    UnknownIncompatibleFeatures {
        /// The unknown bits.
        features: u64,
    },
    /// Guest data is in an external data file.
    #[error("qcow2 image keeps its data in an external data file, which is not supported")]
    ExternalDataFile,
    /// The image is encrypted.
    #[error(
        "qcow2 image is encrypted (crypt_method {crypt_method}); encrypted images are not supported"
    )]
    Encrypted {
        /// crypt_method field.
        crypt_method: u32,
    },
    /// Unknown compression type, or a type that disagrees with incompatible bit 3.
    #[error(
        "qcow2 compression type {compression_type} does not fit incompatible features {features:#x}"
    )]
    InvalidCompressionType {
        /// compression_type field.
        compression_type: u8,
        /// Incompatible features.
        features: u64,
    },
    /// Extended L2 entries with clusters smaller than 16 KiB.
    #[error(
        "qcow2 extended L2 entries need clusters of at least 16 KiB (cluster_bits {cluster_bits})"
    )]
    ExtendedL2ClusterTooSmall {
        /// cluster_bits field.
        cluster_bits: u32,
    },
    /// The virtual size is above the accepted limit.
    #[error("qcow2 size {size} exceeds the limit of {limit} bytes")]
    SizeTooLarge {
        /// size field.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The active L1 table is larger than qemu accepts ("Active L1 table too large").
    #[error("qcow2 L1 table of {entries} entries exceeds the limit of {limit}")]
    L1TooLarge {
        /// Entries needed or declared.
        entries: u64,
        /// The limit.
        limit: u64,
    },
    /// The L1 table does not cover the virtual size ("L1 table is too small").
    #[error("qcow2 L1 table has {entries} entries, the disk needs {needed}")]
    L1TooSmall {
        /// l1_size field.
        entries: u64,
        /// Entries needed.
        needed: u64,
    },
    /// The L1 table is unaligned or (partly) outside the file.
    #[error("qcow2 L1 table at {offset} ({entries} entries) is unaligned or outside the file")]
    L1OutOfBounds {
        /// l1_table_offset.
        offset: u64,
        /// Entries read.
        entries: u64,
    },
    /// An L1 entry points at an unaligned L2 table or one (partly) outside the file.
    #[error(
        "qcow2 L1 entry {l1_index} points its L2 table at {offset}, unaligned or outside the file"
    )]
    L2TableOutOfBounds {
        /// L1 index.
        l1_index: u64,
        /// L2 table offset.
        offset: u64,
    },
    /// The backing file name is too long or outside the first cluster / file.
    #[error("qcow2 backing file name at {offset} (+{len} bytes) is too long or out of bounds")]
    InvalidBackingName {
        /// backing_file_offset.
        offset: u64,
        /// backing_file_size.
        len: u32,
    },
    /// A header extension runs past the extension area, or is malformed.
    #[error("qcow2 header extension {ext_type:#010x} at {offset} (+{len} bytes) is invalid")]
    InvalidHeaderExtension {
        /// Offset of the extension header.
        offset: u64,
        /// Extension type.
        ext_type: u32,
        /// Declared length.
        len: u32,
    },
    /// A standard L2 entry's host offset is not cluster-aligned.
    #[error("qcow2 cluster {cluster}: data offset {offset:#x} is not cluster-aligned")]
    ClusterUnaligned {
        /// Guest cluster.
        cluster: u64,
        /// Host offset.
        offset: u64,
    },
    /// A data cluster or compressed cluster starts past the end of the file.
    #[error(
        "qcow2 cluster {cluster}: data at {offset:#x} is past the end of the {file_len}-byte file"
    )]
    ClusterOutOfBounds {
        /// Guest cluster.
        cluster: u64,
        /// Host offset.
        offset: u64,
        /// File length.
        file_len: u64,
    },
    /// An extended L2 bitmap marks a subcluster both allocated and zero, or allocates
    /// subclusters of a cluster with no host offset.
    #[error("qcow2 cluster {cluster}: invalid subcluster bitmap {bitmap:#018x}")]
    InvalidSubclusterBitmap {
        /// Guest cluster.
        cluster: u64,
        /// The bitmap.
        bitmap: u64,
    },
    /// `map` outside the disk or for zero bytes (a caller bug).
    #[error(
        "qcow2 map of {max_len} bytes at offset {offset} is outside the {virtual_size}-byte disk"
    )]
    MapOutOfRange {
        /// Offset asked for.
        offset: u64,
        /// Length asked for.
        max_len: u64,
        /// Size of the disk.
        virtual_size: u64,
    },
    /// `decode_unit` for a cluster that is not compressed.
    #[error("qcow2 unit {unit} is not a compressed cluster")]
    NotACompressedCluster {
        /// Cluster asked for.
        unit: u64,
    },
}

impl From<Qcow2Error> for crate::error::Error {
    fn from(e: Qcow2Error) -> Self {
        DiskError::Qcow2(e).into()
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(v)
}

/// The qcow2 header (`QCowHeader` in qemu), fields in spec order; version 3 fields are
/// zero (and `header_length` 72) in a version 2 image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QcowHeader {
    /// `QFI\xfb`.
    pub magic: [u8; 4],
    /// 2 or 3.
    pub version: u32,
    /// Offset of the backing file name (0: none).
    pub backing_file_offset: u64,
    /// Length of the backing file name.
    pub backing_file_size: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Virtual size in bytes.
    pub size: u64,
    /// 0 none, 1 AES, 2 LUKS.
    pub crypt_method: u32,
    /// Entries in the active L1 table.
    pub l1_size: u32,
    /// Offset of the active L1 table.
    pub l1_table_offset: u64,
    /// Offset of the refcount table (ignored).
    pub refcount_table_offset: u64,
    /// Clusters of the refcount table (ignored).
    pub refcount_table_clusters: u32,
    /// Snapshots (ignored).
    pub nb_snapshots: u32,
    /// Offset of the snapshot table (ignored).
    pub snapshots_offset: u64,
    /// v3: incompatible features.
    pub incompatible_features: u64,
    /// v3: compatible features.
    pub compatible_features: u64,
    /// v3: autoclear features.
    pub autoclear_features: u64,
    /// v3: log2 of the refcount width (ignored).
    pub refcount_order: u32,
    /// v3: header length (72 for v2).
    pub header_length: u32,
    /// v3 with header_length > 104: compression type.
    pub compression_type: u8,
}

impl QcowHeader {
    /// Bytes decoded by [`QcowHeader::parse`].
    pub const SIZE: usize = 112;

    /// Decodes the fields (no validation). `b` holds the first bytes of the file, zero
    /// padded; fields past a version 2 header are ignored then.
    pub fn parse(b: &[u8; Self::SIZE]) -> Self {
        let version = be32(b, 4);
        let v3 = version >= 3;
        let header_length = if v3 { be32(b, 100) } else { 72 };
        QcowHeader {
            magic: [b[0], b[1], b[2], b[3]],
            version,
            backing_file_offset: be64(b, 8),
            backing_file_size: be32(b, 16),
            cluster_bits: be32(b, 20),
            size: be64(b, 24),
            crypt_method: be32(b, 32),
            l1_size: be32(b, 36),
            l1_table_offset: be64(b, 40),
            refcount_table_offset: be64(b, 48),
            refcount_table_clusters: be32(b, 56),
            nb_snapshots: be32(b, 60),
            snapshots_offset: be64(b, 64),
            incompatible_features: if v3 { be64(b, 72) } else { 0 },
            compatible_features: if v3 { be64(b, 80) } else { 0 },
            autoclear_features: if v3 { be64(b, 88) } else { 0 },
            refcount_order: if v3 { be32(b, 96) } else { 4 },
            header_length,
            compression_type: if v3 && header_length > 104 { b[104] } else { 0 },
        }
    }

    /// Encodes the header (for test fixtures): version 2 writes 72 bytes' worth.
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..4].copy_from_slice(&self.magic);
        b[4..8].copy_from_slice(&self.version.to_be_bytes());
        b[8..16].copy_from_slice(&self.backing_file_offset.to_be_bytes());
        b[16..20].copy_from_slice(&self.backing_file_size.to_be_bytes());
        b[20..24].copy_from_slice(&self.cluster_bits.to_be_bytes());
        b[24..32].copy_from_slice(&self.size.to_be_bytes());
        b[32..36].copy_from_slice(&self.crypt_method.to_be_bytes());
        b[36..40].copy_from_slice(&self.l1_size.to_be_bytes());
        b[40..48].copy_from_slice(&self.l1_table_offset.to_be_bytes());
        b[48..56].copy_from_slice(&self.refcount_table_offset.to_be_bytes());
        b[56..60].copy_from_slice(&self.refcount_table_clusters.to_be_bytes());
        b[60..64].copy_from_slice(&self.nb_snapshots.to_be_bytes());
        b[64..72].copy_from_slice(&self.snapshots_offset.to_be_bytes());
        if self.version >= 3 {
            b[72..80].copy_from_slice(&self.incompatible_features.to_be_bytes());
            b[80..88].copy_from_slice(&self.compatible_features.to_be_bytes());
            b[88..96].copy_from_slice(&self.autoclear_features.to_be_bytes());
            b[96..100].copy_from_slice(&self.refcount_order.to_be_bytes());
            b[100..104].copy_from_slice(&self.header_length.to_be_bytes());
            b[104] = self.compression_type;
        }
        b
    }

    /// Checks the rules that need only the header; returns the cluster size.
    pub fn validate(&self) -> Result<u64, Qcow2Error> {
        if self.magic != MAGIC {
            return Err(Qcow2Error::BadMagic { found: self.magic });
        }
        if !(2..=3).contains(&self.version) {
            return Err(Qcow2Error::UnsupportedVersion {
                version: self.version,
            });
        }
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&self.cluster_bits) {
            return Err(Qcow2Error::InvalidClusterBits {
                cluster_bits: self.cluster_bits,
            });
        }
        let cluster_bytes = 1u64 << self.cluster_bits;
        if self.version >= 3 {
            let hl = u64::from(self.header_length);
            if hl < V3_MIN_HEADER_BYTES || hl % 8 != 0 || hl > cluster_bytes {
                return Err(Qcow2Error::InvalidHeaderLength {
                    header_length: self.header_length,
                    cluster_bytes,
                });
            }
        }
        let unknown = self.incompatible_features & !KNOWN_INCOMPAT;
        if unknown != 0 {
            return Err(Qcow2Error::UnknownIncompatibleFeatures { features: unknown });
        }
        if self.incompatible_features & INCOMPAT_DATA_FILE != 0 {
            return Err(Qcow2Error::ExternalDataFile);
        }
        if self.crypt_method != 0 {
            return Err(Qcow2Error::Encrypted {
                crypt_method: self.crypt_method,
            });
        }
        let flagged = self.incompatible_features & INCOMPAT_COMPRESSION != 0;
        let ok = match self.compression_type {
            COMPRESSION_ZLIB => !flagged,
            COMPRESSION_ZSTD => flagged,
            _ => false,
        };
        if !ok {
            return Err(Qcow2Error::InvalidCompressionType {
                compression_type: self.compression_type,
                features: self.incompatible_features,
            });
        }
        if self.incompatible_features & INCOMPAT_EXTL2 != 0
            && self.cluster_bits < MIN_EXTENDED_L2_CLUSTER_BITS
        {
            return Err(Qcow2Error::ExtendedL2ClusterTooSmall {
                cluster_bits: self.cluster_bits,
            });
        }
        if self.size > MAX_VIRTUAL_BYTES {
            return Err(Qcow2Error::SizeTooLarge {
                size: self.size,
                limit: MAX_VIRTUAL_BYTES,
            });
        }
        Ok(cluster_bytes)
    }
}

thread_local! {
    /// Compressed bytes of the cluster being decoded, reused across decodes on a thread.
    static COMPRESSED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Bytes a cached L2 slice costs besides its words (LRU node, Arc header).
const L2_SLICE_OVERHEAD_BYTES: u64 = 80;

/// L2 slices by (table offset, slice index), raw `u64` words.
type L2Cache = LruCache<(u64, u64), Arc<[u64]>>;

/// A parsed qcow2 image.
pub struct Qcow2 {
    source: Arc<dyn ReadAt>,
    header: QcowHeader,
    cluster_bits: u32,
    cluster_bytes: u64,
    /// Logical L2 entries per table (cluster/8, or cluster/16 with extended L2).
    l2_entries: u64,
    extended_l2: bool,
    /// The active L1 entries the disk needs, all checked.
    l1: Box<[u64]>,
    /// L2 slices by (table offset, slice index), raw `u64` words.
    l2_cache: Mutex<L2Cache>,
    /// Logical entries per slice.
    slice_entries: u64,
    backing: Option<ParentRef>,
}

impl std::fmt::Debug for Qcow2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2")
            .field("header", &self.header)
            .field("backing", &self.backing)
            .finish_non_exhaustive()
    }
}

/// How one L2 entry (or subcluster of it) reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unallocated,
    Zero,
    /// Host offset of the cluster (aligned).
    Data(u64),
    Compressed,
}

impl Qcow2 {
    /// Parses the header and the active L1 table of the qcow2 image held in `source`.
    pub fn open(source: Arc<dyn ReadAt>) -> Result<Self> {
        Self::open_in(source, &Budget::default_metadata())
    }

    /// [`Qcow2::open`], counting the L1 table and the L2 cache against `budget`.
    pub fn open_in(source: Arc<dyn ReadAt>, budget: &Budget) -> Result<Self> {
        Self::open_inner(source, budget).map_err(|e| e.context("opening qcow2 image"))
    }

    fn open_inner(source: Arc<dyn ReadAt>, budget: &Budget) -> Result<Self> {
        let src: &dyn ReadAt = &*source;
        let file_len = src.len();
        if file_len < V2_HEADER_BYTES {
            return Err(Qcow2Error::TooShort {
                len_bytes: file_len,
            }
            .into());
        }
        let mut raw = [0u8; QcowHeader::SIZE];
        let n = src.read_at(0, &mut raw)?;
        raw[n..].fill(0);
        let header = QcowHeader::parse(&raw);
        let cluster_bytes = header.validate()?;
        if header.version >= 3 && u64::from(header.header_length) > file_len {
            return Err(Qcow2Error::TooShort {
                len_bytes: file_len,
            }
            .into());
        }
        if header.incompatible_features & INCOMPAT_DIRTY != 0 {
            log::warn!("qcow2 image is marked dirty (refcounts may be stale); reading it anyway");
        }
        if header.incompatible_features & INCOMPAT_CORRUPT != 0 {
            log::warn!("qcow2 image is marked corrupt by qemu; reading it read-only as qemu does");
        }
        let cluster_bits = header.cluster_bits;
        let extended_l2 = header.incompatible_features & INCOMPAT_EXTL2 != 0;
        let l2_entries = cluster_bytes / if extended_l2 { 16 } else { 8 };

        let backing_format = read_backing_format(src, &header, cluster_bytes)?;
        let backing = read_backing_name(src, &header, cluster_bytes)?.map(|name| ParentRef {
            names: vec![name],
            format: backing_format,
        });

        // size_to_l1: entries covering the virtual size (each covers l2_entries clusters).
        let l1_coverage = cluster_bytes * l2_entries; // <= 2 MiB * 256 Ki: no overflow
        let needed = header.size.div_ceil(l1_coverage);
        let declared = u64::from(header.l1_size);
        if declared > MAX_L1_ENTRIES {
            return Err(Qcow2Error::L1TooLarge {
                entries: declared,
                limit: MAX_L1_ENTRIES,
            }
            .into());
        }
        if declared < needed {
            return Err(Qcow2Error::L1TooSmall {
                entries: declared,
                needed,
            }
            .into());
        }
        let l1_bytes = needed * 8; // <= 32 MiB
        // The raw table and its decoded copy coexist while it is parsed.
        budget.charge("qcow2 L1 table", l1_bytes * 2)?;
        if !header.l1_table_offset.is_multiple_of(cluster_bytes)
            || header
                .l1_table_offset
                .checked_add(l1_bytes)
                .is_none_or(|e| e > file_len)
        {
            return Err(Qcow2Error::L1OutOfBounds {
                offset: header.l1_table_offset,
                entries: needed,
            }
            .into());
        }
        let raw_l1 = read_vec_at(
            src,
            "qcow2 L1 table",
            header.l1_table_offset,
            l1_bytes,
            MAX_L1_ENTRIES * 8,
        )?;
        let l1: Box<[u64]> = raw_l1.chunks_exact(8).map(|c| be64(c, 0)).collect();
        for (i, &e) in l1.iter().enumerate() {
            let off = e & OFFSET_MASK;
            if off == 0 {
                continue;
            }
            if !off.is_multiple_of(cluster_bytes)
                || off.checked_add(cluster_bytes).is_none_or(|e| e > file_len)
            {
                return Err(Qcow2Error::L2TableOutOfBounds {
                    l1_index: i as u64,
                    offset: off,
                }
                .into());
            }
        }
        budget.release(l1_bytes);
        let slice_bytes = cluster_bytes.min(L2_SLICE_BYTES);
        let slice_entries = slice_bytes / if extended_l2 { 16 } else { 8 };
        // The cache may grow to the L2 tables the L1 points at (distinct offsets), at most
        // MAX_L2_CACHE_BYTES; that is what is counted.
        let tables = {
            let mut offsets: Vec<u64> = l1
                .iter()
                .map(|e| e & OFFSET_MASK)
                .filter(|&o| o != 0)
                .collect();
            offsets.sort_unstable();
            offsets.dedup();
            offsets.len() as u64
        };
        let l2_bytes = tables
            .saturating_mul(cluster_bytes)
            .clamp(slice_bytes, MAX_L2_CACHE_BYTES);
        let slices = l2_bytes / slice_bytes;
        budget.charge(
            "qcow2 L2 table cache",
            l2_bytes + slices * L2_SLICE_OVERHEAD_BYTES,
        )?;
        let capacity = usize::try_from(slices).unwrap_or(usize::MAX);
        Ok(Qcow2 {
            source,
            header,
            cluster_bits,
            cluster_bytes,
            l2_entries,
            extended_l2,
            l1,
            l2_cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
            slice_entries,
            backing,
        })
    }

    /// The header.
    pub fn header(&self) -> &QcowHeader {
        &self.header
    }

    /// Cluster size in bytes.
    pub fn cluster_bytes(&self) -> u64 {
        self.cluster_bytes
    }

    /// The slice of the L2 table at `table` holding logical entry `index`, and the index of
    /// that entry's first word in the slice.
    fn slice(&self, table: u64, index: u64) -> Result<(Arc<[u64]>, usize)> {
        let slice = index / self.slice_entries;
        let words_per_entry = if self.extended_l2 { 2 } else { 1 };
        // OK to cast: index % slice_entries < 512.
        let first_word = ((index % self.slice_entries) * words_per_entry) as usize;
        {
            let mut c = self.l2_cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = c.get(&(table, slice)) {
                return Ok((s.clone(), first_word));
            }
        }
        let slice_bytes = self.slice_entries * 8 * words_per_entry;
        // The table lies inside the file (checked at open); the slice lies inside the table.
        let raw = read_vec_at(
            &*self.source,
            "qcow2 L2 table slice",
            table + slice * slice_bytes,
            slice_bytes,
            L2_SLICE_BYTES,
        )?;
        let words: Arc<[u64]> = raw.chunks_exact(8).map(|c| be64(c, 0)).collect();
        self.l2_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put((table, slice), words.clone());
        Ok((words, first_word))
    }

    /// The raw L2 entry (and extended bitmap) of guest `cluster`, or `None` when its L1
    /// entry is unallocated.
    fn l2_entry(&self, cluster: u64) -> Result<Option<(u64, u64)>> {
        let l1_index = cluster / self.l2_entries;
        let l1e = usize::try_from(l1_index)
            .ok()
            .and_then(|i| self.l1.get(i))
            .copied()
            .unwrap_or(0);
        let table = l1e & OFFSET_MASK;
        if table == 0 {
            return Ok(None);
        }
        let (slice, w) = self.slice(table, cluster % self.l2_entries)?;
        let entry = slice.get(w).copied().unwrap_or(0);
        let bitmap = if self.extended_l2 {
            slice.get(w + 1).copied().unwrap_or(0)
        } else {
            0
        };
        Ok(Some((entry, bitmap)))
    }

    /// How a whole standard (non-extended) L2 entry reads; checks its offset.
    fn kind(&self, cluster: u64, entry: u64) -> Result<Kind> {
        if entry & L2_COMPRESSED != 0 {
            return Ok(Kind::Compressed);
        }
        let host = entry & OFFSET_MASK;
        if !self.extended_l2 && entry & L2_ZERO != 0 {
            return Ok(Kind::Zero);
        }
        if host == 0 {
            return Ok(Kind::Unallocated);
        }
        if !host.is_multiple_of(self.cluster_bytes) {
            return Err(Qcow2Error::ClusterUnaligned {
                cluster,
                offset: host,
            }
            .into());
        }
        let file_len = self.source.len();
        if host >= file_len {
            return Err(Qcow2Error::ClusterOutOfBounds {
                cluster,
                offset: host,
                file_len,
            }
            .into());
        }
        Ok(Kind::Data(host))
    }

    /// Where a compressed cluster's bytes are: offset and length (clamped to the file,
    /// whose last compressed cluster may be shorter than its rounded sector count).
    fn compressed_span(&self, cluster: u64, entry: u64) -> Result<(u64, u64)> {
        // x = 62 - (cluster_bits - 8) offset bits, then (cluster_bits - 8) bits of
        // "additional 512-byte sectors".
        let shift = 62 - (self.cluster_bits - 8);
        let offset = entry & ((1u64 << shift) - 1);
        let sectors = ((entry >> shift) & ((1u64 << (self.cluster_bits - 8)) - 1)) + 1;
        let size = sectors * 512 - (offset & 511);
        let file_len = self.source.len();
        if offset >= file_len {
            return Err(Qcow2Error::ClusterOutOfBounds {
                cluster,
                offset,
                file_len,
            }
            .into());
        }
        Ok((offset, size.min(file_len - offset)))
    }

    fn decompress(&self, unit: u64, entry: u64, out: &mut [u8]) -> Result<()> {
        let (offset, len) = self.compressed_span(unit, entry)?;
        COMPRESSED.with(|buf| {
            let mut buf = buf.borrow_mut();
            // len <= 2 clusters (sector count field) <= 4 MiB.
            buf.resize(len as usize, 0);
            self.source.read_exact_at(offset, &mut buf)?;
            match self.header.compression_type {
                COMPRESSION_ZSTD => zstd_exact(&buf, out, unit),
                _ => inflate_exact(Wrapper::Deflate, &buf, out, unit),
            }
        })
    }
}

/// Decodes one zstd frame from `input` into exactly `out.len()` bytes (trailing bytes after
/// the frame, which qemu leaves up to the next sector, are ignored).
fn zstd_exact(input: &[u8], out: &mut [u8], unit: u64) -> Result<()> {
    use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};
    use std::io::Read;
    let corrupt =
        |reason: String| -> crate::error::Error { DiskError::CorruptUnit { unit, reason }.into() };
    let expected = out.len() as u64;
    let mut dec = FrameDecoder::new();
    dec.set_max_window_size(MAX_ZSTD_WINDOW_BYTES);
    let mut src = input;
    dec.init(&mut src)
        .map_err(|e| corrupt(format!("zstd frame header: {e}")))?;
    let mut done = 0usize;
    // Bounded: every round decodes at least one block from a finite input or fails.
    loop {
        let finished = dec
            .decode_blocks(&mut src, BlockDecodingStrategy::UptoBytes(128 << 10))
            .map_err(|e| corrupt(format!("zstd block: {e}")))?;
        loop {
            let room = &mut out[done..];
            if room.is_empty() {
                if dec.can_collect() > 0 {
                    return Err(DiskError::UnitSizeMismatch {
                        unit,
                        expected,
                        actual: expected.saturating_add(1),
                    }
                    .into());
                }
                break;
            }
            let n = dec
                .read(room)
                .map_err(|e| corrupt(format!("zstd output: {e}")))?;
            if n == 0 {
                break;
            }
            done += n;
        }
        if finished {
            break;
        }
    }
    if let (Some(stored), Some(computed)) =
        (dec.get_checksum_from_data(), dec.get_calculated_checksum())
        && stored != computed
    {
        return Err(corrupt(format!(
            "zstd checksum {stored:#010x}, computed {computed:#010x}"
        )));
    }
    if done as u64 != expected {
        return Err(DiskError::UnitSizeMismatch {
            unit,
            expected,
            actual: done as u64,
        }
        .into());
    }
    Ok(())
}

/// The backing format from the header extensions, if any (qemu `qcow2_read_extensions`).
fn read_backing_format(
    src: &dyn ReadAt,
    h: &QcowHeader,
    cluster_bytes: u64,
) -> Result<Option<String>> {
    let start = u64::from(h.header_length);
    // Extensions end where the backing file name starts, else at the end of the first
    // cluster (and of the file).
    let end = if h.backing_file_offset != 0 {
        h.backing_file_offset.min(cluster_bytes)
    } else {
        cluster_bytes
    }
    .min(src.len());
    if start >= end {
        return Ok(None);
    }
    let area = read_vec_at(
        src,
        "qcow2 header extensions",
        start,
        end - start,
        1 << MAX_CLUSTER_BITS,
    )?;
    let mut format = None;
    let mut at = 0usize;
    // Bounded: every step advances by at least 8 bytes through a finite area.
    while at + 8 <= area.len() {
        let ext_type = be32(&area, at);
        let len = be32(&area, at + 4);
        let data_at = at + 8;
        let bad = || Qcow2Error::InvalidHeaderExtension {
            offset: start + at as u64,
            ext_type,
            len,
        };
        if ext_type == EXT_END {
            break;
        }
        let data_end = data_at
            .checked_add(len as usize)
            .filter(|&e| e <= area.len())
            .ok_or_else(bad)?;
        if ext_type == EXT_BACKING_FORMAT {
            if u64::from(len) > MAX_BACKING_FORMAT_BYTES {
                return Err(bad().into());
            }
            let name = &area[data_at..data_end];
            let name = name.split(|&b| b == 0).next().unwrap_or(name);
            format = Some(String::from_utf8_lossy(name).into_owned());
        }
        at = data_end.next_multiple_of(8);
    }
    Ok(format)
}

/// The backing file name, if the header names one.
fn read_backing_name(
    src: &dyn ReadAt,
    h: &QcowHeader,
    cluster_bytes: u64,
) -> Result<Option<String>> {
    if h.backing_file_offset == 0 {
        return Ok(None);
    }
    let len = u64::from(h.backing_file_size);
    let bad = Qcow2Error::InvalidBackingName {
        offset: h.backing_file_offset,
        len: h.backing_file_size,
    };
    let end = h.backing_file_offset.checked_add(len);
    if len > MAX_BACKING_NAME_BYTES || end.is_none_or(|e| e > cluster_bytes || e > src.len()) {
        return Err(bad.into());
    }
    if len == 0 {
        return Ok(None);
    }
    let raw = read_vec_at(
        src,
        "qcow2 backing file name",
        h.backing_file_offset,
        len,
        MAX_BACKING_NAME_BYTES,
    )?;
    Ok(Some(String::from_utf8_lossy(&raw).into_owned()))
}

impl DiskImage for Qcow2 {
    fn format(&self) -> DiskFormat {
        DiskFormat::Qcow2
    }

    fn virtual_size(&self) -> u64 {
        self.header.size
    }

    fn unit_bytes(&self) -> u64 {
        self.cluster_bytes
    }

    fn map(&self, offset: u64, max_len: u64) -> Result<Extent> {
        let size = self.header.size;
        if offset >= size || max_len == 0 {
            return Err(Qcow2Error::MapOutOfRange {
                offset,
                max_len,
                virtual_size: size,
            }
            .into());
        }
        let max_len = max_len.min(size - offset);
        let cluster = offset >> self.cluster_bits;
        let in_cluster = offset & (self.cluster_bytes - 1);
        let first_len = max_len.min(self.cluster_bytes - in_cluster);
        let Some((entry, bitmap)) = self.l2_entry(cluster)? else {
            // The whole L2 table's coverage is unallocated.
            let left =
                (self.l2_entries - cluster % self.l2_entries) * self.cluster_bytes - in_cluster;
            return Ok(Extent::Unallocated {
                len: max_len.min(left),
            });
        };
        if self.extended_l2 && entry & L2_COMPRESSED == 0 {
            return self.map_subclusters(cluster, in_cluster, first_len, entry, bitmap);
        }
        let kind = self.kind(cluster, entry)?;
        let len = match kind {
            Kind::Compressed => {
                return Ok(Extent::Unit {
                    unit: cluster,
                    offset_in_unit: in_cluster,
                    len: first_len,
                });
            }
            // Extend runs over the following clusters of the same slice.
            _ => first_len + self.run_after(cluster, kind, max_len - first_len)?,
        };
        Ok(match kind {
            Kind::Unallocated => Extent::Unallocated { len },
            Kind::Zero => Extent::Zero { len },
            Kind::Data(host) => self.stored(host + in_cluster, len),
            Kind::Compressed => unreachable_compressed(cluster)?,
        })
    }

    fn decode_unit(&self, unit: u64, out: &mut [u8]) -> Result<()> {
        let entry = match self.l2_entry(unit)? {
            Some((e, _)) if e & L2_COMPRESSED != 0 => e,
            _ => return Err(Qcow2Error::NotACompressedCluster { unit }.into()),
        };
        let whole = self.cluster_bytes as usize; // <= 2 MiB
        let r = if out.len() == whole {
            self.decompress(unit, entry, out)
        } else {
            // The last, partial cluster is compressed as a whole cluster padded with zeros.
            let mut full = vec![0u8; whole];
            self.decompress(unit, entry, &mut full).map(|()| {
                let n = out.len().min(whole);
                out[..n].copy_from_slice(&full[..n]);
            })
        };
        r.map_err(|e| e.context(format!("qcow2 compressed cluster {unit}")))
    }

    fn source(&self) -> &dyn ReadAt {
        &*self.source
    }

    fn parent(&self) -> Option<ParentRef> {
        self.backing.clone()
    }
}

/// A compressed kind never reaches the run code; reported as corrupt if it did.
fn unreachable_compressed(cluster: u64) -> Result<Extent> {
    Err(DiskError::CorruptUnit {
        unit: cluster,
        reason: "compressed cluster in a run".into(),
    }
    .into())
}

impl Qcow2 {
    /// A stored extent, with the part past the end of the file read as zeros (qemu's block
    /// layer reads past a file's end as zeros; only a cluster that starts inside the file
    /// gets here).
    fn stored(&self, source_offset: u64, len: u64) -> Extent {
        let file_len = self.source.len();
        if source_offset >= file_len {
            Extent::Zero { len }
        } else {
            Extent::Stored {
                source_offset,
                len: len.min(file_len - source_offset),
            }
        }
    }

    /// Bytes after `cluster`, up to `limit`, that read like `kind` (data: stored right after
    /// it), without leaving the L2 slice already in memory.
    fn run_after(&self, cluster: u64, kind: Kind, limit: u64) -> Result<u64> {
        if limit == 0 || self.extended_l2 {
            return Ok(0);
        }
        let l1_index = cluster / self.l2_entries;
        let index = cluster % self.l2_entries;
        let table = usize::try_from(l1_index)
            .ok()
            .and_then(|i| self.l1.get(i))
            .map_or(0, |e| e & OFFSET_MASK);
        let (slice, first_word) = self.slice(table, index)?;
        let mut run = 0u64;
        let mut next = cluster;
        for &e in slice.iter().skip(first_word + 1) {
            if run >= limit {
                break;
            }
            next += 1;
            let k = self.kind(next, e)?;
            let same = match (kind, k) {
                (Kind::Data(a), Kind::Data(b)) => b == a + (next - cluster) * self.cluster_bytes,
                (a, b) => a == b && a != Kind::Compressed,
            };
            if !same {
                break;
            }
            run += self.cluster_bytes;
        }
        Ok(run.min(limit))
    }

    /// Maps inside one cluster with an extended L2 entry, subcluster by subcluster.
    fn map_subclusters(
        &self,
        cluster: u64,
        in_cluster: u64,
        len: u64,
        entry: u64,
        bitmap: u64,
    ) -> Result<Extent> {
        let alloc = bitmap & 0xffff_ffff;
        let zero = bitmap >> 32;
        let host = entry & OFFSET_MASK;
        if alloc & zero != 0 || (host == 0 && alloc != 0) {
            return Err(Qcow2Error::InvalidSubclusterBitmap { cluster, bitmap }.into());
        }
        if host != 0 {
            self.kind(cluster, entry & !L2_ZERO)?; // alignment and bounds
        }
        let sc_bytes = self.cluster_bytes / SUBCLUSTERS;
        let first = in_cluster / sc_bytes;
        let class = |sc: u64| -> u8 {
            if zero >> sc & 1 == 1 {
                1
            } else if alloc >> sc & 1 == 1 {
                2
            } else {
                0
            }
        };
        let c = class(first);
        let end = in_cluster + len;
        let mut sc = first + 1;
        while sc < SUBCLUSTERS && sc * sc_bytes < end && class(sc) == c {
            sc += 1;
        }
        let run = (sc * sc_bytes).min(end) - in_cluster;
        Ok(match c {
            1 => Extent::Zero { len: run },
            2 => self.stored(host + in_cluster, run),
            _ => Extent::Unallocated { len: run },
        })
    }
}

#[cfg(test)]
#[path = "qcow2_tests.rs"]
mod tests;
