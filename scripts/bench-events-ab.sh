#!/usr/bin/env bash
# `scripts/bench-events-ab.sh [A B]`: the event measurements of `make bench` with the
# consumers' EVENT_BATCH at A (default 1, the default: a transaction per event) and at B (default
# 32), alternating on one bench stack (A B, then B A, ...), so that both
# see the same machine: each round restarts the services on the bus with the setting,
# then runs `loadgen backlog` (10,000 ticket.created queued at once), `loadgen
# propagation --rate 1000` and `loadgen lateness` (1,000 orders due together).
#
#   AB_ROUNDS    rounds (default 3)
#
# Prints one line per measurement and round; the log is target/bench/events-ab.log.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
a="${1:-1}" b="${2:-32}" rounds="${AB_ROUNDS:-3}"
source scripts/bench-env.sh

log() { printf '\033[1m[bench-events-ab]\033[0m %s\n' "$*" >&2; }

cargo build --release --workspace --bins --locked -q
trap 'scripts/stack.sh down >/dev/null 2>&1 || true' EXIT
scripts/stack.sh down >/dev/null 2>&1 || true
rm -rf "$STACK_DIR"
scripts/stack.sh up
mkdir -p target/bench
out=target/bench/events-ab.log
: > "$out"

measure() {
  local batch="$1"
  log "EVENT_BATCH=$batch"
  EVENT_BATCH="$batch" scripts/stack.sh restart tickets orders payments expiration >/dev/null
  target/release/loadgen check >/dev/null  # the stack quiet before each measurement
  for command in backlog "propagation --rate 1000" lateness; do
    # shellcheck disable=SC2086 # the command's words
    target/release/loadgen $command | sed "s/^/EVENT_BATCH=$batch: /" | tee -a "$out"
    target/release/loadgen check >/dev/null
  done
}
for round in $(seq 1 "$rounds"); do
  log "round $round of $rounds"
  if [ $((round % 2)) = 1 ]; then measure "$a"; measure "$b"; else measure "$b"; measure "$a"; fi
done
log "written to $out"
