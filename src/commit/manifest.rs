//! Manifest refresh for commits: find the lines that name the descriptor, recompute their
//! values in each line's own algorithm, keep every other byte (docs/formats.md §3.1).
//!
//! Lines are found by the one manifest parser ([`crate::verify::manifest`]), so a commit
//! refreshes every dialect that `ovafs verify` reads: leading blanks, `ALG(name)= hex`,
//! `ALG (name) = hex` (BSD / VirtualBox), `SHA2-256(...)` (OpenSSL 3), CRLF line ends,
//! upper-case hex, blank lines and trailing space padding (ovftool 4.0 pads the whole file
//! with spaces). Only the value's bytes are replaced, in the case of the value they
//! replace, so line ends, spacing and padding stay byte for byte. When a value's length
//! changes (`SIZE(...)` lines, or a malformed digest) and the file ends in space padding,
//! the padding absorbs the difference so the file keeps its length.
//!
//! A manifest that does not list the descriptor is left as it is. A change set
//! ([`refresh_members`]) refreshes the lines of every member it replaces, removes the lines
//! of the members it removes, and appends lines for the members it adds in the style and
//! algorithms of the descriptor's lines; no other line is touched.

use crate::archive::names::normalize_str;
use crate::verify::digest::DigestAlgorithm;
use crate::verify::manifest::{self as mf, Algorithm, HexCase};

/// Whether a line's name designates `file_name` (a name in the manifest's own folder):
/// equal as written, or after the normalisation `ovafs verify` resolves names with
/// (`./a.ovf`, `.//a.ovf`).
pub fn names_file(listed: &str, file_name: &str) -> bool {
    listed == file_name
        || matches!(
            (normalize_str(listed), normalize_str(file_name)),
            (Ok(a), Ok(b)) if a == b
        )
}

/// A member's new size and digests, in the algorithms a manifest uses: what its lines are
/// refreshed with. Computed from bytes ([`MemberValues::of_bytes`]) or while a large content
/// is copied (the committer's streaming copy); [`MemberValues::placeholder`] has the right
/// lengths, so a manifest refreshed with it has its final length before the digests are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValues {
    /// Size in bytes.
    pub size: u64,
    /// The digests, one per algorithm.
    pub digests: Vec<(DigestAlgorithm, Vec<u8>)>,
}

impl MemberValues {
    /// The values of `data` in `algorithms`.
    pub fn of_bytes(data: &[u8], algorithms: &[DigestAlgorithm]) -> MemberValues {
        MemberValues {
            size: data.len() as u64,
            digests: algorithms.iter().map(|a| (*a, a.digest(data))).collect(),
        }
    }

    /// Zero digests of the right lengths for a member of `size` bytes.
    pub fn placeholder(size: u64, algorithms: &[DigestAlgorithm]) -> MemberValues {
        MemberValues {
            size,
            digests: algorithms
                .iter()
                .map(|a| (*a, vec![0u8; a.digest(b"").len()]))
                .collect(),
        }
    }

    /// The value a line of algorithm `alg` holds: lowercase hex digest, or the decimal size;
    /// `None` for an algorithm ovafs cannot compute (or was not asked to).
    fn value(&self, alg: &Algorithm) -> Option<String> {
        if *alg == Algorithm::Size {
            return Some(self.size.to_string());
        }
        let want = DigestAlgorithm::from_algorithm(alg)?;
        self.digests
            .iter()
            .find(|(a, _)| *a == want)
            .map(|(_, d)| mf::to_hex(d))
    }
}

/// The value a line of algorithm `alg` holds for `data` (tests).
#[cfg(test)]
fn value_for(alg: &Algorithm, data: &[u8]) -> Option<String> {
    let algorithms: Vec<_> = DigestAlgorithm::from_algorithm(alg).into_iter().collect();
    MemberValues::of_bytes(data, &algorithms).value(alg)
}

/// The algorithms ovafs can compute among those the manifest's lines use (SHA-256 when it uses
/// none): what a changed member's content is digested in.
pub fn algorithms(mf: &[u8]) -> Result<Vec<DigestAlgorithm>, ManifestError> {
    let parsed = mf::parse(mf)?;
    let mut algs: Vec<DigestAlgorithm> = parsed
        .entries
        .iter()
        .filter_map(|e| DigestAlgorithm::from_algorithm(&e.algorithm))
        .collect();
    algs.sort();
    algs.dedup();
    if algs.is_empty() {
        algs.push(DigestAlgorithm::Sha256);
    }
    Ok(algs)
}

/// The algorithm of the manifest's own lines for signing it: that of the first line naming
/// `descriptor`, else of the first line (SHA-256 when none is computable).
pub fn primary_algorithm(mf: &[u8], descriptor: &str) -> Result<DigestAlgorithm, ManifestError> {
    let parsed = mf::parse(mf)?;
    let first = parsed
        .entries
        .iter()
        .find(|e| names_file(&e.name, descriptor))
        .or(parsed.entries.first());
    Ok(first
        .and_then(|e| DigestAlgorithm::from_algorithm(&e.algorithm))
        .unwrap_or(DigestAlgorithm::Sha256))
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
    /// The manifest is beyond the parser's limits (size, lines, entries).
    #[error(transparent)]
    Unreadable(#[from] mf::ManifestError),
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
    let values = MemberValues::of_bytes(content, &algorithms(mf)?);
    refresh_members(
        mf,
        &Changes {
            set: vec![(file_name, &values)],
            ..Changes::default()
        },
    )
}

/// What changes in a manifest: members whose lines get new values, members whose lines are
/// added (in the style and algorithms of the descriptor's lines, else of the first line) and
/// members whose lines are removed. A member the manifest does not list is not added by
/// `set` (a manifest that leaves a file out keeps leaving it out).
#[derive(Debug, Default)]
pub struct Changes<'a> {
    /// Lines refreshed.
    pub set: Vec<(&'a str, &'a MemberValues)>,
    /// Lines added after the last line.
    pub add: Vec<(&'a str, &'a MemberValues)>,
    /// Lines removed (with their line ends).
    pub remove: Vec<&'a str>,
}

/// Applies `changes` to `mf`, keeping every other byte; trailing space padding absorbs a
/// change of length when there is enough of it.
pub fn refresh_members(mf: &[u8], changes: &Changes<'_>) -> Result<Refresh, ManifestError> {
    let parsed = mf::parse(mf)?;
    let unsupported = |name: &str, label: &str| ManifestError::UnsupportedAlgorithm {
        name: name.to_string(),
        label: label.to_string(),
    };
    // Edits as (range replaced, new bytes), in manifest order; none overlap.
    let mut edits: Vec<(std::ops::Range<usize>, Vec<u8>)> = Vec::new();
    let mut listed = false;
    for entry in &parsed.entries {
        if let Some((name, values)) = changes
            .set
            .iter()
            .find(|(name, _)| names_file(&entry.name, name))
        {
            listed = true;
            let mut new = values
                .value(&entry.algorithm)
                .ok_or_else(|| unsupported(name, &entry.algorithm_token))?;
            if entry.style.hex_case == HexCase::Upper {
                new.make_ascii_uppercase();
            }
            edits.push((entry.value_span(), new.into_bytes()));
        } else if changes
            .remove
            .iter()
            .any(|name| names_file(&entry.name, name))
        {
            edits.push((entry.span.clone(), Vec::new()));
        }
    }
    if !changes.add.is_empty() {
        edits.push(added_lines(mf, &parsed, changes)?);
    }
    let mut out = Vec::with_capacity(mf.len());
    let mut last = 0;
    for (range, bytes) in &edits {
        out.extend_from_slice(&mf[last..range.start]);
        out.extend_from_slice(bytes);
        last = range.end;
    }
    out.extend_from_slice(&mf[last..]);
    keep_length_with_padding(mf, &mut out);
    let changed = out != mf;
    Ok(Refresh {
        bytes: out,
        listed,
        changed,
    })
}

/// The lines for the added members, inserted after the last line: one per algorithm of the
/// template line's member (the descriptor's lines, named first in `set`, else the first
/// member's), each in the template line's style.
fn added_lines(
    mf: &[u8],
    parsed: &mf::Manifest,
    changes: &Changes<'_>,
) -> Result<(std::ops::Range<usize>, Vec<u8>), ManifestError> {
    let template = changes
        .set
        .first()
        .and_then(|(name, _)| parsed.entries.iter().find(|e| names_file(&e.name, name)))
        .or(parsed.entries.first());
    let (templates, at): (Vec<&mf::ManifestEntry>, usize) = match template {
        Some(t) => (
            parsed
                .entries
                .iter()
                .filter(|e| names_file(&e.name, &t.name))
                .collect(),
            parsed.entries.iter().map(|e| e.span.end).max().unwrap_or(0),
        ),
        None => (Vec::new(), if parsed.bom { 3 } else { 0 }),
    };
    let canonical = mf::ManifestStyle {
        line_end: mf::LineEnd::Lf,
        ..mf::ManifestStyle::canonical()
    };
    let lines: Vec<(Algorithm, mf::ManifestStyle)> = if templates.is_empty() {
        vec![(Algorithm::Sha256, canonical)]
    } else {
        templates
            .iter()
            .map(|e| {
                let mut style = e.style.clone();
                if style.line_end == mf::LineEnd::None {
                    style.line_end = mf::LineEnd::Lf;
                }
                (e.algorithm.clone(), style)
            })
            .collect()
    };
    let mut text = Vec::new();
    // A last line without a line end gets one before the new lines.
    if let Some(prev) = parsed.entries.iter().max_by_key(|e| e.span.end)
        && prev.style.line_end == mf::LineEnd::None
    {
        text.extend_from_slice(lines[0].1.line_end.as_str().as_bytes());
    }
    for (name, values) in &changes.add {
        for (alg, style) in &lines {
            let value = values
                .value(alg)
                .ok_or_else(|| ManifestError::UnsupportedAlgorithm {
                    name: name.to_string(),
                    label: style.algorithm_token(alg),
                })?;
            text.extend_from_slice(mf::format_line(style, alg, name, &value).as_bytes());
        }
    }
    let at = at.min(mf.len());
    Ok((at..at, text))
}

/// Trailing space padding (ovftool 4.0) keeps the file's length when it can.
fn keep_length_with_padding(old: &[u8], out: &mut Vec<u8>) {
    if out.len() == old.len() {
        return;
    }
    let pad = old.iter().rev().take_while(|&&b| b == b' ').count();
    if pad == 0 {
        return;
    }
    if out.len() > old.len() {
        let excess = out.len() - old.len();
        // The padding is still at the end of `out` (only values changed before it).
        let out_pad = out.iter().rev().take_while(|&&b| b == b' ').count();
        if out_pad >= excess {
            out.truncate(old.len());
        }
    } else {
        out.resize(old.len(), b' ');
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const D: &[u8] = b"<Envelope/>\n";

    fn sha(alg: Algorithm) -> String {
        value_for(&alg, D).unwrap()
    }

    /// Refreshes `template` of `a.ovf` lines whose `{}` are filled with zeros, and expects
    /// each `{}` filled with the digest of `D` in the algorithm at its position.
    fn assert_refreshed(template: &str, algs: &[Algorithm]) {
        let fill = |value: &dyn Fn(&Algorithm) -> String| {
            algs.iter()
                .fold(template.to_string(), |t, a| t.replacen("{}", &value(a), 1))
        };
        let old = fill(&|a| "0".repeat(sha(a.clone()).len()));
        let r = refresh(old.as_bytes(), "a.ovf", D).unwrap();
        assert_eq!(
            String::from_utf8(r.bytes).unwrap(),
            fill(&|a| sha(a.clone())),
            "{template}"
        );
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
        let cases = [
            (
                "SHA1 (a.ovf) = {}\r\nSHA1 (d.vmdk) = ff\r\n",
                Algorithm::Sha1,
            ),
            ("SHA2-256(a.ovf)= {}\n", Algorithm::Sha256),
            ("  sha512( a.ovf)=\t{}  \n", Algorithm::Sha512),
            ("SHA256(./a.ovf)= {}", Algorithm::Sha256),
            ("SHA256(.//a.ovf)= {}", Algorithm::Sha256),
        ];
        for (template, alg) in cases {
            let old = template.replace("{}", &"0".repeat(value_for(&alg, b"").unwrap().len()));
            let r = refresh(old.as_bytes(), "a.ovf", D).unwrap();
            let listed = !template.contains("( a.ovf)");
            assert_eq!(r.listed, listed, "{template}");
            if listed {
                assert_eq!(
                    String::from_utf8(r.bytes).unwrap(),
                    template.replace("{}", &sha(alg.clone())),
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
        let r = refresh(old.as_bytes(), "a (1).ovf", D).unwrap();
        let want = old.replace("= 00", &format!("= {}", sha(Algorithm::Sha1)));
        assert_eq!(String::from_utf8(r.bytes).unwrap(), want);
        // A malformed digest of the descriptor is replaced by a good one.
        let r = refresh(b"SHA1(a.ovf)= zz\n", "a.ovf", D).unwrap();
        assert_eq!(
            r.bytes,
            format!("SHA1(a.ovf)= {}\n", sha(Algorithm::Sha1)).into_bytes()
        );
    }

    #[test]
    fn sha224_lines_are_refreshed() {
        assert_refreshed("SHA224(a.ovf)= {}\n", &[Algorithm::Sha224]);
    }

    #[test]
    fn a_byte_order_mark_is_kept() {
        assert_refreshed("\u{feff}SHA256(a.ovf)= {}\r\n", &[Algorithm::Sha256]);
    }

    #[test]
    fn every_line_naming_the_file_is_refreshed() {
        assert_refreshed(
            "SHA1(a.ovf)= {}\nSHA256(a.ovf)= {}\n",
            &[Algorithm::Sha1, Algorithm::Sha256],
        );
    }

    #[test]
    fn labels_normalise() {
        assert_refreshed(
            "sha-256(a.ovf)= {}\nSHA2-512(a.ovf)= {}\n",
            &[Algorithm::Sha256, Algorithm::Sha512],
        );
    }

    fn values(data: &[u8]) -> MemberValues {
        MemberValues::of_bytes(
            data,
            &[
                DigestAlgorithm::Sha1,
                DigestAlgorithm::Sha256,
                DigestAlgorithm::Sha512,
            ],
        )
    }

    #[test]
    fn members_set_added_and_removed_in_the_manifests_style() {
        let v = values(b"new disk");
        let added = values(b"added");
        let sha = |a: Algorithm, d: &[u8]| value_for(&a, d).unwrap();
        // BSD style with CRLF: a new line copies the descriptor's line.
        let old = "SHA256 (a.ovf) = 00\r\nSHA256 (d1.vmdk) = 11\r\nSHA256 (d2.vmdk) = 22\r\n";
        let changes = Changes {
            set: vec![("a.ovf", &v), ("d1.vmdk", &v)],
            add: vec![("d3.vmdk", &added)],
            remove: vec!["d2.vmdk"],
        };
        let r = refresh_members(old.as_bytes(), &changes).unwrap();
        let s256 = sha(Algorithm::Sha256, b"new disk");
        let want = format!(
            "SHA256 (a.ovf) = {s256}\r\nSHA256 (d1.vmdk) = {s256}\r\nSHA256 (d3.vmdk) = {}\r\n",
            sha(Algorithm::Sha256, b"added")
        );
        assert_eq!(String::from_utf8(r.bytes).unwrap(), want);
        // Upper-case SHA-1 with SIZE lines, the last line without a line end.
        let old = "SHA1(a.ovf)= AA\nSIZE(a.ovf)= 5\nSHA1(d.vmdk)= BB";
        let changes = Changes {
            set: vec![("a.ovf", &v)],
            add: vec![("e.vmdk", &added)],
            remove: vec![],
        };
        let r = refresh_members(old.as_bytes(), &changes).unwrap();
        let want = format!(
            "SHA1(a.ovf)= {}\nSIZE(a.ovf)= 8\nSHA1(d.vmdk)= BB\nSHA1(e.vmdk)= {}\nSIZE(e.vmdk)= 5\n",
            sha(Algorithm::Sha1, b"new disk").to_uppercase(),
            sha(Algorithm::Sha1, b"added").to_uppercase()
        );
        assert_eq!(String::from_utf8(r.bytes).unwrap(), want);
    }

    #[test]
    fn placeholders_give_the_final_length() {
        let old = b"SHA512(a.ovf)= 00\nSHA512(d.vmdk)= 11\nSIZE(d.vmdk)= 3\n";
        let algs = algorithms(old).unwrap();
        assert_eq!(algs, [DigestAlgorithm::Sha512]);
        let real = MemberValues::of_bytes(&[7; 1000], &algs);
        let fake = MemberValues::placeholder(1000, &algs);
        let with = |v: &MemberValues| {
            refresh_members(
                old,
                &Changes {
                    set: vec![("d.vmdk", v)],
                    ..Changes::default()
                },
            )
            .unwrap()
            .bytes
        };
        assert_eq!(with(&real).len(), with(&fake).len());
        assert_ne!(with(&real), with(&fake));
    }
}
