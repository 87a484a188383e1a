//! Crash safety of commits: a child process (this test binary, re-run with
//! `OVAFS_COMMIT_CRASH_CHILD` set) commits and is killed with SIGKILL, then `recover()` runs
//! and the package must be exactly the old version or exactly the new one, GNU tar must list
//! it, and no journal or temporary file may remain.
//!
//! Contents:
//! - `crash_matrix_*`: the child kills itself at every fault point of one commit, one run
//!   per point (in place, rewrite, certificate drop, folder package). Prints the matrix.
//! - `crash_random_kills_during_repeated_commits`: the child commits in a loop (in place and
//!   rewrites alternating) and the parent kills it at random times.
//! - `crash_child`: the child side; does nothing unless the variable is set.

mod common;
#[path = "commit_support.rs"]
mod support;

use std::collections::HashSet;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{copy_files, folder_files};
use ovafs::commit::{
    self, ChangeSet, CommitOptions, CommitPath, Committer, FaultPoint, JournalOutcome, padding,
};
use support::{Fixture, check_ova, leftovers, tar_list, with_annotation, with_cpus};

/// Selects the child's work: `once` or `loop`, then paths, one per line.
const CHILD_ENV: &str = "OVAFS_COMMIT_CRASH_CHILD";

/// Most commits one loop child makes (then it waits to be killed).
const LOOP_MAX: usize = 400;

/// Fixed member mtime, so that the child's result can be compared byte for byte.
const MTIME: u64 = 1_700_000_000;

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ovafs-crash-")
        .tempdir()
        .unwrap()
}

/// Descriptor number `i` of the loop: even steps grow by 700 bytes (more than a block, so a
/// rewrite when there is no slack), odd steps change the CPU count in place.
fn loop_descriptor(base: &str, i: usize) -> String {
    let grown = with_annotation(base, 700 * (i / 2 + 1));
    if i.is_multiple_of(2) {
        grown
    } else {
        with_cpus(&grown, 1 + (i % 9) as u32)
    }
}

/// The child side.
#[test]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let lines: Vec<&str> = spec.lines().collect();
    let source = PathBuf::from(lines[1]);
    commit::recover(&source).unwrap();
    let pkg = ovafs::package::open(&source).unwrap();
    match lines[0] {
        "once" => {
            let kill_at: usize = lines[2].parse().unwrap();
            let new = fs::read(lines[3]).unwrap();
            let count = Arc::new(AtomicUsize::new(0));
            let hook: commit::FaultHook = Arc::new(move |_p: FaultPoint| {
                if count.fetch_add(1, Ordering::SeqCst) + 1 == kill_at {
                    nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL).unwrap();
                }
            });
            let mut c = Committer::open_with(
                &pkg,
                CommitOptions {
                    mtime: Some(MTIME),
                    fault_hook: Some(hook),
                    ..Default::default()
                },
            )
            .unwrap();
            c.commit(&ChangeSet::descriptor(new.as_slice())).unwrap();
        }
        "loop" => {
            let base = fs::read_to_string(lines[2]).unwrap();
            let mut c = Committer::open_with(
                &pkg,
                CommitOptions {
                    slack_bytes: Some(0),
                    ..Default::default()
                },
            )
            .unwrap();
            for i in 0..LOOP_MAX {
                c.commit(&ChangeSet::descriptor(loop_descriptor(&base, i).as_bytes()))
                    .unwrap();
            }
            // Wait to be killed: the parent expects SIGKILL.
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        other => panic!("unknown child mode {other}"),
    }
}

fn child(spec: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, spec)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// One commit, killed at each of its fault points in turn.
struct Matrix {
    name: &'static str,
    /// Folder holding only the package (an OVA, or an unpacked package).
    pkg_dir: PathBuf,
    /// File name of the source inside it (`.ova` or `.ovf`).
    source: String,
    new_descriptor: Vec<u8>,
    expect: CommitPath,
}

fn run_matrix(m: &Matrix, work: &Path) {
    let old = folder_files(&m.pkg_dir);
    let desc_file = work.join("new.ovf.bin");
    fs::write(&desc_file, &m.new_descriptor).unwrap();

    // Reference run in this process: the fault points in order and the new state.
    let reference = work.join("reference");
    copy_files(&m.pkg_dir, &reference);
    let points = Arc::new(Mutex::new(Vec::new()));
    let seen = points.clone();
    let hook: commit::FaultHook = Arc::new(move |p| seen.lock().unwrap().push(p));
    let pkg = ovafs::package::open(&reference.join(&m.source)).unwrap();
    let mut c = Committer::open_with(
        &pkg,
        CommitOptions {
            mtime: Some(MTIME),
            fault_hook: Some(hook),
            ..Default::default()
        },
    )
    .unwrap();
    let r = c
        .commit(&ChangeSet::descriptor(m.new_descriptor.as_slice()))
        .unwrap();
    assert_eq!(r.path, m.expect, "{}", m.name);
    let new = folder_files(&reference);
    assert_ne!(old, new);
    let points = points.lock().unwrap().clone();

    let mut table = Vec::new();
    for n in 1..=points.len() + 1 {
        let run = work.join(format!("run{n}"));
        copy_files(&m.pkg_dir, &run);
        let source = run.join(&m.source);
        let spec = format!("once\n{}\n{n}\n{}", source.display(), desc_file.display());
        let out = child(&spec).output().unwrap();
        if n <= points.len() {
            assert_eq!(
                out.status.signal(),
                Some(9),
                "{} point {n}: child was not killed: {}",
                m.name,
                String::from_utf8_lossy(&out.stderr)
            );
        } else {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let rec = commit::recover(&source).unwrap();
        let state = folder_files(&run);
        let which = if state == old {
            "old"
        } else if state == new {
            "new"
        } else {
            let names: Vec<_> = state.keys().collect();
            panic!("{} point {n}: neither old nor new: {names:?}", m.name);
        };
        if m.source.ends_with(".ova") {
            tar_list(&source);
            assert!(leftovers(&source).is_empty());
        }
        let point = points
            .get(n - 1)
            .map_or("(none: completed)".to_string(), |p| format!("{p:?}"));
        let recovery = match (&rec.journal, rec.removed_temp_files.len()) {
            (JournalOutcome::None, 0) => "clean".to_string(),
            (JournalOutcome::None, k) => format!("{k} temp removed"),
            (JournalOutcome::Completed, _) => "journal replayed".to_string(),
            (JournalOutcome::Discarded { .. }, k) => format!("journal discarded, {k} temp removed"),
            (other, _) => panic!("{} point {n}: journal left: {other:?}", m.name),
        };
        table.push(format!("  {n:>2} {point:<32} -> {which} ({recovery})"));
        let _ = fs::remove_dir_all(&run);
    }
    println!("crash matrix, {}:\n{}", m.name, table.join("\n"));
}

/// Builds `fx` as an OVA alone in its own folder under `work` (what the matrix snapshots);
/// returns the folder and the OVA's file name.
fn ova_alone(fx: &Fixture, work: &Path) -> (PathBuf, String) {
    let ova = fx.build();
    let pkg_dir = work.join("ova");
    fs::create_dir_all(&pkg_dir).unwrap();
    let name = ova.file_name().unwrap().to_str().unwrap().to_string();
    fs::copy(&ova, pkg_dir.join(&name)).unwrap();
    (pkg_dir, name)
}

#[test]
fn crash_matrix_in_place() {
    let t = tempdir();
    let fx = Fixture::new(&t.path().join("pkg0"), "inplace");
    let (pkg_dir, source) = ova_alone(&fx, t.path());
    run_matrix(
        &Matrix {
            name: "in place",
            pkg_dir,
            source,
            new_descriptor: with_cpus(&fx.descriptor(), 4).into_bytes(),
            expect: CommitPath::InPlace,
        },
        t.path(),
    );
}

#[test]
fn crash_matrix_rewrite() {
    let t = tempdir();
    let fx = Fixture::new(&t.path().join("pkg0"), "grow");
    let (pkg_dir, source) = ova_alone(&fx, t.path());
    run_matrix(
        &Matrix {
            name: "rewrite",
            pkg_dir,
            source,
            new_descriptor: with_annotation(&fx.descriptor(), 3000).into_bytes(),
            expect: CommitPath::Rewrite,
        },
        t.path(),
    );
}

#[test]
fn crash_matrix_certificate_drop() {
    let t = tempdir();
    let mut fx = Fixture::new(&t.path().join("pkg0"), "signed");
    fx.cert = true;
    let (pkg_dir, source) = ova_alone(&fx, t.path());
    run_matrix(
        &Matrix {
            name: "certificate drop",
            pkg_dir,
            source,
            new_descriptor: with_cpus(&fx.descriptor(), 4).into_bytes(),
            expect: CommitPath::Rewrite,
        },
        t.path(),
    );
}

#[test]
fn crash_matrix_folder() {
    let t = tempdir();
    let mut fx = Fixture::new(&t.path().join("pkg0"), "unpacked");
    fx.cert = true;
    fx.write_files();
    run_matrix(
        &Matrix {
            name: "folder",
            pkg_dir: t.path().join("pkg0").join("pkg"),
            source: "unpacked.ovf".into(),
            new_descriptor: with_annotation(&fx.descriptor(), 1000).into_bytes(),
            expect: CommitPath::Folder,
        },
        t.path(),
    );
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn crash_random_kills_during_repeated_commits() {
    let t = tempdir();
    let mut fx = Fixture::new(t.path(), "random");
    fx.disk_bytes = 8 << 20;
    let ova = fx.build();
    let base = fx.descriptor();
    let base_file = t.path().join("base.ovf.txt");
    fs::write(&base_file, &base).unwrap();
    let candidates: HashSet<String> = std::iter::once(base.clone())
        .chain((0..LOOP_MAX).map(|i| loop_descriptor(&base, i)))
        .map(|d| support::sha256(d.as_bytes()))
        .collect();
    let seed = common::seed_from_env("OVAFS_CRASH_SEED");
    println!("seed {seed} (OVAFS_CRASH_SEED to repeat)");
    let mut rng = Rng(seed | 1);
    let (mut replayed, mut discarded, mut temps, mut clean) = (0, 0, 0, 0);
    let rounds = 30;
    for round in 0..rounds {
        let spec = format!("loop\n{}\n{}", ova.display(), base_file.display());
        let mut ch = child(&spec).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(10 + rng.next() % 150));
        ch.kill().unwrap();
        let status = ch.wait().unwrap();
        if status.signal() != Some(9) {
            let mut err = String::new();
            use std::io::Read;
            ch.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("round {round}: child ended on its own ({status}): {err}");
        }
        let rec = commit::recover(&ova).unwrap();
        match rec.journal {
            JournalOutcome::Completed => replayed += 1,
            JournalOutcome::Discarded { .. } => discarded += 1,
            JournalOutcome::None if !rec.removed_temp_files.is_empty() => temps += 1,
            JournalOutcome::None => clean += 1,
            other => panic!("round {round}: journal left: {other:?}"),
        }
        assert!(leftovers(&ova).is_empty());
        let got = check_ova(&fx, &ova, t.path());
        let doc = padding::split_padding(&got.descriptor).0;
        assert!(
            candidates.contains(&support::sha256(doc)),
            "round {round}: the descriptor is not one the child committed"
        );
    }
    println!(
        "{rounds} kills: {replayed} journals replayed, {discarded} discarded, {temps} with temporary files removed, {clean} clean"
    );
}

/// A commit that fails part-way (here: a panic from the fault hook, standing in for an I/O
/// error) leaves the committer able to go on: the next commit completes or discards what
/// was left, reads the archive again and commits.
#[test]
fn failure_mid_commit_then_the_next_commit_goes_on() {
    let stops = [
        FaultPoint::JournalPartial,
        FaultPoint::Applied { op: 0, half: 0 },
        FaultPoint::AppliedDurable,
        FaultPoint::RewriteMember { count: 2 },
        FaultPoint::RewriteDurable,
        FaultPoint::Renamed,
    ];
    for stop in stops {
        let t = tempdir();
        let fx = Fixture::new(t.path(), "fail");
        let ova = fx.build();
        let armed = Arc::new(Mutex::new(true));
        let trigger = armed.clone();
        let hook: commit::FaultHook = Arc::new(move |p| {
            if p == stop && std::mem::replace(&mut *trigger.lock().unwrap(), false) {
                panic!("injected failure at {p:?}");
            }
        });
        let pkg = ovafs::package::open(&ova).unwrap();
        let mut c = Committer::open_with(
            &pkg,
            CommitOptions {
                fault_hook: Some(hook),
                ..Default::default()
            },
        )
        .unwrap();
        let first = if matches!(
            stop,
            FaultPoint::RewriteMember { .. } | FaultPoint::RewriteDurable | FaultPoint::Renamed
        ) {
            with_annotation(&fx.descriptor(), 3000)
        } else {
            with_cpus(&fx.descriptor(), 4)
        };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            c.commit(&ChangeSet::descriptor(first.as_bytes()))
        }));
        assert!(r.is_err(), "{stop:?}: the hook did not fire");
        let second = with_cpus(&first, 6);
        let r = c.commit(&ChangeSet::descriptor(second.as_bytes())).unwrap();
        let got = check_ova(&fx, &ova, t.path());
        assert_eq!(
            padding::split_padding(&got.descriptor).0,
            second.as_bytes(),
            "{stop:?}"
        );
        assert_eq!(got.descriptor, r.descriptor);
        assert!(leftovers(&ova).is_empty(), "{stop:?}");
    }
}
