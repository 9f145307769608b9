#!/usr/bin/env bash
# bench/users.sh — the user-management benchmark the project reports.
#
# For each backend (SQLite, PostgreSQL) and each tenant size it:
#   1. prepares a fresh database (SQLite: a new temporary PORTCULLIS_DATA_DIR; PostgreSQL:
#      DROP/CREATE DATABASE portcullis_bench),
#   2. runs `portcullis migrate`, creates the tenant `bench` (enterprise plan: no quota)
#      and an API key for it,
#   3. seeds N users with `portcullis dev seed` and records its insert rate (PostgreSQL:
#      then VACUUM (ANALYZE), see PG_AFTER_SEED),
#   4. starts `portcullis serve`, waits for /readyz and runs `portcullis-bench` against
#      it: list-first, list-deep, list-filtered and search (reads first), then create
#      (HTTP user creation, last so that it does not change the data being read),
#   5. stops the server (SIGTERM).
# While the scenarios run it also accounts for CPU time (server, its PostgreSQL backends,
# client, and everything else: the "other CPU %" column), since on a shared machine other
# processes' load moves the numbers a lot.
# It then prints one combined markdown table. Everything (per-run JSON, server logs, the
# table) is also kept in bench/results/<timestamp>/ (gitignored).
#
# Usage:   bench/users.sh
# Knobs (environment):
#   SIZES="100000 1000000"          users seeded per run
#   BACKENDS="sqlite postgres"      backends to run
#   DURATION=10                     measured seconds per scenario
#   CONCURRENCY=16                  concurrent requests per scenario
#   WARMUP=1                        unmeasured warm-up seconds per scenario
#   BENCH_PG_URL=postgres://postgres@127.0.0.1:5432
#                                   PostgreSQL server (no database name); the database
#                                   `portcullis_bench` on it is dropped and re-created
#   BENCH_PORT=18080                port for the server (a free one is picked if taken)
#   PG_AFTER_SEED="VACUUM (ANALYZE)"  SQL run on the PostgreSQL database after seeding
#                                   (e.g. "ANALYZE" to skip the vacuum)
#   SKIP_BUILD=1                    use the existing target/release binaries
#   PORTCULLIS_DATABASE_MAX_CONNECTIONS, … : passed through to the server as usual.
# Needs: cargo, curl, python3, psql (for PostgreSQL).
# The last PostgreSQL database is left in place for inspection (EXPLAIN ANALYZE …);
# drop it with: psql "$BENCH_PG_URL/postgres" -c 'DROP DATABASE portcullis_bench'.
# Exit status: non-zero if any step or any benchmark scenario failed.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZES=${SIZES:-100000 1000000}
BACKENDS=${BACKENDS:-sqlite postgres}
DURATION=${DURATION:-10}
CONCURRENCY=${CONCURRENCY:-16}
WARMUP=${WARMUP:-1}
BENCH_PG_URL=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}
BENCH_PG_URL=${BENCH_PG_URL%/}
BENCH_PORT=${BENCH_PORT:-18080}
PG_DB=portcullis_bench
# Run on the bench database after seeding. VACUUM also sets the hint bits and the
# visibility map, as autovacuum would on a live server after a million inserts (on a test
# server with autovacuum off, plain ANALYZE leaves the first reads of every page to do it).
PG_AFTER_SEED=${PG_AFTER_SEED:-VACUUM (ANALYZE)}

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

log "results in $OUT (sizes: $SIZES; backends: $BACKENDS; ${DURATION}s x ${CONCURRENCY} concurrency per scenario)"
{
    echo "date: $(date -Is)"
    echo "git: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet 2>/dev/null || echo ' (dirty)')"
    echo "cpus: $(nproc)"
    echo "sizes: $SIZES; backends: $BACKENDS; duration: ${DURATION}s; concurrency: $CONCURRENCY; warmup: ${WARMUP}s"
    echo "server pool (PORTCULLIS_DATABASE_MAX_CONNECTIONS): ${PORTCULLIS_DATABASE_MAX_CONNECTIONS:-default}"
    echo "after seeding (PostgreSQL): $PG_AFTER_SEED"
    if [[ " $BACKENDS " == *" postgres "* ]]; then
        psql "$BENCH_PG_URL/postgres" -Atc "SELECT version()" \
            -c "SELECT name || ' = ' || setting FROM pg_settings WHERE name IN ('shared_buffers', 'autovacuum', 'synchronous_commit', 'commit_delay', 'max_connections', 'work_mem')" \
            2>/dev/null || true
    fi
} >"$OUT/environment.txt"

run_one() {
    local backend=$1 size=$2
    local dir="$OUT/$backend-$size"
    mkdir -p "$dir"
    local run_start
    run_start=$(date +%s)
    log "== $backend, $size users"

    case "$backend" in
        sqlite)
            local data
            data=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-bench.XXXXXX")
            TMP_DIRS+=("$data")
            export PORTCULLIS_DATA_DIR="$data"
            unset PORTCULLIS_DATABASE_URL
            ;;
        postgres)
            psql "$BENCH_PG_URL/postgres" -v ON_ERROR_STOP=1 -q \
                -c "DROP DATABASE IF EXISTS $PG_DB" -c "CREATE DATABASE $PG_DB" >/dev/null
            export PORTCULLIS_DATABASE_URL="$BENCH_PG_URL/$PG_DB"
            unset PORTCULLIS_DATA_DIR
            ;;
        *)
            echo "unknown backend $backend (sqlite or postgres)" >&2
            return 1
            ;;
    esac

    "$PORTCULLIS" --json migrate >/dev/null
    "$PORTCULLIS" --json tenant create --slug bench --plan enterprise >"$dir/tenant.json"
    local key
    key=$("$PORTCULLIS" --json api-key create --tenant bench --name bench | json_get key)

    log "seeding $size users"
    "$PORTCULLIS" --json dev seed --tenant bench --users "$size" | tail -n 1 >"$dir/seed.json"
    log "seeded: $(cat "$dir/seed.json")"
    if [[ "$backend" == postgres ]]; then
        local t0=$SECONDS
        psql "$PORTCULLIS_DATABASE_URL" -v ON_ERROR_STOP=1 -q -c "$PG_AFTER_SEED"
        log "$PG_AFTER_SEED took $((SECONDS - t0))s"
    fi
    if [[ "$backend" == sqlite ]]; then
        du -sh "$PORTCULLIS_DATA_DIR" | awk '{print "sqlite data dir: " $1}' >>"$dir/sizes.txt"
    else
        psql "$PORTCULLIS_DATABASE_URL" -Atq -c \
            "SELECT 'users table+indexes: ' || pg_size_pretty(pg_total_relation_size('users'))" >>"$dir/sizes.txt"
    fi

    local port=$BENCH_PORT
    if ! port_free "$port"; then
        port=$(free_port)
        log "port $BENCH_PORT is taken; using $port"
    fi
    PORTCULLIS_LISTEN="127.0.0.1:$port" "$PORTCULLIS" serve >"$dir/server.log" 2>&1 &
    SERVER_PID=$!
    local ready=""
    for _ in $(seq 1 300); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            break
        fi
        if curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null; then
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

    # The machine may be shared: account for the CPU time the server, its PostgreSQL
    # backends and the client used during the benchmark, and for what everything else used.
    log "benchmarking (server pid $SERVER_PID, port $port)"
    local status=0 cpu0 cpu1 server0 server1 pg0 pg1 bench_ticks=0
    cpu0=$(cpu_ticks)
    server0=$(proc_ticks "$SERVER_PID")
    # shellcheck disable=SC2046
    pg0=$(proc_ticks $(pg_backends "$backend"))
    "$BENCH" --url "http://127.0.0.1:$port" --key "$key" \
        --concurrency "$CONCURRENCY" --duration-secs "$DURATION" --warmup-secs "$WARMUP" \
        --scenarios list-first,list-deep,list-filtered,search,create \
        --json >"$dir/bench.json" 2>"$dir/bench.txt" &
    BENCH_PID=$!
    while kill -0 "$BENCH_PID" 2>/dev/null; do
        bench_ticks=$(proc_ticks "$BENCH_PID")
        sleep 0.5
    done
    wait "$BENCH_PID" || status=$?
    BENCH_PID=""
    cpu1=$(cpu_ticks)
    server1=$(proc_ticks "$SERVER_PID")
    # shellcheck disable=SC2046
    pg1=$(proc_ticks $(pg_backends "$backend"))
    cat "$dir/bench.txt" >&2
    stop_server
    echo "$cpu0 $cpu1 $((server1 - server0)) $((pg1 - pg0)) $bench_ticks $(getconf CLK_TCK)" >"$dir/cpu.txt"
    if [[ $status -ne 0 ]]; then
        log "portcullis-bench failed (exit $status) for $backend/$size"
        FAILED=1
    fi
    if [[ "$backend" == sqlite ]]; then
        rm -rf "$PORTCULLIS_DATA_DIR"
    fi

    # One line per run: what the summary table is made of.
    python3 - "$backend" "$size" "$dir/seed.json" "$dir/bench.json" "$(( $(date +%s) - run_start ))" \
        "$dir/cpu.txt" >>"$RESULTS" <<'EOF'
import json, sys
backend, size, seed_file, bench_file, secs, cpu_file = sys.argv[1:7]
busy0, total0, busy1, total1, server, pg, client, hz = map(int, open(cpu_file).read().split())
ours = server + pg + client
capacity = max(total1 - total0, 1)
cpu = {"server_s": server / hz, "postgres_s": pg / hz, "client_s": client / hz,
       "machine_busy_pct": round(100 * (busy1 - busy0) / capacity, 1),
       "others_pct": round(max(0, (busy1 - busy0) - ours) * 100 / capacity, 1)}
seed = json.load(open(seed_file))
try:
    bench = json.load(open(bench_file))
except (OSError, ValueError):
    bench = {"ok": False, "scenarios": {}}
print(json.dumps({"backend": backend, "users": int(size), "seed": seed, "bench": bench,
                  "run_seconds": int(secs), "cpu": cpu}))
EOF
    log "$backend/$size done in $(( $(date +%s) - run_start ))s"
}

for backend in $BACKENDS; do
    for size in $SIZES; do
        run_one "$backend" "$size"
    done
done

TOTAL=$(( $(date +%s) - SCRIPT_START ))
python3 - "$RESULTS" "$TOTAL" "$DURATION" "$CONCURRENCY" >"$OUT/summary.md" <<'EOF'
import json, sys
results_file, total, duration, concurrency = sys.argv[1:5]
rows = [json.loads(line) for line in open(results_file) if line.strip()]
reads = [("list-first", "list-first"), ("list-deep", "list-deep"),
         ("list-filtered", "filtered"), ("search", "search")]

def sc(r, name):
    return r["bench"].get("scenarios", {}).get(name)

def lat(s):
    if not s:
        return "n/a"
    mark = "" if s["ok"] else " FAILED"
    return f'{s["p50_ms"]:.1f} / {s["p99_ms"]:.1f}{mark}'

def rps(s):
    if not s:
        return "n/a"
    return f'{s["rps"]:,.0f}' + ("" if s["ok"] else " FAILED")

head = (["backend", "users", "seed inserts/s", "create/s (HTTP)", "create p50/p99 ms"]
        + [f"{label} p50/p99 ms" for _, label in reads]
        + [f"{label} req/s" for _, label in reads]
        + ["other CPU %"])
print("| " + " | ".join(head) + " |")
print("|" + "|".join(["---", "---:"] + ["---:"] * (len(head) - 2)) + "|")
for r in rows:
    create = sc(r, "create")
    cells = [r["backend"], f'{r["users"]:,}', f'{r["seed"]["per_second"]:,.0f}', rps(create), lat(create)]
    cells += [lat(sc(r, name)) for name, _ in reads]
    cells += [rps(sc(r, name)) for name, _ in reads]
    cells += [f'{r["cpu"]["others_pct"]:.0f}']
    print("| " + " | ".join(cells) + " |")
print()
print(f"{duration}s per scenario after a warm-up, {concurrency} concurrent requests, "
      f"latency in ms (p50 / p99), measured end to end over HTTP on the same machine. "
      f"'other CPU %': share of the machine's CPU time used by processes other than the "
      f"server, its database backends and the client while the scenarios ran (a shared "
      f"machine makes the numbers noisy). Total time: {int(total) // 60}m{int(total) % 60:02d}s.")
EOF

echo
cat "$OUT/summary.md"
echo
log "full output in $OUT (total ${TOTAL}s)"
if [[ $FAILED -ne 0 ]]; then
    log "some benchmark scenarios FAILED; see the bench.txt files"
    exit 1
fi
