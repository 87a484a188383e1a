//! VMDK descriptor files: a text descriptor (`# Disk DescriptorFile`) whose extent lines
//! name other files of the package (docs/formats.md §4.4, §4.6; qemu's `block/vmdk.c`
//! `vmdk_parse_extents`).
//!
//! createTypes read: monolithicFlat, twoGbMaxExtentFlat, twoGbMaxExtentSparse, vmfs (and
//! vmfsPreallocated, vmfsEagerZeroedThick, vmfsThin), custom and any other whose extents
//! are of the kinds below. Extents are concatenated in order:
//! * `FLAT "file" OFFSET` and `VMFS "file"` (offset 0): raw bytes of another file, which
//!   must hold the whole extent;
//! * `SPARSE "file"`: a hosted sparse extent (descriptorOffset 0, or a monolithic sparse
//!   file) read with [`SparseVmdk`]; its capacity must cover the extent;
//! * `ZERO`: zeros, no file.
//!
//! VMFSSPARSE (COWD), SESPARSE, VMFSRDM and VMFSRAW extents and NOACCESS extents are
//! refused. Extent files are found through the [`OpenContext`] resolver (relative to the
//! descriptor's folder in the package); a missing one is [`DescriptorError::MissingExtent`].
//! `parentFileNameHint` (a delta link) is reported as the image's parent.
//!
//! Where ovafs differs from qemu: qemu skips extent lines whose access is not `RW` and
//! ZERO extents (its disk is then shorter); ovafs reads RDONLY extents like RW ones and
//! ZERO extents as zeros, as VMware does. A malformed extent line is an error here; qemu
//! skips lines it does not recognise and refuses FLAT lines without an offset.
//!
//! The descriptor is also read when a sparse extent header has no capacity of its own and
//! embeds a descriptor naming other extents (a "descriptor wrapper", read by qemu too).

use std::sync::Arc;

use super::vmdk::header::SparseExtentHeader;
use super::vmdk::{
    EmbeddedDescriptor, MAX_DESCRIPTOR_SECTORS, SPARSE_MAGIC, SparseVmdk, parse_extent_line,
};
use super::{
    DiskError, DiskFormat, DiskImage, Extent, MAX_VIRTUAL_BYTES, OpenContext, ParentRef,
    SECTOR_BYTES,
};
use crate::error::Result;
use crate::io::{Concat, ReadAt, read_vec_at};

/// Largest descriptor file read (1 MiB, qemu's limit for descriptors).
pub const MAX_DESCRIPTOR_BYTES: u64 = MAX_DESCRIPTOR_SECTORS * SECTOR_BYTES;

/// Most extents accepted (64 TiB in 2 GiB extents).
pub const MAX_EXTENTS: usize = 1 << 15;

/// Memory one extent line costs once opened (its start, its part, its file in the joined
/// source, its sparse-unit index entry).
const EXTENT_ENTRY_BYTES: u64 = 128;

/// A VMDK descriptor file is malformed or names extents that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DescriptorError {
    /// The descriptor is larger than accepted.
    #[error("VMDK descriptor of {len_bytes} bytes exceeds the limit of {limit_bytes}")]
    TooLarge {
        /// Its length.
        len_bytes: u64,
        /// The limit.
        limit_bytes: u64,
    },
    /// A line that starts like an extent line but cannot be read as one.
    #[error("VMDK descriptor line {line_no} is a malformed extent line: {line:?}")]
    BadExtentLine {
        /// 1-based line number.
        line_no: usize,
        /// The line (cut to 200 bytes).
        line: String,
    },
    /// The descriptor has no extent line.
    #[error("VMDK descriptor has no extents")]
    NoExtents,
    /// More extents than accepted.
    #[error("VMDK descriptor has more than {limit} extents")]
    TooManyExtents {
        /// The limit.
        limit: usize,
    },
    /// An extent kind or access ovafs does not read.
    #[error("VMDK extent {index} ({access} {extent_type}) is not supported")]
    UnsupportedExtent {
        /// 0-based extent index.
        index: usize,
        /// Access word.
        access: String,
        /// Type word.
        extent_type: String,
    },
    /// An extent file is not in the package.
    #[error("VMDK extent file {name:?} is not in the package")]
    MissingExtent {
        /// The name in the descriptor.
        name: String,
    },
    /// A flat extent's file is shorter than the extent.
    #[error("VMDK flat extent {name:?} needs {needed_bytes} bytes, the file has {len_bytes}")]
    FlatExtentTooShort {
        /// File name.
        name: String,
        /// (offset + sectors) * 512.
        needed_bytes: u64,
        /// File length.
        len_bytes: u64,
    },
    /// A sparse extent's capacity is smaller than its descriptor line says.
    #[error(
        "VMDK sparse extent {name:?} has {capacity_sectors} sectors, the descriptor says {needed_sectors}"
    )]
    SparseExtentTooSmall {
        /// File name.
        name: String,
        /// Its header's capacity.
        capacity_sectors: u64,
        /// The extent line's size.
        needed_sectors: u64,
    },
    /// The extents add up to more than the largest disk accepted.
    #[error("VMDK extents add up to more than {limit_bytes} bytes")]
    SizeTooLarge {
        /// The limit.
        limit_bytes: u64,
    },
    /// `map` outside the disk or for zero bytes (a caller bug).
    #[error(
        "VMDK map of {max_len} bytes at offset {offset} is outside the {virtual_size}-byte disk"
    )]
    MapOutOfRange {
        /// Offset asked for.
        offset: u64,
        /// Length asked for.
        max_len: u64,
        /// Size of the disk.
        virtual_size: u64,
    },
    /// `decode_unit` for a unit no sparse extent has.
    #[error("VMDK unit {unit} belongs to no sparse extent")]
    NoSuchUnit {
        /// Unit asked for.
        unit: u64,
    },
}

impl From<DescriptorError> for crate::error::Error {
    fn from(e: DescriptorError) -> Self {
        DiskError::VmdkDescriptor(e).into()
    }
}

/// Whether `head` (the first bytes of a file) is a VMDK text descriptor: the
/// `# Disk DescriptorFile` comment VirtualBox requires, or (qemu's probe) only comment and
/// blank lines before a `version=1|2|3` line.
pub fn looks_like_descriptor(head: &[u8]) -> bool {
    if head.starts_with(b"# Disk DescriptorFile") || head.starts_with(b"# Disk Descriptor File") {
        return true;
    }
    let mut rest = head;
    // Bounded: each step consumes one line of a finite buffer.
    while !rest.is_empty() {
        let end = rest.iter().position(|&b| b == b'\n');
        let Some(end) = end else {
            return false; // the first meaningful line is cut by the buffer's end
        };
        let line = &rest[..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first() == Some(&b'#') || line.iter().all(|&b| b == b' ') {
            rest = &rest[end + 1..];
            continue;
        }
        return matches!(line, b"version=1" | b"version=2" | b"version=3");
    }
    false
}

/// One extent of the disk.
enum Part {
    Zero,
    /// Offset in the joined source of the extent's first byte.
    Flat {
        base: u64,
    },
    /// A sparse extent; `base` is the offset of its file in the joined source, `first_unit`
    /// the number of its first grain in this image's unit numbering.
    Sparse {
        image: Arc<SparseVmdk>,
        base: u64,
        first_unit: u64,
        units: u64,
    },
}

/// A VMDK described by a text descriptor, its extents read from other package files.
pub struct DescriptorVmdk {
    format: DiskFormat,
    create_type: Option<String>,
    virtual_size: u64,
    /// Start of each extent in the virtual disk, ascending; `starts[0] == 0`.
    starts: Vec<u64>,
    parts: Vec<Part>,
    /// `(first_unit, index in parts)` of each sparse extent, ascending by unit: finds the
    /// extent of a unit by binary search whatever the number of extents.
    sparse_units: Vec<(u64, usize)>,
    /// Every extent file, joined: `Extent::Stored` offsets refer to this.
    source: Concat,
    unit_bytes: u64,
    parent: Option<ParentRef>,
}

impl std::fmt::Debug for DescriptorVmdk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DescriptorVmdk")
            .field("format", &self.format)
            .field("create_type", &self.create_type)
            .field("virtual_size", &self.virtual_size)
            .field("extents", &self.parts.len())
            .field("parent", &self.parent)
            .finish_non_exhaustive()
    }
}

/// The format a createType names.
fn format_of(create_type: Option<&str>) -> DiskFormat {
    match create_type.map(str::to_ascii_lowercase).as_deref() {
        Some("monolithicflat") => DiskFormat::VmdkMonolithicFlat,
        Some("twogbmaxextentsparse" | "2gbmaxextentsparse") => DiskFormat::VmdkTwoGbMaxExtentSparse,
        Some("twogbmaxextentflat" | "2gbmaxextentflat") => DiskFormat::VmdkTwoGbMaxExtentFlat,
        Some("vmfs" | "vmfspreallocated" | "vmfseagerzeroedthick" | "vmfsthin") => {
            DiskFormat::VmdkVmfs
        }
        _ => DiskFormat::VmdkDescriptor,
    }
}

impl DescriptorVmdk {
    /// Opens the descriptor file held in `source`, finding its extents through `ctx`.
    pub fn open(source: &dyn ReadAt, ctx: &OpenContext<'_>) -> Result<Self> {
        let len = source.len();
        if len > MAX_DESCRIPTOR_BYTES {
            return Err(DescriptorError::TooLarge {
                len_bytes: len,
                limit_bytes: MAX_DESCRIPTOR_BYTES,
            }
            .into());
        }
        let text = read_vec_at(source, "VMDK descriptor", 0, len, MAX_DESCRIPTOR_BYTES)?;
        Self::from_text(&text, ctx).map_err(|e| e.context("opening VMDK descriptor file"))
    }

    /// Opens the descriptor embedded in a sparse extent header with no capacity of its own.
    pub fn open_wrapper(source: &dyn ReadAt, ctx: &OpenContext<'_>) -> Result<Self> {
        let mut raw = [0u8; SparseExtentHeader::SIZE];
        source.read_exact_at(0, &mut raw)?;
        let h = SparseExtentHeader::parse(&raw);
        debug_assert_eq!(h.magic_number, SPARSE_MAGIC);
        let size = h.descriptor_size_sectors.min(MAX_DESCRIPTOR_SECTORS) * SECTOR_BYTES;
        let offset = h.descriptor_offset_sectors.saturating_mul(SECTOR_BYTES);
        let size = size.min(source.len().saturating_sub(offset));
        let text = read_vec_at(
            source,
            "VMDK embedded descriptor",
            offset.min(source.len()),
            size,
            MAX_DESCRIPTOR_BYTES,
        )?;
        Self::from_text(&text, ctx).map_err(|e| e.context("opening VMDK descriptor wrapper"))
    }

    fn from_text(bytes: &[u8], ctx: &OpenContext<'_>) -> Result<Self> {
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let bytes = &bytes[..end];
        let info = EmbeddedDescriptor::parse(bytes);
        let text = String::from_utf8_lossy(bytes);
        let mut lines = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            let first = line.split_whitespace().next().unwrap_or("");
            let is_extent = ["RW", "RDONLY", "NOACCESS"]
                .iter()
                .any(|a| a.eq_ignore_ascii_case(first));
            if !is_extent {
                continue;
            }
            let bad = || DescriptorError::BadExtentLine {
                line_no: i + 1,
                line: line.chars().take(200).collect(),
            };
            let e = parse_extent_line(line).ok_or_else(bad)?;
            if lines.len() >= MAX_EXTENTS {
                return Err(DescriptorError::TooManyExtents { limit: MAX_EXTENTS }.into());
            }
            lines.push((i + 1, e));
        }
        if lines.is_empty() {
            return Err(DescriptorError::NoExtents.into());
        }
        ctx.budget.charge(
            "VMDK descriptor extent list",
            (lines.len() as u64).saturating_mul(EXTENT_ENTRY_BYTES),
        )?;

        let mut starts = Vec::with_capacity(lines.len());
        let mut parts = Vec::with_capacity(lines.len());
        let mut files: Vec<Arc<dyn ReadAt>> = Vec::new();
        let mut file_base = 0u64;
        let mut next_unit = 0u64;
        let mut virtual_size = 0u64;
        let mut unit_bytes = 0u64;
        for (index, (line_no, e)) in lines.into_iter().enumerate() {
            let bad = |line: &str| DescriptorError::BadExtentLine {
                line_no,
                line: line.to_string(),
            };
            let unsupported = || DescriptorError::UnsupportedExtent {
                index,
                access: e.access.clone(),
                extent_type: e.extent_type.clone(),
            };
            if e.access.eq_ignore_ascii_case("NOACCESS") {
                return Err(unsupported().into());
            }
            let bytes = e
                .size_sectors
                .checked_mul(SECTOR_BYTES)
                .filter(|&b| b > 0)
                .ok_or_else(|| bad("extent size is 0 or too large"))?;
            let ty = e.extent_type.to_ascii_uppercase();
            let part = match ty.as_str() {
                "ZERO" => Part::Zero,
                "FLAT" | "VMFS" => {
                    let name = e.file_name.as_deref().ok_or_else(|| bad("no file name"))?;
                    let offset_sectors = match (ty.as_str(), e.offset_sectors) {
                        ("FLAT", Some(o)) => o,
                        ("FLAT", None) => return Err(bad("FLAT extent without an offset").into()),
                        _ => 0,
                    };
                    let (_, file) =
                        ctx.resolve(name)
                            .ok_or_else(|| DescriptorError::MissingExtent {
                                name: name.to_string(),
                            })?;
                    let start = offset_sectors.checked_mul(SECTOR_BYTES);
                    let needed = start.and_then(|s| s.checked_add(bytes));
                    let start = match (start, needed) {
                        (Some(s), Some(n)) if n <= file.len() => s,
                        _ => {
                            return Err(DescriptorError::FlatExtentTooShort {
                                name: name.to_string(),
                                needed_bytes: needed.unwrap_or(u64::MAX),
                                len_bytes: file.len(),
                            }
                            .into());
                        }
                    };
                    let base = file_base + start;
                    file_base = file_base
                        .checked_add(file.len())
                        .ok_or_else(|| crate::error::Error::overflow("extent files"))?;
                    files.push(file);
                    Part::Flat { base }
                }
                "SPARSE" => {
                    let name = e.file_name.as_deref().ok_or_else(|| bad("no file name"))?;
                    let (key, file) =
                        ctx.resolve(name)
                            .ok_or_else(|| DescriptorError::MissingExtent {
                                name: name.to_string(),
                            })?;
                    // One parse per file whatever the number of lines naming it.
                    let image = ctx
                        .sparse_extent(&key, file.clone())
                        .map_err(|err| err.context(format!("extent {name:?}")))?;
                    let capacity_sectors = image.virtual_size() / SECTOR_BYTES;
                    if capacity_sectors < e.size_sectors {
                        return Err(DescriptorError::SparseExtentTooSmall {
                            name: name.to_string(),
                            capacity_sectors,
                            needed_sectors: e.size_sectors,
                        }
                        .into());
                    }
                    let grain = image.unit_bytes();
                    unit_bytes = unit_bytes.max(grain);
                    let units = image.virtual_size().div_ceil(grain);
                    let first_unit = next_unit;
                    next_unit = next_unit
                        .checked_add(units)
                        .ok_or_else(|| crate::error::Error::overflow("extent units"))?;
                    let base = file_base;
                    file_base = file_base
                        .checked_add(file.len())
                        .ok_or_else(|| crate::error::Error::overflow("extent files"))?;
                    files.push(file);
                    Part::Sparse {
                        image,
                        base,
                        first_unit,
                        units,
                    }
                }
                _ => return Err(unsupported().into()),
            };
            starts.push(virtual_size);
            parts.push(part);
            virtual_size = virtual_size
                .checked_add(bytes)
                .filter(|&v| v <= MAX_VIRTUAL_BYTES)
                .ok_or(DescriptorError::SizeTooLarge {
                    limit_bytes: MAX_VIRTUAL_BYTES,
                })?;
        }
        let parent = info
            .parent_file_name_hint
            .as_deref()
            .filter(|h| !h.trim().is_empty())
            .map(ParentRef::named);
        let sparse_units = parts
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p {
                Part::Sparse { first_unit, .. } => Some((*first_unit, i)),
                _ => None,
            })
            .collect();
        Ok(DescriptorVmdk {
            sparse_units,
            format: format_of(info.create_type.as_deref()),
            create_type: info.create_type,
            virtual_size,
            starts,
            parts,
            source: Concat::new(files)?,
            unit_bytes: if unit_bytes == 0 { 1 << 20 } else { unit_bytes },
            parent,
        })
    }

    /// `createType` from the descriptor.
    pub fn create_type(&self) -> Option<&str> {
        self.create_type.as_deref()
    }

    /// Number of extents.
    pub fn extent_count(&self) -> usize {
        self.parts.len()
    }

    /// The sparse extent holding `unit`, and the unit's number inside it.
    fn sparse_for_unit(&self, unit: u64) -> Option<(&SparseVmdk, u64)> {
        let at = self
            .sparse_units
            .partition_point(|&(first, _)| first <= unit)
            .checked_sub(1)?;
        let &(_, i) = self.sparse_units.get(at)?;
        match self.parts.get(i)? {
            Part::Sparse {
                image,
                first_unit,
                units,
                ..
            } if (*first_unit..first_unit + units).contains(&unit) => {
                Some((&**image, unit - first_unit))
            }
            _ => None,
        }
    }
}

impl DiskImage for DescriptorVmdk {
    fn format(&self) -> DiskFormat {
        self.format
    }

    fn virtual_size(&self) -> u64 {
        self.virtual_size
    }

    fn unit_bytes(&self) -> u64 {
        self.unit_bytes
    }

    fn unit_len(&self, unit: u64) -> u64 {
        self.sparse_for_unit(unit)
            .map_or(0, |(image, local)| image.unit_len(local))
    }

    fn map(&self, offset: u64, max_len: u64) -> Result<Extent> {
        if offset >= self.virtual_size || max_len == 0 {
            return Err(DescriptorError::MapOutOfRange {
                offset,
                max_len,
                virtual_size: self.virtual_size,
            }
            .into());
        }
        let i = self
            .starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1);
        let (Some(&start), Some(part)) = (self.starts.get(i), self.parts.get(i)) else {
            return Err(DescriptorError::MapOutOfRange {
                offset,
                max_len,
                virtual_size: self.virtual_size,
            }
            .into());
        };
        let end = self.starts.get(i + 1).copied().unwrap_or(self.virtual_size);
        let local = offset - start;
        let len = max_len.min(end - offset);
        Ok(match part {
            Part::Zero => Extent::Zero { len },
            Part::Flat { base } => Extent::Stored {
                source_offset: base + local,
                len,
            },
            Part::Sparse {
                image,
                base,
                first_unit,
                ..
            } => match image.map(local, len)? {
                Extent::Stored { source_offset, len } => Extent::Stored {
                    source_offset: base + source_offset,
                    len,
                },
                Extent::Unit {
                    unit,
                    offset_in_unit,
                    len,
                } => Extent::Unit {
                    unit: first_unit + unit,
                    offset_in_unit,
                    len,
                },
                other => other,
            },
        })
    }

    fn decode_unit(&self, unit: u64, out: &mut [u8]) -> Result<()> {
        let (image, local) = self
            .sparse_for_unit(unit)
            .ok_or(DescriptorError::NoSuchUnit { unit })?;
        image.decode_unit(local, out)
    }

    fn source(&self) -> &dyn ReadAt {
        &self.source
    }

    fn parent(&self) -> Option<ParentRef> {
        self.parent.clone()
    }
}

#[cfg(test)]
#[path = "vmdk_descriptor_tests.rs"]
mod tests;
