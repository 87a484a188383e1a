//! Disk images: one factory that sniffs the format, one module per format, one engine.
//!
//! A format module only parses headers and tables and answers [`DiskImage::map`]: which
//! bytes of its source (or which decoded unit) hold a virtual range. It never caches and
//! never decides how reads are scheduled; the [`engine`] does the I/O, consults the shared
//! grain cache and decodes units, holding no lock while decoding. Format modules receive a
//! [`ReadAt`] window and never know about archives, so unit tests hand them a `Vec<u8>`.
//!
//! Formats (sniffed by content, never by name): stream-optimized and hosted-sparse VMDK
//! ([`vmdk`]), and plain raw images ([`raw`]).

pub mod engine;
pub mod inflate;
pub mod raw;
pub mod vmdk;
pub mod vmdk_writer;

use std::fmt;
use std::sync::Arc;

use crate::error::Result;
use crate::io::ReadAt;

/// Sector size used by every format here (bytes).
pub const SECTOR_BYTES: u64 = 512;

/// Largest virtual disk we accept: 64 TiB, far above any appliance disk and far below the
/// point where sector arithmetic could overflow (formats.md §6 rule 17).
pub const MAX_VIRTUAL_BYTES: u64 = 64 << 40;

/// Largest decoded unit (grain or cluster) we accept: 2 MiB. Each decode allocates one unit,
/// so this bounds the memory a single read can demand whatever a header claims.
pub const MAX_UNIT_BYTES: u64 = 2 << 20;

/// Where the bytes of a virtual range come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    /// `len` bytes that read as zeros whatever a parent disk holds (VMDK zeroed grain,
    /// qcow2 zero cluster).
    Zero {
        /// Length in bytes.
        len: u64,
    },
    /// `len` bytes that this image does not hold: zeros, or the parent's bytes when the image
    /// is a delta on top of another disk.
    Unallocated {
        /// Length in bytes.
        len: u64,
    },
    /// `len` bytes stored verbatim at `source_offset` in the image's source.
    Stored {
        /// Offset in [`DiskImage::source`].
        source_offset: u64,
        /// Length in bytes.
        len: u64,
    },
    /// `len` bytes starting at `offset_in_unit` of the decoded unit `unit`
    /// (see [`DiskImage::decode_unit`]).
    Unit {
        /// Unit (grain/cluster) number.
        unit: u64,
        /// Offset inside the decoded unit.
        offset_in_unit: u64,
        /// Length in bytes.
        len: u64,
    },
}

impl Extent {
    /// Length of the extent in bytes.
    pub fn len(&self) -> u64 {
        match *self {
            Extent::Zero { len }
            | Extent::Unallocated { len }
            | Extent::Stored { len, .. }
            | Extent::Unit { len, .. } => len,
        }
    }

    /// Whether the extent is empty (never returned by a correct `map`).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Disk image formats ovafs knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum DiskFormat {
    /// Stream-optimized VMDK (compressed grains with markers).
    VmdkStreamOptimized,
    /// Hosted sparse VMDK (monolithicSparse), optionally with compressed grains.
    VmdkSparse,
    /// A plain raw image.
    Raw,
}

impl DiskFormat {
    /// Short human name, as `ovafs info` shows it.
    pub fn name(self) -> &'static str {
        match self {
            DiskFormat::VmdkStreamOptimized => "vmdk (streamOptimized)",
            DiskFormat::VmdkSparse => "vmdk (monolithicSparse)",
            DiskFormat::Raw => "raw",
        }
    }
}

impl fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A parsed disk image: its tables, ready to map virtual ranges.
pub trait DiskImage: Send + Sync {
    /// The format that was recognised.
    fn format(&self) -> DiskFormat;

    /// Size of the flat image in bytes, from the image's own header.
    fn virtual_size(&self) -> u64;

    /// Size of one decoded unit in bytes (grain or cluster); the engine's cache and
    /// read-ahead work in these units. Formats without decoded units return their natural
    /// block size.
    fn unit_bytes(&self) -> u64;

    /// Maps the virtual range starting at `offset` (< `virtual_size`) of at most `max_len`
    /// (> 0) bytes to its first extent. The extent's length is in `1..=max_len` and never
    /// crosses `virtual_size`, so repeated calls tile any request.
    fn map(&self, offset: u64, max_len: u64) -> Result<Extent>;

    /// Decodes unit `unit` into `out`, whose length is exactly the decoded length of that
    /// unit ([`DiskImage::unit_len`]). Fails if the stored data is corrupt or decodes to any
    /// other length.
    fn decode_unit(&self, unit: u64, out: &mut [u8]) -> Result<()>;

    /// Decoded length of `unit`: `unit_bytes`, except for a final partial unit.
    fn unit_len(&self, unit: u64) -> u64 {
        let start = unit.saturating_mul(self.unit_bytes());
        self.virtual_size()
            .saturating_sub(start)
            .min(self.unit_bytes())
    }

    /// The bytes `Extent::Stored` offsets refer to.
    fn source(&self) -> &dyn ReadAt;
}

/// A disk image is malformed or unsupported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiskError {
    /// A VMDK rule was broken.
    #[error(transparent)]
    Vmdk(#[from] vmdk::VmdkError),
    /// A known format that ovafs cannot decode.
    #[error("{format} images are not supported")]
    Unsupported {
        /// Format name.
        format: &'static str,
    },
    /// The content is not a disk image ovafs recognises.
    #[error("not a recognised disk image ({reason})")]
    Unrecognised {
        /// What was found instead.
        reason: String,
    },
    /// A compressed unit is corrupt.
    #[error("unit {unit}: corrupt compressed data ({reason})")]
    CorruptUnit {
        /// Unit number.
        unit: u64,
        /// Why.
        reason: String,
    },
    /// Decompression did not produce exactly one unit.
    #[error("unit {unit}: decompressed to {actual} bytes, expected {expected}")]
    UnitSizeMismatch {
        /// Unit number.
        unit: u64,
        /// Bytes expected.
        expected: u64,
        /// Bytes produced (or a lower bound when output overflowed).
        actual: u64,
    },
}

/// What the first bytes (and, for VHD, the last sector) of a source say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// A VMDK sparse extent (`KDMV`).
    VmdkSparse,
    /// A known format that ovafs cannot decode yet, by name.
    Unsupported(&'static str),
    /// No known signature.
    Unknown,
}

/// Signatures of formats recognised but not decoded (yet), with the offset they sit at.
const UNSUPPORTED_SIGNATURES: [(u64, &[u8], &str); 7] = [
    (0, b"conectix", "VHD"),
    (0, b"vhdxfile", "VHDX"),
    (0, b"QFI\xfb", "qcow2"),
    (0, b"COWD", "VMDK COWD (ESXi vmfsSparse)"),
    (0, b"# Disk DescriptorFile", "VMDK descriptor file"),
    (0, b"# Disk Descriptor File", "VMDK descriptor file"),
    (0, b"\x1f\x8b", "gzip-compressed data"),
];

/// Recognises a disk image format by content, never by name.
pub fn sniff(source: &dyn ReadAt) -> Result<Sniffed> {
    let mut head = [0u8; 32];
    let n = source.read_at(0, &mut head)?;
    let head = &head[..n];
    if head.starts_with(&vmdk::SPARSE_MAGIC) {
        return Ok(Sniffed::VmdkSparse);
    }
    for (_, sig, name) in UNSUPPORTED_SIGNATURES {
        if head.starts_with(sig) {
            return Ok(Sniffed::Unsupported(name));
        }
    }
    // A fixed VHD is raw data followed by a 512-byte footer (511 bytes in images older than
    // Virtual PC 2004).
    let len = source.len();
    for footer in [SECTOR_BYTES, SECTOR_BYTES - 1] {
        if len >= footer {
            let mut cookie = [0u8; 8];
            if source.read_at(len - footer, &mut cookie)? == 8 && &cookie == b"conectix" {
                return Ok(Sniffed::Unsupported("VHD (fixed)"));
            }
        }
    }
    Ok(Sniffed::Unknown)
}

/// Opens the disk image held in `source`, recognising its format by content.
///
/// A source with no known magic is accepted as a raw image only if its length is a non-zero
/// multiple of the sector size; anything else (a 4-byte placeholder, text) is refused.
pub fn open(source: Arc<dyn ReadAt>) -> Result<Arc<dyn DiskImage>> {
    match sniff(&*source)? {
        Sniffed::VmdkSparse => Ok(Arc::new(vmdk::SparseVmdk::open(source)?)),
        Sniffed::Unsupported(name) => Err(DiskError::Unsupported { format: name }.into()),
        Sniffed::Unknown => Ok(Arc::new(raw::RawImage::open(source)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_by_content() {
        let mut vhd_fixed = vec![0u8; 4096];
        vhd_fixed[4096 - 512..4096 - 504].copy_from_slice(b"conectix");
        assert_eq!(
            sniff(&vhd_fixed).unwrap(),
            Sniffed::Unsupported("VHD (fixed)")
        );
        assert_eq!(
            sniff(&b"QFI\xfb\0\0\0\x03".to_vec()).unwrap(),
            Sniffed::Unsupported("qcow2")
        );
        assert_eq!(sniff(&b"KDMV".to_vec()).unwrap(), Sniffed::VmdkSparse);
        assert_eq!(sniff(&vec![0u8; 1024]).unwrap(), Sniffed::Unknown);
        assert_eq!(sniff(&Vec::new()).unwrap(), Sniffed::Unknown);
        let e = open(Arc::new(vhd_fixed)).err().unwrap();
        assert!(e.to_string().contains("VHD"), "{e}");
    }
}
