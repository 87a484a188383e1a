//! An OVF package: archive or folder, descriptor, and resolved members. PLACEHOLDER.

use std::path::Path;

use crate::error::Result;

/// A package is inconsistent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackageError {
    /// No descriptor.
    #[error("no OVF descriptor (.ovf) in the package")]
    NoDescriptor,
}

/// An opened package.
pub struct Package {}

/// Opens a package.
pub fn open(_path: &Path) -> Result<Package> {
    Err(PackageError::NoDescriptor.into())
}
