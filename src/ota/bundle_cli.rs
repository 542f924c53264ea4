//! `braid bundle ...`: the admin side of update bundles (keys, create, verify, bench).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, Context, Result};

use super::bundle::{self, PayloadKind, Policy};
use super::keys::{self, PublicKey, SecretKey};

#[derive(clap::Subcommand)]
pub enum BundleCmd {
    /// Generate a signing key pair: DIR/NAME.pub (minisign public key) and DIR/NAME.key
    /// (unencrypted minisign secret key, mode 0600). Never overwrites.
    Keygen {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        name: String,
    },
    /// Sign a payload into a bundle.
    Create {
        /// Secret key (NAME.key from `braid bundle keygen` or `minisign -G -W`).
        #[arg(long)]
        key: PathBuf,
        /// Version the payload installs, MAJOR.MINOR.PATCH.
        #[arg(long)]
        version: String,
        /// Hardware it is for (the box's `[ota] compatible`).
        #[arg(long)]
        compatible: String,
        #[arg(long, value_enum)]
        kind: PayloadKind,
        #[arg(long)]
        payload: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify a bundle as a box would (signature, hardware, version, payload hash);
    /// prints the manifest as JSON. Exit 0 if accepted, 1 with the reason if not.
    Verify {
        /// Trusted minisign public key (repeat for several).
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        #[arg(long)]
        compatible: String,
        /// The running version; without it, any version is accepted.
        #[arg(long)]
        current_version: Option<String>,
        #[arg(long)]
        allow_downgrade: bool,
        file: PathBuf,
    },
    /// Time the streaming verification of a temporary signed bundle of N MB
    /// (read from a file, hash, discard); prints JSON.
    Bench {
        #[arg(long, default_value_t = 256)]
        size_mb: u64,
    },
}

/// Runs one `braid bundle` command.
pub fn cli(cmd: BundleCmd) -> Result<()> {
    match cmd {
        BundleCmd::Keygen { dir, name } => {
            std::fs::create_dir_all(&dir)?;
            let (pub_path, key_path) = keys::keygen(&dir, &name)?;
            let pk = PublicKey::load(&pub_path)?;
            println!(
                "key id {}: {} (public), {} (secret, keep it offline)",
                pk.id_hex(),
                pub_path.display(),
                key_path.display()
            );
            Ok(())
        }
        BundleCmd::Create {
            key,
            version,
            compatible,
            kind,
            payload,
            out,
        } => {
            let sk = SecretKey::load(&key).with_context(|| format!("{}", key.display()))?;
            let m = bundle::create(&sk, &version, &compatible, kind, &payload, &out)?;
            println!("{}", serde_json::to_string_pretty(&m)?);
            Ok(())
        }
        BundleCmd::Verify {
            keys,
            compatible,
            current_version,
            allow_downgrade,
            file,
        } => {
            let keys = keys
                .iter()
                .map(|p| PublicKey::load(p))
                .collect::<Result<Vec<_>, _>>()?;
            let policy = Policy {
                keys: keys.iter().map(|k| k.key).collect(),
                compatible,
                allow_downgrade: allow_downgrade || current_version.is_none(),
                current_version: current_version.unwrap_or_else(|| "0.0.0".into()),
                max_payload: u64::MAX,
            };
            let f = File::open(&file).with_context(|| format!("{}", file.display()))?;
            let (m, key) =
                verify_stream(f, &policy, &keys).map_err(|e| anyhow!("bundle refused: {e}"))?;
            eprintln!("bundle verified (key id {})", key.id_hex());
            println!("{}", serde_json::to_string_pretty(&m)?);
            Ok(())
        }
        BundleCmd::Bench { size_mb } => {
            let r = bench(size_mb)?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
    }
}

/// Opens and streams a whole bundle, discarding the payload.
fn verify_stream<R: Read>(
    r: R,
    policy: &Policy,
    keys: &[PublicKey],
) -> Result<(bundle::Manifest, PublicKey), bundle::BundleError> {
    let (m, mut payload, key) = bundle::open_with_keys(r, policy, keys)?;
    let mut buf = vec![0u8; bundle::CHUNK];
    loop {
        match payload.read(&mut buf) {
            Ok(0) => return Ok((m, key)),
            Ok(_) => {}
            Err(e) => {
                return Err(match bundle::bundle_error(&e) {
                    Some(_) => match e.into_inner().map(|i| i.downcast::<bundle::BundleError>()) {
                        Some(Ok(b)) => *b,
                        _ => bundle::BundleError::HashMismatch,
                    },
                    None => bundle::BundleError::Io(e),
                })
            }
        }
    }
}

/// What `braid bundle bench` prints.
#[derive(Debug, serde::Serialize)]
pub struct BenchReport {
    pub size_mb: u64,
    /// Payload MB (2^20 bytes) verified per second.
    pub verify_mb_s: f64,
    /// Time of the whole verification: open (signature, checks) and the payload
    /// streamed and hashed to the end.
    pub seconds: f64,
}

/// Creates a signed bundle of `size_mb` MB in a temporary directory and times its
/// streaming verification. The file was just written, so it is read from the page
/// cache: this measures hashing and copying, not the disk.
pub fn bench(size_mb: u64) -> Result<BenchReport> {
    let dir = std::env::temp_dir().join(format!("braid-bundle-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let r = bench_in(&dir, size_mb);
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn bench_in(dir: &Path, size_mb: u64) -> Result<BenchReport> {
    let payload = dir.join("payload.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(File::create(&payload)?);
        // Pseudo-random bytes (xorshift), so nothing downstream can shortcut.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..size_mb {
            for b in block.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
            }
            f.write_all(&block)?;
        }
        f.flush()?;
    }
    let sk = SecretKey::generate()?;
    let out = dir.join("bench.braidb");
    bundle::create(&sk, "1.0.0", "bench", PayloadKind::Binary, &payload, &out)?;
    let policy = Policy {
        keys: vec![sk.public().key],
        compatible: "bench".into(),
        current_version: "0.0.0".into(),
        allow_downgrade: false,
        max_payload: u64::MAX,
    };
    let t0 = Instant::now();
    verify_stream(File::open(&out)?, &policy, &[sk.public()])?;
    let seconds = t0.elapsed().as_secs_f64();
    Ok(BenchReport {
        size_mb,
        verify_mb_s: if seconds > 0.0 {
            size_mb as f64 / seconds
        } else {
            0.0
        },
        seconds,
    })
}
