//! The control socket of a mount: how `ovafs status`, `ovafs commit` and `ovafs discard`
//! reach the daemon that serves a mount.
//!
//! The daemon listens on a Unix socket in the private runtime folder of the mount records
//! (`record::socket_path`: `/run/ovafs/HASH.sock` for root). Only the daemon's own user
//! and root may use it (checked with `SO_PEERCRED` on every connection). A client sends
//! one JSON request line and reads JSON lines back: any number of progress lines, then one
//! final answer or an error. Each connection is served on a thread of its own, so a long
//! commit does not keep `status` from answering (it waits only while the disks are held).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::writable::{CommitSummary, DiskState, PackageCommit, WritableDisks};

/// Largest request line read.
const MAX_REQUEST_BYTES: u64 = 64 << 10;

/// What a client asks.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// Every disk's state.
    Status,
    /// Commit every changed disk.
    Commit,
    /// Throw one disk's changes away.
    Discard {
        /// The disk (`disk1`, `disk1.raw` or its Disk id).
        disk: String,
    },
}

/// One line of the daemon's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    /// Progress of a commit.
    Progress {
        /// The disk being encoded.
        disk: String,
        /// Grains done.
        done: u64,
        /// Grains in all.
        total: u64,
    },
    /// The answer to `status`.
    Status(Vec<DiskState>),
    /// The answer to `commit`.
    Committed(CommitSummary),
    /// The answer to `discard`: whether there were changes.
    Discarded(bool),
    /// The request failed.
    Error(String),
}

/// What the daemon serves requests with.
pub struct Served {
    /// The mount's writable disks (`None`: a read-only mount).
    pub disks: Option<Arc<WritableDisks>>,
    /// The committer the disks commit through.
    pub committer: Arc<dyn PackageCommit + Send + Sync>,
    /// The mount point (to invalidate the kernel's cache of a discarded disk).
    pub mount_point: PathBuf,
    /// Invalidates the kernel's cached pages and attributes of an inode.
    pub invalidate: Box<dyn Fn(u64) + Send + Sync>,
}

/// Listens on the control socket of `mount_point` until the process exits. A failure to
/// listen is logged: the mount works without it (`ovafs status` then says so).
pub fn listen(mount_point: &Path, served: Served) {
    let path = match super::record::socket_path(mount_point) {
        Ok(p) => p,
        Err(e) => {
            log::warn!("no control socket: {e}");
            return;
        }
    };
    // Only ours can be in the private folder: a socket left by a killed daemon.
    let _ = std::fs::remove_file(&path);
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            log::warn!("no control socket {}: {e}", path.display());
            return;
        }
    };
    let served = Arc::new(served);
    let spawned = std::thread::Builder::new()
        .name("ovafs-control".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let served = served.clone();
                let _ = std::thread::Builder::new()
                    .name("ovafs-request".into())
                    .spawn(move || serve_one(stream, &served));
            }
        });
    if let Err(e) = spawned {
        log::warn!("no control socket: {e}");
    }
}

/// Removes the control socket of `mount_point` (at the daemon's exit).
pub fn remove(mount_point: &Path) {
    if let Ok(path) = super::record::socket_path(mount_point) {
        let _ = std::fs::remove_file(path);
    }
}

fn serve_one(stream: UnixStream, served: &Served) {
    if let Err(why) = check_peer(&stream) {
        log::warn!("control socket: refused a connection ({why})");
        return;
    }
    let mut out = &stream;
    let mut line = String::new();
    let read = BufReader::new((&stream).take(MAX_REQUEST_BYTES)).read_line(&mut line);
    let reply = match read.map_err(|e| e.to_string()).and_then(|_| {
        serde_json::from_str::<Request>(&line).map_err(|e| format!("bad request: {e}"))
    }) {
        Ok(request) => answer(request, served, &mut |r| send(&mut out, r)),
        Err(e) => Reply::Error(e),
    };
    send(&mut out, &reply);
}

fn send(out: &mut &UnixStream, reply: &Reply) {
    if let Ok(mut bytes) = serde_json::to_vec(reply) {
        bytes.push(b'\n');
        // The client may have gone (Ctrl-C): the request still completes.
        let _ = out.write_all(&bytes);
    }
}

/// Only the daemon's user and root may control it.
fn check_peer(stream: &UnixStream) -> std::result::Result<(), String> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let cred = getsockopt(stream, PeerCredentials).map_err(|e| e.to_string())?;
    let me = nix::unistd::geteuid().as_raw();
    if cred.uid() == 0 || cred.uid() == me {
        Ok(())
    } else {
        Err(format!("uid {} is neither root nor {me}", cred.uid()))
    }
}

fn answer(request: Request, served: &Served, progress: &mut dyn FnMut(&Reply)) -> Reply {
    let Some(disks) = &served.disks else {
        return Reply::Error(
            "the mount is read-only: its disks take no changes (ovafs status SOURCE, without a \
             mount, shows changes left in an overlay)"
                .into(),
        );
    };
    match request {
        Request::Status => Reply::Status(disks.status()),
        Request::Commit => {
            let mut report = |p: crate::writable::CommitProgress<'_>| {
                progress(&Reply::Progress {
                    disk: p.disk.to_string(),
                    done: p.grains_done,
                    total: p.grains,
                })
            };
            match disks.commit(&*served.committer, &mut report) {
                Ok(summary) => Reply::Committed(summary),
                Err(e) => {
                    log::error!("commit: {e}");
                    Reply::Error(e.to_string())
                }
            }
        }
        Request::Discard { disk } => match disks.discard(&disk) {
            Ok(had) => {
                invalidate_disk(served, &disk);
                Reply::Discarded(had)
            }
            Err(e) => Reply::Error(e.to_string()),
        },
    }
}

/// Drops what the kernel caches of a discarded disk (its pages and its size), found by
/// its inode number through the mount itself.
fn invalidate_disk(served: &Served, disk: &str) {
    use std::os::unix::fs::MetadataExt;
    let name = disk.strip_prefix("disks/").unwrap_or(disk);
    let name = if name.ends_with(".raw") {
        name.to_string()
    } else {
        format!("{name}.raw")
    };
    let path = served
        .mount_point
        .join(crate::node::layout::DISKS_DIR)
        .join(name);
    if let Ok(meta) = std::fs::symlink_metadata(&path) {
        (served.invalidate)(meta.ino());
    }
}

/// Sends `request` to the daemon of the mount at `mount_point` and returns its final
/// answer; progress lines go to `progress`.
pub fn ask(
    mount_point: &Path,
    request: &Request,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<Reply> {
    let path = super::record::socket_path(mount_point).map_err(Error::usage)?;
    let stream = UnixStream::connect(&path).map_err(|e| {
        Error::io(
            format!(
                "cannot reach the daemon of {} (control socket {})",
                mount_point.display(),
                path.display()
            ),
            e,
        )
    })?;
    let mut line = serde_json::to_vec(request).map_err(|e| Error::usage(e.to_string()))?;
    line.push(b'\n');
    (&stream)
        .write_all(&line)
        .map_err(|e| Error::io("send a request to the daemon", e))?;
    for line in BufReader::new(&stream).lines() {
        let line = line.map_err(|e| Error::io("read the daemon's answer", e))?;
        let reply: Reply = serde_json::from_str(&line)
            .map_err(|e| Error::usage(format!("bad answer from the daemon: {e}")))?;
        match reply {
            Reply::Progress { disk, done, total } => progress(&disk, done, total),
            other => return Ok(other),
        }
    }
    Err(Error::usage(format!(
        "the daemon of {} closed the connection without an answer",
        mount_point.display()
    )))
}
