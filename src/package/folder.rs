//! Opening an unpacked package: the `.ovf`, the files its References name, and the `.mf` /
//! `.cert` beside it (formats.md §1.5, §6 rules 3, 13).
//!
//! Every file is looked up strictly inside the descriptor's folder: names are normalised
//! first (no absolute paths, no `..`), then the path is canonicalised and must still be
//! inside the folder, so a symlink may point elsewhere in the package but never out of it.
//! Files are opened with `O_NOFOLLOW | O_NONBLOCK` and must be regular files (a FIFO must not
//! block the open, a device must not be read).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::resolve::{self, MemberSource, chunk_index_of};
use super::{MAX_DIR_ENTRIES, Member, Package, PackageError, SourceKind};
use crate::archive::MemberKind;
use crate::archive::names::{file_name, parent};
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::io::{FileSource, ReadAt, read_vec_at};
use crate::ovf::{self, MAX_DESCRIPTOR_BYTES, OvfError};

/// Opens a regular file without following a final symlink and without blocking on a FIFO.
fn open_regular(path: &Path) -> io::Result<(File, fs::Metadata)> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    Ok((file, meta))
}

fn member_from(name: String, file: File, meta: &fs::Metadata, path: &Path) -> Result<Member> {
    let src = FileSource::from_file(file, path)?;
    Ok(Member {
        name,
        size: src.len(),
        mode: meta.mode() & 0o7777,
        mtime: u64::try_from(meta.mtime()).unwrap_or(0),
        data: Arc::new(src),
        kind: MemberKind::Regular,
        data_offset: None,
    })
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
    let (file, meta) = open_regular(&real).map_err(|e| io_err("cannot open", e))?;
    if !meta.is_file() {
        return Err(PackageError::NotARegularFile { href: shown }.into());
    }
    let desc_member = member_from(desc_name.clone(), file, &meta, &real)?;
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
        root: root.clone(),
        by_name: HashMap::from([(desc_name.clone(), 0)]),
        members: vec![desc_member],
        listings: HashMap::new(),
    };
    let files = resolve::resolve_files(&descriptor, "", &mut source, &mut warnings)
        .with_context(|| shown.clone())?;

    let base = desc_name
        .get(..desc_name.len().saturating_sub(4))
        .unwrap_or(&desc_name)
        .to_string();
    let mut sibling = |ext: &str| -> Result<Option<usize>> {
        let wanted = format!("{base}.{ext}");
        let Some(name) = find_case_insensitive(&root, &wanted)? else {
            return Ok(None);
        };
        source.get(&name, &name)
    };
    let manifest_member = sibling("mf").with_context(|| shown.clone())?;
    let certificate_member = sibling("cert").with_context(|| shown.clone())?;

    let disks = resolve::resolve_disks(&descriptor, &files);
    Ok(Package {
        path: path.to_path_buf(),
        kind: SourceKind::Folder,
        members: source.members,
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
    })
}

/// Reads a directory, at most [`MAX_DIR_ENTRIES`] entries, returning the UTF-8 names.
fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("cannot list {}", dir.display()), e)),
    };
    let mut out = Vec::new();
    for (n, entry) in rd.enumerate() {
        if n as u64 >= MAX_DIR_ENTRIES {
            return Err(ErrorKind::LimitExceeded {
                what: "directory entries",
                value: n as u64 + 1,
                limit: MAX_DIR_ENTRIES,
            }
            .into());
        }
        let entry = entry.map_err(|e| Error::io(format!("cannot list {}", dir.display()), e))?;
        if let Some(name) = entry.file_name().to_str() {
            out.push(name.to_string());
        }
    }
    Ok(out)
}

/// The entry of `dir` named `wanted` ignoring ASCII case: the exact name if present, else the
/// first match in byte order (deterministic).
fn find_case_insensitive(dir: &Path, wanted: &str) -> Result<Option<String>> {
    let mut matches: Vec<String> = list_dir(dir)?
        .into_iter()
        .filter(|n| n.eq_ignore_ascii_case(wanted))
        .collect();
    matches.sort();
    if matches.iter().any(|n| n == wanted) {
        return Ok(Some(wanted.to_string()));
    }
    Ok(matches.into_iter().next())
}

/// Files of an unpacked package, opened on demand.
struct FolderMembers {
    /// The descriptor's folder, canonical.
    root: PathBuf,
    members: Vec<Member>,
    by_name: HashMap<String, usize>,
    /// Directory listings already read (for chunk lookups), by member folder.
    listings: HashMap<String, Vec<String>>,
}

impl MemberSource for FolderMembers {
    fn get(&mut self, name: &str, href: &str) -> Result<Option<usize>> {
        if let Some(&i) = self.by_name.get(name) {
            return Ok(Some(i));
        }
        // `name` is normalised: relative, no "..", so the join stays under root by name.
        let joined = self.root.join(name);
        let io_err = |e: io::Error| Error::io(format!("cannot open {}", joined.display()), e);
        match fs::symlink_metadata(&joined) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(e)),
        }
        let real = match fs::canonicalize(&joined) {
            Ok(p) => p,
            // A dangling symlink: nothing there.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(e)),
        };
        if !real.starts_with(&self.root) {
            return Err(PackageError::HrefEscapes {
                href: href.to_string(),
            }
            .into());
        }
        let (file, meta) = open_regular(&real).map_err(io_err)?;
        if !meta.is_file() {
            return Err(PackageError::NotARegularFile {
                href: href.to_string(),
            }
            .into());
        }
        let member = member_from(name.to_string(), file, &meta, &real)?;
        self.members.push(member);
        let i = self.members.len() - 1;
        self.by_name.insert(name.to_string(), i);
        Ok(Some(i))
    }

    fn chunk_indices(&mut self, name: &str) -> Result<Vec<u32>> {
        let folder = parent(name);
        if !self.listings.contains_key(folder) {
            let listing = list_dir(&self.root.join(folder))?;
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
