#!/usr/bin/env bash
# bench/auth.sh — the authentication benchmark the project reports.
#
# Targets (the issue's): password-login throughput over HTTP at OWASP argon2id parameters
# at least 0.9 times the raw argon2id rate of the same machine measured in the same run;
# login p99 under 300 ms at 80 % of that rate; at least 5,000 refresh-token exchanges per
# second per core.
#
# For each backend (SQLite, PostgreSQL) it:
#   1. prepares a fresh database (SQLite: a new temporary PORTCULLIS_DATA_DIR; PostgreSQL:
#      DROP/CREATE DATABASE portcullis_bench, with a temporary data dir for the master key),
#   2. runs `portcullis migrate`, creates the tenant `bench` (enterprise plan) and an API
#      key for it,
#   3. starts `portcullis serve` with the argon2id parameters below (OWASP by default) and
#      the per-IP sign-in limits off (all the load comes from one address), waits for
#      /readyz, and runs `portcullis-bench`, one scenario per invocation:
#        a. hash-rate   — the raw argon2id verification rate, in-process, one thread per
#                         core, while the server is idle;
#        b. login       — HTTP password sign-ins at maximum throughput (CONCURRENCY
#                         closed-loop workers) → ratio = login/s ÷ the raw rate;
#        c. login-rate  — sign-ins at a fixed RATE_SHARE (0.8) × the raw rate, open loop,
#                         latency from the scheduled start;
#        d. refresh     — CONCURRENCY sessions rotating their refresh tokens back to back;
#      each login scenario first creates USERS users with passwords (not measured),
#   4. stops the server (SIGTERM).
# While each scenario runs it accounts for CPU time (server, its PostgreSQL backends,
# client, everything else), since the server, the database and the load generator share
# the machine's cores, and on a shared machine other processes move the numbers a lot.
# It then prints one markdown table (a row per backend) and whether the targets are met.
# Everything (per-scenario JSON, server logs, the table) is also kept in
# bench/results/auth-<timestamp>/ (gitignored).
#
# Usage:   bench/auth.sh
# Knobs (environment):
#   BACKENDS="sqlite postgres"      backends to run
#   DURATION=10                     measured seconds per scenario
#   CONCURRENCY=16                  concurrent workers of login and refresh
#   REFRESH_CONCURRENCY=$CONCURRENCY  sessions of refresh
#   WARMUP=1                        unmeasured warm-up seconds per scenario
#   USERS=50                        users the login scenarios sign in as, round-robin
#   RATE_SHARE=0.8                  login-rate's rate as a share of the raw argon2id rate
#   PORTCULLIS_AUTH_ARGON2_MEMORY_KIB=19456, PORTCULLIS_AUTH_ARGON2_ITERATIONS=2,
#   PORTCULLIS_AUTH_ARGON2_PARALLELISM=1
#                                   argon2id parameters (server and hash-rate alike);
#                                   OWASP's recommendation by default
#   PORTCULLIS_AUTH_HASH_THREADS, PORTCULLIS_AUTH_HASH_QUEUE, PORTCULLIS_DATABASE_MAX_CONNECTIONS, …
#                                   passed through to the server as usual
#   BENCH_PG_URL=postgres://postgres@127.0.0.1:5432
#                                   PostgreSQL server (no database name); the database
#                                   `portcullis_bench` on it is dropped and re-created
#   BENCH_PG_PARAMS=                connection parameters of the server's database URL,
#                                   e.g. "sslmode=disable" (sqlx otherwise uses TLS when the
#                                   PostgreSQL server offers it, even over loopback)
#   BENCH_PORT=18080                port for the server (a free one is picked if taken)
#   PG_ANALYZE=ANALYZE              SQL run on the PostgreSQL database before each HTTP
#                                   scenario, as autovacuum would have on a live server (a
#                                   test server may run without it; without statistics the
#                                   planner scans whole tenants and all live sessions);
#                                   empty to skip
#   SKIP_BUILD=1                    use the existing target/release binaries
# Needs: cargo, curl, python3, psql (for PostgreSQL).
# The last PostgreSQL database is left in place for inspection; drop it with:
#   psql "$BENCH_PG_URL/postgres" -c 'DROP DATABASE portcullis_bench'
# Exit status: non-zero if any step or any benchmark scenario failed (missing a target is
# reported, not a failure).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BACKENDS=${BACKENDS:-sqlite postgres}
DURATION=${DURATION:-10}
CONCURRENCY=${CONCURRENCY:-16}
REFRESH_CONCURRENCY=${REFRESH_CONCURRENCY:-$CONCURRENCY}
WARMUP=${WARMUP:-1}
USERS=${USERS:-50}
RATE_SHARE=${RATE_SHARE:-0.8}
BENCH_PG_URL=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}
BENCH_PG_URL=${BENCH_PG_URL%/}
BENCH_PORT=${BENCH_PORT:-18080}
PG_DB=portcullis_bench
BENCH_PG_PARAMS=${BENCH_PG_PARAMS:-}
PG_ANALYZE=${PG_ANALYZE-ANALYZE}

# The server and `portcullis-bench hash-rate` both read these.
export PORTCULLIS_AUTH_ARGON2_MEMORY_KIB=${PORTCULLIS_AUTH_ARGON2_MEMORY_KIB:-19456}
export PORTCULLIS_AUTH_ARGON2_ITERATIONS=${PORTCULLIS_AUTH_ARGON2_ITERATIONS:-2}
export PORTCULLIS_AUTH_ARGON2_PARALLELISM=${PORTCULLIS_AUTH_ARGON2_PARALLELISM:-1}
# All the load comes from 127.0.0.1: the per-IP limits of the sign-in endpoints are off.
export PORTCULLIS_AUTH_IP_REQUESTS_PER_MINUTE=0
export PORTCULLIS_AUTH_IP_FAILURE_LIMIT=0

RESULTS_PREFIX=auth-
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

ARGON2="m=${PORTCULLIS_AUTH_ARGON2_MEMORY_KIB},t=${PORTCULLIS_AUTH_ARGON2_ITERATIONS},p=${PORTCULLIS_AUTH_ARGON2_PARALLELISM}"
log "results in $OUT (backends: $BACKENDS; argon2id $ARGON2; ${DURATION}s per scenario; concurrency $CONCURRENCY, refresh $REFRESH_CONCURRENCY)"
{
    echo "date: $(date -Is)"
    echo "git: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet 2>/dev/null || echo ' (dirty)')"
    echo "cpus: $(nproc); $(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo 2>/dev/null || true)"
    echo "backends: $BACKENDS; duration: ${DURATION}s; concurrency: $CONCURRENCY; refresh concurrency: $REFRESH_CONCURRENCY; warmup: ${WARMUP}s; users: $USERS; rate share: $RATE_SHARE"
    echo "argon2id: $ARGON2; hash threads: ${PORTCULLIS_AUTH_HASH_THREADS:-default}; hash queue: ${PORTCULLIS_AUTH_HASH_QUEUE:-default}"
    echo "server pool (PORTCULLIS_DATABASE_MAX_CONNECTIONS): ${PORTCULLIS_DATABASE_MAX_CONNECTIONS:-default}"
    echo "before each HTTP scenario (PostgreSQL): ${PG_ANALYZE:-nothing}; connection parameters: ${BENCH_PG_PARAMS:-none}"
    if [[ " $BACKENDS " == *" postgres "* ]]; then
        psql "$BENCH_PG_URL/postgres" -Atc "SELECT version()" \
            -c "SELECT name || ' = ' || setting FROM pg_settings WHERE name IN ('shared_buffers', 'autovacuum', 'synchronous_commit', 'commit_delay', 'max_connections', 'fsync', 'ssl')" \
            2>/dev/null || true
    fi
} >"$OUT/environment.txt"

# scenario BACKEND DIR NAME ARGS...: runs one portcullis-bench scenario against the server
# and records its JSON (DIR/NAME.json) and the CPU time spent meanwhile (DIR/NAME.cpu).
scenario() {
    local backend=$1 dir=$2 name=$3
    shift 3
    local status=0 cpu0 cpu1 server0 server1 pg0 pg1 bench_ticks=0
    if [[ "$backend" == postgres && "$name" != hash-rate && -n "$PG_ANALYZE" ]]; then
        psql "$PORTCULLIS_DATABASE_URL" -v ON_ERROR_STOP=1 -q -c "$PG_ANALYZE"
    fi
    log "$backend: $name"
    cpu0=$(cpu_ticks)
    server0=$(proc_ticks "$SERVER_PID")
    # shellcheck disable=SC2046
    pg0=$(proc_ticks $(pg_backends "$backend"))
    "$BENCH" --url "$URL" --key "$KEY" --tenant bench --users "$USERS" \
        --duration-secs "$DURATION" --warmup-secs "$WARMUP" \
        --scenarios "$name" --json "$@" >"$dir/$name.json" 2>"$dir/$name.txt" &
    BENCH_PID=$!
    while kill -0 "$BENCH_PID" 2>/dev/null; do
        bench_ticks=$(proc_ticks "$BENCH_PID")
        sleep 0.2
    done
    wait "$BENCH_PID" || status=$?
    BENCH_PID=""
    cpu1=$(cpu_ticks)
    server1=$(proc_ticks "$SERVER_PID")
    # shellcheck disable=SC2046
    pg1=$(proc_ticks $(pg_backends "$backend"))
    echo "$cpu0 $cpu1 $((server1 - server0)) $((pg1 - pg0)) $bench_ticks $(getconf CLK_TCK)" >"$dir/$name.cpu"
    cat "$dir/$name.txt" >&2
    if [[ $status -ne 0 ]]; then
        log "portcullis-bench $name failed (exit $status) for $backend"
        FAILED=1
        return 1
    fi
}

run_one() {
    local backend=$1
    local dir="$OUT/$backend"
    mkdir -p "$dir"
    local run_start
    run_start=$(date +%s)
    log "== $backend"

    local data
    data=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-bench.XXXXXX")
    TMP_DIRS+=("$data")
    export PORTCULLIS_DATA_DIR="$data"
    case "$backend" in
        sqlite)
            unset PORTCULLIS_DATABASE_URL
            ;;
        postgres)
            psql "$BENCH_PG_URL/postgres" -v ON_ERROR_STOP=1 -q \
                -c "DROP DATABASE IF EXISTS $PG_DB" -c "CREATE DATABASE $PG_DB" >/dev/null
            export PORTCULLIS_DATABASE_URL="$BENCH_PG_URL/$PG_DB${BENCH_PG_PARAMS:+?$BENCH_PG_PARAMS}"
            ;;
        *)
            echo "unknown backend $backend (sqlite or postgres)" >&2
            return 1
            ;;
    esac

    "$PORTCULLIS" --json migrate >/dev/null
    "$PORTCULLIS" --json tenant create --slug bench --plan enterprise >"$dir/tenant.json"
    KEY=$("$PORTCULLIS" --json api-key create --tenant bench --name bench | json_get key)

    local port=$BENCH_PORT
    if ! port_free "$port"; then
        port=$(free_port)
        log "port $BENCH_PORT is taken; using $port"
    fi
    URL="http://127.0.0.1:$port"
    PORTCULLIS_LISTEN="127.0.0.1:$port" "$PORTCULLIS" serve >"$dir/server.log" 2>&1 &
    SERVER_PID=$!
    local ready=""
    for _ in $(seq 1 300); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            break
        fi
        if curl -fsS -o /dev/null "$URL/readyz" 2>/dev/null; then
            ready=1
            break
        fi
        sleep 0.1
    done
    if [[ -z "$ready" ]]; then
        log "server did not become ready; its log:"
        cat "$dir/server.log" >&2
        stop_server
        return 1
    fi
    log "server pid $SERVER_PID on port $port"

    local ok=1 raw rate
    # The raw rate first, while the server is idle: one hashing thread per core, as the
    # server's pool has by default.
    scenario "$backend" "$dir" hash-rate || ok=""
    if [[ -n "$ok" ]]; then
        scenario "$backend" "$dir" login --concurrency "$CONCURRENCY" || true
        raw=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["scenarios"]["hash-rate"]["rps"])' "$dir/hash-rate.json")
        rate=$(python3 -c 'import sys; print(round(float(sys.argv[1]) * float(sys.argv[2]), 2))' "$raw" "$RATE_SHARE")
        log "raw argon2id rate $raw/s; login-rate at $rate/s"
        scenario "$backend" "$dir" login-rate --rate "$rate" || true
    fi
    scenario "$backend" "$dir" refresh --concurrency "$REFRESH_CONCURRENCY" || true
    stop_server

    if [[ "$backend" == postgres ]]; then
        psql "$PORTCULLIS_DATABASE_URL" -Atq -c \
            "SELECT 'sessions: ' || count(*) FROM sessions" >>"$dir/sizes.txt" 2>/dev/null || true
    else
        du -sh "$PORTCULLIS_DATA_DIR" | awk '{print "sqlite data dir: " $1}' >>"$dir/sizes.txt"
    fi
    rm -rf "$PORTCULLIS_DATA_DIR"

    python3 - "$backend" "$dir" "$(( $(date +%s) - run_start ))" >>"$RESULTS" <<'EOF'
import json, os, sys
backend, d, secs = sys.argv[1:4]
out = {"backend": backend, "run_seconds": int(secs), "scenarios": {}}
for name in ["hash-rate", "login", "login-rate", "refresh"]:
    entry = {}
    try:
        bench = json.load(open(os.path.join(d, name + ".json")))
        entry = bench["scenarios"][name]
        out["cores"] = bench.get("cores")
    except (OSError, ValueError, KeyError):
        entry = {"ok": False}
    try:
        busy0, total0, busy1, total1, server, pg, client, hz = map(
            int, open(os.path.join(d, name + ".cpu")).read().split())
        ours = server + pg + client
        capacity = max(total1 - total0, 1)
        entry["cpu"] = {"server_s": server / hz, "postgres_s": pg / hz, "client_s": client / hz,
                        "machine_busy_pct": round(100 * (busy1 - busy0) / capacity, 1),
                        "others_pct": round(max(0, (busy1 - busy0) - ours) * 100 / capacity, 1)}
    except (OSError, ValueError):
        pass
    out["scenarios"][name] = entry
print(json.dumps(out))
EOF
    log "$backend done in $(( $(date +%s) - run_start ))s"
}

for backend in $BACKENDS; do
    run_one "$backend" || FAILED=1
done

TOTAL=$(( $(date +%s) - SCRIPT_START ))
python3 - "$RESULTS" "$TOTAL" "$DURATION" "$CONCURRENCY" "$REFRESH_CONCURRENCY" "$ARGON2" "$RATE_SHARE" >"$OUT/summary.md" <<'EOF'
import json, sys
results_file, total, duration, concurrency, refresh_conc, argon2, share = sys.argv[1:8]
rows = [json.loads(line) for line in open(results_file) if line.strip()]
share_pct = f"{float(share) * 100:.0f}%"

def ok(s):
    return bool(s) and s.get("ok") and "rps" in s

def mark(s):
    return "" if ok(s) else " FAILED"

head = ["backend", "raw argon2id verify/s", "login/s", "ratio", f"login p50/p99 ms at {share_pct}",
        "refresh/s", "refresh/s per core", "refresh p50/p99 ms",
        "refresh/s per server+db CPU-s", "other CPU %"]
print("| " + " | ".join(head) + " |")
print("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
verdicts = []
for r in rows:
    sc = r["scenarios"]
    h, lo, lr, rf = (sc.get(n, {}) for n in ["hash-rate", "login", "login-rate", "refresh"])
    cores = r.get("cores") or 1
    cells = [r["backend"]]
    cells.append(f'{h["rps"]:,.0f}' + mark(h) if "rps" in h else "n/a")
    cells.append(f'{lo["rps"]:,.1f}' + mark(lo) + (f' ({lo["busy_503"]} × 503)' if lo.get("busy_503") else "")
                 if "rps" in lo else "n/a")
    ratio = lo["rps"] / h["rps"] if "rps" in lo and h.get("rps") else None
    cells.append(f"{ratio:.2f}" if ratio is not None else "n/a")
    cells.append(f'{lr["p50_ms"]:.0f} / {lr["p99_ms"]:.0f} (at {lr["rps"]:.1f}/s)' + mark(lr)
                 + (f' ({lr["busy_503"]} × 503)' if lr.get("busy_503") else "")
                 if "rps" in lr else "n/a")
    cells.append(f'{rf["rps"]:,.0f}' + mark(rf) if "rps" in rf else "n/a")
    per_core = rf["rps"] / cores if "rps" in rf else None
    cells.append(f"{per_core:,.0f} ({cores} cores)" if per_core is not None else "n/a")
    cells.append(f'{rf["p50_ms"]:.1f} / {rf["p99_ms"]:.1f}' if "rps" in rf else "n/a")
    cpu = rf.get("cpu", {})
    server_cpu = cpu.get("server_s", 0) + cpu.get("postgres_s", 0)
    if "requests" in rf and server_cpu > 0:
        cells.append(f'{rf["requests"] / server_cpu:,.0f}')
    else:
        cells.append("n/a")
    others = [s.get("cpu", {}).get("others_pct") for s in (h, lo, lr, rf)]
    others = [o for o in others if o is not None]
    cells.append(f"{max(others):.0f}" if others else "n/a")
    print("| " + " | ".join(cells) + " |")
    v = []
    if ratio is not None:
        v.append(f"ratio {ratio:.2f} {'≥' if ratio >= 0.9 else '<'} 0.9")
    if "rps" in lr:
        v.append(f"p99 {lr['p99_ms']:.0f} ms {'<' if lr['p99_ms'] < 300 else '≥'} 300 ms")
    if per_core is not None:
        v.append(f"refresh {per_core:,.0f}/s per core {'≥' if per_core >= 5000 else '<'} 5,000")
    verdicts.append(f"- {r['backend']}: " + "; ".join(v))
print()
print(f"argon2id {argon2}; {duration}s per scenario after a warm-up; login and refresh with "
      f"{concurrency} and {refresh_conc} concurrent workers; login p50/p99 open loop at "
      f"{share_pct} of the raw rate, from the scheduled start. Server, database and load "
      f"generator share the machine's cores: 'per core' divides by all of them. "
      f"'per server+db CPU-s': refreshes per CPU-second the server and its PostgreSQL "
      f"backends used. 'other CPU %': the largest share of the machine's CPU time, over the "
      f"scenarios, used by processes other than the server, its database backends and the "
      f"client. Total time: {int(total) // 60}m{int(total) % 60:02d}s.")
print()
print("Targets (ratio ≥ 0.9, p99 < 300 ms at 80 %, ≥ 5,000 refresh/s per core):")
print("\n".join(verdicts))
EOF

echo
cat "$OUT/summary.md"
echo
log "full output in $OUT (total ${TOTAL}s)"
if [[ $FAILED -ne 0 ]]; then
    log "some benchmark scenarios FAILED; see the *.txt files"
    exit 1
fi
