//! Manifest refresh for commits: find the lines that name the descriptor, recompute their
//! digests in each line's own algorithm, keep every other byte (formats.md §3.1).
//!
//! The locator is lenient, like the readers in the wild: leading blanks, `ALG(name)= hex`,
//! `ALG (name) = hex` (BSD / VirtualBox), `SHA2-256(...)` (OpenSSL 3), CRLF line ends,
//! upper-case hex, blank lines and trailing space padding (ovftool 4.0 pads the whole file
//! with spaces) are all found. A refreshed digest keeps the case of the one it replaces, so
//! line ends, spacing and padding stay byte for byte. When a digest's length changes (only
//! `SIZE(...)` lines, or a malformed digest) and the file ends in space padding, the padding
//! absorbs the difference so the file keeps its length.
//!
//! A manifest that does not list the descriptor is left as it is. Lines naming other files
//! are never touched: only the descriptor changes in a commit.
//!
//! This is deliberately minimal and self-contained; the full manifest parser and verifier
//! live in `verify` and the two can be unified later.

use std::ops::Range;

use sha1::Sha1;
use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

/// A digest algorithm a manifest line can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// SHA-1 (OVF 1.x, ovftool before 4.2).
    Sha1,
    /// SHA-224.
    Sha224,
    /// SHA-256 (OVF 2.x, ovftool 4.2+).
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512 (open-vmdk for vmx-15+).
    Sha512,
    /// `SIZE(name)= <decimal>` (accepted by VirtualBox's IPRT).
    Size,
}

impl Algorithm {
    /// The algorithm a line's label names: case-insensitive, dashes ignored, `SHA2-256`
    /// read as SHA-256. `None` for anything else (MD5, unknown labels).
    pub fn from_label(label: &str) -> Option<Algorithm> {
        let norm: String = label
            .chars()
            .filter(|&c| c != '-' && c != '_')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        Some(match norm.as_str() {
            "SHA1" => Algorithm::Sha1,
            "SHA224" | "SHA2224" => Algorithm::Sha224,
            "SHA256" | "SHA2256" => Algorithm::Sha256,
            "SHA384" | "SHA2384" => Algorithm::Sha384,
            "SHA512" | "SHA2512" => Algorithm::Sha512,
            "SIZE" => Algorithm::Size,
            _ => return None,
        })
    }

    /// The value of a line for `data`: lowercase hex digest, or the decimal size.
    pub fn value(self, data: &[u8]) -> String {
        fn hex(bytes: &[u8]) -> String {
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        }
        match self {
            Algorithm::Sha1 => hex(&Sha1::digest(data)),
            Algorithm::Sha224 => hex(&Sha224::digest(data)),
            Algorithm::Sha256 => hex(&Sha256::digest(data)),
            Algorithm::Sha384 => hex(&Sha384::digest(data)),
            Algorithm::Sha512 => hex(&Sha512::digest(data)),
            Algorithm::Size => data.len().to_string(),
        }
    }
}

/// One manifest line, located by byte ranges into the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The algorithm label as written (`SHA256`, `SHA2-256`, `sha1`...).
    pub label: Range<usize>,
    /// The file name between the parentheses.
    pub name: Range<usize>,
    /// The digest (or size) value.
    pub value: Range<usize>,
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Locates the line `mf[start..end]` (without its `\n`), or `None` when it is not a digest
/// line (blank, padding, garbage).
fn parse_line(mf: &[u8], start: usize, end: usize) -> Option<Line> {
    let line = &mf[start..end];
    let mut i = line.iter().position(|&b| !is_blank(b))?;
    let label_start = i;
    while i < line.len() && (line[i].is_ascii_alphanumeric() || line[i] == b'-') {
        i += 1;
    }
    if i == label_start {
        return None;
    }
    let label = label_start..i;
    while i < line.len() && is_blank(line[i]) {
        i += 1;
    }
    if line.get(i) != Some(&b'(') {
        return None;
    }
    let name_start = i + 1;
    // The name runs to the last `)` that is followed by optional blanks and `=`: names may
    // themselves hold parentheses.
    let close = (name_start..line.len()).rev().find(|&j| {
        line[j] == b')'
            && line[j + 1..]
                .iter()
                .find(|&&b| !is_blank(b))
                .is_some_and(|&b| b == b'=')
    })?;
    let eq = close + 1 + line[close + 1..].iter().position(|&b| b == b'=')?;
    let mut v = eq + 1;
    while v < line.len() && is_blank(line[v]) {
        v += 1;
    }
    let value_start = v;
    while v < line.len() && line[v].is_ascii_hexdigit() {
        v += 1;
    }
    if v == value_start
        || !line[v..]
            .iter()
            .all(|&b| is_blank(b) || b == b'\r' || b == 0)
    {
        return None;
    }
    Some(Line {
        label: start + label.start..start + label.end,
        name: start + name_start..start + close,
        value: start + value_start..start + v,
    })
}

/// Every digest line of `mf`, in order. Bounded by the manifest's length: one pass.
pub fn lines(mf: &[u8]) -> Vec<Line> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < mf.len() {
        let end = mf[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(mf.len(), |p| start + p);
        if let Some(l) = parse_line(mf, start, end) {
            out.push(l);
        }
        start = end + 1;
    }
    out
}

/// Whether a line's name designates `file_name` (a name in the manifest's own folder).
fn names_file(listed: &[u8], file_name: &str) -> bool {
    listed == file_name.as_bytes() || listed.strip_prefix(b"./") == Some(file_name.as_bytes())
}

/// A manifest cannot be refreshed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The descriptor's line uses an algorithm we cannot compute.
    #[error("manifest line for {name:?} uses the unsupported algorithm {label:?}")]
    UnsupportedAlgorithm {
        /// The file named.
        name: String,
        /// The label as written.
        label: String,
    },
}

/// The manifest after a refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refresh {
    /// The new manifest bytes (the old ones when nothing changed).
    pub bytes: Vec<u8>,
    /// Whether the manifest lists the file at all.
    pub listed: bool,
    /// Whether any byte changed.
    pub changed: bool,
}

/// Recomputes, in `mf`, the value of every line naming `file_name` for the new `content`.
/// Other bytes are kept; when the length changes, trailing space padding absorbs the
/// difference if there is enough of it.
pub fn refresh(mf: &[u8], file_name: &str, content: &[u8]) -> Result<Refresh, ManifestError> {
    let mut out = Vec::with_capacity(mf.len());
    let mut listed = false;
    let mut last = 0;
    for line in lines(mf) {
        if !names_file(&mf[line.name.clone()], file_name) {
            continue;
        }
        listed = true;
        let label = String::from_utf8_lossy(&mf[line.label.clone()]).into_owned();
        let alg =
            Algorithm::from_label(&label).ok_or_else(|| ManifestError::UnsupportedAlgorithm {
                name: file_name.to_string(),
                label: label.clone(),
            })?;
        let old = &mf[line.value.clone()];
        let mut new = alg.value(content).into_bytes();
        let upper =
            old.iter().any(u8::is_ascii_uppercase) && !old.iter().any(u8::is_ascii_lowercase);
        if upper {
            new.make_ascii_uppercase();
        }
        out.extend_from_slice(&mf[last..line.value.start]);
        out.extend_from_slice(&new);
        last = line.value.end;
    }
    out.extend_from_slice(&mf[last..]);

    // Trailing space padding (ovftool 4.0) keeps the file's length when it can.
    if out.len() != mf.len() {
        let pad = mf.iter().rev().take_while(|&&b| b == b' ').count();
        if pad > 0 {
            if out.len() > mf.len() {
                let excess = out.len() - mf.len();
                // The padding is still at the end of `out` (only digests changed before it).
                let out_pad = out.iter().rev().take_while(|&&b| b == b' ').count();
                if out_pad >= excess {
                    out.truncate(mf.len());
                }
            } else {
                out.resize(mf.len(), b' ');
            }
        }
    }
    let changed = out != mf;
    Ok(Refresh {
        bytes: out,
        listed,
        changed,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const D: &[u8] = b"<Envelope/>\n";

    fn sha(alg: Algorithm) -> String {
        alg.value(D)
    }

    #[test]
    fn canonical_sha256_line_is_refreshed_and_others_kept() {
        let mf = b"SHA256(a.ovf)= 00\nSHA256(disk1.vmdk)= abcd\n";
        let r = refresh(mf, "a.ovf", D).unwrap();
        assert!(r.listed && r.changed);
        let want = format!(
            "SHA256(a.ovf)= {}\nSHA256(disk1.vmdk)= abcd\n",
            sha(Algorithm::Sha256)
        );
        assert_eq!(String::from_utf8(r.bytes).unwrap(), want);
    }

    #[test]
    fn styles_are_kept_byte_for_byte() {
        let cases: &[(&str, Algorithm)] = &[
            (
                "SHA1 (a.ovf) = {}\r\nSHA1 (d.vmdk) = ff\r\n",
                Algorithm::Sha1,
            ),
            ("SHA2-256(a.ovf)= {}\n", Algorithm::Sha256),
            ("  sha512( a.ovf)=\t{}  \n", Algorithm::Sha512),
            ("SHA256(./a.ovf)= {}", Algorithm::Sha256),
        ];
        for (template, alg) in cases {
            let old = template.replace("{}", &"0".repeat(alg.value(b"").len()));
            let r = refresh(old.as_bytes(), "a.ovf", D).unwrap();
            let listed = !template.contains("( a.ovf)");
            assert_eq!(r.listed, listed, "{template}");
            if listed {
                assert_eq!(
                    String::from_utf8(r.bytes).unwrap(),
                    template.replace("{}", &sha(*alg)),
                    "{template}"
                );
            } else {
                assert_eq!(r.bytes, old.as_bytes());
            }
        }
    }

    #[test]
    fn uppercase_hex_stays_uppercase() {
        let old = format!("SHA1(a.ovf)= {}\n", "AB".repeat(20));
        let r = refresh(old.as_bytes(), "a.ovf", D).unwrap();
        let want = format!("SHA1(a.ovf)= {}\n", sha(Algorithm::Sha1).to_uppercase());
        assert_eq!(String::from_utf8(r.bytes).unwrap(), want);
    }

    #[test]
    fn ovftool_space_padding_is_kept() {
        let mut old = format!("SHA1(a.ovf)= {}\n", "0".repeat(40)).into_bytes();
        old.extend_from_slice(&[b' '; 94]);
        let r = refresh(&old, "a.ovf", D).unwrap();
        assert_eq!(r.bytes.len(), old.len());
        assert!(r.bytes.ends_with(&[b' '; 94]));
        // A manifest of padding only lists nothing.
        let r = refresh(&[b' '; 68], "a.ovf", D).unwrap();
        assert!(!r.listed && !r.changed);
    }

    #[test]
    fn size_lines_change_length_and_padding_absorbs_it() {
        let r = refresh(b"SIZE(a.ovf)= 5\n", "a.ovf", D).unwrap();
        assert_eq!(r.bytes, b"SIZE(a.ovf)= 12\n");
        let r = refresh(b"SIZE(a.ovf)= 5\n    ", "a.ovf", D).unwrap();
        assert_eq!(r.bytes, b"SIZE(a.ovf)= 12\n   ");
        let r = refresh(b"SIZE(a.ovf)= 12345\n", "a.ovf", D).unwrap();
        assert_eq!(r.bytes, b"SIZE(a.ovf)= 12\n");
        let r = refresh(b"SIZE(a.ovf)= 12345\n  ", "a.ovf", D).unwrap();
        assert_eq!(r.bytes, b"SIZE(a.ovf)= 12\n     ");
    }

    #[test]
    fn manifest_without_the_descriptor_is_unchanged() {
        let old = b"SHA256(disk.vmdk)= 00\n";
        let r = refresh(old, "a.ovf", D).unwrap();
        assert!(!r.listed && !r.changed);
        assert_eq!(r.bytes, old);
    }

    #[test]
    fn unknown_algorithm_for_the_descriptor_is_an_error() {
        let e = refresh(b"MD5(a.ovf)= 00\n", "a.ovf", D).unwrap_err();
        assert!(matches!(e, ManifestError::UnsupportedAlgorithm { .. }));
        // ... but not for another file.
        assert!(!refresh(b"MD5(b.ovf)= 00\n", "a.ovf", D).unwrap().changed);
    }

    #[test]
    fn names_with_parentheses_and_garbage_lines() {
        let old = "garbage\n\nSHA1(a (1).ovf)= 00\n(no label)= 1\nSHA1(x)= zz\n";
        let ls = lines(old.as_bytes());
        assert_eq!(ls.len(), 1);
        assert_eq!(&old.as_bytes()[ls[0].name.clone()], b"a (1).ovf");
        let r = refresh(old.as_bytes(), "a (1).ovf", D).unwrap();
        assert!(r.changed);
    }

    #[test]
    fn every_line_naming_the_file_is_refreshed() {
        let old = format!(
            "SHA1(a.ovf)= {}\nSHA256(a.ovf)= {}\n",
            "0".repeat(40),
            "0".repeat(64)
        );
        let r = refresh(old.as_bytes(), "a.ovf", D).unwrap();
        let want = format!(
            "SHA1(a.ovf)= {}\nSHA256(a.ovf)= {}\n",
            sha(Algorithm::Sha1),
            sha(Algorithm::Sha256)
        );
        assert_eq!(String::from_utf8(r.bytes).unwrap(), want);
    }

    #[test]
    fn labels_normalise() {
        assert_eq!(Algorithm::from_label("sha-256"), Some(Algorithm::Sha256));
        assert_eq!(Algorithm::from_label("SHA2-512"), Some(Algorithm::Sha512));
        assert_eq!(Algorithm::from_label("MD5"), None);
    }
}
