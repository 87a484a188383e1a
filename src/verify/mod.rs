//! Integrity of a package: the manifest's digests and the certificate's signature
//! (docs/formats.md §3, §6 rule 14). [`verify_package`] is what `ovafs verify` runs.
//!
//! - [`manifest`]: lenient parser for every manifest dialect, style-preserving formatter.
//! - [`digest`]: SHA-1/SHA-224/SHA-256/SHA-384/SHA-512 of many members in one pass, on every core.
//! - [`cert`]: the `.cert` file, the signature over the manifest, the chain of trust.
//!
//! # What is checked, and what fails
//! Names in the manifest are relative to the descriptor's folder. Each one is matched to:
//! a member of that exact name; else, for a chunked File (`ovf:chunkSize`), the href of the
//! whole file (the digest of the chunks joined: docs/formats.md §1.6 says manifests name the
//! chunks, so both forms are accepted); else a member whose name differs only in case (a
//! warning is recorded); else, for an unpacked package, a regular file inside its folder.
//! Digests are over the bytes as stored: a gzip-compressed File is hashed compressed.
//!
//! Fails (exit 1 in `ovafs verify`), each named in [`VerifyReport::failures`]:
//! - no manifest at all, or a manifest that lists no file (nothing would be verified);
//! - a digest that does not match (`MISMATCH`), a listed file that is not in the package
//!   (`missing`), a line that cannot be read or whose digest has the wrong length for its
//!   algorithm, a file listed only with algorithms ovafs cannot compute (MD5, SIZE, ...);
//! - a member not listed in the manifest (`not listed`), as XenAdmin decides: its content
//!   would be served unverified; for a file the descriptor references, the line says so;
//! - **the descriptor not listed, when a trusted signature is required**: the signature
//!   covers the manifest and nothing else, so a signed manifest without the descriptor's
//!   line lets anyone swap the descriptor (its disks' formats, their capacities, the
//!   properties and the hardware) under a valid signature. ovftool 4.0 and VirtualBox 5.0
//!   wrote such packages (the corpus's tdAppliance1-t4/t5) and VirtualBox accepts them by
//!   inserting the digest of the descriptor it read. Without `--require-trusted` this is
//!   what the manifest simply does not list, which stays a warning (issue 9 §5): a loud one
//!   for a signed package ("the signature does not cover it");
//! - an archive entry that is not a file of the package ([`Subject::archive_entries`]): a
//!   refused name (absolute, `..`, control characters: skipped by the archive index), a
//!   duplicate (only the last copy is served, while tools that extract the first or verify
//!   another copy see different bytes), or a non-regular entry (hard or symbolic link,
//!   device, FIFO, sparse);
//! - a certificate that cannot be parsed, a signature that does not verify (`BAD`) or cannot
//!   be checked, a certificate without a manifest;
//! - a signer's certificate that breaks a rule of [`cert::signer_problems`]: a key below
//!   2048-bit RSA / 256-bit EC or of another type, a `keyUsage` without `digitalSignature` /
//!   `nonRepudiation`, an `extendedKeyUsage` without `codeSigning` (or
//!   `anyExtendedKeyUsage`). These fail with or without `--require-trusted`: a signature by
//!   such a key does not vouch for anything;
//! - with [`VerifyOptions::require_trusted`]: no certificate, a chain that does not lead to a
//!   trusted root, or a signer certificate outside its validity period.
//!
//! Does not fail, but reported: duplicate identical lines (shown once), an entry for the
//! manifest itself (a file cannot contain its own digest: shown as `self` and ignored, as
//! docs/formats.md §3.1 advises), MD5/SIZE lines next to a supported digest of the same file, an
//! untrusted chain or an expired certificate (unless trust is required), a certificate that
//! names the manifest differently (only the bytes are signed).
//!
//! Errors ([`crate::error::Error`], exit 2): the package or a member cannot be read.

pub mod cert;
pub mod digest;
pub mod manifest;
pub mod subject;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::archive::MemberKind;
use crate::archive::names::file_name;
use crate::error::{Result, ResultExt};
use crate::io::{ReadAt, read_vec_at};
use crate::package::{self, MemberNames, NameMatch, Package, PackageDir};

use cert::{ChainCheck, SignatureCheck, TrustStore};
use digest::{DigestAlgorithm, DigestJob, DigestOptions, Progress};
use manifest::{Manifest, ManifestEntry};
pub use subject::{ArchiveEntry, EntryProblem, Subject};

/// Where the trusted roots come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TrustSource {
    /// The system's store (`/etc/ssl/certs`, `SSL_CERT_FILE`, `SSL_CERT_DIR`).
    #[default]
    System,
    /// The certificates of one PEM file.
    PemFile(PathBuf),
    /// None: every chain is untrusted.
    Nothing,
}

/// How to verify.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Threads and read size for hashing.
    pub digest: DigestOptions,
    /// The trusted roots.
    pub trust: TrustSource,
    /// Fail unless the package is signed by a currently valid certificate whose chain leads to
    /// a trusted root.
    pub require_trusted: bool,
}

/// The verdict on one manifest line (or one unlisted member).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum FileStatus {
    /// The digest matches.
    Ok,
    /// The digest does not match.
    Mismatch,
    /// Listed, but not in the package.
    Missing,
    /// In the package, but not listed.
    NotListed,
    /// An entry for the manifest itself: ignored.
    SelfEntry,
    /// An algorithm ovafs does not compute (MD5, SIZE, ...).
    Unsupported,
    /// A line whose value is unusable (wrong digest length, not hex).
    BadEntry,
}

impl FileStatus {
    /// The word `ovafs verify` prints.
    pub fn word(self) -> &'static str {
        match self {
            FileStatus::Ok => "ok",
            FileStatus::Mismatch => "MISMATCH",
            FileStatus::Missing => "missing",
            FileStatus::NotListed => "not listed",
            FileStatus::SelfEntry => "self",
            FileStatus::Unsupported => "unsupported",
            FileStatus::BadEntry => "bad entry",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileCheck {
    /// The name as the manifest writes it (or the member name, for an unlisted member).
    pub name: String,
    /// The member (or file) it was matched to.
    pub member: Option<String>,
    /// The verdict.
    pub status: FileStatus,
    /// The algorithm (canonical name), for manifest entries.
    pub algorithm: Option<String>,
    /// The digest the manifest gives, lowercase hex (or the value as written when unusable).
    pub expected: Option<String>,
    /// The digest computed, lowercase hex.
    pub actual: Option<String>,
    /// Manifest line number.
    pub line: Option<usize>,
    /// Whether this line makes verification fail.
    pub failed: bool,
    /// Anything worth saying (listed several times, name differs in case, ...).
    pub note: Option<String>,
}

/// The certificate part of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateCheck {
    /// The `.cert` member.
    pub member: String,
    /// Why the file cannot be used, if it cannot (then the fields below are empty).
    pub error: Option<String>,
    /// The signature's digest algorithm.
    pub algorithm: Option<String>,
    /// The manifest name the signature line gives.
    pub manifest_name: Option<String>,
    /// `ok`, `BAD` or `not checked (...)`.
    pub signature: String,
    /// Whether the signature verifies.
    pub signature_ok: bool,
    /// The signer's certificate.
    pub signer: Option<cert::CertificateInfo>,
    /// Start of validity, ISO 8601.
    pub not_before: Option<String>,
    /// End of validity, ISO 8601.
    pub not_after: Option<String>,
    /// Number of certificates in the file.
    pub certificates: usize,
    /// Whether the chain leads to a trusted root (dates not considered).
    pub chain_trusted: bool,
    /// The chain's subjects (trusted) or the reason (untrusted).
    pub chain: String,
    /// Where the roots came from.
    pub trust_store: String,
    /// Anything else (other PEM blocks, text outside blocks, a differently named manifest).
    pub notes: Vec<String>,
    /// The rules of [`cert::signer_problems`] the signer's certificate breaks (`key size:
    /// RSA 1024-bit key, ...`); each is also a failure.
    pub signer_problems: Vec<String>,
}

/// What [`verify_package`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// The package path.
    pub source: String,
    /// The manifest member.
    pub manifest: Option<String>,
    /// One entry per distinct manifest line, then one per unlisted member.
    pub files: Vec<FileCheck>,
    /// The certificate, when there is one.
    pub certificate: Option<CertificateCheck>,
    /// Why the package layer refuses the package, when its members were checked at the
    /// archive level ([`Subject::open`]).
    pub package_error: Option<String>,
    /// Archive entries that are not files of the package (each a failure), at most
    /// [`subject::MAX_ARCHIVE_ENTRIES_KEPT`].
    pub archive_entries: Vec<ArchiveEntry>,
    /// How many such entries there are in all.
    pub archive_entries_total: usize,
    /// Everything that makes verification fail, one sentence each.
    pub failures: Vec<String>,
    /// Things worth knowing that do not fail.
    pub warnings: Vec<String>,
    /// Bytes hashed.
    pub bytes_hashed: u64,
    /// No failures.
    pub passed: bool,
}

/// What a manifest name was matched to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    /// A member, by index.
    Member(usize),
    /// A chunked File as a whole, by index into `Subject::chunked`.
    WholeFile(usize),
    /// A file of an unpacked package that is not a member, by index into `extras`.
    Extra(usize),
    /// The manifest itself.
    SelfManifest,
    /// Nothing: why.
    Missing(String),
}

/// Finds what manifest names refer to.
struct Resolver<'a> {
    pkg: &'a Subject,
    /// The members by name, found by the package layer's rule.
    names: MemberNames<'a>,
    chunked: HashMap<String, usize>,
    /// The folder of an unpacked package.
    dir: Option<Arc<PackageDir>>,
    extras: Vec<(String, Arc<dyn ReadAt>)>,
}

impl<'a> Resolver<'a> {
    fn new(pkg: &'a Subject) -> Self {
        let chunked = pkg
            .chunked
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        Resolver {
            pkg,
            names: MemberNames::new(&pkg.members),
            chunked,
            dir: pkg.dir.clone(),
            extras: Vec::new(),
        }
    }

    /// The target of `name`, and a note when the match is not exact.
    fn resolve(&mut self, name: &str) -> (Target, Option<String>) {
        let full = match package::lookup::name_in(&self.pkg.folder, name) {
            Ok(n) => n,
            Err(p) => return (Target::Missing(format!("name refused: {p}")), None),
        };
        let found = self.names.find(&full);
        if let Some(NameMatch::Exact(i)) = found {
            if Some(i) == self.pkg.manifest_member {
                return (Target::SelfManifest, None);
            }
            return (Target::Member(i), None);
        }
        if let Some(&f) = self.chunked.get(&full) {
            return (
                Target::WholeFile(f),
                Some("chunked file: the chunks joined".into()),
            );
        }
        if let Some(NameMatch::CaseDiffers(i)) = found {
            let member = self.pkg.members.get(i).map_or("", |m| m.name.as_str());
            let note = Some(format!("matched {member:?}, whose name differs in case"));
            if Some(i) == self.pkg.manifest_member {
                return (Target::SelfManifest, note);
            }
            return (Target::Member(i), note);
        }
        if let Some(dir) = &self.dir
            && let Ok(Some(m)) = dir.open_member(&full)
        {
            self.extras.push((full, m.data));
            return (Target::Extra(self.extras.len() - 1), None);
        }
        (Target::Missing("not in the package".into()), None)
    }

    fn member_name(&self, t: &Target) -> Option<String> {
        match t {
            Target::Member(i) => self.pkg.members.get(*i).map(|m| m.name.clone()),
            Target::WholeFile(f) => self.pkg.chunked.get(*f).map(|c| c.name.clone()),
            Target::Extra(e) => self.extras.get(*e).map(|(n, _)| n.clone()),
            Target::SelfManifest => self
                .pkg
                .manifest_member
                .and_then(|i| self.pkg.members.get(i))
                .map(|m| m.name.clone()),
            Target::Missing(_) => None,
        }
    }

    /// The bytes of a target and its position in the archive.
    fn source(&self, t: &Target) -> Option<(Arc<dyn ReadAt>, u64)> {
        match t {
            Target::Member(i) => self
                .pkg
                .members
                .get(*i)
                .map(|m| (m.data.clone(), m.data_offset.unwrap_or(*i as u64))),
            Target::WholeFile(f) => {
                let file = self.pkg.chunked.get(*f)?;
                let pos = file
                    .chunks
                    .first()
                    .and_then(|i| self.pkg.members.get(*i))
                    .and_then(|m| m.data_offset)
                    .unwrap_or(0);
                Some((file.data.clone(), pos))
            }
            Target::Extra(e) => self.extras.get(*e).map(|(_, d)| (d.clone(), u64::MAX)),
            Target::SelfManifest | Target::Missing(_) => None,
        }
    }

    /// Members whose bytes a target covers.
    fn covered(&self, t: &Target) -> Vec<usize> {
        match t {
            Target::Member(i) => vec![*i],
            Target::WholeFile(f) => self
                .pkg
                .chunked
                .get(*f)
                .map(|c| c.chunks.clone())
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }
}

/// One distinct manifest line and how often it appears.
struct Distinct<'m> {
    entry: &'m ManifestEntry,
    count: usize,
    target: Target,
    note: Option<String>,
}

/// Verifies an opened package: every manifest digest, the certificate's signature and
/// chain. Fails only when something cannot be read; everything else is in the report.
pub fn verify_package(
    pkg: &Package,
    options: &VerifyOptions,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<VerifyReport> {
    verify_subject(&Subject::from_package(pkg), options, progress)
}

/// Opens `path` ([`Subject::open`]: falls back to the archive level when the package layer
/// refuses the descriptor) and verifies it.
pub fn verify_path(
    path: &Path,
    options: &VerifyOptions,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<VerifyReport> {
    verify_subject(&Subject::open(path)?, options, progress)
}

/// Verifies what [`Subject`] describes.
pub fn verify_subject(
    pkg: &Subject,
    options: &VerifyOptions,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<VerifyReport> {
    let mut report = VerifyReport {
        source: pkg.path.display().to_string(),
        warnings: pkg.warnings.clone(),
        package_error: pkg.package_error.clone(),
        ..VerifyReport::default()
    };
    if let Some(e) = &pkg.package_error {
        report.warnings.push(format!(
            "the package cannot be mounted ({e}); its members were checked at the archive level"
        ));
    }
    check_archive_entries(pkg, &mut report);
    let manifest_bytes = match pkg.manifest_member.and_then(|i| pkg.members.get(i)) {
        None => {
            report
                .failures
                .push("no manifest (.mf): nothing is verified".into());
            None
        }
        Some(m) => {
            report.manifest = Some(m.name.clone());
            if m.size > manifest::MAX_MANIFEST_BYTES {
                report.failures.push(format!(
                    "manifest {}: {}",
                    m.name,
                    manifest::ManifestError::TooLarge {
                        size: m.size,
                        limit: manifest::MAX_MANIFEST_BYTES
                    }
                ));
                None
            } else {
                Some(
                    read_vec_at(
                        &*m.data,
                        "manifest",
                        0,
                        m.size,
                        manifest::MAX_MANIFEST_BYTES,
                    )
                    .with_context(|| format!("reading {}", m.name))?,
                )
            }
        }
    };
    if let Some(bytes) = &manifest_bytes {
        match manifest::parse(bytes) {
            Ok(mf) => check_digests(pkg, &mf, options, progress, &mut report)?,
            Err(e) => report.failures.push(format!(
                "manifest {}: {e}",
                report.manifest.as_deref().unwrap_or("")
            )),
        }
    }
    check_certificate(pkg, manifest_bytes.as_deref(), options, &mut report)?;
    report.passed = report.failures.is_empty();
    Ok(report)
}

/// Most archive entries named one by one in [`VerifyReport::failures`]; the others are
/// counted in one line (all of the kept ones are in [`VerifyReport::archive_entries`]).
const ARCHIVE_FAILURES_NAMED: usize = 20;

/// One failure per archive entry that is not a file of the package.
fn check_archive_entries(pkg: &Subject, report: &mut VerifyReport) {
    report.archive_entries = pkg.archive_entries.clone();
    report.archive_entries_total = pkg.archive_entries_total;
    for e in pkg.archive_entries.iter().take(ARCHIVE_FAILURES_NAMED) {
        report.failures.push(e.to_string());
    }
    let named = pkg.archive_entries.len().min(ARCHIVE_FAILURES_NAMED);
    if pkg.archive_entries_total > named {
        report.failures.push(format!(
            "{} more archive entries are not files of the package (refused names, duplicates or non-regular entries)",
            pkg.archive_entries_total - named
        ));
    }
}

/// Matches the manifest's entries, hashes what they name, fills `report.files`.
fn check_digests(
    pkg: &Subject,
    mf: &Manifest,
    options: &VerifyOptions,
    progress: &(dyn Fn(Progress) + Sync),
    report: &mut VerifyReport,
) -> Result<()> {
    let mf_name = report.manifest.clone().unwrap_or_default();
    for b in &mf.bad_lines {
        report.failures.push(format!(
            "{mf_name} line {}: cannot be read ({})",
            b.line, b.problem
        ));
    }
    if mf.bad_line_count > mf.bad_lines.len() {
        report.failures.push(format!(
            "{mf_name}: {} more lines cannot be read",
            mf.bad_line_count - mf.bad_lines.len()
        ));
    }
    if mf.entries.is_empty() {
        report
            .failures
            .push(format!("{mf_name} lists no file: nothing is verified"));
    }

    // Distinct lines, in manifest order.
    let mut resolver = Resolver::new(pkg);
    let mut distinct: Vec<Distinct> = Vec::new();
    let mut seen: HashMap<(String, &str, String), usize> = HashMap::new();
    for e in &mf.entries {
        let key = (
            e.name.clone(),
            e.algorithm.name(),
            e.value.to_ascii_lowercase(),
        );
        if let Some(&k) = seen.get(&key) {
            if let Some(d) = distinct.get_mut(k) {
                d.count += 1;
            }
            continue;
        }
        seen.insert(key, distinct.len());
        let (target, note) = resolver.resolve(&e.name);
        distinct.push(Distinct {
            entry: e,
            count: 1,
            target,
            note,
        });
    }

    // One job per target, with every algorithm wanted for it.
    let mut job_of: HashMap<Target, usize> = HashMap::new();
    let mut jobs: Vec<DigestJob> = Vec::new();
    let mut has_checkable: HashMap<Target, bool> = HashMap::new();
    for d in &distinct {
        let Some(alg) = DigestAlgorithm::from_algorithm(&d.entry.algorithm) else {
            continue;
        };
        if d.entry.problem.is_some() {
            continue;
        }
        let Some((data, position)) = resolver.source(&d.target) else {
            continue;
        };
        has_checkable.insert(d.target.clone(), true);
        let j = *job_of.entry(d.target.clone()).or_insert_with(|| {
            jobs.push(DigestJob {
                data,
                algorithms: Vec::new(),
                position,
            });
            jobs.len() - 1
        });
        if let Some(job) = jobs.get_mut(j)
            && !job.algorithms.contains(&alg)
        {
            job.algorithms.push(alg);
        }
    }
    let mut results: Vec<Option<digest::JobDigests>> =
        digest::compute(&jobs, &options.digest, progress)
            .into_iter()
            .map(Some)
            .collect();
    report.bytes_hashed = jobs
        .iter()
        .fold(0u64, |a, j| a.saturating_add(j.data.len()));
    let mut digests: HashMap<Target, HashMap<DigestAlgorithm, Vec<u8>>> = HashMap::new();
    for (target, &j) in &job_of {
        let (Some(job), Some(r)) = (jobs.get(j), results.get_mut(j).and_then(Option::take)) else {
            continue;
        };
        let name = resolver.member_name(target).unwrap_or_default();
        let values = r.with_context(|| format!("reading {name}"))?;
        digests.insert(
            target.clone(),
            job.algorithms.iter().copied().zip(values).collect(),
        );
    }

    let mut covered = vec![false; pkg.members.len()];
    for d in &distinct {
        for i in resolver.covered(&d.target) {
            if let Some(c) = covered.get_mut(i) {
                *c = true;
            }
        }
        let e = d.entry;
        let mut notes: Vec<String> = d.note.iter().cloned().collect();
        if d.count > 1 {
            notes.push(format!("listed {} times", d.count));
        }
        let mut row = FileCheck {
            name: e.name.clone(),
            member: resolver.member_name(&d.target),
            status: FileStatus::Ok,
            algorithm: Some(e.algorithm.name().to_string()),
            expected: Some(e.digest_hex().unwrap_or_else(|| e.value.clone())),
            actual: None,
            line: Some(e.line),
            failed: false,
            note: None,
        };
        let at = format!("{mf_name} line {}", e.line);
        match &d.target {
            Target::Missing(why) => {
                row.status = FileStatus::Missing;
                row.failed = true;
                notes.push(why.clone());
                report
                    .failures
                    .push(format!("{}: listed in {at}, {why}", e.name));
            }
            Target::SelfManifest => {
                row.status = FileStatus::SelfEntry;
                notes.push("the manifest cannot hold its own digest; ignored".into());
            }
            t => {
                if let Some(p) = &e.problem {
                    row.status = FileStatus::BadEntry;
                    row.failed = true;
                    report.failures.push(format!("{}: {at}: {p}", e.name));
                } else if let Some(alg) = DigestAlgorithm::from_algorithm(&e.algorithm) {
                    let actual = digests.get(t).and_then(|m| m.get(&alg));
                    row.actual = actual.map(|a| manifest::to_hex(a));
                    if actual.map(Vec::as_slice) == e.digest.as_deref() {
                        row.status = FileStatus::Ok;
                    } else {
                        row.status = FileStatus::Mismatch;
                        row.failed = true;
                        report.failures.push(format!(
                            "{}: {} digest does not match ({at})",
                            e.name, e.algorithm
                        ));
                    }
                } else {
                    row.status = FileStatus::Unsupported;
                    if !has_checkable.get(t).copied().unwrap_or(false) {
                        row.failed = true;
                        notes.push("no digest ovafs can check for this file".into());
                        report.failures.push(format!(
                            "{}: listed only with {} ({at}), which ovafs cannot check",
                            e.name, e.algorithm
                        ));
                    } else {
                        notes.push("not checked".into());
                    }
                }
            }
        }
        if !notes.is_empty() {
            row.note = Some(notes.join("; "));
        }
        report.files.push(row);
    }

    let signed = pkg.certificate_member.is_some();
    for (i, m) in pkg.members.iter().enumerate() {
        if m.kind != MemberKind::Regular
            || covered.get(i).copied().unwrap_or(true)
            || Some(i) == pkg.manifest_member
            || Some(i) == pkg.certificate_member
        {
            continue;
        }
        let (failed, note) = unlisted_member(pkg, i, signed, options, &mf_name, report);
        report.files.push(FileCheck {
            name: m.name.clone(),
            member: Some(m.name.clone()),
            status: FileStatus::NotListed,
            algorithm: None,
            expected: None,
            actual: None,
            line: None,
            failed,
            note: Some(note),
        });
    }
    Ok(())
}

/// Judges member `i`, which no manifest line covers: records the failure (or, for the
/// descriptor of an unsigned package, the warning); returns whether it fails and the note.
fn unlisted_member(
    pkg: &Subject,
    i: usize,
    signed: bool,
    options: &VerifyOptions,
    mf_name: &str,
    report: &mut VerifyReport,
) -> (bool, String) {
    let name = pkg.members.get(i).map_or("", |m| m.name.as_str());
    if i == pkg.descriptor_member {
        // A trusted verdict needs the signature to cover the descriptor; without
        // --require-trusted an unlisted descriptor is what issue 9 keeps a warning ("what the
        // manifest simply does not list"), loudly so when a signature is present.
        if options.require_trusted {
            let listed_in = if signed { "the signed manifest " } else { "" };
            report.failures.push(format!(
                "{name}: manifest coverage: the descriptor is not listed in {listed_in}{mf_name}, and a trusted signature must cover it"
            ));
            return (true, "descriptor: not covered by the manifest".into());
        }
        if signed {
            report.warnings.push(format!(
                "the descriptor {name} is not listed in the signed manifest {mf_name}: the signature does not cover it, so anyone could have replaced it (--require-trusted fails such a package)"
            ));
            return (false, "descriptor: not covered by the signature".into());
        }
        report.warnings.push(format!(
            "the descriptor {name} is not listed in {mf_name} (as ovftool 4.0 and VirtualBox 5.0 wrote manifests): its content is not verified"
        ));
        return (
            false,
            "descriptor: not a failure in an unsigned package (see the manual)".into(),
        );
    }
    if let Some(r) = pkg.referenced.iter().find(|r| r.member == i) {
        report.failures.push(format!(
            "{name}: manifest coverage: referenced by the descriptor (File {:?}, href {:?}) but not listed in {mf_name}",
            r.file_id, r.href
        ));
        return (
            true,
            format!(
                "referenced by File {:?}; not covered by the manifest",
                r.file_id
            ),
        );
    }
    report
        .failures
        .push(format!("{name}: not listed in {mf_name}"));
    (true, "not covered by the manifest".into())
}

/// Checks the certificate, if any; fills `report.certificate`.
fn check_certificate(
    pkg: &Subject,
    manifest_bytes: Option<&[u8]>,
    options: &VerifyOptions,
    report: &mut VerifyReport,
) -> Result<()> {
    let Some(m) = pkg.certificate_member.and_then(|i| pkg.members.get(i)) else {
        if options.require_trusted {
            report
                .failures
                .push("not signed (no .cert), and a trusted signature is required".into());
        }
        return Ok(());
    };
    let mut check = CertificateCheck {
        member: m.name.clone(),
        error: None,
        algorithm: None,
        manifest_name: None,
        signature: "not checked".into(),
        signature_ok: false,
        signer: None,
        not_before: None,
        not_after: None,
        certificates: 0,
        chain_trusted: false,
        chain: String::new(),
        trust_store: String::new(),
        notes: Vec::new(),
        signer_problems: Vec::new(),
    };
    let parsed = if m.size > cert::MAX_CERT_BYTES {
        Err(cert::CertError::TooLarge {
            size: m.size,
            limit: cert::MAX_CERT_BYTES,
        })
    } else {
        let bytes = read_vec_at(&*m.data, "certificate", 0, m.size, cert::MAX_CERT_BYTES)
            .with_context(|| format!("reading {}", m.name))?;
        cert::parse(&bytes)
    };
    let cf = match parsed {
        Ok(cf) => cf,
        Err(e) => {
            report.failures.push(format!("certificate {}: {e}", m.name));
            check.error = Some(e.to_string());
            report.certificate = Some(check);
            return Ok(());
        }
    };
    check.algorithm = Some(cf.algorithm.name().to_string());
    check.manifest_name = Some(cf.manifest_name.clone());
    check.certificates = cf.certificates.len();
    check.notes.extend(cf.notes.iter().cloned());
    for b in &cf.other_blocks {
        check
            .notes
            .push(format!("PEM block {b:?} present, not checked"));
    }
    let manifest_file = report
        .manifest
        .as_deref()
        .map(file_name)
        .unwrap_or_default()
        .to_string();
    if !manifest_file.is_empty() && cf.manifest_name != manifest_file {
        let note = format!(
            "the signature line names {:?}, the manifest is {manifest_file:?} (only the manifest's bytes are signed)",
            cf.manifest_name
        );
        report.warnings.push(note.clone());
        check.notes.push(note);
    }
    let sig = match manifest_bytes {
        Some(b) => cert::verify_signature(&cf, b),
        None => SignatureCheck::Unsupported("no manifest to check it against".into()),
    };
    check.signature = sig.to_string();
    check.signature_ok = sig == SignatureCheck::Ok;
    match &sig {
        SignatureCheck::Ok => {}
        SignatureCheck::Bad => report.failures.push(format!(
            "{}: signature BAD: the manifest was changed after signing, or the signature was",
            m.name
        )),
        SignatureCheck::Unsupported(why) => report
            .failures
            .push(format!("{}: signature not checked ({why})", m.name)),
    }
    if let Some(signer) = cf.signer() {
        let info = cert::describe(signer);
        check.not_before = info.not_before.map(cert::iso8601);
        check.not_after = info.not_after.map(cert::iso8601);
        if !info.valid_now {
            let msg = format!(
                "{}: the signer's certificate is not valid now (valid {} to {})",
                m.name,
                check.not_before.as_deref().unwrap_or("?"),
                check.not_after.as_deref().unwrap_or("?")
            );
            if options.require_trusted {
                report.failures.push(msg);
            } else {
                report.warnings.push(msg);
            }
        }
        check.signer = Some(info);
        for p in cert::signer_problems(signer) {
            report.failures.push(format!("{}: {p}", m.name));
            check.signer_problems.push(p.to_string());
        }
    }
    let store = match &options.trust {
        TrustSource::System => TrustStore::system(),
        TrustSource::PemFile(p) => TrustStore::from_pem_file(p),
        TrustSource::Nothing => TrustStore::empty(),
    };
    match store {
        Ok(store) => {
            check.trust_store = store.source.clone();
            match cert::check_chain(&cf, &store) {
                ChainCheck::Trusted { chain } => {
                    check.chain_trusted = true;
                    check.chain = chain.join(" <- ");
                }
                ChainCheck::Untrusted { reason } => check.chain = reason,
            }
        }
        Err(e) => check.chain = format!("trust store unavailable: {e}"),
    }
    if !check.chain_trusted {
        let msg = format!("{}: chain untrusted ({})", m.name, check.chain);
        if options.require_trusted {
            report.failures.push(msg);
        } else {
            report.warnings.push(msg);
        }
    }
    report.certificate = Some(check);
    Ok(())
}
