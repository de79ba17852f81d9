#!/usr/bin/env bash
# Runs every test of the workspace: unit, integration (real processes on
# loopback), conformance and property tests, and doc-tests. This is the single
# test command in README and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# MQTT interop tests run the real mosquitto_pub/mosquitto_sub (Debian).
command -v mosquitto_pub >/dev/null || { apt-get update -qq && apt-get install -y -qq mosquitto-clients; }

cargo test --workspace --locked
