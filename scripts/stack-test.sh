#!/usr/bin/env bash
# The tests that need the whole local stack, as `make up` runs it (the last part of
# `make test`): a stack of its own is started (debug builds, its own ports and data
# under .stack/test, a short expiration window), then
#   - the stack tests (e2e/tests/stack.rs: the ingress, bindings, a NATS outage, the
#     dashboard's queries and an alert against Prometheus: MONITORING=on),
#   - the browser tests (e2e/browser: Playwright driving Debian's Chromium),
#   - a short chaos run with its invariant checker (loadgen chaos; two minutes: quiet
#     at both ends, so that every kind of journey also runs with nothing broken), then
#     a test that the checker reports a violation of each of its checks, planted in the
#     databases and the Stripe stand-in it left,
# and the stack is stopped whatever happened.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export STACK_DIR="$ROOT/.stack/test"
export STACK_PROFILE="${STACK_PROFILE:-debug}"
# Below Linux's ephemeral range, like every port here: PostgreSQL and NATS are
# restarted during the run and must find their ports free.
export PG_PORT="${TEST_STACK_PG_PORT:-15432}"
export NATS_PORT=14222 NATS_HTTP_PORT=18222 INGRESS_PORT=18080
export SERVICE_PORT_BASE=13000 STANDIN_PORT=13111
export EXPIRATION_WINDOW_SECONDS="${EXPIRATION_WINDOW_SECONDS:-20}"
export SHUTDOWN_GRACE_SECONDS=10
# For the chaos run: interrupted charges reconciled soon, Stripe hangs bounded.
export CHARGE_RECONCILE_AFTER_SECONDS=5 STRIPE_TIMEOUT_SECONDS=5
# Load from one machine: limits meant for people lifted (scripts/load-settings.sh).
source "$(dirname "${BASH_SOURCE[0]}")/load-settings.sh"
export STACK_URL="http://localhost:$INGRESS_PORT"
# Prometheus with the prod rules, for the monitoring test (every dashboard query, an alert).
export MONITORING=on PROMETHEUS_PORT=19090
export PROMETHEUS_URL="http://127.0.0.1:$PROMETHEUS_PORT"
# Small, so that the stack tests can see a log moved aside.
export LOG_MAX_MB=2

log() { printf '\033[1m[stack-test]\033[0m %s\n' "$*" >&2; }

trap 'scripts/stack.sh down >/dev/null 2>&1 || true' EXIT
scripts/stack.sh up

log "stack tests"
cargo nextest run -p e2e --test stack --run-ignored only --locked --profile ci --test-threads 1

log "browser tests (Chromium: $(/usr/bin/chromium --version 2>/dev/null || echo missing))"
(
  cd e2e/browser
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent
  BASE_URL="$STACK_URL" npx playwright test
)

log "short chaos run (make chaos runs the long one)"
cargo build -p loadgen --locked -q
target/debug/loadgen chaos --duration "${CHAOS_DURATION:-120s}" --rate "${CHAOS_RATE:-8}"

log "the invariant checker against planted violations (on the quiet stack the chaos run left)"
cargo nextest run -p loadgen --run-ignored only --locked --profile ci
