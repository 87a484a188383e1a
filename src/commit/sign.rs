//! Re-signing: the `.cert` regenerated over a new manifest, as ovftool writes it
//! (docs/formats.md §3.2): a line `ALG(NAME.mf)= hex-signature`, then the signer's certificate in
//! PEM (and any chain certificates the signer's PEM holds after it).
//!
//! The signature is RSA PKCS#1 v1.5 (`openssl dgst -ALG -sign key.pem NAME.mf`) with the
//! manifest's own algorithm, except that a SHA-1 manifest is signed with SHA-256: a SHA-1
//! signature is refused by current verifiers. The key must be RSA and must belong to the
//! certificate. An RSA signature is as long as the modulus whatever is signed, so a
//! certificate made over a placeholder manifest has the final certificate's length (a rewrite
//! reserves its place before the manifest's digests are known).

use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, Private};
use openssl::sign::Signer as OpenSslSigner;
use openssl::x509::X509;

use super::CommitError;
use crate::error::Result;
use crate::verify::digest::DigestAlgorithm;
use crate::verify::manifest::to_hex;

/// Most certificates (the signer's and its chain) copied into a `.cert` file.
const MAX_CHAIN: usize = 16;

/// The key and certificate a commit re-signs the package with.
#[derive(Clone)]
pub struct Signer {
    key: PKey<Private>,
    /// The signer's certificate PEM (and any chain after it), as given, ending in a newline.
    cert_pem: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key_bits", &self.key.bits())
            .finish_non_exhaustive()
    }
}

fn bad(reason: impl Into<String>) -> crate::error::Error {
    CommitError::Signer {
        reason: reason.into(),
    }
    .into()
}

impl Signer {
    /// A signer from a private key in PEM (PKCS#1 or PKCS#8, unencrypted) and the signer's
    /// certificate in PEM (chain certificates may follow it). Refuses a key that is not RSA
    /// or does not match the certificate.
    ///
    /// Only the certificates of `cert_pem` go into the `.cert` file, each written again from
    /// its parsed form: anything else in it (text, a private key when one PEM file holds the
    /// key and the certificate) is left out, so a key can never be published by mistake.
    pub fn from_pem(key_pem: &[u8], cert_pem: &[u8]) -> Result<Signer> {
        let key = PKey::private_key_from_pem(key_pem)
            .map_err(|e| bad(format!("the private key cannot be read: {e}")))?;
        if key.id() != Id::RSA {
            return Err(bad(
                "the private key is not an RSA key (ovftool signs with RSA)",
            ));
        }
        let chain = X509::stack_from_pem(cert_pem)
            .map_err(|e| bad(format!("the certificate cannot be read: {e}")))?;
        let cert = chain
            .first()
            .ok_or_else(|| bad("no certificate in the certificate PEM"))?;
        let public = cert
            .public_key()
            .map_err(|e| bad(format!("the certificate's public key cannot be read: {e}")))?;
        if !public.public_eq(&key) {
            return Err(bad("the private key does not belong to the certificate"));
        }
        let mut out = Vec::new();
        for c in chain.iter().take(MAX_CHAIN) {
            let pem = c
                .to_pem()
                .map_err(|e| bad(format!("the certificate cannot be written: {e}")))?;
            out.extend_from_slice(&pem);
        }
        Ok(Signer { key, cert_pem: out })
    }

    /// The `.cert` file for `manifest` (named `manifest_name` in the package), signed with
    /// `algorithm` (SHA-1 is raised to SHA-256).
    pub fn certificate_file(
        &self,
        manifest_name: &str,
        manifest: &[u8],
        algorithm: DigestAlgorithm,
    ) -> Result<Vec<u8>> {
        let (digest, label) = match algorithm {
            DigestAlgorithm::Sha1 | DigestAlgorithm::Sha256 => (MessageDigest::sha256(), "SHA256"),
            DigestAlgorithm::Sha224 => (MessageDigest::sha224(), "SHA224"),
            DigestAlgorithm::Sha384 => (MessageDigest::sha384(), "SHA384"),
            DigestAlgorithm::Sha512 => (MessageDigest::sha512(), "SHA512"),
        };
        let signature = (|| {
            let mut s = OpenSslSigner::new(digest, &self.key)?;
            s.update(manifest)?;
            s.sign_to_vec()
        })()
        .map_err(|e| bad(format!("signing failed: {e}")))?;
        let mut out = format!("{label}({manifest_name})= {}\n", to_hex(&signature)).into_bytes();
        out.extend_from_slice(&self.cert_pem);
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use openssl::asn1::Asn1Time;
    use openssl::rsa::Rsa;
    use openssl::x509::X509NameBuilder;

    fn key_and_cert(bits: u32) -> (Vec<u8>, Vec<u8>) {
        let key = PKey::from_rsa(Rsa::generate(bits).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "signer").unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        (
            key.private_key_to_pem_pkcs8().unwrap(),
            b.build().to_pem().unwrap(),
        )
    }

    #[test]
    fn the_certificate_file_parses_and_its_signature_verifies() {
        let (key, cert) = key_and_cert(2048);
        let s = Signer::from_pem(&key, &cert).unwrap();
        let mf = b"SHA1(a.ovf)= 00\n";
        let file = s
            .certificate_file("a.mf", mf, DigestAlgorithm::Sha1)
            .unwrap();
        let parsed = crate::verify::cert::parse(&file).unwrap();
        assert_eq!(parsed.manifest_name, "a.mf");
        assert_eq!(parsed.signature.len(), 256);
        let text = String::from_utf8(file).unwrap();
        assert!(text.starts_with("SHA256(a.mf)= "), "{text}");
        assert!(text.ends_with(std::str::from_utf8(&cert).unwrap()));
        // Its length does not depend on what is signed.
        let other = s
            .certificate_file("a.mf", b"x", DigestAlgorithm::Sha1)
            .unwrap();
        assert_eq!(other.len(), text.len());
    }

    #[test]
    fn only_certificates_reach_the_certificate_file() {
        let (key, cert) = key_and_cert(2048);
        let mut both = key.clone();
        both.extend_from_slice(b"some text\n");
        both.extend_from_slice(&cert);
        let s = Signer::from_pem(&both, &both).unwrap();
        let file = s
            .certificate_file("a.mf", b"x", DigestAlgorithm::Sha256)
            .unwrap();
        let text = String::from_utf8(file).unwrap();
        assert!(!text.contains("PRIVATE"), "{text}");
        assert!(text.ends_with(std::str::from_utf8(&cert).unwrap()));
        assert!(Signer::from_pem(&key, &key).is_err());
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (key, _) = key_and_cert(2048);
        let (_, cert) = key_and_cert(2048);
        let e = Signer::from_pem(&key, &cert).unwrap_err();
        assert!(e.to_string().contains("does not belong"), "{e}");
        assert!(Signer::from_pem(b"junk", &cert).is_err());
    }
}
