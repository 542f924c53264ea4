//! [`SlotBackend`] on RAUC, the A/B updater of embedded Linux (Debian 12: `rauc` 1.8).
//!
//! Everything goes through the `rauc` command line, which talks to the RAUC service
//! over D-Bus (the service is what installs and what owns the bootloader state):
//!
//! | trait call | rauc command |
//! |---|---|
//! | `status` | `rauc status --detailed --output-format=json` |
//! | `install` | payload (a `.raucb` bundle) to a temp file, `rauc install FILE` |
//! | `set_boot_once(s)` | `rauc status mark-active <slot of s>` |
//! | `mark_good` | `rauc status mark-good booted` |
//! | `mark_bad` | `rauc status mark-bad booted`, then `rauc status mark-active other` |
//!
//! Why the command line and not the D-Bus API directly: the CLI is RAUC's stable,
//! documented interface, it is one small process per call (installs are rare), its
//! errors are text we pass on, and it spares a D-Bus client crate. What we give up
//! is fine-grained install progress (`progress` is called while the bundle is
//! written to disk, not while RAUC copies it into the slot).
//!
//! Try-once and fall-back come from RAUC's bootloader integration: `mark-active`
//! puts the slot first in the boot order and gives it a fresh boot-attempt counter
//! (U-Boot `BOOT_ORDER` / `BOOT_<x>_LEFT`, GRUB `ORDER` / `<x>_TRY`, barebox
//! bootchooser). The bootloader decrements the counter on every boot; `mark-good`
//! resets it; once it is used up (the slot never confirmed) or `mark-bad` zeroed it,
//! the bootloader boots the next slot in the order. With `attempts = 1` this is
//! exactly try-once; more attempts ride out a power cut during the first boot.
//! Every boot uses an attempt, so `mark_good` must follow every healthy boot, not
//! only the first one after an update.
//!
//! RAUC itself has no "booted slot is unconfirmed" flag, so [`RaucSlots`] keeps one:
//! `set_boot_once` writes `rauc-try.json` in its state directory, `mark_good` /
//! `mark_bad` remove it, and `status` reports `booted_unconfirmed` when the booted
//! slot is the one on trial.
//!
//! Note that `rauc install` activates the slot it wrote unless the system
//! configuration says `activate-installed=false` (set that on the box, so only
//! `set_boot_once` changes what boots, as the trait promises).
//!
//! Slots: of RAUC's slots of class `class` (default `rootfs`), `<class>.0` is A and
//! `<class>.1` is B.

use super::bundle::{Manifest, PayloadKind};
use super::slots::{backend, copy_checked, Slot, SlotBackend, SlotError, SlotStatus};
use crate::system::atomic;
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::Command;

/// How to reach RAUC.
#[derive(Debug, Clone)]
pub struct RaucConfig {
    /// The `rauc` program.
    pub program: PathBuf,
    /// `--conf=` for every call (RAUC's default is `/etc/rauc/system.conf`).
    pub conf: Option<PathBuf>,
    /// Slot class of the A/B pair.
    pub class: String,
    /// Where the bundle is written before `rauc install` (needs room for a whole
    /// bundle: not a small tmpfs).
    pub work_dir: PathBuf,
    /// Where the trial marker `rauc-try.json` lives (persistent).
    pub state_dir: PathBuf,
    /// `DBUS_SYSTEM_BUS_ADDRESS` for the `rauc` processes (tests run a private bus);
    /// `None` inherits the environment.
    pub dbus_address: Option<String>,
}

impl Default for RaucConfig {
    fn default() -> Self {
        RaucConfig {
            program: "rauc".into(),
            conf: None,
            class: "rootfs".into(),
            work_dir: "/var/lib/braid/ota".into(),
            state_dir: "/var/lib/braid/ota".into(),
            dbus_address: None,
        }
    }
}

/// `rauc status --output-format=json` (1.8). Unknown fields are ignored: this is
/// another program's output and grows between versions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct RaucStatus {
    pub compatible: String,
    #[serde(default)]
    pub variant: Option<String>,
    /// Bootname of the booted slot.
    pub booted: Option<String>,
    /// Name of the primary slot (`rootfs.1`), if the bootloader reports one.
    pub boot_primary: Option<String>,
    /// One single-entry map per slot: name -> slot.
    pub slots: Vec<BTreeMap<String, RaucSlot>>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct RaucSlot {
    pub class: String,
    pub device: String,
    #[serde(rename = "type", default)]
    pub slot_type: Option<String>,
    #[serde(default)]
    pub bootname: Option<String>,
    /// `booted`, `active` or `inactive`.
    pub state: String,
    /// `good` or `bad`, from the bootloader.
    #[serde(default)]
    pub boot_status: Option<String>,
    /// With `--detailed`.
    #[serde(default)]
    pub slot_status: Option<RaucSlotStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct RaucSlotStatus {
    #[serde(default)]
    pub bundle: Option<RaucBundleInfo>,
    #[serde(default)]
    pub status: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct RaucBundleInfo {
    #[serde(default)]
    pub compatible: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
}

impl RaucStatus {
    pub fn parse(json: &[u8]) -> Result<RaucStatus, SlotError> {
        serde_json::from_slice(json).map_err(|e| backend(format!("rauc status JSON: {e}")))
    }

    /// The slot named `name` (`rootfs.0`).
    pub fn slot(&self, name: &str) -> Option<&RaucSlot> {
        self.slots.iter().find_map(|m| m.get(name))
    }

    /// A/B view of the pair of class `class`: booted, primary, versions.
    pub fn to_slot_status(&self, class: &str) -> Result<SlotStatus, SlotError> {
        let name = |s: Slot| slot_name(class, s);
        let pair = [Slot::A, Slot::B].map(|s| self.slot(&name(s)));
        let [Some(a), Some(b)] = pair else {
            return Err(backend(format!(
                "rauc has no slots {} and {}",
                name(Slot::A),
                name(Slot::B)
            )));
        };
        let by_bootname = |bn: &str| {
            [(Slot::A, a), (Slot::B, b)]
                .into_iter()
                .find(|(_, s)| s.bootname.as_deref() == Some(bn))
                .map(|(x, _)| x)
        };
        let booted = self
            .booted
            .as_deref()
            .and_then(by_bootname)
            .or(if a.state == "booted" {
                Some(Slot::A)
            } else if b.state == "booted" {
                Some(Slot::B)
            } else {
                None
            })
            .ok_or_else(|| {
                backend(format!(
                    "rauc: booted slot {:?} is not {} or {}",
                    self.booted,
                    name(Slot::A),
                    name(Slot::B)
                ))
            })?;
        let primary = match self.boot_primary.as_deref() {
            Some(p) if p == name(Slot::A) => Slot::A,
            Some(p) if p == name(Slot::B) => Slot::B,
            _ => booted,
        };
        let version = |s: &RaucSlot| {
            s.slot_status
                .as_ref()
                .and_then(|st| st.bundle.as_ref())
                .and_then(|bu| bu.version.clone())
        };
        Ok(SlotStatus {
            booted,
            primary,
            try_next: (primary != booted).then_some(primary),
            booted_unconfirmed: false,
            versions: (version(a), version(b)),
        })
    }
}

fn slot_name(class: &str, s: Slot) -> String {
    match s {
        Slot::A => format!("{class}.0"),
        Slot::B => format!("{class}.1"),
    }
}

/// The trial marker, `rauc-try.json`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Trial {
    slot: Slot,
}

const TRIAL_FILE: &str = "rauc-try.json";

/// A/B slots managed by RAUC (see the module docs).
#[derive(Debug, Clone)]
pub struct RaucSlots {
    cfg: RaucConfig,
}

impl RaucSlots {
    pub fn new(cfg: RaucConfig) -> RaucSlots {
        RaucSlots { cfg }
    }

    pub fn config(&self) -> &RaucConfig {
        &self.cfg
    }

    /// Runs `rauc ARGS`; a failure carries rauc's exit code, stderr and the end of
    /// its stdout (`rauc install` reports `LastError:` there).
    fn run(&self, args: &[&str]) -> Result<Vec<u8>, SlotError> {
        let mut cmd = Command::new(&self.cfg.program);
        if let Some(conf) = &self.cfg.conf {
            cmd.arg(format!("--conf={}", conf.display()));
        }
        cmd.args(args);
        if let Some(addr) = &self.cfg.dbus_address {
            cmd.env("DBUS_SYSTEM_BUS_ADDRESS", addr);
        }
        let out = cmd
            .output()
            .map_err(|e| backend(format!("running {}: {e}", self.cfg.program.display())))?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        Err(backend(format!(
            "rauc {}: {}: {}{}",
            args.join(" "),
            out.status,
            tail(stderr.trim(), 2000),
            match tail(stdout.trim(), 1000) {
                "" => String::new(),
                t => format!(" (stdout: {t})"),
            }
        )))
    }

    /// RAUC's status, parsed.
    pub fn rauc_status(&self) -> Result<RaucStatus, SlotError> {
        RaucStatus::parse(&self.run(&["status", "--detailed", "--output-format=json"])?)
    }

    fn trial(&self) -> Result<Option<Slot>, SlotError> {
        match fs::read(self.cfg.state_dir.join(TRIAL_FILE)) {
            Ok(d) => serde_json::from_slice::<Trial>(&d)
                .map(|t| Some(t.slot))
                .map_err(|e| backend(format!("{TRIAL_FILE}: {e}"))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn clear_trial(&self) -> Result<(), SlotError> {
        match fs::remove_file(self.cfg.state_dir.join(TRIAL_FILE)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut i = s.len() - max;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

impl SlotBackend for RaucSlots {
    fn status(&self) -> Result<SlotStatus, SlotError> {
        let mut st = self.rauc_status()?.to_slot_status(&self.cfg.class)?;
        st.booted_unconfirmed = self.trial()? == Some(st.booted);
        Ok(st)
    }

    fn install(
        &self,
        payload: &mut dyn Read,
        manifest: &Manifest,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Slot, SlotError> {
        if manifest.kind != PayloadKind::Rauc {
            return Err(backend(format!(
                "RAUC installs RAUC bundles, not {:?} payloads",
                manifest.kind
            )));
        }
        let st = self.status()?;
        if st.booted_unconfirmed {
            return Err(backend(
                "the booted slot is on trial (not confirmed); the other slot is the fallback",
            ));
        }
        fs::create_dir_all(&self.cfg.work_dir)?;
        atomic::cleanup_stale_temps(&self.cfg.work_dir)?;
        let path = self
            .cfg
            .work_dir
            .join(format!(".bundle.raucb.tmp.{}.0", std::process::id()));
        let _ = fs::remove_file(&path);
        let r = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            copy_checked(payload, &mut f, manifest, progress)?;
            drop(f);
            self.run(&["install", &path.to_string_lossy()])
        })();
        let _ = fs::remove_file(&path);
        r?;
        Ok(st.booted.other())
    }

    fn set_boot_once(&self, slot: Slot) -> Result<(), SlotError> {
        let name = slot_name(&self.cfg.class, slot);
        self.run(&["status", "mark-active", &name])?;
        let st = self.rauc_status()?.to_slot_status(&self.cfg.class)?;
        if slot == st.booted {
            return self.clear_trial();
        }
        fs::create_dir_all(&self.cfg.state_dir)?;
        let json = serde_json::to_vec(&Trial { slot }).map_err(|e| backend(e.to_string()))?;
        atomic::write_atomic_mode(&self.cfg.state_dir.join(TRIAL_FILE), &json, 0o644)?;
        Ok(())
    }

    fn mark_good(&self) -> Result<(), SlotError> {
        self.run(&["status", "mark-good", "booted"])?;
        self.clear_trial()
    }

    fn mark_bad(&self) -> Result<(), SlotError> {
        self.run(&["status", "mark-bad", "booted"])?;
        // Explicit fall-back, whatever the bootloader's counters say.
        self.run(&["status", "mark-active", "other"])?;
        self.clear_trial()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from rauc 1.8 (`rauc status --detailed --output-format=json`, a
    /// file-backed test system booted from A, after installing 1.2.3 into B with
    /// `activate-installed` on).
    const DETAILED: &str = r#"{"compatible":"braid-test","variant":"","booted":"A","boot_primary":"rootfs.1","slots":[{"rootfs.1":{"class":"rootfs","device":"/tmp/otaslots-rauc/b.img","type":"raw","bootname":"B","state":"inactive","parent":null,"mountpoint":null,"boot_status":"bad","slot_status":{"bundle":{"compatible":"braid-test","version":"1.2.3"},"checksum":{"sha256":"b68dab18c7fb78c89033db68c429c41dd5edac298e3f2c8c15ed10588da8de74","size":1048576},"installed":{"timestamp":"2026-11-28T08:52:27Z","count":1},"activated":{"timestamp":"2026-11-28T08:52:27Z","count":2},"status":"ok"}}},{"rootfs.0":{"class":"rootfs","device":"/tmp/otaslots-rauc/a.img","type":"raw","bootname":"A","state":"booted","parent":null,"mountpoint":null,"boot_status":"bad","slot_status":{"bundle":{"compatible":null}}}}]}"#;

    /// Captured from rauc 1.8 (`rauc status --output-format=json`), fresh system.
    const PLAIN: &str = r#"{"compatible":"braid-test","variant":"","booted":"A","boot_primary":"rootfs.0","slots":[{"rootfs.1":{"class":"rootfs","device":"/tmp/otaslots-rauc/b.img","type":"raw","bootname":"B","state":"inactive","parent":null,"mountpoint":null,"boot_status":"good"}},{"rootfs.0":{"class":"rootfs","device":"/tmp/otaslots-rauc/a.img","type":"raw","bootname":"A","state":"booted","parent":null,"mountpoint":null,"boot_status":"good"}}]}"#;

    #[test]
    fn parses_detailed_status() {
        let s = RaucStatus::parse(DETAILED.as_bytes()).unwrap();
        assert_eq!(s.compatible, "braid-test");
        assert_eq!(s.slot("rootfs.1").unwrap().bootname.as_deref(), Some("B"));
        assert_eq!(
            s.slot("rootfs.0").unwrap().boot_status.as_deref(),
            Some("bad")
        );
        let st = s.to_slot_status("rootfs").unwrap();
        assert_eq!(st.booted, Slot::A);
        assert_eq!(st.primary, Slot::B);
        assert_eq!(st.try_next, Some(Slot::B));
        assert_eq!(st.versions, (None, Some("1.2.3".into())));
    }

    #[test]
    fn parses_plain_status() {
        let st = RaucStatus::parse(PLAIN.as_bytes())
            .unwrap()
            .to_slot_status("rootfs")
            .unwrap();
        assert_eq!(st.booted, Slot::A);
        assert_eq!(st.primary, Slot::A);
        assert_eq!(st.try_next, None);
        assert_eq!(st.versions, (None, None));
    }

    #[test]
    fn wrong_class_and_junk_are_errors() {
        let s = RaucStatus::parse(PLAIN.as_bytes()).unwrap();
        assert!(s.to_slot_status("appfs").is_err());
        for junk in ["", "{", "[]", "{\"slots\":3}", "null"] {
            assert!(RaucStatus::parse(junk.as_bytes()).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn booted_by_state_when_bootname_unknown() {
        let j = PLAIN.replace("\"booted\":\"A\"", "\"booted\":\"/dev/root\"");
        let st = RaucStatus::parse(j.as_bytes())
            .unwrap()
            .to_slot_status("rootfs")
            .unwrap();
        assert_eq!(st.booted, Slot::A);
    }

    #[test]
    fn tail_keeps_char_boundaries() {
        assert_eq!(tail("abc", 5), "abc");
        assert_eq!(tail("abcdef", 2), "ef");
        assert_eq!(tail("aé", 1), "");
    }

    #[test]
    fn missing_program_is_a_backend_error() {
        let r = RaucSlots::new(RaucConfig {
            program: "/nonexistent/rauc".into(),
            ..RaucConfig::default()
        });
        let e = r.status().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/rauc"), "{e}");
    }
}
