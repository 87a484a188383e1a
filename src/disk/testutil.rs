//! Helpers shared by the format modules' unit tests: deterministic data, reading a whole
//! flat image through `map`/`decode_unit` while checking the tiling rules, and a map
//! property check on random requests.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use super::{DiskError, DiskImage, Extent};
use crate::error::{Error, Result};

/// Deterministic pseudo-random bytes (xorshift), so fixtures are reproducible.
pub fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    seed |= 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.extend_from_slice(&seed.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Fills one extent's bytes; `parent` supplies unallocated extents (zeros without one).
pub fn fill(img: &dyn DiskImage, pos: u64, ext: Extent, out: &mut [u8], parent: Option<&[u8]>) {
    match ext {
        Extent::Zero { .. } => out.fill(0),
        Extent::Unallocated { .. } => match parent {
            Some(p) => {
                out.fill(0);
                let start = (pos as usize).min(p.len());
                let end = (pos as usize + out.len()).min(p.len());
                out[..end - start].copy_from_slice(&p[start..end]);
            }
            None => out.fill(0),
        },
        Extent::Stored { source_offset, .. } => {
            img.source().read_exact_at(source_offset, out).unwrap()
        }
        Extent::Unit {
            unit,
            offset_in_unit,
            len,
        } => {
            assert!(offset_in_unit + len <= img.unit_len(unit), "{ext:?}");
            let mut g = vec![0u8; img.unit_len(unit) as usize];
            img.decode_unit(unit, &mut g).unwrap();
            out.copy_from_slice(&g[offset_in_unit as usize..(offset_in_unit + len) as usize]);
        }
    }
}

/// The whole flat image read through `map`, checking that every extent is non-empty,
/// inside the request and the disk, and that stored extents are inside the source.
pub fn flat_with_parent(img: &dyn DiskImage, parent: Option<&[u8]>) -> Vec<u8> {
    let size = img.virtual_size();
    let mut out = vec![0u8; size as usize];
    let mut pos = 0u64;
    while pos < size {
        let ext = img.map(pos, size - pos).unwrap();
        let len = ext.len();
        assert!(len >= 1 && pos + len <= size, "{ext:?} at {pos}");
        if let Extent::Stored { source_offset, .. } = ext {
            assert!(source_offset + len <= img.source().len(), "{ext:?}");
        }
        fill(
            img,
            pos,
            ext,
            &mut out[pos as usize..(pos + len) as usize],
            parent,
        );
        pos += len;
    }
    out
}

/// [`flat_with_parent`] without a parent.
pub fn flat(img: &dyn DiskImage) -> Vec<u8> {
    flat_with_parent(img, None)
}

/// Map property on pseudo-random requests: the first extent is non-empty, no longer than
/// asked, inside the disk, and holds the expected bytes.
pub fn check_tiling(img: &dyn DiskImage, expected: &[u8], parent: Option<&[u8]>, seed: u64) {
    let size = img.virtual_size();
    assert_eq!(size, expected.len() as u64);
    let r = noise(16 * 300, seed);
    for c in r.chunks_exact(16) {
        let a = u64::from_le_bytes(c[..8].try_into().unwrap());
        let b = u64::from_le_bytes(c[8..].try_into().unwrap());
        let offset = a % size;
        let max_len = 1 + b % (3 * img.unit_bytes().min(1 << 20));
        let ext = img.map(offset, max_len).unwrap();
        let len = ext.len();
        assert!(
            len >= 1 && len <= max_len && offset + len <= size,
            "{ext:?} for {offset}+{max_len}"
        );
        let mut got = vec![0u8; len as usize];
        fill(img, offset, ext, &mut got, parent);
        assert_eq!(
            got,
            &expected[offset as usize..(offset + len) as usize],
            "{ext:?} at {offset}"
        );
    }
}

/// The disk error inside a result, or a panic naming what came instead.
pub fn disk_err<T>(r: Result<T>) -> DiskError {
    match r {
        Ok(_) => panic!("expected a disk error, got success"),
        Err(e) => into_disk(e),
    }
}

fn into_disk(e: Error) -> DiskError {
    e.into_layer_error()
        .unwrap_or_else(|e| panic!("expected a disk error, got {:?} ({e})", e.kind()))
}
