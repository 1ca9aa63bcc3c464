#!/usr/bin/env bash
# `make bench`: every measurement of docs/benchmarks.md, three runs on this machine.
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
# BENCH_RUNS (3) consecutive runs, each on a fresh stack (measurements start from empty
# databases); the report shows every target run by run, and the last run's tables.
runs="${BENCH_RUNS:-3}"
results=()
for run in $(seq 1 "$runs"); do
  echo "bench: run $run of $runs" >&2
  scripts/stack.sh down >/dev/null 2>&1 || true
  rm -rf "$STACK_DIR"
  scripts/stack.sh up
  target/release/loadgen bench --out "target/bench/results-$run.json"
  results+=(--results "target/bench/results-$run.json")
done
scripts/stack.sh down >/dev/null 2>&1 || true
target/release/loadgen report "${results[@]}" --markdown docs/benchmarks.md
