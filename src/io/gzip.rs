//! Random access into gzip-compressed bytes (RFC 1952), zran-style.
//!
//! A [`GzipReader`] is a [`ReadAt`] over the decompressed bytes of a gzip stream held in
//! another `ReadAt` (an OVA member with `ovf:compression="gzip"`, or a whole `.ova` that is
//! a gzip-compressed tar; docs/formats.md §1.3, §1.6).
//!
//! # Index
//!
//! Deflate has no random access, so [`GzipReader::open`] makes one sequential pass over the
//! whole stream. That pass is unavoidable: the decompressed length ([`ReadAt::len`]) is
//! only known at the end, and every consumer here needs it at once (a tar index checks
//! member bounds, a VMDK reader reads its footer at the end, a raw disk is its length). The
//! same pass verifies every member's CRC-32 and ISIZE and records restart points
//! ("checkpoints"), so building the index costs one sequential inflate and nothing more
//! (plus compressing the saved windows, a few per cent). A checkpoint is:
//!
//! - the uncompressed offset and the compressed byte offset where decoding resumes;
//! - the decoder state: nothing at a member start; at a deflate block boundary the 0-7
//!   bits of the previous byte still to be read (miniz_oxide's `BlockBoundaryState`, the
//!   same information as zlib's `inflatePrime`); and, only for streams whose blocks run
//!   longer than twice the spacing without a boundary (no ordinary encoder writes those, a
//!   hostile one can), a clone of the whole decoder state taken mid-block;
//! - the last 32 KiB of output of the member (the deflate window), stored raw until the
//!   index reaches its cap, then deflated at level 1 when that is smaller (zeros and text
//!   shrink a lot), so streams of a few GiB pay nothing for it.
//!
//! Checkpoints are recorded at the first block boundary at least `spacing` bytes after the
//! previous one; `spacing` starts at [`GzipOptions::min_spacing_bytes`] (1 MiB). The index
//! never exceeds [`GzipOptions::max_index_bytes`]: when it would, the windows are deflated,
//! and if that is not enough every second checkpoint is dropped and the spacing doubles
//! (as often as needed), so the spacing ends up about
//! `max(1 MiB, size * checkpoint_bytes / cap)` without knowing the size in advance.
//!
//! # Reads
//!
//! A read restores the nearest checkpoint at or before its offset and decodes forward,
//! so it costs at most one spacing of inflate. Decoders ("cursors", with their last 32 to
//! 288 KiB of output) are kept in a few slots; a read that starts at or a little after
//! where a cursor stopped, or inside the output it still holds, continues that cursor
//! instead, so sequential reads never restart. A read waits for a busy cursor that is the
//! best one for its offset (the kernel's concurrent readahead of one file then decodes
//! once, in order), and uses another slot otherwise, so reads in different parts of the
//! stream decode in parallel. No lock is held while decoding except the chosen slot's.
//!
//! # Streams accepted
//!
//! One or more gzip members back to back (`cat a.gz b.gz`, pigz, bgzip), empty members
//! included, optionally followed by zero bytes to the end (a gzip file padded inside a
//! tar). Anything else after a member is [`GzipError::TrailingGarbage`]. Header fields are
//! parsed and bounded (`FNAME`/`FCOMMENT` at most 1 MiB each) and `FHCRC` is checked.
//! Corrupt or truncated data, a CRC-32 or ISIZE mismatch are typed [`GzipError`]s (reported
//! as [`ErrorKind::Io`] with `InvalidData`, which the FUSE layer answers with EIO; see
//! [`GzipError::of`]); the decompressed size is capped by [`GzipOptions::max_output_bytes`]
//! (64 TiB, [`ErrorKind::LimitExceeded`]). Every loop consumes input or produces output,
//! and the output is bounded, so the pass ends; it takes time in proportion to the
//! decompressed size (deflate expands at most about 1032:1).
//!
//! # Inflater
//!
//! miniz_oxide (`#![forbid(unsafe_code)]`) with its `block-boundary` feature: it stops at
//! every deflate block boundary, exposes the leftover bits, resumes from them and a window,
//! and its decoder state is `Clone`. zlib-rs (alone or through flate2 with
//! `runtime_detection`) inflates about 25% faster (1.26 s against 1.60 s of CPU for 1 GiB of
//! gzip -6 data, a tar of /usr/lib then zeros; `gzip -dc` took 4.9 s), but its safe API
//! (`zlib_rs::Inflate`, `flate2::Decompress`) offers neither `inflatePrime` nor the bit
//! position at a block boundary (zlib's `data_type`): its `inflate::prime` needs an
//! `InflateStream` that only `unsafe` code can drive. libdeflate is buffer-to-buffer only.
//! CRC-32 is libdeflate's (already a dependency, SIMD).
//!
//! Not here: knowing what the decompressed bytes are (the package and disk layers do).

use std::fmt;
use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use libdeflater::{CompressionLvl, Compressor, Crc, Decompressor};
use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::inflate::core::inflate_flags::{
    TINFL_FLAG_HAS_MORE_INPUT, TINFL_FLAG_STOP_ON_BLOCK_BOUNDARY,
    TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
};
use miniz_oxide::inflate::core::{BlockBoundaryState, DecompressorOxide, decompress};

use super::budget::Budget;
use super::{ReadAt, clamp_len};
use crate::error::{Error, ErrorKind, Result};

/// Largest decompressed size accepted: 64 TiB, the same cap as a virtual disk
/// ([`crate::disk::MAX_VIRTUAL_BYTES`]).
pub const MAX_OUTPUT_BYTES: u64 = 64 << 40;

/// Default cap on the memory of one stream's index.
pub const DEFAULT_MAX_INDEX_BYTES: u64 = 32 << 20;

/// Default (and smallest useful) distance between checkpoints, in decompressed bytes: a
/// random read then inflates at most about this much (1 MiB: 1-2 ms).
pub const DEFAULT_MIN_SPACING_BYTES: u64 = 1 << 20;

/// Deflate's window: a match reaches at most this far back (RFC 1951 §2).
const WINDOW_BYTES: usize = 32 * 1024;

/// Output produced by one call of the inflater at most (the cursor's buffer holds the window
/// plus this).
const OUT_CHUNK_BYTES: usize = 256 * 1024;

/// Compressed bytes read from the source at a time.
const IN_CHUNK_BYTES: usize = 128 * 1024;

/// Longest `FNAME` or `FCOMMENT` header field accepted (RFC 1952 sets no limit; real ones
/// are file names).
const MAX_HEADER_FIELD_BYTES: u64 = 1 << 20;

/// Decoder slots kept per stream (each holds about 430 KiB when used).
const CURSOR_SLOTS: usize = 4;

/// Memory one used decoder slot may hold (its decoder, window and output buffer), as
/// counted against the metadata budget.
pub const CURSOR_SLOT_BYTES: u64 = 448 << 10;

/// Inflater calls in a row that may neither consume nor produce a byte before the stream is
/// called corrupt. The decoder holds at most 64 bits, and an empty block takes at least 10.
const MAX_STALLS: u32 = 16;

/// How often the progress callback is called, in compressed bytes.
const PROGRESS_STEP_BYTES: u64 = 32 << 20;

/// gzip magic (RFC 1952 §2.3.1: ID1, ID2).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Compression method "deflate" (CM = 8), the only one defined.
const CM_DEFLATE: u8 = 8;

/// Header flag bits (RFC 1952 §2.3.1).
const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;
/// Reserved flag bits, which must be zero.
const FRESERVED: u8 = 0xe0;

/// Fixed part of a member header: ID1 ID2 CM FLG MTIME(4) XFL OS.
const HEADER_BYTES: usize = 10;

/// Member trailer: CRC32, ISIZE, little-endian.
const TRAILER_BYTES: usize = 8;

/// Whether `head` starts like a gzip stream.
pub fn is_gzip(head: &[u8]) -> bool {
    head.starts_with(&GZIP_MAGIC)
}

/// A gzip stream is malformed. `member` counts from 0; offsets are in the compressed bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GzipError {
    /// The stream does not start with the gzip magic.
    #[error("not a gzip stream (no 1f 8b magic at offset {offset})")]
    BadMagic {
        /// Where the magic was expected.
        offset: u64,
    },
    /// A compression method other than deflate.
    #[error("gzip member {member} at offset {offset}: compression method {method} is not deflate")]
    BadMethod {
        /// Member number.
        member: u64,
        /// Offset of the member.
        offset: u64,
        /// CM.
        method: u8,
    },
    /// Reserved header flag bits are set.
    #[error("gzip member {member} at offset {offset}: reserved header flags {flags:#04x} are set")]
    ReservedFlags {
        /// Member number.
        member: u64,
        /// Offset of the member.
        offset: u64,
        /// FLG.
        flags: u8,
    },
    /// `FNAME` or `FCOMMENT` is longer than we accept.
    #[error("gzip member {member}: header field {field} is longer than {limit} bytes")]
    HeaderFieldTooLong {
        /// Member number.
        member: u64,
        /// `FNAME` or `FCOMMENT`.
        field: &'static str,
        /// The limit.
        limit: u64,
    },
    /// The header CRC-16 (`FHCRC`) does not match.
    #[error(
        "gzip member {member}: header CRC-16 is {actual:#06x}, the header says {expected:#06x}"
    )]
    HeaderCrcMismatch {
        /// Member number.
        member: u64,
        /// Stored value.
        expected: u16,
        /// Computed value.
        actual: u16,
    },
    /// The deflate data is invalid.
    #[error(
        "gzip member {member}: corrupt deflate data near compressed offset {offset} ({reason})"
    )]
    CorruptDeflate {
        /// Member number.
        member: u64,
        /// Compressed offset reached.
        offset: u64,
        /// The inflater's status.
        reason: String,
    },
    /// The compressed bytes end inside a member.
    #[error("gzip member {member} is truncated: the compressed data ends at offset {offset}")]
    Truncated {
        /// Member number.
        member: u64,
        /// Length of the compressed data.
        offset: u64,
    },
    /// The CRC-32 in a member's trailer does not match its data.
    #[error(
        "gzip member {member}: CRC-32 of the data is {actual:#010x}, the trailer says {expected:#010x}"
    )]
    CrcMismatch {
        /// Member number.
        member: u64,
        /// Trailer value.
        expected: u32,
        /// Computed value.
        actual: u32,
    },
    /// The ISIZE in a member's trailer does not match its length modulo 2^32.
    #[error("gzip member {member}: {actual} bytes (mod 2^32) decoded, the trailer says {expected}")]
    SizeMismatch {
        /// Member number.
        member: u64,
        /// Trailer value.
        expected: u32,
        /// Decoded length modulo 2^32.
        actual: u32,
    },
    /// Bytes after a member that are neither another member nor zero padding.
    #[error(
        "data at offset {offset} after gzip member {member} is neither a gzip member nor zero padding"
    )]
    TrailingGarbage {
        /// The last complete member.
        member: u64,
        /// Where the unexpected bytes start.
        offset: u64,
    },
    /// The compressed data changed since the index was built (a read found less or other
    /// data than the first pass).
    #[error(
        "gzip data ended at decompressed offset {offset}, before the length found when indexing"
    )]
    Changed {
        /// Decompressed offset reached.
        offset: u64,
    },
}

impl GzipError {
    /// The gzip error inside `e`, if `e` is one.
    pub fn of(e: &Error) -> Option<&GzipError> {
        match e.kind() {
            ErrorKind::Io { source, .. } => source.get_ref()?.downcast_ref::<GzipError>(),
            _ => None,
        }
    }
}

impl From<GzipError> for Error {
    fn from(e: GzipError) -> Self {
        Error::io(
            "decoding gzip",
            io::Error::new(io::ErrorKind::InvalidData, e),
        )
    }
}

/// How far the index pass has come (for a progress bar).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GzipProgress {
    /// Compressed bytes consumed.
    pub compressed_done: u64,
    /// Compressed bytes in all.
    pub compressed_total: u64,
    /// Decompressed bytes produced so far.
    pub decompressed_done: u64,
}

/// A progress callback, called every 32 MiB of compressed input and once at the end.
pub type ProgressFn = Arc<dyn Fn(&GzipProgress) + Send + Sync>;

/// Limits and hooks for [`GzipReader::open_with`].
#[derive(Clone)]
pub struct GzipOptions {
    /// Largest decompressed size accepted ([`MAX_OUTPUT_BYTES`]).
    pub max_output_bytes: u64,
    /// Cap on the index's memory ([`DEFAULT_MAX_INDEX_BYTES`]); at least one checkpoint is
    /// always kept.
    pub max_index_bytes: u64,
    /// Smallest distance between checkpoints ([`DEFAULT_MIN_SPACING_BYTES`]; at least 1).
    pub min_spacing_bytes: u64,
    /// Called while the index is built.
    pub progress: Option<ProgressFn>,
    /// Counts the bytes the index pass inflates (shared by every stream of one opening, so
    /// nested and repeated streams add up); the pass stops with a clear error past it.
    pub inflate_budget: Option<Arc<Budget>>,
    /// Counts the memory of the index (checkpoints and their windows).
    pub metadata_budget: Option<Arc<Budget>>,
}

impl Default for GzipOptions {
    fn default() -> Self {
        GzipOptions {
            max_output_bytes: MAX_OUTPUT_BYTES,
            max_index_bytes: DEFAULT_MAX_INDEX_BYTES,
            min_spacing_bytes: DEFAULT_MIN_SPACING_BYTES,
            progress: None,
            inflate_budget: None,
            metadata_budget: None,
        }
    }
}

impl fmt::Debug for GzipOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GzipOptions")
            .field("max_output_bytes", &self.max_output_bytes)
            .field("max_index_bytes", &self.max_index_bytes)
            .field("min_spacing_bytes", &self.min_spacing_bytes)
            .field("progress", &self.progress.is_some())
            .field("inflate_budget", &self.inflate_budget)
            .field("metadata_budget", &self.metadata_budget)
            .finish()
    }
}

/// What the index holds, for `ovafs info`, logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GzipStats {
    /// Compressed bytes.
    pub compressed_bytes: u64,
    /// Decompressed bytes.
    pub decompressed_bytes: u64,
    /// gzip members (empty ones included).
    pub members: u64,
    /// Checkpoints kept.
    pub checkpoints: usize,
    /// Checkpoints that hold a whole decoder state (taken inside an overlong block).
    pub full_state_checkpoints: usize,
    /// Distance between checkpoints at the end of the pass.
    pub spacing_bytes: u64,
    /// Memory of the index (checkpoints with their windows).
    pub index_bytes: u64,
}

/// How decoding resumes at a checkpoint.
#[derive(Clone)]
enum Resume {
    /// At the start of a member's deflate data, with a fresh decoder.
    MemberStart,
    /// Between two deflate blocks.
    Boundary(BlockBoundaryState),
    /// Anywhere: the whole decoder.
    Full(Box<DecompressorOxide>),
}

/// A restart point.
struct Checkpoint {
    /// Decompressed offset.
    out: u64,
    /// Compressed offset of the next byte to feed the decoder.
    input: u64,
    /// Member number.
    member: u64,
    /// Decoder state.
    resume: Resume,
    /// Length of the window (the member's last bytes before `out`, at most 32 KiB).
    window_len: usize,
    /// The window, raw-deflated when `deflated`.
    window: Box<[u8]>,
    /// Whether `window` is deflated.
    deflated: bool,
}

impl Checkpoint {
    /// Memory this checkpoint takes.
    fn bytes(&self) -> u64 {
        let state = match &self.resume {
            Resume::Full(_) => std::mem::size_of::<DecompressorOxide>(),
            _ => 0,
        };
        (std::mem::size_of::<Checkpoint>() + state + self.window.len()) as u64
    }
}

/// The checkpoints of a stream.
struct Index {
    checkpoints: Vec<Checkpoint>,
    members: u64,
    spacing: u64,
    bytes: u64,
}

impl Index {
    /// The last checkpoint at or before `offset`.
    fn find(&self, offset: u64) -> Option<&Checkpoint> {
        let i = self.checkpoints.partition_point(|c| c.out <= offset);
        self.checkpoints.get(i.checked_sub(1)?)
    }
}

/// Where a cursor is in the stream.
enum Phase {
    /// Before a member header (or the end of the stream).
    Header,
    /// Inside a member's deflate data.
    Deflate(Box<DecompressorOxide>),
    /// Before a member trailer.
    Trailer,
    /// After the last member.
    End,
}

/// What one step of a cursor did.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// Decoded bytes, at this range of the output buffer.
    Produced(Range<usize>),
    /// Decoded bytes and stopped at a deflate block boundary.
    Boundary(Range<usize>),
    /// Parsed a member header; decoding of its data starts now.
    MemberStart,
    /// Read a member trailer.
    MemberEnd,
    /// Reached the end of the stream.
    End,
}

/// A decoder positioned somewhere in the stream, with its buffers.
struct Cursor {
    phase: Phase,
    /// Compressed offset of the next byte to feed.
    input: u64,
    /// Member number.
    member: u64,
    /// Compressed bytes `[in_start, in_start + in_len)` of the source.
    in_buf: Vec<u8>,
    in_start: u64,
    in_len: usize,
    /// `out_buf[..fill]` holds the current member's latest output; `fill` only drops to the
    /// window size when the buffer slides, and to 0 at a member start.
    out_buf: Vec<u8>,
    fill: usize,
    /// Decompressed offset of `out_buf[fill]`.
    out: u64,
    /// CRC-32 and length of the current member, when verifying (the index pass).
    verify: Option<(Crc, u64)>,
    /// Consecutive inflater calls that neither consumed nor produced a byte.
    stalls: u32,
}

impl Cursor {
    /// A cursor at the start of the stream; `verify` checks every member's trailer.
    fn at_start(verify: bool) -> Cursor {
        Cursor {
            phase: Phase::Header,
            input: 0,
            member: 0,
            in_buf: vec![0u8; IN_CHUNK_BYTES],
            in_start: 0,
            in_len: 0,
            out_buf: vec![0u8; WINDOW_BYTES + OUT_CHUNK_BYTES],
            fill: 0,
            out: 0,
            verify: verify.then(|| (Crc::new(), 0)),
            stalls: 0,
        }
    }

    /// Moves this cursor to checkpoint `cp`, reusing its buffers.
    fn restore(&mut self, cp: &Checkpoint) -> Result<()> {
        let window = self
            .out_buf
            .get_mut(..cp.window_len)
            .ok_or_else(|| Error::overflow("gzip window length"))?;
        if cp.deflated {
            let n = Decompressor::new()
                .deflate_decompress(&cp.window, window)
                .map_err(|_| Error::overflow("gzip saved window"))?;
            if n != cp.window_len {
                return Err(Error::overflow("gzip saved window"));
            }
        } else {
            window.copy_from_slice(&cp.window);
        }
        let decoder = match &cp.resume {
            Resume::MemberStart => Box::default(),
            Resume::Boundary(st) => Box::new(DecompressorOxide::from_block_boundary_state(st)),
            Resume::Full(d) => d.clone(),
        };
        self.phase = Phase::Deflate(decoder);
        self.input = cp.input;
        self.member = cp.member;
        self.in_start = cp.input;
        self.in_len = 0;
        self.fill = cp.window_len;
        self.out = cp.out;
        self.verify = None;
        self.stalls = 0;
        Ok(())
    }

    /// Decompressed offset of the oldest byte still in the output buffer.
    fn history_start(&self) -> u64 {
        // `fill` bytes were produced before `out`.
        self.out.saturating_sub(self.fill as u64)
    }

    /// The last `min(fill, 32 KiB)` bytes of output: the deflate window at this point.
    fn window(&self) -> &[u8] {
        let fill = self.fill.min(self.out_buf.len());
        &self.out_buf[fill.saturating_sub(WINDOW_BYTES)..fill]
    }

    /// Makes compressed bytes at `self.input` available; returns how many (0 at the end).
    fn fill_input(&mut self, src: &dyn ReadAt) -> Result<usize> {
        let end = self.in_start.saturating_add(self.in_len as u64);
        if self.input < self.in_start || self.input >= end {
            let n = src.read_at(self.input, &mut self.in_buf)?;
            self.in_start = self.input;
            self.in_len = n;
        }
        // In range: input - in_start < in_len, a usize.
        Ok((self.in_start + self.in_len as u64 - self.input) as usize)
    }

    /// Advances by one step: a header, some output, a trailer.
    fn step(&mut self, src: &dyn ReadAt) -> Result<Event> {
        match self.phase {
            Phase::Header => self.read_header(src),
            Phase::Deflate(_) => self.inflate(src),
            Phase::Trailer => self.read_trailer(src),
            Phase::End => Ok(Event::End),
        }
    }

    fn truncated(&self, src: &dyn ReadAt) -> Error {
        GzipError::Truncated {
            member: self.member,
            offset: src.len(),
        }
        .into()
    }

    /// Reads exactly `buf.len()` compressed bytes at `offset` or fails as truncated.
    fn read_exact(&self, src: &dyn ReadAt, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or_else(|| self.truncated(src))?;
        if end > src.len() {
            return Err(self.truncated(src));
        }
        src.read_exact_at(offset, buf)
    }

    /// Parses a member header at `self.input`, or finds the end of the stream.
    fn read_header(&mut self, src: &dyn ReadAt) -> Result<Event> {
        let start = self.input;
        let total = src.len();
        if start >= total {
            if self.member == 0 {
                return Err(GzipError::BadMagic { offset: start }.into());
            }
            self.phase = Phase::End;
            return Ok(Event::End);
        }
        let mut head = [0u8; HEADER_BYTES];
        let n = src.read_at(start, &mut head)?;
        let head = &head[..n];
        if !is_gzip(head) {
            if self.member == 0 {
                return Err(GzipError::BadMagic { offset: start }.into());
            }
            if let Some(bad) = first_nonzero(src, start)? {
                return Err(GzipError::TrailingGarbage {
                    member: self.member.saturating_sub(1),
                    offset: bad,
                }
                .into());
            }
            self.phase = Phase::End;
            self.input = total;
            return Ok(Event::End);
        }
        let [_, _, cm, flg, ..] = *head else {
            return Err(self.truncated(src));
        };
        if head.len() < HEADER_BYTES {
            return Err(self.truncated(src));
        }
        if cm != CM_DEFLATE {
            return Err(GzipError::BadMethod {
                member: self.member,
                offset: start,
                method: cm,
            }
            .into());
        }
        if flg & FRESERVED != 0 {
            return Err(GzipError::ReservedFlags {
                member: self.member,
                offset: start,
                flags: flg,
            }
            .into());
        }
        let mut pos = start + HEADER_BYTES as u64;
        if flg & FEXTRA != 0 {
            let mut xlen = [0u8; 2];
            self.read_exact(src, pos, &mut xlen)?;
            pos = pos
                .checked_add(2 + u64::from(u16::from_le_bytes(xlen)))
                .ok_or_else(|| self.truncated(src))?;
        }
        if flg & FNAME != 0 {
            pos = self.skip_zero_terminated(src, pos, "FNAME")?;
        }
        if flg & FCOMMENT != 0 {
            pos = self.skip_zero_terminated(src, pos, "FCOMMENT")?;
        }
        if flg & FHCRC != 0 {
            let mut stored = [0u8; 2];
            self.read_exact(src, pos, &mut stored)?;
            // The header is at most 10 + 2 + 65535 + 2 MiB bytes.
            let header = super::read_vec_at(src, "gzip header", start, pos - start, 4 << 20)?;
            let expected = u16::from_le_bytes(stored);
            // OK to truncate: the header CRC is the low 16 bits of its CRC-32.
            let actual = libdeflater::crc32(&header) as u16;
            if self.verify.is_some() && expected != actual {
                return Err(GzipError::HeaderCrcMismatch {
                    member: self.member,
                    expected,
                    actual,
                }
                .into());
            }
            pos += 2;
        }
        if pos > total {
            return Err(self.truncated(src));
        }
        self.input = pos;
        self.fill = 0;
        if let Some(v) = &mut self.verify {
            *v = (Crc::new(), 0);
        }
        self.phase = Phase::Deflate(Box::default());
        Ok(Event::MemberStart)
    }

    /// Skips a zero-terminated header field starting at `pos`; returns the offset after it.
    fn skip_zero_terminated(
        &self,
        src: &dyn ReadAt,
        mut pos: u64,
        field: &'static str,
    ) -> Result<u64> {
        let start = pos;
        let mut buf = [0u8; 4096];
        loop {
            if pos - start > MAX_HEADER_FIELD_BYTES {
                return Err(GzipError::HeaderFieldTooLong {
                    member: self.member,
                    field,
                    limit: MAX_HEADER_FIELD_BYTES,
                }
                .into());
            }
            let n = src.read_at(pos, &mut buf)?;
            if n == 0 {
                return Err(self.truncated(src));
            }
            if let Some(i) = buf[..n].iter().position(|&b| b == 0) {
                return Ok(pos + i as u64 + 1);
            }
            pos += n as u64;
        }
    }

    /// Reads and (when verifying) checks a member trailer.
    fn read_trailer(&mut self, src: &dyn ReadAt) -> Result<Event> {
        let mut t = [0u8; TRAILER_BYTES];
        self.read_exact(src, self.input, &mut t)?;
        let [c0, c1, c2, c3, s0, s1, s2, s3] = t;
        if let Some((crc, len)) = &self.verify {
            let expected = u32::from_le_bytes([c0, c1, c2, c3]);
            if crc.sum() != expected {
                return Err(GzipError::CrcMismatch {
                    member: self.member,
                    expected,
                    actual: crc.sum(),
                }
                .into());
            }
            let expected = u32::from_le_bytes([s0, s1, s2, s3]);
            // OK to truncate: ISIZE is the length modulo 2^32 (RFC 1952 §2.3.1).
            let actual = *len as u32;
            if actual != expected {
                return Err(GzipError::SizeMismatch {
                    member: self.member,
                    expected,
                    actual,
                }
                .into());
            }
        }
        self.input += TRAILER_BYTES as u64;
        self.member += 1;
        self.phase = Phase::Header;
        Ok(Event::MemberEnd)
    }

    /// Runs the inflater once.
    fn inflate(&mut self, src: &dyn ReadAt) -> Result<Event> {
        if self.fill >= self.out_buf.len() {
            // Slide: keep the window, make room for more output.
            let keep = self.fill - WINDOW_BYTES;
            self.out_buf.copy_within(keep..self.fill, 0);
            self.fill = WINDOW_BYTES;
        }
        let avail = self.fill_input(src)?;
        if avail == 0 {
            return Err(self.truncated(src));
        }
        let Phase::Deflate(decoder) = &mut self.phase else {
            return Ok(Event::End);
        };
        // In range: fill_input made input - in_start < in_len.
        let from = (self.input - self.in_start) as usize;
        let input = &self.in_buf[from..self.in_len];
        let flags = TINFL_FLAG_HAS_MORE_INPUT
            | TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF
            | TINFL_FLAG_STOP_ON_BLOCK_BOUNDARY;
        let (status, used, made) = decompress(decoder, input, &mut self.out_buf, self.fill, flags);
        let produced = self.fill..self.fill.saturating_add(made).min(self.out_buf.len());
        // Input was offered and there is room, so the inflater must move; it may only stand
        // still while it decodes bits it already holds (a few empty blocks at most).
        if used == 0 && made == 0 && self.fill < self.out_buf.len() {
            self.stalls = self.stalls.saturating_add(1);
            if self.stalls > MAX_STALLS {
                return Err(GzipError::CorruptDeflate {
                    member: self.member,
                    offset: self.input,
                    reason: format!("no progress ({status:?})"),
                }
                .into());
            }
        } else {
            self.stalls = 0;
        }
        self.input = self.input.saturating_add(used as u64);
        self.fill = produced.end;
        self.out = self.out.saturating_add(made as u64);
        if let Some((crc, len)) = &mut self.verify {
            crc.update(&self.out_buf[produced.clone()]);
            *len = len.wrapping_add(made as u64);
        }
        match status {
            TINFLStatus::Done => {
                self.phase = Phase::Trailer;
                Ok(Event::Produced(produced))
            }
            TINFLStatus::BlockBoundary => Ok(Event::Boundary(produced)),
            TINFLStatus::NeedsMoreInput | TINFLStatus::HasMoreOutput => {
                Ok(Event::Produced(produced))
            }
            other => Err(GzipError::CorruptDeflate {
                member: self.member,
                offset: self.input,
                reason: format!("{other:?}"),
            }
            .into()),
        }
    }
}

/// Offset of the first non-zero byte at or after `from`, if any.
fn first_nonzero(src: &dyn ReadAt, from: u64) -> Result<Option<u64>> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = from;
    loop {
        let n = src.read_at(pos, &mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(i) = buf[..n].iter().position(|&b| b != 0) {
            return Ok(Some(pos + i as u64));
        }
        pos += n as u64;
    }
}

/// Builds the index in one pass over the whole stream, verifying every member.
fn build_index(src: &dyn ReadAt, opts: &GzipOptions) -> Result<(Index, u64)> {
    let mut cur = Cursor::at_start(true);
    let mut index = Index {
        checkpoints: Vec::new(),
        members: 0,
        spacing: opts.min_spacing_bytes.max(1),
        bytes: 0,
    };
    let mut packer = WindowPacker::new()?;
    let mut next_progress = PROGRESS_STEP_BYTES;
    let total_in = src.len();
    let mut charged = Charged::new(opts);
    loop {
        charged.inflate(opts, cur.out)?;
        let event = cur.step(src)?;
        if cur.out > opts.max_output_bytes {
            return Err(ErrorKind::LimitExceeded {
                what: "gzip decompressed size",
                value: cur.out,
                limit: opts.max_output_bytes,
            }
            .into());
        }
        let since = cur
            .out
            .saturating_sub(index.checkpoints.last().map_or(0, |c| c.out));
        let resume = match (&event, &cur.phase) {
            (Event::MemberStart, _) if index.checkpoints.is_empty() || since >= index.spacing => {
                Some(Resume::MemberStart)
            }
            (Event::Boundary(_), Phase::Deflate(d)) if since >= index.spacing => {
                d.block_boundary_state().map(Resume::Boundary)
            }
            (Event::Produced(_), Phase::Deflate(d)) if since >= index.spacing.saturating_mul(2) => {
                Some(Resume::Full(d.clone()))
            }
            _ => None,
        };
        if let Some(resume) = resume {
            // Counted before it is stored: a checkpoint is at most a window and a decoder.
            charged.index(index.bytes.saturating_add(CHECKPOINT_MAX_BYTES))?;
            let cp = checkpoint(&cur, resume, &mut packer);
            index.bytes = index.bytes.saturating_add(cp.bytes());
            index.checkpoints.push(cp);
            fit(&mut index, opts.max_index_bytes, &mut packer);
        }
        match event {
            Event::MemberEnd => index.members += 1,
            Event::End => break,
            _ => {}
        }
        if let Some(progress) = &opts.progress
            && cur.input >= next_progress
        {
            progress(&GzipProgress {
                compressed_done: cur.input,
                compressed_total: total_in,
                decompressed_done: cur.out,
            });
            next_progress = cur.input.saturating_add(PROGRESS_STEP_BYTES);
        }
    }
    charged.keep_index(index.bytes);
    if let Some(progress) = &opts.progress {
        progress(&GzipProgress {
            compressed_done: total_in,
            compressed_total: total_in,
            decompressed_done: cur.out,
        });
    }
    Ok((index, cur.out))
}

/// Largest memory one checkpoint takes: a raw window and a whole decoder state.
const CHECKPOINT_MAX_BYTES: u64 = (WINDOW_BYTES + 16 * 1024) as u64;

/// Inflated bytes counted against the budget at a time (one atomic operation per MiB).
const INFLATE_CHARGE_STEP: u64 = 1 << 20;

/// What one index pass has counted against its budgets. The index's memory is given back
/// when the pass fails (dropped without [`Charged::keep_index`]); inflated bytes never
/// are (the CPU was spent).
struct Charged {
    metadata: Option<Arc<Budget>>,
    /// Decompressed bytes counted (ahead of the output by up to one step).
    inflated: u64,
    /// Index bytes counted.
    index: u64,
}

impl Charged {
    fn new(opts: &GzipOptions) -> Self {
        Charged {
            metadata: opts.metadata_budget.clone(),
            inflated: 0,
            index: 0,
        }
    }

    /// Counts output up to `out` plus one step ahead, before that step is inflated.
    fn inflate(&mut self, opts: &GzipOptions, out: u64) -> Result<()> {
        let Some(b) = &opts.inflate_budget else {
            return Ok(());
        };
        if out < self.inflated {
            return Ok(());
        }
        // One call of the inflater produces at most OUT_CHUNK_BYTES.
        let target = out.saturating_add(INFLATE_CHARGE_STEP.max(OUT_CHUNK_BYTES as u64));
        b.charge("gzip data indexed at open", target - self.inflated)?;
        self.inflated = target;
        Ok(())
    }

    /// Counts the index growing to `bytes`.
    fn index(&mut self, bytes: u64) -> Result<()> {
        let Some(b) = &self.metadata else {
            return Ok(());
        };
        if bytes > self.index {
            b.charge("gzip index", bytes - self.index)?;
            self.index = bytes;
        }
        Ok(())
    }

    /// The pass succeeded with an index of `bytes`: what was counted beyond that
    /// (checkpoints dropped) is given back, the rest stays counted for the reader's life.
    fn keep_index(mut self, bytes: u64) {
        if let Some(b) = self.metadata.take() {
            b.release(self.index.saturating_sub(bytes));
        }
    }
}

impl Drop for Charged {
    fn drop(&mut self) {
        if let Some(b) = &self.metadata {
            b.release(self.index);
        }
    }
}

/// Stores checkpoint windows: raw while the index is small, deflated (level 1) once it has
/// reached its cap, so a stream of a few GiB costs no compression at all.
struct WindowPacker {
    compressor: Compressor,
    /// Whether windows are deflated (set at the first pressure, never cleared).
    enabled: bool,
}

impl WindowPacker {
    fn new() -> Result<Self> {
        // Level 1: the fastest level that compresses (libdeflate's level 0 only stores).
        let level = CompressionLvl::new(1).map_err(|_| Error::overflow("compression level"))?;
        Ok(WindowPacker {
            compressor: Compressor::new(level),
            enabled: false,
        })
    }

    /// The window as stored, and whether it is deflated.
    fn pack(&mut self, window: &[u8]) -> (Box<[u8]>, bool) {
        if self.enabled {
            let mut packed = vec![0u8; self.compressor.deflate_compress_bound(window.len())];
            if let Ok(n) = self.compressor.deflate_compress(window, &mut packed)
                && n < window.len()
            {
                packed.truncate(n);
                return (packed.into_boxed_slice(), true);
            }
        }
        (window.into(), false)
    }
}

/// A checkpoint at the cursor's position.
fn checkpoint(cur: &Cursor, resume: Resume, packer: &mut WindowPacker) -> Checkpoint {
    let window = cur.window();
    let (stored, deflated) = packer.pack(window);
    Checkpoint {
        out: cur.out,
        input: cur.input,
        member: cur.member,
        resume,
        window_len: window.len(),
        window: stored,
        deflated,
    }
}

/// Brings the index under `cap`: first by deflating the windows (once), then by dropping
/// every second checkpoint (never the first) and doubling the spacing, as often as needed.
fn fit(index: &mut Index, cap: u64, packer: &mut WindowPacker) {
    if index.bytes <= cap {
        return;
    }
    if !packer.enabled {
        packer.enabled = true;
        for cp in index.checkpoints.iter_mut().filter(|c| !c.deflated) {
            let (stored, deflated) = packer.pack(&cp.window);
            cp.window = stored;
            cp.deflated = deflated;
        }
        index.bytes = index.checkpoints.iter().map(Checkpoint::bytes).sum();
    }
    while index.bytes > cap && index.checkpoints.len() > 1 {
        let mut i = 0usize;
        index.checkpoints.retain(|_| {
            i += 1;
            i % 2 == 1
        });
        index.spacing = index.spacing.saturating_mul(2);
        index.bytes = index.checkpoints.iter().map(Checkpoint::bytes).sum();
    }
}

/// Where each slot's cursor was left, to choose a slot without locking them all.
#[derive(Clone, Copy, Default)]
struct SlotInfo {
    /// Whether the slot holds a usable cursor.
    live: bool,
    /// Oldest decompressed byte it still holds.
    history_start: u64,
    /// Where it stopped.
    out: u64,
    /// Last use (for least-recently-used replacement).
    used: u64,
}

#[derive(Default)]
struct SlotTable {
    slots: [SlotInfo; CURSOR_SLOTS],
    clock: u64,
}

/// Random access to the decompressed bytes of a gzip stream (see the module doc).
pub struct GzipReader {
    src: Arc<dyn ReadAt>,
    len: u64,
    index: Index,
    slots: [Mutex<Option<Cursor>>; CURSOR_SLOTS],
    table: Mutex<SlotTable>,
}

impl fmt::Debug for GzipReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GzipReader")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Locks `m`; a poisoned lock (a reader panicked) is taken over and its content reset.
fn lock_or_reset<T>(m: &Mutex<Option<T>>) -> MutexGuard<'_, Option<T>> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => {
            let mut g = poisoned.into_inner();
            *g = None;
            m.clear_poison();
            g
        }
    }
}

impl GzipReader {
    /// Indexes the gzip stream in `src` with the default options (one full pass).
    pub fn open(src: Arc<dyn ReadAt>) -> Result<Self> {
        Self::open_with(src, GzipOptions::default())
    }

    /// Indexes the gzip stream in `src` (one full pass, verifying every member).
    pub fn open_with(src: Arc<dyn ReadAt>, options: GzipOptions) -> Result<Self> {
        if let Some(b) = &options.metadata_budget {
            // Decoders are made on the first reads, not here: counted now, they cannot
            // cross the budget later, whichever disks are read.
            b.charge("gzip decoders", CURSOR_SLOTS as u64 * CURSOR_SLOT_BYTES)?;
        }
        let (index, len) = build_index(&*src, &options)?;
        Ok(GzipReader {
            src,
            len,
            index,
            slots: Default::default(),
            table: Mutex::new(SlotTable::default()),
        })
    }

    /// What the index holds.
    pub fn stats(&self) -> GzipStats {
        GzipStats {
            compressed_bytes: self.src.len(),
            decompressed_bytes: self.len,
            members: self.index.members,
            checkpoints: self.index.checkpoints.len(),
            full_state_checkpoints: self
                .index
                .checkpoints
                .iter()
                .filter(|c| matches!(c.resume, Resume::Full(_)))
                .count(),
            spacing_bytes: self.index.spacing,
            index_bytes: self.index.bytes,
        }
    }

    /// The compressed source.
    pub fn source(&self) -> &Arc<dyn ReadAt> {
        &self.src
    }

    /// Whether a cursor at `info` serves a read at `offset` at least as cheaply as
    /// restoring the checkpoint at `cp_out`.
    fn serves(history_start: u64, out: u64, offset: u64, cp_out: u64) -> bool {
        history_start <= offset && (offset < out || out >= cp_out)
    }

    /// Picks the slot for a read at `offset`: the cursor that serves it with the least
    /// decoding, else the least recently used slot.
    fn pick_slot(&self, offset: u64, cp_out: u64) -> usize {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let best = table
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.live && Self::serves(s.history_start, s.out, offset, cp_out))
            .min_by_key(|(_, s)| offset.saturating_sub(s.out))
            .map(|(i, _)| i);
        let pick = best.unwrap_or_else(|| {
            // Prefer a free slot among the least recently used.
            let mut order: Vec<usize> = (0..CURSOR_SLOTS).collect();
            order.sort_by_key(|&i| table.slots.get(i).map_or(0, |s| s.used));
            order
                .iter()
                .copied()
                .find(|&i| self.slots.get(i).is_some_and(|m| m.try_lock().is_ok()))
                .or_else(|| order.first().copied())
                .unwrap_or(0)
        });
        table.clock = table.clock.wrapping_add(1);
        let clock = table.clock;
        if let Some(s) = table.slots.get_mut(pick) {
            s.used = clock;
        }
        pick
    }

    fn note_slot(&self, i: usize, cursor: Option<&Cursor>) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = table.slots.get_mut(i) {
            match cursor {
                Some(c) => {
                    s.live = true;
                    s.history_start = c.history_start();
                    s.out = c.out;
                }
                None => s.live = false,
            }
        }
    }

    /// Fills `buf` (inside the stream) with the bytes at `offset`, using `cur`.
    fn read_with(&self, cur: &mut Cursor, offset: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0usize;
        // Bytes still in the cursor's buffer.
        if offset < cur.out && offset >= cur.history_start() {
            // In range: out - offset <= fill.
            let back = (cur.out - offset) as usize;
            let from = cur.fill - back;
            let n = back.min(buf.len());
            buf[..n].copy_from_slice(&cur.out_buf[from..from + n]);
            done = n;
        }
        while done < buf.len() {
            // Cannot overflow: offset + buf.len() <= self.len.
            let want = offset + done as u64;
            let before = cur.out;
            let range = match cur.step(&*self.src)? {
                Event::Produced(r) | Event::Boundary(r) => r,
                Event::End => return Err(GzipError::Changed { offset: cur.out }.into()),
                Event::MemberStart | Event::MemberEnd => continue,
            };
            // The range produced holds decompressed bytes [before, cur.out).
            if cur.out <= want {
                continue;
            }
            let skip = (want - before) as usize;
            let part = &cur.out_buf[range.start + skip..range.end];
            let n = part.len().min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&part[..n]);
            done += n;
        }
        Ok(())
    }
}

impl ReadAt for GzipReader {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let n = clamp_len(offset, buf.len(), self.len);
        if n == 0 {
            return Ok(0);
        }
        let Some(cp) = self.index.find(offset) else {
            return Err(GzipError::Changed { offset }.into());
        };
        let slot_no = self.pick_slot(offset, cp.out);
        let Some(slot) = self.slots.get(slot_no) else {
            return Err(GzipError::Changed { offset }.into());
        };
        let mut guard = lock_or_reset(slot);
        let usable = guard
            .as_ref()
            .is_some_and(|c| Self::serves(c.history_start(), c.out, offset, cp.out));
        if !usable {
            let cur = guard.get_or_insert_with(|| Cursor::at_start(false));
            if let Err(e) = cur.restore(cp) {
                *guard = None;
                self.note_slot(slot_no, None);
                return Err(e);
            }
        }
        let Some(cur) = guard.as_mut() else {
            return Err(GzipError::Changed { offset }.into());
        };
        let result = self.read_with(cur, offset, &mut buf[..n]);
        if result.is_err() {
            *guard = None;
        }
        self.note_slot(slot_no, guard.as_ref());
        result.map(|()| n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
