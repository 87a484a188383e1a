//! Random 4 KiB writes at queue depth 1, each followed by a flush, timed one by one: the
//! writer of `scripts/bench-write` (the same program for the ovafs mount, a qcow2 overlay
//! exported by qemu-storage-daemon and a plain file, so only the target differs).
//!
//! ```text
//! qd1_write FILE... [--ops N] [--seed S] [--block BYTES] [--span BYTES]
//!                   [--sync fsync|fdatasync|none] [--buffered] [--samples]
//! ```
//! Each operation is one `pwrite` of a block at a random block-aligned offset below `--span`
//! (default: the smallest file's size), then the `--sync` call (default `fsync`): what a
//! guest's `cache=none` disk does for a small synchronous write. Files are opened with
//! `O_DIRECT` unless `--buffered`. Every block carries different bytes (the operation number
//! and a pseudo-random fill), so no layer can skip a write as a repeat.
//!
//! With several files, operation k goes to every file in turn (the same offset and bytes,
//! the first file rotating) before operation k+1: on a shared machine whose flush latency
//! moves from one second to the next, every target sees the same moments. Prints one JSON
//! object: per file, percentiles (microseconds) of the write, of the flush and of both, and
//! with `--samples` every operation's times.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::time::Instant;

/// `O_DIRECT` needs the buffer aligned to the logical block size; 4 KiB covers every
/// device and FUSE.
const BUFFER_ALIGN: usize = 4096;

fn usage() -> ! {
    eprintln!(
        "usage: qd1_write FILE [--ops N] [--seed S] [--block BYTES] [--span BYTES] \
         [--sync fsync|fdatasync|none] [--buffered] [--samples] (FILE may repeat)"
    );
    std::process::exit(2)
}

#[derive(Clone, Copy, PartialEq)]
enum Flush {
    Fsync,
    Fdatasync,
    None,
}

struct Options {
    paths: Vec<String>,
    ops: usize,
    seed: u64,
    block: usize,
    span: Option<u64>,
    flush: Flush,
    direct: bool,
    samples: bool,
}

fn parse_args() -> Options {
    let mut args = std::env::args().skip(1);
    let mut o = Options {
        paths: vec![],
        ops: 2000,
        seed: 11,
        block: 4096,
        span: None,
        flush: Flush::Fsync,
        direct: true,
        samples: false,
    };
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        let number = |s: String| s.parse::<u64>().unwrap_or_else(|_| usage());
        match a.as_str() {
            "--ops" => o.ops = number(value()) as usize,
            "--seed" => o.seed = number(value()),
            "--block" => o.block = number(value()) as usize,
            "--span" => o.span = Some(number(value())),
            "--sync" => {
                o.flush = match value().as_str() {
                    "fsync" => Flush::Fsync,
                    "fdatasync" => Flush::Fdatasync,
                    "none" => Flush::None,
                    _ => usage(),
                }
            }
            "--buffered" => o.direct = false,
            "--samples" => o.samples = true,
            _ if a.starts_with("--") => usage(),
            _ => o.paths.push(a),
        }
    }
    if o.paths.is_empty() || o.block == 0 || !o.block.is_multiple_of(BUFFER_ALIGN) {
        usage()
    }
    o
}

/// SplitMix64: a fixed, seedable sequence, so every target gets the same offsets.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A heap buffer aligned for `O_DIRECT`.
struct AlignedBuf {
    ptr: *mut u8,
    layout: Layout,
}

impl AlignedBuf {
    fn new(len: usize) -> Self {
        let layout = Layout::from_size_align(len, BUFFER_ALIGN).expect("valid layout");
        // SAFETY: len is a non-zero multiple of BUFFER_ALIGN (checked in parse_args).
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "out of memory");
        AlignedBuf { ptr, layout }
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: ptr points to layout.size() initialised bytes owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in new() with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

/// Fills the block with bytes unique to operation `op`.
fn fill(buf: &mut [u8], op: u64, rng: &mut SplitMix) {
    for chunk in buf.chunks_exact_mut(8) {
        chunk.copy_from_slice(&rng.next().to_le_bytes());
    }
    buf[..8].copy_from_slice(&op.to_le_bytes());
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `"NAME": {percentiles}` and, with `samples`, `"NAME_samples": [each value]`.
fn summary(name: &str, values: &[f64], samples: bool) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mean = sorted.iter().sum::<f64>() / sorted.len().max(1) as f64;
    let mut out = format!(
        "\"{name}\": {{\"p50\": {:.1}, \"p90\": {:.1}, \"p99\": {:.1}, \"max\": {:.1}, \
         \"mean\": {mean:.1}}}",
        percentile(&sorted, 50.0),
        percentile(&sorted, 90.0),
        percentile(&sorted, 99.0),
        sorted.last().copied().unwrap_or(f64::NAN),
    );
    if samples {
        let all: Vec<String> = values.iter().map(|v| format!("{v:.1}")).collect();
        out += &format!(", \"{name}_samples\": [{}]", all.join(", "));
    }
    out
}

/// One file under test and its per-operation times (microseconds).
struct Target {
    path: String,
    file: std::fs::File,
    write_us: Vec<f64>,
    sync_us: Vec<f64>,
    total_us: Vec<f64>,
}

impl Target {
    fn open(path: &str, direct: bool) -> Result<Self, String> {
        let mut open = OpenOptions::new();
        open.write(true);
        if direct {
            open.custom_flags(libc::O_DIRECT);
        }
        let file = open.open(path).map_err(|e| format!("{path}: {e}"))?;
        Ok(Target {
            path: path.to_string(),
            file,
            write_us: vec![],
            sync_us: vec![],
            total_us: vec![],
        })
    }

    /// One write of `block` at `offset`, then the flush; records both times.
    fn write_and_flush(&mut self, block: &[u8], offset: u64, flush: Flush) -> Result<(), String> {
        let t0 = Instant::now();
        self.file
            .write_all_at(block, offset)
            .map_err(|e| format!("{}: write at {offset}: {e}", self.path))?;
        let t1 = Instant::now();
        match flush {
            Flush::Fsync => self.file.sync_all(),
            Flush::Fdatasync => self.file.sync_data(),
            Flush::None => Ok(()),
        }
        .map_err(|e| format!("{}: flush: {e}", self.path))?;
        let t2 = Instant::now();
        self.write_us.push((t1 - t0).as_secs_f64() * 1e6);
        self.sync_us.push((t2 - t1).as_secs_f64() * 1e6);
        self.total_us.push((t2 - t0).as_secs_f64() * 1e6);
        Ok(())
    }

    fn json(&self, samples: bool) -> String {
        format!(
            "{{\"file\": {:?}, {}, {}, {}}}",
            self.path,
            summary("write_us", &self.write_us, samples),
            summary("sync_us", &self.sync_us, samples),
            summary("total_us", &self.total_us, samples),
        )
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let o = parse_args();
    let mut targets = o
        .paths
        .iter()
        .map(|p| Target::open(p, o.direct))
        .collect::<Result<Vec<_>, _>>()?;
    let mut span = u64::MAX;
    for t in &targets {
        span = span.min(t.file.metadata()?.len());
    }
    let blocks = o.span.unwrap_or(span) / o.block as u64;
    if blocks == 0 {
        return Err("the files are smaller than one block".into());
    }
    let mut offsets = SplitMix(o.seed);
    let mut content = SplitMix(o.seed ^ 0x5eed);
    let mut buf = AlignedBuf::new(o.block);
    let run = Instant::now();
    for op in 0..o.ops {
        let offset = offsets.next() % blocks * o.block as u64;
        fill(buf.bytes(), op as u64, &mut content);
        let n = targets.len();
        for i in 0..n {
            targets[(op + i) % n].write_and_flush(buf.bytes(), offset, o.flush)?;
        }
    }
    let seconds = run.elapsed().as_secs_f64();
    let per_file: Vec<String> = targets.iter().map(|t| t.json(o.samples)).collect();
    println!(
        "{{\"ops\": {}, \"block\": {}, \"direct\": {}, \"seconds\": {seconds:.3}, \
         \"targets\": [{}]}}",
        o.ops,
        o.block,
        o.direct,
        per_file.join(", "),
    );
    Ok(())
}
