//! Tar index over an in-memory archive: never panics; every member it reports lies inside
//! the archive and has a safe name.
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
        assert_eq!(
            names::normalize_str(&m.name).as_deref(),
            Ok(m.name.as_str()),
            "member name is not normalised"
        );
    }
});
