#!/usr/bin/env bash
# Page weight and time to first render of the edge's web page on loopback
# (docs/BENCHMARKS.md): a relay and an edge (test source, two loopback links) from
# target/release/braid, then tests/browser/weight.mjs in headless Chromium. Prints
# the script's JSON line.
#
#   RUNS       loads to take the medians over (default 5)
#   WEAK_KBPS  the emulated weak link of the `weak` figures (default 500)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BRAID="${BRAID:-$ROOT/target/release/braid}"
[[ -x "$BRAID" ]] || { echo "bench-web: $BRAID not built (make build)" >&2; exit 1; }
[[ -d "$ROOT/web/node_modules/playwright-core" ]] || { echo "bench-web: run make web-deps" >&2; exit 1; }
TMP="$(mktemp -d "${TMPDIR:-/tmp}/braid-bench-web.XXXXXX")"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

fp() { grep -o 'sha256:[0-9a-fA-F]\{64\}' | head -n 1; }
RELAY_FP="$("$BRAID" keygen --dir "$TMP" --name relay | fp)"
DEVICE_FP="$("$BRAID" keygen --dir "$TMP" --name device | fp)"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RELAY_PORT="$(port)"
WEB_PORT="$(port)"
cat >"$TMP/relay.toml" <<TOML
[relay]
listen = "127.0.0.1:$RELAY_PORT"
cert = "relay.crt"
key = "relay.key"
[stats]
listen = "127.0.0.1:0"
[[device]]
id = "bench"
fingerprint = "$DEVICE_FP"
[[device.output]]
kind = "udp"
address = "127.0.0.1:9"
TOML
cat >"$TMP/edge.toml" <<TOML
[device]
id = "bench"
cert = "device.crt"
key = "device.key"
[relay]
address = "127.0.0.1:$RELAY_PORT"
fingerprint = "$RELAY_FP"
[input]
kind = "test"
rate_kbps = 3000
[stats]
enabled = false
[web]
listen = "127.0.0.1:$WEB_PORT"
[[link]]
name = "link0"
bind = "127.0.0.11"
[[link]]
name = "link1"
bind = "127.0.0.12"
TOML
"$BRAID" relay --config "$TMP/relay.toml" >"$TMP/relay.log" 2>&1 &
PIDS+=("$!")
"$BRAID" edge --config "$TMP/edge.toml" >"$TMP/edge.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 100); do
    if python3 -c 'import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
        "http://127.0.0.1:$WEB_PORT/api/health" 2>/dev/null; then
        break
    fi
    sleep 0.1
done
BASE_URL="http://127.0.0.1:$WEB_PORT" node "$ROOT/tests/browser/weight.mjs"
