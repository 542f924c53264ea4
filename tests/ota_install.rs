//! The install flow, health check and rollback against the real directory slots
//! (`DirSlots`, with its simulated bootloader) and real signed bundles.
//!
//! - good bundle: installs to the other slot, boots there once, falls back without a
//!   confirmation; confirmed, it stays;
//! - the daemon's health check: a timeout or too many daemon starts give the new slot
//!   up and the next boot is the old slot;
//! - refused bundles (tampered payload or manifest, wrong key, wrong hardware,
//!   downgrade, truncated file): the old slot boots, the other is not bootable, the
//!   error names the stage and the reason;
//! - the real `braid edge` on the new slot: no link within the timeout gives the slot
//!   up and reboots; crashes count as starts and the third gives up at once; a link
//!   to a real `braid relay` confirms the slot; with `reboot = "idle"` an install made
//!   while live does not reboot the box, and reboots it once not live;
//! - `braid ota install URL`: a download broken off mid-body resumes (Range);
//! - the web upload's installer: refusals with their reason, force = downgrade and
//!   reboot now;
//! - hawkBit: a deployment is installed and reported a success only after the new
//!   slot is confirmed; a refused bundle is reported a failure with its reason;
//! - `braid ota install` as a process, SIGKILLed at increasing delays across verify,
//!   write and activate: `braid ota boot` chooses the old slot unless the install had
//!   completed (then the new slot, once), and a slot is never torn.

use braid::config::OtaConfig;
use braid::ota::bundle::{self, PayloadKind, Policy};
use braid::ota::health::{self, Monitor, Observation, Verdict};
use braid::ota::install::{self, InstallError, Progress, Stage};
use braid::ota::keys::{self, SecretKey};
use braid::ota::slots::{DirSlots, Slot, SlotBackend};
use braid::system::TempDir;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BRAID: &str = env!("CARGO_BIN_EXE_braid");
const HW: &str = "braid-test";

/// A box: directory slots, a state directory, a release key, and an edge.toml with
/// `[ota]` pointing at them.
struct Box_ {
    dir: TempDir,
    key: SecretKey,
}

impl Box_ {
    fn new(tag: &str) -> Box_ {
        let dir = TempDir::new(tag).unwrap();
        let (pub_path, key_path) = keys::keygen(dir.path(), "release").unwrap();
        assert_eq!(pub_path, dir.path().join("release.pub"));
        let key = SecretKey::load(&key_path).unwrap();
        let b = Box_ { dir, key };
        std::fs::write(b.config_path(), b.config_text()).unwrap();
        b
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn config_path(&self) -> PathBuf {
        self.p("edge.toml")
    }

    fn config_text(&self) -> String {
        format!(
            r#"[device]
id = "cam1"
cert = "device.crt"
key = "device.key"

[relay]
address = "127.0.0.1:7000"
fingerprint = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

[[link]]
name = "lo"
bind = "127.0.0.1"

[ota]
backend = "dir"
slots_dir = "slots"
public_keys = ["release.pub"]
compatible = "{HW}"
health_timeout_s = 10
max_boot_attempts = 2
reboot = "never"
reboot_command = ["touch", "{}"]
state_dir = "state"
"#,
            self.p("rebooted").display()
        )
    }

    fn cfg(&self) -> OtaConfig {
        braid::config::load_edge(&self.config_path())
            .unwrap()
            .ota
            .unwrap()
    }

    fn slots(&self) -> DirSlots {
        DirSlots::open(self.p("slots")).unwrap()
    }

    fn policy(&self) -> Policy {
        let st = self.slots().status().unwrap();
        install::policy(&self.cfg(), &st, false).unwrap()
    }

    /// A bundle of `payload` signed with `key`.
    fn bundle_with(&self, key: &SecretKey, version: &str, hw: &str, payload: &[u8]) -> PathBuf {
        let name = format!("{version}-{hw}-{}-{}", payload.len(), key.public().id_hex());
        let src = self.p(&format!("{name}.payload"));
        std::fs::write(&src, payload).unwrap();
        let out = self.p(&format!("{name}.braid"));
        bundle::create(key, version, hw, PayloadKind::Binary, &src, &out).unwrap();
        out
    }

    fn bundle(&self, version: &str, payload: &[u8]) -> PathBuf {
        self.bundle_with(&self.key, version, HW, payload)
    }

    fn install(&self, bundle: &Path) -> Result<install::InstallReport, InstallError> {
        let f = std::fs::File::open(bundle).unwrap();
        let slots = self.slots();
        install::install(f, &self.policy(), &slots, &Progress::new())
    }

    fn boot(&self) -> Slot {
        self.slots().boot().unwrap()
    }

    /// Slot B can not be booted, nor be set to boot.
    fn assert_b_not_bootable(&self) {
        let s = self.slots();
        assert!(!s.state().unwrap().bootable.b, "{:?}", s.state());
        assert_eq!(s.state().unwrap().try_once, None);
        assert!(s.set_boot_once(Slot::B).is_err());
    }
}

fn payload(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

#[test]
fn good_bundle_boots_once_and_falls_back_without_confirmation() {
    let b = Box_::new("ota-good");
    let bundle = b.bundle("0.2.0", &payload(300_000, 1));
    let progress = Progress::new();
    let report = {
        let slots = b.slots();
        let f = std::fs::File::open(&bundle).unwrap();
        install::install(f, &b.policy(), &slots, &progress).unwrap()
    };
    assert_eq!(report.slot, Slot::B);
    assert_eq!(report.version, "0.2.0");
    let v = progress.snapshot();
    assert_eq!(
        (v.stage, v.bytes, v.total),
        (Stage::Done, 300_000, Some(300_000))
    );
    let s = b.slots();
    let payload_path = s.payload_path(Slot::B).unwrap().unwrap();
    assert_eq!(std::fs::read(payload_path).unwrap(), payload(300_000, 1));
    assert_eq!(s.status().unwrap().try_next, Some(Slot::B));

    assert_eq!(b.boot(), Slot::B, "the new slot is tried once");
    let st = b.slots().status().unwrap();
    assert!(st.booted_unconfirmed);
    assert_eq!(install::current_version(&st), "0.2.0");
    assert_eq!(b.boot(), Slot::A, "not confirmed: back to the old slot");
    assert_eq!(b.boot(), Slot::A);
}

#[test]
fn confirm_makes_the_new_slot_permanent() {
    let b = Box_::new("ota-confirm");
    b.install(&b.bundle("0.2.0", &payload(10_000, 2))).unwrap();
    assert_eq!(b.boot(), Slot::B);
    b.slots().mark_good().unwrap();
    for _ in 0..3 {
        assert_eq!(b.boot(), Slot::B);
    }
    // The next update goes to A, and the running version is now 0.2.0.
    let e = b.install(&b.bundle("0.2.0", &payload(10, 3))).unwrap_err();
    assert!(
        e.to_string().contains("not newer than the running 0.2.0"),
        "{e}"
    );
    let r = b.install(&b.bundle("0.3.0", &payload(10, 3))).unwrap();
    assert_eq!(r.slot, Slot::A);
}

/// The daemon's monitor on the new slot with no link ever up: after
/// `health_timeout_s` it marks the slot bad and reboots; the next boot is the old slot.
#[tokio::test(start_paused = true)]
async fn health_check_timeout_returns_to_the_old_slot() {
    let b = Box_::new("ota-health");
    b.install(&b.bundle("0.2.0", &payload(10_000, 4))).unwrap();
    assert_eq!(b.boot(), Slot::B);
    let m = Monitor::start(b.cfg(), Arc::new(b.slots())).unwrap();
    assert!(matches!(m.verdict(), Verdict::Pending { .. }));
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(m.run(Observation::default, stop_rx));
    // Virtual seconds tick the monitor; its backend calls run on real threads.
    let t0 = tokio::time::Instant::now();
    while !b.p("rebooted").exists() {
        assert!(t0.elapsed() < Duration::from_secs(60), "no reboot");
        tokio::time::sleep(Duration::from_secs(1)).await;
        std::thread::sleep(Duration::from_millis(2));
    }
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(10) && waited <= Duration::from_secs(13),
        "{waited:?}"
    );
    task.abort();
    assert_eq!(b.boot(), Slot::A);
    assert!(!b.slots().state().unwrap().bootable.b, "given up");
    assert_eq!(b.boot(), Slot::A);
}

/// The health check passes when a link comes up: the slot is confirmed for good.
#[tokio::test(start_paused = true)]
async fn health_check_with_a_link_up_confirms() {
    let b = Box_::new("ota-health-ok");
    b.install(&b.bundle("0.2.0", &payload(10_000, 5))).unwrap();
    assert_eq!(b.boot(), Slot::B);
    let m = Monitor::start(b.cfg(), Arc::new(b.slots())).unwrap();
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let link_up = || Observation {
        links_connected: 1,
        streaming: false,
    };
    let task = tokio::spawn(m.run(link_up, stop_rx));
    let t0 = tokio::time::Instant::now();
    while b.slots().status().unwrap().booted_unconfirmed {
        assert!(t0.elapsed() < Duration::from_secs(5), "not confirmed");
        tokio::time::sleep(Duration::from_secs(1)).await;
        std::thread::sleep(Duration::from_millis(2));
    }
    task.abort();
    assert!(!b.p("rebooted").exists());
    assert_eq!(b.boot(), Slot::B);
    assert_eq!(b.boot(), Slot::B);
}

/// Every daemon start on the unconfirmed slot counts (crashes, watchdog restarts);
/// the start after `max_boot_attempts` gives it up at once.
#[test]
fn too_many_daemon_starts_return_to_the_old_slot() {
    let b = Box_::new("ota-starts");
    b.install(&b.bundle("0.2.0", &payload(10_000, 6))).unwrap();
    assert_eq!(b.boot(), Slot::B);
    let cfg = b.cfg();
    for start in 1..=2 {
        let m = Monitor::start(cfg.clone(), Arc::new(b.slots())).unwrap();
        assert!(
            matches!(m.verdict(), Verdict::Pending { .. }),
            "start {start}"
        );
        assert_eq!(health::boot_starts(&cfg.state_dir, Slot::B), start);
        // The daemon crashes here, before its health check passes.
    }
    assert!(!b.p("rebooted").exists());
    let m = Monitor::start(cfg.clone(), Arc::new(b.slots())).unwrap();
    assert!(
        matches!(m.verdict(), Verdict::Failed { reason } if reason.contains("started 3 times")),
        "{:?}",
        m.verdict()
    );
    assert!(b.p("rebooted").exists());
    assert_eq!(b.boot(), Slot::A);
    let m = Monitor::start(cfg.clone(), Arc::new(b.slots())).unwrap();
    assert_eq!(m.verdict(), &Verdict::NotNeeded);
    assert_eq!(health::boot_starts(&cfg.state_dir, Slot::B), 0);
}

/// Where in a bundle file the manifest and the payload are.
fn layout(bundle: &[u8]) -> (std::ops::Range<usize>, usize) {
    let m_len = u32::from_be_bytes(bundle[8..12].try_into().unwrap()) as usize;
    let manifest = 12..12 + m_len;
    let s_len =
        u32::from_be_bytes(bundle[manifest.end..manifest.end + 4].try_into().unwrap()) as usize;
    (manifest.clone(), manifest.end + 4 + s_len)
}

#[test]
fn refused_bundles_leave_the_old_slot_booting_with_a_clear_reason() {
    let b = Box_::new("ota-refused");
    let data = payload(600_000, 7);
    let good_path = b.bundle("0.2.0", &data);
    let good = std::fs::read(&good_path).unwrap();
    let (manifest, payload_at) = layout(&good);
    let other_key = SecretKey::generate().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = b.p(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let mut tampered_payload = good.clone();
    tampered_payload[payload_at + 400_000] ^= 0x01;
    let mut tampered_manifest = good.clone();
    let text = std::str::from_utf8(&good[manifest.clone()]).unwrap();
    let at = manifest.start + text.find("0.2.0").unwrap();
    tampered_manifest[at + 2] = b'9'; // 0.9.0
    let cases: Vec<(&str, PathBuf, &str, bool)> = vec![
        (
            "tampered payload",
            write("tampered-payload.braid", &tampered_payload),
            "verify: payload hash does not match the manifest",
            true,
        ),
        (
            "tampered manifest",
            write("tampered-manifest.braid", &tampered_manifest),
            "verify: signature does not verify with any configured key",
            false,
        ),
        (
            "wrong key",
            b.bundle_with(&other_key, "0.2.0", HW, &data),
            "verify: signature does not verify with any configured key",
            false,
        ),
        (
            "wrong hardware",
            b.bundle_with(&b.key, "0.2.0", "braid-cm4", &data),
            "verify: bundle is for \"braid-cm4\", this box is \"braid-test\"",
            false,
        ),
        (
            "downgrade",
            b.bundle("0.0.9", &data),
            "verify: bundle version 0.0.9 is not newer than the running 0.1.0",
            false,
        ),
        (
            "truncated",
            write("truncated.braid", &good[..good.len() - 1000]),
            "verify: bundle truncated: payload ended after 599000 of 600000 bytes",
            true,
        ),
    ];
    for (what, file, reason, written) in cases {
        // A box as shipped: A runs, B empty.
        for d in ["slots", "state"] {
            let _ = std::fs::remove_dir_all(b.p(d));
        }
        if written {
            // A good install waits for its reboot: the refused one, written over
            // it, must take the pending boot-once away too.
            b.install(&good_path).unwrap();
            assert_eq!(b.slots().status().unwrap().try_next, Some(Slot::B));
        }
        let e = b.install(&file).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with(reason), "{what}: {msg}");
        if written {
            assert!(
                msg.ends_with("(the new slot was left unbootable; the running slot still boots)"),
                "{what}: {msg}"
            );
            assert_eq!(e.stage(), Stage::Write, "{what}");
        } else {
            assert!(msg.ends_with("(nothing was written)"), "{what}: {msg}");
            assert_eq!(e.stage(), Stage::Verify, "{what}");
        }
        b.assert_b_not_bootable();
        assert_eq!(b.boot(), Slot::A, "{what}");
        assert_eq!(b.boot(), Slot::A, "{what}");
    }
}

fn run_braid(args: &[&str]) -> std::process::Output {
    Command::new(BRAID).args(args).output().unwrap()
}

#[test]
fn cli_install_status_boot_and_a_refusal() {
    let b = Box_::new("ota-cli");
    let cfg = b.config_path();
    let cfg = cfg.to_str().unwrap();
    let bad = b.bundle_with(&b.key, "0.2.0", "braid-cm4", &payload(1000, 8));
    let out = run_braid(&["ota", "install", "--config", cfg, bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "verify: bundle is for \"braid-cm4\", this box is \"braid-test\" (nothing was written)"
        ),
        "{err}"
    );
    let out = run_braid(&["ota", "status", "--config", cfg]);
    assert!(out.status.success(), "{out:?}");
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["last_install"]["ok"], false, "{st}");
    assert_eq!(st["last_install"]["stage"], "verify", "{st}");
    assert_eq!(st["slots"]["booted"], "a", "{st}");

    let good = b.bundle("0.2.0", &payload(1000, 9));
    let out = run_braid(&["ota", "install", "--config", cfg, good.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["slot"], "b");
    let st: serde_json::Value =
        serde_json::from_slice(&run_braid(&["ota", "status", "--config", cfg]).stdout).unwrap();
    assert_eq!(st["slots"]["try_next"], "b", "{st}");
    assert_eq!(st["reboot_pending"]["version"], "0.2.0", "{st}");
    let boot = |expect: &str| {
        let out = run_braid(&["ota", "boot", "--config", cfg]);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("\"{expect}\"")
        );
    };
    boot("b");
    assert!(run_braid(&["ota", "confirm", "--config", cfg])
        .status
        .success());
    boot("b");
    let st: serde_json::Value =
        serde_json::from_slice(&run_braid(&["ota", "status", "--config", cfg]).stdout).unwrap();
    assert_eq!(st["current_version"], "0.2.0", "{st}");
    assert_eq!(st["slots"]["primary"], "b", "{st}");
}

/// `braid ota install` killed with SIGKILL at increasing delays, from process start
/// through verify, write and activate. After each kill `braid ota boot` must choose
/// the old slot, or (only if the install had activated) the new slot once with the
/// complete payload; the next boot is the old slot again.
#[test]
fn kill_9_at_every_stage_never_leaves_a_torn_slot() {
    let b = Box_::new("ota-kill");
    let cfg = b.config_path();
    let cfg = cfg.to_str().unwrap();
    let data = payload(48 << 20, 10);
    let bundle = b.bundle("0.2.0", &data);
    let bundle = bundle.to_str().unwrap();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&data))
    };
    let boot = || -> String {
        let out = run_braid(&["ota", "boot", "--config", cfg]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .trim_matches('"')
            .to_string()
    };
    // How long a whole install takes here.
    let t = Instant::now();
    let out = run_braid(&["ota", "install", "--config", cfg, bundle]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let full = t.elapsed();
    assert_eq!(boot(), "b");
    assert_eq!(boot(), "a");

    const KILLS: u32 = 36;
    let (mut before_write, mut mid_write, mut completed) = (0, 0, 0);
    for i in 0..KILLS {
        let delay = full.mul_f64(1.4 * f64::from(i) / f64::from(KILLS));
        let mut child = Command::new(BRAID)
            .args(["ota", "install", "--config", cfg, bundle])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        // What the kill interrupted, as the disk shows it (before the next open
        // cleans up).
        let tmp = b.p("slots/b/.install.tmp/braid");
        let partial = std::fs::metadata(&tmp).map(|m| m.len()).ok();
        let slots = b.slots();
        let st = slots.state().unwrap();
        let activated = st.try_once == Some(Slot::B);
        let got = boot();
        if activated {
            completed += 1;
            assert_eq!(
                got, "b",
                "kill {i} after {delay:?}: activated install must boot once"
            );
            let info = b.slots().slot_info(Slot::B).unwrap().unwrap();
            assert_eq!(
                (info.size, info.sha256.as_str()),
                (data.len() as u64, sha.as_str())
            );
            let p = b.slots().payload_path(Slot::B).unwrap().unwrap();
            assert_eq!(std::fs::metadata(p).unwrap().len(), data.len() as u64);
            assert_eq!(boot(), "a", "kill {i}: unconfirmed, back to the old slot");
        } else {
            assert_eq!(
                got, "a",
                "kill {i} after {delay:?} ({status}): old slot must boot"
            );
            match partial {
                Some(n) if n > 0 && n < data.len() as u64 => mid_write += 1,
                _ => before_write += 1,
            }
        }
        assert_eq!(boot(), "a");
        assert_eq!(b.slots().state().unwrap().primary, Slot::A);
    }
    eprintln!(
        "{KILLS} kills over {full:?}: {before_write} before or around the write, \
         {mid_write} mid-write, {completed} after activation"
    );
    assert!(
        mid_write >= 3,
        "too few kills landed mid-write ({mid_write})"
    );
    assert!(completed >= 1, "no kill came after the activation");
}

/// A minimal hawkBit: one controller `cam1` of tenant `DEFAULT`, one action `42`
/// whose only artifact is `bundle`; feedback bodies are recorded.
struct FakeHawkbit {
    bundle: Vec<u8>,
    feedback: std::sync::Mutex<Vec<(String, serde_json::Value)>>,
    addr: std::sync::OnceLock<std::net::SocketAddr>,
}

impl FakeHawkbit {
    async fn start(bundle: Vec<u8>) -> Arc<FakeHawkbit> {
        use axum::extract::{Path as UrlPath, State};
        use axum::routing::{get, post};
        type S = State<Arc<FakeHawkbit>>;
        let f = Arc::new(FakeHawkbit {
            bundle,
            feedback: Default::default(),
            addr: Default::default(),
        });
        let ctl = "/DEFAULT/controller/v1/cam1";
        let app = axum::Router::new()
            .route(
                ctl,
                get(|State(f): S| async move {
                    axum::Json(serde_json::json!({
                        "config": {"polling": {"sleep": "00:00:05"}},
                        "_links": {"deploymentBase": {"href": format!("{}/deploymentBase/42?c=1", f.ctl())}}
                    }))
                }),
            )
            .route(
                &format!("{ctl}/deploymentBase/42"),
                get(|State(f): S| async move {
                    use sha2::Digest;
                    let url = format!("{}/softwaremodules/1/artifacts/update.braidb", f.ctl());
                    axum::Json(serde_json::json!({
                        "id": "42",
                        "deployment": {"download": "forced", "update": "forced", "chunks": [{
                            "part": "os", "version": "0.2.0", "name": "braid",
                            "artifacts": [{
                                "filename": "update.braidb",
                                "hashes": {"sha256": hex::encode(sha2::Sha256::digest(&f.bundle))},
                                "size": f.bundle.len(),
                                "_links": {"download-http": {"href": url}}
                            }]
                        }]}
                    }))
                }),
            )
            .route(
                &format!("{ctl}/deploymentBase/{{action}}/feedback"),
                post(
                    |State(f): S, UrlPath(action): UrlPath<String>, body: axum::body::Bytes| async move {
                        let v = serde_json::from_slice(&body).unwrap();
                        f.feedback.lock().unwrap().push((action, v));
                        ""
                    },
                ),
            )
            .route(
                &format!("{ctl}/softwaremodules/1/artifacts/update.braidb"),
                get(|State(f): S| async move { f.bundle.clone() }),
            )
            .with_state(f.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        f.addr.set(listener.local_addr().unwrap()).unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        f
    }

    fn ctl(&self) -> String {
        format!(
            "http://{}/DEFAULT/controller/v1/cam1",
            self.addr.get().unwrap()
        )
    }

    /// `(execution, finished, details)` of each feedback so far.
    fn feedback(&self) -> Vec<(String, String, String)> {
        self.feedback
            .lock()
            .unwrap()
            .iter()
            .map(|(action, v)| {
                assert_eq!(action, "42");
                let s = &v["status"];
                (
                    s["execution"].as_str().unwrap().to_string(),
                    s["result"]["finished"].as_str().unwrap().to_string(),
                    s["details"][0].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

fn fleet(b: &Box_, fake: &FakeHawkbit) -> braid::ota::fleet::Fleet {
    let mut cfg = b.cfg();
    let hb = braid::config::OtaHawkbit {
        client: braid::ota::hawkbit::HawkbitConfig {
            server: format!("http://{}", fake.addr.get().unwrap()),
            tenant: "DEFAULT".into(),
            controller_id: "cam1".into(),
            token: None,
        },
        download_dir: b.p("download"),
        poll: Duration::from_secs(300),
    };
    cfg.hawkbit = Some(hb.clone());
    braid::ota::fleet::Fleet::new(cfg, hb, Arc::new(b.slots()))
}

/// hawkBit offers a deployment: the edge downloads and installs it, says
/// `proceeding` until the new slot booted and passed its health check, then
/// `success`.
#[tokio::test]
async fn hawkbit_deployment_is_reported_a_success_only_after_confirmation() {
    let b = Box_::new("ota-fleet");
    let bundle = std::fs::read(b.bundle("0.2.0", &payload(200_000, 11))).unwrap();
    let fake = FakeHawkbit::start(bundle).await;
    let wait = fleet(&b, &fake).step().await;
    assert_eq!(
        wait,
        Duration::from_secs(5),
        "the server's polling interval"
    );
    let fb = fake.feedback();
    assert_eq!(fb.len(), 3, "{fb:?}");
    assert!(
        fb.iter().all(|(e, r, _)| e == "proceeding" && r == "none"),
        "{fb:?}"
    );
    assert!(fb[2].2.starts_with("installed 0.2.0 into slot B"), "{fb:?}");
    assert_eq!(b.slots().status().unwrap().try_next, Some(Slot::B));
    // Offered again while it waits for the reboot: not installed twice, no verdict.
    fleet(&b, &fake).step().await;
    assert_eq!(fake.feedback().len(), 3);
    assert_eq!(b.boot(), Slot::B);
    fleet(&b, &fake).step().await;
    assert_eq!(fake.feedback().len(), 3, "health check still running");
    b.slots().mark_good().unwrap();
    fleet(&b, &fake).step().await;
    let fb = fake.feedback();
    assert_eq!(fb.len(), 4, "{fb:?}");
    assert_eq!(
        (fb[3].0.as_str(), fb[3].1.as_str()),
        ("closed", "success"),
        "{fb:?}"
    );
    assert!(!b.p("state").join(braid::ota::fleet::ACTION_FILE).exists());
    // The server offers the finished action again (before it processed the
    // report): nothing is redone.
    fleet(&b, &fake).step().await;
    assert_eq!(fake.feedback().len(), 4);
}

/// A deployment whose bundle is refused is reported a failure with the reason.
#[tokio::test]
async fn hawkbit_refused_bundle_is_reported_a_failure_with_the_reason() {
    let b = Box_::new("ota-fleet-bad");
    let bundle =
        std::fs::read(b.bundle_with(&b.key, "0.2.0", "braid-cm4", &payload(1000, 12))).unwrap();
    let fake = FakeHawkbit::start(bundle).await;
    fleet(&b, &fake).step().await;
    let fb = fake.feedback();
    let last = fb.last().unwrap();
    assert_eq!(
        (last.0.as_str(), last.1.as_str()),
        ("closed", "failure"),
        "{fb:?}"
    );
    assert!(
        last.2.starts_with("verify: bundle is for \"braid-cm4\""),
        "{fb:?}"
    );
    assert_eq!(b.boot(), Slot::A);
    // Not retried at every poll.
    let n = fb.len();
    fleet(&b, &fake).step().await;
    assert_eq!(fake.feedback().len(), n);
}

/// The web page's upload goes through the same flow (`POST /api/update` hands the
/// body to this `Updater`).
#[test]
fn web_upload_installs_through_the_same_flow() {
    use braid::web::Updater;
    let b = Box_::new("ota-web");
    let up = install::WebUpdater::new(b.cfg(), Arc::new(b.slots()));
    assert!(up.max_bytes() > b.cfg().max_payload);
    let bad = b.bundle_with(&b.key, "0.2.0", "braid-cm4", &payload(5000, 13));
    let e = up
        .install(&mut std::fs::File::open(bad).unwrap(), false)
        .unwrap_err();
    assert!(e.starts_with("verify: bundle is for \"braid-cm4\""), "{e}");
    assert_eq!(up.progress().stage, Stage::Failed);
    let old = b.bundle("0.0.5", &payload(5000, 14));
    let e = up
        .install(&mut std::fs::File::open(&old).unwrap(), false)
        .unwrap_err();
    assert!(e.contains("downgrade not allowed"), "{e}");
    // force: downgrade allowed, and the box reboots at once.
    let v = up
        .install(&mut std::fs::File::open(&old).unwrap(), true)
        .unwrap();
    assert_eq!(v["slot"], "b");
    assert_eq!(v["reboot"], "now");
    assert!(b.p("rebooted").exists());
    assert_eq!(up.progress().stage, Stage::Done);
    assert_eq!(b.boot(), Slot::B);
}

/// A `braid edge` process on the new slot, with no relay to reach: stderr lines
/// are sent to the returned channel.
fn spawn_edge(b: &Box_) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = Command::new(BRAID)
        .args(["edge", "--config", b.config_path().to_str().unwrap()])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// The reboot command ran (it follows the log line by a backend call).
fn wait_for_reboot(b: &Box_) {
    let end = Instant::now() + Duration::from_secs(10);
    while !b.p("rebooted").exists() {
        assert!(Instant::now() < end, "the reboot command did not run");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for_line(rx: &std::sync::mpsc::Receiver<String>, needle: &str, within: Duration) -> String {
    let end = Instant::now() + within;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(needle) => return l,
            Ok(_) => {}
            Err(_) => panic!("no line with {needle:?} within {within:?}"),
        }
    }
}

/// An edge box for `braid edge`: test input, one link to a relay at `relay` (with
/// certificate fingerprint `fp`; nothing there unless the test starts one), stats on
/// a free port.
fn edge_box_for(tag: &str, relay: &str, fp: Option<&str>) -> Box_ {
    let b = Box_::new(tag);
    let out = run_braid(&[
        "keygen",
        "--dir",
        b.dir.path().to_str().unwrap(),
        "--name",
        "device",
    ]);
    assert!(out.status.success(), "{out:?}");
    let mut text = b
        .config_text()
        .replace(
            "address = \"127.0.0.1:7000\"",
            &format!("address = \"{relay}\""),
        )
        .replace(
            "[[link]]",
            "[input]\nkind = \"test\"\n\n[stats]\nlisten = \"127.0.0.1:0\"\n\n[[link]]",
        );
    if let Some(fp) = fp {
        text = text.replace(
            "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            fp,
        );
    }
    std::fs::write(b.config_path(), text).unwrap();
    b
}

/// [`edge_box_for`] booted on a freshly installed, unconfirmed slot B.
fn edge_box_on_new_slot(tag: &str, relay: &str, fp: Option<&str>) -> Box_ {
    let b = edge_box_for(tag, relay, fp);
    b.install(&b.bundle("0.2.0", &payload(10_000, 15))).unwrap();
    assert_eq!(b.boot(), Slot::B);
    b
}

fn edge_box(tag: &str) -> Box_ {
    edge_box_on_new_slot(tag, "127.0.0.1:9", None)
}

/// The real daemon on the new slot: no link comes up, so after `health_timeout_s`
/// (10 s here) it gives the slot up and runs the reboot command; the next boot is
/// the old slot.
#[test]
fn edge_daemon_gives_up_a_slot_without_links() {
    let b = edge_box("ota-edge-timeout");
    let (mut edge, rx) = spawn_edge(&b);
    let t0 = Instant::now();
    wait_for_line(&rx, "running an unconfirmed slot", Duration::from_secs(10));
    let l = wait_for_line(&rx, "health check failed", Duration::from_secs(20));
    let waited = t0.elapsed();
    wait_for_reboot(&b);
    let _ = edge.kill();
    let _ = edge.wait();
    assert!(l.contains("within ota.health_timeout_s"), "{l}");
    assert!(waited >= Duration::from_secs(9), "{waited:?}");
    assert_eq!(b.boot(), Slot::A);
}

/// The real daemon crashing on the new slot (SIGKILL, as a watchdog restart would
/// follow): each start counts, and the start after `max_boot_attempts` (2 here)
/// gives the slot up at once.
#[test]
fn edge_daemon_crashes_count_against_the_new_slot() {
    let b = edge_box("ota-edge-crash");
    for start in 1..=2 {
        let (mut edge, rx) = spawn_edge(&b);
        let l = wait_for_line(&rx, "running an unconfirmed slot", Duration::from_secs(10));
        assert!(l.contains(&format!("starts={start}")), "{l}");
        let _ = edge.kill();
        let _ = edge.wait();
        assert!(!b.p("rebooted").exists());
    }
    let (mut edge, rx) = spawn_edge(&b);
    let l = wait_for_line(&rx, "health check failed", Duration::from_secs(10));
    wait_for_reboot(&b);
    let _ = edge.kill();
    let _ = edge.wait();
    assert!(l.contains("the daemon started 3 times"), "{l}");
    assert_eq!(b.boot(), Slot::A);
}

/// A relay's identity and a free port for it: its address, certificate fingerprint
/// and directory (see [`run_relay`]).
fn relay_identity(tag: &str) -> (String, String, TempDir) {
    let relay_dir = TempDir::new(tag).unwrap();
    let rd = relay_dir.path();
    let out = run_braid(&["keygen", "--dir", rd.to_str().unwrap(), "--name", "relay"]);
    assert!(out.status.success(), "{out:?}");
    let relay_fp = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    (format!("127.0.0.1:{port}"), relay_fp, relay_dir)
}

/// Writes the relay's configuration pinning `b`'s device certificate and starts it.
fn run_relay(b: &Box_, rd: &Path, addr: &str) -> std::process::Child {
    let device_fp = {
        let pem = std::fs::read_to_string(b.p("device.crt")).unwrap();
        let der = rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        use sha2::Digest;
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&der)))
    };
    std::fs::write(
        rd.join("relay.toml"),
        format!(
            "[relay]\nlisten = \"{addr}\"\ncert = \"relay.crt\"\nkey = \"relay.key\"\n\
             [stats]\nlisten = \"127.0.0.1:0\"\n[[device]]\nid = \"cam1\"\nfingerprint = \"{device_fp}\"\n\
             [[device.output]]\nkind = \"udp\"\naddress = \"127.0.0.1:9\"\n"
        ),
    )
    .unwrap();
    Command::new(BRAID)
        .args(["relay", "--config", rd.join("relay.toml").to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The real daemon on the new slot with a relay to reach: once its link connects the
/// slot is confirmed, and it boots from then on.
#[test]
fn edge_daemon_confirms_a_slot_whose_link_comes_up() {
    let (addr, fp, rd) = relay_identity("ota-edge-relay");
    let b = edge_box_on_new_slot("ota-edge-ok", &addr, Some(&fp));
    let mut relay = run_relay(&b, rd.path(), &addr);
    let (mut edge, rx) = spawn_edge(&b);
    let l = wait_for_line(&rx, "health check passed", Duration::from_secs(9));
    let _ = edge.kill();
    let _ = edge.wait();
    let _ = relay.kill();
    let _ = relay.wait();
    assert!(l.contains("slot confirmed"), "{l}");
    assert!(!b.p("rebooted").exists());
    assert_eq!(b.boot(), Slot::B);
    assert_eq!(b.boot(), Slot::B);
}

/// `ota.reboot = "idle"` in the real daemon: an install made while the stream is
/// live does not reboot the box; one made while it is not live reboots it at once.
#[test]
fn edge_daemon_reboots_for_an_update_only_when_not_live() {
    let (addr, fp, rd) = relay_identity("ota-edge-live");
    let b = edge_box_for("ota-edge-idle", &addr, Some(&fp));
    let text = std::fs::read_to_string(b.config_path())
        .unwrap()
        .replace("reboot = \"never\"", "reboot = \"idle\"");
    std::fs::write(b.config_path(), text).unwrap();
    let cfg = b.config_path();
    let cfg = cfg.to_str().unwrap();
    let bundle = b.bundle("0.2.0", &payload(10_000, 16));
    let bundle = bundle.to_str().unwrap();

    // Live: the relay is there and the test stream flows.
    let mut relay = run_relay(&b, rd.path(), &addr);
    let (mut edge, rx) = spawn_edge(&b);
    wait_for_line(&rx, "link joined", Duration::from_secs(9));
    std::thread::sleep(Duration::from_secs(2));
    let out = run_braid(&["ota", "install", "--config", cfg, bundle]);
    assert!(out.status.success(), "{out:?}");
    std::thread::sleep(Duration::from_secs(4));
    assert!(!b.p("rebooted").exists(), "rebooted during a live stream");
    let _ = edge.kill();
    let _ = edge.wait();
    let _ = relay.kill();
    let _ = relay.wait();

    // Not live (no relay): the pending reboot happens within a few seconds.
    let (mut edge, rx) = spawn_edge(&b);
    wait_for_line(
        &rx,
        "rebooting into the installed update",
        Duration::from_secs(10),
    );
    wait_for_reboot(&b);
    let _ = edge.kill();
    let _ = edge.wait();
    assert_eq!(b.boot(), Slot::B, "the update boots once");
}

/// `braid ota install http://...`: the first response breaks off mid-body; the
/// download resumes with a Range request and the bundle installs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_install_from_a_url_resumes_a_broken_download() {
    use axum::http::{header, HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let b = Box_::new("ota-url");
    let bundle = Arc::new(std::fs::read(b.bundle("0.2.0", &payload(3 << 20, 17))).unwrap());
    let requests = Arc::new(std::sync::Mutex::new(Vec::<Option<String>>::new()));
    let served = Arc::new(AtomicUsize::new(0));
    let (bun, reqs, n) = (bundle.clone(), requests.clone(), served.clone());
    let app = axum::Router::new().route(
        "/u.braidb",
        axum::routing::get(move |headers: HeaderMap| {
            let (bundle, reqs, n) = (bun.clone(), reqs.clone(), n.clone());
            async move {
                let range = headers
                    .get(header::RANGE)
                    .map(|v| v.to_str().unwrap().to_string());
                reqs.lock().unwrap().push(range.clone());
                let from: usize = range
                    .as_deref()
                    .and_then(|r| r.strip_prefix("bytes="))
                    .and_then(|r| r.strip_suffix('-'))
                    .map_or(0, |r| r.parse().unwrap());
                let body = axum::body::Bytes::copy_from_slice(&bundle[from..]);
                let len = body.len();
                let first = n.fetch_add(1, Ordering::SeqCst) == 0;
                let body = if first {
                    // Send a third, then break the connection.
                    let part = body.slice(..len / 3);
                    let s = futures_util::stream::iter(vec![
                        Ok::<_, std::io::Error>(part),
                        Err(std::io::Error::other("link lost")),
                    ]);
                    axum::body::Body::from_stream(s)
                } else {
                    axum::body::Body::from(body)
                };
                let mut resp: Response = body.into_response();
                resp.headers_mut()
                    .insert(header::CONTENT_LENGTH, len.to_string().parse().unwrap());
                if from > 0 {
                    *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
                    resp.headers_mut().insert(
                        header::CONTENT_RANGE,
                        format!("bytes {from}-{}/{}", bundle.len() - 1, bundle.len())
                            .parse()
                            .unwrap(),
                    );
                }
                resp
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/u.braidb", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let cfg = b.config_path();
    let out = tokio::task::spawn_blocking(move || {
        run_braid(&["ota", "install", "--config", cfg.to_str().unwrap(), &url])
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    let reqs = requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0], None);
    let resumed_at: usize = reqs[1]
        .as_deref()
        .unwrap()
        .trim_start_matches("bytes=")
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert!(resumed_at > 0 && resumed_at < bundle.len(), "{reqs:?}");
    assert_eq!(b.slots().status().unwrap().try_next, Some(Slot::B));
    let dl = std::fs::read_dir(b.p("state/download")).unwrap().count();
    assert_eq!(dl, 0, "the download is removed after the install");
    assert_eq!(b.boot(), Slot::B);
}
