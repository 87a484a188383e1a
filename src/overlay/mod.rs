//! Copy-on-write overlay of one flat disk: the changed 4 KiB blocks of a disk, kept beside
//! the package so that a guest can write to a disk that lives inside an OVA, persistent
//! across mounts and crashes, until a commit writes them into the package or a discard
//! throws them away.
//!
//! Per disk, in the overlay folder (`NAME.ova.ovafs-overlay/` beside the package, or a
//! folder the caller names), two files of ovafs's own (created 0600 in a 0700 folder):
//! - `KEY.data`: a sparse file holding each changed block at its own offset;
//! - `KEY.map`: a header binding the overlay to its disk ([`Identity`]), then an
//!   append-only journal of checksummed block-state records ([`journal`]), compacted on
//!   open when it has grown well past the map it describes.
//!
//! Both, and the folder, are opened through one folder descriptor without following
//! symlinks and checked with the journal's trust rules (`commit::trust`): the folder beside
//! a package may have been planted by another user. Anything that breaks a rule is neither
//! used nor deleted; the error names the rule ([`OverlayError::Untrusted`]).
//!
//! Durability: a write is acknowledged once its bytes are written to the data file (in the
//! page cache); [`Overlay::sync`] fdatasyncs the data file, *then* appends and fsyncs the
//! map records of the blocks changed since the last sync. So the map on disk never names a
//! block as changed whose bytes are not durable, and a crash loses at most what was written
//! after the last sync.
//!
//! Concurrency: the map sits behind one mutex held only for map updates, never during data
//! I/O; writers of overlapping blocks wait for each other (a range lock), writers of
//! different blocks do not. Memory is proportional to the number of changed runs, bounded by
//! [`OverlayOptions::max_runs`] ([`OverlayError::TooManyRuns`]).

pub mod journal;
pub mod map;

#[cfg(test)]
mod tests;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use nix::errno::Errno;
use nix::fcntl::{FallocateFlags, OFlag};
use nix::sys::stat::FileStat;
use sha2::{Digest, Sha256};

use crate::commit::trust::{Folder, Found, Rules, errno_err};
use crate::error::{Error, Refusal, Result};
use crate::io::ReadAt;
use journal::{BLOCK_BYTES, Header, Kind, Limits, MAX_CAPACITY_BYTES, Record, blocks_for};
use map::{BlockMap, BlockState};

pub use map::Run;

/// The suffix of the overlay folder beside a package: `NAME.ova` + this.
pub const FOLDER_SUFFIX: &str = ".ovafs-overlay";
/// The default bound on changed runs per disk (1 Mi). A run costs 24 bytes of payload in a
/// `BTreeMap` node, about 50 bytes with the nodes' slack (measured: the peak memory of 1 Mi
/// unmergeable runs, `a_map_costs_a_few_dozen_bytes_per_run`), so the map stays under about
/// 51 MiB, and the set of runs changed since the last sync (bounded alike) as much again.
pub const DEFAULT_MAX_RUNS: usize = 1 << 20;
/// Compaction on open pays when the journal holds more than this many records per run...
const COMPACT_RECORDS_PER_RUN: u64 = 4;
/// ... and more than this many records in all (small journals are left as they are).
const COMPACT_MIN_RECORDS: u64 = 4096;
/// Bytes of the base sampled into an identity without a manifest digest: the head and tail.
const SAMPLE_END_BYTES: u64 = 1 << 20;
/// ... and this many pieces of [`SAMPLE_PIECE_BYTES`] spread evenly between them.
const SAMPLE_PIECES: u64 = 16;
/// Bytes per sampled piece.
const SAMPLE_PIECE_BYTES: u64 = 64 << 10;

/// Why an overlay cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OverlayError {
    /// The folder or a file breaks a trust rule: neither used nor deleted.
    #[error("overlay {path} is not used (nor deleted): {rule}")]
    Untrusted {
        /// The path.
        path: String,
        /// The broken rule.
        rule: String,
    },
    /// The map file breaks a format rule.
    #[error("overlay map {path} is refused: {source}")]
    Corrupt {
        /// The path.
        path: String,
        /// What and where.
        source: journal::DecodeError,
    },
    /// The overlay was made for other disk bytes than the package holds now.
    #[error(
        "overlay {path} was made for {made_for}, but the package now has {now}: it is stale \
         (the package changed); discard it to write to the disk again"
    )]
    Stale {
        /// The map's path.
        path: String,
        /// What the overlay is bound to.
        made_for: String,
        /// What the package holds.
        now: String,
    },
    /// The map records blocks in the data file, which is missing.
    #[error("overlay {path}: the data file is missing but the map records changed blocks")]
    DataMissing {
        /// The data file's path.
        path: String,
    },
    /// More changed runs than the bound allows.
    #[error(
        "overlay {path}: more than {limit} runs of changed blocks (the memory bound); commit or discard the changes"
    )]
    TooManyRuns {
        /// The map's path.
        path: String,
        /// The bound.
        limit: usize,
    },
    /// A disk key that is not one plain file name.
    #[error("overlay key {0:?} is not a plain file name")]
    BadKey(String),
}

impl From<OverlayError> for Error {
    fn from(e: OverlayError) -> Self {
        Error::layer(e)
    }
}

/// Where a disk's overlay lives: a folder and the disk's key (file names `KEY.map`,
/// `KEY.data`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The overlay folder.
    pub folder: PathBuf,
    /// One plain file name per disk of the package (the flat disk's name, `disk1.raw`).
    pub key: String,
}

impl Location {
    /// The default folder beside `package`: `NAME.ova.ovafs-overlay/`.
    pub fn beside(package: &Path, key: &str) -> Location {
        let mut name = package.file_name().unwrap_or_default().to_os_string();
        name.push(FOLDER_SUFFIX);
        Location {
            folder: package.with_file_name(name),
            key: key.to_string(),
        }
    }

    /// A folder given by the user (`-o overlay=DIR`).
    pub fn in_folder(folder: &Path, key: &str) -> Location {
        Location {
            folder: folder.to_path_buf(),
            key: key.to_string(),
        }
    }

    fn map_name(&self) -> String {
        format!("{}.map", self.key)
    }

    fn data_name(&self) -> String {
        format!("{}.data", self.key)
    }

    fn tmp_name(&self) -> String {
        format!("{}.map.tmp", self.key)
    }

    fn committed_name(&self) -> String {
        format!("{}.committed", self.key)
    }

    /// The data file's path (what `ovafs status` shows).
    pub fn data_path(&self) -> PathBuf {
        self.folder.join(self.data_name())
    }

    fn check_key(&self) -> Result<()> {
        let k = &self.key;
        let plain = !k.is_empty()
            && k.len() <= 200
            && k != "."
            && k != ".."
            && !k.contains('/')
            && !k.contains('\0');
        if plain {
            Ok(())
        } else {
            Err(OverlayError::BadKey(k.clone()).into())
        }
    }
}

/// What an overlay is bound to: the disk's bytes as stored in the package.
///
/// A settings commit rewrites the descriptor and manifest (in place, or a whole new OVA
/// with every other member copied verbatim), never a disk member's bytes, its name or its
/// size; a changed package (a new export, another disk under the same name) changes at
/// least one of: the member name, its stored size, the base's virtual size, the manifest's
/// digest of the disk file (a refreshed manifest keeps the lines of unchanged members), or
/// the SHA-256 of sampled parts of the stored bytes (the first and last MiB, where every
/// sparse format keeps its header, tables and footer, and 16 pieces of 64 KiB spread
/// between: at most 3 MiB read at open, whatever the disk's size). The sample is taken
/// also when the manifest has a digest, because a manifest need not be true (verify=lazy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The disk's member name.
    pub member: String,
    /// Its stored size in the package.
    pub stored_size: u64,
    /// The base disk's virtual size (the flat image's length).
    pub base_len: u64,
    /// SHA-256 over all of the above, the manifest digest and the sample.
    pub fingerprint: [u8; 32],
}

impl Identity {
    /// The identity of the disk stored as `member` (`stored`: its bytes in the package),
    /// whose flat image is `base_len` bytes, with the manifest's digest line value for it
    /// (`"SHA256:abc..."`, any stable spelling) when the manifest has one.
    pub fn of_disk(
        member: &str,
        stored: &dyn ReadAt,
        manifest_digest: Option<&str>,
        base_len: u64,
    ) -> Result<Identity> {
        let size = stored.len();
        let mut h = Sha256::new();
        h.update(b"ovafs overlay identity v1\0");
        h.update(member.as_bytes());
        h.update([0]);
        h.update(size.to_le_bytes());
        h.update(base_len.to_le_bytes());
        h.update(manifest_digest.unwrap_or("").as_bytes());
        h.update([0]);
        let mut pieces = vec![(0, SAMPLE_END_BYTES.min(size))];
        for i in 1..=SAMPLE_PIECES {
            let at = size / (SAMPLE_PIECES + 1) * i;
            pieces.push((at, SAMPLE_PIECE_BYTES.min(size - at)));
        }
        let tail = SAMPLE_END_BYTES.min(size);
        pieces.push((size - tail, tail));
        let mut buf = vec![0u8; SAMPLE_END_BYTES as usize];
        for (at, len) in pieces {
            // OK to cast: at most SAMPLE_END_BYTES.
            let b = &mut buf[..len as usize];
            stored.read_exact_at(at, b)?;
            h.update(b);
        }
        Ok(Identity {
            member: member.to_string(),
            stored_size: size,
            base_len,
            fingerprint: h.finalize().into(),
        })
    }

    fn header(&self) -> Header {
        Header {
            base_len: self.base_len,
            stored_size: self.stored_size,
            fingerprint: self.fingerprint,
            member: self.member.clone(),
        }
    }

    fn describe(member: &str, stored_size: u64, base_len: u64, fingerprint: &[u8; 32]) -> String {
        let short: String = fingerprint[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!(
            "{member} ({stored_size} bytes stored, {base_len} bytes as a flat disk, identity {short}…)"
        )
    }
}

/// Options of [`Overlay::open_or_create`].
#[derive(Debug, Clone, Copy)]
pub struct OverlayOptions {
    /// Create the folder and files when missing (false: a missing overlay is
    /// `Refusal::NotFound`).
    pub create: bool,
    /// The memory bound: changed runs per disk.
    pub max_runs: usize,
}

impl Default for OverlayOptions {
    fn default() -> Self {
        OverlayOptions {
            create: true,
            max_runs: DEFAULT_MAX_RUNS,
        }
    }
}

/// Which answer a seek wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whence {
    /// SEEK_DATA.
    Data,
    /// SEEK_HOLE.
    Hole,
}

/// The map in memory.
#[derive(Debug)]
struct State {
    map: BlockMap,
    /// Blocks whose state changed since the last sync (`Data` marks them).
    dirty: BlockMap,
    /// The disk's length now.
    len: u64,
    /// The length the map file records.
    durable_len: u64,
}

/// Where the journal goes on (held by `sync`, which appends).
#[derive(Debug)]
struct JournalEnd {
    /// Byte offset of the next batch.
    at: u64,
    /// Its number.
    batch: u64,
}

/// One disk's copy-on-write overlay. `Send + Sync`.
#[derive(Debug)]
pub struct Overlay {
    location: Location,
    /// The trust rules it was opened with (for the files it adds later).
    rules: Rules,
    folder: Folder,
    data: File,
    map_file: File,
    base_len: u64,
    max_runs: usize,
    state: Mutex<State>,
    /// Block ranges being written: writers of overlapping blocks wait for each other.
    busy: Mutex<Vec<(u64, u64)>>,
    busy_done: Condvar,
    journal_end: Mutex<JournalEnd>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Holds blocks `[first, end)` for one writer.
struct BusyBlocks<'a> {
    overlay: &'a Overlay,
    range: (u64, u64),
}

impl Drop for BusyBlocks<'_> {
    fn drop(&mut self) {
        let mut busy = lock(&self.overlay.busy);
        if let Some(i) = busy.iter().position(|r| *r == self.range) {
            busy.swap_remove(i);
        }
        self.overlay.busy_done.notify_all();
    }
}

fn untrusted(path: String, rule: impl Into<String>) -> Error {
    OverlayError::Untrusted {
        path,
        rule: rule.into(),
    }
    .into()
}

/// Opens (creating it if asked) the overlay folder and checks it.
fn open_folder(location: &Location, rules: &Rules, create: bool) -> Result<Folder> {
    let path = &location.folder;
    let shown = path.display().to_string();
    match nix::sys::stat::lstat(path) {
        Ok(st) => {
            if let Some(rule) = rules.broken_folder_rule(&st) {
                return Err(untrusted(shown, rule));
            }
        }
        Err(Errno::ENOENT) if create => {
            match nix::unistd::mkdir(path, nix::sys::stat::Mode::S_IRWXU) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(errno_err(format!("create folder {shown}"), e)),
            }
        }
        Err(Errno::ENOENT) => {
            return Err(Error::refused(
                format!("overlay {shown}"),
                Refusal::NotFound,
            ));
        }
        Err(e) => return Err(errno_err(format!("stat {shown}"), e)),
    }
    let folder = Folder::open(path).map_err(|e| match e.os_error() {
        Some(libc::ELOOP) => untrusted(shown.clone(), "it is a symbolic link"),
        Some(libc::ENOTDIR) => untrusted(shown.clone(), "it is not a directory"),
        _ => e,
    })?;
    // The descriptor is the truth: the name may have been swapped since the lstat.
    let st =
        nix::sys::stat::fstat(folder.fd()).map_err(|e| errno_err(format!("stat {shown}"), e))?;
    if let Some(rule) = rules.broken_folder_rule(&st) {
        return Err(untrusted(shown, rule));
    }
    Ok(folder)
}

/// Opens `name` read-write if it is a trusted file of ours; `None` when missing.
fn open_own(folder: &Folder, name: &str, rules: &Rules) -> Result<Option<File>> {
    match folder.open_trusted_with(name, rules, OFlag::O_RDWR)? {
        Found::Missing => Ok(None),
        Found::Trusted(t) => Ok(Some(t.file)),
        Found::Untrusted(rule) => Err(untrusted(folder.shown(name), rule)),
    }
}

/// Removes `name` if it is a trusted file of ours (refuses anything else).
fn remove_own(folder: &Folder, name: &str, rules: &Rules) -> Result<()> {
    if open_own(folder, name, rules)?.is_some() {
        folder.unlink(name)?;
    }
    Ok(())
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::io(what, e)
}

/// Writes a new map file `header` + `batch` as `tmp`, then renames it over `map` (durable).
fn write_map_atomically(
    folder: &Folder,
    location: &Location,
    rules: &Rules,
    bytes: &[u8],
) -> Result<()> {
    let tmp = location.tmp_name();
    remove_own(folder, &tmp, rules)?;
    let f = folder.create_private(&tmp)?;
    f.write_all_at(bytes, 0)
        .and_then(|()| f.sync_all())
        .map_err(io_err(format!("write {}", folder.shown(&tmp))))?;
    folder.rename(&tmp, &location.map_name())?;
    folder.sync()
}

/// The map header of `identity`, as written at the start of the map at `map_path`.
fn encoded_header(identity: &Identity, map_path: &str) -> Result<Vec<u8>> {
    identity.header().encode().map_err(|source| {
        OverlayError::Corrupt {
            path: map_path.to_string(),
            source,
        }
        .into()
    })
}

impl Overlay {
    /// Opens the overlay of the disk `identity` describes at `location`, creating it when
    /// missing (and `options.create`). `package` is the package file's metadata (whose
    /// owner the trust rules accept).
    pub fn open_or_create(
        location: &Location,
        package: &FileStat,
        identity: &Identity,
        options: OverlayOptions,
    ) -> Result<Overlay> {
        location.check_key()?;
        if identity.base_len > MAX_CAPACITY_BYTES {
            return Err(Error::refused(
                format!("overlay of {}", identity.member),
                Refusal::TooLarge,
            ));
        }
        let rules = Rules::journal(package);
        let folder = open_folder(location, &rules, options.create)?;
        let map_name = location.map_name();
        let map_path = folder.shown(&map_name);
        let limits = Limits {
            max_runs: options.max_runs,
        };

        let map_file = match open_own(&folder, &map_name, &rules)? {
            Some(f) => f,
            None if !options.create => {
                return Err(Error::refused(
                    format!("overlay {map_path}"),
                    Refusal::NotFound,
                ));
            }
            None => {
                // A data file without a map is one a creation left (the map is made last):
                // ours, and empty of anything recorded.
                remove_own(&folder, &location.data_name(), &rules)?;
                folder.create_private(&location.data_name())?;
                let header = encoded_header(identity, &map_path)?;
                write_map_atomically(&folder, location, &rules, &header)?;
                open_own(&folder, &map_name, &rules)?
                    .ok_or_else(|| Error::refused(map_path.clone(), Refusal::NotFound))?
            }
        };
        let source = crate::io::FileSource::from_file(
            map_file
                .try_clone()
                .map_err(io_err(format!("open {map_path}")))?,
            Path::new(&map_path),
        )?;
        let replayed =
            journal::replay(&source, limits).map_err(|source| OverlayError::Corrupt {
                path: map_path.clone(),
                source,
            })?;
        let h = &replayed.header;
        if *h != identity.header() {
            return Err(OverlayError::Stale {
                path: map_path,
                made_for: Identity::describe(&h.member, h.stored_size, h.base_len, &h.fingerprint),
                now: Identity::describe(
                    &identity.member,
                    identity.stored_size,
                    identity.base_len,
                    &identity.fingerprint,
                ),
            }
            .into());
        }
        let data = match open_own(&folder, &location.data_name(), &rules)? {
            Some(f) => f,
            None if replayed.map.blocks_in(BlockState::Data) == 0 => {
                let f = folder.create_private(&location.data_name())?;
                // Its name must be durable before any record names its blocks.
                folder.sync()?;
                f
            }
            None => {
                return Err(OverlayError::DataMissing {
                    path: folder.shown(&location.data_name()),
                }
                .into());
            }
        };
        let mut map_file = map_file;
        let mut end = JournalEnd {
            at: replayed.valid_bytes,
            batch: replayed.next_batch,
        };
        let file_len = source.len();
        let worth_compacting = replayed.records > COMPACT_MIN_RECORDS
            && replayed.records
                > COMPACT_RECORDS_PER_RUN.saturating_mul(replayed.map.run_count() as u64 + 2);
        if worth_compacting {
            let mut bytes = encoded_header(identity, &map_path)?;
            let header_len = bytes.len() as u64;
            let grown = (replayed.len > identity.base_len).then_some(replayed.len);
            let records = records_of(&replayed.map, None, grown);
            bytes.extend(journal::encode_batch(1, &records));
            write_map_atomically(&folder, location, &rules, &bytes)?;
            map_file = open_own(&folder, &map_name, &rules)?
                .ok_or_else(|| Error::refused(map_path.clone(), Refusal::NotFound))?;
            debug_assert!(bytes.len() as u64 > header_len);
            end = JournalEnd {
                at: bytes.len() as u64,
                batch: 2,
            };
        } else if file_len > replayed.valid_bytes {
            // A torn tail: cut it, so that new batches follow the last committed one.
            map_file
                .set_len(replayed.valid_bytes)
                .and_then(|()| map_file.sync_all())
                .map_err(io_err(format!("truncate the torn tail of {map_path}")))?;
        }
        Ok(Overlay {
            location: location.clone(),
            rules,
            folder,
            data,
            map_file,
            base_len: identity.base_len,
            max_runs: options.max_runs,
            state: Mutex::new(State {
                map: replayed.map,
                dirty: BlockMap::new(),
                len: replayed.len,
                durable_len: replayed.len,
            }),
            busy: Mutex::new(Vec::new()),
            busy_done: Condvar::new(),
            journal_end: Mutex::new(end),
        })
    }

    /// The disk's length (the base's, or more after [`Overlay::set_len`]).
    pub fn len(&self) -> u64 {
        lock(&self.state).len
    }

    /// Whether the disk is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where the overlay lives.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Changed runs in memory now (what memory is proportional to).
    pub fn run_count(&self) -> usize {
        lock(&self.state).map.run_count()
    }

    /// Reads at `offset` over `base`: changed blocks from the data file, zero blocks as
    /// zeros, the rest from `base` (zeros past its end). Short only at the disk's end.
    pub fn read_at(&self, base: &dyn ReadAt, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let (len, segments) = {
            let st = lock(&self.state);
            let n = crate::io::clamp_len(offset, buf.len(), st.len);
            if n == 0 {
                return Ok(0);
            }
            let end = offset + n as u64;
            (n, st.map.segments(offset / BLOCK_BYTES, blocks_for(end)))
        };
        let buf = &mut buf[..len];
        for seg in segments {
            let from = (seg.first * BLOCK_BYTES).max(offset);
            let to = seg.end.saturating_mul(BLOCK_BYTES).min(offset + len as u64);
            // OK to cast: inside `buf`.
            let out = &mut buf[(from - offset) as usize..(to - offset) as usize];
            match seg.state {
                BlockState::Zero => out.fill(0),
                BlockState::Data => self.read_data(from, out)?,
                BlockState::Base => read_base(base, self.base_len, from, out)?,
            }
        }
        Ok(len)
    }

    fn read_data(&self, at: u64, out: &mut [u8]) -> Result<()> {
        let mut done = 0;
        while done < out.len() {
            let n = self
                .data
                .read_at(&mut out[done..], at + done as u64)
                .map_err(io_err(format!("read {}", self.data_path())))?;
            if n == 0 {
                // Past the data file's end: a block punched, or never made durable.
                out[done..].fill(0);
                break;
            }
            done += n;
        }
        Ok(())
    }

    fn data_path(&self) -> String {
        self.folder.shown(&self.location.data_name())
    }

    fn map_path(&self) -> String {
        self.folder.shown(&self.location.map_name())
    }

    /// Waits until no other writer holds any of blocks `[first, end)`, then holds them.
    fn hold_blocks(&self, first: u64, end: u64) -> BusyBlocks<'_> {
        let mut busy = lock(&self.busy);
        while busy.iter().any(|&(a, b)| a < end && first < b) {
            busy = self
                .busy_done
                .wait(busy)
                .unwrap_or_else(PoisonError::into_inner);
        }
        busy.push((first, end));
        BusyBlocks {
            overlay: self,
            range: (first, end),
        }
    }

    /// Refuses a change that could take the map past its bound.
    fn check_room(&self, st: &State) -> Result<()> {
        let need = BlockMap::MAX_RUNS_ADDED_BY_SET;
        if st.map.run_count() + need > self.max_runs || st.dirty.run_count() + need > self.max_runs
        {
            return Err(OverlayError::TooManyRuns {
                path: self.map_path(),
                limit: self.max_runs,
            }
            .into());
        }
        Ok(())
    }

    /// Writes `data` at `offset` (inside the disk's length; grow it first with
    /// [`Overlay::set_len`]). A block written in part is read first (from the overlay or
    /// `base`). Returns once the bytes are in the data file; durable after [`Overlay::sync`].
    pub fn write_at(&self, base: &dyn ReadAt, offset: u64, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let end = self.check_range(offset, data.len() as u64)?;
        let (first, last) = (offset / BLOCK_BYTES, blocks_for(end));
        let _held = self.hold_blocks(first, last);
        self.check_room(&lock(&self.state))?;
        self.write_held(base, offset, data)?;
        let mut st = lock(&self.state);
        st.map.set(first, last, BlockState::Data);
        st.dirty.set(first, last, BlockState::Data);
        Ok(())
    }

    /// The end of `[offset, offset + len)`, refused past the disk's length.
    fn check_range(&self, offset: u64, len: u64) -> Result<u64> {
        let end = offset
            .checked_add(len)
            .ok_or_else(|| Error::overflow("overlay write range"))?;
        if end > self.len() {
            return Err(Error::refused(
                format!(
                    "write of {len} bytes at {offset} past the end of the disk ({} bytes)",
                    self.len()
                ),
                Refusal::TooLarge,
            ));
        }
        Ok(end)
    }

    /// Writes the blocks under `[offset, offset + data.len())` to the data file (the caller
    /// holds them): a partial first or last block is merged with its current bytes.
    fn write_held(&self, base: &dyn ReadAt, offset: u64, data: &[u8]) -> Result<()> {
        let end = offset + data.len() as u64;
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let block_start = at / BLOCK_BYTES * BLOCK_BYTES;
            let in_block = at - block_start;
            if in_block == 0 && rest.len() as u64 >= BLOCK_BYTES {
                // Whole blocks: straight from the caller's buffer.
                let whole = (rest.len() as u64 / BLOCK_BYTES * BLOCK_BYTES) as usize;
                self.pwrite(&rest[..whole], at)?;
                at += whole as u64;
                rest = &rest[whole..];
                continue;
            }
            let take = ((BLOCK_BYTES - in_block) as usize).min(rest.len());
            let mut block = vec![0u8; BLOCK_BYTES as usize];
            self.read_at(base, block_start, &mut block)?;
            // OK to cast: less than BLOCK_BYTES.
            block[in_block as usize..in_block as usize + take].copy_from_slice(&rest[..take]);
            self.pwrite(&block, block_start)?;
            at += take as u64;
            rest = &rest[take..];
        }
        debug_assert_eq!(at, end);
        Ok(())
    }

    fn pwrite(&self, bytes: &[u8], at: u64) -> Result<()> {
        self.data
            .write_all_at(bytes, at)
            .map_err(io_err(format!("write {}", self.data_path())))
    }

    /// Zeros `[offset, offset + len)` (clipped to the disk): fallocate's PUNCH_HOLE (with
    /// KEEP_SIZE) and ZERO_RANGE. Blocks fully covered become `Zero` (or `Base` past the
    /// base's end, where the base reads as zeros anyway) and their bytes are punched out of
    /// the data file; a partly covered block is written with zeros where covered.
    pub fn zero_range(&self, base: &dyn ReadAt, offset: u64, len: u64) -> Result<()> {
        let disk_len = self.len();
        let end = offset.saturating_add(len).min(disk_len);
        if offset >= end {
            return Ok(());
        }
        let (first, last) = (offset / BLOCK_BYTES, blocks_for(end));
        let _held = self.hold_blocks(first, last);
        self.check_room(&lock(&self.state))?;
        // Blocks wholly inside; the disk's last block counts as whole when the range
        // reaches the disk's end.
        let whole_first = offset.div_ceil(BLOCK_BYTES);
        let whole_end = if end == disk_len {
            blocks_for(end)
        } else {
            end / BLOCK_BYTES
        };
        let mut written = Vec::new();
        if whole_first >= whole_end {
            self.write_zeros(base, offset, end)?;
            written.push((first, last));
        } else {
            if offset < whole_first * BLOCK_BYTES {
                self.write_zeros(base, offset, whole_first * BLOCK_BYTES)?;
                written.push((first, whole_first));
            }
            if whole_end * BLOCK_BYTES < end {
                self.write_zeros(base, whole_end * BLOCK_BYTES, end)?;
                written.push((whole_end, last));
            }
        }
        let mut st = lock(&self.state);
        for (a, b) in written {
            st.map.set(a, b, BlockState::Data);
            st.dirty.set(a, b, BlockState::Data);
        }
        if whole_first < whole_end {
            let base_blocks = blocks_for(self.base_len);
            let zero_end = whole_end.min(base_blocks).max(whole_first);
            st.map.set(whole_first, zero_end, BlockState::Zero);
            st.map.set(zero_end, whole_end, BlockState::Base);
            st.dirty.set(whole_first, whole_end, BlockState::Data);
            drop(st);
            self.punch(
                whole_first * BLOCK_BYTES,
                (whole_end - whole_first) * BLOCK_BYTES,
            )?;
        }
        Ok(())
    }

    /// Writes zeros over `[from, to)`, which lies inside one or two blocks (one call: a
    /// block merged twice before the map says `Data` would lose the first merge).
    fn write_zeros(&self, base: &dyn ReadAt, from: u64, to: u64) -> Result<()> {
        // OK to cast: at most two blocks.
        self.write_held(base, from, &vec![0u8; (to - from) as usize])
    }

    /// Frees the data file's bytes of blocks that no longer need them. A file system
    /// without hole punching keeps them (the map says the blocks are zero).
    fn punch(&self, at: u64, len: u64) -> Result<()> {
        let (Ok(at), Ok(len)) = (i64::try_from(at), i64::try_from(len)) else {
            return Err(Error::overflow("overlay punch range"));
        };
        let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        match nix::fcntl::fallocate(&self.data, flags, at, len) {
            Ok(()) | Err(Errno::EOPNOTSUPP) => Ok(()),
            Err(e) => Err(errno_err(
                format!("punch a hole in {}", self.data_path()),
                e,
            )),
        }
    }

    /// Grows the disk to `new_len` bytes; the new blocks read as zeros. Shrinking is
    /// refused (`Refusal::NotSupported`): a disk inside an OVA is never cut, and the blocks
    /// past a new end would have to be forgotten durably first.
    pub fn set_len(&self, new_len: u64) -> Result<()> {
        let mut st = lock(&self.state);
        if new_len < st.len {
            return Err(Error::refused(
                format!("shrinking the disk from {} to {new_len} bytes", st.len),
                Refusal::NotSupported,
            ));
        }
        if new_len > MAX_CAPACITY_BYTES {
            return Err(Error::refused(
                format!("growing the disk to {new_len} bytes (the limit is {MAX_CAPACITY_BYTES})"),
                Refusal::TooLarge,
            ));
        }
        st.len = new_len;
        Ok(())
    }

    /// The durability point: fdatasync the data file, then append and fsync the map records
    /// of every block changed (and the length, if it changed) since the last sync.
    pub fn sync(&self) -> Result<()> {
        let mut end = lock(&self.journal_end);
        // The records are taken before the data is synced: every block in them was written
        // (its write returned) before this point, so the fdatasync below covers its bytes.
        // Writes after this point are the next sync's.
        let (dirty, len, records) = {
            let mut st = lock(&self.state);
            let dirty = std::mem::take(&mut st.dirty);
            let len_changed = (st.len != st.durable_len).then_some(st.len);
            let records = records_of(&st.map, Some(&dirty), len_changed);
            (dirty, st.len, records)
        };
        if records.is_empty() {
            return Ok(());
        }
        let result = self.append(&mut end, &records);
        let mut st = lock(&self.state);
        match result {
            Ok(()) => {
                st.durable_len = st.durable_len.max(len);
                Ok(())
            }
            Err(e) => {
                // Not recorded: these blocks are still to be synced.
                for r in dirty.runs() {
                    st.dirty.set(r.first, r.end, BlockState::Data);
                }
                Err(e)
            }
        }
    }

    fn append(&self, end: &mut JournalEnd, records: &[Record]) -> Result<()> {
        self.data
            .sync_data()
            .map_err(io_err(format!("fdatasync {}", self.data_path())))?;
        // Batches of at most `max_runs` records, the most a replay accepts in one batch (a
        // sync's records can outnumber the runs: the states under each dirty range). Any
        // prefix of them is safe to keep, since every block they name is durable already.
        let mut bytes = Vec::new();
        let mut batch = end.batch;
        for chunk in records.chunks(self.max_runs.max(1)) {
            bytes.extend(journal::encode_batch(batch, chunk));
            batch += 1;
        }
        // At `end.at`, not O_APPEND: batches cut short by an error are written over.
        self.map_file
            .write_all_at(&bytes, end.at)
            .and_then(|()| self.map_file.sync_data())
            .map_err(io_err(format!("append to {}", self.map_path())))?;
        end.at += bytes.len() as u64;
        end.batch = batch;
        Ok(())
    }

    /// SEEK_DATA / SEEK_HOLE from `offset` over the base and the overlay. `base_seek` is the
    /// base's own answer for an offset inside it (`None`: no data after it). `Ok(None)`: no
    /// data past `offset` (ENXIO), or `offset` at or past the end.
    pub fn seek(
        &self,
        offset: u64,
        whence: Whence,
        base_seek: &dyn Fn(u64, Whence) -> Result<Option<u64>>,
    ) -> Result<Option<u64>> {
        let len = self.len();
        if offset >= len {
            return Ok(None);
        }
        let mut at = offset;
        while at < len {
            let (state, until) = lock(&self.state)
                .map
                .state_at(at / BLOCK_BYTES, blocks_for(len));
            let until = until.saturating_mul(BLOCK_BYTES).min(len);
            match (state, whence) {
                (BlockState::Data, Whence::Data) | (BlockState::Zero, Whence::Hole) => {
                    return Ok(Some(at));
                }
                (BlockState::Data, Whence::Hole) | (BlockState::Zero, Whence::Data) => {}
                (BlockState::Base, _) if at >= self.base_len => {
                    if whence == Whence::Hole {
                        return Ok(Some(at));
                    }
                }
                (BlockState::Base, _) => {
                    let answer = base_seek(at, whence)?
                        .or((whence == Whence::Hole).then_some(self.base_len))
                        .map(|x| x.max(at));
                    if let Some(x) = answer
                        && x < until
                    {
                        return Ok(Some(x));
                    }
                }
            }
            at = until;
        }
        Ok(match whence {
            Whence::Hole => Some(len),
            Whence::Data => None,
        })
    }

    /// The changed runs (`Data` or `Zero`), in block order; blocks of `BLOCK_BYTES`.
    pub fn changed_blocks(&self) -> Vec<Run> {
        lock(&self.state).map.runs().collect()
    }

    /// Bytes held in the data file (`Data` blocks × 4 KiB).
    pub fn changed_bytes(&self) -> u64 {
        lock(&self.state).map.blocks_in(BlockState::Data) * BLOCK_BYTES
    }

    /// Whether every change is durable (nothing written since the last sync).
    pub fn is_synced(&self) -> bool {
        let st = lock(&self.state);
        st.dirty.is_empty() && st.len == st.durable_len
    }

    /// Records, durably, that a commit is about to write this overlay's disk into the
    /// package as the image whose manifest-free identity fingerprint is `fingerprint`
    /// (`Identity::of_disk(member, new bytes, None, len)`). If the commit completes but the
    /// overlay cannot be removed (a crash between the rename and the removal), the next
    /// open finds the package holding that image and knows the overlay is in it
    /// ([`committed_marker`]); if the commit does not complete, the package still matches the
    /// overlay and the marker means nothing.
    pub fn mark_committed(&self, fingerprint: &[u8; 32]) -> Result<()> {
        let rules = self.rules;
        let name = self.location.committed_name();
        let tmp = format!("{name}.tmp");
        remove_own(&self.folder, &tmp, &rules)?;
        let f = self.folder.create_private(&tmp)?;
        f.write_all_at(hex(fingerprint).as_bytes(), 0)
            .and_then(|()| f.sync_all())
            .map_err(io_err(format!("write {}", self.folder.shown(&tmp))))?;
        self.folder.rename(&tmp, &name)?;
        self.folder.sync()
    }

    /// Throws the changes away: [`remove`] of this overlay's files.
    pub fn discard(self, package: &FileStat) -> Result<()> {
        let location = self.location.clone();
        drop(self);
        remove(&location, package).map(|_| ())
    }
}

/// The overlay folder of `location` if it exists, checked, with the rules its files must
/// pass.
fn existing_folder(location: &Location, package: &FileStat) -> Result<Option<(Folder, Rules)>> {
    location.check_key()?;
    let rules = Rules::journal(package);
    match open_folder(location, &rules, false) {
        Ok(f) => Ok(Some((f, rules))),
        Err(e) if e.refusal() == Some(Refusal::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes the overlay at `location` without opening it (for a stale overlay, or one of a
/// disk no longer mounted): the map first (without it the data file means nothing), the
/// data file, a compaction's leftover, then the folder if that leaves it empty. Only files
/// that pass the trust rules are removed; anything else is refused, naming the rule, before
/// anything is removed. `Ok(false)`: there was no overlay.
pub fn remove(location: &Location, package: &FileStat) -> Result<bool> {
    let Some((folder, rules)) = existing_folder(location, package)? else {
        return Ok(false);
    };
    let names = [
        location.map_name(),
        location.data_name(),
        location.tmp_name(),
        location.committed_name(),
        format!("{}.tmp", location.committed_name()),
    ];
    let mut found = false;
    for name in &names {
        // Check all before removing any.
        found |= open_own(&folder, name, &rules)?.is_some();
    }
    for name in &names {
        remove_own(&folder, name, &rules)?;
    }
    folder.sync()?;
    match std::fs::remove_dir(&location.folder) {
        Ok(()) => Ok(found),
        Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => Ok(found),
        Err(e) => Err(Error::io(
            format!("remove folder {}", location.folder.display()),
            e,
        )),
    }
}

/// Whether an overlay (its map) exists at `location`: a missing folder or map is `false`,
/// an untrusted one an error.
pub fn exists(location: &Location, package: &FileStat) -> Result<bool> {
    let Some((folder, rules)) = existing_folder(location, package)? else {
        return Ok(false);
    };
    Ok(open_own(&folder, &location.map_name(), &rules)?.is_some())
}

/// The fingerprint [`Overlay::mark_committed`] recorded at `location`, if any (a marker that
/// is not 64 hex digits is no marker).
pub fn committed_marker(location: &Location, package: &FileStat) -> Result<Option<[u8; 32]>> {
    let Some((folder, rules)) = existing_folder(location, package)? else {
        return Ok(None);
    };
    let Some(file) = open_own(&folder, &location.committed_name(), &rules)? else {
        return Ok(None);
    };
    let mut text = [0u8; 64];
    let n = file
        .read_at(&mut text, 0)
        .map_err(io_err(folder.shown(&location.committed_name())))?;
    let mut out = [0u8; 32];
    for (i, pair) in text[..n].chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        match (pair, out.get_mut(i)) {
            ([a, b], Some(o)) => match (digit(*a), digit(*b)) {
                // OK to cast: two hex digits.
                (Some(a), Some(b)) => *o = (a * 16 + b) as u8,
                _ => return Ok(None),
            },
            _ => return Ok(None),
        }
    }
    Ok((n == 64).then_some(out))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The records that say the state of the blocks in `only` (every changed block when
/// `None`), preceded by a Length record when `len` is given.
fn records_of(map: &BlockMap, only: Option<&BlockMap>, len: Option<u64>) -> Vec<Record> {
    let mut out = Vec::new();
    if let Some(len) = len {
        out.push(Record {
            kind: Kind::Length,
            batch: 0,
            a: len,
            b: 0,
        });
    }
    let set = |r: Run| Record {
        kind: Kind::Set(r.state),
        batch: 0,
        a: r.first,
        b: r.blocks(),
    };
    match only {
        None => out.extend(map.runs().map(set)),
        Some(dirty) => {
            for d in dirty.runs() {
                out.extend(map.segments(d.first, d.end).into_iter().map(set));
            }
        }
    }
    out
}

/// Reads `out.len()` bytes of `base` at `at`, zeros past `base_len`.
fn read_base(base: &dyn ReadAt, base_len: u64, at: u64, out: &mut [u8]) -> Result<()> {
    let n = crate::io::clamp_len(at, out.len(), base_len.min(base.len()));
    if n > 0 {
        base.read_exact_at(at, &mut out[..n])?;
    }
    out[n..].fill(0);
    Ok(())
}
