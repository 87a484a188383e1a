//! Mount options (`-o a,b=c`), validated into a [`MountConfig`].
//!
//! Conventions follow sshfs and archivemount: options come as comma-separated lists after
//! `-o` (repeatable); generic kernel flags pass through; the bookkeeping options that
//! `mount(8)` and fstab add (`defaults`, `noauto`, `user`, `nofail`, `_netdev`, `x-*`, ...)
//! are accepted and ignored; anything else is refused by name.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::integrity::VerifyMode;
use crate::io::budget::{DEFAULT_INFLATE_LIMIT, DEFAULT_METADATA_LIMIT, Limits};
use crate::units::parse_size;

/// Default grain cache budget.
pub const DEFAULT_CACHE_BYTES: u64 = 64 << 20;

/// Read worker threads by default: two per core (reads also wait on I/O), at least four.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() * 2)
        .unwrap_or(4)
        .max(4)
}

/// Who may use the mount besides its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Access {
    /// Only the mounting user (FUSE's default).
    Owner,
    /// The mounting user and root (`allow_root`).
    OwnerAndRoot,
    /// Everyone, with kernel permission checks (`allow_other`).
    Everyone,
}

/// Everything `ovafs mount` needs, validated.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MountConfig {
    /// The appliance: an `.ova` file or an `.ovf` descriptor.
    pub source: PathBuf,
    /// Where to mount it.
    pub mountpoint: PathBuf,
    /// Stay in the foreground (`-f`, implied by `debug`).
    pub foreground: bool,
    /// Mount read-only (`ro`).
    pub read_only: bool,
    /// Who may access the mount.
    pub access: Access,
    /// Grain cache budget in bytes (`cache_size=`).
    pub cache_bytes: u64,
    /// Debug logging (`debug`).
    pub debug: bool,
    /// Read worker threads (`threads=`).
    pub threads: usize,
    /// Generic kernel flags to pass on (`nosuid`, `nodev`, `noexec`, `noatime`, ...).
    pub kernel_flags: Vec<String>,
    /// Name shown as the mount source in `/proc/mounts` (`fsname=`).
    pub fsname: Option<String>,
    /// When to check the manifest digests and the certificate (`verify=`).
    pub verify: VerifyMode,
    /// Memory all disks' metadata tables may take (`metadata_limit=`).
    pub metadata_limit: u64,
    /// Bytes that indexing compressed data may inflate before the mount is ready
    /// (`inflate_limit=`).
    pub inflate_limit: u64,
    /// The overlay folder of the writable disks (`overlay=DIR`); `None`: beside the package.
    #[serde(default)]
    pub overlay: Option<PathBuf>,
    /// Commit the disks' changes when the mount ends (`commit=umount`; `commit=manual`:
    /// only `ovafs commit` does).
    #[serde(default)]
    pub commit_at_umount: bool,
    /// libdeflate level of re-encoded grains (`commit_level=`, 0 to 12).
    #[serde(default = "default_commit_level")]
    pub commit_level: i32,
    /// Re-sign every commit with this private key (`sign_key=PEM`); read once, by the
    /// daemon, at mount time (the path goes to the daemon, never the key).
    #[serde(default)]
    pub sign_key: Option<PathBuf>,
    /// The signer's certificate (`sign_cert=PEM`); default: the certificates in the key file.
    #[serde(default)]
    pub sign_cert: Option<PathBuf>,
    /// The deployment configuration the `deploy/` files describe (`deployment=CONFIG`);
    /// `None`: the descriptor's default.
    #[serde(default)]
    pub deployment: Option<String>,
}

fn default_commit_level() -> i32 {
    crate::writable::WritableOptions::default().commit_level
}

/// Parses a `commit_level=` value (0 to 12).
pub fn parse_commit_level(v: &str) -> Result<i32> {
    v.parse::<i32>()
        .ok()
        .filter(|n| (0..=12).contains(n))
        .ok_or_else(|| Error::usage(format!("commit_level={v}: expected 0 to 12")))
}

impl MountConfig {
    /// A configuration with defaults for `source` and `mountpoint`.
    pub fn new(source: PathBuf, mountpoint: PathBuf) -> Self {
        MountConfig {
            source,
            mountpoint,
            foreground: false,
            read_only: false,
            access: Access::Owner,
            cache_bytes: DEFAULT_CACHE_BYTES,
            debug: false,
            threads: default_threads(),
            kernel_flags: Vec::new(),
            fsname: None,
            verify: VerifyMode::default(),
            metadata_limit: DEFAULT_METADATA_LIMIT,
            inflate_limit: DEFAULT_INFLATE_LIMIT,
            overlay: None,
            commit_at_umount: false,
            commit_level: default_commit_level(),
            sign_key: None,
            sign_cert: None,
            deployment: None,
        }
    }

    /// The options of the writable disks. A relative overlay folder is taken from the
    /// working directory of `ovafs mount` (the daemon works from `/`).
    pub fn writable_options(&self) -> crate::writable::WritableOptions {
        crate::writable::WritableOptions {
            overlay_folder: self.overlay.clone(),
            commit_level: self.commit_level,
        }
    }

    /// The budgets the mount opens the package within.
    pub fn limits(&self) -> Limits {
        Limits::new(self.metadata_limit, self.inflate_limit)
    }

    /// Applies one `-o` argument (a comma-separated list).
    pub fn apply_options(&mut self, list: &str) -> Result<()> {
        for opt in list.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            self.apply_option(opt)?;
        }
        Ok(())
    }

    fn apply_option(&mut self, opt: &str) -> Result<()> {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        fn need_value<'a>(key: &str, v: Option<&'a str>) -> Result<&'a str> {
            v.filter(|v| !v.is_empty())
                .ok_or_else(|| Error::usage(format!("mount option '{key}' needs a value")))
        }
        match key {
            "ro" => self.read_only = true,
            "rw" => self.read_only = false,
            "allow_other" => self.access = Access::Everyone,
            "allow_root" => self.access = Access::OwnerAndRoot,
            "default_permissions" => {} // always on
            "debug" => {
                self.debug = true;
                self.foreground = true;
            }
            "cache_size" => {
                let v = need_value(key, value)?;
                self.cache_bytes = parse_size(v, 1).ok_or_else(|| {
                    Error::usage(format!(
                        "cache_size={v}: expected a size such as 256M or 1G"
                    ))
                })?;
            }
            "threads" => {
                let v = need_value(key, value)?;
                self.threads = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=256).contains(n))
                    .ok_or_else(|| Error::usage(format!("threads={v}: expected 1 to 256")))?;
            }
            "metadata_limit" | "inflate_limit" => {
                let v = need_value(key, value)?;
                let bytes = parse_size(v, 1).filter(|&b| b > 0).ok_or_else(|| {
                    Error::usage(format!("{key}={v}: expected a size such as 512M or 4G"))
                })?;
                if key == "metadata_limit" {
                    self.metadata_limit = bytes;
                } else {
                    self.inflate_limit = bytes;
                }
            }
            "fsname" => self.fsname = Some(need_value(key, value)?.to_string()),
            "overlay" => {
                let v = need_value(key, value)?;
                self.overlay = Some(
                    std::path::absolute(v)
                        .map_err(|e| Error::usage(format!("overlay={v}: {e}")))?,
                );
            }
            "commit" => {
                self.commit_at_umount = match need_value(key, value)? {
                    "umount" => true,
                    "manual" => false,
                    v => {
                        return Err(Error::usage(format!(
                            "commit={v}: expected umount or manual"
                        )));
                    }
                }
            }
            "sign_key" | "sign_cert" => {
                let v = need_value(key, value)?;
                let path = Some(
                    std::path::absolute(v).map_err(|e| Error::usage(format!("{key}={v}: {e}")))?,
                );
                if key == "sign_key" {
                    self.sign_key = path;
                } else {
                    self.sign_cert = path;
                }
            }
            "deployment" => self.deployment = Some(need_value(key, value)?.to_string()),
            "commit_level" => self.commit_level = parse_commit_level(need_value(key, value)?)?,
            "verify" => {
                let v = need_value(key, value)?;
                self.verify = VerifyMode::parse(v).ok_or_else(|| {
                    Error::usage(format!("verify={v}: expected lazy, strict or off"))
                })?;
            }
            "nosuid" | "suid" | "nodev" | "dev" | "noexec" | "exec" | "noatime" | "atime"
            | "sync" | "async" | "dirsync" => self.kernel_flags.push(key.to_string()),
            // Added by mount(8), fstab and systemd; meaningless to the filesystem itself.
            "defaults" | "auto" | "noauto" | "user" | "users" | "nouser" | "owner" | "group"
            | "nofail" | "_netdev" | "subtype" | "relatime" | "norelatime" | "strictatime"
            | "lazytime" | "nolazytime" | "comment" | "kernel_cache" | "auto_cache" => {}
            k if k.starts_with("x-") => {}
            _ => return Err(Error::usage(format!("unknown mount option '{opt}'"))),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(opts: &[&str]) -> Result<MountConfig> {
        let mut c = MountConfig::new("a.ova".into(), "/mnt".into());
        for o in opts {
            c.apply_options(o)?;
        }
        Ok(c)
    }

    #[test]
    fn known_options_apply() {
        let c = cfg(&["ro,allow_other", "cache_size=256M,threads=3"]).unwrap();
        assert!(c.read_only);
        assert_eq!(c.access, Access::Everyone);
        assert_eq!(c.cache_bytes, 256 << 20);
        assert_eq!(c.threads, 3);
        let c = cfg(&["debug,nosuid,noauto,x-systemd.automount,_netdev,defaults"]).unwrap();
        assert!(c.debug && c.foreground);
        assert_eq!(c.kernel_flags, vec!["nosuid".to_string()]);
    }

    #[test]
    fn bad_options_are_refused_by_name() {
        let e = cfg(&["ro,frobnicate"]).unwrap_err().to_string();
        assert!(e.contains("frobnicate"), "{e}");
        assert!(cfg(&["cache_size=lots"]).is_err());
        assert!(cfg(&["cache_size"]).is_err());
        assert!(cfg(&["threads=0"]).is_err());
        assert!(cfg(&["metadata_limit=0"]).is_err());
        assert!(cfg(&["inflate_limit=much"]).is_err());
        assert!(cfg(&["commit=later"]).is_err());
        assert!(cfg(&["commit_level=13"]).is_err());
        assert!(cfg(&["overlay="]).is_err());
    }

    #[test]
    fn writable_disk_options_apply() {
        let c = cfg(&[]).unwrap();
        assert!(!c.commit_at_umount);
        assert_eq!(c.commit_level, 6);
        assert_eq!(c.overlay, None);
        let c = cfg(&["commit=umount,commit_level=9,overlay=/var/tmp/ov"]).unwrap();
        assert!(c.commit_at_umount);
        assert_eq!(c.commit_level, 9);
        assert_eq!(c.overlay, Some(PathBuf::from("/var/tmp/ov")));
    }

    #[test]
    fn signing_options_take_absolute_paths() {
        let c = cfg(&["sign_key=/k/key.pem,sign_cert=cert.pem"]).unwrap();
        assert_eq!(c.sign_key, Some(PathBuf::from("/k/key.pem")));
        assert!(c.sign_cert.as_ref().is_some_and(|p| p.is_absolute()));
        assert!(cfg(&["sign_key="]).is_err());
        assert!(cfg(&["sign_cert"]).is_err());
    }

    #[test]
    fn budgets_have_defaults_and_options_raise_them() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.metadata_limit, DEFAULT_METADATA_LIMIT);
        assert_eq!(c.inflate_limit, DEFAULT_INFLATE_LIMIT);
        let c = cfg(&["metadata_limit=4G,inflate_limit=1T"]).unwrap();
        assert_eq!(c.limits().metadata.limit(), 4 << 30);
        assert_eq!(c.limits().inflate.limit(), 1 << 40);
    }
}
