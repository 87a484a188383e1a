//! An appliance ready to serve: the package, each disk's parsed image, and the file tree a
//! mount shows.
//!
//! This is where the package layer (archive, descriptor, members) meets the disk layer:
//! every Disk with a file is opened here, at mount time, reading metadata only. A disk whose
//! content is not a readable image fails the whole open with an error naming the disk, so a
//! broken package is refused up front instead of failing later reads.
//!
//! Other files of the package that an image needs are found here too, by one mechanism
//! ([`PackageFiles`]): the extents a VMDK descriptor names (handed to
//! [`disk::open_with`]), and the parent of a differencing or backed image
//! ([`DiskImage::parent`]), which is opened recursively into a chain of at most
//! [`MAX_CHAIN_DEPTH`] images, each looked up relative to the folder of the image that names
//! it. A Disk with `ovf:parentRef` (an OVF delta disk) takes the referenced Disk's flat image
//! as its parent instead. A parent that cannot be found is an error naming it: a delta read
//! without its parent would show zeros where the parent's data belongs.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::archive::MemberKind;
use crate::archive::names::{self, join};
use crate::cache::UnitCache;
use crate::disk::engine::FlatDisk;
use crate::disk::{self, DiskError, DiskImage, OpenContext, SharedImages};
use crate::error::{Error, Result};
use crate::io::ReadAt;
use crate::node::Node;
use crate::node::disk::DiskFile;
use crate::node::folder::{Folder, Origin};
use crate::node::guest_disk::{GuestDiskFolder, media_folder};
use crate::node::layout::{self, Escaped, MEDIA_DIR};
use crate::node::member::MemberFile;
use crate::node::prefetch::{DiskContent, GuestSource};
use crate::ovf::DiskDef;
use crate::package::{self, FileLocation, Limits, Package, PackageDisk};

/// Longest chain of parent images below a disk (qemu has no fixed limit; real chains of
/// snapshots are a handful deep).
pub const MAX_CHAIN_DEPTH: usize = 16;

/// One image below a disk in its parent chain.
#[derive(Clone)]
pub struct ChainLink {
    /// The file holding it (package-relative name), or `disk <id>` for an OVF parent disk.
    pub name: String,
    /// The parsed image.
    pub image: Arc<dyn DiskImage>,
}

/// Folder of the mount that holds the flat images.
pub use crate::node::layout::DISKS_DIR;

/// A disk of the appliance with its parsed image.
pub struct ApplianceDisk {
    /// ovf:diskId.
    pub disk_id: String,
    /// Name stem of the flat image (`disks/<stem>.raw`).
    pub stem: String,
    /// The href of the file holding the image.
    pub href: String,
    /// The package-relative name of that file (the member name in an archive).
    pub file: String,
    /// Bytes of the image as stored in the package.
    pub stored_bytes: u64,
    /// Modification time of the image file.
    pub mtime: SystemTime,
    /// The parsed image.
    pub image: Arc<dyn DiskImage>,
    /// The images below it, nearest first: the parent (backing) files the images name, or
    /// for an OVF delta disk the referenced disk's image and its own chain. Empty for a
    /// disk with no parent.
    pub parents: Vec<ChainLink>,
    /// Permission bits of its flat image: what every file it is decoded from allows (the
    /// image file, its extents, its parents and theirs), never more than any of them.
    pub mode: u32,
}

/// The tree a mount shows and what went into it.
pub struct BuiltTree {
    /// The root folder, holding the fixed part of the tree (members and flat images); the
    /// editor and the status report add theirs.
    pub root: Arc<Folder>,
    /// The flat images.
    pub disks: Vec<ShownDisk>,
    /// Package files shown under an escaped name because theirs is the mount's own.
    pub escaped: Vec<Escaped>,
}

/// A flat image as the mount shows it, with the package files its bytes come from.
pub struct ShownDisk {
    /// Its path in the mount (`disks/NAME.raw`).
    pub path: String,
    /// Package-relative names of the files it is decoded from: its own, then its parents'.
    pub files: Vec<String>,
    /// The flat image.
    pub flat: Arc<FlatDisk>,
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
        Self::open_in(path, &Limits::default())
    }

    /// [`Appliance::open`] within `limits`: every table of every disk, and the indexing
    /// of compressed data, counted against one budget for the whole package.
    pub fn open_in(path: &Path, limits: &Limits) -> Result<Self> {
        let (package, statuses, source_mtime) = Self::open_each_in(path, limits)?;
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
        Self::open_each_in(path, &Limits::default())
    }

    /// [`Appliance::open_each`] within `limits` (see [`Appliance::open_in`]).
    pub fn open_each_in(
        path: &Path,
        limits: &Limits,
    ) -> Result<(Package, Vec<DiskStatus>, SystemTime)> {
        let meta = std::fs::metadata(path)
            .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        // Package errors already name the source.
        let package = package::open_in(path, limits)?;
        let source_mtime = meta.modified().unwrap_or(UNIX_EPOCH);
        let files = PackageFiles::with_limits(&package, limits.clone());
        let defs = disk_defs(&package);
        let statuses: Vec<DiskStatus> = package
            .disks
            .iter()
            .map(|d| open_disk(path, &package, &files, &defs, d, source_mtime))
            .collect();
        let statuses = link_ovf_parents(path, &package, statuses);
        Ok((package, statuses, source_mtime))
    }

    /// The tree a mount shows: `disks/<stem>.raw`, then every member (except those in
    /// `served`, which the editor shows as live files) under its own name, or under
    /// `.ovafs/members/<name>` when that name is the mount's own ([`layout::shown_path`]).
    /// Each collision is logged and listed in the result. `disk_node` may serve a disk's
    /// flat image as another node (a writable disk); `None` serves it read-only.
    pub fn build_tree(
        &self,
        cache: &Arc<UnitCache>,
        served: &[usize],
        disk_node: &mut DiskNodeMaker<'_>,
    ) -> BuiltTree {
        let root = Folder::root(self.source_mtime);
        root.ensure_dir(DISKS_DIR, 0o555, self.source_mtime, Origin::Fixed);
        let mut shown = Vec::new();
        for d in &self.disks {
            let flat = Arc::new(flat_chain(d, cache));
            let path = format!("{DISKS_DIR}/{}.raw", d.stem);
            let (node, content) = disk_node(d, &flat).unwrap_or_else(|| {
                let file = DiskFile::new(flat.clone(), d.mode & 0o444, d.mtime);
                (Node::File(Arc::new(file)), DiskContent::Flat(flat.clone()))
            });
            root.add(&path, node, d.mtime, Origin::Fixed);
            let guest = guest_view(&d.stem, content, d.mtime, d.mode);
            root.add(
                &format!("{DISKS_DIR}/{}", d.stem),
                guest,
                d.mtime,
                Origin::Fixed,
            );
            let mut files = vec![d.file.clone()];
            files.extend(d.parents.iter().map(|p| p.name.clone()));
            shown.push(ShownDisk { path, files, flat });
        }
        let mut escaped = Vec::new();
        for (i, m) in self.package.members.iter().enumerate() {
            let path = layout::shown_path(&m.name);
            if path != m.name.as_str() {
                log::warn!(
                    "{}: member {:?} has a name the mount uses itself; it is shown as /{path}",
                    self.package.path.display(),
                    m.name
                );
                escaped.push(Escaped {
                    name: m.name.clone(),
                    shown: path.to_string(),
                });
            }
            let mtime = UNIX_EPOCH + Duration::from_secs(m.mtime);
            match m.kind {
                MemberKind::Regular if !served.contains(&i) => {
                    let file = MemberFile::new(m.data.clone(), m.mode, mtime);
                    root.add(&path, Node::File(Arc::new(file)), mtime, Origin::Fixed);
                    if let Some(stem) = iso_stem(&m.name) {
                        let label = format!("{MEDIA_DIR}/{stem}");
                        let tree = media_folder(&label, m.data.clone(), mtime, m.mode);
                        root.add(&label, tree, mtime, Origin::Fixed);
                    }
                }
                MemberKind::Directory => {
                    root.ensure_dir(&path, 0o555, mtime, Origin::Fixed);
                }
                // Links, devices and the like are never served.
                _ => {}
            }
        }
        BuiltTree {
            root,
            disks: shown,
            escaped,
        }
    }
}

/// The name `media/NAME/` shows the member `name` under, when it is an ISO image by its name
/// (`.iso`, any case; its content is checked only when the folder is entered).
fn iso_stem(name: &str) -> Option<&str> {
    let file = name.rsplit('/').next()?;
    let cut = file.len().checked_sub(4)?;
    let (stem, ext) = (file.get(..cut)?, file.get(cut..)?);
    (ext.eq_ignore_ascii_case(".iso") && !stem.is_empty()).then_some(stem)
}

/// Makes a disk's `disks/NAME.raw` node and says what the guest view reads, or `None` for
/// the read-only flat file (see [`Appliance::build_tree`]).
pub type DiskNodeMaker<'a> =
    dyn FnMut(&ApplianceDisk, &Arc<FlatDisk>) -> Option<(Node, DiskContent)> + 'a;

/// `disks/NAME/`: the partitions and guest files of the disk `stem` (nothing is read now).
/// `mode` is the disk image's: the view is never readable by more users than the disk.
pub fn guest_view(stem: &str, content: DiskContent, mtime: SystemTime, mode: u32) -> Node {
    let source = Arc::new(GuestSource::new(content));
    Node::Dir(Arc::new(GuestDiskFolder::new(stem, source, mtime, mode)))
}

/// The flat image of `d` with its parent chain below it.
pub fn flat_chain(d: &ApplianceDisk, cache: &Arc<UnitCache>) -> FlatDisk {
    let mut parent: Option<Arc<dyn ReadAt>> = None;
    for link in d.parents.iter().rev() {
        parent = Some(Arc::new(FlatDisk::new(
            link.image.clone(),
            cache.clone(),
            parent,
        )));
    }
    FlatDisk::new(d.image.clone(), cache.clone(), parent)
}

/// The href of the file that holds disk `d` ("" for a blank disk).
pub fn disk_href(package: &Package, d: &PackageDisk) -> String {
    d.file
        .and_then(|i| package.files.get(i))
        .map(|f| f.href.to_string())
        .unwrap_or_default()
}

/// Opens one disk's image (metadata only), with the chain of parents its files name unless
/// the Disk is an OVF delta disk (see [`link_ovf_parents`]), and classifies the outcome.
fn open_disk(
    path: &Path,
    package: &Package,
    files: &PackageFiles<'_>,
    defs: &HashMap<&str, &DiskDef>,
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
    let image_data = match package::decode(&d.encoding, data.clone(), &href, &files.limits) {
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
    let def = defs.get(d.disk_id.as_str()).copied();
    let ovf_delta = def.is_some_and(|x| x.parent_ref.is_some());
    let (name, folder) = disk_location(package, d, &href);
    files.start_disk(disk_file_mode(package, d));
    // Shared under the member's own name, as extents and parents find it; a decoded
    // (gunzipped) image or one joined from chunks is not that member's bytes.
    let shared_as = d
        .member
        .filter(|_| d.encoding == package::Encoding::Identity)
        .and_then(|m| package.members.get(m))
        .map(|m| m.name.as_str());
    let opened = open_image(files, &folder, shared_as, &name, image_data).and_then(|image| {
        let parents = if ovf_delta {
            Vec::new()
        } else {
            files.chain(&name, &folder, &image)?
        };
        Ok((image, parents))
    });
    match opened {
        Ok((image, parents)) => {
            if let Some(uri) = def.and_then(|x| x.format_uri.as_ref())
                && let Some(family) = disk::uri_family(&uri.value)
                && family != image.format().family()
            {
                log::warn!(
                    "disk {disk_id} ({href}): ovf:format {:?} names {family}, but the image is {}",
                    uri.value,
                    image.format()
                );
            }
            let mtime = d
                .member
                .and_then(|m| package.members.get(m))
                .map(|m| UNIX_EPOCH + Duration::from_secs(m.mtime))
                .unwrap_or(source_mtime);
            DiskStatus::Ready(ApplianceDisk {
                disk_id,
                stem: d.stem.clone(),
                file: name.clone(),
                href,
                stored_bytes: data.len(),
                mtime,
                image,
                parents,
                mode: files.disk_mode(),
            })
        }
        // Recognised but not decodable: the rest of the package is still worth mounting.
        Err(e) if matches!(e.layer_error(), Some(DiskError::Unsupported { .. })) => {
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

/// The permission bits the stored file(s) of disk `d` allow: the intersection of its
/// member's or chunks' modes.
fn disk_file_mode(package: &Package, d: &PackageDisk) -> u32 {
    let members: Vec<usize> = match d
        .file
        .and_then(|i| package.files.get(i))
        .map(|f| &f.location)
    {
        Some(FileLocation::Member(m)) => vec![*m],
        Some(FileLocation::Chunks(c)) => c.clone(),
        _ => Vec::new(),
    };
    members
        .iter()
        .filter_map(|&i| package.members.get(i))
        .fold(0o7777, |mode, m| mode & m.mode)
}

/// The package-relative name of the file holding disk `d` and the folder it sits in
/// (names the image gives for other files are relative to that folder).
fn disk_location(package: &Package, d: &PackageDisk, href: &str) -> (String, String) {
    let member = d.member.or_else(|| {
        let f = d.file.and_then(|i| package.files.get(i))?;
        match &f.location {
            FileLocation::Chunks(c) => c.first().copied(),
            FileLocation::Member(m) => Some(*m),
            FileLocation::Remote => None,
        }
    });
    match member.and_then(|m| package.members.get(m)) {
        Some(m) => {
            // A chunk is named `NAME.000000000`: the disk's name is the href's.
            let folder = names::parent(&m.name).to_string();
            let file = names::normalize_str(href)
                .map(|n| names::file_name(&n).to_string())
                .unwrap_or_else(|_| names::file_name(&m.name).to_string());
            (join(&folder, &file), folder)
        }
        None => (href.to_string(), String::new()),
    }
}

/// Opens `data` (the file `name`) as a disk image whose extents are found in `folder`.
/// When `shared_as` names the file, the image is opened once per package and shared by
/// every disk and chain that names that file.
fn open_image(
    files: &PackageFiles<'_>,
    folder: &str,
    shared_as: Option<&str>,
    name: &str,
    data: Arc<dyn ReadAt>,
) -> Result<Arc<dyn DiskImage>> {
    let resolver = |n: &str| files.lookup_shared(folder, n);
    let ctx = OpenContext::new(&resolver, &files.limits.metadata, &files.shared);
    let open = || disk::open_with(data, &ctx);
    let opened = match shared_as {
        Some(key) => files.shared_image(key, open),
        None => open(),
    };
    opened.map_err(|e| {
        if name.is_empty() {
            e
        } else {
            e.context(name.to_string())
        }
    })
}

/// The Disk definitions of the descriptor by diskId (the first of each id, as
/// `Descriptor::disk` finds it), for lookups in constant time.
fn disk_defs(package: &Package) -> HashMap<&str, &DiskDef> {
    let mut defs = HashMap::with_capacity(package.descriptor.disks.len());
    for d in &package.descriptor.disks {
        defs.entry(d.disk_id.value.as_str()).or_insert(d);
    }
    defs
}

/// Gives every OVF delta disk (`ovf:parentRef`) the flat image of the Disk it references as
/// its parent: the referenced disk's image and its own chain. A delta whose parent disk is
/// broken is broken; one whose parent is not shown (remote, undecoded) is not shown either;
/// a blank parent disk (no file) reads as zeros, so the delta keeps no parent.
fn link_ovf_parents(path: &Path, package: &Package, statuses: Vec<DiskStatus>) -> Vec<DiskStatus> {
    let defs = disk_defs(package);
    let mut index_of: HashMap<&str, usize> = HashMap::with_capacity(package.disks.len());
    for (i, d) in package.disks.iter().enumerate() {
        index_of.entry(d.disk_id.as_str()).or_insert(i);
    }
    let parent_of = |i: usize| -> Option<usize> {
        let id = package.disks.get(i)?.disk_id.as_str();
        let pref = defs.get(id)?.parent_ref.as_ref()?;
        index_of.get(pref.value.as_str()).copied()
    };
    // The chain below disk i, or why there is none.
    enum Below {
        /// The images below and the permission bits they allow.
        Chain(Vec<ChainLink>, u32),
        NotShown(String),
        Broken(Error),
    }
    let below = |i: usize| -> Below {
        let top = package
            .disks
            .get(i)
            .map_or("", |d| d.disk_id.as_str())
            .to_string();
        let mut chain = Vec::new();
        let mut mode = 0o7777;
        let mut seen = vec![i];
        let mut at = i;
        while let Some(p) = parent_of(at) {
            if seen.contains(&p) {
                return Below::Broken(
                    DiskError::ParentCycle {
                        image: format!("disk {top}"),
                        repeated: format!("disk {}", package.disks[p].disk_id),
                    }
                    .into(),
                );
            }
            if seen.len() > MAX_CHAIN_DEPTH {
                return Below::Broken(
                    DiskError::ParentChainTooDeep {
                        image: format!("disk {top}"),
                        limit: MAX_CHAIN_DEPTH,
                    }
                    .into(),
                );
            }
            seen.push(p);
            match statuses.get(p) {
                Some(DiskStatus::Ready(pd)) => {
                    chain.push(ChainLink {
                        name: format!("disk {}", pd.disk_id),
                        image: pd.image.clone(),
                    });
                    mode &= pd.mode;
                    if parent_of(p).is_none() {
                        chain.extend(pd.parents.iter().cloned());
                    }
                }
                Some(DiskStatus::NotShown { disk_id, reason }) => {
                    if package.disks.get(p).is_some_and(|d| d.file.is_none()) {
                        break; // a blank disk: zeros
                    }
                    return Below::NotShown(format!(
                        "its parent disk {disk_id} is not shown ({reason})"
                    ));
                }
                Some(DiskStatus::Broken { disk_id, error }) => {
                    return Below::Broken(
                        DiskError::ParentDiskUnavailable {
                            parent: disk_id.clone(),
                            reason: error.to_string(),
                        }
                        .into(),
                    );
                }
                None => break,
            }
            at = p;
        }
        Below::Chain(chain, mode)
    };
    let linked: Vec<Option<Below>> = (0..statuses.len())
        .map(|i| parent_of(i).map(|_| below(i)))
        .collect();
    statuses
        .into_iter()
        .zip(linked)
        .map(|(status, link)| match (status, link) {
            (DiskStatus::Ready(mut d), Some(Below::Chain(chain, mode))) => {
                if let Some(own) = d.image.parent() {
                    log::info!(
                        "disk {}: using its ovf:parentRef disk as parent; the image itself names {:?}",
                        d.disk_id,
                        own.display_name()
                    );
                }
                d.parents = chain;
                d.mode &= mode;
                DiskStatus::Ready(d)
            }
            (DiskStatus::Ready(d), Some(Below::NotShown(reason))) => DiskStatus::NotShown {
                disk_id: d.disk_id,
                reason,
            },
            (DiskStatus::Ready(d), Some(Below::Broken(e))) => DiskStatus::Broken {
                error: e.context(format!("{}: disk {} ({})", path.display(), d.disk_id, d.href)),
                disk_id: d.disk_id,
            },
            (status, _) => status,
        })
        .collect()
}

/// Finds the files of a package by name, relative to a folder, by the package's one rule
/// ([`package::FileFinder`]: normalised names; members exactly, then ignoring ASCII case
/// when that is unambiguous; in a folder package, the files its References do not name
/// too, inside its folder, never through a link). Each file is opened once per package and
/// shared by every image naming it.
///
/// It also keeps the permission bits of every file a disk is decoded from, so that the flat
/// image is never more readable than any of them ([`PackageFiles::start_disk`],
/// [`PackageFiles::disk_mode`]).
pub struct PackageFiles<'a> {
    /// The package's one lookup by name.
    finder: package::FileFinder<'a>,
    /// The budgets of this opening.
    limits: Limits,
    /// Images and extents opened so far, shared by name.
    shared: SharedImages,
    /// Files looked up so far, by package-relative name asked for: each is opened once.
    found: Mutex<HashMap<String, Option<package::FoundFile>>>,
    /// The intersection of the modes of the files looked up since `start_disk`.
    mode: Mutex<u32>,
    /// What the files an image was decoded from allow (its extents), by the name it is
    /// shared under: a disk that reuses a shared image inherits them.
    image_modes: Mutex<HashMap<String, u32>>,
}

impl<'a> PackageFiles<'a> {
    /// The files of `package`, within the default budgets.
    pub fn new(package: &'a Package) -> Self {
        Self::with_limits(package, Limits::default())
    }

    /// The files of `package`; their tables count against `limits`.
    pub fn with_limits(package: &'a Package, limits: Limits) -> Self {
        PackageFiles {
            finder: package::FileFinder::new(package),
            limits,
            shared: SharedImages::new(),
            found: Mutex::new(HashMap::new()),
            mode: Mutex::new(0o7777),
            image_modes: Mutex::new(HashMap::new()),
        }
    }

    /// Starts collecting the modes of one disk's files, the first allowing `mode`.
    pub fn start_disk(&self, mode: u32) {
        *lock(&self.mode) = mode;
    }

    /// What every file looked up since [`PackageFiles::start_disk`] allows.
    pub fn disk_mode(&self) -> u32 {
        *lock(&self.mode)
    }

    /// Replaces the collected mode, returning the one collected so far.
    fn swap_mode(&self, mode: u32) -> u32 {
        std::mem::replace(&mut *lock(&self.mode), mode)
    }

    /// `PackageFiles::lookup`, remembered: a name asked for again (the same extent on
    /// thousands of descriptor lines) is neither searched nor opened again. Every call
    /// counts the file's mode towards the disk being opened.
    pub fn lookup_shared(&self, folder: &str, name: &str) -> Option<(String, Arc<dyn ReadAt>)> {
        let key = package::lookup::name_in(folder, name).ok()?;
        let found = lock(&self.found)
            .entry(key)
            .or_insert_with(|| self.lookup(folder, name))
            .clone()?;
        *lock(&self.mode) &= found.mode;
        Some((found.name, found.data))
    }

    /// The image shared under `key`, opened by `open` the first time. The modes of the files
    /// its opening looked up (extents) are remembered with it, so every disk reusing it is
    /// held to them too.
    fn shared_image(
        &self,
        key: &str,
        open: impl FnOnce() -> Result<Arc<dyn DiskImage>>,
    ) -> Result<Arc<dyn DiskImage>> {
        let outer = self.swap_mode(0o7777);
        let opened = self.shared.image(key, open);
        let looked_up = self.swap_mode(0o7777);
        let image_mode = *lock(&self.image_modes)
            .entry(key.to_string())
            .or_insert(looked_up)
            & looked_up;
        self.swap_mode(outer & image_mode);
        opened
    }

    /// The file `name` seen from `folder`, looked up anew (callers go through
    /// [`PackageFiles::lookup_shared`]). A file that is there but cannot be opened is
    /// logged and counts as missing.
    fn lookup(&self, folder: &str, name: &str) -> Option<package::FoundFile> {
        self.finder.find(folder, name).unwrap_or_else(|e| {
            let full = package::lookup::name_in(folder, name).unwrap_or_default();
            log::warn!("{full}: not opened: {e}");
            None
        })
    }

    /// The chain of parents below `image` (the file `name` in `folder`), nearest first.
    fn chain(
        &self,
        name: &str,
        folder: &str,
        image: &Arc<dyn DiskImage>,
    ) -> Result<Vec<ChainLink>> {
        let mut chain: Vec<ChainLink> = Vec::new();
        let mut seen: HashSet<String> = HashSet::from([name.to_string()]);
        let mut current = image.clone();
        let mut folder = folder.to_string();
        while let Some(pref) = current.parent() {
            if chain.len() >= MAX_CHAIN_DEPTH {
                return Err(DiskError::ParentChainTooDeep {
                    image: name.to_string(),
                    limit: MAX_CHAIN_DEPTH,
                }
                .into());
            }
            let candidates = pref.candidates();
            let Some((pname, data)) = candidates
                .iter()
                .find_map(|c| self.lookup_shared(&folder, c))
            else {
                return Err(DiskError::ParentNotFound {
                    image: chain.last().map_or(name, |l| l.name.as_str()).to_string(),
                    parent: pref.display_name().to_string(),
                    candidates,
                }
                .into());
            };
            if !seen.insert(pname.clone()) {
                return Err(DiskError::ParentCycle {
                    image: name.to_string(),
                    repeated: pname,
                }
                .into());
            }
            let pfolder = names::parent(&pname).to_string();
            let parent = open_image(self, &pfolder, Some(&pname), &pname, data)?;
            if let Some(f) = &pref.format
                && !f.eq_ignore_ascii_case(parent.format().family())
                && !(f.eq_ignore_ascii_case("vpc") && parent.format().family() == "vhd")
            {
                log::warn!(
                    "{name}: parent {pname} is said to be {f}, but it is {}",
                    parent.format()
                );
            }
            chain.push(ChainLink {
                name: pname,
                image: parent.clone(),
            });
            current = parent;
            folder = pfolder;
        }
        Ok(chain)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain maps and a mode: a panic elsewhere cannot leave them inconsistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
