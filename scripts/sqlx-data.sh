#!/usr/bin/env bash
# The offline query data of sqlx's compile-time checked queries (.sqlx/).
#
#   scripts/sqlx-data.sh prepare   rebuild each crate's schema from its migrations in a
#                                  scratch database and regenerate .sqlx/
#   scripts/sqlx-data.sh check     fail if .sqlx/ does not match the code and migrations
#
# Each crate checks its queries against its own database (its sqlx.toml names the
# variable: TICKETS_DATABASE_URL, ...); `bus` against one holding only the bus
# tables. Needs the local PostgreSQL (scripts/stack.sh start-postgres).
#
# This does what `cargo sqlx prepare [--check]` does, without sqlx-cli (compiling it
# took minutes of every fresh CI machine): the query macros, run online with
# SQLX_OFFLINE_DIR set, write one query-<hash>.json per query into that directory.
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

# The workspace's metadata, and what the functions below read from it.
metadata() { cargo metadata --no-deps --format-version 1 --locked; }
target_roots() {
  python3 -c 'import json, sys
for p in json.load(sys.stdin)["packages"]:
    for t in p["targets"]:
        print(t["src_path"])'
}
target_directory() { python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'; }

# Run the query macros online, writing their data into $1: every workspace crate's
# target roots are touched so that cargo checks them again, as sqlx-cli does.
generate() {
  local dir="$1"
  mkdir -p "$dir"
  find "$dir" -maxdepth 1 -name 'query-*.json' -delete
  target_roots <<<"$METADATA" | xargs touch
  SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$dir" cargo check --workspace --all-targets --locked -q
}

case "${1:-}" in
  prepare | check)
    for entry in "${CRATES[@]}"; do schema $entry; done
    cd "$ROOT"
    # Crates without a sqlx.toml of their own check against the bus tables.
    export DATABASE_URL="$BUS_DATABASE_URL"
    METADATA="$(metadata)"
    if [ "$1" = prepare ]; then
      generate "$ROOT/.sqlx"
      echo "query data written to .sqlx/ ($(find .sqlx -name 'query-*.json' | wc -l) queries); commit it"
      exit 0
    fi
    fresh="$(target_directory <<<"$METADATA")/sqlx-prepare-check"
    generate "$fresh"
    # Compared as JSON, so that formatting does not matter; a stale file fails too.
    python3 - "$ROOT/.sqlx" "$fresh" <<'PY'
import json, pathlib, sys
committed, fresh = (pathlib.Path(d) for d in sys.argv[1:])
def queries(d):
    return {p.name: json.loads(p.read_text()) for p in d.glob("query-*.json")}
old, new = queries(committed), queries(fresh)
problems = [f"missing from .sqlx/: {n}" for n in sorted(new.keys() - old.keys())]
problems += [f"no longer used: .sqlx/{n}" for n in sorted(old.keys() - new.keys())]
problems += [f"differs: .sqlx/{n}" for n in sorted(new.keys() & old.keys()) if old[n] != new[n]]
for line in problems:
    print(f"sqlx-data check: {line}", file=sys.stderr)
if problems:
    sys.exit("sqlx-data check failed: run `make sqlx-prepare` and commit .sqlx/")
print(f"sqlx-data check: .sqlx/ matches the code and migrations ({len(new)} queries)")
PY
    ;;
  *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
