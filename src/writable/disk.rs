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
}

/// The base and overlay that belong together.
pub(super) struct Current {
    pub(super) base: Arc<FlatDisk>,
    pub(super) source: DiskSource,
    pub(super) overlay: Option<Arc<Overlay>>,
}

impl Current {
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
            Some(Arc::new(open_existing(
                &location, &package, &source, &base,
            )?))
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
        cur.base = Arc::new(FlatDisk::new(image, self.cache.clone(), None));
        cur.overlay = None;
        Ok(())
    }
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
/// (`OverlayError::Stale` otherwise).
fn open_existing(
    location: &Location,
    package: &FileStat,
    source: &DiskSource,
    base: &FlatDisk,
) -> Result<Overlay> {
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
            let create = OverlayOptions {
                create: true,
                ..options
            };
            Overlay::open_or_create(location, package, &identity, create)
        }
        other => other,
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
        let cur = self.read();
        match &cur.overlay {
            Some(o) => {
                let whence = if data { Whence::Data } else { Whence::Hole };
                let base_seek = |at: u64, w: Whence| cur.base.seek(at, w == Whence::Data);
                o.seek(offset, whence, &base_seek)
            }
            None => cur.base.seek(offset, data),
        }
    }

    /// Read-ahead of the base image: changed ranges read from the overlay need none, and a
    /// unit decoded ahead of them is only cache.
    fn read_ahead(&self, offset: u64, len: u64, background: &dyn Background) {
        let base = self.read().base.clone();
        crate::node::disk::read_ahead(&base, offset, len, background);
    }

    fn opened(&self) {
        self.opens.fetch_add(1, Ordering::Relaxed);
    }

    fn closed(&self) {
        self.opens.fetch_sub(1, Ordering::Relaxed);
    }
}
