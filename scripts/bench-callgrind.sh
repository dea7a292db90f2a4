#!/usr/bin/env bash
# Instructions per frame, counted by valgrind's callgrind: the server (gateway or ceiling) runs
# under callgrind while a native closed-loop simulator drives it, and the script divides the
# server's instruction count by the frames the simulator sent. Unlike CPU time, the count does
# not move with the shared machine's load (benches/RESULTS.md, session 13), so it can tell a
# 2 % change in the server's own code apart in one run; what it cannot see is the kernel and the
# cache (at 10,000 terminals most of the difference), for which scripts/bench-threads.sh is the
# harness. The count includes the server's start (registry import, store open), the terminals'
# registration and the fold at shutdown: a few percent at the default length.
#
# Usage: scripts/bench-callgrind.sh [BIN]        gateway, fsync, 200 terminals, 25 s closed loop
# Knobs (environment):
#   CEILING=1            the ceiling server (`liengate sim --ceiling-server`) instead
#   DURABILITY=buffered  store durability of the gateway (default fsync)
#   DEVICES=200 RUN_SECONDS=25
#   TOP=40               how many functions to list, by inclusive instructions per frame
#   KEEP=DIR             keep callgrind's output (callgrind.out) in DIR for callgrind_annotate
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
BIN=${1:-target/release/liengate}
DEVICES=${DEVICES:-200}
SECONDS_RUN=${RUN_SECONDS:-25}
TOP=${TOP:-40}
command -v valgrind >/dev/null || { echo "bench-callgrind: valgrind is not installed" >&2; exit 1; }
[[ -x "$BIN" ]] || { echo "bench-callgrind: missing $BIN (cargo build --release)" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"

bench_temp_dir callgrind

VG=(valgrind --tool=callgrind --dump-instr=no "--callgrind-out-file=$DIR/callgrind.out")
if [[ "${CEILING:-0}" == 1 ]]; then
    "${VG[@]}" "$BIN" sim --ceiling-server 127.0.0.1:0 >"$DIR/out" 2>"$DIR/err" &
else
    bench_registry_csv "$DEVICES" "$DIR/registry.csv"
    bench_gateway_config "$DIR/liengate.toml" "$DIR/data" "${DURABILITY:-fsync}" "$DIR/registry.csv"
    LIENGATE_LOG=warn "${VG[@]}" "$BIN" serve --config "$DIR/liengate.toml" >"$DIR/out" 2>"$DIR/err" &
fi
SRV=$!
# Under callgrind the server starts some fifty times slower: wait up to 60 s.
ADDR=
for ((i = 0; i < 600; i++)); do
    ADDR=$(sed -n 's/^listening jt808 //p' "$DIR/out" | head -1)
    [[ -n "$ADDR" ]] && break
    kill -0 "$SRV" 2>/dev/null || break
    sleep 0.1
done
[[ -n "$ADDR" ]] || { echo "bench-callgrind: server did not start" >&2; cat "$DIR/err" >&2; exit 1; }

"$BIN" sim --target "$ADDR" --devices "$DEVICES" --duration "$SECONDS_RUN" --closed-loop \
    --json --quiet >"$DIR/sim.json" 2>"$DIR/sim.err" &
SIM=$!
wait "$SIM"
SIM=
# SIGINT: the gateway shuts down gracefully (folding the log) and callgrind writes its output at
# exit; a shutdown that takes over two minutes under callgrind is cut short.
kill -INT "$SRV"
for ((i = 0; i < 1200; i++)); do
    kill -0 "$SRV" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$SRV" 2>/dev/null && { echo "bench-callgrind: server did not exit" >&2; exit 1; }
wait "$SRV" || true
SRV=
if [[ -n "${KEEP:-}" ]]; then
    mkdir -p "$KEEP"
    cp "$DIR/callgrind.out" "$KEEP/callgrind.out"
fi

python3 - "$DIR" "$TOP" <<'EOF'
import json, re, subprocess, sys
d, top = sys.argv[1], int(sys.argv[2])
summary = json.loads(open(f"{d}/sim.json").read().strip().splitlines()[-1])
frames = summary["reports_sent"]
total = None
for line in open(f"{d}/err"):
    m = re.search(r"Collected : (\d+)", line)
    if m:
        total = int(m.group(1))
if not total or not frames:
    sys.exit("bench-callgrind: no instruction count or no frames")
print(f"acked positions/s under callgrind {summary['acked_positions_per_s']:,.0f}  frames {frames:,}")
print(f"instructions per frame {total / frames:,.0f}")
out = subprocess.run(["callgrind_annotate", "--inclusive=yes", f"{d}/callgrind.out"],
                     capture_output=True, text=True).stdout
rows = []
for line in out.splitlines():
    m = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(\S.*)$", line)
    if not m or "PROGRAM TOTALS" in line:
        continue
    name = m.group(2)
    # Keep the function, not its file: "path:function [object]".
    name = re.sub(r"^.*?:(?=[A-Za-z_<])", "", name, count=1)
    name = re.sub(r" \[[^\]]*\]$", "", name)
    if name.startswith(("std::", "core::ops", "core::panic", "start_thread", "<std::")):
        continue
    rows.append((int(m.group(1).replace(",", "")), name))
seen = set()
shown = 0
for n, name in rows:
    if shown >= top:
        break
    if name in seen:
        continue
    seen.add(name)
    print(f"{n / frames:8,.0f}  {name[:150]}")
    shown += 1
EOF
