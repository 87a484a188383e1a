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
use crate::disk::{self, DiskImage};
use crate::error::{Error, Result, ResultExt};
use crate::fs::tree::{Content, FileEntry, Tree};
use crate::package::{self, Encoding, Package};

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

impl Appliance {
    /// Opens the package at `path` and every disk image in it (metadata only).
    pub fn open(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path)
            .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        let package = package::open(path).with_context(|| path.display().to_string())?;
        let source_mtime = meta.modified().unwrap_or(UNIX_EPOCH);
        let mut disks = Vec::new();
        for d in &package.disks {
            let Some(data) = &d.data else {
                // A blank disk (created at deploy time) or a remote file: nothing to show.
                continue;
            };
            let href = d
                .file
                .and_then(|i| package.files.get(i))
                .map(|f| f.href.to_string())
                .unwrap_or_default();
            if d.encoding != Encoding::Identity {
                log::warn!(
                    "disk {} ({href}) is stored {:?}-encoded; its flat image is not shown",
                    d.disk_id,
                    d.encoding
                );
                continue;
            }
            let image = disk::open(data.clone())
                .with_context(|| format!("{}: disk {} ({href})", path.display(), d.disk_id))?;
            let mtime = d
                .member
                .and_then(|m| package.members.get(m))
                .map(|m| UNIX_EPOCH + Duration::from_secs(m.mtime))
                .unwrap_or(source_mtime);
            disks.push(ApplianceDisk {
                disk_id: d.disk_id.clone(),
                stem: d.stem.clone(),
                href,
                stored_bytes: data.len(),
                mtime,
                image,
            });
        }
        Ok(Appliance {
            package,
            disks,
            source_mtime,
        })
    }

    /// The tree a mount shows: every member under its own name, then `disks/<stem>.raw`.
    pub fn build_tree(&self, cache: &Arc<UnitCache>) -> Tree {
        let mut tree = Tree::new(self.source_mtime);
        for m in &self.package.members {
            let mtime = UNIX_EPOCH + Duration::from_secs(m.mtime);
            match m.kind {
                MemberKind::Regular => {
                    tree.add_file(FileEntry {
                        path: m.name.clone(),
                        content: Content::Bytes(m.data.clone()),
                        mode: m.mode,
                        mtime,
                    });
                }
                MemberKind::Directory => {
                    tree.add_dir(&m.name, mtime);
                }
                // Links, devices and the like are never served.
                MemberKind::Other => {}
            }
        }
        tree.add_dir(DISKS_DIR, self.source_mtime);
        for d in &self.disks {
            let flat = FlatDisk::new(d.image.clone(), cache.clone(), None);
            tree.add_file(FileEntry {
                path: format!("{DISKS_DIR}/{}.raw", d.stem),
                content: Content::Disk(Arc::new(flat)),
                mode: 0o444,
                mtime: d.mtime,
            });
        }
        tree
    }
}
