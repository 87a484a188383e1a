//! Change sets through the library API (`Committer::commit` with a `ChangeSet`), judged by
//! independent tools: GNU tar lists and extracts the OVA, `sha256sum` of each extracted (or
//! folder) file must equal the new manifest's line, `ovafs verify` passes, and a re-signed
//! package verifies with `ovafs verify --require-trusted --ca-file` and with
//! `openssl dgst -verify` over the extracted manifest.
//!
//! Contents:
//! - `ova_member_replaced_added_and_removed`, `folder_member_replaced_added_and_removed`: a
//!   disk replaced by content of another length, one added, one removed (the rewrite path;
//!   the folder journal's place and unlink operations);
//! - `small_replacement_that_fits_is_patched_in_place`: same tar blocks: the journal path;
//! - `resigned_ova_verifies_with_ovafs_and_openssl`, `resigned_folder_with_sha1_manifest`:
//!   the certificate regenerated as ovftool writes it (SHA-256 for a SHA-1 manifest, a new
//!   `.cert` when there was none), `resigning_an_unsigned_ova_adds_the_certificate_after_the_manifest`;
//!   `certificate_kept_dropped_by_default_and_on_request`;
//! - `crash_during_a_change_set_leaves_old_or_new`: a child process commits a change set and
//!   is killed at each fault point in turn; after recovery the package is the old one or the
//!   new one byte for byte, never a mix (OVA rewrite, OVA in place, folder);
//! - `large_replacement_is_streamed_in_bounded_memory`: a 2 GiB sparse content from a
//!   generating `ReadAt` is read once, in chunks of at most 1 MiB, and the committing
//!   process's peak RSS grows by less than 64 MiB; tar and sha256sum judge the result;
//! - `bad_change_sets_are_refused_and_change_nothing`,
//!   `folder_journal_placing_or_unlinking_other_files_is_refused`.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::verify::{Package, coreutils, manifest_fixture, random, verify};
use common::{copy_files, folder_files, path_str as p, run_ok, tool};
use ovafs::commit::{
    self, CertificateAction, CertificateFate, ChangeSet, CommitOptions, CommitPath, Committer,
    Content, FaultHook, FaultPoint, Signer,
};
use ovafs::error::Result;
use ovafs::io::ReadAt;

/// A descriptor naming `disks` (href, file size), as the fixture's is made.
fn descriptor(disks: &[(&str, u64)]) -> Vec<u8> {
    let spec = ovafs::sample::ApplianceSpec {
        name: "x".into(),
        cpus: 1,
        memory_mib: 256,
        network: "VM Network".into(),
        disks: disks
            .iter()
            .map(|(n, size)| ovafs::sample::DiskSpec {
                href: n.to_string(),
                file_bytes: *size,
                capacity_bytes: 1 << 20,
                format_uri: "http://example.org/raw".into(),
                compression: None,
            })
            .collect(),
    };
    ovafs::sample::descriptor_xml(&spec).into_bytes()
}

const NEW_DISK1_BYTES: usize = 123_457;
const DISK3_BYTES: usize = 5_000;

/// The change set most tests commit: disk1.img replaced by 123,457 other bytes, disk3.img
/// added, disk2.img removed, the descriptor saying so.
fn replace_add_remove() -> ChangeSet {
    ChangeSet::descriptor(descriptor(&[
        ("disk1.img", NEW_DISK1_BYTES as u64),
        ("disk3.img", DISK3_BYTES as u64),
    ]))
    .replace("disk1.img", Content::bytes(random(NEW_DISK1_BYTES, 11)))
    .add("disk3.img", Content::bytes(random(DISK3_BYTES, 13)))
    .remove("disk2.img")
}

fn open(source: &Path, options: CommitOptions) -> Committer {
    let pkg = ovafs::package::open(source).unwrap();
    Committer::open_with(&pkg, options).unwrap()
}

/// `tar -xOf OVA NAME`.
fn tar_x_o(ova: &Path, name: &str) -> Vec<u8> {
    run_ok(Command::new(tool("tar")).arg("-xOf").arg(ova).arg(name)).stdout
}

/// Extracts `ova` with GNU tar into a new folder under `work`.
fn extract(ova: &Path, work: &Path) -> PathBuf {
    let dir = work.join("extracted");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    common::tar_extract(ova, &dir);
    dir
}

/// The `SHA256(name)= hex` lines of a manifest.
fn manifest_lines(mf: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8(mf.to_vec())
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (lhs, hex) = l.split_once(")= ")?;
            let (alg, name) = lhs.split_once('(')?;
            Some((format!("{alg}:{name}"), hex.trim().to_string()))
        })
        .collect()
}

/// Every file `names` in `dir` digests (`sha256sum`) to the manifest's line for it, and the
/// manifest lists exactly them.
fn assert_manifest_matches(dir: &Path, mf_name: &str, names: &[&str]) {
    let lines = manifest_lines(&fs::read(dir.join(mf_name)).unwrap());
    let listed: Vec<&str> = lines
        .keys()
        .map(|k| &k[k.find(':').unwrap() + 1..])
        .collect();
    let mut want: Vec<&str> = names.to_vec();
    want.sort();
    assert_eq!(listed, want, "{lines:?}");
    for n in names {
        let tool_name = match lines.keys().next().map(|k| &k[..k.find(':').unwrap()]) {
            Some("SHA1") => "sha1sum",
            _ => "sha256sum",
        };
        let alg = if tool_name == "sha1sum" {
            "SHA1"
        } else {
            "SHA256"
        };
        assert_eq!(
            lines[&format!("{alg}:{n}")],
            coreutils(tool_name, &dir.join(n)),
            "{n}"
        );
    }
}

fn assert_verify_passes(source: &Path, extra: &[&str]) {
    let mut args = extra.to_vec();
    args.push(p(source));
    let (code, out, err) = verify(&args);
    assert_eq!(code, 0, "ovafs verify {args:?}:\n{out}\n{err}");
}

#[test]
fn ova_member_replaced_added_and_removed() {
    let f = manifest_fixture();
    let ova = f.ova(&[], &["x.ovf", "x.mf", "disk1.img", "disk2.img"]);
    let mut c = open(&ova, CommitOptions::default());
    let r = c.commit(&replace_add_remove()).unwrap();
    assert_eq!(r.path, CommitPath::Rewrite);
    assert_eq!(r.members_replaced, ["disk1.img"]);
    assert_eq!(r.members_added, ["disk3.img"]);
    assert_eq!(r.members_removed, ["disk2.img"]);
    assert_eq!(r.certificate, CertificateFate::None);
    assert!(r.manifest_changed && r.replaced);

    let listing = common::tar_list(&ova);
    let names: Vec<&str> = listing.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["x.ovf", "x.mf", "disk1.img", "disk3.img"]);
    assert_eq!(listing[2].1, NEW_DISK1_BYTES as u64);
    assert_eq!(listing[3].1, DISK3_BYTES as u64);
    assert_eq!(tar_x_o(&ova, "disk1.img"), random(NEW_DISK1_BYTES, 11));
    assert_eq!(tar_x_o(&ova, "disk3.img"), random(DISK3_BYTES, 13));
    let dir = extract(&ova, &f.dir);
    assert_manifest_matches(&dir, "x.mf", &["x.ovf", "disk1.img", "disk3.img"]);
    assert_verify_passes(&ova, &[]);

    // The committer follows its own rewrite: a second change set on top.
    let r = c
        .commit(&ChangeSet::default().replace("disk3.img", Content::bytes(random(DISK3_BYTES, 17))))
        .unwrap();
    // Same length, same blocks; the manifest keeps its length: patched in place.
    assert_eq!(r.path, CommitPath::InPlace);
    assert_eq!(tar_x_o(&ova, "disk3.img"), random(DISK3_BYTES, 17));
    let dir = extract(&ova, &f.dir);
    assert_manifest_matches(&dir, "x.mf", &["x.ovf", "disk1.img", "disk3.img"]);
}

#[test]
fn folder_member_replaced_added_and_removed() {
    let f = manifest_fixture();
    let ovf = f.path("x.ovf");
    let mut c = open(&ovf, CommitOptions::default());
    let r = c.commit(&replace_add_remove()).unwrap();
    assert_eq!(r.path, CommitPath::Folder);
    assert_eq!(r.members_replaced, ["disk1.img"]);
    assert_eq!(r.members_added, ["disk3.img"]);
    assert_eq!(r.members_removed, ["disk2.img"]);
    assert!(!f.path("disk2.img").exists());
    assert_eq!(
        fs::read(f.path("disk1.img")).unwrap(),
        random(NEW_DISK1_BYTES, 11)
    );
    assert_eq!(
        fs::read(f.path("disk3.img")).unwrap(),
        random(DISK3_BYTES, 13)
    );
    assert_manifest_matches(&f.dir, "x.mf", &["x.ovf", "disk1.img", "disk3.img"]);
    let leftovers: Vec<_> = fs::read_dir(&f.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_verify_passes(&ovf, &[]);
}

#[test]
fn small_replacement_that_fits_is_patched_in_place() {
    let f = manifest_fixture();
    let ova = f.ova(&[], &["x.ovf", "x.mf", "disk1.img", "disk2.img"]);
    let before = fs::metadata(&ova).unwrap();
    let mut c = open(&ova, CommitOptions::default());
    // 900 bytes fill the same two blocks as 1000.
    let cs = ChangeSet::descriptor(descriptor(&[("disk1.img", 70_000), ("disk2.img", 900)]))
        .replace("disk2.img", Content::bytes(random(900, 21)));
    let r = c.commit(&cs).unwrap();
    assert_eq!(r.path, CommitPath::InPlace);
    assert_eq!(r.members_replaced, ["disk2.img"]);
    let after = fs::metadata(&ova).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((before.ino(), before.len()), (after.ino(), after.len()));
    assert_eq!(tar_x_o(&ova, "disk2.img"), random(900, 21));
    let dir = extract(&ova, &f.dir);
    assert_manifest_matches(&dir, "x.mf", &["x.ovf", "disk1.img", "disk2.img"]);
    assert_verify_passes(&ova, &[]);
}

/// The signer's public key from its certificate, for `openssl dgst -verify`.
fn public_key(f: &Package, cert: &Path) -> PathBuf {
    let out = run_ok(
        Command::new(tool("openssl"))
            .args(["x509", "-pubkey", "-noout", "-in"])
            .arg(cert),
    );
    let pub_pem = f.path("pub.pem");
    fs::write(&pub_pem, out.stdout).unwrap();
    pub_pem
}

/// Checks the `.cert` in `dir` the way a user would with openssl: its first line is
/// `ALG(x.mf)= hex`, ALG as expected, and `openssl dgst -ALG -verify` accepts the signature
/// over the manifest; the signer's certificate follows.
fn assert_openssl_verifies(dir: &Path, pub_pem: &Path, cert_pem: &Path, alg: &str) {
    let cert = fs::read_to_string(dir.join("x.cert")).unwrap();
    let (first, rest) = cert.split_once('\n').unwrap();
    let hex = first
        .strip_prefix(&format!("{}(x.mf)= ", alg.to_uppercase()))
        .unwrap_or_else(|| panic!("signature line: {first}"));
    let sig: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let sig_file = dir.join("sig.bin");
    fs::write(&sig_file, sig).unwrap();
    run_ok(
        Command::new(tool("openssl"))
            .args(["dgst", &format!("-{alg}"), "-verify"])
            .arg(pub_pem)
            .arg("-signature")
            .arg(&sig_file)
            .arg(dir.join("x.mf")),
    );
    assert_eq!(rest, fs::read_to_string(cert_pem).unwrap());
}

fn signer(f: &Package) -> Signer {
    Signer::from_pem(
        &fs::read(f.path("key.pem")).unwrap(),
        &fs::read(f.path("cert.pem")).unwrap(),
    )
    .unwrap()
}

#[test]
fn resigned_ova_verifies_with_ovafs_and_openssl() {
    let f = manifest_fixture();
    let cert_pem = f.sign(&["-newkey", "rsa:2048"], &[]);
    let ova = f.ova(&[], &["x.ovf", "x.mf", "x.cert", "disk1.img", "disk2.img"]);
    assert_verify_passes(&ova, &["--require-trusted", "--ca-file", p(&cert_pem)]);
    let mut c = open(&ova, CommitOptions::default());
    let r = c
        .commit(&replace_add_remove().certificate(CertificateAction::Resign(signer(&f))))
        .unwrap();
    assert_eq!(r.certificate, CertificateFate::Signed("x.cert".into()));
    assert_eq!(r.certificate_dropped, None);
    let names: Vec<String> = common::tar_list(&ova).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["x.ovf", "x.mf", "x.cert", "disk1.img", "disk3.img"]);
    assert_verify_passes(&ova, &["--require-trusted", "--ca-file", p(&cert_pem)]);
    let dir = extract(&ova, &f.dir);
    assert_manifest_matches(&dir, "x.mf", &["x.ovf", "disk1.img", "disk3.img"]);
    assert_openssl_verifies(&dir, &public_key(&f, &cert_pem), &cert_pem, "sha256");

    // A settings-sized edit re-signed in place: the new certificate fills the old blocks.
    let d = descriptor(&[
        ("disk1.img", NEW_DISK1_BYTES as u64),
        ("disk3.img", DISK3_BYTES as u64),
    ]);
    let d = String::from_utf8(d).unwrap().replace("256", "512");
    let r = c
        .commit(
            &ChangeSet::descriptor(d.as_bytes()).certificate(CertificateAction::Resign(signer(&f))),
        )
        .unwrap();
    assert_eq!(r.path, CommitPath::InPlace);
    assert_eq!(r.certificate, CertificateFate::Signed("x.cert".into()));
    assert_verify_passes(&ova, &["--require-trusted", "--ca-file", p(&cert_pem)]);
    let dir = extract(&ova, &f.dir);
    assert_openssl_verifies(&dir, &public_key(&f, &cert_pem), &cert_pem, "sha256");
}

#[test]
fn resigned_folder_with_sha1_manifest() {
    let f = manifest_fixture();
    // A SHA-1 manifest (sha1sum), no certificate yet; a key and certificate made by openssl.
    let text: String = ["x.ovf", "disk1.img", "disk2.img"]
        .iter()
        .map(|n| format!("SHA1({n})= {}\n", coreutils("sha1sum", &f.path(n))))
        .collect();
    fs::write(f.path("x.mf"), text).unwrap();
    let cert_pem = f.sign(&["-newkey", "rsa:2048"], &[]);
    fs::remove_file(f.path("x.cert")).unwrap();
    let ovf = f.path("x.ovf");
    let mut c = open(&ovf, CommitOptions::default());
    let r = c
        .commit(&replace_add_remove().certificate(CertificateAction::Resign(signer(&f))))
        .unwrap();
    assert_eq!(r.certificate, CertificateFate::Signed("x.cert".into()));
    assert_manifest_matches(&f.dir, "x.mf", &["x.ovf", "disk1.img", "disk3.img"]);
    // SHA-1 manifest, SHA-256 signature.
    assert_openssl_verifies(&f.dir, &public_key(&f, &cert_pem), &cert_pem, "sha256");
    assert_verify_passes(&ovf, &["--ca-file", p(&cert_pem)]);
}

#[test]
fn certificate_kept_dropped_by_default_and_on_request() {
    let f = manifest_fixture();
    f.sign(&["-newkey", "rsa:2048"], &[]);
    let ova = f.ova(&[], &["x.ovf", "x.mf", "x.cert", "disk1.img", "disk2.img"]);
    let mut c = open(&ova, CommitOptions::default());
    // Nothing changes: kept.
    let r = c.commit(&ChangeSet::default()).unwrap();
    assert_eq!(r.path, CommitPath::Unchanged);
    assert_eq!(r.certificate, CertificateFate::Kept("x.cert".into()));
    // The manifest changes: dropped, reported as before.
    let r = c.commit(&replace_add_remove()).unwrap();
    assert_eq!(r.certificate, CertificateFate::Dropped("x.cert".into()));
    assert_eq!(r.certificate_dropped.as_deref(), Some("x.cert"));
    assert!(!common::tar_list(&ova).iter().any(|(n, _)| n == "x.cert"));
    assert_verify_passes(&ova, &[]);

    // Dropped on request while nothing else changes (the folder package).
    let g = manifest_fixture();
    g.sign(&["-newkey", "rsa:2048"], &[]);
    let mut c = open(&g.path("x.ovf"), CommitOptions::default());
    let r = c
        .commit(&ChangeSet::default().certificate(CertificateAction::Drop))
        .unwrap();
    assert_eq!(r.certificate, CertificateFate::Dropped("x.cert".into()));
    assert!(!g.path("x.cert").exists());
    assert_verify_passes(&g.path("x.ovf"), &[]);
}

#[test]
fn bad_change_sets_are_refused_and_change_nothing() {
    let f = manifest_fixture();
    let ova = f.ova(&[], &["x.ovf", "x.mf", "disk1.img", "disk2.img"]);
    let before = fs::read(&ova).unwrap();
    let mut c = open(&ova, CommitOptions::default());
    let cases = [
        ChangeSet::default().replace("nope.img", Content::bytes(vec![1])),
        ChangeSet::default().add("disk1.img", Content::bytes(vec![1])),
        ChangeSet::default().remove("x.mf"),
        ChangeSet::default().replace("x.ovf", Content::bytes(vec![1])),
        ChangeSet::default()
            .replace("disk1.img", Content::bytes(vec![1]))
            .remove("disk1.img"),
        ChangeSet::default().add("../evil", Content::bytes(vec![1])),
        ChangeSet::default().add(
            "short.img",
            Content {
                data: Arc::new(vec![1u8; 10]),
                len: 11,
            },
        ),
    ];
    for cs in &cases {
        let e = c.commit(cs).unwrap_err();
        assert!(
            matches!(
                commit::commit_error(&e),
                Some(commit::CommitError::BadChange { .. })
            ),
            "{cs:?}: {e}"
        );
    }
    assert_eq!(fs::read(&ova).unwrap(), before);
}

// ---- crash matrix ----

const CHILD_ENV: &str = "OVAFS_CHANGES_CRASH_CHILD";
const MTIME: u64 = 1_700_000_000;

/// The change set of a crash run: `rewrite` (replace, add, remove), `inplace` (a small
/// replacement in the same blocks) or `folder` (as `rewrite`).
fn crash_changes(kind: &str) -> ChangeSet {
    match kind {
        "inplace" => {
            ChangeSet::descriptor(descriptor(&[("disk1.img", 70_000), ("disk2.img", 900)]))
                .replace("disk2.img", Content::bytes(random(900, 21)))
        }
        _ => replace_add_remove(),
    }
}

/// The child side: commits the change set of its spec, killing itself at fault point n.
#[test]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let lines: Vec<&str> = spec.lines().collect();
    let (kind, source, kill_at) = (
        lines[0],
        Path::new(lines[1]),
        lines[2].parse::<usize>().unwrap(),
    );
    let count = Arc::new(AtomicUsize::new(0));
    let hook: FaultHook = Arc::new(move |_p: FaultPoint| {
        if count.fetch_add(1, Ordering::SeqCst) + 1 == kill_at {
            nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL).unwrap();
        }
    });
    let mut c = open(
        source,
        CommitOptions {
            mtime: Some(MTIME),
            fault_hook: Some(hook),
            ..Default::default()
        },
    );
    c.commit(&crash_changes(kind)).unwrap();
}

/// Commits `kind` in this process (the fault points and the new state), then kills a child
/// at each point in turn and checks the state after recovery.
fn crash_matrix(kind: &str, pkg_dir: &Path, source: &str, work: &Path) -> Vec<String> {
    let old = folder_files(pkg_dir);
    let reference = work.join("reference");
    copy_files(pkg_dir, &reference);
    let points = Arc::new(Mutex::new(Vec::new()));
    let seen = points.clone();
    let hook: FaultHook = Arc::new(move |p| seen.lock().unwrap().push(p));
    let mut c = open(
        &reference.join(source),
        CommitOptions {
            mtime: Some(MTIME),
            fault_hook: Some(hook),
            ..Default::default()
        },
    );
    c.commit(&crash_changes(kind)).unwrap();
    drop(c);
    let new = folder_files(&reference);
    assert_ne!(old, new);
    let points = points.lock().unwrap().clone();
    let mut table = Vec::new();
    for n in 1..=points.len() + 1 {
        let run = work.join(format!("run{n}"));
        copy_files(pkg_dir, &run);
        let src = run.join(source);
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, format!("{kind}\n{}\n{n}", src.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let killed = out.status.signal() == Some(9);
        assert_eq!(
            killed,
            n <= points.len(),
            "{kind} point {n}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rec = commit::recover(&src).unwrap();
        assert!(
            rec.read_only_reason().is_none(),
            "{kind} point {n}: {rec:?}"
        );
        let state = folder_files(&run);
        let which = if state == old {
            "old"
        } else if state == new {
            "new"
        } else {
            panic!(
                "{kind} point {n} ({:?}): neither old nor new: {:?}",
                points.get(n - 1),
                state.keys().collect::<Vec<_>>()
            );
        };
        table.push(format!(
            "{kind} {n:>2} {:<34} -> {which}",
            points
                .get(n - 1)
                .map_or("(completed)".to_string(), |p| format!("{p:?}"))
        ));
        let _ = fs::remove_dir_all(&run);
    }
    table
}

#[test]
fn crash_during_a_change_set_leaves_old_or_new() {
    let mut table = Vec::new();
    for kind in ["rewrite", "inplace", "folder"] {
        let f = manifest_fixture();
        let work = common::tempdir();
        let pkg_dir = work.path().join("pkg");
        fs::create_dir(&pkg_dir).unwrap();
        let source = if kind == "folder" {
            for n in ["x.ovf", "x.mf", "disk1.img", "disk2.img"] {
                fs::copy(f.path(n), pkg_dir.join(n)).unwrap();
            }
            "x.ovf"
        } else {
            let ova = f.ova(&[], &["x.ovf", "x.mf", "disk1.img", "disk2.img"]);
            fs::copy(&ova, pkg_dir.join("x.ova")).unwrap();
            "x.ova"
        };
        table.extend(crash_matrix(kind, &pkg_dir, source, work.path()));
    }
    // Both outcomes happen: the matrix is not trivially all-old or all-new.
    assert!(table.iter().any(|l| l.ends_with("-> old")), "{table:#?}");
    assert!(table.iter().any(|l| l.ends_with("-> new")), "{table:#?}");
    println!("{}", table.join("\n"));
}

// ---- memory ----

const MEM_CHILD_ENV: &str = "OVAFS_CHANGES_MEMORY_CHILD";
const BIG: u64 = 2 << 30;

/// 2 GiB that are zero but for 4 KiB of pattern at the start of every 64 MiB; counts the
/// bytes read and the largest single read.
struct Generated {
    read: AtomicU64,
    largest: AtomicU64,
}

impl Generated {
    fn byte(offset: u64) -> u8 {
        if offset % (64 << 20) < 4096 {
            (offset.wrapping_mul(31) >> 3) as u8 | 1
        } else {
            0
        }
    }
}

impl ReadAt for Generated {
    fn len(&self) -> u64 {
        BIG
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let n = buf.len().min(BIG.saturating_sub(offset) as usize);
        buf[..n].fill(0);
        let (end, period) = (offset + n as u64, 64 << 20);
        let mut window = offset - offset % period;
        while window < end {
            for o in window.max(offset)..(window + 4096).min(end) {
                buf[(o - offset) as usize] = Generated::byte(o);
            }
            window += period;
        }
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        self.largest.fetch_max(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

fn vm_hwm() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap()
        * 1024
}

/// The child side: commits the 2 GiB replacement and prints what it measured.
#[test]
fn memory_child() {
    let Ok(source) = std::env::var(MEM_CHILD_ENV) else {
        return;
    };
    let mut c = open(Path::new(&source), CommitOptions::default());
    let before = vm_hwm();
    let gen_ = Arc::new(Generated {
        read: AtomicU64::new(0),
        largest: AtomicU64::new(0),
    });
    let cs = ChangeSet::descriptor(descriptor(&[("disk1.img", BIG), ("disk2.img", 1000)]))
        .replace("disk1.img", Content::new(gen_.clone()));
    let r = c.commit(&cs).unwrap();
    assert_eq!(r.path, CommitPath::Rewrite);
    println!(
        "MEASURED hwm_before={before} hwm_after={} read={} largest={}",
        vm_hwm(),
        gen_.read.load(Ordering::Relaxed),
        gen_.largest.load(Ordering::Relaxed)
    );
}

#[test]
fn large_replacement_is_streamed_in_bounded_memory() {
    let f = manifest_fixture();
    let ova = f.ova(&[], &["x.ovf", "x.mf", "disk1.img", "disk2.img"]);
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "memory_child", "--nocapture", "--test-threads=1"])
        .env(MEM_CHILD_ENV, &ova)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.find("MEASURED").map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("{stdout}"));
    println!("{line}");
    let field = |k: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(field("read"), BIG, "read once, digested while copied");
    assert!(field("largest") <= 1 << 20, "{line}");
    assert!(
        field("hwm_after") - field("hwm_before") < 64 << 20,
        "peak RSS grew by more than 64 MiB: {line}"
    );

    // GNU tar and sha256sum judge the 2 GiB member against the manifest.
    let listing = common::tar_list(&ova);
    assert_eq!(listing[2], ("disk1.img".to_string(), BIG));
    let mut tar = Command::new(tool("tar"))
        .arg("-xOf")
        .arg(&ova)
        .arg("disk1.img")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let sum = Command::new(tool("sha256sum"))
        .stdin(tar.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(tar.wait().unwrap().success());
    let got = String::from_utf8(sum.stdout).unwrap();
    let mf = String::from_utf8(tar_x_o(&ova, "x.mf")).unwrap();
    let want = manifest_lines(mf.as_bytes())["SHA256:disk1.img"].clone();
    assert_eq!(got.split_whitespace().next(), Some(want.as_str()));
    // The expected digest, computed here from the generator.
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let g = Generated {
        read: AtomicU64::new(0),
        largest: AtomicU64::new(0),
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < BIG {
        let n = g.read_at(off, &mut buf).unwrap();
        h.update(&buf[..n]);
        off += n as u64;
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(want, hex);
    assert_verify_passes(&ova, &[]);
}

/// A folder journal that would remove a data file that is not the one it names, or place a
/// file whose temporary is gone over one it never became, is left alone and nothing moves.
#[test]
fn folder_journal_placing_or_unlinking_other_files_is_refused() {
    use ovafs::commit::journal::{FileId, Identity, Journal, Kind, Op};
    let f = manifest_fixture();
    let ovf = f.path("x.ovf");
    let disk = fs::read(f.path("disk1.img")).unwrap();
    let st = nix::sys::stat::stat(&f.path("disk1.img")).unwrap();
    let other = FileId {
        dev: st.st_dev,
        ino: st.st_ino + 1,
        size: st.st_size as u64,
    };
    let journal = f.path("x.ovf.ovafs-journal");
    for ops in [
        vec![Op::Unlink {
            name: "disk1.img".into(),
            file: other,
        }],
        vec![Op::Place {
            from: ".x.ovf.ovafs-tmp-gone".into(),
            to: "disk1.img".into(),
            file: other,
            sha256: [0; 32],
        }],
    ] {
        let j = Journal {
            kind: Kind::Folder,
            target: Identity::default(),
            ops,
        };
        fs::write(&journal, j.encode()).unwrap();
        let r = commit::recover(&ovf).unwrap();
        assert!(
            matches!(r.journal, commit::JournalOutcome::Refused { .. }),
            "{r:?}"
        );
        assert!(journal.exists());
        assert_eq!(fs::read(f.path("disk1.img")).unwrap(), disk);
        fs::remove_file(&journal).unwrap();
    }
}

/// Re-signing an OVA that has no certificate adds `x.cert` right after the manifest, as
/// ovftool orders them.
#[test]
fn resigning_an_unsigned_ova_adds_the_certificate_after_the_manifest() {
    let f = manifest_fixture();
    let cert_pem = f.sign(&["-newkey", "rsa:3072"], &[]);
    let ova = f.ova(&[], &["x.ovf", "x.mf", "disk1.img", "disk2.img"]);
    let mut c = open(&ova, CommitOptions::default());
    let r = c
        .commit(&ChangeSet::default().certificate(CertificateAction::Resign(signer(&f))))
        .unwrap();
    assert_eq!(r.path, CommitPath::Rewrite);
    assert_eq!(r.certificate, CertificateFate::Signed("x.cert".into()));
    assert!(!r.manifest_changed);
    let names: Vec<String> = common::tar_list(&ova).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["x.ovf", "x.mf", "x.cert", "disk1.img", "disk2.img"]);
    assert_verify_passes(&ova, &["--require-trusted", "--ca-file", p(&cert_pem)]);
    let dir = extract(&ova, &f.dir);
    assert_manifest_matches(&dir, "x.mf", &["x.ovf", "disk1.img", "disk2.img"]);
    assert_openssl_verifies(&dir, &public_key(&f, &cert_pem), &cert_pem, "sha256");
}
