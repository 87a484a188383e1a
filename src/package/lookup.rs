//! Finding a file of a package by name: the one rule every layer uses (the disks' extents
//! and parents in `appliance`, the members the names a manifest lists designate in
//! `verify`, the manifest and certificate beside the descriptor when a package is opened).
//!
//! A name is seen from a folder (the descriptor's, or the folder of the file that names
//! it) and normalised first ([`name_in`]: no absolute path, no `..`). It then designates
//! the regular member of exactly that name; else the one regular member whose name equals
//! it ignoring ASCII case (two members that differ only in case make the folded name
//! ambiguous, and it designates neither: [`MemberNames`]); else, in a folder package only,
//! a regular file inside the package folder that the References do not name, opened
//! through the folder held open since the package was opened ([`FileFinder`],
//! [`Package::open_in_package`]).
//!
//! The manifest and certificate are found by their own rule, the descriptor's name with
//! `.mf` / `.cert` ([`sibling_name`]) compared ignoring ASCII case: in an OVA the first such
//! member beside the descriptor ([`siblings`]), in a folder the exact name if present, else
//! the first match in byte order ([`pick_sibling`]).

use std::collections::HashMap;
use std::sync::Arc;

use super::{Member, Package};
use crate::archive::MemberKind;
use crate::archive::names::{self, NameProblem, file_name, join, parent};
use crate::error::Result;
use crate::io::ReadAt;

/// How a name designates a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameMatch {
    /// The member of exactly that name, by index.
    Exact(usize),
    /// The one member whose name equals it ignoring ASCII case, by index.
    CaseDiffers(usize),
}

impl NameMatch {
    /// The member's index.
    pub fn index(self) -> usize {
        match self {
            NameMatch::Exact(i) | NameMatch::CaseDiffers(i) => i,
        }
    }
}

/// The package-relative name that `name` designates seen from `folder` (a package-relative
/// folder, `""` for the root): normalised, so never absolute and never through `..`.
pub fn name_in(folder: &str, name: &str) -> std::result::Result<String, NameProblem> {
    Ok(join(folder, &names::normalize_str(name)?))
}

/// The regular members of a package by name, built once for many lookups.
pub struct MemberNames<'a> {
    /// By exact name (the first of each name).
    exact: HashMap<&'a str, usize>,
    /// By ASCII-lowercased name; `None` when two names differ only by case.
    folded: HashMap<String, Option<usize>>,
}

impl<'a> MemberNames<'a> {
    /// The names of the regular members of `members`.
    pub fn new(members: &'a [Member]) -> Self {
        let mut exact = HashMap::new();
        let mut folded: HashMap<String, Option<usize>> = HashMap::new();
        for (i, m) in members.iter().enumerate() {
            if m.kind != MemberKind::Regular {
                continue;
            }
            exact.entry(m.name.as_str()).or_insert(i);
            folded
                .entry(m.name.to_ascii_lowercase())
                .and_modify(|e| *e = None)
                .or_insert(Some(i));
        }
        MemberNames { exact, folded }
    }

    /// The member `full` (a package-relative name, see [`name_in`]) designates.
    pub fn find(&self, full: &str) -> Option<NameMatch> {
        if let Some(&i) = self.exact.get(full) {
            return Some(NameMatch::Exact(i));
        }
        let i = (*self.folded.get(&full.to_ascii_lowercase())?)?;
        Some(NameMatch::CaseDiffers(i))
    }
}

/// A file of a package found by name.
#[derive(Clone)]
pub struct FoundFile {
    /// Its package-relative name (the member's own, when it differs in case).
    pub name: String,
    /// Its bytes.
    pub data: Arc<dyn ReadAt>,
    /// The permission bits it allows (see [`Member::mode`]).
    pub mode: u32,
}

/// Finds the files of one package by name (see the module comment).
pub struct FileFinder<'a> {
    package: &'a Package,
    names: MemberNames<'a>,
}

impl<'a> FileFinder<'a> {
    /// A finder over the members of `package` (and, for a folder package, its folder).
    pub fn new(package: &'a Package) -> Self {
        FileFinder {
            package,
            names: MemberNames::new(&package.members),
        }
    }

    /// The file `name` designates seen from `folder`; `None` when there is none, or the name
    /// is refused (absolute, `..`). Errors come from opening a file of a folder package
    /// that is there (a symbolic link, not a regular file, an I/O error).
    pub fn find(&self, folder: &str, name: &str) -> Result<Option<FoundFile>> {
        let Ok(full) = name_in(folder, name) else {
            return Ok(None);
        };
        let member = self
            .names
            .find(&full)
            .and_then(|m| self.package.members.get(m.index()));
        if let Some(m) = member {
            return Ok(Some(FoundFile {
                name: m.name.clone(),
                data: m.data.clone(),
                mode: m.mode,
            }));
        }
        Ok(self.package.open_in_package(&full)?.map(|m| FoundFile {
            name: full,
            data: m.data,
            mode: m.mode,
        }))
    }
}

/// The name of the descriptor `descriptor`'s manifest (`ext` = `"mf"`) or certificate
/// (`"cert"`): its file name with the last four bytes (`.ovf`) replaced.
pub fn sibling_name(descriptor: &str, ext: &str) -> String {
    let f = file_name(descriptor);
    let base = f.get(..f.len().saturating_sub(4)).unwrap_or(f);
    format!("{base}.{ext}")
}

/// The regular members beside the descriptor member `descriptor` named like it with
/// extension `ext`, ignoring ASCII case, in member order (an OVA's rule: the first is used).
pub fn siblings<'m>(
    members: &'m [Member],
    descriptor: &str,
    ext: &str,
) -> impl Iterator<Item = usize> + 'm {
    let folder = parent(descriptor).to_string();
    let wanted = sibling_name(descriptor, ext);
    members.iter().enumerate().filter_map(move |(i, m)| {
        (m.kind == MemberKind::Regular
            && parent(&m.name) == folder
            && file_name(&m.name).eq_ignore_ascii_case(&wanted))
        .then_some(i)
    })
}

/// Of the names `listing` of a folder, the one that is `wanted` ignoring ASCII case: the
/// exact name if present, else the first match in byte order (deterministic, whatever
/// order the folder lists its entries in).
pub fn pick_sibling<S: AsRef<str>>(listing: &[S], wanted: &str) -> Option<String> {
    let mut matches: Vec<&str> = listing
        .iter()
        .map(AsRef::as_ref)
        .filter(|n| n.eq_ignore_ascii_case(wanted))
        .collect();
    if matches.contains(&wanted) {
        return Some(wanted.to_string());
    }
    matches.sort_unstable();
    matches.first().map(|n| n.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn member(name: &str, kind: MemberKind) -> Member {
        Member {
            name: name.to_string(),
            size: 0,
            mode: 0o444,
            mtime: 0,
            data: Arc::new(Vec::<u8>::new()),
            kind,
            data_offset: None,
        }
    }

    fn regular(names: &[&str]) -> Vec<Member> {
        names
            .iter()
            .map(|n| member(n, MemberKind::Regular))
            .collect()
    }

    #[test]
    fn exact_then_unambiguous_ascii_case() {
        let m = regular(&["d/Disk1.vmdk", "d/a.vmdk", "d/A.vmdk", "é.vmdk"]);
        let names = MemberNames::new(&m);
        assert_eq!(names.find("d/Disk1.vmdk"), Some(NameMatch::Exact(0)));
        assert_eq!(names.find("D/DISK1.VMDK"), Some(NameMatch::CaseDiffers(0)));
        // Two members differ only in case: the exact name finds each, a third case neither.
        assert_eq!(names.find("d/A.vmdk"), Some(NameMatch::Exact(2)));
        assert_eq!(names.find("d/a.VMDK"), None);
        // Only ASCII letters are folded.
        assert_eq!(names.find("É.vmdk"), None);
        assert_eq!(names.find("é.VMDK"), Some(NameMatch::CaseDiffers(3)));
        assert_eq!(names.find("missing"), None);
    }

    #[test]
    fn only_regular_members_are_found() {
        let m = vec![
            member("x.vmdk", MemberKind::Directory),
            member("y.vmdk", MemberKind::Regular),
        ];
        let names = MemberNames::new(&m);
        assert_eq!(names.find("x.vmdk"), None);
        assert_eq!(names.find("Y.vmdk").map(NameMatch::index), Some(1));
    }

    #[test]
    fn names_are_normalised_relative_to_their_folder() {
        assert_eq!(name_in("d", "./x//y.vmdk").unwrap(), "d/x/y.vmdk");
        assert!(name_in("d", "x/../y.vmdk").is_err());
        assert_eq!(name_in("", "y.vmdk").unwrap(), "y.vmdk");
        assert!(name_in("d", "../y.vmdk").is_err());
        assert!(name_in("", "/etc/passwd").is_err());
    }

    #[test]
    fn sibling_rules() {
        assert_eq!(sibling_name("d/x.ovf", "mf"), "x.mf");
        assert_eq!(sibling_name("x.OVF", "cert"), "x.cert");
        let m = regular(&["d/x.ovf", "X.MF", "d/X.MF", "d/x.mf", "d/x.cert"]);
        assert_eq!(siblings(&m, "d/x.ovf", "mf").collect::<Vec<_>>(), [2, 3]);
        assert_eq!(siblings(&m, "d/x.ovf", "cert").collect::<Vec<_>>(), [4]);
        assert_eq!(siblings(&m, "x.ovf", "mf").collect::<Vec<_>>(), [1]);
        let listing = ["x.MF", "X.mf", "x.mf", "y.mf"];
        assert_eq!(pick_sibling(&listing, "x.mf").as_deref(), Some("x.mf"));
        assert_eq!(pick_sibling(&listing[..2], "x.mf").as_deref(), Some("X.mf"));
        assert_eq!(pick_sibling(&listing, "z.mf"), None);
    }
}
