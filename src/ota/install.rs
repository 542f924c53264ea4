//! The install flow: verify -> write the inactive slot -> boot it once.
//!
//! [`install`] reads a bundle from any stream. Every header check (signature,
//! hardware, version, size) passes before a byte reaches a slot; the payload's hash
//! and length are checked as it streams into the inactive slot, which the backend
//! marks unbootable before writing, so a bad payload, a short file or a kill at any
//! moment leaves the booted slot as the one that boots. Only the last step,
//! [`SlotBackend::set_boot_once`], changes what boots next, in one atomic step.
//!
//! [`Progress`] is shared with whoever shows the install (CLI, web page).
//! [`install_file_low_priority`] runs an install on its own thread at nice 10 and
//! best-effort I/O priority 7, so that a live stream keeps the CPU and the disk.
//! What happens after the install (the health check on the next boot, the reboot
//! policy) is in [`super::health`].

use super::bundle::{self, BundleError, Manifest, PayloadKind, Policy};
use super::slots::{Slot, SlotBackend, SlotError, SlotStatus};
use crate::config::{OtaBackend, OtaConfig};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Where an install is, or stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// No install has run.
    #[default]
    Idle,
    /// Reading and checking the bundle's header, manifest and signature.
    Verify,
    /// Streaming the payload into the inactive slot (hash checked as it goes).
    Write,
    /// Setting the new slot to boot once.
    Activate,
    /// Installed; the new slot boots once at the next reboot.
    Done,
    /// Stopped: see `last_error`.
    Failed,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Idle => "idle",
            Stage::Verify => "verify",
            Stage::Write => "write",
            Stage::Activate => "activate",
            Stage::Done => "done",
            Stage::Failed => "failed",
        })
    }
}

/// One look at an install in progress (or the last one).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProgressView {
    pub stage: Stage,
    /// Payload bytes written so far.
    pub bytes: u64,
    /// Payload size from the manifest, once verified.
    pub total: Option<u64>,
    /// Version being installed, once verified.
    pub version: Option<String>,
    /// The slot being written.
    pub slot: Option<Slot>,
    /// Why the last install failed (`stage: reason`).
    pub last_error: Option<String>,
}

/// Install progress shared between the installing thread and its viewers.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<Mutex<ProgressView>>);

impl Progress {
    pub fn new() -> Progress {
        Progress::default()
    }

    pub fn snapshot(&self) -> ProgressView {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn update(&self, f: impl FnOnce(&mut ProgressView)) {
        if let Ok(mut v) = self.0.lock() {
            f(&mut v);
        }
    }
}

/// A finished install.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InstallReport {
    /// The slot written and set to boot once.
    pub slot: Slot,
    pub version: String,
    pub compatible: String,
    pub kind: PayloadKind,
    pub bytes: u64,
}

/// Why an install stopped, by stage. In every case the booted slot still boots.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The bundle was refused: before anything was written (`written == false`), or
    /// its payload failed the hash or length check at the end of the write (the new
    /// slot was left unbootable).
    #[error("verify: {error}{}", if *.written { " (the new slot was left unbootable; the running slot still boots)" } else { " (nothing was written)" })]
    Verify {
        #[source]
        error: BundleError,
        written: bool,
    },
    /// Writing the inactive slot failed (it stays unbootable).
    #[error("write: {0} (the new slot was left unbootable; the running slot still boots)")]
    Write(#[source] SlotError),
    /// The slot was written but could not be set to boot (nothing changed what boots).
    #[error("activate: {0} (the running slot still boots)")]
    Activate(#[source] SlotError),
    /// Setting up the install (state directory, keys, backend, lock).
    #[error("setup: {0}")]
    Setup(String),
}

impl InstallError {
    /// The stage it stopped at.
    pub fn stage(&self) -> Stage {
        match self {
            InstallError::Verify { written: false, .. } | InstallError::Setup(_) => Stage::Verify,
            InstallError::Verify { written: true, .. } | InstallError::Write(_) => Stage::Write,
            InstallError::Activate(_) => Stage::Activate,
        }
    }
}

/// Hands the payload to the backend, keeping a [`BundleError`] the payload reader
/// reports (hash mismatch, truncation) so it is not lost in the backend's error.
struct Tap<R> {
    inner: R,
    rejected: Option<BundleError>,
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Err(e) if bundle::bundle_error(&e).is_some() => {
                let msg = e.to_string();
                let inner = e
                    .into_inner()
                    .and_then(|b| b.downcast::<BundleError>().ok());
                self.rejected = Some(inner.map_or(BundleError::Malformed(msg.clone()), |b| *b));
                Err(io::Error::new(io::ErrorKind::InvalidData, msg))
            }
            r => r,
        }
    }
}

/// Installs the bundle read from `reader` into the slot not booted and sets that slot
/// to boot once. See the module docs for what each failure leaves behind.
pub fn install<R: Read>(
    reader: R,
    policy: &Policy,
    backend: &dyn SlotBackend,
    progress: &Progress,
) -> Result<InstallReport, InstallError> {
    progress.update(|v| {
        *v = ProgressView {
            stage: Stage::Verify,
            ..Default::default()
        }
    });
    let r = run(reader, policy, backend, progress);
    match &r {
        Ok(_) => progress.update(|v| v.stage = Stage::Done),
        Err(e) => {
            let msg = e.to_string();
            progress.update(|v| {
                v.stage = Stage::Failed;
                v.last_error = Some(msg);
            })
        }
    }
    r
}

fn run<R: Read>(
    reader: R,
    policy: &Policy,
    backend: &dyn SlotBackend,
    progress: &Progress,
) -> Result<InstallReport, InstallError> {
    let (manifest, payload) =
        bundle::open(reader, policy).map_err(|error| InstallError::Verify {
            error,
            written: false,
        })?;
    write_and_activate(&manifest, payload, backend, progress)
}

/// The stages after the header checks: stream `payload` into the inactive slot,
/// make sure it was read to its end (where its hash is checked), boot it once.
fn write_and_activate<P: Read>(
    manifest: &Manifest,
    payload: P,
    backend: &dyn SlotBackend,
    progress: &Progress,
) -> Result<InstallReport, InstallError> {
    progress.update(|v| {
        v.stage = Stage::Write;
        v.total = Some(manifest.payload_size);
        v.version = Some(manifest.version.clone());
    });
    if let Ok(st) = backend.status() {
        progress.update(|v| v.slot = Some(st.booted.other()));
    }
    let mut tap = Tap {
        inner: payload,
        rejected: None,
    };
    let written = backend.install(&mut tap, manifest, &mut |n| {
        progress.update(|v| v.bytes = n)
    });
    if let Some(error) = tap.rejected.take() {
        return Err(InstallError::Verify {
            error,
            written: true,
        });
    }
    let slot = written.map_err(InstallError::Write)?;
    // The hash is checked when the payload reader reaches its end: make sure the
    // backend read that far before the slot may boot.
    match tap.read(&mut [0u8; 1]) {
        Ok(0) => {}
        Ok(_) => {
            return Err(InstallError::Write(SlotError::Backend(
                "the backend stopped before the end of the payload".into(),
            )))
        }
        Err(e) => {
            return Err(match tap.rejected.take() {
                Some(error) => InstallError::Verify {
                    error,
                    written: true,
                },
                None => InstallError::Write(SlotError::Io(e)),
            })
        }
    }
    progress.update(|v| {
        v.stage = Stage::Activate;
        v.slot = Some(slot);
    });
    backend
        .set_boot_once(slot)
        .map_err(InstallError::Activate)?;
    Ok(InstallReport {
        slot,
        version: manifest.version.clone(),
        compatible: manifest.compatible.clone(),
        kind: manifest.kind,
        bytes: manifest.payload_size,
    })
}

/// The version running now: the booted slot's, else this binary's.
pub fn current_version(status: &SlotStatus) -> String {
    let v = match status.booted {
        Slot::A => &status.versions.0,
        Slot::B => &status.versions.1,
    };
    v.clone()
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string())
}

/// What this box accepts, from `[ota]` and the slots (keys read from their files).
pub fn policy(
    cfg: &OtaConfig,
    status: &SlotStatus,
    allow_downgrade: bool,
) -> Result<Policy, InstallError> {
    let keys = cfg
        .public_keys
        .iter()
        .map(|p| read_public_key(p))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Policy {
        keys,
        compatible: cfg.compatible.clone(),
        current_version: current_version(status),
        allow_downgrade: allow_downgrade || cfg.allow_downgrade,
        max_payload: cfg.max_payload,
    })
}

/// An Ed25519 public key from a minisign public key file (`ota.public_keys`).
pub fn read_public_key(path: &Path) -> Result<[u8; 32], InstallError> {
    super::keys::load_public_key(path)
        .map_err(|e| InstallError::Setup(format!("public key {}: {e}", path.display())))
}

/// The slot backend `[ota]` names. Directory slots are opened (and cleaned up after
/// a killed install): call it with the install lock held, or at daemon start.
pub fn open_backend(cfg: &OtaConfig) -> Result<Arc<dyn SlotBackend>, InstallError> {
    match &cfg.backend {
        OtaBackend::Dir { slots_dir } => super::slots::DirSlots::open(slots_dir)
            .map(|s| Arc::new(s) as Arc<dyn SlotBackend>)
            .map_err(|e| InstallError::Setup(format!("slots {}: {e}", slots_dir.display()))),
        OtaBackend::Rauc => Ok(Arc::new(super::rauc::RaucSlots::new(
            super::rauc::RaucConfig {
                work_dir: cfg.state_dir.clone(),
                state_dir: cfg.state_dir.clone(),
                ..Default::default()
            },
        ))),
    }
}

/// Lowers the calling thread's CPU priority to nice 10 (Linux gives each thread its
/// own nice value). With the CFQ and BFQ I/O schedulers a thread with no I/O
/// priority of its own gets one derived from its nice value (best effort, level
/// `(nice + 20) / 5` = 6), so its disk writes yield too. Best effort: a failure is
/// logged and the install goes on at normal priority.
pub fn lower_thread_priority() {
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), INSTALL_NICE) {
        tracing::warn!("ota: cannot lower the install thread's priority: {e}");
    }
}

/// Nice value of the install thread.
pub const INSTALL_NICE: i32 = 10;

/// Installs the bundle file at `path` on a thread of its own at low priority (see
/// [`lower_thread_priority`]); the async caller is not blocked.
pub async fn install_file_low_priority(
    path: PathBuf,
    policy: Policy,
    backend: Arc<dyn SlotBackend>,
    progress: Progress,
) -> Result<InstallReport, InstallError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("ota-install".into())
        .spawn(move || {
            lower_thread_priority();
            let r = match std::fs::File::open(&path) {
                Ok(f) => install(
                    io::BufReader::with_capacity(1 << 20, f),
                    &policy,
                    backend.as_ref(),
                    &progress,
                ),
                Err(e) => Err(InstallError::Setup(format!("{}: {e}", path.display()))),
            };
            let _ = tx.send(r);
        })
        .map_err(|e| InstallError::Setup(format!("cannot start the install thread: {e}")))?;
    rx.await
        .map_err(|_| InstallError::Setup("the install thread died".into()))?
}

/// File in `ota.state_dir` with the outcome of the last install (`braid ota status`).
pub const LAST_INSTALL_FILE: &str = "last-install.json";

/// Keeps the outcome of an install from `source` (a path, a URL, "web upload") for
/// `braid ota status`, and after a success leaves the reboot pending and the
/// boot-attempt counter fresh for the new slot.
pub fn record_outcome(
    cfg: &OtaConfig,
    source: &str,
    r: &Result<InstallReport, InstallError>,
) -> io::Result<()> {
    let v = match r {
        Ok(report) => {
            super::health::reset_starts(&cfg.state_dir)?;
            super::health::set_reboot_pending(
                &cfg.state_dir,
                &super::health::RebootPending {
                    slot: report.slot,
                    version: report.version.clone(),
                },
            )?;
            serde_json::json!({"ok": true, "report": report, "source": source})
        }
        Err(e) => serde_json::json!({
            "ok": false, "stage": e.stage(), "error": e.to_string(), "source": source
        }),
    };
    std::fs::create_dir_all(&cfg.state_dir)?;
    crate::system::atomic::write_atomic(
        &cfg.state_dir.join(LAST_INSTALL_FILE),
        v.to_string().as_bytes(),
    )
}

/// The web page's upload (`POST /api/update`) into the same flow as `braid ota
/// install`: same lock, checks, state files and reboot policy.
pub struct WebUpdater {
    cfg: OtaConfig,
    backend: Arc<dyn SlotBackend>,
    progress: Progress,
}

impl WebUpdater {
    pub fn new(cfg: OtaConfig, backend: Arc<dyn SlotBackend>) -> WebUpdater {
        WebUpdater {
            cfg,
            backend,
            progress: Progress::new(),
        }
    }

    /// Where the last upload's install is.
    pub fn progress(&self) -> ProgressView {
        self.progress.snapshot()
    }
}

impl crate::web::Updater for WebUpdater {
    fn max_bytes(&self) -> u64 {
        // Payload, plus magic, lengths, manifest and signature at their limits.
        self.cfg.max_payload
            + bundle::MAGIC.len() as u64
            + 8
            + u64::from(bundle::MAX_MANIFEST)
            + u64::from(bundle::MAX_SIGNATURE)
    }

    /// Runs on the web server's blocking thread: it is lowered to nice 10 for the
    /// install and set back after, where the system allows (without CAP_SYS_NICE a
    /// thread cannot raise its priority again; tokio retires idle blocking threads).
    fn install(&self, body: &mut dyn Read, force: bool) -> Result<serde_json::Value, String> {
        let _lock = InstallLock::acquire(&self.cfg.state_dir).map_err(|e| e.to_string())?;
        let st = self.backend.status().map_err(|e| format!("slots: {e}"))?;
        let policy = policy(&self.cfg, &st, force).map_err(|e| e.to_string())?;
        let tid = rustix::thread::gettid();
        let nice = rustix::process::getpriority_process(Some(tid)).ok();
        lower_thread_priority();
        let r = install(body, &policy, self.backend.as_ref(), &self.progress);
        if let Some(n) = nice {
            let _ = rustix::process::setpriority_process(Some(tid), n);
        }
        if let Err(e) = record_outcome(&self.cfg, "web upload", &r) {
            tracing::error!("ota: recording the install: {e}");
        }
        let report = r.map_err(|e| e.to_string())?;
        tracing::info!(version = %report.version, slot = ?report.slot, "ota: installed from the web page");
        let reboot = if force {
            tracing::warn!("ota: rebooting now (forced from the web page)");
            super::health::run_reboot_command(&self.cfg.reboot_command)
                .map_err(|e| format!("installed, but the reboot failed: {e}"))?;
            "now".to_string()
        } else {
            self.cfg.reboot.to_string()
        };
        Ok(serde_json::json!({
            "slot": report.slot,
            "version": report.version,
            "compatible": report.compatible,
            "bytes": report.bytes,
            "reboot": reboot,
        }))
    }
}

/// Lock file in `ota.state_dir`: one install at a time.
pub const LOCK_FILE: &str = "install.lock";

/// Holds `ota.state_dir/install.lock` (flock) for the life of the value. Every
/// `braid ota` command and the fleet poller take it: opening directory slots cleans up
/// after a killed install, which must not happen under a running one.
#[derive(Debug)]
pub struct InstallLock(#[allow(dead_code)] std::fs::File);

impl InstallLock {
    /// Takes the lock, or fails at once if another process or task holds it.
    pub fn acquire(state_dir: &Path) -> io::Result<InstallLock> {
        std::fs::create_dir_all(state_dir).map_err(|e| {
            io::Error::new(e.kind(), format!("creating {}: {e}", state_dir.display()))
        })?;
        let path = state_dir.join(LOCK_FILE);
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", path.display())))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |_| {
                io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("another install is running ({} is locked)", path.display()),
                )
            },
        )?;
        Ok(InstallLock(f))
    }
}

/// An in-memory [`SlotBackend`] with the bootloader's semantics, for tests of the
/// flow and the health check (the real directory slots are in [`super::slots`]).
#[cfg(test)]
pub(crate) mod fake {
    use super::*;

    #[derive(Debug, Clone, Default)]
    pub struct State {
        pub booted: Option<Slot>,
        pub primary: Option<Slot>,
        pub try_next: Option<Slot>,
        pub unconfirmed: bool,
        /// Content and version of each slot; None: unbootable.
        pub a: Option<(Vec<u8>, String)>,
        pub b: Option<(Vec<u8>, String)>,
        pub calls: Vec<&'static str>,
        /// Fail `install` after this many bytes.
        pub fail_write_after: Option<usize>,
        /// Stop reading after this many bytes and report success (a buggy backend).
        pub stop_after: Option<usize>,
        pub fail_activate: bool,
    }

    #[derive(Debug, Default)]
    pub struct MemSlots(pub Mutex<State>);

    impl MemSlots {
        /// Booted and primary A with version `v`, B empty.
        pub fn new(v: &str) -> MemSlots {
            MemSlots(Mutex::new(State {
                booted: Some(Slot::A),
                primary: Some(Slot::A),
                a: Some((b"old".to_vec(), v.into())),
                ..Default::default()
            }))
        }

        pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
            f(&mut self.0.lock().unwrap())
        }

        fn slot(s: &mut State, slot: Slot) -> &mut Option<(Vec<u8>, String)> {
            match slot {
                Slot::A => &mut s.a,
                Slot::B => &mut s.b,
            }
        }

        /// What the bootloader does at power-on.
        pub fn boot(&self) -> Slot {
            self.with(|s| {
                let primary = s.primary.unwrap();
                let slot = match s.try_next.take() {
                    Some(t) if Self::slot(s, t).is_some() => t,
                    _ => primary,
                };
                s.booted = Some(slot);
                s.unconfirmed = slot != primary;
                slot
            })
        }
    }

    impl SlotBackend for MemSlots {
        fn status(&self) -> Result<SlotStatus, SlotError> {
            self.with(|s| {
                Ok(SlotStatus {
                    booted: s.booted.unwrap(),
                    primary: s.primary.unwrap(),
                    try_next: s.try_next,
                    booted_unconfirmed: s.unconfirmed,
                    versions: (
                        s.a.as_ref().map(|x| x.1.clone()),
                        s.b.as_ref().map(|x| x.1.clone()),
                    ),
                })
            })
        }

        fn install(
            &self,
            payload: &mut dyn Read,
            manifest: &Manifest,
            progress: &mut dyn FnMut(u64),
        ) -> Result<Slot, SlotError> {
            let (target, fail_after, stop_after) = self.with(|s| {
                s.calls.push("install");
                let t = s.booted.unwrap().other();
                *Self::slot(s, t) = None;
                if s.try_next == Some(t) {
                    s.try_next = None;
                }
                (t, s.fail_write_after, s.stop_after)
            });
            let mut data = Vec::new();
            let mut buf = [0u8; 7];
            loop {
                if stop_after.is_some_and(|n| data.len() >= n) {
                    break;
                }
                if fail_after.is_some_and(|n| data.len() >= n) {
                    return Err(SlotError::Io(io::Error::other("disk full")));
                }
                let n = payload.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..n]);
                progress(data.len() as u64);
            }
            self.with(|s| *Self::slot(s, target) = Some((data, manifest.version.clone())));
            Ok(target)
        }

        fn set_boot_once(&self, slot: Slot) -> Result<(), SlotError> {
            self.with(|s| {
                s.calls.push("set_boot_once");
                if s.fail_activate {
                    return Err(SlotError::Backend("bootloader env is read-only".into()));
                }
                s.try_next = Some(slot);
                Ok(())
            })
        }

        fn mark_good(&self) -> Result<(), SlotError> {
            self.with(|s| {
                s.calls.push("mark_good");
                s.primary = s.booted;
                s.unconfirmed = false;
                Ok(())
            })
        }

        fn mark_bad(&self) -> Result<(), SlotError> {
            self.with(|s| {
                s.calls.push("mark_bad");
                let b = s.booted.unwrap();
                *Self::slot(s, b) = None;
                s.primary = Some(b.other());
                s.unconfirmed = false;
                Ok(())
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::MemSlots;
    use super::*;

    /// A payload reader standing in for `bundle::open`'s: yields `data`, then at its
    /// end the error `end` (as the real one reports a bad hash or a short file).
    struct FakePayload {
        data: io::Cursor<Vec<u8>>,
        end: Option<BundleError>,
    }

    impl Read for FakePayload {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.data.read(buf)?;
            if n == 0 {
                if let Some(e) = self.end.take() {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            }
            Ok(n)
        }
    }

    fn manifest() -> Manifest {
        Manifest {
            version: "1.1.0".into(),
            compatible: "braid-test".into(),
            kind: PayloadKind::Binary,
            payload_size: 100,
            payload_sha256: String::new(),
        }
    }

    /// The write and activate stages (`bundle::open` is covered by the bundle
    /// module and the integration tests).
    fn write_and_activate_fake(
        slots: &MemSlots,
        end: Option<BundleError>,
    ) -> Result<InstallReport, InstallError> {
        let payload = FakePayload {
            data: io::Cursor::new(vec![7u8; 100]),
            end,
        };
        write_and_activate(&manifest(), payload, slots, &Progress::new())
    }

    #[test]
    fn good_payload_goes_to_the_other_slot_and_boots_once() {
        let slots = MemSlots::new("1.0.0");
        let r = write_and_activate_fake(&slots, None).unwrap();
        assert_eq!(r.slot, Slot::B);
        assert_eq!(slots.boot(), Slot::B, "tried once");
        assert!(slots.status().unwrap().booted_unconfirmed);
        assert_eq!(slots.boot(), Slot::A, "not confirmed: back to A");
    }

    #[test]
    fn bad_hash_at_the_end_keeps_the_old_slot() {
        let slots = MemSlots::new("1.0.0");
        let e = write_and_activate_fake(&slots, Some(BundleError::HashMismatch)).unwrap_err();
        assert_eq!(e.stage(), Stage::Write);
        let msg = e.to_string();
        assert!(
            msg.starts_with("verify: payload hash does not match"),
            "{msg}"
        );
        assert!(msg.contains("running slot still boots"), "{msg}");
        assert!(matches!(
            e,
            InstallError::Verify {
                error: BundleError::HashMismatch,
                written: true
            }
        ));
        slots.with(|s| assert_eq!(s.calls, ["install"], "never activated"));
        assert_eq!(slots.boot(), Slot::A);
    }

    #[test]
    fn truncated_payload_keeps_the_old_slot() {
        let slots = MemSlots::new("1.0.0");
        let e = write_and_activate_fake(
            &slots,
            Some(BundleError::Truncated {
                got: 100,
                want: 200,
            }),
        )
        .unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        assert_eq!(slots.boot(), Slot::A);
    }

    #[test]
    fn write_and_activate_failures_name_their_stage() {
        let slots = MemSlots::new("1.0.0");
        slots.with(|s| s.fail_write_after = Some(30));
        let e = write_and_activate_fake(&slots, None).unwrap_err();
        assert_eq!(e.stage(), Stage::Write);
        assert!(
            e.to_string().starts_with("write: slot I/O: disk full"),
            "{e}"
        );
        assert_eq!(slots.boot(), Slot::A);

        let slots = MemSlots::new("1.0.0");
        slots.with(|s| s.fail_activate = true);
        let e = write_and_activate_fake(&slots, None).unwrap_err();
        assert_eq!(e.stage(), Stage::Activate);
        assert!(
            e.to_string()
                .starts_with("activate: slot backend: bootloader env"),
            "{e}"
        );
        assert_eq!(slots.boot(), Slot::A);
    }

    #[test]
    fn backend_that_stops_early_is_caught() {
        // A backend that returns before the payload's end would skip the hash check:
        // the flow reads on and refuses to activate.
        let slots = MemSlots::new("1.0.0");
        slots.with(|s| s.stop_after = Some(50));
        let e = write_and_activate_fake(&slots, Some(BundleError::HashMismatch)).unwrap_err();
        assert!(
            e.to_string().contains("backend stopped before the end"),
            "{e}"
        );
        slots.with(|s| assert_eq!(s.calls, ["install"]));
        assert_eq!(slots.boot(), Slot::A);
    }

    #[test]
    fn refused_bundle_writes_nothing() {
        // The stubbed or real `bundle::open` refuses junk before the backend is called.
        let slots = MemSlots::new("1.0.0");
        let policy = Policy {
            keys: vec![[0u8; 32]],
            compatible: "braid-test".into(),
            current_version: "1.0.0".into(),
            allow_downgrade: false,
            max_payload: 1 << 20,
        };
        let progress = Progress::new();
        let e = install(&b"not a bundle at all"[..], &policy, &slots, &progress).unwrap_err();
        assert!(
            matches!(e, InstallError::Verify { written: false, .. }),
            "{e}"
        );
        assert!(e.to_string().starts_with("verify: "), "{e}");
        assert!(e.to_string().ends_with("(nothing was written)"), "{e}");
        slots.with(|s| assert!(s.calls.is_empty()));
        let v = progress.snapshot();
        assert_eq!(v.stage, Stage::Failed);
        assert_eq!(v.last_error, Some(e.to_string()));
    }

    #[test]
    fn one_install_at_a_time() {
        let d = crate::system::TempDir::new("ota-lock").unwrap();
        let dir = d.path().join("state");
        let held = InstallLock::acquire(&dir).unwrap();
        let e = InstallLock::acquire(&dir).unwrap_err();
        assert!(e.to_string().contains("another install is running"), "{e}");
        drop(held);
        InstallLock::acquire(&dir).unwrap();
    }

    #[test]
    fn current_version_is_the_booted_slots() {
        let slots = MemSlots::new("1.0.0");
        let mut st = slots.status().unwrap();
        assert_eq!(current_version(&st), "1.0.0");
        st.booted = Slot::B;
        assert_eq!(current_version(&st), env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn low_priority_applies_to_this_thread_only() {
        let nice_of_this_thread =
            || rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
        let before = nice_of_this_thread();
        let nice = std::thread::spawn(move || {
            lower_thread_priority();
            nice_of_this_thread()
        })
        .join()
        .unwrap();
        assert_eq!(nice, INSTALL_NICE.max(before));
        assert_eq!(
            nice_of_this_thread(),
            before,
            "the caller keeps its priority"
        );
    }
}
