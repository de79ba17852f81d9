#!/usr/bin/env bash
# Alert latency through a fresh standalone: from a breaching point's HTTP
# 204 (durable in the log) to the webhook receiving the transition.
# Usage: bash scripts/bench-alert-latency.sh [transitions]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-300}
cargo build --release -q -p tributary --bin tributary --example alert_latency_bench
BIN=target/release/tributary
DIR=$(mktemp -d)
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$DIR"' EXIT
$BIN standalone --data-dir "$DIR" --http-addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 \
  --metrics-addr 127.0.0.1:0 --mqtt-addr 127.0.0.1:0 --mqtt-ws-addr 127.0.0.1:0 \
  --webhooks-allow-private --log-format json ${EXTRA_FLAGS:-} >"$DIR/out" 2>"$DIR/err" &
PID=$!
for _ in $(seq 1 100); do grep -q "ready:" "$DIR/out" && break; sleep 0.05; done
READY=$(grep "ready:" "$DIR/out")
field() { sed -E "s/.* $1=([^ ]+).*/\1/" <<<"$READY"; }
target/release/examples/alert_latency_bench --http "http://$(field http)" --grpc "http://$(field grpc)" \
  --token "$(cat "$DIR/admin.token")" --transitions "$N"
