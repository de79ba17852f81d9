#!/usr/bin/env bash
# Reconnect storms (docs/benchmarks.md, "Reconnect storms"): 10,000 devices
# with token auth connect at 5,000/s (loadtest/scenarios/connect-storm-10k.toml)
# against, in one session:
#
#   mosquitto   Mosquitto 2.0 (Debian), no auth: the peer
#   first       a fresh standalone, devices provisioned just before (their
#               first connect: presence written for every one)
#   warm        the same server again (auth cache warm)
#   cold        the same data after a restart (auth cache cold)
#
# Usage: bash loadtest/connect-storm.sh [out-dir] [devices] [ramp]
#   defaults: target/loadtest-storm, and the scenario's devices and ramp
# TOPOLOGY=distributed runs Tributary as a Tansu broker, a registry and an
# ingest replica (its registry remote), with a cold run unbatched beside.
# SCENARIO=connect-churn-100k runs 100,000 devices that each hold their
# connection 2 s (more devices than one process may hold sockets for).
# SKIP_BUILD=1 reuses the release binaries in target/release. Prints one
# table row per run; the JSON reports and SVG plots go to out-dir.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/loadtest-storm}
SIZE=()
[ -n "${2:-}" ] && SIZE+=(--devices "$2")
[ -n "${3:-}" ] && SIZE+=(--ramp "$3")
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SC=loadtest/scenarios/${SCENARIO:-connect-storm-10k}.toml

. loadtest/lib.sh
need_mosquitto
release_binaries

WORK=$(mktemp -d)
PID=
trap 'stop_server; rm -rf "$WORK"' EXIT
run_lt() { # label flags... (--server-pid: the report holds the server's CPU per connect)
  local label=$1; shift
  wait_time_wait
  echo "== $label (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  "$LT" run "$SC" -q "${SIZE[@]}" --json "$OUT/$label.json" --plot "$OUT/$label.svg" "$@" ||
    echo "   exit $?" >&2
}

# --- Mosquitto -----------------------------------------------------------
port=$(free_port)
mkdir -p "$WORK/mosquitto"; chmod 777 "$WORK/mosquitto"
cat >"$WORK/mosquitto/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence false
max_connections -1
log_dest none
CONF
"$MOSQUITTO" -c "$WORK/mosquitto/mosquitto.conf" >"$WORK/mosquitto/log" 2>&1 &
PID=$!
wait_port 127.0.0.1 "$port" 10
run_lt mosquitto --target mqtt-broker --mqtt-addr "127.0.0.1:$port" --server-pid "$PID"
stop_server

if [ "${TOPOLOGY:-standalone}" = distributed ]; then
# --- Tributary, distributed: an ingest replica whose registry is remote ----
# A Tansu broker, `tributary registry` and `tributary ingest` as separate
# processes; the server CPU in the table is the ingest replica's, and the
# registry's is in its own column. cold: the ingest replica restarted (its
# directory cache empty); cold-unbatched: the same with
# --registry-max-batch 0 (one registry call per lookup and report).
TANSU=$(command -v tansu || echo "$HOME/.cargo/bin/tansu")
[ -x "$TANSU" ] || cargo install --locked tansu --version 0.6.0 --features dynostore
kport=$(free_port); rport=$(free_port); mport=$(free_port)
"$TANSU" broker --listener-url "tcp://127.0.0.1:$kport" --advertised-listener-url "tcp://127.0.0.1:$kport" \
  --storage-engine memory://tansu/ >"$WORK/tansu.log" 2>&1 &
TANSU_PID=$!
wait_port 127.0.0.1 "$kport" 30
# Tansu 0.6 mishandles multi-record batches (docs/kafka.md): one record each.
COMMON=(--log "kafka://127.0.0.1:$kport" --jwt-secret-file "$WORK/jwt.secret" --metrics-addr 127.0.0.1:0
        --kafka-batch-num-messages 1 --kafka-partitions 4 --log-format json)
"$TRIB" registry "${COMMON[@]}" --store "$WORK/registry" --data-dir "$WORK" \
  --grpc-addr "127.0.0.1:$rport" >>"$WORK/registry.out" 2>&1 &
REG_PID=$!
trap 'stop_server; kill "$REG_PID" "$TANSU_PID" 2>/dev/null; rm -rf "$WORK"' EXIT
wait_port 127.0.0.1 "$rport" 60
start_ingest() {
  "$TRIB" ingest "${COMMON[@]}" --registry-url "http://127.0.0.1:$rport" --frontend-id storm-ingest \
    --http-addr 127.0.0.1:0 --mqtt-addr "127.0.0.1:$mport" --mqtt-ws-addr 127.0.0.1:0 "$@" >>"$WORK/ingest.out" 2>&1 &
  PID=$!
  wait_port 127.0.0.1 "$mport" 60
}
reg_ticks() { awk '{print $14 + $15}' "/proc/$REG_PID/stat"; }
run_dist() { # label flags...: run_lt, and the registry's CPU seconds to label.regcpu
  local label=$1 before; shift
  before=$(reg_ticks)
  run_lt "$label" "$@"
  awk -v a="$before" -v b="$(reg_ticks)" -v t="$(getconf CLK_TCK)" 'BEGIN { print (b - a) / t }' >"$OUT/$label.regcpu"
}
T_FLAGS=(--mqtt-addr "127.0.0.1:$mport" --grpc-url "http://127.0.0.1:$rport"
         --registry-url "http://127.0.0.1:$rport" --admin-token-file "$WORK/admin.token")
start_ingest
run_dist first "${T_FLAGS[@]}" --server-pid "$PID" --save-credentials "$WORK/credentials.csv"
run_dist warm "${T_FLAGS[@]}" --server-pid "$PID" --credentials "$WORK/credentials.csv"
stop_server
start_ingest
run_dist cold "${T_FLAGS[@]}" --server-pid "$PID" --credentials "$WORK/credentials.csv"
stop_server
start_ingest --registry-max-batch 0
run_dist cold-unbatched "${T_FLAGS[@]}" --server-pid "$PID" --credentials "$WORK/credentials.csv"
stop_server
else
# --- Tributary standalone: first, warm, cold --------------------------------
DATA=$WORK/tributary
ports=()
for _ in 1 2 3 4; do ports+=("$(free_port)"); done
start_tributary() {
  "$TRIB" standalone --data-dir "$DATA" --mqtt-addr "127.0.0.1:${ports[0]}" --http-addr "127.0.0.1:${ports[1]}" \
    --grpc-addr "127.0.0.1:${ports[2]}" --metrics-addr "127.0.0.1:${ports[3]}" --mqtt-ws-addr 127.0.0.1:0 \
    --log-format json >>"$WORK/out" 2>>"$WORK/err" &
  PID=$!
  wait_port 127.0.0.1 "${ports[0]}" 60
  wait_port 127.0.0.1 "${ports[2]}" 60
}
T_FLAGS=(--mqtt-addr "127.0.0.1:${ports[0]}" --http-url "http://127.0.0.1:${ports[1]}"
         --grpc-url "http://127.0.0.1:${ports[2]}" --admin-token-file "$DATA/admin.token")
start_tributary
run_lt first "${T_FLAGS[@]}" --server-pid "$PID" --save-credentials "$WORK/credentials.csv"
run_lt warm "${T_FLAGS[@]}" --server-pid "$PID" --credentials "$WORK/credentials.csv"
stop_server
start_tributary
run_lt cold "${T_FLAGS[@]}" --server-pid "$PID" --credentials "$WORK/credentials.csv"
stop_server

fi

python3 - "$OUT" <<'PY' | tee "$OUT/results.md"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
print("| run | established | failed | connects/s | connect p50 / p90 / p99 / max ms | server CPU µs per connect | registry CPU µs per connect |")
print("|---|---|---|---|---|---|---|")
for label in ["mosquitto", "first", "warm", "cold", "cold-unbatched"]:
    p = out / f"{label}.json"
    if not p.exists():
        continue
    r = json.loads(p.read_text())
    c, l = r["connect"], r["connect"].get("setup_ms") or {}
    cpu = (r.get("server_cpu") or {}).get("per_connect_us") or 0
    reg = out / f"{label}.regcpu"
    reg = f"{float(reg.read_text()) * 1e6 / max(c['established'], 1):,.0f}" if reg.exists() else "-"
    print(f"| {label} | {c['established']:,} | {c['failed']:,} | {c.get('rate_per_s') or 0:,.0f} | "
          f"{l.get('p50', 0):.1f} / {l.get('p90', 0):.1f} / {l.get('p99', 0):.1f} / {l.get('max', 0):.1f} | "
          f"{cpu:,.0f} | {reg} |")
PY
