//! Integrity checking at mount time (`-o verify=lazy|strict|off`) and the status files that
//! report it (`.ovafs/status`, `.ovafs/status.json`).
//!
//! The checks themselves are [`crate::verify`]'s: every manifest digest over the bytes as
//! stored, and the certificate's signature over the manifest. This module decides when they
//! run and what a failure does:
//! - `strict`: before the mount exists; any failure refuses the mount.
//! - `lazy` (default): in the background after the mount is ready, on one thread so that
//!   readers keep the other cores; a flat image decoded from a file whose digest does not
//!   match fails every later read with EIO, and the mismatch is logged.
//! - `off`: nothing is checked.
//!
//! Edits made through the mount rewrite the descriptor and the manifest together, so the
//! report stays about the package as it was mounted; the status file says so.
//!
//! The status files also list what the user would otherwise only find in the log: package
//! files shown under an escaped name because theirs is the mount's own
//! (`.ovafs/members/<name>`, see [`crate::node::layout::shown_path`]), and the last refused write
//! of each settings file (path, the start of the value tried, reason, time). Being generated,
//! these names always win over the package's: a member named `.ovafs/status` cannot replace
//! the report.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::appliance::ShownDisk;
use crate::error::Refusal as Refused;
use crate::error::{Error, ErrorKind, Result};
use crate::node::folder::{Folder, Origin};
use crate::node::layout::Escaped;
use crate::node::live::{LiveFile, LiveMode, LiveSource};
use crate::node::refusals::{Refusals, RefusedWrite};
use crate::node::{Caching, Node};
use crate::verify::digest::{DigestOptions, Progress};
use crate::verify::{FileStatus, Subject, VerifyOptions, VerifyReport, verify_subject};

/// Folder of the status files in the mount.
pub use crate::node::layout::STATUS_DIR;
const STATUS_TEXT: &str = ".ovafs/status";
const STATUS_JSON: &str = ".ovafs/status.json";

/// When to verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyMode {
    /// In the background after mounting; mismatching disks fail their reads.
    #[default]
    Lazy,
    /// Before mounting; any failure refuses the mount.
    Strict,
    /// Never.
    Off,
}

impl VerifyMode {
    /// Parses the `verify=` option value.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "lazy" => Some(VerifyMode::Lazy),
            "strict" => Some(VerifyMode::Strict),
            "off" | "no" | "none" => Some(VerifyMode::Off),
            _ => None,
        }
    }
}

/// Where verification stands.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
enum State {
    Off,
    Running { done_bytes: u64, total_bytes: u64 },
    Done { report: Box<VerifyReport> },
    Failed { error: String },
}

/// The integrity side of a mount.
pub struct Integrity {
    mode: VerifyMode,
    state: RwLock<State>,
    disks: Vec<(Vec<String>, String, Arc<crate::disk::engine::FlatDisk>)>,
    done_bytes: AtomicU64,
    total_bytes: AtomicU64,
    notes: StatusNotes,
}

/// What the status files report besides verification.
pub struct StatusNotes {
    /// Package files shown under an escaped name.
    pub escaped: Vec<Escaped>,
    /// Refused writes, kept by the filesystem.
    pub refusals: Arc<Refusals>,
    /// What happened to the package before it was served: recovery of an interrupted
    /// commit, a journal or temporary file left alone, why the mount is read-only.
    pub package: Vec<String>,
    /// How many requests failed on an internal error (a panic the FUSE layer contained);
    /// the FUSE layer counts them, so it hands the report its counter.
    pub caught_panics: fn() -> u64,
}

impl Default for StatusNotes {
    fn default() -> Self {
        StatusNotes {
            escaped: Vec::new(),
            refusals: Arc::default(),
            package: Vec::new(),
            caught_panics: || 0,
        }
    }
}

/// Options for verifying at mount: digests on `threads` threads, trust reported, not
/// required.
fn options(threads: usize) -> VerifyOptions {
    VerifyOptions {
        digest: DigestOptions {
            threads,
            ..DigestOptions::default()
        },
        ..VerifyOptions::default()
    }
}

/// Runs the strict check: `Ok` with the report if everything checks out, else an error
/// naming what failed.
pub fn verify_strict(subject: &Subject) -> Result<VerifyReport> {
    let report = verify_subject(subject, &options(0), &|_| {})?;
    if report.passed {
        Ok(report)
    } else {
        Err(Error::new(ErrorKind::Verification(format!(
            "verify=strict: {}",
            report.failures.join("; ")
        ))))
    }
}

impl Integrity {
    /// The integrity side for `mode`; `disks` are the flat images shown, so that a failed
    /// digest can fail their reads. `report` is the strict check's result, if it ran;
    /// `notes` the collisions and refusals the status files list.
    pub fn new(
        mode: VerifyMode,
        disks: &[ShownDisk],
        report: Option<VerifyReport>,
        notes: StatusNotes,
    ) -> Arc<Self> {
        let state = match (mode, report) {
            (_, Some(report)) => State::Done {
                report: Box::new(report),
            },
            (VerifyMode::Off, None) => State::Off,
            (_, None) => State::Running {
                done_bytes: 0,
                total_bytes: 0,
            },
        };
        Arc::new(Integrity {
            mode,
            state: RwLock::new(state),
            disks: disks
                .iter()
                .map(|d| (d.files.clone(), d.path.clone(), d.flat.clone()))
                .collect(),
            done_bytes: AtomicU64::new(0),
            total_bytes: AtomicU64::new(0),
            notes,
        })
    }

    /// Starts the background check (lazy mode) on its own thread.
    pub fn start(self: &Arc<Self>, subject: Subject) {
        if self.mode != VerifyMode::Lazy {
            return;
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("ovafs-verify".into())
            .spawn(move || {
                lower_own_priority();
                let progress = |p: Progress| {
                    me.done_bytes.store(p.done_bytes, Ordering::Relaxed);
                    me.total_bytes.store(p.total_bytes, Ordering::Relaxed);
                };
                // One thread: the reader of the mount keeps the other cores.
                let result = verify_subject(&subject, &options(1), &progress);
                me.finish(result);
            });
        if let Err(e) = spawned {
            log::error!("cannot start background verification: {e}");
            *self.state_mut() = State::Failed {
                error: e.to_string(),
            };
        }
    }

    fn state_mut(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn finish(&self, result: Result<VerifyReport>) {
        match result {
            Ok(report) => {
                for check in report
                    .files
                    .iter()
                    .filter(|c| c.failed && c.status == FileStatus::Mismatch)
                {
                    let file = check.member.as_deref().unwrap_or(&check.name);
                    log::error!("integrity: {file}: digest does not match the manifest");
                    for (files, path, flat) in &self.disks {
                        if files
                            .iter()
                            .any(|f| f == file || f.ends_with(&format!("/{}", check.name)))
                        {
                            log::error!("integrity: /{path} now fails every read");
                            flat.fail(format!("{file} does not match its manifest digest"));
                        }
                    }
                }
                if report.passed {
                    log::info!("integrity: every digest and the signature check out");
                } else {
                    log::warn!("integrity: {}", report.failures.join("; "));
                }
                *self.state_mut() = State::Done {
                    report: Box::new(report),
                };
            }
            Err(e) => {
                log::error!("integrity check could not run: {e}");
                *self.state_mut() = State::Failed {
                    error: e.to_string(),
                };
            }
        }
    }

    fn text(&self) -> String {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner()).clone();
        let mode = format!("{:?}", self.mode).to_lowercase();
        let mut out = String::new();
        match state {
            State::Off => out.push_str("verification: off (mounted with verify=off)\n"),
            State::Running { .. } => {
                let (done, total) = (
                    self.done_bytes.load(Ordering::Relaxed),
                    self.total_bytes.load(Ordering::Relaxed),
                );
                let pct = done.saturating_mul(100).checked_div(total).unwrap_or(0);
                out.push_str(&format!(
                    "verification: running ({mode}), {pct}% ({done} of {total} bytes)\n"
                ));
            }
            State::Failed { error } => {
                out.push_str(&format!("verification: could not run: {error}\n"))
            }
            State::Done { report } => {
                let verdict = if report.passed { "passed" } else { "FAILED" };
                out.push_str(&format!("verification: {verdict} ({mode})\n"));
                if let Some(m) = &report.manifest {
                    out.push_str(&format!("manifest: {m}\n"));
                }
                for f in &report.files {
                    let alg = f.algorithm.as_deref().unwrap_or("-");
                    out.push_str(&format!("{:<11} {:<7} {}\n", f.status.word(), alg, f.name));
                }
                if let Some(c) = &report.certificate {
                    let sig = if c.signature_ok {
                        "signature ok"
                    } else {
                        "signature BAD"
                    };
                    let chain = if c.chain_trusted {
                        "chain trusted"
                    } else {
                        "chain not trusted"
                    };
                    let who = c
                        .signer
                        .as_ref()
                        .map(|s| s.subject.clone())
                        .unwrap_or_default();
                    // A refused signer is said on the same line, so that the line never
                    // reads as a good signature on its own.
                    let refused = match c.signer_problems.first() {
                        Some(p) => format!(", signer refused: {p}"),
                        None => String::new(),
                    };
                    out.push_str(&format!(
                        "certificate: {} ({sig}, {chain}{refused}) {who}\n",
                        c.member
                    ));
                }
                for f in &report.failures {
                    out.push_str(&format!("failure: {f}\n"));
                }
                for w in &report.warnings {
                    out.push_str(&format!("warning: {w}\n"));
                }
            }
        }
        for n in &self.notes.package {
            out.push_str(&format!("package: {n}\n"));
        }
        let panics = (self.notes.caught_panics)();
        if panics > 0 {
            out.push_str(&format!(
                "internal errors: {panics} request(s) failed with EIO after a panic (see the log); the mount goes on\n"
            ));
        }
        for e in &self.notes.escaped {
            out.push_str(&format!(
                "collision: member {:?} is shown as /{} (its name is the mount's own)\n",
                e.name, e.shown
            ));
        }
        for r in self.notes.refusals.list() {
            out.push_str(&format!(
                "refused: /{} at {}: {} ({})\n",
                r.path,
                utc_time(r.time),
                r.value,
                r.reason
            ));
        }
        out.push_str("note: this is the package as mounted; edits rewrite the descriptor and its manifest line together\n");
        out
    }

    fn json(&self) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Json<'a> {
            mode: VerifyMode,
            #[serde(flatten)]
            state: &'a State,
            done_bytes: u64,
            total_bytes: u64,
            package_notices: &'a [String],
            caught_panics: u64,
            collisions: Vec<Collision<'a>>,
            refusals: Vec<JsonRefusal>,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Collision<'a> {
            member: &'a str,
            shown_as: String,
        }
        #[derive(Serialize)]
        struct JsonRefusal {
            #[serde(flatten)]
            refusal: RefusedWrite,
            /// The time as RFC 3339 (UTC).
            at: String,
        }
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let j = Json {
            mode: self.mode,
            state: &state,
            done_bytes: self.done_bytes.load(Ordering::Relaxed),
            total_bytes: self.total_bytes.load(Ordering::Relaxed),
            package_notices: &self.notes.package,
            caught_panics: (self.notes.caught_panics)(),
            collisions: self
                .notes
                .escaped
                .iter()
                .map(|e| Collision {
                    member: &e.name,
                    shown_as: format!("/{}", e.shown),
                })
                .collect(),
            refusals: self
                .notes
                .refusals
                .list()
                .into_iter()
                .map(|r| JsonRefusal {
                    at: utc_time(r.time),
                    refusal: r,
                })
                .collect(),
        };
        serde_json::to_string_pretty(&j).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
            + "\n"
    }
}

/// Showing the status files as nodes.
impl Integrity {
    /// Shows `.ovafs/status` and `.ovafs/status.json` in `root`; `writable` gives the status
    /// folder the mode of the mount's other editable folders.
    pub fn show_in(self: &Arc<Self>, root: &Arc<Folder>, writable: bool, refusals: &Arc<Refusals>) {
        let mode = if writable { 0o755 } else { 0o555 };
        let now = std::time::SystemTime::now();
        // The folder shows a report that changes: not cached. Escaped members may have
        // made it already.
        if root.resolve(STATUS_DIR).is_none() {
            let dir = Folder::new(STATUS_DIR, mode, now, Caching::Changing);
            root.add(STATUS_DIR, Node::Dir(Arc::new(dir)), now, Origin::Fixed);
        }
        for (path, json) in [(STATUS_TEXT, false), (STATUS_JSON, true)] {
            let source = StatusFile {
                integrity: self.clone(),
                json,
            };
            let mode = LiveMode {
                writable: false,
                secret: false,
                ceiling: 0o777,
            };
            let file = LiveFile::new(path, Box::new(source), mode, refusals.clone());
            root.add(path, Node::File(Arc::new(file)), now, Origin::Fixed);
        }
    }
}

/// One of the status files, generated at each read.
struct StatusFile {
    integrity: Arc<Integrity>,
    json: bool,
}

impl LiveSource for StatusFile {
    fn read(&self) -> Result<Arc<[u8]>> {
        let text = if self.json {
            self.integrity.json()
        } else {
            self.integrity.text()
        };
        Ok(Arc::from(text.into_bytes()))
    }

    fn max_len(&self) -> u64 {
        0
    }

    fn check(&self, _data: &[u8]) -> Result<()> {
        Err(Error::refused(STATUS_DIR, Refused::AccessDenied))
    }

    fn store(&self, _data: &[u8]) -> Result<()> {
        Err(Error::new(ErrorKind::ReadOnly(format!(
            "{STATUS_DIR} is read-only"
        ))))
    }
}

/// `secs` since the epoch as an RFC 3339 UTC time (`2026-12-03T07:55:01Z`), by the same
/// civil-date conversion as certificate dates.
fn utc_time(secs: u64) -> String {
    crate::verify::cert::iso8601(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// Gives the calling thread the lowest normal scheduling priority (nice 19 on Linux).
///
/// Background verification competes for the cores with the reads it runs beside (on two
/// cores it cost a sequential copy about a tenth of its speed). At nice 19 it takes what the
/// readers leave, yet still progresses on a busy machine, which an idle-class thread would
/// not. Failure only costs speed, so it is logged and ignored.
fn lower_own_priority() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let policy = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other);
    if let Err(e) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, policy)
    {
        log::debug!("cannot lower the priority of background verification: {e:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times() {
        assert_eq!(utc_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_time(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_time(1_796_283_301), "2026-12-03T07:35:01Z");
    }
}
