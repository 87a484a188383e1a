//! Tar archives: an index of members built from headers only. PLACEHOLDER: being written.

use crate::error::Result;
use crate::io::ReadAt;

/// A tar archive is malformed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TarError {
    /// Not a tar archive at all.
    #[error("not a tar archive ({reason})")]
    NotTar {
        /// Why.
        reason: String,
    },
}

/// What kind of entry a member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberKind {
    /// A regular file (typeflag '0', '\0' or '7').
    Regular,
    /// A directory.
    Directory,
    /// Anything else (links, devices, FIFOs): listed for diagnostics, never served.
    Other,
}

/// One member of the archive, as its headers describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarMember {
    /// Normalised relative name (no leading "./", no "..", no NUL or control characters).
    pub name: String,
    /// Offset of the member's first header block (including GNU/pax extension headers).
    pub header_offset: u64,
    /// Offset of the member's data in the archive.
    pub data_offset: u64,
    /// Size of the data in bytes.
    pub size: u64,
    /// Permission bits from the header.
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
    /// Entry kind.
    pub kind: MemberKind,
}

/// The members of an archive, in archive order.
#[derive(Debug, Clone, Default)]
pub struct TarIndex {
    /// Members in archive order, duplicates already resolved.
    pub members: Vec<TarMember>,
}

/// Indexes the archive in `src`, reading headers only.
pub fn index(_src: &dyn ReadAt) -> Result<TarIndex> {
    Err(TarError::NotTar {
        reason: "tar support is not built yet".into(),
    }
    .into())
}
