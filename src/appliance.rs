//! An appliance ready to serve: the package, each disk's parsed image, and the file tree a
//! mount shows.
//!
//! This is where the package layer (archive, descriptor, members) meets the disk layer:
//! every Disk with a file is opened here, at mount time, reading metadata only. A disk whose
//! content is not a readable image fails the whole open with an error naming the disk, so a
//! broken package is refused up front instead of failing later reads.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::archive::MemberKind;
use crate::cache::UnitCache;
use crate::disk::engine::FlatDisk;
use crate::disk::{self, DiskError, DiskImage};
use crate::error::{Error, ErrorKind, Result};
use crate::fs::tree::{Content, Tree};
use crate::package::{self, Package, PackageDisk};

/// Folder of the mount that holds the flat images.
pub const DISKS_DIR: &str = "disks";

/// A disk of the appliance with its parsed image.
pub struct ApplianceDisk {
    /// ovf:diskId.
    pub disk_id: String,
    /// Name stem of the flat image (`disks/<stem>.raw`).
    pub stem: String,
    /// The href of the file holding the image.
    pub href: String,
    /// Bytes of the image as stored in the package.
    pub stored_bytes: u64,
    /// Modification time of the image file.
    pub mtime: SystemTime,
    /// The parsed image.
    pub image: Arc<dyn DiskImage>,
}

/// A package plus its opened disks.
pub struct Appliance {
    /// The package.
    pub package: Package,
    /// Disks that have a file, in DiskSection order.
    pub disks: Vec<ApplianceDisk>,
    /// Modification time of the source (the root folder's mtime).
    pub source_mtime: SystemTime,
}

/// What became of one Disk of the DiskSection when the appliance was opened.
pub enum DiskStatus {
    /// Parsed: its flat image is shown.
    Ready(ApplianceDisk),
    /// Not shown, for a reason that does not make the package unusable (blank disk, remote
    /// file, an encoding or format ovafs cannot decode).
    NotShown {
        /// ovf:diskId.
        disk_id: String,
        /// Why.
        reason: String,
    },
    /// The image is corrupt or inconsistent.
    Broken {
        /// ovf:diskId.
        disk_id: String,
        /// What is wrong, with the disk named in its context.
        error: Error,
    },
}

impl Appliance {
    /// Opens the package at `path` and every disk image in it (metadata only). A broken disk
    /// fails the whole open.
    pub fn open(path: &Path) -> Result<Self> {
        let (package, statuses, source_mtime) = Self::open_each(path)?;
        let mut disks = Vec::new();
        for status in statuses {
            match status {
                DiskStatus::Ready(d) => disks.push(d),
                DiskStatus::NotShown { disk_id, reason } => {
                    log::warn!("disk {disk_id}: {reason}; its flat image is not shown")
                }
                DiskStatus::Broken { error, .. } => return Err(error),
            }
        }
        Ok(Appliance {
            package,
            disks,
            source_mtime,
        })
    }

    /// Opens the package and reports on each disk without failing on broken ones (for
    /// `ovafs info`).
    pub fn open_each(path: &Path) -> Result<(Package, Vec<DiskStatus>, SystemTime)> {
        let meta = std::fs::metadata(path)
            .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        // Package errors already name the source.
        let package = package::open(path)?;
        let source_mtime = meta.modified().unwrap_or(UNIX_EPOCH);
        let statuses = package
            .disks
            .iter()
            .map(|d| open_disk(path, &package, d, source_mtime))
            .collect();
        Ok((package, statuses, source_mtime))
    }

    /// The tree a mount shows: every member under its own name (except those in `served`,
    /// which a backend serves as live files), then `disks/<stem>.raw`.
    pub fn build_tree(&self, cache: &Arc<UnitCache>, served: &[usize]) -> Tree {
        let mut tree = Tree::new(self.source_mtime);
        for (i, m) in self.package.members.iter().enumerate() {
            let mtime = UNIX_EPOCH + Duration::from_secs(m.mtime);
            match m.kind {
                MemberKind::Regular if !served.contains(&i) => {
                    tree.add_static(&m.name, Content::Bytes(m.data.clone()), m.mode, mtime);
                }
                MemberKind::Directory => {
                    tree.ensure_dir(&m.name, 0o555, mtime, false);
                }
                // Links, devices and the like are never served.
                _ => {}
            }
        }
        tree.ensure_dir(DISKS_DIR, 0o555, self.source_mtime, false);
        for d in &self.disks {
            let flat = FlatDisk::new(d.image.clone(), cache.clone(), None);
            let path = format!("{DISKS_DIR}/{}.raw", d.stem);
            tree.add_static(&path, Content::Disk(Arc::new(flat)), 0o444, d.mtime);
        }
        tree
    }
}

/// The href of the file that holds disk `d` ("" for a blank disk).
pub fn disk_href(package: &Package, d: &PackageDisk) -> String {
    d.file
        .and_then(|i| package.files.get(i))
        .map(|f| f.href.to_string())
        .unwrap_or_default()
}

/// Opens one disk's image (metadata only) and classifies the outcome.
fn open_disk(
    path: &Path,
    package: &Package,
    d: &PackageDisk,
    source_mtime: SystemTime,
) -> DiskStatus {
    let disk_id = d.disk_id.clone();
    let href = disk_href(package, d);
    let Some(data) = &d.data else {
        let reason = if d.file.is_none() {
            "blank disk (no file; created at deploy time)".to_string()
        } else {
            format!("{href} is not in the package (remote reference)")
        };
        return DiskStatus::NotShown { disk_id, reason };
    };
    // gzip-compressed Files (ovf:compression="gzip") are read through a GzipReader.
    let image_data = match package::decode(&d.encoding, data.clone(), &href) {
        Ok(Some(decoded)) => decoded,
        Ok(None) => {
            let reason = format!(
                "{href} is stored with {:?} encoding, which ovafs does not decode",
                d.encoding
            );
            return DiskStatus::NotShown { disk_id, reason };
        }
        Err(e) => {
            let error = e.context(format!("{}: disk {disk_id} ({href})", path.display()));
            return DiskStatus::Broken { disk_id, error };
        }
    };
    match disk::open(image_data) {
        Ok(image) => {
            let mtime = d
                .member
                .and_then(|m| package.members.get(m))
                .map(|m| UNIX_EPOCH + Duration::from_secs(m.mtime))
                .unwrap_or(source_mtime);
            DiskStatus::Ready(ApplianceDisk {
                disk_id,
                stem: d.stem.clone(),
                href,
                stored_bytes: data.len(),
                mtime,
                image,
            })
        }
        // Recognised but not decodable: the rest of the package is still worth mounting.
        Err(e) if matches!(e.kind(), ErrorKind::Disk(DiskError::Unsupported { .. })) => {
            DiskStatus::NotShown {
                disk_id,
                reason: format!("{href}: {e}"),
            }
        }
        Err(e) => {
            let error = e.context(format!("{}: disk {disk_id} ({href})", path.display()));
            DiskStatus::Broken { disk_id, error }
        }
    }
}
