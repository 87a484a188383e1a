//! OVF descriptor parse: never panics; a document that parses round-trips byte for byte
//! through `with_edits(&[])`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(d) = ovafs::ovf::parse(data) else {
        return;
    };
    let again = d.with_edits(&[]).expect("no-edit splice must succeed");
    assert_eq!(again, data, "no-edit round trip changed the document");
});
