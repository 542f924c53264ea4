# Braid: build, test and demo on a Debian 12 machine.
#
#   make demo   install what is missing, build, run the loopback demo
#   make test   install what is missing, fmt + clippy + all tests (what CI runs)
#   make bench  run the benchmark scenarios and print their JSON reports
#   make web-deps  the web page's npm packages (uPlot; playwright-core for tests/browser)
#
# Expects the shared trace directory beside the clone (../shared/traces/mahimahi),
# or BRAID_TRACES pointing at it.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

# rustup installs cargo here; make sure it is found even from a bare shell.
export PATH := $(HOME)/.cargo/bin:$(PATH)

# Traces for tests and the demo (crate code reads BRAID_TRACES too).
BRAID_TRACES ?= $(CURDIR)/../shared/traces/mahimahi
export BRAID_TRACES

CARGO ?= cargo
LOCKED := $(if $(wildcard Cargo.lock),--locked,)

# GStreamer plugins the edge pipeline and relay outputs use (x264enc: ugly; srt, webrtcdsp,
# mpegtsmux, rtmp2: bad; timeoverlay: x; alsasrc: alsa; avenc_aac/avdec_h264: libav).
GST_PLUGIN_PKGS := gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
	gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-x gstreamer1.0-alsa

# apt-get needs root; use sudo when not root.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# apt-get update, once more after a pause if a mirror was mid-sync ("File has unexpected
# size"); if it still fails, install from the package lists there are (apt-get install
# then fails by itself if a package cannot be had).
APT_UPDATE := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq || \
	{ echo "apt-get update failed; again in 15 s" >&2; sleep 15; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq; } || \
	echo "warning: apt-get update failed twice; using the package lists there are" >&2

.PHONY: deps web-deps build test demo bench bench-web bench-relay clean check-traces \
	aarch64 armv7 test-aarch64 cross-aarch64 cross-armv7 image image-deps image-check

## deps: install missing system packages and rustup components (quiet when all present)
deps:
	@missing=""; \
	{ command -v ffprobe && command -v ffmpeg; } >/dev/null 2>&1 || missing="$$missing ffmpeg"; \
	command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	command -v pkg-config >/dev/null 2>&1 || missing="$$missing pkg-config"; \
	command -v cc >/dev/null 2>&1 || missing="$$missing build-essential"; \
	command -v srt-live-transmit >/dev/null 2>&1 || missing="$$missing srt-tools"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v rauc >/dev/null 2>&1 || missing="$$missing rauc"; \
	command -v mksquashfs >/dev/null 2>&1 || missing="$$missing squashfs-tools"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	command -v dbus-daemon >/dev/null 2>&1 || missing="$$missing dbus-daemon"; \
	command -v gst-inspect-1.0 >/dev/null 2>&1 || missing="$$missing gstreamer1.0-tools"; \
	command -v minisign >/dev/null 2>&1 || missing="$$missing minisign"; \
	command -v mkfs.vfat >/dev/null 2>&1 || missing="$$missing dosfstools"; \
	command -v mcopy >/dev/null 2>&1 || missing="$$missing mtools"; \
	command -v sfdisk >/dev/null 2>&1 || missing="$$missing fdisk"; \
	command -v jq >/dev/null 2>&1 || missing="$$missing jq"; \
	command -v debugfs >/dev/null 2>&1 || missing="$$missing e2fsprogs"; \
	pkg-config --exists gstreamer-app-1.0 2>/dev/null || missing="$$missing libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev"; \
	for pkg in $(GST_PLUGIN_PKGS); do \
		dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "ok installed" || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "deps: installing$$missing"; \
		$(APT_UPDATE); \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi; \
	if ! command -v rustup >/dev/null 2>&1 && ! command -v $(CARGO) >/dev/null 2>&1; then \
		echo "deps: no Rust toolchain found (install rustup: https://rustup.rs)" >&2; exit 1; \
	fi; \
	$(CARGO) clippy --version >/dev/null 2>&1 || { echo "deps: adding rustup component clippy"; rustup component add clippy; }; \
	$(CARGO) fmt --version >/dev/null 2>&1 || { echo "deps: adding rustup component rustfmt"; rustup component add rustfmt; }

## web-deps: uPlot (embedded in the binary by build.rs) and playwright-core (the browser
## scripts in tests/browser) into web/node_modules, from web/package-lock.json; installs
## Debian's nodejs and npm first if npm is missing
web-deps:
	@if ! command -v npm >/dev/null 2>&1; then \
		echo "web-deps: installing nodejs npm"; \
		$(APT_UPDATE); \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; \
	fi; \
	if [ ! -d web/node_modules/uplot ] || [ web/package-lock.json -nt web/node_modules ]; then \
		echo "web-deps: npm ci in web/"; \
		(cd web && npm ci --no-audit --no-fund --loglevel=error); \
		touch web/node_modules; \
	fi

## build: release binary at target/release/braid (the web page embedded, charts included)
build: web-deps
	$(CARGO) build --release $(LOCKED)

## aarch64 / armv7: release binaries for the ARM boards by Debian multiarch, no Docker
## (scripts/cross.sh: installs the target's gcc and GStreamer packages, qemu-user-static);
## prints the size and `braid --version` run under qemu
aarch64: web-deps
	scripts/cross.sh build aarch64

armv7: web-deps
	scripts/cross.sh build armv7

## test-aarch64: the library's unit tests built for aarch64 and run under qemu-aarch64-static
test-aarch64: web-deps check-traces
	scripts/cross.sh test aarch64

## cross-aarch64 / cross-armv7: the same with the `cross` tool, for users with Docker
## (Cross.toml, cross/Dockerfile.*)
cross-aarch64: web-deps
	cross build --release $(LOCKED) --target aarch64-unknown-linux-gnu

cross-armv7: web-deps
	cross build --release $(LOCKED) --target armv7-unknown-linux-gnueabihf

## image: the SD-card image for Raspberry Pi 4 / CM4 and the RAUC + braid update bundles
## of the same root, in target/image (image/build.sh; needs root, downloads Debian
## arm64 packages, ~15-25 min on 2 cores); ends with its content check
image: image-deps aarch64
	image/build.sh all

## image-check: the checks of `make image` again on what it built (no rebuild)
image-check: image-deps
	image/build.sh check

image-deps: deps
	@missing=""; \
	command -v mmdebstrap >/dev/null 2>&1 || missing="$$missing mmdebstrap"; \
	command -v qemu-aarch64-static >/dev/null 2>&1 || missing="$$missing qemu-user-static"; \
	command -v file >/dev/null 2>&1 || missing="$$missing file"; \
	if [ -n "$$missing" ]; then \
		echo "image-deps: installing$$missing"; \
		$(APT_UPDATE); \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

check-traces:
	@if [ ! -d "$(BRAID_TRACES)" ]; then \
		echo "error: trace directory $(BRAID_TRACES) is missing." >&2; \
		echo "       Clone the repo with ../shared beside it (../shared/traces/mahimahi)," >&2; \
		echo "       or set BRAID_TRACES to the directory holding the mahimahi traces." >&2; \
		exit 1; \
	fi

## test: formatting, lints, all tests, then the library's unit tests built for aarch64 and
## run under qemu (the CI entry point, see .ci/run)
test: deps web-deps check-traces
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets $(LOCKED) -- -D warnings
	$(CARGO) test $(LOCKED)
	scripts/verify-units.sh
	scripts/cross.sh test aarch64

## demo: relay + emulator + edge + ffmpeg on loopback (scripts/demo.sh; DEMO_SECONDS=60)
demo: deps web-deps build check-traces
	scripts/demo.sh

## bench: benchmark scenarios, JSON reports on stdout (scripts/bench.sh)
bench: build check-traces
	scripts/bench.sh

## bench-web: the web page's weight and time to first render (scripts/bench-web.sh)
bench-web: build
	scripts/bench-web.sh

## bench-relay: one relay on one core against many in-process edges (scripts/bench-relay.sh)
bench-relay: build
	scripts/bench-relay.sh

clean:
	$(CARGO) clean
