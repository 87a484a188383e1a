//! `ovafs mount`: open the appliance, mount it, serve until unmounted.
//!
//! Without `-f` the command starts a copy of itself as the daemon (`ovafs __serve`) and waits
//! for one line on the daemon's stdout: `ready` once the mount is usable, or `error: ...`.
//! So `ovafs mount` exits 0 only with a working mount, and otherwise prints the daemon's
//! one-line reason and leaves nothing mounted. The daemon starts its own session, works from
//! `/`, and logs to syslog.
//!
//! The daemon holds a shared `flock` on the directory underneath the mount point for its
//! whole life; `ovafs umount` takes that lock exclusively after unmounting, which is how it
//! knows the daemon has finished (edits written, files closed).

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use nix::sys::signal::{SigSet, Signal};

use super::options::{Access, MountConfig};
use super::{EXIT_FAILURE, EXIT_OK};
use crate::appliance::Appliance;
use crate::cache::UnitCache;
use crate::commit::{self, Committer};
use crate::deploy::{self, DeployContext, FlatDiskPath};
use crate::editor::Editor;
use crate::error::{Error, Result};
use crate::fs::{FsOptions, OvaFs};
use crate::integrity::{self, Integrity, StatusNotes, VerifyMode};
use crate::node::Node;
use crate::node::prefetch::DiskContent;
use crate::node::refusals::Refusals;
use crate::node::written_disk::WrittenDiskFile;
use crate::verify::Subject;
use crate::writable::WritableDisks;

/// Environment variable that tells a `__serve` daemon to report readiness on stdout.
const NOTIFY_ENV: &str = "OVAFS_NOTIFY_STDOUT";

/// Line the daemon prints when the mount is usable.
const READY_LINE: &str = "ready";

/// Runs `ovafs mount` with a validated configuration.
pub fn run(mut config: MountConfig) -> Result<i32> {
    config.source = std::path::absolute(&config.source)
        .map_err(|e| Error::io(format!("cannot resolve {}", config.source.display()), e))?;
    config.mountpoint = std::path::absolute(&config.mountpoint)
        .map_err(|e| Error::io(format!("cannot resolve {}", config.mountpoint.display()), e))?;
    // A FIFO, device or directory is refused here, at once, before a daemon starts.
    crate::io::open_regular_file(&config.source)?;
    if config.sign_cert.is_some() && config.sign_key.is_none() {
        return Err(Error::usage("sign_cert= needs sign_key="));
    }
    if config.foreground {
        crate::logging::init_stderr(config.debug);
        serve(&config, |read_only| {
            if let Some(reason) = read_only {
                eprintln!("ovafs: {reason}");
            }
            Ok(())
        })
    } else {
        spawn_daemon(&config)
    }
}

/// Entry point of the daemon process started by `spawn_daemon`.
pub fn run_daemon(config_json: &str) -> i32 {
    let notify = std::env::var_os(NOTIFY_ENV).is_some();
    crate::logging::init_syslog();
    let config: MountConfig = match serde_json::from_str(config_json) {
        Ok(c) => c,
        Err(e) => {
            let _ = notify_line(notify, &format!("error: bad daemon configuration: {e}"));
            return EXIT_FAILURE;
        }
    };
    // A daemon of its own: no controlling terminal, no signals from the shell's job control,
    // and no working directory pinned.
    let _ = nix::unistd::setsid();
    let _ = std::env::set_current_dir("/");
    let ready = |read_only: Option<&str>| {
        let line = match read_only {
            Some(reason) => format!("{READY_LINE} {reason}"),
            None => READY_LINE.to_string(),
        };
        notify_line(notify, &line).map_err(|e| Error::io("cannot report readiness", e))
    };
    match serve(&config, ready) {
        Ok(code) => code,
        Err(e) => {
            log::error!("{}: {e}", config.source.display());
            let _ = notify_line(notify, &format!("error: {e}"));
            EXIT_FAILURE
        }
    }
}

fn notify_line(enabled: bool, line: &str) -> std::io::Result<()> {
    if enabled {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    Ok(())
}

/// Starts the daemon and waits for its verdict.
fn spawn_daemon(config: &MountConfig) -> Result<i32> {
    let exe = std::env::current_exe().map_err(|e| Error::io("cannot find the ovafs binary", e))?;
    let json = serde_json::to_string(config).map_err(|e| Error::usage(e.to_string()))?;
    let mut child = Command::new(exe)
        .arg("__serve")
        .arg(json)
        .env(NOTIFY_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::io("cannot start the mount daemon", e))?;
    let mut line = String::new();
    if let Some(stdout) = child.stdout.take() {
        let _ = BufReader::new(stdout).read_line(&mut line);
    }
    let line = line.trim_end();
    if line == READY_LINE {
        return Ok(EXIT_OK);
    }
    if let Some(notice) = line
        .strip_prefix(READY_LINE)
        .and_then(|r| r.strip_prefix(' '))
    {
        eprintln!("ovafs: {notice}");
        return Ok(EXIT_OK);
    }
    let status = child
        .wait()
        .map_err(|e| Error::io("waiting for the mount daemon", e))?;
    match line.strip_prefix("error: ") {
        Some(msg) => eprintln!("ovafs: {msg}"),
        None => eprintln!("ovafs: the mount daemon exited before the mount was ready ({status})"),
    }
    Ok(EXIT_FAILURE)
}

/// Mounts and serves until unmounted (by `ovafs umount`, `fusermount3 -u`, or a signal).
/// `on_ready` runs once the mount is usable, with the reason the mount is read-only when
/// the user did not ask for that (the source file is not writable).
pub(super) fn serve(
    config: &MountConfig,
    on_ready: impl FnOnce(Option<&str>) -> Result<()>,
) -> Result<i32> {
    // Signals are handled by one thread that unmounts; block them before any thread starts
    // so every thread inherits the mask.
    let signals = termination_signals();
    signals
        .thread_block()
        .map_err(|e| Error::io("cannot block signals", e.into()))?;

    check_mountpoint(&config.mountpoint)?;
    // Read once, here: a bad key fails the mount before anything is served.
    let signer = config
        .sign_key
        .as_deref()
        .map(|key| super::sign::load_signer(key, config.sign_cert.as_deref()))
        .transpose()?;
    hold_mountpoint_lock_until_exit(&config.mountpoint)?;

    // An interrupted commit is completed (or discarded) before anything reads the package;
    // a read-only mount only looks. A journal left in place (not ovafs's, not provable, or
    // another mount's) keeps the package read-only. The source must be a regular file: not
    // a FIFO (which would hang whoever opens it), a device or a directory.
    crate::io::open_regular_file(&config.source)?;
    let recovery = if config.read_only {
        commit::inspect(&config.source)?
    } else {
        commit::recover(&config.source)?
    };
    let appliance = Appliance::open_in(&config.source, &config.limits())?;
    // verify=strict: nothing is served until everything checks out.
    let strict_report = match config.verify {
        VerifyMode::Strict => Some(integrity::verify_strict(&Subject::from_package(
            &appliance.package,
        ))?),
        _ => None,
    };
    let (mut committer, read_only_reason) =
        open_committer(config, &appliance, recovery.read_only_reason())?;
    match (&mut committer, signer) {
        (Some(c), Some(signer)) => {
            log::info!("{}: every commit re-signs", config.source.display());
            c.resign_with(Some(signer));
        }
        (None, Some(_)) => log::warn!(
            "{}: sign_key= has no effect: the mount is read-only",
            config.source.display()
        ),
        (_, None) => {}
    }
    let read_only = committer.is_none();
    let deploy = deploy_context(config, &appliance, !read_only)?;
    let editor = Arc::new(Editor::new(&appliance.package, committer)?.with_deploy(deploy));
    let cache = Arc::new(UnitCache::new(config.cache_bytes));
    let package_stat = nix::sys::stat::stat(&config.source)
        .map_err(|e| Error::io(format!("stat {}", config.source.display()), e.into()))?;
    let mut writable =
        (!read_only).then(|| WritableDisks::new(config.writable_options(), package_stat));
    let built = appliance.build_tree(
        &cache,
        &Editor::served_members(&appliance.package),
        &mut |d, flat| {
            let disk = writable.as_mut()?.open_disk(&appliance, d, flat, &cache)?;
            let file = WrittenDiskFile::new(disk.clone(), d.mode & 0o444, d.mtime);
            Some((Node::File(Arc::new(file)), DiskContent::Written(disk)))
        },
    );
    let writable = writable.map(Arc::new);
    let unshown = match &writable {
        None => unshown_overlays(config, &appliance, &package_stat),
        Some(_) => Vec::new(),
    };
    let refusals = Arc::new(Refusals::default());
    let mut package_notices = recovery.notices();
    let mut ready_notices: Vec<String> = read_only_reason.iter().cloned().collect();
    for notice in unshown {
        package_notices.push(notice.clone());
        ready_notices.push(notice);
    }
    for r in writable.iter().flat_map(|w| w.read_only()) {
        let notice = format!("disks/{} is read-only: {}", r.name, r.reason);
        package_notices.push(notice.clone());
        ready_notices.push(notice);
    }
    // The reason for a read-only mount, unless it only repeats a recovery notice.
    if let Some(why) = &read_only_reason
        && !package_notices.iter().any(|n| why.starts_with(n.as_str()))
    {
        package_notices.push(format!("read-only: {why}"));
    }
    let notes = StatusNotes {
        caught_panics: crate::fs::contain::caught_panics,
        escaped: built.escaped,
        refusals: refusals.clone(),
        package: package_notices,
    };
    let integrity = Integrity::new(config.verify, &built.disks, strict_report, notes);
    let root = built.root;
    editor.show_in(&root, refusals.clone());
    integrity.show_in(&root, !read_only, &refusals);
    let fs_options = FsOptions {
        threads: config.threads,
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        read_only,
    };
    let fs =
        OvaFs::new(root, &fs_options).map_err(|e| Error::io("cannot start read workers", e))?;

    // Contained: a panic in one request fails that request (EIO), not the whole mount.
    let fs = crate::fs::contain::Contained::new(fs);
    let mut session = fuser::Session::new(fs, &config.mountpoint, &fuser_config(config, read_only))
        .map_err(|e| {
            Error::io(
                format!("cannot mount on {}", config.mountpoint.display()),
                e,
            )
        })?;
    raise_read_ahead(&config.mountpoint);
    write_mount_record(config, !read_only);
    log::info!(
        "mounted {} on {} ({} disks, cache {} bytes)",
        config.source.display(),
        config.mountpoint.display(),
        appliance.disks.len(),
        cache.budget_bytes()
    );

    let notifier = session.notifier();
    super::control::listen(
        &config.mountpoint,
        super::control::Served {
            disks: writable.clone(),
            committer: editor.clone(),
            mount_point: config.mountpoint.clone(),
            invalidate: Box::new(move |ino| {
                if let Err(e) = notifier.inval_inode(fuser::INodeNo(ino), 0, 0) {
                    log::debug!("cannot invalidate inode {ino}: {e}");
                }
            }),
        },
    );

    let mut unmounter = session.unmount_callable();
    let mountpoint = config.mountpoint.clone();
    std::thread::Builder::new()
        .name("ovafs-signals".into())
        .spawn(move || {
            if let Ok(sig) = signals.wait() {
                log::info!("{sig}: unmounting");
                if let Err(e) = unmounter.unmount() {
                    detach_after_failed_unmount(&mountpoint, sig, &e);
                }
            }
        })
        .map_err(|e| Error::io("cannot start the signal thread", e))?;

    let notice = (!ready_notices.is_empty()).then(|| ready_notices.join("; "));
    on_ready(notice.as_deref())?;
    integrity.start(Subject::from_package(&appliance.package));
    let result = session.run();
    super::control::remove(&config.mountpoint);
    if let Some(disks) = &writable {
        finish_disks(config, disks, &editor);
    }
    super::record::remove_own(
        &super::mountinfo::canonical_mount_path(&config.mountpoint),
        std::process::id(),
    );
    match result {
        Ok(()) => Ok(EXIT_OK),
        Err(e) => Err(Error::io("FUSE session failed", e)),
    }
}

/// On a read-only mount, the disks whose overlays hold changes it does not show (reading
/// them could write: a torn journal tail is cut, a long one compacted).
fn unshown_overlays(
    config: &MountConfig,
    appliance: &Appliance,
    package: &nix::sys::stat::FileStat,
) -> Vec<String> {
    let options = config.writable_options();
    appliance
        .disks
        .iter()
        .map(|d| format!("{}.raw", d.stem))
        .filter(|name| {
            let location = options.location(&config.source, name);
            crate::overlay::exists(&location, package).unwrap_or(false)
        })
        .map(|name| {
            format!(
                "disks/{name} has uncommitted changes in its overlay, not shown on a read-only mount"
            )
        })
        .collect()
}

/// At the end of a mount: makes the disks' writes durable, then commits them with `-o
/// commit=umount`, else says where they stay.
fn finish_disks(config: &MountConfig, disks: &WritableDisks, editor: &Editor) {
    // Unsynced writes were acknowledged: a clean unmount keeps them.
    let _ = disks.sync_all();
    if !disks.has_changes() {
        return;
    }
    if !config.commit_at_umount {
        log::warn!(
            "{}: uncommitted disk changes stay in the overlay; 'ovafs commit {}' writes them into the package",
            config.source.display(),
            config.source.display()
        );
        return;
    }
    match disks.commit(editor, &mut |_| {}) {
        Ok(summary) => log::info!(
            "{}: committed {} disks at unmount",
            config.source.display(),
            summary.committed.len()
        ),
        Err(e) => log::error!(
            "{}: commit at unmount failed ({e}); the changes stay in the overlay",
            config.source.display()
        ),
    }
}

/// Records which package this mount serves, for `ovafs umount` (see `record.rs`).
fn write_mount_record(config: &MountConfig, writable: bool) {
    let mount_point = super::mountinfo::canonical_mount_path(&config.mountpoint);
    let Some(entry) = super::mountinfo::find(&mount_point) else {
        log::warn!("{}: not in the mount table", mount_point.display());
        return;
    };
    let source = std::fs::canonicalize(&config.source).unwrap_or_else(|_| config.source.clone());
    super::record::write(&super::record::Record {
        mount_point,
        source,
        pid: std::process::id(),
        device: entry.device,
        writable,
        commit_at_umount: config.commit_at_umount,
    });
}

/// Unmounts after a signal when fuser's own unmount failed: retried while busy as
/// `ovafs umount` does, then detached (`fusermount3 -u -z`), so that the session ends
/// instead of serving on with nobody left to stop it. A plain unmount fails with EBUSY while
/// any process has a file open in the mount, even for a moment (a child forked by another
/// thread holds inherited descriptors until it execs); libfuse detaches on exit for the
/// same reason. The kernel ends the session once the last open file is closed.
fn detach_after_failed_unmount(mountpoint: &Path, sig: Signal, error: &std::io::Error) {
    log::warn!("unmount after {sig} failed ({error}); retrying, then detaching");
    let result = super::umount::unmount_retrying_while_busy(mountpoint)
        .or_else(|_| super::umount::unmount(mountpoint, true));
    if let Err(e) = result {
        log::error!("cannot unmount {} after {sig}: {e}", mountpoint.display());
    }
}

fn termination_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGHUP);
    set
}

/// The committer for a writable mount, or why the mount is read-only. `recovery_left` is
/// why recovery left a journal beside the package: then nothing may be committed (and a
/// read-only mount says so too).
fn open_committer(
    config: &MountConfig,
    appliance: &Appliance,
    recovery_left: Option<String>,
) -> Result<(Option<Committer>, Option<String>)> {
    if config.read_only {
        return Ok((None, recovery_left));
    }
    if let Some(why) = recovery_left {
        let reason = format!("{why}; mounted read-only");
        log::warn!("{}: {reason}", config.source.display());
        return Ok((None, Some(reason)));
    }
    if let Some(format) = appliance.package.archive_compression {
        // Edits are patched into the archive in place; a compressed archive would have to
        // be recompressed whole for every one of them.
        let reason = format!(
            "{} is a {format}-compressed archive; mounted read-only",
            config.source.display()
        );
        return Ok((None, Some(reason)));
    }
    match Committer::open(&appliance.package) {
        Ok(c) => Ok((Some(c), None)),
        Err(e) if commit::is_read_only(&e) => {
            log::debug!("{e}");
            let reason = match e.kind() {
                // Locked by another mount, a journal beside it: the message says which.
                crate::error::ErrorKind::ReadOnly(why) => format!("{why}; mounted read-only"),
                _ => format!(
                    "{} is not writable; mounted read-only",
                    config.source.display()
                ),
            };
            log::warn!("{reason}");
            Ok((None, Some(reason)))
        }
        Err(e) => Err(e),
    }
}

fn fuser_config(config: &MountConfig, read_only: bool) -> fuser::Config {
    use fuser::MountOption as M;
    let mut opts = vec![
        M::FSName(
            config
                .fsname
                .clone()
                .unwrap_or_else(|| config.source.display().to_string()),
        ),
        // As a kernel option rather than `Subtype`: fuser hands `Subtype` only to fusermount3,
        // so a mount made directly as root would show as plain "fuse" in /proc/mounts.
        // fusermount3 and the kernel both understand `subtype=`.
        M::CUSTOM("subtype=ovafs".into()),
        if read_only { M::RO } else { M::RW },
        M::DefaultPermissions,
        M::NoSuid,
        M::NoDev,
    ];
    for flag in &config.kernel_flags {
        opts.push(match flag.as_str() {
            "suid" => M::Suid,
            "dev" => M::Dev,
            "noexec" => M::NoExec,
            "exec" => M::Exec,
            "noatime" => M::NoAtime,
            "atime" => M::Atime,
            "sync" => M::Sync,
            "async" => M::Async,
            "dirsync" => M::DirSync,
            _ => continue, // nosuid/nodev are already set
        });
    }
    let mut c = fuser::Config::default();
    c.mount_options = opts;
    c.acl = match config.access {
        Access::Owner => fuser::SessionACL::Owner,
        Access::OwnerAndRoot => fuser::SessionACL::RootAndOwner,
        Access::Everyone => fuser::SessionACL::All,
    };
    c.n_threads = Some(1);
    c
}

/// Refuses mount points that are missing, not folders, or stale FUSE mounts.
fn check_mountpoint(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::usage(format!(
            "mount point {} is not a directory",
            path.display()
        ))),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Err(Error::usage(format!(
            "{} is a stale mount (its daemon died): run 'fusermount3 -u {}' first",
            path.display(),
            path.display()
        ))),
        Err(e) => Err(Error::io(format!("mount point {}", path.display()), e)),
    }
}

/// Takes the shared lock `ovafs umount` waits on (see the module comment). The descriptor is
/// never closed by the daemon: the kernel releases the lock when the process exits, after
/// the session, the read workers and the verification thread are gone. Releasing it at the
/// end of `serve` let `ovafs umount` return while the daemon was still tearing down.
fn hold_mountpoint_lock_until_exit(path: &Path) -> Result<()> {
    let dir =
        File::open(path).map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    dir.lock_shared()
        .map_err(|e| Error::io(format!("cannot lock {}", path.display()), e))?;
    std::mem::forget(dir);
    Ok(())
}

/// Asks the kernel for 1 MiB read-ahead on this mount (root only; best effort): fewer,
/// larger READ requests, each spanning many grains that decode in parallel.
fn raise_read_ahead(mountpoint: &Path) {
    // Not stat(): the session loop is not running yet, so a request to our own mount
    // would wait forever. The mount table has the device number.
    let Some(entry) = super::mountinfo::find(mountpoint) else {
        return;
    };
    let path = format!("/sys/class/bdi/{}/read_ahead_kb", entry.device);
    if let Err(e) = std::fs::write(&path, "1024") {
        log::debug!("could not raise read-ahead ({path}): {e}");
    }
}

/// What the mount's `deploy/` files need: the mount point (absolute, as launch files name
/// the flat disks by absolute path), the flat disks and the deployed configuration, which
/// must exist (a typo in `-o deployment=` fails the mount, not every later read).
fn deploy_context(
    config: &MountConfig,
    appliance: &Appliance,
    writable_disks: bool,
) -> Result<DeployContext> {
    let mountpoint = std::fs::canonicalize(&config.mountpoint)
        .map_err(|e| Error::io(format!("cannot resolve {}", config.mountpoint.display()), e))?;
    let ctx = DeployContext {
        mountpoint,
        disks: appliance
            .disks
            .iter()
            .map(|d| FlatDiskPath {
                disk_id: d.disk_id.clone(),
                path: format!("{}/{}.raw", crate::appliance::DISKS_DIR, d.stem),
            })
            .collect(),
        configuration: config.deployment.clone(),
        writable_disks,
    };
    deploy::selected_configuration(&appliance.package.descriptor, &ctx)
        .map_err(|e| Error::usage(format!("-o deployment: {e}")))?;
    Ok(ctx)
}
