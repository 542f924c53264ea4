//! A/B slots behind a small trait: directory slots ([`DirSlots`], for development,
//! tests and the daemon's simulation) and RAUC ([`RaucSlots`], on the box).
//!
//! The policy that decides when to call what (verify, install, boot once, health
//! check, confirm or roll back) lives in [`super::install`]; this module only
//! moves bytes and flips boot flags, each step atomic.

use super::bundle::{Manifest, PayloadKind};
use crate::system::atomic;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use super::rauc::{RaucConfig, RaucSlots};

/// One of the two slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
}

/// The slots as the box sees them now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SlotStatus {
    /// The slot running now.
    pub booted: Slot,
    /// The slot that boots by default (the last confirmed one).
    pub primary: Slot,
    /// A slot set to be tried once at the next boot, not yet confirmed.
    pub try_next: Option<Slot>,
    /// The booted slot was tried once and awaits confirmation (health check).
    pub booted_unconfirmed: bool,
    /// Version installed in each slot, if known: (A, B).
    pub versions: (Option<String>, Option<String>),
}

#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("slot backend: {0}")]
    Backend(String),
    #[error("slot I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// The A/B mechanism. Installing never touches the booted slot; only
/// [`SlotBackend::set_boot_once`] changes what boots, in one atomic step.
pub trait SlotBackend: Send + Sync {
    fn status(&self) -> Result<SlotStatus, SlotError>;
    /// Writes the payload into the slot that is not booted (marking it unbootable
    /// first, so a crash mid-write leaves it unbootable) and returns that slot.
    /// `progress` is called with bytes written so far.
    fn install(
        &self,
        payload: &mut dyn Read,
        manifest: &Manifest,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Slot, SlotError>;
    /// The next boot tries `slot` once; unless it is confirmed, the boot after that
    /// returns to the primary slot.
    fn set_boot_once(&self, slot: Slot) -> Result<(), SlotError>;
    /// The booted slot passed its health check: it becomes primary.
    fn mark_good(&self) -> Result<(), SlotError>;
    /// The booted slot failed its health check: the next boot returns to the other.
    fn mark_bad(&self) -> Result<(), SlotError>;
}

// ---------------------------------------------------------------------------
// Directory slots
// ---------------------------------------------------------------------------

/// Name of the boot-state file under the root of [`DirSlots`].
pub const BOOT_FILE: &str = "boot.json";
/// Name of the per-slot description, written last by an install.
pub const SLOT_FILE: &str = "slot.json";
/// Directory inside a slot that an install writes before renaming into place.
pub const INSTALL_TMP: &str = ".install.tmp";

/// What a bootloader with boot counting keeps: the contents of `root/boot.json`.
///
/// Every change is one [`write_atomic`] of the whole file, so a crash leaves the
/// old state or the new one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootState {
    /// The slot that boots by default.
    pub primary: Slot,
    /// Tried once at the next boot, then forgotten (consumed by [`DirSlots::boot`]).
    pub try_once: Option<Slot>,
    /// The slot booted last.
    pub booted: Slot,
    /// The booted slot is confirmed (it was the primary when booted, or
    /// `mark_good` was called since).
    pub booted_confirmed: bool,
    /// Which slots a boot may select.
    pub bootable: Bootable,
}

/// Per-slot bootable flags, `{"a": true, "b": false}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bootable {
    pub a: bool,
    pub b: bool,
}

impl Bootable {
    pub fn get(&self, s: Slot) -> bool {
        match s {
            Slot::A => self.a,
            Slot::B => self.b,
        }
    }

    pub fn set(&mut self, s: Slot, v: bool) {
        match s {
            Slot::A => self.a = v,
            Slot::B => self.b = v,
        }
    }
}

impl BootState {
    /// A fresh box: slot A runs, confirmed; B is empty.
    pub fn initial() -> BootState {
        BootState {
            primary: Slot::A,
            try_once: None,
            booted: Slot::A,
            booted_confirmed: true,
            bootable: Bootable { a: true, b: false },
        }
    }
}

/// The description of an installed slot, `root/<slot>/slot.json`. Written after the
/// payload is complete and synced; a slot without it (or with `complete: false`)
/// holds nothing usable.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotInfo {
    pub version: String,
    pub kind: PayloadKind,
    /// File name of the payload inside the slot directory.
    pub payload: String,
    pub size: u64,
    /// SHA-256 of the payload as written, lowercase hex.
    pub sha256: String,
    pub complete: bool,
}

/// File name of a payload of `kind` inside a slot directory.
pub fn payload_file_name(kind: PayloadKind) -> &'static str {
    match kind {
        PayloadKind::Binary => "braid",
        PayloadKind::Rootfs => "rootfs.img",
        PayloadKind::Rauc => "bundle.raucb",
    }
}

/// A/B slots as two directories, with a bootloader simulated in `root/boot.json`.
///
/// Layout: `root/a/`, `root/b/` each hold a payload file (see [`payload_file_name`])
/// and [`SLOT_FILE`]; `root/boot.json` is the [`BootState`].
///
/// Semantics are those of a bootloader with boot counting (one attempt):
/// [`DirSlots::boot`] takes the try-once slot if one is set (and consumes it), else
/// the primary; [`SlotBackend::mark_good`] makes the booted slot primary;
/// [`SlotBackend::mark_bad`] makes the next boot take the other slot.
///
/// Crash safety of [`SlotBackend::install`]: the target slot is first marked
/// unbootable in `boot.json`; the payload and `slot.json` are written and synced in
/// `INSTALL_TMP` inside the slot, renamed into place (`slot.json` last), and only
/// then is the slot marked bootable again. A kill at any point leaves the booted slot
/// untouched, the other slot unbootable or complete, and `boot.json` old or new.
/// The install is never the step that makes a slot boot: that is
/// [`SlotBackend::set_boot_once`].
#[derive(Debug)]
pub struct DirSlots {
    root: PathBuf,
    lock: Mutex<()>,
}

/// Copies `payload` into `f` (synced at the end), calling `progress` with the bytes
/// written so far, and checks size and SHA-256 against `manifest`. Returns both.
pub(crate) fn copy_checked(
    payload: &mut dyn Read,
    f: &mut fs::File,
    manifest: &Manifest,
    progress: &mut dyn FnMut(u64),
) -> Result<(u64, String), SlotError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut written = 0u64;
    loop {
        let n = match payload.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        f.write_all(&buf[..n])?;
        hasher.update(&buf[..n]);
        written += n as u64;
        progress(written);
    }
    f.sync_all()?;
    let sha256 = hex::encode(hasher.finalize());
    if written != manifest.payload_size {
        return Err(backend(format!(
            "payload is {written} bytes, the manifest says {}",
            manifest.payload_size
        )));
    }
    if !sha256.eq_ignore_ascii_case(&manifest.payload_sha256) {
        return Err(backend("payload hash does not match the manifest"));
    }
    Ok((written, sha256))
}

pub(crate) fn slot_name(s: Slot) -> &'static str {
    match s {
        Slot::A => "a",
        Slot::B => "b",
    }
}

pub(crate) fn backend(msg: impl Into<String>) -> SlotError {
    SlotError::Backend(msg.into())
}

impl DirSlots {
    /// Opens (creating if needed) directory slots under `root`. A missing
    /// `boot.json` becomes [`BootState::initial`]. Leftovers of a killed install or
    /// state write are removed: call at start-up, before anything else in this
    /// process or another uses `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<DirSlots, SlotError> {
        let root = root.into();
        for s in [Slot::A, Slot::B] {
            fs::create_dir_all(root.join(slot_name(s)))?;
        }
        let slots = DirSlots {
            root,
            lock: Mutex::new(()),
        };
        atomic::cleanup_stale_temps(&slots.root)?;
        let st = match slots.read_state()? {
            Some(st) => st,
            None => {
                let st = BootState::initial();
                slots.write_state(&st)?;
                st
            }
        };
        // A killed install left its temp directory in the slot that is not booted.
        let tmp = slots.slot_dir(st.booted.other()).join(INSTALL_TMP);
        match fs::remove_dir_all(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        Ok(slots)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of `slot`.
    pub fn slot_dir(&self, slot: Slot) -> PathBuf {
        self.root.join(slot_name(slot))
    }

    /// The boot state as stored now.
    pub fn state(&self) -> Result<BootState, SlotError> {
        self.read_state()?
            .ok_or_else(|| backend(format!("{} is missing", BOOT_FILE)))
    }

    /// The complete description of `slot`, or `None` if the slot holds no complete
    /// install.
    pub fn slot_info(&self, slot: Slot) -> Result<Option<SlotInfo>, SlotError> {
        let p = self.slot_dir(slot).join(SLOT_FILE);
        let data = match fs::read(&p) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        match serde_json::from_slice::<SlotInfo>(&data) {
            Ok(i) if i.complete => Ok(Some(i)),
            Ok(_) => Ok(None),
            Err(e) => Err(backend(format!("{}: {e}", p.display()))),
        }
    }

    /// The payload file of `slot`, if it holds a complete install.
    pub fn payload_path(&self, slot: Slot) -> Result<Option<PathBuf>, SlotError> {
        Ok(self
            .slot_info(slot)?
            .map(|i| self.slot_dir(slot).join(i.payload)))
    }

    /// What the bootloader does at power-on: the try-once slot if one is set and
    /// bootable (the try is consumed either way), else the primary, else the other
    /// slot if the primary is not bootable. Records the choice in `boot.json` and
    /// returns it.
    pub fn boot(&self) -> Result<Slot, SlotError> {
        let _g = self.lock();
        let mut st = self.state()?;
        let tried = st.try_once.take();
        let (slot, confirmed) = match tried {
            Some(s) if st.bootable.get(s) && s != st.primary => (s, false),
            _ if st.bootable.get(st.primary) => (st.primary, true),
            _ if st.bootable.get(st.primary.other()) => (st.primary.other(), true),
            _ => return Err(backend("no bootable slot")),
        };
        if confirmed {
            // Falling back from an unbootable primary makes the other slot primary.
            st.primary = slot;
        }
        st.booted = slot;
        st.booted_confirmed = confirmed;
        self.write_state(&st)?;
        Ok(slot)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read_state(&self) -> Result<Option<BootState>, SlotError> {
        let p = self.root.join(BOOT_FILE);
        match fs::read(&p) {
            Ok(d) => serde_json::from_slice(&d)
                .map(Some)
                .map_err(|e| backend(format!("{}: {e}", p.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn write_state(&self, st: &BootState) -> Result<(), SlotError> {
        let mut data = serde_json::to_vec_pretty(st).map_err(|e| backend(e.to_string()))?;
        data.push(b'\n');
        atomic::write_atomic_mode(&self.root.join(BOOT_FILE), &data, 0o644)?;
        Ok(())
    }

    /// Writes the payload and `slot.json` into `INSTALL_TMP` of `dir`, synced, and
    /// renames them into `dir` (`slot.json` last).
    fn write_slot(
        &self,
        dir: &Path,
        payload: &mut dyn Read,
        manifest: &Manifest,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), SlotError> {
        let tmp = dir.join(INSTALL_TMP);
        match fs::remove_dir_all(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        fs::create_dir(&tmp)?;
        let name = payload_file_name(manifest.kind);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(tmp.join(name))?;
        let (written, sha256) = copy_checked(payload, &mut f, manifest, progress)?;
        drop(f);
        let info = SlotInfo {
            version: manifest.version.clone(),
            kind: manifest.kind,
            payload: name.to_string(),
            size: written,
            sha256,
            complete: true,
        };
        let mut json = serde_json::to_vec_pretty(&info).map_err(|e| backend(e.to_string()))?;
        json.push(b'\n');
        atomic::write_atomic_mode(&tmp.join(SLOT_FILE), &json, 0o644)?;
        // The old description goes first: from here until the last rename the slot
        // has none, so it reads as incomplete (it is unbootable in boot.json anyway).
        match fs::remove_file(dir.join(SLOT_FILE)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        // Payloads of other kinds from an earlier install are stale now.
        for other in [PayloadKind::Binary, PayloadKind::Rootfs, PayloadKind::Rauc] {
            let o = payload_file_name(other);
            if o != name {
                match fs::remove_file(dir.join(o)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        fs::rename(tmp.join(name), dir.join(name))?;
        fs::rename(tmp.join(SLOT_FILE), dir.join(SLOT_FILE))?;
        fs::File::open(dir)?.sync_all()?;
        fs::remove_dir(&tmp)?;
        Ok(())
    }
}

impl SlotBackend for DirSlots {
    fn status(&self) -> Result<SlotStatus, SlotError> {
        let _g = self.lock();
        let st = self.state()?;
        let version = |s: Slot| -> Result<Option<String>, SlotError> {
            Ok(self.slot_info(s)?.map(|i| i.version))
        };
        Ok(SlotStatus {
            booted: st.booted,
            primary: st.primary,
            try_next: st.try_once,
            booted_unconfirmed: !st.booted_confirmed,
            versions: (version(Slot::A)?, version(Slot::B)?),
        })
    }

    fn install(
        &self,
        payload: &mut dyn Read,
        manifest: &Manifest,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Slot, SlotError> {
        let _g = self.lock();
        let mut st = self.state()?;
        let target = st.booted.other();
        if target == st.primary {
            // Booted on trial: the other slot is the way back. Writing it would
            // leave nothing to fall back to.
            return Err(backend(format!(
                "slot {} is on trial (not confirmed); the other slot is the fallback",
                slot_name(st.booted)
            )));
        }
        st.bootable.set(target, false);
        if st.try_once == Some(target) {
            st.try_once = None;
        }
        self.write_state(&st)?;
        self.write_slot(&self.slot_dir(target), payload, manifest, progress)?;
        st.bootable.set(target, true);
        self.write_state(&st)?;
        Ok(target)
    }

    fn set_boot_once(&self, slot: Slot) -> Result<(), SlotError> {
        let _g = self.lock();
        let mut st = self.state()?;
        if !st.bootable.get(slot) || self.slot_info(slot)?.is_none() {
            return Err(backend(format!(
                "slot {} holds no complete install",
                slot_name(slot)
            )));
        }
        st.try_once = if slot == st.primary { None } else { Some(slot) };
        self.write_state(&st)
    }

    fn mark_good(&self) -> Result<(), SlotError> {
        let _g = self.lock();
        let mut st = self.state()?;
        st.primary = st.booted;
        st.booted_confirmed = true;
        st.bootable.set(st.booted, true);
        if st.try_once == Some(st.booted) {
            st.try_once = None;
        }
        self.write_state(&st)
    }

    fn mark_bad(&self) -> Result<(), SlotError> {
        let _g = self.lock();
        let mut st = self.state()?;
        let other = st.booted.other();
        if !st.bootable.get(other) {
            return Err(backend(format!(
                "slot {} is not bootable: nothing to fall back to",
                slot_name(other)
            )));
        }
        st.bootable.set(st.booted, false);
        st.primary = other;
        st.try_once = None;
        self.write_state(&st)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::TempDir;

    fn manifest(version: &str, data: &[u8]) -> Manifest {
        Manifest {
            version: version.into(),
            compatible: "braid-test".into(),
            kind: PayloadKind::Binary,
            payload_size: data.len() as u64,
            payload_sha256: hex::encode(Sha256::digest(data)),
        }
    }

    fn install(s: &DirSlots, version: &str, data: &[u8]) -> Result<Slot, SlotError> {
        s.install(&mut &data[..], &manifest(version, data), &mut |_| {})
    }

    #[test]
    fn fresh_root_boots_a() {
        let d = TempDir::new("slots").unwrap();
        let s = DirSlots::open(d.path()).unwrap();
        assert_eq!(s.state().unwrap(), BootState::initial());
        assert_eq!(s.boot().unwrap(), Slot::A);
        let st = s.status().unwrap();
        assert_eq!(
            (st.booted, st.primary, st.try_next),
            (Slot::A, Slot::A, None)
        );
        assert!(!st.booted_unconfirmed);
        assert_eq!(st.versions, (None, None));
    }

    #[test]
    fn install_writes_other_slot_and_progress() {
        let d = TempDir::new("slots").unwrap();
        let s = DirSlots::open(d.path()).unwrap();
        let data = vec![7u8; 600_000];
        let mut seen = Vec::new();
        let slot = s
            .install(&mut &data[..], &manifest("1.2.3", &data), &mut |n| {
                seen.push(n)
            })
            .unwrap();
        assert_eq!(slot, Slot::B);
        assert_eq!(seen.last(), Some(&600_000));
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            fs::read(s.payload_path(Slot::B).unwrap().unwrap()).unwrap(),
            data
        );
        assert_eq!(s.status().unwrap().versions, (None, Some("1.2.3".into())));
        // Installing does not change what boots.
        assert_eq!(s.boot().unwrap(), Slot::A);
        assert!(!s.slot_dir(Slot::B).join(INSTALL_TMP).exists());
    }

    #[test]
    fn bad_hash_or_size_leaves_slot_unbootable() {
        let d = TempDir::new("slots").unwrap();
        let s = DirSlots::open(d.path()).unwrap();
        install(&s, "1.0.0", b"good").unwrap();
        let mut m = manifest("2.0.0", b"other");
        m.payload_sha256 = "00".repeat(32);
        assert!(s.install(&mut &b"other"[..], &m, &mut |_| {}).is_err());
        let st = s.state().unwrap();
        assert!(!st.bootable.b);
        assert!(s.set_boot_once(Slot::B).is_err());
        let m = manifest("2.0.0", b"longer payload");
        assert!(s.install(&mut &b"short"[..], &m, &mut |_| {}).is_err());
        assert_eq!(s.boot().unwrap(), Slot::A);
    }

    #[test]
    fn try_once_then_back_without_confirm() {
        let d = TempDir::new("slots").unwrap();
        let s = DirSlots::open(d.path()).unwrap();
        s.boot().unwrap();
        assert_eq!(install(&s, "2.0.0", b"new").unwrap(), Slot::B);
        s.set_boot_once(Slot::B).unwrap();
        assert_eq!(s.status().unwrap().try_next, Some(Slot::B));
        assert_eq!(s.boot().unwrap(), Slot::B);
        let st = s.status().unwrap();
        assert!(st.booted_unconfirmed);
        assert_eq!(st.primary, Slot::A);
        assert_eq!(st.try_next, None);
        // On trial, the fallback slot must not be overwritten.
        assert!(install(&s, "3.0.0", b"newer").is_err());
        assert_eq!(s.boot().unwrap(), Slot::A);
        assert!(!s.status().unwrap().booted_unconfirmed);
    }

    #[test]
    fn confirm_makes_permanent() {
        let d = TempDir::new("slots").unwrap();
        let s = DirSlots::open(d.path()).unwrap();
        install(&s, "2.0.0", b"new").unwrap();
        s.set_boot_once(Slot::B).unwrap();
        assert_eq!(s.boot().unwrap(), Slot::B);
        s.mark_good().unwrap();
        for _ in 0..3 {
            assert_eq!(s.boot().unwrap(), Slot::B);
            assert!(!s.status().unwrap().booted_unconfirmed);
        }
        // The next update goes to A.
        assert_eq!(install(&s, "3.0.0", b"newer").unwrap(), Slot::A);
    }

    #[test]
    fn mark_bad_returns_to_other() {
        let d = TempDir::new("slots").unwrap();
        let s = DirSlots::open(d.path()).unwrap();
        install(&s, "2.0.0", b"new").unwrap();
        s.set_boot_once(Slot::B).unwrap();
        assert_eq!(s.boot().unwrap(), Slot::B);
        s.mark_bad().unwrap();
        assert_eq!(s.boot().unwrap(), Slot::A);
        assert_eq!(s.boot().unwrap(), Slot::A);
        assert!(!s.state().unwrap().bootable.b);
        // With A booted and B bad, mark_bad has no fallback.
        assert!(s.mark_bad().is_err());
    }

    #[test]
    fn set_boot_once_on_empty_slot_fails() {
        let d = TempDir::new("slots").unwrap();
        let s = DirSlots::open(d.path()).unwrap();
        assert!(s.set_boot_once(Slot::B).is_err());
        assert_eq!(s.state().unwrap(), BootState::initial());
    }

    #[test]
    fn reopen_removes_install_leftovers() {
        let d = TempDir::new("slots").unwrap();
        let s = DirSlots::open(d.path()).unwrap();
        let tmp = s.slot_dir(Slot::B).join(INSTALL_TMP);
        fs::create_dir(&tmp).unwrap();
        fs::write(tmp.join("braid"), "half").unwrap();
        fs::write(d.path().join(".boot.json.tmp.1.0"), "torn").unwrap();
        drop(s);
        let _s = DirSlots::open(d.path()).unwrap();
        assert!(!tmp.exists());
        assert!(atomic::list_temps(d.path()).unwrap().is_empty());
    }

    #[test]
    fn json_shapes_are_stable() {
        assert_eq!(serde_json::to_string(&Slot::A).unwrap(), "\"a\"");
        assert_eq!(serde_json::from_str::<Slot>("\"b\"").unwrap(), Slot::B);
        let st = SlotStatus {
            booted: Slot::B,
            primary: Slot::A,
            try_next: None,
            booted_unconfirmed: true,
            versions: (Some("1.0.0".into()), None),
        };
        assert_eq!(
            serde_json::to_value(&st).unwrap(),
            serde_json::json!({
                "booted": "b",
                "primary": "a",
                "try_next": null,
                "booted_unconfirmed": true,
                "versions": ["1.0.0", null]
            })
        );
        assert_eq!(
            serde_json::to_value(BootState::initial()).unwrap(),
            serde_json::json!({
                "primary": "a",
                "try_once": null,
                "booted": "a",
                "booted_confirmed": true,
                "bootable": {"a": true, "b": false}
            })
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Install(u8),
        BadInstall,
        BootOnce(bool),
        Boot,
        Good,
        Bad,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            any::<u8>().prop_map(Op::Install),
            Just(Op::BadInstall),
            any::<bool>().prop_map(Op::BootOnce),
            Just(Op::Boot),
            Just(Op::Boot),
            Just(Op::Good),
            Just(Op::Bad),
        ]
    }

    proptest::proptest! {
            #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

            /// Any sequence of calls, failing or not: the booted slot's payload is never
            /// changed by an install, a boot only ever selects a bootable slot holding a
            /// complete install (after the first install), and a confirmed slot keeps
            /// booting until something is set to be tried.
            #[test]
            fn any_call_sequence_keeps_the_invariants(ops in proptest::collection::vec(op(), 1..24)) {
                let d = TempDir::new("slots-prop").unwrap();
                let s = DirSlots::open(d.path()).unwrap();
                // Both slots hold something, B confirmed and booted, A bootable.
                install(&s, "1.0.0", b"one").unwrap();
                s.set_boot_once(Slot::B).unwrap();
                s.boot().unwrap();
                s.mark_good().unwrap();
                install(&s, "1.1.0", b"one.one").unwrap();
                for op in ops {
                    let before = s.state().unwrap();
                    let booted_payload = s
                        .payload_path(before.booted)
                        .unwrap()
                        .map(|p| fs::read(p).unwrap());
                    match op {
                        Op::Install(v) => {
                            let data = vec![v; 1 + v as usize * 100];
                            let _ = install(&s, &format!("2.0.{v}"), &data);
                        }
                        Op::BadInstall => {
                            let mut m = manifest("9.9.9", b"payload");
                            m.payload_sha256 = "ab".repeat(32);
                            assert!(s.install(&mut &b"payload"[..], &m, &mut |_| {}).is_err());
                        }
                        Op::BootOnce(other) => {
                            let t = if other { before.booted.other() } else { before.booted };
                            let _ = s.set_boot_once(t);
                        }
                        Op::Boot => {
                            let b = s.boot().unwrap();
                            let st = s.state().unwrap();
                            assert!(st.bootable.get(b));
                            assert!(s.slot_info(b).unwrap().is_some(), "booted an empty slot");
                            if before.try_once.is_none() {
                                // Nothing to try: the primary (or the only bootable one).
                                assert!(b == before.primary || !before.bootable.get(before.primary));
                                assert!(st.try_once.is_none());
                            }
                        }
                        Op::Good => s.mark_good().unwrap(),
                        Op::Bad => {
                            let _ = s.mark_bad();
                        }
                    }
                    let after = s.state().unwrap();
                    if !matches!(op, Op::Boot) {
    assert_eq!(after.booted, before.booted, "only boot() changes the booted slot")
                        ;
    }
                    if !matches!(op, Op::Boot) {
                        let now = s
                            .payload_path(before.booted)
                            .unwrap()
                            .map(|p| fs::read(p).unwrap());
                        assert_eq!(now, booted_payload, "the booted slot was written");
                    }
                    if after.try_once.is_none() && !matches!(op, Op::Boot) {
                        // Two boots in a row with nothing to try land on the same slot.
                        let d2 = TempDir::new("slots-prop-copy").unwrap();
                        for n in ["a", "b"] {
                            fs::create_dir_all(d2.path().join(n)).unwrap();
                            for e in fs::read_dir(d.path().join(n)).unwrap() {
                                let e = e.unwrap();
                                if e.file_type().unwrap().is_file() {
                                    fs::copy(e.path(), d2.path().join(n).join(e.file_name())).unwrap();
                                }
                            }
                        }
                        fs::copy(d.path().join(BOOT_FILE), d2.path().join(BOOT_FILE)).unwrap();
                        let s2 = DirSlots::open(d2.path()).unwrap();
                        if let Ok(b1) = s2.boot() {
                            assert_eq!(s2.boot().unwrap(), b1);
                        }
                    }
                }
            }

            #[test]
            fn boot_state_json_round_trips(
                p in proptest::bool::ANY, t in 0u8..3, b in proptest::bool::ANY,
                c in proptest::bool::ANY, ba in proptest::bool::ANY, bb in proptest::bool::ANY,
            ) {
                let slot = |x: bool| if x { Slot::B } else { Slot::A };
                let st = BootState {
                    primary: slot(p),
                    try_once: match t { 0 => None, 1 => Some(Slot::A), _ => Some(Slot::B) },
                    booted: slot(b),
                    booted_confirmed: c,
                    bootable: Bootable { a: ba, b: bb },
                };
                let j = serde_json::to_vec(&st).unwrap();
                assert_eq!(serde_json::from_slice::<BootState>(&j).unwrap(), st);
            }

            #[test]
            fn junk_boot_json_is_an_error_not_a_panic(junk in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
                let _ = serde_json::from_slice::<BootState>(&junk);
                let _ = serde_json::from_slice::<SlotInfo>(&junk);
            }
        }
}
