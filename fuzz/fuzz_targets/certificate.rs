//! Certificate file parse: never panics; a parsed file can be described, its signer judged
//! (`signer_problems`), its signature checked against some bytes and its chain checked
//! against an empty store.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ovafs::verify::cert::{self, TrustStore};

fuzz_target!(|data: &[u8]| {
    static STORE: OnceLock<TrustStore> = OnceLock::new();
    let Ok(c) = cert::parse(data) else {
        return;
    };
    for x in &c.certificates {
        let _ = cert::describe(x);
        let _ = cert::signer_problems(x);
    }
    let _ = cert::verify_signature(&c, data);
    let store = STORE.get_or_init(|| TrustStore::empty().expect("empty store"));
    let _ = cert::check_chain(&c, store);
});
