#!/usr/bin/env bash
# Validates the Helm chart helm/tributary without a cluster or a helm
# binary, against the tributary binary's own --help:
#
#   scripts/check-helm.sh [path/to/tributary]   # default target/debug/tributary
#
# 1. the checker's self-test: deliberately broken manifests must be caught;
# 2. the check itself: helm lint, renders with Helm's Go engine, Kubernetes
#    schema validation, assertions over the manifests, flags and variables
#    against --help, values that must be refused (scripts/check_helm.py
#    says what it covers). Exits non-zero on any failure.
#
# Renderer: PyPI helm-python-sdk, whose wheel bundles Helm v4's Go SDK as a
# shared library (libhelm_c; no helm binary, Python >= 3.10). Kubernetes
# schemas: PyPI kubernetes-validate. Both are installed, only when missing,
# into target/helm-check/python (about 360 MB, never committed).
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${1:-target/debug/tributary}"
deps=target/helm-check/python
export PYTHONPATH="$PWD/$deps${PYTHONPATH:+:$PYTHONPATH}"

if ! python3 -c 'import helm_python, kubernetes_validate, jsonschema, yaml' 2>/dev/null; then
  echo "== installing helm-python-sdk and kubernetes-validate into $deps"
  echo "+ python3 -m pip install --target $deps helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 jsonschema pyyaml"
  python3 -m pip install -q --disable-pip-version-check --target "$deps" \
    helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 jsonschema pyyaml
fi

echo "== check_helm self-test"
echo "+ python3 scripts/check_helm.py --self-test $bin"
python3 scripts/check_helm.py --self-test "$bin"
echo "== check_helm against $bin"
echo "+ python3 scripts/check_helm.py $bin"
python3 scripts/check_helm.py "$bin"
