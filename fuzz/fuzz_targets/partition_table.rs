//! `guest::partition::read_table` over an in-memory disk, then `partition_source` of every
//! partition: never panics; every partition lies inside the disk with a length above 0,
//! numbers ascend without repeats, notes stay within `MAX_NOTES`, each partition's window
//! has its length and reads its first and last byte; the tables of the first windows
//! (nested tables) are read too.
//!
//! Input: `[flags u8][extra sectors u32 LE][disk bytes]`. The disk is the bytes followed by
//! `extra` zero sectors (so a small input can be a large disk whose backup GPT header lies
//! past the bytes). Flag bit 0 reseals the GPT: before reading, the entry-array CRC and
//! header CRC of each header found (LBA 1 and the last LBA, 512- and 4096-byte sectors)
//! are recomputed, so that mutations reach the code behind the CRC checks.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use ovafs::error::Result;
use ovafs::guest::partition::{self, MAX_NOTES};
use ovafs::io::ReadAt;

const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
/// Largest disk the input can claim: 1 TiB (reads past the bytes are zeros, never stored).
const MAX_EXTRA_SECTORS: u64 = 1 << 31;

/// The bytes, then zeros up to `len`.
struct Padded {
    data: Vec<u8>,
    len: u64,
}

impl ReadAt for Padded {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if offset >= self.len {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(self.len - offset) as usize;
        buf[..n].fill(0);
        if let Some(have) = self.data.get(offset as usize..) {
            let k = have.len().min(n);
            buf[..k].copy_from_slice(&have[..k]);
        }
        Ok(n)
    }
}

fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(d.get(at..at + 8)?.try_into().ok()?))
}

/// Recomputes the CRCs of the GPT header at byte `h` of `d` (sector size `ss`), if there is
/// one whose array lies inside the bytes.
fn reseal(d: &mut [u8], h: usize, ss: usize) -> Option<()> {
    if d.get(h..h + 8)? != b"EFI PART" {
        return None;
    }
    let entries_lba = usize::try_from(u64_at(d, h + 72)?).ok()?;
    let count = u32_at(d, h + 80)? as usize;
    let size = u32_at(d, h + 84)? as usize;
    let array = entries_lba.checked_mul(ss)?;
    let bytes = count.checked_mul(size).filter(|&b| b <= 4 << 20)?;
    let crc = CRC32.checksum(d.get(array..array.checked_add(bytes)?)?);
    d.get_mut(h + 88..h + 92)?
        .copy_from_slice(&crc.to_le_bytes());
    let header = (u32_at(d, h + 12)? as usize).clamp(92, ss);
    d.get_mut(h + 16..h + 20)?.fill(0);
    let crc = CRC32.checksum(d.get(h..h + header)?);
    d.get_mut(h + 16..h + 20)?
        .copy_from_slice(&crc.to_le_bytes());
    Some(())
}

fn check(disk: Arc<dyn ReadAt>, depth: u32) {
    let Ok(table) = partition::read_table(&*disk) else {
        return;
    };
    assert!(table.notes.len() <= MAX_NOTES);
    let mut last = 0;
    for (i, p) in table.partitions.iter().enumerate() {
        assert!(p.number > last, "numbers ascend: {:?}", table.partitions);
        last = p.number;
        let end = p.start.checked_add(p.len).expect("end overflows");
        assert!(
            p.len > 0 && end <= disk.len(),
            "{p:?} outside {}",
            disk.len()
        );
        let src = partition::partition_source(disk.clone(), p).expect("a window of the disk");
        assert_eq!(src.len(), p.len);
        let mut b = [0u8; 1];
        assert_eq!(src.read_at(0, &mut b).ok(), Some(1));
        assert_eq!(src.read_at(p.len - 1, &mut b).ok(), Some(1));
        // A few nested tables: each read can be two 4 MiB entry arrays.
        if depth == 0 && i < 4 && p.len < disk.len() {
            check(src, depth + 1);
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&flags, rest)) = input.split_first() else {
        return;
    };
    let Some(extra) = rest.get(..4) else {
        return;
    };
    let extra = u64::from(u32::from_le_bytes([extra[0], extra[1], extra[2], extra[3]]));
    let mut data = rest[4..].to_vec();
    let len = data.len() as u64 + (extra % MAX_EXTRA_SECTORS) * 512;
    if flags & 1 != 0 {
        for ss in [512usize, 4096] {
            let last = (len / ss as u64).saturating_sub(1);
            for lba in [1, last] {
                if let Ok(h) = usize::try_from(lba * ss as u64) {
                    reseal(&mut data, h, ss);
                }
            }
        }
    }
    check(Arc::new(Padded { data, len }), 0);
});
