//! GzipReader against the bytes it was made from: index build, random and concurrent reads,
//! multi-member streams, padding, and every kind of corruption as a typed error.

use super::*;
use libdeflater::{CompressionLvl, Compressor};

/// xorshift64*: deterministic test data.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// `len` bytes that look like a disk: text-like runs, noise, and long stretches of zeros.
fn disk_like(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut v = vec![0u8; len];
    let mut i = 0;
    while i < len {
        let kind = rng.below(10);
        let run = match kind {
            0 => 1 + rng.below(300_000) as usize, // zeros (already there)
            1..=3 => 1 + rng.below(4096) as usize,
            _ => 1 + rng.below(64) as usize,
        };
        let end = (i + run).min(len);
        match kind {
            0 => {}
            1..=3 => v[i..end].iter_mut().for_each(|b| *b = rng.next() as u8),
            _ => {
                let c = b'a' + rng.below(26) as u8;
                v[i..end].fill(c);
            }
        }
        i = end;
    }
    v
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut c = Compressor::new(CompressionLvl::default());
    let mut out = vec![0u8; c.gzip_compress_bound(data.len())];
    let n = c.gzip_compress(data, &mut out).unwrap();
    out.truncate(n);
    out
}

fn small_spacing() -> GzipOptions {
    GzipOptions {
        min_spacing_bytes: 64 * 1024,
        ..GzipOptions::default()
    }
}

fn open(gz: Vec<u8>, opts: GzipOptions) -> Result<GzipReader> {
    GzipReader::open_with(Arc::new(gz), opts)
}

fn gzip_err(r: Result<GzipReader>) -> GzipError {
    let e = r.expect_err("the stream must be refused");
    GzipError::of(&e)
        .unwrap_or_else(|| panic!("not a gzip error: {e:?}"))
        .clone()
}

fn read(r: &GzipReader, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let n = r.read_at(offset, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn checkpoint_offsets(r: &GzipReader) -> Vec<u64> {
    r.index.checkpoints.iter().map(|c| c.out).collect()
}

#[test]
fn random_reads_match_the_data() {
    let data = disk_like(6 << 20, 1);
    let r = open(gzip(&data), small_spacing()).unwrap();
    assert_eq!(r.len(), data.len() as u64);
    let s = r.stats();
    assert!(s.checkpoints > 20, "{s:?}");
    assert_eq!(s.members, 1);
    let mut rng = Rng::new(2);
    for _ in 0..300 {
        let off = rng.below(data.len() as u64);
        let len = 1 + rng.below(300_000) as usize;
        let end = (off as usize + len).min(data.len());
        assert_eq!(
            read(&r, off, len),
            &data[off as usize..end],
            "at {off}+{len}"
        );
    }
    // Across every checkpoint, both ways.
    for cp in checkpoint_offsets(&r) {
        for (back, len) in [(0u64, 10usize), (1, 2), (100, 70_000), (40_000, 50_000)] {
            let off = cp.saturating_sub(back);
            let end = (off as usize + len).min(data.len());
            assert_eq!(read(&r, off, len), &data[off as usize..end], "at {off}");
        }
    }
    // The very end, and past it.
    let n = data.len() as u64;
    assert_eq!(read(&r, n - 1, 10), &data[data.len() - 1..]);
    assert_eq!(
        read(&r, n - 100_000, 100_000),
        &data[data.len() - 100_000..]
    );
    assert!(read(&r, n, 10).is_empty());
    assert!(read(&r, u64::MAX, 10).is_empty());
}

#[test]
fn compressible_windows_are_stored_deflated() {
    let mut data = disk_like(2 << 20, 20);
    data.extend(vec![0u8; 2 << 20]);
    // Without pressure, windows stay raw.
    let r = open(gzip(&data), small_spacing()).unwrap();
    assert!(r.index.checkpoints.iter().all(|c| !c.deflated));
    // At the cap, they are deflated.
    let r = open(
        gzip(&data),
        GzipOptions {
            max_index_bytes: 400 * 1024,
            ..small_spacing()
        },
    )
    .unwrap();
    let s = r.stats();
    assert!(s.index_bytes <= 400 * 1024, "{s:?}");
    let deflated = r.index.checkpoints.iter().filter(|c| c.deflated).count();
    assert!(
        deflated * 2 > s.checkpoints,
        "{deflated} deflated windows; {s:?}"
    );
    let windows: usize = r.index.checkpoints.iter().map(|c| c.window_len).sum();
    let stored: usize = r.index.checkpoints.iter().map(|c| c.window.len()).sum();
    assert!(stored * 2 < windows, "{stored} bytes stored for {windows}");
    assert_eq!(read(&r, 0, data.len()), data);
}

#[test]
fn sequential_and_backward_reads_match() {
    let data = disk_like(3 << 20, 3);
    let r = open(gzip(&data), small_spacing()).unwrap();
    let mut out = Vec::new();
    let mut off = 0u64;
    while off < r.len() {
        let piece = read(&r, off, 131_072);
        off += piece.len() as u64;
        out.extend_from_slice(&piece);
    }
    assert_eq!(out, data);
    // Backwards in small steps: mostly served from the cursors' history.
    let mut off = data.len();
    while off > 0 {
        let start = off.saturating_sub(5000);
        assert_eq!(read(&r, start as u64, off - start), &data[start..off]);
        off = start;
    }
}

#[test]
fn concurrent_reads_match() {
    let data: Arc<[u8]> = disk_like(4 << 20, 4).into();
    let r = Arc::new(open(gzip(&data), small_spacing()).unwrap());
    assert_eq!(r.len(), data.as_ref().len() as u64);
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let (r, data) = (r.clone(), data.clone());
            std::thread::spawn(move || {
                let mut rng = Rng::new(10 + t);
                let n = data.as_ref().len() as u64;
                for i in 0..150 {
                    let off = if t % 2 == 0 {
                        // Sequential-ish, like readahead.
                        (i * 131_072 + t * 1000) % n
                    } else {
                        rng.below(n)
                    };
                    let len = 1 + rng.below(200_000) as usize;
                    let end = (off + len as u64).min(n) as usize;
                    assert_eq!(read(&r, off, len), &data[off as usize..end]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn multi_member_streams_with_empty_members() {
    let a = disk_like(1 << 20, 5);
    let b = disk_like(700_000, 6);
    let mut gz = gzip(&[]);
    gz.extend(gzip(&a));
    gz.extend(gzip(&[]));
    gz.extend(gzip(&b));
    gz.extend(gzip(b"x"));
    gz.extend(gzip(&[]));
    let mut data = a.clone();
    data.extend(&b);
    data.push(b'x');
    let r = open(
        gz,
        GzipOptions {
            min_spacing_bytes: 100_000,
            ..GzipOptions::default()
        },
    )
    .unwrap();
    assert_eq!(r.stats().members, 6);
    assert_eq!(r.len(), data.len() as u64);
    let seam = a.len() as u64;
    assert_eq!(
        read(&r, seam - 10, 20),
        &data[seam as usize - 10..seam as usize + 10]
    );
    let mut rng = Rng::new(7);
    for _ in 0..200 {
        let off = rng.below(data.len() as u64);
        let len = 1 + rng.below(400_000) as usize;
        let end = (off as usize + len).min(data.len());
        assert_eq!(read(&r, off, len), &data[off as usize..end]);
    }
    assert_eq!(read(&r, 0, data.len() + 5), data);
}

#[test]
fn only_empty_members_make_an_empty_stream() {
    let mut gz = gzip(&[]);
    gz.extend(gzip(&[]));
    let r = open(gz, GzipOptions::default()).unwrap();
    assert_eq!(r.len(), 0);
    assert_eq!(r.stats().members, 2);
    assert!(read(&r, 0, 10).is_empty());
}

#[test]
fn zero_padding_is_accepted_and_garbage_refused() {
    let data = disk_like(200_000, 8);
    let mut gz = gzip(&data);
    let member_len = gz.len() as u64;
    gz.extend(vec![0u8; 1000]);
    let r = open(gz.clone(), GzipOptions::default()).unwrap();
    assert_eq!(read(&r, 0, data.len()), data);

    gz.push(7);
    gz.extend(vec![0u8; 10]);
    assert_eq!(
        gzip_err(open(gz, GzipOptions::default())),
        GzipError::TrailingGarbage {
            member: 0,
            offset: member_len + 1000
        }
    );

    let mut gz = gzip(&data);
    gz.extend(b"PK\x03\x04");
    assert!(matches!(
        gzip_err(open(gz, GzipOptions::default())),
        GzipError::TrailingGarbage { offset, .. } if offset == member_len
    ));
}

#[test]
fn crc_and_isize_mismatches_are_typed_errors() {
    let data = disk_like(300_000, 9);
    let good = gzip(&data);
    let n = good.len();

    let mut bad = good.clone();
    bad[n - 8] ^= 0x01;
    assert!(matches!(
        gzip_err(open(bad, GzipOptions::default())),
        GzipError::CrcMismatch { member: 0, .. }
    ));

    let mut bad = good.clone();
    bad[n - 1] ^= 0x80;
    assert!(matches!(
        gzip_err(open(bad, GzipOptions::default())),
        GzipError::SizeMismatch { member: 0, .. }
    ));

    // The second member's trailer is checked too.
    let mut two = gzip(b"first");
    two.extend(&good);
    let m = two.len();
    two[m - 5] ^= 0x10;
    assert!(matches!(
        gzip_err(open(two, GzipOptions::default())),
        GzipError::CrcMismatch { member: 1, .. }
    ));
}

#[test]
fn corrupt_deflate_data_is_a_typed_error() {
    // BTYPE = 11 (reserved).
    let mut gz = gzip(&[]);
    gz.truncate(10);
    gz.extend([0x07, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert!(matches!(
        gzip_err(open(gz, GzipOptions::default())),
        GzipError::CorruptDeflate { member: 0, .. }
    ));
    // A distance before the start of the member: fixed block, literal 'a', then a match
    // of length 3 at distance 2.
    let mut w = BitWriter::default();
    w.bits(1, 1);
    w.bits(1, 2);
    w.fixed_literal(b'a');
    w.fixed_match_len3_dist2();
    w.bits(0, 7); // end of block
    let mut gz = gzip(&[]);
    gz.truncate(10);
    gz.extend(w.finish());
    gz.extend([0u8; 8]);
    assert!(matches!(
        gzip_err(open(gz, GzipOptions::default())),
        GzipError::CorruptDeflate { .. }
    ));
    // Flipped bytes anywhere: an error, never a panic (CRC or deflate).
    let data = disk_like(200_000, 10);
    let good = gzip(&data);
    let mut rng = Rng::new(11);
    for _ in 0..200 {
        let mut bad = good.clone();
        let i = 10 + rng.below(good.len() as u64 - 10) as usize;
        bad[i] ^= 1 << rng.below(8);
        if let Ok(r) = open(bad, GzipOptions::default()) {
            // Only possible if the flip hit something the format does not check (none
            // here), so the data must still be exact.
            assert_eq!(read(&r, 0, data.len()), data);
        }
    }
}

#[test]
fn truncated_streams_are_typed_errors() {
    let data = disk_like(100_000, 12);
    let good = gzip(&data);
    let mut cuts: Vec<usize> = (0..40).collect();
    cuts.extend((40..good.len()).step_by(997));
    cuts.extend(good.len() - 9..good.len());
    for cut in cuts {
        let e = gzip_err(open(good[..cut].to_vec(), GzipOptions::default()));
        assert!(
            matches!(e, GzipError::Truncated { .. } | GzipError::BadMagic { .. }),
            "cut {cut}: {e:?}"
        );
    }
    // A second member cut short.
    let mut two = good.clone();
    two.extend(&good[..20]);
    assert!(matches!(
        gzip_err(open(two, GzipOptions::default())),
        GzipError::Truncated { member: 1, .. }
    ));
}

#[test]
fn hostile_headers_are_refused() {
    let base = gzip(b"hello");
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = base.clone();
        f(&mut v);
        gzip_err(open(v, GzipOptions::default()))
    };
    assert_eq!(
        with(&|v| v[2] = 7),
        GzipError::BadMethod {
            member: 0,
            offset: 0,
            method: 7
        }
    );
    assert!(matches!(
        with(&|v| v[3] = 0x20),
        GzipError::ReservedFlags { .. }
    ));
    // FNAME that never ends.
    let mut v = base[..10].to_vec();
    v[3] = FNAME;
    v.extend(vec![b'a'; (MAX_HEADER_FIELD_BYTES + 10) as usize]);
    assert!(matches!(
        gzip_err(open(v, GzipOptions::default())),
        GzipError::HeaderFieldTooLong { field: "FNAME", .. }
    ));
    // FHCRC wrong, then right; FEXTRA and FCOMMENT skipped.
    let mut v = base[..10].to_vec();
    v[3] = FHCRC | FEXTRA | FCOMMENT;
    v.extend([3, 0, b'x', b'y', b'z']);
    v.extend(b"comment\0");
    let crc = libdeflater::crc32(&v) as u16;
    let mut wrong = v.clone();
    wrong.extend((crc ^ 1).to_le_bytes());
    wrong.extend(&base[10..]);
    assert!(matches!(
        gzip_err(open(wrong, GzipOptions::default())),
        GzipError::HeaderCrcMismatch { .. }
    ));
    v.extend(crc.to_le_bytes());
    v.extend(&base[10..]);
    let r = open(v, GzipOptions::default()).unwrap();
    assert_eq!(read(&r, 0, 10), b"hello");
    // Not gzip at all.
    assert_eq!(
        gzip_err(open(b"ustar".to_vec(), GzipOptions::default())),
        GzipError::BadMagic { offset: 0 }
    );
    assert_eq!(
        gzip_err(open(Vec::new(), GzipOptions::default())),
        GzipError::BadMagic { offset: 0 }
    );
}

#[test]
fn zip_bomb_keeps_the_index_under_its_cap() {
    let zeros = vec![0u8; 10_000_000];
    let gz = gzip(&zeros);
    assert!(gz.len() < 20_000);
    let cap = 16 * 1024;
    let r = open(
        gz.clone(),
        GzipOptions {
            max_index_bytes: cap,
            min_spacing_bytes: 4096,
            ..GzipOptions::default()
        },
    )
    .unwrap();
    let s = r.stats();
    assert!(s.index_bytes <= cap, "{s:?}");
    assert!(s.spacing_bytes > 4096, "{s:?}");
    assert_eq!(r.len(), 10_000_000);
    let mut rng = Rng::new(13);
    for _ in 0..50 {
        let off = rng.below(10_000_000);
        assert!(read(&r, off, 100_000).iter().all(|&b| b == 0));
    }
    // The output cap.
    let e = open(
        gz,
        GzipOptions {
            max_output_bytes: 1_000_000,
            ..GzipOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(
        e.kind(),
        ErrorKind::LimitExceeded {
            limit: 1_000_000,
            ..
        }
    ));
}

#[test]
fn thinning_keeps_reads_exact() {
    let data = disk_like(4 << 20, 14);
    let r = open(
        gzip(&data),
        GzipOptions {
            min_spacing_bytes: 16 * 1024,
            max_index_bytes: 100 * 1024,
            ..GzipOptions::default()
        },
    )
    .unwrap();
    let s = r.stats();
    assert!(
        s.index_bytes <= 100 * 1024 && s.spacing_bytes >= 32 * 1024,
        "{s:?}"
    );
    let mut rng = Rng::new(15);
    for _ in 0..100 {
        let off = rng.below(data.len() as u64);
        let len = 1 + rng.below(100_000) as usize;
        let end = (off as usize + len).min(data.len());
        assert_eq!(read(&r, off, len), &data[off as usize..end]);
    }
}

#[test]
fn one_huge_block_gets_full_state_checkpoints() {
    // A single fixed-Huffman block: literals and runs, 4 MiB of output, no boundary inside.
    let mut w = BitWriter::default();
    w.bits(1, 1);
    w.bits(1, 2);
    let mut data = Vec::new();
    let mut rng = Rng::new(16);
    while data.len() < 4 << 20 {
        let c = b'a' + rng.below(26) as u8;
        w.fixed_literal(c);
        data.push(c);
        w.fixed_literal(c.wrapping_add(1));
        data.push(c.wrapping_add(1));
        for _ in 0..rng.below(40) {
            // Length 258 at distance 1: the byte before, repeated.
            w.fixed_match258_dist1();
            let last = *data.last().unwrap();
            data.extend(std::iter::repeat_n(last, 258));
        }
    }
    w.bits(0, 7);
    let mut gz = gzip(&[]);
    gz.truncate(10);
    gz.extend(w.finish());
    gz.extend(libdeflater::crc32(&data).to_le_bytes());
    gz.extend((data.len() as u32).to_le_bytes());
    let r = open(gz, small_spacing()).unwrap();
    let s = r.stats();
    assert!(s.full_state_checkpoints > 5, "{s:?}");
    let mut rng = Rng::new(17);
    for _ in 0..100 {
        let off = rng.below(data.len() as u64);
        let len = 1 + rng.below(100_000) as usize;
        let end = (off as usize + len).min(data.len());
        assert_eq!(read(&r, off, len), &data[off as usize..end]);
    }
}

#[test]
fn progress_is_reported_to_the_end() {
    let data = disk_like(1 << 20, 18);
    let gz = gzip(&data);
    let total = gz.len() as u64;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let r = open(
        gz,
        GzipOptions {
            progress: Some(Arc::new(move |p: &GzipProgress| {
                s2.lock().unwrap().push(*p);
            })),
            ..GzipOptions::default()
        },
    )
    .unwrap();
    let seen = seen.lock().unwrap();
    let last = seen.last().unwrap();
    assert_eq!(last.compressed_done, total);
    assert_eq!(last.compressed_total, total);
    assert_eq!(last.decompressed_done, r.len());
}

#[test]
fn gnu_gzip_output_is_read() {
    // A member as GNU gzip writes it (FNAME set, level 9), when gzip is installed.
    let Ok(out) = std::process::Command::new("gzip").arg("--version").output() else {
        return;
    };
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let data = disk_like(2 << 20, 19);
    let path = dir.path().join("d.bin");
    std::fs::write(&path, &data).unwrap();
    let st = std::process::Command::new("gzip")
        .args(["-9", "-k"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(st.success());
    let gz = std::fs::read(dir.path().join("d.bin.gz")).unwrap();
    assert_eq!(gz[3] & FNAME, FNAME);
    let r = open(gz, small_spacing()).unwrap();
    assert_eq!(read(&r, 0, data.len()), data);
    assert_eq!(read(&r, 1_500_000, 10_000), &data[1_500_000..1_510_000]);
}

/// Writes deflate bits, least significant first (RFC 1951 §3.1.1).
#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    fn bits(&mut self, value: u64, count: u32) {
        self.acc |= value << self.n;
        self.n += count;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }
    /// A Huffman code, most significant bit first.
    fn code(&mut self, code: u64, len: u32) {
        let mut rev = 0;
        for i in 0..len {
            rev |= ((code >> i) & 1) << (len - 1 - i);
        }
        self.bits(rev, len);
    }
    fn fixed_literal(&mut self, b: u8) {
        if b < 144 {
            self.code(0x30 + u64::from(b), 8);
        } else {
            self.code(0x190 + u64::from(b) - 144, 9);
        }
    }
    /// Length 258 (code 285, 8 bits), distance 1 (code 0, 5 bits).
    fn fixed_match258_dist1(&mut self) {
        self.code(0xc0 + (285 - 280), 8);
        self.code(0, 5);
    }
    /// Length 3 (code 257, 7 bits), distance 2 (code 1, 5 bits).
    fn fixed_match_len3_dist2(&mut self) {
        self.code(1, 7);
        self.code(1, 5);
    }
    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

/// Process CPU time (user + system) in seconds, from `/proc/self/stat` (ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / 100.0
}

/// Figures for `scripts/bench-gzip` (which sets `OVAFS_BENCH_GZ` to a gzip file): one plain
/// inflate pass with the same inflater (CRC checked, no checkpoints), the index build
/// ([`GzipReader::open`]), then reads after the index is built: the last MiB (first read,
/// so it restores a checkpoint), the last MiB again, and random 1 MiB reads.
#[test]
#[ignore = "benchmark: run by scripts/bench-gzip"]
fn bench_index_build_and_reads() {
    use std::time::Instant;
    let Some(path) = std::env::var_os("OVAFS_BENCH_GZ") else {
        println!("OVAFS_BENCH_GZ is not set: nothing to measure");
        return;
    };
    let src: Arc<dyn ReadAt> =
        Arc::new(crate::io::FileSource::open(std::path::Path::new(&path)).unwrap());

    let (w, c) = (Instant::now(), cpu_seconds());
    let mut cur = Cursor::at_start(true);
    let mut events = 0u64;
    while cur.step(&*src).unwrap() != Event::End {
        events += 1;
    }
    let (plain_wall, plain_cpu) = (w.elapsed().as_secs_f64(), cpu_seconds() - c);
    println!(
        "plain inflate pass (miniz_oxide, CRC checked, no index): {:.2} s wall, {:.2} s CPU, \
         {} bytes ({:.0} MB/s of CPU), {events} steps",
        plain_wall,
        plain_cpu,
        cur.out,
        cur.out as f64 / plain_cpu.max(0.01) / 1e6
    );

    let (w, c) = (Instant::now(), cpu_seconds());
    let r = GzipReader::open(src.clone()).unwrap();
    let (build_wall, build_cpu) = (w.elapsed().as_secs_f64(), cpu_seconds() - c);
    let s = r.stats();
    println!(
        "index build (GzipReader::open): {build_wall:.2} s wall, {build_cpu:.2} s CPU = {:.2}x \
         the plain pass's CPU; {} checkpoints every {} bytes, {} bytes of index",
        build_cpu / plain_cpu.max(0.01),
        s.checkpoints,
        s.spacing_bytes,
        s.index_bytes
    );

    let mib = 1usize << 20;
    let mut buf = vec![0u8; mib];
    let last = r.len().saturating_sub(mib as u64);
    let t = Instant::now();
    r.read_exact_at(last, &mut buf).unwrap();
    let first = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    r.read_exact_at(last, &mut buf).unwrap();
    let again = t.elapsed().as_secs_f64() * 1e3;
    println!("last MiB after the index is built: {first:.1} ms (again: {again:.1} ms)");

    let mut rng = Rng::new(99);
    let mut times: Vec<f64> = (0..50)
        .map(|_| {
            let off = rng.below(r.len().saturating_sub(mib as u64).max(1));
            let t = Instant::now();
            r.read_exact_at(off, &mut buf).unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!(
        "random 1 MiB reads (50): median {:.1} ms, max {:.1} ms",
        times[times.len() / 2],
        times[times.len() - 1]
    );
}

#[test]
fn the_index_pass_stops_at_the_inflate_budget_and_counts_its_index() {
    use crate::io::budget::BudgetKind;
    let data = vec![0u8; 8 << 20];
    let stored: Arc<dyn ReadAt> = Arc::new(gzip(&data));
    let tight = Budget::new(BudgetKind::Inflate, 2 << 20);
    let options = GzipOptions {
        inflate_budget: Some(tight.clone()),
        ..GzipOptions::default()
    };
    let e = GzipReader::open_with(stored.clone(), options).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::BudgetExceeded { option, .. } if *option == "inflate_limit"),
        "{e}"
    );
    assert!(tight.used() <= 2 << 20);
    // Two streams share one budget: the second one is refused where one alone fits.
    let shared = Budget::new(BudgetKind::Inflate, 12 << 20);
    let metadata = Budget::new(BudgetKind::Metadata, 1 << 30);
    let options = GzipOptions {
        inflate_budget: Some(shared.clone()),
        metadata_budget: Some(metadata.clone()),
        ..GzipOptions::default()
    };
    let r = GzipReader::open_with(stored.clone(), options.clone()).unwrap();
    assert!(shared.used() >= 8 << 20);
    assert_eq!(
        metadata.used(),
        r.stats().index_bytes + CURSOR_SLOTS as u64 * CURSOR_SLOT_BYTES,
        "the index and the decoders are counted"
    );
    assert!(GzipReader::open_with(stored, options).is_err());
}
