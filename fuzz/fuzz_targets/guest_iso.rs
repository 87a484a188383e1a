//! ISO 9660 (Rock Ridge, Joliet, plain) over in-memory bytes: opening and walking the tree
//! (stat, read_dir, read_link, reads at the start and the end of each file) never panics and
//! ends; what a listing names, `stat` finds with the same kind (or fails, never panics); a
//! read is never longer than asked. A seed corpus: an image made by `xorriso -as mkisofs -R
//! -J` of a small tree.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use ovafs::guest::{self, EntryKind};
use ovafs::io::ReadAt;

/// Paths visited per input at most.
const MAX_NODES: usize = 2000;

fuzz_target!(|data: &[u8]| {
    let src: Arc<dyn ReadAt> = Arc::new(data.to_vec());
    if guest::probe(&*src) != Some("iso9660") {
        return;
    }
    let Ok(Some(fs)) = guest::open(src) else {
        return;
    };
    let mut todo: Vec<Vec<Vec<u8>>> = vec![vec![]];
    let mut seen = 0;
    let mut buf = vec![0u8; 5000];
    while let Some(path) = todo.pop() {
        seen += 1;
        if seen > MAX_NODES {
            break;
        }
        let Ok(stat) = fs.stat(&path) else {
            continue;
        };
        match stat.kind {
            EntryKind::Dir => {
                let Ok(entries) = fs.read_dir(&path) else {
                    continue;
                };
                for e in entries {
                    assert!(!e.name.is_empty() && e.name != b"." && e.name != b"..");
                    assert!(!e.name.contains(&b'/'));
                    let mut child = path.clone();
                    child.push(e.name);
                    if let Ok(s) = fs.stat(&child) {
                        assert_eq!(s.kind, e.kind, "read_dir and stat disagree");
                    }
                    todo.push(child);
                }
            }
            EntryKind::File => {
                for at in [0, stat.size.saturating_sub(3000), stat.size, u64::MAX - 2] {
                    if let Ok(n) = fs.read(&path, at, &mut buf) {
                        assert!(n <= buf.len());
                    }
                }
            }
            EntryKind::Symlink => {
                if let Ok(t) = fs.read_link(&path) {
                    assert!(t.len() <= 4096 + 2);
                }
            }
            EntryKind::Other => {}
        }
    }
});
