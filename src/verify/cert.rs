//! The OVF certificate (`.cert`): parse it, check the signature over the manifest, describe
//! the signer and say whether its chain leads to a trusted root (docs/formats.md §3.2,
//! §6 rule 14).
//!
//! Format (ovftool, ova-compose, XenAdmin, VirtualBox):
//! ```text
//! SHA256(foo.mf)= <hex of the raw signature>      (the hex may continue on further lines)
//! -----BEGIN CERTIFICATE-----                      (the signer first,
//! ...                                               then any intermediates)
//! -----END CERTIFICATE-----
//! ```
//! followed, from ovftool, by space padding. The signature is `openssl dgst -<alg> -sign`
//! over the **exact manifest bytes** (padding included): PKCS#1 v1.5 for RSA keys, the key's
//! native scheme otherwise. Other PEM blocks (VirtualBox `signova`'s `-----BEGIN CMS-----`)
//! are recorded but not checked.
//!
//! # Why OpenSSL and not pure Rust
//! The checks use the system OpenSSL through the `openssl` crate rather than `rsa` +
//! `x509-cert`:
//! - the trust question ("does the chain lead to a root in the system store?") needs real
//!   path validation (issuer matching by name and key identifier, signature of every link,
//!   basic constraints, key usage, the hashed `/etc/ssl/certs` directory, `SSL_CERT_FILE` /
//!   `SSL_CERT_DIR`). No stable pure-Rust crate of the `rsa 0.9` generation offers it
//!   (`x509-cert` only parses), and writing a path validator ourselves is exactly the kind
//!   of security code that should not be written again;
//! - the signer's key may be RSA, ECDSA, DSA or EdDSA, and old certificates use MD5 or SHA-1
//!   signatures: OpenSSL verifies all of them; `rsa 0.9` is RSA-only and refuses moduli
//!   above 4096 bits;
//! - it builds faster (18 crates against 50, docs/deps.md §6); the cost is `libssl-dev` and
//!   `pkg-config` at build time (`scripts/test` installs them).
//!
//! The text around the PEM blocks is parsed here, in Rust, with every size bounded
//! ([`MAX_CERT_BYTES`], [`MAX_LINES`], [`MAX_PEM_BLOCKS`]); only the DER of each certificate
//! goes to OpenSSL. Nothing is ever fetched from the network (no AIA, no OCSP, no CRL).
//!
//! Time validity is reported separately from trust: the chain is checked with
//! `X509_V_FLAG_NO_CHECK_TIME`, and [`CertificateInfo::valid_now`] says whether the signer's
//! certificate is inside its validity period now.
//!
//! # What a signer's certificate must be ([`signer_problems`])
//! Whatever the chain, the signer's certificate is judged on its own:
//! - its key: RSA (or RSA-PSS) of at least [`MIN_RSA_BITS`] bits, or EC of at least
//!   [`MIN_EC_BITS`] bits; DSA, EdDSA and anything else are refused by name (no OVF producer
//!   signs with them, and DSA-1024 is what old ones would have used);
//! - its `keyUsage`, when present, allows `digitalSignature` or `nonRepudiation`
//!   (`contentCommitment`): a key certified for key encipherment only was not certified to
//!   sign anything;
//! - its `extendedKeyUsage`, when present, includes `codeSigning` or `anyExtendedKeyUsage`.
//!   An EKU of `anyExtendedKeyUsage` says the same as no EKU at all (RFC 5280 §4.2.1.12), and
//!   no EKU is accepted, so accepting one and refusing the other would be arbitrary. A
//!   certificate restricted to TLS (`serverAuth`, `clientAuth`) or e-mail is refused.
//!
//! The extensions are read through rust-openssl's [`X509Ref::key_usage`] and
//! [`X509Ref::extended_key_usage`] (OpenSSL's `X509_get_key_usage` /
//! `X509_get_extended_key_usage`): no DER is walked here and no `unsafe` is needed. OpenSSL
//! answers "present, nothing allowed" for extensions it cannot parse, so a malformed
//! extension fails the rule rather than passing it.

use std::fmt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::hash::MessageDigest;
use openssl::pkey::Id;
use openssl::sign::Verifier;
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::{X509VerifyFlags, X509VerifyParam};
use openssl::x509::{
    X509, X509ExtendedKeyUsage, X509KeyUsage, X509NameRef, X509Ref, X509StoreContext,
};

use super::manifest::{self, Algorithm, LineProblem};

/// Largest certificate file accepted: 1 MiB. ovftool pads its `.cert` to 100 KiB; a chain of
/// a few certificates is a few KiB.
pub const MAX_CERT_BYTES: u64 = 1 << 20;

/// Largest number of lines in a certificate file.
pub const MAX_LINES: usize = 100_000;

/// Largest number of PEM blocks (certificates and others) in a certificate file.
pub const MAX_PEM_BLOCKS: usize = 64;

/// A certificate file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// Larger than [`MAX_CERT_BYTES`].
    #[error("certificate file is {size} bytes, above the limit of {limit}")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Not UTF-8 text.
    #[error("certificate file is not text (line {line} is not UTF-8)")]
    NotUtf8 {
        /// Line number, from 1.
        line: usize,
    },
    /// More than [`MAX_LINES`] lines.
    #[error("certificate file has more than {limit} lines")]
    TooManyLines {
        /// The limit.
        limit: usize,
    },
    /// More than [`MAX_PEM_BLOCKS`] PEM blocks.
    #[error("certificate file has more than {limit} PEM blocks")]
    TooManyBlocks {
        /// The limit.
        limit: usize,
    },
    /// No `ALG(name.mf)= signature` line before the first PEM block.
    #[error("certificate file has no signature line")]
    NoSignatureLine,
    /// The signature line is not `ALG(name)= hex`.
    #[error("certificate signature line: {problem}")]
    BadSignatureLine {
        /// Why.
        problem: LineProblem,
    },
    /// The signature is not hexadecimal (or has an odd number of digits).
    #[error("certificate signature is not hexadecimal")]
    SignatureNotHex,
    /// Text between the signature and the first PEM block that is neither hex nor blank.
    #[error("certificate file line {line}: unexpected text after the signature")]
    UnexpectedText {
        /// Line number, from 1.
        line: usize,
    },
    /// A PEM block without its END line (or with a different label).
    #[error("certificate file: PEM block {label:?} starting at line {line} is not terminated")]
    UnterminatedPem {
        /// The block's label.
        label: String,
        /// Line of its BEGIN.
        line: usize,
    },
    /// No `CERTIFICATE` PEM block.
    #[error("certificate file holds no certificate")]
    NoCertificate,
    /// A certificate block that OpenSSL cannot decode.
    #[error("certificate {index} (line {line}) cannot be decoded: {reason}")]
    BadCertificate {
        /// Position among the certificates, from 1.
        index: usize,
        /// Line of its BEGIN.
        line: usize,
        /// OpenSSL's reason.
        reason: String,
    },
}

/// A parsed certificate file.
#[derive(Clone)]
pub struct CertFile {
    /// The digest algorithm of the signature.
    pub algorithm: Algorithm,
    /// The algorithm token as written.
    pub algorithm_token: String,
    /// The manifest file name the signature line names.
    pub manifest_name: String,
    /// The raw signature bytes.
    pub signature: Vec<u8>,
    /// The certificates, signer first.
    pub certificates: Vec<X509>,
    /// Labels of other PEM blocks (`CMS`, ...), which are not checked.
    pub other_blocks: Vec<String>,
    /// Oddities that did not stop the parse (text outside PEM blocks, ...).
    pub notes: Vec<String>,
}

impl fmt::Debug for CertFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertFile")
            .field("algorithm", &self.algorithm)
            .field("manifest_name", &self.manifest_name)
            .field("signature_bytes", &self.signature.len())
            .field("certificates", &self.certificates.len())
            .field("other_blocks", &self.other_blocks)
            .field("notes", &self.notes)
            .finish()
    }
}

impl CertFile {
    /// The signer's certificate (the first one).
    pub fn signer(&self) -> Option<&X509> {
        self.certificates.first()
    }
}

/// Parses a certificate file.
pub fn parse(bytes: &[u8]) -> Result<CertFile, CertError> {
    if bytes.len() as u64 > MAX_CERT_BYTES {
        return Err(CertError::TooLarge {
            size: bytes.len() as u64,
            limit: MAX_CERT_BYTES,
        });
    }
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let mut lines = Vec::new();
    for (i, l) in bytes.split(|&b| b == b'\n').enumerate() {
        if i >= MAX_LINES {
            return Err(CertError::TooManyLines { limit: MAX_LINES });
        }
        let s = std::str::from_utf8(l).map_err(|_| CertError::NotUtf8 { line: i + 1 })?;
        lines.push(s.trim_matches(|c: char| c.is_ascii_whitespace()));
    }
    let mut it = lines.iter().enumerate().skip_while(|(_, l)| l.is_empty());
    let (_, first) = it.next().ok_or(CertError::NoSignatureLine)?;
    if first.starts_with("-----BEGIN") {
        return Err(CertError::NoSignatureLine);
    }
    let entry =
        manifest::parse_entry(first).map_err(|problem| CertError::BadSignatureLine { problem })?;
    let mut hex = entry.value.clone();
    let mut notes = Vec::new();
    let mut certificates = Vec::new();
    let mut other_blocks = Vec::new();
    let mut blocks = 0usize;
    let mut in_signature = true;
    let mut block: Option<(String, usize, String)> = None;
    for (i, line) in it {
        let number = i + 1;
        if let Some((label, start, mut text)) = block.take() {
            text.push_str(line);
            text.push('\n');
            if let Some(end) = line
                .strip_prefix("-----END ")
                .and_then(|r| r.strip_suffix("-----"))
            {
                if end != label {
                    return Err(CertError::UnterminatedPem { label, line: start });
                }
                if label == "CERTIFICATE" || label == "X509 CERTIFICATE" {
                    let index = certificates.len() + 1;
                    let cert =
                        X509::from_pem(text.as_bytes()).map_err(|e| CertError::BadCertificate {
                            index,
                            line: start,
                            reason: first_reason(&e),
                        })?;
                    certificates.push(cert);
                } else {
                    other_blocks.push(label);
                }
            } else {
                block = Some((label, start, text));
            }
            continue;
        }
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|r| r.strip_suffix("-----"))
        {
            in_signature = false;
            blocks += 1;
            if blocks > MAX_PEM_BLOCKS {
                return Err(CertError::TooManyBlocks {
                    limit: MAX_PEM_BLOCKS,
                });
            }
            block = Some((label.to_string(), number, format!("{line}\n")));
            continue;
        }
        if line.is_empty() {
            continue;
        }
        if in_signature {
            if line.bytes().all(|b| b.is_ascii_hexdigit()) {
                // XenAdmin and open-ovf split the hex over several lines.
                hex.push_str(line);
            } else {
                return Err(CertError::UnexpectedText { line: number });
            }
        } else if notes.len() < 8 {
            notes.push(format!("line {number}: text outside PEM blocks ignored"));
        }
    }
    if let Some((label, start, _)) = block {
        return Err(CertError::UnterminatedPem { label, line: start });
    }
    let signature = manifest::from_hex(&hex).ok_or(CertError::SignatureNotHex)?;
    if certificates.is_empty() {
        return Err(CertError::NoCertificate);
    }
    Ok(CertFile {
        algorithm: entry.algorithm,
        algorithm_token: entry.algorithm_token,
        manifest_name: entry.name,
        signature,
        certificates,
        other_blocks,
        notes,
    })
}

/// The first line of an OpenSSL error stack, for messages.
fn first_reason(e: &openssl::error::ErrorStack) -> String {
    e.errors()
        .first()
        .and_then(|e| e.reason().map(str::to_string))
        .unwrap_or_else(|| "invalid certificate".to_string())
}

/// Outcome of the signature check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureCheck {
    /// The signer's key verifies the signature over the manifest bytes.
    Ok,
    /// It does not: the manifest or the signature was changed, or another key signed it.
    Bad,
    /// The check could not be made (unknown algorithm, unusable key).
    Unsupported(String),
}

impl fmt::Display for SignatureCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureCheck::Ok => f.write_str("ok"),
            SignatureCheck::Bad => f.write_str("BAD"),
            SignatureCheck::Unsupported(why) => write!(f, "not checked ({why})"),
        }
    }
}

/// The message digest OpenSSL uses for a manifest/certificate algorithm.
fn message_digest(alg: &Algorithm) -> Option<MessageDigest> {
    match alg {
        Algorithm::Sha1 => Some(MessageDigest::sha1()),
        Algorithm::Sha224 => Some(MessageDigest::sha224()),
        Algorithm::Sha256 => Some(MessageDigest::sha256()),
        Algorithm::Sha384 => Some(MessageDigest::sha384()),
        Algorithm::Sha512 => Some(MessageDigest::sha512()),
        _ => None,
    }
}

/// Verifies the signature of `cert` over the exact bytes of the manifest with the signer's
/// public key.
pub fn verify_signature(cert: &CertFile, manifest: &[u8]) -> SignatureCheck {
    let Some(signer) = cert.signer() else {
        return SignatureCheck::Unsupported("no certificate".into());
    };
    let key = match signer.public_key() {
        Ok(k) => k,
        Err(e) => {
            return SignatureCheck::Unsupported(format!(
                "unusable public key: {}",
                first_reason(&e)
            ));
        }
    };
    let verifier = if matches!(key.id(), Id::ED25519 | Id::ED448) {
        // EdDSA hashes internally; the line's algorithm does not apply.
        Verifier::new_without_digest(&key)
    } else {
        let Some(md) = message_digest(&cert.algorithm) else {
            return SignatureCheck::Unsupported(format!(
                "signature algorithm {} is not supported",
                cert.algorithm
            ));
        };
        Verifier::new(md, &key)
    };
    let mut verifier = match verifier {
        Ok(v) => v,
        Err(e) => {
            return SignatureCheck::Unsupported(format!(
                "cannot verify with this key: {}",
                first_reason(&e)
            ));
        }
    };
    match verifier.verify_oneshot(&cert.signature, manifest) {
        Ok(true) => SignatureCheck::Ok,
        // A malformed signature (wrong length for the key, bad DER for ECDSA) is an error
        // inside OpenSSL; for us it is simply a signature that does not verify.
        Ok(false) | Err(_) => SignatureCheck::Bad,
    }
}

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateInfo {
    /// Subject, `C=DE, O=..., CN=...`.
    pub subject: String,
    /// Issuer, same form.
    pub issuer: String,
    /// Serial number, hex.
    pub serial: String,
    /// Start of validity, seconds since the epoch.
    pub not_before: Option<i64>,
    /// End of validity, seconds since the epoch.
    pub not_after: Option<i64>,
    /// Whether now is inside the validity period.
    pub valid_now: bool,
    /// The public key: `RSA 2048-bit`, `EC 256-bit`, ...
    pub key: String,
    /// Subject and issuer are the same name (self-issued, typically self-signed).
    pub self_issued: bool,
    /// The `keyUsage` bits (`digitalSignature`, ...); `None` when the extension is absent.
    pub key_usage: Option<Vec<String>>,
    /// The `extendedKeyUsage` purposes OpenSSL knows (`codeSigning`, ...); `None` when the
    /// extension is absent.
    pub extended_key_usage: Option<Vec<String>>,
}

/// Formats a name as `C=DE, ST=..., CN=...`.
pub fn name_to_string(name: &X509NameRef) -> String {
    let mut parts = Vec::new();
    for e in name.entries() {
        let key = e
            .object()
            .nid()
            .short_name()
            .map(str::to_string)
            .unwrap_or_else(|_| e.object().to_string());
        let value = e.data().to_string().unwrap_or_else(|_| "?".to_string());
        parts.push(format!("{key}={value}"));
    }
    parts.join(", ")
}

/// Seconds since the epoch of an ASN.1 time.
fn unix_time(t: &Asn1TimeRef) -> Option<i64> {
    let epoch = Asn1Time::from_unix(0).ok()?;
    let d = epoch.diff(t).ok()?;
    i64::from(d.days)
        .checked_mul(86_400)?
        .checked_add(i64::from(d.secs))
}

/// Describes a certificate.
pub fn describe(cert: &X509Ref) -> CertificateInfo {
    let not_before = unix_time(cert.not_before());
    let not_after = unix_time(cert.not_after());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let valid_now = matches!((not_before, not_after), (Some(a), Some(b)) if a <= now && now <= b);
    let key = match cert.public_key() {
        Ok(k) => format!("{} {}-bit", key_kind(k.id()), k.bits()),
        Err(_) => "unusable".to_string(),
    };
    let serial = cert
        .serial_number()
        .to_bn()
        .ok()
        .and_then(|b| b.to_hex_str().ok().map(|s| s.to_string()))
        .unwrap_or_default();
    let subject = name_to_string(cert.subject_name());
    let issuer = name_to_string(cert.issuer_name());
    CertificateInfo {
        self_issued: subject == issuer,
        subject,
        issuer,
        serial,
        not_before,
        not_after,
        valid_now,
        key,
        key_usage: cert.key_usage().map(key_usage_names),
        extended_key_usage: cert.extended_key_usage().map(eku_names),
    }
}

/// The name of a key type, for messages.
fn key_kind(id: Id) -> &'static str {
    match id {
        Id::RSA => "RSA",
        Id::RSA_PSS => "RSA-PSS",
        Id::DSA => "DSA",
        Id::EC => "EC",
        Id::ED25519 => "Ed25519",
        Id::ED448 => "Ed448",
        Id::DH => "DH",
        _ => "unknown",
    }
}

/// Smallest RSA modulus accepted for a signer: 2048 bits (NIST SP 800-131A disallows
/// smaller ones for signatures since 2014; a 512-bit key is factored in hours).
pub const MIN_RSA_BITS: u32 = 2048;

/// Smallest EC key accepted for a signer: 256 bits (P-256 and up).
pub const MIN_EC_BITS: u32 = 256;

/// The names in `table` of the flags `is_set` says are set, in table order.
fn names_set<F: Copy>(table: &[(F, &str)], is_set: impl Fn(F) -> bool) -> Vec<String> {
    table
        .iter()
        .filter(|(flag, _)| is_set(*flag))
        .map(|(_, name)| name.to_string())
        .collect()
}

/// The RFC 5280 names of the `keyUsage` bits set.
fn key_usage_names(ku: X509KeyUsage) -> Vec<String> {
    const NAMES: [(X509KeyUsage, &str); 9] = [
        (X509KeyUsage::DIGITAL_SIGNATURE, "digitalSignature"),
        (X509KeyUsage::NON_REPUDIATION, "nonRepudiation"),
        (X509KeyUsage::KEY_ENCIPHERMENT, "keyEncipherment"),
        (X509KeyUsage::DATA_ENCIPHERMENT, "dataEncipherment"),
        (X509KeyUsage::KEY_AGREEMENT, "keyAgreement"),
        (X509KeyUsage::KEY_CERT_SIGN, "keyCertSign"),
        (X509KeyUsage::CRL_SIGN, "cRLSign"),
        (X509KeyUsage::ENCIPHER_ONLY, "encipherOnly"),
        (X509KeyUsage::DECIPHER_ONLY, "decipherOnly"),
    ];
    names_set(&NAMES, |bit| ku.contains(bit))
}

/// The RFC 5280 names of the `extendedKeyUsage` purposes OpenSSL recognises.
fn eku_names(eku: X509ExtendedKeyUsage) -> Vec<String> {
    const NAMES: [(X509ExtendedKeyUsage, &str); 9] = [
        (X509ExtendedKeyUsage::SSL_SERVER, "serverAuth"),
        (X509ExtendedKeyUsage::SSL_CLIENT, "clientAuth"),
        (X509ExtendedKeyUsage::SMIME, "emailProtection"),
        (X509ExtendedKeyUsage::CODE_SIGN, "codeSigning"),
        (X509ExtendedKeyUsage::SGC, "serverGatedCrypto"),
        (X509ExtendedKeyUsage::OCSP_SIGN, "OCSPSigning"),
        (X509ExtendedKeyUsage::TIMESTAMP, "timeStamping"),
        (X509ExtendedKeyUsage::DVCS, "DVCS"),
        (X509ExtendedKeyUsage::ANYEKU, "anyExtendedKeyUsage"),
    ];
    names_set(&NAMES, |bit| eku.contains(bit))
}

/// A rule the signer's certificate breaks (module comment, "What a signer's certificate
/// must be").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerProblem {
    /// The rule: `key size`, `key type`, `key usage` or `extended key usage`.
    pub rule: &'static str,
    /// What the certificate has instead.
    pub detail: String,
}

impl fmt::Display for SignerProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.rule, self.detail)
    }
}

/// Every rule `cert`, as the signer's certificate, breaks; empty when it may sign a package.
pub fn signer_problems(cert: &X509Ref) -> Vec<SignerProblem> {
    let mut out = Vec::new();
    out.extend(key_problem(cert));
    if let Some(ku) = cert.key_usage()
        && !ku.intersects(X509KeyUsage::DIGITAL_SIGNATURE | X509KeyUsage::NON_REPUDIATION)
    {
        let has = key_usage_names(ku);
        out.push(SignerProblem {
            rule: "key usage",
            detail: format!(
                "the certificate's keyUsage allows {}, not digitalSignature or nonRepudiation",
                list_or(&has, "nothing (or cannot be read)")
            ),
        });
    }
    if let Some(eku) = cert.extended_key_usage()
        && !eku.intersects(X509ExtendedKeyUsage::CODE_SIGN | X509ExtendedKeyUsage::ANYEKU)
    {
        let has = eku_names(eku);
        out.push(SignerProblem {
            rule: "extended key usage",
            detail: format!(
                "the certificate's extendedKeyUsage allows {}, not codeSigning",
                list_or(
                    &has,
                    "only purposes ovafs does not know (or cannot be read)"
                )
            ),
        });
    }
    out
}

/// The key rule: RSA of [`MIN_RSA_BITS`], EC of [`MIN_EC_BITS`], nothing else.
fn key_problem(cert: &X509Ref) -> Option<SignerProblem> {
    let key = match cert.public_key() {
        Ok(k) => k,
        Err(e) => {
            return Some(SignerProblem {
                rule: "key type",
                detail: format!("the public key cannot be read ({})", first_reason(&e)),
            });
        }
    };
    let (kind, bits) = (key_kind(key.id()), key.bits());
    let minimum = match key.id() {
        Id::RSA | Id::RSA_PSS => MIN_RSA_BITS,
        Id::EC => MIN_EC_BITS,
        other => {
            // EdDSA keys have one size per curve; their bit count would only confuse.
            let key = if matches!(other, Id::ED25519 | Id::ED448) {
                kind.to_string()
            } else {
                format!("{kind} {bits}-bit")
            };
            return Some(SignerProblem {
                rule: "key type",
                detail: format!(
                    "{key} keys are refused: only RSA (at least {MIN_RSA_BITS} bits) and EC (at least {MIN_EC_BITS} bits) may sign"
                ),
            });
        }
    };
    (bits < minimum).then(|| SignerProblem {
        rule: "key size",
        detail: format!("{kind} {bits}-bit key, at least {minimum} bits required"),
    })
}

/// `a, b, c`, or `none` when empty.
fn list_or(items: &[String], none: &str) -> String {
    if items.is_empty() {
        none.to_string()
    } else {
        items.join(", ")
    }
}

/// `2016-02-01T01:45:27Z` for seconds since the epoch (proleptic Gregorian, UTC).
pub fn iso8601(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// A set of trusted roots.
pub struct TrustStore {
    /// The roots, chains checked at OpenSSL's default level: its reason for an untrusted
    /// chain is the one people expect (`self-signed certificate`, ...).
    store: X509Store,
    /// The same roots, chains checked at [`CHAIN_AUTH_LEVEL`]: a chain trusted by `store`
    /// is trusted only if this one trusts it too.
    strict: X509Store,
    /// Where the roots came from, for messages.
    pub source: String,
}

impl fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustStore")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// OpenSSL's authentication security level for a trusted chain: level 2 refuses any
/// certificate of the chain (root included) whose key is below 2048-bit RSA / 224-bit EC,
/// and certificate signatures of less than 112 bits of security (SHA-1, MD5), with a reason
/// that names the weak link (`CA certificate key too weak`). The signer itself is also held
/// to [`signer_problems`], whatever the chain.
const CHAIN_AUTH_LEVEL: i32 = 2;

/// A store with the roots `add` puts in, checking times never and keys at `level` (OpenSSL's
/// default when `None`).
fn build_store(
    level: Option<i32>,
    add: &dyn Fn(&mut X509StoreBuilder) -> Result<(), String>,
) -> Result<X509Store, String> {
    let mut b = X509StoreBuilder::new().map_err(|e| first_reason(&e))?;
    let mut param = X509VerifyParam::new().map_err(|e| first_reason(&e))?;
    // Validity dates are reported on their own (CertificateInfo::valid_now).
    param
        .set_flags(X509VerifyFlags::NO_CHECK_TIME)
        .map_err(|e| first_reason(&e))?;
    if let Some(level) = level {
        param.set_auth_level(level);
    }
    b.set_param(&param).map_err(|e| first_reason(&e))?;
    add(&mut b)?;
    Ok(b.build())
}

impl TrustStore {
    /// Both stores of the roots `add` puts in.
    fn with(
        source: String,
        add: &dyn Fn(&mut X509StoreBuilder) -> Result<(), String>,
    ) -> Result<Self, String> {
        Ok(TrustStore {
            store: build_store(None, add)?,
            strict: build_store(Some(CHAIN_AUTH_LEVEL), add)?,
            source,
        })
    }

    /// The system's roots: OpenSSL's default file and directory (`/etc/ssl/certs` on
    /// Debian), or `SSL_CERT_FILE` / `SSL_CERT_DIR` when set.
    pub fn system() -> Result<Self, String> {
        let source = match (
            std::env::var_os("SSL_CERT_FILE"),
            std::env::var_os("SSL_CERT_DIR"),
        ) {
            (None, None) => "system trust store".to_string(),
            (f, d) => {
                let mut parts = Vec::new();
                if let Some(f) = f {
                    parts.push(format!("SSL_CERT_FILE={}", Path::new(&f).display()));
                }
                if let Some(d) = d {
                    parts.push(format!("SSL_CERT_DIR={}", Path::new(&d).display()));
                }
                parts.join(", ")
            }
        };
        TrustStore::with(source, &|b| {
            b.set_default_paths().map_err(|e| first_reason(&e))
        })
    }

    /// The roots in a PEM file (tests, or a private CA).
    pub fn from_pem_file(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let certs = X509::stack_from_pem(&bytes)
            .map_err(|e| format!("{}: {}", path.display(), first_reason(&e)))?;
        TrustStore::with(path.display().to_string(), &|b| {
            for c in &certs {
                b.add_cert(c.clone()).map_err(|e| first_reason(&e))?;
            }
            Ok(())
        })
    }

    /// No roots at all: every chain is untrusted.
    pub fn empty() -> Result<Self, String> {
        TrustStore::with("no trust store".to_string(), &|_| Ok(()))
    }
}

/// Whether the chain leads to a trusted root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainCheck {
    /// It does: the chain, signer first, as subject names.
    Trusted {
        /// Subjects from the signer to the root.
        chain: Vec<String>,
    },
    /// It does not: OpenSSL's reason.
    Untrusted {
        /// Why (`self-signed certificate`, `unable to get local issuer certificate`, ...).
        reason: String,
    },
}

/// Checks whether the signer's certificate, with the intermediates of the file, chains to a
/// root of `store` (times not checked: see the module comment), first at OpenSSL's default
/// level (for its usual reasons), then at `CHAIN_AUTH_LEVEL` (weak keys or signatures
/// anywhere in the chain).
pub fn check_chain(cert: &CertFile, store: &TrustStore) -> ChainCheck {
    match verify_chain(cert, &store.store) {
        ChainCheck::Trusted { .. } => verify_chain(cert, &store.strict),
        untrusted => untrusted,
    }
}

/// One run of OpenSSL's path validation against `store`.
fn verify_chain(cert: &CertFile, store: &X509Store) -> ChainCheck {
    let untrusted = |reason: String| ChainCheck::Untrusted { reason };
    let Some(signer) = cert.signer() else {
        return untrusted("no certificate".into());
    };
    let run = || -> Result<ChainCheck, openssl::error::ErrorStack> {
        let mut chain = Stack::new()?;
        for c in cert.certificates.iter().skip(1) {
            chain.push(c.clone())?;
        }
        let mut ctx = X509StoreContext::new()?;
        ctx.init(store, signer, &chain, |ctx| {
            if ctx.verify_cert()? {
                let names = ctx
                    .chain()
                    .map(|c| c.iter().map(|x| name_to_string(x.subject_name())).collect())
                    .unwrap_or_default();
                Ok(ChainCheck::Trusted { chain: names })
            } else {
                Ok(ChainCheck::Untrusted {
                    reason: ctx.error().error_string().to_string(),
                })
            }
        })
    };
    run().unwrap_or_else(|e| untrusted(first_reason(&e)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A self-signed RSA certificate (the one in VirtualBox's tdAppliance1-t4, public data).
    const T4_CERT: &str = "-----BEGIN CERTIFICATE-----
MIICqDCCAhGgAwIBAgIJAMTMC/VPtFvMMA0GCSqGSIb3DQEBCwUAMG0xCzAJBgNV
BAYTAkRFMRAwDgYDVQQIDAdFeGFtcGxlMRUwEwYDVQQHDAxGb3IgSW5zdGFuY2Ux
FjAUBgNVBAoMDUJlaXNwaWVsIEdtYkgxHTAbBgNVBAMMFGJlaXNwaWVsLmV4YW1w
bGUub3JnMB4XDTE2MDIwMTAxNDUyN1oXDTQ2MDEyNDAxNDUyN1owbTELMAkGA1UE
BhMCREUxEDAOBgNVBAgMB0V4YW1wbGUxFTATBgNVBAcMDEZvciBJbnN0YW5jZTEW
MBQGA1UECgwNQmVpc3BpZWwgR21iSDEdMBsGA1UEAwwUYmVpc3BpZWwuZXhhbXBs
ZS5vcmcwgZ8wDQYJKoZIhvcNAQEBBQADgY0AMIGJAoGBALRXOpwrjjFzFZtbaTtB
+3kNrgrqYkye6CqvrOODZwXsljr/pduYj6bYh5OdznAFqgeeCpkqEf/2p5mDXlqE
4cDoL2opLk7LrdmVDqX9rUkGcGf6hwTp1EAllESBIUt6LdSbL7Y5goYq1E++/fKS
YRIniCbWp9ahTLH8hjDcw48tAgMBAAGjUDBOMB0GA1UdDgQWBBQCCrC8IWPBUBYe
jbf0sBxI2OEKKjAfBgNVHSMEGDAWgBQCCrC8IWPBUBYejbf0sBxI2OEKKjAMBgNV
HRMEBTADAQH/MA0GCSqGSIb3DQEBCwUAA4GBABPxM1/H2WwgpOvy5eK14Oi2nMdi
SjlTgxGYzxE9WAnYOHhxFtQkzMguWivTlGrcrmLngWpfBIS6VYzca/+qeE83jv26
tdEng0cpMJJjhVPwsbn0x6ixSEROMG9Q0zUUh1nQ+O3aB2Bs3m1TUz3XA5cfaxPO
kkkgV0+whzB2ZtND
-----END CERTIFICATE-----
";

    fn with_sig(first: &str, rest: &str) -> Vec<u8> {
        format!("{first}\n{rest}").into_bytes()
    }

    #[test]
    fn parses_signature_line_pem_and_padding() {
        let mut f = with_sig("SHA256(x.mf)= 0a0B", T4_CERT);
        f.extend_from_slice(&[b' '; 300]);
        let c = parse(&f).unwrap();
        assert_eq!(c.algorithm, Algorithm::Sha256);
        assert_eq!(c.manifest_name, "x.mf");
        assert_eq!(c.signature, vec![0x0a, 0x0b]);
        assert_eq!(c.certificates.len(), 1);
        assert!(c.notes.is_empty());
        let info = describe(c.signer().unwrap());
        assert_eq!(
            info.subject,
            "C=DE, ST=Example, L=For Instance, O=Beispiel GmbH, CN=beispiel.example.org"
        );
        assert!(info.self_issued);
        assert_eq!(info.key, "RSA 1024-bit");
        assert_eq!(iso8601(info.not_before.unwrap()), "2016-02-01T01:45:27Z");
        assert_eq!(iso8601(info.not_after.unwrap()), "2046-01-24T01:45:27Z");
    }

    #[test]
    fn t4s_1024_bit_key_breaks_the_key_size_rule_only() {
        let c = parse(&with_sig("SHA256(x.mf)= 00", T4_CERT)).unwrap();
        let signer = c.signer().unwrap();
        let problems = signer_problems(signer);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            problems[0].to_string(),
            "key size: RSA 1024-bit key, at least 2048 bits required"
        );
        let info = describe(signer);
        assert_eq!((info.key_usage, info.extended_key_usage), (None, None));
    }

    #[test]
    fn usage_names_follow_rfc_5280() {
        assert_eq!(
            key_usage_names(X509KeyUsage::DIGITAL_SIGNATURE | X509KeyUsage::KEY_ENCIPHERMENT),
            vec!["digitalSignature", "keyEncipherment"]
        );
        assert_eq!(
            eku_names(X509ExtendedKeyUsage::SSL_SERVER | X509ExtendedKeyUsage::CODE_SIGN),
            vec!["serverAuth", "codeSigning"]
        );
        assert!(key_usage_names(X509KeyUsage::empty()).is_empty());
        assert_eq!(list_or(&[], "none"), "none");
    }

    #[test]
    fn signature_split_over_lines_with_crlf() {
        let f = with_sig(
            "SHA1(ourOvf.mf)= 0a0b\r\n0c0d\r",
            &T4_CERT.replace('\n', "\r\n"),
        );
        let c = parse(&f).unwrap();
        assert_eq!(c.signature, vec![0x0a, 0x0b, 0x0c, 0x0d]);
        assert_eq!(c.algorithm, Algorithm::Sha1);
        assert_eq!(c.manifest_name, "ourOvf.mf");
    }

    #[test]
    fn other_blocks_and_outside_text_are_recorded() {
        let rest = format!("{T4_CERT}junk\n-----BEGIN CMS-----\nAAAA\n-----END CMS-----\n");
        let c = parse(&with_sig("SHA256(x.mf)= 00", &rest)).unwrap();
        assert_eq!(c.other_blocks, vec!["CMS".to_string()]);
        assert_eq!(c.notes.len(), 1);
    }

    #[test]
    fn malformed_files_are_refused_with_the_right_error() {
        assert!(matches!(parse(b""), Err(CertError::NoSignatureLine)));
        assert!(matches!(
            parse(T4_CERT.as_bytes()),
            Err(CertError::NoSignatureLine)
        ));
        assert!(matches!(
            parse(&with_sig("garbage", T4_CERT)),
            Err(CertError::BadSignatureLine { .. })
        ));
        assert!(matches!(
            parse(&with_sig("SHA256(x.mf)= 0g", T4_CERT)),
            Err(CertError::SignatureNotHex)
        ));
        assert!(matches!(
            parse(&with_sig("SHA256(x.mf)= 000", T4_CERT)),
            Err(CertError::SignatureNotHex)
        ));
        assert!(matches!(
            parse(&with_sig("SHA256(x.mf)= 00\nhello", T4_CERT)),
            Err(CertError::UnexpectedText { line: 2 })
        ));
        assert!(matches!(
            parse(b"SHA256(x.mf)= 00\n"),
            Err(CertError::NoCertificate)
        ));
        assert!(matches!(
            parse(b"SHA256(x.mf)= 00\n-----BEGIN CERTIFICATE-----\nAAAA\n"),
            Err(CertError::UnterminatedPem { line: 2, .. })
        ));
        assert!(matches!(
            parse(b"SHA256(x.mf)= 00\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CMS-----\n"),
            Err(CertError::UnterminatedPem { .. })
        ));
        assert!(matches!(
            parse(
                b"SHA256(x.mf)= 00\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
            ),
            Err(CertError::BadCertificate {
                index: 1,
                line: 2,
                ..
            })
        ));
        assert!(matches!(
            parse(&[b'\n'; MAX_LINES + 1]),
            Err(CertError::TooManyLines { .. })
        ));
        assert!(matches!(
            parse(&vec![b' '; MAX_CERT_BYTES as usize + 1]),
            Err(CertError::TooLarge { .. })
        ));
        let many = "-----BEGIN X-----\n-----END X-----\n".repeat(MAX_PEM_BLOCKS + 1);
        assert!(matches!(
            parse(&with_sig("SHA1(x.mf)= 00", &many)),
            Err(CertError::TooManyBlocks { .. })
        ));
        assert!(matches!(
            parse(b"SHA1(x.mf)= 00\n\xff\n"),
            Err(CertError::NotUtf8 { line: 2 })
        ));
    }

    #[test]
    fn wrong_signature_is_bad_not_an_error() {
        let c = parse(&with_sig("SHA256(x.mf)= 00", T4_CERT)).unwrap();
        assert_eq!(verify_signature(&c, b"hello"), SignatureCheck::Bad);
        let c = parse(&with_sig("MD5(x.mf)= 00", T4_CERT)).unwrap();
        assert!(matches!(
            verify_signature(&c, b"hello"),
            SignatureCheck::Unsupported(_)
        ));
    }

    #[test]
    fn self_signed_chain_is_untrusted_with_openssls_reason() {
        let c = parse(&with_sig("SHA256(x.mf)= 00", T4_CERT)).unwrap();
        match check_chain(&c, &TrustStore::empty().unwrap()) {
            ChainCheck::Untrusted { reason } => assert!(reason.contains("self"), "{reason}"),
            t => panic!("{t:?}"),
        }
    }

    #[test]
    fn a_chain_to_a_weak_root_is_untrusted_naming_the_weak_key() {
        let c = parse(&with_sig("SHA256(x.mf)= 00", T4_CERT)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let roots = dir.path().join("roots.pem");
        std::fs::write(&roots, T4_CERT).unwrap();
        match check_chain(&c, &TrustStore::from_pem_file(&roots).unwrap()) {
            ChainCheck::Untrusted { reason } => assert!(reason.contains("too weak"), "{reason}"),
            t => panic!("{t:?}"),
        }
    }

    #[test]
    fn iso8601_known_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(-1), "1969-12-31T23:59:59Z");
        assert_eq!(iso8601(4_102_444_800), "2100-01-01T00:00:00Z");
    }
}
