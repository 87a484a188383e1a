//! Which files beside a package ovafs trusts: the one check applied to its journal, the
//! temporary files of a rewrite and the temporary files a folder journal renames.
//!
//! The folder of a package may be writable by others (`/tmp`, a shared downloads folder), so
//! a file there that carries one of ovafs's names may have been planted. It is trusted only
//! when, checked on the opened descriptor (fstat after open, never stat-then-open):
//! - it is a regular file, opened without following a symlink and without blocking
//!   (`O_NOFOLLOW | O_NONBLOCK`; a FIFO, socket, device or directory there is never opened:
//!   an `lstat` filters them first, and the descriptor is checked again after the open);
//! - it has exactly one link (a hard link to someone else's file is not ours);
//! - it is owned by the package file's owner, by the user running ovafs, or by root (only
//!   root can make a file root's, and root could change the package directly anyway; so a
//!   journal root's mount left is completed by the owner's later mount);
//! - it is not writable by group or others (beyond what the package file itself allows,
//!   for temporary files that become the package).
//!
//! Every operation goes through [`Folder`], a descriptor of the package folder opened once:
//! names are resolved relative to it (`openat`, `renameat`, `unlinkat`), so a folder renamed
//! or swapped while ovafs works cannot redirect them.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

use crate::error::{Error, Result};

/// Who may have written a file beside the package, and how writable it may be.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    /// The package file's owner.
    package_owner: u32,
    /// The user running ovafs.
    me: u32,
    /// Group/other write bits tolerated (only what the package file itself has).
    tolerated_write_bits: u32,
}

impl Rules {
    /// Rules for journals: owned by the package's owner or by us, writable by the owner only.
    pub(crate) fn journal(package: &FileStat) -> Rules {
        Rules {
            package_owner: package.st_uid,
            me: nix::unistd::geteuid().as_raw(),
            tolerated_write_bits: 0,
        }
    }

    /// Rules for temporary files: as journals, but they carry the package file's mode (they
    /// become it), so the group/other write bits the package has are tolerated.
    pub(crate) fn temporary(package: &FileStat) -> Rules {
        Rules {
            tolerated_write_bits: package.st_mode & 0o022,
            ..Rules::journal(package)
        }
    }

    /// The first rule `st` breaks, in words.
    pub(crate) fn broken_rule(&self, st: &FileStat) -> Option<String> {
        let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        if kind != SFlag::S_IFREG {
            return Some(format!("it is {}, not a regular file", kind_name(kind)));
        }
        if st.st_nlink != 1 {
            return Some(format!(
                "it has {} hard links (a file of ours has one)",
                st.st_nlink
            ));
        }
        self.broken_owner_or_mode_rule(st)
    }

    /// The first rule a folder of ovafs's own (an overlay folder) breaks, in words: a
    /// directory, owned as a file of ours would be, not writable by group or others. Links
    /// are not counted (a folder has one per subfolder).
    pub(crate) fn broken_folder_rule(&self, st: &FileStat) -> Option<String> {
        let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        if kind != SFlag::S_IFDIR {
            return Some(format!("it is {}, not a directory", kind_name(kind)));
        }
        self.broken_owner_or_mode_rule(st)
    }

    fn broken_owner_or_mode_rule(&self, st: &FileStat) -> Option<String> {
        if st.st_uid != self.package_owner && st.st_uid != self.me && st.st_uid != 0 {
            return Some(format!(
                "it is owned by uid {}, neither the package's owner (uid {}), the user running ovafs (uid {}) nor root",
                st.st_uid, self.package_owner, self.me
            ));
        }
        let loose = st.st_mode & 0o022 & !self.tolerated_write_bits;
        if loose != 0 {
            return Some(format!(
                "it is writable by group or others (mode {:04o})",
                st.st_mode & 0o7777
            ));
        }
        None
    }
}

fn kind_name(kind: SFlag) -> &'static str {
    match kind {
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFLNK => "a symbolic link",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        _ => "of an unknown type",
    }
}

/// A file that passed the [`Rules`], open read-only.
#[derive(Debug)]
pub(crate) struct Trusted {
    /// The open file.
    pub(crate) file: File,
    /// Its metadata, from the descriptor.
    pub(crate) stat: FileStat,
}

/// What is found under a name.
#[derive(Debug)]
pub(crate) enum Found {
    /// Nothing.
    Missing,
    /// A file of ours.
    Trusted(Trusted),
    /// Something else, left alone: the broken rule.
    Untrusted(String),
}

/// The package folder, opened once.
#[derive(Debug)]
pub(crate) struct Folder {
    fd: OwnedFd,
    path: PathBuf,
}

/// An I/O error for a failed system call `what`.
pub(crate) fn errno_err(what: impl Into<String>, e: Errno) -> Error {
    Error::io(what, std::io::Error::from(e))
}

impl Folder {
    /// Opens the folder `path` (not following a symlink at its last component).
    pub(crate) fn open(path: &Path) -> Result<Folder> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| errno_err(format!("open folder {}", path.display()), e))?;
        Ok(Folder {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The folder's descriptor.
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// `name` in the folder, for messages.
    pub(crate) fn shown(&self, name: &str) -> String {
        self.path.join(name).display().to_string()
    }

    /// The metadata of `name` without following a symlink; `None` when there is none.
    pub(crate) fn lstat(&self, name: &str) -> Result<Option<FileStat>> {
        match nix::sys::stat::fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(errno_err(format!("stat {}", self.shown(name)), e)),
        }
    }

    /// Opens `name` read-only if it passes `rules`. Never follows a symlink, never blocks,
    /// never opens anything but a regular file.
    pub(crate) fn open_trusted(&self, name: &str, rules: &Rules) -> Result<Found> {
        self.open_trusted_with(name, rules, OFlag::O_RDONLY)
    }

    /// As [`Folder::open_trusted`], opened with `access` (`O_RDONLY` or `O_RDWR`).
    pub(crate) fn open_trusted_with(
        &self,
        name: &str,
        rules: &Rules,
        access: OFlag,
    ) -> Result<Found> {
        let Some(before) = self.lstat(name)? else {
            return Ok(Found::Missing);
        };
        if let Some(rule) = rules.broken_rule(&before) {
            return Ok(Found::Untrusted(rule));
        }
        let flags =
            access | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
        let fd = match nix::fcntl::openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(Found::Missing),
            Err(Errno::ELOOP) => return Ok(Found::Untrusted("it is a symbolic link".into())),
            Err(e) => return Err(errno_err(format!("open {}", self.shown(name)), e)),
        };
        // The descriptor is the truth: the name may have been swapped since the lstat.
        let stat = nix::sys::stat::fstat(&fd)
            .map_err(|e| errno_err(format!("stat {}", self.shown(name)), e))?;
        if let Some(rule) = rules.broken_rule(&stat) {
            return Ok(Found::Untrusted(rule));
        }
        if (stat.st_dev, stat.st_ino) != (before.st_dev, before.st_ino) {
            return Ok(Found::Untrusted(
                "it was replaced while it was being opened".into(),
            ));
        }
        Ok(Found::Trusted(Trusted {
            file: File::from(fd),
            stat,
        }))
    }

    /// Creates `name` read-write, mode 0600, failing if anything is there already
    /// (`O_CREAT | O_EXCL | O_NOFOLLOW`): a new file of ours.
    pub(crate) fn create_private(&self, name: &str) -> Result<File> {
        let flags = OFlag::O_RDWR
            | OFlag::O_CREAT
            | OFlag::O_EXCL
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | OFlag::O_NOCTTY;
        let fd = nix::fcntl::openat(&self.fd, name, flags, Mode::from_bits_truncate(0o600))
            .map_err(|e| errno_err(format!("create {}", self.shown(name)), e))?;
        Ok(File::from(fd))
    }

    /// Removes `name` (never a directory; a symlink itself, not its target).
    pub(crate) fn unlink(&self, name: &str) -> Result<()> {
        nix::unistd::unlinkat(&self.fd, name, nix::unistd::UnlinkatFlags::NoRemoveDir)
            .map_err(|e| errno_err(format!("remove {}", self.shown(name)), e))
    }

    /// Renames `from` over `to`, both in this folder.
    pub(crate) fn rename(&self, from: &str, to: &str) -> Result<()> {
        nix::fcntl::renameat(&self.fd, from, &self.fd, to)
            .map_err(|e| errno_err(format!("rename {} to {to}", self.shown(from)), e))
    }

    /// Makes creations, renames and removals in the folder durable.
    pub(crate) fn sync(&self) -> Result<()> {
        nix::unistd::fsync(self.fd.as_fd())
            .map_err(|e| errno_err(format!("fsync folder {}", self.path.display()), e))
    }

    /// The names in the folder that start with `prefix` (at most `limit` entries are looked
    /// at). Only names: every check is made when a file is opened.
    pub(crate) fn names_with_prefix(&self, prefix: &str, limit: u64) -> Result<Vec<String>> {
        let rd = std::fs::read_dir(&self.path)
            .map_err(|e| Error::io(format!("list {}", self.path.display()), e))?;
        let mut out = Vec::new();
        for (n, entry) in rd.enumerate() {
            if n as u64 >= limit {
                log::warn!(
                    "{}: more than {limit} entries; stopped looking for temporary files",
                    self.path.display()
                );
                break;
            }
            let Ok(entry) = entry else { continue };
            if let Some(s) = entry.file_name().to_str()
                && s.starts_with(prefix)
            {
                out.push(s.to_string());
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn rules_for(dir: &Path, name: &str) -> Rules {
        Rules::journal(&nix::sys::stat::stat(&dir.join(name)).unwrap())
    }

    #[test]
    fn own_private_file_is_trusted_and_others_are_named() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        std::fs::write(d.join("pkg"), b"p").unwrap();
        let rules = rules_for(d, "pkg");
        let folder = Folder::open(d).unwrap();
        std::fs::write(d.join("ok"), b"x").unwrap();
        std::fs::set_permissions(d.join("ok"), std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            folder.open_trusted("ok", &rules).unwrap(),
            Found::Trusted(_)
        ));
        assert!(matches!(
            folder.open_trusted("none", &rules).unwrap(),
            Found::Missing
        ));

        let untrusted = |name: &str| match folder.open_trusted(name, &rules).unwrap() {
            Found::Untrusted(rule) => rule,
            other => panic!("{name}: {other:?}"),
        };
        std::fs::write(d.join("loose"), b"x").unwrap();
        std::fs::set_permissions(d.join("loose"), std::fs::Permissions::from_mode(0o620)).unwrap();
        assert!(untrusted("loose").contains("writable by group or others"));
        std::fs::hard_link(d.join("ok"), d.join("linked")).unwrap();
        assert!(untrusted("linked").contains("2 hard links"));
        std::os::unix::fs::symlink(d.join("pkg"), d.join("sym")).unwrap();
        assert!(untrusted("sym").contains("symbolic link"));
        std::fs::create_dir(d.join("dir")).unwrap();
        assert!(untrusted("dir").contains("directory"));
        nix::unistd::mkfifo(&d.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        assert!(untrusted("fifo").contains("FIFO"));
    }

    #[test]
    fn temporaries_may_carry_the_packages_own_write_bits() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        std::fs::write(d.join("pkg"), b"p").unwrap();
        std::fs::set_permissions(d.join("pkg"), std::fs::Permissions::from_mode(0o664)).unwrap();
        std::fs::write(d.join("tmp"), b"x").unwrap();
        std::fs::set_permissions(d.join("tmp"), std::fs::Permissions::from_mode(0o664)).unwrap();
        let pkg = nix::sys::stat::stat(&d.join("pkg")).unwrap();
        let folder = Folder::open(d).unwrap();
        assert!(matches!(
            folder.open_trusted("tmp", &Rules::temporary(&pkg)).unwrap(),
            Found::Trusted(_)
        ));
        assert!(matches!(
            folder.open_trusted("tmp", &Rules::journal(&pkg)).unwrap(),
            Found::Untrusted(_)
        ));
    }
}
