#!/usr/bin/env bash
# The whole pipeline on this machine, without Docker: a broker (tansu) and PostgreSQL started
# the way the test harness does, the schema migrated, then the sink and the checker with
# configs/local.toml. Ctrl-C stops everything.
#   scripts/run-local.sh            then: sink report --config configs/local.toml
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/services.sh

pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  services_stop
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ensure_kafka
ensure_postgres
db_url="${DATABASE_URL%/*}/web_monitor"
psql "$DATABASE_URL" -qc "CREATE DATABASE web_monitor" 2>/dev/null || true
export WEBMON__KAFKA__BROKERS="$KAFKA_BROKERS" WEBMON__DATABASE__URL="$db_url"

cargo build --release --locked -p checker -p sink --bin checker --bin sink
./target/release/sink migrate --config configs/local.toml
./target/release/sink --config configs/local.toml &
pids+=("$!")
./target/release/checker --config configs/local.toml &
pids+=("$!")
log "running: broker $KAFKA_BROKERS, database $db_url"
log "metrics: http://127.0.0.1:9101/metrics (checker), http://127.0.0.1:9102/metrics (sink)"
log "report:  WEBMON__DATABASE__URL=$db_url ./target/release/sink report --config configs/local.toml"
log "Ctrl-C stops everything"
wait
