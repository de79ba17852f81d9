#!/usr/bin/env bash
# Runs every test of the workspace: unit, integration (real processes on
# loopback), conformance and property tests, and doc-tests. This is the single
# test command in README and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace --locked
