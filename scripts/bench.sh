#!/usr/bin/env bash
# `make bench`: every measurement of docs/benchmarks.md from one run on this machine.
# A stack of its own (release builds, its own ports and data under .stack/bench, a
# ten-second expiration window so expirations can be measured) is started, loadgen
# measures it (loadgen/src/bench.rs) and writes docs/benchmarks.md and its chart.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

source scripts/bench-env.sh
command -v wrk >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk; }
cargo build --release --workspace --bins --locked -q
trap 'scripts/stack.sh down >/dev/null 2>&1 || true' EXIT
# A fresh stack each time: measurements start from empty databases.
scripts/stack.sh down >/dev/null 2>&1 || true
rm -rf "$STACK_DIR"
scripts/stack.sh up
target/release/loadgen bench --out target/bench/results.json
target/release/loadgen report --results target/bench/results.json --markdown docs/benchmarks.md
