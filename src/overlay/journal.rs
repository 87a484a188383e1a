//! The overlay's map file: a header binding it to its disk, then an append-only journal of
//! fixed-size, checksummed records grouped in batches (one batch per sync).
//!
//! ```text
//! header (header_bytes, a multiple of 32, at most 4096)
//!   0  magic "OVAFSOVL"            8  version u32 = 1       12 header_bytes u32
//!   16 block_bytes u32 = 4096      20 reserved u32 = 0      24 base_len u64
//!   32 stored_size u64             40 fingerprint [32]      72 name_len u16
//!   74 name (UTF-8)  ... zeros ...  header_bytes-4: CRC-32C of every byte before it
//! record (32 bytes), all integers little-endian
//!   0  kind u8: 1 Data, 2 Zero, 3 Base (blocks [a, a+b) are now in that state),
//!               4 Length (the disk is now a bytes long), 5 Commit (ends batch: a = records)
//!   1  reserved [3] = 0            4  batch u64 (1, 2, 3, ... one per sync)
//!   12 a u64                       20 b u64                 28 CRC-32C of bytes 0..28
//! ```
//!
//! A batch counts only once its Commit record is read: a sync that was cut short leaves a
//! batch without one, or a tail of slots that fail their checksum, and that tail is dropped
//! ("torn"). A bad slot followed by a well-checksummed one is not a torn tail but damage,
//! and is refused; so is a well-checksummed record that is impossible (reserved bytes set,
//! an unknown kind, blocks past the disk's length, a length that shrinks or passes
//! [`MAX_CAPACITY_BYTES`], a Commit that counts wrongly, a batch out of sequence). Nothing
//! is ever silently applied or repaired.

use crate::io::ReadAt;
use crate::overlay::map::{BlockMap, BlockState};

/// Bytes per block: the overlay's unit of state.
pub const BLOCK_BYTES: u64 = 4096;
/// Bytes per record.
pub const RECORD_BYTES: usize = 32;
/// The file's magic.
pub const MAGIC: [u8; 8] = *b"OVAFSOVL";
/// The format version this code writes and reads.
pub const VERSION: u32 = 1;
/// The largest header (and so the longest member name it can carry, minus 78 bytes).
pub const MAX_HEADER_BYTES: usize = 4096;
/// The largest disk an overlay serves: 4 PiB, far past any disk format ovafs reads, and
/// small enough that every block offset fits a u64 and an i64 `off_t`.
pub const MAX_CAPACITY_BYTES: u64 = 1 << 52;
/// Bytes of records read at a time while replaying.
const READ_CHUNK_BYTES: usize = 1 << 20;
/// Offset of the name in the header.
const NAME_AT: usize = 74;

const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// What the map file is bound to (see `overlay::Identity`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The base disk's length when the overlay was made.
    pub base_len: u64,
    /// The stored size of the disk's member.
    pub stored_size: u64,
    /// The identity's digest.
    pub fingerprint: [u8; 32],
    /// The disk's member name.
    pub member: String,
}

/// Why a map file is refused: the broken rule and the byte offset where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at byte {at}: {rule}")]
pub struct DecodeError {
    /// Byte offset in the file.
    pub at: u64,
    /// The rule, in words.
    pub rule: String,
}

fn bad(at: u64, rule: impl Into<String>) -> DecodeError {
    DecodeError {
        at,
        rule: rule.into(),
    }
}

/// A record's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Blocks set to a state.
    Set(BlockState),
    /// New length in bytes.
    Length,
    /// End of a batch.
    Commit,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Set(BlockState::Data) => 1,
            Kind::Set(BlockState::Zero) => 2,
            Kind::Set(BlockState::Base) => 3,
            Kind::Length => 4,
            Kind::Commit => 5,
        }
    }

    fn from_code(c: u8) -> Option<Kind> {
        Some(match c {
            1 => Kind::Set(BlockState::Data),
            2 => Kind::Set(BlockState::Zero),
            3 => Kind::Set(BlockState::Base),
            4 => Kind::Length,
            5 => Kind::Commit,
            _ => return None,
        })
    }
}

/// One record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// What it says.
    pub kind: Kind,
    /// Its batch.
    pub batch: u64,
    /// First block, new length, or record count (Commit).
    pub a: u64,
    /// Block count (0 for Length and Commit).
    pub b: u64,
}

impl Record {
    /// The record's bytes.
    pub fn encode(&self) -> [u8; RECORD_BYTES] {
        let mut out = [0u8; RECORD_BYTES];
        out[0] = self.kind.code();
        out[4..12].copy_from_slice(&self.batch.to_le_bytes());
        out[12..20].copy_from_slice(&self.a.to_le_bytes());
        out[20..28].copy_from_slice(&self.b.to_le_bytes());
        let crc = CRC32C.checksum(&out[..28]);
        out[28..].copy_from_slice(&crc.to_le_bytes());
        out
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Whether a slot's checksum holds.
fn checksum_holds(slot: &[u8]) -> bool {
    slot.len() == RECORD_BYTES && CRC32C.checksum(&slot[..28]) == u32_at(slot, 28)
}

/// The bytes of one batch: `records` followed by its Commit record.
pub fn encode_batch(batch: u64, records: &[Record]) -> Vec<u8> {
    let mut out = Vec::with_capacity((records.len() + 1) * RECORD_BYTES);
    for r in records {
        out.extend_from_slice(&Record { batch, ..*r }.encode());
    }
    let commit = Record {
        kind: Kind::Commit,
        batch,
        a: records.len() as u64,
        b: 0,
    };
    out.extend_from_slice(&commit.encode());
    out
}

impl Header {
    /// The header's bytes.
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        let name = self.member.as_bytes();
        let header_bytes = (NAME_AT + name.len() + 4).div_ceil(RECORD_BYTES) * RECORD_BYTES;
        if header_bytes > MAX_HEADER_BYTES || name.len() > usize::from(u16::MAX) {
            return Err(bad(0, "the member name is too long for an overlay header"));
        }
        let mut out = vec![0u8; header_bytes];
        out[..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&VERSION.to_le_bytes());
        // OK to cast: at most MAX_HEADER_BYTES.
        out[12..16].copy_from_slice(&(header_bytes as u32).to_le_bytes());
        out[16..20].copy_from_slice(&(BLOCK_BYTES as u32).to_le_bytes());
        out[24..32].copy_from_slice(&self.base_len.to_le_bytes());
        out[32..40].copy_from_slice(&self.stored_size.to_le_bytes());
        out[40..72].copy_from_slice(&self.fingerprint);
        // OK to cast: checked above.
        out[72..74].copy_from_slice(&(name.len() as u16).to_le_bytes());
        out[NAME_AT..NAME_AT + name.len()].copy_from_slice(name);
        let crc = CRC32C.checksum(&out[..header_bytes - 4]);
        out[header_bytes - 4..].copy_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Reads and checks the header at the start of `src`; returns it and its length.
    pub fn decode(src: &dyn ReadAt) -> Result<(Header, u64), DecodeError> {
        let mut head = [0u8; 16];
        let n = src
            .read_at(0, &mut head)
            .map_err(|e| bad(0, format!("cannot read the header: {e}")))?;
        if n < 16 || head[..8] != MAGIC {
            return Err(bad(0, "not an ovafs overlay map (bad magic)"));
        }
        let version = u32_at(&head, 8);
        if version != VERSION {
            return Err(bad(8, format!("version {version}, not {VERSION}")));
        }
        let header_bytes = u32_at(&head, 12) as usize;
        if !(NAME_AT + 4..=MAX_HEADER_BYTES).contains(&header_bytes)
            || !header_bytes.is_multiple_of(RECORD_BYTES)
        {
            return Err(bad(
                12,
                format!("header length {header_bytes} is impossible"),
            ));
        }
        let mut h = vec![0u8; header_bytes];
        src.read_exact_at(0, &mut h)
            .map_err(|_| bad(0, "the header is cut short"))?;
        if CRC32C.checksum(&h[..header_bytes - 4]) != u32_at(&h, header_bytes - 4) {
            return Err(bad(
                (header_bytes - 4) as u64,
                "the header's checksum does not match",
            ));
        }
        if u64::from(u32_at(&h, 16)) != BLOCK_BYTES {
            return Err(bad(
                16,
                format!("block size {}, not {BLOCK_BYTES}", u32_at(&h, 16)),
            ));
        }
        if u32_at(&h, 20) != 0 {
            return Err(bad(20, "reserved header bytes are set"));
        }
        let base_len = u64_at(&h, 24);
        if base_len > MAX_CAPACITY_BYTES {
            return Err(bad(
                24,
                format!("base length {base_len} is above the limit"),
            ));
        }
        let name_len = usize::from(u16::from_le_bytes([h[72], h[73]]));
        let name_end = NAME_AT
            .checked_add(name_len)
            .filter(|&e| e <= header_bytes - 4)
            .ok_or_else(|| bad(72, "the member name runs past the header"))?;
        if h[name_end..header_bytes - 4].iter().any(|&b| b != 0) {
            return Err(bad(name_end as u64, "header padding is not zero"));
        }
        let member = std::str::from_utf8(&h[NAME_AT..name_end])
            .map_err(|_| bad(NAME_AT as u64, "the member name is not UTF-8"))?
            .to_string();
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(&h[40..72]);
        Ok((
            Header {
                base_len,
                stored_size: u64_at(&h, 32),
                fingerprint,
                member,
            },
            header_bytes as u64,
        ))
    }
}

/// What replaying a map file gives.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// The header.
    pub header: Header,
    /// The block states of every committed batch.
    pub map: BlockMap,
    /// The disk's length after them.
    pub len: u64,
    /// Where the committed batches end: a torn tail starts here.
    pub valid_bytes: u64,
    /// The next batch number to write.
    pub next_batch: u64,
    /// Records in committed batches (to judge whether compaction pays).
    pub records: u64,
}

/// Limits of a replay.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Runs the map may hold (and records one batch may carry).
    pub max_runs: usize,
}

/// Blocks needed for `len` bytes.
pub fn blocks_for(len: u64) -> u64 {
    len.div_ceil(BLOCK_BYTES)
}

/// Reads and checks a whole map file. Memory: the map (bounded by `limits.max_runs`), one
/// pending batch (bounded likewise) and one read chunk; never the file's size.
pub fn replay(src: &dyn ReadAt, limits: Limits) -> Result<Replayed, DecodeError> {
    let (header, header_bytes) = Header::decode(src)?;
    let mut r = Replayer {
        map: BlockMap::new(),
        len: header.base_len,
        pending: Vec::new(),
        pending_len: None,
        batch: 1,
        records: 0,
        limits,
    };
    let file_len = src.len();
    let mut at = header_bytes;
    let mut valid_bytes = header_bytes;
    let chunk_bytes = usize::try_from(file_len - header_bytes.min(file_len))
        .unwrap_or(READ_CHUNK_BYTES)
        .min(READ_CHUNK_BYTES);
    let mut chunk = vec![0u8; chunk_bytes];
    // The first slot that failed its checksum (or was cut short): everything from there on
    // must fail too, or the file is damaged rather than torn.
    let mut torn_at: Option<u64> = None;
    while at < file_len {
        let want = usize::try_from(file_len - at)
            .unwrap_or(usize::MAX)
            .min(READ_CHUNK_BYTES);
        let buf = &mut chunk[..want];
        src.read_exact_at(at, buf)
            .map_err(|e| bad(at, format!("cannot read: {e}")))?;
        for (i, slot) in buf.chunks(RECORD_BYTES).enumerate() {
            let slot_at = at + (i * RECORD_BYTES) as u64;
            if !checksum_holds(slot) {
                torn_at.get_or_insert(slot_at);
                continue;
            }
            if let Some(first_bad) = torn_at {
                return Err(bad(
                    first_bad,
                    format!(
                        "a record fails its checksum but the record at byte {slot_at} after it is intact (damaged, not torn)"
                    ),
                ));
            }
            if r.apply(slot, slot_at)? {
                valid_bytes = slot_at + RECORD_BYTES as u64;
            }
        }
        at += want as u64;
    }
    Ok(Replayed {
        header,
        map: r.map,
        len: r.len,
        valid_bytes,
        next_batch: r.batch,
        records: r.records,
    })
}

struct Replayer {
    map: BlockMap,
    len: u64,
    /// Records of the batch being read, applied at its Commit.
    pending: Vec<Record>,
    /// The length the pending batch sets, if any.
    pending_len: Option<u64>,
    /// The batch expected.
    batch: u64,
    records: u64,
    limits: Limits,
}

impl Replayer {
    /// Checks one well-checksummed slot; applies its batch at a Commit (returns true).
    fn apply(&mut self, slot: &[u8], at: u64) -> Result<bool, DecodeError> {
        let kind = Kind::from_code(slot[0])
            .ok_or_else(|| bad(at, format!("unknown record kind {}", slot[0])))?;
        if slot[1..4].iter().any(|&b| b != 0) {
            return Err(bad(at + 1, "reserved record bytes are set"));
        }
        let rec = Record {
            kind,
            batch: u64_at(slot, 4),
            a: u64_at(slot, 12),
            b: u64_at(slot, 20),
        };
        if rec.batch != self.batch {
            return Err(bad(
                at + 4,
                format!(
                    "record of batch {}, expected batch {}",
                    rec.batch, self.batch
                ),
            ));
        }
        let len_now = self.pending_len.unwrap_or(self.len);
        match kind {
            Kind::Set(_) => {
                let end = rec
                    .a
                    .checked_add(rec.b)
                    .ok_or_else(|| bad(at + 12, "block range overflows"))?;
                if rec.b == 0 || end > blocks_for(len_now) {
                    return Err(bad(
                        at + 12,
                        format!(
                            "blocks {}..{end} are not inside the disk's {} blocks",
                            rec.a,
                            blocks_for(len_now)
                        ),
                    ));
                }
                if self.pending.len() > self.limits.max_runs.max(1) {
                    return Err(bad(
                        at,
                        format!("a batch of more than {} records", self.limits.max_runs),
                    ));
                }
                self.pending.push(rec);
            }
            Kind::Length => {
                if rec.b != 0 || rec.a < len_now || rec.a > MAX_CAPACITY_BYTES {
                    return Err(bad(
                        at + 12,
                        format!(
                            "length {} is impossible (now {len_now}, limit {MAX_CAPACITY_BYTES})",
                            rec.a
                        ),
                    ));
                }
                self.pending_len = Some(rec.a);
                self.pending.push(rec);
            }
            Kind::Commit => {
                if rec.b != 0 || rec.a != self.pending.len() as u64 {
                    return Err(bad(
                        at + 12,
                        format!(
                            "the batch's end counts {} records, it has {}",
                            rec.a,
                            self.pending.len()
                        ),
                    ));
                }
                for p in self.pending.drain(..) {
                    if let Kind::Set(state) = p.kind {
                        self.map.set(p.a, p.a + p.b, state);
                        if self.map.run_count() > self.limits.max_runs {
                            return Err(bad(
                                at,
                                format!("the map holds more than {} runs", self.limits.max_runs),
                            ));
                        }
                    }
                }
                self.len = len_now;
                self.pending_len = None;
                self.records += rec.a + 1;
                self.batch = self
                    .batch
                    .checked_add(1)
                    .ok_or_else(|| bad(at + 4, "batch number overflows"))?;
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            base_len: 10 * BLOCK_BYTES,
            stored_size: 1234,
            fingerprint: [7; 32],
            member: "disk1.vmdk".into(),
        }
    }

    fn set(state: BlockState, a: u64, b: u64) -> Record {
        Record {
            kind: Kind::Set(state),
            batch: 0,
            a,
            b,
        }
    }

    const LIMITS: Limits = Limits { max_runs: 1000 };

    fn file(batches: &[&[Record]]) -> Vec<u8> {
        let mut f = header().encode().unwrap();
        for (i, b) in batches.iter().enumerate() {
            f.extend(encode_batch(i as u64 + 1, b));
        }
        f
    }

    #[test]
    fn batches_replay_in_order() {
        let f = file(&[
            &[set(BlockState::Data, 0, 3)],
            &[
                Record {
                    kind: Kind::Length,
                    batch: 0,
                    a: 20 * BLOCK_BYTES,
                    b: 0,
                },
                set(BlockState::Zero, 1, 1),
                set(BlockState::Data, 15, 2),
            ],
        ]);
        let r = replay(&f, LIMITS).unwrap();
        assert_eq!(r.header, header());
        assert_eq!(r.len, 20 * BLOCK_BYTES);
        assert_eq!(r.valid_bytes, f.len() as u64);
        assert_eq!(r.next_batch, 3);
        let runs: Vec<_> = r.map.runs().map(|x| (x.first, x.end, x.state)).collect();
        assert_eq!(
            runs,
            vec![
                (0, 1, BlockState::Data),
                (1, 2, BlockState::Zero),
                (2, 3, BlockState::Data),
                (15, 17, BlockState::Data)
            ]
        );
    }

    #[test]
    fn a_torn_tail_is_dropped() {
        let full = file(&[
            &[set(BlockState::Data, 0, 1)],
            &[set(BlockState::Data, 5, 1)],
        ]);
        let first_end = (full.len() - 2 * RECORD_BYTES) as u64;
        // Cut anywhere inside the second batch, or its bytes turned to zeros.
        for cut in first_end as usize..full.len() {
            let r = replay(&full[..cut].to_vec(), LIMITS).unwrap();
            assert_eq!(r.valid_bytes, first_end, "cut at {cut}");
            assert_eq!(r.map.blocks_in(BlockState::Data), 1);
            let mut zeroed = full.clone();
            zeroed[cut..].fill(0);
            assert_eq!(replay(&zeroed, LIMITS).unwrap().valid_bytes, first_end);
        }
        assert_eq!(
            replay(&full, LIMITS)
                .unwrap()
                .map
                .blocks_in(BlockState::Data),
            2
        );
    }

    #[test]
    fn a_bad_record_before_an_intact_one_is_damage() {
        let mut f = file(&[
            &[set(BlockState::Data, 0, 1)],
            &[set(BlockState::Data, 5, 1)],
        ]);
        let h = header().encode().unwrap().len();
        f[h + 13] ^= 1;
        let e = replay(&f, LIMITS).unwrap_err();
        assert_eq!(e.at, h as u64);
        assert!(e.rule.contains("damaged, not torn"), "{e}");
    }

    #[test]
    fn impossible_records_are_refused() {
        let past = file(&[&[set(BlockState::Data, 9, 2)]]);
        assert!(
            replay(&past, LIMITS)
                .unwrap_err()
                .rule
                .contains("not inside")
        );
        let overflow = file(&[&[set(BlockState::Data, u64::MAX, 2)]]);
        assert!(
            replay(&overflow, LIMITS)
                .unwrap_err()
                .rule
                .contains("overflows")
        );
        let empty = file(&[&[set(BlockState::Zero, 1, 0)]]);
        assert!(replay(&empty, LIMITS).is_err());
        let shrink = file(&[&[Record {
            kind: Kind::Length,
            batch: 0,
            a: BLOCK_BYTES,
            b: 0,
        }]]);
        assert!(replay(&shrink, LIMITS).unwrap_err().rule.contains("length"));
        // A batch out of sequence: batch 2 written as the first.
        let mut f = header().encode().unwrap();
        f.extend(encode_batch(2, &[set(BlockState::Data, 0, 1)]));
        assert!(
            replay(&f, LIMITS)
                .unwrap_err()
                .rule
                .contains("expected batch 1")
        );
        // A commit that counts wrongly.
        let mut f = header().encode().unwrap();
        let mut rec = set(BlockState::Data, 0, 1);
        rec.batch = 1;
        f.extend(rec.encode());
        f.extend(
            Record {
                kind: Kind::Commit,
                batch: 1,
                a: 2,
                b: 0,
            }
            .encode(),
        );
        assert!(replay(&f, LIMITS).unwrap_err().rule.contains("counts 2"));
    }

    #[test]
    fn the_run_limit_is_enforced_while_replaying() {
        let recs: Vec<_> = (0..5).map(|i| set(BlockState::Data, i * 2, 1)).collect();
        let f = file(&[&recs]);
        let e = replay(&f, Limits { max_runs: 3 }).unwrap_err();
        assert!(e.rule.contains("more than 3"), "{e}");
    }

    #[test]
    fn a_damaged_header_is_refused() {
        let good = file(&[]);
        for (at, what) in [
            (0, "magic"),
            (8, "version"),
            (30, "checksum"),
            (12, "length"),
        ] {
            let mut f = good.clone();
            f[at] ^= 0x40;
            let e = replay(&f, LIMITS).unwrap_err();
            assert!(e.rule.contains(what), "{at}: {e}");
        }
        assert!(replay(&good[..20].to_vec(), LIMITS).is_err());
        assert!(replay(&Vec::new(), LIMITS).is_err());
    }
}
