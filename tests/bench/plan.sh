#!/usr/bin/env bash
# Plan benchmark: 1,000 clusters and 1,000 routes. Prints the median time per phase over
# several runs, then the peak RSS of one plan in a fresh process. Targets: < 100 ms total,
# < 64 MiB. Usage: bash tests/bench/plan.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/byoc/target}"
cargo bench -q -p byoc-reconciler --bench plan --no-run 2>/dev/null || cargo bench -p byoc-reconciler --bench plan --no-run
cargo bench -q -p byoc-reconciler --bench plan
cargo bench -q -p byoc-reconciler --bench plan -- --rss-once
