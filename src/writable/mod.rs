//! Writable disks: each flat disk of a writable mount over its copy-on-write overlay
//! ([`disk::OverlaidDisk`]), what `ovafs status` reports of them, and the commit that
//! writes their changes into the package ([`WritableDisks::commit`]) or the discard that
//! throws them away.
//!
//! A commit, for every disk with changes: holds the disk exclusively (reads and writes
//! wait), makes its changes durable, encodes the disk's new member into a temporary file
//! ([`encode`]), records in the overlay which image it is about to store (so that a crash
//! after the package's rename but before the overlay's removal is recognised on the next
//! mount), and then commits every disk's member and the descriptor's new sizes in one
//! change set through [`PackageCommit`] (the editor's committer on a mount, the package's
//! own offline): atomic, with the manifest refreshed. Only then are the overlays removed,
//! and the disks read the new members.

pub mod disk;
mod encode;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sys::stat::FileStat;
use serde::Serialize;

use crate::appliance::{Appliance, ApplianceDisk};
use crate::cache::UnitCache;
use crate::commit::{ChangeSet, CommitReport, Content};
use crate::disk::DiskFormat;
use crate::disk::engine::FlatDisk;
use crate::disk::vmdk_reencode::{ReencodeOptions, ReencodeProgress};
use crate::error::{Error, ErrorKind, Refusal, Result};
use crate::io::ReadAt;
use crate::overlay::{self, Identity, Location};
use crate::ovf::Descriptor;
use crate::package::{FileLocation, Package};
pub use disk::{DiskSource, OverlaidDisk};

/// Options of the writable disks of one mount.
#[derive(Debug, Clone)]
pub struct WritableOptions {
    /// The overlay folder (`-o overlay=DIR`); `None`: `NAME.ova.ovafs-overlay/` beside the
    /// package.
    pub overlay_folder: Option<PathBuf>,
    /// libdeflate level of re-encoded grains (`-o commit_level=`).
    pub commit_level: i32,
}

impl Default for WritableOptions {
    fn default() -> Self {
        WritableOptions {
            overlay_folder: None,
            commit_level: 6,
        }
    }
}

impl WritableOptions {
    /// Where the overlay of the flat disk `name` (`disk1.raw`) of `package` lives.
    pub fn location(&self, package: &Path, name: &str) -> Location {
        match &self.overlay_folder {
            Some(dir) => Location::in_folder(dir, name),
            None => Location::beside(package, name),
        }
    }
}

/// One disk as `ovafs status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DiskState {
    /// The flat disk's name (`disk1.raw`).
    pub disk: String,
    /// Bytes the overlay holds (changed 4 KiB blocks; zeroed ones hold none).
    pub changed_bytes: u64,
    /// Whether there is anything to commit (changed, zeroed or grown blocks).
    pub changed: bool,
    /// Whether every change is durable (nothing written since the last fsync).
    pub synced: bool,
    /// The overlay's data file, when there is an overlay.
    pub overlay: Option<PathBuf>,
    /// The disk's size now, and as the package holds it.
    pub size: u64,
    /// The size the package holds.
    pub base_size: u64,
    /// Why the disk cannot be written, for a read-only one.
    pub read_only: Option<String>,
}

/// What a commit did to one disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct CommittedDisk {
    /// The flat disk's name.
    pub disk: String,
    /// The package member written.
    pub member: String,
    /// Its new size in bytes.
    pub stored_bytes: u64,
    /// Grains whose compressed bytes were copied, deflated anew, and left out (zeros).
    pub grains_copied: u64,
    /// See `grains_copied`.
    pub grains_deflated: u64,
    /// See `grains_copied`.
    pub grains_omitted: u64,
}

/// What a commit did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct CommitSummary {
    /// The disks written into the package.
    pub committed: Vec<CommittedDisk>,
    /// The writable disks without changes (their members are untouched).
    pub unchanged: Vec<String>,
}

/// Progress of a commit, per disk.
#[derive(Debug, Clone, Copy)]
pub struct CommitProgress<'a> {
    /// The disk being encoded.
    pub disk: &'a str,
    /// Its grains done and in all.
    pub grains_done: u64,
    /// See `grains_done`.
    pub grains: u64,
}

/// Whoever holds the package's write lock: commits a change set whose descriptor `edit`
/// makes from the current one, under that lock, and follows the package afterwards (the
/// members that moved, the new manifest).
pub trait PackageCommit {
    /// Commits `changes` with the descriptor `edit` returns.
    fn commit_disks(
        &self,
        edit: &mut dyn FnMut(&Descriptor) -> Result<Descriptor>,
        changes: ChangeSet,
    ) -> Result<CommitReport>;
}

/// A disk that is shown read-only on a writable mount, and why.
#[derive(Debug, Clone)]
pub struct ReadOnlyDisk {
    /// Its flat file's name.
    pub name: String,
    /// Why.
    pub reason: String,
    /// Its overlay location (a stale overlay can be discarded).
    pub location: Location,
    /// Its size.
    pub size: u64,
}

/// The writable disks of one mount (or of an offline commit).
pub struct WritableDisks {
    disks: Vec<Arc<OverlaidDisk>>,
    read_only: Vec<ReadOnlyDisk>,
    options: WritableOptions,
    package: FileStat,
}

impl WritableDisks {
    /// No disks yet, for the package whose metadata is `package`.
    pub fn new(options: WritableOptions, package: FileStat) -> Self {
        WritableDisks {
            disks: Vec::new(),
            read_only: Vec::new(),
            options,
            package,
        }
    }

    /// Opens disk `d` of `appliance` (flat image `flat`) as writable, or records why it is
    /// not (then `None`: it is served read-only).
    pub fn open_disk(
        &mut self,
        appliance: &Appliance,
        d: &ApplianceDisk,
        flat: &Arc<FlatDisk>,
        cache: &Arc<UnitCache>,
    ) -> Option<Arc<OverlaidDisk>> {
        let name = format!("{}.raw", d.stem);
        let location = self.options.location(&appliance.package.path, &name);
        let opened = disk_source(&appliance.package, d).and_then(|source| {
            OverlaidDisk::open(
                &name,
                source,
                flat.clone(),
                location.clone(),
                self.package,
                cache.clone(),
            )
            .map_err(|e| e.to_string())
        });
        match opened {
            Ok(disk) => {
                let disk = Arc::new(disk);
                self.disks.push(disk.clone());
                Some(disk)
            }
            Err(reason) => {
                log::warn!("disks/{name} is read-only: {reason}");
                self.read_only.push(ReadOnlyDisk {
                    name,
                    reason,
                    location,
                    size: flat.len(),
                });
                None
            }
        }
    }

    /// The disks shown read-only, and why.
    pub fn read_only(&self) -> &[ReadOnlyDisk] {
        &self.read_only
    }

    /// Every disk's state.
    pub fn status(&self) -> Vec<DiskState> {
        let mut out: Vec<DiskState> = self.disks.iter().map(|d| state_of(d)).collect();
        out.extend(self.read_only.iter().map(|r| {
            let overlay = overlay::exists(&r.location, &self.package)
                .unwrap_or(true)
                .then(|| r.location.data_path());
            DiskState {
                disk: r.name.clone(),
                changed_bytes: 0,
                changed: false,
                synced: true,
                overlay,
                size: r.size,
                base_size: r.size,
                read_only: Some(r.reason.clone()),
            }
        }));
        out
    }

    /// Makes every disk's acknowledged writes durable (at the end of a mount: an unmount
    /// keeps what was written, synced or not). Every disk is tried; the first failure is
    /// returned.
    pub fn sync_all(&self) -> Result<()> {
        let mut first = Ok(());
        for d in &self.disks {
            if let Err(e) = crate::node::written_disk::WritableDisk::sync(&**d) {
                log::error!("disks/{}: cannot sync its overlay: {e}", d.name);
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    /// Whether any disk has changes to commit.
    pub fn has_changes(&self) -> bool {
        self.disks.iter().any(|d| state_of(d).changed)
    }

    /// Writes every changed disk into the package through `package` (see the module
    /// comment). Nothing is written when no disk changed.
    pub fn commit(
        &self,
        package: &dyn PackageCommit,
        progress: &mut dyn FnMut(CommitProgress<'_>),
    ) -> Result<CommitSummary> {
        // Every disk is held for the whole commit: nothing reads a member the commit moves.
        let mut held: Vec<_> = self.disks.iter().map(|d| (d, d.write())).collect();
        let mut summary = CommitSummary::default();
        let mut encoded = Vec::new();
        let reencode = ReencodeOptions {
            compression_level: self.options.commit_level,
            ..ReencodeOptions::default()
        };
        for (i, (disk, cur)) in held.iter_mut().enumerate() {
            let Some(o) = cur.overlay.as_ref().filter(|o| has_changes(o, &cur.base)) else {
                // An overlay without changes (all written back to the base's bytes) goes.
                if cur.overlay.take().is_some()
                    && let Err(e) = overlay::remove(disk.location(), disk.package())
                {
                    log::warn!("disks/{}: cannot remove its empty overlay: {e}", disk.name);
                }
                summary.unchanged.push(disk.name.clone());
                continue;
            };
            o.sync()?;
            let mut report = |p: ReencodeProgress| {
                progress(CommitProgress {
                    disk: &disk.name,
                    grains_done: p.grains_done,
                    grains: p.grains,
                })
            };
            let started = std::time::Instant::now();
            let e = encode::encode(cur, &disk.location().folder, &reencode, &mut report)
                .map_err(|e| e.context(format!("encode disks/{}", disk.name)))?;
            log::info!(
                "commit: disks/{} encoded in {:.3} s ({} bytes)",
                disk.name,
                started.elapsed().as_secs_f64(),
                e.data.len()
            );
            // The flat size the next mount sees: a VMDK's capacity is whole sectors.
            let capacity = e
                .report
                .map_or(e.data.len(), |r| r.capacity_bytes.div_ceil(512) * 512);
            let now = Identity::of_disk(&cur.source.member, &*e.data, None, capacity)?;
            o.mark_committed(&now.fingerprint)?;
            encoded.push((i, e));
        }
        if encoded.is_empty() {
            return Ok(summary);
        }
        let mut changes = ChangeSet::default();
        for (i, e) in &encoded {
            let member = held[*i].1.source.member.clone();
            changes = changes.replace(member, Content::new(e.data.clone()));
        }
        let updates: Vec<(String, crate::settings::DiskImageUpdate)> = encoded
            .iter()
            .map(|(i, e)| (held[*i].1.source.disk_id.clone(), e.update.clone()))
            .collect();
        let mut edit = |desc: &Descriptor| -> Result<Descriptor> {
            let mut now = desc.clone();
            for (disk_id, update) in &updates {
                let edited = crate::settings::update_disk_image(&now, disk_id, update)
                    .map_err(|e| Error::new(ErrorKind::InvalidEdit(e.to_string())))?;
                if let Some(d) = edited.descriptor {
                    now = d;
                }
            }
            Ok(now)
        };
        let started = std::time::Instant::now();
        let report = package.commit_disks(&mut edit, changes)?;
        log::info!(
            "commit: package written in {:.3} s",
            started.elapsed().as_secs_f64()
        );
        let manifest = report
            .manifest
            .as_deref()
            .and_then(|m| crate::verify::manifest::parse(m).ok());
        let mut failed = None;
        for (i, e) in encoded {
            let (disk, cur) = &mut held[i];
            // The commit is durable: failing to tidy up only leaves a marked overlay that the
            // next mount removes.
            if let Err(err) = overlay::remove(disk.location(), disk.package()) {
                log::warn!(
                    "disks/{}: cannot remove the committed overlay: {err}",
                    disk.name
                );
            }
            let digest = manifest
                .as_ref()
                .and_then(|m| manifest_digest(m, &cur.source.member));
            if let Err(err) = disk.rebase(cur, digest) {
                // The package holds the disk; only this mount cannot read it any more.
                let why = format!("cannot reopen its committed member: {err}");
                log::error!("disks/{}: {why}; remount to read it", disk.name);
                cur.base.fail(why);
                cur.overlay = None;
                failed.get_or_insert(err.context(format!("reopen disks/{}", disk.name)));
            }
            let r = e.report.unwrap_or_default();
            summary.committed.push(CommittedDisk {
                disk: disk.name.clone(),
                member: cur.source.member.clone(),
                stored_bytes: e.update.stored_bytes,
                grains_copied: r.grains_copied,
                grains_deflated: r.grains_deflated,
                grains_omitted: r.grains_omitted,
            });
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(summary),
        }
    }

    /// Throws away the changes of disk `name` (`disk1`, `disk1.raw`, or its Disk id). A disk
    /// some process has open is refused (its reader would see the disk change under it).
    /// `Ok(false)`: it had no changes.
    pub fn discard(&self, name: &str) -> Result<bool> {
        if let Some(d) = self.find(name) {
            let mut cur = d.write();
            if d.opens() > 0 {
                return Err(Error::refused(
                    format!(
                        "discard disks/{}: it is open (stop the guest first)",
                        d.name
                    ),
                    Refusal::Busy,
                ));
            }
            let had = cur.overlay.take().is_some();
            return Ok(overlay::remove(d.location(), d.package())? || had);
        }
        match self
            .read_only
            .iter()
            .find(|r| names_disk(&r.name, name, None))
        {
            Some(r) => overlay::remove(&r.location, &self.package),
            None => Err(Error::refused(format!("disk {name}"), Refusal::NotFound)),
        }
    }

    fn find(&self, name: &str) -> Option<&Arc<OverlaidDisk>> {
        self.disks
            .iter()
            .find(|d| names_disk(&d.name, name, Some(&d.disk_id())))
    }
}

/// Whether `asked` names the flat disk `name` (`disk1.raw`) or Disk `disk_id`.
fn names_disk(name: &str, asked: &str, disk_id: Option<&str>) -> bool {
    let asked = asked.strip_prefix("disks/").unwrap_or(asked);
    name == asked || name.strip_suffix(".raw") == Some(asked) || disk_id == Some(asked)
}

fn has_changes(o: &overlay::Overlay, base: &FlatDisk) -> bool {
    o.len() != base.len() || !o.changed_blocks().is_empty()
}

fn state_of(d: &OverlaidDisk) -> DiskState {
    let cur = d.read();
    let base_size = cur.base.len();
    match &cur.overlay {
        Some(o) => DiskState {
            disk: d.name.clone(),
            changed_bytes: o.changed_bytes(),
            changed: has_changes(o, &cur.base),
            synced: o.is_synced(),
            overlay: Some(d.overlay_path()),
            size: o.len(),
            base_size,
            read_only: None,
        },
        None => DiskState {
            disk: d.name.clone(),
            changed_bytes: 0,
            changed: false,
            synced: true,
            overlay: None,
            size: base_size,
            base_size,
            read_only: None,
        },
    }
}

/// What the package stores of disk `d`, or why it cannot be written.
fn disk_source(package: &Package, d: &ApplianceDisk) -> std::result::Result<DiskSource, String> {
    if !d.parents.is_empty() || d.image.parent().is_some() {
        return Err(
            "it is a delta over a parent disk (committing a changed delta is not supported)".into(),
        );
    }
    let format = d.image.format();
    let writable_format = matches!(
        format,
        DiskFormat::VmdkStreamOptimized
            | DiskFormat::VmdkSparse
            | DiskFormat::VhdFixed
            | DiskFormat::VhdDynamic
            | DiskFormat::VhdxFixed
            | DiskFormat::VhdxDynamic
            | DiskFormat::Qcow2
            | DiskFormat::Raw
    );
    if !writable_format {
        return Err(format!(
            "its image is {} (a file that names other files)",
            format.name()
        ));
    }
    let pd = package
        .disks
        .iter()
        .find(|p| p.disk_id == d.disk_id)
        .ok_or("it is not in the package's disk list")?;
    let file = pd
        .file
        .and_then(|i| package.files.get(i))
        .ok_or("it has no file")?;
    let member = match &file.location {
        FileLocation::Member(m) => package.members.get(*m).ok_or("its member is missing")?,
        FileLocation::Chunks(_) => return Err("its file is split in chunks".into()),
        FileLocation::Remote => return Err("its file is not in the package".into()),
    };
    let manifest = package
        .manifest_member
        .and_then(|i| package.members.get(i))
        .and_then(|m| {
            crate::io::read_vec_at(
                &*m.data,
                "manifest",
                0,
                m.size,
                crate::commit::MAX_MANIFEST_BYTES,
            )
            .ok()
        })
        .and_then(|bytes| crate::verify::manifest::parse(&bytes).ok());
    Ok(DiskSource {
        disk_id: d.disk_id.clone(),
        member: member.name.clone(),
        stored: member.data.clone(),
        manifest_digest: manifest
            .as_ref()
            .and_then(|m| manifest_digest(m, &member.name)),
        format,
        stored_is_image: pd.encoding == crate::package::Encoding::Identity,
    })
}

/// The manifest's lines for `member`, as one stable string (`SHA256:hex;...`).
fn manifest_digest(manifest: &crate::verify::manifest::Manifest, member: &str) -> Option<String> {
    let values: Vec<String> = manifest
        .entries_for(member)
        .map(|e| format!("{}:{}", e.algorithm_token, e.value.to_ascii_lowercase()))
        .collect();
    (!values.is_empty()).then(|| values.join(";"))
}

/// Commits for a package that no mount serves (`ovafs commit SOURCE`): the package's own
/// committer and descriptor.
pub struct OfflineCommit {
    state: std::sync::Mutex<(crate::commit::Committer, Descriptor)>,
    relocation: Arc<crate::package::Relocation>,
}

impl OfflineCommit {
    /// Commits into `package` through `committer` (which holds its write lock).
    pub fn new(package: &Package, committer: crate::commit::Committer) -> Self {
        OfflineCommit {
            state: std::sync::Mutex::new((committer, package.descriptor.clone())),
            relocation: package.relocation.clone(),
        }
    }
}

impl PackageCommit for OfflineCommit {
    fn commit_disks(
        &self,
        edit: &mut dyn FnMut(&Descriptor) -> Result<Descriptor>,
        changes: ChangeSet,
    ) -> Result<CommitReport> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let new = edit(&st.1)?;
        let report = st.0.commit(&changes.with_descriptor(new.bytes.as_ref()))?;
        st.1 = new;
        if report.replaced || !report.members_replaced.is_empty() {
            self.relocation.reopen(&report.members_replaced)?;
        }
        Ok(report)
    }
}
