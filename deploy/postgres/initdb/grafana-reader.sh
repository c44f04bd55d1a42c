#!/usr/bin/env bash
# Run once by the postgres image when it creates its data directory: a read-only role for
# Grafana. SELECT on every table web_monitor creates in public from now on (the migrations run
# later, as web_monitor), and read-only transactions by default.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v password="$GRAFANA_DB_PASSWORD" <<'SQL'
CREATE ROLE grafana LOGIN PASSWORD :'password';
ALTER ROLE grafana SET default_transaction_read_only = on;
GRANT CONNECT ON DATABASE web_monitor TO grafana;
GRANT USAGE ON SCHEMA public TO grafana;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO grafana;
ALTER DEFAULT PRIVILEGES FOR ROLE web_monitor IN SCHEMA public GRANT SELECT ON TABLES TO grafana;
SQL
