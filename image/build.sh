#!/usr/bin/env bash
# The Braid edge SD-card image for Raspberry Pi 4 / CM4 (arm64, Debian 12), and the
# RAUC update bundle of the same root. image/README.md describes the layout.
#
#   image/build.sh all        keys, rootfs, parts, disk, bundle, check (`make image`)
#   image/build.sh keys       signing keys in $KEYS (development keys made if missing)
#   image/build.sh rootfs     Debian arm64 root in $OUT/rootfs (mmdebstrap, qemu binfmt)
#   image/build.sh overlay R  Braid's files, user and units into the root directory R
#   image/build.sh parts      partition images in $OUT/parts from $OUT/rootfs
#   image/build.sh disk       $OUT/braid-VERSION-rpi-arm64.img from the partitions
#   image/build.sh bundle     $OUT/braid-VERSION.raucb and the signed braid bundle
#                             wrapping it (what `braid ota install` takes)
#   image/build.sh check      assert what was built (REDUCED=1: no Debian packages,
#                             no qemu; what tests/image.rs runs in CI)
#
# Environment (defaults in brackets):
#   OUT [target/image]  KEYS [image/keys]  BRAID_BIN [aarch64 release build]
#   HOST_BRAID [target/release/braid or target/debug/braid: runs `braid bundle`]
#   MIRROR [http://deb.debian.org/debian]  BUNDLE_FORMAT [verity]
#   CONFIG_MIB [64] BOOT_MIB [128] ROOT_MIB [2048] DATA_MIB [256]  REDUCED [0]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
SELF="$HERE/build.sh"
OUT="${OUT:-$REPO/target/image}"
KEYS="${KEYS:-$HERE/keys}"
BRAID_BIN="${BRAID_BIN:-$REPO/target/cross/aarch64-unknown-linux-gnu/release/braid}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
BUNDLE_FORMAT="${BUNDLE_FORMAT:-verity}"
CONFIG_MIB="${CONFIG_MIB:-64}"
BOOT_MIB="${BOOT_MIB:-128}"
ROOT_MIB="${ROOT_MIB:-2048}"
DATA_MIB="${DATA_MIB:-256}"
REDUCED="${REDUCED:-0}"
COMPATIBLE=braid-rpi-arm64
VERSION="$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$REPO/Cargo.toml" | head -n 1)"
DISK="$OUT/braid-$VERSION-rpi-arm64.img"
RAUCB="$OUT/braid-$VERSION.raucb"
BRAIDB="$OUT/braid-$VERSION-rpi-arm64.bundle"
# Partition numbers are what autoboot.txt and usr/lib/braid/rauc-tryboot use.
PARTS=(config bootA bootB rootA rootB data)
TYPE_FAT=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7  # Microsoft basic data (the firmware reads FAT)
TYPE_ROOT=B921B045-1DF0-41C3-AF44-4C6F280D3FAE # Linux root (ARM-64)
TYPE_DATA=0FC63DAF-8483-4772-8E79-3D69D8477DE4 # Linux filesystem

say() { echo "image: $*" >&2; }
die() {
    echo "image: error: $*" >&2
    exit 1
}
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is missing ($2); run \`make image-deps\`"; }

host_braid() {
    if [[ -n "${HOST_BRAID:-}" ]]; then
        echo "$HOST_BRAID"
    elif [[ -x "$REPO/target/release/braid" ]]; then
        echo "$REPO/target/release/braid"
    elif [[ -x "$REPO/target/debug/braid" ]]; then
        echo "$REPO/target/debug/braid"
    else
        die "no host braid binary (cargo build), needed for \`braid bundle\`"
    fi
}

# --- keys ----------------------------------------------------------------------------
# RAUC: an X.509 CA (the box's keyring) and a signing certificate issued by it.
# braid: a minisign key pair (the box's [ota] public_keys). Real releases bring their
# own in $KEYS; missing ones are made here as development keys, said loudly.
cmd_keys() {
    mkdir -p "$KEYS"
    if [[ ! -f "$KEYS/rauc-ca.pem" ]]; then
        need openssl openssl
        say "making DEVELOPMENT RAUC keys in $KEYS (bring your own for releases)"
        openssl req -x509 -newkey rsa:3072 -nodes -days 3650 -subj "/O=Braid development/CN=Braid dev CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
            -keyout "$KEYS/rauc-ca.key" -out "$KEYS/rauc-ca.pem" 2>/dev/null
        openssl req -newkey rsa:3072 -nodes -subj "/O=Braid development/CN=Braid dev signing" \
            -keyout "$KEYS/rauc-signing.key" -out "$KEYS/rauc-signing.csr" 2>/dev/null
        printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n' >"$KEYS/ext.cnf"
        openssl x509 -req -days 3650 -in "$KEYS/rauc-signing.csr" -CA "$KEYS/rauc-ca.pem" -CAkey "$KEYS/rauc-ca.key" \
            -CAcreateserial -extfile "$KEYS/ext.cnf" -out "$KEYS/rauc-signing.pem" 2>/dev/null
        rm -f "$KEYS/rauc-signing.csr" "$KEYS/ext.cnf"
    fi
    if [[ ! -f "$KEYS/ota-release.pub" ]]; then
        say "making a DEVELOPMENT update signing key in $KEYS"
        "$(host_braid)" bundle keygen --dir "$KEYS" --name ota-release >/dev/null
    fi
}

# --- rootfs --------------------------------------------------------------------------
PACKAGES=(
    # base system: systemd with networkd/resolved/timesyncd, udev, D-Bus, kernel modules
    systemd systemd-sysv systemd-resolved systemd-timesyncd udev dbus kmod iproute2
    ca-certificates util-linux e2fsprogs dosfstools cloud-guest-utils procps
    # Raspberry Pi 4 / CM4: Debian's kernel and initramfs, the GPU firmware, Wi-Fi firmware
    linux-image-arm64 initramfs-tools raspi-firmware firmware-brcm80211 wireless-regdb
    # updates
    rauc
    # media: GStreamer plugins the edge pipeline uses, V4L2 and ALSA tools
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
    gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-x gstreamer1.0-alsa
    gstreamer1.0-tools v4l-utils alsa-utils
    # cellular modems: mode switching of USB sticks that start as a CD-ROM
    usb-modeswitch
    # the boot slots' cmdline.txt is edited on install by the bundle hook (mtools)
    mtools
)

cmd_rootfs() {
    need mmdebstrap "apt-get install mmdebstrap"
    [[ -x "$BRAID_BIN" ]] || die "$BRAID_BIN is missing: make aarch64"
    file -b "$BRAID_BIN" | grep -q aarch64 || die "$BRAID_BIN is not an aarch64 binary"
    ensure_binfmt
    [[ "$(id -u)" == 0 ]] || die "mmdebstrap --mode=root needs root"
    cmd_keys
    rm -rf "$OUT/rootfs"
    mkdir -p "$OUT"
    local pk
    pk="$(
        IFS=,
        echo "${PACKAGES[*]}"
    )"
    say "mmdebstrap arm64 bookworm -> $OUT/rootfs (several minutes: packages configure under qemu)"
    # update-initramfs is diverted while packages install (the kernel, udev and
    # others each trigger it, minutes under qemu every time), then run once. The
    # braid binary and keys go in by the overlay customize hook; apt caches and
    # lists are left out of the image.
    mmdebstrap --mode=root --arch=arm64 --variant=minbase \
        --components=main,non-free-firmware \
        --include="$pk" \
        --aptopt='APT::Install-Recommends "false"' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
        --essential-hook='chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs' \
        --essential-hook='printf "#!/bin/sh\nexit 0\n" >"$1/usr/sbin/update-initramfs" && chmod 755 "$1/usr/sbin/update-initramfs"' \
        --customize-hook='rm -f "$1/usr/sbin/update-initramfs" && chroot "$1" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs' \
        --customize-hook='chroot "$1" update-initramfs -c -k all' \
        --customize-hook="env BRAID_BIN='$BRAID_BIN' KEYS='$KEYS' '$SELF' overlay \"\$1\"" \
        --customize-hook="'$SELF' debian-units \"\$1\"" \
        bookworm "$OUT/rootfs" "$MIRROR" >&2
}

# qemu-user-static's binfmt entry, registered if the kernel lacks it (no systemd-binfmt
# in containers; the F flag keeps it working inside the chroot).
ensure_binfmt() {
    need qemu-aarch64-static "apt-get install qemu-user-static"
    if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || die "cannot mount binfmt_misc"
    fi
    if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
        [[ -f /usr/lib/binfmt.d/qemu-aarch64.conf ]] || die "no /usr/lib/binfmt.d/qemu-aarch64.conf"
        cat /usr/lib/binfmt.d/qemu-aarch64.conf >/proc/sys/fs/binfmt_misc/register
    fi
}

# Braid's part of the root: binary, units, udev/polkit/D-Bus rules, RAUC configuration
# and keyring, the update public key, the braid user, mount points. Works on an
# empty directory too (REDUCED: tests/image.rs).
cmd_overlay() {
    local root="${1:?overlay needs the root directory}"
    [[ -x "$BRAID_BIN" ]] || die "$BRAID_BIN is missing"
    [[ -f "$KEYS/rauc-ca.pem" && -f "$KEYS/ota-release.pub" ]] || die "no keys in $KEYS: image/build.sh keys"
    cp -a "$HERE/rootfs/." "$root/"
    install -D -m 755 "$BRAID_BIN" "$root/usr/bin/braid"
    install -D -m 644 "$REPO/systemd/braid-edge.service" "$root/usr/lib/systemd/system/braid-edge.service"
    install -D -m 644 "$REPO/systemd/99-braid.rules" "$root/etc/udev/rules.d/99-braid.rules"
    install -D -m 644 "$REPO/systemd/50-braid-reboot.rules" "$root/etc/polkit-1/rules.d/50-braid-reboot.rules"
    install -D -m 644 "$KEYS/rauc-ca.pem" "$root/etc/rauc/keyring.pem"
    install -D -m 644 "$KEYS/ota-release.pub" "$root/usr/share/braid/ota-release.pub"
    install -D -m 644 "$REPO/README.md" "$root/usr/share/doc/braid/README.md"
    echo "$VERSION" >"$root/usr/share/braid/version"
    # The braid system user (fixed ids, so the data partition's owners match any slot).
    mkdir -p "$root/etc"
    touch "$root/etc/passwd" "$root/etc/group" "$root/etc/shadow"
    if awk -F: '$1!="braid" && ($3==900)' "$root/etc/passwd" "$root/etc/group" | grep -q .; then
        die "uid/gid 900 is taken in $root"
    fi
    grep -q '^braid:' "$root/etc/group" || echo "braid:x:900:" >>"$root/etc/group"
    grep -q '^braid:' "$root/etc/passwd" ||
        echo "braid:x:900:900:Braid edge:/var/lib/braid:/usr/sbin/nologin" >>"$root/etc/passwd"
    grep -q '^braid:' "$root/etc/shadow" || echo "braid:!:19000::::::" >>"$root/etc/shadow"
    local g
    for g in video dialout audio; do
        if grep -q "^$g:" "$root/etc/group"; then
            sed -i -E "/^$g:/{/[:,]braid(,|$)/! s/:([^:]*)$/:\1,braid/; s/:,braid$/:braid/}" "$root/etc/group"
        fi
    done
    # Mount points on the read-only root.
    mkdir -p "$root/data" "$root/boot/config" "$root/etc/braid" "$root/var/lib/braid" \
        "$root/var/lib/systemd" "$root/var/log" "$root/tmp" "$root/var/tmp"
    # systemd: an empty machine-id on a read-only root = a transient one each boot.
    : >"$root/etc/machine-id"
    # Our units, enabled offline (symlinks only: no running systemd needed).
    systemctl --root="$root" enable braid-first-boot.service braid-edge.service >/dev/null 2>&1 ||
        die "systemctl --root enable failed"
}

# Debian's services the image uses; things a read-only root must not run.
cmd_debian_units() {
    local root="${1:?}"
    systemctl --root="$root" enable systemd-networkd.service systemd-resolved.service \
        systemd-timesyncd.service >/dev/null 2>&1 || die "enabling networkd/resolved/timesyncd failed"
    # apt's timers write to /var on a read-only root; nothing is installed by apt on a box.
    systemctl --root="$root" mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
        e2scrub_reap.service >/dev/null 2>&1 || true
    ln -sfn ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"
    echo "braid" >"$root/etc/hostname"
    # root has no password; the box is managed through its web page and updates.
    sed -i 's/^root:[^:]*:/root:*:/' "$root/etc/shadow"
    rm -rf "$root/var/cache/apt/"*.bin "$root/var/lib/apt/lists/"* "$root/var/cache/apt/archives/"*.deb
    # raspi-firmware's copy for a single boot partition: the image builds its boot
    # slots itself (parts), from /usr/lib/raspi-firmware and the kernel in /boot.
    rm -rf "$root/boot/firmware/"*
}

# --- partitions ----------------------------------------------------------------------
# Partition UUIDs: made once per build ($OUT/parts/uuids), used by the cmdline.txt
# of boot A (root=PARTUUID=) and by `disk`.
uuids() {
    local f="$OUT/parts/uuids"
    if [[ ! -f "$f" ]]; then
        mkdir -p "$OUT/parts"
        {
            echo "disk=$(cat /proc/sys/kernel/random/uuid)"
            local p
            for p in "${PARTS[@]}"; do echo "$p=$(cat /proc/sys/kernel/random/uuid)"; done
        } >"$f"
    fi
    cat "$f"
}
uuid_of() { uuids | sed -n "s/^$1=//p"; }

# FAT image of SIZE MiB labelled LABEL holding directory DIR's files.
mkfat() {
    local img="$1" mib="$2" label="$3" dir="$4"
    rm -f "$img"
    mkfs.vfat -C -n "$label" "$img" $((mib * 1024)) >/dev/null
    if [[ -n "$(ls -A "$dir")" ]]; then
        MTOOLS_SKIP_CHECK=1 mcopy -s -p -m -i "$img" "$dir"/* ::/
    fi
}

cmd_parts() {
    local root="$OUT/rootfs"
    [[ -d "$root/usr/bin" ]] || die "$root is not a root file system: image/build.sh rootfs"
    need mkfs.vfat dosfstools
    need mcopy mtools
    need mkfs.ext4 e2fsprogs
    local parts="$OUT/parts"
    mkdir -p "$parts"
    rm -rf "$parts/stage"
    local st="$parts/stage"
    mkdir -p "$st/boot" "$st/config" "$st/data"

    # Boot slot A: GPU firmware, kernel, initrd, device trees, config.txt, cmdline.txt.
    local fw="$root/usr/lib/raspi-firmware"
    [[ -d "$fw" ]] || die "no $fw (raspi-firmware)"
    cp -r "$fw/." "$st/boot/"
    local kernel initrd
    kernel="$(ls "$root"/boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)"
    initrd="$(ls "$root"/boot/initrd.img-* 2>/dev/null | sort -V | tail -n 1)"
    [[ -n "$kernel" && -n "$initrd" ]] || die "no kernel or initrd in $root/boot"
    cp "$kernel" "$st/boot/vmlinuz"
    cp "$initrd" "$st/boot/initrd.img"
    local dtb
    for dtb in "$root"/usr/lib/linux-image-*/broadcom/bcm2711-*.dtb; do
        [[ -f "$dtb" ]] && cp "$dtb" "$st/boot/"
    done
    ls "$st/boot"/bcm2711-rpi-4-b.dtb >/dev/null 2>&1 || die "no bcm2711-rpi-4-b.dtb in the kernel package"
    cp "$HERE/boot/config.txt" "$st/boot/config.txt"
    sed -e "s/@ROOT_PARTUUID@/$(uuid_of rootA)/" -e "s/@SLOT@/A/" "$HERE/boot/cmdline.txt" >"$st/boot/cmdline.txt"
    mkfat "$parts/boot.vfat" "$BOOT_MIB" BOOT "$st/boot"

    # Config partition: autoboot.txt (A committed, nothing to try) and a README for
    # whoever opens the card on a computer.
    cp "$HERE/boot/autoboot.txt" "$st/config/autoboot.txt"
    cp "$HERE/boot/config-README.txt" "$st/config/README.txt"
    mkfat "$parts/config.vfat" "$CONFIG_MIB" BRAIDCFG "$st/config"

    # Root: the whole tree, its size rounded up with room (the partition is larger;
    # RAUC's resize=true grows the file system into it on install).
    local used_mib root_fs_mib
    used_mib="$(du -s --block-size=1M "$root" | cut -f1)"
    root_fs_mib=$(((used_mib * 115 / 100 + 64 + 15) / 16 * 16))
    ((root_fs_mib <= ROOT_MIB)) || die "root needs ${root_fs_mib} MiB, the partition has ${ROOT_MIB} (ROOT_MIB)"
    rm -f "$parts/root.ext4"
    mkfs.ext4 -q -F -L root -O ^metadata_csum_seed -d "$root" "$parts/root.ext4" "${root_fs_mib}M"

    # Data: the state directories the root binds from it (fstab), owned as the root
    # expects; /var/log and /var/lib/systemd seeded from the root's.
    local uid gid
    uid="$(awk -F: '$1=="braid"{print $3}' "$root/etc/passwd")"
    gid="$(awk -F: '$1=="braid"{print $3}' "$root/etc/group")"
    mkdir -p "$st/data/etc/braid" "$st/data/lib/braid" "$st/data/rauc" "$st/data/log/journal"
    cp -a "$root/var/lib/systemd" "$st/data/lib/"
    cp -a "$root/var/log/." "$st/data/log/"
    mkdir -p "$st/data/log/journal"
    chown -R "$uid:$gid" "$st/data/etc/braid" "$st/data/lib/braid"
    rm -f "$parts/data.ext4"
    mkfs.ext4 -q -F -L data -d "$st/data" "$parts/data.ext4" "${DATA_MIB}M"
    rm -rf "$st"
    say "parts: boot ${BOOT_MIB} MiB, root file system ${root_fs_mib} MiB (${used_mib} MiB used), data ${DATA_MIB} MiB"
}

# --- disk ----------------------------------------------------------------------------
# GPT: config, bootA, bootB, rootA, rootB, data, each 1 MiB aligned. B slots are
# left empty (unformatted) until the first update writes them.
cmd_disk() {
    need sfdisk fdisk
    local parts="$OUT/parts"
    local p
    for p in config.vfat boot.vfat root.ext4 data.ext4; do
        [[ -f "$parts/$p" ]] || die "$parts/$p missing: image/build.sh parts"
    done
    local sizes=("$CONFIG_MIB" "$BOOT_MIB" "$BOOT_MIB" "$ROOT_MIB" "$ROOT_MIB" "$DATA_MIB")
    local types=("$TYPE_FAT" "$TYPE_FAT" "$TYPE_FAT" "$TYPE_ROOT" "$TYPE_ROOT" "$TYPE_DATA")
    local total=2 i
    for i in "${sizes[@]}"; do total=$((total + i)); done
    rm -f "$DISK"
    truncate -s "${total}M" "$DISK"
    {
        echo "label: gpt"
        echo "label-id: $(uuid_of disk)"
        echo "first-lba: 2048"
        local start=2048
        for i in "${!PARTS[@]}"; do
            echo "start=$start, size=$((sizes[i] * 2048)), type=${types[i]}, uuid=$(uuid_of "${PARTS[i]}"), name=${PARTS[i]}"
            start=$((start + sizes[i] * 2048))
        done
    } | sfdisk --quiet "$DISK" >/dev/null
    local start_mib=1
    local files=("config.vfat" "boot.vfat" "" "root.ext4" "" "data.ext4")
    for i in "${!PARTS[@]}"; do
        if [[ -n "${files[i]}" ]]; then
            dd if="$parts/${files[i]}" of="$DISK" bs=1M seek="$start_mib" conv=notrunc,sparse status=none
        fi
        start_mib=$((start_mib + sizes[i]))
    done
    say "disk: $DISK ($total MiB; $(du -h "$DISK" | cut -f1) allocated)"
}

# --- bundle --------------------------------------------------------------------------
# The RAUC bundle of the same root and boot images (slot classes rootfs and boot), its
# hook setting cmdline.txt for the slot written, and the braid bundle carrying it.
cmd_bundle() {
    need rauc rauc
    need mksquashfs squashfs-tools
    local parts="$OUT/parts" b="$OUT/bundle"
    [[ -f "$parts/root.ext4" && -f "$parts/boot.vfat" ]] || die "no partition images: image/build.sh parts"
    rm -rf "$b"
    mkdir -p "$b"
    ln "$parts/root.ext4" "$b/root.ext4" 2>/dev/null || cp "$parts/root.ext4" "$b/root.ext4"
    ln "$parts/boot.vfat" "$b/boot.vfat" 2>/dev/null || cp "$parts/boot.vfat" "$b/boot.vfat"
    install -m 755 "$HERE/bundle-hook" "$b/hook"
    cat >"$b/manifest.raucm" <<EOF
[update]
compatible=$COMPATIBLE
version=$VERSION
description=Braid edge $VERSION for Raspberry Pi 4 / CM4 (arm64)

[bundle]
format=$BUNDLE_FORMAT

[hooks]
filename=hook

[image.rootfs]
filename=root.ext4

[image.boot]
filename=boot.vfat
hooks=install
EOF
    rm -f "$RAUCB" "$BRAIDB"
    rauc bundle --cert="$KEYS/rauc-signing.pem" --key="$KEYS/rauc-signing.key" \
        --keyring="$KEYS/rauc-ca.pem" "$b" "$RAUCB" >/dev/null
    rm -rf "$b"
    "$(host_braid)" bundle create --key "$KEYS/ota-release.key" --version "$VERSION" \
        --compatible "$COMPATIBLE" --kind rauc --payload "$RAUCB" --out "$BRAIDB" >/dev/null
    say "bundle: $RAUCB ($BUNDLE_FORMAT) and $BRAIDB"
}

# --- check ---------------------------------------------------------------------------
fail=0
ok() { echo "check: ok   $*"; }
bad() {
    echo "check: FAIL $*"
    fail=1
}
expect() {
    local what="$1"
    shift
    if "$@" >/dev/null 2>&1; then ok "$what"; else bad "$what"; fi
}

cmd_check() {
    local root="$OUT/rootfs" parts="$OUT/parts"
    echo "check: $OUT (reduced=$REDUCED)"
    # Root file system contents.
    expect "braid binary" test -x "$root/usr/bin/braid"
    local u
    for u in braid-edge braid-first-boot; do
        expect "$u.service enabled" test -L "$root/etc/systemd/system/multi-user.target.wants/$u.service"
    done
    expect "braid user" grep -q '^braid:x:900:900:' "$root/etc/passwd"
    expect "RAUC keyring" cmp "$root/etc/rauc/keyring.pem" "$KEYS/rauc-ca.pem"
    expect "update public key" cmp "$root/usr/share/braid/ota-release.pub" "$KEYS/ota-release.pub"
    expect "rauc-tryboot backend executable" test -x "$root/usr/lib/braid/rauc-tryboot"
    expect "fstab: root read-only" grep -qE '^/dev/root[[:space:]]+/[[:space:]]+ext4[[:space:]]+ro[, ]' "$root/etc/fstab"
    local m
    for m in /data /boot/config /etc/braid /var/lib/braid /var/log /var/lib/systemd /tmp; do
        expect "fstab: $m" awk -v m="$m" '$2==m{f=1} END{exit !f}' "$root/etc/fstab"
        expect "mount point $m" test -d "$root$m"
    done
    expect "edge.toml template: OTA over RAUC" bash -c \
        "sed 's/@DEVICE_ID@/braid-check/' '$root/usr/share/braid/edge.toml.template' | grep -q 'backend = \"rauc\"'"
    expect "udev, polkit, D-Bus rules" test -f "$root/etc/udev/rules.d/99-braid.rules" -a \
        -f "$root/etc/polkit-1/rules.d/50-braid-reboot.rules" -a -f "$root/etc/dbus-1/system.d/braid-rauc.conf"
    if [[ "$REDUCED" != 1 ]]; then
        expect "braid in video, dialout, audio" bash -c "for g in video dialout audio; do grep -qE \"^\$g:.*[:,]braid(,|\$)\" '$root/etc/group' || exit 1; done"
        expect "braid is aarch64" bash -c "file -b '$root/usr/bin/braid' | grep -q aarch64"
        for u in systemd-networkd systemd-resolved systemd-timesyncd; do
            expect "$u enabled" bash -c "ls '$root'/etc/systemd/system/*.wants/$u.service"
        done
        expect "resolv.conf -> resolved stub" test "$(readlink "$root/etc/resolv.conf")" = ../run/systemd/resolve/stub-resolv.conf
        local pkg
        for pkg in rauc linux-image-arm64 raspi-firmware gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad \
            gstreamer1.0-libav v4l-utils usb-modeswitch cloud-guest-utils systemd-resolved mtools; do
            expect "package $pkg" chroot "$root" dpkg-query -W -f='${Status}' "$pkg"
        done
        local mod
        for mod in uvcvideo qmi_wwan option cdc_ether cdc_mbim bcm2835_wdt snd-usb-audio; do
            expect "kernel module $mod" bash -c "find '$root'/usr/lib/modules -name '$mod.ko*' | grep -q ."
        done
        if find "$root"/usr/lib/modules -name 'bcm2835-codec.ko*' | grep -q .; then
            echo "check: info bcm2835-codec (Pi 4 hardware H.264 encoder) is in this kernel"
        else
            echo "check: info no bcm2835-codec in Debian's kernel: the Pi 4 encodes with x264enc"
        fi
        # Under qemu, in the root: the binary, GStreamer's elements, rauc.
        ensure_binfmt
        local v
        v="$(chroot "$root" /usr/bin/braid --version 2>&1)" && ok "braid --version under qemu: $v" || bad "braid --version under qemu: $v"
        local el
        for el in v4l2src x264enc webrtcdsp mpegtsmux timeoverlay audiotestsrc avenc_aac alsasrc appsink; do
            expect "gst element $el (gst-inspect-1.0 under qemu)" chroot "$root" gst-inspect-1.0 --exists "$el"
        done
        if chroot "$root" gst-inspect-1.0 --exists v4l2h264enc; then
            echo "check: info v4l2h264enc registered (needs the kernel's encoder device at run time)"
        fi
        expect "rauc --version under qemu" chroot "$root" rauc --version
    fi

    # RAUC system.conf: parsed by rauc itself, with the bundle it must accept.
    if [[ -f "$RAUCB" ]]; then
        local info conf="$root/etc/rauc/system.conf"
        if [[ "$BUNDLE_FORMAT" != verity ]]; then
            # The box takes verity bundles only; a test build's plain one is read
            # with the same configuration allowing its format.
            conf="$OUT/system-$BUNDLE_FORMAT.conf"
            sed "s/^bundle-formats=.*/bundle-formats=$BUNDLE_FORMAT/" "$root/etc/rauc/system.conf" >"$conf"
        fi
        if info="$(rauc --conf="$conf" --keyring="$root/etc/rauc/keyring.pem" info "$RAUCB" 2>&1)"; then
            ok "rauc info (image's system.conf and keyring) accepts $(basename "$RAUCB")"
            grep -q "Compatible:[[:space:]]*'$COMPATIBLE'" <<<"$info" && ok "bundle compatible $COMPATIBLE" || bad "bundle compatible: $info"
            grep -q "Version:[[:space:]]*'$VERSION'" <<<"$info" && ok "bundle version $VERSION" || bad "bundle version: $info"
            grep -q "root.ext4" <<<"$info" && grep -q "boot.vfat" <<<"$info" && ok "bundle images root.ext4 + boot.vfat" || bad "bundle images: $info"
        else
            bad "rauc info: $info"
        fi
        expect "braid bundle verify with the image's key" "$(host_braid)" bundle verify \
            --key "$root/usr/share/braid/ota-release.pub" --compatible "$COMPATIBLE" "$BRAIDB"
    else
        bad "no RAUC bundle $RAUCB"
    fi

    # Partition table and the partitions' contents, read back from the disk image.
    if [[ -f "$DISK" ]]; then
        check_disk
    else
        bad "no disk image $DISK"
    fi
    if ((fail)); then
        echo "check: FAILED"
        exit 1
    fi
    echo "check: all passed"
}

check_disk() {
    local js
    js="$(sfdisk --json "$DISK")"
    local want_sizes=("$CONFIG_MIB" "$BOOT_MIB" "$BOOT_MIB" "$ROOT_MIB" "$ROOT_MIB" "$DATA_MIB")
    local names starts sizes
    names="$(jq -r '.partitiontable.partitions[].name' <<<"$js" | tr '\n' ' ')"
    [[ "$(jq -r .partitiontable.label <<<"$js")" == gpt ]] && ok "GPT" || bad "label is not gpt"
    [[ "$names" == "config bootA bootB rootA rootB data " ]] && ok "partitions config bootA bootB rootA rootB data" || bad "partition names: $names"
    local i start size
    for i in 0 1 2 3 4 5; do
        start="$(jq -r ".partitiontable.partitions[$i].start" <<<"$js")"
        size="$(jq -r ".partitiontable.partitions[$i].size" <<<"$js")"
        ((start % 2048 == 0 && size == want_sizes[i] * 2048)) && ok "p$((i + 1)) ${PARTS[i]}: ${want_sizes[i]} MiB, 1 MiB aligned" ||
            bad "p$((i + 1)) start $start size $size"
        [[ "$(jq -r ".partitiontable.partitions[$i].uuid" <<<"$js" | tr A-Z a-z)" == "$(uuid_of "${PARTS[i]}")" ]] ||
            bad "p$((i + 1)) uuid differs from $OUT/parts/uuids"
    done
    # Each written partition is byte for byte its image.
    local off
    off() { jq -r ".partitiontable.partitions[$1].start" <<<"$js"; }
    local -A img=([0]=config.vfat [1]=boot.vfat [3]=root.ext4 [5]=data.ext4)
    for i in 0 1 3 5; do
        local f="$OUT/parts/${img[$i]}"
        cmp -s -n "$(stat -c %s "$f")" "$f" <(tail -c +$(($(off "$i") * 512 + 1)) "$DISK") &&
            ok "p$((i + 1)) holds ${img[$i]}" || bad "p$((i + 1)) differs from ${img[$i]}"
    done
    # Boot A: what the firmware needs, cmdline pointing at root A.
    local bootoff=$(($(off 1) * 512)) cfgoff=$(($(off 0) * 512)) f
    for f in config.txt cmdline.txt vmlinuz initrd.img start4.elf fixup4.dat bcm2711-rpi-4-b.dtb; do
        expect "bootA has $f" env MTOOLS_SKIP_CHECK=1 mdir -i "$DISK@@$bootoff" "::/$f"
    done
    local cmdline
    cmdline="$(MTOOLS_SKIP_CHECK=1 mtype -i "$DISK@@$bootoff" ::/cmdline.txt)"
    grep -q "root=PARTUUID=$(uuid_of rootA) " <<<"$cmdline" && ok "cmdline.txt: root=PARTUUID of rootA" || bad "cmdline.txt: $cmdline"
    grep -qw "rauc.slot=A" <<<"$cmdline" && grep -qw ro <<<"$cmdline" && ok "cmdline.txt: rauc.slot=A, ro" || bad "cmdline.txt: $cmdline"
    local auto
    auto="$(MTOOLS_SKIP_CHECK=1 mtype -i "$DISK@@$cfgoff" ::/autoboot.txt)"
    BRAID_TRYBOOT_AUTOBOOT=<(echo "$auto") "$root/usr/lib/braid/rauc-tryboot" get-state A 2>/dev/null | grep -qx good &&
        grep -q "tryboot_a_b=1" <<<"$auto" && ok "autoboot.txt: tryboot A/B, A committed" || bad "autoboot.txt: $auto"
    # Root A's file system: the files the overlay put there.
    local fsconf
    fsconf="$(debugfs -R "cat /etc/rauc/system.conf" "$OUT/parts/root.ext4" 2>/dev/null)"
    cmp -s <(echo "$fsconf") <(cat "$root/etc/rauc/system.conf") && ok "rootA: /etc/rauc/system.conf" || bad "rootA system.conf differs"
    [[ "$(debugfs -R "stat /usr/bin/braid" "$OUT/parts/root.ext4" 2>/dev/null | grep -c 'Mode:  0755')" == 1 ]] &&
        ok "rootA: /usr/bin/braid 0755" || bad "rootA: /usr/bin/braid"
    local dls
    dls="$(debugfs -R "ls -l /etc/braid" "$OUT/parts/data.ext4" 2>/dev/null)"
    [[ -n "$dls" ]] && ok "data: /etc/braid" || bad "data: no /etc/braid"
}

case "${1:-}" in
all)
    cmd_keys
    cmd_rootfs
    cmd_parts
    cmd_disk
    cmd_bundle
    cmd_check
    ;;
keys) cmd_keys ;;
rootfs) cmd_rootfs ;;
overlay) cmd_overlay "${2:-}" ;;
debian-units) cmd_debian_units "${2:-}" ;;
parts) cmd_parts ;;
disk) cmd_disk ;;
bundle) cmd_bundle ;;
check) cmd_check ;;
*)
    sed -n '2,22p' "$SELF" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
