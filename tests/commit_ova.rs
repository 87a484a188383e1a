//! Commits into OVAs and folders, judged by GNU tar, the coreutils sums and qemu-img.
//!
//! Contents:
//! - `in_place_*`: the fast path on ustar, GNU and pax archives made by GNU tar, with
//!   descriptors that keep their length, shrink (padded), grow within the last block; the
//!   archive keeps its size and member order.
//! - `manifest_styles_*`: SHA1/SHA256/SHA512, BSD, CRLF, upper case, ovftool padding,
//!   `SHA2-256`, manifest last (VirtualBox), manifest without the descriptor: only the
//!   descriptor's digest changes.
//! - `certificate_*`: dropped (by a rewrite) when the manifest changes; kept when the manifest
//!   does not list the descriptor.
//! - `rewrite_*`: the descriptor outgrows its blocks; the rewrite keeps members, owners,
//!   modes and times, puts the descriptor first, leaves slack, and the next edit is in place;
//!   long names (ustar prefix, GNU long name); refusals that leave the OVA untouched.
//! - `big_member_*`: a member above 8 GiB (GNU base-256) next to an in-place commit.
//! - `read_only_*`, `unchanged_*`, `folder_*`, `external_change_*`.
//! - `bench_commit_on_4_gib_ova`: prints fast-path timings (no assertion on time).

#[path = "commit_support.rs"]
mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Instant;

use ovafs::archive::write::{self, MemberHeader};
use ovafs::commit::{self, ChangeSet, CommitOptions, CommitPath, Committer, padding};
use support::{
    Fixture, Order, Style, check_ova, leftovers, run, tar_list, with_annotation, with_cpus,
};

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ovafs-commit-")
        .tempdir()
        .unwrap()
}

fn committer(source: &Path) -> Committer {
    committer_with(source, CommitOptions::default())
}

fn committer_with(source: &Path, opts: CommitOptions) -> Committer {
    assert!(commit::recover(source).unwrap().is_clean());
    let pkg = ovafs::package::open(source).unwrap();
    Committer::open_with(&pkg, opts).unwrap()
}

/// The descriptor with a longer OS description: `extra` more bytes.
fn grown(desc: &str, extra: usize) -> String {
    desc.replace(
        "<Description>Linux</Description>",
        &format!("<Description>Linux{}</Description>", "x".repeat(extra)),
    )
}

/// The descriptor without its OperatingSystemSection and ProductSection (over 512 bytes
/// shorter, still valid).
fn shrunk(desc: &str) -> String {
    let cut = |s: &str, from: &str, to: &str| -> String {
        let a = s.find(from).unwrap();
        let b = s.find(to).unwrap() + to.len();
        format!("{}{}", &s[..a], &s[b..])
    };
    let s = cut(
        desc,
        "    <OperatingSystemSection",
        "</OperatingSystemSection>\n",
    );
    let s = cut(&s, "    <ProductSection>", "</ProductSection>\n");
    assert!(desc.len() - s.len() > 512);
    s
}

/// Checks that the new manifest differs from the old only inside the descriptor's digest.
fn assert_only_descriptor_digest_changed(old: &[u8], new: &[u8], ovf: &str) {
    assert_eq!(old.len(), new.len(), "the manifest changed length");
    let old = String::from_utf8_lossy(old);
    let new = String::from_utf8_lossy(new);
    let (ol, nl): (Vec<&str>, Vec<&str>) = (old.split('\n').collect(), new.split('\n').collect());
    assert_eq!(ol.len(), nl.len());
    for (o, n) in ol.iter().zip(&nl) {
        if o.contains(&format!("({ovf})")) {
            let p = o.find(')').unwrap();
            assert_eq!(o[..p], n[..p]);
            assert_ne!(o, n, "the descriptor digest did not change");
        } else {
            assert_eq!(o, n, "a line not about the descriptor changed");
        }
    }
}

fn in_place(format: &'static str) {
    let t = tempdir();
    let mut fx = Fixture::new(t.path(), "app");
    fx.tar_format = format;
    let ova = fx.build();
    let size = fs::metadata(&ova).unwrap().len();
    let listing = tar_list(&ova);
    let mut c = committer(&ova);
    let desc = fx.descriptor();

    // Same length.
    let d1 = with_cpus(&desc, 4);
    assert_eq!(d1.len(), desc.len());
    let r = c.commit(&ChangeSet::descriptor(d1.as_bytes())).unwrap();
    assert_eq!(r.path, CommitPath::InPlace);
    assert_eq!(r.descriptor, d1.as_bytes());
    assert!(r.manifest_changed && !r.replaced);
    let got = check_ova(&fx, &ova, t.path());
    assert_eq!(got.descriptor, d1.as_bytes());
    assert_eq!(Some(r.manifest.clone().unwrap()), got.manifest);

    // Grows within its last block (when the block has room).
    let room = write::round_up_block(desc.len() as u64).unwrap() as usize - desc.len();
    if room > 0 {
        let d2 = grown(&d1, room);
        let r = c.commit(&ChangeSet::descriptor(d2.as_bytes())).unwrap();
        assert_eq!(r.path, CommitPath::InPlace);
        assert_eq!(check_ova(&fx, &ova, t.path()).descriptor, d2.as_bytes());
    }

    // Shrinks by more than a block: padded with whitespace to keep the block count.
    let d3 = shrunk(&d1);
    let r = c.commit(&ChangeSet::descriptor(d3.as_bytes())).unwrap();
    assert_eq!(r.path, CommitPath::InPlace);
    assert_eq!(padding::split_padding(&r.descriptor).0, d3.as_bytes());
    assert!(r.descriptor.len() > d3.len());
    let got = check_ova(&fx, &ova, t.path());
    assert_eq!(got.descriptor, r.descriptor);

    // And back to the original, which fits again.
    let r = c.commit(&ChangeSet::descriptor(desc.as_bytes())).unwrap();
    assert_eq!(r.path, CommitPath::InPlace);
    assert_eq!(check_ova(&fx, &ova, t.path()).descriptor, desc.as_bytes());

    // Same size, same members at the same places; the package layer reads it.
    assert_eq!(fs::metadata(&ova).unwrap().len(), size);
    let after = tar_list(&ova);
    assert_eq!(
        listing
            .iter()
            .map(|l| (&l.name, l.block))
            .collect::<Vec<_>>(),
        after.iter().map(|l| (&l.name, l.block)).collect::<Vec<_>>()
    );
    let pkg = ovafs::package::open(&ova).unwrap();
    assert_eq!(&pkg.descriptor.bytes[..], desc.as_bytes());
    assert!(leftovers(&ova).is_empty());
}

#[test]
fn in_place_ustar() {
    in_place("ustar");
}

#[test]
fn in_place_gnu() {
    in_place("gnu");
}

#[test]
fn in_place_pax() {
    in_place("pax");
}

#[test]
fn manifest_styles_keep_every_byte_but_the_descriptor_digest() {
    for style in [
        Style::Sha1,
        Style::Sha256,
        Style::Sha512,
        Style::Bsd,
        Style::Crlf,
        Style::Upper,
        Style::Padded,
        Style::Sha2Prefix,
    ] {
        let t = tempdir();
        let mut fx = Fixture::new(t.path(), "styled");
        fx.style = Some(style);
        let ova = fx.build();
        let old_mf = fs::read(t.path().join("pkg").join(fx.mf())).unwrap();
        let mut c = committer(&ova);
        let d = with_cpus(&fx.descriptor(), 8);
        let r = c.commit(&ChangeSet::descriptor(d.as_bytes())).unwrap();
        assert_eq!(r.path, CommitPath::InPlace, "{style:?}");
        let got = check_ova(&fx, &ova, t.path());
        let new_mf = got.manifest.unwrap();
        assert_only_descriptor_digest_changed(&old_mf, &new_mf, &fx.ovf());
        if style == Style::Upper {
            for line in String::from_utf8_lossy(&new_mf).lines() {
                let hex = line.split_once("= ").unwrap().1;
                assert_eq!(hex, hex.to_uppercase(), "{line}");
            }
        }
    }
}

#[test]
fn manifest_styles_manifest_last_as_virtualbox_writes_it() {
    let t = tempdir();
    let mut fx = Fixture::new(t.path(), "vbox");
    fx.order = Order::ManifestLast;
    fx.style = Some(Style::Bsd);
    let ova = fx.build();
    let mut c = committer(&ova);
    let d = with_cpus(&fx.descriptor(), 3);
    assert_eq!(
        c.commit(&ChangeSet::descriptor(d.as_bytes())).unwrap().path,
        CommitPath::InPlace
    );
    let got = check_ova(&fx, &ova, t.path());
    let names: Vec<_> = got.listing.iter().map(|l| l.name.clone()).collect();
    assert_eq!(names, [fx.ovf(), fx.disk_name.clone(), fx.mf()]);
}

#[test]
fn certificate_kept_when_the_manifest_does_not_list_the_descriptor() {
    let t = tempdir();
    let mut fx = Fixture::new(t.path(), "nodesc");
    fx.style = Some(Style::OmitDescriptor);
    fx.cert = true;
    let ova = fx.build();
    let old_mf = fs::read(t.path().join("pkg").join(fx.mf())).unwrap();
    let mut c = committer(&ova);
    let r = c
        .commit(&ChangeSet::descriptor(
            with_cpus(&fx.descriptor(), 6).as_bytes(),
        ))
        .unwrap();
    assert_eq!(r.path, CommitPath::InPlace);
    assert!(!r.manifest_changed && r.certificate_dropped.is_none());
    let got = check_ova(&fx, &ova, t.path());
    assert_eq!(got.manifest.unwrap(), old_mf);
    assert!(got.listing.iter().any(|l| l.name == fx.cert_name()));
}

#[test]
fn certificate_dropped_by_a_rewrite_when_the_manifest_changes() {
    let t = tempdir();
    let mut fx = Fixture::new(t.path(), "signed");
    fx.cert = true;
    let ova = fx.build();
    let before = tar_list(&ova);
    let mut c = committer(&ova);
    let d = with_cpus(&fx.descriptor(), 4);
    let r = c.commit(&ChangeSet::descriptor(d.as_bytes())).unwrap();
    assert_eq!(r.path, CommitPath::Rewrite);
    assert!(r.replaced);
    assert_eq!(
        r.certificate_dropped.as_deref(),
        Some(fx.cert_name().as_str())
    );
    let got = check_ova(&fx, &ova, t.path());
    assert_eq!(padding::split_padding(&got.descriptor).0, d.as_bytes());
    let names: Vec<_> = got.listing.iter().map(|l| l.name.clone()).collect();
    assert_eq!(names, [fx.ovf(), fx.mf(), fx.disk_name.clone()]);
    // The disk keeps owner, mode and time.
    let disk = |l: &[support::Listed]| l.iter().find(|m| m.name == fx.disk_name).unwrap().clone();
    let (a, b) = (disk(&before), disk(&got.listing));
    assert_eq!(
        (a.owner, a.perms, a.when, a.size),
        (b.owner, b.perms, b.when, b.size)
    );
    assert!(leftovers(&ova).is_empty());
    // The next edit is in place.
    let r = c
        .commit(&ChangeSet::descriptor(
            with_cpus(&fx.descriptor(), 5).as_bytes(),
        ))
        .unwrap();
    assert_eq!(r.path, CommitPath::InPlace);
    check_ova(&fx, &ova, t.path());
}

#[test]
fn rewrite_when_the_descriptor_outgrows_its_blocks_then_in_place_thanks_to_slack() {
    for format in ["ustar", "gnu", "pax"] {
        let t = tempdir();
        let mut fx = Fixture::new(t.path(), "grow");
        fx.tar_format = format;
        let ova = fx.build();
        let before = tar_list(&ova);
        let mut c = committer(&ova);
        let desc = fx.descriptor();
        let big = with_annotation(&desc, 3000);
        let r = c.commit(&ChangeSet::descriptor(big.as_bytes())).unwrap();
        assert_eq!(r.path, CommitPath::Rewrite, "{format}");
        let slack = r.descriptor.len() - big.len();
        assert_eq!(slack as u64, padding::default_slack(big.len() as u64));
        let got = check_ova(&fx, &ova, t.path());
        assert_eq!(padding::split_padding(&got.descriptor).0, big.as_bytes());
        let disk =
            |l: &[support::Listed]| l.iter().find(|m| m.name == fx.disk_name).unwrap().clone();
        let (a, b) = (disk(&before), disk(&got.listing));
        assert_eq!(
            (a.owner, a.perms, a.when),
            (b.owner, b.perms, b.when),
            "{format}"
        );
        // The rewrite writes no pax headers.
        assert!(
            !fs::read(&ova)
                .unwrap()
                .windows(10)
                .any(|w| w == b"PaxHeader")
        );

        // Edits that grow by less than the slack, and one that shrinks, are in place.
        for (i, d) in [
            with_annotation(&with_cpus(&desc, 7), 3500),
            with_annotation(&desc, 100),
            with_cpus(&big, 9),
        ]
        .iter()
        .enumerate()
        {
            let r = c.commit(&ChangeSet::descriptor(d.as_bytes())).unwrap();
            assert_eq!(r.path, CommitPath::InPlace, "{format} edit {i}");
            let got = check_ova(&fx, &ova, t.path());
            assert_eq!(padding::split_padding(&got.descriptor).0, d.as_bytes());
        }
        assert!(leftovers(&ova).is_empty());
        let pkg = ovafs::package::open(&ova).unwrap();
        assert_eq!(
            padding::split_padding(&pkg.descriptor.bytes[..]).0,
            with_cpus(&big, 9).as_bytes()
        );
    }
}

#[test]
fn rewrite_puts_the_descriptor_first() {
    let t = tempdir();
    let mut fx = Fixture::new(t.path(), "late");
    fx.order = Order::DescriptorNotFirst;
    let ova = fx.build();
    let mut c = committer(&ova);
    // A small edit is made in place, where the descriptor is.
    let r = c
        .commit(&ChangeSet::descriptor(
            with_cpus(&fx.descriptor(), 4).as_bytes(),
        ))
        .unwrap();
    assert_eq!(r.path, CommitPath::InPlace);
    assert_eq!(tar_list(&ova)[0].name, fx.disk_name);
    // A rewrite puts it first.
    let r = c
        .commit(&ChangeSet::descriptor(
            with_annotation(&fx.descriptor(), 2000).as_bytes(),
        ))
        .unwrap();
    assert_eq!(r.path, CommitPath::Rewrite);
    let got = check_ova(&fx, &ova, t.path());
    let names: Vec<_> = got.listing.iter().map(|l| l.name.clone()).collect();
    assert_eq!(names, [fx.ovf(), fx.mf(), fx.disk_name.clone()]);
}

#[test]
fn rewrite_long_names_use_ustar_prefix_or_gnu_long_names() {
    for (disk_name, format, gnu_long) in [
        (
            format!("{}/{}/disk.img", "a".repeat(60), "b".repeat(59)),
            "ustar",
            false,
        ),
        (format!("{}.img", "n".repeat(150)), "gnu", true),
    ] {
        let t = tempdir();
        let mut fx = Fixture::new(t.path(), "long");
        fx.tar_format = format;
        // The disk's parent folders as members too (directories are rebuilt with `/`).
        let mut parent = String::new();
        for part in disk_name
            .split('/')
            .rev()
            .skip(1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            parent = if parent.is_empty() {
                part.to_string()
            } else {
                format!("{parent}/{part}")
            };
            fx.dirs.push(parent.clone());
        }
        fx.disk_name = disk_name;
        let ova = fx.build();
        let before = tar_list(&ova);
        let mut c = committer(&ova);
        let r = c
            .commit(&ChangeSet::descriptor(
                with_annotation(&fx.descriptor(), 2000).as_bytes(),
            ))
            .unwrap();
        assert_eq!(r.path, CommitPath::Rewrite);
        let after = check_ova(&fx, &ova, t.path()).listing;
        let shape = |l: &[support::Listed]| {
            l.iter()
                .filter(|m| !m.name.ends_with(".ovf") && !m.name.ends_with(".mf"))
                .map(|m| {
                    (
                        m.name.clone(),
                        m.perms.clone(),
                        m.owner.clone(),
                        m.when.clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(shape(&before), shape(&after));
        let bytes = fs::read(&ova).unwrap();
        assert_eq!(
            bytes.windows(13).any(|w| w == b"././@LongLink"),
            gnu_long,
            "{}",
            fx.disk_name
        );
    }
}

/// A tar archive assembled with our own header writer, for shapes GNU tar would take long to
/// make (huge sparse members) or refuses (hostile names).
fn hand_tar(path: &Path, members: &[(&str, Vec<u8>)], sparse_tail: Option<(&str, u64)>) {
    let template = {
        let mut t = [0u8; 512];
        t[100..108].copy_from_slice(b"0000644\0");
        t[108..116].copy_from_slice(b"0000000\0");
        t[116..124].copy_from_slice(b"0000000\0");
        t
    };
    let mut out = Vec::new();
    for (name, data) in members {
        out.extend(
            write::member_headers(
                &template,
                &MemberHeader {
                    name,
                    size: data.len() as u64,
                    mtime: 1_600_000_000,
                    typeflag: b'0',
                },
            )
            .unwrap(),
        );
        out.extend_from_slice(data);
        out.resize(out.len() + write::padding_len(data.len() as u64), 0);
    }
    let mut len = out.len() as u64;
    if let Some((name, size)) = sparse_tail {
        out.extend(
            write::member_headers(
                &template,
                &MemberHeader {
                    name,
                    size,
                    mtime: 1_600_000_000,
                    typeflag: b'0',
                },
            )
            .unwrap(),
        );
        len = out.len() as u64 + write::round_up_block(size).unwrap();
    }
    fs::write(path, &out).unwrap();
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len + 1024).unwrap();
}

/// A descriptor naming one raw disk `href` of `size` bytes and its manifest.
fn big_package(t: &Path, size: u64) -> (Fixture, std::path::PathBuf, Vec<u8>) {
    let mut fx = Fixture::new(t, "big");
    fx.disk_name = "big-disk1.img".into();
    let desc = ovafs::sample::descriptor_xml(&ovafs::sample::ApplianceSpec {
        name: "big".into(),
        cpus: 2,
        memory_mib: 1024,
        network: "VM Network".into(),
        disks: vec![ovafs::sample::DiskSpec {
            href: fx.disk_name.clone(),
            file_bytes: size,
            capacity_bytes: size,
            format_uri: "http://www.gnu.org/software/qemu/raw".into(),
            ..Default::default()
        }],
    });
    let mf = format!("SHA256(big.ovf)= {}\n", support::sha256(desc.as_bytes()));
    let ova = t.join("big.ova");
    hand_tar(
        &ova,
        &[
            ("big.ovf", desc.clone().into_bytes()),
            ("big.mf", mf.into_bytes()),
        ],
        Some((&fx.disk_name, size)),
    );
    (fx, ova, desc.into_bytes())
}

#[test]
fn big_member_above_8_gib_next_to_an_in_place_commit() {
    let t = tempdir();
    let size = (9 << 30) + 12345;
    let (_fx, ova, desc) = big_package(t.path(), size);
    let listing = tar_list(&ova);
    assert_eq!(listing[2].size, size);
    let mut c = committer(&ova);
    let d = with_cpus(std::str::from_utf8(&desc).unwrap(), 4);
    let r = c.commit(&ChangeSet::descriptor(d.as_bytes())).unwrap();
    assert_eq!(r.path, CommitPath::InPlace);
    let key = |l: &[support::Listed]| {
        l.iter()
            .map(|m| (m.name.clone(), m.size, m.block))
            .collect::<Vec<_>>()
    };
    assert_eq!(key(&tar_list(&ova)), key(&listing));
    let x = t.path().join("x");
    fs::create_dir_all(&x).unwrap();
    run(std::process::Command::new("tar")
        .arg("-xf")
        .arg(&ova)
        .arg("-C")
        .arg(&x)
        .args(["big.ovf", "big.mf"]));
    assert_eq!(fs::read(x.join("big.ovf")).unwrap(), d.as_bytes());
    let mf = fs::read_to_string(x.join("big.mf")).unwrap();
    let hex = mf.trim().strip_prefix("SHA256(big.ovf)= ").unwrap();
    fs::write(x.join("sums"), format!("{hex}  big.ovf\n")).unwrap();
    run(std::process::Command::new("sha256sum")
        .args(["-c", "--strict", "sums"])
        .current_dir(&x));
}

#[test]
fn read_only_source_is_refused_and_recovery_leaves_it_alone() {
    let t = tempdir();
    let fx = Fixture::new(t.path(), "ro");
    let ova = fx.build();
    fs::set_permissions(&ova, fs::Permissions::from_mode(0o444)).unwrap();
    assert!(commit::recover(&ova).unwrap().is_clean());
    let pkg = ovafs::package::open(&ova).unwrap();
    let e = Committer::open(&pkg).unwrap_err();
    assert!(commit::is_read_only(&e), "{e}");
    // A folder package whose descriptor is read-only.
    fx.write_files();
    let ovf = t.path().join("pkg").join(fx.ovf());
    fs::set_permissions(&ovf, fs::Permissions::from_mode(0o444)).unwrap();
    let pkg = ovafs::package::open(&ovf).unwrap();
    let e = Committer::open(&pkg).unwrap_err();
    assert!(commit::is_read_only(&e), "{e}");
}

#[test]
fn unchanged_descriptor_writes_nothing() {
    let t = tempdir();
    let fx = Fixture::new(t.path(), "same");
    let ova = fx.build();
    let before = fs::read(&ova).unwrap();
    let mut c = committer(&ova);
    let r = c
        .commit(&ChangeSet::descriptor(fx.descriptor().as_bytes()))
        .unwrap();
    assert_eq!(r.path, CommitPath::Unchanged);
    assert_eq!(r.bytes_written, 0);
    assert_eq!(fs::read(&ova).unwrap(), before);
}

#[test]
fn folder_package_renames_under_a_journal_and_drops_the_certificate() {
    let t = tempdir();
    let mut fx = Fixture::new(t.path(), "unpacked");
    fx.cert = true;
    fx.write_files();
    let pkg_dir = t.path().join("pkg");
    let ovf = pkg_dir.join(fx.ovf());
    fs::set_permissions(&ovf, fs::Permissions::from_mode(0o640)).unwrap();
    let mut c = committer(&ovf);
    let d = with_annotation(&fx.descriptor(), 5000);
    let r = c.commit(&ChangeSet::descriptor(d.as_bytes())).unwrap();
    assert_eq!(r.path, CommitPath::Folder);
    assert_eq!(
        r.certificate_dropped.as_deref(),
        Some(fx.cert_name().as_str())
    );
    assert_eq!(fs::read(&ovf).unwrap(), d.as_bytes());
    assert_eq!(
        fs::metadata(&ovf).unwrap().permissions().mode() & 0o777,
        0o640
    );
    assert!(!pkg_dir.join(fx.cert_name()).exists());
    let mf = fs::read_to_string(pkg_dir.join(fx.mf())).unwrap();
    let conv: String = mf
        .lines()
        .map(|l| {
            let (a, hex) = l.split_once(")= ").unwrap();
            format!("{hex}  {}\n", &a["SHA256(".len()..])
        })
        .collect();
    fs::write(t.path().join("sums"), conv).unwrap();
    run(std::process::Command::new("sha256sum")
        .arg("-c")
        .arg("--strict")
        .arg(t.path().join("sums"))
        .current_dir(&pkg_dir));
    let left: Vec<_> = fs::read_dir(&pkg_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("ovafs"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // A second commit: no certificate any more.
    let r = c
        .commit(&ChangeSet::descriptor(fx.descriptor().as_bytes()))
        .unwrap();
    assert_eq!(r.path, CommitPath::Folder);
    assert!(r.certificate_dropped.is_none());
    assert_eq!(fs::read(&ovf).unwrap(), fx.descriptor().as_bytes());
}

#[test]
fn external_change_is_noticed_and_the_archive_read_again() {
    let t = tempdir();
    let fx = Fixture::new(t.path(), "ext");
    let ova = fx.build();
    let mut c = committer(&ova);
    c.commit(&ChangeSet::descriptor(
        with_cpus(&fx.descriptor(), 4).as_bytes(),
    ))
    .unwrap();
    // Someone rebuilds the archive with the disk first.
    let mut fx2 = fx.clone();
    fx2.order = Order::DescriptorNotFirst;
    fx2.build();
    let r = c
        .commit(&ChangeSet::descriptor(
            with_cpus(&fx.descriptor(), 5).as_bytes(),
        ))
        .unwrap();
    assert_eq!(r.path, CommitPath::InPlace);
    let got = check_ova(&fx2, &ova, t.path());
    assert_eq!(got.descriptor, with_cpus(&fx.descriptor(), 5).as_bytes());
}

#[test]
fn rewrite_refused_when_a_member_would_be_lost_and_the_ova_untouched() {
    let t = tempdir();
    let fx = Fixture::new(t.path(), "hostile");
    let desc = fx.descriptor().into_bytes();
    let ova = t.path().join("hostile.ova");
    hand_tar(
        &ova,
        &[
            ("hostile.ovf", desc.clone()),
            ("../escape.txt", b"evil".to_vec()),
            (&fx.disk_name, fx.disk()),
        ],
        None,
    );
    let before = fs::read(&ova).unwrap();
    let mut c = committer(&ova);
    // In place is fine: nothing is dropped.
    let d = with_cpus(std::str::from_utf8(&desc).unwrap(), 4);
    assert_eq!(
        c.commit(&ChangeSet::descriptor(d.as_bytes())).unwrap().path,
        CommitPath::InPlace
    );
    let patched = fs::read(&ova).unwrap();
    assert_ne!(patched, before);
    // A rewrite would drop the refused member: refused, nothing changed.
    let e = c
        .commit(&ChangeSet::descriptor(with_annotation(&d, 3000).as_bytes()))
        .unwrap_err();
    assert!(
        matches!(
            commit::commit_error(&e),
            Some(commit::CommitError::CannotRewrite { .. })
        ),
        "{e}"
    );
    assert_eq!(fs::read(&ova).unwrap(), patched);
    assert!(leftovers(&ova).is_empty());
}

/// Fast-path commit timings on an OVA with a 4 GiB sparse raw disk (the archive is sparse
/// too). No assertion on time: `scripts/bench-commit` runs this with `--nocapture`.
#[test]
fn bench_commit_on_4_gib_ova() {
    let t = tempfile::Builder::new()
        .prefix("ovafs-bench-")
        .tempdir_in(
            std::env::var_os("OVAFS_BENCH_DIR").unwrap_or_else(|| std::env::temp_dir().into()),
        )
        .unwrap();
    let size = 4u64 << 30;
    let (_fx, ova, desc) = big_package(t.path(), size);
    let mut c = committer(&ova);
    let desc = String::from_utf8(desc).unwrap();
    let mut times = Vec::new();
    for i in 0..20u32 {
        let d = with_cpus(&desc, 1 + i % 9);
        let start = Instant::now();
        let r = c.commit(&ChangeSet::descriptor(d.as_bytes())).unwrap();
        times.push(start.elapsed());
        assert_eq!(r.path, CommitPath::InPlace);
    }
    times.sort();
    let ova_len = fs::metadata(&ova).unwrap().len();
    println!(
        "fast path, {} GiB OVA ({} descriptor bytes): min {:?}, median {:?}, max {:?} over {} commits",
        ova_len >> 30,
        desc.len(),
        times[0],
        times[times.len() / 2],
        times[times.len() - 1],
        times.len()
    );
    assert!(leftovers(&ova).is_empty());
}

/// Rewrite timings on an OVA with a 1 GiB disk of real (non-sparse) data, then the fast path
/// on the rewritten archive. Ignored by default (it writes 2 GiB); `scripts/bench-commit`
/// runs it.
#[test]
#[ignore]
fn bench_rewrite_on_1_gib_ova() {
    let t = tempfile::Builder::new()
        .prefix("ovafs-bench-")
        .tempdir_in(
            std::env::var_os("OVAFS_BENCH_DIR").unwrap_or_else(|| std::env::temp_dir().into()),
        )
        .unwrap();
    let size = 1u64 << 30;
    let (_fx, ova, desc) = big_package(t.path(), size);
    {
        // Fill the disk member with data so that nothing is sparse.
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(&ova).unwrap();
        let listing = tar_list(&ova);
        let start = support::data_offset(&ova, listing[2].block);
        let chunk: Vec<u8> = (0..(8u32 << 20)).map(|i| (i % 251) as u8).collect();
        let mut off = 0;
        while off < size {
            f.write_all_at(&chunk, start + off).unwrap();
            off += chunk.len() as u64;
        }
        f.sync_all().unwrap();
    }
    let mut c = committer(&ova);
    let desc = String::from_utf8(desc).unwrap();
    let start = Instant::now();
    let r = c
        .commit(&ChangeSet::descriptor(
            with_annotation(&desc, 3000).as_bytes(),
        ))
        .unwrap();
    let rewrite = start.elapsed();
    assert_eq!(r.path, CommitPath::Rewrite);
    let start = Instant::now();
    let r = c
        .commit(&ChangeSet::descriptor(
            with_annotation(&with_cpus(&desc, 4), 3100).as_bytes(),
        ))
        .unwrap();
    let fast = start.elapsed();
    assert_eq!(r.path, CommitPath::InPlace);
    println!(
        "rewrite, 1 GiB OVA: {rewrite:?} ({:.0} MiB/s); the next edit in place: {fast:?}",
        (size >> 20) as f64 / rewrite.as_secs_f64()
    );
}

#[test]
fn rewrite_keeps_a_stream_optimized_vmdk_readable_by_qemu_img() {
    let t = tempdir();
    let fx = Fixture::new(t.path(), "vm");
    let pkg = t.path().join("pkg");
    fs::create_dir_all(&pkg).unwrap();
    let raw = t.path().join("disk.raw");
    fs::write(&raw, fx.disk()).unwrap();
    let vmdk = pkg.join("vm-disk1.vmdk");
    run(std::process::Command::new("qemu-img")
        .args([
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
        ])
        .arg(&raw)
        .arg(&vmdk));
    let vmdk_bytes = fs::read(&vmdk).unwrap();
    let desc = ovafs::sample::descriptor_xml(&ovafs::sample::ApplianceSpec {
        name: "vm".into(),
        cpus: 2,
        memory_mib: 1024,
        network: "VM Network".into(),
        disks: vec![ovafs::sample::DiskSpec {
            href: "vm-disk1.vmdk".into(),
            file_bytes: vmdk_bytes.len() as u64,
            capacity_bytes: fx.disk_bytes as u64,
            format_uri: ovafs::sample::VMDK_STREAM_URI.into(),
            ..Default::default()
        }],
    });
    fs::write(pkg.join("vm.ovf"), &desc).unwrap();
    fs::write(
        pkg.join("vm.mf"),
        format!(
            "SHA256(vm.ovf)= {}\nSHA256(vm-disk1.vmdk)= {}\n",
            support::sha256(desc.as_bytes()),
            support::sha256(&vmdk_bytes)
        ),
    )
    .unwrap();
    let ova = t.path().join("vm.ova");
    run(std::process::Command::new("tar")
        .args(["--format=ustar", "-cf"])
        .arg(&ova)
        .arg("-C")
        .arg(&pkg)
        .args(["vm.ovf", "vm.mf", "vm-disk1.vmdk"]));
    let mut c = committer(&ova);
    let r = c
        .commit(&ChangeSet::descriptor(
            with_annotation(&desc, 5000).as_bytes(),
        ))
        .unwrap();
    assert_eq!(r.path, CommitPath::Rewrite);
    let r = c
        .commit(&ChangeSet::descriptor(with_cpus(&desc, 3).as_bytes()))
        .unwrap();
    assert_eq!(r.path, CommitPath::InPlace);

    // qemu-img reads the VMDK in place inside the archive, and after extraction by GNU tar.
    let listing = tar_list(&ova);
    let member = listing.iter().find(|l| l.name == "vm-disk1.vmdk").unwrap();
    let inside = format!(
        r#"json:{{"driver":"vmdk","file":{{"driver":"raw","offset":{},"size":{},"file":{{"driver":"file","filename":"{}"}}}}}}"#,
        support::data_offset(&ova, member.block),
        member.size,
        ova.display()
    );
    let info = run(std::process::Command::new("qemu-img").args(["info", &inside]));
    assert!(info.contains("vmdk"), "{info}");
    run(std::process::Command::new("qemu-img")
        .args(["compare", "-F", "raw", &inside])
        .arg(&raw));
    let x = t.path().join("x");
    fs::create_dir_all(&x).unwrap();
    run(std::process::Command::new("tar")
        .arg("-xf")
        .arg(&ova)
        .arg("-C")
        .arg(&x));
    assert_eq!(fs::read(x.join("vm-disk1.vmdk")).unwrap(), vmdk_bytes);
    run(std::process::Command::new("qemu-img")
        .args(["compare", "-f", "vmdk", "-F", "raw"])
        .arg(x.join("vm-disk1.vmdk"))
        .arg(&raw));
    let mf = fs::read_to_string(x.join("vm.mf")).unwrap();
    let sums: String = mf
        .lines()
        .map(|l| {
            let (a, hex) = l.split_once(")= ").unwrap();
            format!("{hex}  {}\n", &a["SHA256(".len()..])
        })
        .collect();
    fs::write(x.join("sums"), sums).unwrap();
    run(std::process::Command::new("sha256sum")
        .args(["-c", "--strict", "sums"])
        .current_dir(&x));
}
