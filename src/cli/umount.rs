//! `ovafs umount`: unmount, then wait until the daemon has finished, then complete any
//! commit the daemon left half-done.
//!
//! Only an ovafs mount is touched: the mount table must show `fuse.ovafs` (ovafs always passes
//! `subtype=ovafs`; plain `fuse` and other FUSE file systems are refused). The package to
//! recover is taken from the daemon's mount record ([`super::record`]), never from the mount
//! table's source field, which `-o fsname=` sets to anything; with no trusted record,
//! recovery is skipped with a notice (the next writable mount of the package completes it).
//!
//! Unmounting uses `fusermount3 -u` (what users know, and what works without root), falling
//! back to umount(2) as root. Waiting takes the lock the daemon holds on the folder under the
//! mount point (see `mount.rs`): it is released only when the daemon process has exited.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::EXIT_OK;
use super::mountinfo;
use super::record;
use crate::error::{Error, Result};

/// Runs `ovafs umount MOUNTPOINT`.
pub fn run(mountpoint: &Path) -> Result<i32> {
    crate::logging::init_stderr(false);
    let path = mountinfo::canonical_mount_path(mountpoint);
    let entry = mountinfo::find(&path)
        .ok_or_else(|| Error::usage(format!("{} is not mounted", mountpoint.display())))?;
    if !entry.is_ovafs() {
        return Err(Error::usage(format!(
            "{} is a {} mount, not an ovafs one",
            mountpoint.display(),
            entry.fs_type
        )));
    }
    // Read before unmounting: the daemon removes its record when it exits.
    let source = trusted_source(&path, &entry);
    let uncommitted = uncommitted_disks(&path);
    unmount_retrying_while_busy(&path)?;
    wait_for_daemon(&path);
    record::remove(&path);
    if let Some((disks, shown)) = uncommitted {
        eprintln!(
            "ovafs: uncommitted changes of {disks} stay in the overlay; 'ovafs commit {shown}' \
             writes them into the package, 'ovafs discard {shown} DISK' throws them away"
        );
    }
    // A daemon killed in the middle of a commit leaves a journal: complete it now, so that
    // the package holds every acknowledged edit when this command returns.
    match source {
        Ok(None) => log::debug!(
            "{}: a read-only mount; nothing to recover",
            mountpoint.display()
        ),
        Ok(Some(source)) if source.is_file() => {
            let report = crate::commit::recover(&source)?;
            for notice in report.notices() {
                log::warn!("{}: {notice}", source.display());
            }
        }
        Ok(Some(source)) => log::debug!("{} is gone: nothing to recover", source.display()),
        Err(why) => log::warn!(
            "{}: skipped recovery of interrupted commits ({why}); the next writable mount of the package completes them",
            mountpoint.display()
        ),
    }
    Ok(EXIT_OK)
}

/// The disks with uncommitted changes that stay in their overlays when this mount ends (a
/// mount without `-o commit=umount`), and the package to name in the advice; `None` when
/// there are none or the daemon cannot be asked.
fn uncommitted_disks(path: &Path) -> Option<(String, String)> {
    let r = record::read(path).ok()?;
    if r.commit_at_umount || !r.writable {
        return None;
    }
    let request = super::control::Request::Status;
    let reply = super::control::ask(path, &request, &mut |_, _, _| {}).ok()?;
    let super::control::Reply::Status(states) = reply else {
        return None;
    };
    let changed: Vec<String> = states
        .iter()
        .filter(|s| s.changed)
        .map(|s| format!("disks/{}", s.disk))
        .collect();
    (!changed.is_empty()).then(|| (changed.join(", "), r.source.display().to_string()))
}

/// The package the daemon of this mount served, from its record, if the record is trusted
/// and names this very mount (its device); `None` for a read-only mount (it never wrote).
fn trusted_source(path: &Path, entry: &mountinfo::MountEntry) -> Result<Option<PathBuf>, String> {
    let r = record::read(path)?;
    if r.device != entry.device {
        return Err(format!(
            "the mount record is for an earlier mount (device {}, now {})",
            r.device, entry.device
        ));
    }
    Ok(r.writable.then_some(r.source))
}

/// How long a busy mount is retried: the kernel sends RELEASE for a file asynchronously after
/// close() returns and keeps the mount busy until the daemon answers, so a script that closes
/// a file and unmounts at once briefly sees EBUSY.
const BUSY_RETRY: Duration = Duration::from_secs(2);

pub(super) fn unmount_retrying_while_busy(path: &Path) -> Result<()> {
    let deadline = Instant::now() + BUSY_RETRY;
    loop {
        match unmount(path, false) {
            Err(e) if is_busy(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            other => return other,
        }
    }
}

fn is_busy(e: &Error) -> bool {
    matches!(e.kind(), crate::error::ErrorKind::Io { source, .. } if source.raw_os_error() == Some(libc::EBUSY))
}

/// Detaches the mount: `fusermount3 -u`, else umount(2). `lazy` detaches it even while
/// files in it are open (`-z`, `MNT_DETACH`): it leaves the namespace at once and the
/// kernel ends the session when the last of them is closed.
pub fn unmount(path: &Path, lazy: bool) -> Result<()> {
    let fusermount = Command::new("fusermount3")
        .arg(if lazy { "-uz" } else { "-u" })
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    let fusermount_error = match fusermount {
        Ok(out) if out.status.success() => return Ok(()),
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
        Err(e) => format!("fusermount3: {e}"),
    };
    let flags = if lazy {
        nix::mount::MntFlags::MNT_DETACH
    } else {
        nix::mount::MntFlags::empty()
    };
    match nix::mount::umount2(path, flags) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => Err(Error::io(
            format!(
                "{} is busy: a program still uses files in it",
                path.display()
            ),
            std::io::Error::from_raw_os_error(libc::EBUSY),
        )),
        Err(e) => Err(Error::usage(format!(
            "cannot unmount {}: {fusermount_error}; umount: {e}",
            path.display()
        ))),
    }
}

/// Blocks until the daemon that served `path` has exited (no-op if it is already gone).
fn wait_for_daemon(path: &Path) {
    match File::open(path) {
        Ok(dir) => {
            if let Err(e) = dir.lock() {
                log::warn!("cannot wait for the daemon of {}: {e}", path.display());
            }
        }
        Err(e) => log::debug!("cannot open {} to wait for its daemon: {e}", path.display()),
    }
}
