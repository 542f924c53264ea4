//! A/B slots (`braid::ota::slots`): the boot cycle of directory slots, installs
//! killed with SIGKILL at random points, and RAUC 1.8 driven for real.
//!
//! Kill test: the child is this test binary re-run with `BRAID_OTA_SLOTS_CHILD=<root>`
//! so that [`child_install`] installs a 16 MiB payload instead of returning; the
//! parent SIGKILLs it after a seeded random delay, "reboots" (opens the slots and
//! calls `boot()`), and checks the invariants. As in `tests/atomic_write.rs`, SIGKILL
//! keeps the page cache, so this proves the write / rename protocol, not durability
//! across a power cut (that rests on the fsyncs).
//!
//! RAUC test: needs `rauc`, `mksquashfs`, `openssl` and `dbus-daemon` (`make deps`)
//! and root (RAUC loop-mounts the bundle). It fails, not skips, when they are absent.
//! What it can and cannot exercise here is written down in docs/ota.md ("RAUC").

mod common;

use braid::ota::bundle::{Manifest, PayloadKind};
use braid::ota::slots::{
    BootState, DirSlots, RaucConfig, RaucSlots, Slot, SlotBackend, BOOT_FILE, INSTALL_TMP,
};
use braid::system::TempDir;
use common::{have, private_system_bus, run, wait_for, Procs};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "BRAID_OTA_SLOTS_CHILD";
const CHILD_VERSION_ENV: &str = "BRAID_OTA_SLOTS_VERSION";
const KILL_PAYLOAD: usize = 16 << 20;

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn manifest(version: &str, kind: PayloadKind, data: &[u8]) -> Manifest {
    Manifest {
        version: version.into(),
        compatible: "braid-test".into(),
        kind,
        payload_size: data.len() as u64,
        payload_sha256: sha(data),
    }
}

fn install(s: &dyn SlotBackend, version: &str, data: &[u8]) -> Slot {
    s.install(
        &mut &data[..],
        &manifest(version, PayloadKind::Binary, data),
        &mut |_| {},
    )
    .unwrap()
}

fn payload(version: &str, len: usize) -> Vec<u8> {
    let mut seed = [0u8; 32];
    seed.copy_from_slice(&Sha256::digest(version.as_bytes()));
    let mut v = vec![0u8; len];
    StdRng::from_seed(seed).fill_bytes(&mut v);
    v
}

#[test]
fn update_boot_once_confirm_is_permanent() {
    let d = TempDir::new("ota-slots").unwrap();
    let s = DirSlots::open(d.path()).unwrap();
    assert_eq!(s.boot().unwrap(), Slot::A);
    let new = payload("2.0.0", 100_000);
    assert_eq!(install(&s, "2.0.0", &new), Slot::B);
    // Installed but not selected: still A.
    assert_eq!(s.boot().unwrap(), Slot::A);
    s.set_boot_once(Slot::B).unwrap();
    assert_eq!(s.boot().unwrap(), Slot::B);
    let st = s.status().unwrap();
    assert!(st.booted_unconfirmed);
    assert_eq!((st.booted, st.primary), (Slot::B, Slot::A));
    s.mark_good().unwrap();
    for _ in 0..5 {
        assert_eq!(s.boot().unwrap(), Slot::B);
        let st = s.status().unwrap();
        assert_eq!((st.booted, st.primary), (Slot::B, Slot::B));
        assert!(!st.booted_unconfirmed);
    }
    let path = s.payload_path(Slot::B).unwrap().unwrap();
    assert_eq!(std::fs::read(path).unwrap(), new);
    // Survives reopening (the daemon restarting).
    drop(s);
    let s = DirSlots::open(d.path()).unwrap();
    assert_eq!(s.boot().unwrap(), Slot::B);
    assert_eq!(s.status().unwrap().versions.1.as_deref(), Some("2.0.0"));
}

#[test]
fn unconfirmed_try_returns_to_old_slot() {
    let d = TempDir::new("ota-slots").unwrap();
    let s = DirSlots::open(d.path()).unwrap();
    install(&s, "2.0.0", b"v2");
    s.set_boot_once(Slot::B).unwrap();
    assert_eq!(s.boot().unwrap(), Slot::B);
    // The new system hangs, the watchdog resets: no confirm.
    assert_eq!(s.boot().unwrap(), Slot::A);
    assert_eq!(s.boot().unwrap(), Slot::A);
    let st = s.status().unwrap();
    assert_eq!(
        (st.booted, st.primary, st.try_next),
        (Slot::A, Slot::A, None)
    );
    assert!(!st.booted_unconfirmed);
}

#[test]
fn mark_bad_returns_to_old_slot() {
    let d = TempDir::new("ota-slots").unwrap();
    let s = DirSlots::open(d.path()).unwrap();
    install(&s, "2.0.0", b"v2");
    s.set_boot_once(Slot::B).unwrap();
    assert_eq!(s.boot().unwrap(), Slot::B);
    s.mark_bad().unwrap();
    assert_eq!(s.status().unwrap().primary, Slot::A);
    assert_eq!(s.boot().unwrap(), Slot::A);
    assert_eq!(s.boot().unwrap(), Slot::A);
    // A bad slot is not tried again until reinstalled.
    assert!(s.set_boot_once(Slot::B).is_err());
    install(&s, "2.0.1", b"v2.0.1");
    s.set_boot_once(Slot::B).unwrap();
    assert_eq!(s.boot().unwrap(), Slot::B);
}

#[test]
fn boot_file_shape() {
    let d = TempDir::new("ota-slots").unwrap();
    let s = DirSlots::open(d.path()).unwrap();
    install(&s, "2.0.0", b"v2");
    s.set_boot_once(Slot::B).unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join(BOOT_FILE)).unwrap()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "primary": "a",
            "try_once": "b",
            "booted": "a",
            "booted_confirmed": true,
            "bootable": {"a": true, "b": true}
        })
    );
    let st = serde_json::to_value(s.status().unwrap()).unwrap();
    assert_eq!(
        st,
        serde_json::json!({
            "booted": "a",
            "primary": "a",
            "try_next": "b",
            "booted_unconfirmed": false,
            "versions": [null, "2.0.0"]
        })
    );
}

// ---------------------------------------------------------------------------
// kill -9 during install
// ---------------------------------------------------------------------------

/// In the child: installs `KILL_PAYLOAD` bytes of version `$BRAID_OTA_SLOTS_VERSION`
/// into the other slot of `$BRAID_OTA_SLOTS_CHILD`, after printing `ready`.
/// Otherwise a no-op.
#[test]
fn child_install() {
    let Ok(root) = std::env::var(CHILD_ENV) else {
        return;
    };
    let version = std::env::var(CHILD_VERSION_ENV).unwrap();
    let data = payload(&version, KILL_PAYLOAD);
    let m = manifest(&version, PayloadKind::Binary, &data);
    let s = DirSlots::open(&root).unwrap();
    // libtest has printed `test child_install ... ` without a newline before this.
    println!("ready");
    s.install(&mut &data[..], &m, &mut |_| {}).unwrap();
}

/// The child, and its stdout (kept open: libtest prints after the test, and a
/// closed pipe would fail the child).
fn spawn_child(root: &Path, version: &str) -> (Child, impl Iterator<Item = String>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_install",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CHILD_ENV, root)
        .env(CHILD_VERSION_ENV, version)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|l| l.unwrap());
    assert!(lines.any(|l| l.ends_with("ready")), "child never ready");
    (child, lines)
}

#[test]
fn killed_install_leaves_old_slot_booting() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    const KILLS: usize = 40;
    let d = TempDir::new("ota-slots-kill").unwrap();
    let root = d.path();
    // The running system: version 1 in B, confirmed. Updates go to A.
    let old = payload("1.0.0", 200_000);
    {
        let s = DirSlots::open(root).unwrap();
        install(&s, "1.0.0", &old);
        s.set_boot_once(Slot::B).unwrap();
        assert_eq!(s.boot().unwrap(), Slot::B);
        s.mark_good().unwrap();
    }

    // How long one install takes here (from `ready` to the child's exit; the median
    // of three), for the range of kill delays.
    let mut runs = Vec::new();
    for n in 0..3 {
        let (mut child, rest) = spawn_child(root, &format!("2.0.99{n}"));
        let t0 = Instant::now();
        let rest: Vec<String> = rest.collect();
        assert!(child.wait().unwrap().success(), "{rest:?}");
        runs.push(t0.elapsed());
    }
    runs.sort();
    let full = runs[1];
    {
        let s = DirSlots::open(root).unwrap();
        assert_eq!(s.status().unwrap().versions.0.as_deref(), Some("2.0.992"));
        assert_eq!(
            s.boot().unwrap(),
            Slot::B,
            "an install alone changes no boot"
        );
    }

    let mut rng = StdRng::seed_from_u64(0x0ab5_1075);
    let max_us = (full.as_micros() as u64).max(1_000);
    let (mut mid_write, mut complete, mut unbootable) = (0, 0, 0);
    for i in 0..KILLS {
        let version = format!("2.0.{i}");
        let (mut child, _out) = spawn_child(root, &version);
        std::thread::sleep(Duration::from_micros(rng.gen_range(0..max_us)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        // boot.json is whole: old or new, never torn.
        let raw = std::fs::read(root.join(BOOT_FILE)).unwrap();
        let st: BootState = serde_json::from_slice(&raw)
            .unwrap_or_else(|e| panic!("kill {i}: boot.json torn ({e}): {raw:?}"));
        assert_eq!(st.primary, Slot::B, "kill {i}");
        assert_eq!(st.try_once, None, "kill {i}");
        assert!(st.bootable.b, "kill {i}");
        if root.join("a").join(INSTALL_TMP).exists() {
            mid_write += 1;
        }

        // Power-on: the old slot boots, the other is never selected.
        let s = DirSlots::open(root).unwrap();
        assert!(!root.join("a").join(INSTALL_TMP).exists(), "kill {i}");
        for _ in 0..2 {
            assert_eq!(s.boot().unwrap(), Slot::B, "kill {i}");
        }
        let p = s.payload_path(Slot::B).unwrap().unwrap();
        assert_eq!(
            std::fs::read(p).unwrap(),
            old,
            "kill {i}: booted slot changed"
        );

        // The other slot: unbootable, or complete and whole.
        let st = s.state().unwrap();
        if st.bootable.a {
            let info = s
                .slot_info(Slot::A)
                .unwrap()
                .expect("bootable but incomplete");
            let data = std::fs::read(s.slot_dir(Slot::A).join(&info.payload)).unwrap();
            assert_eq!(data.len() as u64, info.size, "kill {i}");
            assert_eq!(sha(&data), info.sha256, "kill {i}");
            assert_eq!(data, payload(&info.version, KILL_PAYLOAD), "kill {i}");
            complete += 1;
        } else {
            unbootable += 1;
        }
    }
    eprintln!(
        "{KILLS} kills (full install {full:?}): {mid_write} mid-write, \
         {unbootable} left A unbootable, {complete} left A complete"
    );
    assert!(mid_write >= 10, "only {mid_write} kills landed mid-write");

    // After all that, an update still goes through.
    let s = DirSlots::open(root).unwrap();
    let new = payload("3.0.0", 300_000);
    assert_eq!(install(&s, "3.0.0", &new), Slot::A);
    s.set_boot_once(Slot::A).unwrap();
    assert_eq!(s.boot().unwrap(), Slot::A);
    s.mark_good().unwrap();
    assert_eq!(s.boot().unwrap(), Slot::A);
    let p = s.payload_path(Slot::A).unwrap().unwrap();
    assert_eq!(std::fs::read(p).unwrap(), new);
}

// ---------------------------------------------------------------------------
// RAUC 1.8, for real
// ---------------------------------------------------------------------------

/// A CA, and a signing key + certificate issued by it (openssl CLI).
fn make_pki(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = dir.join(format!("{name}-ca.key.pem"));
    let ca = dir.join(format!("{name}-ca.cert.pem"));
    let key = dir.join(format!("{name}-signing.key.pem"));
    let csr = dir.join(format!("{name}-signing.csr"));
    let cert = dir.join(format!("{name}-signing.cert.pem"));
    let ext = dir.join(format!("{name}-ext.cnf"));
    std::fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n",
    )
    .unwrap();
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec"])
        .args([
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name} test CA"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
            "-keyout",
        ])
        .arg(&ca_key)
        .arg("-out")
        .arg(&ca));
    run(Command::new("openssl")
        .args(["req", "-new", "-newkey", "ec"])
        .args(["-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-subj", &format!("/CN={name} bundle signer"), "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&csr));
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(&ca)
        .arg("-CAkey")
        .arg(&ca_key)
        .args(["-CAcreateserial", "-extfile"])
        .arg(&ext)
        .arg("-out")
        .arg(&cert));
    (ca, cert, key)
}

/// The custom bootloader backend (RAUC's `bootloader=custom`), modelled on RAUC's
/// U-Boot integration with one boot attempt: per slot a count of attempts left
/// (`left.X`), a preferred slot (`primary`). `set-primary X` makes X preferred with
/// one attempt; `set-state X good` gives it its attempt back, `bad` takes it away;
/// `get-primary` is the first of (preferred, other) with an attempt left, as U-Boot's
/// `BOOT_ORDER` walk. Every call is logged. [`power_on`] is the boot script.
fn write_boot_script(dir: &Path) -> PathBuf {
    let state = dir.join("bootloader");
    std::fs::create_dir_all(&state).unwrap();
    let script = dir.join("bootloader.sh");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
S='{}'
echo "$*" >> "$S/log"
left() {{ cat "$S/left.$1" 2>/dev/null || echo 1; }}
other() {{ if [ "$1" = A ]; then echo B; else echo A; fi; }}
case "$1" in
  get-primary)
    p=$(cat "$S/primary" 2>/dev/null || echo A)
    if [ "$(left "$p")" -gt 0 ]; then echo "$p"; else other "$p"; fi ;;
  set-primary) echo "$2" > "$S/primary"; echo 1 > "$S/left.$2" ;;
  get-state) if [ "$(left "$2")" -gt 0 ]; then echo good; else echo bad; fi ;;
  set-state) if [ "$3" = good ]; then echo 1; else echo 0; fi > "$S/left.$2" ;;
  *) exit 1 ;;
esac
"#,
            state.display()
        ),
    )
    .unwrap();
    run(Command::new("chmod").arg("755").arg(&script));
    script
}

/// The boot script of the model bootloader of [`write_boot_script`]: boots the
/// preferred slot if it has an attempt left (using it up), else the other.
fn power_on(dir: &Path) -> &'static str {
    let st = dir.join("bootloader");
    let read = |f: &str| std::fs::read_to_string(st.join(f)).ok();
    let left =
        |x: &str| -> u32 { read(&format!("left.{x}")).map_or(1, |v| v.trim().parse().unwrap()) };
    let primary = if read("primary").as_deref().map(str::trim) == Some("B") {
        "B"
    } else {
        "A"
    };
    let other = if primary == "A" { "B" } else { "A" };
    for x in [primary, other] {
        let n = left(x);
        if n > 0 {
            std::fs::write(st.join(format!("left.{x}")), format!("{}\n", n - 1)).unwrap();
            return x;
        }
    }
    panic!(
        "no slot has an attempt left; bootloader log:\n{}",
        boot_log(dir)
    )
}

/// Power cycle: the service stops, the bootloader picks a slot, the service starts
/// with that slot as booted (standing in for `rauc.slot=` on the kernel command line).
fn reboot(procs: &mut Procs, dir: &Path, conf: &Path, bus: &str, slots: &RaucSlots) -> Slot {
    // procs.0 is [dbus-daemon] or [dbus-daemon, rauc service].
    if procs.0.len() > 1 {
        let mut old = procs.0.pop().unwrap();
        old.kill().unwrap();
        old.wait().unwrap();
    }
    let booted = power_on(dir);
    procs.0.push(start_service(conf, bus, booted));
    let want = if booted == "A" { Slot::A } else { Slot::B };
    wait_for("rauc service", || {
        slots.status().map(|s| s.booted == want).unwrap_or(false)
    });
    want
}

fn start_service(conf: &Path, bus: &str, booted: &str) -> Child {
    Command::new("rauc")
        .arg(format!("--conf={}", conf.display()))
        .args(["service", &format!("--override-boot-slot={booted}")])
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn boot_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("bootloader").join("log")).unwrap_or_default()
}

#[test]
fn rauc_for_real() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let missing: Vec<_> = ["rauc", "mksquashfs", "openssl", "dbus-daemon"]
        .into_iter()
        .filter(|t| !have(t))
        .collect();
    assert!(
        missing.is_empty(),
        "missing {missing:?}: run `make deps` (apt-get install rauc squashfs-tools openssl dbus-daemon)"
    );
    let version = run(Command::new("rauc").arg("--version"));
    eprintln!("{}", version.trim());

    let d = TempDir::new("ota-rauc").unwrap();
    let dir = d.path();
    let (ca, cert, key) = make_pki(dir, "braid");
    let (_, rogue_cert, rogue_key) = make_pki(dir, "rogue");

    // The bundle: one raw image for the rootfs slot class.
    let image = payload("rauc-image", 1 << 20);
    let content = dir.join("content");
    std::fs::create_dir(&content).unwrap();
    std::fs::write(content.join("rootfs.img"), &image).unwrap();
    std::fs::write(
        content.join("manifest.raucm"),
        "[update]\ncompatible=braid-test\nversion=1.2.3\n\n\
         [bundle]\nformat=plain\n\n[image.rootfs]\nfilename=rootfs.img\n",
    )
    .unwrap();
    let bundle = dir.join("update.raucb");
    run(Command::new("rauc")
        .arg("bundle")
        .arg(format!("--cert={}", cert.display()))
        .arg(format!("--key={}", key.display()))
        .arg(&content)
        .arg(&bundle));
    let rogue = dir.join("rogue.raucb");
    run(Command::new("rauc")
        .arg("bundle")
        .arg(format!("--cert={}", rogue_cert.display()))
        .arg(format!("--key={}", rogue_key.display()))
        .arg(&content)
        .arg(&rogue));

    // `rauc info` checks the signature chain against the keyring (our CA).
    let info = run(Command::new("rauc")
        .arg(format!("--keyring={}", ca.display()))
        .arg("info")
        .arg(&bundle));
    assert!(info.contains("1.2.3"), "{info}");
    let out = Command::new("rauc")
        .arg(format!("--keyring={}", ca.display()))
        .arg("info")
        .arg(&rogue)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a bundle from another CA verified");

    // The system: two 4 MiB image files as raw slots, the custom bootloader script.
    for s in ["a.img", "b.img"] {
        std::fs::write(dir.join(s), vec![0u8; 4 << 20]).unwrap();
    }
    let script = write_boot_script(dir);
    let conf = dir.join("system.conf");
    std::fs::write(
        &conf,
        format!(
            "[system]\ncompatible=braid-test\nbootloader=custom\nactivate-installed=false\n\
             data-directory={d}/rauc-data\n\n\
             [handlers]\nbootloader-custom-backend={script}\n\n\
             [keyring]\npath={ca}\n\n\
             [slot.rootfs.0]\ndevice={d}/a.img\ntype=raw\nbootname=A\n\n\
             [slot.rootfs.1]\ndevice={d}/b.img\ntype=raw\nbootname=B\n",
            d = dir.display(),
            script = script.display(),
            ca = ca.display()
        ),
    )
    .unwrap();
    std::fs::create_dir(dir.join("rauc-data")).unwrap();

    // A private system bus that lets everyone own and call everything.
    let (daemon, bus) = private_system_bus(dir);
    let mut procs = Procs(vec![daemon]);

    let slots = RaucSlots::new(RaucConfig {
        program: "rauc".into(),
        conf: Some(conf.clone()),
        class: "rootfs".into(),
        work_dir: dir.join("work"),
        state_dir: dir.join("state"),
        dbus_address: Some(bus.clone()),
    });
    assert_eq!(reboot(&mut procs, dir, &conf, &bus, &slots), Slot::A);
    // A healthy boot is confirmed on every boot (RAUC's rauc-mark-good.service does
    // the same): with boot counting an unconfirmed boot uses up an attempt.
    slots.mark_good().unwrap();
    let st = slots.status().unwrap();
    assert_eq!(
        (st.booted, st.primary, st.try_next),
        (Slot::A, Slot::A, None)
    );
    assert!(!st.booted_unconfirmed);
    assert_eq!(st.versions, (None, None));

    // A bundle from another CA is refused by the service, B untouched.
    let rogue_data = std::fs::read(&rogue).unwrap();
    let e = slots
        .install(
            &mut &rogue_data[..],
            &manifest("1.2.3", PayloadKind::Rauc, &rogue_data),
            &mut |_| {},
        )
        .unwrap_err()
        .to_string();
    eprintln!("rogue bundle: {e}");
    assert!(e.contains("rauc install"), "{e}");
    assert_eq!(
        std::fs::read(dir.join("b.img")).unwrap(),
        vec![0u8; 4 << 20]
    );

    // Install through the trait: the payload goes to a temp file, `rauc install`.
    let data = std::fs::read(&bundle).unwrap();
    let mut last = 0;
    let slot = slots
        .install(
            &mut &data[..],
            &manifest("1.2.3", PayloadKind::Rauc, &data),
            &mut |n| last = n,
        )
        .unwrap();
    assert_eq!(slot, Slot::B);
    assert_eq!(last, data.len() as u64);
    let b = std::fs::read(dir.join("b.img")).unwrap();
    assert_eq!(&b[..image.len()], &image[..], "rauc wrote the image into B");
    assert_eq!(
        std::fs::read(dir.join("a.img")).unwrap(),
        vec![0u8; 4 << 20]
    );
    let st = slots.status().unwrap();
    assert_eq!(st.versions, (None, Some("1.2.3".into())));
    // activate-installed=false: the install alone changes no boot target.
    assert_eq!(
        (st.booted, st.primary, st.try_next),
        (Slot::A, Slot::A, None)
    );
    assert!(
        boot_log(dir).contains("set-state B bad"),
        "{}",
        boot_log(dir)
    );
    assert!(!std::fs::read_dir(dir.join("work")).unwrap().any(|_| true));

    slots.set_boot_once(Slot::B).unwrap();
    assert!(boot_log(dir).contains("set-primary B"), "{}", boot_log(dir));
    let st = slots.status().unwrap();
    assert_eq!(
        (st.booted, st.primary, st.try_next),
        (Slot::A, Slot::B, Some(Slot::B))
    );

    // Reboot: B is tried.
    assert_eq!(reboot(&mut procs, dir, &conf, &bus, &slots), Slot::B);
    let st = slots.status().unwrap();
    assert!(st.booted_unconfirmed);
    // On trial, A (the way back) must not be written.
    let e = slots
        .install(
            &mut &data[..],
            &manifest("1.2.3", PayloadKind::Rauc, &data),
            &mut |_| {},
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("trial"), "{e}");

    // No confirmation (the new system hung): the next boot is A again.
    assert_eq!(reboot(&mut procs, dir, &conf, &bus, &slots), Slot::A);
    let st = slots.status().unwrap();
    assert_eq!(
        (st.booted, st.primary, st.try_next),
        (Slot::A, Slot::A, None)
    );
    assert!(!st.booted_unconfirmed);
    slots.mark_good().unwrap();
    assert_eq!(reboot(&mut procs, dir, &conf, &bus, &slots), Slot::A);
    slots.mark_good().unwrap();

    // Try again, confirm: B stays, boot after boot.
    slots.set_boot_once(Slot::B).unwrap();
    assert_eq!(reboot(&mut procs, dir, &conf, &bus, &slots), Slot::B);
    slots.mark_good().unwrap();
    assert!(
        boot_log(dir).contains("set-state B good"),
        "{}",
        boot_log(dir)
    );
    let st = slots.status().unwrap();
    assert!(!st.booted_unconfirmed);
    assert_eq!((st.booted, st.primary), (Slot::B, Slot::B));
    for _ in 0..2 {
        assert_eq!(reboot(&mut procs, dir, &conf, &bus, &slots), Slot::B);
        slots.mark_good().unwrap();
    }

    // The failure path: mark-bad booted, mark-active other; the next boot is A.
    slots.mark_bad().unwrap();
    let log = boot_log(dir);
    assert!(log.contains("set-state B bad"), "{log}");
    assert!(log.contains("set-primary A"), "{log}");
    assert_eq!(slots.status().unwrap().primary, Slot::A);
    assert_eq!(reboot(&mut procs, dir, &conf, &bus, &slots), Slot::A);
    slots.mark_good().unwrap();
    assert_eq!(reboot(&mut procs, dir, &conf, &bus, &slots), Slot::A);

    // Wrong payload kind is refused before anything runs.
    assert!(slots
        .install(
            &mut &b"x"[..],
            &manifest("1.2.3", PayloadKind::Binary, b"x"),
            &mut |_| {}
        )
        .is_err());
}
