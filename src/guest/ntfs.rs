//! NTFS, read with the ntfs crate (0.4.0): resident and non-resident `$DATA`, sparse runs
//! (zeros), attribute lists, hard links; compressed and encrypted files are refused with
//! [`NtfsFsError::Unsupported`] (the crate would return their stored bytes, not their
//! contents); named data streams (ADS) are ignored. Symbolic links as ntfs-3g makes them
//! (Interix style: a file with the system attribute whose data is `IntxLNK\1` and the
//! target in UTF-16) are [`EntryKind::Symlink`]; Interix FIFOs, sockets and devices, and
//! every reparse point (Windows symbolic links, junctions, deduplicated files) are listed
//! as [`EntryKind::Other`] and never read.
//!
//! What ntfs-3g shows by default is shown: names in the Win32 or POSIX namespace (not the
//! DOS 8.3 aliases), the system files (records below 16) hidden, modes 0777 (ntfs-3g's
//! default `umask=0`; like ntfs-3g, the read-only attribute does not show in them), owner
//! and group 0, the record's link count, the modification time of `$STANDARD_INFORMATION`.
//!
//! The crate's `Ntfs` is plain data (`Send + Sync`) and takes the reader per call, so no
//! thread of its own is needed: the state sits behind a mutex and each request runs inside
//! `catch_unwind` on the caller's thread. The crate slices its records with indexes it
//! reads from them (`record.data()[start..]` and the like), so a corrupt image can make it
//! panic; after a caught panic the file system fails every request. The reader gives each
//! request a budget of bytes, so that a loop in an index (a subnode pointing back) ends
//! in an error.

use std::io::{self, Read, Seek, SeekFrom};
use std::num::NonZeroUsize;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use lru::LruCache;
use ntfs::structured_values::{NtfsFileAttributeFlags, NtfsFileNamespace};
use ntfs::{Ntfs, NtfsAttributeFlags, NtfsAttributeType, NtfsError, NtfsFile, NtfsReadSeek};

use crate::error::{Error, ErrorKind, Refusal, Result};
use crate::guest::{EntryKind, GuestEntry, GuestFs, GuestStat, MAX_DIR_ENTRIES};
use crate::io::ReadAt;

/// The OEM name of an NTFS boot sector.
const OEM: &[u8; 8] = b"NTFS    ";
/// The first record of a user file; those below are the file system's own.
const FIRST_USER_RECORD: u64 = 16;
/// The root directory's record.
const ROOT_RECORD: u64 = 5;
/// Bytes one request may read besides what it returns: index records of every folder of
/// its path, file records, data runs.
const BUDGET: u64 = 256 << 20;
/// Directory listings kept.
const LISTINGS: usize = 8;
/// Mode bits ntfs-3g shows by default.
const MODE: u32 = 0o777;
/// Seconds from 1601-01-01 (NTFS's epoch) to 1970-01-01.
const NT_TO_UNIX_SECS: u64 = 11_644_473_600;
/// The magic that starts an Interix symbolic link's data; the UTF-16LE target follows.
const INTX_LINK: &[u8; 8] = b"IntxLNK\x01";
/// The magics of Interix character and block devices (major and minor, u64 each, follow).
const INTX_DEVICES: [&[u8; 8]; 2] = [b"IntxCHR\0", b"IntxBLK\0"];
/// The size of an Interix device file.
const INTX_DEVICE_SIZE: u64 = 24;
/// The largest Interix file ntfs-3g decodes: the magic and `PATH_MAX` UTF-16 units.
const INTX_MAX: u64 = 8 + 2 * 4096;

/// What goes wrong reading an NTFS file system, besides a missing path or a wrong kind.
#[derive(Debug, thiserror::Error)]
pub enum NtfsFsError {
    /// The ntfs crate refused the file system or a path of it.
    #[error("NTFS: {0}")]
    Crate(#[source] NtfsError),
    /// A file stored in a way this reader does not decode.
    #[error("NTFS: {0} files are not supported")]
    Unsupported(&'static str),
    /// A request read more than [`BUDGET`] (a loop in an index?).
    #[error("NTFS: the request read more than its budget (a loop in the file system?)")]
    Budget,
    /// The reader panicked on this file system earlier (or just now); it reads nothing more.
    #[error("NTFS: the file system failed earlier (the reader panicked on corrupt data)")]
    Failed,
}

impl From<NtfsFsError> for Error {
    fn from(e: NtfsFsError) -> Self {
        Error::layer(e)
    }
}

/// Whether `source` starts with an NTFS boot sector (its OEM name and signature).
pub fn probe(source: &dyn ReadAt) -> bool {
    let mut boot = [0u8; 512];
    if source.read_exact_at(0, &mut boot).is_err() {
        return false;
    }
    boot[3..11] == *OEM && boot[510..] == [0x55, 0xAA]
}

/// Opens the NTFS file system in `source` (its boot sector is read now).
pub fn open(source: Arc<dyn ReadAt>) -> Result<Arc<dyn GuestFs>> {
    let mut reader = Reader {
        source,
        pos: 0,
        budget: BUDGET,
    };
    let ntfs = match catch_unwind(AssertUnwindSafe(|| Ntfs::new(&mut reader))) {
        Ok(r) => r.map_err(convert)?,
        Err(_) => return Err(NtfsFsError::Failed.into()),
    };
    let listings = LruCache::new(NonZeroUsize::new(LISTINGS).unwrap_or(NonZeroUsize::MIN));
    Ok(Arc::new(NtfsFs {
        state: Mutex::new(Some(State {
            ntfs,
            reader,
            listings,
        })),
    }))
}

/// The crate's reader: `Read + Seek` over [`ReadAt`], failing once a request's budget
/// is spent.
struct Reader {
    source: Arc<dyn ReadAt>,
    pos: u64,
    budget: u64,
}

/// The error a read gives once the budget is spent.
#[derive(Debug, thiserror::Error)]
#[error("budget spent")]
struct BudgetSpent;

impl Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len() as u64;
        if want > self.budget {
            return Err(io::Error::other(BudgetSpent));
        }
        self.budget -= want;
        let n = self
            .source
            .read_at(self.pos, buf)
            .map_err(io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Reader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.source.len().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos =
            pos.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek out of range"))?;
        Ok(self.pos)
    }
}

/// One entry of a directory: its name and file record.
#[derive(Debug, Clone)]
struct Entry {
    name: Vec<u8>,
    record: u64,
    dir: bool,
}

/// The file system and what it keeps between requests.
struct State {
    ntfs: Ntfs,
    reader: Reader,
    listings: LruCache<Vec<Vec<u8>>, Arc<Vec<Entry>>>,
}

/// The `Send + Sync` handle of one opened NTFS file system; `None` inside once the crate
/// panicked.
pub struct NtfsFs {
    state: Mutex<Option<State>>,
}

impl NtfsFs {
    /// Runs `f` on the state inside `catch_unwind`, with a fresh budget; a panic (or a
    /// poisoned lock) leaves the file system failed.
    fn call<T>(&self, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let mut guard = self.state.lock().map_err(|_| NtfsFsError::Failed)?;
        let Some(state) = guard.as_mut() else {
            return Err(NtfsFsError::Failed.into());
        };
        state.reader.budget = BUDGET;
        match catch_unwind(AssertUnwindSafe(|| f(state))) {
            Ok(r) => r,
            Err(_) => {
                log::error!(
                    "NTFS: the reader panicked on corrupt data; this file system now fails every request"
                );
                *guard = None;
                Err(NtfsFsError::Failed.into())
            }
        }
    }
}

impl GuestFs for NtfsFs {
    fn type_name(&self) -> &'static str {
        "ntfs"
    }

    fn stat(&self, path: &[Vec<u8>]) -> Result<GuestStat> {
        self.call(|s| s.stat(path))
    }

    fn read_dir(&self, path: &[Vec<u8>]) -> Result<Vec<GuestEntry>> {
        self.call(|s| {
            let listing = s.listing(path)?;
            Ok(listing
                .iter()
                .map(|e| GuestEntry {
                    name: e.name.clone(),
                    kind: if e.dir {
                        EntryKind::Dir
                    } else {
                        EntryKind::File
                    },
                })
                .collect())
        })
        .and_then(|entries| self.fix_kinds(path, entries))
    }

    fn read(&self, path: &[Vec<u8>], offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.call(|s| s.read(path, offset, buf))
    }

    fn read_link(&self, path: &[Vec<u8>]) -> Result<Vec<u8>> {
        self.call(|s| s.read_link(path))
    }
}

impl NtfsFs {
    /// The kinds of the entries of `path` as [`GuestFs::stat`] says (symbolic links and
    /// special files, which the index's flags do not tell).
    fn fix_kinds(&self, path: &[Vec<u8>], mut entries: Vec<GuestEntry>) -> Result<Vec<GuestEntry>> {
        for e in &mut entries {
            if e.kind == EntryKind::File {
                let mut p = path.to_vec();
                p.push(e.name.clone());
                e.kind = self.stat(&p)?.kind;
            }
        }
        Ok(entries)
    }
}

impl State {
    /// What `path` is.
    fn stat(&mut self, path: &[Vec<u8>]) -> Result<GuestStat> {
        let record = self.resolve(path)?;
        let file = self.ntfs.file(&mut self.reader, record).map_err(convert)?;
        let info = file.info().map_err(convert)?;
        let attrs = info.file_attributes();
        let (kind, size) = match shape(&mut self.reader, &file, attrs)? {
            Shape::Dir => (EntryKind::Dir, index_size(&mut self.reader, &file)?),
            Shape::File => (EntryKind::File, data_size(&mut self.reader, &file)?),
            Shape::Symlink(target) => (EntryKind::Symlink, target.len() as u64),
            Shape::Other => (EntryKind::Other, data_size(&mut self.reader, &file)?),
        };
        Ok(GuestStat {
            kind,
            size,
            mode: MODE,
            uid: 0,
            gid: 0,
            mtime: nt_time(info.modification_time().nt_timestamp()),
            nlink: u32::from(file.hard_link_count()).max(1),
        })
    }

    /// Up to `buf.len()` bytes of regular file `path` from `offset`.
    fn read(&mut self, path: &[Vec<u8>], offset: u64, buf: &mut [u8]) -> Result<usize> {
        let record = self.resolve(path)?;
        let file = self.ntfs.file(&mut self.reader, record).map_err(convert)?;
        let info = file.info().map_err(convert)?;
        match shape(&mut self.reader, &file, info.file_attributes())? {
            Shape::File => {}
            Shape::Dir => return Err(refused(path, Refusal::IsAFolder)),
            Shape::Symlink(_) | Shape::Other => {
                return Err(refused(path, Refusal::InvalidArgument));
            }
        }
        // What the caller gets back may be read besides the budget.
        self.reader.budget = self.reader.budget.saturating_add(buf.len() as u64);
        read_data(&mut self.reader, &file, offset, buf)
    }

    /// The target of symbolic link `path`.
    fn read_link(&mut self, path: &[Vec<u8>]) -> Result<Vec<u8>> {
        let record = self.resolve(path)?;
        let file = self.ntfs.file(&mut self.reader, record).map_err(convert)?;
        let info = file.info().map_err(convert)?;
        match shape(&mut self.reader, &file, info.file_attributes())? {
            Shape::Symlink(target) => Ok(target),
            _ => Err(refused(path, Refusal::InvalidArgument)),
        }
    }
}

/// What a file record is, as ntfs-3g shows it.
enum Shape {
    Dir,
    File,
    /// An Interix symbolic link and its target (UTF-8).
    Symlink(Vec<u8>),
    /// A reparse point, an Interix FIFO, socket or device.
    Other,
}

/// What `file` (with attributes `attrs`) is. ntfs-3g's rules (`ntfs_fuse_getstat`): a
/// reparse point is never a plain file; a non-folder with the system attribute is an
/// Interix special file when its data says so: empty = FIFO, one byte = socket (both
/// only when not hidden), `IntxCHR`/`IntxBLK` + 16 bytes = device, `IntxLNK\1` + UTF-16
/// = symbolic link; otherwise it is a regular file.
fn shape(reader: &mut Reader, file: &NtfsFile<'_>, attrs: NtfsFileAttributeFlags) -> Result<Shape> {
    if attrs.contains(NtfsFileAttributeFlags::REPARSE_POINT) {
        return Ok(Shape::Other);
    }
    if file.is_directory() {
        return Ok(Shape::Dir);
    }
    if !attrs.contains(NtfsFileAttributeFlags::SYSTEM) {
        return Ok(Shape::File);
    }
    let size = data_size(reader, file)?;
    if size <= 1 {
        let hidden = attrs.contains(NtfsFileAttributeFlags::HIDDEN);
        return Ok(if hidden { Shape::File } else { Shape::Other });
    }
    if size <= INTX_LINK.len() as u64 || size > INTX_MAX {
        return Ok(Shape::File);
    }
    // Bounded by INTX_MAX above.
    let mut data = vec![0u8; usize::try_from(size).unwrap_or(0)];
    let n = match read_data(reader, file, 0, &mut data) {
        Ok(n) => n,
        // A compressed or encrypted system file: shown as the file it is, refused on read.
        Err(e)
            if e.layer_error::<NtfsFsError>()
                .is_some_and(|e| matches!(e, NtfsFsError::Unsupported(_))) =>
        {
            return Ok(Shape::File);
        }
        Err(e) => return Err(e),
    };
    let data = data.get(..n).unwrap_or_default();
    let Some((magic, rest)) = data.split_first_chunk::<8>() else {
        return Ok(Shape::File);
    };
    if INTX_DEVICES.contains(&magic) && size == INTX_DEVICE_SIZE {
        return Ok(Shape::Other);
    }
    if magic != INTX_LINK {
        return Ok(Shape::File);
    }
    let units: Vec<u16> = rest
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect();
    let target = String::from_utf16_lossy(&units).into_bytes();
    // A target no path can be (empty, or with a NUL) is shown but not followed.
    if target.is_empty() || target.contains(&0) {
        return Ok(Shape::Other);
    }
    Ok(Shape::Symlink(target))
}

/// Up to `buf.len()` bytes of the unnamed `$DATA` of `file` from `offset` (none: empty);
/// compressed and encrypted data are refused.
fn read_data(
    reader: &mut Reader,
    file: &NtfsFile<'_>,
    offset: u64,
    buf: &mut [u8],
) -> Result<usize> {
    let Some(item) = file.data(reader, "") else {
        return Ok(0); // No unnamed $DATA: an empty file.
    };
    let item = item.map_err(convert)?;
    let attribute = item.to_attribute().map_err(convert)?;
    let flags = attribute.flags();
    if flags.contains(NtfsAttributeFlags::COMPRESSED) {
        return Err(NtfsFsError::Unsupported("compressed").into());
    }
    if flags.contains(NtfsAttributeFlags::ENCRYPTED) {
        return Err(NtfsFsError::Unsupported("encrypted").into());
    }
    let mut value = attribute.value(reader).map_err(convert)?;
    let len = value.len();
    if offset >= len {
        return Ok(0);
    }
    let want = usize::try_from(len - offset)
        .unwrap_or(usize::MAX)
        .min(buf.len());
    value
        .seek(reader, SeekFrom::Start(offset))
        .map_err(convert)?;
    let mut done = 0;
    while let Some(rest) = buf.get_mut(done..want) {
        if rest.is_empty() {
            break;
        }
        let n = value.read(reader, rest).map_err(convert)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

/// The length of the unnamed `$DATA` of `file` (0 without one).
fn data_size(reader: &mut Reader, file: &NtfsFile<'_>) -> Result<u64> {
    match file.data(reader, "") {
        None => Ok(0),
        Some(item) => {
            let item = item.map_err(convert)?;
            Ok(item.to_attribute().map_err(convert)?.value_length())
        }
    }
}

/// The length of the `$INDEX_ALLOCATION` of directory `file` (0 for a small one), the
/// size ntfs-3g reports.
fn index_size(reader: &mut Reader, file: &NtfsFile<'_>) -> Result<u64> {
    let mut attributes = file.attributes();
    while let Some(item) = attributes.next(reader) {
        let item = item.map_err(convert)?;
        let attribute = item.to_attribute().map_err(convert)?;
        if attribute.ty().map_err(convert)? == NtfsAttributeType::IndexAllocation {
            return Ok(attribute.value_length());
        }
    }
    Ok(0)
}

impl State {
    /// The file record of `path`.
    fn resolve(&mut self, path: &[Vec<u8>]) -> Result<u64> {
        let Some((name, parent)) = path.split_last() else {
            return Ok(ROOT_RECORD);
        };
        let listing = self.listing(parent)?;
        listing
            .iter()
            .find(|e| e.name == *name)
            .map(|e| e.record)
            .ok_or_else(|| refused(path, Refusal::NotFound))
    }

    /// The entries of directory `path`, kept or read from its index.
    fn listing(&mut self, path: &[Vec<u8>]) -> Result<Arc<Vec<Entry>>> {
        if let Some(listing) = self.listings.get(path) {
            return Ok(listing.clone());
        }
        let record = self.resolve(path)?;
        let dir = self.ntfs.file(&mut self.reader, record).map_err(convert)?;
        if !dir.is_directory() {
            return Err(refused(path, Refusal::NotAFolder));
        }
        let index = dir.directory_index(&mut self.reader).map_err(convert)?;
        let mut entries = index.entries();
        let mut out = Vec::new();
        while let Some(entry) = entries.next(&mut self.reader) {
            let entry = entry.map_err(convert)?;
            let record = entry.file_reference().file_record_number();
            let Some(key) = entry.key() else { continue };
            let key = key.map_err(convert)?;
            if record < FIRST_USER_RECORD || key.namespace() == NtfsFileNamespace::Dos {
                continue;
            }
            let name = key.name().to_string_lossy().into_bytes();
            if name.is_empty()
                || name.contains(&b'/')
                || name.contains(&0)
                || name == b"."
                || name == b".."
            {
                continue;
            }
            if out.len() == MAX_DIR_ENTRIES {
                return Err(ErrorKind::LimitExceeded {
                    what: "NTFS directory entries",
                    value: MAX_DIR_ENTRIES as u64 + 1,
                    limit: MAX_DIR_ENTRIES as u64,
                }
                .into());
            }
            out.push(Entry {
                name,
                record,
                dir: key.is_directory(),
            });
        }
        let listing = Arc::new(out);
        self.listings.put(path.to_vec(), listing.clone());
        Ok(listing)
    }
}

/// The time of an NTFS timestamp (100 ns units since 1601), clamped to what
/// `SystemTime` can say.
fn nt_time(ts: u64) -> SystemTime {
    let secs = ts / 10_000_000;
    let nanos = u32::try_from((ts % 10_000_000) * 100).unwrap_or(0);
    let t = if secs >= NT_TO_UNIX_SECS {
        SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs - NT_TO_UNIX_SECS, nanos))
    } else {
        SystemTime::UNIX_EPOCH
            .checked_sub(Duration::from_secs(NT_TO_UNIX_SECS - secs))
            .and_then(|t| t.checked_add(Duration::new(0, nanos)))
    };
    t.unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The refusal `reason` for `path`.
fn refused(path: &[Vec<u8>], reason: Refusal) -> Error {
    let shown: Vec<String> = path
        .iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    Error::refused(format!("/{}", shown.join("/")), reason)
}

/// ovafs's error for the crate's `e`: the source's own error or the spent budget taken
/// back out of it, else the crate's.
fn convert(e: NtfsError) -> Error {
    let NtfsError::Io(io) = e else {
        return NtfsFsError::Crate(e).into();
    };
    if io.get_ref().is_some_and(|i| i.is::<BudgetSpent>()) {
        return NtfsFsError::Budget.into();
    }
    if io.get_ref().is_some_and(|i| i.is::<Error>()) {
        if let Some(Ok(inner)) = io.into_inner().map(|i| i.downcast::<Error>()) {
            return *inner;
        }
        return NtfsFsError::Crate(NtfsError::Io(io::Error::other("unreadable source"))).into();
    }
    NtfsFsError::Crate(NtfsError::Io(io)).into()
}
