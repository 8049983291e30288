#!/usr/bin/env bash
# Starts a PostgreSQL server standing in for a RisingWave frontend (same wire protocol).
# Usage: tests/pg/start.sh DIR PORT NAME OWNER_PID [TLS_CERT TLS_KEY]
#   DIR        an empty directory for the cluster (made if missing)
#   PORT       loopback TCP port
#   NAME       cluster_name, so a query (SHOW cluster_name) tells servers apart
#   OWNER_PID  the server is stopped when this process exits (a watchdog polls it), so a
#              test run that dies leaves nothing behind
#   TLS_CERT/KEY PEM files: the server also accepts TLS with this certificate
# Roles: postgres (trust), md5user/md5pass (md5), scramuser/scrampass (SCRAM), tlsuser
# (trust, but only over TLS: a plain connection is rejected). Database
# `ingest` exists on every server.
set -euo pipefail
dir=$1 port=$2 name=$3 owner=$4 tls_cert=${5:-} tls_key=${6:-}
# runuser keeps the working directory, which the postgres user may not be allowed to enter.
cd /

pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$pgbin" ] || [ ! -x "$pgbin/initdb" ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql postgresql-client >/dev/null
  pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres

# initdb and pg_ctl refuse to run as root; the postgres user must reach DIR through its
# parent (a test's temporary directory): allow traversal, not listing.
chmod o+x "$(dirname "$dir")"
install -d -o postgres -g postgres -m 700 "$dir"
runuser -u postgres -- "$pgbin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
cat > "$dir/data/pg_hba.conf" <<HBA
local all all trust
hostssl all tlsuser 127.0.0.1/32 trust
hostnossl all tlsuser 127.0.0.1/32 reject
host all md5user 127.0.0.1/32 md5
host all scramuser 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 trust
HBA
chown postgres:postgres "$dir/data/pg_hba.conf"
ssl=()
if [ -n "$tls_cert" ]; then
  # PostgreSQL refuses a key file others can read.
  install -o postgres -g postgres -m 600 "$tls_cert" "$dir/data/server.crt"
  install -o postgres -g postgres -m 600 "$tls_key" "$dir/data/server.key"
  ssl=(-c ssl=on)
fi
runuser -u postgres -- "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c cluster_name=$name -c max_connections=400 -c fsync=off ${ssl[*]:-}" >/dev/null
psql -qX -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 >/dev/null <<SQL
SET password_encryption = 'md5';
CREATE ROLE md5user LOGIN PASSWORD 'md5pass';
SET password_encryption = 'scram-sha-256';
CREATE ROLE scramuser LOGIN PASSWORD 'scrampass';
CREATE ROLE tlsuser LOGIN;
CREATE DATABASE ingest;
SQL

# The watchdog: stop the server when the owner exits; bounded by the owner's life.
nohup bash -c "while kill -0 $owner 2>/dev/null; do sleep 1; done; runuser -u postgres -- '$pgbin/pg_ctl' -D '$dir/data' -m immediate stop" >/dev/null 2>&1 &
echo "$pgbin"
