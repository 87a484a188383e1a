//! The volume descriptors of an ISO 9660 image: the primary one (the plain ISO tree, which
//! also carries Rock Ridge) and a Joliet supplementary one (a second tree of UCS-2 names).
//! They are 2048-byte sectors from sector 16 on, up to a terminator.

use crate::error::Result;
use crate::io::ReadAt;

use super::IsoError;

/// Bytes per descriptor sector (fixed by ECMA-119 whatever the logical block size).
const SECTOR: u64 = 2048;
/// The sector of the first descriptor.
const FIRST: u64 = 16;
/// Descriptors read at most before the terminator (an image has a handful; a forged one
/// without a terminator stops here).
const MAX_DESCRIPTORS: u64 = 64;
/// The standard identifier every descriptor carries at byte 1.
const MAGIC: &[u8; 5] = b"CD001";
/// Length of a root directory record inside a descriptor.
pub const ROOT_RECORD_LEN: usize = 34;

/// What the descriptors say.
#[derive(Debug, Clone)]
pub struct Volume {
    /// Bytes per logical block: extents are counted in these.
    pub block_size: u64,
    /// The root directory record of the primary descriptor.
    pub primary_root: [u8; ROOT_RECORD_LEN],
    /// The root directory record of a Joliet supplementary descriptor, if there is one.
    pub joliet_root: Option<[u8; ROOT_RECORD_LEN]>,
}

/// Whether `source` holds an ISO 9660 image: `CD001` at byte 1 of sector 16.
pub fn probe(source: &dyn ReadAt) -> bool {
    let mut head = [0u8; 6];
    source.read_exact_at(FIRST * SECTOR, &mut head).is_ok() && head.get(1..6) == Some(&MAGIC[..])
}

/// Reads the descriptors of `source`.
pub fn read(source: &dyn ReadAt) -> Result<Volume> {
    let mut primary: Option<(u64, [u8; ROOT_RECORD_LEN])> = None;
    let mut joliet: Option<(u64, [u8; ROOT_RECORD_LEN])> = None;
    let mut sector = [0u8; SECTOR as usize];
    for n in FIRST..FIRST + MAX_DESCRIPTORS {
        source.read_exact_at(n * SECTOR, &mut sector)?;
        if sector.get(1..6) != Some(&MAGIC[..]) {
            if n == FIRST {
                return Err(IsoError::NotIso.into());
            }
            // A damaged set: keep what was found before it (Linux does the same).
            break;
        }
        match sector[0] {
            1 if primary.is_none() => primary = Some(descriptor(&sector)?),
            2 if joliet.is_none() && is_joliet(&sector) => joliet = Some(descriptor(&sector)?),
            255 => break,
            _ => {}
        }
    }
    let (block_size, primary_root) = primary.ok_or(IsoError::NoPrimary)?;
    // A Joliet tree counted in other blocks than the primary one is not worth the risk.
    let joliet_root = joliet.filter(|(bs, _)| *bs == block_size).map(|(_, r)| r);
    Ok(Volume {
        block_size,
        primary_root,
        joliet_root,
    })
}

/// The logical block size and the root record of a primary or supplementary descriptor.
fn descriptor(sector: &[u8; SECTOR as usize]) -> Result<(u64, [u8; ROOT_RECORD_LEN])> {
    let block_size = u64::from(u16::from_le_bytes([sector[128], sector[129]]));
    // ECMA-119 allows powers of two from 512 to the sector size; Linux reads those only.
    if !matches!(block_size, 512 | 1024 | 2048) {
        return Err(IsoError::Corrupt("logical block size is not 512, 1024 or 2048").into());
    }
    let mut root = [0u8; ROOT_RECORD_LEN];
    root.copy_from_slice(&sector[156..156 + ROOT_RECORD_LEN]);
    Ok((block_size, root))
}

/// Whether supplementary descriptor `sector` is Joliet's: one of its three UCS-2 escape
/// sequences opens the escape-sequence field (byte 88).
fn is_joliet(sector: &[u8; SECTOR as usize]) -> bool {
    matches!(&sector[88..91], b"%/@" | b"%/C" | b"%/E")
}
