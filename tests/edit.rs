//! Editing settings through real mounts, with real editors, judged by independent tools.
//!
//! Contents:
//! - shell_redirect_saves_and_refuses_bad_values: `echo 4 > cpus`, `echo banana > cpus`
//!   (the shell prints the error; the old value stays; the OVA is not touched).
//! - every_editor_saves: sed -i, vim (ex mode), ed, nano (driven through a pty), cp over a
//!   setting; a plain `cat` shows each new value; no editor file reaches the OVA.
//! - edited_ova_is_valid_for_every_tool: after `ovafs umount`, GNU tar extracts it, the
//!   manifest verifies with sha256sum, qemu-img reads the disk, COT reports the new CPU count,
//!   memory and property value, and the descriptor diff is only the edited values.
//! - networks_are_created_before_use, descriptor_replacement_is_checked,
//!   read_only_sources_and_ro_mounts, unedited_corpus_ovas_stay_byte_identical,
//!   kill_9_during_edits_never_loses_an_acknowledged_edit.
//! - inode_numbers_stay_across_edits_and_listings_agree_with_stat: numbers from the node
//!   tree's inode table, judged by `stat` and `ls -i`.
//! - fallocate_reaches_the_node: util-linux `fallocate` on an editor's file and a setting.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

const STREAM: &str = ovafs::sample::VMDK_STREAM_URI;

/// A writable sample OVA (2 CPUs, 1024 MiB, a `hostname` property) in `dir`; returns its
/// path and the raw image of its disk.
fn sample_ova(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let raw = dir.join(format!("{name}.img"));
    let vmdk = dir.join(format!("{name}-disk1.vmdk"));
    scattered_raw(&raw, 4 << 20, 3, 42);
    to_stream_vmdk(&raw, &vmdk);
    let ova = OvaBuilder::new(&dir.join(format!("{name}-pkg")), name)
        .disk(&vmdk, 4 << 20, STREAM)
        .build();
    (ova, raw)
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

#[test]
fn shell_redirect_saves_and_refuses_bad_values() {
    let tmp = tempdir();
    let (ova, _) = sample_ova(tmp.path(), "shell");
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    let cpus = m.path("vm/cpus");
    assert_eq!(read(&cpus), "2\n");
    let out = sh(&format!("echo 4 > '{}'", cpus.display()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read(&cpus), "4\n");
    let before = fs::read(&ova).unwrap();
    for bad in ["banana", "0", "-3", ""] {
        let out = sh(&format!("echo '{bad}' > '{}'", cpus.display()));
        assert!(!out.status.success(), "echo {bad:?} > cpus must fail");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Invalid argument"),
            "{out:?}"
        );
        assert_eq!(read(&cpus), "4\n", "the old value stays after {bad:?}");
    }
    let out = sh(&format!("echo 0 > '{}'", m.path("vm/memory").display()));
    assert!(!out.status.success(), "0 memory is refused");
    assert_eq!(
        fs::read(&ova).unwrap(),
        before,
        "refused values write nothing"
    );
    // Memory in every spelling the issue names.
    for (text, mib) in [
        ("512", 512),
        ("512M", 512),
        ("512 MiB", 512),
        ("1G", 1024),
        ("1 GiB", 1024),
    ] {
        fs::write(m.path("vm/memory"), format!("{text}\n")).unwrap();
        assert_eq!(read(&m.path("vm/memory")), format!("{mib}\n"), "{text}");
    }
    m.umount();
}

/// Runs an editor driven by the commands `script` on its standard input; it must succeed.
fn run_with_stdin(cmd: &mut Command, script: &[u8]) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    child.stdin.take().unwrap().write_all(script).unwrap();
    assert!(child.wait().unwrap().success(), "{cmd:?}");
}

/// Runs nano on `file` in a pseudo-terminal and replaces its first line with `value`.
fn nano_replace_first_line(file: &Path, value: &str) {
    let script = r#"
import os, pty, sys, time
file, value = sys.argv[1], sys.argv[2]
pid, fd = pty.fork()
if pid == 0:
    os.environ["TERM"] = "xterm"
    os.execvp("nano", ["nano", "--ignorercfiles", file])
def send(b):
    time.sleep(0.4)
    os.write(fd, b)
def drain():
    try:
        while True:
            import select
            r, _, _ = select.select([fd], [], [], 0.2)
            if not r: return
            os.read(fd, 65536)
    except OSError:
        return
drain()
send(b"\x0b")                    # ^K cut the first line
send(value.encode() + b"\r")     # type the new value
send(b"\x0f"); send(b"\r")       # ^O write out, confirm the name
send(b"\x18")                    # ^X exit
for _ in range(50):
    drain()
    done, status = os.waitpid(pid, os.WNOHANG)
    if done: sys.exit(os.waitstatus_to_exitcode(status))
    time.sleep(0.1)
os.kill(pid, 9)
sys.exit("nano did not exit")
"#;
    tool("nano");
    let out = Command::new(tool("python3"))
        .arg("-c")
        .arg(script)
        .arg(file)
        .arg(value)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nano session failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_editor_saves() {
    let tmp = tempdir();
    let (ova, _) = sample_ova(tmp.path(), "editors");
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    let cpus = m.path("vm/cpus");
    let vm_dir = m.path("vms/editors");
    let listing = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    let files_before = listing(&vm_dir);

    run_ok(Command::new(tool("sed")).arg("-i").arg("s/2/3/").arg(&cpus));
    assert_eq!(read(&cpus), "3\n", "sed -i");

    run_with_stdin(
        Command::new(tool("vim"))
            .args(["-E", "-s", "-N", "-u", "NONE"])
            .arg(&cpus),
        b"%s/3/5/\nwq\n",
    );
    assert_eq!(read(&cpus), "5\n", "vim");

    // vim with the settings users have: swap file, backup file, write via rename.
    run_with_stdin(
        Command::new(tool("vim"))
            .args(["-E", "-s", "-N", "-u", "NONE"])
            .args(["-c", "set swapfile backup writebackup backupcopy=no"])
            .arg(&cpus),
        b"%s/5/6/\nwq\n",
    );
    assert_eq!(read(&cpus), "6\n", "vim backupcopy=no");

    run_with_stdin(
        Command::new(tool("ed")).arg("-s").arg(&cpus),
        b"1c\n7\n.\nw\nq\n",
    );
    assert_eq!(read(&cpus), "7\n", "ed");

    nano_replace_first_line(&cpus, "8");
    assert_eq!(read(&cpus), "8\n", "nano");

    let staged = tmp.path().join("value");
    fs::write(&staged, "9\n").unwrap();
    run_ok(Command::new(tool("cp")).arg(&staged).arg(&cpus));
    assert_eq!(read(&cpus), "9\n", "cp");

    // Editors' temporary files behave like files while they exist, then vanish.
    fs::write(vm_dir.join(".scratch.swp"), b"anything").unwrap();
    assert_eq!(fs::read(vm_dir.join(".scratch.swp")).unwrap(), b"anything");
    fs::remove_file(vm_dir.join(".scratch.swp")).unwrap();
    {
        let backup = "cpus~";
        let _ = fs::remove_file(vm_dir.join(backup));
    }
    assert_eq!(
        listing(&vm_dir),
        files_before,
        "no editor file is left as a setting"
    );
    m.umount();
    let names =
        String::from_utf8(run_ok(Command::new(tool("tar")).arg("-tf").arg(&ova)).stdout).unwrap();
    assert_eq!(
        names.lines().count(),
        3,
        "only the package's own members: {names}"
    );
}

/// Extracts `ova` into a new folder and returns it.
fn extract(ova: &Path, into: &Path) -> PathBuf {
    fs::create_dir_all(into).unwrap();
    tar_extract(ova, into);
    into.to_path_buf()
}

/// sha256sum verifies the manifest `mf` of the extracted package in `dir` (converted to
/// coreutils' format).
fn sha256sum_checks_manifest(dir: &Path, mf: &str) {
    let mut check = String::new();
    for line in read(&dir.join(mf)).lines() {
        let (name, hex) = line
            .strip_prefix("SHA256(")
            .and_then(|l| l.split_once(")= "))
            .unwrap();
        check += &format!("{hex}  {name}\n");
    }
    fs::write(dir.join("check.sha256"), check).unwrap();
    run_ok(
        Command::new(tool("sha256sum"))
            .arg("-c")
            .arg("check.sha256")
            .current_dir(dir),
    );
}

#[test]
fn edited_ova_is_valid_for_every_tool() {
    let tmp = tempdir();
    let (ova, raw) = sample_ova(tmp.path(), "judged");
    let original = extract(&ova, &tmp.path().join("before"));
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    fs::write(m.path("vm/cpus"), "6\n").unwrap();
    fs::write(m.path("vm/memory"), "3G\n").unwrap();
    fs::write(m.path("vm/properties/hostname"), "edited-host\n").unwrap();
    assert_eq!(read(&m.path("vm/properties/hostname")), "edited-host\n");
    // The manifest always reads true, while mounted too.
    let mf = read(&m.path("judged.mf"));
    let ovf_sum = ovafs::sample::sha256_file(&m.path("judged.ovf")).unwrap();
    assert!(
        mf.contains(&format!("SHA256(judged.ovf)= {ovf_sum}")),
        "{mf}"
    );
    m.umount();

    let after = extract(&ova, &tmp.path().join("after"));
    sha256sum_checks_manifest(&after, "judged.mf");
    // The disk is untouched and qemu-img reads it.
    assert_same_bytes(
        &after.join("judged-disk1.vmdk"),
        &original.join("judged-disk1.vmdk"),
    );
    let back = tmp.path().join("back.raw");
    qemu_to_raw(&after.join("judged-disk1.vmdk"), "vmdk", &back);
    assert_same_bytes(&back, &raw);
    // The descriptor diff is only the edited values.
    let diff = Command::new("diff")
        .arg(original.join("judged.ovf"))
        .arg(after.join("judged.ovf"))
        .output()
        .unwrap();
    let diff = String::from_utf8_lossy(&diff.stdout);
    let changed: Vec<&str> = diff
        .lines()
        .filter(|l| l.starts_with('<') || l.starts_with('>'))
        .collect();
    assert_eq!(
        changed.len(),
        6,
        "three values changed, nothing else:\n{diff}"
    );
    assert!(
        diff.contains("<rasd:VirtualQuantity>6</rasd:VirtualQuantity>"),
        "{diff}"
    );
    assert!(
        diff.contains("<rasd:VirtualQuantity>3072</rasd:VirtualQuantity>"),
        "{diff}"
    );
    assert!(diff.contains("ovf:value=\"edited-host\""), "{diff}");
    // COT, an independent OVF reader, sees the new values.
    let cot = Command::new(tool("cot"))
        .args(["info", "--verbose"])
        .arg(&ova)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&cot.stdout);
    assert!(
        cot.status.success(),
        "cot info failed: {}",
        String::from_utf8_lossy(&cot.stderr)
    );
    let profile = text
        .lines()
        .find(|l| l.contains("(default)"))
        .unwrap_or_else(|| panic!("{text}"));
    let fields: Vec<&str> = profile.split_whitespace().collect();
    assert!(fields.contains(&"6"), "COT CPUs: {profile}");
    assert!(profile.contains("3 GiB"), "COT memory: {profile}");
    assert!(text.contains("edited-host"), "COT properties:\n{text}");
}

#[test]
fn networks_are_created_before_use() {
    let tmp = tempdir();
    let (ova, _) = sample_ova(tmp.path(), "nets");
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    let nic = fs::read_dir(m.path("vm/nics"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let net = nic.join("network");
    assert_eq!(read(&net), "VM Network\n");
    assert!(
        fs::write(&net, "Backend\n").is_err(),
        "an unknown network is refused"
    );
    fs::create_dir(m.path("networks/Backend")).unwrap();
    fs::write(&net, "Backend\n").unwrap();
    assert_eq!(read(&net), "Backend\n");
    assert!(
        fs::remove_dir(m.path("networks/Backend")).is_err(),
        "a network in use stays"
    );
    fs::remove_dir(m.path("networks/VM Network")).unwrap();
    m.umount();
    let cot = run_ok(Command::new(tool("cot")).arg("info").arg(&ova));
    let text = String::from_utf8_lossy(&cot.stdout);
    assert!(text.contains("Backend"), "{text}");
    assert!(!text.contains("VM Network"), "{text}");
}

#[test]
fn descriptor_replacement_is_checked() {
    let tmp = tempdir();
    let (ova, _) = sample_ova(tmp.path(), "whole");
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    let ovf = m.path("whole.ovf");
    let text = read(&ovf);
    // Not XML: refused, nothing changes.
    assert!(fs::write(&ovf, "not xml at all").is_err());
    assert_eq!(read(&ovf), text);
    // References a file the package does not hold: refused.
    let missing = text.replace("whole-disk1.vmdk", "nowhere.vmdk");
    assert!(fs::write(&ovf, &missing).is_err());
    assert_eq!(read(&ovf), text);
    // A valid edit through sed -i on the descriptor itself.
    run_ok(
        Command::new(tool("sed"))
            .arg("-i")
            .arg("s/>2 virtual CPU(s)</>two CPUs</")
            .arg(&ovf),
    );
    assert!(read(&ovf).contains(">two CPUs<"));
    m.umount();
    let after = extract(&ova, &tmp.path().join("after"));
    assert!(read(&after.join("whole.ovf")).contains(">two CPUs<"));
}

#[test]
fn read_only_sources_and_ro_mounts() {
    let tmp = tempdir();
    let (ova, _) = sample_ova(tmp.path(), "ro");
    let before = fs::read(&ova).unwrap();
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &["ro"]);
    assert_eq!(
        read(&m.path("vm/cpus")),
        "2\n",
        "settings read on a read-only mount"
    );
    let err = fs::write(m.path("vm/cpus"), "4\n").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    m.umount();
    assert_eq!(fs::read(&ova).unwrap(), before);

    // A source the daemon cannot write: read-only, and `ovafs mount` says so.
    let ro_dir = tmp.path().join("ro-mount-of-dir");
    fs::create_dir(&ro_dir).unwrap();
    let bind = tmp.path().join("readonly-view");
    fs::create_dir(&bind).unwrap();
    run_ok(
        Command::new("mount")
            .arg("--bind")
            .arg(ova.parent().unwrap())
            .arg(&bind),
    );
    run_ok(
        Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(&bind),
    );
    let ro_ova = bind.join(ova.file_name().unwrap());
    let out = Command::new(ovafs())
        .arg("mount")
        .arg(&ro_ova)
        .arg(&ro_dir)
        .output()
        .unwrap();
    let m = Mount {
        dir: ro_dir.clone(),
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("read-only"),
        "says so: {out:?}"
    );
    assert_eq!(
        fs::write(m.path("vm/cpus"), "4\n")
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EROFS)
    );
    m.umount();
    run_ok(Command::new("umount").arg(&bind));
}

#[test]
fn unedited_corpus_ovas_stay_byte_identical() {
    let Some(corpus) = corpus_dir("corpus round-trip test") else {
        return;
    };
    let tmp = tempdir();
    let mut checked = 0;
    for rel in [
        "virtualbox/tdAppliance1-t2-ovftool-4.1.0.ova",
        "virtualbox/tdAppliance1-t4.ova",
        "virtualbox/tdAppliance1-t7-bad-instance.ova",
        "virtualbox/tdAppliance1-t1.ova",
    ] {
        let src = corpus.join(rel);
        let copy = tmp.path().join(src.file_name().unwrap());
        fs::copy(&src, &copy).unwrap();
        let m = Mount::ok(&copy, &tmp.path().join(format!("mnt{checked}")), &[]);
        // Read every settings file (as a curious user would), change nothing.
        for entry in walk(&m.path("vms")) {
            let _ = fs::read(&entry);
        }
        m.umount();
        assert_eq!(
            fs::read(&copy).unwrap(),
            fs::read(&src).unwrap(),
            "{rel} changed without an edit"
        );
        checked += 1;
    }
    assert_eq!(checked, 4);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn kill_9_during_edits_never_loses_an_acknowledged_edit() {
    let tmp = tempdir();
    let (ova, _) = sample_ova(tmp.path(), "crash");
    let mnt = tmp.path().join("mnt");
    let mut acknowledged = 2u32;
    for round in 0..12u32 {
        let m = Mount::ok(&ova, &mnt, &[]);
        let pid = daemon_pid(&ova);
        // Edits in a loop; the daemon is killed after a varying delay.
        let cpus = m.path("vm/cpus");
        let writer = std::thread::spawn(move || {
            let mut last_ok = None;
            // Values grow across rounds too, so "stored >= acknowledged" is the whole rule.
            for v in 1..300u32 {
                let value = round * 300 + v + 2;
                if write_and_close(&cpus, format!("{value}\n").as_bytes()).is_ok() {
                    last_ok = Some(value);
                } else {
                    break;
                }
            }
            last_ok
        });
        std::thread::sleep(std::time::Duration::from_millis(5 + u64::from(round) * 7));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        if let Some(v) = writer.join().unwrap() {
            acknowledged = v;
        }
        // `ovafs umount` cleans the dead mount and completes any journal.
        let out = Command::new(ovafs())
            .arg("umount")
            .arg(&mnt)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "umount after kill: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        drop(m);
        // The OVA is intact, consistent, and holds the last acknowledged value (or a later
        // one whose write was durable but not yet acknowledged).
        let x = extract(&ova, &tmp.path().join(format!("x{round}")));
        let desc = read(&x.join("crash.ovf"));
        let pkg = ovafs::package::open(&ova).expect("the OVA opens after a kill");
        let cpus = pkg.descriptor.systems[0]
            .cpus
            .as_ref()
            .map(|c| **c)
            .unwrap();
        assert!(
            cpus as u32 >= acknowledged,
            "round {round}: acknowledged {acknowledged}, stored {cpus}"
        );
        let sum = ovafs::sample::sha256_file(&x.join("crash.ovf")).unwrap();
        assert!(
            read(&x.join("crash.mf")).contains(&sum),
            "round {round}: manifest matches the descriptor"
        );
        assert!(desc.contains("<rasd:VirtualQuantity>"));
        let leftovers: Vec<_> = fs::read_dir(ova.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().into_string().unwrap())
            .filter(|n| n.contains("ovafs-journal") || n.contains("ovafs-tmp"))
            .collect();
        assert!(leftovers.is_empty(), "round {round}: {leftovers:?}");
        acknowledged = cpus as u32;
    }
}

/// Writes `data` to `path` and closes it, reporting close()'s own result (std ignores it):
/// an edit is acknowledged only when close() succeeds.
fn write_and_close(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::fd::IntoRawFd;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?;
    f.write_all(data)?;
    nix::unistd::close(f.into_raw_fd()).map_err(std::io::Error::from)
}

/// What VirtualBox imports from a descriptor's machine settings (it prefers them to the
/// hardware items), read by Python's XML parser: (CPU count, RAMSize).
fn virtualbox_cpus_and_memory(ovf: &Path) -> (String, String) {
    let script = r#"
import sys, xml.etree.ElementTree as ET
OVF = "{http://schemas.dmtf.org/ovf/envelope/1}"
VBOX = "{http://www.virtualbox.org/ovf/machine}"
hw = ET.parse(sys.argv[1]).getroot().find(f"{OVF}VirtualSystem/{VBOX}Machine/{OVF}Hardware")
cpu = hw.find(f"{OVF}CPU")
print(cpu.get("count", "1") if cpu is not None else "1", hw.find(f"{OVF}Memory").get("RAMSize"))
"#;
    let out = run_ok(Command::new(tool("python3")).arg("-c").arg(script).arg(ovf));
    let out = String::from_utf8_lossy(&out.stdout).to_string();
    let (cpus, mem) = out.trim().split_once(' ').unwrap();
    (cpus.to_string(), mem.to_string())
}

#[test]
fn virtualbox_machine_settings_follow_edits() {
    let tmp = tempdir();
    let raw = tmp.path().join("vb.img");
    let vmdk = tmp.path().join("vb-disk1.vmdk");
    scattered_raw(&raw, 4 << 20, 2, 7);
    to_stream_vmdk(&raw, &vmdk);
    // The machine settings as VirtualBox exports them, in step with the sample's 2 CPUs and
    // 1024 MiB.
    let machine = r#"    <vbox:Machine xmlns:vbox="http://www.virtualbox.org/ovf/machine" ovf:required="false" version="1.16-linux" uuid="{0b8ae1a4-50c9-4e8e-8f34-5b3c4c3c2f10}" name="vb" OSType="Ubuntu_64">
      <ovf:Info>Complete VirtualBox machine configuration in VirtualBox format</ovf:Info>
      <Hardware>
        <CPU count="2" hotplug="false">
          <PAE enabled="true"/>
        </CPU>
        <Memory RAMSize="1024" PageFusion="false"/>
        <Chipset type="PIIX3"/>
      </Hardware>
    </vbox:Machine>
  </VirtualSystem>"#;
    let ova = OvaBuilder::new(&tmp.path().join("pkg"), "vb")
        .disk(&vmdk, 4 << 20, STREAM)
        .edit_descriptor("  </VirtualSystem>", machine)
        .build();
    let before = extract(&ova, &tmp.path().join("before"));
    assert_eq!(
        virtualbox_cpus_and_memory(&before.join("vb.ovf")),
        ("2".into(), "1024".into())
    );
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    let out = sh(&format!(
        "echo 4 > '{}' && echo 3G > '{}'",
        m.path("vm/cpus").display(),
        m.path("vm/memory").display()
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    m.umount();
    let after = extract(&ova, &tmp.path().join("after"));
    sha256sum_checks_manifest(&after, "vb.mf");
    assert_eq!(
        virtualbox_cpus_and_memory(&after.join("vb.ovf")),
        ("4".into(), "3072".into()),
        "VirtualBox would import the old values"
    );
}

/// Inode numbers in the node tree: a setting, a member and a flat disk keep theirs across
/// a commit; `ls -i` (the listing's numbers) agrees with `stat` (the lookup's); a folder the
/// settings tree does not answer for refuses `mkdir` without touching the OVA.
#[test]
fn inode_numbers_stay_across_edits_and_listings_agree_with_stat() {
    let tmp = tempdir();
    let (ova, _) = sample_ova(tmp.path(), "inodes");
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    let stat_ino = |rel: &str| -> String {
        let out = run_ok(Command::new("stat").arg("-c").arg("%i").arg(m.path(rel)));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let disk = fs::read_dir(m.path("disks"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .find(|n| n.to_string_lossy().ends_with(".raw"))
        .unwrap();
    let disk = format!("disks/{}", disk.to_string_lossy());
    let watched = ["vm/cpus", "vm/memory", disk.as_str(), "inodes.ovf"];
    let before: Vec<String> = watched.iter().map(|p| stat_ino(p)).collect();
    let out = sh(&format!("echo 3 > '{}'", m.path("vm/cpus").display()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read(&m.path("vm/cpus")), "3\n");
    let after: Vec<String> = watched.iter().map(|p| stat_ino(p)).collect();
    assert_eq!(before, after, "numbers of {watched:?} across a commit");
    // `ls -i` lists the numbers readdir gives; each must be the one stat gives.
    let out = run_ok(Command::new("ls").arg("-i1").arg(m.path("vm")));
    let listing = String::from_utf8_lossy(&out.stdout);
    let mut compared = 0;
    for line in listing.lines() {
        let (ino, name) = line.trim().split_once(' ').expect("ls -i line");
        assert_eq!(ino, stat_ino(&format!("vm/{name}")), "vm/{name}");
        compared += 1;
    }
    assert!(compared >= 3, "{listing}");
    let bytes = fs::read(&ova).unwrap();
    let err = fs::create_dir(m.path("disks/new")).expect_err("mkdir in disks/");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    assert_eq!(
        fs::read(&ova).unwrap(),
        bytes,
        "a refused mkdir writes nothing"
    );
}

/// `fallocate(1)` through the mount reaches the file's node: an editor's temporary file
/// punches holes and zeroes ranges in memory; modes no file offers are refused, and a
/// setting (edited whole, not by ranges) refuses it too, with nothing committed.
#[test]
fn fallocate_reaches_the_node() {
    let tmp = tempdir();
    let (ova, _) = sample_ova(tmp.path(), "falloc");
    let m = Mount::ok(&ova, &tmp.path().join("mnt"), &[]);
    let scratch = m.path("vm/.scratch");
    fs::write(&scratch, b"abcdef").unwrap();
    let fallocate = |args: &[&str], file: &Path| {
        Command::new(tool("fallocate"))
            .args(args)
            .arg(file)
            .output()
            .unwrap()
    };
    let out = fallocate(&["-p", "-o", "1", "-l", "2"], &scratch);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(&scratch).unwrap(), b"a\0\0def");
    let out = fallocate(&["-z", "-o", "4", "-l", "4"], &scratch);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read(&scratch).unwrap(),
        b"a\0\0d\0\0\0\0",
        "zeroed and grown"
    );
    let out = fallocate(&["-l", "16"], &scratch);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::metadata(&scratch).unwrap().len(),
        16,
        "reserved and grown"
    );
    let out = fallocate(&["-c", "-o", "0", "-l", "4096"], &scratch);
    assert!(!out.status.success(), "collapsing a range is not offered");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not supported"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = fs::read(&ova).unwrap();
    let out = fallocate(&["-z", "-o", "0", "-l", "1"], &m.path("vm/cpus"));
    assert!(!out.status.success(), "a setting is not written by ranges");
    assert_eq!(read(&m.path("vm/cpus")), "2\n");
    assert_eq!(fs::read(&ova).unwrap(), before, "nothing committed");
}
