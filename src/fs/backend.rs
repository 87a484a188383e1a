//! What the FUSE layer asks of the editing side: live files and settings folders.
//!
//! The FUSE layer knows nothing about descriptors, settings or commits: it asks a
//! [`Backend`] for the current bytes of a live file (named by its path in the mount), checks
//! new bytes with it at `write()` time, and hands it complete new contents to persist at
//! `close()`/`fsync()`/`rename()`. After a change it re-reads [`Backend::entries`] to bring
//! the settings folders up to date.
//!
//! Every refused write is also kept in [`Refusals`] (the last one of each file), so that the
//! status report can tell the user why without looking at syslog.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

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

    /// The permission bits that the live file `path` may show at most to the mount's group
    /// and others: those of the package file its content comes from (a settings file is no
    /// more readable than the descriptor it is read from).
    fn mode_ceiling(&self, _path: &str) -> u32 {
        0o777
    }
}

/// Longest part of a refused value kept for the status report.
const REFUSED_VALUE_CHARS: usize = 60;

/// Files whose last refusal is kept (bounds memory whatever a program writes).
const MAX_REFUSALS: usize = 1000;

/// One refused write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// The file written, as a path in the mount.
    pub path: String,
    /// The start of the value tried, escaped (not shown for files that hold a secret).
    pub value: String,
    /// Why it was refused.
    pub reason: String,
    /// When, in seconds since the epoch.
    pub time: u64,
}

/// The last refused write of each file.
#[derive(Debug, Default)]
pub struct Refusals {
    by_path: Mutex<BTreeMap<String, Refusal>>,
}

impl Refusals {
    /// Records that writing `data` to `path` was refused for `reason`; `secret` hides the
    /// value.
    pub fn record(&self, path: &str, data: &[u8], secret: bool, reason: &str) {
        let value = if secret {
            format!("(secret, {} bytes, not shown)", data.len())
        } else {
            shorten(data)
        };
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut map = self.by_path.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_REFUSALS && !map.contains_key(path) {
            return;
        }
        map.insert(
            path.to_string(),
            Refusal {
                path: path.to_string(),
                value,
                reason: reason.to_string(),
                time,
            },
        );
    }

    /// The refusals, by path.
    pub fn list(&self) -> Vec<Refusal> {
        let map = self.by_path.lock().unwrap_or_else(|p| p.into_inner());
        map.values().cloned().collect()
    }
}

/// The start of `data` as an escaped string (`"bogus\n"`), with its length when cut.
fn shorten(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    let mut cut: String = text.chars().take(REFUSED_VALUE_CHARS).collect();
    let more = cut.len() < text.len();
    cut = format!("{cut:?}");
    if more {
        cut.push_str(&format!("... ({} bytes)", data.len()));
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_the_last_of_each_file_shortened() {
        let r = Refusals::default();
        r.record("vms/a/cpus", b"bogus\n", false, "not a number");
        r.record("vms/a/cpus", b"banana\n", false, "still not a number");
        r.record("vms/a/properties/pw", b"hunter2", true, "too short");
        r.record("vms/a/name", &[b'x'; 500], false, "too long");
        let l = r.list();
        assert_eq!(l.len(), 3);
        let cpus = l
            .iter()
            .find(|x| x.path == "vms/a/cpus")
            .map(|x| x.value.as_str());
        assert_eq!(cpus, Some("\"banana\\n\""));
        assert!(l.iter().all(|x| !x.value.contains("hunter2")));
        let name = l
            .iter()
            .find(|x| x.path == "vms/a/name")
            .map(|x| x.value.clone());
        assert!(name.is_some_and(|v| v.ends_with("... (500 bytes)") && v.len() < 100));
    }
}
