#!/usr/bin/env bash
# Validates the Docker deployment (docker-compose.yml, Dockerfile, deploy/)
# without Docker, against the tributary binary's own --help:
#
#   scripts/check-deploy.sh [path/to/tributary]   # default target/debug/tributary
#
# 1. the checker's self-test: deliberately broken copies must be caught;
# 2. the check itself (see scripts/check_compose.py for what it covers).
# Exits non-zero on any failure. What it cannot show (images build, services
# start and become ready) needs a machine with Docker: docs/deploy.md.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${1:-target/debug/tributary}"

# jsonschema validates against the Compose schema; PyYAML reads the YAML.
python3 -c 'import jsonschema, yaml' 2>/dev/null || python3 -m pip install -q jsonschema pyyaml

echo "== check_compose self-test"
python3 scripts/check_compose.py --self-test "$bin"
echo "== check_compose against $bin"
python3 scripts/check_compose.py "$bin"
