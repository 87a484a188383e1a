//! The command line: argument parsing into validated configurations, and the commands.
//!
//! `ovafs mount|umount|status|commit|discard|sign|info|verify|demo`, and the same binary called as `mount.ovafs SOURCE DIR -o
//! OPTS` by `mount -t ovafs` and fstab. Every command returns an exit code; errors reach the
//! user as one line on stderr.

mod control;
mod demo;
mod disks;
mod guest;
mod info;
mod mount;
mod mountinfo;
pub mod options;
mod record;
mod sign;
mod umount;
mod verify;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::error::{Error, Result};
use options::MountConfig;

/// Exit code for success.
pub const EXIT_OK: i32 = 0;
/// Exit code for a failure the user can fix (bad input, bad options, broken package).
pub const EXIT_FAILURE: i32 = 1;
/// Exit code for command-line usage errors (as clap uses).
pub const EXIT_USAGE: i32 = 2;

/// Mount an OVF appliance (OVA or OVF) as a directory.
#[derive(Parser, Debug)]
#[command(name = "ovafs", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Mount an appliance: members as files, each disk as disks/NAME.raw.
    Mount {
        /// Mount options, comma-separated (ro, allow_other, cache_size=SIZE, debug, ...).
        #[arg(short = 'o', value_name = "OPT[,OPT...]")]
        options: Vec<String>,
        /// Stay in the foreground (log to stderr, unmount on Ctrl-C).
        #[arg(short = 'f', long = "foreground")]
        foreground: bool,
        /// The appliance: an .ova archive or an .ovf descriptor.
        source: PathBuf,
        /// An existing directory to mount on.
        mountpoint: PathBuf,
    },
    /// Unmount and wait until the filesystem daemon has finished.
    Umount {
        /// The mount point.
        mountpoint: PathBuf,
    },
    /// Describe an appliance: virtual systems, disks, networks.
    Info {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// The appliance: an .ova archive or an .ovf descriptor.
        source: PathBuf,
    },
    /// Check the manifest digests and the certificate: exit 0 if all check out, 1 if
    /// anything fails, 2 if the source cannot be read.
    Verify {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Fail unless the package is signed, the signed manifest lists the descriptor, and the
        /// signer's certificate chains to a trusted root through strong keys and signatures
        /// and is valid now (key, key-usage and archive-entry rules apply either way).
        #[arg(long)]
        require_trusted: bool,
        /// Trust the certificates of this PEM file instead of the system's store.
        #[arg(long, value_name = "FILE")]
        ca_file: Option<PathBuf>,
        /// The appliance: an .ova archive or an .ovf descriptor.
        source: PathBuf,
    },
    /// Show each writable disk's changes: bytes changed, overlay file, synced or not.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// The overlay folder, for a package no mount serves (as `-o overlay=DIR`).
        #[arg(long, value_name = "DIR")]
        overlay: Option<PathBuf>,
        /// A mount point, or a package (.ova or .ovf).
        target: PathBuf,
    },
    /// Write every changed disk into the package (atomically), then drop its overlay.
    Commit {
        /// Options: commit_level=N (0 to 12, default 6), overlay=DIR.
        #[arg(short = 'o', value_name = "OPT[,OPT...]")]
        options: Vec<String>,
        /// A mount point, or a package (.ova or .ovf).
        target: PathBuf,
    },
    /// Throw away a disk's changes (its overlay).
    Discard {
        /// The overlay folder, for a package no mount serves (as `-o overlay=DIR`).
        #[arg(long, value_name = "DIR")]
        overlay: Option<PathBuf>,
        /// A mount point, or a package (.ova or .ovf).
        target: PathBuf,
        /// The disk: disk1, disk1.raw, or its Disk id.
        disk: String,
    },
    /// Re-sign a package: its certificate (.cert) regenerated over its manifest with this
    /// key, as ovftool writes it (atomically, in place).
    Sign {
        /// The signer's RSA private key in PEM (unencrypted; mode 0600). The certificate may
        /// follow the key in the same file.
        #[arg(short = 'k', long = "key", value_name = "KEY.pem")]
        key: PathBuf,
        /// The signer's certificate in PEM (chain certificates may follow it); default: the
        /// certificates in the key file.
        #[arg(long, value_name = "CERT.pem")]
        cert: Option<PathBuf>,
        /// The package (.ova or .ovf).
        source: PathBuf,
    },
    /// List a folder of a disk's guest view without mounting (as below the mount's disks/):
    /// disk1, disk1/p1/etc
    Ls {
        /// Show mode, owner, group, size, modification time (UTC) and link targets.
        #[arg(short = 'l')]
        long: bool,
        /// The OVA or OVF.
        source: PathBuf,
        /// The folder or file: NAME, NAME/pN, NAME/pN/PATH (NAME/fs/PATH without a table).
        #[arg(default_value = "")]
        path: String,
    },
    /// Write a guest file of a disk to standard output without mounting: disk1/p1/etc/hostname
    Cat {
        /// The OVA or OVF.
        source: PathBuf,
        /// The file: NAME/pN/PATH, NAME/pN.raw, NAME/partitions.
        path: String,
    },
    /// Build a sample appliance, mount it in a temporary folder, and show what to try.
    Demo,
}

pub use mount::run_daemon;

/// Runs the program with `args` (including `argv[0]`) and returns the exit code.
pub fn run(args: Vec<OsString>) -> i32 {
    let called_as_mount_helper = args
        .first()
        .and_then(|a| {
            PathBuf::from(a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .is_some_and(|n| n.starts_with("mount.ovafs") || n.starts_with("mount.fuse.ovafs"));
    if called_as_mount_helper {
        return report(parse_mount_helper(&args[1..]).and_then(mount::run));
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return code;
        }
    };
    match cli.command {
        Command::Mount {
            options,
            foreground,
            source,
            mountpoint,
        } => {
            let config = (|| {
                let mut c = MountConfig::new(source, mountpoint);
                for o in &options {
                    c.apply_options(o)?;
                }
                c.foreground |= foreground;
                Ok(c)
            })();
            report(config.and_then(mount::run))
        }
        Command::Umount { mountpoint } => report(umount::run(&mountpoint)),
        Command::Info { json, source } => report(info::run(&source, json)),
        Command::Verify {
            json,
            require_trusted,
            ca_file,
            source,
        } => report(verify::run(&verify::VerifyArgs {
            source,
            json,
            require_trusted,
            ca_file,
        })),
        Command::Status {
            json,
            overlay,
            target,
        } => report(disks::status(&target, json, overlay)),
        Command::Commit { options, target } => {
            report(commit_options(&options).and_then(|o| disks::commit(&target, &o)))
        }
        Command::Discard {
            overlay,
            target,
            disk,
        } => report(disks::discard(&target, &disk, overlay)),
        Command::Sign { key, cert, source } => {
            report(sign::run(&sign::SignArgs { key, cert, source }))
        }
        Command::Ls { long, source, path } => report(guest::ls(&source, &path, long)),
        Command::Cat { source, path } => report(guest::cat(&source, &path)),
        Command::Demo => report(demo::run()),
    }
}

/// The options `ovafs commit -o` takes: `overlay=DIR`, `commit_level=N`, `sign_key=PEM`
/// and `sign_cert=PEM`.
fn commit_options(lists: &[String]) -> Result<disks::CommitArgs> {
    let mut o = disks::CommitArgs {
        overlay: None,
        level: crate::writable::WritableOptions::default().commit_level,
        sign_key: None,
        sign_cert: None,
    };
    for opt in lists.iter().flat_map(|l| l.split(',')).map(str::trim) {
        match opt.split_once('=') {
            Some(("overlay", v)) if !v.is_empty() => o.overlay = Some(PathBuf::from(v)),
            Some(("commit_level", v)) => o.level = options::parse_commit_level(v)?,
            Some(("sign_key", v)) if !v.is_empty() => o.sign_key = Some(PathBuf::from(v)),
            Some(("sign_cert", v)) if !v.is_empty() => o.sign_cert = Some(PathBuf::from(v)),
            _ if opt.is_empty() => {}
            _ => return Err(Error::usage(format!("unknown commit option '{opt}'"))),
        }
    }
    if o.sign_cert.is_some() && o.sign_key.is_none() {
        return Err(Error::usage("sign_cert= needs sign_key="));
    }
    Ok(o)
}

/// Prints an error as one line and turns a result into an exit code.
fn report(result: Result<i32>) -> i32 {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ovafs: {e}");
            match e.kind() {
                crate::error::ErrorKind::Usage(_) => EXIT_USAGE,
                _ => EXIT_FAILURE,
            }
        }
    }
}

/// Parses `mount.ovafs SOURCE DIR [-o OPTS] [-f] [-n] [-s] [-v]`, the calling convention of
/// mount(8) helpers (options may come before or after the two paths).
fn parse_mount_helper(args: &[OsString]) -> Result<MountConfig> {
    let mut positional: Vec<PathBuf> = Vec::new();
    let mut options: Vec<String> = Vec::new();
    let mut foreground = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.to_str() {
            Some("-o") => {
                let v = it
                    .next()
                    .ok_or_else(|| Error::usage("-o needs an option list"))?;
                options.push(v.to_string_lossy().into_owned());
            }
            Some(s) if s.starts_with("-o") && s.len() > 2 => options.push(s[2..].to_string()),
            Some("-f") => foreground = true,
            // -n (no mtab), -s (sloppy), -v (verbose): nothing for us to do.
            Some("-n" | "-s" | "-v") => {}
            Some(s) if s.starts_with('-') => {
                return Err(Error::usage(format!("mount.ovafs: unknown flag '{s}'")));
            }
            _ => positional.push(PathBuf::from(arg)),
        }
    }
    let [source, mountpoint] = <[PathBuf; 2]>::try_from(positional)
        .map_err(|_| Error::usage("usage: mount.ovafs SOURCE MOUNTPOINT [-o OPTIONS]"))?;
    let mut config = MountConfig::new(source, mountpoint);
    for o in &options {
        config.apply_options(o)?;
    }
    config.foreground |= foreground;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn mount_helper_takes_options_anywhere() {
        let c = parse_mount_helper(&os(&["-o", "ro,cache_size=32M", "a.ova", "/mnt/x"])).unwrap();
        assert_eq!(c.source, PathBuf::from("a.ova"));
        assert_eq!(c.mountpoint, PathBuf::from("/mnt/x"));
        assert!(c.read_only);
        let c = parse_mount_helper(&os(&["a.ova", "/mnt/x", "-n", "-oallow_other"])).unwrap();
        assert_eq!(c.access, options::Access::Everyone);
        assert!(parse_mount_helper(&os(&["a.ova"])).is_err());
        assert!(parse_mount_helper(&os(&["a.ova", "/m", "-o", "bogus"])).is_err());
    }
}
