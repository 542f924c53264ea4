#!/usr/bin/env bash
# Braid loopback demo: the whole job on this machine.
#
#   braid edge: test pattern with a running clock + tone -> x264enc + AAC -> MPEG-TS,
#   bitrate set by the controller --3 links (127.0.0.11/12/13)-->
#   braid emulate (127.0.0.1:7100, real LTE uplink traces, 40 ms each way) -->
#   braid relay (127.0.0.1:7000, 500 ms latency) --udp:6000--> ffprobe
#                                                --srt listener :9000--> srt-live-transmit -> ffprobe
#                                                --file--> TMP/recordings/demo-*.ts (10 s segments)
#
# Uses only target/release/braid (override with BRAID=...), GStreamer (in the edge)
# and ffprobe / srt-live-transmit to check the outputs.
# Environment:
#   DEMO_SECONDS   how long to keep running after the checks (default 60; 0 = until Ctrl-C)
#   BRAID_TRACES   mahimahi trace directory (default ../shared/traces/mahimahi)
#   DEMO_KEEP=1    keep the temp dir (configs, keys, logs) even on success
#
#   DEMO_WEB       where the edge's web page listens (default 127.0.0.1:8080)
#   DEMO_PASSWORD  the page's admin password (default braid-demo)
#
# The edge's web page: http://127.0.0.1:8080/ (log in with DEMO_PASSWORD). Stats as
# JSON without a login, for scripts on the machine: http://127.0.0.1:8081/api/stats
# (edge) and http://127.0.0.1:9091/api/stats (relay).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

BRAID="${BRAID:-$ROOT/target/release/braid}"
TRACES="${BRAID_TRACES:-$ROOT/../shared/traces/mahimahi}"
DEMO_SECONDS="${DEMO_SECONDS:-60}"

RELAY_LISTEN=127.0.0.1:7000
EMU_LISTEN=127.0.0.1:7100
OUTPUT_PORT=6000
SRT_PORT=9000
EDGE_STATS=127.0.0.1:8081
DEMO_WEB="${DEMO_WEB:-127.0.0.1:8080}"
DEMO_PASSWORD="${DEMO_PASSWORD:-braid-demo}"
RELAY_STATS=127.0.0.1:9091
LINK_IPS=(127.0.0.11 127.0.0.12 127.0.0.13)
LINK_TRACES=(Verizon-LTE-short.up TMobile-LTE-short.up ATT-LTE-driving.up)

die() { echo "demo: error: $*" >&2; exit 1; }

[[ -x "$BRAID" ]] || die "$BRAID not found; run 'make build' (or 'make demo') first"
command -v ffprobe >/dev/null || die "ffprobe not found; run 'make deps'"
for t in "${LINK_TRACES[@]}"; do
    [[ -f "$TRACES/$t" ]] || die "trace $TRACES/$t missing; put ../shared beside the repo or set BRAID_TRACES"
done

TMP="$(mktemp -d "${TMPDIR:-/tmp}/braid-demo.XXXXXX")"
PIDS=()
NAMES=()
OK=0

cleanup() {
    local i
    trap - EXIT INT TERM
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill "${PIDS[i]}" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    if [[ "$OK" == 1 && "${DEMO_KEEP:-0}" != 1 ]]; then
        rm -rf "$TMP"
    else
        echo "demo: configs and logs kept in $TMP"
    fi
}
trap cleanup EXIT
trap 'echo; echo "demo: interrupted"; OK=1; exit 0' INT TERM

# start NAME CMD...: run in the background, output to $TMP/NAME.log
start() {
    local name="$1"
    shift
    "$@" </dev/null >"$TMP/$name.log" 2>&1 &
    PIDS+=("$!")
    NAMES+=("$name")
}

# All started processes still running? Otherwise show the dead one's log and fail.
check_alive() {
    local i
    for i in "${!PIDS[@]}"; do
        if ! kill -0 "${PIDS[i]}" 2>/dev/null; then
            echo "demo: ${NAMES[i]} exited; last lines of $TMP/${NAMES[i]}.log:" >&2
            tail -n 20 "$TMP/${NAMES[i]}.log" >&2 || true
            exit 1
        fi
    done
}

# GET http://ADDR/PATH, body on stdout (curl, else python3, else bash /dev/tcp).
http_get() {
    local addr="$1" path="$2"
    if command -v curl >/dev/null; then
        curl -s --max-time 2 "http://$addr$path"
    elif command -v python3 >/dev/null; then
        python3 -c 'import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())' "http://$addr$path"
    else
        local host="${addr%:*}" port="${addr##*:}"
        exec 3<>"/dev/tcp/$host/$port" || return 1
        printf 'GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n' "$path" "$addr" >&3
        timeout 2 cat <&3 | sed '1,/^\r\{0,1\}$/d'
        exec 3<&-
    fi
}

# One-line summary of a stats JSON document: the first occurrence of a few counters,
# wherever they sit in the document (the schema is still growing).
summarize() {
    if command -v python3 >/dev/null; then
        python3 -c '
import json, sys
keys = sys.argv[1].split(",")
try:
    doc = json.load(sys.stdin)
except Exception:
    print("(no stats)"); sys.exit(0)
found = {}
def walk(v):
    if isinstance(v, dict):
        for k, x in v.items():
            if k in keys and k not in found and isinstance(x, (int, float, str)):
                found[k] = x
            walk(x)
    elif isinstance(v, list):
        for x in v:
            walk(x)
walk(doc)
print(" ".join(f"{k}={found[k]}" for k in keys if k in found) or "(no known counters)")
' "$1"
    else
        local body
        body="$(cat)"
        echo "${#body} bytes of stats"
    fi
}

echo "demo: working directory $TMP"

# --- identities ---------------------------------------------------------------
fingerprint() { grep -o 'sha256:[0-9a-fA-F]\{64\}' | head -n 1; }
RELAY_FP="$("$BRAID" keygen --dir "$TMP" --name relay | fingerprint)"
DEVICE_FP="$("$BRAID" keygen --dir "$TMP" --name device | fingerprint)"
[[ -n "$RELAY_FP" && -n "$DEVICE_FP" ]] || die "braid keygen did not print a sha256: fingerprint"
[[ -f "$TMP/relay.crt" && -f "$TMP/relay.key" && -f "$TMP/device.crt" && -f "$TMP/device.key" ]] ||
    die "braid keygen did not write NAME.crt / NAME.key into $TMP"
echo "demo: relay  $RELAY_FP"
echo "demo: device $DEVICE_FP"

# --- configuration --------------------------------------------------------------
cat >"$TMP/relay.toml" <<TOML
[relay]
listen = "$RELAY_LISTEN"
cert = "relay.crt"
key = "relay.key"
latency_ms = 500

[stats]
listen = "$RELAY_STATS"

[[device]]
id = "demo"
fingerprint = "$DEVICE_FP"

[[device.output]]
kind = "udp"
address = "127.0.0.1:$OUTPUT_PORT"

[[device.output]]
kind = "srt"
mode = "listener"
address = "127.0.0.1:$SRT_PORT"

[[device.output]]
kind = "file"
dir = "recordings"
segment_seconds = 10
keep = 6
TOML

cat >"$TMP/edge.toml" <<TOML
[device]
id = "demo"
cert = "device.crt"
key = "device.key"

[relay]
# The emulator, which forwards to the relay at $RELAY_LISTEN.
address = "$EMU_LISTEN"
fingerprint = "$RELAY_FP"
latency_ms = 500

[input]
# The built-in test signal through the real encoder (x264enc here; a Pi would take
# its V4L2 hardware encoder with encoder = "auto"), under the bitrate controller.
kind = "pattern"
pattern = "ball"

[video]
encoder = "auto"
width = 1280
height = 720
fps = 30
max_kbps = 6000

[stats]
listen = "$EDGE_STATS"

[web]
# The local page for engineers (docs/web-api.md). The first-boot password file is
# hashed into web-password at start and deleted.
listen = "$DEMO_WEB"
initial_password_file = "web-initial-password"
TOML
printf '%s\n' "$DEMO_PASSWORD" >"$TMP/web-initial-password"
for i in "${!LINK_IPS[@]}"; do
    printf '\n[[link]]\nname = "link%d"\nbind = "%s"\n' "$i" "${LINK_IPS[i]}" >>"$TMP/edge.toml"
done

# --- processes -------------------------------------------------------------------
export RUST_LOG="${RUST_LOG:-info}"
start relay "$BRAID" relay --config "$TMP/relay.toml"
EMU_ARGS=(emulate --listen "$EMU_LISTEN" --relay "$RELAY_LISTEN")
for i in "${!LINK_IPS[@]}"; do
    EMU_ARGS+=(--link "${LINK_IPS[i]},name=${LINK_TRACES[i]%.up},trace=$TRACES/${LINK_TRACES[i]},delay=40ms")
done
start emulate "$BRAID" "${EMU_ARGS[@]}"
sleep 1
check_alive
start edge "$BRAID" edge --config "$TMP/edge.toml"
sleep 1
check_alive

echo "demo: relay, emulator and edge (test pattern -> x264enc) running; logs in $TMP"

sleep 5
check_alive

# --- check the relay's output ---------------------------------------------------------
echo "demo: probing the relay's output udp://127.0.0.1:$OUTPUT_PORT"
PROBE="$(timeout 30 ffprobe -v error -probesize 5000000 -analyzeduration 5000000 \
    -show_entries stream=codec_type,codec_name,width,height -of json \
    -i "udp://127.0.0.1:$OUTPUT_PORT?timeout=15000000" 2>"$TMP/ffprobe.err" || true)"
echo "$PROBE"
if ! grep -q '"codec_type": *"video"' <<<"$PROBE"; then
    echo "demo: FAILED: no video stream in the relay's output on udp://127.0.0.1:$OUTPUT_PORT" >&2
    cat "$TMP/ffprobe.err" >&2 || true
    check_alive
    exit 1
fi
echo "demo: OK: the relay's output carries video"

if command -v srt-live-transmit >/dev/null; then
    echo "demo: reading 4 s from the relay's SRT output srt://127.0.0.1:$SRT_PORT"
    timeout 4 srt-live-transmit -q "srt://127.0.0.1:$SRT_PORT" file://con >"$TMP/srt.ts" 2>"$TMP/srt.err" || true
    FRAMES="$(ffprobe -v error -select_streams v:0 -count_frames -show_entries stream=nb_read_frames \
        -of csv=p=0 "$TMP/srt.ts" 2>/dev/null | grep -m1 '[0-9]' || true)"
    if [[ -z "$FRAMES" || "$FRAMES" == 0 ]]; then
        echo "demo: FAILED: no decodable video from the SRT output ($(wc -c <"$TMP/srt.ts") bytes)" >&2
        exit 1
    fi
    echo "demo: OK: the SRT output gave $FRAMES decodable video frames in 4 s (watch: ffplay srt://127.0.0.1:$SRT_PORT)"
fi
if http_get "$DEMO_WEB" /api/health 2>/dev/null | grep -q '"ok": *true'; then
    echo "demo: OK: web page at http://$DEMO_WEB/ (password: $DEMO_PASSWORD)"
else
    echo "demo: FAILED: the edge's web page does not answer at http://$DEMO_WEB/api/health" >&2
    exit 1
fi
echo "demo: recording into $TMP/recordings: $(ls "$TMP/recordings" 2>/dev/null | tr '\n' ' ')"

RELAY_COUNTERS=released,lost,late,duplicates,latency_ms,restarts,dropped_bytes
EDGE_COUNTERS=state,rtt_ms,rate_bps,retransmits,duplicates,target_bps,source_bps,rung
body="$(http_get "$RELAY_STATS" /api/stats 2>/dev/null)" || body=""
echo "demo: relay stats (http://$RELAY_STATS/api/stats): $(summarize "$RELAY_COUNTERS" <<<"$body")"
[[ -z "$body" ]] || printf '%s\n' "${body:0:4000}"
body="$(http_get "$EDGE_STATS" /api/stats 2>/dev/null)" || body=""
echo "demo: edge stats (http://$EDGE_STATS/api/stats): $(summarize "$EDGE_COUNTERS" <<<"$body")"

# --- keep running ---------------------------------------------------------------------
if [[ "$DEMO_SECONDS" == 0 ]]; then
    echo "demo: running until Ctrl-C"
else
    echo "demo: running for $DEMO_SECONDS s (DEMO_SECONDS=0 runs until Ctrl-C)"
fi
START=$SECONDS
while [[ "$DEMO_SECONDS" == 0 ]] || ((SECONDS - START < DEMO_SECONDS)); do
    sleep 5
    check_alive
    body="$(http_get "$RELAY_STATS" /api/stats 2>/dev/null)" || body=""
    printf 'demo: t=%3ds relay: %s\n' "$((SECONDS - START))" "$(summarize "$RELAY_COUNTERS" <<<"$body")"
done
OK=1
echo "demo: done"
