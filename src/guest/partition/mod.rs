//! Partition tables (issue 12 §1): MBR with extended/logical partitions, GPT with its
//! protective (or hybrid) MBR and both header copies checked, and a disk without a table
//! (a file system on the whole disk). [`read_table`] reads the table of any [`ReadAt`];
//! [`partition_source`] gives one partition as a window of the disk.
//!
//! Our own parser, not the `gpt` or `mbrman` crates: both read from `Read + Seek` devices
//! and, on hostile input, `gpt` asserts on an entry size other than 128 and allocates the
//! entry array the header claims (up to 2^32 × 2^32 bytes), and `mbrman` adds sector
//! numbers as unchecked `u32` (a panic in debug builds) and follows EBR chains without a
//! bound on their length. The formats are small; here every offset is checked, every
//! allocation and loop bounded, and oddities become [`Table::notes`] rather than errors
//! whenever the rest of the table is still usable.
//!
//! Numbers are the ones Linux gives (`sda1`..): MBR primaries 1-4 by slot, logical
//! partitions 5.. in chain order; GPT entry index + 1, unused entries skipped. An extended
//! partition is a container, not listed itself (its logical partitions are).

mod check;
mod gpt;
mod mbr;
pub mod types;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::io::{ReadAt, Window};

/// The classic sector size: MBR always, GPT first (4096 is tried when 512 finds nothing).
pub const SECTOR: u64 = 512;

/// Most notes a table keeps (a hostile table could otherwise produce one per entry).
pub const MAX_NOTES: usize = 64;

/// What kind of table a disk has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// An MS-DOS partition table (MBR), with extended/logical partitions.
    Mbr,
    /// A GUID partition table (also behind a hybrid MBR).
    Gpt,
    /// No table: a file system on the whole disk, or something unknown.
    None,
}

/// One partition, in bytes of the disk, already clipped to the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// The number Linux gives it (`sdaN`).
    pub number: u32,
    /// Its first byte on the disk.
    pub start: u64,
    /// Its length in bytes (never 0).
    pub len: u64,
    /// Its type's short name (`Linux`, `EFI System`), or the raw type (`0x42`, a GUID).
    pub type_name: String,
    /// Its GPT name, when it has a non-empty one.
    pub name: Option<String>,
}

/// A disk's partition table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Its kind.
    pub kind: TableKind,
    /// The partitions, by number.
    pub partitions: Vec<Partition>,
    /// What was odd but not fatal (a backup header used, a partition clipped, overlaps), in
    /// words for a log line; at most [`MAX_NOTES`].
    pub notes: Vec<String>,
}

/// Why a table cannot be read at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PartitionError {
    /// Neither GPT header copy (with its entry array) is usable.
    #[error("the GPT is unreadable: primary header: {primary}; backup header: {backup}")]
    GptCorrupt {
        /// Why the primary copy was refused.
        primary: String,
        /// Why the backup copy was refused.
        backup: String,
    },
}

impl From<PartitionError> for Error {
    fn from(e: PartitionError) -> Self {
        Error::layer(e)
    }
}

/// Reads the partition table of `disk`. A disk without a recognised table is
/// [`TableKind::None`] with no partitions; a GPT whose two copies are both unusable is
/// [`PartitionError::GptCorrupt`]; read failures of the disk are passed on.
pub fn read_table(disk: &dyn ReadAt) -> Result<Table> {
    let mut notes = Notes::default();
    let found = detect(disk, &mut notes)?;
    let partitions = check::finish(found.raw, &found.reserved, disk.len(), &mut notes);
    Ok(Table {
        kind: found.kind,
        partitions,
        notes: notes.into_vec(),
    })
}

/// The bytes of partition `p` of `disk`: a window of exactly its range.
pub fn partition_source(disk: Arc<dyn ReadAt>, p: &Partition) -> Result<Arc<dyn ReadAt>> {
    Ok(Arc::new(Window::new(disk, p.start, p.len)?))
}

/// Which table sector 0 (and LBA 1) announce, then that table's partitions.
fn detect(disk: &dyn ReadAt, notes: &mut Notes) -> Result<Found> {
    if disk.len() < SECTOR {
        return Ok(Found::none());
    }
    let mut sector0 = [0u8; SECTOR as usize];
    disk.read_exact_at(0, &mut sector0)?;
    let gpt_sig = gpt::signature_at(disk, SECTOR)?;
    match mbr::parse_sector(&sector0) {
        mbr::Sector::Entries(entries) if entries.iter().any(|e| e.kind == mbr::PROTECTIVE) => {
            let others = entries
                .iter()
                .filter(|e| !e.is_empty() && e.kind != mbr::PROTECTIVE)
                .count();
            if others > 0 {
                notes.push(format!(
                    "hybrid MBR: its {others} other entries are ignored, the GPT is used"
                ));
            }
            gpt::read(disk, notes)
        }
        mbr::Sector::Entries(entries) if entries.iter().all(mbr::Entry::is_empty) => {
            if gpt_sig {
                notes.push("a GPT header without a protective MBR entry: the GPT is used".into());
                return gpt::read(disk, notes);
            }
            Ok(Found::none())
        }
        mbr::Sector::Entries(entries) => mbr::read(disk, &entries, notes),
        mbr::Sector::BootSector => Ok(Found::none()),
        mbr::Sector::NotMbr if gpt_sig => {
            notes.push("a GPT header without a protective MBR: the GPT is used".into());
            gpt::read(disk, notes)
        }
        mbr::Sector::NotMbr => Ok(Found::none()),
    }
}

/// A partition as a table states it, in sectors, before clipping and checks.
#[derive(Debug, Clone)]
struct Raw {
    number: u32,
    first_sector: u64,
    sectors: u64,
    sector_size: u64,
    type_name: String,
    name: Option<String>,
    /// For a logical partition: its extended container's byte range.
    container: Option<(u64, u64)>,
}

/// A byte range the table itself occupies (a header, an entry array, an EBR).
#[derive(Debug, Clone)]
struct Reserved {
    start: u64,
    len: u64,
    what: String,
}

/// What a table reader found.
struct Found {
    kind: TableKind,
    raw: Vec<Raw>,
    reserved: Vec<Reserved>,
}

impl Found {
    fn none() -> Self {
        Found {
            kind: TableKind::None,
            raw: Vec::new(),
            reserved: Vec::new(),
        }
    }
}

/// Notes, bounded: past [`MAX_NOTES`] only their count is kept.
#[derive(Default)]
struct Notes {
    v: Vec<String>,
    dropped: usize,
}

impl Notes {
    fn push(&mut self, s: String) {
        if self.v.len() < MAX_NOTES - 1 {
            self.v.push(s);
        } else {
            self.dropped += 1;
        }
    }

    fn into_vec(mut self) -> Vec<String> {
        if self.dropped > 0 {
            self.v.push(format!("... and {} more notes", self.dropped));
        }
        self.v
    }
}
