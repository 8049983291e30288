#!/usr/bin/env bash
# The demo: a pull request against examples/aws, planned the way a CI job would comment
# it. Builds byoc, puts the example into a throw-away git repository, commits a change
# (scale a cluster, add a cluster, drop the public SQL endpoint) and prints the plan as
# markdown, then as text. Usage: bash examples/demo.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/byoc/target}"
command -v git >/dev/null 2>&1 && command -v cc >/dev/null 2>&1 && command -v pkg-config >/dev/null 2>&1 \
  && [ -e /usr/include/openssl/ssl.h ] || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    git gcc libc6-dev make pkg-config libssl-dev
}
cargo build -q --locked -p byoc-reconciler --bin byoc --manifest-path "$root/Cargo.toml"
byoc="$CARGO_TARGET_DIR/debug/byoc"

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
open(p, "w").write(s)
PY
git add -A && git commit -qm "scale analytics, add reporting, drop the public endpoint"

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
