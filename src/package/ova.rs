//! Opening an OVA: index the tar, find the descriptor, manifest and certificate, resolve the
//! Files (docs/formats.md §1.1, §1.4, §1.7).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use super::lookup;
use super::resolve::{self, MemberSource, chunk_index_of};
use super::{Member, Movable, Package, PackageError, Relocation, SourceKind, access_ceiling};
use crate::archive::names::parent;
use crate::archive::{self, MemberKind};
use crate::error::{Result, ResultExt};
use crate::io::budget::Limits;
use crate::io::{FileSource, ReadAt, read_vec_at};
use crate::ovf::{self, MAX_DESCRIPTOR_BYTES, OvfError};

/// Opens the OVA at `path`. Its members are never more readable than the OVA file itself
/// ([`access_ceiling`]), and they follow the file into its replacement after a rewrite
/// ([`Relocation`]).
pub(super) fn open(path: &Path, limits: &Limits) -> Result<Package> {
    // Not a FIFO, a device or a directory: opened without blocking and checked first.
    let file = crate::io::open_regular_file(path)?;
    let meta = file
        .metadata()
        .map_err(|e| crate::error::Error::io(format!("cannot stat {}", path.display()), e))?;
    let src: Arc<dyn ReadAt> = Arc::new(FileSource::from_file(file, path)?);
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    open_with(
        src,
        path,
        access_ceiling(&meta),
        real,
        Some(meta.uid()),
        limits,
    )
}

/// Opens an OVA held in `src`.
pub(super) fn open_source(src: Arc<dyn ReadAt>, path: &Path, limits: &Limits) -> Result<Package> {
    open_with(src, path, 0o777, path.to_path_buf(), None, limits)
}

/// Whole-archive compression, recognised by magic bytes.
fn compression(head: &[u8]) -> Option<&'static str> {
    match head {
        [0x1f, 0x8b, ..] => Some("gzip"),
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => Some("xz"),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Some("zstd"),
        // "BZh" + block size digit + the block magic (pi): a tar name cannot look like this.
        [
            b'B',
            b'Z',
            b'h',
            b'1'..=b'9',
            0x31,
            0x41,
            0x59,
            0x26,
            0x53,
            0x59,
            ..,
        ] => Some("bzip2"),
        _ => None,
    }
}

/// Opens an OVA held in `src`, whose file allows `ceiling`, sits at `real_path` and is
/// owned by `owner`.
fn open_with(
    src: Arc<dyn ReadAt>,
    path: &Path,
    ceiling: u32,
    real_path: std::path::PathBuf,
    owner: Option<u32>,
    limits: &Limits,
) -> Result<Package> {
    let shown = path.display().to_string();
    let mut head = [0u8; 10];
    let n = src.read_at(0, &mut head)?;
    let archive_compression = compression(&head[..n]);
    let src = match archive_compression {
        None => src,
        Some("gzip") => {
            Arc::new(super::gunzip(src, &shown, limits).with_context(|| shown.clone())?)
        }
        Some(format) => {
            return Err(
                crate::error::Error::from(PackageError::CompressedArchive { format })
                    .context(shown),
            );
        }
    };
    let index = archive::index(&*src).with_context(|| shown.clone())?;
    // A compressed archive is never rewritten (the mount is read-only): nothing to follow.
    let archive = Arc::new(Movable::new(src.clone()));
    let relocation = Relocation::new(
        real_path,
        SourceKind::Ova,
        archive_compression.is_none().then(|| archive.clone()),
        owner,
    );
    let mut warnings = Vec::new();
    for s in &index.skipped {
        warnings.push(format!("member {:?} skipped: {}", s.raw_name, s.problem));
    }
    for d in &index.duplicates {
        warnings.push(format!(
            "member {:?} appears more than once; the last one is used",
            d.name
        ));
    }

    let mut members = Vec::with_capacity(index.members.len());
    for m in &index.members {
        if m.kind == MemberKind::Other {
            log::info!(
                "{shown}: tar entry {:?} (type {:?}) is not a file; not shown",
                m.name,
                m.typeflag as char
            );
            continue;
        }
        members.push(Member::from_tar_in(m, &src, ceiling, &relocation)?);
    }

    let is_ovf = |m: &Member| {
        m.kind == MemberKind::Regular
            && m.name.len() > 4
            && m.name
                .get(m.name.len() - 4..)
                .is_some_and(|e| e.eq_ignore_ascii_case(".ovf"))
    };
    let mut descriptors = members.iter().enumerate().filter(|(_, m)| is_ovf(m));
    let Some((descriptor_member, desc)) = descriptors.next() else {
        return Err(crate::error::Error::from(PackageError::NoDescriptor).context(shown));
    };
    for (_, other) in descriptors {
        let msg = format!(
            "more than one descriptor: using {:?}, ignoring {:?}",
            desc.name, other.name
        );
        log::warn!("{shown}: {msg}");
        warnings.push(msg);
    }
    if descriptor_member != 0 {
        // VMware tools require the descriptor first; we do not.
        log::info!(
            "{shown}: the descriptor {:?} is not the first member",
            desc.name
        );
    }

    if desc.size > MAX_DESCRIPTOR_BYTES {
        return Err(crate::error::Error::from(OvfError::TooLarge {
            size: desc.size,
            limit: MAX_DESCRIPTOR_BYTES,
        })
        .context(format!("{shown}: descriptor {}", desc.name)));
    }
    let bytes = read_vec_at(
        &*desc.data,
        "descriptor",
        0,
        desc.size,
        MAX_DESCRIPTOR_BYTES,
    )?;
    let descriptor =
        ovf::parse(&bytes).with_context(|| format!("{shown}: descriptor {}", desc.name))?;

    let folder = parent(&desc.name).to_string();
    let sibling = |ext: &str| -> Option<usize> {
        let mut found = lookup::siblings(&members, &desc.name, ext);
        let first = found.next();
        if found.next().is_some() {
            let wanted = lookup::sibling_name(&desc.name, ext);
            log::warn!("{shown}: more than one {ext} member matches {wanted:?}; using the first");
        }
        first
    };
    let manifest_member = sibling("mf");
    let certificate_member = sibling("cert");

    let mut source = OvaMembers::new(members);
    let files = resolve::resolve_files(&descriptor, &folder, &mut source, &mut warnings)
        .with_context(|| shown.clone())?;
    let disks = resolve::resolve_disks(&descriptor, &files);
    let rewritten: Vec<&str> = [Some(descriptor_member), manifest_member, certificate_member]
        .into_iter()
        .flatten()
        .filter_map(|i| source.members.get(i).map(|m| m.name.as_str()))
        .collect();
    relocation.keep(&rewritten);
    Ok(Package {
        path: path.to_path_buf(),
        kind: SourceKind::Ova,
        members: source.members,
        descriptor_member,
        manifest_member,
        certificate_member,
        descriptor,
        files,
        disks,
        archive: Some(archive),
        archive_compression,
        tar_index: Some(index),
        warnings,
        relocation: Arc::new(relocation),
        dir: None,
    })
}

/// Members of an archive, looked up by name. The names are sorted in a map so that the
/// chunks of a File (`NAME.NNNNNNNNN`) are one range scan, not a pass over every member.
struct OvaMembers {
    members: Vec<Member>,
    by_name: BTreeMap<String, usize>,
}

impl OvaMembers {
    fn new(members: Vec<Member>) -> Self {
        let by_name = members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.clone(), i))
            .collect();
        OvaMembers { members, by_name }
    }
}

impl MemberSource for OvaMembers {
    fn get(&mut self, name: &str, _href: &str) -> Result<Option<usize>> {
        Ok(self.by_name.get(name).copied())
    }

    fn chunk_indices(&mut self, name: &str) -> Result<Vec<u32>> {
        let prefix = format!("{name}.");
        let mut v: Vec<u32> = self
            .by_name
            .range(prefix.clone()..)
            .take_while(|(n, _)| n.starts_with(&prefix))
            .filter_map(|(n, _)| chunk_index_of(name, n))
            .collect();
        v.sort_unstable();
        Ok(v)
    }

    fn members(&self) -> &[Member] {
        &self.members
    }
}
