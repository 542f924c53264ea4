#!/usr/bin/env bash
# Braid benchmarks (docs/BENCHMARKS.md): runs the acceptance scenarios with
# `braid sim` and prints each JSON report on stdout (headers go to stderr).
# Reports are also saved in target/bench/NAME.json.
#
# Environment:
#   BRAID          binary (default target/release/braid)
#   BENCH_VIRTUAL=1  run everything in virtual time (fast; default: the three
#                  acceptance scenarios run in real time over QUIC + emulator,
#                  the rate sweeps in virtual time)
#   BENCH_RATES_500, BENCH_RATES_300   rates (bit/s) for the sweeps
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BRAID="${BRAID:-$ROOT/target/release/braid}"
OUT="$ROOT/target/bench"
export BRAID_TRACES="${BRAID_TRACES:-$ROOT/../shared/traces/mahimahi}"
[[ -x "$BRAID" ]] || { echo "bench: $BRAID not found; run 'make build'" >&2; exit 1; }
mkdir -p "$OUT"

REAL=()
[[ "${BENCH_VIRTUAL:-0}" == 1 ]] && REAL=(--virtual)
RATES_500="${BENCH_RATES_500:-5000000 5500000 6000000 6500000 7000000 7500000 8000000}"
RATES_300="${BENCH_RATES_300:-4000000 4500000 5000000 5500000 6000000 6500000 7000000}"

# run NAME ARGS...: braid sim ARGS, report to stdout and $OUT/NAME.json
run() {
    local name="$1"
    shift
    echo "== $name: braid sim $*" >&2
    "$BRAID" sim "$@" | tee "$OUT/$name.json"
}

# field FILE KEY: a top-level number from a saved report (needs python3)
field() {
    python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get(sys.argv[2]))' "$1" "$2"
}

# 1. Dev scenario at 5 Mbit/s (also gives the wire overhead: "wire_overhead").
run dev-5M --scenario dev --rate 5M "${REAL[@]}"

# 2. Highest constant rate with >= 99.9 % on time, at 500 ms and 300 ms, as a
#    fraction of the perfect-aggregate bound ("bound_bps" in each report).
sweep() {
    local budget="$1" rates="$2" best="" bound="" r
    local extra=()
    [[ "$budget" != 500 ]] && extra=(--latency "$budget")
    for r in $rates; do
        run "dev-${budget}ms-$r" --scenario dev --rate "$r" --virtual "${extra[@]}"
        if command -v python3 >/dev/null; then
            bound="$(field "$OUT/dev-${budget}ms-$r.json" bound_bps)"
            if python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) >= 0.999 else 1)' \
                "$(field "$OUT/dev-${budget}ms-$r.json" on_time_fraction)"; then
                best="$r"
            fi
        fi
    done
    if [[ -n "$bound" ]]; then
        python3 -c 'import json, sys
best = float(sys.argv[2]) if sys.argv[2] else None
bound = float(sys.argv[3])
print(json.dumps({"bench": "highest-rate", "budget_ms": int(sys.argv[1]),
                  "highest_bps": best, "bound_bps": bound,
                  "fraction_of_bound": best / bound if best else None}))' \
            "$budget" "$best" "$bound" | tee "$OUT/highest-rate-${budget}ms.json"
    fi
}
sweep 500 "$RATES_500"
if "$BRAID" sim --help 2>&1 | grep -q -- '--latency'; then
    sweep 300 "$RATES_300"
else
    echo '{"bench": "highest-rate", "budget_ms": 300, "status": "skipped: braid sim has no --latency flag yet"}'
fi

# 3. Failover.
run failover-clean --scenario failover-clean "${REAL[@]}"
run failover-real --scenario failover-real "${REAL[@]}"

# 4. Relay CPU per Gbit/s: no command yet.
echo '{"bench": "relay-cpu-per-gbit", "status": "pending: no benchmark command yet"}'
