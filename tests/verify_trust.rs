//! What a signature must be for `ovafs verify` to trust it, and what an archive must not
//! hold, end to end: keys and certificates made here by the `openssl` CLI, archives by GNU
//! tar and Python's `tarfile` (issue 9, section 5).
//!
//! Contents:
//! - `signer_key_sizes_and_types`: RSA 512 and 1024, EC P-192 and DSA signers fail naming the
//!   key; RSA 2048 and EC P-256 pass, also with `--require-trusted` and their certificate as
//!   the trust store.
//! - `ed25519_signer_is_refused_by_name_though_its_signature_verifies`: EdDSA is not an OVF
//!   signing key.
//! - `signer_key_usage_and_extended_key_usage`: keyUsage=keyEncipherment and
//!   extendedKeyUsage=serverAuth fail naming the extension; digitalSignature, nonRepudiation,
//!   codeSigning and anyExtendedKeyUsage pass.
//! - `signed_manifest_must_cover_the_descriptor_and_its_files`: a signed manifest without the
//!   descriptor's line, or without a disk's, fails with and without `--require-trusted`; an
//!   unsigned one without the descriptor stays a warning unless trust is required.
//! - `archive_entries_*`: a duplicate member, a symbolic link, a hard link, a FIFO, an
//!   escaping name and a name with a control character each fail, named, in the text and
//!   JSON reports; 25 links are named 20 times and counted once; `.ovafs/status` and
//!   `.ovafs/status.json` of a mount report them too.
//!
//! Every case asserts the exit code and the named reason.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::verify::{Package, manifest_fixture, verify, verify_json};
use common::{Mount, path_str as p, report_failures, run_ok, tar_create, tempdir, tool};
use serde_json::Value;

/// The signed package, packed.
fn signed_ova(f: &Package) -> PathBuf {
    f.ova(&[], &["x.ovf", "x.mf", "x.cert", "disk1.img", "disk2.img"])
}

/// Verifies `ova` without, then with `--require-trusted` (the certificate `ca` as the only
/// root); asserts the exit code of both and, for a failure, that `reason` is among the
/// failures of both.
fn assert_verdict(ova: &Path, ca: &Path, what: &str, reason: Option<&str>) {
    let runs: [&[&str]; 2] = [&[], &["--require-trusted", "--ca-file", p(ca)]];
    for extra in runs {
        let mut args = extra.to_vec();
        args.push(p(ova));
        let (code, v) = verify_json(&args);
        let failures = report_failures(&v);
        match reason {
            None => assert_eq!(code, 0, "{what} {extra:?}: {failures}\n{v:#}"),
            Some(r) => {
                assert_eq!(code, 1, "{what} {extra:?}: {v:#}");
                assert!(failures.contains(r), "{what} {extra:?}: {failures}");
            }
        }
    }
}

#[test]
fn signer_key_sizes_and_types() {
    let f = manifest_fixture();
    let dsa_params = f.path("dsa.pem");
    run_ok(
        Command::new(tool("openssl"))
            .args(["genpkey", "-genparam", "-algorithm", "DSA"])
            .args(["-pkeyopt", "dsa_paramgen_bits:2048", "-out"])
            .arg(&dsa_params),
    );
    let dsa = format!("dsa:{}", p(&dsa_params));
    let cases: [(&[&str], Option<&str>); 6] = [
        (
            &["-newkey", "rsa:512"],
            Some("x.cert: key size: RSA 512-bit key, at least 2048 bits required"),
        ),
        (
            &["-newkey", "rsa:1024"],
            Some("x.cert: key size: RSA 1024-bit key, at least 2048 bits required"),
        ),
        (&["-newkey", "rsa:2048"], None),
        (
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-192"],
            Some("x.cert: key size: EC 192-bit key, at least 256 bits required"),
        ),
        (
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            None,
        ),
        (
            &["-newkey", &dsa],
            Some("x.cert: key type: DSA 2048-bit keys are refused"),
        ),
    ];
    for (keyopts, reason) in cases {
        let ca = f.sign(keyopts, &[]);
        let ova = signed_ova(&f);
        assert_verdict(&ova, &ca, &format!("{keyopts:?}"), reason);
        let (_, v) = verify_json(&[p(&ova)]);
        // The signature itself verifies: only the key is refused.
        assert_eq!(v["certificate"]["signatureOk"], true, "{keyopts:?}: {v:#}");
        if let Some(r) = reason {
            let (_, text, _) = verify(&[p(&ova)]);
            let rule = r.strip_prefix("x.cert: ").unwrap();
            assert!(text.contains(&format!("  REFUSED     {rule}")), "{text}");
            assert!(text.contains("signature ok (signer refused)"), "{text}");
            let problem = v["certificate"]["signerProblems"][0].as_str().unwrap();
            assert!(problem.starts_with(rule), "{v:#}");
        }
    }
}

#[test]
fn ed25519_signer_is_refused_by_name_though_its_signature_verifies() {
    let f = manifest_fixture();
    let ca = f.sign_ed25519();
    let ova = signed_ova(&f);
    assert_verdict(
        &ova,
        &ca,
        "Ed25519",
        Some(
            "x.cert: key type: Ed25519 keys are refused: only RSA (at least 2048 bits) and EC (at least 256 bits) may sign",
        ),
    );
    let (_, v) = verify_json(&[p(&ova)]);
    assert_eq!(v["certificate"]["signatureOk"], true, "{v:#}");
    assert_eq!(report_failures(&v).lines().count(), 1, "{v:#}");
}

#[test]
fn signer_key_usage_and_extended_key_usage() {
    let f = manifest_fixture();
    let rsa: &[&str] = &["-newkey", "rsa:2048"];
    let cases: [(&str, Option<&str>); 6] = [
        (
            "keyUsage=keyEncipherment",
            Some(
                "x.cert: key usage: the certificate's keyUsage allows keyEncipherment, not digitalSignature or nonRepudiation",
            ),
        ),
        ("keyUsage=digitalSignature", None),
        ("keyUsage=nonRepudiation", None),
        (
            "extendedKeyUsage=serverAuth",
            Some(
                "x.cert: extended key usage: the certificate's extendedKeyUsage allows serverAuth, not codeSigning",
            ),
        ),
        ("extendedKeyUsage=codeSigning", None),
        ("extendedKeyUsage=anyExtendedKeyUsage", None),
    ];
    for (ext, reason) in cases {
        let ca = f.sign(rsa, &[ext]);
        assert_verdict(&signed_ova(&f), &ca, ext, reason);
    }
    // What the certificate allows is shown.
    f.sign(rsa, &["keyUsage=digitalSignature,keyEncipherment"]);
    let (code, v) = verify_json(&[p(&signed_ova(&f))]);
    assert_eq!(code, 0, "{v:#}");
    let signer = &v["certificate"]["signer"];
    assert_eq!(
        signer["keyUsage"],
        serde_json::json!(["digitalSignature", "keyEncipherment"])
    );
    assert_eq!(signer["extendedKeyUsage"], Value::Null);
}

#[test]
fn signed_manifest_must_cover_the_descriptor_and_its_files() {
    let f = manifest_fixture();
    let rsa: &[&str] = &["-newkey", "rsa:2048"];

    // Signed, the descriptor not listed: the signature does not cover it. A warning saying
    // so, and a failure when trust is required.
    f.write_manifest(&["disk1.img", "disk2.img"]);
    let ca = f.sign(rsa, &[]);
    let ova = signed_ova(&f);
    let (code, v) = verify_json(&[p(&ova)]);
    assert_eq!(code, 0, "{v:#}");
    assert!(
        v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains(
                "x.ovf is not listed in the signed manifest x.mf: the signature does not cover it"
            )),
        "{v:#}"
    );
    assert_eq!(v["certificate"]["signatureOk"], true);
    let (code, v) = verify_json(&["--require-trusted", "--ca-file", p(&ca), p(&ova)]);
    assert_eq!(code, 1, "{v:#}");
    // ... and that is its only failure: the digests, the signature and the chain are fine.
    assert_eq!(
        report_failures(&v),
        "x.ovf: manifest coverage: the descriptor is not listed in the signed manifest x.mf, and a trusted signature must cover it",
        "{v:#}"
    );

    // Signed, a referenced disk not listed.
    f.write_manifest(&["x.ovf", "disk1.img"]);
    let ca = f.sign(rsa, &[]);
    assert_verdict(
        &signed_ova(&f),
        &ca,
        "disk not listed",
        Some(
            "disk2.img: manifest coverage: referenced by the descriptor (File \"file2\", href \"disk2.img\") but not listed in x.mf",
        ),
    );

    // Unsigned, the descriptor not listed: a warning, unless trust is required.
    f.write_manifest(&["disk1.img", "disk2.img"]);
    let ova = f.ova(&[], &["x.ovf", "x.mf", "disk1.img", "disk2.img"]);
    let (code, v) = verify_json(&[p(&ova)]);
    assert_eq!(code, 0, "{v:#}");
    assert!(
        v["warnings"][0]
            .as_str()
            .unwrap()
            .contains("x.ovf is not listed"),
        "{v:#}"
    );
    let (code, v) = verify_json(&["--require-trusted", p(&ova)]);
    assert_eq!(code, 1);
    let failures = report_failures(&v);
    assert!(failures.contains("x.ovf: manifest coverage: the descriptor is not listed in x.mf, and a trusted signature must cover it"), "{failures}");
    assert!(failures.contains("not signed"), "{failures}");
}

/// The archive entries the report names: (problem, name, detail).
fn entries(v: &Value) -> Vec<(String, String, String)> {
    v["archiveEntries"]
        .as_array()
        .unwrap_or_else(|| panic!("no archiveEntries: {v:#}"))
        .iter()
        .map(|e| {
            (
                e["problem"].as_str().unwrap().to_string(),
                e["name"].as_str().unwrap().to_string(),
                e["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `verify --json` of `ova` without, then with `--require-trusted`, each of which must exit
/// 1: (report, failures) of both.
fn failed_reports(ova: &Path) -> [(Value, String); 2] {
    [&[][..], &["--require-trusted"][..]].map(|extra| {
        let mut args = extra.to_vec();
        args.push(p(ova));
        let (code, v) = verify_json(&args);
        assert_eq!(code, 1, "{v:#}");
        let failures = report_failures(&v);
        (v, failures)
    })
}

#[test]
fn archive_entries_duplicates_and_links_fail_naming_them() {
    let f = manifest_fixture();
    let names = ["x.ovf", "x.mf", "disk1.img", "disk2.img"];

    // disk2.img twice: GNU tar appends a second copy (`tar -r`).
    let ova = f.ova(&[], &names);
    run_ok(
        Command::new(tool("tar"))
            .arg("-rf")
            .arg(&ova)
            .arg("-C")
            .arg(&f.dir)
            .arg("disk2.img"),
    );
    let (code, v) = verify_json(&[p(&ova)]);
    assert_eq!(code, 1, "{v:#}");
    let failures = report_failures(&v);
    assert!(
        failures.contains("archive entry \"disk2.img\" (header at offset")
            && failures.contains("): duplicate entry: hidden by a later entry of the same name"),
        "{failures}"
    );
    assert_eq!(entries(&v).len(), 1, "{v:#}");
    assert_eq!(entries(&v)[0].0, "duplicate");
    let (code, text, _) = verify(&[p(&ova)]);
    assert_eq!(code, 1);
    assert!(text.contains("  DUPLICATE           disk2.img\n"), "{text}");

    // A symbolic link, a hard link, a FIFO: not regular files.
    std::os::unix::fs::symlink("disk1.img", f.path("link.img")).unwrap();
    fs::hard_link(f.path("disk2.img"), f.path("hard.img")).unwrap();
    nix::unistd::mkfifo(
        &f.path("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let ova = f.ova(
        &[],
        &[
            "x.ovf",
            "x.mf",
            "disk1.img",
            "disk2.img",
            "link.img",
            "hard.img",
            "fifo",
        ],
    );
    for (v, failures) in failed_reports(&ova) {
        for (name, kind) in [
            ("link.img", "symbolic link"),
            ("hard.img", "hard link"),
            ("fifo", "FIFO"),
        ] {
            assert!(
                failures.contains(&format!("archive entry \"{name}\" (header at offset"))
                    && failures.contains(&format!("not a regular file: {kind}")),
                "{name}: {failures}"
            );
        }
        let got = entries(&v);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got.iter().all(|(p, _, _)| p == "notRegular"), "{got:?}");
    }
}

#[test]
fn archive_entries_many_are_counted_not_all_named() {
    let f = manifest_fixture();
    let mut names = vec!["x.ovf", "x.mf", "disk1.img", "disk2.img"];
    let links: Vec<String> = (0..25).map(|i| format!("link{i:02}")).collect();
    for l in &links {
        std::os::unix::fs::symlink("disk1.img", f.path(l)).unwrap();
    }
    names.extend(links.iter().map(String::as_str));
    let ova = f.ova(&[], &names);
    let (code, v) = verify_json(&[p(&ova)]);
    assert_eq!(code, 1);
    let failures = report_failures(&v);
    let named = failures
        .lines()
        .filter(|l| l.starts_with("archive entry \"link"))
        .count();
    assert_eq!(named, 20, "{failures}");
    assert!(
        failures.contains("5 more archive entries are not files of the package"),
        "{failures}"
    );
    assert_eq!(entries(&v).len(), 25);
    assert_eq!(v["archiveEntriesTotal"], 25);
}

/// Appends members with these raw names (and a few bytes each) to `ova` with Python's
/// `tarfile`, which writes names as given.
fn append_raw_names(ova: &Path, names: &[&str]) {
    let script = r#"
import sys, tarfile, io
with tarfile.open(sys.argv[1], "a", format=tarfile.GNU_FORMAT) as t:
    for n in sys.argv[2:]:
        data = b"planted\n"
        info = tarfile.TarInfo(n)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
"#;
    run_ok(
        Command::new(tool("python3"))
            .arg("-c")
            .arg(script)
            .arg(ova)
            .args(names),
    );
}

#[test]
fn archive_entries_refused_names_fail_naming_them() {
    let f = manifest_fixture();
    let ova = f.ova(&[], &["x.ovf", "x.mf", "disk1.img", "disk2.img"]);
    append_raw_names(&ova, &["../escape.txt", "/etc/cron.d/evil", "bad\u{1}name"]);
    // GNU tar, as a judge, sees the planted members.
    let listing = run_ok(Command::new(tool("tar")).arg("-tf").arg(&ova));
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains("../escape.txt"), "{listing}");
    for (v, failures) in failed_reports(&ova) {
        for name in [
            "\"../escape.txt\"",
            "\"/etc/cron.d/evil\"",
            "\"bad\\u{1}name\"",
        ] {
            assert!(
                failures.contains(&format!("archive entry {name} (header at offset"))
                    && failures.contains(": refused name: "),
                "{name}: {failures}"
            );
        }
        let got = entries(&v);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got.iter().all(|(p, _, _)| p == "refusedName"), "{got:?}");
    }
    let (_, text, _) = verify(&[p(&ova)]);
    assert!(
        text.contains("  REFUSED NAME        ../escape.txt\n"),
        "{text}"
    );
}

#[test]
fn archive_entries_are_reported_in_the_mount_status() {
    let tmp = tempdir();
    let (_, vmdk) = common::qemu_stream_vmdk(tmp.path(), "disk", 4 << 20, 2, 9);
    let pkg = tmp.path().join("pkg");
    let names = common::OvaBuilder::new(&pkg, "s")
        .disk(&vmdk, 4 << 20, ovafs::sample::VMDK_STREAM_URI)
        .write_package();
    std::os::unix::fs::symlink("/etc/shadow", pkg.join("shadow")).unwrap();
    let ova = tmp.path().join("s.ova");
    run_ok(tar_create(&ova, &pkg).args(&names).arg("shadow"));
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let text = fs::read_to_string(m.path(".ovafs/status")).unwrap();
        if text.starts_with("verification: FAILED") || text.starts_with("verification: passed") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "verification never finished: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.starts_with("verification: FAILED (lazy)"),
        "{status}"
    );
    assert!(
        status.contains("failure: archive entry \"shadow\" (header at offset")
            && status.contains("not a regular file: symbolic link"),
        "{status}"
    );
    let json: Value =
        serde_json::from_str(&fs::read_to_string(m.path(".ovafs/status.json")).unwrap()).unwrap();
    let report = &json["report"];
    assert_eq!(report["passed"], false);
    assert_eq!(
        entries(report),
        vec![(
            "notRegular".to_string(),
            "shadow".to_string(),
            "symbolic link".to_string()
        )]
    );
    // The link is not served.
    assert!(fs::symlink_metadata(m.path("shadow")).is_err());
    m.umount();
}
