# Sourced by the emulators' start scripts (tests/moto, tests/gcs, tests/azurite).
# await_tied NAME PORT PID OWNER LOG TRIES [CLEANUP]
#   waits (TRIES x 0.1 s) until the server PID accepts on 127.0.0.1:PORT, then ties it to
#   OWNER (a watchdog kills it, and runs CLEANUP, once OWNER exits), prints PID and exits
#   0; if it never listens, prints its LOG and exits 1.
await_tied() {
  local name=$1 port=$2 pid=$3 owner=$4 log=$5 tries=$6 cleanup=${7:-true}
  for _ in $(seq 1 "$tries"); do
    if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
      nohup bash -c "while kill -0 $owner 2>/dev/null; do sleep 1; done; kill $pid; $cleanup" >/dev/null 2>&1 &
      echo "$pid"
      exit 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "$name did not start on 127.0.0.1:$port:" >&2
  cat "$log" >&2
  kill "$pid" 2>/dev/null || true
  exit 1
}
