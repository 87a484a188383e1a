//! Per-mount budgets: one memory budget for every format's metadata tables, one CPU budget
//! (bytes inflated) for indexing compressed streams before a mount is ready.
//!
//! A small input can claim huge tables (a VMDK descriptor naming thousands of extents, a
//! qcow2 whose L1 table covers 64 TiB) or huge decompressed output (a gzip bomb, nested
//! gzip). Each such claim is counted against a [`Budget`] shared by everything one
//! opening (a mount, `ovafs info`, `ovafs verify`) does, *before* the memory is allocated
//! or the bytes are inflated, so the package is refused with one line naming what needed
//! more, how much and the limit, instead of the daemon growing without bound.
//!
//! Tables that are caches (VMDK grain tables, qcow2 L2 slices) are charged at the size
//! they may grow to, capped by what the image actually has, so the budget bounds their
//! resident memory whatever the access pattern. [`Limits`] bundles the two budgets of one
//! opening; [`Limits::default`] is what `info` and `verify` use.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{ErrorKind, Result};

/// Default metadata memory budget per opening: 1 GiB (tables of a typical appliance take a
/// few MiB; 1 GiB covers the L1 tables of qcow2 disks of a few PiB in all).
pub const DEFAULT_METADATA_LIMIT: u64 = 1 << 30;

/// Default budget of bytes inflated while indexing compressed streams per opening: 64 GiB
/// (about a minute of CPU; no real `.ova.gz` or gzip disk comes near it, a gzip bomb
/// reaches it in a fraction of its claimed size).
pub const DEFAULT_INFLATE_LIMIT: u64 = 64 << 30;

/// Which budget: how it is named in messages and which mount option raises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetKind {
    /// Memory of metadata tables (`-o metadata_limit=`).
    Metadata,
    /// Bytes inflated while indexing compressed data (`-o inflate_limit=`).
    Inflate,
}

impl BudgetKind {
    /// Name in messages.
    pub fn name(self) -> &'static str {
        match self {
            BudgetKind::Metadata => "metadata memory",
            BudgetKind::Inflate => "decompression while indexing",
        }
    }

    /// The mount option that raises it.
    pub fn option(self) -> &'static str {
        match self {
            BudgetKind::Metadata => "metadata_limit",
            BudgetKind::Inflate => "inflate_limit",
        }
    }
}

/// A shared count against a limit, in bytes.
#[derive(Debug)]
pub struct Budget {
    kind: BudgetKind,
    limit: u64,
    used: AtomicU64,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(kind: BudgetKind, limit: u64) -> Arc<Self> {
        Arc::new(Budget {
            kind,
            limit,
            used: AtomicU64::new(0),
        })
    }

    /// A metadata budget with the default limit (for callers that open one image alone).
    pub fn default_metadata() -> Arc<Self> {
        Self::new(BudgetKind::Metadata, DEFAULT_METADATA_LIMIT)
    }

    /// Counts `bytes` for `what` (e.g. "VMDK grain directory") against the budget, or
    /// refuses them, leaving the count unchanged, when they would cross the limit.
    pub fn charge(&self, what: &str, bytes: u64) -> Result<()> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let total = used.saturating_add(bytes);
            if total > self.limit {
                return Err(ErrorKind::BudgetExceeded {
                    budget: self.kind.name(),
                    option: self.kind.option(),
                    what: what.to_string(),
                    need: bytes,
                    used,
                    limit: self.limit,
                }
                .into());
            }
            match self
                .used
                .compare_exchange_weak(used, total, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(now) => used = now,
            }
        }
    }

    /// Gives back `bytes` charged earlier (a table that shrank).
    pub fn release(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(bytes))
            });
    }

    /// Bytes counted so far.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// The budgets of one opening of a package.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Memory of every format's metadata tables and of gzip indexes.
    pub metadata: Arc<Budget>,
    /// Bytes inflated while indexing compressed streams (nested ones included).
    pub inflate: Arc<Budget>,
}

impl Limits {
    /// Budgets with these limits.
    pub fn new(metadata_limit: u64, inflate_limit: u64) -> Self {
        Limits {
            metadata: Budget::new(BudgetKind::Metadata, metadata_limit),
            inflate: Budget::new(BudgetKind::Inflate, inflate_limit),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(DEFAULT_METADATA_LIMIT, DEFAULT_INFLATE_LIMIT)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn charges_up_to_the_limit_and_refuses_past_it() {
        let b = Budget::new(BudgetKind::Metadata, 100);
        b.charge("a", 60).unwrap();
        b.charge("b", 40).unwrap();
        let e = b.charge("VMDK grain directory", 1).unwrap_err().to_string();
        assert!(e.contains("VMDK grain directory"), "{e}");
        assert!(e.contains("metadata_limit"), "{e}");
        assert_eq!(b.used(), 100, "a refused charge counts nothing");
        b.release(50);
        b.charge("c", 50).unwrap();
        assert!(b.charge("huge", u64::MAX).is_err());
    }
}
