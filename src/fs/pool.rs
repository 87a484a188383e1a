//! A small worker pool that answers FUSE reads off the session thread.
//!
//! fuser's reply objects are `Send`, so the session loop hands each read to this pool and
//! goes back to the kernel for the next request: the kernel's concurrent read-ahead requests
//! then decode on every core. Two queues: reads (answered first) and read-ahead work (run
//! only when no read is waiting, and bounded so a fast sequential reader cannot queue
//! unbounded work).
//!
//! Every job runs under [`super::contain::contain`]: a job that panics fails its own read
//! (its reply, dropped while unwinding, answers EIO) and the worker goes on to the next job,
//! so a hostile input cannot shrink the pool thread by thread until the mount stops
//! answering.
//!
//! A job can also get stuck (a read of a file on a hung NFS server, a table walk that runs
//! for hours). A watchdog thread checks every second: when reads are waiting and every
//! worker has been on its current job for more than [`STUCK_AFTER`], it starts one more
//! worker (up to [`max_workers`]), so the rest of the mount keeps answering. A stuck
//! thread cannot be killed; at shutdown the pool waits [`SHUTDOWN_GRACE`] for its workers
//! and leaves the stuck ones behind rather than hang the unmount.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Read-ahead jobs queued at most; older hints are more useful than newer ones, so new
/// ones are dropped when the queue is full.
const MAX_QUEUED_READ_AHEAD: usize = 256;

/// A worker on the same job for longer than this counts as stuck.
pub const STUCK_AFTER: Duration = Duration::from_secs(5);

/// How often the watchdog looks.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// How long shutdown waits for workers to finish their jobs.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Workers at most, stuck ones included: four times the configured number, at least 16.
pub fn max_workers(threads: usize) -> usize {
    threads.max(1).saturating_mul(4).max(16)
}

#[derive(Default)]
struct Queues {
    reads: VecDeque<Job>,
    read_ahead: VecDeque<Job>,
    shutting_down: bool,
    /// Per worker: when it took its current job (`None`: idle).
    started: Vec<Option<Instant>>,
    /// Workers that have not exited.
    alive: usize,
}

struct Shared {
    queues: Mutex<Queues>,
    work: Condvar,
    /// Wakes the watchdog (at shutdown) and shutdown (when a worker exits).
    watch: Condvar,
    workers: Mutex<Vec<JoinHandle<()>>>,
    stuck_after: Duration,
    max_workers: usize,
}

impl Shared {
    fn queues(&self) -> MutexGuard<'_, Queues> {
        // Jobs run without this lock (see `worker`): a panic cannot leave the queues half
        // changed.
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn workers(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts worker number `index` (its slot in `started` exists already).
    fn spawn_worker(self: &Arc<Self>, index: usize) -> std::io::Result<()> {
        let shared = self.clone();
        let handle = std::thread::Builder::new()
            .name(format!("ovafs-read-{index}"))
            .spawn(move || worker(&shared, index))?;
        self.workers().push(handle);
        Ok(())
    }
}

/// The read workers and their watchdog.
pub struct Pool {
    shared: Arc<Shared>,
    watchdog: Option<JoinHandle<()>>,
}

impl Pool {
    /// Starts `threads` workers (at least one).
    pub fn new(threads: usize) -> std::io::Result<Self> {
        Pool::with_stuck_after(threads, STUCK_AFTER)
    }

    /// [`Pool::new`], counting a worker as stuck after `stuck_after`.
    pub fn with_stuck_after(threads: usize, stuck_after: Duration) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues {
                started: vec![None; threads],
                alive: threads,
                ..Queues::default()
            }),
            work: Condvar::new(),
            watch: Condvar::new(),
            workers: Mutex::new(Vec::new()),
            stuck_after,
            max_workers: max_workers(threads),
        });
        let mut pool = Pool {
            shared: shared.clone(),
            watchdog: None,
        };
        for i in 0..threads {
            if let Err(e) = shared.spawn_worker(i) {
                // The ones not started will never exit: do not wait for them.
                pool.shared.queues().alive = i;
                return Err(e);
            }
        }
        pool.watchdog = Some(
            std::thread::Builder::new()
                .name("ovafs-watchdog".into())
                .spawn(move || watchdog(&shared))?,
        );
        Ok(pool)
    }

    /// Queues a read; it runs before any queued read-ahead.
    pub fn read(&self, job: impl FnOnce() + Send + 'static) {
        self.shared.queues().reads.push_back(Box::new(job));
        self.shared.work.notify_one();
    }

    /// Queues read-ahead work, unless too much is already queued.
    pub fn read_ahead(&self, job: impl FnOnce() + Send + 'static) {
        let mut q = self.shared.queues();
        if q.read_ahead.len() < MAX_QUEUED_READ_AHEAD {
            q.read_ahead.push_back(Box::new(job));
            drop(q);
            self.shared.work.notify_one();
        }
    }
}

fn worker(shared: &Shared, index: usize) {
    loop {
        let (op, job) = {
            let mut q = shared.queues();
            if let Some(s) = q.started.get_mut(index) {
                *s = None;
            }
            let next = loop {
                if let Some(j) = q.reads.pop_front() {
                    break Some(("read", j));
                }
                if q.shutting_down {
                    break None;
                }
                if let Some(j) = q.read_ahead.pop_front() {
                    break Some(("read-ahead", j));
                }
                q = shared.work.wait(q).unwrap_or_else(|p| p.into_inner());
            };
            let Some(next) = next else {
                q.alive = q.alive.saturating_sub(1);
                drop(q);
                shared.watch.notify_all();
                return;
            };
            if let Some(s) = q.started.get_mut(index) {
                *s = Some(Instant::now());
            }
            next
        };
        // The queue lock is not held here, so a panicking job poisons nothing shared.
        super::contain::contain(op, job);
    }
}

/// Adds a worker whenever reads wait while every worker is stuck.
fn watchdog(shared: &Arc<Shared>) {
    let mut warned = false;
    let mut q = shared.queues();
    loop {
        q = shared
            .watch
            .wait_timeout(q, WATCH_EVERY)
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0);
        if q.shutting_down {
            return;
        }
        let all_stuck = q
            .started
            .iter()
            .all(|s| s.is_some_and(|t| t.elapsed() >= shared.stuck_after));
        if q.reads.is_empty() || !all_stuck || q.started.len() >= shared.max_workers {
            continue;
        }
        let index = q.started.len();
        q.started.push(None);
        q.alive += 1;
        drop(q);
        if !warned {
            log::warn!(
                "every read worker has been on one request for more than {:?}; starting \
                 more (up to {}) so that other reads are answered",
                shared.stuck_after,
                shared.max_workers
            );
            warned = true;
        }
        let started = shared.spawn_worker(index);
        q = shared.queues();
        if let Err(e) = started {
            q.alive = q.alive.saturating_sub(1);
            log::error!("cannot start another read worker: {e}");
        }
    }
}

impl Drop for Pool {
    /// Finishes queued reads (their replies must be sent), drops queued read-ahead, waits
    /// for the workers (at most [`SHUTDOWN_GRACE`]) and joins those that ended.
    fn drop(&mut self) {
        {
            let mut q = self.shared.queues();
            q.shutting_down = true;
            q.read_ahead.clear();
        }
        self.shared.work.notify_all();
        self.shared.watch.notify_all();
        if let Some(w) = self.watchdog.take() {
            let _ = w.join();
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        let mut q = self.shared.queues();
        while q.alive > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::warn!("{} read workers are still stuck; leaving them", q.alive);
                break;
            }
            q = self
                .shared
                .watch
                .wait_timeout(q, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        drop(q);
        for w in std::mem::take(&mut *self.shared.workers()) {
            if w.is_finished() {
                let _ = w.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn runs_every_read_before_shutting_down() {
        let done = Arc::new(AtomicUsize::new(0));
        {
            let pool = Pool::new(3).unwrap();
            for _ in 0..100 {
                let done = done.clone();
                pool.read(move || {
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
        }
        assert_eq!(done.load(Ordering::SeqCst), 100);
    }

    #[test]
    fn a_stuck_worker_gets_company() {
        let (release, stuck) = std::sync::mpsc::channel::<()>();
        let (answered, answers) = std::sync::mpsc::channel();
        let pool = Pool::with_stuck_after(1, std::time::Duration::from_millis(200)).unwrap();
        pool.read(move || {
            let _ = stuck.recv();
        });
        pool.read(move || {
            let _ = answered.send(());
        });
        // Without the watchdog the second read waits for the first, which waits forever.
        let got = answers.recv_timeout(std::time::Duration::from_secs(30));
        let _ = release.send(());
        assert!(got.is_ok(), "the read behind a stuck one was not answered");
        assert!(pool.shared.queues().started.len() >= 2);
    }

    #[test]
    fn workers_are_bounded() {
        assert_eq!(max_workers(0), 16);
        assert_eq!(max_workers(8), 32);
    }

    #[test]
    fn a_panicking_job_leaves_every_worker_serving() {
        let done = Arc::new(AtomicUsize::new(0));
        {
            // One worker: if a panic killed it, no later job would run.
            let pool = Pool::new(1).unwrap();
            for i in 0..20 {
                let done = done.clone();
                pool.read(move || {
                    if i % 2 == 0 {
                        panic!("job {i} panics");
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                });
                pool.read_ahead(|| panic!("read-ahead panics"));
            }
        }
        assert_eq!(done.load(Ordering::SeqCst), 10);
    }
}
