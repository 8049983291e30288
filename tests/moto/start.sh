#!/usr/bin/env bash
# Starts moto's AWS emulator on a loopback port for the tests.
# Usage: tests/moto/start.sh PORT OWNER_PID
#   PORT       loopback TCP port
#   OWNER_PID  the server is stopped when this process exits (a watchdog polls it), so a
#              test run that dies leaves nothing behind
# moto is installed from PyPI into a virtualenv kept outside the clone
# (BYOC_MOTO_VENV, default ~/.cache/byoc/moto-venv) and reused by later runs.
set -euo pipefail
port=$1 owner=$2
here="$(cd "$(dirname "$0")" && pwd)"
venv="${BYOC_MOTO_VENV:-$HOME/.cache/byoc/moto-venv}"
if [ ! -x "$venv/bin/moto_server" ]; then
  python3 -m venv "$venv" 2>/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    python3 -m venv "$venv"
  }
  "$venv/bin/pip" install -q 'moto[server]' >&2
fi
log="$(mktemp)"
# AWS managed policies (AmazonEKSClusterPolicy, ...) exist only when loaded.
# serve.py is moto_server with S3 conditional writes made atomic, as S3 makes them.
MOTO_IAM_LOAD_MANAGED_POLICIES=true nohup "$venv/bin/python" "$here/serve.py" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
pid=$!
# shellcheck source=../tools/tied-server.sh
. "$(dirname "$0")/../tools/tied-server.sh"
await_tied "moto" "$port" "$pid" "$owner" "$log" 100
