//! Unit tests of the VHDX reader, with files laid out here from MS-VHDX: headers and
//! their selection, region tables, metadata, every payload state, a differencing disk with
//! sector bitmaps and a parent locator, and one test per rejection rule.
//!
//! Layout of the built files (1 MiB blocks, 512-byte sectors, chunk ratio 4096):
//! identifier @0, headers @64 KiB and @128 KiB, region tables @192 KiB and @256 KiB,
//! metadata region @1 MiB (table, items at +64 KiB), BAT region @2 MiB, then one 1 MiB
//! slot per payload block, then the sector bitmap block.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use super::*;
use crate::disk::testutil::{check_tiling, disk_err, flat, flat_with_parent, noise};

const BLOCK: u64 = MIB;

/// What one payload block holds.
#[derive(Clone)]
enum B {
    State(u64),
    Full,
    /// Partially present; per-sector bits (LSB of byte 0 = first sector).
    Partial(Vec<u8>),
}

struct V {
    size: u64,
    blocks: Vec<B>,
    data: Vec<u8>,
    differencing: bool,
    locator: Vec<(&'static str, &'static str)>,
    seqs: [u64; 2],
    log_guid: [u8; 16],
}

impl V {
    fn new(size: u64, blocks: Vec<B>) -> Self {
        V {
            size,
            data: noise(size as usize, 42),
            blocks,
            differencing: false,
            locator: Vec::new(),
            seqs: [1, 2],
            log_guid: [0; 16],
        }
    }

    fn header(&self, seq: u64) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_BYTES as usize];
        h[0..4].copy_from_slice(b"head");
        h[8..16].copy_from_slice(&seq.to_le_bytes());
        h[48..64].copy_from_slice(&self.log_guid);
        h[66..68].copy_from_slice(&1u16.to_le_bytes()); // version
        h[68..72].copy_from_slice(&(MIB as u32).to_le_bytes()); // log length
        h[72..80].copy_from_slice(&(8 * MIB).to_le_bytes()); // log offset (past everything)
        let c = crc32c_with_zeroed(&h, 4);
        h[4..8].copy_from_slice(&c.to_le_bytes());
        h
    }

    fn build(&self) -> Vec<u8> {
        let nblocks = self.size.div_ceil(BLOCK);
        let payload_at = 3 * MIB;
        let sb_at = payload_at + nblocks * MIB;
        let mut out = vec![0u8; (sb_at + MIB) as usize];
        out[..8].copy_from_slice(&FILE_SIGNATURE);
        for (i, at) in HEADER_OFFSETS.iter().enumerate() {
            let h = self.header(self.seqs[i]);
            out[*at as usize..*at as usize + h.len()].copy_from_slice(&h);
        }
        // Region table.
        let mut rt = vec![0u8; TABLE_BYTES as usize];
        rt[0..4].copy_from_slice(b"regi");
        rt[8..12].copy_from_slice(&2u32.to_le_bytes());
        for (k, (g, at)) in [(BAT_GUID, 2 * MIB), (METADATA_GUID, MIB)]
            .iter()
            .enumerate()
        {
            let e = 16 + 32 * k;
            rt[e..e + 16].copy_from_slice(g);
            rt[e + 16..e + 24].copy_from_slice(&at.to_le_bytes());
            rt[e + 24..e + 28].copy_from_slice(&(MIB as u32).to_le_bytes());
            rt[e + 28..e + 32].copy_from_slice(&1u32.to_le_bytes());
        }
        let c = crc32c_with_zeroed(&rt, 4);
        rt[4..8].copy_from_slice(&c.to_le_bytes());
        for at in REGION_TABLE_OFFSETS {
            out[at as usize..(at + TABLE_BYTES) as usize].copy_from_slice(&rt);
        }
        // Metadata.
        let md = MIB as usize;
        out[md..md + 8].copy_from_slice(b"metadata");
        let mut items: Vec<([u8; 16], Vec<u8>, u32)> = vec![
            (
                FILE_PARAMETERS_GUID,
                {
                    let mut p = (BLOCK as u32).to_le_bytes().to_vec();
                    let flags = if self.differencing { HAS_PARENT } else { 0 };
                    p.extend_from_slice(&flags.to_le_bytes());
                    p
                },
                4,
            ),
            (VIRTUAL_DISK_SIZE_GUID, self.size.to_le_bytes().to_vec(), 6),
            (PAGE83_GUID, vec![1; 16], 6),
            (LOGICAL_SECTOR_SIZE_GUID, 512u32.to_le_bytes().to_vec(), 6),
            (PHYSICAL_SECTOR_SIZE_GUID, 4096u32.to_le_bytes().to_vec(), 6),
        ];
        if self.differencing {
            items.push((PARENT_LOCATOR_GUID, locator(&self.locator), 6));
        }
        out[md + 10..md + 12].copy_from_slice(&(items.len() as u16).to_le_bytes());
        let mut item_at = 64 << 10;
        for (k, (g, data, flags)) in items.iter().enumerate() {
            let e = md + 32 + 32 * k;
            out[e..e + 16].copy_from_slice(g);
            out[e + 16..e + 20].copy_from_slice(&(item_at as u32).to_le_bytes());
            out[e + 20..e + 24].copy_from_slice(&(data.len() as u32).to_le_bytes());
            out[e + 24..e + 28].copy_from_slice(&flags.to_le_bytes());
            out[md + item_at..md + item_at + data.len()].copy_from_slice(data);
            item_at += data.len().next_multiple_of(8);
        }
        // BAT and blocks.
        let bat = (2 * MIB) as usize;
        let chunk_ratio = 4096u64;
        for (b, what) in self.blocks.iter().enumerate() {
            let b = b as u64;
            let slot = payload_at + b * MIB;
            let entry = match what {
                B::State(s) => *s,
                B::Full | B::Partial(_) => {
                    let start = (b * BLOCK) as usize;
                    let end = ((b + 1) * BLOCK).min(self.size) as usize;
                    out[slot as usize..slot as usize + end - start]
                        .copy_from_slice(&self.data[start..end]);
                    if let B::Partial(bits) = what {
                        let at = (sb_at + b * BLOCK / 512 / 8) as usize;
                        out[at..at + bits.len()].copy_from_slice(bits);
                    }
                    let state = if matches!(what, B::Full) {
                        PAYLOAD_FULLY_PRESENT
                    } else {
                        PAYLOAD_PARTIALLY_PRESENT
                    };
                    state | (slot >> 20) << 20
                }
            };
            let i = (b + b / chunk_ratio) as usize;
            out[bat + 8 * i..bat + 8 * i + 8].copy_from_slice(&entry.to_le_bytes());
        }
        if self.differencing {
            let i = chunk_ratio as usize;
            let e = SB_PRESENT | (sb_at >> 20) << 20;
            out[bat + 8 * i..bat + 8 * i + 8].copy_from_slice(&e.to_le_bytes());
        }
        out
    }
}

fn locator(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut v = vec![0u8; 20];
    v[0..16].copy_from_slice(&VHDX_PARENT_LOCATOR_TYPE);
    v[18..20].copy_from_slice(&(pairs.len() as u16).to_le_bytes());
    v.resize(20 + 12 * pairs.len(), 0);
    for (k, (key, value)) in pairs.iter().enumerate() {
        let enc = |s: &str| -> Vec<u8> { s.encode_utf16().flat_map(u16::to_le_bytes).collect() };
        let (kb, vb) = (enc(key), enc(value));
        let e = 20 + 12 * k;
        let ko = v.len();
        v.extend_from_slice(&kb);
        let vo = v.len();
        v.extend_from_slice(&vb);
        v[e..e + 4].copy_from_slice(&(ko as u32).to_le_bytes());
        v[e + 4..e + 8].copy_from_slice(&(vo as u32).to_le_bytes());
        v[e + 8..e + 10].copy_from_slice(&(kb.len() as u16).to_le_bytes());
        v[e + 10..e + 12].copy_from_slice(&(vb.len() as u16).to_le_bytes());
    }
    v
}

fn open(bytes: Vec<u8>) -> Result<Vhdx> {
    Vhdx::open(Arc::new(bytes))
}

fn x_err<T>(r: Result<T>) -> VhdxError {
    match disk_err(r) {
        DiskError::Vhdx(e) => e,
        other => panic!("expected a VHDX error, got {other:?}"),
    }
}

/// Expected flat image: data where stored, `parent` (or zeros) where not, zeros for ZERO.
fn expected(v: &V, parent: Option<&[u8]>) -> Vec<u8> {
    let mut out = parent.map_or_else(|| vec![0u8; v.size as usize], <[u8]>::to_vec);
    for (b, what) in v.blocks.iter().enumerate() {
        let start = b * BLOCK as usize;
        let end = ((b + 1) * BLOCK as usize).min(v.size as usize);
        match what {
            B::Full => out[start..end].copy_from_slice(&v.data[start..end]),
            B::State(PAYLOAD_ZERO) => out[start..end].fill(0),
            B::State(PAYLOAD_NOT_PRESENT) => {}
            B::State(_) if v.differencing => out[start..end].fill(0),
            B::State(_) => {}
            B::Partial(bits) => {
                for s in 0..(end - start) / 512 {
                    if bits.get(s / 8).is_some_and(|x| x >> (s % 8) & 1 == 1) {
                        let a = start + s * 512;
                        out[a..a + 512].copy_from_slice(&v.data[a..a + 512]);
                    }
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------

#[test]
fn guids_are_stored_mixed_endian() {
    assert_eq!(
        BAT_GUID,
        [
            0x66, 0x77, 0xC2, 0x2D, 0x23, 0xF6, 0x00, 0x42, 0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD,
            0x4A, 0x08
        ]
    );
}

#[test]
fn dynamic_disk_with_every_payload_state() {
    let size = 6 * MIB + 1536; // the last block partial
    let v = V::new(
        size,
        vec![
            B::Full,
            B::State(PAYLOAD_NOT_PRESENT),
            B::State(PAYLOAD_ZERO),
            B::State(PAYLOAD_UNDEFINED),
            B::State(PAYLOAD_UNMAPPED),
            B::State(PAYLOAD_UNMAPPED_V095),
            B::Full,
        ],
    );
    let img = open(v.build()).unwrap();
    assert_eq!(img.format(), DiskFormat::VhdxDynamic);
    assert_eq!(img.virtual_size(), size);
    assert_eq!(img.header().sequence_number, 2);
    let want = expected(&v, None);
    assert_eq!(flat(&img), want);
    check_tiling(&img, &want, None, 1);
    assert_eq!(
        img.map(MIB, 10 * MIB).unwrap(),
        Extent::Unallocated { len: MIB }
    );
    assert_eq!(img.map(2 * MIB + 5, 10).unwrap(), Extent::Zero { len: 10 });
    assert_eq!(img.map(6 * MIB, 10 * MIB).unwrap().len(), 1536);
    assert!(img.parent().is_none());
}

#[test]
fn differencing_disk_reads_bitmaps_and_names_its_parent() {
    let mut v = V::new(
        4 * MIB,
        vec![
            B::Partial(vec![0b0000_0101, 0xFF, 0, 0x80]),
            B::State(PAYLOAD_NOT_PRESENT),
            B::State(PAYLOAD_UNMAPPED),
            B::Full,
        ],
    );
    v.differencing = true;
    v.locator = vec![
        ("parent_linkage", "{00000000-0000-0000-0000-000000000000}"),
        ("absolute_win32_path", "C:\\VMs\\base.vhdx"),
        ("relative_path", ".\\base.vhdx"),
    ];
    let img = open(v.build()).unwrap();
    assert_eq!(img.format(), DiskFormat::VhdxDifferencing);
    let parent = noise(4 * MIB as usize, 7);
    let want = expected(&v, Some(&parent));
    assert_eq!(flat_with_parent(&img, Some(&parent)), want);
    check_tiling(&img, &want, Some(&parent), 2);
    assert!(matches!(
        img.map(0, MIB).unwrap(),
        Extent::Stored { len: 512, .. }
    ));
    assert_eq!(img.map(512, MIB).unwrap(), Extent::Unallocated { len: 512 });
    assert_eq!(
        img.parent().unwrap().names,
        vec![".\\base.vhdx".to_string(), "C:\\VMs\\base.vhdx".into()]
    );
}

#[test]
fn header_selection() {
    let mut v = V::new(MIB, vec![B::Full]);
    v.seqs = [9, 3];
    assert_eq!(open(v.build()).unwrap().header().sequence_number, 9);
    // A corrupt newer header loses to a valid older one.
    v.seqs = [3, 9];
    let mut b = v.build();
    b[(128 << 10) + 100] ^= 1;
    assert_eq!(open(b).unwrap().header().sequence_number, 3);
    // Equal numbers: identical headers are accepted (Disk2VHD), different ones are not.
    v.seqs = [5, 5];
    assert!(open(v.build()).is_ok());
    let mut b = v.build();
    b[(64 << 10) + 200] = 1; // in the reserved area, then reseal
    let c = crc32c_with_zeroed(&b[64 << 10..(64 << 10) + 4096], 4);
    b[(64 << 10) + 4..(64 << 10) + 8].copy_from_slice(&c.to_le_bytes());
    assert_eq!(x_err(open(b)), VhdxError::AmbiguousHeaders { sequence: 5 });
    // Both corrupt.
    let mut b = v.build();
    b[(64 << 10) + 8] ^= 1;
    b[(128 << 10) + 8] ^= 1;
    assert_eq!(x_err(open(b)), VhdxError::NoValidHeader);
    // Version other than 1.
    let mut b = v.build();
    for at in HEADER_OFFSETS {
        let at = at as usize;
        b[at + 66] = 2;
        let c = crc32c_with_zeroed(&b[at..at + 4096], 4);
        b[at + 4..at + 8].copy_from_slice(&c.to_le_bytes());
    }
    assert_eq!(x_err(open(b)), VhdxError::NoValidHeader);
}

#[test]
fn a_log_to_replay_is_refused() {
    let mut v = V::new(MIB, vec![B::Full]);
    v.log_guid = [1; 16];
    assert_eq!(x_err(open(v.build())), VhdxError::LogNotEmpty);
}

#[test]
fn region_table_rules() {
    let v = V::new(MIB, vec![B::Full]);
    // The first table corrupt: the second is used.
    let mut b = v.build();
    b[(192 << 10) + 20] ^= 1;
    assert!(open(b.clone()).is_ok());
    b[(256 << 10) + 20] ^= 1;
    assert_eq!(x_err(open(b)), VhdxError::NoValidRegionTable);

    let patch = |edit: &dyn Fn(&mut [u8])| -> Vec<u8> {
        let mut b = v.build();
        for at in REGION_TABLE_OFFSETS {
            let at = at as usize;
            edit(&mut b[at..at + TABLE_BYTES as usize]);
            let c = crc32c_with_zeroed(&b[at..at + TABLE_BYTES as usize], 4);
            b[at + 4..at + 8].copy_from_slice(&c.to_le_bytes());
        }
        b
    };
    assert_eq!(
        x_err(open(patch(
            &|t| t[8..12].copy_from_slice(&3000u32.to_le_bytes())
        ))),
        VhdxError::TooManyEntries {
            table: "region",
            entries: 3000
        }
    );
    // An unknown required region.
    let unknown = patch(&|t| {
        t[8] = 3;
        t[80..96].copy_from_slice(&[0xAA; 16]);
        t[108] = 1;
    });
    assert_eq!(
        x_err(open(unknown)),
        VhdxError::UnknownRequired {
            kind: "region",
            guid: [0xAA; 16]
        }
    );
    // An unknown optional region is ignored.
    assert!(
        open(patch(&|t| {
            t[8] = 3;
            t[80..96].copy_from_slice(&[0xAA; 16]);
        }))
        .is_ok()
    );
    // The BAT region missing, unaligned, outside the file, overlapping.
    assert_eq!(
        x_err(open(patch(&|t| {
            t[16..32].fill(0);
            t[44] = 0; // not required
        }))),
        VhdxError::MissingRegion { name: "BAT" }
    );
    for (offset, problem) in [
        (
            2 * MIB + 4096,
            "not a non-empty multiple of 1 MiB at a 1 MiB boundary",
        ),
        (1 << 40, "outside the file"),
        (0, "overlaps the header area, the log or another region"),
    ] {
        let e = x_err(open(patch(&|t| {
            t[32..40].copy_from_slice(&offset.to_le_bytes())
        })));
        assert_eq!(
            e,
            VhdxError::InvalidRegion {
                name: "BAT".into(),
                offset,
                len: MIB,
                problem
            }
        );
    }
    // The same region twice.
    let twice = patch(&|t| {
        t[8] = 3;
        let (a, rest) = t.split_at_mut(80);
        rest[..32].copy_from_slice(&a[16..48]);
    });
    assert!(matches!(
        x_err(open(twice)),
        VhdxError::InvalidRegion { .. }
    ));
}

#[test]
fn metadata_rules() {
    let v = V::new(2 * MIB, vec![B::Full, B::Full]);
    let md = MIB as usize;
    let item = |b: &mut Vec<u8>, k: usize| -> usize {
        md + u32::from_le_bytes(
            b[md + 32 + 32 * k + 16..md + 32 + 32 * k + 20]
                .try_into()
                .unwrap(),
        ) as usize
    };
    let mut b = v.build();
    b[md] = b'M';
    assert_eq!(x_err(open(b)), VhdxError::BadMetadataSignature);

    for (k, value, want) in [
        (
            0usize,
            3 * MIB / 2,
            VhdxError::InvalidBlockSize {
                block_bytes: 3 * MIB / 2,
            },
        ),
        (
            0,
            512 << 20,
            VhdxError::InvalidBlockSize {
                block_bytes: 512 << 20,
            },
        ),
        (3, 1024, VhdxError::InvalidSectorSize { sector_bytes: 1024 }),
    ] {
        let mut b = v.build();
        let at = item(&mut b, k);
        b[at..at + 4].copy_from_slice(&(value as u32).to_le_bytes());
        assert_eq!(x_err(open(b)), want);
    }
    for size in [0u64, MAX_VIRTUAL_BYTES + 512, MIB + 100] {
        let mut b = v.build();
        let at = item(&mut b, 1);
        b[at..at + 8].copy_from_slice(&size.to_le_bytes());
        assert_eq!(
            x_err(open(b)),
            VhdxError::InvalidVirtualSize {
                size,
                limit: MAX_VIRTUAL_BYTES,
                sector_bytes: 512
            }
        );
    }
    // A mandatory item missing (its entry's GUID changed to an unknown optional one).
    let mut b = v.build();
    b[md + 32 + 32 * 2..md + 32 + 32 * 2 + 16].fill(0x55);
    b[md + 32 + 32 * 2 + 24] = 0;
    assert_eq!(
        x_err(open(b)),
        VhdxError::InvalidMetadataItem {
            name: "page 83 data",
            problem: "missing"
        }
    );
    // An unknown required item.
    let mut b = v.build();
    b[md + 32 + 32 * 2..md + 32 + 32 * 2 + 16].fill(0x55);
    assert_eq!(
        x_err(open(b)),
        VhdxError::UnknownRequired {
            kind: "metadata item",
            guid: [0x55; 16]
        }
    );
    // An item outside the region.
    let mut b = v.build();
    b[md + 32 + 16..md + 32 + 20].copy_from_slice(&(MIB as u32).to_le_bytes());
    assert_eq!(
        x_err(open(b)),
        VhdxError::InvalidMetadataItem {
            name: "file parameters",
            problem: "outside the metadata region"
        }
    );
    // A huge disk whose BAT does not fit the 1 MiB region: refused before reading it.
    let mut b = v.build();
    let at = item(&mut b, 1);
    b[at..at + 8].copy_from_slice(&MAX_VIRTUAL_BYTES.to_le_bytes());
    assert_eq!(
        x_err(open(b)),
        VhdxError::InvalidBatSize {
            entries: (64 << 20) + (64 << 20) / 4096 - 1,
            region_entries: MIB / 8,
            limit: MAX_BAT_ENTRIES
        }
    );
}

#[test]
fn bat_rules() {
    let v = V::new(2 * MIB, vec![B::Full, B::Full]);
    let bat = 2 * MIB as usize;
    let set = |b: &mut Vec<u8>, i: usize, e: u64| {
        b[bat + 8 * i..bat + 8 * i + 8].copy_from_slice(&e.to_le_bytes())
    };
    let mut b = v.build();
    set(&mut b, 1, 4);
    assert_eq!(
        x_err(open(b)),
        VhdxError::InvalidBlockState { index: 1, state: 4 }
    );
    let mut b = v.build();
    set(&mut b, 1, PAYLOAD_PARTIALLY_PRESENT | 3 << 20);
    assert_eq!(
        x_err(open(b)),
        VhdxError::InvalidBlockState { index: 1, state: 7 }
    );
    let mut b = v.build();
    set(&mut b, 1, PAYLOAD_FULLY_PRESENT | 100 << 20);
    assert_eq!(
        x_err(open(b)),
        VhdxError::BlockOutOfBounds {
            index: 1,
            offset: 100 * MIB,
            len: MIB,
            problem: "past the end of the file (truncated image?)"
        }
    );
    let mut b = v.build();
    set(&mut b, 1, PAYLOAD_FULLY_PRESENT | 2 << 20);
    assert_eq!(
        x_err(open(b)),
        VhdxError::BlockOutOfBounds {
            index: 1,
            offset: 2 * MIB,
            len: MIB,
            problem: "overlaps the headers, the log or a metadata region"
        }
    );
    let mut b = v.build();
    set(&mut b, 1, PAYLOAD_FULLY_PRESENT | u64::MAX << 20);
    assert!(matches!(
        x_err(open(b)),
        VhdxError::BlockOutOfBounds { index: 1, .. }
    ));
    // A partially present block whose chunk has no bitmap block.
    let mut d = V::new(MIB, vec![B::Partial(vec![1])]);
    d.differencing = true;
    d.locator = vec![("relative_path", "p.vhdx")];
    let mut b = d.build();
    set(&mut b, 4096, 0);
    assert_eq!(x_err(open(b)), VhdxError::MissingSectorBitmap { block: 0 });
}

#[test]
fn parent_locator_rules() {
    let mut d = V::new(MIB, vec![B::Full]);
    d.differencing = true;
    d.locator = vec![("relative_path", "p.vhdx")];
    let good = d.build();
    // Locate the item: the sixth metadata entry.
    let md = MIB as usize;
    let e = md + 32 + 32 * 5;
    let at = md + u32::from_le_bytes(good[e + 16..e + 20].try_into().unwrap()) as usize;
    let mut b = good.clone();
    b[at] ^= 1;
    assert_eq!(
        x_err(open(b)),
        VhdxError::InvalidParentLocator {
            problem: "unknown locator type"
        }
    );
    let mut b = good.clone();
    b[at + 18..at + 20].copy_from_slice(&200u16.to_le_bytes());
    assert_eq!(
        x_err(open(b)),
        VhdxError::InvalidParentLocator {
            problem: "too many entries for its size"
        }
    );
    let mut b = good.clone();
    b[at + 20 + 4..at + 20 + 8].copy_from_slice(&60_000u32.to_le_bytes());
    assert_eq!(
        x_err(open(b)),
        VhdxError::InvalidParentLocator {
            problem: "key or value outside the item"
        }
    );
}

#[test]
fn short_foreign_and_mutated_files_never_panic() {
    assert_eq!(
        x_err(open(vec![0u8; 1000])),
        VhdxError::TooShort { len_bytes: 1000 }
    );
    let mut b = vec![0u8; 2 * MIB as usize];
    b[..8].copy_from_slice(b"vhdxfilX");
    assert_eq!(x_err(open(b)), VhdxError::BadSignature);
    let mut d = V::new(3 * MIB, vec![B::Full, B::Partial(vec![0x0F; 8]), B::Full]);
    d.differencing = true;
    d.locator = vec![("relative_path", "p.vhdx")];
    let good = d.build();
    let r = noise(4096, 5);
    for i in 0..300 {
        let mut b = good.clone();
        // Mutate metadata, BAT and tables (header CRCs make header mutations moot).
        let region = [192 << 10, MIB as usize, 2 * MIB as usize][i % 3];
        let at = region + (usize::from(r[i]) * 3 + i) % 600;
        b[at] ^= r[i + 1] | 1;
        let c = crc32c_with_zeroed(&b[192 << 10..256 << 10], 4);
        b[(192 << 10) + 4..(192 << 10) + 8].copy_from_slice(&c.to_le_bytes());
        if let Ok(img) = open(b) {
            let size = img.virtual_size();
            let mut pos = 0;
            while pos < size {
                let Ok(e) = img.map(pos, size - pos) else {
                    break;
                };
                assert!(!e.is_empty() && pos + e.len() <= size);
                pos += e.len();
            }
        }
    }
}
