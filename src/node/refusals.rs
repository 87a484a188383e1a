//! The last refused write of each file, kept for the status report.
//!
//! A refused write fails in the shell (`echo banana > cpus`: "Invalid argument"), but a
//! program that ignores its errors, or a user who looks later, should still learn why: the
//! status report (`.ovafs/status`) lists the last refusal of each file, with the start of the
//! value tried (hidden for a file that holds a secret or that others may not read).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Longest part of a refused value kept for the status report.
const REFUSED_VALUE_CHARS: usize = 60;

/// Files whose last refusal is kept (bounds memory whatever a program writes).
const MAX_REFUSALS: usize = 1000;

/// One refused write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusedWrite {
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
    by_path: Mutex<BTreeMap<String, RefusedWrite>>,
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
            RefusedWrite {
                path: path.to_string(),
                value,
                reason: reason.to_string(),
                time,
            },
        );
    }

    /// The refusals, by path.
    pub fn list(&self) -> Vec<RefusedWrite> {
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
