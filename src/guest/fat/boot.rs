//! The FAT boot sector: the BIOS parameter block read, checked and turned into a
//! [`Geometry`] with overflow-checked arithmetic, before fatfs sees it.
//!
//! fatfs 0.3.6 computes the layout in `u32` without checks (`fats * sectors_per_fat`, the
//! FAT's entry count in bits) and only warns when the FAT is smaller than the clusters it
//! must describe; with overflow checks on, a forged BPB makes it panic, and a FAT too
//! small makes later lookups read past it. Every such BPB is refused here first, and the
//! FAT and the FAT12/16 root directory must lie inside the source.

use crate::error::Result;
use crate::io::ReadAt;

use super::FatFsError;

/// Bytes of the boot sector read.
const BOOT_BYTES: usize = 512;
/// Fewest clusters of a FAT16 volume and of a FAT32 one (Microsoft's FAT specification;
/// the count of clusters alone decides the type).
const FAT16_MIN_CLUSTERS: u64 = 4085;
/// See [`FAT16_MIN_CLUSTERS`].
const FAT32_MIN_CLUSTERS: u64 = 65525;
/// Most clusters of a FAT32 volume: cluster numbers from 0x0FFFFFF7 up are markers.
const FAT32_MAX_CLUSTERS: u64 = 0x0FFF_FFF4;

/// The width of the volume's FAT entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FatType {
    /// 12-bit entries.
    Fat12,
    /// 16-bit entries.
    Fat16,
    /// 32-bit entries (28 used).
    Fat32,
}

/// Where everything of a FAT volume is, in bytes from its start.
#[derive(Debug, Clone)]
pub struct Geometry {
    /// The type, from the count of clusters.
    pub fat_type: FatType,
    /// Bytes per cluster.
    pub cluster_bytes: u64,
    /// Where the FAT that is read (the first, or FAT32's active one) starts.
    pub fat_offset: u64,
    /// Bytes of one FAT.
    pub fat_bytes: u64,
    /// Where the FAT12/16 root directory starts (FAT32: 0).
    pub root_offset: u64,
    /// Bytes of the FAT12/16 root directory (FAT32: 0).
    pub root_bytes: u64,
    /// Where cluster 2 starts.
    pub data_offset: u64,
    /// Data clusters: valid cluster numbers are `2..clusters + 2`.
    pub clusters: u32,
    /// The FAT32 root directory's first cluster (FAT12/16: 0).
    pub root_cluster: u32,
}

impl Geometry {
    /// Whether `cluster` names a data cluster of the volume.
    pub fn valid_cluster(&self, cluster: u32) -> bool {
        cluster >= 2 && u64::from(cluster) < u64::from(self.clusters) + 2
    }

    /// The byte offset of data cluster `cluster` (checked valid by the caller).
    pub fn cluster_offset(&self, cluster: u32) -> Result<u64> {
        u64::from(cluster)
            .checked_sub(2)
            .and_then(|c| c.checked_mul(self.cluster_bytes))
            .and_then(|b| b.checked_add(self.data_offset))
            .ok_or_else(|| crate::error::Error::overflow("FAT cluster offset"))
    }
}

/// Whether `source` starts with a FAT12/16/32 boot sector (read and checked, never an
/// error). NTFS, exFAT and ISO 9660 fail it: their boot sectors have no valid BPB or no
/// `FAT` type label.
pub fn probe(source: &dyn ReadAt) -> bool {
    read_boot(source)
        .map(|b| parse(&b).is_ok())
        .unwrap_or(false)
}

/// The geometry of the FAT volume in `source`, checked to fit it.
pub fn check(source: &dyn ReadAt) -> Result<Geometry> {
    let boot = read_boot(source)?;
    let geo = parse(&boot).map_err(FatFsError::BootSector)?;
    let end = geo.fat_offset.checked_add(geo.fat_bytes);
    let root_end = geo.root_offset.checked_add(geo.root_bytes);
    match (end, root_end) {
        (Some(end), Some(root_end)) if end <= source.len() && root_end <= source.len() => Ok(geo),
        _ => Err(FatFsError::BootSector(
            "the FAT or the root directory lies past the partition's end",
        )
        .into()),
    }
}

/// The first [`BOOT_BYTES`] of `source`.
fn read_boot(source: &dyn ReadAt) -> Result<[u8; BOOT_BYTES]> {
    let mut boot = [0u8; BOOT_BYTES];
    source.read_exact_at(0, &mut boot)?;
    Ok(boot)
}

/// A little-endian `u16` at `at` of the boot sector.
fn le16(b: &[u8; BOOT_BYTES], at: usize) -> u16 {
    let mut v = [0u8; 2];
    if let Some(s) = b.get(at..at + 2) {
        v.copy_from_slice(s);
    }
    u16::from_le_bytes(v)
}

/// A little-endian `u32` at `at` of the boot sector.
fn le32(b: &[u8; BOOT_BYTES], at: usize) -> u32 {
    let mut v = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        v.copy_from_slice(s);
    }
    u32::from_le_bytes(v)
}

/// The raw BPB fields the layout depends on.
struct Bpb {
    sector: u64,
    per_cluster: u64,
    reserved: u64,
    fats: u64,
    root_entries: u64,
    total: u64,
    per_fat: u64,
    fat32: bool,
}

/// Checks the boot sector and computes the layout; the reason it is not a FAT volume
/// otherwise. Mirrors the checks of fatfs's `BiosParameterBlock::validate`, so that what
/// passes here is not refused there, and adds the ones it lacks.
fn parse(b: &[u8; BOOT_BYTES]) -> Result<Geometry, &'static str> {
    let bpb = fields(b)?;
    let fat_sectors = bpb
        .fats
        .checked_mul(bpb.per_fat)
        .ok_or("FAT size overflows")?;
    let root_sectors = (bpb.root_entries * 32).div_ceil(bpb.sector);
    let first_data = bpb.reserved + fat_sectors + root_sectors;
    if first_data >= bpb.total {
        return Err("the data region starts past the volume's end");
    }
    let clusters = (bpb.total - first_data) / bpb.per_cluster;
    let fat_type = if clusters < FAT16_MIN_CLUSTERS {
        FatType::Fat12
    } else if clusters < FAT32_MIN_CLUSTERS {
        FatType::Fat16
    } else {
        FatType::Fat32
    };
    if bpb.fat32 != (fat_type == FatType::Fat32) || clusters > FAT32_MAX_CLUSTERS {
        return Err("the count of clusters does not match the FAT type");
    }
    let fat_bits = bpb.per_fat * bpb.sector * 8;
    // fatfs computes this product in u32.
    if fat_bits > u64::from(u32::MAX) {
        return Err("the FAT is larger than 512 MiB");
    }
    let entry_bits = match fat_type {
        FatType::Fat12 => 12,
        FatType::Fat16 => 16,
        FatType::Fat32 => 32,
    };
    if fat_bits / entry_bits < clusters + 2 {
        return Err("the FAT is too small for the volume's clusters");
    }
    let mut active = 0;
    let mut root_cluster = 0;
    if bpb.fat32 {
        let flags = le16(b, 40);
        if flags & 0x80 != 0 {
            // Mirroring off: one FAT is active.
            active = u64::from(flags & 0x0F);
            if active >= bpb.fats {
                return Err("the active FAT does not exist");
            }
        }
        root_cluster = le32(b, 44);
        if root_cluster < 2 || u64::from(root_cluster) >= clusters + 2 {
            return Err("the root directory's cluster is outside the volume");
        }
    }
    let clusters = u32::try_from(clusters).map_err(|_| "too many clusters")?;
    let fat_offset = (bpb.reserved + active * bpb.per_fat) * bpb.sector;
    let root_offset = if bpb.fat32 {
        0
    } else {
        (bpb.reserved + fat_sectors) * bpb.sector
    };
    Ok(Geometry {
        fat_type,
        cluster_bytes: bpb.per_cluster * bpb.sector,
        fat_offset,
        fat_bytes: bpb.per_fat * bpb.sector,
        root_offset,
        root_bytes: if bpb.fat32 {
            0
        } else {
            root_sectors * bpb.sector
        },
        data_offset: first_data * bpb.sector,
        clusters,
        root_cluster,
    })
}

/// Reads and checks the BPB fields one by one (each within the ranges the FAT
/// specification and fatfs allow). All fit in u32 here, so the sums and products the
/// caller forms from them in u64 cannot overflow except `fats * per_fat`.
fn fields(b: &[u8; BOOT_BYTES]) -> Result<Bpb, &'static str> {
    if b[510..] != [0x55, 0xAA] {
        return Err("no boot sector signature");
    }
    let sector = le16(b, 11);
    if !sector.is_power_of_two() || !(512..=4096).contains(&sector) {
        return Err("bad bytes per sector");
    }
    let per_cluster = b[13];
    if !per_cluster.is_power_of_two() || per_cluster > 128 {
        return Err("bad sectors per cluster");
    }
    let reserved = le16(b, 14);
    let fats = b[16];
    if reserved == 0 || fats == 0 {
        return Err("no reserved sectors or no FAT");
    }
    let root_entries = le16(b, 17);
    let (total16, total32) = (le16(b, 19), le32(b, 32));
    if (total16 == 0) == (total32 == 0) {
        return Err("bad total sector count");
    }
    let per_fat16 = le16(b, 22);
    let fat32 = per_fat16 == 0;
    let (per_fat, label_at) = if fat32 {
        (le32(b, 36), 82)
    } else {
        (u32::from(per_fat16), 54)
    };
    if !b[label_at..label_at + 3].eq(b"FAT") {
        return Err("no FAT type label");
    }
    if fat32 {
        let (version, fs_info, backup) = (le16(b, 42), le16(b, 48), le16(b, 50));
        if root_entries != 0 || total16 != 0 || per_fat == 0 || version != 0 {
            return Err("bad FAT32 fields");
        }
        if fs_info >= reserved || backup >= reserved {
            return Err("the FSInfo or backup boot sector is outside the reserved sectors");
        }
    } else if root_entries == 0 {
        return Err("a FAT12/16 volume without root directory entries");
    }
    Ok(Bpb {
        sector: u64::from(sector),
        per_cluster: u64::from(per_cluster),
        reserved: u64::from(reserved),
        fats: u64::from(fats),
        root_entries: u64::from(root_entries),
        total: if total16 == 0 {
            u64::from(total32)
        } else {
            u64::from(total16)
        },
        per_fat: u64::from(per_fat),
        fat32,
    })
}
