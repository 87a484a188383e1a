//! kill -9 during guest writes and during commits (issue 11, section 5): after each kill the
//! OVA is the old one or a new valid one, every write an fsync acknowledged reads back, and
//! every block is old or new bytes, never anything else. Seeded: each test prints its seed;
//! `OVAFS_CRASH_WRITES_SEED=N` repeats a run.
//!
//! Contents:
//! - `crash_writer_child`: the writer, this test binary re-run with `OVAFS_CRASH_WRITER`
//!   set (`--ignored --exact crash_writer_child`): runs a [`model::Plan`] against a file and
//!   keeps an acknowledgement log outside the mount.
//! - `judge_against_a_plain_file`: the writer killed against a plain file, and the judge
//!   shown to refuse a lost acknowledged write, a foreign value and a short length (so the
//!   tests below can fail).
//! - `kill_the_daemon_during_writes`: the daemon killed while the writer runs (O_DIRECT
//!   and buffered rounds); remount; the judge reads the disk back.
//! - `kill_the_daemon_during_commit`, `kill_the_offline_commit`: `ovafs commit MNT` with the
//!   daemon killed at a random delay, and `ovafs commit SRC` killed itself; the OVA is old or
//!   new (`ovafs verify`, GNU tar), the remounted disk equals the model; at the end a last
//!   commit runs to completion and qemu-img reads the committed VMDK out of the OVA.
//! - `kill_the_daemon_during_commit_at_umount`: `-o commit=umount`, the daemon killed while
//!   it commits after `ovafs umount` unmounted it; the same judges.
//! - `kill_qemu_during_writes`: `qemu-io -t none` writes and flushes through the mount and
//!   is killed at random; the mount goes on serving, and every write qemu-io finished reads
//!   back; after an fsync, a clean umount and a remount too.
//! - `kill_the_daemon_under_qemu`: the same qemu-io runs with the daemon killed instead;
//!   after the remount every write whose flush returned reads back.
//! - `a_clean_umount_keeps_unsynced_writes`: writes never fsynced survive `ovafs umount`.
//!
//! Kill points per run: 40 + 20 + 20 + 10 + 30 + 15 = 135 (and 6 writer kills on a plain file).

mod common;
#[path = "crash_model.rs"]
mod model;
#[path = "commit_support.rs"]
mod support;

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{Mount, OvaBuilder, daemon_pid, ovafs, qemu_stream_vmdk, run_ok, tool};
use model::{BLOCK, Io, LogState, Op, Plan, Rng, Verdict, judge, read_log, run_plan};

/// Tells `crash_writer_child` what to do: the target, the log, then the plan's spec.
const WRITER_ENV: &str = "OVAFS_CRASH_WRITER";
/// Repeats a run.
const SEED_ENV: &str = "OVAFS_CRASH_WRITES_SEED";

/// The disk: a few MiB, grown by each writer run by up to `GROWTH`, to at most `MAX_DISK`.
const DISK_BYTES: u64 = 4 << 20;
const GROWTH: u64 = 128 << 10;
const MAX_DISK: u64 = 10 << 20;

/// How far a writer run starting at `len` bytes may grow the disk.
fn grown(len: u64) -> u64 {
    (len + GROWTH).min(MAX_DISK)
}
/// Operations per writer run (the kill comes at a random one of them).
const WRITER_OPS: usize = 300;
/// Longest a child may take to notice that its daemon died, or a commit to end.
const PATIENCE: Duration = Duration::from_secs(20);

/// The writer side.
#[test]
#[ignore = "child process of the crash tests (runs only with OVAFS_CRASH_WRITER set)"]
fn crash_writer_child() {
    let Ok(spec) = std::env::var(WRITER_ENV) else {
        eprintln!("{WRITER_ENV} is not set: nothing to do");
        return;
    };
    let lines: Vec<&str> = spec.lines().collect();
    let plan = Plan::from_spec(&lines[2..]);
    run_plan(&plan, Path::new(lines[0]), Path::new(lines[1]));
    // Wait to be killed: the parent expects SIGKILL (or a failure logged after a kill).
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn spawn_writer(plan: &Plan, target: &Path, log: &Path) -> Child {
    // A log left by the last run would be read as this one's until the writer truncates it.
    let _ = fs::remove_file(log);
    let spec = format!(
        "{}\n{}\n{}",
        target.display(),
        log.display(),
        plan.to_spec()
    );
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "crash_writer_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WRITER_ENV, spec)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The run's seed: from `OVAFS_CRASH_WRITES_SEED`, else the clock; printed.
fn seed(test: &str) -> u64 {
    let seed = common::seed_from_env(SEED_ENV);
    println!("{test}: seed {seed} ({SEED_ENV}={seed} to repeat)");
    seed
}

/// Waits until the writer's log shows operation `k` begun (or the writer stopped).
fn wait_for_begin(log: &Path, k: usize, writer: &mut Child) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let st = read_log(log);
        if st.begun.is_some_and(|b| b >= k) || st.ended || st.failure.is_some() {
            return;
        }
        if let Some(status) = writer.try_wait().unwrap() {
            panic!(
                "the writer ended on its own ({status}): {}",
                stderr_of(writer)
            );
        }
        assert!(
            Instant::now() < deadline,
            "the writer stalled before op {k}"
        );
        std::thread::sleep(Duration::from_micros(500));
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

/// Waits for `child` for at most [`PATIENCE`]; `None` if it is still running.
fn wait_bounded(child: &mut Child) -> Option<ExitStatus> {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

fn sigkill(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

/// Whether process `pid` (not our child) still runs (a zombie does not).
fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap()
            .trim_start()
            .starts_with('Z'),
    }
}

/// Waits until process `pid` (not our child) is gone or a zombie.
fn wait_gone(pid: i32) {
    let deadline = Instant::now() + PATIENCE;
    while alive(pid) {
        assert!(Instant::now() < deadline, "process {pid} survived SIGKILL");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Kills the daemon serving `ova` with SIGKILL and waits until it is gone.
fn kill_daemon(ova: &Path) {
    let pid = daemon_pid(ova);
    sigkill(pid);
    wait_gone(pid);
}

fn read_all(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Runs `plan` against a plain file, kills the writer at a random operation, and judges.
fn plain_file_round(rng: &mut Rng, io: Io, file: &Path, log: &Path) -> Verdict {
    let before = read_all(file);
    let plan = Plan {
        seed: rng.next_u64(),
        io,
        start_len: before.len() as u64,
        max_len: grown(before.len() as u64),
        count: WRITER_OPS,
    };
    let mut w = spawn_writer(&plan, file, log);
    wait_for_begin(log, 1 + rng.below(WRITER_OPS as u64 - 1) as usize, &mut w);
    w.kill().unwrap();
    let st = w.wait().unwrap();
    assert_eq!(st.signal(), Some(9), "{}", stderr_of(&mut w));
    let state = read_log(log);
    assert!(state.failure.is_none(), "writer failed: {state:?}");
    judge(&before, &plan.ops(), &state, &read_all(file))
        .unwrap_or_else(|e| panic!("plain file, {io:?}: {e}"))
}

#[test]
fn judge_against_a_plain_file() {
    let t = common::tempdir();
    let mut rng = Rng::new(seed("judge_against_a_plain_file"));
    let file = t.path().join("disk.raw");
    fs::write(&file, model::payload(rng.next_u64(), DISK_BYTES)).unwrap();
    let log = t.path().join("ack.log");
    for io in [Io::Direct, Io::Buffered, Io::Direct, Io::Buffered] {
        let v = plain_file_round(&mut rng, io, &file, &log);
        println!("plain file, {io:?}: {v:?}");
        assert!(v.exact_blocks > 0);
    }
    let mut image = read_all(&file);
    for _ in 0..2 {
        let (seen, got) =
            qemu_round_judged(&file, &mut rng, &image, Victim::Qemu, || file.clone()).unwrap();
        println!("plain file, qemu-io: killed after {seen} writes");
        image = got;
    }
    judge_refuses_what_it_must(&mut rng);
}

/// The judge accepts a disk holding every operation, and refuses one that lost an
/// acknowledged write, holds a value no operation wrote, or is shorter than acknowledged.
fn judge_refuses_what_it_must(rng: &mut Rng) {
    let base = model::payload(rng.next_u64(), DISK_BYTES);
    let plan = Plan {
        seed: rng.next_u64(),
        io: Io::Buffered,
        start_len: DISK_BYTES,
        max_len: grown(DISK_BYTES),
        count: WRITER_OPS,
    };
    let ops = plan.ops();
    let syncs: Vec<usize> = (0..ops.len())
        .filter(|&i| matches!(ops[i], Op::Sync { .. }))
        .collect();
    let acked = syncs[syncs.len() / 2];
    let log = LogState::through(&ops, Some(acked), Some(ops.len() - 1));
    let mut all = base.clone();
    ops.iter()
        .for_each(|op| model::apply_to_image(&mut all, op));
    let mut durable = base.clone();
    ops[..=acked]
        .iter()
        .for_each(|op| model::apply_to_image(&mut durable, op));
    let v = judge(&base, &ops, &log, &all).unwrap();
    assert!(v.new_blocks > 0 && v.exact_blocks > 0, "{v:?}");

    // The last acknowledged write, lost (its blocks back to the base) where nothing later
    // touched them.
    let last_write = (0..=acked)
        .rev()
        .find(|&i| {
            matches!(ops[i], Op::Write { offset, len, .. }
                if !touched_later(&ops[acked + 1..], offset, len))
        })
        .expect("a write acknowledged and untouched later");
    let Op::Write { offset, len, .. } = ops[last_write] else {
        unreachable!()
    };
    let mut lost = all.clone();
    for (at, byte) in lost
        .iter_mut()
        .enumerate()
        .skip(offset as usize)
        .take(len as usize)
    {
        *byte = base.get(at).copied().unwrap_or(0);
    }
    assert!(
        judge(&base, &ops, &log, &lost).is_err(),
        "a lost write passed"
    );

    // A byte no operation wrote (payload bytes are odd), in a block touched later.
    let touched = ops[acked + 1..]
        .iter()
        .find_map(|op| match *op {
            Op::Write { offset, .. } => Some(offset),
            _ => None,
        })
        .unwrap();
    let mut foreign = all.clone();
    foreign[touched as usize] = 0xEE;
    assert!(
        judge(&base, &ops, &log, &foreign).is_err(),
        "a foreign value passed"
    );

    // Shorter than acknowledged.
    let short = &all[..durable.len() - BLOCK as usize];
    assert!(
        judge(&base, &ops, &log, short).is_err(),
        "a short disk passed"
    );
}

fn touched_later(later: &[Op], offset: u64, len: u64) -> bool {
    later.iter().any(|op| match *op {
        Op::Write {
            offset: o, len: l, ..
        }
        | Op::Fill {
            offset: o, len: l, ..
        }
        | Op::Zero {
            offset: o, len: l, ..
        } => o < offset + len && offset < o + l,
        Op::Grow { .. } | Op::Sync { .. } => false,
    })
}

/// An OVA with one stream-optimized disk (`disks/disk1.raw` on the mount) made by qemu-img.
struct Appliance {
    _dir: tempfile::TempDir,
    ova: PathBuf,
    mnt: PathBuf,
    work: PathBuf,
    /// The disk's content as the OVA was built.
    raw: PathBuf,
}

impl Appliance {
    fn new(seed: u64) -> Appliance {
        let dir = common::tempdir();
        let work = dir.path().join("work");
        fs::create_dir_all(&work).unwrap();
        let (raw, vmdk) = qemu_stream_vmdk(&work, "disk1", DISK_BYTES, 6, seed);
        let ova = OvaBuilder::new(&dir.path().join("pkg"), "crash")
            .disk(&vmdk, DISK_BYTES, ovafs::sample::VMDK_STREAM_URI)
            .build();
        Appliance {
            mnt: dir.path().join("mnt"),
            ova,
            work,
            raw,
            _dir: dir,
        }
    }

    fn mount(&self) -> Mount {
        self.mount_with(&[])
    }

    fn mount_with(&self, opts: &[&str]) -> Mount {
        let (m, err) = Mount::bounded(&self.ova, &self.mnt, opts, 30);
        m.unwrap_or_else(|| panic!("mount failed: {err}"))
    }

    fn flat(&self) -> PathBuf {
        self.mnt.join("disks/disk1.raw")
    }

    /// `ovafs status --json MNT` of the disk.
    fn status(&self) -> serde_json::Value {
        let out = run_ok(
            Command::new(ovafs())
                .args(["status", "--json"])
                .arg(&self.mnt),
        );
        let states: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(states[0]["disk"], "disk1.raw", "{states}");
        states[0].clone()
    }
}

/// One writer run on the mount, the daemon killed at a random operation, the mount cleaned
/// and remounted; returns the remounted guard, the judge's verdict and the new content.
fn daemon_kill_round(
    app: &Appliance,
    m: Mount,
    rng: &mut Rng,
    io: Io,
    before: &[u8],
) -> (Mount, Verdict, Vec<u8>) {
    let log = app.work.join("ack.log");
    let plan = Plan {
        seed: rng.next_u64(),
        io,
        start_len: before.len() as u64,
        max_len: grown(before.len() as u64),
        count: WRITER_OPS,
    };
    let mut w = spawn_writer(&plan, &app.flat(), &log);
    wait_for_begin(&log, 1 + rng.below(WRITER_OPS as u64 - 1) as usize, &mut w);
    std::thread::sleep(Duration::from_micros(rng.below(2000)));
    kill_daemon(&app.ova);
    // The writer's next request fails (ENOTCONN) and it logs that, or it is between
    // operations and must be killed.
    std::thread::sleep(Duration::from_millis(5));
    let _ = w.kill();
    assert!(wait_bounded(&mut w).is_some(), "the writer hung");
    drop(m);
    let m = app.mount();
    let status = app.status();
    assert!(
        status["synced"] == true && status["read_only"].is_null(),
        "after the remount ovafs status says {status}"
    );
    let got = read_all(&app.flat());
    let state = read_log(&log);
    let v = judge(before, &plan.ops(), &state, &got).unwrap_or_else(|e| {
        panic!(
            "{io:?} plan seed {}: {e} (last ack: op {:?}, last begun: op {:?}, writer error: {:?})",
            plan.seed, state.acked, state.begun, state.failure
        )
    });
    (m, v, got)
}

#[test]
fn kill_the_daemon_during_writes() {
    let seed = seed("kill_the_daemon_during_writes");
    let mut rng = Rng::new(seed);
    let app = Appliance::new(seed);
    let mut m = app.mount();
    let mut image = read_all(&app.flat());
    assert_eq!(image, read_all(&app.raw));
    let rounds = 40;
    let (mut acked, mut unacked, mut new, mut old) = (0, 0, 0, 0);
    for round in 0..rounds {
        let io = if round % 2 == 0 {
            Io::Direct
        } else {
            Io::Buffered
        };
        let (next, v, got) = daemon_kill_round(&app, m, &mut rng, io, &image);
        m = next;
        image = got;
        acked += v.acked_ops;
        unacked += v.unacked_ops;
        new += v.new_blocks;
        old += v.old_blocks;
    }
    println!(
        "{rounds} daemon kills during writes: {acked} operations acknowledged and read back, \
         {unacked} begun but not acknowledged; of the blocks these touched {new} read new \
         and {old} old bytes; final length {}",
        image.len()
    );
    m.umount();
}

/// `ovafs COMMAND TARGET`, started (its stderr kept for the verdict).
fn spawn_ovafs(command: &str, target: &Path) -> Child {
    Command::new(ovafs())
        .arg(command)
        .arg(target)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `ovafs commit TARGET`, started.
fn spawn_commit(target: &Path) -> Child {
    spawn_ovafs("commit", target)
}

/// Writes a few fsynced changes through the mount and applies them to `image`.
fn change_disk(app: &Appliance, rng: &mut Rng, image: &mut Vec<u8>) {
    let plan = Plan {
        seed: rng.next_u64(),
        io: Io::Buffered,
        start_len: image.len() as u64,
        max_len: grown(image.len() as u64),
        count: 30,
    };
    run_plan(&plan, &app.flat(), &app.work.join("changes.log"));
    let st = read_log(&app.work.join("changes.log"));
    assert!(st.ended, "the changes failed: {st:?}");
    File::options()
        .write(true)
        .open(app.flat())
        .unwrap()
        .sync_all()
        .unwrap();
    plan.ops()
        .iter()
        .for_each(|op| model::apply_to_image(image, op));
}

/// Which OVA a kill left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Left {
    Old,
    New,
}

/// The OVA must be byte for byte the one before the commit, or a new one that GNU tar lists
/// and `ovafs verify` passes, whose disk member (extracted by GNU tar, read by qemu-img) is
/// the model: every change was fsynced before the commit began, so a commit that replaced
/// the OVA holds all of them.
fn judge_ova(app: &Appliance, old: &[u8], image: &[u8]) -> Left {
    if read_all(&app.ova) == old {
        return Left::Old;
    }
    let out = Command::new(ovafs())
        .arg("verify")
        .arg(&app.ova)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the OVA changed and does not verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        committed_disk(app) == image,
        "the new OVA's disk is not the model"
    );
    Left::New
}

/// The disk member of the OVA as raw bytes: GNU tar extracts it, qemu-img converts it.
fn committed_disk(app: &Appliance) -> Vec<u8> {
    let out = app.work.join("extracted");
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out).unwrap();
    run_ok(
        Command::new(tool("tar"))
            .arg("-xf")
            .arg(&app.ova)
            .arg("-C")
            .arg(&out),
    );
    let raw = app.work.join("committed.raw");
    common::qemu_to_raw(&out.join("disk1.vmdk"), "vmdk", &raw);
    read_all(&raw)
}

/// The time an uninterrupted commit takes: the kill delays are drawn up to 1.3 times it.
fn timed_commit(target: &Path) -> Duration {
    let start = Instant::now();
    let mut c = spawn_commit(target);
    let st = wait_bounded(&mut c).expect("commit hung");
    assert!(st.success(), "commit failed: {}", stderr_of(&mut c));
    start.elapsed()
}

/// What the killed commits left.
#[derive(Debug, Default)]
struct CommitTally {
    /// Killed (the commit process, or its daemon) before the OVA was replaced.
    killed_left_old: usize,
    /// Killed after the OVA was replaced.
    killed_left_new: usize,
    /// Finished before the kill.
    completed: usize,
    /// Of all these, the kills that waited for the rename.
    at_rename: usize,
}

impl CommitTally {
    /// One kill: whether the commit finished before it (`ovafs commit` exited 0, or the
    /// daemon committing at umount had exited), what it left, and when it came.
    fn add(&mut self, finished: bool, left: Left, moment: Moment) {
        self.at_rename += usize::from(moment == Moment::Renamed);
        match (finished, left) {
            (true, Left::New) => self.completed += 1,
            (true, Left::Old) => panic!("the commit finished but the OVA is the old one"),
            (false, Left::Old) => self.killed_left_old += 1,
            (false, Left::New) => self.killed_left_new += 1,
        }
    }
}

/// A failed `ovafs commit` must say why, unless it was killed itself.
fn says_why(status: ExitStatus, err: &str) {
    assert!(
        status.success() || status.signal() == Some(9) || !err.trim().is_empty(),
        "commit failed ({status}) without a message"
    );
}

/// After a remount: the disk reads as the model and opens for writing (an overlay that a
/// completed commit left behind is not refused as stale), `ovafs status` shows it changed
/// exactly when the OVA is the old one, and no journal or temporary file of an interrupted
/// commit is left beside the OVA (the mount recovers them).
fn remounted_disk_is_the_model(app: &Appliance, image: &[u8], round: usize, left: Left) {
    assert!(
        read_all(&app.flat()) == image,
        "round {round}: after the kill ({left:?} OVA) the disk is not the model"
    );
    let state = app.status();
    assert_eq!(
        (&state["changed"], &state["synced"], &state["read_only"]),
        (
            &serde_json::json!(left == Left::Old),
            &serde_json::json!(true),
            &serde_json::Value::Null
        ),
        "round {round}: after the kill ({left:?} OVA) ovafs status says {state}"
    );
    if let Err(e) = File::options().read(true).write(true).open(app.flat()) {
        panic!(
            "round {round}: after the kill ({left:?} OVA) the disk does not open for writing: {e}"
        );
    }
    assert_eq!(
        support::leftovers(&app.ova),
        Vec::<String>::new(),
        "round {round}"
    );
}

#[test]
fn kill_the_daemon_during_commit() {
    let seed = seed("kill_the_daemon_during_commit");
    let mut rng = Rng::new(seed);
    let app = Appliance::new(seed);
    let mut m = app.mount();
    let mut image = read_all(&app.flat());
    change_disk(&app, &mut rng, &mut image);
    let took = timed_commit(&app.mnt);
    let mut clock = KillClock { took };
    assert!(read_all(&app.flat()) == image, "commit changed the content");
    assert!(committed_disk(&app) == image, "the commit is not the model");
    let mut tally = CommitTally::default();
    let rounds = 20;
    for round in 0..rounds {
        change_disk(&app, &mut rng, &mut image);
        let old = read_all(&app.ova);
        let mut c = spawn_commit(&app.mnt);
        let moment = kill_moment(round, &mut clock, &mut rng, &app.ova, &mut c);
        kill_daemon(&app.ova);
        let status = wait_bounded(&mut c).expect("commit hung after its daemon died");
        let err = stderr_of(&mut c);
        drop(m);
        let left = judge_ova(&app, &old, &image);
        says_why(status, &err);
        tally.add(status.success(), left, moment);
        clock.learn(status.success(), left, moment);
        m = app.mount();
        remounted_disk_is_the_model(&app, &image, round, left);
    }
    println!(
        "{rounds} daemon kills during `ovafs commit MNT` (uninterrupted: {took:?}): {tally:?}"
    );
    m.umount();
    finish_with_a_commit(&app, &image);
}

#[test]
fn kill_the_offline_commit() {
    let seed = seed("kill_the_offline_commit");
    let mut rng = Rng::new(seed);
    let app = Appliance::new(seed);
    let m = app.mount();
    let mut image = read_all(&app.flat());
    change_disk(&app, &mut rng, &mut image);
    m.umount();
    let took = timed_commit(&app.ova);
    let mut clock = KillClock { took };
    assert!(committed_disk(&app) == image, "the commit is not the model");
    let mut tally = CommitTally::default();
    let rounds = 20;
    let mut left = Left::New;
    for round in 0..rounds {
        let m = app.mount();
        remounted_disk_is_the_model(&app, &image, round, left);
        change_disk(&app, &mut rng, &mut image);
        m.umount();
        let old = read_all(&app.ova);
        let mut c = spawn_commit(&app.ova);
        let moment = kill_moment(round, &mut clock, &mut rng, &app.ova, &mut c);
        let _ = c.kill();
        let status = c.wait().unwrap();
        let err = stderr_of(&mut c);
        left = judge_ova(&app, &old, &image);
        says_why(status, &err);
        tally.add(status.success(), left, moment);
        clock.learn(status.success(), left, moment);
    }
    let m = app.mount();
    remounted_disk_is_the_model(&app, &image, rounds, left);
    m.umount();
    println!(
        "{rounds} kills of `ovafs commit SRC` (uninterrupted: {took:?}, last estimate {:?}): {tally:?}",
        clock.took
    );
    finish_with_a_commit(&app, &image);
}

/// `-o commit=umount`: the daemon commits after `ovafs umount` has unmounted it, and is
/// killed during that commit; `ovafs umount` must still return (it completes what it can).
#[test]
fn kill_the_daemon_during_commit_at_umount() {
    let seed = seed("kill_the_daemon_during_commit_at_umount");
    let mut rng = Rng::new(seed);
    let app = Appliance::new(seed);
    let opts = ["commit=umount"];
    let m = app.mount_with(&opts);
    let mut image = read_all(&app.flat());
    change_disk(&app, &mut rng, &mut image);
    let took = timed_umount(m, &app);
    assert!(
        committed_disk(&app) == image,
        "the commit at umount is not the model"
    );
    let mut clock = KillClock { took };
    let mut tally = CommitTally::default();
    let rounds = 10;
    let mut left = Left::New;
    for round in 0..rounds {
        let m = app.mount_with(&opts);
        remounted_disk_is_the_model(&app, &image, round, left);
        change_disk(&app, &mut rng, &mut image);
        let old = read_all(&app.ova);
        let daemon = daemon_pid(&app.ova);
        let mut u = spawn_umount(&app.mnt);
        let moment = kill_moment(round, &mut clock, &mut rng, &app.ova, &mut u);
        // The daemon may have committed and exited already: then there is nothing to kill.
        let finished = !alive(daemon);
        if !finished {
            sigkill(daemon);
        }
        wait_gone(daemon);
        let status = wait_bounded(&mut u).expect("ovafs umount hung after its daemon died");
        assert!(
            status.success(),
            "ovafs umount failed ({status}): {}",
            stderr_of(&mut u)
        );
        drop(m);
        left = judge_ova(&app, &old, &image);
        tally.add(finished, left, moment);
        clock.learn(finished, left, moment);
    }
    let m = app.mount_with(&opts);
    remounted_disk_is_the_model(&app, &image, rounds, left);
    timed_umount(m, &app);
    assert!(
        committed_disk(&app) == image,
        "the last commit at umount is not the model"
    );
    println!(
        "{rounds} daemon kills during the commit at `ovafs umount` (uninterrupted: {took:?}): {tally:?}"
    );
}

/// `ovafs umount MNT`, started.
fn spawn_umount(mnt: &Path) -> Child {
    spawn_ovafs("umount", mnt)
}

/// `ovafs umount` of `m`, not killed; returns how long it took.
fn timed_umount(m: Mount, app: &Appliance) -> Duration {
    let start = Instant::now();
    let mut u = spawn_umount(&app.mnt);
    let st = wait_bounded(&mut u).expect("ovafs umount hung");
    assert!(st.success(), "ovafs umount failed: {}", stderr_of(&mut u));
    drop(m);
    start.elapsed()
}

/// A last commit, not killed, puts the model into the OVA.
fn finish_with_a_commit(app: &Appliance, image: &[u8]) {
    let mut c = spawn_commit(&app.ova);
    let st = wait_bounded(&mut c).expect("commit hung");
    assert!(st.success(), "commit failed: {}", stderr_of(&mut c));
    assert!(
        committed_disk(app) == image,
        "the last commit is not the model"
    );
}

/// What a commit kill waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moment {
    /// A random delay ([`KillClock`]).
    Delay,
    /// The OVA's replacement by its rename (a new inode at its path), then up to 500 µs:
    /// the window between the rename and the overlay's removal, which random delays over a
    /// whole commit seldom hit.
    Renamed,
}

/// Every third round kills at the rename, the others at a random delay; waits for it.
fn kill_moment(
    round: usize,
    clock: &mut KillClock,
    rng: &mut Rng,
    ova: &Path,
    commit: &mut Child,
) -> Moment {
    use std::os::unix::fs::MetadataExt;
    if round % 3 != 2 {
        std::thread::sleep(clock.delay(rng));
        return Moment::Delay;
    }
    let inode = fs::metadata(ova).unwrap().ino();
    let replaced = || fs::metadata(ova).map(|m| m.ino()).unwrap_or(inode) != inode;
    let deadline = Instant::now() + PATIENCE;
    while !replaced() {
        assert!(
            Instant::now() < deadline,
            "the commit never replaced the OVA"
        );
        // Looked at after the exit: the rename may come between the two checks.
        if commit.try_wait().unwrap().is_some() && !replaced() {
            panic!(
                "the commit ended without replacing the OVA: {}",
                stderr_of(commit)
            );
        }
        std::hint::spin_loop();
    }
    std::thread::sleep(Duration::from_micros(rng.below(500)));
    Moment::Renamed
}

/// When to kill a commit: at a random delay up to 1.3 times the time a commit is believed
/// to take, first measured on an uninterrupted commit, then adjusted: a kill that left the
/// old OVA stretches it (the machine is busy, or the kills let changes pile up), a commit
/// that finished first shrinks it, so that the kills spread over the whole commit.
struct KillClock {
    took: Duration,
}

impl KillClock {
    fn delay(&self, rng: &mut Rng) -> Duration {
        Duration::from_micros(rng.below(self.took.as_micros() as u64 * 13 / 10 + 1))
    }

    fn learn(&mut self, finished: bool, left: Left, moment: Moment) {
        if moment == Moment::Renamed {
            return;
        }
        self.took = match (finished, left) {
            (false, Left::Old) => self.took * 5 / 4,
            (true, _) => self.took * 4 / 5,
            (false, Left::New) => self.took,
        };
    }
}

/// `n` aligned pattern writes inside `len` bytes, for qemu-io.
fn qemu_writes(rng: &mut Rng, len: u64, n: usize) -> Vec<Op> {
    (0..n)
        .map(|_| {
            let blocks = 1 + rng.below(16);
            let hot = if rng.below(2) == 0 { 64 } else { len / BLOCK };
            let offset = BLOCK * rng.below(hot - blocks);
            Op::Fill {
                offset,
                len: blocks * BLOCK,
                byte: 1 + rng.below(255) as u8,
            }
        })
        .collect()
}

/// Whom a qemu-io round kills.
#[derive(Clone, Copy)]
enum Victim<'a> {
    /// qemu-io itself; the daemon lives on, so every write qemu-io finished must be there.
    Qemu,
    /// The daemon of the mount of this OVA (then qemu-io); only flushed writes must be.
    Daemon(&'a Path),
}

/// What qemu-io said, line by line.
enum Said {
    Wrote,
    Failed(String),
}

/// qemu-io writing `ops` (each followed by a flush) to `target`, and `victim` killed after
/// a random number of them; returns how many writes qemu-io reported done before anything
/// failed.
fn qemu_kill_round(target: &Path, rng: &mut Rng, ops: &[Op], victim: Victim) -> usize {
    let mut cmd = Command::new(tool("stdbuf"));
    cmd.arg("-oL")
        .arg(tool("qemu-io"))
        .args(["-f", "raw", "-t", "none"]);
    for op in ops {
        let Op::Fill { offset, len, byte } = *op else {
            unreachable!()
        };
        cmd.arg("-c")
            .arg(format!("write -P 0x{byte:02x} {offset} {len}"))
            .arg("-c")
            .arg("flush");
    }
    let mut q = cmd
        .arg(target)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // qemu-io reports a command's result on stdout when it ends, failures included.
    let (tx, rx) = std::sync::mpsc::channel();
    let out = BufReader::new(q.stdout.take().unwrap());
    let reader = std::thread::spawn(move || {
        for line in out.lines() {
            let line = line.unwrap();
            let said = if line.starts_with("wrote ") {
                Said::Wrote
            } else if line.contains("failed") {
                Said::Failed(line)
            } else {
                continue;
            };
            let _ = tx.send(said);
        }
    });
    let mut seen = 0;
    let mut failure = None;
    let mut count = |said: Said, failure: &mut Option<String>| match said {
        Said::Wrote if failure.is_none() => seen += 1,
        Said::Wrote => {}
        Said::Failed(line) => *failure = failure.take().or(Some(line)),
    };
    let kill_after = rng.below(ops.len() as u64) as usize;
    let deadline = Instant::now() + PATIENCE;
    let mut heard = 0;
    while heard < kill_after && failure.is_none() {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(said) => {
                heard += 1;
                count(said, &mut failure);
            }
            Err(_) if q.try_wait().unwrap().is_some() => break,
            Err(_) => assert!(Instant::now() < deadline, "qemu-io stalled"),
        }
    }
    std::thread::sleep(Duration::from_micros(rng.below(3000)));
    if let Victim::Daemon(ova) = victim {
        kill_daemon(ova);
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = q.kill();
    let status = q.wait().unwrap();
    reader.join().unwrap();
    rx.try_iter().for_each(|said| count(said, &mut failure));
    if let Victim::Qemu = victim {
        assert!(failure.is_none(), "qemu-io: {}", failure.unwrap());
        if status.signal() != Some(9) {
            assert!(
                status.success() && seen == ops.len(),
                "qemu-io failed ({status}): {}",
                stderr_of(&mut q)
            );
        }
    }
    seen
}

/// Writes per qemu-io run.
const QEMU_WRITES: usize = 60;

/// One qemu-io round against `target` (whose content was `before`), killing `victim`, then
/// judged (after `remount`, which returns the path to read): with the daemon alive, every
/// write qemu-io reported done is there and the one after may be in flight; with the daemon
/// killed, every write whose flush returned (qemu-io went on to the next write) is there,
/// the last one reported and the next may be lost. Returns how many writes qemu-io
/// reported and the new content.
fn qemu_round_judged(
    target: &Path,
    rng: &mut Rng,
    before: &[u8],
    victim: Victim,
    remount: impl FnOnce() -> PathBuf,
) -> Result<(usize, Vec<u8>), String> {
    let ops = qemu_writes(rng, before.len() as u64, QEMU_WRITES);
    let seen = qemu_kill_round(target, rng, &ops, victim);
    let durable = match victim {
        Victim::Qemu => seen,
        Victim::Daemon(_) => seen.saturating_sub(1),
    };
    let log = LogState::through(&ops, durable.checked_sub(1), Some(seen.min(ops.len() - 1)));
    let got = read_all(&remount());
    judge(before, &ops, &log, &got).map_err(|e| format!("after {seen} writes: {e}"))?;
    Ok((seen, got))
}

#[test]
fn kill_qemu_during_writes() {
    let seed = seed("kill_qemu_during_writes");
    let mut rng = Rng::new(seed);
    let app = Appliance::new(seed);
    let m = app.mount();
    let mut image = read_all(&app.flat());
    let rounds = 30;
    let (mut done, mut in_flight) = (0, 0);
    for round in 0..rounds {
        let (seen, got) =
            qemu_round_judged(&app.flat(), &mut rng, &image, Victim::Qemu, || app.flat())
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
        done += seen;
        in_flight += usize::from(seen < QEMU_WRITES);
        image = got;
    }
    // The last write qemu-io finished may have missed its flush: an fsync makes it durable
    // (what a clean umount does with unsynced writes is `a_clean_umount_keeps_unsynced_writes`).
    File::open(app.flat()).unwrap().sync_all().unwrap();
    m.umount();
    let m = app.mount();
    assert!(
        read_all(&app.flat()) == image,
        "after a clean umount and remount the disk lost writes qemu-io finished"
    );
    m.umount();
    println!(
        "{rounds} qemu-io kills: {done} writes reported done and read back, {in_flight} \
         rounds killed with a write in flight"
    );
}

#[test]
fn kill_the_daemon_under_qemu() {
    let seed = seed("kill_the_daemon_under_qemu");
    let mut rng = Rng::new(seed);
    let app = Appliance::new(seed);
    let mut m = Some(app.mount());
    let mut image = read_all(&app.flat());
    let rounds = 15;
    let mut reported = 0;
    for round in 0..rounds {
        let remount = || {
            drop(m.take());
            m = Some(app.mount());
            app.flat()
        };
        let victim = Victim::Daemon(&app.ova);
        let (seen, got) = qemu_round_judged(&app.flat(), &mut rng, &image, victim, remount)
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        reported += seen;
        image = got;
    }
    m.take().unwrap().umount();
    println!(
        "{rounds} daemon kills under qemu-io: {reported} writes reported done, all but the \
         last of each round flushed and read back after the remount"
    );
}

/// A clean `ovafs umount` is no crash: writes that returned but were never fsynced must
/// still be there after the remount (the overlay's changes persist across umount and
/// remount; only a crash may lose unsynced writes).
#[test]
fn a_clean_umount_keeps_unsynced_writes() {
    let app = Appliance::new(11);
    let mut image = read_all(&app.raw);
    for (io, byte) in [(Io::Buffered, 0x77), (Io::Direct, 0x78)] {
        let m = app.mount();
        let op = Op::Fill {
            offset: 65536,
            len: 3 * BLOCK,
            byte,
        };
        model::run_ops(&model::open_target(&app.flat(), io), &[op]);
        model::apply_to_image(&mut image, &op);
        assert!(
            read_all(&app.flat()) == image,
            "{io:?}: not even on the live mount"
        );
        m.umount();
        let m = app.mount();
        assert!(
            read_all(&app.flat()) == image,
            "{io:?}: a write that was not fsynced is lost after a clean umount and remount"
        );
        m.umount();
    }
}
