//! TLS identities and trust.
//!
//! Every edge device and every relay has a self-signed certificate (`braid keygen`).
//! Devices are identified by the SHA-256 fingerprint of their certificate's DER:
//!
//! - The relay requires a client certificate and accepts it only if its fingerprint is
//!   in a runtime-updatable [`AllowList`] ([`AllowListVerifier`]). Rejections are logged
//!   and counted.
//! - The edge trusts the relay either by pinning its certificate fingerprint
//!   ([`RelayTrust::Pinned`]) or through normal WebPKI validation against a CA bundle
//!   ([`RelayTrust::Ca`]).
//!
//! In every case the TLS 1.3 `CertificateVerify` signature is still checked with the
//! ring provider's algorithms, so the handshake proves possession of the private key.
//!
//! All configs use the ring provider explicitly ([`crypto_provider`]) so nothing depends
//! on a process-wide default provider being installed.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use anyhow::{anyhow, bail, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore};
use sha2::{Digest, Sha256};

/// SHA-256 of a certificate's DER encoding.
pub type Fingerprint = [u8; 32];

/// Relay-side allow-list: certificate fingerprint -> device id. Shared with whatever
/// reloads the configuration; updates take effect for the next handshake.
pub type AllowList = Arc<RwLock<HashMap<Fingerprint, String>>>;

/// How the edge authenticates the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayTrust {
    /// Accept exactly the certificate with this SHA-256 fingerprint (name and validity
    /// period are not checked; the handshake signature is).
    Pinned(Fingerprint),
    /// Normal WebPKI validation (name, expiry, chain) against the roots in this PEM file.
    Ca(PathBuf),
}

/// A PEM-encoded certificate and private key.
#[derive(Clone)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl Identity {
    /// Fingerprint of the (first) certificate in `cert_pem`.
    pub fn fingerprint(&self) -> Result<Fingerprint> {
        let certs = parse_certs(self.cert_pem.as_bytes()).context("identity certificate")?;
        let first = certs
            .first()
            .ok_or_else(|| anyhow!("identity contains no certificate"))?;
        Ok(fingerprint(first))
    }
}

/// SHA-256 of `der`.
pub fn fingerprint(der: &[u8]) -> Fingerprint {
    Sha256::digest(der).into()
}

/// `sha256:` followed by 64 lowercase hex digits (one implementation, in `config`).
pub fn format_fingerprint(fp: &Fingerprint) -> String {
    crate::config::format_fingerprint(fp)
}

/// Inverse of [`format_fingerprint`]; see [`crate::config::parse_fingerprint`].
pub fn parse_fingerprint(s: &str) -> Result<Fingerprint> {
    crate::config::parse_fingerprint(s).map_err(|e| anyhow!(e))
}

/// A new self-signed ECDSA P-256 certificate for `name` (used as CN and DNS SAN).
pub fn generate_identity(name: &str) -> Result<Identity> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .context("generating key pair")?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()])
        .with_context(|| format!("certificate parameters for {name:?}"))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params
        .self_signed(&key)
        .with_context(|| format!("self-signing certificate for {name:?}"))?;
    Ok(Identity {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Generates an identity named `basename` and writes `dir/basename.crt` and
/// `dir/basename.key` (mode 0600). Refuses to overwrite existing files. Returns the
/// certificate fingerprint.
pub fn write_identity(dir: &Path, basename: &str) -> Result<Fingerprint> {
    let id = generate_identity(basename)?;
    let fp = id.fingerprint()?;
    let cert_path = dir.join(format!("{basename}.crt"));
    let key_path = dir.join(format!("{basename}.key"));
    for p in [&cert_path, &key_path] {
        if p.exists() {
            bail!("{} already exists; not overwriting it", p.display());
        }
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_new(&key_path, id.key_pem.as_bytes(), 0o600)?;
    write_new(&cert_path, id.cert_pem.as_bytes(), 0o644)?;
    Ok(fp)
}

/// Written atomically: a power cut mid-write leaves no torn key file (which the
/// existence check above would then refuse to replace).
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    crate::system::atomic::write_atomic_mode(path, data, mode)
        .with_context(|| format!("writing {}", path.display()))
}

fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let mut rd = pem;
    rustls_pemfile::certs(&mut rd)
        .collect::<Result<Vec<_>, _>>()
        .context("malformed PEM")
}

/// Loads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, SEC1 or
/// PKCS#1).
pub fn load_identity(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let certs = load_certs(cert_path)?;
    let key_pem =
        fs::read(key_path).with_context(|| format!("reading key {}", key_path.display()))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .with_context(|| format!("key {}: malformed PEM", key_path.display()))?
        .ok_or_else(|| anyhow!("key {}: no private key found", key_path.display()))?;
    Ok((certs, key))
}

/// Loads all certificates from a PEM file; errors if there are none.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = fs::read(path).with_context(|| format!("reading certificate {}", path.display()))?;
    let certs = parse_certs(&pem).with_context(|| format!("certificate {}", path.display()))?;
    if certs.is_empty() {
        bail!("certificate {}: no certificate found", path.display());
    }
    Ok(certs)
}

/// The ring crypto provider used for every Braid TLS config.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn sig_algs() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

// ---------------------------------------------------------------------------------------
// Relay side: client certificates checked against the allow-list.

/// Requires a client certificate whose fingerprint is in the allow-list.
#[derive(Debug)]
pub struct AllowListVerifier {
    allow: AllowList,
    rejected: Arc<AtomicU64>,
    algs: WebPkiSupportedAlgorithms,
}

impl AllowListVerifier {
    /// `rejected` is incremented for every handshake with an unknown certificate.
    pub fn new(allow: AllowList, rejected: Arc<AtomicU64>) -> Arc<Self> {
        Arc::new(Self {
            allow,
            rejected,
            algs: sig_algs(),
        })
    }
}

impl ClientCertVerifier for AllowListVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let fp = fingerprint(end_entity);
        let known = lookup(&self.allow, &fp);
        match known {
            Some(device) => {
                tracing::debug!(device, fingerprint = %format_fingerprint(&fp), "device certificate accepted");
                Ok(ClientCertVerified::assertion())
            }
            None => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(fingerprint = %format_fingerprint(&fp), "rejecting unknown device certificate");
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}

fn lookup(allow: &AllowList, fp: &Fingerprint) -> Option<String> {
    // A poisoned lock only means a writer panicked mid-update; the map is still usable.
    let map = allow.read().unwrap_or_else(|e| e.into_inner());
    map.get(fp).cloned()
}

/// Fingerprint of the peer's leaf certificate, once the handshake has completed.
pub fn peer_fingerprint(conn: &quinn::Connection) -> Option<Fingerprint> {
    let any = conn.peer_identity()?;
    let chain = any.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    chain.first().map(|c| fingerprint(c))
}

/// Device id of an accepted connection: peer certificate -> fingerprint -> allow-list.
/// `None` if the peer presented no certificate or was removed from the list since.
pub fn device_of(conn: &quinn::Connection, allow: &AllowList) -> Option<String> {
    lookup(allow, &peer_fingerprint(conn)?)
}

// ---------------------------------------------------------------------------------------
// Edge side: relay certificate pinned or CA-validated.

/// Accepts exactly one relay certificate, identified by fingerprint. Name and validity
/// period are deliberately ignored (self-signed relay certificates, devices with a wrong
/// clock); handshake signatures are verified.
#[derive(Debug)]
pub struct PinnedServerVerifier {
    pin: Fingerprint,
    algs: WebPkiSupportedAlgorithms,
}

impl PinnedServerVerifier {
    pub fn new(pin: Fingerprint) -> Arc<Self> {
        Arc::new(Self {
            pin,
            algs: sig_algs(),
        })
    }
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp = fingerprint(end_entity);
        if fp == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            tracing::warn!(
                got = %format_fingerprint(&fp),
                expected = %format_fingerprint(&self.pin),
                "relay certificate does not match the pinned fingerprint"
            );
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Loads the roots of a CA bundle into a store; errors if none are usable.
pub fn load_roots(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(load_certs(path)?);
    if added == 0 {
        bail!(
            "CA file {}: none of its {ignored} certificate(s) is a usable trust anchor",
            path.display()
        );
    }
    if ignored > 0 {
        tracing::warn!(path = %path.display(), ignored, "ignored unparsable CA certificates");
    }
    Ok(roots)
}

/// The server-certificate verifier for a [`RelayTrust`].
pub fn server_verifier(trust: &RelayTrust) -> Result<Arc<dyn ServerCertVerifier>> {
    let v: Arc<dyn ServerCertVerifier> = match trust {
        RelayTrust::Pinned(fp) => PinnedServerVerifier::new(*fp),
        RelayTrust::Ca(path) => {
            let roots = load_roots(path)?;
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
                .build()
                .with_context(|| format!("CA file {}", path.display()))?
        }
    };
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn temp_dir(tag: &str) -> PathBuf {
        use std::sync::atomic::AtomicUsize;
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "braid-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn fingerprint_format_roundtrip() {
        let fp = fingerprint(b"hello");
        let s = format_fingerprint(&fp);
        assert!(s.starts_with("sha256:"));
        assert_eq!(s.len(), 7 + 64);
        assert_eq!(
            s,
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(parse_fingerprint(&s).unwrap(), fp);
        let colons = hex::encode_upper(fp)
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(parse_fingerprint(&colons).unwrap(), fp);
        assert!(parse_fingerprint("sha256:abcd").is_err());
        assert!(parse_fingerprint("sha256:zz").is_err());
    }

    #[test]
    fn write_and_load_identity() {
        let dir = temp_dir("tls");
        let fp = write_identity(&dir, "dev1").unwrap();
        let key_path = dir.join("dev1.key");
        let mode = fs::metadata(&key_path).unwrap().permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
        let crt_mode = fs::metadata(dir.join("dev1.crt")).unwrap().permissions();
        assert_eq!(crt_mode.mode() & 0o777, 0o644);
        // Written atomically: no temporary file left behind.
        assert!(crate::system::atomic::list_temps(&dir).unwrap().is_empty());
        let (chain, _key) = load_identity(&dir.join("dev1.crt"), &key_path).unwrap();
        assert_eq!(chain.len(), 1);
        assert_eq!(fingerprint(&chain[0]), fp);
        // No silent overwrite of an existing key.
        let err = write_identity(&dir, "dev1").unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
        // Errors name the file.
        let missing = dir.join("nope.crt");
        let err = format!("{:#}", load_identity(&missing, &key_path).unwrap_err());
        assert!(err.contains("nope.crt"), "{err}");
        let err = format!(
            "{:#}",
            load_identity(&dir.join("dev1.crt"), &dir.join("dev1.crt")).unwrap_err()
        );
        assert!(
            err.contains("dev1.crt") && err.contains("no private key"),
            "{err}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn generated_identities_differ() {
        let a = generate_identity("a").unwrap();
        let b = generate_identity("a").unwrap();
        assert_ne!(a.fingerprint().unwrap(), b.fingerprint().unwrap());
        assert!(!format!("{a:?}").contains("PRIVATE KEY"));
    }
}
