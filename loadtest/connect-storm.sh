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

# --- Tributary: first, warm, cold ------------------------------------------
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

python3 - "$OUT" <<'PY' | tee "$OUT/results.md"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
print("| run | established | failed | connects/s | connect p50 / p90 / p99 / max ms | server CPU µs per connect |")
print("|---|---|---|---|---|---|")
for label in ["mosquitto", "first", "warm", "cold"]:
    p = out / f"{label}.json"
    if not p.exists():
        continue
    r = json.loads(p.read_text())
    c, l = r["connect"], r["connect"].get("setup_ms") or {}
    cpu = (r.get("server_cpu") or {}).get("per_connect_us") or 0
    print(f"| {label} | {c['established']:,} | {c['failed']:,} | {c.get('rate_per_s') or 0:,.0f} | "
          f"{l.get('p50', 0):.1f} / {l.get('p90', 0):.1f} / {l.get('p99', 0):.1f} / {l.get('max', 0):.1f} | "
          f"{cpu:,.0f} |")
PY
