//! Overlay map journal decode (`overlay::journal::replay`): never panics; a map that
//! replays keeps every run inside the disk's length and the length inside the limit, its
//! committed part ends on a record boundary inside the input, and writing the map back as
//! one batch (what compaction does) replays to the same runs and length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ovafs::overlay::journal::{self, Kind, Limits, Record, RECORD_BYTES};

const LIMITS: Limits = Limits { max_runs: 4096 };

fuzz_target!(|data: &[u8]| {
    let input = data.to_vec();
    let Ok(r) = journal::replay(&input, LIMITS) else {
        return;
    };
    assert!(r.valid_bytes <= input.len() as u64);
    let header = r.header.encode().expect("a decoded header encodes");
    assert!(header.len() as u64 <= r.valid_bytes);
    assert_eq!((r.valid_bytes - header.len() as u64) % RECORD_BYTES as u64, 0);
    assert!(r.len >= r.header.base_len && r.len <= journal::MAX_CAPACITY_BYTES);
    assert!(r.map.end() <= journal::blocks_for(r.len));
    assert!(r.map.run_count() <= LIMITS.max_runs);

    let mut records = vec![Record { kind: Kind::Length, batch: 0, a: r.len, b: 0 }];
    records.extend(r.map.runs().map(|run| Record {
        kind: Kind::Set(run.state),
        batch: 0,
        a: run.first,
        b: run.blocks(),
    }));
    let mut again = header;
    again.extend(journal::encode_batch(1, &records));
    let back = journal::replay(&again, LIMITS).expect("a compacted map replays");
    assert_eq!(back.map, r.map);
    assert_eq!(back.len, r.len);
    assert_eq!(back.header, r.header);
});
