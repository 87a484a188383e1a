//! What the FUSE layer asks of the editing side: live files and settings folders.
//!
//! The FUSE layer knows nothing about descriptors, settings or commits: it asks a
//! [`Backend`] for the current bytes of a live file (named by its path in the mount), checks
//! new bytes with it at `write()` time, and hands it complete new contents to persist at
//! `close()`/`fsync()`/`rename()`. After a change it re-reads [`Backend::entries`] to bring
//! the settings folders up to date.

use std::sync::Arc;

use crate::error::Result;

/// What a live entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveKind {
    /// A file; `writable` says whether it accepts new content.
    File {
        /// Accepts writes.
        writable: bool,
        /// Holds a secret (a password property): readable by its owner only.
        secret: bool,
    },
    /// A folder (settings folders; `mkdir` inside some of them creates entries).
    Dir,
    /// A symbolic link to `target` (relative).
    Symlink(String),
}

/// One entry of the settings tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveEntry {
    /// Path in the mount, `/`-separated, no leading slash.
    pub path: String,
    /// Its kind.
    pub kind: LiveKind,
}

/// The editing side, as the FUSE layer sees it.
pub trait Backend: Send + Sync {
    /// The settings tree as it is now (folders, files and links; not the archive members).
    fn entries(&self) -> Vec<LiveEntry>;

    /// Current content of the live file at `path`.
    fn read(&self, path: &str) -> Result<Arc<[u8]>>;

    /// Largest content accepted for `path` (bounds the memory of write buffers).
    fn max_len(&self, path: &str) -> u64;

    /// Whether `data` would be accepted as the complete new content of `path`, checked at
    /// every `write()` so that `echo banana > cpus` fails in the shell. Files written in
    /// several calls (the descriptor) may accept anything here and check in `store`.
    fn check(&self, path: &str, data: &[u8]) -> Result<()>;

    /// Validates `data` as the new content of `path` and persists it; the edit is durable
    /// when this returns `Ok`. An invalid value changes nothing.
    fn store(&self, path: &str, data: &[u8]) -> Result<()>;

    /// Creates the settings folder `path` (for example a new network).
    fn mkdir(&self, path: &str) -> Result<()>;

    /// Removes the settings folder `path`.
    fn rmdir(&self, path: &str) -> Result<()>;
}
