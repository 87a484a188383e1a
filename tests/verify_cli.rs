//! `ovafs verify` end to end, on packages built here with GNU tar, coreutils and openssl.
//!
//! Contents:
//! - `digests_match_coreutils`: SHA-1/SHA-256/SHA-512 in three manifest dialects, checked
//!   against `sha1sum`/`sha256sum`/`sha512sum`; a member larger than one read chunk.
//! - `signed_package_*`: a self-signed RSA certificate made with the `openssl` CLI and a
//!   signature from `openssl dgst -sha256 -sign`: verifies; trusted with `--ca-file`;
//!   `--require-trusted`; one byte altered in a member, in the manifest, in the signature
//!   fails with the right message and exit code 1. Also an ECDSA key.
//! - `coverage_*`: descriptor not listed (warning, exit 0), member not listed, listed file
//!   missing, manifest listing itself, chunked files by chunk and by whole name, an unpacked
//!   package with a listed file that no File references, names differing in ASCII case.
//! - `unreadable_sources_exit_2`: not a tar, truncated archive, missing file.

mod common;

use std::fs;
use std::path::Path;

use common::verify::{Layout, Package, coreutils, random, verify, verify_json};
use common::{path_str as p, report_failures, report_files};
use serde_json::Value;

/// A package folder: `x.ovf` naming `disk1.img` (5 MiB + 123 bytes: more than one read
/// chunk) and `disk2.img` (1000 bytes); archives in ustar format, `x.cert` padded like
/// ovftool's.
fn fixture() -> Package {
    Package::new(Layout {
        disk1_bytes: (5 << 20) + 123,
        capacity_bytes: 8 << 20,
        tar_format: "ustar",
        cert_padding: 200,
    })
}

/// The manifest in three dialects, digests from coreutils.
fn mixed_manifest(f: &Package) -> String {
    format!(
        "SHA256(x.ovf)= {}\nSHA1 (disk1.img) = {}\r\nSHA2-512(disk2.img)= {}\n{}",
        coreutils("sha256sum", &f.path("x.ovf")),
        coreutils("sha1sum", &f.path("disk1.img")),
        coreutils("sha512sum", &f.path("disk2.img")),
        " ".repeat(50)
    )
}

/// Flips the low bit of byte `at` of member `name` inside the archive `ova`.
fn flip(ova: &Path, name: &str, at: u64) {
    let src = ovafs::io::FileSource::open(ova).unwrap();
    let idx = ovafs::archive::index(&src).unwrap();
    let m = idx.find(name).unwrap();
    assert!(at < m.size);
    let mut bytes = fs::read(ova).unwrap();
    bytes[(m.data_offset + at) as usize] ^= 1;
    fs::write(ova, bytes).unwrap();
}

/// Replaces the first occurrence of `from` with `to` (same length) inside member `name`.
fn replace_in_member(ova: &Path, name: &str, from: &str, to: &str) {
    assert_eq!(from.len(), to.len());
    let src = ovafs::io::FileSource::open(ova).unwrap();
    let idx = ovafs::archive::index(&src).unwrap();
    let m = idx.find(name).unwrap();
    let mut bytes = fs::read(ova).unwrap();
    let data = &mut bytes[m.data_offset as usize..(m.data_offset + m.size) as usize];
    let at = data
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap_or_else(|| panic!("{from:?} not in {name}"));
    data[at..at + from.len()].copy_from_slice(to.as_bytes());
    fs::write(ova, bytes).unwrap();
}

#[test]
fn digests_match_coreutils() {
    let f = fixture();
    fs::write(f.path("x.mf"), mixed_manifest(&f)).unwrap();
    let ova = f.ova(&[], &["x.ovf", "x.mf", "disk1.img", "disk2.img"]);
    let (code, v) = verify_json(&[p(&ova)]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["passed"], true);
    let rows = v["files"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{v:#}");
    let want = [
        ("x.ovf", "SHA256", coreutils("sha256sum", &f.path("x.ovf"))),
        (
            "disk1.img",
            "SHA1",
            coreutils("sha1sum", &f.path("disk1.img")),
        ),
        (
            "disk2.img",
            "SHA512",
            coreutils("sha512sum", &f.path("disk2.img")),
        ),
    ];
    for (row, (name, alg, hex)) in rows.iter().zip(want) {
        assert_eq!(row["name"], name);
        assert_eq!(row["algorithm"], alg);
        assert_eq!(row["status"], "ok");
        assert_eq!(row["actual"], hex.as_str());
        assert_eq!(row["expected"], hex.as_str());
    }
    assert_eq!(
        v["bytesHashed"],
        (5 << 20) + 123 + 1000 + fs::metadata(f.path("x.ovf")).unwrap().len()
    );

    // The text form: one line per file and a summary.
    let (code, out, _) = verify(&[p(&ova)]);
    assert_eq!(code, 0);
    assert!(out.contains("  ok          SHA1    disk1.img\n"), "{out}");
    assert!(
        out.contains("verified: 3 of 3 digests match, not signed"),
        "{out}"
    );

    // The same folder as an unpacked package.
    let (code, v) = verify_json(&[p(&f.path("x.ovf"))]);
    assert_eq!(code, 0, "{v:#}");
}

#[test]
fn signed_package_verifies_and_trust_is_reported_not_required() {
    let f = fixture();
    fs::write(f.path("x.mf"), mixed_manifest(&f)).unwrap();
    let ca = f.sign(&["-newkey", "rsa:2048"], &[]);
    let ova = f.ova(&[], &["x.ovf", "x.mf", "x.cert", "disk1.img", "disk2.img"]);
    let (code, v) = verify_json(&[p(&ova)]);
    assert_eq!(code, 0, "{v:#}");
    let c = &v["certificate"];
    assert_eq!(c["signatureOk"], true);
    assert_eq!(c["chainTrusted"], false);
    assert_eq!(c["algorithm"], "SHA256");
    assert_eq!(
        c["signer"]["subject"],
        "C=DE, O=ovafs test, CN=signer.example.org"
    );
    assert_eq!(c["signer"]["validNow"], true);
    assert_eq!(c["signer"]["key"], "RSA 2048-bit");
    assert!(
        c["chain"].as_str().unwrap().contains("self-signed"),
        "{c:#}"
    );

    let (code, out, _) = verify(&[p(&ova)]);
    assert_eq!(code, 0);
    assert!(out.contains("  signature   ok (SHA256 over x.mf)"), "{out}");
    assert!(
        out.contains("  chain       untrusted: self-signed"),
        "{out}"
    );
    assert!(
        out.contains("signature ok, chain untrusted (not required)"),
        "{out}"
    );

    // Trusted when its certificate is the trust store; required or not.
    let (code, v) = verify_json(&["--ca-file", p(&ca), p(&ova)]);
    assert_eq!(
        (code, &v["certificate"]["chainTrusted"]),
        (0, &Value::Bool(true))
    );
    let (code, _) = verify_json(&["--require-trusted", "--ca-file", p(&ca), p(&ova)]);
    assert_eq!(code, 0);
    let (code, v) = verify_json(&["--require-trusted", p(&ova)]);
    assert_eq!(code, 1);
    assert!(report_failures(&v).contains("chain untrusted"), "{v:#}");
}

#[test]
fn signed_package_with_one_byte_altered_fails() {
    let f = fixture();
    fs::write(f.path("x.mf"), mixed_manifest(&f)).unwrap();
    f.sign(&["-newkey", "rsa:2048"], &[]);
    let names = ["x.ovf", "x.mf", "x.cert", "disk1.img", "disk2.img"];

    // A member: its digest no longer matches; the signature still does.
    let ova = f.ova(&[], &names);
    flip(&ova, "disk1.img", 3 << 20);
    let (code, v) = verify_json(&[p(&ova)]);
    assert_eq!(code, 1, "{v:#}");
    assert!(report_files(&v).contains(&("disk1.img".into(), "mismatch".into())));
    assert_eq!(v["certificate"]["signatureOk"], true);
    assert_eq!(
        report_failures(&v),
        "disk1.img: SHA1 digest does not match (x.mf line 2)"
    );
    let (code, out, _) = verify(&[p(&ova)]);
    assert_eq!(code, 1);
    assert!(out.contains("  MISMATCH    SHA1    disk1.img"), "{out}");
    assert!(out.contains("FAILED: 2 of 3 digests match"), "{out}");

    // The manifest: a digest changed to match a changed member is caught by the signature.
    let ova = f.ova(&[], &names);
    let old = coreutils("sha512sum", &f.path("disk2.img"));
    let first = old.chars().next().unwrap();
    let new_first = if first == '0' { '1' } else { '0' };
    replace_in_member(
        &ova,
        "x.mf",
        &old[..8],
        &format!("{new_first}{}", &old[1..8]),
    );
    let (code, v) = verify_json(&[p(&ova)]);
    assert_eq!(code, 1);
    assert_eq!(v["certificate"]["signatureOk"], false);
    assert!(
        report_failures(&v).contains("x.cert: signature BAD"),
        "{v:#}"
    );
    assert!(report_failures(&v).contains("disk2.img: SHA512 digest does not match"));

    // Only the manifest's padding: every digest matches, the signature does not.
    let ova = f.ova(&[], &names);
    replace_in_member(&ova, "x.mf", "    ", "   \n");
    let (code, v) = verify_json(&[p(&ova)]);
    assert_eq!(code, 1);
    assert_eq!(report_failures(&v).lines().count(), 1, "{v:#}");
    assert!(report_failures(&v).starts_with("x.cert: signature BAD"));

    // The signature.
    let ova = f.ova(&[], &names);
    let cert = fs::read_to_string(f.path("x.cert")).unwrap();
    let sig_start = cert.find("= ").unwrap() + 2;
    let digit = &cert[sig_start + 10..sig_start + 11];
    let other = if digit == "a" { "b" } else { "a" };
    replace_in_member(
        &ova,
        "x.cert",
        &cert[sig_start..sig_start + 11],
        &format!("{}{other}", &cert[sig_start..sig_start + 10]),
    );
    let (code, v) = verify_json(&[p(&ova)]);
    assert_eq!(code, 1);
    assert!(report_files(&v).iter().all(|(_, s)| s == "ok"), "{v:#}");
    assert_eq!(v["certificate"]["signature"], "BAD");
}

#[test]
fn signed_with_an_ecdsa_key() {
    let f = fixture();
    fs::write(f.path("x.mf"), mixed_manifest(&f)).unwrap();
    f.sign(
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        &[],
    );
    let ova = f.ova(&[], &["x.ovf", "x.mf", "x.cert", "disk1.img", "disk2.img"]);
    let (code, v) = verify_json(&[p(&ova)]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["certificate"]["signer"]["key"], "EC 256-bit");
    assert_eq!(v["certificate"]["signatureOk"], true);
}

#[test]
fn coverage_descriptor_not_listed_is_a_warning_other_members_fail() {
    let f = fixture();
    let mf = mixed_manifest(&f);
    let without_ovf: String = mf.lines().skip(1).map(|l| format!("{l}\n")).collect();
    fs::write(f.path("x.mf"), &without_ovf).unwrap();
    let ova = f.ova(&[], &["x.ovf", "x.mf", "disk1.img", "disk2.img"]);
    let (code, v) = verify_json(&[p(&ova)]);
    assert_eq!(code, 0, "{v:#}");
    assert!(report_files(&v).contains(&("x.ovf".into(), "notListed".into())));
    assert!(
        v["warnings"][0]
            .as_str()
            .unwrap()
            .contains("x.ovf is not listed"),
        "{v:#}"
    );

    // Another member that is not listed fails, as XenAdmin decides.
    fs::write(f.path("readme.txt"), "hello\n").unwrap();
    fs::write(f.path("x.mf"), mixed_manifest(&f)).unwrap();
    let ova = f.ova(
        &[],
        &["x.ovf", "x.mf", "disk1.img", "disk2.img", "readme.txt"],
    );
    let (code, v) = verify_json(&[p(&ova)]);
    assert_eq!(code, 1);
    assert_eq!(report_failures(&v), "readme.txt: not listed in x.mf");
    let (_, out, _) = verify(&[p(&ova)]);
    assert!(out.contains("  not listed          readme.txt"), "{out}");
}

#[test]
fn coverage_missing_self_and_unsupported_entries() {
    let f = fixture();
    let mf = format!(
        "{}\nSHA256(ghost.img)= {}\nSHA1(x.mf)= {}\nMD5(disk2.img)= d41d8cd98f00b204e9800998ecf8427e\n",
        mixed_manifest(&f).trim_end(),
        "ab".repeat(32),
        "cd".repeat(20)
    );
    fs::write(f.path("x.mf"), mf).unwrap();
    let ova = f.ova(&[], &["x.ovf", "x.mf", "disk1.img", "disk2.img"]);
    let (code, v) = verify_json(&[p(&ova)]);
    assert_eq!(code, 1, "{v:#}");
    let rows = report_files(&v);
    assert!(rows.contains(&("ghost.img".into(), "missing".into())));
    assert!(rows.contains(&("x.mf".into(), "selfEntry".into())));
    assert!(rows.contains(&("disk2.img".into(), "unsupported".into())));
    assert_eq!(
        report_failures(&v),
        "ghost.img: listed in x.mf line 4, not in the package"
    );
}

#[test]
fn coverage_chunked_files_by_chunk_and_by_whole_name() {
    let f = fixture();
    // disk1.img as two chunks of 4 MiB and 1 MiB + 123 bytes.
    let chunk = 4u64 << 20;
    let data = fs::read(f.path("disk1.img")).unwrap();
    fs::write(f.path("disk1.img.000000000"), &data[..chunk as usize]).unwrap();
    fs::write(f.path("disk1.img.000000001"), &data[chunk as usize..]).unwrap();
    let ovf = fs::read_to_string(f.path("x.ovf")).unwrap().replace(
        "ovf:href=\"disk1.img\"",
        &format!("ovf:href=\"disk1.img\" ovf:chunkSize=\"{chunk}\""),
    );
    fs::write(f.path("x.ovf"), ovf).unwrap();
    let names = [
        "x.ovf",
        "x.mf",
        "disk1.img.000000000",
        "disk1.img.000000001",
        "disk2.img",
    ];
    let line = |alg: &str, tool_name: &str, n: &str| {
        format!("{alg}({n})= {}\n", coreutils(tool_name, &f.path(n)))
    };
    let common_lines =
        line("SHA256", "sha256sum", "x.ovf") + &line("SHA256", "sha256sum", "disk2.img");
    // Per chunk, as docs/formats.md §1.6 says manifests name them.
    let per_chunk = common_lines.clone()
        + &line("SHA256", "sha256sum", "disk1.img.000000000")
        + &line("SHA256", "sha256sum", "disk1.img.000000001");
    fs::write(f.path("x.mf"), per_chunk).unwrap();
    let ova = f.ova(&[], &names);
    let (code, v) = verify_json(&[p(&ova)]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(report_files(&v).len(), 4);
    // The whole file's digest under the href.
    let whole = common_lines + &line("SHA1", "sha1sum", "disk1.img");
    fs::write(f.path("x.mf"), whole).unwrap();
    let ova = f.ova(&[], &names);
    let (code, v) = verify_json(&[p(&ova)]);
    assert_eq!(code, 0, "{v:#}");
    let row = &v["files"][2];
    assert_eq!(row["name"], "disk1.img");
    assert_eq!(row["status"], "ok");
    assert_eq!(
        row["actual"],
        coreutils("sha1sum", &f.path("disk1.img")).as_str()
    );
}

#[test]
fn coverage_names_differing_in_ascii_case_match_once_unambiguous() {
    let f = fixture();
    fs::write(f.path("readme.txt"), "hello\n").unwrap();
    fs::write(f.path("README.txt"), "HELLO\n").unwrap();
    let line = |n: &str, listed: &str| {
        format!("SHA256({listed})= {}\n", coreutils("sha256sum", &f.path(n)))
    };
    // disk2.img listed in another case: matched, with a note. The two readmes differ only
    // in case: each is found by its exact name, and a third spelling matches neither.
    let mf = mixed_manifest(&f).replace("disk2.img", "DISK2.IMG")
        + &line("readme.txt", "readme.txt")
        + &line("README.txt", "README.txt");
    fs::write(f.path("x.mf"), &mf).unwrap();
    let names = [
        "x.ovf",
        "x.mf",
        "disk1.img",
        "disk2.img",
        "readme.txt",
        "README.txt",
    ];
    let ova = f.ova(&[], &names);
    let (code, v) = verify_json(&[p(&ova)]);
    assert_eq!(code, 0, "{v:#}");
    let row = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "DISK2.IMG")
        .unwrap();
    assert_eq!(row["status"], "ok", "{row:#}");
    assert_eq!(row["member"], "disk2.img", "{row:#}");
    assert!(
        row["note"].as_str().unwrap().contains("differs in case"),
        "{row:#}"
    );
    fs::write(f.path("x.mf"), mf + &line("readme.txt", "Readme.TXT")).unwrap();
    let ova = f.ova(&[], &names);
    let (code, v) = verify_json(&[p(&ova)]);
    assert_eq!(code, 1, "{v:#}");
    assert!(report_files(&v).contains(&("Readme.TXT".into(), "missing".into())));
}

#[test]
fn coverage_unpacked_package_listed_file_not_referenced() {
    let f = fixture();
    fs::write(f.path("readme.txt"), "hello\n").unwrap();
    let mf = mixed_manifest(&f)
        + &format!(
            "SHA256(readme.txt)= {}\n",
            coreutils("sha256sum", &f.path("readme.txt"))
        );
    fs::write(f.path("x.mf"), mf).unwrap();
    let (code, v) = verify_json(&[p(&f.path("x.ovf"))]);
    assert_eq!(code, 0, "{v:#}");
    assert!(report_files(&v).contains(&("readme.txt".into(), "ok".into())));
}

#[test]
fn coverage_unpacked_package_listed_links_are_not_followed() {
    // A listed file that is not a member is opened as the package layer opens files: never
    // through a symbolic link, even one that stays inside the folder.
    let f = fixture();
    fs::write(f.path("readme.txt"), "hello\n").unwrap();
    std::os::unix::fs::symlink("readme.txt", f.path("link.txt")).unwrap();
    fs::create_dir(f.path("sub")).unwrap();
    fs::write(f.path("sub/inner.txt"), "inner\n").unwrap();
    std::os::unix::fs::symlink("sub", f.path("sublink")).unwrap();
    let sum = coreutils("sha256sum", &f.path("readme.txt"));
    let inner = coreutils("sha256sum", &f.path("sub/inner.txt"));
    let mf = mixed_manifest(&f)
        + &format!("SHA256(sub/inner.txt)= {inner}\n")
        + &format!("SHA256(link.txt)= {sum}\n")
        + &format!("SHA256(sublink/inner.txt)= {inner}\n");
    fs::write(f.path("x.mf"), mf).unwrap();
    let (code, v) = verify_json(&[p(&f.path("x.ovf"))]);
    assert_eq!(code, 1, "{v:#}");
    let rows = report_files(&v);
    assert!(
        rows.contains(&("sub/inner.txt".into(), "ok".into())),
        "{rows:?}"
    );
    assert!(
        rows.contains(&("link.txt".into(), "missing".into())),
        "{rows:?}"
    );
    assert!(
        rows.contains(&("sublink/inner.txt".into(), "missing".into())),
        "{rows:?}"
    );
}

#[test]
fn unreadable_sources_exit_2() {
    let f = fixture();
    fs::write(f.path("x.mf"), mixed_manifest(&f)).unwrap();
    let junk = f.path("junk.ova");
    fs::write(&junk, random(10_000, 3)).unwrap();
    let (code, _, err) = verify(&[p(&junk)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("ovafs: "), "{err}");

    let ova = f.ova(&[], &["x.ovf", "x.mf", "disk1.img", "disk2.img"]);
    let bytes = fs::read(&ova).unwrap();
    fs::write(&ova, &bytes[..bytes.len() / 2]).unwrap();
    let (code, v) = verify_json(&[p(&ova)]);
    assert_eq!(code, 2);
    assert!(v["error"].as_str().unwrap().contains("truncated"), "{v:#}");

    let (code, _, _) = verify(&[p(&f.path("nonexistent.ova"))]);
    assert_eq!(code, 2);
}

#[test]
fn no_manifest_fails() {
    let f = fixture();
    let ova = f.ova(&[], &["x.ovf", "disk1.img", "disk2.img"]);
    let (code, v) = verify_json(&[p(&ova)]);
    assert_eq!(code, 1);
    assert!(report_failures(&v).starts_with("no manifest"), "{v:#}");
}

#[test]
fn broken_descriptor_is_checked_at_the_archive_level() {
    let f = fixture();
    // ovf:size no longer matches disk2.img: the package cannot be mounted, but the manifest
    // still covers the bytes as stored.
    let ovf = fs::read_to_string(f.path("x.ovf"))
        .unwrap()
        .replace("ovf:size=\"1000\"", "ovf:size=\"999\"");
    fs::write(f.path("x.ovf"), ovf).unwrap();
    fs::write(f.path("x.mf"), mixed_manifest(&f)).unwrap();
    let ova = f.ova(&[], &["x.ovf", "x.mf", "disk1.img", "disk2.img"]);
    let (code, v) = verify_json(&[p(&ova)]);
    assert_eq!(code, 0, "{v:#}");
    assert!(
        v["packageError"].as_str().unwrap().contains("ovf:size"),
        "{v:#}"
    );
    assert!(report_files(&v).iter().all(|(_, s)| s == "ok"), "{v:#}");
    // The same for the unpacked package.
    let (code, v) = verify_json(&[p(&f.path("x.ovf"))]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(report_files(&v).len(), 3, "{v:#}");
}
