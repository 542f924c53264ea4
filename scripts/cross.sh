#!/usr/bin/env bash
# Cross builds for the ARM boards without Docker: Debian multiarch (the target's gcc,
# GStreamer development packages for the target architecture, pkg-config pointed at
# them) and qemu-user-static to run what was built. Used by `make aarch64`, `make
# armv7` and `make test-aarch64`; cross/ holds the same setup as Docker images for
# the `cross` tool.
#
#   scripts/cross.sh deps    aarch64|armv7   install what is missing (apt, rustup target)
#   scripts/cross.sh build   aarch64|armv7   release binary, its size and `braid --version` under qemu
#   scripts/cross.sh test    aarch64|armv7   the library's unit tests under qemu (sans-IO
#                                            cores, config, wire codec, ...; TESTS=filter)
#   scripts/cross.sh env     aarch64|armv7   print the environment (to `eval` in a shell)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"
SUDO=""
[[ "$(id -u)" == 0 ]] || SUDO=sudo

cmd="${1:-}"
board="${2:-aarch64}"
case "$board" in
aarch64)
    TRIPLE=aarch64-unknown-linux-gnu DEB_ARCH=arm64 GNU=aarch64-linux-gnu QEMU=qemu-aarch64-static
    ;;
armv7)
    TRIPLE=armv7-unknown-linux-gnueabihf DEB_ARCH=armhf GNU=arm-linux-gnueabihf QEMU=qemu-arm-static
    ;;
*)
    echo "cross: unknown board $board (aarch64 or armv7)" >&2
    exit 2
    ;;
esac
# Installed with apt. libgstreamer-plugins-base1.0-dev cannot be installed for two
# architectures at once on Debian 12 (its gir and gudev dependencies are not
# multiarch): installing the arm64 one removes the native one that `make test`
# needs. So its pkg-config files come from the .deb unpacked into an overlay
# (target/cross/overlay-ARCH), pointing at the target's runtime libraries, which
# are installed normally (libgstreamer-plugins-base1.0-0:ARCH is multiarch).
# cross/Dockerfile.* (no native build inside) installs the -dev package itself.
PKGS=("gcc-$GNU" "libc6-dev-$DEB_ARCH-cross" "libgstreamer1.0-dev:$DEB_ARCH"
    "libgstreamer-plugins-base1.0-0:$DEB_ARCH" "libc6:$DEB_ARCH" qemu-user-static pkg-config file)
OVERLAY_DEB="libgstreamer-plugins-base1.0-dev:$DEB_ARCH"
TARGET_DIR="$ROOT/target/cross"
OVERLAY="$TARGET_DIR/overlay-$DEB_ARCH"
ENV_UPPER="$(tr 'a-z-' 'A-Z_' <<<"$TRIPLE")"

set_env() {
    export "CARGO_TARGET_${ENV_UPPER}_LINKER=$GNU-gcc"
    # qemu takes the target's loader and libc from the multiarch root (libc6:ARCH, in
    # /lib and /usr/lib/GNU), not from the cross toolchain's /usr/GNU: mixing the
    # cross libc with the multiarch one found through ld.so.cache hangs at the
    # first new thread.
    export "CARGO_TARGET_${ENV_UPPER}_RUNNER=$QEMU -L /"
    export "CC_${TRIPLE//-/_}=$GNU-gcc"
    export PKG_CONFIG_ALLOW_CROSS=1
    export PKG_CONFIG_LIBDIR="$OVERLAY/usr/lib/$GNU/pkgconfig:/usr/lib/$GNU/pkgconfig:/usr/share/pkgconfig"
    export QEMU_LD_PREFIX=/
}

deps() {
    local missing=()
    dpkg --print-foreign-architectures | grep -qx "$DEB_ARCH" || {
        echo "cross: adding the $DEB_ARCH architecture to dpkg"
        $SUDO dpkg --add-architecture "$DEB_ARCH"
    }
    for p in "${PKGS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        echo "cross: installing ${missing[*]}"
        # Once more after a pause if a mirror was mid-sync; then the lists there are.
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq ||
            { echo "cross: apt-get update failed; again in 15 s" >&2; sleep 15 &&
                $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq; } ||
            echo "cross: warning: apt-get update failed twice; using the package lists there are" >&2
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    rustup target list --installed | grep -qx "$TRIPLE" || rustup target add "$TRIPLE"
    overlay
}

# The target's plugins-base pkg-config files and link names, unpacked from the .deb
# (see PKGS above): prefix moved to the overlay, each lib*.so link pointing at the
# installed runtime library.
overlay() {
    local stamp="$OVERLAY/.done" deb
    [[ -f "$stamp" ]] && return
    rm -rf "$OVERLAY" "$TARGET_DIR/debs"
    mkdir -p "$OVERLAY" "$TARGET_DIR/debs"
    (cd "$TARGET_DIR/debs" && apt-get download -q "$OVERLAY_DEB" >/dev/null)
    deb="$(ls "$TARGET_DIR"/debs/*.deb)"
    dpkg-deb -x "$deb" "$OVERLAY"
    local libdir="$OVERLAY/usr/lib/$GNU"
    sed -i "s|^prefix=.*|prefix=$OVERLAY/usr|" "$libdir"/pkgconfig/*.pc
    for l in "$libdir"/lib*.so; do
        local real
        real="$(readlink "$l")"
        [[ -e "/usr/lib/$GNU/$real" ]] || { echo "cross: /usr/lib/$GNU/$real missing" >&2; exit 1; }
        ln -sf "/usr/lib/$GNU/$real" "$l"
    done
    touch "$stamp"
}

case "$cmd" in
deps) deps ;;
env)
    set_env
    for v in "CARGO_TARGET_${ENV_UPPER}_LINKER" "CARGO_TARGET_${ENV_UPPER}_RUNNER" "CC_${TRIPLE//-/_}" \
        PKG_CONFIG_ALLOW_CROSS PKG_CONFIG_LIBDIR QEMU_LD_PREFIX; do
        printf 'export %s=%q\n' "$v" "${!v}"
    done
    ;;
build)
    deps
    set_env
    locked=()
    [[ -f Cargo.lock ]] && locked=(--locked)
    cargo build --release "${locked[@]}" --target "$TRIPLE" --target-dir "$TARGET_DIR"
    bin="$TARGET_DIR/$TRIPLE/release/braid"
    file "$bin" 2>/dev/null || true
    # The release profile keeps line tables (debug = 1) for backtraces; the image
    # ships the stripped copy.
    "$GNU-strip" -o "$bin.stripped" "$bin"
    printf '{"target": "%s", "bytes": %d, "stripped_bytes": %d, "version": "%s"}\n' \
        "$TRIPLE" "$(stat -c %s "$bin")" "$(stat -c %s "$bin.stripped")" \
        "$($QEMU -L / "$bin.stripped" --version)"
    ;;
test)
    deps
    set_env
    locked=()
    [[ -f Cargo.lock ]] && locked=(--locked)
    # The library's unit tests: sans-IO cores (sender, receiver, bitrate, ts, wire),
    # config, the web settings and auth state, OTA bundles and slots, device parsers.
    # Tests that need GStreamer plugins, sockets with SO_BINDTODEVICE or traces run
    # natively (make test). TESTS: more libtest arguments (a filter, --skip ...).
    # The media unit tests look for GStreamer plugins (x264enc, v4l2src...), which are
    # installed for the build machine only: they run natively in make test.
    # shellcheck disable=SC2086
    cargo test "${locked[@]}" --lib --target "$TRIPLE" --target-dir "$TARGET_DIR" -- \
        --skip media:: --skip edge::tests::media_inputs_get_gstreamer_sources ${TESTS:-}
    ;;
*)
    sed -n '2,13p' "$0" >&2
    exit 2
    ;;
esac
