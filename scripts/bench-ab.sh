#!/usr/bin/env bash
# `scripts/bench-ab.sh REV`: this tree's auth and tickets against REV's, side by side
# on one bench stack. `make bench` compares separate runs, and between runs this
# machine drifts by more than a small per-request cost (a run's own rounds of
# currentuser spread over 20 %); here wrk alternates between the two builds round by
# round (A B, then B A, ...), each round next to its ceiling (the bare axum handler for
# the reads, pgbench's insert for the writes), so that both see the same machine and
# the difference is read from paired rounds. Each run also records the serving
# process's CPU time per request. Reads run first; before each write run the script
# waits until NATS has no event pending, so no run pays for the last one's events.
#
#   AB_ROUNDS    rounds (default 6)
#   AB_SECONDS   seconds per wrk run (default 8)
#
# REV's binaries are built in a worktree under target/ab (a target dir of their own:
# the two builds differ); each REV service gets a database of its own (its migrations
# differ), and shares NATS, the ingress's user and the JWT key with the stack.
# Writes target/bench/ab.md (a table for docs/benchmarks.md) and prints it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
rev="${1:?usage: scripts/bench-ab.sh REV}"
rounds="${AB_ROUNDS:-6}" seconds="${AB_SECONDS:-8}"
source scripts/bench-env.sh

log() { printf '\033[1m[bench-ab]\033[0m %s\n' "$*" >&2; }

sha="$(git rev-parse --short "$rev^{commit}")"
work="$ROOT/target/ab/$sha"
if [ ! -d "$work/src" ]; then
  log "a worktree of $sha"
  mkdir -p "$work"
  git worktree add --detach -f "$work/src" "$sha" >/dev/null
fi
log "building $sha's auth and tickets (release)"
(cd "$work/src" && CARGO_TARGET_DIR="$work/target" cargo build --release -p auth -p tickets --locked -q)
log "building this tree (release)"
command -v wrk >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk; }
cargo build --release --workspace --bins --locked -q

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  scripts/stack.sh down >/dev/null 2>&1 || true
}
trap cleanup EXIT
scripts/stack.sh down >/dev/null 2>&1 || true
rm -rf "$STACK_DIR"
scripts/stack.sh up

# REV's services: the stack's settings, other ports and databases of their own.
offset=500
start_rev() {
  local name="$1" env port ops
  env="$(scripts/stack.sh service-env "$name")"
  port=$(( $(sed -n 's/^PORT=//p' <<<"$env") + offset ))
  ops=$(( $(sed -n 's/^OPS_PORT=//p' <<<"$env") + offset ))
  psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qAt -c "CREATE DATABASE ${name}_ab" >/dev/null
  (
    while IFS= read -r assignment; do export "${assignment?}"; done <<<"$env"
    export PORT="$port" OPS_PORT="$ops" DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/${name}_ab"
    exec "$work/target/release/$name" >>"$STACK_DIR/logs/$name-$sha.log" 2>&1
  ) &
  pids+=($!)
  printf -v "pid_${name}_b" %s "$!"
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$ops/readyz" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  log "$sha's $name did not become ready; see $STACK_DIR/logs/$name-$sha.log"
  exit 1
}
start_rev auth
start_rev tickets
port_of() { scripts/stack.sh service-env "$1" | sed -n 's/^PORT=//p'; }
pid_auth_a="$(cat "$STACK_DIR/run/auth.pid")" pid_tickets_a="$(cat "$STACK_DIR/run/tickets.pid")"
auth_a="http://127.0.0.1:$(port_of auth)" tickets_a="http://127.0.0.1:$(port_of tickets)"
auth_b="http://127.0.0.1:$(( $(port_of auth) + offset ))" tickets_b="http://127.0.0.1:$(( $(port_of tickets) + offset ))"

hello_port=$(( SERVICE_PORT_BASE + 700 ))
target/release/hello "$hello_port" >/dev/null &
pids+=($!)

# One user (signed up through the stack's auth; the session cookie verifies on both,
# which share the JWT key), and a ticket in each build's database.
cookie="$(curl -fsS -D - -o /dev/null -H 'Content-Type: application/json' \
  -d "{\"email\":\"ab-$RANDOM$RANDOM@bench.test\",\"password\":\"password\"}" \
  "http://127.0.0.1:$INGRESS_PORT/api/users/signup" | sed -n 's/^[Ss]et-[Cc]ookie: \([^;]*\).*/\1/p' | head -1)"
[ -n "$cookie" ] || { log "sign-up set no cookie"; exit 1; }
post='{"title":"bench","price":10}'
ticket_of() {
  curl -fsS -H 'Content-Type: application/json' -H "Cookie: $cookie" -d "$post" "$1/api/tickets" |
    sed -n 's/.*"id":"\([^"]*\)".*/\1/p'
}
ticket_a="$(ticket_of "$tickets_a")" ticket_b="$(ticket_of "$tickets_b")"
# The ceiling of the writes, as in `make bench`: pgbench's insert of a ticket row.
psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d tickets -qAt \
  -c "CREATE TABLE IF NOT EXISTS bench_insert (LIKE tickets INCLUDING ALL)" >/dev/null
insert="$(mktemp --suffix .sql)"
echo "INSERT INTO bench_insert (id, title, price_cents, user_id) VALUES (gen_random_uuid(), 'bench', 1000, gen_random_uuid());" > "$insert"
script="$(mktemp --suffix .lua)"
printf 'wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\nwrk.headers["Cookie"] = "%s"\n' \
  "'$post'" "$cookie" > "$script"

# CPU time a process has used, in nanoseconds (every thread's, from the scheduler).
cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{sum += $1} END {printf "%.0f", sum}'; }
# One wrk run (64 connections, or 16 for writes, on two threads): requests a second and,
# when the server's pid is given, its CPU microseconds per request. The CPU per request
# hardly moves with what else the machine does; the rate moves with everything.
results="$(mktemp)"
measure() { # round subject build pid url connections [wrk args]
  local round="$1" subject="$2" build="$3" pid="$4" url="$5" connections="$6" before out cpu=-
  shift 6
  [ "$pid" != - ] && before="$(cpu_ns "$pid")"
  out="$(wrk -t2 -c"$connections" -d"${seconds}s" "$@" "$url")"
  if [ "$pid" != - ]; then
    cpu="$(awk -v used="$(( $(cpu_ns "$pid") - before ))" '/ requests in / {printf "%.2f", used / 1000 / $1}' <<<"$out")"
  fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$subject" "$build" "$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")" "$cpu" >> "$results"
}
# Every event handled: the events of a write run (orders' replica of each ticket) are
# handled for seconds after it, and would eat into the next run's CPU.
settle() {
  local waiting
  for _ in $(seq 1 600); do
    waiting="$(curl -fs "http://127.0.0.1:$NATS_HTTP_PORT/jsz?accounts=true&consumers=true" | python3 -c '
import json, sys
jsz = json.load(sys.stdin)
print(sum(c.get("num_pending", 0) + c.get("num_ack_pending", 0)
          for a in jsz.get("account_details") or [] for s in a.get("stream_detail") or []
          for c in s.get("consumer_detail") or []))')" || waiting=unknown
    [ "$waiting" = 0 ] && return 0
    sleep 0.5
  done
  log "events still waiting after 300 s: $waiting"
  exit 1
}
# Reads first, as in `make bench`: nothing else runs meanwhile.
for round in $(seq 1 "$rounds"); do
  log "read round $round/$rounds"
  order=(a b); [ $((round % 2)) = 0 ] && order=(b a)
  measure "$round" hello - - "http://127.0.0.1:$hello_port/" 64
  for build in "${order[@]}"; do
    auth="auth_$build"; tickets="tickets_$build"; ticket="ticket_$build"
    pid_auth="pid_auth_$build" pid_tickets="pid_tickets_$build"
    measure "$round" "GET /api/users/currentuser" "$build" "${!pid_auth}" "${!auth}/api/users/currentuser" 64 -H "Cookie: $cookie"
    measure "$round" "GET /api/tickets/{id}" "$build" "${!pid_tickets}" "${!tickets}/api/tickets/${!ticket}" 64
  done
done
for round in $(seq 1 "$rounds"); do
  log "write round $round/$rounds"
  order=(a b); [ $((round % 2)) = 0 ] && order=(b a)
  settle
  printf '%s\tpgbench insert\t-\t%s\t-\n' "$round" "$(pgbench -h 127.0.0.1 -p "$PG_PORT" -U postgres -n -M prepared \
    -c 16 -j 2 -T "$seconds" -f "$insert" tickets 2>/dev/null | awk '/^tps = / {print $3}')" >> "$results"
  for build in "${order[@]}"; do
    tickets="tickets_$build" pid_tickets="pid_tickets_$build"
    settle
    measure "$round" "POST /api/tickets" "$build" "${!pid_tickets}" "${!tickets}/api/tickets" 16 -s "$script"
  done
done

mkdir -p target/bench
python3 - "$results" "$sha" "$(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo '+changes')" "$rounds" "$seconds" \
  > target/bench/ab.md <<'EOF'
import statistics, sys
path, rev, head, rounds, seconds = sys.argv[1:]
rate, cpu = {}, {}
for line in open(path):
    r, subject, build, value, used = line.rstrip("\n").split("\t")
    rate[(int(r), subject, build)] = float(value)
    if used != "-":
        cpu[(int(r), subject, build)] = float(used)
ceiling_of = {"GET /api/users/currentuser": "hello", "GET /api/tickets/{id}": "hello",
              "POST /api/tickets": "pgbench insert"}
print(f"This tree ({head}) as a, {rev} as b, in one run: {rounds} rounds of {seconds} s, the builds "
      f"alternating (`scripts/bench-ab.sh {rev}`). A share is a subject's rate over its ceiling's "
      "in the same round; CPU is the serving process's (every thread), per request answered. "
      "Medians over the rounds; a / b pairs the two builds' runs of the same round.\n")
print("| subject | ceiling | a / ceiling | b / ceiling | a − b (points) | rate a / b (min–max) | CPU µs per request, a / b | CPU a / b (min–max) |")
print("|---|---|---:|---:|---:|---|---:|---|")
med = statistics.median
for subject, ceiling in ceiling_of.items():
    rounds_of = sorted(r for (r, s, b) in rate if s == subject and b == "a")
    share = lambda build: [100 * rate[(r, subject, build)] / rate[(r, ceiling, "-")] for r in rounds_of]
    a, b = share("a"), share("b")
    paired = [rate[(r, subject, "a")] / rate[(r, subject, "b")] for r in rounds_of]
    used = [cpu[(r, subject, "a")] / cpu[(r, subject, "b")] for r in rounds_of]
    print(f"| {subject} | {ceiling} | {med(a):.1f} % | {med(b):.1f} % | {med(a) - med(b):+.1f} | "
          f"{med(paired):.3f} ({min(paired):.3f}–{max(paired):.3f}) | "
          f"{med(cpu[(r, subject, 'a')] for r in rounds_of):.1f} / {med(cpu[(r, subject, 'b')] for r in rounds_of):.1f} | "
          f"{med(used):.3f} ({min(used):.3f}–{max(used):.3f}) |")
for ceiling in ("hello", "pgbench insert"):
    values = [v for (r, s, b), v in rate.items() if s == ceiling]
    print(f"\n{ceiling}: {med(values):,.0f}/s (median; {min(values):,.0f}–{max(values):,.0f}).", end="")
print()
EOF
cat target/bench/ab.md
