#!/usr/bin/env bash
# Line-protocol ingest benchmark through a fresh standalone:
#   8 clients, batches of 5,000 field values of new data, acknowledged only
#   once durable in the log. Prints the generator's summary and whether the
#   processor kept up (points stored vs acknowledged).
#   Also prints the server's CPU time per stored point (user + system, from
#   /proc, from the start of the load until the processor caught up), which
#   is steadier than a rate on a shared machine.
# Usage: bash scripts/bench-ingest.sh [seconds] [clients]
#   EXTRA_FLAGS="--rollup-tiers none" compares a server without rollups.
#   RULES=10000 creates that many threshold rules over the load's series
#   first (examples/rules_setup.rs), and waits for the processor to read them.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN=${1:-30}
CLIENTS=${2:-8}
cargo build --release -q -p tributary --bin tributary --example lp_ingest_bench --example rules_setup
BIN=target/release/tributary
DIR=$(mktemp -d)
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$DIR"' EXIT
$BIN standalone --data-dir "$DIR" --http-addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 \
  --metrics-addr 127.0.0.1:0 --log-format json ${EXTRA_FLAGS:-} >"$DIR/out" 2>"$DIR/err" &
PID=$!
for _ in $(seq 1 100); do grep -q "ready:" "$DIR/out" && break; sleep 0.05; done
READY=$(grep "ready:" "$DIR/out")
field() { sed -E "s/.* $1=([^ ]+).*/\1/" <<<"$READY"; }
HTTP=$(field http); GRPC=$(field grpc); METRICS=$(field metrics)
if [ "${RULES:-0}" -gt 0 ]; then
  target/release/examples/rules_setup --grpc "http://$GRPC" --token "$(cat "$DIR/admin.token")" \
    --rules "$RULES" --clients "$CLIENTS"
  sleep 6   # the processor reads the rules every 5 s
fi
INGEST=$($BIN --endpoint "http://$GRPC" --token "$(cat "$DIR/admin.token")" tokens issue --ingest -o json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["token"])')
TICKS=$(getconf CLK_TCK)
cpu() { awk -v t="$TICKS" '{printf "%.2f", ($14 + $15) / t}' /proc/$PID/stat; }
CPU0=$(cpu)   # set-up (rules, devices) is not the load's
target/release/examples/lp_ingest_bench --url "http://$HTTP/write" --token "$INGEST" \
  --clients "$CLIENTS" --seconds "$SECONDS_TO_RUN"
metric() { curl -s "http://$METRICS/metrics" | awk -v m="$1" '$1 ~ "^"m {s+=$2} END {printf "%d", s}'; }
echo "at end of load: acked=$(metric tributary_ingest_points_acked_total) stored=$(metric tributary_processor_points_stored_total)"
for _ in $(seq 1 600); do
  [ "$(metric tributary_processor_points_stored_total)" -ge "$(metric tributary_ingest_points_acked_total)" ] && break
  sleep 0.1
done
echo "caught up:     acked=$(metric tributary_ingest_points_acked_total) stored=$(metric tributary_processor_points_stored_total)"
echo "server RSS: $(( $(awk '/VmRSS/ {print $2}' /proc/$PID/status) / 1024 )) MiB"
CPU=$(awk -v a="$(cpu)" -v b="$CPU0" 'BEGIN {printf "%.2f", a - b}')
STORED=$(metric tributary_processor_points_stored_total)
echo "server CPU: ${CPU} s for ${STORED} points = $(awk -v c="$CPU" -v n="$STORED" 'BEGIN {printf "%.3f", c * 1e6 / n}') us/point"
echo "rollup buckets written: $(metric tributary_processor_rollup_buckets_written_total), recomputed: $(metric tributary_processor_rollup_buckets_recomputed_total)"
hist() { curl -s "http://$METRICS/metrics" | awk -v m="$1" '$1 == m"_sum" {s=$2} $1 == m"_count" {c=$2} END {if (c > 0) printf "%d, %.1f ms mean", c, s * 1000 / c; else printf "none"}'; }
echo "store flushes: $(hist tributary_processor_store_flush_seconds); rollup flushes: $(hist tributary_processor_rollup_flush_seconds); store writes: $(hist tributary_processor_store_write_seconds)"
