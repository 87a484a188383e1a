//! `ovafs umount`: unmount, then wait until the daemon has finished.
//!
//! Unmounting uses `fusermount3 -u` (what users know, and what works without root), falling
//! back to umount(2) as root. Waiting takes the lock the daemon holds on the folder under the
//! mount point (see `mount.rs`): it is released only when the daemon process has exited.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};

use super::EXIT_OK;
use super::mountinfo;
use crate::error::{Error, Result};

/// Runs `ovafs umount MOUNTPOINT`.
pub fn run(mountpoint: &Path) -> Result<i32> {
    crate::logging::init_stderr(false);
    let path = mountinfo::canonical_mount_path(mountpoint);
    let entry = mountinfo::find(&path)
        .ok_or_else(|| Error::usage(format!("{} is not mounted", mountpoint.display())))?;
    if !entry.is_fuse() {
        return Err(Error::usage(format!(
            "{} is a {} mount, not an ovafs one",
            mountpoint.display(),
            entry.fs_type
        )));
    }
    unmount(&path)?;
    wait_for_daemon(&path);
    Ok(EXIT_OK)
}

/// Detaches the mount: `fusermount3 -u`, else umount(2).
pub fn unmount(path: &Path) -> Result<()> {
    let fusermount = Command::new("fusermount3")
        .arg("-u")
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
    match nix::mount::umount(path) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => Err(Error::usage(format!(
            "{} is busy: a program still uses files in it",
            path.display()
        ))),
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
