//! Decoders that turn one compressed grain or cluster into exactly one unit of output.
//!
//! The output buffer has the exact decoded size; a stream that would produce more is
//! refused (zip-bomb guard: we never write past the unit), one that produces less is
//! refused too. Decoding uses libdeflate (the fastest inflater measured,
//! docs/deps.md §3.1) with one decompressor per thread.

use std::cell::RefCell;

use libdeflater::{DecompressionError, Decompressor};

use super::DiskError;
use crate::error::Result;

thread_local! {
    static DECOMPRESSOR: RefCell<Decompressor> = RefCell::new(Decompressor::new());
}

/// Which wrapper the compressed bytes carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrapper {
    /// RFC 1950 zlib (2-byte header, Adler-32 trailer): VMDK grains as every producer writes
    /// them.
    Zlib,
    /// RFC 1951 raw deflate: qcow2 compressed clusters, and VMDK grains from writers that
    /// follow the letter of the VMDK spec.
    Deflate,
}

/// Whether `data` starts with a plausible zlib header (CM = 8, window <= 32 KiB, FCHECK ok).
pub fn looks_like_zlib(data: &[u8]) -> bool {
    match data {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0
        }
        _ => false,
    }
}

/// Inflates `input` into exactly `out.len()` bytes, or fails with a typed error naming
/// `unit`.
pub fn inflate_exact(wrapper: Wrapper, input: &[u8], out: &mut [u8], unit: u64) -> Result<()> {
    let expected = out.len() as u64;
    let produced = DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        match wrapper {
            Wrapper::Zlib => d.zlib_decompress(input, out),
            Wrapper::Deflate => d.deflate_decompress(input, out),
        }
    });
    match produced {
        Ok(n) if n as u64 == expected => Ok(()),
        Ok(n) => Err(DiskError::UnitSizeMismatch {
            unit,
            expected,
            actual: n as u64,
        }
        .into()),
        Err(DecompressionError::InsufficientSpace) => Err(DiskError::UnitSizeMismatch {
            unit,
            expected,
            actual: expected.saturating_add(1),
        }
        .into()),
        Err(DecompressionError::BadData) => Err(DiskError::CorruptUnit {
            unit,
            reason: format!("{wrapper:?} stream is invalid"),
        }
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libdeflater::{CompressionLvl, Compressor};

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut c = Compressor::new(CompressionLvl::default());
        let mut out = vec![0u8; c.zlib_compress_bound(data.len())];
        let n = c.zlib_compress(data, &mut out).unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn exact_output_is_accepted() {
        let data: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        let z = zlib(&data);
        assert!(looks_like_zlib(&z));
        let mut out = vec![0u8; data.len()];
        inflate_exact(Wrapper::Zlib, &z, &mut out, 0).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn output_larger_than_the_unit_is_refused() {
        let z = zlib(&vec![0u8; 1 << 20]);
        let mut out = vec![0u8; 65536];
        let e = inflate_exact(Wrapper::Zlib, &z, &mut out, 7).unwrap_err();
        assert!(matches!(
            e.layer_error(),
            Some(DiskError::UnitSizeMismatch {
                unit: 7,
                expected: 65536,
                ..
            })
        ));
    }

    #[test]
    fn short_output_and_garbage_are_refused() {
        let z = zlib(&[1u8; 1000]);
        let mut out = vec![0u8; 65536];
        let e = inflate_exact(Wrapper::Zlib, &z, &mut out, 1).unwrap_err();
        assert!(matches!(
            e.layer_error(),
            Some(DiskError::UnitSizeMismatch { actual: 1000, .. })
        ));
        let e = inflate_exact(Wrapper::Zlib, &[0x78, 0x9c, 0xff, 0xff], &mut out, 2).unwrap_err();
        assert!(matches!(
            e.layer_error(),
            Some(DiskError::CorruptUnit { unit: 2, .. })
        ));
    }

    #[test]
    fn truncated_stream_is_refused() {
        let data = vec![5u8; 4096];
        let z = zlib(&data);
        let mut out = vec![0u8; 4096];
        assert!(inflate_exact(Wrapper::Zlib, &z[..z.len() - 3], &mut out, 0).is_err());
    }
}
