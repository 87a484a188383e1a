//! Every disk format (sniffed by `disk::open`) over in-memory bytes: never panics; extents
//! from `map` tile every request and stay inside the virtual size and the source; units
//! decode into exactly their length or fail; `FlatDisk` reads of ranges chosen by the input
//! never panic, through a cache of two 64 KiB grains so that reads evict and recycle grains,
//! and a range read again after other reads returns the same bytes; the allocated-bytes count
//! never exceeds the virtual size.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use ovafs::cache::UnitCache;
use ovafs::disk::{self, Extent, MAX_VIRTUAL_BYTES, engine::FlatDisk};
use ovafs::io::ReadAt;

/// Units decoded per input at most (each can be up to 2 MiB).
const MAX_DECODES: usize = 4;
/// Bytes mapped per probe.
const PROBE_BYTES: u64 = 256 << 10;

fuzz_target!(|data: &[u8]| {
    let src: Arc<dyn ReadAt> = Arc::new(data.to_vec());
    let Ok(img) = disk::open(src) else {
        return;
    };
    let size = img.virtual_size();
    assert!(size <= MAX_VIRTUAL_BYTES);
    let unit = img.unit_bytes();
    assert!(unit > 0 && unit <= disk::MAX_UNIT_BYTES);
    // Probe offsets: the start, the middle, the end, and one chosen by the input's tail.
    let tail = data
        .get(data.len().saturating_sub(8)..)
        .map(|t| t.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b)))
        .unwrap_or(0);
    let chosen = if size > 0 { tail % size } else { 0 };
    let mut decodes = 0;
    for start in [0, size / 2, size.saturating_sub(PROBE_BYTES / 2), chosen] {
        let end = start.saturating_add(PROBE_BYTES).min(size);
        let mut pos = start;
        while pos < end {
            let Ok(ext) = img.map(pos, end - pos) else {
                break;
            };
            let len = ext.len();
            assert!(
                len >= 1 && len <= end - pos,
                "extent of {len} for {} bytes",
                end - pos
            );
            match ext {
                Extent::Stored { source_offset, len } => {
                    let e = source_offset
                        .checked_add(len)
                        .expect("stored extent overflows");
                    assert!(e <= img.source().len(), "stored extent past the source");
                }
                Extent::Unit {
                    unit: u,
                    offset_in_unit,
                    len,
                } => {
                    let ul = img.unit_len(u);
                    assert!(offset_in_unit + len <= ul, "unit extent past the unit");
                    if decodes < MAX_DECODES {
                        decodes += 1;
                        let mut out = vec![0u8; ul as usize];
                        let _ = img.decode_unit(u, &mut out);
                    }
                }
                Extent::Zero { .. } | Extent::Unallocated { .. } => {}
            }
            pos += len;
        }
    }
    // Two grains of budget: later reads evict (and recycle) the grains of earlier ones.
    let flat = FlatDisk::new(img, Arc::new(UnitCache::new(128 << 10)), None);
    assert!(flat.allocated_bytes() <= size);
    let mut buf = vec![0u8; 70_000];
    let want = (tail as usize % buf.len()).max(1);
    let first = flat.read_at(chosen, &mut buf[..want]).ok().map(|n| buf[..n].to_vec());
    for off in [
        chosen.wrapping_mul(7),
        size.saturating_sub(1000),
        size / 2,
        size,
        u64::MAX - 5,
    ] {
        if let Ok(n) = flat.read_at(off, &mut buf[..want]) {
            assert!(n <= want);
        }
    }
    if let (Some(first), Ok(n)) = (first, flat.read_at(chosen, &mut buf[..want])) {
        assert_eq!(&buf[..n], &first[..], "a range read twice differs");
    }
});
