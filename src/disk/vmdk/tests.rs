//! Unit tests of the sparse extent reader, with fixtures built three ways: by the
//! stream-optimized writer, by an annotated sector-by-sector stream builder (for marker
//! scans), and as an annotated hosted-sparse image (uncompressed grains).
//!
//! Contents: layouts (footer, header, header+footer, scan) · partial last grain ·
//! hosted sparse (stored, zeroed, unallocated, contiguous runs) · compressed without markers
//! · map tiling property · corrupt grains · one test per rejection rule · big claims.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::Arc;

use libdeflater::{CompressionLvl, Compressor};

use super::header::*;
use super::*;
use crate::cache::UnitCache;
use crate::disk::engine::FlatDisk;
use crate::disk::vmdk_writer::{StreamLayout, StreamWriterOptions, write_stream_optimized};

// ---------------------------------------------------------------------------------------
// helpers

/// Deterministic pseudo-random bytes (xorshift), so fixtures are reproducible.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.extend_from_slice(&seed.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A raw disk with text-like runs, random runs and zero gaps scattered over `len` bytes.
fn scattered_raw(len: usize) -> Vec<u8> {
    let mut raw = vec![0u8; len];
    let r = noise(len, 0x5eed);
    let mut pos = 0usize;
    let mut i = 0u64;
    while pos < len {
        let run = 1000 + (r[pos % r.len()] as usize) * 700; // 1000..179_500 bytes
        let end = (pos + run).min(len);
        match i % 4 {
            0 => raw[pos..end].copy_from_slice(&r[pos..end]), // incompressible
            1 => {
                for (k, b) in raw[pos..end].iter_mut().enumerate() {
                    *b = b"ovafs stream-optimized grain "[k % 29];
                }
            }
            2 => {}               // zeros
            _ => raw[pos] = 0xA5, // almost-zero grain
        }
        pos = end;
        i += 1;
    }
    if len >= 3 {
        raw[len - 3..].copy_from_slice(b"end");
    }
    raw
}

fn write(raw: &[u8], opts: &StreamWriterOptions) -> Vec<u8> {
    let mut out = Vec::new();
    let src = raw.to_vec();
    let summary = write_stream_optimized(&src, &mut out, opts).unwrap();
    assert_eq!(summary.bytes_written, out.len() as u64);
    assert_eq!(out.len() % 512, 0);
    out
}

fn layout(layout: StreamLayout, grain_sectors: u64) -> StreamWriterOptions {
    StreamWriterOptions {
        layout,
        grain_sectors,
        ..StreamWriterOptions::default()
    }
}

fn open(bytes: Vec<u8>) -> Result<SparseVmdk> {
    SparseVmdk::open(Arc::new(bytes))
}

/// The VMDK error inside a result, or a panic naming what came instead.
fn vmdk_err<T: std::fmt::Debug>(r: Result<T>) -> VmdkError {
    match r {
        Ok(v) => panic!("expected a VMDK error, got {v:?}"),
        Err(e) => match e.layer_error() {
            Some(DiskError::Vmdk(v)) => v.clone(),
            _ => panic!("expected a VMDK error, got {:?} ({e})", e.kind()),
        },
    }
}

/// Reads the whole flat image through `map` and `decode_unit`, checking on the way that
/// every extent is non-empty, inside the request and inside the disk.
fn flat(img: &SparseVmdk) -> Vec<u8> {
    let size = img.virtual_size();
    let mut out = vec![0u8; size as usize];
    let mut pos = 0u64;
    while pos < size {
        let ext = img.map(pos, size - pos).unwrap();
        let len = ext.len();
        assert!(len >= 1 && pos + len <= size, "{ext:?} at {pos}");
        fill(img, pos, ext, &mut out[pos as usize..(pos + len) as usize]);
        pos += len;
    }
    out
}

fn fill(img: &SparseVmdk, pos: u64, ext: Extent, out: &mut [u8]) {
    match ext {
        Extent::Zero { .. } | Extent::Unallocated { .. } => out.fill(0),
        Extent::Stored { source_offset, .. } => {
            img.source().read_exact_at(source_offset, out).unwrap()
        }
        Extent::Unit {
            unit,
            offset_in_unit,
            len,
        } => {
            let grain_bytes = img.unit_bytes();
            assert_eq!(unit, pos / grain_bytes);
            assert_eq!(offset_in_unit, pos % grain_bytes);
            assert!(offset_in_unit + len <= img.unit_len(unit));
            let mut g = vec![0u8; img.unit_len(unit) as usize];
            img.decode_unit(unit, &mut g).unwrap();
            out.copy_from_slice(&g[offset_in_unit as usize..(offset_in_unit + len) as usize]);
        }
    }
}

/// Map tiling property: for pseudo-random requests, the first extent is non-empty, no
/// longer than asked, inside the disk, and holds the expected bytes.
fn check_tiling(img: &SparseVmdk, expected: &[u8], seed: u64) {
    let size = img.virtual_size();
    assert_eq!(size, expected.len() as u64);
    let r = noise(8 * 400, seed);
    for c in r.chunks_exact(8).collect::<Vec<_>>().chunks_exact(2) {
        let a = u64::from_le_bytes(c[0].try_into().unwrap());
        let b = u64::from_le_bytes(c[1].try_into().unwrap());
        let offset = a % size;
        let max_len = 1 + b % (3 * img.unit_bytes());
        let ext = img.map(offset, max_len).unwrap();
        let len = ext.len();
        assert!(
            len >= 1 && len <= max_len && offset + len <= size,
            "{ext:?}"
        );
        if let Extent::Stored { source_offset, .. } = ext {
            assert!(source_offset + len <= img.source().len());
        }
        let mut got = vec![0u8; len as usize];
        fill(img, offset, ext, &mut got);
        assert_eq!(got, &expected[offset as usize..(offset + len) as usize]);
    }
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut c = Compressor::new(CompressionLvl::default());
    let mut out = vec![0u8; c.zlib_compress_bound(data.len())];
    let n = c.zlib_compress(data, &mut out).unwrap();
    out.truncate(n);
    out
}

fn put_u32(b: &mut [u8], at: u64, v: u32) {
    b[at as usize..at as usize + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: u64, v: u64) {
    b[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
}

fn set_header(bytes: &mut [u8], at: u64, edit: impl FnOnce(&mut SparseExtentHeader)) {
    let mut h = [0u8; 512];
    h.copy_from_slice(&bytes[at as usize..at as usize + 512]);
    let mut h = SparseExtentHeader::parse(&h);
    edit(&mut h);
    bytes[at as usize..at as usize + 512].copy_from_slice(&h.encode());
}

/// The sector of grain `grain`'s marker, found through the image's own map.
fn grain_sector(bytes: &[u8], grain: u64) -> u64 {
    let img = open(bytes.to_vec()).unwrap();
    let run = img.grains.run(&*img.source, grain, 1, false).unwrap();
    assert!(run.entry > 1, "grain {grain} is not stored");
    run.entry
}

// ---------------------------------------------------------------------------------------
// annotated stream builder (grain size 8 sectors, capacity 64 sectors = 8 grains)

/// One block of a hand-built stream.
enum Part<'a> {
    /// A grain marker for `lba` with `data` compressed (zlib), padded to a sector.
    Grain { lba: u64, data: &'a [u8] },
    /// A grain marker with an explicit size field and payload (for hostile sizes).
    GrainRaw {
        lba: u64,
        size: u32,
        payload: &'a [u8],
    },
    /// A metadata marker of `kind` followed by `payload_sectors` zero sectors.
    Meta {
        kind: MarkerType,
        payload_sectors: u64,
    },
}

const SCAN_GRAIN_SECTORS: u64 = 8;
const SCAN_CAPACITY_SECTORS: u64 = 64;

/// A stream with header gdOffset = GD_AT_END and no footer: the reader must scan.
fn scan_stream(parts: &[Part]) -> Vec<u8> {
    let header = SparseExtentHeader {
        magic_number: *b"KDMV",
        version: 3,
        flags: FLAG_NEWLINE_DETECT | FLAG_COMPRESSED | FLAG_MARKERS, // 0x30001
        capacity_sectors: SCAN_CAPACITY_SECTORS,                     // 8 grains of 4 KiB
        grain_sectors: SCAN_GRAIN_SECTORS,
        descriptor_offset_sectors: 1, // descriptor in sector 1
        descriptor_size_sectors: 1,
        num_gtes_per_gt: 128,
        rgd_offset_sectors: 0,
        gd_offset_sectors: GD_AT_END,
        overhead_sectors: 2, // stream starts at sector 2
        unclean_shutdown: 0,
        newline_bytes: NEWLINE_BYTES,
        compress_algorithm: COMPRESSION_DEFLATE,
    };
    let mut b = header.encode().to_vec();
    let mut desc =
        b"# Disk DescriptorFile\ncreateType=\"streamOptimized\"\nRW 64 SPARSE \"s.vmdk\"\n"
            .to_vec();
    desc.resize(512, 0);
    b.extend_from_slice(&desc);
    for p in parts {
        match p {
            Part::Grain { lba, data } => {
                let z = zlib(data);
                b.extend_from_slice(&lba.to_le_bytes());
                b.extend_from_slice(&(z.len() as u32).to_le_bytes());
                b.extend_from_slice(&z);
            }
            Part::GrainRaw { lba, size, payload } => {
                b.extend_from_slice(&lba.to_le_bytes());
                b.extend_from_slice(&size.to_le_bytes());
                b.extend_from_slice(payload);
            }
            Part::Meta {
                kind,
                payload_sectors,
            } => {
                b.extend_from_slice(&Marker::metadata_sector(*kind, *payload_sectors));
                b.resize(b.len() + 512 * *payload_sectors as usize, 0);
            }
        }
        b.resize(b.len().next_multiple_of(512), 0);
    }
    b
}

const EOS: Part<'static> = Part::Meta {
    kind: MarkerType::EndOfStream,
    payload_sectors: 0,
};

// ---------------------------------------------------------------------------------------
// annotated hosted sparse image (uncompressed grains)

const HOSTED_GRAIN_SECTORS: u64 = 8;
/// 300 whole grains and a 3-sector tail: grain 300 is partial.
const HOSTED_CAPACITY_SECTORS: u64 = 8 * 300 + 3;

/// A monolithicSparse-style image, sector by sector:
/// * 0: header (version 2, flags NL | RGD | zeroed-grain GTE), overHead 8
/// * 1-2: descriptor
/// * 3: grain directory (3 entries: 4, 0, 5), 128 entries per table, coverage 128 grains
/// * 4: grain table 0: grain 0 -> 8, 1 -> 16 (contiguous), 2 -> 0, 3 -> 1 (zeroed), 5 -> 24
/// * 5: grain table 2: grain 300 (partial) -> 32; grain 350 (past the capacity) -> garbage
/// * 8.., 16.., 24.., 32..: grains filled with 0x11, 0x22, 0x55, 0xAB
fn hosted_sparse() -> (Vec<u8>, Vec<u8>) {
    let header = SparseExtentHeader {
        magic_number: *b"KDMV",
        version: 2,
        flags: FLAG_NEWLINE_DETECT | FLAG_REDUNDANT_GRAIN_TABLE | FLAG_ZEROED_GRAIN_GTE,
        capacity_sectors: HOSTED_CAPACITY_SECTORS,
        grain_sectors: HOSTED_GRAIN_SECTORS,
        descriptor_offset_sectors: 1,
        descriptor_size_sectors: 2,
        num_gtes_per_gt: 128,
        rgd_offset_sectors: 0,
        gd_offset_sectors: 3,
        overhead_sectors: 8,
        unclean_shutdown: 0,
        newline_bytes: NEWLINE_BYTES,
        compress_algorithm: COMPRESSION_NONE,
    };
    let mut b = vec![0u8; 40 * 512];
    b[..512].copy_from_slice(&header.encode());
    let desc = b"# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n\
createType=\"monolithicSparse\"\nRW 2403 SPARSE \"h.vmdk\"\n";
    b[512..512 + desc.len()].copy_from_slice(desc);
    put_u32(&mut b, 3 * 512, 4); // GDE 0 -> GT at 4
    put_u32(&mut b, 3 * 512 + 4, 0); // GDE 1 absent
    put_u32(&mut b, 3 * 512 + 8, 5); // GDE 2 -> GT at 5
    put_u32(&mut b, 4 * 512, 8); // grain 0
    put_u32(&mut b, 4 * 512 + 4, 16); // grain 1, right after grain 0
    put_u32(&mut b, 4 * 512 + 12, 1); // grain 3 zeroed
    put_u32(&mut b, 4 * 512 + 20, 24); // grain 5
    put_u32(&mut b, 5 * 512 + (300 - 256) * 4, 32); // grain 300
    put_u32(&mut b, 5 * 512 + (350 - 256) * 4, u32::MAX); // past the capacity: ignored
    for (sector, byte) in [(8, 0x11), (16, 0x22), (24, 0x55), (32, 0xAB)] {
        b[sector * 512..(sector + 8) * 512].fill(byte);
    }
    let mut raw = vec![0u8; HOSTED_CAPACITY_SECTORS as usize * 512];
    raw[..4096].fill(0x11);
    raw[4096..8192].fill(0x22);
    raw[5 * 4096..6 * 4096].fill(0x55);
    raw[300 * 4096..].fill(0xAB);
    (b, raw)
}

// ---------------------------------------------------------------------------------------
// layouts

#[test]
fn every_writer_layout_reads_back() {
    // 3 MiB + 5 sectors: not a multiple of the 64 KiB grain.
    let raw = scattered_raw(3 * 1024 * 1024 + 5 * 512);
    for (lay, source) in [
        (StreamLayout::GdInFooter, GrainMapSource::Footer),
        (StreamLayout::GdInHeader, GrainMapSource::Header),
        (StreamLayout::NoGrainDirectory, GrainMapSource::MarkerScan),
    ] {
        let img = open(write(&raw, &layout(lay, 128))).unwrap();
        assert_eq!(img.grain_map_source(), source, "{lay:?}");
        assert_eq!(img.format(), DiskFormat::VmdkStreamOptimized);
        assert_eq!(img.virtual_size(), raw.len() as u64);
        assert_eq!(img.unit_bytes(), 65536);
        assert_eq!(img.create_type(), Some("streamOptimized"));
        assert_eq!(img.extent_lines()[0].size_sectors, 6149);
        assert_eq!(flat(&img), raw, "{lay:?}");
        check_tiling(&img, &raw, 7);
    }
}

#[test]
fn grain_sizes_and_tables_spanning_several_directory_entries() {
    // Grain 8 sectors x 512 entries = 2 MiB per table: 5 MiB + 1 sector spans 3 tables.
    let raw = scattered_raw(5 * 1024 * 1024 + 512);
    for lay in [StreamLayout::GdInFooter, StreamLayout::GdInHeader] {
        for grain in [8, 2048] {
            let bytes = write(&raw, &layout(lay, grain));
            let img = open(bytes).unwrap();
            assert_eq!(img.unit_bytes(), grain * 512);
            assert_eq!(flat(&img), raw, "{lay:?} grain {grain}");
        }
    }
}

#[test]
fn header_with_a_real_grain_directory_and_a_footer_uses_the_header() {
    // COT's input.vmdk: gdOffset in the header and in the footer.
    let raw = scattered_raw(1024 * 1024);
    let mut b = write(&raw, &layout(StreamLayout::GdInFooter, 128));
    let footer_at = b.len() as u64 - 1024;
    let gd = {
        let mut h = [0u8; 512];
        h.copy_from_slice(&b[footer_at as usize..footer_at as usize + 512]);
        SparseExtentHeader::parse(&h).gd_offset_sectors
    };
    set_header(&mut b, 0, |h| h.gd_offset_sectors = gd);
    let img = open(b).unwrap();
    assert_eq!(img.grain_map_source(), GrainMapSource::Header);
    assert_eq!(flat(&img), raw);
}

#[test]
fn empty_disk_has_no_tables_and_reads_as_one_hole_per_table() {
    let raw = vec![0u8; 40 * 1024 * 1024];
    let img = open(write(&raw, &layout(StreamLayout::GdInFooter, 128))).unwrap();
    assert_eq!(img.stored_grain_tables(), Some(0));
    // One table covers 32 MiB: the first extent is the whole first table.
    assert_eq!(
        img.map(0, u64::MAX).unwrap(),
        Extent::Unallocated { len: 32 << 20 }
    );
    assert_eq!(
        img.map(33 << 20, u64::MAX).unwrap(),
        Extent::Unallocated { len: 7 << 20 }
    );
    // The other layouts of an empty disk: no tables, no grains.
    let img = open(write(&raw, &layout(StreamLayout::GdInHeader, 128))).unwrap();
    assert_eq!(img.stored_grain_tables(), Some(0));
    assert_eq!(
        img.map(0, u64::MAX).unwrap(),
        Extent::Unallocated { len: 32 << 20 }
    );
    let img = open(write(&raw, &layout(StreamLayout::NoGrainDirectory, 128))).unwrap();
    assert_eq!(img.scanned_grains(), Some(0));
    assert_eq!(
        img.map(0, u64::MAX).unwrap(),
        Extent::Unallocated { len: 40 << 20 }
    );
}

#[test]
fn scan_skips_table_directory_footer_and_progress_markers() {
    let g0 = noise(4096, 1);
    let g3 = vec![b'x'; 4096];
    let b = scan_stream(&[
        Part::Grain { lba: 0, data: &g0 },
        Part::Meta {
            kind: MarkerType::Progress, // vSphere progress marker: val 0, skipped
            payload_sectors: 0,
        },
        Part::Grain { lba: 24, data: &g3 },
        Part::Meta {
            kind: MarkerType::GrainTable,
            payload_sectors: 1,
        },
        Part::Meta {
            kind: MarkerType::GrainDirectory,
            payload_sectors: 1,
        },
        EOS,
        Part::Meta {
            kind: MarkerType::Unknown(77), // after EOS: never looked at
            payload_sectors: 0,
        },
    ]);
    let img = open(b).unwrap();
    assert_eq!(img.grain_map_source(), GrainMapSource::MarkerScan);
    assert_eq!(img.scanned_grains(), Some(2));
    let mut raw = vec![0u8; 64 * 512];
    raw[..4096].copy_from_slice(&g0);
    raw[3 * 4096..4 * 4096].copy_from_slice(&g3);
    assert_eq!(flat(&img), raw);
    // Grains 1 and 2 are one hole.
    assert_eq!(
        img.map(4096, u64::MAX).unwrap(),
        Extent::Unallocated { len: 8192 }
    );
    check_tiling(&img, &raw, 3);
}

#[test]
fn scanned_grains_out_of_lba_order_are_sorted() {
    let (a, b) = (vec![1u8; 4096], vec![2u8; 4096]);
    let img = open(scan_stream(&[
        Part::Grain { lba: 40, data: &b },
        Part::Grain { lba: 8, data: &a },
        EOS,
    ]))
    .unwrap();
    let f = flat(&img);
    assert_eq!(&f[4096..8192], &a[..]);
    assert_eq!(&f[5 * 4096..6 * 4096], &b[..]);
}

// ---------------------------------------------------------------------------------------
// partial last grain

#[test]
fn partial_last_grain_stored_whole_or_as_its_tail() {
    // Capacity 8 grains of 8 sectors minus 5 sectors: the last grain holds 3 sectors.
    let tail = vec![0x7Eu8; 3 * 512];
    let mut whole = tail.clone();
    whole.resize(4096, 0);
    for data in [&tail, &whole] {
        let mut b = scan_stream(&[Part::Grain { lba: 56, data }, EOS]);
        set_header(&mut b, 0, |h| h.capacity_sectors = 59);
        let img = open(b).unwrap();
        assert_eq!(img.virtual_size(), 59 * 512);
        assert_eq!(img.unit_len(7), 1536);
        let mut out = vec![0u8; 1536];
        img.decode_unit(7, &mut out).unwrap();
        assert_eq!(out, tail);
        assert_eq!(
            img.map(7 * 4096 + 100, u64::MAX).unwrap(),
            Extent::Unit {
                unit: 7,
                offset_in_unit: 100,
                len: 1436
            }
        );
    }
    // Neither the tail nor a whole grain: refused.
    let mut b = scan_stream(&[
        Part::Grain {
            lba: 56,
            data: &[1u8; 2000],
        },
        EOS,
    ]);
    set_header(&mut b, 0, |h| h.capacity_sectors = 59);
    let img = open(b).unwrap();
    let e = img.decode_unit(7, &mut vec![0u8; 1536]).unwrap_err();
    assert!(matches!(
        e.layer_error(),
        Some(DiskError::UnitSizeMismatch { unit: 7, .. })
    ));
}

// ---------------------------------------------------------------------------------------
// hosted sparse

#[test]
fn hosted_sparse_maps_stored_zeroed_and_unallocated_grains() {
    let (b, raw) = hosted_sparse();
    let img = open(b).unwrap();
    assert_eq!(img.format(), DiskFormat::VmdkSparse);
    assert_eq!(img.create_type(), Some("monolithicSparse"));
    assert_eq!(img.descriptor().unwrap().cid, Some(0x12345678));
    assert_eq!(img.virtual_size(), HOSTED_CAPACITY_SECTORS * 512);
    // Grains 0 and 1 are stored back to back: one extent.
    assert_eq!(
        img.map(100, u64::MAX).unwrap(),
        Extent::Stored {
            source_offset: 8 * 512 + 100,
            len: 8192 - 100
        }
    );
    assert_eq!(
        img.map(2 * 4096, u64::MAX).unwrap(),
        Extent::Unallocated { len: 4096 }
    );
    assert_eq!(img.map(3 * 4096 + 1, 10).unwrap(), Extent::Zero { len: 10 });
    // Directory entry 1 is absent: all of grains 128..256 in one extent.
    assert_eq!(
        img.map(128 * 4096, u64::MAX).unwrap(),
        Extent::Unallocated { len: 128 * 4096 }
    );
    // The partial last grain stops at the capacity.
    assert_eq!(
        img.map(300 * 4096, u64::MAX).unwrap(),
        Extent::Stored {
            source_offset: 32 * 512,
            len: 1536
        }
    );
    assert_eq!(flat(&img), raw);
    check_tiling(&img, &raw, 11);
    let e = img.decode_unit(0, &mut vec![0u8; 4096]).unwrap_err();
    assert!(matches!(
        e.layer_error(),
        Some(DiskError::Vmdk(VmdkError::NotACompressedGrain { unit: 0 }))
    ));
}

#[test]
fn zeroed_grain_entry_without_its_flag_is_refused() {
    let (mut b, _) = hosted_sparse();
    set_header(&mut b, 0, |h| h.flags &= !FLAG_ZEROED_GRAIN_GTE);
    let img = open(b).unwrap();
    assert_eq!(
        vmdk_err(img.map(3 * 4096, 1)),
        VmdkError::ZeroedGrainWithoutFlag { grain: 3 }
    );
}

#[test]
fn grain_entries_before_overhead_or_past_the_end_are_refused() {
    let (mut b, _) = hosted_sparse();
    put_u32(&mut b, 4 * 512 + 8, 5); // grain 2 -> sector 5 (a grain table)
    put_u32(&mut b, 4 * 512 + 16, 39); // grain 4 -> sector 39, only 1 sector left
    put_u32(&mut b, 4 * 512 + 24, 4000); // grain 6 -> past the end
    let img = open(b).unwrap();
    assert_eq!(
        vmdk_err(img.map(2 * 4096, 1)),
        VmdkError::GrainBeforeOverhead {
            grain: 2,
            sector: 5,
            overhead_sectors: 8
        }
    );
    assert_eq!(
        vmdk_err(img.map(4 * 4096, 4096)),
        VmdkError::GrainOutOfBounds {
            grain: 4,
            sector: 39
        }
    );
    // The part of grain 4 that is inside the file can still be read.
    assert!(img.map(4 * 4096, 512).is_ok());
    assert_eq!(
        vmdk_err(img.map(6 * 4096, 1)),
        VmdkError::GrainOutOfBounds {
            grain: 6,
            sector: 4000
        }
    );
}

#[test]
fn compressed_grains_without_markers_carry_a_size_prefix() {
    // Flag 16 only (VMDK 1.1 "compressed sparse"): each grain is `size u32` + zlib data.
    let (mut b, _) = hosted_sparse();
    set_header(&mut b, 0, |h| {
        h.flags = FLAG_NEWLINE_DETECT | FLAG_COMPRESSED;
        h.compress_algorithm = COMPRESSION_DEFLATE;
    });
    let data: Vec<u8> = (0..4096u32).map(|i| (i % 7) as u8 * 9).collect();
    let z = zlib(&data);
    assert!(z.len() < 4096 - 4);
    b[8 * 512..16 * 512].fill(0);
    put_u32(&mut b, 8 * 512, z.len() as u32);
    b[8 * 512 + 4..8 * 512 + 4 + z.len()].copy_from_slice(&z);
    let img = open(b).unwrap();
    assert_eq!(img.format(), DiskFormat::VmdkSparse);
    assert_eq!(
        img.map(0, u64::MAX).unwrap(),
        Extent::Unit {
            unit: 0,
            offset_in_unit: 0,
            len: 4096
        }
    );
    let mut out = vec![0u8; 4096];
    img.decode_unit(0, &mut out).unwrap();
    assert_eq!(out, data);
    // Grain 1 at sector 16 holds raw 0x22 bytes: its "size" is 0x22222222.
    assert_eq!(
        vmdk_err(img.decode_unit(1, &mut out)),
        VmdkError::CompressedSizeInvalid {
            sector: 16,
            size_bytes: 0x2222_2222,
            max_bytes: 4096 + 1024
        }
    );
}

// ---------------------------------------------------------------------------------------
// corrupt grains

#[test]
fn corrupt_grains_fail_decode_instead_of_reading_zeros() {
    let raw = scattered_raw(1024 * 1024);
    let clean = write(&raw, &layout(StreamLayout::GdInFooter, 128));
    let s = grain_sector(&clean, 0);
    let at = s * 512;

    // Flipped bytes in the middle of the deflate stream.
    let mut b = clean.clone();
    for x in &mut b[at as usize + 200..at as usize + 240] {
        *x ^= 0x5A;
    }
    let img = open(b).unwrap();
    let e = img.decode_unit(0, &mut vec![0u8; 65536]).unwrap_err();
    assert!(matches!(
        e.layer_error(),
        Some(DiskError::CorruptUnit { unit: 0, .. })
            | Some(DiskError::UnitSizeMismatch { unit: 0, .. })
    ));
    let disk = FlatDisk::new(Arc::new(img), Arc::new(UnitCache::new(0)), None);
    assert!(disk.read_at(10, &mut [0u8; 10]).is_err());

    // The marker names another grain.
    let mut b = clean.clone();
    put_u64(&mut b, at, 128);
    assert_eq!(
        vmdk_err(open(b).unwrap().decode_unit(0, &mut vec![0u8; 65536])),
        VmdkError::GrainLbaMismatch {
            grain: 0,
            expected_lba: 0,
            found_lba: 128
        }
    );

    // The size is absurd, or zero (a metadata marker where a grain should be).
    let mut b = clean.clone();
    put_u32(&mut b, at + 8, 65536 + 1025);
    assert_eq!(
        vmdk_err(open(b).unwrap().decode_unit(0, &mut vec![0u8; 65536])),
        VmdkError::CompressedSizeInvalid {
            sector: s,
            size_bytes: 65536 + 1025,
            max_bytes: 65536 + 1024
        }
    );
    let mut b = clean.clone();
    put_u32(&mut b, at + 8, 0);
    put_u32(&mut b, at + 12, 1);
    assert_eq!(
        vmdk_err(open(b).unwrap().decode_unit(0, &mut vec![0u8; 65536])),
        VmdkError::NotAGrainMarker {
            grain: 0,
            sector: s,
            marker_type: 1
        }
    );

    // A size within bounds that runs past the end of the extent: in a stream with the
    // grain directory in the header, point grain 0 at the last sector (the EOS marker)
    // and make that a grain marker claiming a whole grain.
    let mut b = write(&raw, &layout(StreamLayout::GdInHeader, 128));
    let file_sectors = b.len() as u64 / 512;
    let last = file_sectors - 1;
    let gd = open(b.clone())
        .unwrap()
        .effective_header()
        .gd_offset_sectors;
    let gt = u64::from(u32::from_le_bytes(
        b[gd as usize * 512..gd as usize * 512 + 4]
            .try_into()
            .unwrap(),
    ));
    put_u32(&mut b, gt * 512, last as u32); // grain 0 -> last sector
    put_u64(&mut b, last * 512, 0); // lba 0
    put_u32(&mut b, last * 512 + 8, 65536); // size: one grain, within bounds
    assert_eq!(
        vmdk_err(open(b).unwrap().decode_unit(0, &mut vec![0u8; 65536])),
        VmdkError::MarkerOutOfBounds {
            sector: last,
            needed_sectors: (12u64 + 65536).div_ceil(512),
            file_sectors
        }
    );
}

#[test]
fn raw_deflate_grains_are_accepted() {
    let data = noise(4096, 4);
    let mut c = Compressor::new(CompressionLvl::default());
    let mut d = vec![0u8; c.deflate_compress_bound(4096)];
    let n = c.deflate_compress(&data, &mut d).unwrap();
    d.truncate(n);
    let img = open(scan_stream(&[
        Part::GrainRaw {
            lba: 0,
            size: n as u32,
            payload: &d,
        },
        EOS,
    ]))
    .unwrap();
    let mut out = vec![0u8; 4096];
    img.decode_unit(0, &mut out).unwrap();
    assert_eq!(out, data);
}

#[test]
fn decode_unit_checks_its_arguments() {
    let img = open(scan_stream(&[
        Part::Grain {
            lba: 0,
            data: &[3u8; 4096],
        },
        EOS,
    ]))
    .unwrap();
    assert_eq!(
        vmdk_err(img.decode_unit(1, &mut vec![0u8; 4096])),
        VmdkError::NotACompressedGrain { unit: 1 }
    );
    assert_eq!(
        vmdk_err(img.decode_unit(8, &mut vec![0u8; 4096])),
        VmdkError::NotACompressedGrain { unit: 8 }
    );
    let e = img.decode_unit(0, &mut [0u8; 100]).unwrap_err();
    assert!(matches!(
        e.layer_error(),
        Some(DiskError::UnitSizeMismatch {
            unit: 0,
            expected: 4096,
            actual: 100
        })
    ));
    assert_eq!(
        vmdk_err(img.map(64 * 512, 1)),
        VmdkError::MapOutOfRange {
            offset: 64 * 512,
            max_len: 1,
            virtual_size: 64 * 512
        }
    );
    assert!(matches!(
        vmdk_err(img.map(0, 0)),
        VmdkError::MapOutOfRange { max_len: 0, .. }
    ));
}

// ---------------------------------------------------------------------------------------
// rejection rules at open

#[test]
fn short_or_foreign_sources_are_refused() {
    assert_eq!(
        vmdk_err(open(b"KDMV".to_vec())),
        VmdkError::TooShort { len_bytes: 4 }
    );
    let mut b = vec![0u8; 1024];
    b[..4].copy_from_slice(b"COWD");
    assert_eq!(vmdk_err(open(b)), VmdkError::BadMagic { found: *b"COWD" });
}

#[test]
fn header_rules_are_enforced_at_open() {
    let good = scan_stream(&[EOS]);
    assert!(open(good.clone()).is_ok());
    type Edit = Box<dyn Fn(&mut SparseExtentHeader)>;
    let cases: Vec<(Edit, VmdkError)> = vec![
        (
            Box::new(|h| h.version = 4),
            VmdkError::UnsupportedVersion { version: 4 },
        ),
        (
            Box::new(|h| h.newline_bytes[2] = b'\n'),
            VmdkError::NewlineCheckFailed {
                found: [0x0A, 0x20, 0x0A, 0x0A],
            },
        ),
        (
            Box::new(|h| h.flags |= 1 << 20),
            VmdkError::UnknownIncompatibleFlags { flags: 0x130001 },
        ),
        (
            Box::new(|h| h.flags = FLAG_MARKERS),
            VmdkError::MarkersWithoutCompression {
                flags: FLAG_MARKERS,
            },
        ),
        (
            Box::new(|h| h.compress_algorithm = 7),
            VmdkError::UnsupportedCompression {
                algorithm: 7,
                flags: 0x30001,
            },
        ),
        (
            Box::new(|h| h.grain_sectors = 12),
            VmdkError::InvalidGrainSize {
                grain_sectors: 12,
                min: 8,
                max: 2048,
            },
        ),
        (
            Box::new(|h| h.num_gtes_per_gt = 4096),
            VmdkError::InvalidGrainTableSize {
                num_gtes_per_gt: 4096,
            },
        ),
        (
            Box::new(|h| {
                h.capacity_sectors = 0;
                h.descriptor_offset_sectors = 0;
            }),
            VmdkError::ZeroCapacity,
        ),
        (
            Box::new(|h| h.capacity_sectors = u64::MAX),
            VmdkError::CapacityTooLarge {
                capacity_sectors: u64::MAX,
                limit_bytes: crate::disk::MAX_VIRTUAL_BYTES,
            },
        ),
        (
            Box::new(|h| h.descriptor_size_sectors = 4096),
            VmdkError::DescriptorTooLarge {
                size_sectors: 4096,
                limit_sectors: 2048,
            },
        ),
        (
            Box::new(|h| h.descriptor_offset_sectors = u64::MAX),
            VmdkError::DescriptorOutOfBounds {
                offset_sectors: u64::MAX,
                size_sectors: 1,
                file_sectors: 3,
            },
        ),
        (
            Box::new(|h| h.overhead_sectors = 1),
            VmdkError::InvalidOverhead {
                overhead_sectors: 1,
                min_sectors: 2,
                max_sectors: 3,
            },
        ),
        (
            Box::new(|h| h.overhead_sectors = 4),
            VmdkError::InvalidOverhead {
                overhead_sectors: 4,
                min_sectors: 2,
                max_sectors: 3,
            },
        ),
    ];
    for (edit, expected) in cases {
        let mut b = good.clone();
        set_header(&mut b, 0, |h| edit(h));
        assert_eq!(vmdk_err(open(b)), expected);
    }
}

#[test]
fn descriptor_wrapper_is_refused_with_its_create_type() {
    let mut b = scan_stream(&[EOS]);
    set_header(&mut b, 0, |h| h.capacity_sectors = 0);
    b[512..1024].fill(0);
    b[512..540].copy_from_slice(b"createType=\"monolithicFlat\"\n");
    assert_eq!(
        vmdk_err(open(b)),
        VmdkError::DescriptorWrapper {
            create_type: Some("monolithicFlat".into())
        }
    );
}

#[test]
fn grain_directory_and_table_placement_rules() {
    let (good, _) = hosted_sparse();
    let file_sectors = good.len() as u64 / 512;
    // GD past the end / over the header / over the descriptor.
    for (gd, expected) in [
        (
            40,
            VmdkError::GrainDirectoryOutOfBounds {
                sector: 40,
                sectors: 1,
                file_sectors,
            },
        ),
        (
            u64::MAX - 1,
            VmdkError::GrainDirectoryOutOfBounds {
                sector: u64::MAX - 1,
                sectors: 1,
                file_sectors,
            },
        ),
        (
            0,
            VmdkError::GrainDirectoryOverlap {
                sector: 0,
                region: "header",
            },
        ),
        (
            2,
            VmdkError::GrainDirectoryOverlap {
                sector: 2,
                region: "embedded descriptor",
            },
        ),
    ] {
        let mut b = good.clone();
        set_header(&mut b, 0, |h| h.gd_offset_sectors = gd);
        assert_eq!(vmdk_err(open(b)), expected);
    }
    // GT entries past the end, over the descriptor, over the GD, shared.
    for (gde, expected) in [
        (
            40,
            VmdkError::GrainTableOutOfBounds {
                gde_index: 1,
                sector: 40,
            },
        ),
        (
            u32::MAX,
            VmdkError::GrainTableOutOfBounds {
                gde_index: 1,
                sector: u64::from(u32::MAX),
            },
        ),
        (
            1,
            VmdkError::GrainTableOverlap {
                gde_index: 1,
                sector: 1,
                region: "embedded descriptor",
            },
        ),
        (
            3,
            VmdkError::GrainTableOverlap {
                gde_index: 1,
                sector: 3,
                region: "grain directory",
            },
        ),
        (
            5,
            VmdkError::GrainTablesOverlap {
                gde_index: 1,
                other_gde_index: 2,
                sector: 5,
            },
        ),
    ] {
        let mut b = good.clone();
        put_u32(&mut b, 3 * 512 + 4, gde);
        assert_eq!(vmdk_err(open(b)), expected, "gde {gde}");
    }
}

#[test]
fn footer_rules() {
    let raw = scattered_raw(256 * 1024);
    let good = write(&raw, &layout(StreamLayout::GdInFooter, 128));
    let footer_at = good.len() as u64 - 1024;

    let mut b = good.clone();
    set_header(&mut b, footer_at, |f| f.gd_offset_sectors = GD_AT_END);
    assert_eq!(vmdk_err(open(b)), VmdkError::FooterWithoutGrainDirectory);

    let mut b = good.clone();
    set_header(&mut b, footer_at, |f| f.capacity_sectors = 1024);
    assert_eq!(
        vmdk_err(open(b)),
        VmdkError::FooterMismatch {
            field: "capacity",
            header: 512,
            footer: 1024
        }
    );

    // The footer's own fields are validated like a header's.
    let mut b = good.clone();
    set_header(&mut b, footer_at, |f| f.version = 9);
    assert_eq!(
        vmdk_err(open(b)),
        VmdkError::UnsupportedVersion { version: 9 }
    );

    // A footer with a broken EOS after it is no footer: the stream is scanned instead,
    // and without any EOS it is truncated.
    let mut b = good.clone();
    let eos_at = b.len() - 512;
    put_u32(&mut b, eos_at as u64 + 12, 9);
    assert_eq!(
        vmdk_err(open(b)),
        VmdkError::UnknownMarkerType {
            sector: eos_at as u64 / 512,
            marker_type: 9
        }
    );

    // Hosted sparse without markers that defers to a missing footer.
    let (mut b, _) = hosted_sparse();
    set_header(&mut b, 0, |h| h.gd_offset_sectors = GD_AT_END);
    assert_eq!(vmdk_err(open(b)), VmdkError::FooterMissing);
}

#[test]
fn truncated_streams_are_refused() {
    let raw = scattered_raw(1024 * 1024);
    // A VMware-style stream cut anywhere after its first grains: no footer, no EOS.
    let good = write(&raw, &layout(StreamLayout::GdInFooter, 128));
    for cut_sectors in [1, 2, 3, 10] {
        let mut b = good.clone();
        b.truncate(b.len() - cut_sectors * 512);
        let e = vmdk_err(open(b));
        assert!(
            matches!(e, VmdkError::StreamTruncated { .. }),
            "cut {cut_sectors}: {e:?}"
        );
    }
    // Cut right after a whole block: the scan runs off the end cleanly.
    let b = scan_stream(&[Part::Grain {
        lba: 0,
        data: &[1u8; 4096],
    }]);
    let end = b.len() as u64 / 512;
    assert_eq!(
        vmdk_err(open(b)),
        VmdkError::StreamTruncated { sector: end }
    );
    // Cut inside a grain: its marker claims more sectors than remain.
    let data = noise(4096, 2);
    let mut b = scan_stream(&[
        Part::Grain {
            lba: 0,
            data: &data,
        },
        EOS,
    ]);
    b.truncate(3 * 512);
    assert_eq!(vmdk_err(open(b)), VmdkError::StreamTruncated { sector: 2 });
}

#[test]
fn scan_rules() {
    let g = [9u8; 4096];
    let cases: Vec<(Vec<u8>, VmdkError)> = vec![
        (
            scan_stream(&[
                Part::Meta {
                    kind: MarkerType::Unknown(5),
                    payload_sectors: 0,
                },
                EOS,
            ]),
            VmdkError::UnknownMarkerType {
                sector: 2,
                marker_type: 5,
            },
        ),
        (
            scan_stream(&[Part::Grain { lba: 4, data: &g }, EOS]),
            VmdkError::GrainLbaMisaligned { sector: 2, lba: 4 },
        ),
        (
            scan_stream(&[Part::Grain { lba: 64, data: &g }, EOS]),
            VmdkError::GrainLbaBeyondCapacity {
                sector: 2,
                lba: 64,
                capacity_sectors: 64,
            },
        ),
        (
            scan_stream(&[
                Part::Grain { lba: 8, data: &g },
                Part::Grain { lba: 8, data: &g },
                EOS,
            ]),
            VmdkError::DuplicateGrain {
                grain: 1,
                first_sector: 2,
                second_sector: 3,
            },
        ),
        (
            scan_stream(&[
                Part::GrainRaw {
                    lba: 0,
                    size: 4096 + 1025,
                    payload: &[],
                },
                EOS,
            ]),
            VmdkError::CompressedSizeInvalid {
                sector: 2,
                size_bytes: 4096 + 1025,
                max_bytes: 4096 + 1024,
            },
        ),
        (
            scan_stream(&[
                Part::Meta {
                    kind: MarkerType::GrainTable,
                    payload_sectors: 0,
                },
                EOS,
            ])
            .into_iter()
            .enumerate()
            // Table marker at sector 2 claims u64::MAX payload sectors.
            .map(|(i, x)| if (1024..1032).contains(&i) { 0xFF } else { x })
            .collect(),
            VmdkError::MarkerOutOfBounds {
                sector: 2,
                needed_sectors: u64::MAX,
                file_sectors: 4,
            },
        ),
    ];
    for (b, expected) in cases {
        assert_eq!(vmdk_err(open(b)), expected);
    }
}

// ---------------------------------------------------------------------------------------
// big claims stay cheap

/// A footer-layout stream of `capacity_sectors` with no grains at all: header, descriptor,
/// an all-zero grain directory (with its marker), footer marker, footer, EOS.
fn empty_footer_stream(capacity_sectors: u64) -> Vec<u8> {
    let mut h = SparseExtentHeader {
        magic_number: *b"KDMV",
        version: 3,
        flags: FLAG_NEWLINE_DETECT | FLAG_COMPRESSED | FLAG_MARKERS,
        capacity_sectors,
        grain_sectors: 128,
        descriptor_offset_sectors: 1,
        descriptor_size_sectors: 1,
        num_gtes_per_gt: 512,
        rgd_offset_sectors: 0,
        gd_offset_sectors: GD_AT_END,
        overhead_sectors: 2,
        unclean_shutdown: 0,
        newline_bytes: NEWLINE_BYTES,
        compress_algorithm: COMPRESSION_DEFLATE,
    };
    let g = h.validate().unwrap();
    let mut b = h.encode().to_vec();
    b.resize(1024, 0); // empty descriptor
    b.extend_from_slice(&Marker::metadata_sector(
        MarkerType::GrainDirectory,
        g.gd_sectors,
    ));
    h.gd_offset_sectors = b.len() as u64 / 512;
    b.resize(b.len() + g.gd_sectors as usize * 512, 0);
    b.extend_from_slice(&Marker::metadata_sector(MarkerType::Footer, 1));
    b.extend_from_slice(&h.encode());
    b.extend_from_slice(&Marker::metadata_sector(MarkerType::EndOfStream, 0));
    b
}

#[test]
fn one_tib_empty_disk_opens_without_reading_tables() {
    let b = empty_footer_stream(1 << 31); // 1 TiB: 32768 directory entries (128 KiB)
    assert_eq!(b.len(), (2 + 1 + 256 + 3) * 512);
    let img = open(b).unwrap();
    assert_eq!(img.virtual_size(), 1 << 40);
    assert_eq!(img.stored_grain_tables(), Some(0));
    assert_eq!(
        img.map((1 << 40) - 1, 100).unwrap(),
        Extent::Unallocated { len: 1 }
    );
    let disk = FlatDisk::new(Arc::new(img), Arc::new(UnitCache::new(0)), None);
    let mut buf = vec![1u8; 1 << 20];
    assert_eq!(disk.read_at(500 << 30, &mut buf).unwrap(), 1 << 20);
    assert!(buf.iter().all(|&x| x == 0));
}

#[test]
fn sixty_four_tib_claim_in_a_small_file_is_refused_before_allocating() {
    let mut b = empty_footer_stream(1 << 20);
    let footer_at = b.len() as u64 - 1024;
    let claim = crate::disk::MAX_VIRTUAL_BYTES / 512;
    set_header(&mut b, 0, |h| h.capacity_sectors = claim);
    set_header(&mut b, footer_at, |h| h.capacity_sectors = claim);
    let file_sectors = b.len() as u64 / 512;
    assert_eq!(
        vmdk_err(open(b)),
        VmdkError::GrainDirectoryOutOfBounds {
            sector: 3,
            sectors: 16384, // 2 Mi entries
            file_sectors
        }
    );
}

#[test]
fn engine_reads_writer_output_through_the_cache() {
    let raw = scattered_raw(2 * 1024 * 1024 + 3 * 512);
    let img = open(write(&raw, &layout(StreamLayout::GdInFooter, 128))).unwrap();
    let disk = FlatDisk::new(Arc::new(img), Arc::new(UnitCache::new(0)), None);
    let mut got = vec![0u8; raw.len()];
    let mut pos = 0;
    for chunk in [1usize, 511, 4096, 65536, 100_000].iter().cycle() {
        if pos >= raw.len() {
            break;
        }
        let n = disk
            .read_at(pos as u64, &mut got[pos..(pos + chunk).min(raw.len())])
            .unwrap();
        assert!(n > 0);
        pos += n;
    }
    assert_eq!(got, raw);
}

#[test]
fn concurrent_readers_see_the_same_bytes() {
    // Grain size 8 sectors with 512-entry tables: 3 MiB spans 2 tables, so threads load
    // tables and decode grains concurrently.
    let raw = scattered_raw(3 * 1024 * 1024);
    let img = open(write(&raw, &layout(StreamLayout::GdInFooter, 8))).unwrap();
    let disk = Arc::new(FlatDisk::new(
        Arc::new(img),
        Arc::new(UnitCache::new(0)),
        None,
    ));
    let raw = Arc::new(raw);
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (disk, raw) = (disk.clone(), raw.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 12_345];
                let size = raw.as_slice().len() as u64;
                let mut pos = t * 100_003 % size;
                for _ in 0..200 {
                    let n = disk.read_at(pos, &mut buf).unwrap();
                    assert_eq!(&buf[..n], &raw[pos as usize..pos as usize + n]);
                    pos = (pos + 777_777) % size;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// writer

#[test]
fn writer_skips_zero_grains_and_validates_its_options() {
    use crate::disk::vmdk_writer::StreamSummary;
    let mut raw = vec![0u8; 1024 * 1024];
    raw[70_000] = 1;
    let src = raw.clone();
    let mut out = Vec::new();
    let s = write_stream_optimized(&src, &mut out, &StreamWriterOptions::default()).unwrap();
    assert_eq!(
        s,
        StreamSummary {
            bytes_written: out.len() as u64,
            capacity_sectors: 2048,
            grains_written: 1,
            grain_tables_written: 1
        }
    );
    let text = String::from_utf8_lossy(&out[512..1024]).to_string();
    assert!(text.starts_with("# Disk DescriptorFile\n"));
    assert!(text.contains("createType=\"streamOptimized\""));
    assert!(text.contains("ddb.toolsVersion = \"2147483647\""));
    assert!(text.contains("ddb.adapterType = \"lsilogic\""));
    assert!(text.contains("ddb.geometry.cylinders = \"1\""));

    let empty: Vec<u8> = Vec::new();
    for (src, opts) in [
        (&empty, StreamWriterOptions::default()),
        (
            &raw,
            StreamWriterOptions {
                grain_sectors: 100,
                ..Default::default()
            },
        ),
        (
            &raw,
            StreamWriterOptions {
                compression_level: 13,
                ..Default::default()
            },
        ),
        (
            &raw,
            StreamWriterOptions {
                extent_file_name: "a\"b".into(),
                ..Default::default()
            },
        ),
    ] {
        let e = write_stream_optimized(src, &mut Vec::new(), &opts).unwrap_err();
        assert!(matches!(
            e.layer_error(),
            Some(DiskError::Vmdk(VmdkError::WriterInvalidInput { .. }))
        ));
    }
}

#[test]
fn writer_pads_a_source_that_is_not_whole_sectors() {
    let raw = b"hello, odd-sized disk".to_vec();
    let img = open(write(&raw, &StreamWriterOptions::default())).unwrap();
    assert_eq!(img.virtual_size(), 512);
    let f = flat(&img);
    assert_eq!(&f[..raw.len()], &raw[..]);
    assert!(f[raw.len()..].iter().all(|&x| x == 0));
}
