#!/usr/bin/env bash
# bench/authz.sh — the authorization benchmark the project reports.
#
# Targets (the issue's), on a tenant with 100,000 users, 1,000 groups and 200 roles: a
# median in-process RBAC decision under 1 µs and a median Cedar (ABAC) decision under
# 15 µs with 100 policies; over HTTP, at least 30,000 `POST /api/v1/authz/check` per
# second per core with p99 under 2 ms.
#
# For each backend (SQLite, PostgreSQL) it:
#   1. prepares a fresh database (SQLite: a new temporary PORTCULLIS_DATA_DIR; PostgreSQL:
#      DROP/CREATE DATABASE portcullis_bench, with a temporary data dir for the master key),
#   2. runs `portcullis migrate`, creates the tenant `bench` (enterprise plan) and an API
#      key for it,
#   3. fills the tenant: `portcullis dev seed --users USERS`, then `portcullis dev
#      seed-authz` (application permissions, SEED_ROLES custom roles, a forest of
#      SEED_GROUPS groups up to four levels deep with role grants, every user in one to
#      three groups, direct role assignments for 5 % of the users, some time-bound, and
#      SEED_POLICIES active Cedar policies over the application actions); both are timed
#      (PostgreSQL: then PG_AFTER_SEED),
#   4. without the server, runs `portcullis-bench` in-process on the same database:
#        a. authz-rbac  — single `Engine::check` calls of built-in actions (users:read,
#                         users:update, sessions:read on users) that no policy names: roles
#                         alone decide,
#        b. authz-cedar — single calls on the application actions, which the policies name,
#                         with resource attributes and contexts that make them go either way;
#      CHECKS timed calls each, on one thread, principals at random among SAMPLE_USERS
#      active users whose entries the set-up loads into the cache first,
#   5. starts `portcullis serve`, waits for /readyz and runs authz-check: `POST
#      /api/v1/authz/check` with the API key, CONCURRENCY closed-loop workers, principals
#      at random among SAMPLE_USERS active users (one unmeasured check each first fills the
#      server's cache), a CEDAR_SHARE of Cedar checks and RBAC checks otherwise; then
#      authz-check-batch: the same checks, BATCH per `POST /api/v1/authz/check-batch`
#      request (how far batching amortises the HTTP work),
#   6. stops the server (SIGTERM).
# While the HTTP scenarios run it accounts for CPU time (server, its PostgreSQL backends, client,
# everything else): the server and the load generator share the machine's cores, so it
# reports checks per second per core of the whole machine AND per CPU-second of the server
# process (what one core would serve if the server had it to itself).
# It then prints one markdown table (a row per backend) and whether the targets are met.
# Everything (per-scenario JSON, seed reports, server logs, the table) is also kept in
# bench/results/authz-<timestamp>/ (gitignored).
#
# Usage:   bench/authz.sh
# Knobs (environment):
#   BACKENDS="sqlite postgres"      backends to run
#   USERS=100000                    users seeded into the tenant
#   SEED_GROUPS=1000 SEED_ROLES=200 SEED_POLICIES=100 SEED=1
#                                   what `dev seed-authz` creates, and its random seed
#   SAMPLE_USERS=10000              active users the checks are about (cached first)
#   CHECKS=200000                   timed calls per in-process scenario
#   DURATION=10                     measured seconds of authz-check
#   WARMUP=1                        unmeasured seconds of authz-check before them
#   CONCURRENCY=16                  concurrent workers of authz-check
#   CEDAR_SHARE=0.5                 share of Cedar checks in authz-check
#   BATCH=20                        checks per request of authz-check-batch
#   BENCH_PG_URL=postgres://postgres@127.0.0.1:5432
#                                   PostgreSQL server (no database name); the database
#                                   `portcullis_bench` on it is dropped and re-created
#   BENCH_PG_PARAMS=                connection parameters of the database URL, e.g.
#                                   "sslmode=disable"
#   BENCH_PORT=18080                port for the server (a free one is picked if taken)
#   PG_AFTER_SEED="VACUUM (ANALYZE)"  SQL run on the PostgreSQL database after seeding, as
#                                   autovacuum would have on a live server; empty to skip
#   SKIP_BUILD=1                    use the existing target/release binaries
#   PORTCULLIS_DATABASE_MAX_CONNECTIONS, … : passed through to the server as usual.
# Needs: cargo, curl, python3, psql (for PostgreSQL).
# The last PostgreSQL database is left in place for inspection; drop it with:
#   psql "$BENCH_PG_URL/postgres" -c 'DROP DATABASE portcullis_bench'
# Exit status: non-zero if any step or any benchmark scenario failed (missing a target is
# reported, not a failure).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BACKENDS=${BACKENDS:-sqlite postgres}
USERS=${USERS:-100000}
SEED_GROUPS=${SEED_GROUPS:-1000}
SEED_ROLES=${SEED_ROLES:-200}
SEED_POLICIES=${SEED_POLICIES:-100}
SEED=${SEED:-1}
SAMPLE_USERS=${SAMPLE_USERS:-10000}
CHECKS=${CHECKS:-200000}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-1}
CONCURRENCY=${CONCURRENCY:-16}
CEDAR_SHARE=${CEDAR_SHARE:-0.5}
BATCH=${BATCH:-20}
BENCH_PG_URL=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}
BENCH_PG_URL=${BENCH_PG_URL%/}
BENCH_PORT=${BENCH_PORT:-18080}
PG_DB=portcullis_bench
BENCH_PG_PARAMS=${BENCH_PG_PARAMS:-}
PG_AFTER_SEED=${PG_AFTER_SEED-VACUUM (ANALYZE)}

RESULTS_PREFIX=authz-
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

log "results in $OUT (backends: $BACKENDS; $USERS users, $SEED_GROUPS groups, $SEED_ROLES roles, $SEED_POLICIES policies; $CHECKS in-process checks; HTTP ${DURATION}s x $CONCURRENCY)"
{
    echo "date: $(date -Is)"
    echo "git: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet 2>/dev/null || echo ' (dirty)')"
    echo "cpus: $(nproc); $(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo 2>/dev/null || true)"
    echo "backends: $BACKENDS; users: $USERS; groups: $SEED_GROUPS; roles: $SEED_ROLES; policies: $SEED_POLICIES; seed: $SEED"
    echo "sample users: $SAMPLE_USERS; in-process checks: $CHECKS; HTTP: ${DURATION}s after ${WARMUP}s, concurrency $CONCURRENCY, cedar share $CEDAR_SHARE, batch $BATCH"
    echo "server pool (PORTCULLIS_DATABASE_MAX_CONNECTIONS): ${PORTCULLIS_DATABASE_MAX_CONNECTIONS:-default}"
    echo "after seeding (PostgreSQL): ${PG_AFTER_SEED:-nothing}; connection parameters: ${BENCH_PG_PARAMS:-none}"
    if [[ " $BACKENDS " == *" postgres "* ]]; then
        psql "$BENCH_PG_URL/postgres" -Atc "SELECT version()" \
            -c "SELECT name || ' = ' || setting FROM pg_settings WHERE name IN ('shared_buffers', 'autovacuum', 'synchronous_commit', 'max_connections', 'fsync', 'ssl')" \
            2>/dev/null || true
    fi
} >"$OUT/environment.txt"

# now_s: seconds since the epoch, with decimals.
now_s() { date +%s.%N; }
elapsed_since() { python3 -c 'import sys, time; print(round(time.time() - float(sys.argv[1]), 1))' "$1"; }

# http_scenario BACKEND DIR NAME ARGS...: runs one HTTP portcullis-bench scenario against
# the server and records its JSON (DIR/NAME.json) and the CPU time spent meanwhile
# (DIR/NAME.cpu).
http_scenario() {
    local backend=$1 dir=$2 name=$3
    shift 3
    local status=0 cpu0 cpu1 server0 server1 pg0 pg1 bench_ticks=0
    log "$backend: $name"
    cpu0=$(cpu_ticks)
    server0=$(proc_ticks "$SERVER_PID")
    # shellcheck disable=SC2046
    pg0=$(proc_ticks $(pg_backends "$backend"))
    "$BENCH" --url "$URL" --key "$KEY" --sample-users "$SAMPLE_USERS" \
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

    local data db_url
    data=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-bench.XXXXXX")
    TMP_DIRS+=("$data")
    export PORTCULLIS_DATA_DIR="$data"
    case "$backend" in
        sqlite)
            unset PORTCULLIS_DATABASE_URL
            db_url="$data/portcullis.db"
            ;;
        postgres)
            psql "$BENCH_PG_URL/postgres" -v ON_ERROR_STOP=1 -q \
                -c "DROP DATABASE IF EXISTS $PG_DB" -c "CREATE DATABASE $PG_DB" >/dev/null
            export PORTCULLIS_DATABASE_URL="$BENCH_PG_URL/$PG_DB${BENCH_PG_PARAMS:+?$BENCH_PG_PARAMS}"
            db_url=$PORTCULLIS_DATABASE_URL
            ;;
        *)
            echo "unknown backend $backend (sqlite or postgres)" >&2
            return 1
            ;;
    esac

    "$PORTCULLIS" --json migrate >/dev/null
    "$PORTCULLIS" --json tenant create --slug bench --plan enterprise >"$dir/tenant.json"
    KEY=$("$PORTCULLIS" --json api-key create --tenant bench --name bench | json_get key)

    local t0
    log "seeding $USERS users"
    t0=$(now_s)
    "$PORTCULLIS" --json dev seed --tenant bench --users "$USERS" | tail -n 1 >"$dir/seed.json" ||
        { log "dev seed failed for $backend"; return 1; }
    echo "{\"seed_users_s\": $(elapsed_since "$t0")}" >"$dir/setup-users.json"
    if [[ "$backend" == postgres && -n "$PG_AFTER_SEED" ]]; then
        # Statistics for seed-authz's own reads of a tenant that just grew.
        psql "$PORTCULLIS_DATABASE_URL" -v ON_ERROR_STOP=1 -q -c "ANALYZE"
    fi
    log "seeding authorization: $SEED_GROUPS groups, $SEED_ROLES roles, $SEED_POLICIES policies"
    t0=$(now_s)
    "$PORTCULLIS" --json dev seed-authz --tenant bench --groups "$SEED_GROUPS" --roles "$SEED_ROLES" \
        --policies "$SEED_POLICIES" --seed "$SEED" | tail -n 1 >"$dir/seed-authz.json" ||
        { log "dev seed-authz failed for $backend"; return 1; }
    echo "{\"seed_authz_s\": $(elapsed_since "$t0")}" >"$dir/setup-authz.json"
    log "seeded: $(cat "$dir/seed-authz.json")"
    if [[ "$backend" == postgres && -n "$PG_AFTER_SEED" ]]; then
        t0=$(now_s)
        psql "$PORTCULLIS_DATABASE_URL" -v ON_ERROR_STOP=1 -q -c "$PG_AFTER_SEED"
        log "$PG_AFTER_SEED took $(elapsed_since "$t0")s"
    fi

    # In-process decisions, the server not running.
    log "$backend: authz-rbac, authz-cedar (in-process)"
    if ! "$BENCH" --database-url "$db_url" --tenant bench --sample-users "$SAMPLE_USERS" \
        --checks "$CHECKS" --scenarios authz-rbac,authz-cedar --json \
        >"$dir/engine.json" 2>"$dir/engine.txt"; then
        log "portcullis-bench authz-rbac,authz-cedar failed for $backend"
        FAILED=1
    fi
    cat "$dir/engine.txt" >&2

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
    http_scenario "$backend" "$dir" authz-check --concurrency "$CONCURRENCY" \
        --cedar-share "$CEDAR_SHARE" || true
    http_scenario "$backend" "$dir" authz-check-batch --concurrency "$CONCURRENCY" \
        --cedar-share "$CEDAR_SHARE" --batch "$BATCH" || true
    stop_server

    if [[ "$backend" == postgres ]]; then
        psql "$PORTCULLIS_DATABASE_URL" -Atq \
            -c "SELECT 'group_members: ' || count(*) FROM group_members" \
            -c "SELECT 'user_roles: ' || count(*) FROM user_roles" \
            -c "SELECT 'audit_events: ' || count(*) FROM audit_events" \
            -c "SELECT 'database: ' || pg_size_pretty(pg_database_size(current_database()))" \
            >>"$dir/sizes.txt" 2>/dev/null || true
    else
        du -sh "$PORTCULLIS_DATA_DIR" | awk '{print "sqlite data dir: " $1}' >>"$dir/sizes.txt"
    fi
    rm -rf "$PORTCULLIS_DATA_DIR"

    python3 - "$backend" "$dir" "$(( $(date +%s) - run_start ))" >>"$RESULTS" <<'EOF'
import json, os, sys
backend, d, secs = sys.argv[1:4]
out = {"backend": backend, "run_seconds": int(secs), "scenarios": {}, "setup": {}}
def load(name):
    try:
        return json.load(open(os.path.join(d, name)))
    except (OSError, ValueError):
        return None
for name in ["setup-users.json", "setup-authz.json"]:
    out["setup"].update(load(name) or {})
out["seed"] = load("seed.json") or {}
out["seed_authz"] = load("seed-authz.json") or {}
engine = load("engine.json") or {}
for name in ["authz-rbac", "authz-cedar"]:
    out["scenarios"][name] = engine.get("scenarios", {}).get(name, {"ok": False})
out["cores"] = engine.get("cores")
for name in ["authz-check", "authz-check-batch"]:
    http = load(name + ".json") or {}
    entry = http.get("scenarios", {}).get(name, {"ok": False})
    out["cores"] = out["cores"] or http.get("cores")
    try:
        busy0, total0, busy1, total1, server, pg, client, hz = map(
            int, open(os.path.join(d, name + ".cpu")).read().split())
        capacity = max(total1 - total0, 1)
        ours = server + pg + client
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
python3 - "$RESULTS" "$TOTAL" "$DURATION" "$CONCURRENCY" "$CEDAR_SHARE" "$CHECKS" "$BATCH" >"$OUT/summary.md" <<'EOF'
import json, sys
results_file, total, duration, concurrency, cedar_share, checks, batch = sys.argv[1:8]
batch = int(batch)
rows = [json.loads(line) for line in open(results_file) if line.strip()]

def ok(s):
    return bool(s) and s.get("ok") and "rps" in s

def mark(s):
    return "" if ok(s) else " FAILED"

head = ["backend", "data set", "seed users / authz s", "RBAC p50 / p99 µs", "Cedar p50 / p99 µs",
        "engine checks/s, 1 thread (RBAC / Cedar)", "HTTP checks/s", "per core (machine)",
        "per server CPU-s", "HTTP p50 / p99 ms",
        f"batch of {batch}: checks/s per core (machine) / per server CPU-s", "other CPU %"]
print("| " + " | ".join(head) + " |")
print("|" + "|".join(["---", "---"] + ["---:"] * (len(head) - 2)) + "|")
verdicts = []
for r in rows:
    sc = r["scenarios"]
    rb, cd, hc, hb = (sc.get(n, {}) for n in ["authz-rbac", "authz-cedar", "authz-check",
                                              "authz-check-batch"])
    cores = r.get("cores") or 1
    sa = r.get("seed_authz", {})
    data = (f'{r.get("seed", {}).get("inserted", 0):,} users, {sa.get("groups", 0):,} groups, '
            f'{sa.get("roles", 0)} roles, {sa.get("policies", 0)} policies, '
            f'{sa.get("memberships", 0):,} memberships, {sa.get("assignments", 0):,} assignments')
    setup = r.get("setup", {})
    cells = [r["backend"], data,
             f'{setup.get("seed_users_s", float("nan")):.0f} / {setup.get("seed_authz_s", float("nan")):.0f}']
    for s in (rb, cd):
        cells.append(f'{s["p50_us"]:.2f} / {s["p99_us"]:.2f}' + mark(s) if "p50_us" in s else "n/a")
    cells.append(f'{rb.get("checks_per_s_one_thread", 0):,.0f} / {cd.get("checks_per_s_one_thread", 0):,.0f}'
                 if "p50_us" in rb and "p50_us" in cd else "n/a")
    cells.append(f'{hc["rps"]:,.0f}' + mark(hc) if "rps" in hc else "n/a")
    per_core = hc["rps"] / cores if "rps" in hc else None
    cells.append(f"{per_core:,.0f} ({cores} cores)" if per_core is not None else "n/a")
    cpu = hc.get("cpu", {})
    server_cpu = cpu.get("server_s", 0)
    per_server = hc["requests"] / server_cpu if "requests" in hc and server_cpu > 0 else None
    cells.append(f"{per_server:,.0f}" if per_server is not None else "n/a")
    cells.append(f'{hc["p50_ms"]:.2f} / {hc["p99_ms"]:.2f}' if "rps" in hc else "n/a")
    bcpu = hb.get("cpu", {}).get("server_s", 0)
    if "rps" in hb:
        cells.append(f'{hb["rps"] * batch / cores:,.0f} / '
                     + (f'{hb["requests"] * batch / bcpu:,.0f}' if bcpu > 0 else "n/a") + mark(hb))
    else:
        cells.append("n/a")
    others = [s.get("cpu", {}).get("others_pct") for s in (hc, hb)]
    others = [o for o in others if o is not None]
    cells.append(f"{max(others):.0f}" if others else "n/a")
    print("| " + " | ".join(cells) + " |")
    v = []
    if "p50_us" in rb:
        v.append(f"RBAC median {rb['p50_us']:.2f} µs {'<' if rb['p50_us'] < 1 else '≥'} 1 µs")
    if "p50_us" in cd:
        v.append(f"Cedar median {cd['p50_us']:.2f} µs {'<' if cd['p50_us'] < 15 else '≥'} 15 µs")
    if per_core is not None:
        v.append(f"HTTP {per_core:,.0f}/s per core of the machine {'≥' if per_core >= 30000 else '<'} 30,000")
    if per_server is not None:
        v.append(f"{per_server:,.0f}/s per server CPU-second {'≥' if per_server >= 30000 else '<'} 30,000")
    if "rps" in hc:
        v.append(f"p99 {hc['p99_ms']:.2f} ms {'<' if hc['p99_ms'] < 2 else '≥'} 2 ms")
    verdicts.append(f"- {r['backend']}: " + "; ".join(v))
print()
print(f"In-process: {int(checks):,} single Engine::check calls per scenario on one thread, principals "
      f"among the cached sample; RBAC = built-in actions no policy names, Cedar = application "
      f"actions the policies name. HTTP: POST /api/v1/authz/check, {concurrency} closed-loop "
      f"workers for {duration}s after a warm-up, {float(cedar_share) * 100:.0f} % Cedar checks; "
      f"the batch column sends the same checks {batch} per POST /api/v1/authz/check-batch. "
      f"Server, database and load generator share the machine's cores: 'per core (machine)' "
      f"divides by all of them; 'per server CPU-s' is checks per CPU-second the server process "
      f"used. 'other CPU %': the largest share of the machine's CPU time used by other processes "
      f"during the HTTP runs. Total time: {int(total) // 60}m{int(total) % 60:02d}s.")
print()
print("Targets (RBAC median < 1 µs, Cedar median < 15 µs, ≥ 30,000 HTTP checks/s per core, p99 < 2 ms):")
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
