//! Manifest parse: never panics; spans are inside the input, in order and disjoint; an entry
//! re-formatted in its own style reproduces its line byte for byte unless its hex is in
//! mixed case (documented: mixed case is written in lowercase); each value span holds the
//! value. A commit's refresh of the first entry's file never panics, and when it succeeds
//! the result parses to the same entries with that file's values replaced.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ovafs::verify::manifest::{self, format_line};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = manifest::parse(data) else {
        return;
    };
    let mut last_end = 0;
    for e in &m.entries {
        assert!(e.span.start >= last_end && e.span.end <= data.len() && e.span.start < e.span.end);
        last_end = e.span.end;
        if let Some(d) = &e.digest {
            assert_eq!(Some(d.len()), e.algorithm.digest_len());
        }
        let line = format_line(&e.style, &e.algorithm, &e.name, &e.value);
        let original = &data[e.span.clone()];
        let mixed = e.value.bytes().any(|c| c.is_ascii_uppercase())
            && e.value.bytes().any(|c| c.is_ascii_lowercase());
        let token_reproducible = e.style.algorithm_token(&e.algorithm) == e.algorithm_token;
        if !mixed && token_reproducible {
            assert_eq!(line.as_bytes(), original, "re-formatting changed the line");
        }
        let value = e.value_span();
        assert!(e.span.start <= value.start && value.end <= e.span.end);
        assert_eq!(&data[value], e.value.as_bytes(), "value span");
        // Whatever the style, the formatted line parses back to the same entry.
        let again = manifest::parse(line.as_bytes()).expect("a formatted line parses");
        assert_eq!(again.entries.len(), 1, "formatted line {line:?}");
        assert_eq!(again.entries[0].name, e.name);
        assert_eq!(again.entries[0].algorithm, e.algorithm);
    }
    for b in &m.bad_lines {
        assert!(b.span.end <= data.len());
    }
    check_refresh(data, &m);
});

/// Refreshes the first entry's file for new content and compares the two parses.
fn check_refresh(data: &[u8], m: &manifest::Manifest) {
    let Some(first) = m.entries.first() else {
        return;
    };
    let Ok(r) = ovafs::commit::manifest::refresh(data, &first.name, b"new content") else {
        return;
    };
    let after = manifest::parse(&r.bytes).expect("a refreshed manifest parses");
    assert!(r.listed);
    assert_eq!(after.entries.len(), m.entries.len(), "entries kept");
    for (old, new) in m.entries.iter().zip(&after.entries) {
        assert_eq!((&old.name, &old.algorithm), (&new.name, &new.algorithm));
        if !ovafs::commit::manifest::names_file(&old.name, &first.name) {
            assert_eq!(old.value, new.value, "another file's value changed");
        }
    }
}
