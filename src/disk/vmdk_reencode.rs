//! Re-encodes a changed disk as a new stream-optimized VMDK (issue 11, the commit of a
//! changed disk), in VMware's layout (docs/formats.md §4.5): version 3, flags 0x30001, the
//! header's gdOffset `GD_AT_END`, grains in LBA order with a grain table after each run of
//! grains, then the grain directory, the footer marker, the footer and the end-of-stream
//! marker as the last three sectors. All-zero grains are not written.
//!
//! Inputs: the base image, the new flat content (a [`ReadAt`] of the whole new disk; its
//! length is the new capacity), and a predicate saying which grains changed. A grain that
//! did not change is the base's:
//! * with a VMDK base whose grains are zlib-compressed (stream-optimized), its stored bytes
//!   are copied verbatim with a new marker of the same LBA and size: never inflated, never
//!   deflated again; a grain the base does not hold is omitted (zeros);
//! * otherwise (a changed grain, a base in another format, an uncompressed monolithicSparse
//!   grain, a raw-deflate grain qemu could not read, a delta link's unallocated grain, the
//!   grains at the old and new ends of a resized disk) it is read from the flat content and
//!   deflated with libdeflate, or omitted when it is all zeros. A partial last grain is
//!   always deflated from the flat content, padded to a whole grain (qemu-img stores it
//!   short; VirtualBox inflates whole grains only).
//!
//! Work is split into batches of [`BATCH_GRAINS`] consecutive grains; worker threads (one
//! per core by default) take the next batch, read and compress it, and the caller's thread
//! writes batches in order to `out` (no seek). A worker never starts a batch more than
//! [`BATCHES_PER_WORKER`] × workers ahead of the one being written, so memory is bounded by
//! the grains in flight, not by the disk; the grain directory and one grain table (4 bytes
//! a grain) are kept in memory.
//!
//! The embedded descriptor of a VMDK base is kept line for line except what must change:
//! `CID` (and `ddb.longContentID`) when the content changed, `createType` when the base was
//! not stream-optimized, `parentCID`/`parentFileNameHint` when a delta link is flattened,
//! and the extent line's sector count and `ddb.geometry.cylinders` when the capacity
//! changed. A base in another format gets a fresh descriptor ([`descriptor_text`]).

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::sync::mpsc;
use std::sync::{Condvar, Mutex};

use super::vmdk::{SparseVmdk, StoredGrain, parse_extent_line};
use super::vmdk_writer::{
    DESCRIPTOR_SECTORS, FooterLayout, GrainCoder, SectorWriter, StreamWriterOptions,
    compression_level, descriptor_text, footer_layout_header, is_all_zero,
};
use super::{DiskImage, MAX_VIRTUAL_BYTES, SECTOR_BYTES};
use crate::error::{Error, Result};
use crate::io::ReadAt;

/// Consecutive grains one worker reads and compresses at a time (1 MiB at 64 KiB grains).
pub const BATCH_GRAINS: u64 = 16;

/// A copied grain whose stored bytes are at most 1/64 of a grain (1 KiB at 64 KiB grains;
/// a zlib grain of zeros takes about 100 bytes) is inflated to see whether it is all zeros,
/// and then omitted: qemu-img writes zero grains into its streams. Nothing bigger is ever
/// inflated.
pub const ZERO_PROBE_DIVISOR: u64 = 64;

/// Batches each worker may have in flight ahead of the writer.
pub const BATCHES_PER_WORKER: u64 = 4;

/// The image the new VMDK replaces.
#[derive(Clone, Copy)]
pub enum Base<'a> {
    /// A VMDK sparse extent (stream-optimized or monolithicSparse): its grains and
    /// descriptor are reused.
    Vmdk(&'a SparseVmdk),
    /// Any other format (VHD, qcow2, raw, ...): every non-zero grain is deflated from the
    /// flat content and the descriptor is made fresh.
    Other,
}

/// Options of [`reencode_stream_optimized`].
#[derive(Debug, Clone)]
pub struct ReencodeOptions {
    /// libdeflate level of deflated grains, 0..=12 (default 6; `-o commit_level=`).
    pub compression_level: i32,
    /// Worker threads; 0 means one per core (`std::thread::available_parallelism`).
    pub threads: usize,
    /// The new content id; `None`: kept when nothing changed, else a random new one.
    pub cid: Option<u32>,
    /// For a base that is not a VMDK: the fresh descriptor's extent file name, adapter,
    /// hardware and tools versions, and the grain size (`layout` and `cid` are ignored).
    pub fresh: StreamWriterOptions,
}

impl Default for ReencodeOptions {
    fn default() -> Self {
        ReencodeOptions {
            compression_level: 6,
            threads: 0,
            cid: None,
            fresh: StreamWriterOptions::default(),
        }
    }
}

/// What [`reencode_stream_optimized`] wrote: `bytes_written` is the new file's `ovf:size`,
/// `populated_bytes` its `ovf:populatedSize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReencodeReport {
    /// Bytes written to `out` (a multiple of 512).
    pub bytes_written: u64,
    /// Capacity of the new disk in bytes (the flat content's length).
    pub capacity_bytes: u64,
    /// Grains whose stored compressed bytes were copied from the base.
    pub grains_copied: u64,
    /// Grains read from the flat content and deflated.
    pub grains_deflated: u64,
    /// Grains not written: all zeros, or absent from the base and unchanged.
    pub grains_omitted: u64,
    /// Grain tables written.
    pub grain_tables: u64,
    /// Virtual bytes held by the written grains (the last grain counts its bytes inside
    /// the capacity): the disk's populated size.
    pub populated_bytes: u64,
    /// The new descriptor's content id.
    pub cid: u32,
}

/// Progress of a re-encode, reported after each batch written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReencodeProgress {
    /// Grains written or omitted so far.
    pub grains_done: u64,
    /// Grains of the new disk.
    pub grains: u64,
    /// Bytes written so far.
    pub bytes_written: u64,
}

fn invalid(reason: impl Into<String>) -> Error {
    super::vmdk::VmdkError::WriterInvalidInput {
        reason: reason.into(),
    }
    .into()
}

/// Writes the disk whose content is `flat` as a new stream-optimized VMDK to `out`.
///
/// `changed(grain)` says whether grain `grain` (of the new geometry) differs from `base`;
/// every grain it does not name must read in `flat` as it does in the base. The grain size
/// is the base's (a VMDK base) or `opts.fresh.grain_sectors`. `progress` is called on the
/// caller's thread after each batch. Fails on an invalid option or capacity, on a read
/// error of the base or the flat content, and on a write error of `out`; `out` then holds
/// a partial stream the caller throws away.
pub fn reencode_stream_optimized<W: Write + ?Sized>(
    base: Base<'_>,
    flat: &dyn ReadAt,
    changed: &(dyn Fn(u64) -> bool + Sync),
    out: &mut W,
    opts: &ReencodeOptions,
    progress: &mut dyn FnMut(ReencodeProgress),
) -> Result<ReencodeReport> {
    let len = flat.len();
    if len == 0 || len > MAX_VIRTUAL_BYTES {
        return Err(invalid(format!(
            "flat content of {len} bytes is not in 1..={MAX_VIRTUAL_BYTES}"
        )));
    }
    let level = compression_level(opts.compression_level)?;
    let capacity_sectors = len.div_ceil(SECTOR_BYTES);
    let plan = Plan::new(base, capacity_sectors, opts)?;
    let (descriptor, cid) = plan.descriptor(base, capacity_sectors, changed, opts)?;
    let descriptor_sectors = (descriptor.len() as u64)
        .div_ceil(SECTOR_BYTES)
        .max(plan.descriptor_sectors);
    let (header, geometry) =
        footer_layout_header(capacity_sectors, plan.grain_sectors, descriptor_sectors)?;

    let mut w = SectorWriter::new(out);
    w.write(&header.encode())?;
    w.write(&descriptor)?;
    w.pad_to(header.overhead_sectors)?;
    let mut layout = FooterLayout::new(geometry, true);
    let mut report = ReencodeReport {
        capacity_bytes: len,
        cid,
        ..ReencodeReport::default()
    };

    let batches = geometry.grains.div_ceil(BATCH_GRAINS);
    let workers = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .clamp(1, 256);
    let window = BATCHES_PER_WORKER * workers as u64;
    let sched = Schedule {
        state: Mutex::new(ScheduleState {
            next: 0,
            written: 0,
            stop: false,
        }),
        wake: Condvar::new(),
    };
    let job = Job {
        base: plan.reusable(base),
        flat,
        changed,
        geometry_grains: geometry.grains,
        grain_bytes: geometry.grain_bytes,
        forced: plan.forced_range,
    };

    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = mpsc::channel::<(u64, Result<Batch>)>();
        for _ in 0..workers {
            let tx = tx.clone();
            let (sched, job) = (&sched, &job);
            scope.spawn(move || {
                let mut coder = GrainCoder::new(job.flat, geometry, level);
                let mut probe = ZeroProbe::new(geometry.grain_bytes);
                while let Some(index) = sched.claim(batches, window) {
                    let batch = job.run(index, &mut coder, &mut probe);
                    let failed = batch.is_err();
                    if tx.send((index, batch)).is_err() || failed {
                        sched.stop();
                        return;
                    }
                }
            });
        }
        drop(tx);
        let written = write_batches(&rx, batches, &sched, |batch| {
            for (grain, kind, range) in &batch.grains {
                match kind {
                    GrainKind::Copied => report.grains_copied += 1,
                    GrainKind::Deflated => report.grains_deflated += 1,
                }
                layout.grain(&mut w, *grain, &batch.data[range.clone()])?;
                let start = grain * geometry.grain_bytes;
                report.populated_bytes += geometry.grain_bytes.min(len - start);
            }
            report.grains_omitted += batch.omitted;
            let done = ((batch.index + 1) * BATCH_GRAINS).min(geometry.grains);
            progress(ReencodeProgress {
                grains_done: done,
                grains: geometry.grains,
                bytes_written: w.written(),
            });
            Ok(())
        });
        // Wake and stop every worker whatever happened, before the scope joins them.
        sched.stop();
        written
    })?;

    layout.finish(&mut w, &header)?;
    report.grain_tables = layout.tables_written;
    report.bytes_written = w.written();
    Ok(report)
}

/// Receives batches (in any order) and hands them to `write` in index order.
fn write_batches(
    rx: &mpsc::Receiver<(u64, Result<Batch>)>,
    batches: u64,
    sched: &Schedule,
    mut write: impl FnMut(&Batch) -> Result<()>,
) -> Result<()> {
    let mut pending: BTreeMap<u64, Batch> = BTreeMap::new();
    let mut next = 0u64;
    while next < batches {
        let Ok((index, batch)) = rx.recv() else {
            return Err(invalid(
                "a re-encoding worker stopped before its work was done",
            ));
        };
        pending.insert(index, batch?);
        while let Some(batch) = pending.remove(&next) {
            write(&batch)?;
            next += 1;
            sched.written(next);
        }
    }
    Ok(())
}

/// Hands out batch indices, at most `window` ahead of the batch being written.
struct Schedule {
    state: Mutex<ScheduleState>,
    wake: Condvar,
}

struct ScheduleState {
    next: u64,
    written: u64,
    stop: bool,
}

impl Schedule {
    fn lock(&self) -> std::sync::MutexGuard<'_, ScheduleState> {
        // Plain counters: a panicking holder cannot leave them inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next batch to work on, waiting while the window is full; `None` when all are
    /// handed out or the run stopped.
    fn claim(&self, batches: u64, window: u64) -> Option<u64> {
        let mut s = self.lock();
        loop {
            if s.stop || s.next >= batches {
                return None;
            }
            if s.next < s.written + window {
                s.next += 1;
                return Some(s.next - 1);
            }
            s = self.wake.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Records that batches below `written` are written, opening the window.
    fn written(&self, written: u64) {
        self.lock().written = written;
        self.wake.notify_all();
    }

    fn stop(&self) {
        self.lock().stop = true;
        self.wake.notify_all();
    }
}

/// How a written grain was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GrainKind {
    Copied,
    Deflated,
}

/// One batch's output: the grains to write, their compressed bytes in `data`.
struct Batch {
    index: u64,
    grains: Vec<(u64, GrainKind, std::ops::Range<usize>)>,
    data: Vec<u8>,
    omitted: u64,
}

/// What a worker needs to encode batches.
struct Job<'a> {
    /// The base whose stored grains may be copied (`None`: deflate everything).
    base: Option<Reusable<'a>>,
    flat: &'a dyn ReadAt,
    changed: &'a (dyn Fn(u64) -> bool + Sync),
    geometry_grains: u64,
    grain_bytes: u64,
    /// Grains always taken from the flat content (the resized ends and anything past the
    /// base's grains).
    forced: ForcedGrains,
}

/// A VMDK base whose compressed grains can be copied.
#[derive(Clone, Copy)]
struct Reusable<'a> {
    vmdk: &'a SparseVmdk,
    /// Whether an unallocated grain is zeros (false for a delta link: the parent's bytes).
    unallocated_is_zero: bool,
}

/// Grains that must come from the flat content whatever `changed` says.
#[derive(Debug, Clone, Copy)]
struct ForcedGrains {
    /// Grains at and past this one are not the base's (or are the base's last grain,
    /// whose length changed).
    from: u64,
    /// The new last grain when the capacity changed (its tail was the base's data).
    new_last: Option<u64>,
}

impl ForcedGrains {
    fn contains(&self, grain: u64) -> bool {
        grain >= self.from || self.new_last == Some(grain)
    }
}

impl Job<'_> {
    fn run(&self, index: u64, coder: &mut GrainCoder<'_>, probe: &mut ZeroProbe) -> Result<Batch> {
        let first = index * BATCH_GRAINS;
        let end = (first + BATCH_GRAINS).min(self.geometry_grains);
        // Compressed grains are at most a grain plus a little; one grain each is the usual.
        let mut batch = Batch {
            index,
            grains: Vec::with_capacity(BATCH_GRAINS as usize),
            data: Vec::with_capacity((BATCH_GRAINS * self.grain_bytes / 2) as usize),
            omitted: 0,
        };
        for grain in first..end {
            let from_base = match &self.base {
                Some(base) if !self.forced.contains(grain) && !(self.changed)(grain) => {
                    base.grain(grain, probe)?
                }
                _ => Reuse::Deflate,
            };
            let kind = match from_base {
                Reuse::Omit => None,
                Reuse::Copy => {
                    let start = batch.data.len();
                    batch.data.extend_from_slice(&probe.stored);
                    Some((GrainKind::Copied, start))
                }
                Reuse::Deflate => coder.load(grain)?.map(|size| {
                    let start = batch.data.len();
                    batch.data.extend_from_slice(coder.compressed(size));
                    (GrainKind::Deflated, start)
                }),
            };
            match kind {
                Some((kind, start)) => batch.grains.push((grain, kind, start..batch.data.len())),
                None => batch.omitted += 1,
            }
        }
        Ok(batch)
    }
}

/// What to do with an unchanged grain of a VMDK base.
enum Reuse {
    /// Zeros: write nothing.
    Omit,
    /// Its stored zlib bytes (in the worker's buffer) are written as they are.
    Copy,
    /// Read it from the flat content and deflate it.
    Deflate,
}

/// A worker's buffers for a base grain: its stored bytes, and what a small one inflates to.
struct ZeroProbe {
    stored: Vec<u8>,
    inflated: Vec<u8>,
    decompressor: libdeflater::Decompressor,
    max_probed: usize,
}

impl ZeroProbe {
    fn new(grain_bytes: u64) -> Self {
        ZeroProbe {
            stored: Vec::new(),
            // OK to cast: grain_bytes <= 1 MiB (validated header).
            inflated: vec![0u8; grain_bytes as usize],
            decompressor: libdeflater::Decompressor::new(),
            max_probed: (grain_bytes / ZERO_PROBE_DIVISOR) as usize,
        }
    }

    /// Whether the stored zlib bytes are small and inflate to zeros. A stream that does not
    /// inflate is not zeros: it is then copied as it is, as any other stored grain.
    fn stored_zeros(&mut self) -> bool {
        if self.stored.len() > self.max_probed {
            return false;
        }
        match self
            .decompressor
            .zlib_decompress(&self.stored, &mut self.inflated)
        {
            Ok(n) => is_all_zero(&self.inflated[..n]),
            Err(_) => false,
        }
    }
}

impl Reusable<'_> {
    fn grain(&self, grain: u64, probe: &mut ZeroProbe) -> Result<Reuse> {
        Ok(match self.vmdk.stored_grain(grain, &mut probe.stored)? {
            StoredGrain::Unallocated if self.unallocated_is_zero => Reuse::Omit,
            StoredGrain::Zeroed => Reuse::Omit,
            StoredGrain::Compressed { zlib: true } if probe.stored_zeros() => Reuse::Omit,
            StoredGrain::Compressed { zlib: true } => Reuse::Copy,
            // Raw deflate (qemu reads only zlib), uncompressed hosted-sparse grains, and a
            // delta link's parent data.
            StoredGrain::Compressed { zlib: false }
            | StoredGrain::Uncompressed { .. }
            | StoredGrain::Unallocated => Reuse::Deflate,
        })
    }
}

/// Decisions that depend on the base only.
struct Plan {
    grain_sectors: u64,
    /// Sectors reserved for the descriptor (the base's, so an unchanged disk keeps its
    /// layout; at least what the text needs).
    descriptor_sectors: u64,
    forced_range: ForcedGrains,
}

impl Plan {
    fn new(base: Base<'_>, capacity_sectors: u64, opts: &ReencodeOptions) -> Result<Self> {
        Ok(match base {
            Base::Vmdk(v) => {
                let h = v.header();
                let g = v.geometry();
                let grain_sectors = g.grain_sectors;
                let base_sectors = g.capacity_bytes / SECTOR_BYTES;
                let new_grains = capacity_sectors.div_ceil(grain_sectors);
                let resized = base_sectors != capacity_sectors;
                // The base's last grain is reused only while the capacity is the same and it
                // is whole: qemu-img stores a partial last grain short, which VirtualBox
                // refuses (it inflates whole grains), and a grown disk reads past it.
                let from = if resized || !base_sectors.is_multiple_of(grain_sectors) {
                    g.grains.saturating_sub(1)
                } else {
                    g.grains
                };
                Plan {
                    grain_sectors,
                    descriptor_sectors: h.descriptor_size_sectors.max(1),
                    forced_range: ForcedGrains {
                        from,
                        new_last: resized.then(|| new_grains - 1),
                    },
                }
            }
            Base::Other => Plan {
                grain_sectors: opts.fresh.grain_sectors,
                descriptor_sectors: DESCRIPTOR_SECTORS,
                forced_range: ForcedGrains {
                    from: 0,
                    new_last: None,
                },
            },
        })
    }

    fn reusable<'a>(&self, base: Base<'a>) -> Option<Reusable<'a>> {
        match base {
            Base::Vmdk(vmdk) => Some(Reusable {
                vmdk,
                unallocated_is_zero: vmdk.parent().is_none(),
            }),
            Base::Other => None,
        }
    }

    /// The new descriptor's bytes and its CID.
    fn descriptor(
        &self,
        base: Base<'_>,
        capacity_sectors: u64,
        changed: &(dyn Fn(u64) -> bool + Sync),
        opts: &ReencodeOptions,
    ) -> Result<(Vec<u8>, u32)> {
        // A VMDK base without an embedded descriptor has nothing to keep: it gets a fresh
        // one, as a base in another format does.
        let old = match base {
            Base::Vmdk(v) => v.descriptor_bytes()?.filter(|d| !d.is_empty()),
            Base::Other => None,
        };
        match (base, old) {
            (Base::Vmdk(v), Some(old)) => {
                let old_cid = v.descriptor().and_then(|d| d.cid);
                let resized = v.geometry().capacity_bytes / SECTOR_BYTES != capacity_sectors;
                // Changed content needs a new CID; finding out costs one predicate call a
                // grain, nothing next to the encoding.
                let content_changed = resized
                    || v.parent().is_some()
                    || (0..capacity_sectors.div_ceil(self.grain_sectors)).any(changed);
                let cid = match (opts.cid, old_cid) {
                    (Some(cid), _) => cid,
                    (None, Some(old)) if !content_changed => old,
                    (None, old) => random_cid(old),
                };
                let edits = DescriptorEdits {
                    cid: (Some(cid) != old_cid).then_some(cid),
                    capacity_sectors: resized.then_some(capacity_sectors),
                    flatten: v.parent().is_some(),
                };
                Ok((edit_descriptor(&old, &edits), cid))
            }
            (_, _) => {
                let cid = opts.cid.unwrap_or_else(|| random_cid(None));
                let fresh = StreamWriterOptions {
                    cid,
                    ..opts.fresh.clone()
                };
                let name = &fresh.extent_file_name;
                if name.is_empty() || name.contains(['"', '\n', '\r', '\0']) {
                    return Err(invalid(format!(
                        "extent file name {name:?} is empty or has quotes or line breaks"
                    )));
                }
                Ok((descriptor_text(&fresh, capacity_sectors).into_bytes(), cid))
            }
        }
    }
}

/// A random content id, different from `old` and from the reserved `ffffffff`.
fn random_cid(old: Option<u32>) -> u32 {
    let state = std::collections::hash_map::RandomState::new();
    let mut n = 0u64;
    loop {
        let mut h = state.build_hasher();
        h.write_u64(n);
        // OK to truncate: any 32 bits of the hash will do.
        let cid = h.finish() as u32;
        if cid != u32::MAX && Some(cid) != old {
            return cid;
        }
        n += 1;
    }
}

/// What [`edit_descriptor`] changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DescriptorEdits {
    /// A new `CID` (and the low 32 bits of `ddb.longContentID`, which VMware keeps equal to
    /// it).
    pub cid: Option<u32>,
    /// A new capacity: the first extent line's sector count and `ddb.geometry.cylinders`.
    pub capacity_sectors: Option<u64>,
    /// The disk is no longer a delta link: `parentCID=ffffffff`, no `parentFileNameHint`.
    pub flatten: bool,
}

/// A descriptor line as trimmed text, if it is UTF-8.
fn text_of(line: &[u8]) -> Option<&str> {
    std::str::from_utf8(line).ok().map(str::trim)
}

/// Sectors per track and heads of the geometry, for recomputing cylinders.
fn geometry_cylinders(capacity_sectors: u64, heads: u64, sectors: u64) -> u64 {
    capacity_sectors
        .div_ceil(heads.max(1) * sectors.max(1))
        .min(65_535)
}

/// The embedded descriptor `old` with `edits` applied and `createType="streamOptimized"`;
/// every other line (comments, unknown keys, line endings, bytes that are not UTF-8) is kept
/// as it is.
pub fn edit_descriptor(old: &[u8], edits: &DescriptorEdits) -> Vec<u8> {
    let value_of = |key: &str| {
        old.split(|&b| b == b'\n').find_map(|line| {
            let (k, v) = text_of(line)?.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case(key)
                .then(|| v.trim().trim_matches('"').parse::<u64>().ok())?
        })
    };
    let heads = value_of("ddb.geometry.heads").unwrap_or(255);
    let track = value_of("ddb.geometry.sectors").unwrap_or(63);
    let mut out = Vec::with_capacity(old.len() + 64);
    let mut extent_done = false;
    let mut create_type_seen = false;
    for line in old.split_inclusive(|&b| b == b'\n') {
        let body_len = line.len()
            - line
                .iter()
                .rev()
                .take_while(|&&b| b == b'\n' || b == b'\r')
                .count();
        let (body, ending) = line.split_at(body_len);
        let replaced = text_of(body).and_then(|text| {
            edit_line(
                text,
                edits,
                &mut extent_done,
                &mut create_type_seen,
                (heads, track),
            )
        });
        match replaced {
            Some(Edit::Drop) => {}
            Some(Edit::Replace(new)) => {
                out.extend_from_slice(new.as_bytes());
                out.extend_from_slice(ending);
            }
            None => out.extend_from_slice(line),
        }
    }
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    if !create_type_seen {
        out.extend_from_slice(b"createType=\"streamOptimized\"\n");
    }
    out
}

enum Edit {
    Drop,
    Replace(String),
}

/// `key=value` with `value` quoted when the old one was.
fn with_value(line: &str, value: &str) -> String {
    let (key, old) = line.split_once('=').unwrap_or((line, ""));
    let spaced = old.starts_with(' ');
    let quoted = old.trim().starts_with('"');
    let gap = if spaced { " " } else { "" };
    if quoted {
        format!("{key}={gap}\"{value}\"")
    } else {
        format!("{key}={gap}{value}")
    }
}

fn edit_line(
    text: &str,
    edits: &DescriptorEdits,
    extent_done: &mut bool,
    create_type_seen: &mut bool,
    (heads, track): (u64, u64),
) -> Option<Edit> {
    if text.starts_with('#') || text.is_empty() {
        return None;
    }
    if let Some((key, value)) = text.split_once('=') {
        let key = key.trim();
        let value = value.trim().trim_matches('"');
        let is = |k: &str| key.eq_ignore_ascii_case(k);
        if is("createType") {
            *create_type_seen = true;
            return (value != "streamOptimized")
                .then(|| Edit::Replace(with_value(text, "streamOptimized")));
        }
        if is("CID") {
            return edits
                .cid
                .map(|cid| Edit::Replace(with_value(text, &format!("{cid:08x}"))));
        }
        if is("ddb.longContentID") && value.len() == 32 {
            let cid = edits.cid?;
            return Some(Edit::Replace(with_value(
                text,
                &format!("{}{cid:08x}", &value[..24]),
            )));
        }
        if is("parentCID") && edits.flatten {
            return Some(Edit::Replace(with_value(text, "ffffffff")));
        }
        if is("parentFileNameHint") && edits.flatten {
            return Some(Edit::Drop);
        }
        if is("ddb.geometry.cylinders") {
            let capacity = edits.capacity_sectors?;
            let cylinders = geometry_cylinders(capacity, heads, track);
            return Some(Edit::Replace(with_value(text, &cylinders.to_string())));
        }
        return None;
    }
    if *extent_done {
        return None;
    }
    let extent = parse_extent_line(text)?;
    *extent_done = true;
    let capacity = edits.capacity_sectors?;
    // Replace the second word (the sector count), keeping the rest of the line.
    let count = extent.size_sectors.to_string();
    let at = text.find(&count)?;
    Some(Edit::Replace(format!(
        "{}{capacity}{}",
        &text[..at],
        &text[at + count.len()..]
    )))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test
mod tests {
    use super::*;

    const VMWARE: &str = "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID=a454774a\n\
parentCID=ffffffff\ncreateType=\"streamOptimized\"\n\n# Extent description\n\
RDONLY 33554432 SPARSE \"disk.vmdk\"\n\n# The Disk Data Base\n#DDB\n\n\
ddb.adapterType = \"lsilogic\"\nddb.geometry.cylinders = \"2088\"\n\
ddb.geometry.heads = \"255\"\nddb.geometry.sectors = \"63\"\n\
ddb.longContentID = \"8d2f54e1c2a46d3b5c9f1e0aa454774a\"\nddb.toolsVersion = \"2147483647\"\n";

    fn edit(text: &str, edits: DescriptorEdits) -> String {
        String::from_utf8(edit_descriptor(text.as_bytes(), &edits)).unwrap()
    }

    #[test]
    fn no_edit_keeps_the_descriptor_byte_for_byte() {
        assert_eq!(edit(VMWARE, DescriptorEdits::default()), VMWARE);
        let crlf = VMWARE.replace('\n', "\r\n");
        assert_eq!(edit(&crlf, DescriptorEdits::default()), crlf);
    }

    #[test]
    fn cid_and_long_content_id_change_together() {
        let e = edit(
            VMWARE,
            DescriptorEdits {
                cid: Some(0x0123_abcd),
                ..Default::default()
            },
        );
        let expected = VMWARE
            .replace("CID=a454774a", "CID=0123abcd")
            .replace("1e0aa454774a\"", "1e0a0123abcd\"");
        assert_eq!(e, expected);
    }

    #[test]
    fn capacity_changes_the_extent_line_and_cylinders_only() {
        let e = edit(
            VMWARE,
            DescriptorEdits {
                capacity_sectors: Some(67_108_864),
                ..Default::default()
            },
        );
        let expected = VMWARE
            .replace("RDONLY 33554432 SPARSE", "RDONLY 67108864 SPARSE")
            .replace("cylinders = \"2088\"", "cylinders = \"4178\"");
        assert_eq!(e, expected);
    }

    #[test]
    fn a_delta_link_is_flattened_and_a_sparse_one_becomes_a_stream() {
        let delta = "# Disk DescriptorFile\nversion=1\nCID=11111111\nparentCID=22222222\n\
createType=\"monolithicSparse\"\nparentFileNameHint=\"base.vmdk\"\nRW 2048 SPARSE \"d.vmdk\"\n";
        let e = edit(
            delta,
            DescriptorEdits {
                cid: Some(0x33333333),
                flatten: true,
                ..Default::default()
            },
        );
        assert_eq!(
            e,
            "# Disk DescriptorFile\nversion=1\nCID=33333333\nparentCID=ffffffff\n\
createType=\"streamOptimized\"\nRW 2048 SPARSE \"d.vmdk\"\n"
        );
        // No createType at all: one is added; a missing final newline is supplied.
        assert_eq!(
            edit("CID=1\nRW 8 SPARSE \"x\"", DescriptorEdits::default()),
            "CID=1\nRW 8 SPARSE \"x\"\ncreateType=\"streamOptimized\"\n"
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_are_kept() {
        let mut old = b"CID=00000001\nddb.comment = \"caf\xe9\"\nRW 16 SPARSE \"x\"\n".to_vec();
        old.extend_from_slice(b"createType=\"streamOptimized\"\n");
        let new = edit_descriptor(
            &old,
            &DescriptorEdits {
                cid: Some(2),
                capacity_sectors: Some(32),
                ..Default::default()
            },
        );
        assert_eq!(
            new,
            b"CID=00000002\nddb.comment = \"caf\xe9\"\nRW 32 SPARSE \"x\"\ncreateType=\"streamOptimized\"\n"
        );
    }

    #[test]
    fn random_cids_avoid_the_old_one_and_ffffffff() {
        for _ in 0..100 {
            let c = random_cid(Some(5));
            assert!(c != 5 && c != u32::MAX);
        }
    }
}
