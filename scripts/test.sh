#!/usr/bin/env bash
# Runs every test of the workspace: unit, integration (real processes on
# loopback), conformance and property tests, and doc-tests. This is the single
# test command in README and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# The build links the system OpenSSL (CoAP over DTLS), found with pkg-config.
dpkg -s libssl-dev >/dev/null 2>&1 && command -v pkg-config >/dev/null ||
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libssl-dev pkg-config; }

# MQTT interop tests run the real mosquitto_pub/mosquitto_sub (Debian).
command -v mosquitto_pub >/dev/null || { apt-get update -qq && apt-get install -y -qq mosquitto-clients; }
# The paho interop test runs Eclipse Paho for Python (PyPI), MQTT 3.1.1 and 5.0.
python3 -c 'import paho.mqtt' 2>/dev/null || pip install -q paho-mqtt
# The Prometheus API is read by a third-party client, prometheus-api-client (PyPI).
python3 -c 'import prometheus_api_client' 2>/dev/null || pip install -q 'prometheus-api-client>=0.7,<0.8'
# The OpenAPI document is checked against a running standalone by schemathesis (PyPI).
command -v schemathesis >/dev/null || pip install -q 'schemathesis>=4,<5'

# CoAP interop runs clients written elsewhere: libcoap's coap-client (Debian)
# and aiocoap (PyPI).
command -v coap-client-openssl >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libcoap3-bin; }
python3 -c 'import aiocoap' 2>/dev/null || pip install -q 'aiocoap>=0.4.17,<0.5'

# The console's browser test drives Debian's Chromium with playwright-core
# and audits the pages with axe-core (npm, pinned in
# crates/console/browser-test/package-lock.json; no browser is downloaded).
# It makes a client certificate with openssl.
for tool in chromium openssl; do
  command -v "$tool" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool"; }
done
for module in playwright-core axe-core; do
  [[ -f crates/console/browser-test/node_modules/$module/package.json ]] ||
    (cd crates/console/browser-test && npm ci --no-audit --no-fund --loglevel=error)
done

# The Kafka log's tests run a real Kafka-protocol broker, Tansu (crates.io).
# Building it takes about 12 minutes once; an installed tansu is reused.
command -v tansu >/dev/null || cargo install --locked tansu --version 0.6.0 --features dynostore

# The ScyllaDB conformance suites need a node (TRIBUTARY_TEST_SCYLLA=host:port,
# see docs/scylla.md). Without one they are skipped by name, and said so.
scylla_skip=()
if [[ -z "${TRIBUTARY_TEST_SCYLLA:-}" ]]; then
  echo "SKIPPED: ScyllaDB conformance suites (set TRIBUTARY_TEST_SCYLLA=host:port to run them)"
  scylla_skip=(--skip scylla_conformance_)
fi

cargo test --workspace --locked -- "${scylla_skip[@]}"

# docker-compose.yml, the Dockerfile and deploy/ against the Compose schema
# and the binary's own flags (no Docker engine runs here).
bin="${CARGO_TARGET_DIR:-target}/debug/tributary"
bash scripts/check-deploy.sh "$bin"
# The Helm chart: rendered by Helm's own engine (PyPI helm-python-sdk), the
# manifests validated against the Kubernetes schemas, probes, PDBs and HPA
# bounds asserted, flags and env checked against the binary.
bash scripts/check-helm.sh "$bin"
[[ -n "${TRIBUTARY_TEST_SCYLLA:-}" ]] ||
  echo "SKIPPED: ScyllaDB conformance suites (set TRIBUTARY_TEST_SCYLLA=host:port to run them)"
