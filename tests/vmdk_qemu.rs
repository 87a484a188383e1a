//! Differential tests of the VMDK reader and the stream-optimized writer against qemu-img.
//!
//! Contents:
//! 1. For several raw images (sizes that are and are not multiples of the 64 KiB grain, data
//!    scattered over the disk, including across a grain-table boundary and in the last
//!    partial grain): qemu-img converts each to streamOptimized and monolithicSparse VMDKs,
//!    and our reader's flat image must equal the raw image.
//! 2. Our writer writes each raw image in every layout; our reader must read it back, and
//!    `qemu-img convert -f vmdk -O raw` (an independent judge of the writer) must give the
//!    raw image back for the footer and header layouts. qemu refuses the layout without a
//!    grain directory ("Invalid footer": it requires a footer whenever the header says
//!    GD_AT_END); the test asserts exactly that.
//! 3. Other grain sizes from our writer, judged by qemu.
//!
//! qemu-img is required: a missing qemu-img fails the tests with a message naming it.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ovafs::cache::UnitCache;
use ovafs::disk::engine::FlatDisk;
use ovafs::disk::vmdk::{GrainMapSource, SparseVmdk};
use ovafs::disk::vmdk_writer::{StreamLayout, StreamWriterOptions, write_stream_optimized};
use ovafs::disk::{DiskFormat, DiskImage};
use ovafs::io::{FileSource, ReadAt};

/// A scratch folder removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("ovafs-vmdk-qemu-{}-{tag}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs qemu-img; a missing qemu-img is a test failure that names it.
fn qemu_img(args: &[&str]) -> Output {
    match Command::new("qemu-img").args(args).output() {
        Ok(o) => o,
        Err(e) => panic!(
            "qemu-img is required by the VMDK differential tests and could not be run ({e}); \
             install it (Debian: apt-get install qemu-utils)"
        ),
    }
}

fn qemu_ok(args: &[&str]) {
    let o = qemu_img(args);
    assert!(
        o.status.success(),
        "qemu-img {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Deterministic pseudo-random bytes (xorshift).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
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

/// A raw image of `len` bytes: zeros, with data scattered over it: the first and last
/// sectors, runs straddling grain boundaries, an incompressible run, a text run, single
/// bytes in otherwise empty grains, and data on both sides of the 32 MiB grain-table
/// boundary when the disk is that large.
fn raw_image(len: usize, seed: u64) -> Vec<u8> {
    let mut raw = vec![0u8; len];
    let r = noise(len.min(1 << 20), seed);
    let mut put = |at: usize, data: &[u8]| {
        if at < len {
            let end = (at + data.len()).min(len);
            raw[at..end].copy_from_slice(&data[..end - at]);
        }
    };
    put(0, b"first sector of an ovafs test disk");
    put(65536 - 100, &r[..300]); // straddles grains 0 and 1
    put(3 * 65536 + 7, &r[1000..1001]); // one byte in grain 3
    put(5 * 65536, &r[..r.len().min(200_000)]); // incompressible, several grains
    let text: Vec<u8> = b"stream-optimized grains compress well. "
        .iter()
        .cycle()
        .take(150_000)
        .copied()
        .collect();
    put((len / 2).saturating_sub(75_000), &text); // the middle of the disk
    put((32 << 20) - 5000, &r[..10_000]); // across the grain-table boundary
    put((33 << 20) + 12345, &r[..1]);
    put(len.saturating_sub(700), &r[..700]); // the last partial grain and last sector
    raw
}

/// Reads the flat image of the VMDK at `path` through the engine, in uneven chunks.
fn read_flat(path: &Path) -> (SparseVmdk, Vec<u8>) {
    let img = SparseVmdk::open(Arc::new(FileSource::open(path).unwrap()))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let check = SparseVmdk::open(Arc::new(FileSource::open(path).unwrap())).unwrap();
    let disk = FlatDisk::new(Arc::new(img), Arc::new(UnitCache::new(16 << 20)), None);
    let size = disk.len() as usize;
    let mut out = vec![0u8; size];
    let mut pos = 0usize;
    for chunk in [131_072usize, 4096, 1, 65_537, 1 << 20].iter().cycle() {
        if pos >= size {
            break;
        }
        let end = (pos + chunk).min(size);
        let n = disk.read_at(pos as u64, &mut out[pos..end]).unwrap();
        assert_eq!(n, end - pos);
        pos = end;
    }
    (check, out)
}

fn assert_same(what: &str, got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: first difference at byte {i}");
    }
}

fn write_ours(raw_path: &Path, out: &Path, opts: &StreamWriterOptions) {
    let src = FileSource::open(raw_path).unwrap();
    let mut f = std::io::BufWriter::new(std::fs::File::create(out).unwrap());
    write_stream_optimized(&src, &mut f, opts).unwrap();
    std::io::Write::flush(&mut f).unwrap();
}

/// Everything for one raw image size.
fn differential(len: usize, seed: u64) {
    let dir = TempDir::new(&format!("{len}"));
    let raw = raw_image(len, seed);
    let raw_path = dir.path("disk.raw");
    std::fs::write(&raw_path, &raw).unwrap();

    // 1. qemu writes, we read.
    for (subformat, format, source) in [
        (
            "streamOptimized",
            DiskFormat::VmdkStreamOptimized,
            GrainMapSource::Header,
        ),
        (
            "monolithicSparse",
            DiskFormat::VmdkSparse,
            GrainMapSource::Header,
        ),
    ] {
        let vmdk = dir.path(&format!("qemu-{subformat}.vmdk"));
        qemu_ok(&[
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            &format!("subformat={subformat}"),
            s(&raw_path),
            s(&vmdk),
        ]);
        let (img, flat) = read_flat(&vmdk);
        assert_eq!(img.format(), format);
        assert_eq!(img.grain_map_source(), source);
        assert_eq!(img.create_type(), Some(subformat));
        assert_same(&format!("qemu {subformat}, {len} bytes"), &flat, &raw);
    }

    // 2. We write, we read, and qemu judges.
    for (layout, source) in [
        (StreamLayout::GdInFooter, GrainMapSource::Footer),
        (StreamLayout::GdInHeader, GrainMapSource::Header),
        (StreamLayout::NoGrainDirectory, GrainMapSource::MarkerScan),
    ] {
        let vmdk = dir.path(&format!("ours-{layout:?}.vmdk"));
        write_ours(
            &raw_path,
            &vmdk,
            &StreamWriterOptions {
                layout,
                ..StreamWriterOptions::default()
            },
        );
        let (img, flat) = read_flat(&vmdk);
        assert_eq!(img.grain_map_source(), source);
        assert_same(&format!("ours {layout:?}, {len} bytes"), &flat, &raw);

        let back = dir.path(&format!("back-{layout:?}.raw"));
        let args = ["convert", "-f", "vmdk", "-O", "raw", s(&vmdk), s(&back)];
        match layout {
            StreamLayout::GdInFooter | StreamLayout::GdInHeader => {
                qemu_ok(&args);
                let back = std::fs::read(&back).unwrap();
                assert_same(&format!("qemu reading ours {layout:?}"), &back, &raw);
                // qemu's consistency check agrees too.
                qemu_ok(&["check", "-f", "vmdk", s(&vmdk)]);
            }
            StreamLayout::NoGrainDirectory => {
                let o = qemu_img(&args);
                let err = String::from_utf8_lossy(&o.stderr);
                assert!(
                    !o.status.success() && err.contains("Invalid footer"),
                    "qemu was expected to refuse a stream without grain directory: {err}"
                );
            }
        }
    }
}

#[test]
fn smaller_than_one_grain() {
    differential(100 * 512, 1);
}

#[test]
fn whole_grains() {
    differential(1 << 20, 2);
}

#[test]
fn capacity_not_a_multiple_of_the_grain() {
    differential((3 << 20) + 5 * 512, 3);
}

#[test]
fn two_grain_tables_and_a_partial_last_grain() {
    differential((37 << 20) + 7 * 512, 4);
}

#[test]
fn other_grain_sizes_are_read_by_qemu() {
    let dir = TempDir::new("grains");
    let len = (5 << 20) + 3 * 512;
    let raw = raw_image(len, 5);
    let raw_path = dir.path("disk.raw");
    std::fs::write(&raw_path, &raw).unwrap();
    for grain_sectors in [8, 16, 512, 2048] {
        for layout in [StreamLayout::GdInFooter, StreamLayout::GdInHeader] {
            let vmdk = dir.path(&format!("g{grain_sectors}-{layout:?}.vmdk"));
            write_ours(
                &raw_path,
                &vmdk,
                &StreamWriterOptions {
                    layout,
                    grain_sectors,
                    ..StreamWriterOptions::default()
                },
            );
            let (img, flat) = read_flat(&vmdk);
            assert_eq!(img.unit_bytes(), grain_sectors * 512);
            assert_same(&format!("ours grain {grain_sectors}"), &flat, &raw);
            let back = dir.path("back.raw");
            qemu_ok(&["convert", "-f", "vmdk", "-O", "raw", s(&vmdk), s(&back)]);
            assert_same(
                &format!("qemu reading ours, grain {grain_sectors} {layout:?}"),
                &std::fs::read(&back).unwrap(),
                &raw,
            );
        }
    }
}
