//! pax extended-header records (POSIX.1-2001 `pax`, docs/formats.md §1.2).
//!
//! A pax header's data is a list of records `"<len> <key>=<value>\n"`, where `<len>` is the
//! decimal length of the whole record including itself and the newline. We parse the records
//! from a payload the caller has already read under a size cap, and keep only the keys that
//! matter for an index: `path`, `size`, `mtime`, and whether any `GNU.sparse.*` key marks a
//! sparse member. Everything else (`linkpath`, `uid`, `SCHILY.*`, `LIBARCHIVE.*`, ...) is
//! checked for syntax and ignored.

/// Why a pax payload was refused.
pub type PaxProblem = &'static str;

/// The pax keys an index uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PaxOverrides {
    /// `path`: replaces the header name (raw bytes; checked like any name later).
    pub path: Option<Vec<u8>>,
    /// `size`: replaces the header size (how members of 8 GiB and more are written).
    pub size: Option<u64>,
    /// `mtime`: seconds since the epoch; a fraction is dropped, a negative time reads as 0.
    pub mtime: Option<u64>,
    /// A `GNU.sparse.*` key was present: the member is sparse and is never served.
    pub sparse: bool,
}

impl PaxOverrides {
    /// Overlays `other` on `self`: keys present in `other` win.
    pub fn merge(&mut self, other: PaxOverrides) {
        if other.path.is_some() {
            self.path = other.path;
        }
        if other.size.is_some() {
            self.size = other.size;
        }
        if other.mtime.is_some() {
            self.mtime = other.mtime;
        }
        self.sparse |= other.sparse;
    }
}

/// Parses the records of one pax header.
pub fn parse(data: &[u8]) -> Result<PaxOverrides, PaxProblem> {
    let mut out = PaxOverrides::default();
    let mut rest = data;
    // Each iteration consumes at least one byte, so the loop ends.
    while !rest.is_empty() {
        // Some writers pad the payload with NULs; nothing can follow them.
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let space = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or("record without a length")?;
        let len_text = std::str::from_utf8(&rest[..space]).map_err(|_| "bad record length")?;
        if len_text.is_empty() || !len_text.bytes().all(|b| b.is_ascii_digit()) {
            return Err("bad record length");
        }
        let len: usize = len_text.parse().map_err(|_| "bad record length")?;
        if len <= space + 1 || len > rest.len() {
            return Err("record length outside the header");
        }
        let record = &rest[space + 1..len];
        rest = &rest[len..];
        let Some((&b'\n', body)) = record.split_last() else {
            return Err("record does not end with a newline");
        };
        let eq = body
            .iter()
            .position(|&b| b == b'=')
            .ok_or("record without '='")?;
        let (key, value) = (&body[..eq], &body[eq + 1..]);
        match key {
            b"path" => out.path = Some(value.to_vec()),
            b"size" => out.size = Some(parse_decimal(value).ok_or("bad size record")?),
            b"mtime" => out.mtime = Some(parse_time(value).ok_or("bad mtime record")?),
            k if k.starts_with(b"GNU.sparse.") => out.sparse = true,
            _ => {}
        }
    }
    Ok(out)
}

/// A non-negative decimal integer that fits `u64`.
fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A pax time: `[-]seconds[.fraction]`; the fraction is dropped and negative times read as 0.
fn parse_time(v: &[u8]) -> Option<u64> {
    let (neg, v) = match v.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, v),
    };
    let int = match v.iter().position(|&b| b == b'.') {
        Some(i) => {
            if !v[i + 1..].iter().all(u8::is_ascii_digit) {
                return None;
            }
            &v[..i]
        }
        None => v,
    };
    let secs = parse_decimal(int)?;
    Some(if neg { 0 } else { secs })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Builds one record with the right length prefix.
    fn rec(key: &str, value: &str) -> Vec<u8> {
        let body = format!(" {key}={value}\n");
        let mut n = body.len() + 1;
        while format!("{n}{body}").len() != n {
            n += 1;
        }
        format!("{n}{body}").into_bytes()
    }

    #[test]
    fn path_size_mtime_are_read_and_others_ignored() {
        let mut data = rec("path", "dir/a very long name.vmdk");
        data.extend(rec("size", "10737418240"));
        data.extend(rec("mtime", "1700000000.123456789"));
        data.extend(rec("SCHILY.dev", "2049"));
        data.extend(rec("uname", "root"));
        let p = parse(&data).unwrap();
        assert_eq!(p.path.as_deref(), Some(&b"dir/a very long name.vmdk"[..]));
        assert_eq!(p.size, Some(10_737_418_240));
        assert_eq!(p.mtime, Some(1_700_000_000));
        assert!(!p.sparse);
    }

    #[test]
    fn gnu_sparse_keys_mark_the_member_sparse() {
        let p = parse(&rec("GNU.sparse.major", "1")).unwrap();
        assert!(p.sparse);
    }

    #[test]
    fn negative_mtime_reads_as_zero_and_trailing_nuls_are_ignored() {
        let mut data = rec("mtime", "-5.5");
        data.extend([0u8; 20]);
        assert_eq!(parse(&data).unwrap().mtime, Some(0));
    }

    #[test]
    fn malformed_records_are_refused() {
        assert!(parse(b"abc path=x\n").is_err());
        assert!(parse(b"99 path=x\n").is_err());
        assert!(parse(b"3 x\n").is_err());
        assert!(parse(b"11 path=xyz").is_err());
        assert!(parse(b"10 pathxyz\n").is_err());
        assert!(parse(b"12 size=-12\n").is_err());
        assert!(parse(b"norecord").is_err());
        assert!(parse(b"0 \n").is_err());
        assert!(parse(b"99999999999999999999999 x=y\n").is_err());
        assert_eq!(parse(b"").unwrap(), PaxOverrides::default());
    }
}
