//! The NTFS reader (src/guest/ntfs) over in-memory bytes: probing never panics, and neither
//! does opening or walking what it opens (every folder listed, every entry stat'ed, every
//! file read at its start and at an offset chosen by the input, every link's target read), nor does the file system
//! report a panic of the ntfs crate (`Failed`): every corrupt input is an ordinary error. The walk
//! is bounded (entries and folders visited) so that one input stays fast.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use ovafs::guest::{self, EntryKind, GuestFs, ntfs::NtfsFsError};
use ovafs::io::ReadAt;

/// Entries visited per input at most.
const MAX_VISITS: usize = 2000;

fuzz_target!(|data: &[u8]| {
    let src: Arc<dyn ReadAt> = Arc::new(data.to_vec());
    if !guest::ntfs::probe(&*src) {
        return;
    }
    let Ok(fs) = guest::ntfs::open(src) else {
        return;
    };
    let tail = data.iter().rev().take(4).fold(0u64, |a, &b| (a << 8) | u64::from(b));
    walk(&*fs, tail);
});

/// Lists, stats and reads everything reachable, asserting no request reports a panic.
fn walk(fs: &dyn GuestFs, tail: u64) {
    let mut todo: Vec<Vec<Vec<u8>>> = vec![Vec::new()];
    let mut visits = 0;
    let mut buf = vec![0u8; 8192];
    while let Some(dir) = todo.pop() {
        let entries = match fs.read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => return not_failed(&e),
        };
        for entry in entries {
            visits += 1;
            if visits > MAX_VISITS {
                return;
            }
            let mut path = dir.clone();
            path.push(entry.name);
            let stat = match fs.stat(&path) {
                Ok(stat) => stat,
                Err(e) => {
                    not_failed(&e);
                    continue;
                }
            };
            match entry.kind {
                EntryKind::Dir => todo.push(path),
                EntryKind::Symlink => {
                    if let Err(e) = fs.read_link(&path) {
                        not_failed(&e);
                    }
                }
                _ => {
                    for offset in [0, tail % stat.size.max(1)] {
                        if let Err(e) = fs.read(&path, offset, &mut buf) {
                            not_failed(&e);
                        }
                    }
                }
            }
        }
    }
}

/// Panics (a finding) when `e` says the reader panicked.
fn not_failed(e: &ovafs::error::Error) {
    assert!(
        !matches!(e.layer_error::<NtfsFsError>(), Some(NtfsFsError::Failed)),
        "the ntfs crate panicked: {e}"
    );
}
