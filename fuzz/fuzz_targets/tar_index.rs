//! Tar index over an in-memory archive: never panics; every member it reports lies inside
//! the archive and has a safe name; its header offsets are ordered (first header, own
//! header, data) with the own header a real header block, and a pax size implies a pax
//! header (the commit path relies on these fields instead of walking the headers again).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ovafs::archive::{self, names};

fuzz_target!(|data: &[u8]| {
    let src = data.to_vec();
    let Ok(index) = archive::index(&src) else {
        return;
    };
    for m in &index.members {
        let end = m
            .data_offset
            .checked_add(m.size)
            .expect("member end overflows");
        assert!(
            end <= data.len() as u64,
            "member {:?} outside the archive",
            m.name
        );
        assert!(
            m.header_offset <= m.own_header_offset
                && m.own_header_offset + archive::BLOCK_BYTES <= m.data_offset,
            "header offsets out of order: {m:?}"
        );
        assert_eq!(m.own_header_offset % archive::BLOCK_BYTES, 0, "{m:?}");
        let own = &data[m.own_header_offset as usize..][..archive::BLOCK_BYTES as usize];
        assert!(
            !matches!(own[156], b'L' | b'K' | b'x' | b'g'),
            "own header is an extension header: {m:?}"
        );
        assert!(!m.pax_size || m.pax, "pax size without a pax header: {m:?}");
        assert_eq!(
            names::normalize_str(&m.name).as_deref(),
            Ok(m.name.as_str()),
            "member name is not normalised"
        );
    }
});
