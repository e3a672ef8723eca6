#!/usr/bin/env bash
# Makes sure the local PostgreSQL runs and has the test database; used by `make test`.
set -euo pipefail
URL_HOST=${PGHOST:-127.0.0.1}
DB=${CONSENT_RELAY_TEST_DB:-consent_relay_test}

if ! pg_isready -h "$URL_HOST" -p 5432 -q 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
  fi
  for _ in $(seq 1 30); do
    pg_isready -h "$URL_HOST" -p 5432 -q && break
    sleep 1
  done
fi
pg_isready -h "$URL_HOST" -p 5432 || { echo "PostgreSQL is not running on $URL_HOST:5432" >&2; exit 1; }
if ! psql -h "$URL_HOST" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$DB'" | grep -q 1; then
  psql -h "$URL_HOST" -U postgres -c "CREATE DATABASE $DB" >/dev/null
  echo "created database $DB"
fi
