//! Reading a whole guest file system through `ovafs::guest::GuestFs`, for the tests that
//! compare it with what the file system's own tools say (mtools, ntfs-3g's tools).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use ovafs::guest::{self, EntryKind, GuestFs, GuestStat};
use ovafs::io::ReadAt;

/// Bytes asked per read: odd, so that reads straddle clusters and runs.
const CHUNK: usize = 50_001;

/// The components of `/a/b` (the root: none).
pub fn components(path: &str) -> Vec<Vec<u8>> {
    path.split('/')
        .filter(|c| !c.is_empty())
        .map(|c| c.as_bytes().to_vec())
        .collect()
}

/// The image at `path`, whole in memory, as a source.
pub fn image_source(path: &Path) -> Arc<dyn ReadAt> {
    Arc::new(std::fs::read(path).unwrap())
}

/// Opens the file system of the image at `path`, asserting its kind.
pub fn open_image(path: &Path, kind: &str) -> Arc<dyn GuestFs> {
    let source = image_source(path);
    assert_eq!(guest::probe(&*source), Some(kind), "{}", path.display());
    guest::open(source).unwrap().unwrap()
}

/// Every path below the root (`/a`, `/a/b`) with its stat, each directory's entries
/// checked to agree with the stat of each entry.
pub fn walk(fs: &dyn GuestFs) -> BTreeMap<String, GuestStat> {
    let mut out = BTreeMap::new();
    let mut todo = vec![String::new()];
    while let Some(dir) = todo.pop() {
        for entry in fs.read_dir(&components(&dir)).unwrap() {
            let name = String::from_utf8(entry.name.clone()).unwrap();
            let path = format!("{dir}/{name}");
            let stat = fs.stat(&components(&path)).unwrap();
            assert_eq!(stat.kind, entry.kind, "{path}");
            if entry.kind == EntryKind::Dir {
                todo.push(path.clone());
            }
            assert!(
                out.insert(path.clone(), stat).is_none(),
                "{path} listed twice"
            );
        }
    }
    out
}

/// The whole of regular file `path`, read in [`CHUNK`]s; its length checked against its
/// stat and a read past the end checked to give nothing.
pub fn read_all(fs: &dyn GuestFs, path: &str) -> Vec<u8> {
    let c = components(path);
    let size = fs.stat(&c).unwrap().size;
    let mut data = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = fs.read(&c, data.len() as u64, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
    }
    assert_eq!(data.len() as u64, size, "{path}");
    assert_eq!(fs.read(&c, size + 1, &mut buf).unwrap(), 0, "{path}");
    data
}
