//! Trailing whitespace after the descriptor's root element: the room that lets an edited
//! descriptor be patched in place.
//!
//! A tar member's next header sits right after the member's last data block, so a descriptor
//! patched in place must keep its number of blocks: its new length must lie in
//! `(capacity - 512, capacity]`. XML allows whitespace after the root element, so a
//! descriptor that became shorter is padded with a run of spaces and a newline (never a
//! comment, which some parsers report), and a rewrite leaves *slack* the same way so that the
//! next edits fit. Padding is only ever appended after the caller's bytes.
//!
//! A descriptor that no longer fits may have its trailing whitespace reduced: everything after
//! the last non-blank byte is kept up to and including its first line break (the document's
//! own final newline), the rest (earlier padding, handed back by a caller that edited the
//! stored bytes) is dropped. That is the only change ever made to the caller's bytes.
//!
//! Padding is refused for a descriptor that looks UTF-16 (a NUL byte or a UTF-16 byte-order
//! mark in its first bytes): ASCII spaces would corrupt it. The descriptor parser refuses
//! UTF-16 anyway; this is a second guard.

/// Smallest slack left after the descriptor when the archive is rewritten.
pub const SLACK_MIN_BYTES: u64 = 4096;

/// Largest slack left after the descriptor when the archive is rewritten.
pub const SLACK_MAX_BYTES: u64 = 1 << 20;

/// Slack for a descriptor of `len` bytes: an eighth of it, between [`SLACK_MIN_BYTES`] and
/// [`SLACK_MAX_BYTES`]. Edits change a value by a few bytes; an editor session that adds an
/// Item adds a few hundred; growing by more than 4 KiB or 12 % takes one more rewrite.
pub fn default_slack(len: u64) -> u64 {
    (len / 8).clamp(SLACK_MIN_BYTES, SLACK_MAX_BYTES)
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Whether ASCII padding may be appended.
pub fn can_pad(doc: &[u8]) -> bool {
    let head = &doc[..doc.len().min(4)];
    !head.contains(&0) && !head.starts_with(&[0xFE, 0xFF]) && !head.starts_with(&[0xFF, 0xFE])
}

/// `doc` with its trailing whitespace kept only up to and including the first line break.
pub fn trim_tail(doc: &[u8]) -> &[u8] {
    let core = doc.iter().rposition(|&b| !is_ws(b)).map_or(0, |p| p + 1);
    let tail = &doc[core..];
    let keep = tail.iter().position(|&b| b == b'\n').map_or(0, |p| p + 1);
    &doc[..core + keep]
}

/// The stored bytes' split into the document and the padding a commit appended: the padding
/// is a trailing run of spaces and one final newline that follows a line break or the end of
/// the root element. Lets a caller show or compare the document without it.
pub fn split_padding(stored: &[u8]) -> (&[u8], &[u8]) {
    let Some(body) = stored.strip_suffix(b"\n") else {
        return (stored, &[]);
    };
    let spaces = body.iter().rev().take_while(|&&b| b == b' ').count();
    if spaces == 0 {
        return (stored, &[]);
    }
    let doc_end = body.len() - spaces;
    match doc_end.checked_sub(1).map(|i| body[i]) {
        Some(b'\n') | Some(b'>') => (&stored[..doc_end], &stored[doc_end..]),
        _ => (stored, &[]),
    }
}

/// Appends spaces and a newline to `doc` so that it is exactly `len` bytes
/// (`len > doc.len()`).
fn pad_to(doc: &[u8], len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(doc);
    v.resize(len - 1, b' ');
    v.push(b'\n');
    v
}

/// The bytes to store so that `doc` fills exactly the blocks of a member whose data area is
/// `capacity` bytes (a positive multiple of 512), or `None` when it cannot.
pub fn fit_blocks(doc: &[u8], capacity: u64) -> Option<Vec<u8>> {
    let capacity = usize::try_from(capacity).ok()?;
    let lowest = capacity.checked_sub(511)?;
    let doc = if doc.len() > capacity {
        trim_tail(doc)
    } else {
        doc
    };
    if doc.len() > capacity {
        return None;
    }
    if doc.len() >= lowest {
        return Some(doc.to_vec());
    }
    if !can_pad(doc) {
        return None;
    }
    Some(pad_to(doc, lowest))
}

/// The bytes to store when the archive is rewritten: `doc` (trailing whitespace trimmed to
/// its first line break) followed by `slack` bytes of spaces and a newline. No slack is
/// added to a descriptor that cannot be padded.
pub fn with_slack(doc: &[u8], slack: u64) -> Vec<u8> {
    if !can_pad(doc) || slack == 0 {
        return doc.to_vec();
    }
    let doc = trim_tail(doc);
    let slack = usize::try_from(slack).unwrap_or(usize::MAX);
    pad_to(doc, doc.len().saturating_add(slack))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn exact_fit_is_stored_as_is() {
        let doc = vec![b'x'; 1000];
        assert_eq!(fit_blocks(&doc, 1024).unwrap(), doc);
        let doc = vec![b'x'; 513];
        assert_eq!(fit_blocks(&doc, 1024).unwrap(), doc);
    }

    #[test]
    fn shrinking_below_the_last_block_pads_with_spaces_and_newline() {
        let doc = b"<E/>\n".to_vec();
        let f = fit_blocks(&doc, 1024).unwrap();
        assert_eq!(f.len(), 513);
        assert!(f.starts_with(&doc));
        assert!(f[doc.len()..f.len() - 1].iter().all(|&b| b == b' '));
        assert_eq!(f.last(), Some(&b'\n'));
        assert_eq!(split_padding(&f), (&doc[..], &f[doc.len()..]));
    }

    #[test]
    fn growing_past_capacity_drops_old_padding_only() {
        let mut doc = vec![b'x'; 1020];
        doc.extend_from_slice(b">\n");
        doc.extend_from_slice(&[b' '; 30]);
        doc.push(b'\n');
        let f = fit_blocks(&doc, 1024).unwrap();
        assert_eq!(&f[..1022], &doc[..1022]);
        assert_eq!(f.len(), 1022);
        assert!(fit_blocks(&vec![b'x'; 1025], 1024).is_none());
    }

    #[test]
    fn utf16_is_never_padded() {
        let doc = [0xFF, 0xFE, b'<', 0];
        assert_eq!(fit_blocks(&doc, 512).unwrap(), doc);
        assert!(fit_blocks(&doc, 1024).is_none());
        assert_eq!(with_slack(&doc, 100), doc);
    }

    #[test]
    fn slack_is_appended_after_the_documents_own_newline() {
        let f = with_slack(b"<E/>\n\n\n", 10);
        assert_eq!(f, b"<E/>\n         \n");
        assert_eq!(split_padding(&f).0, b"<E/>\n");
        let f = with_slack(b"<E/>", 3);
        assert_eq!(f, b"<E/>  \n");
        assert_eq!(split_padding(&f).0, b"<E/>");
    }

    #[test]
    fn split_padding_leaves_documents_without_padding_alone() {
        for doc in [&b"<E/>\n"[..], b"<E/>", b"<E>text  \n", b""] {
            assert_eq!(split_padding(doc), (doc, &b""[..]));
        }
    }

    #[test]
    fn default_slack_is_bounded() {
        assert_eq!(default_slack(0), SLACK_MIN_BYTES);
        assert_eq!(default_slack(80_000), 10_000);
        assert_eq!(default_slack(u64::MAX), SLACK_MAX_BYTES);
    }
}
