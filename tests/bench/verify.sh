#!/usr/bin/env bash
# Verification benchmark: generates 10,000 SSH-signed commits (key from ssh-keygen),
# 1,000 OpenPGP-signed ones (key from gpg) and 1,000 gitsign-format ones (test CA and
# test log, each with its inclusion proof), and
# verifies the range as `byoc verify` does; prints commits per second and whether the
# targets hold. Usage: bash tests/bench/verify.sh [ssh|openpgp|gitsign]
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/byoc/target}"
command -v ssh-keygen >/dev/null || { apt-get update -qq && apt-get install -y -qq openssh-client; }
command -v gpg >/dev/null || { apt-get update -qq && apt-get install -y -qq gnupg; }
cargo bench -q -p byoc-reconciler --bench verify --no-run 2>/dev/null || cargo bench -p byoc-reconciler --bench verify --no-run
cargo bench -q -p byoc-reconciler --bench verify -- "$@"
