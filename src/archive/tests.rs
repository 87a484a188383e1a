//! Unit tests for the tar index, on archives assembled block by block in memory.
//!
//! `Hdr` writes one 512-byte header field by field (POSIX ustar layout, docs/formats.md §1.2), so
//! each test states exactly which bytes it feeds the index.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::*;

/// One header under construction.
#[derive(Clone)]
struct Hdr {
    b: [u8; 512],
}

#[derive(Clone, Copy)]
enum Fmt {
    Ustar,
    Gnu,
    V7,
}

impl Hdr {
    fn new(fmt: Fmt, name: &[u8], typeflag: u8, size: u64) -> Hdr {
        let mut h = Hdr { b: [0u8; 512] };
        h.b[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
        h.octal(100..108, 0o644); // mode
        h.octal(108..116, 1000); // uid
        h.octal(116..124, 1000); // gid
        h.octal(124..136, size); // size
        h.octal(136..148, 1_600_000_000); // mtime
        h.b[156] = typeflag;
        match fmt {
            Fmt::Ustar => {
                h.b[257..263].copy_from_slice(b"ustar\0");
                h.b[263..265].copy_from_slice(b"00");
            }
            Fmt::Gnu => {
                h.b[257..263].copy_from_slice(b"ustar ");
                h.b[263..265].copy_from_slice(b" \0");
            }
            Fmt::V7 => {}
        }
        h
    }

    /// Writes `v` as zero-padded octal followed by a NUL, filling the field.
    fn octal(&mut self, r: std::ops::Range<usize>, v: u64) {
        let width = r.len() - 1;
        let s = format!("{v:0width$o}");
        assert_eq!(s.len(), width, "value does not fit the field");
        self.b[r.start..r.start + width].copy_from_slice(s.as_bytes());
        self.b[r.end - 1] = 0;
    }

    fn prefix(mut self, p: &[u8]) -> Hdr {
        self.b[345..345 + p.len()].copy_from_slice(p);
        self
    }

    fn size_base256(mut self, bytes: [u8; 12]) -> Hdr {
        self.b[124..136].copy_from_slice(&bytes);
        self
    }

    fn mode(mut self, m: u64) -> Hdr {
        self.octal(100..108, m);
        self
    }

    /// Fills the checksum field: unsigned sum, six octal digits, NUL, space.
    fn sealed(mut self) -> [u8; 512] {
        self.b[148..156].copy_from_slice(b"        ");
        let sum: u32 = self.b.iter().map(|&x| u32::from(x)).sum();
        let s = format!("{sum:06o}\0 ");
        self.b[148..156].copy_from_slice(s.as_bytes());
        self.b
    }

    /// Checksum as old writers computed it: the sum of *signed* bytes.
    fn sealed_signed(mut self) -> [u8; 512] {
        self.b[148..156].copy_from_slice(b"        ");
        let sum: i32 = self.b.iter().map(|&x| i32::from(x as i8)).sum();
        let s = format!("{:06o}\0 ", sum as u32);
        self.b[148..156].copy_from_slice(s.as_bytes());
        self.b
    }
}

/// An archive under construction.
#[derive(Default)]
struct Ar {
    bytes: Vec<u8>,
}

impl Ar {
    fn header(&mut self, b: [u8; 512]) -> &mut Self {
        self.bytes.extend_from_slice(&b);
        self
    }

    /// Data padded to a block multiple.
    fn data(&mut self, d: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(d);
        let pad = (512 - d.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    fn file(&mut self, fmt: Fmt, name: &str, d: &[u8]) -> &mut Self {
        self.header(Hdr::new(fmt, name.as_bytes(), b'0', d.len() as u64).sealed())
            .data(d)
    }

    fn end(&mut self) -> Vec<u8> {
        self.bytes.extend([0u8; 1024]);
        std::mem::take(&mut self.bytes)
    }
}

/// A pax record with its length prefix.
fn pax_rec(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut n = body.len() + 1;
    while format!("{n}{body}").len() != n {
        n += 1;
    }
    format!("{n}{body}").into_bytes()
}

fn tar_err(e: &crate::error::Error) -> &TarError {
    match e.layer_error() {
        Some(t) => t,
        None => panic!("expected a tar error, got {:?}", e.kind()),
    }
}

#[test]
fn ustar_members_in_order_with_offsets_mode_and_mtime() {
    let bytes = Ar::default()
        .file(Fmt::Ustar, "a.ovf", b"<Envelope/>")
        .file(Fmt::Ustar, "./disk1.vmdk", &[7u8; 1000])
        .end();
    let idx = index(&bytes).unwrap();
    assert_eq!(idx.members.len(), 2);
    let a = &idx.members[0];
    assert_eq!(
        (a.name.as_str(), a.header_offset, a.data_offset, a.size),
        ("a.ovf", 0, 512, 11)
    );
    assert_eq!(
        (a.mode, a.mtime, a.kind),
        (0o644, 1_600_000_000, MemberKind::Regular)
    );
    let d = &idx.members[1];
    assert_eq!(
        (d.name.as_str(), d.header_offset, d.data_offset, d.size),
        ("disk1.vmdk", 1024, 1536, 1000)
    );
    assert_eq!(idx.end_offset, 1536 + 1024);
    assert!(idx.skipped.is_empty() && idx.duplicates.is_empty());
    assert_eq!(idx.find("disk1.vmdk").map(|m| m.size), Some(1000));
}

#[test]
fn ustar_prefix_field_is_joined_to_the_name() {
    let bytes = Ar::default()
        .header(
            Hdr::new(Fmt::Ustar, b"disk.vmdk", b'0', 3)
                .prefix(b"some/dir")
                .sealed(),
        )
        .data(b"abc")
        .end();
    assert_eq!(index(&bytes).unwrap().members[0].name, "some/dir/disk.vmdk");
}

#[test]
fn ovftool_hybrid_magic_is_ustar() {
    // VMware ovftool writes the POSIX magic with the GNU version field.
    let mut h = Hdr::new(Fmt::Ustar, b"disk.vmdk", b'0', 3).prefix(b"dir");
    h.b[263..265].copy_from_slice(b" \0");
    let bytes = Ar::default().header(h.sealed()).data(b"abc").end();
    assert_eq!(index(&bytes).unwrap().members[0].name, "dir/disk.vmdk");
}

#[test]
fn gnu_header_area_after_the_name_is_never_read_as_a_prefix() {
    // In GNU headers bytes 345.. hold atime/ctime, not a prefix.
    let bytes = Ar::default()
        .header(
            Hdr::new(Fmt::Gnu, b"disk.vmdk", b'0', 3)
                .prefix(b"14567123456")
                .sealed(),
        )
        .data(b"abc")
        .end();
    assert_eq!(index(&bytes).unwrap().members[0].name, "disk.vmdk");
}

#[test]
fn gnu_long_name_replaces_the_next_header_name() {
    let long = format!("{}/disk1.vmdk", "d".repeat(150));
    let mut payload = long.clone().into_bytes();
    payload.push(0);
    let bytes = Ar::default()
        .header(Hdr::new(Fmt::Gnu, b"././@LongLink", b'L', payload.len() as u64).sealed())
        .data(&payload)
        .header(Hdr::new(Fmt::Gnu, &long.as_bytes()[..100], b'0', 5).sealed())
        .data(b"hello")
        .end();
    let idx = index(&bytes).unwrap();
    assert_eq!(idx.members.len(), 1);
    let m = &idx.members[0];
    assert_eq!(m.name, long);
    assert_eq!((m.header_offset, m.data_offset, m.size), (0, 1536, 5));
}

#[test]
fn gnu_long_link_name_is_skipped_and_links_are_other() {
    let bytes = Ar::default()
        .header(Hdr::new(Fmt::Gnu, b"././@LongLink", b'K', 200).sealed())
        .data(&[b'x'; 200])
        .header(Hdr::new(Fmt::Gnu, b"link", b'2', 0).sealed())
        .header(Hdr::new(Fmt::Gnu, b"hard", b'1', 0).sealed())
        .header(Hdr::new(Fmt::Gnu, b"chr", b'3', 0).sealed())
        .header(Hdr::new(Fmt::Gnu, b"fifo", b'6', 0).sealed())
        .file(Fmt::Gnu, "real", b"r")
        .end();
    let idx = index(&bytes).unwrap();
    let kinds: Vec<_> = idx
        .members
        .iter()
        .map(|m| (m.name.as_str(), m.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("link", MemberKind::Other),
            ("hard", MemberKind::Other),
            ("chr", MemberKind::Other),
            ("fifo", MemberKind::Other),
            ("real", MemberKind::Regular),
        ]
    );
    assert_eq!(idx.members[0].header_offset, 0);
}

#[test]
fn gnu_base256_size_is_decoded() {
    let mut field = [0u8; 12];
    field[0] = 0x80;
    field[11] = 5;
    let bytes = Ar::default()
        .header(
            Hdr::new(Fmt::Gnu, b"big", b'0', 0)
                .size_base256(field)
                .sealed(),
        )
        .data(b"12345")
        .end();
    assert_eq!(index(&bytes).unwrap().members[0].size, 5);
}

#[test]
fn negative_or_oversized_base256_size_is_a_bad_field() {
    let mut neg = [0xffu8; 12];
    neg[11] = 0xfe;
    let mut huge = [0u8; 12];
    huge[0] = 0x80;
    huge[2] = 1; // above 2^64
    for field in [neg, huge] {
        let mut ar = Ar::default();
        ar.file(Fmt::Gnu, "first", b"x");
        ar.header(
            Hdr::new(Fmt::Gnu, b"big", b'0', 0)
                .size_base256(field)
                .sealed(),
        );
        let e = index(&ar.end()).unwrap_err();
        assert!(
            matches!(
                tar_err(&e),
                TarError::BadField {
                    offset: 1024,
                    field: "size"
                }
            ),
            "{e:?}"
        );
    }
}

#[test]
fn blank_numeric_fields_read_as_zero_and_garbage_is_a_bad_field() {
    let mut h = Hdr::new(Fmt::Ustar, b"blank", b'0', 0);
    h.b[100..108].fill(0);
    h.b[124..136].fill(b' ');
    h.b[136..148].fill(0);
    let idx = index(&Ar::default().header(h.sealed()).end()).unwrap();
    let m = &idx.members[0];
    assert_eq!((m.mode, m.size, m.mtime), (0, 0, 0));
    for (range, field) in [(100..108, "mode"), (136..148, "mtime")] {
        let mut h = Hdr::new(Fmt::Ustar, b"x", b'0', 0);
        h.b[range.start..range.start + 3].copy_from_slice(b"9z9");
        let e = index(&Ar::default().header(h.sealed()).end()).unwrap_err();
        assert!(
            matches!(tar_err(&e), TarError::BadField { offset: 0, field: f } if *f == field),
            "{e:?}"
        );
    }
}

#[test]
fn garbage_octal_size_is_a_bad_field() {
    let mut h = Hdr::new(Fmt::Ustar, b"x", b'0', 0);
    h.b[124..136].copy_from_slice(b"12z45\0\0\0\0\0\0\0");
    let bytes = Ar::default().header(h.sealed()).end();
    let e = index(&bytes).unwrap_err();
    assert!(matches!(
        tar_err(&e),
        TarError::BadField {
            offset: 0,
            field: "size"
        }
    ));
}

#[test]
fn pax_path_size_and_mtime_override_the_header() {
    let mut rec = pax_rec("path", "folder/ünïcode name.vmdk");
    rec.extend(pax_rec("size", "7"));
    rec.extend(pax_rec("mtime", "1700000000.5"));
    let bytes = Ar::default()
        .header(Hdr::new(Fmt::Ustar, b"./PaxHeaders/x", b'x', rec.len() as u64).sealed())
        .data(&rec)
        .header(Hdr::new(Fmt::Ustar, b"short", b'0', 3).sealed())
        .data(b"1234567")
        .end();
    let idx = index(&bytes).unwrap();
    let m = &idx.members[0];
    assert_eq!(m.name, "folder/ünïcode name.vmdk");
    assert_eq!(
        (m.size, m.mtime, m.header_offset, m.data_offset),
        (7, 1_700_000_000, 0, 1024 + 512)
    );
}

#[test]
fn pax_global_mtime_applies_to_later_members() {
    let rec = pax_rec("mtime", "1234");
    let bytes = Ar::default()
        .header(Hdr::new(Fmt::Ustar, b"pax_global_header", b'g', rec.len() as u64).sealed())
        .data(&rec)
        .file(Fmt::Ustar, "a", b"a")
        .file(Fmt::Ustar, "b", b"b")
        .end();
    let idx = index(&bytes).unwrap();
    assert_eq!(idx.members.len(), 2);
    assert!(idx.members.iter().all(|m| m.mtime == 1234));
    assert_eq!(idx.members[0].header_offset, 1024);
}

#[test]
fn pax_sparse_member_is_other_and_its_stored_bytes_are_skipped() {
    let mut rec = pax_rec("GNU.sparse.major", "1");
    rec.extend(pax_rec("GNU.sparse.realsize", "1000000"));
    rec.extend(pax_rec("size", "1000000"));
    let bytes = Ar::default()
        .header(Hdr::new(Fmt::Ustar, b"PaxHeaders/s", b'x', rec.len() as u64).sealed())
        .data(&rec)
        .header(Hdr::new(Fmt::Ustar, b"GNUSparseFile.0/s", b'0', 600).sealed())
        .data(&[1u8; 600])
        .file(Fmt::Ustar, "after", b"z")
        .end();
    let idx = index(&bytes).unwrap();
    assert_eq!(idx.members[0].kind, MemberKind::Other);
    assert_eq!(idx.members[0].size, 600);
    assert_eq!(idx.members[1].name, "after");
}

#[test]
fn malformed_pax_is_refused() {
    let bytes = Ar::default()
        .header(Hdr::new(Fmt::Ustar, b"p", b'x', 9).sealed())
        .data(b"99 path=x")
        .file(Fmt::Ustar, "a", b"a")
        .end();
    let e = index(&bytes).unwrap_err();
    assert!(matches!(tar_err(&e), TarError::BadPax { offset: 0, .. }));
}

#[test]
fn oversized_extension_payloads_are_refused_without_reading_them() {
    let limits = Limits::default();
    for (flag, what, cap) in [
        (b'L', "GNU long name", limits.max_long_name_bytes),
        (b'x', "pax", limits.max_pax_bytes),
        (b'g', "pax", limits.max_pax_bytes),
    ] {
        let mut ar = Ar::default();
        // The payload is not even present: the size alone is refused.
        ar.header(Hdr::new(Fmt::Gnu, b"././@LongLink", flag, cap + 1).sealed());
        let e = index(&ar.end()).unwrap_err();
        match tar_err(&e) {
            TarError::ExtensionTooLarge {
                what: w,
                offset: 0,
                size,
                limit,
            } => {
                assert_eq!((*w, *size, *limit), (what, cap + 1, cap));
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn extension_without_a_member_is_dangling() {
    let payload = b"name\0";
    let bytes = Ar::default()
        .file(Fmt::Gnu, "a", b"a")
        .header(Hdr::new(Fmt::Gnu, b"././@LongLink", b'L', 5).sealed())
        .data(payload)
        .end();
    let e = index(&bytes).unwrap_err();
    assert!(matches!(
        tar_err(&e),
        TarError::DanglingExtension { offset: 1024 }
    ));
    // Same at end of file without zero blocks.
    let mut ar = Ar::default();
    ar.header(Hdr::new(Fmt::Gnu, b"././@LongLink", b'L', 5).sealed())
        .data(payload);
    let e = index(&ar.bytes).unwrap_err();
    assert!(matches!(
        tar_err(&e),
        TarError::DanglingExtension { offset: 0 }
    ));
}

#[test]
fn extension_payload_past_the_end_is_truncated() {
    let mut ar = Ar::default();
    ar.header(Hdr::new(Fmt::Gnu, b"././@LongLink", b'L', 5000).sealed());
    let e = index(&ar.bytes).unwrap_err();
    assert!(matches!(
        tar_err(&e),
        TarError::Truncated {
            data_end: 5512,
            archive_len: 512,
            ..
        }
    ));
}

#[test]
fn v7_headers_and_trailing_slash_directories() {
    let bytes = Ar::default()
        .header(Hdr::new(Fmt::V7, b"dir/", b'\0', 0).mode(0o755).sealed())
        .file(Fmt::V7, "dir/file", b"data")
        .end();
    let idx = index(&bytes).unwrap();
    assert_eq!(idx.members[0].name, "dir");
    assert_eq!(idx.members[0].kind, MemberKind::Directory);
    assert_eq!(idx.members[0].mode, 0o755);
    assert_eq!(idx.members[1].name, "dir/file");
    assert_eq!(idx.members[1].kind, MemberKind::Regular);
}

#[test]
fn ustar_directories_and_contiguous_files() {
    let bytes = Ar::default()
        .header(Hdr::new(Fmt::Ustar, b"d/", b'5', 0).sealed())
        .header(Hdr::new(Fmt::Ustar, b"d/c", b'7', 1).sealed())
        .data(b"c")
        .end();
    let idx = index(&bytes).unwrap();
    assert_eq!(idx.members[0].kind, MemberKind::Directory);
    assert_eq!(idx.members[0].name, "d");
    assert_eq!(idx.members[1].kind, MemberKind::Regular);
}

#[test]
fn signed_checksum_variant_is_accepted() {
    let name = "é.ovf".as_bytes(); // bytes above 0x7f make the two sums differ
    let bytes = Ar::default()
        .header(Hdr::new(Fmt::Ustar, name, b'0', 1).sealed_signed())
        .data(b"x")
        .end();
    assert_eq!(index(&bytes).unwrap().members[0].name, "é.ovf");
}

#[test]
fn bad_checksum_first_is_not_tar_later_is_bad_checksum() {
    let mut first = Hdr::new(Fmt::Ustar, b"a", b'0', 0).sealed();
    first[0] = b'b';
    let e = index(&Ar::default().header(first).end()).unwrap_err();
    assert!(matches!(tar_err(&e), TarError::NotTar { .. }));

    let mut second = Hdr::new(Fmt::Ustar, b"b", b'0', 0).sealed();
    second[1] = b'x';
    let bytes = Ar::default()
        .file(Fmt::Ustar, "a", b"a")
        .header(second)
        .end();
    let e = index(&bytes).unwrap_err();
    assert!(matches!(
        tar_err(&e),
        TarError::BadChecksum { offset: 1024 }
    ));
}

#[test]
fn unknown_magic_first_is_not_tar_later_is_bad_magic() {
    let mut h = Hdr::new(Fmt::Ustar, b"a", b'0', 0);
    h.b[257..263].copy_from_slice(b"USTAR\0");
    let e = index(&Ar::default().header(h.clone().sealed()).end()).unwrap_err();
    assert!(matches!(tar_err(&e), TarError::NotTar { .. }));
    let bytes = Ar::default()
        .file(Fmt::Ustar, "a", b"a")
        .header(h.sealed())
        .end();
    let e = index(&bytes).unwrap_err();
    assert!(matches!(tar_err(&e), TarError::BadMagic { offset: 1024 }));
}

#[test]
fn not_a_tar_inputs() {
    let png = b"\x89PNG\r\n\x1a\n".repeat(200);
    for bytes in [png, vec![1u8; 100]] {
        let e = index(&bytes).unwrap_err();
        assert!(matches!(tar_err(&e), TarError::NotTar { .. }), "{e:?}");
    }
    // An empty file, and zero blocks only, are empty archives, as GNU tar lists them.
    assert!(index(&Vec::new()).unwrap().members.is_empty());
    let idx = index(&vec![0u8; 10240]).unwrap();
    assert!(idx.members.is_empty());
    assert_eq!(idx.end_offset, 0);
}

#[test]
fn stops_at_the_first_zero_block_and_ignores_what_follows() {
    let mut bytes = Ar::default().file(Fmt::Ustar, "a", b"a").end();
    bytes.extend(b"garbage after the end of the archive".repeat(30));
    let idx = index(&bytes).unwrap();
    assert_eq!(idx.members.len(), 1);
    assert_eq!(idx.end_offset, 1024);
}

#[test]
fn end_of_file_without_zero_blocks_is_accepted() {
    let mut ar = Ar::default();
    ar.file(Fmt::Ustar, "a", b"a");
    let idx = index(&ar.bytes).unwrap();
    assert_eq!(idx.members.len(), 1);
    assert_eq!(idx.end_offset, 1024);
}

#[test]
fn member_past_the_end_is_truncated_naming_it() {
    let mut ar = Ar::default();
    ar.header(Hdr::new(Fmt::Ustar, b"disk1.vmdk", b'0', 10_000).sealed())
        .data(&[0u8; 1000]);
    let e = index(&ar.bytes).unwrap_err();
    match tar_err(&e) {
        TarError::Truncated {
            member,
            data_end,
            archive_len,
        } => {
            assert_eq!(member, "disk1.vmdk");
            assert_eq!((*data_end, *archive_len), (10_512, 1536));
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("disk1.vmdk"));
}

#[test]
fn member_data_ending_exactly_at_eof_without_padding_is_fine() {
    let mut ar = Ar::default();
    ar.header(Hdr::new(Fmt::Ustar, b"a", b'0', 3).sealed());
    ar.bytes.extend(b"abc");
    let idx = index(&ar.bytes).unwrap();
    assert_eq!(idx.members[0].size, 3);
}

#[test]
fn partial_trailing_header_is_truncated_header() {
    let mut ar = Ar::default();
    ar.file(Fmt::Ustar, "a", b"a");
    ar.bytes.extend([1u8; 100]);
    let e = index(&ar.bytes).unwrap_err();
    assert!(matches!(
        tar_err(&e),
        TarError::TruncatedHeader { offset: 1024 }
    ));
}

#[test]
fn member_count_is_capped() {
    let mut ar = Ar::default();
    for i in 0..5 {
        ar.file(Fmt::Ustar, &format!("f{i}"), b"");
    }
    let bytes = ar.end();
    let limits = Limits {
        max_members: 4,
        ..Limits::default()
    };
    let e = index_with(&bytes, &limits).unwrap_err();
    assert!(matches!(tar_err(&e), TarError::TooManyMembers { limit: 4 }));
    assert_eq!(
        index_with(
            &bytes,
            &Limits {
                max_members: 5,
                ..limits
            }
        )
        .unwrap()
        .members
        .len(),
        5
    );
}

#[test]
fn header_count_is_capped_even_without_members() {
    let mut ar = Ar::default();
    for _ in 0..20 {
        ar.header(Hdr::new(Fmt::Gnu, b"././@LongLink", b'K', 0).sealed());
    }
    let limits = Limits {
        max_members: 2,
        ..Limits::default()
    };
    let e = index_with(&ar.end(), &limits).unwrap_err();
    assert!(matches!(tar_err(&e), TarError::TooManyMembers { limit: 2 }));
}

#[test]
fn hostile_names_are_skipped_logged_and_recorded() {
    let bytes = Ar::default()
        .file(Fmt::Ustar, "/etc/passwd", b"x")
        .file(Fmt::Ustar, "../escape", b"x")
        .file(Fmt::Ustar, "a/../../b", b"x")
        .file(Fmt::Ustar, "ctl\x01name", b"x")
        .file(Fmt::Ustar, "./", b"x")
        .header(Hdr::new(Fmt::Ustar, b"bad\xffutf8", b'0', 0).sealed())
        .file(Fmt::Ustar, "good.ovf", b"x")
        .file(Fmt::Ustar, "back\\slash", b"x")
        .end();
    let idx = index(&bytes).unwrap();
    let names: Vec<_> = idx.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["good.ovf", "back\\slash"]);
    let problems: Vec<_> = idx.skipped.iter().map(|s| s.problem).collect();
    assert_eq!(
        problems,
        [
            NameProblem::Absolute,
            NameProblem::DotDot,
            NameProblem::DotDot,
            NameProblem::ControlChar,
            NameProblem::Empty,
            NameProblem::NotUtf8,
        ]
    );
    assert_eq!(idx.skipped[0].raw_name, "/etc/passwd");
    assert_eq!(idx.skipped[1].header_offset, 1024);
}

#[test]
fn pax_path_with_nul_is_skipped() {
    let rec = pax_rec("path", "a\0b");
    let bytes = Ar::default()
        .header(Hdr::new(Fmt::Ustar, b"p", b'x', rec.len() as u64).sealed())
        .data(&rec)
        .file(Fmt::Ustar, "fallback", b"x")
        .end();
    let idx = index(&bytes).unwrap();
    assert!(idx.members.is_empty());
    assert_eq!(idx.skipped[0].problem, NameProblem::Nul);
}

#[test]
fn duplicates_keep_the_later_member_at_its_position() {
    let bytes = Ar::default()
        .file(Fmt::Ustar, "a.ovf", b"first")
        .file(Fmt::Ustar, "b", b"b")
        .file(Fmt::Ustar, "./a.ovf", b"second!")
        .end();
    let idx = index(&bytes).unwrap();
    let got: Vec<_> = idx
        .members
        .iter()
        .map(|m| (m.name.as_str(), m.size))
        .collect();
    assert_eq!(got, [("b", 1), ("a.ovf", 7)]);
    assert_eq!(
        idx.duplicates,
        [DuplicateMember {
            name: "a.ovf".into(),
            dropped_header_offset: 0,
            kept_header_offset: 2048,
        }]
    );
}

#[test]
fn gnu_old_sparse_member_skips_its_extension_blocks() {
    let mut h = Hdr::new(Fmt::Gnu, b"sparse", b'S', 512);
    h.b[GNU_ISEXTENDED] = 1;
    let mut ext1 = [0u8; 512];
    ext1[GNU_EXT_ISEXTENDED] = 1;
    let ext2 = [0u8; 512];
    let mut ar = Ar::default();
    ar.header(h.sealed());
    ar.bytes.extend(ext1);
    ar.bytes.extend(ext2);
    ar.data(&[9u8; 512]).file(Fmt::Gnu, "after", b"ok");
    let idx = index(&ar.end()).unwrap();
    let s = &idx.members[0];
    assert_eq!(
        (s.kind, s.data_offset, s.size),
        (MemberKind::Other, 1536, 512)
    );
    assert_eq!(idx.members[1].name, "after");
    assert_eq!(idx.members[1].data_offset, 2560);
}

#[test]
fn gnu_old_sparse_extension_past_the_end_is_truncated_header() {
    let mut h = Hdr::new(Fmt::Gnu, b"sparse", b'S', 0);
    h.b[GNU_ISEXTENDED] = 1;
    let mut ar = Ar::default();
    ar.header(h.sealed());
    let e = index(&ar.bytes).unwrap_err();
    assert!(matches!(
        tar_err(&e),
        TarError::TruncatedHeader { offset: 512 }
    ));
}

/// A source that counts the bytes read from it.
struct Counting {
    inner: Vec<u8>,
    read: AtomicU64,
}

impl ReadAt for Counting {
    fn len(&self) -> u64 {
        self.inner.len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> crate::error::Result<usize> {
        let n = self.inner.read_at(offset, buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[test]
fn only_headers_are_read() {
    let big = vec![0xabu8; 1 << 20];
    let bytes = Ar::default()
        .file(Fmt::Ustar, "a.ovf", b"x")
        .file(Fmt::Ustar, "disk.vmdk", &big)
        .file(Fmt::Ustar, "c", &big)
        .end();
    let src = Arc::new(Counting {
        inner: bytes,
        read: AtomicU64::new(0),
    });
    let idx = index(&*src).unwrap();
    assert_eq!(idx.members.len(), 3);
    // Three headers and the end-of-archive block.
    assert_eq!(src.read.load(Ordering::Relaxed), 4 * 512);
}

#[test]
fn plain_members_have_their_own_header_first_and_no_pax() {
    let bytes = Ar::default()
        .file(Fmt::Ustar, "a.ovf", b"<Envelope/>")
        .file(Fmt::Gnu, "b", b"b")
        .end();
    let idx = index(&bytes).unwrap();
    for m in &idx.members {
        assert_eq!(m.own_header_offset, m.header_offset);
        assert_eq!(m.own_header_offset + BLOCK_BYTES, m.data_offset);
        assert!(!m.pax && !m.pax_size, "{m:?}");
    }
}

#[test]
fn pax_size_and_own_header_offset_are_recorded() {
    let rec = pax_rec("size", "7");
    let path = pax_rec("path", "named.ovf");
    let bytes = Ar::default()
        .header(Hdr::new(Fmt::Ustar, b"PaxHeaders/a", b'x', rec.len() as u64).sealed())
        .data(&rec)
        .header(Hdr::new(Fmt::Ustar, b"a", b'0', 3).sealed())
        .data(b"1234567")
        .header(Hdr::new(Fmt::Ustar, b"PaxHeaders/b", b'x', path.len() as u64).sealed())
        .data(&path)
        .file(Fmt::Ustar, "b", b"b")
        .end();
    let idx = index(&bytes).unwrap();
    let (a, b) = (&idx.members[0], &idx.members[1]);
    assert_eq!(
        (a.header_offset, a.own_header_offset, a.data_offset),
        (0, 1024, 1536)
    );
    assert!(a.pax && a.pax_size);
    assert_eq!(b.name, "named.ovf");
    assert_eq!((b.header_offset, b.own_header_offset), (2048, 3072));
    assert!(b.pax && !b.pax_size, "a pax path is not a pax size");
}

#[test]
fn global_pax_counts_only_inside_a_members_extension_headers() {
    let g = pax_rec("mtime", "1234");
    let mut ar = Ar::default();
    // A global header on its own: not part of the next member's headers.
    ar.header(Hdr::new(Fmt::Ustar, b"pax_global_header", b'g', g.len() as u64).sealed())
        .data(&g)
        .file(Fmt::Ustar, "alone", b"a");
    // A long name, then a global header, then the member: the global header lies between
    // the member's first header and its own.
    ar.header(Hdr::new(Fmt::Gnu, b"././@LongLink", b'L', 5).sealed())
        .data(b"long\0")
        .header(Hdr::new(Fmt::Ustar, b"pax_global_header", b'g', g.len() as u64).sealed())
        .data(&g)
        .file(Fmt::Ustar, "x", b"b");
    let idx = index(&ar.end()).unwrap();
    let (alone, long) = (&idx.members[0], &idx.members[1]);
    assert_eq!(alone.header_offset, alone.own_header_offset);
    assert!(!alone.pax && !alone.pax_size);
    assert_eq!(long.name, "long");
    assert!(long.pax && !long.pax_size);
    assert_eq!(long.own_header_offset, long.header_offset + 4 * BLOCK_BYTES);
}

#[test]
fn gnu_old_sparse_member_own_header_is_before_its_extension_blocks() {
    let mut h = Hdr::new(Fmt::Gnu, b"sparse", b'S', 512);
    h.b[GNU_ISEXTENDED] = 1;
    let mut ar = Ar::default();
    ar.header(h.sealed());
    ar.bytes.extend([0u8; 512]);
    ar.data(&[9u8; 512]);
    let idx = index(&ar.end()).unwrap();
    let s = &idx.members[0];
    assert_eq!((s.own_header_offset, s.data_offset), (0, 1024));
}
