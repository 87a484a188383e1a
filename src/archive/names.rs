//! Member-name normalisation and checks (docs/formats.md §6 rule 3).
//!
//! A tar member name, or an OVF `ovf:href`, is turned into the relative path under which the
//! member appears in the mount: `/`-separated, no empty, `.` or `..` components, no leading
//! `./`, no trailing `/`. Names that cannot be shown safely are refused with a
//! [`NameProblem`] saying why; the caller decides whether that skips a member (the tar index)
//! or fails (an href in the package layer).
//!
//! Backslash is an ordinary character here, never a separator: `a\b` is one component, and
//! `C:\x` is a harmless relative name. The FUSE tree is virtual, so no host path is ever built
//! from a member name.

use std::fmt;

/// Longest normalised name accepted, in bytes (Linux `PATH_MAX`; docs/formats.md §6 rule 3).
pub const MAX_NAME_BYTES: usize = 4096;

/// Longest single component, in bytes: Linux `NAME_MAX`, the most a FUSE directory entry can
/// carry.
pub const MAX_COMPONENT_BYTES: usize = 255;

/// Why a name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameProblem {
    /// Nothing left after normalisation (``, `.`, `./`).
    Empty,
    /// Not valid UTF-8.
    NotUtf8,
    /// Contains a NUL byte.
    Nul,
    /// Contains a control character (C0, DEL or C1).
    ControlChar,
    /// Starts with `/`.
    Absolute,
    /// Has a `..` component.
    DotDot,
    /// Longer than [`MAX_NAME_BYTES`].
    TooLong,
    /// A component is longer than [`MAX_COMPONENT_BYTES`].
    ComponentTooLong,
}

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameProblem::Empty => "empty name",
            NameProblem::NotUtf8 => "name is not UTF-8",
            NameProblem::Nul => "name contains a NUL byte",
            NameProblem::ControlChar => "name contains a control character",
            NameProblem::Absolute => "absolute path",
            NameProblem::DotDot => "name has a '..' component",
            NameProblem::TooLong => "name longer than 4096 bytes",
            NameProblem::ComponentTooLong => "name component longer than 255 bytes",
        })
    }
}

/// Normalises raw name bytes (see the module comment), or says why they are refused.
pub fn normalize(raw: &[u8]) -> Result<String, NameProblem> {
    if raw.contains(&0) {
        return Err(NameProblem::Nul);
    }
    let s = std::str::from_utf8(raw).map_err(|_| NameProblem::NotUtf8)?;
    normalize_str(s)
}

/// [`normalize`] for a name that is already a string (an `ovf:href`).
pub fn normalize_str(s: &str) -> Result<String, NameProblem> {
    if s.len() > MAX_NAME_BYTES {
        return Err(NameProblem::TooLong);
    }
    if s.contains('\0') {
        return Err(NameProblem::Nul);
    }
    if s.chars().any(char::is_control) {
        return Err(NameProblem::ControlChar);
    }
    if s.starts_with('/') {
        return Err(NameProblem::Absolute);
    }
    let mut out = String::with_capacity(s.len());
    for comp in s.split('/') {
        match comp {
            "" | "." => continue,
            ".." => return Err(NameProblem::DotDot),
            c if c.len() > MAX_COMPONENT_BYTES => return Err(NameProblem::ComponentTooLong),
            c => {
                if !out.is_empty() {
                    out.push('/');
                }
                out.push_str(c);
            }
        }
    }
    if out.is_empty() {
        return Err(NameProblem::Empty);
    }
    Ok(out)
}

/// The folder part of a normalised name (`""` for a name at the root).
pub fn parent(name: &str) -> &str {
    match name.rfind('/') {
        Some(i) => &name[..i],
        None => "",
    }
}

/// The last component of a normalised name.
pub fn file_name(name: &str) -> &str {
    match name.rfind('/') {
        Some(i) => &name[i + 1..],
        None => name,
    }
}

/// Joins a normalised folder (possibly `""`) and a normalised relative name.
pub fn join(folder: &str, name: &str) -> String {
    if folder.is_empty() {
        name.to_string()
    } else {
        format!("{folder}/{name}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn normal_names_are_cleaned() {
        assert_eq!(normalize(b"disk1.vmdk").unwrap(), "disk1.vmdk");
        assert_eq!(normalize(b"./disk1.vmdk").unwrap(), "disk1.vmdk");
        assert_eq!(normalize(b"././a//b/./c/").unwrap(), "a/b/c");
        assert_eq!(normalize(b"dir/").unwrap(), "dir");
        assert_eq!(
            normalize("虚拟机-1.vmdk".as_bytes()).unwrap(),
            "虚拟机-1.vmdk"
        );
        assert_eq!(
            normalize(b"w2k3 32bit-disk1.vmdk").unwrap(),
            "w2k3 32bit-disk1.vmdk"
        );
    }

    #[test]
    fn backslash_is_a_literal_character() {
        assert_eq!(normalize(b"a\\b").unwrap(), "a\\b");
        assert_eq!(normalize(b"C:\\x").unwrap(), "C:\\x");
        assert_eq!(normalize(b"..\\x").unwrap(), "..\\x");
    }

    #[test]
    fn hostile_names_are_refused_with_the_reason() {
        assert_eq!(normalize(b""), Err(NameProblem::Empty));
        assert_eq!(normalize(b"./"), Err(NameProblem::Empty));
        assert_eq!(normalize(b"."), Err(NameProblem::Empty));
        assert_eq!(normalize(b"/etc/passwd"), Err(NameProblem::Absolute));
        assert_eq!(normalize(b"a/../../b"), Err(NameProblem::DotDot));
        assert_eq!(normalize(b".."), Err(NameProblem::DotDot));
        assert_eq!(normalize(b"a\0b"), Err(NameProblem::Nul));
        assert_eq!(normalize(b"a\nb"), Err(NameProblem::ControlChar));
        assert_eq!(normalize(b"a\x7fb"), Err(NameProblem::ControlChar));
        assert_eq!(
            normalize("a\u{85}b".as_bytes()),
            Err(NameProblem::ControlChar)
        );
        assert_eq!(normalize(b"\xff\xfe"), Err(NameProblem::NotUtf8));
        assert_eq!(normalize(&[b'a'; 4097]), Err(NameProblem::TooLong));
        assert_eq!(normalize(&[b'a'; 256]), Err(NameProblem::ComponentTooLong));
        assert!(normalize(&[b'a'; 255]).is_ok());
    }

    #[test]
    fn parent_file_name_and_join() {
        assert_eq!(parent("a/b/c.ovf"), "a/b");
        assert_eq!(parent("c.ovf"), "");
        assert_eq!(file_name("a/b/c.ovf"), "c.ovf");
        assert_eq!(file_name("c.ovf"), "c.ovf");
        assert_eq!(join("", "x"), "x");
        assert_eq!(join("a/b", "x"), "a/b/x");
    }
}
