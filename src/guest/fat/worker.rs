//! The thread that owns one fatfs `FileSystem` and answers requests for it, each inside
//! `catch_unwind`, with what it keeps between requests: listings of directories and the
//! cluster runs of files.
//!
//! fatfs is used for what it does well, decoding directories (long names and their
//! checksums, short names with the NT lower-case flags, attributes, sizes, times). Paths
//! are resolved here, by exact name, and every directory chain is checked by
//! [`super::table`] before fatfs walks it. File bytes are read here from the runs
//! [`super::table`] computed, not through fatfs's `File`, whose every seek walks the chain
//! from the start and which a cached reader could not keep (it borrows the file system).

use std::cell::Cell;
use std::num::NonZeroUsize;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, SystemTime};

use fatfs::{Dir, DirEntry, FileSystem, FsOptions};
use lru::LruCache;

use super::boot::{FatType, Geometry};
use super::cp437::CP437;
use super::table::{MAX_DIR_BYTES, Run, Table};
use super::volume::{BudgetSpent, Volume};
use super::{FatFsError, Job};
use crate::error::{Error, ErrorKind, Refusal, Result};
use crate::guest::{EntryKind, GuestEntry, GuestStat, MAX_DIR_ENTRIES};
use crate::io::ReadAt;

/// Directory listings kept (each at most 65,536 entries: a few MiB at worst).
const LISTINGS: usize = 8;
/// Files whose runs are kept.
const FILES: usize = 64;
/// Bytes fatfs may read per directory a request visits: the directory itself and the FAT
/// entries of its chain, with room to spare.
const BUDGET_PER_DIR: u64 = 2 * MAX_DIR_BYTES;
/// Bytes fatfs may read while loading (the boot sector and FAT32's FSInfo sector).
const LOAD_BUDGET: u64 = 64 << 10;
/// Mode bits the Linux vfat driver shows by default (fmask = dmask = umask 022).
const MODE: u32 = 0o755;
/// Write bits, cleared for a file with the read-only attribute (as Linux does; not for a
/// directory without `-o rodir`).
const WRITE_BITS: u32 = 0o222;
/// The read-only attribute.
const ATTR_READ_ONLY: u8 = 0x01;

/// One entry of a directory, as decoded by fatfs.
#[derive(Debug, Clone)]
struct Entry {
    name: Vec<u8>,
    dir: bool,
    attrs: u8,
    size: u32,
    first: u32,
    mtime: SystemTime,
}

/// The thread's side: the file system and what it keeps between requests.
pub struct State {
    fs: FileSystem<Volume>,
    geo: Geometry,
    source: Arc<dyn ReadAt>,
    budget: Rc<Cell<u64>>,
    listings: LruCache<Vec<Vec<u8>>, Rc<Vec<Entry>>>,
    files: LruCache<Vec<Vec<u8>>, Rc<Vec<Run>>>,
}

/// Loads the file system on a new thread and returns where to send its requests.
pub fn spawn(source: Arc<dyn ReadAt>, geo: Geometry) -> Result<mpsc::Sender<Job>> {
    let (jobs, inbox) = mpsc::channel::<Job>();
    let (loaded, load_result) = mpsc::sync_channel::<Result<()>>(1);
    std::thread::Builder::new()
        .name("ovafs-fat".into())
        .spawn(move || serve(source, geo, inbox, loaded))
        .map_err(FatFsError::Thread)?;
    load_result
        .recv()
        .unwrap_or_else(|_| Err(FatFsError::Failed.into()))?;
    Ok(jobs)
}

/// The thread: loads, reports the outcome, then answers jobs until the handle is dropped.
fn serve(
    source: Arc<dyn ReadAt>,
    geo: Geometry,
    inbox: Receiver<Job>,
    loaded: mpsc::SyncSender<Result<()>>,
) {
    let budget = Rc::new(Cell::new(LOAD_BUDGET));
    let volume = Volume::new(source.clone(), budget.clone());
    let options = FsOptions::new().oem_cp_converter(&CP437);
    let fs = match catch_unwind(AssertUnwindSafe(|| FileSystem::new(volume, options))) {
        Ok(Ok(fs)) => fs,
        Ok(Err(e)) => {
            let _ = loaded.send(Err(convert(e)));
            return;
        }
        Err(_) => {
            log::error!("FAT: fatfs panicked loading the file system; it is not opened");
            let _ = loaded.send(Err(FatFsError::Failed.into()));
            return;
        }
    };
    if loaded.send(Ok(())).is_err() {
        return;
    }
    let mut state = State {
        fs,
        geo,
        source,
        budget,
        listings: LruCache::new(NonZeroUsize::new(LISTINGS).unwrap_or(NonZeroUsize::MIN)),
        files: LruCache::new(NonZeroUsize::new(FILES).unwrap_or(NonZeroUsize::MIN)),
    };
    let mut failed = false;
    for job in inbox {
        if failed {
            // Dropping the job drops its reply channel: the caller gets `Failed`.
            continue;
        }
        if catch_unwind(AssertUnwindSafe(|| job(&mut state))).is_err() {
            log::error!(
                "FAT: fatfs panicked on corrupt data; this file system now fails every request"
            );
            failed = true;
        }
    }
}

impl State {
    /// What `path` is.
    pub fn stat(&mut self, path: &[Vec<u8>]) -> Result<GuestStat> {
        let Some((name, parent)) = path.split_last() else {
            let bytes = match self.geo.fat_type {
                FatType::Fat32 => self.dir_bytes(self.geo.root_cluster)?,
                _ => self.geo.root_bytes,
            };
            return Ok(dir_stat(bytes, SystemTime::UNIX_EPOCH));
        };
        let entry = self.lookup(parent, name)?;
        if entry.dir {
            let bytes = self.dir_bytes(entry.first)?;
            return Ok(dir_stat(bytes, entry.mtime));
        }
        let mode = if entry.attrs & ATTR_READ_ONLY != 0 {
            MODE & !WRITE_BITS
        } else {
            MODE
        };
        Ok(GuestStat {
            kind: EntryKind::File,
            size: u64::from(entry.size),
            mode,
            uid: 0,
            gid: 0,
            mtime: entry.mtime,
            nlink: 1,
        })
    }

    /// The entries of directory `path`.
    pub fn read_dir(&mut self, path: &[Vec<u8>]) -> Result<Vec<GuestEntry>> {
        if let Some((name, parent)) = path.split_last()
            && !self.lookup(parent, name)?.dir
        {
            return Err(refused(path, Refusal::NotAFolder));
        }
        let listing = self.listing(path)?;
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
    }

    /// Up to `len` bytes of regular file `path` from `offset` (fewer only at its end).
    pub fn read(&mut self, path: &[Vec<u8>], offset: u64, len: usize) -> Result<Vec<u8>> {
        let Some((name, parent)) = path.split_last() else {
            return Err(refused(path, Refusal::IsAFolder));
        };
        let entry = self.lookup(parent, name)?;
        if entry.dir {
            return Err(refused(path, Refusal::IsAFolder));
        }
        let size = u64::from(entry.size);
        let runs = match self.files.get(path) {
            Some(runs) => runs.clone(),
            None => {
                let runs =
                    Rc::new(Table::new(&self.geo, &*self.source).file_runs(entry.first, size)?);
                self.files.put(path.to_vec(), runs.clone());
                runs
            }
        };
        let want = usize::try_from(size.saturating_sub(offset))
            .unwrap_or(usize::MAX)
            .min(len);
        let mut data = vec![0u8; want];
        read_runs(&self.geo, &*self.source, &runs, offset, &mut data)?;
        Ok(data)
    }

    /// FAT has no symbolic links: an existing path is refused as not being one.
    pub fn read_link(&mut self, path: &[Vec<u8>]) -> Result<Vec<u8>> {
        self.stat(path)?;
        Err(refused(path, Refusal::InvalidArgument))
    }

    /// The entry `name` of directory `parent`.
    fn lookup(&mut self, parent: &[Vec<u8>], name: &[u8]) -> Result<Entry> {
        let listing = self.listing(parent)?;
        listing
            .iter()
            .find(|e| e.name == name)
            .cloned()
            .ok_or_else(|| Error::refused(String::from_utf8_lossy(name), Refusal::NotFound))
    }

    /// Bytes of the directory whose chain starts at `first` (as Linux reports its size).
    fn dir_bytes(&self, first: u32) -> Result<u64> {
        let runs = Table::new(&self.geo, &*self.source).dir_runs(first)?;
        let clusters: u64 = runs.iter().map(|r| u64::from(r.count)).sum();
        Ok(clusters * self.geo.cluster_bytes)
    }

    /// The entries of directory `path`, kept or read.
    fn listing(&mut self, path: &[Vec<u8>]) -> Result<Rc<Vec<Entry>>> {
        if let Some(listing) = self.listings.get(path) {
            return Ok(listing.clone());
        }
        let dirs = u64::try_from(path.len())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        self.budget.set(dirs.saturating_mul(BUDGET_PER_DIR));
        let dir = open_dir(&self.fs, &self.geo, &*self.source, path)?;
        let listing = Rc::new(entries(&dir, self.fs.fat_type() == fatfs::FatType::Fat32)?);
        self.listings.put(path.to_vec(), listing.clone());
        Ok(listing)
    }
}

/// The stat of a directory of `bytes` bytes.
fn dir_stat(bytes: u64, mtime: SystemTime) -> GuestStat {
    GuestStat {
        kind: EntryKind::Dir,
        size: bytes,
        mode: MODE,
        uid: 0,
        gid: 0,
        mtime,
        nlink: 1,
    }
}

/// fatfs's directory `path`, each step's chain checked before fatfs follows it.
fn open_dir<'a>(
    fs: &'a FileSystem<Volume>,
    geo: &Geometry,
    source: &dyn ReadAt,
    path: &[Vec<u8>],
) -> Result<Dir<'a, Volume>> {
    if geo.fat_type == FatType::Fat32 {
        Table::new(geo, source).dir_runs(geo.root_cluster)?;
    }
    let fat32 = geo.fat_type == FatType::Fat32;
    let mut dir = fs.root_dir();
    for (depth, name) in path.iter().enumerate() {
        let here = path.get(..=depth).unwrap_or(path);
        let mut found = None;
        for (count, raw) in dir.iter().enumerate() {
            if count > MAX_DIR_ENTRIES {
                return Err(too_many());
            }
            let raw = raw.map_err(convert)?;
            let entry = decode(&raw, fat32)?;
            if entry.as_ref().is_some_and(|e| e.name == *name) {
                found = entry.map(|e| (e, raw));
                break;
            }
        }
        let Some((entry, raw)) = found else {
            return Err(refused(here, Refusal::NotFound));
        };
        if !entry.dir {
            return Err(refused(here, Refusal::NotAFolder));
        }
        // A first cluster of 0 would make fatfs open the root directory instead.
        Table::new(geo, source).dir_runs(entry.first)?;
        dir = raw.to_dir();
    }
    Ok(dir)
}

/// The entries of `dir` without `.`, `..` and names ovafs cannot show.
fn entries(dir: &Dir<'_, Volume>, fat32: bool) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    for raw in dir.iter() {
        let raw = raw.map_err(convert)?;
        if let Some(entry) = decode(&raw, fat32)? {
            if out.len() == MAX_DIR_ENTRIES {
                return Err(too_many());
            }
            out.push(entry);
        }
    }
    Ok(out)
}

/// ovafs's entry of fatfs's `raw`, `None` for `.`, `..` and a name that cannot be a path
/// component (empty, holding `/` or NUL: only a corrupt long name can).
fn decode(raw: &DirEntry<'_, Volume>, fat32: bool) -> Result<Option<Entry>> {
    let name = raw.file_name().into_bytes();
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Ok(None);
    }
    let first = first_cluster(raw, fat32)?;
    Ok(Some(Entry {
        name,
        dir: raw.is_dir(),
        attrs: raw.attributes().bits(),
        size: u32::try_from(raw.len()).unwrap_or(u32::MAX),
        first,
        mtime: fat_time(raw.modified()),
    }))
}

/// The first cluster of `raw`. fatfs 0.3.6 keeps it crate-private; its `Debug` output is
/// the derived one of the raw directory entry, which names the two halves, so they are
/// read from there (the version is pinned; the tests read every file through this). The
/// high half counts on FAT32 only, as in fatfs and Linux.
fn first_cluster(raw: &DirEntry<'_, Volume>, fat32: bool) -> Result<u32> {
    let text = format!("{raw:?}");
    let lo = debug_field(&text, "first_cluster_lo: ");
    let hi = debug_field(&text, "first_cluster_hi: ");
    match (lo, hi) {
        (Some(lo), Some(hi)) => Ok(if fat32 { (hi << 16) | lo } else { lo }),
        _ => Err(FatFsError::Crate(std::io::Error::other(
            "cannot read a directory entry's first cluster from fatfs",
        ))
        .into()),
    }
}

/// The decimal `u16` following `field` in `text`.
fn debug_field(text: &str, field: &str) -> Option<u32> {
    let (_, rest) = text.split_once(field)?;
    let digits = rest.split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse::<u16>().ok().map(u32::from)
}

/// Fills `data` from byte `offset` of the file made of `runs`.
fn read_runs(
    geo: &Geometry,
    source: &dyn ReadAt,
    runs: &[Run],
    offset: u64,
    data: &mut [u8],
) -> Result<()> {
    let cs = geo.cluster_bytes;
    let mut done = 0usize;
    while done < data.len() {
        let at = offset + done as u64;
        let index = at / cs;
        let run_at = runs.partition_point(|r| r.index + u64::from(r.count) <= index);
        let Some(run) = runs.get(run_at) else {
            return Err(FatFsError::Chain("a read past the file's clusters").into());
        };
        let cluster = u64::from(run.first) + (index - run.index);
        let cluster = u32::try_from(cluster).map_err(|_| Error::overflow("FAT cluster"))?;
        let within = at % cs;
        let left_in_run = (run.index + u64::from(run.count) - index) * cs - within;
        let n = usize::try_from(left_in_run)
            .unwrap_or(usize::MAX)
            .min(data.len() - done);
        let from = geo
            .cluster_offset(cluster)?
            .checked_add(within)
            .ok_or_else(|| Error::overflow("FAT read offset"))?;
        source.read_exact_at(from, &mut data[done..done + n])?;
        done += n;
    }
    Ok(())
}

/// The time a FAT date and time mean, computed as Linux's `fat_time_fat2unix` does (so
/// that out-of-range fields give what Linux shows), taken as UTC (Linux's `tz=UTC`; by
/// default it applies the kernel's time zone, usually UTC on servers).
fn fat_time(t: fatfs::DateTime) -> SystemTime {
    /// Days before each month (index 1 to 12; Linux's table, 0 for 0 and 13 to 15).
    const DAYS_BEFORE: [u64; 16] = [
        0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 0, 0, 0,
    ];
    /// 1980 minus 1970 in days.
    const DAYS_DELTA: u64 = 365 * 10 + 2;
    let year = u64::from(t.date.year.saturating_sub(1980));
    let month = u64::from(t.date.month.max(1));
    let day = u64::from(t.date.day.max(1)) - 1;
    let leap_year = year % 4 == 0 && year != 120;
    let mut leap_days = year.div_ceil(4);
    if year > 120 {
        leap_days -= 1;
    }
    if leap_year && month > 2 {
        leap_days += 1;
    }
    let before = DAYS_BEFORE.get(month as usize).copied().unwrap_or(0);
    let days = year * 365 + leap_days + before + day + DAYS_DELTA;
    let secs = days * 86400
        + u64::from(t.time.hour) * 3600
        + u64::from(t.time.min) * 60
        + u64::from(t.time.sec);
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// The refusal `reason` for `path`.
fn refused(path: &[Vec<u8>], reason: Refusal) -> Error {
    let shown: Vec<String> = path
        .iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    Error::refused(format!("/{}", shown.join("/")), reason)
}

/// A directory with more than [`MAX_DIR_ENTRIES`] entries.
fn too_many() -> Error {
    ErrorKind::LimitExceeded {
        what: "FAT directory entries",
        value: MAX_DIR_ENTRIES as u64 + 1,
        limit: MAX_DIR_ENTRIES as u64,
    }
    .into()
}

/// ovafs's error for fatfs's `e`: the source's own error or the spent budget taken back
/// out of it, else the crate's.
fn convert(e: std::io::Error) -> Error {
    if e.get_ref().is_some_and(|i| i.is::<Error>()) {
        if let Some(inner) = e.into_inner()
            && let Ok(inner) = inner.downcast::<Error>()
        {
            return *inner;
        }
        return FatFsError::Failed.into();
    }
    if e.get_ref().is_some_and(|i| i.is::<BudgetSpent>()) {
        return FatFsError::Chain("fatfs read more than a request may (a loop?)").into();
    }
    FatFsError::Crate(e).into()
}
