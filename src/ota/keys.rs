//! Bundle signing keys and signatures in minisign's formats.
//!
//! Admins already know minisign (<https://jedisct1.github.io/minisign/>), so bundle
//! keys and signatures are minisign's, byte for byte: a `NAME.pub` written here is
//! read by `minisign -V -p NAME.pub`, a `NAME.key` by `minisign -S -s NAME.key`, and
//! keys made with `minisign -G -W` work here. The cryptography (Ed25519 over the
//! BLAKE2b-512 prehash, algorithm `ED`; legacy `Ed` accepted on verify) is the
//! `minisign` crate's, not ours.
//!
//! A minisign key carries an 8-byte key id beside the 32-byte Ed25519 key; a
//! signature names the id of the key that made it. [`PublicKey`] keeps both, so
//! [`verify`] can refuse a signature whose id names another key, as minisign does.

use std::fs::OpenOptions;
use std::io::{Cursor, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::bundle::BundleError;

/// Length of a minisign key id.
pub const KEY_ID_LEN: usize = 8;

/// A public key read from (or written as) a minisign public key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey {
    /// minisign key id (little-endian in the file; shown as 16 hex digits).
    pub id: [u8; KEY_ID_LEN],
    /// The raw Ed25519 public key.
    pub key: [u8; 32],
}

impl PublicKey {
    /// Parses the text of a minisign public key file (`untrusted comment:` line,
    /// then the base64 of `Ed` + key id + key).
    pub fn parse(text: &str) -> Result<Self, BundleError> {
        let bad = |why: &str| BundleError::Malformed(format!("minisign public key: {why}"));
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let first = lines.next().ok_or_else(|| bad("empty"))?;
        // The comment line is optional in minisign's `-P` form: accept a bare key too.
        let b64 = if first.starts_with("untrusted comment:") {
            lines
                .next()
                .ok_or_else(|| bad("no key line after the comment"))?
        } else {
            first
        };
        let pk = minisign::PublicKey::from_base64(b64).map_err(|e| bad(&e.to_string()))?;
        Self::from_minisign(&pk).ok_or_else(|| bad("not an Ed25519 minisign key"))
    }

    /// Reads a minisign public key file.
    pub fn load(path: &Path) -> Result<Self, BundleError> {
        let text = std::fs::read_to_string(path)?;
        Self::parse(&text).map_err(|e| match e {
            BundleError::Malformed(m) => BundleError::Malformed(format!("{}: {m}", path.display())),
            e => e,
        })
    }

    /// The key id as minisign prints it (16 uppercase hex digits).
    pub fn id_hex(&self) -> String {
        format!("{:016X}", u64::from_le_bytes(self.id))
    }

    /// The text of a minisign public key file.
    pub fn to_minisign_string(&self) -> String {
        // The minisign crate writes its own box text; rebuild from our fields.
        let mut raw = Vec::with_capacity(42);
        raw.extend_from_slice(b"Ed");
        raw.extend_from_slice(&self.id);
        raw.extend_from_slice(&self.key);
        match minisign::PublicKey::from_bytes(&raw).and_then(|pk| pk.to_box()) {
            Ok(b) => b.into_string(),
            // from_bytes of 42 well-formed bytes and to_box do not fail.
            Err(_) => String::new(),
        }
    }

    fn from_minisign(pk: &minisign::PublicKey) -> Option<Self> {
        let raw = pk.to_bytes();
        if raw.len() != 2 + KEY_ID_LEN + 32 || &raw[..2] != b"Ed" {
            return None;
        }
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&raw[2..2 + KEY_ID_LEN]);
        let mut key = [0u8; 32];
        key.copy_from_slice(&raw[2 + KEY_ID_LEN..]);
        Some(Self { id, key })
    }

    fn to_minisign(self) -> Option<minisign::PublicKey> {
        let mut raw = Vec::with_capacity(42);
        raw.extend_from_slice(b"Ed");
        raw.extend_from_slice(&self.id);
        raw.extend_from_slice(&self.key);
        minisign::PublicKey::from_bytes(&raw).ok()
    }
}

/// Reads a minisign public key file and returns the raw Ed25519 key (for
/// [`Policy::keys`](super::bundle::Policy::keys)). [`PublicKey::load`] keeps the key
/// id too.
pub fn load_public_key(path: &Path) -> Result<[u8; 32], BundleError> {
    Ok(PublicKey::load(path)?.key)
}

/// A secret (signing) key, unencrypted, in minisign's secret key format.
pub struct SecretKey {
    sk: minisign::SecretKey,
    public: PublicKey,
}

impl SecretKey {
    /// A new random key pair (the OS's random source).
    pub fn generate() -> Result<Self, BundleError> {
        let kp = minisign::KeyPair::generate_unencrypted_keypair().map_err(crypto)?;
        let public = PublicKey::from_minisign(&kp.pk)
            .ok_or_else(|| BundleError::Malformed("generated key is not Ed25519".into()))?;
        Ok(Self { sk: kp.sk, public })
    }

    /// Parses the text of an unencrypted minisign secret key file (`minisign -G -W`).
    /// Encrypted keys are refused: signing runs unattended (CI), with no password
    /// prompt.
    pub fn parse(text: &str) -> Result<Self, BundleError> {
        let bad = |why: String| BundleError::Malformed(format!("minisign secret key: {why}"));
        let sk_box = minisign::SecretKeyBox::from_string(text).map_err(|e| bad(e.to_string()))?;
        let sk = match minisign::SecretKey::from_unencrypted_box(sk_box) {
            Ok(sk) => sk,
            Err(e) => Self::zero_checksum_key(text)
                .ok_or_else(|| bad(format!("{e} (encrypted keys are not supported)")))?,
        };
        let pk = minisign::PublicKey::from_secret_key(&sk).map_err(|e| bad(e.to_string()))?;
        let public = PublicKey::from_minisign(&pk).ok_or_else(|| bad("not Ed25519".into()))?;
        let key = Self { sk, public };
        // The checksum (when there is one) caught corruption; this catches a secret
        // half that does not match the public half.
        let sig = key.sign(b"self-test", "self-test", "self-test")?;
        verify(&sig, b"self-test", &[(Some(public.id), public.key)])
            .map_err(|_| bad("the secret and public halves do not match".into()))?;
        Ok(key)
    }

    /// minisign 0.11 and older write unencrypted keys (`-G -W`) with a zero checksum,
    /// which the minisign crate takes for corruption: accept exactly that case (no
    /// KDF, checksum all zero), checked by the signing self-test in [`Self::parse`].
    fn zero_checksum_key(text: &str) -> Option<minisign::SecretKey> {
        use base64::Engine;
        let line = text.lines().nth(1)?.trim();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(line)
            .ok()?;
        // sig_alg 2, kdf_alg 2, chk_alg 2, salt 32, ops 8, mem 8, keynum 8, sk 64, chk 32.
        if raw.len() != 158 || &raw[..2] != b"Ed" || raw[2..4] != [0, 0] {
            return None;
        }
        if raw[126..].iter().any(|&b| b != 0) {
            return None;
        }
        minisign::SecretKey::from_bytes(&raw).ok()
    }

    /// Reads an unencrypted minisign secret key file.
    pub fn load(path: &Path) -> Result<Self, BundleError> {
        let text = std::fs::read_to_string(path)?;
        Self::parse(&text)
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The text of the secret key file (unencrypted).
    pub fn to_minisign_string(&self) -> Result<String, BundleError> {
        Ok(self
            .sk
            .to_box(Some("braid bundle secret key (unencrypted)"))
            .map_err(crypto)?
            .into_string())
    }

    /// Signs `data` (prehashed, algorithm `ED`) and returns the `.minisig` text.
    /// Neither comment may hold a newline.
    pub fn sign(
        &self,
        data: &[u8],
        trusted_comment: &str,
        untrusted_comment: &str,
    ) -> Result<String, BundleError> {
        if trusted_comment.contains(['\n', '\r']) || untrusted_comment.contains(['\n', '\r']) {
            return Err(BundleError::Malformed("a comment holds a newline".into()));
        }
        let pk = self.public.to_minisign();
        let sig = minisign::sign(
            pk.as_ref(),
            &self.sk,
            Cursor::new(data),
            Some(trusted_comment),
            Some(untrusted_comment),
        )
        .map_err(crypto)?;
        Ok(sig.into_string())
    }
}

fn crypto(e: minisign::PError) -> BundleError {
    BundleError::Malformed(format!("minisign: {e}"))
}

/// Checks that `sig` has the shape of a `.minisig` text (four `\n`-ended lines, the
/// two base64 lines of exactly the lengths of a 74-byte signature and a 64-byte
/// global signature) before the minisign crate parses it: its parser assumes those
/// lengths (a wrong one hits an assertion or an out-of-range slice).
fn check_shape(sig: &str) -> Result<(), BundleError> {
    let bad = |why: &str| Err(BundleError::Malformed(format!("signature: {why}")));
    let Some(body) = sig.strip_suffix('\n') else {
        return bad("does not end with a newline");
    };
    let lines: Vec<&str> = body.split('\n').collect();
    if lines.len() != 4 {
        return bad("not four lines");
    }
    let b64 = |l: &str, data: usize, pad: usize| {
        l.len() == data + pad
            && l[..data]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
            && l[data..].bytes().all(|b| b == b'=')
    };
    if !lines[0].starts_with("untrusted comment: ") || !lines[2].starts_with("trusted comment: ") {
        return bad("comment lines missing");
    }
    // 74 bytes: 99 base64 characters and one '='; 64 bytes: 86 and two.
    if !b64(lines[1], 99, 1) || !b64(lines[3], 86, 2) {
        return bad("bad signature lines");
    }
    Ok(())
}

/// A parsed `.minisig` text: key id, comments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureInfo {
    /// Id of the key that made the signature.
    pub key_id: [u8; KEY_ID_LEN],
    pub untrusted_comment: String,
    pub trusted_comment: String,
    /// The text as the minisign crate writes it back (canonical base64): differs
    /// from the input if the input had non-canonical encodings.
    pub canonical: String,
}

/// Parses a `.minisig` text (no verification).
pub fn parse_signature(sig: &str) -> Result<SignatureInfo, BundleError> {
    check_shape(sig)?;
    let b = minisign::SignatureBox::from_string(sig)
        .map_err(|e| BundleError::Malformed(format!("signature: {e}")))?;
    let key_id = b
        .keynum()
        .try_into()
        .map_err(|_| BundleError::Malformed("signature: bad key id".into()))?;
    let trusted_comment = b
        .trusted_comment()
        .map_err(|e| BundleError::Malformed(format!("signature: {e}")))?;
    let untrusted_comment = b
        .untrusted_comment()
        .map_err(|e| BundleError::Malformed(format!("signature: {e}")))?;
    // to_string() cannot fail now: the trusted comment and global signature are there.
    Ok(SignatureInfo {
        key_id,
        untrusted_comment,
        trusted_comment,
        canonical: b.to_string(),
    })
}

/// Verifies a `.minisig` text over `data` with one of `keys`. A key whose id is
/// `None` (a raw key, as in [`Policy::keys`](super::bundle::Policy::keys)) is tried
/// whatever id the signature names; a key with an id only if the ids match. The
/// global signature over the trusted comment is checked too (minisign's `-V`).
/// Returns the key that verified.
pub fn verify(
    sig: &str,
    data: &[u8],
    keys: &[(Option<[u8; KEY_ID_LEN]>, [u8; 32])],
) -> Result<PublicKey, BundleError> {
    check_shape(sig)?;
    let sig_box = minisign::SignatureBox::from_string(sig)
        .map_err(|e| BundleError::Malformed(format!("signature: {e}")))?;
    let sig_id: [u8; KEY_ID_LEN] = sig_box
        .keynum()
        .try_into()
        .map_err(|_| BundleError::Malformed("signature: bad key id".into()))?;
    for (id, key) in keys {
        if id.is_some_and(|id| id != sig_id) {
            continue;
        }
        // minisign::verify matches key ids itself: give it the signature's id for a
        // raw key, which has none of its own.
        let candidate = PublicKey {
            id: sig_id,
            key: *key,
        };
        let Some(pk) = candidate.to_minisign() else {
            continue;
        };
        // allow_legacy: accept the older non-prehashed `Ed` algorithm too.
        if minisign::verify(&pk, &sig_box, Cursor::new(data), true, false, true).is_ok() {
            return Ok(candidate);
        }
    }
    Err(BundleError::BadSignature)
}

/// `braid bundle keygen`: writes `DIR/NAME.pub` (mode 0644) and `DIR/NAME.key`
/// (mode 0600, unencrypted); refuses to overwrite either. Returns both paths.
pub fn keygen(dir: &Path, name: &str) -> std::io::Result<(PathBuf, PathBuf)> {
    use std::io::{Error, ErrorKind};
    if name.is_empty() || name.contains('/') {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("bad key name {name:?}"),
        ));
    }
    let pub_path = dir.join(format!("{name}.pub"));
    let key_path = dir.join(format!("{name}.key"));
    for p in [&pub_path, &key_path] {
        if p.exists() {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("{} exists: not overwriting a key", p.display()),
            ));
        }
    }
    let sk = SecretKey::generate().map_err(Error::other)?;
    let secret = sk.to_minisign_string().map_err(Error::other)?;
    write_new(&key_path, secret.as_bytes(), 0o600)?;
    if let Err(e) = write_new(
        &pub_path,
        sk.public().to_minisign_string().as_bytes(),
        0o644,
    ) {
        let _ = std::fs::remove_file(&key_path);
        return Err(e);
    }
    Ok((pub_path, key_path))
}

/// Creates `path` (never replacing a file: `create_new`) with `mode` and `data`.
fn write_new(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_text_round_trips() {
        let sk = SecretKey::generate().unwrap();
        let text = sk.public().to_minisign_string();
        assert!(text.starts_with("untrusted comment: minisign public key: "));
        assert_eq!(PublicKey::parse(&text).unwrap(), sk.public());
        let sk2 = SecretKey::parse(&sk.to_minisign_string().unwrap()).unwrap();
        assert_eq!(sk2.public(), sk.public());
    }

    #[test]
    fn sign_verify_and_key_ids() {
        let a = SecretKey::generate().unwrap();
        let b = SecretKey::generate().unwrap();
        let sig = a.sign(b"data", "c", "u").unwrap();
        let info = parse_signature(&sig).unwrap();
        assert_eq!(info.key_id, a.public().id);
        assert_eq!(info.trusted_comment, "c");
        assert_eq!(info.canonical, sig);
        let pa = a.public();
        let pb = b.public();
        assert_eq!(verify(&sig, b"data", &[(Some(pa.id), pa.key)]).unwrap(), pa);
        assert_eq!(verify(&sig, b"data", &[(None, pa.key)]).unwrap(), pa);
        // Right key under another id: skipped, as minisign does.
        assert!(verify(&sig, b"data", &[(Some(pb.id), pa.key)]).is_err());
        assert!(verify(&sig, b"data", &[(None, pb.key)]).is_err());
        assert!(verify(&sig, b"datA", &[(None, pa.key)]).is_err());
        assert!(verify(&sig, b"data", &[]).is_err());
    }

    #[test]
    fn junk_keys_are_errors() {
        for t in [
            "",
            "untrusted comment: x",
            "untrusted comment: x\nAAAA",
            "\u{0}",
        ] {
            assert!(PublicKey::parse(t).is_err());
            assert!(SecretKey::parse(t).is_err());
        }
    }
}
