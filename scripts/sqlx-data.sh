#!/usr/bin/env bash
# The offline query data of sqlx's compile-time checked queries (.sqlx/).
#
#   scripts/sqlx-data.sh prepare   rebuild each crate's schema from its migrations in a
#                                  scratch database and regenerate .sqlx/
#   scripts/sqlx-data.sh check     fail if .sqlx/ does not match the code and migrations
#
# Each crate checks its queries against its own database (its sqlx.toml names the
# variable: TICKETS_DATABASE_URL, ...); `bus` against one holding only the bus
# tables. Needs the local PostgreSQL (scripts/stack.sh start-postgres) and sqlx-cli.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_PORT="${PG_PORT:-55432}"
ADMIN="postgres://postgres@127.0.0.1:$PG_PORT"
# crate and whether it is on the event bus (its database holds the bus tables too)
CRATES=("bus 1" "auth 1" "tickets 1" "orders 1" "payments 1" "expiration 1")

psql_run() { psql -q -v ON_ERROR_STOP=1 "$@" >/dev/null; }

schema() {
  local crate="$1" bus="$2" db="sqlx_$1"
  psql_run "$ADMIN/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
  local file
  if [ "$bus" = 1 ]; then
    for file in "$ROOT"/bus/migrations/*.sql; do psql_run "$ADMIN/$db" -f "$file"; done
  fi
  if [ "$crate" != bus ]; then
    for file in "$ROOT/$crate"/migrations/*.sql; do psql_run "$ADMIN/$db" -f "$file"; done
  fi
  export "$(echo "$crate" | tr '[:lower:]' '[:upper:]')_DATABASE_URL=$ADMIN/$db"
}

case "${1:-}" in
  prepare | check)
    command -v cargo-sqlx >/dev/null || { echo "sqlx-cli is missing: make deps" >&2; exit 1; }
    for entry in "${CRATES[@]}"; do schema $entry; done
    cd "$ROOT"
    # sqlx-cli wants one URL to check the server against; the macros use their own.
    export DATABASE_URL="$BUS_DATABASE_URL"
    if [ "$1" = check ]; then
      cargo sqlx prepare --workspace --check -- --all-targets --locked
    else
      cargo sqlx prepare --workspace -- --all-targets --locked
    fi
    ;;
  *) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
