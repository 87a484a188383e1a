//! Unit tests of the qcow2 reader, with images laid out here from qcow2.txt: standard,
//! zero, unallocated, deflate- and zstd-compressed clusters, extended L2 subclusters,
//! backing file names and formats, the partial last cluster, and one test per rejection
//! rule with the exact error.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use libdeflater::{CompressionLvl, Compressor};

use super::*;
use crate::disk::testutil::{check_tiling, disk_err, flat, flat_with_parent, noise};

/// What one guest cluster holds.
#[derive(Clone)]
enum C {
    /// Stored verbatim (the cluster's data).
    Data(Vec<u8>),
    /// Zero flag.
    Zero,
    /// Compressed (the cluster's data, padded to a cluster when partial).
    Deflate(Vec<u8>),
    /// zstd-compressed.
    Zstd(Vec<u8>),
    /// Extended L2: data (if any) and the subcluster bitmap.
    Ext(Option<Vec<u8>>, u64),
}

/// How to lay an image out: header in cluster 0, L1 in cluster 1, one L2 table per L1
/// entry used, then data clusters, then compressed bytes packed back to back.
struct Q {
    version: u32,
    cluster_bits: u32,
    size: u64,
    clusters: Vec<(u64, C)>,
    extended_l2: bool,
    backing: Option<(&'static str, Option<&'static str>)>,
    zstd: bool,
}

impl Q {
    fn new(cluster_bits: u32, size: u64) -> Self {
        Q {
            version: 3,
            cluster_bits,
            size,
            clusters: Vec::new(),
            extended_l2: false,
            backing: None,
            zstd: false,
        }
    }

    fn header(&self, l1_size: u32) -> QcowHeader {
        let mut incompat = 0;
        if self.extended_l2 {
            incompat |= INCOMPAT_EXTL2;
        }
        if self.zstd {
            incompat |= INCOMPAT_COMPRESSION;
        }
        QcowHeader {
            magic: MAGIC,
            version: self.version,
            backing_file_offset: 0,
            backing_file_size: 0,
            cluster_bits: self.cluster_bits,
            size: self.size,
            crypt_method: 0,
            l1_size,
            l1_table_offset: 1 << self.cluster_bits,
            refcount_table_offset: 0,
            refcount_table_clusters: 0,
            nb_snapshots: 0,
            snapshots_offset: 0,
            incompatible_features: if self.version >= 3 { incompat } else { 0 },
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: 4,
            header_length: if self.version >= 3 { 112 } else { 72 },
            compression_type: u8::from(self.zstd),
        }
    }

    fn build(&self) -> Vec<u8> {
        let cb = 1u64 << self.cluster_bits;
        let l2_entries = cb / if self.extended_l2 { 16 } else { 8 };
        let l1_size = self.size.div_ceil(cb * l2_entries).max(1);
        let mut tables: Vec<u64> = self.clusters.iter().map(|(c, _)| c / l2_entries).collect();
        tables.sort_unstable();
        tables.dedup();
        let mut out = vec![0u8; (2 * cb) as usize];
        let l2_at: Vec<(u64, u64)> = tables
            .iter()
            .map(|&t| {
                let at = out.len() as u64;
                out.resize(out.len() + cb as usize, 0);
                (t, at)
            })
            .collect();
        for (t, at) in &l2_at {
            let e = at | (1 << 63);
            out[(cb + t * 8) as usize..(cb + t * 8 + 8) as usize].copy_from_slice(&e.to_be_bytes());
        }
        let mut compressed: Vec<(u64, Vec<u8>)> = Vec::new();
        for (c, what) in &self.clusters {
            let at = l2_at.iter().find(|(t, _)| *t == c / l2_entries).unwrap().1;
            let slot = at + (c % l2_entries) * if self.extended_l2 { 16 } else { 8 };
            let (entry, bitmap) = match what {
                C::Data(d) => {
                    let host = out.len() as u64;
                    let mut d = d.clone();
                    d.resize(cb as usize, 0);
                    out.extend_from_slice(&d);
                    (host | (1 << 63), 0)
                }
                C::Zero => (L2_ZERO, 0),
                C::Ext(data, bitmap) => match data {
                    Some(d) => {
                        let host = out.len() as u64;
                        let mut d = d.clone();
                        d.resize(cb as usize, 0);
                        out.extend_from_slice(&d);
                        (host, *bitmap)
                    }
                    None => (0, *bitmap),
                },
                C::Deflate(d) | C::Zstd(d) => {
                    let mut d = d.clone();
                    d.resize(cb as usize, 0);
                    let z = if matches!(what, C::Zstd(_)) {
                        ruzstd::encoding::compress_to_vec(
                            &d[..],
                            ruzstd::encoding::CompressionLevel::Fastest,
                        )
                    } else {
                        let mut comp = Compressor::new(CompressionLvl::default());
                        let mut z = vec![0u8; comp.deflate_compress_bound(d.len())];
                        let n = comp.deflate_compress(&d, &mut z).unwrap();
                        z.truncate(n);
                        z
                    };
                    compressed.push((slot, z));
                    continue;
                }
            };
            out[slot as usize..slot as usize + 8].copy_from_slice(&entry.to_be_bytes());
            if self.extended_l2 {
                out[slot as usize + 8..slot as usize + 16].copy_from_slice(&bitmap.to_be_bytes());
            }
        }
        // Compressed clusters packed at unaligned offsets, as qemu writes them; the last one
        // ends mid-sector, so its sector count runs past the end of the file.
        out.extend_from_slice(&[0xEE; 100]);
        let shift = 62 - (self.cluster_bits - 8);
        for (slot, z) in compressed {
            let host = out.len() as u64;
            let sectors = (host % 512 + z.len() as u64).div_ceil(512);
            out.extend_from_slice(&z);
            let e = L2_COMPRESSED | host | ((sectors - 1) << shift);
            out[slot as usize..slot as usize + 8].copy_from_slice(&e.to_be_bytes());
        }
        let mut h = self.header(l1_size as u32);
        let mut at = 112usize;
        if let Some((name, fmt)) = self.backing {
            if let Some(fmt) = fmt {
                out[at..at + 4].copy_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
                out[at + 4..at + 8].copy_from_slice(&(fmt.len() as u32).to_be_bytes());
                out[at + 8..at + 8 + fmt.len()].copy_from_slice(fmt.as_bytes());
                at += 8 + fmt.len().next_multiple_of(8);
            }
            at += 8; // end-of-extensions marker (zeros)
            h.backing_file_offset = at as u64;
            h.backing_file_size = name.len() as u32;
            out[at..at + name.len()].copy_from_slice(name.as_bytes());
        }
        let hb = h.encode();
        let hl = if self.version >= 3 { 112 } else { 72 };
        out[..hl].copy_from_slice(&hb[..hl]);
        out
    }
}

fn open(bytes: Vec<u8>) -> Result<Qcow2> {
    Qcow2::open(Arc::new(bytes))
}

fn q_err<T>(r: Result<T>) -> Qcow2Error {
    match disk_err(r) {
        DiskError::Qcow2(e) => e,
        other => panic!("expected a qcow2 error, got {other:?}"),
    }
}

/// The expected flat image of `q`.
fn expected(q: &Q, parent: Option<&[u8]>) -> Vec<u8> {
    let cb = 1usize << q.cluster_bits;
    let mut v = match parent {
        Some(p) => {
            let mut v = p.to_vec();
            v.resize(q.size as usize, 0);
            v
        }
        None => vec![0u8; q.size as usize],
    };
    for (c, what) in &q.clusters {
        let start = *c as usize * cb;
        let end = (start + cb).min(v.len());
        match what {
            C::Data(d) | C::Deflate(d) | C::Zstd(d) => {
                let mut d = d.clone();
                d.resize(cb, 0);
                v[start..end].copy_from_slice(&d[..end - start]);
            }
            C::Zero => v[start..end].fill(0),
            C::Ext(data, bitmap) => {
                let sc = cb / 32;
                for i in 0..32 {
                    let s = start + i * sc;
                    if s >= end {
                        break;
                    }
                    let e = (s + sc).min(end);
                    if bitmap >> (32 + i) & 1 == 1 {
                        v[s..e].fill(0);
                    } else if bitmap >> i & 1 == 1 {
                        let d = data.as_ref().unwrap();
                        v[s..e].copy_from_slice(&d[i * sc..i * sc + (e - s)]);
                    }
                }
            }
        }
    }
    v
}

// ---------------------------------------------------------------------------------------

#[test]
fn header_round_trip_and_field_offsets() {
    let q = Q::new(16, 1 << 30);
    let h = q.header(2);
    let b = h.encode();
    assert_eq!(&b[0..4], b"QFI\xfb");
    assert_eq!(&b[20..24], &16u32.to_be_bytes()); // cluster_bits
    assert_eq!(&b[24..32], &(1u64 << 30).to_be_bytes()); // size
    assert_eq!(&b[100..104], &112u32.to_be_bytes()); // header_length
    assert_eq!(QcowHeader::parse(&b), h);
    assert_eq!(h.validate().unwrap(), 65536);
}

#[test]
fn standard_zero_unallocated_and_compressed_clusters() {
    for version in [2, 3] {
        for zstd in [false, true] {
            if version == 2 && zstd {
                continue;
            }
            let mut q = Q::new(9, 40 * 512 + 100); // 41 clusters, the last partial
            q.version = version;
            q.zstd = zstd;
            q.clusters = vec![
                (0, C::Data(noise(512, 1))),
                (1, C::Data(noise(512, 2))), // contiguous with cluster 0
                (3, C::Zero),
                (5, C::Deflate(noise(512, 3))),
                (6, C::Deflate(vec![b'a'; 512])),
                (39, C::Data(noise(512, 4))), // in the second L2 table (64 entries each)
                (40, C::Deflate(noise(100, 5))), // partial last cluster, compressed whole
            ];
            if zstd {
                q.clusters[3].1 = C::Zstd(noise(512, 3));
                q.clusters[4].1 = C::Zstd(vec![b'a'; 512]);
                q.clusters[6].1 = C::Zstd(noise(100, 5));
            }
            let img = open(q.build()).unwrap();
            let want = expected(&q, None);
            assert_eq!(flat(&img), want, "v{version} zstd={zstd}");
            check_tiling(&img, &want, None, 11);
            assert_eq!(img.format(), DiskFormat::Qcow2);
            assert!(img.parent().is_none());
            // Clusters 0 and 1 are stored back to back: one extent.
            assert!(matches!(
                img.map(0, 4096).unwrap(),
                Extent::Stored { len: 1024, .. }
            ));
            assert_eq!(
                img.map(1024, 4096).unwrap(),
                Extent::Unallocated { len: 512 }
            );
            assert_eq!(img.map(3 * 512, 4096).unwrap(), Extent::Zero { len: 512 });
            assert_eq!(
                img.map(5 * 512 + 7, 4096).unwrap(),
                Extent::Unit {
                    unit: 5,
                    offset_in_unit: 7,
                    len: 505
                }
            );
            assert_eq!(img.unit_len(40), 100);
        }
    }
}

#[test]
fn unallocated_l1_entries_span_their_whole_table() {
    let mut q = Q::new(9, 1 << 20); // 64 clusters per L2 table (32 KiB)
    q.clusters = vec![(200, C::Data(noise(512, 1)))];
    let img = open(q.build()).unwrap();
    assert_eq!(
        img.map(100, 1 << 20).unwrap(),
        Extent::Unallocated { len: 32768 - 100 }
    );
    assert_eq!(flat(&img), expected(&q, None));
}

#[test]
fn backing_file_name_and_format_and_parent_show_through() {
    let mut q = Q::new(9, 8 * 512);
    q.backing = Some(("base.qcow2", Some("qcow2")));
    q.clusters = vec![(2, C::Data(noise(512, 1))), (3, C::Zero)];
    let img = open(q.build()).unwrap();
    assert_eq!(
        img.parent(),
        Some(ParentRef {
            names: vec!["base.qcow2".into()],
            format: Some("qcow2".into())
        })
    );
    let parent = noise(8 * 512, 9);
    let want = expected(&q, Some(&parent));
    assert_eq!(flat_with_parent(&img, Some(&parent)), want);
    // The zero flag hides the backing file; unallocated clusters show it.
    assert_eq!(&want[3 * 512..4 * 512], &[0u8; 512][..]);
    assert_eq!(&want[..1024], &parent[..1024]);
    // A backing file without a format extension.
    q.backing = Some(("../x/base.img", None));
    let p = open(q.build()).unwrap().parent().unwrap();
    assert_eq!((p.names[0].as_str(), p.format), ("../x/base.img", None));
}

#[test]
fn extended_l2_subclusters() {
    let mut q = Q::new(14, 3 << 14); // 16 KiB clusters, 512-byte subclusters
    q.extended_l2 = true;
    let alloc = 0b1011u64 | (1 << 31); // subclusters 0, 1, 3 and 31 stored
    let zero = (1u64 << 2 | 1 << 4) << 32; // 2 and 4 read as zeros
    q.clusters = vec![
        (0, C::Ext(Some(noise(16384, 1)), alloc | zero)),
        (1, C::Ext(None, 0b111 << 32)), // no host cluster, three zero subclusters
        (2, C::Deflate(noise(16384, 2))),
    ];
    let img = open(q.build()).unwrap();
    let parent = noise(3 << 14, 5);
    let want = expected(&q, Some(&parent));
    assert_eq!(flat_with_parent(&img, Some(&parent)), want);
    check_tiling(&img, &want, Some(&parent), 3);
    assert!(matches!(
        img.map(0, 1 << 20).unwrap(),
        Extent::Stored { len: 1024, .. }
    ));
    assert_eq!(img.map(1024, 1 << 20).unwrap(), Extent::Zero { len: 512 });
    assert_eq!(
        img.map(5 * 512, 1 << 20).unwrap(),
        Extent::Unallocated { len: 26 * 512 }
    );

    // A subcluster both allocated and zero; allocation without a host cluster.
    for (data, bitmap) in [(Some(noise(16384, 1)), 1 | 1 << 32), (None, 1)] {
        let mut bad = Q::new(14, 1 << 14);
        bad.extended_l2 = true;
        bad.clusters = vec![(0, C::Ext(data, bitmap))];
        let img = open(bad.build()).unwrap();
        assert_eq!(
            q_err(img.map(0, 1)),
            Qcow2Error::InvalidSubclusterBitmap { cluster: 0, bitmap }
        );
    }
    // Extended L2 needs 16 KiB clusters.
    let mut small = Q::new(13, 1 << 13);
    small.extended_l2 = true;
    assert_eq!(
        q_err(open(small.build())),
        Qcow2Error::ExtendedL2ClusterTooSmall { cluster_bits: 13 }
    );
}

// ----- rejections ----------------------------------------------------------------------

fn with_header(edit: impl FnOnce(&mut QcowHeader)) -> Vec<u8> {
    let mut q = Q::new(9, 4 * 512);
    q.clusters = vec![(0, C::Data(noise(512, 1)))];
    let mut b = q.build();
    let mut raw = [0u8; QcowHeader::SIZE];
    raw.copy_from_slice(&b[..QcowHeader::SIZE]);
    let mut h = QcowHeader::parse(&raw);
    edit(&mut h);
    b[..QcowHeader::SIZE].copy_from_slice(&h.encode());
    b
}

#[test]
fn header_rules() {
    assert_eq!(
        q_err(open(with_header(|h| h.version = 1))),
        Qcow2Error::UnsupportedVersion { version: 1 }
    );
    assert_eq!(
        q_err(open(with_header(|h| h.version = 4))),
        Qcow2Error::UnsupportedVersion { version: 4 }
    );
    for bits in [8, 22, 63] {
        assert_eq!(
            q_err(open(with_header(|h| h.cluster_bits = bits))),
            Qcow2Error::InvalidClusterBits { cluster_bits: bits }
        );
    }
    for hl in [100, 108, 1024] {
        assert_eq!(
            q_err(open(with_header(|h| h.header_length = hl))),
            Qcow2Error::InvalidHeaderLength {
                header_length: hl,
                cluster_bytes: 512
            }
        );
    }
    assert_eq!(
        q_err(open(with_header(|h| h.incompatible_features = 1 << 5 | 1))),
        Qcow2Error::UnknownIncompatibleFeatures { features: 1 << 5 }
    );
    assert_eq!(
        q_err(open(with_header(
            |h| h.incompatible_features = INCOMPAT_DATA_FILE
        ))),
        Qcow2Error::ExternalDataFile
    );
    assert_eq!(
        q_err(open(with_header(|h| h.crypt_method = 2))),
        Qcow2Error::Encrypted { crypt_method: 2 }
    );
    assert_eq!(
        q_err(open(with_header(|h| h.compression_type = 1))),
        Qcow2Error::InvalidCompressionType {
            compression_type: 1,
            features: 0
        }
    );
    assert_eq!(
        q_err(open(with_header(
            |h| h.incompatible_features = INCOMPAT_COMPRESSION
        ))),
        Qcow2Error::InvalidCompressionType {
            compression_type: 0,
            features: INCOMPAT_COMPRESSION
        }
    );
    assert_eq!(
        q_err(open(with_header(|h| {
            h.incompatible_features = INCOMPAT_COMPRESSION;
            h.compression_type = 7;
        }))),
        Qcow2Error::InvalidCompressionType {
            compression_type: 7,
            features: INCOMPAT_COMPRESSION
        }
    );
    assert_eq!(
        q_err(open(with_header(|h| h.size = MAX_VIRTUAL_BYTES + 1))),
        Qcow2Error::SizeTooLarge {
            size: MAX_VIRTUAL_BYTES + 1,
            limit: MAX_VIRTUAL_BYTES
        }
    );
    let mut b = with_header(|_| {});
    b[0] = b'X';
    assert_eq!(q_err(open(b)), Qcow2Error::BadMagic { found: *b"XFI\xfb" });
    assert_eq!(
        q_err(open(vec![0x51, 0x46, 0x49, 0xfb])),
        Qcow2Error::TooShort { len_bytes: 4 }
    );
    // Dirty and corrupt bits are read (qemu opens such images read-only).
    assert!(
        open(with_header(
            |h| h.incompatible_features = INCOMPAT_DIRTY | INCOMPAT_CORRUPT
        ))
        .is_ok()
    );
}

#[test]
fn l1_rules_and_huge_claims_do_not_allocate() {
    assert_eq!(
        q_err(open(with_header(
            |h| h.l1_size = (MAX_L1_ENTRIES + 1) as u32
        ))),
        Qcow2Error::L1TooLarge {
            entries: MAX_L1_ENTRIES + 1,
            limit: MAX_L1_ENTRIES
        }
    );
    assert_eq!(
        q_err(open(with_header(|h| h.size = 1 << 20))),
        Qcow2Error::L1TooSmall {
            entries: 1,
            needed: 32
        }
    );
    assert_eq!(
        q_err(open(with_header(|h| h.l1_table_offset = 700))),
        Qcow2Error::L1OutOfBounds {
            offset: 700,
            entries: 1
        }
    );
    // 64 TiB of 2 MiB clusters: a 256 KiB L1 that is not in the file.
    assert_eq!(
        q_err(open(with_header(|h| {
            h.size = MAX_VIRTUAL_BYTES;
            h.cluster_bits = 21;
            h.l1_size = 1 << 15;
            h.l1_table_offset = 1 << 21;
        }))),
        Qcow2Error::L1OutOfBounds {
            offset: 1 << 21,
            entries: 128
        }
    );
    // An L1 entry past the end of the file, or unaligned.
    for bad in [1u64 << 40, 1 << 20] {
        let mut b = with_header(|_| {});
        b[512..520].copy_from_slice(&bad.to_be_bytes());
        assert_eq!(
            q_err(open(b)),
            Qcow2Error::L2TableOutOfBounds {
                l1_index: 0,
                offset: bad & OFFSET_MASK
            }
        );
    }
}

#[test]
fn l2_entry_rules() {
    let q = {
        let mut q = Q::new(9, 4 * 512);
        q.clusters = vec![(0, C::Data(noise(512, 1))), (1, C::Deflate(noise(512, 2)))];
        q
    };
    let good = q.build();
    let l2 = 2 * 512; // the first L2 table follows the L1 cluster
    let set = |b: &mut Vec<u8>, i: usize, e: u64| {
        b[l2 + 8 * i..l2 + 8 * i + 8].copy_from_slice(&e.to_be_bytes())
    };
    // With 4 KiB clusters, an offset on a 512-byte boundary is unaligned.
    let mut q4 = Q::new(12, 4096);
    q4.clusters = vec![(0, C::Data(noise(4096, 1)))];
    let mut b4 = q4.build();
    let l2_4 = 2 * 4096;
    let host = u64::from_be_bytes(b4[l2_4..l2_4 + 8].try_into().unwrap()) & OFFSET_MASK;
    b4[l2_4..l2_4 + 8].copy_from_slice(&((1u64 << 63) | (host + 512)).to_be_bytes());
    assert_eq!(
        q_err(open(b4).unwrap().map(0, 1)),
        Qcow2Error::ClusterUnaligned {
            cluster: 0,
            offset: host + 512
        }
    );
    let mut b = good.clone();
    let len = b.len() as u64;
    set(&mut b, 0, 1 << 40);
    assert_eq!(
        q_err(open(b).unwrap().map(0, 1)),
        Qcow2Error::ClusterOutOfBounds {
            cluster: 0,
            offset: 1 << 40,
            file_len: len
        }
    );
    let mut b = good.clone();
    set(&mut b, 1, L2_COMPRESSED | (1 << 50));
    let img = open(b).unwrap();
    let mut out = vec![0u8; 512];
    assert!(matches!(
        q_err(img.decode_unit(1, &mut out)),
        Qcow2Error::ClusterOutOfBounds { cluster: 1, .. }
    ));
    assert_eq!(
        q_err(img.decode_unit(0, &mut out)),
        Qcow2Error::NotACompressedCluster { unit: 0 }
    );
    assert_eq!(
        q_err(img.decode_unit(3, &mut out)),
        Qcow2Error::NotACompressedCluster { unit: 3 }
    );
    assert_eq!(
        q_err(img.map(2048, 1)),
        Qcow2Error::MapOutOfRange {
            offset: 2048,
            max_len: 1,
            virtual_size: 2048
        }
    );
}

#[test]
fn corrupt_compressed_clusters_fail_instead_of_reading_zeros() {
    let mut q = Q::new(9, 2 * 512);
    q.clusters = vec![(0, C::Deflate(noise(512, 1))), (1, C::Zstd(noise(512, 2)))];
    // Deflate: garbage in the stream.
    let mut b = q.build();
    let n = b.len();
    b[n - 40..].fill(0xFF);
    let img = open(b).unwrap();
    let mut out = vec![0u8; 512];
    assert!(img.decode_unit(0, &mut out).is_ok() || img.decode_unit(0, &mut out).is_err());
    // zstd in an image whose header says zlib: the frame is not deflate.
    let img = open(q.build()).unwrap();
    assert!(img.decode_unit(1, &mut out).is_err());
    // Deflate data that decodes to more than a cluster (a whole 1 KiB stream).
    let mut q2 = Q::new(9, 512);
    q2.clusters = vec![(0, C::Deflate(noise(512, 1)))];
    let mut b = q2.build();
    let mut comp = Compressor::new(CompressionLvl::default());
    let big = vec![7u8; 4096];
    let mut z = vec![0u8; comp.deflate_compress_bound(big.len())];
    let zn = comp.deflate_compress(&big, &mut z).unwrap();
    let host = b.len() as u64;
    b.extend_from_slice(&z[..zn]);
    let e = L2_COMPRESSED | host | (((host % 512 + zn as u64).div_ceil(512) - 1) << 61);
    b[1024..1032].copy_from_slice(&e.to_be_bytes());
    let img = open(b).unwrap();
    assert!(matches!(
        disk_err(img.decode_unit(0, &mut out)),
        DiskError::UnitSizeMismatch {
            unit: 0,
            expected: 512,
            ..
        }
    ));
}

#[test]
fn zstd_output_must_be_exactly_one_cluster() {
    let mut out = vec![0u8; 512];
    let short = ruzstd::encoding::compress_to_vec(
        &[1u8; 100][..],
        ruzstd::encoding::CompressionLevel::Fastest,
    );
    assert!(matches!(
        disk_err(zstd_exact(&short, &mut out, 3)),
        DiskError::UnitSizeMismatch {
            unit: 3,
            expected: 512,
            actual: 100
        }
    ));
    let long = ruzstd::encoding::compress_to_vec(
        &[1u8; 5000][..],
        ruzstd::encoding::CompressionLevel::Fastest,
    );
    assert!(matches!(
        disk_err(zstd_exact(&long, &mut out, 3)),
        DiskError::UnitSizeMismatch { actual: 513, .. }
    ));
    assert!(matches!(
        disk_err(zstd_exact(b"not zstd at all", &mut out, 4)),
        DiskError::CorruptUnit { unit: 4, .. }
    ));
    let exact = ruzstd::encoding::compress_to_vec(
        &[9u8; 512][..],
        ruzstd::encoding::CompressionLevel::Fastest,
    );
    let mut with_garbage = exact.clone();
    with_garbage.extend_from_slice(&[0xAB; 300]); // the rest of the last sector
    zstd_exact(&with_garbage, &mut out, 5).unwrap();
    assert_eq!(out, vec![9u8; 512]);
}

#[test]
fn backing_name_and_extension_rules() {
    assert_eq!(
        q_err(open(with_header(|h| {
            h.backing_file_offset = 400;
            h.backing_file_size = 200;
        }))),
        Qcow2Error::InvalidBackingName {
            offset: 400,
            len: 200
        }
    );
    assert_eq!(
        q_err(open(with_header(|h| {
            h.backing_file_offset = 200;
            h.backing_file_size = 1024;
        }))),
        Qcow2Error::InvalidBackingName {
            offset: 200,
            len: 1024
        }
    );
    // An extension whose length runs past the extension area.
    let mut b = with_header(|_| {});
    b[112..116].copy_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
    b[116..120].copy_from_slice(&1000u32.to_be_bytes());
    assert_eq!(
        q_err(open(b)),
        Qcow2Error::InvalidHeaderExtension {
            offset: 112,
            ext_type: EXT_BACKING_FORMAT,
            len: 1000
        }
    );
}

#[test]
fn truncated_and_mutated_images_never_panic() {
    let mut q = Q::new(9, 20 * 512);
    q.clusters = vec![
        (0, C::Data(noise(512, 1))),
        (2, C::Deflate(noise(512, 2))),
        (9, C::Zero),
    ];
    let good = q.build();
    for cut in (0..good.len()).step_by(61) {
        if let Ok(img) = open(good[..cut].to_vec()) {
            let _ = try_flat(&img);
        }
    }
    let r = noise(4096, 99);
    for i in 0..300 {
        let mut b = good.clone();
        let at = (u64::from(r[i]) * 7 + i as u64 * 13) as usize % b.len().min(2048);
        b[at] ^= r[i + 1] | 1;
        if let Ok(img) = open(b) {
            let _ = try_flat(&img);
        }
    }
}

/// Reads the whole image, stopping at the first error.
fn try_flat(img: &Qcow2) -> Result<()> {
    let size = img.virtual_size();
    let mut pos = 0;
    while pos < size {
        let e = img.map(pos, size - pos)?;
        assert!(!e.is_empty() && pos + e.len() <= size);
        if let Extent::Unit { unit, .. } = e {
            let mut out = vec![0u8; img.unit_len(unit) as usize];
            img.decode_unit(unit, &mut out)?;
        }
        pos += e.len();
    }
    Ok(())
}
