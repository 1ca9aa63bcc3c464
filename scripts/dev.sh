#!/usr/bin/env bash
# `make dev`: the local stack with debug builds, rebuilt and restarted as you edit
# (the original's skaffold + nodemon loop). Every second the sources are checked;
# after a change the workspace is rebuilt and exactly the services whose binary
# changed are restarted (an edit in common/ or kit/ restarts them all, one in bus/ the
# services on the bus, one in tickets/ only tickets), with a line saying which. Ctrl-C stops the loop; `make down` the stack.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export STACK_PROFILE=debug
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
SERVICES=(stripe-standin auth tickets orders payments expiration client)
# With a real Stripe key there is no stand-in to restart.
[ -n "${STRIPE_KEY:-}" ] && SERVICES=(auth tickets orders payments expiration client)
WATCHED=(Cargo.toml Cargo.lock common kit bus auth tickets orders payments expiration client stripe-standin)

log() { printf '\033[1m[dev]\033[0m %s\n' "$*" >&2; }

# A fingerprint of the watched sources: their paths and modification times.
sources() {
  find "${WATCHED[@]}" -type f \( -name '*.rs' -o -name '*.toml' -o -name '*.sql' \
    -o -name '*.html' -o -name '*.css' -o -name '*.js' -o -name Cargo.lock \) \
    -not -path '*/target/*' -printf '%p %T@\n' 2>/dev/null | sort | md5sum
}

# The binaries' fingerprints, one line per service.
binaries() {
  local name
  for name in "${SERVICES[@]}"; do
    printf '%s %s\n' "$name" "$(stat -c %Y "$TARGET_DIR/debug/$name" 2>/dev/null || echo none)"
  done
}

scripts/stack.sh up
log "watching the sources; edit away (Ctrl-C to stop watching, make down to stop the stack)"
seen="$(sources)"
while true; do
  sleep 1
  now="$(sources)"
  [ "$now" = "$seen" ] && continue
  seen="$now"
  before="$(binaries)"
  log "change seen; building"
  if ! cargo build --workspace --bins -q; then
    log "build failed; fix it and save again"
    continue
  fi
  changed=()
  while read -r name stamp; do
    grep -qx "$name $stamp" <<<"$before" || changed+=("$name")
  done < <(binaries)
  if [ ${#changed[@]} -eq 0 ]; then
    log "no service binary changed"
    continue
  fi
  log "restarting: ${changed[*]}"
  scripts/stack.sh restart "${changed[@]}" || log "a restart failed; see .stack/logs"
  seen="$(sources)"
done
