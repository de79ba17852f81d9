#!/usr/bin/env bash
# The distributed mode's benchmark, on one machine: a real Tansu broker, and
# `tributary registry`, `tributary ingest` and `tributary processor
# --with-query` as separate release processes.
#
#  1. Line-protocol ingest through Kafka: 8 HTTP clients post 5,000-value
#     batches to the ingest replica for SECONDS; a 204 means the records are
#     in Kafka (idempotent producer, acks=all).
#  2. The processor's rate, Kafka to the store: it is stopped during phase 1,
#     so a backlog builds; then it is started and timed until it has stored
#     everything (points_stored / seconds).
#  3. MQTT QoS 1 at its closed-loop maximum through Kafka (100 devices x 10
#     in flight), with the processor running: the maximum message rate.
#  4. End-to-end latency at half that rate: the loadtest's e2e-latency
#     scenario, publish -> Kafka -> processor -> store -> Subscribe.
#
# Usage: bash scripts/bench-distributed.sh [seconds] [clients]
#        (E2E_RATE=N forces the rate of phase 4, PARTITIONS=N the topic's
#        partitions, PROFILE=1 records a perf profile of phase 1)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-20}
CLIENTS=${2:-8}
cargo build --release -q -p tributary --bin tributary --example lp_ingest_bench
cargo build --release -q -p tributary-loadtest
BIN=target/release/tributary
LT=target/release/tributary-loadtest
TANSU=$(command -v tansu || echo "$HOME/.cargo/bin/tansu")
DIR=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$TANSU" broker --listener-url "tcp://127.0.0.1:$PORT" --advertised-listener-url "tcp://127.0.0.1:$PORT" \
  --storage-engine memory://tansu/ >"$DIR/tansu.log" 2>&1 &
PIDS+=($!)
TANSU_PID=$!
for _ in $(seq 1 100); do (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.05; done

# Tansu 0.6 mishandles multi-record batches (docs/kafka.md): one record per
# batch. Apache Kafka keeps librdkafka's batching.
COMMON=(--log "kafka://127.0.0.1:$PORT" --jwt-secret-file "$DIR/jwt.secret" --metrics-addr 127.0.0.1:0
        --kafka-batch-num-messages 1 --kafka-partitions "${PARTITIONS:-4}" --log-format json)
start() { # role outfile args...
  local role=$1 out=$2; shift 2
  "$BIN" "$role" "$@" >"$out" 2>"$out.err" &
  PIDS+=($!)
  for _ in $(seq 1 600); do grep -q "ready:" "$out" && return 0; sleep 0.05; done
  echo "$role did not start:"; cat "$out.err"; exit 1
}
field() { sed -E "s/.* $2=([^ ]+).*/\1/" <<<"$(grep ready: "$1")"; }
metric() { curl -s "http://$1/metrics" | awk -v m="$2" '$1 ~ "^"m {s+=$2} END {printf "%d", s}'; }

start registry "$DIR/registry.out" "${COMMON[@]}" --store "$DIR/registry" --data-dir "$DIR" --grpc-addr 127.0.0.1:0
REG=$(field "$DIR/registry.out" grpc)
start ingest "$DIR/ingest.out" "${COMMON[@]}" --registry-url "http://$REG" --frontend-id bench-ingest \
  --http-addr 127.0.0.1:0 --mqtt-addr 127.0.0.1:0 --mqtt-ws-addr 127.0.0.1:0
HTTP=$(field "$DIR/ingest.out" http); MQTT=$(field "$DIR/ingest.out" mqtt); IM=$(field "$DIR/ingest.out" metrics)
INGEST_PID=${PIDS[-1]}
TOKEN=$("$BIN" --endpoint "http://$REG" --token "$(cat "$DIR/admin.token")" tokens issue --ingest -o json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["token"])')

echo "== 1. line protocol through Kafka: $CLIENTS clients, ${SECS}s (processor stopped) =="
if [ "${PROFILE:-0}" = 1 ]; then  # where the CPU goes, all processes, mid-run
  (sleep 2; perf record -q -F 199 -a -g -o "$DIR/perf.data" -- sleep $(( SECS / 2 )) >/dev/null 2>&1) &
  PERF=$!
fi
target/release/examples/lp_ingest_bench --url "http://$HTTP/write" --token "$TOKEN" \
  --clients "$CLIENTS" --seconds "$SECS"
if [ "${PROFILE:-0}" = 1 ]; then
  wait "$PERF"
  echo "-- CPU samples by process (perf, whole machine):"
  perf report -i "$DIR/perf.data" --no-children --sort pid --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -6 || true
  echo "   (tansu pid $TANSU_PID, ingest pid $INGEST_PID)"
  echo "-- hottest symbols of tansu:"
  perf report -i "$DIR/perf.data" --no-children --pid "$TANSU_PID" --sort sym --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -10 || true
fi
ACKED=$(metric "$IM" tributary_ingest_points_acked_total)
echo "points acked by ingest: $ACKED"

echo "== 2. processor: Kafka backlog to the store =="
START=$(date +%s.%N)
start processor "$DIR/processor.out" "${COMMON[@]}" --with-query --store "$DIR/store" \
  --registry-url "http://$REG" --grpc-addr 127.0.0.1:0
PM=$(field "$DIR/processor.out" metrics); QUERY=$(field "$DIR/processor.out" grpc)
PROC_PID=${PIDS[-1]}
while [ "$(metric "$PM" tributary_processor_points_stored_total)" -lt "$ACKED" ]; do sleep 0.2; done
END=$(date +%s.%N)
python3 -c "print(f'processor: {$ACKED} points in {$END-$START:.1f} s = {$ACKED/($END-$START):,.0f} points/s (incl. start-up and group join)')"
echo "processor CPU: $(ps -o times= -p "$PROC_PID") s, ingest CPU: $(ps -o times= -p "$INGEST_PID") s, tansu CPU: $(ps -o times= -p "$TANSU_PID") s"

cpu() { ps -o times= -p "$1" | tr -d ' '; }

echo "== 3. MQTT QoS 1 through Kafka, closed loop: 100 devices x 10 in flight, ${SECS}s (processor running) =="
T0=$(cpu "$TANSU_PID"); I0=$(cpu "$INGEST_PID"); P0=$(cpu "$PROC_PID")
"$LT" run loadtest/scenarios/mqtt-qos1-pipelined.toml --mqtt-addr "$MQTT" --grpc-url "http://$QUERY" \
  --registry-url "http://$REG" --admin-token-file "$DIR/admin.token" --duration "${SECS}s" --quiet \
  --json "$DIR/max.json" | grep -E "throughput|ack  |messages"
echo "CPU s during the run: tansu $(( $(cpu "$TANSU_PID") - T0 )), ingest $(( $(cpu "$INGEST_PID") - I0 )), processor $(( $(cpu "$PROC_PID") - P0 ))"
MAX=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(int(r["msgs_per_s"]))' "$DIR/max.json" 2>/dev/null || echo 0)
RATE=${E2E_RATE:-$(( MAX / 2 ))}
[ "$RATE" -gt 0 ] || RATE=500

echo "== 4. end-to-end latency, MQTT at $RATE msg/s (half of the closed-loop maximum) =="
"$LT" run loadtest/scenarios/e2e-latency.toml --mqtt-addr "$MQTT" --grpc-url "http://$QUERY" \
  --registry-url "http://$REG" --admin-token-file "$DIR/admin.token" --rate "$RATE" --quiet
