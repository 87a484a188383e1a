//! `ovafs status`, `ovafs commit` and `ovafs discard`: the writable disks of a mount
//! (asked of its daemon through the control socket, `control.rs`) or of a package that no
//! mount serves (done here, with the package's write lock held, as a mount would).
//!
//! The target is a mount point, or a package: a package that a mount of this user serves
//! is handled by that mount's daemon, so both spellings do the same thing.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::EXIT_OK;
use super::control::{self, Reply, Request};
use crate::appliance::{Appliance, flat_chain};
use crate::cache::UnitCache;
use crate::commit::{self, Committer};
use crate::error::{Error, ErrorKind, Result};
use crate::units::human_size;
use crate::writable::{
    CommitProgress, CommitSummary, DiskState, OfflineCommit, WritableDisks, WritableOptions,
};

/// Cache of an offline commit's reads of the base disks.
const OFFLINE_CACHE_BYTES: u64 = 64 << 20;

/// What a command works on.
enum Target {
    /// A mount point served by a daemon.
    Mount(PathBuf),
    /// A package no mount of this user serves.
    Package(PathBuf),
}

fn resolve(target: &Path) -> Result<Target> {
    if target.is_dir() {
        let path = super::mountinfo::canonical_mount_path(target);
        return match super::mountinfo::find(&path) {
            Some(e) if e.is_ovafs() => Ok(Target::Mount(path)),
            _ => Err(Error::usage(format!(
                "{} is not an ovafs mount",
                target.display()
            ))),
        };
    }
    let real = std::fs::canonicalize(target)
        .map_err(|e| Error::io(format!("cannot open {}", target.display()), e))?;
    match super::record::find_by_source(&real) {
        Some(r) => Ok(Target::Mount(r.mount_point)),
        None => Ok(Target::Package(real)),
    }
}

/// A package opened for its disks, with its write lock held.
struct Offline {
    appliance: Appliance,
    disks: WritableDisks,
    committer: Committer,
}

fn open_offline(source: &Path, options: WritableOptions) -> Result<Offline> {
    crate::io::open_regular_file(source)?;
    let recovery = commit::recover(source)?;
    if let Some(why) = recovery.read_only_reason() {
        return Err(Error::new(ErrorKind::ReadOnly(why)));
    }
    let appliance = Appliance::open(source)?;
    let committer = Committer::open(&appliance.package)?;
    let stat = nix::sys::stat::stat(source)
        .map_err(|e| Error::io(format!("stat {}", source.display()), e.into()))?;
    let cache = Arc::new(UnitCache::new(OFFLINE_CACHE_BYTES));
    let mut disks = WritableDisks::new(options, stat);
    for d in &appliance.disks {
        let flat = Arc::new(flat_chain(d, &cache));
        disks.open_disk(&appliance, d, &flat, &cache);
    }
    Ok(Offline {
        appliance,
        disks,
        committer,
    })
}

fn options_for(overlay: Option<PathBuf>, level: i32) -> Result<WritableOptions> {
    let overlay_folder = overlay
        .map(|d| std::path::absolute(&d).map_err(|e| Error::io(format!("{}", d.display()), e)))
        .transpose()?;
    Ok(WritableOptions {
        overlay_folder,
        commit_level: level,
    })
}

/// A failure the daemon reported, as it worded it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct DaemonError(String);

fn unexpected(reply: Reply) -> Error {
    match reply {
        Reply::Error(msg) => Error::layer(DaemonError(msg)),
        other => Error::usage(format!("unexpected answer from the daemon: {other:?}")),
    }
}

/// `ovafs status TARGET [--json]`.
pub fn status(target: &Path, json: bool, overlay: Option<PathBuf>) -> Result<i32> {
    crate::logging::init_stderr(false);
    let states = match resolve(target)? {
        Target::Mount(m) => match control::ask(&m, &Request::Status, &mut |_, _, _| {})? {
            Reply::Status(s) => s,
            other => return Err(unexpected(other)),
        },
        Target::Package(p) => open_offline(&p, options_for(overlay, 6)?)?.disks.status(),
    };
    if json {
        let text =
            serde_json::to_string_pretty(&states).map_err(|e| Error::usage(e.to_string()))?;
        println!("{text}");
    } else {
        for s in &states {
            println!("{}", describe(s));
        }
    }
    Ok(EXIT_OK)
}

/// One line of `ovafs status`.
fn describe(s: &DiskState) -> String {
    let name = format!("disks/{}", s.disk);
    if let Some(why) = &s.read_only {
        return match &s.overlay {
            Some(o) => format!("{name}: read-only ({why}); overlay {}", o.display()),
            None => format!("{name}: read-only ({why})"),
        };
    }
    if !s.changed {
        return format!("{name}: unchanged");
    }
    let mut line = format!(
        "{name}: changed, {} in the overlay ({} bytes), {}",
        human_size(s.changed_bytes),
        s.changed_bytes,
        if s.synced { "synced" } else { "not synced yet" }
    );
    if s.size != s.base_size {
        line.push_str(&format!(
            ", grown from {} to {}",
            human_size(s.base_size),
            human_size(s.size)
        ));
    }
    if let Some(o) = &s.overlay {
        line.push_str(&format!(", overlay {}", o.display()));
    }
    line
}

/// What `ovafs commit -o` was given.
#[derive(Debug)]
pub struct CommitArgs {
    /// `overlay=DIR`.
    pub overlay: Option<PathBuf>,
    /// `commit_level=N`.
    pub level: i32,
    /// `sign_key=PEM`: re-sign (a package no mount serves; a mount re-signs as it was told).
    pub sign_key: Option<PathBuf>,
    /// `sign_cert=PEM`.
    pub sign_cert: Option<PathBuf>,
}

/// `ovafs commit TARGET`.
pub fn commit(target: &Path, args: &CommitArgs) -> Result<i32> {
    crate::logging::init_stderr(false);
    // Read first: a bad key refuses the commit before anything is opened.
    let signer = args
        .sign_key
        .as_deref()
        .map(|k| super::sign::load_signer(k, args.sign_cert.as_deref()))
        .transpose()?;
    let bar = Progress::new();
    let summary = match resolve(target)? {
        Target::Mount(m) if signer.is_some() => {
            return Err(Error::usage(format!(
                "sign_key= is for a package no mount serves: the mount of {} re-signs its commits when it was mounted with -o sign_key=",
                m.display()
            )));
        }
        Target::Mount(m) => {
            let mut progress = |disk: &str, done: u64, total: u64| bar.show(disk, done, total);
            match control::ask(&m, &Request::Commit, &mut progress)? {
                Reply::Committed(s) => s,
                other => return Err(unexpected(other)),
            }
        }
        Target::Package(p) => {
            let mut offline = open_offline(&p, options_for(args.overlay.clone(), args.level)?)?;
            offline.committer.resign_with(signer);
            let committer = OfflineCommit::new(&offline.appliance.package, offline.committer);
            let mut progress = |p: CommitProgress<'_>| bar.show(p.disk, p.grains_done, p.grains);
            offline.disks.commit(&committer, &mut progress)?
        }
    };
    bar.done();
    print_summary(&summary);
    Ok(EXIT_OK)
}

fn print_summary(summary: &CommitSummary) {
    for c in &summary.committed {
        println!(
            "disks/{}: committed as {} ({}; {} grains copied, {} deflated, {} zero)",
            c.disk,
            c.member,
            human_size(c.stored_bytes),
            c.grains_copied,
            c.grains_deflated,
            c.grains_omitted
        );
    }
    if summary.committed.is_empty() {
        println!("nothing to commit");
    }
}

/// `ovafs discard TARGET DISK`.
pub fn discard(target: &Path, disk: &str, overlay: Option<PathBuf>) -> Result<i32> {
    crate::logging::init_stderr(false);
    let had = match resolve(target)? {
        Target::Mount(m) => {
            let request = Request::Discard {
                disk: disk.to_string(),
            };
            match control::ask(&m, &request, &mut |_, _, _| {})? {
                Reply::Discarded(had) => had,
                other => return Err(unexpected(other)),
            }
        }
        Target::Package(p) => open_offline(&p, options_for(overlay, 6)?)?
            .disks
            .discard(disk)?,
    };
    if had {
        println!("{disk}: changes discarded");
    } else {
        println!("{disk}: no changes");
    }
    Ok(EXIT_OK)
}

/// A progress bar on a terminal (nothing otherwise).
struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new() -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{msg} [{bar:40}] {percent}% ({eta})")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        Progress { bar }
    }

    fn show(&self, disk: &str, done: u64, total: u64) {
        if let Some(b) = &self.bar {
            b.set_message(format!("committing disks/{disk}"));
            b.set_length(total);
            b.set_position(done);
        }
    }

    fn done(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
