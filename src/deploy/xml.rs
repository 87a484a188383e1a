//! XML 1.0 escaping for the generated deploy files (ovf-env.xml, libvirt.xml): one escaper
//! for text and attribute values, and one for comment text.
//!
//! Attribute values keep tab, line feed and carriage return as character references
//! (attribute-value normalisation, XML 1.0 §3.3.3, would turn them into spaces); a character
//! XML 1.0 cannot carry at all (other C0 controls, U+FFFE, U+FFFF: §2.2 `Char`) refuses the
//! file rather than being dropped, so a value never silently changes on its way to the guest.

use super::DeployError;

/// `s` escaped for XML text and double- or single-quoted attribute values; `what` names it
/// in the error of deploy file `file` when it holds a character XML 1.0 cannot carry.
pub(crate) fn escape(s: &str, file: &'static str, what: &str) -> Result<String, DeployError> {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if is_xml_char(c) => out.push(c),
            c => {
                return Err(DeployError::Unusable {
                    file,
                    reason: format!(
                        "{what} holds U+{:04X}, which XML 1.0 cannot carry",
                        u32::from(c)
                    ),
                });
            }
        }
    }
    Ok(out)
}

/// XML 1.0 `Char` (§2.2) minus the three controls [`escape`] writes as references (a Rust
/// `char` is never a surrogate).
fn is_xml_char(c: char) -> bool {
    !(c < '\u{20}' || c == '\u{FFFE}' || c == '\u{FFFF}')
}

/// `s` as the inside of an XML comment: characters XML cannot hold and line breaks become
/// `?` and spaces, `--` is split, and it never ends with `-` (§2.5).
pub(crate) fn comment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = match c {
            '\t' | '\n' | '\r' => ' ',
            c if !is_xml_char(c) => '?',
            c => c,
        };
        if c == '-' && out.ends_with('-') {
            out.push(' ');
        }
        out.push(c);
    }
    if out.ends_with('-') {
        out.push(' ');
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_whitespace_controls_are_escaped() {
        assert_eq!(
            escape("a<b>&'\"\t\n\r", "f", "x").unwrap(),
            "a&lt;b&gt;&amp;&apos;&quot;&#9;&#10;&#13;"
        );
        assert_eq!(escape("héllo ✓ 𝄞", "f", "x").unwrap(), "héllo ✓ 𝄞");
    }

    #[test]
    fn characters_xml_cannot_carry_refuse_the_file() {
        for bad in ["a\u{1}b", "\u{FFFE}", "\u{7}"] {
            let e = escape(bad, "f.xml", "property k").unwrap_err();
            assert!(
                e.to_string().starts_with("f.xml: property k holds U+"),
                "{e}"
            );
        }
    }

    #[test]
    fn comments_never_close_early() {
        assert_eq!(comment("a-->b"), "a- ->b");
        assert_eq!(comment("x-"), "x- ");
        assert_eq!(comment("l1\nl2\u{1}"), "l1 l2?");
    }
}
