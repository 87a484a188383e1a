//! A stream-optimized VMDK writer (docs/formats.md §4.5), independent of qemu.
//!
//! Used by `ovafs demo` to build appliances and by tests as a fixture generator whose output
//! qemu-img, VirtualBox and VMware can read. It writes to any `std::io::Write` without
//! seeking, in one of three layouts ([`StreamLayout`]): VMware's (grain tables after each run
//! of grains, grain directory and footer at the end), open-vmdk's (grain directory and tables
//! before the grains; needs a first pass over the source to learn compressed sizes), or a
//! bare stream of grains with no grain directory at all (a reader must scan markers).
//!
//! All-zero grains are not written. A capacity that is not a whole number of grains (or of
//! sectors: the source is zero-padded to a sector) is allowed; the final partial grain is
//! compressed as a whole grain padded with zeros, because VirtualBox always inflates whole
//! grains (qemu and open-vmdk accept either). Grains are zlib streams (every reader expects
//! zlib, despite the spec's "RFC 1951").

use std::io::Write;

use libdeflater::{CompressionLvl, Compressor};

use super::vmdk::header::{
    COMPRESSION_DEFLATE, FLAG_COMPRESSED, FLAG_MARKERS, FLAG_NEWLINE_DETECT, GD_AT_END,
    GRAIN_MARKER_HEADER_BYTES, Geometry, MAX_GRAIN_SECTORS, MIN_GRAIN_SECTORS, NEWLINE_BYTES,
};
use super::vmdk::{Marker, MarkerType, SPARSE_MAGIC, SparseExtentHeader, VmdkError};
use super::{MAX_VIRTUAL_BYTES, SECTOR_BYTES};
use crate::error::{Error, Result};
use crate::io::ReadAt;

/// Sectors reserved for the embedded descriptor (10 KiB, as qemu-img and open-vmdk reserve,
/// so the descriptor can be edited in place).
pub const DESCRIPTOR_SECTORS: u64 = 20;

/// Grain table entries per table: the only value VMware's disk library accepts.
pub const GTES_PER_GT: u32 = 512;

/// Header version written: 3, as every modern stream-optimized producer writes.
pub const WRITER_VERSION: u32 = 3;

/// `ddb.toolsVersion` meaning "tools provided by the host" (vSphere wants the key present).
pub const TOOLS_VERSION_HOST: u32 = 2_147_483_647;

/// Sectors per track in the descriptor geometry (qemu, open-vmdk).
const GEOMETRY_SECTORS: u64 = 63;
/// Largest cylinder count in the descriptor geometry.
const GEOMETRY_MAX_CYLINDERS: u64 = 65_535;

/// Where the grain directory goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamLayout {
    /// VMware/VirtualBox: header gdOffset = `GD_AT_END`; each grain table (with a marker)
    /// follows its run of grains; the grain directory, a footer (header copy with the real
    /// gdOffset) and an end-of-stream marker close the stream.
    #[default]
    GdInFooter,
    /// open-vmdk style: the grain directory and the tables of used grain ranges sit right
    /// after the descriptor, without markers; the header has the real gdOffset; grains with
    /// markers follow; an end-of-stream marker closes the stream; no footer.
    GdInHeader,
    /// Grains with markers and an end-of-stream marker only: header gdOffset = `GD_AT_END`
    /// but no footer, grain tables or directory. Readers must rebuild the map by scanning
    /// (qemu refuses such a stream).
    NoGrainDirectory,
}

/// `ddb.adapterType` of the descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdapterType {
    /// IDE (geometry with 16 heads).
    Ide,
    /// BusLogic SCSI.
    BusLogic,
    /// LSI Logic SCSI (VMware's default).
    #[default]
    LsiLogic,
    /// ESX 2.x legacy SCSI.
    LegacyEsx,
}

impl AdapterType {
    /// The descriptor value.
    pub fn as_str(self) -> &'static str {
        match self {
            AdapterType::Ide => "ide",
            AdapterType::BusLogic => "buslogic",
            AdapterType::LsiLogic => "lsilogic",
            AdapterType::LegacyEsx => "legacyESX",
        }
    }

    /// Heads of the descriptor geometry: 16 for IDE, 255 otherwise.
    fn heads(self) -> u64 {
        match self {
            AdapterType::Ide => 16,
            _ => 255,
        }
    }
}

/// Options of [`write_stream_optimized`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamWriterOptions {
    /// Where the grain directory goes.
    pub layout: StreamLayout,
    /// Sectors per grain: a power of two in 8..=2048 (default 128 = 64 KiB).
    pub grain_sectors: u64,
    /// libdeflate compression level, 0..=12 (default 6).
    pub compression_level: i32,
    /// `ddb.adapterType`.
    pub adapter_type: AdapterType,
    /// File name in the descriptor's extent line (no quotes or line breaks).
    pub extent_file_name: String,
    /// Content id (`CID`).
    pub cid: u32,
    /// `ddb.virtualHWVersion`.
    pub virtual_hw_version: u32,
    /// `ddb.toolsVersion`.
    pub tools_version: u32,
}

impl Default for StreamWriterOptions {
    fn default() -> Self {
        StreamWriterOptions {
            layout: StreamLayout::default(),
            grain_sectors: 128,
            compression_level: 6,
            adapter_type: AdapterType::default(),
            extent_file_name: "disk.vmdk".into(),
            cid: 0x0a5f_0001,
            virtual_hw_version: 4,
            tools_version: TOOLS_VERSION_HOST,
        }
    }
}

/// What [`write_stream_optimized`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSummary {
    /// Bytes written (a multiple of 512).
    pub bytes_written: u64,
    /// Capacity in sectors (source length rounded up to a sector).
    pub capacity_sectors: u64,
    /// Grains written (all-zero grains are skipped).
    pub grains_written: u64,
    /// Grain tables written.
    pub grain_tables_written: u64,
}

fn invalid(reason: impl Into<String>) -> Error {
    VmdkError::WriterInvalidInput {
        reason: reason.into(),
    }
    .into()
}

/// The embedded descriptor text for a disk of `capacity_sectors`.
pub fn descriptor_text(opts: &StreamWriterOptions, capacity_sectors: u64) -> String {
    let heads = opts.adapter_type.heads();
    let cylinders = capacity_sectors
        .div_ceil(heads * GEOMETRY_SECTORS)
        .min(GEOMETRY_MAX_CYLINDERS);
    format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         encoding=\"UTF-8\"\n\
         CID={cid:08x}\n\
         parentCID=ffffffff\n\
         createType=\"streamOptimized\"\n\
         \n\
         # Extent description\n\
         RW {capacity_sectors} SPARSE \"{name}\"\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.virtualHWVersion = \"{hw}\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"{heads}\"\n\
         ddb.geometry.sectors = \"{GEOMETRY_SECTORS}\"\n\
         ddb.adapterType = \"{adapter}\"\n\
         ddb.toolsVersion = \"{tools}\"\n",
        cid = opts.cid,
        name = opts.extent_file_name,
        hw = opts.virtual_hw_version,
        adapter = opts.adapter_type.as_str(),
        tools = opts.tools_version,
    )
}

/// Counts bytes written so that grain and table positions are known without seeking.
pub(crate) struct SectorWriter<'a, W: Write + ?Sized> {
    out: &'a mut W,
    written: u64,
}

impl<'a, W: Write + ?Sized> SectorWriter<'a, W> {
    /// A writer at byte 0 of `out`.
    pub(crate) fn new(out: &'a mut W) -> Self {
        SectorWriter { out, written: 0 }
    }

    /// Bytes written so far.
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io("writing stream-optimized VMDK", e))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Pads with zeros to the next sector boundary.
    fn pad_sector(&mut self) -> Result<()> {
        let rem = self.written % SECTOR_BYTES;
        if rem != 0 {
            // OK to cast: < 512.
            self.write(&[0u8; SECTOR_BYTES as usize][..(SECTOR_BYTES - rem) as usize])?;
        }
        Ok(())
    }

    /// Pads with zeros up to `sector`.
    pub(crate) fn pad_to(&mut self, sector: u64) -> Result<()> {
        let target = sector * SECTOR_BYTES;
        let zeros = [0u8; 4096];
        while self.written < target {
            // OK to cast: <= 4096.
            let n = (target - self.written).min(zeros.len() as u64) as usize;
            self.write(&zeros[..n])?;
        }
        Ok(())
    }

    /// Current position as a grain-table entry (`u32` sectors).
    fn sector_u32(&self) -> Result<u32> {
        u32::try_from(self.written / SECTOR_BYTES).map_err(|_| {
            invalid("the stream would exceed 2 TiB, past what u32 sector entries address")
        })
    }

    fn sector(&self) -> u64 {
        self.written / SECTOR_BYTES
    }

    fn metadata(&mut self, kind: MarkerType, payload_sectors: u64) -> Result<()> {
        self.write(&Marker::metadata_sector(kind, payload_sectors))
    }

    /// Writes `entries` as little-endian u32s, padded to whole sectors.
    fn table(&mut self, entries: &[u32]) -> Result<()> {
        let bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
        self.write(&bytes)?;
        self.pad_sector()
    }

    /// Writes one grain: its marker (`lba`, compressed size) and the compressed bytes, padded
    /// to a sector.
    pub(crate) fn grain(&mut self, lba: u64, compressed: &[u8]) -> Result<()> {
        let size = u32::try_from(compressed.len())
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| invalid(format!("compressed grain of {} bytes", compressed.len())))?;
        self.write(&lba.to_le_bytes())?;
        self.write(&size.to_le_bytes())?;
        self.write(compressed)?;
        self.pad_sector()
    }
}

/// Whether `bytes` are all zero (a word-wide OR per 4 KiB block, which the compiler
/// vectorises; the early exit is per block).
pub(crate) fn is_all_zero(bytes: &[u8]) -> bool {
    bytes
        .chunks(4096)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// VMware's layout after the header and descriptor: grains in increasing order, each run of
/// grains of one grain table followed by that table (with its marker), then the grain
/// directory, the footer and the end-of-stream marker. Shared by the writer and the
/// re-encoder (`vmdk_reencode`).
pub(crate) struct FooterLayout {
    geometry: Geometry,
    with_tables: bool,
    gd: Vec<u32>,
    gt: Vec<u32>,
    /// Directory index of the table being filled, and whether it holds a grain yet.
    table: u64,
    used: bool,
    /// Last grain written, to refuse grains out of order.
    last: Option<u64>,
    /// Grain tables written.
    pub(crate) tables_written: u64,
}

impl FooterLayout {
    /// An empty layout for `geometry`; without tables it writes only grains and EOS.
    pub(crate) fn new(geometry: Geometry, with_tables: bool) -> Self {
        FooterLayout {
            geometry,
            with_tables,
            // OK to cast: gd_entries <= 4 Mi (validated); 4 bytes a directory entry.
            gd: vec![
                0u32;
                if with_tables {
                    geometry.gd_entries as usize
                } else {
                    0
                }
            ],
            // OK to cast: <= 512 entries.
            gt: vec![0u32; geometry.gtes_per_gt as usize],
            table: 0,
            used: false,
            last: None,
            tables_written: 0,
        }
    }

    /// Writes grain `grain` (after every grain written before it) with its marker.
    pub(crate) fn grain<W: Write + ?Sized>(
        &mut self,
        w: &mut SectorWriter<'_, W>,
        grain: u64,
        compressed: &[u8],
    ) -> Result<()> {
        if grain >= self.geometry.grains || self.last.is_some_and(|l| l >= grain) {
            return Err(invalid(format!(
                "grain {grain} written out of order (after {:?}, of {})",
                self.last, self.geometry.grains
            )));
        }
        self.last = Some(grain);
        let table = grain / self.geometry.gtes_per_gt;
        if table != self.table {
            self.close_table(w)?;
            self.table = table;
        }
        // OK to cast: < 512.
        self.gt[(grain % self.geometry.gtes_per_gt) as usize] = w.sector_u32()?;
        self.used = true;
        w.grain(grain * self.geometry.grain_sectors, compressed)
    }

    /// Writes the table being filled, if it holds a grain.
    fn close_table<W: Write + ?Sized>(&mut self, w: &mut SectorWriter<'_, W>) -> Result<()> {
        if self.used && self.with_tables {
            w.metadata(MarkerType::GrainTable, self.geometry.gt_sectors)?;
            // OK to cast: table < gd_entries <= 4 Mi.
            self.gd[self.table as usize] = w.sector_u32()?;
            w.table(&self.gt)?;
            self.tables_written += 1;
        }
        self.gt.fill(0);
        self.used = false;
        Ok(())
    }

    /// Writes the last table, the grain directory, the footer (`header` with the real
    /// gdOffset) and the end-of-stream marker.
    pub(crate) fn finish<W: Write + ?Sized>(
        &mut self,
        w: &mut SectorWriter<'_, W>,
        header: &SparseExtentHeader,
    ) -> Result<()> {
        self.close_table(w)?;
        if self.with_tables {
            w.metadata(MarkerType::GrainDirectory, self.geometry.gd_sectors)?;
            let mut footer = *header;
            footer.gd_offset_sectors = w.sector();
            w.table(&self.gd)?;
            w.metadata(MarkerType::Footer, 1)?;
            w.write(&footer.encode())?;
        }
        w.metadata(MarkerType::EndOfStream, 0)
    }
}

/// The header of a stream written in VMware's layout: version 3, flags 0x30001, zlib,
/// gdOffset `GD_AT_END`, the descriptor at sector 1, grains from the first grain boundary
/// after it. Validated, with its geometry.
pub(crate) fn footer_layout_header(
    capacity_sectors: u64,
    grain_sectors: u64,
    descriptor_sectors: u64,
) -> Result<(SparseExtentHeader, Geometry)> {
    let mut header = SparseExtentHeader {
        magic_number: SPARSE_MAGIC,
        version: WRITER_VERSION,
        flags: FLAG_NEWLINE_DETECT | FLAG_COMPRESSED | FLAG_MARKERS,
        capacity_sectors,
        grain_sectors,
        descriptor_offset_sectors: 1,
        descriptor_size_sectors: descriptor_sectors,
        num_gtes_per_gt: GTES_PER_GT,
        rgd_offset_sectors: 0,
        gd_offset_sectors: GD_AT_END,
        overhead_sectors: 0,
        unclean_shutdown: 0,
        newline_bytes: NEWLINE_BYTES,
        compress_algorithm: COMPRESSION_DEFLATE,
    };
    // The reader's own rules are the writer's preconditions.
    let geometry = header.validate().map_err(|e| invalid(e.to_string()))?;
    header.overhead_sectors = (1 + descriptor_sectors).next_multiple_of(grain_sectors);
    Ok((header, geometry))
}

/// Reads grains of the source (zero-padded past its end) and compresses them.
pub(crate) struct GrainCoder<'a> {
    src: &'a dyn ReadAt,
    geometry: Geometry,
    compressor: Compressor,
    raw: Vec<u8>,
    compressed: Vec<u8>,
}

impl<'a> GrainCoder<'a> {
    /// A coder of `src`'s grains of `geometry` at `level`.
    pub(crate) fn new(src: &'a dyn ReadAt, geometry: Geometry, level: CompressionLvl) -> Self {
        let mut compressor = Compressor::new(level);
        // OK to cast: grain_bytes <= 1 MiB.
        let grain_bytes = geometry.grain_bytes as usize;
        let bound = compressor.zlib_compress_bound(grain_bytes);
        GrainCoder {
            src,
            geometry,
            compressor,
            raw: vec![0u8; grain_bytes],
            compressed: vec![0u8; bound],
        }
    }

    /// Reads grain `grain`; returns the compressed length, or `None` if it is all zeros.
    pub(crate) fn load(&mut self, grain: u64) -> Result<Option<usize>> {
        let offset = grain * self.geometry.grain_bytes;
        let n = self.src.read_at(offset, &mut self.raw)?;
        let want = self
            .src
            .len()
            .saturating_sub(offset)
            .min(self.raw.len() as u64) as usize;
        if n != want {
            return Err(invalid(format!(
                "source returned {n} bytes at offset {offset}, expected {want}"
            )));
        }
        self.raw[n..].fill(0);
        if is_all_zero(&self.raw) {
            return Ok(None);
        }
        let size = self
            .compressor
            .zlib_compress(&self.raw, &mut self.compressed)
            .map_err(|e| invalid(format!("zlib compression failed: {e}")))?;
        Ok(Some(size))
    }

    /// The compressed bytes of the grain last loaded (`size` from [`GrainCoder::load`]).
    pub(crate) fn compressed(&self, size: usize) -> &[u8] {
        &self.compressed[..size]
    }
}

/// The libdeflate level for `level`, or the writer's error.
pub(crate) fn compression_level(level: i32) -> Result<CompressionLvl> {
    CompressionLvl::new(level)
        .map_err(|_| invalid(format!("compression level {level} is not in 0..=12")))
}

/// Writes `src` as a stream-optimized VMDK to `out`.
///
/// The capacity is `src.len()` rounded up to a sector. Fails with
/// [`VmdkError::WriterInvalidInput`] for an empty or oversized source or invalid options,
/// and with an I/O error if `out` fails.
pub fn write_stream_optimized<W: Write + ?Sized>(
    src: &dyn ReadAt,
    out: &mut W,
    opts: &StreamWriterOptions,
) -> Result<StreamSummary> {
    let len = src.len();
    if len == 0 || len > MAX_VIRTUAL_BYTES {
        return Err(invalid(format!(
            "source of {len} bytes is not in 1..={MAX_VIRTUAL_BYTES}"
        )));
    }
    let name = &opts.extent_file_name;
    if name.is_empty() || name.contains(['"', '\n', '\r', '\0']) {
        return Err(invalid(format!(
            "extent file name {name:?} is empty or has quotes or line breaks"
        )));
    }
    if !opts.grain_sectors.is_power_of_two()
        || !(MIN_GRAIN_SECTORS..=MAX_GRAIN_SECTORS).contains(&opts.grain_sectors)
    {
        return Err(invalid(format!(
            "grain size {} sectors is not a power of two in {MIN_GRAIN_SECTORS}..={MAX_GRAIN_SECTORS}",
            opts.grain_sectors
        )));
    }
    let level = compression_level(opts.compression_level)?;

    let capacity_sectors = len.div_ceil(SECTOR_BYTES);
    let descriptor = descriptor_text(opts, capacity_sectors);
    let descriptor_sectors = (descriptor.len() as u64)
        .div_ceil(SECTOR_BYTES)
        .max(DESCRIPTOR_SECTORS);
    let (mut header, geometry) =
        footer_layout_header(capacity_sectors, opts.grain_sectors, descriptor_sectors)?;
    let mut coder = GrainCoder::new(src, geometry, level);
    let mut w = SectorWriter::new(out);
    let after_descriptor = 1 + descriptor_sectors;
    let per_gt = geometry.gtes_per_gt;
    let mut summary = StreamSummary {
        bytes_written: 0,
        capacity_sectors,
        grains_written: 0,
        grain_tables_written: 0,
    };

    match opts.layout {
        StreamLayout::GdInFooter | StreamLayout::NoGrainDirectory => {
            let mut layout = FooterLayout::new(geometry, opts.layout == StreamLayout::GdInFooter);
            w.write(&header.encode())?;
            w.write(descriptor.as_bytes())?;
            w.pad_to(header.overhead_sectors)?;
            for grain in 0..geometry.grains {
                if let Some(size) = coder.load(grain)? {
                    layout.grain(&mut w, grain, coder.compressed(size))?;
                    summary.grains_written += 1;
                }
            }
            layout.finish(&mut w, &header)?;
            summary.grain_tables_written = layout.tables_written;
        }
        StreamLayout::GdInHeader => {
            // Pass 1: compressed sizes, to place the tables before the grains.
            let mut sizes: Vec<(u64, usize)> = Vec::new();
            for grain in 0..geometry.grains {
                if let Some(size) = coder.load(grain)? {
                    sizes.push((grain, size));
                }
            }
            let gd_sector = after_descriptor;
            // OK to cast: gd_entries <= 4 Mi (validated).
            let mut gd = vec![0u32; geometry.gd_entries as usize];
            let mut used_tables: Vec<u64> = sizes.iter().map(|&(g, _)| g / per_gt).collect();
            used_tables.dedup();
            let mut next = gd_sector + geometry.gd_sectors;
            for &t in &used_tables {
                gd[t as usize] = u32::try_from(next).map_err(|_| invalid("table past 2 TiB"))?;
                next += geometry.gt_sectors;
            }
            header.gd_offset_sectors = gd_sector;
            header.overhead_sectors = next.next_multiple_of(geometry.grain_sectors);
            let mut tables = vec![0u32; used_tables.len() * per_gt as usize];
            let mut sector = header.overhead_sectors;
            for &(grain, size) in &sizes {
                let t = used_tables.partition_point(|&u| u < grain / per_gt);
                let entry = u32::try_from(sector).map_err(|_| invalid("grain past 2 TiB"))?;
                tables[t * per_gt as usize + (grain % per_gt) as usize] = entry;
                sector += (GRAIN_MARKER_HEADER_BYTES + size as u64).div_ceil(SECTOR_BYTES);
            }
            w.write(&header.encode())?;
            w.write(descriptor.as_bytes())?;
            w.pad_to(gd_sector)?;
            w.table(&gd)?;
            for table in tables.chunks(per_gt as usize) {
                w.table(table)?;
                summary.grain_tables_written += 1;
            }
            w.pad_to(header.overhead_sectors)?;
            // Pass 2: the same grains again, written where the tables say.
            for &(grain, size) in &sizes {
                if coder.load(grain)? != Some(size) {
                    return Err(invalid(format!(
                        "grain {grain} changed between the two passes over the source"
                    )));
                }
                w.grain(grain * geometry.grain_sectors, coder.compressed(size))?;
                summary.grains_written += 1;
            }
            debug_assert_eq!(w.sector(), sector);
            w.metadata(MarkerType::EndOfStream, 0)?;
        }
    }
    summary.bytes_written = w.written;
    Ok(summary)
}
