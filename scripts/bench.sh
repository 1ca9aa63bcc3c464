#!/usr/bin/env bash
# `make bench`: every measurement of docs/benchmarks.md from one run on this machine.
# A stack of its own (release builds, its own ports and data under .stack/bench, a
# ten-second expiration window so expirations can be measured) is started, loadgen
# measures it (loadgen/src/bench.rs) and writes docs/benchmarks.md and its chart.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export STACK_DIR="$ROOT/.stack/bench"
export STACK_PROFILE=release
export PG_PORT="${BENCH_PG_PORT:-55434}"
export NATS_PORT=24222 NATS_HTTP_PORT=28222 INGRESS_PORT=28080
export SERVICE_PORT_BASE=23000 STANDIN_PORT=23111
export EXPIRATION_WINDOW_SECONDS=10
# Load from one machine is one client address: the per-address limits of sign-in and
# sign-up (auth) are off for it; the per-account ones stay.
export RATE_LIMITS=off
echo "RATE_LIMITS=off: the per-address limits of sign-in and sign-up are off for this load from one address" >&2
# Default logging (info, one line per request) as a user runs it; to a file.
export RUST_LOG="${RUST_LOG:-info}"

command -v wrk >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk; }
cargo build --release --workspace --bins --locked -q
trap 'scripts/stack.sh down >/dev/null 2>&1 || true' EXIT
# A fresh stack each time: measurements start from empty databases.
scripts/stack.sh down >/dev/null 2>&1 || true
rm -rf "$STACK_DIR"
scripts/stack.sh up
target/release/loadgen bench --out target/bench/results.json
target/release/loadgen report --results target/bench/results.json --markdown docs/benchmarks.md
