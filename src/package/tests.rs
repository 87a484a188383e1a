//! Unit tests for the package layer: OVAs built in memory with `tar::Builder` (ustar
//! headers), and unpacked packages in temporary folders.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::*;
use crate::archive::names::NameProblem;
use crate::error::{Error, ErrorKind};
use crate::io::ReadAt;
use crate::ovf::OvfError;

/// A descriptor with the given References and Disks and a minimal VirtualSystem.
fn descriptor(files: &str, disks: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
  <References>{files}</References>
  <DiskSection><Info>disks</Info>{disks}</DiskSection>
  <VirtualSystem ovf:id="vm"><Info>vm</Info></VirtualSystem>
</Envelope>
"#
    )
}

fn file(id: &str, href: &str, extra: &str) -> String {
    format!(r#"<File ovf:id="{id}" ovf:href="{href}"{extra}/>"#)
}

fn disk(id: &str, file_ref: &str) -> String {
    format!(r#"<Disk ovf:diskId="{id}" ovf:capacity="1" ovf:fileRef="{file_ref}"/>"#)
}

/// A ustar archive with these regular members.
fn ova(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o640);
        h.set_mtime(1_600_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn open_bytes(bytes: Vec<u8>) -> Result<Package> {
    open_ova_source(Arc::new(bytes), Path::new("test.ova"))
}

fn pkg_err(e: &Error) -> &PackageError {
    match e.layer_error() {
        Some(p) => p,
        None => panic!("expected a package error, got {:?} ({e})", e.kind()),
    }
}

fn read_all(r: &dyn ReadAt) -> Vec<u8> {
    let mut v = vec![0u8; r.len() as usize];
    r.read_exact_at(0, &mut v).unwrap();
    v
}

#[test]
fn ova_members_descriptor_manifest_certificate_and_disks() {
    let desc = descriptor(
        &[
            file("file1", "app-disk1.vmdk", r#" ovf:size="5""#),
            file("file2", "extra.iso", ""),
        ]
        .concat(),
        &disk("vmdisk1", "file1"),
    );
    let bytes = ova(&[
        ("App.ovf", desc.as_bytes()),
        ("APP.MF", b"SHA256(App.ovf)= 00\n"),
        ("app.cert", b"cert"),
        ("app-disk1.vmdk", b"KDMV!"),
        ("extra.iso", b"iso"),
        ("other/App.mf", b"not beside the descriptor"),
    ]);
    let p = open_bytes(bytes).unwrap();
    assert_eq!(p.kind, SourceKind::Ova);
    let names: Vec<_> = p.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "App.ovf",
            "APP.MF",
            "app.cert",
            "app-disk1.vmdk",
            "extra.iso",
            "other/App.mf"
        ]
    );
    assert_eq!(p.descriptor_member, 0);
    assert_eq!(p.manifest_member, Some(1));
    assert_eq!(p.certificate_member, Some(2));
    assert_eq!(p.descriptor.files.len(), 2);
    let m = &p.members[3];
    assert_eq!(
        (m.size, m.mode, m.mtime, m.kind),
        (5, 0o640, 1_600_000_000, MemberKind::Regular)
    );
    assert_eq!(read_all(&*m.data), b"KDMV!");
    assert!(m.data_offset.is_some());
    assert_eq!(p.files[0].location, FileLocation::Member(3));
    assert_eq!(p.files[1].location, FileLocation::Member(4));
    assert_eq!(p.disks.len(), 1);
    let d = &p.disks[0];
    assert_eq!(d.disk_id, "vmdisk1");
    assert_eq!((d.file, d.member), (Some(0), Some(3)));
    assert_eq!(d.file_id.as_deref(), Some("file1"));
    assert_eq!(d.stem, "app-disk1");
    assert_eq!(d.encoding, Encoding::Identity);
    assert_eq!(read_all(&**d.data.as_ref().unwrap()), b"KDMV!");
    assert_eq!(p.find_member("extra.iso"), Some(4));
    assert_eq!(p.descriptor_file().unwrap().name, "App.ovf");
    assert!(p.tar_index.is_some() && p.archive.is_some());
    assert!(p.warnings.is_empty());
}

#[test]
fn descriptor_in_a_sub_folder_resolves_hrefs_there() {
    let desc = descriptor(&file("f", "disk.vmdk", ""), &disk("d", "f"));
    let bytes = ova(&[
        ("disk.vmdk", b"wrong one"),
        ("vm/vm.ovf", desc.as_bytes()),
        ("vm/vm.mf", b""),
        ("vm/disk.vmdk", b"right"),
        ("vm.mf", b"not beside"),
    ]);
    let p = open_bytes(bytes).unwrap();
    assert_eq!(p.descriptor_member, 1);
    assert_eq!(p.manifest_member, Some(2));
    assert_eq!(read_all(&**p.disks[0].data.as_ref().unwrap()), b"right");
}

#[test]
fn the_first_descriptor_wins_and_the_others_are_reported() {
    let a = descriptor("", "");
    let bytes = ova(&[("a.ovf", a.as_bytes()), ("b.OVF", b"<not parsed/>")]);
    let p = open_bytes(bytes).unwrap();
    assert_eq!(p.descriptor_member, 0);
    assert_eq!(p.warnings.len(), 1);
    assert!(p.warnings[0].contains("b.OVF"));
}

#[test]
fn no_descriptor() {
    let e = open_bytes(ova(&[("disk.vmdk", b"x")])).unwrap_err();
    assert!(matches!(pkg_err(&e), PackageError::NoDescriptor));
}

#[test]
fn compressed_archives_other_than_gzip_are_refused_by_magic() {
    for (head, format) in [
        (&[0xfd, b'7', b'z', b'X', b'Z', 0][..], "xz"),
        (&[0x28, 0xb5, 0x2f, 0xfd][..], "zstd"),
        (&b"BZh91AY&SY"[..], "bzip2"),
    ] {
        let mut bytes = head.to_vec();
        bytes.resize(2048, 0);
        let e = open_bytes(bytes).unwrap_err();
        assert!(
            matches!(pkg_err(&e), PackageError::CompressedArchive { format: f } if *f == format),
            "{e}"
        );
        assert!(e.to_string().contains("decompress it first"));
    }
}

fn gzip_bytes(data: &[u8]) -> Vec<u8> {
    let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::default());
    let mut out = vec![0u8; c.gzip_compress_bound(data.len())];
    let n = c.gzip_compress(data, &mut out).unwrap();
    out.truncate(n);
    out
}

#[test]
fn gzip_compressed_ova_is_read_through_its_index() {
    let desc = descriptor(&file("f1", "disk1.vmdk", ""), &disk("d1", "f1"));
    let image: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let tar = ova(&[("a.ovf", desc.as_bytes()), ("disk1.vmdk", &image)]);
    let mut gz = gzip_bytes(&tar[..1000]);
    gz.extend(gzip_bytes(&tar[1000..])); // two members, as pigz or a split writer makes
    gz.extend([0u8; 300]); // padding after the last member
    let p = open_bytes(gz).unwrap();
    assert_eq!(p.archive_compression, Some("gzip"));
    assert_eq!(p.archive.as_ref().unwrap().len(), tar.len() as u64);
    let m = &p.members[p.find_member("disk1.vmdk").unwrap()];
    assert_eq!(read_all(&*m.data), image);
    assert_eq!(read_all(&*p.disks[0].data.clone().unwrap()), image);
}

#[test]
fn corrupt_gzip_ova_is_a_gzip_error() {
    let mut bytes = vec![0x1f, 0x8b, 8, 0];
    bytes.resize(2048, 0);
    let e = open_bytes(bytes).unwrap_err();
    assert!(
        matches!(
            crate::io::gzip::GzipError::of(&e),
            Some(crate::io::gzip::GzipError::CorruptDeflate { .. })
        ),
        "{e:?}"
    );
}

#[test]
fn decode_gives_the_decompressed_bytes() {
    let data = b"disk image bytes".repeat(1000);
    let stored: Arc<dyn ReadAt> = Arc::new(gzip_bytes(&data));
    let d = decode(&Encoding::Gzip, stored.clone(), "test", &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!(read_all(&*d), data);
    let same = decode(
        &Encoding::Identity,
        stored.clone(),
        "test",
        &Limits::default(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(same.len(), stored.len());
    assert!(
        decode(
            &Encoding::Unsupported("bzip2".into()),
            stored,
            "test",
            &Limits::default()
        )
        .unwrap()
        .is_none()
    );
}

#[test]
fn not_a_tar() {
    let e = open_bytes(b"\x89PNG\r\n\x1a\n".repeat(100)).unwrap_err();
    assert!(matches!(
        e.layer_error(),
        Some(crate::archive::TarError::NotTar { .. })
    ));
}

#[test]
fn bad_descriptor_is_an_ovf_error_with_context() {
    let e = open_bytes(ova(&[("x.ovf", b"<?xml version=\"1.0\"?>\n<a>")])).unwrap_err();
    assert!(matches!(e.layer_error(), Some(OvfError::Truncated { .. })));
    assert!(e.to_string().contains("x.ovf"), "{e}");
}

#[test]
fn missing_href_names_the_href() {
    let desc = descriptor(&file("f", "disk1.vmdk", ""), &disk("d", "f"));
    let e = open_bytes(ova(&[("a.ovf", desc.as_bytes())])).unwrap_err();
    assert!(matches!(pkg_err(&e), PackageError::HrefNotFound { href, .. } if href == "disk1.vmdk"));
    assert!(e.to_string().contains("disk1.vmdk"));
}

#[test]
fn declared_size_must_match() {
    let desc = descriptor(&file("f", "d.vmdk", r#" ovf:size="10595840""#), "");
    let e = open_bytes(ova(&[("a.ovf", desc.as_bytes()), ("d.vmdk", &[0u8; 100])])).unwrap_err();
    assert!(matches!(
        pkg_err(&e),
        PackageError::SizeMismatch {
            declared: 10_595_840,
            actual: 100,
            ..
        }
    ));
}

#[test]
fn chunked_files_are_joined_in_order() {
    let desc = descriptor(
        &file("f", "disk1.vmdk", r#" ovf:size="25" ovf:chunkSize="10""#),
        &disk("d", "f"),
    );
    let bytes = ova(&[
        ("a.ovf", desc.as_bytes()),
        ("disk1.vmdk.000000002", b"CCCCC"),
        ("disk1.vmdk.000000000", b"AAAAAAAAAA"),
        ("disk1.vmdk.000000001", b"BBBBBBBBBB"),
    ]);
    let p = open_bytes(bytes).unwrap();
    assert_eq!(p.files[0].location, FileLocation::Chunks(vec![2, 3, 1]));
    let d = &p.disks[0];
    assert_eq!(d.member, None);
    assert_eq!(d.stem, "disk1");
    assert_eq!(
        read_all(&**d.data.as_ref().unwrap()),
        b"AAAAAAAAAABBBBBBBBBBCCCCC"
    );
}

#[test]
fn chunk_rules() {
    let desc = |extra: &str| descriptor(&file("f", "disk1.vmdk", extra), "");
    // A gap (virt-v2v test-i-ova-chunked-gap): chunk 1 missing.
    let d = desc(r#" ovf:size="32768" ovf:chunkSize="10240""#);
    let e = open_bytes(ova(&[
        ("a.ovf", d.as_bytes()),
        ("disk1.vmdk.000000000", &[0u8; 10240]),
        ("disk1.vmdk.000000002", &[0u8; 12288]),
    ]))
    .unwrap_err();
    assert!(matches!(
        pkg_err(&e),
        PackageError::MissingChunk { index: 1, name, .. } if name == "disk1.vmdk.000000001"
    ));
    // No chunk at all, even with an unchunked member of that name.
    let e = open_bytes(ova(&[("a.ovf", d.as_bytes()), ("disk1.vmdk", &[0u8; 10])])).unwrap_err();
    assert!(matches!(
        pkg_err(&e),
        PackageError::MissingChunk { index: 0, .. }
    ));
    // A middle chunk of the wrong size.
    let d = desc(r#" ovf:chunkSize="4""#);
    let e = open_bytes(ova(&[
        ("a.ovf", d.as_bytes()),
        ("disk1.vmdk.000000000", b"1234"),
        ("disk1.vmdk.000000001", b"123"),
        ("disk1.vmdk.000000002", b"1"),
    ]))
    .unwrap_err();
    assert!(matches!(
        pkg_err(&e),
        PackageError::ChunkSizeMismatch {
            size: 3,
            chunk_size: 4,
            ..
        }
    ));
    // A last chunk larger than the chunk size.
    let e = open_bytes(ova(&[
        ("a.ovf", d.as_bytes()),
        ("disk1.vmdk.000000000", b"12345"),
    ]))
    .unwrap_err();
    assert!(matches!(
        pkg_err(&e),
        PackageError::ChunkSizeMismatch { size: 5, .. }
    ));
    // ovf:size is the size of the whole file.
    let d = desc(r#" ovf:size="9" ovf:chunkSize="4""#);
    let e = open_bytes(ova(&[
        ("a.ovf", d.as_bytes()),
        ("disk1.vmdk.000000000", b"1234"),
        ("disk1.vmdk.000000001", b"12"),
    ]))
    .unwrap_err();
    assert!(matches!(
        pkg_err(&e),
        PackageError::SizeMismatch {
            declared: 9,
            actual: 6,
            ..
        }
    ));
}

#[test]
fn gzip_and_unknown_compression_are_marked_not_decoded() {
    let desc = descriptor(
        &[
            file("f1", "disk1.vmdk.gz", r#" ovf:compression="gzip""#),
            file("f2", "disk2.vmdk.bz2", r#" ovf:compression="bzip2""#),
            file("f3", "disk3.vmdk", r#" ovf:compression="identity""#),
        ]
        .concat(),
        &[disk("d1", "f1"), disk("d2", "f2"), disk("d3", "f3")].concat(),
    );
    let p = open_bytes(ova(&[
        ("a.ovf", desc.as_bytes()),
        ("disk1.vmdk.gz", &[0x1f, 0x8b]),
        ("disk2.vmdk.bz2", b"BZh"),
        ("disk3.vmdk", b"x"),
    ]))
    .unwrap();
    assert_eq!(p.disks[0].encoding, Encoding::Gzip);
    assert_eq!(p.disks[0].stem, "disk1");
    assert_eq!(p.disks[0].member, Some(1));
    assert_eq!(p.disks[1].encoding, Encoding::Unsupported("bzip2".into()));
    assert_eq!(p.disks[1].stem, "disk2.vmdk");
    assert_eq!(p.disks[2].encoding, Encoding::Identity);
    assert_eq!(p.warnings.len(), 1);
}

#[test]
fn url_hrefs_are_remote_and_never_fetched() {
    let desc = descriptor(
        &[
            file("f1", "http://example.com/disk1.vmdk", ""),
            file("f2", "file:///etc/passwd", ""),
        ]
        .concat(),
        &disk("d1", "f1"),
    );
    let p = open_bytes(ova(&[("a.ovf", desc.as_bytes())])).unwrap();
    assert_eq!(p.files[0].location, FileLocation::Remote);
    assert_eq!(p.files[1].location, FileLocation::Remote);
    assert!(p.files[1].data.is_none());
    let d = &p.disks[0];
    assert!(d.data.is_none() && d.member.is_none());
    assert_eq!(d.stem, "disk1");
    assert_eq!(p.warnings.len(), 2);
}

#[test]
fn hostile_hrefs_are_refused() {
    for (href, problem) in [
        ("/etc/passwd", NameProblem::Absolute),
        ("../outside.vmdk", NameProblem::DotDot),
        ("a/../../b", NameProblem::DotDot),
        ("", NameProblem::Empty),
        ("a&#10;b", NameProblem::ControlChar),
    ] {
        let desc = descriptor(&file("f", href, ""), "");
        let e = open_bytes(ova(&[("a.ovf", desc.as_bytes())])).unwrap_err();
        assert!(
            matches!(pkg_err(&e), PackageError::BadHref { problem: p, .. } if *p == problem),
            "{href}: {e}"
        );
    }
}

#[test]
fn two_files_naming_one_member_are_refused() {
    let desc = descriptor(
        &[file("f1", "a.vmdk", ""), file("f2", "./a.vmdk", "")].concat(),
        "",
    );
    let e = open_bytes(ova(&[("x.ovf", desc.as_bytes()), ("a.vmdk", b"a")])).unwrap_err();
    assert!(matches!(
        pkg_err(&e),
        PackageError::HrefsShareMember { first, second, member }
            if first == "a.vmdk" && second == "./a.vmdk" && member == "a.vmdk"
    ));
}

#[test]
fn percent_encoded_hrefs_fall_back_to_the_decoded_name() {
    let desc = descriptor(&file("f", "my%20disk.vmdk", ""), &disk("d", "f"));
    let p = open_bytes(ova(&[("x.ovf", desc.as_bytes()), ("my disk.vmdk", b"a")])).unwrap();
    assert_eq!(p.disks[0].member, Some(1));
    assert_eq!(p.disks[0].stem, "my disk");
    // The literal name wins when it exists.
    let p = open_bytes(ova(&[
        ("x.ovf", desc.as_bytes()),
        ("my disk.vmdk", b"a"),
        ("my%20disk.vmdk", b"b"),
    ]))
    .unwrap();
    assert_eq!(p.disks[0].member, Some(2));
}

#[test]
fn disk_stems_are_unique_and_blank_disks_use_their_id() {
    let desc = descriptor(
        &[file("f1", "a/disk.vmdk", ""), file("f2", "b/disk.vmdk", "")].concat(),
        &[
            disk("d1", "f1"),
            disk("d2", "f2"),
            r#"<Disk ovf:diskId="blank/1" ovf:capacity="1"/>"#.to_string(),
        ]
        .concat(),
    );
    let p = open_bytes(ova(&[
        ("x.ovf", desc.as_bytes()),
        ("a/disk.vmdk", b"1"),
        ("b/disk.vmdk", b"2"),
    ]))
    .unwrap();
    let stems: Vec<_> = p.disks.iter().map(|d| d.stem.as_str()).collect();
    assert_eq!(stems, ["disk", "disk-2", "blank_1"]);
    let blank = &p.disks[2];
    assert!(blank.file.is_none() && blank.member.is_none() && blank.data.is_none());
}

/// A tar whose entries are written with raw typeflags (directories, symlinks).
fn ova_with_types(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, t, data) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(*t);
        h.set_size(data.len() as u64);
        if *t == tar::EntryType::Symlink {
            h.set_link_name("target").unwrap();
        }
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn hrefs_to_directories_or_links_do_not_resolve_to_data() {
    let desc = descriptor(&file("f", "dir", ""), "");
    let e = open_bytes(ova_with_types(&[
        ("x.ovf", tar::EntryType::Regular, desc.as_bytes()),
        ("dir/", tar::EntryType::Directory, b""),
    ]))
    .unwrap_err();
    assert!(matches!(pkg_err(&e), PackageError::NotARegularFile { .. }));
    let desc = descriptor(&file("f", "link", ""), "");
    let p = ova_with_types(&[
        ("x.ovf", tar::EntryType::Regular, desc.as_bytes()),
        ("link", tar::EntryType::Symlink, b""),
    ]);
    let e = open_bytes(p).unwrap_err();
    assert!(matches!(pkg_err(&e), PackageError::HrefNotFound { .. }));
}

#[test]
fn directories_are_members_and_links_are_not() {
    let desc = descriptor("", "");
    let p = open_bytes(ova_with_types(&[
        ("x.ovf", tar::EntryType::Regular, desc.as_bytes()),
        ("dir/", tar::EntryType::Directory, b""),
        ("link", tar::EntryType::Symlink, b""),
    ]))
    .unwrap();
    let kinds: Vec<_> = p
        .members
        .iter()
        .map(|m| (m.name.as_str(), m.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("x.ovf", MemberKind::Regular),
            ("dir", MemberKind::Directory)
        ]
    );
}

/// Counts the bytes read from a source.
struct Counting {
    inner: Vec<u8>,
    read: AtomicU64,
}

impl ReadAt for Counting {
    fn len(&self) -> u64 {
        self.inner.len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let n = self.inner.read_at(offset, buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[test]
fn opening_reads_headers_and_the_descriptor_only() {
    let desc = descriptor(&file("f", "disk.vmdk", ""), &disk("d", "f"));
    let big = vec![7u8; 4 << 20];
    let bytes = ova(&[
        ("x.ovf", desc.as_bytes()),
        ("x.mf", b"SHA1(x.ovf)= 00\n"),
        ("disk.vmdk", &big),
    ]);
    let src = Arc::new(Counting {
        inner: bytes,
        read: AtomicU64::new(0),
    });
    let p = open_ova_source(src.clone(), Path::new("x.ova")).unwrap();
    assert_eq!(p.disks.len(), 1);
    let magic_sniff = 10;
    let headers = 4 * 512; // three members and the end block
    assert_eq!(
        src.read.load(Ordering::Relaxed),
        magic_sniff + headers + desc.len() as u64
    );
}

/// A source that is `head` followed by zeros up to `len` bytes, without allocating them.
struct Sparse {
    head: Vec<u8>,
    len: u64,
}

impl ReadAt for Sparse {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let n = crate::io::clamp_len(offset, buf.len(), self.len);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = self
                .head
                .get((offset + i as u64) as usize)
                .copied()
                .unwrap_or(0);
        }
        Ok(n)
    }
}

#[test]
fn oversized_descriptor_is_refused_before_reading_it() {
    let size = crate::ovf::MAX_DESCRIPTOR_BYTES + 1;
    let mut h = tar::Header::new_ustar();
    h.set_path("huge.ovf").unwrap();
    h.set_size(size);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let src = Arc::new(Sparse {
        head: h.as_bytes().to_vec(),
        len: 512 + size + 1024,
    });
    let e = open_ova_source(src, Path::new("x.ova")).unwrap_err();
    assert!(matches!(e.layer_error(), Some(OvfError::TooLarge { .. })));
}

// ---------------------------------------------------------------------------------------
// Unpacked packages.

fn write(dir: &Path, name: &str, data: &[u8]) {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(p, data).unwrap();
}

#[test]
fn folder_package_members_and_siblings() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let desc = descriptor(
        &[
            file("f1", "disks/disk1.vmdk", r#" ovf:size="4""#),
            file("f2", "notes.txt", ""),
        ]
        .concat(),
        &disk("d1", "f1"),
    );
    write(dir, "vm.ovf", desc.as_bytes());
    write(dir, "disks/disk1.vmdk", b"disk");
    write(dir, "notes.txt", b"n");
    write(dir, "VM.mf", b"SHA1(vm.ovf)= 00\n");
    write(dir, "vm.cert", b"c");
    write(dir, "unrelated.bin", b"not a member");
    let p = open(&dir.join("vm.ovf")).unwrap();
    assert_eq!(p.kind, SourceKind::Folder);
    let names: Vec<_> = p.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "vm.ovf",
            "disks/disk1.vmdk",
            "notes.txt",
            "VM.mf",
            "vm.cert"
        ]
    );
    assert_eq!(
        (p.manifest_member, p.certificate_member),
        (Some(3), Some(4))
    );
    assert_eq!(p.disks[0].member, Some(1));
    assert_eq!(p.disks[0].stem, "disk1");
    assert_eq!(read_all(&**p.disks[0].data.as_ref().unwrap()), b"disk");
    assert!(p.members[1].data_offset.is_none());
    assert!(p.archive.is_none() && p.tar_index.is_none());
}

#[test]
fn folder_exact_case_sibling_is_preferred() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    write(dir, "vm.ovf", descriptor("", "").as_bytes());
    write(dir, "VM.MF", b"upper");
    write(dir, "vm.mf", b"exact");
    let p = open(&dir.join("vm.ovf")).unwrap();
    let m = &p.members[p.manifest_member.unwrap()];
    assert_eq!(m.name, "vm.mf");
}

#[test]
fn folder_symlinks_are_never_followed_inside_or_out() {
    let t = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let dir = t.path();
    write(dir, "real/disk.vmdk", b"inside");
    write(outside.path(), "secret", b"secret");
    write(outside.path(), "sub/disk.vmdk", b"secret");
    std::os::unix::fs::symlink("real/disk.vmdk", dir.join("link.vmdk")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), dir.join("escape.vmdk")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/x", dir.join("dangling.vmdk")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("sub"), dir.join("sub")).unwrap();

    write(
        dir,
        "ok.ovf",
        descriptor(&file("f", "real/disk.vmdk", ""), &disk("d", "f")).as_bytes(),
    );
    let p = open(&dir.join("ok.ovf")).unwrap();
    assert_eq!(read_all(&**p.disks[0].data.as_ref().unwrap()), b"inside");
    assert_eq!(p.members[1].name, "real/disk.vmdk");

    for (ovf, href) in [
        ("in.ovf", "link.vmdk"),
        ("bad.ovf", "escape.vmdk"),
        ("dang.ovf", "dangling.vmdk"),
        ("sub.ovf", "sub/disk.vmdk"),
    ] {
        write(dir, ovf, descriptor(&file("f", href, ""), "").as_bytes());
        let e = open(&dir.join(ovf)).unwrap_err();
        assert!(
            matches!(pkg_err(&e), PackageError::Symlink { .. }),
            "{href}: {e}"
        );
    }
    // Lookups after the open go through the same rule.
    assert!(p.open_in_package("link.vmdk").is_err());
    assert!(p.open_in_package("sub/disk.vmdk").is_err());
    assert!(p.open_in_package("missing.vmdk").unwrap().is_none());
    let m = p.open_in_package("real/disk.vmdk").unwrap().unwrap();
    assert_eq!(read_all(&*m.data), b"inside");
}

#[test]
fn folder_files_are_opened_through_the_folder_held_at_open() {
    let t = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let dir = t.path().join("pkg");
    write(
        &dir,
        "vm.ovf",
        descriptor(&file("f", "d.vmdk", ""), &disk("d", "f")).as_bytes(),
    );
    write(&dir, "d.vmdk", b"mine");
    write(&dir, "extent.vmdk", b"extent");
    write(other.path(), "extent.vmdk", b"forged");
    let p = open(&dir.join("vm.ovf")).unwrap();
    // The package folder is swapped for a link to another folder after the open.
    std::fs::rename(&dir, t.path().join("moved")).unwrap();
    std::os::unix::fs::symlink(other.path(), &dir).unwrap();
    let m = p.open_in_package("extent.vmdk").unwrap().unwrap();
    assert_eq!(read_all(&*m.data), b"extent");
    assert_eq!(read_all(&**p.disks[0].data.as_ref().unwrap()), b"mine");
}

#[test]
fn folder_descriptor_through_a_symlink_resolves_beside_its_target() {
    let t = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    write(
        t.path(),
        "pkg/vm.ovf",
        descriptor(&file("f", "d.vmdk", ""), "").as_bytes(),
    );
    write(t.path(), "pkg/d.vmdk", b"d");
    let link = elsewhere.path().join("link.ovf");
    std::os::unix::fs::symlink(t.path().join("pkg/vm.ovf"), &link).unwrap();
    let p = open(&link).unwrap();
    assert_eq!(p.members[0].name, "vm.ovf");
    assert_eq!(p.path, link);
    assert_eq!(p.members[1].name, "d.vmdk");
}

#[test]
fn folder_hrefs_to_directories_and_fifos_are_not_regular_files() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    std::fs::create_dir(dir.join("adir")).unwrap();
    write(
        dir,
        "a.ovf",
        descriptor(&file("f", "adir", ""), "").as_bytes(),
    );
    let e = open(&dir.join("a.ovf")).unwrap_err();
    assert!(matches!(pkg_err(&e), PackageError::NotARegularFile { .. }));

    let fifo = dir.join("fifo.vmdk");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo is needed for this test");
    write(
        dir,
        "b.ovf",
        descriptor(&file("f", "fifo.vmdk", ""), "").as_bytes(),
    );
    // Must not block on the FIFO.
    let e = open(&dir.join("b.ovf")).unwrap_err();
    assert!(matches!(pkg_err(&e), PackageError::NotARegularFile { .. }));
}

#[test]
fn folder_hostile_missing_and_remote_hrefs() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    write(
        dir,
        "abs.ovf",
        descriptor(&file("f", "/etc/passwd", ""), "").as_bytes(),
    );
    let e = open(&dir.join("abs.ovf")).unwrap_err();
    assert!(matches!(
        pkg_err(&e),
        PackageError::BadHref {
            problem: NameProblem::Absolute,
            ..
        }
    ));
    write(
        dir,
        "up.ovf",
        descriptor(&file("f", "../x", ""), "").as_bytes(),
    );
    let e = open(&dir.join("up.ovf")).unwrap_err();
    assert!(matches!(
        pkg_err(&e),
        PackageError::BadHref {
            problem: NameProblem::DotDot,
            ..
        }
    ));
    write(
        dir,
        "miss.ovf",
        descriptor(&file("f", "nope.vmdk", ""), "").as_bytes(),
    );
    let e = open(&dir.join("miss.ovf")).unwrap_err();
    assert!(matches!(pkg_err(&e), PackageError::HrefNotFound { .. }));
    write(
        dir,
        "url.ovf",
        descriptor(&file("f", "https://x/y.vmdk", ""), &disk("d", "f")).as_bytes(),
    );
    let p = open(&dir.join("url.ovf")).unwrap();
    assert_eq!(p.files[0].location, FileLocation::Remote);
    assert_eq!(p.members.len(), 1);
}

#[test]
fn folder_chunks_and_gaps() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let desc = descriptor(
        &file("f", "d/disk.vmdk", r#" ovf:chunkSize="3""#),
        &disk("d", "f"),
    );
    write(dir, "c.ovf", desc.as_bytes());
    write(dir, "d/disk.vmdk.000000000", b"abc");
    write(dir, "d/disk.vmdk.000000001", b"def");
    let p = open(&dir.join("c.ovf")).unwrap();
    assert_eq!(read_all(&**p.disks[0].data.as_ref().unwrap()), b"abcdef");
    assert_eq!(p.members.len(), 3);
    write(dir, "d/disk.vmdk.000000003", b"x");
    let e = open(&dir.join("c.ovf")).unwrap_err();
    assert!(matches!(
        pkg_err(&e),
        PackageError::MissingChunk { index: 2, .. }
    ));
}

#[test]
fn folder_missing_descriptor_is_an_io_error() {
    let t = tempfile::tempdir().unwrap();
    let e = open(&t.path().join("none.ovf")).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Io { .. }));
    let e = open(&t.path().join("none.ova")).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Io { .. }));
}

#[test]
fn folder_descriptor_without_a_name_is_refused_as_not_found() {
    // "/" canonicalizes, but names no file in its folder: the one way (besides a race with
    // a deletion) that the descriptor is missing after the canonicalize found it.
    let e = folder::open(Path::new("/")).unwrap_err();
    assert_eq!(e.refusal(), Some(crate::error::Refusal::NotFound), "{e}");
    assert_eq!(e.to_string(), "cannot open /: no such file or folder");
}

/// A small xorshift generator for deterministic mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Recomputes the checksum of the 512-byte header at `at`.
fn reseal(bytes: &mut [u8], at: usize) {
    let block = &mut bytes[at..at + 512];
    block[148..156].copy_from_slice(b"        ");
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

#[test]
fn mutated_archives_never_panic() {
    let desc = descriptor(
        &file("f", "disk.vmdk", r#" ovf:size="600" ovf:chunkSize="600""#),
        &disk("d", "f"),
    );
    let base = ova(&[
        ("x.ovf", desc.as_bytes()),
        ("x.mf", b"m"),
        ("disk.vmdk.000000000", &[1u8; 600]),
    ]);
    // Header offsets in this archive.
    let desc_blocks = desc.len().div_ceil(512);
    let headers = [0, 512 * (1 + desc_blocks), 512 * (3 + desc_blocks)];
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let interesting = [
        0u8, b'0', b'7', b'x', b'L', b'g', b'S', b'5', b'/', b'.', 0x80, 0xff, b' ',
    ];
    for _ in 0..3000 {
        let mut bytes = base.clone();
        let h = headers[rng.below(headers.len())];
        for _ in 0..=rng.below(3) {
            let at = h + rng.below(512);
            bytes[at] = interesting[rng.below(interesting.len())];
        }
        if rng.below(4) != 0 {
            reseal(&mut bytes, h);
        }
        if rng.below(5) == 0 {
            let cut = rng.below(bytes.len());
            bytes.truncate(cut);
        }
        let _ = open_bytes(bytes);
    }
}

#[test]
fn access_ceiling_never_gives_more_than_the_file() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("f");
    std::fs::write(&f, b"x").unwrap();
    let me = (nix::unistd::geteuid(), nix::unistd::getegid());
    let other = (
        nix::unistd::Uid::from_raw(65534),
        nix::unistd::Gid::from_raw(65534),
    );
    let ceiling = |mode: u32, uid, gid| {
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
        nix::unistd::chown(&f, Some(uid), Some(gid)).unwrap();
        access_ceiling(&std::fs::metadata(&f).unwrap())
    };
    // Our own file: its bits, without set-id or sticky bits.
    assert_eq!(ceiling(0o640, me.0, me.1), 0o640);
    assert_eq!(ceiling(0o4755, me.0, me.1), 0o755);
    assert_eq!(ceiling(0o600, me.0, me.1), 0o600);
    assert!(
        me.0.is_root(),
        "chown to another user needs root: run the tests as root"
    );
    // Another group: the mount's group gets what both that group and others may.
    assert_eq!(ceiling(0o654, me.0, other.1), 0o644);
    assert_eq!(ceiling(0o640, me.0, other.1), 0o600);
    // Another owner: the owner bits do not limit the mount's owner (it opened the file).
    assert_eq!(ceiling(0o044, other.0, me.1), 0o744);
    assert_eq!(ceiling(0o600, other.0, other.1), 0o700);
}
