//! Unit tests of the VHD reader, with images built here field by field from the VHD
//! specification: fixed (512- and 511-byte footers), dynamic (partial last block,
//! unallocated blocks), differencing (bitmaps, locators), the size rule, and one test per
//! rejection rule with the exact error.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use super::*;
use crate::disk::DiskError;
use crate::disk::testutil::{check_tiling, disk_err, flat, flat_with_parent, noise};

/// A footer for `virtual_size` bytes, creator `creator`, with a geometry whose product is
/// `chs_sectors` (cylinders only) and a valid checksum.
fn footer(disk_type: u32, virtual_size: u64, creator: &[u8; 4], data_offset: u64) -> VhdFooter {
    let mut f = VhdFooter {
        cookie: FOOTER_COOKIE,
        features: 2,
        file_format_version: 0x0001_0000,
        data_offset,
        timestamp: 0,
        creator_application: *creator,
        creator_version: 0x0005_0003,
        creator_host_os: 0x5769_326B,
        original_size: virtual_size,
        current_size: virtual_size,
        // A geometry that multiplies to the size when it is a multiple of 16*63 sectors.
        cylinders: (virtual_size / 512 / (16 * 63)) as u16,
        heads: 16,
        sectors_per_track: 63,
        disk_type,
        checksum: 0,
        unique_id: [7; 16],
        saved_state: 0,
    };
    seal_footer(&mut f);
    f
}

fn seal_footer(f: &mut VhdFooter) {
    f.checksum = checksum(&f.encode(), VhdFooter::CHECKSUM_AT);
}

fn seal_header(h: &mut DynamicDiskHeader) {
    h.checksum = checksum(&h.encode(), DynamicDiskHeader::CHECKSUM_AT);
}

fn fixed(raw: &[u8], creator: &[u8; 4]) -> Vec<u8> {
    let mut v = raw.to_vec();
    v.extend_from_slice(&footer(DISK_TYPE_FIXED, raw.len() as u64, creator, u64::MAX).encode());
    v
}

/// How to build a dynamic or differencing image.
struct Spec<'a> {
    raw: &'a [u8],
    block: u32,
    disk_type: u32,
    /// Which blocks are allocated.
    allocated: &'a dyn Fn(u64) -> bool,
    /// The bitmap of a block (default: all ones).
    bitmap: &'a dyn Fn(u64) -> Vec<u8>,
    /// (platform code, data) locators.
    locators: Vec<([u8; 4], Vec<u8>)>,
    /// Parent unicode name.
    parent_name: &'a str,
}

fn all_ones(_: u64) -> Vec<u8> {
    Vec::new()
}

/// Layout: footer copy @0, dynamic header @512, BAT @1536, locator data, blocks, footer.
fn dynamic(spec: &Spec) -> Vec<u8> {
    let size = spec.raw.len() as u64;
    let block = u64::from(spec.block);
    let entries = size.div_ceil(block);
    let bitmap_bytes = (block / 512 / 8).next_multiple_of(512);
    let bat_at = 1536u64;
    let mut out = vec![0u8; bat_at as usize + (entries * 4).next_multiple_of(512) as usize];
    let mut locs = [ParentLocator::default(); 8];
    for (i, (code, data)) in spec.locators.iter().enumerate() {
        let at = out.len() as u64;
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(512), 0);
        locs[i] = ParentLocator {
            platform_code: *code,
            data_space: 1,
            data_length: data.len() as u32,
            data_offset: at,
        };
    }
    let mut bat = Vec::new();
    for b in 0..entries {
        if !(spec.allocated)(b) {
            bat.push(UNALLOCATED);
            continue;
        }
        bat.push((out.len() / 512) as u32);
        let mut bm = (spec.bitmap)(b);
        if bm.is_empty() {
            bm = vec![0xFF; bitmap_bytes as usize];
        }
        bm.resize(bitmap_bytes as usize, 0);
        out.extend_from_slice(&bm);
        let start = (b * block) as usize;
        let end = ((b + 1) * block).min(size) as usize;
        let mut data = spec.raw[start..end].to_vec();
        data.resize(block as usize, 0);
        out.extend_from_slice(&data);
    }
    for (i, e) in bat.iter().enumerate() {
        out[bat_at as usize + 4 * i..bat_at as usize + 4 * i + 4].copy_from_slice(&e.to_be_bytes());
    }
    // Unused BAT slots (padding to the sector) are unallocated too.
    for i in entries as usize..((entries * 4).next_multiple_of(512) / 4) as usize {
        out[bat_at as usize + 4 * i..bat_at as usize + 4 * i + 4]
            .copy_from_slice(&UNALLOCATED.to_be_bytes());
    }
    let mut name = [0u8; 512];
    for (i, u) in spec.parent_name.encode_utf16().take(256).enumerate() {
        name[2 * i..2 * i + 2].copy_from_slice(&u.to_be_bytes());
    }
    let mut h = DynamicDiskHeader {
        cookie: DYNAMIC_COOKIE,
        data_offset: u64::MAX,
        table_offset: bat_at,
        header_version: 0x0001_0000,
        max_table_entries: entries as u32,
        block_size: spec.block,
        checksum: 0,
        parent_unique_id: [9; 16],
        parent_timestamp: 0,
        parent_unicode_name: name,
        parent_locators: locs,
    };
    seal_header(&mut h);
    let f = footer(spec.disk_type, size, b"win ", 512).encode();
    out[..512].copy_from_slice(&f);
    out[512..1536].copy_from_slice(&h.encode());
    out.extend_from_slice(&f);
    out
}

fn plain(raw: &[u8], block: u32, allocated: &dyn Fn(u64) -> bool) -> Vec<u8> {
    dynamic(&Spec {
        raw,
        block,
        disk_type: DISK_TYPE_DYNAMIC,
        allocated,
        bitmap: &all_ones,
        locators: Vec::new(),
        parent_name: "",
    })
}

fn open(bytes: Vec<u8>) -> Result<Vhd> {
    Vhd::open(Arc::new(bytes))
}

fn vhd_err<T>(r: Result<T>) -> VhdError {
    match disk_err(r) {
        DiskError::Vhd(e) => e,
        other => panic!("expected a VHD error, got {other:?}"),
    }
}

/// Rewrites the footer copy at 0 (and the one at the end) after `edit`, resealed.
fn edit_footer(bytes: &mut [u8], at: usize, reseal: bool, edit: impl FnOnce(&mut VhdFooter)) {
    let mut raw = [0u8; 512];
    raw.copy_from_slice(&bytes[at..at + 512]);
    let mut f = VhdFooter::parse(&raw);
    edit(&mut f);
    if reseal {
        seal_footer(&mut f);
    }
    bytes[at..at + 512].copy_from_slice(&f.encode());
}

fn edit_header(bytes: &mut [u8], reseal: bool, edit: impl FnOnce(&mut DynamicDiskHeader)) {
    let mut raw = [0u8; 1024];
    raw.copy_from_slice(&bytes[512..1536]);
    let mut h = DynamicDiskHeader::parse(&raw);
    edit(&mut h);
    if reseal {
        seal_header(&mut h);
    }
    bytes[512..1536].copy_from_slice(&h.encode());
}

// ---------------------------------------------------------------------------------------

#[test]
fn footer_fields_and_checksum() {
    let f = footer(DISK_TYPE_DYNAMIC, 1 << 20, b"qemu", 512);
    let b = f.encode();
    assert_eq!(&b[0..8], b"conectix");
    assert_eq!(&b[16..24], &512u64.to_be_bytes()); // data offset
    assert_eq!(&b[28..32], b"qemu"); // creator
    assert_eq!(&b[60..64], &3u32.to_be_bytes()); // disk type
    assert_eq!(VhdFooter::parse(&b), f);
    // The checksum of a footer with the field zeroed, complemented.
    let sum: u32 = b
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .map(|(_, &x)| u32::from(x))
        .sum();
    assert_eq!(f.checksum, !sum);
}

#[test]
fn fixed_disk_with_512_and_legacy_511_byte_footers() {
    let raw = noise(64 * 1024, 1);
    let img = open(fixed(&raw, b"win ")).unwrap();
    assert_eq!(img.format(), DiskFormat::VhdFixed);
    assert_eq!(flat(&img), raw);
    check_tiling(&img, &raw, None, 2);

    let mut legacy = fixed(&raw, b"win ");
    legacy.pop(); // the last reserved byte of pre-2004 footers is missing
    let img = open(legacy.clone()).unwrap();
    assert_eq!(flat(&img), raw);
    assert_eq!(
        crate::disk::sniff(&legacy).unwrap(),
        crate::disk::Sniffed::Vhd
    );
}

#[test]
fn dynamic_disk_with_partial_last_block_and_holes() {
    // 5 blocks of 4 KiB, the last one partial; blocks 1 and 3 unallocated.
    let mut raw = noise(4096 * 4 + 1536, 3);
    raw[4096..8192].fill(0);
    raw[3 * 4096..4 * 4096].fill(0);
    let bytes = plain(&raw, 4096, &|b| b != 1 && b != 3);
    let img = open(bytes).unwrap();
    assert_eq!(img.format(), DiskFormat::VhdDynamic);
    assert_eq!(img.virtual_size(), raw.len() as u64);
    assert_eq!(img.unit_bytes(), 4096);
    assert_eq!(flat(&img), raw);
    check_tiling(&img, &raw, None, 4);
    assert_eq!(
        img.map(4096, 100_000).unwrap(),
        Extent::Unallocated { len: 4096 }
    );
    assert_eq!(img.map(4 * 4096 + 10, 100_000).unwrap().len(), 1526);
    assert!(img.parent().is_none());
}

#[test]
fn dynamic_disk_ignores_block_bitmaps_as_qemu_does() {
    let raw = noise(8192, 5);
    let bytes = dynamic(&Spec {
        raw: &raw,
        block: 4096,
        disk_type: DISK_TYPE_DYNAMIC,
        allocated: &|_| true,
        bitmap: &|_| vec![0u8; 512], // no sector marked, but this is not a differencing disk
        locators: Vec::new(),
        parent_name: "",
    });
    assert_eq!(flat(&open(bytes).unwrap()), raw);
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

#[test]
fn differencing_disk_reads_its_sectors_and_the_parent_elsewhere() {
    // Block size 4 KiB = 8 sectors; block 0: sectors 0, 1, 7 stored (bits MSB first);
    // block 1 unallocated; block 2: all stored.
    let child = noise(3 * 4096, 6);
    let parent = noise(3 * 4096, 7);
    let bytes = dynamic(&Spec {
        raw: &child,
        block: 4096,
        disk_type: DISK_TYPE_DIFFERENCING,
        allocated: &|b| b != 1,
        bitmap: &|b| {
            if b == 0 {
                vec![0b1100_0001]
            } else {
                vec![0xFF]
            }
        },
        locators: vec![
            (*b"W2ku", utf16le("C:\\vms\\base.vhd")),
            (*b"W2ru", utf16le(".\\base.vhd")),
            (*b"MacX", b"file://localhost/Users/me/base.vhd".to_vec()),
        ],
        parent_name: "base.vhd",
    });
    let img = open(bytes).unwrap();
    assert_eq!(img.format(), DiskFormat::VhdDifferencing);
    let mut expected = parent.clone();
    for s in [0usize, 1, 7] {
        expected[s * 512..(s + 1) * 512].copy_from_slice(&child[s * 512..(s + 1) * 512]);
    }
    expected[2 * 4096..].copy_from_slice(&child[2 * 4096..]);
    assert_eq!(flat_with_parent(&img, Some(&parent)), expected);
    check_tiling(&img, &expected, Some(&parent), 8);
    assert_eq!(
        img.map(0, 4096).unwrap(),
        Extent::Stored {
            source_offset: stored_at(&img, 0),
            len: 1024
        }
    );
    assert_eq!(
        img.map(1024, 4096).unwrap(),
        Extent::Unallocated { len: 2560 }
    );
    assert_eq!(img.map(1000, 100).unwrap().len(), 24); // a run ends at a sector edge
    let p = img.parent().unwrap();
    assert_eq!(
        p.names,
        vec![
            ".\\base.vhd".to_string(),
            "file://localhost/Users/me/base.vhd".into(),
            "C:\\vms\\base.vhd".into(),
            "base.vhd".into()
        ]
    );
    assert_eq!(p.candidates(), vec!["base.vhd".to_string()]);
}

/// The source offset `map` gives for virtual `offset` (which must be stored).
fn stored_at(img: &Vhd, offset: u64) -> u64 {
    match img.map(offset, 1).unwrap() {
        Extent::Stored { source_offset, .. } => source_offset,
        other => panic!("{other:?}"),
    }
}

#[test]
fn bitmaps_stay_bounded_in_the_cache() {
    let child = noise(64 * 4096, 9);
    let bytes = dynamic(&Spec {
        raw: &child,
        block: 4096,
        disk_type: DISK_TYPE_DIFFERENCING,
        allocated: &|_| true,
        bitmap: &|b| vec![if b % 2 == 0 { 0xFF } else { 0x0F }],
        locators: Vec::new(),
        parent_name: "p.vhd",
    });
    let img = open(bytes).unwrap();
    let _ = flat(&img);
    let b = img.blocks.as_ref().unwrap();
    let cache = b.bitmaps.as_ref().unwrap().lock().unwrap();
    assert!(cache.len() <= (MAX_CACHED_BITMAP_BYTES / b.bitmap_bytes) as usize);
    assert_eq!(cache.len(), 64);
}

#[test]
fn size_comes_from_geometry_only_for_virtual_pc_and_old_qemu() {
    let mut f = footer(DISK_TYPE_FIXED, 136_365_211_648, b"vpc ", u64::MAX);
    f.cylinders = 65278;
    f.heads = 16;
    f.sectors_per_track = 255;
    assert_eq!(f.virtual_sectors() * 512, 136_363_130_880); // qemu/virtualpc-dynamic.vhd
    f.creator_application = *b"qemu";
    assert_eq!(f.virtual_sectors() * 512, 136_363_130_880);
    for creator in [
        b"win ", b"d2v ", b"qem2", b"tap\0", b"wa\0\0", b"vbox", b"CTXS",
    ] {
        f.creator_application = *creator;
        assert_eq!(f.virtual_sectors() * 512, 136_365_211_648, "{creator:?}");
    }
    // The largest geometry: current size even for Virtual PC.
    f.creator_application = *b"vpc ";
    f.cylinders = 65535;
    assert_eq!(f.virtual_sectors() * 512, 136_365_211_648);
}

// ----- one test per rejection rule -----------------------------------------------------

#[test]
fn image_vhd_style_bad_footer_checksum_is_refused() {
    let mut bytes = plain(&noise(8192, 1), 4096, &|_| true);
    edit_footer(&mut bytes, 0, false, |f| f.checksum = 0xfffff683);
    let computed = checksum(&bytes[..512], VhdFooter::CHECKSUM_AT);
    assert_eq!(
        vhd_err(open(bytes)),
        VhdError::FooterChecksum {
            stored: 0xfffff683,
            computed
        }
    );
}

#[test]
fn footer_rules() {
    let base = plain(&noise(8192, 1), 4096, &|_| true);
    let mut b = base.clone();
    edit_footer(&mut b, 0, true, |f| f.disk_type = 5);
    assert_eq!(
        vhd_err(open(b)),
        VhdError::UnsupportedDiskType { disk_type: 5 }
    );

    let mut b = base.clone();
    edit_footer(&mut b, 0, true, |f| {
        f.current_size = (MAX_VIRTUAL_SECTORS + 1) * 512
    });
    assert_eq!(
        vhd_err(open(b)),
        VhdError::VirtualSizeTooLarge {
            sectors: MAX_VIRTUAL_SECTORS + 1,
            limit_sectors: MAX_VIRTUAL_SECTORS
        }
    );

    // No cookie anywhere.
    assert_eq!(
        vhd_err(open(vec![0u8; 4096])),
        VhdError::NoFooter { len_bytes: 4096 }
    );
    // A dynamic footer only at the end (the copy at 0 gone).
    let mut b = base.clone();
    b[..8].fill(0);
    assert_eq!(
        vhd_err(open(b)),
        VhdError::EndFooterNotFixed {
            disk_type: DISK_TYPE_DYNAMIC
        }
    );
    // A fixed disk whose data is shorter than its size.
    let mut b = fixed(&noise(4096, 2), b"win ");
    let n = b.len();
    edit_footer(&mut b, n - 512, true, |f| f.current_size = 8192);
    assert_eq!(
        vhd_err(open(b)),
        VhdError::FixedTooShort {
            virtual_size: 8192,
            data_bytes: 4096
        }
    );
}

#[test]
fn dynamic_header_rules() {
    let base = plain(&noise(8192, 1), 4096, &|_| true);
    let len = base.len() as u64;

    let mut b = base.clone();
    edit_footer(&mut b, 0, true, |f| f.data_offset = len - 100);
    assert_eq!(
        vhd_err(open(b)),
        VhdError::DynamicHeaderOutOfBounds {
            offset: len - 100,
            file_len: len
        }
    );
    let mut b = base.clone();
    edit_footer(&mut b, 0, true, |f| f.data_offset = u64::MAX - 10);
    assert!(matches!(
        vhd_err(open(b)),
        VhdError::DynamicHeaderOutOfBounds { .. }
    ));

    let mut b = base.clone();
    edit_header(&mut b, true, |h| h.cookie = *b"cxsparsX");
    assert_eq!(
        vhd_err(open(b)),
        VhdError::BadDynamicCookie {
            found: *b"cxsparsX"
        }
    );

    let mut b = base.clone();
    edit_header(&mut b, false, |h| h.checksum ^= 1);
    let stored = {
        let mut raw = [0u8; 1024];
        raw.copy_from_slice(&b[512..1536]);
        DynamicDiskHeader::parse(&raw).checksum
    };
    assert_eq!(
        vhd_err(open(b)),
        VhdError::DynamicHeaderChecksum {
            stored,
            computed: stored ^ 1
        }
    );

    for bad in [0u32, 256, 3000, 512 << 20] {
        let mut b = base.clone();
        edit_header(&mut b, true, |h| h.block_size = bad);
        assert_eq!(
            vhd_err(open(b)),
            VhdError::InvalidBlockSize {
                block_bytes: u64::from(bad),
                min: MIN_BLOCK_BYTES,
                max: MAX_BLOCK_BYTES
            }
        );
    }

    let mut b = base.clone();
    edit_header(&mut b, true, |h| h.max_table_entries = 1);
    assert_eq!(
        vhd_err(open(b)),
        VhdError::TableTooSmall {
            entries: 1,
            needed: 2,
            virtual_size: 8192
        }
    );

    let mut b = base.clone();
    edit_header(&mut b, true, |h| h.table_offset = len - 4);
    assert_eq!(
        vhd_err(open(b)),
        VhdError::TableOutOfBounds {
            offset: len - 4,
            bytes: 8,
            file_len: len
        }
    );
}

#[test]
fn bat_entries_past_the_end_are_refused() {
    let mut b = plain(&noise(8192, 1), 4096, &|_| true);
    let len = b.len() as u64;
    // Block 1 starts at the footer: bitmap + data run past the end.
    let sector = ((len - 512) / 512) as u32;
    b[1536 + 4..1536 + 8].copy_from_slice(&sector.to_be_bytes());
    assert_eq!(
        vhd_err(open(b.clone())),
        VhdError::BlockOutOfBounds {
            block: 1,
            sector: u64::from(sector),
            file_len: len
        }
    );
    b[1536 + 4..1536 + 8].copy_from_slice(&0xFFFF_FFFEu32.to_be_bytes());
    assert!(matches!(
        vhd_err(open(b)),
        VhdError::BlockOutOfBounds { block: 1, .. }
    ));
}

#[test]
fn huge_claims_in_a_small_file_do_not_allocate() {
    // 2040 GiB with 512-byte blocks: 4 Gi entries needed, above the BAT limit.
    let mut b = plain(&noise(8192, 1), 4096, &|_| true);
    edit_footer(&mut b, 0, true, |f| {
        f.current_size = MAX_VIRTUAL_SECTORS * 512
    });
    edit_header(&mut b, true, |h| {
        h.block_size = 512;
        h.max_table_entries = u32::MAX;
    });
    assert_eq!(
        vhd_err(open(b.clone())),
        VhdError::TableTooLarge {
            entries: MAX_VIRTUAL_SECTORS,
            limit: MAX_BAT_ENTRIES
        }
    );
    // 2040 GiB with 2 MiB blocks: 1 Mi entries, but the table is not in the 5 KiB file.
    edit_header(&mut b, true, |h| h.block_size = 2 << 20);
    assert!(matches!(
        vhd_err(open(b)),
        VhdError::TableOutOfBounds {
            bytes: 4_177_920,
            ..
        }
    ));
}

#[test]
fn parent_locator_rules() {
    let child = noise(4096, 6);
    let mut b = dynamic(&Spec {
        raw: &child,
        block: 4096,
        disk_type: DISK_TYPE_DIFFERENCING,
        allocated: &|_| true,
        bitmap: &|_| vec![0xFF],
        locators: vec![(*b"W2ru", utf16le(".\\p.vhd"))],
        parent_name: "",
    });
    let len = b.len() as u64;
    edit_header(&mut b, true, |h| h.parent_locators[0].data_offset = len - 2);
    assert_eq!(
        vhd_err(open(b.clone())),
        VhdError::LocatorOutOfBounds {
            index: 0,
            offset: len - 2,
            len: 14
        }
    );
    edit_header(&mut b, true, |h| {
        h.parent_locators[0].data_offset = 0;
        h.parent_locators[0].data_length = u32::MAX;
    });
    assert!(matches!(
        vhd_err(open(b)),
        VhdError::LocatorOutOfBounds { index: 0, .. }
    ));
}

#[test]
fn differencing_disk_without_names_reports_an_empty_parent() {
    let b = dynamic(&Spec {
        raw: &noise(4096, 1),
        block: 4096,
        disk_type: DISK_TYPE_DIFFERENCING,
        allocated: &|_| true,
        bitmap: &|_| vec![0xFF],
        locators: vec![(*b"Mac ", vec![1, 2, 3])], // an alias blob: not a name
        parent_name: "",
    });
    let p = open(b).unwrap().parent().unwrap();
    assert!(p.names.is_empty());
    assert!(p.candidates().is_empty());
}

#[test]
fn map_and_decode_check_their_arguments() {
    let img = open(plain(&noise(8192, 1), 4096, &|_| true)).unwrap();
    assert_eq!(
        vhd_err(img.map(8192, 1)),
        VhdError::MapOutOfRange {
            offset: 8192,
            max_len: 1,
            virtual_size: 8192
        }
    );
    assert!(matches!(
        vhd_err(img.map(0, 0)),
        VhdError::MapOutOfRange { .. }
    ));
    let mut out = [0u8; 4];
    assert_eq!(
        vhd_err(img.decode_unit(0, &mut out)),
        VhdError::NotAnEncodedUnit { unit: 0 }
    );
}

#[test]
fn truncated_and_garbage_sources_never_panic() {
    let good = plain(&noise(3 * 4096, 1), 4096, &|b| b != 1);
    for cut in (0..good.len()).step_by(97) {
        let _ = open(good[..cut].to_vec());
    }
    let mut rng = noise(good.len(), 77);
    for i in 0..200 {
        let mut b = good.clone();
        let at = (u64::from_le_bytes(rng[i * 8..i * 8 + 8].try_into().unwrap()) as usize) % 1600;
        b[at] ^= rng[i] | 1;
        if let Ok(img) = open(b) {
            let _ = crate::disk::testutil::flat(&img);
        }
        rng.rotate_left(1);
    }
}
