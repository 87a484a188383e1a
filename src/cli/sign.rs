//! `ovafs sign -k KEY.pem [--cert CERT.pem] SOURCE`, and the key files of `-o sign_key=`:
//! the package's `.cert` regenerated over its manifest as ovftool writes it
//! (docs/formats.md §3.2; the signing itself is `commit::Signer`).
//!
//! `ovafs sign` is a commit like any other: a change set that only re-signs, written by the
//! commit layer (in place under a journal when the new certificate fills the old one's tar
//! blocks, else by an atomic rewrite; a folder package under its journal). So it refuses
//! what `ovafs commit` refuses: a package that a writable mount serves (that mount holds
//! the package's write lock and commits itself; `-o sign_key=` re-signs its commits), a
//! journal left beside it that recovery does not replay, a compressed archive, a read-only
//! file. A package without a manifest is refused: the signature covers the manifest, and
//! the commit layer does not make one up.
//!
//! Key files. ovafs often runs as root next to users who may be hostile, so the private
//! key is read once, at the start (the mount: before it is ready, so a bad key fails it
//! with one line), through one descriptor opened with `O_NOFOLLOW` (a symlink planted at
//! the last component is not followed) and `O_NONBLOCK` (a FIFO does not hang us), and it
//! must be a regular file of at most [`MAX_PEM_BYTES`], owned by us or root, that neither
//! group nor others may read or write (as ssh refuses an unprotected private key: a key
//! others can read is no longer secret, one others can write is theirs). The certificate is
//! public: the same open, and it must not be writable by group or others. Folders above the
//! files are not checked (as ssh does not). `--cert` left out: the certificates of KEY.pem
//! (a PEM file holding the key and then the certificate, as ovftool takes it) are used; only
//! certificates ever reach the `.cert` file.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::EXIT_OK;
use crate::commit::{self, CertificateAction, CertificateFate, ChangeSet, Committer, Signer};
use crate::error::{Error, ErrorKind, Result};

/// Largest key or certificate file read: a PEM chain is a few KiB.
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// Why a package is not signed (its key or certificate files, the package).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// It cannot be opened or read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// It breaks a rule of the module comment.
    #[error("{path} is not used: {rule}")]
    Unsafe {
        /// The file.
        path: String,
        /// The rule.
        rule: String,
    },
    /// The package has no manifest for the signature to sign.
    #[error(
        "{package} has no manifest: a signature signs the manifest (make one with ovftool or cot, then sign)"
    )]
    NoManifest {
        /// The package.
        package: String,
    },
    /// `--cert` was left out and the key file holds no certificate.
    #[error(
        "{path} holds no certificate after the key: give the signer's certificate with --cert (or sign_cert=)"
    )]
    NoCertificate {
        /// The key file.
        path: String,
    },
}

impl From<SignError> for Error {
    fn from(e: SignError) -> Self {
        Error::layer(e).context("sign")
    }
}

/// Which kind of file is read: the rules differ.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Secrecy {
    /// A private key: nobody else may read or write it.
    Private,
    /// A certificate: nobody else may write it.
    Public,
}

/// Reads a key or certificate file under the rules of the module comment.
fn read_pem(path: &Path, secrecy: Secrecy) -> Result<Vec<u8>> {
    let shown = path.display().to_string();
    let read_err = |source| SignError::Read {
        path: shown.clone(),
        source,
    };
    let unsafe_file = |rule: String| SignError::Unsafe {
        path: shown.clone(),
        rule,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => unsafe_file("it is a symbolic link".into()),
            _ => read_err(e),
        })?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(unsafe_file("not a regular file".into()).into());
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(unsafe_file(format!(
            "owned by uid {}, neither us ({me}) nor root",
            meta.uid()
        ))
        .into());
    }
    let forbidden = match secrecy {
        Secrecy::Private => 0o077,
        Secrecy::Public => 0o022,
    };
    if meta.mode() & forbidden != 0 {
        let what = match secrecy {
            Secrecy::Private => "a private key group or others may read or write (chmod 600 it)",
            Secrecy::Public => "a certificate group or others may write (chmod go-w it)",
        };
        return Err(unsafe_file(format!("mode {:04o}: {what}", meta.mode() & 0o7777)).into());
    }
    if meta.len() > MAX_PEM_BYTES {
        return Err(unsafe_file(format!(
            "{} bytes, above the limit of {MAX_PEM_BYTES}",
            meta.len()
        ))
        .into());
    }
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    Ok(bytes)
}

/// The signer of `key` (a PEM private key) and `cert` (the signer's certificate and chain;
/// `None`: the certificates in the key file).
pub fn load_signer(key: &Path, cert: Option<&Path>) -> Result<Signer> {
    let key_pem = read_pem(key, Secrecy::Private)?;
    let cert_pem = match cert {
        Some(c) => read_pem(c, Secrecy::Public)?,
        None => {
            // The certificates after the key in the same file. Only the blocks' presence is
            // checked here; `Signer` parses them and keeps nothing else.
            if !key_pem.windows(CERT_BEGIN.len()).any(|w| w == CERT_BEGIN) {
                return Err(SignError::NoCertificate {
                    path: key.display().to_string(),
                }
                .into());
            }
            key_pem.clone()
        }
    };
    Signer::from_pem(&key_pem, &cert_pem)
}

/// The start of a PEM certificate block.
const CERT_BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";

/// Runs `f` with warnings off: recovery logs what it did, and `ovafs sign` says it once
/// itself (a refusal as its one error line, a completed commit as a notice).
fn quietly<T>(f: impl FnOnce() -> T) -> T {
    let level = log::max_level();
    log::set_max_level(log::LevelFilter::Error.min(level));
    let out = f();
    log::set_max_level(level);
    out
}

/// What `ovafs sign` is given.
#[derive(Debug)]
pub struct SignArgs {
    /// The private key (`-k`).
    pub key: PathBuf,
    /// The certificate (`--cert`).
    pub cert: Option<PathBuf>,
    /// The package.
    pub source: PathBuf,
}

/// `ovafs sign`.
pub fn run(args: &SignArgs) -> Result<i32> {
    crate::logging::init_stderr(false);
    let signer = load_signer(&args.key, args.cert.as_deref())?;
    let source = &args.source;
    crate::io::open_regular_file(source)?;
    let real = std::fs::canonicalize(source)
        .map_err(|e| Error::io(format!("cannot open {}", source.display()), e))?;
    if let Some(r) = super::record::find_by_source(&real)
        && r.writable
    {
        return Err(Error::new(ErrorKind::ReadOnly(format!(
            "{} is mounted writable on {}: unmount it first (or mount it with -o sign_key= to re-sign every commit)",
            source.display(),
            r.mount_point.display()
        ))));
    }
    let recovery = quietly(|| commit::recover(&real))?;
    if let Some(why) = recovery.read_only_reason() {
        return Err(Error::new(ErrorKind::ReadOnly(why)));
    }
    for notice in recovery.notices() {
        eprintln!("ovafs: {}: {notice}", source.display());
    }
    let package = crate::package::open(&real)?;
    if let Some(format) = package.archive_compression {
        return Err(Error::new(ErrorKind::ReadOnly(format!(
            "{} is a {format}-compressed archive: it cannot be re-signed in place",
            source.display()
        ))));
    }
    if package.manifest_member.is_none() {
        return Err(SignError::NoManifest {
            package: source.display().to_string(),
        }
        .into());
    }
    let mut committer = Committer::open(&package)?;
    let report =
        committer.commit(&ChangeSet::default().certificate(CertificateAction::Resign(signer)))?;
    let manifest = package
        .manifest_member
        .and_then(|i| package.members.get(i))
        .map(|m| m.name.as_str())
        .unwrap_or_default();
    match &report.certificate {
        CertificateFate::Signed(cert) => {
            println!("{}: {cert} signs {manifest}", source.display())
        }
        other => {
            return Err(Error::usage(format!(
                "{}: not signed ({other:?})",
                source.display()
            )));
        }
    }
    Ok(EXIT_OK)
}
