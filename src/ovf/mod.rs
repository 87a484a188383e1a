//! The OVF descriptor: a typed model with the byte span of every value (docs/formats.md §2, §6
//! rules 8, 9, 11, 12).
//!
//! [`parse`] reads a descriptor in three steps: [`xml`] turns the bytes into a small element
//! tree, refusing DTDs and bounding depth, attributes and size; `build` turns the tree into a
//! [`Descriptor`] and checks the rules the model depends on; the descriptor keeps the
//! original bytes. Versions 0.9, the pre-1.0 DMTF draft, 1.x and 2.x are read into one model,
//! matching names by namespace URI, never by prefix.
//!
//! Edits are made by [`edit::splice`]: replace the spans of the values that change and keep
//! every other byte. Nothing here re-serialises XML.
//!
//! Not here: manifests and certificates (their own modules), anything about tar members or
//! files on disk (the package layer resolves hrefs).

mod build;
pub mod edit;
pub mod model;
pub mod units;
pub mod xml;

use std::sync::Arc;

pub use build::parse_host_resource;
pub(crate) use build::{content_kind, section_name};
pub use edit::{Edit, splice};
pub use model::*;

use crate::error::Result;

/// Largest descriptor accepted: 32 MiB (docs/formats.md §6 rule 6). Real descriptors are a few
/// kilobytes to a few hundred; VirtualBox's machine blob is the largest part.
pub const MAX_DESCRIPTOR_BYTES: u64 = 32 << 20;

/// An OVF descriptor is malformed or violates a rule.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OvfError {
    /// Larger than [`MAX_DESCRIPTOR_BYTES`].
    #[error("descriptor is {size} bytes, above the limit of {limit}")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Not UTF-8 (UTF-16, or a declared single-byte encoding with non-UTF-8 bytes).
    #[error("descriptor encoding {encoding} is not supported (only UTF-8)")]
    UnsupportedEncoding {
        /// The encoding found (from the byte-order mark or the declaration).
        encoding: String,
    },
    /// Invalid UTF-8.
    #[error("descriptor is not valid UTF-8 at byte {position}")]
    InvalidUtf8 {
        /// Offset of the first bad byte.
        position: usize,
    },
    /// The XML is not well formed.
    #[error("malformed XML at byte {position}: {message}")]
    Xml {
        /// Offset in the descriptor.
        position: usize,
        /// What the parser said.
        message: String,
    },
    /// A document type declaration (`<!DOCTYPE`): DTDs and entities are refused (no XXE, no
    /// billion laughs).
    #[error("descriptor has a DOCTYPE at byte {position}; DTDs and entities are refused")]
    Dtd {
        /// Offset of the declaration.
        position: usize,
    },
    /// Elements nested deeper than [`xml::MAX_DEPTH`].
    #[error("descriptor nests elements {depth} deep, above the limit")]
    TooDeep {
        /// The depth reached.
        depth: usize,
    },
    /// An element with more than [`xml::MAX_ATTRIBUTES`] attributes.
    #[error("element at byte {position} has more than {limit} attributes")]
    TooManyAttributes {
        /// Offset of the element.
        position: usize,
        /// The limit.
        limit: usize,
    },
    /// More than [`xml::MAX_ELEMENTS`] elements.
    #[error("descriptor has more than {limit} elements")]
    TooManyElements {
        /// The limit.
        limit: usize,
    },
    /// The document ends with elements still open.
    #[error("descriptor is truncated: element {open_element:?} is never closed")]
    Truncated {
        /// The innermost open element.
        open_element: String,
    },
    /// The root element is not `Envelope`.
    #[error("root element is {root:?}, not an OVF Envelope")]
    NotAnEnvelope {
        /// The root element's name as written.
        root: String,
    },
    /// An `Envelope` in a namespace that is not an OVF version we know.
    #[error("Envelope namespace {namespace:?} is not a known OVF version")]
    UnsupportedNamespace {
        /// The namespace URI.
        namespace: String,
    },
    /// No VirtualSystem or VirtualSystemCollection.
    #[error("descriptor has no VirtualSystem or VirtualSystemCollection")]
    NoContent,
    /// A required attribute is missing.
    #[error("{element} at byte {position} has no ovf:{attribute}")]
    MissingAttribute {
        /// The element.
        element: &'static str,
        /// The attribute (local name).
        attribute: &'static str,
        /// Offset of the element.
        position: usize,
    },
    /// A required child element is missing.
    #[error("{element} at byte {position} has no {child}")]
    MissingElement {
        /// The element.
        element: &'static str,
        /// The missing child.
        child: &'static str,
        /// Offset of the element.
        position: usize,
    },
    /// A value does not parse (number, boolean).
    #[error("{what} {value:?} at byte {position} is not valid")]
    BadValue {
        /// Which value.
        what: &'static str,
        /// The text (at most 100 characters).
        value: String,
        /// Offset of the value.
        position: usize,
    },
    /// Two Files with the same `ovf:id` (rule 9).
    #[error("two Files have the id {id:?}")]
    DuplicateFileId {
        /// The id.
        id: String,
    },
    /// Two Files with the same `ovf:href` (rule 9).
    #[error("two Files have the href {href:?}")]
    DuplicateHref {
        /// The href.
        href: String,
    },
    /// Two Disks with the same `ovf:diskId` (rule 9).
    #[error("two Disks have the diskId {disk_id:?}")]
    DuplicateDiskId {
        /// The diskId.
        disk_id: String,
    },
    /// A Disk's `ovf:fileRef` names no File (rule 9).
    #[error("disk {disk_id:?} refers to file {file_ref:?}, which References does not list")]
    DiskFileRefUnknown {
        /// The disk.
        disk_id: String,
        /// The fileRef.
        file_ref: String,
    },
    /// A Disk's `ovf:parentRef` names no Disk.
    #[error("disk {disk_id:?} has parent {parent_ref:?}, which is not a disk")]
    DiskParentUnknown {
        /// The disk.
        disk_id: String,
        /// The parentRef.
        parent_ref: String,
    },
    /// Disks whose `ovf:parentRef` chain loops.
    #[error("disk {disk_id:?} is its own ancestor through ovf:parentRef")]
    DiskParentCycle {
        /// A disk on the loop.
        disk_id: String,
    },
    /// Capacity times units does not fit 64 bits (rule 11).
    #[error("capacity of disk {disk_id:?} overflows 64 bits")]
    CapacityOverflow {
        /// The disk.
        disk_id: String,
    },
    /// An item quantity times its units does not fit 64 bits.
    #[error("quantity of item {instance_id:?} overflows 64 bits")]
    QuantityOverflow {
        /// The item's InstanceID.
        instance_id: String,
    },
    /// Units that are not a byte unit we know.
    #[error("{what} {units:?} is not a known byte unit")]
    UnknownUnits {
        /// Which attribute or element.
        what: &'static str,
        /// The units as written.
        units: String,
    },
    /// A `${key}` capacity names no property (rule 11).
    #[error("capacity of disk {disk_id:?} refers to property {property:?}, which does not exist")]
    CapacityPropertyUnknown {
        /// The disk.
        disk_id: String,
        /// The key.
        property: String,
    },
    /// A HostResource that is not `ovf:/disk/<id>` or `ovf:/file/<id>` (rule 12).
    #[error(
        "item {instance_id:?} has HostResource {value:?}, not ovf:/disk/<id> or ovf:/file/<id>"
    )]
    BadHostResource {
        /// The item's InstanceID.
        instance_id: String,
        /// The HostResource text.
        value: String,
    },
    /// A HostResource naming a disk or file that does not exist (rule 12).
    #[error("item {instance_id:?} has HostResource {value:?}, which names no disk or file")]
    HostResourceUnknown {
        /// The item's InstanceID.
        instance_id: String,
        /// The HostResource text.
        value: String,
    },
    /// A `Parent` that names no item of the section (rule 12).
    #[error("item {instance_id:?} has Parent {parent:?}, which is not an item")]
    ItemParentUnknown {
        /// The item's InstanceID.
        instance_id: String,
        /// The Parent text.
        parent: String,
    },
    /// Items whose `Parent` chain loops (rule 12).
    #[error("item {instance_id:?} is its own ancestor through Parent")]
    ItemParentCycle {
        /// An item on the loop.
        instance_id: String,
    },
    /// An `ovf:configuration` id that DeploymentOptionSection does not define (rule 12).
    #[error("configuration {id:?} is used but not defined in DeploymentOptionSection")]
    UnknownConfiguration {
        /// The id.
        id: String,
    },
    /// An edit that cannot be applied.
    #[error("cannot apply an edit of bytes {start}..{end}: {reason}")]
    BadEdit {
        /// Start of the span.
        start: usize,
        /// End of the span.
        end: usize,
        /// Why.
        reason: &'static str,
    },
}

/// Lets `?` turn a descriptor error into the one public [`Error`](crate::error::Error).
impl From<OvfError> for crate::error::Error {
    fn from(e: OvfError) -> Self {
        crate::error::Error::layer(e)
    }
}

/// Parses a descriptor from its bytes (at most [`MAX_DESCRIPTOR_BYTES`]).
pub fn parse(bytes: &[u8]) -> Result<Descriptor> {
    Ok(parse_descriptor(bytes)?)
}

/// [`parse`] with the layer's own error type.
pub fn parse_descriptor(bytes: &[u8]) -> std::result::Result<Descriptor, OvfError> {
    parse_with_tree(bytes).map(|(descriptor, _)| descriptor)
}

/// [`parse_descriptor`], also handing back the element tree the model was built from: the
/// settings layer edits against that tree, and one XML parse then serves both.
pub(crate) fn parse_with_tree(
    bytes: &[u8],
) -> std::result::Result<(Descriptor, xml::Tree), OvfError> {
    let size = bytes.len() as u64;
    if size > MAX_DESCRIPTOR_BYTES {
        return Err(OvfError::TooLarge {
            size,
            limit: MAX_DESCRIPTOR_BYTES,
        });
    }
    let tree = xml::parse_tree(bytes)?;
    let descriptor = build::build(&tree, Arc::from(bytes))?;
    Ok((descriptor, tree))
}

/// How many whole-document XML parses ([`xml::parse_tree`]) and descriptor models
/// (`build::build`) this thread has made: tests count what an operation costs (one settings
/// edit must not re-parse the descriptor again and again). Per thread, so tests running in
/// parallel do not see each other's parses.
#[cfg(test)]
pub(crate) mod parse_count {
    use std::cell::Cell;

    thread_local! {
        static TREES: Cell<u64> = const { Cell::new(0) };
        static MODELS: Cell<u64> = const { Cell::new(0) };
    }

    /// Counts one XML parse of a whole document.
    pub(crate) fn tree() {
        TREES.with(|n| n.set(n.get() + 1));
    }

    /// Counts one descriptor model built.
    pub(crate) fn model() {
        MODELS.with(|n| n.set(n.get() + 1));
    }

    /// (XML parses, models built) so far on this thread.
    pub(crate) fn get() -> (u64, u64) {
        (TREES.with(Cell::get), MODELS.with(Cell::get))
    }
}

impl Descriptor {
    /// The descriptor with `edits` spliced in (see [`edit::splice`]); with no edits, the
    /// original bytes.
    pub fn with_edits(&self, edits: &[Edit]) -> Result<Vec<u8>> {
        Ok(splice(&self.bytes, edits)?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
