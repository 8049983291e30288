#!/usr/bin/env bash
# Part 2 of the demo (examples/demo.sh runs it): `byoc run` from a signed push to SQL
# routed by rwproxy. Everything binds 127.0.0.1 and stops when this script exits.
# Usage: bash examples/demo-daemon.sh BIN_DIR WORK_DIR   (BIN_DIR holds byoc, rwproxy, kube-double)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin=$1 work=$2
mkdir -p "$work"
work="$(cd "$work" && pwd)"
command -v psql >/dev/null 2>&1 && command -v curl >/dev/null 2>&1 || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql postgresql-client curl >/dev/null
}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pids=()
# The servers run as the postgres user, which must reach their directories: they live in a
# directory of their own under /tmp rather than inside WORK_DIR (which may be private).
pg=$(mktemp -d)
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$pg"' EXIT

# Two PostgreSQL servers stand in for the frontends of the clusters `analytics` and
# `reports`; `SHOW cluster_name` tells them apart.
pg_analytics=$(free_port) pg_reports=$(free_port)
bash "$root/tests/pg/start.sh" "$pg/analytics" "$pg_analytics" analytics $$ >/dev/null
bash "$root/tests/pg/start.sh" "$pg/reports" "$pg_reports" reports $$ >/dev/null
# RisingWave's default database is `dev`; the routes below match on the database name.
psql -q -h 127.0.0.1 -p "$pg_analytics" -U postgres -c "CREATE DATABASE analytics"
psql -q -h 127.0.0.1 -p "$pg_reports" -U postgres -c "CREATE DATABASE reports"

# The Kubernetes API double, with the operator's CRD and a stand-in operator that reports
# each RisingWave Running once written.
gzip -dc "$root/tests/fixtures/risingwave-operator/risingwaves.crd.yaml.gz" > "$work/rw.crd.yaml"
kube_port=$(free_port)
"$bin/kube-double" --listen "127.0.0.1:$kube_port" --crd "$work/rw.crd.yaml" --operator --lifetime 600 > "$work/kubeconfig" &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$work/kubeconfig" ] && break; sleep 0.05; done

# A signing key, the operator's signing policy naming it, and the repository: the example
# environment with the analytics cluster reachable by database name through rwproxy.
ssh-keygen -q -t ed25519 -N "" -C alice -f "$work/alice"
echo "alice@example.com $(cut -d' ' -f1,2 "$work/alice.pub")" > "$work/allowed_signers"
cat > "$work/policy.yaml" <<YAML
apiVersion: byoc.risingwave.dev/v1alpha1
kind: SigningPolicy
metadata: {name: demo}
spec:
  version: 1
  allowedSignersFile: allowed_signers
  rules:
    - {paths: ["**"], signers: [alice@example.com], threshold: 1}
  forgeMergeKey: {trusted: false}
YAML
repo="$work/repo"
git() { command git -C "$repo" -c user.name=Alice -c user.email=alice@example.com -c gpg.format=ssh -c user.signingkey="$work/alice" "$@"; }
command git init -q -b main "$repo"
mkdir -p "$repo/env"
cp -r "$root/examples/aws/." "$repo/env/"
cat > "$repo/env/routes.yaml" <<YAML
apiVersion: byoc.risingwave.dev/v1alpha1
kind: Routes
metadata: {name: default}
spec:
  routes:
    - {name: analytics-db, match: {database: analytics}, cluster: analytics, allowedCidrs: [127.0.0.0/8], backend: '127.0.0.1:$pg_analytics'}
YAML
git add -A && git commit -q -S -m "prod environment"
command git clone -q --bare "$repo" "$work/remote.git"
git remote add origin "$work/remote.git"

printf 'demo-webhook-secret' > "$work/webhook-secret"
status_port=$(free_port)
cat > "$work/reconciler.yaml" <<YAML
apiVersion: byoc.risingwave.dev/v1alpha1
kind: Reconciler
metadata: {name: demo}
spec:
  repository: {url: "file://$work/remote.git", branch: main}
  environment: env
  signingPolicy: policy.yaml
  stateStore: {dir: state}
  publishDir: publish
  cacheDir: cache
  listen: "127.0.0.1:$status_port"
  interval: 10m
  webhook: {secretFile: webhook-secret}
  kubernetes: {kubeconfig: kubeconfig}
YAML
echo "-- byoc run --check"
(cd "$work" && "$bin/byoc" run --config reconciler.yaml --check)
(cd "$work" && exec "$bin/byoc" run --config reconciler.yaml 2> daemon.log) &
pids+=($!)
status() { curl -s "http://127.0.0.1:$status_port/status"; }
field() { python3 -c "import json,sys; s=json.load(sys.stdin); $1"; }
wait_for() { # wait_for WHAT PYTHON-EXPRESSION-ON-s
  for _ in $(seq 1 200); do
    if status 2>/dev/null | field "sys.exit(0 if ($2) else 1)" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for: $1" >&2; tail -n 30 "$work/daemon.log" >&2; exit 1
}
cond() { echo "next((c for c in s.get('conditions', []) if c['type'] == '$1'), {})"; }
wait_for "the first reconcile" "s.get('lastAppliedRevision')"
echo "-- first reconcile: $(status | field "print(s['lastAppliedRevision'])")"

proxy_port=$(free_port)
"$bin/rwproxy" --routes "$work/publish/current" --listen "127.0.0.1:$proxy_port" 2> "$work/rwproxy.log" &
pids+=($!)
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$proxy_port") 2>/dev/null && break; sleep 0.05; done
sql() { psql -h 127.0.0.1 -p "$proxy_port" -U postgres -d "$1" -Atc "SHOW cluster_name" 2>&1; }
echo "-- psql -d analytics through rwproxy: cluster_name = $(sql analytics)"

hook() { # a GitHub push webhook, signed with the shared secret
  local body='{"ref":"refs/heads/main"}'
  local sig="sha256=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$(cat "$work/webhook-secret")" -r | cut -d' ' -f1)"
  curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$status_port/hooks/git" \
    -H "X-Hub-Signature-256: $sig" -H "X-GitHub-Delivery: $1" -H 'Content-Type: application/json' --data "$body"
}

echo
echo "-- a signed push adds the cluster reports and its route"
sed -e 's/name: analytics/name: reports/' -e 's/prefix: analytics/prefix: reports/' \
  "$repo/env/clusters/analytics.yaml" > "$repo/env/clusters/reports.yaml"
echo "    - {name: reports-db, match: {database: reports}, cluster: reports, allowedCidrs: [127.0.0.0/8], backend: '127.0.0.1:$pg_reports'}" >> "$repo/env/routes.yaml"
git add -A && git commit -q -S -m "add the reports cluster"
added=$(git rev-parse HEAD)
started=$(date +%s.%N)
git push -q origin main
echo "webhook: HTTP $(hook push-1)"
wait_for "the push applied" "s.get('lastAppliedRevision', '').endswith('$added')"
echo "applied $added in $(python3 -c "print(f'{$(date +%s.%N) - $started:.2f}')") s after git push"
echo "psql -d reports through rwproxy: cluster_name = $(sql reports)"

echo
echo "-- an unsigned push is refused: nothing applied, the routes stay"
sed -i 's/compute: {replicas: 3/compute: {replicas: 9/' "$repo/env/clusters/reports.yaml"
git -c commit.gpgsign=false commit -q -am "unsigned resize"
git push -q origin main
echo "webhook: HTTP $(hook push-2)"
wait_for "the refusal" "$(cond SourceVerified).get('status') == 'False'"
status | field "c = $(cond SourceVerified); print('SourceVerified=False:', c['message'].splitlines()[0])"
echo "lastAppliedRevision is still $(status | field "print(s['lastAppliedRevision'])")"
echo "psql -d reports through rwproxy: cluster_name = $(sql reports)"
echo "a webhook with a wrong signature: HTTP $(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$status_port/hooks/git" -H 'X-Hub-Signature-256: sha256=00' --data '{}')"

echo
echo "-- the unsigned commit is taken back, and a signed git revert removes reports"
git reset -q --hard "$added"
git revert --no-edit -S "$added" >/dev/null
reverted=$(git rev-parse HEAD)
git push -q --force origin main
echo "webhook: HTTP $(hook push-3)"
wait_for "the revert applied" "s.get('lastAppliedRevision', '').endswith('$reverted')"
echo "psql -d reports through rwproxy: $(sql reports | head -n 1)"
echo "psql -d analytics through rwproxy: cluster_name = $(sql analytics)"
echo "conditions: $(status | field "print(', '.join(c['type'] + '=' + c['status'] for c in s['conditions']))")"
# This daemon was given no cloud (no `cloud:` and no inventory in its state store), so it
# reports the environment as not bootstrapped rather than guessing; see README "The daemon".
status | field "c = $(cond EnvironmentInSync); print('EnvironmentInSync=' + c.get('status', '?') + ':', c.get('message', '').splitlines()[0] if c.get('message') else '')"
