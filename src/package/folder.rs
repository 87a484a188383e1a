//! Opening an unpacked package: the `.ovf`, the files its References name, and the `.mf` /
//! `.cert` beside it (docs/formats.md §1.5, §6 rules 3, 13).
//!
//! The descriptor's folder is opened once, when the package is opened ([`PackageDir`]), and
//! every file of the package is opened relative to that descriptor: the descriptor itself,
//! the files its References name, the manifest and certificate, and later the extents and
//! parent images those files name ([`super::Package::open_in_package`]). Names are
//! normalised first (no absolute paths, no `..`); then every folder on the way and the file
//! itself are opened with `O_NOFOLLOW`, so a symbolic link anywhere in the name is refused,
//! and swapping a folder of the package for a link after the open redirects nothing. A file
//! is checked to be a regular file (`fstatat` without following links) before it is opened
//! (with `O_NONBLOCK`, so a FIFO swapped in at that moment cannot block), and checked again
//! on the open descriptor. Nothing else in the folder is ever opened.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fstatat};

use super::lookup;
use super::resolve::{self, MemberSource, chunk_index_of};
use super::{
    MAX_DIR_ENTRIES, Member, Movable, Package, PackageError, Relocation, SourceKind, access_ceiling,
};
use crate::archive::MemberKind;
use crate::archive::names::{file_name, parent};
use crate::error::{Error, ErrorKind, Refusal, Result, ResultExt};
use crate::io::{FileSource, ReadAt, read_vec_at};
use crate::ovf::{self, MAX_DESCRIPTOR_BYTES, OvfError};

/// The folder of an unpacked package, open since the package was opened.
pub struct PackageDir {
    fd: OwnedFd,
    /// Its canonical path, for messages and for the [`FileSource`]s' names.
    root: PathBuf,
}

/// What a name inside the package folder is.
enum Found {
    /// A regular file, opened.
    File(File, fs::Metadata),
    /// Nothing of that name (or a file where a folder of the name should be).
    Missing,
    /// A directory, FIFO, device or socket.
    NotRegular,
    /// A symbolic link, or a name under one.
    Symlink,
}

/// A folder on the way to a name is a symbolic link.
struct SymlinkOnTheWay;

fn sys_err(what: &Path, e: Errno) -> Error {
    Error::io(
        format!("cannot open {}", what.display()),
        io::Error::from(e),
    )
}

impl PackageDir {
    /// Opens the folder `root` (the caller's own path: links in it are the user's choice).
    pub fn open(root: &Path) -> Result<Self> {
        let fd = nix::fcntl::open(
            root,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| sys_err(root, e))?;
        Ok(PackageDir {
            fd,
            root: root.to_path_buf(),
        })
    }

    /// The folder's path as it was opened.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Opens folder `dirs` (components of a normalised name) under the package folder,
    /// never through a link; `Ok(None)` when it is not there.
    fn open_folder(&self, dirs: &[&str]) -> std::result::Result<Option<OwnedFd>, SymlinkOnTheWay> {
        let mut at: Option<OwnedFd> = None;
        for d in dirs {
            let base: BorrowedFd<'_> = at.as_ref().map_or(self.fd.as_fd(), |f| f.as_fd());
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            match openat(base, *d, flags, Mode::empty()) {
                Ok(fd) => at = Some(fd),
                Err(Errno::ENOENT) => return Ok(None),
                Err(Errno::ELOOP | Errno::ENOTDIR) => {
                    return match fstatat(base, *d, AtFlags::AT_SYMLINK_NOFOLLOW) {
                        Ok(st)
                            if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
                                == SFlag::S_IFLNK =>
                        {
                            Err(SymlinkOnTheWay)
                        }
                        _ => Ok(None),
                    };
                }
                Err(_) => return Ok(None),
            }
        }
        match at {
            Some(fd) => Ok(Some(fd)),
            None => openat(
                self.fd.as_fd(),
                ".",
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map(Some)
            .or(Ok(None)),
        }
    }

    /// Looks `name` (normalised, relative) up inside the package folder and opens it if it
    /// is a regular file.
    fn find(&self, name: &str) -> Result<Found> {
        let parts: Vec<&str> = name.split('/').filter(|p| !p.is_empty()).collect();
        let Some((last, dirs)) = parts.split_last() else {
            return Ok(Found::Missing);
        };
        let shown = self.root.join(name);
        let dir = match self.open_folder(dirs) {
            Ok(Some(fd)) => fd,
            Ok(None) => return Ok(Found::Missing),
            Err(SymlinkOnTheWay) => return Ok(Found::Symlink),
        };
        let st = match fstatat(dir.as_fd(), *last, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(Found::Missing),
            Err(e) => return Err(sys_err(&shown, e)),
        };
        match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFREG => {}
            SFlag::S_IFLNK => return Ok(Found::Symlink),
            _ => return Ok(Found::NotRegular),
        }
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let file = match openat(dir.as_fd(), *last, flags, Mode::empty()) {
            Ok(fd) => File::from(fd),
            Err(Errno::ENOENT) => return Ok(Found::Missing),
            Err(Errno::ELOOP) => return Ok(Found::Symlink),
            Err(e) => return Err(sys_err(&shown, e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| Error::io(format!("cannot stat {}", shown.display()), e))?;
        // Swapped between the check and the open: whatever it is now, it is not what was
        // checked.
        if !meta.is_file() {
            return Ok(Found::NotRegular);
        }
        Ok(Found::File(file, meta))
    }

    /// The regular file `name` of the package folder as a member; `None` when there is
    /// none. `href` names it in errors.
    fn member(&self, name: &str, href: &str) -> Result<Option<(Member, Arc<Movable>)>> {
        match self.find(name)? {
            Found::File(file, meta) => {
                let path = self.root.join(name);
                member_from(name.to_string(), file, &meta, &path).map(Some)
            }
            Found::Missing => Ok(None),
            Found::NotRegular => Err(PackageError::NotARegularFile {
                href: href.to_string(),
            }
            .into()),
            Found::Symlink => Err(PackageError::Symlink {
                name: name.to_string(),
            }
            .into()),
        }
    }

    /// Opens the regular file `name` (normalised, relative: an extent or a parent another
    /// file names, a file a manifest lists); see [`super::Package::open_in_package`].
    /// `Ok(None)` when there is nothing of that name; a symbolic link (anywhere in the name)
    /// or a file that is not regular is an error.
    pub fn open_member(&self, name: &str) -> Result<Option<Member>> {
        Ok(self.member(name, name)?.map(|(m, _)| m))
    }

    /// The UTF-8 names in folder `folder` of the package (at most [`MAX_DIR_ENTRIES`]).
    pub fn list(&self, folder: &str) -> Result<Vec<String>> {
        let dirs: Vec<&str> = folder.split('/').filter(|p| !p.is_empty()).collect();
        let shown = self.root.join(folder);
        let fd = match self.open_folder(&dirs) {
            Ok(Some(fd)) => fd,
            Ok(None) => return Ok(Vec::new()),
            Err(_) => {
                return Err(PackageError::Symlink {
                    name: folder.to_string(),
                }
                .into());
            }
        };
        let mut dir = nix::dir::Dir::from_fd(fd).map_err(|e| sys_err(&shown, e))?;
        let mut out = Vec::new();
        for (n, entry) in dir.iter().enumerate() {
            if n as u64 >= MAX_DIR_ENTRIES {
                return Err(ErrorKind::LimitExceeded {
                    what: "directory entries",
                    value: n as u64 + 1,
                    limit: MAX_DIR_ENTRIES,
                }
                .into());
            }
            let entry = entry.map_err(|e| sys_err(&shown, e))?;
            if let Ok(name) = entry.file_name().to_str()
                && name != "."
                && name != ".."
            {
                out.push(name.to_string());
            }
        }
        Ok(out)
    }
}

/// The member `name` read from the open `file`, its bytes movable (see [`Relocation`]).
fn member_from(
    name: String,
    file: File,
    meta: &fs::Metadata,
    path: &Path,
) -> Result<(Member, Arc<Movable>)> {
    let src = FileSource::from_file(file, path)?;
    let size = src.len();
    let data = Arc::new(Movable::new(Arc::new(src)));
    let member = Member {
        name,
        size,
        mode: (meta.mode() & 0o7000) | access_ceiling(meta),
        mtime: u64::try_from(meta.mtime()).unwrap_or(0),
        data: data.clone(),
        kind: MemberKind::Regular,
        data_offset: None,
    };
    Ok((member, data))
}

fn utf8(p: &Path) -> Result<String> {
    p.to_str().map(str::to_string).ok_or_else(|| {
        PackageError::PathNotUtf8 {
            path: p.to_string_lossy().into_owned(),
        }
        .into()
    })
}

/// Opens the unpacked package whose descriptor is `path`.
pub(super) fn open(path: &Path) -> Result<Package> {
    let shown = path.display().to_string();
    let io_err = |op: &str, e: io::Error| Error::io(format!("{op} {shown}"), e);
    let real = fs::canonicalize(path).map_err(|e| io_err("cannot open", e))?;
    let root = real
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let desc_name = utf8(real.file_name().map(Path::new).unwrap_or(Path::new("")))?;
    let dir = Arc::new(PackageDir::open(&root).with_context(|| shown.clone())?);
    let relocation = Relocation::new(real.clone(), SourceKind::Folder, None, None);
    let desc_member = match dir.find(&desc_name)? {
        Found::File(file, meta) => {
            let (m, data) = member_from(desc_name.clone(), file, &meta, &real)?;
            relocation.track(&m.name, m.size, data);
            m
        }
        // Gone since the canonicalize above found it (or not a name at all).
        Found::Missing => {
            return Err(Error::refused(
                format!("cannot open {shown}"),
                Refusal::NotFound,
            ));
        }
        _ => return Err(PackageError::NotARegularFile { href: shown }.into()),
    };
    if desc_member.size > MAX_DESCRIPTOR_BYTES {
        return Err(Error::from(OvfError::TooLarge {
            size: desc_member.size,
            limit: MAX_DESCRIPTOR_BYTES,
        })
        .context(shown));
    }
    let bytes = read_vec_at(
        &*desc_member.data,
        "descriptor",
        0,
        desc_member.size,
        MAX_DESCRIPTOR_BYTES,
    )?;
    let descriptor = ovf::parse(&bytes).with_context(|| shown.clone())?;

    let mut warnings = Vec::new();
    let mut source = FolderMembers {
        dir: dir.clone(),
        relocation: &relocation,
        by_name: HashMap::from([(desc_name.clone(), 0)]),
        members: vec![desc_member],
        listings: HashMap::new(),
    };
    let files = resolve::resolve_files(&descriptor, "", &mut source, &mut warnings)
        .with_context(|| shown.clone())?;

    // The manifest and certificate, named like the descriptor (one listing serves both).
    let listing = dir.list("").with_context(|| shown.clone())?;
    let mut sibling = |ext: &str| -> Result<Option<usize>> {
        let Some(name) = lookup::pick_sibling(&listing, &lookup::sibling_name(&desc_name, ext))
        else {
            return Ok(None);
        };
        source.get(&name, &name)
    };
    let manifest_member = sibling("mf").with_context(|| shown.clone())?;
    let certificate_member = sibling("cert").with_context(|| shown.clone())?;

    let disks = resolve::resolve_disks(&descriptor, &files);
    let members = source.members;
    let rewritten: Vec<&str> = [Some(0), manifest_member, certificate_member]
        .into_iter()
        .flatten()
        .filter_map(|i| members.get(i).map(|m| m.name.as_str()))
        .collect();
    relocation.keep(&rewritten);
    Ok(Package {
        path: path.to_path_buf(),
        kind: SourceKind::Folder,
        members,
        descriptor_member: 0,
        manifest_member,
        certificate_member,
        descriptor,
        files,
        disks,
        archive: None,
        archive_compression: None,
        tar_index: None,
        warnings,
        relocation: Arc::new(relocation),
        dir: Some(dir),
    })
}

/// Files of an unpacked package, opened on demand through the package folder.
struct FolderMembers<'a> {
    dir: Arc<PackageDir>,
    relocation: &'a Relocation,
    members: Vec<Member>,
    by_name: HashMap<String, usize>,
    /// Directory listings already read (for chunk lookups), by member folder.
    listings: HashMap<String, Vec<String>>,
}

impl MemberSource for FolderMembers<'_> {
    fn get(&mut self, name: &str, href: &str) -> Result<Option<usize>> {
        if let Some(&i) = self.by_name.get(name) {
            return Ok(Some(i));
        }
        // `name` is normalised: relative, no "..", and opened without following links.
        let Some((member, data)) = self.dir.member(name, href)? else {
            return Ok(None);
        };
        self.relocation.track(&member.name, member.size, data);
        self.members.push(member);
        let i = self.members.len() - 1;
        self.by_name.insert(name.to_string(), i);
        Ok(Some(i))
    }

    fn chunk_indices(&mut self, name: &str) -> Result<Vec<u32>> {
        let folder = parent(name);
        if !self.listings.contains_key(folder) {
            let listing = self.dir.list(folder)?;
            self.listings.insert(folder.to_string(), listing);
        }
        let base = file_name(name);
        let mut v: Vec<u32> = self
            .listings
            .get(folder)
            .into_iter()
            .flatten()
            .filter_map(|n| chunk_index_of(base, n))
            .collect();
        v.sort_unstable();
        Ok(v)
    }

    fn members(&self) -> &[Member] {
        &self.members
    }
}
