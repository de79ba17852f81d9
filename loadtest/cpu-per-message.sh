#!/usr/bin/env bash
# Server CPU per acknowledged message, Tributary against Mosquitto in the
# same run: on a shared 2-core machine the generator takes CPU the server
# would have had, so a rate moves with the load, while the server's own CPU
# per message (user + system from /proc/PID/stat, over the load and its
# catch-up, as tributary-loadtest --server-pid reports it) is steadier.
#
# Usage: bash loadtest/cpu-per-message.sh [duration] [scenario...]
#   duration   load duration (default 20s)
#   scenario   default: mqtt-qos1-1k mqtt-qos1-pipelined (coap-* scenarios
#              run against Tributary only)
# Needs mosquitto (Debian) and the release binaries (SKIP_BUILD=1 reuses
# them). Prints one markdown table row per server and scenario.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-20s}
shift $(( $# > 0 ? 1 : 0 ))
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(mqtt-qos1-1k mqtt-qos1-pipelined)
. loadtest/lib.sh
need_mosquitto
release_binaries
WORK=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT

measure() { # label scenario [loadtest flags...]
  local label=$1 sc=$2; shift 2
  local json=$WORK/$label-$sc.json
  # --server-pid: the report holds the server's CPU over the load and its
  # catch-up (until its CPU time stops moving, at most 30 s).
  "$LT" run "loadtest/scenarios/$sc.toml" -q --duration "$DUR" --json "$json" --server-pid "$PID" "$@" >/dev/null
  python3 - "$json" "$label" "$sc" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
label, sc = sys.argv[2], sys.argv[3]
cpu = r["server_cpu"]
gen = r.get("generator_cpu_s") or 0.0
print(f"| {sc} | {label} | {r['msgs_per_s']:,.0f} | {r['counters']['msgs_acked']:,} | {cpu['cpu_s']:.1f} | {cpu['per_msg_us']:.1f} | {gen:.1f} |")
PY
}

echo "| scenario | server | msg/s | acked | server CPU s | server CPU µs/msg | generator CPU s |"
echo "|---|---|---|---|---|---|---|"
for sc in "${SCENARIOS[@]}"; do
  dir=$WORK/trib-$RANDOM; mkdir -p "$dir"
  "$TRIB" standalone --data-dir "$dir/data" --http-addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 \
    --metrics-addr 127.0.0.1:0 --mqtt-addr 127.0.0.1:0 --mqtt-ws-addr 127.0.0.1:0 \
    --coap-addr 127.0.0.1:0 >"$dir/out" 2>"$dir/err" &
  PID=$!
  for _ in $(seq 1 200); do grep -q "ready:" "$dir/out" && break; sleep 0.05; done
  ready=$(grep "ready:" "$dir/out")
  field() { sed -E "s/.* $1=([^ ]+).*/\1/" <<<"$ready"; }
  measure tributary "$sc" --mqtt-addr "$(field mqtt)" --http-url "http://$(field http)" \
    --coap-addr "$(field coap)" --grpc-url "http://$(field grpc)" --admin-token-file "$dir/data/admin.token"
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
  # Mosquitto speaks MQTT only.
  [[ $sc == coap* ]] && continue

  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mdir=$WORK/mosq-$RANDOM; mkdir -p "$mdir"; chmod 777 "$mdir"
  printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_connections -1\nmax_inflight_messages 64\nlog_dest none\n' \
    "$port" >"$mdir/mosquitto.conf"
  "$MOSQUITTO" -c "$mdir/mosquitto.conf" & PID=$!
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
  measure mosquitto "$sc" --target mqtt-broker --mqtt-addr "127.0.0.1:$port"
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
done
