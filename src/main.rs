//! The `ovafs` binary (also `mount.ovafs`): see `ovafs --help` and `man ovafs`.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The daemon half of `ovafs mount` (started by the command itself, not by users).
    if args.get(1).is_some_and(|a| a == "__serve") {
        let config = args.get(2).and_then(|a| a.to_str()).unwrap_or("");
        std::process::exit(ovafs::cli::run_daemon(config));
    }
    std::process::exit(ovafs::cli::run(args));
}
