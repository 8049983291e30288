#!/usr/bin/env bash
# Starts azurite's Blob service (in memory) on a loopback port for the tests.
# Usage: tests/azurite/start.sh PORT OWNER_PID, or tests/azurite/start.sh --install (install only)
#   PORT       loopback TCP port
#   OWNER_PID  the server is stopped when this process exits (a watchdog polls it), so a
#              test run that dies leaves nothing behind
# azurite is installed from npm into a directory kept outside the clone
# (BYOC_AZURITE_DIR, default ~/.cache/byoc/azurite) and reused by later runs. 3.35.0 is
# pinned: later releases need Node 22, and this image has Node 20.
set -euo pipefail
port=$1 owner=${2:-}
dir="${BYOC_AZURITE_DIR:-$HOME/.cache/byoc/azurite}"
bin="$dir/node_modules/.bin/azurite-blob"
if [ ! -x "$bin" ]; then
  command -v npm >/dev/null 2>&1 || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  }
  mkdir -p "$dir"
  (cd "$dir" && npm install --no-audit --no-fund --silent azurite@3.35.0 >&2)
fi
[ "$port" = --install ] && exit 0
log="$(mktemp)"
work="$(mktemp -d)"
# Started in a directory of its own: azurite writes its files in the current directory.
(cd "$work" && exec nohup "$bin" --blobHost 127.0.0.1 --blobPort "$port" --inMemoryPersistence --skipApiVersionCheck \
  --disableTelemetry >"$log" 2>&1) &
pid=$!
# shellcheck source=../tools/tied-server.sh
. "$(dirname "$0")/../tools/tied-server.sh"
await_tied "azurite" "$port" "$pid" "$owner" "$log" 150 "rm -rf '$work'"
