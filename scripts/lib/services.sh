# Shared by scripts/test.sh and the local-run scripts: find or start a Kafka-protocol broker
# and PostgreSQL, and stop what was started. Source it; it defines functions only.

WEBMON_TOOLS_DIR="${WEBMON_TOOLS_DIR:-$HOME/.cache/web-monitor/tools}"
TANSU_VERSION="0.6.0"
SERVICES_TMP=""
STARTED_PIDS=()
STARTED_PG_DIR=""
PG_BIN=""

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] error: %s\n' "$*" >&2; exit 1; }

services_tmp() {
  if [ -z "$SERVICES_TMP" ]; then
    SERVICES_TMP="$(mktemp -d "${TMPDIR:-/tmp}/webmon-services.XXXXXX")"
    chmod 755 "$SERVICES_TMP"
  fi
  printf '%s' "$SERVICES_TMP"
}

# True when host:port accepts a TCP connection within 1 s.
port_open() {
  local host="${1%:*}" port="${1##*:}"
  timeout 1 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_for_port() {
  local addr="$1" what="$2" tries="${3:-100}"
  for _ in $(seq "$tries"); do
    port_open "$addr" && return 0
    sleep 0.1
  done
  return 1
}

# --- Kafka ---------------------------------------------------------------------------------

# memory storage for the shared broker; SQLite (libsql) for the tests whose broker keeps SCRAM
# users across a restart.
TANSU_FEATURES="dynostore,libsql"

tansu_bin() {
  printf '%s' "$WEBMON_TOOLS_DIR/bin/tansu"
}

install_tansu() {
  local bin stamp want
  bin="$(tansu_bin)"
  stamp="$WEBMON_TOOLS_DIR/tansu.build"
  want="tansu $TANSU_VERSION features $TANSU_FEATURES"
  if [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then return 0; fi
  command -v cargo >/dev/null 2>&1 || die "no broker answers and cargo is missing to install one: install Rust (rustup) or set KAFKA_BROKERS"
  log "installing the test broker tansu $TANSU_VERSION ($TANSU_FEATURES) into $WEBMON_TOOLS_DIR (once; 10 to 35 minutes)"
  mkdir -p "$WEBMON_TOOLS_DIR"
  cargo install tansu --locked --force --version "$TANSU_VERSION" --features "$TANSU_FEATURES" \
      --root "$WEBMON_TOOLS_DIR" >&2 \
    || die "installing tansu failed: see the output above"
  printf '%s\n' "$want" > "$stamp"
}

ensure_kafka() {
  # Tests that cut a broker's link start brokers of their own: they need the binary too.
  install_tansu
  TANSU_BIN="$(tansu_bin)"
  export TANSU_BIN
  if [ -n "${KAFKA_BROKERS:-}" ]; then
    local first="${KAFKA_BROKERS%%,*}"
    if port_open "$first"; then log "using the broker at $KAFKA_BROKERS"; return 0; fi
    log "KAFKA_BROKERS=$KAFKA_BROKERS does not answer: starting a broker of our own"
  fi
  local port dir
  port="$(free_port)"
  dir="$(services_tmp)"
  "$(tansu_bin)" broker \
      --storage-engine "memory://tansu/" \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      >"$dir/tansu.log" 2>&1 &
  STARTED_PIDS+=("$!")
  wait_for_port "127.0.0.1:$port" tansu 300 || { tail -20 "$dir/tansu.log" >&2; die "tansu did not start (log: $dir/tansu.log)"; }
  KAFKA_BROKERS="127.0.0.1:$port"
  log "started tansu on $KAFKA_BROKERS (log: $dir/tansu.log)"
}

# --- PostgreSQL ----------------------------------------------------------------------------

pg_answers() {
  local url="$1"
  if command -v psql >/dev/null 2>&1; then
    PGCONNECT_TIMEOUT=3 psql "$url" -Atqc 'select 1' >/dev/null 2>&1
  else
    local rest="${url#*@}"; rest="${rest%%/*}"
    port_open "$rest"
  fi
}

find_pg_bin() {
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    PG_BIN="$(dirname "$(command -v pg_ctl)")"; return 0
  fi
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -Vr); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then PG_BIN="$d"; return 0; fi
  done
  return 1
}

# Runs a PostgreSQL server binary as an unprivileged user when we are root (it refuses root).
as_pg_user() {
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || die "running as root and there is no 'postgres' user to run PostgreSQL as"
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

ensure_postgres() {
  if [ -n "${DATABASE_URL:-}" ]; then
    if pg_answers "$DATABASE_URL"; then log "using PostgreSQL from DATABASE_URL"; return 0; fi
    log "DATABASE_URL does not answer: looking for another server"
  fi
  local default_url="postgres://postgres@127.0.0.1:5432/postgres"
  if pg_answers "$default_url"; then
    DATABASE_URL="$default_url"; log "using PostgreSQL at 127.0.0.1:5432"; return 0
  fi
  find_pg_bin || die "no PostgreSQL answers and none is installed: install it (Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql) or set DATABASE_URL"
  local port dir
  port="$(free_port)"
  dir="$(services_tmp)/pg"
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres "$dir"
  as_pg_user "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust >"$(services_tmp)/initdb.log" 2>&1 \
    || { cat "$(services_tmp)/initdb.log" >&2; die "initdb failed"; }
  as_pg_user "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off" start >/dev/null \
    || { cat "$dir/server.log" >&2; die "PostgreSQL did not start"; }
  STARTED_PG_DIR="$dir"
  DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  log "started PostgreSQL on 127.0.0.1:$port"
}

# Headless Chromium for the status page's browser test (Debian's chromium package): installed
# with apt-get when missing and this runs as root, otherwise a clear error.
ensure_chromium() {
  if [ -x /usr/bin/chromium ]; then return 0; fi
  command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ] \
    || die "/usr/bin/chromium is missing: install it (Debian/Ubuntu: apt-get install chromium)"
  log "installing chromium (apt-get)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
    || die "apt-get could not install chromium"
}

# Drops databases left behind by tests that failed before cleaning up.
drop_test_databases() {
  command -v psql >/dev/null 2>&1 || return 0
  local db
  for db in $(psql "$DATABASE_URL" -Atqc "select datname from pg_database where datname like 'wmtest\_%'" 2>/dev/null); do
    psql "$DATABASE_URL" -qc "drop database if exists \"$db\" with (force)" >/dev/null 2>&1 || true
  done
}

services_stop() {
  local pid
  for pid in "${STARTED_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  STARTED_PIDS=()
  if [ -n "$STARTED_PG_DIR" ]; then
    as_pg_user "$PG_BIN/pg_ctl" -D "$STARTED_PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    STARTED_PG_DIR=""
  fi
  if [ -n "$SERVICES_TMP" ]; then rm -rf "$SERVICES_TMP"; SERVICES_TMP=""; fi
}
