#!/usr/bin/env bash
# Tributary against its peers, one generator, one session, one machine.
#
# Installs the peers from Debian (mosquitto, influxdb 1.6, victoria-metrics),
# builds the release binaries, then for each scenario starts a fresh server
# on free loopback ports with its data in a temp folder, runs
# tributary-loadtest against it, and stops it:
#
#   Tributary standalone: every scenario (loss verified where it sends)
#   Mosquitto:            mqtt-qos1-1k, mqtt-qos1-pipelined, connections-15k
#   InfluxDB 1.6:         http-lineprotocol (/write?db=loadtest)
#   VictoriaMetrics:      http-lineprotocol (/write)
#
# JSON reports, SVG plots and a markdown table (results.md) go to OUT.
#
# Usage: bash loadtest/compare.sh [duration] [out-dir] [scenario...]
#   duration   load duration of the throughput scenarios (default 30s)
#   out-dir    default target/loadtest
#   scenario   only these (default: all)
# Run as root (it installs packages); it takes about 15 minutes with the
# defaults. SKIP_BUILD=1 uses the release binaries already built.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-30s}
OUT=${2:-target/loadtest}
shift $(( $# > 2 ? 2 : $# ))
ONLY=("$@")
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

want() { [ ${#ONLY[@]} -eq 0 ] && return 0; local s; for s in "${ONLY[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }

# --- peers ---------------------------------------------------------------
missing=()
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v influxd >/dev/null || missing+=(influxdb)
command -v victoria-metrics >/dev/null || missing+=(victoria-metrics)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
. loadtest/lib.sh
need_mosquitto

# --- binaries ------------------------------------------------------------
# SKIP_BUILD=1 reuses the binaries already in target/release.
release_binaries

WORK=$(mktemp -d)
PID=
trap 'stop_server; rm -rf "$WORK"' EXIT

# Runs a scenario: label scenario-file [flags...]
run_lt() {
  local label=$1 file=$2; shift 2
  echo "== $label: $(basename "$file" .toml) (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  local rc=0
  "$LT" run "$file" -q --json "$OUT/$label-$(basename "$file" .toml).json" \
    --plot "$OUT/$label-$(basename "$file" .toml).svg" "$@" || rc=$?
  [ $rc -eq 0 ] || echo "   exit $rc" >&2
}

start_tributary() {
  local dir=$WORK/tributary-$RANDOM
  mkdir -p "$dir"
  "$TRIB" standalone --data-dir "$dir/data" --http-addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 \
    --metrics-addr 127.0.0.1:0 --mqtt-addr 127.0.0.1:0 --mqtt-ws-addr 127.0.0.1:0 --log-format json >"$dir/out" 2>"$dir/err" &
  PID=$!
  for _ in $(seq 1 200); do grep -q "ready:" "$dir/out" && break; sleep 0.05; done
  local ready; ready=$(grep "ready:" "$dir/out")
  field() { sed -E "s/.* $1=([^ ]+).*/\1/" <<<"$ready"; }
  T_FLAGS=(--mqtt-addr "$(field mqtt)" --http-url "http://$(field http)" --grpc-url "http://$(field grpc)"
           --admin-token-file "$dir/data/admin.token" --server-pid "$PID")
}

S=loadtest/scenarios

# --- Tributary -----------------------------------------------------------
for sc in mqtt-qos1-1k mqtt-qos1-pipelined http-lineprotocol e2e-latency; do
  want "$sc" || continue
  start_tributary
  run_lt tributary "$S/$sc.toml" "${T_FLAGS[@]}" --duration "$DUR" --verify
  stop_server
done
if want connections-15k; then
  start_tributary
  run_lt tributary "$S/connections-15k.toml" "${T_FLAGS[@]}"
  stop_server
fi

# --- Mosquitto -----------------------------------------------------------
for sc in mqtt-qos1-1k mqtt-qos1-pipelined connections-15k; do
  want "$sc" || continue
  port=$(free_port)
  dir=$WORK/mosquitto-$RANDOM; mkdir -p "$dir"; chmod 777 "$dir"
  cat >"$dir/mosquitto.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
persistence false
max_connections -1
max_inflight_messages 64
log_dest none
EOF
  "$MOSQUITTO" -c "$dir/mosquitto.conf" >"$dir/log" 2>&1 &
  PID=$!
  wait_port 127.0.0.1 "$port" 10
  flags=(--target mqtt-broker --mqtt-addr "127.0.0.1:$port" --server-pid "$PID")
  [ "$sc" = connections-15k ] || flags+=(--duration "$DUR")
  run_lt mosquitto "$S/$sc.toml" "${flags[@]}"
  stop_server
done

# --- InfluxDB 1.6 and VictoriaMetrics --------------------------------------
if want http-lineprotocol; then
  port=$(free_port); rpc=$(free_port)
  dir=$WORK/influxdb; mkdir -p "$dir"
  cat >"$dir/influxdb.conf" <<EOF
reporting-disabled = true
bind-address = "127.0.0.1:$rpc"
[meta]
  dir = "$dir/meta"
[data]
  dir = "$dir/data"
  wal-dir = "$dir/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:$port"
  log-enabled = false
[monitor]
  store-enabled = false
EOF
  influxd -config "$dir/influxdb.conf" >"$dir/log" 2>&1 &
  PID=$!
  wait_port 127.0.0.1 "$port" 30
  curl -sf -XPOST "http://127.0.0.1:$port/query" --data-urlencode "q=CREATE DATABASE loadtest" >/dev/null
  run_lt influxdb "$S/http-lineprotocol.toml" --target influx --http-url "http://127.0.0.1:$port" \
    --server-pid "$PID" --duration "$DUR"
  stop_server

  port=$(free_port)
  dir=$WORK/victoria-metrics; mkdir -p "$dir"
  victoria-metrics -storageDataPath="$dir" -httpListenAddr="127.0.0.1:$port" -loggerLevel=ERROR >"$dir/log" 2>&1 &
  PID=$!
  wait_port 127.0.0.1 "$port" 30
  run_lt victoria-metrics "$S/http-lineprotocol.toml" --target influx --http-url "http://127.0.0.1:$port" \
    --write-path /write --server-pid "$PID" --duration "$DUR"
  stop_server
fi

# --- the table -----------------------------------------------------------
python3 - "$OUT" <<'EOF' | tee "$OUT/results.md"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
def f(x, d=1):
    return "-" if x is None else f"{x:,.{d}f}"
print("| scenario | server | msgs/s | points/s | ack p50 / p99 / p99.9 / max ms | e2e p50 / p99 ms | failed | loss (acked not stored) | connections | server RSS MiB (KiB/conn) | server CPU µs per msg (per conn) |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
cpu = {}
for p in sorted(out.glob("*.json")):
    r = json.loads(p.read_text())
    server = p.stem[: -len(r["scenario"]) - 1]
    a, e, v, m = r.get("ack_latency_ms"), r.get("e2e_latency_ms"), r.get("verify"), r.get("server")
    lat = "-" if not a else f"{a['p50']:.2f} / {a['p99']:.2f} / {a['p999']:.2f} / {a['max']:.1f}"
    e2e = "-" if not e else f"{e['p50']:.1f} / {e['p99']:.1f}"
    loss = "not checked" if not v else f"{v['acked_not_stored']:,} of {v['points_acked']:,}"
    c = r["connect"]
    conns = f"{c['established']:,}" + (f" at {c['rate_per_s']:,.0f}/s" if c.get("rate_per_s") else "")
    mem = "-" if not m else f"{m['rss_loaded_kib']/1024:,.0f}" + (f" ({m['per_connection_kib']:.1f})" if m.get("per_connection_kib") else "")
    sc = r.get("server_cpu") or {}
    per = sc.get("per_msg_us") or sc.get("per_connect_us")
    cpu.setdefault(r["scenario"], {})[server] = per
    cpu_cell = "-" if per is None else (f"{per:.1f}" if sc.get("per_msg_us") else f"({per:.1f})")
    print(f"| {r['scenario']} | {server} | {f(r['msgs_per_s'], 0)} | {f(r['points_per_s'], 0)} | {lat} | {e2e} | {r['counters']['msgs_failed']:,} | {loss} | {conns} | {mem} | {cpu_cell} |")
# Server CPU per operation against each peer in the same run: below 1 means
# Tributary spent less.
rows = [(sc, peer, by["tributary"] / x) for sc, by in sorted(cpu.items())
        for peer, x in sorted(by.items())
        if peer != "tributary" and x and by.get("tributary")]
if rows:
    print()
    print("| scenario | server CPU per operation, Tributary / peer |")
    print("|---|---|")
    for sc, peer, ratio in rows:
        print(f"| {sc} | {ratio:.2f}× {peer} |")
EOF
echo "reports and plots: $OUT"
