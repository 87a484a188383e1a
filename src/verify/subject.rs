//! What verification looks at: the members of a package, which of them are the descriptor,
//! the manifest and the certificate, and the chunked Files.
//!
//! Normally this comes from an opened [`Package`] ([`Subject::from_package`]). But a manifest
//! covers stored bytes, which do not depend on the descriptor being valid: a package that the
//! package layer refuses because of its descriptor (an `ovf:size` that disagrees with a
//! truncated member, a descriptor without a VirtualSystem, an href that names nothing) can
//! still be checked against its manifest. [`Subject::open`] then falls back to the archive
//! level: the tar index (or, for an unpacked package, the descriptor's folder), the first
//! `*.ovf` member as descriptor and the `.mf` / `.cert` beside it named like it, exactly as
//! the package layer finds them. The refusal is recorded in [`Subject::package_error`].
//!
//! Archive-level errors (not a tar, a truncated archive, I/O errors, a compressed archive)
//! are not recovered from: the source cannot be read.
//!
//! What the archive index left out or could not serve (refused names, duplicates, links,
//! devices, FIFOs, sparse entries) is kept in [`Subject::archive_entries`]: a package that
//! holds such entries is not the package its manifest describes, and verification fails on
//! each of them ([`super::verify_subject`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::archive::names::parent;
use crate::archive::{self, MemberKind, TarIndex, TarMember};
use crate::error::{Error, Result, ResultExt};
use crate::io::{FileSource, ReadAt};
use crate::ovf::OvfError;
use crate::package::{self, FileLocation, Member, Package, PackageDir, PackageError, SourceKind};

/// A chunked File (`ovf:chunkSize`): its whole name and its chunks.
#[derive(Clone)]
pub struct ChunkedFile {
    /// The href joined to the descriptor's folder and normalised.
    pub name: String,
    /// The chunk members, in order.
    pub chunks: Vec<usize>,
    /// The chunks joined.
    pub data: Arc<dyn ReadAt>,
}

/// Why an archive entry is not a file of the package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum EntryProblem {
    /// The name was refused (absolute, `..`, control characters, not UTF-8, ...): the entry
    /// was skipped by the archive index.
    RefusedName,
    /// Another entry has the same name: only the last one is served.
    Duplicate,
    /// Not a regular file: a link, a device, a FIFO, a sparse entry.
    NotRegular,
}

/// An archive entry verification fails on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveEntry {
    /// The name (as written, lossily decoded, for a refused name).
    pub name: String,
    /// What is wrong with it.
    pub problem: EntryProblem,
    /// Offset of its first header in the archive.
    pub header_offset: u64,
    /// The same in words (`symbolic link`, `name refused: ...`).
    pub detail: String,
}

impl std::fmt::Display for ArchiveEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rule = match self.problem {
            EntryProblem::RefusedName => "refused name",
            EntryProblem::Duplicate => "duplicate entry",
            EntryProblem::NotRegular => "not a regular file",
        };
        write!(
            f,
            "archive entry {:?} (header at offset {}): {rule}: {}",
            self.name, self.header_offset, self.detail
        )
    }
}

/// Most archive entries recorded in [`Subject::archive_entries`]; the rest are counted in
/// [`Subject::archive_entries_total`] (an archive of 100 000 links needs no 100 000 lines).
pub const MAX_ARCHIVE_ENTRIES_KEPT: usize = 1000;

/// The entries of `index` that are not regular, uniquely named, accepted members.
fn archive_entries(index: &TarIndex) -> (Vec<ArchiveEntry>, usize) {
    let refused = index.skipped.iter().map(|s| ArchiveEntry {
        name: s.raw_name.clone(),
        problem: EntryProblem::RefusedName,
        header_offset: s.header_offset,
        detail: s.problem.to_string(),
    });
    let duplicates = index.duplicates.iter().map(|d| ArchiveEntry {
        name: d.name.clone(),
        problem: EntryProblem::Duplicate,
        header_offset: d.dropped_header_offset,
        detail: format!(
            "hidden by a later entry of the same name at offset {}",
            d.kept_header_offset
        ),
    });
    let irregular = index
        .members
        .iter()
        .filter(|m| m.kind == MemberKind::Other)
        .map(|m| ArchiveEntry {
            name: m.name.clone(),
            problem: EntryProblem::NotRegular,
            header_offset: m.header_offset,
            detail: entry_type(m).to_string(),
        });
    let all = refused.chain(duplicates).chain(irregular);
    let mut kept = Vec::new();
    let mut total = 0usize;
    for e in all {
        total += 1;
        if kept.len() < MAX_ARCHIVE_ENTRIES_KEPT {
            kept.push(e);
        }
    }
    (kept, total)
}

/// What a non-regular entry is, in words.
fn entry_type(m: &TarMember) -> &'static str {
    match m.typeflag {
        b'1' => "hard link",
        b'2' => "symbolic link",
        b'3' => "character device",
        b'4' => "block device",
        b'6' => "FIFO",
        b'S' => "GNU sparse file",
        b'V' => "volume label",
        b'M' => "multi-volume continuation",
        b'D' => "GNU directory dump",
        b'0' | b'\0' | b'7' => "pax sparse file",
        _ => "entry of an unknown type",
    }
}

/// A member that a References/File of the descriptor names (its whole stored form, or one
/// of its chunks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referenced {
    /// Index into [`Subject::members`].
    pub member: usize,
    /// The File's `ovf:id`.
    pub file_id: String,
    /// The File's `ovf:href`.
    pub href: String,
}

/// The members verification looks at.
#[derive(Clone)]
pub struct Subject {
    /// The path opened.
    pub path: PathBuf,
    /// Archive or folder.
    pub kind: SourceKind,
    /// Members, as the package layer lists them (all regular members for an archive).
    pub members: Vec<Member>,
    /// The descriptor.
    pub descriptor_member: usize,
    /// The manifest.
    pub manifest_member: Option<usize>,
    /// The certificate.
    pub certificate_member: Option<usize>,
    /// The descriptor's folder inside the package (`""` at the root).
    pub folder: String,
    /// Chunked Files (empty when the descriptor could not be used).
    pub chunked: Vec<ChunkedFile>,
    /// The folder of an unpacked package, held open, where listed files that are not
    /// members are looked up (by the package layer's rule: never through a link).
    pub dir: Option<Arc<PackageDir>>,
    /// Why the package layer refused the package, when the archive-level fallback was used.
    pub package_error: Option<String>,
    /// The package layer's warnings.
    pub warnings: Vec<String>,
    /// Archive entries that are not files of the package (at most
    /// [`MAX_ARCHIVE_ENTRIES_KEPT`]).
    pub archive_entries: Vec<ArchiveEntry>,
    /// How many there are in all.
    pub archive_entries_total: usize,
    /// The members the descriptor's References name (empty when the descriptor could not be
    /// used).
    pub referenced: Vec<Referenced>,
}

impl Subject {
    /// From an opened package.
    pub fn from_package(pkg: &Package) -> Self {
        let folder = pkg
            .descriptor_file()
            .map(|d| parent(&d.name).to_string())
            .unwrap_or_default();
        let chunked = pkg
            .files
            .iter()
            .filter_map(|f| match (&f.location, &f.data) {
                (FileLocation::Chunks(c), Some(data)) => Some(ChunkedFile {
                    name: package::lookup::name_in(&folder, &f.href).ok()?,
                    chunks: c.clone(),
                    data: data.clone(),
                }),
                _ => None,
            })
            .collect();
        let (archive_entries, archive_entries_total) = pkg
            .tar_index
            .as_ref()
            .map(archive_entries)
            .unwrap_or_default();
        let referenced = pkg
            .files
            .iter()
            .flat_map(|f| {
                let members = match &f.location {
                    FileLocation::Member(i) => vec![*i],
                    FileLocation::Chunks(c) => c.clone(),
                    FileLocation::Remote => Vec::new(),
                };
                members.into_iter().map(|member| Referenced {
                    member,
                    file_id: f.file_id.clone(),
                    href: f.href.clone(),
                })
            })
            .collect();
        Subject {
            path: pkg.path.clone(),
            kind: pkg.kind,
            members: pkg.members.clone(),
            descriptor_member: pkg.descriptor_member,
            manifest_member: pkg.manifest_member,
            certificate_member: pkg.certificate_member,
            folder,
            chunked,
            dir: pkg.dir.clone(),
            package_error: None,
            warnings: pkg.warnings.clone(),
            archive_entries,
            archive_entries_total,
            referenced,
        }
    }

    /// Opens `path` as the package layer does; when it refuses the package because of the
    /// descriptor or its references, falls back to the archive level (see the module
    /// comment).
    pub fn open(path: &Path) -> Result<Self> {
        let err = match package::open(path) {
            Ok(pkg) => return Ok(Subject::from_package(&pkg)),
            Err(e) => e,
        };
        let recoverable = err.layer_error::<OvfError>().is_some()
            || err.layer_error::<PackageError>().is_some_and(|p| {
                !matches!(
                    p,
                    PackageError::NoDescriptor | PackageError::CompressedArchive { .. }
                )
            });
        if !recoverable {
            return Err(err);
        }
        let mut s = match folder_root(SourceKind::Folder, path) {
            Some(root) if is_ovf_name(&path.to_string_lossy()) => open_folder(path, root)?,
            _ => open_archive(path)?,
        };
        s.package_error = Some(err.to_string());
        Ok(s)
    }
}

fn is_ovf_name(name: &str) -> bool {
    name.len() > 4
        && name
            .get(name.len() - 4..)
            .is_some_and(|e| e.eq_ignore_ascii_case(".ovf"))
}

/// The canonical folder of an unpacked package.
fn folder_root(kind: SourceKind, path: &Path) -> Option<PathBuf> {
    if kind != SourceKind::Folder {
        return None;
    }
    std::fs::canonicalize(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
}

/// The member of `members` beside `desc` named like it with extension `ext` (the package
/// layer's rule).
fn sibling(members: &[Member], desc: &str, ext: &str) -> Option<usize> {
    package::lookup::siblings(members, desc, ext).next()
}

/// Archive-level fallback for an OVA.
fn open_archive(path: &Path) -> Result<Subject> {
    let shown = path.display().to_string();
    let src: Arc<dyn ReadAt> = Arc::new(FileSource::open(path)?);
    let index = archive::index(&*src).with_context(|| shown.clone())?;
    let members = index
        .members
        .iter()
        .filter(|m| m.kind == MemberKind::Regular)
        .map(|m| Member::from_tar(m, &src))
        .collect::<Result<Vec<_>>>()?;
    let (archive_entries, archive_entries_total) = archive_entries(&index);
    let descriptor_member = members
        .iter()
        .position(|m| is_ovf_name(&m.name))
        .ok_or_else(|| Error::from(PackageError::NoDescriptor).context(shown))?;
    let desc = members
        .get(descriptor_member)
        .map(|m| m.name.clone())
        .unwrap_or_default();
    Ok(Subject {
        path: path.to_path_buf(),
        kind: SourceKind::Ova,
        manifest_member: sibling(&members, &desc, "mf"),
        certificate_member: sibling(&members, &desc, "cert"),
        descriptor_member,
        folder: parent(&desc).to_string(),
        members,
        chunked: Vec::new(),
        dir: None,
        package_error: None,
        warnings: Vec::new(),
        archive_entries,
        archive_entries_total,
        referenced: Vec::new(),
    })
}

/// Archive-level fallback for an unpacked package: the descriptor, and the `.mf` / `.cert`
/// beside it.
fn open_folder(path: &Path, root: PathBuf) -> Result<Subject> {
    let desc_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| {
            Error::from(PackageError::PathNotUtf8 {
                path: path.display().to_string(),
            })
        })?
        .to_string();
    let dir = Arc::new(PackageDir::open(&root).with_context(|| path.display().to_string())?);
    let mut members = Vec::new();
    let mut add = |name: &str| -> Option<usize> {
        let data = dir.open_member(name).ok()??.data;
        members.push(Member {
            name: name.to_string(),
            size: data.len(),
            mode: 0o444,
            mtime: 0,
            data,
            kind: MemberKind::Regular,
            data_offset: None,
        });
        Some(members.len() - 1)
    };
    let descriptor_member = add(&desc_name).ok_or_else(|| {
        Error::from(PackageError::NotARegularFile {
            href: path.display().to_string(),
        })
    })?;
    let listing = dir.list("")?;
    let mut find = |ext: &str| {
        package::lookup::pick_sibling(&listing, &package::lookup::sibling_name(&desc_name, ext))
            .and_then(|n| add(&n))
    };
    let manifest_member = find("mf");
    let certificate_member = find("cert");
    Ok(Subject {
        path: path.to_path_buf(),
        kind: SourceKind::Folder,
        members,
        descriptor_member,
        manifest_member,
        certificate_member,
        folder: String::new(),
        chunked: Vec::new(),
        dir: Some(dir),
        package_error: None,
        warnings: Vec::new(),
        archive_entries: Vec::new(),
        archive_entries_total: 0,
        referenced: Vec::new(),
    })
}
