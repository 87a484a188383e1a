//! Computing the digests a manifest lists: SHA-1, SHA-256, SHA-384 and SHA-512 of many byte
//! sources at once, in one pass, on every core.
//!
//! [`compute`] takes a list of [`DigestJob`]s (a source, the algorithms wanted, and its
//! position in the archive) and hashes them on a pool of worker threads (one per core by
//! default). Workers take jobs in archive order, so the archive is read front to back, once,
//! with as many members in flight as there are workers. Each job is read in large chunks
//! ([`DEFAULT_CHUNK_BYTES`]) by its own reader thread into a small ring of recycled buffers
//! while the worker hashes the previous chunk, so a single large member is hashed at the
//! speed of the hash, not of hash plus copy (SHA-256 with SHA-NI: about 1.9 GB/s per core
//! here). Several algorithms for one source are computed from the same buffers.
//!
//! The hashes are the RustCrypto `sha1` / `sha2` 0.10 crates, which pick the SHA-NI code path
//! at run time (no `asm` feature: docs/deps.md §3.2).
//!
//! Memory: at most `workers × (RING_BUFFERS × chunk)` bytes of buffers (48 MiB with two
//! workers and the defaults). With [`DigestOptions::threads`] = 1 everything runs on the
//! calling thread, reads not overlapped with hashing, and no thread is started. Not here: what to hash (the caller maps manifest entries to
//! sources) and comparing digests.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};

use sha2::digest::DynDigest;

use super::manifest::Algorithm;
use crate::error::{ErrorKind, Result};
use crate::io::ReadAt;

/// Bytes read and hashed at a time: large enough that per-call costs vanish, small enough that
/// progress is smooth and the buffers stay in the cache hierarchy's outer levels.
pub const DEFAULT_CHUNK_BYTES: usize = 4 << 20;

/// Buffers in each job's read-ahead ring: one being hashed, one being filled, one queued.
const RING_BUFFERS: usize = 3;

/// An algorithm ovafs can compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DigestAlgorithm {
    /// SHA-1.
    Sha1,
    /// SHA-224.
    Sha224,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl DigestAlgorithm {
    /// The computable algorithm for a manifest algorithm, if it is one.
    pub fn from_algorithm(alg: &Algorithm) -> Option<Self> {
        match alg {
            Algorithm::Sha1 => Some(DigestAlgorithm::Sha1),
            Algorithm::Sha224 => Some(DigestAlgorithm::Sha224),
            Algorithm::Sha256 => Some(DigestAlgorithm::Sha256),
            Algorithm::Sha384 => Some(DigestAlgorithm::Sha384),
            Algorithm::Sha512 => Some(DigestAlgorithm::Sha512),
            _ => None,
        }
    }

    /// A fresh hasher.
    pub fn hasher(self) -> Box<dyn DynDigest + Send> {
        match self {
            DigestAlgorithm::Sha1 => Box::new(sha1::Sha1::default()),
            DigestAlgorithm::Sha224 => Box::new(sha2::Sha224::default()),
            DigestAlgorithm::Sha256 => Box::new(sha2::Sha256::default()),
            DigestAlgorithm::Sha384 => Box::new(sha2::Sha384::default()),
            DigestAlgorithm::Sha512 => Box::new(sha2::Sha512::default()),
        }
    }

    /// The digest of `data` in one call (small inputs, tests).
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        let mut h = self.hasher();
        h.update(data);
        h.finalize().into_vec()
    }
}

/// One source to hash.
#[derive(Clone)]
pub struct DigestJob {
    /// The bytes.
    pub data: Arc<dyn ReadAt>,
    /// The algorithms wanted, without duplicates.
    pub algorithms: Vec<DigestAlgorithm>,
    /// Where the source sits in the archive (its data offset): jobs are started in this order
    /// so the archive is read front to back.
    pub position: u64,
}

/// How to run [`compute`].
#[derive(Debug, Clone, Copy)]
pub struct DigestOptions {
    /// Worker threads; 0 means one per available core; 1 hashes on the calling thread
    /// without starting any thread (no read-ahead).
    pub threads: usize,
    /// Bytes per read.
    pub chunk_bytes: usize,
}

impl Default for DigestOptions {
    fn default() -> Self {
        DigestOptions {
            threads: 0,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
        }
    }
}

/// Progress, as passed to the callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes hashed so far (each source counted once, whatever the number of algorithms).
    pub done_bytes: u64,
    /// Bytes to hash in all.
    pub total_bytes: u64,
}

/// The digests of one job, in the order of its `algorithms`.
pub type JobDigests = Result<Vec<Vec<u8>>>;

/// Hashes every job; returns one result per job, in the order given. `progress` is called
/// from the worker threads after every chunk.
pub fn compute(
    jobs: &[DigestJob],
    options: &DigestOptions,
    progress: &(dyn Fn(Progress) + Sync),
) -> Vec<JobDigests> {
    let total_bytes = jobs
        .iter()
        .fold(0u64, |acc, j| acc.saturating_add(j.data.len()));
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&i| jobs.get(i).map_or(0, |j| j.position));
    let threads = if options.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        options.threads
    }
    .clamp(1, jobs.len().max(1));
    let chunk = options.chunk_bytes.max(4096);
    let next = AtomicUsize::new(0);
    let done = AtomicU64::new(0);
    let report = |n: u64| {
        let d = done.fetch_add(n, Ordering::Relaxed).saturating_add(n);
        progress(Progress {
            done_bytes: d,
            total_bytes,
        });
    };
    let mut results: Vec<Option<JobDigests>> = (0..jobs.len()).map(|_| None).collect();
    if threads == 1 {
        // One thread asked for: everything on the calling thread, reads not overlapped.
        for &i in &order {
            if let (Some(job), Some(slot)) = (jobs.get(i), results.get_mut(i)) {
                *slot = Some(hash_job(job, chunk, false, &report));
            }
        }
    } else {
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let mut mine = Vec::new();
                        loop {
                            let k = next.fetch_add(1, Ordering::Relaxed);
                            let Some((&i, job)) =
                                order.get(k).and_then(|i| Some((i, jobs.get(*i)?)))
                            else {
                                break;
                            };
                            mine.push((i, hash_job(job, chunk, true, &report)));
                        }
                        mine
                    })
                })
                .collect();
            for w in workers {
                // A worker only panics if a hasher does; report that as a failed job below.
                if let Ok(mine) = w.join() {
                    for (i, r) in mine {
                        if let Some(slot) = results.get_mut(i) {
                            *slot = Some(r);
                        }
                    }
                }
            }
        });
    }
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(crate::error::Error::io(
                    "hashing",
                    std::io::Error::other("a digest worker thread panicked"),
                ))
            })
        })
        .collect()
}

/// Hashes one job: small sources in one read, large ones chunk by chunk, through a
/// read-ahead thread when `read_ahead_thread` is set (else on this thread alone).
fn hash_job(
    job: &DigestJob,
    chunk: usize,
    read_ahead_thread: bool,
    report: &(dyn Fn(u64) + Sync),
) -> JobDigests {
    let len = job.data.len();
    let mut hashers: Vec<_> = job.algorithms.iter().map(|a| a.hasher()).collect();
    if !read_ahead_thread {
        let mut buf = vec![0u8; usize::try_from(len).map_or(chunk, |l| l.min(chunk))];
        let mut offset = 0u64;
        while offset < len {
            let want = usize::try_from(len - offset).map_or(buf.len(), |r| r.min(buf.len()));
            let part = buf
                .get_mut(..want)
                .ok_or_else(|| crate::error::Error::overflow("digest buffer"))?;
            job.data.read_exact_at(offset, part)?;
            for h in &mut hashers {
                h.update(part);
            }
            report(want as u64);
            offset += want as u64;
        }
    } else if len <= chunk as u64 {
        // OK to cast: len <= chunk, a usize.
        let mut buf = vec![0u8; len as usize];
        job.data.read_exact_at(0, &mut buf)?;
        for h in &mut hashers {
            h.update(&buf);
        }
        report(len);
    } else {
        let (full_tx, full_rx) = mpsc::sync_channel::<Result<(Vec<u8>, usize)>>(RING_BUFFERS);
        let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
        for _ in 0..RING_BUFFERS {
            // The receiver lives until the end of this function.
            let _ = empty_tx.send(vec![0u8; chunk]);
        }
        let data = &job.data;
        std::thread::scope(|s| -> Result<()> {
            // Owned by this closure, so that an early return drops them before the scope
            // joins the reader, which then stops instead of waiting for us.
            let (empty_tx, full_rx) = (empty_tx, full_rx);
            s.spawn(move || read_ahead(&**data, len, empty_rx, full_tx));
            let mut got = 0u64;
            while got < len {
                // The reader sends every chunk or an error before it stops.
                let Ok(msg) = full_rx.recv() else { break };
                let (buf, n) = msg?;
                let part = buf.get(..n).unwrap_or(&buf);
                for h in &mut hashers {
                    h.update(part);
                }
                got = got.saturating_add(n as u64);
                report(n as u64);
                let _ = empty_tx.send(buf);
            }
            if got != len {
                return Err(ErrorKind::UnexpectedEof {
                    offset: got,
                    wanted: len - got,
                    available: got,
                }
                .into());
            }
            Ok(())
        })?;
    }
    Ok(hashers
        .into_iter()
        .map(|h| h.finalize().into_vec())
        .collect())
}

/// Reads `src` front to back into buffers taken from `empty` and sends them, filled, on
/// `full`. Stops at the end, on the first error (sent), or when the hasher goes away.
fn read_ahead(
    src: &dyn ReadAt,
    len: u64,
    empty: mpsc::Receiver<Vec<u8>>,
    full: mpsc::SyncSender<Result<(Vec<u8>, usize)>>,
) {
    let mut offset = 0u64;
    while offset < len {
        let Ok(mut buf) = empty.recv() else { return };
        let want = usize::try_from(len - offset).map_or(buf.len(), |r| r.min(buf.len()));
        let msg = match buf.get_mut(..want).map(|b| src.read_exact_at(offset, b)) {
            Some(Ok(())) => Ok((buf, want)),
            Some(Err(e)) => Err(e),
            None => Err(crate::error::Error::overflow("digest buffer")),
        };
        let failed = msg.is_err();
        if full.send(msg).is_err() || failed {
            return;
        }
        offset += want as u64;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::io::Window;
    use std::sync::Mutex;

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn known_answers() {
        assert_eq!(
            super::super::manifest::to_hex(&DigestAlgorithm::Sha256.digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            super::super::manifest::to_hex(&DigestAlgorithm::Sha1.digest(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            super::super::manifest::to_hex(&DigestAlgorithm::Sha224.digest(b"abc")),
            "23097d223405d8228642a477bda255b32aadbce4bda0b3f7e36c9da7"
        );
        assert_eq!(DigestAlgorithm::Sha384.digest(b"").len(), 48);
        assert_eq!(DigestAlgorithm::Sha512.digest(b"").len(), 64);
    }

    #[test]
    fn many_jobs_several_algorithms_small_chunks_match_one_shot_digests() {
        let all = [
            DigestAlgorithm::Sha1,
            DigestAlgorithm::Sha224,
            DigestAlgorithm::Sha256,
            DigestAlgorithm::Sha384,
            DigestAlgorithm::Sha512,
        ];
        let archive: Arc<dyn ReadAt> = Arc::new(data(300_000, 7));
        let sizes = [0u64, 1, 4095, 4096, 4097, 65_536, 100_003];
        let mut jobs = Vec::new();
        let mut start = 0;
        for (k, &n) in sizes.iter().enumerate() {
            jobs.push(DigestJob {
                data: Arc::new(Window::new(archive.clone(), start, n).unwrap()),
                algorithms: all[..=k % 4].to_vec(),
                position: 1_000_000 - start,
            });
            start += n;
        }
        let calls = Mutex::new(Vec::new());
        for threads in [1, 2, 5] {
            let opts = DigestOptions {
                threads,
                chunk_bytes: 4096,
            };
            let out = compute(&jobs, &opts, &|p| calls.lock().unwrap().push(p));
            for (job, r) in jobs.iter().zip(out) {
                let mut buf = vec![0u8; job.data.len() as usize];
                job.data.read_exact_at(0, &mut buf).unwrap();
                let want: Vec<Vec<u8>> = job.algorithms.iter().map(|a| a.digest(&buf)).collect();
                assert_eq!(r.unwrap(), want);
            }
            let calls = std::mem::take(&mut *calls.lock().unwrap());
            let last = calls.iter().map(|p| p.done_bytes).max().unwrap();
            assert_eq!(last, start);
            assert!(calls.iter().all(|p| p.total_bytes == start));
        }
        assert!(compute(&[], &DigestOptions::default(), &|_| {}).is_empty());
    }

    /// Found by fuzzing (`package` target): LeakSanitizer flagged the read-ahead thread's
    /// handle, which a scoped thread frees only after the scope has returned. A caller that
    /// asks for one thread now gets no thread at all: every chunk is hashed on its own thread.
    #[test]
    fn one_thread_hashes_on_the_calling_thread_found_by_fuzzing() {
        let caller = std::thread::current().id();
        let src: Arc<dyn ReadAt> = Arc::new(data(50_000, 3));
        let jobs = vec![DigestJob {
            data: src,
            algorithms: vec![DigestAlgorithm::Sha256, DigestAlgorithm::Sha1],
            position: 0,
        }];
        let threads_seen = Mutex::new(Vec::new());
        let opts = DigestOptions {
            threads: 1,
            chunk_bytes: 4096,
        };
        let out = compute(&jobs, &opts, &|p| {
            threads_seen
                .lock()
                .unwrap()
                .push((std::thread::current().id(), p.done_bytes));
        });
        let seen = threads_seen.into_inner().unwrap();
        assert_eq!(seen.len(), 13, "one report per 4 KiB chunk");
        assert!(seen.iter().all(|(t, _)| *t == caller));
        assert_eq!(seen.last().unwrap().1, 50_000);
        assert_eq!(
            out[0].as_ref().unwrap()[0],
            DigestAlgorithm::Sha256.digest(&data(50_000, 3))
        );
        let short = vec![DigestJob {
            data: Arc::new(Liar(data(5000, 1))),
            algorithms: vec![DigestAlgorithm::Sha1],
            position: 0,
        }];
        assert!(compute(&short, &opts, &|_| {})[0].is_err());
    }

    /// A source that claims more bytes than it has, like a file truncated under us.
    struct Liar(Vec<u8>);
    impl ReadAt for Liar {
        fn len(&self) -> u64 {
            self.0.len() as u64 + 10_000
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
            self.0.read_at(offset, buf)
        }
    }

    #[test]
    fn short_sources_fail_their_job_only() {
        let good: Arc<dyn ReadAt> = Arc::new(data(20_000, 1));
        let jobs = vec![
            DigestJob {
                data: Arc::new(Liar(data(20_000, 2))),
                algorithms: vec![DigestAlgorithm::Sha256],
                position: 0,
            },
            DigestJob {
                data: Arc::new(Liar(data(100, 2))),
                algorithms: vec![DigestAlgorithm::Sha256],
                position: 1,
            },
            DigestJob {
                data: good.clone(),
                algorithms: vec![DigestAlgorithm::Sha256],
                position: 2,
            },
        ];
        let opts = DigestOptions {
            threads: 2,
            chunk_bytes: 4096,
        };
        let out = compute(&jobs, &opts, &|_| {});
        assert!(matches!(
            out[0].as_ref().unwrap_err().kind(),
            ErrorKind::UnexpectedEof { .. }
        ));
        assert!(out[1].is_err());
        assert_eq!(
            out[2].as_ref().unwrap()[0],
            DigestAlgorithm::Sha256.digest(&data(20_000, 1))
        );
    }
}
