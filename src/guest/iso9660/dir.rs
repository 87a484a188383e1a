//! Directory records and the listing of one directory: its extent read in bounded chunks,
//! each logical block a run of records (a zero length byte ends a block's run), records
//! turned into [`Node`]s with the names and attributes of the tree being read (Rock Ridge,
//! Joliet or plain ISO 9660), file sections of a multi-extent file joined.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::error::{ErrorKind, Result};
use crate::guest::{EntryKind, GuestStat, MAX_DIR_ENTRIES};
use crate::io::ReadAt;

use super::susp::{self, RockRidge};
use super::{IsoError, time};

/// Shortest directory record: the fixed part and a one-byte name.
const MIN_RECORD: usize = 34;
/// Largest directory read (a million entries with long Rock Ridge names fit).
pub const MAX_DIR_BYTES: u64 = 256 << 20;
/// Rock Ridge continuation areas read per directory listed (a legitimate image has at most
/// one per entry).
pub const MAX_CE_PER_DIR: usize = MAX_DIR_ENTRIES;
/// Bytes of a directory read from the image at once.
const CHUNK: u64 = 64 << 10;
/// File sections one file may have (xorriso cuts at 4 GiB - 2 KiB: this is 256 TiB).
const MAX_SECTIONS: usize = 1 << 16;

/// File flags of a directory record.
const FLAG_DIR: u8 = 0x02;
const FLAG_ASSOCIATED: u8 = 0x04;
const FLAG_MULTI_EXTENT: u8 = 0x80;

/// `st_mode` file types, as `PX` gives them.
const S_IFMT: u32 = 0o170_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;

/// How names and attributes are read in the tree being listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    /// The primary tree with Rock Ridge: System Use areas start after `skip` bytes.
    RockRidge { skip: u8 },
    /// A Joliet tree: UCS-2 big-endian names.
    Joliet,
    /// The primary tree alone: d-characters, with `;1` versions.
    Plain,
}

/// What the file system needs to read its directories.
#[derive(Debug, Clone, Copy)]
pub struct Tree {
    /// Bytes per logical block.
    pub block_size: u64,
    /// The naming of this tree.
    pub names: Names,
}

/// One file, directory or link of the tree.
#[derive(Debug, Clone)]
pub struct Node {
    /// What `stat` says of it.
    pub stat: GuestStat,
    /// Where its contents are.
    pub data: Data,
}

/// Where a node's contents are.
#[derive(Debug, Clone)]
pub enum Data {
    /// A directory's records: `len` bytes at byte `start` of the image.
    Dir { start: u64, len: u64 },
    /// A regular file's sections, as byte ranges of the image, in order; or why its data
    /// cannot be read as stored (interleaved, zisofs-compressed).
    File {
        sections: Vec<(u64, u64)>,
        unreadable: Option<&'static str>,
    },
    /// A symbolic link's target.
    Link(Vec<u8>),
    /// A device, FIFO or socket.
    Other,
}

/// One directory's entries, in the order of its records, with an index by name.
#[derive(Debug, Default)]
pub struct Listing {
    /// Name and node of each entry.
    pub entries: Vec<(Vec<u8>, Arc<Node>)>,
    /// Position in `entries` by name.
    index: HashMap<Vec<u8>, usize>,
}

impl Listing {
    /// The entry named `name`.
    pub fn get(&self, name: &[u8]) -> Option<&Arc<Node>> {
        let &i = self.index.get(name)?;
        self.entries.get(i).map(|(_, n)| n)
    }
}

/// The fields of one directory record ovafs uses.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// First logical block of the extent.
    extent: u32,
    /// Blocks of extended attribute record before the data.
    ext_attr: u8,
    /// Bytes of data.
    data_len: u32,
    /// Recording date (7-byte form).
    date: &'a [u8],
    /// File flags.
    flags: u8,
    /// Interleaving: file unit size and gap size (both 0 for a contiguous file).
    interleave: (u8, u8),
    /// File identifier, as stored.
    name: &'a [u8],
    /// System Use area (SUSP entries).
    system_use: &'a [u8],
}

/// Parses record `b` (exactly its length byte's bytes).
pub fn record(b: &[u8]) -> Result<Record<'_>> {
    let corrupt = |why| IsoError::Corrupt(why);
    if b.len() < MIN_RECORD {
        return Err(corrupt("directory record shorter than 34 bytes").into());
    }
    let name_len = usize::from(b[32]);
    let name_end = 33 + name_len;
    let name = b
        .get(33..name_end)
        .ok_or(corrupt("directory record name past the record"))?;
    // A padding byte keeps the System Use area at an even offset.
    let su_start = name_end + usize::from(name_len % 2 == 0);
    Ok(Record {
        extent: u32::from_le_bytes([b[2], b[3], b[4], b[5]]),
        ext_attr: b[1],
        data_len: u32::from_le_bytes([b[10], b[11], b[12], b[13]]),
        date: &b[18..25],
        flags: b[25],
        interleave: (b[26], b[27]),
        name,
        system_use: b.get(su_start..).unwrap_or(&[]),
    })
}

impl Record<'_> {
    /// Byte offset of the record's data in the image.
    fn data_start(&self, tree: &Tree) -> Result<u64> {
        (u64::from(self.extent) + u64::from(self.ext_attr))
            .checked_mul(tree.block_size)
            .ok_or_else(|| IsoError::Corrupt("extent offset").into())
    }

    /// Whether this is the `.` or `..` record of a directory.
    fn is_self_or_parent(&self) -> bool {
        matches!(self.name, [0] | [1])
    }

    /// The Rock Ridge entries of this record (none outside a Rock Ridge tree), reading at
    /// most `budget` continuation areas.
    pub fn rock_ridge(
        &self,
        source: &dyn ReadAt,
        tree: &Tree,
        budget: &mut usize,
    ) -> Result<RockRidge> {
        match tree.names {
            Names::RockRidge { skip } => {
                let area = self.system_use.get(usize::from(skip)..).unwrap_or(&[]);
                susp::parse(source, tree.block_size, area, budget)
            }
            _ => Ok(RockRidge::default()),
        }
    }
}

/// The first record of the directory at byte `start` (its `.`), as owned bytes.
pub fn first_record(source: &dyn ReadAt, start: u64) -> Result<Vec<u8>> {
    let mut b = vec![0u8; 255];
    let n = source.read_at(start, &mut b)?;
    let len = usize::from(b.first().copied().unwrap_or(0));
    if len < MIN_RECORD || len > n {
        return Err(IsoError::Corrupt("a directory does not start with a record").into());
    }
    b.truncate(len);
    Ok(b)
}

/// The node of record `rec` (its Rock Ridge entries `rr` already read).
pub fn node(source: &dyn ReadAt, tree: &Tree, rec: &Record, rr: &RockRidge) -> Result<Node> {
    let px_type = rr.px.map(|p| p.mode & S_IFMT);
    let kind = if rr.child_link.is_some() {
        EntryKind::Dir
    } else {
        match px_type {
            Some(S_IFDIR) => EntryKind::Dir,
            Some(S_IFREG) => EntryKind::File,
            Some(S_IFLNK) => EntryKind::Symlink,
            Some(_) => EntryKind::Other,
            None if rec.flags & FLAG_DIR != 0 => EntryKind::Dir,
            None => EntryKind::File,
        }
    };
    let data = match kind {
        EntryKind::Dir => dir_data(source, tree, rec, rr)?,
        EntryKind::File => file_data(tree, rec, rr)?,
        EntryKind::Symlink => Data::Link(rr.link.clone().unwrap_or_default()),
        EntryKind::Other => Data::Other,
    };
    let size = match &data {
        Data::Dir { len, .. } => *len,
        Data::File { sections, .. } => sections.iter().map(|s| s.1).sum(),
        Data::Link(target) => target.len() as u64,
        Data::Other => 0,
    };
    // What Linux shows without Rock Ridge (and xorriso too): r-x for all, files included
    // ("the disc could be shared with DOS machines", isofs says).
    let default_mode = 0o555;
    let stat = GuestStat {
        kind,
        size,
        mode: rr.px.map_or(default_mode, |p| p.mode & 0o7777),
        uid: rr.px.map_or(0, |p| p.uid),
        gid: rr.px.map_or(0, |p| p.gid),
        mtime: rr
            .mtime
            .or_else(|| time::short_form(rec.date))
            .unwrap_or(SystemTime::UNIX_EPOCH),
        nlink: rr.px.map_or(1, |p| p.nlink.max(1)),
    };
    Ok(Node { stat, data })
}

/// A directory's byte range: its record's extent, or for a relocated one (`CL`) the extent
/// of the `.` record found where `CL` points.
fn dir_data(source: &dyn ReadAt, tree: &Tree, rec: &Record, rr: &RockRidge) -> Result<Data> {
    let (start, len) = match rr.child_link {
        Some(block) => {
            let start = u64::from(block)
                .checked_mul(tree.block_size)
                .ok_or(IsoError::Corrupt("relocated directory offset"))?;
            let dot = first_record(source, start)?;
            let dot = record(&dot)?;
            (dot.data_start(tree)?, u64::from(dot.data_len))
        }
        None => (rec.data_start(tree)?, u64::from(rec.data_len)),
    };
    Ok(Data::Dir { start, len })
}

/// A regular file's one section so far (more are joined by [`list`]).
fn file_data(tree: &Tree, rec: &Record, rr: &RockRidge) -> Result<Data> {
    let unreadable = if rr.compressed {
        Some("zisofs-compressed file")
    } else if rec.interleave != (0, 0) {
        Some("interleaved file")
    } else {
        None
    };
    Ok(Data::File {
        sections: vec![(rec.data_start(tree)?, u64::from(rec.data_len))],
        unreadable,
    })
}

/// The entry name of record `rec` in `tree`: Rock Ridge's `NM`, else the Joliet or plain
/// identifier without its `;1` version and trailing dot; `None` for a name that cannot be
/// a path component (empty, `.`, `..`, holding `/` or NUL).
fn name(tree: &Tree, rec: &Record, rr: &RockRidge) -> Option<Vec<u8>> {
    let name = match (tree.names, &rr.name) {
        (Names::RockRidge { .. }, Some(nm)) => nm.clone(),
        (Names::Joliet, _) => strip_version(joliet_name(rec.name)),
        _ => strip_version(rec.name.to_vec()),
    };
    let bad = name.is_empty() || name == b"." || name == b".." || name.contains(&b'/');
    (!bad && !name.contains(&0)).then_some(name)
}

/// UTF-8 of a UCS-2 (read as UTF-16) big-endian identifier; unpaired surrogates become
/// U+FFFD, an odd last byte is dropped.
fn joliet_name(raw: &[u8]) -> Vec<u8> {
    let units = raw
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]));
    char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect::<String>()
        .into_bytes()
}

/// `NAME.EXT;1` → `NAME.EXT`, `NAME.;1` → `NAME` (a version is `;` and digits).
fn strip_version(mut name: Vec<u8>) -> Vec<u8> {
    if let Some(semi) = name.iter().rposition(|&b| b == b';')
        && name[semi + 1..].iter().all(u8::is_ascii_digit)
    {
        name.truncate(semi);
    }
    while name.len() > 1 && name.last() == Some(&b'.') {
        name.pop();
    }
    name
}

/// Reads the directory of `len` bytes at byte `start` of `source`.
pub fn list(source: &dyn ReadAt, tree: &Tree, start: u64, len: u64) -> Result<Listing> {
    if len > MAX_DIR_BYTES {
        return Err(ErrorKind::LimitExceeded {
            what: "ISO 9660 directory",
            value: len,
            limit: MAX_DIR_BYTES,
        }
        .into());
    }
    if start.checked_add(len).is_none_or(|end| end > source.len()) {
        return Err(IsoError::Corrupt("directory extent past the end of the image").into());
    }
    let mut builder = Builder::new();
    let mut chunk = Vec::new();
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(CHUNK);
        // Bounded by CHUNK.
        chunk.resize(n as usize, 0);
        source.read_exact_at(start + done, &mut chunk)?;
        // CHUNK is a multiple of every block size: blocks never straddle two chunks.
        for block in chunk.chunks(tree.block_size as usize) {
            records(block, |rec| builder.add(source, tree, rec))?;
        }
        done += n;
    }
    builder.finish()
}

/// Calls `each` for every record of `block` (records never cross a block; a zero length
/// byte means the rest of the block is unused).
fn records(block: &[u8], mut each: impl FnMut(&Record) -> Result<()>) -> Result<()> {
    let mut rest = block;
    while let Some(&len) = rest.first() {
        let len = usize::from(len);
        if len == 0 {
            break;
        }
        let Some(bytes) = rest.get(..len) else {
            return Err(IsoError::Corrupt("directory record crosses its block").into());
        };
        each(&record(bytes)?)?;
        rest = &rest[len..];
    }
    Ok(())
}

/// A listing being built record by record.
struct Builder {
    listing: Listing,
    /// Continuation areas this directory may still read.
    ce_budget: usize,
    /// A multi-extent file whose last section has not come yet: its stored identifier,
    /// name and node.
    open: Option<(Vec<u8>, Option<Vec<u8>>, Node)>,
}

impl Builder {
    fn new() -> Self {
        Builder {
            listing: Listing::default(),
            ce_budget: MAX_CE_PER_DIR,
            open: None,
        }
    }

    /// Takes one record in.
    fn add(&mut self, source: &dyn ReadAt, tree: &Tree, rec: &Record) -> Result<()> {
        if let Some((raw, _, node)) = &mut self.open {
            if raw.as_slice() != rec.name {
                return Err(IsoError::Corrupt("a multi-extent file's sections are apart").into());
            }
            let Data::File { sections, .. } = &mut node.data else {
                return Err(IsoError::Corrupt("a multi-extent entry is not a file").into());
            };
            if sections.len() == MAX_SECTIONS {
                return Err(IsoError::Corrupt("a file of more than 65536 sections").into());
            }
            let section_len = u64::from(rec.data_len);
            sections.push((rec.data_start(tree)?, section_len));
            node.stat.size = node
                .stat
                .size
                .checked_add(section_len)
                .ok_or(IsoError::Corrupt("file size"))?;
            if rec.flags & FLAG_MULTI_EXTENT == 0
                && let Some((_, name, node)) = self.open.take()
            {
                self.push(name, node)?;
            }
            return Ok(());
        }
        if rec.is_self_or_parent() || rec.flags & FLAG_ASSOCIATED != 0 {
            return Ok(());
        }
        let rr = rec.rock_ridge(source, tree, &mut self.ce_budget)?;
        if rr.relocated {
            return Ok(()); // Listed where its `CL` entry is.
        }
        let name = name(tree, rec, &rr);
        let node = node(source, tree, rec, &rr)?;
        if rec.flags & FLAG_MULTI_EXTENT != 0 && matches!(node.data, Data::File { .. }) {
            self.open = Some((rec.name.to_vec(), name, node));
            return Ok(());
        }
        self.push(name, node)
    }

    /// Adds an entry; one without a usable name, or whose name came before, is left out.
    fn push(&mut self, name: Option<Vec<u8>>, node: Node) -> Result<()> {
        let Some(name) = name else {
            log::debug!("iso9660: an entry without a usable name is left out");
            return Ok(());
        };
        if self.listing.index.contains_key(&name) {
            log::debug!(
                "iso9660: a second entry named {} is left out",
                String::from_utf8_lossy(&name)
            );
            return Ok(());
        }
        if self.listing.entries.len() == MAX_DIR_ENTRIES {
            return Err(ErrorKind::LimitExceeded {
                what: "ISO 9660 directory entries",
                value: MAX_DIR_ENTRIES as u64 + 1,
                limit: MAX_DIR_ENTRIES as u64,
            }
            .into());
        }
        let at = self.listing.entries.len();
        self.listing.index.insert(name.clone(), at);
        self.listing.entries.push((name, Arc::new(node)));
        Ok(())
    }

    /// The listing; a multi-extent file whose last section never came is corrupt.
    fn finish(self) -> Result<Listing> {
        if self.open.is_some() {
            return Err(IsoError::Corrupt("a multi-extent file's last section is missing").into());
        }
        Ok(self.listing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record of `name` for `len` bytes at block `lba` with `flags`.
    fn raw(name: &[u8], lba: u32, len: u32, flags: u8) -> Vec<u8> {
        let mut r = vec![0u8; 33];
        r[2..6].copy_from_slice(&lba.to_le_bytes());
        r[6..10].copy_from_slice(&lba.to_be_bytes());
        r[10..14].copy_from_slice(&len.to_le_bytes());
        r[14..18].copy_from_slice(&len.to_be_bytes());
        r[25] = flags;
        r[28] = 1;
        r[31] = 1;
        r[32] = name.len() as u8;
        r.extend_from_slice(name);
        if r.len() % 2 == 1 {
            r.push(0);
        }
        r[0] = r.len() as u8;
        r
    }

    const PLAIN: Tree = Tree {
        block_size: 2048,
        names: Names::Plain,
    };

    fn build(recs: &[Vec<u8>]) -> Result<Listing> {
        let mut b = Builder::new();
        let image = Vec::<u8>::new();
        for r in recs {
            b.add(&image, &PLAIN, &record(r)?)?;
        }
        b.finish()
    }

    #[test]
    fn file_sections_join() {
        let l = build(&[
            raw(&[0], 1, 2048, FLAG_DIR),
            raw(&[1], 1, 2048, FLAG_DIR),
            raw(b"BIG.BIN;1", 10, 100, FLAG_MULTI_EXTENT),
            raw(b"BIG.BIN;1", 20, 50, FLAG_MULTI_EXTENT),
            raw(b"BIG.BIN;1", 30, 7, 0),
            raw(b"SMALL;1", 40, 1, 0),
        ])
        .unwrap();
        assert_eq!(l.entries.len(), 2);
        let big = l.get(b"BIG.BIN").unwrap();
        assert_eq!(big.stat.size, 157);
        let Data::File { sections, .. } = &big.data else {
            panic!("{big:?}");
        };
        assert_eq!(
            sections,
            &[(10 * 2048, 100), (20 * 2048, 50), (30 * 2048, 7)]
        );
        assert_eq!(l.get(b"SMALL").unwrap().stat.size, 1);
    }

    #[test]
    fn broken_file_sections_are_corrupt() {
        let apart = build(&[
            raw(b"A;1", 10, 100, FLAG_MULTI_EXTENT),
            raw(b"B;1", 20, 1, 0),
        ]);
        assert!(apart.is_err());
        let unfinished = build(&[raw(b"A;1", 10, 100, FLAG_MULTI_EXTENT)]);
        assert!(unfinished.is_err());
    }

    #[test]
    fn duplicates_and_unusable_names_are_left_out() {
        let l = build(&[
            raw(b"A;1", 1, 1, 0),
            raw(b"A;2", 2, 2, 0),
            raw(b"A/B", 3, 3, 0),
        ])
        .unwrap();
        assert_eq!(l.entries.len(), 1);
        assert_eq!(l.get(b"A").unwrap().stat.size, 1);
    }

    #[test]
    fn versions_and_trailing_dots_go() {
        assert_eq!(strip_version(b"README.TXT;1".to_vec()), b"README.TXT");
        assert_eq!(strip_version(b"MAKEFILE.;1".to_vec()), b"MAKEFILE");
        assert_eq!(strip_version(b"A;B".to_vec()), b"A;B");
        assert_eq!(strip_version(b".".to_vec()), b".");
    }

    #[test]
    fn joliet_names_decode() {
        assert_eq!(
            joliet_name(b"\x00h\x00\xe9\xd8\x3d\xde\x00;"),
            "hé😀".as_bytes()
        );
        assert_eq!(joliet_name(b"\xd8\x00\x00a"), "\u{FFFD}a".as_bytes());
    }

    #[test]
    fn a_record_claiming_a_long_name_is_corrupt() {
        let mut rec = vec![0u8; 34];
        rec[0] = 34;
        rec[32] = 9;
        assert!(record(&rec).is_err());
        assert!(records(&rec, |_| Ok(())).is_err());
        rec[32] = 1;
        assert!(records(&rec, |_| Ok(())).is_ok());
        // A length byte past the block.
        let mut block = vec![0u8; 40];
        block[0] = 34;
        block[32] = 1;
        block[34] = 200;
        assert!(records(&block, |_| Ok(())).is_err());
    }
}
