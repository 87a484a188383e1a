//! Panic containment: a panic while answering one request fails that request with EIO and
//! nothing else.
//!
//! fuser runs the session loop on one thread and calls our [`Filesystem`] methods on it; a
//! panic that escaped a method would end that thread, and with it the mount (every later
//! access: "Transport endpoint is not connected"). [`Contained`] wraps a filesystem and runs
//! every method of the trait under [`contain`], and the read workers run every job under it
//! (see [`super::pool`]), so the worker threads never die.
//!
//! Why the reply is answered exactly once: each method owns its reply object and consumes it
//! when it answers. When the method panics before answering, unwinding drops the reply, and
//! fuser's `Drop` for replies sends EIO when (and only when) no answer was sent
//! (`fuser::reply::ReplyRaw`, which logs "Reply not sent for operation N, replying with I/O
//! error"). When it panics after answering, the drop sends nothing. No reply is ever taken
//! from the method, so none can be answered twice.
//!
//! Logging: the first panic is logged in full (where, what, a backtrace when
//! `RUST_BACKTRACE` asks for one); later ones are only counted, and the count is logged
//! when the filesystem is unmounted, so a request that panics every time cannot flood the
//! log. A panic on a thread that is not inside [`contain`] goes to the previous panic hook
//! as before.
//!
//! Locks held by a panicking request are poisoned. Every lock of the fs layer and of the
//! caches below it is taken with `unwrap_or_else(PoisonError::into_inner)`: the data they
//! guard stays consistent at every point a panic can occur (whole values are replaced, or a
//! stale counter at worst), see each lock's comment. The editor's state is the exception: a
//! panic inside a change may leave it half updated, so after one it refuses further changes
//! (see `Editor::state`).
//!
//! For tests, builds with debug assertions (cargo's dev profile, which the test suite
//! uses) read `OVAFS_TEST_PANIC_ON` once: a comma-separated list of `OP[*COUNT]:PATH`
//! (`read:disks/a.raw`, `read*3:disks/a.raw`, `lookup:vm`), each making the first COUNT
//! (default 1) requests of that kind for that path panic. `read` is the read worker's job
//! for a static file (PATH its path in the mount), `lookup` the session thread's lookup of a
//! name (PATH the name looked up). Release builds compile the hook out: no environment
//! variable can make them panic.

use std::cell::Cell;
use std::ffi::OsStr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, FileHandle, Filesystem, INodeNo, IoctlFlags,
    KernelConfig, LockOwner, OpenFlags, PollEvents, PollFlags, PollNotifier, RenameFlags,
    ReplyAttr, ReplyBmap, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyIoctl, ReplyLock, ReplyLseek, ReplyOpen, ReplyPoll, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

/// Panics caught since the process started.
static CAUGHT: AtomicU64 = AtomicU64::new(0);

/// Installs the panic hook once.
static HOOK: Once = Once::new();

thread_local! {
    /// The operation this thread is running under [`contain`], if any.
    static CURRENT_OP: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// Runs `f` (the handling of one `op` request); a panic inside it is caught, logged once
/// per process (later ones counted) and turned into `None`.
pub fn contain<R>(op: &'static str, f: impl FnOnce() -> R) -> Option<R> {
    install_hook();
    let outer = CURRENT_OP.with(|c| c.replace(Some(op)));
    let result = catch_unwind(AssertUnwindSafe(f));
    CURRENT_OP.with(|c| c.set(outer));
    result.ok()
}

/// Panics caught so far in this process.
pub fn caught_panics() -> u64 {
    CAUGHT.load(Ordering::Relaxed)
}

fn install_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| match CURRENT_OP.with(Cell::get) {
            Some(op) => note_panic(op, info),
            None => previous(info),
        }));
    });
}

/// Logs the first contained panic in full; counts the others.
fn note_panic(op: &str, info: &std::panic::PanicHookInfo<'_>) {
    let n = CAUGHT.fetch_add(1, Ordering::Relaxed) + 1;
    if n > 1 {
        return;
    }
    let message = info
        .payload()
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    let location = info
        .location()
        .map(|l| format!("{}:{}", l.file(), l.line()))
        .unwrap_or_default();
    let backtrace = std::backtrace::Backtrace::capture();
    let backtrace = match backtrace.status() {
        std::backtrace::BacktraceStatus::Captured => format!("\n{backtrace}"),
        _ => String::new(),
    };
    log::error!(
        "internal error: {op} panicked at {location}: {message}; that request failed with \
         EIO and the mount goes on (later panics are counted, not logged){backtrace}"
    );
}

/// Reads `OVAFS_TEST_PANIC_ON` now rather than at the first request (debug builds only).
pub fn init_test_hook() {
    #[cfg(debug_assertions)]
    let _ = test_hook::rules();
}

/// Panics if `OVAFS_TEST_PANIC_ON` asks for a panic at this `op` on the path `path()`
/// names. Does nothing (and never calls `path`) in release builds or when the variable is
/// unset.
#[inline]
pub fn test_panic_point(op: &str, path: impl FnOnce() -> String) {
    #[cfg(debug_assertions)]
    test_hook::check(op, path);
    #[cfg(not(debug_assertions))]
    let _ = (op, path);
}

#[cfg(debug_assertions)]
mod test_hook {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    pub(super) struct Rule {
        op: String,
        path: String,
        remaining: AtomicU64,
    }

    pub(super) fn rules() -> &'static [Rule] {
        static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
        RULES.get_or_init(|| {
            std::env::var("OVAFS_TEST_PANIC_ON")
                .map(|v| parse(&v))
                .unwrap_or_default()
        })
    }

    /// `OP[*COUNT]:PATH`, comma-separated; malformed items are ignored.
    pub(super) fn parse(spec: &str) -> Vec<Rule> {
        spec.split(',')
            .filter_map(|item| {
                let (what, path) = item.split_once(':')?;
                let (op, count) = match what.split_once('*') {
                    Some((op, n)) => (op, n.parse().ok()?),
                    None => (what, 1),
                };
                Some(Rule {
                    op: op.to_string(),
                    path: path.to_string(),
                    remaining: AtomicU64::new(count),
                })
            })
            .collect()
    }

    pub(super) fn check(op: &str, path: impl FnOnce() -> String) {
        let rules = rules();
        if !rules.iter().any(|r| r.op == op) {
            return;
        }
        let path = path();
        for r in rules.iter().filter(|r| r.op == op && r.path == path) {
            let take = r
                .remaining
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            if take.is_ok() {
                panic!("OVAFS_TEST_PANIC_ON: injected panic in {op} of {path}");
            }
        }
    }
}

/// A filesystem whose every method runs under [`contain`]. Every method of the trait is
/// forwarded, so whatever the inner filesystem implements keeps working, and what it does
/// not keeps fuser's default answer.
pub struct Contained<F>(F);

impl<F: Filesystem> Contained<F> {
    /// Wraps `fs`.
    pub fn new(fs: F) -> Self {
        install_hook();
        init_test_hook();
        Contained(fs)
    }
}

/// Forwards each listed method to the inner filesystem under [`contain`].
macro_rules! forward {
    ($( fn $name:ident(&self $(, $arg:ident : $ty:ty)* $(,)?); )*) => {
        $(
            #[allow(clippy::too_many_arguments)]
            fn $name(&self $(, $arg: $ty)*) {
                contain(stringify!($name), || self.0.$name($($arg),*));
            }
        )*
    };
}

impl<F: Filesystem> Filesystem for Contained<F> {
    fn init(&mut self, req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        contain("init", || self.0.init(req, config))
            .unwrap_or_else(|| Err(std::io::Error::other("the filesystem panicked in init")))
    }

    fn destroy(&mut self) {
        contain("destroy", || self.0.destroy());
        let n = caught_panics();
        if n > 1 {
            log::error!("{n} panics were caught while mounted (the first one is logged above)");
        }
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        contain("lookup", || {
            test_panic_point("lookup", || name.to_string_lossy().into_owned());
            self.0.lookup(req, parent, name, reply)
        });
    }

    // `batch_forget` is left to its default, which calls `forget` for each node: its
    // argument type is private to fuser, so no filesystem can override it.
    forward! {
        fn forget(&self, req: &Request, ino: INodeNo, nlookup: u64);
        fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr);
        fn setattr(
            &self,
            req: &Request,
            ino: INodeNo,
            mode: Option<u32>,
            uid: Option<u32>,
            gid: Option<u32>,
            size: Option<u64>,
            atime: Option<TimeOrNow>,
            mtime: Option<TimeOrNow>,
            ctime: Option<SystemTime>,
            fh: Option<FileHandle>,
            crtime: Option<SystemTime>,
            chgtime: Option<SystemTime>,
            bkuptime: Option<SystemTime>,
            flags: Option<BsdFileFlags>,
            reply: ReplyAttr,
        );
        fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData);
        fn mknod(
            &self,
            req: &Request,
            parent: INodeNo,
            name: &OsStr,
            mode: u32,
            umask: u32,
            rdev: u32,
            reply: ReplyEntry,
        );
        fn mkdir(
            &self,
            req: &Request,
            parent: INodeNo,
            name: &OsStr,
            mode: u32,
            umask: u32,
            reply: ReplyEntry,
        );
        fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty);
        fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty);
        fn symlink(
            &self,
            req: &Request,
            parent: INodeNo,
            link_name: &OsStr,
            target: &Path,
            reply: ReplyEntry,
        );
        fn rename(
            &self,
            req: &Request,
            parent: INodeNo,
            name: &OsStr,
            newparent: INodeNo,
            newname: &OsStr,
            flags: RenameFlags,
            reply: ReplyEmpty,
        );
        fn link(
            &self,
            req: &Request,
            ino: INodeNo,
            newparent: INodeNo,
            newname: &OsStr,
            reply: ReplyEntry,
        );
        fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen);
        fn read(
            &self,
            req: &Request,
            ino: INodeNo,
            fh: FileHandle,
            offset: u64,
            size: u32,
            flags: OpenFlags,
            lock_owner: Option<LockOwner>,
            reply: ReplyData,
        );
        fn write(
            &self,
            req: &Request,
            ino: INodeNo,
            fh: FileHandle,
            offset: u64,
            data: &[u8],
            write_flags: WriteFlags,
            flags: OpenFlags,
            lock_owner: Option<LockOwner>,
            reply: ReplyWrite,
        );
        fn flush(
            &self,
            req: &Request,
            ino: INodeNo,
            fh: FileHandle,
            lock_owner: LockOwner,
            reply: ReplyEmpty,
        );
        fn release(
            &self,
            req: &Request,
            ino: INodeNo,
            fh: FileHandle,
            flags: OpenFlags,
            lock_owner: Option<LockOwner>,
            flush: bool,
            reply: ReplyEmpty,
        );
        fn fsync(&self, req: &Request, ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty);
        fn opendir(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen);
        fn readdir(
            &self,
            req: &Request,
            ino: INodeNo,
            fh: FileHandle,
            offset: u64,
            reply: ReplyDirectory,
        );
        fn readdirplus(
            &self,
            req: &Request,
            ino: INodeNo,
            fh: FileHandle,
            offset: u64,
            reply: ReplyDirectoryPlus,
        );
        fn releasedir(
            &self,
            req: &Request,
            ino: INodeNo,
            fh: FileHandle,
            flags: OpenFlags,
            reply: ReplyEmpty,
        );
        fn fsyncdir(
            &self,
            req: &Request,
            ino: INodeNo,
            fh: FileHandle,
            datasync: bool,
            reply: ReplyEmpty,
        );
        fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs);
        fn setxattr(
            &self,
            req: &Request,
            ino: INodeNo,
            name: &OsStr,
            value: &[u8],
            flags: i32,
            position: u32,
            reply: ReplyEmpty,
        );
        fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr);
        fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr);
        fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty);
        fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty);
        fn create(
            &self,
            req: &Request,
            parent: INodeNo,
            name: &OsStr,
            mode: u32,
            umask: u32,
            flags: i32,
            reply: ReplyCreate,
        );
        fn getlk(
            &self,
            req: &Request,
            ino: INodeNo,
            fh: FileHandle,
            lock_owner: LockOwner,
            start: u64,
            end: u64,
            typ: i32,
            pid: u32,
            reply: ReplyLock,
        );
        fn setlk(
            &self,
            req: &Request,
            ino: INodeNo,
            fh: FileHandle,
            lock_owner: LockOwner,
            start: u64,
            end: u64,
            typ: i32,
            pid: u32,
            sleep: bool,
            reply: ReplyEmpty,
        );
        fn bmap(&self, req: &Request, ino: INodeNo, blocksize: u32, idx: u64, reply: ReplyBmap);
        fn ioctl(
            &self,
            req: &Request,
            ino: INodeNo,
            fh: FileHandle,
            flags: IoctlFlags,
            cmd: u32,
            in_data: &[u8],
            out_size: u32,
            reply: ReplyIoctl,
        );
        fn poll(
            &self,
            req: &Request,
            ino: INodeNo,
            fh: FileHandle,
            ph: PollNotifier,
            events: PollEvents,
            flags: PollFlags,
            reply: ReplyPoll,
        );
        fn fallocate(
            &self,
            req: &Request,
            ino: INodeNo,
            fh: FileHandle,
            offset: u64,
            length: u64,
            mode: i32,
            reply: ReplyEmpty,
        );
        fn lseek(
            &self,
            req: &Request,
            ino: INodeNo,
            fh: FileHandle,
            offset: i64,
            whence: i32,
            reply: ReplyLseek,
        );
        fn copy_file_range(
            &self,
            req: &Request,
            ino_in: INodeNo,
            fh_in: FileHandle,
            offset_in: u64,
            ino_out: INodeNo,
            fh_out: FileHandle,
            offset_out: u64,
            len: u64,
            flags: CopyFileRangeFlags,
            reply: ReplyWrite,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_none_and_is_counted() {
        let before = caught_panics();
        assert_eq!(contain("test", || 7), Some(7));
        let r: Option<()> = contain("test", || panic!("boom"));
        assert_eq!(r, None);
        assert!(caught_panics() > before);
    }

    #[test]
    fn the_thread_goes_on_after_a_contained_panic() {
        let t = std::thread::spawn(|| {
            let first = contain("test", || -> u32 { panic!("first") });
            let second = contain("test", || 2);
            (first, second)
        });
        assert_eq!(t.join().unwrap(), (None, Some(2)));
    }

    #[test]
    fn a_panic_outside_contain_still_reaches_the_caller() {
        install_hook();
        let r = std::thread::spawn(|| panic!("not contained")).join();
        assert!(r.is_err());
    }

    #[test]
    fn a_poisoned_lock_is_taken_over() {
        let m = std::sync::Mutex::new(1);
        let _ = contain("test", || {
            let _g = m.lock().unwrap();
            panic!("while holding the lock")
        });
        assert!(m.is_poisoned());
        assert_eq!(*m.lock().unwrap_or_else(|p| p.into_inner()), 1);
    }

    #[cfg(debug_assertions)]
    #[test]
    fn test_hook_spec_parses_counts_and_ignores_garbage() {
        let rules = test_hook::parse("read:disks/a.raw,lookup*3:vm,garbage,read*x:y");
        assert_eq!(rules.len(), 2);
    }
}
