//! Update bundles: `MAGIC`, manifest, signature, payload.

use std::io::Read;

/// What a bundle carries and for whom (signed).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
pub fn open<R: Read>(
    reader: R,
    policy: &Policy,
) -> Result<(Manifest, PayloadReader<R>), BundleError> {
    let _ = (reader, policy);
    Err(BundleError::Malformed("bundles: not built yet".into()))
}

/// The payload of an opened bundle (see [`open`]).
pub struct PayloadReader<R> {
    #[allow(dead_code)]
    inner: R,
}

impl<R: Read> Read for PayloadReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let _ = buf;
        Ok(0)
    }
}

/// The `BundleError` inside an `io::Error` from [`PayloadReader`], if any.
pub fn bundle_error(e: &std::io::Error) -> Option<&BundleError> {
    e.get_ref().and_then(|i| i.downcast_ref::<BundleError>())
}
