//! The `ovafs` binary (also `mount.ovafs`): see `ovafs --help` and `man ovafs`.

fn main() {
    limit_malloc_arenas();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The daemon half of `ovafs mount` (started by the command itself, not by users).
    if args.get(1).is_some_and(|a| a == "__serve") {
        let config = args.get(2).and_then(|a| a.to_str()).unwrap_or("");
        std::process::exit(ovafs::cli::run_daemon(config));
    }
    std::process::exit(ovafs::cli::run(args));
}

/// Makes glibc use one malloc arena for every thread.
///
/// The read workers allocate decoded grains that other threads free when the LRU evicts
/// them. With glibc's default of one arena per thread (up to 8 per core) each arena keeps
/// its own freed chunks: during a sequential copy the daemon's peak resident memory was
/// the cache budget plus 30-40 MiB (15% more for large budgets). With one arena it is the
/// budget plus 16-18 MiB whatever the budget, at the same speed: the workers allocate a few
/// tens of thousands of grains per second, far too few to contend for the arena's lock
/// (measured by copying the `scripts/bench` disk, see BENCHMARKS.md). `MALLOC_ARENA_MAX` in the
/// environment still wins: glibc reads it before `main`, and we only lower the default.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes allocator tuning; it is called before any thread
        // exists, and a failure (return 0) just leaves the default in place.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
