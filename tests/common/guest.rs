//! A small bootable Linux guest for the end-to-end tests, built inside the test run from
//! Debian's packages, and qemu-system-x86_64 runs of it whose serial console the tests read.
//!
//! - [`Guest::build`]: the kernel of `linux-image-cloud-amd64` and an initramfs holding
//!   `busybox-static`, the virtio (and CD-ROM) modules and [`INIT`]. The packages are fetched
//!   with `apt-get download` and unpacked with `dpkg-deb -x` (nothing is installed on the host).
//!   The result is cached under `CARGO_TARGET_TMPDIR/ovafs-guest/KEY/` (or
//!   `$OVAFS_GUEST_CACHE/KEY/`), KEY being a hash of the two packages' versions (as the local
//!   `apt-cache` sees them) and of this recipe, so later runs neither download nor rebuild;
//!   the downloaded `.deb` files are kept beside it (`debs/`), so a recipe change rebuilds
//!   without downloading either.
//! - [`ext4_image`]: a raw disk image holding an ext4 file system with given files
//!   (`mkfs.ext4 -d`), the guest's root; [`ext4_cat`], [`ext4_names`] and [`ext4_blocks`]
//!   read a file, a folder or a file's block list of such an image back with `debugfs`
//!   (what the guest left on its disk).
//! - [`Guest::boot`] / [`Guest::run`] / [`Guest::start`]: boots the guest (TCG;
//!   `OVAFS_GUEST_ACCEL=kvm` for KVM) with `-kernel`/`-initrd`/`-append console=ttyS0 ...`,
//!   `-nographic -no-reboot`, the disks as `-drive ...,if=virtio`, under a timeout. The guest's `/init` mounts `/dev/vda` (ext4)
//!   on `/root` (read-only when the disk is), runs the test's script there with `sh` between
//!   two markers on the console, unmounts, syncs and powers off; [`GuestRun`] holds exactly
//!   what the script printed and its exit status. [`Running`] (from `start`) lets a test
//!   wait for a console line and kill qemu mid-run.
//!
//! KVM is not the default although `/dev/kvm` may exist: on the machine this was written on
//! it exists and opens, but the guest dies in KVM with "emulation failure" (default CPU) or
//! hangs (`-cpu host`), while a whole TCG boot takes about 2-3 s.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{path_str, run_ok, tempdir, tool};

/// The Debian package whose dependency names the kernel image package.
const KERNEL_META: &str = "linux-image-cloud-amd64";
/// The Debian package of the guest's user space.
const BUSYBOX: &str = "busybox-static";
/// Bump when the build recipe changes in a way the hashed texts below do not show.
const RECIPE: &str = "ovafs-guest 1";
/// Modules put into the initramfs (with what they depend on): the virtio disk, and the
/// CD-ROM over IDE or virtio-scsi with its ISO 9660 file system, for tests that attach one.
const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "ata_piix",
    "sr_mod",
    "isofs",
];
/// Modules every boot loads (others on request: [`Boot::modules`]).
const BOOT_MODULES: &str = "virtio_pci virtio_blk";
/// Kernel command line: serial console, quiet, no reboot on panic (qemu's `-no-reboot`
/// then exits at once instead of waiting for the timeout); the rest only shortens a TCG
/// boot (no mitigations, no timer checks, no PS/2 probing).
const CMDLINE: &str = "console=ttyS0 quiet panic=-1 mitigations=off tsc=reliable \
                       no_timer_check i8042.noaux i8042.nomux i8042.nopnp";
/// Marker line the guest prints before the script's output.
const BEGIN: &str = "@@ovafs-guest-begin@@\n";
/// Start of the marker the guest prints after the script's output: `@@ovafs-guest-end
/// rc=N@@`.
const END: &str = "@@ovafs-guest-end rc=";
/// How long a boot may take before it fails the test (a TCG boot takes seconds).
const TIMEOUT: Duration = Duration::from_secs(180);
/// How often a waiting test looks at qemu and the console.
const POLL: Duration = Duration::from_millis(20);

/// The guest's `/init` (busybox sh). No udev: devtmpfs makes the device nodes. Kernel
/// messages are limited to emergencies and the console's output processing is off (no
/// `\r` added), so the bytes between the markers are exactly what the script wrote.
pub const INIT: &str = r#"#!/bin/busybox sh
# /init of the ovafs test guest (tests/common/guest.rs).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/null >/dev/console 2>&1
echo 1 >/proc/sys/kernel/printk
stty -F /dev/console -opost
root=/dev/vda
modules=
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    ovafs.root=*) root="${arg#ovafs.root=}" ;;
    ovafs.modules=*) modules="$(echo "${arg#ovafs.modules=}" | tr , ' ')" ;;
  esac
done
modprobe -a @BOOT_MODULES@ $modules || echo "ovafs-guest: modprobe failed"
if [ "$root" != none ]; then
  n=0
  while [ ! -b "$root" ] && [ $n -lt 250 ]; do usleep 20000; n=$((n + 1)); done
  mount -t ext4 "$root" /root 2>/dev/null || mount -t ext4 -o ro "$root" /root \
    || echo "ovafs-guest: cannot mount $root"
fi
cd /root
printf '@@ovafs-guest-begin@@\n'
sh /ovafs-script
printf '@@ovafs-guest-end rc=%d@@\n' $?
cd /
if grep -q ' /root ' /proc/mounts; then umount /root || echo "ovafs-guest: umount failed"; fi
sync
poweroff -f
"#;

/// The built guest: kernel, initramfs and the busybox binary, in the cache.
#[derive(Debug)]
pub struct Guest {
    /// The kernel (`vmlinuz`).
    pub kernel: PathBuf,
    /// The initramfs (uncompressed newc cpio) without the script.
    pub initramfs: PathBuf,
    /// The static busybox binary the initramfs holds (for root file systems that want it).
    pub busybox: PathBuf,
    /// The package versions it was built from, one `name version` a line.
    pub versions: String,
}

impl Guest {
    /// The guest, built once per test process and cached between runs (see the file
    /// header); panics naming what is missing when it cannot be built.
    pub fn build() -> &'static Guest {
        static GUEST: OnceLock<Guest> = OnceLock::new();
        GUEST.get_or_init(build_or_reuse)
    }

    /// Boots from one virtio disk (`-drive file=DISK,format=FORMAT,if=virtio,cache=CACHE`)
    /// and runs `script` on its mounted root.
    pub fn boot(&self, disk: &Path, format: &str, cache: &str, script: &str) -> GuestRun {
        self.run(&Boot::new(script).disk(disk, format, &[&format!("cache={cache}")]))
    }

    /// Boots as `boot` describes and waits for the guest to power off.
    pub fn run(&self, boot: &Boot) -> GuestRun {
        self.start(boot).finish()
    }

    /// Starts qemu as `boot` describes and returns at once (for tests that watch the
    /// console or kill qemu mid-run).
    pub fn start(&self, boot: &Boot) -> Running {
        let tmp = tempdir();
        let initrd = tmp.path().join("initrd");
        self.initrd_with_script(&boot.script, tmp.path(), &initrd);
        let mut cmdline = format!("{CMDLINE} ovafs.root={}", boot.root);
        if !boot.modules.is_empty() {
            cmdline.push_str(&format!(" ovafs.modules={}", boot.modules.join(",")));
        }
        let console = tmp.path().join("console");
        let errors = tmp.path().join("qemu.err");
        let mut cmd = Command::new(tool("qemu-system-x86_64"));
        cmd.args(accel_args())
            .args(["-m", "256", "-smp", "1", "-nographic", "-no-reboot"])
            .args(["-nic", "none"])
            .arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&initrd)
            .arg("-append")
            .arg(&cmdline);
        for d in &boot.drives {
            cmd.arg("-drive").arg(d);
        }
        cmd.args(&boot.qemu_args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&console).unwrap())
            .stderr(fs::File::create(&errors).unwrap());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        Running {
            child,
            started: Instant::now(),
            timeout: boot.timeout,
            console,
            errors,
            _tmp: tmp,
        }
    }

    /// Writes the initramfs followed by a second cpio archive holding `/ovafs-script` (the
    /// kernel unpacks concatenated archives in order) to `out`.
    pub fn initrd_with_script(&self, script: &str, tmp: &Path, out: &Path) {
        let stage = tmp.join("script-stage");
        fs::create_dir_all(&stage).unwrap();
        fs::write(stage.join("ovafs-script"), script).unwrap();
        let mut bytes = fs::read(&self.initramfs).unwrap();
        bytes.extend_from_slice(&cpio_of(&stage));
        fs::write(out, bytes).unwrap();
    }
}

/// What one boot of the guest is given.
#[derive(Debug, Clone)]
pub struct Boot {
    /// The shell script the guest runs (busybox sh, in `/root`).
    pub script: String,
    /// `-drive` values, in order (the first virtio disk is `/dev/vda`).
    pub drives: Vec<String>,
    /// Modules to load besides the virtio disk's (e.g. `sr_mod`, `isofs`, `ata_piix`).
    pub modules: Vec<String>,
    /// The device the guest mounts on `/root`, or `none`.
    pub root: String,
    /// Further qemu arguments (e.g. `-cdrom FILE`).
    pub qemu_args: Vec<String>,
    /// How long the boot may take.
    pub timeout: Duration,
}

impl Boot {
    /// A boot running `script`, with no disk yet and `/dev/vda` as the root.
    pub fn new(script: &str) -> Boot {
        Boot {
            script: script.into(),
            drives: Vec::new(),
            modules: Vec::new(),
            root: "/dev/vda".into(),
            qemu_args: Vec::new(),
            timeout: TIMEOUT,
        }
    }

    /// Adds a virtio disk: `-drive file=PATH,format=FORMAT,if=virtio,OPTIONS` (options such
    /// as `cache=none`, `snapshot=on`, `readonly=on`).
    pub fn disk(mut self, path: &Path, format: &str, options: &[&str]) -> Boot {
        // qemu's option syntax: a comma inside a value is written twice.
        let mut d = format!(
            "file={},format={format},if=virtio",
            path_str(path).replace(',', ",,")
        );
        for o in options {
            d.push(',');
            d.push_str(o);
        }
        self.drives.push(d);
        self
    }

    /// Loads these modules too (each must be in the initramfs: [`MODULES`]).
    pub fn modules(mut self, names: &[&str]) -> Boot {
        self.modules.extend(names.iter().map(|s| s.to_string()));
        self
    }

    /// Mounts `device` on `/root` instead of `/dev/vda` (`none`: mounts nothing).
    pub fn root(mut self, device: &str) -> Boot {
        self.root = device.into();
        self
    }

    /// Appends qemu arguments.
    pub fn qemu_args(mut self, args: &[&str]) -> Boot {
        self.qemu_args.extend(args.iter().map(|s| s.to_string()));
        self
    }
}

/// A guest whose qemu is running; killed when dropped.
#[derive(Debug)]
pub struct Running {
    child: Child,
    started: Instant,
    timeout: Duration,
    console: PathBuf,
    errors: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Running {
    /// What the serial console has shown so far.
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.console).unwrap_or_default()).into_owned()
    }

    /// Waits until the console shows `needle` (e.g. a line the script prints before it
    /// starts writing); panics with the console after the boot's timeout or if qemu exits
    /// first.
    pub fn wait_for(&mut self, needle: &str) {
        loop {
            if self.console().contains(needle) {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "qemu exited ({status}) before the console showed {needle:?}:\n{}",
                    self.console().replace('\r', "")
                );
            }
            self.check_timeout(&format!("the console did not show {needle:?}"));
            std::thread::sleep(POLL);
        }
    }

    /// Kills qemu with SIGKILL (a crash of the hypervisor) and waits for it.
    pub fn kill(mut self) -> GuestRun {
        let _ = self.child.kill();
        let status = self.child.wait().unwrap();
        self.result(status)
    }

    /// Waits for the guest to power off; panics with the console after the timeout.
    pub fn finish(mut self) -> GuestRun {
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return self.result(status);
            }
            self.check_timeout("the guest did not power off");
            std::thread::sleep(POLL);
        }
    }

    fn check_timeout(&mut self, what: &str) {
        if self.started.elapsed() > self.timeout {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!(
                "{what} within {} s; console:\n{}",
                self.timeout.as_secs(),
                self.console().replace('\r', "")
            );
        }
    }

    fn result(&self, status: ExitStatus) -> GuestRun {
        let console = self.console();
        let (output, rc) = framed(&console);
        GuestRun {
            output,
            rc,
            status,
            qemu: fs::read_to_string(&self.errors).unwrap_or_default(),
            elapsed: self.started.elapsed(),
            console,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The result of one boot.
#[derive(Debug)]
pub struct GuestRun {
    /// Everything the serial console showed (firmware, kernel, init, script).
    pub console: String,
    /// Exactly what the script printed, if the guest got to the end marker.
    pub output: Option<String>,
    /// The script's exit status, if the guest got to the end marker.
    pub rc: Option<i32>,
    /// How qemu exited.
    pub status: ExitStatus,
    /// What qemu wrote to stderr.
    pub qemu: String,
    /// Wall time of the whole boot, qemu start to exit.
    pub elapsed: Duration,
}

impl GuestRun {
    /// The script's output; panics (showing the console) unless the script ran to its end
    /// with status 0 and qemu exited cleanly.
    pub fn ok(&self) -> &str {
        match (&self.output, self.rc) {
            (Some(out), Some(0)) if self.status.success() => out,
            _ => panic!("{self}"),
        }
    }
}

impl std::fmt::Display for GuestRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "guest run: qemu {}, script status {:?}, {:.1} s\n--- console ---\n{}\n--- qemu stderr ---\n{}",
            self.status,
            self.rc,
            self.elapsed.as_secs_f64(),
            self.console.replace('\r', ""),
            self.qemu
        )
    }
}

/// A raw disk image of `size_mib` MiB at `path` holding an ext4 file system (4 KiB blocks,
/// label `ovafs-root`) with `files` (path relative to the root, bytes), made by
/// `mkfs.ext4 -d`.
pub fn ext4_image(path: &Path, size_mib: u64, files: &[(&str, &[u8])]) {
    let stage = tempdir();
    for (name, bytes) in files {
        let p = stage.path().join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, bytes).unwrap();
    }
    if path.exists() {
        fs::remove_file(path).unwrap();
    }
    run_ok(
        Command::new(sbin_tool("mkfs.ext4"))
            .args([
                "-q",
                "-F",
                "-b",
                "4096",
                "-L",
                "ovafs-root",
                "-E",
                "root_owner=0:0",
            ])
            .arg("-d")
            .arg(stage.path())
            .arg(path)
            .arg(format!("{size_mib}M"))
            .stdout(Stdio::null()),
    );
}

/// The bytes of file `path` (absolute, e.g. `/data/blob.bin`) in the ext4 file system of the
/// raw image `image`, read by `debugfs -R 'cat PATH'` (read-only; it never mounts). Panics
/// when debugfs reports anything but its banner (it exits 0 for a missing file).
pub fn ext4_cat(image: &Path, path: &str) -> Vec<u8> {
    debugfs(image, &format!("cat {path}"))
}

/// The names in folder `dir` (absolute) of the ext4 file system in the raw image `image`,
/// without `.` and `..`, sorted, from `debugfs -R 'ls -p DIR'`.
pub fn ext4_names(image: &Path, dir: &str) -> Vec<String> {
    let listing = String::from_utf8(debugfs(image, &format!("ls -p {dir}"))).unwrap();
    // Each entry is a line `/INODE/MODE/UID/GID/NAME/SIZE/`.
    let mut names: Vec<String> = listing
        .lines()
        .filter_map(|l| l.split('/').nth(5))
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

/// The file system block numbers (4 KiB blocks, as [`ext4_image`] makes them) holding the
/// data of file `path` in the ext4 image `image`, in file order, from `debugfs -R 'blocks
/// PATH'`.
pub fn ext4_blocks(image: &Path, path: &str) -> Vec<u64> {
    let text = String::from_utf8(debugfs(image, &format!("blocks {path}"))).unwrap();
    text.split_whitespace()
        .map(|n| {
            n.parse()
                .unwrap_or_else(|e| panic!("debugfs blocks {path}: {n:?}: {e}"))
        })
        .collect()
}

/// Runs the debugfs request `request` on `image` read-only; returns its stdout, panicking
/// when stderr holds more than the version banner.
fn debugfs(image: &Path, request: &str) -> Vec<u8> {
    let out = run_ok(
        Command::new(sbin_tool("debugfs"))
            .arg("-R")
            .arg(request)
            .arg(image),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
        .collect();
    assert!(
        complaints.is_empty(),
        "debugfs -R '{request}' {}: {}",
        image.display(),
        complaints.join("; ")
    );
    out.stdout
}

/// Like [`tool`], but also looks in `/usr/sbin` and `/sbin`, which a non-root `PATH` may
/// lack (`mkfs.ext4`).
fn sbin_tool(name: &str) -> PathBuf {
    let in_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()));
    if !in_path {
        for dir in ["/usr/sbin", "/sbin"] {
            let p = Path::new(dir).join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    tool(name)
}

/// `qemu-system-x86_64` acceleration arguments: TCG unless `OVAFS_GUEST_ACCEL=kvm`.
fn accel_args() -> Vec<&'static str> {
    match std::env::var("OVAFS_GUEST_ACCEL").as_deref() {
        Ok("kvm") => vec!["-accel", "kvm", "-cpu", "host"],
        _ => vec!["-accel", "tcg"],
    }
}

/// The script's output between the markers and its exit status, when both are there.
fn framed(console: &str) -> (Option<String>, Option<i32>) {
    let Some(begin) = console.find(BEGIN).map(|i| i + BEGIN.len()) else {
        return (None, None);
    };
    let Some(end) = console[begin..].rfind(END).map(|i| begin + i) else {
        return (None, None);
    };
    let rc = console[end + END.len()..]
        .split("@@")
        .next()
        .and_then(|n| n.parse().ok());
    (Some(console[begin..end].to_string()), rc)
}

/// The cache folder: `$OVAFS_GUEST_CACHE`, else `CARGO_TARGET_TMPDIR/ovafs-guest`.
fn cache_root() -> PathBuf {
    std::env::var_os("OVAFS_GUEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("ovafs-guest"))
}

/// A Debian binary package at one version.
#[derive(Debug, Clone)]
struct Package {
    name: String,
    version: String,
}

impl Package {
    /// The candidate version of `name` in the local apt lists (no network).
    fn candidate(name: &str) -> Package {
        let fields = apt_show(name);
        Package {
            name: name.into(),
            version: field(&fields, "Version", name),
        }
    }

    /// The `.deb`, from `debs/` or downloaded into it with `apt-get download`.
    fn deb(&self, debs: &Path) -> PathBuf {
        let file = debs.join(format!(
            "{}_{}.deb",
            self.name,
            self.version.replace(':', "%3a")
        ));
        if file.is_file() {
            return file;
        }
        fs::create_dir_all(debs).unwrap();
        let work = tempfile::Builder::new()
            .prefix("download-")
            .tempdir_in(debs)
            .unwrap();
        let mut cmd = Command::new(tool("apt-get"));
        cmd.current_dir(work.path()).args(["download", "-qq"]);
        if nix::unistd::getuid().is_root() {
            // apt would otherwise warn that its unprivileged user cannot write here.
            cmd.args(["-o", "APT::Sandbox::User=root"]);
        }
        let out = cmd
            .arg(format!("{}={}", self.name, self.version))
            .output()
            .unwrap_or_else(|e| panic!("cannot run apt-get download: {e}"));
        assert!(
            out.status.success(),
            "apt-get download {}={} failed (the first build of the test guest downloads it \
             from Debian's archive; run `apt-get update` if the version is gone): {}",
            self.name,
            self.version,
            String::from_utf8_lossy(&out.stderr)
        );
        let got: Vec<PathBuf> = fs::read_dir(work.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "deb"))
            .collect();
        assert_eq!(got.len(), 1, "apt-get download left {got:?}");
        fs::rename(&got[0], &file).unwrap();
        file
    }
}

/// `apt-cache show --no-all-versions NAME` (the candidate's control fields).
fn apt_show(name: &str) -> String {
    let out = Command::new(tool("apt-cache"))
        .args(["show", "--no-all-versions", name])
        .output()
        .unwrap_or_else(|e| panic!("cannot run apt-cache: {e}"));
    assert!(
        out.status.success() && !out.stdout.is_empty(),
        "apt-cache knows no package {name}: the test guest is built from Debian's \
         {KERNEL_META} and {BUSYBOX}; run `apt-get update` (the README's test command \
         does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of control field `name` in `fields` (of package `package`).
fn field(fields: &str, name: &str, package: &str) -> String {
    let prefix = format!("{name}: ");
    fields
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("apt-cache show {package} has no {name} field"))
        .trim()
        .to_string()
}

/// The kernel image package `linux-image-cloud-amd64` depends on (its first dependency).
fn kernel_package() -> Package {
    let fields = apt_show(KERNEL_META);
    let depends = field(&fields, "Depends", KERNEL_META);
    let name = depends
        .split([',', '|', ' '])
        .next()
        .filter(|n| n.starts_with("linux-image-"))
        .unwrap_or_else(|| panic!("{KERNEL_META} depends on {depends:?}, not on a kernel"));
    Package::candidate(name)
}

/// Reuses the cached guest of these package versions and recipe, or builds it.
fn build_or_reuse() -> Guest {
    let packages = [kernel_package(), Package::candidate(BUSYBOX)];
    let versions: String = packages
        .iter()
        .map(|p| format!("{} {}\n", p.name, p.version))
        .collect();
    let key = {
        let mut h = Sha256::new();
        for part in [RECIPE, &versions, INIT, BOOT_MODULES, &MODULES.join(" ")] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        let digest = h.finalize();
        digest[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let root = cache_root();
    let dir = root.join(&key);
    let guest = Guest {
        kernel: dir.join("vmlinuz"),
        initramfs: dir.join("initramfs.cpio"),
        busybox: dir.join("busybox"),
        versions,
    };
    let complete = |g: &Guest| {
        [&g.kernel, &g.initramfs, &g.busybox, &dir.join("versions")]
            .iter()
            .all(|p| p.is_file())
    };
    if complete(&guest) {
        return guest;
    }
    if dir.exists() {
        // Something removed part of it: build it again.
        fs::remove_dir_all(&dir).unwrap();
    }
    fs::create_dir_all(&root).unwrap();
    let work = tempfile::Builder::new()
        .prefix(&format!("{key}.build-"))
        .tempdir_in(&root)
        .unwrap();
    let debs: Vec<PathBuf> = packages.iter().map(|p| p.deb(&root.join("debs"))).collect();
    let out = work.path().join("out");
    assemble(&debs[0], &debs[1], work.path(), &out);
    fs::write(out.join("versions"), &guest.versions).unwrap();
    // Another process may have finished the same build meanwhile: then keep its copy.
    if fs::rename(&out, &dir).is_err() && !complete(&guest) {
        panic!("cannot move the built guest to {}", dir.display());
    }
    guest
}

/// Unpacks the kernel and busybox packages under `work` and writes `vmlinuz`, `busybox`
/// and `initramfs.cpio` into `out`.
fn assemble(kernel_deb: &Path, busybox_deb: &Path, work: &Path, out: &Path) {
    let unpacked = work.join("unpacked");
    for deb in [kernel_deb, busybox_deb] {
        run_ok(
            Command::new(tool("dpkg-deb"))
                .arg("-x")
                .arg(deb)
                .arg(&unpacked),
        );
    }
    let modules_root = unpacked.join("lib/modules");
    let release = only_entry(&modules_root);
    let busybox = unpacked.join("bin/busybox");
    fs::create_dir_all(out).unwrap();
    fs::copy(
        unpacked.join(format!("boot/vmlinuz-{release}")),
        out.join("vmlinuz"),
    )
    .unwrap();
    fs::copy(&busybox, out.join("busybox")).unwrap();

    // busybox's depmod, run on the host, gives the dependencies of every module.
    run_ok(
        Command::new(&busybox)
            .arg("depmod")
            .arg("-b")
            .arg(&unpacked)
            .arg(&release),
    );
    let deps = fs::read_to_string(modules_root.join(&release).join("modules.dep")).unwrap();
    let wanted = module_closure(&deps, MODULES);

    let stage = work.join("initramfs");
    for d in ["bin", "dev", "proc", "sys", "root", "tmp"] {
        fs::create_dir_all(stage.join(d)).unwrap();
    }
    fs::copy(&busybox, stage.join("bin/busybox")).unwrap();
    let init = INIT.replace("@BOOT_MODULES@", BOOT_MODULES);
    fs::write(stage.join("init"), init).unwrap();
    set_mode(&stage.join("init"), 0o755);
    let staged_modules = stage.join("lib/modules").join(&release);
    for rel in &wanted {
        let to = staged_modules.join(rel);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(modules_root.join(&release).join(rel), &to).unwrap();
    }
    // The guest's modprobe reads the modules.dep of just the modules it has.
    run_ok(
        Command::new(&busybox)
            .arg("depmod")
            .arg("-b")
            .arg(&stage)
            .arg(&release),
    );
    fs::write(out.join("initramfs.cpio"), cpio_of(&stage)).unwrap();
}

/// The module files (paths relative to the release's module folder) of `names` and of
/// everything they depend on, per `modules.dep` (`path: dep dep ...` lines listing each
/// module's whole dependency closure).
fn module_closure(modules_dep: &str, names: &[&str]) -> Vec<String> {
    let mut wanted = Vec::new();
    for name in names {
        let file = format!("{name}.ko");
        let line = modules_dep
            .lines()
            .find(|l| {
                l.split(':')
                    .next()
                    .is_some_and(|p| p.rsplit('/').next() == Some(&file))
            })
            .unwrap_or_else(|| panic!("the kernel package has no module {name}"));
        let (path, deps) = line.split_once(':').unwrap();
        for m in std::iter::once(path).chain(deps.split_whitespace()) {
            if !wanted.iter().any(|w| w == m) {
                wanted.push(m.to_string());
            }
        }
    }
    wanted
}

/// The one entry of folder `dir` (the kernel release under `lib/modules`).
fn only_entry(dir: &Path) -> String {
    let names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{} holds {names:?}", dir.display());
    names[0].clone()
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A newc cpio archive of everything under `dir` (names relative to it, parents first,
/// owned by root), made by GNU cpio.
fn cpio_of(dir: &Path) -> Vec<u8> {
    let mut names = Vec::new();
    list_tree(dir, Path::new(""), &mut names);
    let mut list = names.join("\n");
    list.push('\n');
    let mut child = Command::new(tool("cpio"))
        .args(["-o", "-H", "newc", "-R", "0:0", "--quiet"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run cpio: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(list.as_bytes()).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "cpio failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Appends the paths under `root/rel`, sorted, each folder before its contents.
fn list_tree(root: &Path, rel: &Path, names: &mut Vec<String>) {
    let mut entries: Vec<_> = fs::read_dir(root.join(rel))
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = rel.join(e.file_name());
        names.push(path_str(&p).to_string());
        if e.file_type().unwrap().is_dir() {
            list_tree(root, &p, names);
        }
    }
}
