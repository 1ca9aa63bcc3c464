#!/usr/bin/env bash
# `scripts/bench-events-ab.sh [A B]`: the event measurements of `make bench` with the
# consumers' settings A against B, alternating on one bench stack (A B, then B A, ...),
# so that both see the same machine: each round restarts the services on the bus with
# the setting, then runs `loadgen backlog` (10,000 ticket.created queued at once),
# `loadgen propagation --rate 1000` and `loadgen lateness` (1,000 orders due together).
# A setting is a number, for EVENT_BATCH, or assignments: A defaults to 1 (the
# default: a transaction per event), B to 32; e.g.
#   scripts/bench-events-ab.sh 1 "EVENT_BATCH=32 EVENT_CONCURRENCY=2"
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
  local setting="$1"
  [[ "$setting" == *=* ]] || setting="EVENT_BATCH=$setting"
  log "$setting"
  # shellcheck disable=SC2086 # the setting's assignments
  env $setting scripts/stack.sh restart tickets orders payments expiration >/dev/null
  target/release/loadgen check >/dev/null  # the stack quiet before each measurement
  for command in backlog "propagation --rate 1000" lateness; do
    # shellcheck disable=SC2086 # the command's words
    target/release/loadgen $command | sed "s/^/$setting: /" | tee -a "$out"
    target/release/loadgen check >/dev/null
  done
}
for round in $(seq 1 "$rounds"); do
  log "round $round of $rounds"
  if [ $((round % 2)) = 1 ]; then measure "$a"; measure "$b"; else measure "$b"; measure "$a"; fi
done
log "written to $out"
