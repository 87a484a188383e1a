//! The mount record: what `ovafs umount` believes about a mount, written by the daemon.
//!
//! `ovafs umount` completes an interrupted commit after the daemon has exited, so it must
//! know which package the mount served. The mount table cannot say: its source field is
//! whatever `-o fsname=` made it. So the daemon writes a small record (the mount point, the
//! real path of the package, its pid, the mount's device number, whether it could write)
//! into a private runtime
//! folder, `/run/ovafs` for root and `$XDG_RUNTIME_DIR/ovafs` otherwise (created 0700; used
//! only if it is a real directory owned by the user with no group/other access), one file
//! per mount point, named by the SHA-256 of the mount point's path. The daemon removes it when
//! it exits cleanly; `ovafs umount` removes it after use.
//!
//! `ovafs umount` trusts a record only if it is a regular file of one link owned by the user
//! running it, not writable by others, in that folder, well-formed, naming this mount point,
//! and naming the device the mount table shows for it (so a record left by a killed daemon
//! is not taken for a later mount there). Otherwise it unmounts but skips recovery, with a
//! notice.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Largest record read: a few paths.
const MAX_RECORD_BYTES: u64 = 64 << 10;

/// What the daemon records about its mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The mount point, as `mountinfo::canonical_mount_path` gives it.
    pub mount_point: PathBuf,
    /// The real path of the package file (the `.ova`, or the `.ovf`).
    pub source: PathBuf,
    /// The daemon's pid.
    pub pid: u32,
    /// `major:minor` of the mount, from the mount table.
    pub device: String,
    /// Whether the mount could write the package (a read-only mount never writes, so
    /// `ovafs umount` has nothing to complete for it and does not try).
    pub writable: bool,
    /// Whether the daemon commits the disks' changes when the mount ends (`-o
    /// commit=umount`); otherwise `ovafs umount` says where uncommitted changes stay.
    #[serde(default)]
    pub commit_at_umount: bool,
}

/// The private runtime folder for the user running ovafs, created if needed; why not, when
/// there is none that can be trusted.
fn runtime_dir() -> Result<PathBuf, String> {
    let me = nix::unistd::geteuid();
    let dir = if me.is_root() {
        PathBuf::from("/run/ovafs")
    } else {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .ok_or("XDG_RUNTIME_DIR is not set")?;
        base.join("ovafs")
    };
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
    }
    let meta = fs::symlink_metadata(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    if meta.uid() != me.as_raw() || meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{} is not private (owner uid {}, mode {:04o})",
            dir.display(),
            meta.uid(),
            meta.mode() & 0o7777
        ));
    }
    Ok(dir)
}

/// The record's file name for a mount point.
fn file_name(mount_point: &Path) -> String {
    format!("{}.json", key_of(mount_point))
}

/// The SHA-256 of a mount point's path, in hex: the name of its files in the folder.
fn key_of(mount_point: &Path) -> String {
    let digest = Sha256::digest(mount_point.as_os_str().as_encoded_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The path of the control socket of the mount at `mount_point` (see `control.rs`), in the
/// same private folder as the records.
pub fn socket_path(mount_point: &Path) -> Result<PathBuf, String> {
    Ok(runtime_dir()?.join(format!("{}.sock", key_of(mount_point))))
}

/// The trusted record of a live mount that serves `source` (its real path), if any.
pub fn find_by_source(source: &Path) -> Option<Record> {
    let dir = runtime_dir().ok()?;
    let entries = fs::read_dir(&dir).ok()?;
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| read_file(&e.path()).ok())
        .filter(|r| r.source == source)
        .find(|r| {
            super::mountinfo::find(&r.mount_point).is_some_and(|m| m.device == r.device)
                && read(&r.mount_point).is_ok()
        })
}

/// Writes the record for this mount (atomically: a private temporary file renamed into
/// place). A failure is only logged: the mount works without it, `ovafs umount` then skips
/// recovery.
pub fn write(record: &Record) {
    if let Err(e) = try_write(record) {
        log::warn!(
            "{}: no mount record ({e}); ovafs umount will not complete interrupted commits",
            record.mount_point.display()
        );
    }
}

fn try_write(record: &Record) -> Result<(), String> {
    let dir = runtime_dir()?;
    let json = serde_json::to_vec(record).map_err(|e| e.to_string())?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".record-")
        .tempfile_in(&dir)
        .map_err(|e| format!("create a record in {}: {e}", dir.display()))?;
    tmp.write_all(&json)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| format!("write a record: {e}"))?;
    tmp.persist(dir.join(file_name(&record.mount_point)))
        .map_err(|e| format!("save the record: {}", e.error))?;
    Ok(())
}

/// Removes the record of `mount_point` if it is the one process `pid` wrote (a newer mount
/// at the same place keeps its own).
pub fn remove_own(mount_point: &Path, pid: u32) {
    if let Ok(r) = read(mount_point)
        && r.pid == pid
    {
        remove(mount_point);
    }
}

/// Removes the record of `mount_point`, whoever wrote it (only ours can be in the folder).
pub fn remove(mount_point: &Path) {
    if let Ok(dir) = runtime_dir() {
        let _ = fs::remove_file(dir.join(file_name(mount_point)));
    }
}

/// The record of `mount_point`, if there is one the caller can trust (see the module
/// comment); why not otherwise.
pub fn read(mount_point: &Path) -> Result<Record, String> {
    let dir = runtime_dir()?;
    let path = dir.join(file_name(mount_point));
    let record = read_file(&path)?;
    if record.mount_point != mount_point {
        return Err(format!("{} is for another mount point", path.display()));
    }
    Ok(record)
}

/// The record in the file `path`, if it passes the rules (see the module comment).
fn read_file(path: &Path) -> Result<Record, String> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("no mount record {}: {e}", path.display()))?;
    check_trusted(&f, path)?;
    let mut bytes = Vec::new();
    f.take(MAX_RECORD_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("read {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_RECORD_BYTES {
        return Err(format!(
            "{} is too large to be a mount record",
            path.display()
        ));
    }
    let record: Record = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not a mount record: {e}", path.display()))?;
    if !record.source.is_absolute() {
        return Err(format!("{} names no absolute source", path.display()));
    }
    Ok(record)
}

/// The rules a record must pass, checked on the open descriptor.
fn check_trusted(f: &File, path: &Path) -> Result<(), String> {
    let meta = f
        .metadata()
        .map_err(|e| format!("stat {}: {e}", path.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    let broken = if !meta.is_file() {
        Some("not a regular file".to_string())
    } else if meta.nlink() != 1 {
        Some(format!("{} hard links", meta.nlink()))
    } else if meta.uid() != me {
        Some(format!("owned by uid {}, not {me}", meta.uid()))
    } else if meta.mode() & 0o022 != 0 {
        Some(format!(
            "writable by group or others (mode {:04o})",
            meta.mode() & 0o7777
        ))
    } else {
        None
    };
    match broken {
        Some(rule) => Err(format!("{} is not trusted: {rule}", path.display())),
        None => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_are_fixed_length_and_distinct() {
        let a = file_name(Path::new("/mnt/a"));
        let b = file_name(Path::new("/mnt/b"));
        assert_ne!(a, b);
        assert_eq!(a.len(), 64 + 5);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'.'));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r: Result<Record, _> = serde_json::from_str(
            r#"{"mount_point":"/m","source":"/s","pid":1,"device":"0:1","writable":true,"extra":1}"#,
        );
        assert!(r.is_err());
    }
}
