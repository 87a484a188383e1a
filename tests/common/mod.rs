//! Shared helpers for the integration tests: tools, fixtures, mounts that clean up.
//!
//! - [`tool`]: find an external program or fail the test naming it (never skip).
//! - [`scattered_raw`]: a sparse raw image with deterministic data spread across it.
//! - [`OvaBuilder`]: assembles an OVA (descriptor, manifest, disks) with GNU tar.
//! - [`Mount`]: `ovafs mount` with a guard whose `Drop` unmounts (`fusermount3 -u`, then
//!   `umount -l`), also when the test fails.
//! - [`guest`]: a small Linux guest built from Debian's packages, booted by qemu.
//! - [`ext4`]: ext2/3/4 images judged by `debugfs` (a whole tree: listings, stats, rdump).
#![allow(dead_code)]

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use sha2::{Digest, Sha256};

pub mod ext4;
pub mod guest;
pub mod guest_fs;
pub mod verify;
pub mod vmdk_layout;

/// The ovafs binary under test.
pub fn ovafs() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ovafs"))
}

/// Path of an external tool; panics (failing the test) with its name if it is missing.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "required tool '{name}' is not installed: run the README's test command \
         (it installs fuse3, qemu-utils and qemu-system-x86)"
    );
}

/// The shared corpus folder from `OVAFS_CORPUS`, or `None` (with a line saying that `what`
/// is skipped) when it is unset outside CI; under CI (`CI=true`) an unset variable fails.
pub fn corpus_dir(what: &str) -> Option<PathBuf> {
    match std::env::var_os("OVAFS_CORPUS") {
        // Absolute, so that tools run in other folders (tar -C) find it too.
        Some(p) => Some(
            std::fs::canonicalize(&p)
                .unwrap_or_else(|e| panic!("OVAFS_CORPUS={}: {e}", Path::new(&p).display())),
        ),
        None => {
            assert!(
                std::env::var("CI").map(|v| v != "true").unwrap_or(true),
                "OVAFS_CORPUS is not set under CI: {what} cannot run"
            );
            eprintln!("{what} skipped: OVAFS_CORPUS is not set");
            None
        }
    }
}

/// (name, status) of every file row of an `ovafs verify --json` report.
pub fn report_files(v: &serde_json::Value) -> Vec<(String, String)> {
    string_pairs(&v["files"], "name", "status")
}

/// The failures of an `ovafs verify --json` report, one per line.
pub fn report_failures(v: &serde_json::Value) -> String {
    v["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs a command and returns its output, panicking with stderr when it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `tar -cf ARCHIVE -C DIR` (GNU tar, its default format), to be given the member names:
/// `run_ok(tar_create(&ova, &pkg).args(&names))`.
pub fn tar_create(archive: &Path, dir: &Path) -> Command {
    let mut c = Command::new(tool("tar"));
    c.arg("-cf").arg(archive).arg("-C").arg(dir);
    c
}

/// A test's random seed: the number in the environment variable `var`, else one from the
/// clock (the caller prints it, so that a failing run can be repeated).
pub fn seed_from_env(var: &str) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// (name, size) of every entry GNU tar lists (`tar -tvf`), in order.
pub fn tar_list(archive: &Path) -> Vec<(String, u64)> {
    let out = run_ok(Command::new(tool("tar")).arg("-tvf").arg(archive));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            // -rw-r--r-- owner/group SIZE DATE TIME NAME
            let f: Vec<&str> = l.split_whitespace().collect();
            assert!(f.len() >= 6, "tar tvf line {l:?}");
            (f[5..].join(" "), f[2].parse().unwrap())
        })
        .collect()
}

/// Extracts `archive` with GNU tar into `dir` (created if needed), failing the test if tar
/// fails.
pub fn tar_extract(archive: &Path, dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    run_ok(
        Command::new(tool("tar"))
            .arg("-xf")
            .arg(archive)
            .arg("-C")
            .arg(dir),
    );
}

/// The pairs (`a`, `b`) of string fields of each object in the JSON array `v`.
pub fn string_pairs(v: &serde_json::Value, a: &str, b: &str) -> Vec<(String, String)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o[a].as_str().unwrap().to_string(),
                o[b].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Runs `script` with bash (whose error messages name the errno), stdin empty.
pub fn sh(script: &str) -> Output {
    Command::new(tool("bash"))
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `qemu-img ARGS`, which must succeed.
pub fn qemu_img(args: &[&str]) -> Output {
    run_ok(Command::new(tool("qemu-img")).args(args))
}

/// Converts the raw image `raw` to `format` (a qemu-img format name) at `out`.
pub fn raw_to_format(raw: &Path, format: &str, out: &Path) {
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        format,
        path_str(raw),
        path_str(out),
    ]);
}

/// Converts the raw image `raw` to a stream-optimized VMDK at `vmdk` with qemu-img (an
/// independent producer: its layout keeps the grain directory in the header).
pub fn to_stream_vmdk(raw: &Path, vmdk: &Path) {
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        path_str(raw),
        path_str(vmdk),
    ]);
}

/// Converts `src` (format `fmt`) to a raw file at `dst` with qemu-img.
pub fn qemu_to_raw(src: &Path, fmt: &str, dst: &Path) {
    qemu_img(&[
        "convert",
        "-f",
        fmt,
        "-O",
        "raw",
        path_str(src),
        path_str(dst),
    ]);
}

/// Makes a stream-optimized VMDK from a scattered raw image with qemu-img; returns
/// (raw path `DIR/NAME.img`, vmdk path `DIR/NAME.vmdk`); `chunks` data runs from `seed`.
pub fn qemu_stream_vmdk(
    dir: &Path,
    name: &str,
    size: u64,
    chunks: usize,
    seed: u64,
) -> (PathBuf, PathBuf) {
    let raw = dir.join(format!("{name}.img"));
    let vmdk = dir.join(format!("{name}.vmdk"));
    scattered_raw(&raw, size, chunks, seed);
    to_stream_vmdk(&raw, &vmdk);
    (raw, vmdk)
}

/// `path` as `&str` (test paths are ASCII).
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// A small deterministic generator (xorshift64*), so fixtures are the same on every run.
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Next value.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Fills `buf` with bytes that compress somewhat (text-like runs mixed with noise).
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut i = 0;
        while i < buf.len() {
            let run = (self.next() % 64 + 1) as usize;
            let v = self.next();
            let end = (i + run).min(buf.len());
            if v.is_multiple_of(3) {
                for (k, b) in buf[i..end].iter_mut().enumerate() {
                    *b = (v >> ((k % 8) * 8)) as u8;
                }
            } else {
                let c = b'a' + (v % 26) as u8;
                buf[i..end].fill(c);
            }
            i = end;
        }
    }
}

/// Writes a sparse raw image of `size` bytes with `chunks` chunks of data (16 KiB to 1 MiB,
/// at unaligned offsets) spread over the whole image, including its very start and end.
pub fn scattered_raw(path: &Path, size: u64, chunks: usize, seed: u64) {
    let f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    let mut rng = Rng::new(seed);
    let write_at = |off: u64, len: u64, rng: &mut Rng| {
        let len = len.min(size - off);
        let mut buf = vec![0u8; len as usize];
        rng.fill(&mut buf);
        f.write_all_at(&buf, off).unwrap();
    };
    write_at(0, 70_000.min(size), &mut rng);
    write_at(size.saturating_sub(33_333), 33_333, &mut rng);
    for _ in 0..chunks {
        let off = rng.next() % size;
        let len = 16_384 + rng.next() % (1 << 20);
        write_at(off, len, &mut rng);
    }
}

/// SHA-256 of everything `r` yields.
pub fn sha256_reader(mut r: impl Read) -> String {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a file, reading only its data regions: holes found with `SEEK_HOLE` are
/// hashed as zeros from memory (ovafs answers `SEEK_DATA`/`SEEK_HOLE` from its tables, so a
/// huge sparse flat image hashes without reading its empty space through FUSE).
pub fn sha256_sparse(path: &Path) -> String {
    let f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let len = f.metadata().unwrap().len();
    let seek = |off: u64, whence: nix::unistd::Whence| -> Option<u64> {
        nix::unistd::lseek(&f, off as i64, whence)
            .ok()
            .map(|o| o as u64)
    };
    let mut h = Sha256::new();
    let zeros = vec![0u8; 1 << 20];
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < len {
        let data = seek(pos, nix::unistd::Whence::SeekData)
            .unwrap_or(len)
            .min(len);
        let mut z = data - pos;
        while z > 0 {
            let n = z.min(zeros.len() as u64) as usize;
            h.update(&zeros[..n]);
            z -= n as u64;
        }
        if data >= len {
            break;
        }
        let hole = seek(data, nix::unistd::Whence::SeekHole)
            .unwrap_or(len)
            .min(len);
        let mut at = data;
        while at < hole {
            let n = (hole - at).min(buf.len() as u64) as usize;
            f.read_exact_at(&mut buf[..n], at).unwrap();
            h.update(&buf[..n]);
            at += n as u64;
        }
        pos = hole;
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a file.
pub fn sha256_file(path: &Path) -> String {
    sha256_reader(File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display())))
}

/// Asserts two files have identical bytes, reporting the first difference.
pub fn assert_same_bytes(a: &Path, b: &Path) {
    let (mut fa, mut fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let (la, lb) = (fa.metadata().unwrap().len(), fb.metadata().unwrap().len());
    assert_eq!(la, lb, "{} and {} differ in size", a.display(), b.display());
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut off = 0u64;
    loop {
        let n = read_full(&mut fa, &mut ba);
        let m = read_full(&mut fb, &mut bb);
        assert_eq!(n, m);
        if n == 0 {
            return;
        }
        if ba[..n] != bb[..n] {
            let i = ba[..n]
                .iter()
                .zip(&bb[..n])
                .position(|(x, y)| x != y)
                .unwrap();
            panic!(
                "{} and {} differ at byte {}",
                a.display(),
                b.display(),
                off + i as u64
            );
        }
        off += n as u64;
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> usize {
    let mut done = 0;
    while done < buf.len() {
        match f.read(&mut buf[done..]).unwrap() {
            0 => break,
            n => done += n,
        }
    }
    done
}

/// A disk to put in an OVA.
pub struct DiskFile {
    /// Image file.
    pub path: PathBuf,
    /// Virtual capacity.
    pub capacity: u64,
    /// ovf:format URI.
    pub format_uri: String,
    /// Stored gzip-compressed by GNU gzip as `NAME.gz`, with `ovf:compression="gzip"`.
    pub gzip: bool,
}

/// Builds an OVA: descriptor from `ovafs::sample`, SHA-256 manifest, disks, packed in that
/// order by GNU tar (an independent producer) in the given tar format.
pub struct OvaBuilder {
    /// Folder holding the package files.
    pub dir: PathBuf,
    /// Base name (`name.ovf`, `name.mf`, `name.ova`).
    pub name: String,
    /// Disks.
    pub disks: Vec<DiskFile>,
    /// GNU tar `--format` value.
    pub tar_format: String,
    /// Compress the whole archive with gzip (`tar -czf`).
    pub gzip_archive: bool,
    /// Other files packed after the disks (extents, parent images), not in References.
    pub extra_files: Vec<PathBuf>,
    /// Text replacements applied to the generated descriptor (e.g. to add `ovf:parentRef`).
    pub descriptor_edits: Vec<(String, String)>,
}

impl OvaBuilder {
    /// A builder writing into `dir`.
    pub fn new(dir: &Path, name: &str) -> Self {
        fs::create_dir_all(dir).unwrap();
        OvaBuilder {
            dir: dir.into(),
            name: name.into(),
            disks: Vec::new(),
            tar_format: "ustar".into(),
            gzip_archive: false,
            extra_files: Vec::new(),
            descriptor_edits: Vec::new(),
        }
    }

    /// Adds a file that is not a Disk (an extent or a parent image), copied into the
    /// package folder under its own name and packed after the disks.
    pub fn file(mut self, path: &Path) -> Self {
        self.extra_files.push(path.into());
        self
    }

    /// Replaces `from` by `to` in the generated descriptor.
    pub fn edit_descriptor(mut self, from: &str, to: &str) -> Self {
        self.descriptor_edits.push((from.into(), to.into()));
        self
    }

    /// Adds a disk image (copied into the package folder under its own file name).
    pub fn disk(mut self, image: &Path, capacity: u64, format_uri: &str) -> Self {
        self.disks.push(DiskFile {
            path: image.into(),
            capacity,
            format_uri: format_uri.into(),
            gzip: false,
        });
        self
    }

    /// Adds a disk image stored gzip-compressed (GNU gzip, `-6`) as `NAME.gz` and referenced
    /// with `ovf:compression="gzip"`.
    pub fn gzip_disk(mut self, image: &Path, capacity: u64, format_uri: &str) -> Self {
        self.disks.push(DiskFile {
            path: image.into(),
            capacity,
            format_uri: format_uri.into(),
            gzip: true,
        });
        self
    }

    /// Writes the descriptor and manifest and returns the package file names in order.
    pub fn write_package(&self) -> Vec<String> {
        let mut names = vec![format!("{}.ovf", self.name), format!("{}.mf", self.name)];
        let mut specs = Vec::new();
        for d in &self.disks {
            let mut file = d.path.file_name().unwrap().to_str().unwrap().to_string();
            if d.gzip {
                file.push_str(".gz");
                let out = File::create(self.dir.join(&file)).unwrap();
                let st = Command::new(tool("gzip"))
                    .arg("-6")
                    .arg("-c")
                    .arg(&d.path)
                    .stdout(out)
                    .status()
                    .unwrap();
                assert!(st.success(), "gzip {} failed", d.path.display());
            }
            let target = self.dir.join(&file);
            if d.path != target && !d.gzip {
                fs::copy(&d.path, &target).unwrap();
            }
            specs.push(ovafs::sample::DiskSpec {
                href: file.clone(),
                file_bytes: fs::metadata(&target).unwrap().len(),
                capacity_bytes: d.capacity,
                format_uri: d.format_uri.clone(),
                compression: d.gzip.then(|| "gzip".to_string()),
            });
            names.push(file);
        }
        let spec = ovafs::sample::ApplianceSpec {
            name: self.name.clone(),
            cpus: 2,
            memory_mib: 1024,
            network: "VM Network".into(),
            disks: specs,
        };
        for f in &self.extra_files {
            let file = f.file_name().unwrap().to_str().unwrap().to_string();
            let target = self.dir.join(&file);
            if *f != target {
                fs::copy(f, &target).unwrap();
            }
            names.push(file);
        }
        let mut xml = ovafs::sample::descriptor_xml(&spec);
        for (from, to) in &self.descriptor_edits {
            assert!(xml.contains(from.as_str()), "descriptor has no {from:?}");
            xml = xml.replace(from.as_str(), to);
        }
        fs::write(self.dir.join(&names[0]), xml).unwrap();
        let listed: Vec<&str> = names
            .iter()
            .filter(|n| !n.ends_with(".mf"))
            .map(|s| s.as_str())
            .collect();
        let mf = ovafs::sample::manifest(&self.dir, &listed).unwrap();
        fs::write(self.dir.join(&names[1]), mf).unwrap();
        names
    }

    /// Writes the package and packs it into `DIR/NAME.ova` with GNU tar (`-czf` when
    /// `gzip_archive`).
    pub fn build(&self) -> PathBuf {
        let names = self.write_package();
        let ova = self.dir.join(format!("{}.ova", self.name));
        run_ok(
            Command::new(tool("tar"))
                .arg(format!("--format={}", self.tar_format))
                .arg(if self.gzip_archive { "-czf" } else { "-cf" })
                .arg(&ova)
                .arg("-C")
                .arg(&self.dir)
                .args(&names),
        );
        ova
    }
}

/// A live mount; unmounted when dropped.
#[derive(Debug)]
pub struct Mount {
    /// The mount point.
    pub dir: PathBuf,
}

impl Mount {
    /// Mounts `source` on `dir` (created if needed) with `ovafs mount -o OPTS`.
    pub fn new(source: &Path, dir: &Path, opts: &[&str]) -> Result<Mount, String> {
        match Mount::run(Command::new(ovafs()), source, dir, opts) {
            (Some(m), _) => Ok(m),
            (None, out) => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        }
    }

    /// Like [`Mount::new`] under `timeout SECS` (a mount that hangs fails the test): the
    /// guard if it mounted and, either way, what ovafs wrote to stderr (its notices).
    pub fn bounded(source: &Path, dir: &Path, opts: &[&str], secs: u32) -> (Option<Mount>, String) {
        let mut cmd = Command::new(tool("timeout"));
        cmd.arg(secs.to_string()).arg(ovafs());
        let (m, out) = Mount::run(cmd, source, dir, opts);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_ne!(out.status.code(), Some(124), "ovafs mount hung: {err}");
        (m, err)
    }

    /// Runs `cmd` (ovafs, or a wrapper whose arguments end in ovafs) with `mount -o OPTS
    /// SOURCE DIR`; a failure must leave nothing mounted.
    fn run(mut cmd: Command, source: &Path, dir: &Path, opts: &[&str]) -> (Option<Mount>, Output) {
        fs::create_dir_all(dir).unwrap();
        cmd.arg("mount");
        for o in opts {
            cmd.arg("-o").arg(o);
        }
        let out = cmd
            .arg(source)
            .arg(dir)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if out.status.success() {
            return (Some(Mount { dir: dir.into() }), out);
        }
        assert!(
            !is_mounted(dir),
            "a failed mount left {} mounted",
            dir.display()
        );
        (None, out)
    }

    /// Mounts and panics with the error if it fails.
    pub fn ok(source: &Path, dir: &Path, opts: &[&str]) -> Mount {
        Mount::new(source, dir, opts)
            .unwrap_or_else(|e| panic!("mount {} failed: {e}", source.display()))
    }

    /// A path inside the mount.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Unmounts with `ovafs umount` (which waits for the daemon) and checks it worked.
    pub fn umount(self) {
        run_ok(Command::new(ovafs()).arg("umount").arg(&self.dir));
        assert!(!is_mounted(&self.dir));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if is_mounted(&self.dir) {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.dir)
                .stderr(Stdio::null())
                .status();
        }
        if is_mounted(&self.dir) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.dir)
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Whether `dir` is a mount point in this process's mount table.
pub fn is_mounted(dir: &Path) -> bool {
    let table = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = dir
        .to_str()
        .unwrap()
        .trim_end_matches('/')
        .replace(' ', "\\040");
    table
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// A fresh temporary folder (removed when dropped).
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ovafs-test-")
        .tempdir()
        .unwrap()
}

/// Appends `bytes` to the file at `path` (for corrupting fixtures).
pub fn append(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

/// Reads `reads` random ranges (up to 300 KiB each) of `flat` from each of 4 threads, thread
/// `t` seeded with `seed + t`, and compares them with `reference`.
pub fn concurrent_reads_match(flat: &Path, reference: &Path, size: u64, reads: u32, seed: u64) {
    let (flat, reference) = (
        Arc::new(flat.to_path_buf()),
        Arc::new(reference.to_path_buf()),
    );
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (flat, reference) = (flat.clone(), reference.clone());
            std::thread::spawn(move || {
                let (f, r) = (
                    File::open(&*flat).unwrap(),
                    File::open(&*reference).unwrap(),
                );
                let mut rng = Rng::new(seed + t);
                for _ in 0..reads {
                    let off = rng.next() % size;
                    let len = (1 + rng.next() % (300 << 10)) as usize;
                    let (mut a, mut b) = (vec![0u8; len], vec![0u8; len]);
                    let n = f.read_at(&mut a, off).unwrap();
                    let k = r.read_at(&mut b, off).unwrap();
                    assert_eq!(n, k);
                    assert!(
                        a[..n] == b[..k],
                        "thread {t}: bytes differ in {len} at {off}"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// PID of the daemon (`ovafs __serve ...`) serving `source`.
pub fn daemon_pid(source: &Path) -> i32 {
    let needle = source.to_str().unwrap();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.contains("__serve")
            && cmd.contains(needle)
            && let Some(pid) = e.file_name().to_str().and_then(|n| n.parse().ok())
        {
            return pid;
        }
    }
    panic!("no daemon found for {}", source.display());
}

/// Peak resident memory (VmHWM of `/proc/PID/status`) of the daemon serving `source`, in
/// bytes.
pub fn daemon_vm_hwm(source: &Path) -> u64 {
    let pid = daemon_pid(source);
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// A command prefix that runs what follows as `nobody` (group `nogroup`, no supplementary
/// groups), through `setpriv`.
pub fn as_nobody() -> Command {
    let mut c = Command::new(tool("setpriv"));
    c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"]);
    c
}

/// Every regular file directly in `dir`, by name, with its bytes (the whole state a crash
/// or a commit may have changed in a package folder).
pub fn folder_files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Copies the regular files directly in `from` into `to` (created if needed).
pub fn copy_files(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}
