//! The GUID partition table: a header at LBA 1 and its entry array, a backup copy of both
//! at the end of the disk. Each copy is checked on its own (signature, header CRC, its own
//! LBA, entry geometry, entry-array CRC); the primary is used when it is sound, else the
//! backup, and a note says so. Sector size 512, or 4096 when 512 finds no header at all.

use super::types::{gpt_type_name, guid_text};
use super::{Found, Notes, PartitionError, Raw, Reserved, SECTOR, TableKind};
use crate::error::Result;
use crate::io::ReadAt;

/// The header's signature.
pub const SIGNATURE: &[u8; 8] = b"EFI PART";

/// The largest entry array read (32768 entries of 128 bytes): a header claiming more is
/// refused rather than allocated.
pub const MAX_ARRAY_BYTES: u64 = 4 << 20;

/// The other sector size tried.
pub const LARGE_SECTOR: u64 = 4096;

const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
const MIN_HEADER: usize = 92;
const MIN_ENTRY: u32 = 128;
const NAME_UNITS: usize = 36;

/// One header, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Where this header says it is.
    pub my_lba: u64,
    /// Where it says the other copy is.
    pub alternate_lba: u64,
    /// First sector partitions may use.
    pub first_usable: u64,
    /// Last sector partitions may use.
    pub last_usable: u64,
    /// The disk's GUID.
    pub disk_guid: [u8; 16],
    /// First sector of the entry array.
    pub entries_lba: u64,
    /// Entries in the array.
    pub num_entries: u32,
    /// Bytes per entry.
    pub entry_size: u32,
    /// CRC32 of the array.
    pub entries_crc: u32,
}

impl Header {
    /// The entry array's length in bytes (bounded by [`MAX_ARRAY_BYTES`] once checked).
    fn array_bytes(&self) -> u64 {
        u64::from(self.num_entries) * u64::from(self.entry_size)
    }

    /// The fields both copies must agree on.
    fn shared(&self) -> (u64, u64, [u8; 16], u32, u32, u32) {
        (
            self.first_usable,
            self.last_usable,
            self.disk_guid,
            self.num_entries,
            self.entry_size,
            self.entries_crc,
        )
    }
}

/// A header and its entry array, both verified.
struct Copy {
    header: Header,
    array: Vec<u8>,
}

/// Whether the 8 bytes at `offset` are the GPT signature (false past the end).
pub fn signature_at(disk: &dyn ReadAt, offset: u64) -> Result<bool> {
    let mut sig = [0u8; 8];
    if offset.checked_add(8).is_none_or(|end| end > disk.len()) {
        return Ok(false);
    }
    disk.read_exact_at(offset, &mut sig)?;
    Ok(&sig == SIGNATURE)
}

/// Whether either header copy's signature is where sector size `ss` puts it.
fn any_signature(disk: &dyn ReadAt, ss: u64) -> Result<bool> {
    let sectors = disk.len() / ss;
    if sectors < 2 {
        return Ok(false);
    }
    Ok(signature_at(disk, ss)? || signature_at(disk, (sectors - 1) * ss)?)
}

/// Reads the GPT of `disk` (its MBR announced one).
pub(super) fn read(disk: &dyn ReadAt, notes: &mut Notes) -> Result<Found> {
    let ss = if !any_signature(disk, SECTOR)? && any_signature(disk, LARGE_SECTOR)? {
        notes.push(format!(
            "no GPT header with {SECTOR}-byte sectors: the one with {LARGE_SECTOR}-byte sectors is used"
        ));
        LARGE_SECTOR
    } else {
        SECTOR
    };
    let sectors = disk.len() / ss;
    let last = sectors.saturating_sub(1);
    let primary = read_copy(disk, ss, 1);
    let backup_lba = match &primary {
        Ok(p) if p.header.alternate_lba != last => {
            notes.push(format!(
                "the GPT primary header puts its backup at LBA {}, not at the disk's last LBA {last} (the disk was resized?)",
                p.header.alternate_lba
            ));
            p.header.alternate_lba
        }
        _ => last,
    };
    let backup = read_copy(disk, ss, backup_lba);
    let (used, other) = match (primary, backup) {
        (Ok(p), Ok(b)) => {
            if p.header.shared() != b.header.shared() || b.header.alternate_lba != 1 {
                notes.push("the GPT backup header differs from the primary: the primary is used".into());
            }
            (p, Some(b))
        }
        (Ok(p), Err(why)) => {
            notes.push(format!(
                "the GPT backup header (LBA {backup_lba}) is unusable ({why}): the primary is used"
            ));
            (p, None)
        }
        (Err(why), Ok(b)) => {
            notes.push(format!(
                "the GPT primary header is unusable ({why}): the backup at LBA {backup_lba} is used"
            ));
            (b, None)
        }
        (Err(primary), Err(backup)) => {
            return Err(PartitionError::GptCorrupt { primary, backup }.into());
        }
    };
    let mut found = Found {
        kind: TableKind::Gpt,
        raw: entries(&used, ss, notes),
        reserved: vec![Reserved {
            start: 0,
            len: ss,
            what: "the protective MBR".into(),
        }],
    };
    for c in std::iter::once(&used).chain(other.as_ref()) {
        reserve(&mut found.reserved, &c.header, ss);
    }
    Ok(found)
}

/// Marks a copy's header and entry array as the table's own bytes.
fn reserve(reserved: &mut Vec<Reserved>, h: &Header, ss: u64) {
    // Both products were bounded when the copy was read (inside the disk).
    reserved.push(Reserved {
        start: h.my_lba * ss,
        len: ss,
        what: format!("the GPT header at LBA {}", h.my_lba),
    });
    reserved.push(Reserved {
        start: h.entries_lba * ss,
        len: h.array_bytes(),
        what: format!("the GPT entry array at LBA {}", h.entries_lba),
    });
}

/// Reads and verifies the copy whose header is at `lba`; the error says why it is refused.
fn read_copy(disk: &dyn ReadAt, ss: u64, lba: u64) -> std::result::Result<Copy, String> {
    let offset = lba
        .checked_mul(ss)
        .filter(|o| o.checked_add(ss).is_some_and(|end| end <= disk.len()))
        .ok_or_else(|| format!("LBA {lba} is past the end of the disk"))?;
    let mut sector = vec![0u8; ss as usize];
    disk.read_exact_at(offset, &mut sector)
        .map_err(|e| format!("reading LBA {lba}: {e}"))?;
    let header = parse_header(&sector, lba, disk.len() / ss)?;
    let array_offset = header
        .entries_lba
        .checked_mul(ss)
        .ok_or("its entry array's offset overflows")?;
    let array_bytes = header.array_bytes();
    if array_offset
        .checked_add(array_bytes)
        .is_none_or(|end| end > disk.len())
    {
        return Err(format!(
            "its entry array (LBA {}, {array_bytes} bytes) is past the end of the disk",
            header.entries_lba
        ));
    }
    // Bounded by MAX_ARRAY_BYTES in parse_header.
    let mut array = vec![0u8; array_bytes as usize];
    disk.read_exact_at(array_offset, &mut array)
        .map_err(|e| format!("reading its entry array: {e}"))?;
    if CRC32.checksum(&array) != header.entries_crc {
        return Err("its entry array's CRC does not match".into());
    }
    Ok(Copy { header, array })
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Parses and checks one header sector read at `lba` of a disk of `sectors` sectors.
pub fn parse_header(s: &[u8], lba: u64, sectors: u64) -> std::result::Result<Header, String> {
    if s.len() < MIN_HEADER || &s[..8] != SIGNATURE {
        return Err(format!("no GPT signature at LBA {lba}"));
    }
    let size = u32_at(s, 12) as usize;
    if size < MIN_HEADER || size > s.len() {
        return Err(format!("its header size {size} is out of range"));
    }
    let mut copy = s[..size].to_vec();
    copy[16..20].fill(0);
    if CRC32.checksum(&copy) != u32_at(s, 16) {
        return Err("its header CRC does not match".into());
    }
    let mut disk_guid = [0u8; 16];
    disk_guid.copy_from_slice(&s[56..72]);
    let h = Header {
        my_lba: u64_at(s, 24),
        alternate_lba: u64_at(s, 32),
        first_usable: u64_at(s, 40),
        last_usable: u64_at(s, 48),
        disk_guid,
        entries_lba: u64_at(s, 72),
        num_entries: u32_at(s, 80),
        entry_size: u32_at(s, 84),
        entries_crc: u32_at(s, 88),
    };
    if h.my_lba != lba {
        return Err(format!("the header at LBA {lba} says it is at LBA {}", h.my_lba));
    }
    // The UEFI specification: 128 × 2^n bytes per entry.
    if h.entry_size < MIN_ENTRY || !(h.entry_size / MIN_ENTRY).is_power_of_two() || h.entry_size % MIN_ENTRY != 0 {
        return Err(format!("its entry size {} is not 128 × 2^n", h.entry_size));
    }
    if h.array_bytes() > MAX_ARRAY_BYTES {
        return Err(format!(
            "its entry array ({} entries of {} bytes) exceeds {MAX_ARRAY_BYTES} bytes",
            h.num_entries, h.entry_size
        ));
    }
    if h.first_usable > h.last_usable || h.last_usable >= sectors {
        return Err(format!(
            "its usable sectors {}..={} are not inside the disk's {sectors}",
            h.first_usable, h.last_usable
        ));
    }
    Ok(h)
}

/// The used entries of a verified copy as partitions, numbered by index.
fn entries(c: &Copy, ss: u64, notes: &mut Notes) -> Vec<Raw> {
    let size = c.header.entry_size as usize;
    let mut out = Vec::new();
    for (number, e) in (1u32..).zip(c.array.chunks_exact(size)) {
        let mut type_guid = [0u8; 16];
        type_guid.copy_from_slice(&e[..16]);
        if type_guid == [0u8; 16] {
            continue;
        }
        let (first, last) = (u64_at(e, 32), u64_at(e, 40));
        let Some(sectors) = last.checked_sub(first).and_then(|d| d.checked_add(1)) else {
            notes.push(format!(
                "partition {number} ends (LBA {last}) before it starts (LBA {first}): skipped"
            ));
            continue;
        };
        if first < c.header.first_usable || last > c.header.last_usable {
            notes.push(format!(
                "partition {number} (LBA {first}..={last}) lies outside the GPT's usable sectors {}..={}",
                c.header.first_usable, c.header.last_usable
            ));
        }
        out.push(Raw {
            number,
            first_sector: first,
            sectors,
            sector_size: ss,
            type_name: gpt_type_name(&guid_text(&type_guid)),
            name: name(&e[56..56 + 2 * NAME_UNITS]),
            container: None,
        });
    }
    out
}

/// A partition's name: UTF-16LE up to the first NUL; `None` when empty.
fn name(b: &[u8]) -> Option<String> {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|u| u16::from_le_bytes([u[0], u[1]]))
        .take_while(|&u| u != 0)
        .collect();
    (!units.is_empty()).then(|| String::from_utf16_lossy(&units))
}
