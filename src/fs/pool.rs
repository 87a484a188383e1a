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

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Read-ahead jobs queued at most; older hints are more useful than newer ones, so new
/// ones are dropped when the queue is full.
const MAX_QUEUED_READ_AHEAD: usize = 256;

#[derive(Default)]
struct Queues {
    reads: VecDeque<Job>,
    read_ahead: VecDeque<Job>,
    shutting_down: bool,
}

struct Shared {
    queues: Mutex<Queues>,
    work: Condvar,
}

/// A fixed set of worker threads.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Starts `threads` workers (at least one).
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues::default()),
            work: Condvar::new(),
        });
        let mut workers = Vec::new();
        for i in 0..threads.max(1) {
            let shared = shared.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("ovafs-read-{i}"))
                    .spawn(move || worker(&shared))?,
            );
        }
        Ok(Pool { shared, workers })
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.shared.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a read; it runs before any queued read-ahead.
    pub fn read(&self, job: impl FnOnce() + Send + 'static) {
        self.queues().reads.push_back(Box::new(job));
        self.shared.work.notify_one();
    }

    /// Queues read-ahead work, unless too much is already queued.
    pub fn read_ahead(&self, job: impl FnOnce() + Send + 'static) {
        let mut q = self.queues();
        if q.read_ahead.len() < MAX_QUEUED_READ_AHEAD {
            q.read_ahead.push_back(Box::new(job));
            drop(q);
            self.shared.work.notify_one();
        }
    }
}

fn worker(shared: &Shared) {
    loop {
        let (op, job) = {
            let mut q = shared.queues.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(j) = q.reads.pop_front() {
                    break ("read", j);
                }
                if q.shutting_down {
                    return;
                }
                if let Some(j) = q.read_ahead.pop_front() {
                    break ("read-ahead", j);
                }
                q = shared.work.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        // The queue lock is not held here, so a panicking job poisons nothing shared.
        super::contain::contain(op, job);
    }
}

impl Drop for Pool {
    /// Finishes queued reads (their replies must be sent), drops queued read-ahead, and joins.
    fn drop(&mut self) {
        {
            let mut q = self.queues();
            q.shutting_down = true;
            q.read_ahead.clear();
        }
        self.shared.work.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
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
