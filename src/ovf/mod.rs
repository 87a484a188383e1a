//! OVF descriptor model. PLACEHOLDER: being written.

use crate::error::Result;

/// An OVF descriptor is malformed or violates a rule.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OvfError {
    /// The XML is not well formed.
    #[error("malformed XML: {0}")]
    Xml(String),
}

/// A parsed descriptor.
#[derive(Debug, Clone, Default)]
pub struct Descriptor {}

/// Parses a descriptor.
pub fn parse(_bytes: &[u8]) -> Result<Descriptor> {
    Err(OvfError::Xml("OVF support is not built yet".into()).into())
}
