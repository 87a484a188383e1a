//! The OVF manifest (`.mf`): a lenient parser for every dialect seen in the wild, and a
//! formatter that writes a line back in the style it was read in (docs/formats.md §3.1, §6 rules
//! 6 and 14).
//!
//! Canonical line (DSP0243): `SHA256(name)= hex\n`. Also read:
//! - `SHA256 (name) = hex` (BSD / `sha256sum --tag` / VirtualBox's IPRT writer),
//! - `SHA2-256(name)= hex` (OpenSSL 3 `openssl sha256`), `SHA-256(...)`, lowercase names,
//! - `SHA1`, `SHA224`, `SHA384`, `SHA512`; `MD5(...)` and `SIZE(...)= <decimal>` (IPRT) are parsed and
//!   reported as unsupported, never checked,
//! - CRLF line ends, blank lines, leading and trailing whitespace, the space padding ovftool
//!   appends to fill its last block, a UTF-8 byte order mark, uppercase hex, names with spaces
//!   and parentheses (the name runs from the first `(` to the last `)` before the `=` that
//!   precedes the value).
//!
//! Parse leniently, judge strictly: [`parse`] never fails on content (only on size limits),
//! it returns every line it recognised as a [`ManifestEntry`] with its byte span, line number
//! and [`ManifestStyle`], and every other non-blank line as a [`BadLine`]. Each entry carries
//! an [`EntryProblem`] when its value is not what its algorithm needs (not hex, wrong digest
//! length). What is a failure is decided by the caller ([`super::verify_package`]).
//!
//! [`format_line`] writes `ALG(name)= hex` in a given style; re-formatting an entry in its own
//! style reproduces the original line byte for byte (tested for every dialect).
//! [`ManifestEntry::value_span`] locates a value in the manifest, which is how a commit
//! (`crate::commit::manifest`) refreshes the descriptor's digest and nothing else: this is
//! the one manifest parser, for verifying and for writing.
//!
//! Not here: reading members, computing digests, the certificate.

use std::fmt;
use std::ops::Range;

/// Largest manifest accepted: 4 MiB, as VirtualBox caps it when signing (docs/formats.md §6 rule
/// 6). A real manifest has one short line per file.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// Largest number of lines (blank ones included) accepted: far above any real manifest (one
/// line per member, and the archive index caps members at 100 000), low enough that a
/// hostile manifest of empty lines is refused before it costs anything.
pub const MAX_LINES: usize = 1_000_000;

/// Largest number of entries accepted (the archive index caps members at 100 000; chunked
/// files and several algorithms per file leave room).
pub const MAX_ENTRIES: usize = 200_000;

/// Bad lines recorded in full; further ones are only counted ([`Manifest::bad_line_count`]).
pub const MAX_BAD_LINES_KEPT: usize = 100;

/// The manifest as a whole cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Larger than [`MAX_MANIFEST_BYTES`].
    #[error("manifest is {size} bytes, above the limit of {limit}")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// More lines than [`MAX_LINES`].
    #[error("manifest has more than {limit} lines")]
    TooManyLines {
        /// The limit.
        limit: usize,
    },
    /// More entries than [`MAX_ENTRIES`].
    #[error("manifest has more than {limit} entries")]
    TooManyEntries {
        /// The limit.
        limit: usize,
    },
}

/// A manifest or certificate algorithm.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-1 (OVF 1.x, ovftool before 4.2).
    Sha1,
    /// SHA-224 (rare; accepted by OpenSSL-based checkers).
    Sha224,
    /// SHA-256 (OVF 2.x, ovftool 4.2+).
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512 (open-vmdk for vmx-15+).
    Sha512,
    /// MD5 (IPRT): parsed, never checked.
    Md5,
    /// `SIZE(name)= <decimal>` (IPRT): parsed, never checked.
    Size,
    /// Anything else, as written.
    Other(String),
}

impl Algorithm {
    /// Recognises an algorithm token: case-insensitive, `SHA-256` and `SHA2-256` mean
    /// `SHA256`.
    pub fn from_token(token: &str) -> Algorithm {
        let t: String = token
            .chars()
            .filter(|&c| c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        match t.as_str() {
            "SHA1" => Algorithm::Sha1,
            "SHA224" | "SHA2224" => Algorithm::Sha224,
            "SHA256" | "SHA2256" => Algorithm::Sha256,
            "SHA384" | "SHA2384" => Algorithm::Sha384,
            "SHA512" | "SHA2512" => Algorithm::Sha512,
            "MD5" => Algorithm::Md5,
            "SIZE" => Algorithm::Size,
            _ => Algorithm::Other(token.to_string()),
        }
    }

    /// The canonical name (`SHA256`), or the token as written for [`Algorithm::Other`].
    pub fn name(&self) -> &str {
        match self {
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha224 => "SHA224",
            Algorithm::Sha256 => "SHA256",
            Algorithm::Sha384 => "SHA384",
            Algorithm::Sha512 => "SHA512",
            Algorithm::Md5 => "MD5",
            Algorithm::Size => "SIZE",
            Algorithm::Other(s) => s,
        }
    }

    /// Length of the digest in bytes, for the algorithms whose value is a hex digest.
    pub fn digest_len(&self) -> Option<usize> {
        match self {
            Algorithm::Sha1 => Some(20),
            Algorithm::Sha224 => Some(28),
            Algorithm::Sha256 => Some(32),
            Algorithm::Sha384 => Some(48),
            Algorithm::Sha512 => Some(64),
            Algorithm::Md5 => Some(16),
            Algorithm::Size | Algorithm::Other(_) => None,
        }
    }

    /// Whether ovafs computes and checks this algorithm.
    pub fn is_supported(&self) -> bool {
        matches!(
            self,
            Algorithm::Sha1
                | Algorithm::Sha224
                | Algorithm::Sha256
                | Algorithm::Sha384
                | Algorithm::Sha512
        )
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the algorithm token is spelled, so that another algorithm can be written the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AlgSpelling {
    /// `SHA256`, `SHA1` (DSP0243, ovftool, COT, IPRT).
    #[default]
    Plain,
    /// `SHA-256`, `SHA-1`.
    Dash,
    /// `SHA2-256` (OpenSSL 3); SHA-1 stays `SHA1` as OpenSSL 3 writes it.
    Sha2Dash,
}

/// Letter case of the hex value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HexCase {
    /// `0a1b...` (every known producer). Mixed-case values are written in lowercase.
    #[default]
    Lower,
    /// `0A1B...`.
    Upper,
}

/// Line terminator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LineEnd {
    /// `\n`.
    #[default]
    Lf,
    /// `\r\n`.
    CrLf,
    /// None: the last line of a file that does not end with a newline.
    None,
}

impl LineEnd {
    /// The terminator's bytes.
    pub fn as_str(self) -> &'static str {
        match self {
            LineEnd::Lf => "\n",
            LineEnd::CrLf => "\r\n",
            LineEnd::None => "",
        }
    }
}

/// Everything about a manifest line except its algorithm, name and value: enough to write
/// another line in the same dialect ([`format_line`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ManifestStyle {
    /// Whitespace before the algorithm.
    pub indent: String,
    /// How the algorithm is spelled.
    pub spelling: AlgSpelling,
    /// The algorithm is written in lowercase (`sha256`).
    pub lowercase_alg: bool,
    /// Whitespace between the algorithm and `(`: `""` (DSP0243) or `" "` (BSD style).
    pub before_paren: String,
    /// Whitespace between `)` and `=`.
    pub before_eq: String,
    /// Whitespace between `=` and the value: `" "` (DSP0243).
    pub after_eq: String,
    /// Case of the hex value.
    pub hex_case: HexCase,
    /// Whitespace after the value.
    pub trailing: String,
    /// Line terminator.
    pub line_end: LineEnd,
}

impl ManifestStyle {
    /// The DSP0243 style: `SHA256(name)= hex\n`.
    pub fn canonical() -> Self {
        ManifestStyle {
            after_eq: " ".to_string(),
            ..ManifestStyle::default()
        }
    }

    /// The BSD / IPRT style: `SHA256 (name) = hex\n`.
    pub fn bsd() -> Self {
        ManifestStyle {
            before_paren: " ".to_string(),
            before_eq: " ".to_string(),
            after_eq: " ".to_string(),
            ..ManifestStyle::default()
        }
    }

    /// The token for `alg` in this style.
    pub fn algorithm_token(&self, alg: &Algorithm) -> String {
        let base = match (alg, self.spelling) {
            (Algorithm::Other(s), _) => return s.clone(),
            (Algorithm::Sha1, AlgSpelling::Dash) => "SHA-1",
            (Algorithm::Sha224, AlgSpelling::Dash) => "SHA-224",
            (Algorithm::Sha256, AlgSpelling::Dash) => "SHA-256",
            (Algorithm::Sha384, AlgSpelling::Dash) => "SHA-384",
            (Algorithm::Sha512, AlgSpelling::Dash) => "SHA-512",
            (Algorithm::Sha224, AlgSpelling::Sha2Dash) => "SHA2-224",
            (Algorithm::Sha256, AlgSpelling::Sha2Dash) => "SHA2-256",
            (Algorithm::Sha384, AlgSpelling::Sha2Dash) => "SHA2-384",
            (Algorithm::Sha512, AlgSpelling::Sha2Dash) => "SHA2-512",
            (a, _) => a.name(),
        };
        if self.lowercase_alg {
            base.to_ascii_lowercase()
        } else {
            base.to_string()
        }
    }
}

/// Writes one manifest line: `ALG(name)= value` with the whitespace, spellings, hex case and
/// line end of `style`. `value` is the hex digest (or the decimal size for `SIZE`); its case
/// is set by the style.
pub fn format_line(style: &ManifestStyle, alg: &Algorithm, name: &str, value: &str) -> String {
    let value = match style.hex_case {
        HexCase::Lower => value.to_ascii_lowercase(),
        HexCase::Upper => value.to_ascii_uppercase(),
    };
    format!(
        "{}{}{}({}){}={}{}{}{}",
        style.indent,
        style.algorithm_token(alg),
        style.before_paren,
        name,
        style.before_eq,
        style.after_eq,
        value,
        style.trailing,
        style.line_end.as_str()
    )
}

/// What is wrong with a recognised entry's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryProblem {
    /// The value of a digest algorithm is not hexadecimal.
    NotHex,
    /// The digest has the wrong length for its algorithm.
    DigestLength {
        /// Hex digits the algorithm needs.
        expected: usize,
        /// Hex digits found.
        actual: usize,
    },
    /// A `SIZE` value that is not a decimal number.
    NotDecimal,
    /// The value is empty.
    Empty,
}

impl fmt::Display for EntryProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryProblem::NotHex => f.write_str("the digest is not hexadecimal"),
            EntryProblem::DigestLength { expected, actual } => write!(
                f,
                "the digest has {actual} hex digits, the algorithm needs {expected}"
            ),
            EntryProblem::NotDecimal => f.write_str("the size is not a decimal number"),
            EntryProblem::Empty => f.write_str("the value is empty"),
        }
    }
}

/// One recognised line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The algorithm token as written (`SHA2-256`).
    pub algorithm_token: String,
    /// The file name as written between the parentheses.
    pub name: String,
    /// The value as written (hex digest, or decimal for `SIZE`).
    pub value: String,
    /// The decoded digest, for digest algorithms whose value is valid.
    pub digest: Option<Vec<u8>>,
    /// The decoded size, for a valid `SIZE` entry.
    pub size: Option<u64>,
    /// Why the value cannot be used, if it cannot.
    pub problem: Option<EntryProblem>,
    /// Byte range of the whole line in the manifest, line terminator included.
    pub span: Range<usize>,
    /// Line number, from 1.
    pub line: usize,
    /// How the line is written.
    pub style: ManifestStyle,
}

impl ManifestEntry {
    /// Byte range of the value in the manifest (inside [`ManifestEntry::span`]), so that a
    /// new value can replace it and leave every other byte of the line as it was.
    pub fn value_span(&self) -> Range<usize> {
        let end = self
            .span
            .end
            .saturating_sub(self.style.line_end.as_str().len())
            .saturating_sub(self.style.trailing.len());
        end.saturating_sub(self.value.len())..end
    }

    /// The digest, lowercase hex, when it is valid.
    pub fn digest_hex(&self) -> Option<String> {
        self.digest.as_deref().map(to_hex)
    }
}

/// Why a non-blank line is not an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineProblem {
    /// Not valid UTF-8.
    NotUtf8,
    /// No `=`.
    NoEquals,
    /// No `)` just before the `=`.
    NoCloseParen,
    /// No `(` after the algorithm.
    NoOpenParen,
    /// The algorithm token is empty or has characters other than letters, digits and `-`.
    BadAlgorithm,
    /// The name between the parentheses is empty.
    EmptyName,
}

impl fmt::Display for LineProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LineProblem::NotUtf8 => "not UTF-8",
            LineProblem::NoEquals => "no '='",
            LineProblem::NoCloseParen => "no ')' before the '='",
            LineProblem::NoOpenParen => "no '(' after the algorithm",
            LineProblem::BadAlgorithm => "no algorithm name before '('",
            LineProblem::EmptyName => "empty file name",
        })
    }
}

/// A non-blank line that is not an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// Line number, from 1.
    pub line: usize,
    /// Byte range of the line, terminator included.
    pub span: Range<usize>,
    /// Why.
    pub problem: LineProblem,
}

/// A parsed manifest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    /// The recognised lines, in order.
    pub entries: Vec<ManifestEntry>,
    /// The first [`MAX_BAD_LINES_KEPT`] non-blank lines that are not entries.
    pub bad_lines: Vec<BadLine>,
    /// How many non-blank lines are not entries (all of them, kept or not).
    pub bad_line_count: usize,
    /// The file starts with a UTF-8 byte order mark (skipped).
    pub bom: bool,
    /// Number of lines (blank ones included).
    pub line_count: usize,
}

impl Manifest {
    /// The entries naming `name` exactly.
    pub fn entries_for<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a ManifestEntry> {
        self.entries.iter().filter(move |e| e.name == name)
    }
}

/// Whitespace as the manifest dialects use it (space, tab, CR, VT, FF).
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | 0x0b | 0x0c)
}

/// Parses a manifest. Fails only when a limit is exceeded; every other oddity is reported
/// in the result.
pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge {
            size: bytes.len() as u64,
            limit: MAX_MANIFEST_BYTES,
        });
    }
    let mut m = Manifest::default();
    let mut pos = 0usize;
    if bytes.starts_with(b"\xef\xbb\xbf") {
        m.bom = true;
        pos = 3;
    }
    while pos < bytes.len() {
        let end = bytes[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| pos + i + 1);
        m.line_count += 1;
        if m.line_count > MAX_LINES {
            return Err(ManifestError::TooManyLines { limit: MAX_LINES });
        }
        let line = &bytes[pos..end];
        let (content, line_end) = if let Some(c) = line.strip_suffix(b"\r\n") {
            (c, LineEnd::CrLf)
        } else if let Some(c) = line.strip_suffix(b"\n") {
            (c, LineEnd::Lf)
        } else {
            (line, LineEnd::None)
        };
        if !content.iter().all(|&b| is_ws(b)) {
            match parse_line(content, line_end) {
                Ok(mut e) => {
                    if m.entries.len() >= MAX_ENTRIES {
                        return Err(ManifestError::TooManyEntries { limit: MAX_ENTRIES });
                    }
                    e.span = pos..end;
                    e.line = m.line_count;
                    m.entries.push(e);
                }
                Err(problem) => {
                    m.bad_line_count += 1;
                    if m.bad_lines.len() < MAX_BAD_LINES_KEPT {
                        m.bad_lines.push(BadLine {
                            line: m.line_count,
                            span: pos..end,
                            problem,
                        });
                    }
                }
            }
        }
        pos = end;
    }
    Ok(m)
}

/// Parses one `ALG(name)= value` line on its own (no line terminator), as the first line of
/// a certificate file is written. The span and line number of the result are 0.
pub fn parse_entry(line: &str) -> Result<ManifestEntry, LineProblem> {
    if line.bytes().all(is_ws) {
        return Err(LineProblem::BadAlgorithm);
    }
    parse_line(line.as_bytes(), LineEnd::None)
}

/// Parses the content of one non-blank line (terminator removed). The span and line number
/// of the result are filled in by the caller.
fn parse_line(content: &[u8], line_end: LineEnd) -> Result<ManifestEntry, LineProblem> {
    let s = std::str::from_utf8(content).map_err(|_| LineProblem::NotUtf8)?;
    let b = s.as_bytes();
    let lead = b.iter().take_while(|&&c| is_ws(c)).count();
    let trail = b.iter().rev().take_while(|&&c| is_ws(c)).count();
    // Not blank, so lead + trail < len. Byte positions found by ASCII tests are char
    // boundaries.
    let body_end = b.len() - trail;
    let alg_end = lead
        + b[lead..body_end]
            .iter()
            .take_while(|&&c| c.is_ascii_alphanumeric() || c == b'-')
            .count();
    if alg_end == lead {
        return Err(LineProblem::BadAlgorithm);
    }
    let paren = alg_end
        + b[alg_end..body_end]
            .iter()
            .take_while(|&&c| is_ws(c))
            .count();
    if b.get(paren) != Some(&b'(') || paren >= body_end {
        return Err(LineProblem::NoOpenParen);
    }
    // The value follows the last '=' (a value never contains one; a name may).
    let eq = b[..body_end]
        .iter()
        .rposition(|&c| c == b'=')
        .filter(|&i| i > paren)
        .ok_or(LineProblem::NoEquals)?;
    let close = b[paren + 1..eq]
        .iter()
        .rposition(|&c| !is_ws(c))
        .map(|i| paren + 1 + i)
        .filter(|&i| b[i] == b')')
        .ok_or(LineProblem::NoCloseParen)?;
    let name = &s[paren + 1..close];
    if name.is_empty() {
        return Err(LineProblem::EmptyName);
    }
    let value_start = eq
        + 1
        + b[eq + 1..body_end]
            .iter()
            .take_while(|&&c| is_ws(c))
            .count();
    let token = &s[lead..alg_end];
    let algorithm = Algorithm::from_token(token);
    let value = &s[value_start..body_end];
    let upper_token = token.to_ascii_uppercase();
    let spelling = if upper_token.starts_with("SHA2-") {
        AlgSpelling::Sha2Dash
    } else if upper_token.starts_with("SHA-") {
        AlgSpelling::Dash
    } else {
        AlgSpelling::Plain
    };
    let has_upper = value.bytes().any(|c| c.is_ascii_uppercase());
    let has_lower = value.bytes().any(|c| c.is_ascii_lowercase());
    let style = ManifestStyle {
        indent: s[..lead].to_string(),
        spelling,
        lowercase_alg: token.bytes().any(|c| c.is_ascii_lowercase())
            && !token.bytes().any(|c| c.is_ascii_uppercase()),
        before_paren: s[alg_end..paren].to_string(),
        before_eq: s[close + 1..eq].to_string(),
        after_eq: s[eq + 1..value_start].to_string(),
        hex_case: if has_upper && !has_lower {
            HexCase::Upper
        } else {
            HexCase::Lower
        },
        trailing: s[body_end..].to_string(),
        line_end,
    };
    let (digest, size, problem) = judge_value(&algorithm, value);
    Ok(ManifestEntry {
        algorithm,
        algorithm_token: token.to_string(),
        name: name.to_string(),
        value: value.to_string(),
        digest,
        size,
        problem,
        span: 0..0,
        line: 0,
        style,
    })
}

/// Checks a value against its algorithm: digest length and hex for digests, decimal for
/// `SIZE`, nothing for unknown algorithms.
fn judge_value(
    alg: &Algorithm,
    value: &str,
) -> (Option<Vec<u8>>, Option<u64>, Option<EntryProblem>) {
    if value.is_empty() {
        return (None, None, Some(EntryProblem::Empty));
    }
    if let Some(len) = alg.digest_len() {
        let Some(bytes) = from_hex(value) else {
            return (None, None, Some(EntryProblem::NotHex));
        };
        if bytes.len() != len || value.len() != 2 * len {
            return (
                None,
                None,
                Some(EntryProblem::DigestLength {
                    expected: 2 * len,
                    actual: value.len(),
                }),
            );
        }
        return (Some(bytes), None, None);
    }
    if *alg == Algorithm::Size {
        return match value.parse::<u64>() {
            Ok(n) if value.bytes().all(|c| c.is_ascii_digit()) => (None, Some(n), None),
            _ => (None, None, Some(EntryProblem::NotDecimal)),
        };
    }
    (None, None, None)
}

/// Decodes hex (either case); `None` for an odd length or a non-hex character.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    };
    b.chunks_exact(2)
        .map(|p| Some((nibble(p[0])? << 4) | nibble(p[1])?))
        .collect()
}

/// Lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SHA1_HEX: &str = "c3bd2579c2edc76ea35b5bde7d4f4e41eab08963";
    const SHA256_HEX: &str = "4aacc96f73bc1e0912414b80a576f62fa8d22386a2c34c489e88ee42ec71de9b";

    fn one(bytes: &[u8]) -> ManifestEntry {
        let m = parse(bytes).unwrap();
        assert!(m.bad_lines.is_empty(), "{:?}", m.bad_lines);
        assert_eq!(m.entries.len(), 1, "{m:?}");
        m.entries.into_iter().next().unwrap()
    }

    /// Every dialect, as byte literals: (line, algorithm, name, digest hex).
    fn dialects() -> Vec<(Vec<u8>, Algorithm, &'static str)> {
        let sha512 = "ab".repeat(64);
        vec![
            // DSP0243 canonical (ovftool, COT).
            (
                format!("SHA256(ubuntu.2.0.ovf)= {SHA256_HEX}\n").into_bytes(),
                Algorithm::Sha256,
                "ubuntu.2.0.ovf",
            ),
            (
                format!("SHA1(input.ovf)= {SHA1_HEX}\n").into_bytes(),
                Algorithm::Sha1,
                "input.ovf",
            ),
            (
                format!("SHA512(disk.vmdk)= {sha512}\n").into_bytes(),
                Algorithm::Sha512,
                "disk.vmdk",
            ),
            // BSD / sha256sum --tag / VirtualBox IPRT.
            (
                format!("SHA1 (ttylinux-pc_i486-16.1.ovf) = {SHA1_HEX}\n").into_bytes(),
                Algorithm::Sha1,
                "ttylinux-pc_i486-16.1.ovf",
            ),
            (
                format!("SHA256 (x.ovf) = {SHA256_HEX}\n").into_bytes(),
                Algorithm::Sha256,
                "x.ovf",
            ),
            // OpenSSL 3.
            (
                format!("SHA2-256(x.ovf)= {SHA256_HEX}\n").into_bytes(),
                Algorithm::Sha256,
                "x.ovf",
            ),
            (
                format!("SHA2-512(x.ovf)= {sha512}\n").into_bytes(),
                Algorithm::Sha512,
                "x.ovf",
            ),
            (
                format!("SHA-256(x.ovf)= {SHA256_HEX}\n").into_bytes(),
                Algorithm::Sha256,
                "x.ovf",
            ),
            (
                format!("sha256(x.ovf)= {SHA256_HEX}\n").into_bytes(),
                Algorithm::Sha256,
                "x.ovf",
            ),
            // CRLF (open-ovf, virt-v2v tests).
            (
                format!("SHA1(ourOVF.ovf)= {SHA1_HEX}\r\n").into_bytes(),
                Algorithm::Sha1,
                "ourOVF.ovf",
            ),
            // Uppercase hex.
            (
                format!("SHA256(x.ovf)= {}\n", SHA256_HEX.to_ascii_uppercase()).into_bytes(),
                Algorithm::Sha256,
                "x.ovf",
            ),
            // Leading and trailing whitespace, tabs, no final newline.
            (
                format!("  \tSHA256(x.ovf)=  {SHA256_HEX} \t").into_bytes(),
                Algorithm::Sha256,
                "x.ovf",
            ),
            // No space at all.
            (
                format!("SHA256(x.ovf)={SHA256_HEX}\n").into_bytes(),
                Algorithm::Sha256,
                "x.ovf",
            ),
            // Names with spaces, parentheses and '='.
            (
                format!("SHA256(my disk (1).vmdk)= {SHA256_HEX}\n").into_bytes(),
                Algorithm::Sha256,
                "my disk (1).vmdk",
            ),
            (
                format!("SHA256 (a)=b.vmdk) = {SHA256_HEX}\n").into_bytes(),
                Algorithm::Sha256,
                "a)=b.vmdk",
            ),
            // IPRT's other entries: parsed, unsupported.
            (
                b"MD5 (x.ovf) = d41d8cd98f00b204e9800998ecf8427e\n".to_vec(),
                Algorithm::Md5,
                "x.ovf",
            ),
            (b"SIZE (x.ovf) = 6242\n".to_vec(), Algorithm::Size, "x.ovf"),
            (
                b"WHIRLPOOL(x.ovf)= 00\n".to_vec(),
                Algorithm::Other("WHIRLPOOL".into()),
                "x.ovf",
            ),
        ]
    }

    #[test]
    fn every_dialect_parses() {
        for (line, alg, name) in dialects() {
            let e = one(&line);
            assert_eq!(e.algorithm, alg, "{}", String::from_utf8_lossy(&line));
            assert_eq!(e.name, name);
            assert_eq!(e.problem, None, "{}", String::from_utf8_lossy(&line));
            assert_eq!(e.span, 0..line.len());
            assert_eq!(e.line, 1);
            if alg.is_supported() {
                assert_eq!(e.digest.as_ref().unwrap().len(), alg.digest_len().unwrap());
            }
        }
    }

    #[test]
    fn reformatting_in_own_style_is_byte_identical_for_every_dialect() {
        for (line, _, _) in dialects() {
            let e = one(&line);
            let again = format_line(&e.style, &e.algorithm, &e.name, &e.value);
            assert_eq!(
                again.as_bytes(),
                &line[..],
                "{}",
                String::from_utf8_lossy(&line)
            );
        }
    }

    #[test]
    fn style_carries_over_to_other_algorithms() {
        let e = one(format!("SHA2-256(x.ovf)= {SHA256_HEX}\n").as_bytes());
        let l = format_line(&e.style, &Algorithm::Sha512, "y.vmdk", "AB");
        assert_eq!(l, "SHA2-512(y.vmdk)= ab\n");
        let e = one(format!("SHA1 (x.ovf) = {SHA1_HEX}\r\n").as_bytes());
        assert_eq!(
            format_line(&e.style, &Algorithm::Sha256, "y", "cd"),
            "SHA256 (y) = cd\r\n"
        );
        assert_eq!(
            format_line(&ManifestStyle::canonical(), &Algorithm::Sha1, "a b", "EF"),
            "SHA1(a b)= ef\n"
        );
        assert_eq!(
            format_line(&ManifestStyle::bsd(), &Algorithm::Sha1, "a", "ef"),
            "SHA1 (a) = ef\n"
        );
    }

    #[test]
    fn ovftool_space_padding_blank_lines_and_bom_are_skipped() {
        let mut mf = b"\xef\xbb\xbf".to_vec();
        mf.extend_from_slice(format!("SHA256(a.ovf)= {SHA256_HEX}\n\n  \r\n").as_bytes());
        let second = mf.len();
        mf.extend_from_slice(format!("SHA256(b.vmdk)= {SHA256_HEX}\n").as_bytes());
        mf.extend_from_slice(&[b' '; 94]);
        let m = parse(&mf).unwrap();
        assert!(m.bom);
        assert_eq!(m.entries.len(), 2);
        assert!(m.bad_lines.is_empty());
        assert_eq!(m.entries[0].span.start, 3);
        assert_eq!(m.entries[1].span.start, second);
        assert_eq!(m.entries[1].line, 4);
        assert_eq!(m.line_count, 5);
        // A manifest of padding only (VirtualBox's tdAppliance1-t1) has no entries.
        let m = parse(&[b' '; 68]).unwrap();
        assert!(m.entries.is_empty() && m.bad_lines.is_empty());
    }

    #[test]
    fn spans_cover_exactly_their_lines() {
        let text = format!("SHA1(a)= {SHA1_HEX}\r\nSHA1 (b c) = {SHA1_HEX}\nSHA1(d)= {SHA1_HEX}");
        let m = parse(text.as_bytes()).unwrap();
        let rebuilt: String = m
            .entries
            .iter()
            .map(|e| format_line(&e.style, &e.algorithm, &e.name, &e.value))
            .collect();
        assert_eq!(rebuilt, text);
        for e in &m.entries {
            assert_eq!(
                &text.as_bytes()[e.span.clone()],
                format_line(&e.style, &e.algorithm, &e.name, &e.value).as_bytes()
            );
        }
    }

    #[test]
    fn judged_strictly_digest_length_and_hex() {
        let e = one(format!("SHA256(a)= {SHA1_HEX}\n").as_bytes());
        assert_eq!(
            e.problem,
            Some(EntryProblem::DigestLength {
                expected: 64,
                actual: 40
            })
        );
        assert_eq!(e.digest, None);
        let e = one(format!("SHA1(a)= {}\n", &SHA256_HEX[..39]).as_bytes());
        assert_eq!(e.problem, Some(EntryProblem::NotHex));
        let e = one(b"SHA1(a)= zz\n");
        assert_eq!(e.problem, Some(EntryProblem::NotHex));
        let e = one(b"SHA1(a)=\n");
        assert_eq!(e.problem, Some(EntryProblem::Empty));
        let e = one(b"SIZE(a)= 12x\n");
        assert_eq!(e.problem, Some(EntryProblem::NotDecimal));
        let e = one(b"SIZE(a)= +12\n");
        assert_eq!(e.problem, Some(EntryProblem::NotDecimal));
        let e = one(b"SIZE(a)= 12\n");
        assert_eq!((e.size, e.problem), (Some(12), None));
        let e = one(format!("SHA1(a)= {SHA1_HEX} trailing words\n").as_bytes());
        assert_eq!(e.problem, Some(EntryProblem::NotHex));
    }

    #[test]
    fn duplicate_and_self_entries_are_all_returned() {
        let text =
            format!("SHA1(x.mf)= {SHA1_HEX}\nSHA1(u.vmdk)= {SHA1_HEX}\nSHA1(u.vmdk)= {SHA1_HEX}\n");
        let m = parse(text.as_bytes()).unwrap();
        assert_eq!(m.entries.len(), 3);
        assert_eq!(m.entries_for("u.vmdk").count(), 2);
        assert_eq!(m.entries_for("x.mf").count(), 1);
    }

    #[test]
    fn garbage_lines_are_reported_not_fatal() {
        let text = format!(
            "hello\n(x)= 00\nSHA1 x = 00\nSHA1(x 00\nSHA1()= 00\n\u{ff}\nSHA1(ok)= {SHA1_HEX}\n"
        );
        let mut bytes = text.into_bytes();
        // Replace the U+00FF (two bytes in UTF-8) line with a lone invalid byte.
        let at = bytes
            .windows(2)
            .position(|w| w == "\u{ff}".as_bytes())
            .unwrap();
        bytes.splice(at..at + 2, [0xffu8]);
        let m = parse(&bytes).unwrap();
        let problems: Vec<LineProblem> = m.bad_lines.iter().map(|b| b.problem).collect();
        assert_eq!(
            problems,
            vec![
                LineProblem::NoOpenParen,
                LineProblem::BadAlgorithm,
                LineProblem::NoOpenParen,
                LineProblem::NoEquals,
                LineProblem::EmptyName,
                LineProblem::NotUtf8,
            ]
        );
        assert_eq!(m.bad_line_count, 6);
        assert_eq!(m.entries.len(), 1);
        assert_eq!(m.entries[0].line, 7);
        let m = parse(b"SHA1(x= 00\n").unwrap();
        assert_eq!(m.bad_lines[0].problem, LineProblem::NoCloseParen);
    }

    #[test]
    fn limits_are_enforced() {
        let big = vec![b' '; MAX_MANIFEST_BYTES as usize + 1];
        assert!(matches!(parse(&big), Err(ManifestError::TooLarge { .. })));
        let lines = vec![b'\n'; MAX_LINES + 1];
        assert_eq!(
            parse(&lines),
            Err(ManifestError::TooManyLines { limit: MAX_LINES })
        );
        let many = "x\n".repeat(MAX_BAD_LINES_KEPT + 10);
        let m = parse(many.as_bytes()).unwrap();
        assert_eq!(m.bad_lines.len(), MAX_BAD_LINES_KEPT);
        assert_eq!(m.bad_line_count, MAX_BAD_LINES_KEPT + 10);
    }

    #[test]
    fn hex_helpers() {
        assert_eq!(from_hex("0aFf"), Some(vec![0x0a, 0xff]));
        assert_eq!(from_hex("0"), None);
        assert_eq!(from_hex("0g"), None);
        assert_eq!(to_hex(&[0x0a, 0xff]), "0aff");
        assert_eq!(Algorithm::from_token("sha2-512"), Algorithm::Sha512);
        assert_eq!(Algorithm::from_token("SHA-1"), Algorithm::Sha1);
    }
}
