//! One writable disk: its flat image (the base) and its copy-on-write overlay, as
//! `node::written_disk::WrittenDiskFile` serves it ([`WritableDisk`]).
//!
//! The overlay is made at the first change, so a mount that only reads leaves nothing beside
//! the package. Every read and write holds the disk's state shared; a commit holds it
//! exclusively while it encodes the disk and replaces the package, then swaps in the new
//! base (the committed member) with no overlay, so no request ever sees a base and an
//! overlay that do not belong together.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use nix::sys::stat::FileStat;

use crate::cache::UnitCache;
use crate::disk::DiskFormat;
use crate::disk::engine::FlatDisk;
use crate::error::{Error, Refusal, Result};
use crate::io::ReadAt;
use crate::node::Background;
use crate::node::written_disk::WritableDisk;
use crate::overlay::journal::BLOCK_BYTES;
use crate::overlay::{self, Identity, Location, Overlay, OverlayError, OverlayOptions, Whence};

/// What a disk is, as the package stores it.
pub struct DiskSource {
    /// The Disk's `ovf:diskId`.
    pub disk_id: String,
    /// The package member holding it.
    pub member: String,
    /// The member's bytes as stored (for the overlay's identity and a VMDK base).
    pub stored: Arc<dyn ReadAt>,
    /// The manifest's digest value(s) of the member, when it has any.
    pub manifest_digest: Option<String>,
    /// The image's format.
    pub format: DiskFormat,
    /// Whether `stored` is the image itself (not gzip-compressed in the package), so that
    /// a VMDK's compressed grains can be copied from it.
    pub stored_is_image: bool,
}

/// The base and overlay that belong together.
pub(super) struct Current {
    pub(super) base: Arc<FlatDisk>,
    pub(super) source: DiskSource,
    pub(super) overlay: Option<Arc<Overlay>>,
}

impl Current {
    /// SEEK_DATA (`data`) or SEEK_HOLE from `offset`, over the overlay and the base.
    pub(super) fn seek(&self, offset: u64, data: bool) -> Result<Option<u64>> {
        match &self.overlay {
            Some(o) => {
                let whence = if data { Whence::Data } else { Whence::Hole };
                let base_seek = |at: u64, w: Whence| self.base.seek(at, w == Whence::Data);
                o.seek(offset, whence, &base_seek)
            }
            None => self.base.seek(offset, data),
        }
    }

    /// Bytes of the disk that are data, not holes (a raw disk's `ovf:populatedSize`).
    pub(super) fn data_bytes(&self) -> Result<u64> {
        let end = self.overlay.as_ref().map_or(self.base.len(), |o| o.len());
        data_within(&|at, data| self.seek(at, data), 0, end)
    }

    /// The disk's content: the overlay over the base, or the base alone.
    pub(super) fn content(&self) -> Arc<dyn ReadAt> {
        match &self.overlay {
            Some(o) => Arc::new(Overlaid {
                base: self.base.clone(),
                overlay: o.clone(),
            }),
            None => self.base.clone(),
        }
    }
}

/// The content of a disk with an overlay, as bytes (what a commit encodes).
struct Overlaid {
    base: Arc<FlatDisk>,
    overlay: Arc<Overlay>,
}

impl ReadAt for Overlaid {
    fn len(&self) -> u64 {
        self.overlay.len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.overlay.read_at(&*self.base, offset, buf)
    }
}

/// A flat disk that takes writes into its overlay.
pub struct OverlaidDisk {
    /// The flat file's name (`disk1.raw`), also the overlay's key.
    pub name: String,
    location: Location,
    /// The package file's metadata when mounted (the trust rules' owner).
    package: FileStat,
    options: OverlayOptions,
    cache: Arc<UnitCache>,
    state: RwLock<Current>,
    /// Opens of the flat file now.
    opens: AtomicUsize,
}

impl OverlaidDisk {
    /// The disk `source` whose flat image is `base`, with its overlay at `location` if one
    /// is there. An overlay a completed commit left behind (its marker matches the disk the
    /// package holds now) is removed; a stale one is an error ([`OverlayError::Stale`]).
    pub fn open(
        name: &str,
        source: DiskSource,
        base: Arc<FlatDisk>,
        location: Location,
        package: FileStat,
        cache: Arc<UnitCache>,
    ) -> Result<OverlaidDisk> {
        let options = OverlayOptions {
            create: false,
            ..OverlayOptions::default()
        };
        let overlay = if overlay::exists(&location, &package)? {
            open_existing(&location, &package, &source, &base)?.map(Arc::new)
        } else {
            None
        };
        Ok(OverlaidDisk {
            name: name.to_string(),
            location,
            package,
            options,
            cache,
            state: RwLock::new(Current {
                base,
                source,
                overlay,
            }),
            opens: AtomicUsize::new(0),
        })
    }

    /// Where the overlay's data lives (whether or not it exists yet).
    pub fn overlay_path(&self) -> PathBuf {
        self.location.data_path()
    }

    /// The overlay's location.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The package metadata the trust rules use.
    pub fn package(&self) -> &FileStat {
        &self.package
    }

    /// How many opens of the flat file there are now.
    pub fn opens(&self) -> usize {
        self.opens.load(Ordering::Relaxed)
    }

    /// The Disk's id.
    pub fn disk_id(&self) -> String {
        self.read().source.disk_id.clone()
    }

    pub(super) fn read(&self) -> RwLockReadGuard<'_, Current> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The state, exclusively: no read or write runs until the guard is dropped.
    pub(super) fn write(&self) -> RwLockWriteGuard<'_, Current> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` with the overlay, making it first if there is none yet.
    fn with_overlay<T>(&self, f: impl FnOnce(&Current, &Overlay) -> Result<T>) -> Result<T> {
        {
            let cur = self.read();
            if let Some(o) = &cur.overlay {
                return f(&cur, o);
            }
        }
        {
            let mut cur = self.write();
            if cur.overlay.is_none() {
                let identity = identity_of(&cur.source, &cur.base)?;
                let options = OverlayOptions {
                    create: true,
                    ..self.options
                };
                let made =
                    Overlay::open_or_create(&self.location, &self.package, &identity, options)?;
                log::info!(
                    "{}: changes go to {}",
                    self.name,
                    self.overlay_path().display()
                );
                cur.overlay = Some(Arc::new(made));
            }
        }
        let cur = self.read();
        match &cur.overlay {
            Some(o) => f(&cur, o),
            // Only a commit removes it, and it made the disk clean: make it again.
            None => {
                drop(cur);
                self.with_overlay(f)
            }
        }
    }

    /// Replaces the base after a commit wrote the disk into the package: the member's
    /// bytes (`source.stored`, relocated by the commit) are the disk now, and the old
    /// overlay, already removed from its folder, is dropped.
    pub(super) fn rebase(&self, cur: &mut Current, manifest_digest: Option<String>) -> Result<()> {
        let image = crate::disk::open(cur.source.stored.clone())?;
        cur.source.format = image.format();
        cur.source.manifest_digest = manifest_digest;
        cur.source.stored_is_image = true;
        cur.base = Arc::new(FlatDisk::new(image, self.cache.clone(), None));
        cur.overlay = None;
        Ok(())
    }
}

/// Runs of changes beyond which `stat` does not count the allocated bytes.
const COUNTED_RUNS: usize = 256;

/// Bytes of data (not holes) in `start..end` of what `seek` (SEEK_DATA when its flag is
/// true, else SEEK_HOLE) describes.
fn data_within(
    seek: &dyn Fn(u64, bool) -> Result<Option<u64>>,
    start: u64,
    end: u64,
) -> Result<u64> {
    let mut total = 0;
    let mut at = start;
    while at < end {
        let Some(data) = seek(at, true)?.filter(|&d| d < end) else {
            break;
        };
        let hole = seek(data, false)?.unwrap_or(end).min(end);
        total += hole - data;
        at = hole;
    }
    Ok(total)
}

/// The identity of the disk `source` with flat image `base`.
fn identity_of(source: &DiskSource, base: &FlatDisk) -> Result<Identity> {
    Identity::of_disk(
        &source.member,
        &*source.stored,
        source.manifest_digest.as_deref(),
        base.len(),
    )
}

/// Opens the overlay that exists at `location`; one whose commit completed is removed
/// (`None`), any other made for other disk bytes is `OverlayError::Stale`.
fn open_existing(
    location: &Location,
    package: &FileStat,
    source: &DiskSource,
    base: &FlatDisk,
) -> Result<Option<Overlay>> {
    let identity = identity_of(source, base)?;
    let options = OverlayOptions {
        create: false,
        ..OverlayOptions::default()
    };
    match Overlay::open_or_create(location, package, &identity, options) {
        Err(e) if matches!(e.layer_error(), Some(OverlayError::Stale { .. })) => {
            let committed = overlay::committed_marker(location, package)?;
            let now = Identity::of_disk(&source.member, &*source.stored, None, base.len())?;
            if committed != Some(now.fingerprint) {
                return Err(e);
            }
            log::info!(
                "{}: its changes are already in the package (a commit completed); removing it",
                location.folder.join(&location.key).display()
            );
            overlay::remove(location, package)?;
            Ok(None)
        }
        other => other.map(Some),
    }
}

impl WritableDisk for OverlaidDisk {
    fn len(&self) -> u64 {
        let cur = self.read();
        cur.overlay.as_ref().map_or(cur.base.len(), |o| o.len())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let cur = self.read();
        match &cur.overlay {
            Some(o) => o.read_at(&*cur.base, offset, buf),
            None => cur.base.read_at(offset, buf),
        }
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| Error::overflow("write range"))?;
        self.with_overlay(|cur, o| {
            // The overlay refuses writes past its length; a file written past its end grows.
            if end > o.len() {
                o.set_len(end)?;
            }
            o.write_at(&*cur.base, offset, data)
        })
    }

    fn zero_range(&self, offset: u64, len: u64) -> Result<()> {
        self.with_overlay(|cur, o| o.zero_range(&*cur.base, offset, len))
    }

    fn set_len(&self, len: u64) -> Result<()> {
        if len == WritableDisk::len(self) {
            return Ok(());
        }
        if len < WritableDisk::len(self) {
            return Err(Error::refused(
                format!("shrinking {}", self.name),
                Refusal::NotPermitted,
            ));
        }
        self.with_overlay(|_, o| o.set_len(len))
    }

    fn sync(&self) -> Result<()> {
        match &self.read().overlay {
            Some(o) => o.sync(),
            None => Ok(()),
        }
    }

    fn seek(&self, offset: u64, data: bool) -> Result<Option<u64>> {
        self.read().seek(offset, data)
    }

    /// Read-ahead of the base image: changed ranges read from the overlay need none, and a
    /// unit decoded ahead of them is only cache.
    fn read_ahead(&self, offset: u64, len: u64, background: &dyn Background) {
        let base = self.read().base.clone();
        crate::node::disk::read_ahead(&base, offset, len, background);
    }

    /// The base's allocated bytes, less those of its data under changed blocks, plus the
    /// overlay's data blocks: exact, counted only while the changes are few runs.
    fn allocated(&self, background: &dyn Background) -> Option<u64> {
        let cur = self.read();
        let base = crate::node::disk::allocated_bytes(&cur.base, background)?;
        let Some(o) = &cur.overlay else {
            return Some(base);
        };
        if o.run_count() > COUNTED_RUNS {
            return None;
        }
        let mut under_changes = 0u64;
        for run in o.changed_blocks() {
            let start = run.first.saturating_mul(BLOCK_BYTES);
            let end = run.end.saturating_mul(BLOCK_BYTES).min(cur.base.len());
            under_changes += data_within(&|at, d| cur.base.seek(at, d), start, end).ok()?;
        }
        Some(base.saturating_sub(under_changes) + o.changed_bytes())
    }

    fn opened(&self) {
        self.opens.fetch_add(1, Ordering::Relaxed);
    }

    fn closed(&self) {
        self.opens.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::node::written_disk::WrittenDiskFile;
    use crate::node::{Allocation, FileNode, OpenMode};

    /// A raw disk of 256 KiB whose every block holds its number, as a package member.
    struct Fixture {
        _dir: tempfile::TempDir,
        package: FileStat,
        location: Location,
        raw: Vec<u8>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let ova = dir.path().join("app.ova");
        std::fs::write(&ova, b"package").unwrap();
        Fixture {
            package: nix::sys::stat::stat(&ova).unwrap(),
            location: Location::beside(&ova, "disk1.raw"),
            raw: (0..256 << 10).map(|i| (i / 4096) as u8 | 1).collect(),
            _dir: dir,
        }
    }

    impl Fixture {
        /// The disk as a mount opens it, over `stored` bytes.
        fn open(&self, stored: &[u8]) -> Result<OverlaidDisk> {
            let stored: Arc<dyn ReadAt> = Arc::new(stored.to_vec());
            let cache = Arc::new(UnitCache::new(1 << 20));
            let image = crate::disk::open(stored.clone()).unwrap();
            let base = Arc::new(FlatDisk::new(image, cache.clone(), None));
            let source = DiskSource {
                disk_id: "vmdisk1".into(),
                member: "disk1.img".into(),
                stored,
                manifest_digest: None,
                format: DiskFormat::Raw,
                stored_is_image: true,
            };
            OverlaidDisk::open(
                "disk1.raw",
                source,
                base,
                self.location.clone(),
                self.package,
                cache,
            )
        }
    }

    /// Writes through the flat file; reopening shows what a later mount sees.
    #[test]
    fn a_written_disk_keeps_what_was_synced() {
        let fx = fixture();
        let disk = Arc::new(fx.open(&fx.raw).unwrap());
        assert!(!fx.location.folder.exists(), "opening makes no overlay");
        let file = Arc::new(WrittenDiskFile::new(disk, 0o644, SystemTime::UNIX_EPOCH));
        let h = file
            .clone()
            .open(OpenMode {
                write: true,
                ..OpenMode::default()
            })
            .unwrap();
        h.write_at(4096 + 100, b"guest data").unwrap();
        h.allocate(8 << 12, 2 << 12, Allocation::PunchHole).unwrap();
        h.write_at(fx.raw.len() as u64 + 10, b"past the end")
            .unwrap();
        h.fsync(false).unwrap();
        h.write_at(0, b"never synced").unwrap();
        // SEEK_HOLE finds the punched blocks, SEEK_DATA the next data after them.
        assert_eq!(h.seek(0, false).unwrap(), Some(8 << 12));
        assert_eq!(h.seek(8 << 12, true).unwrap(), Some(10 << 12));
        drop(h);
        drop(file);
        let again = fx.open(&fx.raw).unwrap();
        let mut buf = vec![0u8; 10];
        again.read_at(4096 + 100, &mut buf).unwrap();
        assert_eq!(&buf, b"guest data", "a synced write survives");
        again.read_at(8 << 12, &mut buf).unwrap();
        assert_eq!(buf, vec![0u8; 10], "the hole survives");
        assert_eq!(again.len(), fx.raw.len() as u64 + 22, "so does the growth");
        let mut first = vec![0u8; 12];
        again.read_at(0, &mut first).unwrap();
        assert!(
            first == fx.raw[..12] || &first[..] == b"never synced",
            "an unsynced write is either there or not, never garbage"
        );
    }

    /// A package whose disk changed under the overlay: stale, unless the overlay's commit
    /// marker names exactly the disk the package holds now (the commit completed).
    #[test]
    fn a_stale_overlay_is_refused_unless_its_commit_completed() {
        let fx = fixture();
        let disk = fx.open(&fx.raw).unwrap();
        disk.write_at(0, b"changed").unwrap();
        disk.sync().unwrap();
        let mut committed = fx.raw.clone();
        committed[..7].copy_from_slice(b"changed");
        let mut other = fx.raw.clone();
        other[5] = 0;
        let e = fx.open(&other).err().unwrap();
        assert!(
            matches!(e.layer_error(), Some(OverlayError::Stale { .. })),
            "{e}"
        );

        let stored: Arc<dyn ReadAt> = Arc::new(committed.clone());
        let now = Identity::of_disk("disk1.img", &*stored, None, committed.len() as u64).unwrap();
        disk.read()
            .overlay
            .as_ref()
            .unwrap()
            .mark_committed(&now.fingerprint)
            .unwrap();
        assert!(fx.open(&other).is_err(), "the marker names another disk");
        let reopened = fx.open(&fx.raw).unwrap();
        let mut head = [0u8; 7];
        reopened.read_at(0, &mut head).unwrap();
        assert_eq!(
            &head, b"changed",
            "before the package changed, the overlay is in use"
        );
        drop(reopened);
        let after = fx.open(&committed).unwrap();
        assert!(
            after.read().overlay.is_none(),
            "the committed overlay is removed"
        );
        assert!(!overlay::exists(&fx.location, &fx.package).unwrap());
    }
}
