//! Package open over an in-memory OVA: never panics; resolved Files' stored bytes can be
//! read; the digest check runs (single-threaded) without panicking.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use ovafs::io::ReadAt;
use ovafs::verify::{TrustSource, VerifyOptions, digest::DigestOptions, verify_package};

fuzz_target!(|data: &[u8]| {
    let src: Arc<dyn ReadAt> = Arc::new(data.to_vec());
    let Ok(pkg) = ovafs::package::open_ova_source(src, Path::new("fuzz.ova")) else {
        return;
    };
    for f in &pkg.files {
        if let Some(d) = &f.data {
            let mut buf = [0u8; 64];
            let _ = d.read_at(0, &mut buf);
        }
    }
    let options = VerifyOptions {
        digest: DigestOptions {
            threads: 1,
            chunk_bytes: 1 << 16,
        },
        trust: TrustSource::Nothing,
        require_trusted: false,
    };
    let _ = verify_package(&pkg, &options, &|_| {});
});
