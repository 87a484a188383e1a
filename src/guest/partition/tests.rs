//! Tests of the partition-table reader on hand-built tables: every branch of MBR (primaries,
//! extended chains, loops, bounds, clipping, overlaps), of GPT (backup copy, corrupt copies,
//! entry sizes, huge counts, 4096-byte sectors, hybrid MBR) and of table-less disks (file
//! system boot sectors). Tables made by real tools are in tests/guest_partitions.rs.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::io::ReadAt;

const S: usize = 512;
const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

const LINUX_FS: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
const EFI: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const SWAP: &str = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F";
const UNKNOWN: &str = "01234567-89AB-CDEF-0123-456789ABCDEF";

// ---- building tables -------------------------------------------------------------------

fn zeroed(sectors: usize) -> Vec<u8> {
    vec![0u8; sectors * S]
}

/// The 0x55AA signature of the 512-byte table sector at `sector`.
fn sign(d: &mut [u8], sector: u64) {
    let o = sector as usize * S;
    d[o + 510] = 0x55;
    d[o + 511] = 0xaa;
}

/// Entry `slot` (0-based) of the table sector at `sector`.
fn put_entry(d: &mut [u8], sector: u64, slot: usize, kind: u8, start: u32, sectors: u32) {
    let o = sector as usize * S + 0x1be + 16 * slot;
    d[o + 4] = kind;
    d[o + 8..o + 12].copy_from_slice(&start.to_le_bytes());
    d[o + 12..o + 16].copy_from_slice(&sectors.to_le_bytes());
}

/// An MBR in sector 0: `(type, start, sectors)` per slot; type 0 leaves a slot empty.
fn mbr(d: &mut [u8], entries: &[(u8, u32, u32)]) {
    for (slot, &(kind, start, sectors)) in entries.iter().enumerate() {
        put_entry(d, 0, slot, kind, start, sectors);
    }
    sign(d, 0);
}

/// An EBR at `at`: a logical partition `(type, start relative to the EBR, sectors)` and a
/// link `(next EBR relative to the extended partition, its sectors)`.
fn ebr(d: &mut [u8], at: u64, data: Option<(u8, u32, u32)>, link: Option<(u32, u32)>) {
    if let Some((kind, start, sectors)) = data {
        put_entry(d, at, 0, kind, start, sectors);
    }
    if let Some((start, sectors)) = link {
        put_entry(d, at, 1, 0x05, start, sectors);
    }
    sign(d, at);
}

/// A GUID's on-disk bytes (its first three fields little-endian).
fn guid(text: &str) -> [u8; 16] {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let b: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&[b[3], b[2], b[1], b[0]]);
    out[4..6].copy_from_slice(&[b[5], b[4]]);
    out[6..8].copy_from_slice(&[b[7], b[6]]);
    out[8..].copy_from_slice(&b[8..]);
    out
}

/// One GPT entry: its index in the array, type, first and last LBA, name.
struct Part {
    index: usize,
    kind: &'static str,
    first: u64,
    last: u64,
    name: &'static str,
}

/// A GPT disk: sector size, sectors, entry geometry, entries.
struct Gpt {
    ss: usize,
    sectors: u64,
    num_entries: u32,
    entry_size: u32,
    parts: Vec<Part>,
}

impl Gpt {
    /// 512-byte sectors, 2048 of them, 128 entries of 128 bytes.
    fn new(parts: Vec<Part>) -> Gpt {
        Gpt {
            ss: S,
            sectors: 2048,
            num_entries: 128,
            entry_size: 128,
            parts,
        }
    }

    fn array(&self) -> Vec<u8> {
        let size = self.entry_size as usize;
        let mut a = vec![0u8; self.num_entries as usize * size];
        for p in &self.parts {
            let e = &mut a[p.index * size..(p.index + 1) * size];
            e[..16].copy_from_slice(&guid(p.kind));
            e[16] = 0x5a; // a unique GUID that is not zero
            e[17] = p.index as u8;
            e[32..40].copy_from_slice(&p.first.to_le_bytes());
            e[40..48].copy_from_slice(&p.last.to_le_bytes());
            for (i, u) in p.name.encode_utf16().enumerate() {
                e[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
            }
        }
        a
    }

    fn array_sectors(&self) -> u64 {
        (self.num_entries as u64 * self.entry_size as u64).div_ceil(self.ss as u64)
    }

    fn last(&self) -> u64 {
        self.sectors - 1
    }

    fn first_usable(&self) -> u64 {
        2 + self.array_sectors()
    }

    fn last_usable(&self) -> u64 {
        self.last() - self.array_sectors() - 1
    }

    /// The disk: protective MBR, primary header and array, backup array and header.
    fn build(&self) -> Vec<u8> {
        let ss = self.ss;
        let mut d = vec![0u8; self.sectors as usize * ss];
        let covered = u32::try_from(self.sectors - 1).unwrap_or(u32::MAX);
        mbr(&mut d, &[(0xee, 1, covered)]);
        let array = self.array();
        let crc = CRC.checksum(&array);
        let backup_array = self.last() - self.array_sectors();
        for (my, alt, at) in [(1, self.last(), 2), (self.last(), 1, backup_array)] {
            let o = at as usize * ss;
            d[o..o + array.len()].copy_from_slice(&array);
            let h = self.header(my, alt, at, crc);
            let o = my as usize * ss;
            d[o..o + h.len()].copy_from_slice(&h);
        }
        d
    }

    fn header(&self, my: u64, alt: u64, entries_lba: u64, crc: u32) -> Vec<u8> {
        let mut h = vec![0u8; 92];
        h[..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&my.to_le_bytes());
        h[32..40].copy_from_slice(&alt.to_le_bytes());
        h[40..48].copy_from_slice(&self.first_usable().to_le_bytes());
        h[48..56].copy_from_slice(&self.last_usable().to_le_bytes());
        h[56..72].copy_from_slice(&guid(UNKNOWN));
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&self.num_entries.to_le_bytes());
        h[84..88].copy_from_slice(&self.entry_size.to_le_bytes());
        h[88..92].copy_from_slice(&crc.to_le_bytes());
        let c = CRC.checksum(&h);
        h[16..20].copy_from_slice(&c.to_le_bytes());
        h
    }
}

/// Recomputes the CRC of the 92-byte header at `lba` after a field was changed.
fn reseal(d: &mut [u8], ss: usize, lba: u64) {
    let o = lba as usize * ss;
    d[o + 16..o + 20].fill(0);
    let c = CRC.checksum(&d[o..o + 92]);
    d[o + 16..o + 20].copy_from_slice(&c.to_le_bytes());
}

fn put_u32(d: &mut [u8], at: usize, v: u32) {
    d[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(d: &mut [u8], at: usize, v: u64) {
    d[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Three partitions with a gap at index 1, and one of an unknown type.
fn sample_parts() -> Vec<Part> {
    vec![
        Part {
            index: 0,
            kind: EFI,
            first: 34,
            last: 99,
            name: "EFI system",
        },
        Part {
            index: 2,
            kind: LINUX_FS,
            first: 100,
            last: 1099,
            name: "root ü",
        },
        Part {
            index: 3,
            kind: SWAP,
            first: 1100,
            last: 1199,
            name: "",
        },
        Part {
            index: 4,
            kind: UNKNOWN,
            first: 1200,
            last: 2014,
            name: "data",
        },
    ]
}

// ---- reading them ----------------------------------------------------------------------

fn table(d: &[u8]) -> Table {
    read_table(&d.to_vec()).unwrap()
}

/// (number, first sector, sectors, type name) of each partition, in `ss`-byte sectors.
fn layout(t: &Table, ss: u64) -> Vec<(u32, u64, u64, String)> {
    t.partitions
        .iter()
        .map(|p| (p.number, p.start / ss, p.len / ss, p.type_name.clone()))
        .collect()
}

fn row(n: u32, start: u64, len: u64, kind: &str) -> (u32, u64, u64, String) {
    (n, start, len, kind.to_string())
}

fn has_note(t: &Table, needle: &str) -> bool {
    t.notes.iter().any(|n| n.contains(needle))
}

fn gpt_error(d: &[u8]) -> (String, String) {
    let e = read_table(&d.to_vec()).unwrap_err();
    match e.layer_error::<PartitionError>() {
        Some(PartitionError::GptCorrupt { primary, backup }) => (primary.clone(), backup.clone()),
        _ => panic!("not a GptCorrupt error: {e}"),
    }
}

// ---- MBR -------------------------------------------------------------------------------

#[test]
fn mbr_four_primaries_are_numbered_by_slot() {
    let mut d = zeroed(4096);
    mbr(
        &mut d,
        &[
            (0x83, 2048, 1000),
            (0x82, 3048, 48),
            (0x07, 3096, 500),
            (0x42, 3596, 500),
        ],
    );
    let t = table(&d);
    assert_eq!(t.kind, TableKind::Mbr);
    assert_eq!(
        layout(&t, 512),
        vec![
            row(1, 2048, 1000, "Linux"),
            row(2, 3048, 48, "Linux swap"),
            row(3, 3096, 500, "NTFS/exFAT"),
            row(4, 3596, 500, "Windows dynamic"),
        ]
    );
    assert!(t.notes.is_empty(), "{:?}", t.notes);
    assert!(t.partitions.iter().all(|p| p.name.is_none()));
}

#[test]
fn mbr_empty_slots_keep_the_numbers_of_the_others() {
    let mut d = zeroed(4096);
    mbr(
        &mut d,
        &[(0, 0, 0), (0x83, 100, 10), (0x83, 0, 0), (0x99, 200, 10)],
    );
    let t = table(&d);
    assert_eq!(
        layout(&t, 512),
        vec![row(2, 100, 10, "Linux"), row(4, 200, 10, "0x99")]
    );
}

/// Primary 1, extended primary 2 (100..3100) with three logical partitions, primary 4.
fn extended_disk() -> Vec<u8> {
    let mut d = zeroed(4096);
    mbr(
        &mut d,
        &[
            (0x83, 4, 96),
            (0x05, 100, 3000),
            (0, 0, 0),
            (0x0c, 3200, 500),
        ],
    );
    ebr(&mut d, 100, Some((0x83, 1, 99)), Some((200, 300)));
    ebr(&mut d, 300, Some((0x82, 2, 98)), Some((400, 600)));
    ebr(&mut d, 500, Some((0x07, 1, 499)), None);
    d
}

#[test]
fn mbr_extended_chain_gives_logical_partitions_from_5() {
    let t = table(&extended_disk());
    assert_eq!(t.kind, TableKind::Mbr);
    assert_eq!(
        layout(&t, 512),
        vec![
            row(1, 4, 96, "Linux"),
            row(4, 3200, 500, "FAT32"),
            row(5, 101, 99, "Linux"),
            row(6, 302, 98, "Linux swap"),
            row(7, 501, 499, "NTFS/exFAT"),
        ]
    );
    assert!(t.notes.is_empty(), "{:?}", t.notes);
}

#[test]
fn mbr_empty_extended_partition_without_ebr_is_quiet() {
    let mut d = zeroed(4096);
    mbr(&mut d, &[(0x83, 4, 96), (0x0f, 100, 3000)]);
    let t = table(&d);
    assert_eq!(layout(&t, 512), vec![row(1, 4, 96, "Linux")]);
    assert!(t.notes.is_empty(), "{:?}", t.notes);
}

#[test]
fn ebr_cycle_stops_the_chain() {
    let mut d = extended_disk();
    // EBR 2 links back to EBR 1 (offset 0 in the extended partition).
    put_entry(&mut d, 300, 1, 0x05, 0, 300);
    let t = table(&d);
    let numbers: Vec<u32> = t.partitions.iter().map(|p| p.number).collect();
    assert_eq!(numbers, vec![1, 4, 5, 6]);
    assert!(
        has_note(&t, "loops back to the EBR at sector 100"),
        "{:?}",
        t.notes
    );
}

#[test]
fn ebr_linking_to_itself_stops_the_chain() {
    let mut d = extended_disk();
    put_entry(&mut d, 100, 1, 0x05, 0, 300);
    let t = table(&d);
    let numbers: Vec<u32> = t.partitions.iter().map(|p| p.number).collect();
    assert_eq!(numbers, vec![1, 4, 5]);
    assert!(has_note(&t, "loops back"), "{:?}", t.notes);
}

#[test]
fn ebr_chain_longer_than_the_bound_is_cut() {
    let mut d = zeroed(4096);
    mbr(&mut d, &[(0x05, 100, 3900)]);
    let count = mbr::MAX_EBRS + 44;
    for i in 0..count as u32 {
        let link = (i + 1 < count as u32).then_some((2 * (i + 1), 2));
        ebr(&mut d, 100 + 2 * u64::from(i), Some((0x83, 1, 1)), link);
    }
    let t = table(&d);
    assert_eq!(t.partitions.len(), mbr::MAX_EBRS);
    assert_eq!(t.partitions.first().unwrap().number, 5);
    assert_eq!(
        t.partitions.last().unwrap().number,
        4 + mbr::MAX_EBRS as u32
    );
    assert!(has_note(&t, "more than 256 EBRs"), "{:?}", t.notes);
}

#[test]
fn ebr_chain_of_exactly_the_bound_is_whole() {
    let mut d = zeroed(4096);
    mbr(&mut d, &[(0x05, 100, 3900)]);
    let count = mbr::MAX_EBRS as u32;
    for i in 0..count {
        let link = (i + 1 < count).then_some((2 * (i + 1), 2));
        ebr(&mut d, 100 + 2 * u64::from(i), Some((0x83, 1, 1)), link);
    }
    let t = table(&d);
    assert_eq!(t.partitions.len(), mbr::MAX_EBRS);
    assert!(t.notes.is_empty(), "{:?}", t.notes);
}

#[test]
fn ebr_past_the_disk_end_or_unsigned_stops_the_chain() {
    let mut d = extended_disk();
    put_entry(&mut d, 300, 1, 0x05, 100_000, 10); // EBR 3 far past the disk
    let t = table(&d);
    assert_eq!(t.partitions.len(), 4);
    assert!(
        has_note(&t, "past the end of the disk: the chain stops"),
        "{:?}",
        t.notes
    );

    let mut d = extended_disk();
    d[500 * S + 510] = 0; // EBR 3 loses its signature
    let t = table(&d);
    assert_eq!(t.partitions.len(), 4);
    assert!(has_note(&t, "no valid EBR at sector 500"), "{:?}", t.notes);
}

#[test]
fn ebr_garbage_in_slot_3_is_ignored_but_sane_entries_kept() {
    let mut d = extended_disk();
    put_entry(&mut d, 100, 2, 0x83, 50_000, 10); // outside the extended partition
    put_entry(&mut d, 100, 3, 0x83, 150, 10); // inside: OS/2 uses all four slots
    let t = table(&d);
    assert!(has_note(&t, "stray entry in slot 3"), "{:?}", t.notes);
    assert_eq!(
        layout(&t, 512),
        vec![
            row(1, 4, 96, "Linux"),
            row(4, 3200, 500, "FAT32"),
            row(5, 101, 99, "Linux"),
            row(6, 250, 10, "Linux"),
            row(7, 302, 98, "Linux swap"),
            row(8, 501, 499, "NTFS/exFAT"),
        ]
    );
}

#[test]
fn logical_partition_outside_its_extended_partition_is_noted() {
    let mut d = zeroed(8192);
    mbr(&mut d, &[(0x05, 100, 3000)]);
    ebr(&mut d, 100, Some((0x83, 1, 5000)), None);
    let t = table(&d);
    assert_eq!(layout(&t, 512), vec![row(5, 101, 5000, "Linux")]);
    assert!(
        has_note(&t, "partition 5 lies outside its extended partition"),
        "{:?}",
        t.notes
    );
}

#[test]
fn partitions_past_the_disk_end_are_clipped_or_dropped() {
    let mut d = zeroed(1000);
    mbr(
        &mut d,
        &[
            (0x83, 2000, 10),
            (0x83, 900, 200),
            (0x83, 1000, 1),
            (0x83, 10, 10),
        ],
    );
    let t = table(&d);
    assert_eq!(
        layout(&t, 512),
        vec![row(2, 900, 100, "Linux"), row(4, 10, 10, "Linux")]
    );
    assert!(
        has_note(&t, "partition 1 starts past the end"),
        "{:?}",
        t.notes
    );
    assert!(
        has_note(&t, "partition 3 starts past the end"),
        "{:?}",
        t.notes
    );
    assert!(has_note(
        &t,
        "partition 2 extends past the end of the disk: clipped"
    ));
}

#[test]
fn clipping_works_on_a_disk_of_partial_sectors() {
    let mut d = zeroed(100);
    d.truncate(100 * S - 100);
    mbr(&mut d, &[(0x83, 50, 50)]);
    let t = table(&d);
    let p = &t.partitions[0];
    assert_eq!((p.start, p.len), (50 * 512, 50 * 512 - 100));
    assert!(has_note(&t, "clipped"));
}

#[test]
fn overlaps_are_noted_not_refused() {
    let mut d = zeroed(4096);
    mbr(
        &mut d,
        &[
            (0x83, 0, 100),
            (0x83, 50, 100),
            (0x83, 200, 10),
            (0x83, 205, 2),
        ],
    );
    let t = table(&d);
    assert_eq!(t.partitions.len(), 4);
    assert!(
        has_note(&t, "partition 1 overlaps the MBR"),
        "{:?}",
        t.notes
    );
    assert!(
        has_note(&t, "partition 2 overlaps partition 1"),
        "{:?}",
        t.notes
    );
    assert!(
        has_note(&t, "partition 4 overlaps partition 3"),
        "{:?}",
        t.notes
    );
    assert!(!has_note(&t, "partition 3 overlaps"), "{:?}", t.notes);
}

#[test]
fn a_partition_over_an_ebr_is_noted() {
    let mut d = extended_disk();
    put_entry(&mut d, 0, 0, 0x83, 4, 200); // primary 1 now covers the first EBR
    let t = table(&d);
    assert!(
        has_note(&t, "partition 1 overlaps the EBR at sector 100"),
        "{:?}",
        t.notes
    );
}

#[test]
fn an_invalid_boot_indicator_means_no_table() {
    let mut d = zeroed(4096);
    mbr(&mut d, &[(0x83, 2048, 1000)]);
    d[0x1be] = 0x12;
    let t = table(&d);
    assert_eq!(t.kind, TableKind::None);
    assert!(t.partitions.is_empty());
}

// ---- disks without a table -------------------------------------------------------------

/// A boot sector with a jump, an OEM name and a BPB, plus table-like garbage where its
/// boot code is (a table parser that ignored the boot sector would find a partition).
fn boot_sector(oem: &[u8; 8], label_at: usize, label: &[u8], per_cluster: u8) -> Vec<u8> {
    let mut d = zeroed(4096);
    d[..3].copy_from_slice(&[0xeb, 0x58, 0x90]);
    d[3..11].copy_from_slice(oem);
    d[11..13].copy_from_slice(&512u16.to_le_bytes());
    d[13] = per_cluster;
    d[label_at..label_at + label.len()].copy_from_slice(label);
    mbr(&mut d, &[(0x83, 1, 100)]);
    d
}

#[test]
fn file_system_boot_sectors_are_no_table() {
    for (what, d) in [
        ("FAT32", boot_sector(b"mkfs.fat", 0x52, b"FAT32   ", 8)),
        ("FAT16", boot_sector(b"mkfs.fat", 0x36, b"FAT16   ", 4)),
        ("FAT12", boot_sector(b"MSDOS5.0", 0x36, b"FAT12   ", 1)),
        ("NTFS", boot_sector(b"NTFS    ", 0x36, b"", 8)),
        ("NTFS 64K", boot_sector(b"NTFS    ", 0x36, b"", 0xf0 + 4)),
        ("exFAT", {
            let mut d = boot_sector(b"EXFAT   ", 0x36, b"", 0);
            d[11..64].fill(0);
            d
        }),
    ] {
        let t = table(&d);
        assert_eq!(t.kind, TableKind::None, "{what}");
        assert!(t.partitions.is_empty(), "{what}");
    }
}

#[test]
fn an_mbr_whose_boot_code_looks_like_fat_without_a_bpb_is_a_table() {
    // GRUB's boot code starts with a jump; bytes copied from an old FAT label, but no BPB.
    let mut d = boot_sector(b"\0\0\0\0\0\0\0\0", 0x52, b"FAT32", 8);
    d[11..13].fill(0);
    let t = table(&d);
    assert_eq!(t.kind, TableKind::Mbr);
    assert_eq!(layout(&t, 512), vec![row(1, 1, 100, "Linux")]);
}

#[test]
fn blank_tiny_and_unsigned_disks_have_no_table() {
    for d in [Vec::new(), vec![0u8; 100], zeroed(1), zeroed(4096), {
        let mut d = zeroed(8);
        d[..4].copy_from_slice(b"\x7fELF");
        d
    }] {
        let t = table(&d);
        assert_eq!(t.kind, TableKind::None);
        assert!(t.partitions.is_empty());
        assert!(t.notes.is_empty());
    }
    // A signed sector of empty entries and no GPT header.
    let mut d = zeroed(64);
    sign(&mut d, 0);
    assert_eq!(table(&d).kind, TableKind::None);
}

// ---- GPT -------------------------------------------------------------------------------

fn expected_sample() -> Vec<(u32, u64, u64, String)> {
    vec![
        row(1, 34, 66, "EFI System"),
        row(3, 100, 1000, "Linux filesystem"),
        row(4, 1100, 100, "Linux swap"),
        row(5, 1200, 815, UNKNOWN),
    ]
}

#[test]
fn gpt_entries_are_numbered_by_index_with_names() {
    let t = table(&Gpt::new(sample_parts()).build());
    assert_eq!(t.kind, TableKind::Gpt);
    assert_eq!(layout(&t, 512), expected_sample());
    let names: Vec<Option<&str>> = t.partitions.iter().map(|p| p.name.as_deref()).collect();
    assert_eq!(
        names,
        vec![Some("EFI system"), Some("root ü"), None, Some("data")]
    );
    assert!(t.notes.is_empty(), "{:?}", t.notes);
}

#[test]
fn gpt_primary_header_corrupt_uses_the_backup() {
    let mut d = Gpt::new(sample_parts()).build();
    d[S + 40] ^= 1; // first usable LBA: the header CRC no longer matches
    let t = table(&d);
    assert_eq!(t.kind, TableKind::Gpt);
    assert_eq!(layout(&t, 512), expected_sample());
    assert!(
        has_note(
            &t,
            "primary header is unusable (its header CRC does not match): the backup at LBA 2047 is used"
        ),
        "{:?}",
        t.notes
    );
}

#[test]
fn gpt_primary_header_wiped_uses_the_backup() {
    let mut d = Gpt::new(sample_parts()).build();
    d[S..2 * S].fill(0);
    let t = table(&d);
    assert_eq!(layout(&t, 512), expected_sample());
    assert!(has_note(&t, "no GPT signature at LBA 1"), "{:?}", t.notes);
}

#[test]
fn gpt_primary_entry_array_corrupt_uses_the_backup() {
    let mut d = Gpt::new(sample_parts()).build();
    d[2 * S + 300] ^= 0x40; // entry 3's last LBA
    let t = table(&d);
    assert_eq!(layout(&t, 512), expected_sample());
    assert!(
        has_note(&t, "entry array's CRC does not match"),
        "{:?}",
        t.notes
    );
}

#[test]
fn gpt_backup_corrupt_uses_the_primary() {
    let mut d = Gpt::new(sample_parts()).build();
    d[2047 * S + 40] ^= 1;
    let t = table(&d);
    assert_eq!(layout(&t, 512), expected_sample());
    assert!(
        has_note(&t, "backup header (LBA 2047) is unusable"),
        "{:?}",
        t.notes
    );
}

#[test]
fn gpt_both_copies_corrupt_is_an_error() {
    let mut d = Gpt::new(sample_parts()).build();
    d[S + 40] ^= 1;
    d[2047 * S] = b'X';
    let (primary, backup) = gpt_error(&d);
    assert!(primary.contains("header CRC"), "{primary}");
    assert!(backup.contains("no GPT signature at LBA 2047"), "{backup}");
}

#[test]
fn protective_mbr_without_any_gpt_is_an_error() {
    let mut d = zeroed(2048);
    mbr(&mut d, &[(0xee, 1, 2047)]);
    gpt_error(&d);
}

#[test]
fn gpt_backup_copy_differing_is_noted() {
    let mut d = Gpt::new(sample_parts()).build();
    d[2047 * S + 56] ^= 1; // the backup's disk GUID
    reseal(&mut d, S, 2047);
    let t = table(&d);
    assert_eq!(layout(&t, 512), expected_sample());
    assert!(has_note(&t, "backup header differs"), "{:?}", t.notes);
}

#[test]
fn gpt_on_an_enlarged_disk_finds_the_backup_where_the_primary_says() {
    let mut d = Gpt::new(sample_parts()).build();
    d.resize(4096 * S, 0);
    let t = table(&d);
    assert_eq!(layout(&t, 512), expected_sample());
    assert!(has_note(
        &t,
        "puts its backup at LBA 2047, not at the disk's last LBA 4095"
    ));
    assert!(!has_note(&t, "unusable"), "{:?}", t.notes);
}

#[test]
fn gpt_stale_backup_pointer_falls_back_to_the_last_lba() {
    let mut d = Gpt::new(sample_parts()).build();
    put_u64(&mut d, S + 32, 1000);
    reseal(&mut d, S, 1);
    let t = table(&d);
    assert_eq!(layout(&t, 512), expected_sample());
    assert!(
        has_note(&t, "no GPT backup header at LBA 1000"),
        "{:?}",
        t.notes
    );
}

#[test]
fn gpt_larger_entry_sizes_are_read() {
    for size in [256u32, 512, 1024] {
        let mut g = Gpt::new(sample_parts());
        g.entry_size = size;
        g.num_entries = 128 * 128 / size; // the same 32 sectors of array
        let t = table(&g.build());
        assert_eq!(layout(&t, 512), expected_sample(), "entry size {size}");
        assert!(t.notes.is_empty(), "{size}: {:?}", t.notes);
    }
}

#[test]
fn gpt_entry_sizes_outside_the_specification_are_refused() {
    for size in [0u32, 64, 127, 129, 384, 640] {
        let mut d = Gpt::new(sample_parts()).build();
        for lba in [1, 2047] {
            put_u32(&mut d, lba as usize * S + 84, size);
            reseal(&mut d, S, lba);
        }
        let (primary, backup) = gpt_error(&d);
        assert!(primary.contains("entry size"), "{size}: {primary}");
        assert!(backup.contains("entry size"), "{size}: {backup}");
    }
}

#[test]
fn gpt_huge_entry_counts_are_refused_without_allocating() {
    let mut d = Gpt::new(sample_parts()).build();
    put_u32(&mut d, S + 80, u32::MAX);
    put_u32(&mut d, S + 84, 1 << 31); // 2^32 entries of 2 GiB each, claimed
    reseal(&mut d, S, 1);
    let t = table(&d);
    assert_eq!(layout(&t, 512), expected_sample());
    assert!(has_note(&t, "exceeds"), "{:?}", t.notes);

    for lba in [1, 2047] {
        put_u32(&mut d, lba as usize * S + 80, 1_000_000);
        put_u32(&mut d, lba as usize * S + 84, 128);
        reseal(&mut d, S, lba);
    }
    let (primary, backup) = gpt_error(&d);
    assert!(primary.contains("exceeds") && backup.contains("exceeds"));
}

#[test]
fn gpt_entry_array_past_the_disk_is_refused() {
    let mut d = Gpt::new(sample_parts()).build();
    put_u64(&mut d, S + 72, u64::MAX / 2); // entry array LBA: the offset overflows
    reseal(&mut d, S, 1);
    let t = table(&d);
    assert!(has_note(&t, "past the end of the disk"), "{:?}", t.notes);
    assert_eq!(layout(&t, 512), expected_sample());
}

#[test]
fn gpt_many_entries_within_the_bound_are_read() {
    let mut g = Gpt::new(Vec::new());
    g.num_entries = 1000;
    g.sectors = 4096;
    let first = g.first_usable();
    g.parts = (0..1000)
        .map(|i| Part {
            index: i,
            kind: LINUX_FS,
            first: first + i as u64,
            last: first + i as u64,
            name: "x",
        })
        .collect();
    let t = table(&g.build());
    assert_eq!(t.partitions.len(), 1000);
    assert_eq!(t.partitions[999].number, 1000);
    assert!(t.notes.is_empty(), "{:?}", t.notes);
}

#[test]
fn notes_are_bounded() {
    let mut g = Gpt::new(Vec::new());
    g.num_entries = 1000;
    g.sectors = 4096;
    g.parts = (0..1000)
        .map(|i| Part {
            index: i,
            kind: LINUX_FS,
            first: 300,
            last: 400,
            name: "",
        })
        .collect();
    let t = table(&g.build());
    assert_eq!(t.partitions.len(), 1000);
    assert_eq!(t.notes.len(), MAX_NOTES);
    assert!(
        t.notes
            .last()
            .unwrap()
            .starts_with("... and 936 more notes"),
        "{:?}",
        t.notes.last()
    );
}

#[test]
fn gpt_odd_entries_are_skipped_or_noted() {
    let mut parts = sample_parts();
    parts.push(Part {
        index: 5,
        kind: LINUX_FS,
        first: 500,
        last: 400,
        name: "backwards",
    });
    parts.push(Part {
        index: 6,
        kind: LINUX_FS,
        first: 1,
        last: 10,
        name: "over the header",
    });
    parts.push(Part {
        index: 7,
        kind: LINUX_FS,
        first: u64::MAX - 1,
        last: u64::MAX,
        name: "far",
    });
    parts.push(Part {
        index: 8,
        kind: LINUX_FS,
        first: 2000,
        last: 3000,
        name: "long",
    });
    let t = table(&Gpt::new(parts).build());
    let numbers: Vec<u32> = t.partitions.iter().map(|p| p.number).collect();
    assert_eq!(numbers, vec![1, 3, 4, 5, 7, 9]);
    for needle in [
        "partition 6 ends (LBA 400) before it starts (LBA 500): skipped",
        "partition 7 (LBA 1..=10) lies outside the GPT's usable sectors 34..=2014",
        "partition 7 overlaps the GPT header at LBA 1",
        "partition 7 overlaps the GPT entry array at LBA 2",
        "partition 8 (sector 18446744073709551614, 2 sectors) is past any disk's end",
        "partition 9 extends past the end of the disk: clipped",
        "partition 9 overlaps the GPT header at LBA 2047",
        "partition 9 overlaps partition 5",
    ] {
        assert!(has_note(&t, needle), "{needle}: {:?}", t.notes);
    }
    let p9 = t.partitions.last().unwrap();
    assert_eq!((p9.start, p9.len), (2000 * 512, 48 * 512));
}

#[test]
fn gpt_with_4096_byte_sectors() {
    let mut g = Gpt::new(Vec::new());
    g.ss = 4096;
    g.sectors = 64; // array: 4 sectors, usable 6..=58
    g.parts = vec![
        Part {
            index: 0,
            kind: EFI,
            first: 6,
            last: 9,
            name: "esp",
        },
        Part {
            index: 1,
            kind: LINUX_FS,
            first: 10,
            last: 58,
            name: "root",
        },
    ];
    let d = g.build();
    let t = table(&d);
    assert_eq!(t.kind, TableKind::Gpt);
    assert_eq!(
        layout(&t, 4096),
        vec![
            row(1, 6, 4, "EFI System"),
            row(2, 10, 49, "Linux filesystem")
        ]
    );
    assert!(has_note(&t, "4096-byte sectors is used"), "{:?}", t.notes);

    // Its backup alone still makes it one.
    let mut d = d;
    d[4096..8192].fill(0);
    let t = table(&d);
    assert_eq!(t.partitions.len(), 2);
    assert!(has_note(&t, "backup at LBA 63 is used"), "{:?}", t.notes);
}

#[test]
fn hybrid_mbr_uses_the_gpt() {
    let mut d = Gpt::new(sample_parts()).build();
    put_entry(&mut d, 0, 1, 0x83, 100, 1000);
    put_entry(&mut d, 0, 2, 0x0c, 34, 66);
    let t = table(&d);
    assert_eq!(t.kind, TableKind::Gpt);
    assert_eq!(layout(&t, 512), expected_sample());
    assert!(
        has_note(&t, "hybrid MBR: its 2 other entries are ignored"),
        "{:?}",
        t.notes
    );
}

#[test]
fn protective_entry_in_another_slot_still_means_gpt() {
    let mut d = Gpt::new(sample_parts()).build();
    put_entry(&mut d, 0, 0, 0, 0, 0);
    put_entry(&mut d, 0, 3, 0xee, 1, 2047);
    assert_eq!(layout(&table(&d), 512), expected_sample());
}

#[test]
fn gpt_without_a_protective_mbr_is_used_with_a_note() {
    let mut d = Gpt::new(sample_parts()).build();
    d[..S].fill(0); // no MBR at all
    let t = table(&d);
    assert_eq!(layout(&t, 512), expected_sample());
    assert!(has_note(&t, "without a protective MBR"), "{:?}", t.notes);

    let mut d = Gpt::new(sample_parts()).build();
    put_entry(&mut d, 0, 0, 0, 0, 0); // a signed MBR with no entries
    let t = table(&d);
    assert_eq!(layout(&t, 512), expected_sample());
    assert!(
        has_note(&t, "without a protective MBR entry"),
        "{:?}",
        t.notes
    );
}

// ---- the disk's own failures, partition_source -----------------------------------------

/// A disk whose reads past `good` bytes fail.
struct Failing {
    data: Vec<u8>,
    good: u64,
}

impl ReadAt for Failing {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> crate::error::Result<usize> {
        if offset + buf.len() as u64 > self.good {
            return Err(crate::error::Error::io(
                "test read",
                std::io::Error::other("medium error"),
            ));
        }
        self.data.read_at(offset, buf)
    }
}

#[test]
fn read_failures_are_passed_on_not_taken_for_corruption() {
    let data = Gpt::new(sample_parts()).build();
    let e = read_table(&Failing {
        data,
        good: 2 * S as u64,
    })
    .unwrap_err();
    assert!(e.layer_error::<PartitionError>().is_none(), "{e}");
    assert!(e.to_string().contains("medium error"), "{e}");

    let data = extended_disk();
    let e = read_table(&Failing {
        data,
        good: 100 * S as u64,
    })
    .unwrap_err();
    assert!(e.to_string().contains("medium error"), "{e}");
}

#[test]
fn partition_source_is_a_window_of_the_partition() {
    let mut d = extended_disk();
    d[301 * S..302 * S].fill(0xaa); // the sector before logical partition 6
    d[302 * S..302 * S + 5].copy_from_slice(b"swap!");
    d[400 * S - 1] = 0x77; // its last byte
    d[400 * S] = 0xbb; // the next EBR area
    let disk: Arc<dyn ReadAt> = Arc::new(d);
    let t = read_table(&*disk).unwrap();
    let p6 = t.partitions.iter().find(|p| p.number == 6).unwrap();
    let src = partition_source(disk.clone(), p6).unwrap();
    assert_eq!(src.len(), 98 * 512);
    let mut head = [0u8; 5];
    src.read_exact_at(0, &mut head).unwrap();
    assert_eq!(&head, b"swap!");
    let mut tail = [0u8; 2];
    assert_eq!(src.read_at(98 * 512 - 1, &mut tail).unwrap(), 1);
    assert_eq!(tail[0], 0x77);
}

// ---- anything at all -------------------------------------------------------------------

/// A valid MBR-with-chain or GPT disk, then `edits` (offset, byte) applied to its table
/// areas: the reader never panics and what it returns is inside the disk.
fn check_mutated(gpt: bool, edits: &[(usize, u8)]) {
    let mut d = if gpt {
        Gpt::new(sample_parts()).build()
    } else {
        let mut d = extended_disk();
        d.truncate(2048 * S);
        d
    };
    // Table areas: sector 0, LBA 1 and the primary array, EBRs, the backup copy.
    let areas = [
        0usize,
        S,
        2 * S,
        100 * S,
        300 * S,
        500 * S,
        2015 * S,
        2047 * S,
    ];
    for &(at, byte) in edits {
        let area = areas[at % areas.len()];
        let o = area + (at / areas.len()) % (S * 4);
        if o < d.len() {
            d[o] = byte;
        }
    }
    let disk_len = d.len() as u64;
    let disk: Arc<dyn ReadAt> = Arc::new(d);
    let Ok(t) = read_table(&*disk) else {
        return;
    };
    assert!(t.notes.len() <= MAX_NOTES);
    let mut last = 0;
    for p in &t.partitions {
        assert!(p.number > last, "numbers ascend and are unique");
        last = p.number;
        assert!(p.len > 0 && p.start + p.len <= disk_len, "{p:?}");
        let src = partition_source(disk.clone(), p).unwrap();
        assert_eq!(src.len(), p.len);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    #[test]
    fn mutated_tables_never_panic(
        gpt in any::<bool>(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..24)
    ) {
        check_mutated(gpt, &edits);
    }
}
