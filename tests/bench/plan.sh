#!/usr/bin/env bash
# Plan benchmark: 1,000 clusters and 1,000 routes. Prints the median time per phase over
# several runs, then the peak RSS of one plan in a fresh process, rendered in each output
# format, for three pull requests: the mostly unchanged one the times are taken on, one
# that adds all 1,000 clusters, and one that removes them all. Targets: < 100 ms total,
# < 64 MiB each. Usage: bash tests/bench/plan.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/byoc/target}"
cargo bench -q -p byoc-reconciler --bench plan --no-run 2>/dev/null || cargo bench -p byoc-reconciler --bench plan --no-run
cargo bench -q -p byoc-reconciler --bench plan
for scenario in mostly all-create all-delete; do
  for format in json markdown markdown-parts text; do
    cargo bench -q -p byoc-reconciler --bench plan -- --rss-once "$scenario" "$format"
  done
done
