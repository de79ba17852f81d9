#!/usr/bin/env bash
# The console's first load in headless Chromium (cold cache, a fresh
# browser context per load), served by a release `tributary standalone`,
# against a peer in the same run: Python's http.server serving the same
# files from disk (the least a server can do for them).
#
#   bash loadtest/console-load.sh [LOADS]    # default 21 loads a side
#
# Needs Chromium and playwright-core as scripts/test.sh installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
loads="${1:-21}"
cargo build --release -q -p tributary --bin tributary
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

port_tributary=18091
port_peer=18092
target/release/tributary standalone --data-dir "$work/data" \
  --http-addr "127.0.0.1:$port_tributary" --grpc-addr 127.0.0.1:0 --metrics-addr 127.0.0.1:0 \
  --mqtt-addr 127.0.0.1:0 --mqtt-ws-addr 127.0.0.1:0 >"$work/standalone.log" 2>&1 &
mkdir -p "$work/peer"
cp crates/console/assets/index.html "$work/peer/index.html"
ln -s "$PWD/crates/console/assets" "$work/peer/console"
python3 -m http.server "$port_peer" --bind 127.0.0.1 --directory "$work/peer" >/dev/null 2>&1 &
for url in "http://127.0.0.1:$port_tributary/ping" "http://127.0.0.1:$port_peer/"; do
  for _ in $(seq 100); do curl -sf -o /dev/null "$url" && break; sleep 0.1; done
done

run() {
  (cd crates/console/browser-test &&
    BASE_URL="$1" LOAD_ONLY=1 LOADS="$loads" node console.test.mjs | grep '^METRIC' | sed "s/^METRIC /$2 /")
}
# Alternate the two sides, twice each.
for round in 1 2; do
  run "http://127.0.0.1:$port_tributary" "tributary(round $round)"
  run "http://127.0.0.1:$port_peer" "http.server(round $round)"
done
