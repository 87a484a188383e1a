//! The writer side and the judge of the kill -9 tests (`crash_writes.rs`), included with
//! `#[path = "crash_model.rs"] mod model;`. As a test target of its own it has no tests.
//!
//! - [`Plan`]: a seeded sequence of [`Op`]s (writes of 4 KiB multiples and unaligned
//!   records at random offsets, some overlapping, some growing the disk past its end; hole
//!   punches and zeroed ranges; `ftruncate` growth; `fsync`/`fdatasync`), a pure function of
//!   its seed and starting length, so the writer (a child process) and the judge (the test)
//!   derive the same operations from a few numbers.
//! - [`run_plan`]: the writer: executes a plan against a file (with `O_DIRECT` and aligned
//!   buffers, or buffered) and keeps an [`AckLog`].
//! - [`AckLog`]: the writer's own file outside the mount: `begin I` before operation I
//!   (a plain write: only the processes die in these tests, never the host, so the page
//!   cache keeps it), and after each sync returns the operations it acknowledges
//!   (`acked I KIND OFFSET LENGTH HASH`) and `ack I`, then an fsync of the log.
//! - [`judge`]: given the content before the plan, the plan, the log, and what the disk
//!   reads after the crash: every acknowledged operation reads back exactly (later ones win
//!   where they overlap), every 4 KiB block touched after the last acknowledgement holds one
//!   of the values it had between the last acknowledgement and the last operation begun
//!   (old or new bytes, never anything else), and the length is at least the acknowledged
//!   length and at most the largest one reached. [`LogState::through`] gives it the log of a
//!   writer that keeps none (qemu-io's [`Op::Fill`] writes, acknowledged by its output).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// The state unit of the overlay, and the granularity at which a crash may tear a write.
pub const BLOCK: u64 = 4096;

/// How the writer opens the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io {
    /// `O_DIRECT` (qemu's `cache=none`): aligned offsets, lengths and buffers only.
    Direct,
    /// Through the page cache: aligned and unaligned records.
    Buffered,
}

/// One operation of the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `pwrite` of `len` bytes generated from `seed` at `offset`.
    Write { offset: u64, len: u64, seed: u64 },
    /// A write of `len` bytes of `byte` (qemu-io's `write -P`).
    Fill { offset: u64, len: u64, byte: u8 },
    /// `fallocate(PUNCH_HOLE|KEEP_SIZE)` (or `ZERO_RANGE` when `zero_range`) inside the disk.
    Zero {
        offset: u64,
        len: u64,
        zero_range: bool,
    },
    /// `ftruncate` to a larger length.
    Grow { len: u64 },
    /// `fdatasync` (`data_only`) or `fsync`: everything before it is acknowledged when it
    /// returns.
    Sync { data_only: bool },
}

impl Op {
    /// The byte range the operation changes (none for a sync; the new tail for a growth).
    fn range(&self, len_before: u64) -> Option<(u64, u64)> {
        match *self {
            Op::Write { offset, len, .. }
            | Op::Fill { offset, len, .. }
            | Op::Zero { offset, len, .. } => Some((offset, offset + len)),
            Op::Grow { len } => Some((len_before, len)),
            Op::Sync { .. } => None,
        }
    }

    /// The line the acknowledgement log gives this operation (`KIND OFFSET LENGTH HASH`).
    fn ack_line(&self) -> String {
        match *self {
            Op::Write { offset, len, seed } => {
                format!("w {offset} {len} {:016x}", fnv(&payload(seed, len)))
            }
            Op::Fill { offset, len, byte } => format!("P {offset} {len} {byte:02x}"),
            Op::Zero {
                offset,
                len,
                zero_range,
            } => format!("{} {offset} {len} 0", if zero_range { "z" } else { "p" }),
            Op::Grow { len } => format!("g 0 {len} 0"),
            Op::Sync { data_only } => format!("{} 0 0 0", if data_only { "d" } else { "f" }),
        }
    }
}

/// A small deterministic generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// A value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// The bytes of a write: eight at a time from its seed, with no zero word (so a write never
/// looks like a hole).
pub fn payload(seed: u64, len: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len as usize + 8);
    while (out.len() as u64) < len {
        out.extend_from_slice(&(rng.next_u64() | 0x0101_0101_0101_0101).to_le_bytes());
    }
    out.truncate(len as usize);
    out
}

/// FNV-1a, the log's check that the writer and the judge generated the same bytes.
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// A seeded sequence of operations against a disk of `start_len` bytes (a multiple of
/// [`BLOCK`]), never growing it past `max_len`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub seed: u64,
    pub io: Io,
    pub start_len: u64,
    pub max_len: u64,
    pub count: usize,
}

/// The region most writes land in, so that they overlap each other.
const HOT_BYTES: u64 = 256 << 10;
/// Largest record.
const MAX_RECORD: u64 = 64 << 10;

impl Plan {
    /// The operations, in order. Lengths stay multiples of [`BLOCK`]: growth is by aligned
    /// ends (a VMDK's capacity is whole sectors; 4 KiB keeps the judge's blocks whole).
    pub fn ops(&self) -> Vec<Op> {
        let mut rng = Rng::new(self.seed);
        let mut len = self.start_len;
        let mut ops = Vec::with_capacity(self.count);
        for _ in 0..self.count {
            let op = self.next_op(&mut rng, len);
            if let Some((_, end)) = op.range(len) {
                len = len.max(end);
            }
            ops.push(op);
        }
        ops
    }

    fn next_op(&self, rng: &mut Rng, len: u64) -> Op {
        let roll = rng.below(100);
        let room = self.max_len - len;
        match roll {
            0..=13 => Op::Sync {
                data_only: rng.below(2) == 0,
            },
            14..=23 => {
                let (offset, n) = self.range_inside(rng, len);
                Op::Zero {
                    offset,
                    len: n,
                    zero_range: rng.below(3) == 0,
                }
            }
            24..=25 if room >= BLOCK => Op::Grow {
                len: len + BLOCK * (1 + rng.below((room / BLOCK).min(16))),
            },
            26..=33 if room >= BLOCK => {
                // Straddles the end: starts inside, ends past it on a block boundary.
                let back = BLOCK * (1 + rng.below(4));
                let ahead = BLOCK * (1 + rng.below((room / BLOCK).min(8)));
                let offset = if self.io == Io::Buffered && rng.below(2) == 0 {
                    len - back + rng.below(BLOCK)
                } else {
                    len - back
                };
                Op::Write {
                    offset,
                    len: len + ahead - offset,
                    seed: rng.next_u64(),
                }
            }
            _ => {
                let (offset, n) = self.range_inside(rng, len);
                Op::Write {
                    offset,
                    len: n,
                    seed: rng.next_u64(),
                }
            }
        }
    }

    /// A record inside `0..len`: block-aligned for direct I/O and half the time otherwise,
    /// in the hot region 40% of the time.
    fn range_inside(&self, rng: &mut Rng, len: u64) -> (u64, u64) {
        let span = if rng.below(10) < 4 {
            HOT_BYTES.min(len)
        } else {
            len
        };
        let aligned = self.io == Io::Direct || rng.below(2) == 0;
        if aligned {
            let n = BLOCK * (1 + rng.below(MAX_RECORD / BLOCK));
            let n = n.min(len);
            let offset = BLOCK * rng.below((span.saturating_sub(n)) / BLOCK + 1);
            (offset, n)
        } else {
            let n = (1 + rng.below(MAX_RECORD)).min(len);
            let offset = rng.below(span.saturating_sub(n) + 1);
            (offset, n)
        }
    }

    /// The plan as text (one field a line), for the child's environment.
    pub fn to_spec(&self) -> String {
        let io = match self.io {
            Io::Direct => "direct",
            Io::Buffered => "buffered",
        };
        format!(
            "{}\n{io}\n{}\n{}\n{}",
            self.seed, self.start_len, self.max_len, self.count
        )
    }

    /// The inverse of [`Plan::to_spec`].
    pub fn from_spec(lines: &[&str]) -> Plan {
        Plan {
            seed: lines[0].parse().unwrap(),
            io: match lines[1] {
                "direct" => Io::Direct,
                "buffered" => Io::Buffered,
                other => panic!("unknown io {other}"),
            },
            start_len: lines[2].parse().unwrap(),
            max_len: lines[3].parse().unwrap(),
            count: lines[4].parse().unwrap(),
        }
    }
}

/// The writer's acknowledgement log.
pub struct AckLog {
    file: File,
    /// Operations done since the last acknowledgement.
    pending: Vec<usize>,
}

impl AckLog {
    /// Creates (truncates) the log at `path`.
    pub fn create(path: &Path) -> AckLog {
        AckLog {
            file: File::create(path).unwrap(),
            pending: Vec::new(),
        }
    }

    fn line(&mut self, s: &str) {
        self.file.write_all(format!("{s}\n").as_bytes()).unwrap();
    }

    /// Operation `i` is about to start.
    pub fn begin(&mut self, i: usize) {
        self.line(&format!("begin {i}"));
    }

    /// Operation `i` (not a sync) returned.
    pub fn done(&mut self, i: usize) {
        self.pending.push(i);
    }

    /// Sync operation `i` returned: acknowledges it and everything before it, durably.
    pub fn ack(&mut self, i: usize, ops: &[Op]) {
        let mut text = String::new();
        for &k in self.pending.iter().chain(std::iter::once(&i)) {
            text.push_str(&format!("acked {k} {}\n", ops[k].ack_line()));
        }
        text.push_str(&format!("ack {i}\n"));
        self.file.write_all(text.as_bytes()).unwrap();
        self.file.sync_all().unwrap();
        self.pending.clear();
    }

    /// Operation `i` failed with `err`: the writer stops here.
    pub fn failed(&mut self, i: usize, err: &std::io::Error) {
        self.line(&format!("failed {i} {err}"));
    }

    /// Every operation is done: the writer waits to be killed.
    pub fn end(&mut self) {
        self.line("end");
    }
}

/// What a log says, counting only whole lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogState {
    /// The last sync acknowledged (everything up to it is durable).
    pub acked: Option<usize>,
    /// The last operation begun.
    pub begun: Option<usize>,
    /// `(index, line)` of every acknowledged operation.
    pub acked_lines: Vec<(usize, String)>,
    /// The writer ran every operation.
    pub ended: bool,
    /// The writer's error, if an operation failed.
    pub failure: Option<String>,
}

impl LogState {
    /// The state a writer's log has after acknowledging operations up to `acked` and
    /// beginning those up to `begun` (for writers that keep no log, such as qemu-io, whose
    /// acknowledgements the test reads from its output).
    pub fn through(ops: &[Op], acked: Option<usize>, begun: Option<usize>) -> LogState {
        let acked_end = acked.map_or(0, |a| a + 1);
        LogState {
            acked,
            begun,
            acked_lines: (0..acked_end).map(|k| (k, ops[k].ack_line())).collect(),
            ended: false,
            failure: None,
        }
    }
}

/// Parses the log at `path`.
pub fn read_log(path: &Path) -> LogState {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let whole = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    let mut st = LogState::default();
    for line in whole.lines() {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let index = || rest.split(' ').next().unwrap().parse::<usize>().unwrap();
        match word {
            "begin" => st.begun = Some(index()),
            "ack" => st.acked = Some(index()),
            "acked" => {
                let (i, what) = rest.split_once(' ').unwrap();
                st.acked_lines.push((i.parse().unwrap(), what.to_string()));
            }
            "end" => st.ended = true,
            "failed" => st.failure = Some(rest.to_string()),
            other => panic!("bad log line {other:?}"),
        }
    }
    st
}

/// A buffer of `len` bytes aligned to [`BLOCK`] (for `O_DIRECT`), inside a larger vector.
fn aligned_copy(bytes: &[u8]) -> (Vec<u8>, usize) {
    let mut v = vec![0u8; bytes.len() + BLOCK as usize];
    let at = v.as_ptr().align_offset(BLOCK as usize);
    v[at..at + bytes.len()].copy_from_slice(bytes);
    (v, at)
}

/// Runs `ops` against `file` (no log: for changes the test makes itself).
pub fn run_ops(file: &File, ops: &[Op]) {
    for op in ops {
        apply_to_file(file, op).unwrap_or_else(|e| panic!("{op:?}: {e}"));
    }
}

/// Runs one operation against `file`.
fn apply_to_file(file: &File, op: &Op) -> std::io::Result<()> {
    use nix::fcntl::{FallocateFlags, fallocate};
    match *op {
        Op::Write { offset, len, seed } => {
            let (buf, at) = aligned_copy(&payload(seed, len));
            file.write_all_at(&buf[at..at + len as usize], offset)
        }
        Op::Fill { offset, len, byte } => {
            let (buf, at) = aligned_copy(&vec![byte; len as usize]);
            file.write_all_at(&buf[at..at + len as usize], offset)
        }
        Op::Zero {
            offset,
            len,
            zero_range,
        } => {
            let mode = if zero_range {
                FallocateFlags::FALLOC_FL_ZERO_RANGE
            } else {
                FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE
            };
            fallocate(file.as_fd(), mode, offset as i64, len as i64).map_err(std::io::Error::from)
        }
        Op::Grow { len } => file.set_len(len),
        Op::Sync { data_only: true } => file.sync_data(),
        Op::Sync { data_only: false } => file.sync_all(),
    }
}

/// Opens `target` for the plan's kind of I/O.
pub fn open_target(target: &Path, io: Io) -> File {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    if io == Io::Direct {
        o.custom_flags(libc::O_DIRECT);
    }
    o.open(target)
        .unwrap_or_else(|e| panic!("open {}: {e}", target.display()))
}

/// The writer: runs `plan` against `target`, logging to `log`; returns when every operation
/// is done or one failed (a daemon killed under it answers ENOTCONN).
pub fn run_plan(plan: &Plan, target: &Path, log: &Path) {
    let ops = plan.ops();
    let file = open_target(target, plan.io);
    let mut log = AckLog::create(log);
    for (i, op) in ops.iter().enumerate() {
        log.begin(i);
        if let Err(e) = apply_to_file(&file, op) {
            log.failed(i, &e);
            return;
        }
        match op {
            Op::Sync { .. } => log.ack(i, &ops),
            _ => log.done(i),
        }
    }
    log.end();
}

/// Applies `op` to an in-memory image.
pub fn apply_to_image(image: &mut Vec<u8>, op: &Op) {
    match *op {
        Op::Write { offset, len, seed } => {
            let end = (offset + len) as usize;
            if image.len() < end {
                image.resize(end, 0);
            }
            image[offset as usize..end].copy_from_slice(&payload(seed, len));
        }
        Op::Fill { offset, len, byte } => {
            let end = (offset + len) as usize;
            if image.len() < end {
                image.resize(end, 0);
            }
            image[offset as usize..end].fill(byte);
        }
        Op::Zero { offset, len, .. } => {
            let end = ((offset + len) as usize).min(image.len());
            image[offset as usize..end].fill(0);
        }
        Op::Grow { len } => {
            if (image.len() as u64) < len {
                image.resize(len as usize, 0);
            }
        }
        Op::Sync { .. } => {}
    }
}

/// What the judge found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Blocks that must read exactly the acknowledged state, and did.
    pub exact_blocks: usize,
    /// Blocks touched after the last acknowledgement that read their acknowledged value.
    pub old_blocks: usize,
    /// Blocks touched after the last acknowledgement that read a later value.
    pub new_blocks: usize,
    /// Acknowledged operations.
    pub acked_ops: usize,
    /// Operations begun but not acknowledged.
    pub unacked_ops: usize,
}

/// Judges `got` (the disk read back after the crash) against `base` (its content before
/// the plan), the plan's operations and the log. An error names the first block that breaks
/// the rules.
pub fn judge(base: &[u8], ops: &[Op], log: &LogState, got: &[u8]) -> Result<Verdict, String> {
    check_acked_lines(ops, log)?;
    let acked_end = log.acked.map_or(0, |a| a + 1);
    let begun_end = log.begun.map_or(0, |b| b + 1).max(acked_end);
    let mut image = base.to_vec();
    for op in &ops[..acked_end] {
        apply_to_image(&mut image, op);
    }
    let durable = image.clone();
    let durable_len = durable.len() as u64;
    // Every value each block touched after the acknowledgement has had, the durable one first.
    let mut versions: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
    let mut max_len = durable_len;
    for op in &ops[acked_end..begun_end] {
        let Some((start, end)) = op.range(image.len() as u64) else {
            continue;
        };
        let blocks = start / BLOCK..end.div_ceil(BLOCK);
        for b in blocks.clone() {
            versions
                .entry(b)
                .or_insert_with(|| vec![block_of(&image, b)]);
        }
        apply_to_image(&mut image, op);
        max_len = max_len.max(image.len() as u64);
        for b in blocks {
            let v = block_of(&image, b);
            let seen = versions.get_mut(&b).unwrap();
            if !seen.contains(&v) {
                seen.push(v);
            }
        }
    }
    let got_len = got.len() as u64;
    if got_len < durable_len || got_len > max_len {
        return Err(format!(
            "length {got_len}: the acknowledged length is {durable_len}, the largest reached {max_len}"
        ));
    }
    let mut v = Verdict {
        acked_ops: acked_end,
        unacked_ops: begun_end - acked_end,
        ..Verdict::default()
    };
    for b in 0..got_len.div_ceil(BLOCK) {
        let have = &got[(b * BLOCK) as usize..(((b + 1) * BLOCK).min(got_len)) as usize];
        let want_prefix = |candidate: &Vec<u8>| candidate[..have.len()] == *have;
        match versions.get(&b) {
            None => {
                let want = block_of(&durable, b);
                if !want_prefix(&want) {
                    return Err(format!(
                        "block {b} (offset {}): not the acknowledged bytes (first difference at byte {})",
                        b * BLOCK,
                        first_difference(have, &want)
                    ));
                }
                v.exact_blocks += 1;
            }
            Some(seen) => match seen.iter().position(want_prefix) {
                Some(0) => v.old_blocks += 1,
                Some(_) => v.new_blocks += 1,
                None => {
                    return Err(format!(
                        "block {b} (offset {}): neither the acknowledged bytes nor any later value ({} candidates)",
                        b * BLOCK,
                        seen.len()
                    ));
                }
            },
        }
    }
    Ok(v)
}

/// The log's acknowledged lines must be the plan's operations (same offsets, lengths and
/// payload hashes), one for each operation up to the last acknowledgement.
fn check_acked_lines(ops: &[Op], log: &LogState) -> Result<(), String> {
    let acked_end = log.acked.map_or(0, |a| a + 1);
    if log.acked_lines.len() != acked_end {
        return Err(format!(
            "the log acknowledges {} operations, its last ack is {:?}",
            log.acked_lines.len(),
            log.acked
        ));
    }
    for (k, (i, line)) in log.acked_lines.iter().enumerate() {
        if *i != k || ops[k].ack_line() != *line {
            return Err(format!(
                "log line {k}: the writer acknowledged `{i} {line}`, the plan says `{k} {}`",
                ops[k].ack_line()
            ));
        }
    }
    Ok(())
}

/// Block `b` of `image`, zero-padded to a whole block (past the end: zeros, what a growth
/// reads there).
fn block_of(image: &[u8], b: u64) -> Vec<u8> {
    let start = ((b * BLOCK) as usize).min(image.len());
    let end = (((b + 1) * BLOCK) as usize).min(image.len());
    let mut v = image[start..end].to_vec();
    v.resize(BLOCK as usize, 0);
    v
}

fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len())
}
