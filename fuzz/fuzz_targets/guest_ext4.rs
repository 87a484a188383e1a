//! ext2/3/4 (`guest::ext4`) over in-memory bytes: `open`, then a walk of the tree from the
//! root with bounds (entries, depth, bytes read), `stat`, `read` (at the start, in the
//! middle, at the end) and `read_link` of everything listed. Checks: nothing panics; a
//! read returns at most the bytes asked and never past the size `stat` gave; a link target
//! is at most 4096 bytes; a listing has no `.`, `..`, empty or `/`-holding name.
//!
//! The reader is ovafs's own and must not panic on any input (no `catch_unwind` anywhere):
//! a panic is a crash here. Seeds: small `mkfs.ext4 -d` images (with and without
//! `metadata_csum`, `inline_data`, ext2 block maps).
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use ovafs::guest::{self, EntryKind, GuestFs};
use ovafs::io::ReadAt;

/// Entries visited per input at most.
const MAX_ENTRIES: usize = 256;
/// Deepest directory visited.
const MAX_DEPTH: usize = 8;
/// Bytes asked per read.
const READ: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let src: Arc<dyn ReadAt> = Arc::new(data.to_vec());
    if !guest::ext4::probe(&*src) {
        return;
    }
    let Ok(fs) = guest::ext4::open(src) else {
        return;
    };
    let mut budget = MAX_ENTRIES;
    walk(&*fs, &mut Vec::new(), &mut budget);
});

/// Visits directory `dir` and what it holds, depth first, within `budget` entries.
fn walk(fs: &dyn GuestFs, dir: &mut Vec<Vec<u8>>, budget: &mut usize) {
    let Ok(entries) = fs.read_dir(dir) else {
        return;
    };
    for e in entries {
        assert!(!e.name.is_empty() && e.name != b"." && e.name != b"..");
        assert!(!e.name.contains(&b'/'));
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        dir.push(e.name);
        visit(fs, dir, e.kind, budget);
        dir.pop();
    }
}

/// Looks at one entry `path` of kind `kind` (as listed).
fn visit(fs: &dyn GuestFs, path: &mut Vec<Vec<u8>>, kind: EntryKind, budget: &mut usize) {
    let size = fs.stat(path).ok().map(|st| st.size);
    match kind {
        EntryKind::Dir if path.len() < MAX_DEPTH => walk(fs, path, budget),
        EntryKind::File => {
            let mut buf = vec![0u8; READ];
            let size = size.unwrap_or(0);
            for offset in [0, size / 2, size.saturating_sub(10)] {
                if let Ok(n) = fs.read(path, offset, &mut buf) {
                    assert!(n <= READ);
                    assert!(offset.saturating_add(n as u64) <= size.max(offset));
                }
            }
        }
        EntryKind::Symlink => {
            if let Ok(target) = fs.read_link(path) {
                assert!(target.len() <= 4096);
            }
        }
        _ => {}
    }
}
