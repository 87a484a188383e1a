//! A panic while answering one request fails that request and nothing else, through a real
//! FUSE mount.
//!
//! The panics are injected with `OVAFS_TEST_PANIC_ON` (honoured only by builds with debug
//! assertions, like the binary the test suite runs; see `src/fs/contain.rs`): the first two
//! reads of one flat disk panic on the read worker, and the first lookup of the descriptor
//! panics on the FUSE session thread. The mount runs with a single read worker, so a worker
//! killed by the panic would leave no one to answer any later read.
//!
//! Checked: each panicking request gets EIO; the other disk reads byte-exact afterwards; the
//! same disk and the same name work again once the injected panics are used up; the daemon
//! stays up; the log holds the first panic once and the count of all three at unmount.

mod common;

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

/// Runs `f` on another thread and fails the test if it takes more than a minute: a read
/// that nobody answers (a dead worker) must fail the test, not hang it.
fn within_a_minute<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{what}: no answer within 60 s (a worker or the session died?)"))
}

/// The foreground daemon; killed when dropped (after a failure) so that nothing blocked on
/// the mount outlives the test.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn stream_disk(dir: &Path, name: &str, seed: u64) -> (PathBuf, PathBuf) {
    qemu_stream_vmdk(dir, name, 4 << 20, 6, seed)
}

fn errno_of_read(path: &Path) -> Option<i32> {
    let f = File::open(path).unwrap();
    let mut buf = vec![0u8; 4096];
    f.read_at(&mut buf, 0).err().and_then(|e| e.raw_os_error())
}

#[test]
fn a_panicking_request_gets_eio_and_the_mount_goes_on() {
    let tmp = tempdir();
    let (raw_a, vmdk_a) = stream_disk(tmp.path(), "a", 1);
    let (raw_b, vmdk_b) = stream_disk(tmp.path(), "b", 2);
    let ova = OvaBuilder::new(&tmp.path().join("pkg"), "pan")
        .disk(&vmdk_a, 4 << 20, ovafs::sample::VMDK_STREAM_URI)
        .disk(&vmdk_b, 4 << 20, ovafs::sample::VMDK_STREAM_URI)
        .build();
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let log_path = tmp.path().join("daemon.log");
    let daemon = Command::new(ovafs())
        .args(["mount", "-f", "-o", "threads=1"])
        .arg(&ova)
        .arg(&mnt)
        .env("OVAFS_TEST_PANIC_ON", "read*2:disks/a.raw,lookup:pan.ovf")
        .env("RUST_BACKTRACE", "0")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stderr(File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let guard = Mount { dir: mnt.clone() };
    // Declared after the guard: dropped first, so a failed test kills, then unmounts.
    let mut daemon = Daemon(daemon);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !is_mounted(&mnt) {
        assert!(daemon.0.try_wait().unwrap().is_none(), "the daemon exited");
        assert!(Instant::now() < deadline, "the mount did not appear");
        std::thread::sleep(Duration::from_millis(20));
    }

    // The worker panics: EIO.
    let a = guard.path("disks/a.raw");
    let first = within_a_minute("first read of a.raw", {
        let a = a.clone();
        move || errno_of_read(&a)
    });
    assert_eq!(first, Some(libc::EIO));

    // The session thread panics in lookup: EIO; the same name is found afterwards.
    let descriptor = guard.path("pan.ovf");
    let err = fs::metadata(&descriptor).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(fs::metadata(&descriptor).unwrap().len() > 0);

    // The single worker is still there: the other disk reads byte-exact.
    within_a_minute("read of b.raw", {
        let (b, raw_b) = (guard.path("disks/b.raw"), raw_b.clone());
        move || assert_same_bytes(&b, &raw_b)
    });

    // The same disk again: the second injected panic, then it reads byte-exact.
    let mut errors = 0;
    while within_a_minute("read of a.raw", {
        let a = a.clone();
        move || errno_of_read(&a)
    }) == Some(libc::EIO)
    {
        errors += 1;
        assert!(errors < 5, "a.raw keeps failing");
    }
    within_a_minute("full read of a.raw", move || assert_same_bytes(&a, &raw_a));

    assert!(daemon.0.try_wait().unwrap().is_none(), "the daemon died");
    assert!(is_mounted(&mnt));
    // The status file tells users who never see the log.
    let report = fs::read_to_string(guard.path(".ovafs/status")).unwrap();
    assert!(
        report.contains("internal errors: 3 request(s) failed with EIO after a panic"),
        "{report}"
    );
    guard.umount();
    let status = daemon.0.wait().unwrap();
    assert!(status.success(), "{status}");

    let log = fs::read_to_string(&log_path).unwrap();
    let logged = log.matches("injected panic").count();
    assert_eq!(logged, 1, "the first panic is logged, and only it:\n{log}");
    assert!(
        log.contains("internal error: read panicked at"),
        "the first panic names its request:\n{log}"
    );
    assert!(
        log.contains("3 panics were caught while mounted"),
        "the count is logged at unmount:\n{log}"
    );
}
