//! Update bundles: `MAGIC`, manifest, signature, payload.
//!
//! A bundle is one file (`.braidb`), read front to back (see docs/ota.md, "Bundle
//! format"); lengths are big-endian `u32`:
//!
//! ```text
//! MAGIC                 8 bytes, "BRAIDB1\n"
//! manifest length       u32, 1..=MAX_MANIFEST
//! manifest              JSON of Manifest (payload size and SHA-256 included)
//! signature length      u32, 1..=MAX_SIGNATURE
//! signature             minisign .minisig text over the exact manifest bytes
//! payload               Manifest::payload_size bytes, then end of file
//! ```
//!
//! [`open`] checks, in order: magic, framing and limits, the signature (with the
//! keys of the [`Policy`]), the manifest's schema, `compatible`, the version and the
//! payload size; only then is the payload handed on, through a [`PayloadReader`]
//! that hashes it and holds back its last chunk until the SHA-256 matches. Every
//! byte of a bundle is covered: the manifest by the signature, the payload by the
//! signed hash, the signature's key id by its signed trusted comment, and the rest
//! of the signature text must be exactly what [`create`] writes.
//!
//! Memory is bounded: the header by the two limits, the payload by [`CHUNK`].

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

pub use super::keys::load_public_key;
use super::keys::{self, PublicKey, SecretKey};

/// First bytes of every bundle (format version 1).
pub const MAGIC: &[u8; 8] = b"BRAIDB1\n";
/// Largest manifest accepted (bytes). A real one is about 200.
pub const MAX_MANIFEST: u32 = 64 * 1024;
/// Largest signature text accepted (bytes). A real one is about 330.
pub const MAX_SIGNATURE: u32 = 4096;
/// Payload bytes read (and held) at a time by [`PayloadReader`].
pub const CHUNK: usize = 256 * 1024;
/// The untrusted comment line of a bundle signature (fixed: nothing in a bundle may
/// change without failing verification).
pub const UNTRUSTED_COMMENT: &str = "braid bundle manifest signature";

/// The trusted (signed) comment of a bundle signature made with key `id`: it binds
/// the key id, which minisign itself does not sign.
fn trusted_comment(id: &PublicKey) -> String {
    format!("braid bundle manifest, key {}", id.id_hex())
}

/// What a bundle carries and for whom (signed).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Version of what the payload installs, `MAJOR.MINOR.PATCH` (compared
    /// numerically; no downgrade unless forced).
    pub version: String,
    /// Hardware the payload is built for (`[ota] compatible` of the box, e.g.
    /// "braid-rpi4").
    pub compatible: String,
    pub kind: PayloadKind,
    pub payload_size: u64,
    /// SHA-256 of the payload, lowercase hex.
    pub payload_sha256: String,
}

/// What the payload is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum PayloadKind {
    /// A root filesystem image (written to the inactive root slot).
    Rootfs,
    /// The `braid` binary alone (directory slots).
    Binary,
    /// A RAUC bundle (`.raucb`), installed with `rauc install`.
    Rauc,
}

/// What the box accepts.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Ed25519 public keys (raw 32 bytes) allowed to sign bundles.
    pub keys: Vec<[u8; 32]>,
    pub compatible: String,
    /// The version running now.
    pub current_version: String,
    /// Allow a version lower than (or equal to) the current one.
    pub allow_downgrade: bool,
    /// Largest payload accepted (bytes).
    pub max_payload: u64,
}

/// Why a bundle was refused. Every variant is reported before anything was written
/// to a slot, except `HashMismatch` / `Truncated`, which are found at the end of the
/// stream: the caller must then discard what it wrote (the slot stays unbootable).
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("not a braid bundle (bad magic)")]
    BadMagic,
    #[error("malformed bundle: {0}")]
    Malformed(String),
    #[error("signature does not verify with any configured key")]
    BadSignature,
    #[error("bundle is for {got:?}, this box is {want:?}")]
    Incompatible { want: String, got: String },
    #[error(
        "bundle version {offered} is not newer than the running {current} (downgrade not allowed)"
    )]
    Downgrade { current: String, offered: String },
    #[error("payload of {size} bytes is over the limit of {max}")]
    TooLarge { size: u64, max: u64 },
    #[error("payload hash does not match the manifest")]
    HashMismatch,
    #[error("bundle truncated: payload ended after {got} of {want} bytes")]
    Truncated { got: u64, want: u64 },
    #[error("reading the bundle: {0}")]
    Io(#[from] std::io::Error),
}

/// Opens a bundle from a stream: reads and checks the header, manifest and
/// signature against `policy`, and returns the manifest with a reader of the
/// payload that hashes as it goes (it fails with `HashMismatch` / `Truncated`
/// wrapped in an `io::Error` at the end of the payload).
///
/// `policy.keys` are raw keys without minisign key ids: each is tried. See
/// [`open_with_keys`] to match the signature's key id as minisign does.
pub fn open<R: Read>(
    reader: R,
    policy: &Policy,
) -> Result<(Manifest, PayloadReader<R>), BundleError> {
    let keys: Vec<_> = policy.keys.iter().map(|k| (None, *k)).collect();
    open_inner(reader, policy, &keys).map(|(m, r, _)| (m, r))
}

/// [`open`] with minisign keys (id and key, from [`PublicKey::load`]) instead of
/// `policy.keys`: a key is tried only if its id is the one the signature names.
/// Also returns the key that verified.
pub fn open_with_keys<R: Read>(
    reader: R,
    policy: &Policy,
    keys: &[PublicKey],
) -> Result<(Manifest, PayloadReader<R>, PublicKey), BundleError> {
    let keys: Vec<_> = keys.iter().map(|k| (Some(k.id), k.key)).collect();
    open_inner(reader, policy, &keys)
}

/// The signed parts of a bundle, as read by [`read_header`].
#[derive(Debug, Clone)]
pub struct Header {
    /// The manifest exactly as signed.
    pub manifest: Vec<u8>,
    /// The `.minisig` text over `manifest`.
    pub signature: String,
}

/// Reads magic, manifest and signature (framing and limits only, no verification).
/// The stream is left at the first payload byte.
pub fn read_header<R: Read>(reader: &mut R) -> Result<Header, BundleError> {
    let mut magic = [0u8; MAGIC.len()];
    let n = read_up_to(reader, &mut magic)?;
    if magic[..n] != MAGIC[..n] {
        return Err(BundleError::BadMagic);
    }
    if n < magic.len() {
        return Err(ends_inside("magic", n, magic.len()));
    }
    let manifest = read_part(reader, "manifest", MAX_MANIFEST)?;
    let signature = read_part(reader, "signature", MAX_SIGNATURE)?;
    let signature = String::from_utf8(signature)
        .map_err(|_| BundleError::Malformed("signature is not UTF-8".into()))?;
    Ok(Header {
        manifest,
        signature,
    })
}

fn ends_inside(what: &str, got: usize, want: usize) -> BundleError {
    BundleError::Malformed(format!(
        "truncated: the bundle ends inside the {what} ({got} of {want} bytes)"
    ))
}

/// A `u32` length (1..=`max`) and that many bytes.
fn read_part<R: Read>(reader: &mut R, what: &str, max: u32) -> Result<Vec<u8>, BundleError> {
    let mut len = [0u8; 4];
    let n = read_up_to(reader, &mut len)?;
    if n < len.len() {
        return Err(ends_inside(&format!("{what} length"), n, len.len()));
    }
    let len = u32::from_be_bytes(len);
    if len == 0 || len > max {
        return Err(BundleError::Malformed(format!(
            "{what} length {len} is outside 1..={max}"
        )));
    }
    let mut buf = vec![0u8; len as usize];
    let n = read_up_to(reader, &mut buf)?;
    if n < buf.len() {
        return Err(ends_inside(what, n, buf.len()));
    }
    Ok(buf)
}

/// Reads until `buf` is full or the stream ends; returns how much was read.
fn read_up_to<R: Read>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Checks a bundle signature: its canonical form, then the keys.
fn verify_signature(
    header: &Header,
    keys: &[(Option<[u8; keys::KEY_ID_LEN]>, [u8; 32])],
) -> Result<PublicKey, BundleError> {
    let info = keys::parse_signature(&header.signature)?;
    // Everything in the text that the signatures do not cover is pinned: the
    // untrusted comment, the encodings, and (through the signed trusted comment) the
    // key id.
    let id_only = PublicKey {
        id: info.key_id,
        key: [0; 32],
    };
    if info.untrusted_comment != UNTRUSTED_COMMENT
        || info.trusted_comment != trusted_comment(&id_only)
        || info.canonical != header.signature
    {
        return Err(BundleError::BadSignature);
    }
    keys::verify(&header.signature, &header.manifest, keys)
}

fn open_inner<R: Read>(
    mut reader: R,
    policy: &Policy,
    keys: &[(Option<[u8; keys::KEY_ID_LEN]>, [u8; 32])],
) -> Result<(Manifest, PayloadReader<R>, PublicKey), BundleError> {
    let header = read_header(&mut reader)?;
    let key = verify_signature(&header, keys)?;
    let manifest = parse_manifest(&header.manifest)?;
    if manifest.compatible != policy.compatible {
        return Err(BundleError::Incompatible {
            want: policy.compatible.clone(),
            got: manifest.compatible,
        });
    }
    let offered = parse_version(&manifest.version).ok_or_else(|| {
        BundleError::Malformed(format!(
            "manifest version {:?} is not MAJOR.MINOR.PATCH",
            manifest.version
        ))
    })?;
    if !policy.allow_downgrade {
        let current = parse_version(&policy.current_version).ok_or_else(|| {
            BundleError::Malformed(format!(
                "running version {:?} is not MAJOR.MINOR.PATCH",
                policy.current_version
            ))
        })?;
        if offered <= current {
            return Err(BundleError::Downgrade {
                current: policy.current_version.clone(),
                offered: manifest.version,
            });
        }
    }
    if manifest.payload_size > policy.max_payload {
        return Err(BundleError::TooLarge {
            size: manifest.payload_size,
            max: policy.max_payload,
        });
    }
    let mut expected = [0u8; 32];
    // parse_manifest checked the hex.
    hex::decode_to_slice(&manifest.payload_sha256, &mut expected)
        .map_err(|_| BundleError::Malformed("payload_sha256 is not 64 hex digits".into()))?;
    let payload = PayloadReader {
        inner: reader,
        want: manifest.payload_size,
        got: 0,
        hasher: Sha256::new(),
        expected,
        buf: Vec::new(),
        pos: 0,
        state: State::Streaming,
    };
    Ok((manifest, payload, key))
}

/// Parses the (already verified) manifest bytes.
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, BundleError> {
    let m: Manifest = serde_json::from_slice(bytes)
        .map_err(|e| BundleError::Malformed(format!("manifest: {e}")))?;
    let h = m.payload_sha256.as_bytes();
    if h.len() != 64
        || !h
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    {
        return Err(BundleError::Malformed(
            "manifest: payload_sha256 is not 64 lowercase hex digits".into(),
        ));
    }
    Ok(m)
}

/// `MAJOR.MINOR.PATCH`, each a decimal number (no sign, no suffix).
pub fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let num = |s: &str| {
        if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse::<u64>().ok()
        }
    };
    let mut it = v.split('.');
    let v = (num(it.next()?)?, num(it.next()?)?, num(it.next()?)?);
    if it.next().is_some() {
        return None;
    }
    Some(v)
}

/// The payload of an opened bundle (see [`open`]). Reads `payload_size` bytes in
/// chunks of at most [`CHUNK`], hashing them; the chunk that completes the payload
/// is handed out only after the hash matched and the stream was seen to end there,
/// so a consumer never reaches a clean end of file on a bad payload.
pub struct PayloadReader<R> {
    inner: R,
    want: u64,
    /// Payload bytes read from `inner` (and hashed).
    got: u64,
    hasher: Sha256,
    expected: [u8; 32],
    /// Read but not yet handed out: `buf[pos..]`.
    buf: Vec<u8>,
    pos: usize,
    state: State,
}

#[derive(Debug, Clone)]
enum State {
    Streaming,
    /// Hash and end checked; what is left in `buf` may go out.
    Verified,
    Failed(Failure),
}

#[derive(Debug, Clone)]
enum Failure {
    Hash,
    Truncated {
        got: u64,
        want: u64,
    },
    Trailing,
    /// The underlying stream failed: the payload cannot be checked.
    Io(io::ErrorKind, String),
}

impl Failure {
    fn error(&self) -> io::Error {
        let e = match self {
            Failure::Io(kind, msg) => return io::Error::new(*kind, msg.clone()),
            Failure::Hash => BundleError::HashMismatch,
            Failure::Truncated { got, want } => BundleError::Truncated {
                got: *got,
                want: *want,
            },
            Failure::Trailing => {
                BundleError::Malformed("bytes after the end of the payload".into())
            }
        };
        let kind = match self {
            Failure::Truncated { .. } => io::ErrorKind::UnexpectedEof,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

impl<R> PayloadReader<R> {
    /// Payload bytes expected (the manifest's `payload_size`).
    pub fn payload_size(&self) -> u64 {
        self.want
    }
}

impl<R: Read> PayloadReader<R> {
    /// Reads the next chunk from `inner` into `buf`; on the last one, checks the hash
    /// and the end of the stream before anything of it is handed out.
    fn fill(&mut self) -> Result<(), Failure> {
        self.buf.clear();
        self.pos = 0;
        let left = self.want - self.got;
        if left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            self.buf.resize(n, 0);
            // Fill the whole chunk (short reads are normal on pipes and sockets), so
            // that the chunk held back at the end is a full one.
            let k = read_up_to(&mut self.inner, &mut self.buf)
                .map_err(|e| Failure::Io(e.kind(), e.to_string()))?;
            self.buf.truncate(k);
            if k < n {
                self.hasher.update(&self.buf);
                self.buf.clear();
                return Err(Failure::Truncated {
                    got: self.got + k as u64,
                    want: self.want,
                });
            }
            self.hasher.update(&self.buf);
            self.got += k as u64;
        }
        if self.got == self.want {
            if self.hasher.finalize_reset().as_slice() != self.expected {
                self.buf.clear();
                return Err(Failure::Hash);
            }
            let mut one = [0u8; 1];
            let k = read_up_to(&mut self.inner, &mut one)
                .map_err(|e| Failure::Io(e.kind(), e.to_string()))?;
            if k != 0 {
                self.buf.clear();
                return Err(Failure::Trailing);
            }
            self.state = State::Verified;
        }
        Ok(())
    }
}

impl<R: Read> Read for PayloadReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if self.pos < self.buf.len() {
                let n = out.len().min(self.buf.len() - self.pos);
                out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            match &self.state {
                State::Verified => return Ok(0),
                State::Failed(f) => return Err(f.error()),
                State::Streaming => {
                    if let Err(f) = self.fill() {
                        let e = f.error();
                        self.state = State::Failed(f);
                        return Err(e);
                    }
                }
            }
        }
    }
}

/// Size and SHA-256 (lowercase hex) of a payload.
pub fn hash_payload<R: Read>(mut payload: R) -> io::Result<(u64, String)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = match payload.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(h.finalize())))
}

/// Writes a bundle: signs `manifest` with `key` and streams `payload` after it.
/// Fails (after writing) if the payload's size or hash is not the manifest's.
pub fn write<R: Read, W: Write>(
    key: &SecretKey,
    manifest: &Manifest,
    mut payload: R,
    mut out: W,
) -> Result<(), BundleError> {
    let m = serde_json::to_vec(manifest)
        .map_err(|e| BundleError::Malformed(format!("manifest: {e}")))?;
    let sig = key.sign(&m, &trusted_comment(&key.public()), UNTRUSTED_COMMENT)?;
    for (what, part, max) in [
        ("manifest", &m, MAX_MANIFEST),
        ("signature", &sig.clone().into_bytes(), MAX_SIGNATURE),
    ] {
        if part.is_empty() || part.len() > max as usize {
            return Err(BundleError::Malformed(format!(
                "{what} of {} bytes is over the limit of {max}",
                part.len()
            )));
        }
    }
    out.write_all(MAGIC)?;
    out.write_all(&(m.len() as u32).to_be_bytes())?;
    out.write_all(&m)?;
    out.write_all(&(sig.len() as u32).to_be_bytes())?;
    out.write_all(sig.as_bytes())?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = match payload.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        h.update(&buf[..n]);
        size += n as u64;
        out.write_all(&buf[..n])?;
    }
    out.flush()?;
    if size != manifest.payload_size || hex::encode(h.finalize()) != manifest.payload_sha256 {
        return Err(BundleError::Malformed(
            "the payload changed while the bundle was written".into(),
        ));
    }
    Ok(())
}

/// `braid bundle create`: hashes `payload`, signs a manifest for it with `key` and
/// writes the bundle to `out` (through `OUT.partial`, renamed when complete; an
/// existing `out` is replaced). Returns the manifest.
pub fn create(
    key: &SecretKey,
    version: &str,
    compatible: &str,
    kind: PayloadKind,
    payload: &Path,
    out: &Path,
) -> Result<Manifest, BundleError> {
    if parse_version(version).is_none() {
        return Err(BundleError::Malformed(format!(
            "version {version:?} is not MAJOR.MINOR.PATCH"
        )));
    }
    let (payload_size, payload_sha256) = hash_payload(File::open(payload)?)?;
    let manifest = Manifest {
        version: version.to_string(),
        compatible: compatible.to_string(),
        kind,
        payload_size,
        payload_sha256,
    };
    let mut tmp_name = out.as_os_str().to_owned();
    tmp_name.push(".partial");
    let tmp = std::path::PathBuf::from(tmp_name);
    let result = (|| {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let mut w = io::BufWriter::with_capacity(CHUNK, f);
        write(key, &manifest, File::open(payload)?, &mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, out)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| manifest)
}

/// The `BundleError` inside an `io::Error` from [`PayloadReader`], if any.
pub fn bundle_error(e: &std::io::Error) -> Option<&BundleError> {
    e.get_ref().and_then(|i| i.downcast_ref::<BundleError>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_three_decimal_numbers() {
        assert_eq!(parse_version("1.10.0"), Some((1, 10, 0)));
        assert!(parse_version("1.10.0") > parse_version("1.9.99"));
        assert_eq!(parse_version("0.0.0"), Some((0, 0, 0)));
        for bad in [
            "",
            "1",
            "1.2",
            "1.2.3.4",
            "1.2.x",
            "1..3",
            "-1.2.3",
            "+1.2.3",
            "1.2.3-rc1",
            " 1.2.3",
            "99999999999999999999.0.0",
        ] {
            assert_eq!(parse_version(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn manifest_schema_is_strict() {
        let good = r#"{"version":"1.0.0","compatible":"hw","kind":"rauc","payload_size":1,"payload_sha256":"00000000000000000000000000000000000000000000000000000000000000ff"}"#;
        assert_eq!(
            parse_manifest(good.as_bytes()).unwrap().kind,
            PayloadKind::Rauc
        );
        let extra = good.replace("\"kind\"", "\"extra\":1,\"kind\"");
        assert!(parse_manifest(extra.as_bytes()).is_err());
        let upper = good.replace("ff\"", "FF\"");
        assert!(parse_manifest(upper.as_bytes()).is_err());
        let short = good.replace("ff\"", "f\"");
        assert!(parse_manifest(short.as_bytes()).is_err());
        assert!(parse_manifest(b"\xff").is_err());
    }

    #[test]
    fn header_framing() {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&3u32.to_be_bytes());
        b.extend_from_slice(b"{}\n");
        b.extend_from_slice(&2u32.to_be_bytes());
        b.extend_from_slice(b"ab");
        b.extend_from_slice(b"payload");
        let mut r = &b[..];
        let h = read_header(&mut r).unwrap();
        assert_eq!(
            (h.manifest.as_slice(), h.signature.as_str()),
            (&b"{}\n"[..], "ab")
        );
        assert_eq!(r, b"payload");
        // A signature that is not minisign's is malformed, not a panic.
        let k = Policy {
            keys: vec![[7; 32]],
            compatible: "hw".into(),
            current_version: "0.0.0".into(),
            allow_downgrade: false,
            max_payload: 10,
        };
        assert!(matches!(open(&b[..], &k), Err(BundleError::Malformed(_))));
    }
}
