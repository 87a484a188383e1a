//! The text descriptor embedded in a sparse extent (docs/formats.md §4.4), parsed only as far as
//! diagnostics need: `createType`, the content ids, and the extent lines.
//!
//! Reading data never depends on the descriptor (the binary header is authoritative), so a
//! malformed line is skipped, not an error. The text is cut at its first NUL and bounded by
//! the caller ([`MAX_DESCRIPTOR_SECTORS`]); keys are matched case-insensitively as the spec
//! says (qemu matches them case-sensitively).

/// Largest embedded descriptor read, in sectors (1 MiB; qemu caps descriptor reads at the
/// same size). Producers write 1 to 20 sectors.
pub const MAX_DESCRIPTOR_SECTORS: u64 = 2048;

/// Most extent lines kept (diagnostics only; a split disk has one per 2 GiB).
pub const MAX_EXTENT_LINES: usize = 4096;

/// One `ACCESS SECTORS TYPE ["FILENAME" [OFFSET]]` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentLine {
    /// `RW`, `RDONLY` or `NOACCESS`.
    pub access: String,
    /// Size of the extent in sectors.
    pub size_sectors: u64,
    /// `SPARSE`, `FLAT`, `ZERO`, `VMFS`, ...
    pub extent_type: String,
    /// File name, relative to the descriptor (absent for `ZERO`).
    pub file_name: Option<String>,
    /// Offset in sectors inside the file (`FLAT` extents).
    pub offset_sectors: Option<u64>,
}

/// What ovafs keeps of an embedded descriptor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmbeddedDescriptor {
    /// `createType` (e.g. `streamOptimized`, `monolithicSparse`).
    pub create_type: Option<String>,
    /// `CID`, the content id.
    pub cid: Option<u32>,
    /// `parentCID` (`ffffffff` = no parent).
    pub parent_cid: Option<u32>,
    /// `parentFileNameHint`: the parent of a delta link.
    pub parent_file_name_hint: Option<String>,
    /// Extent lines, in order.
    pub extents: Vec<ExtentLine>,
}

impl EmbeddedDescriptor {
    /// Parses descriptor bytes, cut at the first NUL. Never fails: unknown or malformed
    /// lines are ignored.
    pub fn parse(bytes: &[u8]) -> Self {
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let text = String::from_utf8_lossy(&bytes[..end]);
        let mut d = EmbeddedDescriptor::default();
        for raw in text.lines() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some((key, value)) = line.split_once('=') {
                let key = key.trim();
                let value = unquote(value.trim());
                if key.eq_ignore_ascii_case("createType") {
                    d.create_type = Some(value.to_string());
                } else if key.eq_ignore_ascii_case("CID") {
                    d.cid = u32::from_str_radix(value, 16).ok();
                } else if key.eq_ignore_ascii_case("parentCID") {
                    d.parent_cid = u32::from_str_radix(value, 16).ok();
                } else if key.eq_ignore_ascii_case("parentFileNameHint") {
                    d.parent_file_name_hint = Some(value.to_string());
                }
                continue;
            }
            if d.extents.len() < MAX_EXTENT_LINES
                && let Some(e) = parse_extent_line(line)
            {
                d.extents.push(e);
            }
        }
        d
    }
}

/// Strips one pair of surrounding double quotes.
fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(v)
}

/// Parses `ACCESS SECTORS TYPE ["FILENAME" [OFFSET]]`; `None` if the line is not one.
pub(crate) fn parse_extent_line(line: &str) -> Option<ExtentLine> {
    let mut rest = line;
    let mut word = || {
        let s = rest.trim_start();
        let end = s.find(char::is_whitespace).unwrap_or(s.len());
        let (w, r) = s.split_at(end);
        rest = r;
        (!w.is_empty()).then_some(w)
    };
    let access = word()?;
    if !["RW", "RDONLY", "NOACCESS"]
        .iter()
        .any(|a| a.eq_ignore_ascii_case(access))
    {
        return None;
    }
    let size_sectors = word()?.parse().ok()?;
    let extent_type = word()?.to_string();
    let access = access.to_string();
    let tail = rest.trim_start();
    let (file_name, after) = match tail.strip_prefix('"') {
        Some(q) => {
            let close = q.find('"')?;
            (Some(q[..close].to_string()), &q[close + 1..])
        }
        None => (None, tail),
    };
    let offset_sectors = after.split_whitespace().next().and_then(|o| o.parse().ok());
    Some(ExtentLine {
        access,
        size_sectors,
        extent_type,
        file_name,
        offset_sectors,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn vmware_descriptor_with_trailing_spaces_and_nul_padding() {
        let mut text = b"# Disk DescriptorFile\nversion=1 \nCID=a454774a \nparentCID=ffffffff \n\
createType=\"streamOptimized\" \n\n# Extent description\n\
RDONLY 33554432 SPARSE \"generated-stream.vmdk\"\n\n# The Disk Data Base \n#DDB\n\n\
ddb.adapterType = \"lsilogic\"\n"
            .to_vec();
        text.extend_from_slice(&[0u8; 100]);
        text.extend_from_slice(b"createType=\"after the NUL\"\n");
        let d = EmbeddedDescriptor::parse(&text);
        assert_eq!(d.create_type.as_deref(), Some("streamOptimized"));
        assert_eq!(d.cid, Some(0xa454774a));
        assert_eq!(d.parent_cid, Some(0xffffffff));
        assert_eq!(
            d.extents,
            vec![ExtentLine {
                access: "RDONLY".into(),
                size_sectors: 33554432,
                extent_type: "SPARSE".into(),
                file_name: Some("generated-stream.vmdk".into()),
                offset_sectors: None,
            }]
        );
    }

    #[test]
    fn crlf_flat_and_zero_extents_and_garbage() {
        let d = EmbeddedDescriptor::parse(
            b"createtype=monolithicFlat\r\nRW 100 FLAT \"a b-flat.vmdk\" 7\r\nRW 50 ZERO\r\n\
RW notanumber SPARSE \"x\"\r\n\xff\xfe junk\r\nRW 5 FLAT \"unterminated\r\n",
        );
        assert_eq!(d.create_type.as_deref(), Some("monolithicFlat"));
        assert_eq!(d.extents.len(), 2);
        assert_eq!(d.extents[0].file_name.as_deref(), Some("a b-flat.vmdk"));
        assert_eq!(d.extents[0].offset_sectors, Some(7));
        assert_eq!(d.extents[1].extent_type, "ZERO");
        assert_eq!(d.extents[1].file_name, None);
        assert_eq!(
            EmbeddedDescriptor::parse(b""),
            EmbeddedDescriptor::default()
        );
    }
}
