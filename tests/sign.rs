//! Re-signing (issue 13 part 3): `ovafs sign -k KEY [--cert CERT] SOURCE` and mounts with
//! `-o sign_key=`, judged by independent tools. A CA, a signer certificate it issued and the
//! signer's RSA key are made with the `openssl` CLI; packages are packed by GNU tar.
//!
//! Judges: `ovafs verify --require-trusted --ca-file CA` (the chain to the test CA, key usage,
//! the signed manifest listing the descriptor); GNU tar lists and extracts the result; the
//! hex signature of the `.cert`'s first line decoded by `xxd -r -p` and checked by
//! `openssl dgst -sha256 -verify pub.pem -signature sig.bin NAME.mf`; the manifest checked
//! against the extracted files by `sha256sum -c` / `sha1sum -c`; COT's `cot info` reads the
//! signed OVA.
//!
//! Contents:
//! - `signed_ova_passes_every_judge`: sign an unsigned OVA (the certificate is added after
//!   the manifest), then sign again with one PEM holding key and certificate (in place:
//!   same size); the key never reaches the `.cert`.
//! - `sha1_manifest_folder_gets_a_sha256_signature`: an OVF folder with a SHA-1 manifest.
//! - `a_mount_with_sign_key_resigns_its_edits`: `echo 4 > MNT/vm/cpus` on a mount with
//!   `-o sign_key=,sign_cert=`; the mount shows the new certificate; a property edit and a
//!   disk commit (`ovafs commit MNT`) follow; after unmounting the package verifies, holds
//!   4 CPUs, the new property value and the written disk bytes (qemu-img convert).
//! - `bad_keys_are_refused_with_one_line_and_change_nothing`: another key, an Ed25519 key,
//!   a key others may read, a symlinked key, a key file without certificate, a certificate
//!   others may write, a package without manifest; `ovafs sign` and `ovafs mount`.
//! - `a_writable_mount_or_a_foreign_journal_refuses_sign`.
//! - `offline_commit_with_sign_key_resigns`: `ovafs commit -o sign_key= SOURCE` of disk
//!   changes left in the overlay; refused for a mount point.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::verify::{Package, coreutils, coreutils_check_manifest, manifest_fixture, verify};
use common::{Mount, OvaBuilder, path_str as p, run_ok, sha256_file, tempdir, tool};

/// A test CA and a signer certificate it issued, with the signer's key.
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    key: PathBuf,
    cert: PathBuf,
}

fn openssl(args: &[&str]) -> Output {
    run_ok(Command::new(tool("openssl")).args(args))
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        fs::create_dir_all(dir).unwrap();
        let f = |n: &str| dir.join(n);
        let (ca_key, ca, key, csr, cert, ext) = (
            f("ca.key"),
            f("ca.pem"),
            f("signer.key"),
            f("signer.csr"),
            f("signer.pem"),
            f("ext.cnf"),
        );
        openssl(&[
            "req",
            "-x509",
            "-nodes",
            "-newkey",
            "rsa:2048",
            "-days",
            "30",
            "-subj",
            "/O=ovafs test/CN=test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            p(&ca_key),
            "-out",
            p(&ca),
        ]);
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            p(&key),
        ]);
        openssl(&[
            "req",
            "-new",
            "-key",
            p(&key),
            "-subj",
            "/O=ovafs test/CN=signer",
            "-out",
            p(&csr),
        ]);
        fs::write(
            &ext,
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            p(&csr),
            "-CA",
            p(&ca),
            "-CAkey",
            p(&ca_key),
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            p(&ext),
            "-out",
            p(&cert),
        ]);
        chmod(&key, 0o600);
        chmod(&cert, 0o644);
        Pki {
            dir: dir.to_path_buf(),
            ca,
            key,
            cert,
        }
    }

    /// The signer's public key, extracted from its certificate by openssl.
    fn public_key(&self) -> PathBuf {
        let out = openssl(&["x509", "-pubkey", "-noout", "-in", p(&self.cert)]);
        let pem = self.dir.join("pub.pem");
        fs::write(&pem, out.stdout).unwrap();
        pem
    }

    /// One PEM file holding the key, then the certificate (mode 0600).
    fn combined(&self) -> PathBuf {
        let both = self.dir.join("both.pem");
        let mut bytes = fs::read(&self.key).unwrap();
        bytes.extend(fs::read(&self.cert).unwrap());
        fs::write(&both, bytes).unwrap();
        chmod(&both, 0o600);
        both
    }
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs `ovafs ARGS`: (exit code, stdout, stderr).
fn ovafs(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(common::ovafs()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sign_ok(args: &[&str]) -> String {
    let (code, out, err) = ovafs(&[&["sign"], args].concat());
    assert_eq!(code, 0, "ovafs sign {args:?}: {out}{err}");
    out
}

fn assert_trusted(source: &Path, ca: &Path) {
    let (code, out, err) = verify(&["--require-trusted", "--ca-file", p(ca), p(source)]);
    assert_eq!(
        code,
        0,
        "ovafs verify --require-trusted {}:\n{out}{err}",
        source.display()
    );
}

/// Checks `dir/CERT` as a user would: the first line is `SHA256(MF)= hex`; the hex, decoded
/// by `xxd -r -p`, is a signature `openssl dgst -sha256 -verify` accepts over `dir/MF`; the
/// rest is the signer's certificate, nothing else.
fn assert_openssl_verifies(dir: &Path, cert_name: &str, mf: &str, pki: &Pki) {
    let text = fs::read_to_string(dir.join(cert_name)).unwrap();
    let (first, rest) = text.split_once('\n').unwrap();
    let hex = first
        .strip_prefix(&format!("SHA256({mf})= "))
        .unwrap_or_else(|| panic!("signature line of {cert_name}: {first}"));
    let hex_file = dir.join("sig.hex");
    fs::write(&hex_file, hex).unwrap();
    let sig = dir.join("sig.bin");
    let out = run_ok(Command::new(tool("xxd")).args(["-r", "-p", p(&hex_file)]));
    fs::write(&sig, out.stdout).unwrap();
    assert_eq!(
        fs::metadata(&sig).unwrap().len(),
        256,
        "a 2048-bit RSA signature"
    );
    let verified = openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        p(&pki.public_key()),
        "-signature",
        p(&sig),
        p(&dir.join(mf)),
    ]);
    assert!(String::from_utf8_lossy(&verified.stdout).contains("Verified OK"));
    assert_eq!(rest, fs::read_to_string(&pki.cert).unwrap());
    assert!(!text.contains("PRIVATE KEY"));
    fs::remove_file(hex_file).unwrap();
    fs::remove_file(sig).unwrap();
}

fn extract(ova: &Path, into: &Path) -> PathBuf {
    let _ = fs::remove_dir_all(into);
    fs::create_dir_all(into).unwrap();
    common::tar_extract(ova, into);
    into.to_path_buf()
}

fn names(ova: &Path) -> Vec<String> {
    common::tar_list(ova).into_iter().map(|(n, _)| n).collect()
}

/// A sample OVA (2 CPUs, a `hostname` property, one stream VMDK) in `dir/NAME-pkg/`.
fn sample_ova(dir: &Path, name: &str) -> PathBuf {
    let raw = dir.join(format!("{name}.img"));
    let vmdk = dir.join(format!("{name}-disk1.vmdk"));
    common::scattered_raw(&raw, 4 << 20, 3, 42);
    common::to_stream_vmdk(&raw, &vmdk);
    OvaBuilder::new(&dir.join(format!("{name}-pkg")), name)
        .disk(&vmdk, 4 << 20, ovafs::sample::VMDK_STREAM_URI)
        .build()
}

#[test]
fn signed_ova_passes_every_judge() {
    let tmp = tempdir();
    let pki = Pki::new(&tmp.path().join("pki"));
    let ova = sample_ova(tmp.path(), "app");
    let (code, _, _) = verify(&["--require-trusted", "--ca-file", p(&pki.ca), p(&ova)]);
    assert_ne!(code, 0, "an unsigned package is not trusted");

    let out = sign_ok(&["-k", p(&pki.key), "--cert", p(&pki.cert), p(&ova)]);
    assert!(out.contains("app.cert signs app.mf"), "{out}");
    assert_eq!(
        names(&ova),
        ["app.ovf", "app.mf", "app.cert", "app-disk1.vmdk"],
        "ovftool's order"
    );
    assert_trusted(&ova, &pki.ca);
    let dir = extract(&ova, &tmp.path().join("x"));
    assert_openssl_verifies(&dir, "app.cert", "app.mf", &pki);
    coreutils_check_manifest(&dir, "app.mf");
    let cot = run_ok(Command::new(tool("cot")).arg("info").arg(&ova));
    assert!(String::from_utf8_lossy(&cot.stdout).contains("app-disk1.vmdk"));

    // Again, with one PEM holding the key and then the certificate: the new certificate has
    // the old one's length, so it is patched in place; the key stays out of it.
    let size = fs::metadata(&ova).unwrap().len();
    sign_ok(&["--key", p(&pki.combined()), p(&ova)]);
    assert_eq!(fs::metadata(&ova).unwrap().len(), size);
    assert_trusted(&ova, &pki.ca);
    let dir = extract(&ova, &tmp.path().join("y"));
    assert_openssl_verifies(&dir, "app.cert", "app.mf", &pki);
}

#[test]
fn sha1_manifest_folder_gets_a_sha256_signature() {
    let tmp = tempdir();
    let pki = Pki::new(&tmp.path().join("pki"));
    let f = manifest_fixture();
    let text: String = ["x.ovf", "disk1.img", "disk2.img"]
        .iter()
        .map(|n| format!("SHA1({n})= {}\n", coreutils("sha1sum", &f.path(n))))
        .collect();
    fs::write(f.path("x.mf"), &text).unwrap();
    sign_ok(&[
        "-k",
        p(&pki.key),
        "--cert",
        p(&pki.cert),
        p(&f.path("x.ovf")),
    ]);
    // The manifest is left as it was (SHA-1), the signature is SHA-256.
    assert_eq!(fs::read_to_string(f.path("x.mf")).unwrap(), text);
    assert_openssl_verifies(&f.dir, "x.cert", "x.mf", &pki);
    coreutils_check_manifest(&f.dir, "x.mf");
    assert_trusted(&f.path("x.ovf"), &pki.ca);
    // And as an OVA of those files.
    let ova = f.ova(&[], &["x.ovf", "x.mf", "disk1.img", "disk2.img"]);
    sign_ok(&["-k", p(&pki.key), "--cert", p(&pki.cert), p(&ova)]);
    assert_trusted(&ova, &pki.ca);
    let dir = extract(&ova, &tmp.path().join("x"));
    assert_openssl_verifies(&dir, "x.cert", "x.mf", &pki);
    coreutils_check_manifest(&dir, "x.mf");
}

#[test]
fn a_mount_with_sign_key_resigns_its_edits() {
    let tmp = tempdir();
    let pki = Pki::new(&tmp.path().join("pki"));
    let ova = sample_ova(tmp.path(), "edit");
    let opt = format!("sign_key={},sign_cert={}", p(&pki.key), p(&pki.cert));
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[&opt]);
    assert!(!m.path("edit.cert").exists(), "unsigned so far");
    common::sh(&format!("echo 4 > {}", p(&m.path("vm/cpus"))));
    assert_eq!(fs::read_to_string(m.path("vm/cpus")).unwrap(), "4\n");
    // The mount shows the certificate the commit made, as stored.
    let shown = fs::read(m.path("edit.cert")).unwrap();
    assert_trusted(&ova, &pki.ca);
    common::sh(&format!(
        "echo edge-7 > {}",
        p(&m.path("vm/properties/hostname"))
    ));
    // A disk commit through the daemon re-signs too.
    let disk = m.path("disks/edit-disk1.raw");
    common::sh(&format!(
        "printf 'signed disk' | dd of={} bs=4096 seek=5 conv=notrunc,fsync status=none",
        p(&disk)
    ));
    let (code, out, err) = ovafs(&["commit", p(&m.dir)]);
    assert_eq!(code, 0, "ovafs commit: {out}{err}");
    assert!(out.contains("committed as edit-disk1.vmdk"), "{out}");
    m.umount();
    assert_trusted(&ova, &pki.ca);
    let dir = extract(&ova, &tmp.path().join("x"));
    assert_openssl_verifies(&dir, "edit.cert", "edit.mf", &pki);
    coreutils_check_manifest(&dir, "edit.mf");
    let ovf = fs::read_to_string(dir.join("edit.ovf")).unwrap();
    assert!(
        ovf.contains("<rasd:VirtualQuantity>4</rasd:VirtualQuantity>"),
        "{ovf}"
    );
    assert!(ovf.contains("ovf:value=\"edge-7\""), "{ovf}");
    // The first edit's certificate was shown; the second one signed another manifest.
    assert_ne!(shown, fs::read(dir.join("edit.cert")).unwrap());
    let raw = tmp.path().join("committed.raw");
    common::qemu_to_raw(&dir.join("edit-disk1.vmdk"), "vmdk", &raw);
    let bytes = fs::read(&raw).unwrap();
    assert_eq!(&bytes[5 * 4096..5 * 4096 + 11], b"signed disk");
    assert!(String::from_utf8_lossy(&shown).starts_with("SHA256(edit.mf)= "));
}

/// Expects `ovafs ARGS` to fail with exit 1 and one line on stderr holding `want`.
fn refused(args: &[&str], want: &str) {
    let (code, out, err) = ovafs(args);
    assert_eq!(code, 1, "ovafs {args:?}: {out}{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains(want),
        "ovafs {args:?}: expected {want:?} in {err}"
    );
}

#[test]
fn bad_keys_are_refused_with_one_line_and_change_nothing() {
    let tmp = tempdir();
    let pki = Pki::new(&tmp.path().join("pki"));
    let other = Pki::new(&tmp.path().join("other"));
    let ova = sample_ova(tmp.path(), "bad");
    let before = sha256_file(&ova);
    let d = tmp.path();
    let ed_key = d.join("ed.key");
    let ed_cert = d.join("ed.pem");
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", p(&ed_key)]);
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        p(&ed_key),
        "-subj",
        "/CN=ed",
        "-days",
        "30",
        "-out",
        p(&ed_cert),
    ]);
    chmod(&ed_key, 0o600);
    let open_key = d.join("open.key");
    fs::copy(&pki.key, &open_key).unwrap();
    chmod(&open_key, 0o644);
    let link = d.join("link.key");
    std::os::unix::fs::symlink(&pki.key, &link).unwrap();
    let open_cert = d.join("open.pem");
    fs::copy(&pki.cert, &open_cert).unwrap();
    chmod(&open_cert, 0o666);

    let k = p(&pki.key);
    let c = p(&pki.cert);
    let cases: [(&str, &str, &str); 6] = [
        (p(&other.key), c, "does not belong to the certificate"),
        (p(&ed_key), p(&ed_cert), "not an RSA key"),
        (p(&open_key), c, "group or others may read"),
        (p(&link), c, "symbolic link"),
        (k, "", "holds no certificate"),
        (k, p(&open_cert), "group or others may write"),
    ];
    for (key, cert, want) in cases {
        let mut args = vec!["sign", "-k", key];
        if !cert.is_empty() {
            args.extend(["--cert", cert]);
        }
        args.push(p(&ova));
        refused(&args, want);
        assert_eq!(sha256_file(&ova), before, "{want}: the package changed");
        // The same key on a mount fails the mount with the same one line.
        let mut opt = format!("sign_key={key}");
        if !cert.is_empty() {
            opt += &format!(",sign_cert={cert}");
        }
        let mnt = d.join("mnt");
        match Mount::new(&ova, &mnt, &[&opt]) {
            Ok(_) => panic!("mounted with {opt}"),
            Err(err) => {
                assert!(err.contains(want), "mount -o {opt}: {err}");
                assert_eq!(err.lines().count(), 1, "{err}");
            }
        }
    }
    assert_eq!(sha256_file(&ova), before);

    // No manifest: nothing to sign.
    let f = Package::new(common::verify::Layout {
        disk1_bytes: 1000,
        capacity_bytes: 1 << 20,
        tar_format: "gnu",
        cert_padding: 0,
    });
    let bare = f.ova(&[], &["x.ovf", "disk1.img", "disk2.img"]);
    let before = sha256_file(&bare);
    refused(&["sign", "-k", k, "--cert", c, p(&bare)], "has no manifest");
    assert_eq!(sha256_file(&bare), before);
}

#[test]
fn a_writable_mount_or_a_foreign_journal_refuses_sign() {
    let tmp = tempdir();
    let pki = Pki::new(&tmp.path().join("pki"));
    let ova = sample_ova(tmp.path(), "busy");
    let before = sha256_file(&ova);
    let args = ["sign", "-k", p(&pki.key), "--cert", p(&pki.cert), p(&ova)];
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    refused(&args, "is mounted writable on");
    assert_eq!(sha256_file(&ova), before);
    m.umount();

    // A journal that is not ovafs's own (a symlink) is left alone, and nothing is signed.
    let journal = ova.with_file_name("busy.ova.ovafs-journal");
    std::os::unix::fs::symlink("/etc/passwd", &journal).unwrap();
    let (code, out, err) = ovafs(&args);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("journal"), "{err}");
    assert_eq!(sha256_file(&ova), before);
    fs::remove_file(&journal).unwrap();
    sign_ok(&args[1..]);
    assert_trusted(&ova, &pki.ca);
}

#[test]
fn offline_commit_with_sign_key_resigns() {
    let tmp = tempdir();
    let pki = Pki::new(&tmp.path().join("pki"));
    let ova = sample_ova(tmp.path(), "off");
    let opt = format!("sign_key={},sign_cert={}", p(&pki.key), p(&pki.cert));
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    common::sh(&format!(
        "printf 'offline' | dd of={} bs=4096 seek=3 conv=notrunc,fsync status=none",
        p(&m.path("disks/off-disk1.raw"))
    ));
    // A mount re-signs as it was mounted: the option is refused there.
    let (code, out, err) = ovafs(&["commit", "-o", &opt, p(&m.dir)]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("no mount serves"), "{err}");
    m.umount();
    // The changes stayed in the overlay; committed now, without a mount, and signed.
    let (code, out, err) = ovafs(&["commit", "-o", &opt, p(&ova)]);
    assert_eq!(code, 0, "ovafs commit: {out}{err}");
    assert!(out.contains("committed as off-disk1.vmdk"), "{out}");
    assert_trusted(&ova, &pki.ca);
    let dir = extract(&ova, &tmp.path().join("x"));
    assert_openssl_verifies(&dir, "off.cert", "off.mf", &pki);
    coreutils_check_manifest(&dir, "off.mf");
}
