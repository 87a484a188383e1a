//! `ovafs verify`: check an appliance's manifest digests and certificate, for people (text)
//! or scripts (`--json`).
//!
//! Exit status: 0 when every digest and the signature check out, 1 when anything fails (each
//! failure is named), 2 when the source cannot be read. What fails is decided in
//! [`crate::verify`]. A progress bar is drawn on stderr when it is a terminal and the hashing
//! takes more than a second.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{EXIT_FAILURE, EXIT_OK};
use crate::error::Result;
use crate::verify::{
    CertificateCheck, EntryProblem, FileStatus, Subject, TrustSource, VerifyOptions, VerifyReport,
    verify_subject,
};

/// Exit code when the source cannot be read (a broken package).
pub const EXIT_UNREADABLE: i32 = 2;

/// How long hashing runs before the progress bar appears.
const PROGRESS_DELAY: Duration = Duration::from_secs(1);

/// Options of `ovafs verify`.
#[derive(Debug, Clone, Default)]
pub struct VerifyArgs {
    /// The package.
    pub source: PathBuf,
    /// Print JSON.
    pub json: bool,
    /// Fail unless the signature chains to a trusted root and the certificate is valid now.
    pub require_trusted: bool,
    /// Trusted roots from this PEM file instead of the system store.
    pub ca_file: Option<PathBuf>,
}

/// Runs `ovafs verify`; returns the exit code.
pub fn run(args: &VerifyArgs) -> Result<i32> {
    let unreadable = |e: &dyn std::fmt::Display| {
        if args.json {
            let v = serde_json::json!({
                "source": args.source.display().to_string(),
                "error": e.to_string(),
                "passed": false,
            });
            println!("{v:#}");
        }
        eprintln!("ovafs: {e}");
        Ok(EXIT_UNREADABLE)
    };
    // A FIFO, device or directory is refused at once (the open does not block).
    if let Err(e) = crate::io::open_regular_file(&args.source) {
        return unreadable(&e);
    }
    let subject = match Subject::open(&args.source) {
        Ok(s) => s,
        Err(e) => return unreadable(&e),
    };
    let options = VerifyOptions {
        trust: match &args.ca_file {
            Some(p) => TrustSource::PemFile(p.clone()),
            None => TrustSource::System,
        },
        require_trusted: args.require_trusted,
        ..VerifyOptions::default()
    };
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} hashing {bytes}/{total_bytes} {wide_bar} {binary_bytes_per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let terminal = std::io::stderr().is_terminal();
    let shown = AtomicBool::new(false);
    let start = Instant::now();
    let progress = |p: crate::verify::digest::Progress| {
        bar.set_length(p.total_bytes);
        bar.set_position(p.done_bytes);
        if terminal && !shown.load(Ordering::Relaxed) && start.elapsed() > PROGRESS_DELAY {
            shown.store(true, Ordering::Relaxed);
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
    };
    let result = verify_subject(&subject, &options, &progress);
    bar.finish_and_clear();
    let report = match result {
        Ok(r) => r,
        Err(e) => return unreadable(&e),
    };
    if args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| crate::error::Error::io("JSON", std::io::Error::other(e)))?;
        println!("{text}");
    } else {
        print!("{}", render(&report, start.elapsed(), args.require_trusted));
    }
    Ok(if report.passed { EXIT_OK } else { EXIT_FAILURE })
}

/// The text report.
fn render(r: &VerifyReport, elapsed: Duration, require_trusted: bool) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let shown = Path::new(&r.source)
        .file_name()
        .map_or(r.source.clone(), |n| n.to_string_lossy().into_owned());
    let _ = writeln!(
        out,
        "{shown}: manifest {}",
        r.manifest.as_deref().unwrap_or("(none)")
    );
    for f in &r.files {
        let mut line = format!(
            "  {:<11} {:<7} {}",
            f.status.word(),
            f.algorithm.as_deref().unwrap_or(""),
            f.name
        );
        if let Some(n) = &f.note {
            let _ = write!(line, "  ({n})");
        }
        let _ = writeln!(out, "{}", line.trim_end());
        if f.status == FileStatus::Mismatch {
            let _ = writeln!(
                out,
                "  {:<19} expected {}",
                "",
                f.expected.as_deref().unwrap_or("?")
            );
            let _ = writeln!(
                out,
                "  {:<19} actual   {}",
                "",
                f.actual.as_deref().unwrap_or("?")
            );
        }
    }
    for e in &r.archive_entries {
        let _ = writeln!(out, "  {:<19} {}", entry_word(e.problem), e.name);
    }
    if r.archive_entries_total > r.archive_entries.len() {
        let _ = writeln!(
            out,
            "  {:<19} ({} more archive entries not shown)",
            "",
            r.archive_entries_total - r.archive_entries.len()
        );
    }
    if let Some(c) = &r.certificate {
        render_certificate(&mut out, c);
    }
    for w in &r.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    let checked = r
        .files
        .iter()
        .filter(|f| matches!(f.status, FileStatus::Ok | FileStatus::Mismatch))
        .count();
    let ok = r
        .files
        .iter()
        .filter(|f| f.status == FileStatus::Ok)
        .count();
    let mut summary = format!("{ok} of {checked} digests match");
    if let Some(c) = &r.certificate {
        let _ = write!(
            summary,
            ", signature {}{}, chain {}",
            if c.signature_ok { "ok" } else { "BAD" },
            if c.signer_problems.is_empty() {
                ""
            } else {
                " (signer refused)"
            },
            if c.chain_trusted {
                "trusted"
            } else if require_trusted {
                "untrusted"
            } else {
                "untrusted (not required)"
            }
        );
    } else {
        summary.push_str(", not signed");
    }
    let rate = if elapsed.as_secs_f64() > 0.0 {
        r.bytes_hashed as f64 / elapsed.as_secs_f64() / 1e6
    } else {
        0.0
    };
    let _ = write!(
        summary,
        " ({} hashed in {:.2} s, {rate:.0} MB/s)",
        crate::units::human_size(r.bytes_hashed),
        elapsed.as_secs_f64()
    );
    if r.passed {
        let _ = writeln!(out, "verified: {summary}");
    } else {
        let _ = writeln!(out, "FAILED: {summary}");
        for f in &r.failures {
            let _ = writeln!(out, "  - {f}");
        }
    }
    out
}

/// The word shown before an archive entry that is not a file of the package.
fn entry_word(p: EntryProblem) -> &'static str {
    match p {
        EntryProblem::RefusedName => "REFUSED NAME",
        EntryProblem::Duplicate => "DUPLICATE",
        EntryProblem::NotRegular => "NOT A FILE",
    }
}

/// `digitalSignature, keyEncipherment`, or `absent` when the extension is absent.
fn usage_text(names: Option<&[String]>, absent: &str) -> String {
    match names {
        None => absent.to_string(),
        Some([]) => "nothing ovafs recognises".to_string(),
        Some(n) => n.join(", "),
    }
}

fn render_certificate(out: &mut String, c: &CertificateCheck) {
    use std::fmt::Write;
    let _ = writeln!(out, "certificate {}", c.member);
    if let Some(e) = &c.error {
        let _ = writeln!(out, "  error       {e}");
        return;
    }
    if let Some(s) = &c.signer {
        let _ = writeln!(out, "  subject     {}", s.subject);
        let _ = writeln!(
            out,
            "  issuer      {}{}",
            s.issuer,
            if s.self_issued { " (self-issued)" } else { "" }
        );
        let _ = writeln!(
            out,
            "  valid       {} to {} ({})",
            c.not_before.as_deref().unwrap_or("?"),
            c.not_after.as_deref().unwrap_or("?"),
            if s.valid_now {
                "valid now"
            } else {
                "NOT valid now"
            }
        );
        let _ = writeln!(out, "  key         {}", s.key);
        let _ = writeln!(
            out,
            "  key usage   {}",
            usage_text(s.key_usage.as_deref(), "any (no keyUsage extension)")
        );
        let _ = writeln!(
            out,
            "  ext. usage  {}",
            usage_text(
                s.extended_key_usage.as_deref(),
                "any (no extendedKeyUsage extension)"
            )
        );
    }
    for p in &c.signer_problems {
        let _ = writeln!(out, "  REFUSED     {p}");
    }
    let _ = writeln!(
        out,
        "  signature   {} ({} over {})",
        c.signature,
        c.algorithm.as_deref().unwrap_or("?"),
        c.manifest_name.as_deref().unwrap_or("?")
    );
    let _ = writeln!(
        out,
        "  chain       {}: {} [{}]",
        if c.chain_trusted {
            "trusted"
        } else {
            "untrusted"
        },
        c.chain,
        c.trust_store
    );
    for n in &c.notes {
        let _ = writeln!(out, "  note        {n}");
    }
}
