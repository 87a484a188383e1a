//! An OVF package: archive or folder, descriptor, and resolved members. PLACEHOLDER.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::archive::MemberKind;
use crate::error::Result;
use crate::io::ReadAt;
use crate::ovf::Descriptor;

/// A package is inconsistent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackageError {
    /// No descriptor.
    #[error("no OVF descriptor (.ovf) in the package")]
    NoDescriptor,
}

/// A file of the package.
pub struct Member {
    /// Path relative to the package root.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time (seconds since the epoch).
    pub mtime: u64,
    /// The bytes.
    pub data: Arc<dyn ReadAt>,
    /// Kind.
    pub kind: MemberKind,
}

/// A disk of the DiskSection and where its bytes are.
pub struct PackageDisk {
    /// ovf:diskId.
    pub disk_id: String,
    /// ovf:fileRef.
    pub file_id: String,
    /// Member index, None for a disk without a file.
    pub member: Option<usize>,
    /// Unique file-name stem for disks/STEM.raw.
    pub stem: String,
}

/// An opened package.
pub struct Package {
    /// Source path.
    pub path: PathBuf,
    /// Members.
    pub members: Vec<Member>,
    /// Descriptor member.
    pub descriptor_member: usize,
    /// Parsed descriptor.
    pub descriptor: Descriptor,
    /// Disks.
    pub disks: Vec<PackageDisk>,
}

/// Opens a package.
pub fn open(_path: &Path) -> Result<Package> {
    Err(PackageError::NoDescriptor.into())
}
