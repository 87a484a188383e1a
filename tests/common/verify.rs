//! Helpers for the `ovafs verify` tests (`verify_cli`, `verify_trust`): running the command,
//! a package folder with a descriptor and two disks, manifests from coreutils (and
//! [`coreutils_check_manifest`], which checks an extracted package's manifest with them),
//! archives from GNU tar, and keys, certificates and signatures from the `openssl` CLI.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::{Rng, run_ok, tempdir, tool};

/// Runs `ovafs verify ARGS`; returns (exit code, stdout, stderr).
pub fn verify(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(super::ovafs())
        .arg("verify")
        .args(args)
        .output()
        .expect("run ovafs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `ovafs verify --json ARGS`: (exit code, parsed report).
pub fn verify_json(args: &[&str]) -> (i32, Value) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, out, err) = verify(&all);
    let v: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {out}\nstderr: {err}"));
    (code, v)
}

/// The hex digest `tool_name` (sha1sum, sha256sum, ...) prints for `file`.
pub fn coreutils(tool_name: &str, file: &Path) -> String {
    let out = run_ok(Command::new(tool(tool_name)).arg(file));
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Checks the manifest `mf` (a file name in `dir`, the extracted package) with coreutils:
/// its `SHA256(name)= hex` / `SHA1(...)` / `SHA512(...)` lines are rewritten as `hex  name`
/// lines and given to `sha256sum -c --strict` (or `sha1sum`, `sha512sum`) in `dir`. Panics
/// when a tool reports a mismatch or a missing file, or when the manifest has no line.
pub fn coreutils_check_manifest(dir: &Path, mf: &str) {
    let text = fs::read_to_string(dir.join(mf)).unwrap();
    let mut by_tool: Vec<(&str, String)> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (alg, rest) = line
            .split_once('(')
            .unwrap_or_else(|| panic!("{mf}: not a manifest line: {line:?}"));
        let (name, hex) = rest
            .rsplit_once(")=")
            .unwrap_or_else(|| panic!("{mf}: not a manifest line: {line:?}"));
        let tool_name = match alg.trim() {
            "SHA1" => "sha1sum",
            "SHA256" => "sha256sum",
            "SHA512" => "sha512sum",
            other => panic!("{mf}: unexpected algorithm {other:?}"),
        };
        let entry = format!("{}  {name}\n", hex.trim().to_lowercase());
        match by_tool.iter_mut().find(|(t, _)| *t == tool_name) {
            Some((_, lines)) => lines.push_str(&entry),
            None => by_tool.push((tool_name, entry)),
        }
    }
    assert!(!by_tool.is_empty(), "{mf} has no digest line");
    for (tool_name, lines) in by_tool {
        let list = tempdir();
        let input = list.path().join("sums");
        fs::write(&input, lines).unwrap();
        run_ok(
            Command::new(tool(tool_name))
                .args(["-c", "--strict"])
                .arg(&input)
                .current_dir(dir),
        );
    }
}

/// `len` deterministic bytes from `seed`.
pub fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Rng::new(seed).fill(&mut v);
    v
}

/// What the two verify test files choose differently for their [`Package`].
pub struct Layout {
    /// Size of `disk1.img` (`disk2.img` is always 1000 bytes).
    pub disk1_bytes: usize,
    /// The capacity the descriptor gives each disk.
    pub capacity_bytes: u64,
    /// GNU tar's `--format=` for [`Package::ova`].
    pub tar_format: &'static str,
    /// Spaces after the certificate in `x.cert` (ovftool pads its files).
    pub cert_padding: usize,
}

/// A package folder: `x.ovf` referencing `disk1.img` and `disk2.img` (deterministic bytes,
/// seeds 1 and 2); no manifest until one is written.
pub struct Package {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    layout: Layout,
}

impl Package {
    pub fn new(layout: Layout) -> Self {
        let tmp = tempdir();
        let dir = tmp.path().to_path_buf();
        fs::write(dir.join("disk1.img"), random(layout.disk1_bytes, 1)).unwrap();
        fs::write(dir.join("disk2.img"), random(1000, 2)).unwrap();
        let disks = ["disk1.img", "disk2.img"]
            .iter()
            .map(|n| ovafs::sample::DiskSpec {
                href: n.to_string(),
                file_bytes: fs::metadata(dir.join(n)).unwrap().len(),
                capacity_bytes: layout.capacity_bytes,
                format_uri: "http://example.org/raw".into(),
                compression: None,
            })
            .collect();
        let spec = ovafs::sample::ApplianceSpec {
            name: "x".into(),
            cpus: 1,
            memory_mib: 256,
            network: "VM Network".into(),
            disks,
        };
        fs::write(dir.join("x.ovf"), ovafs::sample::descriptor_xml(&spec)).unwrap();
        Package {
            _tmp: tmp,
            dir,
            layout,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `x.mf` with a SHA-256 line (from `sha256sum`) for each of `names`.
    pub fn write_manifest(&self, names: &[&str]) {
        let text: String = names
            .iter()
            .map(|n| format!("SHA256({n})= {}\n", coreutils("sha256sum", &self.path(n))))
            .collect();
        fs::write(self.path("x.mf"), text).unwrap();
    }

    /// Packs `names` (relative to the folder) into `x.ova` with GNU tar in the layout's
    /// format; `extra` are further `tar` arguments placed before the names.
    pub fn ova(&self, extra: &[&str], names: &[&str]) -> PathBuf {
        let ova = self.path("x.ova");
        let _ = fs::remove_file(&ova);
        run_ok(
            Command::new(tool("tar"))
                .arg(format!("--format={}", self.layout.tar_format))
                .arg("-cf")
                .arg(&ova)
                .arg("-C")
                .arg(&self.dir)
                .args(extra)
                .args(names),
        );
        ova
    }

    /// Makes a self-signed certificate for a new key (`openssl req` key options `keyopts`,
    /// extensions `addext`), signs `x.mf` with `openssl dgst -sha256 -sign` and writes
    /// `x.cert`; returns the certificate's PEM file (to use as the trust store).
    pub fn sign(&self, keyopts: &[&str], addext: &[&str]) -> PathBuf {
        let (key, cert) =
            self.self_signed(keyopts, "/C=DE/O=ovafs test/CN=signer.example.org", addext);
        let sig = self.path("x.sig");
        run_ok(
            Command::new(tool("openssl"))
                .args(["dgst", "-sha256", "-sign"])
                .arg(&key)
                .arg("-out")
                .arg(&sig)
                .arg(self.path("x.mf")),
        );
        self.write_cert_member(&sig, &cert);
        cert
    }

    /// Like [`Package::sign`] for an Ed25519 key, which signs the manifest itself
    /// (`openssl pkeyutl -sign -rawin`: EdDSA hashes internally).
    pub fn sign_ed25519(&self) -> PathBuf {
        let (key, cert) = self.self_signed(&["-newkey", "ed25519"], "/CN=ed25519.example.org", &[]);
        let sig = self.path("x.sig");
        run_ok(
            Command::new(tool("openssl"))
                .args(["pkeyutl", "-sign", "-rawin", "-inkey"])
                .arg(&key)
                .arg("-in")
                .arg(self.path("x.mf"))
                .arg("-out")
                .arg(&sig),
        );
        self.write_cert_member(&sig, &cert);
        cert
    }

    /// `openssl req -x509` for a new key: returns (key PEM, certificate PEM).
    fn self_signed(&self, keyopts: &[&str], subject: &str, addext: &[&str]) -> (PathBuf, PathBuf) {
        let key = self.path("key.pem");
        let cert = self.path("cert.pem");
        let mut req = Command::new(tool("openssl"));
        req.args(["req", "-x509", "-nodes", "-days", "30"])
            .args(keyopts)
            .args(["-subj", subject]);
        for e in addext {
            req.args(["-addext", e]);
        }
        run_ok(req.arg("-keyout").arg(&key).arg("-out").arg(&cert));
        (key, cert)
    }

    /// Writes `x.cert`: the signature `sig` as a hex line for `x.mf`, the certificate PEM
    /// `cert`, then the layout's padding.
    fn write_cert_member(&self, sig: &Path, cert: &Path) {
        let hex: String = fs::read(sig)
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let text = format!(
            "SHA256(x.mf)= {hex}\n{}{}",
            fs::read_to_string(cert).unwrap(),
            " ".repeat(self.layout.cert_padding)
        );
        fs::write(self.path("x.cert"), text).unwrap();
    }
}

/// The usual fixture: `x.ovf` referencing `disk1.img` (70,000 bytes) and `disk2.img`, and a
/// SHA-256 manifest of all three; archives in GNU format.
pub fn manifest_fixture() -> Package {
    let f = Package::new(Layout {
        disk1_bytes: 70_000,
        capacity_bytes: 1 << 20,
        tar_format: "gnu",
        cert_padding: 0,
    });
    f.write_manifest(&["x.ovf", "disk1.img", "disk2.img"]);
    f
}
