#!/usr/bin/env bash
# storage-wal benchmark (not a test): sync writes/s with 1, 16, 64 clients
# next to the raw fdatasync rate, async writes/s, and startup replay of
# 1,000,000 ~200-byte documents from the log and from a snapshot.
# Usage: bench/storage-wal/run.sh [BUILD_DIR]   (default build-wal)
# Env: SECONDS_PER_RUN (5), DOCS (1000000), PIN (1: server on CPU 1, load on CPU 0)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:-$root/build-wal}" && pwd)
secs=${SECONDS_PER_RUN:-5}
docs=${DOCS:-1000000}
pin=${PIN:-1}
auth=test-auth
token=admin-token
moddir="$build/modules:$build/fixtures"
if [ -e "$build/modules/auth-jwt.so" ]; then auth=auth-jwt; fi
work=$(mktemp -d "$here/tmp-XXXXXX")
port=$(PYTHONPATH="$root/tests/integration" python3 -c 'import mdbtest; print(mdbtest.free_port())')
results="$here/results-$(date -u +%Y%m%dT%H%M%SZ).md"
pid=
cleanup() { if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill "$pid"; wait "$pid" || true; fi; rm -rf "$work"; }
trap cleanup EXIT
if [ -n "${KEEP:-}" ]; then trap - EXIT; fi

gcc -O2 -o "$work/walbench" "$here/walbench.c" -lpthread
srv_pin=(); load_pin=()
if [ "$pin" = 1 ] && [ "$(nproc)" -ge 2 ]; then srv_pin=(taskset -c 1); load_pin=(taskset -c 0); fi

start_server() { # dir, extra args...
    local dir=$1; shift
    mkdir -p "$dir"
    printf 'module = storage-wal\nmodule = %s\nmodule = query-engine\n' "$auth" > "$dir/moltendb.conf"
    local authargs=()
    if [ "$auth" = auth-jwt ]; then
        authargs=(--jwt-secret bench-secret-0123456789abcdef0123456789 --root-user root
                  --root-password bench-root-password --rate-limit-requests 100000000)
    fi
    "${srv_pin[@]}" "$build/moltendb" --config "$dir/moltendb.conf" --module-dir "$moddir" \
        --dev-mode --host 127.0.0.1 --port "$port" --db-path "$dir/db.log" \
        --encryption-key bench-key "${authargs[@]}" "$@" >> "$dir/server.log" 2>&1 &
    pid=$!
    local up=0
    for _ in $(seq 1 600); do
        if curl -sf "http://127.0.0.1:$port/system/health" >/dev/null; then up=1; break; fi
        sleep 0.05
    done
    if [ "$up" != 1 ]; then
        echo "server did not start:" >&2; tail -20 "$dir/server.log" >&2; exit 1
    fi
    if [ "$auth" = auth-jwt ]; then
        token=$(curl -s -XPOST "http://127.0.0.1:$port/login" -H 'Content-Type: application/json' \
            -d '{"username":"root","password":"bench-root-password"}' | sed 's/.*"token":"\([^"]*\)".*/\1/')
    fi
}
stop_server() { kill "$pid"; wait "$pid" || true; pid=; }

{
echo "# storage-wal benchmark, $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "Machine: $(nproc) CPUs, $(uname -r); server pinned: $pin; auth module: $auth; ${secs}s per run; encryption on."
echo
echo "## Durable writes"
echo
raw=$("$work/walbench" fsync "$work" 2 | sed 's/.*=//')
echo "Raw disk: 200-byte append + fdatasync, one at a time: **$raw fdatasync/s**"
echo
echo "| mode | clients | req/s | p50 ms | p99 ms | batches durable | fdatasync calls |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for mode in sync async; do
    for c in 1 16 64; do
        d="$work/w-$mode-$c"
        start_server "$d" --write-mode "$mode"
        out=$("${load_pin[@]}" "$work/walbench" http 127.0.0.1 "$port" "$token" "$c" "$secs")
        stop_server
        line=$(grep -o 'log closed: [0-9]* write batches made durable with [0-9]* fdatasync' "$d/server.log" | tail -1)
        nb=$(echo "$line" | awk '{print $3}'); ns=$(echo "$line" | awk '{print $9}')
        rps=$(echo "$out" | sed 's/.*req\/s=\([0-9]*\).*/\1/')
        p50=$(echo "$out" | sed 's/.*p50_ms=\([0-9.]*\).*/\1/')
        p99=$(echo "$out" | sed 's/.*p99_ms=\([0-9.]*\).*/\1/')
        err=$(echo "$out" | sed 's/.*errors=\([0-9]*\).*/\1/')
        [ "$err" = 0 ] || echo "(errors: $err)"
        echo "| $mode | $c | $rps | $p50 | $p99 | $nb | $ns |"
    done
done
echo
echo "## Startup replay of $docs documents (~200 bytes of JSON each)"
echo
d="$work/replay"
start_server "$d" --write-mode async
python3 - "$port" "$token" "$docs" <<'PY'
import http.client, json, sys
port, token, docs = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
pad = "x" * 149
for start in range(0, docs, 1000):
    data = {"doc%07d" % i: {"name": "user %d" % i, "n": i, "city": "Lisbon", "pad": pad}
            for i in range(start, min(docs, start + 1000))}
    conn.request("POST", "/set", body=json.dumps({"collection": "replay", "data": data}),
                 headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    r = conn.getresponse(); r.read()
    assert r.status == 200, r.status
PY
stop_server
jsonbytes=$(python3 -c "
import json; pad='x'*149
print(sum(len(json.dumps({'name':'user %d'%i,'n':i,'city':'Lisbon','pad':pad},separators=(',',':'))) for i in range($docs)))")
echo "Documents' JSON: $jsonbytes bytes ($((jsonbytes / docs)) per document); log: $(stat -c %s "$d/db.log") bytes."
echo
echo "| source | replay ms | peak RSS MB (VmHWM) | peak / JSON size |"
echo "|---|---:|---:|---:|"
measure() { # label [unpinned]
    local keep=("${srv_pin[@]}")
    if [ "${2:-}" = unpinned ]; then srv_pin=(); fi
    start_server "$d" --write-mode async
    srv_pin=("${keep[@]}")
    local hwm; hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    local ms; ms=$(grep -o 'replayed [0-9]* records.* in [0-9]* ms' "$d/server.log" | tail -1 | sed 's/.* in \([0-9]*\) ms/\1/')
    echo "| $1 | $ms | $((hwm / 1024)) | $(python3 -c "print(round($hwm*1024/$jsonbytes,2))") |"
}
measure "log, server pinned to 1 CPU"
stop_server
measure "log, 2 CPUs" unpinned
curl -sf -XPOST "http://127.0.0.1:$port/snapshot" -H "Authorization: Bearer $token" >/dev/null
stop_server
snapbytes=$(stat -c %s "$d/db.log.snapshot.bin")
measure "snapshot, server pinned to 1 CPU"
stop_server
measure "snapshot, 2 CPUs" unpinned
stop_server
echo
echo "Snapshot file: $snapbytes bytes. Peak RSS includes Argon2id's 64 MiB key derivation."
} | tee "$results"
echo "results written to $results" >&2
