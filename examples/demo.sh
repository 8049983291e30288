#!/usr/bin/env bash
# The demo, in two parts.
#
# 1. A pull request against examples/aws, planned the way a CI job would comment it, then
#    applied to an emulated AWS account. Builds byoc, puts the example into a throw-away
#    git repository, commits a change (scale a cluster, add a cluster, drop the public SQL
#    endpoint) and prints the plan as markdown, then as text. Then it starts the moto AWS
#    emulator on 127.0.0.1 (installed from PyPI on first run), applies main and the merged
#    pull request (the live plan shows the same change).
# 2. The product: `byoc run` pulls a signed repository, converges the clusters in
#    Kubernetes (the API double with a stand-in operator: no kube-apiserver runs here) and
#    publishes the routes that `rwproxy` serves; two PostgreSQL servers stand in for the
#    clusters' frontends. A signed push adds a cluster, the webhook wakes the daemon, and
#    psql reaches the new cluster through rwproxy; an unsigned push is refused and changes
#    nothing; a signed `git revert` removes the route, then the cluster.
#
# Then the AWS environment is destroyed. Usage: bash examples/demo.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/byoc/target}"
command -v git >/dev/null 2>&1 && command -v cc >/dev/null 2>&1 && command -v pkg-config >/dev/null 2>&1 \
  && [ -e /usr/include/openssl/ssl.h ] || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    git gcc libc6-dev make pkg-config libssl-dev
}
cargo build -q --locked -p byoc-reconciler -p rwproxy -p kube-double --bins --manifest-path "$root/Cargo.toml"
byoc="$CARGO_TARGET_DIR/debug/byoc"
bin="$CARGO_TARGET_DIR/debug"

repo="$(mktemp -d)"
trap 'rm -rf "$repo"' EXIT
git() { command git -C "$repo" -c user.name=Demo -c user.email=demo@example.com -c commit.gpgsign=false "$@"; }
git init -q -b main
mkdir -p "$repo/envs"
cp -r "$root/examples/aws" "$repo/envs/prod"
git add -A && git commit -qm "prod environment"
git switch -q -c scale-analytics

sed -i 's/compute: {replicas: 3/compute: {replicas: 6/' "$repo/envs/prod/clusters/analytics.yaml"
sed -e 's/name: analytics/name: reporting/' -e 's/prefix: analytics/prefix: reporting/' \
  "$repo/envs/prod/clusters/analytics.yaml" > "$repo/envs/prod/clusters/reporting.yaml"
python3 - "$repo/envs/prod/environment.yaml" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read().replace("      public:\n        allowedCidrs: [203.0.113.0/24]\n", "")
# The pinned clusters now request 69 CPU: nine r6i.2xlarge hold them (the plan says so
# when they do not fit, since nothing adds nodes).
s = s.replace("        min: 4\n        max: 12\n", "        min: 9\n        max: 12\n")
open(p, "w").write(s)
PY
git add -A && git commit -qm "scale analytics, add reporting, nodes for them, drop the public endpoint"

echo "== byoc validate envs/prod (head)"
(cd "$repo" && "$byoc" validate envs/prod)
echo
echo "== byoc plan --output markdown (what the PR comment shows)"
set +e
"$byoc" plan --repo "$repo" --base main --head scale-analytics --env envs/prod --output markdown
echo
echo "== byoc plan --output text"
"$byoc" plan --repo "$repo" --base main --head scale-analytics --env envs/prod
code=$?
set -e
echo
echo "byoc plan exited $code (0: no changes, 2: changes, 1: error)"
[ "$code" -eq 2 ]

echo
echo "== byoc apply to an emulated AWS account (moto on 127.0.0.1)"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
moto_pid=$(bash "$root/tests/moto/start.sh" "$port" $$)
trap 'kill "$moto_pid" 2>/dev/null; rm -rf "$repo"' EXIT
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
venv="${BYOC_MOTO_VENV:-$HOME/.cache/byoc/moto-venv}"
# A real account has this role once autoscaling was used; preflight checks for it. moto
# answers neither Service Quotas for EKS nor iam:SimulatePrincipalPolicy, so the demo
# goes through the tests' recorded-response double for those two.
AWS_DEFAULT_REGION=us-east-1 "$venv/bin/python" -c "import boto3; boto3.client('iam', endpoint_url='http://127.0.0.1:$port').create_service_linked_role(AWSServiceName='autoscaling.amazonaws.com')"
front=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 "$root/tests/moto/faults.py" --port "$front" --upstream "http://127.0.0.1:$port" --owner $$ > "$repo/front.log" 2>&1 &
for _ in $(seq 1 50); do grep -q ready "$repo/front.log" && break; sleep 0.1; done
apply() { (cd "$repo" && "$byoc" "$@" --repo . --env envs/prod --endpoint-url "http://127.0.0.1:$front" --state-dir .byoc-state --auto-approve --poll-interval 0.2); }
git switch -q main
apply apply
echo
echo "== the pull request merged: byoc apply shows the live plan and applies it"
git merge -q --ff-only scale-analytics
apply apply

echo
echo "== part 2: byoc run, the in-account reconciler"
bash "$root/examples/demo-daemon.sh" "$bin" "$repo/daemon"

echo
echo "== byoc destroy --delete-data"
apply destroy --delete-data
