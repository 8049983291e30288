#!/usr/bin/env bash
# RWProxy benchmark, one run, side by side on the same PostgreSQL server:
#   direct connection  vs  rwproxy  vs  PgBouncer (Debian package, session mode)
# pgbench -S at -c 16 -j 2, at -c 1, and with -C (a new connection per transaction).
# Prints TPS, average and p99 latency, proxy CPU seconds per 10k transactions (from
# /proc), and ratios; then holds 10,000 idle TLS connections to rwproxy and prints its
# RSS. Usage: bash tests/bench/proxy.sh [SECONDS_PER_RUN]   (default 10)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
secs=${1:-10}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/byoc/target}"

command -v pgbouncer >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pgbouncer >/dev/null; }
command -v pgbench >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-contrib >/dev/null; }
cargo build -q --release -p rwproxy --bin rwproxy --bench idle_tls
rwproxy="$CARGO_TARGET_DIR/release/rwproxy"
idle_tls=$(ls -t "$CARGO_TARGET_DIR"/release/deps/idle_tls-* | grep -v '\.d$' | head -n 1)

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pg=$(free_port)
bash tests/pg/start.sh "$work/pg" "$pg" bench $$ >/dev/null
psql -qX -h 127.0.0.1 -p "$pg" -U postgres -c "ALTER SYSTEM SET max_connections = 400" >/dev/null
pgbench -i -q -s 10 -h 127.0.0.1 -p "$pg" -U postgres postgres >/dev/null 2>&1

# rwproxy: route database `postgres` to the server; a TLS certificate for the idle test.
mkdir -p "$work/routes"
cat > "$work/routes/routes.yaml" <<YAML
apiVersion: byoc.risingwave.dev/v1alpha1
kind: Routes
metadata: {name: bench}
spec:
  routes:
    - {name: bench, match: {database: postgres}, cluster: bench, allowedCidrs: [127.0.0.0/8], backend: '127.0.0.1:$pg'}
YAML
(cd "$work" && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-ca 2>/dev/null \
  && openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem -out leaf.csr -subj /CN=bench.sql.test 2>/dev/null \
  && printf 'subjectAltName=DNS:bench.sql.test\n' > ext \
  && openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 2 -extfile ext 2>/dev/null)
rp=$(free_port)
prlimit --pid $$ --nofile=30000:30000 2>/dev/null || true
ulimit -n 30000 2>/dev/null || true
RWPROXY_LOG=warn "$rwproxy" ${RWPROXY_ARGS:-} --routes "$work/routes" --listen "127.0.0.1:$rp" --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" --handshake-timeout 120 &
rwproxy_pid=$!
pids+=("$rwproxy_pid")

# PgBouncer, session mode, as the postgres user (it refuses root).
bp=$(free_port)
install -d -o postgres -g postgres "$work/bouncer"
cat > "$work/bouncer/pgbouncer.ini" <<INI
[databases]
postgres = host=127.0.0.1 port=$pg dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bp
unix_socket_dir =
auth_type = trust
auth_file = $work/bouncer/users.txt
pool_mode = session
max_client_conn = 2000
default_pool_size = 100
logfile = $work/bouncer/pgbouncer.log
pidfile = $work/bouncer/pgbouncer.pid
INI
echo '"postgres" ""' > "$work/bouncer/users.txt"
chown -R postgres:postgres "$work/bouncer"
(cd / && runuser -u postgres -- pgbouncer -d "$work/bouncer/pgbouncer.ini")
for _ in $(seq 50); do [ -s "$work/bouncer/pgbouncer.pid" ] && break; sleep 0.1; done
bouncer_pid=$(cat "$work/bouncer/pgbouncer.pid")
pids+=("$bouncer_pid")
for port in "$rp" "$bp"; do
  for _ in $(seq 100); do psql -qX -h 127.0.0.1 -p "$port" -U postgres -d postgres -c 'select 1' >/dev/null 2>&1 && break; sleep 0.1; done
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# run NAME PORT PID|- ARGS...: one pgbench run; prints a result row and remembers it.
declare -A tps lat p99 cpu
run() {
  local name=$1 port=$2 pid=$3; shift 3
  local logdir="$work/log-$name-$mode"; mkdir -p "$logdir"
  local before=0; [ "$pid" != - ] && before=$(cpu_ticks "$pid")
  local out
  out=$(cd "$logdir" && pgbench -n -S -T "$secs" -h 127.0.0.1 -p "$port" -U postgres -l --sampling-rate=0.2 "$@" postgres 2>&1)
  local tx; tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
  tps[$name.$mode]=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out" | head -n 1)
  lat[$name.$mode]=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out")
  p99[$name.$mode]=$(cat "$logdir"/pgbench_log.* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {i=int(NR*0.99); if (i<1) i=1; printf "%.3f", a[i]/1000}')
  if [ "$pid" != - ]; then
    local after; after=$(cpu_ticks "$pid")
    cpu[$name.$mode]=$(awk -v d=$((after - before)) -v hz="$hz" -v tx="$tx" 'BEGIN {printf "%.3f", d / hz / tx * 10000}')
  else
    cpu[$name.$mode]="-"
  fi
  printf '%-10s %-8s %10s %10s %10s %14s\n' "$name" "$mode" "${tps[$name.$mode]}" "${lat[$name.$mode]}" "${p99[$name.$mode]}" "${cpu[$name.$mode]}"
}

echo "pgbench -S, $secs s per run, same server; rwproxy $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo dev), $(pgbouncer --version | head -n 1)"
printf '%-10s %-8s %10s %10s %10s %14s\n' target mode tps "avg ms" "p99 ms" "cpu s/10k tx"
for mode in c16 c1 connect; do
  case $mode in
    c16) args=(-c 16 -j 2) ;;
    c1) args=(-c 1 -j 1) ;;
    connect) args=(-C -c 4 -j 2) ;;
  esac
  run direct "$pg" - "${args[@]}"
  run rwproxy "$rp" "$rwproxy_pid" "${args[@]}"
  run pgbouncer "$bp" "$bouncer_pid" "${args[@]}"
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.1f%%", 100 * a / b; else print "-"}'; }
echo
echo "ratios (of direct):"
for mode in c16 c1 connect; do
  echo "  $mode: rwproxy $(ratio "${tps[rwproxy.$mode]}" "${tps[direct.$mode]}") of direct TPS, pgbouncer $(ratio "${tps[pgbouncer.$mode]}" "${tps[direct.$mode]}")"
done
echo "  c16 CPU per transaction: rwproxy is $(ratio "${cpu[rwproxy.c16]}" "${cpu[pgbouncer.c16]}") of pgbouncer's"
awk -v d="${lat[direct.c1]}" -v r="${lat[rwproxy.c1]}" -v b="${lat[pgbouncer.c1]}" \
  'BEGIN {printf "  c1 latency added to direct %.3f ms: rwproxy +%.3f ms, pgbouncer +%.3f ms\n", d, r - d, b - d}'
met() { awk "BEGIN {exit !($1)}" && echo "met" || echo "NOT met"; }
echo "targets:"
echo "  c16 TPS >= 90% of direct: $(met "${tps[rwproxy.c16]} >= 0.9 * ${tps[direct.c16]}")"
echo "  c16 TPS ahead of pgbouncer: $(met "${tps[rwproxy.c16]} > ${tps[pgbouncer.c16]}")"
echo "  c16 CPU per transaction <= 1/3 of pgbouncer's: $(met "${cpu[rwproxy.c16]} * 3 <= ${cpu[pgbouncer.c16]}")"
echo "  c1 latency added < pgbouncer's: $(met "${lat[rwproxy.c1]} < ${lat[pgbouncer.c1]}")"

echo
rss_before=$(awk '/VmRSS/ {print $2}' "/proc/$rwproxy_pid/status")
"$idle_tls" "$rp" 10000 "$work/ca.pem" 8 &
idle=$!
sleep 6
rss_held=$(awk '/VmRSS/ {print $2}' "/proc/$rwproxy_pid/status")
wait "$idle" || true
awk -v a="$rss_before" -v b="$rss_held" 'BEGIN {printf "rwproxy RSS holding 10,000 idle TLS connections: %.1f MiB (%.1f MiB before; target < 150 MiB)\n", b / 1024, a / 1024}'
