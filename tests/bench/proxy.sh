#!/usr/bin/env bash
# RWProxy benchmark, one run, side by side on the same PostgreSQL server:
#   direct connection  vs  rwproxy  vs  PgBouncer (Debian package, session mode)
#   vs  HAProxy (Debian package, tcp mode, one thread: the reference plain relay)
# pgbench -S at -c 16 -j 2, at -c 1, with -C (a new connection per transaction), all over
# plain TCP against all four; at -c 16 over TLS (tls16: the server, rwproxy and PgBouncer each
# end it) and with -C over TLS (tlsC: a new TLS connection per transaction, rwproxy and
# PgBouncer); each ROUNDS times (default 3) with the targets in turn. Prints medians of TPS,
# average and p99 latency, each proxy's CPU seconds per 10k transactions, its kernel share
# and context switches (from /proc), TCP segments per transaction; then holds 10,000 idle
# TLS connections to rwproxy and to PgBouncer and prints the RSS per connection of each;
# then the summary table with rwproxy's ratio to the best peer and whether each target is met.
# rwproxy runs with its defaults, spare backend connections included (see README, RWProxy);
# RWPROXY_ARGS adds arguments (RWPROXY_ARGS='--backend-spares 0' measures it without them).
# Usage: [ROUNDS=N] [IDLE_CONNECTIONS=N] [MODES="c16 c1 connect tls16 tlsC idle"] bash tests/bench/proxy.sh [SECONDS_PER_RUN]
#   (defaults: 3 rounds, 10,000 idle connections, every mode, 10 s per run; MODES picks
#   some of them while iterating on one figure, and the summary shows "-" for the others)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
secs=${1:-10}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/byoc/target}"

command -v pgbouncer >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pgbouncer >/dev/null; }
command -v haproxy >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy >/dev/null; }
command -v pgbench >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-contrib >/dev/null; }
cargo build -q --release -p rwproxy --bin rwproxy --bench idle_tls
rwproxy="$CARGO_TARGET_DIR/release/rwproxy"
idle_tls=$(ls -t "$CARGO_TARGET_DIR"/release/deps/idle_tls-* | grep -v '\.d$' | head -n 1)

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# One certificate for every TLS endpoint: the server itself, rwproxy and PgBouncer.
(cd "$work" && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-ca 2>/dev/null \
  && openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem -out leaf.csr -subj /CN=bench.sql.test 2>/dev/null \
  && printf 'subjectAltName=DNS:bench.sql.test\n' > ext \
  && openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 2 -extfile ext 2>/dev/null)
pg=$(free_port)
bash tests/pg/start.sh "$work/pg" "$pg" bench $$ "$work/cert.pem" "$work/key.pem" >/dev/null
psql -qX -h 127.0.0.1 -p "$pg" -U postgres -c "ALTER SYSTEM SET max_connections = 400" >/dev/null
pgbench -i -q -s 10 -h 127.0.0.1 -p "$pg" -U postgres postgres >/dev/null 2>&1

# rwproxy: route database `postgres` to the server.
mkdir -p "$work/routes"
cat > "$work/routes/routes.yaml" <<YAML
apiVersion: byoc.risingwave.dev/v1alpha1
kind: Routes
metadata: {name: bench}
spec:
  routes:
    - {name: bench, match: {database: postgres}, cluster: bench, allowedCidrs: [127.0.0.0/8], backend: '127.0.0.1:$pg'}
YAML
rp=$(free_port)
ap=$(free_port)
# Every process below inherits this script's open-files limit, raised as far as its hard
# limit allows (raising the hard limit needs CAP_SYS_RESOURCE, which containers often
# lack): holding 10,000 idle connections takes 10,000 descriptors.
nofile=$(ulimit -Hn)
{ [ "$nofile" = unlimited ] || [ "$nofile" -gt 30000 ]; } && nofile=30000
ulimit -n "$nofile"
[ "$nofile" -ge 10200 ] || echo "warning: an open-files limit of $nofile is too low to hold 10,000 idle connections" >&2
# In a session of its own, as PgBouncer (-d) and PostgreSQL (pg_ctl) are: with the kernel's
# autogroup scheduling, a process left in this script's session shares one CPU share with
# pgbench, which cost rwproxy about 8% of its TPS in every earlier run of this benchmark.
# (setsid execs in place here: a script's background job does not lead a process group.)
# The cap is set above its default (two descriptors per connection): the idle connections
# below never reach a backend and hold one each.
RWPROXY_LOG=warn setsid "$rwproxy" ${RWPROXY_ARGS:-} --routes "$work/routes" --listen "127.0.0.1:$rp" --admin "127.0.0.1:$ap" --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" --handshake-timeout 600 --max-client-connections 12000 &
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
max_client_conn = 12000
; The idle connections below sit after TLS without a startup message, as they do on rwproxy
; (--handshake-timeout 600); PgBouncer's default would close them after 60 s.
client_login_timeout = 600
default_pool_size = 100
logfile = $work/bouncer/pgbouncer.log
pidfile = $work/bouncer/pgbouncer.pid
client_tls_sslmode = allow
client_tls_cert_file = $work/bouncer/cert.pem
client_tls_key_file = $work/bouncer/key.pem
INI
cp "$work/cert.pem" "$work/key.pem" "$work/bouncer/"
echo '"postgres" ""' > "$work/bouncer/users.txt"
chown -R postgres:postgres "$work/bouncer"
# runuser resets the soft open-files limit to 1,024 (the hard limit stays): PgBouncer holds
# one descriptor per client, so it starts with the soft limit raised back.
(cd / && runuser -u postgres -- prlimit --nofile="$nofile:$nofile" pgbouncer -d "$work/bouncer/pgbouncer.ini")
for _ in $(seq 50); do [ -s "$work/bouncer/pgbouncer.pid" ] && break; sleep 0.1; done
bouncer_pid=$(cat "$work/bouncer/pgbouncer.pid")
pids+=("$bouncer_pid")
grep -q "Max open files *$nofile" "/proc/$bouncer_pid/limits" || { echo "PgBouncer did not get the open-files limit $nofile" >&2; exit 1; }

# HAProxy, tcp mode, one thread, in the foreground (-db) in a session of its own.
hp=$(free_port)
cat > "$work/haproxy.cfg" <<CFG
global
  nbthread 1
  maxconn 4000
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
frontend pg
  bind 127.0.0.1:$hp
  default_backend pg
backend pg
  server pg 127.0.0.1:$pg
CFG
setsid haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
haproxy_pid=$!
pids+=("$haproxy_pid")
[ "$(cat "/proc/$rwproxy_pid/comm")" = rwproxy ] || { echo "rwproxy is not pid $rwproxy_pid" >&2; exit 1; }
ag() { cat "/proc/$1/autogroup" 2>/dev/null | awk '{print $1}' || echo -; }
echo "autogroups: rwproxy $(ag "$rwproxy_pid"), pgbouncer $(ag "$bouncer_pid"), haproxy $(ag "$haproxy_pid"), this script $(ag $$)"
for port in "$rp" "$bp" "$hp"; do
  for _ in $(seq 100); do psql -qX -h 127.0.0.1 -p "$port" -U postgres -d postgres -c 'select 1' >/dev/null 2>&1 && break; sleep 0.1; done
done
[ "$(cat "/proc/$haproxy_pid/comm")" = haproxy ] || { echo "haproxy is not pid $haproxy_pid" >&2; exit 1; }

# Per-process figures from /proc: CPU ticks split into user and kernel time, and context
# switches summed over every thread.
user_ticks() { awk '{print $14}' "/proc/$1/stat"; }
sys_ticks() { awk '{print $15}' "/proc/$1/stat"; }
switches() { cat /proc/"$1"/task/*/status | awk '/ctxt_switches/ {n += $2} END {print n}'; }
# TCP segments sent by every socket on the machine (loopback: each is also received).
tcp_out_segs() { awk '/^Tcp:/ {if (seen) print $12; seen = 1}' /proc/net/snmp; }
hz=$(getconf CLK_TCK)
rounds=${ROUNDS:-3}
idle_count=${IDLE_CONNECTIONS:-10000}

# run NAME PORT PID|- ARGS...: one pgbench run; appends its figures to the per-target lists.
declare -A tps lat p99 cpu ksh segs csw
run() {
  local name=$1 port=$2 pid=$3; shift 3
  local key=$name.$mode logdir="$work/log-$name-$mode-$round"; mkdir -p "$logdir"
  local u0=0 s0=0 c0=0 g0; g0=$(tcp_out_segs)
  [ "$pid" != - ] && { u0=$(user_ticks "$pid"); s0=$(sys_ticks "$pid"); c0=$(switches "$pid"); }
  local out
  out=$(cd "$logdir" && PGSSLMODE=$sslmode pgbench -n -S -T "$secs" -h 127.0.0.1 -p "$port" -U postgres -l --sampling-rate=0.2 "$@" postgres 2>&1)
  local g1; g1=$(tcp_out_segs)
  local tx; tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
  [ -n "$tx" ] && [ "$tx" -gt 0 ] || { echo "pgbench against $name failed:" >&2; echo "$out" >&2; exit 1; }
  tps[$key]+=" $(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out" | head -n 1)"
  lat[$key]+=" $(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out")"
  p99[$key]+=" $(cat "$logdir"/pgbench_log.* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {i=int(NR*0.99); if (i<1) i=1; printf "%.3f", a[i]/1000}')"
  segs[$key]+=" $(awk -v d=$((g1 - g0)) -v tx="$tx" 'BEGIN {printf "%.2f", d / tx}')"
  if [ "$pid" != - ]; then
    local du=$(($(user_ticks "$pid") - u0)) ds=$(($(sys_ticks "$pid") - s0)) dc=$(($(switches "$pid") - c0))
    cpu[$key]+=" $(awk -v d=$((du + ds)) -v hz="$hz" -v tx="$tx" 'BEGIN {printf "%.3f", d / hz / tx * 10000}')"
    ksh[$key]+=" $(awk -v u=$du -v s=$ds 'BEGIN {if (u + s > 0) printf "%.0f", 100 * s / (u + s); else print 0}')"
    csw[$key]+=" $(awk -v d=$dc -v tx="$tx" 'BEGIN {printf "%.2f", d / tx}')"
  fi
}
# median "LIST": the middle value (lower middle for an even count); "-" for an empty list.
median() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "-"}'; }
spread() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -g | awk '{a[NR]=$1} END {if (NR) printf "%.0f-%.0f", a[1], a[NR]}'; }

echo "pgbench -S, $secs s per run, $rounds rounds (targets in turn within each round, order rotated), same server;"
echo "rwproxy $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo dev), $(pgbouncer --version | head -n 1), $(haproxy -v | head -n 1 | cut -d' ' -f1-3). Medians:"
declare -A target
target[direct]="$pg":- target[rwproxy]="$rp":"$rwproxy_pid" target[pgbouncer]="$bp":"$bouncer_pid" target[haproxy]="$hp":"$haproxy_pid"
# The targets of each mode: HAProxy in tcp mode relays TLS without ending it, so it runs
# the plain modes only; tlsC compares the two proxies that end the client's TLS.
declare -A mode_targets=([c16]="direct rwproxy pgbouncer haproxy" [c1]="direct rwproxy pgbouncer haproxy"
  [connect]="direct rwproxy pgbouncer haproxy" [tls16]="direct rwproxy pgbouncer" [tlsC]="rwproxy pgbouncer")
# Plain TCP unless the mode says TLS (libpq's default, prefer, would take TLS wherever
# it is offered, and only rwproxy and the server offer it unless PgBouncer is set up to).
read -r -a selected <<<"${MODES:-c16 c1 connect tls16 tlsC idle}"
modes=()
for mode in "${selected[@]}"; do
  case $mode in
    c16 | c1 | connect | tls16 | tlsC) modes+=("$mode") ;;
    idle) ;;
    *) echo "unknown mode $mode in MODES (known: c16 c1 connect tls16 tlsC idle)" >&2; exit 2 ;;
  esac
done
for mode in "${modes[@]}"; do
  sslmode=disable
  case $mode in
    c16) args=(-c 16 -j 2) ;;
    c1) args=(-c 1 -j 1) ;;
    connect) args=(-C -c 4 -j 2) ;;
    tls16) args=(-c 16 -j 2) sslmode=require ;;
    tlsC) args=(-C -c 4 -j 2) sslmode=require ;;
  esac
  read -r -a names <<<"${mode_targets[$mode]}"
  for round in $(seq "$rounds"); do
    # Rotate the order so no target always runs first, or right after the same neighbour.
    for i in "${!names[@]}"; do
      name=${names[$(((i + round) % ${#names[@]}))]}
      IFS=: read -r port pid <<<"${target[$name]}"
      run "$name" "$port" "$pid" "${args[@]}"
    done
  done
done

printf '%-10s %-8s %10s %12s %8s %8s %13s %8s %10s %9s\n' target mode tps "tps range" "avg ms" "p99 ms" "cpu s/10k tx" "kernel%" "switch/tx" "segs/tx"
for mode in "${modes[@]}"; do
  for name in ${mode_targets[$mode]}; do
    k=$name.$mode
    printf '%-10s %-8s %10s %12s %8s %8s %13s %8s %10s %9s\n' "$name" "$mode" "$(median "${tps[$k]}" | xargs printf '%.0f')" "$(spread "${tps[$k]}")" \
      "$(median "${lat[$k]}")" "$(median "${p99[$k]}")" "$(median "${cpu[$k]:-}")" "$(median "${ksh[$k]:-}")" "$(median "${csw[$k]:-}")" "$(median "${segs[$k]}")"
  done
done

# rwproxy's spare backend connections (--backend-spares, on by default): what became of
# them over the whole run, from its metrics.
spare_fates=$(curl -s "http://127.0.0.1:$ap/metrics" | sed -n 's/^rwproxy_backend_spares_total{result="\([a-z_]*\)"} \([0-9]*\)$/\1 \2/p' | tr '\n' ' ' || true)
echo "rwproxy spare backend connections over the run: ${spare_fates:-none} (RWPROXY_ARGS='--backend-spares 0' turns them off)"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.1f%%", 100 * a / b; else print "-"}'; }
declare -A med
for key in "${!tps[@]}"; do med[tps.$key]=$(median "${tps[$key]}"); med[lat.$key]=$(median "${lat[$key]}"); done
for key in "${!cpu[@]}"; do med[cpu.$key]=$(median "${cpu[$key]}"); done
echo "Any relay that ends the client's TCP connection and opens its own to the server sends"
echo "two extra segments per transaction (segs/tx above) and wakes one extra process each way;"
echo "the kernel% column is the share of the proxy's CPU spent in the kernel doing that."

# idle NAME PORT PID: holds 10,000 idle TLS connections (TLS done, no startup yet) and
# records the target's RSS per connection once all are open.
declare -A rss_per idle_open
idle() {
  local name=$1 port=$2 pid=$3 out="$work/idle-$1.txt"
  local before; before=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  "$idle_tls" "$port" "$idle_count" "$work/ca.pem" 5 >"$out" 2>&1 &
  local tool=$!
  # The tool prints its line once every connection is open, then holds them 5 s.
  for _ in $(seq 1200); do grep -q '^idle TLS connections' "$out" && break; kill -0 "$tool" 2>/dev/null || break; sleep 0.1; done
  sleep 1
  local held; held=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  wait "$tool" || true
  local open; open=$(sed -n 's/^idle TLS connections: \([0-9]*\) open.*/\1/p' "$out")
  idle_open[$name]=${open:-0}
  rss_per[$name]=$(awk -v a="$before" -v b="$held" -v n="${open:-0}" 'BEGIN {if (n > 0) printf "%.1f", (b - a) / n; else print "-"}')
  echo "$name: $(cat "$out"); RSS $((before / 1024)) MiB before, $((held / 1024)) MiB holding them: ${rss_per[$name]} KiB per connection"
  # Let the connections close before the next target is measured.
  sleep 2
}
if [[ " ${selected[*]} " == *" idle "* ]]; then
  echo
  idle rwproxy "$rp" "$rwproxy_pid"
  idle pgbouncer "$bp" "$bouncer_pid"
fi
# Figures of the modes not run show as "-".
for name in direct rwproxy pgbouncer haproxy; do
  for mode in c16 c1 connect tls16 tlsC; do
    med[tps.$name.$mode]=${med[tps.$name.$mode]:--} med[lat.$name.$mode]=${med[lat.$name.$mode]:--} med[cpu.$name.$mode]=${med[cpu.$name.$mode]:--}
  done
  rss_per[$name]=${rss_per[$name]:--} idle_open[$name]=${idle_open[$name]:-0}
done

# The summary: rwproxy, its peers, and rwproxy's ratio to the best peer (above 1 is
# better than the best peer for throughput, below 1 for CPU, latency and memory).
share() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.1f%%", 100 * a / b; else print "-"}'; }
best_high() { printf '%s\n' "$@" | grep -v '^-$' | sort -g | tail -n 1; }
best_low() { printf '%s\n' "$@" | grep -v '^-$' | sort -g | head -n 1; }
over() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2fx", a / b; else print "-"}'; }
added() { awk -v a="$1" -v d="$2" 'BEGIN {printf "%+.3f", a - d}'; }
row() { printf '| %-44s | %-12s | %-12s | %-12s | %-14s |\n' "$@"; }
d16=${med[tps.direct.c16]} dC=${med[tps.direct.connect]} d1=${med[lat.direct.c1]}
echo
echo "Summary (medians of this run; ratio = rwproxy / best peer):"
row "" rwproxy PgBouncer "HAProxy tcp" "vs best peer"
row "c16, share of direct TPS" "$(share "${med[tps.rwproxy.c16]}" "$d16")" "$(share "${med[tps.pgbouncer.c16]}" "$d16")" "$(share "${med[tps.haproxy.c16]}" "$d16")" \
  "$(over "${med[tps.rwproxy.c16]}" "$(best_high "${med[tps.pgbouncer.c16]}" "${med[tps.haproxy.c16]}")")"
row "c16, CPU s per 10k transactions" "${med[cpu.rwproxy.c16]}" "${med[cpu.pgbouncer.c16]}" "${med[cpu.haproxy.c16]}" \
  "$(over "${med[cpu.rwproxy.c16]}" "$(best_low "${med[cpu.pgbouncer.c16]}" "${med[cpu.haproxy.c16]}")")"
la_r=$(added "${med[lat.rwproxy.c1]}" "$d1") la_b=$(added "${med[lat.pgbouncer.c1]}" "$d1") la_h=$(added "${med[lat.haproxy.c1]}" "$d1")
row "c1, latency added (ms; direct $d1)" "$la_r" "$la_b" "$la_h" "$(over "$la_r" "$(best_low "$la_b" "$la_h")")"
row "-C, share of direct TPS" "$(share "${med[tps.rwproxy.connect]}" "$dC")" "pooled" "$(share "${med[tps.haproxy.connect]}" "$dC")" \
  "$(over "${med[tps.rwproxy.connect]}" "${med[tps.haproxy.connect]}")"
row "-C, CPU s per 10k connections" "${med[cpu.rwproxy.connect]}" "pooled" "${med[cpu.haproxy.connect]}" \
  "$(over "${med[cpu.rwproxy.connect]}" "${med[cpu.haproxy.connect]}")"
row "TLS c16, TPS / CPU s per 10k tx" "${med[tps.rwproxy.tls16]%.*} / ${med[cpu.rwproxy.tls16]}" "${med[tps.pgbouncer.tls16]%.*} / ${med[cpu.pgbouncer.tls16]}" "-" \
  "$(over "${med[tps.rwproxy.tls16]}" "${med[tps.pgbouncer.tls16]}") / $(over "${med[cpu.rwproxy.tls16]}" "${med[cpu.pgbouncer.tls16]}")"
row "TLS -C, new conn/s / CPU ms each (PgB pooled)" "${med[tps.rwproxy.tlsC]%.*} / $(awk -v c="${med[cpu.rwproxy.tlsC]}" 'BEGIN {printf "%.3f", c / 10}')" \
  "${med[tps.pgbouncer.tlsC]%.*} / $(awk -v c="${med[cpu.pgbouncer.tlsC]}" 'BEGIN {printf "%.3f", c / 10}')" "-" \
  "$(over "${med[tps.rwproxy.tlsC]}" "${med[tps.pgbouncer.tlsC]}") / $(over "${med[cpu.rwproxy.tlsC]}" "${med[cpu.pgbouncer.tlsC]}")"
row "RSS per idle TLS connection (KiB, $idle_count)" "${rss_per[rwproxy]}" "${rss_per[pgbouncer]}" "-" "$(over "${rss_per[rwproxy]}" "${rss_per[pgbouncer]}")"
met() { awk "BEGIN {exit !($1)}" 2>/dev/null && echo "met" || echo "NOT met"; }
echo "targets (medians of this run):"
echo "  -C CPU per new plain connection <= HAProxy's: $(met "${med[cpu.rwproxy.connect]} <= ${med[cpu.haproxy.connect]}")"
echo "  -C throughput >= HAProxy's: $(met "${med[tps.rwproxy.connect]} >= ${med[tps.haproxy.connect]}")"
echo "  RSS per idle TLS connection <= 5 KiB: $(met "${idle_open[rwproxy]} >= $idle_count && ${rss_per[rwproxy]:-99} <= 5")"
