//! Manifest parse: never panics; spans are inside the input, in order and disjoint; an entry
//! re-formatted in its own style reproduces its line byte for byte unless its hex is in
//! mixed case (documented: mixed case is written in lowercase).
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
        // Whatever the style, the formatted line parses back to the same entry.
        let again = manifest::parse(line.as_bytes()).expect("a formatted line parses");
        assert_eq!(again.entries.len(), 1, "formatted line {line:?}");
        assert_eq!(again.entries[0].name, e.name);
        assert_eq!(again.entries[0].algorithm, e.algorithm);
    }
    for b in &m.bad_lines {
        assert!(b.span.end <= data.len());
    }
});
