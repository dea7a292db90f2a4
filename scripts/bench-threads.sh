#!/usr/bin/env bash
# Where the CPU goes, per thread: starts one server (gateway or ceiling) and one simulator on
# 127.0.0.1, lets them settle, and prints each server thread group's share of a core and its CPU
# per acknowledged position over a window of the run, with the simulator's for comparison. It is
# the A/B harness behind benches/RESULTS.md (session 3): run two binaries alternately and compare
# the "server total" lines; CPU per position is much steadier than throughput on a shared machine.
#
# Usage: scripts/bench-threads.sh [BIN]            gateway, fsync, 1,000 terminals, closed loop
# Knobs (environment):
#   CEILING=1            the ceiling server (`liengate sim --ceiling-server`) instead of the gateway
#   DURABILITY=buffered  store durability of the gateway (default fsync)
#   DEVICES=1000 RUN_SECONDS=12 SIM_ARGS=--closed-loop (e.g. SIM_ARGS="--rate 50" for 50 reports/s each)
#   CONFIG_EXTRA=$'[pipeline]\nshards = 1'   appended to the gateway's config
#   PERF=1               record `perf record --call-graph dwarf` of the server to perf.data meanwhile
#   PERF_ARGS=" "        other `perf record` options instead (a blank: flat profile, small perf.data)
#   PERF_SIM=1           record the simulator instead of the server
#   NSTAT="TcpOutSegs TcpExtDelayedACKs"   kernel counters (nstat names or patterns, quoted
#                        patterns are passed as they are) per position over the window; not
#                        together with PERF or EVENTS
#   EVENTS=a,b           count these perf events (e.g. syscalls:sys_enter_write,sched:sched_switch)
#                        in the server and the simulator meanwhile, printed per position
#   SERVER_PRE='cmd'     a shell command run once the server listens, with its process id in $PID
#                        (e.g. 'for t in /proc/$PID/task/*; do chrt -b -p 0 ${t##*/}; done')
#
# The gateway imports a registry pairing terminals 2k and 2k+1 as one vehicle's wired and wireless
# trackers, as scripts/bench-e2e.sh does with REGISTRY=pairs.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
BIN=${1:-target/release/liengate}
DEVICES=${DEVICES:-1000}
SECONDS_RUN=${RUN_SECONDS:-12}
# The window starts 2 s after registration ended and lasts half the run: it must end before the
# simulator does.
(( SECONDS_RUN >= 8 )) || { echo "bench-threads: RUN_SECONDS must be at least 8" >&2; exit 1; }
SIM_ARGS=${SIM_ARGS:---closed-loop}
ulimit -n "$(ulimit -Hn)"
[[ -x "$BIN" ]] || { echo "bench-threads: missing $BIN (cargo build --release)" >&2; exit 1; }

DIR=$(mktemp -d "${TMPDIR:-/tmp}/liengate-threads.XXXXXX")
SRV=
SIM=
PID=
SIM_PID=
# timeout(1) cannot pass on a SIGKILL: kill the server and the simulator themselves too, or an
# interrupted run leaves them running.
cleanup() {
    for p in "$SIM_PID" "$SIM" "$PID" "$SRV"; do
        [[ -n "$p" ]] && kill -KILL "$p" 2>/dev/null || true
    done
    rm -rf "$DIR"
}
trap cleanup EXIT

bench_registry_csv "$DEVICES" "$DIR/registry.csv"
bench_gateway_config "$DIR/liengate.toml" "$DIR/data" "${DURABILITY:-fsync}" "$DIR/registry.csv" "${CONFIG_EXTRA:-}"

if [[ "${CEILING:-0}" == 1 ]]; then
    timeout 600 "$BIN" sim --ceiling-server 127.0.0.1:0 >"$DIR/out" 2>"$DIR/err" &
else
    LIENGATE_LOG=warn timeout 600 "$BIN" serve --config "$DIR/liengate.toml" >"$DIR/out" 2>"$DIR/err" &
fi
SRV=$!
ADDR=$(bench_listening "$DIR/out" "$SRV" jt808) || {
    echo "bench-threads: server did not start" >&2
    cat "$DIR/err" >&2
    exit 1
}
# timeout(1) runs the server as its child: measure the server itself.
PID=$(pgrep -P "$SRV" -n)
eval "${SERVER_PRE:-true}"

# Source addresses of their own for each run: the previous runs' connections linger in
# TIME_WAIT on theirs, and picking a free port among them made the kernel spend seconds of CPU
# in connect() (session 14), during which the window measured registration, not reports.
NET=$((RANDOM % 250 + 1))
SOURCE_IPS=127.$NET.$((RANDOM % 250 + 1)).1,127.$NET.$((RANDOM % 250 + 1)).2
# shellcheck disable=SC2086 # SIM_ARGS holds several arguments on purpose.
timeout $((SECONDS_RUN + 120)) "$BIN" sim --target "$ADDR" --devices "$DEVICES" --duration "$SECONDS_RUN" \
    $SIM_ARGS --json --quiet --source-ips "$SOURCE_IPS" >"$DIR/sim.json" 2>"$DIR/sim.err" &
SIM=$!
sleep 0.5
SIM_PID=$(pgrep -P "$SIM" -n)

# CPU ticks per thread name (numbered threads such as shard-0, shard-1 summed as one group).
snapshot() {
    for t in /proc/"$PID"/task/*; do
        name=$(tr ' ' _ <"$t/comm" 2>/dev/null) || continue
        ticks=$(awk '{print $14, $15}' "$t/stat" 2>/dev/null) || continue
        echo "${name%%-[0-9]*} $ticks"
    done | awk '{u[$1] += $2; s[$1] += $3} END {for (k in u) print k, u[k], s[k]}' | sort
}
proc_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
# Nanoseconds on a CPU, summed over a process's threads, from the scheduler's own accounting.
# The tick-sampled times above can be far off on some virtual machines (session 14: a server at
# 100 % of a core in top showed as 7 % in its ticks); this one is exact.
# A thread that ends between the glob and the read is skipped, not an error.
sched_ns() { { cat /proc/"$1"/task/*/schedstat 2>/dev/null || true; } | awk '{n += $1} END {print n + 0}'; }

# The window starts after registration and ends before the simulator drains.
for ((i = 0; i < 600; i++)); do
    grep -q "registration ended" "$DIR/sim.err" 2>/dev/null && break
    sleep 0.1
done
grep -q "registration ended" "$DIR/sim.err" || {
    echo "bench-threads: the simulator did not finish registering within 60 s" >&2
    tail -5 "$DIR/sim.err" >&2
    exit 1
}
sleep 2
snapshot >"$DIR/t0"
SCHED0="$(sched_ns "$PID") $(sched_ns "$SIM_PID")"
SIM0=$(proc_ticks "$SIM_PID")
STAT0=$(head -1 /proc/stat)
T0=$(date +%s.%N)
if [[ "${PERF:-0}" == 1 ]]; then
    TARGET=$PID
    [[ "${PERF_SIM:-0}" == 1 ]] && TARGET=$SIM_PID
    perf record -F 999 ${PERF_ARGS:--g --call-graph dwarf,16384} -p "$TARGET" -o perf.data -- sleep 5 >/dev/null 2>&1
elif [[ -n "${EVENTS:-}" ]]; then
    perf stat -x, -e "$EVENTS" -p "$PID" -o "$DIR/events.server" -- sleep $((SECONDS_RUN / 2)) &
    STAT=$!
    perf stat -x, -e "$EVENTS" -p "$SIM_PID" -o "$DIR/events.sim" -- sleep $((SECONDS_RUN / 2))
    wait "$STAT"
else
    if [[ -n "${NSTAT:-}" ]]; then
        read -ra NSTAT_NAMES <<<"$NSTAT"
        nstat -n
        sleep $((SECONDS_RUN / 2))
        nstat -z "${NSTAT_NAMES[@]}" >"$DIR/nstat"
    else
        sleep $((SECONDS_RUN / 2))
    fi
fi
snapshot >"$DIR/t1"
SCHED1="$(sched_ns "$PID") $(sched_ns "$SIM_PID")"
SIM1=$(proc_ticks "$SIM_PID")
STAT1=$(head -1 /proc/stat)
T1=$(date +%s.%N)
wait "$SIM"
SIM=
SIM_PID=

python3 - "$DIR" "$SIM0" "$SIM1" "$T0" "$T1" "$(getconf CLK_TCK)" "$STAT0" "$STAT1" "$SCHED0" "$SCHED1" <<'EOF'
import json, os, sys
d, t0, t1, hz = sys.argv[1], float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
sim0, sim1 = [list(map(int, a.split())) for a in (sys.argv[2], sys.argv[3])]
summary = json.load(open(f"{d}/sim.json"))
rate = summary["acked_positions_per_s"]
print(f"acked positions/s {rate:,.0f}  answer p50 {summary['latency']['p50_us'] / 1000:.2f} ms  errors {summary['error_total']}")
def ticks(path):
    return {n: (int(u), int(s)) for n, u, s in (line.split() for line in open(path))}
before, after = ticks(f"{d}/t0"), ticks(f"{d}/t1")
dt = t1 - t0
def row(name, user, system):
    us = lambda s: s / dt / rate * 1e6
    print(f"{name:24s} {(user + system) / dt * 100:6.1f} % of a core  {us(user + system):6.2f} µs/position"
          f"  (user {us(user):5.2f}, kernel {us(system):5.2f})")
total = [0.0, 0.0]
for name in sorted(after):
    (u1, s1), (u0, s0) = after[name], before.get(name, (0, 0))
    user, system = (u1 - u0) / hz, (s1 - s0) / hz
    total[0] += user
    total[1] += system
    if user + system > 0:
        row(name, user, system)
row("server total", *total)
sim_cpu = (sim1[0] - sim0[0] + sim1[1] - sim0[1]) / hz
row("simulator", (sim1[0] - sim0[0]) / hz, (sim1[1] - sim0[1]) / hz)
# The same simulator costs more or less per position as the shared machine gets busier or
# quieter; the server's CPU in units of the simulator's is the steadier figure to compare.
if sim_cpu > 0:
    print(f"{'server / simulator':24s} {sum(total) / sim_cpu:6.3f}")
# The whole machine, kernel threads included (softirq, journal, workers), and what stayed idle:
# a closed loop that leaves cores idle is waiting, not computing.
stat0, stat1 = [list(map(int, a.split()[1:])) for a in (sys.argv[7], sys.argv[8])]
delta = [b - a for a, b in zip(stat0, stat1)]
idle = (delta[3] + delta[4]) / hz
busy = sum(delta[:8]) / hz - idle
for who in ("server", "sim"):
    path = f"{d}/events.{who}"
    if os.path.exists(path):
        for line in open(path):
            f = line.strip().split(",")
            if len(f) > 2 and f[0].replace(".", "").isdigit():
                print(f"{who + ' ' + f[2]:48s} {float(f[0]) / dt / rate:8.3f} per position")
if os.path.exists(f"{d}/nstat"):
    for line in open(f"{d}/nstat"):
        f = line.split()
        if len(f) >= 2 and f[1].isdigit():
            print(f"{'kernel ' + f[0]:48s} {int(f[1]) / dt / rate:8.3f} per position")
sched0, sched1 = [list(map(int, a.split())) for a in (sys.argv[9], sys.argv[10])]
for name, i in (("server on CPU", 0), ("simulator on CPU", 1)):
    ns = sched1[i] - sched0[i]
    print(f"{name + ' (sched)':24s} {ns / 1e9 / dt * 100:6.1f} % of a core  {ns / 1e3 / dt / rate:6.2f} µs/position")
if sched1[1] > sched0[1]:
    print(f"{'server / simulator (sched)':24s} {(sched1[0] - sched0[0]) / (sched1[1] - sched0[1]):6.3f}")
print(f"{'machine busy':24s} {busy / dt * 100:6.1f} % of a core  {busy / dt / rate * 1e6:6.2f} µs/position"
      f"  (idle {idle / dt * 100:.1f} % of a core)")
EOF
kill -TERM "$SRV" 2>/dev/null || true
wait "$SRV" 2>/dev/null || true
SRV=
PID=
