//! Helpers for the commit tests (`commit_ova.rs`, `commit_crash.rs`), included with
//! `#[path = "commit_support.rs"] mod support;`. As a test target of its own it has no tests.
//!
//! - [`Fixture`]: a package folder (descriptor from `ovafs::sample`, a raw disk, a manifest
//!   in a chosen style, maybe a certificate) packed by GNU tar in a chosen format and order.
//! - [`check_ova`]: the independent judges: GNU tar lists and extracts the archive, the
//!   extracted manifest verifies with `sha1sum -c` / `sha256sum -c` / `sha512sum -c` (after
//!   conversion to their format), the disk is unchanged, qemu-img reads the disk member in
//!   place inside the archive.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// Runs `cmd`, panicking with its stderr when it fails; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} (is it installed?): {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Lowercase hex SHA-256.
pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A manifest dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `SHA1(name)= hex` + LF.
    Sha1,
    /// `SHA256(name)= hex` + LF (ovftool 4.2+).
    Sha256,
    /// `SHA512(name)= hex` + LF.
    Sha512,
    /// `SHA256 (name) = hex` (BSD, VirtualBox).
    Bsd,
    /// `SHA256(name)= hex` + CRLF.
    Crlf,
    /// `SHA1(name)= HEX` upper case.
    Upper,
    /// SHA-1 lines, then the file padded with spaces (ovftool 4.0).
    Padded,
    /// `SHA2-256(name)= hex` (OpenSSL 3).
    Sha2Prefix,
    /// SHA-256 lines for the disks only.
    OmitDescriptor,
}

impl Style {
    fn line(self, name: &str, data: &[u8]) -> String {
        use sha1::Sha1;
        use sha2::Sha512;
        let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        match self {
            Style::Sha1 | Style::Padded => format!("SHA1({name})= {}\n", hex(&Sha1::digest(data))),
            Style::Upper => format!(
                "SHA1({name})= {}\n",
                hex(&Sha1::digest(data)).to_uppercase()
            ),
            Style::Sha256 | Style::OmitDescriptor => format!("SHA256({name})= {}\n", sha256(data)),
            Style::Sha512 => format!("SHA512({name})= {}\n", hex(&Sha512::digest(data))),
            Style::Bsd => format!("SHA256 ({name}) = {}\n", sha256(data)),
            Style::Crlf => format!("SHA256({name})= {}\r\n", sha256(data)),
            Style::Sha2Prefix => format!("SHA2-256({name})= {}\n", sha256(data)),
        }
    }
}

/// Where the manifest goes in the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// ovf, mf, [cert], disk (VMware).
    Spec,
    /// ovf, disk, mf, [cert] (VirtualBox).
    ManifestLast,
    /// disk, ovf, mf (a producer that gets it wrong).
    DescriptorNotFirst,
}

/// A package to build.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// Folder holding the package files and the OVA.
    pub dir: PathBuf,
    /// Base name.
    pub name: String,
    /// GNU tar `--format`.
    pub tar_format: &'static str,
    /// Manifest dialect; `None` for no manifest.
    pub style: Option<Style>,
    /// Member order.
    pub order: Order,
    /// Whether to add a certificate.
    pub cert: bool,
    /// Raw disk size in bytes.
    pub disk_bytes: usize,
    /// Disk file name (long names test the ustar prefix and GNU long names).
    pub disk_name: String,
    /// Directory members to put before the disk (they must be the disk's parents).
    pub dirs: Vec<String>,
}

impl Fixture {
    /// A SHA-256, spec-order, ustar package with a 256 KiB disk.
    pub fn new(dir: &Path, name: &str) -> Fixture {
        Fixture {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            tar_format: "ustar",
            style: Some(Style::Sha256),
            order: Order::Spec,
            cert: false,
            disk_bytes: 256 << 10,
            disk_name: format!("{name}-disk1.img"),
            dirs: Vec::new(),
        }
    }

    /// Descriptor file name.
    pub fn ovf(&self) -> String {
        format!("{}.ovf", self.name)
    }
    /// Manifest file name.
    pub fn mf(&self) -> String {
        format!("{}.mf", self.name)
    }
    /// Certificate file name.
    pub fn cert_name(&self) -> String {
        format!("{}.cert", self.name)
    }
    /// The OVA path.
    pub fn ova(&self) -> PathBuf {
        self.dir.join(format!("{}.ova", self.name))
    }

    /// The disk image bytes (deterministic).
    pub fn disk(&self) -> Vec<u8> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..self.disk_bytes)
            .map(|i| {
                if i % 4096 < 2048 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                } else {
                    0
                }
            })
            .collect()
    }

    /// The original descriptor.
    pub fn descriptor(&self) -> String {
        ovafs::sample::descriptor_xml(&ovafs::sample::ApplianceSpec {
            name: self.name.clone(),
            cpus: 2,
            memory_mib: 1024,
            network: "VM Network".into(),
            disks: vec![ovafs::sample::DiskSpec {
                href: self.disk_name.clone(),
                file_bytes: self.disk_bytes as u64,
                capacity_bytes: self.disk_bytes as u64,
                format_uri: "http://www.gnu.org/software/qemu/raw".into(),
                ..Default::default()
            }],
        })
    }

    /// Writes the package files into `dir/pkg/` and returns the member names in archive order.
    pub fn write_files(&self) -> Vec<String> {
        let pkg = self.dir.join("pkg");
        if let Some(parent) = Path::new(&self.disk_name).parent() {
            fs::create_dir_all(pkg.join(parent)).unwrap();
        }
        fs::create_dir_all(&pkg).unwrap();
        let desc = self.descriptor();
        fs::write(pkg.join(self.ovf()), &desc).unwrap();
        let disk = self.disk();
        fs::write(pkg.join(&self.disk_name), &disk).unwrap();
        let mut names = vec![self.ovf()];
        if let Some(style) = self.style {
            let mut mf = String::new();
            if style != Style::OmitDescriptor {
                mf += &style.line(&self.ovf(), desc.as_bytes());
            }
            mf += &style.line(&self.disk_name, &disk);
            if style == Style::Padded {
                mf += &" ".repeat(94);
            }
            fs::write(pkg.join(self.mf()), &mf).unwrap();
            names.push(self.mf());
        }
        if self.cert {
            let cert = format!(
                "SHA256({})= {}\n-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n",
                self.mf(),
                "ab".repeat(128)
            );
            fs::write(pkg.join(self.cert_name()), cert).unwrap();
            names.push(self.cert_name());
        }
        names.extend(self.dirs.iter().cloned());
        match self.order {
            Order::Spec => names.push(self.disk_name.clone()),
            Order::ManifestLast => names.insert(1, self.disk_name.clone()),
            Order::DescriptorNotFirst => names.insert(0, self.disk_name.clone()),
        }
        names
    }

    /// Builds the OVA with GNU tar and returns its path.
    pub fn build(&self) -> PathBuf {
        let names = self.write_files();
        let ova = self.ova();
        run(Command::new("tar")
            .arg(format!("--format={}", self.tar_format))
            .arg("--owner=builder:1234")
            .arg("--group=staff:50")
            .arg("--no-recursion")
            .arg("-cf")
            .arg(&ova)
            .arg("-C")
            .arg(self.dir.join("pkg"))
            .args(&names));
        ova
    }
}

/// One member as GNU tar lists it: name, size, and the block of its header (`tar -R`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Name.
    pub name: String,
    /// Size.
    pub size: u64,
    /// Owner/group column.
    pub owner: String,
    /// Permissions column.
    pub perms: String,
    /// Date and time columns.
    pub when: String,
    /// Block number of the member's (last) header.
    pub block: u64,
}

/// `tar -tvR --quoting-style=literal -f ova`, parsed. Panics if GNU tar complains.
pub fn tar_list(ova: &Path) -> Vec<Listed> {
    let out = Command::new("tar")
        .args(["--quoting-style=literal", "-tvRf"])
        .arg(ova)
        .output()
        .expect("GNU tar is needed for these tests");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "tar -tvRf {} failed: {}",
        ova.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("** Block of NULs **") && !l.contains("End of File"))
        .map(|l| {
            // "block N: perms owner size date time name"
            let rest = l.strip_prefix("block ").expect("block prefix");
            let (block, rest) = rest.split_once(": ").unwrap();
            let mut it = rest.split_whitespace();
            let perms = it.next().unwrap().to_string();
            let owner = it.next().unwrap().to_string();
            let size: u64 = it.next().unwrap().parse().unwrap();
            let date = it.next().unwrap();
            let time = it.next().unwrap();
            let at = rest.find(&format!("{date} {time} ")).unwrap() + date.len() + time.len() + 2;
            Listed {
                name: rest[at..].to_string(),
                size,
                owner,
                perms,
                when: format!("{date} {time}"),
                block: block.trim().parse().unwrap(),
            }
        })
        .collect()
}

/// The manifest lines of `mf` converted to `sha*sum -c` input, grouped by algorithm.
fn coreutils_checks(mf: &str) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    for line in mf.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let open = line.find('(').expect("manifest line has (");
        let close = line.rfind(')').expect("manifest line has )");
        let alg = line[..open].trim().to_uppercase().replace("SHA2-", "SHA");
        let name = &line[open + 1..close];
        let hex = line[close + 1..]
            .trim()
            .trim_start_matches('=')
            .trim()
            .to_lowercase();
        let tool = match alg.as_str() {
            "SHA1" => "sha1sum",
            "SHA256" => "sha256sum",
            "SHA512" => "sha512sum",
            other => panic!("unexpected algorithm {other}"),
        };
        match out.iter_mut().find(|(t, _)| *t == tool) {
            Some((_, s)) => *s += &format!("{hex}  {name}\n"),
            None => out.push((tool, format!("{hex}  {name}\n"))),
        }
    }
    out
}

/// What [`check_ova`] found.
#[derive(Debug)]
pub struct Checked {
    /// The listing.
    pub listing: Vec<Listed>,
    /// The extracted descriptor.
    pub descriptor: Vec<u8>,
    /// The extracted manifest, if any.
    pub manifest: Option<Vec<u8>>,
    /// Where it was extracted.
    pub extracted: PathBuf,
}

/// The independent judges. GNU tar lists the archive without a complaint and extracts it;
/// the descriptor is the first member (unless the fixture put it elsewhere); the manifest (when there is one) verifies with the
/// coreutils sums and lists the descriptor when `fx` did; the disk extracted equals the
/// original; qemu-img reads the disk member in place (raw driver at the member's offset) and
/// it equals the original too.
pub fn check_ova(fx: &Fixture, ova: &Path, work: &Path) -> Checked {
    let listing = tar_list(ova);
    if fx.order != Order::DescriptorNotFirst {
        assert_eq!(listing[0].name, fx.ovf(), "the descriptor is not first");
    }
    let x = work.join("x");
    let _ = fs::remove_dir_all(&x);
    fs::create_dir_all(&x).unwrap();
    run(Command::new("tar").arg("-xf").arg(ova).arg("-C").arg(&x));
    let descriptor = fs::read(x.join(fx.ovf())).unwrap();
    let disk = fs::read(x.join(&fx.disk_name)).unwrap();
    assert!(disk == fx.disk(), "the disk member changed");
    let manifest = fs::read(x.join(fx.mf())).ok();
    if let Some(mf) = &manifest {
        let text = String::from_utf8(mf.clone()).unwrap();
        for (tool, input) in coreutils_checks(&text) {
            let f = work.join(format!("{tool}.txt"));
            fs::write(&f, &input).unwrap();
            run(Command::new(tool)
                .arg("-c")
                .arg("--strict")
                .arg(&f)
                .current_dir(&x));
        }
        if fx.style != Some(Style::OmitDescriptor) {
            assert!(
                text.contains(&format!("({})", fx.ovf())),
                "the manifest lost the descriptor line"
            );
        }
    }
    // qemu-img reads the disk member where GNU tar says it is.
    let member = listing
        .iter()
        .find(|l| l.name == fx.disk_name)
        .expect("disk member listed");
    let offset = data_offset(ova, member.block);
    let out = work.join("qemu.raw");
    let spec = format!(
        r#"json:{{"driver":"raw","offset":{offset},"size":{},"file":{{"driver":"file","filename":"{}"}}}}"#,
        member.size,
        ova.display()
    );
    run(Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(&spec)
        .arg(&out));
    assert!(
        fs::read(&out).unwrap() == fx.disk(),
        "qemu-img read another disk"
    );
    Checked {
        listing,
        descriptor,
        manifest,
        extracted: x,
    }
}

/// Offset of the data of the member whose headers start at `block` (as `tar -R` says): for a
/// GNU long name, `tar -R` names the `././@LongLink` header, whose payload is skipped.
pub fn data_offset(ova: &Path, block: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let f = fs::File::open(ova).unwrap();
    let mut off = block * 512;
    let mut h = [0u8; 512];
    loop {
        f.read_exact_at(&mut h, off).unwrap();
        if h[156] != b'L' {
            return off + 512;
        }
        let size_text = std::str::from_utf8(&h[124..135]).unwrap();
        let size =
            u64::from_str_radix(size_text.trim_matches(|c| c == '\0' || c == ' '), 8).unwrap();
        off += 512 + size.div_ceil(512) * 512;
    }
}

/// Journal and temporary files left beside `ova`.
pub fn leftovers(ova: &Path) -> Vec<String> {
    let name = ova.file_name().unwrap().to_str().unwrap().to_string();
    fs::read_dir(ova.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n == &format!("{name}.ovafs-journal") || n.starts_with(&format!(".{name}.ovafs-tmp-"))
        })
        .collect()
}

/// The descriptor with `cpus` CPUs (same length for 1-digit counts).
pub fn with_cpus(desc: &str, cpus: u32) -> String {
    desc.replace(
        "<rasd:VirtualQuantity>2</rasd:VirtualQuantity>",
        &format!("<rasd:VirtualQuantity>{cpus}</rasd:VirtualQuantity>"),
    )
    .replace("2 virtual CPU(s)", &format!("{cpus} virtual CPU(s)"))
}

/// The descriptor with an annotation of `n` bytes added to the VirtualSystem (grows it).
pub fn with_annotation(desc: &str, n: usize) -> String {
    let text: String = "annotation ".repeat(n / 11 + 1)[..n].to_string();
    desc.replace(
        "    <Info>A virtual machine</Info>\n",
        &format!(
            "    <Info>A virtual machine</Info>\n    <AnnotationSection>\n      <Info>Notes</Info>\n      <Annotation>{text}</Annotation>\n    </AnnotationSection>\n"
        ),
    )
}
