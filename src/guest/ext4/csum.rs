//! ext4's crc32c: the kernel's `ext4_chksum` is the raw Castagnoli update (no inversion
//! before or after), chained from the file system's seed through the inode number and
//! generation. The `crc` crate's `CRC_32_ISCSI` is the same polynomial with inversion on both
//! ends, so a raw state goes in bit-reversed (the crate reflects its initial value) and
//! comes out with the final inversion undone.

use crc::{CRC_32_ISCSI, Crc};

/// The Castagnoli CRC, table-driven 16 bytes at a time.
const CASTAGNOLI: Crc<u32, crc::Table<16>> = Crc::<u32, crc::Table<16>>::new(&CRC_32_ISCSI);

/// The raw crc32c state after `data`, starting from raw state `seed`.
pub fn crc32c(seed: u32, data: &[u8]) -> u32 {
    let mut digest = CASTAGNOLI.digest_with_initial(seed.reverse_bits());
    digest.update(data);
    digest.finalize() ^ !0
}

/// The seed of an inode's checksums (and of its directory blocks'): the file system's
/// seed, then the inode number and its generation, little-endian.
pub fn inode_seed(fs_seed: u32, ino: u32, generation: u32) -> u32 {
    let s = crc32c(fs_seed, &ino.to_le_bytes());
    crc32c(s, &generation.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chained_equals_whole_and_matches_the_catalogue() {
        // The catalogue's check value is the inverted crc of "123456789" from all ones.
        assert_eq!(crc32c(!0, b"123456789") ^ !0, 0xE306_9283);
        assert_eq!(
            crc32c(crc32c(!0, b"1234"), b"56789"),
            crc32c(!0, b"123456789")
        );
        assert_eq!(crc32c(7, b""), 7);
    }
}
