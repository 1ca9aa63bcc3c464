# The bench stack's settings, for scripts/bench.sh and scripts/bench-ab.sh (sourced
# from the repository's root): release builds, its own ports and data under
# .stack/bench, a ten-second expiration window so expirations can be measured.
export STACK_DIR="$PWD/.stack/bench"
export STACK_PROFILE=release
export PG_PORT="${BENCH_PG_PORT:-55434}"
export NATS_PORT=24222 NATS_HTTP_PORT=28222 INGRESS_PORT=28080
export SERVICE_PORT_BASE=23000 STANDIN_PORT=23111
export EXPIRATION_WINDOW_SECONDS=10
# Load from one machine: limits meant for people lifted (scripts/load-settings.sh).
source scripts/load-settings.sh
# Default logging (info, one line per request) as a user runs it; to a file.
export RUST_LOG="${RUST_LOG:-info}"

