//! An OVF package: an OVA archive or an unpacked folder, its descriptor, and every File the
//! descriptor names resolved to a member (docs/formats.md §1.1, §1.4-1.6, §6 rules 9, 10, 13).
//!
//! [`open`] decides by name: a path ending in `.ovf` (any case) is an unpacked package
//! ([`SourceKind::Folder`]); anything else is read as a tar archive ([`SourceKind::Ova`]).
//!
//! OVA: the archive is indexed from its headers ([`crate::archive`]); the descriptor is the
//! first member named `*.ovf` (VirtualBox's rule; later ones are logged and ignored) and may
//! sit in a sub-folder, in which case hrefs resolve relative to that folder. The manifest
//! and certificate are the members beside it named like it with `.mf` / `.cert`, compared
//! case-insensitively. Opening reads the headers and the descriptor and nothing else; member
//! data is only ever read through [`Member::data`].
//!
//! Folder: the members are the descriptor, the files its References name and the `.mf` /
//! `.cert` beside it. Hrefs must stay inside the descriptor's folder: absolute paths and
//! `..` are refused by name, and every file is opened through the folder held open since the
//! package was opened, never through a symbolic link ([`PackageDir`]). Members never show more
//! permission bits than the file holding them allows ([`access_ceiling`]).
//!
//! Both: an href with a URL scheme (`http:`, `file:`, ...) is never fetched or opened; the
//! File is reported as [`FileLocation::Remote`]. Every other href must resolve to a member
//! ([`PackageError::HrefNotFound`]); `ovf:chunkSize` Files resolve to the chunks
//! `HREF.000000000`, `HREF.000000001`, ... joined with [`Concat`]; `ovf:size`, when present,
//! must equal the stored size. A gzip-compressed File resolves to its member (shown byte-exact),
//! and its disk is marked [`Encoding::Gzip`]; [`decode`] gives the decompressed image.
//!
//! An OVA that is a gzip-compressed tar (`.ova.gz`, read by XenAdmin; docs/formats.md §1.3) is
//! recognised by its magic, decompressed through a [`GzipReader`] (one indexing pass at open)
//! and indexed like any tar: members are windows onto the decompressed archive. Archives
//! compressed with xz, bzip2 or zstd are refused ([`PackageError::CompressedArchive`]).
//!
//! Not here: manifest and certificate checking, disk formats, FUSE.

mod folder;
pub mod lookup;
mod ova;
pub mod reopen;
mod resolve;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use std::fmt;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::archive::names::NameProblem;
use crate::archive::{MemberKind, TarIndex};
use crate::error::Result;
use crate::io::ReadAt;
pub use crate::io::budget::Limits;
use crate::io::gzip::{GzipOptions, GzipProgress, GzipReader};
use crate::ovf::Descriptor;

pub use crate::io::Concat;
pub use folder::PackageDir;
pub use lookup::{FileFinder, FoundFile, MemberNames, NameMatch};
pub use reopen::{Movable, Relocation};
pub use resolve::has_url_scheme;

/// Largest number of directory entries scanned when looking for chunks or the manifest of an
/// unpacked package.
pub const MAX_DIR_ENTRIES: u64 = 100_000;

/// A package is inconsistent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackageError {
    /// No descriptor.
    #[error("no OVF descriptor (.ovf) in the package")]
    NoDescriptor,
    /// The archive is compressed as a whole with a compression other than gzip.
    #[error(
        "{format}-compressed archive: only uncompressed and gzip-compressed OVAs can be read; \
         decompress it first"
    )]
    CompressedArchive {
        /// `xz`, `bzip2` or `zstd`.
        format: &'static str,
    },
    /// An href that cannot name a member: absolute, `..`, control characters...
    #[error("href {href:?} is refused: {problem}")]
    BadHref {
        /// The href.
        href: String,
        /// Why.
        problem: NameProblem,
    },
    /// An href that names no member or file.
    #[error("href {href:?} names no file in the package (looked for {name:?})")]
    HrefNotFound {
        /// The href.
        href: String,
        /// The member name looked for.
        name: String,
    },
    /// An href that resolves, through a symlink, outside the package folder (no longer
    /// produced: links are refused as [`PackageError::Symlink`]; kept for callers matching
    /// on it).
    #[error("href {href:?} leads outside the package folder")]
    HrefEscapes {
        /// The href.
        href: String,
    },
    /// An href that names a directory, device, FIFO or other non-regular file.
    #[error("href {href:?} is not a regular file")]
    NotARegularFile {
        /// The href.
        href: String,
    },
    /// A chunk of a chunked File is missing (docs/formats.md §1.6, §6 rule 10).
    #[error("href {href:?}: chunk {index} ({name:?}) is missing")]
    MissingChunk {
        /// The href.
        href: String,
        /// The chunk's member name.
        name: String,
        /// The chunk index.
        index: u32,
    },
    /// A chunk other than the last is not `ovf:chunkSize` bytes, or the last is larger.
    #[error("chunk {name:?} is {size} bytes; the chunk size is {chunk_size}")]
    ChunkSizeMismatch {
        /// The chunk's member name.
        name: String,
        /// Its size.
        size: u64,
        /// `ovf:chunkSize`.
        chunk_size: u64,
    },
    /// `ovf:size` differs from the stored size (a truncated or corrupt package).
    #[error("href {href:?}: ovf:size says {declared} bytes, the package holds {actual}")]
    SizeMismatch {
        /// The href.
        href: String,
        /// `ovf:size`.
        declared: u64,
        /// The stored size.
        actual: u64,
    },
    /// Two Files resolve to the same member (docs/formats.md §6 rule 9).
    #[error("hrefs {first:?} and {second:?} both name {member:?}")]
    HrefsShareMember {
        /// The first href.
        first: String,
        /// The second href.
        second: String,
        /// The member name.
        member: String,
    },
    /// A file of an unpacked package reached through a symbolic link: only the package's
    /// own files are opened, never what a link points at.
    #[error(
        "{name:?} is a symbolic link (or lies under one): links in a package folder are not followed"
    )]
    Symlink {
        /// The package-relative name.
        name: String,
    },
    /// A path of an unpacked package that is not UTF-8 (member names are strings).
    #[error("path {path:?} is not UTF-8")]
    PathNotUtf8 {
        /// The path, lossily decoded.
        path: String,
    },
}

/// Lets `?` turn a package error into the one public [`Error`](crate::error::Error).
impl From<PackageError> for crate::error::Error {
    fn from(e: PackageError) -> Self {
        crate::error::Error::layer(e)
    }
}

/// Where the package comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A tar archive.
    Ova,
    /// An unpacked folder (the path is its `.ovf`).
    Folder,
}

/// One file of the package, as the mount shows it.
#[derive(Clone)]
pub struct Member {
    /// Path relative to the package root, `/`-separated, normalised (see
    /// [`crate::archive::names`]).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits: the archive header's (or the file's), never more than the file
    /// holding the member allows to the mount's users ([`access_ceiling`]: the OVA's own
    /// for an archive member, the member file's in a folder).
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
    /// The bytes: a [`Movable`] over a [`crate::io::Window`] onto the archive, or over a
    /// [`crate::io::FileSource`] (re-pointed by [`Relocation::reopen`] after a rewrite).
    pub data: Arc<dyn ReadAt>,
    /// Regular file or directory (other tar entries are not members).
    pub kind: MemberKind,
    /// Offset of the data in the archive (OVA only).
    pub data_offset: Option<u64>,
}

impl Member {
    /// The member of an archive `src` that tar entry `entry` describes (its data a window
    /// onto the archive); fails when the entry's data lies outside the archive.
    pub fn from_tar(entry: &crate::archive::TarMember, src: &Arc<dyn ReadAt>) -> Result<Self> {
        Self::from_tar_in(entry, src, 0o7777, &Relocation::none())
    }

    /// [`Member::from_tar`] for the archive of a package: the mode is never more than
    /// `ceiling` (what the archive file allows, [`access_ceiling`]), and the data is followed
    /// by `relocation` into a rewritten archive.
    pub(crate) fn from_tar_in(
        entry: &crate::archive::TarMember,
        src: &Arc<dyn ReadAt>,
        ceiling: u32,
        relocation: &Relocation,
    ) -> Result<Self> {
        let window = crate::io::Window::new(src.clone(), entry.data_offset, entry.size)?;
        let data = Arc::new(Movable::new(Arc::new(window)));
        if entry.kind == MemberKind::Regular {
            relocation.track(&entry.name, entry.size, data.clone());
        }
        Ok(Member {
            name: entry.name.clone(),
            size: entry.size,
            mode: entry.mode & (ceiling | !0o777),
            mtime: entry.mtime,
            data,
            kind: entry.kind,
            data_offset: Some(entry.data_offset),
        })
    }
}

/// The permission bits that a file with metadata `meta` allows to the users of a mount
/// made by this process (whose nodes are owned by its effective uid and gid): the file's
/// owner bits (the mount's owner opened it), its group bits for the mount's group when the
/// file has that group (else what both its group and others may do), and its other bits.
/// Set-id and sticky bits are never carried over.
pub fn access_ceiling(meta: &Metadata) -> u32 {
    let mode = meta.mode() & 0o777;
    let other = mode & 0o007;
    let file_group = (mode >> 3) & 0o7;
    let group = if meta.gid() == nix::unistd::getegid().as_raw() {
        file_group
    } else {
        file_group & other
    };
    let owner = if meta.uid() == nix::unistd::geteuid().as_raw() {
        (mode >> 6) & 0o7
    } else {
        0o7
    };
    (owner << 6) | (group << 3) | other
}

impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Member")
            .field("name", &self.name)
            .field("size", &self.size)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("mtime", &self.mtime)
            .field("kind", &self.kind)
            .field("data_offset", &self.data_offset)
            .finish_non_exhaustive()
    }
}

/// How a File's stored bytes are encoded (`ovf:compression`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoding {
    /// Stored as is (`identity` or absent).
    Identity,
    /// gzip (RFC 1952): decoded through a [`GzipReader`] (see [`decode`]).
    Gzip,
    /// Another value (`bzip2`, ...), as written.
    Unsupported(String),
}

/// Where a File's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileLocation {
    /// One member (index into [`Package::members`]).
    Member(usize),
    /// Chunks, in order (indices into [`Package::members`]).
    Chunks(Vec<usize>),
    /// An href with a URL scheme: never fetched, unavailable.
    Remote,
}

/// A `References/File` resolved.
#[derive(Clone)]
pub struct PackageFile {
    /// `ovf:id`.
    pub file_id: String,
    /// `ovf:href`.
    pub href: String,
    /// Where its bytes are.
    pub location: FileLocation,
    /// `ovf:compression`.
    pub encoding: Encoding,
    /// The stored bytes (the member, or the chunks joined); `None` when remote.
    pub data: Option<Arc<dyn ReadAt>>,
}

impl fmt::Debug for PackageFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PackageFile")
            .field("file_id", &self.file_id)
            .field("href", &self.href)
            .field("location", &self.location)
            .field("encoding", &self.encoding)
            .field("stored_bytes", &self.data.as_ref().map(|d| d.len()))
            .finish()
    }
}

/// A `DiskSection/Disk` resolved to its bytes.
#[derive(Clone)]
pub struct PackageDisk {
    /// `ovf:diskId`.
    pub disk_id: String,
    /// `ovf:fileRef`; `None` for a blank disk.
    pub file_id: Option<String>,
    /// Index into [`Package::files`].
    pub file: Option<usize>,
    /// The member holding the image when it is one member; `None` for a blank disk, a remote
    /// File or a chunked one (read [`PackageDisk::data`] then).
    pub member: Option<usize>,
    /// A file name stem for the flat image: the href's file name without its last extension
    /// (and without `.gz` first when gzip-compressed), or the diskId for a blank disk; safe as
    /// a file name and unique among the package's disks (`-2`, `-3`, ... appended in disk
    /// order).
    pub stem: String,
    /// How the stored bytes are encoded.
    pub encoding: Encoding,
    /// The stored bytes of the image; `None` for a blank disk or a remote File.
    pub data: Option<Arc<dyn ReadAt>>,
}

impl fmt::Debug for PackageDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PackageDisk")
            .field("disk_id", &self.disk_id)
            .field("file_id", &self.file_id)
            .field("file", &self.file)
            .field("member", &self.member)
            .field("stem", &self.stem)
            .field("encoding", &self.encoding)
            .field("stored_bytes", &self.data.as_ref().map(|d| d.len()))
            .finish()
    }
}

/// An opened package.
#[derive(Clone)]
pub struct Package {
    /// The path opened (the `.ova`, or the `.ovf` of a folder).
    pub path: PathBuf,
    /// Archive or folder.
    pub kind: SourceKind,
    /// The files of the package, as the mount shows them. For an OVA: the regular members
    /// and directories in archive order; for a folder: the descriptor, then the referenced
    /// files in References order, then manifest and certificate.
    pub members: Vec<Member>,
    /// Index of the descriptor in `members`.
    pub descriptor_member: usize,
    /// Index of the manifest (`<descriptor base>.mf`).
    pub manifest_member: Option<usize>,
    /// Index of the certificate (`<descriptor base>.cert`).
    pub certificate_member: Option<usize>,
    /// The parsed descriptor (it keeps its bytes).
    pub descriptor: Descriptor,
    /// References/File, resolved, in document order.
    pub files: Vec<PackageFile>,
    /// DiskSection/Disk, resolved, in document order.
    pub disks: Vec<PackageDisk>,
    /// The archive (OVA only); for a gzip-compressed OVA, the decompressed tar.
    pub archive: Option<Arc<dyn ReadAt>>,
    /// How the archive file itself is compressed (`Some("gzip")` for a `.ova.gz`).
    pub archive_compression: Option<&'static str>,
    /// The archive's index (OVA only): header offsets, skipped and duplicate members.
    pub tar_index: Option<TarIndex>,
    /// Things worth telling the user that did not stop the open (also logged).
    pub warnings: Vec<String>,
    /// Follows the members into the new file after a commit replaced it.
    pub relocation: Arc<Relocation>,
    /// The folder of an unpacked package, held open since the package was opened: every
    /// later lookup of a file in it goes through this (see [`Package::open_in_package`]).
    pub dir: Option<Arc<PackageDir>>,
}

impl fmt::Debug for Package {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Package")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("members", &self.members)
            .field("descriptor_member", &self.descriptor_member)
            .field("manifest_member", &self.manifest_member)
            .field("certificate_member", &self.certificate_member)
            .field("files", &self.files)
            .field("disks", &self.disks)
            .field("warnings", &self.warnings)
            .finish_non_exhaustive()
    }
}

impl Package {
    /// The index of the member with exactly this name.
    pub fn find_member(&self, name: &str) -> Option<usize> {
        self.members.iter().position(|m| m.name == name)
    }

    /// The descriptor member.
    pub fn descriptor_file(&self) -> Option<&Member> {
        self.members.get(self.descriptor_member)
    }

    /// Opens the file `name` (package-relative, normalised) of a folder package that is not
    /// one of its members (an extent or a parent image another file names), through the
    /// folder held open since the package was opened, never through a link; `None` when
    /// there is no such regular file, and always for an OVA (whose files are its members).
    pub fn open_in_package(&self, name: &str) -> Result<Option<Member>> {
        match &self.dir {
            Some(dir) => dir.open_member(name),
            None => Ok(None),
        }
    }
}

/// Opens the package at `path`: a folder package when the name ends in `.ovf`, else an OVA.
/// Compressed archives are indexed within the default budgets ([`Limits::default`]).
pub fn open(path: &Path) -> Result<Package> {
    open_in(path, &Limits::default())
}

/// [`open`], counting the indexing of a compressed archive against `limits`.
pub fn open_in(path: &Path, limits: &Limits) -> Result<Package> {
    let is_ovf = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("ovf"));
    if is_ovf {
        folder::open(path)
    } else {
        ova::open(path, limits)
    }
}

/// The decompressed bytes of a File or disk stored with `encoding`: the stored bytes
/// themselves for identity, a [`GzipReader`] for gzip (one pass over the whole stream to
/// index it, verifying every member; progress is logged for large streams). `None` for an
/// encoding ovafs cannot decode. `what` names the data in log lines.
/// The bytes inflated to index it and the index's memory count against `limits`.
pub fn decode(
    encoding: &Encoding,
    stored: Arc<dyn ReadAt>,
    what: &str,
    limits: &Limits,
) -> Result<Option<Arc<dyn ReadAt>>> {
    match encoding {
        Encoding::Identity => Ok(Some(stored)),
        Encoding::Gzip => Ok(Some(Arc::new(gunzip(stored, what, limits)?))),
        Encoding::Unsupported(_) => Ok(None),
    }
}

/// Indexes the gzip stream in `stored`, logging progress every 10% when it is large.
pub(crate) fn gunzip(stored: Arc<dyn ReadAt>, what: &str, limits: &Limits) -> Result<GzipReader> {
    const LOG_ABOVE_BYTES: u64 = 256 << 20;
    let total = stored.len();
    let mut options = GzipOptions {
        inflate_budget: Some(limits.inflate.clone()),
        metadata_budget: Some(limits.metadata.clone()),
        ..GzipOptions::default()
    };
    if total >= LOG_ABOVE_BYTES {
        let what = what.to_string();
        let next = std::sync::Mutex::new(0u64);
        options.progress = Some(Arc::new(move |p: &GzipProgress| {
            let percent = p.compressed_done.saturating_mul(100) / p.compressed_total.max(1);
            let mut next = next.lock().unwrap_or_else(|e| e.into_inner());
            if percent >= *next {
                log::info!("{what}: indexing gzip data, {percent}% done");
                *next = percent.saturating_add(10);
            }
        }));
    }
    let started = std::time::Instant::now();
    let reader = GzipReader::open_with(stored, options)?;
    let s = reader.stats();
    log::info!(
        "{what}: gzip data indexed in {:.1} s: {} bytes from {}, {} member(s), {} checkpoints \
         every {} bytes ({} bytes of index)",
        started.elapsed().as_secs_f64(),
        s.decompressed_bytes,
        s.compressed_bytes,
        s.members,
        s.checkpoints,
        s.spacing_bytes,
        s.index_bytes
    );
    Ok(reader)
}

/// Opens an OVA held in any byte source (`path` is recorded and used in messages only).
pub fn open_ova_source(src: Arc<dyn ReadAt>, path: &Path) -> Result<Package> {
    ova::open_source(src, path, &Limits::default())
}
