//! The MS-DOS partition table: four primary entries in sector 0 and, inside an extended
//! partition, a chain of EBRs (extended boot records) each holding one logical partition
//! and a link to the next. Read the way Linux's `block/partitions/msdos.c` does, with the
//! chain bounded in length and a cycle stopping it.

use std::collections::HashSet;

use super::types::{mbr_is_extended, mbr_type_name};
use super::{Found, Notes, Raw, Reserved, SECTOR, TableKind};
use crate::error::Result;
use crate::io::ReadAt;

/// The type byte of GPT's protective MBR entry.
pub const PROTECTIVE: u8 = 0xee;

/// Most EBRs one extended partition's chain may have (Linux numbers at most 256 partitions
/// per disk; a longer chain is hostile or broken).
pub const MAX_EBRS: usize = 256;

const TABLE_OFFSET: usize = 0x1be;

/// One 16-byte partition entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The type byte.
    pub kind: u8,
    /// First sector, relative to what the entry's table says.
    pub start: u32,
    /// Length in sectors.
    pub sectors: u32,
}

impl Entry {
    /// An unused slot: Linux skips entries of zero length (and type 0 means unused).
    pub fn is_empty(&self) -> bool {
        self.kind == 0 || self.sectors == 0
    }
}

/// What a sector with a partition-table layout holds.
pub enum Sector {
    /// A table (the 0x55AA signature and valid boot indicators).
    Entries([Entry; 4]),
    /// The boot sector of a FAT, exFAT or NTFS file system on the whole disk.
    BootSector,
    /// Neither.
    NotMbr,
}

/// Reads the four entries of a sector, or says why it is no table.
pub fn parse_sector(s: &[u8; SECTOR as usize]) -> Sector {
    if s[510] != 0x55 || s[511] != 0xaa {
        return Sector::NotMbr;
    }
    // A FAT/NTFS boot sector has the same signature; its boot code overlaps the table.
    if is_fs_boot_sector(s) {
        return Sector::BootSector;
    }
    // Linux refuses a table whose boot indicator is neither 0 nor 0x80.
    if (0..4).any(|i| !matches!(s[TABLE_OFFSET + 16 * i], 0 | 0x80)) {
        return Sector::NotMbr;
    }
    Sector::Entries(entries_of(s))
}

/// Whether the sector is a FAT, exFAT or NTFS boot sector (a jump, then its OEM name or
/// file system label where those file systems keep them).
fn is_fs_boot_sector(s: &[u8; SECTOR as usize]) -> bool {
    let jump = s[0] == 0xeb || s[0] == 0xe9;
    jump && (&s[3..11] == b"NTFS    "
        || &s[3..11] == b"EXFAT   "
        || &s[0x36..0x3b] == b"FAT12"
        || &s[0x36..0x3b] == b"FAT16"
        || &s[0x52..0x57] == b"FAT32")
}

/// The partitions of an MBR whose entries are `entries` (sector 0 already parsed).
pub(super) fn read(disk: &dyn ReadAt, entries: &[Entry; 4], notes: &mut Notes) -> Result<Found> {
    let mut found = Found {
        kind: TableKind::Mbr,
        raw: Vec::new(),
        reserved: vec![Reserved {
            start: 0,
            len: SECTOR,
            what: "the MBR".into(),
        }],
    };
    let mut extended = Vec::new();
    for (slot, e) in (1u32..).zip(entries.iter()) {
        if e.is_empty() {
            continue;
        }
        if mbr_is_extended(e.kind) {
            extended.push(*e);
            continue;
        }
        found.raw.push(raw(slot, u64::from(e.start), e, None));
    }
    let mut next_number = 5u32;
    for e in extended {
        walk_chain(disk, &e, &mut next_number, &mut found, notes)?;
    }
    Ok(found)
}

/// A partition entry as a [`Raw`] partition starting at sector `first`.
fn raw(number: u32, first: u64, e: &Entry, container: Option<(u64, u64)>) -> Raw {
    Raw {
        number,
        first_sector: first,
        sectors: u64::from(e.sectors),
        sector_size: SECTOR,
        type_name: mbr_type_name(e.kind),
        name: None,
        container,
    }
}

/// Follows the EBR chain of the extended partition `ext`: each EBR's data entries are
/// logical partitions (relative to that EBR), its first extended entry links to the next
/// EBR (relative to the extended partition's start).
fn walk_chain(
    disk: &dyn ReadAt,
    ext: &Entry,
    next_number: &mut u32,
    found: &mut Found,
    notes: &mut Notes,
) -> Result<()> {
    let ext_start = u64::from(ext.start);
    let ext_end = ext_start + u64::from(ext.sectors); // u32 + u32: no overflow in u64
    let container = Some((ext_start * SECTOR, u64::from(ext.sectors) * SECTOR));
    let disk_sectors = disk.len() / SECTOR;
    let mut this = ext_start;
    let mut this_size = u64::from(ext.sectors);
    let mut seen = HashSet::new();
    for step in 0..=MAX_EBRS {
        if step == MAX_EBRS {
            notes.push(format!(
                "the extended partition's chain has more than {MAX_EBRS} EBRs: the rest is ignored"
            ));
            break;
        }
        if !seen.insert(this) {
            notes.push(format!(
                "the extended partition's chain loops back to the EBR at sector {this}: stopped"
            ));
            break;
        }
        if this >= disk_sectors {
            notes.push(format!(
                "an EBR at sector {this} lies past the end of the disk: the chain stops there"
            ));
            break;
        }
        let mut s = [0u8; SECTOR as usize];
        disk.read_exact_at(this * SECTOR, &mut s)?;
        let Sector::Entries(entries) = parse_sector_ebr(&s) else {
            // An empty extended partition need not hold an EBR at all.
            if step > 0 {
                notes.push(format!("no valid EBR at sector {this}: the chain stops there"));
            }
            break;
        };
        found.reserved.push(Reserved {
            start: this * SECTOR,
            len: SECTOR,
            what: format!("the EBR at sector {this}"),
        });
        for (i, e) in entries.iter().enumerate() {
            if e.is_empty() || mbr_is_extended(e.kind) {
                continue;
            }
            let first = this + u64::from(e.start);
            // Linux's guard against garbage in the 3rd and 4th slots of an EBR.
            if i >= 2
                && (u64::from(e.start) + u64::from(e.sectors) > this_size
                    || first < ext_start
                    || first + u64::from(e.sectors) > ext_end)
            {
                notes.push(format!(
                    "the EBR at sector {this} has a stray entry in slot {}: ignored",
                    i + 1
                ));
                continue;
            }
            found.raw.push(raw(*next_number, first, e, container));
            *next_number += 1;
        }
        let Some(link) = entries
            .iter()
            .find(|e| e.sectors != 0 && mbr_is_extended(e.kind))
        else {
            break;
        };
        this = ext_start + u64::from(link.start);
        this_size = u64::from(link.sectors);
    }
    Ok(())
}

/// An EBR is parsed as a table without the boot-sector and boot-indicator checks of
/// sector 0 (Linux does not make them there either).
fn parse_sector_ebr(s: &[u8; SECTOR as usize]) -> Sector {
    if s[510] != 0x55 || s[511] != 0xaa {
        return Sector::NotMbr;
    }
    Sector::Entries(entries_of(s))
}

/// The four entries of a table sector.
fn entries_of(s: &[u8; SECTOR as usize]) -> [Entry; 4] {
    std::array::from_fn(|i| {
        let b = &s[TABLE_OFFSET + 16 * i..TABLE_OFFSET + 16 * (i + 1)];
        Entry {
            kind: b[4],
            start: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            sectors: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
        }
    })
}
