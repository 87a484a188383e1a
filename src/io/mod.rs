//! Positional byte sources that compose.
//!
//! [`ReadAt`] is the one read abstraction below the FUSE layer: a length and reads at an
//! offset, with no seek state, shareable between threads. An OVA file, a member inside it
//! (a [`Window`]), an in-memory buffer and a decoded flat disk are all `ReadAt`, so a VMDK
//! inside a tar is just a window handed to the VMDK parser, and unit tests hand parsers a
//! `Vec<u8>`.
//!
//! This module does no caching and no decoding, except [`gzip`]: random access into
//! gzip-compressed bytes ([`GzipReader`]).

pub mod budget;
pub mod gzip;

pub use gzip::GzipReader;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result};

/// A byte source readable at any offset from several threads at once.
pub trait ReadAt: Send + Sync {
    /// Total length in bytes.
    fn len(&self) -> u64;

    /// Whether the source is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads up to `buf.len()` bytes at `offset`. Returns fewer bytes only when the end of
    /// the source is reached (0 at or past the end).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize>;

    /// Reads exactly `buf.len()` bytes at `offset`, or fails with
    /// [`ErrorKind::UnexpectedEof`].
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let wanted = buf.len() as u64;
        let end = offset
            .checked_add(wanted)
            .ok_or_else(|| Error::overflow("read range"))?;
        if end > self.len() {
            return Err(ErrorKind::UnexpectedEof {
                offset,
                wanted,
                available: self.len(),
            }
            .into());
        }
        let mut done = 0usize;
        while done < buf.len() {
            let n = self.read_at(offset + done as u64, &mut buf[done..])?;
            if n == 0 {
                return Err(ErrorKind::UnexpectedEof {
                    offset,
                    wanted,
                    available: self.len(),
                }
                .into());
            }
            done += n;
        }
        Ok(())
    }
}

/// Reads `len` bytes at `offset` into a new vector, refusing lengths above `cap` so that a
/// size taken from a hostile header can never make us allocate without bound.
pub fn read_vec_at(
    src: &dyn ReadAt,
    what: &'static str,
    offset: u64,
    len: u64,
    cap: u64,
) -> Result<Vec<u8>> {
    if len > cap {
        return Err(ErrorKind::LimitExceeded {
            what,
            value: len,
            limit: cap,
        }
        .into());
    }
    let mut v = vec![0u8; len as usize];
    src.read_exact_at(offset, &mut v)?;
    Ok(v)
}

/// Clamps a read of `want` bytes at `offset` to a source of length `len`: the number of bytes
/// that exist there (0 at or past the end).
pub fn clamp_len(offset: u64, want: usize, len: u64) -> usize {
    if offset >= len {
        0
    } else {
        // OK to cast: the result is at most `want`, a usize.
        (len - offset).min(want as u64) as usize
    }
}

/// Opens `path` read-only without blocking (`O_NONBLOCK | O_CLOEXEC`) and checks with
/// `fstat` that it is a regular file: a FIFO, device, directory or socket is refused at once
/// with one line saying what it is. Symlinks are followed (a source given by the user).
pub fn open_regular_file(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?;
    refuse_non_regular(path, &meta)?;
    Ok(file)
}

/// What a non-regular file is, for messages.
fn file_type_name(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

fn refuse_non_regular(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    if meta.is_file() {
        return Ok(());
    }
    Err(Error::io(
        format!("cannot read {}", path.display()),
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("it is {}, not a regular file", file_type_name(meta)),
        ),
    ))
}

/// A regular file read with `pread`.
pub struct FileSource {
    file: File,
    len: u64,
    path: PathBuf,
}

impl FileSource {
    /// Opens `path` read-only and records its length. The open never blocks (`O_NONBLOCK`:
    /// a FIFO named as a package must not hang the command) and anything but a regular
    /// file (a FIFO, a device, a directory, a socket) is refused with one line naming it.
    pub fn open(path: &Path) -> Result<Self> {
        let file = open_regular_file(path)?;
        Self::from_file(file, path)
    }

    /// Wraps an already open file, which must be a regular file.
    pub fn from_file(file: File, path: &Path) -> Result<Self> {
        let meta = file
            .metadata()
            .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?;
        refuse_non_regular(path, &meta)?;
        Ok(FileSource {
            file,
            len: meta.len(),
            path: path.to_path_buf(),
        })
    }

    /// The path this source was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying file.
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl ReadAt for FileSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let n = clamp_len(offset, buf.len(), self.len);
        let mut done = 0;
        while done < n {
            match self.file.read_at(&mut buf[done..n], offset + done as u64) {
                Ok(0) => break, // the file shrank under us; report what we have
                Ok(k) => done += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(format!("read {}", self.path.display()), e)),
            }
        }
        Ok(done)
    }
}

/// A window of `len` bytes starting at `start` in another source (a tar member, say).
#[derive(Clone)]
pub struct Window {
    inner: Arc<dyn ReadAt>,
    start: u64,
    len: u64,
}

impl Window {
    /// A window onto `inner[start..start+len]`; fails if that range is not inside `inner`.
    pub fn new(inner: Arc<dyn ReadAt>, start: u64, len: u64) -> Result<Self> {
        let end = start
            .checked_add(len)
            .ok_or_else(|| Error::overflow("window end"))?;
        if end > inner.len() {
            return Err(ErrorKind::UnexpectedEof {
                offset: start,
                wanted: len,
                available: inner.len(),
            }
            .into());
        }
        Ok(Window { inner, start, len })
    }

    /// Offset of the window in the underlying source.
    pub fn start(&self) -> u64 {
        self.start
    }
}

impl ReadAt for Window {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let n = clamp_len(offset, buf.len(), self.len);
        if n == 0 {
            return Ok(0);
        }
        // Cannot overflow: offset < len and start + len was checked in `new`.
        self.inner.read_at(self.start + offset, &mut buf[..n])
    }
}

/// Several sources read as one, in order: the chunks of an OVF File split with
/// `ovf:chunkSize` (docs/formats.md §1.6), joined without copying.
#[derive(Clone)]
pub struct Concat {
    parts: Vec<Arc<dyn ReadAt>>,
    /// `starts[i]` is the offset of `parts[i]` in the joined source; one entry per part.
    starts: Vec<u64>,
    len: u64,
}

impl Concat {
    /// Joins `parts` in order; fails if the total length overflows `u64`.
    pub fn new(parts: Vec<Arc<dyn ReadAt>>) -> Result<Self> {
        let mut starts = Vec::with_capacity(parts.len());
        let mut len = 0u64;
        for p in &parts {
            starts.push(len);
            len = len
                .checked_add(p.len())
                .ok_or_else(|| Error::overflow("concatenated length"))?;
        }
        Ok(Concat { parts, starts, len })
    }

    /// The parts, in order.
    pub fn parts(&self) -> &[Arc<dyn ReadAt>] {
        &self.parts
    }
}

impl ReadAt for Concat {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let n = clamp_len(offset, buf.len(), self.len);
        let mut done = 0usize;
        while done < n {
            // Cannot overflow: offset + done < self.len.
            let pos = offset + done as u64;
            // The last part starting at or before `pos`; parts of length 0 are skipped by
            // `partition_point` picking the last of equal starts.
            let i = self.starts.partition_point(|&s| s <= pos).saturating_sub(1);
            let (Some(part), Some(&start)) = (self.parts.get(i), self.starts.get(i)) else {
                break;
            };
            let got = part.read_at(pos - start, &mut buf[done..n])?;
            if got == 0 {
                // A part shorter than it claimed: report what we have, like a short file.
                break;
            }
            done += got;
        }
        Ok(done)
    }
}

impl ReadAt for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        read_slice_at(self, offset, buf)
    }
}

impl ReadAt for Arc<[u8]> {
    fn len(&self) -> u64 {
        (**self).len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        read_slice_at(self, offset, buf)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for Arc<T> {
    fn len(&self) -> u64 {
        (**self).len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        (**self).read_at(offset, buf)
    }
}

fn read_slice_at(data: &[u8], offset: u64, buf: &mut [u8]) -> Result<usize> {
    let n = clamp_len(offset, buf.len(), data.len() as u64);
    if n > 0 {
        // OK to cast: offset < data.len(), a usize.
        let start = offset as usize;
        buf[..n].copy_from_slice(&data[start..start + n]);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_reads_inside_and_clamps_at_its_end() {
        let base: Arc<dyn ReadAt> = Arc::new((0u8..100).collect::<Vec<u8>>());
        let w = Window::new(base, 10, 20).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(w.read_at(0, &mut buf).unwrap(), 8);
        assert_eq!(buf, [10, 11, 12, 13, 14, 15, 16, 17]);
        assert_eq!(w.read_at(16, &mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], &[26, 27, 28, 29]);
        assert_eq!(w.read_at(20, &mut buf).unwrap(), 0);
        assert_eq!(w.read_at(u64::MAX, &mut buf).unwrap(), 0);
    }

    #[test]
    fn window_outside_source_is_refused() {
        let base: Arc<dyn ReadAt> = Arc::new(vec![0u8; 10]);
        assert!(Window::new(base.clone(), 5, 6).is_err());
        assert!(Window::new(base, u64::MAX, 2).is_err());
    }

    #[test]
    fn read_exact_past_end_is_unexpected_eof() {
        let v = vec![1u8; 10];
        let mut buf = [0u8; 4];
        let e = v.read_exact_at(8, &mut buf).unwrap_err();
        assert!(matches!(
            e.kind(),
            ErrorKind::UnexpectedEof {
                offset: 8,
                wanted: 4,
                available: 10
            }
        ));
        assert!(v.read_exact_at(u64::MAX - 1, &mut buf).is_err());
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn concat_reads_across_parts_and_skips_empty_ones() {
        let a: Arc<dyn ReadAt> = Arc::new(vec![1u8, 2, 3]);
        let e: Arc<dyn ReadAt> = Arc::new(Vec::<u8>::new());
        let b: Arc<dyn ReadAt> = Arc::new(vec![4u8, 5]);
        let c: Arc<dyn ReadAt> = Arc::new(vec![6u8, 7, 8, 9]);
        let j = Concat::new(vec![a, e.clone(), b, e, c]).unwrap();
        assert_eq!(j.len(), 9);
        let mut buf = [0u8; 9];
        j.read_exact_at(0, &mut buf).unwrap();
        assert_eq!(buf, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let mut two = [0u8; 2];
        j.read_exact_at(2, &mut two).unwrap();
        assert_eq!(two, [3, 4]);
        let mut four = [0u8; 4];
        assert_eq!(j.read_at(7, &mut four).unwrap(), 2);
        assert_eq!(&four[..2], &[8, 9]);
        assert_eq!(j.read_at(9, &mut four).unwrap(), 0);
        assert_eq!(j.read_at(u64::MAX, &mut four).unwrap(), 0);
        assert_eq!(Concat::new(Vec::new()).unwrap().len(), 0);
    }

    #[test]
    fn read_vec_at_refuses_sizes_above_cap() {
        let v = vec![1u8; 10];
        let e = read_vec_at(&v, "test", 0, 11, 10).unwrap_err();
        assert!(matches!(
            e.kind(),
            ErrorKind::LimitExceeded {
                value: 11,
                limit: 10,
                ..
            }
        ));
        assert_eq!(read_vec_at(&v, "test", 2, 3, 10).unwrap(), vec![1, 1, 1]);
    }
}
