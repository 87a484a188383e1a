//! Re-encodes a changed disk as a stream-optimized VMDK with `disk::vmdk_reencode`: the
//! driver of `scripts/bench-write` (and a way to try the encoder by hand).
//!
//! ```text
//! vmdk_reencode --base BASE.vmdk|--other --flat NEW.raw [--changed RANGES|--all] OUT.vmdk
//!               [--level N] [--threads N]
//! ```
//! `RANGES` is a file of `OFFSET LENGTH` lines (bytes of the flat disk that changed); the
//! grains they touch are re-deflated, every other grain is copied from BASE. Prints the
//! report and the elapsed seconds as one JSON object.

use std::io::BufRead;
use std::sync::Arc;
use std::time::Instant;

use ovafs::disk::vmdk::SparseVmdk;
use ovafs::disk::vmdk_reencode::{Base, ReencodeOptions, reencode_stream_optimized};
use ovafs::io::{FileSource, ReadAt};

fn usage() -> ! {
    eprintln!(
        "usage: vmdk_reencode (--base BASE.vmdk | --other) --flat NEW.raw \
         [--changed RANGES | --all] [--level N] [--threads N] OUT.vmdk"
    );
    std::process::exit(2)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut base, mut other, mut flat, mut ranges, mut all, mut out) =
        (None, false, None, None, false, None);
    let mut opts = ReencodeOptions::default();
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--base" => base = Some(value()),
            "--other" => other = true,
            "--flat" => flat = Some(value()),
            "--changed" => ranges = Some(value()),
            "--all" => all = true,
            "--level" => opts.compression_level = value().parse()?,
            "--threads" => opts.threads = value().parse()?,
            _ if a.starts_with("--") => usage(),
            _ => out = Some(a),
        }
    }
    let (Some(flat), Some(out)) = (flat, out) else {
        usage()
    };
    let flat = FileSource::open(flat.as_ref())?;
    let vmdk = match (&base, other) {
        (Some(b), false) => Some(SparseVmdk::open(Arc::new(FileSource::open(b.as_ref())?))?),
        (None, true) => None,
        _ => usage(),
    };
    let grain_bytes = vmdk.as_ref().map_or(65536, |v| v.geometry().grain_bytes);
    let grains = flat.len().div_ceil(grain_bytes) as usize;
    let mut changed = vec![all; grains];
    if let Some(r) = ranges {
        for line in std::io::BufReader::new(std::fs::File::open(r)?).lines() {
            let line = line?;
            let mut w = line.split_whitespace().map(str::parse::<u64>);
            let (Some(Ok(off)), Some(Ok(len))) = (w.next(), w.next()) else {
                continue;
            };
            if len == 0 {
                continue;
            }
            let first = (off / grain_bytes) as usize;
            let last = ((off + len - 1) / grain_bytes) as usize;
            for c in changed.iter_mut().take(last + 1).skip(first) {
                *c = true;
            }
        }
    }
    let base = vmdk.as_ref().map_or(Base::Other, Base::Vmdk);
    let file = std::fs::File::create(&out)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let t = Instant::now();
    let changed_fn = |g: u64| changed.get(g as usize).copied().unwrap_or(true);
    let report = reencode_stream_optimized(base, &flat, &changed_fn, &mut w, &opts, &mut |_| {})?;
    std::io::Write::flush(&mut w)?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{{\"seconds\": {secs:.3}, \"bytes_written\": {}, \"grains_copied\": {}, \
         \"grains_deflated\": {}, \"grains_omitted\": {}, \"populated_bytes\": {}, \
         \"grains_changed\": {}}}",
        report.bytes_written,
        report.grains_copied,
        report.grains_deflated,
        report.grains_omitted,
        report.populated_bytes,
        changed.iter().filter(|&&c| c).count()
    );
    Ok(())
}
