//! Splice edits: replace the bytes of a few spans in the original descriptor and leave every
//! other byte as it was (docs/design.md "Descriptor").
//!
//! An edit is a [`Span`] from the model and the new bytes for it, already escaped for where
//! they go ([`escape_attr`] for an attribute value, [`escape_text`] for element content).
//! With no edits the result is the original document, byte for byte, by construction.

use std::borrow::Cow;

use super::OvfError;
use super::xml::Span;

/// Replace the bytes of `span` with `replacement`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// The bytes to replace (from the model).
    pub span: Span,
    /// The new bytes, already escaped.
    pub replacement: String,
}

/// Applies `edits` to `original`. Edits may come in any order but must not overlap and must
/// lie inside the document, on character boundaries.
pub fn splice(original: &[u8], edits: &[Edit]) -> Result<Vec<u8>, OvfError> {
    let mut sorted: Vec<&Edit> = edits.iter().collect();
    sorted.sort_by_key(|e| (e.span.start, e.span.end));
    let extra: usize = sorted.iter().map(|e| e.replacement.len()).sum();
    let mut out = Vec::with_capacity(original.len().saturating_add(extra));
    let mut at = 0usize;
    for e in sorted {
        let Span { start, end } = e.span;
        let bad = |reason: &'static str| OvfError::BadEdit { start, end, reason };
        if start > end || end > original.len() {
            return Err(bad("span outside the document"));
        }
        if start < at {
            return Err(bad("edits overlap"));
        }
        if !is_boundary(original, start) || !is_boundary(original, end) {
            return Err(bad("span splits a UTF-8 character"));
        }
        out.extend_from_slice(&original[at..start]);
        out.extend_from_slice(e.replacement.as_bytes());
        at = end;
    }
    out.extend_from_slice(&original[at..]);
    Ok(out)
}

/// Whether `i` is not in the middle of a UTF-8 sequence.
fn is_boundary(doc: &[u8], i: usize) -> bool {
    doc.get(i).is_none_or(|&b| (b as i8) >= -0x40)
}

/// Escapes a value for an attribute delimited by either quote.
pub fn escape_attr(value: &str) -> Cow<'_, str> {
    quick_xml::escape::escape(value)
}

/// Escapes a value for element content.
pub fn escape_text(value: &str) -> Cow<'_, str> {
    quick_xml::escape::partial_escape(value)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn no_edits_is_identity_and_edits_apply_in_any_order() {
        let doc = "<a x=\"1\">hello</a>".as_bytes();
        assert_eq!(splice(doc, &[]).unwrap(), doc);
        let edits = [
            Edit {
                span: Span::new(9, 14),
                replacement: "bye".into(),
            },
            Edit {
                span: Span::new(6, 7),
                replacement: "22".into(),
            },
        ];
        assert_eq!(splice(doc, &edits).unwrap(), b"<a x=\"22\">bye</a>");
    }

    #[test]
    fn overlapping_outside_or_mid_character_edits_are_refused() {
        let doc = "<a>é</a>".as_bytes();
        let e = |s, t| Edit {
            span: Span::new(s, t),
            replacement: String::new(),
        };
        for edits in [
            vec![e(3, 5), e(4, 6)],
            vec![e(0, 100)],
            vec![e(5, 4)],
            vec![e(4, 5)],
        ] {
            assert!(matches!(splice(doc, &edits), Err(OvfError::BadEdit { .. })));
        }
    }

    #[test]
    fn escaping() {
        assert_eq!(escape_attr("a\"b'<&>"), "a&quot;b&apos;&lt;&amp;&gt;");
        assert_eq!(escape_text("a<b&c>\"'"), "a&lt;b&amp;c&gt;\"'");
    }
}
