//! ISO 9660 (CD and DVD images, ECMA-119) with Rock Ridge and Joliet, read by ovafs itself.
//!
//! No crate fit (see /work/notes/i12/iso.md): the format is small, so this is a parser of
//! its own over [`ReadAt`], `Send + Sync` without a thread. The tree read is the one Linux
//! mounts by default: the primary tree with Rock Ridge names and attributes when its root
//! carries the SUSP `SP` marker, else the Joliet tree when there is one, else the plain
//! primary tree (names without their `;1` version and trailing dot, case kept).
//!
//! Bounds on what the image claims: directory extents inside the image and at most
//! [`dir::MAX_DIR_BYTES`] long, at most [`MAX_DIR_ENTRIES`] entries, records inside their
//! block, continuation chains of at most 32 areas, paths of at most [`MAX_DEPTH`]
//! components, and no directory reached from inside itself (an extent that points back at
//! an ancestor is refused when walked into). Listings are cached ([`CACHED_DIRS`]).

mod dir;
mod susp;
mod time;
mod volume;

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};

use lru::LruCache;

use crate::error::{Error, ErrorKind, Refusal, Result};
use crate::guest::{EntryKind, GuestEntry, GuestFs, GuestStat};
use crate::io::ReadAt;

use dir::{Data, Listing, Names, Node, Tree};

pub use volume::probe;

/// Directory listings kept (by the byte offset of their extent)...
const CACHED_DIRS: usize = 256;
/// ...holding this many entries in all at most: directories of a hostile image may overlap
/// at many offsets, each a listing of a million entries.
const CACHED_ENTRIES: usize = 1 << 20;
/// Most components of a path walked (a path within Linux's `PATH_MAX`).
pub const MAX_DEPTH: usize = 2048;

/// What goes wrong reading an ISO 9660 image, besides a missing path or a wrong kind
/// (those are [`Refusal`]s).
#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    /// No `CD001` at sector 16.
    #[error("not an ISO 9660 image (no volume descriptor at sector 16)")]
    NotIso,
    /// Descriptors, but none is the primary one.
    #[error("ISO 9660: no primary volume descriptor")]
    NoPrimary,
    /// A structure of the image is impossible.
    #[error("ISO 9660: corrupt image: {0}")]
    Corrupt(&'static str),
    /// A directory is reached from inside itself.
    #[error("ISO 9660: corrupt image: a directory contains itself")]
    Cycle,
    /// A file whose data ovafs does not decode.
    #[error("ISO 9660: cannot read a {0}")]
    Unsupported(&'static str),
}

impl From<IsoError> for Error {
    fn from(e: IsoError) -> Self {
        Error::layer(e)
    }
}

/// Opens the ISO 9660 image in `source` (its descriptors and root are read now, directories
/// when asked).
pub fn open(source: Arc<dyn ReadAt>) -> Result<Arc<dyn GuestFs>> {
    Ok(Arc::new(IsoFs::open(source)?))
}

/// One opened ISO 9660 image.
pub struct IsoFs {
    source: Arc<dyn ReadAt>,
    tree: Tree,
    root: Arc<Node>,
    /// Listings by directory extent offset.
    dirs: Mutex<DirCache>,
}

/// The listings kept, and how many entries they hold.
struct DirCache {
    lru: LruCache<u64, Arc<Listing>>,
    entries: usize,
}

impl DirCache {
    /// Keeps `listing`, dropping the least recently used ones beyond [`CACHED_ENTRIES`]; a
    /// listing larger than that alone is not kept.
    fn put(&mut self, start: u64, listing: Arc<Listing>) {
        let n = listing.entries.len();
        if n > CACHED_ENTRIES {
            return;
        }
        if let Some(old) = self.lru.pop(&start) {
            self.entries = self.entries.saturating_sub(old.entries.len());
        }
        while self.entries + n > CACHED_ENTRIES || self.lru.len() == self.lru.cap().get() {
            let Some((_, old)) = self.lru.pop_lru() else {
                break;
            };
            self.entries = self.entries.saturating_sub(old.entries.len());
        }
        self.entries += n;
        self.lru.put(start, listing);
    }
}

impl IsoFs {
    /// Reads the descriptors and chooses the tree (Rock Ridge, Joliet, plain).
    pub fn open(source: Arc<dyn ReadAt>) -> Result<IsoFs> {
        let vol = volume::read(&*source)?;
        let block_size = vol.block_size;
        let plain = Tree {
            block_size,
            names: Names::Plain,
        };
        let primary_dot = root_dot(&*source, &plain, &vol.primary_root)?;
        // The root's two records are read like one directory's.
        let mut budget = dir::MAX_CE_PER_DIR;
        let sp = dir::record(&primary_dot)?
            .rock_ridge(
                &*source,
                &Tree {
                    block_size,
                    names: Names::RockRidge { skip: 0 },
                },
                &mut budget,
            )
            .ok()
            .and_then(|rr| rr.sp_skip);
        let (tree, dot) = match (sp, vol.joliet_root) {
            (Some(skip), _) => (
                Tree {
                    block_size,
                    names: Names::RockRidge { skip },
                },
                primary_dot,
            ),
            (None, Some(joliet)) => {
                let tree = Tree {
                    block_size,
                    names: Names::Joliet,
                };
                let dot = root_dot(&*source, &tree, &joliet)?;
                (tree, dot)
            }
            (None, None) => (plain, primary_dot),
        };
        let rec = dir::record(&dot)?;
        let rr = rec.rock_ridge(&*source, &tree, &mut budget)?;
        let root = dir::node(&*source, &tree, &rec, &rr)?;
        if root.stat.kind != EntryKind::Dir {
            return Err(IsoError::Corrupt("the root is not a directory").into());
        }
        Ok(IsoFs {
            source,
            tree,
            root: Arc::new(root),
            dirs: Mutex::new(DirCache {
                lru: LruCache::new(NonZeroUsize::new(CACHED_DIRS).unwrap_or(NonZeroUsize::MIN)),
                entries: 0,
            }),
        })
    }

    /// Which tree is read: `"rock ridge"`, `"joliet"` or `"iso9660"`.
    pub fn naming(&self) -> &'static str {
        match self.tree.names {
            Names::RockRidge { .. } => "rock ridge",
            Names::Joliet => "joliet",
            Names::Plain => "iso9660",
        }
    }

    /// The listing of the directory of `len` bytes at `start`, cached.
    fn listing(&self, start: u64, len: u64) -> Result<Arc<Listing>> {
        let cached = self
            .dirs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .lru
            .get(&start)
            .cloned();
        if let Some(l) = cached {
            return Ok(l);
        }
        // Read unlocked: other requests go on meanwhile (two may read the same one).
        let listing = Arc::new(dir::list(&*self.source, &self.tree, start, len)?);
        self.dirs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .put(start, listing.clone());
        Ok(listing)
    }

    /// The node at `path`, walked from the root without following links.
    fn lookup(&self, path: &[Vec<u8>]) -> Result<Arc<Node>> {
        if path.len() > MAX_DEPTH {
            return Err(ErrorKind::LimitExceeded {
                what: "ISO 9660 path components",
                value: path.len() as u64,
                limit: MAX_DEPTH as u64,
            }
            .into());
        }
        let mut node = self.root.clone();
        let mut ancestors = std::collections::HashSet::new();
        for (i, c) in path.iter().enumerate() {
            if c.is_empty() || c == b"." || c == b".." || c.contains(&b'/') || c.contains(&0) {
                return Err(refused(path, Refusal::InvalidArgument));
            }
            let Data::Dir { start, len } = node.data else {
                return Err(refused(&path[..i], Refusal::NotAFolder));
            };
            ancestors.insert(start);
            let listing = self.listing(start, len)?;
            let child = listing
                .get(c)
                .ok_or_else(|| refused(&path[..=i], Refusal::NotFound))?
                .clone();
            if let Data::Dir { start, .. } = child.data
                && ancestors.contains(&start)
            {
                return Err(IsoError::Cycle.into());
            }
            node = child;
        }
        Ok(node)
    }
}

impl GuestFs for IsoFs {
    fn type_name(&self) -> &'static str {
        "iso9660"
    }

    fn stat(&self, path: &[Vec<u8>]) -> Result<GuestStat> {
        Ok(self.lookup(path)?.stat.clone())
    }

    fn read_dir(&self, path: &[Vec<u8>]) -> Result<Vec<GuestEntry>> {
        let node = self.lookup(path)?;
        let Data::Dir { start, len } = node.data else {
            return Err(refused(path, Refusal::NotAFolder));
        };
        let listing = self.listing(start, len)?;
        Ok(listing
            .entries
            .iter()
            .map(|(name, n)| GuestEntry {
                name: name.clone(),
                kind: n.stat.kind,
            })
            .collect())
    }

    fn read(&self, path: &[Vec<u8>], offset: u64, buf: &mut [u8]) -> Result<usize> {
        let node = self.lookup(path)?;
        match &node.data {
            Data::File {
                unreadable: Some(what),
                ..
            } => Err(IsoError::Unsupported(what).into()),
            Data::File { sections, .. } => read_sections(&*self.source, sections, offset, buf),
            Data::Dir { .. } => Err(refused(path, Refusal::IsAFolder)),
            _ => Err(refused(path, Refusal::InvalidArgument)),
        }
    }

    fn read_link(&self, path: &[Vec<u8>]) -> Result<Vec<u8>> {
        match &self.lookup(path)?.data {
            Data::Link(target) => Ok(target.clone()),
            _ => Err(refused(path, Refusal::InvalidArgument)),
        }
    }
}

/// The `.` record of the root directory whose descriptor record is `root`.
fn root_dot(source: &dyn ReadAt, tree: &Tree, root: &[u8]) -> Result<Vec<u8>> {
    let rec = dir::record(root)?;
    let node = dir::node(source, tree, &rec, &Default::default())?;
    let Data::Dir { start, .. } = node.data else {
        return Err(IsoError::Corrupt("the root is not a directory").into());
    };
    dir::first_record(source, start)
}

/// Reads the file of `sections` (byte ranges of `source`, in order) at `offset`; short only
/// at its end.
fn read_sections(
    source: &dyn ReadAt,
    sections: &[(u64, u64)],
    offset: u64,
    buf: &mut [u8],
) -> Result<usize> {
    let mut done = 0usize;
    let mut section_offset = 0u64; // Of the current section in the file.
    for &(start, len) in sections {
        let Some(end) = section_offset.checked_add(len) else {
            return Err(IsoError::Corrupt("file size").into());
        };
        let pos = offset + done as u64;
        if done < buf.len() && pos < end {
            let within = pos.saturating_sub(section_offset);
            let n = usize::try_from(len - within)
                .unwrap_or(usize::MAX)
                .min(buf.len() - done);
            let at = start
                .checked_add(within)
                .ok_or(IsoError::Corrupt("file section offset"))?;
            if at.checked_add(n as u64).is_none_or(|e| e > source.len()) {
                return Err(IsoError::Corrupt("file data past the end of the image").into());
            }
            source.read_exact_at(at, &mut buf[done..done + n])?;
            done += n;
        }
        section_offset = end;
    }
    Ok(done)
}

/// The refusal `reason` for `path`.
fn refused(path: &[Vec<u8>], reason: Refusal) -> Error {
    let shown: Vec<String> = path
        .iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    Error::refused(format!("/{}", shown.join("/")), reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(n: usize) -> Arc<Listing> {
        let node = Arc::new(Node {
            stat: GuestStat {
                kind: EntryKind::File,
                size: 0,
                mode: 0,
                uid: 0,
                gid: 0,
                mtime: std::time::SystemTime::UNIX_EPOCH,
                nlink: 1,
            },
            data: Data::Other,
        });
        let mut l = Listing::default();
        l.entries = vec![(Vec::new(), node); n];
        Arc::new(l)
    }

    #[test]
    fn the_cache_holds_a_bounded_number_of_entries() {
        let mut c = DirCache {
            lru: LruCache::new(NonZeroUsize::new(3).unwrap()),
            entries: 0,
        };
        c.put(1, listing(CACHED_ENTRIES / 2));
        c.put(2, listing(CACHED_ENTRIES / 2));
        c.put(3, listing(10));
        assert_eq!(c.entries, CACHED_ENTRIES / 2 + 10);
        assert!(c.lru.get(&1).is_none() && c.lru.get(&2).is_some());
        c.put(3, listing(20));
        assert_eq!(c.entries, CACHED_ENTRIES / 2 + 20);
        c.put(4, listing(1));
        c.put(5, listing(1));
        assert_eq!(c.lru.len(), 3);
        assert_eq!(c.entries, 22);
        c.put(6, listing(CACHED_ENTRIES + 1));
        assert!(c.lru.get(&6).is_none());
    }

    #[test]
    fn reads_cross_file_sections() {
        let image = b"abcdXXXXXXefghYY".to_vec();
        let sections = [(0, 4), (10, 4)];
        let mut buf = [0u8; 4];
        assert_eq!(read_sections(&image, &sections, 2, &mut buf).unwrap(), 4);
        assert_eq!(&buf, b"cdef");
        let mut buf = [0u8; 10];
        assert_eq!(read_sections(&image, &sections, 5, &mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"fgh");
        assert_eq!(read_sections(&image, &sections, 8, &mut buf).unwrap(), 0);
        assert_eq!(
            read_sections(&image, &sections, u64::MAX, &mut buf).unwrap(),
            0
        );
        // A section past the image's end is an error, not a short read.
        assert!(read_sections(&image, &[(12, 10)], 0, &mut buf).is_err());
    }
}
