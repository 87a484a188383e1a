//! Unit tests of VMDK descriptor files: flat, zero and sparse extents concatenated, unit
//! numbering across sparse extents, delta-link parents, descriptor wrappers, sniffing, and
//! one test per rejection rule.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::HashMap;

use super::*;
use crate::disk::SharedImages;
use crate::disk::testutil::{check_tiling, disk_err, flat, noise};
use crate::disk::vmdk_writer::{StreamWriterOptions, write_stream_optimized};
use crate::io::budget::Budget;

/// A package of named files for the resolver.
struct Files(HashMap<String, Arc<dyn ReadAt>>);

impl Files {
    fn new(files: &[(&str, Vec<u8>)]) -> Self {
        Files(
            files
                .iter()
                .map(|(n, b)| (n.to_string(), Arc::new(b.clone()) as Arc<dyn ReadAt>))
                .collect(),
        )
    }

    fn open(&self, text: &str) -> Result<DescriptorVmdk> {
        let resolver = |n: &str| self.0.get(n).map(|d| (n.to_string(), d.clone()));
        let budget = Budget::default_metadata();
        let shared = SharedImages::new();
        let ctx = OpenContext::new(&resolver, &budget, &shared);
        DescriptorVmdk::open(&text.as_bytes().to_vec(), &ctx)
    }
}

fn stream(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_stream_optimized(&raw.to_vec(), &mut out, &StreamWriterOptions::default()).unwrap();
    out
}

fn d_err<T>(r: Result<T>) -> DescriptorError {
    match disk_err(r) {
        DiskError::VmdkDescriptor(e) => e,
        other => panic!("expected a descriptor error, got {other:?}"),
    }
}

const HEAD: &str = "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n";

#[test]
fn flat_zero_and_sparse_extents_are_concatenated() {
    let flat_file = noise(16 * 512, 1);
    let a = noise(300 * 512, 2);
    let b = noise(200 * 512, 3);
    let files = Files::new(&[
        ("d-flat.vmdk", flat_file.clone()),
        ("d-s001.vmdk", stream(&a)),
        ("d-s002.vmdk", stream(&b)),
    ]);
    let text = format!(
        "{HEAD}createType=\"custom\"\n# Extent description\n\
RW 8 FLAT \"d-flat.vmdk\" 4\nRW 10 ZERO\nRDONLY 300 SPARSE \"d-s001.vmdk\"\n\
rw 200 sparse \"d-s002.vmdk\"\n\n# The Disk Data Base\n#DDB\nddb.adapterType = \"ide\"\n"
    );
    let img = files.open(&text).unwrap();
    assert_eq!(img.format(), DiskFormat::VmdkDescriptor);
    assert_eq!(img.extent_count(), 4);
    let mut want = flat_file[4 * 512..12 * 512].to_vec();
    want.extend_from_slice(&[0u8; 10 * 512]);
    want.extend_from_slice(&a);
    want.extend_from_slice(&b);
    assert_eq!(img.virtual_size(), want.len() as u64);
    assert_eq!(flat(&img), want);
    check_tiling(&img, &want, None, 5);
    // Units of the second sparse extent come after all of the first's (300 sectors in
    // 64 KiB grains: 3 units).
    match img.map((8 + 10 + 300) * 512, 10).unwrap() {
        Extent::Unit { unit, .. } => assert_eq!(unit, 3),
        other => panic!("{other:?}"),
    }
    assert_eq!(img.unit_len(2), 300 * 512 - 2 * 65536);
    assert_eq!(img.unit_len(99), 0);
    let mut out = [0u8; 16];
    assert_eq!(
        d_err(img.decode_unit(99, &mut out)),
        DescriptorError::NoSuchUnit { unit: 99 }
    );
    assert!(img.parent().is_none());
}

#[test]
fn create_types_and_delta_links() {
    let files = Files::new(&[("x-flat.vmdk", noise(4096, 1))]);
    for (ct, want) in [
        ("monolithicFlat", DiskFormat::VmdkMonolithicFlat),
        ("twoGbMaxExtentFlat", DiskFormat::VmdkTwoGbMaxExtentFlat),
        ("2GbMaxExtentSparse", DiskFormat::VmdkTwoGbMaxExtentSparse),
        ("vmfs", DiskFormat::VmdkVmfs),
        ("vmfsThin", DiskFormat::VmdkVmfs),
        ("custom", DiskFormat::VmdkDescriptor),
    ] {
        let text = format!("{HEAD}createType=\"{ct}\"\r\nRW 8 VMFS \"x-flat.vmdk\"\r\n");
        let img = files.open(&text).unwrap();
        assert_eq!(img.format(), want, "{ct}");
        assert_eq!(img.create_type(), Some(ct));
    }
    let text = "# Disk DescriptorFile\nversion=1\nparentCID=12345678\n\
parentFileNameHint=\"C:\\VMs\\base.vmdk\"\nRW 8 FLAT \"x-flat.vmdk\" 0\n";
    let p = files.open(text).unwrap().parent().unwrap();
    assert_eq!(p.names, vec!["C:\\VMs\\base.vmdk".to_string()]);
    assert_eq!(p.candidates(), vec!["base.vmdk".to_string()]);
}

#[test]
fn extent_rules() {
    let files = Files::new(&[
        ("f.vmdk", noise(4096, 1)),
        ("s.vmdk", stream(&noise(4096, 2))),
        ("junk.vmdk", vec![0u8; 1024]),
    ]);
    assert_eq!(
        d_err(files.open(&format!("{HEAD}RW 8 FLAT \"missing.vmdk\" 0\n"))),
        DescriptorError::MissingExtent {
            name: "missing.vmdk".into()
        }
    );
    assert_eq!(
        d_err(files.open(&format!("{HEAD}RW 9 FLAT \"f.vmdk\" 0\n"))),
        DescriptorError::FlatExtentTooShort {
            name: "f.vmdk".into(),
            needed_bytes: 9 * 512,
            len_bytes: 4096
        }
    );
    assert_eq!(
        d_err(files.open(&format!("{HEAD}RW 8 FLAT \"f.vmdk\" 1\n"))),
        DescriptorError::FlatExtentTooShort {
            name: "f.vmdk".into(),
            needed_bytes: 9 * 512,
            len_bytes: 4096
        }
    );
    assert!(matches!(
        d_err(files.open(&format!("{HEAD}RW 8 FLAT \"f.vmdk\" 36028797018963967\n"))),
        DescriptorError::FlatExtentTooShort { .. }
    ));
    assert_eq!(
        d_err(files.open(&format!("{HEAD}RW 16 SPARSE \"s.vmdk\"\n"))),
        DescriptorError::SparseExtentTooSmall {
            name: "s.vmdk".into(),
            capacity_sectors: 8,
            needed_sectors: 16
        }
    );
    // A sparse extent that is not a VMDK: the VMDK error, with the extent named.
    let e = files
        .open(&format!("{HEAD}RW 8 SPARSE \"junk.vmdk\"\n"))
        .unwrap_err();
    assert!(e.to_string().contains("junk.vmdk"), "{e}");
    for (line, access, ty) in [
        ("RW 8 VMFSSPARSE \"f.vmdk\"", "RW", "VMFSSPARSE"),
        ("RW 8 SESPARSE \"f.vmdk\"", "RW", "SESPARSE"),
        ("RW 8 VMFSRDM \"f.vmdk\"", "RW", "VMFSRDM"),
        ("NOACCESS 8 FLAT \"f.vmdk\" 0", "NOACCESS", "FLAT"),
    ] {
        assert_eq!(
            d_err(files.open(&format!("{HEAD}{line}\n"))),
            DescriptorError::UnsupportedExtent {
                index: 0,
                access: access.into(),
                extent_type: ty.into()
            }
        );
    }
    for (line, why) in [
        ("RW 8 FLAT \"f.vmdk\"", "FLAT extent without an offset"),
        ("RW 0 FLAT \"f.vmdk\" 0", "extent size is 0 or too large"),
        ("RW 8 FLAT", "no file name"),
    ] {
        assert_eq!(
            d_err(files.open(&format!("{HEAD}{line}\n"))),
            DescriptorError::BadExtentLine {
                line_no: 5,
                line: why.into()
            }
        );
    }
    for line in ["RW lots FLAT \"f.vmdk\" 0", "RW 8 FLAT \"unterminated"] {
        assert_eq!(
            d_err(files.open(&format!("{HEAD}{line}\n"))),
            DescriptorError::BadExtentLine {
                line_no: 5,
                line: line.into()
            }
        );
    }
    assert_eq!(d_err(files.open(HEAD)), DescriptorError::NoExtents);
    // 2^40 sectors of zeros, twice: more than the largest disk.
    assert_eq!(
        d_err(files.open(&format!(
            "{HEAD}RW 137438953472 ZERO\nRW 137438953472 ZERO\n"
        ))),
        DescriptorError::SizeTooLarge {
            limit_bytes: MAX_VIRTUAL_BYTES
        }
    );
    let big = vec![b'#'; MAX_DESCRIPTOR_BYTES as usize + 1];
    let resolver = |_: &str| None;
    let budget = Budget::default_metadata();
    let shared = SharedImages::new();
    let ctx = OpenContext::new(&resolver, &budget, &shared);
    assert_eq!(
        d_err(DescriptorVmdk::open(&big, &ctx)),
        DescriptorError::TooLarge {
            len_bytes: MAX_DESCRIPTOR_BYTES + 1,
            limit_bytes: MAX_DESCRIPTOR_BYTES
        }
    );
    let img = files.open(&format!("{HEAD}RW 8 ZERO\n")).unwrap();
    assert_eq!(
        d_err(img.map(4096, 1)),
        DescriptorError::MapOutOfRange {
            offset: 4096,
            max_len: 1,
            virtual_size: 4096
        }
    );
}

#[test]
fn descriptor_wrapper_in_a_sparse_header_is_read_like_a_descriptor_file() {
    use crate::disk::vmdk::header::*;
    let text = format!("{HEAD}createType=\"monolithicFlat\"\nRW 8 FLAT \"w-flat.vmdk\" 0\n");
    let mut bytes = SparseExtentHeader {
        magic_number: SPARSE_MAGIC,
        version: 1,
        flags: 3,
        capacity_sectors: 0,
        grain_sectors: 128,
        descriptor_offset_sectors: 1,
        descriptor_size_sectors: 2,
        num_gtes_per_gt: 512,
        rgd_offset_sectors: 0,
        gd_offset_sectors: 0,
        overhead_sectors: 3,
        unclean_shutdown: 0,
        newline_bytes: NEWLINE_BYTES,
        compress_algorithm: 0,
    }
    .encode()
    .to_vec();
    bytes.extend_from_slice(text.as_bytes());
    bytes.resize(3 * 512, 0);
    let data = noise(4096, 8);
    let files = Files::new(&[("w-flat.vmdk", data.clone())]);
    let resolver = |n: &str| files.0.get(n).map(|d| (n.to_string(), d.clone()));
    let budget = Budget::default_metadata();
    let shared = SharedImages::new();
    let ctx = OpenContext::new(&resolver, &budget, &shared);
    let img = crate::disk::open_with(Arc::new(bytes.clone()), &ctx).unwrap();
    assert_eq!(img.format(), DiskFormat::VmdkMonolithicFlat);
    assert_eq!(flat(&*img), data);
    // Without the extent: refused, naming it.
    let e = crate::disk::open(Arc::new(bytes)).err().unwrap();
    assert!(e.to_string().contains("w-flat.vmdk"), "{e}");
}

#[test]
fn descriptor_sniffing() {
    assert!(looks_like_descriptor(b"# Disk DescriptorFile\nversion=1\n"));
    assert!(looks_like_descriptor(b"# Disk Descriptor File"));
    assert!(looks_like_descriptor(b"#x\n\n  \nversion=3\n"));
    assert!(!looks_like_descriptor(b"version=4\n"));
    assert!(!looks_like_descriptor(b"#x\nversion=1")); // cut before the line ends
    assert!(!looks_like_descriptor(b"RW 8 FLAT \"x\" 0\nversion=1\n"));
    assert!(!looks_like_descriptor(b""));
}

#[test]
fn an_extent_named_on_many_lines_is_opened_once_and_counted_once() {
    let a = noise(300 * 512, 4);
    let files = Files::new(&[("s.vmdk", stream(&a))]);
    let resolver = |n: &str| files.0.get(n).map(|d| (n.to_string(), d.clone()));
    let budget = Budget::default_metadata();
    let shared = SharedImages::new();
    let ctx = OpenContext::new(&resolver, &budget, &shared);
    let one =
        DescriptorVmdk::from_text(format!("{HEAD}RW 300 SPARSE \"s.vmdk\"\n").as_bytes(), &ctx)
            .unwrap();
    let after_one = budget.used();
    let many = format!("{HEAD}{}", "RW 300 SPARSE \"s.vmdk\"\n".repeat(1000));
    let img = DescriptorVmdk::from_text(many.as_bytes(), &ctx).unwrap();
    assert_eq!(shared.len(), 1, "one parse of s.vmdk");
    let images: Vec<&Arc<SparseVmdk>> = img
        .parts
        .iter()
        .filter_map(|p| match p {
            Part::Sparse { image, .. } => Some(image),
            _ => None,
        })
        .collect();
    assert_eq!(images.len(), 1000);
    assert!(images.iter().all(|i| Arc::ptr_eq(i, images[0])));
    // The second descriptor adds only its extent list, not 1000 grain directories.
    assert!(budget.used() - after_one <= 1000 * EXTENT_ENTRY_BYTES);
    // Every line reads the same bytes; the last unit decodes through the binary search.
    let mut want = Vec::new();
    for _ in 0..1000 {
        want.extend_from_slice(&a);
    }
    assert_eq!(flat(&img), want);
    drop(one);
}

#[test]
fn tables_beyond_the_metadata_budget_are_refused_by_name() {
    let files = Files::new(&[("s.vmdk", stream(&noise(300 * 512, 5)))]);
    let resolver = |n: &str| files.0.get(n).map(|d| (n.to_string(), d.clone()));
    let budget = Budget::new(crate::io::budget::BudgetKind::Metadata, 1024);
    let shared = SharedImages::new();
    let ctx = OpenContext::new(&resolver, &budget, &shared);
    let e = DescriptorVmdk::from_text(format!("{HEAD}RW 300 SPARSE \"s.vmdk\"\n").as_bytes(), &ctx)
        .unwrap_err();
    assert!(
        matches!(e.kind(), crate::error::ErrorKind::BudgetExceeded { .. }),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("s.vmdk") && msg.contains("metadata_limit"),
        "{msg}"
    );
}
