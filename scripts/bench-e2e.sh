#!/usr/bin/env bash
# End-to-end benchmark: `liengate sim` against `liengate serve` (durability fsync and buffered)
# and against the ceiling server (`liengate sim --ceiling-server`: frames, checks, answers,
# stores nothing), all measured in the same run on this machine. See benches/RESULTS.md,
# section "End-to-end", for what it measures and the recorded figures.
#
# Usage: scripts/bench-e2e.sh            full run (about 8 minutes)
#        QUICK=1 scripts/bench-e2e.sh    1k devices only, 5 s per run (about 1.5 minutes)
#
# Knobs (environment): SIZES="1000 10000" (empty = idle memory only) DURATION=15 RATE=1 CHUNK=5000 IDLE_DEVICES=10000 (0 = skip)
#   ROUNDS=1 (repeat the throughput runs, alternating the servers within each round: the report gives each
#   round's ratio to the ceiling of the same round and their median)
#   SERVERS="ceiling fsync buffered" MODES="closed fixed" OUT=benches/e2e/runs/<utc time>
#   MODES may also name "interleaved": closed loop with every server of SERVERS running at once,
#   each driven by its own simulators, which report in turns of SLICE=3 seconds (the servers in
#   a fixed rotation) until each has reported DURATION seconds. The shared machine's slow and
#   fast phases, which last seconds to tens of seconds, then hit all servers alike, where a
#   sequential run can give one server a fast phase and the next a slow one.
#   REGISTRY=pairs|none SKIP_BUILD=1 (use the existing binary) BIN=path/to/liengate (default target/release/liengate)
#   CONFIG_EXTRA=$'[pipeline]\nadmission_limit = 0'   appended to the gateway's config
#
# Every server and simulator process is bounded by `timeout`; targets are 127.0.0.1 only.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

if [[ "${QUICK:-0}" == 1 ]]; then
    SIZES=${SIZES:-1000}
    DURATION=${DURATION:-5}
    IDLE_DEVICES=${IDLE_DEVICES:-1000}
fi
# An empty SIZES (SIZES=) runs only the idle-memory part; IDLE_DEVICES=0 skips that part.
SIZES=${SIZES-"1000 10000"}
DURATION=${DURATION:-15}
RATE=${RATE:-1}
CHUNK=${CHUNK:-5000}
IDLE_DEVICES=${IDLE_DEVICES:-10000}
SERVERS=${SERVERS:-"ceiling fsync buffered"}
ROUNDS=${ROUNDS:-1}
MODES=${MODES:-"closed fixed"}
SLICE=${SLICE:-3}
# Without SOURCE_IPS, each run of simulators connects from four loopback addresses of its own
# (127.0.<run>.1-4): a run binding the addresses of the run before found most of their ports still in
# TIME_WAIT, and registering 10,000 terminals then took seconds of port search instead of half a
# second (sessions 2 and 4 in benches/RESULTS.md).
SOURCE_IPS_GIVEN=${SOURCE_IPS:-}
SOURCE_IPS=${SOURCE_IPS:-"127.0.<run>.1-4"}
SIM_RUNS=0
# "pairs": the gateway imports a registry where terminals 2k and 2k+1 are the wired and the
# wireless tracker of vehicle k (a lender's usual setup: fusion, vehicle and device last known);
# "none": every terminal self-registers as an unassigned device.
REGISTRY=${REGISTRY:-pairs}
OUT=${OUT:-$ROOT/benches/e2e/runs/$(date -u +%Y%m%dT%H%M%SZ)}
BIN=${BIN:-$ROOT/target/release/liengate}
# Bound for one simulator process: registration, the run (in turns with the other servers when
# interleaved, after their registration too), the drain and some slack.
NSERVERS=$(wc -w <<<"$SERVERS")
SIM_TIMEOUT=$((DURATION * NSERVERS + 150 + 60 * (NSERVERS - 1)))

log() { echo "bench-e2e: $*" >&2; }

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "building release binary"
    cargo build --release --bin liengate >&2
fi
[[ -x "$BIN" ]] || { log "missing $BIN"; exit 1; }

# Each connection is a file descriptor: raise the soft limit to the hard one (20,000 here).
ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
if (( CHUNK + 100 > NOFILE )); then
    log "CHUNK=$CHUNK needs more than the open-file limit $NOFILE"
    exit 1
fi
mkdir -p "$OUT"
log "results in $OUT"

{
    echo "date_utc=$(date -u +%FT%TZ)"
    echo "git=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    # The checked-out commit need not be the binary's (BIN=): name the binary and its hash too.
    echo "bin=$BIN sha256=$(sha256sum "$BIN" | cut -c1-16)"
    echo "cpus=$(nproc)"
    echo "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "kernel=$(uname -r)"
    echo "nofile=$NOFILE"
    echo "sizes=$SIZES duration=$DURATION rate=$RATE chunk=$CHUNK idle_devices=$IDLE_DEVICES"
    echo "servers=$SERVERS modes=$MODES slice=$SLICE rounds=$ROUNDS source_ips=$SOURCE_IPS registry=$REGISTRY"
    echo "config_extra=$(printf %q "${CONFIG_EXTRA:-}")"
} >"$OUT/env.txt"

# The registry covers the largest run; terminal ids are those `liengate sim` uses (prefix 0139,
# 12 digits for JT/T 808-2013).
REGISTRY_CSV=
if [[ "$REGISTRY" == pairs ]]; then
    REGISTRY_CSV=$OUT/registry.csv
    max=$IDLE_DEVICES
    for n in $SIZES; do
        if ((n > max)); then max=$n; fi
    done
    bench_registry_csv "$max" "$REGISTRY_CSV"
fi

SRV_PID=
SRV_JOB=
SRV_DIR=
SRV_ADDR=

# Servers of an interleaved run, beside the one in SRV_PID / SRV_DIR.
EXTRA_PIDS=()
EXTRA_DIRS=()
# Every simulator's `timeout` process, for cleanup: a paused simulator never ends by itself.
ALL_SIMS=()
cleanup() {
    local p d
    for p in "${ALL_SIMS[@]}"; do
        # timeout(1) passes TERM on to the simulator.
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "$SRV_PID" "${EXTRA_PIDS[@]}"; do
        if [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; then
            kill -KILL "$p" 2>/dev/null || true
        fi
    done
    for d in "$SRV_DIR" "${EXTRA_DIRS[@]}"; do
        if [[ -n "$d" ]]; then rm -rf "$d"; fi
    done
}
trap cleanup EXIT

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
# utime + stime of a process in clock ticks (0 once it has gone, rather than failing the run).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
TICKS=$(getconf CLK_TCK)
# SYNs dropped because a listener's accept queue was full (system-wide counter; the
# benchmark is the only thing connecting on loopback at this rate).
listen_overflows() { awk '/^TcpExt:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "ListenOverflows") c = i; h = 1 } else print $c }' /proc/net/netstat; }

# start_server KIND LABEL: ceiling | fsync | buffered. Sets SRV_PID, SRV_DIR, SRV_ADDR.
start_server() {
    local kind=$1 label=$2
    SRV_DIR=$(mktemp -d "${TMPDIR:-/tmp}/liengate-bench.XXXXXX")
    case "$kind" in
    ceiling)
        timeout --kill-after=5 3600 "$BIN" sim --ceiling-server 127.0.0.1:0 \
            >"$SRV_DIR/stdout" 2>"$OUT/$label.server.log" &
        ;;
    fsync | buffered)
        bench_gateway_config "$SRV_DIR/liengate.toml" "$SRV_DIR/data" "$kind" "$REGISTRY_CSV" "${CONFIG_EXTRA:-}"
        LIENGATE_LOG=${LIENGATE_LOG:-warn} timeout --kill-after=5 3600 "$BIN" serve \
            --config "$SRV_DIR/liengate.toml" >"$SRV_DIR/stdout" 2>"$OUT/$label.server.log" &
        ;;
    *)
        log "unknown server kind $kind"
        exit 1
        ;;
    esac
    SRV_PID=$!
    SRV_JOB=$SRV_PID
    if ! SRV_ADDR=$(bench_listening "$SRV_DIR/stdout" "$SRV_PID" jt808); then
        log "$kind server did not start; log:"
        tail -20 "$OUT/$label.server.log" >&2
        exit 1
    fi
    # timeout(1) runs the server as its child: measure the server itself.
    local child
    child=$(pgrep -P "$SRV_PID" -n || true)
    if [[ -n "$child" ]]; then
        SRV_PID=$child
    fi
}

stop_server() {
    kill -TERM "$SRV_PID" 2>/dev/null || true
    local waited=0
    while kill -0 "$SRV_PID" 2>/dev/null && ((waited < 200)); do
        sleep 0.1
        waited=$((waited + 1))
    done
    if kill -0 "$SRV_PID" 2>/dev/null; then
        log "server $SRV_PID did not stop in 20 s; killing it"
        kill -KILL "$SRV_PID" 2>/dev/null || true
    fi
    # Only this server's job: in an interleaved run the other servers still run.
    wait "$SRV_JOB" 2>/dev/null || true
    rm -rf "$SRV_DIR"
    SRV_PID=
    SRV_DIR=
}

# start_sims N LABEL ARGS...: N terminals against SRV_ADDR, split over processes of at most
# CHUNK, started together; their `timeout` processes' ids go to SIM_PIDS.
start_sims() {
    local n=$1 label=$2
    shift 2
    local procs=$(((n + CHUNK - 1) / CHUNK)) i first count ips=$SOURCE_IPS_GIVEN
    SIM_PIDS=()
    SIM_RUNS=$((SIM_RUNS + 1))
    if [[ -z "$ips" ]]; then
        local net=$((SIM_RUNS % 250 + 1))
        ips=127.0.$net.1,127.0.$net.2,127.0.$net.3,127.0.$net.4
    fi
    for ((i = 0; i < procs; i++)); do
        first=$((i * CHUNK))
        count=$((n - first < CHUNK ? n - first : CHUNK))
        timeout --kill-after=10 "$SIM_TIMEOUT" "$BIN" sim --target "$SRV_ADDR" \
            --devices "$count" --first-id "$first" --source-ips "$ips" --json --quiet "$@" \
            >"$OUT/$label.part$i.json" 2>"$OUT/$label.part$i.log" &
        SIM_PIDS+=($!)
        ALL_SIMS+=($!)
    done
}

# finish_sims LABEL PID...: waits for the simulator processes and merges their summaries into
# LABEL.json.
finish_sims() {
    local label=$1
    shift
    local pids=("$@") i p rc=0 status left=()
    for i in "${!pids[@]}"; do
        status=0
        wait "${pids[$i]}" || status=$?
        if ((status > rc)); then rc=$status; fi
    done
    # Reaped: their ids may be reused, so cleanup must no longer signal them.
    for p in "${ALL_SIMS[@]}"; do
        [[ " ${pids[*]} " == *" $p "* ]] || left+=("$p")
    done
    ALL_SIMS=("${left[@]}")
    cat "$OUT/$label".part*.json >"$OUT/$label.parts.jsonl"
    "$BIN" sim --merge "$OUT/$label.parts.jsonl" --json >"$OUT/$label.json" || true
    echo "$rc" >"$OUT/$label.exit"
    if ((rc == 1)); then
        log "$label: WRONG ANSWERS (see $OUT/$label.json)"
    elif ((rc != 0)); then
        log "$label: sim exit status $rc (transport errors or timeout)"
    fi
}

# run_sims N LABEL ARGS...: start_sims, then finish_sims.
run_sims() {
    start_sims "$@"
    finish_sims "$2" "${SIM_PIDS[@]}"
}

# wait_registered LABEL PROCS: until PROCS simulator processes of LABEL have printed the end of
# their registration (at most 120 s).
wait_registered() {
    local label=$1 procs=$2 waited=0 done_count
    while :; do
        done_count=$(cat "$OUT/$label".part*.log 2>/dev/null | grep -c 'registration ended' || true)
        if ((done_count >= procs)); then return 0; fi
        if ((waited > 1200)); then
            log "$label: registration did not end within 120 s"
            return 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
}

# One measured run: fresh server (empty data dir), N terminals, one pacing mode.
bench_run() {
    local kind=$1 n=$2 mode=$3 round=$4
    local label="$kind-$n-$mode"
    if ((ROUNDS > 1)); then label="$label-r$round"; fi
    local args=(--duration "$DURATION")
    if [[ "$mode" == closed ]]; then args+=(--closed-loop); else args+=(--rate "$RATE"); fi
    start_server "$kind" "$label"
    local cpu0 rss0 ovf0
    ovf0=$(listen_overflows)
    cpu0=$(cpu_ticks "$SRV_PID")
    rss0=$(rss_kb "$SRV_PID")
    log "$label: server $SRV_ADDR (pid $SRV_PID, RSS ${rss0} KB)"
    run_sims "$n" "$label" "${args[@]}"
    server_json "$kind" "$n" "$mode" "$round" "$label" "$cpu0" "$rss0" "$ovf0"
    stop_server
    log_summary "$label"
}

# log_summary LABEL: one line of LABEL.json's headline figures.
log_summary() {
    log "$1: $(jq -c '{acked_positions_per_s, p50_ms: (.latency.p50_us/1000), p99_ms: (.latency.p99_us/1000), registration_ms, error_total}' "$OUT/$1.json" 2>/dev/null || echo 'no summary')"
}

# server_json KIND N MODE ROUND LABEL CPU0 RSS0 OVF0 [EXTRA]: the server's figures for
# LABEL.server.json, read from SRV_PID now that its simulators ended; EXTRA (",\"key\":value")
# is added to the object.
server_json() {
    local kind=$1 n=$2 mode=$3 round=$4 label=$5 cpu0=$6 rss0=$7 ovf0=$8 extra=${9:-} cpu1 rss1 hwm ovf1
    ovf1=$(listen_overflows)
    cpu1=$(cpu_ticks "$SRV_PID")
    rss1=$(rss_kb "$SRV_PID")
    hwm=$(hwm_kb "$SRV_PID")
    echo "{\"label\":\"$label\",\"server\":\"$kind\",\"devices\":$n,\"mode\":\"$mode\",\"round\":$round,\"rss_start_kb\":$rss0,\"rss_end_kb\":$rss1,\"rss_peak_kb\":$hwm,\"listen_overflows\":$((ovf1 - ovf0)),\"server_cpu_s\":$(awk -v a="$cpu0" -v b="$cpu1" -v t="$TICKS" 'BEGIN{printf "%.2f", (b-a)/t}')$extra}" >"$OUT/$label.server.json"
}

# Children of the `timeout` processes given: the simulators themselves, which take the pause and
# resume signals (timeout(1) would die of them rather than pass them on).
sim_children() {
    local p
    for p in "$@"; do pgrep -P "$p" || true; done
}

# One interleaved run: every server of SERVERS started at once (fresh data dirs), each with N
# closed-loop terminals that register one server after the other (registration is timed alone)
# and then report in turns of SLICE seconds, the servers in a fixed rotation, until each has
# reported DURATION seconds. Servers whose turn it is not sit idle with their terminals
# connected; throughput counts only each server's own turns (the simulator's --paused).
bench_interleaved() {
    interleaved_start "$1" "$2"
    interleaved_turns
    interleaved_finish "$1" "$2"
}

# interleaved_start N ROUND: starts the servers and their paused simulators, one server after
# the other, each once the one before has registered its terminals. Fills the IL_* arrays.
interleaved_start() {
    local n=$1 round=$2 kind label
    read -r -a IL_KINDS <<<"$SERVERS"
    declare -gA IL_PID=() IL_JOB=() IL_DIR=() IL_CPU0=() IL_RSS0=() IL_OVF0=() IL_SIMS=() IL_LABEL=() IL_OTHERS=()
    for kind in "${IL_KINDS[@]}"; do
        label="$kind-$n-interleaved"
        if ((ROUNDS > 1)); then label="$label-r$round"; fi
        IL_LABEL[$kind]=$label
        start_server "$kind" "$label"
        IL_PID[$kind]=$SRV_PID
        IL_JOB[$kind]=$SRV_JOB
        IL_DIR[$kind]=$SRV_DIR
        EXTRA_PIDS+=("$SRV_PID")
        EXTRA_DIRS+=("$SRV_DIR")
        log "$label: server $SRV_ADDR (pid $SRV_PID)"
        IL_OVF0[$kind]=$(listen_overflows)
        IL_CPU0[$kind]=$(cpu_ticks "$SRV_PID")
        IL_RSS0[$kind]=$(rss_kb "$SRV_PID")
        IL_OTHERS[$kind]=0
        start_sims "$n" "$label" --duration "$DURATION" --closed-loop --paused
        IL_SIMS[$kind]="${SIM_PIDS[*]}"
        wait_registered "$label" $(((n + CHUNK - 1) / CHUNK)) || true
    done
}

# interleaved_turns: gives the servers' simulators turns of SLICE seconds until all have ended.
# A turn pauses the simulators that reported before it and resumes its own; a server whose turn
# follows its own (the others having ended) just goes on, since two signals to one simulator a
# few milliseconds apart may arrive in either order. Also adds up, per server, the CPU it used
# in the other servers' turns (IL_OTHERS, in clock ticks): mostly the answers to the reports in
# flight when its turn ended, which the simulator does not count in the rate.
interleaved_turns() {
    local running='' kind k alive children
    declare -A t0=()
    while :; do
        alive=0
        for kind in "${IL_KINDS[@]}"; do
            # shellcheck disable=SC2086 # a list of process ids
            children=$(sim_children ${IL_SIMS[$kind]})
            [[ -n "$children" ]] || continue
            alive=1
            for k in "${IL_KINDS[@]}"; do t0[$k]=$(cpu_ticks "${IL_PID[$k]}"); done
            if [[ "$kind" != "$running" ]]; then
                if [[ -n "$running" ]]; then
                    # shellcheck disable=SC2086
                    kill -USR1 $(sim_children ${IL_SIMS[$running]}) 2>/dev/null || true
                fi
                # shellcheck disable=SC2086
                kill -USR2 $children 2>/dev/null || true
                running=$kind
            fi
            sleep "$SLICE"
            for k in "${IL_KINDS[@]}"; do
                if [[ "$k" != "$kind" ]]; then
                    IL_OTHERS[$k]=$((IL_OTHERS[$k] + $(cpu_ticks "${IL_PID[$k]}") - t0[$k]))
                fi
            done
        done
        ((alive)) || break
    done
}

# interleaved_finish N ROUND: merges each server's simulator summaries, records its figures and
# stops it.
interleaved_finish() {
    local n=$1 round=$2 kind label other_s
    for kind in "${IL_KINDS[@]}"; do
        label=${IL_LABEL[$kind]}
        # shellcheck disable=SC2086
        finish_sims "$label" ${IL_SIMS[$kind]}
        SRV_PID=${IL_PID[$kind]}
        SRV_JOB=${IL_JOB[$kind]}
        SRV_DIR=${IL_DIR[$kind]}
        other_s=$(awk -v a="${IL_OTHERS[$kind]}" -v t="$TICKS" 'BEGIN{printf "%.2f", a/t}')
        server_json "$kind" "$n" interleaved "$round" "$label" "${IL_CPU0[$kind]}" "${IL_RSS0[$kind]}" \
            "${IL_OVF0[$kind]}" ",\"server_cpu_other_turns_s\":$other_s"
        stop_server
        log_summary "$label"
    done
    EXTRA_PIDS=()
    EXTRA_DIRS=()
}

# Memory per idle registered connection: RSS before and after IDLE_DEVICES terminals
# registered, authenticated and stay connected sending only heartbeats.
bench_idle() {
    local kind=$1
    local label="$kind-idle-$IDLE_DEVICES"
    start_server "$kind" "$label"
    sleep 1
    local rss0 ovf0
    rss0=$(rss_kb "$SRV_PID")
    ovf0=$(listen_overflows)
    local hold=$((DURATION > 10 ? DURATION : 10))
    run_sims "$IDLE_DEVICES" "$label" --rate 0 --heartbeat 30 --duration "$hold" &
    local sims=$!
    # Wait until every simulator process has finished registering, then let the server settle.
    wait_registered "$label" $(((IDLE_DEVICES + CHUNK - 1) / CHUNK)) || true
    sleep 2
    local rss1 open
    rss1=$(rss_kb "$SRV_PID")
    local ovf1
    ovf1=$(listen_overflows)
    open=$(find "/proc/$SRV_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    wait "$sims" || true
    echo "{\"label\":\"$label\",\"server\":\"$kind\",\"devices\":$IDLE_DEVICES,\"mode\":\"idle\",\"rss_before_kb\":$rss0,\"rss_idle_kb\":$rss1,\"server_fds\":$open,\"listen_overflows\":$((ovf1 - ovf0)),\"kb_per_connection\":$(awk -v a="$rss0" -v b="$rss1" -v n="$IDLE_DEVICES" 'BEGIN{printf "%.2f", (b-a)/n}')}" >"$OUT/$label.server.json"
    stop_server
    log "$label: RSS $rss0 KB -> $rss1 KB with $IDLE_DEVICES idle connections ($(jq -r .kb_per_connection "$OUT/$label.server.json") KB each)"
}

# Servers alternate within each size and mode, so that a change in the machine's load (it is
# shared) hits the ceiling and the gateway alike and their ratio stays meaningful.
if ((IDLE_DEVICES > 0)); then
    for kind in $SERVERS; do
        bench_idle "$kind"
    done
fi
for ((round = 1; round <= ROUNDS; round++)); do
    for n in $SIZES; do
        for mode in $MODES; do
            if [[ "$mode" == interleaved ]]; then
                bench_interleaved "$n" "$round"
                continue
            fi
            for kind in $SERVERS; do
                bench_run "$kind" "$n" "$mode" "$round"
            done
        done
    done
done

echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/env.txt"
python3 "$ROOT/benches/e2e/report.py" "$OUT" | tee "$OUT/results.md"
