#!/usr/bin/env bash
# `make chaos` (and, shorter, the end of `make test`): journeys through the ingress for
# a few minutes while each service is SIGKILLed and restarted, NATS stops for 10 s,
# PostgreSQL restarts and the Stripe stand-in fails and hangs; then, once quiet, the
# invariant checker reads every database. Exits non-zero on any violation.
#   CHAOS_DURATION (3m), CHAOS_RATE (journeys per second, 20), STACK_PROFILE (release)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export STACK_DIR="${STACK_DIR:-$ROOT/.stack/chaos}"
export STACK_PROFILE="${STACK_PROFILE:-release}"
# Ports below Linux's ephemeral range (32768-60999): a server restarted during the run
# must find its port free, and an outgoing connection may hold any ephemeral port (the
# NATS monitor port once failed to bind that way).
export PG_PORT="${CHAOS_PG_PORT:-30432}"
export NATS_PORT=30222 NATS_HTTP_PORT=30822 INGRESS_PORT=30080
export SERVICE_PORT_BASE=30000 STANDIN_PORT=30111
# Short enough that orders left alone expire during the run; interrupted charges are
# reconciled soon; restarts are quick.
export EXPIRATION_WINDOW_SECONDS="${EXPIRATION_WINDOW_SECONDS:-15}"
export CHARGE_RECONCILE_AFTER_SECONDS=5
export SHUTDOWN_GRACE_SECONDS=10
export STRIPE_TIMEOUT_SECONDS=5
# Load from one machine: limits meant for people lifted (scripts/load-settings.sh).
source "$(dirname "${BASH_SOURCE[0]}")/load-settings.sh"

flags=()
[ "$STACK_PROFILE" = release ] && flags+=(--release)
cargo build --workspace --bins --locked -q "${flags[@]}"
trap 'scripts/stack.sh down >/dev/null 2>&1 || true' EXIT
scripts/stack.sh down >/dev/null 2>&1 || true
rm -rf "$STACK_DIR"
scripts/stack.sh up
"target/$([ "$STACK_PROFILE" = release ] && echo release || echo debug)/loadgen" chaos \
  --duration "${CHAOS_DURATION:-3m}" --rate "${CHAOS_RATE:-20}"
