//! A checker of stream-optimized VMDK files against VMware's layout, written from the VMDK
//! 5.0 technote (docs/formats.md §4.1-4.5, §4.7) and decoding every field byte by byte (not
//! with ovafs's parser): the rules every stream must keep are asserted, and departures from
//! VMware's layout are listed.

#![allow(dead_code)]

use std::path::Path;

const GRAIN: u64 = 64 << 10;
const SECTOR: u64 = 512;
const GD_AT_END: u64 = u64::MAX;

// ---------------------------------------------------------------------------------------
// The layout checker (VMDK 5.0 technote; docs/formats.md §4.1-4.5, §4.7)
// ---------------------------------------------------------------------------------------

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The header fields, decoded here byte by byte (not with ovafs's parser).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub flags: u32,
    pub capacity: u64,
    pub grain_size: u64,
    pub descriptor_offset: u64,
    pub descriptor_size: u64,
    pub gtes_per_gt: u32,
    pub rgd_offset: u64,
    pub gd_offset: u64,
    pub overhead: u64,
    pub newline: [u8; 4],
    pub compress: u16,
}

fn header(b: &[u8]) -> Header {
    assert_eq!(&b[0..4], b"KDMV", "magic");
    Header {
        version: le32(b, 4),
        flags: le32(b, 8),
        capacity: le64(b, 12),
        grain_size: le64(b, 20),
        descriptor_offset: le64(b, 28),
        descriptor_size: le64(b, 36),
        gtes_per_gt: le32(b, 44),
        rgd_offset: le64(b, 48),
        gd_offset: le64(b, 56),
        overhead: le64(b, 64),
        newline: [b[73], b[74], b[75], b[76]],
        compress: u16::from_le_bytes([b[77], b[78]]),
    }
}

/// A marker: (val, size, type).
fn marker(b: &[u8], sector: u64) -> (u64, u32, u32) {
    let at = (sector * SECTOR) as usize;
    (le64(b, at), le32(b, at + 8), le32(b, at + 12))
}

/// What the checker found.
#[derive(Debug)]
pub struct Layout {
    pub header: Header,
    /// (grain index, marker sector, compressed bytes) in file order.
    pub grains: Vec<(u64, u64, Vec<u8>)>,
    /// Whether the file is in VMware's layout (footer, tables after runs, EOS last).
    pub vmware: bool,
    /// How the file departs from VMware's layout (empty when `vmware`).
    pub differences: Vec<String>,
}

/// Checks a stream-optimized VMDK. Rules every stream must keep are asserted; departures
/// from VMware's layout are listed in `differences` (the caller asserts there are none for
/// ovafs's output).
pub fn check_layout(path: &Path) -> Layout {
    let b = std::fs::read(path).unwrap();
    let len = b.len() as u64;
    let mut differences = Vec::new();
    let mut differ = |what: String| differences.push(what);
    assert!(
        len.is_multiple_of(SECTOR),
        "file length {len} is not whole sectors"
    );
    let h = header(&b[..512]);
    // Header (technote "SparseExtentHeader"; formats.md §4.1, §4.2; rule 15-17).
    assert_eq!(h.version, 3, "version");
    assert_ne!(h.flags & 1, 0, "flag bit 0 (newline detection) set");
    assert_eq!(
        h.newline,
        [0x0A, 0x20, 0x0D, 0x0A],
        "newline detection bytes"
    );
    assert_ne!(h.flags & (1 << 16), 0, "flag bit 16 (compressed)");
    assert_ne!(h.flags & (1 << 17), 0, "flag bit 17 (markers)");
    assert_eq!(h.flags & 0xFFFC_0000, 0, "no unknown incompatible flag");
    if h.flags != 0x30001 {
        differ(format!("flags {:#x} (VMware writes 0x30001)", h.flags));
    }
    assert_eq!(h.compress, 1, "compressAlgorithm DEFLATE");
    assert!(
        h.grain_size.is_power_of_two() && h.grain_size >= 8,
        "grainSize"
    );
    assert_eq!(h.gtes_per_gt, 512, "numGTEsPerGT");
    assert!(h.capacity > 0);
    assert!(
        h.descriptor_offset >= 1 && h.descriptor_size >= 1,
        "embedded descriptor"
    );
    assert!(
        h.descriptor_offset + h.descriptor_size <= h.overhead,
        "descriptor before grains"
    );
    let d0 = (h.descriptor_offset * SECTOR) as usize;
    let desc = &b[d0..d0 + (h.descriptor_size * SECTOR) as usize];
    // VirtualBox accepts only these first lines (formats.md §4.7).
    assert!(
        desc.starts_with(b"# Disk DescriptorFile") || desc.starts_with(b"# Disk Descriptor File"),
        "descriptor's first line"
    );
    let desc_text =
        String::from_utf8_lossy(&desc[..desc.iter().position(|&c| c == 0).unwrap_or(desc.len())]);
    assert!(
        desc_text.contains("createType=\"streamOptimized\""),
        "createType: {desc_text}"
    );
    let extent = desc_text
        .lines()
        .find(|l| l.starts_with("RW ") || l.starts_with("RDONLY "))
        .expect("an extent line");
    let extent_sectors: u64 = extent.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(
        extent_sectors, h.capacity,
        "the extent line's sectors = capacity"
    );

    let grain_bytes = h.grain_size * SECTOR;
    let grains_total = h.capacity.div_ceil(h.grain_size);
    let coverage = 512 * h.grain_size;
    let gd_entries = h.capacity.div_ceil(coverage);
    let gd_sectors = (gd_entries * 4).div_ceil(SECTOR);

    // The grain directory in force: the footer's (VMware) or the header's.
    let (effective, footer_at) = if h.gd_offset == GD_AT_END {
        // Footer position (qemu's and VirtualBox's reading, formats.md §4.5).
        assert!(len >= 3 * SECTOR + h.overhead * SECTOR);
        let fm = marker(&b, len / SECTOR - 3);
        assert_eq!(
            fm,
            (1, 0, 3),
            "footer marker at len - 1536 (val 1, size 0, type 3)"
        );
        let footer = header(&b[(len - 1024) as usize..(len - 512) as usize]);
        assert_eq!(
            marker(&b, len / SECTOR - 1),
            (0, 0, 0),
            "EOS as the last sector"
        );
        assert!(
            b[(len - 512) as usize..].iter().all(|&c| c == 0),
            "EOS sector is zero"
        );
        let mut same = footer.clone();
        same.gd_offset = GD_AT_END;
        assert_eq!(same, h, "the footer equals the header except gdOffset");
        assert_ne!(footer.gd_offset, GD_AT_END, "the footer's gdOffset is real");
        (footer, Some(len / SECTOR - 3))
    } else {
        differ("gdOffset in the header (VMware: GD_AT_END, directory in the footer)".into());
        (h.clone(), None)
    };
    let gd_at = effective.gd_offset;
    assert!(
        gd_at + gd_sectors <= len / SECTOR,
        "grain directory inside the file"
    );
    let gd: Vec<u64> = (0..gd_entries)
        .map(|i| le32(&b, (gd_at * SECTOR + i * 4) as usize) as u64)
        .collect();

    // Walk the markers from overHead (technote "Stream-Optimized Compressed Sparse Extents").
    let mut decompressor = libdeflater::Decompressor::new();
    let mut out = vec![0u8; grain_bytes as usize];
    let mut grains: Vec<(u64, u64, Vec<u8>)> = Vec::new();
    let mut tables_seen: Vec<(u64, u64)> = Vec::new(); // (table index, payload sector)
    let mut run_table: Option<u64> = None; // table of the grains since the last GT
    let mut gd_seen = None;
    let mut sector = h.overhead;
    let mut ended = false;
    while sector < len / SECTOR {
        let (val, size, kind) = marker(&b, sector);
        if size != 0 {
            // Grain marker: LBA on a grain boundary, inside the capacity, in LBA order.
            assert_eq!(val % h.grain_size, 0, "grain LBA {val} on a grain boundary");
            assert!(val < h.capacity, "grain LBA {val} inside the capacity");
            let grain = val / h.grain_size;
            if let Some(&(last, _, _)) = grains.last() {
                assert!(grain > last, "grains in LBA order: {grain} after {last}");
            }
            // VirtualBox refuses size >= 2 grains and inflates whole grains only.
            assert!((size as u64) < 2 * grain_bytes, "compressed size {size}");
            let at = (sector * SECTOR + 12) as usize;
            let data = b[at..at + size as usize].to_vec();
            assert_eq!(data[0] & 0x0F, 8, "zlib header (CM 8) at grain {grain}");
            assert_eq!(
                u16::from_be_bytes([data[0], data[1]]) % 31,
                0,
                "zlib FCHECK"
            );
            let n = decompressor.zlib_decompress(&data, &mut out).unwrap();
            let whole = n as u64 == grain_bytes;
            let is_last_partial =
                grain == grains_total - 1 && !h.capacity.is_multiple_of(h.grain_size);
            if !whole {
                assert!(
                    is_last_partial,
                    "grain {grain} inflates to {n} bytes, not a grain"
                );
                differ(format!(
                    "last grain {grain} inflates to {n} bytes (VirtualBox wants a whole grain)"
                ));
            }
            assert!(
                out[..n].iter().any(|&c| c != 0),
                "grain {grain} is all zeros"
            );
            let table = grain / 512;
            match run_table {
                Some(t) if t != table => {
                    differ(format!("no grain table between tables {t} and {table}"));
                    run_table = Some(table);
                }
                _ => run_table = Some(table),
            }
            grains.push((grain, sector, data));
            sector += (12 + size as u64).div_ceil(SECTOR);
            continue;
        }
        let block = &b[(sector * SECTOR + 16) as usize..((sector + 1) * SECTOR) as usize];
        assert!(
            block.iter().all(|&c| c == 0),
            "metadata marker padding at {sector}"
        );
        match kind {
            0 => {
                assert_eq!(val, 0, "EOS val");
                if sector != len / SECTOR - 1 {
                    let rest = &b[(sector * SECTOR) as usize..];
                    assert!(
                        rest.iter().all(|&c| c == 0),
                        "bytes after an EOS at {sector}"
                    );
                    differ("zero sectors after the last grain, no EOS as the last sector".into());
                    break;
                }
                ended = true;
                break;
            }
            1 => {
                assert_eq!(val, 4, "GT marker val (512 entries = 4 sectors)");
                let t = run_table
                    .take()
                    .expect("a grain table after its run of grains");
                assert!(gd_seen.is_none(), "grain table after the directory");
                tables_seen.push((t, sector + 1));
            }
            2 => {
                assert_eq!(val, gd_sectors, "GD marker val");
                assert!(
                    run_table.is_none(),
                    "grains without a table before the directory"
                );
                assert_eq!(
                    sector + 1,
                    gd_at,
                    "the footer's gdOffset points after the GD marker"
                );
                gd_seen = Some(sector + 1);
            }
            3 => {
                assert_eq!(val, 1, "footer marker val");
                assert_eq!(Some(sector), footer_at, "footer marker at len - 1536");
                assert!(gd_seen.is_some(), "footer after the directory");
            }
            other => panic!("unknown marker type {other} at sector {sector}"),
        }
        sector += 1 + val;
    }
    if !ended {
        differ("no end-of-stream marker".into());
    }
    if gd_seen.is_none() {
        differ("no GD marker (directory and tables before the grains, without markers)".into());
    }
    if tables_seen.is_empty() && !grains.is_empty() {
        differ("no GT markers".into());
    }
    // Every GD/GT entry points at the right thing (technote; rule 18, 21).
    let mut expected_tables = std::collections::BTreeMap::new();
    for &(grain, s, _) in &grains {
        expected_tables
            .entry(grain / 512)
            .or_insert_with(Vec::new)
            .push((grain, s));
    }
    for (t, &gde) in gd.iter().enumerate() {
        let t = t as u64;
        match expected_tables.get(&t) {
            None => {
                if gde != 0 {
                    // qemu allocates every table; its entries must then all be 0.
                    let all_zero = (0..512).all(|i| le32(&b, (gde * SECTOR + i * 4) as usize) == 0);
                    assert!(all_zero, "table {t} without grains has entries");
                    differ("tables allocated for empty ranges".into());
                }
            }
            Some(list) => {
                assert_ne!(gde, 0, "GD entry {t} for a table with grains");
                if !tables_seen.is_empty() {
                    assert!(
                        tables_seen.contains(&(t, gde)),
                        "GD entry {t} -> its GT marker's payload"
                    );
                }
                for i in 0..512u64 {
                    let gte = le32(&b, (gde * SECTOR + i * 4) as usize) as u64;
                    let grain = t * 512 + i;
                    let want = list
                        .iter()
                        .find(|&&(g, _)| g == grain)
                        .map_or(0, |&(_, s)| s);
                    assert_eq!(gte, want, "GT {t} entry {i} -> grain {grain}'s marker");
                }
            }
        }
    }
    for (t, _) in &tables_seen {
        assert!(
            expected_tables.contains_key(t),
            "GT {t} written for no grain"
        );
    }
    differences.sort();
    differences.dedup();
    Layout {
        vmware: differences.is_empty(),
        header: h,
        grains,
        differences,
    }
}

// ---------------------------------------------------------------------------------------
// Fixtures and judges
// ---------------------------------------------------------------------------------------
