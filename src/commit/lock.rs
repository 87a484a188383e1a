//! The write lock on a package: an open-file-description lock (`F_OFD_SETLK`, `F_WRLCK`,
//! never waiting) on the package file (the `.ova`, or the `.ovf` of a folder).
//!
//! The lock covers one byte at [`LOCK_OFFSET`], far past the end of any file, not the whole
//! file: qemu's image locking takes read locks on bytes 100-299 of any image it opens, so a
//! whole-file write lock would make `qemu-img info x.ova` fail while x.ova is mounted. Every
//! ovafs locks the same byte, which is all an advisory lock between ovafs processes needs.
//!
//! A [`super::Committer`] holds it for its whole life, so a second writable mount of the same
//! package cannot get it and is mounted read-only, and recovery never replays a journal while
//! a live mount holds it (that journal may be the commit it is making). The lock belongs to
//! the open file description, not the process: two descriptions in one process conflict as
//! two processes do, and the lock goes when the holder's last descriptor closes (also when it
//! is killed). A commit that replaces the package file by rename locks the new file before the
//! rename, so the lock moves with the name.
//!
//! Why not `flock` on the folder (what ovafs used before): any user who can read a shared
//! folder can `flock` it and hold it forever, wedging every mount there.

use std::fs::File;
use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

use super::trust::{Folder, errno_err};
use crate::error::{Error, Result};

/// A held write lock on one package file.
#[derive(Debug)]
pub(super) struct PackageLock {
    /// A descriptor of the locked open file description, never read: kept open because
    /// closing it unlocks.
    _file: File,
    dev: u64,
    ino: u64,
}

/// The outcome of trying to lock a package.
#[derive(Debug)]
pub(super) enum Attempt {
    /// Ours until dropped.
    Locked(PackageLock),
    /// Another open file description (another mount, or a commit in progress) holds it.
    HeldElsewhere,
    /// The package cannot be opened for writing (permissions, read-only file system).
    CannotWrite(String),
}

/// The byte ovafs locks: "OVAFS" in ASCII followed by zeros, about 5.7 * 10^18, past the end
/// of any real file and clear of the low bytes other programs lock.
pub const LOCK_OFFSET: i64 = 0x4F56_4146_5300_0000;

/// How long a lock found held is retried before it counts as another description's
/// ([`PackageLock::try_on`]).
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_millis(250);

fn ovafs_write_lock() -> libc::flock {
    // One byte from LOCK_OFFSET (SEEK_SET); l_pid must be 0 for OFD locks.
    libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: LOCK_OFFSET,
        l_len: 1,
        l_pid: 0,
    }
}

impl PackageLock {
    /// Locks the file `file` is open on (it must be open for writing); `None` when another
    /// description holds the lock. The lock lives on a duplicate of `file`'s descriptor, so it
    /// stays while the caller reopens or drops `file`.
    ///
    /// A lock found held is retried for [`LOCK_GRACE`]: a lock released a moment ago can
    /// still be held for a few milliseconds, since the open file description lives on in any
    /// child that another thread of this process forked meanwhile, until that child calls
    /// exec (where O_CLOEXEC closes it). A live mount holds its lock for good, so the grace
    /// only delays the verdict for a second mount; it never changes it.
    pub(super) fn try_on(file: &File) -> Result<Option<PackageLock>> {
        let file = file
            .try_clone()
            .map_err(|e| Error::io("duplicate the package descriptor", e))?;
        let deadline = std::time::Instant::now() + LOCK_GRACE;
        while !Self::set_lock(&file)? {
            if std::time::Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let st = nix::sys::stat::fstat(&file).map_err(|e| errno_err("stat the package", e))?;
        Ok(Some(PackageLock {
            _file: file,
            dev: st.st_dev,
            ino: st.st_ino,
        }))
    }

    /// One `F_OFD_SETLK`: whether the lock was taken (false: another description holds it).
    fn set_lock(file: &File) -> Result<bool> {
        match nix::fcntl::fcntl(file.as_fd(), FcntlArg::F_OFD_SETLK(&ovafs_write_lock())) {
            Ok(_) => Ok(true),
            Err(Errno::EAGAIN | Errno::EACCES) => Ok(false),
            Err(e) => Err(errno_err("lock the package (F_OFD_SETLK)", e)),
        }
    }

    /// Whether this lock is on the file `st` describes.
    pub(super) fn covers(&self, st: &FileStat) -> bool {
        (self.dev, self.ino) == (st.st_dev, st.st_ino)
    }

    /// Whether this lock is on the file `meta` describes.
    pub(super) fn covers_meta(&self, meta: &std::fs::Metadata) -> bool {
        use std::os::unix::fs::MetadataExt;
        (self.dev, self.ino) == (meta.dev(), meta.ino())
    }

    /// Whether the name `name` in `folder` is (still) the locked file.
    pub(super) fn is_at(&self, folder: &Folder, name: &str) -> Result<bool> {
        Ok(folder.lstat(name)?.is_some_and(|st| self.covers(&st)))
    }
}

/// Opens `name` in `folder` for writing (never following a symlink, never blocking) and
/// locks it. Retries when the name was replaced between the open and the lock (a commit of
/// another mount renaming a new file over it), so the lock taken is on the file the name
/// holds.
pub(super) fn acquire(folder: &Folder, name: &str) -> Result<Attempt> {
    for _ in 0..8 {
        let flags = OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let file = match folder.openat(name, flags) {
            Ok(fd) => File::from(fd),
            Err(e @ (Errno::EACCES | Errno::EPERM | Errno::EROFS | Errno::ETXTBSY)) => {
                return Ok(Attempt::CannotWrite(format!(
                    "{} cannot be opened for writing: {}",
                    folder.shown(name),
                    e.desc()
                )));
            }
            Err(e) => {
                return Err(errno_err(format!("open {}", folder.shown(name)), e));
            }
        };
        let st = nix::sys::stat::fstat(&file).map_err(|e| errno_err("stat the package", e))?;
        if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFREG {
            return Ok(Attempt::CannotWrite(format!(
                "{} is not a regular file",
                folder.shown(name)
            )));
        }
        let Some(lock) = PackageLock::try_on(&file)? else {
            return Ok(Attempt::HeldElsewhere);
        };
        if lock.is_at(folder, name)? {
            return Ok(Attempt::Locked(lock));
        }
    }
    // The name keeps changing under us: someone is committing; act as if it were held.
    Ok(Attempt::HeldElsewhere)
}

impl Folder {
    /// `openat` of `name` with `flags` (mode 0: never creates).
    pub(super) fn openat(
        &self,
        name: &str,
        flags: OFlag,
    ) -> std::result::Result<std::os::fd::OwnedFd, Errno> {
        nix::fcntl::openat(self.fd(), name, flags, Mode::empty())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_second_description_cannot_lock_and_the_lock_follows_the_holder() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("p.ova"), b"x").unwrap();
        let folder = Folder::open(t.path()).unwrap();
        let Attempt::Locked(first) = acquire(&folder, "p.ova").unwrap() else {
            panic!("first lock refused");
        };
        assert!(matches!(
            acquire(&folder, "p.ova").unwrap(),
            Attempt::HeldElsewhere
        ));
        drop(first);
        assert!(matches!(
            acquire(&folder, "p.ova").unwrap(),
            Attempt::Locked(_)
        ));
    }
}
