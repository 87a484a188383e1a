//! Resolving References/File hrefs to members, and disks to files, for both package kinds
//! (docs/formats.md §1.6, §6 rules 9, 10, 13).
//!
//! The two package kinds differ only in how a member name is looked up ([`MemberSource`]):
//! an OVA searches its tar index, a folder opens files on demand. Everything else (URL
//! schemes, name checks, chunks, sizes, shared members, disk stems) is decided here once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::{Encoding, FileLocation, Member, PackageDisk, PackageError, PackageFile};
use crate::archive::MemberKind;
use crate::archive::names::{self, file_name, join};
use crate::error::{Error, Result};
use crate::io::{Concat, ReadAt};
use crate::ovf::{Descriptor, FileRef};

/// Longest stem produced, in bytes: leaves room under `NAME_MAX` (255) for a `-NNN` suffix
/// and an extension such as `.raw`.
const MAX_STEM_BYTES: usize = 200;

/// Largest chunk index (nine decimal digits).
const MAX_CHUNK_INDEX: u32 = 999_999_999;

/// How a package kind finds members by name.
pub(super) trait MemberSource {
    /// The index of the member with this normalised name, opening it if the source does that
    /// lazily; `None` if there is none. `href` is for messages.
    fn get(&mut self, name: &str, href: &str) -> Result<Option<usize>>;

    /// The chunk indices present for `name` (members named `name.NNNNNNNNN`), ascending.
    fn chunk_indices(&mut self, name: &str) -> Result<Vec<u32>>;

    /// The members so far.
    fn members(&self) -> &[Member];
}

/// Whether an href has a URL scheme (`http:`, `file:`, ..., RFC 3986 `scheme ":"`). Such
/// hrefs are never fetched or opened (docs/formats.md §6 rule 13). A Windows drive letter (`C:`)
/// counts as a scheme, which is what we want: it is not a relative reference either.
pub fn has_url_scheme(href: &str) -> bool {
    let Some((scheme, _)) = href.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Decodes `%XX` escapes; `None` when there are none or the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return None;
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(hex) = b.get(i + 1..i + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(v) = u8::from_str_radix(hex, 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The encoding named by `ovf:compression`.
fn encoding(f: &FileRef) -> Encoding {
    match f.compression.as_ref().map(|c| c.value.trim()) {
        None | Some("") => Encoding::Identity,
        Some(c) if c.eq_ignore_ascii_case("identity") => Encoding::Identity,
        Some(c) if c.eq_ignore_ascii_case("gzip") => Encoding::Gzip,
        Some(c) => Encoding::Unsupported(c.to_string()),
    }
}

/// The name of chunk `index` of `name`.
pub(super) fn chunk_name(name: &str, index: u32) -> String {
    format!("{name}.{index:09}")
}

/// The chunk index of `candidate` if it is `name.NNNNNNNNN`.
pub(super) fn chunk_index_of(name: &str, candidate: &str) -> Option<u32> {
    let digits = candidate.strip_prefix(name)?.strip_prefix('.')?;
    if digits.len() != 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Resolves every File of `desc`; hrefs are relative to `folder` (the descriptor's folder).
pub(super) fn resolve_files(
    desc: &Descriptor,
    folder: &str,
    src: &mut dyn MemberSource,
    warnings: &mut Vec<String>,
) -> Result<Vec<PackageFile>> {
    let mut out = Vec::with_capacity(desc.files.len());
    // Member index -> href that claimed it, for rule 9 (no two Files share a file).
    let mut claimed: HashMap<usize, String> = HashMap::new();
    for f in &desc.files {
        let href = f.href.value.as_str();
        let enc = encoding(f);
        if let Encoding::Unsupported(c) = &enc {
            let msg = format!(
                "file {:?} uses compression {c:?}, which is not supported",
                f.id.value
            );
            log::warn!("{msg}");
            warnings.push(msg);
        }
        if has_url_scheme(href) {
            let msg = format!(
                "file {:?} has a URL href {href:?}; it is not fetched",
                f.id.value
            );
            log::warn!("{msg}");
            warnings.push(msg);
            out.push(PackageFile {
                file_id: f.id.value.clone(),
                href: href.to_string(),
                location: FileLocation::Remote,
                encoding: enc,
                data: None,
            });
            continue;
        }
        let rel = names::normalize_str(href).map_err(|problem| PackageError::BadHref {
            href: href.to_string(),
            problem,
        })?;
        let name = join(folder, &rel);
        let (location, data, used) = match &f.chunk_size {
            Some(cs) => resolve_chunks(href, &name, cs.value, src)?,
            None => resolve_single(href, &name, folder, src)?,
        };
        let actual = data.len();
        if let Some(declared) = &f.size
            && declared.value != actual
        {
            return Err(PackageError::SizeMismatch {
                href: href.to_string(),
                declared: declared.value,
                actual,
            }
            .into());
        }
        for i in used {
            if let Some(first) = claimed.insert(i, href.to_string()) {
                let member = src
                    .members()
                    .get(i)
                    .map(|m| m.name.clone())
                    .unwrap_or_default();
                return Err(PackageError::HrefsShareMember {
                    first,
                    second: href.to_string(),
                    member,
                }
                .into());
            }
        }
        if enc == Encoding::Gzip {
            log::info!("file {:?} is gzip-compressed", f.id.value);
        }
        out.push(PackageFile {
            file_id: f.id.value.clone(),
            href: href.to_string(),
            location,
            encoding: enc,
            data: Some(data),
        });
    }
    Ok(out)
}

type Resolved = (FileLocation, Arc<dyn ReadAt>, Vec<usize>);

/// One member for an href; `%XX` escapes are tried decoded when the literal name is absent.
fn resolve_single(
    href: &str,
    name: &str,
    folder: &str,
    src: &mut dyn MemberSource,
) -> Result<Resolved> {
    let mut found = src.get(name, href)?;
    if found.is_none()
        && let Some(decoded) = percent_decode(href)
        && let Ok(rel) = names::normalize_str(&decoded)
    {
        found = src.get(&join(folder, &rel), href)?;
    }
    let Some(i) = found else {
        return Err(PackageError::HrefNotFound {
            href: href.to_string(),
            name: name.to_string(),
        }
        .into());
    };
    let m = member(src, i)?;
    if m.kind != MemberKind::Regular {
        return Err(PackageError::NotARegularFile {
            href: href.to_string(),
        }
        .into());
    }
    Ok((FileLocation::Member(i), m.data.clone(), vec![i]))
}

/// The chunks of a chunked File: contiguous from 0, all but the last exactly `chunk_size`.
fn resolve_chunks(
    href: &str,
    name: &str,
    chunk_size: u64,
    src: &mut dyn MemberSource,
) -> Result<Resolved> {
    let present = src.chunk_indices(name)?;
    let last = present.last().copied().unwrap_or(0);
    if last > MAX_CHUNK_INDEX {
        return Err(Error::overflow("chunk index"));
    }
    let mut idx = Vec::new();
    let mut parts: Vec<Arc<dyn ReadAt>> = Vec::new();
    for index in 0..=last {
        let cname = chunk_name(name, index);
        let missing = || PackageError::MissingChunk {
            href: href.to_string(),
            name: cname.clone(),
            index,
        };
        let i = match present.binary_search(&index) {
            Ok(_) => src.get(&cname, href)?.ok_or_else(missing)?,
            Err(_) => return Err(missing().into()),
        };
        let m = member(src, i)?;
        if m.kind != MemberKind::Regular {
            return Err(PackageError::NotARegularFile {
                href: href.to_string(),
            }
            .into());
        }
        let wrong = if index == last {
            m.size > chunk_size
        } else {
            m.size != chunk_size
        };
        if wrong {
            return Err(PackageError::ChunkSizeMismatch {
                name: cname,
                size: m.size,
                chunk_size,
            }
            .into());
        }
        parts.push(m.data.clone());
        idx.push(i);
    }
    let data: Arc<dyn ReadAt> = Arc::new(Concat::new(parts)?);
    Ok((FileLocation::Chunks(idx.clone()), data, idx))
}

fn member(src: &dyn MemberSource, i: usize) -> Result<&Member> {
    src.members()
        .get(i)
        .ok_or_else(|| Error::overflow("member index"))
}

/// Resolves the disks of `desc` to the files already resolved.
pub(super) fn resolve_disks(desc: &Descriptor, files: &[PackageFile]) -> Vec<PackageDisk> {
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    for (i, f) in files.iter().enumerate() {
        by_id.entry(f.file_id.as_str()).or_insert(i);
    }
    let mut disks: Vec<PackageDisk> = desc
        .disks
        .iter()
        .map(|d| {
            let file_id = d.file_ref.as_ref().map(|f| f.value.clone());
            // The descriptor checked that every fileRef names a File.
            let file = file_id.as_deref().and_then(|id| by_id.get(id).copied());
            let pf = file.and_then(|i| files.get(i));
            let member = match pf.map(|f| &f.location) {
                Some(FileLocation::Member(i)) => Some(*i),
                _ => None,
            };
            let encoding = pf.map_or(Encoding::Identity, |f| f.encoding.clone());
            let stem = match pf {
                Some(f) => stem_of(&f.href),
                None => sanitize(&d.disk_id.value),
            };
            PackageDisk {
                disk_id: d.disk_id.value.clone(),
                file_id,
                file,
                member,
                stem,
                encoding,
                data: pf.and_then(|f| f.data.clone()),
            }
        })
        .collect();
    make_unique(disks.iter_mut().map(|d| &mut d.stem));
    disks
}

/// The stem of an href: last path segment, `.gz` removed, then the last extension removed;
/// made safe as a file name. `.gz` goes whether or not the File says gzip: a committed gzip
/// disk keeps its member name but is stored plain, and its flat disk keeps its name.
fn stem_of(href: &str) -> String {
    let path = href.split(['?', '#']).next().unwrap_or(href);
    let mut base = file_name(path.trim_end_matches('/')).to_string();
    if let Some(decoded) = percent_decode(&base) {
        base = decoded;
    }
    let mut s = base.as_str();
    if s.len() > 3
        && s.get(s.len() - 3..)
            .is_some_and(|e| e.eq_ignore_ascii_case(".gz"))
    {
        s = &s[..s.len() - 3];
    }
    if let Some(dot) = s.rfind('.')
        && dot > 0
    {
        s = &s[..dot];
    }
    sanitize(s)
}

/// A string made safe as one file name: `/`, NUL and control characters become `_`; empty,
/// `.` and `..` become `disk`; at most [`MAX_STEM_BYTES`] bytes.
fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c == '/' || c.is_control() { '_' } else { c })
        .collect();
    if out.len() > MAX_STEM_BYTES {
        let mut cut = MAX_STEM_BYTES;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    if out.is_empty() || out == "." || out == ".." {
        out = "disk".to_string();
    }
    out
}

/// Makes the stems unique (case-insensitively, so they also differ on case-folding file
/// systems), appending `-2`, `-3`, ... to later ones in order.
///
/// Linear in the number of stems: each stem remembers the next suffix to try, so thousands
/// of disks with the same stem do not retry every suffix already given (which was
/// quadratic: hours for one descriptor). A suffix is skipped only when the name it makes is
/// already taken, and each taken name is skipped at most once per stem that could make it.
fn make_unique<'a>(stems: impl Iterator<Item = &'a mut String>) {
    let mut seen: HashSet<String> = HashSet::new();
    let mut next_suffix: HashMap<String, u64> = HashMap::new();
    for stem in stems {
        let folded = stem.to_lowercase();
        if seen.insert(folded.clone()) {
            continue;
        }
        let n = next_suffix.entry(folded).or_insert(2);
        loop {
            let candidate = format!("{stem}-{n}");
            *n += 1;
            if seen.insert(candidate.to_lowercase()) {
                *stem = candidate;
                break;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn url_schemes() {
        for h in [
            "http://x/disk.vmdk",
            "https://a",
            "file:///etc/passwd",
            "C:\\disk.vmdk",
            "s3+x.y-z:abc",
        ] {
            assert!(has_url_scheme(h), "{h}");
        }
        for h in ["disk.vmdk", "a/b:c", "1http://x", ":x", "#DISK#/#VOL#"] {
            assert!(!has_url_scheme(h), "{h}");
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b.vmdk").as_deref(), Some("a b.vmdk"));
        assert_eq!(percent_decode("%E8%99%9A.vmdk").as_deref(), Some("虚.vmdk"));
        assert_eq!(percent_decode("100%").as_deref(), Some("100%"));
        assert_eq!(percent_decode("%zz").as_deref(), Some("%zz"));
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(percent_decode("plain"), None);
    }

    #[test]
    fn chunk_names() {
        assert_eq!(chunk_name("d/disk.vmdk", 1), "d/disk.vmdk.000000001");
        assert_eq!(chunk_index_of("disk.vmdk", "disk.vmdk.000000012"), Some(12));
        assert_eq!(chunk_index_of("disk.vmdk", "disk.vmdk.00000001"), None);
        assert_eq!(chunk_index_of("disk.vmdk", "disk.vmdk.0000000x1"), None);
        assert_eq!(chunk_index_of("disk.vmdk", "disk.vmdkx000000001"), None);
        assert_eq!(chunk_index_of("disk.vmdk", "disk.vmdk"), None);
    }

    #[test]
    fn stems() {
        assert_eq!(stem_of("disk1.vmdk"), "disk1");
        assert_eq!(stem_of("disks/disk1.vmdk"), "disk1");
        assert_eq!(stem_of("t3-disk1.vmdk.gz"), "t3-disk1");
        assert_eq!(stem_of("noext"), "noext");
        assert_eq!(stem_of(".hidden"), ".hidden");
        assert_eq!(stem_of("w2k3 32bit-disk1.vmdk"), "w2k3 32bit-disk1");
        assert_eq!(stem_of("a%20b.vmdk"), "a b");
        assert_eq!(stem_of("http://host/path/img.vmdk?x=1"), "img");
        assert_eq!(stem_of("虚拟机-1.vmdk"), "虚拟机-1");
        assert_eq!(stem_of(".."), "disk");
        assert_eq!(stem_of("x/"), "x");
        assert_eq!(sanitize("a\u{1}b/c"), "a_b_c");
        assert_eq!(sanitize(""), "disk");
        let long = "é".repeat(150);
        let s = sanitize(&long);
        assert!(s.len() <= MAX_STEM_BYTES && s.len() >= MAX_STEM_BYTES - 1);
    }

    #[test]
    fn stems_are_made_unique_deterministically() {
        let mut v: Vec<String> = ["disk", "Disk", "disk", "disk-2", "other"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        make_unique(v.iter_mut());
        assert_eq!(v, ["disk", "Disk-2", "disk-3", "disk-2-2", "other"]);
        let mut v: Vec<String> = ["a-3", "a", "a", "a", "A", "a-2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        make_unique(v.iter_mut());
        assert_eq!(v, ["a-3", "a", "a-2", "a-4", "A-5", "a-2-2"]);
    }

    #[test]
    fn twenty_thousand_colliding_stems_are_made_unique_in_linear_time() {
        // Every disk named alike, plus names that collide with the suffixes given.
        let mut v: Vec<String> = (0..20_000)
            .map(|i| match i % 4 {
                0 => "disk".to_string(),
                1 => "DISK".to_string(),
                2 => format!("disk-{}", i / 2),
                _ => "Disk".to_string(),
            })
            .collect();
        let started = std::time::Instant::now();
        make_unique(v.iter_mut());
        let took = started.elapsed();
        let folded: HashSet<String> = v.iter().map(|s| s.to_lowercase()).collect();
        assert_eq!(folded.len(), v.len(), "all unique, case-insensitively");
        // The quadratic version took minutes here; linear is milliseconds.
        assert!(took.as_secs() < 2, "took {took:?}");
    }
}
