# bench/lib.sh — what the benchmark drivers (users.sh, auth.sh) share: the results
# folder, logging, starting/stopping the server, CPU accounting, ports, and the release
# build. Sourced after the driver has set ROOT, PG_DB and (optionally) RESULTS_PREFIX.
# shellcheck shell=bash

PORTCULLIS="$ROOT/target/release/portcullis"
BENCH="$ROOT/target/release/portcullis-bench"
OUT="$ROOT/bench/results/${RESULTS_PREFIX:-}$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"

SERVER_PID=""
BENCH_PID=""
TMP_DIRS=()
FAILED=0
SCRIPT_START=$(date +%s)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$OUT/run.log" >&2; }

stop_server() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            log "server $SERVER_PID ignored SIGTERM for 10s; killing it"
            kill -KILL "$SERVER_PID" 2>/dev/null || true
        fi
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}

cleanup() {
    if [[ -n "$BENCH_PID" ]]; then
        kill -TERM "$BENCH_PID" 2>/dev/null || true
    fi
    stop_server
    local d
    for d in "${TMP_DIRS[@]+"${TMP_DIRS[@]}"}"; do
        rm -rf "$d"
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# json_get FIELD < JSON: prints one top-level field of a JSON object.
json_get() {
    python3 -c 'import json, sys; v = json.load(sys.stdin)[sys.argv[1]]; print(v)' "$1"
}

# cpu_ticks: "busy total" clock ticks of the whole machine so far.
cpu_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }

# proc_ticks PID...: user + system clock ticks these processes have used so far.
proc_ticks() {
    local t=0 p n
    for p in "$@"; do
        n=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null) || n=0
        t=$((t + ${n:-0}))
    done
    echo "$t"
}

# pg_backends BACKEND: the PostgreSQL backends serving the bench database.
pg_backends() {
    [[ "$1" == postgres ]] && pgrep -f "postgres: .* $PG_DB " || true
}

port_free() {
    python3 - "$1" <<'EOF'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
EOF
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Only the variables the script sets select the database.
unset PORTCULLIS_DATABASE_URL PORTCULLIS_DATA_DIR PORTCULLIS_LISTEN PORTCULLIS_CONFIG 2>/dev/null || true
export PORTCULLIS_LOG_LEVEL=warn

if [[ -z "${SKIP_BUILD:-}" ]]; then
    log "building release binaries"
    (cd "$ROOT" && cargo build --release -p portcullis -p portcullis-bench)
fi
[[ -x "$PORTCULLIS" && -x "$BENCH" ]] || { echo "missing $PORTCULLIS or $BENCH" >&2; exit 1; }
