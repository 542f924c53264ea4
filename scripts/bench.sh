#!/usr/bin/env bash
# Braid benchmarks (docs/BENCHMARKS.md): runs the acceptance scenarios with
# `braid sim` and prints each JSON report on stdout (headers go to stderr).
# Reports are also saved in target/bench/NAME.json. Takes about 17 minutes: the
# scenarios run in real time (QUIC over loopback through the link emulator).
#
# Environment:
#   BRAID            binary (default target/release/braid)
#   BENCH_VIRTUAL=1  run everything in virtual time (fast)
#   BENCH_RELAY=0    skip the relay load test (scripts/bench-relay.sh)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BRAID="${BRAID:-$ROOT/target/release/braid}"
OUT="$ROOT/target/bench"
export BRAID_TRACES="${BRAID_TRACES:-$ROOT/../shared/traces/mahimahi}"
[[ -x "$BRAID" ]] || { echo "bench: $BRAID not found; run 'make build'" >&2; exit 1; }
mkdir -p "$OUT"

MODE=()
[[ "${BENCH_VIRTUAL:-0}" == 1 ]] && MODE=(--virtual)

# run NAME ARGS...: braid sim ARGS, report to stdout and $OUT/NAME.json
run() {
    local name="$1"
    shift
    echo "== $name: braid sim $*" >&2
    "$BRAID" sim "$@" | tee "$OUT/$name.json"
}

# 1. Dev scenario at 5 Mbit/s.
run dev-5M --scenario dev --rate 5M "${MODE[@]}"
# 2. Highest constant rate with >= 99.9 % on time, as a fraction of the bound
#    (bisection in virtual time).
run search-500 --scenario dev --search --virtual
run search-300 --scenario dev --search --virtual --latency 300
# 3-4. Failover.
run failover-clean --scenario failover-clean "${MODE[@]}"
run failover-real --scenario failover-real "${MODE[@]}"
# 5. Wire overhead when nothing is lost.
run ideal-links --scenario ideal-links "${MODE[@]}"
# 7. Encoder in the loop: test pattern (snow) through x264enc 720p30 under the bitrate
#    controller on the dev traces (three runs: real-time runs vary), the capacity step,
#    and the same in virtual time with the encoder model.
if [[ "${BENCH_VIRTUAL:-0}" != 1 ]]; then
    for i in 1 2 3; do
        run "x264-dev-$i" --scenario dev --source x264
    done
    run x264-step --scenario capacity-step --source x264
    python3 "$ROOT/scripts/plot_bitrate.py" "$OUT/x264-dev-1.json" "$OUT/bitrate-dev.svg"
fi
run x264-dev-virtual --scenario dev --source x264 --virtual
run x264-step-virtual --scenario capacity-step --source x264 --virtual
# 6. Relay ingest on one core, CPU per Gbit.
if [[ "${BENCH_RELAY:-1}" == 1 ]]; then
    echo "== relay: scripts/bench-relay.sh" >&2
    SESSIONS="${SESSIONS:-50}" DURATION="${DURATION:-15}" "$ROOT/scripts/bench-relay.sh" | tee "$OUT/relay.json"
fi
