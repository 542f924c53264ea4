#!/usr/bin/env bash
# Relay ingest benchmark: one relay process pinned to one core takes bonded media
# from many in-process edges (`braid loadgen`, pinned to another core) over QUIC on
# loopback, no emulation. Prints ONE JSON object on stdout (progress on stderr).
#
# Builds nothing: uses target/release/braid (or $BRAID; $RELAY_BRAID for the relay).
#
# Environment (defaults in brackets):
#   SESSIONS [50]  LINKS [2]  RATE [10M] per session  DURATION [20] s measured
#   WARMUP [3] s before the window   RELAY_CPU [0]  EDGE_CPU [1]
#   PORT [random 20000-39999] QUIC; the stats HTTP port is PORT+1
#   SINK [1] send the relay's outputs to a bound socket that never reads (the
#       kernel drops at enqueue); SINK=0 sends them to 127.0.0.1:9 with nothing
#       listening, which costs an ICMP port-unreachable attempt per datagram in
#       the relay's context (~17 % of its CPU on loopback; no send errors, since
#       the output socket is unconnected). Either way the loopback receive path
#       of every output datagram is charged to the relay (a NIC would not be).
#   NICE [0] niceness of relay and loadgen (e.g. -10 as root, so that builds
#       running on the same cores do not take the benchmark's CPU). With
#       kernel.sched_autogroup_enabled, nice only ranks tasks of one session, so
#       both run in their own session (setsid) with that autogroup's nice set too.
#   KEEP=1 keeps the temp dir (relay.log, loadgen.log, configs)
#
# Relay CPU is utime+stime of the relay process (/proc/PID/stat, CLK_TCK ticks)
# sampled when the loadgen opens and closes its window; byte counters come from
# the relay's /api/stats at the same moments. *_core_busy is the whole core's
# non-idle fraction over the window (from /proc/stat): if it is ~1.0 while
# relay_cpu_util is well below, something else (a build?) was using that core. "per Gbit" divides CPU seconds by
# Gbit of media received by the relay (relay_*) or offered by the sources (edge_*).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BRAID="${BRAID:-$ROOT/target/release/braid}"
# Binary for the relay only (A/B comparisons of relay builds); default $BRAID.
RELAY_BRAID="${RELAY_BRAID:-$BRAID}"
SESSIONS="${SESSIONS:-50}"
LINKS="${LINKS:-2}"
RATE="${RATE:-10M}"
DURATION="${DURATION:-20}"
WARMUP="${WARMUP:-3}"
RELAY_CPU="${RELAY_CPU:-0}"
EDGE_CPU="${EDGE_CPU:-1}"
NICE="${NICE:-0}"
PORT="${PORT:-$((20000 + RANDOM % 20000))}"
STATS_PORT=$((PORT + 1))
SINK="${SINK:-1}"
if [[ "$SINK" == 1 ]]; then OUTPUT="127.0.0.1:$((PORT + 2))"; else OUTPUT="127.0.0.1:9"; fi

[[ -x "$BRAID" ]] || { echo "bench-relay: $BRAID not found; run 'make build'" >&2; exit 1; }
for t in taskset curl jq getconf; do
    command -v "$t" >/dev/null || { echo "bench-relay: needs $t" >&2; exit 1; }
done
TCK="$(getconf CLK_TCK)"

DIR="$(mktemp -d -t braid-bench-relay.XXXXXX)"
RELAY_PID=""
LG_PID=""
SINK_PID=""
cleanup() {
    [[ -n "$SINK_PID" ]] && kill "$SINK_PID" 2>/dev/null || true
    [[ -n "$LG_PID" ]] && kill "$LG_PID" 2>/dev/null || true
    if [[ -n "$RELAY_PID" ]]; then
        kill -TERM "$RELAY_PID" 2>/dev/null || true
        wait "$RELAY_PID" 2>/dev/null || true
    fi
    if [[ "${KEEP:-0}" == 1 ]]; then
        echo "bench-relay: kept $DIR" >&2
    else
        rm -rf "$DIR"
    fi
}
trap cleanup EXIT

# cpu PID: utime+stime in clock ticks
cpu() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
# core N: "busy total" jiffies of cpuN from /proc/stat (busy = all but idle+iowait)
core() { awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat; }
stats() { curl -sf "http://127.0.0.1:$STATS_PORT/api/stats"; }
# wait_for FILE PATTERN: until PATTERN appears in FILE (or the loadgen died)
wait_for() {
    until grep -q "$2" "$1" 2>/dev/null; do
        kill -0 "$LG_PID" 2>/dev/null || { echo "bench-relay: loadgen exited early:" >&2; cat "$DIR/loadgen.log" >&2; exit 1; }
        sleep 0.02
    done
}

FP="$("$BRAID" keygen --dir "$DIR" --name relay)"
"$BRAID" loadgen prepare --dir "$DIR" --sessions "$SESSIONS" \
    --listen "127.0.0.1:$PORT" --stats-listen "127.0.0.1:$STATS_PORT" --output "$OUTPUT" >/dev/null
if [[ "$SINK" == 1 ]]; then
    command -v python3 >/dev/null || { echo "bench-relay: SINK=1 needs python3 (or SINK=0)" >&2; exit 1; }
    python3 -c '
import signal, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
signal.pause()' "$((PORT + 2))" &
    SINK_PID=$!
fi

echo "bench-relay: relay on CPU $RELAY_CPU (127.0.0.1:$PORT, outputs to $OUTPUT), $SESSIONS sessions x $LINKS links x $RATE on CPU $EDGE_CPU, ${DURATION}s" >&2
# prio PID: apply NICE to PID's autogroup (it runs in its own session)
# (only once PID leads its own session: before that it would renice ours).
prio() {
    [[ "$NICE" != 0 ]] || return 0
    for _ in $(seq 100); do
        [[ "$(ps -o sid= -p "$1" | tr -d ' ')" == "$1" ]] && break
        sleep 0.01
    done
    [[ "$(ps -o sid= -p "$1" | tr -d ' ')" == "$1" ]] || { echo "bench-relay: $1 has no session of its own; not renicing" >&2; return 0; }
    echo "$NICE" >"/proc/$1/autogroup" 2>/dev/null || echo "bench-relay: cannot set autogroup nice of $1" >&2
}
RUST_LOG="${RUST_LOG:-warn}" setsid nice -n "$NICE" taskset -c "$RELAY_CPU" "$RELAY_BRAID" relay --config "$DIR/relay.toml" 2>"$DIR/relay.log" &
RELAY_PID=$!
prio "$RELAY_PID"
for _ in $(seq 100); do
    stats >/dev/null 2>&1 && break
    kill -0 "$RELAY_PID" 2>/dev/null || { echo "bench-relay: relay exited:" >&2; cat "$DIR/relay.log" >&2; exit 1; }
    sleep 0.05
done
stats >/dev/null || { echo "bench-relay: relay stats not answering" >&2; exit 1; }

setsid nice -n "$NICE" taskset -c "$EDGE_CPU" "$BRAID" loadgen run --dir "$DIR" --relay "127.0.0.1:$PORT" \
    --relay-fingerprint "$FP" --sessions "$SESSIONS" --rate "$RATE" --links "$LINKS" \
    --duration "$DURATION" --warmup "$WARMUP" >"$DIR/loadgen.json" 2>"$DIR/loadgen.log" &
LG_PID=$!
prio "$LG_PID"

wait_for "$DIR/loadgen.log" "window start"
C0="$(cpu "$RELAY_PID")"
read -r RB0 RT0 < <(core "$RELAY_CPU")
read -r EB0 ET0 < <(core "$EDGE_CPU")
T0="$(date +%s.%N)"
stats >"$DIR/stats0.json"
wait_for "$DIR/loadgen.log" "window end"
C1="$(cpu "$RELAY_PID")"
read -r RB1 RT1 < <(core "$RELAY_CPU")
read -r EB1 ET1 < <(core "$EDGE_CPU")
T1="$(date +%s.%N)"
stats >"$DIR/stats1.json"
wait "$LG_PID"
LG_PID=""
# Grab /proc/PID/status thread count and context switches while the relay still runs.
THREADS="$(awk '/^Threads:/ { print $2 }' "/proc/$RELAY_PID/status")"

# sum FILE FIELD: over sessions
sum() { jq "[.sessions[].$2] | add // 0" "$1"; }
jq -n \
    --argjson sessions "$SESSIONS" --argjson links "$LINKS" \
    --argjson lg "$(cat "$DIR/loadgen.json")" \
    --argjson c0 "$C0" --argjson c1 "$C1" --argjson tck "$TCK" \
    --argjson t0 "$T0" --argjson t1 "$T1" \
    --argjson in0 "$(sum "$DIR/stats0.json" receiver.bytes_in)" \
    --argjson in1 "$(sum "$DIR/stats1.json" receiver.bytes_in)" \
    --argjson dg0 "$(sum "$DIR/stats0.json" receiver.datagrams_in)" \
    --argjson dg1 "$(sum "$DIR/stats1.json" receiver.datagrams_in)" \
    --argjson rel0 "$(sum "$DIR/stats0.json" receiver.released_bytes)" \
    --argjson rel1 "$(sum "$DIR/stats1.json" receiver.released_bytes)" \
    --argjson lost "$(sum "$DIR/stats1.json" receiver.lost)" \
    --argjson late "$(sum "$DIR/stats1.json" receiver.late)" \
    --argjson dups "$(sum "$DIR/stats1.json" receiver.duplicates)" \
    --argjson outerr "$(sum "$DIR/stats1.json" output_errors)" \
    --argjson nsess "$(jq '.sessions | length' "$DIR/stats1.json")" \
    --argjson conns "$(jq '.connections_active' "$DIR/stats1.json")" \
    --arg output "$OUTPUT" \
    --argjson threads "${THREADS:-0}" \
    --argjson rcore "$(awk -v b=$((RB1 - RB0)) -v t=$((RT1 - RT0)) 'BEGIN { print (t > 0 ? b / t : 0) }')" \
    --argjson ecore "$(awk -v b=$((EB1 - EB0)) -v t=$((ET1 - ET0)) 'BEGIN { print (t > 0 ? b / t : 0) }')" \
    '
    ($t1 - $t0) as $w
    | (($c1 - $c0) / $tck) as $rcpu
    | (($in1 - $in0) * 8) as $rxbits
    | {
        sessions: $sessions,
        links_per_session: $links,
        window_s: $w,
        offered_mbps: $lg.offered_mbps,
        edge_sent_mbps: $lg.sent_mbps,
        relay_received_mbps: ($rxbits / $w / 1e6),
        relay_received_datagrams_per_s: (($dg1 - $dg0) / $w),
        relay_released_mbps: (($rel1 - $rel0) * 8 / $w / 1e6),
        relay_cpu_s: $rcpu,
        relay_cpu_util: ($rcpu / $w),
        relay_core_busy: $rcore,
        relay_cpu_s_per_gbit: (if $rxbits > 0 then $rcpu / ($rxbits / 1e9) else null end),
        edge_cpu_s: $lg.edge_cpu_s,
        edge_cpu_util: $lg.edge_cpu_util,
        edge_core_busy: $ecore,
        edge_cpu_s_per_gbit: $lg.edge_cpu_s_per_gbit,
        relay_sessions: $nsess,
        relay_connections: $conns,
        links_connected_at_edges: $lg.links_connected,
        lost_total: $lost,
        late_total: $late,
        duplicates_total: $dups,
        edge_expired_unsent: $lg.expired_unsent,
        edge_retransmits: $lg.retransmits,
        relay_output: $output,
        relay_output_errors: $outerr,
        relay_threads: $threads
      }'
