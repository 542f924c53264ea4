//! The SD-card image recipe (`image/`), the CI-sized part: `image/build.sh` run for
//! real on a reduced root (Braid's overlay on an empty directory, stand-in files
//! where Debian's kernel and GPU firmware would be, the host's `braid` binary), then
//! its partitions, GPT disk image, RAUC bundle and `check`; the bundle installed by
//! the real RAUC 1.8 into file-backed slots laid out as the image's system.conf, with
//! the image's bundle hook and its tryboot backend, booted through a model of the
//! Raspberry Pi bootloader's autoboot.txt, by `rauc install` and by `braid ota
//! install` of the braid bundle wrapping it (then `braid ota confirm`); the
//! first-boot script on a temporary tree. The full image (`make image`: Debian packages under qemu) is too slow for
//! CI; its last run is in docs/BENCHMARKS.md.
//!
//! Needs root (RAUC loop-mounts the bundle and the vfat slot for the hook), `rauc`,
//! `mksquashfs`, `dbus-daemon`, `mkfs.vfat`, `mtools`, `sfdisk`, `jq`, `debugfs`
//! (`make deps`); fails rather than skips without them.

mod common;

use braid::system::TempDir;
use common::{have, private_system_bus, run, wait_for, Procs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const BRAID: &str = env!("CARGO_BIN_EXE_braid");
const UUID_A: &str = "0b7f3b8e-2f3c-4d59-9a38-6a1d2b3c4d5a";
const UUID_B: &str = "0b7f3b8e-2f3c-4d59-9a38-6a1d2b3c4d5b";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tools() {
    let missing: Vec<_> = [
        "rauc",
        "mksquashfs",
        "dbus-daemon",
        "mkfs.vfat",
        "mcopy",
        "sfdisk",
        "jq",
        "debugfs",
        "openssl",
    ]
    .into_iter()
    .filter(|t| !have(t))
    .collect();
    assert!(
        missing.is_empty(),
        "missing {missing:?}: run `make deps` (rauc squashfs-tools dbus-daemon dosfstools mtools fdisk jq e2fsprogs openssl)"
    );
}

/// `image/build.sh ARGS` with the reduced-build environment; (success, stdout+stderr).
/// Bundles are `verity` (what the box takes) except in `out` directories named
/// `plain`: RAUC can only install those here (no device-mapper).
fn build_sh(out: &Path, keys: &Path, args: &[&str]) -> (bool, String) {
    let format = if out.ends_with("plain") {
        "plain"
    } else {
        "verity"
    };
    // The host's braid stands in for the aarch64 one, stripped (the debug build's line
    // tables would only make the slot images larger).
    let bin = out.parent().unwrap().join("braid-stripped");
    if !bin.exists() {
        run(Command::new("strip").arg("-o").arg(&bin).arg(BRAID));
    }
    let o = Command::new(repo().join("image/build.sh"))
        .args(args)
        .env("OUT", out)
        .env("KEYS", keys)
        .env("BRAID_BIN", &bin)
        .env("HOST_BRAID", BRAID)
        .env("REDUCED", "1")
        .env("BUNDLE_FORMAT", format)
        .env("CONFIG_MIB", "8")
        .env("BOOT_MIB", "8")
        .env("ROOT_MIB", "96")
        .env("DATA_MIB", "8")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

fn build_ok(out: &Path, keys: &Path, args: &[&str]) -> String {
    let (ok, text) = build_sh(out, keys, args);
    assert!(ok, "image/build.sh {args:?} failed:\n{text}");
    text
}

/// The reduced root: Braid's overlay plus stand-ins for what Debian's packages put
/// where `parts` takes the boot files from.
fn reduced_root(out: &Path, keys: &Path) -> PathBuf {
    let root = out.join("rootfs");
    std::fs::create_dir_all(&root).unwrap();
    build_ok(out, keys, &["keys"]);
    build_ok(out, keys, &["overlay", root.to_str().unwrap()]);
    let files = [
        ("usr/lib/raspi-firmware/start4.elf", "gpu firmware stand-in"),
        ("usr/lib/raspi-firmware/fixup4.dat", "fixup stand-in"),
        ("boot/vmlinuz-6.1.0-test-arm64", "kernel stand-in"),
        ("boot/initrd.img-6.1.0-test-arm64", "initrd stand-in"),
        (
            "usr/lib/linux-image-6.1.0-test-arm64/broadcom/bcm2711-rpi-4-b.dtb",
            "dtb stand-in",
        ),
        ("var/log/README", "log"),
        ("var/lib/systemd/random-seed", "seed"),
    ];
    for (path, text) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    root
}

/// The one file in `out` with this extension (`build.sh` names them by version).
fn file_with_ext(out: &Path, ext: &str) -> PathBuf {
    std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == ext))
        .unwrap_or_else(|| panic!("no .{ext} in {}", out.display()))
}

/// A file from a FAT image (mtools).
fn fat_read(img: &Path, file: &str) -> String {
    run(Command::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(img)
        .arg(format!("::/{file}")))
}

#[test]
fn reduced_image_builds_and_checks() {
    tools();
    let d = TempDir::new("image-reduced").unwrap();
    let out = d.path().join("out");
    let keys = d.path().join("keys");
    reduced_root(&out, &keys);
    build_ok(&out, &keys, &["parts"]);
    build_ok(&out, &keys, &["disk"]);
    build_ok(&out, &keys, &["bundle"]);
    let report = build_ok(&out, &keys, &["check"]);
    eprintln!("{report}");
    assert!(report.contains("check: all passed"), "{report}");
    assert!(!report.contains("FAIL"), "{report}");
    for want in [
        "ok   braid-edge.service enabled",
        "ok   partitions config bootA bootB rootA rootB data",
        "ok   p4 holds root.ext4",
        "ok   cmdline.txt: root=PARTUUID of rootA",
        "ok   rauc info (image's system.conf and keyring) accepts",
        "ok   braid bundle verify with the image's key",
        "ok   autoboot.txt: tryboot A/B, A committed",
    ] {
        assert!(report.contains(want), "missing {want:?} in:\n{report}");
    }

    // The check can fail: a unit not enabled, and one byte of root A changed on the disk.
    let link = out.join("rootfs/etc/systemd/system/multi-user.target.wants/braid-edge.service");
    let target = std::fs::read_link(&link).unwrap();
    std::fs::remove_file(&link).unwrap();
    let (ok, text) = build_sh(&out, &keys, &["check"]);
    assert!(!ok, "check passed without braid-edge enabled:\n{text}");
    assert!(text.contains("FAIL braid-edge.service enabled"), "{text}");
    std::os::unix::fs::symlink(target, &link).unwrap();

    let disk = file_with_ext(&out, "img");
    let js = run(Command::new("sfdisk").arg("--json").arg(&disk));
    let v: serde_json::Value = serde_json::from_str(&js).unwrap();
    let root_a_start = v["partitiontable"]["partitions"][3]["start"]
        .as_u64()
        .unwrap();
    let mut bytes = std::fs::read(&disk).unwrap();
    let at = (root_a_start * 512 + 1024 + 56) as usize; // the ext4 superblock's magic
    bytes[at] ^= 0xff;
    std::fs::write(&disk, &bytes).unwrap();
    let (ok, text) = build_sh(&out, &keys, &["check"]);
    assert!(!ok, "check passed with root A corrupted:\n{text}");
    assert!(text.contains("FAIL p4 differs from root.ext4"), "{text}");
}

/// The Raspberry Pi bootloader's choice (autoboot.txt with `tryboot_a_b=1`): the
/// `[tryboot]` boot_partition when the reboot asked for tryboot, else `[all]`'s.
fn firmware_pick(autoboot: &str, tryboot: bool) -> u32 {
    let mut section = String::new();
    let (mut all, mut tried, mut ab) = (None, None, false);
    for line in autoboot.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.trim_matches(['[', ']']).to_string();
        } else if let Some((k, v)) = line.split_once('=') {
            match (section.as_str(), k.trim()) {
                ("all", "boot_partition") => all = v.trim().parse().ok(),
                ("all", "tryboot_a_b") => ab = v.trim() == "1",
                ("tryboot", "boot_partition") => tried = v.trim().parse().ok(),
                _ => {}
            }
        }
    }
    assert!(ab, "autoboot.txt without tryboot_a_b=1: {autoboot}");
    let all = all.expect("no [all] boot_partition");
    if tryboot {
        tried.unwrap_or(all)
    } else {
        all
    }
}

struct Board {
    dir: PathBuf,
    conf: PathBuf,
    bus: String,
    procs: Procs,
}

impl Board {
    fn autoboot(&self) -> PathBuf {
        self.dir.join("config/autoboot.txt")
    }
    fn reboot_param(&self) -> PathBuf {
        self.dir.join("run/reboot-param")
    }
    fn cmdline(&self) -> PathBuf {
        self.dir.join("proc-cmdline")
    }
    fn slot_file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn rauc(&self, args: &[&str]) -> std::process::Output {
        Command::new("rauc")
            .arg(format!("--conf={}", self.conf.display()))
            .args(args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus)
            .output()
            .unwrap()
    }

    fn rauc_ok(&self, args: &[&str]) -> String {
        let o = self.rauc(args);
        assert!(
            o.status.success(),
            "rauc {args:?}: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn service(&self, booted: &str) -> Child {
        Command::new("rauc")
            .arg(format!("--conf={}", self.conf.display()))
            .args(["service", &format!("--override-boot-slot={booted}")])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus)
            .env("BRAID_TRYBOOT_AUTOBOOT", self.autoboot())
            .env("BRAID_TRYBOOT_REBOOT_PARAM", self.reboot_param())
            .env("BRAID_TRYBOOT_CMDLINE", self.cmdline())
            .env("BRAID_HOOK_ROOT_PARTUUID_A", UUID_A)
            .env("BRAID_HOOK_ROOT_PARTUUID_B", UUID_B)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Power cycle: /run is emptied (the reboot parameter with it), the bootloader
    /// picks a boot partition from autoboot.txt, the kernel command line is that
    /// partition's cmdline.txt, and RAUC's service starts with that slot booted.
    /// Returns the booted slot as its cmdline.txt names it.
    fn reboot(&mut self) -> String {
        if self.procs.0.len() > 1 {
            let mut old = self.procs.0.pop().unwrap();
            old.kill().unwrap();
            old.wait().unwrap();
        }
        let tryboot = std::fs::read_to_string(self.reboot_param())
            .map(|p| p.contains("tryboot"))
            .unwrap_or(false);
        let _ = std::fs::remove_file(self.reboot_param());
        let auto = std::fs::read_to_string(self.autoboot()).unwrap();
        let part = firmware_pick(&auto, tryboot);
        let boot_img = match part {
            2 => self.slot_file("bootA.vfat"),
            3 => self.slot_file("bootB.vfat"),
            p => panic!("bootloader asked for partition {p}"),
        };
        let cmdline = fat_read(&boot_img, "cmdline.txt");
        std::fs::write(self.cmdline(), &cmdline).unwrap();
        let slot = cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix("rauc.slot="))
            .expect("no rauc.slot= in cmdline.txt")
            .to_string();
        let want_uuid = if slot == "A" { UUID_A } else { UUID_B };
        assert!(
            cmdline.contains(&format!("root=PARTUUID={want_uuid} ")),
            "partition {part} boots slot {slot} but its cmdline.txt points elsewhere: {cmdline}"
        );
        self.procs.0.push(self.service(&slot));
        wait_for("rauc service", || self.rauc(&["status"]).status.success());
        slot
    }

    fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.rauc_ok(&["status", "--output-format=json"])).unwrap()
    }
}

/// The image's bundle installed by RAUC into slots laid out as the image's
/// system.conf says (files for the partitions), the image's hook and tryboot
/// backend doing their part, and the trial boot / confirm / fall-back cycle through
/// the bootloader model.
#[test]
fn bundle_installs_and_tryboot_cycle() {
    tools();
    let d = TempDir::new("image-rauc").unwrap();
    let out = d.path().join("plain");
    let keys = d.path().join("keys");
    let root = reduced_root(&out, &keys);
    build_ok(&out, &keys, &["parts"]);
    build_ok(&out, &keys, &["bundle"]);
    let parts = out.join("parts");

    // The board: slot A as the image has it (its boot and root partitions), B empty.
    let dir = d.path().join("board");
    std::fs::create_dir_all(dir.join("config")).unwrap();
    std::fs::create_dir_all(dir.join("run")).unwrap();
    std::fs::create_dir_all(dir.join("rauc-data")).unwrap();
    std::fs::copy(parts.join("boot.vfat"), dir.join("bootA.vfat")).unwrap();
    let mut root_a = std::fs::read(parts.join("root.ext4")).unwrap();
    root_a.resize(96 << 20, 0);
    std::fs::write(dir.join("rootA.ext4"), &root_a).unwrap();
    std::fs::write(dir.join("bootB.vfat"), vec![0u8; 8 << 20]).unwrap();
    std::fs::write(dir.join("rootB.ext4"), vec![0u8; 96 << 20]).unwrap();
    std::fs::write(
        dir.join("config/autoboot.txt"),
        fat_read(&parts.join("config.vfat"), "autoboot.txt"),
    )
    .unwrap();
    // Boot A's cmdline.txt names the build's PARTUUID for rootA; the board's is UUID_A.
    let cmd_a = fat_read(&dir.join("bootA.vfat"), "cmdline.txt");
    let build_uuid = cmd_a
        .split_whitespace()
        .find_map(|w| w.strip_prefix("root=PARTUUID="))
        .unwrap()
        .to_string();
    std::fs::write(dir.join("cmdline.new"), cmd_a.replace(&build_uuid, UUID_A)).unwrap();
    run(Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-o", "-i"])
        .arg(dir.join("bootA.vfat"))
        .arg(dir.join("cmdline.new"))
        .arg("::/cmdline.txt"));

    // The image's system.conf with the devices pointed at the files, its state in
    // the test directory, and plain bundles (no device-mapper here for verity).
    let image_conf = std::fs::read_to_string(root.join("etc/rauc/system.conf")).unwrap();
    assert!(image_conf.contains("bundle-formats=verity"), "{image_conf}");
    let mut conf_text = image_conf
        .replace("bundle-formats=verity", "bundle-formats=plain")
        .replace(
            "data-directory=/data/rauc",
            &format!("data-directory={}/rauc-data", dir.display()),
        )
        .replace(
            "/usr/lib/braid/rauc-tryboot",
            root.join("usr/lib/braid/rauc-tryboot").to_str().unwrap(),
        )
        .replace(
            "/etc/rauc/keyring.pem",
            root.join("etc/rauc/keyring.pem").to_str().unwrap(),
        );
    for (part, file) in [
        ("rootA", "rootA.ext4"),
        ("rootB", "rootB.ext4"),
        ("bootA", "bootA.vfat"),
        ("bootB", "bootB.vfat"),
    ] {
        conf_text = conf_text.replace(
            &format!("/dev/disk/by-partlabel/{part}"),
            dir.join(file).to_str().unwrap(),
        );
    }
    assert!(!conf_text.contains("/dev/"), "{conf_text}");
    let conf = dir.join("system.conf");
    std::fs::write(&conf, conf_text).unwrap();

    let (daemon, bus) = private_system_bus(&dir);
    let mut board = Board {
        dir: dir.clone(),
        conf,
        bus,
        procs: Procs(vec![daemon]),
    };
    assert_eq!(board.reboot(), "A");
    let st = board.status();
    assert_eq!(st["booted"], "A", "{st}");
    assert_eq!(st["boot_primary"], "rootfs.0", "{st}");

    // Install: root B and boot B written, the hook points boot B at root B.
    let raucb = file_with_ext(&out, "raucb");
    let text = board.rauc_ok(&["install", raucb.to_str().unwrap()]);
    eprintln!("{text}");
    let root_img = std::fs::read(parts.join("root.ext4")).unwrap();
    let root_b = std::fs::read(dir.join("rootB.ext4")).unwrap();
    assert_eq!(root_b.len(), 96 << 20);
    // resize=true: the file system was grown to the slot, so compare the data past
    // the superblock group (block 0 is identical; the sizes in it differ).
    assert_eq!(&root_b[..1024], &root_img[..1024], "root B's boot block");
    let dump = run(Command::new("debugfs")
        .args(["-R", "cat /usr/share/braid/version"])
        .arg(dir.join("rootB.ext4")));
    assert_eq!(dump.trim(), env!("CARGO_PKG_VERSION"));
    let fsck = Command::new("e2fsck")
        .args(["-fn"])
        .arg(dir.join("rootB.ext4"))
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "root B does not fsck clean: {fsck:?}"
    );
    let cmd_b = fat_read(&dir.join("bootB.vfat"), "cmdline.txt");
    assert!(
        cmd_b.contains(&format!("root=PARTUUID={UUID_B} ")),
        "{cmd_b}"
    );
    assert!(cmd_b.contains("rauc.slot=B"), "{cmd_b}");
    assert_eq!(
        fat_read(&dir.join("bootA.vfat"), "cmdline.txt"),
        cmd_a.replace(&build_uuid, UUID_A),
        "boot A changed by the install"
    );
    // activate-installed=false: nothing boots B yet.
    assert_eq!(board.status()["boot_primary"], "rootfs.0");
    assert_eq!(board.reboot(), "A");

    // What the box does with the braid bundle wrapping it: `braid ota install` (the
    // image's [ota] from the first-boot template, the image's update key) verifies
    // it, hands the .raucb to RAUC, which writes B again, and arms one trial of B
    // (mark-active). No confirmation: back to A.
    let braidb = file_with_ext(&out, "bundle");
    let cfg = ota_config(&root, &dir);
    let o = Command::new(BRAID)
        .args(["ota", "install", "--config"])
        .arg(&cfg)
        // The running braid is the bundle's version: not newer.
        .arg("--allow-downgrade")
        .arg(&braidb)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &board.bus)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "braid ota install: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        run(Command::new("debugfs")
            .args(["-R", "cat /usr/share/braid/version"])
            .arg(dir.join("rootB.ext4")))
        .trim(),
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(board.status()["boot_primary"], "rootfs.1");
    assert_eq!(
        std::fs::read_to_string(board.reboot_param())
            .unwrap()
            .trim(),
        "0 tryboot"
    );
    assert_eq!(board.reboot(), "B");
    assert_eq!(board.status()["booted"], "B");
    assert_eq!(
        board.status()["boot_primary"],
        "rootfs.0",
        "the next boot is A again"
    );
    assert_eq!(board.reboot(), "A", "an unconfirmed trial must fall back");

    // Try again and confirm (mark-good after the health check): B from now on.
    board.rauc_ok(&["status", "mark-active", "other"]);
    assert_eq!(board.reboot(), "B");
    // The daemon's confirmation after its health check (here the CLI's).
    let o = Command::new(BRAID)
        .args(["ota", "confirm", "--config"])
        .arg(&cfg)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &board.bus)
        .output()
        .unwrap();
    assert!(o.status.success(), "braid ota confirm: {o:?}");
    let auto = std::fs::read_to_string(board.autoboot()).unwrap();
    assert_eq!(firmware_pick(&auto, false), 3, "{auto}");
    assert_eq!(board.status()["boot_primary"], "rootfs.1");
    assert_eq!(board.reboot(), "B");
    assert_eq!(board.reboot(), "B");

    // A trial cancelled by mark-bad before the reboot: A is tried, then refused.
    board.rauc_ok(&["status", "mark-active", "other"]);
    assert!(board.reboot_param().exists());
    board.rauc_ok(&["status", "mark-bad", "other"]);
    assert!(
        !board.reboot_param().exists(),
        "mark-bad left the trial armed"
    );
    assert_eq!(board.reboot(), "B");
    drop(board);
}

/// An edge.toml from the image's first-boot template with its paths moved into
/// `dir` (device identity made here, the image's update key, OTA state).
fn ota_config(root: &Path, dir: &Path) -> PathBuf {
    let etc = dir.join("etc-braid");
    std::fs::create_dir_all(&etc).unwrap();
    run(Command::new(BRAID)
        .args(["keygen", "--dir"])
        .arg(&etc)
        .args(["--name", "device"]));
    let text = std::fs::read_to_string(root.join("usr/share/braid/edge.toml.template"))
        .unwrap()
        .replace("@DEVICE_ID@", "braid-test")
        .replace("/etc/braid/", &format!("{}/", etc.display()))
        .replace(
            "/var/lib/braid/",
            &format!("{}/", dir.join("var-lib-braid").display()),
        )
        .replace(
            "/usr/share/braid/ota-release.pub",
            root.join("usr/share/braid/ota-release.pub")
                .to_str()
                .unwrap(),
        );
    assert!(text.contains("backend = \"rauc\""), "{text}");
    let cfg = etc.join("edge.toml");
    std::fs::write(&cfg, text).unwrap();
    cfg
}

#[test]
fn tryboot_backend_refuses_junk() {
    let d = TempDir::new("image-tryboot").unwrap();
    let script = repo().join("image/rootfs/usr/lib/braid/rauc-tryboot");
    let auto = d.path().join("autoboot.txt");
    let call = |args: &[&str]| {
        Command::new(&script)
            .args(args)
            .env("BRAID_TRYBOOT_AUTOBOOT", &auto)
            .env("BRAID_TRYBOOT_REBOOT_PARAM", d.path().join("reboot-param"))
            .env("BRAID_TRYBOOT_CMDLINE", d.path().join("cmdline"))
            .output()
            .unwrap()
    };
    let err = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    // No autoboot.txt at all.
    let o = call(&["get-primary"]);
    assert!(
        !o.status.success() && err(&o).contains("cannot read"),
        "{o:?}"
    );
    // One that names a partition that is no slot.
    std::fs::write(&auto, "[all]\ntryboot_a_b=1\nboot_partition=5\n").unwrap();
    let o = call(&["get-primary"]);
    assert!(
        !o.status.success() && err(&o).contains("neither slot"),
        "{o:?}"
    );
    std::fs::write(
        &auto,
        "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=2\n",
    )
    .unwrap();
    for bad in [
        &["set-primary", "C"][..],
        &["set-state", "A", "meh"],
        &["frobnicate"],
    ] {
        let o = call(bad);
        assert!(!o.status.success(), "{bad:?} accepted");
    }
    assert_eq!(
        String::from_utf8_lossy(&call(&["get-primary"]).stdout).trim(),
        "A"
    );
    // Committing a slot that is neither committed nor booted is refused.
    std::fs::write(d.path().join("cmdline"), "root=x rauc.slot=A ro\n").unwrap();
    let o = call(&["set-state", "B", "good"]);
    assert!(
        !o.status.success() && err(&o).contains("boot it first"),
        "{o:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&auto).unwrap(),
        "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=2\n",
        "a refused call changed autoboot.txt"
    );
}

#[test]
fn first_boot_sets_up_the_box() {
    let d = TempDir::new("image-first-boot").unwrap();
    let root = d.path();
    let config = root.join("boot-config");
    let etc = root.join("etc-braid");
    std::fs::create_dir_all(&config).unwrap();
    let serial = root.join("serial-number");
    std::fs::write(&serial, "10000000ABCDEF12\0").unwrap();
    std::fs::write(config.join("braid-password.txt"), "field-crew-secret\n").unwrap();
    let hostname_log = root.join("hostname.log");
    let set_hostname = root.join("set-hostname");
    std::fs::write(
        &set_hostname,
        format!("#!/bin/sh\necho \"$1\" >> '{}'\n", hostname_log.display()),
    )
    .unwrap();
    run(Command::new("chmod").arg("755").arg(&set_hostname));
    let template = repo().join("image/rootfs/usr/share/braid/edge.toml.template");
    let first_boot = || {
        run(
            Command::new(repo().join("image/rootfs/usr/lib/braid/first-boot"))
                .env("BRAID_FB_CONFIG", &config)
                .env("BRAID_FB_ETC", &etc)
                .env("BRAID_FB_DATA", root.join("data"))
                .env("BRAID_FB_BRAID", BRAID)
                .env("BRAID_FB_TEMPLATE", &template)
                .env("BRAID_FB_SERIAL", &serial)
                .env("BRAID_FB_SET_HOSTNAME", &set_hostname)
                .env("BRAID_FB_OWNER", "root:root")
                .env("BRAID_FB_GROW", "0"),
        )
    };
    let log = first_boot();
    eprintln!("{log}");
    assert_eq!(
        std::fs::read_to_string(&hostname_log).unwrap(),
        "braid-abcdef12\n"
    );
    // The device identity, private key 0600, fingerprint on the config partition.
    use std::os::unix::fs::PermissionsExt;
    let key_mode = std::fs::metadata(etc.join("device.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let fp = std::fs::read_to_string(etc.join("device.fingerprint")).unwrap();
    assert!(fp.starts_with("sha256:"), "{fp}");
    let note = std::fs::read_to_string(config.join("braid-device.txt")).unwrap();
    assert!(
        note.contains("braid-abcdef12") && note.contains(fp.trim()),
        "{note}"
    );
    // The password moved off the FAT partition.
    assert!(!config.join("braid-password.txt").exists());
    assert_eq!(
        std::fs::read_to_string(etc.join("initial-password")).unwrap(),
        "field-crew-secret\n"
    );
    // edge.toml from the template: a valid edge configuration, named after the host.
    let cfg = braid::config::load_edge(&etc.join("edge.toml"))
        .unwrap_or_else(|e| panic!("the template's edge.toml does not load: {e}"));
    assert_eq!(cfg.device.id, "braid-abcdef12");

    // Second boot: same identity, the config left as the page saved it.
    std::fs::write(etc.join("edge.toml"), "# edited on the page\n").unwrap();
    first_boot();
    assert_eq!(
        std::fs::read_to_string(etc.join("device.fingerprint")).unwrap(),
        fp
    );
    assert_eq!(
        std::fs::read_to_string(etc.join("edge.toml")).unwrap(),
        "# edited on the page\n"
    );
    // An edge.toml dropped on the config partition replaces it, once.
    std::fs::write(config.join("edge.toml"), "# from the admin\n").unwrap();
    first_boot();
    assert_eq!(
        std::fs::read_to_string(etc.join("edge.toml")).unwrap(),
        "# from the admin\n"
    );
    assert!(config.join("edge.toml.applied").exists());
    assert!(!config.join("edge.toml").exists());
}
