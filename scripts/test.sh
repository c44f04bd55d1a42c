#!/usr/bin/env bash
# The project's test command: formatting, lints, and every test, including the ones that need
# a Kafka-protocol broker and PostgreSQL.
#
# Services: uses KAFKA_BROKERS / DATABASE_URL when they answer. Otherwise it starts its own:
# the broker `tansu` (installed once into $WEBMON_TOOLS_DIR, default ~/.cache/web-monitor/tools,
# 10 to 35 minutes to build the first time) with in-memory storage on a free loopback port, and
# PostgreSQL from the system's binaries (initdb + pg_ctl in a temporary directory) when none
# answers on 127.0.0.1:5432, and headless Chromium (Debian's chromium package, through apt-get
# when missing) for the status page's browser test. Whatever it starts is stopped on exit, failure or Ctrl-C.
#
# Last, the deployment files are validated offline (scripts/validate-deploy.sh).
#
# Usage: scripts/test.sh [extra arguments for the test binaries]
set -euo pipefail

cd "$(dirname "$0")/.."
. scripts/lib/services.sh

trap services_stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ensure_kafka
ensure_postgres
ensure_chromium
export KAFKA_BROKERS DATABASE_URL

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (KAFKA_BROKERS=$KAFKA_BROKERS)"
cargo test --workspace --locked -- --include-ignored "$@"

drop_test_databases

step "deployment files (compose, Kubernetes, settings)"
bash scripts/validate-deploy.sh
