#!/usr/bin/env bash
# `make cluster-chaos` (and, shortened, the end of `make test`): a fresh cluster of
# `make cluster` (scripts/cluster: three NATS nodes, two replicas of every service,
# each database with a synchronous standby), journeys through its ingress while the
# fault library's faults run in turn (rolling restarts, NATS nodes lost, database
# failovers, partitions, lossy links, stalls), each measured against its target; then
# the invariant checker across every primary, with what a cluster adds. Exits
# non-zero on a violation or a missed target.
#
#   CLUSTER_CHAOS_PLAN  full (every fault; default) or short (make test)
#   CLUSTER_CHAOS_RATE  journeys started per second (8)
#   CLUSTER_KEEP=1      leave the cluster running afterwards
#   CLUSTER_IMAGES_BUILT=1  the images are current (just built): start without building
#
# The full plan also measures journeys per second through the cluster and through the
# single-node stack in the same run, and writes the cluster's section of
# docs/benchmarks.md from the run (target/cluster/*.json).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
plan="${CLUSTER_CHAOS_PLAN:-full}"
rate="${CLUSTER_CHAOS_RATE:-8}"

log() { printf '\033[1m[cluster-chaos]\033[0m %s\n' "$*" >&2; }

# Orders left alone expire during the run; interrupted charges are reconciled soon.
export EXPIRATION_WINDOW_SECONDS="${EXPIRATION_WINDOW_SECONDS:-15}"
export CHARGE_RECONCILE_AFTER_SECONDS=5 SHUTDOWN_GRACE_SECONDS=10 STRIPE_TIMEOUT_SECONDS=5
# Load from one machine: limits meant for people lifted (scripts/load-settings.sh).
source "$(dirname "${BASH_SOURCE[0]}")/load-settings.sh"

cargo build --release -p loadgen --locked -q
loadgen="${CARGO_TARGET_DIR:-target}/release/loadgen"
mkdir -p target/cluster

if [ "$plan" = full ]; then
  log "the single-node stack's throughput, for comparison (its own ports and data)"
  export STACK_DIR="$ROOT/.stack/cluster-baseline" STACK_PROFILE=release
  (
    export PG_PORT=25432 NATS_PORT=24222 NATS_HTTP_PORT=28222 INGRESS_PORT=28080
    export SERVICE_PORT_BASE=23000 STANDIN_PORT=23111
    trap 'scripts/stack.sh down >/dev/null 2>&1 || true' EXIT
    rm -rf "$STACK_DIR"
    scripts/stack.sh up
    "$loadgen" throughput --base "http://127.0.0.1:$INGRESS_PORT" --duration 30s \
      --out target/cluster/baseline.json
  )
  unset STACK_DIR STACK_PROFILE
fi

log "a fresh cluster"
[ "${CLUSTER_KEEP:-}" = 1 ] || trap 'scripts/cluster down >/dev/null 2>&1 || true' EXIT
scripts/cluster down --purge
# CLUSTER_IMAGES_BUILT=1 (make test, right after `scripts/cluster images`): the
# images are current, so they are not built a second time.
if [ "${CLUSTER_IMAGES_BUILT:-}" = 1 ]; then scripts/cluster up --no-build; else scripts/cluster up; fi

args=(--plan "$plan" --rate "$rate" --out target/cluster/results.json)
[ "$plan" = full ] && args+=(--throughput 30s)
if ! "$loadgen" cluster-chaos "${args[@]}"; then
  # What the supervisor saw (the probes, the rotation, restarts) and found slow, for a
  # missed target to be read afterwards: the cluster is removed on exit.
  log "the supervisor's events (rotation changes left out) and its log"
  grep -v '"event": "rotation"' .cluster/run/events.jsonl >&2 || true
  cat .cluster/run/supervisor.log >&2 || true
  exit 1
fi
if [ "$plan" = full ]; then
  "$loadgen" cluster-report --results target/cluster/results.json \
    --baseline target/cluster/baseline.json --markdown docs/benchmarks.md
fi
