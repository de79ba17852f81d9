#!/usr/bin/env bash
# Average per fleet per hour over a month of 1,000 devices at 10 s (259 M
# points): Tributary (rollups, loopback gRPC) against InfluxDB 1.6 on the
# same data, written and asked in the same run. Installs InfluxDB from
# Debian when missing and runs it on a temp dir and a free port.
#
# Usage: bash loadtest/fleet-aggregate.sh [devices] [days]
#   defaults 1000 devices, 30 days; both engines hold the data on disk
#   (about 5 GB in all, under $TMPDIR).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICES=${1:-1000}
DAYS=${2:-30}
command -v influxd >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq influxdb >/dev/null
}
WORK=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
rpc=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$WORK/influxdb.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:$rpc"
[meta]
  dir = "$WORK/meta"
[data]
  dir = "$WORK/data"
  wal-dir = "$WORK/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:$port"
  log-enabled = false
  max-body-size = 0
[monitor]
  store-enabled = false
CONF
influxd -config "$WORK/influxdb.conf" >"$WORK/log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/ping" && break; sleep 0.2; done
curl -sf -XPOST "http://127.0.0.1:$port/query" --data-urlencode "q=CREATE DATABASE bench" >/dev/null
echo "InfluxDB $(influxd version | head -1) on :$port"
INFLUX_URL="http://127.0.0.1:$port" FLEET_DEVICES=$DEVICES FLEET_DAYS=$DAYS \
  cargo bench -p tributary-query --bench fleet_aggregate
