#!/usr/bin/env bash
# `systemd-analyze verify` on the units in systemd/ and image/rootfs, with ExecStart pointed at the
# binary just built (verify insists the command exists). Run by `make test`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${1:-$ROOT/target/debug/braid}"
[[ -x "$BIN" ]] || { echo "verify-units: $BIN not built" >&2; exit 1; }
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
for unit in "$ROOT"/systemd/*.service; do
    sed "s|/usr/bin/braid|$BIN|g" "$unit" >"$TMP/$(basename "$unit")"
done
# The SD-card image's own units (image/rootfs), their scripts from the source tree.
for unit in "$ROOT"/image/rootfs/usr/lib/systemd/system/*.service; do
    sed "s|/usr/lib/braid/|$ROOT/image/rootfs/usr/lib/braid/|g" "$unit" >"$TMP/$(basename "$unit")"
done
cd "$TMP"
# verify exits 0 on many problems (unknown keys, bad values are "ignored"): any
# line it prints about our units fails the check.
out="$(systemd-analyze verify ./*.service 2>&1 || echo "systemd-analyze exited $?")"
if grep -q . <<<"$out"; then
    echo "verify-units: systemd-analyze verify complains:" >&2
    echo "$out" >&2
    exit 1
fi
echo "verify-units: $(ls ./*.service | wc -l) units OK"
# The polkit rule is JavaScript: at least check that it parses (node is there for the
# web page's tests).
if command -v node >/dev/null; then
    for r in "$ROOT"/systemd/*.rules; do
        case "$r" in *99-braid.rules) continue ;; esac # udev, not polkit
        node -e 'const fs=require("fs"); const polkit={addRule(f){if(typeof f!=="function")throw new Error("addRule needs a function")},Result:{YES:"yes",NOT_HANDLED:null}}; new Function("polkit", fs.readFileSync(process.argv[1],"utf8"))(polkit)' "$r" ||
            { echo "verify-units: $r does not parse" >&2; exit 1; }
    done
    echo "verify-units: polkit rules parse"
fi
