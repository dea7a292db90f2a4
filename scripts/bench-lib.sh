# Shared by scripts/bench-e2e.sh and scripts/bench-threads.sh (sourced, not run).

# bench_registry_csv N FILE: a registry where terminals 2k and 2k+1 are the wired and the wireless
# tracker of vehicle k (a lender's usual setup); terminal ids are those `liengate sim` uses
# (prefix 0139, 12 digits for JT/T 808-2013).
bench_registry_csv() {
    awk -v n="$1" 'BEGIN {
        print "terminal_id,protocol,role,sim,imei,model,skip_checksum,vehicle_id,plate,vin,loan_id,stage"
        for (i = 0; i < n; i++) {
            v = int(i / 2)
            if (i % 2 == 0)
                printf "0139%08d,jt808,wired,,,,false,VH-%06d,,LSVM0000%09d,LN-%06d,normal\n", i, v, v, v
            else
                printf "0139%08d,jt808,wireless,,,,false,VH-%06d,,,,\n", i, v
        }
    }' >"$2"
}

# bench_gateway_config FILE DATA_DIR DURABILITY [REGISTRY_CSV] [EXTRA_TOML]: a gateway config on
# 127.0.0.1 port 0. max_connections is above the largest run; the process limit (20,000 files)
# bounds it anyway.
bench_gateway_config() {
    cat >"$1" <<TOML
[jt808]
listen = "127.0.0.1:0"
max_connections = 19000

[http]
listen = "127.0.0.1:0"

[store]
data_dir = "$2"
durability = "$3"

${5:-}
TOML
    if [[ -n "${4:-}" ]]; then
        printf '\n[registry]\nimport = "%s"\n' "$4" >>"$1"
    fi
}

# bench_listening OUT_FILE PID KIND: waits (up to 30 s) until the server with process id PID,
# writing its stdout to OUT_FILE, prints "listening KIND ADDR", and prints ADDR. Fails, printing
# nothing, if the server exits or does not get there in time.
bench_listening() {
    local i
    for ((i = 0; i < 300; i++)); do
        if grep -q "^listening $3 " "$1" 2>/dev/null; then
            sed -n "s/^listening $3 //p" "$1" | head -1
            return 0
        fi
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# bench_temp_dir NAME: sets DIR to a new temporary directory, clears SRV and SIM, and installs an
# EXIT trap that kills the processes whose ids the script put in SRV and SIM and removes DIR.
bench_temp_dir() {
    DIR=$(mktemp -d "${TMPDIR:-/tmp}/liengate-$1.XXXXXX")
    SRV=
    SIM=
    trap bench_cleanup EXIT
}

bench_cleanup() {
    local p
    for p in "${SIM:-}" "${SRV:-}"; do
        [[ -n "$p" ]] && kill -KILL "$p" 2>/dev/null || true
    done
    rm -rf "$DIR"
}
