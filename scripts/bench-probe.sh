#!/usr/bin/env bash
# One gateway and one closed-loop simulator on 127.0.0.1, and what the gateway's /metrics and data
# dir say about the run: the probe behind the admission and compaction figures of
# benches/RESULTS.md (session 12). Prints the simulator's summary line, the admission counters at
# the end and its slot gauges in the middle of the run, store commit and fsync rates over five
# seconds of the run, the segments per store partition, the server's CPU seconds and how many
# times fjall slowed or halted writes.
#
# Usage: scripts/bench-probe.sh [BIN]           gateway, fsync, 1,000 terminals, 12 s closed loop
# Knobs (environment):
#   DEVICES=1000 RUN_SECONDS=12
#   CONFIG_EXTRA=$'[pipeline]\nadmission_limit = 0'   appended to the gateway's config
#   DURABILITY=buffered                               store durability (default fsync)
#
# The gateway imports the registry scripts/bench-e2e.sh uses (terminals 2k and 2k+1 are one
# vehicle's wired and wireless trackers). Runs of 150 s show fjall's compaction settling.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
BIN=${1:-target/release/liengate}
DEVICES=${DEVICES:-1000}
SECONDS_RUN=${RUN_SECONDS:-12}
(( SECONDS_RUN >= 10 )) || { echo "bench-probe: RUN_SECONDS must be at least 10" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"
[[ -x "$BIN" ]] || { echo "bench-probe: missing $BIN (cargo build --release)" >&2; exit 1; }

bench_temp_dir probe

bench_registry_csv "$DEVICES" "$DIR/registry.csv"
bench_gateway_config "$DIR/liengate.toml" "$DIR/data" "${DURABILITY:-fsync}" "$DIR/registry.csv" "${CONFIG_EXTRA:-}"
# fjall reports its write slow-downs and halts at info level.
LIENGATE_LOG=warn,fjall=info "$BIN" serve --config "$DIR/liengate.toml" >"$DIR/out" 2>"$DIR/err" &
SRV=$!
if ! ADDR=$(bench_listening "$DIR/out" "$SRV" jt808) || ! HTTP=$(bench_listening "$DIR/out" "$SRV" http); then
    echo "bench-probe: server did not start" >&2
    cat "$DIR/err" >&2
    exit 1
fi

timeout $((SECONDS_RUN + 120)) "$BIN" sim --target "$ADDR" --devices "$DEVICES" --duration "$SECONDS_RUN" \
    --closed-loop --json --quiet --source-ips 127.0.0.1,127.0.0.2 >"$DIR/sim.json" 2>"$DIR/sim.err" &
SIM=$!
# Registration of 10,000 terminals takes about a second; the window starts well after it.
sleep 4
curl -sf "http://$HTTP/metrics" >"$DIR/m0"
sleep 5
curl -sf "http://$HTTP/metrics" >"$DIR/m1"
wait "$SIM" || { cat "$DIR/sim.err" >&2; exit 1; }
SIM=
curl -sf "http://$HTTP/metrics" >"$DIR/m2"
CPU=$(awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$SRV/stat")

python3 - "$DIR" "$CPU" <<'EOF'
import json, os, sys
d, cpu = sys.argv[1], float(sys.argv[2])
s = json.load(open(f"{d}/sim.json"))
print(f"acked positions/s {s['acked_positions_per_s']:,.0f}  answer p50 {s['latency']['p50_us'] / 1000:.2f} ms"
      f"  p99 {s['latency']['p99_us'] / 1000:.1f} ms  max {s['latency']['max_us'] / 1000:.1f} ms  errors {s['error_total']}")
def load(path):
    out = {}
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        key, value = line.rsplit(" ", 1)
        out[key] = float(value)
    return out
m0, m1, m2 = (load(f"{d}/m{i}") for i in range(3))
# Counters at the end; the slot gauges in the middle of the run (they fall back once nobody waits).
for key in sorted(m2):
    if key.startswith("connection_admission"):
        value, when = (m1.get(key, 0), "mid-run") if "slots" in key else (m2[key], "")
        print(f"{key:60s} {value:12,.0f} {when}")
for key in sorted(m1):
    if key.endswith("_count") and key.split("{")[0] in (
            "store_commit_seconds_count", "store_fsync_seconds_count", "shard_commit_seconds_count"):
        print(f"{key:60s} {(m1[key] - m0.get(key, 0)) / 5:12,.0f} /s")
# The share of fsyncs and store commits over the window that took longer than each bucket bound:
# the tail is what a closed loop waits on when every frame in flight is in one sync.
for name in ("store_fsync_seconds", "store_commit_seconds"):
    total = m1.get(f"{name}_count", 0) - m0.get(f"{name}_count", 0)
    if total <= 0:
        continue
    cells = []
    for key in m1:
        if key.startswith(f'{name}_bucket{{le="') and "+Inf" not in key:
            le = float(key.split('le="')[1].split('"')[0])
            over = 1 - (m1[key] - m0.get(key, 0)) / total
            if le >= 1e-4 and le <= 0.1:
                cells.append((le, over))
    print(f"{name} over: " + "  ".join(f">{le * 1000:g} ms {over * 100:.1f} %" for le, over in sorted(cells)))
for root, dirs, files in os.walk(f"{d}/data"):
    if os.path.basename(root) == "segments":
        size = sum(os.path.getsize(os.path.join(root, f)) for f in files)
        print(f"segments {os.path.basename(os.path.dirname(root)):20s} {len(files):4d}  {size / 1e6:8.1f} MB")
print(f"server CPU {cpu:.1f} s")
slowed = sum(1 for line in open(f"{d}/err") if "Stalling writes" in line or "Halting writes" in line)
print(f"fjall write slow-downs and halts logged: {slowed}")
EOF
kill -TERM "$SRV" 2>/dev/null || true
wait "$SRV" 2>/dev/null || true
SRV=
