//! The stream-optimized re-encoder (`disk::vmdk_reencode`, issue 11 deliverable 3) judged by
//! qemu-img and by a layout checker written here from the VMDK 5.0 technote
//! (docs/formats.md §4.5) and VirtualBox's reading rules (§4.7, §6 rules 15-21).
//!
//! Every case re-encodes a base (made by qemu-img, by ovafs's writer, or in another format)
//! against new flat content and requires: `qemu-img check` clean; `qemu-img convert -O raw`
//! of the output has the SHA-256 of the intended flat content; the checker accepts the
//! layout field by field; grains that did not change have the same stored bytes as in the
//! base. The checker is also run on qemu-img's own stream (another layout, accepted with
//! its differences listed).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use common::vmdk_layout::{Layout, check_layout};
use common::{
    Rng, path_str, qemu_img, qemu_to_raw, raw_to_format, scattered_raw, sha256_file, to_stream_vmdk,
};
use ovafs::disk::vmdk::{SparseVmdk, StoredGrain};
use ovafs::disk::vmdk_reencode::{
    Base, ReencodeOptions, ReencodeReport, reencode_stream_optimized,
};
use ovafs::disk::vmdk_writer::{StreamWriterOptions, write_stream_optimized};
use ovafs::io::{FileSource, ReadAt};

const GRAIN: u64 = 64 << 10;
const SECTOR: u64 = 512;

fn open_vmdk(path: &Path) -> SparseVmdk {
    SparseVmdk::open(Arc::new(FileSource::open(path).unwrap())).unwrap()
}

/// Each grain's stored compressed bytes (None when not stored).
fn stored_grains(path: &Path) -> Vec<Option<Vec<u8>>> {
    let v = open_vmdk(path);
    let mut buf = Vec::new();
    (0..v.geometry().grains)
        .map(|g| match v.stored_grain(g, &mut buf).unwrap() {
            StoredGrain::Compressed { .. } => Some(buf.clone()),
            _ => None,
        })
        .collect()
}

/// Re-encodes `flat` over `base` into `out` with `changed`, then judges the output: qemu-img
/// check, qemu-img's raw equals `flat` (SHA-256), and the layout checker.
fn reencode(
    base: Option<&Path>,
    flat: &Path,
    changed: &(dyn Fn(u64) -> bool + Sync),
    out: &Path,
    threads: usize,
) -> (ReencodeReport, Layout) {
    let vmdk = base.map(open_vmdk);
    let base = vmdk.as_ref().map_or(Base::Other, Base::Vmdk);
    let src = FileSource::open(flat).unwrap();
    let mut file = std::io::BufWriter::new(File::create(out).unwrap());
    let opts = ReencodeOptions {
        threads,
        ..ReencodeOptions::default()
    };
    let mut last = None;
    let report = reencode_stream_optimized(base, &src, changed, &mut file, &opts, &mut |p| {
        last = Some(p)
    })
    .unwrap();
    std::io::Write::flush(&mut file).unwrap();
    drop(file);
    let progress = last.unwrap();
    assert_eq!(
        progress.grains_done, progress.grains,
        "progress reaches the end"
    );
    assert_eq!(report.bytes_written, std::fs::metadata(out).unwrap().len());
    assert_eq!(report.capacity_bytes, src.len());
    qemu_img(&["check", path_str(out)]);
    let back = out.with_extension("back.raw");
    qemu_to_raw(out, "vmdk", &back);
    assert_eq!(
        sha256_file(&back),
        sha256_file(flat),
        "qemu-img's raw of the output"
    );
    std::fs::remove_file(&back).unwrap();
    let layout = check_layout(out);
    assert!(
        layout.vmware,
        "not VMware's layout: {:?}",
        layout.differences
    );
    let g = layout.header.grain_size * SECTOR;
    let populated: u64 = layout
        .grains
        .iter()
        .map(|&(grain, _, _)| g.min(src.len() - grain * g))
        .sum();
    assert_eq!(report.populated_bytes, populated);
    assert_eq!(
        report.grains_copied + report.grains_deflated,
        layout.grains.len() as u64
    );
    assert_eq!(
        report.grains_copied + report.grains_deflated + report.grains_omitted,
        src.len().div_ceil(g)
    );
    (report, layout)
}

/// Overwrites `len` bytes at `offset` of `path` with compressible noise from `seed`.
fn scribble(path: &Path, offset: u64, len: usize, seed: u64) {
    let mut buf = vec![0u8; len];
    Rng::new(seed).fill(&mut buf);
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(&buf, offset)
        .unwrap();
}

fn zero(path: &Path, offset: u64, len: usize) {
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(&vec![0u8; len], offset)
        .unwrap();
}

/// A disk of 40 MiB + 3 sectors (two grain tables, a partial last grain) with data
/// scattered over it, and qemu-img's stream of it.
fn qemu_base(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let raw = dir.join("base.raw");
    let vmdk = dir.join("base.vmdk");
    scattered_raw(&raw, (40 << 20) + 3 * SECTOR, 60, 11);
    to_stream_vmdk(&raw, &vmdk);
    (raw, vmdk)
}

fn copy(from: &Path, to: &Path) -> std::path::PathBuf {
    std::fs::copy(from, to).unwrap();
    to.to_path_buf()
}

// ---------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------

#[test]
fn the_checker_accepts_qemu_imgs_own_stream_and_names_what_differs() {
    let dir = common::tempdir();
    let (_, vmdk) = qemu_base(dir.path());
    let layout = check_layout(&vmdk);
    assert!(!layout.vmware);
    let d = layout.differences.join("; ");
    for expected in [
        "flags 0x30003",
        "gdOffset in the header",
        "no GD marker",
        "no GT markers",
    ] {
        assert!(d.contains(expected), "{expected:?} not in {d}");
    }
    eprintln!("qemu-img stream vs VMware's layout: {d}");
}

#[test]
fn an_unchanged_qemu_disk_copies_every_grain_verbatim() {
    let dir = common::tempdir();
    let (raw, vmdk) = qemu_base(dir.path());
    let out = dir.path().join("out.vmdk");
    let (report, _) = reencode(Some(&vmdk), &raw, &|_| false, &out, 2);
    // Only the partial last grain (stored short by qemu-img) is deflated again.
    assert_eq!(report.grains_deflated, 1);
    let (mut a, mut b) = (stored_grains(&vmdk), stored_grains(&out));
    a.pop();
    b.pop();
    let copied = b.iter().flatten().count() as u64;
    assert_eq!(report.grains_copied, copied);
    for (g, (a, b)) in a.iter().zip(&b).enumerate() {
        if let Some(b) = b {
            assert_eq!(Some(b), a.as_ref(), "grain {g}'s stored bytes");
        }
    }
    // qemu-img writes its zero grains; they are omitted (and only they).
    assert!(a.iter().flatten().count() as u64 >= copied);
    // Nothing changed: the descriptor keeps its CID.
    assert_eq!(
        open_vmdk(&out).descriptor().unwrap().cid,
        open_vmdk(&vmdk).descriptor().unwrap().cid
    );
}

#[test]
fn an_unchanged_disk_of_ovafs_s_writer_is_rewritten_byte_for_byte() {
    let dir = common::tempdir();
    let raw = dir.path().join("base.raw");
    scattered_raw(&raw, (33 << 20) + 5 * SECTOR, 40, 5);
    let vmdk = dir.path().join("base.vmdk");
    let mut f = File::create(&vmdk).unwrap();
    write_stream_optimized(
        &FileSource::open(&raw).unwrap(),
        &mut f,
        &StreamWriterOptions::default(),
    )
    .unwrap();
    drop(f);
    let out = dir.path().join("out.vmdk");
    let (report, _) = reencode(Some(&vmdk), &raw, &|_| false, &out, 3);
    // Every grain copied but the partial last one, deflated again to the same bytes.
    assert_eq!(report.grains_deflated, 1);
    common::assert_same_bytes(&vmdk, &out);
}

#[test]
fn a_one_grain_change_rewrites_exactly_that_grain() {
    let dir = common::tempdir();
    let (raw, vmdk) = qemu_base(dir.path());
    let flat = copy(&raw, &dir.path().join("new.raw"));
    let grain = 517; // in the second grain table
    scribble(&flat, grain * GRAIN + 1000, 3000, 99);
    let out = dir.path().join("out.vmdk");
    let (report, _) = reencode(Some(&vmdk), &flat, &|g| g == grain, &out, 2);
    assert_eq!(
        report.grains_deflated, 2,
        "the changed grain and the partial last one"
    );
    let (mut a, mut b) = (stored_grains(&vmdk), stored_grains(&out));
    a.pop();
    b.pop();
    for (g, (a, b)) in a.iter().zip(&b).enumerate() {
        if g as u64 == grain {
            assert!(b.is_some() && a != b, "the changed grain is new");
        } else if let Some(b) = b {
            assert_eq!(Some(b), a.as_ref(), "grain {g} copied");
        }
    }
    let (old, new) = (open_vmdk(&vmdk), open_vmdk(&out));
    assert_ne!(
        old.descriptor().unwrap().cid,
        new.descriptor().unwrap().cid,
        "a new CID"
    );
    assert_eq!(new.descriptor().unwrap().parent_cid, Some(u32::MAX));
}

#[test]
fn a_change_of_everything_deflates_every_grain() {
    let dir = common::tempdir();
    let (raw, vmdk) = qemu_base(dir.path());
    let flat = dir.path().join("new.raw");
    scattered_raw(&flat, std::fs::metadata(&raw).unwrap().len(), 80, 12345);
    let out = dir.path().join("out.vmdk");
    let (report, _) = reencode(Some(&vmdk), &flat, &|_| true, &out, 2);
    assert_eq!(report.grains_copied, 0);
    assert!(report.grains_deflated > 100);
}

#[test]
fn grains_changed_to_zero_are_omitted_and_the_file_shrinks() {
    let dir = common::tempdir();
    let (raw, vmdk) = qemu_base(dir.path());
    let flat = copy(&raw, &dir.path().join("new.raw"));
    let before = stored_grains(&vmdk);
    let data: Vec<u64> = (0..before.len() as u64)
        .filter(|&g| before[g as usize].as_ref().is_some_and(|b| b.len() > 1024))
        .collect();
    let zeroed: Vec<u64> = data.iter().copied().step_by(2).collect();
    for &g in &zeroed {
        zero(&flat, g * GRAIN, GRAIN as usize);
    }
    let out = dir.path().join("out.vmdk");
    let (report, layout) = reencode(Some(&vmdk), &flat, &|g| zeroed.contains(&g), &out, 2);
    assert_eq!(
        report.grains_deflated, 1,
        "only the partial last grain is deflated"
    );
    for &g in &zeroed {
        assert!(
            layout.grains.iter().all(|&(x, _, _)| x != g),
            "grain {g} omitted"
        );
    }
    let (old, new) = (
        std::fs::metadata(&vmdk).unwrap().len(),
        report.bytes_written,
    );
    assert!(new < old, "{new} < {old}");
}

#[test]
fn a_grown_disk_gets_its_new_capacity_in_header_and_descriptor() {
    let dir = common::tempdir();
    let (raw, vmdk) = qemu_base(dir.path());
    let flat = copy(&raw, &dir.path().join("new.raw"));
    let old_len = std::fs::metadata(&raw).unwrap().len();
    let new_len = (45 << 20) + 7 * SECTOR;
    File::options()
        .write(true)
        .open(&flat)
        .unwrap()
        .set_len(new_len)
        .unwrap();
    scribble(&flat, old_len - 100, 5000, 7); // across the old end
    scribble(&flat, new_len - 2000, 2000, 8); // in the new partial last grain
    let first_new = (old_len - 100) / GRAIN;
    let out = dir.path().join("out.vmdk");
    let changed = |g: u64| g >= first_new;
    let (report, layout) = reencode(Some(&vmdk), &flat, &changed, &out, 2);
    assert_eq!(layout.header.capacity, new_len / SECTOR);
    assert!(report.grains_copied > 0);
    let new = open_vmdk(&out);
    assert_eq!(new.extent_lines()[0].size_sectors, new_len / SECTOR);
    let info = String::from_utf8(qemu_img(&["info", path_str(&out)]).stdout).unwrap();
    assert!(info.contains(&format!("({new_len} bytes)")), "{info}");
}

#[test]
fn a_partial_last_grain_is_always_deflated_whole() {
    // qemu-img stores a partial last grain short; VirtualBox inflates whole grains only, so
    // the re-encoder deflates the last grain from the flat content, padded to a grain (the
    // checker asserts every grain inflates to a whole grain).
    let dir = common::tempdir();
    let (raw, vmdk) = qemu_base(dir.path());
    let grains = std::fs::metadata(&raw).unwrap().len().div_ceil(GRAIN);
    let last = grains - 1;
    let before = stored_grains(&vmdk);
    assert!(
        before[last as usize].is_some(),
        "the fixture has data in its last grain"
    );
    let out = dir.path().join("same.vmdk");
    let (report, _) = reencode(Some(&vmdk), &raw, &|_| false, &out, 1);
    assert_eq!(report.grains_deflated, 1);
    assert_ne!(stored_grains(&out)[last as usize], before[last as usize]);
    let flat = copy(&raw, &dir.path().join("new.raw"));
    scribble(&flat, last * GRAIN + 10, 600, 4);
    let out = dir.path().join("changed.vmdk");
    let (report, _) = reencode(Some(&vmdk), &flat, &|g| g == last, &out, 2);
    assert_eq!(report.grains_deflated, 1);
}

#[test]
fn a_qcow2_base_is_deflated_from_the_flat_content() {
    let dir = common::tempdir();
    let (raw, _) = qemu_base(dir.path());
    let qcow = dir.path().join("base.qcow2");
    raw_to_format(&raw, "qcow2", &qcow);
    let flat = dir.path().join("flat.raw");
    qemu_to_raw(&qcow, "qcow2", &flat);
    let out = dir.path().join("out.vmdk");
    let (report, _) = reencode(None, &flat, &|_| false, &out, 2);
    assert_eq!(report.grains_copied, 0);
    assert!(report.grains_deflated > 0 && report.grains_omitted > 0);
    assert_eq!(
        open_vmdk(&out).extent_lines()[0].file_name.as_deref(),
        Some("disk.vmdk")
    );
}

#[test]
fn a_vhd_base_and_a_monolithic_sparse_base_are_deflated_too() {
    let dir = common::tempdir();
    let (raw, _) = qemu_base(dir.path());
    // VHD: qemu's vpc rounds the size to its CHS geometry; the flat content is its raw.
    let vhd = dir.path().join("base.vhd");
    raw_to_format(&raw, "vpc", &vhd);
    let flat = dir.path().join("flat.raw");
    qemu_to_raw(&vhd, "vpc", &flat);
    reencode(None, &flat, &|_| false, &dir.path().join("vhd.vmdk"), 2);
    // monolithicSparse: uncompressed grains are deflated, absent ones omitted without
    // reading; createType becomes streamOptimized.
    let sparse = dir.path().join("sparse.vmdk");
    raw_to_format(&raw, "vmdk", &sparse);
    let out = dir.path().join("out.vmdk");
    let (report, _) = reencode(Some(&sparse), &raw, &|_| false, &out, 2);
    assert_eq!(report.grains_copied, 0);
    assert!(report.grains_deflated > 0);
    assert_eq!(open_vmdk(&out).create_type(), Some("streamOptimized"));
}

#[test]
fn a_vmdk_base_without_an_embedded_descriptor_gets_a_fresh_one() {
    let dir = common::tempdir();
    let raw = dir.path().join("base.raw");
    scattered_raw(&raw, 4 << 20, 5, 9);
    let vmdk = dir.path().join("base.vmdk");
    let mut f = File::create(&vmdk).unwrap();
    write_stream_optimized(
        &FileSource::open(&raw).unwrap(),
        &mut f,
        &StreamWriterOptions::default(),
    )
    .unwrap();
    // descriptorOffset = 0 in the header: no embedded descriptor.
    f.write_all_at(&0u64.to_le_bytes(), 28).unwrap();
    drop(f);
    assert!(open_vmdk(&vmdk).descriptor().is_none());
    let out = dir.path().join("out.vmdk");
    let (report, _) = reencode(Some(&vmdk), &raw, &|_| false, &out, 2);
    assert!(report.grains_copied > 0);
    let new = open_vmdk(&out);
    assert_eq!(new.create_type(), Some("streamOptimized"));
    assert_eq!(new.descriptor().unwrap().cid, Some(report.cid));
}
