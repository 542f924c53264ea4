//! Signed update bundles (src/ota/bundle.rs): what a box accepts and refuses, the
//! streaming payload check, framing limits, random corruption, interop with the
//! minisign tool and the `braid bundle` commands.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use braid::ota::bundle::{self, BundleError, Manifest, PayloadKind, Policy};
use braid::ota::keys::{self, PublicKey, SecretKey};
use proptest::prelude::*;

const HW: &str = "braid-rpi4";

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

fn manifest_for(data: &[u8], version: &str, compatible: &str) -> Manifest {
    let (payload_size, payload_sha256) = bundle::hash_payload(data).unwrap();
    Manifest {
        version: version.into(),
        compatible: compatible.into(),
        kind: PayloadKind::Rootfs,
        payload_size,
        payload_sha256,
    }
}

fn make(key: &SecretKey, version: &str, compatible: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    bundle::write(
        key,
        &manifest_for(data, version, compatible),
        data,
        &mut out,
    )
    .unwrap();
    out
}

fn policy(keys: &[&SecretKey]) -> Policy {
    Policy {
        keys: keys.iter().map(|k| k.public().key).collect(),
        compatible: HW.into(),
        current_version: "1.0.0".into(),
        allow_downgrade: false,
        max_payload: 1 << 30,
    }
}

/// Everything the payload reader hands out, and how it ended.
fn drain<R: Read>(mut r: R) -> (Vec<u8>, io::Result<()>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 7000];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return (got, Ok(())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Err(e)),
        }
    }
}

/// Opens and reads a whole bundle; the payload if it all verified.
fn verify_all(bytes: &[u8], policy: &Policy) -> Result<Vec<u8>, String> {
    let (_m, r) = bundle::open(bytes, policy).map_err(|e| e.to_string())?;
    let (data, end) = drain(r);
    end.map_err(|e| e.to_string())?;
    Ok(data)
}

/// Offsets of the regions: (manifest start, signature start, payload start).
fn regions(bytes: &[u8]) -> (usize, usize, usize) {
    let ml = u32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let s = 12 + ml;
    let sl = u32::from_be_bytes(bytes[s..s + 4].try_into().unwrap()) as usize;
    (12, s + 4, s + 4 + sl)
}

fn tmpdir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "braid-ota-bundle-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn good_bundle_verifies_and_streams_the_payload() {
    let k = SecretKey::generate().unwrap();
    // Several chunks and a partial one.
    let data = payload(2 * bundle::CHUNK + 12345, 1);
    let b = make(&k, "1.2.0", HW, &data);
    let (m, r) = bundle::open(&b[..], &policy(&[&k])).unwrap();
    assert_eq!(m, manifest_for(&data, "1.2.0", HW));
    assert_eq!(r.payload_size(), data.len() as u64);
    let (got, end) = drain(r);
    end.unwrap();
    assert_eq!(got, data);
}

#[test]
fn empty_payload_verifies() {
    let k = SecretKey::generate().unwrap();
    let b = make(&k, "2.0.0", HW, &[]);
    assert_eq!(verify_all(&b, &policy(&[&k])).unwrap(), Vec::<u8>::new());
}

#[test]
fn second_configured_key_and_key_ids() {
    let k1 = SecretKey::generate().unwrap();
    let k2 = SecretKey::generate().unwrap();
    let b = make(&k2, "1.0.1", HW, b"x");
    verify_all(&b, &policy(&[&k1, &k2])).unwrap();
    let p = policy(&[]);
    let (_, _, used) = bundle::open_with_keys(&b[..], &p, &[k1.public(), k2.public()]).unwrap();
    assert_eq!(used, k2.public());
    // The right key filed under another id is not used (minisign's rule).
    let wrong_id = PublicKey {
        id: k1.public().id,
        key: k2.public().key,
    };
    assert!(matches!(
        bundle::open_with_keys(&b[..], &p, &[wrong_id]),
        Err(BundleError::BadSignature)
    ));
}

#[test]
fn one_bit_flipped_in_the_payload_is_a_hash_mismatch_without_clean_eof() {
    let k = SecretKey::generate().unwrap();
    let data = payload(3 * bundle::CHUNK, 2);
    let b = make(&k, "1.1.0", HW, &data);
    let (_, _, p0) = regions(&b);
    for at in [
        0,
        1,
        bundle::CHUNK - 1,
        bundle::CHUNK,
        data.len() / 2,
        data.len() - 1,
    ] {
        for bit in [0, 7] {
            let mut t = b.clone();
            t[p0 + at] ^= 1 << bit;
            let (_, r) = bundle::open(&t[..], &policy(&[&k])).unwrap();
            let (got, end) = drain(r);
            let e = end.expect_err("tampered payload streamed to a clean end");
            assert!(
                matches!(bundle::bundle_error(&e), Some(BundleError::HashMismatch)),
                "at {at}: {e}"
            );
            // The last chunk was held back: the consumer never had the whole payload.
            assert!(got.len() <= data.len() - bundle::CHUNK, "at {at}");
        }
    }
}

#[test]
fn tampered_manifest_is_a_bad_signature() {
    let k = SecretKey::generate().unwrap();
    let b = make(&k, "1.1.0", HW, b"payload");
    let (m0, s0, _) = regions(&b);
    for at in m0..s0 - 4 {
        let mut t = b.clone();
        t[at] ^= 0x01;
        match bundle::open(&t[..], &policy(&[&k])) {
            Err(BundleError::BadSignature) => {}
            Err(e) => panic!("byte {at}: {e}"),
            Ok(_) => panic!("byte {at}: tampered manifest accepted"),
        }
    }
    // A manifest that claims another version, re-framed correctly.
    let text = String::from_utf8(b[m0..s0 - 4].to_vec()).unwrap();
    let forged = text.replace("1.1.0", "9.1.0");
    let mut t = b[..8].to_vec();
    t.extend_from_slice(&(forged.len() as u32).to_be_bytes());
    t.extend_from_slice(forged.as_bytes());
    t.extend_from_slice(&b[s0 - 4..]);
    assert!(matches!(
        bundle::open(&t[..], &policy(&[&k])),
        Err(BundleError::BadSignature)
    ));
}

#[test]
fn wrong_key_is_a_bad_signature() {
    let k = SecretKey::generate().unwrap();
    let other = SecretKey::generate().unwrap();
    let b = make(&k, "1.1.0", HW, b"payload");
    assert!(matches!(
        bundle::open(&b[..], &policy(&[&other])),
        Err(BundleError::BadSignature)
    ));
    assert!(matches!(
        bundle::open(&b[..], &policy(&[])),
        Err(BundleError::BadSignature)
    ));
}

#[test]
fn wrong_hardware_is_incompatible() {
    let k = SecretKey::generate().unwrap();
    let b = make(&k, "1.1.0", "braid-x86", b"payload");
    match bundle::open(&b[..], &policy(&[&k])) {
        Err(BundleError::Incompatible { want, got }) => {
            assert_eq!((want.as_str(), got.as_str()), (HW, "braid-x86"))
        }
        other => panic!("{:?}", other.err()),
    }
}

#[test]
fn downgrade_and_same_version_refused_unless_allowed() {
    let k = SecretKey::generate().unwrap();
    let mut p = policy(&[&k]);
    p.current_version = "1.10.0".into();
    for v in ["1.9.9", "1.10.0", "0.99.99", "1.2.0"] {
        let b = make(&k, v, HW, b"payload");
        match bundle::open(&b[..], &p) {
            Err(BundleError::Downgrade { current, offered }) => {
                assert_eq!((current.as_str(), offered.as_str()), ("1.10.0", v))
            }
            other => panic!("{v}: {:?}", other.err()),
        }
        let mut allow = p.clone();
        allow.allow_downgrade = true;
        verify_all(&b, &allow).unwrap();
    }
    // Numeric, not string, order: 1.10.1 > 1.10.0 and 2.0.0 > 1.10.0.
    for v in ["1.10.1", "2.0.0", "1.11.0"] {
        verify_all(&make(&k, v, HW, b"payload"), &p).unwrap();
    }
}

#[test]
fn truncation_anywhere_is_a_clear_error() {
    let k = SecretKey::generate().unwrap();
    let data = payload(1000, 3);
    let b = make(&k, "1.1.0", HW, &data);
    let (m0, s0, p0) = regions(&b);
    for len in 0..b.len() {
        let t = &b[..len];
        let res = bundle::open(t, &policy(&[&k]));
        if len < p0 {
            let e = res
                .err()
                .unwrap_or_else(|| panic!("{len}: opened"))
                .to_string();
            let region = if len < 8 {
                "magic"
            } else if len < m0 + (s0 - 4 - m0) {
                "manifest"
            } else {
                "signature"
            };
            assert!(e.contains("truncated") && e.contains(region), "{len}: {e}");
        } else {
            let (_, r) = res.unwrap();
            let (got, end) = drain(r);
            let e = end.expect_err("truncated payload reached a clean end");
            match bundle::bundle_error(&e) {
                Some(BundleError::Truncated { got: g, want }) => {
                    assert_eq!((*g, *want), ((len - p0) as u64, data.len() as u64))
                }
                _ => panic!("{len}: {e}"),
            }
            assert!(got.len() < data.len());
        }
    }
}

#[test]
fn trailing_bytes_and_bad_magic() {
    let k = SecretKey::generate().unwrap();
    let mut b = make(&k, "1.1.0", HW, b"payload");
    let mut t = b.clone();
    t.push(0);
    let (_, r) = bundle::open(&t[..], &policy(&[&k])).unwrap();
    let (got, end) = drain(r);
    let e = end.unwrap_err();
    assert!(matches!(
        bundle::bundle_error(&e),
        Some(BundleError::Malformed(_))
    ));
    assert!(got.is_empty());
    b[0] = b'X';
    assert!(matches!(
        bundle::open(&b[..], &policy(&[&k])),
        Err(BundleError::BadMagic)
    ));
    assert!(matches!(
        bundle::open(&b"PK\x03\x04 not a bundle"[..], &policy(&[&k])),
        Err(BundleError::BadMagic)
    ));
}

#[test]
fn size_limits() {
    let k = SecretKey::generate().unwrap();
    // Manifest or signature length over the limit (or zero): refused before reading it.
    for (field_at_manifest, len) in [
        (true, bundle::MAX_MANIFEST + 1),
        (true, u32::MAX),
        (true, 0),
        (false, bundle::MAX_SIGNATURE + 1),
        (false, 0),
    ] {
        let b = make(&k, "1.1.0", HW, b"payload");
        let (_, s0, _) = regions(&b);
        let mut t = b.clone();
        let at = if field_at_manifest { 8 } else { s0 - 4 };
        t[at..at + 4].copy_from_slice(&len.to_be_bytes());
        match bundle::open(&t[..], &policy(&[&k])) {
            Err(BundleError::Malformed(m)) => assert!(m.contains("length"), "{m}"),
            other => panic!("{len}: {:?}", other.err()),
        }
    }
    // Payload over the box's limit.
    let b = make(&k, "1.1.0", HW, &payload(5000, 4));
    let mut p = policy(&[&k]);
    p.max_payload = 4999;
    assert!(matches!(
        bundle::open(&b[..], &p),
        Err(BundleError::TooLarge {
            size: 5000,
            max: 4999
        })
    ));
    p.max_payload = 5000;
    verify_all(&b, &p).unwrap();
}

/// A reader that hands out one byte per call (a slow pipe).
struct Trickle<'a>(&'a [u8]);
impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0.is_empty() || buf.is_empty() {
            return Ok(0);
        }
        buf[0] = self.0[0];
        self.0 = &self.0[1..];
        Ok(1)
    }
}

#[test]
fn short_reads_still_hold_back_the_last_chunk() {
    let k = SecretKey::generate().unwrap();
    let data = payload(bundle::CHUNK + 100, 5);
    let b = make(&k, "1.1.0", HW, &data);
    let (_, r) = bundle::open(Trickle(&b), &policy(&[&k])).unwrap();
    let (got, end) = drain(r);
    end.unwrap();
    assert_eq!(got, data);
    let mut t = b.clone();
    *t.last_mut().unwrap() ^= 0x80;
    let (_, r) = bundle::open(Trickle(&t), &policy(&[&k])).unwrap();
    let (got, end) = drain(r);
    assert!(end.is_err());
    assert_eq!(got.len(), bundle::CHUNK);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Flipping any bytes of a bundle (header, manifest, signature or payload) never
    /// yields a bundle that verifies to the end, and never panics.
    #[test]
    fn flipped_bytes_never_verify(
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
    ) {
        use std::sync::OnceLock;
        static FIXTURE: OnceLock<(Vec<u8>, Policy)> = OnceLock::new();
        let (b, p) = FIXTURE.get_or_init(|| {
            let k = SecretKey::generate().unwrap();
            (make(&k, "1.1.0", HW, &payload(3000, 6)), policy(&[&k]))
        });
        let mut t = b.clone();
        for (at, x) in &flips {
            let i = at.index(t.len());
            t[i] ^= x;
        }
        if t != *b {
            prop_assert!(verify_all(&t, p).is_err());
        }
    }

    /// Junk never panics the header reader or the verifier.
    #[test]
    fn junk_never_panics(mut junk in prop::collection::vec(any::<u8>(), 0..600), magic: bool) {
        if magic {
            let mut j = bundle::MAGIC.to_vec();
            j.append(&mut junk);
            junk = j;
        }
        let k = SecretKey::generate().unwrap();
        prop_assert!(verify_all(&junk, &policy(&[&k])).is_err());
        let _ = keys::parse_signature(&String::from_utf8_lossy(&junk));
        let _ = PublicKey::parse(&String::from_utf8_lossy(&junk));
    }
}

// --- interop with the minisign tool (Debian's `minisign`, installed by `make deps`) ---

fn minisign() -> Command {
    // Not skipped when missing: interop is part of what this file proves.
    let ok = Command::new("minisign").arg("-v").output().is_ok();
    assert!(
        ok,
        "the minisign tool is missing: run `make deps` (apt-get install minisign)"
    );
    Command::new("minisign")
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn minisign_tool_verifies_our_manifest_signature() {
    let d = tmpdir("tool-verifies");
    let (pub_path, key_path) = keys::keygen(&d, "admin").unwrap();
    let k = SecretKey::load(&key_path).unwrap();
    let b = make(&k, "1.1.0", HW, b"payload");
    let h = bundle::read_header(&mut &b[..]).unwrap();
    std::fs::write(d.join("manifest.json"), &h.manifest).unwrap();
    std::fs::write(d.join("manifest.json.minisig"), &h.signature).unwrap();
    run(minisign()
        .arg("-V")
        .arg("-p")
        .arg(&pub_path)
        .arg("-m")
        .arg(d.join("manifest.json")));
    // And it refuses a changed manifest.
    std::fs::write(d.join("manifest.json"), b"{}").unwrap();
    let out = minisign()
        .arg("-V")
        .arg("-p")
        .arg(&pub_path)
        .arg("-m")
        .arg(d.join("manifest.json"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn we_verify_what_the_minisign_tool_signs() {
    let d = tmpdir("we-verify");
    let pk = d.join("tool.pub");
    let sk = d.join("tool.key");
    // -W: no password on the secret key.
    run(minisign()
        .args(["-G", "-W", "-p"])
        .arg(&pk)
        .arg("-s")
        .arg(&sk));
    let data = d.join("data.bin");
    std::fs::write(&data, payload(10_000, 7)).unwrap();
    run(minisign()
        .args(["-S", "-s"])
        .arg(&sk)
        .arg("-m")
        .arg(&data)
        .args(["-t", "made by the minisign tool"]));
    let sig = std::fs::read_to_string(d.join("data.bin.minisig")).unwrap();
    let public = PublicKey::load(&pk).unwrap();
    assert_eq!(bundle::load_public_key(&pk).unwrap(), public.key);
    let bytes = std::fs::read(&data).unwrap();
    let info = keys::parse_signature(&sig).unwrap();
    assert_eq!(info.key_id, public.id);
    assert_eq!(info.trusted_comment, "made by the minisign tool");
    assert_eq!(
        keys::verify(&sig, &bytes, &[(Some(public.id), public.key)]).unwrap(),
        public
    );
    let mut other = bytes.clone();
    other[0] ^= 1;
    assert!(keys::verify(&sig, &other, &[(None, public.key)]).is_err());
    // Legacy (non-prehashed `Ed`) signatures are accepted too (-l: legacy format).
    run(minisign()
        .args(["-S", "-l", "-s"])
        .arg(&sk)
        .arg("-m")
        .arg(&data));
    let sig = std::fs::read_to_string(d.join("data.bin.minisig")).unwrap();
    // "Ed" (legacy) encodes as "RW", "ED" (prehashed) as "RU".
    assert!(sig.lines().nth(1).unwrap().starts_with("RW"), "{sig}");
    keys::verify(&sig, &bytes, &[(Some(public.id), public.key)]).unwrap();
    // A key made by the tool signs bundles that the box accepts.
    let k = SecretKey::load(&sk).unwrap();
    assert_eq!(k.public(), public);
    let b = make(&k, "1.1.0", HW, b"payload");
    let p = Policy {
        keys: vec![public.key],
        ..policy(&[])
    };
    verify_all(&b, &p).unwrap();
    let _ = std::fs::remove_dir_all(&d);
}

// --- the `braid bundle` commands ---

fn braid(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn cli_keygen_create_verify() {
    use std::os::unix::fs::PermissionsExt;
    let d = tmpdir("cli");
    let ok = |o: &std::process::Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr))
    };
    ok(&braid(
        &["bundle", "keygen", "--dir", ".", "--name", "admin"],
        &d,
    ));
    let mode = std::fs::metadata(d.join("admin.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let before = std::fs::read(d.join("admin.key")).unwrap();
    let again = braid(&["bundle", "keygen", "--dir", ".", "--name", "admin"], &d);
    assert!(!again.status.success());
    assert_eq!(std::fs::read(d.join("admin.key")).unwrap(), before);

    std::fs::write(d.join("rootfs.img"), payload(70_000, 8)).unwrap();
    ok(&braid(
        &[
            "bundle",
            "create",
            "--key",
            "admin.key",
            "--version",
            "1.4.0",
            "--compatible",
            HW,
            "--kind",
            "rootfs",
            "--payload",
            "rootfs.img",
            "--out",
            "u.braidb",
        ],
        &d,
    ));
    let verify = |extra: &[&str]| {
        let mut a = vec!["bundle", "verify", "--key", "admin.pub", "--compatible", HW];
        a.extend_from_slice(extra);
        a.push("u.braidb");
        braid(&a, &d)
    };
    let o = verify(&["--current-version", "1.3.9"]);
    ok(&o);
    let m: Manifest = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m.version, "1.4.0");
    assert_eq!(m.kind, PayloadKind::Rootfs);
    assert_eq!(m.payload_size, 70_000);

    let o = verify(&["--current-version", "1.4.0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not newer"));
    ok(&verify(&[
        "--current-version",
        "1.4.0",
        "--allow-downgrade",
    ]));

    let mut b = std::fs::read(d.join("u.braidb")).unwrap();
    let n = b.len();
    b[n - 10] ^= 4;
    std::fs::write(d.join("u.braidb"), &b).unwrap();
    let o = verify(&[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("hash"));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn cli_bench_prints_json() {
    let d = tmpdir("bench");
    let o = braid(&["bundle", "bench", "--size-mb", "2"], &d);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["size_mb"], 2);
    assert!(v["verify_mb_s"].as_f64().unwrap() > 0.0);
    assert!(v["seconds"].as_f64().unwrap() > 0.0);
    let _ = std::fs::remove_dir_all(&d);
}
