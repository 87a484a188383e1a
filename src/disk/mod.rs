//! Disk images: one factory that sniffs the format, one module per format, one engine.
//!
//! A format module only parses headers and tables and answers [`DiskImage::map`]: which
//! bytes of its source (or which decoded unit) hold a virtual range. It never caches and
//! never decides how reads are scheduled; the [`engine`] does the I/O, consults the shared
//! grain cache and decodes units, holding no lock while decoding. Format modules receive a
//! [`ReadAt`] window and never know about archives, so unit tests hand them a `Vec<u8>`.
//!
//! Formats (sniffed by content, never by name): stream-optimized and hosted-sparse VMDK
//! ([`vmdk`]), VMDK descriptor files with flat, sparse and zero extents
//! ([`vmdk_descriptor`]), VHD fixed, dynamic and differencing ([`vhd`]), VHDX ([`vhdx`]),
//! qcow2 v2 and v3 ([`qcow2`]), and plain raw images ([`raw`]).
//!
//! Images that need other files of the package (the extents a VMDK descriptor names; the
//! parent of a differencing VHD/VHDX, the backing file of a qcow2, the parent of a VMDK
//! delta link) get them through one mechanism: [`open_with`] takes an [`OpenContext`] whose
//! resolver maps a file name, relative to the image's own folder in the package, to its
//! bytes. Extents are needed to open at all; parents are only named by the image
//! ([`DiskImage::parent`], a [`ParentRef`]) and opened by the caller (the appliance), which
//! builds the chain of flat disks.

pub mod engine;
pub mod inflate;
pub mod qcow2;
pub mod raw;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;
pub mod vmdk_descriptor;
pub mod vmdk_reencode;
pub mod vmdk_writer;

#[cfg(test)]
pub(crate) mod testutil;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use crate::error::Result;
use crate::io::ReadAt;
use crate::io::budget::Budget;

/// Sector size used by every format here (bytes).
pub const SECTOR_BYTES: u64 = 512;

/// Largest virtual disk we accept: 64 TiB, far above any appliance disk and far below the
/// point where sector arithmetic could overflow (docs/formats.md §6 rule 17).
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
    /// VMDK descriptor file, createType monolithicFlat: one flat extent.
    VmdkMonolithicFlat,
    /// VMDK descriptor file, createType twoGbMaxExtentSparse: hosted sparse extents.
    VmdkTwoGbMaxExtentSparse,
    /// VMDK descriptor file, createType twoGbMaxExtentFlat: flat extents.
    VmdkTwoGbMaxExtentFlat,
    /// VMDK descriptor file, createType vmfs (and its preallocated/thin variants).
    VmdkVmfs,
    /// VMDK descriptor file of another createType (custom, monolithicSparse, ...).
    VmdkDescriptor,
    /// VHD, fixed: raw data followed by a footer.
    VhdFixed,
    /// VHD, dynamic: block allocation table.
    VhdDynamic,
    /// VHD, differencing: dynamic with per-sector bitmaps over a parent.
    VhdDifferencing,
    /// VHDX whose blocks are all allocated (LeaveBlocksAllocated).
    VhdxFixed,
    /// VHDX, dynamic.
    VhdxDynamic,
    /// VHDX, differencing (has a parent).
    VhdxDifferencing,
    /// qcow2, version 2 or 3.
    Qcow2,
    /// A plain raw image.
    Raw,
}

impl DiskFormat {
    /// Short human name, as `ovafs info` shows it.
    pub fn name(self) -> &'static str {
        match self {
            DiskFormat::VmdkStreamOptimized => "vmdk (streamOptimized)",
            DiskFormat::VmdkSparse => "vmdk (monolithicSparse)",
            DiskFormat::VmdkMonolithicFlat => "vmdk (monolithicFlat)",
            DiskFormat::VmdkTwoGbMaxExtentSparse => "vmdk (twoGbMaxExtentSparse)",
            DiskFormat::VmdkTwoGbMaxExtentFlat => "vmdk (twoGbMaxExtentFlat)",
            DiskFormat::VmdkVmfs => "vmdk (vmfs)",
            DiskFormat::VmdkDescriptor => "vmdk (descriptor file)",
            DiskFormat::VhdFixed => "vhd (fixed)",
            DiskFormat::VhdDynamic => "vhd (dynamic)",
            DiskFormat::VhdDifferencing => "vhd (differencing)",
            DiskFormat::VhdxFixed => "vhdx (fixed)",
            DiskFormat::VhdxDynamic => "vhdx (dynamic)",
            DiskFormat::VhdxDifferencing => "vhdx (differencing)",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
        }
    }

    /// The family the format belongs to, as a Disk's `ovf:format` URI names it:
    /// `vmdk`, `vhd`, `vhdx`, `qcow2` or `raw`.
    pub fn family(self) -> &'static str {
        match self {
            DiskFormat::VmdkStreamOptimized
            | DiskFormat::VmdkSparse
            | DiskFormat::VmdkMonolithicFlat
            | DiskFormat::VmdkTwoGbMaxExtentSparse
            | DiskFormat::VmdkTwoGbMaxExtentFlat
            | DiskFormat::VmdkVmfs
            | DiskFormat::VmdkDescriptor => "vmdk",
            DiskFormat::VhdFixed | DiskFormat::VhdDynamic | DiskFormat::VhdDifferencing => "vhd",
            DiskFormat::VhdxFixed | DiskFormat::VhdxDynamic | DiskFormat::VhdxDifferencing => {
                "vhdx"
            }
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
        }
    }
}

/// The format family a Disk's `ovf:format` URI names (docs/formats.md §2.3), matched
/// case-insensitively; `None` for a URI ovafs does not know (no judgement then).
pub fn uri_family(uri: &str) -> Option<&'static str> {
    let u = uri.to_ascii_lowercase();
    if u.contains("vmdk") {
        Some("vmdk")
    } else if u.contains("vhdx") {
        Some("vhdx")
    } else if u.contains("vhdspec") || u.contains("virtualserver") || u.contains("vhd") {
        Some("vhd")
    } else if u.contains("qcow") {
        Some("qcow2")
    } else if u.contains("ecma-119") || u.contains("raw") {
        // An ISO 9660 image or a raw disk: read as raw.
        Some("raw")
    } else {
        None
    }
}

/// The file an image names as its parent: the parent of a differencing VHD or VHDX, the
/// backing file of a qcow2, the parent of a VMDK delta link (`parentFileNameHint`).
///
/// The names are what the image says, before any path rule: Windows paths, `file://` URLs,
/// paths of the machine that wrote the image. [`ParentRef::candidates`] turns them into
/// package-relative names to look up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParentRef {
    /// Names as the image gives them, most specific first (e.g. a VHD's relative locator,
    /// then its absolute one, then the parent's bare file name).
    pub names: Vec<String>,
    /// The parent's format when the image says it (qcow2's backing format extension).
    pub format: Option<String>,
}

/// Most candidate names [`ParentRef::candidates`] returns (two per name).
pub const MAX_PARENT_CANDIDATES: usize = 32;

impl ParentRef {
    /// A parent known by one name.
    pub fn named(name: impl Into<String>) -> Self {
        ParentRef {
            names: vec![name.into()],
            format: None,
        }
    }

    /// The names to look up in the package, relative to the image's folder, best first:
    /// each name with `\` read as a separator and a `file://` scheme (with `localhost`)
    /// removed, as it is when it is relative; then the bare file name of each. An absolute
    /// path (`/x`, `C:\x`, `\\server\x`) is only tried by its file name: the parent of an
    /// image in a package sits beside it, wherever it sat on the machine that made it.
    /// Duplicates and empty names are dropped.
    pub fn candidates(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let push = |s: &str, out: &mut Vec<String>| {
            if !s.is_empty() && out.len() < MAX_PARENT_CANDIDATES && !out.iter().any(|o| o == s) {
                out.push(s.to_string());
            }
        };
        let cleaned: Vec<(String, bool)> = self.names.iter().map(|n| clean_name(n)).collect();
        for (name, absolute) in &cleaned {
            if !absolute {
                push(name, &mut out);
            }
        }
        for (name, _) in &cleaned {
            push(name.rsplit('/').next().unwrap_or(name), &mut out);
        }
        out
    }

    /// The first name, for messages.
    pub fn display_name(&self) -> &str {
        self.names.first().map_or("", String::as_str)
    }
}

/// A parent name with `\` as `/`, `file://[localhost]` and leading `./` removed, NULs and
/// surrounding blanks trimmed; and whether it is absolute.
fn clean_name(raw: &str) -> (String, bool) {
    let mut s = raw.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    let mut absolute = false;
    if let Some(rest) = s.strip_prefix("file://") {
        s = rest.strip_prefix("localhost").unwrap_or(rest);
        absolute = s.starts_with('/') && !s.starts_with("/.");
        s = s
            .strip_prefix('/')
            .filter(|r| r.starts_with('.'))
            .unwrap_or(s);
    }
    let mut name = s.replace('\\', "/");
    let drive =
        name.len() >= 2 && name.as_bytes()[1] == b':' && name.as_bytes()[0].is_ascii_alphabetic();
    absolute |= name.starts_with('/') || drive;
    while let Some(rest) = name.strip_prefix("./") {
        name = rest.to_string();
    }
    (name, absolute)
}

/// Looks up a file of the package by name, relative to the folder of the image being
/// opened: its package-relative name (the key under which it is shared, see
/// [`SharedImages`]) and its bytes; `None` when there is no such file or the name is
/// refused by the package's path rules (absolute, `..`, escaping the package).
pub type Resolver<'a> = dyn Fn(&str) -> Option<(String, Arc<dyn ReadAt>)> + 'a;

/// The images opened while opening one package (a mount, `ovafs info`), by package-relative
/// file name, so that a file named many times (the same extent on thousands of descriptor
/// lines, the parent of many disks) is parsed once and its tables are shared.
#[derive(Default)]
pub struct SharedImages {
    sparse: Mutex<HashMap<String, Arc<vmdk::SparseVmdk>>>,
    images: Mutex<HashMap<String, Arc<dyn DiskImage>>>,
}

impl SharedImages {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The sparse extent `name`, opened by `open` the first time it is asked for.
    pub fn sparse(
        &self,
        name: &str,
        open: impl FnOnce() -> Result<vmdk::SparseVmdk>,
    ) -> Result<Arc<vmdk::SparseVmdk>> {
        if let Some(v) = lock(&self.sparse).get(name) {
            return Ok(v.clone());
        }
        // Opened without the lock (it reads the file); opening is single-threaded, so no
        // other opener races for the same name.
        let v = Arc::new(open()?);
        lock(&self.sparse).insert(name.to_string(), v.clone());
        Ok(v)
    }

    /// The image in file `name`, opened by `open` the first time it is asked for.
    pub fn image(
        &self,
        name: &str,
        open: impl FnOnce() -> Result<Arc<dyn DiskImage>>,
    ) -> Result<Arc<dyn DiskImage>> {
        if let Some(v) = lock(&self.images).get(name) {
            return Ok(v.clone());
        }
        let v = open()?;
        lock(&self.images).insert(name.to_string(), v.clone());
        Ok(v)
    }

    /// Files opened so far (sparse extents and whole images).
    pub fn len(&self) -> usize {
        lock(&self.sparse).len() + lock(&self.images).len()
    }

    /// Whether nothing was opened.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Maps of immutable images: a panic elsewhere cannot leave them inconsistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What [`open_with`] may use besides the image's own bytes.
pub struct OpenContext<'a> {
    /// Finds the other files of the package (extents of a VMDK descriptor).
    pub resolver: &'a Resolver<'a>,
    /// Counts every table the image allocates.
    pub budget: &'a Budget,
    /// Extents already opened for this package, shared.
    pub shared: &'a SharedImages,
}

fn no_files(_name: &str) -> Option<(String, Arc<dyn ReadAt>)> {
    None
}

impl<'a> OpenContext<'a> {
    /// A context finding files through `resolver`, counting tables against `budget` and
    /// sharing extents through `shared`.
    pub fn new(resolver: &'a Resolver<'a>, budget: &'a Budget, shared: &'a SharedImages) -> Self {
        OpenContext {
            resolver,
            budget,
            shared,
        }
    }

    /// The package-relative name and bytes of the package file `name`, if there is one.
    pub fn resolve(&self, name: &str) -> Option<(String, Arc<dyn ReadAt>)> {
        (self.resolver)(name)
    }

    /// The hosted sparse extent in `file` (package-relative name `key`), opened once per
    /// package and shared by every descriptor line that names it.
    pub fn sparse_extent(&self, key: &str, file: Arc<dyn ReadAt>) -> Result<Arc<vmdk::SparseVmdk>> {
        self.shared
            .sparse(key, || vmdk::SparseVmdk::open_in(file, self.budget))
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

    /// The parent (backing) file the image names, if it has one. An image that names a
    /// parent must not be read without it: its unallocated extents are the parent's bytes.
    fn parent(&self) -> Option<ParentRef> {
        None
    }
}

/// A disk image is malformed or unsupported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiskError {
    /// A VMDK rule was broken.
    #[error(transparent)]
    Vmdk(#[from] vmdk::VmdkError),
    /// A VMDK descriptor file is malformed or names extents that cannot be read.
    #[error(transparent)]
    VmdkDescriptor(#[from] vmdk_descriptor::DescriptorError),
    /// A VHD rule was broken.
    #[error(transparent)]
    Vhd(#[from] vhd::VhdError),
    /// A VHDX rule was broken.
    #[error(transparent)]
    Vhdx(#[from] vhdx::VhdxError),
    /// A qcow2 rule was broken.
    #[error(transparent)]
    Qcow2(#[from] qcow2::Qcow2Error),
    /// The image names a parent (backing) file that is not in the package. Reading it
    /// without its parent would show zeros where the parent's data belongs, so it is refused.
    #[error("{image}: parent file {parent:?} is not in the package (looked for {candidates:?})")]
    ParentNotFound {
        /// The image that names the parent.
        image: String,
        /// The name the image gives (first of its names).
        parent: String,
        /// Package-relative names that were looked up.
        candidates: Vec<String>,
    },
    /// The Disk an OVF delta disk (`ovf:parentRef`) names as its parent cannot be read.
    #[error("parent disk {parent} cannot be read: {reason}")]
    ParentDiskUnavailable {
        /// diskId of the parent.
        parent: String,
        /// Why.
        reason: String,
    },
    /// A chain of parents deeper than accepted.
    #[error("{image}: chain of parent images is deeper than {limit}")]
    ParentChainTooDeep {
        /// The image at the top of the chain.
        image: String,
        /// The limit.
        limit: usize,
    },
    /// A chain of parents that comes back to an image already in it.
    #[error("{image}: parent chain loops back to {repeated}")]
    ParentCycle {
        /// The image at the top of the chain.
        image: String,
        /// The file met twice.
        repeated: String,
    },
    /// The stored bytes failed an integrity check (manifest digest).
    #[error("integrity check failed: {reason}")]
    Integrity {
        /// What failed.
        reason: String,
    },
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

/// Lets `?` turn a disk error into the one public [`Error`](crate::error::Error).
impl From<DiskError> for crate::error::Error {
    fn from(e: DiskError) -> Self {
        crate::error::Error::layer(e)
    }
}

/// What the first bytes (and, for VHD, the last sector) of a source say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// A VMDK sparse extent (`KDMV`).
    VmdkSparse,
    /// A VMDK text descriptor file.
    VmdkDescriptor,
    /// A VHD: footer copy at 0 (dynamic, differencing) or footer at the end (fixed).
    Vhd,
    /// A VHDX (`vhdxfile`).
    Vhdx,
    /// A qcow image (`QFI\xfb`; the version decides whether it is readable).
    Qcow2,
    /// A known format that ovafs cannot decode, by name.
    Unsupported(&'static str),
    /// No known signature.
    Unknown,
}

/// Signatures of formats recognised but not decoded, with the offset they sit at.
const UNSUPPORTED_SIGNATURES: [(u64, &[u8], &str); 3] = [
    (0, b"COWD", "VMDK COWD (ESXi vmfsSparse)"),
    (0, &[0xbe, 0xba, 0xfe, 0xca], "VMDK seSparse"),
    (0, b"\x1f\x8b", "gzip-compressed data"),
];

/// Bytes read from the start of a source to sniff it (enough for a descriptor's comment
/// lines before `version=`).
const SNIFF_BYTES: usize = 1024;

/// Recognises a disk image format by content, never by name.
pub fn sniff(source: &dyn ReadAt) -> Result<Sniffed> {
    let mut head = [0u8; SNIFF_BYTES];
    let n = source.read_at(0, &mut head)?;
    let head = &head[..n];
    if head.starts_with(&vmdk::SPARSE_MAGIC) {
        return Ok(Sniffed::VmdkSparse);
    }
    if head.starts_with(&vhd::FOOTER_COOKIE) {
        return Ok(Sniffed::Vhd);
    }
    if head.starts_with(&vhdx::FILE_SIGNATURE) {
        return Ok(Sniffed::Vhdx);
    }
    if head.starts_with(&qcow2::MAGIC) {
        return Ok(Sniffed::Qcow2);
    }
    for (_, sig, name) in UNSUPPORTED_SIGNATURES {
        if head.starts_with(sig) {
            return Ok(Sniffed::Unsupported(name));
        }
    }
    if vmdk_descriptor::looks_like_descriptor(head) {
        return Ok(Sniffed::VmdkDescriptor);
    }
    // A fixed VHD is raw data followed by a 512-byte footer (511 bytes in images older than
    // Virtual PC 2004).
    if vhd::fixed_footer_offset(source)?.is_some() {
        return Ok(Sniffed::Vhd);
    }
    Ok(Sniffed::Unknown)
}

/// Opens the disk image held in `source`, recognising its format by content, with no other
/// files of the package at hand (see [`open_with`]).
///
/// A source with no known magic is accepted as a raw image only if its length is a non-zero
/// multiple of the sector size; anything else (a 4-byte placeholder, text) is refused.
pub fn open(source: Arc<dyn ReadAt>) -> Result<Arc<dyn DiskImage>> {
    // A budget of its own: each image opened alone is bounded by the default limit, and
    // nothing is counted across unrelated openings.
    let budget = Budget::default_metadata();
    let shared = SharedImages::new();
    open_with(source, &OpenContext::new(&no_files, &budget, &shared))
}

/// Opens the disk image held in `source`, recognising its format by content. Files the
/// image needs to be read at all (the extents of a VMDK descriptor) are found through
/// `ctx`; a parent the image names is only reported ([`DiskImage::parent`]).
pub fn open_with(source: Arc<dyn ReadAt>, ctx: &OpenContext<'_>) -> Result<Arc<dyn DiskImage>> {
    let budget = ctx.budget;
    match sniff(&*source)? {
        Sniffed::VmdkSparse => match vmdk::SparseVmdk::open_in(source.clone(), budget) {
            Ok(v) => Ok(Arc::new(v)),
            // A sparse header with no capacity of its own that wraps a descriptor naming
            // other extents (qemu reads these the same way).
            Err(e)
                if matches!(
                    e.layer_error(),
                    Some(DiskError::Vmdk(vmdk::VmdkError::DescriptorWrapper { .. }))
                ) =>
            {
                Ok(Arc::new(vmdk_descriptor::DescriptorVmdk::open_wrapper(
                    &*source, ctx,
                )?))
            }
            Err(e) => Err(e),
        },
        Sniffed::VmdkDescriptor => Ok(Arc::new(vmdk_descriptor::DescriptorVmdk::open(
            &*source, ctx,
        )?)),
        Sniffed::Vhd => Ok(Arc::new(vhd::Vhd::open_in(source, budget)?)),
        Sniffed::Vhdx => Ok(Arc::new(vhdx::Vhdx::open_in(source, budget)?)),
        Sniffed::Qcow2 => Ok(Arc::new(qcow2::Qcow2::open_in(source, budget)?)),
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
        assert_eq!(sniff(&vhd_fixed).unwrap(), Sniffed::Vhd);
        assert_eq!(sniff(&b"conectix".to_vec()).unwrap(), Sniffed::Vhd);
        assert_eq!(sniff(&b"vhdxfile".to_vec()).unwrap(), Sniffed::Vhdx);
        assert_eq!(
            sniff(&b"QFI\xfb\0\0\0\x03".to_vec()).unwrap(),
            Sniffed::Qcow2
        );
        assert_eq!(sniff(&b"KDMV".to_vec()).unwrap(), Sniffed::VmdkSparse);
        assert_eq!(
            sniff(&b"# Disk DescriptorFile\nversion=1\n".to_vec()).unwrap(),
            Sniffed::VmdkDescriptor
        );
        // qemu's probe: comments and blank lines, then version=.
        assert_eq!(
            sniff(&b"# a comment\n   \r\nversion=2\r\nCID=1\n".to_vec()).unwrap(),
            Sniffed::VmdkDescriptor
        );
        assert_eq!(
            sniff(&b"hello\nversion=1\n".to_vec()).unwrap(),
            Sniffed::Unknown
        );
        assert_eq!(
            sniff(&b"COWD".to_vec()).unwrap(),
            Sniffed::Unsupported("VMDK COWD (ESXi vmfsSparse)")
        );
        assert_eq!(
            sniff(&b"\x1f\x8b\x08".to_vec()).unwrap(),
            Sniffed::Unsupported("gzip-compressed data")
        );
        assert_eq!(sniff(&vec![0u8; 1024]).unwrap(), Sniffed::Unknown);
        assert_eq!(sniff(&Vec::new()).unwrap(), Sniffed::Unknown);
        // A bare footer cookie with a bad checksum is a VHD that fails to open.
        let e = open(Arc::new(vhd_fixed)).err().unwrap();
        assert!(e.to_string().contains("VHD"), "{e}");
        let e = open(Arc::new(b"COWD".to_vec())).err().unwrap();
        assert!(matches!(
            e.layer_error(),
            Some(DiskError::Unsupported { .. })
        ));
    }

    #[test]
    fn parent_candidates_follow_the_path_rules() {
        let p = ParentRef {
            names: vec![
                ".\\base.vhd".into(),
                "sub\\dir\\base.vhd".into(),
                "C:\\Projects\\test\\fat-parent.vhd".into(),
                "file://localhost/Users/me/vm/base.vhd".into(),
                "file://./rel.vhd".into(),
                "/abs/olute.qcow2".into(),
                "../up.qcow2".into(),
                "\\\\server\\share\\unc.vhd".into(),
                "".into(),
            ],
            format: None,
        };
        assert_eq!(
            p.candidates(),
            vec![
                "base.vhd",
                "sub/dir/base.vhd",
                "rel.vhd",
                "../up.qcow2",
                "fat-parent.vhd",
                "olute.qcow2",
                "up.qcow2",
                "unc.vhd",
            ]
        );
        assert_eq!(p.display_name(), ".\\base.vhd");
        assert_eq!(ParentRef::named("x").candidates(), vec!["x"]);
        assert!(ParentRef::default().candidates().is_empty());
    }

    #[test]
    fn format_uris_name_families() {
        for (uri, family) in [
            (
                "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized",
                Some("vmdk"),
            ),
            (
                "http://www.microsoft.com/technet/virtualserver/downloads/vhdspec.mspx",
                Some("vhd"),
            ),
            (
                "http://technet.microsoft.com/en-us/virtualserver/bb676673.aspx",
                Some("vhd"),
            ),
            (
                "http://www.gnome.org/~markmc/qcow-image-format.html",
                Some("qcow2"),
            ),
            ("urn:example:vhdx", Some("vhdx")),
            ("http://example.com/unknown", None),
        ] {
            assert_eq!(uri_family(uri), family, "{uri}");
        }
        assert_eq!(DiskFormat::VhdDifferencing.family(), "vhd");
        assert_eq!(
            DiskFormat::VmdkMonolithicFlat.name(),
            "vmdk (monolithicFlat)"
        );
    }
}
