//! The typed errors of the VMDK sparse-extent reader and the stream-optimized writer.
//!
//! Each variant names the rule of docs/formats.md §6 (rules 15-21) that the input broke, with
//! the structured fields a test or a log needs (which table entry, which sector). Offsets
//! and sizes are in sectors of 512 bytes unless the field name says otherwise.

/// A VMDK rule was broken (or a VMDK feature is not supported).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VmdkError {
    // ----- header (rule 15-17) -----
    /// The source is shorter than one sparse extent header.
    #[error("VMDK sparse extent is {len_bytes} bytes, shorter than its 512-byte header")]
    TooShort {
        /// Length of the source.
        len_bytes: u64,
    },
    /// The magic number is not "KDMV" (rule 15).
    #[error("not a VMDK sparse extent: magic {found:02x?}")]
    BadMagic {
        /// The four bytes found.
        found: [u8; 4],
    },
    /// Header version outside 1..=3 (rule 15).
    #[error("unsupported VMDK sparse extent version {version}")]
    UnsupportedVersion {
        /// Version found.
        version: u32,
    },
    /// Flag bit 0 is set but the newline-detection bytes were mangled, typically by a
    /// text-mode transfer (rule 15).
    #[error(
        "VMDK newline-detection bytes are {found:02x?}, expected 0a 20 0d 0a (text-mode transfer?)"
    )]
    NewlineCheckFailed {
        /// Bytes 73..77 of the header.
        found: [u8; 4],
    },
    /// An incompatible flag (bits 16-31) other than "compressed" and "markers" is set
    /// (rule 15).
    #[error("VMDK header has unknown incompatible flags {flags:#010x}")]
    UnknownIncompatibleFlags {
        /// The header's flags.
        flags: u32,
    },
    /// Flag bit 17 (markers) without bit 16 (compressed) (rule 15).
    #[error("VMDK header flags {flags:#010x} have markers without compression")]
    MarkersWithoutCompression {
        /// The header's flags.
        flags: u32,
    },
    /// compressAlgorithm is unknown, or disagrees with flag bit 16 (rule 15).
    #[error("VMDK compression algorithm {algorithm} does not fit flags {flags:#010x}")]
    UnsupportedCompression {
        /// compressAlgorithm field.
        algorithm: u16,
        /// The header's flags.
        flags: u32,
    },
    /// grainSize is not a power of two within the accepted range (rule 16).
    #[error("VMDK grain size {grain_sectors} sectors is not a power of two in {min}..={max}")]
    InvalidGrainSize {
        /// grainSize field.
        grain_sectors: u64,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// numGTEsPerGT is not a power of two in 128..=512 (rule 16).
    #[error("VMDK grain table size {num_gtes_per_gt} entries is not a power of two in 128..=512")]
    InvalidGrainTableSize {
        /// numGTEsPerGT field.
        num_gtes_per_gt: u32,
    },
    /// capacity is 0 and there is no embedded descriptor (rule 17).
    #[error("VMDK capacity is zero")]
    ZeroCapacity,
    /// capacity*512 overflows or exceeds the largest disk accepted (rule 17).
    #[error("VMDK capacity {capacity_sectors} sectors exceeds the limit of {limit_bytes} bytes")]
    CapacityTooLarge {
        /// capacity field.
        capacity_sectors: u64,
        /// The limit in bytes.
        limit_bytes: u64,
    },
    /// The grain directory would have more entries than accepted (rule 17).
    #[error("VMDK grain directory would have {entries} entries, above the limit of {limit}")]
    GrainDirectoryTooLarge {
        /// Entries needed for the capacity.
        entries: u64,
        /// The limit.
        limit: u64,
    },
    /// A header with capacity 0 and an embedded descriptor: a descriptor wrapper around
    /// other extent files, not supported yet.
    #[error("VMDK is a descriptor wrapper (createType {create_type:?}) with no data of its own")]
    DescriptorWrapper {
        /// createType from the wrapped descriptor, if one was found.
        create_type: Option<String>,
    },
    /// The embedded descriptor is larger than accepted.
    #[error(
        "VMDK embedded descriptor of {size_sectors} sectors exceeds the limit of {limit_sectors}"
    )]
    DescriptorTooLarge {
        /// descriptorSize field.
        size_sectors: u64,
        /// The limit.
        limit_sectors: u64,
    },
    /// The embedded descriptor lies (partly) outside the extent or over the header (rule 18).
    #[error(
        "VMDK embedded descriptor at sector {offset_sectors} (+{size_sectors}) lies outside the {file_sectors}-sector extent or over the header"
    )]
    DescriptorOutOfBounds {
        /// descriptorOffset field.
        offset_sectors: u64,
        /// descriptorSize field.
        size_sectors: u64,
        /// Whole sectors in the extent.
        file_sectors: u64,
    },
    /// overHead is before the end of the header/descriptor or past the end of the extent
    /// (rule 18).
    #[error("VMDK overHead {overhead_sectors} sectors is outside {min_sectors}..={max_sectors}")]
    InvalidOverhead {
        /// overHead field.
        overhead_sectors: u64,
        /// Smallest valid value (end of the header and descriptor).
        min_sectors: u64,
        /// Largest valid value (sectors in the extent).
        max_sectors: u64,
    },

    // ----- footer (rule 20) -----
    /// The footer says the grain directory is at the end, again (rule 20).
    #[error("VMDK footer has no grain directory offset (GD_AT_END again)")]
    FooterWithoutGrainDirectory,
    /// A field of the footer disagrees with the header.
    #[error("VMDK footer {field} is {footer}, header says {header}")]
    FooterMismatch {
        /// Which field.
        field: &'static str,
        /// Value in the header.
        header: u64,
        /// Value in the footer.
        footer: u64,
    },
    /// The header puts the grain directory in a footer that is not there, and the extent
    /// has no markers to rebuild the grain map from.
    #[error("VMDK header puts the grain directory at the end, but there is no valid footer")]
    FooterMissing,
    /// A stream-optimized extent whose header puts the grain directory at the end has
    /// neither a footer nor an end-of-stream marker: it was cut short.
    #[error(
        "VMDK stream is truncated: no footer and no end-of-stream marker (scan stopped at sector {sector})"
    )]
    StreamTruncated {
        /// Sector where the scan ran out of data.
        sector: u64,
    },

    // ----- grain directory and tables (rule 18) -----
    /// The grain directory lies (partly) outside the extent.
    #[error(
        "VMDK grain directory at sector {sector} (+{sectors}) lies outside the {file_sectors}-sector extent"
    )]
    GrainDirectoryOutOfBounds {
        /// gdOffset.
        sector: u64,
        /// Sectors the directory occupies.
        sectors: u64,
        /// Whole sectors in the extent.
        file_sectors: u64,
    },
    /// The grain directory overlaps the header or the embedded descriptor.
    #[error("VMDK grain directory at sector {sector} overlaps the {region}")]
    GrainDirectoryOverlap {
        /// gdOffset.
        sector: u64,
        /// What it overlaps.
        region: &'static str,
    },
    /// A grain directory entry points a grain table outside the extent.
    #[error(
        "VMDK grain directory entry {gde_index} points its grain table at sector {sector}, outside the extent"
    )]
    GrainTableOutOfBounds {
        /// Index in the grain directory.
        gde_index: u64,
        /// The entry's value.
        sector: u64,
    },
    /// A grain table overlaps the header, the descriptor or the grain directory.
    #[error(
        "VMDK grain table of directory entry {gde_index} at sector {sector} overlaps the {region}"
    )]
    GrainTableOverlap {
        /// Index in the grain directory.
        gde_index: u64,
        /// The entry's value.
        sector: u64,
        /// What it overlaps.
        region: &'static str,
    },
    /// Two grain directory entries point at the same or overlapping grain tables.
    #[error(
        "VMDK grain directory entries {gde_index} and {other_gde_index} share grain table sectors (at {sector})"
    )]
    GrainTablesOverlap {
        /// One entry.
        gde_index: u64,
        /// The other entry.
        other_gde_index: u64,
        /// Sector of the later table.
        sector: u64,
    },

    // ----- grains (rules 18, 19, 21) -----
    /// A grain table entry points before overHead (rule 21).
    #[error(
        "VMDK grain {grain} is at sector {sector}, before the first grain sector {overhead_sectors}"
    )]
    GrainBeforeOverhead {
        /// Grain index.
        grain: u64,
        /// The entry's value.
        sector: u64,
        /// overHead.
        overhead_sectors: u64,
    },
    /// A grain table entry is 1 (zeroed grain) but the header does not enable zeroed-grain
    /// entries (rule 21).
    #[error("VMDK grain {grain} is marked zeroed, but the header does not enable zeroed grains")]
    ZeroedGrainWithoutFlag {
        /// Grain index.
        grain: u64,
    },
    /// A grain's stored bytes lie (partly) outside the extent (rule 18).
    #[error("VMDK grain {grain} at sector {sector} lies outside the extent")]
    GrainOutOfBounds {
        /// Grain index.
        grain: u64,
        /// Sector of the grain (or of its marker).
        sector: u64,
    },
    /// The sector a grain table entry points at holds a metadata marker, not a grain.
    #[error(
        "VMDK grain {grain} points at sector {sector}, which holds a metadata marker of type {marker_type}"
    )]
    NotAGrainMarker {
        /// Grain index.
        grain: u64,
        /// Sector pointed at.
        sector: u64,
        /// Marker type found.
        marker_type: u32,
    },
    /// A grain marker carries another grain's LBA (rule 19).
    #[error("VMDK grain {grain} marker carries LBA {found_lba}, expected {expected_lba}")]
    GrainLbaMismatch {
        /// Grain index.
        grain: u64,
        /// grain * grainSize.
        expected_lba: u64,
        /// LBA in the marker.
        found_lba: u64,
    },
    /// A compressed grain's size is 0 or larger than any real compressor produces (rule 19).
    #[error(
        "VMDK grain at sector {sector} claims {size_bytes} compressed bytes (accepted 1..={max_bytes})"
    )]
    CompressedSizeInvalid {
        /// Sector of the grain marker.
        sector: u64,
        /// Size field.
        size_bytes: u64,
        /// Largest accepted size.
        max_bytes: u64,
    },
    /// A marker's payload runs past the end of the extent.
    #[error(
        "VMDK marker at sector {sector} needs {needed_sectors} sectors, past the end of the {file_sectors}-sector extent"
    )]
    MarkerOutOfBounds {
        /// Sector of the marker.
        sector: u64,
        /// Sectors the marker and its payload occupy.
        needed_sectors: u64,
        /// Whole sectors in the extent.
        file_sectors: u64,
    },
    /// A metadata marker of an unknown type was met while scanning.
    #[error("VMDK marker at sector {sector} has unknown type {marker_type}")]
    UnknownMarkerType {
        /// Sector of the marker.
        sector: u64,
        /// Type found.
        marker_type: u32,
    },
    /// A grain marker met while scanning names an LBA that is not the start of a grain.
    #[error("VMDK grain marker at sector {sector} has LBA {lba}, not a multiple of the grain size")]
    GrainLbaMisaligned {
        /// Sector of the marker.
        sector: u64,
        /// LBA in the marker.
        lba: u64,
    },
    /// A grain marker met while scanning names an LBA past the capacity.
    #[error(
        "VMDK grain marker at sector {sector} has LBA {lba}, past the capacity of {capacity_sectors} sectors"
    )]
    GrainLbaBeyondCapacity {
        /// Sector of the marker.
        sector: u64,
        /// LBA in the marker.
        lba: u64,
        /// capacity.
        capacity_sectors: u64,
    },
    /// Two grain markers met while scanning carry the same LBA.
    #[error(
        "VMDK grain {grain} appears twice in the stream (sectors {first_sector} and {second_sector})"
    )]
    DuplicateGrain {
        /// Grain index.
        grain: u64,
        /// Sector of one marker.
        first_sector: u64,
        /// Sector of the other.
        second_sector: u64,
    },
    /// The scan found more grains than the in-memory grain map accepts.
    #[error("VMDK stream holds more than {limit} grains, the most a rebuilt grain map accepts")]
    TooManyGrains {
        /// The limit.
        limit: u64,
    },
    /// `map` was called outside the disk or for zero bytes (a caller bug; the trait requires
    /// `offset < virtual_size` and `max_len > 0`).
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
    /// `decode_unit` was asked for a unit that is not a compressed grain.
    #[error("VMDK unit {unit} is not a stored compressed grain")]
    NotACompressedGrain {
        /// Unit (grain) number.
        unit: u64,
    },
    /// A grain past the end of the disk was asked for.
    #[error("VMDK grain {grain} is past the disk's {grains} grains")]
    GrainPastEnd {
        /// Grain asked for.
        grain: u64,
        /// Grains of the disk.
        grains: u64,
    },

    // ----- writer -----
    /// The stream-optimized writer was given options or a source it cannot write.
    #[error("cannot write a stream-optimized VMDK: {reason}")]
    WriterInvalidInput {
        /// What is wrong.
        reason: String,
    },
}

impl From<VmdkError> for crate::error::Error {
    fn from(e: VmdkError) -> Self {
        crate::disk::DiskError::Vmdk(e).into()
    }
}
